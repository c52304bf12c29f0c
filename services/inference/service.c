/*
 * service.c - Inference.Generate, Info and Embed handlers.
 *
 * Lock rules:
 * - svc->mu guards the list of open streams, `closing` and the attached model
 *   pointers (written once by attach).
 * - gen_stream_t.mu guards the stream's request list and its flags.  A request on
 *   the list is alive: the scheduler's release unlinks it under this lock before
 *   freeing it, so a handler holding the lock may hand it to inf_sched_cancel.
 * - Order: svc->mu, then a stream's mu, then the scheduler's lock, then the rpc
 *   library's call lock.  The scheduler calls the sink with none of its locks held.
 */
#define _GNU_SOURCE
#include "service.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "embed.h"
#include "llmserve/v1/inference.pb-c.h"
#include "report.h"
#include "request.h"
#include "trace.h"
#include "base/utf8.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct gen_stream gen_stream_t;

/* The sink every request of this service reports to; flush finds the streams that hold
 * events back through svc. */
typedef struct {
    inf_sink_t base;
    inf_service_t *svc;
} svc_sink_t;

struct inf_service {
    rpc_server_t *srv;
    inf_service_config_t cfg;
    char *model_name, *model_version, *pool; /* owned copies of cfg's strings */

    pthread_mutex_t mu;
    gen_stream_t *streams; /* open Generate calls */
    bool closing;
    bool ready;
    const ckpt_t *ck;
    const tok_t *tok;
    inf_sched_t *sched;
    inf_limits_t limits;
    svc_sink_t sink;
    gen_stream_t *held; /* streams holding events back (scheduler thread only) */
    char backend[16];
    char device[128];
    int max_batch;
    int64_t kv_budget_tokens;
    bool prefix_cache;
    inf_report_t rep; /* set by attach, before ready */
    inf_trace_t trace; /* tracer from cfg; model and backend (svc's strings) set by attach */
};

struct gen_stream {
    inf_service_t *svc;
    rpc_call_t *call;
    gen_stream_t *prev, *next; /* svc->streams */

    pthread_mutex_t mu;
    int refs;            /* the call's (until on_done) plus one per linked request */
    inf_request_t *reqs; /* in flight: submitted and not yet released */
    int n_reqs;
    bool half_closed; /* the client will submit nothing more */
    bool cancelled;   /* the call is over for sending */
    bool finished;    /* rpc_call_finish was called (or must not be) */

    /* Event batching ("llmserve-event-batch: 1" at open; see inference.proto): events
     * held back until the scheduler's round ends, as one InferenceEvent whose `batch`
     * holds the rest.  Scheduler thread only. */
    bool batch_events;
    uint8_t *held;
    size_t held_len, held_cap;
    int held_n;
    bool listed; /* on svc->held */
    bool send_failed;
    gen_stream_t *held_next; /* svc->held */
};

static void stream_unref(gen_stream_t *st)
{
    pthread_mutex_lock(&st->mu);
    bool last = --st->refs == 0;
    pthread_mutex_unlock(&st->mu);
    if (last) {
        pthread_mutex_destroy(&st->mu);
        free(st->held);
        free(st);
    }
}

/* The request with id on st, or NULL.  st->mu held. */
static inf_request_t *do_find(gen_stream_t *st, const char *id)
{
    for (inf_request_t *r = st->reqs; r; r = r->owner_next)
        if (strcmp(r->id, id) == 0)
            return r;
    return NULL;
}

/* Links r and takes a stream reference for it (dropped by its release). */
static void do_link(gen_stream_t *st, inf_request_t *r)
{
    r->owner_prev = NULL;
    r->owner_next = st->reqs;
    if (st->reqs)
        st->reqs->owner_prev = r;
    st->reqs = r;
    st->n_reqs++;
    st->refs++;
}

static void do_unlink(gen_stream_t *st, inf_request_t *r)
{
    if (r->owner_prev)
        r->owner_prev->owner_next = r->owner_next;
    else
        st->reqs = r->owner_next;
    if (r->owner_next)
        r->owner_next->owner_prev = r->owner_prev;
    r->owner_prev = r->owner_next = NULL;
    st->n_reqs--;
}

