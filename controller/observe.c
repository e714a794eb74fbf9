/* Observation of the cluster through a source. */
#define _DEFAULT_SOURCE
#include "observe.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* Called for each element of a list read; ctx is read_list()'s argument. */
typedef int (*item_fn)(struct snapshot *s, const cJSON *item, void *ctx);

static const char *json_string(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static char *dup_or_null(const char *text)
{
    return text ? strdup(text) : NULL;
}

/* Copy a UUID-sized field; anything longer is cut and then fails is_uuid() checks later. */
static void copy_id(char dst[UUID_LEN + 1], const char *src)
{
    dst[0] = '\0';
    if (src != NULL)
        snprintf(dst, UUID_LEN + 1, "%.*s", UUID_LEN, src);
}

static int grow(void **array, size_t *cap, size_t n, size_t size)
{
    size_t new_cap;
    void *grown;

    if (n < *cap)
        return 0;
    /* 1.5x growth: a large list overshoots its size by less than doubling would. */
    new_cap = *cap ? *cap + *cap / 2 : 64;
    grown = realloc(*array, new_cap * size);
    if (grown == NULL)
        return -1;
    *array = grown;
    *cap = new_cap;
    return 0;
}

/* Parse a response body that must be valid JSON; fills error on failure. */
static cJSON *parse_body(const char *path, const struct nomad_response *resp, char *error, size_t errsz)
{
    cJSON *root;

    if (resp->body == NULL || resp->body_len == 0) {
        snprintf(error, errsz, "GET %s: empty response body where JSON was expected", path);
        return NULL;
    }
    root = cJSON_ParseWithLength(resp->body, resp->body_len);
    if (root == NULL)
        snprintf(error, errsz, "GET %s: invalid or truncated JSON in response (%zu bytes)",
                 path, resp->body_len);
    return root;
}

static void strip_query(const char *path, char *out, size_t outsz)
{
    size_t len = strcspn(path, "?");

    if (len >= outsz)
        len = outsz - 1;
    memcpy(out, path, len);
    out[len] = '\0';
}

/*
 * Read every page of a list endpoint and hand each element to fn. Records
 * the read under read_name. Returns 1 when the list was read completely,
 * 0 when a read failed, -1 on allocation failure.
 */
static int read_list_indexed(struct source *src, struct snapshot *s, const char *read_name,
                             const char *base_path, item_fn fn, void *ctx, unsigned long long *index_out)
{
    char path[2048];
    char error[768] = "";
    char *token = NULL;
    int pages = 0;
    int rc = 1;

    for (;;) {
        struct nomad_response resp;
        const cJSON *item;
        cJSON *root;
        size_t len;

        len = (size_t)snprintf(path, sizeof(path), "%s", base_path);
        if (src->per_page > 0)
            len += (size_t)snprintf(path + len, sizeof(path) - len, "%sper_page=%d",
                                    strchr(base_path, '?') ? "&" : "?", src->per_page);
        if (token != NULL) {
            char *escaped = nomad_escape(token);

            if (escaped == NULL) {
                rc = -1;
                break;
            }
            len += (size_t)snprintf(path + len, sizeof(path) - len, "%snext_token=%s",
                                    strchr(path, '?') ? "&" : "?", escaped);
            free(escaped);
        }
        if (len >= sizeof(path)) {
            snprintf(error, sizeof(error), "GET %s: request path too long", base_path);
            rc = 0;
            break;
        }

        nomad_response_init(&resp);
        if (source_get(src, path, &resp) != 0) {
            snprintf(error, sizeof(error), "%s", resp.error);
            nomad_response_free(&resp);
            rc = 0;
            break;
        }
        root = parse_body(path, &resp, error, sizeof(error));
        if (root != NULL && !cJSON_IsArray(root)) {
            char endpoint[512];

            strip_query(path, endpoint, sizeof(endpoint));
            snprintf(error, sizeof(error), "GET %s: expected a JSON array", endpoint);
            cJSON_Delete(root);
            root = NULL;
        }
        if (root == NULL) {
            nomad_response_free(&resp);
            rc = 0;
            break;
        }
        cJSON_ArrayForEach(item, root) {
            if (fn(s, item, ctx) != 0) {
                rc = -1;
                break;
            }
        }
        cJSON_Delete(root);
        if (pages == 0 && index_out != NULL)
            *index_out = resp.index;
        pages++;

        if (rc == -1 || resp.next_token == NULL || resp.next_token[0] == '\0') {
            nomad_response_free(&resp);
            break;
        }
        /* A server that hands back the token it was given would loop forever. */
        if (token != NULL && strcmp(token, resp.next_token) == 0) {
            snprintf(error, sizeof(error), "GET %s: pagination did not advance (next token %s)",
                     base_path, token);
            nomad_response_free(&resp);
            rc = 0;
            break;
        }
        free(token);
        token = strdup(resp.next_token);
        nomad_response_free(&resp);
        if (token == NULL) {
            rc = -1;
            break;
        }
    }
    free(token);

    if (rc == 1) {
        log_debug("observe", "read %s complete pages=%d", read_name, pages);
        return snapshot_add_read(s, read_name, 1, NULL) == 0 ? 1 : -1;
    }
    if (rc == 0) {
        log_warn("observe", "read %s failed: %s", read_name, error);
        return snapshot_add_read(s, read_name, 0, error) == 0 ? 0 : -1;
    }
    return -1;
}

static int read_list(struct source *src, struct snapshot *s, const char *read_name,
                     const char *base_path, item_fn fn, void *ctx)
{
    return read_list_indexed(src, s, read_name, base_path, fn, ctx, NULL);
}

static int add_node(struct snapshot *s, const cJSON *item, void *ctx)
{
    struct snap_node *n;

    (void)ctx;
    if (grow((void **)&s->nodes, &s->cap_nodes, s->n_nodes, sizeof(*s->nodes)) != 0)
        return -1;
    n = &s->nodes[s->n_nodes];
    memset(n, 0, sizeof(*n));
    copy_id(n->id, json_string(item, "ID"));
    n->name = dup_or_null(json_string(item, "Name"));
    n->address = dup_or_null(json_string(item, "Address"));
    n->datacenter = dup_or_null(json_string(item, "Datacenter"));
    n->status = node_status_parse(json_string(item, "Status"));
    n->eligible = json_string(item, "SchedulingEligibility") == NULL ||
                  strcmp(json_string(item, "SchedulingEligibility"), "eligible") == 0;
    s->n_nodes++;
    return 0;
}

static int add_alloc(struct snapshot *s, const cJSON *item, void *ctx)
{
    struct snap_alloc *a;
    const char *desired = json_string(item, "DesiredStatus");
    const cJSON *mtime = cJSON_GetObjectItemCaseSensitive(item, "ModifyTime");

    (void)ctx;
    if (grow((void **)&s->allocs, &s->cap_allocs, s->n_allocs, sizeof(*s->allocs)) != 0)
        return -1;
    a = &s->allocs[s->n_allocs];
    memset(a, 0, sizeof(*a));
    copy_id(a->id, json_string(item, "ID"));
    copy_id(a->node_id, json_string(item, "NodeID"));
    a->client_status = alloc_status_parse(json_string(item, "ClientStatus"));
    a->desired_stop = desired != NULL && (strcmp(desired, "stop") == 0 || strcmp(desired, "evict") == 0);
    /* ModifyTime is Unix nanoseconds, beyond a double's exact range; seconds are all we need. */
    if (cJSON_IsNumber(mtime))
        a->modify_time_s = (long long)(mtime->valuedouble / 1e9);
    if (alloc_status_is_terminal(a->client_status))
        s->terminal_allocs++;
    s->n_allocs++;
    return 0;
}

static int count_eval(struct snapshot *s, const cJSON *item, void *ctx)
{
    const char *status = json_string(item, "Status");

    (void)ctx;
    s->evals_total++;
    if (status != NULL && (strcmp(status, "complete") == 0 || strcmp(status, "failed") == 0 ||
                           strcmp(status, "canceled") == 0))
        s->terminal_evals++;
    return 0;
}

static int add_service(struct snapshot *s, const cJSON *item, void *ctx)
{
    struct snap_service *r;
    const struct snap_alloc *alloc;
    const char *alloc_id = json_string(item, "AllocID");

    (void)ctx;
    /*
     * Keep only what can be an orphan: a registration whose allocation is in
     * the complete list and not terminal is live, so memory follows the
     * orphans rather than the cluster.
     */
    alloc = s->allocs_ok && alloc_id != NULL ? snapshot_find_alloc(s, alloc_id) : NULL;
    if (alloc != NULL && !alloc_status_is_terminal(alloc->client_status)) {
        s->services_live++;
        return 0;
    }

    if (grow((void **)&s->services, &s->cap_services, s->n_services, sizeof(*s->services)) != 0)
        return -1;
    r = &s->services[s->n_services];
    memset(r, 0, sizeof(*r));
    r->id = dup_or_null(json_string(item, "ID"));
    r->service_name = dup_or_null(json_string(item, "ServiceName"));
    r->namespace_name = dup_or_null(json_string(item, "Namespace"));
    copy_id(r->alloc_id, json_string(item, "AllocID"));
    copy_id(r->node_id, json_string(item, "NodeID"));
    r->job_id = dup_or_null(json_string(item, "JobID"));
    if (r->id == NULL || r->service_name == NULL || r->namespace_name == NULL) {
        /* A registration without these cannot be addressed, so it is skipped with a warning. */
        log_warn("observe", "skipping a service registration without ID, ServiceName or Namespace");
        free(r->id);
        free(r->service_name);
        free(r->namespace_name);
        free(r->job_id);
        return 0;
    }
    s->n_services++;
    return 0;
}

static int observe_leader(struct source *src, struct snapshot *s)
{
    struct nomad_response resp;
    char error[768] = "";
    cJSON *root = NULL;
    int rc;

    nomad_response_init(&resp);
    if (source_get(src, "/v1/status/leader", &resp) != 0) {
        snprintf(error, sizeof(error), "%s", resp.error);
    } else {
        root = parse_body("/v1/status/leader", &resp, error, sizeof(error));
        if (root != NULL && cJSON_IsString(root) && root->valuestring[0] != '\0') {
            s->leader = strdup(root->valuestring);
            s->leader_ok = s->leader != NULL;
        } else if (root != NULL) {
            snprintf(error, sizeof(error), "GET /v1/status/leader: no cluster leader");
        }
    }
    cJSON_Delete(root);
    nomad_response_free(&resp);
    if (!s->leader_ok)
        log_warn("observe", "read leader failed: %s", error);
    rc = snapshot_add_read(s, "leader", s->leader_ok, s->leader_ok ? NULL : error);
    return rc;
}

/* Service (namespace, name) pairs from GET /v1/services?namespace=*. */
struct service_pair {
    char *namespace_name;
    char *service_name;
};

static int list_service_pairs(struct source *src, struct snapshot *s, struct service_pair **pairs,
                              size_t *n_pairs)
{
    const char *path = "/v1/services?namespace=*";
    struct nomad_response resp;
    char error[768] = "";
    const cJSON *group;
    size_t cap = 0;
    cJSON *root;

    *pairs = NULL;
    *n_pairs = 0;
    nomad_response_init(&resp);
    if (source_get(src, path, &resp) != 0) {
        snprintf(error, sizeof(error), "%s", resp.error);
        nomad_response_free(&resp);
        log_warn("observe", "read services failed: %s", error);
        return snapshot_add_read(s, "services", 0, error) == 0 ? 0 : -1;
    }
    root = parse_body(path, &resp, error, sizeof(error));
    s->watch_index[WATCH_SERVICES] = resp.index;
    nomad_response_free(&resp);
    if (root == NULL || !cJSON_IsArray(root)) {
        if (root != NULL)
            snprintf(error, sizeof(error), "GET /v1/services: expected a JSON array");
        cJSON_Delete(root);
        log_warn("observe", "read services failed: %s", error);
        return snapshot_add_read(s, "services", 0, error) == 0 ? 0 : -1;
    }

    cJSON_ArrayForEach(group, root) {
        const char *ns = json_string(group, "Namespace");
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(group, "Services");
        const cJSON *svc;

        if (ns == NULL || !cJSON_IsArray(list))
            continue;
        cJSON_ArrayForEach(svc, list) {
            const char *name = json_string(svc, "ServiceName");

            if (name == NULL)
                continue;
            if (grow((void **)pairs, &cap, *n_pairs, sizeof(**pairs)) != 0)
                goto oom;
            (*pairs)[*n_pairs].namespace_name = strdup(ns);
            (*pairs)[*n_pairs].service_name = strdup(name);
            (*n_pairs)++;
            if ((*pairs)[*n_pairs - 1].namespace_name == NULL ||
                (*pairs)[*n_pairs - 1].service_name == NULL)
                goto oom;
        }
    }
    cJSON_Delete(root);
    return snapshot_add_read(s, "services", 1, NULL) == 0 ? 1 : -1;

oom:
    cJSON_Delete(root);
    return -1;
}

static void free_pairs(struct service_pair *pairs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(pairs[i].namespace_name);
        free(pairs[i].service_name);
    }
    free(pairs);
}

