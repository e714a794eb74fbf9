/*
 * Cleanup of one allocation's leaked bridge-network state.
 *
 * The order matters, because each step needs what the earlier ones leave:
 *   1. stale_netns_file    A plain file left at <netns_dir>/A after its
 *                          namespace was unmounted makes the bridge and loopback
 *                          plugins fail DEL ("unknown FS magic"), so it goes first.
 *   2. cni_del             DEL from the libcni cache while the namespace is still
 *                          mounted: the bridge plugin reads the container's
 *                          addresses from eth0 inside it to find its masquerade
 *                          chain, and portmap and firewall need the cached port
 *                          mappings and result. DEL is left out when a cached
 *                          address is now reserved by another allocation.
 *   3. netns_remove        umount2(MNT_DETACH) and unlink, as `ip netns del` does.
 *   4. cache_remove        After a successful DEL (libcni does the same), or when
 *                          DEL could not run at all. A cache whose DEL failed part
 *                          way is kept so that a later cleanup can retry DEL.
 *   5. sweep_rules         Whatever DEL could not reach, found by the ID in rule
 *                          comments and by the chain names derived from it. Also
 *                          the CNI-FORWARD rules of the allocation's addresses,
 *                          unless another allocation has reserved that address.
 *   6. sweep_reservations  host-local files in both IPAM directories whose first
 *                          line is the ID.
 *   7. sweep_veths         Host veths that still exist and are named in the cached
 *                          result, or had their peer in A's namespace before step 1.
 *   8. verify              A fresh inventory, and what is left of the allocation.
 * Shared infrastructure (the bridge, the CNI-HOSTPORT-* chains and their jumps,
 * CNI-FORWARD's own jump rules, NOMAD-ADMIN, last_reserved_ip.* and lock) is
 * never a target of any step.
 */
#define _GNU_SOURCE
#include "host.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "cni.h"
#include "log.h"
#include "proc.h"

/* statfs f_type of a network namespace file (NSFS_MAGIC in linux/magic.h). */
#define NSFS_MAGIC_VALUE 0x6e736673
/* Output kept from iptables and ip, whose errors are one line. */
#define COMMAND_MAX_OUTPUT (64 * 1024)
/* Steps a report can hold: the eight above. */
#define MAX_STEPS 8

enum netns_state {
    NS_ABSENT = 0,
    NS_MOUNTED,      /* an nsfs mount: a live namespace */
    NS_STALE_FILE,   /* a regular file on another filesystem */
    NS_OTHER,        /* a directory, symlink or device: never touched */
    NS_ERROR,        /* lstat or statfs failed */
};

enum cache_del {
    CACHE_DEL_DONE = 0,
    CACHE_DEL_FAILED,    /* some plugins may have run, so it is kept for a retry */
    CACHE_DEL_NOT_RUN,   /* rejected, unreadable or a plugin missing: removed, and the sweep takes over */
};

struct strset {
    char **v;
    size_t n;
};

struct cleanup {
    const struct host_paths *paths;
    const char *alloc;
    struct host_cleanup_report *report;
    int oom;
    char netns_path[4096];
    char masq_chain[32];            /* CNI-<24 hex>, the bridge plugin's ipMasq chain */
    char dnat_chain[32];            /* CNI-DN-<21 hex>, portmap's chain */
    char masq_comment[160];         /* `name: "<network>" id: "<A>"`, unquoted as in rule args */
    char dnat_comment[160];         /* `dnat name: "<network>" id: "<A>"` */
    char **cache_files;
    size_t n_cache_files;
    enum cache_del *cache_del;      /* per cache file */
    struct strset ips;              /* addresses of the allocation, from every source */
    struct strset kept_ips;         /* addresses reserved by another allocation */
    struct strset veths;            /* host-side veths: from accepted caches and from peers in A's namespace */
    char find_error[512];           /* why the cache directory could not be read, "" when it could */
    struct host_inventory inv;      /* read by sweep_rules, used until sweep_veths */
    int have_inv;
};

/* ---- sets of strings ---- */

static int strset_has(const struct strset *set, const char *s)
{
    for (size_t i = 0; i < set->n; i++) {
        if (strcmp(set->v[i], s) == 0)
            return 1;
    }
    return 0;
}

static void strset_add(struct cleanup *c, struct strset *set, const char *s)
{
    char **grown;

    if (s == NULL || strset_has(set, s))
        return;
    grown = realloc(set->v, (set->n + 1) * sizeof(*set->v));
    if (grown == NULL) {
        c->oom = 1;
        return;
    }
    set->v = grown;
    set->v[set->n] = strdup(s);
    if (set->v[set->n] == NULL) {
        c->oom = 1;
        return;
    }
    set->n++;
}

static void strset_free(struct strset *set)
{
    for (size_t i = 0; i < set->n; i++)
        free(set->v[i]);
    free(set->v);
    set->v = NULL;
    set->n = 0;
}

/* ---- report steps ---- */

