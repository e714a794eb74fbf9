/*
 * `nomad operator debug` bundles as a source: path mapping, list files
 * (NDJSON or JSON array) and archive extraction. The contract is in source.h.
 */
/* realpath() is X/Open; _XOPEN_SOURCE 700 includes POSIX.1-2008. */
#define _XOPEN_SOURCE 700

#include "source.h"

#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <cjson/cJSON.h>

/* Cap on archive entries. A debug bundle has far fewer (an estimate: hundreds to a few thousand). */
#define MAX_ARCHIVE_ENTRIES 100000
#define MAX_ENTRY_NAME 1024
#define MAX_NAME_PARTS 32
/* Interval folders are numbered 0000, 0001 and so on. Nine digits keep the number in a long. */
#define MAX_INTERVAL_DIGITS 9
#define UUID_LEN 36

enum list_kind { LIST_NODES, LIST_ALLOCATIONS, LIST_EVALUATIONS, LIST_JOBS, LIST_COUNT };

static const char *const list_files[LIST_COUNT] = {
    "nodes.json", "allocations.json", "evaluations.json", "jobs.json",
};

/* One object of a list file: its bytes in the file buffer, and its ID when that is a UUID. */
struct list_item {
    size_t offset;
    size_t len;
    char id[UUID_LEN + 1];
};

/* A list file, loaded on first use and kept, because lookups by ID read it again and again. */
struct list_cache {
    int loaded;
    enum nomad_result fail_result;   /* NOMAD_OK when the file loaded */
    char error[512];
    char rel[64];                    /* file inside the bundle, e.g. "interval/0003/nodes.json" */
    char *buf;
    struct list_item *items;
    size_t n_items;
};

struct bundle_source {
    struct source base;     /* first, so a struct source * is a struct bundle_source * */
    char *path;             /* as the caller gave it, for messages */
    char *root;             /* the folder containing cluster/ and interval/ */
    char *tmpdir;           /* private extraction directory (archives only), removed on destroy */
    char interval[MAX_INTERVAL_DIGITS + 1]; /* last interval folder name, "" when there is none */
    int known_leader;
    char *note;             /* base.note points here */
    struct list_cache lists[LIST_COUNT];
};

/* ---- small helpers ---- */

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int is_uuid(const char *s)
{
    for (int i = 0; i < UUID_LEN; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;

        if (dash ? s[i] != '-' : !is_hex(s[i]))
            return 0;
    }
    return s[UUID_LEN] == '\0';
}

