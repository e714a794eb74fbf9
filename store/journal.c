/*
 * The journal on SQLite: schema and migrations, transactions, passes,
 * findings, actions and rate-limit buckets. journal.h draws the action state
 * machine; allowed_next[] below enforces it.
 *
 * Every statement that carries a value binds it as a parameter, because
 * names and evidence come from Nomad and may contain anything. The only SQL
 * built from text is the state list in journal_action_list (fixed state
 * names from this file) and PRAGMA user_version (an integer constant).
 */
#define _POSIX_C_SOURCE 200809L
#include "journal.h"

#include "../controller/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define SCHEMA_VERSION 3
#define BUSY_TIMEOUT_MS 5000

#ifndef NOMAD_MEDIC_VERSION
#define NOMAD_MEDIC_VERSION "unknown"
#endif

#define STATE_BIT(s) (1u << (s))

struct journal {
    sqlite3 *db;
    char *path;
    int readonly;
    int depth;   /* journal_begin nesting depth; 0 outside a transaction */
    int doomed;  /* an inner level rolled back, so the outermost commit rolls back */
};

static const char *const state_names[JS_STATE_COUNT] = {
    [JS_DRY_RUN] = "dry_run",
    [JS_PENDING_APPROVAL] = "pending_approval",
    [JS_APPROVED] = "approved",
    [JS_REJECTED] = "rejected",
    [JS_EXPIRED] = "expired",
    [JS_EXECUTING] = "executing",
    [JS_SUCCEEDED] = "succeeded",
    [JS_FAILED] = "failed",
    [JS_UNKNOWN] = "unknown",
    [JS_BLOCKED] = "blocked",
};

/* The transitions of the diagram in journal.h: allowed_next[from] has bit `to` set. */
static const unsigned allowed_next[JS_STATE_COUNT] = {
    [JS_PENDING_APPROVAL] = STATE_BIT(JS_APPROVED) | STATE_BIT(JS_REJECTED) | STATE_BIT(JS_EXPIRED),
    [JS_APPROVED] = STATE_BIT(JS_EXECUTING) | STATE_BIT(JS_EXPIRED) | STATE_BIT(JS_BLOCKED),
    [JS_EXECUTING] = STATE_BIT(JS_SUCCEEDED) | STATE_BIT(JS_FAILED) | STATE_BIT(JS_UNKNOWN),
};

static const unsigned new_row_states = STATE_BIT(JS_DRY_RUN) | STATE_BIT(JS_PENDING_APPROVAL) |
                                       STATE_BIT(JS_EXECUTING) | STATE_BIT(JS_BLOCKED);

/*
 * migrations[v] brings a journal from schema version v to v + 1. Version 0
 * is an empty file. Append a step for every schema change and raise
 * SCHEMA_VERSION; never edit a step that has shipped.
 */
static const char *const migrations[SCHEMA_VERSION] = {
    /* 0 -> 1: the first schema. */
    "CREATE TABLE passes ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  scope TEXT,"
    "  mode TEXT,"
    "  started_at INTEGER NOT NULL,"
    "  finished_at INTEGER,"           /* NULL while the pass runs */
    "  complete INTEGER,"
    "  reads_json TEXT,"
    "  summary_json TEXT"
    ");"
    "CREATE INDEX passes_finished ON passes(finished_at);"
    "CREATE TABLE findings ("
    "  key TEXT PRIMARY KEY NOT NULL,"
    "  rule TEXT,"
    "  subject TEXT,"
    "  evidence TEXT,"
    "  first_seen INTEGER NOT NULL,"
    "  last_seen INTEGER NOT NULL,"
    "  last_pass INTEGER REFERENCES passes(id) ON DELETE SET NULL"
    ");"
    "CREATE INDEX findings_rule ON findings(rule, last_pass);"
    "CREATE TABLE actions ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  idem_key TEXT,"
    "  kind TEXT,"
    "  target TEXT,"
    "  rule TEXT,"
    "  reason TEXT,"
    "  evidence TEXT,"
    "  basis TEXT,"
    "  namespace_name TEXT,"
    "  service TEXT,"
    "  alloc_id TEXT,"
    "  mode TEXT,"
    "  state TEXT NOT NULL CHECK (state IN ('dry_run', 'pending_approval', 'approved',"
    "    'rejected', 'expired', 'executing', 'succeeded', 'failed', 'unknown', 'blocked')),"
    "  blocked_by TEXT,"
    "  decided_by TEXT,"
    "  decided_at INTEGER NOT NULL DEFAULT 0,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL DEFAULT 0,"
    "  executed_at INTEGER,"           /* last time the row entered executing; NULL if never */
    "  pass_id INTEGER REFERENCES passes(id) ON DELETE SET NULL,"
    "  times_seen INTEGER NOT NULL DEFAULT 1"
    ");"
    "CREATE UNIQUE INDEX actions_one_open ON actions(idem_key)"
    "  WHERE state IN ('pending_approval', 'approved', 'executing');"
    "CREATE INDEX actions_key ON actions(idem_key, id);"
    "CREATE INDEX actions_state ON actions(state, expires_at);"
    "CREATE TABLE buckets ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  tokens REAL NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ");",
    /* 1 -> 2: the steps of multi-step actions (netns_clear). */
    "CREATE TABLE action_steps ("
    "  action_id INTEGER NOT NULL REFERENCES actions(id) ON DELETE CASCADE,"
    "  seq INTEGER NOT NULL,"
    "  name TEXT NOT NULL,"
    "  outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'skipped', 'failed')),"
    "  detail TEXT,"
    "  at INTEGER NOT NULL,"
    "  PRIMARY KEY (action_id, seq)"
    ");",
    /* 2 -> 3: the approval API's audit trail: every decision and every refused request. */
    "CREATE TABLE api_audit ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  at INTEGER NOT NULL,"
    "  remote_addr TEXT,"
    "  method TEXT NOT NULL,"
    "  path TEXT NOT NULL,"
    "  token_name TEXT,"                /* NULL when no configured token matched */
    "  outcome TEXT NOT NULL CHECK (outcome IN ('approved', 'rejected', 'unauthorized',"
    "    'forbidden', 'not_found', 'conflict', 'bad_request', 'method_not_allowed', 'too_large')),"
    "  detail TEXT"
    ");"
    "CREATE INDEX api_audit_at ON api_audit(at);",
};

#define ACTION_COLUMNS                                                                  \
    "id, idem_key, kind, target, rule, reason, evidence, basis, namespace_name, "       \
    "service, alloc_id, mode, state, blocked_by, decided_by, decided_at, attempts, "    \
    "last_error, created_at, updated_at, expires_at, pass_id, times_seen"

/* ---- errors ---- */

static void set_err(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errsz == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

/* Advice for the operator on an SQLite result code. */
static const char *sqlite_hint(int code)
{
    switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return "another process held the journal lock for more than 5 s; "
               "check for a stuck nomad-medic and retry";
    case SQLITE_FULL:
        return "free space on its file system and retry";
    case SQLITE_IOERR:
        return "check the disk and the file system, then retry";
    case SQLITE_READONLY:
        return "check that this user can write the file and its directory";
    case SQLITE_PERM:
    case SQLITE_AUTH:
    case SQLITE_CANTOPEN:
        return "check the path and that this user can read and write the file and its directory";
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return "the file is damaged or is not a nomad-medic journal; "
               "move it aside so that a new journal is created";
    case SQLITE_NOMEM:
        return "the process ran out of memory; retry";
    default:
        return "retry, and report a bug with this message if it happens again";
    }
}

