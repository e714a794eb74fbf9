/*
 * Node-scope inventory: the named network namespaces and the processes inside
 * them, the host-local reservations and the libcni cache files of one CNI
 * network, and the evidence per allocation. host_iptables.c adds the iptables
 * chains, rules and port conflicts, and host_links.c the veths.
 *
 * Everything read from the host is untrusted. A file name becomes an
 * allocation ID only when it is a UUID, and a reservation only when its name
 * parses as an IP address. A cache field is used only after its type and
 * value were checked.
 */
#define _GNU_SOURCE
#include "host.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

/* A reservation contains "<id>\r\n<ifname>", so a longer file is not host-local's. */
#define RESERVATION_MAX_BYTES 4096
/* libcni caches are a few KiB. The cap keeps a hostile file from filling memory. */
#define CACHE_MAX_BYTES (4 * 1024 * 1024)
/* Messages of one source beyond this length are dropped (the first ones are kept). */
#define SOURCE_ERROR_MAX 4096

/*
 * Shared with host_iptables.c and host_links.c, which declare them. The
 * host_inv_ prefix marks names internal to the nm_host library.
 */
int host_inv_is_uuid(const char *text);
int host_inv_is_ifname(const char *name);
int host_inv_ip_parse(const char *text, unsigned char addr[16], int *family);
void *host_inv_grow(void *array, size_t count, size_t elem_size);
int host_inv_fail(struct host_inventory *inv, enum host_source src, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Defined in host_iptables.c and host_links.c. */
int host_inv_read_iptables(const struct host_paths *paths, struct host_inventory *inv);
int host_inv_read_links(const struct host_paths *paths, struct host_inventory *inv);

static const char *const source_names[HOST_SRC_COUNT] = {
    [HOST_SRC_NETNS] = "netns",
    [HOST_SRC_PROC] = "processes",
    [HOST_SRC_RESERVATIONS] = "reservations",
    [HOST_SRC_CNI_CACHE] = "cni-cache",
    [HOST_SRC_IPTABLES_NAT] = "iptables-nat",
    [HOST_SRC_IPTABLES_FILTER] = "iptables-filter",
    [HOST_SRC_LINKS] = "links",
};

/* ---- helpers shared inside nm_host ---- */

/* 1 when text is a lowercase 8-4-4-4-12 hex UUID, as Nomad writes allocation IDs. */
int host_inv_is_uuid(const char *text)
{
    if (text == NULL || strlen(text) != HOST_ID_LEN)
        return 0;
    for (int i = 0; i < HOST_ID_LEN; i++) {
        char c = text[i];

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }
    }
    return 1;
}

/* 1 when name is acceptable to the kernel as an interface name (dev_valid_name). */
int host_inv_is_ifname(const char *name)
{
    size_t len;

    if (name == NULL)
        return 0;
    len = strlen(name);
    if (len == 0 || len > 15 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];

        if (c <= ' ' || c == 0x7f || c == '/' || c == ':')
            return 0;
    }
    return 1;
}

/* Parse an IPv4 or IPv6 address (no prefix length). Returns 1 when valid. */
int host_inv_ip_parse(const char *text, unsigned char addr[16], int *family)
{
    unsigned char scratch[16];

    if (addr == NULL)
        addr = scratch;
    memset(addr, 0, 16);
    if (text == NULL)
        return 0;
    if (inet_pton(AF_INET, text, addr) == 1) {
        if (family != NULL)
            *family = AF_INET;
        return 1;
    }
    if (inet_pton(AF_INET6, text, addr) == 1) {
        if (family != NULL)
            *family = AF_INET6;
        return 1;
    }
    return 0;
}

/*
 * Make room for element number count (0-based) in an array that only ever
 * grows through this function. The capacity is implicit: 8 for the first
 * element, then doubled each time count reaches a power of two. Returns the
 * (possibly moved) array, or NULL when memory ran out; the old array is then
 * still valid and owned by the caller.
 */
void *host_inv_grow(void *array, size_t count, size_t elem_size)
{
    size_t cap;

    if (array != NULL && (count < 8 || (count & (count - 1)) != 0))
        return array;
    cap = count < 8 ? 8 : count * 2;
    if (cap > SIZE_MAX / elem_size)
        return NULL;
    return realloc(array, cap * elem_size);
}

/*
 * Mark a source as not read completely and add a message to its error. Later
 * messages are appended until the error reaches SOURCE_ERROR_MAX characters.
 * Returns 0, or -1 when memory ran out.
 */
int host_inv_fail(struct host_inventory *inv, enum host_source src, const char *fmt, ...)
{
    char *message = NULL;
    char *joined = NULL;
    va_list ap;
    int len;

    inv->sources[src].ok = 0;
    va_start(ap, fmt);
    len = vasprintf(&message, fmt, ap);
    va_end(ap);
    if (len < 0)
        return -1;
    if (inv->sources[src].error == NULL) {
        inv->sources[src].error = message;
        return 0;
    }
    if (strlen(inv->sources[src].error) + (size_t)len > SOURCE_ERROR_MAX) {
        free(message);
        return 0;
    }
    if (asprintf(&joined, "%s; %s", inv->sources[src].error, message) < 0) {
        free(message);
        return -1;
    }
    free(message);
    free(inv->sources[src].error);
    inv->sources[src].error = joined;
    return 0;
}

/* ---- small local helpers ---- */

static char *join_path(const char *dir, const char *name)
{
    char *path = NULL;

    if (asprintf(&path, "%s/%s", dir, name) < 0)
        return NULL;
    return path;
}

