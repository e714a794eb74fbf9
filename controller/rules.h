/*
 * Assessment: rules turn a snapshot into findings.
 *
 * A finding names a rule, a subject and its evidence. A finding whose rule
 * has an action is a proposed action (kind + target, with a stable
 * idempotency key); one without is an advisory. Guards and the executor
 * later fill the outcome fields.
 */
#ifndef NOMAD_MEDIC_RULES_H
#define NOMAD_MEDIC_RULES_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "../actions/action.h"
#include "../policies/policy.h"
#include "snapshot.h"

#define RULE_ORPHAN_SERVICES "orphan_services"
#define RULE_SYSTEM_GC "system_gc"
#define RULE_DOWN_NODES "down_nodes"
#define RULE_NETNS_LEAKS "netns_leaks"
#define RULE_PORT_CONFLICTS "port_conflicts"
#define RULE_CLIENT_RESTART "client_restart"
#define RULE_SERVER_RESTART "server_restart"
#define RULE_NODE_INELIGIBLE "node_ineligible"
#define RULE_COUNT 8

/* Outcome of a proposed action in this pass. */
enum outcome {
    OUTCOME_NONE = 0,          /* advisory, or not yet decided */
    OUTCOME_BLOCKED,           /* a guard stopped it: blocked_by names the guard and detail the reason */
    OUTCOME_DRY_RUN,           /* would run; journaled as dry_run */
    OUTCOME_PENDING_APPROVAL,  /* queued, or still waiting, for an operator */
    OUTCOME_SUCCEEDED,
    OUTCOME_FAILED,
    OUTCOME_IN_PROGRESS,       /* another row for the key is executing */
    OUTCOME_WOULD_RUN,         /* plan only: would be sent now (enforce, or approved) */
    OUTCOME_WOULD_QUEUE,       /* plan only: would be queued for approval */
};

struct finding {
    const char *rule;
    char *subject;             /* unique within the rule */
    char *key;                 /* "rule:subject", the journal's finding key */
    char *reason;              /* one sentence for operators */
    cJSON *evidence;           /* owned */
    char *basis;               /* what the decision rests on; a change voids an approval */

    const struct action_type *action;   /* NULL for an advisory */
    char *idem_key;            /* "kind:target" */
    char *target;
    char *namespace_name;
    char *service;
    char *alloc_id;
    char *failed_read;         /* a read this action depends on failed: the text of that failure */

    long long first_seen;      /* from the journal; the pass time when new */

    enum outcome outcome;
    const char *blocked_by;    /* guard name when BLOCKED */
    long long retry_at;        /* BLOCKED by grace, cooldown or rate_limit: when time alone lifts it (Unix s) */
    char *detail;              /* why blocked, or the execution note/error */
    long long action_id;       /* journal row, 0 when none */
};

struct rule_status {
    const char *rule;
    int enabled;
    int evaluated;             /* 1 when every read the rule needs succeeded */
    char *skipped_because;     /* the failed read, when enabled but not evaluated */
};

struct assessment {
    struct finding *findings;
    size_t n, cap;
    struct rule_status rules[RULE_COUNT];
};

/*
 * Run every enabled rule of the snapshot's scope over s (cluster rules for a
 * cluster snapshot, netns_leaks and port_conflicts for a node snapshot).
 * Returns 0, or -1 on allocation failure.
 */
int rules_assess(const struct snapshot *s, const struct policy *p, struct assessment *out);
void assessment_free(struct assessment *a);

const struct rule_status *assessment_rule(const struct assessment *a, const char *rule);

/* The policy settings common to rule, or NULL for an unknown name. */
const struct policy_rule_common *rules_policy(const struct policy *p, const char *rule);

const char *outcome_name(enum outcome outcome);

/* Shared by the rule files: a new finding of rule about subject, and its action. */
struct finding *rules_new_finding(struct assessment *a, const char *rule, const char *subject);
int rules_set_action(struct finding *f, const struct action_type *action, const char *target);
int rules_skip(const struct snapshot *s, struct rule_status *st, const char *read_name);
char *rules_format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The restart rules (rules_restart.c): client_restart, server_restart, node_ineligible. */
int rules_assess_restarts(const struct snapshot *s, const struct policy *p, struct assessment *a,
                          struct rule_status *client, struct rule_status *server,
                          struct rule_status *ineligible);

/* Format a Unix time as "2026-12-04T20:30:00Z" into buf. Returns buf. */
char *format_utc(long long t, char *buf, size_t bufsz);

#endif
