/*
 * Tests for the journal (store/journal.c). Every test works on a real SQLite
 * file in its own directory under /tmp, removed by the teardown.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "../../controller/log.h"
#include "../../store/journal.h"

#define T0 1000LL            /* creation time of rows made by make_row */
#define EXPIRES (T0 + 4000)  /* expires_at of pending rows made by make_row */

struct fixture {
    char dir[64];
    char path[128];
    struct journal *j;
};

/* Print the haystack on failure, so the log shows the message that was wrong. */
#define assert_contains(haystack, needle)                                                   \
    do {                                                                                    \
        if (strstr((haystack), (needle)) == NULL)                                           \
            print_error("\"%s\"\n  does not contain \"%s\"\n", (haystack), (needle));       \
        assert_non_null(strstr((haystack), (needle)));                                      \
    } while (0)

/* Check a journal call's return code and print err when it differs. */
#define assert_rc(expected, call)                                                           \
    do {                                                                                    \
        int rc_ = (call);                                                                   \
        if (rc_ != (expected))                                                              \
            print_error("rc %d, err: %s\n", rc_, err);                                      \
        assert_int_equal(rc_, (expected));                                                  \
    } while (0)

/* Integer and string checks for table-driven loops: on failure they print which case failed. */
#define assert_int_case(actual, expected, ctx)                                              \
    do {                                                                                    \
        long long a_ = (actual), e_ = (expected);                                           \
        if (a_ != e_)                                                                       \
            print_error("%s: %s is %lld, expected %lld\n", (ctx), #actual, a_, e_);         \
        assert_int_equal(a_, e_);                                                           \
    } while (0)

#define assert_string_case(actual, expected, ctx)                                           \
    do {                                                                                    \
        const char *a_ = (actual), *e_ = (expected);                                        \
        if (a_ == NULL || strcmp(a_, e_) != 0)                                              \
            print_error("%s: %s is \"%s\", expected \"%s\"\n", (ctx), #actual,             \
                        a_ ? a_ : "(null)", e_);                                            \
        assert_non_null(a_);                                                                \
        assert_string_equal(a_, e_);                                                        \
    } while (0)

/* ---- fixture helpers ---- */

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path);
}

static int setup_dir(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/nm-journal-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        print_error("mkdtemp failed: %s\n", strerror(errno));
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/journal.db", f->dir);
    *state = f;
    return 0;
}

static int setup_open(void **state)
{
    struct fixture *f;
    char err[512] = "";

    if (setup_dir(state) != 0)
        return -1;
    f = *state;
    if (journal_open(f->path, 0, &f->j, err, sizeof(err)) != JOURNAL_OK) {
        print_error("journal_open: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    journal_close(f->j);
    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void reopen(struct fixture *f)
{
    char err[512] = "";

    journal_close(f->j);
    f->j = NULL;
    assert_rc(JOURNAL_OK, journal_open(f->path, 0, &f->j, err, sizeof(err)));
}

/* Run sql on path through a separate SQLite connection. */
static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        print_error("%s: %s\n", sql, sqlite3_errmsg(db));
    assert_int_equal(sqlite3_errcode(db), SQLITE_OK);
    sqlite3_close(db);
}

/* The first column of the first row of sql, read through a separate connection. */
static long long raw_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long value;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    value = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return value;
}

static void raw_text(const char *path, const char *sql, char *out, size_t outsz)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    const char *text;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    text = (const char *)sqlite3_column_text(st, 0);
    snprintf(out, outsz, "%s", text ? text : "(null)");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static struct journal_action sample_action(const char *key, enum journal_state state)
{
    struct journal_action a;

    memset(&a, 0, sizeof(a));
    a.idem_key = (char *)key;
    a.kind = "service_delete";
    a.target = "_nomad-task-1234-web-http";
    a.rule = "stale_service";
    a.reason = "Service web has no running allocation.";
    a.evidence = "{\"alloc\":\"a1\"}";
    a.basis = "alloc=a1 status=complete";
    a.namespace_name = "default";
    a.service = "web";
    a.alloc_id = "a1";
    a.mode = "approve";
    a.state = state;
    a.expires_at = state == JS_PENDING_APPROVAL ? EXPIRES : 0;
    return a;
}

/* Create a row for key that is in `state`, reached through allowed transitions at T0. */
static long long make_row(struct journal *j, const char *key, enum journal_state state)
{
    struct journal_action a;
    enum journal_state first;
    long long id = 0;
    char err[512] = "";

    switch (state) {
    case JS_DRY_RUN:
    case JS_BLOCKED:
    case JS_PENDING_APPROVAL:
    case JS_EXECUTING:
        first = state;
        break;
    case JS_SUCCEEDED:
    case JS_FAILED:
    case JS_UNKNOWN:
        first = JS_EXECUTING;
        break;
    default:
        first = JS_PENDING_APPROVAL;
        break;
    }
    a = sample_action(key, first);
    if (state == JS_BLOCKED)
        a.blocked_by = "min_healthy";
    assert_rc(JOURNAL_OK, journal_action_insert(j, &a, T0, &id, err, sizeof(err)));
    if (state == first)
        return id;
    if (first == JS_EXECUTING) {
        assert_rc(JOURNAL_OK, journal_action_transition(j, id, JS_EXECUTING, state, "outcome",
                                                        NULL, T0, err, sizeof(err)));
        return id;
    }
    if (state == JS_REJECTED || state == JS_EXPIRED) {
        assert_rc(JOURNAL_OK, journal_action_transition(j, id, JS_PENDING_APPROVAL, state, NULL,
                                                        "bob", T0, err, sizeof(err)));
        return id;
    }
    assert_int_equal(state, JS_APPROVED);
    assert_rc(JOURNAL_OK, journal_action_transition(j, id, JS_PENDING_APPROVAL, JS_APPROVED, NULL,
                                                    "bob", T0, err, sizeof(err)));
    return id;
}

static mode_t file_mode(const char *path)
{
    struct stat sb;

    assert_int_equal(stat(path, &sb), 0);
    return sb.st_mode & 0777;
}

/* ---- states ---- */

static void test_state_names_round_trip(void **state)
{
    enum journal_state parsed;

    (void)state;
    for (int s = 0; s < JS_STATE_COUNT; s++) {
        assert_int_equal(journal_parse_state(journal_state_name((enum journal_state)s), &parsed),
                         JOURNAL_OK);
        assert_int_equal(parsed, s);
    }
    assert_string_equal(journal_state_name(JS_PENDING_APPROVAL), "pending_approval");
    assert_int_equal(journal_parse_state("pending", &parsed), JOURNAL_NOT_FOUND);
    assert_int_equal(journal_parse_state(NULL, &parsed), JOURNAL_NOT_FOUND);
    assert_string_equal(journal_state_name(JS_STATE_COUNT), "invalid");
    assert_true(journal_state_is_open(JS_PENDING_APPROVAL));
    assert_true(journal_state_is_open(JS_APPROVED));
    assert_true(journal_state_is_open(JS_EXECUTING));
    assert_false(journal_state_is_open(JS_DRY_RUN));
    assert_false(journal_state_is_open(JS_BLOCKED));
    assert_false(journal_state_is_open(JS_SUCCEEDED));
}

/* ---- open and schema ---- */

static void test_open_creates_schema(void **state)
{
    struct fixture *f = *state;
    struct journal_action got;
    char dir_a[160], dir_b[160], wal[200], mode[16];
    char err[512] = "";
    long long id = 0;
    struct journal_action a = sample_action("service_delete:web", JS_DRY_RUN);

    snprintf(dir_a, sizeof(dir_a), "%s/a", f->dir);
    snprintf(dir_b, sizeof(dir_b), "%s/a/b", f->dir);
    snprintf(f->path, sizeof(f->path), "%s/a/b/journal.db", f->dir);
    snprintf(wal, sizeof(wal), "%s-wal", f->path);

    assert_rc(JOURNAL_OK, journal_open(f->path, 0, &f->j, err, sizeof(err)));
    assert_int_equal(file_mode(dir_a), 0700);
    assert_int_equal(file_mode(dir_b), 0700);
    assert_int_equal(file_mode(f->path), 0600);
    assert_int_equal(file_mode(wal), 0600);

    raw_text(f->path, "PRAGMA journal_mode", mode, sizeof(mode));
    assert_string_equal(mode, "wal");
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), journal_schema_version());
    assert_int_equal(raw_int(f->path,
                             "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                             "('actions', 'passes', 'findings', 'buckets')"),
                     4);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                                      "AND name = 'actions_one_open'"),
                     1);

    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &a, T0, &id, err, sizeof(err)));
    reopen(f);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), journal_schema_version());
    assert_rc(JOURNAL_OK, journal_action_get(f->j, id, &got, err, sizeof(err)));
    assert_string_equal(got.idem_key, "service_delete:web");
    assert_int_equal(got.state, JS_DRY_RUN);
    journal_action_free(&got);
}