static int all_digits(const char *s, size_t max)
{
    size_t n = strspn(s, "0123456789");

    return n > 0 && n <= max && s[n] == '\0';
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Copy text from a bundle file into a message, with control characters replaced. */
static void copy_printable(char *dst, size_t dstsz, const char *src)
{
    size_t i = 0;

    for (; src[i] != '\0' && i + 1 < dstsz; i++)
        dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f ? '?' : src[i];
    dst[i] = '\0';
}

static char *join_path(const char *dir, const char *name)
{
    size_t len = strlen(dir) + 1 + strlen(name) + 1;
    char *path = malloc(len);

    if (path != NULL)
        snprintf(path, len, "%s/%s", dir, name);
    return path;
}

static int is_dir(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Remove path and everything below it. Used only on the private extraction directory. */
static void remove_tree(const char *path)
{
    struct stat st;
    struct dirent *de;
    DIR *dir;

    if (lstat(path, &st) != 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(path);
        return;
    }
    dir = opendir(path);
    if (dir != NULL) {
        while ((de = readdir(dir)) != NULL) {
            char *child;

            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            child = join_path(path, de->d_name);
            if (child != NULL)
                remove_tree(child);
            free(child);
        }
        closedir(dir);
    }
    rmdir(path);
}

/* Days since 1970-01-01 of a proleptic Gregorian date, counted in 400-year eras from March 1. */
static long long days_from_civil(long long y, unsigned m, unsigned d)
{
    long long era;
    unsigned yoe;
    unsigned doy;
    unsigned doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

/* Parse "nomad-debug-2006-01-02-150405Z" (UTC) into Unix seconds. Returns 0 or -1. */
static int parse_folder_time(const char *name, long long *out)
{
    static const char prefix[] = "nomad-debug-";
    const char *t = name + sizeof(prefix) - 1;
    static const char shape[] = "dddd-dd-dd-ddddddZ";
    int year;
    int mon;
    int day;
    int hour;
    int min;
    int sec;

    if (strncmp(name, prefix, sizeof(prefix) - 1) != 0 || strlen(t) != sizeof(shape) - 1)
        return -1;
    for (size_t i = 0; i < sizeof(shape) - 1; i++) {
        if (shape[i] == 'd' ? !(t[i] >= '0' && t[i] <= '9') : t[i] != shape[i])
            return -1;
    }
    year = (t[0] - '0') * 1000 + (t[1] - '0') * 100 + (t[2] - '0') * 10 + (t[3] - '0');
    mon = (t[5] - '0') * 10 + (t[6] - '0');
    day = (t[8] - '0') * 10 + (t[9] - '0');
    hour = (t[11] - '0') * 10 + (t[12] - '0');
    min = (t[13] - '0') * 10 + (t[14] - '0');
    sec = (t[15] - '0') * 10 + (t[16] - '0');
    if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
        return -1;
    *out = days_from_civil(year, (unsigned)mon, (unsigned)day) * 86400 + hour * 3600 + min * 60 + sec;
    return 0;
}

/* Raise *newest to the latest mtime of the regular files directly in dir. */
static void newest_mtime_in(const char *dir, long long *newest)
{
    struct dirent *de;
    DIR *d = opendir(dir);

    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        char *child = join_path(dir, de->d_name);
        struct stat st;

        if (child != NULL && lstat(child, &st) == 0 && S_ISREG(st.st_mode)
            && (long long)st.st_mtime > *newest)
            *newest = (long long)st.st_mtime;
        free(child);
    }
    closedir(d);
}

/* The highest-numbered interval/NNNN folder under root, into out; "" when there is none. */
static void find_last_interval(const char *root, char *out, size_t outsz)
{
    char *interval_dir = join_path(root, "interval");
    struct dirent *de;
    long best = -1;
    DIR *d;

    out[0] = '\0';
    d = interval_dir != NULL ? opendir(interval_dir) : NULL;
    if (d != NULL) {
        while ((de = readdir(d)) != NULL) {
            char *child;
            long number;

            if (!all_digits(de->d_name, MAX_INTERVAL_DIGITS))
                continue;
            number = strtol(de->d_name, NULL, 10);
            if (number <= best)
                continue;
            child = join_path(interval_dir, de->d_name);
            if (child != NULL && is_dir(child)) {
                size_t len = strlen(de->d_name);

                /* all_digits() capped the length; the check keeps the compiler's range analysis happy. */
                if (len < outsz) {
                    best = number;
                    memcpy(out, de->d_name, len + 1);
                }
            }
            free(child);
        }
        closedir(d);
    }
    free(interval_dir);
}

/* ---- archive extraction ---- */

struct extract_state {
    const char *archive_path;
    const char *tmpdir;
    char top[256];                      /* the one top folder of the archive */
    unsigned long long total_bytes;     /* bytes of the files kept on disk */
    long interval;                      /* number of the interval folder kept, -1 for none */
    char interval_name[MAX_INTERVAL_DIGITS + 1];
    unsigned long long interval_bytes;  /* bytes of the kept interval's files */
};

/*
 * Split an archive entry name into parts, dropping "./" and empty parts.
 * Returns the part count, or -1 with err filled when the name is rejected.
 */
static int split_entry_name(const struct extract_state *x, const char *name, char *copy,
                            char **parts, char *err, size_t errsz)
{
    char shown[128];
    char *save = NULL;
    int n = 0;

    copy_printable(shown, sizeof(shown), name);
    if (strlen(name) >= MAX_ENTRY_NAME) {
        snprintf(err, errsz, "debug bundle archive %s: entry \"%s...\" has a name longer than %d "
                 "bytes; the archive is rejected", x->archive_path, shown, MAX_ENTRY_NAME - 1);
        return -1;
    }
    for (const char *p = name; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            snprintf(err, errsz, "debug bundle archive %s: entry \"%s\" has control characters in "
                     "its name; the archive is rejected", x->archive_path, shown);
            return -1;
        }
    }
    if (name[0] == '/') {
        snprintf(err, errsz, "debug bundle archive %s: entry \"%s\" has an absolute path; the "
                 "archive is rejected, because a debug bundle contains only relative paths",
                 x->archive_path, shown);
        return -1;
    }
    strcpy(copy, name);
    for (char *part = strtok_r(copy, "/", &save); part != NULL; part = strtok_r(NULL, "/", &save)) {
        if (strcmp(part, ".") == 0)
            continue;
        if (strcmp(part, "..") == 0) {
            snprintf(err, errsz, "debug bundle archive %s: entry \"%s\" contains \"..\"; the "
                     "archive is rejected, because it could write outside its folder",
                     x->archive_path, shown);
            return -1;
        }
        if (n == MAX_NAME_PARTS) {
            snprintf(err, errsz, "debug bundle archive %s: entry \"%s\" is nested deeper than %d "
                     "folders; the archive is rejected", x->archive_path, shown, MAX_NAME_PARTS);
            return -1;
        }
        parts[n++] = part;
    }
    return n;
}

static int make_dir(const struct extract_state *x, const char *path, char *err, size_t errsz)
{
    if (mkdir(path, 0700) == 0 || (errno == EEXIST && is_dir(path)))
        return 0;
    snprintf(err, errsz, "debug bundle archive %s: cannot create %s: %s", x->archive_path, path,
             strerror(errno));
    return -1;
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

/*
 * Write the current entry's data to <tmpdir>/<top>/<folder>/<file>, where
 * folder is "cluster" or "interval/NNNN". Enforces the size caps while writing,
 * because a header's size is not trusted.
 */
static int extract_file(struct archive *a, struct archive_entry *entry, struct extract_state *x,
                        const char *folder, const char *file, const char *shown,
                        char *data, size_t datasz, char *err, size_t errsz)
{
    char dir[4096];
    char path[4096];
    unsigned long long size = 0;
    int in_interval = strcmp(folder, "cluster") != 0;
    int fd = -1;
    int rc = -1;

    if (snprintf(dir, sizeof(dir), "%s/%s", x->tmpdir, x->top) >= (int)sizeof(dir))
        goto too_long;
    if (make_dir(x, dir, err, errsz) != 0)
        return -1;
    if (snprintf(dir, sizeof(dir), "%s/%s/%s", x->tmpdir, x->top,
                 in_interval ? "interval" : "cluster") >= (int)sizeof(dir))
        goto too_long;
    if (make_dir(x, dir, err, errsz) != 0)
        return -1;
    if (in_interval) {
        if (snprintf(dir, sizeof(dir), "%s/%s/%s", x->tmpdir, x->top, folder) >= (int)sizeof(dir))
            goto too_long;
        if (make_dir(x, dir, err, errsz) != 0)
            return -1;
    }
    if (snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path))
        goto too_long;
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        snprintf(err, errsz, "debug bundle archive %s: entry \"%s\" appears twice; the archive is "
                 "rejected", x->archive_path, shown);
        return -1;
    }
    if (fd < 0) {
        snprintf(err, errsz, "debug bundle archive %s: cannot create %s: %s", x->archive_path, path,
                 strerror(errno));
        return -1;
    }
    for (;;) {
        la_ssize_t n = archive_read_data(a, data, datasz);

        if (n < 0) {
            snprintf(err, errsz, "debug bundle archive %s: reading entry \"%s\" failed: %s; the "
                     "archive is damaged", x->archive_path, shown, archive_error_string(a));
            goto out;
        }
        if (n == 0)
            break;
        size += (unsigned long long)n;
        if (size > SOURCE_MAX_FILE_BYTES) {
            snprintf(err, errsz, "debug bundle archive %s: entry \"%s\" is larger than %zu bytes "
                     "(%zu MiB), the limit for one bundle file; the archive is rejected",
                     x->archive_path, shown, SOURCE_MAX_FILE_BYTES, SOURCE_MAX_FILE_BYTES >> 20);
            goto out;
        }
        if (x->total_bytes + size > SOURCE_MAX_ARCHIVE_BYTES) {
            snprintf(err, errsz, "debug bundle archive %s: the files to extract exceed %llu bytes "
                     "(%llu MiB), the limit for one bundle; the archive is rejected",
                     x->archive_path, SOURCE_MAX_ARCHIVE_BYTES, SOURCE_MAX_ARCHIVE_BYTES >> 20);
            goto out;
        }
        if (write_all(fd, data, (size_t)n) != 0) {
            snprintf(err, errsz, "debug bundle archive %s: writing %s failed: %s; free space in "
                     "$TMPDIR or extract the archive yourself", x->archive_path, path,
                     strerror(errno));
            goto out;
        }
    }
    if (archive_entry_mtime_is_set(entry)) {
        struct timespec times[2];

        times[0].tv_sec = archive_entry_mtime(entry);
        times[0].tv_nsec = 0;
        times[1] = times[0];
        futimens(fd, times);
    }
    x->total_bytes += size;
    if (in_interval)
        x->interval_bytes += size;
    rc = 0;

out:
    if (close(fd) != 0 && rc == 0) {
        snprintf(err, errsz, "debug bundle archive %s: writing %s failed: %s", x->archive_path, path,
                 strerror(errno));
        rc = -1;
    }
    return rc;

too_long:
    snprintf(err, errsz, "debug bundle archive %s: the path for entry \"%s\" is too long; set "
             "TMPDIR to a shorter directory", x->archive_path, shown);
    return -1;
}

