/*
 * Tests of the Nomad Variables and variable lock module against the project's
 * test Nomad server (tests/fake_nomad/fake_nomad.py) on 127.0.0.1. The group
 * setup starts one server process. Each test that talks to it first loads a
 * fresh scenario and clears the server's fault rules and request log. The
 * scenario has namespaces "default" and "prod", an ACL token, and a lock TTL
 * minimum of 1 s so that lock tests finish in seconds.
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
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../controller/variables.h"

#define FAKE_SERVER_TEST_NAME "test_variables"
#include "fake_server.h"

#define TOKEN "3c0e9b7a-variables-test-token-71d2"
#define LIST_COUNT 230
#define RENEW_COUNT 5

static char temp_dir[] = "/tmp/test_variables.XXXXXX";

/* ---- helpers: test server process ---- */

static int count_all_requests(void)
{
    cJSON *log = recorded_requests();
    int count = cJSON_GetArraySize(log);

    cJSON_Delete(log);
    return count;
}

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

/* A copy of the nth (0-based) recorded request for method and path; the caller deletes it. */
static cJSON *nth_request(const char *method, const char *path, int nth)
{
    cJSON *log = recorded_requests();
    cJSON *entry;
    cJSON *found = NULL;
    int seen = 0;

    cJSON_ArrayForEach(entry, log) {
        const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(entry, "method"));
        const char *p = cJSON_GetStringValue(cJSON_GetObjectItem(entry, "path"));

        if (m != NULL && p != NULL && strcmp(m, method) == 0 && strcmp(p, path) == 0 && seen++ == nth) {
            found = cJSON_Duplicate(entry, 1);
            break;
        }
    }
    cJSON_Delete(log);
    assert_non_null(found);
    return found;
}

static const char *request_param(cJSON *request, const char *name)
{
    return cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(request, "params"), name));
}

static int request_has_param(cJSON *request, const char *name)
{
    return cJSON_GetObjectItem(cJSON_GetObjectItem(request, "params"), name) != NULL;
}

/* The recorded request's body parsed as JSON; the caller deletes it. */
static cJSON *request_body(cJSON *request)
{
    cJSON *body = cJSON_Parse(cJSON_GetStringValue(cJSON_GetObjectItem(request, "body")));

    assert_non_null(body);
    return body;
}

/* ---- helpers: client and data ---- */

static struct nomad_client *new_client(void)
{
    struct nomad_conn_config cfg;
    char err[512] = "";
    struct nomad_client *client;

    nomad_conn_config_defaults(&cfg);
    free(cfg.address);
    cfg.address = strdup(base_url);
    cfg.token = strdup(TOKEN);
    cfg.retry_base_ms = 1;
    cfg.request_timeout_ms = 10000;
    client = nomad_client_new(&cfg, err, sizeof(err));
    nomad_conn_config_free(&cfg);
    if (client == NULL)
        fprintf(stderr, "nomad_client_new: %s\n", err);
    assert_non_null(client);
    return client;
}

static cJSON *json(const char *text)
{
    cJSON *value = cJSON_Parse(text);

    assert_non_null(value);
    return value;
}

static void assert_items_equal(const cJSON *actual, const char *expected_json)
{
    cJSON *expected = json(expected_json);

    assert_non_null(actual);
    assert_true(cJSON_Compare(actual, expected, 1));
    cJSON_Delete(expected);
}

static void assert_contains(const char *text, const char *part)
{
    if (strstr(text, part) == NULL)
        fprintf(stderr, "expected \"%s\" in: %s\n", part, text);
    assert_non_null(strstr(text, part));
}

/* Create path in the default namespace with items_json; returns its ModifyIndex. */
static uint64_t create_var(struct nomad_client *client, const char *path, const char *items_json)
{
    cJSON *items = json(items_json);
    struct nomad_var var;
    char err[512];
    enum nomad_var_result rc = nomad_var_write(client, NULL, path, items, -1, &var, err, sizeof(err));
    uint64_t index = var.modify_index;

    if (rc != VAR_OK)
        fprintf(stderr, "create %s: %s\n", path, err);
    assert_int_equal(rc, VAR_OK);
    assert_true(index > 0);
    nomad_var_free(&var);
    cJSON_Delete(items);
    return index;
}

/* ---- fixtures ---- */

