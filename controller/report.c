/* Operator-facing output. */
#define _POSIX_C_SOURCE 200809L
#include "report.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static const char *or_dash(const char *text)
{
    return text != NULL && text[0] != '\0' ? text : "-";
}

static void print_failed_reads(FILE *out, const struct snapshot *s)
{
    size_t shown = 0;
    size_t failed = 0;

    for (size_t i = 0; i < s->n_reads; i++)
        failed += !s->reads[i].ok;
    if (failed == 0)
        return;
    fprintf(out, "\nFailed reads (%zu): actions that depend on them do not run\n", failed);
    for (size_t i = 0; i < s->n_reads && shown < 20; i++) {
        if (s->reads[i].ok)
            continue;
        fprintf(out, "  %s: %s\n", s->reads[i].name, or_dash(s->reads[i].error));
        shown++;
    }
    if (failed > shown)
        fprintf(out, "  ... and %zu more (see --json)\n", failed - shown);
}

void report_pass_text(FILE *out, const struct pass_result *r, const struct policy *p, const char *title)
{
    const struct assessment *as = &r->assessment;
    char when[32];

    fprintf(out, "%s: source %s, observed %s, global mode %s%s\n", title, r->snapshot.source_name,
            format_utc(r->snapshot.observed_at, when, sizeof(when)), policy_mode_name(p->mode),
            r->complete ? "" : ", INCOMPLETE observation");
    if (r->snapshot.source_note != NULL)
        fprintf(out, "Note: %s\n", r->snapshot.source_note);
    for (size_t i = 0; i < sizeof(as->rules) / sizeof(as->rules[0]); i++) {
        const struct rule_status *st = &as->rules[i];

        if (st->enabled && !st->evaluated)
            fprintf(out, "Rule %s skipped: %s\n", st->rule, st->skipped_because);
    }

    fprintf(out, "\nActions (%zu):\n", r->proposed);
    if (r->proposed == 0)
        fprintf(out, "  none\n");
    for (size_t i = 0; i < as->n; i++) {
        const struct finding *f = &as->findings[i];

        if (f->action == NULL)
            continue;
        fprintf(out, "  %-14s %-16s %s", f->action->name, outcome_name(f->outcome), f->target);
        if (f->namespace_name != NULL)
            fprintf(out, "  namespace=%s service=%s", f->namespace_name, or_dash(f->service));
        if (f->action_id > 0)
            fprintf(out, "  action=%lld", f->action_id);
        fprintf(out, "\n      rule %s: %s\n", f->rule, or_dash(f->reason));
        if (f->outcome == OUTCOME_BLOCKED)
            fprintf(out, "      blocked by %s: %s\n", f->blocked_by, or_dash(f->detail));
        else if (f->detail != NULL)
            fprintf(out, "      %s\n", f->detail);
    }

    fprintf(out, "\nAdvisories (%zu):\n", r->advisories);
    if (r->advisories == 0)
        fprintf(out, "  none\n");
    for (size_t i = 0; i < as->n; i++) {
        const struct finding *f = &as->findings[i];

        if (f->action == NULL)
            fprintf(out, "  %-14s %s\n", f->rule, f->reason);
    }
    print_failed_reads(out, &r->snapshot);
}

static cJSON *finding_json(const struct finding *f)
{
    cJSON *o = cJSON_CreateObject();
    char when[32];

    if (f->action != NULL) {
        cJSON_AddStringToObject(o, "kind", f->action->name);
        cJSON_AddStringToObject(o, "target", f->target);
    }
    cJSON_AddStringToObject(o, "rule", f->rule);
    cJSON_AddStringToObject(o, "subject", f->subject);
    cJSON_AddStringToObject(o, "reason", f->reason ? f->reason : "");
    if (f->namespace_name != NULL)
        cJSON_AddStringToObject(o, "namespace", f->namespace_name);
    if (f->service != NULL)
        cJSON_AddStringToObject(o, "service", f->service);
    if (f->alloc_id != NULL)
        cJSON_AddStringToObject(o, "alloc_id", f->alloc_id);
    if (f->action != NULL) {
        cJSON_AddStringToObject(o, "status", outcome_name(f->outcome));
        if (f->outcome == OUTCOME_BLOCKED)
            cJSON_AddStringToObject(o, "blocked_by", f->blocked_by);
        if (f->detail != NULL)
            cJSON_AddStringToObject(o, "detail", f->detail);
        if (f->action_id > 0)
            cJSON_AddNumberToObject(o, "action_id", (double)f->action_id);
        cJSON_AddStringToObject(o, "idempotency_key", f->idem_key);
    }
    cJSON_AddStringToObject(o, "first_seen", format_utc(f->first_seen, when, sizeof(when)));
    cJSON_AddItemToObject(o, "evidence", cJSON_Duplicate(f->evidence, 1));
    return o;
}

