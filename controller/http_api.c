/*
 * The operator-facing HTTP listener on libmicrohttpd. http_api.h lists the
 * routes and their responses.
 *
 * libmicrohttpd calls handle_request() several times per request: once
 * when the headers are in, once per chunk of body and once at the end. The
 * body is never used, only counted, so a request costs no memory for it.
 * A Content-Length above the limit is refused on the first call; a chunked
 * body is counted and refused at its end, and its connection is dropped
 * once it has sent far more than the limit.
 */
#define _DEFAULT_SOURCE
#define _POSIX_C_SOURCE 200809L
#include "http_api.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../store/journal.h"
#include "log.h"
#include "report.h"

#define COMPONENT "http"

/* libmicrohttpd worker threads. The probes stay responsive while one request waits for the journal. */
#define THREAD_POOL_SIZE 4
#define CONNECTION_LIMIT 64
#define CONNECTION_TIMEOUT_S 30
/* A chunked body this far past the limit is not drained any longer: the connection is dropped. */
#define BODY_DRAIN_MAX (16 * HTTP_API_MAX_BODY)

#define ALLOW_GET "GET, HEAD"
#define ALLOW_POST "POST"

struct api_token {
    char *name;
    char *secret;
    size_t secret_len;
};

struct http_api {
    struct MHD_Daemon *daemon;
    int port;
    struct metrics *metrics;
    long healthy_within_s;
    struct api_token *tokens;
    size_t n_tokens;

    pthread_mutex_t status_lock;    /* guards status and scope */
    struct http_api_status status;
    char scope[16];

    pthread_mutex_t journal_lock;   /* a struct journal serves one thread at a time */
    struct journal *journal;
};

/* State of one request across the handler's calls. */
struct request_state {
    size_t body_bytes;
    int too_large;
};

/* The request being handled. */
struct call {
    struct http_api *api;
    struct MHD_Connection *conn;
    const char *method;
    const char *path;
    char remote[INET6_ADDRSTRLEN];
    const char *token_name;     /* the matched token's name, NULL when none matched */
};

enum auth_result {
    AUTH_OK,
    AUTH_MISSING,       /* no Authorization header, another scheme, or an empty token */
    AUTH_WRONG,         /* a bearer token that matches none */
    AUTH_NO_TOKENS,     /* the listener has no tokens, so nothing is authorized */
};

static void set_err(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errsz == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

/* ---- responses ---- */

/* Queue a response with body (copied) and up to one extra header. */
static enum MHD_Result respond(struct call *c, unsigned status, const char *content_type, const char *body,
                               size_t len, const char *header, const char *header_value)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (header != NULL)
        MHD_add_response_header(resp, header, header_value);
    ret = MHD_queue_response(c->conn, status, resp);
    MHD_destroy_response(resp);
    log_debug(COMPONENT, "%s %s status=%u remote=%s token_name=%s", c->method, c->path, status, c->remote,
              c->token_name ? c->token_name : "-");
    return ret;
}

static enum MHD_Result respond_text(struct call *c, unsigned status, const char *text)
{
    return respond(c, status, "text/plain; charset=utf-8", text, strlen(text), NULL, NULL);
}

/* Send json (consumed) as the body; 500 when it cannot be printed. */
static enum MHD_Result respond_json(struct call *c, unsigned status, cJSON *json)
{
    char *text = json != NULL ? cJSON_PrintUnformatted(json) : NULL;
    enum MHD_Result ret;
    char *grown;
    size_t len;

    cJSON_Delete(json);
    if (text == NULL)
        return respond_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory while writing the response\n");

    /* End with a line feed, as the CLI does. Without memory for it, the body goes out without one. */
    len = strlen(text);
    grown = realloc(text, len + 2);
    if (grown != NULL) {
        text = grown;
        text[len++] = '\n';
        text[len] = '\0';
    }
    ret = respond(c, status, "application/json", text, len, NULL, NULL);
    free(text);
    return ret;
}

