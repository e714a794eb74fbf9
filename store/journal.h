/*
 * The journal: an SQLite file that records every pass, every finding's
 * first-seen time, every action and its state, and the rate-limit buckets.
 *
 * Action states and the transitions journal_action_transition() allows:
 *
 *   (new row) -> dry_run | pending_approval | executing | blocked
 *   pending_approval -> approved | rejected | expired
 *   approved         -> executing | expired | blocked   (blocked: the re-check found changed evidence)
 *   executing        -> succeeded | failed | unknown
 *
 * dry_run, blocked, rejected, expired, succeeded, failed and unknown are
 * final. pending_approval, approved and executing are "open": at most one
 * open row exists per idempotency key (a unique partial index enforces it),
 * so an action can never be queued or run twice at once.
 *
 * An `executing` row is committed before the mutating request is sent. A row
 * still `executing` at start-up means the process died mid-action; the
 * controller re-checks the target and moves the row to succeeded, failed or
 * unknown, and never repeats the request blindly.
 *
 * Times are Unix seconds (UTC). Functions return JOURNAL_OK (0) or a negative
 * code, and fill err (when not NULL; truncated to errsz) for every code but
 * JOURNAL_OK. Every string argument and string field may be NULL and is
 * stored as SQL NULL, except where a comment says otherwise.
 * A struct journal is not thread-safe; give each thread its own.
 */
#ifndef NOMAD_MEDIC_JOURNAL_H
#define NOMAD_MEDIC_JOURNAL_H

#include <stddef.h>

enum journal_rc {
    JOURNAL_OK = 0,
    JOURNAL_NOT_FOUND = -1,   /* no such row */
    JOURNAL_CONFLICT = -2,    /* state changed under us, or an open row exists for the key */
    JOURNAL_ERR = -3,         /* SQLite or I/O error; err says which */
};

enum journal_state {
    JS_DRY_RUN = 0,
    JS_PENDING_APPROVAL,
    JS_APPROVED,
    JS_REJECTED,
    JS_EXPIRED,
    JS_EXECUTING,
    JS_SUCCEEDED,
    JS_FAILED,
    JS_UNKNOWN,
    JS_BLOCKED,
    JS_STATE_COUNT,
};

/* "pending_approval", ...; "invalid" for a value outside the enum. */
const char *journal_state_name(enum journal_state state);
/* Returns JOURNAL_OK, or JOURNAL_NOT_FOUND for an unknown or NULL name (err is not used). */
int journal_parse_state(const char *name, enum journal_state *out);
int journal_state_is_open(enum journal_state state);

/* The schema version (PRAGMA user_version) this build creates and reads. */
int journal_schema_version(void);

/* One action row. Strings are owned by the struct (journal_action_free). */
struct journal_action {
    long long id;
    char *idem_key;        /* "kind:target"; one open row per key (a NULL key escapes that rule) */
    char *kind;            /* "service_delete", "system_gc", ... */
    char *target;          /* registration ID, "cluster", node ID ... */
    char *rule;
    char *reason;          /* one sentence for operators */
    char *evidence;        /* JSON object text */
    char *basis;           /* short canonical text of what the decision rests on; a change voids an approval */
    char *namespace_name;  /* NULL when not namespaced */
    char *service;         /* service name, NULL unless service_delete */
    char *alloc_id;        /* NULL when not tied to an allocation */
    char *mode;            /* "dry-run", "approve", "enforce" */
    enum journal_state state;
    char *blocked_by;      /* guard name when state is blocked, else NULL */
    char *decided_by;      /* who approved or rejected: CLI user or token name */
    long long decided_at;  /* 0 when undecided */
    int attempts;          /* times it entered executing */
    char *last_error;      /* or a note on the outcome */
    long long created_at;
    long long updated_at;
    long long expires_at;  /* pending_approval and approved only, else 0 */
    long long pass_id;     /* pass that last touched the row */
    int times_seen;        /* dry_run and blocked rows are refreshed, not repeated, while nothing changes */
};

void journal_action_free(struct journal_action *a);
void journal_action_list_free(struct journal_action *rows, size_t n);

struct journal;

/* Open flags. */
#define JOURNAL_READONLY 0x1   /* fail if the file is missing; never write */

/*
 * Open or create the journal at path and bring its schema to the current
 * version in one transaction. Creates missing parent directories (mode 0700)
 * and a new file with mode 0600 unless READONLY. Sets WAL mode,
 * synchronous=FULL, foreign keys and a 5 s busy timeout, so a crash after a
 * commit never loses the row (as long as the disk honors fsync).
 * Fails with JOURNAL_ERR when the file's schema is newer than this build
 * knows, and, with READONLY, when the file is missing or needs a migration.
 * On success *out is owned by the caller (journal_close); on failure it is NULL.
 */
int journal_open(const char *path, int flags, struct journal **out, char *err, size_t errsz);
void journal_close(struct journal *j);

