/*
 * Unit tests of the sources: capture writer and reader, and the
 * `nomad operator debug` bundle reader (folder and tar.gz). Reads go to an
 * in-test fake source or to files made in a private temporary directory. The
 * one live-source test connects only to a closed loopback port.
 */
#define _XOPEN_SOURCE 700

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../controller/source.h"

#define NODE1 "11111111-1111-4111-8111-111111111111"
#define NODE2 "22222222-2222-4222-8222-222222222222"
#define ALLOC_OLD "00000000-0000-4000-8000-000000000000"
#define ALLOC1 "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define ALLOC2 "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
#define ALLOC_ABSENT "cccccccc-cccc-4ccc-8ccc-cccccccccccc"

#define BUNDLE_NAME "nomad-debug-2024-03-05-101112Z"
/* 2024-03-05 10:11:12 UTC */
#define BUNDLE_TIME 1709633472LL

/* ---- temporary directories and files ---- */

struct fixture {
    char dir[256];      /* private temporary directory, removed after each test */
};

/* TMPDIR as the test started, restored after a test pointed it elsewhere. */
static char *original_tmpdir;

static void restore_tmpdir(void)
{
    if (original_tmpdir != NULL)
        setenv("TMPDIR", original_tmpdir, 1);
    else
        unsetenv("TMPDIR");
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    const char *base = getenv("TMPDIR");

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "%s/test_source-XXXXXX",
             base != NULL && base[0] != '\0' ? base : "/tmp");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static char *path_in(const char *dir, const char *rel)
{
    /* Enough rotating buffers for every path that one test uses at once. */
    static char buf[64][1024];
    static int next;
    char *out = buf[next++ % 64];
    char joined[sizeof(buf[0])];

    /* dir may be an earlier result of this function, so build the path apart first. */
    if (snprintf(joined, sizeof(joined), "%s/%s", dir, rel) >= (int)sizeof(joined))
        fail_msg("test path %s/%s is longer than %zu bytes", dir, rel, sizeof(joined));
    memcpy(out, joined, sizeof(joined));
    return out;
}

/* Write content (len bytes) to dir/rel, creating the folders on the way. */
static void write_file_len(const char *dir, const char *rel, const char *content, size_t len)
{
    char path[1024];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    for (char *p = path + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0700);
            *p = '/';
        }
    }
    fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(content, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static void write_file(const char *dir, const char *rel, const char *content)
{
    write_file_len(dir, rel, content, strlen(content));
}

static char *read_text(const char *path)
{
    FILE *fp = fopen(path, "rb");
    char *text;
    long len;

    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    text = calloc(1, (size_t)len + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    return text;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    }
    closedir(d);
    return n;
}

/* ---- a fake inner source with canned responses ---- */

struct canned {
    const char *path;
    enum nomad_result result;
    long status;
    const char *body;       /* NULL: no body */
    size_t body_len;
    uint64_t index;
    int known_leader;
    long last_contact_ms;
    const char *next_token;
    const char *error;
};

struct fake_source {
    struct source base;
    const struct canned *table;
    size_t n;
    int *destroyed;
};

static int fake_get(struct source *src, const char *path, struct nomad_response *resp)
{
    struct fake_source *fake = (struct fake_source *)src;

    nomad_response_init(resp);
    for (size_t i = 0; i < fake->n; i++) {
        const struct canned *c = &fake->table[i];

        if (strcmp(c->path, path) != 0)
            continue;
        resp->result = c->result;
        resp->status = c->status;
        if (c->body != NULL) {
            resp->body = malloc(c->body_len + 1);
            memcpy(resp->body, c->body, c->body_len);
            resp->body[c->body_len] = '\0';
            resp->body_len = c->body_len;
        }
        resp->index = c->index;
        resp->known_leader = c->known_leader;
        resp->last_contact_ms = c->last_contact_ms;
        resp->next_token = c->next_token != NULL ? strdup(c->next_token) : NULL;
        snprintf(resp->error, sizeof(resp->error), "%s", c->error);
        return c->result == NOMAD_OK ? 0 : -1;
    }
    fail_msg("fake source has no response for %s", path);
    return -1;
}

static void fake_destroy(struct source *src)
{
    struct fake_source *fake = (struct fake_source *)src;

    *fake->destroyed = 1;
    free(fake);
}

static const struct source_ops fake_ops = {
    .name = "fake",
    .get = fake_get,
    .get_many = NULL,
    .destroy = fake_destroy,
};

static struct source *fake_new(const struct canned *table, size_t n, int *destroyed)
{
    struct fake_source *fake = calloc(1, sizeof(*fake));

    assert_non_null(fake);
    fake->base.ops = &fake_ops;
    fake->base.per_page = 2;
    fake->base.observed_at = 1700000000;
    fake->base.note = "fake inner source";
    fake->table = table;
    fake->n = n;
    fake->destroyed = destroyed;
    *destroyed = 0;
    return &fake->base;
}

static const char agent_self_body[] = "{\"config\":\"a\0b\"}";

static const struct canned capture_table[] = {
    {"/v1/nodes?per_page=2", NOMAD_OK, 200, "[{\"ID\":\"n1\"},{\"ID\":\"n2\"}]", 26, 42, 1, 0,
     "n2", ""},
    {"/v1/nodes?per_page=2&next_token=n2", NOMAD_OK, 200, "[]", 2, 42, 1, 3, NULL, ""},
    {"/v1/allocation/" ALLOC1 "?namespace=default", NOMAD_ERR_STATUS, 404, "alloc not found", 15, 0,
     1, 0, NULL, "GET /v1/allocation/" ALLOC1 ": status 404: alloc not found"},
    {"/v1/status/leader", NOMAD_ERR_TIMEOUT, 0, NULL, 0, 0, -1, -1, NULL,
     "GET /v1/status/leader: timed out after 30000 ms"},
    {"/v1/agent/self", NOMAD_OK, 200, agent_self_body, sizeof(agent_self_body) - 1,
     (uint64_t)1 << 40, 0, 12, NULL, ""},
};
#define CAPTURE_TABLE_N (sizeof(capture_table) / sizeof(capture_table[0]))

static void assert_response_matches(const struct nomad_response *resp, const struct canned *c)
{
    assert_int_equal(resp->result, c->result);
    assert_int_equal(resp->status, c->status);
    assert_int_equal(resp->index, c->index);
    assert_int_equal(resp->known_leader, c->known_leader);
    assert_int_equal(resp->last_contact_ms, c->last_contact_ms);
    assert_string_equal(resp->error, c->error);
    if (c->next_token != NULL)
        assert_string_equal(resp->next_token, c->next_token);
    else
        assert_null(resp->next_token);
    if (c->body != NULL) {
        assert_non_null(resp->body);
        assert_int_equal(resp->body_len, c->body_len);
        assert_memory_equal(resp->body, c->body, c->body_len);
    } else {
        assert_null(resp->body);
    }
}

/* Record every canned response: two with source_get(), the rest with source_get_many(). */
static void record_capture(const char *dir)
{
    char err[512] = "";
    const char *many[CAPTURE_TABLE_N - 2];
    struct nomad_response resps[CAPTURE_TABLE_N - 2];
    struct nomad_response resp;
    int destroyed;
    struct source *w = source_capture_writer_new(fake_new(capture_table, CAPTURE_TABLE_N, &destroyed),
                                                 dir, err, sizeof(err));

    assert_non_null(w);
    assert_string_equal(err, "");
    assert_int_equal(w->per_page, 2);
    assert_int_equal(w->observed_at, 1700000000);
    assert_string_equal(w->note, "fake inner source");
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(source_get(w, capture_table[i].path, &resp), 0);
        assert_response_matches(&resp, &capture_table[i]);
        nomad_response_free(&resp);
    }
    for (size_t i = 2; i < CAPTURE_TABLE_N; i++)
        many[i - 2] = capture_table[i].path;
    assert_int_equal(source_get_many(w, many, CAPTURE_TABLE_N - 2, resps), 2);
    for (size_t i = 2; i < CAPTURE_TABLE_N; i++) {
        assert_response_matches(&resps[i - 2], &capture_table[i]);
        nomad_response_free(&resps[i - 2]);
    }
    source_destroy(w);
    assert_int_equal(destroyed, 1);
}

