/*
 * Tests of the Nomad HTTP API client against the project's test Nomad server
 * (tests/fake_nomad/fake_nomad.py) on 127.0.0.1. The group setup starts one
 * server process. Each test that talks to it first loads a fresh scenario
 * and clears the server's fault rules and request log.
 */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../controller/nomad.h"

#define FAKE_SERVER_TEST_NAME "test_nomad"
#include "fake_server.h"

#define NODE_COUNT 50
#define TOKEN "8f1c2e0a-token-under-test-5d9b"
#define LAST_CONTACT_MS 42

static char temp_dir[] = "/tmp/test_nomad.XXXXXX";
static char node_ids[NODE_COUNT][37];

/* ---- helpers: test server process ---- */

static int count_requests(const char *method, const char *path)
{
    cJSON *log = recorded_requests();
    cJSON *entry;
    int count = 0;

    cJSON_ArrayForEach(entry, log) {
        const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(entry, "method"));
        const char *p = cJSON_GetStringValue(cJSON_GetObjectItem(entry, "path"));

        count += m != NULL && p != NULL && strcmp(m, method) == 0 && strcmp(p, path) == 0;
    }
    cJSON_Delete(log);
    return count;
}

/* A copy of the last recorded request for path; the caller deletes it. */
static cJSON *last_request(const char *path)
{
    cJSON *log = recorded_requests();
    cJSON *entry;
    cJSON *found = NULL;

    cJSON_ArrayForEach(entry, log) {
        const char *p = cJSON_GetStringValue(cJSON_GetObjectItem(entry, "path"));

        if (p != NULL && strcmp(p, path) == 0) {
            cJSON_Delete(found);
            found = cJSON_Duplicate(entry, 1);
        }
    }
    cJSON_Delete(log);
    assert_non_null(found);
    return found;
}

static const char *request_field(cJSON *request, const char *group, const char *name)
{
    return cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(request, group), name));
}

/* ---- helpers: client ---- */

static void test_config(struct nomad_conn_config *cfg)
{
    nomad_conn_config_defaults(cfg);
    free(cfg->address);
    cfg->address = strdup(base_url);
    cfg->token = strdup(TOKEN);
    cfg->retry_base_ms = 1;
    cfg->request_timeout_ms = 10000;
}

static struct nomad_client *new_client(const struct nomad_conn_config *cfg)
{
    char err[512] = "";
    struct nomad_client *client = nomad_client_new(cfg, err, sizeof(err));

    if (client == NULL)
        fprintf(stderr, "nomad_client_new: %s\n", err);
    assert_non_null(client);
    return client;
}

static struct nomad_client *default_client(void)
{
    struct nomad_conn_config cfg;
    struct nomad_client *client;

    test_config(&cfg);
    client = new_client(&cfg);
    nomad_conn_config_free(&cfg);
    return client;
}

static struct nomad_client *client_with_retries(int max_retries)
{
    struct nomad_conn_config cfg;
    struct nomad_client *client;

    test_config(&cfg);
    cfg.max_retries = max_retries;
    client = new_client(&cfg);
    nomad_conn_config_free(&cfg);
    return client;
}

/* Try to create a client for address; returns the error text in err (empty on success). */
static struct nomad_client *try_client(const char *address, char *err, size_t errsz)
{
    struct nomad_conn_config cfg;
    struct nomad_client *client;

    nomad_conn_config_defaults(&cfg);
    free(cfg.address);
    cfg.address = strdup(address);
    err[0] = '\0';
    client = nomad_client_new(&cfg, err, errsz);
    nomad_conn_config_free(&cfg);
    return client;
}

/* Redirect stderr into a file so a test can read the log lines of the client. */
struct stderr_capture {
    int saved_fd;
    char path[128];
};