/*
 * Caller-managed transaction (BEGIN IMMEDIATE / COMMIT / ROLLBACK). They nest
 * by counting: only the outermost begin and commit reach SQLite. A rollback
 * at an inner level makes the outermost commit roll back and return
 * JOURNAL_ERR, so a caller can wrap journal_bucket_take and
 * journal_action_insert and undo both. Functions below that need several
 * statements open their own nested level.
 */
int journal_begin(struct journal *j, char *err, size_t errsz);
int journal_commit(struct journal *j, char *err, size_t errsz);
void journal_rollback(struct journal *j);

/* ---- passes ---- */

/* Start a pass row; *pass_id receives its id. scope is "cluster" or "node". */
int journal_pass_begin(struct journal *j, const char *scope, const char *mode, long long now,
                       long long *pass_id, char *err, size_t errsz);

/*
 * Finish a pass. complete is 1 when every read succeeded. reads_json is a JSON
 * array of {"read","ok","error"}; summary_json a JSON object with counts.
 */
int journal_pass_finish(struct journal *j, long long pass_id, long long now, int complete,
                        const char *reads_json, const char *summary_json, char *err, size_t errsz);

/* Time the last pass finished, and whether it was complete. JOURNAL_NOT_FOUND before any pass. */
int journal_last_pass(struct journal *j, long long *finished_at, int *complete, char *err, size_t errsz);

/* ---- findings ---- */

/*
 * Record that finding key (rule + subject) was seen in pass_id. Inserts it
 * with first_seen = now when new; *first_seen receives the stored value.
 * An existing finding keeps first_seen and gets the new evidence, last-seen
 * time and pass. key must not be NULL (JOURNAL_ERR).
 */
int journal_finding_seen(struct journal *j, const char *key, const char *rule, const char *subject,
                         const char *evidence, long long pass_id, long long now,
                         long long *first_seen, char *err, size_t errsz);

/* Read a finding's first-seen time without writing. JOURNAL_NOT_FOUND when unknown. */
int journal_finding_first_seen(struct journal *j, const char *key, long long *first_seen,
                               char *err, size_t errsz);

/*
 * Forget the findings of rule that pass_id did not see, so a fault that
 * clears and returns starts its grace period again. Call it only when the
 * rule's reads were complete in that pass.
 */
int journal_findings_sweep(struct journal *j, const char *rule, long long pass_id,
                           char *err, size_t errsz);

/* ---- actions ---- */

/*
 * Insert a row in a new-row state (dry_run, pending_approval, executing,
 * blocked). Sets created_at and updated_at to now. Keeps a->expires_at for
 * pending_approval, which must be after now, and stores 0 for other states.
 * An executing row starts with attempts 1. The fields id, decided_by,
 * decided_at, attempts, created_at, updated_at and times_seen are ignored.
 * a->pass_id is 0 or an id from journal_pass_begin. *id receives the row id.
 * JOURNAL_CONFLICT, with err naming the key and the open row's id, when an
 * open row for the same idem_key exists; JOURNAL_ERR for any other state.
 */
int journal_action_insert(struct journal *j, const struct journal_action *a, long long now,
                          long long *id, char *err, size_t errsz);

/*
 * Record a dry_run or blocked outcome without filling the journal on every
 * pass. When the newest row for the key has the same state, blocked_by and
 * basis (NULL equals NULL), refresh it (updated_at, pass_id, times_seen + 1)
 * and return its id. Otherwise insert a new row. Other states: JOURNAL_ERR.
 */
int journal_action_record(struct journal *j, const struct journal_action *a, long long now,
                          long long *id, char *err, size_t errsz);

/*
 * Move row id from `from` to `to` if and only if it is still in `from` and
 * the transition is allowed (see the diagram above). note replaces
 * last_error; a NULL note keeps the old one. who goes to decided_by (with
 * decided_at = now) when `to` is approved or rejected, and to blocked_by
 * when `to` is blocked; it is ignored otherwise. Entering executing
 * increments attempts and sets the execution time for
 * journal_last_execution. Entering a state other than pending_approval or
 * approved clears expires_at. JOURNAL_NOT_FOUND when there is no row id;
 * JOURNAL_CONFLICT, with err naming from, to and the current state, when
 * the row is no longer in `from` or the transition is not allowed.
 */
int journal_action_transition(struct journal *j, long long id, enum journal_state from,
                              enum journal_state to, const char *note, const char *who,
                              long long now, char *err, size_t errsz);

/*
 * Approve or reject a pending action (the CLI and the approval API). Fails
 * with JOURNAL_CONFLICT and an err that explains why when the row is not
 * pending_approval or has expired (expires_at <= now). An expired row is
 * marked expired and committed before the call returns.
 * JOURNAL_NOT_FOUND when there is no row id.
 */
int journal_action_decide(struct journal *j, long long id, int approve, const char *who,
                          long long now, char *err, size_t errsz);

/* Read row id into out, which the caller frees with journal_action_free. JOURNAL_NOT_FOUND if absent. */
int journal_action_get(struct journal *j, long long id, struct journal_action *out,
                       char *err, size_t errsz);

