/*
 * Guards: the checks a proposed action must pass before it may run, in this
 * order:
 *
 *   pause       the pause file exists
 *   leader      no known cluster leader
 *   reads       a read the action depends on failed
 *   breaker     too large a share of nodes is down or disconnected (actions
 *               that touch nodes, allocations or services, and server
 *               restarts while a leader is known; for restarts a down node
 *               with a fresh host heartbeat does not count)
 *   ordering    restarts: servers before clients, one server at a time, a
 *               stable leader, at most max_parallel clients in flight
 *   precheck    the action kind's own condition (system_gc: no node down)
 *   grace       the finding is younger than its rule's grace period
 *   cooldown    the same target was acted on too recently
 *   rate_limit  the rule's or the global token bucket is empty
 *
 * The mode (dry-run, approve, enforce) is applied after the guards by the
 * executor. Guards only read the journal; tokens are taken when an action
 * really starts.
 */
#ifndef NOMAD_MEDIC_GUARDS_H
#define NOMAD_MEDIC_GUARDS_H

#include "../policies/policy.h"
#include "../store/journal.h"
#include "rules.h"
#include "snapshot.h"

struct guard_state {
    const struct policy *policy;
    const struct snapshot *snapshot;
    struct journal *journal;   /* NULL: no journal (an offline plan); buckets count as full */
    long long now;
    int paused;                /* the pause file exists */
    /* Tokens this pass has already promised to earlier actions, so one pass cannot overrun a bucket. */
    int used_global;
    int used_by_rule[RULE_COUNT];
    /* Restarts that passed the ordering guard in this pass, not yet visible as orders. */
    int started_clients;
    int started_servers;
};

/* Prepare guard state for one pass; checks the pause file. */
void guards_begin(struct guard_state *g, const struct policy *p, const struct snapshot *s,
                  struct journal *j, long long now);

/*
 * Run the guards over f. On a block sets f->outcome = OUTCOME_BLOCKED,
 * f->blocked_by and f->detail and returns 1; returns 0 when f may go on to
 * its mode, -1 on a journal error (err filled; the action must not run).
 */
int guards_check(struct guard_state *g, struct finding *f, char *err, size_t errsz);

/*
 * Count one token of f's rule and of the global bucket as spoken for in this
 * pass without taking it from the journal. The executor calls it for actions
 * that would run but do not (dry run, plan); an action that really starts
 * takes its tokens from the journal instead, and one that only waits for
 * approval takes nothing.
 */
void guards_promise_token(struct guard_state *g, const struct finding *f);

#endif
