/* Mode handling, journaling and execution of actions. */
#define _POSIX_C_SOURCE 200809L
#include "execute.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* A journal row that borrows every string from f. evidence_text is the caller's. */
static void row_from_finding(const struct finding *f, const char *mode, enum journal_state state,
                             char *evidence_text, struct journal_action *row)
{
    memset(row, 0, sizeof(*row));
    row->idem_key = f->idem_key;
    row->kind = (char *)f->action->name;
    row->target = f->target;
    row->rule = (char *)f->rule;
    row->reason = f->reason;
    row->evidence = evidence_text;
    row->basis = f->basis;
    row->namespace_name = f->namespace_name;
    row->service = f->service;
    row->alloc_id = f->alloc_id;
    row->mode = (char *)mode;
    row->state = state;
    row->blocked_by = (char *)f->blocked_by;
    row->last_error = f->detail;
}

static void set_detail(struct finding *f, const char *text)
{
    free(f->detail);
    f->detail = text ? strdup(text) : NULL;
}

static const char *rule_mode_name(const struct exec_context *ctx, const struct finding *f)
{
    return policy_mode_name(policy_rule_mode(ctx->policy, rules_policy(ctx->policy, f->rule)));
}

static int record(struct exec_context *ctx, struct finding *f, enum journal_state state,
                  char *err, size_t errsz)
{
    struct journal_action row;
    char *evidence;
    int rc;

    if (ctx->journal == NULL || ctx->read_only)
        return 0;
    evidence = cJSON_PrintUnformatted(f->evidence);
    row_from_finding(f, rule_mode_name(ctx, f), state, evidence, &row);
    row.pass_id = ctx->pass_id;
    rc = journal_action_record(ctx->journal, &row, ctx->now, &f->action_id, err, errsz);
    free(evidence);
    return rc == JOURNAL_OK ? 0 : -1;
}

int execute_record_blocked(struct exec_context *ctx, struct finding *f, char *err, size_t errsz)
{
    return record(ctx, f, JS_BLOCKED, err, errsz);
}

/* The pass clock is the time of the observation; execution rows record when they really happened. */
static long long wall_now(void)
{
    return (long long)time(NULL);
}

/* Test hook: die right after the `executing` commit, to prove recovery never repeats blindly. */
static void crash_point(const char *name)
{
    const char *want = getenv("NOMAD_MEDIC_TEST_CRASH");

    if (want != NULL && strcmp(want, name) == 0) {
        log_warn("execute", "NOMAD_MEDIC_TEST_CRASH=%s: killing the process now", name);
        raise(SIGKILL);
    }
}

static int take_tokens(struct exec_context *ctx, struct finding *f, int *allowed, char *err, size_t errsz)
{
    const struct policy_rule_common *rule = rules_policy(ctx->policy, f->rule);
    char bucket[64];
    double left;

    *allowed = 1;
    snprintf(bucket, sizeof(bucket), "rule:%s", f->rule);
    if (journal_bucket_take(ctx->journal, bucket, rule->rate_limit.count, rule->rate_limit.period_s,
                            ctx->now, 1, allowed, &left, err, errsz) != JOURNAL_OK)
        return -1;
    if (!*allowed)
        return 0;
    return journal_bucket_take(ctx->journal, "global", ctx->policy->global_rate_limit.count,
                               ctx->policy->global_rate_limit.period_s, ctx->now, 1, allowed,
                               &left, err, errsz) == JOURNAL_OK ? 0 : -1;
}

/*
 * Start f: take its tokens and commit an `executing` row in one transaction,
 * then re-check, send, and journal the outcome. approved_id is the approved
 * row to move to executing, or 0 for a new row.
 */
