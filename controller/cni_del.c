/* CNI DEL from a libcni cache file: validation, base64, plugin lookup and invocation. */
#define _GNU_SOURCE
#include "cni.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "proc.h"

/* Output kept from one plugin run. A DEL prints nothing or a short error object. */
#define PLUGIN_MAX_OUTPUT (64 * 1024)
/* More plugins than any real conflist has, so a damaged file cannot cause unbounded work. */
#define MAX_PLUGINS 32
/* Used when our own environment has no PATH, because the plugins need one to find iptables. */
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* ---- names ---- */

int cni_is_uuid(const char *text)
{
    static const int dash_at[] = {8, 13, 18, 23};
    size_t d = 0;

    if (text == NULL || strlen(text) != HOST_ID_LEN)
        return 0;
    for (int i = 0; i < HOST_ID_LEN; i++) {
        char c = text[i];

        if (d < 4 && i == dash_at[d]) {
            if (c != '-')
                return 0;
            d++;
            continue;
        }
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return 1;
}

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

static int all_name_chars(const char *s)
{
    for (; *s != '\0'; s++) {
        if (!name_char(*s))
            return 0;
    }
    return 1;
}

int cni_is_ifname(const char *name)
{
    size_t len = name != NULL ? strlen(name) : 0;

    if (len == 0 || len > 15 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return 0;
    return all_name_chars(name);
}

int cni_is_plugin_type(const char *type)
{
    size_t len = type != NULL ? strlen(type) : 0;

    if (len == 0 || len > 64 || type[0] == '.')
        return 0;
    return all_name_chars(type);
}

int cni_is_network_name(const char *name)
{
    size_t len = name != NULL ? strlen(name) : 0;
    char c0;

    if (len == 0 || len > 128)
        return 0;
    c0 = name[0];
    if (!((c0 >= 'a' && c0 <= 'z') || (c0 >= 'A' && c0 <= 'Z') || (c0 >= '0' && c0 <= '9')))
        return 0;
    return all_name_chars(name);
}

/* ---- base64 ---- */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int cni_base64_decode(const char *in, size_t in_len, unsigned char **out, size_t *out_len)
{
    unsigned char *buf;
    size_t pad = 0, o = 0;

    *out = NULL;
    *out_len = 0;
    if (in_len % 4 != 0)
        return 1;
    if (in_len > 0 && in[in_len - 1] == '=')
        pad++;
    if (in_len > 1 && in[in_len - 2] == '=')
        pad++;
    buf = malloc(in_len / 4 * 3 + 1);
    if (buf == NULL)
        return -1;

    for (size_t i = 0; i < in_len; i += 4) {
        int last = (i + 4 == in_len);
        int v[4];
        unsigned long group = 0;

        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + k];

            /* '=' only fills the last one or two places of the final group. */
            if (c == '=' && last && k >= 4 - (int)pad) {
                v[k] = 0;
                continue;
            }
            v[k] = b64_value(c);
            if (v[k] < 0)
                goto invalid;
        }
        group = ((unsigned long)v[0] << 18) | ((unsigned long)v[1] << 12) | ((unsigned long)v[2] << 6) |
                (unsigned long)v[3];
        buf[o++] = (unsigned char)(group >> 16);
        if (!(last && pad == 2))
            buf[o++] = (unsigned char)(group >> 8);
        if (!(last && pad >= 1))
            buf[o++] = (unsigned char)group;
        /* Strict: the bits that padding drops must be zero, so each input has one encoding. */
        if (last && pad == 2 && (v[1] & 0x0f) != 0)
            goto invalid;
        if (last && pad == 1 && (v[2] & 0x03) != 0)
            goto invalid;
    }
    buf[o] = '\0';
    *out = buf;
    *out_len = o;
    return 0;

invalid:
    free(buf);
    return 1;
}

/* ---- string lists ---- */

static int list_push(char ***list, size_t *n, const char *s)
{
    char **grown = realloc(*list, (*n + 1) * sizeof(**list));
    char *copy;

    if (grown == NULL)
        return -1;
    *list = grown;
    copy = strdup(s);
    if (copy == NULL)
        return -1;
    (*list)[(*n)++] = copy;
    return 0;
}

