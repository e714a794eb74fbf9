/*
 * system_gc: PUT /v1/system/gc, Nomad's forced garbage collection of
 * terminal jobs, evaluations, allocations and deployments.
 *
 * A forced GC also purges down nodes whose allocations are all terminal, so
 * it never runs while any node is down or disconnected: that would erase the
 * evidence of a node that may come back, and its allocations' history.
 */
#define _POSIX_C_SOURCE 200809L
#include "action.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

static int precheck(const struct snapshot *s, const char *target, char *why, size_t whysz)
{
    size_t unhealthy;

    (void)target;
    if (!s->nodes_ok) {
        snprintf(why, whysz, "the node list was not read completely, so down nodes cannot be ruled out");
        return 1;
    }
    unhealthy = snapshot_unhealthy_nodes(s);
    if (unhealthy > 0) {
        snprintf(why, whysz, "%zu node(s) down or disconnected; a forced GC would also purge them",
                 unhealthy);
        return 1;
    }
    return 0;
}

static enum recheck_result recheck(const struct action_env *env, const struct journal_action *a,
                                   char *why, size_t whysz)
{
    struct nomad_response resp;
    enum recheck_result result = RECHECK_READ_FAILED;

    (void)a;
    nomad_response_init(&resp);
    if (nomad_get(env->client, "/v1/nodes", &resp) == 0) {
        cJSON *root = cJSON_ParseWithLength(resp.body, resp.body_len);
        const cJSON *node;
        int unhealthy = 0;

        if (!cJSON_IsArray(root)) {
            snprintf(why, whysz, "GET /v1/nodes: expected a JSON array");
        } else {
            cJSON_ArrayForEach(node, root) {
                const cJSON *status = cJSON_GetObjectItemCaseSensitive(node, "Status");
                enum node_status st = node_status_parse(cJSON_IsString(status) ? status->valuestring : NULL);

                if (st == NODE_DOWN || st == NODE_DISCONNECTED)
                    unhealthy++;
            }
            if (unhealthy > 0) {
                snprintf(why, whysz, "%d node(s) are now down or disconnected", unhealthy);
                result = RECHECK_CHANGED;
            } else {
                result = RECHECK_HOLDS;
            }
        }
        cJSON_Delete(root);
    } else {
        snprintf(why, whysz, "%s", resp.error);
    }
    nomad_response_free(&resp);
    return result;
}

static int execute(const struct action_env *env, const struct journal_action *a, char *note,
                   size_t notesz, char *err, size_t errsz)
{
    struct nomad_response resp;
    int rc;

    (void)a;
    nomad_response_init(&resp);
    rc = nomad_request(env->client, "PUT", "/v1/system/gc", NULL, &resp);
    if (rc == 0)
        snprintf(note, notesz, "forced GC requested; Nomad runs it asynchronously");
    else
        snprintf(err, errsz, "%s", resp.error);
    nomad_response_free(&resp);
    return rc == 0 ? 0 : -1;
}

static enum resolve_result resolve_interrupted(const struct action_env *env,
                                               const struct journal_action *a, char *note,
                                               size_t notesz)
{
    (void)env;
    (void)a;
    snprintf(note, notesz, "interrupted; a forced GC leaves nothing to read back, so its outcome "
             "is unknown; it is not repeated blindly and a later pass proposes it again if the "
             "thresholds are still exceeded");
    return RESOLVE_UNKNOWN;
}

const struct action_type action_system_gc = {
    .name = "system_gc",
    .scope = "cluster",
    .touches_nodes = 0,
    .precheck = precheck,
    .recheck = recheck,
    .execute = execute,
    .resolve_interrupted = resolve_interrupted,
};