/* Check a CNI network name against the characters the spec allows, because it goes into paths and comment matching. */
static int network_name_valid(const char *name)
{
    size_t len;

    if (name == NULL)
        return 0;
    len = strlen(name);
    if (len == 0 || len > 128 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

enum read_status {
    READ_OK = 0,
    READ_GONE = 1,         /* removed while we were reading the directory */
    READ_NOT_REGULAR = 2,  /* a symlink, directory, fifo...: not what we look for */
    READ_FAILED = 3,       /* errbuf contains the reason */
    READ_NO_MEMORY = 4,
};

/*
 * Read a whole regular file of at most max_bytes without following a symlink
 * and without blocking on a fifo. *text is NUL-terminated and malloc'd.
 */
static enum read_status read_small_file(const char *path, size_t max_bytes, char **text, size_t *len,
                                        char *errbuf, size_t errsz)
{
    enum read_status status = READ_FAILED;
    char *buf = NULL;
    size_t used = 0;
    struct stat st;
    int fd;

    *text = NULL;
    *len = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return READ_GONE;
        if (errno == ELOOP)
            return READ_NOT_REGULAR;
        snprintf(errbuf, errsz, "cannot open %s: %s", path, strerror(errno));
        return READ_FAILED;
    }
    if (fstat(fd, &st) != 0) {
        snprintf(errbuf, errsz, "cannot stat %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        status = READ_NOT_REGULAR;
        goto out;
    }
    buf = malloc(max_bytes + 1);
    if (buf == NULL) {
        status = READ_NO_MEMORY;
        goto out;
    }
    for (;;) {
        ssize_t got = read(fd, buf + used, max_bytes + 1 - used);

        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            snprintf(errbuf, errsz, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (got == 0)
            break;
        used += (size_t)got;
        if (used > max_bytes) {
            snprintf(errbuf, errsz, "%s is larger than %zu bytes, so it is not read", path, max_bytes);
            goto out;
        }
    }
    buf[used] = '\0';
    *text = buf;
    *len = used;
    buf = NULL;
    status = READ_OK;
out:
    free(buf);
    close(fd);
    return status;
}

/* ---- named network namespaces ---- */

static int compare_netns(const void *a, const void *b)
{
    return strcmp(((const struct host_netns *)a)->name, ((const struct host_netns *)b)->name);
}

/* Set the kind of one entry from lstat and statfs. Returns 0, 1 when the file vanished, -1 on no memory. */
static int classify_netns(struct host_inventory *inv, struct host_netns *ns, dev_t *nsfs_dev, int *have_dev)
{
    struct statfs fs;
    struct stat st;

    if (lstat(ns->path, &st) != 0) {
        if (errno == ENOENT)
            return 1;
        ns->kind = NETNS_OTHER;
        return host_inv_fail(inv, HOST_SRC_NETNS, "cannot stat %s: %s", ns->path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        ns->kind = NETNS_OTHER;
        return 0;
    }
    if (statfs(ns->path, &fs) != 0) {
        if (errno == ENOENT)
            return 1;
        ns->kind = NETNS_OTHER;
        return host_inv_fail(inv, HOST_SRC_NETNS, "cannot statfs %s: %s", ns->path, strerror(errno));
    }
    if ((unsigned long)fs.f_type == (unsigned long)NSFS_MAGIC) {
        ns->kind = NETNS_MOUNTED;
        ns->inode = (unsigned long long)st.st_ino;
        *nsfs_dev = st.st_dev;
        *have_dev = 1;
    } else {
        ns->kind = NETNS_STALE_FILE;
    }
    return 0;
}

static int scan_netns(const struct host_paths *paths, struct host_inventory *inv, dev_t *nsfs_dev, int *have_dev)
{
    struct dirent *ent;
    DIR *dir;
    int rc = 0;

    if (paths->netns_dir == NULL)
        return host_inv_fail(inv, HOST_SRC_NETNS, "no namespace directory is configured");
    dir = opendir(paths->netns_dir);
    if (dir == NULL) {
        if (errno == ENOENT)
            return 0;
        return host_inv_fail(inv, HOST_SRC_NETNS, "cannot open the namespace directory %s: %s",
                             paths->netns_dir, strerror(errno));
    }
    for (;;) {
        struct host_netns *ns;
        struct host_netns *grown;
        int status;

        errno = 0;
        ent = readdir(dir);
        if (ent == NULL) {
            if (errno != 0)
                rc = host_inv_fail(inv, HOST_SRC_NETNS, "cannot list %s: %s", paths->netns_dir, strerror(errno));
            break;
        }
        if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
            continue;
        grown = host_inv_grow(inv->netns, inv->n_netns, sizeof(*inv->netns));
        if (grown == NULL) {
            rc = -1;
            break;
        }
        inv->netns = grown;
        ns = &inv->netns[inv->n_netns];
        memset(ns, 0, sizeof(*ns));
        ns->name = strdup(ent->d_name);
        ns->path = join_path(paths->netns_dir, ent->d_name);
        if (ns->name == NULL || ns->path == NULL) {
            free(ns->name);
            free(ns->path);
            rc = -1;
            break;
        }
        if (host_inv_is_uuid(ns->name))
            memcpy(ns->alloc_id, ns->name, HOST_ID_LEN + 1);
        status = classify_netns(inv, ns, nsfs_dev, have_dev);
        if (status == 1) {
            free(ns->name);
            free(ns->path);
            continue;
        }
        inv->n_netns++;
        if (status < 0) {
            rc = -1;
            break;
        }
    }
    closedir(dir);
    if (inv->n_netns > 1)
        qsort(inv->netns, inv->n_netns, sizeof(*inv->netns), compare_netns);
    return rc;
}

/* ---- processes that hold a namespace ---- */

struct inode_slot {
    unsigned long long inode;
    size_t netns;           /* index into inv->netns */
};

static int compare_slots(const void *a, const void *b)
{
    const struct inode_slot *x = a, *y = b;

    return x->inode < y->inode ? -1 : x->inode > y->inode;
}

static int compare_pids(const void *a, const void *b)
{
    pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;

    return x < y ? -1 : x > y;
}

/* First slot whose inode is >= inode. */
static size_t lower_bound(const struct inode_slot *slots, size_t n, unsigned long long inode)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (slots[mid].inode < inode)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int add_holder(struct host_netns *ns, pid_t pid)
{
    pid_t *grown = host_inv_grow(ns->holders, ns->n_holders, sizeof(*ns->holders));

    if (grown == NULL)
        return -1;
    ns->holders = grown;
    ns->holders[ns->n_holders++] = pid;
    return 0;
}

static int parse_pid(const char *name, pid_t *pid)
{
    long value = 0;

    if (name[0] == '\0')
        return 0;
    for (const char *p = name; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || value > 100000000)
            return 0;
        value = value * 10 + (*p - '0');
    }
    *pid = (pid_t)value;
    return value > 0;
}

/* A process whose ns/net link could be read. */
struct seen_process {
    unsigned long long ns_inode;
    unsigned long long net_dev_inode;   /* filled for one process per namespace, when needed */
    pid_t pid;
};

static int compare_seen(const void *a, const void *b)
{
    const struct seen_process *x = a, *y = b;

    if (x->ns_inode != y->ns_inode)
        return x->ns_inode < y->ns_inode ? -1 : 1;
    return x->pid < y->pid ? -1 : x->pid > y->pid;
}

static int compare_seen_net_dev(const void *a, const void *b)
{
    const struct seen_process *x = a, *y = b;

    return x->net_dev_inode < y->net_dev_inode ? -1 : x->net_dev_inode > y->net_dev_inode;
}

static int net_dev_inode(const char *proc_dir, pid_t pid, unsigned long long *inode)
{
    char path[4096];
    struct stat st;

    snprintf(path, sizeof(path), "%s/%d/net/dev", proc_dir, (int)pid);
    if (stat(path, &st) != 0)
        return -1;
    *inode = (unsigned long long)st.st_ino;
    return 0;
}

static int add_holder_by_inode(struct host_inventory *inv, const struct inode_slot *slots, size_t n_slots,
                               unsigned long long inode, pid_t pid)
{
    for (size_t at = lower_bound(slots, n_slots, inode); at < n_slots && slots[at].inode == inode; at++) {
        if (add_holder(&inv->netns[slots[at].netns], pid) != 0)
            return -1;
    }
    return 0;
}

/*
 * Reading /proc/<pid>/ns/net needs ptrace access, which even root lacks for
 * a process that has capabilities root does not have (a container
 * supervisor, for example). /proc/<pid>/net/dev needs no such access and has
 * one inode per network namespace, so each such process is placed in the
 * namespace of a readable process with the same net/dev inode. Returns the
 * number of processes that stay unplaced, or -1 on no memory.
 */
static long place_closed_processes(const struct host_paths *paths, struct host_inventory *inv,
                                   const struct inode_slot *slots, size_t n_slots, struct seen_process *seen,
                                   size_t n_seen, const pid_t *closed, size_t n_closed)
{
    size_t n_known = 0;
    long unplaced = 0;

    /* One representative per namespace, with its net/dev inode. */
    qsort(seen, n_seen, sizeof(*seen), compare_seen);
    for (size_t i = 0; i < n_seen; i++) {
        if (n_known > 0 && seen[n_known - 1].ns_inode == seen[i].ns_inode)
            continue;
        if (net_dev_inode(paths->proc_dir, seen[i].pid, &seen[i].net_dev_inode) == 0)
            seen[n_known++] = seen[i];
    }
    qsort(seen, n_known, sizeof(*seen), compare_seen_net_dev);
    for (size_t i = 0; i < n_closed; i++) {
        struct seen_process key = {0};
        const struct seen_process *hit;

        if (net_dev_inode(paths->proc_dir, closed[i], &key.net_dev_inode) != 0) {
            if (errno != ENOENT && errno != ESRCH)
                unplaced++;
            continue;
        }
        hit = bsearch(&key, seen, n_known, sizeof(*seen), compare_seen_net_dev);
        if (hit == NULL) {
            unplaced++;
            continue;
        }
        if (add_holder_by_inode(inv, slots, n_slots, hit->ns_inode, closed[i]) != 0)
            return -1;
    }
    return unplaced;
}

/*
 * Read /proc/<pid>/ns/net of every process once and match its nsfs inode
 * against the mounted namespaces. Several names may bind the same namespace,
 * so a process is added to every entry with that inode.
 * NOTE: only thread-group leaders are listed under /proc; a thread that
 * entered a namespace with setns() while its leader did not is not seen.
 */
static int scan_holders(const struct host_paths *paths, struct host_inventory *inv, dev_t nsfs_dev)
{
    struct seen_process *seen = NULL;
    struct inode_slot *slots = NULL;
    size_t n_slots = 0, n_seen = 0, n_closed = 0;
    pid_t *closed = NULL;
    struct dirent *ent;
    DIR *dir = NULL;
    long unplaced;
    int rc = 0;

    for (size_t i = 0; i < inv->n_netns; i++) {
        if (inv->netns[i].kind == NETNS_MOUNTED)
            n_slots++;
    }
    if (n_slots == 0)
        return 0;
    slots = malloc(n_slots * sizeof(*slots));
    if (slots == NULL)
        return -1;
    n_slots = 0;
    for (size_t i = 0; i < inv->n_netns; i++) {
        if (inv->netns[i].kind == NETNS_MOUNTED)
            slots[n_slots++] = (struct inode_slot){.inode = inv->netns[i].inode, .netns = i};
    }
    qsort(slots, n_slots, sizeof(*slots), compare_slots);

    if (paths->proc_dir == NULL) {
        rc = host_inv_fail(inv, HOST_SRC_PROC, "no proc directory is configured");
        goto out;
    }
    dir = opendir(paths->proc_dir);
    if (dir == NULL) {
        rc = host_inv_fail(inv, HOST_SRC_PROC, "cannot open %s to find the processes in each namespace: %s",
                           paths->proc_dir, strerror(errno));
        goto out;
    }
    for (;;) {
        char path[4096];
        struct stat st;
        void *grown;
        pid_t pid;

        errno = 0;
        ent = readdir(dir);
        if (ent == NULL) {
            if (errno != 0)
                rc = host_inv_fail(inv, HOST_SRC_PROC, "cannot list %s: %s", paths->proc_dir, strerror(errno));
            break;
        }
        if (!parse_pid(ent->d_name, &pid))
            continue;
        if ((size_t)snprintf(path, sizeof(path), "%s/%s/ns/net", paths->proc_dir, ent->d_name) >= sizeof(path))
            continue;
        if (stat(path, &st) != 0) {
            /* ENOENT and ESRCH: the process exited while we listed the directory. */
            if (errno == ENOENT || errno == ESRCH)
                continue;
            if (errno != EACCES && errno != EPERM) {
                if (host_inv_fail(inv, HOST_SRC_PROC, "cannot stat %s: %s", path, strerror(errno)) != 0)
                    goto no_memory;
                continue;
            }
            grown = host_inv_grow(closed, n_closed, sizeof(*closed));
            if (grown == NULL)
                goto no_memory;
            closed = grown;
            closed[n_closed++] = pid;
            continue;
        }
        if (st.st_dev != nsfs_dev)
            continue;
        grown = host_inv_grow(seen, n_seen, sizeof(*seen));
        if (grown == NULL)
            goto no_memory;
        seen = grown;
        seen[n_seen++] = (struct seen_process){.ns_inode = (unsigned long long)st.st_ino, .pid = pid};
        if (add_holder_by_inode(inv, slots, n_slots, (unsigned long long)st.st_ino, pid) != 0)
            goto no_memory;
    }
    if (n_closed > 0) {
        unplaced = place_closed_processes(paths, inv, slots, n_slots, seen, n_seen, closed, n_closed);
        if (unplaced < 0)
            goto no_memory;
        if (unplaced > 0 &&
            host_inv_fail(inv, HOST_SRC_PROC,
                          "permission denied reading the network namespace of %ld processes under %s; "
                          "run as root with all capabilities to see every process that holds a namespace",
                          unplaced, paths->proc_dir) != 0)
            goto no_memory;
    }
    for (size_t i = 0; i < inv->n_netns; i++) {
        if (inv->netns[i].n_holders > 1)
            qsort(inv->netns[i].holders, inv->netns[i].n_holders, sizeof(pid_t), compare_pids);
    }
    goto out;

no_memory:
    rc = -1;
out:
    if (dir != NULL)
        closedir(dir);
    free(closed);
    free(seen);
    free(slots);
    return rc;
}

/* ---- host-local reservations ---- */

static int compare_reservations(const void *a, const void *b)
{
    return strcmp(((const struct host_reservation *)a)->path, ((const struct host_reservation *)b)->path);
}

/* host-local's own files next to the reservations. */
static int is_ipam_state_file(const char *name)
{
    return strcmp(name, "lock") == 0 || strncmp(name, "last_reserved_ip.", 17) == 0;
}

/* Split "<id>\r\n<ifname>..." into the reservation's fields. Returns -1 on no memory. */
static int parse_reservation(struct host_reservation *res, char *text)
{
    char *first = text;
    char *second = NULL;
    char *newline = strchr(text, '\n');
    size_t len;

    if (newline != NULL) {
        *newline = '\0';
        second = newline + 1;
        newline = strchr(second, '\n');
        if (newline != NULL)
            *newline = '\0';
    }
    len = strlen(first);
    if (len > 0 && first[len - 1] == '\r')
        first[len - 1] = '\0';
    if (host_inv_is_uuid(first))
        memcpy(res->alloc_id, first, HOST_ID_LEN + 1);
    if (second != NULL) {
        len = strlen(second);
        if (len > 0 && second[len - 1] == '\r')
            second[len - 1] = '\0';
        if (host_inv_is_ifname(second)) {
            res->ifname = strdup(second);
            if (res->ifname == NULL)
                return -1;
        }
    }
    return 0;
}

static int scan_reservation_dir(const struct host_paths *paths, const char *root, int legacy,
                                struct host_inventory *inv)
{
    struct dirent *ent;
    char *dirpath;
    DIR *dir;
    int rc = 0;

    if (root == NULL)
        return 0;
    dirpath = join_path(root, paths->network_name);
    if (dirpath == NULL)
        return -1;
    dir = opendir(dirpath);
    if (dir == NULL) {
        if (errno != ENOENT)
            rc = host_inv_fail(inv, HOST_SRC_RESERVATIONS, "cannot open the reservation directory %s: %s",
                               dirpath, strerror(errno));
        free(dirpath);
        return rc;
    }
    for (;;) {
        struct host_reservation *grown, *res;
        char errbuf[512] = "";
        enum read_status status;
        char *text = NULL;
        size_t len;
        char *path;

        errno = 0;
        ent = readdir(dir);
        if (ent == NULL) {
            if (errno != 0)
                rc = host_inv_fail(inv, HOST_SRC_RESERVATIONS, "cannot list %s: %s", dirpath, strerror(errno));
            break;
        }
        if (ent->d_name[0] == '.' || is_ipam_state_file(ent->d_name) ||
            !host_inv_ip_parse(ent->d_name, NULL, NULL))
            continue;
        path = join_path(dirpath, ent->d_name);
        if (path == NULL) {
            rc = -1;
            break;
        }
        status = read_small_file(path, RESERVATION_MAX_BYTES, &text, &len, errbuf, sizeof(errbuf));
        if (status != READ_OK) {
            free(path);
            if (status == READ_NO_MEMORY) {
                rc = -1;
                break;
            }
            if (status == READ_FAILED && host_inv_fail(inv, HOST_SRC_RESERVATIONS, "%s", errbuf) != 0) {
                rc = -1;
                break;
            }
            continue;
        }
        grown = host_inv_grow(inv->reservations, inv->n_reservations, sizeof(*inv->reservations));
        if (grown == NULL) {
            free(path);
            free(text);
            rc = -1;
            break;
        }
        inv->reservations = grown;
        res = &inv->reservations[inv->n_reservations++];
        memset(res, 0, sizeof(*res));
        res->path = path;
        res->legacy = legacy;
        res->ip = strdup(ent->d_name);
        rc = res->ip == NULL ? -1 : parse_reservation(res, text);
        free(text);
        if (rc != 0)
            break;
    }
    closedir(dir);
    free(dirpath);
    return rc;
}

/* ---- libcni cache files ---- */

static int compare_caches(const void *a, const void *b)
{
    return strcmp(((const struct host_cni_cache *)a)->path, ((const struct host_cni_cache *)b)->path);
}

/* Record why a cache cannot be used. Only the first reason is kept. Returns -1 on no memory. */
static int cache_error(struct host_cni_cache *cache, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int cache_error(struct host_cni_cache *cache, const char *fmt, ...)
{
    va_list ap;
    int len;

    if (cache->error != NULL)
        return 0;
    va_start(ap, fmt);
    len = vasprintf(&cache->error, fmt, ap);
    va_end(ap);
    if (len < 0) {
        cache->error = NULL;
        return -1;
    }
    return 0;
}

/* An absolute path without "." or ".." components or control characters. */
static int clean_absolute_path(const char *path)
{
    const char *p = path;

    if (path[0] != '/' || strlen(path) >= 4096)
        return 0;
    for (const char *c = path; *c != '\0'; c++) {
        if ((unsigned char)*c < ' ' || *c == 0x7f)
            return 0;
    }
    while (*p != '\0') {
        size_t len;

        while (*p == '/')
            p++;
        len = strcspn(p, "/");
        if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        p += len;
    }
    return 1;
}

static int push_string(char ***array, size_t *n, const char *value)
{
    char **grown = host_inv_grow(*array, *n, sizeof(**array));
    char *copy;

    if (grown == NULL)
        return -1;
    *array = grown;
    copy = strdup(value);
    if (copy == NULL)
        return -1;
    (*array)[(*n)++] = copy;
    return 0;
}

static int cache_ips(struct host_cni_cache *cache, const cJSON *result)
{
    const cJSON *ips = cJSON_GetObjectItemCaseSensitive(result, "ips");
    const cJSON *entry;

    cJSON_ArrayForEach(entry, ips) {
        const cJSON *address = cJSON_GetObjectItemCaseSensitive(entry, "address");
        char buf[64];
        size_t len;

        if (!cJSON_IsString(address))
            continue;
        len = strcspn(address->valuestring, "/");
        if (len >= sizeof(buf))
            continue;
        memcpy(buf, address->valuestring, len);
        buf[len] = '\0';
        if (host_inv_ip_parse(buf, NULL, NULL) && push_string(&cache->ips, &cache->n_ips, buf) != 0)
            return -1;
    }
    return 0;
}

/*
 * The bridge plugin's result lists the bridge, the host veth and the
 * container's eth0, and only eth0 has a sandbox. The bridge is shared, so it
 * is never taken for an allocation's veth.
 */
static int cache_host_veths(struct host_cni_cache *cache, const cJSON *result, const char *bridge)
{
    const cJSON *interfaces = cJSON_GetObjectItemCaseSensitive(result, "interfaces");
    const cJSON *entry;

    cJSON_ArrayForEach(entry, interfaces) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(entry, "name");
        const cJSON *sandbox = cJSON_GetObjectItemCaseSensitive(entry, "sandbox");

        if (!cJSON_IsString(name) || !host_inv_is_ifname(name->valuestring))
            continue;
        if (sandbox != NULL && !(cJSON_IsString(sandbox) && sandbox->valuestring[0] == '\0'))
            continue;
        if (bridge != NULL && strcmp(name->valuestring, bridge) == 0)
            continue;
        if (push_string(&cache->host_veths, &cache->n_host_veths, name->valuestring) != 0)
            return -1;
    }
    return 0;
}

static int port_number(const cJSON *item)
{
    if (!cJSON_IsNumber(item) || item->valuedouble < 1 || item->valuedouble > 65535 ||
        item->valuedouble != (double)(int)item->valuedouble)
        return 0;
    return (int)item->valuedouble;
}

/* Copy a protocol name such as "TCP" as "tcp". Returns 0 unless it is 1-7 letters. */
static int lowercase_protocol(const char *text, char out[8])
{
    size_t len = strlen(text);

    if (len == 0 || len > 7)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];

        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c < 'a' || c > 'z')
            return 0;
        out[i] = c;
    }
    out[len] = '\0';
    return 1;
}