static void capture_stderr(struct stderr_capture *cap)
{
    int fd;

    snprintf(cap->path, sizeof(cap->path), "%s/stderr.log", temp_dir);
    fflush(stderr);
    cap->saved_fd = dup(STDERR_FILENO);
    fd = open(cap->path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(cap->saved_fd >= 0);
    assert_true(fd >= 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
}

/* Restore stderr and return what was written (caller frees). */
static char *release_stderr(struct stderr_capture *cap)
{
    FILE *file;
    char *text = calloc(1, 65536);
    size_t len;

    fflush(stderr);
    dup2(cap->saved_fd, STDERR_FILENO);
    close(cap->saved_fd);
    assert_non_null(text);
    file = fopen(cap->path, "r");
    assert_non_null(file);
    len = fread(text, 1, 65535, file);
    text[len] = '\0';
    fclose(file);
    return text;
}

/* ---- fixtures ---- */

static void load_scenario(void)
{
    cJSON *scenario = cJSON_CreateObject();
    cJSON *nodes = cJSON_AddArrayToObject(scenario, "nodes");
    char *text;

    for (int i = 0; i < NODE_COUNT; i++) {
        cJSON *node = cJSON_CreateObject();
        char name[32];

        snprintf(name, sizeof(name), "client-%02d", i);
        cJSON_AddStringToObject(node, "ID", node_ids[i]);
        cJSON_AddStringToObject(node, "Name", name);
        cJSON_AddItemToArray(nodes, node);
    }
    cJSON_AddStringToObject(scenario, "acl_token", TOKEN);
    cJSON_AddNumberToObject(scenario, "last_contact_ms", LAST_CONTACT_MS);
    text = cJSON_PrintUnformatted(scenario);
    free(control("PUT", "/_test/scenario", text));
    free(text);
    cJSON_Delete(scenario);
    free(control("DELETE", "/_test/faults", NULL));
    free(control("DELETE", "/_test/requests", NULL));
}

static int group_setup(void **state)
{
    char port_file[160];
    int port;

    (void)state;
    /* Keep every request on loopback even if the environment names a proxy. */
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("https_proxy");
    unsetenv("HTTPS_PROXY");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");

    for (int i = 0; i < NODE_COUNT; i++)
        snprintf(node_ids[i], sizeof(node_ids[i]), "%08x-1111-4222-8333-%012x", 0xa0000000u + (unsigned)i,
                 (unsigned)i + 1);
    if (mkdtemp(temp_dir) == NULL)
        return -1;
    snprintf(port_file, sizeof(port_file), "%s/port", temp_dir);
    port = start_server(port_file);
    if (port < 0) {
        fprintf(stderr, "test_nomad: the test Nomad server did not start\n");
        return -1;
    }
    snprintf(base_url, sizeof(base_url), "http://127.0.0.1:%d", port);
    return 0;
}

static int group_teardown(void **state)
{
    char path[160];

    (void)state;
    stop_server();
    snprintf(path, sizeof(path), "%s/port", temp_dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/stderr.log", temp_dir);
    unlink(path);
    rmdir(temp_dir);
    return 0;
}

static int test_setup(void **state)
{
    (void)state;
    load_scenario();
    return 0;
}

/* ---- tests: pure functions and settings ---- */

static void escape_cases(void **state)
{
    static const struct {
        const char *in;
        const char *out;
    } cases[] = {
        {"", ""},
        {"AZaz09-._~", "AZaz09-._~"},
        {"a b", "a%20b"},
        {"web/api", "web%2Fapi"},
        {"Status == \"ready\"", "Status%20%3D%3D%20%22ready%22"},
        {"&=?#%+", "%26%3D%3F%23%25%2B"},
        {"default.3f2a", "default.3f2a"},
        {"\xc3\xbc", "%C3%BC"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = nomad_escape(cases[i].in);

        assert_non_null(out);
        assert_string_equal(out, cases[i].out);
        free(out);
    }
}

static void result_names_distinct(void **state)
{
    (void)state;
    for (int a = NOMAD_OK; a <= NOMAD_ERR_INTERNAL; a++) {
        assert_true(strlen(nomad_result_name((enum nomad_result)a)) > 0);
        for (int b = a + 1; b <= NOMAD_ERR_INTERNAL; b++)
            assert_string_not_equal(nomad_result_name((enum nomad_result)a),
                                    nomad_result_name((enum nomad_result)b));
    }
}

static void address_forms_accepted(void **state)
{
    static const struct {
        const char *in;
        const char *shown;
    } cases[] = {
        {"http://127.0.0.1:4646", "http://127.0.0.1:4646"},
        {"http://127.0.0.1:4646/", "http://127.0.0.1:4646"},
        {"HTTPS://localhost:4646", "https://localhost:4646"},
        {"http://[::1]:4646", "http://[::1]:4646"},
        {"http://alice:pa%40ss@127.0.0.1:4646", "http://127.0.0.1:4646"},
        {"unix:///run/nomad/api.sock", "unix:///run/nomad/api.sock"},
    };
    char err[512];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct nomad_client *client = try_client(cases[i].in, err, sizeof(err));

        assert_non_null(client);
        assert_string_equal(nomad_client_address(client), cases[i].shown);
        nomad_client_free(client);
    }
}

static void address_forms_rejected(void **state)
{
    static const struct {
        const char *in;
        const char *expected;
    } cases[] = {
        {"ftp://127.0.0.1:4646", "unsupported scheme \"ftp\""},
        {"127.0.0.1:4646", "missing scheme"},
        {"unix://", "missing socket path"},
        {"http://127.0.0.1:4646/nomad", "remove the path"},
        {"http://127.0.0.1:4646/?region=x", "remove the path, query or fragment"},
    };
    char err[512];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct nomad_client *client = try_client(cases[i].in, err, sizeof(err));

        assert_null(client);
        assert_non_null(strstr(err, cases[i].expected));
    }
}

static void rejected_address_hides_password(void **state)
{
    char err[512];
    struct nomad_client *client = try_client("ftp://alice:hunter2@127.0.0.1:4646", err, sizeof(err));

    (void)state;
    assert_null(client);
    assert_non_null(strstr(err, "ftp://***@127.0.0.1:4646"));
    assert_null(strstr(err, "hunter2"));
}

static void invalid_settings_rejected(void **state)
{
    struct nomad_conn_config cfg;
    char err[512];

    (void)state;
    nomad_conn_config_defaults(&cfg);
    cfg.token = strdup("abc-secret-token\n");
    assert_null(nomad_client_new(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "control character"));
    assert_null(strstr(err, "abc-secret-token"));
    nomad_conn_config_free(&cfg);

    nomad_conn_config_defaults(&cfg);
    cfg.ca_cert = strdup("/nonexistent/ca.pem");
    assert_null(nomad_client_new(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/ca.pem"));
    nomad_conn_config_free(&cfg);

    nomad_conn_config_defaults(&cfg);
    cfg.max_response_bytes = 0;
    assert_null(nomad_client_new(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "nomad.max_response_size"));
    nomad_conn_config_free(&cfg);

    nomad_conn_config_defaults(&cfg);
    cfg.tls_server_name = strdup("bad/name");
    free(cfg.address);
    cfg.address = strdup("https://127.0.0.1:4646");
    assert_null(nomad_client_new(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "TLS server name"));
    nomad_conn_config_free(&cfg);
}

static void invalid_request_rejected(void **state)
{
    struct nomad_client *client = default_client();
    struct nomad_response resp;

    (void)state;
    assert_int_equal(nomad_request(client, "PATCH", "/v1/nodes", NULL, &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_INTERNAL);
    assert_non_null(strstr(resp.error, "PATCH"));
    nomad_response_free(&resp);

    assert_int_equal(nomad_get(client, "v1/nodes", &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_INTERNAL);
    assert_int_equal(resp.attempts, 0);
    nomad_response_free(&resp);
    assert_int_equal(count_requests("GET", "/v1/nodes"), 0);
    nomad_client_free(client);
}

/* ---- tests: responses ---- */

static void query_headers_parsed(void **state)
{
    struct nomad_client *client = default_client();
    struct nomad_response resp;
    cJSON *body;

    (void)state;
    /* The server sends Go-canonical names: X-Nomad-Knownleader, X-Nomad-Lastcontact. */
    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), 0);
    assert_int_equal(resp.result, NOMAD_OK);
    assert_int_equal(resp.status, 200);
    assert_true(resp.index > 0);
    assert_int_equal(resp.known_leader, 1);
    assert_int_equal(resp.last_contact_ms, LAST_CONTACT_MS);
    assert_null(resp.next_token);
    assert_int_equal(resp.attempts, 1);
    assert_true(resp.elapsed_s > 0.0);
    assert_string_equal(resp.error, "");
    body = cJSON_Parse(resp.body);
    assert_non_null(body);
    assert_int_equal(cJSON_GetArraySize(body), NODE_COUNT);
    assert_int_equal(strlen(resp.body), resp.body_len);
    cJSON_Delete(body);
    nomad_response_free(&resp);
    nomad_client_free(client);
}

static void header_names_any_case(void **state)
{
    struct nomad_client *client = default_client();
    struct nomad_response resp;

    (void)state;
    set_faults("[{\"path\":\"/v1/nodes\",\"headers\":{\"X-NOMAD-INDEX\":\"18446744073709551615\","
               "\"x-nomad-lastcontact\":\"7\",\"x-nomad-nexttoken\":\"default.abc\"}}]");
    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), 0);
    assert_true(resp.index == UINT64_MAX);
    assert_int_equal(resp.last_contact_ms, 7);
    assert_non_null(resp.next_token);
    assert_string_equal(resp.next_token, "default.abc");
    nomad_response_free(&resp);
    nomad_client_free(client);
}

static void pagination_follows_next_token(void **state)
{
    struct nomad_client *client = default_client();
    char path[256] = "/v1/nodes?per_page=20";
    int pages = 0;
    int total = 0;

    (void)state;
    for (;;) {
        struct nomad_response resp;
        cJSON *body;
        char *escaped;

        assert_int_equal(nomad_get(client, path, &resp), 0);
        body = cJSON_Parse(resp.body);
        assert_non_null(body);
        total += cJSON_GetArraySize(body);
        cJSON_Delete(body);
        pages++;
        if (resp.next_token == NULL) {
            nomad_response_free(&resp);
            break;
        }
        /* Nodes sort by ID, and the next token is the first ID of the next page. */
        assert_string_equal(resp.next_token, node_ids[pages * 20]);
        escaped = nomad_escape(resp.next_token);
        assert_non_null(escaped);
        snprintf(path, sizeof(path), "/v1/nodes?per_page=20&next_token=%s", escaped);
        free(escaped);
        nomad_response_free(&resp);
        assert_true(pages < 10);
    }
    assert_int_equal(pages, 3);
    assert_int_equal(total, NODE_COUNT);
    nomad_client_free(client);
}

static void not_found_error_text(void **state)
{
    struct nomad_client *client = default_client();
    struct nomad_response resp;

    (void)state;
    assert_int_equal(nomad_get(client, "/v1/node/00000000-dead-beef-0000-000000000000?stale=true", &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_STATUS);
    assert_int_equal(resp.status, 404);
    assert_string_equal(resp.error, "GET /v1/node/00000000-dead-beef-0000-000000000000: status 404: node not found");
    assert_non_null(resp.body);
    assert_string_equal(resp.body, "node not found");
    /* 404 is a definite answer. */
    assert_int_equal(resp.attempts, 1);
    nomad_response_free(&resp);
    nomad_client_free(client);
}

static void server_error_text(void **state)
{
    struct nomad_client *client = client_with_retries(0);
    struct nomad_response resp;
    char long_body[600];

    (void)state;
    set_faults("[{\"path\":\"/v1/allocations\",\"status\":500,"
               "\"body\":\"rpc error: boom\\nsecond line\\n\"}]");
    assert_int_equal(nomad_get(client, "/v1/allocations?namespace=*&next_token=12.abc", &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_STATUS);
    assert_int_equal(resp.status, 500);
    assert_string_equal(resp.error, "GET /v1/allocations: status 500: rpc error: boom second line");
    nomad_response_free(&resp);

    /* A long body is cut to about 200 characters. */
    memset(long_body, 'x', sizeof(long_body) - 1);
    long_body[sizeof(long_body) - 1] = '\0';
    {
        char rules[800];

        snprintf(rules, sizeof(rules), "[{\"path\":\"/v1/allocations\",\"status\":500,\"body\":\"%s\"}]",
                 long_body);
        set_faults(rules);
    }
    assert_int_equal(nomad_get(client, "/v1/allocations", &resp), -1);
    assert_true(strlen(resp.error) < 260);
    assert_non_null(strstr(resp.error, "xxx..."));
    nomad_response_free(&resp);
    nomad_client_free(client);
}

static void no_cluster_leader_500(void **state)
{
    struct nomad_client *client = client_with_retries(2);
    struct nomad_response resp;

    (void)state;
    set_faults("[{\"path\":\"/v1/nodes\",\"status\":500,\"body\":\"No cluster leader\"}]");
    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_NO_LEADER);
    assert_string_equal(resp.error, "GET /v1/nodes: status 500: No cluster leader");
    /* An election may end the condition, so the read is retried. */
    assert_int_equal(resp.attempts, 3);
    assert_int_equal(count_requests("GET", "/v1/nodes"), 3);
    nomad_response_free(&resp);
    nomad_client_free(client);
}

static void known_leader_false_is_no_leader(void **state)
{
    struct nomad_client *client = default_client();
    struct nomad_response resp;

    (void)state;
    set_faults("[{\"path\":\"/v1/nodes\",\"known_leader\":false}]");
    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_NO_LEADER);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.known_leader, 0);
    /* The possibly stale data is still handed over, and the response is not retried. */
    assert_non_null(resp.body);
    assert_true(resp.body_len > 2);
    assert_int_equal(resp.attempts, 1);
    assert_non_null(strstr(resp.error, "GET /v1/nodes: "));
    assert_non_null(strstr(resp.error, "stale"));
    nomad_response_free(&resp);
    nomad_client_free(client);
}

/* ---- tests: retries ---- */

static void retry_after_one_500(void **state)
{
    struct nomad_client *client = default_client();
    struct nomad_response resp;
    struct stderr_capture cap;
    char *log;

    (void)state;
    set_faults("[{\"path\":\"/v1/nodes\",\"status\":500,\"body\":\"rpc error: EOF\",\"times\":1}]");
    capture_stderr(&cap);
    nomad_get(client, "/v1/nodes", &resp);
    log = release_stderr(&cap);

    assert_int_equal(resp.result, NOMAD_OK);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.attempts, 2);
    assert_string_equal(resp.error, "");
    assert_int_equal(count_requests("GET", "/v1/nodes"), 2);
    assert_non_null(strstr(log, "WARN"));
    assert_non_null(strstr(log, "[nomad] GET /v1/nodes: status 500: rpc error: EOF; retrying"));
    assert_non_null(strstr(log, "attempt 1 of 4"));
    assert_null(strstr(log, TOKEN));
    free(log);
    nomad_response_free(&resp);
    nomad_client_free(client);
}