/* Finishes the call with OK once the client half-closed and nothing is in flight. */
static void maybe_finish(gen_stream_t *st)
{
    pthread_mutex_lock(&st->mu);
    bool fin = st->half_closed && st->n_reqs == 0 && !st->finished && !st->cancelled;
    if (fin)
        st->finished = true;
    pthread_mutex_unlock(&st->mu);
    if (fin)
        rpc_call_finish(st->call, GRPC_STATUS_OK, NULL);
}

/* An error event for a request that never reached the scheduler.  id is echoed only
 * when it is UTF-8 (a server never emits anything else). */
static void send_error(gen_stream_t *st, const char *id, grpc_status_code code, const char *msg)
{
    Llmserve__V1__Status status = LLMSERVE__V1__STATUS__INIT;
    status.code = (int32_t)code;
    status.message = (char *)msg;
    Llmserve__V1__InferenceEvent ev = LLMSERVE__V1__INFERENCE_EVENT__INIT;
    ev.request_id = ls_utf8_valid(id, strlen(id)) ? (char *)id : "";
    ev.kind_case = LLMSERVE__V1__INFERENCE_EVENT__KIND_ERROR;
    ev.error = &status;
    rpc_call_send(st->call, &ev.base);
    LS_LOG_DEBUG("inference", "request refused code=%d msg=\"%s\"", (int)code, msg);
}

/* ---- the sink the scheduler reports to ----------------------------------------------- */

/* Held events past this many bytes go out at once rather than at the round's end. */
#define HELD_MAX_BYTES (256 * 1024)

/* Sends what st holds back as one message. */
static void send_held(gen_stream_t *st)
{
    if (st->held_len == 0)
        return;
    if (rpc_call_send_raw(st->call, st->held, st->held_len) != LS_OK)
        st->send_failed = true; /* its requests learn it at their next emit */
    st->held_len = 0;
    st->held_n = 0;
}

