/*
 * Configuration and policy, loaded from a libconfig file.
 *
 * One file holds the Nomad connection, the journal path, logging and the
 * policy rules. With no file, policy_init_defaults() gives the built-in
 * default policy, whose global mode is dry-run; policies/default.conf is the
 * same policy written out with the reason for every value.
 *
 * Precedence: built-in defaults, then the NOMAD_* environment, then the file.
 * A file setting replaces the environment only where the file sets it, and
 * an empty string ("") for an optional connection string (token, region,
 * namespace, TLS paths, http_auth) unsets it.
 *
 * Value syntax:
 *   durations  "0", "90s", "10m", "1h30m", "2d": units d, h, m, s, largest
 *              first, each at most once. Policy durations are whole seconds;
 *              only the nomad.* timeouts also take "ms" ("1500ms", "1s500ms").
 *   rates      "6/h" or "1/30m" (count per unit or per duration); "0" means
 *              no limit.
 *   sizes      "64MiB" (units B, KiB, MiB, GiB).
 *   shares     a number from 0 to 1 (0.3) or a percentage string ("30%").
 * Every value is checked on load, every unknown group or setting name is an
 * error, and an invalid file fails with
 *   FILE:LINE: what is wrong; expected form
 *
 * @include paths are resolved the way libconfig 1.5 does it: relative to the
 * working directory, not to the including file.
 */
#ifndef NOMAD_MEDIC_POLICY_H
#define NOMAD_MEDIC_POLICY_H

#include <stddef.h>

#include "../controller/host.h"
#include "../controller/nomad.h"

enum policy_mode {
    MODE_UNSET = 0,     /* a rule with no mode of its own follows the global mode */
    MODE_DRY_RUN,
    MODE_APPROVE,
    MODE_ENFORCE,
};

/* A token bucket: up to `count` actions per `period_s` seconds. count 0 means no limit (period_s is then 0). */
struct policy_rate {
    int count;
    long period_s;
};

/* Settings every rule has. */
struct policy_rule_common {
    int enabled;
    enum policy_mode mode;          /* MODE_UNSET: use policy.mode */
    struct policy_rate rate_limit;  /* per rule */
    long cooldown_s;                /* per target: minimum time between two actions on it */
};

struct policy_orphan_services {
    struct policy_rule_common common;
    long grace_s;                   /* how long a registration must stay orphaned before deletion */
};

struct policy_system_gc {
    struct policy_rule_common common;
    long min_terminal_allocs;       /* GC when terminal allocations reach this count ... */
    long min_terminal_evals;        /* ... or terminal evaluations reach this one */
};

/* An argument vector from the file, e.g. command = ["systemctl", "restart", "nomad"]; argv is NULL-terminated. */
struct policy_argv {
    char **argv;
    size_t argc;
};

enum restart_executor {
    EXECUTOR_EXEC = 0,      /* the cluster scope runs `command` itself (e.g. through ssh) */
    EXECUTOR_NODE_AGENT,    /* the node scope on that host runs its restart command on order */
};

/* Restart a client agent that is down while its host is alive. */
struct policy_client_restart {
    struct policy_rule_common common;
    long min_down_s;                /* down or disconnected at least this long */
    long heartbeat_max_age_s;       /* a host heartbeat at most this old proves the host alive */
    int max_parallel;               /* client restarts in flight cluster-wide */
    long ready_timeout_s;           /* a restarted node not ready by then fails its restart */
    long settle_s;                  /* no client restart this soon after a leader change */
    enum restart_executor executor;
    struct policy_argv command;     /* exec executor; placeholders {node_id} {node_name} {address} */
};

/* Restart a failed or unhealthy server agent (never the leader's host, one at a time). */
struct policy_server_restart {
    struct policy_rule_common common;
    long min_down_s;                /* failed or unhealthy at least this long */
    long ready_timeout_s;
    enum restart_executor executor;
    struct policy_argv command;     /* placeholders {node_id} {node_name} {address} */
};

/* Mark a flapping node ineligible instead of restarting it in a loop. */
struct policy_node_ineligible {
    struct policy_rule_common common;
    int flap_limit;                 /* this many down-to-ready cycles within flap_window_s */
    long flap_window_s;
};

struct policy_listener_token {
    char *name;                     /* recorded as who decided */
    char *token;                    /* secret: never logged or dumped */
};

/* The operator-facing HTTP listener: /healthz, /readyz, /metrics and the approval API. */
struct policy_listener {
    int enabled;
    char *address;                  /* "127.0.0.1:8646"; loopback by default */
    struct policy_listener_token *tokens;
    size_t n_tokens;
    long healthy_within_s;          /* /healthz fails when the last pass ended longer ago */
};

struct policy_netns_leaks {
    struct policy_rule_common common;
    long grace_s;                   /* how long an allocation's network state must stay leaked before removal */
};

struct policy_down_nodes {
    /* Advisory only for now: mode and limits are unused, and the file accepts only enabled and min_down. */
    struct policy_rule_common common;
    long min_down_s;                   /* report a node once it has been down this long */
};

struct policy {
    char *source_path;              /* file it was loaded from, NULL for the built-in default */

    struct nomad_conn_config nomad; /* defaults, then environment, then the file */
    int per_page;                   /* list page size; default 500 */