static void load_scenario(void)
{
    free(control("PUT", "/_test/scenario",
                 "{\"namespaces\":[\"default\",\"prod\"],\"acl_token\":\"" TOKEN "\","
                 "\"lock_min_ttl_s\":1}"));
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

    if (mkdtemp(temp_dir) == NULL)
        return -1;
    snprintf(port_file, sizeof(port_file), "%s/port", temp_dir);
    port = start_server(port_file);
    if (port < 0) {
        fprintf(stderr, "test_variables: the test Nomad server did not start\n");
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
    rmdir(temp_dir);
    return 0;
}

static int test_setup(void **state)
{
    (void)state;
    load_scenario();
    return 0;
}

/* ---- tests: pure functions ---- */

static void valid_path_cases(void **state)
{
    char longest[NOMAD_VAR_PATH_MAX + 2];
    static const struct {
        const char *path;
        int valid;
    } cases[] = {
        {"a", 1},
        {"nomad/jobs/web", 1},
        {"medic/locks/leader", 1},
        {"A-Z_a-z~0-9/", 1},
        {"/leading/slash", 1},
        {"", 0},
        {"has space", 0},
        {"dot.in.path", 0},
        {"percent%2F", 0},
        {"query?x", 0},
        {"hash#x", 0},
        {"plus+x", 0},
        {"colon:x", 0},
        {"new\nline", 0},
        {"caf\xc3\xa9", 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (nomad_var_valid_path(cases[i].path) != cases[i].valid)
            fprintf(stderr, "path \"%s\": expected %d\n", cases[i].path, cases[i].valid);
        assert_int_equal(nomad_var_valid_path(cases[i].path), cases[i].valid);
    }
    assert_int_equal(nomad_var_valid_path(NULL), 0);

    memset(longest, 'x', NOMAD_VAR_PATH_MAX);
    longest[NOMAD_VAR_PATH_MAX] = '\0';
    assert_int_equal(nomad_var_valid_path(longest), 1);
    longest[NOMAD_VAR_PATH_MAX] = 'x';
    longest[NOMAD_VAR_PATH_MAX + 1] = '\0';
    assert_int_equal(nomad_var_valid_path(longest), 0);
}

static void result_names_distinct(void **state)
{
    (void)state;
    assert_string_equal(nomad_var_result_name(VAR_OK), "ok");
    assert_string_equal(nomad_var_result_name(VAR_NOT_FOUND), "not found");
    assert_string_equal(nomad_var_result_name(VAR_CONFLICT), "conflict");
    assert_string_equal(nomad_var_result_name(VAR_ERR), "error");
}

/* ---- tests: argument checks before any request ---- */

static void invalid_path_rejected_before_request(void **state)
{
    struct nomad_client *client = new_client();
    cJSON *items = json("{\"k\":\"v\"}");
    static const char *const bad_paths[] = {"bad path", "dot.path", "", "a%2Fb"};
    struct nomad_var var;
    char err[512];
    char expected[128];
    char **paths = NULL;
    size_t n = 99;

    (void)state;
    for (size_t i = 0; i < sizeof(bad_paths) / sizeof(bad_paths[0]); i++) {
        const char *path = bad_paths[i];

        snprintf(expected, sizeof(expected), "variable path \"%s\" is invalid", path);
        assert_int_equal(nomad_var_read(client, NULL, path, 0, NULL, &var, err, sizeof(err)), VAR_ERR);
        assert_contains(err, expected);
        nomad_var_free(&var);
        assert_int_equal(nomad_var_write(client, NULL, path, items, -1, &var, err, sizeof(err)), VAR_ERR);
        assert_contains(err, expected);
        nomad_var_free(&var);
        assert_int_equal(nomad_var_delete(client, NULL, path, -1, err, sizeof(err)), VAR_ERR);
        assert_contains(err, expected);
        assert_int_equal(nomad_var_lock_acquire(client, NULL, path, 15, 15, NULL, &var, err, sizeof(err)),
                         VAR_ERR);
        assert_contains(err, expected);
        nomad_var_free(&var);
        assert_int_equal(nomad_var_lock_renew(client, NULL, path, "id", err, sizeof(err)), VAR_ERR);
        assert_contains(err, expected);
        assert_int_equal(nomad_var_lock_release(client, NULL, path, "id", err, sizeof(err)), VAR_ERR);
        assert_contains(err, expected);
    }

    /* NULL and a 129-byte path. */
    assert_int_equal(nomad_var_read(client, NULL, NULL, 0, NULL, &var, err, sizeof(err)), VAR_ERR);
    assert_contains(err, "variable path \"(null)\" is invalid");
    nomad_var_free(&var);
    {
        char longest[NOMAD_VAR_PATH_MAX + 2];

        memset(longest, 'y', sizeof(longest) - 1);
        longest[sizeof(longest) - 1] = '\0';
        assert_int_equal(nomad_var_write(client, NULL, longest, items, -1, &var, err, sizeof(err)), VAR_ERR);
        assert_contains(err, "is invalid: use 1 to 128 characters");
        nomad_var_free(&var);
    }

    /* A list prefix follows the same character rules. */
    assert_int_equal(nomad_var_list(client, NULL, "bad prefix", &paths, &n, err, sizeof(err)), VAR_ERR);
    assert_contains(err, "variable prefix \"bad prefix\" is invalid");
    assert_null(paths);
    assert_int_equal(n, 0);

    assert_int_equal(count_all_requests(), 0);
    cJSON_Delete(items);
    nomad_client_free(client);
}

static void invalid_namespace_rejected(void **state)
{
    struct nomad_client *client = new_client();
    cJSON *items = json("{\"k\":\"v\"}");
    struct nomad_var var;
    char err[512];

    (void)state;
    /* "*" lists all namespaces but names no single variable. */
    assert_int_equal(nomad_var_read(client, "*", "medic/x", 0, NULL, &var, err, sizeof(err)), VAR_ERR);
    assert_contains(err, "namespace \"*\" is invalid");
    nomad_var_free(&var);
    assert_int_equal(nomad_var_write(client, "bad ns", "medic/x", items, -1, &var, err, sizeof(err)), VAR_ERR);
    assert_contains(err, "namespace \"bad ns\" is invalid");
    nomad_var_free(&var);
    assert_int_equal(nomad_var_delete(client, "", "medic/x", -1, err, sizeof(err)), VAR_ERR);
    assert_contains(err, "namespace \"\" is invalid");
    assert_int_equal(count_all_requests(), 0);
    cJSON_Delete(items);
    nomad_client_free(client);
}

static void items_not_strings_rejected(void **state)
{
    struct nomad_client *client = new_client();
    static const struct {
        const char *items;
        const char *message;
    } cases[] = {
        {"{\"user\":\"me\",\"port\":8080}", "Items[\"port\"] of variable \"medic/x\" is a number"},
        {"{\"nested\":{\"a\":\"b\"}}", "Items[\"nested\"] of variable \"medic/x\" is an object"},
        {"{\"flag\":true}", "Items[\"flag\"] of variable \"medic/x\" is a boolean"},
        {"{\"gone\":null}", "Items[\"gone\"] of variable \"medic/x\" is null"},
        {"{\"list\":[\"a\"]}", "Items[\"list\"] of variable \"medic/x\" is an array"},
        {"[\"a\",\"b\"]", "Items for variable \"medic/x\" must be a JSON object of string values, not an array"},
        {"\"text\"", "must be a JSON object of string values, not a string"},
        {"{}", "Items for variable \"medic/x\" is empty"},
    };
    struct nomad_var var;
    char err[512];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *items = json(cases[i].items);

        assert_int_equal(nomad_var_write(client, NULL, "medic/x", items, -1, &var, err, sizeof(err)), VAR_ERR);
        assert_contains(err, cases[i].message);
        nomad_var_free(&var);
        assert_int_equal(nomad_var_lock_acquire(client, NULL, "medic/x", 15, 15, items, &var, err, sizeof(err)),
                         VAR_ERR);
        assert_contains(err, cases[i].message);
        nomad_var_free(&var);
        cJSON_Delete(items);
    }
    assert_int_equal(nomad_var_write(client, NULL, "medic/x", NULL, -1, &var, err, sizeof(err)), VAR_ERR);
    assert_contains(err, "not missing");
    nomad_var_free(&var);

    /* Values are secrets: a rejected value never appears in the message. */
    {
        cJSON *items = json("{\"password\":\"hunter2\",\"n\":1}");

        assert_int_equal(nomad_var_write(client, NULL, "medic/x", items, -1, &var, err, sizeof(err)), VAR_ERR);
        assert_null(strstr(err, "hunter2"));
        nomad_var_free(&var);
        cJSON_Delete(items);
    }
    assert_int_equal(count_all_requests(), 0);
    nomad_client_free(client);
}

static void invalid_cas_and_ttl_rejected(void **state)
{
    struct nomad_client *client = new_client();
    cJSON *items = json("{\"k\":\"v\"}");
    struct nomad_var var;
    char err[512];

    (void)state;
    assert_int_equal(nomad_var_write(client, NULL, "medic/x", items, -2, &var, err, sizeof(err)), VAR_ERR);
    assert_contains(err, "cas -2 is invalid");
    nomad_var_free(&var);
    assert_int_equal(nomad_var_delete(client, NULL, "medic/x", -5, err, sizeof(err)), VAR_ERR);
    assert_contains(err, "cas -5 is invalid");
    assert_int_equal(nomad_var_lock_acquire(client, NULL, "medic/x", 0, 1, NULL, &var, err, sizeof(err)), VAR_ERR);
    assert_contains(err, "TTL 0 s and lock delay 1 s are invalid");
    nomad_var_free(&var);
    assert_int_equal(nomad_var_lock_acquire(client, NULL, "medic/x", 10, -1, NULL, &var, err, sizeof(err)), VAR_ERR);
    assert_contains(err, "TTL 10 s and lock delay -1 s are invalid");
    nomad_var_free(&var);
    assert_int_equal(nomad_var_lock_renew(client, NULL, "medic/x", "", err, sizeof(err)), VAR_ERR);
    assert_contains(err, "lock ID for variable \"medic/x\" is missing or invalid");
    assert_int_equal(nomad_var_lock_release(client, NULL, "medic/x", NULL, err, sizeof(err)), VAR_ERR);
    assert_contains(err, "lock ID for variable \"medic/x\" is missing or invalid");
    assert_int_equal(count_all_requests(), 0);
    cJSON_Delete(items);
    nomad_client_free(client);
}

/* Items of n keys "kNNNNN" whose keys and values add up to total bytes. */
static cJSON *items_of_size(size_t total)
{
    cJSON *items = cJSON_CreateObject();
    size_t left = total;
    int key = 0;

    while (left > 0) {
        char name[16];
        size_t chunk;
        char *value;

        snprintf(name, sizeof(name), "k%05d", key++);
        chunk = left - strlen(name) > 4000 ? 4000 : left - strlen(name);
        value = malloc(chunk + 1);
        assert_non_null(value);
        memset(value, 'v', chunk);
        value[chunk] = '\0';
        cJSON_AddStringToObject(items, name, value);
        free(value);
        left -= strlen(name) + chunk;
    }
    return items;
}

static void items_size_limit(void **state)
{
    struct nomad_client *client = new_client();
    cJSON *at_limit = items_of_size(NOMAD_VAR_ITEMS_MAX_BYTES);
    cJSON *over_limit = items_of_size(NOMAD_VAR_ITEMS_MAX_BYTES + 1);
    struct nomad_var var;
    enum nomad_var_result rc;
    char err[512];

    (void)state;
    assert_int_equal(nomad_var_write(client, NULL, "medic/big", over_limit, -1, &var, err, sizeof(err)), VAR_ERR);
    assert_contains(err, "add up to 65537 bytes of keys and values: Nomad accepts at most 65536");
    nomad_var_free(&var);
    assert_int_equal(count_all_requests(), 0);

    rc = nomad_var_write(client, NULL, "medic/big", at_limit, -1, &var, err, sizeof(err));
    if (rc != VAR_OK)
        fprintf(stderr, "write at the limit: %s\n", err);
    assert_int_equal(rc, VAR_OK);
    assert_true(cJSON_Compare(var.items, at_limit, 1));
    nomad_var_free(&var);
    cJSON_Delete(at_limit);
    cJSON_Delete(over_limit);
    nomad_client_free(client);
}

/* ---- tests: read, write, delete ---- */

static void read_missing_is_not_found(void **state)
{
    struct nomad_client *client = new_client();
    struct nomad_var var;
    char err[512] = "stale";
    uint64_t other_index;
    cJSON *request;

    (void)state;
    other_index = create_var(client, "medic/other", "{\"k\":\"v\"}");
    free(control("DELETE", "/_test/requests", NULL));
    assert_int_equal(nomad_var_read(client, NULL, "medic/missing", 0, NULL, &var, err, sizeof(err)),
                     VAR_NOT_FOUND);
    assert_string_equal(err, "");
    assert_null(var.path);
    assert_null(var.items);
    /* Nomad sets X-Nomad-Index before it returns 404, so a caller can block until the variable appears. */
    assert_true(var.query_index >= other_index);
    nomad_var_free(&var);

    /* 404 is definite, so the read was sent once, with the namespace. */
    assert_int_equal(count_requests("GET", "/v1/var/medic/missing"), 1);
    request = nth_request("GET", "/v1/var/medic/missing", 0);
    assert_string_equal(request_param(request, "namespace"), "default");
    assert_false(request_has_param(request, "index"));
    cJSON_Delete(request);
    nomad_client_free(client);
}

static void route_404_is_error(void **state)
{
    struct nomad_client *client = new_client();
    struct nomad_var var;
    char err[512];

    (void)state;
    /* A server without the Variables API returns 404 for the route, not for the variable. */
    set_faults("[{\"path\":\"/v1/var/medic/x\",\"status\":404,\"body\":\"404 page not found\"}]");
    assert_int_equal(nomad_var_read(client, NULL, "medic/x", 0, NULL, &var, err, sizeof(err)), VAR_ERR);
    assert_contains(err, "GET /v1/var/medic/x: status 404: 404 page not found");
    nomad_var_free(&var);
    nomad_client_free(client);
}

static void write_create_only_conflicts(void **state)
{
    struct nomad_client *client = new_client();
    cJSON *first = json("{\"user\":\"me\",\"password\":\"passw0rd1\"}");
    cJSON *second = json("{\"user\":\"you\"}");
    struct nomad_var var;
    struct nomad_var conflict;
    cJSON *request;
    cJSON *body;
    char err[512];
    char expected[160];
    long long now = (long long)time(NULL);

    (void)state;
    assert_int_equal(nomad_var_write(client, "prod", "medic/create", first, 0, &var, err, sizeof(err)), VAR_OK);
    assert_string_equal(err, "");
    assert_string_equal(var.namespace_name, "prod");
    assert_string_equal(var.path, "medic/create");
    assert_true(var.create_index > 0);
    assert_int_equal(var.modify_index, var.create_index);
    assert_items_equal(var.items, "{\"user\":\"me\",\"password\":\"passw0rd1\"}");
    assert_null(var.lock_id);
    assert_true(var.modify_time_s >= now - 60);
    assert_true(var.modify_time_s <= now + 60);

    request = nth_request("PUT", "/v1/var/medic/create", 0);
    assert_string_equal(request_param(request, "namespace"), "prod");
    assert_string_equal(request_param(request, "cas"), "0");
    body = request_body(request);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(body, "Namespace")), "prod");
    assert_true(cJSON_Compare(cJSON_GetObjectItem(body, "Items"), first, 1));
    cJSON_Delete(body);
    cJSON_Delete(request);

    /* The second create-only write conflicts and returns the stored variable. */
    assert_int_equal(nomad_var_write(client, "prod", "medic/create", second, 0, &conflict, err, sizeof(err)),
                     VAR_CONFLICT);
    assert_string_equal(conflict.path, "medic/create");
    assert_int_equal(conflict.modify_index, var.modify_index);
    assert_items_equal(conflict.items, "{\"user\":\"me\",\"password\":\"passw0rd1\"}");
    snprintf(expected, sizeof(expected), "exists with ModifyIndex %llu: use cas=%llu",
             (unsigned long long)var.modify_index, (unsigned long long)var.modify_index);
    assert_contains(err, expected);
    assert_null(strstr(err, "passw0rd1"));
    nomad_var_free(&conflict);

    /* Each write reached the server exactly once. */
    assert_int_equal(count_requests("PUT", "/v1/var/medic/create"), 2);
    nomad_var_free(&var);
    cJSON_Delete(first);
    cJSON_Delete(second);
    nomad_client_free(client);
}

