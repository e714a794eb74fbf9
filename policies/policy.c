/*
 * Policy loader: built-in defaults, the NOMAD_* environment, then a libconfig
 * file checked against the setting_spec tables below. The same tables drive
 * validation, the unknown-name messages and policy_dump(), so a setting added
 * to a table is loaded, checked and dumped alike.
 */
#define _POSIX_C_SOURCE 200809L
#include "policy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <libconfig.h>

#include "../controller/log.h"

/* A policy file is a page of text, so the cap only stops a wrong --config path from reading a large file. */
#define MAX_POLICY_FILE_BYTES (1024L * 1024L)

/* A command or server list longer than this is a mistake in the file, not a real command line. */
#define MAX_ARGV_ELEMENTS 64

/* 16 random hex characters are 64 bits, too many to guess over HTTP; names stay short for log lines. */
#define MIN_TOKEN_LENGTH 16
#define MAX_TOKEN_NAME_LENGTH 64

/*
 * Nomad allows Variable paths of up to 128 characters. The longest path
 * built from the prefix is <prefix>/heartbeat/<36-character node ID>, so a
 * 64-character prefix leaves room to spare.
 */
#define MAX_VAR_PREFIX_LENGTH 64

/* Room for the "expected ..." half of any message. */
#define EXPECTED_MAX 256

/* ---------------------------------------------------------------------- */
/* Modes                                                                   */

static const char *const mode_names[] = {
    [MODE_DRY_RUN] = "dry-run",
    [MODE_APPROVE] = "approve",
    [MODE_ENFORCE] = "enforce",
};

const char *policy_mode_name(enum policy_mode mode)
{
    if (mode == MODE_DRY_RUN || mode == MODE_APPROVE || mode == MODE_ENFORCE)
        return mode_names[mode];
    return "unset";
}

int policy_parse_mode(const char *text, enum policy_mode *out)
{
    for (int mode = MODE_DRY_RUN; mode <= MODE_ENFORCE; mode++) {
        if (strcmp(text, mode_names[mode]) == 0) {
            *out = (enum policy_mode)mode;
            return 0;
        }
    }
    return -1;
}

enum policy_mode policy_rule_mode(const struct policy *p, const struct policy_rule_common *rule)
{
    if (rule->mode != MODE_UNSET)
        return rule->mode;
    return p->mode;
}

int policy_may_act(const struct policy *p, const char *scope)
{
    const struct policy_rule_common *cluster[] = {
        &p->orphan_services.common, &p->system_gc.common, &p->client_restart.common,
        &p->server_restart.common, &p->node_ineligible.common,
    };
    const struct policy_rule_common *node[] = {&p->netns_leaks.common};
    const struct policy_rule_common *const *rules = strcmp(scope, "node") == 0 ? node : cluster;
    size_t n = strcmp(scope, "node") == 0 ? 1 : sizeof(cluster) / sizeof(cluster[0]);

    for (size_t i = 0; i < n; i++) {
        if (rules[i]->enabled && policy_rule_mode(p, rules[i]) != MODE_DRY_RUN)
            return 1;
    }
    return 0;
}

void policy_force_mode(struct policy *p, enum policy_mode mode)
{
    p->mode = mode;
    p->orphan_services.common.mode = mode;
    p->system_gc.common.mode = mode;
    p->down_nodes.common.mode = mode;
    p->netns_leaks.common.mode = mode;
    p->client_restart.common.mode = mode;
    p->server_restart.common.mode = mode;
    p->node_ineligible.common.mode = mode;
}

/* ---------------------------------------------------------------------- */
/* Durations, rates and sizes                                              */

struct unit {
    const char *name;
    unsigned long long size;    /* in the base unit of the table */
};

/* Largest first: a duration lists its units in this order, each at most once. */
static const struct unit duration_units_ms[] = {
    {"d", 86400000ULL}, {"h", 3600000ULL}, {"m", 60000ULL}, {"s", 1000ULL}, {"ms", 1ULL},
};
static const struct unit duration_units_s[] = {
    {"d", 86400ULL}, {"h", 3600ULL}, {"m", 60ULL}, {"s", 1ULL},
};
static const struct unit size_units[] = {
    {"GiB", 1024ULL * 1024 * 1024}, {"MiB", 1024ULL * 1024}, {"KiB", 1024ULL}, {"B", 1ULL},
};

#define N_DURATION_UNITS_MS (sizeof(duration_units_ms) / sizeof(duration_units_ms[0]))
#define N_DURATION_UNITS_S (sizeof(duration_units_s) / sizeof(duration_units_s[0]))
#define N_SIZE_UNITS (sizeof(size_units) / sizeof(size_units[0]))

/* Parse leading decimal digits into *out. Returns the count of digits, 0 on none or overflow. */
static size_t parse_digits(const char *text, unsigned long long *out)
{
    unsigned long long value = 0;
    size_t n = 0;

    while (text[n] >= '0' && text[n] <= '9') {
        unsigned digit = (unsigned)(text[n] - '0');

        if (value > (ULLONG_MAX - digit) / 10)
            return 0;
        value = value * 10 + digit;
        n++;
    }
    *out = value;
    return n;
}

/*
 * Parse a duration into milliseconds. "ms" counts as a unit only when
 * allow_ms is set. The result fits in a long long.
 */
static int parse_duration_ms(const char *text, int allow_ms, long long *out_ms)
{
    size_t n_units = allow_ms ? N_DURATION_UNITS_MS : N_DURATION_UNITS_MS - 1;
    unsigned long long total = 0;
    size_t next_unit = 0;   /* index of the largest unit still allowed */

    if (strcmp(text, "0") == 0) {
        *out_ms = 0;
        return 0;
    }
    if (*text == '\0')
        return -1;

    while (*text != '\0') {
        unsigned long long count;
        size_t digits = parse_digits(text, &count);
        size_t u;

        if (digits == 0)
            return -1;
        text += digits;

        /* An "m" directly followed by "s" is the unit "ms", not minutes. */
        for (u = next_unit; u < n_units; u++) {
            size_t len = strlen(duration_units_ms[u].name);

            if (strncmp(text, duration_units_ms[u].name, len) == 0 &&
                !(len == 1 && text[0] == 'm' && text[1] == 's'))
                break;
        }
        if (u == n_units)
            return -1;
        text += strlen(duration_units_ms[u].name);
        next_unit = u + 1;

        if (count > (unsigned long long)LLONG_MAX / duration_units_ms[u].size)
            return -1;
        count *= duration_units_ms[u].size;
        if (total > (unsigned long long)LLONG_MAX - count)
            return -1;
        total += count;
    }
    *out_ms = (long long)total;
    return 0;
}

int policy_parse_duration(const char *text, long *out)
{
    long long ms;

    if (parse_duration_ms(text, 0, &ms) != 0)
        return -1;
    if (ms / 1000 > LONG_MAX)
        return -1;
    *out = (long)(ms / 1000);
    return 0;
}

/* Write value as a sum of units, largest first ("1h30m"). Zero is written as "0" followed by zero_unit. */
static char *format_units(long long value, const struct unit *units, size_t n_units,
                          const char *zero_unit, char *buf, size_t bufsz)
{
    unsigned long long rest;
    size_t used = 0;

    if (bufsz == 0)
        return buf;
    buf[0] = '\0';
    if (value == 0) {
        snprintf(buf, bufsz, "0%s", zero_unit);
        return buf;
    }
    if (value < 0) {
        used += (size_t)snprintf(buf, bufsz, "-");
        rest = 0ULL - (unsigned long long)value;
    } else {
        rest = (unsigned long long)value;
    }

    for (size_t u = 0; u < n_units && rest > 0 && used < bufsz; u++) {
        unsigned long long count = rest / units[u].size;

        if (count == 0)
            continue;
        rest -= count * units[u].size;
        used += (size_t)snprintf(buf + used, bufsz - used, "%llu%s", count, units[u].name);
    }
    return buf;
}

/* Formatting starts at hours, as Go and Nomad write durations ("24h", not "1d"). */
char *policy_format_duration(long seconds, char *buf, size_t bufsz)
{
    return format_units(seconds, duration_units_s + 1, N_DURATION_UNITS_S - 1, "s", buf, bufsz);
}

static char *format_duration_ms(long long ms, char *buf, size_t bufsz)
{
    return format_units(ms, duration_units_ms + 1, N_DURATION_UNITS_MS - 1, "s", buf, bufsz);
}

int policy_parse_rate(const char *text, struct policy_rate *out)
{
    unsigned long long count;
    size_t digits;
    long period = 0;

    if (strcmp(text, "0") == 0) {
        out->count = 0;
        out->period_s = 0;
        return 0;
    }

    digits = parse_digits(text, &count);
    if (digits == 0 || count == 0 || count > INT_MAX || text[digits] != '/')
        return -1;
    text += digits + 1;

    /* A bare unit letter means one of that unit: "6/h" is "6/1h". */
    if (text[0] != '\0' && text[1] == '\0' && strchr("smhd", text[0]) != NULL) {
        for (size_t u = 0; u < N_DURATION_UNITS_S; u++) {
            if (duration_units_s[u].name[0] == text[0])
                period = (long)duration_units_s[u].size;
        }
    } else if (policy_parse_duration(text, &period) != 0 || period == 0) {
        return -1;
    }

    out->count = (int)count;
    out->period_s = period;
    return 0;
}

char *policy_format_rate(const struct policy_rate *rate, char *buf, size_t bufsz)
{
    char period[32];

    if (bufsz == 0)
        return buf;
    if (rate->count == 0) {
        snprintf(buf, bufsz, "0");
        return buf;
    }
    for (size_t u = 0; u < N_DURATION_UNITS_S; u++) {
        if ((unsigned long long)rate->period_s == duration_units_s[u].size) {
            snprintf(buf, bufsz, "%d/%s", rate->count, duration_units_s[u].name);
            return buf;
        }
    }
    snprintf(buf, bufsz, "%d/%s", rate->count,
             policy_format_duration(rate->period_s, period, sizeof(period)));
    return buf;
}

/* Parse "64MiB": digits, then exactly one unit of size_units. */
static int parse_size(const char *text, unsigned long long *out)
{
    unsigned long long count;
    size_t digits = parse_digits(text, &count);

    if (digits == 0)
        return -1;
    for (size_t u = 0; u < N_SIZE_UNITS; u++) {
        if (strcmp(text + digits, size_units[u].name) == 0) {
            if (count > ULLONG_MAX / size_units[u].size)
                return -1;
            *out = count * size_units[u].size;
            return 0;
        }
    }
    return -1;
}

/* Format bytes in the largest unit that divides them exactly ("64MiB", "1536KiB"). */
static char *format_size(unsigned long long bytes, char *buf, size_t bufsz)
{
    for (size_t u = 0; u < N_SIZE_UNITS; u++) {
        if (bytes % size_units[u].size == 0 && (bytes != 0 || size_units[u].size == 1)) {
            snprintf(buf, bufsz, "%llu%s", bytes / size_units[u].size, size_units[u].name);
            break;
        }
    }
    return buf;
}

/* ---------------------------------------------------------------------- */
/* The settings table                                                      */

