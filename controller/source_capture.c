/*
 * Capture directories: the writer records every response of an inner source,
 * the reader replays them. The layout is described in source.h.
 */
#define _POSIX_C_SOURCE 200809L

#include "source.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define CAPTURE_FORMAT "nomad-medic-capture"
#define CAPTURE_VERSION 1
#define MANIFEST_NAME "manifest.json"
#define MANIFEST_TMP_NAME "manifest.json.tmp"
/* A manifest entry is a few hundred bytes, so 64 MiB is far above any real capture. */
#define MANIFEST_MAX_BYTES ((size_t)64 << 20)
/* Integers above 2^53 do not survive cJSON's double, but Raft indexes stay far below. */
#define JSON_MAX_EXACT_INT 9007199254740992.0

/* Result names in the manifest. They are part of the file format: never rename one. */
static const struct {
    enum nomad_result result;
    const char *name;
} result_names[] = {
    {NOMAD_OK, "ok"},
    {NOMAD_ERR_TRANSPORT, "transport"},
    {NOMAD_ERR_TIMEOUT, "timeout"},
    {NOMAD_ERR_STATUS, "status"},
    {NOMAD_ERR_TOO_LARGE, "too_large"},
    {NOMAD_ERR_NO_LEADER, "no_leader"},
    {NOMAD_ERR_INTERNAL, "internal"},
};

static const char *result_to_name(enum nomad_result result)
{
    for (size_t i = 0; i < sizeof(result_names) / sizeof(result_names[0]); i++) {
        if (result_names[i].result == result)
            return result_names[i].name;
    }
    return "internal";
}

static int result_from_name(const char *name, enum nomad_result *result)
{
    for (size_t i = 0; i < sizeof(result_names) / sizeof(result_names[0]); i++) {
        if (strcmp(result_names[i].name, name) == 0) {
            *result = result_names[i].result;
            return 0;
        }
    }
    return -1;
}

static char *join_path(const char *dir, const char *name)
{
    size_t len = strlen(dir) + 1 + strlen(name) + 1;
    char *path = malloc(len);

    if (path != NULL)
        snprintf(path, len, "%s/%s", dir, name);
    return path;
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---- writer ---- */

struct capture_writer {
    struct source base;      /* first, so a struct source * is a struct capture_writer * */
    struct source *inner;    /* owned */
    char *dir;
    cJSON *manifest;         /* the whole manifest as it is on disk */
    cJSON *entries;          /* the "entries" array inside manifest */
    unsigned long next_file; /* number of the next body file, from 1 */
};

/* Create dir and its missing parents with mode 0700. */
static int make_dirs(const char *dir, char *err, size_t errsz)
{
    char *copy = strdup(dir);
    struct stat st;
    int rc = -1;

    if (copy == NULL) {
        snprintf(err, errsz, "capture directory %s: out of memory", dir);
        return -1;
    }
    for (char *p = copy + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(copy, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errsz, "cannot create directory %s: %s", copy, strerror(errno));
            goto out;
        }
        *p = '/';
    }
    if (mkdir(copy, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errsz, "cannot create capture directory %s: %s", dir, strerror(errno));
        goto out;
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errsz, "capture directory %s exists but is not a directory; choose another path",
                 dir);
        goto out;
    }
    rc = 0;

out:
    free(copy);
    return rc;
}

/* Copy address without a user:password@ part, in case a caller's address carries one. */
static char *address_without_credentials(const char *address)
{
    const char *authority = strstr(address, "://");
    const char *end;
    const char *at = NULL;
    char *copy;
    size_t head;

    if (authority == NULL)
        return strdup(address);
    authority += 3;
    end = authority + strcspn(authority, "/?#");
    for (const char *p = authority; p < end; p++) {
        if (*p == '@')
            at = p;
    }
    if (at == NULL)
        return strdup(address);
    head = (size_t)(authority - address);
    copy = malloc(strlen(address) + 1);
    if (copy == NULL)
        return NULL;
    memcpy(copy, address, head);
    strcpy(copy + head, at + 1);
    return copy;
}