static void cas_update_and_stale_conflict(void **state)
{
    struct nomad_client *client = new_client();
    cJSON *update = json("{\"step\":\"2\"}");
    cJSON *stale = json("{\"step\":\"stale\"}");
    uint64_t first_index = create_var(client, "medic/cas", "{\"step\":\"1\"}");
    struct nomad_var var;
    struct nomad_var conflict;
    struct nomad_var check;
    cJSON *request;
    char err[512];
    char expected[160];

    (void)state;
    /* An unconditional write sends no cas parameter. */
    request = nth_request("PUT", "/v1/var/medic/cas", 0);
    assert_false(request_has_param(request, "cas"));
    cJSON_Delete(request);

    assert_int_equal(nomad_var_write(client, NULL, "medic/cas", update, (long long)first_index, &var, err,
                                     sizeof(err)), VAR_OK);
    assert_true(var.modify_index > first_index);
    assert_items_equal(var.items, "{\"step\":\"2\"}");

    /* The old index is stale now, and the conflict carries the current variable for a retry. */
    assert_int_equal(nomad_var_write(client, NULL, "medic/cas", stale, (long long)first_index, &conflict, err,
                                     sizeof(err)), VAR_CONFLICT);
    assert_int_equal(conflict.modify_index, var.modify_index);
    assert_items_equal(conflict.items, "{\"step\":\"2\"}");
    snprintf(expected, sizeof(expected), "with cas=%llu did not apply because its ModifyIndex is now %llu",
             (unsigned long long)first_index, (unsigned long long)var.modify_index);
    assert_contains(err, expected);

    /* Retrying with the returned index succeeds. */
    assert_int_equal(nomad_var_write(client, NULL, "medic/cas", stale, (long long)conflict.modify_index, &check,
                                     err, sizeof(err)), VAR_OK);
    assert_items_equal(check.items, "{\"step\":\"stale\"}");
    nomad_var_free(&check);
    nomad_var_free(&conflict);
    nomad_var_free(&var);
    cJSON_Delete(update);
    cJSON_Delete(stale);
    nomad_client_free(client);
}