static void definite_answers_not_retried(void **state)
{
    struct nomad_client *client = default_client();
    struct nomad_response resp;

    (void)state;
    set_faults("[{\"path\":\"/v1/service/web\",\"status\":500,"
               "\"body\":\"service registration not found\"}]");
    assert_int_equal(nomad_get(client, "/v1/service/web", &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_STATUS);
    assert_int_equal(resp.attempts, 1);
    nomad_response_free(&resp);

    set_faults("[{\"path\":\"/v1/nodes\",\"status\":400,\"body\":\"Invalid wait time\"}]");
    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), -1);
    assert_int_equal(resp.status, 400);
    assert_int_equal(resp.attempts, 1);
    nomad_response_free(&resp);

    /* 429 is the exception among 4xx: the autopilot health endpoint uses it. */
    set_faults("[{\"path\":\"/v1/operator/autopilot/health\",\"status\":429,\"body\":\"{}\",\"times\":2}]");
    nomad_get(client, "/v1/operator/autopilot/health", &resp);
    assert_int_equal(resp.attempts, 3);
    assert_int_equal(resp.result, NOMAD_OK);
    nomad_response_free(&resp);
    nomad_client_free(client);
}

static void writes_not_retried(void **state)
{
    struct nomad_client *client = default_client();
    struct nomad_response resp;

    (void)state;
    set_faults("[{\"path\":\"/v1/system/gc\",\"status\":500,\"body\":\"rpc error: EOF\",\"times\":1}]");
    assert_int_equal(nomad_request(client, "PUT", "/v1/system/gc", NULL, &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_STATUS);
    assert_int_equal(resp.attempts, 1);
    assert_string_equal(resp.error, "PUT /v1/system/gc: status 500: rpc error: EOF");
    assert_int_equal(count_requests("PUT", "/v1/system/gc"), 1);
    nomad_response_free(&resp);

    /* Without the fault the same write succeeds with Nomad's empty 200 body. */
    assert_int_equal(nomad_request(client, "PUT", "/v1/system/gc", NULL, &resp), 0);
    assert_int_equal(resp.status, 200);
    assert_non_null(resp.body);
    assert_int_equal(resp.body_len, 0);
    nomad_response_free(&resp);
    nomad_client_free(client);
}

static void write_sends_body(void **state)
{
    struct nomad_client *client = default_client();
    struct nomad_response resp;
    const char *payload = "{\"Eligibility\":\"ineligible\"}";
    char path[96];
    cJSON *request;

    (void)state;
    snprintf(path, sizeof(path), "/v1/node/%s/eligibility", node_ids[0]);
    nomad_request(client, "POST", path, payload, &resp);
    nomad_response_free(&resp);
    request = last_request(path);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(request, "method")), "POST");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(request, "body")), payload);
    assert_string_equal(request_field(request, "headers", "content-type"), "application/json");
    cJSON_Delete(request);

    nomad_request(client, "DELETE", "/v1/service/web/_nomad-task-x?namespace=default", NULL, &resp);
    nomad_response_free(&resp);
    request = last_request("/v1/service/web/_nomad-task-x");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(request, "method")), "DELETE");
    cJSON_Delete(request);
    nomad_client_free(client);
}

