/*
 * service.c - llmserve.v1.Router on the wire: the Generate stream (many requests, one
 * table of requests in flight per stream) and the unary Complete call.
 *
 * Lock rules: gs->mu guards a Generate stream's table and flags; it is taken after a
 * request's lock (from finished) and never held while calling into a request, so the
 * cancel paths copy what they need and call requests unlocked.
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "base/log.h"
#include "router_int.h"
#include "rpc/codec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The longest `traceparent` metadata value kept (version 00 is 55 bytes; a later version
 * may carry more, of which the parser reads the first 55). */
#define CALL_TRACEPARENT_MAX 256

/* The call's `traceparent` metadata as a string in buf (CALL_TRACEPARENT_MAX bytes); NULL
 * when there is none or it is too long to be valid. */
static const char *call_traceparent(rpc_call_t *call, char *buf)
{
    size_t len = 0;
    const char *v = rpc_md_get(rpc_call_metadata(call), "traceparent", &len);
    if (!v || len >= CALL_TRACEPARENT_MAX)
        return NULL;
    memcpy(buf, v, len);
    buf[len] = '\0';
    return buf;
}

/* ---- Generate: a bidirectional stream of many requests ---------------------------- */

typedef struct {
    relay_sink_t base;
    router_t *r;
    rpc_call_t *call; /* referenced until the sink is freed */
    atomic_int refs;  /* the call's (until on_done) plus one per request */
    pthread_mutex_t mu;
    relay_req_t **reqs; /* in flight, each referenced */
    size_t n, cap;
    bool half_closed, cancelled, finished;
} gen_stream_t;

static void gs_ref(relay_sink_t *s)
{
    atomic_fetch_add(&((gen_stream_t *)s)->refs, 1);
}

static void gs_unref(relay_sink_t *s)
{
    gen_stream_t *gs = (gen_stream_t *)s;
    if (atomic_fetch_sub(&gs->refs, 1) != 1)
        return;
    LS_ASSERT(gs->n == 0);
    free(gs->reqs);
    rpc_call_unref(gs->call);
    pthread_mutex_destroy(&gs->mu);
    free(gs);
}

static void gs_emit(relay_sink_t *s, relay_req_t *req, const Llmserve__V1__GenerateEvent *ev)
{
    (void)req;
    gen_stream_t *gs = (gen_stream_t *)s;
    /* CLOSED (the client left) and FULL (a reader too slow: the call is cancelled and
     * every request on it ends) need nothing more here. */
    rpc_call_send(gs->call, &ev->base);
}

/* Finishes the call once the client half-closed and nothing is in flight. */
static bool do_should_finish(gen_stream_t *gs)
{
    if (gs->half_closed && gs->n == 0 && !gs->finished && !gs->cancelled) {
        gs->finished = true;
        return true;
    }
    return false;
}

static void gs_finished(relay_sink_t *s, relay_req_t *req)
{
    gen_stream_t *gs = (gen_stream_t *)s;
    pthread_mutex_lock(&gs->mu);
    bool found = false;
    for (size_t i = 0; i < gs->n; i++) {
        if (gs->reqs[i] == req) {
            gs->reqs[i] = gs->reqs[--gs->n];
            found = true;
            break;
        }
    }
    bool fin = do_should_finish(gs);
    pthread_mutex_unlock(&gs->mu);
    if (fin)
        rpc_call_finish(gs->call, GRPC_STATUS_OK, NULL);
    if (found)
        router__req_unref(req); /* the table's reference; the caller holds another */
}

/* The requests in flight, each referenced (the caller unrefs them and frees the
 * array), so they can be acted on with gs->mu released.  gs->mu held. */
static relay_req_t **do_snapshot(gen_stream_t *gs, size_t *n)
{
    *n = gs->n;
    relay_req_t **copy = ls_xcalloc(gs->n ? gs->n : 1, sizeof(*copy));
    for (size_t i = 0; i < gs->n; i++) {
        copy[i] = gs->reqs[i];
        router__req_ref(copy[i]);
    }
    return copy;
}