static void cas_on_missing_conflicts(void **state)
{
    struct nomad_client *client = new_client();
    cJSON *items = json("{\"k\":\"v\"}");
    struct nomad_var var;
    char err[512];

    (void)state;
    assert_int_equal(nomad_var_write(client, NULL, "medic/absent", items, 7, &var, err, sizeof(err)), VAR_CONFLICT);
    assert_int_equal(var.modify_index, 0);
    assert_contains(err, "with cas=7 did not apply because the variable does not exist");
    nomad_var_free(&var);
    cJSON_Delete(items);
    nomad_client_free(client);
}

static void conflict_text_body(void **state)
{
    struct nomad_client *client = new_client();
    cJSON *items = json("{\"k\":\"v\"}");
    struct nomad_var var;
    char err[512];

    (void)state;
    /* Nomad reports some CAS failures with 409 and a plain-text "cas error". */
    set_faults("[{\"method\":\"PUT\",\"path\":\"/v1/var/medic/text\",\"status\":409,"
               "\"body\":\"cas error: failed to decode conflict\"}]");
    assert_int_equal(nomad_var_write(client, NULL, "medic/text", items, 3, &var, err, sizeof(err)), VAR_CONFLICT);
    assert_null(var.path);
    assert_contains(err, "cas error: failed to decode conflict");
    assert_contains(err, "read the variable again");
    nomad_var_free(&var);
    cJSON_Delete(items);
    nomad_client_free(client);
}

