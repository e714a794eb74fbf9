/* Rules: orphaned service registrations, terminal-object pile-up, down nodes. */
#define _POSIX_C_SOURCE 200809L
#include "rules.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

char *rules_format(const char *fmt, ...)
{
    va_list ap;
    char *text;
    int len;

    va_start(ap, fmt);
    len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0)
        return NULL;
    text = malloc((size_t)len + 1);
    if (text == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(text, (size_t)len + 1, fmt, ap);
    va_end(ap);
    return text;
}

char *format_utc(long long t, char *buf, size_t bufsz)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (t <= 0 || gmtime_r(&tt, &tm) == NULL)
        snprintf(buf, bufsz, "-");
    else
        strftime(buf, bufsz, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

const char *outcome_name(enum outcome outcome)
{
    static const char *const names[] = {
        "advisory", "blocked", "dry_run", "pending_approval", "succeeded", "failed", "in_progress",
        "would_run", "would_queue",
    };

    return names[outcome];
}

const struct policy_rule_common *rules_policy(const struct policy *p, const char *rule)
{
    if (strcmp(rule, RULE_ORPHAN_SERVICES) == 0)
        return &p->orphan_services.common;
    if (strcmp(rule, RULE_SYSTEM_GC) == 0)
        return &p->system_gc.common;
    if (strcmp(rule, RULE_DOWN_NODES) == 0)
        return &p->down_nodes.common;
    if (strcmp(rule, RULE_NETNS_LEAKS) == 0)
        return &p->netns_leaks.common;
    if (strcmp(rule, RULE_PORT_CONFLICTS) == 0)
        return &p->port_conflicts;
    if (strcmp(rule, RULE_CLIENT_RESTART) == 0)
        return &p->client_restart.common;
    if (strcmp(rule, RULE_SERVER_RESTART) == 0)
        return &p->server_restart.common;
    if (strcmp(rule, RULE_NODE_INELIGIBLE) == 0)
        return &p->node_ineligible.common;
    return NULL;
}

const struct rule_status *assessment_rule(const struct assessment *a, const char *rule)
{
    for (size_t i = 0; i < sizeof(a->rules) / sizeof(a->rules[0]); i++) {
        if (a->rules[i].rule != NULL && strcmp(a->rules[i].rule, rule) == 0)
            return &a->rules[i];
    }
    return NULL;
}

static void finding_free(struct finding *f)
{
    free(f->subject);
    free(f->key);
    free(f->reason);
    cJSON_Delete(f->evidence);
    free(f->basis);
    free(f->idem_key);
    free(f->target);
    free(f->namespace_name);
    free(f->service);
    free(f->alloc_id);
    free(f->failed_read);
    free(f->detail);
}

void assessment_free(struct assessment *a)
{
    for (size_t i = 0; i < a->n; i++)
        finding_free(&a->findings[i]);
    for (size_t i = 0; i < sizeof(a->rules) / sizeof(a->rules[0]); i++)
        free(a->rules[i].skipped_because);
    free(a->findings);
    memset(a, 0, sizeof(*a));
}

static struct finding *new_finding(struct assessment *a, const char *rule, const char *subject)
{
    struct finding *f;

    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        struct finding *grown = realloc(a->findings, cap * sizeof(*grown));

        if (grown == NULL)
            return NULL;
        a->findings = grown;
        a->cap = cap;
    }
    f = &a->findings[a->n];
    memset(f, 0, sizeof(*f));
    f->rule = rule;
    f->subject = strdup(subject);
    f->key = rules_format("%s:%s", rule, subject);
    f->evidence = cJSON_CreateObject();
    if (f->subject == NULL || f->key == NULL || f->evidence == NULL) {
        finding_free(f);
        return NULL;
    }
    a->n++;
    return f;
}