enum setting_kind {
    KIND_GROUP,
    KIND_STRING,        /* char *, optional: "" unsets it */
    KIND_SECRET,        /* like KIND_STRING, but policy_dump() never writes the value */
    KIND_PATH,          /* char *, required non-empty */
    KIND_ADDRESS,       /* char *, http://, https:// or unix:// */
    KIND_LOG_LEVEL,     /* char *, a name log_parse_level() accepts */
    KIND_BOOL,          /* int, 0 or 1 */
    KIND_INT,           /* int, within min..max */
    KIND_LONG,          /* long, within min..max */
    KIND_DURATION,      /* long seconds, within min..max seconds */
    KIND_TIMEOUT,       /* long milliseconds, within min..max milliseconds, "ms" allowed */
    KIND_SIZE,          /* size_t bytes, within min..max bytes */
    KIND_RATE,          /* struct policy_rate */
    KIND_MODE,          /* enum policy_mode; MODE_UNSET is dumped as a comment */
    KIND_SHARE,         /* double 0..1, or a "30%" string */
    KIND_ARGV,          /* struct policy_argv from an array of 1..MAX_ARGV_ELEMENTS non-empty
                         * strings, whose braces may only hold the command placeholders */
    KIND_ADDRESS_LIST,  /* struct policy_argv from an array of 0..MAX_ARGV_ELEMENTS KIND_ADDRESS values */
    KIND_EXECUTOR,      /* enum restart_executor: "exec" or "node-agent" */
    KIND_COMPRESSION,   /* enum nomad_compression: "auto", "on" or "off" */
    KIND_TOKENS,        /* struct policy_listener (tokens and n_tokens) from a list of
                         * { name; token; } groups; policy_dump() never writes a token */
    KIND_LISTEN_ADDRESS,/* char *, "IPv4:port", "[IPv6]:port" or "localhost:port" */
    KIND_NAMESPACE,     /* char *, a Nomad namespace name */
    KIND_VAR_PREFIX,    /* char *, a Nomad Variable path prefix */
};

struct setting_spec {
    const char *name;                       /* NULL ends a table */
    enum setting_kind kind;
    size_t offset;                          /* into struct policy; unused for groups */
    long long min, max;                     /* bounds, in the field's unit */
    const struct setting_spec *members;     /* KIND_GROUP only */
};

#define AT(member) offsetof(struct policy, member)
#define NO_BOUNDS 0, 0
#define END {NULL, KIND_GROUP, 0, NO_BOUNDS, NULL}

/*
 * Integer bounds stay at or below INT_MAX. libconfig 1.5 wraps a plain
 * integer literal beyond 32 bits, and check_int_literal() reports every such
 * literal as out of range, which is true only while no bound exceeds INT_MAX.
 */
static const struct setting_spec nomad_settings[] = {
    {"address", KIND_ADDRESS, AT(nomad.address), NO_BOUNDS, NULL},
    {"token", KIND_SECRET, AT(nomad.token), NO_BOUNDS, NULL},
    {"region", KIND_STRING, AT(nomad.region), NO_BOUNDS, NULL},
    {"namespace", KIND_STRING, AT(nomad.namespace_name), NO_BOUNDS, NULL},
    {"ca_cert", KIND_STRING, AT(nomad.ca_cert), NO_BOUNDS, NULL},
    {"ca_path", KIND_STRING, AT(nomad.ca_path), NO_BOUNDS, NULL},
    {"client_cert", KIND_STRING, AT(nomad.client_cert), NO_BOUNDS, NULL},
    {"client_key", KIND_STRING, AT(nomad.client_key), NO_BOUNDS, NULL},
    {"tls_server_name", KIND_STRING, AT(nomad.tls_server_name), NO_BOUNDS, NULL},
    {"skip_verify", KIND_BOOL, AT(nomad.skip_verify), NO_BOUNDS, NULL},
    {"http_auth", KIND_SECRET, AT(nomad.http_auth), NO_BOUNDS, NULL},
    /* libcurl treats a timeout of 0 as "wait forever", so both start at 1ms. */
    {"timeout", KIND_TIMEOUT, AT(nomad.request_timeout_ms), 1, LONG_MAX, NULL},
    {"connect_timeout", KIND_TIMEOUT, AT(nomad.connect_timeout_ms), 1, LONG_MAX, NULL},
    /* Backoff doubles per retry, so 10 retries from 200ms already wait about 200s in total. */
    {"retries", KIND_INT, AT(nomad.max_retries), 0, 10, NULL},
    {"retry_backoff", KIND_TIMEOUT, AT(nomad.retry_base_ms), 1, 60000, NULL},
    /* Below 64KiB even one page of nodes fails; above 4GiB the cap no longer protects memory. */
    {"max_response_size", KIND_SIZE, AT(nomad.max_response_bytes), 64LL * 1024,
     4LL * 1024 * 1024 * 1024, NULL},
    {"per_page", KIND_INT, AT(per_page), 1, 10000, NULL},
    {"max_connections", KIND_INT, AT(nomad.max_connections), 1, 64, NULL},
    {"compression", KIND_COMPRESSION, AT(nomad.compression), NO_BOUNDS, NULL},
    END,
};

static const struct setting_spec journal_settings[] = {
    {"path", KIND_PATH, AT(journal_path), NO_BOUNDS, NULL},
    END,
};

static const struct setting_spec log_settings[] = {
    {"level", KIND_LOG_LEVEL, AT(log_level), NO_BOUNDS, NULL},
    END,
};

static const struct setting_spec breaker_settings[] = {
    {"max_unhealthy_share", KIND_SHARE, AT(breaker_max_unhealthy), NO_BOUNDS, NULL},
    {"min_nodes", KIND_INT, AT(breaker_min_nodes), 0, INT_MAX, NULL},
    END,
};

static const struct setting_spec controller_settings[] = {
    {"mode", KIND_MODE, AT(mode), NO_BOUNDS, NULL},
    {"interval", KIND_DURATION, AT(interval_s), 1, LONG_MAX, NULL},
    {"pause_file", KIND_PATH, AT(pause_file), NO_BOUNDS, NULL},
    {"approval_ttl", KIND_DURATION, AT(approval_ttl_s), 1, LONG_MAX, NULL},
    {"rate_limit", KIND_RATE, AT(global_rate_limit), NO_BOUNDS, NULL},
    {"breaker", KIND_GROUP, 0, NO_BOUNDS, breaker_settings},
    END,
};

static const struct setting_spec orphan_services_settings[] = {
    {"enabled", KIND_BOOL, AT(orphan_services.common.enabled), NO_BOUNDS, NULL},
    {"mode", KIND_MODE, AT(orphan_services.common.mode), NO_BOUNDS, NULL},
    {"grace", KIND_DURATION, AT(orphan_services.grace_s), 0, LONG_MAX, NULL},
    {"rate_limit", KIND_RATE, AT(orphan_services.common.rate_limit), NO_BOUNDS, NULL},
    {"cooldown", KIND_DURATION, AT(orphan_services.common.cooldown_s), 0, LONG_MAX, NULL},
    END,
};

static const struct setting_spec system_gc_settings[] = {
    {"enabled", KIND_BOOL, AT(system_gc.common.enabled), NO_BOUNDS, NULL},
    {"mode", KIND_MODE, AT(system_gc.common.mode), NO_BOUNDS, NULL},
    {"min_terminal_allocs", KIND_LONG, AT(system_gc.min_terminal_allocs), 0, INT_MAX, NULL},
    {"min_terminal_evals", KIND_LONG, AT(system_gc.min_terminal_evals), 0, INT_MAX, NULL},
    {"rate_limit", KIND_RATE, AT(system_gc.common.rate_limit), NO_BOUNDS, NULL},
    {"cooldown", KIND_DURATION, AT(system_gc.common.cooldown_s), 0, LONG_MAX, NULL},
    END,
};

static const struct setting_spec down_nodes_settings[] = {
    {"enabled", KIND_BOOL, AT(down_nodes.common.enabled), NO_BOUNDS, NULL},
    {"min_down", KIND_DURATION, AT(down_nodes.min_down_s), 0, LONG_MAX, NULL},
    END,
};

static const struct setting_spec netns_leaks_settings[] = {
    {"enabled", KIND_BOOL, AT(netns_leaks.common.enabled), NO_BOUNDS, NULL},
    {"mode", KIND_MODE, AT(netns_leaks.common.mode), NO_BOUNDS, NULL},
    {"grace", KIND_DURATION, AT(netns_leaks.grace_s), 0, LONG_MAX, NULL},
    {"rate_limit", KIND_RATE, AT(netns_leaks.common.rate_limit), NO_BOUNDS, NULL},
    {"cooldown", KIND_DURATION, AT(netns_leaks.common.cooldown_s), 0, LONG_MAX, NULL},
    END,
};

static const struct setting_spec port_conflicts_settings[] = {
    {"enabled", KIND_BOOL, AT(port_conflicts.enabled), NO_BOUNDS, NULL},
    END,
};

/* ready_timeout starts at 1s because a zero timeout would fail every restart before it could finish. */
static const struct setting_spec client_restart_settings[] = {
    {"enabled", KIND_BOOL, AT(client_restart.common.enabled), NO_BOUNDS, NULL},
    {"mode", KIND_MODE, AT(client_restart.common.mode), NO_BOUNDS, NULL},
    {"min_down", KIND_DURATION, AT(client_restart.min_down_s), 0, LONG_MAX, NULL},
    {"heartbeat_max_age", KIND_DURATION, AT(client_restart.heartbeat_max_age_s), 1, LONG_MAX, NULL},
    {"max_parallel", KIND_INT, AT(client_restart.max_parallel), 1, 100, NULL},
    {"ready_timeout", KIND_DURATION, AT(client_restart.ready_timeout_s), 1, LONG_MAX, NULL},
    {"settle", KIND_DURATION, AT(client_restart.settle_s), 0, LONG_MAX, NULL},
    {"executor", KIND_EXECUTOR, AT(client_restart.executor), NO_BOUNDS, NULL},
    {"command", KIND_ARGV, AT(client_restart.command), NO_BOUNDS, NULL},
    {"rate_limit", KIND_RATE, AT(client_restart.common.rate_limit), NO_BOUNDS, NULL},
    {"cooldown", KIND_DURATION, AT(client_restart.common.cooldown_s), 0, LONG_MAX, NULL},
    END,
};

static const struct setting_spec server_restart_settings[] = {
    {"enabled", KIND_BOOL, AT(server_restart.common.enabled), NO_BOUNDS, NULL},
    {"mode", KIND_MODE, AT(server_restart.common.mode), NO_BOUNDS, NULL},
    {"min_down", KIND_DURATION, AT(server_restart.min_down_s), 0, LONG_MAX, NULL},
    {"ready_timeout", KIND_DURATION, AT(server_restart.ready_timeout_s), 1, LONG_MAX, NULL},
    {"executor", KIND_EXECUTOR, AT(server_restart.executor), NO_BOUNDS, NULL},
    {"command", KIND_ARGV, AT(server_restart.command), NO_BOUNDS, NULL},
    {"rate_limit", KIND_RATE, AT(server_restart.common.rate_limit), NO_BOUNDS, NULL},
    {"cooldown", KIND_DURATION, AT(server_restart.common.cooldown_s), 0, LONG_MAX, NULL},
    END,
};

