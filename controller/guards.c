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
        RULE_ORPHAN_SERVICES, RULE_SYSTEM_GC, RULE_DOWN_NODES, RULE_NETNS_LEAKS, RULE_PORT_CONFLICTS,
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

static int check_breaker(struct guard_state *g, struct finding *f)
{
    const struct snapshot *s = g->snapshot;
    size_t unhealthy;
    double share;

    if (!f->action->touches_nodes)
        return 0;
    if (!s->nodes_ok)
        return block(f, "breaker", "the node list was not read completely, so the share of "
                     "unhealthy nodes is unknown");
    if (s->n_nodes == 0 || (int)s->n_nodes < g->policy->breaker_min_nodes)
        return 0;
    unhealthy = snapshot_unhealthy_nodes(s);
    share = (double)unhealthy / (double)s->n_nodes;
    if (share > g->policy->breaker_max_unhealthy)
        return block(f, "breaker", "%zu of %zu nodes (%.0f%%) are down or disconnected, above the "
                     "%.0f%% limit; this looks like a partition or a server problem",
                     unhealthy, s->n_nodes, share * 100.0, g->policy->breaker_max_unhealthy * 100.0);
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
    if (tokens - (double)used < 1.0)
        return block(f, "rate_limit", "rate limit %s of %d per %s is used up (%.2f tokens left, "
                     "%d promised earlier in this pass)", bucket, rate->count,
                     policy_format_duration(rate->period_s, period, sizeof(period)), tokens, used);
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

    if (g->paused)
        return block(f, "pause", "pause file %s exists; remove it to resume", p->pause_file);
    if (!s->leader_ok) {
        const struct snap_read *r = snapshot_find_read(s, "leader");

        return block(f, "leader", "no known cluster leader (%s)", r && r->error ? r->error : "not read");
    }
    if (f->failed_read != NULL)
        return block(f, "reads", "%s", f->failed_read);
    if (check_breaker(g, f))
        return 1;
    if (f->action->precheck(s, f->target, why, sizeof(why)) != 0)
        return block(f, "precheck", "%s", why);

    {
        long grace = strcmp(f->rule, RULE_ORPHAN_SERVICES) == 0 ? p->orphan_services.grace_s
                     : strcmp(f->rule, RULE_NETNS_LEAKS) == 0   ? p->netns_leaks.grace_s
                                                                : 0;
        long long age = g->now - f->first_seen;

        if (grace > 0 && age < grace)
            return block(f, "grace", "seen for %s of the %s grace period; %s left",
                         policy_format_duration((long)age, d1, sizeof(d1)),
                         policy_format_duration(grace, d2, sizeof(d2)),
                         policy_format_duration((long)(grace - age), why, sizeof(why)));
    }

    if (rule->cooldown_s > 0 && g->journal != NULL) {
        rc = journal_last_execution(g->journal, f->idem_key, &at, err, errsz);
        if (rc == JOURNAL_ERR)
            return -1;
        if (rc == JOURNAL_OK && g->now - at < rule->cooldown_s)
            return block(f, "cooldown", "%s was last acted on at %s; cooldown %s has %s left",
                         f->target, format_utc(at, d1, sizeof(d1)),
                         policy_format_duration(rule->cooldown_s, d2, sizeof(d2)),
                         policy_format_duration((long)(rule->cooldown_s - (g->now - at)), why, sizeof(why)));
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
    return 0;
}

void guards_promise_token(struct guard_state *g, const struct finding *f)
{
    g->used_by_rule[rule_index(f->rule)]++;
    g->used_global++;
}
