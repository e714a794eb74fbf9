/* Command-line interface: options shared by every command, and the commands. */
#ifndef NOMAD_MEDIC_CLI_H
#define NOMAD_MEDIC_CLI_H

#include "../policies/policy.h"
#include "../store/journal.h"
#include "nomad.h"

/* Exit codes. PLAN_CHANGES only with plan --detailed-exitcode. */
#define EXIT_OK 0
#define EXIT_ERROR 1
#define EXIT_PLAN_CHANGES 2

struct cli_options {
    const char *command;
    const char *config_path;
    const char *db_path;
    const char *mode;
    const char *scope;
    const char *log_level;
    const char *from_capture;
    const char *by;
    const char *state;
    int json;
    int detailed_exitcode;
    int help;
    int all;
    long limit;
    int argc;            /* positional arguments after the command */
    char **argv;
};

/* Load the policy named by --config (or the built-in default) and apply --mode, --db and --log-level. */
int cli_load_policy(const struct cli_options *opts, struct policy *p);

/* Open the journal at p->journal_path. With readonly, a missing file leaves *j NULL and succeeds. */
int cli_open_journal(const struct policy *p, int readonly, struct journal **j);

struct nomad_client *cli_new_client(const struct policy *p);

/* "cluster" or "node", from --scope (default cluster; main() has validated it). */
const char *cli_scope(const struct cli_options *opts);

/* Print help for command (NULL: the overview). */
void cli_usage(FILE *out, const char *command);

/* The name recorded as who decided, from --by, SUDO_USER, USER or the uid. */
void cli_decider(const struct cli_options *opts, char *buf, size_t bufsz);

int cmd_run(const struct cli_options *opts);
int cmd_once(const struct cli_options *opts);
int cmd_plan(const struct cli_options *opts);
int cmd_capture(const struct cli_options *opts);
int cmd_actions(const struct cli_options *opts);
int cmd_history(const struct cli_options *opts);
int cmd_doctor(const struct cli_options *opts);

#endif