/* A flap is a down-to-ready cycle, so one alone is no pattern: flap_limit starts at 2. */
static const struct setting_spec node_ineligible_settings[] = {
    {"enabled", KIND_BOOL, AT(node_ineligible.common.enabled), NO_BOUNDS, NULL},
    {"mode", KIND_MODE, AT(node_ineligible.common.mode), NO_BOUNDS, NULL},
    {"flap_limit", KIND_INT, AT(node_ineligible.flap_limit), 2, 100, NULL},
    {"flap_window", KIND_DURATION, AT(node_ineligible.flap_window_s), 1, LONG_MAX, NULL},
    {"rate_limit", KIND_RATE, AT(node_ineligible.common.rate_limit), NO_BOUNDS, NULL},
    {"cooldown", KIND_DURATION, AT(node_ineligible.common.cooldown_s), 0, LONG_MAX, NULL},
    END,
};

static const struct setting_spec rules_settings[] = {
    {"orphan_services", KIND_GROUP, 0, NO_BOUNDS, orphan_services_settings},
    {"system_gc", KIND_GROUP, 0, NO_BOUNDS, system_gc_settings},
    {"down_nodes", KIND_GROUP, 0, NO_BOUNDS, down_nodes_settings},
    {"netns_leaks", KIND_GROUP, 0, NO_BOUNDS, netns_leaks_settings},
    {"port_conflicts", KIND_GROUP, 0, NO_BOUNDS, port_conflicts_settings},
    {"client_restart", KIND_GROUP, 0, NO_BOUNDS, client_restart_settings},
    {"server_restart", KIND_GROUP, 0, NO_BOUNDS, server_restart_settings},
    {"node_ineligible", KIND_GROUP, 0, NO_BOUNDS, node_ineligible_settings},
    END,
};

static const struct setting_spec node_settings[] = {
    {"node_id", KIND_STRING, AT(node_id), NO_BOUNDS, NULL},
    {"netns_dir", KIND_PATH, AT(host.netns_dir), NO_BOUNDS, NULL},
    {"cni_cache_dir", KIND_PATH, AT(host.cni_cache_dir), NO_BOUNDS, NULL},
    {"ipam_dir", KIND_PATH, AT(host.ipam_dir), NO_BOUNDS, NULL},
    {"ipam_dir_legacy", KIND_PATH, AT(host.ipam_dir_legacy), NO_BOUNDS, NULL},
    {"network", KIND_PATH, AT(host.network_name), NO_BOUNDS, NULL},
    {"bridge", KIND_PATH, AT(host.bridge_name), NO_BOUNDS, NULL},
    {"cni_path", KIND_PATH, AT(host.cni_path), NO_BOUNDS, NULL},
    {"iptables", KIND_PATH, AT(host.iptables), NO_BOUNDS, NULL},
    {"iptables_save", KIND_PATH, AT(host.iptables_save), NO_BOUNDS, NULL},
    {"ip", KIND_PATH, AT(host.ip_command), NO_BOUNDS, NULL},
    {"command_timeout", KIND_TIMEOUT, AT(host.command_timeout_ms), 100, 600000, NULL},
    {"servers", KIND_ADDRESS_LIST, AT(node_servers), NO_BOUNDS, NULL},
    {"restart_command", KIND_ARGV, AT(node_restart_command), NO_BOUNDS, NULL},
    END,
};

/*
 * Nomad accepts a lock TTL from 10s to 24h (VariableLock.Validate in
 * nomad/structs/variables.go). A lock delay above 1h or a heartbeat interval
 * above 1h would leave the cluster without a working controller, or every
 * host looking dead, for longer than any outage the rules are meant for.
 */
static const struct setting_spec coordination_settings[] = {
    {"namespace", KIND_NAMESPACE, AT(coord_namespace), NO_BOUNDS, NULL},
    {"prefix", KIND_VAR_PREFIX, AT(coord_prefix), NO_BOUNDS, NULL},
    {"lock_ttl", KIND_DURATION, AT(lock_ttl_s), 10, 24 * 3600, NULL},
    {"lock_delay", KIND_DURATION, AT(lock_delay_s), 0, 3600, NULL},
    {"heartbeat_interval", KIND_DURATION, AT(heartbeat_interval_s), 1, 3600, NULL},
    END,
};

static const struct setting_spec listener_settings[] = {
    {"enabled", KIND_BOOL, AT(listener.enabled), NO_BOUNDS, NULL},
    {"address", KIND_LISTEN_ADDRESS, AT(listener.address), NO_BOUNDS, NULL},
    {"tokens", KIND_TOKENS, AT(listener), NO_BOUNDS, NULL},
    {"healthy_within", KIND_DURATION, AT(listener.healthy_within_s), 1, LONG_MAX, NULL},
    END,
};

static const struct setting_spec top_settings[] = {
    {"nomad", KIND_GROUP, 0, NO_BOUNDS, nomad_settings},
    {"journal", KIND_GROUP, 0, NO_BOUNDS, journal_settings},
    {"log", KIND_GROUP, 0, NO_BOUNDS, log_settings},
    {"controller", KIND_GROUP, 0, NO_BOUNDS, controller_settings},
    {"rules", KIND_GROUP, 0, NO_BOUNDS, rules_settings},
    {"node", KIND_GROUP, 0, NO_BOUNDS, node_settings},
    {"coordination", KIND_GROUP, 0, NO_BOUNDS, coordination_settings},
    {"listener", KIND_GROUP, 0, NO_BOUNDS, listener_settings},
    END,
};

#define FIELD(p, spec, type) ((type *)(void *)((char *)(p) + (spec)->offset))
#define CFIELD(p, spec, type) ((const type *)(const void *)((const char *)(p) + (spec)->offset))

/* ---------------------------------------------------------------------- */
/* Defaults                                                                */

static int set_string(char **field, const char *value)
{
    char *copy = NULL;

    if (value != NULL) {
        copy = strdup(value);
        if (copy == NULL)
            return -1;
    }
    free(*field);
    *field = copy;
    return 0;
}

static void argv_free(struct policy_argv *v)
{
    for (size_t i = 0; i < v->argc; i++)
        free(v->argv[i]);
    free(v->argv);
    v->argv = NULL;
    v->argc = 0;
}

/*
 * Replace *v with copies of the n strings in items, NULL-terminated. An empty
 * vector has argv NULL. Returns 0, or -1 when memory runs out, with *v
 * unchanged.
 */
static int argv_set(struct policy_argv *v, const char *const *items, size_t n)
{
    struct policy_argv copy = {NULL, 0};

    if (n > 0) {
        copy.argv = calloc(n + 1, sizeof(*copy.argv));
        if (copy.argv == NULL)
            return -1;
        for (; copy.argc < n; copy.argc++) {
            copy.argv[copy.argc] = strdup(items[copy.argc]);
            if (copy.argv[copy.argc] == NULL) {
                argv_free(&copy);
                return -1;
            }
        }
    }
    argv_free(v);
    *v = copy;
    return 0;
}

static void tokens_free(struct policy_listener_token *tokens, size_t n_tokens)
{
    for (size_t i = 0; i < n_tokens; i++) {
        free(tokens[i].name);
        free(tokens[i].token);
    }
    free(tokens);
}

/* Heartbeat loss and restarts: the client_restart, server_restart and node_ineligible rules. */
static int set_restart_defaults(struct policy *p)
{
    p->client_restart.common.enabled = 1;
    p->client_restart.common.mode = MODE_UNSET;
    /* Nomad marks a client down 20-50s after its last heartbeat, and an agent
     * restarted by hand, by systemd or by an upgrade is usually back within a
     * minute or two (an estimate). 5m leaves those alone. */
    p->client_restart.min_down_s = 5 * 60;
    /* Four heartbeat intervals of 30s, so one or two lost writes do not make a
     * live host look dead. It stays below min_down, so a host that died with
     * its agent has a stale heartbeat by the time the agent counts as down. */
    p->client_restart.heartbeat_max_age_s = 2 * 60;
    /* A restart that goes wrong then hurts one node, and many clients down at
     * once points to the servers or the network, not to the clients. */
    p->client_restart.max_parallel = 1;
    /* A restarted client re-registers and restores its allocations, which on
     * a busy host can take minutes (an estimate). */
    p->client_restart.ready_timeout_s = 10 * 60;
    /* A new leader rebuilds every heartbeat timer, and statuses written just
     * before the election may be stale, so clients first heartbeat to it. */
    p->client_restart.settle_s = 2 * 60;
    /* The node scope already runs as root on every client for netns_leaks, so
     * the cluster scope needs no shell access to the hosts. */
    p->client_restart.executor = EXECUTOR_NODE_AGENT;
    /* At most one client restart every 10 minutes on average. */
    p->client_restart.common.rate_limit = (struct policy_rate){6, 3600};
    /* An agent that dies again soon after a restart is not restarted in a
     * loop; node_ineligible takes over a node that keeps flapping. */
    p->client_restart.common.cooldown_s = 30 * 60;

    p->server_restart.common.enabled = 1;
    p->server_restart.common.mode = MODE_UNSET;
    /* A server that loses the leader for seconds (an election, a slow disk)
     * recovers on its own; 2m of failure rules that out without leaving the
     * cluster's failure tolerance reduced for long. */
    p->server_restart.min_down_s = 2 * 60;
    /* A restarted server rejoins Raft and catches up with the leader's log or
     * a snapshot, which takes minutes on a large state (an estimate). */
    p->server_restart.ready_timeout_s = 10 * 60;
    /* Servers often run no Nomad client and so no node scope that could take
     * an order. The command stays unset because reaching a server host (ssh
     * user, sudo rules) differs per site. */
    p->server_restart.executor = EXECUTOR_EXEC;
    /* Each server restart lowers the failure tolerance while it runs; three an
     * hour, one at a time, leaves time to watch each server rejoin. */
    p->server_restart.common.rate_limit = (struct policy_rate){3, 3600};
    /* A server that fails again within 30m of a restart needs an operator. */
    p->server_restart.common.cooldown_s = 30 * 60;

    p->node_ineligible.common.enabled = 1;
    p->node_ineligible.common.mode = MODE_UNSET;
    /* Three down-to-ready cycles within an hour are no longer chance.
     * Restarting such a node again would loop, while marking it ineligible
     * stops new placements and leaves its running allocations alone. */
    p->node_ineligible.flap_limit = 3;
    p->node_ineligible.flap_window_s = 3600;
    /* A cause that makes many nodes flap at once cannot remove more than 10
     * nodes an hour from scheduling. */
    p->node_ineligible.common.rate_limit = (struct policy_rate){10, 3600};
    /* Equal to flap_window, so a node an operator made eligible again is
     * judged on a fresh window. */
    p->node_ineligible.common.cooldown_s = 3600;
    return 0;
}

/* Nomad Variables shared by the two scopes, and the node scope's side of restarts. */
static int set_coordination_defaults(struct policy *p)
{
    /* nomad.service is the systemd unit that HashiCorp's Linux packages install. */
    static const char *const restart_command[] = {"systemctl", "restart", "nomad"};

    /* "default" exists in every cluster; "nomad-medic" names the product and
     * stays out of the top-level "nomad" directory that Nomad reserves. */
    if (set_string(&p->coord_namespace, "default") != 0 ||
        set_string(&p->coord_prefix, "nomad-medic") != 0)
        return -1;
    /* After the holder stops renewing, a standby takes over within about 45s
     * (TTL plus lock_delay), while a renewal delayed by a Nomad leader
     * election (a few seconds) does not lose the lock. */
    p->lock_ttl_s = 30;
    /* Nomad's own default. It gives a holder that is only slow time to notice
     * the lost lock and stop acting before another one can take it. */
    p->lock_delay_s = 15;
    /* Four writes within client_restart.heartbeat_max_age. Each write is a
     * Raft write, so 1000 clients write about 33 a second. */
    p->heartbeat_interval_s = 30;

    /* node.servers stays empty: server addresses differ per cluster, so the
     * node scope uses nomad.address until an operator lists them. */
    return argv_set(&p->node_restart_command, restart_command,
                    sizeof(restart_command) / sizeof(restart_command[0]));
}

