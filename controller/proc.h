/*
 * Running a helper program (CNI plugins, iptables, ip) without a shell.
 *
 * The program gets an argument vector, never a command line, so nothing from
 * Nomad or from the host can be interpreted by a shell. Its standard output
 * and error are captured up to a cap, and it is killed (SIGKILL) when the time
 * limit passes.
 */
#ifndef NOMAD_MEDIC_PROC_H
#define NOMAD_MEDIC_PROC_H

#include <stddef.h>

struct proc_result {
    int exit_code;        /* 0..255 when the program exited, -1 otherwise */
    int term_signal;      /* the signal that ended it, 0 when it exited */
    int timed_out;        /* 1 when it was killed for running past the time limit */
    char *out;            /* standard output, NUL-terminated (out_len excludes the NUL) */
    size_t out_len;
    char *err;            /* standard error, NUL-terminated */
    size_t err_len;
    int truncated;        /* output beyond max_output was dropped */
};

/*
 * Run argv[0] (looked up in PATH when it has no slash) with argv. envp is the
 * full environment, or NULL to inherit ours. stdin_data (may be NULL) is
 * written to its standard input, which is then closed. Returns 0 when the
 * program ran to an end (check res->exit_code), or -1 with errbuf filled when
 * it could not be started, timed out or output could not be read; res is
 * filled as far as possible either way and must be freed.
 */
int proc_run(const char *const *argv, const char *const *envp, const char *stdin_data,
             size_t stdin_len, long timeout_ms, size_t max_output, struct proc_result *res,
             char *errbuf, size_t errsz);

void proc_result_free(struct proc_result *res);

/* First line of the program's standard error (or output), trimmed, for messages. */
const char *proc_brief(const struct proc_result *res, char *buf, size_t bufsz);

#endif