/* {"error": message} with an optional extra header. */
static enum MHD_Result respond_error(struct call *c, unsigned status, const char *message, const char *header,
                                     const char *header_value)
{
    cJSON *o = cJSON_CreateObject();
    char *text;
    enum MHD_Result ret;

    if (o == NULL || cJSON_AddStringToObject(o, "error", message) == NULL ||
        (text = cJSON_PrintUnformatted(o)) == NULL) {
        cJSON_Delete(o);
        return respond_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory while writing the response\n");
    }
    cJSON_Delete(o);
    ret = respond(c, status, "application/json", text, strlen(text), header, header_value);
    free(text);
    return ret;
}

static enum MHD_Result respond_method_not_allowed(struct call *c, const char *allow, int json)
{
    char message[96];

    snprintf(message, sizeof(message), "method %.20s is not allowed here; use %s%s", c->method, allow,
             json ? "" : "\n");
    if (json)
        return respond_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, message, MHD_HTTP_HEADER_ALLOW, allow);
    return respond(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", message, strlen(message),
                   MHD_HTTP_HEADER_ALLOW, allow);
}

/* ---- audit ---- */

/* Write an api_audit row. A failure is logged; the response does not change. Call without journal_lock. */
static void audit(struct call *c, const char *outcome, const char *detail)
{
    struct journal_api_audit row = {
        .remote_addr = c->remote[0] != '\0' ? c->remote : NULL,
        .method = (char *)c->method,
        .path = (char *)c->path,
        .token_name = (char *)c->token_name,
        .outcome = (char *)outcome,
        .detail = (char *)detail,
    };
    char err[512];
    int rc;

    pthread_mutex_lock(&c->api->journal_lock);
    rc = journal_api_audit_add(c->api->journal, &row, (long long)time(NULL), NULL, err, sizeof(err));
    pthread_mutex_unlock(&c->api->journal_lock);
    if (rc != JOURNAL_OK)
        log_error(COMPONENT, "could not record the audit row for %s %s outcome=%s remote=%s: %s", c->method,
                  c->path, outcome, c->remote, err);
}

/* ---- authentication ---- */

/* Compare in time that depends only on expected's length, never on where the first difference is. */
static int secrets_equal(const char *given, size_t given_len, const char *expected, size_t expected_len)
{
    volatile unsigned char diff = given_len != expected_len;

    for (size_t i = 0; i < expected_len; i++) {
        unsigned char g = i < given_len ? (unsigned char)given[i] : 0;

        diff |= g ^ (unsigned char)expected[i];
    }
    return diff == 0;
}

/*
 * Check the Authorization header. Every configured token is compared, even
 * after a match, so the time taken does not tell which token matched.
 */
static enum auth_result authenticate(struct call *c)
{
    const char *value = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    const struct api_token *match = NULL;
    size_t len;

    if (c->api->n_tokens == 0)
        return AUTH_NO_TOKENS;
    if (value == NULL)
        return AUTH_MISSING;
    while (*value == ' ' || *value == '\t')
        value++;
    if (strncasecmp(value, "Bearer", 6) != 0 || (value[6] != ' ' && value[6] != '\t'))
        return AUTH_MISSING;
    value += 6;
    while (*value == ' ' || *value == '\t')
        value++;
    len = strlen(value);
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (len == 0)
        return AUTH_MISSING;
    for (size_t i = 0; i < c->api->n_tokens; i++) {
        const struct api_token *t = &c->api->tokens[i];

        if (secrets_equal(value, len, t->secret, t->secret_len) && match == NULL)
            match = t;
    }
    if (match == NULL)
        return AUTH_WRONG;
    c->token_name = match->name;
    return AUTH_OK;
}

/* Respond to a failed authentication with 401 or 403, and audit it. */
static enum MHD_Result refuse_auth(struct call *c, enum auth_result auth)
{
    switch (auth) {
    case AUTH_MISSING:
        audit(c, "unauthorized", "no bearer token in the Authorization header");
        return respond_error(c, MHD_HTTP_UNAUTHORIZED,
                             "this API needs an \"Authorization: Bearer <token>\" header with a token "
                             "from the listener's tokens setting",
                             MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"nomad-medic\"");
    case AUTH_WRONG:
        audit(c, "forbidden", "the bearer token matches no configured token");
        return respond_error(c, MHD_HTTP_FORBIDDEN,
                             "the bearer token matches none of the listener's tokens; check the token", NULL,
                             NULL);
    case AUTH_NO_TOKENS:
    case AUTH_OK:
        break;
    }
    audit(c, "forbidden", "the listener has no tokens configured");
    return respond_error(c, MHD_HTTP_FORBIDDEN,
                         "the approval API is disabled because the listener has no tokens; add tokens to the "
                         "listener settings to use it",
                         NULL, NULL);
}