static void test_open_rejects_newer_version(void **state)
{
    struct fixture *f = *state;
    struct journal *j = NULL;
    char err[512] = "";
    char sql[64], expected[64];
    int newer = journal_schema_version() + 41;

    journal_close(f->j);
    f->j = NULL;
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", newer);
    raw_exec(f->path, sql);

    assert_rc(JOURNAL_ERR, journal_open(f->path, 0, &j, err, sizeof(err)));
    assert_null(j);
    assert_contains(err, f->path);
    snprintf(expected, sizeof(expected), "schema version %d", newer);
    assert_contains(err, expected);
    snprintf(expected, sizeof(expected), "versions up to %d", journal_schema_version());
    assert_contains(err, expected);
    assert_contains(err, "upgrade nomad-medic");
    /* The newer journal is left as it was. */
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), newer);

    assert_rc(JOURNAL_ERR, journal_open(f->path, JOURNAL_READONLY, &j, err, sizeof(err)));
    assert_contains(err, "upgrade nomad-medic");
}

static void test_open_readonly_missing_file(void **state)
{
    struct fixture *f = *state;
    struct journal *j = NULL;
    char dir[160];
    char err[512] = "";
    struct stat sb;

    snprintf(dir, sizeof(dir), "%s/missing", f->dir);
    snprintf(f->path, sizeof(f->path), "%s/missing/journal.db", f->dir);
    assert_rc(JOURNAL_ERR, journal_open(f->path, JOURNAL_READONLY, &j, err, sizeof(err)));
    assert_null(j);
    assert_contains(err, f->path);
    assert_contains(err, "read-only");
    assert_int_equal(stat(dir, &sb), -1);
    assert_int_equal(errno, ENOENT);
}

static void test_open_readonly_existing(void **state)
{
    struct fixture *f = *state;
    struct journal *ro = NULL;
    struct journal_action got;
    struct journal_action a = sample_action("service_delete:web", JS_DRY_RUN);
    char err[512] = "";
    long long id = 0, other = 0;
    int allowed = 0;
    double left = 0;

    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &a, T0, &id, err, sizeof(err)));
    journal_close(f->j);
    f->j = NULL;

    assert_rc(JOURNAL_OK, journal_open(f->path, JOURNAL_READONLY, &ro, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_get(ro, id, &got, err, sizeof(err)));
    assert_string_equal(got.kind, "service_delete");
    journal_action_free(&got);

    assert_rc(JOURNAL_ERR, journal_action_insert(ro, &a, T0, &other, err, sizeof(err)));
    assert_contains(err, f->path);
    assert_contains(err, "readonly");
    assert_rc(JOURNAL_OK, journal_bucket_take(ro, "global", 3, 60, T0, 0, &allowed, &left, err,
                                              sizeof(err)));
    assert_int_equal(allowed, 1);
    assert_rc(JOURNAL_ERR, journal_bucket_take(ro, "global", 3, 60, T0, 1, &allowed, &left, err,
                                               sizeof(err)));
    assert_int_equal(allowed, 0);
    journal_close(ro);
}

static void test_open_not_a_database(void **state)
{
    struct fixture *f = *state;
    struct journal *j = NULL;
    char junk[4096];
    char err[512] = "";
    FILE *fp = fopen(f->path, "wb");

    assert_non_null(fp);
    memset(junk, 'x', sizeof(junk));
    assert_int_equal(fwrite(junk, 1, sizeof(junk), fp), sizeof(junk));
    assert_int_equal(fclose(fp), 0);

    assert_rc(JOURNAL_ERR, journal_open(f->path, 0, &j, err, sizeof(err)));
    assert_null(j);
    assert_contains(err, f->path);
    assert_contains(err, "not a database");
    assert_contains(err, "move it aside");
}

static void test_open_failed_migration_changes_nothing(void **state)
{
    struct fixture *f = *state;
    struct journal *j = NULL;
    char err[512] = "";

    /* A version 0 file whose `buckets` table clashes with the last step of the first schema. */
    raw_exec(f->path, "CREATE TABLE buckets (x)");
    assert_rc(JOURNAL_ERR, journal_open(f->path, 0, &j, err, sizeof(err)));
    assert_null(j);
    assert_contains(err, f->path);
    assert_contains(err, "schema migration from version 0 to 1");
    assert_contains(err, "already exists");
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_master WHERE name = 'actions'"),
                     0);
}

