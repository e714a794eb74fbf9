/* The leadership lock and host heartbeats, through Nomad Variables. */
#define _POSIX_C_SOURCE 200809L
#include "coordination.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "variables.h"

void coord_init(struct coordination *c, struct nomad_client *client, const struct policy *policy)
{
    memset(c, 0, sizeof(*c));
    c->client = client;
    c->policy = policy;
}

static void lock_path(const struct policy *p, char *buf, size_t bufsz)
{
    snprintf(buf, bufsz, "%s/lock", p->coord_prefix);
}

enum lock_state coord_hold(struct coordination *c, long long now, char *why, size_t whysz)
{
    const struct policy *p = c->policy;
    struct nomad_var out;
    enum nomad_var_result rc;
    char path[256];
    char holder[300];
    char host[256] = "unknown";
    cJSON *items;

    lock_path(p, path, sizeof(path));
    if (c->lock_id != NULL) {
        if (now - c->renewed_at < p->lock_ttl_s / 3)
            return LOCK_HELD;
        rc = nomad_var_lock_renew(c->client, p->coord_namespace, path, c->lock_id, why, whysz);
        if (rc == VAR_OK) {
            c->renewed_at = now;
            return LOCK_HELD;
        }
        log_warn("coordination", "renewing the lock %s failed (%s): no longer acting", path,
                 rc == VAR_CONFLICT ? "lost to another instance or expired" : why);
        free(c->lock_id);
        c->lock_id = NULL;
        if (rc == VAR_CONFLICT) {
            snprintf(why, whysz, "the lock %s was lost (expired or taken over)", path);
            return LOCK_STANDBY;
        }
        return LOCK_UNAVAILABLE;
    }

    gethostname(host, sizeof(host) - 1);
    snprintf(holder, sizeof(holder), "%s:%ld", host, (long)getpid());
    items = cJSON_CreateObject();
    cJSON_AddStringToObject(items, "holder", holder);
    memset(&out, 0, sizeof(out));
    rc = nomad_var_lock_acquire(c->client, p->coord_namespace, path, p->lock_ttl_s, p->lock_delay_s, items, &out,
                                why, whysz);
    cJSON_Delete(items);
    if (rc == VAR_OK && out.lock_id != NULL) {
        c->lock_id = strdup(out.lock_id);
        c->renewed_at = now;
        nomad_var_free(&out);
        if (c->lock_id == NULL) {
            snprintf(why, whysz, "out of memory");
            return LOCK_UNAVAILABLE;
        }
        log_info("coordination", "acquired the lock %s as %s", path, holder);
        return LOCK_HELD;
    }
    nomad_var_free(&out);
    if (rc == VAR_CONFLICT) {
        snprintf(why, whysz, "another instance holds the lock %s (or its lock delay is running)", path);
        return LOCK_STANDBY;
    }
    return LOCK_UNAVAILABLE;
}

void coord_release(struct coordination *c)
{
    char path[256];
    char err[512];

    if (c->lock_id == NULL)
        return;
    lock_path(c->policy, path, sizeof(path));
    if (nomad_var_lock_release(c->client, c->policy->coord_namespace, path, c->lock_id, err, sizeof(err)) != VAR_OK)
        log_warn("coordination", "releasing the lock %s failed: %s; it expires after its TTL", path, err);
    else
        log_info("coordination", "released the lock %s", path);
    free(c->lock_id);
    c->lock_id = NULL;
}

int coord_write_heartbeat(const struct policy *p, struct nomad_client *const *servers, size_t n_servers,
                          const char *node_id, long long now, int agent_healthy, const char *message,
                          char *err, size_t errsz)
{
    cJSON *items = cJSON_CreateObject();
    char path[256];
    char text[64];
    char host[256] = "";
    int rc = -1;

    snprintf(path, sizeof(path), "%s/heartbeat/%s", p->coord_prefix, node_id);
    snprintf(text, sizeof(text), "%lld", now);
    cJSON_AddStringToObject(items, "host_alive_at", text);
    if (agent_healthy == 1)
        cJSON_AddStringToObject(items, "agent_healthy", "true");
    else if (agent_healthy == 0)
        cJSON_AddStringToObject(items, "agent_healthy", "false");
    else
        cJSON_AddStringToObject(items, "agent_healthy", "unknown");
    if (message != NULL && message[0] != '\0')
        cJSON_AddStringToObject(items, "agent_message", message);
    gethostname(host, sizeof(host) - 1);
    if (host[0] != '\0')
        cJSON_AddStringToObject(items, "hostname", host);
    cJSON_AddStringToObject(items, "version", NOMAD_MEDIC_VERSION);

    /* The local agent may be the thing that hangs, so any server will do. */
    for (size_t i = 0; i < n_servers && rc != 0; i++) {
        struct nomad_var out;

        memset(&out, 0, sizeof(out));
        if (nomad_var_write(servers[i], p->coord_namespace, path, items, -1, &out, err, errsz) == VAR_OK)
            rc = 0;
        else
            log_warn("coordination", "writing heartbeat %s through %s failed: %s", path,
                     nomad_client_address(servers[i]), err);
        nomad_var_free(&out);
    }
    cJSON_Delete(items);
    return rc;
}