static int run_action(struct exec_context *ctx, struct finding *f, long long approved_id,
                      char *err, size_t errsz)
{
    struct journal_action row;
    struct action_env env;
    enum recheck_result rr;
    char why[1024] = "";
    char note[512] = "";
    char failure[2200] = "";
    char *evidence;
    int allowed;
    int rc;

    if (journal_begin(ctx->journal, err, errsz) != JOURNAL_OK)
        return -1;
    if (take_tokens(ctx, f, &allowed, err, errsz) != 0)
        goto rollback;
    if (!allowed) {
        journal_rollback(ctx->journal);
        f->outcome = OUTCOME_BLOCKED;
        f->blocked_by = "rate_limit";
        set_detail(f, "rate limit used up when the action was about to start");
        return execute_record_blocked(ctx, f, err, errsz);
    }
    if (approved_id != 0) {
        rc = journal_action_transition(ctx->journal, approved_id, JS_APPROVED, JS_EXECUTING, NULL,
                                       NULL, wall_now(), err, errsz);
        f->action_id = approved_id;
    } else {
        evidence = cJSON_PrintUnformatted(f->evidence);
        row_from_finding(f, rule_mode_name(ctx, f), JS_EXECUTING, evidence, &row);
        row.pass_id = ctx->pass_id;
        row.last_error = NULL;
        rc = journal_action_insert(ctx->journal, &row, wall_now(), &f->action_id, err, errsz);
        free(evidence);
    }
    if (rc != JOURNAL_OK)
        goto rollback;
    if (journal_commit(ctx->journal, err, errsz) != JOURNAL_OK)
        goto rollback;
    log_info("execute", "action id=%lld kind=%s target=%s state=executing", f->action_id,
             f->action->name, f->target);
    crash_point("after_executing_commit");

    /* The row as stored, for the action kind. */
    memset(&row, 0, sizeof(row));
    if (journal_action_get(ctx->journal, f->action_id, &row, err, errsz) != JOURNAL_OK)
        return -1;

    env.client = ctx->client;
    env.host = ctx->host;
    env.journal = ctx->journal;
    env.policy = ctx->policy;
    env.now = wall_now();
    rr = f->action->recheck(&env, &row, why, sizeof(why));
    if (rr != RECHECK_HOLDS) {
        snprintf(failure, sizeof(failure), "not sent: %s: %s",
                 rr == RECHECK_CHANGED ? "the precondition no longer holds" : "the re-check read failed",
                 why);
        rc = -1;
    } else {
        crash_point("before_request");
        rc = f->action->execute(&env, &row, note, sizeof(note), failure, sizeof(failure));
    }
    journal_action_free(&row);

    if (rc == 1) {
        /* Started; poll() decides in a later pass, and the row stays executing until then. */
        f->outcome = OUTCOME_IN_PROGRESS;
        set_detail(f, note);
        log_info("execute", "action id=%lld kind=%s target=%s started: %s", f->action_id, f->action->name,
                 f->target, note);
        return 0;
    }
    if (rc == 0) {
        f->outcome = OUTCOME_SUCCEEDED;
        set_detail(f, note);
        log_info("execute", "action id=%lld kind=%s target=%s state=succeeded: %s", f->action_id,
                 f->action->name, f->target, note);
        rc = journal_action_transition(ctx->journal, f->action_id, JS_EXECUTING, JS_SUCCEEDED, note,
                                       NULL, wall_now(), err, errsz);
    } else {
        f->outcome = OUTCOME_FAILED;
        set_detail(f, failure);
        log_error("execute", "action id=%lld kind=%s target=%s state=failed: %s", f->action_id,
                  f->action->name, f->target, failure);
        rc = journal_action_transition(ctx->journal, f->action_id, JS_EXECUTING, JS_FAILED, failure,
                                       NULL, wall_now(), err, errsz);
    }
    return rc == JOURNAL_OK ? 0 : -1;

rollback:
    journal_rollback(ctx->journal);
    return -1;
}

