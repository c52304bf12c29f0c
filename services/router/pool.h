/*
 * pool.h - named pools of inference instances: health, outstanding requests, conversation
 * affinity and the weighted split between model versions.
 *
 * A pick for a request of pool P, conversation C, prefix key K:
 *   1. affinity: if C was last served by an instance of P that is healthy and not
 *      excluded, that instance;
 *   2. otherwise a version of P by weighted random choice among the versions that have an
 *      eligible instance (healthy, not excluded), then
 *   3. prefix affinity, when K is not 0: the eligible instance of that version that
 *      rendezvous hashing prefers for K (the highest hash of K and its address, so the
 *      same K keeps landing on the same instance, different keys spread evenly, and an
 *      instance that comes or goes moves only its own share), provided it has room and
 *      no more than prefix_slack outstanding requests beyond the least loaded one's (the
 *      prefix cache it holds is worth that much queueing, no more); with a single
 *      eligible instance of that version the prefix decides nothing (step 4 picks it);
 *   4. otherwise the eligible instance of that version with the fewest outstanding
 *      requests (ties rotate);
 *   5. C is remembered for the instance picked (the oldest entries go past max_affinity).
 * The pick counts as one outstanding request until router_pools_release.
 *
 * Capacity: an instance with a capacity (router_instance_set_capacity: what Inference.Info
 * says it holds, max batch plus max queue) has room while its outstanding requests are
 * fewer; one that answered a request RESOURCE_EXHAUSTED (router_pools_release_full) has
 * none until its next release.  Picks take only instances with room.  When a pool's
 * eligible instances are all without room, router_pools_pick_or_wait queues the request
 * (a waiter, bounded per pool) instead; as room appears (a release, an instance healthy
 * again, a capacity raised) the set picks for the first waiter itself (steps 2 to 4,
 * with the waiter's prefix key) and hands it the pick through the on_grant hook.  When
 * the pool has no eligible instance left, its waiters are handed back with no pick, to
 * be routed again.
 *
 * Which waiter is first: the one of the highest class (llmserve.v1.Priority: interactive,
 * then normal, then batch), the earliest arrival among equals.  Aging keeps the lower
 * classes moving: a waiter counts one class higher for each full aging period it has
 * waited (router_pools_set_aging), up to interactive, so a batch request waiting behind
 * a steady stream of interactive ones is served after two periods at most, before the
 * interactive ones that came after it.
 *
 * A pool exists while it has a listed instance, or for the set's life once declared
 * (router_pools_declare): with a discovery source whose lists change, the pools the
 * routing policy names exist before any instance of theirs is discovered.
 *
 * Instances come and go with router_pools_update (the discovery source's lists); an
 * instance dropped from the list is never picked again and is freed once the last pick
 * holding it is released.  Thread-safe: one mutex guards the whole set; hooks run with
 * it released.
 */
#ifndef ROUTER_POOL_H
#define ROUTER_POOL_H

#include "discovery.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct router_pools router_pools_t;
typedef struct router_instance router_instance_t;

/* A request waiting for room in a pool (router_pools_pick_or_wait).  The caller owns
 * it (embedded in its request) and fills ud, since_us, priority and prefix_key; the set
 * links it while queued. */
typedef struct router_waiter {
    struct router_waiter *prev, *next; /* the set's, while queued */
    struct router_wait_queue *queue;   /* the set's: the queue it is in, NULL when none */
    void *ud;                          /* the caller's */
    int64_t since_us;                  /* when queued (ls_now_us clock), the caller's */
    int priority;        /* the caller's: llmserve.v1.Priority value, 1 (interactive) to 3
                            (batch); any other value counts as 2 (normal) */
    uint64_t prefix_key; /* the caller's: the request's prefix (router_prefix_key); 0: none */
} router_waiter_t;

/* on_add: an update added inst (attach a connection with router_instance_set_user);
 * on_remove: an update dropped inst (stop sending to it); both run on the updating thread
 * with no lock held.  on_free: the last reference to a removed instance went, user is
 * what was attached (release it); runs on whichever thread released it, with no lock
 * held, so it must not block.
 *
 * on_grant: waiter w left its queue with inst picked for it (counted and referenced as a
 * pick: end it with router_pools_release), or with inst NULL when its pool has no
 * eligible instance left (route it again).  Runs with no lock of the set held, on the
 * thread whose call made the room (a release, a health change, an update), which may
 * hold its own locks: hand the work to another thread. */
typedef struct {
    void (*on_add)(void *ud, router_instance_t *inst);
    void (*on_remove)(void *ud, router_instance_t *inst);
    void (*on_free)(void *ud, void *user);
    void *ud;
    void (*on_grant)(void *ud, router_waiter_t *w, router_instance_t *inst);
} router_pools_hooks_t;

/* Creates an empty set.  seed drives the version split (same seed, same sequence);
 * max_affinity bounds remembered conversations.  hooks may be NULL (copied). */
router_pools_t *router_pools_create(uint64_t seed, size_t max_affinity,
                                    const router_pools_hooks_t *hooks);

/* Sets the aging period of waiters, us: each full period waited counts as one class
 * higher (0: no aging).  Default 1 s.  Thread-safe. */
void router_pools_set_aging(router_pools_t *p, int64_t aging_us);

/* Sets how many outstanding requests beyond the least loaded instance's the instance a
 * prefix key prefers may have and still be picked for it.  Default 4.  Thread-safe. */
void router_pools_set_prefix_slack(router_pools_t *p, int64_t slack);

/* Frees the set and every instance still held by it.  Picks must all be released.
 * NULL is a no-op. */
void router_pools_destroy(router_pools_t *p);

