/* Snapshot records and lookups. */
#define _POSIX_C_SOURCE 200809L
#include "snapshot.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

void snapshot_init(struct snapshot *s)
{
    memset(s, 0, sizeof(*s));
}

void snapshot_free(struct snapshot *s)
{
    for (size_t i = 0; i < s->n_reads; i++) {
        free(s->reads[i].name);
        free(s->reads[i].error);
    }
    for (size_t i = 0; i < s->n_nodes; i++) {
        free(s->nodes[i].name);
        free(s->nodes[i].address);
        free(s->nodes[i].datacenter);
        free(s->nodes[i].last_event);
    }
    for (size_t i = 0; i < s->n_services; i++) {
        free(s->services[i].id);
        free(s->services[i].service_name);
        free(s->services[i].namespace_name);
        free(s->services[i].job_id);
    }
    for (size_t i = 0; i < s->n_lookups; i++)
        free(s->lookups[i].error);
    free(s->reads);
    free(s->nodes);
    free(s->allocs);
    free(s->services);
    free(s->lookups);
    for (size_t i = 0; i < s->n_servers; i++) {
        free(s->servers[i].name);
        free(s->servers[i].addr);
        free(s->servers[i].rpc_addr);
        free(s->servers[i].serf_status);
    }
    for (size_t i = 0; i < s->n_heartbeats; i++)
        free(s->heartbeats[i].agent_message);
    for (size_t i = 0; i < s->n_orders; i++) {
        free(s->orders[i].target);
        free(s->orders[i].kind);
        free(s->orders[i].state);
        free(s->orders[i].order_id);
    }
    free(s->coordination_problem);
    free(s->servers);
    free(s->heartbeats);
    free(s->orders);
    free(s->leader);
    if (s->host_read)
        host_inventory_free(&s->host);
    memset(s, 0, sizeof(*s));
}

int snapshot_add_read(struct snapshot *s, const char *name, int ok, const char *error)
{
    struct snap_read *r;

    if (s->n_reads == s->cap_reads) {
        size_t cap = s->cap_reads ? s->cap_reads * 2 : 16;
        struct snap_read *grown = realloc(s->reads, cap * sizeof(*grown));

        if (grown == NULL)
            return -1;
        s->reads = grown;
        s->cap_reads = cap;
    }
    r = &s->reads[s->n_reads];
    r->name = strdup(name);
    r->ok = ok;
    r->error = error ? strdup(error) : NULL;
    if (r->name == NULL || (error != NULL && r->error == NULL)) {
        free(r->name);
        free(r->error);
        return -1;
    }
    s->n_reads++;
    return 0;
}

const struct snap_read *snapshot_find_read(const struct snapshot *s, const char *name)
{
    for (size_t i = 0; i < s->n_reads; i++) {
        if (strcmp(s->reads[i].name, name) == 0)
            return &s->reads[i];
    }
    return NULL;
}

static int compare_alloc(const void *a, const void *b)
{
    return strcmp(((const struct snap_alloc *)a)->id, ((const struct snap_alloc *)b)->id);
}

static int compare_lookup(const void *a, const void *b)
{
    return strcmp(((const struct snap_lookup *)a)->alloc_id, ((const struct snap_lookup *)b)->alloc_id);
}

void snapshot_index(struct snapshot *s)
{
    if (s->n_allocs > 1)
        qsort(s->allocs, s->n_allocs, sizeof(*s->allocs), compare_alloc);
    if (s->n_lookups > 1)
        qsort(s->lookups, s->n_lookups, sizeof(*s->lookups), compare_lookup);
}

const struct snap_alloc *snapshot_find_alloc(const struct snapshot *s, const char *id)
{
    struct snap_alloc key;

    if (strlen(id) > UUID_LEN || s->n_allocs == 0)
        return NULL;
    strcpy(key.id, id);
    return bsearch(&key, s->allocs, s->n_allocs, sizeof(*s->allocs), compare_alloc);
}

const struct snap_lookup *snapshot_find_lookup(const struct snapshot *s, const char *alloc_id)
{
    struct snap_lookup key;

    if (strlen(alloc_id) > UUID_LEN || s->n_lookups == 0)
        return NULL;
    strcpy(key.alloc_id, alloc_id);
    return bsearch(&key, s->lookups, s->n_lookups, sizeof(*s->lookups), compare_lookup);
}

const struct snap_node *snapshot_find_node(const struct snapshot *s, const char *id)
{
    for (size_t i = 0; i < s->n_nodes; i++) {
        if (strcmp(s->nodes[i].id, id) == 0)
            return &s->nodes[i];
    }
    return NULL;
}

const struct snap_heartbeat *snapshot_find_heartbeat(const struct snapshot *s, const char *node_id)
{
    for (size_t i = 0; i < s->n_heartbeats; i++) {
        if (strcmp(s->heartbeats[i].node_id, node_id) == 0)
            return &s->heartbeats[i];
    }
    return NULL;
}

const struct snap_order *snapshot_find_order(const struct snapshot *s, const char *target)
{
    for (size_t i = 0; i < s->n_orders; i++) {
        if (strcmp(s->orders[i].target, target) == 0)
            return &s->orders[i];
    }
    return NULL;
}

int snap_order_in_flight(const struct snap_order *o)
{
    return o->state != NULL && (strcmp(o->state, "pending") == 0 || strcmp(o->state, "running") == 0);
}

size_t snapshot_unhealthy_nodes(const struct snapshot *s)
{
    size_t n = 0;

    for (size_t i = 0; i < s->n_nodes; i++) {
        if (s->nodes[i].status == NODE_DOWN || s->nodes[i].status == NODE_DISCONNECTED)
            n++;
    }
    return n;
}

static const char *const alloc_status_names[] = {
    "pending", "running", "complete", "failed", "lost", "unknown", "other",
};

enum alloc_status alloc_status_parse(const char *text)
{
    for (int i = 0; i < ALLOC_OTHER; i++) {
        if (text != NULL && strcmp(text, alloc_status_names[i]) == 0)
            return (enum alloc_status)i;
    }
    return ALLOC_OTHER;
}

const char *alloc_status_name(enum alloc_status status)
{
    return alloc_status_names[status];
}

int alloc_status_is_terminal(enum alloc_status status)
{
    return status == ALLOC_COMPLETE || status == ALLOC_FAILED || status == ALLOC_LOST;
}

static const char *const node_status_names[] = {
    "initializing", "ready", "down", "disconnected", "other",
};

enum node_status node_status_parse(const char *text)
{
    for (int i = 0; i < NODE_OTHER; i++) {
        if (text != NULL && strcmp(text, node_status_names[i]) == 0)
            return (enum node_status)i;
    }
    return NODE_OTHER;
}

const char *node_status_name(enum node_status status)
{
    return node_status_names[status];
}

int is_uuid(const char *text)
{
    static const int dash_at[] = {8, 13, 18, 23};
    size_t d = 0;

    if (text == NULL || strlen(text) != UUID_LEN)
        return 0;
    for (size_t i = 0; i < UUID_LEN; i++) {
        if (d < 4 && (int)i == dash_at[d]) {
            if (text[i] != '-')
                return 0;
            d++;
        } else if (!isxdigit((unsigned char)text[i])) {
            return 0;
        }
    }
    return 1;
}