/*
 * Decide what to do with an interval/NNNN file: returns 1 to extract it, 0 to
 * skip it (an older interval), -1 with err filled to reject the archive. A
 * newer interval replaces the one on disk, so at most one interval is kept.
 */
static int keep_interval_file(struct extract_state *x, const char *name, const char *shown,
                              char *err, size_t errsz)
{
    long number = strtol(name, NULL, 10);
    char old[4096];

    if (number < x->interval)
        return 0;
    if (number == x->interval) {
        if (strcmp(name, x->interval_name) == 0)
            return 1;
        snprintf(err, errsz, "debug bundle archive %s: entry \"%s\" is in a second interval folder "
                 "numbered %ld; the archive is rejected", x->archive_path, shown, number);
        return -1;
    }
    if (x->interval >= 0) {
        snprintf(old, sizeof(old), "%s/%s/interval/%s", x->tmpdir, x->top, x->interval_name);
        remove_tree(old);
        x->total_bytes -= x->interval_bytes;
    }
    x->interval = number;
    x->interval_bytes = 0;
    snprintf(x->interval_name, sizeof(x->interval_name), "%s", name);
    return 1;
}

/*
 * Check one archive entry and extract it when it is a cluster/ or
 * interval/NNNN/ file. Returns 0, or -1 with err filled to reject the archive.
 */
static int extract_entry(struct archive *a, struct archive_entry *entry, struct extract_state *x,
                         char *data, size_t datasz, char *err, size_t errsz)
{
    const char *name = archive_entry_pathname(entry);
    char copy[MAX_ENTRY_NAME];
    char *parts[MAX_NAME_PARTS];
    char shown[128];
    char folder[32];
    unsigned int type = archive_entry_filetype(entry);
    int n;
    int keep;

    if (name == NULL) {
        snprintf(err, errsz, "debug bundle archive %s: an entry has no name; the archive is damaged",
                 x->archive_path);
        return -1;
    }
    n = split_entry_name(x, name, copy, parts, err, errsz);
    if (n < 0)
        return -1;
    if (n == 0)
        return 0;
    copy_printable(shown, sizeof(shown), name);
    if (archive_entry_hardlink(entry) != NULL || type == AE_IFLNK) {
        snprintf(err, errsz, "debug bundle archive %s: entry \"%s\" is a %s link; the archive is "
                 "rejected, because a debug bundle contains only files and folders", x->archive_path,
                 shown, type == AE_IFLNK ? "symbolic" : "hard");
        return -1;
    }
    if (type != AE_IFREG && type != AE_IFDIR) {
        snprintf(err, errsz, "debug bundle archive %s: entry \"%s\" is neither a file nor a folder; "
                 "the archive is rejected", x->archive_path, shown);
        return -1;
    }
    if (x->top[0] == '\0') {
        if (strlen(parts[0]) >= sizeof(x->top)) {
            snprintf(err, errsz, "debug bundle archive %s: top folder name of entry \"%s\" is too "
                     "long; the archive is rejected", x->archive_path, shown);
            return -1;
        }
        snprintf(x->top, sizeof(x->top), "%s", parts[0]);
    } else if (strcmp(parts[0], x->top) != 0) {
        snprintf(err, errsz, "debug bundle archive %s: entry \"%s\" is outside the top folder "
                 "\"%s\"; the archive is rejected, because a debug bundle contains one folder",
                 x->archive_path, shown, x->top);
        return -1;
    }
    if (n == 1 && type != AE_IFDIR) {
        snprintf(err, errsz, "debug bundle archive %s: entry \"%s\" is a file outside any folder; "
                 "the archive is rejected, because a debug bundle contains one folder",
                 x->archive_path, shown);
        return -1;
    }
    /* Folders are made as files need them; files other than these are not needed. */
    if (type == AE_IFDIR)
        return 0;
    if (n == 3 && strcmp(parts[1], "cluster") == 0) {
        snprintf(folder, sizeof(folder), "cluster");
    } else if (n == 4 && strcmp(parts[1], "interval") == 0
               && all_digits(parts[2], MAX_INTERVAL_DIGITS)) {
        keep = keep_interval_file(x, parts[2], shown, err, errsz);
        if (keep <= 0)
            return keep;
        snprintf(folder, sizeof(folder), "interval/%s", parts[2]);
    } else {
        return 0;
    }
    if (archive_entry_size_is_set(entry)
        && (unsigned long long)archive_entry_size(entry) > SOURCE_MAX_FILE_BYTES) {
        snprintf(err, errsz, "debug bundle archive %s: entry \"%s\" is larger than %zu bytes "
                 "(%zu MiB), the limit for one bundle file; the archive is rejected",
                 x->archive_path, shown, SOURCE_MAX_FILE_BYTES, SOURCE_MAX_FILE_BYTES >> 20);
        return -1;
    }
    return extract_file(a, entry, x, folder, parts[n - 1], shown, data, datasz, err, errsz);
}

