/*
 * Tests for the HTTP listener (controller/http_api.c). Each test starts the
 * listener on 127.0.0.1 with a free port and a real journal file in its own
 * directory under /tmp, and talks to it over loopback with libcurl.
 *
 * Everything the process logs goes to a capture file for the whole run, so
 * the last test can check that no bearer token reached a log line. The
 * capture is copied back to the real stderr at the end.
 */
/* nftw() and memmem(). */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../controller/http_api.h"
#include "../../controller/log.h"
#include "../../controller/report.h"
#include "../../store/journal.h"

/* Bearer tokens of the test listener. They must never appear in the journal or the log. */
#define ALICE_TOKEN "alice-7f3c9e2a1b5d4c6e8f0a9b8c"
#define BOB_TOKEN "bob-2d4f6a8c0e1b3d5f7a9c1e3b"
#define WRONG_TOKEN "alice-7f3c9e2a1b5d4c6e8f0a9b8d"    /* differs from alice's in the last character */

#define HEALTHY_WITHIN_S 60

/* Print the haystack on failure, so the log shows the text that was wrong. */
#define assert_contains(haystack, needle)                                                   \
    do {                                                                                    \
        if (strstr((haystack), (needle)) == NULL)                                           \
            print_error("\"%s\"\n  does not contain \"%s\"\n", (haystack), (needle));       \
        assert_non_null(strstr((haystack), (needle)));                                      \
    } while (0)

/* Check a reply's status, printing its body when it differs. */
#define assert_status(reply, expected)                                                      \
    do {                                                                                    \
        if ((reply)->status != (expected))                                                  \
            print_error("status %ld, body: %s\n", (reply)->status, (reply)->body);          \
        assert_int_equal((reply)->status, (expected));                                      \
    } while (0)

struct fixture {
    char dir[64];
    char path[128];
    struct journal *j;          /* the test's own handle, as the main loop would have one */
    struct metrics *m;
    struct http_api *api;
    long long pending;          /* pending_approval, expires in an hour */
    long long pending2;
    long long expired;          /* pending_approval whose expiry has passed */
    long long rejected;
};

struct reply {
    long status;
    char body[65536];
    size_t len;
    char headers[4096];
};

/* The real stderr while the log goes to the capture file. */
static int real_stderr = -1;
static char capture_path[64];

/* ---- HTTP client ---- */

struct upload {
    size_t left;
};

static size_t collect_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct reply *r = userdata;
    size_t n = size * nmemb;
    size_t room = sizeof(r->body) - 1 - r->len;
    size_t take = n < room ? n : room;

    memcpy(r->body + r->len, data, take);
    r->len += take;
    r->body[r->len] = '\0';
    return n;
}

static size_t collect_header(char *data, size_t size, size_t nitems, void *userdata)
{
    struct reply *r = userdata;
    size_t n = size * nitems;
    size_t used = strlen(r->headers);

    if (used + n < sizeof(r->headers)) {
        memcpy(r->headers + used, data, n);
        r->headers[used + n] = '\0';
    }
    return n;
}

static size_t send_chunks(char *buffer, size_t size, size_t nitems, void *userdata)
{
    struct upload *u = userdata;
    size_t n = size * nitems;

    if (n > u->left)
        n = u->left;
    memset(buffer, 'x', n);
    u->left -= n;
    return n;
}

/*
 * Send one request. auth is the whole Authorization header value, or NULL.
 * body_len bytes of 'x' are sent as the body (with Content-Length), or as
 * a chunked body when chunked is set.
 */
static void http_full(const struct fixture *f, const char *method, const char *path, const char *auth,
                      size_t body_len, int chunked, struct reply *r)
{
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = NULL;
    struct upload up = {.left = body_len};
    char url[256], header[256];
    char *body = NULL;
    CURLcode code;

    memset(r, 0, sizeof(*r));
    assert_non_null(curl);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", http_api_port(f->api), path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, collect_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, r);
    headers = curl_slist_append(headers, "Expect:");
    if (auth != NULL) {
        snprintf(header, sizeof(header), "Authorization: %s", auth);
        headers = curl_slist_append(headers, header);
    }
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (chunked) {
        headers = curl_slist_append(headers, "Transfer-Encoding: chunked");
        curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(curl, CURLOPT_READFUNCTION, send_chunks);
        curl_easy_setopt(curl, CURLOPT_READDATA, &up);
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "POST") == 0) {
        body = malloc(body_len + 1);
        assert_non_null(body);
        memset(body, 'x', body_len);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    } else {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    code = curl_easy_perform(curl);
    if (code != CURLE_OK)
        print_error("%s %s: %s\n", method, path, curl_easy_strerror(code));
    assert_int_equal(code, CURLE_OK);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    free(body);
}

static void http(const struct fixture *f, const char *method, const char *path, const char *auth,
                 struct reply *r)
{
    http_full(f, method, path, auth, 0, 0, r);
}

