/* One reconcile pass. */
#define _POSIX_C_SOURCE 200809L
#include "reconcile.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "execute.h"
#include "guards.h"
#include "log.h"
#include "observe.h"

void pass_result_free(struct pass_result *r)
{
    snapshot_free(&r->snapshot);
    assessment_free(&r->assessment);
}

/*
 * Rows that cause nothing outside the journal (findings seen, blocked and
 * dry_run decisions) are written in one transaction per pass rather than
 * one fdatasync each: a 2,500-orphan pass otherwise spends most of its
 * journal time syncing. The batch is committed before anything that may
 * send a request, so an action still starts only after its executing row is
 * on disk. A crash loses at most the open batch, which the next pass writes
 * again from what it observes.
 */
struct batch {
    struct journal *journal;   /* NULL: nothing is written (plan, offline) */
    int open;
};

static int batch_open(struct batch *b, char *err, size_t errsz)
{
    if (b->journal == NULL || b->open)
        return 0;
    if (journal_begin(b->journal, err, errsz) != JOURNAL_OK)
        return -1;
    b->open = 1;
    return 0;
}

static int batch_commit(struct batch *b, char *err, size_t errsz)
{
    if (!b->open)
        return 0;
    b->open = 0;
    return journal_commit(b->journal, err, errsz) == JOURNAL_OK ? 0 : -1;
}

static void batch_abort(struct batch *b)
{
    if (b->open)
        journal_rollback(b->journal);
    b->open = 0;
}

static int record_findings(struct controller *c, struct pass_result *r, int read_only, char *err,
                           size_t errsz, struct batch *batch);

/*
 * Return 1 when only a change in a watched list (nodes, allocations,
 * services, evaluations) can lift f's block. A rejection lasts until the
 * evidence changes, and the evidence comes from those lists. For the
 * orphan and GC rules, the breaker, precheck and reads guards rest on the
 * lists too; a failed read already makes the pass incomplete. The restart
 * rules also depend on server members and Variables (host heartbeats,
 * restart orders), which no watch covers.
 */
static int lifted_by_watched_change(const struct finding *f)
{
    static const char *const list_guards[] = {"breaker", "precheck", "reads"};
    int restart = strcmp(f->rule, RULE_CLIENT_RESTART) == 0 || strcmp(f->rule, RULE_SERVER_RESTART) == 0 ||
                  strcmp(f->rule, RULE_NODE_INELIGIBLE) == 0;

    if (strcmp(f->blocked_by, "rejected") == 0)
        return 1;
    for (size_t k = 0; !restart && k < sizeof(list_guards) / sizeof(list_guards[0]); k++) {
        if (strcmp(f->blocked_by, list_guards[k]) == 0)
            return 1;
    }
    return 0;
}

/* Lower *due to t when t is in the future and earlier. */
static void due_at(long long *due, long long t, long long now)
{
    if (t > now && t < *due)
        *due = t;
}

long long reconcile_next_due(const struct pass_result *r, const struct policy *p)
{
    const struct snapshot *s = &r->snapshot;
    long long due = LLONG_MAX;

    for (size_t i = 0; i < s->n_nodes; i++) {
        const struct snap_node *n = &s->nodes[i];

        if ((n->status != NODE_DOWN && n->status != NODE_DISCONNECTED) || n->status_updated_at <= 0)
            continue;
        if (p->down_nodes.common.enabled && p->down_nodes.min_down_s > 0)
            due_at(&due, n->status_updated_at + p->down_nodes.min_down_s, r->now);
        if (p->client_restart.common.enabled && p->client_restart.min_down_s > 0)
            due_at(&due, n->status_updated_at + p->client_restart.min_down_s, r->now);
    }

    for (size_t i = 0; i < r->assessment.n; i++) {
        const struct finding *f = &r->assessment.findings[i];

        if (f->action == NULL || f->outcome == OUTCOME_DRY_RUN || f->outcome == OUTCOME_PENDING_APPROVAL)
            continue;
        if (f->outcome != OUTCOME_BLOCKED || f->blocked_by == NULL)
            return 0;
        if (lifted_by_watched_change(f))
            continue;
        if (f->retry_at <= 0)
            return 0;
        if (f->retry_at < due)
            due = f->retry_at;
    }
    return due;
}

/* Fill first-seen times from the journal; record them unless read_only. */
static int track_findings(struct controller *c, struct pass_result *r, int read_only, char *err,
                          size_t errsz)
{
    struct batch batch = {read_only ? NULL : c->journal, 0};
    int rc = record_findings(c, r, read_only, err, errsz, &batch);

    if (rc != 0) {
        batch_abort(&batch);
        return -1;
    }
    return batch_commit(&batch, err, errsz);
}

