/*
 * The observed cluster state of one pass, reduced to the fields the rules
 * use. A snapshot is built by observe_cluster() and not changed afterwards.
 *
 * Every read that went into it is listed in reads[], with whether it
 * succeeded. The *_ok flags are 1 only when a whole list was read completely
 * (every page, a known leader, valid JSON). Rules and guards consult them so
 * that nothing destructive rests on a failed or partial read.
 */
#ifndef NOMAD_MEDIC_SNAPSHOT_H
#define NOMAD_MEDIC_SNAPSHOT_H

#include <stddef.h>

#include "host.h"

#define UUID_LEN 36

enum alloc_status {
    ALLOC_PENDING = 0,
    ALLOC_RUNNING,
    ALLOC_COMPLETE,
    ALLOC_FAILED,
    ALLOC_LOST,
    ALLOC_UNKNOWN,      /* Nomad's "unknown": the node is disconnected */
    ALLOC_OTHER,        /* a status this version does not know: never treated as terminal */
};

/* The lists `run` watches with blocking queries between passes. */
enum watch_list {
    WATCH_NODES = 0,
    WATCH_ALLOCATIONS,
    WATCH_SERVICES,
    WATCH_EVALUATIONS,
    WATCH_COUNT,
};

enum node_status {
    NODE_INITIALIZING = 0,
    NODE_READY,
    NODE_DOWN,
    NODE_DISCONNECTED,
    NODE_OTHER,
};

struct snap_node {
    char id[UUID_LEN + 1];
    char *name;
    char *address;
    char *datacenter;
    enum node_status status;
    long long status_updated_at;   /* Unix s, from /v1/node/<id>; 0 when not read */
    char *last_event;              /* newest node event message, or NULL */
    long long missed_at[10];       /* times (Unix s) of "Node heartbeat missed" events, newest last */
    int n_missed;
    int eligible;                  /* SchedulingEligibility is "eligible" */
    int is_server;                 /* its address is also a server member's: it counts as a server */
};

/* A server agent, joined from /v1/agent/members and /v1/operator/autopilot/health. */
struct snap_server {
    char *name;                    /* member name, e.g. "nomad-1.global" */
    char *addr;                    /* host address */
    char *rpc_addr;                /* "addr:rpcport", as /v1/status/leader and autopilot name it */
    char *serf_status;             /* "alive", "failed", "left" ... */
    int voter;
    int healthy;                   /* autopilot's verdict: 1, 0, or -1 when autopilot was not read */
    int leader;
    char node_id[UUID_LEN + 1];    /* a client node on the same host, or "" */
    long long stable_since;        /* autopilot StableSince (Unix s), 0 when unknown */
};

/* A host heartbeat Variable written by that host's node scope. */
struct snap_heartbeat {
    char node_id[UUID_LEN + 1];
    long long host_alive_at;       /* Unix s */
    int agent_healthy;             /* the local agent's /v1/agent/health?type=client: 1, 0, -1 unknown */
    char *agent_message;
};

/* A restart order Variable: the cluster-wide record of a restart in flight. */
struct snap_order {
    char *target;                  /* node ID, or "server-<name>" */
    char *kind;                    /* "client_restart" or "server_restart" */
    char *state;                   /* "pending", "running", "done", "failed" */
    char *order_id;
    long long requested_at;
    long long modify_index;
};

struct snap_alloc {
    char id[UUID_LEN + 1];
    char node_id[UUID_LEN + 1];
    enum alloc_status client_status;
    int desired_stop;              /* DesiredStatus is stop or evict */
    long long modify_time_s;       /* ModifyTime converted from ns to s */
};

struct snap_service {
    char *id;
    char *service_name;
    char *namespace_name;
    char alloc_id[UUID_LEN + 1];
    char node_id[UUID_LEN + 1];
    char *job_id;
};

/* The result of GET /v1/allocation/<id> for a registration whose allocation was not in the list. */
enum lookup_state {
    LOOKUP_FOUND = 0,
    LOOKUP_NOT_FOUND,   /* 404: the allocation is gone */
    LOOKUP_FAILED,      /* any other outcome: nothing may rest on it */
};

