/* nomad-medic: entry point, option parsing and the set-up every command shares. */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"

static const char overview[] =
    "Usage: nomad-medic COMMAND [OPTIONS]\n"
    "\n"
    "Remediation controller for HashiCorp Nomad: observes the cluster, compares it with a\n"
    "policy, and repairs it through rate-limited, journaled actions.\n"
    "\n"
    "Commands:\n"
    "  run                      reconcile in a loop until SIGTERM or SIGINT; SIGHUP reloads the policy\n"
    "  once                     run one reconcile pass and exit\n"
    "  plan                     show what a pass would do, without acting or journaling\n"
    "  capture DIR              save everything a pass reads into DIR, for plan --from-capture\n"
    "  actions list|show|approve|reject\n"
    "                           inspect and decide journaled actions\n"
    "  history                  list journaled actions, newest first\n"
    "  doctor                   check the cluster's configuration for heartbeat-loss risks (read-only)\n"
    "  version                  print the version\n"
    "\n"
    "Options for every command:\n"
    "  --config FILE            configuration and policy file (default: built-in policy, dry-run)\n"
    "  --db PATH                journal file (default from the configuration:\n"
    "                           /var/lib/nomad-medic/journal.db)\n"
    "  --mode MODE              dry-run, approve or enforce: overrides every rule's mode for this run\n"
    "  --scope SCOPE            cluster (default): the Nomad API; node: this client host's\n"
    "                           leaked network namespaces and CNI state (run as root)\n"
    "  --log-level LEVEL        debug, info, warn or error (default info); logs go to stderr\n"
    "  --json                   print JSON instead of tables\n"
    "  --help                   help for a command, e.g. nomad-medic plan --help\n"
    "\n"
    "The Nomad connection comes from NOMAD_ADDR, NOMAD_TOKEN, NOMAD_REGION, NOMAD_NAMESPACE,\n"
    "NOMAD_CACERT, NOMAD_CAPATH, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY, NOMAD_TLS_SERVER_NAME,\n"
    "NOMAD_SKIP_VERIFY and NOMAD_HTTP_AUTH, as for the nomad CLI; the configuration file's\n"
    "nomad group overrides them where set.\n";

