/*
 * Tests of the policy loader: value parsers, defaults, NOMAD_* precedence,
 * every setting of the file format, every error message with its line, the
 * dump, and the shipped policies/default.conf and policies/audit.conf.
 * Policy files are written to a fresh temporary directory per test.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../policies/policy.h"

#define SHIPPED_DEFAULT NM_TEST_DATA "/../../policies/default.conf"
#define SHIPPED_AUDIT NM_TEST_DATA "/../../policies/audit.conf"
#define FULL_POLICY NM_TEST_DATA "/policy/full.conf"

static const char *const nomad_env_vars[] = {
    "NOMAD_ADDR",        "NOMAD_TOKEN",       "NOMAD_REGION",
    "NOMAD_NAMESPACE",   "NOMAD_CACERT",      "NOMAD_CAPATH",
    "NOMAD_CLIENT_CERT", "NOMAD_CLIENT_KEY",  "NOMAD_TLS_SERVER_NAME",
    "NOMAD_SKIP_VERIFY", "NOMAD_HTTP_AUTH",
};

struct fixture {
    char dir[PATH_MAX];
};

/* NOMAD_* variables set in the caller's shell must not leak into the expected values. */
static void clear_nomad_env(void)
{
    for (size_t i = 0; i < sizeof(nomad_env_vars) / sizeof(nomad_env_vars[0]); i++)
        unsetenv(nomad_env_vars[i]);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    const char *tmp = getenv("TMPDIR");

    if (fx == NULL)
        return -1;
    clear_nomad_env();
    snprintf(fx->dir, sizeof(fx->dir), "%s/test_policy.XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (mkdtemp(fx->dir) == NULL) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    DIR *dir = opendir(fx->dir);
    struct dirent *entry;
    char path[PATH_MAX + 256];

    if (dir != NULL) {
        while ((entry = readdir(dir)) != NULL) {
            if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof(path), "%s/%s", fx->dir, entry->d_name);
            unlink(path);
        }
        closedir(dir);
    }
    rmdir(fx->dir);
    clear_nomad_env();
    free(fx);
    return 0;
}