static void put_varint(uint8_t *p, size_t *at, uint64_t v)
{
    while (v >= 0x80) {
        p[(*at)++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[(*at)++] = (uint8_t)v;
}

/* Appends ev to what st holds: the first event as the message itself, each later one as
 * an entry of its `batch` field (16, length-delimited), which protobuf's merging of
 * concatenated fields makes one InferenceEvent. */
static int hold_event(gen_stream_t *st, const Llmserve__V1__InferenceEvent *ev)
{
    size_t len = protobuf_c_message_get_packed_size(&ev->base);
    size_t need = st->held_len + len + 12;
    if (need > st->held_cap) {
        size_t cap = st->held_cap ? st->held_cap : 1024;
        while (cap < need)
            cap *= 2;
        uint8_t *p = realloc(st->held, cap);
        if (!p)
            return LS_ERR_NOMEM;
        st->held = p;
        st->held_cap = cap;
    }
    if (st->held_n > 0) {
        st->held[st->held_len++] = 0x82; /* key of field 16, wire type 2, as a varint */
        st->held[st->held_len++] = 0x01;
        put_varint(st->held, &st->held_len, len);
    }
    protobuf_c_message_pack(&ev->base, st->held + st->held_len);
    st->held_len += len;
    st->held_n++;
    return LS_OK;
}

static int sink_emit(inf_request_t *r, const Llmserve__V1__InferenceEvent *ev)
{
    gen_stream_t *st = r->owner;
    if (!st->batch_events)
        return rpc_call_send(st->call, &ev->base);
    if (st->send_failed)
        return LS_ERR_CLOSED;
    if (!st->listed) {
        st->held_next = st->svc->held;
        st->svc->held = st;
        st->listed = true;
    }
    int rc = hold_event(st, ev);
    if (rc == LS_OK && st->held_len >= HELD_MAX_BYTES)
        send_held(st); /* stays listed; flush skips it once empty */
    return rc;
}

/* End of a scheduler round: every stream that holds events sends them. */
static void sink_flush(const void *sink)
{
    inf_service_t *svc = ((const svc_sink_t *)sink)->svc;
    for (gen_stream_t *st = svc->held, *next; st; st = next) {
        next = st->held_next;
        st->held_next = NULL;
        st->listed = false;
        send_held(st);
    }
    svc->held = NULL;
}

static void sink_release(inf_request_t *r)
{
    gen_stream_t *st = r->owner;
    rpc_call_t *call = st->call;
    /* The request's terminal event may be held: send everything the stream holds, and
     * take it off the list, since this may be the stream's last reference. */
    if (st->listed)
        sink_flush(&st->svc->sink);
    pthread_mutex_lock(&st->mu);
    do_unlink(st, r);
    pthread_mutex_unlock(&st->mu);
    inf_request_destroy(r);
    maybe_finish(st);
    stream_unref(st);
    rpc_call_unref(call);
}


/* ---- Generate -------------------------------------------------------------------------- */

static void *gen_on_start(rpc_call_t *call, void *ctx)
{
    inf_service_t *svc = ctx;
    gen_stream_t *st = ls_xcalloc(1, sizeof(*st));
    pthread_mutex_init(&st->mu, NULL);
    st->svc = svc;
    st->call = call;
    st->refs = 1;
    size_t vlen = 0;
    const char *v = rpc_md_get(rpc_call_metadata(call), "llmserve-event-batch", &vlen);
    st->batch_events = v && vlen == 1 && v[0] == '1';
    pthread_mutex_lock(&svc->mu);
    st->next = svc->streams;
    if (svc->streams)
        svc->streams->prev = st;
    svc->streams = st;
    bool closing = svc->closing;
    if (closing)
        st->finished = true;
    pthread_mutex_unlock(&svc->mu);
    if (closing)
        rpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, "server shutting down");
    return st;
}

/* The earlier of the request's own deadline and the call's. */
static int64_t effective_deadline(const gen_stream_t *st, const inf_request_t *r, int64_t now)
{
    int64_t left = rpc_call_remaining_us(st->call);
    int64_t call_deadline = left == INT64_MAX ? INT64_MAX : now + left;
    return call_deadline < r->deadline_us ? call_deadline : r->deadline_us;
}

/* A submit refused before the scheduler: its error event, and its span. */
static void refuse(gen_stream_t *st, const Llmserve__V1__InferenceSubmit *sub,
                   const inf_trace_t *tr, const svc_trace_ctx_t *parent, int64_t arrival_us,
                   grpc_status_code code, const char *msg)
{
    send_error(st, sub->request_id ? sub->request_id : "", code, msg);
    inf_trace_refused(tr, sub, parent, arrival_us, (int)code, msg);
}

static void submit(gen_stream_t *st, const Llmserve__V1__InferenceSubmit *sub)
{
    inf_service_t *svc = st->svc;
    int64_t now = ls_now_us();
    const char *id = sub->request_id ? sub->request_id : "";
    char err[256];
    /* trace.model and .backend are written once, by attach, under svc->mu. */
    pthread_mutex_lock(&svc->mu);
    bool ready = svc->ready, closing = svc->closing;
    inf_limits_t limits = svc->limits;
    const tok_t *tok = svc->tok;
    inf_sched_t *sched = svc->sched;
    inf_trace_t tr = svc->trace;
    pthread_mutex_unlock(&svc->mu);
    svc_trace_ctx_t parent;
    bool has_parent = inf_trace_parent(&tr, sub->traceparent, &parent);
    const svc_trace_ctx_t *pp = has_parent ? &parent : NULL;

    if (inf_request_check_id(id, err, sizeof(err)) != LS_OK) {
        refuse(st, sub, &tr, pp, now, GRPC_STATUS_INVALID_ARGUMENT, err);
        return;
    }
    if (closing && ready)
        inf_report_refused(&svc->rep, INF_REFUSED_DRAINING);
    if (closing || !ready) {
        refuse(st, sub, &tr, pp, now, GRPC_STATUS_UNAVAILABLE,
               closing ? "server shutting down" : "model is loading");
        return;
    }

    pthread_mutex_lock(&st->mu);
    bool dup = do_find(st, id) != NULL;
    pthread_mutex_unlock(&st->mu);
    if (dup) {
        snprintf(err, sizeof(err), "request_id \"%s\" is already in flight on this stream", id);
        refuse(st, sub, &tr, pp, now, GRPC_STATUS_ALREADY_EXISTS, err);
        return;
    }

    inf_request_t *r = NULL;
    int rc = inf_request_create(sub, tok, &limits, now, &r, err, sizeof(err));
    if (rc == LS_ERR_FULL) {
        inf_report_refused(&svc->rep, INF_REFUSED_TOO_LONG);
        refuse(st, sub, &tr, pp, now, GRPC_STATUS_INVALID_ARGUMENT, err);
        return;
    }
    if (rc != LS_OK) {
        refuse(st, sub, &tr, pp, now, (grpc_status_code)ls_err_to_grpc(rc), err);
        return;
    }
    r->sink = &svc->sink.base;
    r->owner = st;
    r->deadline_us = effective_deadline(st, r, now);
    if (has_parent) {
        r->trace_parent = parent;
        r->has_trace_parent = true;
    }

    /* Linked before submitting, so the scheduler's release always finds it; the lock
     * is held across the submit so a failed submit can be undone unseen. */
    pthread_mutex_lock(&st->mu);
    if (st->cancelled) {
        pthread_mutex_unlock(&st->mu);
        inf_request_destroy(r);
        return;
    }
    do_link(st, r);
    rpc_call_ref(st->call);
    rc = inf_sched_submit(sched, r);
    if (rc != LS_OK) {
        do_unlink(st, r);
        st->refs--; /* never the last: the call holds one until on_done */
    }
    pthread_mutex_unlock(&st->mu);
    if (rc == LS_OK)
        return;
    rpc_call_unref(st->call);
    inf_request_destroy(r);
    if (rc == LS_ERR_FULL) {
        snprintf(err, sizeof(err), "admission queue is full (max_queue=%d)", svc->cfg.max_queue);
        refuse(st, sub, &tr, pp, now, GRPC_STATUS_RESOURCE_EXHAUSTED, err);
    } else if (rc == LS_ERR_DEVICE) {
        refuse(st, sub, &tr, pp, now, GRPC_STATUS_UNAVAILABLE, INF_SCHED_DEVICE_FAILED_MSG);
    } else {
        refuse(st, sub, &tr, pp, now, GRPC_STATUS_UNAVAILABLE, "server shutting down");
    }
}

static inf_sched_t *get_sched(inf_service_t *svc)
{
    pthread_mutex_lock(&svc->mu);
    inf_sched_t *sched = svc->sched;
    pthread_mutex_unlock(&svc->mu);
    return sched;
}

static void cancel(gen_stream_t *st, const char *id)
{
    inf_sched_t *sched = get_sched(st->svc);
    pthread_mutex_lock(&st->mu);
    inf_request_t *r = id ? do_find(st, id) : NULL;
    if (r)
        inf_sched_cancel(sched, r);
    pthread_mutex_unlock(&st->mu);
}

static void gen_on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    (void)call;
    gen_stream_t *st = state;
    const Llmserve__V1__InferenceRequest *m = (const Llmserve__V1__InferenceRequest *)msg;
    switch (m->kind_case) {
    case LLMSERVE__V1__INFERENCE_REQUEST__KIND_SUBMIT:
        submit(st, m->submit);
        break;
    case LLMSERVE__V1__INFERENCE_REQUEST__KIND_CANCEL:
        cancel(st, m->cancel->request_id);
        break;
    default:
        break; /* neither set: ignored, as the API says */
    }
}

