/*
 * netns_clear: remove the network state an allocation left on this host
 * (namespace, CNI reservations and cache, iptables chains and rules, veth)
 * after the allocation became client-terminal or disappeared from Nomad.
 *
 * The cleanup itself is host_cleanup_alloc(); this file decides whether it
 * may run and journals each of its steps under the action's row.
 */
#define _POSIX_C_SOURCE 200809L
#include "action.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../controller/log.h"

/* Describe processes that hold target's namespace, named or not. Returns 1 when held. */
static int namespace_held(const struct host_inventory *inv, const char *target, char *why, size_t whysz)
{
    for (size_t i = 0; i < inv->n_netns; i++) {
        const struct host_netns *ns = &inv->netns[i];
        size_t used;

        if (strcmp(ns->alloc_id, target) != 0 || ns->n_holders == 0)
            continue;
        used = (size_t)snprintf(why, whysz, "namespace %s is still used by process(es)", ns->path);
        for (size_t k = 0; k < ns->n_holders && k < 8 && used < whysz; k++)
            used += (size_t)snprintf(why + used, whysz - used, " %d", (int)ns->holders[k]);
        if (used < whysz)
            snprintf(why + used, whysz - used, "; a task of the allocation may still run: stop it, "
                     "then the next pass removes the rest");
        return 1;
    }
    /* A process can keep an unlinked namespace alive; the veth's peer is then still inside it. */
    for (size_t i = 0; i < inv->n_veths; i++) {
        const struct host_veth *v = &inv->veths[i];

        if (strcmp(v->alloc_id, target) == 0 && v->peer_netns == NULL && v->link_netnsid >= 0) {
            snprintf(why, whysz, "veth %s still leads into a namespace that has no name in the "
                     "netns directory, so a process keeps it alive; releasing its IP now could hand "
                     "the address out twice", v->name);
            return 1;
        }
    }
    return 0;
}

static int precheck(const struct snapshot *s, const char *target, char *why, size_t whysz)
{
    if (!s->host_read) {
        snprintf(why, whysz, "the host was not inventoried");
        return 1;
    }
    return namespace_held(&s->host, target, why, whysz);
}

static enum recheck_result recheck(const struct action_env *env, const struct journal_action *a,
                                   char *why, size_t whysz)
{
    struct host_inventory inv;
    struct nomad_response resp;
    enum recheck_result result = RECHECK_READ_FAILED;
    char path[96];

    if (!is_uuid(a->target)) {
        snprintf(why, whysz, "the journal row's target %s is not an allocation ID", a->target);
        return RECHECK_CHANGED;
    }
    snprintf(path, sizeof(path), "/v1/allocation/%s", a->target);
    nomad_response_init(&resp);
    if (nomad_get(env->client, path, &resp) == 0) {
        cJSON *root = cJSON_ParseWithLength(resp.body, resp.body_len);
        const cJSON *status = cJSON_GetObjectItemCaseSensitive(root, "ClientStatus");

        if (!cJSON_IsString(status))
            snprintf(why, whysz, "GET %s: response has no ClientStatus", path);
        else if (alloc_status_is_terminal(alloc_status_parse(status->valuestring)))
            result = RECHECK_HOLDS;
        else {
            snprintf(why, whysz, "allocation %s is now %s", a->target, status->valuestring);
            result = RECHECK_CHANGED;
        }
        cJSON_Delete(root);
    } else if (resp.result == NOMAD_ERR_STATUS && resp.status == 404) {
        result = RECHECK_HOLDS;
    } else {
        snprintf(why, whysz, "%s", resp.error);
    }
    nomad_response_free(&resp);
    if (result != RECHECK_HOLDS)
        return result;

    /* The host side: no process may have entered the namespace since the pass read the host. */
    memset(&inv, 0, sizeof(inv));
    if (host_inventory_read(env->host, &inv) != 0) {
        snprintf(why, whysz, "out of memory re-reading the host");
        return RECHECK_READ_FAILED;
    }
    if (!host_inventory_complete(&inv)) {
        snprintf(why, whysz, "re-reading the host failed");
        for (int i = 0; i < HOST_SRC_COUNT; i++) {
            if (!inv.sources[i].ok) {
                snprintf(why, whysz, "re-reading the host failed: %s: %s", inv.sources[i].name,
                         inv.sources[i].error ? inv.sources[i].error : "");
                break;
            }
        }
        result = RECHECK_READ_FAILED;
    } else if (namespace_held(&inv, a->target, why, whysz)) {
        result = RECHECK_CHANGED;
    }
    host_inventory_free(&inv);
    return result;
}