static size_t step_begin(struct cleanup *c, const char *name)
{
    struct host_cleanup_report *r = c->report;
    struct host_step *s = &r->steps[r->n_steps];

    s->name = name;
    s->ok = 1;
    s->skipped = 0;
    s->detail = NULL;
    return r->n_steps++;
}

/* Append one sentence to a step's detail, separated by "; ". */
static void step_note(struct cleanup *c, size_t index, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void step_note(struct cleanup *c, size_t index, const char *fmt, ...)
{
    struct host_step *s = &c->report->steps[index];
    size_t old = s->detail != NULL ? strlen(s->detail) : 0;
    char *text = NULL, *joined;
    va_list ap;
    int len;

    va_start(ap, fmt);
    len = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (len < 0) {
        c->oom = 1;
        return;
    }
    joined = realloc(s->detail, old + (old > 0 ? 2 : 0) + (size_t)len + 1);
    if (joined == NULL) {
        free(text);
        c->oom = 1;
        return;
    }
    if (old > 0) {
        memcpy(joined + old, "; ", 2);
        old += 2;
    }
    memcpy(joined + old, text, (size_t)len + 1);
    s->detail = joined;
    free(text);
}

#define step_fail(c, index, ...)                        \
    do {                                                \
        (c)->report->steps[(index)].ok = 0;             \
        step_note((c), (index), __VA_ARGS__);           \
    } while (0)

#define step_skip(c, index, ...)                        \
    do {                                                \
        (c)->report->steps[(index)].skipped = 1;        \
        step_note((c), (index), __VA_ARGS__);           \
    } while (0)

/* ---- host helpers ---- */

static enum netns_state netns_state(const char *path, char *err, size_t errsz)
{
    struct stat st;
    struct statfs fs;

    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return NS_ABSENT;
        snprintf(err, errsz, "cannot stat %s: %s", path, strerror(errno));
        return NS_ERROR;
    }
    if (!S_ISREG(st.st_mode))
        return NS_OTHER;
    if (statfs(path, &fs) != 0) {
        snprintf(err, errsz, "cannot statfs %s: %s", path, strerror(errno));
        return NS_ERROR;
    }
    return (unsigned long)fs.f_type == NSFS_MAGIC_VALUE ? NS_MOUNTED : NS_STALE_FILE;
}

static const char *file_kind(const char *path)
{
    struct stat st;

    if (lstat(path, &st) != 0)
        return "missing file";
    if (S_ISDIR(st.st_mode))
        return "directory";
    if (S_ISLNK(st.st_mode))
        return "symbolic link";
    return "special file";
}

static int is_ip(const char *text)
{
    unsigned char bin[16];

    return text != NULL && (inet_pton(AF_INET, text, bin) == 1 || inet_pton(AF_INET6, text, bin) == 1);
}

/*
 * First line of the reservation file dir/name, without "\r", in owner.
 * Returns 1 when the file exists and was read, 0 when it does not exist, -1 on a read error.
 */
static int reservation_owner(const char *dir, const char *name, char *owner, size_t ownersz)
{
    char path[4096], buf[128];
    ssize_t got;
    struct stat st;
    int fd;

    owner[0] = '\0';
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
        return -1;
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -1;
    }
    got = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (got < 0)
        return -1;
    buf[got] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    snprintf(owner, ownersz, "%s", buf);
    return 1;
}

/* The two host-local directories of our network: current layout first, then the pre-1.9.4 one. */
static int ipam_dirs(const struct cleanup *c, char dirs[2][4096])
{
    int a = snprintf(dirs[0], sizeof(dirs[0]), "%s/%s", c->paths->ipam_dir, c->paths->network_name);
    int b = snprintf(dirs[1], sizeof(dirs[1]), "%s/%s", c->paths->ipam_dir_legacy, c->paths->network_name);

    return a > 0 && a < (int)sizeof(dirs[0]) && b > 0 && b < (int)sizeof(dirs[1]) ? 0 : -1;
}

/*
 * Whether an allocation other than ours claims ip: a reservation file for it
 * whose first line is not our ID, or a masquerade jump for it tagged with
 * another ID. Fills owner (may be "" for an unreadable file). Returns 1 or 0.
 */
static int ip_held_by_other(const struct cleanup *c, const struct host_inventory *inv, const char *ip,
                            char *owner, size_t ownersz)
{
    char dirs[2][4096];

    owner[0] = '\0';
    if (ipam_dirs(c, dirs) == 0) {
        for (int d = 0; d < 2; d++) {
            int found = reservation_owner(dirs[d], ip, owner, ownersz);

            if (found < 0 || (found == 1 && strcmp(owner, c->alloc) != 0))
                return 1;
        }
    }
    for (size_t i = 0; inv != NULL && i < inv->n_rules; i++) {
        const struct host_ipt_rule *r = &inv->rules[i];

        if (r->ip != NULL && strcmp(r->ip, ip) == 0 && strcmp(r->chain, "POSTROUTING") == 0 &&
            r->alloc_id[0] != '\0' && strcmp(r->alloc_id, c->alloc) != 0) {
            snprintf(owner, ownersz, "%s", r->alloc_id);
            return 1;
        }
    }
    owner[0] = '\0';
    return 0;
}

