/*
 * The node scope's agent duties, beside its reconcile passes: write this
 * host's heartbeat Variable, and carry out restart orders the cluster scope
 * writes for this node (the node-agent executor).
 *
 * It talks to the Nomad servers named in node.servers for Variables, not
 * only to the local agent, because the local agent is what may hang.
 */
#ifndef NOMAD_MEDIC_NODE_AGENT_H
#define NOMAD_MEDIC_NODE_AGENT_H

#include <stdint.h>

#include "../policies/policy.h"
#include "../store/journal.h"
#include "nomad.h"

struct node_agent {
    const struct policy *policy;         /* not owned */
    struct journal *journal;             /* not owned; the host's local journal */
    struct nomad_client *local;          /* owned: the local agent, with a short timeout */
    struct nomad_client **servers;       /* owned: where Variables are read and written */
    size_t n_servers;
    char node_id[37];                    /* "" until known */
    uint64_t order_index;                /* last X-Nomad-Index of the order Variable, for blocking reads */
    long long last_heartbeat;            /* Unix s */
};

/* Create the clients. Returns 0, or -1 with err filled. */
int node_agent_init(struct node_agent *a, const struct policy *p, struct journal *j, char *err, size_t errsz);
void node_agent_free(struct node_agent *a);

/*
 * One step: write the heartbeat when it is due, then look at this node's
 * restart order, waiting up to wait_s seconds for it to change (0: do not
 * wait). A pending order is carried out before the call returns.
 * Returns 0, or -1 when a step failed (logged); the caller goes on.
 */
int node_agent_step(struct node_agent *a, long long now, long wait_s);

#endif