static void gen_on_half_close(rpc_call_t *call, void *state)
{
    (void)call;
    gen_stream_t *st = state;
    pthread_mutex_lock(&st->mu);
    st->half_closed = true;
    pthread_mutex_unlock(&st->mu);
    maybe_finish(st);
}

static void gen_on_cancel(rpc_call_t *call, void *state)
{
    (void)call;
    gen_stream_t *st = state;
    inf_sched_t *sched = get_sched(st->svc);
    pthread_mutex_lock(&st->mu);
    st->cancelled = true;
    st->finished = true;
    int n = st->n_reqs;
    for (inf_request_t *r = st->reqs; r; r = r->owner_next)
        inf_sched_cancel(sched, r);
    pthread_mutex_unlock(&st->mu);
    if (n > 0)
        LS_LOG_INFO("inference", "stream cancelled requests=%d peer=%s", n, rpc_call_peer(call));
}

static void gen_on_done(rpc_call_t *call, void *state)
{
    (void)call;
    gen_stream_t *st = state;
    inf_service_t *svc = st->svc;
    pthread_mutex_lock(&svc->mu);
    if (st->prev)
        st->prev->next = st->next;
    else
        svc->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    pthread_mutex_unlock(&svc->mu);
    /* on_cancel did not necessarily run (a stream that ended with OK): anything still
     * in flight can no longer be answered. */
    inf_sched_t *sched = get_sched(svc);
    pthread_mutex_lock(&st->mu);
    st->cancelled = true;
    for (inf_request_t *r = st->reqs; r; r = r->owner_next)
        inf_sched_cancel(sched, r);
    pthread_mutex_unlock(&st->mu);
    stream_unref(st);
}