static void list_free(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

static int path_join(char *buf, size_t bufsz, const char *dir, const char *name)
{
    int len = snprintf(buf, bufsz, "%s/%s", dir, name);

    return len >= 0 && (size_t)len < bufsz ? 0 : -1;
}

static int cmp_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- finding cache files ---- */

int cni_cache_find(const struct host_paths *paths, const char *alloc_id, char ***files, size_t *n,
                   char *err, size_t errsz)
{
    char prefix[256], path[4096];
    size_t prefix_len;
    struct dirent *de;
    DIR *dir;
    int rc = 0;

    *files = NULL;
    *n = 0;
    if (!cni_is_uuid(alloc_id) || !cni_is_network_name(paths->network_name)) {
        snprintf(err, errsz, "invalid allocation ID \"%s\" or network name \"%s\"", alloc_id,
                 paths->network_name);
        return 1;
    }
    snprintf(prefix, sizeof(prefix), "%s-%s-", paths->network_name, alloc_id);
    prefix_len = strlen(prefix);

    dir = opendir(paths->cni_cache_dir);
    if (dir == NULL) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errsz, "cannot read the CNI cache directory %s: %s", paths->cni_cache_dir,
                 strerror(errno));
        return 1;
    }
    while ((de = readdir(dir)) != NULL) {
        if (strncmp(de->d_name, prefix, prefix_len) != 0 || !cni_is_ifname(de->d_name + prefix_len))
            continue;
        if (path_join(path, sizeof(path), paths->cni_cache_dir, de->d_name) != 0)
            continue;
        if (list_push(files, n, path) != 0) {
            rc = -1;
            break;
        }
    }
    closedir(dir);
    if (rc != 0) {
        list_free(*files, *n);
        *files = NULL;
        *n = 0;
        snprintf(err, errsz, "out of memory listing %s", paths->cni_cache_dir);
        return -1;
    }
    if (*n > 1)
        qsort(*files, *n, sizeof(**files), cmp_strings);
    return 0;
}

/* ---- loading a cache file ---- */