static void write_not_retried_read_retried(void **state)
{
    struct nomad_client *client = new_client();
    cJSON *items = json("{\"k\":\"v\"}");
    struct nomad_var var;
    char err[512];

    (void)state;
    set_faults("[{\"method\":\"PUT\",\"path\":\"/v1/var/medic/retry\",\"times\":1,\"status\":500,"
               "\"body\":\"rpc error: leader changed\"}]");
    assert_int_equal(nomad_var_write(client, NULL, "medic/retry", items, -1, &var, err, sizeof(err)), VAR_ERR);
    assert_contains(err, "PUT /v1/var/medic/retry: status 500: rpc error: leader changed");
    nomad_var_free(&var);
    assert_int_equal(count_requests("PUT", "/v1/var/medic/retry"), 1);

    create_var(client, "medic/retry", "{\"k\":\"v\"}");
    set_faults("[{\"method\":\"GET\",\"path\":\"/v1/var/medic/retry\",\"times\":1,\"status\":500,"
               "\"body\":\"rpc error: leader changed\"}]");
    assert_int_equal(nomad_var_read(client, NULL, "medic/retry", 0, NULL, &var, err, sizeof(err)), VAR_OK);
    assert_items_equal(var.items, "{\"k\":\"v\"}");
    assert_int_equal(count_requests("GET", "/v1/var/medic/retry"), 2);
    nomad_var_free(&var);
    cJSON_Delete(items);
    nomad_client_free(client);
}

static void delete_with_cas(void **state)
{
    struct nomad_client *client = new_client();
    uint64_t index = create_var(client, "medic/delete", "{\"k\":\"v\"}");
    struct nomad_var var;
    cJSON *request;
    char err[512];
    char expected[160];

    (void)state;
    assert_int_equal(nomad_var_delete(client, NULL, "medic/delete", (long long)index + 100, err, sizeof(err)),
                     VAR_CONFLICT);
    snprintf(expected, sizeof(expected), "delete of variable \"medic/delete\" in namespace \"default\" with cas=%llu",
             (unsigned long long)index + 100);
    assert_contains(err, expected);
    assert_int_equal(nomad_var_read(client, NULL, "medic/delete", 0, NULL, &var, err, sizeof(err)), VAR_OK);
    nomad_var_free(&var);

    assert_int_equal(nomad_var_delete(client, NULL, "medic/delete", (long long)index, err, sizeof(err)), VAR_OK);
    assert_string_equal(err, "");
    request = nth_request("DELETE", "/v1/var/medic/delete", 1);
    snprintf(expected, sizeof(expected), "%llu", (unsigned long long)index);
    assert_string_equal(request_param(request, "cas"), expected);
    assert_string_equal(request_param(request, "namespace"), "default");
    cJSON_Delete(request);
    assert_int_equal(nomad_var_read(client, NULL, "medic/delete", 0, NULL, &var, err, sizeof(err)), VAR_NOT_FOUND);
    nomad_var_free(&var);

    /* A check-and-set delete of a variable that is gone conflicts, as in Nomad. */
    assert_int_equal(nomad_var_delete(client, NULL, "medic/delete", (long long)index, err, sizeof(err)),
                     VAR_CONFLICT);
    assert_contains(err, "did not apply because the variable does not exist");
    nomad_client_free(client);
}

static void delete_missing_status_mapped(void **state)
{
    struct nomad_client *client = new_client();
    char err[512];

    (void)state;
    /* Nomad returns 204 for an unconditional delete of a missing variable. */
    assert_int_equal(nomad_var_delete(client, NULL, "medic/never", -1, err, sizeof(err)), VAR_OK);
    /* A 404 "variable not found" from another server maps to VAR_NOT_FOUND. */
    set_faults("[{\"method\":\"DELETE\",\"path\":\"/v1/var/medic/never\",\"status\":404,"
               "\"body\":\"variable not found\"}]");
    assert_int_equal(nomad_var_delete(client, NULL, "medic/never", -1, err, sizeof(err)), VAR_NOT_FOUND);
    assert_string_equal(err, "");
    assert_int_equal(count_requests("DELETE", "/v1/var/medic/never"), 2);
    nomad_client_free(client);
}

/* ---- tests: list ---- */