/* ---- capture tests ---- */

static void capture_round_trip(void **state)
{
    struct fixture *f = *state;
    const char *dir = path_in(f->dir, "capture");
    char err[512] = "";
    struct source *r;

    record_capture(dir);
    r = source_capture_reader_new(dir, err, sizeof(err));
    assert_non_null(r);
    assert_int_equal(r->per_page, 2);
    assert_int_equal(r->observed_at, 1700000000);
    assert_string_equal(r->note, "fake inner source");
    for (size_t i = 0; i < CAPTURE_TABLE_N; i++) {
        struct nomad_response resp;
        int rc = source_get(r, capture_table[i].path, &resp);

        assert_int_equal(rc, capture_table[i].result == NOMAD_OK ? 0 : -1);
        assert_response_matches(&resp, &capture_table[i]);
        nomad_response_free(&resp);
    }
    source_destroy(r);
}

static void capture_body_files_hold_raw_bytes(void **state)
{
    struct fixture *f = *state;
    const char *dir = path_in(f->dir, "capture");
    char *manifest;
    char *body;

    record_capture(dir);
    /* Entry 3 is the 404, whose body is Nomad's plain-text error. */
    body = read_text(path_in(dir, "0003.json"));
    assert_string_equal(body, "alloc not found");
    free(body);
    manifest = read_text(path_in(dir, "manifest.json"));
    assert_non_null(strstr(manifest, "\"format\":\t\"nomad-medic-capture\""));
    assert_non_null(strstr(manifest, "\"result\":\t\"timeout\""));
    assert_null(strstr(manifest, "manifest.json.tmp"));
    free(manifest);
    assert_int_equal(access(path_in(dir, "manifest.json.tmp"), F_OK), -1);
}