/* ---- probes and metrics ---- */

static void read_status(struct http_api *api, struct http_api_status *out, char *scope, size_t scopesz)
{
    pthread_mutex_lock(&api->status_lock);
    *out = api->status;
    snprintf(scope, scopesz, "%s", api->scope);
    pthread_mutex_unlock(&api->status_lock);
    out->scope = scope;
}

static enum MHD_Result handle_healthz(struct call *c)
{
    struct http_api_status st;
    char scope[16], body[320];
    long long age;

    read_status(c->api, &st, scope, sizeof(scope));
    if (st.last_pass_finished_at <= 0)
        return respond_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                            "unhealthy: no pass finished yet since nomad-medic started; the first pass may "
                            "still be running, or it failed before finishing (see the log)\n");
    /* Between passes `run` watches a quiet cluster with blocking queries, and a completed one shows it is alive. */
    age = (long long)time(NULL) -
          (st.last_watch_at > st.last_pass_finished_at ? st.last_watch_at : st.last_pass_finished_at);
    if (c->api->healthy_within_s > 0 && age > c->api->healthy_within_s) {
        snprintf(body, sizeof(body),
                 "unhealthy: the last %s pass or watch of the cluster finished %lld s ago, more than "
                 "healthy_within (%ld s); check the log for a pass that is stuck or failing\n",
                 scope[0] != '\0' ? scope : "reconcile", age, c->api->healthy_within_s);
        return respond_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, body);
    }
    return respond_text(c, MHD_HTTP_OK, "ok");
}

static enum MHD_Result handle_readyz(struct call *c)
{
    struct http_api_status st;
    char scope[16];

    read_status(c->api, &st, scope, sizeof(scope));
    if (!st.holds_lock)
        return respond_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                            "not ready: another nomad-medic instance holds the leadership lock, so this one "
                            "is on standby\n");
    if (st.last_pass_finished_at <= 0)
        return respond_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready: no pass finished yet\n");
    if (!st.last_observation_complete)
        return respond_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                            "not ready: the last observation was incomplete because a read failed; "
                            "the log and the pass's failed reads say which\n");
    return respond_text(c, MHD_HTTP_OK, "ok");
}

static enum MHD_Result handle_metrics(struct call *c)
{
    enum MHD_Result ret;
    char *text = NULL;
    size_t len = 0;

    if (c->api->metrics == NULL)
        return respond_text(c, MHD_HTTP_NOT_FOUND, "metrics are not enabled in this process\n");
    if (metrics_render(c->api->metrics, &text, &len) != METRICS_OK)
        return respond_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory while rendering metrics\n");
    ret = respond(c, MHD_HTTP_OK, METRICS_CONTENT_TYPE, text, len, NULL, NULL);
    free(text);
    return ret;
}

/* ---- approval API ---- */

/* Parse a positive decimal action id of at most 18 digits. Returns 0, or -1. */
static int parse_id(const char *text, size_t len, long long *id)
{
    long long value = 0;

    if (len == 0 || len > 18)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -1;
        value = value * 10 + (text[i] - '0');
    }
    if (value <= 0)
        return -1;
    *id = value;
    return 0;
}

/* Map a journal failure to a response: 404, 409 or 500. */
static enum MHD_Result respond_journal_error(struct call *c, int rc, const char *err)
{
    if (rc == JOURNAL_NOT_FOUND) {
        audit(c, "not_found", err);
        return respond_error(c, MHD_HTTP_NOT_FOUND, err, NULL, NULL);
    }
    if (rc == JOURNAL_CONFLICT) {
        audit(c, "conflict", err);
        return respond_error(c, MHD_HTTP_CONFLICT, err, NULL, NULL);
    }
    log_error(COMPONENT, "%s %s failed remote=%s: %s", c->method, c->path, c->remote, err);
    return respond_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, err, NULL, NULL);
}