/* Run a helper program. Returns 0 when it exited 0, else -1 with its error's first line in brief. */
static int run_command(const struct cleanup *c, const char *const *argv, char *brief, size_t briefsz)
{
    struct proc_result res;
    char err[512];
    int rc;

    brief[0] = '\0';
    rc = proc_run(argv, NULL, NULL, 0, c->paths->command_timeout_ms, COMMAND_MAX_OUTPUT, &res, err, sizeof(err));
    if (rc == 0 && res.exit_code == 0) {
        proc_result_free(&res);
        return 0;
    }
    if (rc != 0)
        snprintf(brief, briefsz, "%s", err);
    else
        proc_brief(&res, brief, briefsz);
    proc_result_free(&res);
    return -1;
}

/* The command line of argv for messages, shell-quoted where needed. */
static char *command_text(const char *const *argv)
{
    size_t len = 1;
    char *text, *p;

    for (size_t i = 0; argv[i] != NULL; i++)
        len += strlen(argv[i]) * 2 + 3;
    text = malloc(len);
    if (text == NULL)
        return NULL;
    p = text;
    for (size_t i = 0; argv[i] != NULL; i++) {
        int quote = argv[i][0] == '\0' || strpbrk(argv[i], " \"'\\") != NULL;

        if (i > 0)
            *p++ = ' ';
        if (quote)
            *p++ = '"';
        for (const char *s = argv[i]; *s != '\0'; s++) {
            if (quote && (*s == '"' || *s == '\\'))
                *p++ = '\\';
            *p++ = *s;
        }
        if (quote)
            *p++ = '"';
    }
    *p = '\0';
    return text;
}

/* Run `iptables -w -t table op chain [args...]` and note the outcome on the step. Returns 0 or -1. */
static int run_iptables(struct cleanup *c, size_t step, const char *table, const char *op, const char *chain,
                        char *const *args, size_t n_args)
{
    const char **argv = calloc(n_args + 7, sizeof(*argv));
    char brief[512];
    char *text;
    int rc;

    if (argv == NULL) {
        c->oom = 1;
        return -1;
    }
    argv[0] = c->paths->iptables;
    argv[1] = "-w";
    argv[2] = "-t";
    argv[3] = table;
    argv[4] = op;
    argv[5] = chain;
    for (size_t i = 0; i < n_args; i++)
        argv[6 + i] = args[i];
    text = command_text(argv);
    if (text == NULL) {
        c->oom = 1;
        free(argv);
        return -1;
    }
    log_debug("host", "cleanup alloc=%s run: %s", c->alloc, text);
    rc = run_command(c, argv, brief, sizeof(brief));
    if (rc == 0)
        step_note(c, step, "ran: %s", text);
    else
        step_fail(c, step, "failed: %s: %s", text, brief);
    free(text);
    free(argv);
    return rc;
}

/* ---- steps ---- */

static void step_stale_netns_file(struct cleanup *c)
{
    size_t s = step_begin(c, "stale_netns_file");
    char err[512];

    switch (netns_state(c->netns_path, err, sizeof(err))) {
    case NS_ABSENT:
        step_skip(c, s, "no file at %s", c->netns_path);
        break;
    case NS_MOUNTED:
        step_skip(c, s, "%s is a mounted network namespace, not a stale file", c->netns_path);
        break;
    case NS_OTHER:
        step_skip(c, s, "%s is a %s, not a stale namespace file; netns_remove reports it", c->netns_path,
                  file_kind(c->netns_path));
        break;
    case NS_ERROR:
        step_fail(c, s, "%s", err);
        break;
    case NS_STALE_FILE:
        if (unlink(c->netns_path) != 0 && errno != ENOENT)
            step_fail(c, s, "cannot remove the stale namespace file %s: %s", c->netns_path, strerror(errno));
        else
            step_note(c, s, "removed %s: a plain file, not a mounted namespace, which would make CNI DEL fail",
                      c->netns_path);
        break;
    }
}