/* Read a whole regular file of at most max bytes. Returns 0, 1 on error (err), -1 on OOM. */
static int read_small_file(const char *path, size_t max, char **data, char *err, size_t errsz)
{
    struct stat st;
    size_t got = 0;
    char *buf = NULL;
    int fd, rc = 1;

    *data = NULL;
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errsz, "cannot open %s: %s", path, strerror(errno));
        return 1;
    }
    if (fstat(fd, &st) != 0) {
        snprintf(err, errsz, "cannot stat %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errsz, "%s is not a regular file", path);
        goto out;
    }
    if ((unsigned long long)st.st_size > max) {
        snprintf(err, errsz, "%s has %lld bytes, more than the limit of %zu", path, (long long)st.st_size,
                 max);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        snprintf(err, errsz, "out of memory reading %s", path);
        rc = -1;
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errsz, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    *data = buf;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    close(fd);
    return rc;
}

/* The string member key of obj, or NULL when it is missing or not a string. */
static const char *get_string(const cJSON *obj, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsString(item) ? item->valuestring : NULL;
}

/* Parse "1", "0.4" or "0.4.0" into three numbers. Returns 0, or -1 when it is not a version. */
static int parse_version(const char *text, int v[3])
{
    const char *p = text;

    v[0] = v[1] = v[2] = 0;
    for (int i = 0; i < 3; i++) {
        int digits = 0;

        while (*p >= '0' && *p <= '9' && digits < 6) {
            v[i] = v[i] * 10 + (*p - '0');
            p++;
            digits++;
        }
        if (digits == 0)
            return -1;
        if (*p == '\0')
            return 0;
        if (*p != '.' || i == 2)
            return -1;
        p++;
    }
    return -1;
}

/* libcni passes the cached result as prevResult only to conflists of version 0.4.0 or later. */
static int version_has_prev_result(const char *version)
{
    int v[3];

    if (parse_version(version, v) != 0)
        return 0;
    return v[0] > 0 || v[1] >= 4;
}

/* Check the decoded conflist. Returns 0, or 1 with err naming the problem. */
static int check_conflist(const struct host_paths *paths, const cJSON *conflist, char *err, size_t errsz)
{
    const cJSON *plugins = cJSON_GetObjectItemCaseSensitive(conflist, "plugins");
    const char *name = get_string(conflist, "name");
    const char *version = get_string(conflist, "cniVersion");
    int v[3], count, i = 0;
    const cJSON *plugin;

    if (name == NULL || strcmp(name, paths->network_name) != 0) {
        snprintf(err, errsz, "the cached conflist's name is \"%s\", expected the network \"%s\"",
                 name != NULL ? name : "(missing)", paths->network_name);
        return 1;
    }
    if (version == NULL || parse_version(version, v) != 0) {
        snprintf(err, errsz, "the cached conflist's cniVersion \"%s\" is not a version number",
                 version != NULL ? version : "(missing)");
        return 1;
    }
    count = cJSON_GetArraySize(plugins);
    if (!cJSON_IsArray(plugins) || count == 0 || count > MAX_PLUGINS) {
        snprintf(err, errsz, "the cached conflist has no \"plugins\" array of 1 to %d plugins", MAX_PLUGINS);
        return 1;
    }
    cJSON_ArrayForEach(plugin, plugins) {
        const char *type = get_string(plugin, "type");
        const cJSON *caps = cJSON_GetObjectItemCaseSensitive(plugin, "capabilities");

        if (!cJSON_IsObject(plugin)) {
            snprintf(err, errsz, "plugin %d of the cached conflist is not an object", i + 1);
            return 1;
        }
        if (!cni_is_plugin_type(type)) {
            snprintf(err, errsz,
                     "plugin %d of the cached conflist has type \"%s\", which is not a plain file name "
                     "(1 to 64 of [A-Za-z0-9_.-], no leading dot)",
                     i + 1, type != NULL ? type : "(missing)");
            return 1;
        }
        if (caps != NULL && !cJSON_IsObject(caps)) {
            snprintf(err, errsz, "plugin %d (%s) of the cached conflist has non-object capabilities", i + 1,
                     type);
            return 1;
        }
        i++;
    }
    return 0;
}

/* "cniArgs" ([[key, value], ...]) as CNI_ARGS. Returns 0, 1 when malformed (err), -1 on OOM. */
static int build_cni_args(const cJSON *args, char **out, char *err, size_t errsz)
{
    const cJSON *pair;
    size_t len = 1;
    char *buf;

    *out = NULL;
    if (args != NULL && !cJSON_IsNull(args) && !cJSON_IsArray(args)) {
        snprintf(err, errsz, "the cache's cniArgs is not an array of [key, value] pairs");
        return 1;
    }
    cJSON_ArrayForEach(pair, args) {
        const cJSON *k = cJSON_GetArrayItem(pair, 0), *v = cJSON_GetArrayItem(pair, 1);

        if (!cJSON_IsArray(pair) || cJSON_GetArraySize(pair) != 2 || !cJSON_IsString(k) ||
            !cJSON_IsString(v)) {
            snprintf(err, errsz, "the cache's cniArgs holds an entry that is not a [key, value] pair of strings");
            return 1;
        }
        /* The plugins split CNI_ARGS on ';' and each pair on '=', so neither may appear inside a key or value. */
        if (k->valuestring[0] == '\0' || strpbrk(k->valuestring, ";=") != NULL ||
            strpbrk(v->valuestring, ";=") != NULL) {
            snprintf(err, errsz, "the cache's cniArgs entry \"%.64s\" has an empty key or a ';' or '=' inside",
                     k->valuestring);
            return 1;
        }
        len += strlen(k->valuestring) + strlen(v->valuestring) + 2;
    }
    buf = malloc(len);
    if (buf == NULL)
        return -1;
    buf[0] = '\0';
    cJSON_ArrayForEach(pair, args) {
        if (buf[0] != '\0')
            strcat(buf, ";");
        strcat(buf, cJSON_GetArrayItem(pair, 0)->valuestring);
        strcat(buf, "=");
        strcat(buf, cJSON_GetArrayItem(pair, 1)->valuestring);
    }
    *out = buf;
    return 0;
}

/* 1 when name is the "bridge" of some plugin in the conflist. */
static int is_conflist_bridge(const cJSON *conflist, const char *name)
{
    const cJSON *plugin;

    cJSON_ArrayForEach(plugin, cJSON_GetObjectItemCaseSensitive(conflist, "plugins")) {
        const char *bridge = get_string(plugin, "bridge");

        if (bridge != NULL && strcmp(bridge, name) == 0)
            return 1;
    }
    return 0;
}

/* Collect the result's addresses and host-side interfaces. Returns 0, 1 when malformed, -1 on OOM. */
static int read_result(struct cni_cache *cache, char *err, size_t errsz)
{
    const cJSON *item;

    if (cache->result == NULL)
        return 0;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(cache->result, "ips")) {
        const char *address = get_string(item, "address");
        unsigned char bin[16];
        char ip[64];
        size_t len;

        if (address == NULL)
            continue;
        len = strcspn(address, "/");
        if (len == 0 || len >= sizeof(ip)) {
            snprintf(err, errsz, "the cached result's address \"%s\" is not an IP address", address);
            return 1;
        }
        memcpy(ip, address, len);
        ip[len] = '\0';
        if (inet_pton(AF_INET, ip, bin) != 1 && inet_pton(AF_INET6, ip, bin) != 1) {
            snprintf(err, errsz, "the cached result's address \"%s\" is not an IP address", address);
            return 1;
        }
        if (list_push(&cache->ips, &cache->n_ips, ip) != 0)
            return -1;
    }
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(cache->result, "interfaces")) {
        const char *name = get_string(item, "name");
        const char *sandbox = get_string(item, "sandbox");

        if (sandbox != NULL && sandbox[0] != '\0')
            continue;
        if (!cni_is_ifname(name)) {
            snprintf(err, errsz, "the cached result names the host interface \"%s\", which is not a valid "
                     "interface name", name != NULL ? name : "(missing)");
            return 1;
        }
        if (is_conflist_bridge(cache->conflist, name))
            continue;
        if (list_push(&cache->host_ifaces, &cache->n_host_ifaces, name) != 0)
            return -1;
    }
    return 0;
}

