/*
 * Execution: apply the mode to an action that passed its guards, journal
 * it, and, in enforce mode or once approved, carry it out.
 *
 * Journal first: the row reaches `executing` and is committed, together with
 * the rate-limit tokens it takes, before the fresh re-check and the mutating
 * request. The row then moves to `succeeded` or `failed`.
 */
#ifndef NOMAD_MEDIC_EXECUTE_H
#define NOMAD_MEDIC_EXECUTE_H

#include "../policies/policy.h"
#include "../store/journal.h"
#include "guards.h"
#include "nomad.h"
#include "rules.h"

struct exec_context {
    const struct policy *policy;
    struct journal *journal;       /* NULL: nothing is journaled (offline plan) */
    struct nomad_client *client;   /* NULL: nothing can be sent */
    const struct host_paths *host; /* node scope: the host's paths; NULL for the cluster scope */
    struct guard_state *guards;
    long long now;
    long long pass_id;
    int read_only;                 /* plan: decide outcomes, write and send nothing */
};

/*
 * Apply the mode to f (guards passed) and act on it. Fills f->outcome,
 * f->detail and f->action_id. Returns 0, or -1 on a journal error (err
 * filled), in which case nothing was sent.
 */
int execute_finding(struct exec_context *ctx, struct finding *f, char *err, size_t errsz);

/* Journal a blocked finding (refreshing an identical earlier row). */
int execute_record_blocked(struct exec_context *ctx, struct finding *f, char *err, size_t errsz);

/*
 * Retire open rows of rule whose finding did not appear in this complete
 * pass: pending approvals expire, approved rows are blocked as no longer
 * needed. Call only when the rule was evaluated.
 */
int execute_retire_cleared(struct exec_context *ctx, const struct assessment *as, const char *rule,
                           char *err, size_t errsz);

/*
 * Poll the started actions (restarts) whose rows are executing: each moves to
 * succeeded or failed once its target is back or its time is up. Returns 0,
 * or -1 on a journal error.
 */
int execute_poll_started(struct exec_context *ctx, const struct snapshot *s, char *err, size_t errsz);

/*
 * Resolve rows of scope left in `executing` by a crash: each is re-checked through its
 * action kind and moved to succeeded, failed or unknown; a failed re-check
 * leaves it for the next start. Never repeats a request. Returns the number
 * of rows resolved, or -1 on a journal error.
 */
int execute_resolve_interrupted(struct journal *j, const char *scope, struct nomad_client *client,
                                const struct host_paths *host, long long now, char *err, size_t errsz);

#endif