/* Run DEL for one cache file and record the outcome in c->cache_del[i]. */
static void del_one_cache(struct cleanup *c, size_t s, size_t i, const char *netns)
{
    struct cni_cache cache;
    struct cni_del_outcome outcome;
    char err[1024];
    int rc;

    c->cache_del[i] = CACHE_DEL_NOT_RUN;
    rc = cni_cache_load(c->paths, c->alloc, c->cache_files[i], &cache, err, sizeof(err));
    if (rc < 0) {
        c->oom = 1;
        return;
    }
    if (rc > 0) {
        step_fail(c, s, "%s; no plugin was run", err);
        return;
    }
    for (size_t k = 0; k < cache.n_ips; k++)
        strset_add(c, &c->ips, cache.ips[k]);
    for (size_t k = 0; k < cache.n_host_ifaces; k++)
        strset_add(c, &c->veths, cache.host_ifaces[k]);

    /*
     * The firewall plugin's DEL removes the CNI-FORWARD rules of every cached
     * address. When host-local has given an address to another allocation,
     * those rules are now that allocation's, so DEL must not run. The sweep
     * then removes the rest and keeps them.
     */
    for (size_t k = 0; k < cache.n_ips; k++) {
        char owner[128];

        if (!ip_held_by_other(c, NULL, cache.ips[k], owner, sizeof(owner)))
            continue;
        step_note(c, s, "%s: CNI DEL not run because %s is reserved by allocation %s, whose CNI-FORWARD rules "
                  "the firewall plugin would remove", cache.path, cache.ips[k],
                  owner[0] != '\0' ? owner : "(unreadable reservation)");
        cni_cache_free(&cache);
        return;
    }

    if (cni_del(c->paths, &cache, netns, &outcome) != 0) {
        c->oom = 1;
    } else if (outcome.status == CNI_DEL_DONE) {
        c->cache_del[i] = CACHE_DEL_DONE;
        step_note(c, s, "%s: %s with CNI_NETNS=\"%s\"", cache.path, outcome.message, netns);
    } else {
        c->cache_del[i] = outcome.status == CNI_DEL_FAILED ? CACHE_DEL_FAILED : CACHE_DEL_NOT_RUN;
        step_fail(c, s, "%s: %s", cache.path, outcome.message);
    }
    if (cache.netns != NULL && strcmp(cache.netns, c->netns_path) != 0)
        step_note(c, s, "the cache records the namespace \"%.256s\", which was not used", cache.netns);
    cni_cache_free(&cache);
}

static void step_cni_del(struct cleanup *c)
{
    size_t s = step_begin(c, "cni_del");
    char err[512];
    enum netns_state ns;
    int ran = 0;

    if (c->find_error[0] != '\0') {
        step_fail(c, s, "%s; the sweep removes what it can without the cache", c->find_error);
        return;
    }
    if (c->n_cache_files == 0) {
        step_skip(c, s, "no CNI cache file %s/%s-%s-<ifname>; the sweep removes what is left",
                  c->paths->cni_cache_dir, c->paths->network_name, c->alloc);
        return;
    }
    ns = netns_state(c->netns_path, err, sizeof(err));
    for (size_t i = 0; i < c->n_cache_files && !c->oom; i++) {
        del_one_cache(c, s, i, ns == NS_MOUNTED ? c->netns_path : "");
        ran |= c->cache_del[i] != CACHE_DEL_NOT_RUN;
    }
    /* Every DEL deliberately left out (none failed): nothing was done. */
    if (!ran && c->report->steps[s].ok)
        c->report->steps[s].skipped = 1;
}

static void step_netns_remove(struct cleanup *c)
{
    size_t s = step_begin(c, "netns_remove");
    enum netns_state ns;
    char err[512];
    int unmounts = 0;

    ns = netns_state(c->netns_path, err, sizeof(err));
    /* A namespace mounted more than once needs one unmount per mount before unlink works. */
    while (ns == NS_MOUNTED && unmounts < 8) {
        if (umount2(c->netns_path, MNT_DETACH) != 0) {
            step_fail(c, s, "cannot unmount %s: %s", c->netns_path, strerror(errno));
            return;
        }
        unmounts++;
        ns = netns_state(c->netns_path, err, sizeof(err));
    }
    switch (ns) {
    case NS_ABSENT:
        if (unmounts == 0)
            step_skip(c, s, "no namespace at %s", c->netns_path);
        else
            step_note(c, s, "unmounted %s, which removed it", c->netns_path);
        break;
    case NS_STALE_FILE:
        if (unlink(c->netns_path) != 0 && errno != ENOENT)
            step_fail(c, s, "cannot remove %s: %s", c->netns_path, strerror(errno));
        else if (unmounts > 0)
            step_note(c, s, "unmounted (%d) and removed %s", unmounts, c->netns_path);
        else
            step_note(c, s, "removed the plain file %s", c->netns_path);
        break;
    case NS_MOUNTED:
        step_fail(c, s, "%s is still a mounted namespace after %d unmounts", c->netns_path, unmounts);
        break;
    case NS_OTHER:
        step_fail(c, s, "%s is a %s, not a namespace; left alone: check and remove it by hand", c->netns_path,
                  file_kind(c->netns_path));
        break;
    case NS_ERROR:
        step_fail(c, s, "%s", err);
        break;
    }
}

static void step_cache_remove(struct cleanup *c)
{
    size_t s = step_begin(c, "cache_remove");

    if (c->n_cache_files == 0) {
        step_skip(c, s, "no CNI cache file");
        return;
    }
    for (size_t i = 0; i < c->n_cache_files; i++) {
        const char *path = c->cache_files[i];

        if (c->cache_del[i] == CACHE_DEL_FAILED) {
            step_fail(c, s, "kept %s because CNI DEL failed part way; a later cleanup retries DEL with it", path);
            continue;
        }
        if (unlink(path) != 0 && errno != ENOENT) {
            step_fail(c, s, "cannot remove %s: %s", path, strerror(errno));
            continue;
        }
        if (c->cache_del[i] == CACHE_DEL_DONE)
            step_note(c, s, "removed %s after CNI DEL", path);
        else
            step_note(c, s, "removed %s: CNI DEL could not run with it, so the sweep removes the rest", path);
    }
}