static void capture_missing_path_fails(void **state)
{
    struct fixture *f = *state;
    const char *dir = path_in(f->dir, "capture");
    char expected[1024];
    char err[512];
    struct nomad_response resp;
    struct source *r;

    record_capture(dir);
    r = source_capture_reader_new(dir, err, sizeof(err));
    assert_non_null(r);
    assert_int_equal(source_get(r, "/v1/evaluations?namespace=*", &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_STATUS);
    assert_int_equal(resp.status, 0);
    assert_null(resp.body);
    snprintf(expected, sizeof(expected), "capture %s has no response for GET "
             "/v1/evaluations?namespace=*; capture again with this version of nomad-medic", dir);
    assert_string_equal(resp.error, expected);
    nomad_response_free(&resp);
    /* The path must match exactly, query string included. */
    assert_int_equal(source_get(r, "/v1/nodes", &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_STATUS);
    nomad_response_free(&resp);
    source_destroy(r);
}

static void capture_same_path_twice(void **state)
{
    struct fixture *f = *state;
    const char *dir = path_in(f->dir, "capture");
    char err[512];
    struct nomad_response first;
    struct nomad_response second;
    struct source *r;

    record_capture(dir);
    r = source_capture_reader_new(dir, err, sizeof(err));
    assert_non_null(r);
    assert_int_equal(source_get(r, capture_table[0].path, &first), 0);
    assert_int_equal(source_get(r, capture_table[0].path, &second), 0);
    assert_int_equal(first.body_len, second.body_len);
    assert_memory_equal(first.body, second.body, first.body_len);
    assert_string_equal(first.next_token, second.next_token);
    assert_int_equal(first.index, second.index);
    nomad_response_free(&first);
    nomad_response_free(&second);
    source_destroy(r);
}

static void capture_readable_while_writing(void **state)
{
    struct fixture *f = *state;
    const char *dir = path_in(f->dir, "capture");
    char err[512];
    struct nomad_response resp;
    int destroyed;
    struct source *w = source_capture_writer_new(fake_new(capture_table, CAPTURE_TABLE_N, &destroyed),
                                                 dir, err, sizeof(err));
    struct source *r;

    assert_non_null(w);
    assert_int_equal(source_get(w, capture_table[0].path, &resp), 0);
    nomad_response_free(&resp);
    /* The writer is still open, as if the capture were interrupted here. */
    r = source_capture_reader_new(dir, err, sizeof(err));
    assert_non_null(r);
    assert_int_equal(source_get(r, capture_table[0].path, &resp), 0);
    assert_response_matches(&resp, &capture_table[0]);
    nomad_response_free(&resp);
    assert_int_equal(source_get(r, capture_table[1].path, &resp), -1);
    nomad_response_free(&resp);
    source_destroy(r);
    source_destroy(w);
}

static void capture_rejects_existing_manifest(void **state)
{
    struct fixture *f = *state;
    const char *dir = path_in(f->dir, "capture");
    char err[512] = "";
    int destroyed = 0;
    struct source *inner = fake_new(capture_table, CAPTURE_TABLE_N, &destroyed);
    struct source *w;
    char *manifest;

    write_file(dir, "manifest.json", "{\"old\": true}");
    w = source_capture_writer_new(inner, dir, err, sizeof(err));
    assert_null(w);
    assert_non_null(strstr(err, "already contains manifest.json"));
    assert_non_null(strstr(err, dir));
    /* On failure the caller still owns the inner source. */
    assert_int_equal(destroyed, 0);
    source_destroy(inner);
    assert_int_equal(destroyed, 1);
    manifest = read_text(path_in(dir, "manifest.json"));
    assert_string_equal(manifest, "{\"old\": true}");
    free(manifest);
}

static void capture_creates_private_dirs(void **state)
{
    struct fixture *f = *state;
    const char *dir = path_in(f->dir, "a/b/capture");
    char err[512];
    int destroyed;
    struct source *w = source_capture_writer_new(fake_new(capture_table, CAPTURE_TABLE_N, &destroyed),
                                                 dir, err, sizeof(err));
    struct stat st;

    assert_non_null(w);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(source_is_capture_dir(dir), 1);
    source_destroy(w);
}

/* Write a manifest around one entry given as JSON text, with its 0001.json body. */
static void write_manifest(const char *dir, const char *format, int version, const char *entry)
{
    char text[2048];

    snprintf(text, sizeof(text), "{\"format\":\"%s\",\"version\":%d,\"captured_at\":1,"
             "\"per_page\":0,\"nomad_address\":null,\"note\":null,\"entries\":[%s]}",
             format, version, entry);
    write_file(dir, "manifest.json", text);
    write_file(dir, "0001.json", "[]");
}

#define GOOD_ENTRY "{\"path\":\"/v1/nodes\",\"file\":\"0001.json\",\"status\":200,\"result\":\"ok\"," \
                   "\"index\":5,\"known_leader\":1,\"last_contact_ms\":0,\"next_token\":null," \
                   "\"error\":\"\",\"body_bytes\":2}"

static void capture_reader_rejects_bad_manifests(void **state)
{
    struct fixture *f = *state;
    const char *dir = path_in(f->dir, "capture");
    char err[512];
    struct source *r;

    write_file(dir, "manifest.json", "{\"format\": \"nomad-medic-capture\", \"entr");
    r = source_capture_reader_new(dir, err, sizeof(err));
    assert_null(r);
    assert_non_null(strstr(err, path_in(dir, "manifest.json")));
    assert_non_null(strstr(err, "capture again"));

    write_manifest(dir, "something-else", 1, GOOD_ENTRY);
    r = source_capture_reader_new(dir, err, sizeof(err));
    assert_null(r);
    assert_non_null(strstr(err, "is not a nomad-medic capture manifest"));

    write_manifest(dir, "nomad-medic-capture", 2, GOOD_ENTRY);
    r = source_capture_reader_new(dir, err, sizeof(err));
    assert_null(r);
    assert_non_null(strstr(err, "version 2"));
    assert_non_null(strstr(err, "newer nomad-medic"));

    r = source_capture_reader_new(path_in(f->dir, "no-such-dir"), err, sizeof(err));
    assert_null(r);
    assert_non_null(strstr(err, "no-such-dir/manifest.json"));
}

static void capture_reader_rejects_unsafe_entries(void **state)
{
    struct fixture *f = *state;
    const char *dir = path_in(f->dir, "capture");
    char err[512];
    struct source *r;

    /* A file name taken from the manifest must not leave the capture directory. */
    write_manifest(dir, "nomad-medic-capture", 1,
                   "{\"path\":\"/v1/nodes\",\"file\":\"../0001.json\",\"status\":200,"
                   "\"result\":\"ok\",\"index\":5,\"known_leader\":1,\"last_contact_ms\":0,"
                   "\"error\":\"\",\"body_bytes\":2}");
    r = source_capture_reader_new(dir, err, sizeof(err));
    assert_null(r);
    assert_non_null(strstr(err, "entry 1 has a missing or invalid \"file\""));

    write_manifest(dir, "nomad-medic-capture", 1,
                   "{\"path\":\"/v1/nodes\",\"file\":\"0001.json\",\"status\":200,"
                   "\"result\":\"exploded\",\"index\":5,\"known_leader\":1,\"last_contact_ms\":0,"
                   "\"error\":\"\",\"body_bytes\":2}");
    r = source_capture_reader_new(dir, err, sizeof(err));
    assert_null(r);
    assert_non_null(strstr(err, "\"result\""));

    /* A body file shorter than recorded means a damaged capture. */
    write_manifest(dir, "nomad-medic-capture", 1, GOOD_ENTRY);
    write_file(dir, "0001.json", "[");
    r = source_capture_reader_new(dir, err, sizeof(err));
    assert_null(r);
    assert_non_null(strstr(err, "has 1 bytes, the manifest records 2"));

    write_file(dir, "0001.json", "[]");
    r = source_capture_reader_new(dir, err, sizeof(err));
    assert_non_null(r);
    source_destroy(r);
}

static void capture_live_address_has_no_credentials(void **state)
{
    struct fixture *f = *state;
    const char *dir = path_in(f->dir, "capture");
    struct nomad_conn_config cfg;
    struct nomad_client *client;
    struct nomad_response resp;
    struct source *w;
    char err[512];
    char *manifest;
    char *body;

    nomad_conn_config_defaults(&cfg);
    free(cfg.address);
    /* Port 1 on loopback is closed, so the read fails at once without leaving the host. */
    cfg.address = strdup("http://medic:hunter2@127.0.0.1:1");
    cfg.token = strdup("secret-acl-token-0000");
    cfg.max_retries = 0;
    cfg.connect_timeout_ms = 2000;
    client = nomad_client_new(&cfg, err, sizeof(err));
    assert_non_null(client);
    w = source_capture_writer_new(source_live_new(client, 50), dir, err, sizeof(err));
    assert_non_null(w);
    assert_int_equal(w->per_page, 50);
    assert_int_equal(source_get(w, "/v1/status/leader", &resp), -1);
    assert_int_not_equal(resp.result, NOMAD_OK);
    nomad_response_free(&resp);
    source_destroy(w);
    nomad_client_free(client);
    nomad_conn_config_free(&cfg);

    manifest = read_text(path_in(dir, "manifest.json"));
    assert_non_null(strstr(manifest, "127.0.0.1:1"));
    assert_null(strstr(manifest, "hunter2"));
    assert_null(strstr(manifest, "secret-acl-token-0000"));
    assert_non_null(strstr(manifest, "\"per_page\":\t50"));
    free(manifest);
    body = read_text(path_in(dir, "0001.json"));
    assert_null(strstr(body, "secret-acl-token-0000"));
    free(body);
}

static void capture_dir_detection(void **state)
{
    struct fixture *f = *state;
    const char *dir = path_in(f->dir, "capture");

    assert_int_equal(source_is_capture_dir(f->dir), 0);
    assert_int_equal(source_is_capture_dir(path_in(f->dir, "missing")), 0);
    record_capture(dir);
    assert_int_equal(source_is_capture_dir(dir), 1);
    assert_int_equal(source_is_capture_dir(path_in(dir, "manifest.json")), 0);
}

/* ---- debug bundles ---- */

struct bundle_file {
    const char *rel;
    const char *content;
};

#define ALLOC1_LINE "{\"ID\":\"" ALLOC1 "\",\"NodeID\":\"" NODE1 "\",\"ClientStatus\":\"lost\"," \
                    "\"CreateTime\":1709633400123456789}"
#define ALLOC2_LINE "{\"ID\":\"" ALLOC2 "\",\"NodeID\":\"" NODE2 "\",\"ClientStatus\":\"running\"," \
                    "\"Name\":\"web[0]\"}"
#define NODE1_LINE "{\"ID\":\"" NODE1 "\",\"Status\":\"down\"}"
#define NODE2_LINE "{\"ID\":\"" NODE2 "\",\"Status\":\"ready\"}"

/* A bundle as Nomad 1.4 and later writes it: NDJSON lists, two intervals. */
static const struct bundle_file ndjson_bundle[] = {
    {"cluster/nodes.json", "[{\"ID\":\"" NODE1 "\",\"Status\":\"ready\"}]"},
    {"cluster/members.json", "{\"ServerName\":\"s1\",\"Members\":[]}"},
    {"cluster/leader.json", "\"10.0.0.1:4647\""},
    {"cluster/agent-self.json", "{\"config\":{\"Region\":\"global\"}}"},
    {"interval/0000/allocations.json", "{\"ID\":\"" ALLOC_OLD "\"}\n"},
    {"interval/0000/nodes.json", NODE1_LINE "\n"},
    {"interval/0001/allocations.json", ALLOC1_LINE "\n" ALLOC2_LINE "\n"},
    {"interval/0001/evaluations.json", "{\"ID\":\"e1\",\"Status\":\"blocked\"}\n"},
    {"interval/0001/nodes.json", NODE1_LINE "\r\n\n" NODE2_LINE "\n"},
    {"interval/0001/jobs.json", "{\"ID\":\"web\",\"Namespace\":\"default\"}\n"},
    {"interval/0001/operator-raft.json", "{\n  \"Index\": 7,\n  \"Servers\": []\n}\n"},
    {"interval/0001/operator-autopilot-health.json", "{\"Healthy\":true}"},
    {"interval/0001/operator-scheduler.json", "{\"SchedulerConfig\":{\"MemoryOversubscriptionEnabled\":false}}"},
    {"client/" NODE1 "/monitor.log", "log lines"},
};
#define NDJSON_BUNDLE_N (sizeof(ndjson_bundle) / sizeof(ndjson_bundle[0]))

static const char *make_bundle_dir(const char *dir, const char *name,
                                   const struct bundle_file *files, size_t n)
{
    const char *root = path_in(dir, name);

    mkdir(root, 0700);
    for (size_t i = 0; i < n; i++)
        write_file(root, files[i].rel, files[i].content);
    return root;
}

static struct source *open_bundle(const char *path)
{
    char err[512] = "";
    struct source *b = source_bundle_new(path, err, sizeof(err));

    if (b == NULL)
        fail_msg("source_bundle_new(%s): %s", path, err);
    return b;
}

/* GET path and expect a successful response. Returns the body parsed as JSON. */
static cJSON *get_json(struct source *b, const char *path, int known_leader)
{
    struct nomad_response resp;
    cJSON *root;

    if (source_get(b, path, &resp) != 0)
        fail_msg("GET %s: %s", path, resp.error);
    assert_int_equal(resp.result, NOMAD_OK);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.known_leader, known_leader);
    assert_null(resp.next_token);
    root = cJSON_Parse(resp.body);
    assert_non_null(root);
    nomad_response_free(&resp);
    return root;
}

/* GET path and expect a failed read. Returns the error text (static buffer). */
static const char *get_error(struct source *b, const char *path, enum nomad_result result)
{
    static char error[512];
    struct nomad_response resp;

    assert_int_equal(source_get(b, path, &resp), -1);
    assert_int_equal(resp.result, result);
    assert_int_equal(resp.status, 0);
    assert_null(resp.body);
    snprintf(error, sizeof(error), "%s", resp.error);
    nomad_response_free(&resp);
    return error;
}

static void bundle_ndjson_lists(void **state)
{
    struct fixture *f = *state;
    const char *root = make_bundle_dir(f->dir, BUNDLE_NAME, ndjson_bundle, NDJSON_BUNDLE_N);
    struct source *b = open_bundle(root);
    struct nomad_response resp;
    cJSON *list;

    assert_int_equal(b->per_page, 0);
    assert_int_equal(b->observed_at, BUNDLE_TIME);
    assert_string_equal(b->note, "debug bundle: no service registrations; evaluated from interval 0001");

    /* The last interval wins, and each object keeps its original bytes. */
    assert_int_equal(source_get(b, "/v1/allocations?namespace=*&task_states=false", &resp), 0);
    assert_string_equal(resp.body, "[" ALLOC1_LINE "," ALLOC2_LINE "]");
    assert_int_equal(resp.body_len, strlen("[" ALLOC1_LINE "," ALLOC2_LINE "]"));
    assert_int_equal(resp.known_leader, 1);
    assert_int_equal(resp.index, 0);
    nomad_response_free(&resp);

    list = get_json(b, "/v1/nodes", 1);
    assert_int_equal(cJSON_GetArraySize(list), 2);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(list, 0), "Status")->valuestring,
                        "down");
    cJSON_Delete(list);
    list = get_json(b, "/v1/evaluations?namespace=*", 1);
    assert_int_equal(cJSON_GetArraySize(list), 1);
    cJSON_Delete(list);
    list = get_json(b, "/v1/jobs?namespace=*", 1);
    assert_int_equal(cJSON_GetArraySize(list), 1);
    cJSON_Delete(list);
    source_destroy(b);
}

