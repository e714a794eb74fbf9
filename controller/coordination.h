/*
 * Coordination between controller instances and scopes through Nomad
 * Variables (Nomad 1.7+ for locks):
 *
 *   <prefix>/lock                   the cluster scope's leadership lock: only
 *                                   its holder acts; it renews the lock every
 *                                   TTL/3 and releases it on a clean stop
 *   <prefix>/heartbeat/<node ID>    written by the node scope on each client
 *                                   host: proof that the host is alive, and
 *                                   the result of its local agent's health check
 *   <prefix>/restart/<node ID>      a restart order, written by the cluster
 *                                   scope with check-and-set, carried out and
 *                                   carried out by the node scope (node-agent executor)
 *
 * All of them live in the namespace coordination.namespace.
 */
#ifndef NOMAD_MEDIC_COORDINATION_H
#define NOMAD_MEDIC_COORDINATION_H

#include "../policies/policy.h"
#include "nomad.h"

enum lock_state {
    LOCK_HELD = 0,        /* this instance holds the lock: it may act */
    LOCK_STANDBY,         /* another instance holds it (or its lock delay runs): do not act */
    LOCK_UNAVAILABLE,     /* locks cannot be used (older Nomad, missing ACL, no response) */
};

struct coordination {
    struct nomad_client *client;     /* not owned */
    const struct policy *policy;     /* not owned */
    char *lock_id;                   /* set while held */
    long long renewed_at;            /* Unix s of the last successful acquire or renew */
};

void coord_init(struct coordination *c, struct nomad_client *client, const struct policy *policy);

/*
 * Acquire the lock, or renew it when held and a third of the TTL has passed.
 * why is filled for STANDBY and UNAVAILABLE. A renewal that finds the lock
 * lost returns STANDBY: stop acting at once.
 */
enum lock_state coord_hold(struct coordination *c, long long now, char *why, size_t whysz);

/* Release the lock if held (on a clean stop), so a standby instance takes over without waiting for the TTL. */
void coord_release(struct coordination *c);

/*
 * Node scope: write this host's heartbeat Variable. agent_healthy is 1, 0 or
 * -1 (unknown); message may be NULL. Tries each address in policy
 * node.servers (or nomad.address when empty) until one accepts it.
 * Returns 0, or -1 with err filled.
 */
int coord_write_heartbeat(const struct policy *p, struct nomad_client *const *servers, size_t n_servers,
                          const char *node_id, long long now, int agent_healthy, const char *message,
                          char *err, size_t errsz);

#endif