/*
 * go-cni's PortMapping has no json tags, so libcni caches "HostPort" and so
 * on. The portmap plugin decodes keys case-insensitively, and so does
 * cJSON_GetObjectItem. A mapping with an invalid field is skipped.
 */
static int cache_ports(struct host_cni_cache *cache, const cJSON *root)
{
    const cJSON *capability = cJSON_GetObjectItemCaseSensitive(root, "capabilityArgs");
    const cJSON *mappings = cJSON_GetObjectItem(capability, "portMappings");
    const cJSON *entry;

    cJSON_ArrayForEach(entry, mappings) {
        const cJSON *protocol = cJSON_GetObjectItem(entry, "protocol");
        const cJSON *host_ip = cJSON_GetObjectItem(entry, "hostIP");
        struct host_port_mapping map = {0};
        struct host_port_mapping *grown;

        map.host_port = port_number(cJSON_GetObjectItem(entry, "hostPort"));
        map.container_port = port_number(cJSON_GetObjectItem(entry, "containerPort"));
        if (map.host_port == 0 || map.container_port == 0)
            continue;
        /* portmap treats a missing protocol as tcp. */
        if (protocol == NULL || (cJSON_IsString(protocol) && protocol->valuestring[0] == '\0'))
            strcpy(map.protocol, "tcp");
        else if (!cJSON_IsString(protocol) || !lowercase_protocol(protocol->valuestring, map.protocol))
            continue;
        if (cJSON_IsString(host_ip) && host_ip->valuestring[0] != '\0') {
            if (!host_inv_ip_parse(host_ip->valuestring, NULL, NULL) ||
                strlen(host_ip->valuestring) >= sizeof(map.host_ip))
                continue;
            strcpy(map.host_ip, host_ip->valuestring);
        } else if (host_ip != NULL && !cJSON_IsString(host_ip) && !cJSON_IsNull(host_ip)) {
            continue;
        }
        grown = host_inv_grow(cache->ports, cache->n_ports, sizeof(*cache->ports));
        if (grown == NULL)
            return -1;
        cache->ports = grown;
        cache->ports[cache->n_ports++] = map;
    }
    return 0;
}