/* Validate the parsed top-level object and fill cache. Returns 0, 1 when rejected, -1 on OOM. */
static int load_fields(const struct host_paths *paths, const char *alloc_id, const cJSON *root,
                       struct cni_cache *cache, char *err, size_t errsz)
{
    const char *kind = get_string(root, "kind");
    const char *container_id = get_string(root, "containerId");
    const char *ifname = get_string(root, "ifName");
    const char *network = get_string(root, "networkName");
    const char *config = get_string(root, "config");
    const char *netns = get_string(root, "netns");
    const cJSON *result = cJSON_GetObjectItemCaseSensitive(root, "result");
    const cJSON *caps = cJSON_GetObjectItemCaseSensitive(root, "capabilityArgs");
    const char *base = strrchr(cache->path, '/');
    unsigned char *decoded = NULL;
    size_t decoded_len = 0;
    char expected_name[256];
    int rc;

    base = base != NULL ? base + 1 : cache->path;
    if (kind == NULL && cJSON_GetObjectItemCaseSensitive(root, "cniVersion") != NULL) {
        snprintf(err, errsz, "it holds only a result (the older cache format), so the conflist to run DEL with "
                 "is unknown");
        return 1;
    }
    if (kind == NULL || strcmp(kind, "cniCacheV1") != 0) {
        snprintf(err, errsz, "kind is \"%s\", expected \"cniCacheV1\"", kind != NULL ? kind : "(missing)");
        return 1;
    }
    if (container_id == NULL || !cni_is_uuid(container_id) || strcmp(container_id, alloc_id) != 0) {
        snprintf(err, errsz, "containerId \"%.64s\" is not the allocation ID %s", 
                 container_id != NULL ? container_id : "(missing)", alloc_id);
        return 1;
    }
    if (!cni_is_ifname(ifname)) {
        snprintf(err, errsz, "ifName \"%.64s\" is not a valid interface name", ifname != NULL ? ifname : "(missing)");
        return 1;
    }
    if (cJSON_GetObjectItemCaseSensitive(root, "networkName") != NULL &&
        (network == NULL || strcmp(network, paths->network_name) != 0)) {
        snprintf(err, errsz, "networkName \"%.64s\" is not the network \"%s\"",
                 network != NULL ? network : "(not a string)", paths->network_name);
        return 1;
    }
    snprintf(expected_name, sizeof(expected_name), "%s-%s-%s", paths->network_name, alloc_id, ifname);
    if (strcmp(base, expected_name) != 0) {
        snprintf(err, errsz, "the file name does not match its content, which names %s", expected_name);
        return 1;
    }
    if (config == NULL) {
        snprintf(err, errsz, "it has no \"config\", so the conflist to run DEL with is unknown");
        return 1;
    }
    rc = cni_base64_decode(config, strlen(config), &decoded, &decoded_len);
    if (rc != 0) {
        if (rc == 1)
            snprintf(err, errsz, "\"config\" is not valid base64");
        return rc;
    }
    cache->conflist = cJSON_ParseWithLength((const char *)decoded, decoded_len);
    free(decoded);
    if (!cJSON_IsObject(cache->conflist)) {
        snprintf(err, errsz, "\"config\" does not decode to a JSON object");
        return 1;
    }
    if (check_conflist(paths, cache->conflist, err, errsz) != 0)
        return 1;
    if (result != NULL && !cJSON_IsNull(result) && !cJSON_IsObject(result)) {
        snprintf(err, errsz, "\"result\" is not an object");
        return 1;
    }
    if (caps != NULL && !cJSON_IsNull(caps) && !cJSON_IsObject(caps)) {
        snprintf(err, errsz, "\"capabilityArgs\" is not an object");
        return 1;
    }
    rc = build_cni_args(cJSON_GetObjectItemCaseSensitive(root, "cniArgs"), &cache->cni_args, err, errsz);
    if (rc != 0)
        return rc;