/* 1 when args contains the exact token (a comment, unquoted). */
static int rule_has_arg(const struct host_ipt_rule *r, const char *token)
{
    for (size_t i = 0; i < r->n_args; i++) {
        if (strcmp(r->args[i], token) == 0)
            return 1;
    }
    return 0;
}

/* Targets that belong to everyone: a rule jumping to one of them is never removed. */
static int is_shared_target(const char *target)
{
    return target != NULL && (strncmp(target, "CNI-HOSTPORT-", 13) == 0 || strcmp(target, "CNI-FORWARD") == 0 ||
                              strcmp(target, "NOMAD-ADMIN") == 0);
}

static int chain_exists(const struct host_inventory *inv, const char *table, const char *name)
{
    for (size_t i = 0; i < inv->n_chains; i++) {
        if (strcmp(inv->chains[i].table, table) == 0 && strcmp(inv->chains[i].name, name) == 0)
            return 1;
    }
    return 0;
}

/* A nat rule of ours outside our own chains: a jump to one of them, or tagged with our comment. */
static int is_our_nat_jump(const struct cleanup *c, const struct host_ipt_rule *r)
{
    if (strcmp(r->table, "nat") != 0 || r->shared || is_shared_target(r->target))
        return 0;
    if (strcmp(r->chain, c->masq_chain) == 0 || strcmp(r->chain, c->dnat_chain) == 0)
        return 0;
    if (r->target != NULL && (strcmp(r->target, c->masq_chain) == 0 || strcmp(r->target, c->dnat_chain) == 0))
        return 1;
    if (strcmp(r->chain, "POSTROUTING") == 0 && rule_has_arg(r, c->masq_comment))
        return 1;
    return strcmp(r->chain, "CNI-HOSTPORT-DNAT") == 0 && rule_has_arg(r, c->dnat_comment);
}

/* Addresses of the allocation that the rules still show: masquerade jumps and DNAT targets. */
static void collect_rule_ips(struct cleanup *c, const struct host_inventory *inv)
{
    for (size_t i = 0; i < inv->n_rules; i++) {
        const struct host_ipt_rule *r = &inv->rules[i];

        if (strcmp(r->table, "nat") != 0)
            continue;
        if (strcmp(r->chain, "POSTROUTING") == 0 && is_our_nat_jump(c, r) && is_ip(r->ip))
            strset_add(c, &c->ips, r->ip);
        if (strcmp(r->chain, c->dnat_chain) == 0 && r->dnat_to != NULL) {
            char ip[64];
            const char *to = r->dnat_to;
            size_t len;

            /* "X:PORT", "X", or "[X6]:PORT". */
            if (to[0] == '[') {
                to++;
                len = strcspn(to, "]");
            } else {
                len = strchr(to, '.') != NULL ? strcspn(to, ":") : strlen(to);
            }
            if (len > 0 && len < sizeof(ip)) {
                memcpy(ip, to, len);
                ip[len] = '\0';
                if (is_ip(ip))
                    strset_add(c, &c->ips, ip);
            }
        }
    }
}

/* Collect the addresses named in our reservation files (both layouts). */
static void collect_reservation_ips(struct cleanup *c)
{
    char dirs[2][4096], owner[128];

    if (ipam_dirs(c, dirs) != 0)
        return;
    for (int d = 0; d < 2; d++) {
        DIR *dir = opendir(dirs[d]);
        struct dirent *de;

        if (dir == NULL)
            continue;
        while ((de = readdir(dir)) != NULL) {
            if (is_ip(de->d_name) && reservation_owner(dirs[d], de->d_name, owner, sizeof(owner)) == 1 &&
                strcmp(owner, c->alloc) == 0)
                strset_add(c, &c->ips, de->d_name);
        }
        closedir(dir);
    }
}

static void sweep_forward_rules(struct cleanup *c, size_t s, const struct host_inventory *inv, int *done)
{
    char owner[128];

    for (size_t k = 0; k < c->ips.n; k++) {
        const char *ip = c->ips.v[k];

        if (ip_held_by_other(c, inv, ip, owner, sizeof(owner))) {
            strset_add(c, &c->kept_ips, ip);
            step_note(c, s, "kept the CNI-FORWARD rules of %s: allocation %s has reserved that address", ip,
                      owner[0] != '\0' ? owner : "(unreadable reservation)");
            continue;
        }
        for (size_t i = 0; i < inv->n_rules; i++) {
            const struct host_ipt_rule *r = &inv->rules[i];

            if (strcmp(r->table, "filter") != 0 || strcmp(r->chain, "CNI-FORWARD") != 0 || r->shared ||
                r->ip == NULL || strcmp(r->ip, ip) != 0 || r->target == NULL || strcmp(r->target, "ACCEPT") != 0)
                continue;
            run_iptables(c, s, "filter", "-D", r->chain, r->args, r->n_args);
            (*done)++;
        }
    }
}