/* ---- tests: transport failures ---- */

static void slow_response_times_out(void **state)
{
    struct nomad_conn_config cfg;
    struct nomad_client *client;
    struct nomad_response resp;
    double start;

    (void)state;
    test_config(&cfg);
    cfg.request_timeout_ms = 300;
    cfg.max_retries = 0;
    client = new_client(&cfg);
    nomad_conn_config_free(&cfg);

    set_faults("[{\"path\":\"/v1/nodes\",\"delay_ms\":2000}]");
    start = now_s();
    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_TIMEOUT);
    assert_true(now_s() - start < 1.5);
    assert_true(resp.elapsed_s >= 0.25);
    assert_non_null(strstr(resp.error, "GET /v1/nodes: timed out after 300 ms at http://127.0.0.1:"));
    nomad_response_free(&resp);
    nomad_client_free(client);
}

static void blocking_query_extends_timeout(void **state)
{
    struct nomad_conn_config cfg;
    struct nomad_client *client;
    struct nomad_response resp;
    char path[96];

    (void)state;
    test_config(&cfg);
    cfg.request_timeout_ms = 400;
    cfg.max_retries = 0;
    client = new_client(&cfg);
    nomad_conn_config_free(&cfg);

    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), 0);
    snprintf(path, sizeof(path), "/v1/nodes?index=%llu&wait=1s", (unsigned long long)resp.index);
    nomad_response_free(&resp);

    /* Nothing changes, so the server keeps the query open for 1 s to 1.0625 s, longer than 400 ms. */
    assert_int_equal(nomad_get(client, path, &resp), 0);
    assert_int_equal(resp.result, NOMAD_OK);
    assert_true(resp.elapsed_s >= 0.9);
    nomad_response_free(&resp);
    nomad_client_free(client);
}

