/*
 * Action kinds behind one interface. Each kind lives in its own file and
 * exports one const struct action_type; action_find() looks kinds up by name.
 *
 * The executor calls, in this order, for an action that passed every guard:
 *   precheck (against the pass's snapshot, before anything is journaled)
 *   -> journal row `executing`, committed
 *   -> recheck (a fresh read of what the decision rests on)
 *   -> execute (the one mutating request)
 * and resolve_interrupted for a row a crash left in `executing`.
 */
#ifndef NOMAD_MEDIC_ACTION_H
#define NOMAD_MEDIC_ACTION_H

#include <stddef.h>

#include "../controller/host.h"
#include "../controller/nomad.h"
#include "../controller/snapshot.h"
#include "../store/journal.h"

enum recheck_result {
    RECHECK_HOLDS = 0,     /* the precondition still holds: send the request */
    RECHECK_CHANGED,       /* the precondition no longer holds: do not send */
    RECHECK_READ_FAILED,   /* the fresh read failed: do not send */
};

enum resolve_result {
    RESOLVE_DONE = 0,      /* the target shows the action took effect: succeeded */
    RESOLVE_NOT_DONE,      /* the target shows it did not: failed, proposed again by a later pass */
    RESOLVE_UNKNOWN,       /* the outcome cannot be read back: unknown */
    RESOLVE_READ_FAILED,   /* try again on the next start */
    RESOLVE_PENDING,       /* still legitimately in progress (a restart waiting for its node): poll() decides */
};

enum poll_result {
    POLL_WAITING = 0,      /* not finished yet */
    POLL_DONE,             /* succeeded */
    POLL_FAILED,           /* failed (a timeout, a failed order); note gives the reason */
};

struct policy;

/* The clients and paths an action uses while it runs, none of them owned by the action. */
struct action_env {
    struct nomad_client *client;      /* the Nomad API */
    const struct host_paths *host;    /* node scope: where the host's network state lives */
    struct journal *journal;          /* for per-step records; the row itself is the executor's */
    const struct policy *policy;      /* restart executors, Variable paths */
    long long now;
};

struct action_type {
    const char *name;           /* "service_delete", also the journal's kind */
    const char *scope;          /* "cluster" or "node": which scope runs and resolves it */
    int touches_nodes;          /* 1: the circuit breaker applies (node-, alloc- or service-level) */

    /*
     * Check preconditions that depend on the whole snapshot (for example "no
     * node is down" for a forced GC). target is the action's target. Returns
     * 0 when the action may go ahead, else 1 with why filled.
     */
    int (*precheck)(const struct snapshot *s, const char *target, char *why, size_t whysz);

    /* Re-read what the decision rests on; fills why unless RECHECK_HOLDS. */
    enum recheck_result (*recheck)(const struct action_env *env, const struct journal_action *a,
                                   char *why, size_t whysz);

    /*
     * Carry the action out. Returns 0 with note filled (for example "already
     * gone"), 1 when the action was started and finishes later (poll() then
     * decides; the row stays executing), or -1 with err filled. a->id is the
     * journal row, which actions that record steps need.
     */
    int (*execute)(const struct action_env *env, const struct journal_action *a, char *note,
                   size_t notesz, char *err, size_t errsz);

    /* Find out what became of an action interrupted in `executing`. Fills note. */
    enum resolve_result (*resolve_interrupted)(const struct action_env *env,
                                               const struct journal_action *a, char *note,
                                               size_t notesz);

    /*
     * For actions whose execute() returns 1: decide, from this pass's
     * snapshot, whether the started action finished. NULL for others.
     */
    enum poll_result (*poll)(const struct action_env *env, const struct snapshot *s,
                             const struct journal_action *a, char *note, size_t notesz);
};

extern const struct action_type action_service_delete;
extern const struct action_type action_system_gc;
extern const struct action_type action_netns_clear;
extern const struct action_type action_client_restart;
extern const struct action_type action_server_restart;
extern const struct action_type action_node_ineligible;

/* The kind called name, or NULL. */
const struct action_type *action_find(const char *name);

#endif