static int execute(const struct action_env *env, const struct journal_action *a, char *note,
                   size_t notesz, char *err, size_t errsz)
{
    struct host_cleanup_report report;
    size_t ok = 0, skipped = 0, failed = 0;
    char jerr[512];
    int rc;

    memset(&report, 0, sizeof(report));
    rc = host_cleanup_alloc(env->host, a->target, &report);
    for (size_t i = 0; i < report.n_steps; i++) {
        const struct host_step *st = &report.steps[i];
        const char *outcome = "failed";

        if (st->skipped)
            outcome = "skipped";
        else if (st->ok)
            outcome = "ok";

        ok += st->ok && !st->skipped;
        skipped += st->skipped;
        failed += !st->ok && !st->skipped;
        log_info("netns_clear", "action id=%lld alloc=%s step=%s outcome=%s: %s", a->id, a->target,
                 st->name, outcome, st->detail ? st->detail : "");
        if (env->journal != NULL &&
            journal_step_add(env->journal, a->id, st->name, outcome, st->detail, env->now, jerr,
                             sizeof(jerr)) != JOURNAL_OK)
            log_error("netns_clear", "action id=%lld: journaling step %s failed: %s", a->id, st->name, jerr);
    }

    if (rc == 0) {
        snprintf(note, notesz, "network state removed: %zu step(s) done, %zu had nothing to do", ok, skipped);
    } else if (rc > 0 && report.complete) {
        /* A step failed (an unusable cache, say) but the sweep removed everything anyway. */
        snprintf(note, notesz, "network state removed, though %zu step(s) failed (see the steps); "
                 "nothing of the allocation is left", failed);
        rc = 0;
    } else if (rc > 0) {
        char *remaining = report.remaining ? cJSON_PrintUnformatted(report.remaining) : NULL;

        snprintf(err, errsz, "%zu step(s) failed; still on the host: %s", failed,
                 remaining ? remaining : "(see the steps)");
        free(remaining);
        rc = -1;
    } else {
        snprintf(err, errsz, "out of memory during the cleanup");
    }
    host_cleanup_report_free(&report);
    return rc == 0 ? 0 : -1;
}

static enum resolve_result resolve_interrupted(const struct action_env *env,
                                               const struct journal_action *a, char *note,
                                               size_t notesz)
{
    struct host_inventory inv;
    enum resolve_result result = RESOLVE_READ_FAILED;
    cJSON *left;

    memset(&inv, 0, sizeof(inv));
    if (env->host == NULL || host_inventory_read(env->host, &inv) != 0) {
        snprintf(note, notesz, "the host could not be re-read");
        return RESOLVE_READ_FAILED;
    }
    if (!host_inventory_complete(&inv)) {
        snprintf(note, notesz, "the host could not be re-read completely");
        host_inventory_free(&inv);
        return RESOLVE_READ_FAILED;
    }
    left = host_inventory_alloc_json(&inv, a->target);
    if (left != NULL) {
        char (*ids)[HOST_ID_LEN + 1] = NULL;
        size_t n = 0;
        int present = 0;

        if (host_inventory_alloc_ids(&inv, &ids, &n) == 0) {
            for (size_t i = 0; i < n; i++)
                present |= strcmp(ids[i], a->target) == 0;
            free(ids);
            if (present) {
                snprintf(note, notesz, "interrupted before the cleanup finished; parts remain on the "
                         "host and a later pass proposes the rest");
                result = RESOLVE_NOT_DONE;
            } else {
                snprintf(note, notesz, "interrupted; nothing of the allocation is left on the host");
                result = RESOLVE_DONE;
            }
        }
        cJSON_Delete(left);
    }
    host_inventory_free(&inv);
    return result;
}

const struct action_type action_netns_clear = {
    .name = "netns_clear",
    .scope = "node",
    /* Local evidence only: the node scope does not list the cluster's nodes, so no breaker share. */
    .touches_nodes = 0,
    .precheck = precheck,
    .recheck = recheck,
    .execute = execute,
    .resolve_interrupted = resolve_interrupted,
};