/*
 * Extract the cluster/ files and the last interval of the archive at
 * archive_path into tmpdir, and copy the name of its top folder into top.
 * Returns 0, or -1 with err filled; tmpdir may then hold partial output.
 */
static int extract_archive(const char *archive_path, const char *tmpdir, char *top, size_t topsz,
                           char *err, size_t errsz)
{
    struct extract_state x;
    struct archive_entry *entry;
    struct archive *a = archive_read_new();
    size_t datasz = 64 * 1024;
    char *data = malloc(datasz);
    long count = 0;
    int rc = -1;

    memset(&x, 0, sizeof(x));
    x.archive_path = archive_path;
    x.tmpdir = tmpdir;
    x.interval = -1;
    if (a == NULL || data == NULL) {
        snprintf(err, errsz, "debug bundle archive %s: out of memory", archive_path);
        goto out;
    }
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    if (archive_read_open_filename(a, archive_path, 64 * 1024) != ARCHIVE_OK) {
        snprintf(err, errsz, "cannot open debug bundle archive %s: %s; pass the nomad-debug-<time> "
                 "folder or its .tar.gz", archive_path, archive_error_string(a));
        goto out;
    }
    for (;;) {
        int r = archive_read_next_header(a, &entry);

        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN) {
            snprintf(err, errsz, "cannot read debug bundle archive %s: %s; pass the "
                     "nomad-debug-<time> folder or its .tar.gz", archive_path,
                     archive_error_string(a));
            goto out;
        }
        if (++count > MAX_ARCHIVE_ENTRIES) {
            snprintf(err, errsz, "debug bundle archive %s has more than %d entries, the limit for "
                     "one bundle; the archive is rejected", archive_path, MAX_ARCHIVE_ENTRIES);
            goto out;
        }
        if (extract_entry(a, entry, &x, data, datasz, err, errsz) != 0)
            goto out;
    }
    if (x.top[0] == '\0') {
        snprintf(err, errsz, "debug bundle archive %s contains no files; pass the nomad-debug-<time> "
                 "folder or its .tar.gz", archive_path);
        goto out;
    }
    snprintf(top, topsz, "%s", x.top);
    rc = 0;

out:
    if (a != NULL)
        archive_read_free(a);
    free(data);
    return rc;
}

/* ---- reading bundle files ---- */

/* The text of a {"Error": "..."} object, which a failed collection writes in place of data. */
static const char *collection_error(const cJSON *item)
{
    const cJSON *member = cJSON_IsObject(item) ? item->child : NULL;

    if (member == NULL || member->next != NULL || member->string == NULL
        || strcmp(member->string, "Error") != 0 || !cJSON_IsString(member))
        return NULL;
    return member->valuestring;
}

static void list_fail(struct list_cache *c, enum nomad_result result, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void list_fail(struct list_cache *c, enum nomad_result result, const char *fmt, ...)
{
    va_list ap;

    c->fail_result = result;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof(c->error), fmt, ap);
    va_end(ap);
    free(c->buf);
    c->buf = NULL;
    free(c->items);
    c->items = NULL;
    c->n_items = 0;
}

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && is_space(*p))
        p++;
    return p;
}

/* End of the JSON value starting at p, in text that cJSON has already accepted. */
static const char *value_end(const char *p, const char *end)
{
    int depth = 0;
    int in_string = 0;

    for (; p < end; p++) {
        char c = *p;

        if (in_string) {
            if (c == '\\' && p + 1 < end) {
                p++;
            } else if (c == '"') {
                in_string = 0;
                if (depth == 0)
                    return p + 1;
            }
            continue;
        }
        if (c == '"') {
            in_string = 1;
        } else if (c == '[' || c == '{') {
            depth++;
        } else if (c == ']' || c == '}') {
            if (depth == 0)
                return p;
            if (--depth == 0)
                return p + 1;
        } else if (depth == 0 && (c == ',' || is_space(c))) {
            return p;
        }
    }
    return end;
}

static int add_item(struct list_cache *c, size_t *cap, const char *start, size_t len,
                    const cJSON *object)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(object, "ID");
    struct list_item *item;

    if (c->n_items == *cap) {
        size_t new_cap = *cap ? *cap * 2 : 64;
        struct list_item *grown = realloc(c->items, new_cap * sizeof(*grown));

        if (grown == NULL)
            return -1;
        c->items = grown;
        *cap = new_cap;
    }
    item = &c->items[c->n_items++];
    item->offset = (size_t)(start - c->buf);
    item->len = len;
    item->id[0] = '\0';
    if (cJSON_IsString(id) && is_uuid(id->valuestring))
        memcpy(item->id, id->valuestring, UUID_LEN + 1);
    return 0;
}