/* The value of response header name (case-insensitive), copied into out; "" when absent. */
static const char *header_value(const struct reply *r, const char *name, char *out, size_t outsz)
{
    size_t n = strlen(name);
    const char *line = r->headers;

    out[0] = '\0';
    while (line != NULL && *line != '\0') {
        if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            size_t len;

            while (*v == ' ')
                v++;
            len = strcspn(v, "\r\n");
            snprintf(out, outsz, "%.*s", (int)len, v);
            return out;
        }
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return out;
}

/* ---- fixture ---- */

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path);
}

static long long insert_row(struct journal *j, const char *key, long long created, long long expires)
{
    struct journal_action a;
    char err[512] = "";
    long long id = 0;

    memset(&a, 0, sizeof(a));
    a.idem_key = (char *)key;
    a.kind = "service_delete";
    a.target = "_nomad-task-5f1c0b5e-8f4e-4a57-b0c4-3a6e8d7c9b21-web-http";
    a.rule = "orphan_services";
    a.reason = "Registration outlives its allocation.";
    a.evidence = "{\"alloc\":{\"id\":\"5f1c0b5e\",\"client_status\":\"complete\"}}";
    a.basis = "alloc=5f1c0b5e status=complete";
    a.namespace_name = "default";
    a.service = "web";
    a.alloc_id = "5f1c0b5e";
    a.mode = "approve";
    a.state = JS_PENDING_APPROVAL;
    a.expires_at = expires;
    if (journal_action_insert(j, &a, created, &id, err, sizeof(err)) != JOURNAL_OK)
        fail_msg("insert %s: %s", key, err);
    return id;
}

static struct policy_listener_token test_tokens[] = {
    {.name = "alice", .token = ALICE_TOKEN},
    {.name = "bob", .token = BOB_TOKEN},
};

static struct policy_listener listener_config(size_t n_tokens)
{
    struct policy_listener cfg = {
        .enabled = 1,
        .address = "127.0.0.1:0",
        .tokens = n_tokens > 0 ? test_tokens : NULL,
        .n_tokens = n_tokens,
        .healthy_within_s = HEALTHY_WITHIN_S,
    };

    return cfg;
}

/* Create the journal with its rows; start the listener unless tokens is negative. */
static int setup_with(void **state, int tokens)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct policy_listener cfg;
    long long now = (long long)time(NULL);
    char err[512] = "";

    if (f == NULL)
        return -1;
    *state = f;
    snprintf(f->dir, sizeof(f->dir), "/tmp/nm-http-api-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/journal.db", f->dir);
    if (journal_open(f->path, 0, &f->j, err, sizeof(err)) != JOURNAL_OK) {
        print_error("journal_open: %s\n", err);
        return -1;
    }
    f->pending = insert_row(f->j, "service_delete:a", now, now + 3600);
    f->pending2 = insert_row(f->j, "service_delete:b", now, now + 3600);
    f->expired = insert_row(f->j, "service_delete:c", now - 600, now - 10);
    f->rejected = insert_row(f->j, "service_delete:d", now, now + 3600);
    if (journal_action_decide(f->j, f->rejected, 0, "cli:carol", now, err, sizeof(err)) != JOURNAL_OK ||
        journal_step_add(f->j, f->pending, "precheck", "ok", "allocation still complete", now, err,
                         sizeof(err)) != JOURNAL_OK) {
        print_error("journal setup: %s\n", err);
        return -1;
    }
    f->m = metrics_new();
    if (tokens < 0)
        return 0;
    cfg = listener_config((size_t)tokens);
    f->api = http_api_start(&cfg, f->path, f->m, err, sizeof(err));
    if (f->api == NULL) {
        print_error("http_api_start: %s\n", err);
        return -1;
    }
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, 2);
}

static int setup_no_tokens(void **state)
{
    return setup_with(state, 0);
}

