/*
 * Nomad Variables and variable locks over the HTTP client.
 *
 * Each operation validates its arguments, builds one request path whose
 * query values are escaped with nomad_escape(), sends it and maps the response
 * onto enum nomad_var_result: 2xx is VAR_OK, 404 "variable not found" is
 * VAR_NOT_FOUND, 409 is VAR_CONFLICT and everything else is VAR_ERR.
 */
#define _POSIX_C_SOURCE 200809L
#include "variables.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Request path buffer. The longest request is a list page: a 128-byte prefix
 * and a next token of namespace, '.' and path, each up to three times longer
 * once escaped, stay far below this. A longer path is rejected, never cut.
 */
#define URL_MAX 2048

/* Bytes of a path, namespace or key copied into a message. */
#define QUOTE_MAX 64

/* Nomad's namespace name limit (^[a-zA-Z0-9-]{1,128}$). */
#define NAMESPACE_MAX 128

/* Lock IDs are UUIDs (36 bytes), so anything far longer is not one. */
#define LOCK_ID_MAX 128

/*
 * 2^53: cJSON stores numbers as doubles, which hold every integer up to this
 * value exactly. A larger index would arrive rounded, so it is rejected.
 */
#define EXACT_DOUBLE_MAX 9007199254740992.0

/* A request path under construction; overflow marks that something did not fit. */
struct url {
    char text[URL_MAX];
    size_t len;
    int overflow;
};

static void set_err(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errsz, const char *fmt, ...)
{
    va_list args;

    if (err == NULL || errsz == 0)
        return;
    va_start(args, fmt);
    vsnprintf(err, errsz, fmt, args);
    va_end(args);
}

/*
 * Copy text into buf (QUOTE_MAX + 4 bytes) for a message: non-printable bytes
 * become '?', and text longer than QUOTE_MAX is cut and ends in "...".
 */