static int record_findings(struct controller *c, struct pass_result *r, int read_only, char *err,
                           size_t errsz, struct batch *batch)
{
    struct assessment *as = &r->assessment;

    for (size_t i = 0; i < as->n; i++) {
        struct finding *f = &as->findings[i];
        char *evidence;
        int rc;

        f->first_seen = r->now;
        if (c->journal == NULL)
            continue;
        if (read_only || f->failed_read != NULL) {
            /* A finding resting on a failed read has not been confirmed, so it starts no grace period. */
            rc = journal_finding_first_seen(c->journal, f->key, &f->first_seen, err, errsz);
            if (rc == JOURNAL_ERR)
                return -1;
            if (rc == JOURNAL_NOT_FOUND)
                f->first_seen = r->now;
            continue;
        }
        if (batch_open(batch, err, errsz) != 0)
            return -1;
        evidence = cJSON_PrintUnformatted(f->evidence);
        rc = journal_finding_seen(c->journal, f->key, f->rule, f->subject, evidence, r->pass_id, r->now,
                                  &f->first_seen, err, errsz);
        free(evidence);
        if (rc != JOURNAL_OK)
            return -1;
    }
    if (read_only || c->journal == NULL)
        return 0;
    if (batch_open(batch, err, errsz) != 0)
        return -1;
    for (size_t i = 0; i < sizeof(as->rules) / sizeof(as->rules[0]); i++) {
        if (as->rules[i].rule != NULL && as->rules[i].evaluated &&
            journal_findings_sweep(c->journal, as->rules[i].rule, r->pass_id, err, errsz) != JOURNAL_OK)
            return -1;
    }
    return 0;
}

static int decide(struct controller *c, struct pass_result *r, struct exec_context *ctx, struct batch *batch,
                  char *err, size_t errsz);

static int act(struct controller *c, struct pass_result *r, int read_only, char *err, size_t errsz)
{
    struct guard_state guards;
    struct exec_context ctx;
    struct batch batch = {read_only ? NULL : c->journal, 0};

    guards_begin(&guards, c->policy, &r->snapshot, c->journal, r->now);
    memset(&ctx, 0, sizeof(ctx));
    ctx.policy = c->policy;
    ctx.journal = c->journal;
    ctx.client = c->client;
    ctx.host = &c->policy->host;
    ctx.guards = &guards;
    ctx.now = r->now;
    ctx.pass_id = r->pass_id;
    ctx.read_only = read_only;

    if (decide(c, r, &ctx, &batch, err, errsz) != 0) {
        batch_abort(&batch);
        return -1;
    }
    if (batch_commit(&batch, err, errsz) != 0)
        return -1;
    return execute_poll_started(&ctx, &r->snapshot, err, errsz);
}

/* Guard and execute each finding, batching the rows that start nothing (struct batch). */
static int decide(struct controller *c, struct pass_result *r, struct exec_context *ctx, struct batch *batch,
                  char *err, size_t errsz)
{
    struct assessment *as = &r->assessment;

    for (size_t i = 0; i < as->n; i++) {
        struct finding *f = &as->findings[i];
        int rc;

        if (f->action == NULL) {
            r->advisories++;
            log_warn("assess", "advisory rule=%s subject=%s: %s", f->rule, f->subject, f->reason);
            continue;
        }
        r->proposed++;
        if (batch_open(batch, err, errsz) != 0)
            return -1;
        rc = guards_check(ctx->guards, f, err, errsz);
        if (rc < 0)
            return -1;
        if (rc == 1) {
            r->blocked++;
            if (execute_record_blocked(ctx, f, err, errsz) != 0)
                return -1;
            continue;
        }
        /* Only a dry run is sure to send nothing; anything else may start the action. */
        if (policy_rule_mode(c->policy, rules_policy(c->policy, f->rule)) != MODE_DRY_RUN &&
            batch_commit(batch, err, errsz) != 0)
            return -1;
        if (execute_finding(ctx, f, err, errsz) != 0)
            return -1;
        if (f->outcome == OUTCOME_SUCCEEDED)
            r->succeeded++;
        else if (f->outcome == OUTCOME_FAILED)
            r->failed++;
        else if (f->outcome == OUTCOME_BLOCKED)
            r->blocked++;
    }

    if (batch_open(batch, err, errsz) != 0)
        return -1;
    for (size_t i = 0; i < sizeof(as->rules) / sizeof(as->rules[0]); i++) {
        if (as->rules[i].rule != NULL && as->rules[i].evaluated &&
            execute_retire_cleared(ctx, as, as->rules[i].rule, err, errsz) != 0)
            return -1;
    }
    return 0;
}

/* When the current leader was first seen, so clients can wait out a settling window after a change. */
static int track_leader(struct controller *c, struct pass_result *r, int read_only, char *err, size_t errsz)
{
    struct snapshot *s = &r->snapshot;
    char key[300];
    int rc;

    if (!s->leader_ok || c->journal == NULL || s->node_scope)
        return 0;
    snprintf(key, sizeof(key), "leader:%s", s->leader);
    if (read_only) {
        rc = journal_finding_first_seen(c->journal, key, &s->leader_since, err, errsz);
        if (rc == JOURNAL_NOT_FOUND)
            s->leader_since = r->now;
        return rc == JOURNAL_ERR ? -1 : 0;
    }
    if (journal_finding_seen(c->journal, key, "leader", s->leader, NULL, r->pass_id, r->now, &s->leader_since,
                             err, errsz) != JOURNAL_OK)
        return -1;
    return journal_findings_sweep(c->journal, "leader", r->pass_id, err, errsz) == JOURNAL_OK ? 0 : -1;
}