/* Fill c's items from a file that parsed as one JSON value: an array, or a single object. */
static void parse_whole(const struct bundle_source *b, struct list_cache *c, size_t len,
                        const cJSON *whole)
{
    const char *end = c->buf + len;
    const char *p = skip_space(c->buf, end);
    const cJSON *child;
    const char *failure;
    size_t cap = 0;
    size_t i = 0;

    if (cJSON_IsObject(whole)) {
        failure = collection_error(whole);
        if (failure != NULL) {
            char text[384];

            copy_printable(text, sizeof(text), failure);
            list_fail(c, NOMAD_ERR_STATUS, "debug bundle %s: %s contains a failed collection instead "
                      "of data: %s", b->path, c->rel, text);
            return;
        }
        /* A one-line NDJSON file: a list of one object. */
        if (add_item(c, &cap, p, (size_t)(value_end(p, end) - p), whole) != 0)
            list_fail(c, NOMAD_ERR_INTERNAL, "debug bundle %s: out of memory reading %s", b->path,
                      c->rel);
        return;
    }
    if (!cJSON_IsArray(whole)) {
        list_fail(c, NOMAD_ERR_TRANSPORT, "debug bundle %s: %s is neither NDJSON nor a JSON array; "
                  "the file is damaged, run nomad operator debug again", b->path, c->rel);
        return;
    }
    p++;  /* past '[' */
    cJSON_ArrayForEach(child, whole) {
        const char *start = skip_space(p, end);

        i++;
        if (!cJSON_IsObject(child)) {
            list_fail(c, NOMAD_ERR_TRANSPORT, "debug bundle %s: element %zu of %s is not a JSON "
                      "object; the file is damaged, run nomad operator debug again", b->path, i,
                      c->rel);
            return;
        }
        p = value_end(start, end);
        if (add_item(c, &cap, start, (size_t)(p - start), child) != 0) {
            list_fail(c, NOMAD_ERR_INTERNAL, "debug bundle %s: out of memory reading %s", b->path,
                      c->rel);
            return;
        }
        p = skip_space(p, end);
        if (p < end && *p == ',')
            p++;
    }
}

/* Fill c's items from NDJSON: one object a line, blank lines ignored. */
static void parse_lines(const struct bundle_source *b, struct list_cache *c, size_t len)
{
    char *p = c->buf;
    char *end = c->buf + len;
    size_t line_no = 0;
    size_t cap = 0;

    while (p < end) {
        char *newline = memchr(p, '\n', (size_t)(end - p));
        char *line_end = newline != NULL ? newline : end;
        char *start = (char *)skip_space(p, line_end);
        char *stop = line_end;
        const char *failure;
        cJSON *object;
        char saved;

        line_no++;
        while (stop > start && is_space(stop[-1]))
            stop--;
        p = line_end + 1;
        if (start == stop)
            continue;
        /* Parse the line in place: cut it with a NUL, then restore the byte. */
        saved = *stop;
        *stop = '\0';
        object = cJSON_ParseWithOpts(start, NULL, 1);
        *stop = saved;
        if (object == NULL) {
            list_fail(c, NOMAD_ERR_TRANSPORT, "debug bundle %s: %s line %zu is not valid JSON; the "
                      "file is damaged, run nomad operator debug again", b->path, c->rel, line_no);
            return;
        }
        failure = collection_error(object);
        if (failure != NULL) {
            char text[384];

            copy_printable(text, sizeof(text), failure);
            list_fail(c, NOMAD_ERR_STATUS, "debug bundle %s: %s line %zu contains a failed collection "
                      "instead of data: %s", b->path, c->rel, line_no, text);
        } else if (!cJSON_IsObject(object)) {
            list_fail(c, NOMAD_ERR_TRANSPORT, "debug bundle %s: %s line %zu is not a JSON object; "
                      "the file is damaged, run nomad operator debug again", b->path, c->rel,
                      line_no);
        } else if (add_item(c, &cap, start, (size_t)(stop - start), object) != 0) {
            list_fail(c, NOMAD_ERR_INTERNAL, "debug bundle %s: out of memory reading %s", b->path,
                      c->rel);
        }
        cJSON_Delete(object);
        if (c->fail_result != NOMAD_OK)
            return;
    }
}

/* Load the list file of kind once; later calls return the same cache, failed or not. */
static const struct list_cache *load_list(struct bundle_source *b, enum list_kind kind)
{
    struct list_cache *c = &b->lists[kind];
    char read_err[512];
    char *full = NULL;
    cJSON *whole;
    struct stat st;
    size_t len;

    if (c->loaded)
        return c;
    c->loaded = 1;
    c->fail_result = NOMAD_OK;
    if (b->interval[0] != '\0')
        snprintf(c->rel, sizeof(c->rel), "interval/%s/%s", b->interval, list_files[kind]);
    if (kind == LIST_NODES) {
        /* cluster/nodes.json is written once at the start; the interval's copy is newer. */
        full = c->rel[0] != '\0' ? join_path(b->root, c->rel) : NULL;
        if (full == NULL || lstat(full, &st) != 0)
            snprintf(c->rel, sizeof(c->rel), "cluster/%s", list_files[kind]);
        free(full);
    }
    if (c->rel[0] == '\0') {
        list_fail(c, NOMAD_ERR_STATUS, "debug bundle %s has no interval/ folder, so it contains no %s",
                  b->path, list_files[kind]);
        return c;
    }
    full = join_path(b->root, c->rel);
    if (full == NULL) {
        list_fail(c, NOMAD_ERR_INTERNAL, "debug bundle %s: out of memory", b->path);
        return c;
    }
    if (lstat(full, &st) != 0 && errno == ENOENT) {
        list_fail(c, NOMAD_ERR_STATUS, "debug bundle %s has no %s (the debug run may have stopped "
                  "before writing it)", b->path, c->rel);
        free(full);
        return c;
    }
    if (source_read_file(full, c->rel, SOURCE_MAX_FILE_BYTES, &c->buf, &len, read_err,
                         sizeof(read_err)) != 0) {
        list_fail(c, NOMAD_ERR_TRANSPORT, "debug bundle %s: %s", b->path, read_err);
        free(full);
        return c;
    }
    free(full);
    if (strlen(c->buf) != len) {
        list_fail(c, NOMAD_ERR_TRANSPORT, "debug bundle %s: %s contains a NUL byte, so it is not "
                  "JSON; the file is damaged, run nomad operator debug again", b->path, c->rel);
        return c;
    }
    /* NDJSON with two or more objects fails this parse, which stops after the first line. */
    whole = cJSON_ParseWithLengthOpts(c->buf, len + 1, NULL, 1);
    if (whole != NULL)
        parse_whole(b, c, len, whole);
    else
        parse_lines(b, c, len);
    cJSON_Delete(whole);
    return c;
}

