/*
 * One reconcile pass: observe, assess, plan, guard, execute, report.
 */
#ifndef NOMAD_MEDIC_RECONCILE_H
#define NOMAD_MEDIC_RECONCILE_H

#include "../policies/policy.h"
#include "../store/journal.h"
#include "nomad.h"
#include "rules.h"
#include "snapshot.h"
#include "source.h"

/* What a pass works with. None of it is owned by the pass. */
struct observe_reuse;

struct controller {
    struct policy *policy;
    struct journal *journal;       /* NULL: an offline plan without a journal */
    struct nomad_client *client;   /* NULL: offline, nothing can be sent */
    const char *scope;             /* "cluster" or "node" */
    const char *coordination_problem;   /* why the lock is unusable, or NULL; restarts are off then */
    struct observe_reuse *reuse;   /* lists `run` may take from the last pass, or NULL (observe.h) */
};

struct pass_result {
    struct snapshot snapshot;
    struct assessment assessment;
    long long pass_id;             /* 0 for a read-only pass */
    long long now;                 /* the pass's clock: wall time, or the capture time offline */
    int complete;                  /* every read succeeded */
    size_t failed_reads;
    size_t proposed;               /* findings with an action, blocked ones included */
    size_t advisories;
    size_t blocked;
    size_t succeeded;
    size_t failed;
};

/*
 * Run one pass reading from src. With read_only (plan) nothing is written to
 * the journal and no mutating request is sent. Returns 0, or -1 on a journal
 * or memory error (err filled); the result must be freed either way.
 */
int reconcile_pass(struct controller *c, struct source *src, int read_only, struct pass_result *r,
                   char *err, size_t errsz);

void pass_result_free(struct pass_result *r);

/*
 * Return when the next pass is due if nothing in the cluster changes, so
 * `run` can wait on blocking queries until then:
 *   - the earliest time at which time alone lifts a guard that blocked an
 *     action (grace, cooldown, rate limit);
 *   - LLONG_MAX when only a change can alter the outcome: dry runs, actions
 *     waiting for an operator, rejected actions, and orphan and GC actions
 *     blocked by the breaker, precheck or reads guard;
 *   - 0, a pass at every interval, when an action ran, failed or is in
 *     flight, or any other block (pause file, leader, ordering, tokens gone
 *     at the start, and the breaker, precheck or reads guard of a restart).
 * A down or disconnected node that has not yet been down for a rule's
 * min_down (down_nodes, client_restart) makes that moment due too, since no
 * list changes when the threshold passes. Actions in flight without a
 * finding in r (a restart being polled) are not seen here: the caller
 * checks the journal for them.
 */
long long reconcile_next_due(const struct pass_result *r, const struct policy *p);

#endif