/* Replace manifest.json with the in-memory manifest: write a temporary file, fsync, rename. */
static int rewrite_manifest(struct capture_writer *w, char *err, size_t errsz)
{
    char *text = cJSON_Print(w->manifest);
    char *tmp = join_path(w->dir, MANIFEST_TMP_NAME);
    char *final = join_path(w->dir, MANIFEST_NAME);
    int fd = -1;
    int rc = -1;

    if (text == NULL || tmp == NULL || final == NULL) {
        snprintf(err, errsz, "capture %s: out of memory writing %s", w->dir, MANIFEST_NAME);
        goto out;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errsz, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (write_all(fd, text, strlen(text)) != 0 || write_all(fd, "\n", 1) != 0 || fsync(fd) != 0) {
        snprintf(err, errsz, "writing %s failed: %s; free disk space or capture into another directory",
                 tmp, strerror(errno));
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        snprintf(err, errsz, "writing %s failed: %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp, final) != 0) {
        snprintf(err, errsz, "cannot rename %s to %s: %s", tmp, final, strerror(errno));
        goto out;
    }
    rc = 0;

out:
    if (fd >= 0)
        close(fd);
    cJSON_free(text);
    free(tmp);
    free(final);
    return rc;
}

/*
 * Write resp's body into a new body file and append its manifest entry.
 * The file name is the next free number; an existing file is never replaced.
 */
static int record_response(struct capture_writer *w, const char *path,
                           const struct nomad_response *resp, char *err, size_t errsz)
{
    char file[32];
    char index_text[32];
    char *file_path = NULL;
    cJSON *entry = NULL;
    int fd = -1;
    int rc = -1;

    for (int tries = 0; fd < 0; tries++) {
        snprintf(file, sizeof(file), "%04lu.json", w->next_file++);
        free(file_path);
        file_path = join_path(w->dir, file);
        if (file_path == NULL) {
            snprintf(err, errsz, "capture %s: out of memory", w->dir);
            goto out;
        }
        fd = open(file_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && (errno != EEXIST || tries >= 1000)) {
            snprintf(err, errsz, "cannot create capture file %s: %s", file_path, strerror(errno));
            goto out;
        }
    }
    if (resp->body != NULL && write_all(fd, resp->body, resp->body_len) != 0) {
        snprintf(err, errsz, "writing %s failed: %s; free disk space or capture into another directory",
                 file_path, strerror(errno));
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        snprintf(err, errsz, "writing %s failed: %s", file_path, strerror(errno));
        goto out;
    }
    fd = -1;

    snprintf(index_text, sizeof(index_text), "%" PRIu64, resp->index);
    entry = cJSON_CreateObject();
    if (entry == NULL
        || cJSON_AddStringToObject(entry, "path", path) == NULL
        || cJSON_AddStringToObject(entry, "file", file) == NULL
        || cJSON_AddNumberToObject(entry, "status", (double)resp->status) == NULL
        || cJSON_AddStringToObject(entry, "result", result_to_name(resp->result)) == NULL
        || cJSON_AddRawToObject(entry, "index", index_text) == NULL
        || cJSON_AddNumberToObject(entry, "known_leader", resp->known_leader) == NULL
        || cJSON_AddNumberToObject(entry, "last_contact_ms", (double)resp->last_contact_ms) == NULL
        || (resp->next_token != NULL
                ? cJSON_AddStringToObject(entry, "next_token", resp->next_token)
                : cJSON_AddNullToObject(entry, "next_token")) == NULL
        || cJSON_AddStringToObject(entry, "error", resp->error) == NULL
        || (resp->body != NULL
                ? cJSON_AddNumberToObject(entry, "body_bytes", (double)resp->body_len)
                : cJSON_AddNullToObject(entry, "body_bytes")) == NULL) {
        snprintf(err, errsz, "capture %s: out of memory", w->dir);
        goto out;
    }
    if (!cJSON_AddItemToArray(w->entries, entry)) {
        snprintf(err, errsz, "capture %s: out of memory", w->dir);
        goto out;
    }
    entry = NULL;
    rc = 0;

out:
    if (fd >= 0)
        close(fd);
    if (rc != 0 && file_path != NULL)
        unlink(file_path);
    cJSON_Delete(entry);
    free(file_path);
    return rc;
}

/* Drop the last count entries and their body files after a failed manifest rewrite. */
static void forget_entries(struct capture_writer *w, int count)
{
    for (int i = 0; i < count; i++) {
        int last = cJSON_GetArraySize(w->entries) - 1;
        const cJSON *file = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(w->entries, last),
                                                             "file");
        char *file_path = cJSON_IsString(file) ? join_path(w->dir, file->valuestring) : NULL;

        if (file_path != NULL)
            unlink(file_path);
        free(file_path);
        cJSON_DeleteItemFromArray(w->entries, last);
    }
}

static int writer_get(struct source *src, const char *path, struct nomad_response *resp)
{
    struct capture_writer *w = (struct capture_writer *)src;
    char err[sizeof(resp->error)];

    source_get(w->inner, path, resp);
    if (record_response(w, path, resp, err, sizeof(err)) != 0) {
        source_response_fail(resp, NOMAD_ERR_INTERNAL, 0, "GET %s not recorded: %s", path, err);
    } else if (rewrite_manifest(w, err, sizeof(err)) != 0) {
        forget_entries(w, 1);
        source_response_fail(resp, NOMAD_ERR_INTERNAL, 0, "GET %s not recorded: %s", path, err);
    }
    return resp->result == NOMAD_OK ? 0 : -1;
}

/* Record a whole batch, then rewrite the manifest once: rewriting per entry costs O(n^2). */
static int writer_get_many(struct source *src, const char *const *paths, size_t n,
                           struct nomad_response *resps)
{
    struct capture_writer *w = (struct capture_writer *)src;
    char err[sizeof(resps[0].error)];
    char *recorded = calloc(n > 0 ? n : 1, 1);
    int n_recorded = 0;
    int failed = 0;

    source_get_many(w->inner, paths, n, resps);
    for (size_t i = 0; i < n; i++) {
        if (recorded == NULL) {
            source_response_fail(&resps[i], NOMAD_ERR_INTERNAL, 0, "GET %s not recorded: capture "
                                 "%s: out of memory", paths[i], w->dir);
        } else if (record_response(w, paths[i], &resps[i], err, sizeof(err)) == 0) {
            recorded[i] = 1;
            n_recorded++;
        } else {
            source_response_fail(&resps[i], NOMAD_ERR_INTERNAL, 0, "GET %s not recorded: %s",
                                 paths[i], err);
        }
    }
    if (n_recorded > 0 && rewrite_manifest(w, err, sizeof(err)) != 0) {
        forget_entries(w, n_recorded);
        for (size_t i = 0; i < n; i++) {
            if (recorded[i])
                source_response_fail(&resps[i], NOMAD_ERR_INTERNAL, 0, "GET %s not recorded: %s",
                                     paths[i], err);
        }
    }
    free(recorded);
    for (size_t i = 0; i < n; i++) {
        if (resps[i].result != NOMAD_OK)
            failed++;
    }
    return failed;
}

static void writer_destroy(struct source *src)
{
    struct capture_writer *w = (struct capture_writer *)src;

    source_destroy(w->inner);
    cJSON_Delete(w->manifest);
    free(w->dir);
    free(w);
}

static const struct source_ops writer_ops = {
    .name = "capture",
    .get = writer_get,
    .get_many = writer_get_many,
    .destroy = writer_destroy,
};

static cJSON *new_manifest(const struct source *inner)
{
    const char *address = source_live_address(inner);
    char *clean_address = address != NULL ? address_without_credentials(address) : NULL;
    cJSON *manifest = cJSON_CreateObject();
    int ok;

    ok = manifest != NULL && (address == NULL || clean_address != NULL)
         && cJSON_AddStringToObject(manifest, "format", CAPTURE_FORMAT) != NULL
         && cJSON_AddNumberToObject(manifest, "version", CAPTURE_VERSION) != NULL
         && cJSON_AddNumberToObject(manifest, "captured_at", (double)inner->observed_at) != NULL
         && cJSON_AddNumberToObject(manifest, "per_page", inner->per_page) != NULL
         && (clean_address != NULL ? cJSON_AddStringToObject(manifest, "nomad_address", clean_address)
                                   : cJSON_AddNullToObject(manifest, "nomad_address")) != NULL
         && (inner->note != NULL ? cJSON_AddStringToObject(manifest, "note", inner->note)
                                 : cJSON_AddNullToObject(manifest, "note")) != NULL
         && cJSON_AddArrayToObject(manifest, "entries") != NULL;
    free(clean_address);
    if (!ok) {
        cJSON_Delete(manifest);
        return NULL;
    }
    return manifest;
}

struct source *source_capture_writer_new(struct source *inner, const char *dir,
                                         char *err, size_t errsz)
{
    struct capture_writer *w = NULL;
    char *manifest_path = NULL;
    int fd;

    if (inner == NULL || dir == NULL || dir[0] == '\0') {
        snprintf(err, errsz, "capture writer needs a source and a directory");
        goto fail;
    }
    if (make_dirs(dir, err, errsz) != 0)
        goto fail;
    w = calloc(1, sizeof(*w));
    if (w == NULL || (w->dir = strdup(dir)) == NULL
        || (manifest_path = join_path(dir, MANIFEST_NAME)) == NULL
        || (w->manifest = new_manifest(inner)) == NULL) {
        snprintf(err, errsz, "capture %s: out of memory", dir);
        goto fail;
    }
    w->entries = cJSON_GetObjectItemCaseSensitive(w->manifest, "entries");

    /* O_EXCL claims the directory, so two captures never share it. */
    fd = open(manifest_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        snprintf(err, errsz, "capture directory %s already contains %s; remove the old capture or choose "
                 "another directory", dir, MANIFEST_NAME);
        goto fail;
    }
    if (fd < 0) {
        snprintf(err, errsz, "cannot create %s: %s", manifest_path, strerror(errno));
        goto fail;
    }
    close(fd);
    if (rewrite_manifest(w, err, errsz) != 0) {
        unlink(manifest_path);
        goto fail;
    }
    free(manifest_path);

    w->base.ops = &writer_ops;
    w->base.per_page = inner->per_page;
    w->base.observed_at = inner->observed_at;
    w->base.note = inner->note;
    w->inner = inner;
    w->next_file = 1;
    return &w->base;

fail:
    free(manifest_path);
    if (w != NULL) {
        cJSON_Delete(w->manifest);
        free(w->dir);
        free(w);
    }
    return NULL;
}

/* ---- reader ---- */

struct capture_entry {
    char *path;
    char file[32];
    enum nomad_result result;
    long status;
    uint64_t index;
    int known_leader;
    long last_contact_ms;
    char *next_token;        /* NULL when the response had none */
    char *error;
    long long body_bytes;    /* -1 when the response had no body */
};

struct capture_reader {
    struct source base;      /* first, so a struct source * is a struct capture_reader * */
    char *dir;
    char *note;              /* base.note points here */
    struct capture_entry *entries;
    size_t n_entries;
};

/* Body file names are generated by the writer; anything else could leave the directory. */
static int valid_file_name(const char *name)
{
    size_t digits = strspn(name, "0123456789");

    return digits >= 4 && digits <= 20 && strcmp(name + digits, ".json") == 0;
}

/* Read an integral number in [min, max] from obj[key]. Returns 0, or -1 when missing or invalid. */
static int json_integer(const cJSON *obj, const char *key, double min, double max, double *out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    double v;

    if (!cJSON_IsNumber(item))
        return -1;
    v = item->valuedouble;
    if (!(v >= min && v <= max) || v != (double)(long long)v)
        return -1;
    *out = v;
    return 0;
}

/* Read obj[key] as a string, or NULL when absent or null. Returns -1 for another type. */
static int json_optional_string(const cJSON *obj, const char *key, const char **out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

    *out = NULL;
    if (item == NULL || cJSON_IsNull(item))
        return 0;
    if (!cJSON_IsString(item))
        return -1;
    *out = item->valuestring;
    return 0;
}

static void free_entries(struct capture_entry *entries, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(entries[i].path);
        free(entries[i].next_token);
        free(entries[i].error);
    }
    free(entries);
}