/*
 * Read a single-object or string file of the bundle. Returns 0 with *parsed
 * and *buf (the raw bytes, *len long) for the caller to free, or -1 with
 * resp made a failed read.
 */
static int read_json_file(const struct bundle_source *b, const char *rel,
                          struct nomad_response *resp, cJSON **parsed, char **buf, size_t *len)
{
    char read_err[512];
    char *full = join_path(b->root, rel);
    const char *failure;
    struct stat st;

    *parsed = NULL;
    *buf = NULL;
    if (full == NULL) {
        source_response_fail(resp, NOMAD_ERR_INTERNAL, 0, "debug bundle %s: out of memory", b->path);
        return -1;
    }
    if (lstat(full, &st) != 0 && errno == ENOENT) {
        source_response_fail(resp, NOMAD_ERR_STATUS, 0, "debug bundle %s has no %s (the debug run "
                             "may have stopped before writing it)", b->path, rel);
        free(full);
        return -1;
    }
    if (source_read_file(full, rel, SOURCE_MAX_FILE_BYTES, buf, len, read_err,
                         sizeof(read_err)) != 0) {
        source_response_fail(resp, NOMAD_ERR_TRANSPORT, 0, "debug bundle %s: %s", b->path, read_err);
        free(full);
        return -1;
    }
    free(full);
    if (strlen(*buf) == *len)
        *parsed = cJSON_ParseWithLengthOpts(*buf, *len + 1, NULL, 1);
    if (*parsed == NULL) {
        source_response_fail(resp, NOMAD_ERR_TRANSPORT, 0, "debug bundle %s: %s is not valid JSON; "
                             "the file is damaged, run nomad operator debug again", b->path, rel);
        goto fail;
    }
    failure = collection_error(*parsed);
    if (failure != NULL) {
        char text[384];

        copy_printable(text, sizeof(text), failure);
        source_response_fail(resp, NOMAD_ERR_STATUS, 0, "debug bundle %s: %s contains a failed "
                             "collection instead of data: %s", b->path, rel, text);
        goto fail;
    }
    return 0;

fail:
    cJSON_Delete(*parsed);
    *parsed = NULL;
    free(*buf);
    *buf = NULL;
    return -1;
}

/* ---- responses ---- */

static void respond_ok(const struct bundle_source *b, struct nomad_response *resp, char *body,
                      size_t len)
{
    resp->result = NOMAD_OK;
    resp->status = 200;
    resp->body = body;
    resp->body_len = len;
    resp->known_leader = b->known_leader;
}

static void respond_leader(struct bundle_source *b, struct nomad_response *resp)
{
    static const char rel[] = "cluster/leader.json";
    static const char no_leader[] = "No cluster leader";
    cJSON *parsed;
    char *buf;
    size_t len;

    if (read_json_file(b, rel, resp, &parsed, &buf, &len) != 0)
        return;
    if (!cJSON_IsString(parsed)) {
        source_response_fail(resp, NOMAD_ERR_TRANSPORT, 0, "debug bundle %s: %s is not a JSON "
                             "string; the file is damaged, run nomad operator debug again", b->path,
                             rel);
        free(buf);
    } else if (parsed->valuestring[0] == '\0') {
        /* Fill the response as the live client reports a cluster without a leader. */
        free(buf);
        source_response_fail(resp, NOMAD_ERR_NO_LEADER, 500, "GET /v1/status/leader: status 500: "
                             "%s (debug bundle %s: %s is empty)", no_leader, b->path, rel);
        resp->body = strdup(no_leader);
        resp->body_len = resp->body != NULL ? strlen(no_leader) : 0;
        resp->known_leader = 0;
    } else {
        respond_ok(b, resp, buf, len);
    }
    cJSON_Delete(parsed);
}

static void respond_object_file(struct bundle_source *b, const char *rel,
                               struct nomad_response *resp)
{
    cJSON *parsed;
    char *buf;
    size_t len;

    if (read_json_file(b, rel, resp, &parsed, &buf, &len) != 0)
        return;
    if (!cJSON_IsObject(parsed)) {
        source_response_fail(resp, NOMAD_ERR_TRANSPORT, 0, "debug bundle %s: %s is not a JSON "
                             "object; the file is damaged, run nomad operator debug again", b->path,
                             rel);
        free(buf);
    } else {
        respond_ok(b, resp, buf, len);
    }
    cJSON_Delete(parsed);
}

static void respond_interval_file(struct bundle_source *b, const char *file,
                                 struct nomad_response *resp)
{
    char rel[64];

    if (b->interval[0] == '\0') {
        source_response_fail(resp, NOMAD_ERR_STATUS, 0, "debug bundle %s has no interval/ folder, "
                             "so it contains no %s", b->path, file);
        return;
    }
    snprintf(rel, sizeof(rel), "interval/%s/%s", b->interval, file);
    respond_object_file(b, rel, resp);
}

/* Respond to a list read with one JSON array made of the original bytes of each object. */
static void respond_list(struct bundle_source *b, enum list_kind kind, struct nomad_response *resp)
{
    const struct list_cache *c = load_list(b, kind);
    size_t total = 2;
    size_t at = 0;
    char *body;

    if (c->fail_result != NOMAD_OK) {
        source_response_fail(resp, c->fail_result, 0, "%s", c->error);
        return;
    }
    for (size_t i = 0; i < c->n_items; i++)
        total += c->items[i].len + 1;
    body = malloc(total + 1);
    if (body == NULL) {
        source_response_fail(resp, NOMAD_ERR_INTERNAL, 0, "debug bundle %s: out of memory for %zu "
                             "bytes of %s", b->path, total, c->rel);
        return;
    }
    body[at++] = '[';
    for (size_t i = 0; i < c->n_items; i++) {
        if (i > 0)
            body[at++] = ',';
        memcpy(body + at, c->buf + c->items[i].offset, c->items[i].len);
        at += c->items[i].len;
    }
    body[at++] = ']';
    body[at] = '\0';
    respond_ok(b, resp, body, at);
}

