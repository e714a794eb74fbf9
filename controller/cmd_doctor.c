/* The doctor command: read-only configuration checks, printed as a table or as JSON. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "doctor.h"
#include "source.h"

/* Text output wraps finding details at this column. */
#define TEXT_WIDTH 100

static const enum doctor_severity severity_order[] = {DOCTOR_CRITICAL, DOCTOR_WARNING, DOCTOR_INFO};

/*
 * Print text after label, wrapped at TEXT_WIDTH with continuation lines
 * indented by indent columns. A newline in text starts a new line, and
 * lines that begin with spaces (a job file block) are printed as they are.
 */
static void print_wrapped(FILE *out, const char *label, const char *text, int indent)
{
    const char *line = text;
    int first = 1;

    while (line != NULL) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        int column;

        if (first)
            column = fprintf(out, "%*s%s", indent - (int)strlen(label), "", label);
        else
            column = fprintf(out, "%*s", indent, "");
        first = 0;
        if (len > 0 && line[0] == ' ') {
            fprintf(out, "%.*s\n", (int)len, line);
        } else {
            size_t pos = 0;
            int at_start = 1;

            while (pos < len) {
                size_t word = pos;

                while (word < len && line[word] != ' ')
                    word++;
                if (!at_start && column + 1 + (int)(word - pos) > TEXT_WIDTH) {
                    fprintf(out, "\n%*s", indent, "");
                    column = indent;
                    at_start = 1;
                }
                column += fprintf(out, "%s%.*s", at_start ? "" : " ", (int)(word - pos), line + pos);
                at_start = 0;
                pos = word;
                while (pos < len && line[pos] == ' ')
                    pos++;
            }
            fputc('\n', out);
        }
        line = end != NULL ? end + 1 : NULL;
    }
}

/*
 * The client's error text without its leading "GET /v1/...: ", which the
 * read's name (with its query string) already shows.
 */
static const char *error_detail(const char *error)
{
    const char *colon = strstr(error, ": ");

    if (strncmp(error, "GET /", 5) == 0 && colon != NULL && memchr(error, ' ', (size_t)(colon - error)) ==
        error + 3)
        return colon + 2;
    return error;
}

static void print_count(FILE *out, const char *what, long n)
{
    if (n < 0)
        fprintf(out, "? %s", what);
    else
        fprintf(out, "%ld %s%s", n, what, n == 1 ? "" : "s");
}

static void print_heartbeat_text(FILE *out, const struct doctor_heartbeat *hb)
{
    char ttl_min[32], ttl_max[32], down[32], need[32], grace[32], min_ttl[32];
    char line[1024];

    if (!hb->known) {
        fprintf(out, "Heartbeats: unknown, because the agent configuration or the node list could not be read\n");
        return;
    }
    doctor_format_duration(hb->ttl_min_s, ttl_min, sizeof(ttl_min));
    doctor_format_duration(hb->ttl_max_s, ttl_max, sizeof(ttl_max));
    doctor_format_duration(hb->down_after_max_s, down, sizeof(down));
    doctor_format_duration(hb->required_window_s, need, sizeof(need));
    doctor_format_duration(hb->grace_s, grace, sizeof(grace));
    doctor_format_duration(hb->min_ttl_s, min_ttl, sizeof(min_ttl));
    snprintf(line, sizeof(line),
             "%ld live node%s get a TTL of %s to %s and are marked down up to %s after their last heartbeat; "
             "disconnect windows need at least %s. Server settings: heartbeat_grace %s, min_heartbeat_ttl %s, "
             "max_heartbeats_per_second %g%s%s%s",
             hb->live_nodes, hb->live_nodes == 1 ? "" : "s", ttl_min, ttl_max, down, need, grace, min_ttl,
             hb->max_per_second, hb->assumed_because != NULL ? " (Nomad's defaults, because " : ".",
             hb->assumed_because != NULL ? hb->assumed_because : "", hb->assumed_because != NULL ? ")." : "");
    print_wrapped(out, "Heartbeats: ", line, 12);
}

