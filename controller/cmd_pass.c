/* The commands that run a pass: run, once, plan. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "coordination.h"
#include "http_api.h"
#include "metrics.h"
#include "telemetry.h"
#include "node_agent.h"
#include "execute.h"
#include "log.h"
#include "observe.h"
#include "reconcile.h"
#include "report.h"

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t reload_requested;

/* Signal handlers only set flags; the loop acts on them between steps. */
static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void on_reload(int sig)
{
    (void)sig;
    reload_requested = 1;
}

static void install_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_reload;
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

/* Sleep up to seconds, waking early for a stop or reload request. */
static void sleep_interruptible(long seconds)
{
    struct timespec step = {0, 100 * 1000 * 1000};

    for (long i = 0; i < seconds * 10 && !stop_requested && !reload_requested; i++)
        nanosleep(&step, NULL);
}

static int live_pass(struct controller *c, int read_only, const struct cli_options *opts, int print,
                     const char *title);

static int resolve_interrupted(struct controller *c)
{
    char err[1024];
    int n = execute_resolve_interrupted(c->journal, c->scope, c->client, &c->policy->host,
                                        (long long)time(NULL), err, sizeof(err));

    if (n < 0) {
        fprintf(stderr, "nomad-medic: resolving interrupted actions failed: %s\n", err);
        return -1;
    }
    if (n > 0)
        log_info("main", "resolved %d action(s) interrupted by an earlier stop", n);
    return 0;
}

/* The metrics and the HTTP listener of `run`; both NULL when the listener is off. */
struct run_telemetry {
    struct metrics *metrics;
    struct http_api *api;
    int holds_lock;
    long long last_complete_at;
    /* From the last pass, for watching between passes. */
    long long next_due;        /* reconcile_next_due() */
    long long pass_started;    /* the pass's clock, Unix s */
    int last_pass_ok;
    /* Cluster scope of `run`: the last snapshot, and the lists the wait found unchanged since. */
    int keep_snapshot;
    struct snapshot previous;
    unsigned unchanged;        /* 1u << WATCH_* bits; 0: read everything */
    long long last_full_read;  /* when the last pass that took nothing over started, Unix s */
    struct http_api_status status;   /* as last published to the listener */
    unsigned long long watch_index[WATCH_COUNT];
};

static struct run_telemetry no_telemetry;

static double monotonic_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Return 1 when the journal has an action still executing, such as a restart
 * whose target has not come back yet: its poll needs a pass every interval.
 * A failed read of the journal counts as 1.
 */
static int actions_in_flight(struct controller *c)
{
    struct journal_action *rows = NULL;
    size_t n = 0;
    char err[512];

    if (c->journal == NULL)
        return 0;
    if (journal_action_list(c->journal, 1u << JS_EXECUTING, 1, &rows, &n, err, sizeof(err)) != JOURNAL_OK) {
        log_warn("main", "listing the actions in flight failed: %s", err);
        return 1;
    }
    journal_action_list_free(rows, n);
    return n > 0;
}

/* One pass against the live cluster, printed unless quiet. Returns an exit code. */
static int live_pass_observed(struct controller *c, int read_only, const struct cli_options *opts, int print,
                              const char *title, struct run_telemetry *t)
{
    struct source *src = source_live_new(c->client, c->policy->per_page);
    double started = monotonic_seconds();
    struct observe_reuse reuse = {&t->previous, t->unchanged};
    struct pass_result r;
    char err[1024] = "";
    int rc;

    if (src == NULL) {
        fprintf(stderr, "nomad-medic: out of memory\n");
        return EXIT_ERROR;
    }
    if (t->keep_snapshot && t->unchanged != 0) {
        c->reuse = &reuse;
    } else {
        t->last_full_read = (long long)time(NULL);
        snapshot_free(&t->previous);
        snapshot_init(&t->previous);
    }
    t->unchanged = 0;
    rc = reconcile_pass(c, src, read_only, &r, err, sizeof(err));
    c->reuse = NULL;
    if (print) {
        if (opts->json)
            report_pass_json(stdout, &r, c->policy);
        else
            report_pass_text(stdout, &r, c->policy, title);
    }
    t->next_due = reconcile_next_due(&r, c->policy);
    if (t->next_due != 0 && actions_in_flight(c))
        t->next_due = 0;
    t->pass_started = r.now;
    t->last_pass_ok = rc == 0 && r.complete;
    memcpy(t->watch_index, r.snapshot.watch_index, sizeof(t->watch_index));
    if (t->metrics != NULL)
        telemetry_record_pass(t->metrics, &r, c->policy, c->journal, c->scope, monotonic_seconds() - started,
                              t->holds_lock);
    if (t->api != NULL) {
        struct http_api_status status = {0};

        if (r.complete)
            t->last_complete_at = r.now;
        status.last_pass_finished_at = (long long)time(NULL);
        status.last_observation_complete = r.complete;
        status.last_complete_observation_at = t->last_complete_at;
        status.holds_lock = t->holds_lock;
        status.scope = c->scope;
        http_api_update(t->api, &status);
        t->status = status;
    }
    if (t->keep_snapshot && rc == 0) {
        /* Kept for the next pass; the source's strings go with the source. */
        snapshot_free(&t->previous);
        t->previous = r.snapshot;
        t->previous.source_name = NULL;
        t->previous.source_note = NULL;
        snapshot_init(&r.snapshot);
    }
    pass_result_free(&r);
    source_destroy(src);
    if (rc != 0) {
        log_error("main", "pass failed: %s", err);
        fprintf(stderr, "nomad-medic: pass failed: %s\n", err);
        return EXIT_ERROR;
    }
    return EXIT_OK;
}