/* Queue f for approval; a queued row whose evidence changed is replaced. */
static int queue_for_approval(struct exec_context *ctx, struct finding *f, struct journal_action *open,
                              int have_open, char *err, size_t errsz)
{
    struct journal_action row;
    char *evidence;
    int rc;

    if (have_open && open->state == JS_PENDING_APPROVAL) {
        if (open->basis != NULL && f->basis != NULL && strcmp(open->basis, f->basis) == 0) {
            f->outcome = OUTCOME_PENDING_APPROVAL;
            f->action_id = open->id;
            set_detail(f, "waiting for an operator: nomad-medic actions approve|reject ID");
            return 0;
        }
        if (journal_action_transition(ctx->journal, open->id, JS_PENDING_APPROVAL, JS_EXPIRED,
                                      "evidence changed before a decision; queued again",
                                      NULL, ctx->now, err, errsz) != JOURNAL_OK)
            return -1;
    }
    evidence = cJSON_PrintUnformatted(f->evidence);
    row_from_finding(f, "approve", JS_PENDING_APPROVAL, evidence, &row);
    row.pass_id = ctx->pass_id;
    row.last_error = NULL;
    row.expires_at = ctx->now + ctx->policy->approval_ttl_s;
    rc = journal_action_insert(ctx->journal, &row, ctx->now, &f->action_id, err, errsz);
    free(evidence);
    if (rc != JOURNAL_OK)
        return -1;
    f->outcome = OUTCOME_PENDING_APPROVAL;
    set_detail(f, "queued for approval: nomad-medic actions approve|reject ID");
    log_info("execute", "action id=%lld kind=%s target=%s state=pending_approval", f->action_id,
             f->action->name, f->target);
    return 0;
}

/* Decide the outcome a plan reports for f, writing and sending nothing. */
static int plan_outcome(struct exec_context *ctx, struct finding *f, enum policy_mode mode,
                        char *err, size_t errsz)
{
    struct journal_action open;
    int have_open = 0;
    int rc;

    memset(&open, 0, sizeof(open));
    if (ctx->journal != NULL) {
        rc = journal_action_find_open(ctx->journal, f->idem_key, &open, err, errsz);
        if (rc == JOURNAL_ERR)
            return -1;
        have_open = rc == JOURNAL_OK;
    }
    if (have_open)
        f->action_id = open.id;
    if (have_open && open.state == JS_EXECUTING) {
        f->outcome = OUTCOME_IN_PROGRESS;
    } else if (mode == MODE_DRY_RUN) {
        f->outcome = OUTCOME_DRY_RUN;
        guards_promise_token(ctx->guards, f);
    } else if (mode == MODE_ENFORCE || (have_open && open.state == JS_APPROVED &&
                                        open.basis && f->basis && strcmp(open.basis, f->basis) == 0)) {
        f->outcome = OUTCOME_WOULD_RUN;
        guards_promise_token(ctx->guards, f);
    } else if (have_open && open.state == JS_PENDING_APPROVAL) {
        f->outcome = OUTCOME_PENDING_APPROVAL;
    } else {
        f->outcome = OUTCOME_WOULD_QUEUE;
    }
    journal_action_free(&open);
    return 0;
}

/*
 * An operator's rejection stands while the evidence is the same: the action
 * is blocked rather than queued or run again. Returns 1 when f was blocked,
 * 0 when no rejection applies, -1 on a journal error.
 */
static int check_rejected(struct exec_context *ctx, struct finding *f, char *err, size_t errsz)
{
    struct journal_action last;
    char when[32];
    char detail[512];
    int rc;

    if (ctx->journal == NULL)
        return 0;
    rc = journal_action_latest_decision(ctx->journal, f->idem_key, &last, err, errsz);
    if (rc == JOURNAL_NOT_FOUND)
        return 0;
    if (rc != JOURNAL_OK)
        return -1;
    rc = 0;
    if (last.state == JS_REJECTED && last.basis != NULL && f->basis != NULL &&
        strcmp(last.basis, f->basis) == 0) {
        snprintf(detail, sizeof(detail), "rejected as action %lld by %s at %s; it is proposed again "
                 "only when its evidence changes", last.id, last.decided_by ? last.decided_by : "?",
                 format_utc(last.decided_at, when, sizeof(when)));
        f->outcome = OUTCOME_BLOCKED;
        f->blocked_by = "rejected";
        set_detail(f, detail);
        rc = 1;
    }
    journal_action_free(&last);
    return rc;
}