static int set_listener_defaults(struct policy *p)
{
    /* Opening a port is the operator's decision. */
    p->listener.enabled = 0;
    /* Loopback, so only processes on this host (a local metrics agent or an
     * SSH tunnel) reach it. Nomad uses 4646-4648, not 8646. */
    if (set_string(&p->listener.address, "127.0.0.1:8646") != 0)
        return -1;
    /* Five passes of the default 1m interval, so a pass that ends a few
     * minutes late does not fail /healthz, while passes that stopped do. */
    p->listener.healthy_within_s = 5 * 60;
    return 0;
}

/*
 * The built-in default policy. policies/default.conf carries the same values
 * with the same reasons for operators; keep the two in step (test_policy
 * compares their dumps). The nomad.* connection defaults come from
 * nomad_conn_config_defaults().
 */
static int set_builtin_defaults(struct policy *p)
{
    /* 500 stubs per page keep a page of allocations at a few MiB, far below the
     * 64MiB response cap, while a 10,000-allocation cluster needs only 20 reads. */
    p->per_page = 500;

    /* State data belongs under /var/lib (FHS). The pause file sits beside the
     * journal, so one directory contains everything the controller writes. */
    if (set_string(&p->journal_path, "/var/lib/nomad-medic/journal.db") != 0 ||
        set_string(&p->pause_file, "/var/lib/nomad-medic/pause") != 0 ||
        set_string(&p->log_level, "info") != 0)
        return -1;

    /* A fresh install must not change the cluster before an operator has read
     * what it would do. */
    p->mode = MODE_DRY_RUN;
    /* Nomad marks a node down 20-50s after its last heartbeat (TTL plus the
     * 10s heartbeat_grace), so a pass every minute notices each change within
     * about one heartbeat window and lists the cluster only once a minute. */
    p->interval_s = 60;
    /* One day, so an action proposed overnight still waits for the next shift.
     * After that its evidence is stale, and it is proposed again if still true. */
    p->approval_ttl_s = 24 * 3600;
    /* All rules together. Even when every rule fires at once, this allows at
     * most one action every two minutes on average, slow enough to notice in
     * the journal and create the pause file. */
    p->global_rate_limit = (struct policy_rate){30, 3600};
    /* Independent failures rarely take out more than 30% of the clients at
     * once. More points to a partition or server trouble, where "down" is not
     * evidence about the node itself. */
    p->breaker_max_unhealthy = 0.3;
    /* In a 1- or 2-node cluster a single down node is already 50-100%, so
     * the share says nothing reliable about a partition. */
    p->breaker_min_nodes = 3;

    p->orphan_services.common.enabled = 1;
    p->orphan_services.common.mode = MODE_UNSET;
    /* Covers the client's own deregistration (with RPC retries since Nomad
     * 1.8.0), a task's shutdown_delay, and the server removing registrations
     * when their allocation turns terminal. */
    p->orphan_services.grace_s = 10 * 60;
    /* A backlog of leaked registrations clears in hours, while a wrong
     * judgement removes at most 20 per hour. */
    p->orphan_services.common.rate_limit = (struct policy_rate){20, 3600};
    /* A registration that comes back after deletion (a client re-syncing)
     * is not deleted again in a loop. */
    p->orphan_services.common.cooldown_s = 3600;

    p->system_gc.common.enabled = 1;
    p->system_gc.common.mode = MODE_UNSET;
    /* Nomad's periodic GC collects evaluations after 1h and jobs after 4h, so
     * thousands of terminal objects still present mean it is falling behind.
     * Below that a forced GC is not worth it, because it also deletes the
     * recent failed allocations operators inspect with `nomad alloc status`. */
    p->system_gc.min_terminal_allocs = 5000;
    p->system_gc.min_terminal_evals = 5000;
    /* A forced GC is a heavy core job on the leader. Once an hour matches
     * Nomad's own 1h evaluation GC threshold. The cluster is its only
     * target, so the cooldown equals the rate. */
    p->system_gc.common.rate_limit = (struct policy_rate){1, 3600};
    p->system_gc.common.cooldown_s = 3600;

    p->down_nodes.common.enabled = 1;
    p->down_nodes.common.mode = MODE_UNSET;
    /* Nomad already waited the heartbeat TTL plus heartbeat_grace before it
     * marked the node down, and the finding is advisory only. */
    p->down_nodes.min_down_s = 0;

    /* Node scope. Paths follow Nomad's client defaults (bridge_network_name
     * "nomad", IPAM dataDir /var/run/cni since 1.9.4, libcni's cache under
     * /var/lib/cni/results) and Debian's plugin directory. */
    host_paths_defaults(&p->host);
    if (p->host.netns_dir == NULL || p->host.ip_command == NULL)
        return -1;
    p->netns_leaks.common.enabled = 1;
    p->netns_leaks.common.mode = MODE_UNSET;
    /* A client that is restarting re-creates or tears down its allocations'
     * networks within seconds to a minute; 5m leaves that alone, and the
     * allocation must also be terminal or gone in Nomad. */
    p->netns_leaks.grace_s = 5 * 60;
    /* Each removal runs the CNI plugins and iptables; 30 an hour clears the
     * leaks of a client crash in minutes while bounding a wrong judgement. */
    p->netns_leaks.common.rate_limit = (struct policy_rate){30, 3600};
    /* One allocation's state is removed once; if parts come back, the next
     * attempt waits 10 minutes instead of looping. */
    p->netns_leaks.common.cooldown_s = 10 * 60;
    p->port_conflicts.enabled = 1;

    if (set_restart_defaults(p) != 0 || set_coordination_defaults(p) != 0 ||
        set_listener_defaults(p) != 0)
        return -1;
    return 0;
}

/* Defaults and environment, without touching err: shared by both entry points. */
static int init_defaults(struct policy *p)
{
    memset(p, 0, sizeof(*p));
    nomad_conn_config_defaults(&p->nomad);
    if (p->nomad.address == NULL)
        return -1;
    if (set_builtin_defaults(p) != 0)
        return -1;
    return nomad_conn_config_from_env(&p->nomad);
}