static const struct {
    const char *command;
    const char *text;
} command_help[] = {
    {"run",
     "Usage: nomad-medic run [--config FILE] [--db PATH] [--mode MODE]\n"
     "\n"
     "Reconcile in a loop, one pass every controller.interval (default 1m). SIGTERM and SIGINT\n"
     "let the current step finish, then exit 0. SIGHUP reloads the configuration file; an invalid\n"
     "file is reported and the previous policy stays in force. At start-up, actions a crash left\n"
     "in the executing state are re-checked and resolved, never repeated blindly.\n"},
    {"once",
     "Usage: nomad-medic once [--config FILE] [--db PATH] [--mode MODE] [--json]\n"
     "\n"
     "Run one reconcile pass, print what it did, and exit. Exit status 0 when the pass ran\n"
     "(even if reads failed: the actions that depended on them were blocked and listed), 1 on\n"
     "an error of nomad-medic itself (configuration, journal).\n"},
    {"plan",
     "Usage: nomad-medic plan [--config FILE] [--db PATH] [--mode MODE] [--json]\n"
     "                        [--detailed-exitcode] [--from-capture PATH]\n"
     "\n"
     "Show what a pass would do now: every proposed action with the guard that would block it,\n"
     "and every advisory. Nothing is journaled and no mutating request is sent. The journal,\n"
     "when it exists, is read for first-seen times, approvals, cooldowns and rate limits.\n"
     "\n"
     "  --from-capture PATH      read a directory written by `nomad-medic capture`, or a\n"
     "                           `nomad operator debug` bundle (directory or .tar.gz), instead\n"
     "                           of the live API; a debug bundle has no service registrations\n"
     "  --detailed-exitcode      exit 0 when nothing is proposed, 2 when actions are proposed\n"
     "                           (blocked ones included; advisories alone exit 0), 1 on error\n"
     "  --json                   one object with actions, advisories, rules and failed_reads\n"},
    {"capture",
     "Usage: nomad-medic capture DIR [--config FILE]\n"
     "\n"
     "Read the cluster as a pass would, saving every response (failed ones included) with a\n"
     "manifest into DIR, which must not hold a capture already. The ACL token is not saved.\n"
     "Replay it with: nomad-medic plan --from-capture DIR\n"},
    {"actions",
     "Usage: nomad-medic actions list [--all | --state STATE] [--json]\n"
     "       nomad-medic actions show ID [--json]\n"
     "       nomad-medic actions approve ID [--by NAME]\n"
     "       nomad-medic actions reject ID [--by NAME]\n"
     "\n"
     "list shows open actions (pending_approval, approved, executing); --all shows every row,\n"
     "--state one state. approve lets a pending action run on the next pass, after a fresh\n"
     "re-check; if its evidence changed by then it does not run. Approvals expire after\n"
     "controller.approval_ttl (default 24h). --by names who decided (default: SUDO_USER, USER).\n"},
    {"history",
     "Usage: nomad-medic history [--limit N] [--json]\n"
     "\n"
     "List journaled actions in every state, newest first (default limit 50; 0 for all).\n"},
    {"doctor",
     "Usage: nomad-medic doctor [--config FILE] [--json] [--detailed-exitcode]\n"
     "\n"
     "Read the cluster and report configuration that makes it fragile when clients miss\n"
     "heartbeats. Each finding has a severity (critical, warning, info), what was seen, why it\n"
     "matters and what to change. Nothing is written to the cluster or the journal.\n"
     "\n"
     "Checks:\n"
     "  colocated_server_client       a client whose address is a server's address\n"
     "  client_reserved_missing       clients with no reserved cpu or memory (critical when\n"
     "                                memory oversubscription is enabled)\n"
     "  servers_too_few, servers_even fewer than three servers, or an even number\n"
     "  raft_missing_server           a live server that is not in the Raft configuration\n"
     "  autopilot_unhealthy           autopilot reports servers unhealthy\n"
     "  group_stops_on_disconnect     disconnect.stop_on_client_after or stop_after_client_disconnect\n"
     "  deprecated_disconnect_fields  max_client_disconnect, stop_after_client_disconnect and\n"
     "                                prevent_reschedule_on_lost, which Nomad 1.10 and later ignore\n"
     "  nomad_version_bug             server or client versions with known bugs in native service\n"
     "                                registrations, bridge IP reservations or node-down handling\n"
     "  nomad_version_unknown         agents whose version cannot be read\n"
     "  disconnect_window_short       lost_after, stop_on_client_after or max_client_disconnect\n"
     "                                shorter than 2 x the worst-case heartbeat TTL + heartbeat_grace\n"
     "\n"
     "Heartbeat settings come from /v1/agent/self (config.Server) of the agent at the Nomad\n"
     "address; settings it does not show are taken as Nomad's defaults (heartbeat_grace 10s,\n"
     "min_heartbeat_ttl 10s, max_heartbeats_per_second 50), and the output says so. Point\n"
     "NOMAD_ADDR at a server: a client agent does not show them.\n"
     "\n"
     "ACL token: node:read, agent:read, operator:read and read-job in every namespace; Nomad\n"
     "versions that guard the Raft configuration with a management token need one.\n"
     "\n"
     "  --json                   one object with cluster, heartbeat, summary, findings, checks\n"
     "                           and failed_reads\n"
     "  --detailed-exitcode      exit 2 when there are findings\n"
     "\n"
     "Exit status: 0 when every read succeeded (and, with --detailed-exitcode, nothing was\n"
     "found); 2 with --detailed-exitcode when there are findings; 1 when a read failed (the\n"
     "checks that need it did not run, so the cluster is not known to be healthy) or on an\n"
     "error of nomad-medic itself.\n"},
    {"version", "Usage: nomad-medic version\n\nPrint the version.\n"},
};

void cli_usage(FILE *out, const char *command)
{
    if (command != NULL) {
        for (size_t i = 0; i < sizeof(command_help) / sizeof(command_help[0]); i++) {
            if (strcmp(command_help[i].command, command) == 0) {
                fputs(command_help[i].text, out);
                return;
            }
        }
    }
    fputs(overview, out);
}

void cli_decider(const struct cli_options *opts, char *buf, size_t bufsz)
{
    const char *name = opts->by;

    if (name == NULL || name[0] == '\0')
        name = getenv("SUDO_USER");
    if (name == NULL || name[0] == '\0')
        name = getenv("USER");
    if (name != NULL && name[0] != '\0')
        snprintf(buf, bufsz, "cli:%s", name);
    else
        snprintf(buf, bufsz, "cli:uid-%ld", (long)getuid());
}

