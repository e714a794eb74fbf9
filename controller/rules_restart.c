/*
 * Restart rules: a client agent that is down while its host is alive, a
 * failed or unhealthy server agent, and a flapping node.
 *
 * "Host alive" rests on the heartbeat Variable <prefix>/heartbeat/<node ID>
 * that the node scope on that host writes; a down node without a fresh
 * heartbeat is only reported (down_nodes). A node whose address is also a
 * server member's is a combined agent and counts as a server.
 */
#define _POSIX_C_SOURCE 200809L
#include "rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "ok", "failing" or "unknown" for the heartbeat's tri-state agent health. */
static const char *health_word(int healthy)
{
    if (healthy == 1)
        return "ok";
    if (healthy == 0)
        return "failing";
    return "unknown";
}

static int count_misses(const struct snap_node *n, long long since)
{
    int count = 0;

    for (int i = 0; i < n->n_missed; i++)
        count += n->missed_at[i] >= since;
    return count;
}

static void add_node_evidence(struct finding *f, const struct snap_node *n, long long now)
{
    char when[32];

    cJSON_AddStringToObject(f->evidence, "node_id", n->id);
    cJSON_AddStringToObject(f->evidence, "node_name", n->name ? n->name : "");
    cJSON_AddStringToObject(f->evidence, "address", n->address ? n->address : "");
    cJSON_AddStringToObject(f->evidence, "status", node_status_name(n->status));
    cJSON_AddStringToObject(f->evidence, "since", format_utc(n->status_updated_at, when, sizeof(when)));
    cJSON_AddNumberToObject(f->evidence, "down_for_seconds", (double)(now - n->status_updated_at));
}

static int assess_flapping(const struct snapshot *s, const struct policy *p, struct assessment *a,
                           const struct snap_node *n, int misses)
{
    struct finding *f = rules_new_finding(a, RULE_NODE_INELIGIBLE, n->id);
    char window[32];

    if (f == NULL || rules_set_action(f, &action_node_ineligible, n->id) != 0)
        return -1;
    add_node_evidence(f, n, s->observed_at);
    cJSON_AddNumberToObject(f->evidence, "missed_heartbeats_in_window", misses);
    cJSON_AddNumberToObject(f->evidence, "flap_limit", p->node_ineligible.flap_limit);
    f->reason = rules_format("node %s (%s) missed heartbeats %d times within %s (limit %d): it is "
                             "flapping, so it is marked ineligible instead of being restarted in a loop",
                             n->name ? n->name : "?", n->id, misses,
                             policy_format_duration(p->node_ineligible.flap_window_s, window, sizeof(window)),
                             p->node_ineligible.flap_limit);
    f->basis = rules_format("node %s flapping", n->id);
    return f->reason != NULL && f->basis != NULL ? 0 : -1;
}

static int assess_client(const struct snapshot *s, const struct policy *p, struct assessment *a,
                         const struct snap_node *n)
{
    const struct policy_client_restart *rule = &p->client_restart;
    const struct snap_heartbeat *hb = snapshot_find_heartbeat(s, n->id);
    const struct snap_order *order = snapshot_find_order(s, n->id);
    long long now = s->observed_at;
    char d1[32], d2[32];
    struct finding *f;

    if (hb == NULL || hb->host_alive_at <= 0 || now - hb->host_alive_at > rule->heartbeat_max_age_s)
        return 0;   /* the host is not known to be alive: down_nodes reports it */

    f = rules_new_finding(a, RULE_CLIENT_RESTART, n->id);
    if (f == NULL || rules_set_action(f, &action_client_restart, n->id) != 0)
        return -1;
    add_node_evidence(f, n, now);
    cJSON_AddNumberToObject(f->evidence, "host_alive_seconds_ago", (double)(now - hb->host_alive_at));
    cJSON_AddStringToObject(f->evidence, "local_agent_health", health_word(hb->agent_healthy));
    if (hb->agent_message != NULL)
        cJSON_AddStringToObject(f->evidence, "local_agent_message", hb->agent_message);
    f->reason = rules_format("client %s (%s) has been %s for %s while its host reported alive %s ago "
                             "(local agent health: %s%s%s)", n->name ? n->name : "?", n->id,
                             node_status_name(n->status),
                             policy_format_duration((long)(now - n->status_updated_at), d1, sizeof(d1)),
                             policy_format_duration((long)(now - hb->host_alive_at), d2, sizeof(d2)),
                             health_word(hb->agent_healthy),
                             hb->agent_message ? ": " : "", hb->agent_message ? hb->agent_message : "");
    f->basis = rules_format("node %s %s since %lld", n->id, node_status_name(n->status), n->status_updated_at);
    if (f->reason == NULL || f->basis == NULL)
        return -1;

    /* A restart that failed during this outage stops the sequence for the node. */
    if (order != NULL && order->state != NULL && strcmp(order->state, "failed") == 0 &&
        order->requested_at >= n->status_updated_at) {
        f->failed_read = rules_format("the restart ordered at %s for this outage failed; fix the host, "
                                      "then delete the Variable %s/restart/%s to allow another",
                                      format_utc(order->requested_at, d1, sizeof(d1)), p->coord_prefix, n->id);
        if (f->failed_read == NULL)
            return -1;
    }
    return 0;
}

static int assess_clients(const struct snapshot *s, const struct policy *p, struct assessment *a,
                          struct rule_status *client, struct rule_status *ineligible)
{
    long long now = s->observed_at;