static char *service_path(const struct service_pair *pair, int per_page)
{
    char *name = nomad_escape(pair->service_name);
    char *ns = nomad_escape(pair->namespace_name);
    char *path = NULL;
    size_t len;

    if (name != NULL && ns != NULL) {
        len = strlen(name) + strlen(ns) + 64;
        path = malloc(len);
        if (path != NULL) {
            if (per_page > 0)
                snprintf(path, len, "/v1/service/%s?namespace=%s&per_page=%d", name, ns, per_page);
            else
                snprintf(path, len, "/v1/service/%s?namespace=%s", name, ns);
        }
    }
    free(name);
    free(ns);
    return path;
}

/* Registrations are read in batches, so the responses in memory at once stay bounded. */
#define SERVICE_BATCH 128

static int process_service_batch(struct source *src, struct snapshot *s, const struct service_pair *pairs,
                                 char **paths, struct nomad_response *resps, size_t n_pairs);

/*
 * Read every registration of every pair. First pages go out concurrently;
 * a service with more than one page is finished with read_list().
 */
static int observe_registrations(struct source *src, struct snapshot *s)
{
    struct service_pair *pairs = NULL;
    struct nomad_response *resps = NULL;
    char **paths = NULL;
    size_t n_pairs = 0;
    int rc;

    s->services_read = 1;
    rc = list_service_pairs(src, s, &pairs, &n_pairs);
    if (rc <= 0) {
        free_pairs(pairs, n_pairs);
        return rc;
    }
    s->services_ok = 1;
    if (n_pairs == 0) {
        free_pairs(pairs, n_pairs);
        return 0;
    }

    paths = calloc(SERVICE_BATCH, sizeof(*paths));
    resps = calloc(SERVICE_BATCH, sizeof(*resps));
    if (paths == NULL || resps == NULL)
        goto oom;
    for (size_t first = 0; first < n_pairs; first += SERVICE_BATCH) {
        size_t batch = n_pairs - first < SERVICE_BATCH ? n_pairs - first : SERVICE_BATCH;

        for (size_t k = 0; k < batch; k++) {
            paths[k] = service_path(&pairs[first + k], src->per_page);
            nomad_response_init(&resps[k]);
            if (paths[k] == NULL)
                goto oom;
        }
        source_get_many(src, (const char *const *)paths, batch, resps);
        if (process_service_batch(src, s, pairs + first, paths, resps, batch) != 0)
            goto oom;
        for (size_t k = 0; k < batch; k++) {
            free(paths[k]);
            paths[k] = NULL;
            nomad_response_free(&resps[k]);
        }
    }
    rc = 0;
    goto out;

oom:
    rc = -1;
out:
    for (size_t k = 0; paths != NULL && k < SERVICE_BATCH; k++) {
        free(paths[k]);
        if (resps != NULL)
            nomad_response_free(&resps[k]);
    }
    free(paths);
    free(resps);
    free_pairs(pairs, n_pairs);
    return rc;
}