static const char *quoted(const char *text, char *buf)
{
    size_t i;

    if (text == NULL)
        return "(null)";
    for (i = 0; text[i] != '\0' && i < QUOTE_MAX; i++)
        buf[i] = isprint((unsigned char)text[i]) ? text[i] : '?';
    if (text[i] != '\0') {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}

static void url_add(struct url *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void url_add(struct url *u, const char *fmt, ...)
{
    va_list args;
    int written;

    if (u->overflow)
        return;
    va_start(args, fmt);
    written = vsnprintf(u->text + u->len, sizeof(u->text) - u->len, fmt, args);
    va_end(args);
    if (written < 0 || (size_t)written >= sizeof(u->text) - u->len) {
        u->overflow = 1;
        return;
    }
    u->len += (size_t)written;
}

/* Append "&name=<escaped value>". Returns 0, or -1 with err set. */
static int url_add_escaped(struct url *u, const char *name, const char *value, char *err, size_t errsz)
{
    char *escaped = nomad_escape(value);

    if (escaped == NULL) {
        set_err(err, errsz, "cannot escape the %s query value: out of memory", name);
        return -1;
    }
    url_add(u, "&%s=%s", name, escaped);
    free(escaped);
    return 0;
}

static int is_path_char(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_' || c == '~' || c == '/';
}

/* Whether text has min_len to NOMAD_VAR_PATH_MAX bytes, all path characters. */
static int valid_path_text(const char *text, size_t min_len)
{
    size_t len;

    if (text == NULL)
        return 0;
    for (len = 0; text[len] != '\0'; len++) {
        if (len >= NOMAD_VAR_PATH_MAX || !is_path_char((unsigned char)text[len]))
            return 0;
    }
    return len >= min_len;
}

int nomad_var_valid_path(const char *path)
{
    return valid_path_text(path, 1);
}

/* The namespace to send: ns, or "default" for NULL. */
static const char *namespace_or_default(const char *ns)
{
    return ns != NULL ? ns : "default";
}

/* Check ns against ^[a-zA-Z0-9-]{1,128}$, or "*" when allow_all. Returns 0, or -1 with err set. */
static int check_namespace(const char *ns, int allow_all, char *err, size_t errsz)
{
    char quote[QUOTE_MAX + 4];
    size_t len;

    if (allow_all && strcmp(ns, "*") == 0)
        return 0;
    for (len = 0; ns[len] != '\0'; len++) {
        unsigned char c = (unsigned char)ns[len];

        if (len >= NAMESPACE_MAX || !(isalnum(c) || c == '-'))
            break;
    }
    if (len > 0 && ns[len] == '\0')
        return 0;
    set_err(err, errsz,
            "namespace \"%s\" is invalid: use 1 to %d letters, digits and '-'%s",
            quoted(ns, quote), NAMESPACE_MAX, allow_all ? ", or \"*\" for all namespaces" : "");
    return -1;
}

static int check_path(const char *path, char *err, size_t errsz)
{
    char quote[QUOTE_MAX + 4];

    if (nomad_var_valid_path(path))
        return 0;
    set_err(err, errsz,
            "variable path \"%s\" is invalid: use 1 to %d characters from a-z, A-Z, 0-9, '-', '_', '~' and '/'",
            quoted(path, quote), NOMAD_VAR_PATH_MAX);
    return -1;
}

static const char *json_type_name(const cJSON *item)
{
    if (item == NULL)
        return "missing";
    if (cJSON_IsNull(item))
        return "null";
    if (cJSON_IsBool(item))
        return "a boolean";
    if (cJSON_IsNumber(item))
        return "a number";
    if (cJSON_IsString(item))
        return "a string";
    if (cJSON_IsArray(item))
        return "an array";
    if (cJSON_IsObject(item))
        return "an object";
    return "raw JSON";
}

/*
 * Check items for the variable at path: a non-empty object of string values
 * whose keys and values add up to at most NOMAD_VAR_ITEMS_MAX_BYTES, the sum
 * Nomad 1.4 to 2.0 compares with its 64 KiB limit. Values stay out of messages.
 * Returns 0, or -1 with err set.
 */
static int check_items(const cJSON *items, const char *path, char *err, size_t errsz)
{
    char path_quote[QUOTE_MAX + 4];
    char key_quote[QUOTE_MAX + 4];
    const cJSON *item;
    size_t total = 0;

    if (!cJSON_IsObject(items)) {
        set_err(err, errsz, "Items for variable \"%s\" must be a JSON object of string values, not %s",
                quoted(path, path_quote), json_type_name(items));
        return -1;
    }
    if (items->child == NULL) {
        set_err(err, errsz, "Items for variable \"%s\" is empty: Nomad rejects a variable without items, add at least one",
                quoted(path, path_quote));
        return -1;
    }
    cJSON_ArrayForEach(item, items) {
        if (!cJSON_IsString(item) || item->valuestring == NULL) {
            set_err(err, errsz,
                    "Items[\"%s\"] of variable \"%s\" is %s: Nomad stores string values only, convert it to a string",
                    quoted(item->string, key_quote), quoted(path, path_quote), json_type_name(item));
            return -1;
        }
        total += strlen(item->string) + strlen(item->valuestring);
    }
    if (total > NOMAD_VAR_ITEMS_MAX_BYTES) {
        set_err(err, errsz,
                "Items of variable \"%s\" add up to %zu bytes of keys and values: Nomad accepts at most %d, store less",
                quoted(path, path_quote), total, NOMAD_VAR_ITEMS_MAX_BYTES);
        return -1;
    }
    return 0;
}

/*
 * Check ns and path, then start "/v1/var/<path>?namespace=<ns>".
 * Returns 0, or -1 with err set.
 */
static int start_var_url(struct url *u, const char *ns, const char *path, char *err, size_t errsz)
{
    char *escaped;

    ns = namespace_or_default(ns);
    if (check_path(path, err, errsz) != 0 || check_namespace(ns, 0, err, errsz) != 0)
        return -1;
    escaped = nomad_escape(ns);
    if (escaped == NULL) {
        set_err(err, errsz, "cannot escape namespace \"%s\": out of memory", ns);
        return -1;
    }
    u->len = 0;
    u->overflow = 0;
    url_add(u, "/v1/var/%s?namespace=%s", path, escaped);
    free(escaped);
    return 0;
}

/* Returns 0, or -1 with err set when u overflowed. */
static int finish_url(const struct url *u, char *err, size_t errsz)
{
    if (!u->overflow)
        return 0;
    set_err(err, errsz, "request path for %.*s... is longer than %d bytes: use shorter arguments",
            QUOTE_MAX, u->text, URL_MAX);
    return -1;
}

/* Read an index field: absent is 0, otherwise an integer from 0 to 2^53. Returns 0 or -1. */
static int get_index(const cJSON *object, const char *name, uint64_t *value)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, name);

    *value = 0;
    if (item == NULL || cJSON_IsNull(item))
        return 0;
    if (!cJSON_IsNumber(item) || !(item->valuedouble >= 0.0) || item->valuedouble > EXACT_DOUBLE_MAX ||
        floor(item->valuedouble) != item->valuedouble)
        return -1;
    *value = (uint64_t)item->valuedouble;
    return 0;
}

