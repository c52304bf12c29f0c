/*
 * driven_discovery.h - a discovery source (services/router/discovery.h) that a test
 * drives: it delivers the lists the test hands it, complete each time, as a Consul
 * watch would, on the test's own thread.
 *
 * The router that takes the source owns it (router_destroy destroys it); the test's
 * handle is valid until then.  Thread-safe: a delivery holds the source's lock, so stop
 * waits for one running.
 */
#ifndef TEST_DRIVEN_DISCOVERY_H
#define TEST_DRIVEN_DISCOVERY_H

#include "discovery.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct driven_discovery driven_discovery_t;

/* Creates a source whose first list (what start delivers) is first[0..n) (copied).
 * dynamic: what its ops say (discovery_ops_t.dynamic); caches: whether it offers
 * watch_caches (the cache lists then go through driven_discovery_caches). */
driven_discovery_t *driven_discovery_create(const discovery_instance_t *first, size_t n,
                                            bool dynamic, bool caches);

/* The source, for router_create. */
discovery_t *driven_discovery_base(driven_discovery_t *d);

/* Delivers list[0..n) (borrowed) to the router, unless the source is stopped or not
 * started (then it does nothing). */
void driven_discovery_deliver(driven_discovery_t *d, const discovery_instance_t *list, size_t n);

/* Delivers a cache list to the router, when it watches the source's caches. */
void driven_discovery_caches(driven_discovery_t *d, const char *const *addrs, size_t n);

#endif