int cli_load_policy(const struct cli_options *opts, struct policy *p)
{
    char err[1024];
    enum log_level level;

    if (opts->config_path != NULL) {
        if (policy_load(opts->config_path, p, err, sizeof(err)) != 0) {
            fprintf(stderr, "nomad-medic: invalid configuration: %s\n", err);
            return -1;
        }
    } else if (policy_init_defaults(p, err, sizeof(err)) != 0) {
        fprintf(stderr, "nomad-medic: %s\n", err);
        return -1;
    }

    if (opts->mode != NULL) {
        enum policy_mode mode;

        if (policy_parse_mode(opts->mode, &mode) != 0) {
            fprintf(stderr, "nomad-medic: invalid --mode \"%s\"; expected dry-run, approve or enforce\n",
                    opts->mode);
            policy_free(p);
            return -1;
        }
        policy_force_mode(p, mode);
    }
    if (opts->db_path != NULL) {
        char *copy = strdup(opts->db_path);

        if (copy == NULL) {
            policy_free(p);
            return -1;
        }
        free(p->journal_path);
        p->journal_path = copy;
    }

    if (opts->log_level != NULL) {
        if (log_parse_level(opts->log_level, &level) != 0) {
            fprintf(stderr, "nomad-medic: invalid --log-level \"%s\"; expected debug, info, warn or error\n",
                    opts->log_level);
            policy_free(p);
            return -1;
        }
        log_set_level(level);
    } else if (p->log_level != NULL && log_parse_level(p->log_level, &level) == 0) {
        log_set_level(level);
    }
    return 0;
}

int cli_open_journal(const struct policy *p, int readonly, struct journal **j)
{
    char err[1024];

    *j = NULL;
    if (readonly && access(p->journal_path, F_OK) != 0)
        return 0;
    if (journal_open(p->journal_path, readonly ? JOURNAL_READONLY : 0, j, err, sizeof(err)) != JOURNAL_OK) {
        fprintf(stderr, "nomad-medic: %s\n", err);
        return -1;
    }
    return 0;
}

const char *cli_scope(const struct cli_options *opts)
{
    return opts->scope != NULL && strcmp(opts->scope, "node") == 0 ? "node" : "cluster";
}

struct nomad_client *cli_new_client(const struct policy *p)
{
    char err[1024];
    struct nomad_client *client = nomad_client_new(&p->nomad, err, sizeof(err));

    if (client == NULL)
        fprintf(stderr, "nomad-medic: invalid Nomad connection settings: %s\n", err);
    return client;
}

enum {
    OPT_CONFIG = 256,
    OPT_DB,
    OPT_MODE,
    OPT_SCOPE,
    OPT_LOG_LEVEL,
    OPT_JSON,
    OPT_DETAILED,
    OPT_FROM_CAPTURE,
    OPT_BY,
    OPT_STATE,
    OPT_ALL,
    OPT_LIMIT,
    OPT_HELP,
};