int execute_finding(struct exec_context *ctx, struct finding *f, char *err, size_t errsz)
{
    enum policy_mode mode = policy_rule_mode(ctx->policy, rules_policy(ctx->policy, f->rule));
    struct journal_action open;
    int have_open;
    int rc;

    rc = check_rejected(ctx, f, err, errsz);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return ctx->read_only ? 0 : execute_record_blocked(ctx, f, err, errsz);

    if (ctx->read_only || ctx->journal == NULL || ctx->client == NULL)
        return plan_outcome(ctx, f, mode, err, errsz);

    if (mode == MODE_DRY_RUN) {
        f->outcome = OUTCOME_DRY_RUN;
        guards_promise_token(ctx->guards, f);
        set_detail(f, NULL);
        if (record(ctx, f, JS_DRY_RUN, err, errsz) != 0)
            return -1;
        log_info("execute", "action id=%lld kind=%s target=%s state=dry_run: %s", f->action_id,
                 f->action->name, f->target, f->reason);
        return 0;
    }

    memset(&open, 0, sizeof(open));
    rc = journal_action_find_open(ctx->journal, f->idem_key, &open, err, errsz);
    if (rc == JOURNAL_ERR)
        return -1;
    have_open = rc == JOURNAL_OK;

    if (have_open && open.state == JS_EXECUTING) {
        f->outcome = OUTCOME_IN_PROGRESS;
        f->action_id = open.id;
        set_detail(f, "an earlier attempt is still marked executing");
        rc = 0;
    } else if (have_open && open.state == JS_APPROVED) {
        if (open.basis != NULL && f->basis != NULL && strcmp(open.basis, f->basis) == 0) {
            rc = run_action(ctx, f, open.id, err, errsz);
        } else {
            char note[1200];

            snprintf(note, sizeof(note), "approval void: evidence changed since approval (was \"%s\", "
                     "now \"%s\")", open.basis ? open.basis : "", f->basis ? f->basis : "");
            log_warn("execute", "action id=%lld kind=%s target=%s: %s", open.id, f->action->name,
                     f->target, note);
            rc = journal_action_transition(ctx->journal, open.id, JS_APPROVED, JS_BLOCKED, note,
                                           "recheck", ctx->now, err, errsz) == JOURNAL_OK ? 0 : -1;
            if (rc == 0 && mode == MODE_APPROVE)
                rc = queue_for_approval(ctx, f, &open, 0, err, errsz);
            else if (rc == 0)
                rc = run_action(ctx, f, 0, err, errsz);
        }
    } else if (mode == MODE_APPROVE) {
        rc = queue_for_approval(ctx, f, &open, have_open, err, errsz);
    } else {
        /* Enforce: a row still waiting for approval is superseded. */
        rc = 0;
        if (have_open && open.state == JS_PENDING_APPROVAL)
            rc = journal_action_transition(ctx->journal, open.id, JS_PENDING_APPROVAL, JS_EXPIRED,
                                           "superseded: the rule now runs in enforce mode", NULL,
                                           ctx->now, err, errsz) == JOURNAL_OK ? 0 : -1;
        if (rc == 0)
            rc = run_action(ctx, f, 0, err, errsz);
    }
    journal_action_free(&open);
    return rc;
}

static int finding_present(const struct assessment *as, const char *idem_key)
{
    for (size_t i = 0; i < as->n; i++) {
        if (as->findings[i].idem_key != NULL && strcmp(as->findings[i].idem_key, idem_key) == 0)
            return 1;
    }
    return 0;
}

int execute_retire_cleared(struct exec_context *ctx, const struct assessment *as, const char *rule,
                           char *err, size_t errsz)
{
    struct journal_action *rows = NULL;
    size_t n = 0;
    int rc = 0;

    if (ctx->read_only || ctx->journal == NULL)
        return 0;
    if (journal_action_list(ctx->journal, (1u << JS_PENDING_APPROVAL) | (1u << JS_APPROVED), 0, &rows,
                            &n, err, errsz) != JOURNAL_OK)
        return -1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *note = "no longer needed: the finding cleared before the action ran";
        enum journal_state to = rows[i].state == JS_APPROVED ? JS_BLOCKED : JS_EXPIRED;

        if (rows[i].rule == NULL || strcmp(rows[i].rule, rule) != 0 || finding_present(as, rows[i].idem_key))
            continue;
        log_info("execute", "action id=%lld kind=%s target=%s: %s", rows[i].id, rows[i].kind,
                 rows[i].target, note);
        if (journal_action_transition(ctx->journal, rows[i].id, rows[i].state, to, note,
                                      to == JS_BLOCKED ? "recheck" : NULL, ctx->now, err, errsz) == JOURNAL_ERR)
            rc = -1;
    }
    journal_action_list_free(rows, n);
    return rc;
}