/* Turn one batch of per-service responses into registrations. Returns 0, or -1 on allocation failure. */
static int process_service_batch(struct source *src, struct snapshot *s, const struct service_pair *pairs,
                                 char **paths, struct nomad_response *resps, size_t n_pairs)
{
    int rc;

    for (size_t i = 0; i < n_pairs; i++) {
        char read_name[600];
        char error[768] = "";
        const cJSON *item;
        cJSON *root = NULL;

        snprintf(read_name, sizeof(read_name), "service %s/%s", pairs[i].namespace_name,
                 pairs[i].service_name);
        if (resps[i].result != NOMAD_OK) {
            snprintf(error, sizeof(error), "%s", resps[i].error);
        } else if (resps[i].next_token != NULL && resps[i].next_token[0] != '\0') {
            /* More than one page: re-read this service page by page. */
            char *base = service_path(&pairs[i], 0);

            if (base == NULL)
                goto oom;
            rc = read_list(src, s, read_name, base, add_service, NULL);
            free(base);
            if (rc < 0)
                goto oom;
            if (rc == 0) {
                s->services_ok = 0;
                s->services_failed++;
            }
            continue;
        } else {
            root = parse_body(paths[i], &resps[i], error, sizeof(error));
            if (root != NULL && !cJSON_IsArray(root)) {
                snprintf(error, sizeof(error), "GET /v1/service/%s: expected a JSON array",
                         pairs[i].service_name);
                cJSON_Delete(root);
                root = NULL;
            }
        }
        if (root == NULL) {
            log_warn("observe", "read %s failed: %s", read_name, error);
            s->services_ok = 0;
            s->services_failed++;
            if (snapshot_add_read(s, read_name, 0, error) != 0)
                goto oom;
            continue;
        }
        cJSON_ArrayForEach(item, root) {
            if (add_service(s, item, NULL) != 0) {
                cJSON_Delete(root);
                goto oom;
            }
        }
        cJSON_Delete(root);
        if (snapshot_add_read(s, read_name, 1, NULL) != 0)
            goto oom;
    }
    return 0;

oom:
    return -1;
}

static int add_lookup(struct snapshot *s, const char *alloc_id, enum lookup_state state,
                      enum alloc_status status, const char *error)
{
    struct snap_lookup *l;

    if (grow((void **)&s->lookups, &s->cap_lookups, s->n_lookups, sizeof(*s->lookups)) != 0)
        return -1;
    l = &s->lookups[s->n_lookups];
    memset(l, 0, sizeof(*l));
    copy_id(l->alloc_id, alloc_id);
    l->state = state;
    l->client_status = status;
    l->error = dup_or_null(error);
    s->n_lookups++;
    return 0;
}

static int lookup_seen(const struct snapshot *s, size_t first, const char *alloc_id)
{
    for (size_t i = first; i < s->n_lookups; i++) {
        if (strcmp(s->lookups[i].alloc_id, alloc_id) == 0)
            return 1;
    }
    return 0;
}

/* Lookups, like registration reads, go out in batches to bound the responses held at once. */
#define LOOKUP_BATCH 128

/* Record one batch of allocation lookups. Returns 0, or -1 on allocation failure. */
static int process_lookup_batch(struct snapshot *s, char **paths, const char (*wanted)[UUID_LEN + 1],
                                struct nomad_response *resps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char read_name[64];
        char error[768] = "";
        int ok = 0;

        snprintf(read_name, sizeof(read_name), "allocation %s", wanted[i]);
        if (resps[i].result == NOMAD_OK) {
            cJSON *root = parse_body(paths[i], &resps[i], error, sizeof(error));
            const char *id = root ? json_string(root, "ID") : NULL;

            if (root != NULL && id != NULL && strcmp(id, wanted[i]) == 0) {
                ok = 1;
                if (add_lookup(s, wanted[i], LOOKUP_FOUND,
                               alloc_status_parse(json_string(root, "ClientStatus")), NULL) != 0) {
                    cJSON_Delete(root);
                    return -1;
                }
            } else if (root != NULL) {
                snprintf(error, sizeof(error), "GET /v1/allocation/%s: response is not that allocation",
                         wanted[i]);
            }
            cJSON_Delete(root);
        } else if (resps[i].result == NOMAD_ERR_STATUS && resps[i].status == 404) {
            ok = 1;
            if (add_lookup(s, wanted[i], LOOKUP_NOT_FOUND, ALLOC_OTHER, NULL) != 0)
                return -1;
        } else {
            snprintf(error, sizeof(error), "%s", resps[i].error);
        }
        if (!ok) {
            log_warn("observe", "read %s failed: %s", read_name, error);
            if (add_lookup(s, wanted[i], LOOKUP_FAILED, ALLOC_OTHER, error) != 0)
                return -1;
        }
        if (snapshot_add_read(s, read_name, ok, ok ? NULL : error) != 0)
            return -1;
    }
    return 0;
}

