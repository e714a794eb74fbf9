/* Node-scope paths: Nomad's defaults for the client's bridge networking. */
#define _POSIX_C_SOURCE 200809L
#include "host.h"

#include <stdlib.h>
#include <string.h>

void host_paths_defaults(struct host_paths *paths)
{
    memset(paths, 0, sizeof(*paths));
    paths->netns_dir = strdup("/var/run/netns");
    paths->cni_cache_dir = strdup("/var/lib/cni/results");
    paths->ipam_dir = strdup("/var/run/cni");
    paths->ipam_dir_legacy = strdup("/var/lib/cni/networks");
    paths->network_name = strdup("nomad");
    paths->bridge_name = strdup("nomad");
    /* Nomad's cni_path default (1.11.2+) plus Debian's plugin directory. */
    paths->cni_path = strdup("/opt/cni/bin:/usr/libexec/cni:/usr/lib/cni");
    paths->proc_dir = strdup("/proc");
    paths->iptables = strdup("iptables");
    paths->iptables_save = strdup("iptables-save");
    paths->ip_command = strdup("ip");
    paths->command_timeout_ms = 10000;
}

void host_paths_free(struct host_paths *paths)
{
    free(paths->netns_dir);
    free(paths->cni_cache_dir);
    free(paths->ipam_dir);
    free(paths->ipam_dir_legacy);
    free(paths->network_name);
    free(paths->bridge_name);
    free(paths->cni_path);
    free(paths->proc_dir);
    free(paths->iptables);
    free(paths->iptables_save);
    free(paths->ip_command);
    memset(paths, 0, sizeof(*paths));
}
