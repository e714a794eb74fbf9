/*
 * Node scope: the network state that a Nomad client's bridge networking
 * leaves on its host, read into an inventory, and the cleanup of one
 * allocation's leaked state.
 *
 * Per allocation A with IP X, the artefacts are: the namespace
 * <netns_dir>/A (an nsfs bind mount), its veth on the bridge, the host-local
 * reservation <ipam_dir>/<network>/X (or the pre-1.9.4 legacy directory)
 * whose first line is A, the libcni cache <cni_cache_dir>/<network>-A-<ifname>,
 * the nat chain CNI-<24 hex> with its POSTROUTING jump commented
 * `name: "<network>" id: "A"`, the port-map chain CNI-DN-<21 hex> with its
 * CNI-HOSTPORT-DNAT jumps commented `dnat name: "<network>" id: "A"`, and the
 * CNI-FORWARD rules of X (which carry no ID). The hex is sha512(network + A).
 *
 * Shared infrastructure is never an allocation's artefact and never removed:
 * the bridge, the CNI-HOSTPORT-* base chains and their jumps, CNI-FORWARD
 * itself and its jump to NOMAD-ADMIN, NOMAD-ADMIN, host-local's
 * last_reserved_ip.* and lock files.
 *
 * Every name taken from the host (a file name, a comment, a cache field) is
 * validated before it is used in a path or a command: an allocation ID must be
 * a UUID, an IP must parse as an IPv4 or IPv6 address, an interface name must
 * be a valid Linux interface name.
 */
#ifndef NOMAD_MEDIC_HOST_H
#define NOMAD_MEDIC_HOST_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <sys/types.h>

#define HOST_ID_LEN 36

/* Locations of the client's network state on the host. Strings are owned (malloc'd) by the struct. */
struct host_paths {
    char *netns_dir;          /* default /var/run/netns */
    char *cni_cache_dir;      /* default /var/lib/cni/results */
    char *ipam_dir;           /* default /var/run/cni: reservations in <ipam_dir>/<network> (Nomad >= 1.9.4) */
    char *ipam_dir_legacy;    /* default /var/lib/cni/networks (host-local's default, Nomad <= 1.9.3) */
    char *network_name;       /* default "nomad" (client bridge_network_name) */
    char *bridge_name;        /* default "nomad" */
    char *cni_path;           /* default "/opt/cni/bin:/usr/libexec/cni:/usr/lib/cni" */
    char *proc_dir;           /* default /proc */
    char *iptables;           /* default "iptables" (the nft backend on current distributions) */
    char *iptables_save;      /* default "iptables-save" */
    char *ip_command;         /* default "ip" (iproute2) */
    long command_timeout_ms;  /* per helper program; default 10000 */
};

void host_paths_defaults(struct host_paths *paths);
void host_paths_free(struct host_paths *paths);

enum host_netns_kind {
    NETNS_MOUNTED = 0,   /* an nsfs bind mount: a live namespace */
    NETNS_STALE_FILE,    /* a plain file left after the namespace was unmounted */
    NETNS_OTHER,         /* anything else (directory, symlink): reported, never touched */
};

struct host_netns {
    char *name;
    char *path;
    char alloc_id[HOST_ID_LEN + 1];   /* the name when it is a UUID, else "" */
    enum host_netns_kind kind;
    unsigned long long inode;         /* nsfs inode when mounted */
    pid_t *holders;                   /* processes whose network namespace this is */
    size_t n_holders;
};

struct host_reservation {
    char *path;
    char *ip;
    char alloc_id[HOST_ID_LEN + 1];   /* first line of the file, when a UUID */
    char *ifname;                     /* second line, may be NULL */
    int legacy;                       /* under ipam_dir_legacy */
};

struct host_port_mapping {
    int host_port;
    int container_port;
    char protocol[8];                 /* "tcp" or "udp" */
    char host_ip[64];                 /* "" for any address */
};

struct host_cni_cache {
    char *path;
    char alloc_id[HOST_ID_LEN + 1];
    char *ifname;
    char *network;
    char *netns_path;                 /* "netns" field, NULL in caches from libcni < 1.2 */
    char **ips;                       /* addresses without prefix length */
    size_t n_ips;
    char **host_veths;                /* result interfaces without a sandbox */
    size_t n_host_veths;
    struct host_port_mapping *ports;
    size_t n_ports;
    char *error;                      /* NULL when the file parsed; then it is left alone */
};

struct host_ipt_rule {
    char *table;                      /* "nat" or "filter" */
    char *chain;
    char *line;                       /* as iptables-save prints it, starting "-A CHAIN" */
    char **args;                      /* tokens after "-A CHAIN", unquoted, for `iptables -D CHAIN args...` */
    size_t n_args;
    int position;                     /* 1-based within its chain */
    char alloc_id[HOST_ID_LEN + 1];   /* from an `id: "A"` comment, else "" */
    char *target;                     /* -j value, may be NULL */
    char *ip;                         /* the /32 address in -s or -d, may be NULL */
    char *protocol;                   /* -p value, may be NULL */
    int *ports;                       /* --dports / --dport values, expanded */
    size_t n_ports;
    char *dnat_to;                    /* --to-destination value, may be NULL */
    int shared;                       /* infrastructure, never removed */
};