/*
 * Look up, one by one, the allocations in ids[] (with their namespace, or
 * NULL) that the allocation list lacks. Only a 404 proves an allocation gone.
 */
static int lookup_allocations(struct source *src, struct snapshot *s, const char *const *ids,
                              const char *const *namespaces, size_t count)
{
    struct nomad_response *resps = NULL;
    char **paths = NULL;
    char (*wanted)[UUID_LEN + 1] = NULL;
    size_t n = 0;
    size_t first = s->n_lookups;
    int rc = -1;

    paths = calloc(count ? count : 1, sizeof(*paths));
    wanted = calloc(count ? count : 1, sizeof(*wanted));
    if (paths == NULL || wanted == NULL)
        goto out;

    for (size_t i = 0; i < count; i++) {
        const char *id = ids[i];
        int dup = 0;
        size_t len;
        char *ns = NULL;

        if (snapshot_find_alloc(s, id) != NULL)
            continue;
        for (size_t k = 0; k < n; k++)
            dup |= strcmp(wanted[k], id) == 0;
        if (dup || lookup_seen(s, first, id))
            continue;
        if (!is_uuid(id)) {
            if (add_lookup(s, id, LOOKUP_FAILED, ALLOC_OTHER,
                           "the allocation ID is not a UUID, so it cannot be looked up") != 0)
                goto out;
            continue;
        }
        if (namespaces != NULL && namespaces[i] != NULL) {
            ns = nomad_escape(namespaces[i]);
            if (ns == NULL)
                goto out;
        }
        len = (ns ? strlen(ns) : 0) + UUID_LEN + 48;
        paths[n] = malloc(len);
        if (paths[n] == NULL) {
            free(ns);
            goto out;
        }
        if (ns != NULL)
            snprintf(paths[n], len, "/v1/allocation/%s?namespace=%s", id, ns);
        else
            snprintf(paths[n], len, "/v1/allocation/%s", id);
        free(ns);
        memcpy(wanted[n], id, UUID_LEN + 1);
        n++;
    }
    if (n == 0) {
        rc = 0;
        goto out;
    }

    resps = calloc(n < LOOKUP_BATCH ? n : LOOKUP_BATCH, sizeof(*resps));
    if (resps == NULL)
        goto out;
    for (size_t start = 0; start < n; start += LOOKUP_BATCH) {
        size_t batch = n - start < LOOKUP_BATCH ? n - start : LOOKUP_BATCH;

        for (size_t k = 0; k < batch; k++)
            nomad_response_init(&resps[k]);
        source_get_many(src, (const char *const *)paths + start, batch, resps);
        rc = process_lookup_batch(s, paths + start, wanted + start, resps, batch);
        for (size_t k = 0; k < batch; k++)
            nomad_response_free(&resps[k]);
        if (rc != 0)
            goto out;
    }
    rc = 0;

out:
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    free(resps);
    free(wanted);
    return rc;
}

/* Look up the allocations that registrations name but the complete allocation list lacks. */
static int observe_lookups(struct source *src, struct snapshot *s)
{
    const char **ids = calloc(s->n_services ? s->n_services : 1, sizeof(*ids));
    const char **namespaces = calloc(s->n_services ? s->n_services : 1, sizeof(*namespaces));
    int rc = -1;

    if (ids != NULL && namespaces != NULL) {
        for (size_t i = 0; i < s->n_services; i++) {
            ids[i] = s->services[i].alloc_id;
            namespaces[i] = s->services[i].namespace_name;
        }
        rc = lookup_allocations(src, s, ids, namespaces, s->n_services);
    }
    free(ids);
    free(namespaces);
    return rc;
}

/* Parse an RFC 3339 time ("2021-03-31T12:12:20.213412Z", "...+01:00") to Unix seconds; 0 when invalid. */
static long long parse_rfc3339(const char *text)
{
    struct tm tm;
    int year, month, day, hour, minute, second, consumed = 0;
    long long t;
    const char *rest;

    if (text == NULL || sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &year, &month, &day, &hour, &minute,
                               &second, &consumed) != 6)
        return 0;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    t = (long long)timegm(&tm);
    rest = text + consumed;
    if (*rest == '.')
        rest += 1 + strspn(rest + 1, "0123456789");
    if (*rest == '+' || *rest == '-') {
        int oh, om;

        if (sscanf(rest + 1, "%2d:%2d", &oh, &om) != 2)
            return 0;
        t -= (*rest == '+' ? 1 : -1) * (long long)(oh * 3600 + om * 60);
    } else if (*rest != 'Z') {
        return 0;
    }
    return t;
}

/* Keep the times of the node's "Node heartbeat missed" events, which tell a flapping node. */
static void record_missed_heartbeats(struct snap_node *node, const cJSON *events)
{
    const cJSON *event;

    node->n_missed = 0;
    cJSON_ArrayForEach(event, events) {
        const char *msg = json_string(event, "Message");
        long long at = parse_rfc3339(json_string(event, "Timestamp"));

        if (msg == NULL || strcmp(msg, "Node heartbeat missed") != 0 || at == 0)
            continue;
        if (node->n_missed < (int)(sizeof(node->missed_at) / sizeof(node->missed_at[0])))
            node->missed_at[node->n_missed++] = at;
    }
}