    memcpy(cache->container_id, container_id, HOST_ID_LEN + 1);
    cache->ifname = strdup(ifname);
    cache->network = strdup(get_string(cache->conflist, "name"));
    cache->cni_version = strdup(get_string(cache->conflist, "cniVersion"));
    cache->netns = netns != NULL ? strdup(netns) : NULL;
    if (cJSON_IsObject(result))
        cache->result = cJSON_Duplicate(result, 1);
    if (cJSON_IsObject(caps))
        cache->capability_args = cJSON_Duplicate(caps, 1);
    if (cache->ifname == NULL || cache->network == NULL || cache->cni_version == NULL ||
        (netns != NULL && cache->netns == NULL) || (cJSON_IsObject(result) && cache->result == NULL) ||
        (cJSON_IsObject(caps) && cache->capability_args == NULL))
        return -1;
    return read_result(cache, err, errsz);
}

int cni_cache_load(const struct host_paths *paths, const char *alloc_id, const char *path,
                   struct cni_cache *cache, char *err, size_t errsz)
{
    char detail[768] = "";
    cJSON *root = NULL;
    char *data = NULL;
    int rc;

    memset(cache, 0, sizeof(*cache));
    if (!cni_is_uuid(alloc_id)) {
        snprintf(err, errsz, "invalid allocation ID \"%.64s\": expected a lowercase UUID", alloc_id);
        return 1;
    }
    cache->path = strdup(path);
    if (cache->path == NULL) {
        rc = -1;
        goto out;
    }
    rc = read_small_file(path, CNI_CACHE_MAX_BYTES, &data, err, errsz);
    if (rc != 0)
        goto out;
    root = cJSON_Parse(data);
    if (!cJSON_IsObject(root)) {
        snprintf(err, errsz, "rejected the CNI cache %s: it is not a JSON object", path);
        rc = 1;
        goto out;
    }
    rc = load_fields(paths, alloc_id, root, cache, detail, sizeof(detail));
    if (rc == 1)
        snprintf(err, errsz, "rejected the CNI cache %s: %s", path, detail);
out:
    if (rc == -1)
        snprintf(err, errsz, "out of memory loading the CNI cache %s", path);
    if (rc != 0)
        cni_cache_free(cache);
    cJSON_Delete(root);
    free(data);
    return rc;
}

void cni_cache_free(struct cni_cache *cache)
{
    free(cache->path);
    free(cache->ifname);
    free(cache->network);
    free(cache->cni_version);
    cJSON_Delete(cache->conflist);
    cJSON_Delete(cache->result);
    cJSON_Delete(cache->capability_args);
    free(cache->cni_args);
    free(cache->netns);
    list_free(cache->ips, cache->n_ips);
    list_free(cache->host_ifaces, cache->n_host_ifaces);
    memset(cache, 0, sizeof(*cache));
}

/* ---- running DEL ---- */

/* Find type on the colon-separated plugin path, as libcni's FindInPath does, skipping relative entries. */
static int find_plugin(const char *cni_path, const char *type, char *out, size_t outsz)
{
    const char *p = cni_path;

    while (p != NULL && *p != '\0') {
        const char *end = strchr(p, ':');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        struct stat st;

        if (len > 0 && p[0] == '/' && len + strlen(type) + 2 <= outsz) {
            memcpy(out, p, len);
            out[len] = '/';
            strcpy(out + len + 1, type);
            if (stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0)
                return 0;
        }
        p = end != NULL ? end + 1 : NULL;
    }
    return -1;
}