/* ---- Info ------------------------------------------------------------------------------ */

static void *unary_on_start(rpc_call_t *call, void *ctx)
{
    (void)call;
    return ctx;
}

static void info_on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    (void)msg;
    inf_service_t *svc = state;
    pthread_mutex_lock(&svc->mu);
    if (!svc->ready) {
        pthread_mutex_unlock(&svc->mu);
        rpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, "model is loading");
        return;
    }
    const ckpt_config_t *c = &svc->ck->cfg;
    Llmserve__V1__InfoResponse resp = LLMSERVE__V1__INFO_RESPONSE__INIT;
    resp.model = svc->model_name[0] ? svc->model_name : svc->ck->name;
    resp.model_version = svc->model_version;
    resp.pool = svc->pool;
    resp.dim = (uint32_t)c->dim;
    resp.hidden_dim = (uint32_t)c->hidden_dim;
    resp.n_layers = (uint32_t)c->n_layers;
    resp.n_heads = (uint32_t)c->n_heads;
    resp.n_kv_heads = (uint32_t)c->n_kv_heads;
    resp.vocab_size = (uint32_t)c->vocab_size;
    resp.seq_len = (uint32_t)c->seq_len;
    resp.backend = svc->backend;
    resp.device = svc->device;
    resp.max_batch = (uint32_t)svc->max_batch;
    resp.max_queue = (uint32_t)svc->cfg.max_queue;
    resp.kv_budget_tokens = (uint64_t)svc->kv_budget_tokens;
    resp.prefix_cache = svc->prefix_cache;
    pthread_mutex_unlock(&svc->mu);
    /* The strings point into svc and ck, which live until the server is gone. */
    rpc_call_reply(call, &resp.base);
}

/* ---- Embed ----------------------------------------------------------------------------- */

/* The model this instance serves, as Info names it.  svc->mu held, ready. */
static const char *do_served_name(const inf_service_t *svc)
{
    return svc->model_name[0] ? svc->model_name : svc->ck->name;
}

/* Embeds every text of req into one reply, or fails the whole call.  Runs on the rpc
 * thread: the work is bounded by INF_EMBED_MAX_TEXTS * seq_len table rows of dim
 * floats, with no forward pass (embed.h says why). */
