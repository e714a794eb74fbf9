/*
 * Time the node scope's host inventory (host_inventory_read() from
 * controller/host_inventory.c) on the running host, as `nomad-medic plan
 * --scope node` calls it. The benchmark links it against the build's nm_host,
 * nm_proc and nm_log libraries, so the figure is the product's own code.
 *
 *   inventory_time [--repeat N] [--netns-dir D] [--cni-cache-dir D] [--ipam-dir D]
 *                  [--ipam-dir-legacy D] [--network NAME] [--bridge NAME]
 *
 * Prints one JSON line: the wall time of each read in milliseconds (min,
 * median, max over N reads, default 5), what the last read found, and which
 * parts failed. Exit status 1 when a read fails to run, 2 on a usage error.
 * Needs root, as the node scope does.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "host.h"

#define MAX_REPEAT 100

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Replace *field with a copy of value. Returns 0, or -1 when memory ran out. */
static int set_path(char **field, const char *value)
{
    char *copy = strdup(value);

    if (copy == NULL)
        return -1;
    free(*field);
    *field = copy;
    return 0;
}

static int parse_args(int argc, char **argv, struct host_paths *paths, int *repeat)
{
    static const struct {
        const char *flag;
        size_t offset;
    } options[] = {
        {"--netns-dir", offsetof(struct host_paths, netns_dir)},
        {"--cni-cache-dir", offsetof(struct host_paths, cni_cache_dir)},
        {"--ipam-dir", offsetof(struct host_paths, ipam_dir)},
        {"--ipam-dir-legacy", offsetof(struct host_paths, ipam_dir_legacy)},
        {"--network", offsetof(struct host_paths, network_name)},
        {"--bridge", offsetof(struct host_paths, bridge_name)},
    };

    for (int i = 1; i < argc; i += 2) {
        size_t k;

        if (i + 1 >= argc) {
            fprintf(stderr, "inventory_time: %s needs a value\n", argv[i]);
            return -1;
        }
        if (strcmp(argv[i], "--repeat") == 0) {
            *repeat = atoi(argv[i + 1]);
            if (*repeat < 1 || *repeat > MAX_REPEAT) {
                fprintf(stderr, "inventory_time: invalid --repeat \"%s\"; use 1 to %d\n", argv[i + 1],
                        MAX_REPEAT);
                return -1;
            }
            continue;
        }
        for (k = 0; k < sizeof(options) / sizeof(options[0]); k++) {
            if (strcmp(argv[i], options[k].flag) == 0)
                break;
        }
        if (k == sizeof(options) / sizeof(options[0])) {
            fprintf(stderr, "inventory_time: unknown option %s\n", argv[i]);
            return -1;
        }
        if (set_path((char **)((char *)paths + options[k].offset), argv[i + 1]) != 0)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    double times[MAX_REPEAT];
    struct host_paths paths;
    struct host_inventory inv;
    int repeat = 5;
    int rc = 1;

    host_paths_defaults(&paths);
    memset(&inv, 0, sizeof(inv));
    if (parse_args(argc, argv, &paths, &repeat) != 0) {
        host_paths_free(&paths);
        return 2;
    }

    for (int i = 0; i < repeat; i++) {
        double start;

        host_inventory_free(&inv);
        memset(&inv, 0, sizeof(inv));
        start = now_ms();
        if (host_inventory_read(&paths, &inv) != 0) {
            fprintf(stderr, "inventory_time: host_inventory_read ran out of memory\n");
            goto out;
        }
        times[i] = now_ms() - start;
    }
    qsort(times, (size_t)repeat, sizeof(times[0]), compare_double);

    printf("{\"reads\": %d, \"min_ms\": %.3f, \"median_ms\": %.3f, \"max_ms\": %.3f, "
           "\"netns\": %zu, \"reservations\": %zu, \"caches\": %zu, \"rules\": %zu, \"chains\": %zu, "
           "\"veths\": %zu, \"failed_sources\": [",
           repeat, times[0], (times[(repeat - 1) / 2] + times[repeat / 2]) / 2, times[repeat - 1],
           inv.n_netns, inv.n_reservations,
           inv.n_caches, inv.n_rules, inv.n_chains, inv.n_veths);
    for (int s = 0, first = 1; s < HOST_SRC_COUNT; s++) {
        if (inv.sources[s].ok)
            continue;
        printf("%s\"%s\"", first ? "" : ", ", inv.sources[s].name ? inv.sources[s].name : "?");
        first = 0;
    }
    printf("]}\n");
    rc = 0;

out:
    host_inventory_free(&inv);
    host_paths_free(&paths);
    return rc;
}