/* strdup of a string field into *dst; absent or null leaves NULL. Returns 0, or -1 on a wrong type or no memory. */
static int get_string(const cJSON *object, const char *name, char **dst)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, name);

    *dst = NULL;
    if (item == NULL || cJSON_IsNull(item))
        return 0;
    if (!cJSON_IsString(item) || item->valuestring == NULL)
        return -1;
    *dst = strdup(item->valuestring);
    return *dst != NULL ? 0 : -1;
}

/*
 * Fill out from a variable in JSON (read, write, conflict and lock responses),
 * leaving out->query_index alone. request_line names the request for messages.
 * Returns 0, or -1 with err set and out's new fields freed.
 */
static int parse_var(const char *body, struct nomad_var *out, const char *request_line, char *err, size_t errsz)
{
    cJSON *root = cJSON_Parse(body);
    cJSON *items;
    cJSON *item;
    const cJSON *lock;
    const cJSON *modify_time;
    const char *bad_field = NULL;

    if (!cJSON_IsObject(root)) {
        set_err(err, errsz, "%s: response is not a JSON object: check that the address points at a Nomad server", request_line);
        cJSON_Delete(root);
        return -1;
    }
    if (get_string(root, "Namespace", &out->namespace_name) != 0)
        bad_field = "Namespace";
    else if (get_string(root, "Path", &out->path) != 0)
        bad_field = "Path";
    else if (get_index(root, "CreateIndex", &out->create_index) != 0)
        bad_field = "CreateIndex";
    else if (get_index(root, "ModifyIndex", &out->modify_index) != 0)
        bad_field = "ModifyIndex";
    if (bad_field != NULL)
        goto bad;

    modify_time = cJSON_GetObjectItemCaseSensitive(root, "ModifyTime");
    if (cJSON_IsNumber(modify_time))
        out->modify_time_s = (long long)floor(modify_time->valuedouble / 1e9);
    else if (modify_time != NULL && !cJSON_IsNull(modify_time)) {
        bad_field = "ModifyTime";
        goto bad;
    }

    lock = cJSON_GetObjectItemCaseSensitive(root, "Lock");
    if (cJSON_IsObject(lock)) {
        if (get_string(lock, "ID", &out->lock_id) != 0) {
            bad_field = "Lock.ID";
            goto bad;
        }
        if (out->lock_id != NULL && out->lock_id[0] == '\0') {
            free(out->lock_id);
            out->lock_id = NULL;
        }
    } else if (lock != NULL && !cJSON_IsNull(lock)) {
        bad_field = "Lock";
        goto bad;
    }

    items = cJSON_GetObjectItemCaseSensitive(root, "Items");
    if (cJSON_IsObject(items)) {
        cJSON_ArrayForEach(item, items) {
            if (!cJSON_IsString(item)) {
                bad_field = "Items";
                goto bad;
            }
        }
        out->items = cJSON_DetachItemViaPointer(root, items);
    } else if (items != NULL && !cJSON_IsNull(items)) {
        bad_field = "Items";
        goto bad;
    }
    cJSON_Delete(root);
    return 0;

bad:
    set_err(err, errsz, "%s: response field %s has an unexpected type or value (or memory ran out)", request_line, bad_field);
    cJSON_Delete(root);
    nomad_var_free(out);
    return -1;
}

static int body_contains(const struct nomad_response *resp, const char *text)
{
    return resp->body != NULL && strstr(resp->body, text) != NULL;
}