    for (size_t i = 0; i < s->n_nodes; i++) {
        const struct snap_node *n = &s->nodes[i];
        int misses;

        if (n->status != NODE_DOWN && n->status != NODE_DISCONNECTED)
            continue;
        if (n->is_server || n->status_updated_at <= 0)
            continue;
        misses = count_misses(n, now - p->node_ineligible.flap_window_s);
        if (ineligible->evaluated && misses >= p->node_ineligible.flap_limit) {
            if (n->eligible && assess_flapping(s, p, a, n, misses) != 0)
                return -1;
            continue;
        }
        if (!client->evaluated || now - n->status_updated_at < p->client_restart.min_down_s)
            continue;
        if (assess_client(s, p, a, n) != 0)
            return -1;
    }
    return 0;
}

static int assess_servers(const struct snapshot *s, const struct policy *p, struct assessment *a)
{
    for (size_t i = 0; i < s->n_servers; i++) {
        const struct snap_server *srv = &s->servers[i];
        int failed = srv->serf_status == NULL || strcmp(srv->serf_status, "alive") != 0;
        struct finding *f;

        if (!failed && srv->healthy != 0)
            continue;
        if (srv->name == NULL || srv->leader)
            continue;   /* never the leader's host */
        f = rules_new_finding(a, RULE_SERVER_RESTART, srv->name);
        if (f == NULL || rules_set_action(f, &action_server_restart, srv->name) != 0)
            return -1;
        cJSON_AddStringToObject(f->evidence, "server", srv->name);
        cJSON_AddStringToObject(f->evidence, "address", srv->addr ? srv->addr : "");
        cJSON_AddStringToObject(f->evidence, "rpc_address", srv->rpc_addr ? srv->rpc_addr : "");
        cJSON_AddStringToObject(f->evidence, "serf_status", srv->serf_status ? srv->serf_status : "");
        cJSON_AddStringToObject(f->evidence, "autopilot_healthy", health_word(srv->healthy));
        cJSON_AddBoolToObject(f->evidence, "voter", srv->voter);
        cJSON_AddNumberToObject(f->evidence, "min_down_seconds", (double)p->server_restart.min_down_s);
        if (srv->node_id[0] != '\0')
            cJSON_AddStringToObject(f->evidence, "node_id", srv->node_id);
        if (failed)
            f->reason = rules_format("server %s (%s) is not alive in gossip: %s", srv->name,
                                     srv->rpc_addr ? srv->rpc_addr : "?", srv->serf_status ? srv->serf_status : "unknown");
        else
            f->reason = rules_format("server %s (%s) is unhealthy in autopilot", srv->name,
                                     srv->rpc_addr ? srv->rpc_addr : "?");
        f->basis = rules_format("server %s %s", srv->name, failed ? "failed" : "unhealthy");
        if (f->reason == NULL || f->basis == NULL)
            return -1;
    }
    return 0;
}

int rules_assess_restarts(const struct snapshot *s, const struct policy *p, struct assessment *a,
                          struct rule_status *client, struct rule_status *server,
                          struct rule_status *ineligible)
{
    struct rule_status *all[3] = {client, server, ineligible};
    static const char *const names[3] = {RULE_CLIENT_RESTART, RULE_SERVER_RESTART, RULE_NODE_INELIGIBLE};
    const struct policy_rule_common *common[3] = {
        &p->client_restart.common, &p->server_restart.common, &p->node_ineligible.common,
    };

    for (int i = 0; i < 3; i++) {
        all[i]->rule = names[i];
        all[i]->enabled = common[i]->enabled;
        if (!all[i]->enabled)
            continue;
        /*
         * Without a leader no instance can hold the lock or read a Variable,
         * and only the servers' gossip can be judged. Restarting a failed
         * server is then how the quorum comes back, so the server rule needs
         * the servers alone. Autopilot needs a leader too, so only servers
         * that are not alive in gossip become candidates.
         * NOTE: with no lock, two instances may each restart a failed server
         * at once. A failed server takes no part in quorum, so that cannot
         * cost the quorum, but "one at a time" then applies per instance only.
         */
        if (all[i] == server && !s->leader_ok) {
            if (!s->servers_ok && rules_skip(s, all[i], "servers") != 0)
                return -1;
            if (all[i]->skipped_because == NULL)
                all[i]->evaluated = 1;
            continue;
        }
        if (s->coordination_problem != NULL) {
            all[i]->skipped_because = rules_format("restarts need the leadership lock: %s",
                                                   s->coordination_problem);
            if (all[i]->skipped_because == NULL)
                return -1;
            continue;
        }
        /* Every restart decision needs the nodes and the servers; clients also their heartbeats. */
        if (!s->nodes_ok && rules_skip(s, all[i], "nodes") != 0)
            return -1;
        if (s->nodes_ok && !s->servers_ok && rules_skip(s, all[i], "servers") != 0)
            return -1;
        if (s->nodes_ok && s->servers_ok && !s->orders_ok && rules_skip(s, all[i], "restart orders") != 0)
            return -1;
        if (all[i]->skipped_because == NULL)
            all[i]->evaluated = 1;
    }
    if ((client->evaluated || ineligible->evaluated) && assess_clients(s, p, a, client, ineligible) != 0)
        return -1;
    if (server->evaluated && assess_servers(s, p, a) != 0)
        return -1;
    return 0;
}