/* Which states GET /v1/actions lists, from ?state= and ?all=. Returns 0, or -1 with message filled. */
static int list_mask(struct call *c, unsigned *mask, char *message, size_t messagesz)
{
    const char *state = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "state");
    const char *all = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "all");
    enum journal_state parsed;
    int all_states = 0;

    if (all != NULL) {
        if (strcmp(all, "true") == 0) {
            all_states = 1;
        } else if (strcmp(all, "false") != 0) {
            snprintf(message, messagesz, "invalid value of all; use all=true or all=false");
            return -1;
        }
    }
    if (all_states && state != NULL) {
        snprintf(message, messagesz, "all=true and state= cannot be combined; use one of them");
        return -1;
    }
    if (all_states) {
        *mask = (1u << JS_STATE_COUNT) - 1;
        return 0;
    }
    if (state == NULL) {
        *mask = 1u << JS_PENDING_APPROVAL;
        return 0;
    }
    if (journal_parse_state(state, &parsed) != JOURNAL_OK) {
        /* The value is not echoed: a client may have pasted a secret there by mistake. */
        size_t used = (size_t)snprintf(message, messagesz, "invalid value of state; use one of");

        for (int s = 0; s < JS_STATE_COUNT && used < messagesz; s++)
            used += (size_t)snprintf(message + used, messagesz - used, "%s %s", s > 0 ? "," : "",
                                     journal_state_name((enum journal_state)s));
        return -1;
    }
    *mask = 1u << parsed;
    return 0;
}

static enum MHD_Result handle_list(struct call *c)
{
    struct journal_action *rows = NULL;
    size_t n = 0;
    unsigned mask;
    char message[256], err[512];
    cJSON *json;
    int rc;

    if (list_mask(c, &mask, message, sizeof(message)) != 0) {
        audit(c, "bad_request", message);
        return respond_error(c, MHD_HTTP_BAD_REQUEST, message, NULL, NULL);
    }
    pthread_mutex_lock(&c->api->journal_lock);
    rc = journal_action_list(c->api->journal, mask, 0, &rows, &n, err, sizeof(err));
    pthread_mutex_unlock(&c->api->journal_lock);
    if (rc != JOURNAL_OK)
        return respond_journal_error(c, rc, err);
    json = report_rows_to_json(rows, n);
    journal_action_list_free(rows, n);
    return respond_json(c, MHD_HTTP_OK, json);
}

/* Read row id with its steps as JSON. Called with journal_lock held. */
static int row_detail(struct http_api *api, long long id, cJSON **out, char *err, size_t errsz)
{
    struct journal_action row;
    struct journal_step *steps = NULL;
    size_t n_steps = 0;
    int rc;

    *out = NULL;
    rc = journal_action_get(api->journal, id, &row, err, errsz);
    if (rc == JOURNAL_NOT_FOUND)
        set_err(err, errsz, "action %lld not found; GET /v1/actions?all=true lists the actions", id);
    if (rc != JOURNAL_OK)
        return rc;
    rc = journal_steps_list(api->journal, id, &steps, &n_steps, err, errsz);
    if (rc == JOURNAL_OK) {
        *out = report_row_detail_to_json(&row, steps, n_steps);
        journal_steps_free(steps, n_steps);
    }
    journal_action_free(&row);
    return rc;
}

static enum MHD_Result handle_show(struct call *c, long long id)
{
    cJSON *json = NULL;
    char err[512];
    int rc;

    pthread_mutex_lock(&c->api->journal_lock);
    rc = row_detail(c->api, id, &json, err, sizeof(err));
    pthread_mutex_unlock(&c->api->journal_lock);
    if (rc != JOURNAL_OK)
        return respond_journal_error(c, rc, err);
    return respond_json(c, MHD_HTTP_OK, json);
}