/* Declares pool (copied): it exists from now on even with no instance, so a pick
 * answers LS_ERR_UNAVAILABLE rather than LS_ERR_NOT_FOUND.  Declaring twice is
 * harmless. */
void router_pools_declare(router_pools_t *p, const char *pool);

/* Reconciles the set with the complete list: adds new instances (not healthy until
 * router_instance_set_healthy), removes the ones not listed, updates version weights.
 * Returns LS_OK. */
int router_pools_update(router_pools_t *p, const discovery_instance_t *list, size_t n);

/* Removes every instance (as an update with an empty list would) and calls on_remove
 * for each: for shutdown. */
void router_pools_clear(router_pools_t *p);

/* A pick: inst is referenced and counted as outstanding until router_pools_release. */
typedef struct {
    router_instance_t *inst; /* NULL when the request was queued instead */
    bool affinity;           /* chosen because the conversation was served there before */
    bool prefix_affinity;    /* chosen because the prefix key prefers it (step 3) */
    bool prefix_spilled;     /* the prefix key's instance was too loaded: step 4 chose */
    bool queued;             /* router_pools_pick_or_wait queued the waiter */
    size_t waiting;          /* with LS_ERR_FULL: requests queued in the pool */
    int64_t oldest_since_us; /* with LS_ERR_FULL: since_us of the oldest of them (0: none) */
} router_pick_t;

/* Picks an instance of pool with room for conversation_id (NULL or "" = none), never one
 * of exclude[0..n_exclude).  Returns LS_OK; LS_ERR_NOT_FOUND when no pool has that name
 * (neither declared nor with an instance); LS_ERR_UNAVAILABLE when it has no eligible
 * instance, or none at all (a declared pool); LS_ERR_FULL when its eligible instances
 * all lack room. */
int router_pools_pick(router_pools_t *p, const char *pool, const char *conversation_id,
                      router_instance_t *const *exclude, size_t n_exclude, router_pick_t *out);

/* As router_pools_pick, with w's prefix key (w may be NULL: none), but where the eligible
 * instances all lack room, queues w (its ud, since_us, priority and prefix_key set by the
 * caller; borrowed until it is granted or unwaited) among the pool's waiters (first
 * served as the top of this file says), when fewer than max_waiting are queued: returns
 * LS_OK with
 * out->inst NULL and out->queued, and w comes back through on_grant.  Returns LS_ERR_FULL
 * when max_waiting are queued already (out->waiting and oldest_since_us say how long
 * the queue is), other errors as router_pools_pick.  Thread-safe. */
int router_pools_pick_or_wait(router_pools_t *p, const char *pool, const char *conversation_id,
                              router_instance_t *const *exclude, size_t n_exclude,
                              router_waiter_t *w, size_t max_waiting, router_pick_t *out);

/* Takes w out of its queue.  Returns true when it was still queued (it will not be
 * granted); false when it was granted already (on_grant runs or ran for it). */
bool router_pools_unwait(router_pools_t *p, router_waiter_t *w);

/* Requests queued in pool now (0 for an unknown pool). */
size_t router_pools_waiting(router_pools_t *p, const char *pool);

/* Ends a pick: one outstanding request less, and the pick's reference dropped; a waiter
 * of the pool may be granted the room. */
void router_pools_release(router_pools_t *p, router_instance_t *inst);

/* Ends a pick whose request the instance refused for want of room (RESOURCE_EXHAUSTED):
 * as router_pools_release, and the instance has no room until its next release.  Returns
 * true when so marked; false when no other pick of this set is outstanding there (no
 * release would come to clear the mark: its room is taken by requests from elsewhere),
 * in which case it is released unmarked. */
bool router_pools_release_full(router_pools_t *p, router_instance_t *inst);

/* Sets how many requests inst holds at once (0 = unknown: no bound); raising it may grant
 * waiters.  Thread-safe. */
void router_instance_set_capacity(router_pools_t *p, router_instance_t *inst, int64_t capacity);

/* True when pool exists: declared, or with a listed instance (healthy or not). */
bool router_pools_has(router_pools_t *p, const char *pool);

/* Listed instances of pool, healthy or not (0 for an unknown or empty pool). */
size_t router_pools_count(router_pools_t *p, const char *pool);

/* Healthy instances of pool (0 for an unknown pool). */
size_t router_pools_healthy_count(router_pools_t *p, const char *pool);

/* True when every instance of every pool is healthy. */
bool router_pools_all_healthy(router_pools_t *p);

/* Writes the names of the pools that exist, comma-separated, declared ones first, into
 * buf (for messages; cut at a whole name when buf is too small). */
void router_pools_names(router_pools_t *p, char *buf, size_t len);

/* Marks inst healthy (pickable) or not.  Thread-safe. */
void router_instance_set_healthy(router_pools_t *p, router_instance_t *inst, bool healthy);

/* Keeps inst's memory valid beyond its removal; every ref needs one unref. */
void router_instance_ref(router_pools_t *p, router_instance_t *inst);
void router_instance_unref(router_pools_t *p, router_instance_t *inst);

/* Getters: strings are borrowed for the instance's life. */
const char *router_instance_addr(const router_instance_t *inst);
const char *router_instance_pool(const router_instance_t *inst);
const char *router_instance_version(const router_instance_t *inst);
int64_t router_instance_outstanding(router_pools_t *p, const router_instance_t *inst);
bool router_instance_healthy(router_pools_t *p, const router_instance_t *inst);

/* The connection attached by on_add (NULL until set); set it once, from on_add. */
void router_instance_set_user(router_instance_t *inst, void *user);
void *router_instance_user(const router_instance_t *inst);

#endif
