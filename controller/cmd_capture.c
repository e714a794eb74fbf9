/* capture DIR: save everything a pass reads, for plan --from-capture. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>

#include "cli.h"
#include "log.h"
#include "reconcile.h"

int cmd_capture(const struct cli_options *opts)
{
    struct controller c = {.scope = "cluster"};
    struct source *live = NULL;
    struct source *src = NULL;
    struct pass_result r;
    struct policy p;
    char err[1024] = "";
    int rc = EXIT_ERROR;

    if (opts->argc != 1) {
        fprintf(stderr, "nomad-medic: capture needs exactly one argument, the directory to write; "
                "see nomad-medic capture --help\n");
        return EXIT_ERROR;
    }
    if (cli_load_policy(opts, &p) != 0)
        return EXIT_ERROR;
    c.policy = &p;
    c.client = cli_new_client(&p);
    if (c.client == NULL)
        goto out;
    live = source_live_new(c.client, p.per_page);
    if (live == NULL)
        goto out;
    src = source_capture_writer_new(live, opts->argv[0], err, sizeof(err));
    if (src == NULL) {
        fprintf(stderr, "nomad-medic: cannot capture into %s: %s\n", opts->argv[0], err);
        source_destroy(live);
        goto out;
    }

    /*
     * A read-only pass issues exactly the reads a real pass makes. Keep the
     * client so the pass clock is wall time, but attach no journal.
     */
    if (reconcile_pass(&c, src, 1, &r, err, sizeof(err)) != 0) {
        fprintf(stderr, "nomad-medic: capture failed: %s\n", err);
    } else {
        printf("captured %zu reads (%zu failed) into %s\n", r.snapshot.n_reads,
               r.failed_reads, opts->argv[0]);
        printf("replay with: nomad-medic plan --from-capture %s\n", opts->argv[0]);
        rc = EXIT_OK;
    }
    pass_result_free(&r);
    source_destroy(src);

out:
    nomad_client_free(c.client);
    policy_free(&p);
    return rc;
}