/*
 * Fill a cache entry from the file's JSON. The file name already gave the
 * allocation ID and interface. A body that contradicts them, or that is not
 * a libcni cache of this network, gets an error so that no cleanup runs
 * DEL from it. The fields that did parse are kept as evidence.
 */
static int parse_cache(struct host_cni_cache *cache, const char *text, size_t len, const struct host_paths *paths)
{
    const cJSON *kind, *container, *network, *ifname, *netns, *result;
    cJSON *root = cJSON_ParseWithLength(text, len);
    int rc = 0;

    if (root == NULL || !cJSON_IsObject(root)) {
        rc = cache_error(cache, "%s is not a JSON object", cache->path);
        goto out;
    }
    kind = cJSON_GetObjectItemCaseSensitive(root, "kind");
    container = cJSON_GetObjectItemCaseSensitive(root, "containerId");
    network = cJSON_GetObjectItemCaseSensitive(root, "networkName");
    ifname = cJSON_GetObjectItemCaseSensitive(root, "ifName");
    netns = cJSON_GetObjectItemCaseSensitive(root, "netns");
    result = cJSON_GetObjectItemCaseSensitive(root, "result");

    if (!cJSON_IsString(kind) || strcmp(kind->valuestring, "cniCacheV1") != 0)
        rc = cache_error(cache, "%s has no \"kind\": \"cniCacheV1\"", cache->path);
    if (rc == 0 && (!cJSON_IsString(container) || strcmp(container->valuestring, cache->alloc_id) != 0))
        rc = cache_error(cache, "%s: containerId does not match the allocation ID in the file name", cache->path);
    if (cJSON_IsString(network)) {
        cache->network = strdup(network->valuestring);
        if (cache->network == NULL)
            rc = -1;
    }
    if (rc == 0 && (cache->network == NULL || strcmp(cache->network, paths->network_name) != 0))
        rc = cache_error(cache, "%s: networkName is not \"%s\"", cache->path, paths->network_name);
    if (rc == 0 && (!cJSON_IsString(ifname) || strcmp(ifname->valuestring, cache->ifname) != 0))
        rc = cache_error(cache, "%s: ifName does not match the interface in the file name", cache->path);
    if (rc == 0 && netns != NULL && !cJSON_IsNull(netns)) {
        if (cJSON_IsString(netns) && clean_absolute_path(netns->valuestring)) {
            cache->netns_path = strdup(netns->valuestring);
            if (cache->netns_path == NULL)
                rc = -1;
        } else {
            rc = cache_error(cache, "%s: netns is not a clean absolute path", cache->path);
        }
    }
    if (rc == 0 && !cJSON_IsObject(result))
        rc = cache_error(cache, "%s has no result object", cache->path);
    if (rc == 0 && cJSON_IsObject(result))
        rc = cache_ips(cache, result);
    if (rc == 0 && cJSON_IsObject(result))
        rc = cache_host_veths(cache, result, paths->bridge_name);
    if (rc == 0)
        rc = cache_ports(cache, root);
out:
    cJSON_Delete(root);
    return rc;
}