static void truncated_body_is_transport(void **state)
{
    struct nomad_client *client = client_with_retries(0);
    struct nomad_response resp;

    (void)state;
    set_faults("[{\"path\":\"/v1/nodes\",\"truncate\":true}]");
    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_TRANSPORT);
    assert_null(resp.body);
    assert_non_null(strstr(resp.error, "GET /v1/nodes: request to http://127.0.0.1:"));
    nomad_response_free(&resp);

    /* The next request opens a new connection and succeeds. */
    set_faults("[]");
    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), 0);
    nomad_response_free(&resp);
    nomad_client_free(client);
}

static void dropped_connection_is_transport(void **state)
{
    struct nomad_client *client = client_with_retries(0);
    struct nomad_response resp;

    (void)state;
    set_faults("[{\"path\":\"/v1/nodes\",\"drop\":true}]");
    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_TRANSPORT);
    assert_int_equal(resp.status, 0);
    nomad_response_free(&resp);
    nomad_client_free(client);

    /* A dropped connection is retried for reads. */
    client = client_with_retries(3);
    set_faults("[{\"path\":\"/v1/nodes\",\"drop\":true,\"times\":2}]");
    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), 0);
    assert_int_equal(resp.attempts, 3);
    nomad_response_free(&resp);
    nomad_client_free(client);
}

static void refused_connection_is_transport(void **state)
{
    struct nomad_conn_config cfg;
    struct nomad_client *client;
    struct nomad_response resp;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char address[64];

    (void)state;
    /* A bound socket that never listens refuses connections on its port. */
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    snprintf(address, sizeof(address), "http://127.0.0.1:%d", ntohs(addr.sin_port));

    test_config(&cfg);
    free(cfg.address);
    cfg.address = strdup(address);
    cfg.max_retries = 1;
    client = new_client(&cfg);
    nomad_conn_config_free(&cfg);

    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_TRANSPORT);
    assert_int_equal(resp.attempts, 2);
    assert_non_null(strstr(resp.error, address));
    nomad_response_free(&resp);
    nomad_client_free(client);
    close(fd);
}