/*
 * Note on the step which parts of the inventory that show artefacts could not
 * be read. The process scan is left out: it only finds the holders of a
 * namespace, never an artefact. Returns 1 when all were read.
 */
static int note_unread_sources(struct cleanup *c, size_t s, const struct host_inventory *inv)
{
    int all = 1;

    for (int i = 0; i < HOST_SRC_COUNT; i++) {
        if (inv->sources[i].ok || i == HOST_SRC_PROC)
            continue;
        all = 0;
        step_fail(c, s, "could not read %s: %s", inv->sources[i].name != NULL ? inv->sources[i].name : "?",
                  inv->sources[i].error != NULL ? inv->sources[i].error : "unknown error");
    }
    return all;
}

/*
 * NOTE: only the IPv4 tables are swept, because the inventory reads only
 * iptables-save. An allocation on a dual-stack bridge keeps its ip6tables
 * rules when CNI DEL could not remove them.
 */
static void step_sweep_rules(struct cleanup *c)
{
    size_t s = step_begin(c, "sweep_rules");
    const struct host_inventory *inv = &c->inv;
    int done = 0;

    if (host_inventory_read(c->paths, &c->inv) != 0) {
        c->oom = 1;
        return;
    }
    c->have_inv = 1;
    for (int src = HOST_SRC_IPTABLES_NAT; src <= HOST_SRC_IPTABLES_FILTER; src++) {
        if (!inv->sources[src].ok)
            step_fail(c, s, "the iptables rules could not be read completely, so some may be left: %s",
                      inv->sources[src].error != NULL ? inv->sources[src].error : "unknown error");
    }
    collect_rule_ips(c, inv);
    collect_reservation_ips(c);

    /* Jumps first, because iptables cannot delete a chain that a rule still references. */
    for (size_t i = 0; i < inv->n_rules; i++) {
        const struct host_ipt_rule *r = &inv->rules[i];

        if (is_our_nat_jump(c, r)) {
            run_iptables(c, s, "nat", "-D", r->chain, r->args, r->n_args);
            done++;
        }
    }
    if (chain_exists(inv, "nat", c->masq_chain)) {
        if (run_iptables(c, s, "nat", "-F", c->masq_chain, NULL, 0) == 0)
            run_iptables(c, s, "nat", "-X", c->masq_chain, NULL, 0);
        done++;
    }
    if (chain_exists(inv, "nat", c->dnat_chain)) {
        if (run_iptables(c, s, "nat", "-F", c->dnat_chain, NULL, 0) == 0)
            run_iptables(c, s, "nat", "-X", c->dnat_chain, NULL, 0);
        done++;
    }
    sweep_forward_rules(c, s, inv, &done);
    if (done == 0 && c->report->steps[s].ok)
        step_skip(c, s, "no rule or chain of the allocation left (chains %s, %s)", c->masq_chain, c->dnat_chain);
}

static void step_sweep_reservations(struct cleanup *c)
{
    size_t s = step_begin(c, "sweep_reservations");
    char dirs[2][4096], owner[128], path[8192];
    int removed = 0;

    if (ipam_dirs(c, dirs) != 0) {
        step_fail(c, s, "the IPAM directory paths are too long");
        return;
    }
    for (int d = 0; d < 2; d++) {
        DIR *dir = opendir(dirs[d]);
        struct dirent *de;

        if (dir == NULL) {
            if (errno != ENOENT)
                step_fail(c, s, "cannot read %s: %s", dirs[d], strerror(errno));
            continue;
        }
        while ((de = readdir(dir)) != NULL) {
            /* Only files named by an address are reservations. last_reserved_ip.* and lock are shared. */
            if (!is_ip(de->d_name) || reservation_owner(dirs[d], de->d_name, owner, sizeof(owner)) != 1 ||
                strcmp(owner, c->alloc) != 0)
                continue;
            if (snprintf(path, sizeof(path), "%s/%s", dirs[d], de->d_name) >= (int)sizeof(path)) {
                step_fail(c, s, "path %s/%s is too long", dirs[d], de->d_name);
                continue;
            }
            if (unlink(path) != 0 && errno != ENOENT) {
                step_fail(c, s, "cannot remove %s: %s", path, strerror(errno));
                continue;
            }
            step_note(c, s, "removed %s", path);
            removed++;
        }
        closedir(dir);
    }
    if (removed == 0 && c->report->steps[s].ok)
        step_skip(c, s, "no reservation names the allocation in %s or %s", dirs[0], dirs[1]);
}

static const struct host_veth *find_veth(const struct host_inventory *inv, const char *name)
{
    for (size_t i = 0; i < inv->n_veths; i++) {
        if (strcmp(inv->veths[i].name, name) == 0)
            return &inv->veths[i];
    }
    return NULL;
}

