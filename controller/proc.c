/* Running helper programs with pipes, a time limit and an output cap. */
#define _GNU_SOURCE
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Append to a capped buffer; once full, the rest is counted as dropped. */
static int append(char **buf, size_t *len, size_t *cap, const char *data, size_t n, size_t max,
                  int *truncated)
{
    if (*len + n > max) {
        *truncated = 1;
        n = *len < max ? max - *len : 0;
    }
    if (*len + n + 1 > *cap) {
        size_t new_cap = (*len + n + 1) * 2;
        char *grown = realloc(*buf, new_cap);

        if (grown == NULL)
            return -1;
        *buf = grown;
        *cap = new_cap;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

void proc_result_free(struct proc_result *res)
{
    free(res->out);
    free(res->err);
    memset(res, 0, sizeof(*res));
    res->exit_code = -1;
}

const char *proc_brief(const struct proc_result *res, char *buf, size_t bufsz)
{
    const char *text = res->err_len > 0 ? res->err : res->out;
    size_t len;

    if (text == NULL) {
        snprintf(buf, bufsz, "(no output)");
        return buf;
    }
    while (*text == ' ' || *text == '\n' || *text == '\t')
        text++;
    len = strcspn(text, "\n");
    if (len >= bufsz)
        len = bufsz - 1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (len == 0)
        snprintf(buf, bufsz, "(no output)");
    return buf;
}

int proc_run(const char *const *argv, const char *const *envp, const char *stdin_data,
             size_t stdin_len, long timeout_ms, size_t max_output, struct proc_result *res,
             char *errbuf, size_t errsz)
{
    int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
    size_t out_cap = 0, err_cap = 0, written = 0;
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    long long deadline;
    int status = 0;
    pid_t pid;
    int rc;

    memset(res, 0, sizeof(*res));
    res->exit_code = -1;
    if (errsz > 0)
        errbuf[0] = '\0';
    if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0 ||
        pipe2(err_pipe, O_CLOEXEC) != 0) {
        snprintf(errbuf, errsz, "cannot create pipes for %s: %s", argv[0], strerror(errno));
        goto fail_pipes;
    }

    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in_pipe[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
    /*
     * The program gets a process group of its own, so a time-out kills what
     * it started too: a CNI plugin runs host-local, which holds the IPAM
     * lock, and must not outlive it.
     */
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    rc = posix_spawnp(&pid, argv[0], &actions, &attr, (char *const *)argv,
                      envp != NULL ? (char *const *)envp : environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    close(in_pipe[0]);
    close(out_pipe[1]);
    close(err_pipe[1]);
    in_pipe[0] = out_pipe[1] = err_pipe[1] = -1;
    if (rc != 0) {
        snprintf(errbuf, errsz, "cannot run %s: %s", argv[0], strerror(rc));
        goto fail_pipes;
    }

    if (stdin_data == NULL || stdin_len == 0) {
        close(in_pipe[1]);
        in_pipe[1] = -1;
    } else {
        fcntl(in_pipe[1], F_SETFL, O_NONBLOCK);
    }

    deadline = now_ms() + timeout_ms;
    while (out_pipe[0] >= 0 || err_pipe[0] >= 0 || in_pipe[1] >= 0) {
        struct pollfd fds[3];
        nfds_t n = 0;
        long long left = deadline - now_ms();

        if (left <= 0) {
            res->timed_out = 1;
            kill(-pid, SIGKILL);
            break;
        }
        if (out_pipe[0] >= 0)
            fds[n++] = (struct pollfd){.fd = out_pipe[0], .events = POLLIN};
        if (err_pipe[0] >= 0)
            fds[n++] = (struct pollfd){.fd = err_pipe[0], .events = POLLIN};
        if (in_pipe[1] >= 0)
            fds[n++] = (struct pollfd){.fd = in_pipe[1], .events = POLLOUT};
        if (poll(fds, n, (int)(left > 1000 ? 1000 : left)) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (nfds_t i = 0; i < n; i++) {
            char chunk[4096];
            ssize_t got;

            if (fds[i].revents == 0)
                continue;
            if (fds[i].fd == in_pipe[1]) {
                ssize_t put = write(in_pipe[1], stdin_data + written, stdin_len - written);

                if (put > 0)
                    written += (size_t)put;
                if ((put < 0 && errno != EAGAIN) || written == stdin_len) {
                    close(in_pipe[1]);
                    in_pipe[1] = -1;
                }
                continue;
            }
            got = read(fds[i].fd, chunk, sizeof(chunk));
            if (got <= 0) {
                if (got < 0 && errno == EINTR)
                    continue;
                close(fds[i].fd);
                if (fds[i].fd == out_pipe[0])
                    out_pipe[0] = -1;
                else
                    err_pipe[0] = -1;
                continue;
            }
            if (fds[i].fd == out_pipe[0])
                rc = append(&res->out, &res->out_len, &out_cap, chunk, (size_t)got, max_output, &res->truncated);
            else
                rc = append(&res->err, &res->err_len, &err_cap, chunk, (size_t)got, max_output, &res->truncated);
            if (rc != 0) {
                kill(-pid, SIGKILL);
                snprintf(errbuf, errsz, "out of memory reading the output of %s", argv[0]);
                goto reap;
            }
        }
    }

reap:
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status))
        res->exit_code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        res->term_signal = WTERMSIG(status);
    if (res->out == NULL)
        append(&res->out, &res->out_len, &out_cap, "", 0, max_output, &res->truncated);
    if (res->err == NULL)
        append(&res->err, &res->err_len, &err_cap, "", 0, max_output, &res->truncated);
    for (int i = 0; i < 2; i++) {
        if (in_pipe[i] >= 0)
            close(in_pipe[i]);
        if (out_pipe[i] >= 0)
            close(out_pipe[i]);
        if (err_pipe[i] >= 0)
            close(err_pipe[i]);
    }
    if (res->timed_out) {
        snprintf(errbuf, errsz, "%s did not finish within %ld ms and was killed", argv[0], timeout_ms);
        return -1;
    }
    if (res->exit_code < 0 && res->term_signal == 0 && errbuf[0] != '\0')
        return -1;
    return 0;

fail_pipes:
    for (int i = 0; i < 2; i++) {
        if (in_pipe[i] >= 0)
            close(in_pipe[i]);
        if (out_pipe[i] >= 0)
            close(out_pipe[i]);
        if (err_pipe[i] >= 0)
            close(err_pipe[i]);
    }
    return -1;
}