/* Drain: every request left ends with an UNAVAILABLE error, then the stream. */
static void gs_close(relay_sink_t *s, const char *why)
{
    gen_stream_t *gs = (gen_stream_t *)s;
    pthread_mutex_lock(&gs->mu);
    bool already = gs->finished || gs->cancelled;
    gs->finished = true; /* no finish from a request's end: this one is the last */
    size_t n;
    relay_req_t **copy = do_snapshot(gs, &n);
    pthread_mutex_unlock(&gs->mu);
    for (size_t i = 0; i < n; i++) {
        router__req_reject(copy[i], GRPC_STATUS_UNAVAILABLE, why);
        router__req_unref(copy[i]);
    }
    free(copy);
    if (!already)
        rpc_call_finish(gs->call, GRPC_STATUS_UNAVAILABLE, why);
}

static const relay_sink_ops_t gen_ops = {gs_emit, gs_finished, gs_ref, gs_unref, gs_close};

static void *gen_on_start(rpc_call_t *call, void *ctx)
{
    gen_stream_t *gs = ls_xcalloc(1, sizeof(*gs));
    gs->base.ops = &gen_ops;
    gs->r = ctx;
    gs->call = call;
    rpc_call_ref(call);
    atomic_init(&gs->refs, 1);
    pthread_mutex_init(&gs->mu, NULL);
    router__sink_add(gs->r, &gs->base);
    return gs;
}

static relay_req_t *do_find(gen_stream_t *gs, const char *id)
{
    for (size_t i = 0; i < gs->n; i++)
        if (strcmp(router__req_id(gs->reqs[i]), id) == 0)
            return gs->reqs[i];
    return NULL;
}

static void send_error(gen_stream_t *gs, const char *id, int code, const char *message)
{
    Llmserve__V1__Status st = LLMSERVE__V1__STATUS__INIT;
    st.code = code;
    st.message = (char *)message;
    Llmserve__V1__GenerateEvent ev = LLMSERVE__V1__GENERATE_EVENT__INIT;
    ev.request_id = (char *)id;
    ev.kind_case = LLMSERVE__V1__GENERATE_EVENT__KIND_ERROR;
    ev.error = &st;
    rpc_call_send(gs->call, &ev.base);
}

/* A submit refused before a request is made of it: its span, then its error event. */
static void refuse(gen_stream_t *gs, rpc_call_t *call, const Llmserve__V1__GenerateSubmit *s,
                   int code, const char *message)
{
    char tp[CALL_TRACEPARENT_MAX];
    router__trace_refused(gs->r, s, true, call_traceparent(call, tp), code, message);
    send_error(gs, s->request_id, code, message);
}