static void print_text(FILE *out, const struct doctor_report *r, const char *address)
{
    size_t ran = 0, skipped = 0;

    fprintf(out, "Doctor: %s: ", address);
    print_count(out, "server", r->servers);
    fprintf(out, ", ");
    print_count(out, "client", r->clients);
    fprintf(out, ", ");
    print_count(out, "job", r->jobs);
    fprintf(out, " with ");
    print_count(out, "task group", r->task_groups);
    fprintf(out, "\n");
    print_heartbeat_text(out, &r->heartbeat);

    if (r->n_findings > 0) {
        fprintf(out, "\n%-9s %-29s %s\n", "SEVERITY", "CHECK", "SUBJECT");
        for (size_t s = 0; s < sizeof(severity_order) / sizeof(severity_order[0]); s++) {
            for (size_t i = 0; i < r->n_findings; i++) {
                const struct doctor_finding *f = &r->findings[i];

                if (f->severity != severity_order[s])
                    continue;
                fprintf(out, "%-9s %-29s %s\n", doctor_severity_name(f->severity), f->check, f->subject);
                print_wrapped(out, "saw: ", f->observed, 10);
                print_wrapped(out, "why: ", f->impact, 10);
                print_wrapped(out, "fix: ", f->fix, 10);
                fputc('\n', out);
            }
        }
    } else {
        fputc('\n', out);
    }

    for (size_t i = 0; i < DOCTOR_N_CHECKS; i++) {
        ran += r->checks[i].ran;
        skipped += !r->checks[i].ran;
    }
    if (r->n_failed_reads > 0) {
        fprintf(out, "Failed reads (%zu): the checks that need them did not run, so the cluster is not known to "
                     "be healthy\n", r->n_failed_reads);
        for (size_t i = 0; i < r->n_failed_reads; i++)
            fprintf(out, "  %s: %s\n", r->failed_reads[i].read, error_detail(r->failed_reads[i].error));
        for (size_t i = 0; i < DOCTOR_N_CHECKS; i++) {
            const struct doctor_check *c = &r->checks[i];

            if (c->note != NULL)
                fprintf(out, "  check %s %s: %s\n", c->id, c->ran ? "incomplete" : "not run", c->note);
        }
        fputc('\n', out);
    }
    if (r->n_findings == 0 && r->n_failed_reads == 0) {
        fprintf(out, "No findings: all %zu checks ran on a complete read of the cluster.\n", ran);
        return;
    }
    fprintf(out, "Findings: %zu critical, %zu warning, %zu info; %zu of %d checks ran%s.\n",
            doctor_count(r, DOCTOR_CRITICAL), doctor_count(r, DOCTOR_WARNING), doctor_count(r, DOCTOR_INFO), ran,
            DOCTOR_N_CHECKS, skipped > 0 ? ", the others need reads that failed" : "");
}

static cJSON *heartbeat_json(const struct doctor_heartbeat *hb)
{
    cJSON *o, *assumed;

    if (!hb->known)
        return cJSON_CreateNull();
    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "heartbeat_grace_s", hb->grace_s);
    cJSON_AddNumberToObject(o, "min_heartbeat_ttl_s", hb->min_ttl_s);
    cJSON_AddNumberToObject(o, "max_heartbeats_per_second", hb->max_per_second);
    assumed = cJSON_AddArrayToObject(o, "defaults_assumed");
    if (hb->grace_assumed)
        cJSON_AddItemToArray(assumed, cJSON_CreateString("heartbeat_grace"));
    if (hb->min_ttl_assumed)
        cJSON_AddItemToArray(assumed, cJSON_CreateString("min_heartbeat_ttl"));
    if (hb->rate_assumed)
        cJSON_AddItemToArray(assumed, cJSON_CreateString("max_heartbeats_per_second"));
    if (hb->assumed_because != NULL)
        cJSON_AddStringToObject(o, "defaults_assumed_because", hb->assumed_because);
    cJSON_AddNumberToObject(o, "live_nodes", (double)hb->live_nodes);
    cJSON_AddNumberToObject(o, "ttl_min_s", hb->ttl_min_s);
    cJSON_AddNumberToObject(o, "ttl_max_s", hb->ttl_max_s);
    cJSON_AddNumberToObject(o, "down_after_max_s", hb->down_after_max_s);
    cJSON_AddNumberToObject(o, "required_window_s", hb->required_window_s);
    return o;
}

static void add_count(cJSON *o, const char *key, long n)
{
    if (n < 0)
        cJSON_AddNullToObject(o, key);
    else
        cJSON_AddNumberToObject(o, key, (double)n);
}