/*
 * libcni names a cache <network>-<containerID>-<ifname>. The network may
 * itself contain '-', so the rest after "<network>-" must be exactly a UUID,
 * a '-' and a valid interface name. Other networks' caches then do not match.
 */
static int cache_name_match(const char *name, const char *network, char alloc_id[HOST_ID_LEN + 1],
                            const char **ifname)
{
    size_t net_len = strlen(network);
    const char *rest;

    if (strncmp(name, network, net_len) != 0 || name[net_len] != '-')
        return 0;
    rest = name + net_len + 1;
    if (strlen(rest) < HOST_ID_LEN + 2 || rest[HOST_ID_LEN] != '-')
        return 0;
    memcpy(alloc_id, rest, HOST_ID_LEN);
    alloc_id[HOST_ID_LEN] = '\0';
    *ifname = rest + HOST_ID_LEN + 1;
    return host_inv_is_uuid(alloc_id) && host_inv_is_ifname(*ifname);
}

static int scan_caches(const struct host_paths *paths, struct host_inventory *inv)
{
    struct dirent *ent;
    DIR *dir;
    int rc = 0;

    if (paths->cni_cache_dir == NULL)
        return host_inv_fail(inv, HOST_SRC_CNI_CACHE, "no CNI cache directory is configured");
    dir = opendir(paths->cni_cache_dir);
    if (dir == NULL) {
        if (errno == ENOENT)
            return 0;
        return host_inv_fail(inv, HOST_SRC_CNI_CACHE, "cannot open the CNI cache directory %s: %s",
                             paths->cni_cache_dir, strerror(errno));
    }
    for (;;) {
        char alloc_id[HOST_ID_LEN + 1];
        struct host_cni_cache *grown, *cache;
        char errbuf[512] = "";
        enum read_status status;
        const char *ifname;
        char *text = NULL;
        size_t len = 0;
        char *path;

        errno = 0;
        ent = readdir(dir);
        if (ent == NULL) {
            if (errno != 0)
                rc = host_inv_fail(inv, HOST_SRC_CNI_CACHE, "cannot list %s: %s", paths->cni_cache_dir,
                                   strerror(errno));
            break;
        }
        if (!cache_name_match(ent->d_name, paths->network_name, alloc_id, &ifname))
            continue;
        path = join_path(paths->cni_cache_dir, ent->d_name);
        if (path == NULL) {
            rc = -1;
            break;
        }
        status = read_small_file(path, CACHE_MAX_BYTES, &text, &len, errbuf, sizeof(errbuf));
        if (status == READ_GONE || status == READ_NOT_REGULAR || status == READ_NO_MEMORY) {
            free(path);
            if (status == READ_NO_MEMORY) {
                rc = -1;
                break;
            }
            continue;
        }
        grown = host_inv_grow(inv->caches, inv->n_caches, sizeof(*inv->caches));
        if (grown == NULL) {
            free(path);
            free(text);
            rc = -1;
            break;
        }
        inv->caches = grown;
        cache = &inv->caches[inv->n_caches++];
        memset(cache, 0, sizeof(*cache));
        cache->path = path;
        memcpy(cache->alloc_id, alloc_id, sizeof(alloc_id));
        cache->ifname = strdup(ifname);
        if (cache->ifname == NULL)
            rc = -1;
        else if (status == READ_FAILED)
            rc = cache_error(cache, "%s", errbuf) != 0 ? -1 : host_inv_fail(inv, HOST_SRC_CNI_CACHE, "%s", errbuf);
        else
            rc = parse_cache(cache, text, len, paths);
        free(text);
        if (rc != 0)
            break;
    }
    closedir(dir);
    if (inv->n_caches > 1)
        qsort(inv->caches, inv->n_caches, sizeof(*inv->caches), compare_caches);
    return rc;
}

