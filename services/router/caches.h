/*
 * caches.h - the cache instances the router asks: one Cache.Session stream (an rpc
 * mux) per instance, in a set that may change while the router serves.
 *
 * The set is reconciled with complete lists of addresses (router_caches_update): a new
 * address gets an entry and a stream; an entry whose address is no longer listed is
 * removed: it is never picked again, its stream is half-closed (what is in flight on it
 * still gets its answer) and not reopened, and the entry is destroyed once nothing holds
 * it.  A pick holds its entry until router_caches_release: a lookup for as long as it
 * waits for its answer, a store just around its send.
 *
 * The last release may come on a mux callback thread, and destroying a mux blocks until
 * its stream ends, so a removed entry is destroyed on the reaper thread given at create.
 *
 * Thread-safe: picks and releases from any thread (callbacks included); updates from one
 * thread at a time or several (they are serialized), never from a mux callback (an
 * update blocks while a removed stream's supervisor stops).
 */
#ifndef ROUTER_CACHES_H
#define ROUTER_CACHES_H

#include "rpc/client.h"
#include "rpc/defer.h"
#include "rpc/mux.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct router_caches router_caches_t;
typedef struct router_cache router_cache_t;

/* Creates an empty set whose streams run on client, over channel (TLS; NULL:
 * plaintext), and whose removed entries are destroyed on reaper.  All three are
 * borrowed for the set's life. */
router_caches_t *router_caches_create(rpc_client_t *client, const rpc_channel_config_t *channel,
                                      rpc_defer_t *reaper);

/* Destroys every entry still in the set, listed or removed but held (their streams are
 * ended here: blocks), and frees the set.  Picks still held are invalid afterwards: call
 * once no request is in flight.  Entries already handed to the reaper are the reaper's.
 * NULL is a no-op. */
void router_caches_destroy(router_caches_t *cs);

/* Reconciles the set with addrs[0..n) ("host:port" each, borrowed; duplicates and empty
 * strings ignored): removes the entries not listed, adds an entry for each new address.
 * Returns LS_OK, or LS_ERR_UNAVAILABLE when a stream could not be created for some
 * address (its reason, naming the first such address, in err; err_len bytes; may be
 * NULL): the rest of the list is applied all the same. */
int router_caches_update(router_caches_t *cs, const char *const *addrs, size_t n, char *err,
                         size_t err_len);

/* An entry whose stream is up, the next one in round-robin order, held until
 * router_caches_release; NULL when no listed entry is up. */
router_cache_t *router_caches_pick(router_caches_t *cs);

/* Ends a pick.  Never blocks. */
void router_caches_release(router_caches_t *cs, router_cache_t *c);

/* The entry's stream and address; valid while the entry is held. */
rpc_mux_t *router_cache_mux(const router_cache_t *c);
const char *router_cache_addr(const router_cache_t *c);

/* What the set holds now. */
typedef struct {
    size_t listed;       /* entries of the last list */
    size_t up;           /* of which with their stream up */
    size_t removed_held; /* removed entries a pick still holds */
} router_caches_stats_t;

void router_caches_stats(router_caches_t *cs, router_caches_stats_t *out);

/* True when the set lists at least one cache (up or not). */
bool router_caches_any(router_caches_t *cs);

#endif
