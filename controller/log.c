/* Logging to stderr, one line per event. */
#define _POSIX_C_SOURCE 200809L
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum log_level log_threshold = LOG_LEVEL_INFO;

static const char *const level_names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

void log_set_level(enum log_level level)
{
    log_threshold = level;
}

int log_parse_level(const char *text, enum log_level *out)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};

    for (int i = 0; i < 4; i++) {
        if (strcmp(text, names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_write(enum log_level level, const char *component, const char *fmt, ...)
{
    char line[4096];
    struct timespec now;
    struct tm tm;
    size_t used;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    used = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    used += (size_t)snprintf(line + used, sizeof(line) - used, ".%03ldZ %s [%s] ",
                             now.tv_nsec / 1000000, level_names[level], component);

    va_start(ap, fmt);
    vsnprintf(line + used, sizeof(line) - used, fmt, ap);
    va_end(ap);

    /* One write per line, so lines from a child or another thread do not interleave. */
    used = strlen(line);
    if (used >= sizeof(line) - 2)
        used = sizeof(line) - 2;
    line[used++] = '\n';
    fwrite(line, 1, used, stderr);
    fflush(stderr);
}
