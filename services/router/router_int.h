/*
 * router_int.h - what router.c, relay.c and service.c share inside the router.
 * Not a public interface: symbols here carry the router__ prefix.
 */
#ifndef ROUTER_INT_H
#define ROUTER_INT_H

#include "llmserve/v1/cache.pb-c.h"
#include "llmserve/v1/inference.pb-c.h"
#include "llmserve/v1/router.pb-c.h"
#include "rpc/mux.h"
#include "caches.h"
#include "policy.h"
#include "pool.h"
#include "report.h"
#include "router.h"
#include "rpc/client.h"
#include "rpc/defer.h"
#include "rpc/timer.h"

#include <pthread.h>
#include <stdatomic.h>

/* An inference instance's connection: its mux and what Inference.Info said.  It lives as
 * long as its instance: made by the pools' on_add hook, destroyed (on the reaper thread)
 * after on_free, so a request holding a pick or an instance reference may use it. */
typedef struct {
    router_t *r;
    router_instance_t *inst; /* not referenced: valid while listed, and until on_free */
    rpc_mux_t *mux;
    pthread_mutex_t mu; /* guards model, version, the limits and removed */
    char model[128];
    char version[64];
    uint32_t max_batch, max_queue; /* as Inference.Info said; 0 until it answered */
    bool removed; /* the instance was removed: mux callbacks leave inst alone */
} router__conn_t;

struct router {
    router_config_t cfg;
    router_policy_t policy;
    discovery_t *disc;
    router_pools_t *pools;
    rpc_timer_t *timer;
    rpc_client_t *client;
    rpc_md_t event_batch_md; /* "llmserve-event-batch: 1" on every inference stream */

    pthread_mutex_t conns_mu; /* guards conns */
    router__conn_t **conns;   /* connections whose instance is not freed yet */
    size_t n_conns, cap_conns;
    rpc_defer_t *reaper;   /* destroys connections: rpc_mux_destroy blocks */
    rpc_defer_t *admitter; /* hands granted room to queued requests (router__req_granted) */

    router_caches_t *caches; /* Cache.Session streams, one per cache instance */

    atomic_uint_fast64_t next_id; /* upstream and cache request ids */
    pthread_mutex_t live_mu;      /* guards live */
    pthread_cond_t live_cv;
    int64_t live; /* requests not yet freed */

    router_report_t *report; /* NULL without a reporter */

    atomic_bool draining;     /* router_drain began: new requests are refused */
    pthread_mutex_t sinks_mu; /* guards the sink list */
    struct relay_sink *sinks; /* client calls open now (Generate streams, Complete calls) */
};

/* ---- relay.c: one request's life ------------------------------------------------ */

typedef struct relay_req relay_req_t;
typedef struct relay_sink relay_sink_t;

/* Where a request's events go (a Generate stream or a Complete call). */
typedef struct {
    /* Sends ev (borrowed); called with the request's lock held, must not block. */
    void (*emit)(relay_sink_t *s, relay_req_t *req, const Llmserve__V1__GenerateEvent *ev);
    /* The request has sent its terminal event; the sink drops it from its table. */
    void (*finished)(relay_sink_t *s, relay_req_t *req);
    void (*ref)(relay_sink_t *s);
    void (*unref)(relay_sink_t *s);
    /* Shutdown: ends every request still in flight with an UNAVAILABLE error saying why,
     * then the client call itself (UNAVAILABLE); runs on the draining thread. */
    void (*close)(relay_sink_t *s, const char *why);
} relay_sink_ops_t;

struct relay_sink {
    const relay_sink_ops_t *ops;
    struct relay_sink *prev, *next; /* in router->sinks while the call is open */
};

/* Creates a request for submit (copied) on sink (referenced).  The caller holds the one
 * reference returned.  id_required: Generate (true) or Complete (false); call_left_us: what
 * is left of the client call's deadline (rpc_call_remaining_us); bound_tenant: the
 * caller's principal (rpc_call_principal, as svc_keys_principal_format wrote it; "" or
 * NULL: none): the tenant its API key is bound to, which replaces the submit's tenant,
 * and the key's class (the default and ceiling of the request's priority);
 * md_traceparent: the call's `traceparent` metadata (NUL-terminated; NULL: none), the
 * trace's parent when the submit's own field is empty or malformed.
 * Returns NULL when the copy cannot be allocated. */
relay_req_t *router__req_create(router_t *r, relay_sink_t *sink,
                                const Llmserve__V1__GenerateSubmit *submit, bool id_required,
                                int64_t call_left_us, const char *bound_tenant,
                                const char *md_traceparent);

/* A SERVER span for a submit refused before a request was made of it (a duplicate id, a
 * stream's limit, the drain), ended at once with code and message; its parent as
 * router__req_create's.  generate: Router.Generate (else Complete). */
void router__trace_refused(router_t *r, const Llmserve__V1__GenerateSubmit *submit,
                           bool generate, const char *md_traceparent, int code,
                           const char *message);

/* The client's request id (borrowed, fixed for the request's life). */
const char *router__req_id(const relay_req_t *req);

/* Starts work: validation, routing, cache, inference.  Every path ends in exactly one
 * terminal event and one sink->finished. */
void router__req_start(relay_req_t *req);

/* The client cancelled it: ends with Done(CANCELLED) and cancels downstream.  A request
 * already finished is left alone. */
void router__req_cancel(relay_req_t *req);

void router__req_ref(relay_req_t *req);
void router__req_unref(relay_req_t *req);

/* Waiter w (a queued request's) was granted inst, or handed back with inst NULL (its
 * pool has no eligible instance left): the request goes on, or the pick is released when
 * the request ended meanwhile.  On the admitter thread, with no lock held. */
void router__req_granted(router_waiter_t *w, router_instance_t *inst);

/* Ends req at once with an error event (for requests the sink refuses, e.g. a duplicate
 * id, before start).  Calls sink->finished like any terminal. */
void router__req_reject(relay_req_t *req, int grpc_code, const char *message);

/* ---- router.c ------------------------------------------------------------------- */

/* Reconciles the cache set with addrs[0..n) ("host:port" each, borrowed): the list
 * --cache gives at create, or each list a discovery source delivers (on its thread).
 * Returns LS_OK, or LS_ERR_UNAVAILABLE (logged) when a stream could not be made for an
 * address; the rest is applied all the same. */
int router__caches_update(router_t *r, const char *const *addrs, size_t n);

/* Lists s among the open client calls (from its on_start) / takes it out (on_done). */
void router__sink_add(router_t *r, relay_sink_t *s);
void router__sink_remove(router_t *r, relay_sink_t *s);

/* True once router_drain began: new requests get UNAVAILABLE. */
bool router__draining(router_t *r);

/* A fresh nonzero id for upstream and cache requests. */
uint64_t router__next_id(router_t *r);

#endif