static void bundle_single_files(void **state)
{
    struct fixture *f = *state;
    const char *root = make_bundle_dir(f->dir, BUNDLE_NAME, ndjson_bundle, NDJSON_BUNDLE_N);
    struct source *b = open_bundle(root);
    static const struct {
        const char *path;
        const char *rel;
    } cases[] = {
        {"/v1/status/leader", "cluster/leader.json"},
        {"/v1/agent/members", "cluster/members.json"},
        {"/v1/agent/self", "cluster/agent-self.json"},
        {"/v1/operator/raft/configuration", "interval/0001/operator-raft.json"},
        {"/v1/operator/autopilot/health?stale", "interval/0001/operator-autopilot-health.json"},
        {"/v1/operator/scheduler/configuration", "interval/0001/operator-scheduler.json"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct nomad_response resp;
        const char *expected = NULL;

        for (size_t j = 0; j < NDJSON_BUNDLE_N; j++) {
            if (strcmp(ndjson_bundle[j].rel, cases[i].rel) == 0)
                expected = ndjson_bundle[j].content;
        }
        assert_non_null(expected);
        if (source_get(b, cases[i].path, &resp) != 0)
            fail_msg("GET %s: %s", cases[i].path, resp.error);
        assert_int_equal(resp.status, 200);
        assert_string_equal(resp.body, expected);
        nomad_response_free(&resp);
    }
    source_destroy(b);
}

static void bundle_json_array_files(void **state)
{
    struct fixture *f = *state;
    /* Strings with brackets, commas and escaped quotes must not confuse the object bounds. */
    static const char alloc2_pretty[] =
        "{\n    \"ID\": \"" ALLOC2 "\",\n    \"Name\": \"web[1], \\\"x]\\\" {\",\n"
        "    \"Tags\": [[1, 2], {\"a\": \"}\"}]\n  }";
    static const char allocs[] =
        "[\n  {\"ID\": \"" ALLOC1 "\", \"ClientStatus\": \"lost\"},\n  "
        "{\n    \"ID\": \"" ALLOC2 "\",\n    \"Name\": \"web[1], \\\"x]\\\" {\",\n"
        "    \"Tags\": [[1, 2], {\"a\": \"}\"}]\n  }\n]\n";
    const struct bundle_file files[] = {
        {"cluster/nodes.json", "[{\"ID\":\"" NODE1 "\"}]"},
        {"cluster/leader.json", "\"10.0.0.1:4647\""},
        {"interval/0000/allocations.json", allocs},
        {"interval/0000/nodes.json", "[ ]"},
    };
    const char *root = make_bundle_dir(f->dir, BUNDLE_NAME, files, sizeof(files) / sizeof(files[0]));
    struct source *b = open_bundle(root);
    struct nomad_response resp;
    cJSON *list;

    list = get_json(b, "/v1/allocations", 1);
    assert_int_equal(cJSON_GetArraySize(list), 2);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(list, 1), "Name")->valuestring,
                        "web[1], \"x]\" {");
    cJSON_Delete(list);
    assert_int_equal(source_get(b, "/v1/allocation/" ALLOC2, &resp), 0);
    assert_string_equal(resp.body, alloc2_pretty);
    nomad_response_free(&resp);
    list = get_json(b, "/v1/nodes", 1);
    assert_int_equal(cJSON_GetArraySize(list), 0);
    cJSON_Delete(list);
    source_destroy(b);
}