/* Fill err with the path, the failed step and SQLite's message. Call it before finalizing. */
static int db_err(struct journal *j, const char *operation, char *err, size_t errsz)
{
    int code = sqlite3_extended_errcode(j->db);

    set_err(err, errsz, "journal %s: %s failed: %s; %s", j->path, operation, sqlite3_errmsg(j->db),
            sqlite_hint(code));
    return JOURNAL_ERR;
}

static int oom_err(struct journal *j, char *err, size_t errsz)
{
    set_err(err, errsz, "journal %s: out of memory while reading a row; retry", j->path);
    return JOURNAL_ERR;
}

static void format_utc(long long t, char *buf, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, size, "%lld (Unix time)", t);
}

static int valid_state(enum journal_state s)
{
    return (int)s >= 0 && s < JS_STATE_COUNT;
}

/* ---- statement helpers ---- */

static int prepare(struct journal *j, const char *sql, const char *operation, sqlite3_stmt **st,
                   char *err, size_t errsz)
{
    if (sqlite3_prepare_v2(j->db, sql, -1, st, NULL) != SQLITE_OK) {
        *st = NULL;
        return db_err(j, operation, err, errsz);
    }
    return JOURNAL_OK;
}

/* Bind s, or SQL NULL when s is NULL. */
static int bind_text(sqlite3_stmt *st, int idx, const char *s)
{
    if (s == NULL)
        return sqlite3_bind_null(st, idx);
    return sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT);
}

/* Bind a row id, or SQL NULL for 0 ("no pass"), so the foreign key accepts it. */
static int bind_id_or_null(sqlite3_stmt *st, int idx, long long id)
{
    if (id == 0)
        return sqlite3_bind_null(st, idx);
    return sqlite3_bind_int64(st, idx, id);
}