/*
 * Map a response onto a result; see the file comment. Lock renew and release
 * (lock_update) also map two plain-text errors of Nomad's state store, sent
 * with status 404 or 500 instead of 409: "variable doesn't exist" is
 * VAR_NOT_FOUND, and "variable doesn't hold a lock" is VAR_CONFLICT because
 * the caller's lock is gone.
 */
static enum nomad_var_result classify(const struct nomad_response *resp, int lock_update)
{
    if (resp->result == NOMAD_OK)
        return VAR_OK;
    if (resp->result != NOMAD_ERR_STATUS)
        return VAR_ERR;
    if (resp->status == 404 && body_contains(resp, "variable not found"))
        return VAR_NOT_FOUND;
    if (resp->status == 409)
        return VAR_CONFLICT;
    if (lock_update && body_contains(resp, "variable doesn't exist"))
        return VAR_NOT_FOUND;
    if (lock_update && body_contains(resp, "variable doesn't hold a lock"))
        return VAR_CONFLICT;
    return VAR_ERR;
}

/* "METHOD /v1/var/<path>" without the query, for messages. */
static void describe_request(char *buf, size_t size, const char *method, const struct url *u)
{
    size_t path_len = strcspn(u->text, "?");

    snprintf(buf, size, "%s %.*s", method, (int)path_len, u->text);
}

/*
 * Send a write (PUT or DELETE) with body (NULL for none) and map the response.
 * On VAR_OK and VAR_CONFLICT, a non-empty body is parsed into out. A
 * conflict whose body is not a variable (Nomad's plain-text "cas error")
 * leaves out->path NULL and copies the client's error line into detail.
 * On VAR_ERR, err contains the reason.
 */
static enum nomad_var_result send_write(struct nomad_client *client, const char *method, const struct url *u,
                                        const cJSON *body, int lock_update, struct nomad_var *out, char *detail,
                                        size_t detail_size, char *err, size_t errsz)
{
    char request_line[URL_MAX + 16];
    char *text = NULL;
    struct nomad_response resp;
    enum nomad_var_result rc;

    describe_request(request_line, sizeof(request_line), method, u);
    if (body != NULL) {
        text = cJSON_PrintUnformatted(body);
        if (text == NULL) {
            set_err(err, errsz, "%s: cannot encode the request body: out of memory", request_line);
            return VAR_ERR;
        }
    }
    nomad_request(client, method, u->text, text, &resp);
    free(text);
    rc = classify(&resp, lock_update);
    snprintf(detail, detail_size, "%s", resp.error);
    switch (rc) {
    case VAR_OK:
        if (resp.body != NULL && resp.body[0] != '\0' && parse_var(resp.body, out, request_line, err, errsz) != 0)
            rc = VAR_ERR;
        break;
    case VAR_CONFLICT:
        /* A plain-text body is still a conflict: parse_var() fails and leaves out empty. */
        if (resp.body != NULL)
            (void)parse_var(resp.body, out, request_line, NULL, 0);
        break;
    case VAR_NOT_FOUND:
        break;
    case VAR_ERR:
        set_err(err, errsz, "%s", resp.error);
        break;
    }
    /* Set last: a failed parse_var() clears out. */
    out->query_index = resp.index;
    nomad_response_free(&resp);
    return rc;
}

void nomad_var_free(struct nomad_var *var)
{
    if (var == NULL)
        return;
    free(var->namespace_name);
    free(var->path);
    cJSON_Delete(var->items);
    free(var->lock_id);
    memset(var, 0, sizeof(*var));
}

const char *nomad_var_result_name(enum nomad_var_result result)
{
    switch (result) {
    case VAR_OK:
        return "ok";
    case VAR_NOT_FOUND:
        return "not found";
    case VAR_CONFLICT:
        return "conflict";
    case VAR_ERR:
        return "error";
    }
    return "unknown result";
}

/* Clear err and out at the start of an operation. */
static void begin(struct nomad_var *out, char *err, size_t errsz)
{
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (err != NULL && errsz > 0)
        err[0] = '\0';
}