static void step_sweep_veths(struct cleanup *c)
{
    size_t s = step_begin(c, "sweep_veths");
    int removed = 0;

    if (c->veths.n == 0) {
        step_skip(c, s, "no host veth of the allocation: none in a cached result or peered into its namespace");
        return;
    }
    if (!c->have_inv || !c->inv.sources[HOST_SRC_LINKS].ok) {
        step_fail(c, s, "the host's links could not be listed, so no veth was removed: %s",
                  c->have_inv && c->inv.sources[HOST_SRC_LINKS].error ? c->inv.sources[HOST_SRC_LINKS].error
                                                                     : "no inventory");
        return;
    }
    for (size_t k = 0; k < c->veths.n; k++) {
        const char *name = c->veths.v[k];
        const struct host_veth *v;
        const char *argv[] = {c->paths->ip_command, "link", "del", "dev", name, NULL};
        char brief[512];

        if (!cni_is_ifname(name) || strcmp(name, c->paths->bridge_name) == 0)
            continue;
        v = find_veth(&c->inv, name);
        if (v == NULL) {
            step_note(c, s, "%s is already gone", name);
            continue;
        }
        if (v->alloc_id[0] != '\0' && strcmp(v->alloc_id, c->alloc) != 0) {
            step_note(c, s, "kept %s: its peer belongs to allocation %s", name, v->alloc_id);
            continue;
        }
        log_debug("host", "cleanup alloc=%s run: %s link del dev %s", c->alloc, c->paths->ip_command, name);
        if (run_command(c, argv, brief, sizeof(brief)) == 0) {
            step_note(c, s, "ran: %s link del dev %s", c->paths->ip_command, name);
            removed++;
        } else if (strstr(brief, "Cannot find device") != NULL) {
            step_note(c, s, "%s went away by itself", name);
        } else {
            step_fail(c, s, "failed: %s link del dev %s: %s", c->paths->ip_command, name, brief);
        }
    }
    if (removed == 0 && c->report->steps[s].ok)
        c->report->steps[s].skipped = 1;
}

/* Count what is left of the allocation in inv, noting each kind on the step. */
static size_t count_remaining(struct cleanup *c, size_t s, const struct host_inventory *inv)
{
    size_t n = 0, forward = 0;

    for (size_t i = 0; i < inv->n_netns; i++)
        n += strcmp(inv->netns[i].alloc_id, c->alloc) == 0;
    for (size_t i = 0; i < inv->n_reservations; i++)
        n += strcmp(inv->reservations[i].alloc_id, c->alloc) == 0;
    for (size_t i = 0; i < inv->n_caches; i++)
        n += strcmp(inv->caches[i].alloc_id, c->alloc) == 0;
    for (size_t i = 0; i < inv->n_chains; i++) {
        const struct host_ipt_chain *ch = &inv->chains[i];

        n += strcmp(ch->alloc_id, c->alloc) == 0 || strcmp(ch->name, c->masq_chain) == 0 ||
             strcmp(ch->name, c->dnat_chain) == 0;
    }
    for (size_t i = 0; i < inv->n_veths; i++)
        n += strcmp(inv->veths[i].alloc_id, c->alloc) == 0;
    for (size_t i = 0; i < inv->n_rules; i++) {
        const struct host_ipt_rule *r = &inv->rules[i];
        int forward_rule = strcmp(r->table, "filter") == 0 && strcmp(r->chain, "CNI-FORWARD") == 0 &&
                           r->ip != NULL && !r->shared;

        if (forward_rule && strset_has(&c->kept_ips, r->ip))
            continue;
        if (strcmp(r->alloc_id, c->alloc) == 0 && !r->shared)
            n++;
        else if (forward_rule && strset_has(&c->ips, r->ip))
            n++, forward++;
    }
    if (forward > 0)
        step_note(c, s, "%zu CNI-FORWARD rules of the allocation's addresses are left", forward);
    return n;
}

static void step_verify(struct cleanup *c)
{
    size_t s = step_begin(c, "verify");
    struct host_inventory inv;
    size_t left;
    int all_read;

    if (host_inventory_read(c->paths, &inv) != 0) {
        c->oom = 1;
        return;
    }
    all_read = note_unread_sources(c, s, &inv);
    left = count_remaining(c, s, &inv);
    if (left > 0) {
        c->report->remaining = host_inventory_alloc_json(&inv, c->alloc);
        if (c->report->remaining == NULL)
            c->oom = 1;
        step_fail(c, s, "%zu artefacts of the allocation are still present", left);
    } else if (all_read) {
        c->report->complete = 1;
        step_note(c, s, "nothing of the allocation is left");
    } else {
        step_note(c, s, "nothing of the allocation is left in the parts that could be read");
    }
    host_inventory_free(&inv);
}

/*
 * Note what only the host shows before anything is removed: the veths whose
 * peer is in A's namespace (they cannot be attributed once it is gone) and the
 * addresses in A's rules. Returns 0, or -1 when memory ran out.
 */