static char *reads_json(const struct snapshot *s)
{
    cJSON *arr = cJSON_CreateArray();
    char *text;

    for (size_t i = 0; i < s->n_reads; i++) {
        cJSON *o;

        /* Successful reads are only counted: a large cluster has thousands of them. */
        if (s->reads[i].ok)
            continue;
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "read", s->reads[i].name);
        cJSON_AddBoolToObject(o, "ok", 0);
        cJSON_AddStringToObject(o, "error", s->reads[i].error ? s->reads[i].error : "");
        cJSON_AddItemToArray(arr, o);
    }
    text = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return text;
}

static char *summary_json(const struct pass_result *r)
{
    cJSON *o = cJSON_CreateObject();
    char *text;

    cJSON_AddNumberToObject(o, "reads", (double)r->snapshot.n_reads);
    cJSON_AddNumberToObject(o, "failed_reads", (double)r->failed_reads);
    cJSON_AddNumberToObject(o, "findings", (double)r->assessment.n);
    cJSON_AddNumberToObject(o, "proposed", (double)r->proposed);
    cJSON_AddNumberToObject(o, "advisories", (double)r->advisories);
    cJSON_AddNumberToObject(o, "blocked", (double)r->blocked);
    cJSON_AddNumberToObject(o, "succeeded", (double)r->succeeded);
    cJSON_AddNumberToObject(o, "failed", (double)r->failed);
    text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

int reconcile_pass(struct controller *c, struct source *src, int read_only, struct pass_result *r,
                   char *err, size_t errsz)
{
    const char *mode = policy_mode_name(c->policy->mode);
    int expired = 0;
    int rc = -1;

    memset(r, 0, sizeof(*r));
    snapshot_init(&r->snapshot);
    r->now = c->client != NULL ? (long long)time(NULL) : src->observed_at;

    if (!read_only) {
        if (journal_pass_begin(c->journal, c->scope, mode, r->now, &r->pass_id, err, errsz) != JOURNAL_OK)
            return -1;
        if (journal_expire(c->journal, r->now, &expired, err, errsz) != JOURNAL_OK)
            return -1;
        if (expired > 0)
            log_info("reconcile", "%d action(s) expired without a decision", expired);
    }
    log_info("reconcile", "pass %lld started scope=%s mode=%s source=%s", r->pass_id, c->scope, mode,
             src->ops->name);

    if ((strcmp(c->scope, "node") == 0 ? observe_node(src, c->policy, &r->snapshot)
                                       : observe_cluster_reusing(src, c->policy, &r->snapshot, c->reuse)) != 0) {
        snprintf(err, errsz, "out of memory while reading the cluster");
        goto finish;
    }
    if (c->coordination_problem != NULL)
        r->snapshot.coordination_problem = strdup(c->coordination_problem);
    for (size_t i = 0; i < r->snapshot.n_reads; i++)
        r->failed_reads += !r->snapshot.reads[i].ok;
    r->complete = r->failed_reads == 0;

    if (rules_assess(&r->snapshot, c->policy, &r->assessment) != 0) {
        snprintf(err, errsz, "out of memory while assessing the cluster");
        goto finish;
    }
    for (size_t i = 0; i < sizeof(r->assessment.rules) / sizeof(r->assessment.rules[0]); i++) {
        const struct rule_status *st = &r->assessment.rules[i];

        if (st->enabled && !st->evaluated)
            log_warn("reconcile", "rule %s skipped: %s", st->rule, st->skipped_because);
    }
    if (track_findings(c, r, read_only, err, errsz) != 0 || track_leader(c, r, read_only, err, errsz) != 0)
        goto finish;
    if (act(c, r, read_only, err, errsz) != 0)
        goto finish;
    rc = 0;

finish:
    if (!read_only) {
        char *reads = reads_json(&r->snapshot);
        char *summary = summary_json(r);
        char ferr[512];

        if (journal_pass_finish(c->journal, r->pass_id, (long long)time(NULL), r->complete && rc == 0,
                                reads, summary, ferr, sizeof(ferr)) != JOURNAL_OK) {
            log_error("reconcile", "recording the end of pass %lld failed: %s", r->pass_id, ferr);
            if (rc == 0)
                snprintf(err, errsz, "%s", ferr);
            rc = -1;
        }
        free(reads);
        free(summary);
    }
    log_info("reconcile", "pass %lld finished complete=%d failed_reads=%zu findings=%zu proposed=%zu "
             "advisories=%zu blocked=%zu succeeded=%zu failed=%zu", r->pass_id, r->complete,
             r->failed_reads, r->assessment.n, r->proposed, r->advisories, r->blocked, r->succeeded,
             r->failed);
    return rc;
}
