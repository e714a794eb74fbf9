/* Host heartbeats and restart orders, for the node scope. */
#define _POSIX_C_SOURCE 200809L
#include "node_agent.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coordination.h"
#include "log.h"
#include "proc.h"
#include "snapshot.h"
#include "variables.h"

static struct nomad_client *new_client(const struct policy *p, const char *address, long timeout_ms,
                                       char *err, size_t errsz)
{
    struct nomad_conn_config cfg = p->nomad;

    cfg.address = (char *)address;
    cfg.request_timeout_ms = timeout_ms;
    cfg.max_retries = 0;
    return nomad_client_new(&cfg, err, errsz);
}

int node_agent_init(struct node_agent *a, const struct policy *p, struct journal *j, char *err, size_t errsz)
{
    size_t n = p->node_servers.argc > 0 ? p->node_servers.argc : 1;

    memset(a, 0, sizeof(*a));
    a->policy = p;
    a->journal = j;
    /* A hung local agent must not hold the heartbeat up: 5 s is long for a local health check. */
    a->local = new_client(p, p->nomad.address, 5000, err, errsz);
    if (a->local == NULL)
        return -1;
    a->servers = calloc(n, sizeof(*a->servers));
    if (a->servers == NULL) {
        snprintf(err, errsz, "out of memory");
        node_agent_free(a);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *address = p->node_servers.argc > 0 ? p->node_servers.argv[i] : p->nomad.address;

        a->servers[i] = new_client(p, address, p->nomad.request_timeout_ms, err, errsz);
        if (a->servers[i] == NULL) {
            node_agent_free(a);
            return -1;
        }
        a->n_servers++;
    }
    if (p->node_id != NULL && is_uuid(p->node_id))
        snprintf(a->node_id, sizeof(a->node_id), "%s", p->node_id);
    return 0;
}

void node_agent_free(struct node_agent *a)
{
    nomad_client_free(a->local);
    for (size_t i = 0; i < a->n_servers; i++)
        nomad_client_free(a->servers[i]);
    free(a->servers);
    memset(a, 0, sizeof(*a));
}

/* This node's ID from the local agent, when the configuration does not give it. */
static int resolve_node_id(struct node_agent *a)
{
    struct nomad_response resp;
    int rc = -1;

    if (a->node_id[0] != '\0')
        return 0;
    nomad_response_init(&resp);
    if (nomad_get(a->local, "/v1/agent/self", &resp) == 0) {
        cJSON *root = cJSON_ParseWithLength(resp.body, resp.body_len);
        const cJSON *client = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "stats"),
                                                               "client");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(client, "node_id");

        if (cJSON_IsString(id) && is_uuid(id->valuestring)) {
            snprintf(a->node_id, sizeof(a->node_id), "%s", id->valuestring);
            rc = 0;
        }
        cJSON_Delete(root);
    }
    if (rc != 0)
        log_warn("node-agent", "this node's ID is unknown: the local agent %s did not report it (%s); "
                 "set node.node_id", nomad_client_address(a->local), resp.error[0] ? resp.error : "no client");
    nomad_response_free(&resp);
    return rc;
}

/* The local agent's client health: 1 healthy, 0 failing or not responding (message filled). */
static int local_health(struct node_agent *a, char *message, size_t msgsz)
{
    struct nomad_response resp;
    int healthy = 0;

    nomad_response_init(&resp);
    if (nomad_get(a->local, "/v1/agent/health?type=client", &resp) == 0) {
        healthy = 1;
        snprintf(message, msgsz, "ok");
    } else {
        snprintf(message, msgsz, "%s", resp.error);
    }
    nomad_response_free(&resp);
    return healthy;
}

static int set_order_state(struct node_agent *a, const char *path, const struct nomad_var *order, const char *state,
                           const char *outcome, long long now, uint64_t *index)
{
    cJSON *items = cJSON_Duplicate(order->items, 1);
    struct nomad_var out;
    char text[32];
    char err[512];
    int rc = -1;

    if (items == NULL)
        return -1;
    cJSON_DeleteItemFromObjectCaseSensitive(items, "state");
    cJSON_AddStringToObject(items, "state", state);
    cJSON_DeleteItemFromObjectCaseSensitive(items, "outcome");
    if (outcome != NULL)
        cJSON_AddStringToObject(items, "outcome", outcome);
    snprintf(text, sizeof(text), "%lld", now);
    cJSON_DeleteItemFromObjectCaseSensitive(items, "updated_at");
    cJSON_AddStringToObject(items, "updated_at", text);
    for (size_t i = 0; i < a->n_servers && rc != 0; i++) {
        enum nomad_var_result vr;

        memset(&out, 0, sizeof(out));
        vr = nomad_var_write(a->servers[i], a->policy->coord_namespace, path, items, (long long)*index, &out,
                             err, sizeof(err));
        if (vr == VAR_OK) {
            *index = out.modify_index;
            rc = 0;
        } else if (vr == VAR_CONFLICT) {
            log_warn("node-agent", "order %s changed while its outcome was being written; leaving it", path);
            nomad_var_free(&out);
            break;
        } else {
            log_warn("node-agent", "writing order %s through %s failed: %s", path,
                     nomad_client_address(a->servers[i]), err);
        }
        nomad_var_free(&out);
    }
    cJSON_Delete(items);
    return rc;
}