/* Read the full node object of each down or disconnected node, for its evidence. */
static int observe_unhealthy_nodes(struct source *src, struct snapshot *s)
{
    struct nomad_response *resps = NULL;
    size_t *which = NULL;
    char **paths = NULL;
    size_t n = 0;
    int rc = -1;

    if (s->n_nodes == 0)
        return 0;
    paths = calloc(s->n_nodes, sizeof(*paths));
    which = calloc(s->n_nodes, sizeof(*which));
    if (paths == NULL || which == NULL)
        goto out;
    for (size_t i = 0; i < s->n_nodes; i++) {
        if (s->nodes[i].status != NODE_DOWN && s->nodes[i].status != NODE_DISCONNECTED)
            continue;
        if (!is_uuid(s->nodes[i].id))
            continue;
        paths[n] = malloc(64);
        if (paths[n] == NULL)
            goto out;
        snprintf(paths[n], 64, "/v1/node/%s", s->nodes[i].id);
        which[n++] = i;
    }
    if (n == 0) {
        rc = 0;
        goto out;
    }
    resps = calloc(n, sizeof(*resps));
    if (resps == NULL)
        goto out;
    for (size_t i = 0; i < n; i++)
        nomad_response_init(&resps[i]);
    source_get_many(src, (const char *const *)paths, n, resps);

    for (size_t i = 0; i < n; i++) {
        struct snap_node *node = &s->nodes[which[i]];
        char read_name[64];
        char error[768] = "";
        cJSON *root = NULL;

        snprintf(read_name, sizeof(read_name), "node %s", node->id);
        if (resps[i].result == NOMAD_OK)
            root = parse_body(paths[i], &resps[i], error, sizeof(error));
        else
            snprintf(error, sizeof(error), "%s", resps[i].error);
        if (root != NULL) {
            const cJSON *updated = cJSON_GetObjectItemCaseSensitive(root, "StatusUpdatedAt");
            const cJSON *events = cJSON_GetObjectItemCaseSensitive(root, "Events");
            int n_events = cJSON_GetArraySize(events);

            if (cJSON_IsNumber(updated))
                node->status_updated_at = (long long)updated->valuedouble;
            if (n_events > 0) {
                const char *msg = json_string(cJSON_GetArrayItem(events, n_events - 1), "Message");

                node->last_event = dup_or_null(msg);
            }
            record_missed_heartbeats(node, events);
            cJSON_Delete(root);
        } else {
            /* Evidence only: a failed node read blocks nothing, but it is recorded. */
            log_warn("observe", "read %s failed: %s", read_name, error);
        }
        if (snapshot_add_read(s, read_name, root != NULL, root != NULL ? NULL : error) != 0)
            goto out;
    }
    rc = 0;

out:
    for (size_t i = 0; i < n; i++) {
        free(paths[i]);
        if (resps != NULL)
            nomad_response_free(&resps[i]);
    }
    free(paths);
    free(which);
    free(resps);
    return rc;
}

/* This host's node ID: from the policy, else from the local agent's /v1/agent/self. */
static int observe_node_id(struct source *src, const struct policy *p, struct snapshot *s)
{
    struct nomad_response resp;
    char error[768] = "";
    cJSON *root = NULL;
    const char *id = NULL;

    if (p->node_id != NULL && p->node_id[0] != '\0') {
        if (!is_uuid(p->node_id)) {
            snprintf(error, sizeof(error), "node.node_id \"%s\" is not a UUID; set it to this "
                     "client's node ID (nomad node status -self)", p->node_id);
            log_error("observe", "%s", error);
            return snapshot_add_read(s, "node id", 0, error);
        }
        copy_id(s->node_id, p->node_id);
        return snapshot_add_read(s, "node id", 1, NULL);
    }

    nomad_response_init(&resp);
    if (source_get(src, "/v1/agent/self", &resp) != 0) {
        snprintf(error, sizeof(error), "%s", resp.error);
    } else {
        root = parse_body("/v1/agent/self", &resp, error, sizeof(error));
        if (root != NULL) {
            const cJSON *stats = cJSON_GetObjectItemCaseSensitive(root, "stats");
            const cJSON *client = cJSON_GetObjectItemCaseSensitive(stats, "client");

            id = json_string(client, "node_id");
            if (id == NULL || !is_uuid(id))
                snprintf(error, sizeof(error), "GET /v1/agent/self: the agent reports no client node "
                         "ID (stats.client.node_id); point NOMAD_ADDR at this host's client agent or "
                         "set node.node_id");
            else
                copy_id(s->node_id, id);
        }
    }
    cJSON_Delete(root);
    nomad_response_free(&resp);
    if (s->node_id[0] == '\0') {
        log_warn("observe", "read node id failed: %s", error);
        return snapshot_add_read(s, "node id", 0, error);
    }
    return snapshot_add_read(s, "node id", 1, NULL);
}

/* This node's allocations, as GET /v1/node/<id>/allocations returns them. */
static int observe_node_allocations(struct source *src, struct snapshot *s)
{
    struct nomad_response resp;
    char path[96];
    char error[768] = "";
    const cJSON *item;
    cJSON *root = NULL;
    int rc = 0;

    snprintf(path, sizeof(path), "/v1/node/%s/allocations", s->node_id);
    nomad_response_init(&resp);
    if (source_get(src, path, &resp) != 0) {
        snprintf(error, sizeof(error), "%s", resp.error);
    } else {
        root = parse_body(path, &resp, error, sizeof(error));
        if (root != NULL && !cJSON_IsArray(root)) {
            snprintf(error, sizeof(error), "GET %s: expected a JSON array", path);
            cJSON_Delete(root);
            root = NULL;
        }
    }
    nomad_response_free(&resp);
    if (root == NULL) {
        log_warn("observe", "read node allocations failed: %s", error);
        return snapshot_add_read(s, "node allocations", 0, error);
    }
    cJSON_ArrayForEach(item, root) {
        if (add_alloc(s, item, NULL) != 0) {
            rc = -1;
            break;
        }
    }
    cJSON_Delete(root);
    if (rc != 0)
        return -1;
    s->allocs_ok = 1;
    return snapshot_add_read(s, "node allocations", 1, NULL);
}

int observe_node(struct source *src, const struct policy *p, struct snapshot *s)
{
    char (*ids)[HOST_ID_LEN + 1] = NULL;
    const char **id_list = NULL;
    size_t n_ids = 0;
    int rc = 0;

    s->node_scope = 1;
    s->observed_at = src->observed_at;
    s->source_name = src->ops->name;
    s->source_note = src->note;

    if (observe_leader(src, s) != 0 || observe_node_id(src, p, s) != 0)
        return -1;
    if (s->node_id[0] != '\0' && observe_node_allocations(src, s) != 0)
        return -1;

    if (host_inventory_read(&p->host, &s->host) != 0)
        return -1;
    s->host_read = 1;
    for (int i = 0; i < HOST_SRC_COUNT; i++) {
        char name[64];

        snprintf(name, sizeof(name), "host %s", s->host.sources[i].name ? s->host.sources[i].name : "?");
        if (!s->host.sources[i].ok)
            log_warn("observe", "read %s failed: %s", name, s->host.sources[i].error);
        if (snapshot_add_read(s, name, s->host.sources[i].ok, s->host.sources[i].error) != 0)
            return -1;
    }
    snapshot_index(s);

    /* Allocations the host names but this node's list lacks. */
    if (s->allocs_ok) {
        if (host_inventory_alloc_ids(&s->host, &ids, &n_ids) != 0)
            return -1;
        id_list = calloc(n_ids ? n_ids : 1, sizeof(*id_list));
        if (id_list == NULL) {
            free(ids);
            return -1;
        }
        for (size_t i = 0; i < n_ids; i++)
            id_list[i] = ids[i];
        rc = lookup_allocations(src, s, id_list, NULL, n_ids);
        free(id_list);
        free(ids);
    }
    snapshot_index(s);
    return rc;
}