static int parse_options(int argc, char **argv, struct cli_options *opts)
{
    static const struct option long_options[] = {
        {"config", required_argument, NULL, OPT_CONFIG},
        {"db", required_argument, NULL, OPT_DB},
        {"mode", required_argument, NULL, OPT_MODE},
        {"scope", required_argument, NULL, OPT_SCOPE},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"json", no_argument, NULL, OPT_JSON},
        {"detailed-exitcode", no_argument, NULL, OPT_DETAILED},
        {"from-capture", required_argument, NULL, OPT_FROM_CAPTURE},
        {"by", required_argument, NULL, OPT_BY},
        {"state", required_argument, NULL, OPT_STATE},
        {"all", no_argument, NULL, OPT_ALL},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;

    opts->limit = -1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+h", long_options, NULL)) != -1) {
        char *end;

        switch (c) {
        case OPT_CONFIG: opts->config_path = optarg; break;
        case OPT_DB: opts->db_path = optarg; break;
        case OPT_MODE: opts->mode = optarg; break;
        case OPT_SCOPE: opts->scope = optarg; break;
        case OPT_LOG_LEVEL: opts->log_level = optarg; break;
        case OPT_JSON: opts->json = 1; break;
        case OPT_DETAILED: opts->detailed_exitcode = 1; break;
        case OPT_FROM_CAPTURE: opts->from_capture = optarg; break;
        case OPT_BY: opts->by = optarg; break;
        case OPT_STATE: opts->state = optarg; break;
        case OPT_ALL: opts->all = 1; break;
        case OPT_LIMIT:
            opts->limit = strtol(optarg, &end, 10);
            if (*end != '\0' || opts->limit < 0) {
                fprintf(stderr, "nomad-medic: invalid --limit \"%s\"; expected a whole number, 0 for all\n",
                        optarg);
                return -1;
            }
            break;
        case OPT_HELP:
        case 'h':
            opts->help = 1;
            break;
        default:
            fprintf(stderr, "nomad-medic: unknown or incomplete option \"%s\"; see nomad-medic --help\n",
                    argv[optind - 1]);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(const struct cli_options *opts);
    } commands[] = {
        {"run", cmd_run},         {"once", cmd_once},       {"plan", cmd_plan},
        {"capture", cmd_capture}, {"actions", cmd_actions}, {"history", cmd_history},
        {"doctor", cmd_doctor},
    };
    struct cli_options opts;
    char **rest;
    int n_rest = 0;

    memset(&opts, 0, sizeof(opts));
    /* A helper program that exits early must not kill us through a broken pipe. */
    signal(SIGPIPE, SIG_IGN);
    /* Options may come before or after the command and its arguments: collect positionals first. */
    rest = calloc((size_t)argc + 1, sizeof(*rest));
    if (rest == NULL)
        return EXIT_ERROR;
    {
        char **opt_argv = calloc((size_t)argc + 1, sizeof(*opt_argv));
        int n_opt = 1;

        if (opt_argv == NULL) {
            free(rest);
            return EXIT_ERROR;
        }
        opt_argv[0] = argv[0];
        for (int i = 1; i < argc; i++) {
            if (argv[i][0] == '-' && argv[i][1] != '\0') {
                opt_argv[n_opt++] = argv[i];
                /* Options with a separate value take the next word along. */
                if (strchr(argv[i], '=') == NULL && i + 1 < argc &&
                    (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "--db") == 0 ||
                     strcmp(argv[i], "--mode") == 0 || strcmp(argv[i], "--scope") == 0 ||
                     strcmp(argv[i], "--log-level") == 0 || strcmp(argv[i], "--from-capture") == 0 ||
                     strcmp(argv[i], "--by") == 0 || strcmp(argv[i], "--state") == 0 ||
                     strcmp(argv[i], "--limit") == 0))
                    opt_argv[n_opt++] = argv[++i];
            } else {
                rest[n_rest++] = argv[i];
            }
        }
        if (parse_options(n_opt, opt_argv, &opts) != 0) {
            free(opt_argv);
            free(rest);
            return EXIT_ERROR;
        }
        free(opt_argv);
    }

    if (n_rest == 0) {
        cli_usage(opts.help ? stdout : stderr, NULL);
        free(rest);
        return opts.help ? EXIT_OK : EXIT_ERROR;
    }
    opts.command = rest[0];
    opts.argc = n_rest - 1;
    opts.argv = rest + 1;

    if (strcmp(opts.command, "version") == 0) {
        if (opts.help)
            cli_usage(stdout, "version");
        else
            printf("nomad-medic %s\n", NOMAD_MEDIC_VERSION);
        free(rest);
        return EXIT_OK;
    }
    if (strcmp(opts.command, "help") == 0) {
        cli_usage(stdout, opts.argc > 0 ? opts.argv[0] : NULL);
        free(rest);
        return EXIT_OK;
    }
    if (opts.scope != NULL && strcmp(opts.scope, "cluster") != 0 && strcmp(opts.scope, "node") != 0) {
        fprintf(stderr, "nomad-medic: invalid --scope \"%s\"; expected cluster or node\n", opts.scope);
        free(rest);
        return EXIT_ERROR;
    }
    if (opts.scope != NULL && strcmp(opts.scope, "node") == 0 && strcmp(opts.command, "run") != 0 &&
        strcmp(opts.command, "once") != 0 && strcmp(opts.command, "plan") != 0 &&
        strcmp(opts.command, "actions") != 0 && strcmp(opts.command, "history") != 0) {
        fprintf(stderr, "nomad-medic: %s has no node scope; --scope node goes with run, once or plan\n",
                opts.command);
        free(rest);
        return EXIT_ERROR;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(commands[i].name, opts.command) == 0) {
            int rc;

            if (opts.help) {
                cli_usage(stdout, opts.command);
                free(rest);
                return EXIT_OK;
            }
            rc = commands[i].run(&opts);
            free(rest);
            return rc;
        }
    }
    fprintf(stderr, "nomad-medic: unknown command \"%s\"; see nomad-medic --help\n", opts.command);
    free(rest);
    return EXIT_ERROR;
}
