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
};

struct snap_alloc {
    char id[UUID_LEN + 1];
    char node_id[UUID_LEN + 1];
    char *namespace_name;
    char *job_id;
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
    struct snap_service *services;
    size_t n_services, cap_services;

    struct snap_lookup *lookups;   /* sorted by alloc_id */
    size_t n_lookups, cap_lookups;

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