static int gather_evidence(struct cleanup *c)
{
    struct host_inventory inv;

    if (host_inventory_read(c->paths, &inv) != 0)
        return -1;
    for (size_t i = 0; i < inv.n_veths; i++) {
        if (strcmp(inv.veths[i].alloc_id, c->alloc) == 0)
            strset_add(c, &c->veths, inv.veths[i].name);
    }
    collect_rule_ips(c, &inv);
    host_inventory_free(&inv);
    return c->oom ? -1 : 0;
}

/* ---- entry points ---- */

/* Check the inputs that go into paths, comments and commands. Returns 0, or -1 with msg filled. */
static int validate(const struct host_paths *paths, const char *alloc_id, char *msg, size_t msgsz)
{
    if (!cni_is_uuid(alloc_id)) {
        snprintf(msg, msgsz, "invalid allocation ID \"%.64s\": expected a lowercase UUID",
                 alloc_id != NULL ? alloc_id : "(null)");
        return -1;
    }
    if (!cni_is_network_name(paths->network_name)) {
        snprintf(msg, msgsz, "invalid network name \"%.64s\": expected [A-Za-z0-9][A-Za-z0-9_.-]*",
                 paths->network_name != NULL ? paths->network_name : "(null)");
        return -1;
    }
    if (!cni_is_ifname(paths->bridge_name)) {
        snprintf(msg, msgsz, "invalid bridge name \"%.64s\": expected an interface name",
                 paths->bridge_name != NULL ? paths->bridge_name : "(null)");
        return -1;
    }
    if (paths->netns_dir == NULL || paths->cni_cache_dir == NULL || paths->ipam_dir == NULL ||
        paths->ipam_dir_legacy == NULL || paths->cni_path == NULL || paths->iptables == NULL ||
        paths->ip_command == NULL) {
        snprintf(msg, msgsz, "a host path is not set; start from host_paths_defaults()");
        return -1;
    }
    return 0;
}

static int all_steps_ok(const struct host_cleanup_report *report)
{
    for (size_t i = 0; i < report->n_steps; i++) {
        if (!report->steps[i].ok)
            return 0;
    }
    return 1;
}

int host_cleanup_alloc(const struct host_paths *paths, const char *alloc_id, struct host_cleanup_report *report)
{
    struct cleanup c = {.paths = paths, .alloc = alloc_id, .report = report};
    char msg[512];
    int rc;

    memset(report, 0, sizeof(*report));
    report->steps = calloc(MAX_STEPS, sizeof(*report->steps));
    if (report->steps == NULL)
        return -1;
    if (validate(paths, alloc_id, msg, sizeof(msg)) != 0) {
        size_t s = step_begin(&c, "validate");

        step_fail(&c, s, "%s", msg);
        return c.oom ? -1 : 1;
    }
    snprintf(c.netns_path, sizeof(c.netns_path), "%s/%s", paths->netns_dir, alloc_id);
    snprintf(c.masq_comment, sizeof(c.masq_comment), "name: \"%s\" id: \"%s\"", paths->network_name, alloc_id);
    snprintf(c.dnat_comment, sizeof(c.dnat_comment), "dnat name: \"%s\" id: \"%s\"", paths->network_name,
             alloc_id);
    if (host_chain_names(paths->network_name, alloc_id, c.masq_chain, c.dnat_chain) != 0)
        goto oom;
    if (cni_cache_find(paths, alloc_id, &c.cache_files, &c.n_cache_files, c.find_error, sizeof(c.find_error)) < 0)
        goto oom;
    c.cache_del = calloc(c.n_cache_files + 1, sizeof(*c.cache_del));
    if (c.cache_del == NULL)
        goto oom;
    log_debug("host", "cleanup alloc=%s netns=%s caches=%zu", alloc_id, c.netns_path, c.n_cache_files);
    if (gather_evidence(&c) != 0)
        goto oom;

    step_stale_netns_file(&c);
    step_cni_del(&c);
    if (!c.oom)
        step_netns_remove(&c);
    if (!c.oom)
        step_cache_remove(&c);
    if (!c.oom)
        step_sweep_rules(&c);
    if (!c.oom)
        step_sweep_reservations(&c);
    if (!c.oom)
        step_sweep_veths(&c);
    if (!c.oom)
        step_verify(&c);
    if (c.oom)
        goto oom;
    rc = report->complete && all_steps_ok(report) ? 0 : 1;
    goto out;

oom:
    rc = -1;
out:
    if (c.have_inv)
        host_inventory_free(&c.inv);
    for (size_t i = 0; i < c.n_cache_files; i++)
        free(c.cache_files[i]);
    free(c.cache_files);
    free(c.cache_del);
    strset_free(&c.ips);
    strset_free(&c.kept_ips);
    strset_free(&c.veths);
    return rc;
}

void host_cleanup_report_free(struct host_cleanup_report *report)
{
    if (report == NULL)
        return;
    for (size_t i = 0; i < report->n_steps; i++)
        free(report->steps[i].detail);
    free(report->steps);
    cJSON_Delete(report->remaining);
    memset(report, 0, sizeof(*report));
}