static void list_prefix_across_pages(void **state)
{
    struct nomad_client *client = new_client();
    cJSON *items = json("{\"k\":\"v\"}");
    struct nomad_var var;
    char path[64];
    char err[512];
    char **paths = NULL;
    size_t n = 0;
    cJSON *request;

    (void)state;
    for (int i = 0; i < LIST_COUNT; i++) {
        snprintf(path, sizeof(path), "medic/list/%03d", i);
        assert_int_equal(nomad_var_write(client, NULL, path, items, -1, &var, err, sizeof(err)), VAR_OK);
        nomad_var_free(&var);
    }
    assert_int_equal(nomad_var_write(client, NULL, "medic/lisp", items, -1, &var, err, sizeof(err)), VAR_OK);
    nomad_var_free(&var);
    assert_int_equal(nomad_var_write(client, NULL, "other/list/000", items, -1, &var, err, sizeof(err)), VAR_OK);
    nomad_var_free(&var);
    assert_int_equal(nomad_var_write(client, "prod", "medic/list/prod", items, -1, &var, err, sizeof(err)), VAR_OK);
    nomad_var_free(&var);
    free(control("DELETE", "/_test/requests", NULL));

    assert_int_equal(nomad_var_list(client, NULL, "medic/list/", &paths, &n, err, sizeof(err)), VAR_OK);
    assert_int_equal(n, LIST_COUNT);
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "medic/list/%03zu", i);
        assert_string_equal(paths[i], path);
    }
    nomad_var_paths_free(paths, n);

    /* 230 paths at 100 per page: three requests, the later ones with the next token. */
    assert_int_equal(count_requests("GET", "/v1/vars"), 3);
    request = nth_request("GET", "/v1/vars", 0);
    assert_string_equal(request_param(request, "prefix"), "medic/list/");
    assert_string_equal(request_param(request, "namespace"), "default");
    assert_string_equal(request_param(request, "per_page"), "100");
    assert_false(request_has_param(request, "next_token"));
    cJSON_Delete(request);
    request = nth_request("GET", "/v1/vars", 2);
    assert_non_null(request_param(request, "next_token"));
    cJSON_Delete(request);

    /* "*" lists every namespace; a prefix that matches nothing gives an empty list. */
    assert_int_equal(nomad_var_list(client, "*", "medic/list/", &paths, &n, err, sizeof(err)), VAR_OK);
    assert_int_equal(n, LIST_COUNT + 1);
    nomad_var_paths_free(paths, n);
    assert_int_equal(nomad_var_list(client, "prod", NULL, &paths, &n, err, sizeof(err)), VAR_OK);
    assert_int_equal(n, 1);
    assert_string_equal(paths[0], "medic/list/prod");
    nomad_var_paths_free(paths, n);
    assert_int_equal(nomad_var_list(client, NULL, "medic/none/", &paths, &n, err, sizeof(err)), VAR_OK);
    assert_int_equal(n, 0);
    assert_null(paths);
    cJSON_Delete(items);
    nomad_client_free(client);
}

/* ---- tests: blocking read ---- */

struct delayed_write {
    long delay_ms;
    enum nomad_var_result result;
};

/* Write medic/watch from a second client after delay_ms; cmocka asserts stay on the main thread. */
static void *write_later(void *arg)
{
    struct delayed_write *job = arg;
    struct nomad_conn_config cfg;
    struct nomad_client *client;
    struct nomad_var var;
    cJSON *items = cJSON_Parse("{\"state\":\"changed\"}");
    char err[512];

    nomad_conn_config_defaults(&cfg);
    free(cfg.address);
    cfg.address = strdup(base_url);
    cfg.token = strdup(TOKEN);
    client = nomad_client_new(&cfg, err, sizeof(err));
    nomad_conn_config_free(&cfg);
    job->result = VAR_ERR;
    if (client != NULL && items != NULL) {
        sleep_ms(job->delay_ms);
        job->result = nomad_var_write(client, NULL, "medic/watch", items, -1, &var, err, sizeof(err));
        nomad_var_free(&var);
    }
    cJSON_Delete(items);
    nomad_client_free(client);
    return NULL;
}

static void blocking_read_woken_by_write(void **state)
{
    struct nomad_client *client = new_client();
    struct delayed_write job = {.delay_ms = 500, .result = VAR_ERR};
    struct nomad_var before;
    struct nomad_var after;
    pthread_t writer;
    cJSON *request;
    char err[512];
    char index_text[32];
    double start;
    double elapsed;

    (void)state;
    create_var(client, "medic/watch", "{\"state\":\"initial\"}");
    assert_int_equal(nomad_var_read(client, NULL, "medic/watch", 0, NULL, &before, err, sizeof(err)), VAR_OK);
    assert_true(before.query_index > 0);

    assert_int_equal(pthread_create(&writer, NULL, write_later, &job), 0);
    start = now_s();
    assert_int_equal(nomad_var_read(client, NULL, "medic/watch", before.query_index, "20s", &after, err,
                                    sizeof(err)), VAR_OK);
    elapsed = now_s() - start;
    assert_int_equal(pthread_join(writer, NULL), 0);
    assert_int_equal(job.result, VAR_OK);

    /* Woken by the write, well before the 20 s wait. */
    assert_true(elapsed >= 0.4);
    assert_true(elapsed < 10.0);
    assert_true(after.modify_index > before.modify_index);
    assert_true(after.query_index > before.query_index);
    assert_items_equal(after.items, "{\"state\":\"changed\"}");

    request = nth_request("GET", "/v1/var/medic/watch", 1);
    snprintf(index_text, sizeof(index_text), "%llu", (unsigned long long)before.query_index);
    assert_string_equal(request_param(request, "index"), index_text);
    assert_string_equal(request_param(request, "wait"), "20s");
    cJSON_Delete(request);
    nomad_var_free(&before);
    nomad_var_free(&after);
    nomad_client_free(client);
}

static void blocking_read_wait_expires(void **state)
{
    struct nomad_client *client = new_client();
    struct nomad_var before;
    struct nomad_var after;
    char err[512];
    double start;
    double elapsed;

    (void)state;
    create_var(client, "medic/quiet", "{\"state\":\"initial\"}");
    assert_int_equal(nomad_var_read(client, NULL, "medic/quiet", 0, NULL, &before, err, sizeof(err)), VAR_OK);
    start = now_s();
    assert_int_equal(nomad_var_read(client, NULL, "medic/quiet", before.query_index, "1s", &after, err,
                                    sizeof(err)), VAR_OK);
    elapsed = now_s() - start;
    /* Nothing changed: the server held the query for the wait (plus up to 1/16 jitter). */
    assert_true(elapsed >= 0.9);
    assert_true(elapsed < 5.0);
    assert_int_equal(after.modify_index, before.modify_index);
    nomad_var_free(&before);
    nomad_var_free(&after);
    nomad_client_free(client);
}