static enum MHD_Result handle_decide(struct call *c, long long id, int approve)
{
    const char *verb = approve ? "approved" : "rejected";
    char who[160], err[512], detail[256];
    cJSON *json = NULL;
    int read_rc = JOURNAL_OK;
    int rc;

    snprintf(who, sizeof(who), "api:%s", c->token_name);
    pthread_mutex_lock(&c->api->journal_lock);
    rc = journal_action_decide(c->api->journal, id, approve, who, (long long)time(NULL), err, sizeof(err));
    if (rc == JOURNAL_NOT_FOUND)
        set_err(err, sizeof(err), "action %lld not found; GET /v1/actions lists the pending actions", id);
    if (rc == JOURNAL_OK)
        read_rc = row_detail(c->api, id, &json, err, sizeof(err));
    pthread_mutex_unlock(&c->api->journal_lock);
    if (rc != JOURNAL_OK)
        return respond_journal_error(c, rc, err);

    /* The decision is committed, so it is audited even if the row cannot be read back. */
    snprintf(detail, sizeof(detail), "action %lld %s", id, verb);
    audit(c, verb, detail);
    log_info(COMPONENT, "action %lld %s by %s remote=%s", id, verb, who, c->remote);
    if (read_rc != JOURNAL_OK)
        return respond_journal_error(c, read_rc, err);
    return respond_json(c, MHD_HTTP_OK, json);
}

/*
 * Route a /v1/ request that passed authentication:
 *   /v1/actions, /v1/actions/<id>, /v1/actions/<id>/approve, /v1/actions/<id>/reject
 */
static enum MHD_Result route_v1(struct call *c)
{
    static const char prefix[] = "/v1/actions";
    int is_get = strcmp(c->method, "GET") == 0 || strcmp(c->method, "HEAD") == 0;
    const char *rest, *slash;
    long long id;

    if (strncmp(c->path, prefix, sizeof(prefix) - 1) != 0)
        goto not_found;
    rest = c->path + sizeof(prefix) - 1;
    if (*rest == '\0') {
        if (!is_get)
            goto get_only;
        return handle_list(c);
    }
    if (*rest != '/')
        goto not_found;
    rest++;
    slash = strchr(rest, '/');
    if (parse_id(rest, slash != NULL ? (size_t)(slash - rest) : strlen(rest), &id) != 0)
        goto not_found;
    if (slash == NULL) {
        if (!is_get)
            goto get_only;
        return handle_show(c, id);
    }
    if (strcmp(slash, "/approve") != 0 && strcmp(slash, "/reject") != 0)
        goto not_found;
    if (strcmp(c->method, "POST") != 0) {
        audit(c, "method_not_allowed", "decisions need POST");
        return respond_method_not_allowed(c, ALLOW_POST, 1);
    }
    return handle_decide(c, id, strcmp(slash, "/approve") == 0);

get_only:
    audit(c, "method_not_allowed", "this path is read-only");
    return respond_method_not_allowed(c, ALLOW_GET, 1);
not_found:
    audit(c, "not_found", "no such API path");
    return respond_error(c, MHD_HTTP_NOT_FOUND,
                         "no such API path; the API serves /v1/actions and /v1/actions/<id>[/approve|/reject]",
                         NULL, NULL);
}

/* Route a complete request. */
static enum MHD_Result dispatch(struct call *c)
{
    static const struct {
        const char *path;
        enum MHD_Result (*handler)(struct call *c);
    } probes[] = {
        {"/healthz", handle_healthz},
        {"/readyz", handle_readyz},
        {"/metrics", handle_metrics},
    };
    int is_get = strcmp(c->method, "GET") == 0 || strcmp(c->method, "HEAD") == 0;
    enum auth_result auth;

    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
        if (strcmp(c->path, probes[i].path) != 0)
            continue;
        if (!is_get)
            return respond_method_not_allowed(c, ALLOW_GET, 0);
        return probes[i].handler(c);
    }
    if (strncmp(c->path, "/v1/", 4) != 0 && strcmp(c->path, "/v1") != 0)
        return respond_text(c, MHD_HTTP_NOT_FOUND,
                            "not found; this listener serves /healthz, /readyz, /metrics and /v1/actions\n");
    auth = authenticate(c);
    if (auth != AUTH_OK)
        return refuse_auth(c, auth);
    return route_v1(c);
}