/* Write text to fx->dir/name and put its path in path. */
static void write_file(const struct fixture *fx, const char *name, const char *text, char *path,
                       size_t pathsz)
{
    FILE *f;

    if (snprintf(path, pathsz, "%s/%s", fx->dir, name) >= (int)pathsz)
        fail_msg("test file path %s/%s does not fit in %zu bytes", fx->dir, name, pathsz);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Load text as fx->dir/policy.conf. Returns policy_load()'s result. */
static int load_text(const struct fixture *fx, const char *text, struct policy *p, char *err,
                     size_t errsz)
{
    char path[PATH_MAX];

    write_file(fx, "policy.conf", text, path, sizeof(path));
    return policy_load(path, p, err, errsz);
}

static char *dump_or_fail(const struct policy *p)
{
    char *text = NULL;

    assert_int_equal(policy_dump(p, &text), 0);
    assert_non_null(text);
    return text;
}

/* ---------------------------------------------------------------------- */
/* Value parsers                                                           */

static void test_duration_parse_valid(void **state)
{
    static const struct {
        const char *text;
        long seconds;
    } cases[] = {
        {"0", 0},           {"0s", 0},          {"90s", 90},        {"10m", 600},
        {"1h30m", 5400},    {"2d", 172800},     {"1d2h3m4s", 93784}, {"90m", 5400},
        {"24h", 86400},     {"1h0m5s", 3605},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long seconds = -1;

        assert_int_equal(policy_parse_duration(cases[i].text, &seconds), 0);
        assert_int_equal(seconds, cases[i].seconds);
    }
}

static void test_duration_parse_invalid(void **state)
{
    static const char *const cases[] = {
        "", "10", "1500ms", "10 minutes", "-5m", "+5m", "1m1h", "1h1h", "m", "1.5h",
        "10M", " 10m", "10m ", "1h30", "99999999999999999999s", "106751991167301d",
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long seconds = 12345;

        assert_int_equal(policy_parse_duration(cases[i], &seconds), -1);
        assert_int_equal(seconds, 12345);
    }
}

static void test_duration_format(void **state)
{
    static const struct {
        long seconds;
        const char *text;
    } cases[] = {
        {0, "0s"},        {45, "45s"},       {600, "10m"},   {5400, "1h30m"},
        {86400, "24h"},   {90061, "25h1m1s"}, {3605, "1h5s"}, {-90, "-1m30s"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[32];
        long back = -1;

        assert_string_equal(policy_format_duration(cases[i].seconds, buf, sizeof(buf)),
                            cases[i].text);
        if (cases[i].seconds >= 0) {
            assert_int_equal(policy_parse_duration(buf, &back), 0);
            assert_int_equal(back, cases[i].seconds);
        }
    }
}

static void test_duration_format_truncates(void **state)
{
    char buf[4];
    char large[32];
    (void)state;

    assert_string_equal(policy_format_duration(5400, buf, sizeof(buf)), "1h3");
    assert_int_equal(strlen(policy_format_duration(LONG_MAX, large, sizeof(large))) <
                         sizeof(large) - 1,
                     1);
}

static void test_rate_parse_valid(void **state)
{
    static const struct {
        const char *text;
        int count;
        long period_s;
    } cases[] = {
        {"6/h", 6, 3600},   {"1/30m", 1, 1800}, {"0", 0, 0},       {"20/1h", 20, 3600},
        {"5/s", 5, 1},      {"2/d", 2, 86400},  {"3/1h30m", 3, 5400}, {"1/m", 1, 60},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct policy_rate rate = {-1, -1};

        assert_int_equal(policy_parse_rate(cases[i].text, &rate), 0);
        assert_int_equal(rate.count, cases[i].count);
        assert_int_equal(rate.period_s, cases[i].period_s);
    }
}

static void test_rate_parse_invalid(void **state)
{
    static const char *const cases[] = {
        "", "0/h", "6/", "/h", "6/x", "6 /h", "-1/h", "30 per hour", "6/0s", "6/0",
        "6", "6/h/h", "6/H", "2147483648/h", "6/1500ms", "00",
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct policy_rate rate = {-1, -1};

        assert_int_equal(policy_parse_rate(cases[i], &rate), -1);
    }
}

static void test_rate_format(void **state)
{
    static const struct {
        struct policy_rate rate;
        const char *text;
    } cases[] = {
        {{6, 3600}, "6/h"}, {{1, 1800}, "1/30m"}, {{0, 0}, "0"},
        {{2, 86400}, "2/d"}, {{5, 1}, "5/s"},     {{3, 5400}, "3/1h30m"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[32];
        struct policy_rate back = {-1, -1};

        assert_string_equal(policy_format_rate(&cases[i].rate, buf, sizeof(buf)), cases[i].text);
        assert_int_equal(policy_parse_rate(buf, &back), 0);
        assert_int_equal(back.count, cases[i].rate.count);
        assert_int_equal(back.period_s, cases[i].rate.period_s);
    }
}

static void test_mode_parse_and_name(void **state)
{
    static const enum policy_mode modes[] = {MODE_DRY_RUN, MODE_APPROVE, MODE_ENFORCE};
    static const char *const invalid[] = {"", "Enforce", "dry_run", "dryrun", "enforce "};
    (void)state;

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        enum policy_mode back = MODE_UNSET;

        assert_int_equal(policy_parse_mode(policy_mode_name(modes[i]), &back), 0);
        assert_int_equal(back, modes[i]);
    }
    assert_string_equal(policy_mode_name(MODE_DRY_RUN), "dry-run");
    assert_string_equal(policy_mode_name(MODE_APPROVE), "approve");
    assert_string_equal(policy_mode_name(MODE_ENFORCE), "enforce");
    assert_string_equal(policy_mode_name(MODE_UNSET), "unset");
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        enum policy_mode back = MODE_UNSET;

        assert_int_equal(policy_parse_mode(invalid[i], &back), -1);
    }
}

static void test_rule_mode_and_force(void **state)
{
    struct policy p;
    char err[512];
    (void)state;

    assert_int_equal(policy_init_defaults(&p, err, sizeof(err)), 0);
    p.system_gc.common.mode = MODE_APPROVE;

    assert_int_equal(policy_rule_mode(&p, &p.orphan_services.common), MODE_DRY_RUN);
    assert_int_equal(policy_rule_mode(&p, &p.system_gc.common), MODE_APPROVE);

    policy_force_mode(&p, MODE_ENFORCE);
    assert_int_equal(p.mode, MODE_ENFORCE);
    assert_int_equal(policy_rule_mode(&p, &p.orphan_services.common), MODE_ENFORCE);
    assert_int_equal(policy_rule_mode(&p, &p.system_gc.common), MODE_ENFORCE);
    assert_int_equal(policy_rule_mode(&p, &p.down_nodes.common), MODE_ENFORCE);
    assert_int_equal(p.netns_leaks.common.mode, MODE_ENFORCE);
    assert_int_equal(p.client_restart.common.mode, MODE_ENFORCE);
    assert_int_equal(p.server_restart.common.mode, MODE_ENFORCE);
    assert_int_equal(p.node_ineligible.common.mode, MODE_ENFORCE);
    policy_free(&p);
}

/* ---------------------------------------------------------------------- */
/* Defaults and the environment                                            */

static void test_defaults_values(void **state)
{
    struct policy p;
    char err[512];
    (void)state;

    assert_int_equal(policy_init_defaults(&p, err, sizeof(err)), 0);

    assert_null(p.source_path);
    assert_string_equal(p.nomad.address, "http://127.0.0.1:4646");
    assert_null(p.nomad.token);
    assert_null(p.nomad.region);
    assert_null(p.nomad.namespace_name);
    assert_null(p.nomad.http_auth);
    assert_int_equal(p.nomad.skip_verify, 0);
    assert_int_equal(p.nomad.request_timeout_ms, 30000);
    assert_int_equal(p.nomad.connect_timeout_ms, 5000);
    assert_int_equal(p.nomad.max_retries, 3);
    assert_int_equal(p.nomad.retry_base_ms, 200);
    assert_int_equal(p.nomad.max_response_bytes, 64 * 1024 * 1024);
    assert_int_equal(p.nomad.max_connections, 8);
    assert_int_equal(p.nomad.compression, NOMAD_COMPRESSION_AUTO);
    assert_int_equal(p.per_page, 500);

    assert_string_equal(p.journal_path, "/var/lib/nomad-medic/journal.db");
    assert_string_equal(p.pause_file, "/var/lib/nomad-medic/pause");
    assert_string_equal(p.log_level, "info");

    assert_int_equal(p.mode, MODE_DRY_RUN);
    assert_int_equal(p.interval_s, 60);
    assert_int_equal(p.approval_ttl_s, 86400);
    assert_int_equal(p.global_rate_limit.count, 30);
    assert_int_equal(p.global_rate_limit.period_s, 3600);
    assert_true(p.breaker_max_unhealthy == 0.3);
    assert_int_equal(p.breaker_min_nodes, 3);

    assert_int_equal(p.orphan_services.common.enabled, 1);
    assert_int_equal(p.orphan_services.common.mode, MODE_UNSET);
    assert_int_equal(p.orphan_services.grace_s, 600);
    assert_int_equal(p.orphan_services.common.rate_limit.count, 20);
    assert_int_equal(p.orphan_services.common.rate_limit.period_s, 3600);
    assert_int_equal(p.orphan_services.common.cooldown_s, 3600);

    assert_int_equal(p.system_gc.common.enabled, 1);
    assert_int_equal(p.system_gc.common.mode, MODE_UNSET);
    assert_int_equal(p.system_gc.min_terminal_allocs, 5000);
    assert_int_equal(p.system_gc.min_terminal_evals, 5000);
    assert_int_equal(p.system_gc.common.rate_limit.count, 1);
    assert_int_equal(p.system_gc.common.rate_limit.period_s, 3600);
    assert_int_equal(p.system_gc.common.cooldown_s, 3600);

    assert_int_equal(p.down_nodes.common.enabled, 1);
    assert_int_equal(p.down_nodes.min_down_s, 0);

    assert_int_equal(p.client_restart.common.enabled, 1);
    assert_int_equal(p.client_restart.common.mode, MODE_UNSET);
    assert_int_equal(p.client_restart.min_down_s, 300);
    assert_int_equal(p.client_restart.heartbeat_max_age_s, 120);
    assert_int_equal(p.client_restart.max_parallel, 1);
    assert_int_equal(p.client_restart.ready_timeout_s, 600);
    assert_int_equal(p.client_restart.settle_s, 120);
    assert_int_equal(p.client_restart.executor, EXECUTOR_NODE_AGENT);
    assert_int_equal(p.client_restart.command.argc, 0);
    assert_null(p.client_restart.command.argv);
    assert_int_equal(p.client_restart.common.rate_limit.count, 6);
    assert_int_equal(p.client_restart.common.rate_limit.period_s, 3600);
    assert_int_equal(p.client_restart.common.cooldown_s, 1800);

    assert_int_equal(p.server_restart.common.enabled, 1);
    assert_int_equal(p.server_restart.common.mode, MODE_UNSET);
    assert_int_equal(p.server_restart.min_down_s, 120);
    assert_int_equal(p.server_restart.ready_timeout_s, 600);
    assert_int_equal(p.server_restart.executor, EXECUTOR_EXEC);
    assert_int_equal(p.server_restart.command.argc, 0);
    assert_null(p.server_restart.command.argv);
    assert_int_equal(p.server_restart.common.rate_limit.count, 3);
    assert_int_equal(p.server_restart.common.rate_limit.period_s, 3600);
    assert_int_equal(p.server_restart.common.cooldown_s, 1800);

    assert_int_equal(p.node_ineligible.common.enabled, 1);
    assert_int_equal(p.node_ineligible.common.mode, MODE_UNSET);
    assert_int_equal(p.node_ineligible.flap_limit, 3);
    assert_int_equal(p.node_ineligible.flap_window_s, 3600);
    assert_int_equal(p.node_ineligible.common.rate_limit.count, 10);
    assert_int_equal(p.node_ineligible.common.rate_limit.period_s, 3600);
    assert_int_equal(p.node_ineligible.common.cooldown_s, 3600);

    assert_string_equal(p.coord_namespace, "default");
    assert_string_equal(p.coord_prefix, "nomad-medic");
    assert_int_equal(p.lock_ttl_s, 30);
    assert_int_equal(p.lock_delay_s, 15);
    assert_int_equal(p.heartbeat_interval_s, 30);

    assert_int_equal(p.node_servers.argc, 0);
    assert_null(p.node_servers.argv);
    assert_int_equal(p.node_restart_command.argc, 3);
    assert_string_equal(p.node_restart_command.argv[0], "systemctl");
    assert_string_equal(p.node_restart_command.argv[1], "restart");
    assert_string_equal(p.node_restart_command.argv[2], "nomad");
    assert_null(p.node_restart_command.argv[3]);

    assert_int_equal(p.listener.enabled, 0);
    assert_string_equal(p.listener.address, "127.0.0.1:8646");
    assert_int_equal(p.listener.n_tokens, 0);
    assert_null(p.listener.tokens);
    assert_int_equal(p.listener.healthy_within_s, 300);
    policy_free(&p);
}

static void test_defaults_read_env(void **state)
{
    struct policy p;
    char err[512];
    (void)state;

    setenv("NOMAD_ADDR", "http://127.0.0.2:4646", 1);
    setenv("NOMAD_TOKEN", "env-token-7d3b", 1);
    setenv("NOMAD_REGION", "env-region", 1);
    setenv("NOMAD_NAMESPACE", "env-ns", 1);
    setenv("NOMAD_CACERT", "/env/ca.pem", 1);
    setenv("NOMAD_SKIP_VERIFY", "true", 1);
    setenv("NOMAD_HTTP_AUTH", "env-user:env-pass", 1);

    assert_int_equal(policy_init_defaults(&p, err, sizeof(err)), 0);
    assert_string_equal(p.nomad.address, "http://127.0.0.2:4646");
    assert_string_equal(p.nomad.token, "env-token-7d3b");
    assert_string_equal(p.nomad.region, "env-region");
    assert_string_equal(p.nomad.namespace_name, "env-ns");
    assert_string_equal(p.nomad.ca_cert, "/env/ca.pem");
    assert_int_equal(p.nomad.skip_verify, 1);
    assert_string_equal(p.nomad.http_auth, "env-user:env-pass");
    policy_free(&p);
}

static void test_env_kept_when_file_silent(void **state)
{
    struct policy p;
    char err[512];

    setenv("NOMAD_ADDR", "http://127.0.0.2:4646", 1);
    setenv("NOMAD_REGION", "env-region", 1);
    setenv("NOMAD_SKIP_VERIFY", "1", 1);

    assert_int_equal(load_text(*state, "nomad = { retries = 1; };\n", &p, err, sizeof(err)), 0);
    assert_string_equal(p.nomad.address, "http://127.0.0.2:4646");
    assert_string_equal(p.nomad.region, "env-region");
    assert_int_equal(p.nomad.skip_verify, 1);
    assert_int_equal(p.nomad.max_retries, 1);
    policy_free(&p);
}

static void test_file_overrides_env(void **state)
{
    struct policy p;
    char err[512];

    setenv("NOMAD_ADDR", "http://127.0.0.2:4646", 1);
    setenv("NOMAD_TOKEN", "env-token-7d3b", 1);
    setenv("NOMAD_REGION", "env-region", 1);
    setenv("NOMAD_SKIP_VERIFY", "true", 1);

    assert_int_equal(load_text(*state,
                               "nomad = {\n"
                               "  address = \"http://127.0.0.3:4646\";\n"
                               "  token = \"file-token\";\n"
                               "  region = \"\";\n"
                               "  skip_verify = false;\n"
                               "};\n",
                               &p, err, sizeof(err)),
                     0);
    assert_string_equal(p.nomad.address, "http://127.0.0.3:4646");
    assert_string_equal(p.nomad.token, "file-token");
    assert_null(p.nomad.region);
    assert_int_equal(p.nomad.skip_verify, 0);
    policy_free(&p);
}

/* ---------------------------------------------------------------------- */
/* Loading valid files                                                     */

static void test_load_every_setting(void **state)
{
    struct policy p;
    char err[512];
    (void)state;

    assert_int_equal(policy_load(FULL_POLICY, &p, err, sizeof(err)), 0);

    assert_string_equal(p.source_path, FULL_POLICY);
    assert_string_equal(p.nomad.address, "https://127.0.0.1:4647");
    assert_string_equal(p.nomad.token, "file-token-4f1c");
    assert_string_equal(p.nomad.region, "eu-west");
    assert_string_equal(p.nomad.namespace_name, "platform");
    assert_string_equal(p.nomad.ca_cert, "/etc/nomad-medic/ca.pem");
    assert_string_equal(p.nomad.ca_path, "/etc/nomad-medic/ca.d");
    assert_string_equal(p.nomad.client_cert, "/etc/nomad-medic/cli.pem");
    assert_string_equal(p.nomad.client_key, "/etc/nomad-medic/cli-key.pem");
    assert_string_equal(p.nomad.tls_server_name, "server.eu-west.nomad");
    assert_int_equal(p.nomad.skip_verify, 1);
    assert_string_equal(p.nomad.http_auth, "medic:file-password-9a2e");
    assert_int_equal(p.nomad.request_timeout_ms, 90000);
    assert_int_equal(p.nomad.connect_timeout_ms, 1500);
    assert_int_equal(p.nomad.max_retries, 5);
    assert_int_equal(p.nomad.retry_base_ms, 1000);
    assert_int_equal(p.nomad.max_response_bytes, 128 * 1024 * 1024);
    assert_int_equal(p.per_page, 250);
    assert_int_equal(p.nomad.max_connections, 16);
    assert_int_equal(p.nomad.compression, NOMAD_COMPRESSION_ON);

    assert_string_equal(p.journal_path, "/srv/nomad-medic/journal.db");
    assert_string_equal(p.log_level, "debug");

    assert_int_equal(p.mode, MODE_APPROVE);
    assert_int_equal(p.interval_s, 120);
    assert_string_equal(p.pause_file, "/srv/nomad-medic/pause");
    assert_int_equal(p.approval_ttl_s, 172800);
    assert_int_equal(p.global_rate_limit.count, 60);
    assert_int_equal(p.global_rate_limit.period_s, 3600);
    assert_true(p.breaker_max_unhealthy == 0.25);
    assert_int_equal(p.breaker_min_nodes, 5);

    assert_int_equal(p.orphan_services.common.enabled, 0);
    assert_int_equal(p.orphan_services.common.mode, MODE_ENFORCE);
    assert_int_equal(p.orphan_services.grace_s, 900);
    assert_int_equal(p.orphan_services.common.rate_limit.count, 1);
    assert_int_equal(p.orphan_services.common.rate_limit.period_s, 1800);
    assert_int_equal(p.orphan_services.common.cooldown_s, 7200);

    assert_int_equal(p.system_gc.common.enabled, 0);
    assert_int_equal(p.system_gc.common.mode, MODE_APPROVE);
    assert_int_equal(p.system_gc.min_terminal_allocs, 10000);
    assert_int_equal(p.system_gc.min_terminal_evals, 20000);
    assert_int_equal(p.system_gc.common.rate_limit.count, 2);
    assert_int_equal(p.system_gc.common.rate_limit.period_s, 86400);
    assert_int_equal(p.system_gc.common.cooldown_s, 21600);

    assert_int_equal(p.down_nodes.common.enabled, 0);
    assert_int_equal(p.down_nodes.min_down_s, 300);

    assert_int_equal(p.client_restart.common.enabled, 0);
    assert_int_equal(p.client_restart.common.mode, MODE_APPROVE);
    assert_int_equal(p.client_restart.min_down_s, 600);
    assert_int_equal(p.client_restart.heartbeat_max_age_s, 180);
    assert_int_equal(p.client_restart.max_parallel, 2);
    assert_int_equal(p.client_restart.ready_timeout_s, 900);
    assert_int_equal(p.client_restart.settle_s, 300);
    assert_int_equal(p.client_restart.executor, EXECUTOR_EXEC);
    assert_int_equal(p.client_restart.command.argc, 8);
    assert_string_equal(p.client_restart.command.argv[0], "ssh");
    assert_string_equal(p.client_restart.command.argv[2], "BatchMode=yes");
    assert_string_equal(p.client_restart.command.argv[3], "{address}");
    assert_string_equal(p.client_restart.command.argv[7], "nomad");
    assert_null(p.client_restart.command.argv[8]);
    assert_int_equal(p.client_restart.common.rate_limit.count, 4);
    assert_int_equal(p.client_restart.common.rate_limit.period_s, 3600);
    assert_int_equal(p.client_restart.common.cooldown_s, 2700);

    assert_int_equal(p.server_restart.common.enabled, 0);
    assert_int_equal(p.server_restart.common.mode, MODE_ENFORCE);
    assert_int_equal(p.server_restart.min_down_s, 180);
    assert_int_equal(p.server_restart.ready_timeout_s, 1200);
    assert_int_equal(p.server_restart.executor, EXECUTOR_NODE_AGENT);
    assert_int_equal(p.server_restart.command.argc, 3);
    assert_string_equal(p.server_restart.command.argv[0], "/usr/local/sbin/restart-server");
    assert_string_equal(p.server_restart.command.argv[1], "--id={node_id}");
    assert_string_equal(p.server_restart.command.argv[2], "--name={node_name}");
    assert_null(p.server_restart.command.argv[3]);
    assert_int_equal(p.server_restart.common.rate_limit.count, 1);
    assert_int_equal(p.server_restart.common.rate_limit.period_s, 3600);
    assert_int_equal(p.server_restart.common.cooldown_s, 7200);

    assert_int_equal(p.node_ineligible.common.enabled, 0);
    assert_int_equal(p.node_ineligible.common.mode, MODE_DRY_RUN);
    assert_int_equal(p.node_ineligible.flap_limit, 5);
    assert_int_equal(p.node_ineligible.flap_window_s, 7200);
    assert_int_equal(p.node_ineligible.common.rate_limit.count, 5);
    assert_int_equal(p.node_ineligible.common.rate_limit.period_s, 3600);
    assert_int_equal(p.node_ineligible.common.cooldown_s, 10800);

    assert_int_equal(p.node_servers.argc, 2);
    assert_string_equal(p.node_servers.argv[0], "https://127.0.0.1:4647");
    assert_string_equal(p.node_servers.argv[1], "unix:///run/nomad/server.sock");
    assert_null(p.node_servers.argv[2]);
    assert_int_equal(p.node_restart_command.argc, 3);
    assert_string_equal(p.node_restart_command.argv[2], "nomad-client.service");
    assert_null(p.node_restart_command.argv[3]);

    assert_string_equal(p.coord_namespace, "ops-tools");
    assert_string_equal(p.coord_prefix, "ops/nomad-medic");
    assert_int_equal(p.lock_ttl_s, 60);
    assert_int_equal(p.lock_delay_s, 30);
    assert_int_equal(p.heartbeat_interval_s, 20);

    assert_int_equal(p.listener.enabled, 1);
    assert_string_equal(p.listener.address, "[::1]:9646");
    assert_int_equal(p.listener.n_tokens, 2);
    assert_string_equal(p.listener.tokens[0].name, "alice");
    assert_string_equal(p.listener.tokens[0].token, "alice-token-0123456789abcdef");
    assert_string_equal(p.listener.tokens[1].name, "ci@deploy.example");
    assert_string_equal(p.listener.tokens[1].token, "ci-token-fedcba9876543210");
    assert_int_equal(p.listener.healthy_within_s, 600);
    policy_free(&p);
}

static void test_dump_round_trip(void **state)
{
    struct policy p;
    struct policy again;
    char path[PATH_MAX];
    char err[512];
    char *first;
    char *second;

    assert_int_equal(policy_load(FULL_POLICY, &p, err, sizeof(err)), 0);
    /* A dump never carries secrets, so a reloaded dump has none; drop them to compare. */
    free(p.nomad.token);
    p.nomad.token = NULL;
    free(p.nomad.http_auth);
    p.nomad.http_auth = NULL;
    first = dump_or_fail(&p);
    /* The listener tokens are secrets too: the dump names them and leaves them out. */
    assert_non_null(strstr(first, "  # tokens: alice, ci@deploy.example (values not shown)\n"));
    assert_null(strstr(first, "alice-token-0123456789abcdef"));
    assert_null(strstr(first, "ci-token-fedcba9876543210"));
    for (size_t i = 0; i < p.listener.n_tokens; i++) {
        free(p.listener.tokens[i].name);
        free(p.listener.tokens[i].token);
    }
    free(p.listener.tokens);
    p.listener.tokens = NULL;
    p.listener.n_tokens = 0;
    free(first);
    first = dump_or_fail(&p);

    write_file(*state, "dump.conf", first, path, sizeof(path));
    assert_int_equal(policy_load(path, &again, err, sizeof(err)), 0);
    second = dump_or_fail(&again);
    assert_string_equal(second, first);
    assert_true(again.breaker_max_unhealthy == p.breaker_max_unhealthy);
    assert_int_equal(again.client_restart.command.argc, p.client_restart.command.argc);
    assert_int_equal(again.node_servers.argc, 2);
    assert_int_equal(again.listener.n_tokens, 0);

    free(first);
    free(second);
    policy_free(&p);
    policy_free(&again);
}

static void test_dump_hides_secrets(void **state)
{
    struct policy p;
    char err[512];
    char *text;

    setenv("NOMAD_TOKEN", "env-token-7d3b", 1);
    assert_int_equal(load_text(*state, "nomad = { http_auth = \"medic:hunter2-5e1f\"; };\n", &p,
                               err, sizeof(err)),
                     0);
    text = dump_or_fail(&p);
    assert_null(strstr(text, "env-token-7d3b"));
    assert_null(strstr(text, "hunter2-5e1f"));
    assert_non_null(strstr(text, "# token is set (not shown)\n"));
    assert_non_null(strstr(text, "# http_auth is set (not shown)\n"));
    free(text);
    policy_free(&p);
}

static void test_dump_hides_address_userinfo(void **state)
{
    struct policy p;
    char err[512];
    char *text;

    setenv("NOMAD_ADDR", "https://medic:addr-pass-31c9@127.0.0.1:4646/", 1);
    assert_int_equal(load_text(*state, "log = { level = \"info\"; };\n", &p, err, sizeof(err)), 0);
    /* The loader keeps the userinfo, because the client sends it as Basic auth. */
    assert_string_equal(p.nomad.address, "https://medic:addr-pass-31c9@127.0.0.1:4646/");
    text = dump_or_fail(&p);
    assert_null(strstr(text, "addr-pass-31c9"));
    assert_non_null(strstr(text, "  # address credentials are set (not shown)\n"
                                 "  address = \"https://127.0.0.1:4646/\";\n"));
    free(text);
    policy_free(&p);
}

static void test_dump_escapes_strings(void **state)
{
    struct policy p;
    struct policy again;
    char path[PATH_MAX];
    char err[512];
    char *text;

    assert_int_equal(policy_init_defaults(&p, err, sizeof(err)), 0);
    free(p.journal_path);
    p.journal_path = strdup("/srv/a \"quoted\" \\ dir/journal.db");
    assert_non_null(p.journal_path);
    text = dump_or_fail(&p);
    assert_non_null(strstr(text, "path = \"/srv/a \\\"quoted\\\" \\\\ dir/journal.db\";\n"));

    write_file(*state, "dump.conf", text, path, sizeof(path));
    assert_int_equal(policy_load(path, &again, err, sizeof(err)), 0);
    assert_string_equal(again.journal_path, p.journal_path);
    free(text);
    policy_free(&p);
    policy_free(&again);
}

static void test_dump_of_defaults(void **state)
{
    static const char expected[] =
        "nomad = {\n"
        "  address = \"http://127.0.0.1:4646\";\n"
        "  # token is not set\n"
        "  # region is not set\n"
        "  # namespace is not set\n"
        "  # ca_cert is not set\n"
        "  # ca_path is not set\n"
        "  # client_cert is not set\n"
        "  # client_key is not set\n"
        "  # tls_server_name is not set\n"
        "  skip_verify = false;\n"
        "  # http_auth is not set\n"
        "  timeout = \"30s\";\n"
        "  connect_timeout = \"5s\";\n"
        "  retries = 3;\n"
        "  retry_backoff = \"200ms\";\n"
        "  max_response_size = \"64MiB\";\n"
        "  per_page = 500;\n"
        "  max_connections = 8;\n"
        "  compression = \"auto\";\n"
        "};\n"
        "\n"
        "journal = {\n"
        "  path = \"/var/lib/nomad-medic/journal.db\";\n"
        "};\n"
        "\n"
        "log = {\n"
        "  level = \"info\";\n"
        "};\n"
        "\n"
        "controller = {\n"
        "  mode = \"dry-run\";\n"
        "  interval = \"1m\";\n"
        "  pause_file = \"/var/lib/nomad-medic/pause\";\n"
        "  approval_ttl = \"24h\";\n"
        "  rate_limit = \"30/h\";\n"
        "  breaker = {\n"
        "    max_unhealthy_share = 0.3;\n"
        "    min_nodes = 3;\n"
        "  };\n"
        "};\n"
        "\n"
        "rules = {\n"
        "  orphan_services = {\n"
        "    enabled = true;\n"
        "    # mode is not set: follows controller.mode\n"
        "    grace = \"10m\";\n"
        "    rate_limit = \"20/h\";\n"
        "    cooldown = \"1h\";\n"
        "  };\n"
        "  system_gc = {\n"
        "    enabled = true;\n"
        "    # mode is not set: follows controller.mode\n"
        "    min_terminal_allocs = 5000;\n"
        "    min_terminal_evals = 5000;\n"
        "    rate_limit = \"1/h\";\n"
        "    cooldown = \"1h\";\n"
        "  };\n"
        "  down_nodes = {\n"
        "    enabled = true;\n"
        "    min_down = \"0s\";\n"
        "  };\n"
        "  netns_leaks = {\n"
        "    enabled = true;\n"
        "    # mode is not set: follows controller.mode\n"
        "    grace = \"5m\";\n"
        "    rate_limit = \"30/h\";\n"
        "    cooldown = \"10m\";\n"
        "  };\n"
        "  port_conflicts = {\n"
        "    enabled = true;\n"
        "  };\n"
        "  client_restart = {\n"
        "    enabled = true;\n"
        "    # mode is not set: follows controller.mode\n"
        "    min_down = \"5m\";\n"
        "    heartbeat_max_age = \"2m\";\n"
        "    max_parallel = 1;\n"
        "    ready_timeout = \"10m\";\n"
        "    settle = \"2m\";\n"
        "    executor = \"node-agent\";\n"
        "    # command is not set\n"
        "    rate_limit = \"6/h\";\n"
        "    cooldown = \"30m\";\n"
        "  };\n"
        "  server_restart = {\n"
        "    enabled = true;\n"
        "    # mode is not set: follows controller.mode\n"
        "    min_down = \"2m\";\n"
        "    ready_timeout = \"10m\";\n"
        "    executor = \"exec\";\n"
        "    # command is not set\n"
        "    rate_limit = \"3/h\";\n"
        "    cooldown = \"30m\";\n"
        "  };\n"
        "  node_ineligible = {\n"
        "    enabled = true;\n"
        "    # mode is not set: follows controller.mode\n"
        "    flap_limit = 3;\n"
        "    flap_window = \"1h\";\n"
        "    rate_limit = \"10/h\";\n"
        "    cooldown = \"1h\";\n"
        "  };\n"
        "};\n"
        "\n"
        "node = {\n"
        "  # node_id is not set\n"
        "  netns_dir = \"/var/run/netns\";\n"
        "  cni_cache_dir = \"/var/lib/cni/results\";\n"
        "  ipam_dir = \"/var/run/cni\";\n"
        "  ipam_dir_legacy = \"/var/lib/cni/networks\";\n"
        "  network = \"nomad\";\n"
        "  bridge = \"nomad\";\n"
        "  cni_path = \"/opt/cni/bin:/usr/libexec/cni:/usr/lib/cni\";\n"
        "  iptables = \"iptables\";\n"
        "  iptables_save = \"iptables-save\";\n"
        "  ip = \"ip\";\n"
        "  command_timeout = \"10s\";\n"
        "  servers = [];\n"
        "  restart_command = [\"systemctl\", \"restart\", \"nomad\"];\n"
        "};\n"
        "\n"
        "coordination = {\n"
        "  namespace = \"default\";\n"
        "  prefix = \"nomad-medic\";\n"
        "  lock_ttl = \"30s\";\n"
        "  lock_delay = \"15s\";\n"
        "  heartbeat_interval = \"30s\";\n"
        "};\n"
        "\n"
        "listener = {\n"
        "  enabled = false;\n"
        "  address = \"127.0.0.1:8646\";\n"
        "  tokens = ();\n"
        "  healthy_within = \"5m\";\n"
        "};\n";
    struct policy p;
    char err[512];
    char *text;
    (void)state;

    assert_int_equal(policy_init_defaults(&p, err, sizeof(err)), 0);
    text = dump_or_fail(&p);
    assert_string_equal(text, expected);
    free(text);
    policy_free(&p);
}

static void test_value_forms(void **state)
{
    struct policy p;
    char err[512];

    assert_int_equal(load_text(*state,
                               "nomad = {\n"
                               "  address = \"unix:///run/nomad/api.sock\";\n"
                               "  timeout = \"1s500ms\";\n"
                               "  max_response_size = \"1536KiB\";\n"
                               "  retries = 0x3;\n"
                               "  per_page = 10000L;\n"
                               "};\n"
                               "controller = {\n"
                               "  rate_limit = \"0\";\n"
                               "  breaker = { max_unhealthy_share = 1; min_nodes = 0; };\n"
                               "};\n"
                               "rules = { orphan_services = { grace = \"0\"; cooldown = \"0s\"; }; };\n",
                               &p, err, sizeof(err)),
                     0);
    assert_string_equal(p.nomad.address, "unix:///run/nomad/api.sock");
    assert_int_equal(p.nomad.request_timeout_ms, 1500);
    assert_int_equal(p.nomad.max_response_bytes, 1536 * 1024);
    assert_int_equal(p.nomad.max_retries, 3);
    assert_int_equal(p.per_page, 10000);
    assert_int_equal(p.global_rate_limit.count, 0);
    assert_true(p.breaker_max_unhealthy == 1.0);
    assert_int_equal(p.breaker_min_nodes, 0);
    assert_int_equal(p.orphan_services.grace_s, 0);
    assert_int_equal(p.orphan_services.common.cooldown_s, 0);
    policy_free(&p);
}

static void test_empty_file_is_default(void **state)
{
    struct policy p;
    struct policy defaults;
    char err[512];
    char *loaded;
    char *builtin;

    assert_int_equal(load_text(*state, "# nothing set\n", &p, err, sizeof(err)), 0);
    assert_int_equal(policy_init_defaults(&defaults, err, sizeof(err)), 0);
    loaded = dump_or_fail(&p);
    builtin = dump_or_fail(&defaults);
    assert_string_equal(loaded, builtin);
    free(loaded);
    free(builtin);
    policy_free(&p);
    policy_free(&defaults);
}

static void test_include_absolute_path(void **state)
{
    struct fixture *fx = *state;
    struct policy p;
    char rules_path[PATH_MAX];
    char main_text[PATH_MAX + 64];
    char err[512];

    write_file(fx, "rules.conf", "rules = { system_gc = { min_terminal_allocs = 42; }; };\n",
               rules_path, sizeof(rules_path));
    snprintf(main_text, sizeof(main_text), "log = { level = \"warn\"; };\n@include \"%s\"\n",
             rules_path);
    assert_int_equal(load_text(fx, main_text, &p, err, sizeof(err)), 0);
    assert_string_equal(p.log_level, "warn");
    assert_int_equal(p.system_gc.min_terminal_allocs, 42);
    policy_free(&p);
}

/* ---------------------------------------------------------------------- */
/* Errors                                                                  */

struct error_case {
    const char *text;       /* written to <dir>/policy.conf */
    const char *message;    /* expected error after "<dir>/policy.conf" */
};

/* The "expected" halves of the messages for the restart, coordination and listener settings. */
#define ARGV_FORM "an array of 1 to 64 non-empty strings like [\"systemctl\", \"restart\", \"nomad\"]"
#define SERVERS_FORM                                                                        \
    "an array of up to 64 addresses like [\"https://10.0.0.1:4646\", \"https://10.0.0.2:4646\"], " \
    "or [] to use nomad.address"
#define ADDRESS_FORM                                                                        \
    "an address starting with http://, https:// or unix://, like \"http://127.0.0.1:4646\" or " \
    "\"unix:///run/nomad.sock\""
#define PLACEHOLDER_FORM "only {node_id}, {node_name} or {address} inside braces"
#define TOKENS_FORM                                                                         \
    "a list of groups like ( { name = \"alice\"; token = \"<16 or more characters>\"; } ), or () " \
    "for none"
#define TOKEN_NAME_FORM "1 to 64 characters from A-Z a-z 0-9 _ . @ -"
#define LISTEN_FORM                                                                         \
    "a host and port like \"127.0.0.1:8646\", \"[::1]:8646\" or \"localhost:8646\", with a port " \
    "from 1 to 65535"
#define PREFIX_FORM                                                                         \
    "1 to 64 characters from a-z A-Z 0-9 - _ ~ /, with no leading or trailing '/' and not under " \
    "\"nomad/\", like \"nomad-medic\""
#define NAMESPACE_FORM "a namespace name of 1 to 128 letters, digits or '-', like \"default\""
#define EXEC_FIX                                                                            \
    "expected a command like [\"ssh\", \"{address}\", \"sudo\", \"systemctl\", \"restart\", "      \
    "\"nomad\"], executor = \"node-agent\", mode = \"dry-run\" or enabled = false"

static const struct error_case error_cases[] = {
    /* libconfig syntax */
    {"log = {\n  level = ;\n};\n",
     ":2: syntax error; expected libconfig syntax, for example: log = { level = \"info\"; };"},
    {"log = { level = \"info\"; level = \"warn\"; };\n",
     ":1: duplicate setting name; expected libconfig syntax, for example: log = { level = \"info\"; };"},

    /* unknown names */
    {"nomd = { address = \"http://127.0.0.1:4646\"; };\n",
     ":1: nomd: unknown group; expected one of: nomad, journal, log, controller, rules, node, "
     "coordination, listener"},
    {"\nmode = \"enforce\";\n",
     ":2: mode: unknown setting; expected one of: nomad, journal, log, controller, rules, node, "
     "coordination, listener"},
    {"controller = {\n  mode = \"dry-run\";\n  intervl = \"1m\";\n};\n",
     ":3: controller.intervl: unknown setting; expected one of: mode, interval, pause_file, "
     "approval_ttl, rate_limit, breaker"},
    {"controller = {\n  breaker = {\n    max_share = 0.3;\n  };\n};\n",
     ":3: controller.breaker.max_share: unknown setting; expected one of: max_unhealthy_share, "
     "min_nodes"},
    {"rules = {\n  orphans = { enabled = true; };\n};\n",
     ":2: rules.orphans: unknown group; expected one of: orphan_services, system_gc, down_nodes, netns_leaks, "
     "port_conflicts, client_restart, server_restart, node_ineligible"},
    {"rules = {\n  orphan_services = {\n    graze = \"10m\";\n  };\n};\n",
     ":3: rules.orphan_services.graze: unknown setting; expected one of: enabled, mode, grace, "
     "rate_limit, cooldown"},
    {"rules = { down_nodes = { mode = \"enforce\"; }; };\n",
     ":1: rules.down_nodes.mode: unknown setting; expected one of: enabled, min_down"},
    {"nomad = { addr = \"http://127.0.0.1:4646\"; };\n",
     ":1: nomad.addr: unknown setting; expected one of: address, token, region, namespace, "
     "ca_cert, ca_path, client_cert, client_key, tls_server_name, skip_verify, http_auth, "
     "timeout, connect_timeout, retries, retry_backoff, max_response_size, per_page, "
     "max_connections, compression"},
    {"nomad = { compression = \"gzip\"; };\n",
     ":1: nomad.compression: invalid compression \"gzip\"; expected one of \"auto\", \"on\", \"off\""},

    /* wrong types */
    {"nomad = { retries = \"3\"; };\n",
     ":1: nomad.retries: wrong type string; expected an integer from 0 to 10, without quotes"},
    {"controller = { interval = 60; };\n",
     ":1: controller.interval: wrong type integer; expected a duration like \"90s\", \"10m\" or "
     "\"1h30m\""},
    {"nomad = \"http://127.0.0.1:4646\";\n",
     ":1: nomad: wrong type string; expected a group like nomad = { ... }"},
    {"rules = { system_gc = { enabled = \"yes\"; }; };\n",
     ":1: rules.system_gc.enabled: wrong type string; expected true or false, without quotes"},
    {"nomad = { region = [\"a\", \"b\"]; };\n",
     ":1: nomad.region: wrong type array; expected a string in double quotes, or \"\" to unset it"},
    {"controller = { breaker = { min_nodes = 3.5; }; };\n",
     ":1: controller.breaker.min_nodes: wrong type float; expected an integer from 0 to "
     "2147483647, without quotes"},
    {"controller = { breaker = { max_unhealthy_share = true; }; };\n",
     ":1: controller.breaker.max_unhealthy_share: wrong type boolean; expected a share from 0 to "
     "1 like 0.3, or a percentage like \"30%\""},
    {"rules = ( \"orphan_services\" );\n",
     ":1: rules: wrong type list; expected a group like rules = { ... }"},

    /* durations */
    {"# line 1\n# line 2\n# line 3\n# line 4\n# line 5\n# line 6\n# line 7\n# line 8\n"
     "rules = {\n  orphan_services = {\n    enabled = true;\n    grace = \"10 minutes\";\n"
     "  };\n};\n",
     ":12: rules.orphan_services.grace: invalid duration \"10 minutes\"; expected a duration "
     "like \"90s\", \"10m\" or \"1h30m\""},
    {"rules = { orphan_services = { grace = \"1500ms\"; }; };\n",
     ":1: rules.orphan_services.grace: invalid duration \"1500ms\"; expected a duration like "
     "\"90s\", \"10m\" or \"1h30m\""},
    {"rules = { down_nodes = { min_down = \"-5m\"; }; };\n",
     ":1: rules.down_nodes.min_down: invalid duration \"-5m\"; expected a duration like \"90s\", "
     "\"10m\" or \"1h30m\""},
    {"controller = { interval = \"0s\"; };\n",
     ":1: controller.interval: duration \"0s\" is too short; expected at least \"1s\""},
    {"controller = { approval_ttl = \"0\"; };\n",
     ":1: controller.approval_ttl: duration \"0\" is too short; expected at least \"1s\""},
    {"nomad = { timeout = \"soon\"; };\n",
     ":1: nomad.timeout: invalid duration \"soon\"; expected a duration like \"1500ms\", \"5s\" "
     "or \"1m\""},
    {"nomad = { connect_timeout = \"0\"; };\n",
     ":1: nomad.connect_timeout: duration \"0\" is too short; expected at least \"1ms\""},
    {"nomad = { retry_backoff = \"2m\"; };\n",
     ":1: nomad.retry_backoff: duration \"2m\" is too long; expected at most \"1m\""},

    /* rates */
    {"controller = { rate_limit = \"30 per hour\"; };\n",
     ":1: controller.rate_limit: invalid rate \"30 per hour\"; expected a rate like \"6/h\" or "
     "\"1/30m\", or \"0\" for no limit"},
    {"rules = { system_gc = { rate_limit = \"0/h\"; }; };\n",
     ":1: rules.system_gc.rate_limit: invalid rate \"0/h\"; expected a rate like \"6/h\" or "
     "\"1/30m\", or \"0\" for no limit"},

    /* modes */
    {"controller = { mode = \"enforcing\"; };\n",
     ":1: controller.mode: invalid mode \"enforcing\"; expected one of \"dry-run\", \"approve\", "
     "\"enforce\""},
    {"rules = { system_gc = { mode = \"Enforce\"; }; };\n",
     ":1: rules.system_gc.mode: invalid mode \"Enforce\"; expected one of \"dry-run\", "
     "\"approve\", \"enforce\""},

    /* breaker share */
    {"controller = { breaker = { max_unhealthy_share = 1.5; }; };\n",
     ":1: controller.breaker.max_unhealthy_share: 1.5 is outside 0..1; expected a share from 0 "
     "to 1 like 0.3, or a percentage like \"30%\""},
    {"controller = { breaker = { max_unhealthy_share = -0.1; }; };\n",
     ":1: controller.breaker.max_unhealthy_share: -0.1 is outside 0..1; expected a share from 0 "
     "to 1 like 0.3, or a percentage like \"30%\""},
    {"controller = { breaker = { max_unhealthy_share = 30; }; };\n",
     ":1: controller.breaker.max_unhealthy_share: 30 is outside 0..1; expected a share from 0 "
     "to 1 like 0.3, or a percentage like \"30%\""},
    /* libconfig 1.5 wraps this literal to 1, which would pass as a share. */
    {"controller = { breaker = { max_unhealthy_share = 4294967297; }; };\n",
     ":1: controller.breaker.max_unhealthy_share: 4294967297 is out of range; expected a share "
     "from 0 to 1 like 0.3, or a percentage like \"30%\""},
    {"controller = { breaker = { max_unhealthy_share = \"130%\"; }; };\n",
     ":1: controller.breaker.max_unhealthy_share: \"130%\" is outside 0..100%; expected a share "
     "from 0 to 1 like 0.3, or a percentage like \"30%\""},
    {"controller = { breaker = { max_unhealthy_share = \"30 %\"; }; };\n",
     ":1: controller.breaker.max_unhealthy_share: invalid share \"30 %\"; expected a share from "
     "0 to 1 like 0.3, or a percentage like \"30%\""},
    {"controller = { breaker = { max_unhealthy_share = \"0.3\"; }; };\n",
     ":1: controller.breaker.max_unhealthy_share: invalid share \"0.3\"; expected a share from "
     "0 to 1 like 0.3, or a percentage like \"30%\""},

    /* integer ranges */
    {"rules = { system_gc = { min_terminal_allocs = -1; }; };\n",
     ":1: rules.system_gc.min_terminal_allocs: -1 is out of range; expected an integer from 0 "
     "to 2147483647, without quotes"},
    {"rules = { system_gc = { min_terminal_evals = -5000; }; };\n",
     ":1: rules.system_gc.min_terminal_evals: -5000 is out of range; expected an integer from 0 "
     "to 2147483647, without quotes"},
    {"controller = { breaker = { min_nodes = -3; }; };\n",
     ":1: controller.breaker.min_nodes: -3 is out of range; expected an integer from 0 to "
     "2147483647, without quotes"},
    {"nomad = { per_page = 0; };\n",
     ":1: nomad.per_page: 0 is out of range; expected an integer from 1 to 10000, without "
     "quotes"},
    {"nomad = { per_page = 10001; };\n",
     ":1: nomad.per_page: 10001 is out of range; expected an integer from 1 to 10000, without "
     "quotes"},
    {"nomad = { retries = 11; };\n",
     ":1: nomad.retries: 11 is out of range; expected an integer from 0 to 10, without quotes"},
    {"nomad = { max_connections = 0; };\n",
     ":1: nomad.max_connections: 0 is out of range; expected an integer from 1 to 64, without "
     "quotes"},
    /* libconfig 1.5 wraps this literal to 705032704; the loader reports what was written. */
    {"rules = { system_gc = { min_terminal_allocs = 5000000000; }; };\n",
     ":1: rules.system_gc.min_terminal_allocs: 5000000000 is out of range; expected an integer "
     "from 0 to 2147483647, without quotes"},
    {"rules = { system_gc = { min_terminal_allocs = 5000000000L; }; };\n",
     ":1: rules.system_gc.min_terminal_allocs: 5000000000 is out of range; expected an integer "
     "from 0 to 2147483647, without quotes"},
    {"nomad = { per_page = 0x100000000; };\n",
     ":1: nomad.per_page: 4294967296 is out of range; expected an integer from 1 to 10000, "
     "without quotes"},
    {"nomad = { per_page = 99999999999999999999; };\n",
     ":1: nomad.per_page: integer is too large; expected an integer from 1 to 10000, without "
     "quotes"},

    /* sizes */
    {"nomad = { max_response_size = \"64MB\"; };\n",
     ":1: nomad.max_response_size: invalid size \"64MB\"; expected a size like \"512KiB\", "
     "\"64MiB\" or \"1GiB\""},
    {"nomad = { max_response_size = \"1KiB\"; };\n",
     ":1: nomad.max_response_size: size \"1KiB\" is out of range; expected a size from "
     "\"64KiB\" to \"4GiB\""},

    /* log level */
    {"log = { level = \"verbose\"; };\n",
     ":1: log.level: unknown log level \"verbose\"; expected one of \"debug\", \"info\", "
     "\"warn\", \"error\""},

    /* addresses and paths */
    {"nomad = {\n  address = \"\";\n};\n",
     ":2: nomad.address: empty address; expected an address starting with http://, https:// or "
     "unix://, like \"http://127.0.0.1:4646\" or \"unix:///run/nomad.sock\""},
    {"nomad = { address = \"127.0.0.1:4646\"; };\n",
     ":1: nomad.address: invalid address \"127.0.0.1:4646\"; expected an address starting with "
     "http://, https:// or unix://, like \"http://127.0.0.1:4646\" or \"unix:///run/nomad.sock\""},
    {"nomad = { address = \"ftp://127.0.0.1:4646\"; };\n",
     ":1: nomad.address: invalid address \"ftp://127.0.0.1:4646\"; expected an address starting "
     "with http://, https:// or unix://, like \"http://127.0.0.1:4646\" or "
     "\"unix:///run/nomad.sock\""},
    {"nomad = { address = \"https://\"; };\n",
     ":1: nomad.address: no host in address \"https://\"; expected an address starting with "
     "http://, https:// or unix://, like \"http://127.0.0.1:4646\" or \"unix:///run/nomad.sock\""},
    {"nomad = { address = \"unix://run/nomad.sock\"; };\n",
     ":1: nomad.address: no absolute socket path in address \"unix://run/nomad.sock\"; expected "
     "an address starting with http://, https:// or unix://, like \"http://127.0.0.1:4646\" or "
     "\"unix:///run/nomad.sock\""},
    {"journal = { path = \"\"; };\n",
     ":1: journal.path: empty path; expected a non-empty file path in double quotes"},
    {"controller = { pause_file = \"\"; };\n",
     ":1: controller.pause_file: empty path; expected a non-empty file path in double quotes"},

    /* unknown names in the new groups */
    {"rules = { client_restart = {\n  executer = \"exec\";\n}; };\n",
     ":2: rules.client_restart.executer: unknown setting; expected one of: enabled, mode, "
     "min_down, heartbeat_max_age, max_parallel, ready_timeout, settle, executor, command, "
     "rate_limit, cooldown"},
    {"rules = { server_restart = { settle = \"1m\"; }; };\n",
     ":1: rules.server_restart.settle: unknown setting; expected one of: enabled, mode, min_down, "
     "ready_timeout, executor, command, rate_limit, cooldown"},
    {"rules = { node_ineligible = { flaps = 3; }; };\n",
     ":1: rules.node_ineligible.flaps: unknown setting; expected one of: enabled, mode, "
     "flap_limit, flap_window, rate_limit, cooldown"},
    {"coordination = { ttl = \"30s\"; };\n",
     ":1: coordination.ttl: unknown setting; expected one of: namespace, prefix, lock_ttl, "
     "lock_delay, heartbeat_interval"},
    {"listener = { token = \"abc\"; };\n",
     ":1: listener.token: unknown setting; expected one of: enabled, address, tokens, "
     "healthy_within"},
    {"node = { restart = [\"reboot\"]; };\n",
     ":1: node.restart: unknown setting; expected one of: node_id, netns_dir, cni_cache_dir, "
     "ipam_dir, ipam_dir_legacy, network, bridge, cni_path, iptables, iptables_save, ip, "
     "command_timeout, servers, restart_command"},

    /* argument vectors */
    {"rules = { client_restart = { command = \"systemctl restart nomad\"; }; };\n",
     ":1: rules.client_restart.command: wrong type string; expected " ARGV_FORM},
    {"rules = { server_restart = { command = ( \"systemctl\", \"restart\" ); }; };\n",
     ":1: rules.server_restart.command: wrong type list; expected " ARGV_FORM},
    {"node = {\n  restart_command = [];\n};\n",
     ":2: node.restart_command: empty array; expected " ARGV_FORM},
    {"rules = { client_restart = {\n  command = [\n    \"systemctl\",\n    \"\"\n  ];\n}; };\n",
     ":2: rules.client_restart.command: element 2: empty string; expected " ARGV_FORM},
    {"rules = { client_restart = { command = [1, 2]; }; };\n",
     ":1: rules.client_restart.command: element 1: wrong type integer; expected " ARGV_FORM},
    {"rules = { client_restart = { command = [\"ssh\", \"{address}\", \"restart-{node}\"]; }; };\n",
     ":1: rules.client_restart.command: element 3: unknown placeholder \"{node}\"; expected "
     PLACEHOLDER_FORM},
    {"rules = { server_restart = { command = [\"awk\", \"{print $1}\"]; }; };\n",
     ":1: rules.server_restart.command: element 2: unknown placeholder \"{print $1}\"; expected "
     PLACEHOLDER_FORM},
    {"node = { restart_command = [\"restart\", \"--node={node_id\"]; };\n",
     ":1: node.restart_command: element 2: unclosed placeholder \"{node_id\"; expected "
     PLACEHOLDER_FORM},
    {"rules = { client_restart = { command = [\"{NODE_ID}\"]; }; };\n",
     ":1: rules.client_restart.command: element 1: unknown placeholder \"{NODE_ID}\"; expected "
     PLACEHOLDER_FORM},

    /* server addresses */
    {"node = { servers = \"https://127.0.0.1:4646\"; };\n",
     ":1: node.servers: wrong type string; expected " SERVERS_FORM},
    {"node = { servers = [\"127.0.0.1:4646\"]; };\n",
     ":1: node.servers: element 1: invalid address \"127.0.0.1:4646\"; expected " ADDRESS_FORM},
    {"node = { servers = [\"https://127.0.0.1:4646\", \"\"]; };\n",
     ":1: node.servers: element 2: empty address; expected " ADDRESS_FORM},
    {"node = { servers = [4646]; };\n",
     ":1: node.servers: element 1: wrong type integer; expected " SERVERS_FORM},

    /* executors */
    {"rules = { client_restart = { executor = \"ssh\"; }; };\n",
     ":1: rules.client_restart.executor: invalid executor \"ssh\"; expected one of \"exec\", "
     "\"node-agent\""},
    {"rules = { server_restart = { executor = \"Exec\"; }; };\n",
     ":1: rules.server_restart.executor: invalid executor \"Exec\"; expected one of \"exec\", "
     "\"node-agent\""},
    {"rules = { server_restart = { executor = true; }; };\n",
     ":1: rules.server_restart.executor: wrong type boolean; expected one of \"exec\", "
     "\"node-agent\""},

    /* exec without a command, in a mode that acts */
    {"controller = { mode = \"enforce\"; };\nrules = { server_restart = { cooldown = \"1h\"; }; };\n",
     ":2: rules.server_restart: executor \"exec\" has no command to run in enforce mode; " EXEC_FIX},
    {"rules = {\n  server_restart = {\n    mode = \"approve\";\n  };\n};\n",
     ":2: rules.server_restart: executor \"exec\" has no command to run in approve mode; " EXEC_FIX},
    {"controller = { mode = \"approve\"; };\n"
     "rules = {\n  server_restart = { enabled = false; };\n"
     "  client_restart = {\n    executor = \"exec\";\n  };\n};\n",
     ":4: rules.client_restart: executor \"exec\" has no command to run in approve mode; " EXEC_FIX},

    /* restart and flap limits */
    {"rules = { client_restart = { max_parallel = 0; }; };\n",
     ":1: rules.client_restart.max_parallel: 0 is out of range; expected an integer from 1 to 100, "
     "without quotes"},
    {"rules = { client_restart = { max_parallel = 101; }; };\n",
     ":1: rules.client_restart.max_parallel: 101 is out of range; expected an integer from 1 to "
     "100, without quotes"},
    {"rules = { node_ineligible = { flap_limit = 1; }; };\n",
     ":1: rules.node_ineligible.flap_limit: 1 is out of range; expected an integer from 2 to 100, "
     "without quotes"},
    {"rules = { client_restart = { ready_timeout = \"0s\"; }; };\n",
     ":1: rules.client_restart.ready_timeout: duration \"0s\" is too short; expected at least "
     "\"1s\""},
    {"rules = { client_restart = { heartbeat_max_age = \"0\"; }; };\n",
     ":1: rules.client_restart.heartbeat_max_age: duration \"0\" is too short; expected at least "
     "\"1s\""},
    {"rules = { node_ineligible = { flap_window = \"0s\"; }; };\n",
     ":1: rules.node_ineligible.flap_window: duration \"0s\" is too short; expected at least "
     "\"1s\""},

    /* coordination */
    {"coordination = { lock_ttl = \"5s\"; };\n",
     ":1: coordination.lock_ttl: duration \"5s\" is too short; expected at least \"10s\""},
    {"coordination = { lock_ttl = \"25h\"; };\n",
     ":1: coordination.lock_ttl: duration \"25h\" is too long; expected at most \"24h\""},
    {"coordination = { lock_delay = \"2h\"; };\n",
     ":1: coordination.lock_delay: duration \"2h\" is too long; expected at most \"1h\""},
    {"coordination = { heartbeat_interval = \"0s\"; };\n",
     ":1: coordination.heartbeat_interval: duration \"0s\" is too short; expected at least "
     "\"1s\""},
    {"coordination = { heartbeat_interval = \"2h\"; };\n",
     ":1: coordination.heartbeat_interval: duration \"2h\" is too long; expected at most "
     "\"1h\""},
    {"coordination = { prefix = \"/nomad-medic\"; };\n",
     ":1: coordination.prefix: leading or trailing '/' in prefix \"/nomad-medic\"; expected "
     PREFIX_FORM},
    {"coordination = { prefix = \"nomad-medic/\"; };\n",
     ":1: coordination.prefix: leading or trailing '/' in prefix \"nomad-medic/\"; expected "
     PREFIX_FORM},
    {"coordination = { prefix = \"nomad medic\"; };\n",
     ":1: coordination.prefix: invalid character in prefix \"nomad medic\"; expected " PREFIX_FORM},
    {"coordination = { prefix = \"nomad.medic\"; };\n",
     ":1: coordination.prefix: invalid character in prefix \"nomad.medic\"; expected " PREFIX_FORM},
    {"coordination = { prefix = \"\"; };\n",
     ":1: coordination.prefix: empty prefix; expected " PREFIX_FORM},
    {"coordination = { prefix = "
     "\"a123456789b123456789c123456789d123456789e123456789f123456789g1234\"; };\n",
     ":1: coordination.prefix: prefix too long "
     "\"a123456789b123456789c123456789d123456789e123456789f123456789g1234\"; expected "
     PREFIX_FORM},
    {"coordination = { prefix = \"nomad\"; };\n",
     ":1: coordination.prefix: Nomad's reserved \"nomad\" directory in prefix \"nomad\"; "
     "expected " PREFIX_FORM},
    {"coordination = { prefix = \"nomad/jobs/medic\"; };\n",
     ":1: coordination.prefix: Nomad's reserved \"nomad\" directory in prefix "
     "\"nomad/jobs/medic\"; expected " PREFIX_FORM},
    {"coordination = { namespace = \"*\"; };\n",
     ":1: coordination.namespace: invalid namespace \"*\"; expected " NAMESPACE_FORM},
    {"coordination = { namespace = \"ops_tools\"; };\n",
     ":1: coordination.namespace: invalid namespace \"ops_tools\"; expected " NAMESPACE_FORM},
    {"coordination = { namespace = \"\"; };\n",
     ":1: coordination.namespace: empty namespace; expected " NAMESPACE_FORM},

    /* listener address */
    {"listener = { address = \"8646\"; };\n",
     ":1: listener.address: no port in listen address \"8646\"; expected " LISTEN_FORM},
    {"listener = { address = \"127.0.0.1\"; };\n",
     ":1: listener.address: no port in listen address \"127.0.0.1\"; expected " LISTEN_FORM},
    {"listener = { address = \"127.0.0.1:0\"; };\n",
     ":1: listener.address: invalid port in listen address \"127.0.0.1:0\"; expected " LISTEN_FORM},
    {"listener = { address = \"127.0.0.1:65536\"; };\n",
     ":1: listener.address: invalid port in listen address \"127.0.0.1:65536\"; expected "
     LISTEN_FORM},
    {"listener = { address = \"localhost:http\"; };\n",
     ":1: listener.address: invalid port in listen address \"localhost:http\"; expected "
     LISTEN_FORM},
    {"listener = { address = \"medic.example:8646\"; };\n",
     ":1: listener.address: invalid host in listen address \"medic.example:8646\"; expected "
     LISTEN_FORM},
    {"listener = { address = \"256.0.0.1:8646\"; };\n",
     ":1: listener.address: invalid host in listen address \"256.0.0.1:8646\"; expected "
     LISTEN_FORM},
    {"listener = { address = \"::1:8646\"; };\n",
     ":1: listener.address: invalid host in listen address \"::1:8646\"; expected " LISTEN_FORM},
    {"listener = { address = \"[::1]8646\"; };\n",
     ":1: listener.address: no port in listen address \"[::1]8646\"; expected " LISTEN_FORM},
    {"listener = { address = \"[127.0.0.1]:8646\"; };\n",
     ":1: listener.address: invalid IPv6 address in listen address \"[127.0.0.1]:8646\"; "
     "expected " LISTEN_FORM},
    {"listener = { address = \"\"; };\n",
     ":1: listener.address: empty listen address; expected " LISTEN_FORM},
    {"listener = { healthy_within = \"0s\"; };\n",
     ":1: listener.healthy_within: duration \"0s\" is too short; expected at least \"1s\""},

    /* listener tokens (values that must never be echoed are checked separately) */
    {"listener = { tokens = { name = \"alice\"; }; };\n",
     ":1: listener.tokens: wrong type group; expected " TOKENS_FORM},
    {"listener = { tokens = [\"alice\"]; };\n",
     ":1: listener.tokens: wrong type array; expected " TOKENS_FORM},
    {"listener = { tokens = ( \"alice\" ); };\n",
     ":1: listener.tokens: element 1: wrong type string; expected " TOKENS_FORM},
    {"listener = {\n  tokens = (\n    { token = \"0123456789abcdef\"; }\n  );\n};\n",
     ":3: listener.tokens: element 1: no name; expected name = \"alice\"; with " TOKEN_NAME_FORM},
    {"listener = {\n  tokens = (\n    { name = \"alice\"; }\n  );\n};\n",
     ":3: listener.tokens: \"alice\" has no token; expected token = \"<16 or more characters>\";"},
    {"listener = {\n  tokens = (\n    { name = \"alice\";\n      user = \"alice\"; }\n  );\n};\n",
     ":4: listener.tokens: element 1: unknown setting \"user\"; expected name and token"},
    {"listener = { tokens = ( { name = 7; token = \"0123456789abcdef\"; } ); };\n",
     ":1: listener.tokens: element 1: name has wrong type integer; expected a string in double "
     "quotes"},
    {"listener = { tokens = ( { name = \"al ice\"; token = \"0123456789abcdef\"; } ); };\n",
     ":1: listener.tokens: element 1: invalid name \"al ice\"; expected " TOKEN_NAME_FORM},
    {"listener = { tokens = ( { name = \"\"; token = \"0123456789abcdef\"; } ); };\n",
     ":1: listener.tokens: element 1: invalid name \"\"; expected " TOKEN_NAME_FORM},
    {"listener = { tokens = ( { name = \"alice\"; token = 1234567890123456; } ); };\n",
     ":1: listener.tokens: token of \"alice\" has wrong type integer; expected a string in double "
     "quotes"},
    {"listener = {\n  tokens = (\n    { name = \"alice\"; token = \"0123456789abcdef\"; },\n"
     "    { name = \"bob\"; token = \"fedcba9876543210\"; },\n"
     "    { name = \"alice\"; token = \"0011223344556677\"; }\n  );\n};\n",
     ":5: listener.tokens: name \"alice\" is used by elements 1 and 3; expected a different name "
     "for each token"},
};

static void test_load_errors(void **state)
{
    struct fixture *fx = *state;

    for (size_t i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
        struct policy p;
        char err[1024] = "";
        char expected[PATH_MAX + 1024];

        snprintf(expected, sizeof(expected), "%s/policy.conf%s", fx->dir, error_cases[i].message);
        assert_int_equal(load_text(fx, error_cases[i].text, &p, err, sizeof(err)), -1);
        assert_string_equal(err, expected);
    }
}

static void test_load_error_frees_policy(void **state)
{
    struct policy p;
    char err[512];

    setenv("NOMAD_TOKEN", "env-token-7d3b", 1);
    assert_int_equal(load_text(*state,
                               "journal = { path = \"/srv/j.db\"; };\nlog = { level = \"loud\"; };\n",
                               &p, err, sizeof(err)),
                     -1);
    assert_null(p.source_path);
    assert_null(p.nomad.address);
    assert_null(p.nomad.token);
    assert_null(p.journal_path);
    assert_null(p.pause_file);
    assert_null(p.log_level);
    /* A zeroed policy may be freed again. */
    policy_free(&p);
}

static void test_load_missing_file(void **state)
{
    struct fixture *fx = *state;
    struct policy p;
    char path[PATH_MAX + 16];
    char err[512];
    char expected[PATH_MAX + 128];

    snprintf(path, sizeof(path), "%s/absent.conf", fx->dir);
    snprintf(expected, sizeof(expected),
             "%s: cannot read: No such file or directory; check the --config path", path);
    assert_int_equal(policy_load(path, &p, err, sizeof(err)), -1);
    assert_string_equal(err, expected);
    assert_null(p.nomad.address);
}

static void test_load_directory(void **state)
{
    struct fixture *fx = *state;
    struct policy p;
    char err[512];
    char expected[PATH_MAX + 128];

    snprintf(expected, sizeof(expected),
             "%s: cannot read: Is a directory; check the --config path", fx->dir);
    assert_int_equal(policy_load(fx->dir, &p, err, sizeof(err)), -1);
    assert_string_equal(err, expected);
}

static void test_load_file_too_large(void **state)
{
    struct fixture *fx = *state;
    struct policy p;
    char path[PATH_MAX];
    char err[512];
    char expected[PATH_MAX + 128];
    char *text = malloc(1024 * 1024 + 2);

    assert_non_null(text);
    memset(text, '#', 1024 * 1024 + 1);
    text[1024 * 1024 + 1] = '\0';
    write_file(fx, "large.conf", text, path, sizeof(path));
    free(text);

    snprintf(expected, sizeof(expected),
             "%s: cannot read: larger than 1048576 bytes; check the --config path", path);
    assert_int_equal(policy_load(path, &p, err, sizeof(err)), -1);
    assert_string_equal(err, expected);
}

static void test_load_nul_byte(void **state)
{
    static const char text[] = "log = { level = \"info\"; };\n# comment\0journal = { path = \"\"; };\n";
    struct fixture *fx = *state;
    struct policy p;
    char path[PATH_MAX + 16];
    char err[512];
    char expected[PATH_MAX + 128];
    FILE *f;

    snprintf(path, sizeof(path), "%s/nul.conf", fx->dir);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, sizeof(text) - 1, f), sizeof(text) - 1);
    assert_int_equal(fclose(f), 0);

    snprintf(expected, sizeof(expected), "%s:2: NUL byte in the file; expected a text file", path);
    assert_int_equal(policy_load(path, &p, err, sizeof(err)), -1);
    assert_string_equal(err, expected);
}