static void set_error(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errsz == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

int policy_init_defaults(struct policy *p, char *err, size_t errsz)
{
    if (init_defaults(p) != 0) {
        policy_free(p);
        set_error(err, errsz, "built-in policy: out of memory; free memory and retry");
        return -1;
    }
    return 0;
}

void policy_free(struct policy *p)
{
    free(p->source_path);
    nomad_conn_config_free(&p->nomad);
    free(p->journal_path);
    free(p->pause_file);
    free(p->log_level);
    free(p->node_id);
    host_paths_free(&p->host);
    argv_free(&p->node_servers);
    argv_free(&p->node_restart_command);
    argv_free(&p->client_restart.command);
    argv_free(&p->server_restart.command);
    free(p->coord_namespace);
    free(p->coord_prefix);
    free(p->listener.address);
    tokens_free(p->listener.tokens, p->listener.n_tokens);
    memset(p, 0, sizeof(*p));
}

/* ---------------------------------------------------------------------- */
/* Loading                                                                 */

struct load_ctx {
    const char *path;       /* the file given to policy_load() */
    const char *text;       /* its contents, for check_int_literal() */
    char *err;
    size_t errsz;
};

/*
 * Read a whole file of at most MAX_POLICY_FILE_BYTES and NUL-terminate it.
 * *len_out (may be NULL) receives the length, which exceeds strlen() when the
 * file contains a NUL byte. Returns NULL with errno set.
 */
static char *read_text_file(const char *path, size_t *len_out)
{
    struct stat st;
    char *text = NULL;
    char *shrunk;
    size_t len = 0;
    FILE *f = fopen(path, "r");
    int saved;

    if (f == NULL)
        return NULL;
    if (fstat(fileno(f), &st) != 0)
        goto fail;
    if (S_ISDIR(st.st_mode)) {
        errno = EISDIR;
        goto fail;
    }
    text = malloc(MAX_POLICY_FILE_BYTES + 1);
    if (text == NULL)
        goto fail;
    errno = 0;
    len = fread(text, 1, MAX_POLICY_FILE_BYTES + 1, f);
    if (ferror(f)) {
        if (errno == 0)
            errno = EIO;
        goto fail;
    }
    if (len > MAX_POLICY_FILE_BYTES) {
        errno = EFBIG;
        goto fail;
    }
    text[len] = '\0';
    fclose(f);

    shrunk = realloc(text, len + 1);
    if (shrunk != NULL)
        text = shrunk;
    if (len_out != NULL)
        *len_out = len;
    return text;

fail:
    saved = errno;
    free(text);
    fclose(f);
    errno = saved;
    return NULL;
}

static int fail_at(const struct load_ctx *ctx, const config_setting_t *s, const char *name,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Write "FILE:LINE: name: message" into ctx->err. Returns -1 for the caller to pass on. */
static int fail_at(const struct load_ctx *ctx, const config_setting_t *s, const char *name,
                   const char *fmt, ...)
{
    const char *file = config_setting_source_file(s);
    va_list ap;
    int used;

    if (ctx->err == NULL || ctx->errsz == 0)
        return -1;
    used = snprintf(ctx->err, ctx->errsz, "%s:%u: %s: ", file != NULL ? file : ctx->path,
                    (unsigned)config_setting_source_line(s), name);
    if (used > 0 && (size_t)used < ctx->errsz) {
        va_start(ap, fmt);
        vsnprintf(ctx->err + used, ctx->errsz - (size_t)used, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static const char *type_name(int type)
{
    switch (type) {
    case CONFIG_TYPE_GROUP:
        return "group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        return "integer";
    case CONFIG_TYPE_FLOAT:
        return "float";
    case CONFIG_TYPE_STRING:
        return "string";
    case CONFIG_TYPE_BOOL:
        return "boolean";
    case CONFIG_TYPE_ARRAY:
        return "array";
    case CONFIG_TYPE_LIST:
        return "list";
    default:
        return "unknown type";
    }
}

/* The "expected form" half of a message for a setting of this kind. */
static const char *expected_form(const struct setting_spec *spec, char *buf, size_t bufsz)
{
    switch (spec->kind) {
    case KIND_GROUP:
        snprintf(buf, bufsz, "a group like %s = { ... }", spec->name);
        break;
    case KIND_STRING:
    case KIND_SECRET:
        snprintf(buf, bufsz, "a string in double quotes, or \"\" to unset it");
        break;
    case KIND_PATH:
        snprintf(buf, bufsz, "a non-empty file path in double quotes");
        break;
    case KIND_ADDRESS:
        snprintf(buf, bufsz, "an address starting with http://, https:// or unix://, "
                             "like \"http://127.0.0.1:4646\" or \"unix:///run/nomad.sock\"");
        break;
    case KIND_LOG_LEVEL:
        snprintf(buf, bufsz, "one of \"debug\", \"info\", \"warn\", \"error\"");
        break;
    case KIND_BOOL:
        snprintf(buf, bufsz, "true or false, without quotes");
        break;
    case KIND_INT:
    case KIND_LONG:
        if (spec->max >= INT_MAX)
            snprintf(buf, bufsz, "an integer from %lld to %d, without quotes", spec->min, INT_MAX);
        else
            snprintf(buf, bufsz, "an integer from %lld to %lld, without quotes", spec->min,
                     spec->max);
        break;
    case KIND_DURATION:
        snprintf(buf, bufsz, "a duration like \"90s\", \"10m\" or \"1h30m\"");
        break;
    case KIND_TIMEOUT:
        snprintf(buf, bufsz, "a duration like \"1500ms\", \"5s\" or \"1m\"");
        break;
    case KIND_SIZE:
        snprintf(buf, bufsz, "a size like \"512KiB\", \"64MiB\" or \"1GiB\"");
        break;
    case KIND_RATE:
        snprintf(buf, bufsz, "a rate like \"6/h\" or \"1/30m\", or \"0\" for no limit");
        break;
    case KIND_MODE:
        snprintf(buf, bufsz, "one of \"dry-run\", \"approve\", \"enforce\"");
        break;
    case KIND_SHARE:
        snprintf(buf, bufsz, "a share from 0 to 1 like 0.3, or a percentage like \"30%%\"");
        break;
    case KIND_ARGV:
        snprintf(buf, bufsz, "an array of 1 to %d non-empty strings like "
                             "[\"systemctl\", \"restart\", \"nomad\"]", MAX_ARGV_ELEMENTS);
        break;
    case KIND_ADDRESS_LIST:
        snprintf(buf, bufsz, "an array of up to %d addresses like "
                             "[\"https://10.0.0.1:4646\", \"https://10.0.0.2:4646\"], "
                             "or [] to use nomad.address", MAX_ARGV_ELEMENTS);
        break;
    case KIND_EXECUTOR:
        snprintf(buf, bufsz, "one of \"exec\", \"node-agent\"");
        break;
    case KIND_COMPRESSION:
        snprintf(buf, bufsz, "one of \"auto\", \"on\", \"off\"");
        break;
    case KIND_TOKENS:
        snprintf(buf, bufsz, "a list of groups like ( { name = \"alice\"; token = \"<%d or more "
                             "characters>\"; } ), or () for none", MIN_TOKEN_LENGTH);
        break;
    case KIND_LISTEN_ADDRESS:
        snprintf(buf, bufsz, "a host and port like \"127.0.0.1:8646\", \"[::1]:8646\" or "
                             "\"localhost:8646\", with a port from 1 to 65535");
        break;
    case KIND_NAMESPACE:
        snprintf(buf, bufsz, "a namespace name of 1 to 128 letters, digits or '-', like \"default\"");
        break;
    case KIND_VAR_PREFIX:
        snprintf(buf, bufsz, "1 to %d characters from a-z A-Z 0-9 - _ ~ /, with no leading or "
                             "trailing '/' and not under \"nomad/\", like \"nomad-medic\"",
                 MAX_VAR_PREFIX_LENGTH);
        break;
    }
    return buf;
}

static int fail_type(const struct load_ctx *ctx, const struct setting_spec *spec,
                     const config_setting_t *s, const char *name)
{
    char expected[EXPECTED_MAX];

    return fail_at(ctx, s, name, "wrong type %s; expected %s", type_name(config_setting_type(s)),
                   expected_form(spec, expected, sizeof(expected)));
}

/* Report a value that does not parse: "<problem> "<text>"; expected <form>". */
static int fail_value(const struct load_ctx *ctx, const struct setting_spec *spec,
                      const config_setting_t *s, const char *name, const char *problem,
                      const char *text)
{
    char expected[EXPECTED_MAX];

    return fail_at(ctx, s, name, "%s \"%s\"; expected %s", problem, text,
                   expected_form(spec, expected, sizeof(expected)));
}

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-' || c == '*';
}

/*
 * Find the integer literal written after "name =" or "name :" on the
 * setting's line, because libconfig 1.5 wraps a plain literal beyond 32 bits
 * to an int (5000000000 reads as 705032704). Returns 0 with the literal in
 * *out and *overflow set when it exceeds a long long. Returns -1 when the
 * literal is not on that line, and the caller then trusts libconfig's value.
 */
static int find_int_literal(const char *text, unsigned line, const char *name, long long *out,
                            int *overflow)
{
    size_t name_len = strlen(name);
    const char *end;

    for (unsigned n = 1; n < line && text != NULL; n++) {
        text = strchr(text, '\n');
        if (text != NULL)
            text++;
    }
    if (text == NULL)
        return -1;
    end = strchr(text, '\n');
    if (end == NULL)
        end = text + strlen(text);

    for (const char *at = text; at + name_len <= end; at++) {
        const char *v = at + name_len;
        char *stop;
        int base = 10;

        if (strncmp(at, name, name_len) != 0 || (at > text && name_char(at[-1])) ||
            name_char(*v))
            continue;
        while (*v == ' ' || *v == '\t')
            v++;
        if (*v != '=' && *v != ':')
            continue;
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        if ((v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) ||
            ((v[0] == '-' || v[0] == '+') && v[1] == '0' && (v[2] == 'x' || v[2] == 'X')))
            base = 16;
        errno = 0;
        *out = strtoll(v, &stop, base);
        if (stop == v)
            return -1;
        *overflow = (errno == ERANGE);
        return 0;
    }
    return -1;
}

static int check_int_literal(const struct load_ctx *ctx, const struct setting_spec *spec,
                             const config_setting_t *s, const char *name, long long value)
{
    const char *file = config_setting_source_file(s);
    char *included = NULL;
    const char *text = ctx->text;
    long long literal;
    int overflow = 0;
    int found;
    char expected[EXPECTED_MAX];

    if (config_setting_type(s) != CONFIG_TYPE_INT)
        return 0;
    if (file != NULL) {
        included = read_text_file(file, NULL);
        text = included;
    }
    found = text != NULL &&
            find_int_literal(text, config_setting_source_line(s), config_setting_name(s),
                             &literal, &overflow) == 0;
    free(included);
    if (!found || (!overflow && literal == value))
        return 0;

    expected_form(spec, expected, sizeof(expected));
    if (overflow)
        return fail_at(ctx, s, name, "integer is too large; expected %s", expected);
    return fail_at(ctx, s, name, "%lld is out of range; expected %s", literal, expected);
}

/* Validate a Nomad address the way nomad_client_new() will use it. */
static const char *address_problem(const char *address)
{
    static const char *const schemes[] = {"http://", "https://", "unix://"};

    if (address[0] == '\0')
        return "empty address";
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t len = strlen(schemes[i]);

        if (strncmp(address, schemes[i], len) != 0)
            continue;
        if (address[len] == '\0')
            return "no host in address";
        /* unix:///path: the socket path after the scheme is absolute. */
        if (i == 2 && address[len] != '/')
            return "no absolute socket path in address";
        return NULL;
    }
    return "invalid address";
}

/* The problem with a listener address ("IPv4:port", "[IPv6]:port" or "localhost:port"), or NULL. */
static const char *listen_address_problem(const char *address)
{
    unsigned char binary[16];   /* an in6_addr, or an in_addr in its first 4 bytes */
    char host[INET6_ADDRSTRLEN];
    const char *port;
    size_t host_len;
    unsigned long long number;
    size_t digits;

    if (address[0] == '\0')
        return "empty listen address";
    if (address[0] == '[') {
        const char *close = strchr(address, ']');

        if (close == NULL || close[1] != ':')
            return "no port in listen address";
        host_len = (size_t)(close - address) - 1;
        if (host_len >= sizeof(host))
            return "invalid IPv6 address in listen address";
        memcpy(host, address + 1, host_len);
        host[host_len] = '\0';
        if (inet_pton(AF_INET6, host, binary) != 1)
            return "invalid IPv6 address in listen address";
        port = close + 2;
    } else {
        const char *colon = strrchr(address, ':');

        if (colon == NULL)
            return "no port in listen address";
        host_len = (size_t)(colon - address);
        if (host_len >= sizeof(host))
            return "invalid host in listen address";
        memcpy(host, address, host_len);
        host[host_len] = '\0';
        /* Other host names are left out because resolving one could pick any of several addresses. */
        if (strcmp(host, "localhost") != 0 && inet_pton(AF_INET, host, binary) != 1)
            return "invalid host in listen address";
        port = colon + 1;
    }

    digits = parse_digits(port, &number);
    if (digits == 0 || digits > 5 || port[digits] != '\0' || number < 1 || number > 65535)
        return "invalid port in listen address";
    return NULL;
}

/* The problem with a namespace name, or NULL. Nomad's rule: ^[a-zA-Z0-9-]{1,128}$ (nomad/structs/structs.go). */
static const char *namespace_problem(const char *name)
{
    size_t len = strlen(name);

    if (len == 0)
        return "empty namespace";
    if (len > 128)
        return "namespace too long";
    for (const char *c = name; *c != '\0'; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '-'))
            return "invalid namespace";
    }
    return NULL;
}

/*
 * The problem with a Variable path prefix, or NULL. Nomad accepts Variable
 * paths matching ^[a-zA-Z0-9-_~/]{1,128}$ and keeps the top-level "nomad"
 * directory for nomad/jobs and nomad/job-templates (validatePath in
 * nomad/structs/variables.go). The slash rule keeps paths like
 * <prefix>/lock free of empty segments.
 */
static const char *var_prefix_problem(const char *prefix)
{
    size_t len = strlen(prefix);

    if (len == 0)
        return "empty prefix";
    if (len > MAX_VAR_PREFIX_LENGTH)
        return "prefix too long";
    for (const char *c = prefix; *c != '\0'; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              strchr("-_~/", *c) != NULL))
            return "invalid character in prefix";
    }
    if (prefix[0] == '/' || prefix[len - 1] == '/')
        return "leading or trailing '/' in prefix";
    if (strncmp(prefix, "nomad", 5) == 0 && (prefix[5] == '\0' || prefix[5] == '/'))
        return "Nomad's reserved \"nomad\" directory in prefix";
    return NULL;
}

/* The problem with a string of this kind, or NULL when it is valid or the kind has no rule. */
static const char *string_problem(enum setting_kind kind, const char *text)
{
    switch (kind) {
    case KIND_PATH:
        return text[0] == '\0' ? "empty path" : NULL;
    case KIND_ADDRESS:
        return address_problem(text);
    case KIND_LISTEN_ADDRESS:
        return listen_address_problem(text);
    case KIND_NAMESPACE:
        return namespace_problem(text);
    case KIND_VAR_PREFIX:
        return var_prefix_problem(text);
    default:
        return NULL;
    }
}