/*
 * Fill e from the manifest entry item, and check that its body file exists
 * with the recorded size. Returns 0, or -1 with err naming the field or file.
 */
static int load_entry(const char *dir, const char *manifest_path, size_t i, const cJSON *item,
                      struct capture_entry *e, char *err, size_t errsz)
{
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(item, "path");
    const cJSON *file = cJSON_GetObjectItemCaseSensitive(item, "file");
    const cJSON *result = cJSON_GetObjectItemCaseSensitive(item, "result");
    const cJSON *body_bytes = cJSON_GetObjectItemCaseSensitive(item, "body_bytes");
    const char *next_token;
    const char *error;
    const char *bad = NULL;
    char *file_path = NULL;
    struct stat st;
    double v;
    int rc = -1;

    e->body_bytes = -1;
    if (!cJSON_IsObject(item)) {
        bad = "entry";
        goto invalid;
    }
    if (!cJSON_IsString(path)) {
        bad = "path";
        goto invalid;
    }
    if (!cJSON_IsString(file) || !valid_file_name(file->valuestring)) {
        bad = "file";
        goto invalid;
    }
    if (!cJSON_IsString(result) || result_from_name(result->valuestring, &e->result) != 0) {
        bad = "result";
        goto invalid;
    }
    if (json_integer(item, "status", 0, 999, &v) != 0) {
        bad = "status";
        goto invalid;
    }
    e->status = (long)v;
    if (json_integer(item, "index", 0, JSON_MAX_EXACT_INT, &v) != 0) {
        bad = "index";
        goto invalid;
    }
    e->index = (uint64_t)v;
    if (json_integer(item, "known_leader", -1, 1, &v) != 0) {
        bad = "known_leader";
        goto invalid;
    }
    e->known_leader = (int)v;
    if (json_integer(item, "last_contact_ms", -1, JSON_MAX_EXACT_INT, &v) != 0) {
        bad = "last_contact_ms";
        goto invalid;
    }
    e->last_contact_ms = (long)v;
    if (json_optional_string(item, "next_token", &next_token) != 0) {
        bad = "next_token";
        goto invalid;
    }
    if (json_optional_string(item, "error", &error) != 0) {
        bad = "error";
        goto invalid;
    }
    if (!cJSON_IsNull(body_bytes)) {
        if (json_integer(item, "body_bytes", 0, (double)SOURCE_MAX_FILE_BYTES, &v) != 0) {
            bad = "body_bytes";
            goto invalid;
        }
        e->body_bytes = (long long)v;
    }

