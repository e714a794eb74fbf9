/* The journal commands: actions list|show|approve|reject, history. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"
#include "report.h"

static int access_journal_missing(const struct policy *p)
{
    return access(p->journal_path, F_OK) != 0;
}

static int parse_id(const char *text, long long *id)
{
    char *end;

    *id = strtoll(text, &end, 10);
    if (text[0] == '\0' || *end != '\0' || *id <= 0) {
        fprintf(stderr, "nomad-medic: invalid action ID \"%s\"; expected a positive number from "
                "nomad-medic actions list\n", text);
        return -1;
    }
    return 0;
}

static int list_rows(struct journal *j, unsigned mask, size_t limit, int json)
{
    struct journal_action *rows = NULL;
    char err[1024];
    size_t n = 0;

    if (journal_action_list(j, mask, limit, &rows, &n, err, sizeof(err)) != JOURNAL_OK) {
        fprintf(stderr, "nomad-medic: %s\n", err);
        return EXIT_ERROR;
    }
    if (json)
        report_rows_json(stdout, rows, n);
    else
        report_rows_text(stdout, rows, n);
    journal_action_list_free(rows, n);
    return EXIT_OK;
}

static int show_row(struct journal *j, long long id, int json)
{
    struct journal_action row;
    char err[1024];
    int rc;

    memset(&row, 0, sizeof(row));
    rc = journal_action_get(j, id, &row, err, sizeof(err));
    if (rc == JOURNAL_NOT_FOUND) {
        fprintf(stderr, "nomad-medic: no action %lld in the journal; see nomad-medic actions list --all\n", id);
        return EXIT_ERROR;
    }
    if (rc != JOURNAL_OK) {
        fprintf(stderr, "nomad-medic: %s\n", err);
        return EXIT_ERROR;
    }
    {
        struct journal_step *steps = NULL;
        size_t n_steps = 0;

        if (journal_steps_list(j, id, &steps, &n_steps, err, sizeof(err)) != JOURNAL_OK) {
            fprintf(stderr, "nomad-medic: %s\n", err);
            journal_action_free(&row);
            return EXIT_ERROR;
        }
        if (json)
            report_row_detail_json(stdout, &row, steps, n_steps);
        else
            report_row_detail_text(stdout, &row, steps, n_steps);
        journal_steps_free(steps, n_steps);
    }
    journal_action_free(&row);
    return EXIT_OK;
}

static int decide(struct journal *j, const struct cli_options *opts, long long id, int approve)
{
    char who[256];
    char err[1024];
    int rc;

    cli_decider(opts, who, sizeof(who));
    rc = journal_action_decide(j, id, approve, who, (long long)time(NULL), err, sizeof(err));
    if (rc == JOURNAL_NOT_FOUND) {
        fprintf(stderr, "nomad-medic: no action %lld in the journal; see nomad-medic actions list\n", id);
        return EXIT_ERROR;
    }
    if (rc != JOURNAL_OK) {
        fprintf(stderr, "nomad-medic: cannot %s action %lld: %s\n", approve ? "approve" : "reject", id, err);
        return EXIT_ERROR;
    }
    log_info("actions", "action id=%lld %s by %s", id, approve ? "approved" : "rejected", who);
    printf("action %lld %s by %s%s\n", id, approve ? "approved" : "rejected", who,
           approve ? "; it runs on the next pass if a fresh re-check still holds" : "");
    return EXIT_OK;
}

int cmd_actions(const struct cli_options *opts)
{
    const char *sub = opts->argc > 0 ? opts->argv[0] : "list";
    struct journal *j = NULL;
    struct policy p;
    int readonly = strcmp(sub, "list") == 0 || strcmp(sub, "show") == 0;
    int rc = EXIT_ERROR;
    long long id = 0;

    if (strcmp(sub, "list") != 0 && strcmp(sub, "show") != 0 && strcmp(sub, "approve") != 0 &&
        strcmp(sub, "reject") != 0) {
        fprintf(stderr, "nomad-medic: unknown actions subcommand \"%s\"; expected list, show, approve "
                "or reject\n", sub);
        return EXIT_ERROR;
    }
    if (strcmp(sub, "list") != 0) {
        if (opts->argc < 2) {
            fprintf(stderr, "nomad-medic: actions %s needs an action ID; see nomad-medic actions list\n", sub);
            return EXIT_ERROR;
        }
        if (parse_id(opts->argv[1], &id) != 0)
            return EXIT_ERROR;
    }
    if (cli_load_policy(opts, &p) != 0)
        return EXIT_ERROR;
    if (readonly && access_journal_missing(&p)) {
        fprintf(stderr, "nomad-medic: no journal at %s yet; run a pass first or pass --db PATH\n",
                p.journal_path);
        goto out;
    }
    if (cli_open_journal(&p, readonly, &j) != 0)
        goto out;

    if (strcmp(sub, "list") == 0) {
        unsigned mask = (1u << JS_PENDING_APPROVAL) | (1u << JS_APPROVED) | (1u << JS_EXECUTING);
        enum journal_state state;

        if (opts->all) {
            mask = (1u << JS_STATE_COUNT) - 1;
        } else if (opts->state != NULL) {
            if (journal_parse_state(opts->state, &state) != 0) {
                fprintf(stderr, "nomad-medic: invalid --state \"%s\"; expected one of dry_run, "
                        "pending_approval, approved, rejected, expired, executing, succeeded, failed, "
                        "unknown, blocked\n", opts->state);
                goto out;
            }
            mask = 1u << state;
        }
        rc = list_rows(j, mask, opts->limit > 0 ? (size_t)opts->limit : 0, opts->json);
    } else if (strcmp(sub, "show") == 0) {
        rc = show_row(j, id, opts->json);
    } else {
        rc = decide(j, opts, id, strcmp(sub, "approve") == 0);
    }

out:
    journal_close(j);
    policy_free(&p);
    return rc;
}

int cmd_history(const struct cli_options *opts)
{
    struct journal *j = NULL;
    struct policy p;
    int rc = EXIT_ERROR;

    if (cli_load_policy(opts, &p) != 0)
        return EXIT_ERROR;
    if (access_journal_missing(&p)) {
        fprintf(stderr, "nomad-medic: no journal at %s yet; run a pass first or pass --db PATH\n",
                p.journal_path);
        goto out;
    }
    if (cli_open_journal(&p, 1, &j) != 0)
        goto out;
    rc = list_rows(j, (1u << JS_STATE_COUNT) - 1, opts->limit < 0 ? 50 : (size_t)opts->limit, opts->json);

out:
    journal_close(j);
    policy_free(&p);
    return rc;
}