static int live_pass(struct controller *c, int read_only, const struct cli_options *opts, int print,
                     const char *title)
{
    return live_pass_observed(c, read_only, opts, print, title, &no_telemetry);
}

int cmd_once(const struct cli_options *opts)
{
    struct controller c = {.scope = cli_scope(opts)};
    struct coordination coord;
    struct node_agent agent;
    int have_agent = 0;
    struct policy p;
    char why[512] = "";
    int rc = EXIT_ERROR;

    if (cli_load_policy(opts, &p) != 0)
        return EXIT_ERROR;
    c.policy = &p;
    if (cli_open_journal(&p, 0, &c.journal) != 0)
        goto out;
    c.client = cli_new_client(&p);
    if (c.client == NULL)
        goto out;
    coord_init(&coord, c.client, &p);
    if (resolve_interrupted(&c) != 0)
        goto out;

    if (strcmp(c.scope, "node") == 0) {
        rc = live_pass(&c, 0, opts, 1, "Pass");
        if (node_agent_init(&agent, &p, c.journal, why, sizeof(why)) != 0) {
            fprintf(stderr, "nomad-medic: %s\n", why);
            rc = EXIT_ERROR;
            goto out;
        }
        have_agent = 1;
        node_agent_step(&agent, (long long)time(NULL), 0);
        goto out;
    }

    /* A pass that can only journal dry runs writes nothing to the cluster, not even the lock. */
    if (!policy_may_act(&p, "cluster")) {
        rc = live_pass(&c, 0, opts, 1, "Pass");
        goto out;
    }
    switch (coord_hold(&coord, (long long)time(NULL), why, sizeof(why))) {
    case LOCK_HELD:
        rc = live_pass(&c, 0, opts, 1, "Pass");
        break;
    case LOCK_STANDBY:
        /* Show what would be done, but act on nothing: another instance is in charge. */
        log_warn("main", "standby: %s; this pass acts on nothing", why);
        rc = live_pass(&c, 1, opts, 1, "Plan (standby: another instance holds the lock)");
        break;
    case LOCK_UNAVAILABLE:
        log_warn("main", "the leadership lock cannot be used (%s); acting alone with restarts off", why);
        c.coordination_problem = why;
        rc = live_pass(&c, 0, opts, 1, "Pass");
        break;
    }
    coord_release(&coord);

out:
    if (have_agent)
        node_agent_free(&agent);
    nomad_client_free(c.client);
    journal_close(c.journal);
    policy_free(&p);
    return rc;
}

static struct source *offline_source(const char *path)
{
    char err[1024];
    struct source *src;

    if (access(path, F_OK) != 0) {
        fprintf(stderr, "nomad-medic: %s: %s; pass a directory written by nomad-medic capture, or a "
                "nomad operator debug bundle (folder or .tar.gz)\n", path, strerror(errno));
        return NULL;
    }
    if (source_is_capture_dir(path))
        src = source_capture_reader_new(path, err, sizeof(err));
    else
        src = source_bundle_new(path, err, sizeof(err));
    if (src == NULL)
        fprintf(stderr, "nomad-medic: cannot read %s: %s\n", path, err);
    return src;
}