/* ---- restart state: servers, autopilot, heartbeats, orders ---- */

static int observe_servers(struct source *src, struct snapshot *s)
{
    struct nomad_response resp;
    char error[768] = "";
    const cJSON *member;
    const cJSON *members;
    cJSON *root = NULL;

    nomad_response_init(&resp);
    if (source_get(src, "/v1/agent/members", &resp) != 0)
        snprintf(error, sizeof(error), "%s", resp.error);
    else
        root = parse_body("/v1/agent/members", &resp, error, sizeof(error));
    nomad_response_free(&resp);
    members = cJSON_GetObjectItemCaseSensitive(root, "Members");
    if (root != NULL && !cJSON_IsArray(members)) {
        snprintf(error, sizeof(error), "GET /v1/agent/members: no Members array");
        cJSON_Delete(root);
        root = NULL;
    }
    if (root == NULL) {
        log_warn("observe", "read servers failed: %s", error);
        return snapshot_add_read(s, "servers", 0, error);
    }
    cJSON_ArrayForEach(member, members) {
        const cJSON *tags = cJSON_GetObjectItemCaseSensitive(member, "Tags");
        const char *role = json_string(tags, "role");
        const char *addr = json_string(member, "Addr");
        const char *port = json_string(tags, "port");
        struct snap_server *srv;
        char rpc[300];

        if (role == NULL || strcmp(role, "nomad") != 0 || addr == NULL)
            continue;
        if (grow((void **)&s->servers, &s->cap_servers, s->n_servers, sizeof(*s->servers)) != 0) {
            cJSON_Delete(root);
            return -1;
        }
        srv = &s->servers[s->n_servers++];
        memset(srv, 0, sizeof(*srv));
        snprintf(rpc, sizeof(rpc), "%s:%s", addr, port ? port : "4647");
        srv->name = dup_or_null(json_string(member, "Name"));
        srv->addr = strdup(addr);
        srv->rpc_addr = strdup(rpc);
        srv->serf_status = dup_or_null(json_string(member, "Status"));
        srv->voter = 1;
        srv->healthy = -1;
        srv->leader = s->leader != NULL && strcmp(s->leader, rpc) == 0;
    }
    cJSON_Delete(root);
    s->servers_ok = 1;
    return snapshot_add_read(s, "servers", 1, NULL);
}

/* Autopilot's health: 200 when healthy, 429 with the same report when not. */
static int observe_autopilot(struct source *src, struct snapshot *s)
{
    struct nomad_response resp;
    char error[768] = "";
    const cJSON *server;
    cJSON *root = NULL;

    nomad_response_init(&resp);
    if (source_get(src, "/v1/operator/autopilot/health", &resp) == 0 ||
        (resp.result == NOMAD_ERR_STATUS && resp.status == 429))
        root = parse_body("/v1/operator/autopilot/health", &resp, error, sizeof(error));
    else
        snprintf(error, sizeof(error), "%s", resp.error);
    nomad_response_free(&resp);
    if (root == NULL || !cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(root, "Healthy"))) {
        if (root != NULL)
            snprintf(error, sizeof(error), "GET /v1/operator/autopilot/health: no Healthy field");
        cJSON_Delete(root);
        log_warn("observe", "read autopilot failed: %s", error);
        return snapshot_add_read(s, "autopilot", 0, error);
    }
    s->autopilot_healthy = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "Healthy"));
    cJSON_ArrayForEach(server, cJSON_GetObjectItemCaseSensitive(root, "Servers")) {
        const char *address = json_string(server, "Address");

        for (size_t i = 0; address != NULL && i < s->n_servers; i++) {
            struct snap_server *srv = &s->servers[i];

            if (srv->rpc_addr == NULL || strcmp(srv->rpc_addr, address) != 0)
                continue;
            srv->healthy = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(server, "Healthy"));
            srv->voter = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(server, "Voter"));
            srv->stable_since = parse_rfc3339(json_string(server, "StableSince"));
            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(server, "Leader")))
                srv->leader = 1;
        }
    }
    cJSON_Delete(root);
    s->autopilot_ok = 1;
    return snapshot_add_read(s, "autopilot", 1, NULL);
}

/* Heartbeat Variables of the nodes that are down or disconnected. */
static int observe_heartbeats(struct source *src, const struct policy *p, struct snapshot *s)
{
    struct nomad_response *resps = NULL;
    size_t *which = NULL;
    char **paths = NULL;
    char *ns = nomad_escape(p->coord_namespace ? p->coord_namespace : "default");
    size_t n = 0;
    int rc = -1;

    s->heartbeats_ok = 1;
    paths = calloc(s->n_nodes ? s->n_nodes : 1, sizeof(*paths));
    which = calloc(s->n_nodes ? s->n_nodes : 1, sizeof(*which));
    if (ns == NULL || paths == NULL || which == NULL)
        goto out;
    for (size_t i = 0; i < s->n_nodes; i++) {
        size_t len;

        if ((s->nodes[i].status != NODE_DOWN && s->nodes[i].status != NODE_DISCONNECTED) ||
            !is_uuid(s->nodes[i].id))
            continue;
        len = strlen(p->coord_prefix) + strlen(ns) + 96;
        paths[n] = malloc(len);
        if (paths[n] == NULL)
            goto out;
        snprintf(paths[n], len, "/v1/var/%s/heartbeat/%s?namespace=%s", p->coord_prefix, s->nodes[i].id, ns);
        which[n++] = i;
    }
    if (n > 0) {
        resps = calloc(n, sizeof(*resps));
        if (resps == NULL)
            goto out;
        for (size_t i = 0; i < n; i++)
            nomad_response_init(&resps[i]);
        source_get_many(src, (const char *const *)paths, n, resps);
    }
    for (size_t i = 0; i < n; i++) {
        const struct snap_node *node = &s->nodes[which[i]];
        char read_name[64];
        char error[768] = "";
        cJSON *root = NULL;
        int ok = 0;

        snprintf(read_name, sizeof(read_name), "heartbeat %s", node->id);
        if (resps[i].result == NOMAD_ERR_STATUS && resps[i].status == 404) {
            ok = 1;     /* no node scope reports for this host */
        } else if (resps[i].result == NOMAD_OK) {
            root = parse_body(paths[i], &resps[i], error, sizeof(error));
        } else {
            snprintf(error, sizeof(error), "%s", resps[i].error);
        }
        if (root != NULL) {
            const cJSON *items = cJSON_GetObjectItemCaseSensitive(root, "Items");
            const char *alive = json_string(items, "host_alive_at");
            const char *healthy = json_string(items, "agent_healthy");
            struct snap_heartbeat *hb;

            if (grow((void **)&s->heartbeats, &s->cap_heartbeats, s->n_heartbeats, sizeof(*s->heartbeats)) != 0) {
                cJSON_Delete(root);
                goto out;
            }
            hb = &s->heartbeats[s->n_heartbeats++];
            memset(hb, 0, sizeof(*hb));
            copy_id(hb->node_id, node->id);
            hb->host_alive_at = alive != NULL ? strtoll(alive, NULL, 10) : 0;
            hb->agent_healthy = healthy == NULL ? -1 : strcmp(healthy, "true") == 0;
            hb->agent_message = dup_or_null(json_string(items, "agent_message"));
            cJSON_Delete(root);
            ok = 1;
        }
        if (!ok) {
            s->heartbeats_ok = 0;
            log_warn("observe", "read %s failed: %s", read_name, error);
        }
        if (snapshot_add_read(s, read_name, ok, ok ? NULL : error) != 0)
            goto out;
    }
    rc = 0;
out:
    for (size_t i = 0; i < n; i++) {
        free(paths[i]);
        if (resps != NULL)
            nomad_response_free(&resps[i]);
    }
    free(paths);
    free(which);
    free(resps);
    free(ns);
    return rc;
}

