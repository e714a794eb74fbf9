/*
 * client_restart and server_restart: restart a Nomad agent whose host is
 * alive but whose agent is down (client) or failed (server).
 *
 * Every restart writes an order Variable <prefix>/restart/<target> with
 * check-and-set first. The order is the cluster-wide record of a restart in
 * flight, so the ordering guard and a new lock holder see it too. Then:
 *   exec        the cluster scope runs the configured argument vector, with
 *               {node_id}, {node_name} and {address} filled in, no shell;
 *   node-agent  the node scope on that host sees the order (blocking query),
 *               runs its local restart command and writes the outcome back.
 * The journal row stays `executing` until poll() sees the node ready (or
 * the server alive and healthy), or the ready timeout passes.
 */
#define _POSIX_C_SOURCE 200809L
#include "action.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../controller/log.h"
#include "../controller/proc.h"
#include "../controller/variables.h"
#include "../policies/policy.h"

static int is_client(const struct journal_action *a)
{
    return strcmp(a->kind, "client_restart") == 0;
}

/* A value from the row's evidence, or "" when absent. */
static const char *evidence_field(const cJSON *evidence, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(evidence, key);

    return cJSON_IsString(v) ? v->valuestring : "";
}

/*
 * The last part of the order's path, <prefix>/restart/<key>. A client's order
 * sits under its node ID, which the node scope on that host watches. A server
 * restart run by the node-agent executor goes to the node ID of the client on
 * the same host for the same reason. Otherwise a server's order is
 * "server-<member name>" with every character a Variable path may not hold
 * replaced by '-', because member names contain dots ("nomad-1.global").
 * Returns 0, or -1 with err filled when no valid key exists.
 */
static int order_key(const struct policy *p, const struct journal_action *a, char *key, size_t keysz,
                     char *err, size_t errsz)
{
    cJSON *evidence;
    size_t len;

    if (is_client(a)) {
        snprintf(key, keysz, "%s", a->target);
        return 0;
    }
    if (p->server_restart.executor == EXECUTOR_NODE_AGENT) {
        evidence = a->evidence != NULL ? cJSON_Parse(a->evidence) : NULL;
        snprintf(key, keysz, "%s", evidence_field(evidence, "node_id"));
        cJSON_Delete(evidence);
        if (!is_uuid(key)) {
            snprintf(err, errsz, "server %s has no client node on its host, so no node scope can take "
                     "its restart order; set rules.server_restart.executor = \"exec\" and a command",
                     a->target);
            return -1;
        }
        return 0;
    }
    snprintf(key, keysz, "server-%s", a->target);
    len = strlen(key);
    for (size_t i = 0; i < len; i++) {
        if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_~", key[i]) == NULL)
            key[i] = '-';
    }
    return 0;
}

static int order_path(const struct policy *p, const struct journal_action *a, char *buf, size_t bufsz,
                      char *err, size_t errsz)
{
    char key[160];

    if (order_key(p, a, key, sizeof(key), err, errsz) != 0)
        return -1;
    snprintf(buf, bufsz, "%s/restart/%s", p->coord_prefix, key);
    return 0;
}

/* Values that go into a command line must be plain names or addresses. */
static int safe_value(const char *v)
{
    if (v[0] == '\0' || strlen(v) > 255)
        return 0;
    return strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-") == strlen(v);
}

/* Expand {node_id}, {node_name} and {address} in one argument. NULL on a bad value or no memory. */
static char *expand(const char *arg, const char *node_id, const char *node_name, const char *address)
{
    static const char *const names[] = {"{node_id}", "{node_name}", "{address}"};
    const char *values[] = {node_id, node_name, address};
    size_t cap = strlen(arg) + 1;
    char *out;
    size_t used = 0;

    for (int k = 0; k < 3; k++)
        cap += strlen(values[k]) * 4;
    out = malloc(cap);
    if (out == NULL)
        return NULL;
    while (*arg != '\0') {
        int matched = 0;

        for (int k = 0; k < 3 && !matched; k++) {
            size_t len = strlen(names[k]);

            if (strncmp(arg, names[k], len) != 0)
                continue;
            if (!safe_value(values[k])) {
                free(out);
                return NULL;
            }
            memcpy(out + used, values[k], strlen(values[k]));
            used += strlen(values[k]);
            arg += len;
            matched = 1;
        }
        if (!matched)
            out[used++] = *arg++;
    }
    out[used] = '\0';
    return out;
}