/*
 * A rule skipped for a failed read makes the plan an error, unless the
 * source cannot hold that data at all (a debug bundle has no registrations).
 */
static int plan_incomplete(const struct pass_result *r)
{
    const struct assessment *as = &r->assessment;

    if (!r->snapshot.leader_ok || (!r->snapshot.node_scope && !r->snapshot.nodes_ok))
        return 1;
    for (size_t i = 0; i < sizeof(as->rules) / sizeof(as->rules[0]); i++) {
        const struct rule_status *st = &as->rules[i];

        if (!st->enabled || st->evaluated)
            continue;
        /* A debug bundle contains no service registrations and no Variables. */
        if (strcmp(r->snapshot.source_name, "debug-bundle") == 0 &&
            (strcmp(st->rule, RULE_ORPHAN_SERVICES) == 0 || strcmp(st->rule, RULE_CLIENT_RESTART) == 0 ||
             strcmp(st->rule, RULE_SERVER_RESTART) == 0 || strcmp(st->rule, RULE_NODE_INELIGIBLE) == 0))
            continue;
        return 1;
    }
    return 0;
}

int cmd_plan(const struct cli_options *opts)
{
    struct controller c = {.scope = cli_scope(opts)};
    struct source *src = NULL;
    struct pass_result r;
    struct policy p;
    char err[1024] = "";
    int rc = EXIT_ERROR;
    int pass_rc;

    memset(&r, 0, sizeof(r));
    if (cli_load_policy(opts, &p) != 0)
        return EXIT_ERROR;
    c.policy = &p;
    if (cli_open_journal(&p, 1, &c.journal) != 0)
        goto out;
    if (opts->from_capture != NULL) {
        if (strcmp(c.scope, "node") == 0) {
            fprintf(stderr, "nomad-medic: plan --from-capture reads cluster state only; drop --scope node\n");
            goto out;
        }
        src = offline_source(opts->from_capture);
    } else {
        c.client = cli_new_client(&p);
        if (c.client != NULL)
            src = source_live_new(c.client, p.per_page);
    }
    if (src == NULL)
        goto out;

    pass_rc = reconcile_pass(&c, src, 1, &r, err, sizeof(err));
    if (opts->json)
        report_pass_json(stdout, &r, &p);
    else
        report_pass_text(stdout, &r, &p, "Plan");
    if (pass_rc != 0) {
        fprintf(stderr, "nomad-medic: plan failed: %s\n", err);
    } else if (plan_incomplete(&r)) {
        fprintf(stderr, "nomad-medic: the observation was incomplete (see the failed reads above); "
                "the plan leaves out what depends on them\n");
    } else if (opts->detailed_exitcode && r.proposed > 0) {
        rc = EXIT_PLAN_CHANGES;
    } else {
        rc = EXIT_OK;
    }
    pass_result_free(&r);

out:
    source_destroy(src);
    nomad_client_free(c.client);
    journal_close(c.journal);
    policy_free(&p);
    return rc;
}

/* Reload the configuration file; on failure keep the old policy. */
static void reload_policy(const struct cli_options *opts, struct policy *p)
{
    struct policy fresh;

    if (opts->config_path == NULL) {
        log_info("main", "SIGHUP: no configuration file to reload; the built-in policy stays");
        return;
    }
    if (cli_load_policy(opts, &fresh) != 0) {
        log_error("main", "SIGHUP: reloading %s failed; the previous policy stays in force",
                  opts->config_path);
        return;
    }
    if (strcmp(fresh.journal_path, p->journal_path) != 0)
        log_warn("main", "SIGHUP: journal path changed to %s; it takes effect after a restart",
                 fresh.journal_path);
    {
        /* Connection settings also need a new client; keep the journal path in use. */
        char *keep = p->journal_path;

        p->journal_path = NULL;
        policy_free(p);
        free(fresh.journal_path);
        fresh.journal_path = keep;
        *p = fresh;
    }
    log_info("main", "SIGHUP: reloaded %s mode=%s interval=%lds", opts->config_path,
             policy_mode_name(p->mode), p->interval_s);
}

/*
 * Return 1 when an operator approved an action since the last pass started;
 * the loop then passes at once. A failed check returns 0 and is logged, so a
 * busy journal cannot make the loop pass over and over.
 */