static int setup_stopped(void **state)
{
    return setup_with(state, -1);
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    if (f == NULL)
        return 0;
    http_api_stop(f->api);
    journal_close(f->j);
    metrics_free(f->m);
    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Audit rows, newest first; the caller frees them. */
static struct journal_api_audit *audit_rows(struct fixture *f, size_t *n)
{
    struct journal_api_audit *rows = NULL;
    char err[512] = "";

    if (journal_api_audit_list(f->j, 0, &rows, n, err, sizeof(err)) != JOURNAL_OK)
        fail_msg("audit list: %s", err);
    return rows;
}

static void set_status(struct fixture *f, long long finished_at, int complete, int holds_lock)
{
    struct http_api_status st = {
        .last_pass_finished_at = finished_at,
        .last_observation_complete = complete,
        .last_complete_observation_at = complete ? finished_at : 0,
        .holds_lock = holds_lock,
        .scope = "cluster",
    };

    http_api_update(f->api, &st);
}

static enum journal_state row_state(struct fixture *f, long long id)
{
    struct journal_action a;
    enum journal_state s;
    char err[512] = "";

    if (journal_action_get(f->j, id, &a, err, sizeof(err)) != JOURNAL_OK)
        fail_msg("get %lld: %s", id, err);
    s = a.state;
    journal_action_free(&a);
    return s;
}

/* ---- probes ---- */

static void test_healthz_transitions(void **state)
{
    struct fixture *f = *state;
    long long now = (long long)time(NULL);
    struct reply r;
    char allow[64];

    http(f, "GET", "/healthz", NULL, &r);
    assert_status(&r, 503);
    assert_contains(r.body, "no pass finished yet");

    set_status(f, now, 1, 1);
    http(f, "GET", "/healthz", NULL, &r);
    assert_status(&r, 200);
    assert_string_equal(r.body, "ok");

    /* A pass that finished longer ago than healthy_within is a stuck or failing loop. */
    set_status(f, now - HEALTHY_WITHIN_S - 60, 1, 1);
    http(f, "GET", "/healthz", NULL, &r);
    assert_status(&r, 503);
    assert_contains(r.body, "more than healthy_within (60 s)");
    assert_contains(r.body, "cluster pass or watch");

    /* An old pass with a recent completed watch is a quiet cluster being watched, so it is healthy. */
    {
        struct http_api_status st = {
            .last_pass_finished_at = now - HEALTHY_WITHIN_S - 60,
            .last_watch_at = now - 5,
            .last_observation_complete = 1,
            .holds_lock = 1,
            .scope = "cluster",
        };

        http_api_update(f->api, &st);
        http(f, "GET", "/healthz", NULL, &r);
        assert_status(&r, 200);
        st.last_watch_at = now - HEALTHY_WITHIN_S - 10;
        http_api_update(f->api, &st);
        http(f, "GET", "/healthz", NULL, &r);
        assert_status(&r, 503);
    }

    /* Health does not depend on the lock or on complete reads. */
    set_status(f, now, 0, 0);
    http(f, "GET", "/healthz", NULL, &r);
    assert_status(&r, 200);

    http(f, "HEAD", "/healthz", NULL, &r);
    assert_status(&r, 200);
    assert_int_equal(r.len, 0);

    http(f, "POST", "/healthz", NULL, &r);
    assert_status(&r, 405);
    assert_string_equal(header_value(&r, "Allow", allow, sizeof(allow)), "GET, HEAD");
}

static void test_readyz_transitions(void **state)
{
    struct fixture *f = *state;
    long long now = (long long)time(NULL);
    struct reply r;

    set_status(f, 0, 0, 1);
    http(f, "GET", "/readyz", NULL, &r);
    assert_status(&r, 503);
    assert_contains(r.body, "no pass finished yet");

    set_status(f, now, 1, 0);
    http(f, "GET", "/readyz", NULL, &r);
    assert_status(&r, 503);
    assert_contains(r.body, "another nomad-medic instance holds the leadership lock");

    set_status(f, now, 0, 1);
    http(f, "GET", "/readyz", NULL, &r);
    assert_status(&r, 503);
    assert_contains(r.body, "incomplete");

    set_status(f, now, 1, 1);
    http(f, "GET", "/readyz", NULL, &r);
    assert_status(&r, 200);
    assert_string_equal(r.body, "ok");
}

static void test_metrics_endpoint(void **state)
{
    struct fixture *f = *state;
    const char *labels[] = {"scope", "cluster", "result", "complete", NULL};
    char type[128];
    struct reply r;

    assert_int_equal(metrics_counter_add(f->m, "nomad_medic_passes_total", "Passes.", labels, 2), METRICS_OK);
    assert_int_equal(metrics_gauge_set(f->m, "nomad_medic_leader", "Leader.", NULL, 1), METRICS_OK);
    http(f, "GET", "/metrics", NULL, &r);
    assert_status(&r, 200);
    assert_string_equal(header_value(&r, "Content-Type", type, sizeof(type)),
                        "text/plain; version=0.0.4; charset=utf-8");
    assert_contains(r.body, "# TYPE nomad_medic_passes_total counter\n");
    assert_contains(r.body, "nomad_medic_passes_total{result=\"complete\",scope=\"cluster\"} 2\n");
    assert_contains(r.body, "nomad_medic_leader 1\n");

    /* Updates after start show up on the next scrape. */
    assert_int_equal(metrics_gauge_set(f->m, "nomad_medic_leader", "Leader.", NULL, 0), METRICS_OK);
    http(f, "GET", "/metrics", NULL, &r);
    assert_contains(r.body, "nomad_medic_leader 0\n");
}

static void test_metrics_disabled(void **state)
{
    struct fixture *f = *state;
    struct policy_listener cfg = listener_config(2);
    char err[512] = "";
    struct reply r;

    f->api = http_api_start(&cfg, f->path, NULL, err, sizeof(err));
    assert_non_null(f->api);
    http(f, "GET", "/metrics", NULL, &r);
    assert_status(&r, 404);
    assert_contains(r.body, "not enabled");
}

static void test_unknown_paths(void **state)
{
    struct fixture *f = *state;
    struct reply r;

    http(f, "GET", "/", NULL, &r);
    assert_status(&r, 404);
    http(f, "GET", "/healthz/", NULL, &r);
    assert_status(&r, 404);
    http(f, "GET", "/v1/nope", "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 404);
    assert_contains(r.body, "\"error\"");
    http(f, "GET", "/v1/actions/abc", "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 404);
    http(f, "GET", "/v1/actions/1/extra", "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 404);

    /* A decoded line feed in the path would forge a log line, so the request is rejected. */
    http(f, "GET", "/healthz%0A2026-01-01T00:00:00Z%20ERROR%20forged", NULL, &r);
    assert_status(&r, 400);
    fflush(stderr);
}

/* ---- authentication ---- */

static void test_missing_token_is_401(void **state)
{
    struct fixture *f = *state;
    static const char *const not_bearer[] = {NULL, "Basic YWxpY2U6eA==", "Bearer", "Bearer    ", ALICE_TOKEN};
    struct journal_api_audit *rows;
    char value[128];
    struct reply r;
    size_t n = 0;

    for (size_t i = 0; i < sizeof(not_bearer) / sizeof(not_bearer[0]); i++) {
        http(f, "GET", "/v1/actions", not_bearer[i], &r);
        assert_status(&r, 401);
        assert_contains(header_value(&r, "WWW-Authenticate", value, sizeof(value)), "Bearer");
        assert_contains(r.body, "Authorization: Bearer");
    }
    http(f, "POST", "/v1/actions/1/approve", NULL, &r);
    assert_status(&r, 401);
    assert_int_equal(row_state(f, f->pending), JS_PENDING_APPROVAL);

    rows = audit_rows(f, &n);
    assert_int_equal(n, 6);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(rows[i].outcome, "unauthorized");
        assert_null(rows[i].token_name);
        assert_string_equal(rows[i].remote_addr, "127.0.0.1");
    }
    assert_string_equal(rows[0].method, "POST");
    assert_string_equal(rows[0].path, "/v1/actions/1/approve");
    journal_api_audit_list_free(rows, n);
}

static void test_wrong_token_is_403(void **state)
{
    struct fixture *f = *state;
    struct journal_api_audit *rows;
    struct reply r;
    size_t n = 0;

    http(f, "GET", "/v1/actions", "Bearer " WRONG_TOKEN, &r);
    assert_status(&r, 403);
    http(f, "GET", "/v1/actions", "Bearer " ALICE_TOKEN "x", &r);
    assert_status(&r, 403);
    http(f, "POST", "/v1/actions/1/approve", "Bearer alice", &r);
    assert_status(&r, 403);
    assert_int_equal(row_state(f, f->pending), JS_PENDING_APPROVAL);

    rows = audit_rows(f, &n);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(rows[i].outcome, "forbidden");
        assert_null(rows[i].token_name);
    }
    journal_api_audit_list_free(rows, n);
}

static void test_right_token_is_200(void **state)
{
    struct fixture *f = *state;
    struct journal_api_audit *rows;
    struct reply r;
    size_t n = 0;
    cJSON *list;

    http(f, "GET", "/v1/actions", "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 200);
    http(f, "GET", "/v1/actions", "bearer  " BOB_TOKEN "  ", &r);
    assert_status(&r, 200);
    list = cJSON_Parse(r.body);
    assert_non_null(list);
    assert_true(cJSON_IsArray(list));
    /* The default list contains the pending rows, the expired one included until a pass expires it. */
    assert_int_equal(cJSON_GetArraySize(list), 3);
    cJSON_Delete(list);
    /* Reads are not audited. */
    rows = audit_rows(f, &n);
    assert_int_equal(n, 0);
    journal_api_audit_list_free(rows, n);
}

static void test_no_tokens_forbids_every_route(void **state)
{
    struct fixture *f = *state;
    struct journal_api_audit *rows;
    char path[64];
    struct reply r;
    size_t n = 0;

    http(f, "GET", "/v1/actions", NULL, &r);
    assert_status(&r, 403);
    assert_contains(r.body, "no tokens");
    http(f, "GET", "/v1/actions", "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 403);
    snprintf(path, sizeof(path), "/v1/actions/%lld", f->pending);
    http(f, "GET", path, "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 403);
    snprintf(path, sizeof(path), "/v1/actions/%lld/approve", f->pending);
    http(f, "POST", path, "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 403);
    snprintf(path, sizeof(path), "/v1/actions/%lld/reject", f->pending);
    http(f, "POST", path, NULL, &r);
    assert_status(&r, 403);
    assert_int_equal(row_state(f, f->pending), JS_PENDING_APPROVAL);

    /* The probes stay open. */
    http(f, "GET", "/metrics", NULL, &r);
    assert_status(&r, 200);

    rows = audit_rows(f, &n);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(rows[i].outcome, "forbidden");
        assert_null(rows[i].token_name);
    }
    journal_api_audit_list_free(rows, n);
}

/* ---- listing and showing ---- */

static void test_list_filters(void **state)
{
    struct fixture *f = *state;
    struct journal_api_audit *rows;
    struct reply r;
    size_t n = 0;
    cJSON *list;

    http(f, "GET", "/v1/actions?state=rejected", "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 200);
    list = cJSON_Parse(r.body);
    assert_int_equal(cJSON_GetArraySize(list), 1);
    assert_int_equal((long long)cJSON_GetObjectItem(cJSON_GetArrayItem(list, 0), "id")->valuedouble, f->rejected);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(list, 0), "decided_by")->valuestring, "cli:carol");
    cJSON_Delete(list);

    http(f, "GET", "/v1/actions?all=true", "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 200);
    list = cJSON_Parse(r.body);
    assert_int_equal(cJSON_GetArraySize(list), 4);
    /* Newest first, as `actions list` prints them. */
    assert_int_equal((long long)cJSON_GetObjectItem(cJSON_GetArrayItem(list, 0), "id")->valuedouble, f->rejected);
    cJSON_Delete(list);

    http(f, "GET", "/v1/actions?state=succeeded", "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 200);
    assert_string_equal(r.body, "[]\n");

    http(f, "GET", "/v1/actions?state=bogus", "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 400);
    assert_contains(r.body, "invalid value of state");
    assert_null(strstr(r.body, "bogus"));
    assert_contains(r.body, "pending_approval");
    http(f, "GET", "/v1/actions?all=yes", "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 400);
    http(f, "GET", "/v1/actions?all=true&state=rejected", "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 400);

    rows = audit_rows(f, &n);
    assert_int_equal(n, 3);
    assert_string_equal(rows[0].outcome, "bad_request");
    assert_string_equal(rows[0].token_name, "alice");
    journal_api_audit_list_free(rows, n);
}

static void test_show_matches_cli_json(void **state)
{
    struct fixture *f = *state;
    struct journal_action row;
    struct journal_step *steps = NULL;
    size_t n_steps = 0;
    char path[64], err[512] = "";
    cJSON *got, *expected;
    struct reply r;

    snprintf(path, sizeof(path), "/v1/actions/%lld", f->pending);
    http(f, "GET", path, "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 200);
    got = cJSON_Parse(r.body);
    assert_non_null(got);
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(got, "evidence")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(got, "steps")), 1);

    /* The same tree `nomad-medic actions show --json` prints. */
    assert_int_equal(journal_action_get(f->j, f->pending, &row, err, sizeof(err)), JOURNAL_OK);
    assert_int_equal(journal_steps_list(f->j, f->pending, &steps, &n_steps, err, sizeof(err)), JOURNAL_OK);
    expected = report_row_detail_to_json(&row, steps, n_steps);
    assert_true(cJSON_Compare(got, expected, 1));
    cJSON_Delete(expected);
    cJSON_Delete(got);
    journal_steps_free(steps, n_steps);
    journal_action_free(&row);

    http(f, "GET", "/v1/actions/999999", "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 404);
    assert_contains(r.body, "action 999999 not found");
}

/* ---- decisions ---- */

static void test_approve_round_trip(void **state)
{
    struct fixture *f = *state;
    struct journal_api_audit *rows;
    struct journal_action row;
    char path[64], expected_detail[64], err[512] = "";
    struct reply r;
    size_t n = 0;
    cJSON *body;

    snprintf(path, sizeof(path), "/v1/actions/%lld/approve", f->pending);
    http(f, "POST", path, "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 200);
    body = cJSON_Parse(r.body);
    assert_non_null(body);
    assert_string_equal(cJSON_GetObjectItem(body, "state")->valuestring, "approved");
    assert_string_equal(cJSON_GetObjectItem(body, "decided_by")->valuestring, "api:alice");
    assert_non_null(cJSON_GetObjectItem(body, "steps"));
    cJSON_Delete(body);

    /* The main loop's own handle reads the decision. */
    assert_int_equal(journal_action_get(f->j, f->pending, &row, err, sizeof(err)), JOURNAL_OK);
    assert_int_equal(row.state, JS_APPROVED);
    assert_string_equal(row.decided_by, "api:alice");
    assert_true(row.decided_at > 0);
    journal_action_free(&row);
    assert_int_equal(row_state(f, f->pending2), JS_PENDING_APPROVAL);

    rows = audit_rows(f, &n);
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].outcome, "approved");
    assert_string_equal(rows[0].token_name, "alice");
    assert_string_equal(rows[0].method, "POST");
    assert_string_equal(rows[0].path, path);
    assert_string_equal(rows[0].remote_addr, "127.0.0.1");
    snprintf(expected_detail, sizeof(expected_detail), "action %lld approved", f->pending);
    assert_string_equal(rows[0].detail, expected_detail);
    journal_api_audit_list_free(rows, n);

    /* A second decision on the same row is a conflict, with the journal's reason. */
    snprintf(path, sizeof(path), "/v1/actions/%lld/reject", f->pending);
    http(f, "POST", path, "Bearer " BOB_TOKEN, &r);
    assert_status(&r, 409);
    assert_contains(r.body, "is approved, not pending_approval");
    assert_int_equal(row_state(f, f->pending), JS_APPROVED);
    rows = audit_rows(f, &n);
    assert_int_equal(n, 2);
    assert_string_equal(rows[0].outcome, "conflict");
    assert_string_equal(rows[0].token_name, "bob");
    assert_contains(rows[0].detail, "not pending_approval");
    journal_api_audit_list_free(rows, n);
}

static void test_reject_round_trip(void **state)
{
    struct fixture *f = *state;
    struct journal_api_audit *rows;
    struct journal_action row;
    char path[64], err[512] = "";
    struct reply r;
    size_t n = 0;
    cJSON *body;

    snprintf(path, sizeof(path), "/v1/actions/%lld/reject", f->pending2);
    http(f, "POST", path, "Bearer " BOB_TOKEN, &r);
    assert_status(&r, 200);
    body = cJSON_Parse(r.body);
    assert_string_equal(cJSON_GetObjectItem(body, "state")->valuestring, "rejected");
    assert_string_equal(cJSON_GetObjectItem(body, "decided_by")->valuestring, "api:bob");
    cJSON_Delete(body);
    assert_int_equal(journal_action_get(f->j, f->pending2, &row, err, sizeof(err)), JOURNAL_OK);
    assert_int_equal(row.state, JS_REJECTED);
    assert_string_equal(row.decided_by, "api:bob");
    journal_action_free(&row);

    rows = audit_rows(f, &n);
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].outcome, "rejected");
    assert_string_equal(rows[0].token_name, "bob");
    journal_api_audit_list_free(rows, n);
}

static void test_decide_conflicts_and_not_found(void **state)
{
    struct fixture *f = *state;
    struct journal_api_audit *rows;
    char path[64];
    struct reply r;
    size_t n = 0;

    /* Expired: the journal marks the row expired and the API reports when it expired. */
    snprintf(path, sizeof(path), "/v1/actions/%lld/approve", f->expired);
    http(f, "POST", path, "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 409);
    assert_contains(r.body, "expired at");
    assert_int_equal(row_state(f, f->expired), JS_EXPIRED);

    snprintf(path, sizeof(path), "/v1/actions/%lld/approve", f->rejected);
    http(f, "POST", path, "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 409);
    assert_contains(r.body, "is rejected, not pending_approval");

    http(f, "POST", "/v1/actions/424242/approve", "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 404);
    assert_contains(r.body, "action 424242 not found");
    http(f, "POST", "/v1/actions/0/approve", "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 404);

    rows = audit_rows(f, &n);
    assert_int_equal(n, 4);
    assert_string_equal(rows[0].outcome, "not_found");
    assert_string_equal(rows[1].outcome, "not_found");
    assert_string_equal(rows[2].outcome, "conflict");
    assert_string_equal(rows[3].outcome, "conflict");
    assert_contains(rows[3].detail, "expired");
    journal_api_audit_list_free(rows, n);
}

static void test_wrong_methods_are_405(void **state)
{
    struct fixture *f = *state;
    struct journal_api_audit *rows;
    char path[64], allow[64];
    struct reply r;
    size_t n = 0;

    snprintf(path, sizeof(path), "/v1/actions/%lld/approve", f->pending);
    http(f, "GET", path, "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 405);
    assert_string_equal(header_value(&r, "Allow", allow, sizeof(allow)), "POST");
    http(f, "PUT", path, "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 405);
    assert_int_equal(row_state(f, f->pending), JS_PENDING_APPROVAL);

    http(f, "DELETE", "/v1/actions", "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 405);
    assert_string_equal(header_value(&r, "Allow", allow, sizeof(allow)), "GET, HEAD");
    snprintf(path, sizeof(path), "/v1/actions/%lld", f->pending);
    http(f, "POST", path, "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 405);
    http(f, "PUT", "/metrics", NULL, &r);
    assert_status(&r, 405);
    assert_string_equal(header_value(&r, "Allow", allow, sizeof(allow)), "GET, HEAD");

    rows = audit_rows(f, &n);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(rows[i].outcome, "method_not_allowed");
    journal_api_audit_list_free(rows, n);
}

static void test_large_body_is_413(void **state)
{
    struct fixture *f = *state;
    struct journal_api_audit *rows;
    char path[64];
    struct reply r;
    size_t n = 0;

    snprintf(path, sizeof(path), "/v1/actions/%lld/approve", f->pending);
    http_full(f, "POST", path, "Bearer " ALICE_TOKEN, HTTP_API_MAX_BODY + 1, 0, &r);
    assert_status(&r, 413);
    http_full(f, "POST", path, "Bearer " ALICE_TOKEN, HTTP_API_MAX_BODY + 4000, 1, &r);
    assert_status(&r, 413);
    http_full(f, "POST", "/healthz", NULL, 200000, 0, &r);
    assert_status(&r, 413);
    assert_int_equal(row_state(f, f->pending), JS_PENDING_APPROVAL);

    rows = audit_rows(f, &n);
    assert_int_equal(n, 2);
    assert_string_equal(rows[0].outcome, "too_large");
    assert_string_equal(rows[0].token_name, "alice");
    journal_api_audit_list_free(rows, n);

    /* A body at the limit is read and ignored. */
    http_full(f, "POST", path, "Bearer " ALICE_TOKEN, HTTP_API_MAX_BODY, 0, &r);
    assert_status(&r, 200);
    assert_int_equal(row_state(f, f->pending), JS_APPROVED);
}

/* ---- concurrency ---- */

struct client_args {
    struct fixture *f;
    int failures;
};

static void *client_loop(void *arg)
{
    struct client_args *a = arg;
    struct reply *r = malloc(sizeof(*r));

    for (int i = 0; r != NULL && i < 20; i++) {
        http(a->f, "GET", i % 2 ? "/v1/actions?all=true" : "/metrics", "Bearer " ALICE_TOKEN, r);
        a->failures += r->status != 200;
    }
    free(r);
    return NULL;
}

static void test_parallel_requests(void **state)
{
    struct fixture *f = *state;
    struct client_args args[6];
    pthread_t threads[6];
    char path[64];
    struct reply r;

    for (int i = 0; i < 6; i++) {
        args[i].f = f;
        args[i].failures = 0;
        assert_int_equal(pthread_create(&threads[i], NULL, client_loop, &args[i]), 0);
    }
    snprintf(path, sizeof(path), "/v1/actions/%lld/approve", f->pending);
    http(f, "POST", path, "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 200);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        assert_int_equal(args[i].failures, 0);
    }
}

/* ---- start-up ---- */

static void test_start_rejects_bad_settings(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *address;
        const char *message;
    } bad[] = {
        {"", "listener address is empty"},
        {"127.0.0.1", "use host:port"},
        {":8646", "needs a host and a port"},
        {"127.0.0.1:99999", "needs a host and a port"},
        {"127.0.0.1:http", "needs a host and a port"},
        {"[::1", "write an IPv6 address as [::1]:8646"},
    };
    struct policy_listener cfg = listener_config(2);
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    struct http_api *api;
    char err[512], address[64], bad_path[160];
    int fd;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        cfg.address = (char *)bad[i].address;
        api = http_api_start(&cfg, f->path, f->m, err, sizeof(err));
        assert_null(api);
        assert_contains(err, bad[i].message);
    }

    /* A port another socket holds. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(listen(fd, 1), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    snprintf(address, sizeof(address), "127.0.0.1:%d", ntohs(addr.sin_port));
    cfg.address = address;
    api = http_api_start(&cfg, f->path, f->m, err, sizeof(err));
    assert_null(api);
    assert_contains(err, "cannot bind");
    assert_contains(err, address);
    close(fd);

    /* A journal path under a regular file cannot be created. */
    snprintf(bad_path, sizeof(bad_path), "%s/journal.db/sub/journal.db", f->dir);
    cfg.address = "127.0.0.1:0";
    api = http_api_start(&cfg, bad_path, f->m, err, sizeof(err));
    assert_null(api);
    assert_contains(err, bad_path);

    /* A name that resolves to loopback works, as the policy loader accepts "localhost:port". */
    cfg.address = "localhost:0";
    api = http_api_start(&cfg, f->path, f->m, err, sizeof(err));
    if (api == NULL)
        print_error("localhost: %s\n", err);
    assert_non_null(api);
    http_api_stop(api);

    /* IPv6 loopback works. */
    cfg.address = "[::1]:0";
    api = http_api_start(&cfg, f->path, f->m, err, sizeof(err));
    if (api == NULL)
        print_error("[::1]: %s\n", err);
    assert_non_null(api);
    assert_true(http_api_port(api) > 0);
    http_api_stop(api);
}

/* ---- secrets ---- */

static int file_contains(const char *path, const char *needle)
{
    FILE *fp = fopen(path, "rb");
    size_t cap = 1 << 20, len = 0, got;
    char *data;
    int found = 0;

    if (fp == NULL)
        return 0;
    data = malloc(cap);
    assert_non_null(data);
    while ((got = fread(data + len, 1, cap - len, fp)) > 0) {
        len += got;
        if (len == cap) {
            cap *= 2;
            data = realloc(data, cap);
            assert_non_null(data);
        }
    }
    fclose(fp);
    found = memmem(data, len, needle, strlen(needle)) != NULL;
    free(data);
    return found;
}

static void test_tokens_never_stored_or_logged(void **state)
{
    static const char *const tokens[] = {ALICE_TOKEN, BOB_TOKEN, WRONG_TOKEN};
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    struct fixture *f = *state;
    struct journal_api_audit *rows;
    char path[64], file[192];
    struct reply r;
    size_t n = 0;

    /* Every path that receives a token: right, wrong, oversize, decided, conflicting and malformed. */
    snprintf(path, sizeof(path), "/v1/actions/%lld/approve", f->pending);
    http(f, "POST", path, "Bearer " WRONG_TOKEN, &r);
    http(f, "POST", path, "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 200);
    http(f, "POST", path, "Bearer " ALICE_TOKEN, &r);
    assert_status(&r, 409);
    http_full(f, "POST", path, "Bearer " BOB_TOKEN, HTTP_API_MAX_BODY + 1, 0, &r);
    http(f, "GET", "/v1/actions?state=" ALICE_TOKEN, "Bearer " BOB_TOKEN, &r);
    assert_status(&r, 400);
    http(f, "GET", "/v1/nope", "Bearer " BOB_TOKEN, &r);
    http(f, "GET", "/v1/actions", "Basic " ALICE_TOKEN, &r);
    for (size_t t = 0; t < sizeof(tokens) / sizeof(tokens[0]); t++)
        assert_null(strstr(r.body, tokens[t]));

    rows = audit_rows(f, &n);
    assert_true(n >= 6);
    for (size_t i = 0; i < n; i++) {
        for (size_t t = 0; t < sizeof(tokens) / sizeof(tokens[0]); t++) {
            const char *fields[] = {rows[i].remote_addr, rows[i].method, rows[i].path, rows[i].token_name,
                                    rows[i].outcome, rows[i].detail};

            for (size_t k = 0; k < sizeof(fields) / sizeof(fields[0]); k++)
                assert_true(fields[k] == NULL || strstr(fields[k], tokens[t]) == NULL);
        }
    }
    journal_api_audit_list_free(rows, n);

    /* Not in any byte of the journal files, nor in anything logged so far in this run. */
    http_api_stop(f->api);
    f->api = NULL;
    for (size_t t = 0; t < sizeof(tokens) / sizeof(tokens[0]); t++) {
        for (size_t s = 0; s < sizeof(suffixes) / sizeof(suffixes[0]); s++) {
            snprintf(file, sizeof(file), "%s%s", f->path, suffixes[s]);
            assert_false(file_contains(file, tokens[t]));
        }
        fflush(stderr);
        assert_false(file_contains(capture_path, tokens[t]));
    }
    /* The capture did record the requests, so the check above read real log lines. */
    assert_true(file_contains(capture_path, "status=403"));
    assert_false(file_contains(capture_path, "\n2026-01-01T00:00:00Z ERROR forged"));
    assert_true(file_contains(capture_path, "approved by api:alice"));
}

/* ---- group setup: capture the log ---- */

static int capture_log(void **state)
{
    int fd;

    (void)state;
    snprintf(capture_path, sizeof(capture_path), "/tmp/nm-http-api-log-XXXXXX");
    fd = mkstemp(capture_path);
    if (fd < 0)
        return -1;
    fflush(stderr);
    real_stderr = dup(2);
    if (real_stderr < 0 || dup2(fd, 2) < 0)
        return -1;
    close(fd);
    return 0;
}

static int release_log(void **state)
{
    char buf[4096];
    ssize_t got;
    int fd;

    (void)state;
    fflush(stderr);
    dup2(real_stderr, 2);
    close(real_stderr);
    fd = open(capture_path, O_RDONLY);
    while (fd >= 0 && (got = read(fd, buf, sizeof(buf))) > 0) {
        if (write(2, buf, (size_t)got) != got)
            break;
    }
    if (fd >= 0)
        close(fd);
    unlink(capture_path);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_healthz_transitions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readyz_transitions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_disabled, setup_stopped, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_token_is_401, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_token_is_403, setup, teardown),
        cmocka_unit_test_setup_teardown(test_right_token_is_200, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_tokens_forbids_every_route, setup_no_tokens, teardown),
        cmocka_unit_test_setup_teardown(test_list_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_show_matches_cli_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_approve_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decide_conflicts_and_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_methods_are_405, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_body_is_413, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallel_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_rejects_bad_settings, setup_stopped, teardown),
        cmocka_unit_test_setup_teardown(test_tokens_never_stored_or_logged, setup, teardown),
    };

    /* Debug level, so every request is logged and the token check reads every line. */
    log_set_level(LOG_LEVEL_DEBUG);
    cmocka_set_message_output(CM_OUTPUT_STDOUT);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return cmocka_run_group_tests_name("http_api", tests, capture_log, release_log);
}
