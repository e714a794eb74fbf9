/*
 * Tests for the metrics registry (controller/metrics.c): exposition text,
 * escaping, name and label rules, thread safety, the Nomad endpoint
 * templates and the request observer, which is driven through a real Nomad
 * client talking to a libmicrohttpd server on 127.0.0.1. The full set of
 * nomad-medic's metrics is checked with Prometheus' own `promtool check
 * metrics`.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <microhttpd.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../controller/metrics.h"
#include "../../controller/nomad.h"

#ifndef NM_PROMTOOL
#define NM_PROMTOOL "promtool"
#endif

/* Print the haystack on failure, so the log shows the text that was wrong. */
#define assert_contains(haystack, needle)                                                   \
    do {                                                                                    \
        if (strstr((haystack), (needle)) == NULL)                                           \
            print_error("\"%s\"\n  does not contain \"%s\"\n", (haystack), (needle));       \
        assert_non_null(strstr((haystack), (needle)));                                      \
    } while (0)

#define assert_not_contains(haystack, needle)                                               \
    do {                                                                                    \
        if (strstr((haystack), (needle)) != NULL)                                           \
            print_error("\"%s\"\n  contains \"%s\"\n", (haystack), (needle));               \
        assert_null(strstr((haystack), (needle)));                                          \
    } while (0)

#define assert_string_case(actual, expected, ctx)                                           \
    do {                                                                                    \
        const char *a_ = (actual), *e_ = (expected);                                        \
        if (strcmp(a_, e_) != 0)                                                            \
            print_error("%s: got \"%s\", expected \"%s\"\n", (ctx), a_, e_);               \
        assert_string_equal(a_, e_);                                                        \
    } while (0)

