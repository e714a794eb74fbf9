/*
 * Links side of the node inventory: the veths enslaved to the CNI bridge,
 * with the namespace of their peer. They are read from iproute2's JSON
 * output (`ip -j -d link show master <bridge>` and `ip -j netns list-id`),
 * the same view that `ip` gives an operator.
 */
#define _GNU_SOURCE
#include "host.h"
#include "proc.h"

#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Defined in host_inventory.c. */
int host_inv_is_uuid(const char *text);
int host_inv_is_ifname(const char *name);
void *host_inv_grow(void *array, size_t count, size_t elem_size);
int host_inv_fail(struct host_inventory *inv, enum host_source src, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int host_inv_read_links(const struct host_paths *paths, struct host_inventory *inv);

#define IP_MAX_OUTPUT ((size_t)64 * 1024 * 1024)
#define DEFAULT_TIMEOUT_MS 10000

enum run_status { RUN_OK = 0, RUN_FAILED = 1, RUN_NO_MEMORY = -1 };

/*
 * Run `ip` with argv[1..] and parse its standard output as a JSON array into
 * *out. Empty output counts as an empty array (older iproute2 prints nothing
 * when there is nothing to list). On RUN_FAILED, errbuf contains the reason.
 */
static enum run_status run_ip_json(const struct host_paths *paths, const char *const *argv, cJSON **out,
                                   char *errbuf, size_t errsz)
{
    long timeout = paths->command_timeout_ms > 0 ? paths->command_timeout_ms : DEFAULT_TIMEOUT_MS;
    enum run_status status = RUN_FAILED;
    struct proc_result res;
    char spawn_error[512];
    char brief[512];
    const char *text;

    *out = NULL;
    if (proc_run(argv, NULL, NULL, 0, timeout, IP_MAX_OUTPUT, &res, spawn_error, sizeof(spawn_error)) != 0) {
        snprintf(errbuf, errsz, "%s; install iproute2 or configure the ip command path", spawn_error);
        goto out;
    }
    if (res.exit_code != 0) {
        snprintf(errbuf, errsz, "exited with %s %d: %s", res.term_signal != 0 ? "signal" : "status",
                 res.term_signal != 0 ? res.term_signal : res.exit_code, proc_brief(&res, brief, sizeof(brief)));
        goto out;
    }
    if (res.truncated) {
        snprintf(errbuf, errsz, "printed more than %zu bytes", IP_MAX_OUTPUT);
        goto out;
    }
    text = res.out;
    while (*text == ' ' || *text == '\n' || *text == '\t')
        text++;
    *out = *text == '\0' ? cJSON_CreateArray() : cJSON_ParseWithLength(res.out, res.out_len);
    if (*out == NULL && *text == '\0') {
        status = RUN_NO_MEMORY;
        goto out;
    }
    if (*out == NULL || !cJSON_IsArray(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        snprintf(errbuf, errsz, "printed output that is not a JSON array");
        goto out;
    }
    status = RUN_OK;
out:
    proc_result_free(&res);
    return status;
}

/* Add the veths among the ports of the bridge that `ip -j -d link show master B` lists. Returns -1 on no memory. */
static int add_veths(struct host_inventory *inv, const cJSON *links)
{
    const cJSON *link;

    cJSON_ArrayForEach(link, links) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(link, "ifname");
        const cJSON *ifindex = cJSON_GetObjectItemCaseSensitive(link, "ifindex");
        const cJSON *nsid = cJSON_GetObjectItemCaseSensitive(link, "link_netnsid");
        const cJSON *info = cJSON_GetObjectItemCaseSensitive(link, "linkinfo");
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(info, "info_kind");
        struct host_veth *veth;

        if (!cJSON_IsString(kind) || strcmp(kind->valuestring, "veth") != 0)
            continue;
        if (!cJSON_IsString(name) || !host_inv_is_ifname(name->valuestring) || !cJSON_IsNumber(ifindex))
            continue;
        veth = host_inv_grow(inv->veths, inv->n_veths, sizeof(*inv->veths));
        if (veth == NULL)
            return -1;
        inv->veths = veth;
        veth = &inv->veths[inv->n_veths];
        memset(veth, 0, sizeof(*veth));
        veth->name = strdup(name->valuestring);
        if (veth->name == NULL)
            return -1;
        veth->ifindex = ifindex->valueint;
        veth->link_netnsid = cJSON_IsNumber(nsid) && nsid->valueint >= 0 ? nsid->valueint : -1;
        inv->n_veths++;
    }
    return 0;
}

/* Return iproute2's name for nsid (taken from its /var/run/netns), or NULL. */
static const char *netns_name(const cJSON *ids, int nsid)
{
    const cJSON *entry;

    cJSON_ArrayForEach(entry, ids) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(entry, "nsid");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(entry, "name");

        if (cJSON_IsNumber(id) && id->valueint == nsid && cJSON_IsString(name) && name->valuestring[0] != '\0' &&
            strchr(name->valuestring, '/') == NULL)
            return name->valuestring;
    }
    return NULL;
}

