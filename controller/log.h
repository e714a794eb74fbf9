/*
 * Logging: one line per event on stderr.
 *
 * Line format:  2026-12-04T20:30:00.123Z INFO  [component] message key=value ...
 * Time is UTC with milliseconds. The level is tested before any formatting,
 * so a disabled debug line costs one comparison. Callers put ids into the
 * message as key=value pairs; secrets (ACL tokens, client keys) never go in.
 */
#ifndef NOMAD_MEDIC_LOG_H
#define NOMAD_MEDIC_LOG_H

enum log_level {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO = 1,
    LOG_LEVEL_WARN = 2,
    LOG_LEVEL_ERROR = 3,
};

/* Current threshold; read by the macros below, written by log_set_level(). */
extern enum log_level log_threshold;

void log_set_level(enum log_level level);

/* Parse "debug", "info", "warn" or "error". Returns 0, or -1 for any other text. */
int log_parse_level(const char *text, enum log_level *out);

void log_write(enum log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_at(level, component, ...)                 \
    do {                                              \
        if ((level) >= log_threshold)                 \
            log_write((level), (component), __VA_ARGS__); \
    } while (0)

#define log_debug(component, ...) log_at(LOG_LEVEL_DEBUG, component, __VA_ARGS__)
#define log_info(component, ...) log_at(LOG_LEVEL_INFO, component, __VA_ARGS__)
#define log_warn(component, ...) log_at(LOG_LEVEL_WARN, component, __VA_ARGS__)
#define log_error(component, ...) log_at(LOG_LEVEL_ERROR, component, __VA_ARGS__)

#endif
