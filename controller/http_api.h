/*
 * The operator-facing HTTP listener (libmicrohttpd): health and readiness
 * probes, Prometheus metrics and the approval API.
 *
 *   GET  /healthz                  200 "ok" when a pass finished within
 *                                  healthy_within_s, else 503 with the reason
 *   GET  /readyz                   200 "ok" when this instance holds the
 *                                  leadership lock (or runs alone) and its last
 *                                  observation was complete, else 503
 *   GET  /metrics                  the registry in text format 0.0.4
 *   GET  /v1/actions               JSON array of journal rows; pending_approval
 *                                  by default, ?state=<journal state> or ?all=true
 *   GET  /v1/actions/<id>          the row with its evidence and steps, as
 *                                  `nomad-medic actions show --json` prints it
 *   POST /v1/actions/<id>/approve  journal_action_decide() with who =
 *   POST /v1/actions/<id>/reject   "api:<token name>"; 200 with the updated row
 *
 * Every /v1/ request needs "Authorization: Bearer <token>" matching one of
 * the listener's tokens (compared in constant time). A missing header or
 * another scheme is 401 with "WWW-Authenticate: Bearer"; an unknown token
 * is 403; with no tokens configured every /v1/ request is 403. Then an
 * unknown action is 404, a decision on a row that is not pending or has
 * expired is 409 with the journal's message, and an invalid query is 400.
 * Errors under /v1/ are JSON objects {"error": "..."}, and the probes send
 * plain text.
 *
 * Every approval and rejection, and every refused /v1/ request, is written
 * to the journal's api_audit table with the client address and the token's
 * name. Requests outside /v1/ are not audited. The token itself is never
 * logged, echoed or stored.
 *
 * Bodies over 64 KiB are refused with 413, unknown paths are 404 and a
 * known path with another method is 405 with an Allow header. GET routes
 * also answer HEAD.
 *
 * Requests run on a small pool of libmicrohttpd threads. The API opens its
 * own journal handle and uses it from one request at a time, so it never
 * shares the main loop's handle. The probes and /metrics never touch the
 * journal, so a busy journal does not delay them.
 */
#ifndef NOMAD_MEDIC_HTTP_API_H
#define NOMAD_MEDIC_HTTP_API_H

#include <stddef.h>

#include "../policies/policy.h"
#include "metrics.h"

/* Largest request body accepted, in bytes. */
#define HTTP_API_MAX_BODY (64 * 1024)

/* The state the main loop passes to http_api_update() after each pass. */
struct http_api_status {
    long long last_pass_finished_at;        /* Unix seconds; 0 before the first pass */
    long long last_watch_at;                /* Unix seconds the loop was last seen alive between passes; 0 none */
    int last_observation_complete;          /* 1 when every read of that pass succeeded */
    long long last_complete_observation_at; /* Unix seconds; 0 when none yet */
    int holds_lock;                         /* 1 when this instance holds the lock, or runs alone */
    const char *scope;                      /* "cluster" or "node"; copied; NULL allowed */
};

struct http_api;

/*
 * Start listening on cfg->address ("host:port" or "[v6]:port"; port 0
 * picks a free port, see http_api_port()). The API copies what it needs
 * from cfg, so the caller may free cfg afterwards. journal_path is opened
 * (and created or migrated, like journal_open() does) for the approval API.
 * m may be NULL, and /metrics is then 404; otherwise m must outlive the API.
 * cfg->enabled is not read: the caller starts the API only when the
 * listener is enabled. Returns NULL with err filled when the address is
 * invalid, the port cannot be bound, or the journal cannot be opened.
 */
struct http_api *http_api_start(const struct policy_listener *cfg, const char *journal_path,
                                struct metrics *m, char *err, size_t errsz);

/* Replace the status the probes report. Thread-safe; status->scope is copied. */
void http_api_update(struct http_api *api, const struct http_api_status *status);

/* The TCP port the listener is bound to. */
int http_api_port(const struct http_api *api);

/* Stop listening, finish requests in progress, close the journal and free api. NULL is allowed. */
void http_api_stop(struct http_api *api);

#endif