static void test_open_waits_for_lock(void **state)
{
    struct fixture *f = *state;
    struct journal *second = NULL;
    struct timespec start, end;
    char err[512] = "";
    double waited;

    assert_rc(JOURNAL_OK, journal_open(f->path, 0, &second, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_begin(f->j, err, sizeof(err)));

    clock_gettime(CLOCK_MONOTONIC, &start);
    assert_rc(JOURNAL_ERR, journal_begin(second, err, sizeof(err)));
    clock_gettime(CLOCK_MONOTONIC, &end);
    waited = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
    assert_true(waited >= 4.5);
    assert_contains(err, f->path);
    assert_contains(err, "locked");
    assert_contains(err, "more than 5 s");

    journal_rollback(f->j);
    assert_rc(JOURNAL_OK, journal_begin(second, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_commit(second, err, sizeof(err)));
    journal_close(second);
}

/* ---- transitions ---- */

struct transition_case {
    enum journal_state from;
    enum journal_state to;
};

static const struct transition_case allowed_cases[] = {
    {JS_PENDING_APPROVAL, JS_APPROVED}, {JS_PENDING_APPROVAL, JS_REJECTED},
    {JS_PENDING_APPROVAL, JS_EXPIRED},  {JS_APPROVED, JS_EXECUTING},
    {JS_APPROVED, JS_EXPIRED},          {JS_APPROVED, JS_BLOCKED},
    {JS_EXECUTING, JS_SUCCEEDED},       {JS_EXECUTING, JS_FAILED},
    {JS_EXECUTING, JS_UNKNOWN},
};

static int is_allowed(enum journal_state from, enum journal_state to)
{
    for (size_t i = 0; i < sizeof(allowed_cases) / sizeof(allowed_cases[0]); i++) {
        if (allowed_cases[i].from == from && allowed_cases[i].to == to)
            return 1;
    }
    return 0;
}

static void test_transition_every_allowed(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";

    for (size_t i = 0; i < sizeof(allowed_cases) / sizeof(allowed_cases[0]); i++) {
        enum journal_state from = allowed_cases[i].from;
        enum journal_state to = allowed_cases[i].to;
        struct journal_action before, after;
        char key[64], ctx[64];
        long long id, executed = 0;

        snprintf(key, sizeof(key), "case:%zu", i);
        snprintf(ctx, sizeof(ctx), "%s -> %s", journal_state_name(from), journal_state_name(to));
        id = make_row(f->j, key, from);
        assert_rc(JOURNAL_OK, journal_action_get(f->j, id, &before, err, sizeof(err)));
        assert_rc(JOURNAL_OK, journal_action_transition(f->j, id, from, to, "note", "alice",
                                                        T0 + 10, err, sizeof(err)));
        assert_rc(JOURNAL_OK, journal_action_get(f->j, id, &after, err, sizeof(err)));

        assert_int_case(after.state, to, ctx);
        assert_int_case(after.updated_at, T0 + 10, ctx);
        assert_int_case(after.created_at, T0, ctx);
        assert_string_case(after.last_error, "note", ctx);
        assert_int_case(after.attempts, before.attempts + (to == JS_EXECUTING), ctx);
        assert_int_case(after.expires_at, to == JS_APPROVED ? EXPIRES : 0, ctx);
        if (to == JS_APPROVED || to == JS_REJECTED) {
            assert_string_case(after.decided_by, "alice", ctx);
            assert_int_case(after.decided_at, T0 + 10, ctx);
        } else {
            assert_int_case(after.decided_at, before.decided_at, ctx);
            if (before.decided_by == NULL)
                assert_null(after.decided_by);
            else
                assert_string_case(after.decided_by, before.decided_by, ctx);
        }
        if (to == JS_BLOCKED)
            assert_string_case(after.blocked_by, "alice", ctx);
        else
            assert_null(after.blocked_by);
        if (to == JS_EXECUTING) {
            assert_rc(JOURNAL_OK, journal_last_execution(f->j, key, &executed, err, sizeof(err)));
            assert_int_case(executed, T0 + 10, ctx);
        }
        journal_action_free(&before);
        journal_action_free(&after);
    }
}

static void test_transition_every_forbidden(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";
    int checked = 0;

    for (int from = 0; from < JS_STATE_COUNT; from++) {
        for (int to = 0; to < JS_STATE_COUNT; to++) {
            struct journal_action after;
            char key[64], expected[96];
            long long id;

            if (is_allowed((enum journal_state)from, (enum journal_state)to))
                continue;
            snprintf(key, sizeof(key), "forbidden:%d:%d", from, to);
            id = make_row(f->j, key, (enum journal_state)from);
            assert_rc(JOURNAL_CONFLICT,
                      journal_action_transition(f->j, id, (enum journal_state)from,
                                                (enum journal_state)to, "note", "alice", T0 + 10,
                                                err, sizeof(err)));
            snprintf(expected, sizeof(expected), "from %s to %s",
                     journal_state_name((enum journal_state)from),
                     journal_state_name((enum journal_state)to));
            assert_contains(err, expected);
            snprintf(expected, sizeof(expected), "current state: %s",
                     journal_state_name((enum journal_state)from));
            assert_contains(err, expected);

            assert_rc(JOURNAL_OK, journal_action_get(f->j, id, &after, err, sizeof(err)));
            assert_int_case(after.state, from, expected);
            assert_int_case(after.updated_at, T0, expected);
            journal_action_free(&after);
            checked++;
        }
    }
    assert_int_equal(checked, JS_STATE_COUNT * JS_STATE_COUNT - 9);
}

static void test_transition_row_moved(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";
    long long id = make_row(f->j, "moved", JS_APPROVED);

    /* A second approver still believes the row is pending. */
    assert_rc(JOURNAL_CONFLICT, journal_action_transition(f->j, id, JS_PENDING_APPROVAL,
                                                          JS_APPROVED, NULL, "carol", T0 + 5,
                                                          err, sizeof(err)));
    assert_contains(err, "from pending_approval to approved");
    assert_contains(err, "it is now approved");

    assert_rc(JOURNAL_NOT_FOUND, journal_action_transition(f->j, 424242, JS_APPROVED,
                                                           JS_EXECUTING, NULL, NULL, T0 + 5, err,
                                                           sizeof(err)));
    assert_contains(err, "424242");
    assert_rc(JOURNAL_NOT_FOUND, journal_action_transition(f->j, 424242, JS_DRY_RUN,
                                                           JS_EXECUTING, NULL, NULL, T0 + 5, err,
                                                           sizeof(err)));
    assert_rc(JOURNAL_ERR, journal_action_transition(f->j, id, JS_APPROVED, JS_STATE_COUNT, NULL,
                                                     NULL, T0 + 5, err, sizeof(err)));
}

static void test_transition_null_note_keeps_last_error(void **state)
{
    struct fixture *f = *state;
    struct journal_action got;
    char err[512] = "";
    long long id = make_row(f->j, "note", JS_APPROVED);

    assert_rc(JOURNAL_OK, journal_action_transition(f->j, id, JS_APPROVED, JS_EXECUTING,
                                                    "sent DELETE", NULL, T0 + 1, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_transition(f->j, id, JS_EXECUTING, JS_SUCCEEDED, NULL,
                                                    NULL, T0 + 2, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_get(f->j, id, &got, err, sizeof(err)));
    assert_string_equal(got.last_error, "sent DELETE");
    journal_action_free(&got);
}

/* ---- insert ---- */

static void test_insert_second_open_row_conflicts(void **state)
{
    struct fixture *f = *state;
    struct journal_action a = sample_action("service_delete:web", JS_PENDING_APPROVAL);
    struct journal_action exec_row = sample_action("service_delete:web", JS_EXECUTING);
    struct journal_action dry = sample_action("service_delete:web", JS_DRY_RUN);
    struct journal_action open_row;
    char err[512] = "";
    char expected[64];
    long long first = 0, second = 0, third = 0;

    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &a, T0, &first, err, sizeof(err)));
    assert_rc(JOURNAL_CONFLICT, journal_action_insert(f->j, &exec_row, T0, &second, err,
                                                      sizeof(err)));
    assert_contains(err, "\"service_delete:web\"");
    snprintf(expected, sizeof(expected), "open action %lld (pending_approval)", first);
    assert_contains(err, expected);
    assert_rc(JOURNAL_CONFLICT, journal_action_insert(f->j, &a, T0, &second, err, sizeof(err)));

    /* A final row does not count as open. */
    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &dry, T0, &second, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_find_open(f->j, "service_delete:web", &open_row, err,
                                                   sizeof(err)));
    assert_int_equal(open_row.id, first);
    journal_action_free(&open_row);

    /* Once the first row is final, a new open row is allowed. */
    assert_rc(JOURNAL_OK, journal_action_transition(f->j, first, JS_PENDING_APPROVAL, JS_REJECTED,
                                                    NULL, "alice", T0 + 1, err, sizeof(err)));
    assert_rc(JOURNAL_NOT_FOUND, journal_action_find_open(f->j, "service_delete:web", &open_row,
                                                          err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &exec_row, T0 + 2, &third, err, sizeof(err)));
    assert_true(third != first);
    assert_rc(JOURNAL_OK, journal_action_find_open(f->j, "service_delete:web", &open_row, err,
                                                   sizeof(err)));
    assert_int_equal(open_row.id, third);
    assert_int_equal(open_row.attempts, 1);
    journal_action_free(&open_row);
}

static void test_insert_invalid_input(void **state)
{
    struct fixture *f = *state;
    struct journal_action a = sample_action("k", JS_APPROVED);
    char err[512] = "";
    long long id = 0;

    assert_rc(JOURNAL_ERR, journal_action_insert(f->j, &a, T0, &id, err, sizeof(err)));
    assert_contains(err, "state approved");

    a = sample_action("k", JS_PENDING_APPROVAL);
    a.expires_at = T0;
    assert_rc(JOURNAL_ERR, journal_action_insert(f->j, &a, T0, &id, err, sizeof(err)));
    assert_contains(err, "expires_at");

    a = sample_action("k", JS_DRY_RUN);
    a.pass_id = 12345;
    assert_rc(JOURNAL_ERR, journal_action_insert(f->j, &a, T0, &id, err, sizeof(err)));
    assert_contains(err, "pass 12345");
}

static void test_insert_null_strings_stored_as_null(void **state)
{
    struct fixture *f = *state;
    struct journal_action a, got;
    char err[512] = "";
    long long id = 0;

    memset(&a, 0, sizeof(a));
    a.state = JS_BLOCKED;
    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &a, T0, &id, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_get(f->j, id, &got, err, sizeof(err)));
    assert_null(got.idem_key);
    assert_null(got.kind);
    assert_null(got.target);
    assert_null(got.rule);
    assert_null(got.reason);
    assert_null(got.evidence);
    assert_null(got.basis);
    assert_null(got.namespace_name);
    assert_null(got.service);
    assert_null(got.alloc_id);
    assert_null(got.mode);
    assert_null(got.blocked_by);
    assert_null(got.decided_by);
    assert_null(got.last_error);
    assert_int_equal(got.pass_id, 0);
    assert_int_equal(got.times_seen, 1);
    journal_action_free(&got);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM actions WHERE idem_key IS NULL AND "
                                      "kind IS NULL AND evidence IS NULL AND pass_id IS NULL"),
                     1);
}