static void bundle_failed_collection(void **state)
{
    struct fixture *f = *state;
    const struct bundle_file files[] = {
        {"cluster/nodes.json", "[]"},
        {"cluster/leader.json", "\"10.0.0.1:4647\""},
        {"interval/0000/evaluations.json",
         "{\"Error\":\"Unexpected response code: 403 (Permission denied)\"}\n"},
        {"interval/0000/allocations.json",
         "{\"ID\":\"" ALLOC1 "\"}\n{\"Error\":\"context deadline exceeded\"}\n"},
        {"interval/0000/operator-raft.json", "{\n  \"Error\": \"Unexpected response code: 500\"\n}\n"},
    };
    const char *root = make_bundle_dir(f->dir, BUNDLE_NAME, files, sizeof(files) / sizeof(files[0]));
    struct source *b = open_bundle(root);
    const char *error;

    error = get_error(b, "/v1/evaluations?namespace=*", NOMAD_ERR_STATUS);
    assert_non_null(strstr(error, "interval/0000/evaluations.json contains a failed collection"));
    assert_non_null(strstr(error, "403 (Permission denied)"));
    error = get_error(b, "/v1/allocations", NOMAD_ERR_STATUS);
    assert_non_null(strstr(error, "line 2 contains a failed collection"));
    assert_non_null(strstr(error, "context deadline exceeded"));
    /* A lookup in a failed list fails the same way, never as "not found". */
    error = get_error(b, "/v1/allocation/" ALLOC1, NOMAD_ERR_STATUS);
    assert_non_null(strstr(error, "context deadline exceeded"));
    error = get_error(b, "/v1/operator/raft/configuration", NOMAD_ERR_STATUS);
    assert_non_null(strstr(error, "Unexpected response code: 500"));
    /* A file that is missing is a failed read too. */
    error = get_error(b, "/v1/jobs", NOMAD_ERR_STATUS);
    assert_non_null(strstr(error, "has no interval/0000/jobs.json"));
    source_destroy(b);
}

static void bundle_services_unavailable(void **state)
{
    struct fixture *f = *state;
    const char *root = make_bundle_dir(f->dir, BUNDLE_NAME, ndjson_bundle, NDJSON_BUNDLE_N);
    struct source *b = open_bundle(root);
    char expected[1024];

    snprintf(expected, sizeof(expected), "debug bundle %s has no native service registrations "
             "(nomad operator debug does not collect them)", root);
    assert_string_equal(get_error(b, "/v1/services?namespace=*", NOMAD_ERR_STATUS), expected);
    assert_string_equal(get_error(b, "/v1/service/web?namespace=default&per_page=100",
                                  NOMAD_ERR_STATUS), expected);
    assert_non_null(strstr(get_error(b, "/v1/vars", NOMAD_ERR_STATUS), "has no data for GET /v1/vars"));
    assert_non_null(strstr(get_error(b, "/v1/node/" NODE1 "/allocations", NOMAD_ERR_STATUS),
                           "has no data for GET"));
    source_destroy(b);
}

