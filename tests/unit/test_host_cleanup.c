/*
 * Tests for CNI DEL from the libcni cache (controller/cni_del.c) and the
 * cleanup of one allocation (controller/host_cleanup.c).
 *
 * The cleanup tests run as root on real allocations. Each test builds them
 * itself with the CNI plugins in /usr/lib/cni, the way libcni runs ADD. They
 * use network and bridge "nmtest2", subnet 172.26.82.0/24 and host ports
 * 28200 to 28209. The host-local data and the libcni cache are in the test's
 * directory, and the namespaces in /var/run/netns are named by fresh UUIDs. Each teardown removes
 * what its test made, also after a failure: the namespaces, every rule and
 * chain that names nmtest2, its allocations or its addresses, the bridge and
 * the directory. The shared chains of the portmap and firewall plugins
 * (CNI-HOSTPORT-*, CNI-FORWARD) stay, because other networks on the host use
 * them at the same time.
 *
 * The DEL tests with fake plugins (shell scripts that record their stdin and
 * environment) need no root.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "../../controller/cni.h"
#include "../../controller/host.h"
#include "../../controller/log.h"
#include "../../controller/proc.h"

#define NET "nmtest2"
#define SUBNET "172.26.82.0/24"
#define IP_PREFIX "172.26.82."
#define ADMIN_CHAIN "NMTEST2-ADMIN"
#define PLUGIN_DIR "/usr/lib/cni"
#define NETNS_DIR "/var/run/netns"
#define NSFS_MAGIC_VALUE 0x6e736673
#define MAX_IDS 8

struct alloc {
    char id[HOST_ID_LEN + 1];
    char ip[64];
    char veth[16];
    char masq[32];
    char dnat[32];
    char netns[128];
    char cache[512];
    char reservation[512];
};

struct fixture {
    char dir[64];
    char ipam[128];      /* host-local dataDir of Nomad 1.9.4 and later */
    char legacy[128];    /* host-local's own default, used by Nomad 1.9.3 and earlier */
    char results[128];   /* the libcni cache directory */
    char bin[128];       /* fake plugins */
    char calls[128];     /* what the fake plugins recorded */
    struct host_paths paths;
    char ids[MAX_IDS][HOST_ID_LEN + 1];
    size_t n_ids;
    char veths[MAX_IDS][16];
    size_t n_veths;
};

static char saved_ip_forward = '?';

/* ---- assertions ---- */

#define assert_contains(haystack, needle)                                                   \
    do {                                                                                    \
        const char *h_ = (haystack);                                                        \
        if (h_ == NULL || strstr(h_, (needle)) == NULL)                                     \
            print_error("\"%s\"\n  does not contain \"%s\"\n", h_ ? h_ : "(null)", (needle)); \
        assert_non_null(h_);                                                                \
        assert_non_null(strstr(h_, (needle)));                                              \
    } while (0)

#define assert_not_contains(haystack, needle)                                               \
    do {                                                                                    \
        const char *h_ = (haystack);                                                        \
        if (h_ != NULL && strstr(h_, (needle)) != NULL)                                     \
            print_error("\"%s\"\n  contains \"%s\"\n", h_, (needle));                       \
        assert_null(h_ != NULL ? strstr(h_, (needle)) : NULL);                              \
    } while (0)

#define assert_root()                                                                       \
    do {                                                                                    \
        if (geteuid() != 0)                                                                 \
            print_error("this test builds namespaces, links and iptables rules: run it as root\n"); \
        assert_int_equal(geteuid(), 0);                                                     \
    } while (0)

/* ---- small helpers ---- */

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path);
}

static char *read_text(const char *path)
{
    FILE *fp = fopen(path, "r");
    char *buf = NULL;
    size_t cap = 0, len = 0;

    if (fp == NULL)
        return NULL;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = (len + 4096 + 1) * 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        size_t got = fread(buf + len, 1, 4096, fp);

        len += got;
        if (got == 0)
            break;
    }
    fclose(fp);
    buf[len] = '\0';
    return buf;
}