/* ---- libmicrohttpd callbacks ---- */

static void client_address(struct MHD_Connection *conn, char *out, size_t outsz)
{
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = info != NULL ? info->client_addr : NULL;

    out[0] = '\0';
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out, (socklen_t)outsz);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  (socklen_t)outsz);
}

/* The request's Content-Length, or -1 when absent or not a number. */
static long long content_length(struct MHD_Connection *conn)
{
    const char *value = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    char *end;
    unsigned long long n;

    if (value == NULL || *value < '0' || *value > '9')
        return -1;
    errno = 0;
    n = strtoull(value, &end, 10);
    if (errno != 0 || *end != '\0' || n > (unsigned long long)INT64_MAX)
        return INT64_MAX;
    return (long long)n;
}

static enum MHD_Result refuse_too_large(struct call *c)
{
    int api = strncmp(c->path, "/v1/", 4) == 0;
    char message[128];

    snprintf(message, sizeof(message), "the request body is larger than %d bytes; this listener takes no body%s",
             HTTP_API_MAX_BODY, api ? "" : "\n");
    if (!api)
        return respond_text(c, MHD_HTTP_CONTENT_TOO_LARGE, message);
    /* The token is checked only to name it in the audit row. */
    authenticate(c);
    audit(c, "too_large", message);
    return respond_error(c, MHD_HTTP_CONTENT_TOO_LARGE, message, NULL, NULL);
}

/* 1 when text contains a control character (a decoded %0A, for example), which must not reach a log line. */
static int has_control_char(const char *text)
{
    for (; *text != '\0'; text++) {
        if ((unsigned char)*text < 0x20 || *text == 0x7f)
            return 1;
    }
    return 0;
}

static enum MHD_Result handle_request(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version, const char *upload_data,
                                      size_t *upload_data_size, void **req_cls)
{
    struct request_state *rs = *req_cls;
    struct call c = {.api = cls, .conn = conn, .method = method, .path = url};

    (void)version;
    (void)upload_data;
    if (rs == NULL) {
        rs = calloc(1, sizeof(*rs));
        if (rs == NULL)
            return MHD_NO;
        *req_cls = rs;
        if (has_control_char(url) || has_control_char(method)) {
            c.path = "(path with control characters)";
            c.method = "(invalid)";
            client_address(conn, c.remote, sizeof(c.remote));
            return respond_text(&c, MHD_HTTP_BAD_REQUEST, "the request line contains control characters\n");
        }
        if (content_length(conn) > HTTP_API_MAX_BODY) {
            client_address(conn, c.remote, sizeof(c.remote));
            return refuse_too_large(&c);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        rs->body_bytes += *upload_data_size;
        *upload_data_size = 0;
        if (rs->body_bytes > HTTP_API_MAX_BODY)
            rs->too_large = 1;
        return rs->body_bytes > BODY_DRAIN_MAX ? MHD_NO : MHD_YES;
    }

    client_address(conn, c.remote, sizeof(c.remote));
    if (rs->too_large)
        return refuse_too_large(&c);
    return dispatch(&c);
}

static void request_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                              enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    free(*req_cls);
    *req_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    size_t len;

    (void)cls;
    vsnprintf(line, sizeof(line), fmt, ap);
    len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    log_warn(COMPONENT, "libmicrohttpd: %s", line);
}

/* ---- start and stop ---- */

/*
 * Split "host:port" or "[v6]:port" and resolve it to one socket address.
 * Returns 0, or -1 with err filled.
 */
