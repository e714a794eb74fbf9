/*
 * Shared by the C unit tests that talk to the project's test Nomad API
 * server: start it with fork/exec, stop it by pid, and use its control API
 * (/_test/...) over plain libcurl, independent of the code under test.
 *
 * Include it once per test program, after defining FAKE_SERVER_TEST_NAME
 * (used in messages). It defines the static state server_pid and base_url.
 */
#ifndef NOMAD_MEDIC_TEST_FAKE_SERVER_H
#define NOMAD_MEDIC_TEST_FAKE_SERVER_H

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t server_pid = -1;
static char base_url[64];

static __attribute__((unused)) void sleep_ms(long ms)
{
    struct timespec delay = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

    nanosleep(&delay, NULL);
}

static __attribute__((unused)) double now_s(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

/* Sleep until start + offset_s on the monotonic clock. */
static __attribute__((unused)) void sleep_until(double start, double offset_s)
{
    double left = start + offset_s - now_s();

    if (left > 0)
        sleep_ms((long)(left * 1000.0));
}

/* Start fake_nomad.py and wait up to 15 s for its port file. Returns the port or -1. */
static __attribute__((unused)) int start_server(const char *port_file)
{
    pid_t parent = getpid();

    server_pid = fork();
    if (server_pid < 0)
        return -1;
    if (server_pid == 0) {
        /* Stop the server with this test even if the test dies before its teardown. */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
            _exit(127);
        execl(NM_PYTHON, NM_PYTHON, NM_FAKE_NOMAD, "--port-file", port_file, (char *)NULL);
        fprintf(stderr, "%s: cannot run %s %s: %s\n", FAKE_SERVER_TEST_NAME, NM_PYTHON, NM_FAKE_NOMAD,
                strerror(errno));
        _exit(127);
    }
    for (int i = 0; i < 1500; i++) {
        FILE *file = fopen(port_file, "r");
        int status;

        if (file != NULL) {
            int port = -1;

            if (fscanf(file, "%d", &port) != 1)
                port = -1;
            fclose(file);
            if (port > 0)
                return port;
        }
        if (waitpid(server_pid, &status, WNOHANG) == server_pid) {
            server_pid = -1;
            return -1;
        }
        sleep_ms(10);
    }
    return -1;
}

static __attribute__((unused)) void stop_server(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
        server_pid = -1;
    }
}

/* ---- helpers: control API (plain libcurl, independent of the code under test) ---- */

struct buffer {
    char *data;
    size_t len;
};

static __attribute__((unused)) size_t collect(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct buffer *buf = userdata;
    char *grown = realloc(buf->data, buf->len + size * nmemb + 1);

    if (grown == NULL)
        return 0;
    buf->data = grown;
    memcpy(buf->data + buf->len, data, size * nmemb);
    buf->len += size * nmemb;
    buf->data[buf->len] = '\0';
    return size * nmemb;
}

/* Send a control request; returns the body (caller frees) and asserts status 200. */
static __attribute__((unused)) char *control(const char *method, const char *path, const char *body)
{
    CURL *easy = curl_easy_init();
    struct buffer buf = {NULL, 0};
    char url[256];
    long status = 0;

    assert_non_null(easy);
    snprintf(url, sizeof(url), "%s%s", base_url, path);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &buf);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT, 30L);
    if (body != NULL)
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
    assert_int_equal(curl_easy_perform(easy), CURLE_OK);
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200)
        fprintf(stderr, "control %s %s: status %ld: %s\n", method, path, status,
                buf.data != NULL ? buf.data : "");
    assert_int_equal(status, 200);
    curl_easy_cleanup(easy);
    return buf.data != NULL ? buf.data : strdup("");
}

static __attribute__((unused)) void set_faults(const char *rules_json)
{
    free(control("PUT", "/_test/faults", rules_json));
}

/* The server's request log as parsed JSON; the caller deletes it. */
static __attribute__((unused)) cJSON *recorded_requests(void)
{
    char *text = control("GET", "/_test/requests", NULL);
    cJSON *log = cJSON_Parse(text);

    free(text);
    assert_non_null(log);
    return log;
}


#endif