/* ---- tests: locks ---- */

static void lock_acquire_and_conflict(void **state)
{
    struct nomad_client *client = new_client();
    cJSON *items = json("{\"owner\":\"medic-1\"}");
    struct nomad_var lock;
    struct nomad_var other;
    struct nomad_var var;
    enum nomad_var_result rc;
    cJSON *request;
    cJSON *body;
    char err[512];

    (void)state;
    rc = nomad_var_lock_acquire(client, "prod", "medic/leader", 10, 1, items, &lock, err, sizeof(err));
    if (rc != VAR_OK)
        fprintf(stderr, "lock acquire: %s\n", err);
    assert_int_equal(rc, VAR_OK);
    assert_non_null(lock.lock_id);
    assert_string_equal(lock.path, "medic/leader");
    assert_string_equal(err, "");

    request = nth_request("PUT", "/v1/var/medic/leader", 0);
    assert_true(request_has_param(request, "lock-acquire"));
    assert_false(request_has_param(request, "cas"));
    assert_string_equal(request_param(request, "namespace"), "prod");
    body = request_body(request);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(body, "Namespace")), "prod");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(body, "Lock"), "TTL")), "10s");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(body, "Lock"), "LockDelay")),
                        "1s");
    assert_true(cJSON_Compare(cJSON_GetObjectItem(body, "Items"), items, 1));
    cJSON_Delete(body);
    cJSON_Delete(request);

    /* The lock variable holds the items given at acquisition. */
    assert_int_equal(nomad_var_read(client, "prod", "medic/leader", 0, NULL, &var, err, sizeof(err)), VAR_OK);
    assert_items_equal(var.items, "{\"owner\":\"medic-1\"}");
    nomad_var_free(&var);

    /* A second holder is turned away while the first one holds the lock. */
    assert_int_equal(nomad_var_lock_acquire(client, "prod", "medic/leader", 10, 1, NULL, &other, err, sizeof(err)),
                     VAR_CONFLICT);
    assert_null(other.lock_id);
    assert_contains(err, "lock on variable \"medic/leader\" in namespace \"prod\" is held by another holder");
    nomad_var_free(&other);

    /* A lock without items is accepted too; the body then has no Items. */
    assert_int_equal(nomad_var_lock_acquire(client, NULL, "medic/bare", 10, 1, NULL, &other, err, sizeof(err)),
                     VAR_OK);
    request = nth_request("PUT", "/v1/var/medic/bare", 0);
    body = request_body(request);
    assert_null(cJSON_GetObjectItem(body, "Items"));
    cJSON_Delete(body);
    cJSON_Delete(request);
    assert_int_equal(nomad_var_lock_release(client, NULL, "medic/bare", other.lock_id, err, sizeof(err)), VAR_OK);
    nomad_var_free(&other);

    /* Without the lock ID, neither a write nor a delete changes the held variable. */
    {
        cJSON *takeover = json("{\"owner\":\"intruder\"}");

        assert_int_equal(nomad_var_write(client, "prod", "medic/leader", takeover, -1, &var, err, sizeof(err)),
                         VAR_CONFLICT);
        assert_contains(err, "conflicted because a lock holds the variable");
        nomad_var_free(&var);
        cJSON_Delete(takeover);
    }
    assert_int_equal(nomad_var_delete(client, "prod", "medic/leader", -1, err, sizeof(err)), VAR_CONFLICT);
    assert_contains(err, "delete of variable \"medic/leader\" in namespace \"prod\" conflicted because a lock holds");

    assert_int_equal(nomad_var_lock_release(client, "prod", "medic/leader", lock.lock_id, err, sizeof(err)), VAR_OK);
    nomad_var_free(&lock);
    cJSON_Delete(items);
    nomad_client_free(client);
}

static void lock_renew_and_release(void **state)
{
    struct nomad_client *client = new_client();
    struct nomad_var lock;
    struct nomad_var var;
    cJSON *request;
    cJSON *body;
    char err[512];
    double start;

    (void)state;
    start = now_s();
    assert_int_equal(nomad_var_lock_acquire(client, NULL, "medic/renew", 1, 1, NULL, &lock, err, sizeof(err)),
                     VAR_OK);
    assert_non_null(lock.lock_id);

    /*
     * Nomad expires a lock between TTL and twice the TTL after its last
     * renewal. Renewing a 1 s lock every 0.7 s keeps it for 3.5 s.
     */
    for (int i = 1; i <= RENEW_COUNT; i++) {
        enum nomad_var_result rc;

        sleep_until(start, 0.7 * i);
        rc = nomad_var_lock_renew(client, NULL, "medic/renew", lock.lock_id, err, sizeof(err));
        if (rc != VAR_OK)
            fprintf(stderr, "renew %d: %s\n", i, err);
        assert_int_equal(rc, VAR_OK);
    }
    request = nth_request("PUT", "/v1/var/medic/renew", 1);
    assert_true(request_has_param(request, "lock-renew"));
    body = request_body(request);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(body, "Lock"), "ID")),
                        lock.lock_id);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(body, "Namespace")), "default");
    cJSON_Delete(body);
    cJSON_Delete(request);

    /* Someone else's ID neither renews nor releases the lock. */
    assert_int_equal(nomad_var_lock_renew(client, NULL, "medic/renew", "00000000-0000-0000-0000-000000000000", err,
                                          sizeof(err)), VAR_CONFLICT);
    assert_contains(err, "lock on variable \"medic/renew\" in namespace \"default\" was lost");
    assert_int_equal(nomad_var_lock_release(client, NULL, "medic/renew", "00000000-0000-0000-0000-000000000000",
                                            err, sizeof(err)), VAR_CONFLICT);
    assert_contains(err, "is not held with this lock ID");

    assert_int_equal(nomad_var_lock_release(client, NULL, "medic/renew", lock.lock_id, err, sizeof(err)), VAR_OK);
    assert_string_equal(err, "");
    request = nth_request("PUT", "/v1/var/medic/renew", RENEW_COUNT + 3);
    assert_true(request_has_param(request, "lock-release"));
    cJSON_Delete(request);

    /* Released: the ID is spent (Nomad returns 409 and 500 here), and the variable stays without a lock. */
    assert_int_equal(nomad_var_lock_renew(client, NULL, "medic/renew", lock.lock_id, err, sizeof(err)), VAR_CONFLICT);
    assert_int_equal(nomad_var_lock_release(client, NULL, "medic/renew", lock.lock_id, err, sizeof(err)),
                     VAR_CONFLICT);
    assert_int_equal(nomad_var_read(client, NULL, "medic/renew", 0, NULL, &var, err, sizeof(err)), VAR_OK);
    assert_null(var.lock_id);
    nomad_var_free(&var);
    nomad_var_free(&lock);
    nomad_client_free(client);
}