/* Respond to /v1/node/<id> or /v1/allocation/<id> with that object of the list. */
static void respond_lookup(struct bundle_source *b, enum list_kind kind, const char *what,
                          const char *id, struct nomad_response *resp)
{
    const struct list_cache *c;
    char shown[64];
    char *body;

    if (!is_uuid(id)) {
        copy_printable(shown, sizeof(shown), id);
        source_response_fail(resp, NOMAD_ERR_STATUS, 0, "debug bundle %s: \"%s\" is not a valid %s "
                             "ID (36 characters of hex digits and dashes)", b->path, shown, what);
        return;
    }
    c = load_list(b, kind);
    if (c->fail_result != NOMAD_OK) {
        source_response_fail(resp, c->fail_result, 0, "%s", c->error);
        return;
    }
    for (size_t i = 0; i < c->n_items; i++) {
        if (strcmp(c->items[i].id, id) != 0)
            continue;
        body = malloc(c->items[i].len + 1);
        if (body == NULL) {
            source_response_fail(resp, NOMAD_ERR_INTERNAL, 0, "debug bundle %s: out of memory",
                                 b->path);
            return;
        }
        memcpy(body, c->buf + c->items[i].offset, c->items[i].len);
        body[c->items[i].len] = '\0';
        respond_ok(b, resp, body, c->items[i].len);
        return;
    }
    source_response_fail(resp, NOMAD_ERR_STATUS, 0, "debug bundle %s: %s %s is not in %s, but a "
                         "debug bundle cannot prove that it does not exist (it may be outside the "
                         "collected namespaces, or newer than the collection); read it from the "
                         "live cluster", b->path, what, id, c->rel);
}

/* The first query parameter that a bundle cannot apply (filter, prefix), or NULL. */
static const char *unsupported_parameter(const char *query)
{
    static const char *const names[] = {"filter", "prefix"};

    while (*query != '\0') {
        size_t len = strcspn(query, "=&");

        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            if (len == strlen(names[i]) && strncmp(query, names[i], len) == 0)
                return names[i];
        }
        query += strcspn(query, "&");
        if (*query == '&')
            query++;
    }
    return NULL;
}

enum route_kind { ROUTE_LEADER, ROUTE_LIST, ROUTE_CLUSTER_FILE, ROUTE_INTERVAL_FILE };

static const struct {
    const char *path;
    enum route_kind kind;
    enum list_kind list;
    const char *file;
} routes[] = {
    {"/v1/status/leader", ROUTE_LEADER, LIST_COUNT, NULL},
    {"/v1/nodes", ROUTE_LIST, LIST_NODES, NULL},
    {"/v1/allocations", ROUTE_LIST, LIST_ALLOCATIONS, NULL},
    {"/v1/evaluations", ROUTE_LIST, LIST_EVALUATIONS, NULL},
    {"/v1/jobs", ROUTE_LIST, LIST_JOBS, NULL},
    {"/v1/agent/members", ROUTE_CLUSTER_FILE, LIST_COUNT, "cluster/members.json"},
    {"/v1/agent/self", ROUTE_CLUSTER_FILE, LIST_COUNT, "cluster/agent-self.json"},
    {"/v1/operator/raft/configuration", ROUTE_INTERVAL_FILE, LIST_COUNT, "operator-raft.json"},
    {"/v1/operator/autopilot/health", ROUTE_INTERVAL_FILE, LIST_COUNT,
     "operator-autopilot-health.json"},
    {"/v1/operator/scheduler/configuration", ROUTE_INTERVAL_FILE, LIST_COUNT,
     "operator-scheduler.json"},
};

static int bundle_get(struct source *src, const char *path, struct nomad_response *resp)
{
    struct bundle_source *b = (struct bundle_source *)src;
    const char *query = strchr(path, '?');
    size_t base_len = query != NULL ? (size_t)(query - path) : strlen(path);
    const char *parameter = query != NULL ? unsupported_parameter(query + 1) : NULL;
    char base[512];

    nomad_response_init(resp);
    snprintf(base, sizeof(base), "%.*s", (int)(base_len < sizeof(base) ? base_len : 0), path);
    if (parameter != NULL) {
        source_response_fail(resp, NOMAD_ERR_STATUS, 0, "debug bundle %s cannot apply the query "
                             "parameter %s= of GET %s; read without it, or from the live cluster",
                             b->path, parameter, path);
        goto out;
    }
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strcmp(base, routes[i].path) != 0)
            continue;
        if (routes[i].kind == ROUTE_LEADER)
            respond_leader(b, resp);
        else if (routes[i].kind == ROUTE_LIST)
            respond_list(b, routes[i].list, resp);
        else if (routes[i].kind == ROUTE_CLUSTER_FILE)
            respond_object_file(b, routes[i].file, resp);
        else
            respond_interval_file(b, routes[i].file, resp);
        goto out;
    }
    if (strncmp(base, "/v1/node/", 9) == 0 && strchr(base + 9, '/') == NULL) {
        respond_lookup(b, LIST_NODES, "node", base + 9, resp);
    } else if (strncmp(base, "/v1/allocation/", 15) == 0 && strchr(base + 15, '/') == NULL) {
        respond_lookup(b, LIST_ALLOCATIONS, "allocation", base + 15, resp);
    } else if (strcmp(base, "/v1/services") == 0 || strncmp(base, "/v1/service/", 12) == 0) {
        source_response_fail(resp, NOMAD_ERR_STATUS, 0, "debug bundle %s has no native service "
                             "registrations (nomad operator debug does not collect them)", b->path);
    } else {
        source_response_fail(resp, NOMAD_ERR_STATUS, 0, "debug bundle %s has no data for GET %s "
                             "(nomad operator debug does not collect it); read it from the live "
                             "cluster", b->path, path);
    }