/* Mark rule skipped because the named read failed. */
static int skip_rule(const struct snapshot *s, struct rule_status *st, const char *read_name)
{
    const struct snap_read *r = snapshot_find_read(s, read_name);

    st->evaluated = 0;
    st->skipped_because = rules_format("read %s failed: %s", read_name,
                                      r && r->error ? r->error : "not read");
    return st->skipped_because ? 0 : -1;
}

static int set_action(struct finding *f, const struct action_type *action, const char *target)
{
    f->action = action;
    f->target = strdup(target);
    if (f->target == NULL)
        return -1;
    if (f->namespace_name != NULL)
        f->idem_key = rules_format("%s:%s/%s", action->name, f->namespace_name, target);
    else
        f->idem_key = rules_format("%s:%s", action->name, target);
    return f->idem_key ? 0 : -1;
}

/*
 * Decide one registration. Only a client-terminal status or a 404 makes it
 * an orphan. A node's state never does, and neither does desired status
 * stop on a live allocation. Returns 0, or -1 on allocation failure.
 */
static int assess_registration(const struct snapshot *s, const struct snap_service *r,
                               struct assessment *a)
{
    const struct snap_alloc *alloc = snapshot_find_alloc(s, r->alloc_id);
    const struct snap_lookup *lookup = NULL;
    const char *status_text;
    char subject[1024];
    char when[32];
    struct finding *f;
    int orphan = 0;

    if (alloc != NULL) {
        orphan = alloc_status_is_terminal(alloc->client_status);
        status_text = alloc_status_name(alloc->client_status);
    } else {
        lookup = snapshot_find_lookup(s, r->alloc_id);
        if (lookup == NULL)
            return 0;   /* never looked up: nothing can rest on it */
        if (lookup->state == LOOKUP_NOT_FOUND) {
            orphan = 1;
            status_text = "absent";
        } else if (lookup->state == LOOKUP_FOUND) {
            orphan = alloc_status_is_terminal(lookup->client_status);
            status_text = alloc_status_name(lookup->client_status);
        } else {
            status_text = "unknown";
        }
    }
    if (!orphan && (lookup == NULL || lookup->state != LOOKUP_FAILED))
        return 0;

    snprintf(subject, sizeof(subject), "%s/%s", r->namespace_name, r->id);
    f = new_finding(a, RULE_ORPHAN_SERVICES, subject);
    if (f == NULL)
        return -1;
    f->namespace_name = strdup(r->namespace_name);
    f->service = strdup(r->service_name);
    f->alloc_id = strdup(r->alloc_id);
    if (f->namespace_name == NULL || f->service == NULL || f->alloc_id == NULL)
        return -1;
    if (set_action(f, &action_service_delete, r->id) != 0)
        return -1;

    if (lookup != NULL && lookup->state == LOOKUP_FAILED) {
        f->failed_read = rules_format("allocation %s: %s", r->alloc_id,
                                     lookup->error ? lookup->error : "lookup failed");
        f->reason = rules_format("allocation %s of service %s could not be read, so whether the "
                                "registration is orphaned is unknown", r->alloc_id, r->service_name);
    } else if (alloc != NULL) {
        f->reason = rules_format("allocation %s is %s (client-terminal, modified %s), so the "
                                "registration is orphaned", r->alloc_id, status_text,
                                format_utc(alloc->modify_time_s, when, sizeof(when)));
    } else if (lookup->state == LOOKUP_NOT_FOUND) {
        f->reason = rules_format("allocation %s no longer exists (404 alloc not found), so the "
                                "registration is orphaned", r->alloc_id);
    } else {
        f->reason = rules_format("allocation %s is %s (client-terminal), so the registration is "
                                "orphaned", r->alloc_id, status_text);
    }
    f->basis = rules_format("allocation %s %s", r->alloc_id, status_text);
    if (f->reason == NULL || f->basis == NULL)
        return -1;