    snprintf(e->file, sizeof(e->file), "%s", file->valuestring);
    e->path = strdup(path->valuestring);
    e->next_token = next_token != NULL ? strdup(next_token) : NULL;
    e->error = strdup(error != NULL ? error : "");
    file_path = join_path(dir, e->file);
    if (e->path == NULL || (next_token != NULL && e->next_token == NULL) || e->error == NULL
        || file_path == NULL) {
        snprintf(err, errsz, "%s: out of memory", manifest_path);
        goto out;
    }
    if (lstat(file_path, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errsz, "%s: body file %s of entry %zu (GET %s) is missing or not a regular "
                 "file; the capture is damaged, capture again", manifest_path, e->file, i + 1,
                 e->path);
        goto out;
    }
    if ((long long)st.st_size != (e->body_bytes < 0 ? 0 : e->body_bytes)) {
        snprintf(err, errsz, "%s: body file %s of entry %zu (GET %s) has %lld bytes, the manifest "
                 "records %lld; the capture is damaged, capture again", manifest_path, e->file,
                 i + 1, e->path, (long long)st.st_size, e->body_bytes < 0 ? 0 : e->body_bytes);
        goto out;
    }
    rc = 0;
    goto out;

invalid:
    snprintf(err, errsz, "%s: entry %zu has a missing or invalid \"%s\"; the capture was edited "
             "or damaged, capture again", manifest_path, i + 1, bad);
out:
    free(file_path);
    return rc;
}