static int approvals_waiting(struct controller *c, const struct run_telemetry *t)
{
    char why[512];
    int approved = 0;

    if (journal_approved_since(c->journal, t->pass_started, &approved, why, sizeof(why)) != JOURNAL_OK) {
        log_warn("main", "checking for approvals failed: %s", why);
        return 0;
    }
    if (approved > 0)
        log_info("main", "%d action(s) approved since the last pass; passing now", approved);
    return approved > 0;
}

/*
 * Publish that the loop is alive between passes (after a completed watch or
 * a step of a scheduled wait), which /healthz counts like a finished pass.
 */
static void note_alive(struct run_telemetry *t)
{
    if (t->api == NULL)
        return;
    t->status.last_watch_at = (long long)time(NULL);
    http_api_update(t->api, &t->status);
}

/*
 * Sleep up to seconds while keeping the lock: renew it in between. With c
 * and t (an instance that may act), wake up every 10 s at most to report
 * that it is alive and to return early when an operator approves an action.
 * Returns 0 when the time ran out, 1 when the wait ended early (stop,
 * reload, lost lock or approval).
 */
static int wait_holding(struct coordination *coord, int holding, long seconds, struct controller *c,
                        struct run_telemetry *t)
{
    long long end = (long long)time(NULL) + seconds;
    char why[512];

    while (!stop_requested && !reload_requested) {
        long long now = (long long)time(NULL);
        long chunk = (long)(end - now);

        if (chunk <= 0)
            return 0;
        if (holding && chunk > coord->policy->lock_ttl_s / 3)
            chunk = coord->policy->lock_ttl_s / 3 > 0 ? coord->policy->lock_ttl_s / 3 : 1;
        if (t != NULL && chunk > 10)
            chunk = 10;
        sleep_interruptible(chunk);
        if (stop_requested || reload_requested)
            return 1;
        if (holding && coord_hold(coord, (long long)time(NULL), why, sizeof(why)) != LOCK_HELD)
            return 1;
        if (t != NULL) {
            note_alive(t);
            if (approvals_waiting(c, t))
                return 1;
        }
    }
    return 1;
}

/*
 * Block on the watched lists (blocking queries with the indexes of the last
 * pass) instead of listing everything again. per_page=1 keeps each response
 * small: only its X-Nomad-Index matters. Returns 1 when a list changed, 0
 * when the wait ran out, -1 when a watch read failed. *unchanged receives a
 * 1u << WATCH_* bit for each watched list whose index did not move, and 0
 * when any index went back.
 */
static int watch_for_change(struct nomad_client *client, const unsigned long long index[WATCH_COUNT], long wait_s,
                            unsigned *unchanged)
{
    static const char *const bases[WATCH_COUNT] = {
        "/v1/nodes?per_page=1",
        "/v1/allocations?namespace=*&task_states=false&per_page=1",
        "/v1/services?namespace=*",
        "/v1/evaluations?namespace=*&per_page=1",
    };
    struct nomad_response resps[WATCH_COUNT];
    char paths[WATCH_COUNT][192];
    const char *list[WATCH_COUNT];
    int which[WATCH_COUNT];
    size_t n = 0;
    int went_back = 0;
    int rc = 0;

    for (int i = 0; i < WATCH_COUNT; i++) {
        if (index[i] == 0)
            continue;
        snprintf(paths[n], sizeof(paths[n]), "%s&index=%llu&wait=%lds", bases[i], index[i], wait_s);
        list[n] = paths[n];
        which[n] = i;
        nomad_response_init(&resps[n]);
        n++;
    }
    *unchanged = 0;
    if (n == 0)
        return -1;
    nomad_get_many(client, list, n, resps);
    for (size_t i = 0; i < n; i++) {
        if (resps[i].result != NOMAD_OK) {
            log_warn("main", "watching %s failed: %s", bases[which[i]], resps[i].error);
            rc = -1;
        } else if (resps[i].index != index[which[i]]) {
            log_debug("main", "%s changed (index %llu -> %llu)", bases[which[i]], index[which[i]],
                      (unsigned long long)resps[i].index);
            /* An index that went back means a restored snapshot or another cluster: trust nothing kept. */
            if (resps[i].index < index[which[i]])
                went_back = 1;
            if (rc == 0)
                rc = 1;
        } else {
            *unchanged |= 1u << which[i];
        }
        nomad_response_free(&resps[i]);
    }
    if (rc < 0 || went_back)
        *unchanged = 0;
    return rc;
}