static int exec_sql(struct journal *j, const char *sql, const char *operation, char *err, size_t errsz)
{
    if (sqlite3_exec(j->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_err(j, operation, err, errsz);
    return JOURNAL_OK;
}

/* Copy text column i into *dst (NULL for SQL NULL). Returns -1 when out of memory. */
static int column_dup(sqlite3_stmt *st, int i, char **dst)
{
    const unsigned char *text;

    *dst = NULL;
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        return 0;
    text = sqlite3_column_text(st, i);
    if (text == NULL)
        return -1;
    *dst = strdup((const char *)text);
    return *dst == NULL ? -1 : 0;
}

/* Fill out from a row selected with ACTION_COLUMNS. On failure, out owns no memory. */
static int read_action(struct journal *j, sqlite3_stmt *st, struct journal_action *out,
                       char *err, size_t errsz)
{
    char **text_fields[] = {
        &out->idem_key, &out->kind, &out->target, &out->rule, &out->reason, &out->evidence,
        &out->basis, &out->namespace_name, &out->service, &out->alloc_id, &out->mode,
    };
    const char *state;

    memset(out, 0, sizeof(*out));
    out->id = sqlite3_column_int64(st, 0);
    for (size_t i = 0; i < sizeof(text_fields) / sizeof(text_fields[0]); i++) {
        if (column_dup(st, (int)i + 1, text_fields[i]) != 0)
            goto oom;
    }
    state = (const char *)sqlite3_column_text(st, 12);
    if (state == NULL || journal_parse_state(state, &out->state) != JOURNAL_OK) {
        set_err(err, errsz,
                "journal %s: action %lld has unknown state \"%s\"; "
                "it was probably written by a newer nomad-medic, so upgrade nomad-medic",
                j->path, out->id, state ? state : "(null)");
        journal_action_free(out);
        return JOURNAL_ERR;
    }
    if (column_dup(st, 13, &out->blocked_by) != 0 || column_dup(st, 14, &out->decided_by) != 0)
        goto oom;
    out->decided_at = sqlite3_column_int64(st, 15);
    out->attempts = sqlite3_column_int(st, 16);
    if (column_dup(st, 17, &out->last_error) != 0)
        goto oom;
    out->created_at = sqlite3_column_int64(st, 18);
    out->updated_at = sqlite3_column_int64(st, 19);
    out->expires_at = sqlite3_column_int64(st, 20);
    out->pass_id = sqlite3_column_int64(st, 21);
    out->times_seen = sqlite3_column_int(st, 22);
    return JOURNAL_OK;

oom:
    journal_action_free(out);
    return oom_err(j, err, errsz);
}

/* ---- states ---- */

const char *journal_state_name(enum journal_state state)
{
    if (!valid_state(state))
        return "invalid";
    return state_names[state];
}

int journal_parse_state(const char *name, enum journal_state *out)
{
    if (name == NULL)
        return JOURNAL_NOT_FOUND;
    for (int s = 0; s < JS_STATE_COUNT; s++) {
        if (strcmp(name, state_names[s]) == 0) {
            *out = (enum journal_state)s;
            return JOURNAL_OK;
        }
    }
    return JOURNAL_NOT_FOUND;
}

int journal_state_is_open(enum journal_state state)
{
    return state == JS_PENDING_APPROVAL || state == JS_APPROVED || state == JS_EXECUTING;
}

int journal_schema_version(void)
{
    return SCHEMA_VERSION;
}

void journal_action_free(struct journal_action *a)
{
    if (a == NULL)
        return;
    free(a->idem_key);
    free(a->kind);
    free(a->target);
    free(a->rule);
    free(a->reason);
    free(a->evidence);
    free(a->basis);
    free(a->namespace_name);
    free(a->service);
    free(a->alloc_id);
    free(a->mode);
    free(a->blocked_by);
    free(a->decided_by);
    free(a->last_error);
    memset(a, 0, sizeof(*a));
}

void journal_action_list_free(struct journal_action *rows, size_t n)
{
    if (rows == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        journal_action_free(&rows[i]);
    free(rows);
}

/* ---- open, schema, close ---- */

/* Create the missing directories above path with mode 0700, whatever the umask. */
static int make_parent_dirs(const char *path, char *err, size_t errsz)
{
    char *copy = strdup(path);
    int rc = JOURNAL_OK;

    if (copy == NULL) {
        set_err(err, errsz, "journal %s: out of memory; retry", path);
        return JOURNAL_ERR;
    }
    /* Start after the first byte so that "/" itself is never created. */
    for (char *p = copy + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(copy, 0700) == 0) {
            if (chmod(copy, 0700) != 0) {
                set_err(err, errsz, "journal %s: cannot set mode 0700 on new directory %s: %s",
                        path, copy, strerror(errno));
                rc = JOURNAL_ERR;
                goto out;
            }
        } else if (errno != EEXIST) {
            set_err(err, errsz,
                    "journal %s: cannot create directory %s: %s; "
                    "create it, or set journal_path to a writable location",
                    path, copy, strerror(errno));
            rc = JOURNAL_ERR;
            goto out;
        }
        *p = '/';
    }
out:
    free(copy);
    return rc;
}

/*
 * Create path with mode 0600 when it does not exist, because SQLite would
 * create it with 0644 minus the umask. An empty file is a valid empty
 * database. SQLite gives the -wal and -shm files the mode of the database file.
 */
static int create_private_file(const char *path, char *err, size_t errsz)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

    if (fd < 0) {
        if (errno == EEXIST)
            return JOURNAL_OK;
        set_err(err, errsz,
                "journal %s: cannot create the file: %s; "
                "check that its directory is writable, or set journal_path elsewhere",
                path, strerror(errno));
        return JOURNAL_ERR;
    }
    if (fchmod(fd, 0600) != 0) {
        set_err(err, errsz, "journal %s: cannot set mode 0600 on the new file: %s", path,
                strerror(errno));
        close(fd);
        return JOURNAL_ERR;
    }
    close(fd);
    return JOURNAL_OK;
}

static int read_user_version(struct journal *j, int *version, char *err, size_t errsz)
{
    sqlite3_stmt *st = NULL;
    int rc;

    rc = prepare(j, "PRAGMA user_version", "reading the schema version", &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = db_err(j, "reading the schema version", err, errsz);
        goto out;
    }
    *version = sqlite3_column_int(st, 0);
out:
    sqlite3_finalize(st);
    return rc;
}

static int newer_version_err(struct journal *j, int version, char *err, size_t errsz)
{
    set_err(err, errsz,
            "journal %s has schema version %d, but this nomad-medic (%s) knows versions up to %d; "
            "upgrade nomad-medic to use this journal",
            j->path, version, NOMAD_MEDIC_VERSION, SCHEMA_VERSION);
    return JOURNAL_ERR;
}

/*
 * Apply every step from the file's version to SCHEMA_VERSION in one
 * transaction, so a failure leaves the file at its old version. The version
 * is read again under the write lock because another process may have
 * migrated the file since journal_open read it.
 */
static int migrate(struct journal *j, char *err, size_t errsz)
{
    char sql[64];
    int version = 0;
    int rc;

    rc = exec_sql(j, "BEGIN IMMEDIATE", "starting the schema migration", err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    rc = read_user_version(j, &version, err, errsz);
    if (rc != JOURNAL_OK)
        goto fail;
    if (version > SCHEMA_VERSION) {
        rc = newer_version_err(j, version, err, errsz);
        goto fail;
    }
    for (int v = version; v < SCHEMA_VERSION; v++) {
        char operation[96];

        snprintf(operation, sizeof(operation), "schema migration from version %d to %d", v, v + 1);
        rc = exec_sql(j, migrations[v], operation, err, errsz);
        if (rc != JOURNAL_OK)
            goto fail;
    }
    /* PRAGMA takes no bound parameters; the value is this file's constant. */
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", SCHEMA_VERSION);
    rc = exec_sql(j, sql, "writing the schema version", err, errsz);
    if (rc != JOURNAL_OK)
        goto fail;
    rc = exec_sql(j, "COMMIT", "committing the schema migration", err, errsz);
    if (rc != JOURNAL_OK)
        goto fail;
    if (version != SCHEMA_VERSION)
        log_info("journal", "migrated journal path=%s from schema version %d to %d", j->path,
                 version, SCHEMA_VERSION);
    return JOURNAL_OK;

fail:
    sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static int enable_wal(struct journal *j, char *err, size_t errsz)
{
    sqlite3_stmt *st = NULL;
    const char *mode;
    int rc;

    rc = prepare(j, "PRAGMA journal_mode = WAL", "switching to WAL mode", &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = db_err(j, "switching to WAL mode", err, errsz);
        goto out;
    }
    mode = (const char *)sqlite3_column_text(st, 0);
    if (mode == NULL || strcmp(mode, "wal") != 0) {
        set_err(err, errsz,
                "journal %s: cannot switch to WAL mode (SQLite kept mode \"%s\"); "
                "the file system may lack shared-memory support, so put the journal on a local disk",
                j->path, mode ? mode : "(null)");
        rc = JOURNAL_ERR;
    }
out:
    sqlite3_finalize(st);
    return rc;
}

int journal_open(const char *path, int flags, struct journal **out, char *err, size_t errsz)
{
    struct journal *j = NULL;
    int readonly = (flags & JOURNAL_READONLY) != 0;
    int version = 0;
    int rc = JOURNAL_ERR;
    struct stat sb;

    *out = NULL;
    if (path == NULL || path[0] == '\0') {
        set_err(err, errsz, "journal path is empty; set journal_path in the policy file");
        return JOURNAL_ERR;
    }
    j = calloc(1, sizeof(*j));
    if (j == NULL || (j->path = strdup(path)) == NULL) {
        set_err(err, errsz, "journal %s: out of memory; retry", path);
        goto out;
    }
    j->readonly = readonly;

    if (readonly) {
        if (stat(path, &sb) != 0) {
            set_err(err, errsz,
                    "journal %s cannot be opened read-only: %s; check journal_path, "
                    "or run nomad-medic once without read-only access so that it creates the journal",
                    path, strerror(errno));
            goto out;
        }
    } else {
        if (make_parent_dirs(path, err, errsz) != JOURNAL_OK ||
            create_private_file(path, err, errsz) != JOURNAL_OK)
            goto out;
    }

    if (sqlite3_open_v2(path, &j->db,
                        readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        NULL) != SQLITE_OK) {
        if (j->db == NULL)
            set_err(err, errsz, "journal %s: SQLite could not allocate a connection; retry", path);
        else
            db_err(j, "opening the database", err, errsz);
        goto out;
    }
    sqlite3_extended_result_codes(j->db, 1);
    sqlite3_busy_timeout(j->db, BUSY_TIMEOUT_MS);
    if (exec_sql(j, "PRAGMA foreign_keys = ON", "enabling foreign keys", err, errsz) != JOURNAL_OK)
        goto out;

    /* Check the version before any write, so a newer journal is left untouched. */
    if (read_user_version(j, &version, err, errsz) != JOURNAL_OK)
        goto out;
    if (version > SCHEMA_VERSION) {
        newer_version_err(j, version, err, errsz);
        goto out;
    }

    if (readonly) {
        if (version < SCHEMA_VERSION) {
            set_err(err, errsz,
                    "journal %s has schema version %d and this nomad-medic needs %d, "
                    "which a read-only open cannot migrate; run nomad-medic once without "
                    "read-only access to migrate it",
                    path, version, SCHEMA_VERSION);
            goto out;
        }
    } else {
        if (enable_wal(j, err, errsz) != JOURNAL_OK)
            goto out;
        if (version < SCHEMA_VERSION && migrate(j, err, errsz) != JOURNAL_OK)
            goto out;
    }
    /* FULL syncs the WAL on every commit, so a committed row survives a power loss. */
    if (exec_sql(j, "PRAGMA synchronous = FULL", "setting synchronous=FULL", err, errsz) != JOURNAL_OK)
        goto out;

    *out = j;
    j = NULL;
    rc = JOURNAL_OK;
out:
    journal_close(j);
    return rc;
}

void journal_close(struct journal *j)
{
    if (j == NULL)
        return;
    if (j->db != NULL) {
        if (j->depth > 0) {
            log_warn("journal", "closing journal path=%s inside a transaction (depth %d); "
                     "its changes are rolled back", j->path, j->depth);
            sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
        }
        sqlite3_close_v2(j->db);
    }
    free(j->path);
    free(j);
}

/* ---- transactions ---- */

/*
 * Nesting: only the outermost journal_begin starts a transaction and only
 * the outermost journal_commit ends it. A rollback at an inner level marks
 * the transaction doomed, so the outermost commit rolls everything back and
 * fails. SQLite itself rolls back on some errors, such as a full disk or
 * an I/O error. The autocommit checks below detect that, so the rest of the
 * caller's steps never run silently outside a transaction.
 */
int journal_begin(struct journal *j, char *err, size_t errsz)
{
    if (j->depth == 0) {
        if (exec_sql(j, "BEGIN IMMEDIATE", "starting a transaction", err, errsz) != JOURNAL_OK)
            return JOURNAL_ERR;
        j->doomed = 0;
    } else if (sqlite3_get_autocommit(j->db)) {
        set_err(err, errsz,
                "journal %s: the enclosing transaction was already rolled back after an error; "
                "roll back and retry the operation",
                j->path);
        return JOURNAL_ERR;
    }
    j->depth++;
    return JOURNAL_OK;
}

int journal_commit(struct journal *j, char *err, size_t errsz)
{
    if (j->depth == 0) {
        set_err(err, errsz, "journal %s: commit without a matching journal_begin; this is a bug",
                j->path);
        return JOURNAL_ERR;
    }
    if (--j->depth > 0)
        return JOURNAL_OK;

    if (sqlite3_get_autocommit(j->db)) {
        j->doomed = 0;
        set_err(err, errsz,
                "journal %s: the transaction was rolled back by SQLite after an earlier error; "
                "nothing was saved, so retry the operation",
                j->path);
        return JOURNAL_ERR;
    }
    if (j->doomed) {
        j->doomed = 0;
        sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
        set_err(err, errsz,
                "journal %s: the transaction was rolled back because an inner step failed; "
                "nothing was saved, so retry the operation",
                j->path);
        return JOURNAL_ERR;
    }
    if (sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        db_err(j, "committing a transaction", err, errsz);
        if (!sqlite3_get_autocommit(j->db))
            sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
        return JOURNAL_ERR;
    }
    return JOURNAL_OK;
}

void journal_rollback(struct journal *j)
{
    if (j->depth == 0)
        return;
    if (--j->depth > 0) {
        j->doomed = 1;
        return;
    }
    j->doomed = 0;
    if (!sqlite3_get_autocommit(j->db) &&
        sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK)
        log_error("journal", "rollback failed path=%s: %s", j->path, sqlite3_errmsg(j->db));
}

/* ---- passes ---- */

int journal_pass_begin(struct journal *j, const char *scope, const char *mode, long long now,
                       long long *pass_id, char *err, size_t errsz)
{
    static const char operation[] = "starting a pass";
    sqlite3_stmt *st = NULL;
    int rc;

    rc = prepare(j, "INSERT INTO passes (scope, mode, started_at) VALUES (?1, ?2, ?3)", operation, &st,
                 err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (bind_text(st, 1, scope) || bind_text(st, 2, mode) || sqlite3_bind_int64(st, 3, now) ||
        sqlite3_step(st) != SQLITE_DONE) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    *pass_id = sqlite3_last_insert_rowid(j->db);
out:
    sqlite3_finalize(st);
    return rc;
}

int journal_pass_finish(struct journal *j, long long pass_id, long long now, int complete,
                        const char *reads_json, const char *summary_json, char *err, size_t errsz)
{
    static const char operation[] = "finishing a pass";
    sqlite3_stmt *st = NULL;
    int rc;

    rc = prepare(j,
                 "UPDATE passes SET finished_at = ?1, complete = ?2, reads_json = ?3, "
                 "summary_json = ?4 WHERE id = ?5",
                 operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (sqlite3_bind_int64(st, 1, now) || sqlite3_bind_int(st, 2, complete ? 1 : 0) ||
        bind_text(st, 3, reads_json) || bind_text(st, 4, summary_json) ||
        sqlite3_bind_int64(st, 5, pass_id) || sqlite3_step(st) != SQLITE_DONE) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    if (sqlite3_changes(j->db) == 0) {
        set_err(err, errsz, "journal %s: pass %lld not found; start it with journal_pass_begin",
                j->path, pass_id);
        rc = JOURNAL_NOT_FOUND;
    }
out:
    sqlite3_finalize(st);
    return rc;
}

int journal_last_pass(struct journal *j, long long *finished_at, int *complete, char *err,
                      size_t errsz)
{
    static const char operation[] = "reading the last pass";
    sqlite3_stmt *st = NULL;
    int rc;
    int step;

    rc = prepare(j,
                 "SELECT finished_at, complete FROM passes WHERE finished_at IS NOT NULL "
                 "ORDER BY finished_at DESC, id DESC LIMIT 1",
                 operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        *finished_at = sqlite3_column_int64(st, 0);
        *complete = sqlite3_column_int(st, 1);
    } else if (step == SQLITE_DONE) {
        set_err(err, errsz, "journal %s: no pass has finished yet", j->path);
        rc = JOURNAL_NOT_FOUND;
    } else {
        rc = db_err(j, operation, err, errsz);
    }
    sqlite3_finalize(st);
    return rc;
}

/* ---- findings ---- */

int journal_finding_seen(struct journal *j, const char *key, const char *rule, const char *subject,
                         const char *evidence, long long pass_id, long long now,
                         long long *first_seen, char *err, size_t errsz)
{
    static const char operation[] = "recording a finding";
    sqlite3_stmt *st = NULL;
    int rc;

    if (key == NULL) {
        set_err(err, errsz, "journal %s: finding key is NULL; the caller must build rule + subject",
                j->path);
        return JOURNAL_ERR;
    }
    rc = prepare(j,
                 "INSERT INTO findings (key, rule, subject, evidence, first_seen, last_seen, last_pass) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6) "
                 "ON CONFLICT (key) DO UPDATE SET evidence = excluded.evidence, "
                 "last_seen = excluded.last_seen, last_pass = excluded.last_pass "
                 "RETURNING first_seen",
                 operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (bind_text(st, 1, key) || bind_text(st, 2, rule) || bind_text(st, 3, subject) ||
        bind_text(st, 4, evidence) || sqlite3_bind_int64(st, 5, now) ||
        bind_id_or_null(st, 6, pass_id) || sqlite3_step(st) != SQLITE_ROW) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    *first_seen = sqlite3_column_int64(st, 0);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = db_err(j, operation, err, errsz);
out:
    sqlite3_finalize(st);
    return rc;
}

int journal_finding_first_seen(struct journal *j, const char *key, long long *first_seen,
                               char *err, size_t errsz)
{
    static const char operation[] = "reading a finding";
    sqlite3_stmt *st = NULL;
    int rc;
    int step;

    rc = prepare(j, "SELECT first_seen FROM findings WHERE key = ?1", operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (bind_text(st, 1, key)) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        *first_seen = sqlite3_column_int64(st, 0);
    } else if (step == SQLITE_DONE) {
        set_err(err, errsz, "journal %s: finding \"%s\" not found", j->path, key ? key : "(null)");
        rc = JOURNAL_NOT_FOUND;
    } else {
        rc = db_err(j, operation, err, errsz);
    }
out:
    sqlite3_finalize(st);
    return rc;
}

int journal_findings_sweep(struct journal *j, const char *rule, long long pass_id, char *err,
                           size_t errsz)
{
    static const char operation[] = "sweeping findings";
    sqlite3_stmt *st = NULL;
    int rc;

    rc = prepare(j, "DELETE FROM findings WHERE rule IS ?1 AND last_pass IS NOT ?2", operation, &st,
                 err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (bind_text(st, 1, rule) || sqlite3_bind_int64(st, 2, pass_id) ||
        sqlite3_step(st) != SQLITE_DONE) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    if (sqlite3_changes(j->db) > 0)
        log_debug("journal", "swept findings rule=%s pass=%lld count=%d", rule ? rule : "(null)",
                  pass_id, sqlite3_changes(j->db));
out:
    sqlite3_finalize(st);
    return rc;
}

/* ---- actions ---- */

/* The open row's id and state for key, for the conflict message. Returns 0 when found. */
static int find_open_id(struct journal *j, const char *key, long long *id, char *state,
                        size_t statesz)
{
    sqlite3_stmt *st = NULL;
    int found = -1;

    if (sqlite3_prepare_v2(j->db,
                           "SELECT id, state FROM actions WHERE idem_key = ?1 AND "
                           "state IN ('pending_approval', 'approved', 'executing')",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (bind_text(st, 1, key) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        const char *s = (const char *)sqlite3_column_text(st, 1);

        *id = sqlite3_column_int64(st, 0);
        snprintf(state, statesz, "%s", s ? s : "(null)");
        found = 0;
    }
    sqlite3_finalize(st);
    return found;
}

/* Insert a in a new-row state; the caller has checked the state. */
static int insert_action(struct journal *j, const struct journal_action *a, long long now,
                         long long *id, char *err, size_t errsz)
{
    static const char operation[] = "inserting an action";
    const char *texts[] = {
        a->idem_key, a->kind, a->target, a->rule, a->reason, a->evidence,
        a->basis, a->namespace_name, a->service, a->alloc_id, a->mode,
    };
    int executing = a->state == JS_EXECUTING;
    long long expires_at = a->state == JS_PENDING_APPROVAL ? a->expires_at : 0;
    sqlite3_stmt *st = NULL;
    int brc = SQLITE_OK;
    int rc;
    int step;

    if (a->state == JS_PENDING_APPROVAL && expires_at <= now) {
        set_err(err, errsz,
                "journal %s: pending_approval action for key \"%s\" has expires_at %lld, "
                "not after now (%lld); set expires_at to now plus the approval window",
                j->path, a->idem_key ? a->idem_key : "(null)", expires_at, now);
        return JOURNAL_ERR;
    }
    rc = prepare(j,
                 "INSERT INTO actions (idem_key, kind, target, rule, reason, evidence, basis, "
                 "namespace_name, service, alloc_id, mode, state, blocked_by, last_error, "
                 "attempts, created_at, updated_at, expires_at, executed_at, pass_id, times_seen) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, "
                 "?15, ?16, ?16, ?17, ?18, ?19, 1)",
                 operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    for (int i = 0; i < 11 && brc == SQLITE_OK; i++)
        brc = bind_text(st, i + 1, texts[i]);
    if (brc || bind_text(st, 12, journal_state_name(a->state)) ||
        bind_text(st, 13, a->blocked_by) || bind_text(st, 14, a->last_error) ||
        sqlite3_bind_int(st, 15, executing) || sqlite3_bind_int64(st, 16, now) ||
        sqlite3_bind_int64(st, 17, expires_at) ||
        (executing ? sqlite3_bind_int64(st, 18, now) : sqlite3_bind_null(st, 18)) ||
        bind_id_or_null(st, 19, a->pass_id)) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    step = sqlite3_step(st);
    if (step == SQLITE_DONE) {
        *id = sqlite3_last_insert_rowid(j->db);
    } else if (sqlite3_extended_errcode(j->db) == SQLITE_CONSTRAINT_UNIQUE) {
        long long open_id = 0;
        char open_state[32] = "";

        if (find_open_id(j, a->idem_key, &open_id, open_state, sizeof(open_state)) == 0)
            set_err(err, errsz,
                    "journal %s: key \"%s\" already has open action %lld (%s); "
                    "it must be decided or finish before another action for the key is recorded",
                    j->path, a->idem_key, open_id, open_state);
        else
            db_err(j, operation, err, errsz);
        rc = JOURNAL_CONFLICT;
    } else if (sqlite3_extended_errcode(j->db) == SQLITE_CONSTRAINT_FOREIGNKEY) {
        set_err(err, errsz,
                "journal %s: action for key \"%s\" names pass %lld, which is not in the journal; "
                "pass an id from journal_pass_begin, or 0 for none",
                j->path, a->idem_key ? a->idem_key : "(null)", a->pass_id);
        rc = JOURNAL_ERR;
    } else {
        rc = db_err(j, operation, err, errsz);
    }
out:
    sqlite3_finalize(st);
    return rc;
}

int journal_action_insert(struct journal *j, const struct journal_action *a, long long now,
                          long long *id, char *err, size_t errsz)
{
    if (!valid_state(a->state) || !(new_row_states & STATE_BIT(a->state))) {
        set_err(err, errsz,
                "journal %s: cannot insert an action in state %s; a new row starts as "
                "dry_run, pending_approval, executing or blocked",
                j->path, journal_state_name(a->state));
        return JOURNAL_ERR;
    }
    return insert_action(j, a, now, id, err, errsz);
}

/* Set *id to the newest row for the key when it has the same state, blocked_by and basis as a. */
static int find_repeat(struct journal *j, const struct journal_action *a, long long *id,
                       char *err, size_t errsz)
{
    static const char operation[] = "looking up the newest action for a key";
    sqlite3_stmt *st = NULL;
    int rc;
    int step;

    *id = 0;
    rc = prepare(j,
                 "SELECT id FROM actions WHERE id = (SELECT max(id) FROM actions WHERE idem_key IS ?1) "
                 "AND state = ?2 AND blocked_by IS ?3 AND basis IS ?4",
                 operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (bind_text(st, 1, a->idem_key) || bind_text(st, 2, journal_state_name(a->state)) ||
        bind_text(st, 3, a->blocked_by) || bind_text(st, 4, a->basis)) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        *id = sqlite3_column_int64(st, 0);
    else if (step != SQLITE_DONE)
        rc = db_err(j, operation, err, errsz);
out:
    sqlite3_finalize(st);
    return rc;
}

static int refresh_action(struct journal *j, long long id, long long pass_id, long long now,
                          char *err, size_t errsz)
{
    static const char operation[] = "refreshing a repeated action";
    sqlite3_stmt *st = NULL;
    int rc;

    rc = prepare(j,
                 "UPDATE actions SET updated_at = ?1, pass_id = ?2, times_seen = times_seen + 1 "
                 "WHERE id = ?3",
                 operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (sqlite3_bind_int64(st, 1, now) || bind_id_or_null(st, 2, pass_id) ||
        sqlite3_bind_int64(st, 3, id) || sqlite3_step(st) != SQLITE_DONE)
        rc = db_err(j, operation, err, errsz);
    sqlite3_finalize(st);
    return rc;
}

int journal_action_record(struct journal *j, const struct journal_action *a, long long now,
                          long long *id, char *err, size_t errsz)
{
    long long repeat_id = 0;
    int rc;

    if (a->state != JS_DRY_RUN && a->state != JS_BLOCKED) {
        set_err(err, errsz,
                "journal %s: journal_action_record takes dry_run or blocked, not %s; "
                "use journal_action_insert",
                j->path, journal_state_name(a->state));
        return JOURNAL_ERR;
    }
    rc = journal_begin(j, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    rc = find_repeat(j, a, &repeat_id, err, errsz);
    if (rc != JOURNAL_OK)
        goto fail;
    if (repeat_id != 0) {
        rc = refresh_action(j, repeat_id, a->pass_id, now, err, errsz);
        *id = repeat_id;
    } else {
        rc = insert_action(j, a, now, id, err, errsz);
    }
    if (rc != JOURNAL_OK)
        goto fail;
    return journal_commit(j, err, errsz);

fail:
    journal_rollback(j);
    return rc;
}

/* The current state of row id as text; JOURNAL_NOT_FOUND when there is no such row. */
static int current_state(struct journal *j, long long id, char *state, size_t statesz,
                         long long *expires_at, char *err, size_t errsz)
{
    static const char operation[] = "reading an action's state";
    sqlite3_stmt *st = NULL;
    int rc;
    int step;

    rc = prepare(j, "SELECT state, expires_at FROM actions WHERE id = ?1", operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (sqlite3_bind_int64(st, 1, id)) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        const char *s = (const char *)sqlite3_column_text(st, 0);

        snprintf(state, statesz, "%s", s ? s : "(null)");
        if (expires_at != NULL)
            *expires_at = sqlite3_column_int64(st, 1);
    } else if (step == SQLITE_DONE) {
        set_err(err, errsz, "journal %s: action %lld not found; list actions to see valid ids",
                j->path, id);
        rc = JOURNAL_NOT_FOUND;
    } else {
        rc = db_err(j, operation, err, errsz);
    }
out:
    sqlite3_finalize(st);
    return rc;
}

/* Explain why row id did not move from `from` to `to`: NOT_FOUND or CONFLICT. */
static int transition_refused(struct journal *j, long long id, enum journal_state from,
                              enum journal_state to, int allowed, char *err, size_t errsz)
{
    char state[32];
    int rc = current_state(j, id, state, sizeof(state), NULL, err, errsz);

    if (rc != JOURNAL_OK)
        return rc;
    if (!allowed)
        set_err(err, errsz,
                "journal %s: action %lld cannot move from %s to %s, which is not an allowed "
                "transition (current state: %s)",
                j->path, id, journal_state_name(from), journal_state_name(to), state);
    else
        set_err(err, errsz,
                "journal %s: action %lld was not moved from %s to %s because it is now %s; "
                "read it again before acting on it",
                j->path, id, journal_state_name(from), journal_state_name(to), state);
    return JOURNAL_CONFLICT;
}

int journal_action_transition(struct journal *j, long long id, enum journal_state from,
                              enum journal_state to, const char *note, const char *who,
                              long long now, char *err, size_t errsz)
{
    static const char operation[] = "updating an action's state";
    int allowed = valid_state(from) && valid_state(to) && (allowed_next[from] & STATE_BIT(to));
    int entering_executing = to == JS_EXECUTING;
    int keeps_expiry = to == JS_PENDING_APPROVAL || to == JS_APPROVED;
    int decision = to == JS_APPROVED || to == JS_REJECTED;
    sqlite3_stmt *st = NULL;
    int rc;

    if (!valid_state(from) || !valid_state(to)) {
        set_err(err, errsz, "journal %s: action %lld: invalid state value %d or %d; this is a bug",
                j->path, id, (int)from, (int)to);
        return JOURNAL_ERR;
    }
    if (!allowed)
        return transition_refused(j, id, from, to, 0, err, errsz);

    /* One statement, guarded by the old state, so a concurrent move makes it change nothing. */
    rc = prepare(j,
                 "UPDATE actions SET state = ?1, updated_at = ?2, "
                 "last_error = coalesce(?3, last_error), "
                 "attempts = attempts + ?4, "
                 "executed_at = CASE WHEN ?4 THEN ?2 ELSE executed_at END, "
                 "expires_at = CASE WHEN ?5 THEN expires_at ELSE 0 END, "
                 "decided_by = CASE WHEN ?6 THEN ?7 ELSE decided_by END, "
                 "decided_at = CASE WHEN ?6 THEN ?2 ELSE decided_at END, "
                 "blocked_by = CASE WHEN ?8 THEN ?7 ELSE blocked_by END "
                 "WHERE id = ?9 AND state = ?10",
                 operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (bind_text(st, 1, journal_state_name(to)) || sqlite3_bind_int64(st, 2, now) ||
        bind_text(st, 3, note) || sqlite3_bind_int(st, 4, entering_executing) ||
        sqlite3_bind_int(st, 5, keeps_expiry) || sqlite3_bind_int(st, 6, decision) ||
        bind_text(st, 7, who) || sqlite3_bind_int(st, 8, to == JS_BLOCKED) ||
        sqlite3_bind_int64(st, 9, id) || bind_text(st, 10, journal_state_name(from)) ||
        sqlite3_step(st) != SQLITE_DONE) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    if (sqlite3_changes(j->db) == 0)
        rc = transition_refused(j, id, from, to, 1, err, errsz);
out:
    sqlite3_finalize(st);
    return rc;
}

int journal_action_decide(struct journal *j, long long id, int approve, const char *who,
                          long long now, char *err, size_t errsz)
{
    char state[32];
    char when[64];
    long long expires_at = 0;
    int rc;

    rc = journal_begin(j, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    rc = current_state(j, id, state, sizeof(state), &expires_at, err, errsz);
    if (rc != JOURNAL_OK)
        goto fail;
    if (strcmp(state, journal_state_name(JS_PENDING_APPROVAL)) != 0) {
        set_err(err, errsz,
                "journal %s: action %lld is %s, not pending_approval, so it cannot be %s",
                j->path, id, state, approve ? "approved" : "rejected");
        rc = JOURNAL_CONFLICT;
        goto fail;
    }
    if (expires_at <= now) {
        rc = journal_action_transition(j, id, JS_PENDING_APPROVAL, JS_EXPIRED,
                                       "approval window ended before a decision", NULL, now, err,
                                       errsz);
        if (rc != JOURNAL_OK)
            goto fail;
        rc = journal_commit(j, err, errsz);
        if (rc != JOURNAL_OK)
            return rc;
        format_utc(expires_at, when, sizeof(when));
        set_err(err, errsz,
                "action %lld expired at %s; it will be proposed again on the next pass if still needed",
                id, when);
        return JOURNAL_CONFLICT;
    }
    rc = journal_action_transition(j, id, JS_PENDING_APPROVAL, approve ? JS_APPROVED : JS_REJECTED,
                                   NULL, who, now, err, errsz);
    if (rc != JOURNAL_OK)
        goto fail;
    return journal_commit(j, err, errsz);

fail:
    journal_rollback(j);
    return rc;
}

/* Run a SELECT of ACTION_COLUMNS bound to one text or id value and read at most one row. */
static int get_one(struct journal *j, sqlite3_stmt *st, struct journal_action *out,
                   const char *operation, char *err, size_t errsz)
{
    int step = sqlite3_step(st);

    if (step == SQLITE_ROW)
        return read_action(j, st, out, err, errsz);
    if (step == SQLITE_DONE)
        return JOURNAL_NOT_FOUND;
    return db_err(j, operation, err, errsz);
}

int journal_action_get(struct journal *j, long long id, struct journal_action *out, char *err,
                       size_t errsz)
{
    static const char operation[] = "reading an action";
    sqlite3_stmt *st = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = prepare(j, "SELECT " ACTION_COLUMNS " FROM actions WHERE id = ?1", operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (sqlite3_bind_int64(st, 1, id)) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    rc = get_one(j, st, out, operation, err, errsz);
    if (rc == JOURNAL_NOT_FOUND)
        set_err(err, errsz, "journal %s: action %lld not found; list actions to see valid ids",
                j->path, id);
out:
    sqlite3_finalize(st);
    return rc;
}

int journal_action_latest_decision(struct journal *j, const char *idem_key, struct journal_action *out,
                                   char *err, size_t errsz)
{
    static const char operation[] = "reading the last decision on an action";
    sqlite3_stmt *st = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = prepare(j, "SELECT " ACTION_COLUMNS " FROM actions WHERE idem_key = ?1 AND decided_at > 0 "
                 "ORDER BY id DESC LIMIT 1", operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (bind_text(st, 1, idem_key)) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    rc = get_one(j, st, out, operation, err, errsz);
out:
    sqlite3_finalize(st);
    return rc;
}

int journal_action_find_open(struct journal *j, const char *idem_key, struct journal_action *out,
                             char *err, size_t errsz)
{
    static const char operation[] = "looking up the open action for a key";
    sqlite3_stmt *st = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = prepare(j,
                 "SELECT " ACTION_COLUMNS " FROM actions WHERE idem_key = ?1 AND "
                 "state IN ('pending_approval', 'approved', 'executing')",
                 operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (bind_text(st, 1, idem_key)) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    rc = get_one(j, st, out, operation, err, errsz);
    if (rc == JOURNAL_NOT_FOUND)
        set_err(err, errsz, "journal %s: no open action for key \"%s\"", j->path,
                idem_key ? idem_key : "(null)");
out:
    sqlite3_finalize(st);
    return rc;
}

int journal_action_list(struct journal *j, unsigned state_mask, size_t limit,
                        struct journal_action **rows, size_t *n, char *err, size_t errsz)
{
    static const char operation[] = "listing actions";
    /* Room for the fixed text plus one "?NN, " per state. */
    char sql[sizeof("SELECT " ACTION_COLUMNS) + 128 + 6 * JS_STATE_COUNT];
    struct journal_action *list = NULL;
    size_t count = 0;
    size_t cap = 0;
    size_t used;
    int nstates = 0;
    sqlite3_stmt *st = NULL;
    int rc;
    int step;

    *rows = NULL;
    *n = 0;
    used = (size_t)snprintf(sql, sizeof(sql), "SELECT " ACTION_COLUMNS " FROM actions WHERE state IN (");
    for (int s = 0; s < JS_STATE_COUNT; s++) {
        if (state_mask & STATE_BIT(s)) {
            nstates++;
            used += (size_t)snprintf(sql + used, sizeof(sql) - used, "%s?%d",
                                     nstates > 1 ? ", " : "", nstates);
        }
    }
    if (nstates == 0)
        return JOURNAL_OK;
    snprintf(sql + used, sizeof(sql) - used, ") ORDER BY id DESC LIMIT ?%d", nstates + 1);

    rc = prepare(j, sql, operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    for (int s = 0, idx = 1; s < JS_STATE_COUNT; s++) {
        if ((state_mask & STATE_BIT(s)) && bind_text(st, idx++, state_names[s])) {
            rc = db_err(j, operation, err, errsz);
            goto out;
        }
    }
    /* A negative LIMIT means no limit in SQLite. */
    if (sqlite3_bind_int64(st, nstates + 1,
                           limit == 0 || limit > (size_t)LLONG_MAX ? -1 : (long long)limit)) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == cap) {
            size_t newcap = cap ? cap * 2 : 16;
            struct journal_action *grown = realloc(list, newcap * sizeof(*list));

            if (grown == NULL) {
                rc = oom_err(j, err, errsz);
                goto out;
            }
            list = grown;
            cap = newcap;
        }
        rc = read_action(j, st, &list[count], err, errsz);
        if (rc != JOURNAL_OK)
            goto out;
        count++;
    }
    if (step != SQLITE_DONE) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    *rows = list;
    *n = count;
    list = NULL;
out:
    journal_action_list_free(list, count);
    sqlite3_finalize(st);
    return rc;
}

int journal_expire(struct journal *j, long long now, int *expired, char *err, size_t errsz)
{
    static const char operation[] = "expiring actions";
    sqlite3_stmt *st = NULL;
    int rc;

    *expired = 0;
    rc = prepare(j,
                 "UPDATE actions SET state = 'expired', updated_at = ?1, expires_at = 0 "
                 "WHERE state IN ('pending_approval', 'approved') AND expires_at <= ?1",
                 operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (sqlite3_bind_int64(st, 1, now) || sqlite3_step(st) != SQLITE_DONE) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    *expired = sqlite3_changes(j->db);
out:
    sqlite3_finalize(st);
    return rc;
}

int journal_last_execution(struct journal *j, const char *idem_key, long long *at, char *err,
                           size_t errsz)
{
    static const char operation[] = "reading the last execution";
    sqlite3_stmt *st = NULL;
    int rc;

    rc = prepare(j, "SELECT max(executed_at) FROM actions WHERE idem_key IS ?1", operation, &st, err,
                 errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (bind_text(st, 1, idem_key) || sqlite3_step(st) != SQLITE_ROW) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    if (sqlite3_column_type(st, 0) == SQLITE_NULL) {
        set_err(err, errsz, "journal %s: no action for key \"%s\" has executed", j->path,
                idem_key ? idem_key : "(null)");
        rc = JOURNAL_NOT_FOUND;
        goto out;
    }
    *at = sqlite3_column_int64(st, 0);
out:
    sqlite3_finalize(st);
    return rc;
}

int journal_approved_since(struct journal *j, long long since, int *count, char *err, size_t errsz)
{
    static const char operation[] = "counting recent approvals";
    sqlite3_stmt *st = NULL;
    int rc;

    *count = 0;
    rc = prepare(j, "SELECT count(*) FROM actions WHERE state = ?1 AND decided_at >= ?2", operation, &st,
                 err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (bind_text(st, 1, state_names[JS_APPROVED]) || sqlite3_bind_int64(st, 2, since) ||
        sqlite3_step(st) != SQLITE_ROW) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    *count = sqlite3_column_int(st, 0);
out:
    sqlite3_finalize(st);
    return rc;
}

/* ---- rate-limit buckets ---- */

/* Tokens below this count as zero; refills sum fractions, and 0.1 * 10 may land just under 1. */
#define TOKEN_EPSILON 1e-9

/* Read bucket name's stored tokens and time. *found is 0 for a bucket never written. */
static int read_bucket(struct journal *j, const char *name, int *found, double *tokens,
                       long long *updated_at, char *err, size_t errsz)
{
    static const char operation[] = "reading a rate-limit bucket";
    sqlite3_stmt *st = NULL;
    int rc;
    int step;

    *found = 0;
    rc = prepare(j, "SELECT tokens, updated_at FROM buckets WHERE name = ?1", operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (bind_text(st, 1, name)) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        *found = 1;
        *tokens = sqlite3_column_double(st, 0);
        *updated_at = sqlite3_column_int64(st, 1);
    } else if (step != SQLITE_DONE) {
        rc = db_err(j, operation, err, errsz);
    }
out:
    sqlite3_finalize(st);
    return rc;
}

static int write_bucket(struct journal *j, const char *name, double tokens, long long updated_at,
                        char *err, size_t errsz)
{
    static const char operation[] = "writing a rate-limit bucket";
    sqlite3_stmt *st = NULL;
    int rc;

    rc = prepare(j,
                 "INSERT INTO buckets (name, tokens, updated_at) VALUES (?1, ?2, ?3) "
                 "ON CONFLICT (name) DO UPDATE SET tokens = excluded.tokens, "
                 "updated_at = excluded.updated_at",
                 operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (bind_text(st, 1, name) || sqlite3_bind_double(st, 2, tokens) ||
        sqlite3_bind_int64(st, 3, updated_at) || sqlite3_step(st) != SQLITE_DONE)
        rc = db_err(j, operation, err, errsz);
    sqlite3_finalize(st);
    return rc;
}

int journal_bucket_take(struct journal *j, const char *name, int capacity, long period_s,
                        long long now, int take, int *allowed, double *tokens_left,
                        char *err, size_t errsz)
{
    double tokens = capacity;
    long long updated_at = now;
    int found = 0;
    int rc;

    *allowed = 0;
    *tokens_left = 0;
    if (name == NULL) {
        set_err(err, errsz, "journal %s: rate-limit bucket name is NULL; this is a bug", j->path);
        return JOURNAL_ERR;
    }
    if (capacity < 0 || (capacity > 0 && period_s <= 0)) {
        set_err(err, errsz,
                "journal %s: rate-limit bucket \"%s\" has capacity %d and period %ld s; "
                "the capacity must be 0 (no limit) or more, and the period positive",
                j->path, name, capacity, period_s);
        return JOURNAL_ERR;
    }
    if (capacity == 0) {
        *allowed = 1;
        return JOURNAL_OK;
    }

    /* A peek (take 0) writes nothing, so it also works on a read-only journal. */
    if (take) {
        rc = journal_begin(j, err, errsz);
        if (rc != JOURNAL_OK)
            return rc;
    }
    rc = read_bucket(j, name, &found, &tokens, &updated_at, err, errsz);
    if (rc != JOURNAL_OK)
        goto fail;
    if (!found) {
        tokens = capacity;
        updated_at = now;
    } else if (now > updated_at) {
        tokens += (double)(now - updated_at) * capacity / (double)period_s;
        updated_at = now;
    }
    /*
     * A clock that went back leaves updated_at where it was, so the same
     * seconds are not refilled twice. A lowered capacity caps old tokens.
     */
    if (tokens > capacity)
        tokens = capacity;
    if (tokens < 0)
        tokens = 0;

    *allowed = tokens >= 1.0 - TOKEN_EPSILON;
    if (take && *allowed)
        tokens = tokens - 1.0 < 0 ? 0 : tokens - 1.0;
    *tokens_left = tokens;
    if (!take)
        return JOURNAL_OK;

    rc = write_bucket(j, name, tokens, updated_at, err, errsz);
    if (rc != JOURNAL_OK)
        goto fail;
    rc = journal_commit(j, err, errsz);
    if (rc != JOURNAL_OK)
        *allowed = 0;
    return rc;

fail:
    *allowed = 0;
    if (take)
        journal_rollback(j);
    return rc;
}

/* ---- steps of multi-step actions ---- */

int journal_step_add(struct journal *j, long long action_id, const char *name, const char *outcome,
                     const char *detail, long long now, char *err, size_t errsz)
{
    static const char operation[] = "recording an action step";
    sqlite3_stmt *st = NULL;
    int rc;

    rc = prepare(j,
                 "INSERT INTO action_steps (action_id, seq, name, outcome, detail, at) "
                 "VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM action_steps WHERE action_id = ?1), "
                 "?2, ?3, ?4, ?5)",
                 operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (sqlite3_bind_int64(st, 1, action_id) || bind_text(st, 2, name) || bind_text(st, 3, outcome) ||
        bind_text(st, 4, detail) || sqlite3_bind_int64(st, 5, now)) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = db_err(j, operation, err, errsz);
out:
    sqlite3_finalize(st);
    return rc;
}

void journal_steps_free(struct journal_step *steps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(steps[i].name);
        free(steps[i].outcome);
        free(steps[i].detail);
    }
    free(steps);
}

int journal_steps_list(struct journal *j, long long action_id, struct journal_step **steps, size_t *n,
                       char *err, size_t errsz)
{
    static const char operation[] = "reading action steps";
    struct journal_step *rows = NULL;
    sqlite3_stmt *st = NULL;
    size_t count = 0, cap = 0;
    int step;
    int rc;

    *steps = NULL;
    *n = 0;
    rc = prepare(j, "SELECT seq, name, outcome, detail, at FROM action_steps WHERE action_id = ?1 "
                 "ORDER BY seq", operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (sqlite3_bind_int64(st, 1, action_id)) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        struct journal_step *row;

        if (count == cap) {
            size_t new_cap = cap ? cap * 2 : 8;
            struct journal_step *grown = realloc(rows, new_cap * sizeof(*grown));

            if (grown == NULL) {
                rc = oom_err(j, err, errsz);
                goto out;
            }
            rows = grown;
            cap = new_cap;
        }
        row = &rows[count];
        memset(row, 0, sizeof(*row));
        count++;
        row->seq = sqlite3_column_int(st, 0);
        row->at = sqlite3_column_int64(st, 4);
        if (column_dup(st, 1, &row->name) || column_dup(st, 2, &row->outcome) ||
            column_dup(st, 3, &row->detail)) {
            rc = oom_err(j, err, errsz);
            goto out;
        }
    }
    if (step != SQLITE_DONE)
        rc = db_err(j, operation, err, errsz);
out:
    sqlite3_finalize(st);
    if (rc != JOURNAL_OK) {
        journal_steps_free(rows, count);
        return rc;
    }
    *steps = rows;
    *n = count;
    return JOURNAL_OK;
}

/* ---- approval API audit ---- */

void journal_api_audit_free(struct journal_api_audit *row)
{
    if (row == NULL)
        return;
    free(row->remote_addr);
    free(row->method);
    free(row->path);
    free(row->token_name);
    free(row->outcome);
    free(row->detail);
    memset(row, 0, sizeof(*row));
}

void journal_api_audit_list_free(struct journal_api_audit *rows, size_t n)
{
    if (rows == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        journal_api_audit_free(&rows[i]);
    free(rows);
}

int journal_api_audit_add(struct journal *j, const struct journal_api_audit *row, long long now,
                          long long *id, char *err, size_t errsz)
{
    static const char operation[] = "recording an API audit row";
    sqlite3_stmt *st = NULL;
    int rc;

    rc = prepare(j,
                 "INSERT INTO api_audit (at, remote_addr, method, path, token_name, outcome, detail) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                 operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    if (sqlite3_bind_int64(st, 1, now) || bind_text(st, 2, row->remote_addr) ||
        bind_text(st, 3, row->method) || bind_text(st, 4, row->path) ||
        bind_text(st, 5, row->token_name) || bind_text(st, 6, row->outcome) ||
        bind_text(st, 7, row->detail) || sqlite3_step(st) != SQLITE_DONE) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    if (id != NULL)
        *id = sqlite3_last_insert_rowid(j->db);
out:
    sqlite3_finalize(st);
    return rc;
}

int journal_api_audit_list(struct journal *j, size_t limit, struct journal_api_audit **rows, size_t *n,
                           char *err, size_t errsz)
{
    static const char operation[] = "listing API audit rows";
    struct journal_api_audit *list = NULL;
    sqlite3_stmt *st = NULL;
    size_t count = 0, cap = 0;
    int step;
    int rc;

    *rows = NULL;
    *n = 0;
    rc = prepare(j,
                 "SELECT id, at, remote_addr, method, path, token_name, outcome, detail "
                 "FROM api_audit ORDER BY id DESC LIMIT ?1",
                 operation, &st, err, errsz);
    if (rc != JOURNAL_OK)
        return rc;
    /* A negative LIMIT means no limit in SQLite. */
    if (sqlite3_bind_int64(st, 1, limit == 0 || limit > (size_t)LLONG_MAX ? -1 : (long long)limit)) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        struct journal_api_audit *row;

        if (count == cap) {
            size_t new_cap = cap ? cap * 2 : 16;
            struct journal_api_audit *grown = realloc(list, new_cap * sizeof(*grown));

            if (grown == NULL) {
                rc = oom_err(j, err, errsz);
                goto out;
            }
            list = grown;
            cap = new_cap;
        }
        row = &list[count];
        memset(row, 0, sizeof(*row));
        count++;
        row->id = sqlite3_column_int64(st, 0);
        row->at = sqlite3_column_int64(st, 1);
        if (column_dup(st, 2, &row->remote_addr) || column_dup(st, 3, &row->method) ||
            column_dup(st, 4, &row->path) || column_dup(st, 5, &row->token_name) ||
            column_dup(st, 6, &row->outcome) || column_dup(st, 7, &row->detail)) {
            rc = oom_err(j, err, errsz);
            goto out;
        }
    }
    if (step != SQLITE_DONE) {
        rc = db_err(j, operation, err, errsz);
        goto out;
    }
    *rows = list;
    *n = count;
    list = NULL;
    count = 0;
out:
    journal_api_audit_list_free(list, count);
    sqlite3_finalize(st);
    return rc;
}
