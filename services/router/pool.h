/*
 * pool.h - named pools of inference instances: health, outstanding requests, conversation
 * affinity and the weighted split between model versions.
 *
 * A pick for a request of pool P, conversation C:
 *   1. affinity: if C was last served by an instance of P that is healthy and not
 *      excluded, that instance;
 *   2. otherwise a version of P by weighted random choice among the versions that have an
 *      eligible instance (healthy, not excluded), then the eligible instance of that
 *      version with the fewest outstanding requests (ties rotate);
 *   3. C is remembered for the instance picked (the oldest entries go past max_affinity).
 * The pick counts as one outstanding request until router_pools_release.
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

/* on_add: an update added inst (attach a connection with router_instance_set_user);
 * on_remove: an update dropped inst (stop sending to it); both run on the updating thread
 * with no lock held.  on_free: the last reference to a removed instance went, user is
 * what was attached (release it); runs on whichever thread released it, with no lock
 * held, so it must not block. */
typedef struct {
    void (*on_add)(void *ud, router_instance_t *inst);
    void (*on_remove)(void *ud, router_instance_t *inst);
    void (*on_free)(void *ud, void *user);
    void *ud;
} router_pools_hooks_t;

/* Creates an empty set.  seed drives the version split (same seed, same sequence);
 * max_affinity bounds remembered conversations.  hooks may be NULL (copied). */
router_pools_t *router_pools_create(uint64_t seed, size_t max_affinity,
                                    const router_pools_hooks_t *hooks);

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
    router_instance_t *inst;
    bool affinity; /* chosen because the conversation was served there before */
} router_pick_t;

/* Picks an instance of pool for conversation_id (NULL or "" = none), never one of
 * exclude[0..n_exclude).  Returns LS_OK; LS_ERR_NOT_FOUND when no pool has that name
 * (neither declared nor with an instance); LS_ERR_UNAVAILABLE when it has no eligible
 * instance, or none at all (a declared pool). */
int router_pools_pick(router_pools_t *p, const char *pool, const char *conversation_id,
                      router_instance_t *const *exclude, size_t n_exclude, router_pick_t *out);

/* Ends a pick: one outstanding request less, and the pick's reference dropped. */
void router_pools_release(router_pools_t *p, router_instance_t *inst);

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