static void unix_socket_missing_is_transport(void **state)
{
    struct nomad_conn_config cfg;
    struct nomad_client *client;
    struct nomad_response resp;
    char address[200];

    (void)state;
    snprintf(address, sizeof(address), "unix://%s/absent.sock", temp_dir);
    test_config(&cfg);
    free(cfg.address);
    cfg.address = strdup(address);
    cfg.max_retries = 0;
    client = new_client(&cfg);
    nomad_conn_config_free(&cfg);

    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_TRANSPORT);
    assert_non_null(strstr(resp.error, address));
    nomad_response_free(&resp);
    nomad_client_free(client);
}

static void https_to_plain_server_fails(void **state)
{
    struct nomad_conn_config cfg;
    struct nomad_client *client;
    struct nomad_response resp;
    char address[sizeof(base_url) + 8];

    (void)state;
    snprintf(address, sizeof(address), "https://%s", base_url + strlen("http://"));
    test_config(&cfg);
    free(cfg.address);
    cfg.address = strdup(address);
    cfg.tls_server_name = strdup("server.global.nomad");
    cfg.max_retries = 0;
    client = new_client(&cfg);
    nomad_conn_config_free(&cfg);

    assert_string_equal(nomad_client_address(client), address);
    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_TRANSPORT);
    assert_non_null(strstr(resp.error, address));
    /* CURLOPT_CONNECT_TO took the server name to 127.0.0.1, where the TLS handshake failed. */
    assert_null(strstr(resp.error, "resolve"));
    assert_non_null(strstr(resp.error, "SSL"));
    nomad_response_free(&resp);
    nomad_client_free(client);
}

static void oversized_response_rejected(void **state)
{
    struct nomad_conn_config cfg;
    struct nomad_client *client;
    struct nomad_response resp;

    (void)state;
    test_config(&cfg);
    cfg.max_response_bytes = 1000;
    client = new_client(&cfg);
    nomad_conn_config_free(&cfg);

    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_TOO_LARGE);
    assert_null(resp.body);
    assert_int_equal(resp.attempts, 1);
    assert_non_null(strstr(resp.error, "GET /v1/nodes: response body exceeds the limit of 1000 bytes"));
    assert_non_null(strstr(resp.error, "nomad.max_response_size"));
    nomad_response_free(&resp);

    /* A small response still fits. */
    assert_int_equal(nomad_get(client, "/v1/status/leader", &resp), 0);
    nomad_response_free(&resp);
    nomad_client_free(client);
}

/* ---- tests: request contents ---- */

/* On loopback "auto" sends no Accept-Encoding; "on" does, and the gzip body arrives decoded. */
static void compression_by_address(void **state)
{
    static const struct {
        const char *address;
        enum nomad_compression setting;
        int compresses;
    } cases[] = {
        {"http://127.0.0.1:4646", NOMAD_COMPRESSION_AUTO, 0},
        {"http://127.8.9.10:4646", NOMAD_COMPRESSION_AUTO, 0},
        {"http://localhost:4646", NOMAD_COMPRESSION_AUTO, 0},
        {"http://[::1]:4646", NOMAD_COMPRESSION_AUTO, 0},
        {"http://localhost.:4646", NOMAD_COMPRESSION_AUTO, 0},
        {"http://[::ffff:127.0.0.1]:4646", NOMAD_COMPRESSION_AUTO, 0},
        {"http://[::ffff:10.0.0.1]:4646", NOMAD_COMPRESSION_AUTO, 1},
        {"http://[2001:db8::1]:4646", NOMAD_COMPRESSION_AUTO, 1},
        {"unix:///run/nomad/api.sock", NOMAD_COMPRESSION_AUTO, 0},
        {"https://10.1.2.3:4646", NOMAD_COMPRESSION_AUTO, 1},
        {"https://nomad.service.consul:4646", NOMAD_COMPRESSION_AUTO, 1},
        {"http://128.0.0.1:4646", NOMAD_COMPRESSION_AUTO, 1},
        {"https://10.1.2.3:4646", NOMAD_COMPRESSION_OFF, 0},
        {"http://127.0.0.1:4646", NOMAD_COMPRESSION_ON, 1},
    };
    struct nomad_conn_config cfg;
    struct nomad_client *client;
    struct nomad_response resp;
    cJSON *request, *body;

    (void)state;
    /* Creating a client sends nothing, so addresses beyond loopback are safe here. */
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        nomad_conn_config_defaults(&cfg);
        free(cfg.address);
        cfg.address = strdup(cases[i].address);
        cfg.compression = cases[i].setting;
        client = new_client(&cfg);
        nomad_conn_config_free(&cfg);
        if (nomad_client_compresses(client) != cases[i].compresses)
            fail_msg("%s with setting %d: compresses=%d, expected %d", cases[i].address,
                     (int)cases[i].setting, nomad_client_compresses(client), cases[i].compresses);
        nomad_client_free(client);
    }

    client = default_client();
    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), 0);
    nomad_response_free(&resp);
    request = last_request("/v1/nodes");
    assert_null(request_field(request, "headers", "accept-encoding"));
    cJSON_Delete(request);
    nomad_client_free(client);

    test_config(&cfg);
    cfg.compression = NOMAD_COMPRESSION_ON;
    client = new_client(&cfg);
    nomad_conn_config_free(&cfg);
    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), 0);
    request = last_request("/v1/nodes");
    assert_non_null(strstr(request_field(request, "headers", "accept-encoding"), "gzip"));
    cJSON_Delete(request);
    body = cJSON_Parse(resp.body);
    assert_true(cJSON_IsArray(body));
    assert_true(cJSON_GetArraySize(body) > 0);
    cJSON_Delete(body);
    nomad_response_free(&resp);
    nomad_client_free(client);
}

