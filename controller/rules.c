/* Rules: orphaned service registrations, terminal-object pile-up, down nodes. */
#define _POSIX_C_SOURCE 200809L
#include "rules.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char *format_text(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *format_text(const char *fmt, ...)
{
    va_list ap;
    char *text;
    int len;

    va_start(ap, fmt);
    len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0)
        return NULL;
    text = malloc((size_t)len + 1);
    if (text == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(text, (size_t)len + 1, fmt, ap);
    va_end(ap);
    return text;
}

char *format_utc(long long t, char *buf, size_t bufsz)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (t <= 0 || gmtime_r(&tt, &tm) == NULL)
        snprintf(buf, bufsz, "-");
    else
        strftime(buf, bufsz, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

const char *outcome_name(enum outcome outcome)
{
    static const char *const names[] = {
        "advisory", "blocked", "dry_run", "pending_approval", "succeeded", "failed", "in_progress",
        "would_run", "would_queue",
    };

    return names[outcome];
}

const struct policy_rule_common *rules_policy(const struct policy *p, const char *rule)
{
    if (strcmp(rule, RULE_ORPHAN_SERVICES) == 0)
        return &p->orphan_services.common;
    if (strcmp(rule, RULE_SYSTEM_GC) == 0)
        return &p->system_gc.common;
    if (strcmp(rule, RULE_DOWN_NODES) == 0)
        return &p->down_nodes.common;
    return NULL;
}

const struct rule_status *assessment_rule(const struct assessment *a, const char *rule)
{
    for (size_t i = 0; i < sizeof(a->rules) / sizeof(a->rules[0]); i++) {
        if (a->rules[i].rule != NULL && strcmp(a->rules[i].rule, rule) == 0)
            return &a->rules[i];
    }
    return NULL;
}

static void finding_free(struct finding *f)
{
    free(f->subject);
    free(f->key);
    free(f->reason);
    cJSON_Delete(f->evidence);
    free(f->basis);
    free(f->idem_key);
    free(f->target);
    free(f->namespace_name);
    free(f->service);
    free(f->alloc_id);
    free(f->failed_read);
    free(f->detail);
}

void assessment_free(struct assessment *a)
{
    for (size_t i = 0; i < a->n; i++)
        finding_free(&a->findings[i]);
    for (size_t i = 0; i < sizeof(a->rules) / sizeof(a->rules[0]); i++)
        free(a->rules[i].skipped_because);
    free(a->findings);
    memset(a, 0, sizeof(*a));
}

static struct finding *new_finding(struct assessment *a, const char *rule, const char *subject)
{
    struct finding *f;

    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        struct finding *grown = realloc(a->findings, cap * sizeof(*grown));

        if (grown == NULL)
            return NULL;
        a->findings = grown;
        a->cap = cap;
    }
    f = &a->findings[a->n];
    memset(f, 0, sizeof(*f));
    f->rule = rule;
    f->subject = strdup(subject);
    f->key = format_text("%s:%s", rule, subject);
    f->evidence = cJSON_CreateObject();
    if (f->subject == NULL || f->key == NULL || f->evidence == NULL) {
        finding_free(f);
        return NULL;
    }
    a->n++;
    return f;
}

/* Mark rule skipped because the named read failed. */
static int skip_rule(const struct snapshot *s, struct rule_status *st, const char *read_name)
{
    const struct snap_read *r = snapshot_find_read(s, read_name);

    st->evaluated = 0;
    st->skipped_because = format_text("read %s failed: %s", read_name,
                                      r && r->error ? r->error : "not read");
    return st->skipped_because ? 0 : -1;
}

static int set_action(struct finding *f, const struct action_type *action, const char *target)
{
    f->action = action;
    f->target = strdup(target);
    if (f->target == NULL)
        return -1;
    if (f->namespace_name != NULL)
        f->idem_key = format_text("%s:%s/%s", action->name, f->namespace_name, target);
    else
        f->idem_key = format_text("%s:%s", action->name, target);
    return f->idem_key ? 0 : -1;
}

/*
 * Decide one registration. Only a client-terminal status or a 404 makes it
 * an orphan; a node's state never does, and neither does desired status
 * stop on a live allocation. Returns 0, or -1 on allocation failure.
 */
static int assess_registration(const struct snapshot *s, const struct snap_service *r,
                               struct assessment *a)
{
    const struct snap_alloc *alloc = snapshot_find_alloc(s, r->alloc_id);
    const struct snap_lookup *lookup = NULL;
    const char *status_text;
    char subject[1024];
    char when[32];
    struct finding *f;
    int orphan = 0;