int execute_poll_started(struct exec_context *ctx, const struct snapshot *s, char *err, size_t errsz)
{
    struct action_env env = {
        .client = ctx->client, .host = ctx->host, .journal = ctx->journal, .policy = ctx->policy,
        .now = wall_now(),
    };
    struct journal_action *rows = NULL;
    size_t n = 0;
    int rc = 0;

    if (ctx->read_only || ctx->journal == NULL || ctx->client == NULL)
        return 0;
    if (journal_action_list(ctx->journal, 1u << JS_EXECUTING, 0, &rows, &n, err, errsz) != JOURNAL_OK)
        return -1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct action_type *type = action_find(rows[i].kind);
        enum poll_result pr;
        char note[1024] = "";

        if (type == NULL || type->poll == NULL || strcmp(type->scope, s->node_scope ? "node" : "cluster") != 0)
            continue;
        pr = type->poll(&env, s, &rows[i], note, sizeof(note));
        if (pr == POLL_WAITING)
            continue;
        log_info("execute", "action id=%lld kind=%s target=%s state=%s: %s", rows[i].id, rows[i].kind,
                 rows[i].target, pr == POLL_DONE ? "succeeded" : "failed", note);
        if (journal_action_transition(ctx->journal, rows[i].id, JS_EXECUTING,
                                      pr == POLL_DONE ? JS_SUCCEEDED : JS_FAILED, note, NULL, env.now, err,
                                      errsz) == JOURNAL_ERR)
            rc = -1;
    }
    journal_action_list_free(rows, n);
    return rc;
}

int execute_resolve_interrupted(struct journal *j, const char *scope, struct nomad_client *client,
                                const struct host_paths *host, long long now, char *err, size_t errsz)
{
    struct action_env env = {.client = client, .host = host, .journal = j, .now = now};
    struct journal_action *rows = NULL;
    size_t n = 0;
    int resolved = 0;

    if (journal_action_list(j, 1u << JS_EXECUTING, 0, &rows, &n, err, errsz) != JOURNAL_OK)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const struct action_type *type = action_find(rows[i].kind);
        enum journal_state to;
        char note[1024] = "";
        enum resolve_result rr;

        /* A row of the other scope belongs to the process that runs that scope (another host, maybe). */
        if (type != NULL && strcmp(type->scope, scope) != 0)
            continue;
        if (type == NULL) {
            snprintf(note, sizeof(note), "unknown action kind %s; outcome cannot be checked", rows[i].kind);
            rr = RESOLVE_UNKNOWN;
        } else {
            rr = type->resolve_interrupted(&env, &rows[i], note, sizeof(note));
        }
        if (rr == RESOLVE_PENDING) {
            log_info("execute", "action id=%lld kind=%s target=%s is still in progress: %s", rows[i].id,
                     rows[i].kind, rows[i].target, note);
            continue;
        }
        if (rr == RESOLVE_READ_FAILED) {
            log_warn("execute", "action id=%lld kind=%s target=%s left executing: re-check failed: %s",
                     rows[i].id, rows[i].kind, rows[i].target, note);
            continue;
        }
        if (rr == RESOLVE_DONE)
            to = JS_SUCCEEDED;
        else if (rr == RESOLVE_NOT_DONE)
            to = JS_FAILED;
        else
            to = JS_UNKNOWN;
        log_warn("execute", "action id=%lld kind=%s target=%s interrupted by a restart, now %s: %s",
                 rows[i].id, rows[i].kind, rows[i].target, journal_state_name(to), note);
        if (journal_action_transition(j, rows[i].id, JS_EXECUTING, to, note, NULL, now, err, errsz) ==
            JOURNAL_ERR) {
            journal_action_list_free(rows, n);
            return -1;
        }
        resolved++;
    }
    journal_action_list_free(rows, n);
    return resolved;
}