/* Write the order with check-and-set at *index (0: create). Returns 0, or -1 with err. */
static int write_order(const struct action_env *env, const struct journal_action *a, const char *state,
                       const char *outcome, long long *index, char *err, size_t errsz)
{
    const struct policy *p = env->policy;
    struct nomad_var out;
    char path[256];
    char text[64];
    cJSON *items = cJSON_CreateObject();
    enum nomad_var_result rc;

    if (order_path(p, a, path, sizeof(path), err, errsz) != 0) {
        cJSON_Delete(items);
        return -1;
    }
    snprintf(text, sizeof(text), "%lld", a->id);
    cJSON_AddStringToObject(items, "order_id", text);
    cJSON_AddStringToObject(items, "kind", a->kind);
    cJSON_AddStringToObject(items, "target", a->target);
    snprintf(text, sizeof(text), "%lld", a->updated_at);
    cJSON_AddStringToObject(items, "requested_at", text);
    cJSON_AddStringToObject(items, "state", state);
    if (outcome != NULL)
        cJSON_AddStringToObject(items, "outcome", outcome);
    snprintf(text, sizeof(text), "%lld", env->now);
    cJSON_AddStringToObject(items, "updated_at", text);
    {
        const struct policy_client_restart *c = &p->client_restart;
        enum restart_executor ex = is_client(a) ? c->executor : p->server_restart.executor;

        cJSON_AddStringToObject(items, "executor", ex == EXECUTOR_EXEC ? "exec" : "node-agent");
    }

    memset(&out, 0, sizeof(out));
    rc = nomad_var_write(env->client, p->coord_namespace, path, items, *index, &out, err, errsz);
    cJSON_Delete(items);
    if (rc == VAR_OK)
        *index = (long long)out.modify_index;
    else if (rc == VAR_CONFLICT)
        snprintf(err, errsz, "the order Variable %s changed under us (another controller instance?); "
                 "not sent", path);
    nomad_var_free(&out);
    return rc == VAR_OK ? 0 : -1;
}