static void test_error_in_included_file(void **state)
{
    struct fixture *fx = *state;
    struct policy p;
    char rules_path[PATH_MAX];
    char main_text[PATH_MAX + 64];
    char err[1024];
    char expected[PATH_MAX + 256];

    write_file(fx, "rules.conf", "rules = {\n  system_gc = { cooldown = \"soon\"; };\n};\n",
               rules_path, sizeof(rules_path));
    snprintf(main_text, sizeof(main_text), "@include \"%s\"\n", rules_path);
    snprintf(expected, sizeof(expected),
             "%s:2: rules.system_gc.cooldown: invalid duration \"soon\"; expected a duration like "
             "\"90s\", \"10m\" or \"1h30m\"",
             rules_path);
    assert_int_equal(load_text(fx, main_text, &p, err, sizeof(err)), -1);
    assert_string_equal(err, expected);
}

static void test_missing_include(void **state)
{
    struct fixture *fx = *state;
    struct policy p;
    char main_text[PATH_MAX + 64];
    char err[1024];
    char expected[PATH_MAX + 256];

    snprintf(main_text, sizeof(main_text), "log = { level = \"info\"; };\n@include \"%s/absent.conf\"\n",
             fx->dir);
    snprintf(expected, sizeof(expected),
             "%s/policy.conf:2: cannot open include file; expected an @include path that exists "
             "(a relative one starts at the working directory)",
             fx->dir);
    assert_int_equal(load_text(fx, main_text, &p, err, sizeof(err)), -1);
    assert_string_equal(err, expected);
}

