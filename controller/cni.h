/*
 * CNI DEL of one allocation from its libcni cache file, run the way libcni's
 * DelNetworkList runs it.
 *
 * After a successful ADD, libcni (v1.x) writes
 * <cni_cache_dir>/<network>-<containerId>-<ifName> as compact JSON with the
 * keys "kind" ("cniCacheV1"), "containerId", "config" (the conflist,
 * base64), "ifName", "networkName", "netns" (libcni 1.2 and later only),
 * "cniArgs" ([[key, value], ...]), "capabilityArgs" and "result". DEL needs
 * all of it: without the cached result the firewall plugin removes nothing,
 * and without the port mappings portmap removes nothing.
 *
 * Everything read from the file is validated before it is used in a path, an
 * environment variable or a command. The recorded "netns" is never used as
 * CNI_NETNS: the caller passes the namespace path it checked itself.
 */
#ifndef NOMAD_MEDIC_CNI_H
#define NOMAD_MEDIC_CNI_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "host.h"

/* Maximum size of a cache file that cni_cache_load reads, in bytes. */
#define CNI_CACHE_MAX_BYTES (1024 * 1024)

/* A validated libcni cache file. Every pointer is owned by the struct. */
struct cni_cache {
    char *path;
    char container_id[HOST_ID_LEN + 1];
    char *ifname;
    char *network;            /* the conflist's "name" */
    char *cni_version;        /* the conflist's "cniVersion" */
    cJSON *conflist;          /* the decoded "config" */
    cJSON *result;            /* "result", NULL when the file has none */
    cJSON *capability_args;   /* "capabilityArgs", NULL when the file has none */
    char *cni_args;           /* CNI_ARGS built from "cniArgs": "k=v;k=v", "" when none */
    char *netns;              /* the recorded "netns", NULL when absent, used only in reports */
    char **ips;               /* result addresses without prefix length, each valid for inet_pton */
    size_t n_ips;
    char **host_ifaces;       /* result interfaces without a sandbox, minus the conflist's bridges */
    size_t n_host_ifaces;
};

enum cni_del_status {
    CNI_DEL_DONE = 0,   /* every plugin returned success */
    CNI_DEL_FAILED,     /* a plugin failed or timed out, and the plugins after it in DEL order did not run */
    CNI_DEL_NOT_RUN,    /* no plugin ran: a plugin binary was not found on cni_path */
};

struct cni_del_outcome {
    enum cni_del_status status;
    int plugins_run;          /* plugins started, the failing one included */
    char plugin[72];          /* "type" of the plugin that failed or was not found, else "" */
    char message[1024];       /* what failed and why, or a summary of what ran */
};

/* 1 when text is a lowercase UUID (8-4-4-4-12 hex digits), as Nomad writes allocation IDs. */
int cni_is_uuid(const char *text);

/* 1 when name is a valid Linux interface name: 1 to 15 characters of [A-Za-z0-9_.-], not "." or "..". */
int cni_is_ifname(const char *name);

/* 1 when type names a plugin file: 1 to 64 characters of [A-Za-z0-9_.-], not starting with a dot. */
int cni_is_plugin_type(const char *type);

/* 1 when name is a valid CNI network name: [A-Za-z0-9] then up to 127 of [A-Za-z0-9_.-]. */
int cni_is_network_name(const char *name);

/*
 * Decode standard base64 (RFC 4648 alphabet, '=' padding required) strictly:
 * no whitespace, no characters outside the alphabet, padding only at the end
 * and unused bits zero. On success *out is malloc'd, NUL-terminated (the NUL is
 * not counted in *out_len) and owned by the caller. Returns 0, 1 for invalid
 * input (then *out is NULL), or -1 when memory ran out.
 */
int cni_base64_decode(const char *in, size_t in_len, unsigned char **out, size_t *out_len);

/*
 * Find the cache files of alloc_id: the entries of paths->cni_cache_dir named
 * "<network_name>-<alloc_id>-<ifname>" with a valid ifname, sorted. *files is a
 * malloc'd array of malloc'd paths that the caller frees (also on failure it
 * is NULL with *n 0). A missing directory yields no files. Returns 0, 1 when
 * the directory could not be read (err gives the reason), or -1 when memory ran out.
 */
int cni_cache_find(const struct host_paths *paths, const char *alloc_id, char ***files, size_t *n,
                   char *err, size_t errsz);

/*
 * Read and validate the cache file at path for alloc_id. The file must be a
 * regular file of at most CNI_CACHE_MAX_BYTES named <network>-<alloc>-<ifName>,
 * with kind "cniCacheV1", containerId equal to alloc_id, networkName (when
 * present) and the conflist's name equal to paths->network_name, a valid
 * ifName, and a conflist whose plugins each have a valid "type". Anything
 * else is rejected with err naming the field and its value. On success the
 * caller frees *cache with cni_cache_free. On failure *cache is empty.
 * Returns 0, 1 when the file was rejected or unreadable, or -1 when memory ran out.
 */
int cni_cache_load(const struct host_paths *paths, const char *alloc_id, const char *path,
                   struct cni_cache *cache, char *err, size_t errsz);

void cni_cache_free(struct cni_cache *cache);

/*
 * Run CNI DEL for the cached allocation: the conflist's plugins in reverse
 * order, each binary found by its type on paths->cni_path and run through
 * proc_run (no shell, time limit paths->command_timeout_ms). Each plugin's
 * stdin is its own object plus "name", "cniVersion", the cached result as
 * "prevResult" (conflists of version 0.4.0 or later, as libcni does) and
 * "runtimeConfig" with the capability args its "capabilities" accept. The
 * environment is CNI_COMMAND=DEL, CNI_CONTAINERID, CNI_NETNS=netns_path,
 * CNI_IFNAME, CNI_ARGS, CNI_PATH=paths->cni_path and our PATH (the plugins run
 * iptables). netns_path must be the namespace path only when it is a mounted
 * nsfs, else "". Every binary is located before the first one runs, so a
 * missing plugin means nothing ran. DEL stops at the first plugin that
 * fails, as libcni does. Returns 0 with *outcome filled, or -1 when memory
 * ran out (outcome->message names the allocation).
 */
int cni_del(const struct host_paths *paths, const struct cni_cache *cache, const char *netns_path,
            struct cni_del_outcome *outcome);

#endif