    cJSON_AddStringToObject(f->evidence, "registration_id", r->id);
    cJSON_AddStringToObject(f->evidence, "service", r->service_name);
    cJSON_AddStringToObject(f->evidence, "namespace", r->namespace_name);
    cJSON_AddStringToObject(f->evidence, "alloc_id", r->alloc_id);
    cJSON_AddStringToObject(f->evidence, "alloc_status", status_text);
    cJSON_AddStringToObject(f->evidence, "alloc_seen_in",
                            alloc != NULL ? "allocation list" : "allocation lookup");
    if (r->node_id[0] != '\0')
        cJSON_AddStringToObject(f->evidence, "node_id", r->node_id);
    if (r->job_id != NULL)
        cJSON_AddStringToObject(f->evidence, "job_id", r->job_id);
    if (alloc != NULL && alloc->modify_time_s > 0)
        cJSON_AddStringToObject(f->evidence, "alloc_modified",
                                format_utc(alloc->modify_time_s, when, sizeof(when)));
    return 0;
}

static int assess_orphans(const struct snapshot *s, const struct policy *p, struct assessment *a,
                          struct rule_status *st)
{
    st->rule = RULE_ORPHAN_SERVICES;
    st->enabled = p->orphan_services.common.enabled;
    if (!st->enabled)
        return 0;
    if (!s->allocs_ok)
        return skip_rule(s, st, "allocations");
    if (!snapshot_find_read(s, "services") || !snapshot_find_read(s, "services")->ok)
        return skip_rule(s, st, "services");
    st->evaluated = 1;
    for (size_t i = 0; i < s->n_services; i++) {
        if (assess_registration(s, &s->services[i], a) != 0)
            return -1;
    }
    return 0;
}

static int assess_gc(const struct snapshot *s, const struct policy *p, struct assessment *a,
                     struct rule_status *st)
{
    const struct policy_system_gc *gc = &p->system_gc;
    int allocs_over, evals_over;
    struct finding *f;

    st->rule = RULE_SYSTEM_GC;
    st->enabled = gc->common.enabled;
    if (!st->enabled)
        return 0;
    if (!s->nodes_ok)
        return skip_rule(s, st, "nodes");
    if (!s->allocs_ok)
        return skip_rule(s, st, "allocations");
    if (!s->evals_ok)
        return skip_rule(s, st, "evaluations");
    st->evaluated = 1;

    allocs_over = gc->min_terminal_allocs > 0 && s->terminal_allocs >= gc->min_terminal_allocs;
    evals_over = gc->min_terminal_evals > 0 && s->terminal_evals >= gc->min_terminal_evals;
    if (!allocs_over && !evals_over)
        return 0;

    f = new_finding(a, RULE_SYSTEM_GC, "cluster");
    if (f == NULL || set_action(f, &action_system_gc, "cluster") != 0)
        return -1;
    f->reason = rules_format("%ld terminal allocations (threshold %ld) and %ld terminal evaluations "
                            "(threshold %ld) are waiting for garbage collection",
                            s->terminal_allocs, gc->min_terminal_allocs, s->terminal_evals,
                            gc->min_terminal_evals);
    f->basis = rules_format("thresholds exceeded:%s%s", allocs_over ? " allocations" : "",
                           evals_over ? " evaluations" : "");
    if (f->reason == NULL || f->basis == NULL)
        return -1;
    cJSON_AddNumberToObject(f->evidence, "terminal_allocations", (double)s->terminal_allocs);
    cJSON_AddNumberToObject(f->evidence, "terminal_evaluations", (double)s->terminal_evals);
    cJSON_AddNumberToObject(f->evidence, "min_terminal_allocs", (double)gc->min_terminal_allocs);
    cJSON_AddNumberToObject(f->evidence, "min_terminal_evals", (double)gc->min_terminal_evals);
    cJSON_AddNumberToObject(f->evidence, "unhealthy_nodes", (double)snapshot_unhealthy_nodes(s));
    return 0;
}