enum nomad_var_result nomad_var_read(struct nomad_client *client, const char *ns, const char *path,
                                     uint64_t wait_index, const char *wait, struct nomad_var *out,
                                     char *err, size_t errsz)
{
    struct url u;
    struct nomad_response resp;
    char request_line[URL_MAX + 16];
    enum nomad_var_result rc;

    begin(out, err, errsz);
    if (start_var_url(&u, ns, path, err, errsz) != 0)
        return VAR_ERR;
    if (wait_index > 0) {
        url_add(&u, "&index=%llu", (unsigned long long)wait_index);
        if (wait != NULL && url_add_escaped(&u, "wait", wait, err, errsz) != 0)
            return VAR_ERR;
    }
    if (finish_url(&u, err, errsz) != 0)
        return VAR_ERR;

    describe_request(request_line, sizeof(request_line), "GET", &u);
    nomad_get(client, u.text, &resp);
    rc = classify(&resp, 0);
    switch (rc) {
    case VAR_OK:
        if (parse_var(resp.body, out, request_line, err, errsz) != 0)
            rc = VAR_ERR;
        break;
    case VAR_NOT_FOUND:
        break;
    case VAR_CONFLICT:
    case VAR_ERR:
        /* A read has no conflict to report, so a 409 here is a server error. */
        set_err(err, errsz, "%s", resp.error);
        rc = VAR_ERR;
        break;
    }
    out->query_index = resp.index;
    nomad_response_free(&resp);
    return rc;
}

/*
 * Describe a conflict on a write or delete; current came from the server.
 * Nomad sends a variable with zero indexes when the variable does not exist
 * or when a lock holds it and the request carried no lock ID.
 */
static void cas_conflict_message(const char *verb, const char *ns, const char *path, long long cas,
                                 const struct nomad_var *current, const char *detail, char *err, size_t errsz)
{
    char quote[QUOTE_MAX + 4];
    unsigned long long current_index = (unsigned long long)current->modify_index;

    ns = namespace_or_default(ns);
    quoted(path, quote);
    if (current->path == NULL)
        set_err(err, errsz,
                "%s of variable \"%s\" in namespace \"%s\" conflicted (%s): read the variable again and retry with its ModifyIndex",
                verb, quote, ns, detail);
    else if (current_index == 0 && cas < 0)
        set_err(err, errsz,
                "%s of variable \"%s\" in namespace \"%s\" conflicted because a lock holds the variable: retry after the lock is released",
                verb, quote, ns);
    else if (current_index == 0)
        set_err(err, errsz,
                "%s of variable \"%s\" in namespace \"%s\" with cas=%lld did not apply because the variable does not exist or a lock holds it",
                verb, quote, ns, cas);
    else if (cas == 0)
        set_err(err, errsz,
                "%s of variable \"%s\" in namespace \"%s\" with cas=0 did not apply because the variable exists with ModifyIndex %llu: use cas=%llu to %s it",
                verb, quote, ns, current_index, current_index, verb);
    else
        set_err(err, errsz,
                "%s of variable \"%s\" in namespace \"%s\" with cas=%lld did not apply because its ModifyIndex is now %llu: read it again and retry with cas=%llu",
                verb, quote, ns, cas, current_index, current_index);
}

static int check_cas(long long cas, char *err, size_t errsz)
{
    if (cas >= -1)
        return 0;
    set_err(err, errsz, "cas %lld is invalid: use -1 for none, 0 or a ModifyIndex", cas);
    return -1;
}

/* {"Namespace":ns} plus a copy of items when non-NULL; NULL when memory ran out. */
static cJSON *new_body(const char *ns, const cJSON *items)
{
    cJSON *body = cJSON_CreateObject();
    cJSON *copy;

    if (body == NULL || cJSON_AddStringToObject(body, "Namespace", namespace_or_default(ns)) == NULL)
        goto fail;
    if (items != NULL) {
        copy = cJSON_Duplicate(items, 1);
        if (copy == NULL)
            goto fail;
        if (!cJSON_AddItemToObject(body, "Items", copy)) {
            cJSON_Delete(copy);
            goto fail;
        }
    }
    return body;

fail:
    cJSON_Delete(body);
    return NULL;
}