struct host_ipt_chain {
    char *table;
    char *name;
    char alloc_id[HOST_ID_LEN + 1];   /* from the jump that references it, or its name's hash */
    const char *role;                 /* "bridge-ipmasq", "portmap-dnat", "shared" or "other" */
    int referenced;                   /* some rule jumps to it */
};

struct host_veth {
    char *name;
    int ifindex;
    int link_netnsid;                 /* -1 when the peer is in the host namespace or unknown */
    char *peer_netns;                 /* the peer namespace's name in netns_dir, NULL when unnamed */
    char alloc_id[HOST_ID_LEN + 1];   /* peer_netns when it is a UUID, or from a cache file */
};

/* Two or more allocations whose port-map rules claim the same host port; the first rule wins. */
struct host_port_conflict {
    char protocol[8];
    int port;
    char effective_alloc[HOST_ID_LEN + 1];
    char *effective_chain;
    char *effective_dnat;             /* "X:TO", may be NULL */
    struct host_port_claim {
        char alloc_id[HOST_ID_LEN + 1];
        char *chain;
        char *dnat_to;
    } *shadowed;
    size_t n_shadowed;
};

/* Whether each part of the host was read completely. */
enum host_source {
    HOST_SRC_NETNS = 0,
    HOST_SRC_PROC,
    HOST_SRC_RESERVATIONS,
    HOST_SRC_CNI_CACHE,
    HOST_SRC_IPTABLES_NAT,
    HOST_SRC_IPTABLES_FILTER,
    HOST_SRC_LINKS,
    HOST_SRC_COUNT,
};

struct host_inventory {
    struct host_netns *netns;
    size_t n_netns;
    struct host_reservation *reservations;
    size_t n_reservations;
    struct host_cni_cache *caches;
    size_t n_caches;
    struct host_ipt_rule *rules;
    size_t n_rules;
    struct host_ipt_chain *chains;
    size_t n_chains;
    struct host_veth *veths;
    size_t n_veths;
    struct host_port_conflict *conflicts;
    size_t n_conflicts;
    struct {
        const char *name;             /* "netns", "processes", "reservations", "cni-cache", ... */
        int ok;
        char *error;
    } sources[HOST_SRC_COUNT];
};

/*
 * Read the host. A part that cannot be read is marked failed in sources[]
 * (with the path or command and the error) and the rest is still read.
 * A directory that does not exist counts as read and empty. Returns 0, or -1
 * when memory ran out.
 */
int host_inventory_read(const struct host_paths *paths, struct host_inventory *inv);
void host_inventory_free(struct host_inventory *inv);

/* 1 when every source was read. */
int host_inventory_complete(const struct host_inventory *inv);

/*
 * The allocation IDs that own at least one per-allocation artefact, sorted
 * and unique. *ids is malloc'd; the caller frees it.
 */
int host_inventory_alloc_ids(const struct host_inventory *inv, char (**ids)[HOST_ID_LEN + 1], size_t *n);

/* Every artefact of alloc_id as a JSON object (evidence). NULL on allocation failure. */
cJSON *host_inventory_alloc_json(const struct host_inventory *inv, const char *alloc_id);

/* The chain names libcni's plugins derive for alloc_id: "CNI-" + 24 hex and "CNI-DN-" + 21 hex. */
int host_chain_names(const char *network, const char *alloc_id, char masq[32], char dnat[32]);

/* Result of one cleanup step. */
struct host_step {
    const char *name;      /* "stale_netns_file", "cni_del", "netns_remove", "cache_remove", "sweep_rules", ... */
    int ok;
    int skipped;           /* nothing to do for this step */
    char *detail;          /* what was done, or the error */
};

struct host_cleanup_report {
    struct host_step *steps;
    size_t n_steps;
    int complete;          /* after the last step, the re-read inventory contains nothing of the allocation */
    cJSON *remaining;      /* what is still there (same shape as host_inventory_alloc_json), or NULL */
};

/*
 * Remove every artefact of alloc_id, in the order that releases everything:
 * unlink a stale namespace file; CNI DEL with the cached configuration,
 * result, port mappings and CNI_ARGS (plugins in reverse order, found on
 * cni_path, run without a shell); unmount and remove the namespace; remove
 * the cache file; then remove leftover chains and rules tagged with the ID,
 * the CNI-FORWARD rules of its IP when no other allocation holds that IP,
 * reservation files naming it, and host veths from its cached result. Each
 * step is reported; a failing step does not stop the later ones unless they
 * depend on it. The caller has checked that the allocation is not live and
 * that no process holds its namespace. Returns 0 when every step succeeded
 * and nothing remains, 1 when something remains (report says what), -1 when
 * memory ran out.
 */
int host_cleanup_alloc(const struct host_paths *paths, const char *alloc_id,
                       struct host_cleanup_report *report);
void host_cleanup_report_free(struct host_cleanup_report *report);

#endif