static void bundle_empty_leader(void **state)
{
    struct fixture *f = *state;
    const struct bundle_file files[] = {
        {"cluster/nodes.json", "[{\"ID\":\"" NODE1 "\"}]"},
        {"cluster/leader.json", "\"\""},
    };
    const char *root = make_bundle_dir(f->dir, BUNDLE_NAME, files, sizeof(files) / sizeof(files[0]));
    struct source *b = open_bundle(root);
    struct nomad_response resp;
    cJSON *list;

    assert_int_equal(source_get(b, "/v1/status/leader", &resp), -1);
    assert_int_equal(resp.result, NOMAD_ERR_NO_LEADER);
    assert_int_equal(resp.status, 500);
    assert_string_equal(resp.body, "No cluster leader");
    assert_int_equal(resp.known_leader, 0);
    assert_non_null(strstr(resp.error, "No cluster leader"));
    nomad_response_free(&resp);
    /* No interval: nodes come from cluster/, with known_leader 0. */
    list = get_json(b, "/v1/nodes", 0);
    assert_int_equal(cJSON_GetArraySize(list), 1);
    cJSON_Delete(list);
    assert_string_equal(b->note, "debug bundle: no service registrations; no interval folder, so "
                        "only cluster/ data is available");
    assert_non_null(strstr(get_error(b, "/v1/allocations", NOMAD_ERR_STATUS),
                           "has no interval/ folder"));
    source_destroy(b);
}

static void bundle_malformed_ndjson_line(void **state)
{
    struct fixture *f = *state;
    const struct bundle_file files[] = {
        {"cluster/nodes.json", "[]"},
        {"cluster/leader.json", "\"10.0.0.1:4647\""},
        {"interval/0000/allocations.json",
         "{\"ID\":\"" ALLOC1 "\"}\n\n{\"ID\":\"" ALLOC2 "\", \"Name\": \n{\"ID\":\"x\"}\n"},
        {"interval/0000/evaluations.json", "{\"ID\":\"e1\"}\n[1, 2]\n"},
    };
    const char *root = make_bundle_dir(f->dir, BUNDLE_NAME, files, sizeof(files) / sizeof(files[0]));
    struct source *b = open_bundle(root);
    const char *error;

    error = get_error(b, "/v1/allocations", NOMAD_ERR_TRANSPORT);
    assert_non_null(strstr(error, "interval/0000/allocations.json line 3 is not valid JSON"));
    error = get_error(b, "/v1/evaluations", NOMAD_ERR_TRANSPORT);
    assert_non_null(strstr(error, "line 2 is not a JSON object"));
    source_destroy(b);
}

static void bundle_lookups(void **state)
{
    struct fixture *f = *state;
    const char *root = make_bundle_dir(f->dir, BUNDLE_NAME, ndjson_bundle, NDJSON_BUNDLE_N);
    struct source *b = open_bundle(root);
    struct nomad_response resp;
    const char *error;

    assert_int_equal(source_get(b, "/v1/allocation/" ALLOC1 "?namespace=default", &resp), 0);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.body, ALLOC1_LINE);
    nomad_response_free(&resp);
    /* A second read returns the same object from the cached list. */
    assert_int_equal(source_get(b, "/v1/allocation/" ALLOC1, &resp), 0);
    assert_string_equal(resp.body, ALLOC1_LINE);
    nomad_response_free(&resp);

    /* Absent from the list is not proof of absence: a failed read, never a 404. */
    error = get_error(b, "/v1/allocation/" ALLOC_ABSENT "?namespace=default", NOMAD_ERR_STATUS);
    assert_non_null(strstr(error, "allocation " ALLOC_ABSENT " is not in "
                                  "interval/0001/allocations.json"));
    assert_non_null(strstr(error, "cannot prove"));
    /* Only in an older interval: still not found in the one evaluated. */
    get_error(b, "/v1/allocation/" ALLOC_OLD, NOMAD_ERR_STATUS);

    error = get_error(b, "/v1/allocation/..%2f..%2fetc", NOMAD_ERR_STATUS);
    assert_non_null(strstr(error, "is not a valid allocation ID"));

    assert_int_equal(source_get(b, "/v1/node/" NODE2, &resp), 0);
    assert_string_equal(resp.body, NODE2_LINE);
    nomad_response_free(&resp);
    error = get_error(b, "/v1/node/" ALLOC_ABSENT, NOMAD_ERR_STATUS);
    assert_non_null(strstr(error, "node " ALLOC_ABSENT " is not in interval/0001/nodes.json"));
    source_destroy(b);
}

static void bundle_nodes_fall_back_to_cluster(void **state)
{
    struct fixture *f = *state;
    const struct bundle_file files[] = {
        {"cluster/nodes.json", "[{\"ID\":\"" NODE1 "\",\"Status\":\"ready\"}]"},
        {"cluster/leader.json", "\"10.0.0.1:4647\""},
        {"interval/0000/allocations.json", ""},
    };
    const char *root = make_bundle_dir(f->dir, BUNDLE_NAME, files, sizeof(files) / sizeof(files[0]));
    struct source *b = open_bundle(root);
    struct nomad_response resp;
    cJSON *list;

    list = get_json(b, "/v1/nodes", 1);
    assert_int_equal(cJSON_GetArraySize(list), 1);
    cJSON_Delete(list);
    assert_int_equal(source_get(b, "/v1/node/" NODE1, &resp), 0);
    assert_string_equal(resp.body, "{\"ID\":\"" NODE1 "\",\"Status\":\"ready\"}");
    nomad_response_free(&resp);
    /* An empty NDJSON file is an empty list. */
    assert_int_equal(source_get(b, "/v1/allocations", &resp), 0);
    assert_string_equal(resp.body, "[]");
    nomad_response_free(&resp);
    source_destroy(b);
}

static void bundle_rejects_filter_parameter(void **state)
{
    struct fixture *f = *state;
    const char *root = make_bundle_dir(f->dir, BUNDLE_NAME, ndjson_bundle, NDJSON_BUNDLE_N);
    struct source *b = open_bundle(root);

    assert_non_null(strstr(get_error(b, "/v1/allocations?namespace=*&filter=ClientStatus%3D%3D%22lost%22",
                                     NOMAD_ERR_STATUS),
                           "cannot apply the query parameter filter="));
    assert_non_null(strstr(get_error(b, "/v1/nodes?prefix=1111", NOMAD_ERR_STATUS),
                           "cannot apply the query parameter prefix="));
    source_destroy(b);
}