/* Parse the manifest text into r. Returns 0, or -1 with err naming the file and the fix. */
static int load_manifest(struct capture_reader *r, const char *manifest_path, const char *text,
                         char *err, size_t errsz)
{
    cJSON *root = cJSON_Parse(text);
    const cJSON *format;
    const cJSON *entries;
    const cJSON *item;
    const char *note;
    double version;
    double captured_at;
    double per_page;
    size_t i = 0;
    int rc = -1;

    if (!cJSON_IsObject(root)) {
        snprintf(err, errsz, "%s is not a JSON object (the capture was interrupted before its first "
                 "write, or edited); capture again", manifest_path);
        goto out;
    }
    format = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (!cJSON_IsString(format) || strcmp(format->valuestring, CAPTURE_FORMAT) != 0) {
        snprintf(err, errsz, "%s is not a nomad-medic capture manifest (\"format\" is not \"%s\"); "
                 "pass a directory written by `nomad-medic capture`", manifest_path, CAPTURE_FORMAT);
        goto out;
    }
    if (json_integer(root, "version", 1, INT_MAX, &version) != 0) {
        snprintf(err, errsz, "%s has a missing or invalid \"version\"; capture again", manifest_path);
        goto out;
    }
    if (version != CAPTURE_VERSION) {
        snprintf(err, errsz, "%s has capture format version %.0f, but this nomad-medic reads version "
                 "%d; replay it with a newer nomad-medic, or capture again with this one",
                 manifest_path, version, CAPTURE_VERSION);
        goto out;
    }
    entries = cJSON_GetObjectItemCaseSensitive(root, "entries");
    if (json_integer(root, "captured_at", 0, JSON_MAX_EXACT_INT, &captured_at) != 0
        || json_integer(root, "per_page", 0, INT_MAX, &per_page) != 0
        || json_optional_string(root, "note", &note) != 0 || !cJSON_IsArray(entries)) {
        snprintf(err, errsz, "%s has a missing or invalid \"captured_at\", \"per_page\", \"note\" or "
                 "\"entries\"; the capture was edited or damaged, capture again", manifest_path);
        goto out;
    }
    r->base.observed_at = (long long)captured_at;
    r->base.per_page = (int)per_page;
    if (note != NULL && (r->note = strdup(note)) == NULL) {
        snprintf(err, errsz, "%s: out of memory", manifest_path);
        goto out;
    }
    r->base.note = r->note;

    r->entries = calloc((size_t)cJSON_GetArraySize(entries) + 1, sizeof(*r->entries));
    if (r->entries == NULL) {
        snprintf(err, errsz, "%s: out of memory", manifest_path);
        goto out;
    }
    cJSON_ArrayForEach(item, entries) {
        /* Count the entry before loading it, so free_entries() releases a half-filled one. */
        r->n_entries = i + 1;
        if (load_entry(r->dir, manifest_path, i, item, &r->entries[i], err, errsz) != 0)
            goto out;
        i++;
    }
    rc = 0;

out:
    cJSON_Delete(root);
    return rc;
}