static int load_string(const struct load_ctx *ctx, const struct setting_spec *spec,
                       const config_setting_t *s, const char *name, struct policy *p)
{
    const char *text = config_setting_get_string(s);
    const char *problem = string_problem(spec->kind, text);
    char **field = FIELD(p, spec, char *);
    enum log_level level;
    char expected[EXPECTED_MAX];

    expected_form(spec, expected, sizeof(expected));
    if (problem != NULL && text[0] == '\0')
        return fail_at(ctx, s, name, "%s; expected %s", problem, expected);
    if (problem != NULL)
        return fail_at(ctx, s, name, "%s \"%s\"; expected %s", problem, text, expected);

    switch (spec->kind) {
    case KIND_PATH:
    case KIND_ADDRESS:
    case KIND_LISTEN_ADDRESS:
    case KIND_NAMESPACE:
    case KIND_VAR_PREFIX:
        break;
    case KIND_LOG_LEVEL:
        if (log_parse_level(text, &level) != 0)
            return fail_value(ctx, spec, s, name, "unknown log level", text);
        break;
    default:
        /* An optional string: "" unsets it, overriding the environment. */
        if (text[0] == '\0')
            text = NULL;
        break;
    }

    if (set_string(field, text) != 0)
        return fail_at(ctx, s, name, "out of memory; free memory and retry");
    return 0;
}

static int load_integer(const struct load_ctx *ctx, const struct setting_spec *spec,
                        const config_setting_t *s, const char *name, struct policy *p)
{
    long long value;
    char expected[EXPECTED_MAX];

    if (config_setting_type(s) != CONFIG_TYPE_INT && config_setting_type(s) != CONFIG_TYPE_INT64)
        return fail_type(ctx, spec, s, name);
    value = config_setting_get_int64(s);
    if (check_int_literal(ctx, spec, s, name, value) != 0)
        return -1;
    if (value < spec->min || value > spec->max)
        return fail_at(ctx, s, name, "%lld is out of range; expected %s", value,
                       expected_form(spec, expected, sizeof(expected)));

    if (spec->kind == KIND_INT)
        *FIELD(p, spec, int) = (int)value;
    else
        *FIELD(p, spec, long) = (long)value;
    return 0;
}

static int load_duration(const struct load_ctx *ctx, const struct setting_spec *spec,
                         const config_setting_t *s, const char *name, struct policy *p)
{
    const char *text = config_setting_get_string(s);
    int is_timeout = spec->kind == KIND_TIMEOUT;
    long long ms;
    long long value;
    char bound[32];

    if (parse_duration_ms(text, is_timeout, &ms) != 0)
        return fail_value(ctx, spec, s, name, "invalid duration", text);

    /* Bounds are in the field's unit: milliseconds for timeouts, seconds otherwise. */
    value = is_timeout ? ms : ms / 1000;
    if (value < spec->min)
        return fail_at(ctx, s, name, "duration \"%s\" is too short; expected at least \"%s\"",
                       text, is_timeout ? format_duration_ms(spec->min, bound, sizeof(bound))
                                        : policy_format_duration((long)spec->min, bound,
                                                                 sizeof(bound)));
    if (value > spec->max)
        return fail_at(ctx, s, name, "duration \"%s\" is too long; expected at most \"%s\"",
                       text, is_timeout ? format_duration_ms(spec->max, bound, sizeof(bound))
                                        : policy_format_duration((long)spec->max, bound,
                                                                 sizeof(bound)));
    *FIELD(p, spec, long) = (long)value;
    return 0;
}

static int load_size(const struct load_ctx *ctx, const struct setting_spec *spec,
                     const config_setting_t *s, const char *name, struct policy *p)
{
    const char *text = config_setting_get_string(s);
    unsigned long long bytes;
    char low[32];
    char high[32];

    if (parse_size(text, &bytes) != 0)
        return fail_value(ctx, spec, s, name, "invalid size", text);
    if (bytes < (unsigned long long)spec->min || bytes > (unsigned long long)spec->max ||
        bytes > SIZE_MAX)
        return fail_at(ctx, s, name, "size \"%s\" is out of range; expected a size from \"%s\" to \"%s\"",
                       text, format_size((unsigned long long)spec->min, low, sizeof(low)),
                       format_size((unsigned long long)spec->max, high, sizeof(high)));
    *FIELD(p, spec, size_t) = (size_t)bytes;
    return 0;
}

static int load_share(const struct load_ctx *ctx, const struct setting_spec *spec,
                      const config_setting_t *s, const char *name, struct policy *p)
{
    char expected[EXPECTED_MAX];
    double share;

    expected_form(spec, expected, sizeof(expected));
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
    case CONFIG_TYPE_FLOAT:
        if (config_setting_type(s) == CONFIG_TYPE_FLOAT)
            share = config_setting_get_float(s);
        else if (check_int_literal(ctx, spec, s, name, config_setting_get_int64(s)) != 0)
            return -1;
        else
            share = (double)config_setting_get_int64(s);
        if (!(share >= 0.0 && share <= 1.0))
            return fail_at(ctx, s, name, "%g is outside 0..1; expected %s", share, expected);
        break;
    case CONFIG_TYPE_STRING: {
        const char *text = config_setting_get_string(s);
        size_t len = strlen(text);
        char *stop;

        /* Digits and an optional fraction, then '%': no sign, exponent or spaces. */
        if (len < 2 || text[len - 1] != '%' || strspn(text, "0123456789.") != len - 1 ||
            text[0] == '.')
            return fail_value(ctx, spec, s, name, "invalid share", text);
        share = strtod(text, &stop);
        if (stop != text + len - 1)
            return fail_value(ctx, spec, s, name, "invalid share", text);
        if (share > 100.0)
            return fail_at(ctx, s, name, "\"%s\" is outside 0..100%%; expected %s", text,
                           expected);
        share /= 100.0;
        break;
    }
    default:
        return fail_type(ctx, spec, s, name);
    }
    *FIELD(p, spec, double) = share;
    return 0;
}

/* The placeholders a restart command may contain; the exec executor replaces each with the target's value. */
static const char *const command_placeholders[] = {"{node_id}", "{node_name}", "{address}"};

/*
 * Find the first '{' in arg that does not start a known placeholder. Returns
 * NULL when there is none; else returns the brace, with *len the length up
 * to and including the next '}' (or to the end of arg, with *closed 0).
 */
static const char *find_unknown_placeholder(const char *arg, size_t *len, int *closed)
{
    for (const char *brace = strchr(arg, '{'); brace != NULL; brace = strchr(brace + 1, '{')) {
        const char *close = strchr(brace, '}');
        size_t n = close != NULL ? (size_t)(close - brace) + 1 : strlen(brace);
        int known = 0;

        for (size_t i = 0; i < sizeof(command_placeholders) / sizeof(command_placeholders[0]); i++) {
            if (strlen(command_placeholders[i]) == n && strncmp(brace, command_placeholders[i], n) == 0)
                known = 1;
        }
        if (!known) {
            *len = n;
            *closed = close != NULL;
            return brace;
        }
    }
    return NULL;
}

/* The KIND_ADDRESS form, for messages about one element of a KIND_ADDRESS_LIST. */
static const struct setting_spec address_element_spec = {"address", KIND_ADDRESS, 0, NO_BOUNDS, NULL};

/*
 * Check element i (0-based) of a KIND_ARGV or KIND_ADDRESS_LIST array. s is
 * the array: libconfig records an unnamed element's line unreliably, so
 * messages carry the array's line and the element's 1-based position.
 */
static int check_array_element(const struct load_ctx *ctx, const struct setting_spec *spec,
                               const config_setting_t *s, const char *name, int i,
                               const char *text)
{
    char expected[EXPECTED_MAX];
    const char *brace;
    size_t len;
    int closed;

    if (spec->kind == KIND_ADDRESS_LIST) {
        const char *problem = address_problem(text);

        expected_form(&address_element_spec, expected, sizeof(expected));
        if (problem != NULL && text[0] == '\0')
            return fail_at(ctx, s, name, "element %d: %s; expected %s", i + 1, problem, expected);
        if (problem != NULL)
            return fail_at(ctx, s, name, "element %d: %s \"%s\"; expected %s", i + 1, problem, text,
                           expected);
        return 0;
    }

    if (text[0] == '\0')
        return fail_at(ctx, s, name, "element %d: empty string; expected %s", i + 1,
                       expected_form(spec, expected, sizeof(expected)));
    brace = find_unknown_placeholder(text, &len, &closed);
    if (brace != NULL)
        return fail_at(ctx, s, name,
                       "element %d: %s placeholder \"%.*s\"; expected only {node_id}, "
                       "{node_name} or {address} inside braces",
                       i + 1, closed ? "unknown" : "unclosed", (int)len, brace);
    return 0;
}

/* Load a KIND_ARGV or KIND_ADDRESS_LIST array into a struct policy_argv. */
static int load_string_array(const struct load_ctx *ctx, const struct setting_spec *spec,
                             const config_setting_t *s, const char *name, struct policy *p)
{
    const char *items[MAX_ARGV_ELEMENTS];
    char expected[EXPECTED_MAX];
    int n;

    if (config_setting_type(s) != CONFIG_TYPE_ARRAY)
        return fail_type(ctx, spec, s, name);
    expected_form(spec, expected, sizeof(expected));
    n = config_setting_length(s);
    if (n == 0 && spec->kind == KIND_ARGV)
        return fail_at(ctx, s, name, "empty array; expected %s", expected);
    if (n > MAX_ARGV_ELEMENTS)
        return fail_at(ctx, s, name, "%d elements, more than %d; expected %s", n,
                       MAX_ARGV_ELEMENTS, expected);

    for (int i = 0; i < n; i++) {
        const config_setting_t *element = config_setting_get_elem(s, (unsigned)i);

        /* libconfig arrays hold one scalar type, so the first element decides for all. */
        if (config_setting_type(element) != CONFIG_TYPE_STRING)
            return fail_at(ctx, s, name, "element %d: wrong type %s; expected %s", i + 1,
                           type_name(config_setting_type(element)), expected);
        items[i] = config_setting_get_string(element);
        if (check_array_element(ctx, spec, s, name, i, items[i]) != 0)
            return -1;
    }

    if (argv_set(FIELD(p, spec, struct policy_argv), items, (size_t)n) != 0)
        return fail_at(ctx, s, name, "out of memory; free memory and retry");
    return 0;
}

static int token_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '@' || c == '-';
}

static int token_name_is_valid(const char *token_name)
{
    size_t len = strlen(token_name);

    if (len == 0 || len > MAX_TOKEN_NAME_LENGTH)
        return 0;
    for (const char *c = token_name; *c != '\0'; c++) {
        if (!token_name_char(*c))
            return 0;
    }
    return 1;
}

/* Printable ASCII without spaces, because the token travels in an HTTP header. */
static int token_chars_are_valid(const char *token)
{
    for (const unsigned char *c = (const unsigned char *)token; *c != '\0'; c++) {
        if (*c < 0x21 || *c > 0x7e)
            return 0;
    }
    return 1;
}

/*
 * Check one { name = ...; token = ...; } group, element i (0-based) of the
 * tokens list, against the first i entries already accepted. The token value
 * never goes into a message. On success *name_out and *token_out point into
 * the group.
 */