static void bundle_file_over_size_cap(void **state)
{
    struct fixture *f = *state;
    const char *root = make_bundle_dir(f->dir, BUNDLE_NAME, ndjson_bundle, NDJSON_BUNDLE_N);
    struct source *b = open_bundle(root);
    char limit[64];

    /* A sparse file: its size passes the cap without using disk. */
    assert_int_equal(truncate(path_in(root, "interval/0001/evaluations.json"),
                              (off_t)SOURCE_MAX_FILE_BYTES + 1), 0);
    snprintf(limit, sizeof(limit), "larger than %zu bytes (256 MiB)", SOURCE_MAX_FILE_BYTES);
    assert_non_null(strstr(get_error(b, "/v1/evaluations", NOMAD_ERR_TRANSPORT), limit));
    source_destroy(b);
}

static void bundle_rejects_non_bundles(void **state)
{
    struct fixture *f = *state;
    char err[512];

    mkdir(path_in(f->dir, "empty"), 0700);
    assert_null(source_bundle_new(path_in(f->dir, "empty"), err, sizeof(err)));
    assert_non_null(strstr(err, "has no cluster/ folder"));
    assert_null(source_bundle_new(path_in(f->dir, "missing"), err, sizeof(err)));
    assert_non_null(strstr(err, "cannot open debug bundle"));
    write_file(f->dir, "not-an-archive.tar.gz", "plain text, not gzip");
    assert_null(source_bundle_new(path_in(f->dir, "not-an-archive.tar.gz"), err, sizeof(err)));
    assert_non_null(strstr(err, "not-an-archive.tar.gz"));
}

static void bundle_time_from_mtime(void **state)
{
    struct fixture *f = *state;
    const char *root = make_bundle_dir(f->dir, "renamed-bundle", ndjson_bundle, NDJSON_BUNDLE_N);
    struct timespec times[2] = {{1600000000, 0}, {1600000000, 0}};
    struct source *b;

    for (size_t i = 0; i < NDJSON_BUNDLE_N; i++)
        assert_int_equal(utimensat(AT_FDCWD, path_in(root, ndjson_bundle[i].rel), times, 0), 0);
    times[0].tv_sec = times[1].tv_sec = 1600000123;
    assert_int_equal(utimensat(AT_FDCWD, path_in(root, "interval/0001/jobs.json"), times, 0), 0);
    b = open_bundle(root);
    assert_int_equal(b->observed_at, 1600000123);
    source_destroy(b);
}

/* ---- tar.gz bundles ---- */

struct tar_entry {
    const char *name;
    const char *content;     /* NULL for a folder or a link */
    unsigned int type;       /* AE_IFREG, AE_IFDIR or AE_IFLNK */
    const char *link;
};

static void write_targz(const char *path, const struct tar_entry *entries, size_t n)
{
    struct archive *a = archive_write_new();

    assert_non_null(a);
    assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
    assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
    assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *entry = archive_entry_new();
        size_t len = entries[i].content != NULL ? strlen(entries[i].content) : 0;

        archive_entry_set_pathname(entry, entries[i].name);
        archive_entry_set_filetype(entry, entries[i].type);
        archive_entry_set_perm(entry, entries[i].type == AE_IFDIR ? 0755 : 0644);
        archive_entry_set_size(entry, (la_int64_t)len);
        archive_entry_set_mtime(entry, 1600000000, 0);
        if (entries[i].link != NULL)
            archive_entry_set_symlink(entry, entries[i].link);
        assert_int_equal(archive_write_header(a, entry), ARCHIVE_OK);
        if (len > 0)
            assert_int_equal(archive_write_data(a, entries[i].content, len), (la_ssize_t)len);
        archive_entry_free(entry);
    }
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
}

/* The NDJSON bundle as an archive, under BUNDLE_NAME/, with its folders listed. */
static void write_bundle_targz(const char *path)
{
    struct tar_entry entries[NDJSON_BUNDLE_N + 1];
    static char names[NDJSON_BUNDLE_N][256];

    entries[0] = (struct tar_entry){BUNDLE_NAME "/", NULL, AE_IFDIR, NULL};
    for (size_t i = 0; i < NDJSON_BUNDLE_N; i++) {
        snprintf(names[i], sizeof(names[i]), "%s/%s", BUNDLE_NAME, ndjson_bundle[i].rel);
        entries[i + 1] = (struct tar_entry){names[i], ndjson_bundle[i].content, AE_IFREG, NULL};
    }
    write_targz(path, entries, NDJSON_BUNDLE_N + 1);
}

/* Point TMPDIR at a fresh folder, so the test can see what extraction leaves behind. */
static const char *use_extract_dir(struct fixture *f)
{
    const char *dir = path_in(f->dir, "extract");

    mkdir(dir, 0700);
    setenv("TMPDIR", dir, 1);
    return dir;
}

static void bundle_targz(void **state)
{
    struct fixture *f = *state;
    const char *archive_path = path_in(f->dir, BUNDLE_NAME ".tar.gz");
    const char *extract_dir = use_extract_dir(f);
    char extracted[1024];
    struct nomad_response resp;
    struct source *b;
    struct dirent *de;
    DIR *d;
    cJSON *list;

    write_bundle_targz(archive_path);
    b = open_bundle(archive_path);
    restore_tmpdir();
    assert_int_equal(b->observed_at, BUNDLE_TIME);
    assert_string_equal(b->note, "debug bundle: no service registrations; evaluated from interval 0001");
    assert_int_equal(source_get(b, "/v1/allocations?namespace=*", &resp), 0);
    assert_string_equal(resp.body, "[" ALLOC1_LINE "," ALLOC2_LINE "]");
    nomad_response_free(&resp);
    list = get_json(b, "/v1/nodes", 1);
    assert_int_equal(cJSON_GetArraySize(list), 2);
    cJSON_Delete(list);
    assert_int_equal(source_get(b, "/v1/status/leader", &resp), 0);
    assert_string_equal(resp.body, "\"10.0.0.1:4647\"");
    nomad_response_free(&resp);

    /* One private folder, holding only cluster/ and the last interval. */
    assert_int_equal(count_entries(extract_dir), 1);
    d = opendir(extract_dir);
    assert_non_null(d);
    do {
        de = readdir(d);
        assert_non_null(de);
    } while (de->d_name[0] == '.');
    snprintf(extracted, sizeof(extracted), "%s/%s/%s", extract_dir, de->d_name, BUNDLE_NAME);
    closedir(d);
    assert_int_equal(access(path_in(extracted, "interval/0001/allocations.json"), F_OK), 0);
    assert_int_equal(access(path_in(extracted, "interval/0000"), F_OK), -1);
    assert_int_equal(access(path_in(extracted, "client"), F_OK), -1);

    source_destroy(b);
    assert_int_equal(count_entries(extract_dir), 0);
}