/*
 * Wait for the next pass. A pass starts no sooner than one interval after
 * the last one started, unless an operator approves an action or the policy
 * is reloaded, so a busy cluster is not listed back to back. After that, block
 * on the watched lists until one changes (a change made meanwhile returns at
 * once), the last pass's due time comes (reconcile_next_due()), or an
 * approval arrives, keeping the lock throughout. When a watch read fails,
 * the rest of the interval is waited out instead.
 *
 * Returns the lists (1u << WATCH_* bits) that the last blocking query found
 * unchanged, which the next pass may take over from this one; 0 when the
 * next pass must read everything: no watch answered, a watch failed, or ten
 * intervals have passed since the last full read, which checks the watch
 * itself.
 */
static unsigned wait_watching(struct controller *c, struct coordination *coord, struct run_telemetry *t)
{
    const struct policy *p = c->policy;
    long long started = (long long)time(NULL);
    long long earliest = t->pass_started + p->interval_s;
    long long resync_at = t->last_full_read + 10 * (long long)p->interval_s;
    long long until = resync_at;
    unsigned confirmed = 0;
    long cap = p->interval_s;
    char why[512];

    if (t->next_due < until)
        until = t->next_due;
    if (until < earliest)
        until = earliest;
    /* Renew the lock between blocking reads, and stay answerable to SIGTERM. */
    if (coord->lock_id != NULL && cap > p->lock_ttl_s / 3)
        cap = p->lock_ttl_s / 3 > 0 ? p->lock_ttl_s / 3 : 1;
    if (cap > 10)
        cap = 10;
    while (!stop_requested && !reload_requested) {
        long long now = (long long)time(NULL);
        long chunk;
        int changed;

        if (now >= until)
            break;
        if (now < earliest) {
            /* Nothing is sent to Nomad before the interval is up, except the lock's renewal. */
            if (wait_holding(coord, coord->lock_id != NULL, (long)(earliest - now), c, t) != 0)
                return 0;
            continue;
        }
        chunk = until - now < cap ? (long)(until - now) : cap;
        changed = watch_for_change(c->client, t->watch_index, chunk, &confirmed);
        if (changed >= 0)
            note_alive(t);
        if (coord->lock_id != NULL && coord_hold(coord, (long long)time(NULL), why, sizeof(why)) != LOCK_HELD)
            return 0;
        if (changed > 0)
            break;
        if (changed < 0) {
            now = (long long)time(NULL);
            if (now - started < p->interval_s)
                wait_holding(coord, coord->lock_id != NULL, (long)(p->interval_s - (now - started)), c, t);
            return 0;
        }
        if (approvals_waiting(c, t))
            break;
    }
    if (stop_requested || reload_requested || (long long)time(NULL) >= resync_at)
        return 0;
    return confirmed;
}

/* Node scope: between passes, keep the heartbeat going and carry out restart orders. */
static void wait_as_node_agent(struct node_agent *agent, long seconds)
{
    long long end = (long long)time(NULL) + seconds;

    while (!stop_requested && !reload_requested) {
        long long now = (long long)time(NULL);
        long left = (long)(end - now);

        if (left <= 0)
            break;
        /* Short blocking reads, so SIGTERM is handled within a few seconds. */
        if (node_agent_step(agent, now, left < 5 ? left : 5) != 0)
            sleep_interruptible(left < 5 ? left : 5);
    }
}