enum nomad_var_result nomad_var_write(struct nomad_client *client, const char *ns, const char *path,
                                      const cJSON *items, long long cas, struct nomad_var *out,
                                      char *err, size_t errsz)
{
    struct url u;
    cJSON *body;
    char detail[512];
    enum nomad_var_result rc;

    begin(out, err, errsz);
    if (start_var_url(&u, ns, path, err, errsz) != 0 || check_items(items, path, err, errsz) != 0 ||
        check_cas(cas, err, errsz) != 0)
        return VAR_ERR;
    if (cas >= 0)
        url_add(&u, "&cas=%lld", cas);
    if (finish_url(&u, err, errsz) != 0)
        return VAR_ERR;
    body = new_body(ns, items);
    if (body == NULL) {
        set_err(err, errsz, "cannot build the request body for variable \"%s\": out of memory", path);
        return VAR_ERR;
    }

    rc = send_write(client, "PUT", &u, body, 0, out, detail, sizeof(detail), err, errsz);
    cJSON_Delete(body);
    if (rc == VAR_OK && out->path == NULL) {
        set_err(err, errsz, "PUT /v1/var/%s: the response contains no variable: check that the address points at a Nomad server",
                path);
        rc = VAR_ERR;
    } else if (rc == VAR_CONFLICT) {
        cas_conflict_message("write", ns, path, cas, out, detail, err, errsz);
    } else if (rc == VAR_NOT_FOUND) {
        set_err(err, errsz, "%s", detail);
        rc = VAR_ERR;
    }
    return rc;
}

enum nomad_var_result nomad_var_delete(struct nomad_client *client, const char *ns, const char *path,
                                       long long cas, char *err, size_t errsz)
{
    struct url u;
    struct nomad_var current;
    char detail[512];
    enum nomad_var_result rc;

    begin(&current, err, errsz);
    if (start_var_url(&u, ns, path, err, errsz) != 0 || check_cas(cas, err, errsz) != 0)
        return VAR_ERR;
    if (cas >= 0)
        url_add(&u, "&cas=%lld", cas);
    if (finish_url(&u, err, errsz) != 0)
        return VAR_ERR;

    rc = send_write(client, "DELETE", &u, NULL, 0, &current, detail, sizeof(detail), err, errsz);
    if (rc == VAR_CONFLICT)
        cas_conflict_message("delete", ns, path, cas, &current, detail, err, errsz);
    nomad_var_free(&current);
    return rc;
}

void nomad_var_paths_free(char **paths, size_t n)
{
    if (paths == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
}

/* Append a copy of path to the list. Returns 0, or -1 when memory ran out. */
static int add_path(char ***paths, size_t *n, size_t *cap, const char *path)
{
    char *copy = strdup(path);

    if (copy == NULL)
        return -1;
    if (*n == *cap) {
        size_t new_cap = *cap == 0 ? NOMAD_VAR_LIST_PAGE_SIZE : *cap * 2;
        char **grown = realloc(*paths, new_cap * sizeof(**paths));

        if (grown == NULL) {
            free(copy);
            return -1;
        }
        *paths = grown;
        *cap = new_cap;
    }
    (*paths)[(*n)++] = copy;
    return 0;
}

/* Add the Path of every entry of one list page. Returns 0, or -1 with err set. */
static int add_page(const char *body, char ***paths, size_t *n, size_t *cap, char *err, size_t errsz)
{
    cJSON *page = cJSON_Parse(body);
    const cJSON *entry;
    int rc = -1;

    if (!cJSON_IsArray(page)) {
        set_err(err, errsz, "GET /v1/vars: response is not a JSON array: check that the address points at a Nomad server");
        goto out;
    }
    cJSON_ArrayForEach(entry, page) {
        const char *path = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(entry, "Path"));

        if (path == NULL) {
            set_err(err, errsz, "GET /v1/vars: entry %zu has no Path string", *n);
            goto out;
        }
        if (add_path(paths, n, cap, path) != 0) {
            set_err(err, errsz, "GET /v1/vars: out of memory after %zu paths", *n);
            goto out;
        }
    }
    rc = 0;

out:
    cJSON_Delete(page);
    return rc;
}