static int check_token_entry(const struct load_ctx *ctx, const config_setting_t *entry,
                             const char *name, int i, const struct policy_listener_token *accepted,
                             const char **name_out, const char **token_out)
{
    const config_setting_t *name_setting = config_setting_get_member(entry, "name");
    const config_setting_t *token_setting = config_setting_get_member(entry, "token");
    const char *token_name;
    const char *token;

    for (int m = 0; m < config_setting_length(entry); m++) {
        const config_setting_t *member = config_setting_get_elem(entry, (unsigned)m);
        const char *member_name = config_setting_name(member);

        if (strcmp(member_name, "name") != 0 && strcmp(member_name, "token") != 0)
            return fail_at(ctx, member, name, "element %d: unknown setting \"%s\"; expected name "
                           "and token", i + 1, member_name);
    }

    if (name_setting == NULL)
        return fail_at(ctx, entry, name, "element %d: no name; expected name = \"alice\"; with "
                       "1 to %d characters from A-Z a-z 0-9 _ . @ -", i + 1, MAX_TOKEN_NAME_LENGTH);
    if (config_setting_type(name_setting) != CONFIG_TYPE_STRING)
        return fail_at(ctx, name_setting, name, "element %d: name has wrong type %s; expected a "
                       "string in double quotes", i + 1,
                       type_name(config_setting_type(name_setting)));
    token_name = config_setting_get_string(name_setting);
    if (!token_name_is_valid(token_name))
        return fail_at(ctx, name_setting, name, "element %d: invalid name \"%s\"; expected 1 to %d "
                       "characters from A-Z a-z 0-9 _ . @ -", i + 1, token_name,
                       MAX_TOKEN_NAME_LENGTH);
    for (int j = 0; j < i; j++) {
        if (strcmp(accepted[j].name, token_name) == 0)
            return fail_at(ctx, name_setting, name, "name \"%s\" is used by elements %d and %d; "
                           "expected a different name for each token", token_name, j + 1, i + 1);
    }

    if (token_setting == NULL)
        return fail_at(ctx, entry, name, "\"%s\" has no token; expected token = \"<%d or more "
                       "characters>\";", token_name, MIN_TOKEN_LENGTH);
    if (config_setting_type(token_setting) != CONFIG_TYPE_STRING)
        return fail_at(ctx, token_setting, name, "token of \"%s\" has wrong type %s; expected a "
                       "string in double quotes", token_name,
                       type_name(config_setting_type(token_setting)));
    token = config_setting_get_string(token_setting);
    if (strlen(token) < MIN_TOKEN_LENGTH)
        return fail_at(ctx, token_setting, name, "token of \"%s\" is shorter than %d characters; "
                       "expected at least %d random characters, for example from `openssl rand "
                       "-hex 32`", token_name, MIN_TOKEN_LENGTH, MIN_TOKEN_LENGTH);
    if (!token_chars_are_valid(token))
        return fail_at(ctx, token_setting, name, "token of \"%s\" contains a space, a control or "
                       "a non-ASCII character; expected printable ASCII without spaces, since it "
                       "is sent in an HTTP header", token_name);
    for (int j = 0; j < i; j++) {
        if (strcmp(accepted[j].token, token) == 0)
            return fail_at(ctx, token_setting, name, "\"%s\" has the same token as \"%s\"; "
                           "expected a different token for each name", token_name,
                           accepted[j].name);
    }

    *name_out = token_name;
    *token_out = token;
    return 0;
}

/* Load listener.tokens, replacing the previous list only when every entry is valid. */
static int load_tokens(const struct load_ctx *ctx, const struct setting_spec *spec,
                       const config_setting_t *s, const char *name, struct policy *p)
{
    struct policy_listener *listener = FIELD(p, spec, struct policy_listener);
    struct policy_listener_token *tokens = NULL;
    size_t n_tokens = 0;
    char expected[EXPECTED_MAX];
    int n;
    int rc = -1;

    if (config_setting_type(s) != CONFIG_TYPE_LIST)
        return fail_type(ctx, spec, s, name);
    n = config_setting_length(s);
    if (n > 0) {
        tokens = calloc((size_t)n, sizeof(*tokens));
        if (tokens == NULL)
            return fail_at(ctx, s, name, "out of memory; free memory and retry");
    }

    for (int i = 0; i < n; i++) {
        const config_setting_t *entry = config_setting_get_elem(s, (unsigned)i);
        const char *token_name = NULL;
        const char *token = NULL;

        if (!config_setting_is_group(entry)) {
            fail_at(ctx, s, name, "element %d: wrong type %s; expected %s", i + 1,
                    type_name(config_setting_type(entry)),
                    expected_form(spec, expected, sizeof(expected)));
            goto out;
        }
        if (check_token_entry(ctx, entry, name, i, tokens, &token_name, &token) != 0)
            goto out;
        tokens[i].name = strdup(token_name);
        tokens[i].token = strdup(token);
        n_tokens++;
        if (tokens[i].name == NULL || tokens[i].token == NULL) {
            fail_at(ctx, entry, name, "out of memory; free memory and retry");
            goto out;
        }
    }

    tokens_free(listener->tokens, listener->n_tokens);
    listener->tokens = tokens;
    listener->n_tokens = n_tokens;
    tokens = NULL;
    n_tokens = 0;
    rc = 0;

out:
    tokens_free(tokens, n_tokens);
    return rc;
}

static const char *executor_name(enum restart_executor executor)
{
    return executor == EXECUTOR_EXEC ? "exec" : "node-agent";
}

static int parse_executor(const char *text, enum restart_executor *out)
{
    if (strcmp(text, "exec") == 0)
        *out = EXECUTOR_EXEC;
    else if (strcmp(text, "node-agent") == 0)
        *out = EXECUTOR_NODE_AGENT;
    else
        return -1;
    return 0;
}

static const char *const compression_names[] = {
    [NOMAD_COMPRESSION_AUTO] = "auto",
    [NOMAD_COMPRESSION_ON] = "on",
    [NOMAD_COMPRESSION_OFF] = "off",
};

static int parse_compression(const char *text, enum nomad_compression *out)
{
    for (size_t i = 0; i < sizeof(compression_names) / sizeof(compression_names[0]); i++) {
        if (strcmp(text, compression_names[i]) == 0) {
            *out = (enum nomad_compression)i;
            return 0;
        }
    }
    return -1;
}

static int load_value(const struct load_ctx *ctx, const struct setting_spec *spec,
                      const config_setting_t *s, const char *name, struct policy *p)
{
    const char *text;

    switch (spec->kind) {
    case KIND_BOOL:
        if (config_setting_type(s) != CONFIG_TYPE_BOOL)
            return fail_type(ctx, spec, s, name);
        *FIELD(p, spec, int) = config_setting_get_bool(s);
        return 0;
    case KIND_INT:
    case KIND_LONG:
        return load_integer(ctx, spec, s, name, p);
    case KIND_SHARE:
        return load_share(ctx, spec, s, name, p);
    case KIND_ARGV:
    case KIND_ADDRESS_LIST:
        return load_string_array(ctx, spec, s, name, p);
    case KIND_TOKENS:
        return load_tokens(ctx, spec, s, name, p);
    default:
        break;
    }

    /* Every other kind is written as a string. */
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return fail_type(ctx, spec, s, name);
    text = config_setting_get_string(s);

    switch (spec->kind) {
    case KIND_DURATION:
    case KIND_TIMEOUT:
        return load_duration(ctx, spec, s, name, p);
    case KIND_SIZE:
        return load_size(ctx, spec, s, name, p);
    case KIND_RATE:
        if (policy_parse_rate(text, FIELD(p, spec, struct policy_rate)) != 0)
            return fail_value(ctx, spec, s, name, "invalid rate", text);
        return 0;
    case KIND_MODE:
        if (policy_parse_mode(text, FIELD(p, spec, enum policy_mode)) != 0)
            return fail_value(ctx, spec, s, name, "invalid mode", text);
        return 0;
    case KIND_EXECUTOR:
        if (parse_executor(text, FIELD(p, spec, enum restart_executor)) != 0)
            return fail_value(ctx, spec, s, name, "invalid executor", text);
        return 0;
    case KIND_COMPRESSION:
        if (parse_compression(text, FIELD(p, spec, enum nomad_compression)) != 0)
            return fail_value(ctx, spec, s, name, "invalid compression", text);
        return 0;
    default:
        return load_string(ctx, spec, s, name, p);
    }
}

static const struct setting_spec *find_spec(const struct setting_spec *members, const char *name)
{
    for (; members->name != NULL; members++) {
        if (strcmp(members->name, name) == 0)
            return members;
    }
    return NULL;
}

static int fail_unknown(const struct load_ctx *ctx, const config_setting_t *s, const char *name,
                        const struct setting_spec *members)
{
    char names[256];
    size_t used = 0;

    names[0] = '\0';
    for (const struct setting_spec *m = members; m->name != NULL; m++) {
        int n = snprintf(names + used, sizeof(names) - used, "%s%s",
                         m == members ? "" : ", ", m->name);

        if (n < 0 || (size_t)n >= sizeof(names) - used)
            break;
        used += (size_t)n;
    }
    return fail_at(ctx, s, name, "unknown %s; expected one of: %s",
                   config_setting_is_group(s) ? "group" : "setting", names);
}

/* Apply every member of group, checking each name against members. prefix is the dotted path of group ("" at the top). */
static int load_group(const struct load_ctx *ctx, const config_setting_t *group,
                      const struct setting_spec *members, const char *prefix, struct policy *p)
{
    int n = config_setting_length(group);

    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        const char *short_name = config_setting_name(s);
        const struct setting_spec *spec = find_spec(members, short_name);
        char name[256];

        snprintf(name, sizeof(name), "%s%s%s", prefix, prefix[0] != '\0' ? "." : "", short_name);
        if (spec == NULL)
            return fail_unknown(ctx, s, name, members);

        if (spec->kind == KIND_GROUP) {
            if (!config_setting_is_group(s))
                return fail_type(ctx, spec, s, name);
            if (load_group(ctx, s, spec->members, name, p) != 0)
                return -1;
            continue;
        }
        if (load_value(ctx, spec, s, name, p) != 0)
            return -1;
    }
    return 0;
}

/*
 * Reject a restart rule that the file configures (it has a group for the
 * rule) and that may act (enabled, mode approve or enforce) with executor
 * "exec" but no command, pointing at the rule's group. Dry-run needs no
 * command, because it only records what it would restart.
 *
 * A rule with no group in the file is not checked, so `controller.mode =
 * "enforce"` alone still loads with the built-in server_restart (exec, no
 * command), and so does --mode, which policy_force_mode() applies after
 * loading. NOTE: such a rule cannot restart anything, so the exec executor
 * must fail the action when command.argc is 0.
 */
static int check_restart_commands(const struct load_ctx *ctx, const config_t *cfg,
                                  const struct policy *p)
{
    const struct {
        const char *name;
        const struct policy_rule_common *common;
        enum restart_executor executor;
        const struct policy_argv *command;
    } rules[] = {
        {"rules.client_restart", &p->client_restart.common, p->client_restart.executor,
         &p->client_restart.command},
        {"rules.server_restart", &p->server_restart.common, p->server_restart.executor,
         &p->server_restart.command},
    };

    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
        enum policy_mode mode = policy_rule_mode(p, rules[i].common);
        const config_setting_t *group = config_lookup(cfg, rules[i].name);

        if (group == NULL || !rules[i].common->enabled || rules[i].executor != EXECUTOR_EXEC ||
            rules[i].command->argc > 0 || mode == MODE_DRY_RUN)
            continue;
        return fail_at(ctx, group, rules[i].name,
                       "executor \"exec\" has no command to run in %s mode; expected a command "
                       "like [\"ssh\", \"{address}\", \"sudo\", \"systemctl\", \"restart\", "
                       "\"nomad\"], executor = \"node-agent\", mode = \"dry-run\" or "
                       "enabled = false",
                       policy_mode_name(mode));
    }
    return 0;
}

