/*
 * A thread-safe registry of counters, gauges and histograms, rendered in the
 * Prometheus text exposition format 0.0.4 for GET /metrics.
 *
 * A metric family is created by its first update, which fixes its type, its
 * HELP text, its label names and, for a histogram, its bucket bounds. Later
 * updates must use the same type, label names and bounds; their help
 * argument is ignored. Labels are passed as a NULL-terminated array of
 * name/value pairs, for example
 *     const char *labels[] = {"scope", "cluster", "result", "complete", NULL};
 * and labels may be NULL for a series without labels. The order of the pairs
 * does not matter: {a, b} and {b, a} name the same series.
 *
 * Names follow Prometheus' rules: a metric name matches
 * [a-zA-Z_:][a-zA-Z0-9_:]*, a label name matches [a-zA-Z_][a-zA-Z0-9_]* and
 * does not start with "__", and a histogram takes no "le" label. Label
 * values and HELP text must be valid UTF-8 and are escaped on output.
 * A histogram named x also claims x_bucket, x_sum and x_count, so no other
 * family may use those names.
 *
 * Updates that break a rule change nothing and return METRICS_INVALID. The
 * first 10 rejections of a registry are logged as warnings, and
 * metrics_last_error() returns the latest one.
 *
 * Output order is stable: families sorted by name, series by their label
 * text. Every call locks one mutex, so any thread may update or render.
 */
#ifndef NOMAD_MEDIC_METRICS_H
#define NOMAD_MEDIC_METRICS_H

#include <stddef.h>

#include "nomad.h"

/* Content-Type of metrics_render()'s output. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

enum metrics_rc {
    METRICS_OK = 0,
    METRICS_INVALID = -1,   /* a name, label, value, type or bucket list breaks a rule above */
    METRICS_NOMEM = -2,
};

/*
 * Upper bounds in seconds for request and pass durations: 5 ms to 300 s,
 * because a Nomad blocking query may be held for up to 300 s.
 */
extern const double metrics_duration_buckets[];
extern const size_t metrics_duration_buckets_count;

struct metrics;

/* Create an empty registry. Returns NULL when memory runs out. */
struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/* Add value (finite, >= 0) to a counter; a new series starts at 0. */
int metrics_counter_add(struct metrics *m, const char *name, const char *help, const char *const *labels,
                        double value);

/* Set a gauge to value (any double, NaN and infinities included). */
int metrics_gauge_set(struct metrics *m, const char *name, const char *help, const char *const *labels,
                      double value);

/*
 * Count value (not NaN) in a histogram whose upper bounds are
 * buckets[0..n_buckets-1]: finite and strictly increasing. The +Inf bucket
 * is implicit. buckets may be NULL when n_buckets is 0.
 */
int metrics_histogram_observe(struct metrics *m, const char *name, const char *help, const double *buckets,
                              size_t n_buckets, const char *const *labels, double value);

/*
 * Render every family as exposition text. On METRICS_OK *text is a malloc'd
 * NUL-terminated string for the caller to free() and *len its length
 * without the NUL; on METRICS_NOMEM *text is NULL.
 */
int metrics_render(struct metrics *m, char **text, size_t *len);

/* Copy the message of the latest rejected update into buf ("" when none). Returns buf. */
char *metrics_last_error(struct metrics *m, char *buf, size_t bufsz);

/* 1 when name is a valid metric name, else 0. */
int metrics_valid_metric_name(const char *name);
/* 1 when name is a valid label name (reserved "__" names excluded), else 0. */
int metrics_valid_label_name(const char *name);

/*
 * Write the endpoint template of a Nomad API path into out: the query string
 * is dropped and every ID or name is replaced, so a label never contains one.
 *   /v1/allocation/5f1c...?namespace=web     -> /v1/allocation/:id
 *   /v1/service/web/_nomad-task-...          -> /v1/service/:name/:id
 *   /v1/node/8a2b.../allocations             -> /v1/node/:id/allocations
 *   /v1/var/nomad-medic/lock                 -> /v1/var/:path
 *   /v1/status/leader                        -> /v1/status/leader
 * A path no template matches keeps only its first segment after /v1 when
 * that segment is a lower-case word ("/v1/regions", "/v1/acl/..."), and
 * becomes "other" otherwise. Returns out, truncated to outsz.
 */
char *metrics_nomad_endpoint(const char *path, char *out, size_t outsz);

/*
 * A nomad_observer_fn (ctx is a struct metrics *) that records one request
 * attempt as
 *   nomad_medic_nomad_requests_total{endpoint, method, status}
 *   nomad_medic_nomad_request_duration_seconds{endpoint}
 * status is the HTTP status when a response arrived ("200", "404") and the
 * failure otherwise ("timeout", "transport_error", "too_large",
 * "internal_error"). method is GET, PUT, POST, DELETE or "other".
 */
void metrics_observe_nomad_request(void *ctx, const char *method, const char *path, long status,
                                   enum nomad_result result, double seconds);

#endif
