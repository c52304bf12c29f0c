/*
 * health.c - grpc.health.v1.Health served through the server's own handler API.
 *
 * Lock rule: h->mu guards the status table and the watcher list.  It is taken before
 * a call's mutex (rpc_call_send while holding it), never while a call's mutex is held.
 * Watchers hold a call reference so a send after the call ended is harmless.
 */
#include "rpc/health.h"

#include "base/err.h"
#include "base/log.h"
#include "grpc/health/v1/health.pb-c.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define RPC_HEALTH_SERVICE_UNKNOWN 3 /* ServingStatus.SERVICE_UNKNOWN, Watch only */

typedef struct entry {
    char *service;
    rpc_health_status_t status;
    struct entry *next;
} entry_t;

typedef struct watcher {
    rpc_call_t *call;
    char *service;
    int last_sent; /* -1 before the first send */
    struct watcher *next;
} watcher_t;

struct rpc__health {
    pthread_mutex_t mu;
    entry_t *entries;
    watcher_t *watchers;
    bool shut;
};

static entry_t *do_find(rpc__health_t *h, const char *service)
{
    for (entry_t *e = h->entries; e; e = e->next)
        if (strcmp(e->service, service) == 0)
            return e;
    return NULL;
}

static void do_send(watcher_t *w, int status)
{
    if (w->last_sent == status)
        return;
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    if (rpc_call_send(w->call, &resp.base) == LS_OK)
        w->last_sent = status;
}

static int do_status_of(rpc__health_t *h, const char *service)
{
    entry_t *e = do_find(h, service);
    return e ? (int)e->status : RPC_HEALTH_SERVICE_UNKNOWN;
}

/* ---- Check (unary) --------------------------------------------------------------- */

static void *check_start(rpc_call_t *call, void *ctx)
{
    (void)call;
    return ctx; /* per-call state is the health object itself */
}

static void check_on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    rpc__health_t *h = state;
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)msg;
    pthread_mutex_lock(&h->mu);
    entry_t *e = do_find(h, req->service);
    int status = e ? (int)e->status : -1;
    pthread_mutex_unlock(&h->mu);
    if (status < 0) {
        rpc_call_finish(call, GRPC_STATUS_NOT_FOUND, "unknown service");
        return;
    }
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    rpc_call_reply(call, &resp.base);
}

/* ---- Watch (server streaming) ------------------------------------------------------ */

static void *watch_start(rpc_call_t *call, void *ctx)
{
    (void)call;
    return ctx;
}

static void watch_on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    rpc__health_t *h = state;
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)msg;
    pthread_mutex_lock(&h->mu);
    for (watcher_t *w = h->watchers; w; w = w->next) {
        if (w->call == call) { /* Watch takes one request; a second is a client error */
            pthread_mutex_unlock(&h->mu);
            rpc_call_cancel(call, GRPC_STATUS_INVALID_ARGUMENT, "Watch takes one request");
            return;
        }
    }
    if (h->shut) {
        pthread_mutex_unlock(&h->mu);
        rpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, "server shutting down");
        return;
    }
    watcher_t *w = ls_xcalloc(1, sizeof(*w));
    w->call = call;
    w->service = ls_xstrdup(req->service);
    w->last_sent = -1;
    rpc_call_ref(call);
    w->next = h->watchers;
    h->watchers = w;
    do_send(w, do_status_of(h, w->service));
    pthread_mutex_unlock(&h->mu);
}

static void watch_on_done(rpc_call_t *call, void *state)
{
    rpc__health_t *h = state;
    pthread_mutex_lock(&h->mu);
    for (watcher_t **pw = &h->watchers; *pw; pw = &(*pw)->next) {
        watcher_t *w = *pw;
        if (w->call == call) {
            *pw = w->next;
            free(w->service);
            rpc_call_unref(w->call);
            free(w);
            break;
        }
    }
    pthread_mutex_unlock(&h->mu);
}

/* ---- table ------------------------------------------------------------------------ */

rpc__health_t *rpc__health_create(void)
{
    rpc__health_t *h = ls_xcalloc(1, sizeof(*h));
    pthread_mutex_init(&h->mu, NULL);
    return h;
}

int rpc__health_register(rpc__health_t *h, rpc_server_t *srv)
{
    rpc_handler_t check = {.on_start = check_start, .on_message = check_on_message};
    rpc_handler_t watch = {
        .on_start = watch_start, .on_message = watch_on_message, .on_done = watch_on_done};
    int rc = rpc_server_add_method(srv, "/grpc.health.v1.Health/Check", RPC_UNARY,
                                   &grpc__health__v1__health_check_request__descriptor, &check, h);
    if (rc == LS_OK)
        rc = rpc_server_add_method(srv, "/grpc.health.v1.Health/Watch", RPC_STREAM,
                                   &grpc__health__v1__health_check_request__descriptor, &watch,
                                   h);
    return rc;
}

int rpc__health_set(rpc__health_t *h, const char *service, rpc_health_status_t status)
{
    pthread_mutex_lock(&h->mu);
    if (h->shut) {
        pthread_mutex_unlock(&h->mu);
        return LS_ERR_CLOSED;
    }
    entry_t *e = do_find(h, service);
    if (!e) {
        e = ls_xcalloc(1, sizeof(*e));
        e->service = ls_xstrdup(service);
        e->next = h->entries;
        h->entries = e;
    }
    e->status = status;
    for (watcher_t *w = h->watchers; w; w = w->next)
        if (strcmp(w->service, service) == 0)
            do_send(w, (int)status);
    pthread_mutex_unlock(&h->mu);
    return LS_OK;
}

int rpc__health_set_all(rpc__health_t *h, rpc_health_status_t status)
{
    pthread_mutex_lock(&h->mu);
    if (h->shut) {
        pthread_mutex_unlock(&h->mu);
        return LS_ERR_CLOSED;
    }
    if (!do_find(h, "")) {
        entry_t *e = ls_xcalloc(1, sizeof(*e));
        e->service = ls_xstrdup("");
        e->next = h->entries;
        h->entries = e;
    }
    for (entry_t *e = h->entries; e; e = e->next)
        e->status = status;
    for (watcher_t *w = h->watchers; w; w = w->next)
        if (do_find(h, w->service))
            do_send(w, (int)status);
    pthread_mutex_unlock(&h->mu);
    return LS_OK;
}

void rpc__health_shutdown(rpc__health_t *h)
{
    pthread_mutex_lock(&h->mu);
    h->shut = true;
    for (entry_t *e = h->entries; e; e = e->next)
        e->status = RPC_HEALTH_NOT_SERVING;
    for (watcher_t *w = h->watchers; w; w = w->next) {
        if (w->last_sent != RPC_HEALTH_SERVICE_UNKNOWN)
            do_send(w, RPC_HEALTH_NOT_SERVING);
        /* Without this a Watch would hold shutdown for the whole grace period. */
        rpc_call_finish(w->call, GRPC_STATUS_UNAVAILABLE, "server shutting down");
    }
    pthread_mutex_unlock(&h->mu);
}

void rpc__health_destroy(rpc__health_t *h)
{
    if (!h)
        return;
    while (h->entries) {
        entry_t *e = h->entries;
        h->entries = e->next;
        free(e->service);
        free(e);
    }
    while (h->watchers) { /* only if the server never ran its calls to the end */
        watcher_t *w = h->watchers;
        h->watchers = w->next;
        free(w->service);
        rpc_call_unref(w->call);
        free(w);
    }
    pthread_mutex_destroy(&h->mu);
    free(h);
}