static void test_error_truncated_to_buffer(void **state)
{
    struct policy p;
    char err[16];

    memset(err, 'x', sizeof(err));
    assert_int_equal(load_text(*state, "log = { level = \"loud\"; };\n", &p, err, sizeof(err)), -1);
    assert_int_equal(strlen(err), sizeof(err) - 1);
    assert_int_equal(load_text(*state, "log = { level = \"loud\"; };\n", &p, NULL, 0), -1);
}

/* ---------------------------------------------------------------------- */
/* Restart, coordination and listener settings                             */

static void test_command_load_and_dump(void **state)
{
    struct policy p;
    struct policy again;
    char path[PATH_MAX];
    char err[1024] = "";
    char *text;

    assert_int_equal(load_text(*state,
                               "rules = { client_restart = {\n"
                               "  executor = \"exec\";\n"
                               "  command = [\"ssh\", \"-l\", \"ops\", \"{address}\",\n"
                               "             \"restart --id={node_id} --name \\\"{node_name}\\\"\"];\n"
                               "}; };\n"
                               "node = { restart_command = [\"/usr/local/sbin/restart-nomad\"]; };\n",
                               &p, err, sizeof(err)),
                     0);
    assert_string_equal(err, "");
    assert_int_equal(p.client_restart.executor, EXECUTOR_EXEC);
    assert_int_equal(p.client_restart.command.argc, 5);
    assert_string_equal(p.client_restart.command.argv[0], "ssh");
    assert_string_equal(p.client_restart.command.argv[3], "{address}");
    assert_string_equal(p.client_restart.command.argv[4],
                        "restart --id={node_id} --name \"{node_name}\"");
    assert_null(p.client_restart.command.argv[5]);
    assert_int_equal(p.node_restart_command.argc, 1);
    assert_string_equal(p.node_restart_command.argv[0], "/usr/local/sbin/restart-nomad");
    assert_null(p.node_restart_command.argv[1]);

    text = dump_or_fail(&p);
    assert_non_null(strstr(text, "    executor = \"exec\";\n"
                                 "    command = [\"ssh\", \"-l\", \"ops\", \"{address}\", "
                                 "\"restart --id={node_id} --name \\\"{node_name}\\\"\"];\n"));
    assert_non_null(strstr(text, "  restart_command = [\"/usr/local/sbin/restart-nomad\"];\n"));

    write_file(*state, "dump.conf", text, path, sizeof(path));
    assert_int_equal(policy_load(path, &again, err, sizeof(err)), 0);
    assert_int_equal(again.client_restart.command.argc, 5);
    assert_string_equal(again.client_restart.command.argv[4], p.client_restart.command.argv[4]);
    assert_null(again.client_restart.command.argv[5]);
    free(text);
    policy_free(&p);
    policy_free(&again);
}

