/* The guard chain. */
#define _POSIX_C_SOURCE 200809L
#include "guards.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static int rule_index(const char *rule)
{
    static const char *const names[RULE_COUNT] = {
        RULE_ORPHAN_SERVICES, RULE_SYSTEM_GC,       RULE_DOWN_NODES,       RULE_NETNS_LEAKS,
        RULE_PORT_CONFLICTS,  RULE_CLIENT_RESTART, RULE_SERVER_RESTART, RULE_NODE_INELIGIBLE,
    };

    for (int i = 0; i < RULE_COUNT; i++) {
        if (strcmp(rule, names[i]) == 0)
            return i;
    }
    return 0;
}

void guards_begin(struct guard_state *g, const struct policy *p, const struct snapshot *s,
                  struct journal *j, long long now)
{
    memset(g, 0, sizeof(*g));
    g->policy = p;
    g->snapshot = s;
    g->journal = j;
    g->now = now;
    g->paused = p->pause_file != NULL && p->pause_file[0] != '\0' && access(p->pause_file, F_OK) == 0;
    if (g->paused)
        log_warn("guard", "pause file %s exists: no action runs until it is removed", p->pause_file);
}

static int block(struct finding *f, const char *guard, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int block(struct finding *f, const char *guard, const char *fmt, ...)
{
    char detail[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    f->outcome = OUTCOME_BLOCKED;
    f->blocked_by = guard;
    free(f->detail);
    f->detail = strdup(detail);
    log_info("guard", "blocked %s target=%s guard=%s: %s", f->action->name, f->target, guard, detail);
    return 1;
}

static int is_restart(const struct finding *f)
{
    return strcmp(f->rule, RULE_CLIENT_RESTART) == 0 || strcmp(f->rule, RULE_SERVER_RESTART) == 0;
}

/*
 * Down or disconnected nodes whose host has not written a fresh heartbeat.
 * A fresh heartbeat went through the servers, so that host is not cut off.
 * After a full outage every client may be down while every host is back, and
 * such nodes are no evidence of a partition. With unread heartbeats every
 * down node counts.
 */
static size_t unreachable_nodes(const struct snapshot *s, const struct policy *p)
{
    size_t n = 0;

    for (size_t i = 0; i < s->n_nodes; i++) {
        const struct snap_node *node = &s->nodes[i];
        const struct snap_heartbeat *hb;

        if (node->status != NODE_DOWN && node->status != NODE_DISCONNECTED)
            continue;
        hb = s->heartbeats_ok ? snapshot_find_heartbeat(s, node->id) : NULL;
        n += hb == NULL || hb->host_alive_at <= 0 ||
             s->observed_at - hb->host_alive_at > p->client_restart.heartbeat_max_age_s;
    }
    return n;
}

/*
 * The breaker covers actions that touch nodes, and restarts of both kinds:
 * many clients cut off at once points to a partition, where restarting a
 * server that looks failed from this side does not help. A server restart
 * without a leader is exempt, because then the node list cannot be read and
 * the missing quorum is the problem.
 */
static int check_breaker(struct guard_state *g, struct finding *f)
{
    const struct snapshot *s = g->snapshot;
    int restart = is_restart(f);
    size_t unhealthy;
    double share;

    if (!f->action->touches_nodes && !restart)
        return 0;
    if (strcmp(f->rule, RULE_SERVER_RESTART) == 0 && !s->leader_ok)
        return 0;
    if (!s->nodes_ok)
        return block(f, "breaker", "the node list was not read completely, so the share of "
                     "unhealthy nodes is unknown");
    if (s->n_nodes == 0 || (int)s->n_nodes < g->policy->breaker_min_nodes)
        return 0;
    unhealthy = restart ? unreachable_nodes(s, g->policy) : snapshot_unhealthy_nodes(s);
    share = (double)unhealthy / (double)s->n_nodes;
    if (share > g->policy->breaker_max_unhealthy)
        return block(f, "breaker", "%zu of %zu nodes (%.0f%%) are down or disconnected%s, above the "
                     "%.0f%% limit; this looks like a partition or a server problem",
                     unhealthy, s->n_nodes, share * 100.0, restart ? " without a fresh host heartbeat" : "",
                     g->policy->breaker_max_unhealthy * 100.0);
    return 0;
}

static int check_rate(struct guard_state *g, struct finding *f, const char *bucket,
                      const struct policy_rate *rate, int used, char *err, size_t errsz)
{
    char period[32];
    double tokens = (double)rate->count;
    int allowed = 1;

    if (rate->count <= 0)
        return 0;
    if (g->journal != NULL &&
        journal_bucket_take(g->journal, bucket, rate->count, rate->period_s, g->now, 0, &allowed,
                            &tokens, err, errsz) != JOURNAL_OK)
        return -1;
    if (tokens - (double)used < 1.0) {
        /* The bucket gains count tokens per period_s, continuously, so this is when one is free. */
        double wait_s = ((double)used + 1.0 - tokens) * (double)rate->period_s / (double)rate->count;

        /* Clamp to a year so a period near the parser's limit cannot overflow the cast. */
        if (wait_s > 366.0 * 86400.0)
            wait_s = 366.0 * 86400.0;

        f->retry_at = g->now + (long long)wait_s + 1;
        return block(f, "rate_limit", "rate limit %s of %d per %s is used up (%.2f tokens left, "
                     "%d promised earlier in this pass)", bucket, rate->count,
                     policy_format_duration(rate->period_s, period, sizeof(period)), tokens, used);
    }
    return 0;
}

/*
 * 1 when the target of a restart requested at requested_at (Unix s) is back
 * in this pass's snapshot. A client node must be ready since then, or just
 * ready when the node list carries no status time. A server member must be
 * alive and healthy in autopilot, so unknown health (no leader) is not back.
 */
static int target_back(const struct snapshot *s, const char *kind, const char *target, long long requested_at)
{
    if (strcmp(kind, "client_restart") == 0) {
        const struct snap_node *n = snapshot_find_node(s, target);

        return n != NULL && n->status == NODE_READY &&
               (n->status_updated_at == 0 || n->status_updated_at >= requested_at);
    }
    for (size_t i = 0; i < s->n_servers; i++) {
        const struct snap_server *srv = &s->servers[i];

        if (srv->name != NULL && strcmp(srv->name, target) == 0)
            return srv->serf_status != NULL && strcmp(srv->serf_status, "alive") == 0 && srv->healthy == 1;
    }
    return 0;
}

/*
 * Orders of kind still in flight. An instance that stopped, or lost the lock,
 * leaves its orders pending or running, and no other instance polls them. So
 * an order stops counting once its ready timeout has passed, and a client's
 * order also once its node is back. A server's order is named after the
 * member with its dots replaced, so only the timeout ends it.
 */
static size_t orders_in_flight(const struct guard_state *g, const char *kind)
{
    const struct snapshot *s = g->snapshot;
    int client = strcmp(kind, "client_restart") == 0;
    long timeout = client ? g->policy->client_restart.ready_timeout_s : g->policy->server_restart.ready_timeout_s;
    size_t n = 0;

    for (size_t i = 0; i < s->n_orders; i++) {
        const struct snap_order *o = &s->orders[i];

        if (o->kind == NULL || strcmp(o->kind, kind) != 0 || !snap_order_in_flight(o))
            continue;
        if (o->requested_at > 0 && g->now - o->requested_at > timeout)
            continue;
        if (client && o->target != NULL && target_back(s, kind, o->target, o->requested_at))
            continue;
        n++;
    }
    return n;
}

/*
 * Restarts of kind in flight, counting started, the ones that passed this
 * guard earlier in this pass. Orders show every instance's restarts as of
 * the observation. This instance's executing rows also cover a server
 * restart run without an order because there was no leader, but they include
 * the ones started in this pass, which started already counts. Hence
 * max(orders, rows - started) + started: never below the true count when
 * each row either has an order or no orders could be read.
 * Returns 0, or -1 with err filled.
 */
static int restarts_in_flight(const struct guard_state *g, const char *kind, int started, size_t *n,
                              char *err, size_t errsz)
{
    struct journal_action *rows = NULL;
    size_t orders = orders_in_flight(g, kind);
    size_t count = 0;
    size_t executing = 0;

    if (g->journal != NULL) {
        if (journal_action_list(g->journal, 1u << JS_EXECUTING, 0, &rows, &count, err, errsz) != JOURNAL_OK)
            return -1;
        /* A row whose target is back only waits for this pass's poll to mark it succeeded. */
        for (size_t i = 0; i < count; i++)
            executing += rows[i].kind != NULL && strcmp(rows[i].kind, kind) == 0 && rows[i].target != NULL &&
                         !target_back(g->snapshot, kind, rows[i].target, rows[i].updated_at);
        journal_action_list_free(rows, count);
    }
    executing = executing > (size_t)started ? executing - (size_t)started : 0;
    *n = (orders > executing ? orders : executing) + (size_t)started;
    return 0;
}

/* 1 when this instance's journal has a restart of f's target executing, 0 when not, -1 with err filled. */
static int own_restart_running(const struct guard_state *g, const struct finding *f, char *err, size_t errsz)
{
    struct journal_action open;
    int rc;
    int running;

    if (g->journal == NULL)
        return 0;
    memset(&open, 0, sizeof(open));
    rc = journal_action_find_open(g->journal, f->idem_key, &open, err, errsz);
    if (rc == JOURNAL_ERR)
        return -1;
    running = rc == JOURNAL_OK && open.state == JS_EXECUTING;
    journal_action_free(&open);
    return running;
}

static const struct snap_server *unhealthy_server(const struct snapshot *s)
{
    for (size_t i = 0; i < s->n_servers; i++) {
        const struct snap_server *srv = &s->servers[i];

        if (srv->serf_status == NULL || strcmp(srv->serf_status, "alive") != 0 || srv->healthy == 0)
            return srv;
    }
    return NULL;
}

/*
 * Restarts go servers first, one server at a time, and never more than
 * max_parallel clients. Returns 1 when f was blocked, 0 when it may go on,
 * -1 on a journal error.
 */
static int check_ordering(struct guard_state *g, struct finding *f, char *err, size_t errsz)
{
    const struct snapshot *s = g->snapshot;
    const struct policy *p = g->policy;
    size_t servers_busy;
    int rc;

    if (!is_restart(f))
        return 0;
    if (restarts_in_flight(g, "server_restart", g->started_servers, &servers_busy, err, errsz) != 0)
        return -1;
    rc = own_restart_running(g, f, err, errsz);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return block(f, "ordering", "the restart of %s is still in flight; the next pass checks whether it "
                     "came back", f->target);

    if (strcmp(f->rule, RULE_SERVER_RESTART) == 0) {
        const struct snap_server *target = NULL;
        size_t voters = 0, healthy_others = 0;

        if (servers_busy > 0)
            return block(f, "ordering", "a server restart is in flight; servers are restarted one at a time");
        for (size_t i = 0; i < s->n_servers; i++) {
            const struct snap_server *srv = &s->servers[i];
            int healthy = srv->serf_status != NULL && strcmp(srv->serf_status, "alive") == 0 && srv->healthy != 0;

            if (srv->name != NULL && strcmp(srv->name, f->target) == 0)
                target = srv;
            voters += srv->voter;
            healthy_others += srv->voter && healthy && !(srv->name && strcmp(srv->name, f->target) == 0);
        }
        /*
         * A failed server takes no part in quorum, so restarting it cannot
         * lose quorum. A running but unhealthy one may still vote: restart it
         * only while the others keep quorum without it.
         */
        if (target != NULL && target->serf_status != NULL && strcmp(target->serf_status, "alive") == 0 &&
            healthy_others < voters / 2 + 1)
            return block(f, "ordering", "restarting %s would leave %zu healthy voter(s) of %zu, below quorum (%zu)",
                         f->target, healthy_others, voters, voters / 2 + 1);
        return 0;
    }

    if (strcmp(f->rule, RULE_CLIENT_RESTART) == 0) {
        const struct snap_server *bad = unhealthy_server(s);
        size_t clients_busy;
        char d1[32], d2[32];

        if (restarts_in_flight(g, "client_restart", g->started_clients, &clients_busy, err, errsz) != 0)
            return -1;
        if (!s->autopilot_ok)
            return block(f, "ordering", "autopilot health could not be read, so server health is unknown");
        if (!s->autopilot_healthy)
            return block(f, "ordering", "autopilot reports the servers unhealthy; servers are restarted "
                         "before any client");
        if (bad != NULL)
            return block(f, "ordering", "server %s is %s; servers are restarted before any client",
                         bad->name ? bad->name : "?", bad->healthy == 0 ? "unhealthy" : "not alive");
        if (servers_busy > 0)
            return block(f, "ordering", "a server restart is in flight; clients wait for the servers");
        if (s->leader_since > 0 && g->now - s->leader_since < p->client_restart.settle_s)
            return block(f, "ordering", "the leader changed %s ago; clients wait %s after a leader change",
                         policy_format_duration((long)(g->now - s->leader_since), d1, sizeof(d1)),
                         policy_format_duration(p->client_restart.settle_s, d2, sizeof(d2)));
        if ((long)clients_busy >= p->client_restart.max_parallel)
            return block(f, "ordering", "%zu client restart(s) in flight, the max_parallel limit is %d",
                         clients_busy, p->client_restart.max_parallel);
    }
    return 0;
}

int guards_check(struct guard_state *g, struct finding *f, char *err, size_t errsz)
{
    const struct policy *p = g->policy;
    const struct snapshot *s = g->snapshot;
    const struct policy_rule_common *rule = rules_policy(p, f->rule);
    char why[1024] = "";
    char d1[32], d2[32];
    long long at;
    int rc;

    f->retry_at = 0;
    if (g->paused)
        return block(f, "pause", "pause file %s exists; remove it to resume", p->pause_file);
    /* Without a leader only failed servers are proposed (rules_restart.c), and restarting them restores quorum. */
    if (!s->leader_ok && strcmp(f->rule, RULE_SERVER_RESTART) != 0) {
        const struct snap_read *r = snapshot_find_read(s, "leader");

        return block(f, "leader", "no known cluster leader (%s)", r && r->error ? r->error : "not read");
    }
    if (f->failed_read != NULL)
        return block(f, "reads", "%s", f->failed_read);
    if (check_breaker(g, f))
        return 1;
    rc = check_ordering(g, f, err, errsz);
    if (rc != 0)
        return rc;
    if (f->action->precheck(s, f->target, why, sizeof(why)) != 0)
        return block(f, "precheck", "%s", why);

    {
        long grace = 0;

        /* A server's failure carries no timestamp, so its min_down counts from first sight. */
        if (strcmp(f->rule, RULE_ORPHAN_SERVICES) == 0)
            grace = p->orphan_services.grace_s;
        else if (strcmp(f->rule, RULE_NETNS_LEAKS) == 0)
            grace = p->netns_leaks.grace_s;
        else if (strcmp(f->rule, RULE_SERVER_RESTART) == 0)
            grace = p->server_restart.min_down_s;
        long long age = g->now - f->first_seen;

        if (grace > 0 && age < grace) {
            f->retry_at = f->first_seen + grace;
            return block(f, "grace", "seen for %s of the %s grace period; %s left",
                         policy_format_duration((long)age, d1, sizeof(d1)),
                         policy_format_duration(grace, d2, sizeof(d2)),
                         policy_format_duration((long)(grace - age), why, sizeof(why)));
        }
    }

    if (rule->cooldown_s > 0 && g->journal != NULL) {
        rc = journal_last_execution(g->journal, f->idem_key, &at, err, errsz);
        if (rc == JOURNAL_ERR)
            return -1;
        if (rc == JOURNAL_OK && g->now - at < rule->cooldown_s) {
            f->retry_at = at + rule->cooldown_s;
            return block(f, "cooldown", "%s was last acted on at %s; cooldown %s has %s left",
                         f->target, format_utc(at, d1, sizeof(d1)),
                         policy_format_duration(rule->cooldown_s, d2, sizeof(d2)),
                         policy_format_duration((long)(rule->cooldown_s - (g->now - at)), why, sizeof(why)));
        }
    }

    {
        char bucket[64];
        int idx = rule_index(f->rule);

        snprintf(bucket, sizeof(bucket), "rule:%s", f->rule);
        rc = check_rate(g, f, bucket, &rule->rate_limit, g->used_by_rule[idx], err, errsz);
        if (rc != 0)
            return rc;
        rc = check_rate(g, f, "global", &p->global_rate_limit, g->used_global, err, errsz);
        if (rc != 0)
            return rc;
    }
    /* Count the restart as in flight for the rest of this pass. */
    if (strcmp(f->rule, RULE_SERVER_RESTART) == 0)
        g->started_servers++;
    else if (strcmp(f->rule, RULE_CLIENT_RESTART) == 0)
        g->started_clients++;
    return 0;
}

void guards_promise_token(struct guard_state *g, const struct finding *f)
{
    g->used_by_rule[rule_index(f->rule)]++;
    g->used_global++;
}
