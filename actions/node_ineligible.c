/*
 * node_ineligible: mark a flapping node ineligible for scheduling
 * (POST /v1/node/<id>/eligibility), so new work stops landing on it while
 * it goes up and down, instead of restarting it in a loop. An operator marks
 * it eligible again once the cause is fixed.
 */
#define _POSIX_C_SOURCE 200809L
#include "action.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

static int precheck(const struct snapshot *s, const char *target, char *why, size_t whysz)
{
    (void)s;
    (void)target;
    (void)why;
    (void)whysz;
    return 0;
}

/* Read the node's eligibility: 1 eligible, 0 ineligible, -1 read failed (why filled). */
static int read_eligibility(const struct action_env *env, const char *node_id, char *why, size_t whysz)
{
    struct nomad_response resp;
    char path[96];
    int result = -1;

    snprintf(path, sizeof(path), "/v1/node/%s", node_id);
    nomad_response_init(&resp);
    if (nomad_get(env->client, path, &resp) == 0) {
        cJSON *root = cJSON_ParseWithLength(resp.body, resp.body_len);
        const cJSON *elig = cJSON_GetObjectItemCaseSensitive(root, "SchedulingEligibility");

        if (cJSON_IsString(elig))
            result = strcmp(elig->valuestring, "eligible") == 0;
        else
            snprintf(why, whysz, "GET %s: no SchedulingEligibility", path);
        cJSON_Delete(root);
    } else {
        snprintf(why, whysz, "%s", resp.error);
    }
    nomad_response_free(&resp);
    return result;
}

static enum recheck_result recheck(const struct action_env *env, const struct journal_action *a, char *why,
                                   size_t whysz)
{
    int eligible;

    if (!is_uuid(a->target)) {
        snprintf(why, whysz, "target %s is not a node ID", a->target);
        return RECHECK_CHANGED;
    }
    eligible = read_eligibility(env, a->target, why, whysz);
    if (eligible < 0)
        return RECHECK_READ_FAILED;
    if (eligible == 0) {
        snprintf(why, whysz, "node %s is already ineligible", a->target);
        return RECHECK_CHANGED;
    }
    return RECHECK_HOLDS;
}

static int execute(const struct action_env *env, const struct journal_action *a, char *note, size_t notesz,
                   char *err, size_t errsz)
{
    struct nomad_response resp;
    char path[96];
    int rc;

    snprintf(path, sizeof(path), "/v1/node/%s/eligibility", a->target);
    nomad_response_init(&resp);
    rc = nomad_request(env->client, "POST", path, "{\"Eligibility\":\"ineligible\"}", &resp);
    if (rc == 0)
        snprintf(note, notesz, "node marked ineligible; mark it eligible again once it is stable "
                 "(nomad node eligibility -enable %s)", a->target);
    else
        snprintf(err, errsz, "%s", resp.error);
    nomad_response_free(&resp);
    return rc == 0 ? 0 : -1;
}

static enum resolve_result resolve_interrupted(const struct action_env *env, const struct journal_action *a,
                                               char *note, size_t notesz)
{
    int eligible = read_eligibility(env, a->target, note, notesz);

    if (eligible < 0)
        return RESOLVE_READ_FAILED;
    if (eligible == 0) {
        snprintf(note, notesz, "interrupted; the node is ineligible, so the request took effect");
        return RESOLVE_DONE;
    }
    snprintf(note, notesz, "interrupted before the request took effect; the node is still eligible");
    return RESOLVE_NOT_DONE;
}

const struct action_type action_node_ineligible = {
    .name = "node_ineligible",
    .scope = "cluster",
    .touches_nodes = 1,
    .precheck = precheck,
    .recheck = recheck,
    .execute = execute,
    .resolve_interrupted = resolve_interrupted,
    .poll = NULL,
};