/* Return malloc'd policy text whose rules.client_restart.command has n elements, "a1" to "aN". */
static char *command_of_length(int n)
{
    size_t size = 64 + (size_t)n * 8;
    char *text = malloc(size);
    size_t used;

    assert_non_null(text);
    used = (size_t)snprintf(text, size, "rules = { client_restart = { command = [");
    for (int i = 1; i <= n; i++)
        used += (size_t)snprintf(text + used, size - used, "%s\"a%d\"", i > 1 ? ", " : "", i);
    snprintf(text + used, size - used, "]; }; };\n");
    return text;
}

static void test_command_element_limit(void **state)
{
    struct fixture *fx = *state;
    struct policy p;
    char err[1024] = "";
    char expected[PATH_MAX + 1024];
    char *text = command_of_length(64);

    assert_int_equal(load_text(fx, text, &p, err, sizeof(err)), 0);
    assert_int_equal(p.client_restart.command.argc, 64);
    assert_string_equal(p.client_restart.command.argv[63], "a64");
    assert_null(p.client_restart.command.argv[64]);
    policy_free(&p);
    free(text);

    text = command_of_length(65);
    snprintf(expected, sizeof(expected),
             "%s/policy.conf:1: rules.client_restart.command: 65 elements, more than 64; expected "
             ARGV_FORM, fx->dir);
    assert_int_equal(load_text(fx, text, &p, err, sizeof(err)), -1);
    assert_string_equal(err, expected);
    free(text);
}