enum nomad_var_result nomad_var_list(struct nomad_client *client, const char *ns, const char *prefix,
                                     char ***paths, size_t *n, char *err, size_t errsz)
{
    char quote[QUOTE_MAX + 4];
    char *token = NULL;
    size_t cap = 0;
    enum nomad_var_result rc = VAR_ERR;

    *paths = NULL;
    *n = 0;
    begin(NULL, err, errsz);
    ns = namespace_or_default(ns);
    if (check_namespace(ns, 1, err, errsz) != 0)
        return VAR_ERR;
    if (prefix != NULL && !valid_path_text(prefix, 0)) {
        set_err(err, errsz,
                "variable prefix \"%s\" is invalid: use up to %d characters from a-z, A-Z, 0-9, '-', '_', '~' and '/'",
                quoted(prefix, quote), NOMAD_VAR_PATH_MAX);
        return VAR_ERR;
    }

    for (;;) {
        struct url u = {.len = 0, .overflow = 0};
        struct nomad_response resp;

        url_add(&u, "/v1/vars?per_page=%d", NOMAD_VAR_LIST_PAGE_SIZE);
        if (url_add_escaped(&u, "namespace", ns, err, errsz) != 0 ||
            (prefix != NULL && prefix[0] != '\0' && url_add_escaped(&u, "prefix", prefix, err, errsz) != 0) ||
            (token != NULL && url_add_escaped(&u, "next_token", token, err, errsz) != 0) ||
            finish_url(&u, err, errsz) != 0)
            goto out;

        if (nomad_get(client, u.text, &resp) != 0) {
            set_err(err, errsz, "%s", resp.error);
            nomad_response_free(&resp);
            goto out;
        }
        if (add_page(resp.body, paths, n, &cap, err, errsz) != 0) {
            nomad_response_free(&resp);
            goto out;
        }
        if (resp.next_token == NULL) {
            nomad_response_free(&resp);
            break;
        }
        /* A server that hands back the same token would keep this loop going forever. */
        if (token != NULL && strcmp(token, resp.next_token) == 0) {
            set_err(err, errsz, "GET /v1/vars: the server returned next token \"%s\" twice: stopping the listing",
                    quoted(token, quote));
            nomad_response_free(&resp);
            goto out;
        }
        free(token);
        token = resp.next_token;
        resp.next_token = NULL;
        nomad_response_free(&resp);
    }
    rc = VAR_OK;

out:
    free(token);
    if (rc != VAR_OK) {
        nomad_var_paths_free(*paths, *n);
        *paths = NULL;
        *n = 0;
    }
    return rc;
}

/* Check a lock ID: 1 to LOCK_ID_MAX printable characters. Returns 0, or -1 with err set. */
static int check_lock_id(const char *lock_id, const char *path, char *err, size_t errsz)
{
    char quote[QUOTE_MAX + 4];
    size_t len = 0;

    if (lock_id != NULL) {
        while (lock_id[len] != '\0' && len <= LOCK_ID_MAX && isgraph((unsigned char)lock_id[len]))
            len++;
        if (len > 0 && len <= LOCK_ID_MAX && lock_id[len] == '\0')
            return 0;
    }
    set_err(err, errsz,
            "lock ID for variable \"%s\" is missing or invalid: pass the lock_id that nomad_var_lock_acquire() returned",
            quoted(path, quote));
    return -1;
}

/* Body {"Namespace":ns,"Lock":{"ID":lock_id}} for renew and release; NULL when memory ran out. */
static cJSON *lock_id_body(const char *ns, const char *lock_id)
{
    cJSON *body = new_body(ns, NULL);
    cJSON *lock = body != NULL ? cJSON_AddObjectToObject(body, "Lock") : NULL;

    if (lock == NULL || cJSON_AddStringToObject(lock, "ID", lock_id) == NULL) {
        cJSON_Delete(body);
        return NULL;
    }
    return body;
}

enum nomad_var_result nomad_var_lock_acquire(struct nomad_client *client, const char *ns, const char *path,
                                             long ttl_s, long lock_delay_s, const cJSON *items,
                                             struct nomad_var *out, char *err, size_t errsz)
{
    char quote[QUOTE_MAX + 4];
    char duration[32];
    char detail[512];
    struct url u;
    cJSON *body = NULL;
    cJSON *lock;
    enum nomad_var_result rc = VAR_ERR;

    begin(out, err, errsz);
    if (start_var_url(&u, ns, path, err, errsz) != 0)
        return VAR_ERR;
    if (items != NULL && check_items(items, path, err, errsz) != 0)
        return VAR_ERR;
    if (ttl_s <= 0 || lock_delay_s < 0) {
        set_err(err, errsz,
                "lock on variable \"%s\": TTL %ld s and lock delay %ld s are invalid: the TTL must be positive and the delay at least 0",
                quoted(path, quote), ttl_s, lock_delay_s);
        return VAR_ERR;
    }
    url_add(&u, "&lock-acquire");
    if (finish_url(&u, err, errsz) != 0)
        return VAR_ERR;