int report_pass_json(FILE *out, const struct pass_result *r, const struct policy *p)
{
    const struct assessment *as = &r->assessment;
    cJSON *root = cJSON_CreateObject();
    cJSON *actions, *advisories, *rules, *reads;
    char when[32];
    char *text;

    if (root == NULL)
        return -1;
    cJSON_AddStringToObject(root, "source", r->snapshot.source_name);
    if (r->snapshot.source_note != NULL)
        cJSON_AddStringToObject(root, "source_note", r->snapshot.source_note);
    cJSON_AddStringToObject(root, "observed_at", format_utc(r->snapshot.observed_at, when, sizeof(when)));
    cJSON_AddStringToObject(root, "mode", policy_mode_name(p->mode));
    cJSON_AddBoolToObject(root, "complete", r->complete);
    if (r->pass_id > 0)
        cJSON_AddNumberToObject(root, "pass_id", (double)r->pass_id);

    actions = cJSON_AddArrayToObject(root, "actions");
    advisories = cJSON_AddArrayToObject(root, "advisories");
    for (size_t i = 0; i < as->n; i++)
        cJSON_AddItemToArray(as->findings[i].action ? actions : advisories, finding_json(&as->findings[i]));

    rules = cJSON_AddArrayToObject(root, "rules");
    for (size_t i = 0; i < sizeof(as->rules) / sizeof(as->rules[0]); i++) {
        const struct rule_status *st = &as->rules[i];
        cJSON *o;

        if (st->rule == NULL)
            continue;
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "rule", st->rule);
        cJSON_AddBoolToObject(o, "enabled", st->enabled);
        cJSON_AddBoolToObject(o, "evaluated", st->evaluated);
        if (st->skipped_because != NULL)
            cJSON_AddStringToObject(o, "skipped_because", st->skipped_because);
        cJSON_AddItemToArray(rules, o);
    }

    reads = cJSON_AddArrayToObject(root, "failed_reads");
    for (size_t i = 0; i < r->snapshot.n_reads; i++) {
        cJSON *o;

        if (r->snapshot.reads[i].ok)
            continue;
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "read", r->snapshot.reads[i].name);
        cJSON_AddStringToObject(o, "error", or_dash(r->snapshot.reads[i].error));
        cJSON_AddItemToArray(reads, o);
    }

    text = cJSON_Print(root);
    cJSON_Delete(root);
    if (text == NULL)
        return -1;
    fprintf(out, "%s\n", text);
    free(text);
    return 0;
}

void report_rows_text(FILE *out, const struct journal_action *rows, size_t n)
{
    char when[32];

    fprintf(out, "%-6s %-17s %-15s %-20s %-9s %s\n", "ID", "STATE", "KIND", "UPDATED", "MODE", "TARGET");
    for (size_t i = 0; i < n; i++) {
        const struct journal_action *a = &rows[i];

        fprintf(out, "%-6lld %-17s %-15s %-20s %-9s %s%s%s\n", a->id, journal_state_name(a->state),
                a->kind, format_utc(a->updated_at, when, sizeof(when)), or_dash(a->mode),
                a->namespace_name ? a->namespace_name : "", a->namespace_name ? "/" : "", a->target);
    }
    if (n == 0)
        fprintf(out, "(no actions)\n");
}

static cJSON *row_json(const struct journal_action *a)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *evidence;
    char when[32];

#define ADD_STR(key, value) \
    do { if ((value) != NULL) cJSON_AddStringToObject(o, key, value); } while (0)
    cJSON_AddNumberToObject(o, "id", (double)a->id);
    ADD_STR("kind", a->kind);
    ADD_STR("target", a->target);
    cJSON_AddStringToObject(o, "state", journal_state_name(a->state));
    ADD_STR("rule", a->rule);
    ADD_STR("reason", a->reason);
    ADD_STR("namespace", a->namespace_name);
    ADD_STR("service", a->service);
    ADD_STR("alloc_id", a->alloc_id);
    ADD_STR("mode", a->mode);
    ADD_STR("blocked_by", a->blocked_by);
    ADD_STR("decided_by", a->decided_by);
    if (a->decided_at > 0)
        cJSON_AddStringToObject(o, "decided_at", format_utc(a->decided_at, when, sizeof(when)));
    cJSON_AddNumberToObject(o, "attempts", a->attempts);
    /* The same column stores the error of a failure and the note of a success. */
    if (a->state == JS_FAILED || a->state == JS_UNKNOWN || a->state == JS_BLOCKED)
        ADD_STR("last_error", a->last_error);
    else
        ADD_STR("note", a->last_error);
    ADD_STR("idempotency_key", a->idem_key);
    ADD_STR("basis", a->basis);
    cJSON_AddStringToObject(o, "created_at", format_utc(a->created_at, when, sizeof(when)));
    cJSON_AddStringToObject(o, "updated_at", format_utc(a->updated_at, when, sizeof(when)));
    if (a->expires_at > 0)
        cJSON_AddStringToObject(o, "expires_at", format_utc(a->expires_at, when, sizeof(when)));
    cJSON_AddNumberToObject(o, "times_seen", a->times_seen);
    evidence = a->evidence ? cJSON_Parse(a->evidence) : NULL;
    if (evidence != NULL)
        cJSON_AddItemToObject(o, "evidence", evidence);
