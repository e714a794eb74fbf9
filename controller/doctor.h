/*
 * Configuration checks behind `nomad-medic doctor`.
 *
 * doctor_run() reads a cluster through a source, with GET requests only, and
 * checks the settings that decide how the cluster rides out heartbeat loss.
 * It looks at servers sharing hosts with clients, clients without reserved
 * resources, the number of servers and their Raft membership, and autopilot
 * health. It also checks task group disconnect settings (and the deprecated
 * fields Nomad 1.10 ignores), Nomad versions with known bugs in this area,
 * and disconnect windows that are shorter than heartbeat loss can take. Each
 * finding says what was seen, why it matters and what to change.
 *
 * A read that fails never counts as healthy: it is listed in failed_reads,
 * and every check that needs it is marked as not run.
 */
#ifndef NOMAD_MEDIC_DOCTOR_H
#define NOMAD_MEDIC_DOCTOR_H

#include <stddef.h>

#include "source.h"

struct cJSON;

/* Number of checks. doctor_report.checks lists them in the order they run. */
#define DOCTOR_N_CHECKS 11

enum doctor_severity {
    DOCTOR_INFO = 0,
    DOCTOR_WARNING,
    DOCTOR_CRITICAL,
};

/* One finding. Strings and evidence are owned by the report. */
struct doctor_finding {
    const char *check;          /* check ID, a static string such as "servers_even" */
    enum doctor_severity severity;
    char *subject;              /* what it is about: a node, a server, a job's group, a version */
    char *observed;             /* what was seen, with the values read */
    char *impact;               /* why it matters */
    char *fix;                  /* what to change */
    struct cJSON *evidence;     /* machine-readable details (an object), never NULL */
};

/* The outcome of one check. */
struct doctor_check {
    const char *id;             /* static, e.g. "autopilot_unhealthy" */
    const char *title;          /* static, one line */
    int ran;                    /* 0 when a read it needs failed */
    int complete;               /* 1 when it ran on everything, 0 when some of its reads failed */
    size_t findings;
    char *note;                 /* why it did not run or what it could not see, or NULL */
};

struct doctor_failed_read {
    char *read;                 /* "GET /v1/..." with the query string */
    char *error;                /* the client's error text */
};

/*
 * The heartbeat timing the servers give clients. Nomad gives each client a
 * TTL of max(min_heartbeat_ttl, live nodes / max_heartbeats_per_second) plus
 * a random stagger of up to the same amount, and the leader marks a node down
 * or disconnected when no heartbeat arrives within TTL + heartbeat_grace.
 */
struct doctor_heartbeat {
    int known;                  /* 0 when the agent configuration or the node list could not be read */
    double grace_s;             /* heartbeat_grace */
    double min_ttl_s;           /* min_heartbeat_ttl */
    double max_per_second;      /* max_heartbeats_per_second */
    int grace_assumed;          /* 1 when the default was used because the value was not set */
    int min_ttl_assumed;
    int rate_assumed;
    char *assumed_because;      /* why defaults were used, or NULL when every value was set */
    long live_nodes;            /* nodes that heartbeat: status ready or initializing */
    double ttl_min_s;           /* TTL range the clients get */
    double ttl_max_s;
    double down_after_max_s;    /* worst case from the last heartbeat to down: ttl_max_s + grace_s */
    double required_window_s;   /* shortest disconnect window the doctor accepts: 2 * ttl_max_s + grace_s */
};

struct doctor_report {
    struct doctor_finding *findings;
    size_t n_findings;
    size_t cap_findings;
    struct doctor_check checks[DOCTOR_N_CHECKS];
    struct doctor_failed_read *failed_reads;
    size_t n_failed_reads;
    size_t cap_failed_reads;
    struct doctor_heartbeat heartbeat;
    long servers;               /* server members that have not left; -1 when not read */
    long clients;               /* client nodes; -1 when not read */
    long jobs;                  /* jobs checked (periodic and dispatched children are not); -1 when not read */
    long task_groups;           /* their task groups; -1 when not read */
};

/*
 * Read the cluster through src and run every check into report, which
 * doctor_run() initialises. Failed reads do not make it fail: they are in
 * report->failed_reads and the checks that needed them say so. Returns 0, or
 * -1 with err filled when memory runs out; report must be freed with
 * doctor_report_free() either way.
 */
int doctor_run(struct source *src, struct doctor_report *report, char *err, size_t errsz);

void doctor_report_free(struct doctor_report *report);

/* "info", "warning" or "critical". */
const char *doctor_severity_name(enum doctor_severity severity);

/*
 * Format seconds the way a job file writes durations: "1h", "10m", "1m30s",
 * "45s", "12.5s", "250ms"; "0s" for zero or less. Truncates to bufsz.
 */
void doctor_format_duration(double seconds, char *buf, size_t bufsz);

/* Number of findings with this severity. */
size_t doctor_count(const struct doctor_report *report, enum doctor_severity severity);

#endif