static void test_servers_load_and_dump(void **state)
{
    struct policy p;
    char err[1024] = "";
    char *text;

    assert_int_equal(load_text(*state,
                               "node = { servers = [\"https://medic:srv-pass-77aa@127.0.0.1:4646\", "
                               "\"http://127.0.0.1:4656\"]; };\n",
                               &p, err, sizeof(err)),
                     0);
    assert_int_equal(p.node_servers.argc, 2);
    /* The loader keeps the userinfo, because the client sends it as Basic auth. */
    assert_string_equal(p.node_servers.argv[0], "https://medic:srv-pass-77aa@127.0.0.1:4646");
    assert_string_equal(p.node_servers.argv[1], "http://127.0.0.1:4656");
    assert_null(p.node_servers.argv[2]);

    text = dump_or_fail(&p);
    assert_null(strstr(text, "srv-pass-77aa"));
    assert_non_null(strstr(text, "  # servers credentials are set (not shown)\n"
                                 "  servers = [\"https://127.0.0.1:4646\", "
                                 "\"http://127.0.0.1:4656\"];\n"));
    free(text);
    policy_free(&p);

    /* Unlike a command, the server list may be empty. */
    assert_int_equal(load_text(*state, "node = { servers = []; };\n", &p, err, sizeof(err)), 0);
    assert_int_equal(p.node_servers.argc, 0);
    assert_null(p.node_servers.argv);
    policy_free(&p);
}