/* Return the allocation whose parsed cache lists veth as its host interface, when exactly one does. */
static const char *cache_owner(const struct host_inventory *inv, const char *veth)
{
    const char *owner = NULL;

    for (size_t i = 0; i < inv->n_caches; i++) {
        const struct host_cni_cache *cache = &inv->caches[i];

        if (cache->error != NULL)
            continue;
        for (size_t j = 0; j < cache->n_host_veths; j++) {
            if (strcmp(cache->host_veths[j], veth) != 0)
                continue;
            if (owner != NULL && strcmp(owner, cache->alloc_id) != 0)
                return NULL;
            owner = cache->alloc_id;
        }
    }
    return owner;
}

/*
 * Name each veth's peer namespace and attribute the veth: to the peer
 * namespace's name when it is a UUID (Nomad names the namespace after the
 * allocation), else to the cache that lists it. Returns -1 on no memory.
 */
static int attribute_veths(struct host_inventory *inv, const cJSON *ids)
{
    for (size_t i = 0; i < inv->n_veths; i++) {
        struct host_veth *veth = &inv->veths[i];
        const char *peer = veth->link_netnsid >= 0 ? netns_name(ids, veth->link_netnsid) : NULL;
        const char *owner;

        if (peer != NULL) {
            veth->peer_netns = strdup(peer);
            if (veth->peer_netns == NULL)
                return -1;
        }
        owner = peer != NULL && host_inv_is_uuid(peer) ? peer : cache_owner(inv, veth->name);
        if (owner != NULL)
            memcpy(veth->alloc_id, owner, HOST_ID_LEN + 1);
    }
    return 0;
}

static int compare_veths(const void *a, const void *b)
{
    return strcmp(((const struct host_veth *)a)->name, ((const struct host_veth *)b)->name);
}

/*
 * NOTE: iproute2 names namespaces from its own directory (/var/run/netns),
 * not from paths->netns_dir. With another netns_dir, peers are attributed
 * through the cache files only.
 */
int host_inv_read_links(const struct host_paths *paths, struct host_inventory *inv)
{
    const char *link_argv[] = {paths->ip_command, "-j", "-d", "link", "show", "master", paths->bridge_name, NULL};
    const char *ids_argv[] = {paths->ip_command, "-j", "netns", "list-id", NULL};
    cJSON *links = NULL, *ids = NULL;
    enum run_status status;
    int need_ids = 0;
    char errbuf[768];
    int rc = 0;

    if (paths->ip_command == NULL || paths->ip_command[0] == '\0')
        return host_inv_fail(inv, HOST_SRC_LINKS, "no ip command is configured");
    if (!host_inv_is_ifname(paths->bridge_name))
        return host_inv_fail(inv, HOST_SRC_LINKS, "bridge name \"%s\" is not a valid interface name; fix the configured bridge name",
                             paths->bridge_name != NULL ? paths->bridge_name : "(none)");

    status = run_ip_json(paths, link_argv, &links, errbuf, sizeof(errbuf));
    if (status == RUN_NO_MEMORY)
        return -1;
    if (status == RUN_FAILED) {
        /* Without the bridge there is no veth to list: no allocation was plugged in, or the bridge was removed. */
        if (if_nametoindex(paths->bridge_name) == 0 && (errno == ENODEV || errno == ENXIO))
            return 0;
        return host_inv_fail(inv, HOST_SRC_LINKS, "`%s -j -d link show master %s` failed: %s", paths->ip_command,
                             paths->bridge_name, errbuf);
    }
    if (add_veths(inv, links) != 0) {
        rc = -1;
        goto out;
    }
    for (size_t i = 0; i < inv->n_veths; i++)
        need_ids |= inv->veths[i].link_netnsid >= 0;
    if (need_ids) {
        status = run_ip_json(paths, ids_argv, &ids, errbuf, sizeof(errbuf));
        if (status == RUN_NO_MEMORY) {
            rc = -1;
            goto out;
        }
        if (status == RUN_FAILED) {
            rc = host_inv_fail(inv, HOST_SRC_LINKS, "`%s -j netns list-id` failed: %s", paths->ip_command, errbuf);
            if (rc != 0)
                goto out;
        }
    }
    rc = attribute_veths(inv, ids);
    if (rc == 0 && inv->n_veths > 1)
        qsort(inv->veths, inv->n_veths, sizeof(*inv->veths), compare_veths);
out:
    cJSON_Delete(links);
    cJSON_Delete(ids);
    return rc;
}