static void token_sent_never_shown(void **state)
{
    struct nomad_conn_config cfg;
    struct nomad_client *client = default_client();
    struct nomad_response resp;
    cJSON *request;

    (void)state;
    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), 0);
    nomad_response_free(&resp);
    request = last_request("/v1/nodes");
    assert_string_equal(request_field(request, "headers", "x-nomad-token"), TOKEN);
    assert_non_null(strstr(request_field(request, "headers", "user-agent"),
                           "nomad-medic/" NOMAD_MEDIC_VERSION));
    cJSON_Delete(request);
    assert_null(strstr(nomad_client_address(client), TOKEN));

    /* Failures name neither this token nor a wrong one. */
    set_faults("[{\"path\":\"/v1/nodes\",\"status\":500,\"body\":\"rpc error\"}]");
    nomad_get(client, "/v1/nodes", &resp);
    assert_int_equal(resp.result, NOMAD_ERR_STATUS);
    assert_null(strstr(resp.error, TOKEN));
    nomad_response_free(&resp);
    nomad_client_free(client);

    test_config(&cfg);
    free(cfg.token);
    cfg.token = strdup("wrong-token-1234");
    client = new_client(&cfg);
    nomad_conn_config_free(&cfg);
    assert_int_equal(nomad_get(client, "/v1/allocations", &resp), -1);
    assert_int_equal(resp.status, 403);
    assert_string_equal(resp.error, "GET /v1/allocations: status 403: ACL token not found; check that "
                                    "NOMAD_TOKEN (or nomad.token) is set and that its ACL policy "
                                    "allows this endpoint");
    assert_null(strstr(resp.error, "wrong-token-1234"));
    nomad_response_free(&resp);
    nomad_client_free(client);
}

static void region_parameter_added(void **state)
{
    struct nomad_conn_config cfg;
    struct nomad_client *client;
    struct nomad_response resp;
    cJSON *request;

    (void)state;
    test_config(&cfg);
    cfg.region = strdup("global");
    client = new_client(&cfg);
    nomad_conn_config_free(&cfg);

    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), 0);
    nomad_response_free(&resp);
    request = last_request("/v1/nodes");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(request, "query")), "region=global");
    cJSON_Delete(request);

    assert_int_equal(nomad_get(client, "/v1/allocations?namespace=%2A", &resp), 0);
    nomad_response_free(&resp);
    request = last_request("/v1/allocations");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(request, "query")),
                        "namespace=%2A&region=global");
    cJSON_Delete(request);

    /* A region named in the path wins over the configured one. */
    nomad_get(client, "/v1/evaluations?region=eu-west", &resp);
    assert_int_equal(resp.status, 500);
    assert_string_equal(resp.error, "GET /v1/evaluations: status 500: No path to region");
    nomad_response_free(&resp);
    request = last_request("/v1/evaluations");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(request, "query")), "region=eu-west");
    cJSON_Delete(request);
    nomad_client_free(client);
}

static void basic_auth_from_address_and_env(void **state)
{
    struct nomad_conn_config cfg;
    struct nomad_client *client;
    struct nomad_response resp;
    cJSON *request;
    char address[96];

    (void)state;
    snprintf(address, sizeof(address), "http://alice:s%%40cret@%s", base_url + strlen("http://"));
    test_config(&cfg);
    free(cfg.address);
    cfg.address = strdup(address);
    client = new_client(&cfg);
    nomad_conn_config_free(&cfg);

    assert_string_equal(nomad_client_address(client), base_url);
    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), 0);
    nomad_response_free(&resp);
    request = last_request("/v1/nodes");
    /* base64("alice:s@cret") */
    assert_string_equal(request_field(request, "headers", "authorization"), "Basic YWxpY2U6c0BjcmV0");
    cJSON_Delete(request);
    nomad_client_free(client);

    test_config(&cfg);
    cfg.http_auth = strdup("bob");
    client = new_client(&cfg);
    nomad_conn_config_free(&cfg);
    assert_int_equal(nomad_get(client, "/v1/nodes", &resp), 0);
    nomad_response_free(&resp);
    request = last_request("/v1/nodes");
    /* base64("bob:") */
    assert_string_equal(request_field(request, "headers", "authorization"), "Basic Ym9iOg==");
    cJSON_Delete(request);
    nomad_client_free(client);
}

/* ---- tests: concurrent reads ---- */