/* ---- the inventory ---- */

int host_inventory_read(const struct host_paths *paths, struct host_inventory *inv)
{
    dev_t nsfs_dev = 0;
    int have_dev = 0;
    int network_ok;

    memset(inv, 0, sizeof(*inv));
    for (int i = 0; i < HOST_SRC_COUNT; i++) {
        inv->sources[i].name = source_names[i];
        inv->sources[i].ok = 1;
    }

    if (scan_netns(paths, inv, &nsfs_dev, &have_dev) != 0)
        goto no_memory;
    if (have_dev && scan_holders(paths, inv, nsfs_dev) != 0)
        goto no_memory;

    network_ok = network_name_valid(paths->network_name);
    if (!network_ok) {
        static const enum host_source needs_network[] = {HOST_SRC_RESERVATIONS, HOST_SRC_CNI_CACHE,
                                                         HOST_SRC_IPTABLES_NAT, HOST_SRC_IPTABLES_FILTER};

        for (size_t i = 0; i < sizeof(needs_network) / sizeof(needs_network[0]); i++) {
            if (host_inv_fail(inv, needs_network[i],
                              "network name \"%s\" is invalid (expected letters, digits, '.', '_' or '-'); "
                              "fix the configured CNI network name",
                              paths->network_name != NULL ? paths->network_name : "(none)") != 0)
                goto no_memory;
        }
    } else {
        if (scan_reservation_dir(paths, paths->ipam_dir, 0, inv) != 0 ||
            scan_reservation_dir(paths, paths->ipam_dir_legacy, 1, inv) != 0)
            goto no_memory;
        if (inv->n_reservations > 1)
            qsort(inv->reservations, inv->n_reservations, sizeof(*inv->reservations), compare_reservations);
        if (scan_caches(paths, inv) != 0)
            goto no_memory;
        if (host_inv_read_iptables(paths, inv) != 0)
            goto no_memory;
    }
    if (host_inv_read_links(paths, inv) != 0)
        goto no_memory;
    return 0;

no_memory:
    host_inventory_free(inv);
    return -1;
}

static void free_string_array(char **array, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(array[i]);
    free(array);
}

void host_inventory_free(struct host_inventory *inv)
{
    if (inv == NULL)
        return;
    for (size_t i = 0; i < inv->n_netns; i++) {
        free(inv->netns[i].name);
        free(inv->netns[i].path);
        free(inv->netns[i].holders);
    }
    free(inv->netns);
    for (size_t i = 0; i < inv->n_reservations; i++) {
        free(inv->reservations[i].path);
        free(inv->reservations[i].ip);
        free(inv->reservations[i].ifname);
    }
    free(inv->reservations);
    for (size_t i = 0; i < inv->n_caches; i++) {
        struct host_cni_cache *cache = &inv->caches[i];

        free(cache->path);
        free(cache->ifname);
        free(cache->network);
        free(cache->netns_path);
        free_string_array(cache->ips, cache->n_ips);
        free_string_array(cache->host_veths, cache->n_host_veths);
        free(cache->ports);
        free(cache->error);
    }
    free(inv->caches);
    for (size_t i = 0; i < inv->n_rules; i++) {
        struct host_ipt_rule *rule = &inv->rules[i];

        free(rule->table);
        free(rule->chain);
        free(rule->line);
        free_string_array(rule->args, rule->n_args);
        free(rule->target);
        free(rule->ip);
        free(rule->protocol);
        free(rule->ports);
        free(rule->dnat_to);
    }
    free(inv->rules);
    for (size_t i = 0; i < inv->n_chains; i++) {
        free(inv->chains[i].table);
        free(inv->chains[i].name);
    }
    free(inv->chains);
    for (size_t i = 0; i < inv->n_veths; i++) {
        free(inv->veths[i].name);
        free(inv->veths[i].peer_netns);
    }
    free(inv->veths);
    for (size_t i = 0; i < inv->n_conflicts; i++) {
        struct host_port_conflict *conflict = &inv->conflicts[i];

        free(conflict->effective_chain);
        free(conflict->effective_dnat);
        for (size_t j = 0; j < conflict->n_shadowed; j++) {
            free(conflict->shadowed[j].chain);
            free(conflict->shadowed[j].dnat_to);
        }
        free(conflict->shadowed);
    }
    free(inv->conflicts);
    for (int i = 0; i < HOST_SRC_COUNT; i++)
        free(inv->sources[i].error);
    memset(inv, 0, sizeof(*inv));
}