static void gen_submit(gen_stream_t *gs, rpc_call_t *call, const Llmserve__V1__GenerateSubmit *s)
{
    router_t *r = gs->r;
    if (router__draining(r)) {
        refuse(gs, call, s, GRPC_STATUS_UNAVAILABLE, "the router is shutting down; retry elsewhere");
        return;
    }
    pthread_mutex_lock(&gs->mu);
    if (s->request_id[0] && do_find(gs, s->request_id)) {
        pthread_mutex_unlock(&gs->mu);
        /* The earlier request goes on undisturbed; this submit is dropped. */
        refuse(gs, call, s, GRPC_STATUS_ALREADY_EXISTS,
               "request_id is already in flight on this stream");
        return;
    }
    if (gs->n >= (size_t)r->cfg.max_in_flight) {
        pthread_mutex_unlock(&gs->mu);
        char msg[96];
        snprintf(msg, sizeof(msg), "more than %" PRId64 " requests in flight on this stream",
                 r->cfg.max_in_flight);
        refuse(gs, call, s, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
        return;
    }
    char tp[CALL_TRACEPARENT_MAX];
    relay_req_t *q = router__req_create(r, &gs->base, s, true, rpc_call_remaining_us(call),
                                        rpc_call_principal(call), call_traceparent(call, tp));
    if (!q) {
        pthread_mutex_unlock(&gs->mu);
        send_error(gs, s->request_id, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    if (gs->n == gs->cap) {
        gs->cap = gs->cap ? gs->cap * 2 : 8;
        relay_req_t **a = ls_xcalloc(gs->cap, sizeof(*a));
        if (gs->n)
            memcpy(a, gs->reqs, gs->n * sizeof(*a));
        free(gs->reqs);
        gs->reqs = a;
    }
    router__req_ref(q);
    gs->reqs[gs->n++] = q;
    pthread_mutex_unlock(&gs->mu);
    router__req_start(q);
    router__req_unref(q);
}

static void gen_cancel(gen_stream_t *gs, const char *id)
{
    pthread_mutex_lock(&gs->mu);
    relay_req_t *q = do_find(gs, id);
    if (q)
        router__req_ref(q);
    pthread_mutex_unlock(&gs->mu);
    if (!q)
        return; /* unknown or finished: ignored, no event */
    router__req_cancel(q);
    router__req_unref(q);
}

static void gen_on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    gen_stream_t *gs = state;
    const Llmserve__V1__GenerateRequest *req = (const Llmserve__V1__GenerateRequest *)msg;
    switch (req->kind_case) {
    case LLMSERVE__V1__GENERATE_REQUEST__KIND_SUBMIT:
        gen_submit(gs, call, req->submit);
        break;
    case LLMSERVE__V1__GENERATE_REQUEST__KIND_CANCEL:
        gen_cancel(gs, req->cancel->request_id);
        break;
    default:
        break; /* neither set: ignored */
    }
}

static void gen_on_half_close(rpc_call_t *call, void *state)
{
    gen_stream_t *gs = state;
    pthread_mutex_lock(&gs->mu);
    gs->half_closed = true;
    bool fin = do_should_finish(gs);
    pthread_mutex_unlock(&gs->mu);
    if (fin)
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* The client cancelled, its deadline passed, or it went away: every request on the
 * stream is cancelled downstream at once. */
static void gen_on_cancel(rpc_call_t *call, void *state)
{
    (void)call;
    gen_stream_t *gs = state;
    pthread_mutex_lock(&gs->mu);
    gs->cancelled = true;
    size_t n;
    relay_req_t **copy = do_snapshot(gs, &n);
    pthread_mutex_unlock(&gs->mu);
    for (size_t i = 0; i < n; i++) {
        router__req_cancel(copy[i]);
        router__req_unref(copy[i]);
    }
    free(copy);
}

static void gen_on_done(rpc_call_t *call, void *state)
{
    (void)call;
    gen_stream_t *gs = state;
    router__sink_remove(gs->r, &gs->base);
    gs_unref(&gs->base);
}

/* ---- Complete: one request, one answer ------------------------------------------- */

typedef struct {
    relay_sink_t base;
    router_t *r;
    rpc_call_t *call;
    atomic_int refs;
    pthread_mutex_t mu; /* guards the fields below */
    relay_req_t *req;   /* referenced until finished */
    char *text;
    size_t len, cap;
    bool failed_alloc;
    Llmserve__V1__GenerateStarted *route; /* copy of the last started event */
} complete_t;

static void cs_ref(relay_sink_t *s)
{
    atomic_fetch_add(&((complete_t *)s)->refs, 1);
}

static void cs_unref(relay_sink_t *s)
{
    complete_t *c = (complete_t *)s;
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    if (c->route)
        llmserve__v1__generate_started__free_unpacked(c->route, NULL);
    free(c->text);
    rpc_call_unref(c->call);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void cs_emit(relay_sink_t *s, relay_req_t *req, const Llmserve__V1__GenerateEvent *ev)
{
    complete_t *c = (complete_t *)s;
    pthread_mutex_lock(&c->mu);
    switch (ev->kind_case) {
    case LLMSERVE__V1__GENERATE_EVENT__KIND_STARTED:
        if (c->route)
            llmserve__v1__generate_started__free_unpacked(c->route, NULL);
        c->route = (Llmserve__V1__GenerateStarted *)rpc_codec_copy(&ev->started->base);
        break;
    case LLMSERVE__V1__GENERATE_EVENT__KIND_TOKEN: {
        size_t n = strlen(ev->token->text);
        if (c->len + n + 1 > c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 256;
            while (cap < c->len + n + 1)
                cap *= 2;
            char *t = realloc(c->text, cap);
            if (!t) {
                c->failed_alloc = true;
                break;
            }
            c->text = t;
            c->cap = cap;
        }
        memcpy(c->text + c->len, ev->token->text, n + 1);
        c->len += n;
        break;
    }
    case LLMSERVE__V1__GENERATE_EVENT__KIND_DONE: {
        if (c->failed_alloc) {
            rpc_call_finish(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED, "answer too large");
            break;
        }
        Llmserve__V1__CompleteResponse resp = LLMSERVE__V1__COMPLETE_RESPONSE__INIT;
        resp.request_id = (char *)router__req_id(req);
        resp.text = c->text ? c->text : "";
        resp.finish_reason = ev->done->finish_reason;
        resp.usage = ev->done->usage;
        resp.timings = ev->done->timings;
        resp.route = c->route;
        rpc_call_reply(c->call, &resp.base);
        break;
    }
    case LLMSERVE__V1__GENERATE_EVENT__KIND_ERROR:
        if (ev->error->retry_after_ms) /* gRPC retry policies wait that long, then retry */
            rpc_call_set_retry_pushback(c->call, ev->error->retry_after_ms);
        rpc_call_finish(c->call, (grpc_status_code)ev->error->code, ev->error->message);
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&c->mu);
}

static void cs_finished(relay_sink_t *s, relay_req_t *req)
{
    complete_t *c = (complete_t *)s;
    pthread_mutex_lock(&c->mu);
    bool ours = c->req == req;
    if (ours)
        c->req = NULL;
    pthread_mutex_unlock(&c->mu);
    if (ours)
        router__req_unref(req);
}

static void cs_close(relay_sink_t *s, const char *why)
{
    complete_t *c = (complete_t *)s;
    pthread_mutex_lock(&c->mu);
    relay_req_t *q = c->req;
    if (q)
        router__req_ref(q);
    pthread_mutex_unlock(&c->mu);
    if (q) { /* its error event finishes the call */
        router__req_reject(q, GRPC_STATUS_UNAVAILABLE, why);
        router__req_unref(q);
    } else {
        rpc_call_finish(c->call, GRPC_STATUS_UNAVAILABLE, why);
    }
}

static const relay_sink_ops_t complete_ops = {cs_emit, cs_finished, cs_ref, cs_unref, cs_close};

static void *complete_on_start(rpc_call_t *call, void *ctx)
{
    complete_t *c = ls_xcalloc(1, sizeof(*c));
    c->base.ops = &complete_ops;
    c->r = ctx;
    c->call = call;
    rpc_call_ref(call);
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->mu, NULL);
    router__sink_add(c->r, &c->base);
    return c;
}

static void complete_on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    complete_t *c = state;
    const Llmserve__V1__CompleteRequest *req = (const Llmserve__V1__CompleteRequest *)msg;
    if (!req->request) {
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "request is not set");
        return;
    }
    if (router__draining(c->r)) {
        char tp[CALL_TRACEPARENT_MAX];
        router__trace_refused(c->r, req->request, false, call_traceparent(call, tp),
                              GRPC_STATUS_UNAVAILABLE,
                              "the router is shutting down; retry elsewhere");
        rpc_call_finish(call, GRPC_STATUS_UNAVAILABLE,
                        "the router is shutting down; retry elsewhere");
        return;
    }
    char tp[CALL_TRACEPARENT_MAX];
    relay_req_t *q =
        router__req_create(c->r, &c->base, req->request, false, rpc_call_remaining_us(call),
                           rpc_call_principal(call), call_traceparent(call, tp));
    if (!q) {
        rpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->req = q;
    router__req_ref(q); /* c->req's */
    pthread_mutex_unlock(&c->mu);
    router__req_start(q);
    router__req_unref(q);
}

static void complete_on_cancel(rpc_call_t *call, void *state)
{
    (void)call;
    complete_t *c = state;
    pthread_mutex_lock(&c->mu);
    relay_req_t *q = c->req;
    if (q)
        router__req_ref(q);
    pthread_mutex_unlock(&c->mu);
    if (q) {
        router__req_cancel(q);
        router__req_unref(q);
    }
}

static void complete_on_done(rpc_call_t *call, void *state)
{
    (void)call;
    complete_t *c = state;
    router__sink_remove(c->r, &c->base);
    cs_unref(&c->base);
}

int router__register_service(router_t *r, rpc_server_t *srv);

int router__register_service(router_t *r, rpc_server_t *srv)
{
    rpc_handler_t gen = {.on_start = gen_on_start,
                         .on_message = gen_on_message,
                         .on_half_close = gen_on_half_close,
                         .on_cancel = gen_on_cancel,
                         .on_done = gen_on_done};
    rpc_handler_t complete = {.on_start = complete_on_start,
                              .on_message = complete_on_message,
                              .on_cancel = complete_on_cancel,
                              .on_done = complete_on_done};
    int rc = rpc_server_add_method(srv, "/llmserve.v1.Router/Generate", RPC_STREAM,
                                   &llmserve__v1__generate_request__descriptor, &gen, r);
    if (rc == LS_OK)
        rc = rpc_server_add_method(srv, "/llmserve.v1.Router/Complete", RPC_UNARY,
                                   &llmserve__v1__complete_request__descriptor, &complete, r);
    return rc;
}
