/* Metrics recorded from each pass. */
#define _POSIX_C_SOURCE 200809L
#include "telemetry.h"

#include <stdio.h>
#include <string.h>

static const char *const guard_names[] = {
    "pause", "leader", "reads", "breaker", "ordering", "precheck", "grace", "cooldown", "rate_limit",
    "rejected",
};

void telemetry_init(struct metrics *m)
{
    metrics_gauge_set(m, "nomad_medic_breaker_open", "1 when the circuit breaker stops node-level actions.",
                      NULL, 0);
    metrics_gauge_set(m, "nomad_medic_leader", "1 when this instance holds the leadership lock or runs alone.",
                      NULL, 0);
    for (size_t i = 0; i < sizeof(guard_names) / sizeof(guard_names[0]); i++) {
        const char *labels[] = {"guard", guard_names[i], NULL};

        metrics_counter_add(m, "nomad_medic_guard_blocks_total", "Proposed actions a guard blocked.", labels, 0);
    }
}

static void record_tokens(struct metrics *m, const struct policy *p, struct journal *j, long long now)
{
    static const char *const rules[] = {
        "orphan_services", "system_gc", "netns_leaks", "client_restart", "server_restart", "node_ineligible",
    };
    const struct policy_rule_common *common[] = {
        &p->orphan_services.common, &p->system_gc.common, &p->netns_leaks.common,
        &p->client_restart.common, &p->server_restart.common, &p->node_ineligible.common,
    };
    char err[256];

    if (j == NULL)
        return;
    for (size_t i = 0; i <= sizeof(rules) / sizeof(rules[0]); i++) {
        const struct policy_rate *rate = i < sizeof(rules) / sizeof(rules[0]) ? &common[i]->rate_limit
                                                                              : &p->global_rate_limit;
        char bucket[64];
        const char *labels[] = {"bucket", bucket, NULL};
        double tokens = 0;
        int allowed;

        if (rate->count <= 0)
            continue;
        if (i < sizeof(rules) / sizeof(rules[0]))
            snprintf(bucket, sizeof(bucket), "rule:%s", rules[i]);
        else
            snprintf(bucket, sizeof(bucket), "global");
        if (journal_bucket_take(j, bucket, rate->count, rate->period_s, now, 0, &allowed, &tokens, err,
                                sizeof(err)) == JOURNAL_OK)
            metrics_gauge_set(m, "nomad_medic_rate_limit_tokens", "Tokens left in a rate-limit bucket.", labels,
                              tokens);
    }
}

void telemetry_record_pass(struct metrics *m, const struct pass_result *r, const struct policy *p,
                           struct journal *j, const char *scope, double seconds, int holds_lock)
{
    const char *pass_labels[] = {"scope", scope, "result", r->complete ? "complete" : "incomplete", NULL};
    const struct assessment *as = &r->assessment;
    int breaker = 0;

    if (m == NULL)
        return;
    metrics_counter_add(m, "nomad_medic_passes_total", "Reconcile passes run.", pass_labels, 1);
    metrics_histogram_observe(m, "nomad_medic_pass_duration_seconds", "Duration of a reconcile pass.",
                              metrics_duration_buckets, metrics_duration_buckets_count, NULL, seconds);
    if (r->complete)
        metrics_gauge_set(m, "nomad_medic_last_complete_observation_timestamp_seconds",
                          "Unix time of the last pass whose every read succeeded.", NULL, (double)r->now);
    metrics_gauge_set(m, "nomad_medic_leader", "1 when this instance holds the leadership lock or runs alone.",
                      NULL, holds_lock ? 1 : 0);

    for (size_t k = 0; k < sizeof(as->rules) / sizeof(as->rules[0]); k++) {
        const char *labels[] = {"rule", as->rules[k].rule, NULL};
        double n = 0;

        if (as->rules[k].rule == NULL || !as->rules[k].enabled)
            continue;
        for (size_t i = 0; i < as->n; i++)
            n += strcmp(as->findings[i].rule, as->rules[k].rule) == 0;
        metrics_gauge_set(m, "nomad_medic_findings", "Findings of the last pass, by rule.", labels, n);
    }

    for (size_t i = 0; i < as->n; i++) {
        const struct finding *f = &as->findings[i];
        const char *labels[] = {"kind", f->action ? f->action->name : "", "state", outcome_name(f->outcome), NULL};

        if (f->action == NULL)
            continue;
        metrics_counter_add(m, "nomad_medic_actions_total", "Proposed actions by kind and outcome.", labels, 1);
        if (f->outcome == OUTCOME_BLOCKED && f->blocked_by != NULL) {
            const char *guard[] = {"guard", f->blocked_by, NULL};

            metrics_counter_add(m, "nomad_medic_guard_blocks_total", "Proposed actions a guard blocked.", guard, 1);
            breaker |= strcmp(f->blocked_by, "breaker") == 0;
        }
    }
    metrics_gauge_set(m, "nomad_medic_breaker_open", "1 when the circuit breaker stops node-level actions.",
                      NULL, breaker);
    record_tokens(m, p, j, r->now);
}