#define assert_int_case(actual, expected, ctx)                                              \
    do {                                                                                    \
        long long a_ = (actual), e_ = (expected);                                           \
        if (a_ != e_)                                                                       \
            print_error("%s: %s is %lld, expected %lld\n", (ctx), #actual, a_, e_);         \
        assert_int_equal(a_, e_);                                                           \
    } while (0)

/* Exact comparison of a sample's value, printing both on failure. */
#define assert_value(actual, expected)                                                      \
    do {                                                                                    \
        double a_ = (actual), e_ = (expected);                                              \
        if (!(a_ == e_))                                                                    \
            print_error("%s is %g, expected %g\n", #actual, a_, e_);                       \
        assert_true(a_ == e_);                                                              \
    } while (0)

/* Render m; the caller frees the text. */
static char *render(struct metrics *m)
{
    char *text = NULL;
    size_t len = 0;

    assert_int_equal(metrics_render(m, &text, &len), METRICS_OK);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

/* The value of the sample line that starts with `series ` in text, or NAN when absent. */
static double sample_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    const char *line = text;

    while (line != NULL && *line != '\0') {
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return NAN;
}

/* ---- exposition text ---- */

static void test_render_counter_and_gauge(void **state)
{
    struct metrics *m = metrics_new();
    const char *ok[] = {"scope", "cluster", "result", "complete", NULL};
    const char *failed[] = {"scope", "cluster", "result", "incomplete", NULL};
    char *text;

    (void)state;
    assert_non_null(m);
    assert_int_equal(metrics_counter_add(m, "nomad_medic_passes_total", "Passes run.", ok, 1), METRICS_OK);
    assert_int_equal(metrics_counter_add(m, "nomad_medic_passes_total", "ignored", ok, 2), METRICS_OK);
    assert_int_equal(metrics_counter_add(m, "nomad_medic_passes_total", NULL, failed, 1), METRICS_OK);
    assert_int_equal(metrics_gauge_set(m, "nomad_medic_breaker_open", "1 while the breaker is open.", NULL, 1),
                     METRICS_OK);
    assert_int_equal(metrics_gauge_set(m, "nomad_medic_breaker_open", NULL, NULL, 0), METRICS_OK);
    text = render(m);
    assert_string_equal(text,
                        "# HELP nomad_medic_breaker_open 1 while the breaker is open.\n"
                        "# TYPE nomad_medic_breaker_open gauge\n"
                        "nomad_medic_breaker_open 0\n"
                        "# HELP nomad_medic_passes_total Passes run.\n"
                        "# TYPE nomad_medic_passes_total counter\n"
                        "nomad_medic_passes_total{result=\"complete\",scope=\"cluster\"} 3\n"
                        "nomad_medic_passes_total{result=\"incomplete\",scope=\"cluster\"} 1\n");
    free(text);
    metrics_free(m);
}

static void test_render_empty_registry(void **state)
{
    struct metrics *m = metrics_new();
    char *text;

    (void)state;
    text = render(m);
    assert_string_equal(text, "");
    free(text);
    metrics_free(m);
}

static void test_render_histogram(void **state)
{
    static const double buckets[] = {0.1, 1, 10};
    const char *labels[] = {"endpoint", "/v1/nodes", NULL};
    struct metrics *m = metrics_new();
    char *text;

    (void)state;
    assert_int_equal(metrics_histogram_observe(m, "req_seconds", "Request time.", buckets, 3, labels, 0.05),
                     METRICS_OK);
    assert_int_equal(metrics_histogram_observe(m, "req_seconds", NULL, buckets, 3, labels, 1), METRICS_OK);
    assert_int_equal(metrics_histogram_observe(m, "req_seconds", NULL, buckets, 3, labels, 5), METRICS_OK);
    assert_int_equal(metrics_histogram_observe(m, "req_seconds", NULL, buckets, 3, labels, 99), METRICS_OK);
    text = render(m);
    /* le is the upper bound, inclusive: 1 lands in the 1 bucket. */
    assert_string_equal(text,
                        "# HELP req_seconds Request time.\n"
                        "# TYPE req_seconds histogram\n"
                        "req_seconds_bucket{endpoint=\"/v1/nodes\",le=\"0.1\"} 1\n"
                        "req_seconds_bucket{endpoint=\"/v1/nodes\",le=\"1\"} 2\n"
                        "req_seconds_bucket{endpoint=\"/v1/nodes\",le=\"10\"} 3\n"
                        "req_seconds_bucket{endpoint=\"/v1/nodes\",le=\"+Inf\"} 4\n"
                        "req_seconds_sum{endpoint=\"/v1/nodes\"} 105.05\n"
                        "req_seconds_count{endpoint=\"/v1/nodes\"} 4\n");
    free(text);
    metrics_free(m);
}

static void test_histogram_without_labels_or_buckets(void **state)
{
    struct metrics *m = metrics_new();
    char *text;

    (void)state;
    assert_int_equal(metrics_histogram_observe(m, "h", "Only +Inf.", NULL, 0, NULL, 2), METRICS_OK);
    text = render(m);
    assert_string_equal(text,
                        "# HELP h Only +Inf.\n"
                        "# TYPE h histogram\n"
                        "h_bucket{le=\"+Inf\"} 1\n"
                        "h_sum 2\n"
                        "h_count 1\n");
    free(text);
    metrics_free(m);
}

static void test_value_formatting(void **state)
{
    static const struct {
        double value;
        const char *expected;
    } cases[] = {
        {0, "g 0"},
        {3, "g 3"},
        {0.1, "g 0.1"},
        {-2.5, "g -2.5"},
        {1e-9, "g 1e-09"},
        {1700000000, "g 1700000000"},
        {1e21, "g 1e+21"},
        {1.0 / 3.0, "g 0.3333333333333333"},
        {INFINITY, "g +Inf"},
        {-INFINITY, "g -Inf"},
        {NAN, "g NaN"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct metrics *m = metrics_new();
        char *text;

        assert_int_equal(metrics_gauge_set(m, "g", "A gauge.", NULL, cases[i].value), METRICS_OK);
        text = render(m);
        assert_contains(text, cases[i].expected);
        free(text);
        metrics_free(m);
    }
}

static void test_label_order_is_canonical(void **state)
{
    struct metrics *m = metrics_new();
    const char *ab[] = {"a", "1", "b", "2", NULL};
    const char *ba[] = {"b", "2", "a", "1", NULL};
    char *text;

    (void)state;
    assert_int_equal(metrics_counter_add(m, "c_total", "C.", ab, 1), METRICS_OK);
    assert_int_equal(metrics_counter_add(m, "c_total", "C.", ba, 1), METRICS_OK);
    text = render(m);
    assert_contains(text, "c_total{a=\"1\",b=\"2\"} 2\n");
    assert_not_contains(text, "b=\"2\",a=");
    free(text);
    metrics_free(m);
}

static void test_output_order_is_stable(void **state)
{
    struct metrics *first = metrics_new();
    struct metrics *second = metrics_new();
    const char *x[] = {"rule", "x", NULL};
    const char *y[] = {"rule", "y", NULL};
    char *a, *b;

    (void)state;
    metrics_gauge_set(first, "zeta", "Z.", NULL, 1);
    metrics_gauge_set(first, "alpha", "A.", y, 2);
    metrics_gauge_set(first, "alpha", "A.", x, 3);
    metrics_gauge_set(second, "alpha", "A.", x, 3);
    metrics_gauge_set(second, "alpha", "A.", y, 2);
    metrics_gauge_set(second, "zeta", "Z.", NULL, 1);
    a = render(first);
    b = render(second);
    assert_string_equal(a, b);
    assert_true(strstr(a, "alpha{rule=\"x\"}") < strstr(a, "alpha{rule=\"y\"}"));
    assert_true(strstr(a, "# HELP alpha") < strstr(a, "# HELP zeta"));
    free(a);
    free(b);
    metrics_free(first);
    metrics_free(second);
}

/* ---- escaping ---- */

static void test_label_values_escaped(void **state)
{
    struct metrics *m = metrics_new();
    const char *labels[] = {"path", "C:\\dir \"q\"\nnext", "plain", "ünïcode", NULL};
    char *text;

    (void)state;
    assert_int_equal(metrics_gauge_set(m, "g", "G.", labels, 1), METRICS_OK);
    text = render(m);
    assert_contains(text, "g{path=\"C:\\\\dir \\\"q\\\"\\nnext\",plain=\"ünïcode\"} 1\n");
    free(text);
    metrics_free(m);
}

static void test_help_escaped(void **state)
{
    struct metrics *m = metrics_new();
    char *text;

    (void)state;
    assert_int_equal(metrics_gauge_set(m, "g", "back\\slash \"quoted\"\nsecond line", NULL, 1), METRICS_OK);
    text = render(m);
    /* HELP escapes only backslash and line feed; quotes stay as they are. */
    assert_contains(text, "# HELP g back\\\\slash \"quoted\"\\nsecond line\n");
    free(text);
    metrics_free(m);
}

/* ---- validation ---- */

static void test_metric_name_rules(void **state)
{
    static const struct {
        const char *name;
        int valid;
    } cases[] = {
        {"nomad_medic_passes_total", 1},
        {"_leading_underscore", 1},
        {"recording:rule:name", 1},
        {"CamelCase9", 1},
        {"", 0},
        {"9starts_with_digit", 0},
        {"has-dash", 0},
        {"has space", 0},
        {"dotted.name", 0},
        {"ünicode", 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_case(metrics_valid_metric_name(cases[i].name), cases[i].valid, cases[i].name);
    assert_int_equal(metrics_valid_metric_name(NULL), 0);
}

static void test_label_name_rules(void **state)
{
    static const struct {
        const char *name;
        int valid;
    } cases[] = {
        {"rule", 1},
        {"_x", 1},
        {"a1", 1},
        {"__reserved", 0},
        {"", 0},
        {"1a", 0},
        {"with:colon", 0},
        {"with-dash", 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_case(metrics_valid_label_name(cases[i].name), cases[i].valid, cases[i].name);
}

static void test_invalid_updates_rejected(void **state)
{
    static const double buckets[] = {1, 2};
    static const double bad_order[] = {2, 1};
    static const double with_inf[] = {1, INFINITY};
    const char *dash_label[] = {"bad-name", "v", NULL};
    const char *reserved[] = {"__name__", "v", NULL};
    const char *le[] = {"le", "1", NULL};
    const char *twice[] = {"a", "1", "a", "2", NULL};
    const char *odd[] = {"a", NULL};
    const char *bad_utf8[] = {"a", "\xc3\x28", NULL};
    const char *rule[] = {"rule", "x", NULL};
    const char *other[] = {"guard", "x", NULL};
    struct metrics *m = metrics_new();
    char before_text[4096];
    char *text;
    char err[256];

    (void)state;
    assert_int_equal(metrics_counter_add(m, "ok_total", "OK.", rule, 1), METRICS_OK);
    assert_int_equal(metrics_histogram_observe(m, "lat", "L.", buckets, 2, NULL, 1), METRICS_OK);
    assert_int_equal(metrics_gauge_set(m, "q_count", "Q.", NULL, 1), METRICS_OK);
    text = render(m);
    snprintf(before_text, sizeof(before_text), "%s", text);
    free(text);

    assert_int_equal(metrics_counter_add(m, "bad-name", "X.", NULL, 1), METRICS_INVALID);
    assert_contains(metrics_last_error(m, err, sizeof(err)), "invalid metric name \"bad-name\"");
    assert_int_equal(metrics_counter_add(m, NULL, "X.", NULL, 1), METRICS_INVALID);
    assert_int_equal(metrics_counter_add(m, "x_total", "X.", dash_label, 1), METRICS_INVALID);
    assert_contains(metrics_last_error(m, err, sizeof(err)), "invalid label name \"bad-name\"");
    assert_int_equal(metrics_counter_add(m, "x_total", "X.", reserved, 1), METRICS_INVALID);
    assert_int_equal(metrics_histogram_observe(m, "h2", "H.", buckets, 2, le, 1), METRICS_INVALID);
    assert_int_equal(metrics_counter_add(m, "x_total", "X.", twice, 1), METRICS_INVALID);
    assert_contains(metrics_last_error(m, err, sizeof(err)), "appears twice");
    assert_int_equal(metrics_counter_add(m, "x_total", "X.", odd, 1), METRICS_INVALID);
    assert_contains(metrics_last_error(m, err, sizeof(err)), "has no value");
    assert_int_equal(metrics_counter_add(m, "x_total", "X.", bad_utf8, 1), METRICS_INVALID);
    assert_contains(metrics_last_error(m, err, sizeof(err)), "not valid UTF-8");
    assert_int_equal(metrics_gauge_set(m, "g", "\xff help", NULL, 1), METRICS_INVALID);

    /* Values. */
    assert_int_equal(metrics_counter_add(m, "ok_total", "OK.", rule, -1), METRICS_INVALID);
    assert_contains(metrics_last_error(m, err, sizeof(err)), "can only grow");
    assert_int_equal(metrics_counter_add(m, "ok_total", "OK.", rule, NAN), METRICS_INVALID);
    assert_int_equal(metrics_counter_add(m, "ok_total", "OK.", rule, INFINITY), METRICS_INVALID);
    assert_int_equal(metrics_histogram_observe(m, "lat", "L.", buckets, 2, NULL, NAN), METRICS_INVALID);

    /* A family keeps the type, labels and buckets of its first update. */
    assert_int_equal(metrics_gauge_set(m, "ok_total", "OK.", rule, 1), METRICS_INVALID);
    assert_contains(metrics_last_error(m, err, sizeof(err)), "ok_total is a counter, not a gauge");
    assert_int_equal(metrics_counter_add(m, "ok_total", "OK.", other, 1), METRICS_INVALID);
    assert_int_equal(metrics_counter_add(m, "ok_total", "OK.", NULL, 1), METRICS_INVALID);
    assert_int_equal(metrics_histogram_observe(m, "lat", "L.", bad_order, 2, NULL, 1), METRICS_INVALID);
    assert_contains(metrics_last_error(m, err, sizeof(err)), "bucket bounds differ");
    assert_int_equal(metrics_histogram_observe(m, "lat", "L.", buckets, 1, NULL, 1), METRICS_INVALID);

    /* Bucket lists of a new histogram. */
    assert_int_equal(metrics_histogram_observe(m, "h3", "H.", bad_order, 2, NULL, 1), METRICS_INVALID);
    assert_contains(metrics_last_error(m, err, sizeof(err)), "increase strictly");
    assert_int_equal(metrics_histogram_observe(m, "h4", "H.", with_inf, 2, NULL, 1), METRICS_INVALID);
    assert_contains(metrics_last_error(m, err, sizeof(err)), "not finite");
    assert_int_equal(metrics_histogram_observe(m, "h5", "H.", NULL, 2, NULL, 1), METRICS_INVALID);

    /* A histogram's _bucket, _sum and _count names belong to it. */
    assert_int_equal(metrics_gauge_set(m, "lat_count", "C.", NULL, 1), METRICS_INVALID);
    assert_contains(metrics_last_error(m, err, sizeof(err)), "collides with the series of histogram lat");
    assert_int_equal(metrics_gauge_set(m, "lat_sum", "C.", NULL, 1), METRICS_INVALID);
    assert_int_equal(metrics_counter_add(m, "lat_bucket", "C.", NULL, 1), METRICS_INVALID);
    /* ... and a new histogram cannot claim an existing family's name as one of its series. */
    assert_int_equal(metrics_histogram_observe(m, "q", "Q.", buckets, 2, NULL, 1), METRICS_INVALID);
    assert_contains(metrics_last_error(m, err, sizeof(err)), "would collide with gauge q_count");

    /* None of the rejected updates changed what is rendered. */
    text = render(m);
    assert_string_equal(text, before_text);
    free(text);
    metrics_free(m);
}

/* ---- thread safety ---- */

#define SMOKE_THREADS 8
#define SMOKE_ROUNDS 5000

static void *hammer(void *arg)
{
    struct metrics *m = arg;
    const char *labels[] = {"kind", "service_delete", "state", "succeeded", NULL};

    for (int i = 0; i < SMOKE_ROUNDS; i++) {
        char rule[16];
        const char *rule_labels[] = {"rule", rule, NULL};

        metrics_counter_add(m, "nomad_medic_actions_total", "Actions.", labels, 1);
        metrics_histogram_observe(m, "nomad_medic_pass_duration_seconds", "Pass time.", metrics_duration_buckets,
                                  metrics_duration_buckets_count, NULL, (double)(i % 400));
        snprintf(rule, sizeof(rule), "r%d", i % 20);
        metrics_gauge_set(m, "nomad_medic_findings", "Findings.", rule_labels, i);
    }
    return NULL;
}

static void *render_loop(void *arg)
{
    struct metrics *m = arg;

    for (int i = 0; i < 200; i++) {
        char *text = NULL;
        size_t len = 0;

        if (metrics_render(m, &text, &len) == METRICS_OK)
            free(text);
    }
    return NULL;
}

static void test_concurrent_updates_smoke(void **state)
{
    struct metrics *m = metrics_new();
    pthread_t writers[SMOKE_THREADS], reader;
    char *text;

    (void)state;
    assert_int_equal(pthread_create(&reader, NULL, render_loop, m), 0);
    for (int i = 0; i < SMOKE_THREADS; i++)
        assert_int_equal(pthread_create(&writers[i], NULL, hammer, m), 0);
    for (int i = 0; i < SMOKE_THREADS; i++)
        assert_int_equal(pthread_join(writers[i], NULL), 0);
    assert_int_equal(pthread_join(reader, NULL), 0);

    text = render(m);
    assert_value(sample_value(text, "nomad_medic_actions_total{kind=\"service_delete\",state=\"succeeded\"}"),
                        SMOKE_THREADS * SMOKE_ROUNDS);
    assert_value(sample_value(text, "nomad_medic_pass_duration_seconds_count"),
                        SMOKE_THREADS * SMOKE_ROUNDS);
    assert_value(sample_value(text, "nomad_medic_pass_duration_seconds_bucket{le=\"+Inf\"}"),
                        SMOKE_THREADS * SMOKE_ROUNDS);
    assert_false(isnan(sample_value(text, "nomad_medic_findings{rule=\"r19\"}")));
    free(text);
    metrics_free(m);
}

/* ---- Nomad endpoints ---- */

static void test_endpoint_templates(void **state)
{
    static const struct {
        const char *path;
        const char *endpoint;
    } cases[] = {
        {"/v1/allocation/5f1c0b5e-8f4e-4a57-b0c4-3a6e8d7c9b21", "/v1/allocation/:id"},
        {"/v1/allocation/5f1c0b5e-8f4e-4a57-b0c4-3a6e8d7c9b21?namespace=web", "/v1/allocation/:id"},
        {"/v1/allocation/5f1c0b5e/services", "/v1/allocation/:id/services"},
        {"/v1/service/web", "/v1/service/:name"},
        {"/v1/service/web?namespace=prod&per_page=500&next_token=prod.abc", "/v1/service/:name"},
        {"/v1/service/web/_nomad-task-5f1c0b5e-web-http?namespace=default", "/v1/service/:name/:id"},
        {"/v1/service/my%2Fsvc/_nomad-task-x", "/v1/service/:name/:id"},
        {"/v1/node/8a2b1c3d-0000-4000-8000-000000000001", "/v1/node/:id"},
        {"/v1/node/8a2b1c3d-0000-4000-8000-000000000001/allocations", "/v1/node/:id/allocations"},
        {"/v1/node/8a2b1c3d/eligibility", "/v1/node/:id/eligibility"},
        {"/v1/var/nomad-medic/lock", "/v1/var/:path"},
        {"/v1/var/nomad-medic/nodes/8a2b1c3d/heartbeat?namespace=default&lock-acquire", "/v1/var/:path"},
        {"/v1/status/leader", "/v1/status/leader"},
        {"/v1/status/leader?stale", "/v1/status/leader"},
        {"/v1/agent/self", "/v1/agent/self"},
        {"/v1/system/gc", "/v1/system/gc"},
        {"/v1/operator/autopilot/health", "/v1/operator/autopilot/health"},
        {"/v1/allocations?namespace=*&task_states=false&per_page=500", "/v1/allocations"},
        {"/v1/nodes", "/v1/nodes"},
        {"/v1/services?namespace=*", "/v1/services"},
        {"/v1/evaluations?namespace=*", "/v1/evaluations"},
        {"/v1/job/example", "/v1/job/:id"},
        /* Unknown paths keep only a resource word; an ID never survives. */
        {"/v1/acl/token/0a1b2c3d-aaaa", "/v1/acl/..."},
        {"/v1/regions", "/v1/regions"},
        {"/v1/0a1b2c3d/x", "other"},
        {"/v1/allocation/", "/v1/allocation/..."},
        {"/v1/var/", "/v1/var/..."},
        {"/v2/anything", "other"},
        {"", "other"},
    };
    char out[96];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_string_case(metrics_nomad_endpoint(cases[i].path, out, sizeof(out)), cases[i].endpoint,
                           cases[i].path);
    assert_string_equal(metrics_nomad_endpoint(NULL, out, sizeof(out)), "other");
}

static void test_observer_status_labels(void **state)
{
    static const struct {
        long status;
        enum nomad_result result;
        const char *series;
    } cases[] = {
        {200, NOMAD_OK, "status=\"200\""},
        {404, NOMAD_ERR_STATUS, "status=\"404\""},
        {500, NOMAD_ERR_NO_LEADER, "status=\"500\""},
        {0, NOMAD_ERR_TIMEOUT, "status=\"timeout\""},
        {0, NOMAD_ERR_TRANSPORT, "status=\"transport_error\""},
        {200, NOMAD_ERR_TOO_LARGE, "status=\"too_large\""},
        {0, NOMAD_ERR_INTERNAL, "status=\"internal_error\""},
    };
    struct metrics *m = metrics_new();
    char *text;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        metrics_observe_nomad_request(m, "GET", "/v1/nodes", cases[i].status, cases[i].result, 0.01);
    metrics_observe_nomad_request(m, "PATCH", "/v1/nodes", 200, NOMAD_OK, 0.01);
    text = render(m);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_contains(text, cases[i].series);
    assert_contains(text, "nomad_medic_nomad_requests_total{endpoint=\"/v1/nodes\",method=\"other\",status=\"200\"} 1\n");
    assert_contains(text, "nomad_medic_nomad_request_duration_seconds_count{endpoint=\"/v1/nodes\"} 8\n");
    free(text);
    metrics_free(m);
}

/* ---- the observer on a real client ---- */

/* A Nomad stand-in: 500 for /v1/allocation/<id>, 200 "[]" for everything else. */
static enum MHD_Result fake_nomad(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    static const char ok[] = "[]";
    static const char boom[] = "internal failure";
    int fail = strncmp(url, "/v1/allocation/", 15) == 0;
    struct MHD_Response *resp;
    enum MHD_Result ret;

    (void)cls;
    (void)method;
    (void)version;
    (void)upload_data;
    if (*req_cls == NULL) {
        *req_cls = (void *)1;
        return MHD_YES;
    }
    *upload_data_size = 0;
    resp = MHD_create_response_from_buffer(fail ? strlen(boom) : strlen(ok), (void *)(fail ? boom : ok),
                                           MHD_RESPMEM_PERSISTENT);
    ret = MHD_queue_response(conn, fail ? 500 : 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void test_observer_counts_every_attempt(void **state)
{
    const char *const paths[] = {
        "/v1/service/web?namespace=default",
        "/v1/service/api?namespace=prod",
        "/v1/allocation/7d3e9c1a-1111-4222-8333-444455556666?namespace=prod",
    };
    struct nomad_response resps[3];
    struct nomad_conn_config cfg;
    struct nomad_response resp;
    struct nomad_client *client;
    struct MHD_Daemon *daemon;
    struct metrics *m = metrics_new();
    char address[64], err[256];
    const union MHD_DaemonInfo *info;
    char *text;

    (void)state;
    daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO, 0, NULL, NULL, fake_nomad, NULL,
                              MHD_OPTION_END);
    assert_non_null(daemon);
    info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    snprintf(address, sizeof(address), "http://127.0.0.1:%u", (unsigned)info->port);

    nomad_conn_config_defaults(&cfg);
    free(cfg.address);
    cfg.address = strdup(address);
    cfg.max_retries = 2;
    cfg.retry_base_ms = 1;
    client = nomad_client_new(&cfg, err, sizeof(err));
    assert_non_null(client);
    nomad_client_set_observer(client, metrics_observe_nomad_request, m);

    /* A failing GET is sent three times: the first try and two retries. */
    assert_int_equal(nomad_get(client, "/v1/allocation/0a1b2c3d-0000-4000-8000-00000000beef", &resp), -1);
    assert_int_equal(resp.attempts, 3);
    nomad_response_free(&resp);
    assert_int_equal(nomad_request(client, "DELETE", "/v1/service/web/_nomad-task-0a1b2c3d-web-http?namespace=default",
                                   NULL, &resp), 0);
    nomad_response_free(&resp);
    assert_int_equal(nomad_get_many(client, paths, 3, resps), 1);
    for (size_t i = 0; i < 3; i++)
        nomad_response_free(&resps[i]);

    text = render(m);
    assert_value(sample_value(text, "nomad_medic_nomad_requests_total{endpoint=\"/v1/allocation/:id\","
                                           "method=\"GET\",status=\"500\"}"),
                        6);
    assert_value(sample_value(text, "nomad_medic_nomad_requests_total{endpoint=\"/v1/service/:name\","
                                           "method=\"GET\",status=\"200\"}"),
                        2);
    assert_value(sample_value(text, "nomad_medic_nomad_requests_total{endpoint=\"/v1/service/:name/:id\","
                                           "method=\"DELETE\",status=\"200\"}"),
                        1);
    assert_value(sample_value(text, "nomad_medic_nomad_request_duration_seconds_count{endpoint="
                                           "\"/v1/allocation/:id\"}"),
                        6);
    /* No ID, name or query string reaches a label. */
    assert_not_contains(text, "0a1b2c3d");
    assert_not_contains(text, "7d3e9c1a");
    assert_not_contains(text, "namespace=");
    assert_not_contains(text, "\"/v1/service/web");
    free(text);

    nomad_client_free(client);
    nomad_conn_config_free(&cfg);
    MHD_stop_daemon(daemon);
    metrics_free(m);
}

/* ---- promtool ---- */

/*
 * Run `promtool check metrics` with text on its standard input. Returns its
 * exit status and copies its output (stdout and stderr) into out.
 */
static int promtool_check(const char *text, char *out, size_t outsz)
{
    char path[] = "/tmp/nm-metrics-XXXXXX";
    char log_path[sizeof(path) + 8];
    FILE *fp;
    size_t got;
    int fd, status = 0;
    pid_t pid;

    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    snprintf(log_path, sizeof(log_path), "%s.out", path);

    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int in = open(path, O_RDONLY);
        int log = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        if (in < 0 || log < 0)
            _exit(126);
        dup2(in, 0);
        dup2(log, 1);
        dup2(log, 2);
        execl(NM_PROMTOOL, NM_PROMTOOL, "check", "metrics", (char *)NULL);
        _exit(127);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    fp = fopen(log_path, "r");
    assert_non_null(fp);
    got = fread(out, 1, outsz - 1, fp);
    out[got] = '\0';
    fclose(fp);
    unlink(path);
    unlink(log_path);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 127)
        fail_msg("%s could not be run; install Debian's prometheus package", NM_PROMTOOL);
    return WEXITSTATUS(status);
}

/* Fill m with every metric nomad-medic records, the way the controller records them. */
static void record_every_metric(struct metrics *m)
{
    const char *pass[] = {"scope", "cluster", "result", "complete", NULL};
    const char *pass_failed[] = {"scope", "node", "result", "incomplete", NULL};
    const char *findings[] = {"rule", "orphan_services", NULL};
    const char *findings2[] = {"rule", "netns_leaks", NULL};
    const char *actions[] = {"kind", "service_delete", "state", "succeeded", NULL};
    const char *actions2[] = {"kind", "system_gc", "state", "pending_approval", NULL};
    const char *guard[] = {"guard", "circuit_breaker", NULL};
    const char *guard2[] = {"guard", "rate_limit", NULL};
    const char *bucket[] = {"bucket", "global", NULL};
    const char *bucket2[] = {"bucket", "rule:orphan_services", NULL};

    assert_int_equal(metrics_counter_add(m, "nomad_medic_passes_total", "Reconcile passes finished, by scope and "
                                         "whether the observation was complete.", pass, 1), METRICS_OK);
    assert_int_equal(metrics_counter_add(m, "nomad_medic_passes_total", NULL, pass_failed, 1), METRICS_OK);
    assert_int_equal(metrics_histogram_observe(m, "nomad_medic_pass_duration_seconds",
                                               "Duration of reconcile passes in seconds.", metrics_duration_buckets,
                                               metrics_duration_buckets_count, NULL, 2.5), METRICS_OK);
    assert_int_equal(metrics_gauge_set(m, "nomad_medic_findings", "Findings of the last pass, by rule.", findings, 8),
                     METRICS_OK);
    assert_int_equal(metrics_gauge_set(m, "nomad_medic_findings", NULL, findings2, 0), METRICS_OK);
    assert_int_equal(metrics_counter_add(m, "nomad_medic_actions_total", "Actions journaled, by kind and state.",
                                         actions, 3), METRICS_OK);
    assert_int_equal(metrics_counter_add(m, "nomad_medic_actions_total", NULL, actions2, 1), METRICS_OK);
    assert_int_equal(metrics_counter_add(m, "nomad_medic_guard_blocks_total", "Actions blocked, by guard.", guard, 2),
                     METRICS_OK);
    assert_int_equal(metrics_counter_add(m, "nomad_medic_guard_blocks_total", NULL, guard2, 0), METRICS_OK);
    assert_int_equal(metrics_gauge_set(m, "nomad_medic_rate_limit_tokens", "Tokens left in each rate-limit bucket.",
                                       bucket, 5.5), METRICS_OK);
    assert_int_equal(metrics_gauge_set(m, "nomad_medic_rate_limit_tokens", NULL, bucket2, 0.25), METRICS_OK);
    assert_int_equal(metrics_gauge_set(m, "nomad_medic_breaker_open",
                                       "1 while the circuit breaker stops actions, else 0.", NULL, 0), METRICS_OK);
    assert_int_equal(metrics_gauge_set(m, "nomad_medic_last_complete_observation_timestamp_seconds",
                                       "Unix time of the last pass whose observation was complete.", NULL,
                                       1767225600), METRICS_OK);
    assert_int_equal(metrics_gauge_set(m, "nomad_medic_leader",
                                       "1 while this instance holds the leadership lock, else 0.", NULL, 1),
                     METRICS_OK);
    metrics_observe_nomad_request(m, "GET", "/v1/allocations?namespace=*", 200, NOMAD_OK, 0.2);
    metrics_observe_nomad_request(m, "GET", "/v1/allocation/0a1b?namespace=x", 0, NOMAD_ERR_TIMEOUT, 30);
    metrics_observe_nomad_request(m, "DELETE", "/v1/service/web/_nomad-task-x", 500, NOMAD_ERR_STATUS, 0.01);
    metrics_observe_nomad_request(m, "PUT", "/v1/system/gc", 200, NOMAD_OK, 1.5);
}

static void test_promtool_accepts_every_metric(void **state)
{
    struct metrics *m = metrics_new();
    char output[4096];
    char *text;
    int rc;

    (void)state;
    record_every_metric(m);
    text = render(m);
    rc = promtool_check(text, output, sizeof(output));
    if (rc != 0 || output[0] != '\0')
        print_error("promtool exit %d:\n%s\non:\n%s\n", rc, output, text);
    assert_int_equal(rc, 0);
    assert_string_equal(output, "");
    free(text);
    metrics_free(m);
}

/* The check above can fail: promtool rejects text with a lint problem. */
static void test_promtool_rejects_lint_problem(void **state)
{
    char output[4096];

    (void)state;
    assert_int_not_equal(promtool_check("# TYPE passes counter\npasses 1\n", output, sizeof(output)), 0);
    assert_contains(output, "_total");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_counter_and_gauge),
        cmocka_unit_test(test_render_empty_registry),
        cmocka_unit_test(test_render_histogram),
        cmocka_unit_test(test_histogram_without_labels_or_buckets),
        cmocka_unit_test(test_value_formatting),
        cmocka_unit_test(test_label_order_is_canonical),
        cmocka_unit_test(test_output_order_is_stable),
        cmocka_unit_test(test_label_values_escaped),
        cmocka_unit_test(test_help_escaped),
        cmocka_unit_test(test_metric_name_rules),
        cmocka_unit_test(test_label_name_rules),
        cmocka_unit_test(test_invalid_updates_rejected),
        cmocka_unit_test(test_concurrent_updates_smoke),
        cmocka_unit_test(test_endpoint_templates),
        cmocka_unit_test(test_observer_status_labels),
        cmocka_unit_test(test_observer_counts_every_attempt),
        cmocka_unit_test(test_promtool_accepts_every_metric),
        cmocka_unit_test(test_promtool_rejects_lint_problem),
    };

    /* libcurl would send loopback requests through a proxy named in the environment. */
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