int cmd_run(const struct cli_options *opts)
{
    struct controller c = {.scope = cli_scope(opts)};
    struct run_telemetry telemetry = {0};
    struct coordination coord;
    struct node_agent agent;
    int node_scope = strcmp(c.scope, "node") == 0;
    int have_agent = 0;
    enum lock_state last_state = LOCK_UNAVAILABLE;
    int first = 1;
    struct policy p;
    char why[512] = "";
    int rc = EXIT_ERROR;

    if (cli_load_policy(opts, &p) != 0)
        return EXIT_ERROR;
    c.policy = &p;
    if (cli_open_journal(&p, 0, &c.journal) != 0)
        goto out;
    c.client = cli_new_client(&p);
    if (c.client == NULL)
        goto out;
    coord_init(&coord, c.client, &p);
    telemetry.keep_snapshot = !node_scope;
    install_signals();
    if (p.listener.enabled) {
        char err[512];

        telemetry.metrics = metrics_new();
        if (telemetry.metrics == NULL)
            goto out;
        telemetry_init(telemetry.metrics);
        nomad_client_set_observer(c.client, metrics_observe_nomad_request, telemetry.metrics);
        telemetry.api = http_api_start(&p.listener, p.journal_path, telemetry.metrics, err, sizeof(err));
        if (telemetry.api == NULL) {
            fprintf(stderr, "nomad-medic: cannot start the HTTP listener: %s\n", err);
            goto out;
        }
        log_info("main", "HTTP listener on %s: /healthz /readyz /metrics /v1/actions", p.listener.address);
    }
    log_info("main", "nomad-medic %s started scope=%s mode=%s interval=%lds journal=%s nomad=%s",
             NOMAD_MEDIC_VERSION, c.scope, policy_mode_name(p.mode), p.interval_s, p.journal_path,
             nomad_client_address(c.client));
    if (resolve_interrupted(&c) != 0)
        goto out;
    if (node_scope) {
        if (node_agent_init(&agent, &p, c.journal, why, sizeof(why)) != 0) {
            fprintf(stderr, "nomad-medic: %s\n", why);
            goto out;
        }
        have_agent = 1;
    }

    while (!stop_requested) {
        enum lock_state state = LOCK_HELD;

        if (reload_requested) {
            struct nomad_client *fresh;

            reload_requested = 0;
            /* The new policy may read other lists: the next pass reads everything. */
            telemetry.unchanged = 0;
            reload_policy(opts, &p);
            fresh = cli_new_client(&p);
            if (fresh != NULL) {
                coord_release(&coord);
                nomad_client_free(c.client);
                c.client = fresh;
                if (telemetry.metrics != NULL)
                    nomad_client_set_observer(c.client, metrics_observe_nomad_request, telemetry.metrics);
                coord_init(&coord, c.client, &p);
            }
        }
        if (!node_scope && policy_may_act(&p, "cluster")) {
            state = coord_hold(&coord, (long long)time(NULL), why, sizeof(why));
            if (first || state != last_state) {
                if (state == LOCK_STANDBY)
                    log_info("main", "standby: %s; waiting to take over", why);
                else if (state == LOCK_UNAVAILABLE)
                    log_warn("main", "the leadership lock cannot be used (%s); acting alone with restarts off", why);
                else
                    log_info("main", "holding the leadership lock: acting");
            }
            first = 0;
            last_state = state;
            c.coordination_problem = state == LOCK_UNAVAILABLE ? why : NULL;
        } else if (!node_scope) {
            /* Dry runs only: nothing to coordinate, so hold no lock (a reload may have turned acting off). */
            coord_release(&coord);
            c.coordination_problem = NULL;
        }
        telemetry.holds_lock = node_scope || state == LOCK_HELD || !policy_may_act(&p, "cluster");
        if (state == LOCK_STANDBY && telemetry.api != NULL) {
            /* A standby is alive and ready to take over: healthy, but not ready (it holds no lock). */
            struct http_api_status status = {0};

            status.last_pass_finished_at = (long long)time(NULL);
            status.last_complete_observation_at = telemetry.last_complete_at;
            status.holds_lock = 0;
            status.scope = c.scope;
            http_api_update(telemetry.api, &status);
        }
        if (state != LOCK_STANDBY && live_pass_observed(&c, 0, opts, 0, "Pass", &telemetry) != EXIT_OK)
            log_error("main", "pass failed; retrying after the interval");
        if (stop_requested)
            break;
        /* Only a wait that watched the lists up to its end may let the next pass reuse them. */
        telemetry.unchanged = 0;
        if (node_scope)
            wait_as_node_agent(&agent, p.interval_s);
        else if (state != LOCK_STANDBY && telemetry.last_pass_ok && telemetry.next_due != 0)
            telemetry.unchanged = wait_watching(&c, &coord, &telemetry);
        else if (state == LOCK_STANDBY)
            wait_holding(&coord, 0, p.interval_s > 5 ? 5 : p.interval_s, NULL, NULL);
        else
            wait_holding(&coord, coord.lock_id != NULL, p.interval_s, &c, &telemetry);
    }
    log_info("main", "stop requested; exiting after the current step");
    coord_release(&coord);
    rc = EXIT_OK;

out:
    snapshot_free(&telemetry.previous);
    if (have_agent)
        node_agent_free(&agent);
    http_api_stop(telemetry.api);
    metrics_free(telemetry.metrics);
    nomad_client_free(c.client);
    journal_close(c.journal);
    policy_free(&p);
    return rc;
}