/* ---- decide ---- */

static void test_decide_approve(void **state)
{
    struct fixture *f = *state;
    struct journal_action got;
    char err[512] = "";
    long long id = make_row(f->j, "approve-me", JS_PENDING_APPROVAL);

    assert_rc(JOURNAL_OK, journal_action_decide(f->j, id, 1, "alice", T0 + 60, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_get(f->j, id, &got, err, sizeof(err)));
    assert_int_equal(got.state, JS_APPROVED);
    assert_string_equal(got.decided_by, "alice");
    assert_int_equal(got.decided_at, T0 + 60);
    assert_int_equal(got.expires_at, EXPIRES);
    journal_action_free(&got);

    assert_rc(JOURNAL_CONFLICT, journal_action_decide(f->j, id, 0, "bob", T0 + 61, err,
                                                      sizeof(err)));
    assert_contains(err, "is approved, not pending_approval");
}

static void test_decide_reject(void **state)
{
    struct fixture *f = *state;
    struct journal_action got;
    char err[512] = "";
    long long id = make_row(f->j, "reject-me", JS_PENDING_APPROVAL);

    assert_rc(JOURNAL_OK, journal_action_decide(f->j, id, 0, "bob", T0 + 60, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_get(f->j, id, &got, err, sizeof(err)));
    assert_int_equal(got.state, JS_REJECTED);
    assert_string_equal(got.decided_by, "bob");
    assert_int_equal(got.decided_at, T0 + 60);
    assert_int_equal(got.expires_at, 0);
    journal_action_free(&got);
}

static void test_decide_expired(void **state)
{
    struct fixture *f = *state;
    struct journal_action got;
    char err[512] = "";
    char expected[160];
    long long id = make_row(f->j, "too-late", JS_PENDING_APPROVAL);

    /* EXPIRES is 5000, which is 1970-01-01T01:23:20Z. */
    assert_rc(JOURNAL_CONFLICT, journal_action_decide(f->j, id, 1, "alice", EXPIRES, err,
                                                      sizeof(err)));
    snprintf(expected, sizeof(expected),
             "action %lld expired at 1970-01-01T01:23:20Z; it will be proposed again on the next "
             "pass if still needed",
             id);
    assert_string_equal(err, expected);

    assert_rc(JOURNAL_OK, journal_action_get(f->j, id, &got, err, sizeof(err)));
    assert_int_equal(got.state, JS_EXPIRED);
    assert_null(got.decided_by);
    assert_int_equal(got.expires_at, 0);
    journal_action_free(&got);

    assert_rc(JOURNAL_NOT_FOUND, journal_action_decide(f->j, 424242, 1, "alice", T0, err,
                                                       sizeof(err)));
    assert_contains(err, "424242");
}

/* ---- record ---- */

static void test_record_dedupes_same_basis(void **state)
{
    struct fixture *f = *state;
    struct journal_action a = sample_action("system_gc:cluster", JS_DRY_RUN);
    struct journal_action got;
    char err[512] = "";
    long long p1 = 0, p2 = 0, first = 0, again = 0, changed = 0, back = 0;

    assert_rc(JOURNAL_OK, journal_pass_begin(f->j, "cluster", "dry-run", T0, &p1, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_pass_begin(f->j, "cluster", "dry-run", T0 + 60, &p2, err,
                                             sizeof(err)));
    a.pass_id = p1;
    assert_rc(JOURNAL_OK, journal_action_record(f->j, &a, T0, &first, err, sizeof(err)));
    a.pass_id = p2;
    assert_rc(JOURNAL_OK, journal_action_record(f->j, &a, T0 + 60, &again, err, sizeof(err)));
    assert_int_equal(again, first);
    assert_rc(JOURNAL_OK, journal_action_get(f->j, first, &got, err, sizeof(err)));
    assert_int_equal(got.times_seen, 2);
    assert_int_equal(got.updated_at, T0 + 60);
    assert_int_equal(got.created_at, T0);
    assert_int_equal(got.pass_id, p2);
    journal_action_free(&got);

    a.basis = "alloc=a2 status=complete";
    assert_rc(JOURNAL_OK, journal_action_record(f->j, &a, T0 + 120, &changed, err, sizeof(err)));
    assert_true(changed != first);

    /* Only the newest row counts: going back to the first basis inserts again. */
    a.basis = "alloc=a1 status=complete";
    assert_rc(JOURNAL_OK, journal_action_record(f->j, &a, T0 + 180, &back, err, sizeof(err)));
    assert_true(back != first);
    assert_true(back != changed);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM actions"), 3);
}

static void test_record_blocked_compares_guard(void **state)
{
    struct fixture *f = *state;
    struct journal_action a = sample_action("service_delete:api", JS_BLOCKED);
    char err[512] = "";
    long long g1 = 0, g1_again = 0, g2 = 0, dry = 0, null_basis = 0, null_again = 0;

    a.blocked_by = "min_healthy";
    assert_rc(JOURNAL_OK, journal_action_record(f->j, &a, T0, &g1, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_record(f->j, &a, T0 + 1, &g1_again, err, sizeof(err)));
    assert_int_equal(g1_again, g1);

    a.blocked_by = "rate_limit";
    assert_rc(JOURNAL_OK, journal_action_record(f->j, &a, T0 + 2, &g2, err, sizeof(err)));
    assert_true(g2 != g1);

    a.state = JS_DRY_RUN;
    a.blocked_by = NULL;
    assert_rc(JOURNAL_OK, journal_action_record(f->j, &a, T0 + 3, &dry, err, sizeof(err)));
    assert_true(dry != g2);

    /* NULL basis equals NULL basis. */
    a.basis = NULL;
    assert_rc(JOURNAL_OK, journal_action_record(f->j, &a, T0 + 4, &null_basis, err, sizeof(err)));
    assert_true(null_basis != dry);
    assert_rc(JOURNAL_OK, journal_action_record(f->j, &a, T0 + 5, &null_again, err, sizeof(err)));
    assert_int_equal(null_again, null_basis);

    a.state = JS_PENDING_APPROVAL;
    assert_rc(JOURNAL_ERR, journal_action_record(f->j, &a, T0, &dry, err, sizeof(err)));
    assert_contains(err, "journal_action_insert");
}

/* ---- rate-limit buckets ---- */

static void test_bucket_refill_survives_restart(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";
    int allowed = -1;
    double left = -1;

    /* Capacity 2 per 60 s: one token every 30 s. */
    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, "service_delete", 2, 60, T0, 1, &allowed,
                                              &left, err, sizeof(err)));
    assert_int_equal(allowed, 1);
    assert_float_equal(left, 1.0, 1e-6);
    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, "service_delete", 2, 60, T0, 1, &allowed,
                                              &left, err, sizeof(err)));
    assert_int_equal(allowed, 1);
    assert_float_equal(left, 0.0, 1e-6);
    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, "service_delete", 2, 60, T0, 1, &allowed,
                                              &left, err, sizeof(err)));
    assert_int_equal(allowed, 0);
    assert_float_equal(left, 0.0, 1e-6);

    reopen(f);

    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, "service_delete", 2, 60, T0 + 29, 1, &allowed,
                                              &left, err, sizeof(err)));
    assert_int_equal(allowed, 0);
    assert_float_equal(left, 29.0 / 30.0, 1e-6);
    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, "service_delete", 2, 60, T0 + 30, 1, &allowed,
                                              &left, err, sizeof(err)));
    assert_int_equal(allowed, 1);
    assert_float_equal(left, 0.0, 1e-6);

    /* A long pause refills to the capacity and no further; a peek takes nothing. */
    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, "service_delete", 2, 60, T0 + 3600, 0,
                                              &allowed, &left, err, sizeof(err)));
    assert_int_equal(allowed, 1);
    assert_float_equal(left, 2.0, 1e-6);
    assert_int_equal(raw_int(f->path, "SELECT updated_at FROM buckets WHERE name = 'service_delete'"),
                     T0 + 30);

    /* Another bucket is independent and starts full. */
    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, "system_gc", 1, 3600, T0 + 30, 1, &allowed,
                                              &left, err, sizeof(err)));
    assert_int_equal(allowed, 1);
    assert_float_equal(left, 0.0, 1e-6);
}