    if (alloc != NULL) {
        orphan = alloc_status_is_terminal(alloc->client_status);
        status_text = alloc_status_name(alloc->client_status);
    } else {
        lookup = snapshot_find_lookup(s, r->alloc_id);
        if (lookup == NULL)
            return 0;   /* never looked up: nothing can rest on it */
        if (lookup->state == LOOKUP_NOT_FOUND) {
            orphan = 1;
            status_text = "absent";
        } else if (lookup->state == LOOKUP_FOUND) {
            orphan = alloc_status_is_terminal(lookup->client_status);
            status_text = alloc_status_name(lookup->client_status);
        } else {
            status_text = "unknown";
        }
    }
    if (!orphan && (lookup == NULL || lookup->state != LOOKUP_FAILED))
        return 0;

    snprintf(subject, sizeof(subject), "%s/%s", r->namespace_name, r->id);
    f = new_finding(a, RULE_ORPHAN_SERVICES, subject);
    if (f == NULL)
        return -1;
    f->namespace_name = strdup(r->namespace_name);
    f->service = strdup(r->service_name);
    f->alloc_id = strdup(r->alloc_id);
    if (f->namespace_name == NULL || f->service == NULL || f->alloc_id == NULL)
        return -1;
    if (set_action(f, &action_service_delete, r->id) != 0)
        return -1;

    if (lookup != NULL && lookup->state == LOOKUP_FAILED) {
        f->failed_read = format_text("allocation %s: %s", r->alloc_id,
                                     lookup->error ? lookup->error : "lookup failed");
        f->reason = format_text("allocation %s of service %s could not be read, so whether the "
                                "registration is orphaned is unknown", r->alloc_id, r->service_name);
    } else if (alloc != NULL) {
        f->reason = format_text("allocation %s is %s (client-terminal, modified %s), so the "
                                "registration is orphaned", r->alloc_id, status_text,
                                format_utc(alloc->modify_time_s, when, sizeof(when)));
    } else if (lookup->state == LOOKUP_NOT_FOUND) {
        f->reason = format_text("allocation %s no longer exists (404 alloc not found), so the "
                                "registration is orphaned", r->alloc_id);
    } else {
        f->reason = format_text("allocation %s is %s (client-terminal), so the registration is "
                                "orphaned", r->alloc_id, status_text);
    }
    f->basis = format_text("allocation %s %s", r->alloc_id, status_text);
    if (f->reason == NULL || f->basis == NULL)
        return -1;

    cJSON_AddStringToObject(f->evidence, "registration_id", r->id);
    cJSON_AddStringToObject(f->evidence, "service", r->service_name);
    cJSON_AddStringToObject(f->evidence, "namespace", r->namespace_name);
    cJSON_AddStringToObject(f->evidence, "alloc_id", r->alloc_id);
    cJSON_AddStringToObject(f->evidence, "alloc_status", status_text);
    cJSON_AddStringToObject(f->evidence, "alloc_seen_in",
                            alloc != NULL ? "allocation list" : "allocation lookup");
    if (r->node_id[0] != '\0')
        cJSON_AddStringToObject(f->evidence, "node_id", r->node_id);
    if (r->job_id != NULL)
        cJSON_AddStringToObject(f->evidence, "job_id", r->job_id);
    if (alloc != NULL && alloc->modify_time_s > 0)
        cJSON_AddStringToObject(f->evidence, "alloc_modified",
                                format_utc(alloc->modify_time_s, when, sizeof(when)));
    return 0;
}

static int assess_orphans(const struct snapshot *s, const struct policy *p, struct assessment *a,
                          struct rule_status *st)
{
    st->rule = RULE_ORPHAN_SERVICES;
    st->enabled = p->orphan_services.common.enabled;
    if (!st->enabled)
        return 0;
    if (!s->allocs_ok)
        return skip_rule(s, st, "allocations");
    if (!snapshot_find_read(s, "services") || !snapshot_find_read(s, "services")->ok)
        return skip_rule(s, st, "services");
    st->evaluated = 1;
    for (size_t i = 0; i < s->n_services; i++) {
        if (assess_registration(s, &s->services[i], a) != 0)
            return -1;
    }
    return 0;
}

static int assess_gc(const struct snapshot *s, const struct policy *p, struct assessment *a,
                     struct rule_status *st)
{
    const struct policy_system_gc *gc = &p->system_gc;
    int allocs_over, evals_over;
    struct finding *f;

    st->rule = RULE_SYSTEM_GC;
    st->enabled = gc->common.enabled;
    if (!st->enabled)
        return 0;
    if (!s->nodes_ok)
        return skip_rule(s, st, "nodes");
    if (!s->allocs_ok)
        return skip_rule(s, st, "allocations");
    if (!s->evals_ok)
        return skip_rule(s, st, "evaluations");
    st->evaluated = 1;