/* Files that must load although a restart rule has executor "exec" and no command. */
static void test_exec_without_command_allowed(void **state)
{
    static const char *const texts[] = {
        /* No group for the rule: the built-in server_restart follows the global mode. */
        "controller = { mode = \"enforce\"; };\n",
        /* Dry-run only records what it would restart. */
        "controller = { mode = \"enforce\"; };\n"
        "rules = { server_restart = { mode = \"dry-run\"; }; };\n",
        "rules = { client_restart = { executor = \"exec\"; }; };\n",
        /* A disabled rule never acts. */
        "controller = { mode = \"approve\"; };\n"
        "rules = { server_restart = { enabled = false; }; };\n",
        /* node-agent uses node.restart_command on the host instead. */
        "controller = { mode = \"enforce\"; };\n"
        "rules = { server_restart = { executor = \"node-agent\"; }; };\n",
        "rules = { server_restart = { mode = \"enforce\"; command = [\"restart-server\", "
        "\"{node_name}\"]; }; };\n",
    };

    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct policy p;
        char err[1024] = "";

        assert_int_equal(load_text(*state, texts[i], &p, err, sizeof(err)), 0);
        assert_string_equal(err, "");
        policy_free(&p);
    }
}

static void test_executor_values(void **state)
{
    struct policy p;
    char err[1024] = "";
    char *text;

    assert_int_equal(load_text(*state,
                               "rules = {\n"
                               "  client_restart = { executor = \"exec\"; };\n"
                               "  server_restart = { executor = \"node-agent\"; };\n"
                               "};\n",
                               &p, err, sizeof(err)),
                     0);
    assert_int_equal(p.client_restart.executor, EXECUTOR_EXEC);
    assert_int_equal(p.server_restart.executor, EXECUTOR_NODE_AGENT);
    text = dump_or_fail(&p);
    assert_non_null(strstr(text, "    settle = \"2m\";\n    executor = \"exec\";\n"));
    assert_non_null(strstr(text, "    ready_timeout = \"10m\";\n    executor = \"node-agent\";\n"));
    free(text);
    policy_free(&p);
}

static void test_listen_address_forms(void **state)
{
    static const char *const valid[] = {
        "127.0.0.1:8646", "0.0.0.0:9646", "10.1.2.3:1", "127.0.0.1:65535", "localhost:8646",
        "[::1]:8646",     "[::]:8646",    "[fe80::1]:8646",
    };

    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        struct policy p;
        char text[256];
        char line[256];
        char err[1024] = "";
        char *dump;

        snprintf(text, sizeof(text), "listener = { enabled = true; address = \"%s\"; };\n", valid[i]);
        assert_int_equal(load_text(*state, text, &p, err, sizeof(err)), 0);
        assert_string_equal(p.listener.address, valid[i]);
        assert_int_equal(p.listener.enabled, 1);
        dump = dump_or_fail(&p);
        snprintf(line, sizeof(line), "  address = \"%s\";\n", valid[i]);
        assert_non_null(strstr(dump, line));
        free(dump);
        policy_free(&p);
    }
}

static void test_coordination_forms(void **state)
{
    static const char *const prefixes[] = {
        "nomad-medic", "ops/nomad-medic", "a", "A-b_c~d/e", "nomadic", "medic/nomad",
        "a123456789b123456789c123456789d123456789e123456789f123456789g123",
    };
    static const char *const namespaces[] = {"default", "ops-tools", "A1", "-"};

    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        struct policy p;
        char text[256];
        char err[1024] = "";

        snprintf(text, sizeof(text), "coordination = { prefix = \"%s\"; };\n", prefixes[i]);
        assert_int_equal(load_text(*state, text, &p, err, sizeof(err)), 0);
        assert_string_equal(p.coord_prefix, prefixes[i]);
        policy_free(&p);
    }
    for (size_t i = 0; i < sizeof(namespaces) / sizeof(namespaces[0]); i++) {
        struct policy p;
        char text[256];
        char err[1024] = "";

        snprintf(text, sizeof(text), "coordination = { namespace = \"%s\"; };\n", namespaces[i]);
        assert_int_equal(load_text(*state, text, &p, err, sizeof(err)), 0);
        assert_string_equal(p.coord_namespace, namespaces[i]);
        policy_free(&p);
    }
}

static void test_coordination_bounds(void **state)
{
    struct policy p;
    char err[1024] = "";

    assert_int_equal(load_text(*state,
                               "coordination = { lock_ttl = \"10s\"; lock_delay = \"0\"; "
                               "heartbeat_interval = \"1s\"; };\n",
                               &p, err, sizeof(err)),
                     0);
    assert_int_equal(p.lock_ttl_s, 10);
    assert_int_equal(p.lock_delay_s, 0);
    assert_int_equal(p.heartbeat_interval_s, 1);
    policy_free(&p);

    assert_int_equal(load_text(*state,
                               "coordination = { lock_ttl = \"24h\"; lock_delay = \"1h\"; "
                               "heartbeat_interval = \"1h\"; };\n",
                               &p, err, sizeof(err)),
                     0);
    assert_int_equal(p.lock_ttl_s, 86400);
    assert_int_equal(p.lock_delay_s, 3600);
    assert_int_equal(p.heartbeat_interval_s, 3600);
    policy_free(&p);
}