static int reader_get(struct source *src, const char *path, struct nomad_response *resp)
{
    struct capture_reader *r = (struct capture_reader *)src;
    const struct capture_entry *e = NULL;
    char err[sizeof(resp->error)];
    char *file_path = NULL;
    char *body = NULL;
    size_t body_len = 0;

    nomad_response_init(resp);
    for (size_t i = 0; i < r->n_entries && e == NULL; i++) {
        if (strcmp(r->entries[i].path, path) == 0)
            e = &r->entries[i];
    }
    if (e == NULL) {
        source_response_fail(resp, NOMAD_ERR_STATUS, 0, "capture %s has no response for GET %s; "
                             "capture again with this version of nomad-medic", r->dir, path);
        return -1;
    }
    if (e->body_bytes >= 0) {
        file_path = join_path(r->dir, e->file);
        if (file_path == NULL) {
            source_response_fail(resp, NOMAD_ERR_INTERNAL, 0, "GET %s: out of memory", path);
            return -1;
        }
        if (source_read_file(file_path, NULL, SOURCE_MAX_FILE_BYTES, &body, &body_len, err,
                             sizeof(err)) != 0) {
            source_response_fail(resp, NOMAD_ERR_TRANSPORT, 0, "GET %s from capture: %s", path, err);
            free(file_path);
            return -1;
        }
        free(file_path);
        if ((long long)body_len != e->body_bytes) {
            source_response_fail(resp, NOMAD_ERR_TRANSPORT, 0, "GET %s from capture: body file %s "
                                 "changed since the capture was opened", path, e->file);
            free(body);
            return -1;
        }
    }
    if (e->next_token != NULL && (resp->next_token = strdup(e->next_token)) == NULL) {
        free(body);
        source_response_fail(resp, NOMAD_ERR_INTERNAL, 0, "GET %s: out of memory", path);
        return -1;
    }
    resp->result = e->result;
    resp->status = e->status;
    resp->body = body;
    resp->body_len = body_len;
    resp->index = e->index;
    resp->known_leader = e->known_leader;
    resp->last_contact_ms = e->last_contact_ms;
    snprintf(resp->error, sizeof(resp->error), "%s", e->error);
    return resp->result == NOMAD_OK ? 0 : -1;
}