static void embed_on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    inf_service_t *svc = state;
    const Llmserve__V1__EmbedRequest *req = (const Llmserve__V1__EmbedRequest *)msg;
    pthread_mutex_lock(&svc->mu);
    bool ready = svc->ready, closing = svc->closing;
    const ckpt_t *ck = svc->ck;
    const tok_t *tok = svc->tok;
    size_t max_bytes = svc->limits.max_prompt_bytes;
    const char *served = ready ? do_served_name(svc) : ""; /* lives as long as svc */
    pthread_mutex_unlock(&svc->mu);
    if (closing || !ready) {
        rpc_call_finish(call, GRPC_STATUS_UNAVAILABLE,
                        closing ? "server shutting down" : "model is loading");
        return;
    }

    char err[320];
    const char *model = req->model ? req->model : "";
    if (model[0] && strcmp(model, served) != 0) {
        if (ls_utf8_valid(model, strlen(model)) && strlen(model) <= 128)
            snprintf(err, sizeof(err),
                     "model \"%s\" is not served here (this instance serves \"%s\")", model,
                     served);
        else
            snprintf(err, sizeof(err), "model is not served here (this instance serves \"%s\")",
                     served);
        rpc_call_finish(call, GRPC_STATUS_NOT_FOUND, err);
        return;
    }
    if (req->n_texts == 0) {
        snprintf(err, sizeof(err), "texts is empty (send 1 to %d)", INF_EMBED_MAX_TEXTS);
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, err);
        return;
    }
    if (req->n_texts > INF_EMBED_MAX_TEXTS) {
        snprintf(err, sizeof(err), "%zu texts (at most %d per call)", req->n_texts,
                 INF_EMBED_MAX_TEXTS);
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, err);
        return;
    }

    size_t n = req->n_texts, dim = (size_t)ck->cfg.dim;
    inf_embed_scratch_t sc;
    Llmserve__V1__Embedding *embs = calloc(n, sizeof(*embs));
    Llmserve__V1__Embedding **ptrs = calloc(n, sizeof(*ptrs));
    float *values = malloc(n * dim * sizeof(float));
    if (!embs || !ptrs || !values || inf_embed_scratch_init(&sc, ck) != LS_OK) {
        rpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out_free;
    }
    for (size_t i = 0; i < n; i++) {
        const char *text = req->texts[i] ? req->texts[i] : "";
        char why[256];
        int n_tokens = 0;
        int rc = inf_embed_text(ck, tok, text, strlen(text), max_bytes, &sc, values + i * dim,
                                &n_tokens, why, sizeof(why));
        if (rc != LS_OK) {
            snprintf(err, sizeof(err), "texts[%zu] %s", i, why);
            rpc_call_finish(call,
                            rc == LS_ERR_NOMEM ? GRPC_STATUS_RESOURCE_EXHAUSTED
                                               : GRPC_STATUS_INVALID_ARGUMENT,
                            err);
            goto out_scratch;
        }
        llmserve__v1__embedding__init(&embs[i]);
        embs[i].values = values + i * dim;
        embs[i].n_values = dim;
        embs[i].tokens = (uint32_t)n_tokens;
        ptrs[i] = &embs[i];
    }
    Llmserve__V1__EmbedResponse resp = LLMSERVE__V1__EMBED_RESPONSE__INIT;
    resp.model = (char *)served;
    resp.dim = (uint32_t)dim;
    resp.embeddings = ptrs;
    resp.n_embeddings = n;
    rpc_call_reply(call, &resp.base); /* packed at once: the buffers may go */
out_scratch:
    inf_embed_scratch_free(&sc);
out_free:
    free(values);
    free(ptrs);
    free(embs);
}

/* ---- life ------------------------------------------------------------------------------ */

inf_service_t *inf_service_create(rpc_server_t *srv, const inf_service_config_t *cfg)
{
    inf_service_t *svc = ls_xcalloc(1, sizeof(*svc));
    svc->sink.base = (inf_sink_t){sink_emit, sink_release, sink_flush};
    svc->sink.svc = svc;
    svc->srv = srv;
    svc->cfg = *cfg;
    svc->model_name = ls_xstrdup(cfg->model_name ? cfg->model_name : "");
    svc->model_version = ls_xstrdup(cfg->model_version ? cfg->model_version : "");
    svc->pool = ls_xstrdup(cfg->pool ? cfg->pool : "");
    svc->cfg.model_name = svc->model_name;
    svc->cfg.model_version = svc->model_version;
    svc->cfg.pool = svc->pool;
    svc->trace.tracer = cfg->tracer;
    svc->trace.model = svc->model_name;
    pthread_mutex_init(&svc->mu, NULL);

    rpc_handler_t gen = {.on_start = gen_on_start,
                         .on_message = gen_on_message,
                         .on_half_close = gen_on_half_close,
                         .on_cancel = gen_on_cancel,
                         .on_done = gen_on_done};
    rpc_handler_t info = {.on_start = unary_on_start, .on_message = info_on_message};
    rpc_handler_t embed = {.on_start = unary_on_start, .on_message = embed_on_message};
    if (rpc_server_add_method(srv, "/" INF_SERVICE_NAME "/Generate", RPC_STREAM,
                              &llmserve__v1__inference_request__descriptor, &gen, svc) != LS_OK ||
        rpc_server_add_method(srv, "/" INF_SERVICE_NAME "/Info", RPC_UNARY,
                              &llmserve__v1__info_request__descriptor, &info, svc) != LS_OK ||
        rpc_server_add_method(srv, "/" INF_SERVICE_NAME "/Embed", RPC_UNARY,
                              &llmserve__v1__embed_request__descriptor, &embed, svc) != LS_OK) {
        LS_LOG_ERROR("inference", "cannot register the Inference methods");
        inf_service_destroy(svc);
        return NULL;
    }
    return svc;
}