static void lock_expires_then_delay(void **state)
{
    struct nomad_client *client = new_client();
    struct nomad_var first;
    struct nomad_var second;
    enum nomad_var_result rc;
    char err[512];
    double start;

    (void)state;
    start = now_s();
    assert_int_equal(nomad_var_lock_acquire(client, NULL, "medic/expire", 1, 2, NULL, &first, err, sizeof(err)),
                     VAR_OK);
    assert_non_null(first.lock_id);

    /*
     * TTL 1 s without renewal: lost at the latest 2 s after acquisition
     * (twice the TTL), and the 2 s lock delay runs until at most 4 s.
     */
    sleep_until(start, 2.6);
    assert_int_equal(nomad_var_lock_renew(client, NULL, "medic/expire", first.lock_id, err, sizeof(err)),
                     VAR_CONFLICT);
    assert_contains(err, "was lost");
    assert_int_equal(nomad_var_lock_acquire(client, NULL, "medic/expire", 1, 2, NULL, &second, err, sizeof(err)),
                     VAR_CONFLICT);
    assert_contains(err, "lock delay");
    nomad_var_free(&second);

    sleep_until(start, 4.6);
    rc = nomad_var_lock_acquire(client, NULL, "medic/expire", 1, 2, NULL, &second, err, sizeof(err));
    if (rc != VAR_OK)
        fprintf(stderr, "reacquire: %s\n", err);
    assert_int_equal(rc, VAR_OK);
    assert_non_null(second.lock_id);
    assert_string_not_equal(second.lock_id, first.lock_id);
    assert_int_equal(nomad_var_lock_release(client, NULL, "medic/expire", second.lock_id, err, sizeof(err)), VAR_OK);
    nomad_var_free(&first);
    nomad_var_free(&second);
    nomad_client_free(client);
}

static void lock_on_missing_variable(void **state)
{
    struct nomad_client *client = new_client();
    char err[512];

    (void)state;
    assert_int_equal(nomad_var_lock_renew(client, NULL, "medic/nolock", "9b1c0e52-0000-4000-8000-000000000001",
                                          err, sizeof(err)), VAR_NOT_FOUND);
    assert_string_equal(err, "");
    assert_int_equal(nomad_var_lock_release(client, NULL, "medic/nolock", "9b1c0e52-0000-4000-8000-000000000001",
                                            err, sizeof(err)), VAR_NOT_FOUND);
    assert_string_equal(err, "");

    /* A variable that never had a lock: there is nothing to renew or release. */
    create_var(client, "medic/nolock", "{\"k\":\"v\"}");
    assert_int_equal(nomad_var_lock_renew(client, NULL, "medic/nolock", "9b1c0e52-0000-4000-8000-000000000001",
                                          err, sizeof(err)), VAR_CONFLICT);
    assert_contains(err, "was lost");
    assert_int_equal(nomad_var_lock_release(client, NULL, "medic/nolock", "9b1c0e52-0000-4000-8000-000000000001",
                                            err, sizeof(err)), VAR_CONFLICT);
    assert_contains(err, "is not held with this lock ID");
    nomad_client_free(client);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_path_cases),
        cmocka_unit_test(result_names_distinct),
        cmocka_unit_test_setup(invalid_path_rejected_before_request, test_setup),
        cmocka_unit_test_setup(invalid_namespace_rejected, test_setup),
        cmocka_unit_test_setup(items_not_strings_rejected, test_setup),
        cmocka_unit_test_setup(invalid_cas_and_ttl_rejected, test_setup),
        cmocka_unit_test_setup(items_size_limit, test_setup),
        cmocka_unit_test_setup(read_missing_is_not_found, test_setup),
        cmocka_unit_test_setup(route_404_is_error, test_setup),
        cmocka_unit_test_setup(write_create_only_conflicts, test_setup),
        cmocka_unit_test_setup(cas_update_and_stale_conflict, test_setup),
        cmocka_unit_test_setup(cas_on_missing_conflicts, test_setup),
        cmocka_unit_test_setup(conflict_text_body, test_setup),
        cmocka_unit_test_setup(write_not_retried_read_retried, test_setup),
        cmocka_unit_test_setup(delete_with_cas, test_setup),
        cmocka_unit_test_setup(delete_missing_status_mapped, test_setup),
        cmocka_unit_test_setup(list_prefix_across_pages, test_setup),
        cmocka_unit_test_setup(blocking_read_woken_by_write, test_setup),
        cmocka_unit_test_setup(blocking_read_wait_expires, test_setup),
        cmocka_unit_test_setup(lock_acquire_and_conflict, test_setup),
        cmocka_unit_test_setup(lock_renew_and_release, test_setup),
        cmocka_unit_test_setup(lock_expires_then_delay, test_setup),
        cmocka_unit_test_setup(lock_on_missing_variable, test_setup),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