/* "key=value" in malloc'd memory, or NULL when memory ran out. */
static char *env_entry(const char *key, const char *value)
{
    size_t len = strlen(key) + strlen(value) + 2;
    char *entry = malloc(len);

    if (entry != NULL)
        snprintf(entry, len, "%s=%s", key, value);
    return entry;
}

/* The stdin of one plugin: its object plus name, cniVersion, prevResult and runtimeConfig. */
static char *plugin_stdin(const struct cni_cache *cache, const cJSON *plugin)
{
    const cJSON *caps = cJSON_GetObjectItemCaseSensitive(plugin, "capabilities");
    cJSON *conf = cJSON_Duplicate(plugin, 1);
    cJSON *runtime = NULL;
    const cJSON *cap;
    char *text = NULL;

    if (conf == NULL)
        return NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(conf, "name");
    cJSON_DeleteItemFromObjectCaseSensitive(conf, "cniVersion");
    cJSON_DeleteItemFromObjectCaseSensitive(conf, "prevResult");
    if (cJSON_AddStringToObject(conf, "name", cache->network) == NULL ||
        cJSON_AddStringToObject(conf, "cniVersion", cache->cni_version) == NULL)
        goto out;
    /*
     * NOTE: libcni first converts the cached result to the conflist's
     * cniVersion, but here it is passed as stored. The two differ only when the
     * conflist's version changed while the allocation ran.
     */
    if (cache->result != NULL && version_has_prev_result(cache->cni_version)) {
        cJSON *prev = cJSON_Duplicate(cache->result, 1);

        if (prev == NULL || !cJSON_AddItemToObject(conf, "prevResult", prev)) {
            cJSON_Delete(prev);
            goto out;
        }
    }

    /* libcni passes a capability arg only to plugins whose "capabilities" set it to true. */
    cJSON_ArrayForEach(cap, caps) {
        const cJSON *arg = cJSON_GetObjectItemCaseSensitive(cache->capability_args, cap->string);
        cJSON *copy;

        if (!cJSON_IsTrue(cap) || arg == NULL)
            continue;
        if (runtime == NULL) {
            runtime = cJSON_CreateObject();
            if (runtime == NULL)
                goto out;
        }
        copy = cJSON_Duplicate(arg, 1);
        if (copy == NULL || !cJSON_AddItemToObject(runtime, cap->string, copy)) {
            cJSON_Delete(copy);
            goto out;
        }
    }
    if (runtime != NULL) {
        cJSON_DeleteItemFromObjectCaseSensitive(conf, "runtimeConfig");
        if (!cJSON_AddItemToObject(conf, "runtimeConfig", runtime))
            goto out;
        runtime = NULL;
    }
    text = cJSON_PrintUnformatted(conf);
out:
    cJSON_Delete(runtime);
    cJSON_Delete(conf);
    return text;
}

/* Describe a failed plugin run from its CNI error object, or from its output when it printed none. */
static void describe_failure(const struct proc_result *res, const char *run_err, char *buf, size_t bufsz)
{
    cJSON *error = res->out != NULL ? cJSON_Parse(res->out) : NULL;
    const char *msg = get_string(error, "msg");
    const char *details = get_string(error, "details");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(error, "code");
    char brief[512];

    if (res->timed_out || (run_err[0] != '\0' && res->exit_code < 0 && res->term_signal == 0))
        snprintf(buf, bufsz, "%s", run_err);
    else if (msg != NULL)
        snprintf(buf, bufsz, "%s%s%s (CNI error code %d, exit code %d)", msg,
                 details != NULL && details[0] != '\0' ? ": " : "", details != NULL ? details : "",
                 cJSON_IsNumber(code) ? code->valueint : 0, res->exit_code);
    else if (res->term_signal != 0)
        snprintf(buf, bufsz, "killed by signal %d: %s", res->term_signal, proc_brief(res, brief, sizeof(brief)));
    else
        snprintf(buf, bufsz, "exit code %d: %s", res->exit_code, proc_brief(res, brief, sizeof(brief)));
    cJSON_Delete(error);
}

