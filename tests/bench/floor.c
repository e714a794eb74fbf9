/*
 * The benchmark's floor: the least work that reads the cluster state a
 * cluster-scope pass needs. It fetches a fixed list of URLs and parses each
 * body with cJSON, then frees it, and does nothing else.
 *
 *   floor fetch URLFILE [PARALLEL]   GET every URL in URLFILE (one per line)
 *                                    with libcurl's multi interface, PARALLEL
 *                                    transfers at a time (default 8) over
 *                                    kept-alive connections, and parse each
 *                                    body as it completes.
 *   floor parse DIR                  parse every file in DIR, where
 *                                    `curl --parallel` saved the bodies.
 *
 * Both print one JSON line on stdout: {"files" or "requests", "bytes",
 * "seconds"}. Any transfer error, HTTP status other than 200 or body that is
 * not valid JSON makes the run fail (exit 1) with the URL or file on stderr,
 * so a floor measured against a broken server never looks fast.
 *
 * Build: cc -O2 -o floor floor.c $(pkg-config --cflags --libs libcjson libcurl)
 */
#define _POSIX_C_SOURCE 200809L

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_PARALLEL 8
#define MAX_PARALLEL 64

/* A growable response body; data is malloc'd and owned by the struct. */
struct body {
    char *data;
    size_t len;
    size_t cap;
};

/* One transfer slot: an easy handle reused for URL after URL, so its connection stays open. */
struct slot {
    CURL *easy;
    struct body body;
    const char *url;      /* borrowed from the URL list */
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct body *b = userdata;
    size_t n = size * nmemb;

    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64 * 1024;
        char *grown;

        while (cap < b->len + n + 1)
            cap *= 2;
        grown = realloc(b->data, cap);
        if (grown == NULL)
            return 0;     /* libcurl reports CURLE_WRITE_ERROR */
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    return n;
}

/* Parse one body and free the tree. Returns 0 when it is valid JSON. */
static int parse_and_free(const char *data, size_t len)
{
    cJSON *root = cJSON_ParseWithLength(data, len);

    if (root == NULL)
        return -1;
    cJSON_Delete(root);
    return 0;
}

/* Read URLFILE into an array of lines. *text owns the storage the lines point into. */
static int read_lines(const char *path, char **text, char ***lines, size_t *n_lines)
{
    FILE *f = fopen(path, "rb");
    size_t cap = 0;
    long size;
    char *p;

    *text = NULL;
    *lines = NULL;
    *n_lines = 0;
    if (f == NULL) {
        fprintf(stderr, "floor: cannot open URL list %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto fail;
    *text = malloc((size_t)size + 1);
    if (*text == NULL || fread(*text, 1, (size_t)size, f) != (size_t)size)
        goto fail;
    (*text)[size] = '\0';
    fclose(f);
    f = NULL;

    for (p = strtok(*text, "\r\n"); p != NULL; p = strtok(NULL, "\r\n")) {
        if (*n_lines == cap) {
            char **grown;

            cap = cap ? cap * 2 : 1024;
            grown = realloc(*lines, cap * sizeof(**lines));
            if (grown == NULL)
                goto fail;
            *lines = grown;
        }
        (*lines)[(*n_lines)++] = p;
    }
    return 0;

fail:
    fprintf(stderr, "floor: cannot read URL list %s\n", path);
    if (f != NULL)
        fclose(f);
    free(*text);
    free(*lines);
    *text = NULL;
    *lines = NULL;
    return -1;
}

static int start_transfer(CURLM *multi, struct slot *slot, const char *url)
{
    slot->url = url;
    slot->body.len = 0;
    curl_easy_setopt(slot->easy, CURLOPT_URL, url);
    return curl_multi_add_handle(multi, slot->easy) == CURLM_OK ? 0 : -1;
}

/* Check one finished transfer and parse its body. Returns 0 on success. */
static int finish_transfer(struct slot *slot, CURLcode result)
{
    long status = 0;

    if (result != CURLE_OK) {
        fprintf(stderr, "floor: GET %s failed: %s\n", slot->url, curl_easy_strerror(result));
        return -1;
    }
    curl_easy_getinfo(slot->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        fprintf(stderr, "floor: GET %s returned HTTP %ld; check the server's log\n", slot->url, status);
        return -1;
    }
    if (parse_and_free(slot->body.data, slot->body.len) != 0) {
        fprintf(stderr, "floor: GET %s: body is not valid JSON (%zu bytes)\n", slot->url, slot->body.len);
        return -1;
    }
    return 0;
}

static int cmd_fetch(const char *url_file, int parallel)
{
    struct slot slots[MAX_PARALLEL];
    struct slot *by_handle;
    char *text = NULL;
    char **urls = NULL;
    size_t n_urls = 0, next = 0, done = 0, bytes = 0;
    CURLM *multi = NULL;
    int running = 0, rc = 1;
    double start;

    memset(slots, 0, sizeof(slots));
    if (read_lines(url_file, &text, &urls, &n_urls) != 0)
        return 1;
    multi = curl_multi_init();
    if (multi == NULL)
        goto out;
    curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)parallel);
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)parallel);
    for (int i = 0; i < parallel; i++) {
        slots[i].easy = curl_easy_init();
        if (slots[i].easy == NULL)
            goto out;
        curl_easy_setopt(slots[i].easy, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(slots[i].easy, CURLOPT_WRITEDATA, &slots[i].body);
        curl_easy_setopt(slots[i].easy, CURLOPT_PRIVATE, &slots[i]);
        curl_easy_setopt(slots[i].easy, CURLOPT_NOSIGNAL, 1L);
    }

    start = now_s();
    for (int i = 0; i < parallel && next < n_urls; i++) {
        if (start_transfer(multi, &slots[i], urls[next++]) != 0)
            goto out;
    }
    while (done < n_urls) {
        CURLMsg *msg;
        int queued;

        if (curl_multi_perform(multi, &running) != CURLM_OK)
            goto out;
        while ((msg = curl_multi_info_read(multi, &queued)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&by_handle);
            curl_multi_remove_handle(multi, msg->easy_handle);
            if (finish_transfer(by_handle, msg->data.result) != 0)
                goto out;
            bytes += by_handle->body.len;
            done++;
            if (next < n_urls && start_transfer(multi, by_handle, urls[next++]) != 0)
                goto out;
        }
        if (done < n_urls && curl_multi_poll(multi, NULL, 0, 1000, NULL) != CURLM_OK)
            goto out;
    }
    printf("{\"requests\": %zu, \"bytes\": %zu, \"seconds\": %.6f}\n", done, bytes, now_s() - start);
    rc = 0;

out:
    for (int i = 0; i < parallel; i++) {
        if (slots[i].easy != NULL) {
            if (multi != NULL)
                curl_multi_remove_handle(multi, slots[i].easy);
            curl_easy_cleanup(slots[i].easy);
        }
        free(slots[i].body.data);
    }
    if (multi != NULL)
        curl_multi_cleanup(multi);
    free(urls);
    free(text);
    if (rc != 0 && done < n_urls)
        fprintf(stderr, "floor: stopped after %zu of %zu requests\n", done, n_urls);
    return rc;
}