out:
    return resp->result == NOMAD_OK ? 0 : -1;
}

static void bundle_destroy(struct source *src)
{
    struct bundle_source *b = (struct bundle_source *)src;

    for (int i = 0; i < LIST_COUNT; i++) {
        free(b->lists[i].buf);
        free(b->lists[i].items);
    }
    if (b->tmpdir != NULL)
        remove_tree(b->tmpdir);
    free(b->tmpdir);
    free(b->root);
    free(b->path);
    free(b->note);
    free(b);
}

static const struct source_ops bundle_ops = {
    .name = "debug-bundle",
    .get = bundle_get,
    .get_many = NULL,   /* files are local: source_get_many() reads them one by one */
    .destroy = bundle_destroy,
};

/* Extract the archive at b->path into a new private directory and point b->root into it. */
static int open_archive(struct bundle_source *b, char *folder_name, size_t namesz, char *err,
                        size_t errsz)
{
    const char *tmp_base = getenv("TMPDIR");
    char template[4096];

    if (tmp_base == NULL || tmp_base[0] == '\0')
        tmp_base = "/tmp";
    snprintf(template, sizeof(template), "%s/nomad-medic-bundle-XXXXXX", tmp_base);
    if (mkdtemp(template) == NULL) {
        snprintf(err, errsz, "cannot create a directory to extract debug bundle %s into (%s): %s; "
                 "set TMPDIR to a writable directory", b->path, template, strerror(errno));
        return -1;
    }
    b->tmpdir = strdup(template);
    if (b->tmpdir == NULL) {
        remove_tree(template);
        snprintf(err, errsz, "debug bundle %s: out of memory", b->path);
        return -1;
    }
    if (extract_archive(b->path, b->tmpdir, folder_name, namesz, err, errsz) != 0)
        return -1;
    b->root = join_path(b->tmpdir, folder_name);
    if (b->root == NULL) {
        snprintf(err, errsz, "debug bundle %s: out of memory", b->path);
        return -1;
    }
    return 0;
}

/* Known-leader value of every response: 1 with a leader, 0 without, -1 when leader.json is unreadable. */
static int read_known_leader(struct bundle_source *b)
{
    struct nomad_response scratch;
    cJSON *parsed;
    char *buf;
    size_t len;
    int known = -1;

    nomad_response_init(&scratch);
    if (read_json_file(b, "cluster/leader.json", &scratch, &parsed, &buf, &len) == 0) {
        if (cJSON_IsString(parsed))
            known = parsed->valuestring[0] != '\0';
        cJSON_Delete(parsed);
        free(buf);
    }
    nomad_response_free(&scratch);
    return known;
}

struct source *source_bundle_new(const char *path, char *err, size_t errsz)
{
    struct bundle_source *b = NULL;
    char folder_name[256] = "";
    char note[160];
    char *cluster = NULL;
    struct stat st;

    if (path == NULL || path[0] == '\0') {
        snprintf(err, errsz, "no debug bundle given; pass the nomad-debug-<time> folder or its .tar.gz");
        return NULL;
    }
    if (stat(path, &st) != 0) {
        snprintf(err, errsz, "cannot open debug bundle %s: %s; pass the nomad-debug-<time> folder or "
                 "its .tar.gz", path, strerror(errno));
        return NULL;
    }
    b = calloc(1, sizeof(*b));
    if (b == NULL || (b->path = strdup(path)) == NULL) {
        snprintf(err, errsz, "debug bundle %s: out of memory", path);
        goto fail;
    }
    b->base.ops = &bundle_ops;
    if (S_ISDIR(st.st_mode)) {
        char *real = realpath(path, NULL);
        const char *slash = real != NULL ? strrchr(real, '/') : NULL;

        if (slash != NULL)
            snprintf(folder_name, sizeof(folder_name), "%s", slash + 1);
        free(real);
        b->root = strdup(path);
        if (b->root == NULL) {
            snprintf(err, errsz, "debug bundle %s: out of memory", path);
            goto fail;
        }
    } else if (S_ISREG(st.st_mode)) {
        if (open_archive(b, folder_name, sizeof(folder_name), err, errsz) != 0)
            goto fail;
    } else {
        snprintf(err, errsz, "debug bundle %s is neither a folder nor an archive file; pass the "
                 "nomad-debug-<time> folder or its .tar.gz", path);
        goto fail;
    }

    cluster = join_path(b->root, "cluster");
    if (cluster == NULL || !is_dir(cluster)) {
        snprintf(err, errsz, "%s is not a nomad operator debug bundle: it has no cluster/ folder; "
                 "pass the nomad-debug-<time> folder or its .tar.gz", path);
        goto fail;
    }
    find_last_interval(b->root, b->interval, sizeof(b->interval));

    if (parse_folder_time(folder_name, &b->base.observed_at) != 0) {
        b->base.observed_at = 0;
        newest_mtime_in(cluster, &b->base.observed_at);
        if (b->interval[0] != '\0') {
            char rel[64];
            char *interval_dir;

            snprintf(rel, sizeof(rel), "interval/%s", b->interval);
            interval_dir = join_path(b->root, rel);
            if (interval_dir != NULL)
                newest_mtime_in(interval_dir, &b->base.observed_at);
            free(interval_dir);
        }
    }
    b->known_leader = read_known_leader(b);
    if (b->interval[0] != '\0')
        snprintf(note, sizeof(note), "debug bundle: no service registrations; evaluated from "
                 "interval %s", b->interval);
    else
        snprintf(note, sizeof(note), "debug bundle: no service registrations; no interval folder, "
                 "so only cluster/ data is available");
    b->note = strdup(note);
    if (b->note == NULL) {
        snprintf(err, errsz, "debug bundle %s: out of memory", path);
        goto fail;
    }
    b->base.note = b->note;
    b->base.per_page = 0;
    free(cluster);
    return &b->base;

fail:
    free(cluster);
    if (b != NULL)
        bundle_destroy(&b->base);
    return NULL;
}