static void expect_archive_rejected(struct fixture *f, const struct tar_entry *entries, size_t n,
                                    const char *expected)
{
    const char *archive_path = path_in(f->dir, "bad.tar.gz");
    const char *extract_dir = use_extract_dir(f);
    char err[512] = "";
    struct source *b;

    write_targz(archive_path, entries, n);
    b = source_bundle_new(archive_path, err, sizeof(err));
    restore_tmpdir();
    if (b != NULL)
        source_destroy(b);
    assert_null(b);
    if (strstr(err, expected) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, expected);
    assert_non_null(strstr(err, "the archive is rejected"));
    /* Nothing stays behind, in the extraction folder or next to it. */
    assert_int_equal(count_entries(extract_dir), 0);
    assert_int_equal(access(path_in(f->dir, "evil"), F_OK), -1);
    unlink(archive_path);
}

static void bundle_targz_rejects_unsafe_entries(void **state)
{
    struct fixture *f = *state;
    const struct tar_entry dotdot[] = {
        {BUNDLE_NAME "/cluster/leader.json", "\"10.0.0.1:4647\"", AE_IFREG, NULL},
        {"../evil", "x", AE_IFREG, NULL},
    };
    const struct tar_entry inner_dotdot[] = {
        {BUNDLE_NAME "/cluster/../../evil", "x", AE_IFREG, NULL},
    };
    const struct tar_entry absolute[] = {
        {"/tmp/evil", "x", AE_IFREG, NULL},
    };
    const struct tar_entry symlink[] = {
        {BUNDLE_NAME "/cluster/leader.json", "\"10.0.0.1:4647\"", AE_IFREG, NULL},
        {BUNDLE_NAME "/cluster/nodes.json", NULL, AE_IFLNK, "/etc/passwd"},
    };
    const struct tar_entry two_tops[] = {
        {BUNDLE_NAME "/cluster/leader.json", "\"10.0.0.1:4647\"", AE_IFREG, NULL},
        {"other/cluster/nodes.json", "[]", AE_IFREG, NULL},
    };

    expect_archive_rejected(f, dotdot, 2, "entry \"../evil\" contains \"..\"");
    expect_archive_rejected(f, inner_dotdot, 1, "contains \"..\"");
    expect_archive_rejected(f, absolute, 1, "has an absolute path");
    expect_archive_rejected(f, symlink, 2, "is a symbolic link");
    expect_archive_rejected(f, two_tops, 2, "is outside the top folder");
}

static void bundle_targz_rejects_large_entry(void **state)
{
    struct fixture *f = *state;
    const char *archive_path = path_in(f->dir, "large.tar.gz");
    const char *extract_dir = use_extract_dir(f);
    struct archive *a = archive_write_new();
    struct archive_entry *entry = archive_entry_new();
    char err[512] = "";
    char limit[64];
    struct source *b;

    /* The header announces one byte over the cap; the reader stops before reading data. */
    assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
    assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
    assert_int_equal(archive_write_open_filename(a, archive_path), ARCHIVE_OK);
    archive_entry_set_pathname(entry, BUNDLE_NAME "/interval/0000/allocations.json");
    archive_entry_set_filetype(entry, AE_IFREG);
    archive_entry_set_perm(entry, 0644);
    archive_entry_set_size(entry, (la_int64_t)SOURCE_MAX_FILE_BYTES + 1);
    assert_int_equal(archive_write_header(a, entry), ARCHIVE_OK);
    archive_entry_free(entry);
    /* Closing pads the missing data with zeros, which gzip shrinks to a few hundred KiB. */
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);

    b = source_bundle_new(archive_path, err, sizeof(err));
    restore_tmpdir();
    assert_null(b);
    snprintf(limit, sizeof(limit), "larger than %zu bytes (256 MiB)", SOURCE_MAX_FILE_BYTES);
    assert_non_null(strstr(err, limit));
    assert_int_equal(count_entries(extract_dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(capture_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(capture_body_files_hold_raw_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(capture_missing_path_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(capture_same_path_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(capture_readable_while_writing, setup, teardown),
        cmocka_unit_test_setup_teardown(capture_rejects_existing_manifest, setup, teardown),
        cmocka_unit_test_setup_teardown(capture_creates_private_dirs, setup, teardown),
        cmocka_unit_test_setup_teardown(capture_reader_rejects_bad_manifests, setup, teardown),
        cmocka_unit_test_setup_teardown(capture_reader_rejects_unsafe_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(capture_live_address_has_no_credentials, setup, teardown),
        cmocka_unit_test_setup_teardown(capture_dir_detection, setup, teardown),
        cmocka_unit_test_setup_teardown(bundle_ndjson_lists, setup, teardown),
        cmocka_unit_test_setup_teardown(bundle_single_files, setup, teardown),
        cmocka_unit_test_setup_teardown(bundle_json_array_files, setup, teardown),
        cmocka_unit_test_setup_teardown(bundle_failed_collection, setup, teardown),
        cmocka_unit_test_setup_teardown(bundle_services_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(bundle_empty_leader, setup, teardown),
        cmocka_unit_test_setup_teardown(bundle_malformed_ndjson_line, setup, teardown),
        cmocka_unit_test_setup_teardown(bundle_lookups, setup, teardown),
        cmocka_unit_test_setup_teardown(bundle_nodes_fall_back_to_cluster, setup, teardown),
        cmocka_unit_test_setup_teardown(bundle_rejects_filter_parameter, setup, teardown),
        cmocka_unit_test_setup_teardown(bundle_file_over_size_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(bundle_rejects_non_bundles, setup, teardown),
        cmocka_unit_test_setup_teardown(bundle_time_from_mtime, setup, teardown),
        cmocka_unit_test_setup_teardown(bundle_targz, setup, teardown),
        cmocka_unit_test_setup_teardown(bundle_targz_rejects_unsafe_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(bundle_targz_rejects_large_entry, setup, teardown),
    };

    const char *tmpdir = getenv("TMPDIR");

    original_tmpdir = tmpdir != NULL ? strdup(tmpdir) : NULL;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