static int assess_down_nodes(const struct snapshot *s, const struct policy *p, struct assessment *a,
                             struct rule_status *st)
{
    st->rule = RULE_DOWN_NODES;
    st->enabled = p->down_nodes.common.enabled;
    if (!st->enabled)
        return 0;
    if (!s->nodes_ok)
        return skip_rule(s, st, "nodes");
    st->evaluated = 1;

    for (size_t i = 0; i < s->n_nodes; i++) {
        const struct snap_node *n = &s->nodes[i];
        cJSON *affected;
        size_t n_affected = 0;
        struct finding *f;
        char since[32];

        if (n->status != NODE_DOWN && n->status != NODE_DISCONNECTED)
            continue;
        if (p->down_nodes.min_down_s > 0 && n->status_updated_at > 0 &&
            s->observed_at - n->status_updated_at < p->down_nodes.min_down_s)
            continue;

        f = new_finding(a, RULE_DOWN_NODES, n->id);
        if (f == NULL)
            return -1;
        affected = cJSON_AddArrayToObject(f->evidence, "affected_allocations");
        for (size_t k = 0; k < s->n_allocs; k++) {
            const struct snap_alloc *al = &s->allocs[k];

            if (strcmp(al->node_id, n->id) != 0 || alloc_status_is_terminal(al->client_status))
                continue;
            /* List a few IDs; the count covers the rest. */
            if (n_affected < 10 && affected != NULL)
                cJSON_AddItemToArray(affected, cJSON_CreateString(al->id));
            n_affected++;
        }
        cJSON_AddStringToObject(f->evidence, "node_id", n->id);
        cJSON_AddStringToObject(f->evidence, "node_name", n->name ? n->name : "");
        cJSON_AddStringToObject(f->evidence, "status", node_status_name(n->status));
        cJSON_AddStringToObject(f->evidence, "since", format_utc(n->status_updated_at, since, sizeof(since)));
        cJSON_AddNumberToObject(f->evidence, "affected_allocation_count", (double)n_affected);
        if (n->last_event != NULL)
            cJSON_AddStringToObject(f->evidence, "last_event", n->last_event);
        if (!s->allocs_ok)
            cJSON_AddStringToObject(f->evidence, "note", "allocation list unavailable; count incomplete");
        f->reason = rules_format("node %s (%s) is %s since %s; %zu non-terminal allocation(s) on it%s%s",
                                n->name ? n->name : "?", n->id, node_status_name(n->status), since,
                                n_affected, n->last_event ? "; last event: " : "",
                                n->last_event ? n->last_event : "");
        f->basis = rules_format("node %s %s", n->id, node_status_name(n->status));
        if (f->reason == NULL || f->basis == NULL)
            return -1;
    }
    return 0;
}

/* Nomad's status for an allocation the host names: its client status, "absent", or NULL when never read. */
static const char *node_alloc_status(const struct snapshot *s, const char *alloc_id, int *leaked,
                                     const struct snap_lookup **failed)
{
    const struct snap_alloc *alloc = snapshot_find_alloc(s, alloc_id);
    const struct snap_lookup *lookup;

    *leaked = 0;
    *failed = NULL;
    if (alloc != NULL) {
        *leaked = alloc_status_is_terminal(alloc->client_status);
        return alloc_status_name(alloc->client_status);
    }
    lookup = snapshot_find_lookup(s, alloc_id);
    if (lookup == NULL)
        return NULL;
    if (lookup->state == LOOKUP_NOT_FOUND) {
        *leaked = 1;
        return "absent";
    }
    if (lookup->state == LOOKUP_FOUND) {
        *leaked = alloc_status_is_terminal(lookup->client_status);
        return alloc_status_name(lookup->client_status);
    }
    *failed = lookup;
    return "unknown";
}