    char *journal_path;             /* default /var/lib/nomad-medic/journal.db */
    char *pause_file;               /* actions stop while this file exists */
    char *log_level;                /* "debug", "info", "warn", "error" */

    enum policy_mode mode;          /* global default mode */
    long interval_s;                /* loop interval of `run` */
    long approval_ttl_s;            /* pending and approved actions expire after this */
    struct policy_rate global_rate_limit;
    double breaker_max_unhealthy;   /* share of nodes (0..1) down or disconnected above which node- and service-level actions stop */
    int breaker_min_nodes;          /* the breaker needs at least this many nodes to judge a share */

    struct policy_orphan_services orphan_services;
    struct policy_system_gc system_gc;
    struct policy_down_nodes down_nodes;

    /* Node scope. */
    char *node_id;                  /* this host's Nomad node ID; NULL: read from the local agent */
    struct host_paths host;         /* where the client's network state lives */
    struct policy_netns_leaks netns_leaks;
    struct policy_rule_common port_conflicts;   /* advisory only: enabled is all that is used */
    struct policy_argv node_servers;            /* Nomad server addresses for Variables; empty: nomad.address */
    struct policy_argv node_restart_command;    /* run on a restart order; default systemctl restart nomad */

    /* Heartbeat loss and restarts (cluster scope), coordinated through Nomad Variables. */
    struct policy_client_restart client_restart;
    struct policy_server_restart server_restart;
    struct policy_node_ineligible node_ineligible;
    char *coord_namespace;          /* namespace of nomad-medic's Variables; default "default" */
    char *coord_prefix;             /* their path prefix; default "nomad-medic" */
    long lock_ttl_s;                /* leadership lock TTL */
    long lock_delay_s;              /* Nomad's lock delay after a holder dies */
    long heartbeat_interval_s;      /* node scope: how often the host heartbeat is written */

    struct policy_listener listener;
};

/*
 * Fill p with the built-in default policy (global mode dry-run) and the
 * NOMAD_* environment. p's previous contents are overwritten, not freed.
 * Returns 0; the caller frees p with policy_free(). Returns -1 only when
 * memory runs out, with p freed and a message in err.
 */
int policy_init_defaults(struct policy *p, char *err, size_t errsz);

/*
 * Load the file at path (not NULL) over the defaults and the environment.
 * p's previous contents are overwritten, not freed. On success returns 0,
 * p->source_path is a copy of path, and the caller frees p with
 * policy_free(). On failure returns -1, leaves p freed (zeroed, so a second
 * policy_free() is harmless), and err holds one line:
 *   PATH:LINE: problem; expected form       (invalid content)
 *   PATH: cannot read: <strerror>; check the --config path
 * err may be NULL when errsz is 0; a long message is truncated.
 */
int policy_load(const char *path, struct policy *p, char *err, size_t errsz);

/* Free every string p owns and zero p. Safe on a zeroed policy. */
void policy_free(struct policy *p);

/* 1 when some enabled rule of scope ("cluster" or "node") runs in approve or enforce mode. */
int policy_may_act(const struct policy *p, const char *scope);

/* The mode a rule runs in: its own, else the global one. */
enum policy_mode policy_rule_mode(const struct policy *p, const struct policy_rule_common *rule);

/* Override the global mode and every rule's mode (the --mode option). */
void policy_force_mode(struct policy *p, enum policy_mode mode);

/* "dry-run", "approve", "enforce"; "unset" for MODE_UNSET and any other value. */
const char *policy_mode_name(enum policy_mode mode);

/* Parse "dry-run", "approve" or "enforce" (exact, lower case). Returns 0, or -1. */
int policy_parse_mode(const char *text, enum policy_mode *out);

/*
 * Parse "90s", "10m", "1h30m", "2d", "0". Units d, h, m, s, largest first,
 * each at most once; no sign, no spaces, no "ms". Returns 0 and seconds in
 * *out, or -1 (also on overflow).
 */
int policy_parse_duration(const char *text, long *out);

/*
 * Parse "6/h", "1/30m", "0" (no limit). The part after '/' is one unit
 * letter (s, m, h, d) or a duration above zero; the count is 1 or more
 * ("0/h" is rejected because "0" alone means no limit). Returns 0, or -1.
 */
int policy_parse_rate(const char *text, struct policy_rate *out);

/* Format a rate as policy_parse_rate() reads it: "6/h", "1/30m", "0". Returns buf. */
char *policy_format_rate(const struct policy_rate *rate, char *buf, size_t bufsz);

/*
 * Format seconds as "1h30m", "10m", "45s", "0s", "48h" into buf, the form
 * policy_parse_duration() reads: units h, m, s, largest first, as Go writes
 * durations (no "d"); a negative value gets a leading '-'. Truncates to fit
 * bufsz; 32 bytes hold any long. Returns buf.
 */
char *policy_format_duration(long seconds, char *buf, size_t bufsz);

/*
 * Write the effective policy as libconfig text that policy_load() reads back
 * to the same policy (for `config show`-style output and tests). Secrets never
 * appear: a set token or http_auth becomes the comment "# token is set (not
 * shown)", so a reloaded dump has them unset. Unset optional strings and a
 * rule mode that follows controller.mode are written as comments too.
 * Returns 0 with a malloc'd NUL-terminated string in *out (the caller frees
 * it with free()), or -1 when memory runs out.
 */
int policy_dump(const struct policy *p, char **out);

#endif