struct snap_lookup {
    char alloc_id[UUID_LEN + 1];
    enum lookup_state state;
    enum alloc_status client_status;   /* when FOUND */
    char *error;                       /* when FAILED */
};

struct snap_read {
    char *name;         /* "allocations", "service prod/web", "allocation <id>" ... */
    int ok;
    char *error;        /* NULL when ok */
};

struct snapshot {
    long long observed_at;     /* Unix s */
    const char *source_name;   /* "live", "capture", "debug-bundle" */
    const char *source_note;   /* limits of the source, or NULL */

    int leader_ok;
    char *leader;
    long long leader_since;        /* when this leader was first seen (journal), 0 when unknown */

    struct snap_read *reads;
    size_t n_reads, cap_reads;

    int nodes_ok;
    struct snap_node *nodes;
    size_t n_nodes, cap_nodes;

    int allocs_ok;
    struct snap_alloc *allocs;     /* sorted by id once complete */
    size_t n_allocs, cap_allocs;
    long terminal_allocs;

    int evals_read;                /* evaluations were requested in this pass */
    int evals_ok;
    long evals_total;
    long terminal_evals;

    int services_read;             /* registrations were requested in this pass */
    int services_ok;               /* the list of services and every per-service read succeeded */
    size_t services_failed;        /* per-service reads that failed */
    size_t services_live;          /* registrations of live allocations, counted but not kept */
    struct snap_service *services;
    size_t n_services, cap_services;

    /*
     * X-Nomad-Index of the first page of each watched list, for blocking
     * queries between passes: nodes, allocations, services, evaluations.
     * 0 when not read.
     */
    unsigned long long watch_index[4];

    struct snap_lookup *lookups;   /* sorted by alloc_id */
    size_t n_lookups, cap_lookups;

    /* Restarts: servers, autopilot, heartbeats of down nodes, restart orders. */
    int restarts_read;             /* the restart rules asked for these reads */
    int servers_ok;
    struct snap_server *servers;
    size_t n_servers, cap_servers;
    int autopilot_ok;
    int autopilot_healthy;
    int heartbeats_ok;             /* every down node's heartbeat read succeeded (found or 404) */
    struct snap_heartbeat *heartbeats;
    size_t n_heartbeats, cap_heartbeats;
    char *coordination_problem;    /* why the leadership lock cannot be used, or NULL: restarts are off then */
    int orders_ok;
    struct snap_order *orders;
    size_t n_orders, cap_orders;

    /* Node scope: allocs contains this node's allocations, lookups the others the host names. */
    int node_scope;
    char node_id[UUID_LEN + 1];    /* "" until known */
    int host_read;                 /* host was filled by host_inventory_read() */
    struct host_inventory host;
};

void snapshot_init(struct snapshot *s);
void snapshot_free(struct snapshot *s);

/* Record a read's outcome. error may be NULL when ok. Returns 0, or -1 on allocation failure. */
int snapshot_add_read(struct snapshot *s, const char *name, int ok, const char *error);

/* The read named name, or NULL. */
const struct snap_read *snapshot_find_read(const struct snapshot *s, const char *name);

/* Sort allocations and lookups so the finders below can bisect. */
void snapshot_index(struct snapshot *s);

const struct snap_alloc *snapshot_find_alloc(const struct snapshot *s, const char *id);
const struct snap_lookup *snapshot_find_lookup(const struct snapshot *s, const char *alloc_id);
const struct snap_node *snapshot_find_node(const struct snapshot *s, const char *id);

const struct snap_heartbeat *snapshot_find_heartbeat(const struct snapshot *s, const char *node_id);
const struct snap_order *snapshot_find_order(const struct snapshot *s, const char *target);

/* 1 when the order is still pending or running. */
int snap_order_in_flight(const struct snap_order *o);

/* Count nodes that are down or disconnected. */
size_t snapshot_unhealthy_nodes(const struct snapshot *s);

enum alloc_status alloc_status_parse(const char *text);
const char *alloc_status_name(enum alloc_status status);
int alloc_status_is_terminal(enum alloc_status status);   /* complete, failed, lost */
enum node_status node_status_parse(const char *text);
const char *node_status_name(enum node_status status);

/* 1 when text is a canonical UUID (8-4-4-4-12 lowercase or uppercase hex). */
int is_uuid(const char *text);

#endif
