/*
 * Nomad Variables (/v1/var, /v1/vars; Nomad 1.4+) and variable locks
 * (Nomad 1.7+), on top of the HTTP client in nomad.h.
 *
 * Every function checks its arguments before it sends anything: a path
 * outside Nomad's pattern ^[a-zA-Z0-9-_~/]{1,128}$, a namespace outside
 * ^[a-zA-Z0-9-]{1,128}$, or Items that are not a non-empty JSON object of
 * strings at most 64 KiB in size never reach the server. Nomad's extra rule
 * for paths under "nomad/" (only "nomad/jobs..." and "nomad/job-templates/<name>")
 * is left to the server, which rejects such paths with 400.
 *
 * Reads go through nomad_get() and are retried as nomad.h describes. Writes,
 * deletes and lock operations go through nomad_request() and are sent once,
 * so after a VAR_ERR from a write the caller does not know whether it was
 * applied and should read the variable again before retrying.
 *
 * Items often hold secrets: no function logs them or copies a value into an
 * error message. Keys and paths may appear in messages.
 *
 * Error messages go to err (errsz bytes, always NUL-terminated when errsz > 0;
 * err may be NULL when errsz is 0). They are written on VAR_ERR and on
 * VAR_CONFLICT, and err is set to "" on VAR_OK and VAR_NOT_FOUND.
 */
#ifndef NOMAD_MEDIC_VARIABLES_H
#define NOMAD_MEDIC_VARIABLES_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "nomad.h"

/* Path length limit of Nomad's path pattern. */
#define NOMAD_VAR_PATH_MAX 128

/* Nomad's limit on the sum of the byte lengths of all item keys and values. */
#define NOMAD_VAR_ITEMS_MAX_BYTES 65536

/* Page size (per_page) that nomad_var_list() requests. */
#define NOMAD_VAR_LIST_PAGE_SIZE 100

enum nomad_var_result {
    VAR_ERR = -1,       /* invalid argument, transport or server error; err describes it */
    VAR_OK = 0,
    VAR_NOT_FOUND,      /* the server returned 404 "variable not found" */
    VAR_CONFLICT,       /* 409: a check-and-set index or lock ID did not match */
};

/*
 * One variable as the server returned it. Every pointer is owned by the
 * struct and released by nomad_var_free().
 */
struct nomad_var {
    char *namespace_name;
    char *path;
    uint64_t create_index;
    uint64_t modify_index;
    cJSON *items;             /* object of string values; NULL when the response carried
                                 none (metadata-only responses, or Items withheld from a
                                 token without read permission) */
    char *lock_id;            /* NULL unless the response names the ID of a held lock */
    long long modify_time_s;  /* ModifyTime in Unix seconds (Nomad sends nanoseconds) */
    uint64_t query_index;     /* X-Nomad-Index of the response, 0 when absent: pass it as
                                 wait_index to the next blocking nomad_var_read() */
};

/* Release what var owns and zero it. Safe on a zeroed struct and on NULL. */
void nomad_var_free(struct nomad_var *var);

/* Return 1 when path matches ^[a-zA-Z0-9-_~/]{1,128}$, else 0 (NULL included). */
int nomad_var_valid_path(const char *path);

/* One word for a result, e.g. "conflict". */
const char *nomad_var_result_name(enum nomad_var_result result);

/*
 * Arguments shared by the functions below:
 *   ns    namespace; NULL means "default". "*" is accepted only by nomad_var_list().
 *   path  variable path, sent verbatim after validation.
 *   out   overwritten without being freed on entry (zeroed first), whatever the
 *         result; the caller frees it with nomad_var_free() after every call.
 */

/*
 * Read the variable at path: GET /v1/var/<path>?namespace=<ns>.
 *
 * With wait_index > 0 this is a blocking query (&index=<wait_index>, plus
 * &wait=<wait> when wait is non-NULL, a Go duration such as "30s"; without
 * wait the server holds the query up to its 300 s default). The server
 * returns once the variables table changes past wait_index or the wait runs
 * out, so a VAR_OK result is not proof of a change: compare modify_index.
 * wait is ignored when wait_index is 0.
 *
 * Returns VAR_OK with *out filled; VAR_NOT_FOUND with only out->query_index
 * set (block on it to wait for the variable to appear); VAR_ERR otherwise,
 * including a 404 with another text (a server without the Variables API).
 */
enum nomad_var_result nomad_var_read(struct nomad_client *client, const char *ns,
                                     const char *path, uint64_t wait_index, const char *wait,
                                     struct nomad_var *out, char *err, size_t errsz);

/*
 * Create or replace the variable at path with items, a JSON object of string
 * values that the caller keeps: PUT /v1/var/<path>?namespace=<ns>[&cas=<cas>]
 * with body {"Namespace":ns,"Items":items}.
 *
 * cas: -1 writes unconditionally, 0 creates only (conflicts when the variable
 * exists), > 0 writes only while the variable's ModifyIndex equals cas.
 *
 * Returns VAR_OK with *out holding the written variable. Returns VAR_CONFLICT
 * with *out holding the current variable as the server sent it, so the
 * caller can retry with cas = out->modify_index. The server sends a variable
 * with modify_index 0 and no items when a check-and-set finds no variable,
 * and also when a lock holds the variable (with or without cas). When the
 * server explains a conflict in plain text instead of sending the variable,
 * out->path is NULL and the caller reads the variable again. VAR_ERR for
 * anything else.
 */