static void write_text(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    size_t len = strlen(text);

    if (fd < 0)
        print_error("cannot create %s: %s\n", path, strerror(errno));
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static int path_exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

static int is_mounted_netns(const char *path)
{
    struct statfs fs;

    return path_exists(path) && statfs(path, &fs) == 0 && (unsigned long)fs.f_type == NSFS_MAGIC_VALUE;
}

static int link_exists(const char *name)
{
    char path[128];

    snprintf(path, sizeof(path), "/sys/class/net/%s", name);
    return path_exists(path);
}

/* Run argv and return its exit code (-1 when it did not run), with its stdout in *out when out is not NULL. */
static int run(const char *const *argv, const char *const *envp, const char *input, char **out)
{
    struct proc_result res;
    char err[512];
    int rc;

    rc = proc_run(argv, envp, input, input != NULL ? strlen(input) : 0, 30000, 4 * 1024 * 1024, &res, err,
                  sizeof(err));
    if (rc != 0) {
        print_error("%s: %s\n", argv[0], err);
        proc_result_free(&res);
        return -1;
    }
    rc = res.exit_code;
    if (out != NULL) {
        *out = res.out;
        res.out = NULL;
    }
    proc_result_free(&res);
    return rc;
}

static void new_id(char out[HOST_ID_LEN + 1])
{
    char *text = read_text("/proc/sys/kernel/random/uuid");

    assert_non_null(text);
    memcpy(out, text, HOST_ID_LEN);
    out[HOST_ID_LEN] = '\0';
    free(text);
    assert_true(cni_is_uuid(out));
}

/* The chains the plugins derive: "CNI-" + 24 and "CNI-DN-" + 21 hex digits of sha512(network + id). */
static void chain_names(const char *id, char masq[32], char dnat[32])
{
    unsigned char md[64];
    unsigned int md_len = 0;
    char input[128], hex[129];

    snprintf(input, sizeof(input), "%s%s", NET, id);
    assert_int_equal(EVP_Digest(input, strlen(input), md, &md_len, EVP_sha512(), NULL), 1);
    for (unsigned i = 0; i < md_len; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    snprintf(masq, 32, "CNI-%.24s", hex);
    snprintf(dnat, 32, "CNI-DN-%.21s", hex);
}

static char *base64_encode(const char *in)
{
    static const char table[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t len = strlen(in), o = 0;
    char *out = malloc(len / 3 * 4 + 5);

    assert_non_null(out);
    for (size_t i = 0; i < len; i += 3) {
        unsigned long v = (unsigned long)(unsigned char)in[i] << 16;

        if (i + 1 < len)
            v |= (unsigned long)(unsigned char)in[i + 1] << 8;
        if (i + 2 < len)
            v |= (unsigned char)in[i + 2];
        out[o++] = table[(v >> 18) & 63];
        out[o++] = table[(v >> 12) & 63];
        out[o++] = i + 1 < len ? table[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? table[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

/* ---- iptables ---- */

static char *ipt_save(const char *table)
{
    const char *argv[] = {"iptables-save", "-t", table, NULL};
    char *out = NULL;

    assert_int_equal(run(argv, NULL, NULL, &out), 0);
    return out;
}

/* Number of lines of `iptables-save -t table` that contain needle. */
static int ipt_count(const char *table, const char *needle)
{
    char *text = ipt_save(table);
    int n = 0;

    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n"))
        n += strstr(line, needle) != NULL;
    free(text);
    return n;
}

static int chain_exists(const char *table, const char *chain)
{
    char needle[64];

    snprintf(needle, sizeof(needle), ":%s ", chain);
    return ipt_count(table, needle) > 0;
}

/* Split an `iptables -S` line in place into words, undoing its double quotes and backslashes. */
static size_t split_rule(char *line, char **words, size_t max)
{
    size_t n = 0;
    char *p = line;

    while (*p != '\0' && n < max) {
        char *w;
        int quoted = 0;

        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        words[n++] = w = p;
        while (*p != '\0' && (quoted || *p != ' ')) {
            if (*p == '"') {
                quoted = !quoted;
                p++;
                continue;
            }
            if (*p == '\\' && quoted && p[1] != '\0')
                p++;
            *w++ = *p++;
        }
        if (*p != '\0')
            p++;
        *w = '\0';
    }
    return n;
}

/* Delete by specification every rule of table whose `-S` line matches. Returns how many matched. */
static int ipt_delete_matching(const char *table, int (*match)(const char *line, void *arg), void *arg)
{
    const char *save_argv[] = {"iptables", "-w", "-t", table, "-S", NULL};
    char *text = NULL, *save = NULL;
    int n = 0;

    if (run(save_argv, NULL, NULL, &text) != 0) {
        free(text);
        return 0;
    }
    for (char *line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char *words[128];
        const char *argv[136] = {"iptables", "-w", "-t", table, "-D"};
        size_t count;

        if (strncmp(line, "-A ", 3) != 0 || !match(line, arg))
            continue;
        count = split_rule(line, words, 128);
        for (size_t i = 1; i < count; i++)
            argv[4 + i] = words[i];
        argv[4 + count] = NULL;
        run(argv, NULL, NULL, NULL);
        n++;
    }
    free(text);
    return n;
}

static void ipt_drop_chain(const char *table, const char *chain)
{
    const char *flush[] = {"iptables", "-w", "-t", table, "-F", chain, NULL};
    const char *del[] = {"iptables", "-w", "-t", table, "-X", chain, NULL};

    if (!chain_exists(table, chain))
        return;
    run(flush, NULL, NULL, NULL);
    run(del, NULL, NULL, NULL);
}

/* nat rules tagged with our network, or jumping to a chain of one of our allocations. */
static int match_our_nat_rule(const char *line, void *arg)
{
    const struct fixture *f = arg;

    if (strstr(line, "name: \\\"" NET "\\\"") != NULL)
        return 1;
    for (size_t i = 0; i < f->n_ids; i++) {
        char masq[32], dnat[32], jump_masq[48], jump_dnat[48];

        chain_names(f->ids[i], masq, dnat);
        snprintf(jump_masq, sizeof(jump_masq), "-j %s", masq);
        snprintf(jump_dnat, sizeof(jump_dnat), "-j %s", dnat);
        if (strstr(line, jump_masq) != NULL || strstr(line, jump_dnat) != NULL)
            return 1;
    }
    return 0;
}

/* filter rules of our subnet's addresses and the jump to our admin chain. */
static int match_our_filter_rule(const char *line, void *arg)
{
    (void)arg;
    return strncmp(line, "-A CNI-FORWARD ", 15) == 0 &&
           (strstr(line, " " IP_PREFIX) != NULL || strstr(line, "-j " ADMIN_CHAIN) != NULL);
}

/*
 * Per-allocation nat chains (CNI-<hex>, CNI-DN-<hex>) with a rule that names
 * our subnet or network. They find what an aborted run left, whose IDs are unknown.
 */
static size_t find_our_chains(char names[][32], size_t max)
{
    const char *argv[] = {"iptables", "-w", "-t", "nat", "-S", NULL};
    char *text = NULL, *save = NULL;
    size_t n = 0;

    if (run(argv, NULL, NULL, &text) != 0) {
        free(text);
        return 0;
    }
    for (char *line = strtok_r(text, "\n", &save); line != NULL && n < max; line = strtok_r(NULL, "\n", &save)) {
        char chain[64];
        int known = 0;

        if (sscanf(line, "-A %63s ", chain) != 1 || strncmp(chain, "CNI-", 4) != 0 ||
            strncmp(chain, "CNI-HOSTPORT-", 13) == 0 || strlen(chain) >= 32)
            continue;
        if (strstr(line, " " IP_PREFIX) == NULL && strstr(line, "name: \\\"" NET "\\\"") == NULL)
            continue;
        for (size_t i = 0; i < n; i++)
            known |= strcmp(names[i], chain) == 0;
        if (!known)
            memcpy(names[n++], chain, strlen(chain) + 1);
    }
    free(text);
    return n;
}

/* Remove every trace of nmtest2 and of the fixture's allocations from the host. */
static void remove_test_state(struct fixture *f)
{
    const char *del_bridge[] = {"ip", "link", "del", NET, NULL};
    char chains[64][32];
    size_t n_chains;

    for (size_t i = 0; i < f->n_ids; i++) {
        char path[128];

        snprintf(path, sizeof(path), "%s/%s", NETNS_DIR, f->ids[i]);
        while (is_mounted_netns(path) && umount2(path, MNT_DETACH) == 0)
            ;
        unlink(path);
    }
    n_chains = find_our_chains(chains, 64);
    ipt_delete_matching("nat", match_our_nat_rule, f);
    for (size_t i = 0; i < n_chains; i++)
        ipt_drop_chain("nat", chains[i]);
    for (size_t i = 0; i < f->n_ids; i++) {
        char masq[32], dnat[32];

        chain_names(f->ids[i], masq, dnat);
        ipt_drop_chain("nat", masq);
        ipt_drop_chain("nat", dnat);
    }
    ipt_delete_matching("filter", match_our_filter_rule, f);
    ipt_drop_chain("filter", ADMIN_CHAIN);
    for (size_t i = 0; i < f->n_veths; i++) {
        const char *argv[] = {"ip", "link", "del", f->veths[i], NULL};

        if (link_exists(f->veths[i]))
            run(argv, NULL, NULL, NULL);
    }
    if (link_exists(NET))
        run(del_bridge, NULL, NULL, NULL);
}

/* ---- building allocations with the real plugins ---- */

static char *conflist_text(const char *data_dir)
{
    char *text = NULL;

    assert_true(asprintf(&text,
                         "{\"cniVersion\":\"0.4.0\",\"name\":\"" NET "\",\"plugins\":["
                         "{\"type\":\"loopback\"},"
                         "{\"type\":\"bridge\",\"bridge\":\"" NET "\",\"ipMasq\":true,\"isGateway\":true,"
                         "\"forceAddress\":true,\"hairpinMode\":false,\"ipam\":{\"type\":\"host-local\","
                         "\"ranges\":[[{\"subnet\":\"" SUBNET "\"}]],\"routes\":[{\"dst\":\"0.0.0.0/0\"}],"
                         "\"dataDir\":\"%s\"}},"
                         "{\"type\":\"firewall\",\"backend\":\"iptables\",\"iptablesAdminChainName\":\"" ADMIN_CHAIN
                         "\"},"
                         "{\"type\":\"portmap\",\"capabilities\":{\"portMappings\":true},\"snat\":true}]}",
                         data_dir) > 0);
    return text;
}

/* One tcp and one udp mapping per port, with go-cni's capitalised keys, as Nomad passes them. */
static cJSON *port_mappings(int host_port, int container_port)
{
    cJSON *list = cJSON_CreateArray();

    for (int i = 0; i < 2 && host_port > 0; i++) {
        cJSON *m = cJSON_CreateObject();

        cJSON_AddNumberToObject(m, "HostPort", host_port);
        cJSON_AddNumberToObject(m, "ContainerPort", container_port);
        cJSON_AddStringToObject(m, "Protocol", i == 0 ? "tcp" : "udp");
        cJSON_AddStringToObject(m, "HostIP", "");
        cJSON_AddItemToArray(list, m);
    }
    return list;
}

static cJSON *cni_args_json(const char *id)
{
    const char *pairs[][2] = {{"IgnoreUnknown", "true"},     {"NOMAD_REGION", "global"},
                              {"NOMAD_NAMESPACE", "default"}, {"NOMAD_JOB_ID", "nmtest2"},
                              {"NOMAD_GROUP_NAME", "group"},  {"NOMAD_ALLOC_ID", id}};
    cJSON *list = cJSON_CreateArray();

    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
        cJSON_AddItemToArray(list, cJSON_CreateStringArray(pairs[i], 2));
    return list;
}

/* Write a cache file with libcni's keys and key order. */
static void write_cache(const char *path, const char *id, const char *conflist, const char *netns,
                        cJSON *cni_args, cJSON *capability_args, cJSON *result)
{
    cJSON *root = cJSON_CreateObject();
    char *config = base64_encode(conflist), *text;

    cJSON_AddStringToObject(root, "kind", "cniCacheV1");
    cJSON_AddStringToObject(root, "containerId", id);
    cJSON_AddStringToObject(root, "config", config);
    cJSON_AddStringToObject(root, "ifName", "eth0");
    cJSON_AddStringToObject(root, "networkName", NET);
    cJSON_AddStringToObject(root, "netns", netns);
    cJSON_AddItemToObject(root, "cniArgs", cni_args);
    cJSON_AddItemToObject(root, "capabilityArgs", capability_args);
    cJSON_AddItemToObject(root, "result", result);
    text = cJSON_PrintUnformatted(root);
    assert_non_null(text);
    write_text(path, text, 0600);
    free(text);
    free(config);
    cJSON_Delete(root);
}

static void remember_id(struct fixture *f, const char *id)
{
    assert_true(f->n_ids < MAX_IDS);
    snprintf(f->ids[f->n_ids++], HOST_ID_LEN + 1, "%s", id);
}

/*
 * Create a namespace and run CNI ADD of the nmtest2 conflist in it, the way
 * libcni does for Nomad, then write the libcni cache. host_port 0 maps no port.
 */
static void make_alloc(struct fixture *f, struct alloc *a, const char *data_dir, int host_port)
{
    char *conflist = conflist_text(data_dir);
    cJSON *list = cJSON_Parse(conflist), *prev = NULL, *plugin, *item, *caps, *args;
    cJSON *mappings = port_mappings(host_port, 8080);
    char env_id[96], env_netns[192], env_args[600], *env_path = NULL, cni_args[512] = "";
    const char *add_argv[] = {"ip", "netns", "add", NULL, NULL};

    memset(a, 0, sizeof(*a));
    new_id(a->id);
    add_argv[3] = a->id;
    remember_id(f, a->id);
    chain_names(a->id, a->masq, a->dnat);
    snprintf(a->netns, sizeof(a->netns), "%s/%s", NETNS_DIR, a->id);
    snprintf(a->cache, sizeof(a->cache), "%s/%s-%s-eth0", f->results, NET, a->id);
    args = cni_args_json(a->id);
    assert_int_equal(run(add_argv, NULL, NULL, NULL), 0);

    cJSON_ArrayForEach(item, args) {
        if (cni_args[0] != '\0')
            strcat(cni_args, ";");
        strcat(cni_args, cJSON_GetArrayItem(item, 0)->valuestring);
        strcat(cni_args, "=");
        strcat(cni_args, cJSON_GetArrayItem(item, 1)->valuestring);
    }
    snprintf(env_id, sizeof(env_id), "CNI_CONTAINERID=%s", a->id);
    snprintf(env_netns, sizeof(env_netns), "CNI_NETNS=%s", a->netns);
    snprintf(env_args, sizeof(env_args), "CNI_ARGS=%s", cni_args);
    assert_true(asprintf(&env_path, "PATH=%s", getenv("PATH")) > 0);

    cJSON_ArrayForEach(plugin, cJSON_GetObjectItem(list, "plugins")) {
        const char *type = cJSON_GetObjectItem(plugin, "type")->valuestring;
        const char *envp[] = {"CNI_COMMAND=ADD", env_id, env_netns, "CNI_IFNAME=eth0", env_args,
                              "CNI_PATH=" PLUGIN_DIR, env_path, NULL};
        char bin[256], *input, *out = NULL;
        cJSON *conf = cJSON_Duplicate(plugin, 1);
        int rc;

        cJSON_AddStringToObject(conf, "name", NET);
        cJSON_AddStringToObject(conf, "cniVersion", "0.4.0");
        if (prev != NULL)
            cJSON_AddItemToObject(conf, "prevResult", cJSON_Duplicate(prev, 1));
        caps = cJSON_GetObjectItem(plugin, "capabilities");
        if (cJSON_IsTrue(cJSON_GetObjectItem(caps, "portMappings")) && cJSON_GetArraySize(mappings) > 0) {
            cJSON *runtime = cJSON_AddObjectToObject(conf, "runtimeConfig");

            cJSON_AddItemToObject(runtime, "portMappings", cJSON_Duplicate(mappings, 1));
        }
        input = cJSON_PrintUnformatted(conf);
        cJSON_Delete(conf);
        snprintf(bin, sizeof(bin), "%s/%s", PLUGIN_DIR, type);
        {
            const char *argv[] = {bin, NULL};

            rc = run(argv, envp, input, &out);
        }
        free(input);
        if (rc != 0)
            print_error("CNI ADD plugin %s failed (%d): %s\n", type, rc, out != NULL ? out : "");
        assert_int_equal(rc, 0);
        cJSON_Delete(prev);
        prev = cJSON_Parse(out);
        free(out);
        assert_non_null(prev);
    }

    cJSON_ArrayForEach(item, cJSON_GetObjectItem(prev, "ips")) {
        const char *address = cJSON_GetObjectItem(item, "address")->valuestring;

        snprintf(a->ip, sizeof(a->ip), "%.*s", (int)strcspn(address, "/"), address);
    }
    cJSON_ArrayForEach(item, cJSON_GetObjectItem(prev, "interfaces")) {
        const char *name = cJSON_GetObjectItem(item, "name")->valuestring;

        if (cJSON_GetObjectItem(item, "sandbox") == NULL && strcmp(name, NET) != 0)
            snprintf(a->veth, sizeof(a->veth), "%s", name);
    }
    assert_true(strncmp(a->ip, IP_PREFIX, strlen(IP_PREFIX)) == 0);
    assert_true(a->veth[0] != '\0');
    assert_true(f->n_veths < MAX_IDS);
    snprintf(f->veths[f->n_veths++], sizeof(f->veths[0]), "%s", a->veth);
    snprintf(a->reservation, sizeof(a->reservation), "%s/%s/%s", data_dir, NET, a->ip);

    {
        cJSON *capability_args = cJSON_CreateObject();

        cJSON_AddItemToObject(capability_args, "portMappings", mappings);
        write_cache(a->cache, a->id, conflist, a->netns, args, capability_args, prev);
    }
    cJSON_Delete(list);
    free(conflist);
    free(env_path);
}

/* Every per-allocation artefact of a, as the tests see it, must exist. */
static void assert_alloc_present(const struct alloc *a, int with_ports)
{
    char needle[128];

    assert_true(is_mounted_netns(a->netns));
    assert_true(chain_exists("nat", a->masq));
    snprintf(needle, sizeof(needle), "-A POSTROUTING -s %s/32", a->ip);
    assert_int_equal(ipt_count("nat", needle), 1);
    assert_int_equal(chain_exists("nat", a->dnat), with_ports);
    snprintf(needle, sizeof(needle), "dnat name: \\\"%s\\\" id: \\\"%s\\\"", NET, a->id);
    assert_int_equal(ipt_count("nat", needle), with_ports ? 2 : 0);
    snprintf(needle, sizeof(needle), "%s/32", a->ip);
    assert_int_equal(ipt_count("filter", needle), 2);
    assert_true(path_exists(a->reservation));
    assert_true(path_exists(a->cache));
    assert_true(link_exists(a->veth));
}

/* Nothing of a may be left on the host. */
static void assert_alloc_gone(const struct fixture *f, const struct alloc *a)
{
    char needle[128], path[512];

    assert_false(path_exists(a->netns));
    assert_false(chain_exists("nat", a->masq));
    assert_false(chain_exists("nat", a->dnat));
    assert_int_equal(ipt_count("nat", a->id), 0);
    snprintf(needle, sizeof(needle), " %s/32", a->ip);
    assert_int_equal(ipt_count("nat", needle), 0);
    assert_int_equal(ipt_count("filter", needle), 0);
    snprintf(path, sizeof(path), "%s/%s/%s", f->ipam, NET, a->ip);
    assert_false(path_exists(path));
    snprintf(path, sizeof(path), "%s/%s/%s", f->legacy, NET, a->ip);
    assert_false(path_exists(path));
    assert_false(path_exists(a->cache));
    assert_false(link_exists(a->veth));
}

/* The shared infrastructure the plugins made must still be there. */
static void assert_shared_intact(const char *data_dir)
{
    char path[512];

    assert_true(link_exists(NET));
    assert_true(chain_exists("nat", "CNI-HOSTPORT-DNAT"));
    assert_true(chain_exists("nat", "CNI-HOSTPORT-MASQ"));
    assert_true(chain_exists("nat", "CNI-HOSTPORT-SETMARK"));
    assert_true(ipt_count("nat", "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT") >= 1);
    assert_true(chain_exists("filter", "CNI-FORWARD"));
    assert_int_equal(ipt_count("filter", "-A CNI-FORWARD -m comment --comment \"CNI firewall plugin admin "
                                         "overrides\" -j " ADMIN_CHAIN),
                     1);
    assert_true(chain_exists("filter", ADMIN_CHAIN));
    snprintf(path, sizeof(path), "%s/%s/lock", data_dir, NET);
    assert_true(path_exists(path));
    snprintf(path, sizeof(path), "%s/%s/last_reserved_ip.0", data_dir, NET);
    assert_true(path_exists(path));
}

static const struct host_step *find_step(const struct host_cleanup_report *r, const char *name)
{
    for (size_t i = 0; i < r->n_steps; i++) {
        if (strcmp(r->steps[i].name, name) == 0)
            return &r->steps[i];
    }
    print_error("no step \"%s\" in the report\n", name);
    return NULL;
}

static void print_report(const struct host_cleanup_report *r)
{
    for (size_t i = 0; i < r->n_steps; i++)
        print_message("  %-18s ok=%d skipped=%d %s\n", r->steps[i].name, r->steps[i].ok, r->steps[i].skipped,
                      r->steps[i].detail != NULL ? r->steps[i].detail : "");
    if (r->remaining != NULL) {
        char *text = cJSON_PrintUnformatted(r->remaining);

        print_message("  remaining: %s\n", text);
        free(text);
    }
}

/* Run the cleanup and print its report when rc is not what the test expects, or a success left something. */
static int cleanup(struct fixture *f, const char *id, struct host_cleanup_report *r, int expected_rc)
{
    int rc = host_cleanup_alloc(&f->paths, id, r);

    if (rc != expected_rc || (expected_rc == 0 && !r->complete))
        print_report(r);
    return rc;
}

#define assert_step(r, name, want_ok, want_skipped)                                         \
    do {                                                                                    \
        const struct host_step *st_ = find_step((r), (name));                               \
        assert_non_null(st_);                                                               \
        if (st_->ok != (want_ok) || st_->skipped != (want_skipped))                         \
            print_error("step %s: ok=%d skipped=%d: %s\n", (name), st_->ok, st_->skipped,  \
                        st_->detail ? st_->detail : "");                                    \
        assert_int_equal(st_->ok, (want_ok));                                               \
        assert_int_equal(st_->skipped, (want_skipped));                                     \
    } while (0)

#define step_detail(r, name) (find_step((r), (name)) ? find_step((r), (name))->detail : NULL)

/* ---- fixture ---- */

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/nm-cleanup-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        print_error("mkdtemp failed: %s\n", strerror(errno));
        free(f);
        return -1;
    }
    snprintf(f->ipam, sizeof(f->ipam), "%s/ipam", f->dir);
    snprintf(f->legacy, sizeof(f->legacy), "%s/legacy", f->dir);
    snprintf(f->results, sizeof(f->results), "%s/results", f->dir);
    snprintf(f->bin, sizeof(f->bin), "%s/bin", f->dir);
    snprintf(f->calls, sizeof(f->calls), "%s/calls", f->dir);
    if (mkdir(f->results, 0700) != 0 || mkdir(f->bin, 0755) != 0 || mkdir(f->calls, 0755) != 0)
        return -1;

    host_paths_defaults(&f->paths);
    free(f->paths.cni_cache_dir);
    free(f->paths.ipam_dir);
    free(f->paths.ipam_dir_legacy);
    free(f->paths.network_name);
    free(f->paths.bridge_name);
    free(f->paths.cni_path);
    f->paths.cni_cache_dir = strdup(f->results);
    f->paths.ipam_dir = strdup(f->ipam);
    f->paths.ipam_dir_legacy = strdup(f->legacy);
    f->paths.network_name = strdup(NET);
    f->paths.bridge_name = strdup(NET);
    f->paths.cni_path = strdup(PLUGIN_DIR);
    f->paths.command_timeout_ms = 20000;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    if (geteuid() == 0)
        remove_test_state(f);
    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    host_paths_free(&f->paths);
    free(f);
    return 0;
}

/* Remember ip_forward (the bridge plugin turns it on) and clear what an aborted run left. */
static int group_setup(void **state)
{
    struct fixture f;
    char *text = read_text("/proc/sys/net/ipv4/ip_forward");

    (void)state;
    if (text != NULL)
        saved_ip_forward = text[0];
    free(text);
    memset(&f, 0, sizeof(f));
    if (geteuid() == 0)
        remove_test_state(&f);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (saved_ip_forward == '0' && geteuid() == 0) {
        FILE *fp = fopen("/proc/sys/net/ipv4/ip_forward", "w");

        if (fp != NULL) {
            fputs("0\n", fp);
            fclose(fp);
        }
    }
    return 0;
}

/* ---- fake plugins ---- */

/* A plugin script that records its stdin and environment, then runs tail (shell code). */
static void write_fake_plugin(const struct fixture *f, const char *dir, const char *type, const char *tail)
{
    char path[512], *script = NULL;

    snprintf(path, sizeof(path), "%s/%s", dir, type);
    assert_true(asprintf(&script,
                         "#!/bin/sh\n"
                         "echo '%s' >> '%s/order'\n"
                         "cat > '%s/%s.stdin'\n"
                         "env > '%s/%s.env'\n"
                         "%s\n",
                         type, f->calls, f->calls, type, f->calls, type, tail) > 0);
    write_text(path, script, 0755);
    free(script);
}

static void write_fake_plugins(const struct fixture *f)
{
    const char *types[] = {"loopback", "bridge", "firewall", "portmap"};

    for (size_t i = 0; i < 4; i++)
        write_fake_plugin(f, f->bin, types[i], "exit 0");
}

/* A cache for id with the nmtest2 conflist and a plausible result, for the fake plugins. */
static void write_fake_cache(const struct fixture *f, const char *id, const char *netns, char *path, size_t pathsz)
{
    char *conflist = conflist_text(f->ipam);
    cJSON *result = cJSON_Parse("{\"cniVersion\":\"0.4.0\",\"interfaces\":[{\"name\":\"" NET "\"},"
                                "{\"name\":\"vethfake01\"},{\"name\":\"eth0\",\"sandbox\":\"/var/run/netns/x\"}],"
                                "\"ips\":[{\"version\":\"4\",\"interface\":2,\"address\":\"172.26.82.250/24\"}]}");
    cJSON *caps = cJSON_CreateObject();

    cJSON_AddItemToObject(caps, "portMappings", port_mappings(28209, 8080));
    snprintf(path, pathsz, "%s/%s-%s-eth0", f->results, NET, id);
    write_cache(path, id, conflist, netns, cni_args_json(id), caps, result);
    free(conflist);
}

/* Forget what the fake plugins recorded so far. */
static void reset_calls(const struct fixture *f)
{
    nftw(f->calls, remove_entry, 4, FTW_DEPTH | FTW_PHYS);
    assert_int_equal(mkdir(f->calls, 0755), 0);
}

static char *call_file(const struct fixture *f, const char *name)
{
    char path[512];

    snprintf(path, sizeof(path), "%s/%s", f->calls, name);
    return read_text(path);
}

/* ---- base64 and names ---- */

static void test_base64_decodes_valid(void **state)
{
    static const struct {
        const char *in, *out;
        size_t len;
    } cases[] = {
        {"", "", 0},
        {"Zg==", "f", 1},
        {"Zm8=", "fo", 2},
        {"Zm9v", "foo", 3},
        {"Zm9vYmFy", "foobar", 6},
        {"+/+/", "\xfb\xff\xbf", 3},
        {"AAE=", "\x00\x01", 2},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned char *out = NULL;
        size_t len = 99;
        int rc = cni_base64_decode(cases[i].in, strlen(cases[i].in), &out, &len);

        if (rc != 0)
            print_error("case \"%s\": rc %d\n", cases[i].in, rc);
        assert_int_equal(rc, 0);
        assert_int_equal(len, cases[i].len);
        assert_memory_equal(out, cases[i].out, cases[i].len);
        assert_int_equal(out[len], '\0');
        free(out);
    }
}

static void test_base64_rejects_invalid(void **state)
{
    static const char *const cases[] = {
        "Zg",       /* length not a multiple of 4 */
        "Zg=",      /* same */
        "Z===",     /* three padding characters */
        "=Zm9",     /* padding first */
        "Zg==Zm9v", /* padding in the middle */
        "Zm9v\n",   /* whitespace */
        "Zm 9",     /* space */
        "Zm-v",     /* URL-safe alphabet */
        "Zm_v",     /* URL-safe alphabet */
        "Zh==",     /* nonzero bits under the padding */
        "Zm9=",     /* same, one padding character */
        "Zm=v",     /* padding before data */
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned char *out = (unsigned char *)"x";
        size_t len = 99;
        int rc = cni_base64_decode(cases[i], strlen(cases[i]), &out, &len);

        if (rc != 1)
            print_error("case %zu \"%s\": rc %d\n", i, cases[i], rc);
        assert_int_equal(rc, 1);
        assert_null(out);
    }
}

static void test_names_validated(void **state)
{
    (void)state;
    assert_true(cni_is_uuid("8d5f9a3e-5c1b-4c0e-9f3a-2b7d6e1c4a01"));
    assert_false(cni_is_uuid("8D5F9A3E-5C1B-4C0E-9F3A-2B7D6E1C4A01"));
    assert_false(cni_is_uuid("8d5f9a3e-5c1b-4c0e-9f3a-2b7d6e1c4a0"));
    assert_false(cni_is_uuid("8d5f9a3e-5c1b-4c0e-9f3a-2b7d6e1c4a011"));
    assert_false(cni_is_uuid("8d5f9a3e05c1b-4c0e-9f3a-2b7d6e1c4a01"));
    assert_false(cni_is_uuid("../../../../etc/passwd-aaaaaaaaaaaaa"));
    assert_false(cni_is_uuid(NULL));

    assert_true(cni_is_ifname("veth8e2ed676"));
    assert_true(cni_is_ifname("eth0"));
    assert_true(cni_is_ifname("a_b.c-d"));
    assert_true(cni_is_ifname("abcdefghijklmno"));
    assert_false(cni_is_ifname("abcdefghijklmnop"));
    assert_false(cni_is_ifname(""));
    assert_false(cni_is_ifname("."));
    assert_false(cni_is_ifname(".."));
    assert_false(cni_is_ifname("eth0/x"));
    assert_false(cni_is_ifname("eth 0"));
    assert_false(cni_is_ifname("eth0;rm"));

    assert_true(cni_is_plugin_type("host-local"));
    assert_true(cni_is_plugin_type("consul-cni"));
    assert_false(cni_is_plugin_type("../sh"));
    assert_false(cni_is_plugin_type(".."));
    assert_false(cni_is_plugin_type(".hidden"));
    assert_false(cni_is_plugin_type("/bin/sh"));
    assert_false(cni_is_plugin_type("a/b"));
    assert_false(cni_is_plugin_type(""));
    assert_false(cni_is_plugin_type("sh -c"));

    assert_true(cni_is_network_name("nomad"));
    assert_true(cni_is_network_name("my-net_1.x"));
    assert_false(cni_is_network_name("-net"));
    assert_false(cni_is_network_name("../x"));
    assert_false(cni_is_network_name(""));
}

/* ---- cache files ---- */

static void test_cache_find_lists_alloc_files(void **state)
{
    struct fixture *f = *state;
    char id[HOST_ID_LEN + 1], other[HOST_ID_LEN + 1], path[512], err[256] = "";
    /* Only the first two belong to id: the others name another allocation, network or bad ifname. */
    static const char *const patterns[] = {NET "-%s-eth0",  NET "-%s-eth1", NET "-%s-..",
                                           "nomad-%s-eth0", NET "-%s-waytoolonginterfacename"};
    char **files = NULL;
    size_t n = 0;

    new_id(id);
    new_id(other);
    for (size_t i = 0; i < sizeof(patterns) / sizeof(patterns[0]); i++) {
        char name[128];

        snprintf(name, sizeof(name), patterns[i], id);
        snprintf(path, sizeof(path), "%s/%s", f->results, name);
        write_text(path, "{}", 0600);
    }
    snprintf(path, sizeof(path), "%s/" NET "-%s-eth0", f->results, other);
    write_text(path, "{}", 0600);

    assert_int_equal(cni_cache_find(&f->paths, id, &files, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 2);
    snprintf(path, sizeof(path), "%s/" NET "-%s-eth0", f->results, id);
    assert_string_equal(files[0], path);
    snprintf(path, sizeof(path), "%s/" NET "-%s-eth1", f->results, id);
    assert_string_equal(files[1], path);
    for (size_t i = 0; i < n; i++)
        free(files[i]);
    free(files);

    /* A missing directory yields no cache files. */
    free(f->paths.cni_cache_dir);
    f->paths.cni_cache_dir = strdup("/nonexistent/nm-cleanup-results");
    assert_int_equal(cni_cache_find(&f->paths, id, &files, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 0);
    assert_null(files);
}

static void test_cache_load_reads_fields(void **state)
{
    struct fixture *f = *state;
    char id[HOST_ID_LEN + 1], path[512], err[1024] = "";
    struct cni_cache cache;

    new_id(id);
    write_fake_cache(f, id, "/proc/1/ns/net", path, sizeof(path));
    if (cni_cache_load(&f->paths, id, path, &cache, err, sizeof(err)) != 0)
        print_error("%s\n", err);
    assert_string_equal(cache.container_id, id);
    assert_string_equal(cache.ifname, "eth0");
    assert_string_equal(cache.network, NET);
    assert_string_equal(cache.cni_version, "0.4.0");
    assert_string_equal(cache.netns, "/proc/1/ns/net");
    assert_contains(cache.cni_args, "IgnoreUnknown=true;NOMAD_REGION=global;");
    assert_contains(cache.cni_args, ";NOMAD_ALLOC_ID=");
    assert_contains(cache.cni_args, id);
    assert_int_equal(cache.n_ips, 1);
    assert_string_equal(cache.ips[0], "172.26.82.250");
    /* The bridge is in the result without a sandbox too, but it is not the allocation's. */
    assert_int_equal(cache.n_host_ifaces, 1);
    assert_string_equal(cache.host_ifaces[0], "vethfake01");
    assert_non_null(cache.result);
    assert_non_null(cache.capability_args);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(cache.conflist, "plugins")), 4);
    cni_cache_free(&cache);
}

/* Rewrite one top-level field of a good cache file (value is JSON text, NULL removes it). */
static void set_cache_field(const char *path, const char *key, const char *value)
{
    char *text = read_text(path);
    cJSON *root = cJSON_Parse(text);

    free(text);
    assert_non_null(root);
    cJSON_DeleteItemFromObject(root, key);
    if (value != NULL)
        cJSON_AddItemToObject(root, key, cJSON_Parse(value));
    text = cJSON_PrintUnformatted(root);
    write_text(path, text, 0600);
    free(text);
    cJSON_Delete(root);
}

static void set_cache_config(const char *path, const char *conflist)
{
    char *b64 = base64_encode(conflist), *json = NULL;

    assert_true(asprintf(&json, "\"%s\"", b64) > 0);
    set_cache_field(path, "config", json);
    free(json);
    free(b64);
}

static void test_cache_load_rejects_bad_content(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *key, *value, *conflist, *expected;
    } cases[] = {
        {"kind", "\"cniCacheV2\"", NULL, "kind is \"cniCacheV2\""},
        {"containerId", "\"11111111-2222-3333-4444-555555555555\"", NULL, "is not the allocation ID"},
        {"containerId", "\"../../x\"", NULL, "containerId \"../../x\""},
        {"ifName", "\"../eth0\"", NULL, "ifName \"../eth0\" is not a valid interface name"},
        {"ifName", "\"eth1\"", NULL, "the file name does not match"},
        {"networkName", "\"nomad\"", NULL, "networkName \"nomad\" is not the network"},
        {"config", "\"Zm9v!!==\"", NULL, "\"config\" is not valid base64"},
        {"config", "\"Zm9v\"", NULL, "does not decode to a JSON object"},
        {"config", NULL, NULL, "it has no \"config\""},
        {"cniArgs", "[[\"a\"]]", NULL, "not a [key, value] pair"},
        {"cniArgs", "[[\"a;b\",\"c\"]]", NULL, "a ';' or '='"},
        {"cniArgs", "[[\"a\",\"b=c\"]]", NULL, "a ';' or '='"},
        {"result", "[]", NULL, "\"result\" is not an object"},
        {NULL, NULL, "{\"cniVersion\":\"0.4.0\",\"name\":\"nomad\",\"plugins\":[{\"type\":\"loopback\"}]}",
         "conflist's name is \"nomad\""},
        {NULL, NULL, "{\"cniVersion\":\"0.4.0\",\"name\":\"" NET "\",\"plugins\":[{\"type\":\"../sh\"}]}",
         "type \"../sh\", which is not a plain file name"},
        {NULL, NULL, "{\"cniVersion\":\"0.4.0\",\"name\":\"" NET "\",\"plugins\":[{\"type\":\"/bin/sh\"}]}",
         "type \"/bin/sh\""},
        {NULL, NULL, "{\"cniVersion\":\"0.4.0\",\"name\":\"" NET "\",\"plugins\":[]}", "no \"plugins\" array"},
        {NULL, NULL, "{\"cniVersion\":\"x\",\"name\":\"" NET "\",\"plugins\":[{\"type\":\"bridge\"}]}",
         "cniVersion \"x\" is not a version number"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char id[HOST_ID_LEN + 1], path[512], err[1024] = "";
        struct cni_cache cache;
        int rc;

        new_id(id);
        write_fake_cache(f, id, "", path, sizeof(path));
        if (cases[i].key != NULL)
            set_cache_field(path, cases[i].key, cases[i].value);
        else
            set_cache_config(path, cases[i].conflist);
        rc = cni_cache_load(&f->paths, id, path, &cache, err, sizeof(err));
        if (rc != 1 || strstr(err, cases[i].expected) == NULL)
            print_error("case %zu: rc %d, err \"%s\", expected \"%s\"\n", i, rc, err, cases[i].expected);
        assert_int_equal(rc, 1);
        assert_contains(err, cases[i].expected);
        assert_contains(err, path);
        assert_null(cache.conflist);
        unlink(path);
    }
}

static void test_cache_load_rejects_bad_files(void **state)
{
    struct fixture *f = *state;
    char id[HOST_ID_LEN + 1], path[512], target[512], err[1024] = "";
    struct cni_cache cache;
    char *big;

    new_id(id);
    snprintf(path, sizeof(path), "%s/%s-%s-eth0", f->results, NET, id);

    write_text(path, "{\"kind\":", 0600);
    assert_int_equal(cni_cache_load(&f->paths, id, path, &cache, err, sizeof(err)), 1);
    assert_contains(err, "not a JSON object");
    unlink(path);

    /* The older format contains only the result, without the conflist DEL needs. */
    write_text(path, "{\"cniVersion\":\"0.4.0\",\"ips\":[]}", 0600);
    assert_int_equal(cni_cache_load(&f->paths, id, path, &cache, err, sizeof(err)), 1);
    assert_contains(err, "holds only a result");
    unlink(path);

    /* A symbolic link is not followed. */
    snprintf(target, sizeof(target), "%s/target", f->dir);
    write_fake_cache(f, id, "", path, sizeof(path));
    assert_int_equal(rename(path, target), 0);
    assert_int_equal(symlink(target, path), 0);
    assert_int_equal(cni_cache_load(&f->paths, id, path, &cache, err, sizeof(err)), 1);
    assert_contains(err, "cannot open");
    unlink(path);

    big = malloc(CNI_CACHE_MAX_BYTES + 2);
    assert_non_null(big);
    memset(big, ' ', CNI_CACHE_MAX_BYTES + 1);
    big[CNI_CACHE_MAX_BYTES + 1] = '\0';
    write_text(path, big, 0600);
    free(big);
    assert_int_equal(cni_cache_load(&f->paths, id, path, &cache, err, sizeof(err)), 1);
    assert_contains(err, "more than the limit");
    unlink(path);

    assert_int_equal(cni_cache_load(&f->paths, "not-an-id", path, &cache, err, sizeof(err)), 1);
    assert_contains(err, "invalid allocation ID \"not-an-id\"");
}

/* ---- DEL with fake plugins ---- */

static void load_fake_cache(struct fixture *f, const char *id, const char *netns, struct cni_cache *cache)
{
    char path[512], err[1024] = "";

    write_fake_cache(f, id, netns, path, sizeof(path));
    if (cni_cache_load(&f->paths, id, path, cache, err, sizeof(err)) != 0)
        print_error("%s\n", err);
    assert_non_null(cache->conflist);
}

static void test_del_runs_plugins_like_libcni(void **state)
{
    struct fixture *f = *state;
    char id[HOST_ID_LEN + 1], *text, expect[512], *cni_path = NULL;
    struct cni_cache cache;
    struct cni_del_outcome out;
    cJSON *conf;

    write_fake_plugins(f);
    /* Relative and empty entries are skipped, and the first directory that has the plugin wins. */
    assert_true(asprintf(&cni_path, "relative/dir::%s:%s", f->bin, PLUGIN_DIR) > 0);
    free(f->paths.cni_path);
    f->paths.cni_path = cni_path;
    new_id(id);
    load_fake_cache(f, id, "/proc/1/ns/net", &cache);

    assert_int_equal(cni_del(&f->paths, &cache, "", &out), 0);
    assert_int_equal(out.status, CNI_DEL_DONE);
    assert_int_equal(out.plugins_run, 4);
    text = call_file(f, "order");
    assert_string_equal(text, "portmap\nfirewall\nbridge\nloopback\n");
    free(text);

    /* Environment: the cached values, and CNI_NETNS as passed, never the cache's "netns". */
    text = call_file(f, "bridge.env");
    assert_contains(text, "CNI_COMMAND=DEL\n");
    snprintf(expect, sizeof(expect), "CNI_CONTAINERID=%s\n", id);
    assert_contains(text, expect);
    assert_contains(text, "CNI_NETNS=\n");
    assert_not_contains(text, "/proc/1/ns/net");
    assert_contains(text, "CNI_IFNAME=eth0\n");
    snprintf(expect, sizeof(expect), "CNI_ARGS=IgnoreUnknown=true;NOMAD_REGION=global;NOMAD_NAMESPACE=default;"
                                     "NOMAD_JOB_ID=nmtest2;NOMAD_GROUP_NAME=group;NOMAD_ALLOC_ID=%s\n", id);
    assert_contains(text, expect);
    snprintf(expect, sizeof(expect), "CNI_PATH=%s\n", f->paths.cni_path);
    assert_contains(text, expect);
    assert_contains(text, "\nPATH=");
    free(text);

    /* stdin: the plugin object plus name, cniVersion and the cached result as prevResult. */
    text = call_file(f, "bridge.stdin");
    conf = cJSON_Parse(text);
    free(text);
    assert_non_null(conf);
    assert_string_equal(cJSON_GetObjectItem(conf, "type")->valuestring, "bridge");
    assert_string_equal(cJSON_GetObjectItem(conf, "bridge")->valuestring, NET);
    assert_string_equal(cJSON_GetObjectItem(conf, "name")->valuestring, NET);
    assert_string_equal(cJSON_GetObjectItem(conf, "cniVersion")->valuestring, "0.4.0");
    assert_true(cJSON_Compare(cJSON_GetObjectItem(conf, "prevResult"), cache.result, 1));
    assert_null(cJSON_GetObjectItem(conf, "runtimeConfig"));
    cJSON_Delete(conf);

    /* Only portmap declares the portMappings capability, so only it gets runtimeConfig. */
    text = call_file(f, "portmap.stdin");
    conf = cJSON_Parse(text);
    free(text);
    assert_non_null(conf);
    assert_true(cJSON_Compare(cJSON_GetObjectItem(cJSON_GetObjectItem(conf, "runtimeConfig"), "portMappings"),
                              cJSON_GetObjectItem(cache.capability_args, "portMappings"), 1));
    assert_true(cJSON_Compare(cJSON_GetObjectItem(conf, "prevResult"), cache.result, 1));
    cJSON_Delete(conf);

    /* CNI_NETNS carries the path the caller checked. */
    reset_calls(f);
    assert_int_equal(cni_del(&f->paths, &cache, "/var/run/netns/checked", &out), 0);
    text = call_file(f, "loopback.env");
    assert_contains(text, "CNI_NETNS=/var/run/netns/checked\n");
    free(text);
    cni_cache_free(&cache);
}

static void test_del_without_prev_result_before_0_4(void **state)
{
    struct fixture *f = *state;
    char id[HOST_ID_LEN + 1], path[512], err[1024] = "", *text;
    struct cni_cache cache;
    struct cni_del_outcome out;
    cJSON *conf;

    write_fake_plugins(f);
    free(f->paths.cni_path);
    f->paths.cni_path = strdup(f->bin);
    new_id(id);
    write_fake_cache(f, id, "", path, sizeof(path));
    set_cache_config(path, "{\"cniVersion\":\"0.3.1\",\"name\":\"" NET "\",\"plugins\":[{\"type\":\"bridge\"}]}");
    assert_int_equal(cni_cache_load(&f->paths, id, path, &cache, err, sizeof(err)), 0);
    assert_int_equal(cni_del(&f->paths, &cache, "", &out), 0);
    assert_int_equal(out.status, CNI_DEL_DONE);
    text = call_file(f, "bridge.stdin");
    conf = cJSON_Parse(text);
    free(text);
    assert_non_null(conf);
    assert_null(cJSON_GetObjectItem(conf, "prevResult"));
    assert_string_equal(cJSON_GetObjectItem(conf, "cniVersion")->valuestring, "0.3.1");
    cJSON_Delete(conf);
    cni_cache_free(&cache);
}

static void test_del_stops_at_first_failure(void **state)
{
    struct fixture *f = *state;
    char id[HOST_ID_LEN + 1], *text;
    struct cni_cache cache;
    struct cni_del_outcome out;

    write_fake_plugins(f);
    write_fake_plugin(f, f->bin, "firewall",
                      "echo '{\"cniVersion\":\"0.4.0\",\"code\":11,\"msg\":\"firewall exploded\","
                      "\"details\":\"chain gone\"}'; exit 1");
    free(f->paths.cni_path);
    f->paths.cni_path = strdup(f->bin);
    new_id(id);
    load_fake_cache(f, id, "", &cache);

    assert_int_equal(cni_del(&f->paths, &cache, "", &out), 0);
    assert_int_equal(out.status, CNI_DEL_FAILED);
    assert_int_equal(out.plugins_run, 2);
    assert_string_equal(out.plugin, "firewall");
    assert_contains(out.message, "plugin \"firewall\" (2 of 4");
    assert_contains(out.message, "firewall exploded: chain gone (CNI error code 11, exit code 1)");
    text = call_file(f, "order");
    assert_string_equal(text, "portmap\nfirewall\n");
    free(text);
    cni_cache_free(&cache);
}

static void test_del_plugin_timeout_fails(void **state)
{
    struct fixture *f = *state;
    char id[HOST_ID_LEN + 1];
    struct cni_cache cache;
    struct cni_del_outcome out;

    write_fake_plugins(f);
    write_fake_plugin(f, f->bin, "portmap", "exec sleep 30");
    free(f->paths.cni_path);
    f->paths.cni_path = strdup(f->bin);
    f->paths.command_timeout_ms = 300;
    new_id(id);
    load_fake_cache(f, id, "", &cache);

    assert_int_equal(cni_del(&f->paths, &cache, "", &out), 0);
    assert_int_equal(out.status, CNI_DEL_FAILED);
    assert_string_equal(out.plugin, "portmap");
    assert_contains(out.message, "did not finish within 300 ms");
    cni_cache_free(&cache);
}

static void test_del_missing_plugin_runs_nothing(void **state)
{
    struct fixture *f = *state;
    char id[HOST_ID_LEN + 1], path[512];
    struct cni_cache cache;
    struct cni_del_outcome out;

    write_fake_plugins(f);
    snprintf(path, sizeof(path), "%s/loopback", f->bin);
    assert_int_equal(unlink(path), 0);
    free(f->paths.cni_path);
    f->paths.cni_path = strdup(f->bin);
    new_id(id);
    load_fake_cache(f, id, "", &cache);

    assert_int_equal(cni_del(&f->paths, &cache, "", &out), 0);
    assert_int_equal(out.status, CNI_DEL_NOT_RUN);
    assert_int_equal(out.plugins_run, 0);
    assert_string_equal(out.plugin, "loopback");
    assert_contains(out.message, "\"loopback\" was not found");
    assert_null(call_file(f, "order"));
    cni_cache_free(&cache);
}

/* ---- cleanup of real allocations ---- */

static void test_full_leak_removed(void **state)
{
    struct fixture *f = *state;
    struct host_cleanup_report r;
    struct alloc a;

    assert_root();
    make_alloc(f, &a, f->ipam, 28201);
    assert_alloc_present(&a, 1);

    assert_int_equal(cleanup(f, a.id, &r, 0), 0);
    assert_int_equal(r.complete, 1);
    assert_null(r.remaining);
    assert_step(&r, "stale_netns_file", 1, 1);
    assert_step(&r, "cni_del", 1, 0);
    assert_contains(step_detail(&r, "cni_del"), "ran 4 plugins");
    assert_step(&r, "netns_remove", 1, 0);
    assert_step(&r, "cache_remove", 1, 0);
    /* DEL with the namespace mounted removed every rule, so the sweep had nothing to do. */
    assert_step(&r, "sweep_rules", 1, 1);
    assert_step(&r, "sweep_reservations", 1, 1);
    assert_step(&r, "verify", 1, 0);
    assert_alloc_gone(f, &a);
    assert_shared_intact(f->ipam);
    host_cleanup_report_free(&r);
}

static void test_netns_gone_masq_chain_swept(void **state)
{
    struct fixture *f = *state;
    const char *del_argv[] = {"ip", "netns", "del", NULL, NULL};
    struct host_cleanup_report r;
    char needle[96];
    struct alloc a;

    assert_root();
    make_alloc(f, &a, f->ipam, 28202);
    del_argv[3] = a.id;
    assert_int_equal(run(del_argv, NULL, NULL, NULL), 0);
    assert_false(path_exists(a.netns));
    assert_true(chain_exists("nat", a.masq));

    assert_int_equal(cleanup(f, a.id, &r, 0), 0);
    assert_step(&r, "cni_del", 1, 0);
    assert_contains(step_detail(&r, "cni_del"), "CNI_NETNS=\"\"");
    assert_step(&r, "netns_remove", 1, 1);
    /* Without the namespace the bridge plugin cannot find its masquerade chain: the sweep removes it. */
    assert_step(&r, "sweep_rules", 1, 0);
    snprintf(needle, sizeof(needle), "-X %s", a.masq);
    assert_contains(step_detail(&r, "sweep_rules"), needle);
    snprintf(needle, sizeof(needle), "-D POSTROUTING -s %s/32", a.ip);
    assert_contains(step_detail(&r, "sweep_rules"), needle);
    assert_int_equal(r.complete, 1);
    assert_alloc_gone(f, &a);
    assert_shared_intact(f->ipam);
    host_cleanup_report_free(&r);
}

static void test_stale_file_removed_then_del(void **state)
{
    struct fixture *f = *state;
    struct host_cleanup_report r;
    char needle[96];
    struct alloc a;

    assert_root();
    make_alloc(f, &a, f->ipam, 28203);
    assert_int_equal(umount2(a.netns, MNT_DETACH), 0);
    assert_true(path_exists(a.netns));
    assert_false(is_mounted_netns(a.netns));

    assert_int_equal(cleanup(f, a.id, &r, 0), 0);
    assert_step(&r, "stale_netns_file", 1, 0);
    assert_contains(step_detail(&r, "stale_netns_file"), "not a mounted namespace");
    /* With the file gone first, every plugin's DEL succeeds and the cache can go. */
    assert_step(&r, "cni_del", 1, 0);
    assert_contains(step_detail(&r, "cni_del"), "ran 4 plugins");
    assert_step(&r, "cache_remove", 1, 0);
    /* The namespace was already gone, so the bridge plugin left its masquerade chain to the sweep. */
    snprintf(needle, sizeof(needle), "-X %s", a.masq);
    assert_contains(step_detail(&r, "sweep_rules"), needle);
    assert_int_equal(r.complete, 1);
    assert_alloc_gone(f, &a);
    assert_shared_intact(f->ipam);
    host_cleanup_report_free(&r);
}

static void test_legacy_reservation_swept(void **state)
{
    struct fixture *f = *state;
    struct host_cleanup_report r;
    char needle[600];
    struct alloc a;

    assert_root();
    /* Nomad 1.9.3 and earlier set no dataDir: the reservation is under the legacy directory. */
    make_alloc(f, &a, f->legacy, 28204);
    assert_alloc_present(&a, 1);
    /* Without the cache nothing can run DEL: everything is left to the sweep. */
    assert_int_equal(unlink(a.cache), 0);

    assert_int_equal(cleanup(f, a.id, &r, 0), 0);
    assert_step(&r, "cni_del", 1, 1);
    assert_step(&r, "cache_remove", 1, 1);
    assert_step(&r, "sweep_rules", 1, 0);
    snprintf(needle, sizeof(needle), "-X %s", a.dnat);
    assert_contains(step_detail(&r, "sweep_rules"), needle);
    snprintf(needle, sizeof(needle), "-D CNI-FORWARD -s %s/32 -j ACCEPT", a.ip);
    assert_contains(step_detail(&r, "sweep_rules"), needle);
    assert_step(&r, "sweep_reservations", 1, 0);
    snprintf(needle, sizeof(needle), "removed %s", a.reservation);
    assert_contains(step_detail(&r, "sweep_reservations"), needle);
    assert_int_equal(r.complete, 1);
    assert_alloc_gone(f, &a);
    assert_shared_intact(f->legacy);
    host_cleanup_report_free(&r);
}

/* Everything of a that the host shows, as text: rules, chains, reservation, namespace, veth, cache. */
static char *alloc_snapshot(const struct alloc *a)
{
    const char *tables[] = {"nat", "filter"};
    char ip32[96], to[96], *out = NULL, *rest;
    size_t len = 0;
    FILE *mem = open_memstream(&out, &len);

    assert_non_null(mem);
    snprintf(ip32, sizeof(ip32), " %s/32", a->ip);
    snprintf(to, sizeof(to), "--to-destination %s:", a->ip);
    for (size_t t = 0; t < 2; t++) {
        char *text = ipt_save(tables[t]);

        for (char *line = strtok_r(text, "\n", &rest); line != NULL; line = strtok_r(NULL, "\n", &rest)) {
            if (strstr(line, a->id) || strstr(line, a->masq) || strstr(line, a->dnat) || strstr(line, ip32) ||
                strstr(line, to))
                fprintf(mem, "%s: %s\n", tables[t], line);
        }
        free(text);
    }
    {
        char *reservation = read_text(a->reservation), *cache = read_text(a->cache);

        fprintf(mem, "reservation: %s\ncache: %s\n", reservation ? reservation : "(none)", cache ? cache : "(none)");
        free(reservation);
        free(cache);
    }
    fprintf(mem, "netns mounted: %d\nveth: %d\n", is_mounted_netns(a->netns), link_exists(a->veth));
    fclose(mem);
    return out;
}

static void test_live_alloc_untouched(void **state)
{
    struct fixture *f = *state;
    struct host_cleanup_report r;
    struct alloc leaked, live;
    char *before, *after;

    assert_root();
    /* The leaked allocation maps the port first, so its rule shadows the live one's. */
    make_alloc(f, &leaked, f->ipam, 28205);
    make_alloc(f, &live, f->ipam, 28205);
    assert_alloc_present(&leaked, 1);
    assert_alloc_present(&live, 1);
    before = alloc_snapshot(&live);
    assert_int_equal(ipt_count("nat", "--dports 28205 -j CNI-DN-"), 4);

    assert_int_equal(cleanup(f, leaked.id, &r, 0), 0);
    assert_alloc_gone(f, &leaked);
    after = alloc_snapshot(&live);
    assert_string_equal(after, before);
    assert_alloc_present(&live, 1);
    assert_int_equal(ipt_count("nat", "--dports 28205 -j CNI-DN-"), 2);
    assert_shared_intact(f->ipam);
    free(before);
    free(after);
    host_cleanup_report_free(&r);
}

static void test_forward_rules_kept_for_reused_ip(void **state)
{
    struct fixture *f = *state;

    assert_root();
    /* With the cache, DEL must not run (firewall DEL would remove the rules); without it, the sweep decides. */
    for (int with_cache = 1; with_cache >= 0; with_cache--) {
        const char *del_argv[] = {"ip", "netns", "del", NULL, NULL};
        char other[HOST_ID_LEN + 1], needle[256], *content;
        struct host_cleanup_report r;
        struct alloc a;

        make_alloc(f, &a, f->ipam, with_cache ? 28206 : 28208);
        del_argv[3] = a.id;
        assert_int_equal(run(del_argv, NULL, NULL, NULL), 0);
        if (!with_cache)
            assert_int_equal(unlink(a.cache), 0);
        /* host-local gave the address to another allocation after this one's state was lost. */
        new_id(other);
        assert_true(asprintf(&content, "%s\r\neth0", other) > 0);
        write_text(a.reservation, content, 0644);
        free(content);

        assert_int_equal(cleanup(f, a.id, &r, 0), 0);
        assert_step(&r, "cni_del", 1, 1);
        if (with_cache) {
            snprintf(needle, sizeof(needle), "CNI DEL not run because %s is reserved by allocation %s", a.ip,
                     other);
            assert_contains(step_detail(&r, "cni_del"), needle);
            assert_false(path_exists(a.cache));
        }
        snprintf(needle, sizeof(needle), "kept the CNI-FORWARD rules of %s: allocation %s has reserved", a.ip,
                 other);
        assert_contains(step_detail(&r, "sweep_rules"), needle);
        snprintf(needle, sizeof(needle), "%s/32", a.ip);
        assert_int_equal(ipt_count("filter", needle), 2);
        assert_true(path_exists(a.reservation));
        assert_false(chain_exists("nat", a.masq));
        assert_false(chain_exists("nat", a.dnat));
        assert_int_equal(ipt_count("nat", a.id), 0);
        assert_int_equal(r.complete, 1);
        host_cleanup_report_free(&r);

        /* Free the address again, as its new owner's cleanup would, so the next round gets it fresh. */
        assert_int_equal(unlink(a.reservation), 0);
    }
}

static void test_hostile_cache_rejected(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *conflist_type;   /* type of the second plugin */
        int other_container;         /* containerId names another allocation */
        const char *expected;
    } cases[] = {
        {"bridge", 1, "is not the allocation ID"},
        {"../sh", 0, "type \"../sh\", which is not a plain file name"},
    };
    char sh[512], marker[512];

    assert_root();
    /* "../sh" from the plugin directory would reach this script; it must never run. */
    snprintf(sh, sizeof(sh), "%s/sh", f->dir);
    snprintf(marker, sizeof(marker), "%s/marker", f->dir);
    {
        char *script = NULL;

        assert_true(asprintf(&script, "#!/bin/sh\necho ran > '%s'\n", marker) > 0);
        write_text(sh, script, 0755);
        free(script);
    }
    write_fake_plugins(f);
    free(f->paths.cni_path);
    f->paths.cni_path = strdup(f->bin);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char id[HOST_ID_LEN + 1], other[HOST_ID_LEN + 1], path[512], conflist[512];
        struct host_cleanup_report r;

        new_id(id);
        new_id(other);
        write_fake_cache(f, id, "/proc/1/ns/net", path, sizeof(path));
        snprintf(conflist, sizeof(conflist),
                 "{\"cniVersion\":\"0.4.0\",\"name\":\"" NET "\",\"plugins\":[{\"type\":\"loopback\"},"
                 "{\"type\":\"%s\"},{\"type\":\"portmap\"}]}",
                 cases[i].conflist_type);
        set_cache_config(path, conflist);
        if (cases[i].other_container) {
            char quoted[64];

            snprintf(quoted, sizeof(quoted), "\"%s\"", other);
            set_cache_field(path, "containerId", quoted);
        }

        assert_int_equal(cleanup(f, id, &r, 1), 1);
        assert_step(&r, "cni_del", 0, 0);
        assert_contains(step_detail(&r, "cni_del"), cases[i].expected);
        assert_contains(step_detail(&r, "cni_del"), "no plugin was run");
        assert_false(path_exists(marker));
        assert_null(call_file(f, "order"));
        /* DEL could not run at all, so the cache is removed and the sweep replaces DEL. */
        assert_step(&r, "cache_remove", 1, 0);
        assert_false(path_exists(path));
        assert_int_equal(r.complete, 1);
        host_cleanup_report_free(&r);
    }
}

static void test_failed_del_keeps_cache_for_retry(void **state)
{
    struct fixture *f = *state;
    struct host_cleanup_report r;
    struct alloc a;

    assert_root();
    make_alloc(f, &a, f->ipam, 28207);
    write_fake_plugins(f);
    write_fake_plugin(f, f->bin, "firewall", "echo '{\"code\":11,\"msg\":\"firewall exploded\"}'; exit 1");
    free(f->paths.cni_path);
    f->paths.cni_path = strdup(f->bin);

    assert_int_equal(cleanup(f, a.id, &r, 1), 1);
    assert_step(&r, "cni_del", 0, 0);
    assert_contains(step_detail(&r, "cni_del"), "stopped at plugin \"firewall\"");
    assert_contains(step_detail(&r, "cni_del"), "firewall exploded");
    assert_step(&r, "netns_remove", 1, 0);
    assert_step(&r, "cache_remove", 0, 0);
    assert_contains(step_detail(&r, "cache_remove"), "kept");
    assert_true(path_exists(a.cache));
    /* The sweep removed the rest by name, so only the cache is left. */
    assert_false(chain_exists("nat", a.masq));
    assert_false(chain_exists("nat", a.dnat));
    assert_false(path_exists(a.reservation));
    assert_int_equal(r.complete, 0);
    assert_non_null(r.remaining);
    host_cleanup_report_free(&r);

    /* With working plugins, the retry runs DEL from the kept cache and finishes. */
    free(f->paths.cni_path);
    f->paths.cni_path = strdup(PLUGIN_DIR);
    assert_int_equal(cleanup(f, a.id, &r, 0), 0);
    assert_step(&r, "cni_del", 1, 0);
    assert_step(&r, "cache_remove", 1, 0);
    assert_int_equal(r.complete, 1);
    assert_alloc_gone(f, &a);
    host_cleanup_report_free(&r);
}

static void test_cleanup_twice_finds_nothing(void **state)
{
    struct fixture *f = *state;
    struct host_cleanup_report r;
    struct alloc a;

    assert_root();
    make_alloc(f, &a, f->ipam, 0);
    assert_alloc_present(&a, 0);
    assert_int_equal(cleanup(f, a.id, &r, 0), 0);
    assert_alloc_gone(f, &a);
    host_cleanup_report_free(&r);

    assert_int_equal(cleanup(f, a.id, &r, 0), 0);
    assert_int_equal(r.complete, 1);
    assert_int_equal(r.n_steps, 8);
    for (size_t i = 0; i + 1 < r.n_steps; i++) {
        if (!r.steps[i].skipped || !r.steps[i].ok)
            print_report(&r);
        assert_int_equal(r.steps[i].ok, 1);
        assert_int_equal(r.steps[i].skipped, 1);
    }
    assert_step(&r, "verify", 1, 0);
    assert_shared_intact(f->ipam);
    host_cleanup_report_free(&r);
}

static void test_invalid_alloc_id_rejected(void **state)
{
    struct fixture *f = *state;
    static const char *const ids[] = {"../../etc/passwd", "8D5F9A3E-5C1B-4C0E-9F3A-2B7D6E1C4A01", "", "nomad"};

    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        struct host_cleanup_report r;

        assert_int_equal(host_cleanup_alloc(&f->paths, ids[i], &r), 1);
        assert_int_equal(r.n_steps, 1);
        assert_step(&r, "validate", 0, 0);
        assert_contains(step_detail(&r, "validate"), "invalid allocation ID");
        assert_int_equal(r.complete, 0);
        host_cleanup_report_free(&r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64_decodes_valid),
        cmocka_unit_test(test_base64_rejects_invalid),
        cmocka_unit_test(test_names_validated),
        cmocka_unit_test_setup_teardown(test_cache_find_lists_alloc_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_load_reads_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_load_rejects_bad_content, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_load_rejects_bad_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_del_runs_plugins_like_libcni, setup, teardown),
        cmocka_unit_test_setup_teardown(test_del_without_prev_result_before_0_4, setup, teardown),
        cmocka_unit_test_setup_teardown(test_del_stops_at_first_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_del_plugin_timeout_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_del_missing_plugin_runs_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_alloc_id_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_leak_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_netns_gone_masq_chain_swept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_file_removed_then_del, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_reservation_swept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_alloc_untouched, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forward_rules_kept_for_reused_ip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_cache_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_del_keeps_cache_for_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cleanup_twice_finds_nothing, setup, teardown),
    };

    log_set_level(LOG_LEVEL_WARN);
    cmocka_set_message_output(CM_OUTPUT_STDOUT);
    return cmocka_run_group_tests_name("host_cleanup", tests, group_setup, group_teardown);
}
