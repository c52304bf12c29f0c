/*
 * router.h - the router service: llmserve.v1.Router (Generate and Complete) over pools of
 * inference instances and an optional answer cache.
 *
 * Life: router_config_init -> set fields -> router_create (connects to every instance and
 * cache) -> router_register on a server -> rpc_server_start ... rpc_server_shutdown ->
 * router_destroy.  Not thread-safe itself; what it registers serves calls on the
 * server's threads.
 */
#ifndef ROUTER_ROUTER_H
#define ROUTER_ROUTER_H

#include "discovery.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "scorer.h"
#include "svc/reporter.h"
#include "svc/tracer.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    const char *default_pool;      /* pool for low scores and fallbacks; default "small" */
    const char *tiers;             /* "POOL=THRESHOLD,..."; default "large=0.3" */
    const char *pool_fallback;     /* "POOL=FALLBACK|none,..."; default "" (all -> default) */
    const char *pool_ttft_ms;      /* "POOL=MS,..."; default "" */
    int64_t ttft_budget_ms;        /* TTFT budget of pools with a fallback; default 10000 */
    const char *cache;             /* cache instances "HOST:PORT,..."; NULL/"" = none, or
                                      those the discovery source watches */
    int64_t cache_timeout_ms;      /* a lookup slower than this is a miss; default 500 */
    int64_t cache_ttl_s;           /* TTL of stored answers; 0 = the cache's default */
    bool cache_semantic;           /* semantic lookups and stores; default false */
    int64_t cache_replay_events;   /* token events a cache hit is replayed as, at most; 1 */
    int64_t request_timeout_ms;    /* per-request deadline when none is given; default 120000 */
    int64_t default_max_tokens;    /* max_tokens 0 resolves to this; default 256 */
    int64_t max_retries;           /* extra tries before the first token; default 2 */
    int64_t queue_max;             /* requests waiting in the router for room in a pool whose
                                      instances are all at capacity, per pool; beyond it
                                      RESOURCE_EXHAUSTED; 0 = no queue; default 512 */
    int64_t queue_wait_ms;         /* longest wait in that queue before the fallback pool or
                                      DEADLINE_EXCEEDED; default 30000 */
    int64_t max_in_flight;         /* requests per client stream; default 1024 */
    int64_t max_prompt_bytes;      /* prompt plus messages; default 1 MiB */
    int64_t max_affinity;          /* remembered conversations; default 100000 */
    int64_t priority_aging_ms;     /* a request waiting in the router's queue counts one
                                      class higher per period waited (pool.h); 0 = never;
                                      default 1000 */
    int64_t prefix_affinity_bytes; /* bytes of a request's beginning its prefix key covers
                                      (prefix.h); 0 = no prefix affinity; default 256 */
    int64_t prefix_affinity_slack; /* outstanding requests beyond the least loaded
                                      instance's that the instance holding a prefix may
                                      have and still get it; default 4 */
    int64_t client_threads;        /* threads driving upstream streams; default 2 */
    const rpc_channel_config_t *upstream; /* channels to caches and instances (TLS); NULL =
                                             plaintext; borrowed for the router's life */
    int64_t seed;                  /* version split randomness; 0 = from the clock */
    router_scorer_config_t scorer; /* weights; see scorer.h */
    svc_reporter_t *reporter;      /* metrics (report.h); borrowed for the router's life;
                                      NULL = none */
    svc_tracer_t *tracer;          /* spans (svc/tracer.h; the layout in README.md,
                                      "Traces"); borrowed for the router's life; NULL =
                                      none */
} router_config_t;

typedef struct router router_t;

/* Fills cfg with the defaults above. */
void router_config_init(router_config_t *cfg);

/* Creates the router: starts disc and connects to every instance it lists and to every
 * cache (cfg->cache, or when that is empty the cache instances disc watches, if it
 * does).  A static source's first list must hold an instance of every pool the policy
 * names; a dynamic one's may hold none (disc->ops->dynamic): those pools are declared,
 * and a request for a pool with no instance ends with UNAVAILABLE.  Takes ownership of
 * disc (stopped and destroyed by router_destroy).  Returns NULL with a reason in err
 * (err_len bytes) on a bad configuration; disc is then destroyed. */
router_t *router_create(const router_config_t *cfg, discovery_t *disc, char *err,
                        size_t err_len);

/* Registers Router/Generate and Router/Complete on srv (before rpc_server_start).
 * Returns LS_OK or the rpc_server_add_method error. */
int router_register(router_t *r, rpc_server_t *srv);

/* Waits up to timeout_ms until every instance and every cache stream listed now is
 * connected and every pool named by the policy has a connected instance (for mains that
 * want a warm start; a dynamic source may list nothing at first).  Returns true when
 * that holds, or when at the timeout every pool named by the policy has a connected
 * instance and every cache stream is open; blocks the calling thread. */
bool router_wait_ready(router_t *r, int64_t timeout_ms);

/* Graceful stop: from now on new requests get UNAVAILABLE ("the router is shutting
 * down"); returns once no request is in flight, or at deadline_us (ls_now_us clock),
 * when the ones left end with an UNAVAILABLE error.  Either way every client call still
 * open (idle Generate streams included) then ends with UNAVAILABLE, so clients move on
 * at once.  Blocks the calling thread (main). */
void router_drain(router_t *r, int64_t deadline_us);

/* Frees the router: call after rpc_server_shutdown (no call in flight).  Waits for
 * requests still finishing, closes every upstream stream.  NULL is a no-op. */
void router_destroy(router_t *r);

#endif