/* Run the local restart command for a pending order and write the outcome back. */
static void carry_out(struct node_agent *a, const char *path, const struct nomad_var *order, long long now)
{
    const struct policy_argv *cmd = &a->policy->node_restart_command;
    const cJSON *order_id = cJSON_GetObjectItemCaseSensitive(order->items, "order_id");
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(order->items, "kind");
    struct journal_action row;
    struct proc_result res;
    uint64_t index = order->modify_index;
    long long id = 0;
    char key[128];
    char err[512] = "";
    char outcome[600];
    char brief[256];
    int ok;

    if (set_order_state(a, path, order, "running", "the node scope is running the restart command", now, &index) != 0)
        return;

    snprintf(key, sizeof(key), "node_order:%s:%s", a->node_id,
             cJSON_IsString(order_id) ? order_id->valuestring : "?");
    memset(&row, 0, sizeof(row));
    row.idem_key = key;
    row.kind = cJSON_IsString(kind) ? kind->valuestring : "client_restart";
    row.target = a->node_id;
    row.rule = "restart_order";
    row.reason = "a restart order from the cluster scope";
    row.mode = "enforce";
    row.state = JS_EXECUTING;
    if (a->journal != NULL && journal_action_insert(a->journal, &row, now, &id, err, sizeof(err)) != JOURNAL_OK)
        log_error("node-agent", "journaling the restart order failed: %s; running it anyway, the order "
                  "Variable records the outcome", err);

    log_info("node-agent", "order %s: running %s", path, cmd->argc > 0 ? cmd->argv[0] : "(no command)");
    ok = cmd->argc > 0 &&
         proc_run((const char *const *)cmd->argv, NULL, NULL, 0, 120000, 64 * 1024, &res, err, sizeof(err)) == 0 &&
         res.exit_code == 0;
    if (cmd->argc == 0)
        snprintf(outcome, sizeof(outcome), "node.restart_command is empty");
    else if (err[0] != '\0' && res.exit_code < 0)
        snprintf(outcome, sizeof(outcome), "%s", err);
    else
        snprintf(outcome, sizeof(outcome), "%s exited with %d: %s", cmd->argv[0], res.exit_code,
                 proc_brief(&res, brief, sizeof(brief)));
    if (cmd->argc > 0)
        proc_result_free(&res);

    log_info("node-agent", "order %s: %s", path, outcome);
    set_order_state(a, path, order, ok ? "done" : "failed", outcome, (long long)time(NULL), &index);
    if (a->journal != NULL && id > 0 &&
        journal_action_transition(a->journal, id, JS_EXECUTING, ok ? JS_SUCCEEDED : JS_FAILED, outcome, NULL,
                                  (long long)time(NULL), err, sizeof(err)) != JOURNAL_OK)
        log_error("node-agent", "journaling the outcome of order %s failed: %s", path, err);
}

int node_agent_step(struct node_agent *a, long long now, long wait_s)
{
    const struct policy *p = a->policy;
    struct nomad_var order;
    enum nomad_var_result vr = VAR_ERR;
    char path[256];
    char wait[32];
    char message[600];
    char err[512] = "";
    int rc = 0;

    if (resolve_node_id(a) != 0)
        return -1;

    if (now - a->last_heartbeat >= p->heartbeat_interval_s) {
        int healthy = local_health(a, message, sizeof(message));

        if (coord_write_heartbeat(p, a->servers, a->n_servers, a->node_id, now, healthy, message, err,
                                  sizeof(err)) == 0)
            a->last_heartbeat = now;
        else
            rc = -1;
    }

    snprintf(path, sizeof(path), "%s/restart/%s", p->coord_prefix, a->node_id);
    snprintf(wait, sizeof(wait), "%lds", wait_s > 0 ? wait_s : 1);
    for (size_t i = 0; i < a->n_servers; i++) {
        memset(&order, 0, sizeof(order));
        vr = nomad_var_read(a->servers[i], p->coord_namespace, path, wait_s > 0 ? a->order_index : 0,
                            wait_s > 0 ? wait : NULL, &order, err, sizeof(err));
        if (vr == VAR_OK || vr == VAR_NOT_FOUND)
            break;
        log_warn("node-agent", "reading order %s through %s failed: %s", path, nomad_client_address(a->servers[i]),
                 err);
        nomad_var_free(&order);
    }
    if (vr != VAR_OK && vr != VAR_NOT_FOUND)
        return -1;
    if (order.query_index > 0)
        a->order_index = order.query_index;
    if (vr == VAR_OK) {
        const cJSON *state = cJSON_GetObjectItemCaseSensitive(order.items, "state");
        const cJSON *executor = cJSON_GetObjectItemCaseSensitive(order.items, "executor");

        if (cJSON_IsString(state) && strcmp(state->valuestring, "pending") == 0 &&
            (!cJSON_IsString(executor) || strcmp(executor->valuestring, "node-agent") == 0))
            carry_out(a, path, &order, (long long)time(NULL));
    }
    nomad_var_free(&order);
    return rc;
}