#undef ADD_STR
    return o;
}

static int print_json(FILE *out, cJSON *root)
{
    char *text = cJSON_Print(root);

    cJSON_Delete(root);
    if (text == NULL)
        return -1;
    fprintf(out, "%s\n", text);
    free(text);
    return 0;
}

cJSON *report_rows_to_json(const struct journal_action *rows, size_t n)
{
    cJSON *arr = cJSON_CreateArray();

    for (size_t i = 0; i < n && arr != NULL; i++)
        cJSON_AddItemToArray(arr, row_json(&rows[i]));
    return arr;
}

int report_rows_json(FILE *out, const struct journal_action *rows, size_t n)
{
    cJSON *arr = report_rows_to_json(rows, n);

    if (arr == NULL)
        return -1;
    return print_json(out, arr);
}

cJSON *report_row_detail_to_json(const struct journal_action *row, const struct journal_step *steps,
                                 size_t n_steps)
{
    cJSON *o = row_json(row);
    cJSON *arr = cJSON_AddArrayToObject(o, "steps");
    char when[32];

    for (size_t i = 0; i < n_steps && arr != NULL; i++) {
        cJSON *step = cJSON_CreateObject();

        cJSON_AddNumberToObject(step, "seq", steps[i].seq);
        cJSON_AddStringToObject(step, "name", steps[i].name ? steps[i].name : "");
        cJSON_AddStringToObject(step, "outcome", steps[i].outcome ? steps[i].outcome : "");
        if (steps[i].detail != NULL)
            cJSON_AddStringToObject(step, "detail", steps[i].detail);
        cJSON_AddStringToObject(step, "at", format_utc(steps[i].at, when, sizeof(when)));
        cJSON_AddItemToArray(arr, step);
    }
    return o;
}

int report_row_detail_json(FILE *out, const struct journal_action *row, const struct journal_step *steps,
                           size_t n_steps)
{
    cJSON *o = report_row_detail_to_json(row, steps, n_steps);

    if (o == NULL)
        return -1;
    return print_json(out, o);
}

void report_row_detail_text(FILE *out, const struct journal_action *a, const struct journal_step *steps,
                            size_t n_steps)
{
    char when[32];

    fprintf(out, "Action %lld: %s %s\n", a->id, a->kind, a->target);
    fprintf(out, "  state:      %s%s%s\n", journal_state_name(a->state), a->blocked_by ? " by " : "",
            a->blocked_by ? a->blocked_by : "");
    fprintf(out, "  rule:       %s (mode %s)\n", or_dash(a->rule), or_dash(a->mode));
    if (a->namespace_name != NULL)
        fprintf(out, "  namespace:  %s\n", a->namespace_name);
    if (a->service != NULL)
        fprintf(out, "  service:    %s\n", a->service);
    if (a->alloc_id != NULL)
        fprintf(out, "  allocation: %s\n", a->alloc_id);
    fprintf(out, "  reason:     %s\n", or_dash(a->reason));
    fprintf(out, "  basis:      %s\n", or_dash(a->basis));
    fprintf(out, "  created:    %s\n", format_utc(a->created_at, when, sizeof(when)));
    fprintf(out, "  updated:    %s\n", format_utc(a->updated_at, when, sizeof(when)));
    if (a->expires_at > 0)
        fprintf(out, "  expires:    %s\n", format_utc(a->expires_at, when, sizeof(when)));
    if (a->decided_by != NULL)
        fprintf(out, "  decided:    by %s at %s\n", a->decided_by, format_utc(a->decided_at, when, sizeof(when)));
    fprintf(out, "  attempts:   %d\n", a->attempts);
    if (a->last_error != NULL)
        fprintf(out, "  note:       %s\n", a->last_error);
    fprintf(out, "  evidence:   %s\n", or_dash(a->evidence));
    if (n_steps > 0)
        fprintf(out, "  steps:\n");
    for (size_t i = 0; i < n_steps; i++)
        fprintf(out, "    %d. %-20s %-8s %s\n", steps[i].seq, or_dash(steps[i].name), or_dash(steps[i].outcome),
                or_dash(steps[i].detail));
}
