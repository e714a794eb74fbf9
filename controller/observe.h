/*
 * Observation: read the cluster through a source into a snapshot.
 *
 * Lists are read page by page (per_page, next_token); each page is reduced
 * to compact records and freed before the next one is requested, so memory
 * follows the page size rather than the cluster size. Per-service reads,
 * allocation lookups and node reads go out concurrently through
 * source_get_many().
 */
#ifndef NOMAD_MEDIC_OBSERVE_H
#define NOMAD_MEDIC_OBSERVE_H

#include "../policies/policy.h"
#include "snapshot.h"
#include "source.h"

/*
 * Fill s (initialised by the caller) with what the enabled rules need.
 * A failed read does not fail the call: it is recorded in s->reads and the
 * matching *_ok flag stays 0. Returns 0, or -1 when memory ran out (s is then
 * incomplete and must only be freed).
 */
int observe_cluster(struct source *src, const struct policy *p, struct snapshot *s);

/*
 * Lists of the previous pass that `run` found unchanged with blocking
 * queries. previous is the last pass's snapshot; unchanged has bit
 * (1u << WATCH_*) set for each list whose X-Nomad-Index has not moved since.
 */
struct observe_reuse {
    struct snapshot *previous;
    unsigned unchanged;
};

/*
 * Observe like observe_cluster(), but take over from reuse->previous what
 * has not changed instead of reading it again. Nodes (with their node reads),
 * allocations and evaluation counts are taken when their own list is
 * unchanged. Registrations and their allocation lookups are taken only when
 * both the allocation and the service lists are unchanged.
 *
 * Only parts that were read completely are taken, and the leader and the
 * restart state are always read again. reuse->previous is emptied before
 * anything is read (its parts moved or freed, so the peak memory stays that
 * of one pass) and stays initialised; after a failed allocation it may still
 * contain parts, which its owner frees. reuse may be NULL.
 */
int observe_cluster_reusing(struct source *src, const struct policy *p, struct snapshot *s,
                            struct observe_reuse *reuse);

/*
 * Node scope: fill s with the leader, this host's node ID and allocations,
 * the host's network state (p->host), and lookups of the allocations the
 * host names that the node's list lacks. Same contract as observe_cluster().
 */
int observe_node(struct source *src, const struct policy *p, struct snapshot *s);

#endif