/* Read the file at path into b (reusing its buffer) and parse it. Returns 0 on success. */
static int parse_file(const char *path, struct body *b)
{
    FILE *f = fopen(path, "rb");
    char chunk[65536];
    size_t n;
    int rc = 0;

    if (f == NULL) {
        fprintf(stderr, "floor: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    b->len = 0;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (on_data(chunk, 1, n, b) != n) {
            fprintf(stderr, "floor: out of memory reading %s\n", path);
            rc = -1;
            break;
        }
    }
    fclose(f);
    if (rc == 0 && parse_and_free(b->data, b->len) != 0) {
        fprintf(stderr, "floor: %s is not valid JSON (%zu bytes)\n", path, b->len);
        rc = -1;
    }
    return rc;
}

static int cmd_parse(const char *dir_path)
{
    struct body b = { 0 };
    struct dirent *entry;
    size_t bytes = 0, files = 0;
    double start = now_s();
    char path[4096];
    DIR *dir = opendir(dir_path);
    int rc = 0;

    if (dir == NULL) {
        fprintf(stderr, "floor: cannot open directory %s: %s\n", dir_path, strerror(errno));
        return 1;
    }
    while (rc == 0 && (entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir_path, entry->d_name);
        if (parse_file(path, &b) != 0) {
            rc = 1;
            break;
        }
        bytes += b.len;
        files++;
    }
    closedir(dir);
    free(b.data);
    if (rc == 0)
        printf("{\"files\": %zu, \"bytes\": %zu, \"seconds\": %.6f}\n", files, bytes, now_s() - start);
    return rc;
}

static void usage(void)
{
    fprintf(stderr, "usage: floor fetch URLFILE [PARALLEL]   (PARALLEL 1 to %d, default %d)\n"
                    "       floor parse DIR\n", MAX_PARALLEL, DEFAULT_PARALLEL);
}

int main(int argc, char **argv)
{
    int rc;

    if (argc >= 3 && strcmp(argv[1], "fetch") == 0 && argc <= 4) {
        int parallel = argc == 4 ? atoi(argv[3]) : DEFAULT_PARALLEL;

        if (parallel < 1 || parallel > MAX_PARALLEL) {
            fprintf(stderr, "floor: invalid PARALLEL \"%s\"; use 1 to %d\n", argv[3], MAX_PARALLEL);
            return 2;
        }
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            fprintf(stderr, "floor: curl_global_init failed\n");
            return 1;
        }
        rc = cmd_fetch(argv[2], parallel);
        curl_global_cleanup();
        return rc;
    }
    if (argc == 3 && strcmp(argv[1], "parse") == 0)
        return cmd_parse(argv[2]);
    usage();
    return 2;
}