    allocs_over = gc->min_terminal_allocs > 0 && s->terminal_allocs >= gc->min_terminal_allocs;
    evals_over = gc->min_terminal_evals > 0 && s->terminal_evals >= gc->min_terminal_evals;
    if (!allocs_over && !evals_over)
        return 0;

    f = new_finding(a, RULE_SYSTEM_GC, "cluster");
    if (f == NULL || set_action(f, &action_system_gc, "cluster") != 0)
        return -1;
    f->reason = format_text("%ld terminal allocations (threshold %ld) and %ld terminal evaluations "
                            "(threshold %ld) are waiting for garbage collection",
                            s->terminal_allocs, gc->min_terminal_allocs, s->terminal_evals,
                            gc->min_terminal_evals);
    f->basis = format_text("thresholds exceeded:%s%s", allocs_over ? " allocations" : "",
                           evals_over ? " evaluations" : "");
    if (f->reason == NULL || f->basis == NULL)
        return -1;
    cJSON_AddNumberToObject(f->evidence, "terminal_allocations", (double)s->terminal_allocs);
    cJSON_AddNumberToObject(f->evidence, "terminal_evaluations", (double)s->terminal_evals);
    cJSON_AddNumberToObject(f->evidence, "min_terminal_allocs", (double)gc->min_terminal_allocs);
    cJSON_AddNumberToObject(f->evidence, "min_terminal_evals", (double)gc->min_terminal_evals);
    cJSON_AddNumberToObject(f->evidence, "unhealthy_nodes", (double)snapshot_unhealthy_nodes(s));
    return 0;
}

static int assess_down_nodes(const struct snapshot *s, const struct policy *p, struct assessment *a,
                             struct rule_status *st)
{
    st->rule = RULE_DOWN_NODES;
    st->enabled = p->down_nodes.common.enabled;
    if (!st->enabled)
        return 0;
    if (!s->nodes_ok)
        return skip_rule(s, st, "nodes");
    st->evaluated = 1;

    for (size_t i = 0; i < s->n_nodes; i++) {
        const struct snap_node *n = &s->nodes[i];
        cJSON *affected;
        size_t n_affected = 0;
        struct finding *f;
        char since[32];

        if (n->status != NODE_DOWN && n->status != NODE_DISCONNECTED)
            continue;
        if (p->down_nodes.min_down_s > 0 && n->status_updated_at > 0 &&
            s->observed_at - n->status_updated_at < p->down_nodes.min_down_s)
            continue;

        f = new_finding(a, RULE_DOWN_NODES, n->id);
        if (f == NULL)
            return -1;
        affected = cJSON_AddArrayToObject(f->evidence, "affected_allocations");
        for (size_t k = 0; k < s->n_allocs; k++) {
            const struct snap_alloc *al = &s->allocs[k];

            if (strcmp(al->node_id, n->id) != 0 || alloc_status_is_terminal(al->client_status))
                continue;
            /* List a few IDs; the count covers the rest. */
            if (n_affected < 10 && affected != NULL)
                cJSON_AddItemToArray(affected, cJSON_CreateString(al->id));
            n_affected++;
        }
        cJSON_AddStringToObject(f->evidence, "node_id", n->id);
        cJSON_AddStringToObject(f->evidence, "node_name", n->name ? n->name : "");
        cJSON_AddStringToObject(f->evidence, "status", node_status_name(n->status));
        cJSON_AddStringToObject(f->evidence, "since", format_utc(n->status_updated_at, since, sizeof(since)));
        cJSON_AddNumberToObject(f->evidence, "affected_allocation_count", (double)n_affected);
        if (n->last_event != NULL)
            cJSON_AddStringToObject(f->evidence, "last_event", n->last_event);
        if (!s->allocs_ok)
            cJSON_AddStringToObject(f->evidence, "note", "allocation list unavailable; count incomplete");
        f->reason = format_text("node %s (%s) is %s since %s; %zu non-terminal allocation(s) on it%s%s",
                                n->name ? n->name : "?", n->id, node_status_name(n->status), since,
                                n_affected, n->last_event ? "; last event: " : "",
                                n->last_event ? n->last_event : "");
        f->basis = format_text("node %s %s", n->id, node_status_name(n->status));
        if (f->reason == NULL || f->basis == NULL)
            return -1;
    }
    return 0;
}

int rules_assess(const struct snapshot *s, const struct policy *p, struct assessment *out)
{
    memset(out, 0, sizeof(*out));
    if (assess_orphans(s, p, out, &out->rules[0]) != 0 || assess_gc(s, p, out, &out->rules[1]) != 0 ||
        assess_down_nodes(s, p, out, &out->rules[2]) != 0)
        return -1;
    return 0;
}
