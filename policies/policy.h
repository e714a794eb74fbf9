/*
 * Configuration and policy, loaded from a libconfig file.
 *
 * One file holds the Nomad connection, the journal path, logging and the
 * policy rules. With no file, policy_init_defaults() gives the built-in
 * default policy, whose global mode is dry-run. Durations are written like
 * "90s", "10m", "1h30m", "2d" and rates like "6/h" ("count/unit", unit s, m,
 * h or d). Every value is checked on load; an invalid file fails with
 *   FILE:LINE: what is wrong; expected form
 */
#ifndef NOMAD_MEDIC_POLICY_H
#define NOMAD_MEDIC_POLICY_H

#include <stddef.h>

#include "../controller/nomad.h"

enum policy_mode {
    MODE_UNSET = 0,     /* a rule with no mode of its own follows the global mode */
    MODE_DRY_RUN,
    MODE_APPROVE,
    MODE_ENFORCE,
};

/* A token bucket: up to `count` actions per `period_s` seconds. count 0 means no limit. */
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

struct policy_down_nodes {
    struct policy_rule_common common;  /* advisory only for now: mode and limits unused */
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
};

/* Fill p with the built-in default policy (global mode dry-run) and the NOMAD_* environment. */
int policy_init_defaults(struct policy *p, char *err, size_t errsz);

/*
 * Load path over the defaults. On failure returns -1, leaves p freed, and
 * err holds "PATH:LINE: problem; expected form".
 */
int policy_load(const char *path, struct policy *p, char *err, size_t errsz);

void policy_free(struct policy *p);

/* The mode a rule runs in: its own, else the global one. */
enum policy_mode policy_rule_mode(const struct policy *p, const struct policy_rule_common *rule);

/* Override the global mode and every rule's mode (the --mode option). */
void policy_force_mode(struct policy *p, enum policy_mode mode);

const char *policy_mode_name(enum policy_mode mode);   /* "dry-run", "approve", "enforce" */
int policy_parse_mode(const char *text, enum policy_mode *out);

/* Parse "90s", "10m", "1h30m", "2d", "0". Returns 0 and seconds in *out, or -1. */
int policy_parse_duration(const char *text, long *out);

/* Parse "6/h", "1/30m", "0" (no limit). Returns 0, or -1. */
int policy_parse_rate(const char *text, struct policy_rate *out);

/* Format seconds as "1h30m", "10m", "45s", "0s" into buf. Returns buf. */
char *policy_format_duration(long seconds, char *buf, size_t bufsz);

/* Write the effective policy as libconfig text (for `nomad-medic config show`-style output and tests). */
int policy_dump(const struct policy *p, char **out);

#endif