static void test_bucket_clock_going_back(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";
    int allowed = -1;
    double left = -1;

    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, "b", 1, 60, T0, 1, &allowed, &left, err,
                                              sizeof(err)));
    assert_int_equal(allowed, 1);
    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, "b", 1, 60, T0 - 100, 1, &allowed, &left, err,
                                              sizeof(err)));
    assert_int_equal(allowed, 0);
    /* The refill counts from T0, not from the earlier clock reading. */
    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, "b", 1, 60, T0 + 59, 1, &allowed, &left, err,
                                              sizeof(err)));
    assert_int_equal(allowed, 0);
    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, "b", 1, 60, T0 + 60, 1, &allowed, &left, err,
                                              sizeof(err)));
    assert_int_equal(allowed, 1);
}

static void test_bucket_capacity_zero_always_allows(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";

    for (int i = 0; i < 100; i++) {
        int allowed = 0;
        double left = -1;

        assert_rc(JOURNAL_OK, journal_bucket_take(f->j, "unlimited", 0, 0, T0, 1, &allowed, &left,
                                                  err, sizeof(err)));
        assert_int_equal(allowed, 1);
    }
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM buckets"), 0);
}

static void test_bucket_invalid_arguments(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";
    int allowed = -1;
    double left = -1;

    assert_rc(JOURNAL_ERR, journal_bucket_take(f->j, "b", 1, 0, T0, 1, &allowed, &left, err,
                                               sizeof(err)));
    assert_contains(err, "\"b\"");
    assert_int_equal(allowed, 0);
    assert_rc(JOURNAL_ERR, journal_bucket_take(f->j, "b", -1, 60, T0, 1, &allowed, &left, err,
                                               sizeof(err)));
    assert_rc(JOURNAL_ERR, journal_bucket_take(f->j, NULL, 1, 60, T0, 1, &allowed, &left, err,
                                               sizeof(err)));
}

/* ---- transactions ---- */

static void test_nested_rollback_leaves_nothing(void **state)
{
    struct fixture *f = *state;
    struct journal_action pending = sample_action("service_delete:web", JS_PENDING_APPROVAL);
    struct journal_action dry = sample_action("system_gc:cluster", JS_DRY_RUN);
    struct journal_action *rows = NULL;
    struct journal_action open_row;
    char err[512] = "";
    long long id = 0;
    size_t n = 99;
    int allowed = 0;
    double left = -1;

    assert_rc(JOURNAL_OK, journal_begin(f->j, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, "global", 1, 3600, T0, 1, &allowed, &left, err,
                                              sizeof(err)));
    assert_int_equal(allowed, 1);
    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &pending, T0, &id, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_begin(f->j, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_record(f->j, &dry, T0, &id, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_commit(f->j, err, sizeof(err)));
    journal_rollback(f->j);

    assert_rc(JOURNAL_OK, journal_action_list(f->j, ~0u, 0, &rows, &n, err, sizeof(err)));
    assert_int_equal(n, 0);
    journal_action_list_free(rows, n);
    assert_rc(JOURNAL_NOT_FOUND, journal_action_find_open(f->j, "service_delete:web", &open_row,
                                                          err, sizeof(err)));
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM buckets"), 0);
    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, "global", 1, 3600, T0, 0, &allowed, &left, err,
                                              sizeof(err)));
    assert_float_equal(left, 1.0, 1e-6);
}

static void test_inner_rollback_fails_outer_commit(void **state)
{
    struct fixture *f = *state;
    struct journal_action dry = sample_action("system_gc:cluster", JS_DRY_RUN);
    char err[512] = "";
    long long id = 0;

    assert_rc(JOURNAL_OK, journal_begin(f->j, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &dry, T0, &id, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_begin(f->j, err, sizeof(err)));
    journal_rollback(f->j);
    assert_rc(JOURNAL_ERR, journal_commit(f->j, err, sizeof(err)));
    assert_contains(err, "inner step failed");
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM actions"), 0);

    /* The journal is usable again: the next transaction commits. */
    assert_rc(JOURNAL_OK, journal_begin(f->j, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &dry, T0, &id, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_commit(f->j, err, sizeof(err)));
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM actions"), 1);
}

static void test_nested_commit_persists(void **state)
{
    struct fixture *f = *state;
    struct journal_action dry = sample_action("system_gc:cluster", JS_DRY_RUN);
    struct journal_action got;
    char err[512] = "";
    long long id = 0;

    assert_rc(JOURNAL_ERR, journal_commit(f->j, err, sizeof(err)));
    assert_contains(err, "without a matching journal_begin");

    assert_rc(JOURNAL_OK, journal_begin(f->j, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_begin(f->j, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &dry, T0, &id, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_commit(f->j, err, sizeof(err)));
    /* Still inside the outer transaction: another connection sees nothing yet. */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM actions"), 0);
    assert_rc(JOURNAL_OK, journal_commit(f->j, err, sizeof(err)));
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM actions"), 1);

    reopen(f);
    assert_rc(JOURNAL_OK, journal_action_get(f->j, id, &got, err, sizeof(err)));
    assert_string_equal(got.idem_key, "system_gc:cluster");
    journal_action_free(&got);
}

static void test_conflict_rollback_returns_token(void **state)
{
    struct fixture *f = *state;
    struct journal_action a = sample_action("service_delete:web", JS_EXECUTING);
    char err[512] = "";
    long long id = 0;
    int allowed = 0;
    double left = -1;

    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &a, T0, &id, err, sizeof(err)));

    assert_rc(JOURNAL_OK, journal_begin(f->j, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, "global", 1, 3600, T0, 1, &allowed, &left, err,
                                              sizeof(err)));
    assert_int_equal(allowed, 1);
    assert_rc(JOURNAL_CONFLICT, journal_action_insert(f->j, &a, T0, &id, err, sizeof(err)));
    journal_rollback(f->j);

    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, "global", 1, 3600, T0, 1, &allowed, &left, err,
                                              sizeof(err)));
    assert_int_equal(allowed, 1);
}

/* ---- passes and findings ---- */