/* ctx is the policy, for the Variable path prefix. */
static int add_order_path(struct snapshot *s, const cJSON *item, void *ctx)
{
    const struct policy *p = ctx;
    const char *path = json_string(item, "Path");
    size_t prefix_len = strlen(p->coord_prefix) + strlen("/restart/");
    struct snap_order *o;

    if (path == NULL || strlen(path) <= prefix_len)
        return 0;
    if (grow((void **)&s->orders, &s->cap_orders, s->n_orders, sizeof(*s->orders)) != 0)
        return -1;
    o = &s->orders[s->n_orders++];
    memset(o, 0, sizeof(*o));
    o->target = strdup(path + prefix_len);
    o->modify_index = (long long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(item, "ModifyIndex"));
    return o->target != NULL ? 0 : -1;
}

/* Restart order Variables under <prefix>/restart/, with their state. */
static int observe_orders(struct source *src, const struct policy *p, struct snapshot *s)
{
    struct nomad_response *resps = NULL;
    char **paths = NULL;
    char *ns = nomad_escape(p->coord_namespace ? p->coord_namespace : "default");
    char *prefix = NULL;
    char base[512];
    size_t n = 0;
    int rc;

    if (ns == NULL)
        return -1;
    snprintf(base, sizeof(base), "%s/restart/", p->coord_prefix);
    prefix = nomad_escape(base);
    if (prefix == NULL) {
        free(ns);
        return -1;
    }
    snprintf(base, sizeof(base), "/v1/vars?prefix=%s&namespace=%s", prefix, ns);
    free(prefix);
    rc = read_list(src, s, "restart orders", base, add_order_path, (void *)p);
    if (rc <= 0) {
        free(ns);
        return rc < 0 ? -1 : 0;
    }

    n = s->n_orders;
    paths = calloc(n ? n : 1, sizeof(*paths));
    resps = calloc(n ? n : 1, sizeof(*resps));
    rc = -1;
    if (paths == NULL || resps == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(p->coord_prefix) + strlen(s->orders[i].target) + strlen(ns) + 64;

        nomad_response_init(&resps[i]);
        paths[i] = malloc(len);
        if (paths[i] == NULL)
            goto out;
        snprintf(paths[i], len, "/v1/var/%s/restart/%s?namespace=%s", p->coord_prefix, s->orders[i].target, ns);
    }
    if (n > 0)
        source_get_many(src, (const char *const *)paths, n, resps);
    s->orders_ok = 1;
    for (size_t i = 0; i < n; i++) {
        char error[768] = "";
        cJSON *root = NULL;

        if (resps[i].result == NOMAD_OK)
            root = parse_body(paths[i], &resps[i], error, sizeof(error));
        else if (!(resps[i].result == NOMAD_ERR_STATUS && resps[i].status == 404))
            snprintf(error, sizeof(error), "%s", resps[i].error);
        if (root != NULL) {
            const cJSON *items = cJSON_GetObjectItemCaseSensitive(root, "Items");
            const char *requested = json_string(items, "requested_at");

            s->orders[i].kind = dup_or_null(json_string(items, "kind"));
            s->orders[i].state = dup_or_null(json_string(items, "state"));
            s->orders[i].order_id = dup_or_null(json_string(items, "order_id"));
            s->orders[i].requested_at = requested ? strtoll(requested, NULL, 10) : 0;
            s->orders[i].modify_index =
                (long long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(root, "ModifyIndex"));
            cJSON_Delete(root);
        } else if (error[0] != '\0') {
            s->orders_ok = 0;
            log_warn("observe", "read restart order %s failed: %s", s->orders[i].target, error);
            if (snapshot_add_read(s, "restart order", 0, error) != 0)
                goto out;
        }
    }
    rc = 0;
out:
    for (size_t i = 0; paths != NULL && i < n; i++) {
        free(paths[i]);
        nomad_response_free(&resps[i]);
    }
    free(paths);
    free(resps);
    free(ns);
    return rc;
}

/* Mark nodes whose address is a server member's: a combined agent counts as a server. */
static void match_server_nodes(struct snapshot *s)
{
    for (size_t i = 0; i < s->n_servers; i++) {
        for (size_t k = 0; k < s->n_nodes; k++) {
            if (s->nodes[k].address != NULL && s->servers[i].addr != NULL &&
                strcmp(s->nodes[k].address, s->servers[i].addr) == 0) {
                s->nodes[k].is_server = 1;
                copy_id(s->servers[i].node_id, s->nodes[k].id);
            }
        }
    }
}

static int observe_restart_state(struct source *src, const struct policy *p, struct snapshot *s)
{
    s->restarts_read = 1;
    if (observe_servers(src, s) != 0 || observe_autopilot(src, s) != 0)
        return -1;
    match_server_nodes(s);
    if (s->nodes_ok && observe_heartbeats(src, p, s) != 0)
        return -1;
    return observe_orders(src, p, s);
}

/* Return 1 when s contains a failed read whose name starts with prefix. */
static int failed_read_named(const struct snapshot *s, const char *prefix)
{
    size_t len = strlen(prefix);

    for (size_t i = 0; i < s->n_reads; i++) {
        if (!s->reads[i].ok && strncmp(s->reads[i].name, prefix, len) == 0)
            return 1;
    }
    return 0;
}

#define REUSE_BIT(list) (1u << (list))