static int resolve_address(const char *address, struct sockaddr_storage *out, socklen_t *outlen, char *err,
                           size_t errsz)
{
    struct addrinfo hints, *res = NULL;
    char host[256];
    const char *port, *host_start = address;
    size_t host_len;
    int rc;

    if (address == NULL || address[0] == '\0') {
        set_err(err, errsz, "listener address is empty; set it to host:port, for example 127.0.0.1:8646");
        return -1;
    }
    if (address[0] == '[') {
        const char *close = strchr(address, ']');

        if (close == NULL || close[1] != ':') {
            set_err(err, errsz, "listener address \"%s\" is invalid; write an IPv6 address as [::1]:8646",
                    address);
            return -1;
        }
        host_start = address + 1;
        host_len = (size_t)(close - host_start);
        port = close + 2;
    } else {
        const char *colon = strrchr(address, ':');

        if (colon == NULL || strchr(address, ':') != colon) {
            set_err(err, errsz, "listener address \"%s\" is invalid; use host:port, for example "
                    "127.0.0.1:8646, or [::1]:8646 for IPv6", address);
            return -1;
        }
        host_len = (size_t)(colon - address);
        port = colon + 1;
    }
    if (host_len == 0 || host_len >= sizeof(host) || port[0] == '\0' || strspn(port, "0123456789") != strlen(port) ||
        strlen(port) > 5 || atoi(port) > 65535) {
        set_err(err, errsz, "listener address \"%s\" is invalid; it needs a host and a port from 0 to 65535, "
                "for example 127.0.0.1:8646", address);
        return -1;
    }
    memcpy(host, host_start, host_len);
    host[host_len] = '\0';

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        set_err(err, errsz, "listener address \"%s\": cannot resolve \"%s\": %s; use an IP address", address,
                host, rc != 0 ? gai_strerror(rc) : "no address");
        if (res != NULL)
            freeaddrinfo(res);
        return -1;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *outlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int is_loopback(const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->ss_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr);
    return 0;
}

/* Create, bind and listen on the socket, so that a failure names the address and errno. Returns the fd or -1. */
static int open_listener(const char *address, const struct sockaddr_storage *sa, socklen_t salen, int *port,
                         char *err, size_t errsz)
{
    struct sockaddr_storage bound;
    socklen_t boundlen = sizeof(bound);
    int one = 1;
    int fd;

    fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_err(err, errsz, "listener %s: cannot create a socket: %s", address, strerror(errno));
        return -1;
    }
    /* SO_REUSEADDR lets a restarted process bind while old connections sit in TIME_WAIT. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (sa->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)sa, salen) != 0) {
        set_err(err, errsz, "listener %s: cannot bind: %s; choose a free port or stop the process using it",
                address, strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, CONNECTION_LIMIT) != 0 || getsockname(fd, (struct sockaddr *)&bound, &boundlen) != 0) {
        set_err(err, errsz, "listener %s: cannot listen: %s", address, strerror(errno));
        close(fd);
        return -1;
    }
    *port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)(void *)&bound)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)(void *)&bound)->sin_port);
    return fd;
}

static void free_tokens(struct http_api *api)
{
    for (size_t i = 0; i < api->n_tokens; i++) {
        if (api->tokens[i].secret != NULL)
            explicit_bzero(api->tokens[i].secret, api->tokens[i].secret_len);
        free(api->tokens[i].secret);
        free(api->tokens[i].name);
    }
    free(api->tokens);
    api->tokens = NULL;
    api->n_tokens = 0;
}

/* Copy the configured tokens; entries without a name or a secret are skipped. */
static int copy_tokens(struct http_api *api, const struct policy_listener *cfg, char *err, size_t errsz)
{
    if (cfg->n_tokens == 0)
        return 0;
    api->tokens = calloc(cfg->n_tokens, sizeof(*api->tokens));
    if (api->tokens == NULL)
        goto nomem;
    for (size_t i = 0; i < cfg->n_tokens; i++) {
        const struct policy_listener_token *t = &cfg->tokens[i];
        struct api_token *copy = &api->tokens[api->n_tokens];

        if (t->name == NULL || t->name[0] == '\0' || t->token == NULL || t->token[0] == '\0') {
            log_warn(COMPONENT, "listener token %zu has no name or no secret and is ignored", i + 1);
            continue;
        }
        copy->name = strdup(t->name);
        copy->secret = strdup(t->token);
        api->n_tokens++;
        if (copy->name == NULL || copy->secret == NULL)
            goto nomem;
        copy->secret_len = strlen(copy->secret);
    }
    return 0;

nomem:
    set_err(err, errsz, "listener: out of memory copying the tokens");
    return -1;
}