static void get_many_with_one_failure(void **state)
{
    struct nomad_conn_config cfg;
    struct nomad_client *client;
    struct nomad_response resps[NODE_COUNT];
    char paths[NODE_COUNT][64];
    const char *path_ptrs[NODE_COUNT];
    char retried_path[64];

    (void)state;
    test_config(&cfg);
    cfg.max_connections = 4;
    client = new_client(&cfg);
    nomad_conn_config_free(&cfg);

    for (int i = 0; i < NODE_COUNT; i++) {
        if (snprintf(paths[i], sizeof(paths[i]), "/v1/node/%s", node_ids[i]) >= (int)sizeof(paths[i]))
            fail_msg("node path for %s does not fit", node_ids[i]);
        path_ptrs[i] = paths[i];
    }
    /* Path 7 names a node that does not exist; path 3 fails once with a 500 and is retried. */
    snprintf(paths[7], sizeof(paths[7]), "/v1/node/ffffffff-0000-0000-0000-000000000000");
    snprintf(retried_path, sizeof(retried_path), "/v1/node/%s", node_ids[3]);
    {
        char rules[256];

        snprintf(rules, sizeof(rules), "[{\"path\":\"%s\",\"status\":503,\"body\":\"busy\",\"times\":1}]",
                 retried_path);
        set_faults(rules);
    }

    assert_int_equal(nomad_get_many(client, path_ptrs, NODE_COUNT, resps), 1);
    for (int i = 0; i < NODE_COUNT; i++) {
        if (i == 7) {
            assert_int_equal(resps[i].result, NOMAD_ERR_STATUS);
            assert_int_equal(resps[i].status, 404);
            assert_int_equal(resps[i].attempts, 1);
            assert_string_equal(resps[i].error,
                                "GET /v1/node/ffffffff-0000-0000-0000-000000000000: status 404: node not found");
            continue;
        }
        assert_int_equal(resps[i].result, NOMAD_OK);
        assert_int_equal(resps[i].attempts, i == 3 ? 2 : 1);
        assert_int_equal(resps[i].known_leader, 1);
        assert_true(resps[i].index > 0);
        assert_non_null(strstr(resps[i].body, node_ids[i]));
    }
    assert_int_equal(count_requests("GET", retried_path), 2);
    for (int i = 0; i < NODE_COUNT; i++)
        nomad_response_free(&resps[i]);

    /* The pool is reused by a second call on the same client. */
    assert_int_equal(nomad_get_many(client, path_ptrs, 2, resps), 0);
    nomad_response_free(&resps[0]);
    nomad_response_free(&resps[1]);
    nomad_client_free(client);
}

static void get_many_applies_cap_and_timeout(void **state)
{
    struct nomad_conn_config cfg;
    struct nomad_client *client;
    struct nomad_response resps[3];
    const char *paths[3] = {"/v1/nodes", "/v1/status/leader", "/v1/agent/self"};

    (void)state;
    test_config(&cfg);
    cfg.max_connections = 2;
    cfg.max_response_bytes = 1000;
    cfg.request_timeout_ms = 300;
    cfg.max_retries = 0;
    client = new_client(&cfg);
    nomad_conn_config_free(&cfg);

    set_faults("[{\"path\":\"/v1/agent/self\",\"delay_ms\":2000}]");
    assert_int_equal(nomad_get_many(client, paths, 3, resps), 2);
    assert_int_equal(resps[0].result, NOMAD_ERR_TOO_LARGE);
    assert_int_equal(resps[1].result, NOMAD_OK);
    assert_int_equal(resps[2].result, NOMAD_ERR_TIMEOUT);
    for (int i = 0; i < 3; i++)
        nomad_response_free(&resps[i]);
    nomad_client_free(client);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(escape_cases),
        cmocka_unit_test(result_names_distinct),
        cmocka_unit_test(address_forms_accepted),
        cmocka_unit_test(address_forms_rejected),
        cmocka_unit_test(rejected_address_hides_password),
        cmocka_unit_test(invalid_settings_rejected),
        cmocka_unit_test_setup(invalid_request_rejected, test_setup),
        cmocka_unit_test_setup(query_headers_parsed, test_setup),
        cmocka_unit_test_setup(header_names_any_case, test_setup),
        cmocka_unit_test_setup(pagination_follows_next_token, test_setup),
        cmocka_unit_test_setup(not_found_error_text, test_setup),
        cmocka_unit_test_setup(server_error_text, test_setup),
        cmocka_unit_test_setup(no_cluster_leader_500, test_setup),
        cmocka_unit_test_setup(known_leader_false_is_no_leader, test_setup),
        cmocka_unit_test_setup(retry_after_one_500, test_setup),
        cmocka_unit_test_setup(definite_answers_not_retried, test_setup),
        cmocka_unit_test_setup(writes_not_retried, test_setup),
        cmocka_unit_test_setup(write_sends_body, test_setup),
        cmocka_unit_test_setup(slow_response_times_out, test_setup),
        cmocka_unit_test_setup(blocking_query_extends_timeout, test_setup),
        cmocka_unit_test_setup(truncated_body_is_transport, test_setup),
        cmocka_unit_test_setup(dropped_connection_is_transport, test_setup),
        cmocka_unit_test_setup(refused_connection_is_transport, test_setup),
        cmocka_unit_test_setup(unix_socket_missing_is_transport, test_setup),
        cmocka_unit_test_setup(https_to_plain_server_fails, test_setup),
        cmocka_unit_test_setup(oversized_response_rejected, test_setup),
        cmocka_unit_test_setup(compression_by_address, test_setup),
        cmocka_unit_test_setup(token_sent_never_shown, test_setup),
        cmocka_unit_test_setup(region_parameter_added, test_setup),
        cmocka_unit_test_setup(basic_auth_from_address_and_env, test_setup),
        cmocka_unit_test_setup(get_many_with_one_failure, test_setup),
        cmocka_unit_test_setup(get_many_applies_cap_and_timeout, test_setup),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