/* Print the report as one JSON object. Returns 0, or -1 when memory runs out. */
static int print_json(FILE *out, const struct doctor_report *r, const char *address)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *cluster, *summary, *findings, *checks, *reads;
    char *text;

    if (root == NULL)
        return -1;
    cJSON_AddStringToObject(root, "nomad_address", address);
    cJSON_AddBoolToObject(root, "complete", r->n_failed_reads == 0);
    cluster = cJSON_AddObjectToObject(root, "cluster");
    add_count(cluster, "servers", r->servers);
    add_count(cluster, "clients", r->clients);
    add_count(cluster, "jobs", r->jobs);
    add_count(cluster, "task_groups", r->task_groups);
    cJSON_AddItemToObject(root, "heartbeat", heartbeat_json(&r->heartbeat));
    summary = cJSON_AddObjectToObject(root, "summary");
    cJSON_AddNumberToObject(summary, "findings", (double)r->n_findings);
    for (size_t s = 0; s < sizeof(severity_order) / sizeof(severity_order[0]); s++)
        cJSON_AddNumberToObject(summary, doctor_severity_name(severity_order[s]),
                                (double)doctor_count(r, severity_order[s]));

    findings = cJSON_AddArrayToObject(root, "findings");
    for (size_t s = 0; s < sizeof(severity_order) / sizeof(severity_order[0]); s++) {
        for (size_t i = 0; i < r->n_findings; i++) {
            const struct doctor_finding *f = &r->findings[i];
            cJSON *o;

            if (f->severity != severity_order[s])
                continue;
            o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "check", f->check);
            cJSON_AddStringToObject(o, "severity", doctor_severity_name(f->severity));
            cJSON_AddStringToObject(o, "subject", f->subject);
            cJSON_AddStringToObject(o, "observed", f->observed);
            cJSON_AddStringToObject(o, "impact", f->impact);
            cJSON_AddStringToObject(o, "fix", f->fix);
            cJSON_AddItemToObject(o, "evidence", cJSON_Duplicate(f->evidence, 1));
            cJSON_AddItemToArray(findings, o);
        }
    }

    checks = cJSON_AddArrayToObject(root, "checks");
    for (size_t i = 0; i < DOCTOR_N_CHECKS; i++) {
        const struct doctor_check *c = &r->checks[i];
        cJSON *o = cJSON_CreateObject();

        cJSON_AddStringToObject(o, "check", c->id);
        cJSON_AddStringToObject(o, "title", c->title);
        cJSON_AddBoolToObject(o, "ran", c->ran);
        cJSON_AddBoolToObject(o, "complete", c->complete);
        cJSON_AddNumberToObject(o, "findings", (double)c->findings);
        if (c->note != NULL)
            cJSON_AddStringToObject(o, "note", c->note);
        cJSON_AddItemToArray(checks, o);
    }

    reads = cJSON_AddArrayToObject(root, "failed_reads");
    for (size_t i = 0; i < r->n_failed_reads; i++) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddStringToObject(o, "read", r->failed_reads[i].read);
        cJSON_AddStringToObject(o, "error", r->failed_reads[i].error);
        cJSON_AddItemToArray(reads, o);
    }

    text = cJSON_Print(root);
    cJSON_Delete(root);
    if (text == NULL)
        return -1;
    fprintf(out, "%s\n", text);
    free(text);
    return 0;
}

int cmd_doctor(const struct cli_options *opts)
{
    struct nomad_client *client = NULL;
    struct source *src = NULL;
    struct doctor_report report;
    int have_report = 0;
    struct policy p;
    char err[256];
    int rc = EXIT_ERROR;

    if (opts->argc > 0) {
        fprintf(stderr, "nomad-medic: doctor takes no arguments, got \"%s\"; see nomad-medic doctor --help\n",
                opts->argv[0]);
        return EXIT_ERROR;
    }
    if (opts->from_capture != NULL) {
        fprintf(stderr, "nomad-medic: doctor reads the live cluster only; drop --from-capture and point "
                        "NOMAD_ADDR (or the configuration's nomad.address) at the cluster\n");
        return EXIT_ERROR;
    }
    if (cli_load_policy(opts, &p) != 0)
        return EXIT_ERROR;
    client = cli_new_client(&p);
    if (client == NULL)
        goto out;
    src = source_live_new(client, p.per_page);
    if (src == NULL) {
        fprintf(stderr, "nomad-medic: out of memory\n");
        goto out;
    }

    have_report = 1;
    if (doctor_run(src, &report, err, sizeof(err)) != 0) {
        fprintf(stderr, "nomad-medic: doctor failed: %s\n", err);
        goto out;
    }
    if (opts->json) {
        if (print_json(stdout, &report, nomad_client_address(client)) != 0) {
            fprintf(stderr, "nomad-medic: out of memory while printing the report\n");
            goto out;
        }
    } else {
        print_text(stdout, &report, nomad_client_address(client));
    }

    if (report.n_failed_reads > 0) {
        fprintf(stderr, "nomad-medic: doctor: %zu read%s of the cluster failed, so some checks did not run; fix "
                        "the connection or the ACL token's permissions (see nomad-medic doctor --help) and run it "
                        "again\n",
                report.n_failed_reads, report.n_failed_reads == 1 ? "" : "s");
        rc = EXIT_ERROR;
    } else if (report.n_findings > 0 && opts->detailed_exitcode) {
        /* The same code plan --detailed-exitcode uses for "something to act on". */
        rc = EXIT_PLAN_CHANGES;
    } else {
        rc = EXIT_OK;
    }

out:
    if (have_report)
        doctor_report_free(&report);
    source_destroy(src);
    nomad_client_free(client);
    policy_free(&p);
    return rc;
}