static int node_reads_ok(const struct snapshot *s, struct rule_status *st)
{
    if (s->node_id[0] == '\0')
        return skip_rule(s, st, "node id") == 0 ? 0 : -1;
    if (!s->allocs_ok)
        return skip_rule(s, st, "node allocations") == 0 ? 0 : -1;
    for (int i = 0; i < HOST_SRC_COUNT; i++) {
        if (!s->host.sources[i].ok) {
            char name[64];

            snprintf(name, sizeof(name), "host %s", s->host.sources[i].name);
            return skip_rule(s, st, name) == 0 ? 0 : -1;
        }
    }
    return 1;
}

/*
 * 1 when the host has state of alloc_id on the configured network beyond
 * a namespace: a cache file, a reservation, a chain or rule, or a veth on
 * the bridge. A UUID-named namespace alone may belong to another CNI
 * network or another tool, so it is never a candidate by itself.
 */
static int has_network_state(const cJSON *evidence)
{
    static const char *const keys[] = {"caches", "reservations", "chains", "rules", "veths"};

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(evidence, keys[i])) > 0)
            return 1;
    }
    return 0;
}

static int assess_netns_leaks(const struct snapshot *s, const struct policy *p, struct assessment *a,
                              struct rule_status *st)
{
    char (*ids)[HOST_ID_LEN + 1] = NULL;
    size_t n_ids = 0;
    int rc;

    st->rule = RULE_NETNS_LEAKS;
    st->enabled = p->netns_leaks.common.enabled;
    if (!st->enabled)
        return 0;
    rc = node_reads_ok(s, st);
    if (rc <= 0)
        return rc;
    st->evaluated = 1;

    if (host_inventory_alloc_ids(&s->host, &ids, &n_ids) != 0)
        return -1;
    for (size_t i = 0; i < n_ids; i++) {
        const struct snap_lookup *failed;
        const char *status;
        struct finding *f;
        int leaked;

        status = node_alloc_status(s, ids[i], &leaked, &failed);
        /* Pending, running, unknown and any status this version does not know are left alone. */
        if (status == NULL || (!leaked && failed == NULL))
            continue;
        {
            cJSON *evidence = host_inventory_alloc_json(&s->host, ids[i]);
            int ours = evidence != NULL && has_network_state(evidence);

            cJSON_Delete(evidence);
            if (evidence == NULL)
                goto oom;
            if (!ours)
                continue;
        }

        f = new_finding(a, RULE_NETNS_LEAKS, ids[i]);
        if (f == NULL || (f->alloc_id = strdup(ids[i])) == NULL ||
            set_action(f, &action_netns_clear, ids[i]) != 0)
            goto oom;
        cJSON_Delete(f->evidence);
        f->evidence = host_inventory_alloc_json(&s->host, ids[i]);
        if (f->evidence == NULL)
            goto oom;
        cJSON_AddStringToObject(f->evidence, "alloc_status", status);
        cJSON_AddStringToObject(f->evidence, "node_id", s->node_id);
        if (failed != NULL) {
            f->failed_read = rules_format("allocation %s: %s", ids[i], failed->error ? failed->error : "lookup failed");
            f->reason = rules_format("allocation %s could not be read, so whether its network state on "
                                    "this host is leaked is unknown", ids[i]);
        } else if (strcmp(status, "absent") == 0) {
            f->reason = rules_format("allocation %s no longer exists in Nomad (404), but its network "
                                    "state is still on this host", ids[i]);
        } else {
            f->reason = rules_format("allocation %s is %s (client-terminal), but its network state is "
                                    "still on this host", ids[i], status);
        }
        f->basis = rules_format("allocation %s %s", ids[i], status);
        if (f->reason == NULL || f->basis == NULL)
            goto oom;
    }
    free(ids);
    return 0;

oom:
    free(ids);
    return -1;
}

static int assess_port_conflicts(const struct snapshot *s, const struct policy *p, struct assessment *a,
                                 struct rule_status *st)
{
    int rc;