static void test_passes_last_finished(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";
    char reads[64], sql[64];
    long long p1 = 0, p2 = 0, finished = 0;
    int complete = -1;

    assert_rc(JOURNAL_NOT_FOUND, journal_last_pass(f->j, &finished, &complete, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_pass_begin(f->j, "cluster", "enforce", 100, &p1, err, sizeof(err)));
    assert_rc(JOURNAL_NOT_FOUND, journal_last_pass(f->j, &finished, &complete, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_pass_finish(f->j, p1, 110, 1, "[]", "{\"findings\":0}", err,
                                              sizeof(err)));
    assert_rc(JOURNAL_OK, journal_last_pass(f->j, &finished, &complete, err, sizeof(err)));
    assert_int_equal(finished, 110);
    assert_int_equal(complete, 1);

    assert_rc(JOURNAL_OK, journal_pass_begin(f->j, "node", "enforce", 200, &p2, err, sizeof(err)));
    assert_true(p2 > p1);
    assert_rc(JOURNAL_OK, journal_pass_finish(f->j, p2, 210, 0,
                                              "[{\"read\":\"services\",\"ok\":false,\"error\":\"timeout\"}]",
                                              NULL, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_last_pass(f->j, &finished, &complete, err, sizeof(err)));
    assert_int_equal(finished, 210);
    assert_int_equal(complete, 0);
    snprintf(sql, sizeof(sql), "SELECT reads_json FROM passes WHERE id = %lld", p1);
    raw_text(f->path, sql, reads, sizeof(reads));
    assert_string_equal(reads, "[]");

    assert_rc(JOURNAL_NOT_FOUND, journal_pass_finish(f->j, 9999, 300, 1, NULL, NULL, err,
                                                     sizeof(err)));
    assert_contains(err, "pass 9999");
}

static void test_findings_seen_sweep_and_reopen(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";
    char evidence[32];
    long long p1 = 0, p2 = 0, first = 0;

    assert_rc(JOURNAL_OK, journal_pass_begin(f->j, "cluster", "enforce", 100, &p1, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_finding_seen(f->j, "stale:web", "stale", "web", "{\"n\":1}", p1,
                                               100, &first, err, sizeof(err)));
    assert_int_equal(first, 100);
    assert_rc(JOURNAL_OK, journal_finding_seen(f->j, "stale:api", "stale", "api", "{}", p1, 100,
                                               &first, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_finding_seen(f->j, "gc:cluster", "gc", "cluster", "{}", p1, 100,
                                               &first, err, sizeof(err)));

    assert_rc(JOURNAL_OK, journal_pass_begin(f->j, "cluster", "enforce", 200, &p2, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_finding_seen(f->j, "stale:web", "stale", "web", "{\"n\":2}", p2,
                                               200, &first, err, sizeof(err)));
    assert_int_equal(first, 100);
    raw_text(f->path, "SELECT evidence FROM findings WHERE key = 'stale:web'", evidence,
             sizeof(evidence));
    assert_string_equal(evidence, "{\"n\":2}");
    assert_int_equal(raw_int(f->path, "SELECT last_pass FROM findings WHERE key = 'stale:web'"), p2);
    assert_int_equal(raw_int(f->path, "SELECT last_seen FROM findings WHERE key = 'stale:web'"), 200);

    reopen(f);
    assert_rc(JOURNAL_OK, journal_finding_first_seen(f->j, "stale:web", &first, err, sizeof(err)));
    assert_int_equal(first, 100);

    /* Pass 2 saw stale:web only; gc findings belong to another rule and stay. */
    assert_rc(JOURNAL_OK, journal_findings_sweep(f->j, "stale", p2, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_finding_first_seen(f->j, "stale:web", &first, err, sizeof(err)));
    assert_int_equal(first, 100);
    assert_rc(JOURNAL_NOT_FOUND, journal_finding_first_seen(f->j, "stale:api", &first, err,
                                                            sizeof(err)));
    assert_contains(err, "stale:api");
    assert_rc(JOURNAL_OK, journal_finding_first_seen(f->j, "gc:cluster", &first, err, sizeof(err)));
    assert_int_equal(first, 100);

    /* A finding that returns after a sweep starts its grace period again. */
    assert_rc(JOURNAL_OK, journal_finding_seen(f->j, "stale:api", "stale", "api", "{}", p2, 300,
                                               &first, err, sizeof(err)));
    assert_int_equal(first, 300);

    assert_rc(JOURNAL_ERR, journal_finding_seen(f->j, NULL, "stale", "x", "{}", p2, 300, &first,
                                                err, sizeof(err)));
    assert_contains(err, "key is NULL");
}

/* ---- expiry, executions, listing ---- */

static void test_expire_open_rows(void **state)
{
    struct fixture *f = *state;
    struct journal_action a = sample_action("late", JS_PENDING_APPROVAL);
    struct journal_action got;
    char err[512] = "";
    long long pending_old = make_row(f->j, "pending-old", JS_PENDING_APPROVAL);
    long long approved_old = make_row(f->j, "approved-old", JS_APPROVED);
    long long executing = make_row(f->j, "executing", JS_EXECUTING);
    long long pending_new = 0;
    int expired = -1;

    a.expires_at = EXPIRES + 1000;
    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &a, T0, &pending_new, err, sizeof(err)));

    assert_rc(JOURNAL_OK, journal_expire(f->j, EXPIRES - 1, &expired, err, sizeof(err)));
    assert_int_equal(expired, 0);
    assert_rc(JOURNAL_OK, journal_expire(f->j, EXPIRES, &expired, err, sizeof(err)));
    assert_int_equal(expired, 2);

    assert_rc(JOURNAL_OK, journal_action_get(f->j, pending_old, &got, err, sizeof(err)));
    assert_int_equal(got.state, JS_EXPIRED);
    assert_int_equal(got.expires_at, 0);
    assert_int_equal(got.updated_at, EXPIRES);
    journal_action_free(&got);
    assert_rc(JOURNAL_OK, journal_action_get(f->j, approved_old, &got, err, sizeof(err)));
    assert_int_equal(got.state, JS_EXPIRED);
    journal_action_free(&got);
    assert_rc(JOURNAL_OK, journal_action_get(f->j, executing, &got, err, sizeof(err)));
    assert_int_equal(got.state, JS_EXECUTING);
    journal_action_free(&got);
    assert_rc(JOURNAL_OK, journal_action_get(f->j, pending_new, &got, err, sizeof(err)));
    assert_int_equal(got.state, JS_PENDING_APPROVAL);
    assert_int_equal(got.expires_at, EXPIRES + 1000);
    journal_action_free(&got);

    assert_rc(JOURNAL_OK, journal_expire(f->j, EXPIRES, &expired, err, sizeof(err)));
    assert_int_equal(expired, 0);
}

static void test_last_execution_per_key(void **state)
{
    struct fixture *f = *state;
    struct journal_action exec_row = sample_action("service_delete:web", JS_EXECUTING);
    struct journal_action pending = sample_action("service_delete:web", JS_PENDING_APPROVAL);
    struct journal_action dry = sample_action("system_gc:cluster", JS_DRY_RUN);
    char err[512] = "";
    long long first = 0, second = 0, other = 0, at = 0;

    assert_rc(JOURNAL_NOT_FOUND, journal_last_execution(f->j, "service_delete:web", &at, err,
                                                        sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &exec_row, 100, &first, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_last_execution(f->j, "service_delete:web", &at, err, sizeof(err)));
    assert_int_equal(at, 100);

    /* The outcome does not move the execution time. */
    assert_rc(JOURNAL_OK, journal_action_transition(f->j, first, JS_EXECUTING, JS_FAILED, "HTTP 500",
                                                    NULL, 150, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_last_execution(f->j, "service_delete:web", &at, err, sizeof(err)));
    assert_int_equal(at, 100);

    pending.expires_at = 900;
    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &pending, 200, &second, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_decide(f->j, second, 1, "alice", 250, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_last_execution(f->j, "service_delete:web", &at, err, sizeof(err)));
    assert_int_equal(at, 100);
    assert_rc(JOURNAL_OK, journal_action_transition(f->j, second, JS_APPROVED, JS_EXECUTING, NULL,
                                                    NULL, 300, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_last_execution(f->j, "service_delete:web", &at, err, sizeof(err)));
    assert_int_equal(at, 300);

    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &dry, 400, &other, err, sizeof(err)));
    assert_rc(JOURNAL_NOT_FOUND, journal_last_execution(f->j, "system_gc:cluster", &at, err,
                                                        sizeof(err)));
}

static void test_list_by_state_mask(void **state)
{
    struct fixture *f = *state;
    struct journal_action *rows = NULL;
    char err[512] = "";
    size_t n = 0;
    long long dry = make_row(f->j, "l:dry", JS_DRY_RUN);
    long long pending = make_row(f->j, "l:pending", JS_PENDING_APPROVAL);
    long long approved = make_row(f->j, "l:approved", JS_APPROVED);
    long long executing = make_row(f->j, "l:executing", JS_EXECUTING);
    long long succeeded = make_row(f->j, "l:succeeded", JS_SUCCEEDED);
    long long blocked = make_row(f->j, "l:blocked", JS_BLOCKED);
    unsigned open_mask = (1u << JS_PENDING_APPROVAL) | (1u << JS_APPROVED) | (1u << JS_EXECUTING);

    assert_rc(JOURNAL_OK, journal_action_list(f->j, 1u << JS_PENDING_APPROVAL, 0, &rows, &n, err,
                                              sizeof(err)));
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].id, pending);
    assert_string_equal(rows[0].idem_key, "l:pending");
    journal_action_list_free(rows, n);

    assert_rc(JOURNAL_OK, journal_action_list(f->j, open_mask, 0, &rows, &n, err, sizeof(err)));
    assert_int_equal(n, 3);
    assert_int_equal(rows[0].id, executing);
    assert_int_equal(rows[1].id, approved);
    assert_int_equal(rows[2].id, pending);
    journal_action_list_free(rows, n);

    assert_rc(JOURNAL_OK, journal_action_list(f->j, ~0u, 0, &rows, &n, err, sizeof(err)));
    assert_int_equal(n, 6);
    assert_int_equal(rows[0].id, blocked);
    assert_int_equal(rows[1].id, succeeded);
    assert_int_equal(rows[5].id, dry);
    assert_int_equal(rows[0].state, JS_BLOCKED);
    assert_string_equal(rows[0].blocked_by, "min_healthy");
    journal_action_list_free(rows, n);

    assert_rc(JOURNAL_OK, journal_action_list(f->j, ~0u, 2, &rows, &n, err, sizeof(err)));
    assert_int_equal(n, 2);
    assert_int_equal(rows[0].id, blocked);
    assert_int_equal(rows[1].id, succeeded);
    journal_action_list_free(rows, n);

    assert_rc(JOURNAL_OK, journal_action_list(f->j, 0, 0, &rows, &n, err, sizeof(err)));
    assert_int_equal(n, 0);
    assert_null(rows);
    assert_rc(JOURNAL_OK, journal_action_list(f->j, 1u << 31, 0, &rows, &n, err, sizeof(err)));
    assert_int_equal(n, 0);
}

/* ---- hostile text ---- */

static void test_steps_recorded_in_order(void **state)
{
    struct fixture *f = *state;
    struct journal_action a = sample_action("netns_clear:0b6c2e7d-94a8-4f21-8e53-7c1d9a2f6b02", JS_EXECUTING);
    struct journal_step *steps = NULL;
    char err[512] = "";
    long long id = 0;
    size_t n = 0;

    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &a, T0, &id, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_step_add(f->j, id, "cni_del", "ok", "4 plugins", T0, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_step_add(f->j, id, "netns_remove", "failed", "EBUSY", T0 + 1, err,
                                           sizeof(err)));
    reopen(f);
    assert_rc(JOURNAL_OK, journal_steps_list(f->j, id, &steps, &n, err, sizeof(err)));
    assert_int_equal(n, 2);
    assert_int_equal(steps[0].seq, 1);
    assert_string_equal(steps[0].name, "cni_del");
    assert_string_equal(steps[0].outcome, "ok");
    assert_int_equal(steps[1].seq, 2);
    assert_string_equal(steps[1].outcome, "failed");
    assert_string_equal(steps[1].detail, "EBUSY");
    assert_int_equal(steps[1].at, T0 + 1);
    journal_steps_free(steps, n);
}

static void test_step_outcome_checked(void **state)
{
    struct fixture *f = *state;
    struct journal_action a = sample_action("netns_clear:x", JS_EXECUTING);
    char err[512] = "";
    long long id = 0;

    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &a, T0, &id, err, sizeof(err)));
    assert_rc(JOURNAL_ERR, journal_step_add(f->j, id, "cni_del", "maybe", NULL, T0, err, sizeof(err)));
}

static void test_hostile_strings_round_trip(void **state)
{
    struct fixture *f = *state;
    static const char *const hostile[] = {
        "x'); DROP TABLE actions; --",
        "O'Brien \"quoted\" ; DELETE FROM buckets;",
        "' OR '1'='1",
        "%s%n%x%p",
        "line1\nline2\ttab\r",
        "\xc3\xbcnic\xc3\xb6" "de \xe2\x98\x83",
        "\\'; ATTACH DATABASE '/tmp/x' AS x; --",
        "?1 ?2 :name @p $v",
        "service_delete:web'; UPDATE actions SET state = 'approved'; --",
        "a\"b`c[d]e",
        "/* comment */ SELECT 1",
    };
    struct journal_action a, got, open_row;
    struct journal_action *rows = NULL;
    char **fields[] = {
        &a.idem_key, &a.kind, &a.target, &a.rule, &a.reason, &a.evidence, &a.basis,
        &a.namespace_name, &a.service, &a.alloc_id, &a.mode,
    };
    char err[1024] = "";
    long long id = 0, pass = 0, first = 0, second_id = 0;
    size_t n = 0;
    int allowed = 0;
    double left = -1;

    memset(&a, 0, sizeof(a));
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        *fields[i] = (char *)hostile[i];
    a.state = JS_PENDING_APPROVAL;
    a.expires_at = EXPIRES;
    a.last_error = (char *)hostile[0];
    assert_rc(JOURNAL_OK, journal_action_insert(f->j, &a, T0, &id, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_get(f->j, id, &got, err, sizeof(err)));
    assert_string_equal(got.idem_key, a.idem_key);
    assert_string_equal(got.kind, a.kind);
    assert_string_equal(got.target, a.target);
    assert_string_equal(got.rule, a.rule);
    assert_string_equal(got.reason, a.reason);
    assert_string_equal(got.evidence, a.evidence);
    assert_string_equal(got.basis, a.basis);
    assert_string_equal(got.namespace_name, a.namespace_name);
    assert_string_equal(got.service, a.service);
    assert_string_equal(got.alloc_id, a.alloc_id);
    assert_string_equal(got.mode, a.mode);
    assert_string_equal(got.last_error, a.last_error);
    assert_int_equal(got.state, JS_PENDING_APPROVAL);
    journal_action_free(&got);

    assert_rc(JOURNAL_OK, journal_action_find_open(f->j, a.idem_key, &open_row, err, sizeof(err)));
    assert_int_equal(open_row.id, id);
    journal_action_free(&open_row);
    assert_rc(JOURNAL_CONFLICT, journal_action_insert(f->j, &a, T0, &second_id, err, sizeof(err)));
    assert_contains(err, a.idem_key);

    assert_rc(JOURNAL_OK, journal_action_decide(f->j, id, 1, hostile[8], T0 + 1, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_action_get(f->j, id, &got, err, sizeof(err)));
    assert_string_equal(got.decided_by, hostile[8]);
    assert_int_equal(got.state, JS_APPROVED);
    journal_action_free(&got);

    assert_rc(JOURNAL_OK, journal_pass_begin(f->j, hostile[2], hostile[3], T0, &pass, err,
                                             sizeof(err)));
    assert_rc(JOURNAL_OK, journal_finding_seen(f->j, hostile[0], hostile[1], hostile[4], hostile[9],
                                               pass, T0, &first, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_finding_first_seen(f->j, hostile[0], &first, err, sizeof(err)));
    assert_int_equal(first, T0);
    assert_rc(JOURNAL_OK, journal_findings_sweep(f->j, hostile[1], pass, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_finding_first_seen(f->j, hostile[0], &first, err, sizeof(err)));

    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, hostile[6], 1, 60, T0, 1, &allowed, &left, err,
                                              sizeof(err)));
    assert_int_equal(allowed, 1);
    assert_rc(JOURNAL_OK, journal_bucket_take(f->j, hostile[6], 1, 60, T0, 1, &allowed, &left, err,
                                              sizeof(err)));
    assert_int_equal(allowed, 0);

    /* Nothing above ran as SQL: every table exists and contains exactly what was written. */
    assert_rc(JOURNAL_OK, journal_action_list(f->j, ~0u, 0, &rows, &n, err, sizeof(err)));
    assert_int_equal(n, 1);
    journal_action_list_free(rows, n);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM buckets"), 1);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM findings"), 1);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                      "AND name IN ('actions', 'passes', 'findings', 'buckets')"),
                     4);
}