static void test_tokens_load_and_dump(void **state)
{
    struct policy p;
    struct policy again;
    char path[PATH_MAX];
    char err[1024] = "";
    char *text;

    assert_int_equal(load_text(*state,
                               "listener = {\n"
                               "  enabled = true;\n"
                               "  tokens = (\n"
                               "    { name = \"alice\"; token = \"tok-A-0123456789abcdef\"; },\n"
                               "    { token = \"tok-B-!#$%&'()*+,-./:;<=>?@[]^_`{|}~\"; name = \"ci.bot_1@ops-team\"; }\n"
                               "  );\n"
                               "};\n",
                               &p, err, sizeof(err)),
                     0);
    assert_int_equal(p.listener.n_tokens, 2);
    assert_string_equal(p.listener.tokens[0].name, "alice");
    assert_string_equal(p.listener.tokens[0].token, "tok-A-0123456789abcdef");
    assert_string_equal(p.listener.tokens[1].name, "ci.bot_1@ops-team");
    assert_string_equal(p.listener.tokens[1].token, "tok-B-!#$%&'()*+,-./:;<=>?@[]^_`{|}~");

    text = dump_or_fail(&p);
    assert_non_null(strstr(text, "  enabled = true;\n"
                                 "  address = \"127.0.0.1:8646\";\n"
                                 "  # tokens: alice, ci.bot_1@ops-team (values not shown)\n"
                                 "  healthy_within = \"5m\";\n"));
    assert_null(strstr(text, "tok-A-"));
    assert_null(strstr(text, "tok-B-"));

    /* A reloaded dump has no tokens, as with nomad.token. */
    write_file(*state, "dump.conf", text, path, sizeof(path));
    assert_int_equal(policy_load(path, &again, err, sizeof(err)), 0);
    assert_int_equal(again.listener.n_tokens, 0);
    assert_null(again.listener.tokens);
    free(text);
    policy_free(&p);
    policy_free(&again);

    /* Enabled with no tokens is allowed: health and metrics only. */
    assert_int_equal(load_text(*state, "listener = { enabled = true; tokens = (); };\n", &p, err,
                               sizeof(err)),
                     0);
    assert_int_equal(p.listener.enabled, 1);
    assert_int_equal(p.listener.n_tokens, 0);
    policy_free(&p);
}

#define SECRET "zz-secret-5a1c-0042"

/* Token errors: exact messages, and the token value appears in none of them. */
static void test_token_never_in_messages(void **state)
{
    static const struct error_case cases[] = {
        {"listener = { tokens = (\n  { name = \"alice\"; token = \"" SECRET "\"; },\n"
         "  { name = \"bob\"; token = \"" SECRET "\"; }\n); };\n",
         ":3: listener.tokens: \"bob\" has the same token as \"alice\"; expected a different "
         "token for each name"},
        {"listener = { tokens = ( { name = \"alice\"; token = \"zz-secret\"; } ); };\n",
         ":1: listener.tokens: token of \"alice\" is shorter than 16 characters; expected at least "
         "16 random characters, for example from `openssl rand -hex 32`"},
        {"listener = { tokens = ( { name = \"alice\"; token = \"zz secret 5a1c 0042\"; } ); };\n",
         ":1: listener.tokens: token of \"alice\" contains a space, a control or a non-ASCII "
         "character; expected printable ASCII without spaces, since it is sent in an HTTP header"},
        {"listener = { tokens = ( { name = \"alice\"; token = \"zz-secret-\\n5a1c-0042\"; } ); };\n",
         ":1: listener.tokens: token of \"alice\" contains a space, a control or a non-ASCII "
         "character; expected printable ASCII without spaces, since it is sent in an HTTP header"},
        {"listener = { tokens = ( { name = \"al ice\"; token = \"" SECRET "\"; } ); };\n",
         ":1: listener.tokens: element 1: invalid name \"al ice\"; expected " TOKEN_NAME_FORM},
        {"listener = { tokens = ( { name = \"alice\"; token = \"" SECRET "\"; role = \"x\"; } ); };\n",
         ":1: listener.tokens: element 1: unknown setting \"role\"; expected name and token"},
        {"listener = { tokens = ( { token = \"" SECRET "\"; } ); };\n",
         ":1: listener.tokens: element 1: no name; expected name = \"alice\"; with " TOKEN_NAME_FORM},
        {"listener = { tokens = ( \"" SECRET "\" ); };\n",
         ":1: listener.tokens: element 1: wrong type string; expected " TOKENS_FORM},
        {"listener = { tokens = [\"" SECRET "\"]; };\n",
         ":1: listener.tokens: wrong type array; expected " TOKENS_FORM},
        {"listener = { tokens = \"" SECRET "\"; };\n",
         ":1: listener.tokens: wrong type string; expected " TOKENS_FORM},
        /* An error after valid tokens were loaded. */
        {"listener = {\n  tokens = ( { name = \"alice\"; token = \"" SECRET "\"; } );\n"
         "  healthy_within = \"soon\";\n};\n",
         ":3: listener.healthy_within: invalid duration \"soon\"; expected a duration like \"90s\", "
         "\"10m\" or \"1h30m\""},
    };
    struct fixture *fx = *state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct policy p;
        char err[1024] = "";
        char expected[PATH_MAX + 1024];

        snprintf(expected, sizeof(expected), "%s/policy.conf%s", fx->dir, cases[i].message);
        assert_int_equal(load_text(fx, cases[i].text, &p, err, sizeof(err)), -1);
        assert_string_equal(err, expected);
        assert_null(strstr(err, "zz-secret"));
        assert_null(strstr(err, "5a1c"));
    }
}

/* A failed load frees what the new kinds allocated and leaves them zeroed. */
static void test_load_error_frees_new_fields(void **state)
{
    struct policy p;
    char err[1024];

    assert_int_equal(load_text(*state,
                               "rules = { client_restart = { command = [\"restart\", \"{node_id}\"]; }; };\n"
                               "node = { servers = [\"http://127.0.0.1:4646\"]; };\n"
                               "listener = { tokens = ( { name = \"a\"; token = \"0123456789abcdef\"; } ); };\n"
                               "coordination = { prefix = \"nomad/x\"; };\n",
                               &p, err, sizeof(err)),
                     -1);
    assert_int_equal(p.client_restart.command.argc, 0);
    assert_null(p.client_restart.command.argv);
    assert_int_equal(p.node_servers.argc, 0);
    assert_null(p.node_servers.argv);
    assert_null(p.node_restart_command.argv);
    assert_int_equal(p.listener.n_tokens, 0);
    assert_null(p.listener.tokens);
    assert_null(p.listener.address);
    assert_null(p.coord_namespace);
    assert_null(p.coord_prefix);
    policy_free(&p);
}

/* ---------------------------------------------------------------------- */
/* Shipped policies                                                        */

static void test_shipped_default_loads(void **state)
{
    struct policy p;
    char err[1024] = "";
    (void)state;

    assert_int_equal(policy_load(SHIPPED_DEFAULT, &p, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    policy_free(&p);
}

static void test_shipped_default_equals_builtin(void **state)
{
    struct policy shipped;
    struct policy builtin;
    char err[1024];
    char *shipped_text;
    char *builtin_text;
    (void)state;

    assert_int_equal(policy_load(SHIPPED_DEFAULT, &shipped, err, sizeof(err)), 0);
    assert_int_equal(policy_init_defaults(&builtin, err, sizeof(err)), 0);
    shipped_text = dump_or_fail(&shipped);
    builtin_text = dump_or_fail(&builtin);
    assert_string_equal(shipped_text, builtin_text);
    free(shipped_text);
    free(builtin_text);
    policy_free(&shipped);
    policy_free(&builtin);
}

/* default.conf leaves the connection to the environment, as its comments promise. */
static void test_shipped_default_keeps_env(void **state)
{
    struct policy p;
    char err[1024];
    (void)state;

    setenv("NOMAD_ADDR", "https://127.0.0.2:4646", 1);
    setenv("NOMAD_TOKEN", "env-token-7d3b", 1);
    setenv("NOMAD_SKIP_VERIFY", "true", 1);
    assert_int_equal(policy_load(SHIPPED_DEFAULT, &p, err, sizeof(err)), 0);
    assert_string_equal(p.nomad.address, "https://127.0.0.2:4646");
    assert_string_equal(p.nomad.token, "env-token-7d3b");
    assert_int_equal(p.nomad.skip_verify, 1);
    policy_free(&p);
}

static void test_shipped_audit_is_dry_run(void **state)
{
    struct policy p;
    char err[1024] = "";
    (void)state;

    assert_int_equal(policy_load(SHIPPED_AUDIT, &p, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_int_equal(p.mode, MODE_DRY_RUN);
    assert_int_equal(p.orphan_services.common.enabled, 1);
    assert_int_equal(p.system_gc.common.enabled, 1);
    assert_int_equal(p.down_nodes.common.enabled, 1);
    assert_int_equal(p.orphan_services.common.mode, MODE_DRY_RUN);
    assert_int_equal(p.system_gc.common.mode, MODE_DRY_RUN);

    /* Changing only the global mode leaves every acting rule in dry-run. */
    p.mode = MODE_ENFORCE;
    assert_int_equal(policy_rule_mode(&p, &p.orphan_services.common), MODE_DRY_RUN);
    assert_int_equal(policy_rule_mode(&p, &p.system_gc.common), MODE_DRY_RUN);

    /* The restart rules are on in dry-run too. */
    assert_int_equal(p.client_restart.common.enabled, 1);
    assert_int_equal(p.server_restart.common.enabled, 1);
    assert_int_equal(p.node_ineligible.common.enabled, 1);
    assert_int_equal(policy_rule_mode(&p, &p.client_restart.common), MODE_DRY_RUN);
    assert_int_equal(policy_rule_mode(&p, &p.server_restart.common), MODE_DRY_RUN);
    assert_int_equal(policy_rule_mode(&p, &p.node_ineligible.common), MODE_DRY_RUN);

    /* --mode overrides everything, as the file's comment warns. */
    policy_force_mode(&p, MODE_ENFORCE);
    assert_int_equal(policy_rule_mode(&p, &p.orphan_services.common), MODE_ENFORCE);
    assert_int_equal(policy_rule_mode(&p, &p.system_gc.common), MODE_ENFORCE);
    assert_int_equal(policy_rule_mode(&p, &p.client_restart.common), MODE_ENFORCE);
    assert_int_equal(policy_rule_mode(&p, &p.server_restart.common), MODE_ENFORCE);
    assert_int_equal(policy_rule_mode(&p, &p.node_ineligible.common), MODE_ENFORCE);
    policy_free(&p);
}

#define POLICY_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        POLICY_TEST(test_duration_parse_valid),
        POLICY_TEST(test_duration_parse_invalid),
        POLICY_TEST(test_duration_format),
        POLICY_TEST(test_duration_format_truncates),
        POLICY_TEST(test_rate_parse_valid),
        POLICY_TEST(test_rate_parse_invalid),
        POLICY_TEST(test_rate_format),
        POLICY_TEST(test_mode_parse_and_name),
        POLICY_TEST(test_rule_mode_and_force),
        POLICY_TEST(test_defaults_values),
        POLICY_TEST(test_defaults_read_env),
        POLICY_TEST(test_env_kept_when_file_silent),
        POLICY_TEST(test_file_overrides_env),
        POLICY_TEST(test_load_every_setting),
        POLICY_TEST(test_dump_round_trip),
        POLICY_TEST(test_dump_hides_secrets),
        POLICY_TEST(test_dump_hides_address_userinfo),
        POLICY_TEST(test_dump_escapes_strings),
        POLICY_TEST(test_dump_of_defaults),
        POLICY_TEST(test_value_forms),
        POLICY_TEST(test_empty_file_is_default),
        POLICY_TEST(test_include_absolute_path),
        POLICY_TEST(test_load_errors),
        POLICY_TEST(test_load_error_frees_policy),
        POLICY_TEST(test_load_missing_file),
        POLICY_TEST(test_load_directory),
        POLICY_TEST(test_load_file_too_large),
        POLICY_TEST(test_load_nul_byte),
        POLICY_TEST(test_error_in_included_file),
        POLICY_TEST(test_missing_include),
        POLICY_TEST(test_error_truncated_to_buffer),
        POLICY_TEST(test_command_load_and_dump),
        POLICY_TEST(test_command_element_limit),
        POLICY_TEST(test_servers_load_and_dump),
        POLICY_TEST(test_exec_without_command_allowed),
        POLICY_TEST(test_executor_values),
        POLICY_TEST(test_listen_address_forms),
        POLICY_TEST(test_coordination_forms),
        POLICY_TEST(test_coordination_bounds),
        POLICY_TEST(test_tokens_load_and_dump),
        POLICY_TEST(test_token_never_in_messages),
        POLICY_TEST(test_load_error_frees_new_fields),
        POLICY_TEST(test_shipped_default_loads),
        POLICY_TEST(test_shipped_default_equals_builtin),
        POLICY_TEST(test_shipped_default_keeps_env),
        POLICY_TEST(test_shipped_audit_is_dry_run),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
