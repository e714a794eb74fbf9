/* Metrics recorded from each pass, for /metrics. */
#ifndef NOMAD_MEDIC_TELEMETRY_H
#define NOMAD_MEDIC_TELEMETRY_H

#include "../policies/policy.h"
#include "../store/journal.h"
#include "metrics.h"
#include "reconcile.h"

/* Record the series that must read 0 before anything happens (breaker, lock, guard blocks). */
void telemetry_init(struct metrics *m);

/*
 * Record one pass: its result and duration, findings by rule, actions by
 * kind and outcome, guard blocks, the breaker, rate-limit tokens left (read
 * from the journal without taking any), the last complete observation and
 * whether this instance holds the lock.
 */
void telemetry_record_pass(struct metrics *m, const struct pass_result *r, const struct policy *p,
                           struct journal *j, const char *scope, double seconds, int holds_lock);

#endif