/* ---- approval API audit ---- */

static void test_api_audit_round_trip(void **state)
{
    struct fixture *f = *state;
    struct journal_api_audit refused = {
        .remote_addr = "127.0.0.1", .method = "POST", .path = "/v1/actions/7/approve",
        .outcome = "unauthorized", .detail = "no bearer token",
    };
    struct journal_api_audit approved = {
        .remote_addr = "::1", .method = "POST", .path = "/v1/actions/7/approve",
        .token_name = "alice", .outcome = "approved", .detail = "action 7 approved",
    };
    struct journal_api_audit *rows = NULL;
    char err[512] = "";
    long long first = 0, second = 0;
    size_t n = 0;

    assert_rc(JOURNAL_OK, journal_api_audit_add(f->j, &refused, T0, &first, err, sizeof(err)));
    assert_rc(JOURNAL_OK, journal_api_audit_add(f->j, &approved, T0 + 5, &second, err, sizeof(err)));
    assert_true(second > first);
    reopen(f);

    assert_rc(JOURNAL_OK, journal_api_audit_list(f->j, 0, &rows, &n, err, sizeof(err)));
    assert_int_equal(n, 2);
    /* Newest first. */
    assert_int_equal(rows[0].id, second);
    assert_int_equal(rows[0].at, T0 + 5);
    assert_string_equal(rows[0].remote_addr, "::1");
    assert_string_equal(rows[0].method, "POST");
    assert_string_equal(rows[0].path, "/v1/actions/7/approve");
    assert_string_equal(rows[0].token_name, "alice");
    assert_string_equal(rows[0].outcome, "approved");
    assert_string_equal(rows[0].detail, "action 7 approved");
    assert_int_equal(rows[1].id, first);
    assert_int_equal(rows[1].at, T0);
    assert_null(rows[1].token_name);
    assert_string_equal(rows[1].outcome, "unauthorized");
    journal_api_audit_list_free(rows, n);

    assert_rc(JOURNAL_OK, journal_api_audit_list(f->j, 1, &rows, &n, err, sizeof(err)));
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].id, second);
    journal_api_audit_list_free(rows, n);
}

