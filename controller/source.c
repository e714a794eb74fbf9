/*
 * Dispatch of the source interface, and helpers shared by its implementations.
 */
#define _POSIX_C_SOURCE 200809L

#include "source.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void source_response_fail(struct nomad_response *resp, enum nomad_result result, long status,
                          const char *fmt, ...)
{
    va_list ap;

    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
    free(resp->next_token);
    resp->next_token = NULL;
    resp->result = result;
    resp->status = status;
    va_start(ap, fmt);
    vsnprintf(resp->error, sizeof(resp->error), fmt, ap);
    va_end(ap);
}

int source_get(struct source *src, const char *path, struct nomad_response *resp)
{
    if (src == NULL || src->ops == NULL || src->ops->get == NULL || path == NULL) {
        nomad_response_init(resp);
        source_response_fail(resp, NOMAD_ERR_INTERNAL, 0, "GET %s: no source to read from",
                             path != NULL ? path : "(no path)");
        return -1;
    }
    src->ops->get(src, path, resp);
    return resp->result == NOMAD_OK ? 0 : -1;
}

int source_get_many(struct source *src, const char *const *paths, size_t n,
                    struct nomad_response *resps)
{
    int failed = 0;

    if (src != NULL && src->ops != NULL && src->ops->get_many != NULL) {
        src->ops->get_many(src, paths, n, resps);
    } else {
        /* A source without get_many reads one path after the other. */
        for (size_t i = 0; i < n; i++)
            source_get(src, paths[i], &resps[i]);
    }
    for (size_t i = 0; i < n; i++) {
        if (resps[i].result != NOMAD_OK)
            failed++;
    }
    return failed;
}

void source_destroy(struct source *src)
{
    if (src == NULL)
        return;
    if (src->ops != NULL && src->ops->destroy != NULL)
        src->ops->destroy(src);
}

int source_is_capture_dir(const char *path)
{
    char manifest[4096];
    struct stat st;
    int len;

    if (path == NULL)
        return 0;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return 0;
    len = snprintf(manifest, sizeof(manifest), "%s/manifest.json", path);
    if (len < 0 || (size_t)len >= sizeof(manifest))
        return 0;
    return lstat(manifest, &st) == 0 && S_ISREG(st.st_mode);
}

int source_read_file(const char *path, const char *display, size_t max_bytes, char **buf,
                     size_t *len, char *err, size_t errsz)
{
    struct stat st;
    char *data = NULL;
    size_t got = 0;
    int fd;
    int rc = -1;

    *buf = NULL;
    *len = 0;
    if (display == NULL)
        display = path;
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP)
            snprintf(err, errsz, "%s is a symbolic link, which is not followed; replace it with the file",
                     display);
        else
            snprintf(err, errsz, "cannot open %s: %s", display, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        snprintf(err, errsz, "cannot stat %s: %s", display, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errsz, "%s is not a regular file", display);
        goto out;
    }
    if ((unsigned long long)st.st_size > max_bytes) {
        snprintf(err, errsz, "%s is larger than %zu bytes (%zu MiB), the limit for one file",
                 display, max_bytes, max_bytes >> 20);
        goto out;
    }
    data = malloc((size_t)st.st_size + 1);
    if (data == NULL) {
        snprintf(err, errsz, "reading %s: out of memory for %lld bytes", display,
                 (long long)st.st_size);
        goto out;
    }
    /* Read until EOF, so a file that shrank or grew meanwhile is caught below. */
    while (got <= (size_t)st.st_size) {
        ssize_t n = read(fd, data + got, (size_t)st.st_size + 1 - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errsz, "reading %s failed: %s", display, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    if (got != (size_t)st.st_size) {
        snprintf(err, errsz, "%s changed while it was read; read it again", display);
        goto out;
    }
    data[got] = '\0';
    *buf = data;
    *len = got;
    data = NULL;
    rc = 0;

out:
    free(data);
    close(fd);
    return rc;
}