static int run_command(const struct action_env *env, const struct journal_action *a, const cJSON *evidence,
                       char *err, size_t errsz)
{
    const struct policy *p = env->policy;
    const struct policy_argv *cmd = is_client(a) ? &p->client_restart.command : &p->server_restart.command;
    const char *node_id = evidence_field(evidence, "node_id");
    const char *name = is_client(a) ? evidence_field(evidence, "node_name") : evidence_field(evidence, "server");
    const char *address = evidence_field(evidence, "address");
    struct proc_result res;
    char **argv;
    char brief[256];
    int rc = -1;

    if (cmd->argc == 0) {
        snprintf(err, errsz, "the exec executor has no command; set rules.%s.command", a->kind);
        return -1;
    }
    argv = calloc(cmd->argc + 1, sizeof(*argv));
    if (argv == NULL) {
        snprintf(err, errsz, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < cmd->argc; i++) {
        argv[i] = expand(cmd->argv[i], node_id[0] ? node_id : a->target, name, address);
        if (argv[i] == NULL) {
            snprintf(err, errsz, "cannot fill argument %zu of the restart command: a placeholder value "
                     "from Nomad is empty or has characters outside [A-Za-z0-9._:-]", i + 1);
            goto out;
        }
    }
    if (proc_run((const char *const *)argv, NULL, NULL, 0, 120000, 64 * 1024, &res, err, errsz) != 0) {
        proc_result_free(&res);
        goto out;
    }
    if (res.exit_code != 0)
        snprintf(err, errsz, "restart command %s exited with %d: %s", argv[0], res.exit_code,
                 proc_brief(&res, brief, sizeof(brief)));
    else
        rc = 0;
    log_info("restart", "action id=%lld kind=%s target=%s command=%s exit=%d", a->id, a->kind, a->target,
             argv[0], res.exit_code);
    proc_result_free(&res);
out:
    for (size_t i = 0; i < cmd->argc; i++)
        free(argv[i]);
    free(argv);
    return rc;
}

static int precheck(const struct snapshot *s, const char *target, char *why, size_t whysz)
{
    /* The ordering guard decides; nothing else depends on the whole snapshot. */
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
    char path[96];

    if (!is_client(a))
        return RECHECK_HOLDS;   /* the server's state was read this pass; its restart is idempotent */
    if (!is_uuid(a->target)) {
        snprintf(why, whysz, "target %s is not a node ID", a->target);
        return RECHECK_CHANGED;
    }
    snprintf(path, sizeof(path), "/v1/node/%s", a->target);
    nomad_response_init(&resp);
    if (nomad_get(env->client, path, &resp) == 0) {
        cJSON *root = cJSON_ParseWithLength(resp.body, resp.body_len);
        const cJSON *status = cJSON_GetObjectItemCaseSensitive(root, "Status");
        enum node_status st = node_status_parse(cJSON_IsString(status) ? status->valuestring : NULL);

        if (st == NODE_DOWN || st == NODE_DISCONNECTED) {
            result = RECHECK_HOLDS;
        } else {
            snprintf(why, whysz, "node %s is now %s", a->target, node_status_name(st));
            result = RECHECK_CHANGED;
        }
        cJSON_Delete(root);
    } else {
        snprintf(why, whysz, "%s", resp.error);
    }
    nomad_response_free(&resp);
    return result;
}

static long ready_timeout(const struct policy *p, const struct journal_action *a)
{
    return is_client(a) ? p->client_restart.ready_timeout_s : p->server_restart.ready_timeout_s;
}

/* 1 when Nomad reports that the cluster has no leader, 0 otherwise (a leader, or another failure). */
static int cluster_has_no_leader(struct nomad_client *client)
{
    struct nomad_response resp;
    int none;

    nomad_response_init(&resp);
    if (nomad_get(client, "/v1/status/leader", &resp) == 0)
        none = resp.body != NULL && strcmp(resp.body, "\"\"") == 0;
    else
        none = resp.result == NOMAD_ERR_NO_LEADER;
    nomad_response_free(&resp);
    return none;
}

/*
 * Without a leader no Variable can be read or written. A failed server is
 * then restarted without its order: restarting it is how the quorum comes
 * back. Only the exec executor can do that, because the node-agent executor
 * works through the order. Returns 1 to go on without the order, else 0.
 */
static int may_restart_without_order(const struct action_env *env, const struct journal_action *a,
                                     enum restart_executor ex, const char *path, const char *read_error)
{
    if (is_client(a) || ex != EXECUTOR_EXEC || !cluster_has_no_leader(env->client))
        return 0;
    log_warn("restart", "action id=%lld: the cluster has no leader, so the order %s cannot be written (%s); "
             "restarting server %s without it", a->id, path, read_error, a->target);
    return 1;
}

static int execute(const struct action_env *env, const struct journal_action *a, char *note, size_t notesz,
                   char *err, size_t errsz)
{
    const struct policy *p = env->policy;
    enum restart_executor ex = is_client(a) ? p->client_restart.executor : p->server_restart.executor;
    cJSON *evidence = a->evidence ? cJSON_Parse(a->evidence) : NULL;
    struct nomad_var cur;
    long long index = 0;
    int with_order = 1;
    char path[256];
    enum nomad_var_result rc;
    int result = -1;

    if (order_path(p, a, path, sizeof(path), err, errsz) != 0)
        goto out;
    memset(&cur, 0, sizeof(cur));
    rc = nomad_var_read(env->client, p->coord_namespace, path, 0, NULL, &cur, err, errsz);
    if (rc == VAR_OK) {
        const cJSON *state = cJSON_GetObjectItemCaseSensitive(cur.items, "state");
        const char *requested = evidence_field(cur.items, "requested_at");
        long long age = requested[0] != '\0' ? env->now - strtoll(requested, NULL, 10) : 0;

        /*
         * An unfinished order within its ready timeout is another restart in
         * flight. Past it, the instance that wrote it stopped before it could
         * fail it, and the guards no longer count it, so it is replaced.
         */
        if (cJSON_IsString(state) && (strcmp(state->valuestring, "pending") == 0 ||
                                      strcmp(state->valuestring, "running") == 0)) {
            if (age <= ready_timeout(p, a)) {
                snprintf(err, errsz, "an order for %s is already %s in %s; not sent twice", a->target,
                         state->valuestring, path);
                nomad_var_free(&cur);
                goto out;
            }
            log_warn("restart", "action id=%lld: order %s has been %s for %llds, past the ready timeout; "
                     "replacing it", a->id, path, state->valuestring, age);
        }
        index = (long long)cur.modify_index;
    } else if (rc != VAR_NOT_FOUND) {
        nomad_var_free(&cur);
        if (!may_restart_without_order(env, a, ex, path, err))
            goto out;
        with_order = 0;
    }
    nomad_var_free(&cur);

    if (with_order && write_order(env, a, "pending", NULL, &index, err, errsz) != 0)
        goto out;
    if (ex == EXECUTOR_NODE_AGENT) {
        snprintf(note, notesz, "order written to %s; the node scope on the host carries it out", path);
        result = 1;
        goto out;
    }
    if (run_command(env, a, evidence, err, errsz) != 0) {
        char ignored[256];

        if (with_order)
            write_order(env, a, "failed", err, &index, ignored, sizeof(ignored));
        goto out;
    }
    if (with_order && write_order(env, a, "running", "restart command ran", &index, err, errsz) != 0)
        log_warn("restart", "action id=%lld: updating order %s failed: %s", a->id, path, err);
    if (with_order)
        snprintf(note, notesz, "restart command ran; waiting for %s to come back", a->target);
    else
        snprintf(note, notesz, "restart command ran without an order (no cluster leader); waiting for %s "
                 "to come back", a->target);
    result = 1;
out:
    cJSON_Delete(evidence);
    return result;
}

static enum resolve_result resolve_interrupted(const struct action_env *env, const struct journal_action *a,
                                               char *note, size_t notesz)
{
    (void)env;
    (void)a;
    snprintf(note, notesz, "a restart waits for its target; the next pass polls it");
    return RESOLVE_PENDING;
}

/* Mark the order finished; a failure to do so is logged, because the journal row is what counts here. */
static void finish_order(const struct action_env *env, const struct journal_action *a, const char *state,
                         const char *outcome)
{
    char err[512];
    long long index = -1;

    if (write_order(env, a, state, outcome, &index, err, sizeof(err)) != 0)
        log_warn("restart", "action id=%lld: marking order %s failed: %s", a->id, state, err);
}

static enum poll_result poll(const struct action_env *env, const struct snapshot *s, const struct journal_action *a,
                             char *note, size_t notesz)
{
    const struct policy *p = env->policy;
    const struct snap_order *order = NULL;
    long timeout = ready_timeout(p, a);
    long long started = a->updated_at;
    char d[32];
    char key[160];
    char ignored[256];
    int ready = 0;

    if (order_key(p, a, key, sizeof(key), ignored, sizeof(ignored)) == 0)
        order = snapshot_find_order(s, key);
    if (is_client(a)) {
        const struct snap_node *n = snapshot_find_node(s, a->target);

        ready = n != NULL && n->status == NODE_READY && n->status_updated_at >= started - 1;
        /* The node list carries no StatusUpdatedAt; ready after the order is what matters. */
        if (n != NULL && n->status == NODE_READY && n->status_updated_at == 0)
            ready = 1;
    } else {
        for (size_t i = 0; i < s->n_servers; i++) {
            const struct snap_server *srv = &s->servers[i];

            /* Health unknown (autopilot not read, as without a leader) is not back yet. */
            if (srv->name != NULL && strcmp(srv->name, a->target) == 0)
                ready = srv->serf_status != NULL && strcmp(srv->serf_status, "alive") == 0 && srv->healthy == 1;
        }
    }
    if (ready) {
        snprintf(note, notesz, "%s is back after the restart", a->target);
        finish_order(env, a, "done", note);
        return POLL_DONE;
    }
    if (order != NULL && order->state != NULL && strcmp(order->state, "failed") == 0) {
        snprintf(note, notesz, "the restart order failed on the host; see %s/restart/%s", p->coord_prefix,
                 key);
        return POLL_FAILED;
    }
    if (env->now - started > timeout) {
        snprintf(note, notesz, "%s did not come back within %s; the restart sequence stops for it until "
                 "the host is fixed", a->target, policy_format_duration(timeout, d, sizeof(d)));
        finish_order(env, a, "failed", note);
        return POLL_FAILED;
    }
    return POLL_WAITING;
}

const struct action_type action_client_restart = {
    .name = "client_restart",
    .scope = "cluster",
    .touches_nodes = 1,
    .precheck = precheck,
    .recheck = recheck,
    .execute = execute,
    .resolve_interrupted = resolve_interrupted,
    .poll = poll,
};

const struct action_type action_server_restart = {
    .name = "server_restart",
    .scope = "cluster",
    .touches_nodes = 0,
    .precheck = precheck,
    .recheck = recheck,
    .execute = execute,
    .resolve_interrupted = resolve_interrupted,
    .poll = poll,
};