int cni_del(const struct host_paths *paths, const struct cni_cache *cache, const char *netns_path,
            struct cni_del_outcome *outcome)
{
    const cJSON *plugins = cJSON_GetObjectItemCaseSensitive(cache->conflist, "plugins");
    int n = cJSON_GetArraySize(plugins);
    char (*bins)[4096] = NULL;
    char *env[8] = {0};
    const char *path_env = getenv("PATH");
    int rc = 0;

    memset(outcome, 0, sizeof(*outcome));
    outcome->status = CNI_DEL_NOT_RUN;
    if (n <= 0 || n > MAX_PLUGINS) {
        snprintf(outcome->message, sizeof(outcome->message), "the conflist of %s has no plugins", cache->path);
        return 0;
    }

    /* Locate every binary first: a list that cannot run to the end must not start. */
    bins = calloc((size_t)n, sizeof(*bins));
    if (bins == NULL)
        goto oom;
    for (int i = 0; i < n; i++) {
        const char *type = get_string(cJSON_GetArrayItem(plugins, i), "type");

        if (!cni_is_plugin_type(type)) {
            snprintf(outcome->plugin, sizeof(outcome->plugin), "%.64s", type != NULL ? type : "");
            snprintf(outcome->message, sizeof(outcome->message),
                     "plugin %d has type \"%.64s\", which is not a plain file name; no plugin was run", i + 1,
                     type != NULL ? type : "(missing)");
            goto out;
        }
        if (find_plugin(paths->cni_path, type, bins[i], sizeof(bins[i])) != 0) {
            snprintf(outcome->plugin, sizeof(outcome->plugin), "%s", type);
            snprintf(outcome->message, sizeof(outcome->message),
                     "CNI plugin \"%s\" was not found as an executable file on the plugin path %s; no plugin "
                     "was run (install the plugin or fix cni_path)",
                     type, paths->cni_path);
            goto out;
        }
    }

    env[0] = env_entry("CNI_COMMAND", "DEL");
    env[1] = env_entry("CNI_CONTAINERID", cache->container_id);
    env[2] = env_entry("CNI_NETNS", netns_path);
    env[3] = env_entry("CNI_IFNAME", cache->ifname);
    env[4] = env_entry("CNI_ARGS", cache->cni_args);
    env[5] = env_entry("CNI_PATH", paths->cni_path);
    env[6] = env_entry("PATH", path_env != NULL ? path_env : DEFAULT_PATH);
    for (int i = 0; i < 7; i++) {
        if (env[i] == NULL)
            goto oom;
    }

    outcome->status = CNI_DEL_DONE;
    for (int i = n - 1; i >= 0; i--) {
        const cJSON *plugin = cJSON_GetArrayItem(plugins, i);
        const char *type = get_string(plugin, "type");
        const char *argv[] = {bins[i], NULL};
        struct proc_result res;
        char run_err[512], why[768];
        char *input = plugin_stdin(cache, plugin);
        int ran;

        if (input == NULL)
            goto oom;
        log_debug("cni", "DEL plugin=%s container=%s netns=%s", type, cache->container_id,
                  netns_path[0] != '\0' ? netns_path : "(none)");
        ran = proc_run(argv, (const char *const *)env, input, strlen(input), paths->command_timeout_ms,
                       PLUGIN_MAX_OUTPUT, &res, run_err, sizeof(run_err));
        free(input);
        outcome->plugins_run++;
        if (ran == 0 && res.exit_code == 0) {
            proc_result_free(&res);
            continue;
        }
        describe_failure(&res, ran != 0 ? run_err : "", why, sizeof(why));
        proc_result_free(&res);
        outcome->status = CNI_DEL_FAILED;
        snprintf(outcome->plugin, sizeof(outcome->plugin), "%s", type);
        snprintf(outcome->message, sizeof(outcome->message),
                 "CNI DEL stopped at plugin \"%s\" (%d of %d, run in reverse order): %s", type, n - i, n, why);
        goto out;
    }
    snprintf(outcome->message, sizeof(outcome->message), "CNI DEL ran %d plugins of network \"%s\" for %s", n,
             cache->network, cache->container_id);
    goto out;

oom:
    rc = -1;
    if (outcome->plugins_run > 0)
        outcome->status = CNI_DEL_FAILED;
    snprintf(outcome->message, sizeof(outcome->message), "out of memory running CNI DEL for %s",
             cache->container_id);
out:
    for (int i = 0; i < 7; i++)
        free(env[i]);
    free(bins);
    return rc;
}