static void reader_destroy(struct source *src)
{
    struct capture_reader *r = (struct capture_reader *)src;

    free_entries(r->entries, r->n_entries);
    free(r->note);
    free(r->dir);
    free(r);
}

static const struct source_ops reader_ops = {
    .name = "capture",
    .get = reader_get,
    .get_many = NULL,   /* files are local: source_get_many() reads them one by one */
    .destroy = reader_destroy,
};

struct source *source_capture_reader_new(const char *dir, char *err, size_t errsz)
{
    struct capture_reader *r = NULL;
    char *manifest_path = NULL;
    char *text = NULL;
    size_t len;
    char read_err[512];

    if (dir == NULL || dir[0] == '\0') {
        snprintf(err, errsz, "no capture directory given");
        return NULL;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL || (r->dir = strdup(dir)) == NULL
        || (manifest_path = join_path(dir, MANIFEST_NAME)) == NULL) {
        snprintf(err, errsz, "capture %s: out of memory", dir);
        goto fail;
    }
    r->base.ops = &reader_ops;
    if (source_read_file(manifest_path, NULL, MANIFEST_MAX_BYTES, &text, &len, read_err,
                         sizeof(read_err)) != 0) {
        snprintf(err, errsz, "cannot read capture manifest: %s; pass a directory written by "
                 "`nomad-medic capture`", read_err);
        goto fail;
    }
    if (strlen(text) != len) {
        snprintf(err, errsz, "%s contains a NUL byte, so it is not a capture manifest; capture again",
                 manifest_path);
        goto fail;
    }
    if (load_manifest(r, manifest_path, text, err, errsz) != 0)
        goto fail;
    free(text);
    free(manifest_path);
    return &r->base;

fail:
    free(text);
    free(manifest_path);
    if (r != NULL)
        reader_destroy(&r->base);
    return NULL;
}