void inf_service_set_serving(inf_service_t *svc, bool serving)
{
    rpc_health_status_t h = serving ? RPC_HEALTH_SERVING : RPC_HEALTH_NOT_SERVING;
    rpc_server_set_health(svc->srv, "", h);
    rpc_server_set_health(svc->srv, INF_SERVICE_NAME, h);
}

void inf_service_attach(inf_service_t *svc, const ckpt_t *ck, const tok_t *tok, forward_t *f,
                        inf_sched_t *sched)
{
    const forward_config_t *fc = forward_config(f);
    pthread_mutex_lock(&svc->mu);
    svc->ck = ck;
    svc->tok = tok;
    svc->sched = sched;
    svc->limits.vocab_size = ck->cfg.vocab_size;
    svc->limits.seq_len = ck->cfg.seq_len;
    svc->limits.default_max_tokens = svc->cfg.default_max_tokens;
    svc->limits.max_tokens_limit = svc->cfg.max_tokens_limit;
    svc->limits.longest_piece = inf_longest_piece(tok);
    svc->limits.max_prompt_bytes = (size_t)ck->cfg.seq_len * svc->limits.longest_piece;
    snprintf(svc->backend, sizeof(svc->backend), "%s", forward_backend_name(f));
    snprintf(svc->device, sizeof(svc->device), "%s", forward_device_name(f));
    svc->max_batch = fc->max_batch;
    svc->kv_budget_tokens = fc->kv_budget_tokens;
    svc->prefix_cache = fc->prefix_cache;
    inf_report_init(&svc->rep, svc->cfg.reporter, svc->pool,
                    svc->model_name[0] ? svc->model_name : ck->name);
    svc->trace.model = svc->model_name[0] ? svc->model_name : ck->name;
    svc->trace.backend = svc->backend;
    svc->ready = true;
    pthread_mutex_unlock(&svc->mu);
    inf_service_set_serving(svc, true);
}

void inf_service_drain(inf_service_t *svc, int64_t grace_ms)
{
    pthread_mutex_lock(&svc->mu);
    svc->closing = true;
    inf_sched_t *sched = svc->sched;
    pthread_mutex_unlock(&svc->mu);
    inf_service_set_serving(svc, false);
    int64_t t0 = ls_now_us();
    if (sched) {
        int queued = 0, running = 0;
        inf_sched_counts(sched, &queued, &running);
        LS_LOG_INFO("inference", "draining queued=%d running=%d grace_ms=%lld", queued, running,
                    (long long)grace_ms);
        inf_sched_drain(sched, grace_ms * 1000);
    }
    /* Every request has had its terminal event queued; the router reconnects elsewhere
     * when its stream ends with UNAVAILABLE. */
    int n = 0;
    pthread_mutex_lock(&svc->mu);
    for (gen_stream_t *st = svc->streams; st; st = st->next) {
        pthread_mutex_lock(&st->mu);
        bool fin = !st->finished;
        st->finished = true;
        pthread_mutex_unlock(&st->mu);
        if (fin) {
            rpc_call_finish(st->call, GRPC_STATUS_UNAVAILABLE, "server shutting down");
            n++;
        }
    }
    pthread_mutex_unlock(&svc->mu);
    LS_LOG_INFO("inference", "drained streams_ended=%d after_ms=%lld", n,
                (long long)((ls_now_us() - t0) / 1000));
}

void inf_service_destroy(inf_service_t *svc)
{
    if (!svc)
        return;
    LS_ASSERT(svc->streams == NULL);
    pthread_mutex_destroy(&svc->mu);
    free(svc->model_name);
    free(svc->model_version);
    free(svc->pool);
    inf_report_free(&svc->rep);
    free(svc);
}