    st->rule = RULE_PORT_CONFLICTS;
    st->enabled = p->port_conflicts.enabled;
    if (!st->enabled)
        return 0;
    rc = node_reads_ok(s, st);
    if (rc <= 0)
        return rc;
    st->evaluated = 1;

    for (size_t i = 0; i < s->host.n_conflicts; i++) {
        const struct host_port_conflict *c = &s->host.conflicts[i];
        const struct snap_lookup *failed;
        const char *winner_status;
        char subject[64];
        struct finding *f;
        cJSON *shadowed;
        int winner_leaked;

        snprintf(subject, sizeof(subject), "%s/%d", c->protocol, c->port);
        f = new_finding(a, RULE_PORT_CONFLICTS, subject);
        if (f == NULL)
            return -1;
        winner_status = node_alloc_status(s, c->effective_alloc, &winner_leaked, &failed);
        if (winner_status == NULL)
            winner_status = "not known to Nomad on this node";
        cJSON_AddStringToObject(f->evidence, "protocol", c->protocol);
        cJSON_AddNumberToObject(f->evidence, "host_port", c->port);
        cJSON_AddStringToObject(f->evidence, "effective_alloc", c->effective_alloc);
        cJSON_AddStringToObject(f->evidence, "effective_alloc_status", winner_status);
        if (c->effective_dnat != NULL)
            cJSON_AddStringToObject(f->evidence, "effective_dnat", c->effective_dnat);
        shadowed = cJSON_AddArrayToObject(f->evidence, "shadowed");
        for (size_t k = 0; k < c->n_shadowed && shadowed != NULL; k++) {
            cJSON *o = cJSON_CreateObject();
            int leaked;
            const char *status = node_alloc_status(s, c->shadowed[k].alloc_id, &leaked, &failed);

            cJSON_AddStringToObject(o, "alloc_id", c->shadowed[k].alloc_id);
            cJSON_AddStringToObject(o, "alloc_status", status ? status : "not known to Nomad on this node");
            if (c->shadowed[k].dnat_to != NULL)
                cJSON_AddStringToObject(o, "dnat_to", c->shadowed[k].dnat_to);
            cJSON_AddItemToArray(shadowed, o);
        }
        f->reason = rules_format("host port %s/%d is mapped by %zu allocations; the first rule, of "
                                "allocation %s (%s), wins%s%s%s", c->protocol, c->port, c->n_shadowed + 1,
                                c->effective_alloc, winner_status,
                                c->n_shadowed > 0 ? " over allocation " : "",
                                c->n_shadowed > 0 ? c->shadowed[0].alloc_id : "",
                                winner_leaked ? "; netns_leaks removes the leaked allocation's rules" : "");
        f->basis = rules_format("port %s/%d won by %s", c->protocol, c->port, c->effective_alloc);
        if (f->reason == NULL || f->basis == NULL)
            return -1;
    }
    return 0;
}

struct finding *rules_new_finding(struct assessment *a, const char *rule, const char *subject)
{
    return new_finding(a, rule, subject);
}

int rules_set_action(struct finding *f, const struct action_type *action, const char *target)
{
    return set_action(f, action, target);
}

int rules_skip(const struct snapshot *s, struct rule_status *st, const char *read_name)
{
    return skip_rule(s, st, read_name);
}


int rules_assess(const struct snapshot *s, const struct policy *p, struct assessment *out)
{
    memset(out, 0, sizeof(*out));
    if (s->node_scope) {
        if (assess_netns_leaks(s, p, out, &out->rules[0]) != 0 ||
            assess_port_conflicts(s, p, out, &out->rules[1]) != 0)
            return -1;
        return 0;
    }
    if (assess_orphans(s, p, out, &out->rules[0]) != 0 || assess_gc(s, p, out, &out->rules[1]) != 0 ||
        assess_down_nodes(s, p, out, &out->rules[2]) != 0 ||
        rules_assess_restarts(s, p, out, &out->rules[3], &out->rules[4], &out->rules[5]) != 0)
        return -1;
    return 0;
}
