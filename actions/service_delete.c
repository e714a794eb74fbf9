/*
 * service_delete: remove a native service registration whose allocation is
 * client-terminal (complete, failed, lost) or gone (404).
 *
 * Nomad deletes a registration by (namespace, ID); the name segment of
 * DELETE /v1/service/<name>/<id> is not used, but ?namespace= must be the
 * registration's own. "service registration not found" means another actor
 * removed it first, which is the outcome we wanted.
 */
#define _POSIX_C_SOURCE 200809L
#include "action.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int precheck(const struct snapshot *s, const char *target, char *why, size_t whysz)
{
    (void)s;
    (void)target;
    (void)why;
    (void)whysz;
    return 0;
}

static enum recheck_result recheck(const struct action_env *env, const struct journal_action *a,
                                   char *why, size_t whysz)
{
    struct nomad_response resp;
    enum recheck_result result = RECHECK_READ_FAILED;
    char path[256];
    char *ns;

    if (a->alloc_id == NULL || !is_uuid(a->alloc_id)) {
        snprintf(why, whysz, "the journal row has no valid allocation ID");
        return RECHECK_CHANGED;
    }
    ns = nomad_escape(a->namespace_name ? a->namespace_name : "default");
    if (ns == NULL) {
        snprintf(why, whysz, "out of memory");
        return RECHECK_READ_FAILED;
    }
    snprintf(path, sizeof(path), "/v1/allocation/%s?namespace=%s", a->alloc_id, ns);
    free(ns);

    nomad_response_init(&resp);
    if (nomad_get(env->client, path, &resp) == 0) {
        cJSON *root = cJSON_ParseWithLength(resp.body, resp.body_len);
        const cJSON *status = cJSON_GetObjectItemCaseSensitive(root, "ClientStatus");

        if (!cJSON_IsString(status)) {
            snprintf(why, whysz, "GET /v1/allocation/%s: response has no ClientStatus", a->alloc_id);
        } else if (alloc_status_is_terminal(alloc_status_parse(status->valuestring))) {
            result = RECHECK_HOLDS;
        } else {
            snprintf(why, whysz, "allocation %s is now %s", a->alloc_id, status->valuestring);
            result = RECHECK_CHANGED;
        }
        cJSON_Delete(root);
    } else if (resp.result == NOMAD_ERR_STATUS && resp.status == 404) {
        result = RECHECK_HOLDS;
    } else {
        snprintf(why, whysz, "%s", resp.error);
    }
    nomad_response_free(&resp);
    return result;
}

/* DELETE path for the row; NULL on allocation failure. */
static char *delete_path(const struct journal_action *a)
{
    char *name = nomad_escape(a->service ? a->service : "");
    char *id = nomad_escape(a->target);
    char *ns = nomad_escape(a->namespace_name ? a->namespace_name : "default");
    char *path = NULL;

    if (name != NULL && id != NULL && ns != NULL) {
        size_t len = strlen(name) + strlen(id) + strlen(ns) + 40;

        path = malloc(len);
        if (path != NULL)
            snprintf(path, len, "/v1/service/%s/%s?namespace=%s", name, id, ns);
    }
    free(name);
    free(id);
    free(ns);
    return path;
}

static int execute(const struct action_env *env, const struct journal_action *a, char *note,
                   size_t notesz, char *err, size_t errsz)
{
    struct nomad_response resp;
    char *path = delete_path(a);
    int rc = -1;

    if (path == NULL) {
        snprintf(err, errsz, "out of memory");
        return -1;
    }
    nomad_response_init(&resp);
    if (nomad_request(env->client, "DELETE", path, NULL, &resp) == 0) {
        snprintf(note, notesz, "registration deleted");
        rc = 0;
    } else if (resp.result == NOMAD_ERR_STATUS && resp.body != NULL &&
               strstr(resp.body, "service registration not found") != NULL) {
        snprintf(note, notesz, "registration was already gone");
        rc = 0;
    } else {
        snprintf(err, errsz, "%s", resp.error);
    }
    nomad_response_free(&resp);
    free(path);
    return rc;
}

static enum resolve_result resolve_interrupted(const struct action_env *env,
                                               const struct journal_action *a, char *note,
                                               size_t notesz)
{
    struct nomad_response resp;
    enum resolve_result result = RESOLVE_READ_FAILED;
    char *name = nomad_escape(a->service ? a->service : "");
    char *ns = nomad_escape(a->namespace_name ? a->namespace_name : "default");
    char path[1024];

    if (name == NULL || ns == NULL) {
        free(name);
        free(ns);
        snprintf(note, notesz, "out of memory");
        return RESOLVE_READ_FAILED;
    }
    snprintf(path, sizeof(path), "/v1/service/%s?namespace=%s", name, ns);
    free(name);
    free(ns);

    nomad_response_init(&resp);
    if (nomad_get(env->client, path, &resp) == 0) {
        cJSON *root = cJSON_ParseWithLength(resp.body, resp.body_len);
        const cJSON *item;
        int present = 0;

        if (!cJSON_IsArray(root)) {
            snprintf(note, notesz, "GET /v1/service/%s: expected a JSON array", a->service);
        } else {
            cJSON_ArrayForEach(item, root) {
                const cJSON *id = cJSON_GetObjectItemCaseSensitive(item, "ID");

                if (cJSON_IsString(id) && strcmp(id->valuestring, a->target) == 0)
                    present = 1;
            }
            if (present) {
                snprintf(note, notesz, "interrupted before the delete took effect; the registration "
                         "is still present and a later pass proposes it again");
                result = RESOLVE_NOT_DONE;
            } else {
                snprintf(note, notesz, "interrupted; the registration is gone, so the delete "
                         "took effect (or Nomad removed it)");
                result = RESOLVE_DONE;
            }
        }
        cJSON_Delete(root);
    } else {
        snprintf(note, notesz, "%s", resp.error);
    }
    nomad_response_free(&resp);
    return result;
}

const struct action_type action_service_delete = {
    .name = "service_delete",
    .scope = "cluster",
    .touches_nodes = 1,
    .precheck = precheck,
    .recheck = recheck,
    .execute = execute,
    .resolve_interrupted = resolve_interrupted,
};