/* Return the parts of reuse->previous that may be taken over, as REUSE_BIT() bits. The services bit covers the lookups. */
static unsigned reusable_parts(const struct observe_reuse *reuse)
{
    const struct snapshot *prev = reuse->previous;
    unsigned parts = 0;

    if ((reuse->unchanged & REUSE_BIT(WATCH_NODES)) && prev->nodes_ok && prev->watch_index[WATCH_NODES] != 0 &&
        !failed_read_named(prev, "node "))
        parts |= REUSE_BIT(WATCH_NODES);
    if ((reuse->unchanged & REUSE_BIT(WATCH_ALLOCATIONS)) && prev->allocs_ok &&
        prev->watch_index[WATCH_ALLOCATIONS] != 0)
        parts |= REUSE_BIT(WATCH_ALLOCATIONS);
    if ((reuse->unchanged & REUSE_BIT(WATCH_EVALUATIONS)) && prev->evals_ok &&
        prev->watch_index[WATCH_EVALUATIONS] != 0)
        parts |= REUSE_BIT(WATCH_EVALUATIONS);
    /* Which registration is an orphan depends on the allocations too. */
    if ((reuse->unchanged & REUSE_BIT(WATCH_SERVICES)) && (parts & REUSE_BIT(WATCH_ALLOCATIONS)) &&
        prev->services_ok && prev->watch_index[WATCH_SERVICES] != 0 && !failed_read_named(prev, "allocation "))
        parts |= REUSE_BIT(WATCH_SERVICES);
    return parts;
}

/* Move the parts named by parts from prev into s, then free the rest of prev. Returns 0, or -1 on allocation failure. */
static int take_parts(struct snapshot *s, struct snapshot *prev, unsigned parts)
{
    static const char *const read_names[WATCH_COUNT] = {
        [WATCH_NODES] = "nodes",
        [WATCH_ALLOCATIONS] = "allocations",
        [WATCH_SERVICES] = "services",
        [WATCH_EVALUATIONS] = "evaluations",
    };
    char taken[128] = "";

    if (parts & REUSE_BIT(WATCH_NODES)) {
        s->nodes_ok = 1;
        s->nodes = prev->nodes;
        s->n_nodes = prev->n_nodes;
        s->cap_nodes = prev->cap_nodes;
        prev->nodes = NULL;
        prev->n_nodes = prev->cap_nodes = 0;
        /* Set again from this pass's server members. */
        for (size_t i = 0; i < s->n_nodes; i++)
            s->nodes[i].is_server = 0;
    }
    if (parts & REUSE_BIT(WATCH_ALLOCATIONS)) {
        s->allocs_ok = 1;
        s->allocs = prev->allocs;
        s->n_allocs = prev->n_allocs;
        s->cap_allocs = prev->cap_allocs;
        s->terminal_allocs = prev->terminal_allocs;
        prev->allocs = NULL;
        prev->n_allocs = prev->cap_allocs = 0;
    }
    if (parts & REUSE_BIT(WATCH_EVALUATIONS)) {
        s->evals_read = 1;
        s->evals_ok = 1;
        s->evals_total = prev->evals_total;
        s->terminal_evals = prev->terminal_evals;
    }
    if (parts & REUSE_BIT(WATCH_SERVICES)) {
        s->services_read = 1;
        s->services_ok = 1;
        s->services_live = prev->services_live;
        s->services = prev->services;
        s->n_services = prev->n_services;
        s->cap_services = prev->cap_services;
        s->lookups = prev->lookups;
        s->n_lookups = prev->n_lookups;
        s->cap_lookups = prev->cap_lookups;
        prev->services = NULL;
        prev->n_services = prev->cap_services = 0;
        prev->lookups = NULL;
        prev->n_lookups = prev->cap_lookups = 0;
    }
    for (int list = 0; list < WATCH_COUNT; list++) {
        if (!(parts & REUSE_BIT(list)))
            continue;
        s->watch_index[list] = prev->watch_index[list];
        if (snapshot_add_read(s, read_names[list], 1, NULL) != 0)
            return -1;
        snprintf(taken + strlen(taken), sizeof(taken) - strlen(taken), "%s%s", taken[0] ? ", " : "",
                 read_names[list]);
    }
    if (taken[0] != '\0')
        log_info("observe", "unchanged since the last pass, not read again: %s", taken);
    snapshot_free(prev);
    snapshot_init(prev);
    return 0;
}

int observe_cluster(struct source *src, const struct policy *p, struct snapshot *s)
{
    return observe_cluster_reusing(src, p, s, NULL);
}

int observe_cluster_reusing(struct source *src, const struct policy *p, struct snapshot *s,
                            struct observe_reuse *reuse)
{
    int want_allocs = p->orphan_services.common.enabled || p->system_gc.common.enabled ||
                      p->down_nodes.common.enabled;
    unsigned parts = 0;
    int rc;

    s->observed_at = src->observed_at;
    s->source_name = src->ops->name;
    s->source_note = src->note;

    if (reuse != NULL && reuse->previous != NULL) {
        parts = reusable_parts(reuse);
        if (take_parts(s, reuse->previous, parts) != 0)
            return -1;
    }

    if (observe_leader(src, s) != 0)
        return -1;

    if (!(parts & REUSE_BIT(WATCH_NODES))) {
        rc = read_list_indexed(src, s, "nodes", "/v1/nodes", add_node, NULL, &s->watch_index[WATCH_NODES]);
        if (rc < 0)
            return -1;
        s->nodes_ok = rc;
    }

    if (want_allocs && !(parts & REUSE_BIT(WATCH_ALLOCATIONS))) {
        rc = read_list_indexed(src, s, "allocations", "/v1/allocations?namespace=*&task_states=false", add_alloc,
                               NULL, &s->watch_index[WATCH_ALLOCATIONS]);
        if (rc < 0)
            return -1;
        s->allocs_ok = rc;
    }

    if (p->system_gc.common.enabled && !(parts & REUSE_BIT(WATCH_EVALUATIONS))) {
        s->evals_read = 1;
        rc = read_list_indexed(src, s, "evaluations", "/v1/evaluations?namespace=*", count_eval, NULL,
                               &s->watch_index[WATCH_EVALUATIONS]);
        if (rc < 0)
            return -1;
        s->evals_ok = rc;
    }

    snapshot_index(s);

    if (p->orphan_services.common.enabled && !(parts & REUSE_BIT(WATCH_SERVICES))) {
        if (observe_registrations(src, s) != 0)
            return -1;
        /* Without the complete allocation list the rule is off; lookups would be wasted. */
        if (s->allocs_ok && s->services_read && observe_lookups(src, s) != 0)
            return -1;
    }

    /* Reused nodes keep what their node reads found. */
    if ((p->down_nodes.common.enabled || p->client_restart.common.enabled ||
         p->node_ineligible.common.enabled) &&
        s->nodes_ok && !(parts & REUSE_BIT(WATCH_NODES)) && observe_unhealthy_nodes(src, s) != 0)
        return -1;
    if ((p->client_restart.common.enabled || p->server_restart.common.enabled ||
         p->node_ineligible.common.enabled) &&
        observe_restart_state(src, p, s) != 0)
        return -1;

    snapshot_index(s);
    return 0;
}