    body = new_body(ns, items);
    lock = body != NULL ? cJSON_AddObjectToObject(body, "Lock") : NULL;
    if (lock == NULL)
        goto no_memory;
    snprintf(duration, sizeof(duration), "%lds", ttl_s);
    if (cJSON_AddStringToObject(lock, "TTL", duration) == NULL)
        goto no_memory;
    snprintf(duration, sizeof(duration), "%lds", lock_delay_s);
    if (cJSON_AddStringToObject(lock, "LockDelay", duration) == NULL)
        goto no_memory;

    rc = send_write(client, "PUT", &u, body, 0, out, detail, sizeof(detail), err, errsz);
    if (rc == VAR_OK && out->lock_id == NULL) {
        set_err(err, errsz, "PUT /v1/var/%s?lock-acquire: the response names no lock ID: check that the server is Nomad 1.7 or later",
                quoted(path, quote));
        rc = VAR_ERR;
    } else if (rc == VAR_CONFLICT) {
        set_err(err, errsz,
                "lock on variable \"%s\" in namespace \"%s\" is held by another holder or its lock delay is still running: retry after the holder's TTL and lock delay",
                quoted(path, quote), namespace_or_default(ns));
    } else if (rc == VAR_NOT_FOUND) {
        set_err(err, errsz, "%s", detail);
        rc = VAR_ERR;
    }
    goto out;

no_memory:
    set_err(err, errsz, "cannot build the lock request body for variable \"%s\": out of memory", quoted(path, quote));
    rc = VAR_ERR;
out:
    cJSON_Delete(body);
    return rc;
}

/* Shared part of renew and release; query is "lock-renew" or "lock-release". */
static enum nomad_var_result lock_update(struct nomad_client *client, const char *ns, const char *path,
                                         const char *lock_id, const char *query, char *err, size_t errsz)
{
    struct url u;
    struct nomad_var returned;
    cJSON *body;
    char detail[512];
    enum nomad_var_result rc;

    begin(&returned, err, errsz);
    if (start_var_url(&u, ns, path, err, errsz) != 0 || check_lock_id(lock_id, path, err, errsz) != 0)
        return VAR_ERR;
    url_add(&u, "&%s", query);
    if (finish_url(&u, err, errsz) != 0)
        return VAR_ERR;
    body = lock_id_body(ns, lock_id);
    if (body == NULL) {
        set_err(err, errsz, "cannot build the %s request body for variable \"%s\": out of memory", query, path);
        return VAR_ERR;
    }
    rc = send_write(client, "PUT", &u, body, 1, &returned, detail, sizeof(detail), err, errsz);
    cJSON_Delete(body);
    nomad_var_free(&returned);
    return rc;
}

enum nomad_var_result nomad_var_lock_renew(struct nomad_client *client, const char *ns, const char *path,
                                           const char *lock_id, char *err, size_t errsz)
{
    char quote[QUOTE_MAX + 4];
    enum nomad_var_result rc = lock_update(client, ns, path, lock_id, "lock-renew", err, errsz);

    if (rc == VAR_CONFLICT)
        set_err(err, errsz,
                "lock on variable \"%s\" in namespace \"%s\" was lost (expired, released or taken over): stop the work it protects and acquire it again",
                quoted(path, quote), namespace_or_default(ns));
    return rc;
}

enum nomad_var_result nomad_var_lock_release(struct nomad_client *client, const char *ns, const char *path,
                                             const char *lock_id, char *err, size_t errsz)
{
    char quote[QUOTE_MAX + 4];
    enum nomad_var_result rc = lock_update(client, ns, path, lock_id, "lock-release", err, errsz);

    if (rc == VAR_CONFLICT)
        set_err(err, errsz,
                "lock on variable \"%s\" in namespace \"%s\" is not held with this lock ID (it expired, was released already or another holder took it): nothing to release",
                quoted(path, quote), namespace_or_default(ns));
    return rc;
}