static void test_api_audit_every_outcome_accepted(void **state)
{
    static const char *const outcomes[] = {
        "approved", "rejected", "unauthorized", "forbidden", "not_found", "conflict",
        "bad_request", "method_not_allowed", "too_large",
    };
    struct fixture *f = *state;
    char err[512] = "";

    for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++) {
        struct journal_api_audit row = {.method = "GET", .path = "/v1/actions", .outcome = (char *)outcomes[i]};
        int rc = journal_api_audit_add(f->j, &row, T0, NULL, err, sizeof(err));

        if (rc != JOURNAL_OK)
            print_error("outcome %s: %s\n", outcomes[i], err);
        assert_int_equal(rc, JOURNAL_OK);
    }
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM api_audit"), 9);
}

static void test_api_audit_input_checked(void **state)
{
    struct fixture *f = *state;
    struct journal_api_audit unknown = {.method = "GET", .path = "/v1/actions", .outcome = "maybe"};
    struct journal_api_audit no_method = {.path = "/v1/actions", .outcome = "forbidden"};
    struct journal_api_audit no_path = {.method = "GET", .outcome = "forbidden"};
    struct journal_api_audit no_outcome = {.method = "GET", .path = "/v1/actions"};
    char err[512] = "";

    assert_rc(JOURNAL_ERR, journal_api_audit_add(f->j, &unknown, T0, NULL, err, sizeof(err)));
    assert_contains(err, "CHECK constraint failed");
    assert_rc(JOURNAL_ERR, journal_api_audit_add(f->j, &no_method, T0, NULL, err, sizeof(err)));
    assert_contains(err, "NOT NULL");
    assert_rc(JOURNAL_ERR, journal_api_audit_add(f->j, &no_path, T0, NULL, err, sizeof(err)));
    assert_rc(JOURNAL_ERR, journal_api_audit_add(f->j, &no_outcome, T0, NULL, err, sizeof(err)));
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM api_audit"), 0);
}

/* A version 2 journal (the schema before api_audit) gains the table and keeps its rows. */
static void test_migration_2_to_3_keeps_rows(void **state)
{
    struct fixture *f = *state;
    struct journal_action got;
    struct journal_api_audit row = {.method = "GET", .path = "/v1/actions", .outcome = "forbidden"};
    char err[512] = "";
    long long id = 0;

    assert_int_equal(journal_schema_version(), 3);
    id = make_row(f->j, "service_delete:web", JS_PENDING_APPROVAL);
    journal_close(f->j);
    f->j = NULL;
    raw_exec(f->path, "DROP TABLE api_audit; PRAGMA user_version = 2");

    assert_rc(JOURNAL_OK, journal_open(f->path, 0, &f->j, err, sizeof(err)));
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), 3);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_master WHERE name = 'api_audit'"), 1);
    assert_rc(JOURNAL_OK, journal_action_get(f->j, id, &got, err, sizeof(err)));
    assert_int_equal(got.state, JS_PENDING_APPROVAL);
    journal_action_free(&got);
    assert_rc(JOURNAL_OK, journal_api_audit_add(f->j, &row, T0, NULL, err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_names_round_trip),
        cmocka_unit_test_setup_teardown(test_steps_recorded_in_order, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_step_outcome_checked, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_open_creates_schema, setup_dir, teardown),
        cmocka_unit_test_setup_teardown(test_open_rejects_newer_version, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_open_readonly_missing_file, setup_dir, teardown),
        cmocka_unit_test_setup_teardown(test_open_readonly_existing, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_open_not_a_database, setup_dir, teardown),
        cmocka_unit_test_setup_teardown(test_open_failed_migration_changes_nothing, setup_dir,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_open_waits_for_lock, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_transition_every_allowed, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_transition_every_forbidden, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_transition_row_moved, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_transition_null_note_keeps_last_error, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_insert_second_open_row_conflicts, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_insert_invalid_input, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_insert_null_strings_stored_as_null, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_decide_approve, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_decide_reject, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_decide_expired, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_record_dedupes_same_basis, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_record_blocked_compares_guard, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_bucket_refill_survives_restart, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_bucket_clock_going_back, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_bucket_capacity_zero_always_allows, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bucket_invalid_arguments, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_nested_rollback_leaves_nothing, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_inner_rollback_fails_outer_commit, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_nested_commit_persists, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_conflict_rollback_returns_token, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_passes_last_finished, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_findings_seen_sweep_and_reopen, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_expire_open_rows, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_last_execution_per_key, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_list_by_state_mask, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_strings_round_trip, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_api_audit_round_trip, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_api_audit_every_outcome_accepted, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_api_audit_input_checked, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_migration_2_to_3_keeps_rows, setup_open, teardown),
    };

    /* Keep the "migrated journal" info line of every new journal out of the test output. */
    log_set_level(LOG_LEVEL_WARN);
    cmocka_set_message_output(CM_OUTPUT_STDOUT);
    return cmocka_run_group_tests_name("journal", tests, NULL, NULL);
}