struct http_api *http_api_start(const struct policy_listener *cfg, const char *journal_path,
                                struct metrics *m, char *err, size_t errsz)
{
    struct http_api *api = NULL;
    struct sockaddr_storage sa;
    socklen_t salen = 0;
    sigset_t all, old;
    int locks = 0;
    int fd = -1, daemon_fd;

    if (resolve_address(cfg->address, &sa, &salen, err, errsz) != 0)
        return NULL;
    api = calloc(1, sizeof(*api));
    if (api == NULL) {
        set_err(err, errsz, "listener: out of memory");
        return NULL;
    }
    if (pthread_mutex_init(&api->status_lock, NULL) != 0)
        goto nomem;
    if (pthread_mutex_init(&api->journal_lock, NULL) != 0) {
        pthread_mutex_destroy(&api->status_lock);
        goto nomem;
    }
    locks = 1;
    api->metrics = m;
    api->healthy_within_s = cfg->healthy_within_s;
    if (copy_tokens(api, cfg, err, errsz) != 0)
        goto fail;
    if (journal_open(journal_path, 0, &api->journal, err, errsz) != JOURNAL_OK)
        goto fail;

    fd = open_listener(cfg->address, &sa, salen, &api->port, err, errsz);
    if (fd < 0)
        goto fail;
    /*
     * libmicrohttpd gets a duplicate: it closes the socket it was given on
     * stop, but whether it does so when it fails to start is undocumented
     * (0.9.75 leaves it open when it rejects an option). This function
     * closes only its own descriptor, so a failed start can at worst leak
     * the duplicate, never close a descriptor twice.
     */
    daemon_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (daemon_fd < 0) {
        set_err(err, errsz, "listener %s: cannot duplicate the socket: %s", cfg->address, strerror(errno));
        goto fail;
    }

    /*
     * The worker threads inherit this thread's signal mask. Blocking every
     * signal while they start keeps SIGTERM, SIGINT and SIGHUP on the main
     * loop's threads, where their handlers interrupt its sleep.
     */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    api->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG |
            (sa.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
        0, NULL, NULL, handle_request, api,
        /* The logger goes first, so that libmicrohttpd reports problems with the other options through it. */
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, daemon_fd,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)THREAD_POOL_SIZE,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)CONNECTION_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)CONNECTION_TIMEOUT_S,
        MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
        MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (api->daemon == NULL) {
        set_err(err, errsz, "listener %s: libmicrohttpd could not start; the log has its reason", cfg->address);
        goto fail;
    }
    close(fd);
    fd = -1;

    if (!is_loopback(&sa))
        log_warn(COMPONENT, "listener address=%s is not a loopback address: other hosts can reach the "
                 "approval API, and tokens cross the network in plain HTTP", cfg->address);
    log_info(COMPONENT, "listening address=%s port=%d tokens=%zu", cfg->address, api->port, api->n_tokens);
    return api;

nomem:
    set_err(err, errsz, "listener: out of memory");
fail:
    if (fd >= 0)
        close(fd);
    journal_close(api->journal);
    free_tokens(api);
    if (locks) {
        pthread_mutex_destroy(&api->status_lock);
        pthread_mutex_destroy(&api->journal_lock);
    }
    free(api);
    return NULL;
}

void http_api_update(struct http_api *api, const struct http_api_status *status)
{
    pthread_mutex_lock(&api->status_lock);
    api->status = *status;
    api->status.scope = NULL;
    snprintf(api->scope, sizeof(api->scope), "%s", status->scope != NULL ? status->scope : "");
    pthread_mutex_unlock(&api->status_lock);
}

int http_api_port(const struct http_api *api)
{
    return api->port;
}

void http_api_stop(struct http_api *api)
{
    if (api == NULL)
        return;
    MHD_stop_daemon(api->daemon);
    journal_close(api->journal);
    free_tokens(api);
    pthread_mutex_destroy(&api->status_lock);
    pthread_mutex_destroy(&api->journal_lock);
    free(api);
    log_info(COMPONENT, "listener stopped");
}