/*
 * The newest row for idem_key that an operator approved or rejected, so a
 * rejection can keep the same action from being queued again.
 * JOURNAL_NOT_FOUND when no decision was ever made on the key.
 */
int journal_action_latest_decision(struct journal *j, const char *idem_key, struct journal_action *out,
                                   char *err, size_t errsz);

/* The open row for idem_key, if any. JOURNAL_NOT_FOUND when there is none. */
int journal_action_find_open(struct journal *j, const char *idem_key, struct journal_action *out,
                             char *err, size_t errsz);

/*
 * Rows in any of the states whose bits are set in state_mask
 * (1u << JS_...), newest first, at most limit (0: no limit). *rows is a
 * malloc'd array for journal_action_list_free().
 */
int journal_action_list(struct journal *j, unsigned state_mask, size_t limit,
                        struct journal_action **rows, size_t *n, char *err, size_t errsz);

/*
 * Move pending_approval and approved rows whose expires_at <= now to expired.
 * *expired receives the number of rows moved.
 */
int journal_expire(struct journal *j, long long now, int *expired, char *err, size_t errsz);

/*
 * When an action on idem_key last entered executing (any outcome).
 * JOURNAL_NOT_FOUND when never. Used for per-target cooldowns.
 */
int journal_last_execution(struct journal *j, const char *idem_key, long long *at,
                           char *err, size_t errsz);

/*
 * Count the approved rows decided at or after since (Unix s). `run` calls
 * it between passes, so an approval starts its action without waiting for
 * the next timed pass.
 */
int journal_approved_since(struct journal *j, long long since, int *count, char *err, size_t errsz);

/* ---- rate limits: token buckets that survive restarts ---- */

/*
 * Refill bucket `name` (capacity `capacity` tokens, refilled at
 * capacity/period_s per second) up to now, then take one token if take is
 * non-zero and one is available. *allowed is 1 when a token was (or, with
 * take 0, would be) available; *tokens_left receives the remainder.
 * A new bucket starts full. The refill and the take run in one transaction
 * (nested inside the caller's, if any); take 0 writes nothing.
 * A capacity of 0 means no limit: always allowed, *tokens_left 0, nothing
 * read or written. A negative capacity, a period_s <= 0 with a positive
 * capacity, or a NULL name is JOURNAL_ERR.
 */
int journal_bucket_take(struct journal *j, const char *name, int capacity, long period_s,
                        long long now, int take, int *allowed, double *tokens_left,
                        char *err, size_t errsz);

/* ---- steps of multi-step actions ---- */

/* One recorded step of an action (netns_clear runs several). Strings owned. */
struct journal_step {
    int seq;               /* 1, 2, ... in the order the steps ran */
    char *name;            /* "cni_del", "netns_remove", ... */
    char *outcome;         /* "ok", "skipped" or "failed" */
    char *detail;          /* what was done, or the error and what remains */
    long long at;
};

/* Append a step to action_id's record. outcome is "ok", "skipped" or "failed". */
int journal_step_add(struct journal *j, long long action_id, const char *name, const char *outcome,
                     const char *detail, long long now, char *err, size_t errsz);

/* The steps of action_id in order. *steps is malloc'd for journal_steps_free(). */
int journal_steps_list(struct journal *j, long long action_id, struct journal_step **steps, size_t *n,
                       char *err, size_t errsz);
void journal_steps_free(struct journal_step *steps, size_t n);

/* ---- approval API audit ---- */

/*
 * One request to the approval API that decided an action or was refused.
 * Strings are owned by the struct (journal_api_audit_free). No field ever
 * holds a bearer token: token_name is the configured name of the token that
 * matched, or NULL when none did.
 */
struct journal_api_audit {
    long long id;
    long long at;
    char *remote_addr;     /* client IP address as text */
    char *method;          /* not NULL */
    char *path;            /* request path without the query string; not NULL */
    char *token_name;
    char *outcome;         /* not NULL: "approved", "rejected", "unauthorized", "forbidden",
                              "not_found", "conflict", "bad_request", "method_not_allowed"
                              or "too_large" */
    char *detail;          /* what was decided, or why the request was refused */
};

void journal_api_audit_free(struct journal_api_audit *row);
void journal_api_audit_list_free(struct journal_api_audit *rows, size_t n);

/*
 * Append an audit row with at = now; row->id and row->at are ignored.
 * JOURNAL_ERR when method, path or outcome is NULL or the outcome is not
 * one of the values listed above (the schema checks both). *id (may be
 * NULL) receives the row id.
 */
int journal_api_audit_add(struct journal *j, const struct journal_api_audit *row, long long now,
                          long long *id, char *err, size_t errsz);

/*
 * Audit rows, newest first, at most limit (0: no limit). *rows is a
 * malloc'd array for journal_api_audit_list_free().
 */
int journal_api_audit_list(struct journal *j, size_t limit, struct journal_api_audit **rows, size_t *n,
                           char *err, size_t errsz);

#endif