int policy_load(const char *path, struct policy *p, char *err, size_t errsz)
{
    struct load_ctx ctx = {.path = path, .text = NULL, .err = err, .errsz = errsz};
    config_t cfg;
    char *text;
    size_t len;
    int rc = -1;

    if (init_defaults(p) != 0) {
        policy_free(p);
        set_error(err, errsz, "%s: out of memory; free memory and retry", path);
        return -1;
    }

    /* Read the file ourselves: errno is still meaningful on failure, and
     * check_int_literal() needs the text. */
    text = read_text_file(path, &len);
    if (text == NULL) {
        if (errno == EFBIG)
            set_error(err, errsz, "%s: cannot read: larger than %ld bytes; check the --config path",
                      path, MAX_POLICY_FILE_BYTES);
        else
            set_error(err, errsz, "%s: cannot read: %s; check the --config path", path,
                      strerror(errno));
        policy_free(p);
        return -1;
    }
    ctx.text = text;

    /* libconfig reads a string only up to its first NUL, so the rest of the file would be ignored. */
    if (strlen(text) != len) {
        int line = 1;

        for (const char *c = text; *c != '\0'; c++)
            line += (*c == '\n');
        set_error(err, errsz, "%s:%d: NUL byte in the file; expected a text file", path, line);
        free(text);
        policy_free(p);
        return -1;
    }

    config_init(&cfg);
    if (config_read_string(&cfg, text) != CONFIG_TRUE) {
        const char *file = config_error_file(&cfg);
        const char *message = config_error_text(&cfg);
        const char *expected = "libconfig syntax, for example: log = { level = \"info\"; };";

        if (message != NULL && strstr(message, "include") != NULL)
            expected = "an @include path that exists (a relative one starts at the working directory)";
        set_error(err, errsz, "%s:%d: %s; expected %s", file != NULL ? file : path,
                  config_error_line(&cfg), message != NULL ? message : "parse error", expected);
        goto out;
    }
    if (load_group(&ctx, config_root_setting(&cfg), top_settings, "", p) != 0)
        goto out;
    if (check_restart_commands(&ctx, &cfg, p) != 0)
        goto out;
    if (set_string(&p->source_path, path) != 0) {
        set_error(err, errsz, "%s: out of memory; free memory and retry", path);
        goto out;
    }
    rc = 0;

out:
    config_destroy(&cfg);
    free(text);
    if (rc != 0)
        policy_free(p);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Dumping                                                                 */

/* Write len bytes of text as the inside of a libconfig string literal. */
static void dump_escaped(FILE *out, const char *text, size_t len)
{
    for (const unsigned char *c = (const unsigned char *)text; c < (const unsigned char *)text + len;
         c++) {
        if (*c == '"' || *c == '\\')
            fprintf(out, "\\%c", *c);
        else if (*c == '\n')
            fputs("\\n", out);
        else if (*c == '\t')
            fputs("\\t", out);
        else if (*c < 0x20 || *c == 0x7f)
            fprintf(out, "\\x%02x", *c);
        else
            fputc(*c, out);
    }
}

/* Write text as a libconfig string literal. */
static void dump_string(FILE *out, const char *text)
{
    fputc('"', out);
    dump_escaped(out, text, strlen(text));
    fputc('"', out);
}

/* Write a share with the fewest digits that read back to the same double, always with a decimal point. */
static void dump_share(FILE *out, double share)
{
    char buf[40];

    for (int digits = 1; digits <= 17; digits++) {
        snprintf(buf, sizeof(buf), "%.*g", digits, share);
        if (strtod(buf, NULL) == share)
            break;
    }
    if (strpbrk(buf, ".e") == NULL)
        strcat(buf, ".0");
    fputs(buf, out);
}

/*
 * Find the userinfo of a URL address ("user:pass@" in "http://user:pass@host").
 * Returns its length including the '@', with its offset in *start, or 0 when
 * there is none.
 */
static size_t find_userinfo(const char *address, size_t *start)
{
    const char *scheme_end = strstr(address, "://");
    const char *host;
    const char *at;

    if (scheme_end == NULL)
        return 0;
    host = scheme_end + 3;
    at = memchr(host, '@', strcspn(host, "/?#"));
    if (at == NULL)
        return 0;
    *start = (size_t)(host - address);
    return (size_t)(at - host) + 1;
}

/*
 * Write an address as a string literal without its userinfo
 * ("http://user:pass@host" becomes "http://host"), because the Nomad CLI
 * sends userinfo as Basic auth, so it may contain a password.
 */
static void dump_address_literal(FILE *out, const char *address)
{
    size_t start = 0;
    size_t userinfo_len = find_userinfo(address, &start);

    fputc('"', out);
    dump_escaped(out, address, start);
    dump_escaped(out, address + start + userinfo_len, strlen(address + start + userinfo_len));
    fputc('"', out);
}

/* Write "name = <address>" without userinfo, preceded by a comment when userinfo was left out. */
static void dump_address(FILE *out, int indent, const char *name, const char *address)
{
    size_t start;

    if (find_userinfo(address, &start) > 0)
        fprintf(out, "# %s credentials are set (not shown)\n%*s", name, indent, "");
    fprintf(out, "%s = ", name);
    dump_address_literal(out, address);
}

/* Write a KIND_ARGV or KIND_ADDRESS_LIST array as "name = [...]", addresses without userinfo. */
static void dump_string_array(FILE *out, int indent, const struct setting_spec *spec,
                              const struct policy_argv *v)
{
    size_t start;

    if (spec->kind == KIND_ADDRESS_LIST) {
        for (size_t i = 0; i < v->argc; i++) {
            if (find_userinfo(v->argv[i], &start) > 0) {
                fprintf(out, "# %s credentials are set (not shown)\n%*s", spec->name, indent, "");
                break;
            }
        }
    }

    fprintf(out, "%s = [", spec->name);
    for (size_t i = 0; i < v->argc; i++) {
        if (i > 0)
            fputs(", ", out);
        if (spec->kind == KIND_ADDRESS_LIST)
            dump_address_literal(out, v->argv[i]);
        else
            dump_string(out, v->argv[i]);
    }
    fputc(']', out);
}

/* Write a comment line with the token names only, because the values are secrets. */
static void dump_token_names(FILE *out, const struct setting_spec *spec,
                             const struct policy_listener *listener)
{
    fprintf(out, "# %s: ", spec->name);
    for (size_t i = 0; i < listener->n_tokens; i++)
        fprintf(out, "%s%s", i > 0 ? ", " : "", listener->tokens[i].name);
    fputs(" (values not shown)\n", out);
}

/* Write one setting; the caller has written the indent of its first line. */
static void dump_value(FILE *out, int indent, const struct policy *p,
                       const struct setting_spec *spec)
{
    char buf[64];

    switch (spec->kind) {
    case KIND_STRING:
    case KIND_SECRET:
    case KIND_PATH:
    case KIND_ADDRESS:
    case KIND_LOG_LEVEL:
    case KIND_LISTEN_ADDRESS:
    case KIND_NAMESPACE:
    case KIND_VAR_PREFIX: {
        const char *text = *CFIELD(p, spec, char *);

        if (text == NULL) {
            fprintf(out, "# %s is not set\n", spec->name);
            return;
        }
        if (spec->kind == KIND_SECRET) {
            fprintf(out, "# %s is set (not shown)\n", spec->name);
            return;
        }
        if (spec->kind == KIND_ADDRESS) {
            dump_address(out, indent, spec->name, text);
            break;
        }
        fprintf(out, "%s = ", spec->name);
        dump_string(out, text);
        break;
    }
    case KIND_BOOL:
        fprintf(out, "%s = %s", spec->name, *CFIELD(p, spec, int) ? "true" : "false");
        break;
    case KIND_INT:
        fprintf(out, "%s = %d", spec->name, *CFIELD(p, spec, int));
        break;
    case KIND_LONG:
        fprintf(out, "%s = %ld", spec->name, *CFIELD(p, spec, long));
        break;
    case KIND_DURATION:
        fprintf(out, "%s = \"%s\"", spec->name,
                policy_format_duration(*CFIELD(p, spec, long), buf, sizeof(buf)));
        break;
    case KIND_TIMEOUT:
        fprintf(out, "%s = \"%s\"", spec->name,
                format_duration_ms(*CFIELD(p, spec, long), buf, sizeof(buf)));
        break;
    case KIND_SIZE:
        fprintf(out, "%s = \"%s\"", spec->name,
                format_size(*CFIELD(p, spec, size_t), buf, sizeof(buf)));
        break;
    case KIND_RATE:
        fprintf(out, "%s = \"%s\"", spec->name,
                policy_format_rate(CFIELD(p, spec, struct policy_rate), buf, sizeof(buf)));
        break;
    case KIND_MODE: {
        enum policy_mode mode = *CFIELD(p, spec, enum policy_mode);

        if (mode == MODE_UNSET) {
            fprintf(out, "# %s is not set: follows controller.mode\n", spec->name);
            return;
        }
        fprintf(out, "%s = \"%s\"", spec->name, policy_mode_name(mode));
        break;
    }
    case KIND_SHARE:
        fprintf(out, "%s = ", spec->name);
        dump_share(out, *CFIELD(p, spec, double));
        break;
    case KIND_ARGV:
    case KIND_ADDRESS_LIST: {
        const struct policy_argv *v = CFIELD(p, spec, struct policy_argv);

        if (spec->kind == KIND_ARGV && v->argc == 0) {
            fprintf(out, "# %s is not set\n", spec->name);
            return;
        }
        dump_string_array(out, indent, spec, v);
        break;
    }
    case KIND_EXECUTOR:
        fprintf(out, "%s = \"%s\"", spec->name,
                executor_name(*CFIELD(p, spec, enum restart_executor)));
        break;
    case KIND_COMPRESSION:
        fprintf(out, "%s = \"%s\"", spec->name,
                compression_names[*CFIELD(p, spec, enum nomad_compression)]);
        break;
    case KIND_TOKENS: {
        const struct policy_listener *listener = CFIELD(p, spec, struct policy_listener);

        if (listener->n_tokens > 0) {
            dump_token_names(out, spec, listener);
            return;
        }
        fprintf(out, "%s = ()", spec->name);
        break;
    }
    case KIND_GROUP:
        return;
    }
    fputs(";\n", out);
}

static void dump_group(FILE *out, const struct policy *p, const struct setting_spec *members,
                       int depth)
{
    for (const struct setting_spec *spec = members; spec->name != NULL; spec++) {
        fprintf(out, "%*s", depth * 2, "");
        if (spec->kind != KIND_GROUP) {
            dump_value(out, depth * 2, p, spec);
            continue;
        }
        fprintf(out, "%s = {\n", spec->name);
        dump_group(out, p, spec->members, depth + 1);
        fprintf(out, "%*s};\n", depth * 2, "");
        if (depth == 0 && spec[1].name != NULL)
            fputc('\n', out);
    }
}

int policy_dump(const struct policy *p, char **out)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    if (f == NULL)
        return -1;
    dump_group(f, p, top_settings, 0);
    if (ferror(f)) {
        fclose(f);
        free(text);
        return -1;
    }
    if (fclose(f) != 0) {
        free(text);
        return -1;
    }
    *out = text;
    return 0;
}