enum nomad_var_result nomad_var_write(struct nomad_client *client, const char *ns,
                                      const char *path, const cJSON *items, long long cas,
                                      struct nomad_var *out, char *err, size_t errsz);

/*
 * Delete the variable at path: DELETE /v1/var/<path>?namespace=<ns>[&cas=<cas>].
 *
 * cas: -1 deletes unconditionally, > 0 deletes only while ModifyIndex equals
 * cas, and 0 is passed through with Nomad's meaning: succeed only when the
 * variable does not exist.
 *
 * Returns VAR_OK on 2xx (Nomad returns 204, also for a variable that did not
 * exist when no cas is given). Returns VAR_CONFLICT on 409: a cas mismatch, a
 * check-and-set on a missing variable, or a variable that a lock holds.
 * Returns VAR_NOT_FOUND on 404 "variable not found", else VAR_ERR.
 */
enum nomad_var_result nomad_var_delete(struct nomad_client *client, const char *ns,
                                       const char *path, long long cas,
                                       char *err, size_t errsz);

/*
 * List the paths of the variables in ns whose path starts with prefix (NULL
 * or "" for all): GET /v1/vars?namespace=<ns>&prefix=<prefix>&per_page=...,
 * following X-Nomad-NextToken until the last page. prefix must consist of
 * path characters, at most 128 of them. With ns "*" the paths of all
 * namespaces the token may list come back together, and the same path may
 * appear once per namespace.
 *
 * Returns VAR_OK with *paths (malloc'd array of malloc'd strings, NULL when
 * *n is 0) and *n set, in the server's order; free with nomad_var_paths_free().
 * On VAR_ERR *paths is NULL and *n is 0.
 */
enum nomad_var_result nomad_var_list(struct nomad_client *client, const char *ns,
                                     const char *prefix, char ***paths, size_t *n,
                                     char *err, size_t errsz);

void nomad_var_paths_free(char **paths, size_t n);

/*
 * Acquire the lock on the variable at path, creating the variable when it
 * does not exist: PUT /v1/var/<path>?namespace=<ns>&lock-acquire with body
 * {"Namespace":ns,"Items":items,"Lock":{"TTL":"<ttl_s>s","LockDelay":"<lock_delay_s>s"}}.
 * items may be NULL; otherwise it follows nomad_var_write()'s rules. Nomad
 * keeps the stored items of an existing variable and ignores items then.
 *
 * ttl_s must be positive: the holder renews within it or loses the lock.
 * Nomad accepts 10 s to 24 h and rejects other values with 400; the client
 * does not enforce that range so that test servers can use shorter TTLs.
 * lock_delay_s >= 0 is how long no holder may acquire the lock after it was
 * lost. Nomad replaces 0 with its 15 s default.
 *
 * Returns VAR_OK with out->lock_id set (keep it for renew and release).
 * Returns VAR_CONFLICT when another holder has the lock or its lock delay
 * is still running; *out then holds whatever variable the server sent
 * (Nomad sends one with zero indexes and no lock). VAR_ERR otherwise, also
 * when a 2xx response names no lock ID.
 */
enum nomad_var_result nomad_var_lock_acquire(struct nomad_client *client, const char *ns,
                                             const char *path, long ttl_s, long lock_delay_s,
                                             const cJSON *items, struct nomad_var *out,
                                             char *err, size_t errsz);

/*
 * Renew the lock held with lock_id for another TTL:
 * PUT /v1/var/<path>?namespace=<ns>&lock-renew with body
 * {"Namespace":ns,"Lock":{"ID":lock_id}}.
 *
 * Returns VAR_OK, or VAR_CONFLICT when the lock was lost because it expired,
 * was released or was taken by another holder. After a conflict the caller
 * must stop the work the lock protects. Returns VAR_NOT_FOUND when the
 * variable is gone (404 "variable not found", or Nomad's "variable doesn't
 * exist"), else VAR_ERR.
 */
enum nomad_var_result nomad_var_lock_renew(struct nomad_client *client, const char *ns,
                                           const char *path, const char *lock_id,
                                           char *err, size_t errsz);

/*
 * Release the lock held with lock_id: PUT /v1/var/<path>?namespace=<ns>&lock-release
 * with body {"Namespace":ns,"Lock":{"ID":lock_id}}. The variable and its
 * items stay.
 *
 * Returns VAR_OK, or VAR_CONFLICT when lock_id does not hold the lock because
 * it expired, was released already or another holder has it. Nomad reports
 * the first two as status 500 "variable doesn't hold a lock", which maps to
 * VAR_CONFLICT too. Returns VAR_NOT_FOUND when the variable is gone (404
 * "variable not found", or Nomad's "variable doesn't exist"), else VAR_ERR.
 */
enum nomad_var_result nomad_var_lock_release(struct nomad_client *client, const char *ns,
                                             const char *path, const char *lock_id,
                                             char *err, size_t errsz);

#endif