int host_inventory_complete(const struct host_inventory *inv)
{
    for (int i = 0; i < HOST_SRC_COUNT; i++) {
        if (!inv->sources[i].ok)
            return 0;
    }
    return 1;
}

/* ---- allocation IDs ---- */

typedef char alloc_id_t[HOST_ID_LEN + 1];

struct id_list {
    alloc_id_t *ids;
    size_t n;
};

static int add_id(struct id_list *list, const char *id)
{
    alloc_id_t *grown;

    if (id == NULL || id[0] == '\0')
        return 0;
    grown = host_inv_grow(list->ids, list->n, sizeof(*list->ids));
    if (grown == NULL)
        return -1;
    list->ids = grown;
    memcpy(list->ids[list->n++], id, HOST_ID_LEN + 1);
    return 0;
}

static int compare_ids(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

int host_inventory_alloc_ids(const struct host_inventory *inv, char (**ids)[HOST_ID_LEN + 1], size_t *n)
{
    struct id_list list = {0};
    size_t kept = 0;
    int rc = 0;

    *ids = NULL;
    *n = 0;
    for (size_t i = 0; rc == 0 && i < inv->n_netns; i++)
        rc = add_id(&list, inv->netns[i].alloc_id);
    for (size_t i = 0; rc == 0 && i < inv->n_reservations; i++)
        rc = add_id(&list, inv->reservations[i].alloc_id);
    for (size_t i = 0; rc == 0 && i < inv->n_caches; i++)
        rc = add_id(&list, inv->caches[i].alloc_id);
    for (size_t i = 0; rc == 0 && i < inv->n_rules; i++)
        rc = add_id(&list, inv->rules[i].alloc_id);
    for (size_t i = 0; rc == 0 && i < inv->n_chains; i++)
        rc = add_id(&list, inv->chains[i].alloc_id);
    for (size_t i = 0; rc == 0 && i < inv->n_veths; i++)
        rc = add_id(&list, inv->veths[i].alloc_id);
    if (rc != 0) {
        free(list.ids);
        return -1;
    }
    if (list.n > 1)
        qsort(list.ids, list.n, sizeof(*list.ids), compare_ids);
    for (size_t i = 0; i < list.n; i++) {
        if (kept > 0 && strcmp(list.ids[kept - 1], list.ids[i]) == 0)
            continue;
        memmove(list.ids[kept++], list.ids[i], HOST_ID_LEN + 1);
    }
    if (kept == 0) {
        free(list.ids);
        list.ids = NULL;
    }
    *ids = list.ids;
    *n = kept;
    return 0;
}

/* ---- evidence as JSON ---- */

/*
 * Each helper returns 0 or -1. Callers OR the results together and check
 * once, because a failed cJSON call here only ever means no memory.
 */
static int put_string(cJSON *object, const char *key, const char *value)
{
    cJSON *item = value != NULL ? cJSON_CreateString(value) : cJSON_CreateNull();

    if (item == NULL)
        return -1;
    if (!cJSON_AddItemToObject(object, key, item)) {
        cJSON_Delete(item);
        return -1;
    }
    return 0;
}

static int put_number(cJSON *object, const char *key, double value)
{
    return cJSON_AddNumberToObject(object, key, value) != NULL ? 0 : -1;
}

static int put_bool(cJSON *object, const char *key, int value)
{
    return cJSON_AddBoolToObject(object, key, value != 0) != NULL ? 0 : -1;
}

static int put_strings(cJSON *object, const char *key, char **values, size_t n)
{
    cJSON *array = cJSON_AddArrayToObject(object, key);

    if (array == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        cJSON *item = cJSON_CreateString(values[i]);

        if (item == NULL || !cJSON_AddItemToArray(array, item)) {
            cJSON_Delete(item);
            return -1;
        }
    }
    return 0;
}

/* Append a new object to array. Returns NULL on no memory. */
static cJSON *new_entry(cJSON *array)
{
    cJSON *entry = cJSON_CreateObject();

    if (entry != NULL && !cJSON_AddItemToArray(array, entry)) {
        cJSON_Delete(entry);
        return NULL;
    }
    return entry;
}

/* An unattributed artefact has alloc_id "", which no request matches. */
static int owned_by(const char *artefact_alloc, const char *alloc_id)
{
    return alloc_id != NULL && alloc_id[0] != '\0' && strcmp(artefact_alloc, alloc_id) == 0;
}

static const char *netns_kind_name(enum host_netns_kind kind)
{
    switch (kind) {
    case NETNS_MOUNTED:
        return "mounted";
    case NETNS_STALE_FILE:
        return "stale_file";
    default:
        return "other";
    }
}

static int json_netns(cJSON *array, const struct host_netns *ns)
{
    cJSON *entry = new_entry(array);
    cJSON *holders;
    int rc;

    if (entry == NULL)
        return -1;
    rc = put_string(entry, "path", ns->path) | put_string(entry, "name", ns->name) |
         put_string(entry, "kind", netns_kind_name(ns->kind)) | put_number(entry, "inode", (double)ns->inode);
    holders = cJSON_AddArrayToObject(entry, "holders");
    if (holders == NULL)
        return -1;
    for (size_t i = 0; i < ns->n_holders; i++) {
        cJSON *pid = cJSON_CreateNumber(ns->holders[i]);

        if (pid == NULL || !cJSON_AddItemToArray(holders, pid)) {
            cJSON_Delete(pid);
            return -1;
        }
    }
    return rc;
}

static int json_reservation(cJSON *array, const struct host_reservation *res)
{
    cJSON *entry = new_entry(array);

    if (entry == NULL)
        return -1;
    return put_string(entry, "path", res->path) | put_string(entry, "ip", res->ip) |
           put_string(entry, "ifname", res->ifname) | put_bool(entry, "legacy", res->legacy);
}

static int json_cache(cJSON *array, const struct host_cni_cache *cache)
{
    cJSON *entry = new_entry(array);
    cJSON *ports;
    int rc;

    if (entry == NULL)
        return -1;
    rc = put_string(entry, "path", cache->path) | put_string(entry, "ifname", cache->ifname) |
         put_string(entry, "network", cache->network) | put_string(entry, "netns", cache->netns_path) |
         put_strings(entry, "ips", cache->ips, cache->n_ips) |
         put_strings(entry, "host_veths", cache->host_veths, cache->n_host_veths) |
         put_string(entry, "error", cache->error);
    ports = cJSON_AddArrayToObject(entry, "port_mappings");
    if (ports == NULL)
        return -1;
    for (size_t i = 0; i < cache->n_ports; i++) {
        const struct host_port_mapping *map = &cache->ports[i];
        cJSON *item = new_entry(ports);

        if (item == NULL)
            return -1;
        rc |= put_number(item, "host_port", map->host_port) | put_number(item, "container_port", map->container_port) |
              put_string(item, "protocol", map->protocol) | put_string(item, "host_ip", map->host_ip);
    }
    return rc;
}

static int json_chain(cJSON *array, const struct host_ipt_chain *chain)
{
    cJSON *entry = new_entry(array);

    if (entry == NULL)
        return -1;
    return put_string(entry, "table", chain->table) | put_string(entry, "name", chain->name) |
           put_string(entry, "role", chain->role) | put_bool(entry, "referenced", chain->referenced);
}

static int json_rule(cJSON *array, const struct host_ipt_rule *rule)
{
    cJSON *entry = new_entry(array);

    if (entry == NULL)
        return -1;
    return put_string(entry, "table", rule->table) | put_string(entry, "chain", rule->chain) |
           put_number(entry, "position", rule->position) | put_string(entry, "rule", rule->line) |
           put_string(entry, "target", rule->target) | put_string(entry, "ip", rule->ip);
}

static int json_veth(cJSON *array, const struct host_veth *veth)
{
    cJSON *entry = new_entry(array);

    if (entry == NULL)
        return -1;
    return put_string(entry, "name", veth->name) | put_number(entry, "ifindex", veth->ifindex) |
           put_number(entry, "link_netnsid", veth->link_netnsid) | put_string(entry, "peer_netns", veth->peer_netns);
}

static int json_conflict(cJSON *array, const struct host_port_conflict *conflict, const char *alloc_id)
{
    cJSON *entry = new_entry(array);
    cJSON *shadowed;
    int rc;

    if (entry == NULL)
        return -1;
    rc = put_string(entry, "protocol", conflict->protocol) | put_number(entry, "port", conflict->port) |
         put_string(entry, "role", owned_by(conflict->effective_alloc, alloc_id) ? "effective" : "shadowed") |
         put_string(entry, "effective_alloc", conflict->effective_alloc) |
         put_string(entry, "effective_chain", conflict->effective_chain) |
         put_string(entry, "effective_dnat", conflict->effective_dnat);
    shadowed = cJSON_AddArrayToObject(entry, "shadowed");
    if (shadowed == NULL)
        return -1;
    for (size_t i = 0; i < conflict->n_shadowed; i++) {
        cJSON *item = new_entry(shadowed);

        if (item == NULL)
            return -1;
        rc |= put_string(item, "alloc_id", conflict->shadowed[i].alloc_id) |
              put_string(item, "chain", conflict->shadowed[i].chain) |
              put_string(item, "dnat_to", conflict->shadowed[i].dnat_to);
    }
    return rc;
}

static int conflict_names(const struct host_port_conflict *conflict, const char *alloc_id)
{
    if (owned_by(conflict->effective_alloc, alloc_id))
        return 1;
    for (size_t i = 0; i < conflict->n_shadowed; i++) {
        if (owned_by(conflict->shadowed[i].alloc_id, alloc_id))
            return 1;
    }
    return 0;
}

/*
 * The object has one array per artefact kind, always present (empty when
 * there is none), and "incomplete_sources" naming every part of the host
 * that could not be read, because then an empty array proves nothing.
 */
cJSON *host_inventory_alloc_json(const struct host_inventory *inv, const char *alloc_id)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *netns, *reservations, *caches, *chains, *rules, *veths, *conflicts, *incomplete;
    int rc;

    if (root == NULL)
        return NULL;
    rc = put_string(root, "alloc_id", alloc_id);
    netns = cJSON_AddArrayToObject(root, "netns");
    reservations = cJSON_AddArrayToObject(root, "reservations");
    caches = cJSON_AddArrayToObject(root, "caches");
    chains = cJSON_AddArrayToObject(root, "chains");
    rules = cJSON_AddArrayToObject(root, "rules");
    veths = cJSON_AddArrayToObject(root, "veths");
    conflicts = cJSON_AddArrayToObject(root, "conflicts");
    incomplete = cJSON_AddArrayToObject(root, "incomplete_sources");
    if (rc != 0 || netns == NULL || reservations == NULL || caches == NULL || chains == NULL || rules == NULL ||
        veths == NULL || conflicts == NULL || incomplete == NULL)
        goto no_memory;

    for (size_t i = 0; rc == 0 && i < inv->n_netns; i++) {
        if (owned_by(inv->netns[i].alloc_id, alloc_id))
            rc = json_netns(netns, &inv->netns[i]);
    }
    for (size_t i = 0; rc == 0 && i < inv->n_reservations; i++) {
        if (owned_by(inv->reservations[i].alloc_id, alloc_id))
            rc = json_reservation(reservations, &inv->reservations[i]);
    }
    for (size_t i = 0; rc == 0 && i < inv->n_caches; i++) {
        if (owned_by(inv->caches[i].alloc_id, alloc_id))
            rc = json_cache(caches, &inv->caches[i]);
    }
    for (size_t i = 0; rc == 0 && i < inv->n_chains; i++) {
        if (owned_by(inv->chains[i].alloc_id, alloc_id))
            rc = json_chain(chains, &inv->chains[i]);
    }
    for (size_t i = 0; rc == 0 && i < inv->n_rules; i++) {
        if (owned_by(inv->rules[i].alloc_id, alloc_id))
            rc = json_rule(rules, &inv->rules[i]);
    }
    for (size_t i = 0; rc == 0 && i < inv->n_veths; i++) {
        if (owned_by(inv->veths[i].alloc_id, alloc_id))
            rc = json_veth(veths, &inv->veths[i]);
    }
    for (size_t i = 0; rc == 0 && i < inv->n_conflicts; i++) {
        if (conflict_names(&inv->conflicts[i], alloc_id))
            rc = json_conflict(conflicts, &inv->conflicts[i], alloc_id);
    }
    for (int i = 0; rc == 0 && i < HOST_SRC_COUNT; i++) {
        cJSON *entry;

        if (inv->sources[i].ok)
            continue;
        entry = new_entry(incomplete);
        if (entry == NULL)
            goto no_memory;
        rc = put_string(entry, "source", inv->sources[i].name) | put_string(entry, "error", inv->sources[i].error);
    }
    if (rc != 0)
        goto no_memory;
    return root;

no_memory:
    cJSON_Delete(root);
    return NULL;
}
