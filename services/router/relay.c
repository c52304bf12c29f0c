/*
 * relay.c - one request's life in the router: validate, route, consult the cache, run it
 * on an instance (retrying or falling back before the first token), relay its tokens,
 * store the answer, and end it with exactly one terminal event.
 *
 * Lock rules: q->mu guards every field of the request after creation (the id and the
 * submit copy are immutable).  Functions named do_* expect it held.  Order: q->mu, then
 * the sink's lock, a mux's lock, the pools' lock or the timer's lock; none of those calls
 * back into a request while held.  Every entry point runs with a reference of its own
 * (the caller's, the mux's callback reference, or the timer's), so q never goes away
 * while locked.  The metrics (report.c) are reported with q->mu held: they never block
 * or call back.
 *
 * What the cache is asked (cache_policy.c), how a hit becomes token events (replay.c) and
 * how an answer is recorded for the store (answer.c) live apart; this file is the state
 * machine that uses them.
 *
 * Admission: a pool whose instances are all at capacity (pool.h) queues the request in
 * the router (PHASE_QUEUED, bounded by --queue-max per pool) until the pools grant it an
 * instance (router__req_granted, on the admitter thread), its wait runs out
 * (--queue-wait-ms, or the pool's TTFT budget when it has a fallback: then the fallback
 * pool, else DEADLINE_EXCEEDED), or it ends otherwise.  The queue holds a reference to
 * the request while in_queue; whoever takes it out of the queue (the grant, or
 * router_pools_unwait returning true) drops it.  A full queue answers RESOURCE_EXHAUSTED
 * with a retry hint.  An instance that refuses for want of room (its own
 * RESOURCE_EXHAUSTED) counts as full until its next release and the request queues
 * again; when nothing of ours there would bring that release, the request pauses and
 * tries again instead (do_instance_full).  Neither is a health failure or a retry.
 *
 * Attempts: each try on an instance has a fresh upstream id.  Any later event for an
 * older id is dropped, which is what keeps tokens from a cancelled try (after a TTFT
 * fallback, say) out of the answer.  Before the first token is sent a failed try is
 * retried (do_retry); after it, the answer fails over (do_failover): the same submit goes
 * to another instance of the same model name and version with every token id relayed so
 * far as InferenceSubmit.resume_tokens, and that instance's tokens continue the answer
 * from the next index.  Retries and failovers share one limit (--max-retries), the
 * request's deadline bounds both, and a failed instance is never tried again for the
 * same request.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "cache_policy.h"
#include "prefix.h"
#include "replay.h"
#include "router_int.h"
#include "rpc/codec.h"
#include "scorer.h"
#include "svc/finish_reason.h"
#include "svc/keys.h"
#include "svc/tracer.h"
#include "upstream_id.h"
#include "validate.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RELAY_MAX_TRIED 8

/* Token ids that end an answer unless ignore_eos (llama2.c vocabularies: BOS 1, EOS 2, as
 * libs/model/tokenizer.h has them).  The instance relays its EOS only to carry held-back
 * text; a request whose last relayed token was one of them is finished, not failed over. */
#define RELAY_TOKEN_BOS 1
#define RELAY_TOKEN_EOS 2

typedef enum { PHASE_NEW, PHASE_QUEUED, PHASE_LOOKUP, PHASE_INFER, PHASE_DONE } phase_t;

typedef enum { TIMER_DEADLINE, TIMER_TTFT, TIMER_CACHE, TIMER_QUEUE } timer_kind_t;

/* Retry hints of a refusal for want of room, ms: the oldest waiter's age (about how long
 * the queue takes to turn over) within these bounds, or the default with no waiter. */
#define RELAY_RETRY_MIN_MS 100
#define RELAY_RETRY_DEFAULT_MS 1000
#define RELAY_RETRY_MAX_MS 30000

/* First pause before trying an instance again that refused for want of room while no
 * request of ours there could free it, ms; doubled each time up to 32 times. */
#define RELAY_BACKOFF_MS 20

typedef struct {
    relay_req_t *q; /* referenced until the callback ran or the timer was cancelled */
    timer_kind_t kind;
    unsigned attempt; /* the request's attempt when armed */
    uint64_t id;
} timer_ctx_t;

struct relay_req {
    pthread_mutex_t mu;
    atomic_int refs;
    router_t *r;
    relay_sink_t *sink;
    char *id;                          /* the client's request id */
    Llmserve__V1__GenerateSubmit *sub; /* our copy */
    char *bound_tenant;                /* the API key's tenant, replacing sub->tenant; NULL: none */
    int key_priority;                  /* the API key's class (svc/keys.h); 0: none */
    int priority;                      /* the request's class as resolved (validate.h) */
    uint64_t prefix_key;               /* prefix.h; 0: none */
    Llmserve__V1__SamplingParams sampling; /* resolved; stop strings borrowed from sub */
    bool id_required;
    int64_t call_left_us; /* of the client's call at receipt; INT64_MAX = no deadline */

    phase_t phase;
    bool lookup, store; /* cache policy as resolved */
    int64_t t_recv_us, t_routed_us, deadline_us, t_lookup_us;

    char pool[ROUTER_POOL_NAME_MAX + 1]; /* the pool serving now */
    double score;
    bool scored;
    char reason[200];
    bool fallback, fell_back_once;
    char fallback_reason[200];
    unsigned attempt; /* tries so far, fallbacks included */
    unsigned retries; /* tries after a failure (bounded by max_retries) */

    router_instance_t *inst; /* current pick, NULL between tries */
    bool inst_tried;         /* inst is the last of tried (picked, not granted) */
    router__conn_t *conn;
    uint64_t up_id; /* registered upstream id, 0 when none */
    router_instance_t *tried[RELAY_MAX_TRIED];
    size_t n_tried;
    char cache_model[ROUTER_POOL_NAME_MAX + 70];

    router_cache_t *cache; /* held while a lookup waits for its answer */
    uint64_t cache_id;
    timer_ctx_t *deadline_timer, *ttft_timer, *cache_timer, *queue_timer;

    /* admission (pool.h): queued while every instance of the pool is at capacity */
    router_waiter_t waiter;
    bool in_queue;           /* queued, holding the queue's reference */
    int64_t t_queued_us;     /* when it last joined a queue */
    int64_t queued_us;       /* time spent queued so far */
    bool queue_reported;     /* the router queue time was reported */
    unsigned backoffs;       /* pauses after an instance's refusal (do_instance_full) */
    uint32_t retry_after_ms; /* the hint on a RESOURCE_EXHAUSTED refusal; 0: none */

    uint32_t tokens_sent;
    uint32_t try_tokens; /* of them, relayed from the current try */
    int64_t first_token_us;
    router_answer_t answer; /* recorded for the cache store when store is set */
    uint32_t prompt_tokens;
    uint32_t cached_prompt_tokens; /* as the instance that finished the answer found them */
    uint64_t inference_queue_us, prefill_us, decode_us;
    uint64_t cache_lookup_us;

    /* failover (do_failover): the id of every token relayed, in order, sent as the resume
     * tokens of the try that continues the answer.  Kept apart from answer, which records
     * only answers to be stored and stops past ROUTER_ANSWER_MAX_BYTES. */
    int32_t *ids; /* tokens_sent of them unless ids_lost; NULL before the first */
    size_t ids_cap;
    bool ids_lost; /* out of memory recording them: the answer cannot fail over */
    bool eos_sent; /* the last token relayed was the model's EOS: the answer is over */
    unsigned failovers;
    uint32_t resumed; /* tokens the current try was asked to continue after (0: fresh) */
    char failover_reason[300];

    /* traces (svc/tracer.h): the request's SERVER span, and the CLIENT spans of the lookup
     * and the current try; NULL when tracing is off or the trace is not sampled */
    svc_trace_ctx_t parent; /* the caller's context, when has_parent */
    bool has_parent;
    svc_trace_ctx_t self; /* passed on to the next hops (svc_trace_next_hop), when has_self */
    bool has_self;
    svc_span_t *span, *cache_span, *infer_span;

    /* metrics (report.h) */
    router_report_pool_t *m_flight;   /* where the request counts in flight; NULL: nowhere */
    const char *m_cache;              /* cache label: "bypass", "miss", "exact", "semantic" */
    char m_model[128], m_version[64]; /* of what started it: an instance or a cache hit */
    int64_t m_last_token_us;
};

static const rpc_mux_handler_t infer_handler;
static const rpc_mux_handler_t cache_handler;

/* ---- references ---------------------------------------------------------------- */

static void req_free(relay_req_t *q)
{
    router_t *r = q->r;
    LS_ASSERT(q->inst == NULL);
    for (size_t i = 0; i < q->n_tried; i++)
        router_instance_unref(r->pools, q->tried[i]);
    q->sink->ops->unref(q->sink);
    llmserve__v1__generate_submit__free_unpacked(q->sub, NULL);
    free(q->id);
    free(q->bound_tenant);
    router_answer_free(&q->answer);
    free(q->ids);
    pthread_mutex_destroy(&q->mu);
    free(q);
    pthread_mutex_lock(&r->live_mu);
    if (--r->live == 0)
        pthread_cond_broadcast(&r->live_cv);
    pthread_mutex_unlock(&r->live_mu);
}

void router__req_ref(relay_req_t *q)
{
    atomic_fetch_add(&q->refs, 1);
}

void router__req_unref(relay_req_t *q)
{
    if (atomic_fetch_sub(&q->refs, 1) == 1)
        req_free(q);
}

static void h_ref(void *ud)
{
    router__req_ref(ud);
}

static void h_unref(void *ud)
{
    router__req_unref(ud);
}

const char *router__req_id(const relay_req_t *q)
{
    return q->id;
}

/* ---- creation -------------------------------------------------------------------- */

/* ---- traces ----------------------------------------------------------------------- */

/* Semantic conventions v1.37.0: rpc.* on every RPC span. */
static void span_rpc(svc_span_t *s, const char *service, const char *method)
{
    svc_span_set_str(s, "rpc.system", "grpc");
    svc_span_set_str(s, "rpc.service", service);
    svc_span_set_str(s, "rpc.method", method);
}

/* server.address and server.port of a CLIENT span, from "host:port" or "[v6]:port". */
static void span_server(svc_span_t *s, const char *addr)
{
    if (!s || !addr)
        return;
    const char *colon = strrchr(addr, ':');
    if (!colon) {
        svc_span_set_str(s, "server.address", addr);
        return;
    }
    char host[256];
    size_t hl = (size_t)(colon - addr);
    if (addr[0] == '[' && hl >= 2 && addr[hl - 1] == ']')
        snprintf(host, sizeof(host), "%.*s", (int)(hl - 2), addr + 1);
    else
        snprintf(host, sizeof(host), "%.*s", (int)hl, addr);
    svc_span_set_str(s, "server.address", host);
    svc_span_set_int(s, "server.port", strtol(colon + 1, NULL, 10));
}

/* The traceparent for a call made under span (the next hop's parent), into tp
 * (SVC_TRACEPARENT_LEN + 1 bytes): span's context, else the request's own; "" when there
 * is none to pass. */
static const char *do_next_hop(const relay_req_t *q, const svc_span_t *span, char *tp)
{
    svc_trace_ctx_t c;
    tp[0] = '\0';
    if (svc_span_context(span, &c))
        svc_traceparent_format(&c, tp);
    else if (q->has_self)
        svc_traceparent_format(&q->self, tp);
    return tp;
}

/* A child of q's SERVER span. */
static svc_span_t *do_child(relay_req_t *q, const char *name, svc_span_kind_t kind,
                            int64_t at_us)
{
    svc_trace_ctx_t c;
    if (!svc_span_context(q->span, &c))
        return NULL;
    return svc_span_start_at(q->r->cfg.tracer, name, kind, &c, at_us);
}

/* The current try's CLIENT span ends with code (0 = OK). */
static void do_trace_try_end(relay_req_t *q, int code, const char *message)
{
    if (!q->infer_span)
        return;
    svc_span_end(q->infer_span, code, message);
    q->infer_span = NULL;
}

/* The lookup's CLIENT span ends: result "hit", "miss" or "error" with code. */
static void do_trace_lookup_end(relay_req_t *q, const char *result, int code, const char *message)
{
    if (!q->cache_span)
        return;
    svc_span_set_str(q->cache_span, "llmserve.cache.result", result);
    svc_span_end(q->cache_span, code, message);
    q->cache_span = NULL;
}

/* The request's SERVER span ends with what it ended with (code 0: reason), its open
 * children first. */
static void do_trace_end(relay_req_t *q, int code, const char *message,
                         Llmserve__V1__FinishReason reason, uint32_t completion_tokens)
{
    if (!q->span)
        return;
    do_trace_lookup_end(q, "error", code ? code : GRPC_STATUS_CANCELLED,
                        "the request ended during the lookup");
    if (q->infer_span)
        do_trace_try_end(q, code ? code
                            : reason == LLMSERVE__V1__FINISH_REASON__FINISH_REASON_DEADLINE
                                ? GRPC_STATUS_DEADLINE_EXCEEDED
                                : GRPC_STATUS_CANCELLED,
                         code ? message : svc_finish_reason_name(reason));
    svc_span_t *s = q->span;
    if (q->pool[0])
        svc_span_set_str(s, "llmserve.pool", q->pool);
    svc_span_set_str(s, "llmserve.cache.hit_kind", q->m_cache);
    if (q->m_model[0])
        svc_span_set_str(s, "gen_ai.response.model", q->m_model);
    if (q->m_version[0])
        svc_span_set_str(s, "llmserve.model_version", q->m_version);
    bool replayed = strcmp(q->m_cache, "exact") == 0 || strcmp(q->m_cache, "semantic") == 0;
    if (q->inst && !replayed) /* a hit's pick served nothing */
        svc_span_set_str(s, "llmserve.instance", router_instance_addr(q->inst));
    svc_span_set_int(s, "llmserve.attempts", q->attempt);
    svc_span_set_int(s, "llmserve.retries", q->retries);
    if (q->failovers)
        svc_span_set_int(s, "llmserve.failovers", q->failovers);
    if (q->fell_back_once)
        svc_span_set_str(s, "llmserve.fallback_reason", q->fallback_reason);
    if (q->prompt_tokens)
        svc_span_set_int(s, "gen_ai.usage.input_tokens", q->prompt_tokens);
    if (!code) {
        svc_span_set_int(s, "gen_ai.usage.output_tokens", completion_tokens);
        const char *fr = svc_finish_reason_name(reason);
        svc_span_set_strs(s, "gen_ai.response.finish_reasons", &fr, 1);
    } else {
        const char *fr = "error";
        svc_span_set_strs(s, "gen_ai.response.finish_reasons", &fr, 1);
    }
    svc_span_end(s, code, message);
    q->span = NULL;
}

/* q's SERVER span, child of the caller's context: the submit's traceparent, else the
 * call's metadata (md_traceparent); a malformed one is ignored. */
static void do_trace_start(relay_req_t *q, const char *md_traceparent)
{
    svc_tracer_t *t = q->r->cfg.tracer;
    if (q->sub->traceparent[0] || md_traceparent)
        q->has_parent = svc_traceparent_parse(q->sub->traceparent, &q->parent) ||
                        svc_traceparent_parse(md_traceparent, &q->parent);
    if (!t) { /* not tracing: the caller's context goes on as it came */
        q->self = q->parent;
        q->has_self = q->has_parent;
        return;
    }
    const char *method = q->id_required ? "Generate" : "Complete";
    q->span = svc_span_start_at(t, q->id_required ? "llmserve.v1.Router/Generate"
                                                  : "llmserve.v1.Router/Complete",
                                SVC_SPAN_SERVER, q->has_parent ? &q->parent : NULL, q->t_recv_us);
    /* Unsampled, the request still has one context (one trace id) for every hop. */
    q->has_self = svc_trace_next_hop(t, q->span, q->has_parent ? &q->parent : NULL, &q->self);
    if (!q->span)
        return;
    span_rpc(q->span, "llmserve.v1.Router", method);
    svc_span_set_str(q->span, "llmserve.request_id", q->id);
    svc_span_set_str(q->span, "gen_ai.operation.name",
                     q->sub->n_messages ? "chat" : "text_completion");
}

void router__trace_refused(router_t *r, const Llmserve__V1__GenerateSubmit *submit,
                           bool generate, const char *md_traceparent, int code,
                           const char *message)
{
    svc_tracer_t *t = r->cfg.tracer;
    if (!t)
        return;
    svc_trace_ctx_t parent;
    bool has_parent = svc_traceparent_parse(submit->traceparent, &parent) ||
                      svc_traceparent_parse(md_traceparent, &parent);
    svc_span_t *s = svc_span_start(
        t, generate ? "llmserve.v1.Router/Generate" : "llmserve.v1.Router/Complete",
        SVC_SPAN_SERVER, has_parent ? &parent : NULL);
    if (!s)
        return;
    span_rpc(s, "llmserve.v1.Router", generate ? "Generate" : "Complete");
    if (submit->request_id[0])
        svc_span_set_str(s, "llmserve.request_id", submit->request_id);
    svc_span_set_str(s, "gen_ai.operation.name",
                     submit->n_messages ? "chat" : "text_completion");
    const char *fr = "error";
    svc_span_set_strs(s, "gen_ai.response.finish_reasons", &fr, 1);
    svc_span_end(s, code, message);
}

relay_req_t *router__req_create(router_t *r, relay_sink_t *sink,
                                const Llmserve__V1__GenerateSubmit *submit, bool id_required,
                                int64_t call_left_us, const char *bound_tenant,
                                const char *md_traceparent)
{
    Llmserve__V1__GenerateSubmit *sub =
        (Llmserve__V1__GenerateSubmit *)rpc_codec_copy(&submit->base);
    if (!sub)
        return NULL;
    relay_req_t *q = ls_xcalloc(1, sizeof(*q));
    pthread_mutex_init(&q->mu, NULL);
    atomic_init(&q->refs, 1);
    q->r = r;
    q->sink = sink;
    sink->ops->ref(sink);
    q->sub = sub;
    q->id_required = id_required;
    q->call_left_us = call_left_us;
    char tenant[SVC_TENANT_MAX + 1];
    svc_priority_t key_priority;
    svc_keys_principal_parse(bound_tenant, tenant, sizeof(tenant), &key_priority);
    if (tenant[0])
        q->bound_tenant = ls_xstrdup(tenant);
    q->key_priority = (int)key_priority;
    router_answer_init(&q->answer, ROUTER_ANSWER_MAX_BYTES);
    if (!id_required && !sub->request_id[0]) {
        char made[48];
        snprintf(made, sizeof(made), "complete-%" PRIu64, router__next_id(r));
        q->id = ls_xstrdup(made);
    } else {
        q->id = ls_xstrdup(sub->request_id);
    }
    q->t_recv_us = ls_now_us();
    q->m_cache = "bypass"; /* until the cache plan says a lookup is made */
    do_trace_start(q, md_traceparent);
    pthread_mutex_lock(&r->live_mu);
    r->live++;
    pthread_mutex_unlock(&r->live_mu);
    return q;
}

/* ---- events ---------------------------------------------------------------------- */

static void do_emit(relay_req_t *q, Llmserve__V1__GenerateEvent *ev)
{
    ev->request_id = q->id;
    q->sink->ops->emit(q->sink, q, ev);
}

static void do_cancel_timer(relay_req_t *q, timer_ctx_t **slot)
{
    timer_ctx_t *t = *slot;
    if (!t)
        return;
    *slot = NULL;
    if (rpc_timer_cancel(q->r->timer, t->id)) {
        free(t);
        /* The caller holds its own reference: this cannot be the last. */
        atomic_fetch_sub(&q->refs, 1);
    }
    /* Otherwise the callback is about to run; it sees the slot cleared and only unrefs. */
}

static void on_timer(void *ud, bool fired);

static timer_ctx_t *do_arm(relay_req_t *q, timer_kind_t kind, int64_t at_us)
{
    timer_ctx_t *t = ls_xcalloc(1, sizeof(*t));
    t->q = q;
    t->kind = kind;
    t->attempt = q->attempt;
    router__req_ref(q);
    /* The id is written before the timer can fire only if we hold q->mu, which every
     * caller does and which the callback takes before reading it. */
    t->id = rpc_timer_add(q->r->timer, at_us, on_timer, t);
    return t;
}

/* Ends the current try: forgets its upstream registration (cancelling it on the
 * instance when it was still running), drops the TTFT timer, releases the pick. */
static void do_end_attempt(relay_req_t *q, bool cancel_upstream)
{
    if (q->up_id) {
        uint64_t id = q->up_id;
        q->up_id = 0;
        bool was_registered = rpc_mux_forget(q->conn->mux, id);
        if (was_registered && cancel_upstream) {
            char idbuf[ROUTER_UPSTREAM_ID_LEN];
            Llmserve__V1__InferenceCancel c = LLMSERVE__V1__INFERENCE_CANCEL__INIT;
            c.request_id = router_upstream_id_format(id, idbuf, sizeof(idbuf));
            Llmserve__V1__InferenceRequest m = LLMSERVE__V1__INFERENCE_REQUEST__INIT;
            m.kind_case = LLMSERVE__V1__INFERENCE_REQUEST__KIND_CANCEL;
            m.cancel = &c;
            rpc_mux_send(q->conn->mux, &m.base);
        }
    }
    do_cancel_timer(q, &q->ttft_timer);
    if (q->inst) {
        router_pools_release(q->r->pools, q->inst);
        q->inst = NULL;
        q->conn = NULL;
        q->inst_tried = false;
    }
}

/* q's labels for the metrics. */
static router_report_labels_t do_labels(const relay_req_t *q)
{
    router_report_labels_t l = {q->pool, q->m_model, q->m_version, q->m_cache};
    return l;
}

/* Reports q's end: its outcome, its time and the tokens an instance streamed. */
static void do_report_end(relay_req_t *q, int code, Llmserve__V1__FinishReason reason)
{
    if (!q->r->report)
        return;
    router_report_labels_t l = do_labels(q);
    bool replayed = strcmp(q->m_cache, "exact") == 0 || strcmp(q->m_cache, "semantic") == 0;
    router_report_end(q->r->report, &l, code, (int)reason, ls_now_us() - q->t_recv_us,
                      replayed ? 0 : q->tokens_sent);
}

/* q routes to pool from now on, and counts in flight there. */
static void do_set_pool(relay_req_t *q, const char *pool)
{
    snprintf(q->pool, sizeof(q->pool), "%s", pool);
    router_report_leave(q->r->report, q->m_flight);
    q->m_flight = router_report_enter(q->r->report, q->pool);
}

/* q leaves its pool for the fallback pool fb. */
static void do_fall_back(relay_req_t *q, const char *fb)
{
    router_report_fallback(q->r->report, q->pool);
    svc_span_event(q->span, "fallback");
    q->fallback = q->fell_back_once = true;
    do_set_pool(q, fb);
}

/* The lookup is over: its registration (if any) forgotten, its cache released. */
static void do_end_lookup(relay_req_t *q)
{
    if (q->cache_id) {
        rpc_mux_forget(router_cache_mux(q->cache), q->cache_id);
        q->cache_id = 0;
    }
    if (q->cache) {
        router_caches_release(q->r->caches, q->cache);
        q->cache = NULL;
    }
}

/* Reports the router queue time once: receipt to routing, plus the time queued. */
static void do_report_queue(relay_req_t *q)
{
    if (q->queue_reported)
        return;
    q->queue_reported = true;
    router_report_queue(q->r->report, q->pool, (q->t_routed_us - q->t_recv_us) + q->queued_us);
}

/* q is out of the router's queue: its time there counts, the depth gauge drops, its wait
 * timer goes. */
static void do_left_queue(relay_req_t *q)
{
    q->in_queue = false;
    q->queued_us += ls_now_us() - q->t_queued_us;
    router_report_queued(q->r->report, q->pool, -1);
    do_cancel_timer(q, &q->queue_timer);
}

/* Takes q out of the router's queue.  Returns true when it is out (or was not in);
 * false when a grant is on its way and force is not set (the grant then goes on with
 * q).  With force, a grant on its way finds q out of the queue and releases its pick. */
static bool do_unqueue(relay_req_t *q, bool force)
{
    if (!q->in_queue)
        return true;
    bool was_queued = router_pools_unwait(q->r->pools, &q->waiter);
    if (!was_queued && !force)
        return false;
    do_left_queue(q);
    if (was_queued) /* the queue's reference; the caller holds its own */
        atomic_fetch_sub(&q->refs, 1);
    return true;
}

static void do_finish(relay_req_t *q)
{
    if (q->phase == PHASE_QUEUED && !q->in_queue) /* ended in a pause (do_instance_full) */
        q->queued_us += ls_now_us() - q->t_queued_us;
    do_unqueue(q, true);
    if (q->t_routed_us)
        do_report_queue(q);
    q->phase = PHASE_DONE;
    router_report_leave(q->r->report, q->m_flight);
    q->m_flight = NULL;
    do_end_attempt(q, true);
    do_cancel_timer(q, &q->deadline_timer);
    do_cancel_timer(q, &q->cache_timer);
    do_cancel_timer(q, &q->queue_timer);
    do_end_lookup(q);
    q->sink->ops->finished(q->sink, q);
}

static void do_fail(relay_req_t *q, int code, const char *message)
{
    if (q->phase == PHASE_DONE)
        return;
    Llmserve__V1__Status st = LLMSERVE__V1__STATUS__INIT;
    st.code = code;
    st.message = (char *)message;
    st.retry_after_ms = code == GRPC_STATUS_RESOURCE_EXHAUSTED ? q->retry_after_ms : 0;
    Llmserve__V1__GenerateEvent ev = LLMSERVE__V1__GENERATE_EVENT__INIT;
    ev.kind_case = LLMSERVE__V1__GENERATE_EVENT__KIND_ERROR;
    ev.error = &st;
    do_emit(q, &ev);
    LS_LOG_DEBUG("router", "request failed id=%s code=%d msg=\"%s\"", q->id, code, message);
    do_report_end(q, code ? code : GRPC_STATUS_UNKNOWN,
                  LLMSERVE__V1__FINISH_REASON__FINISH_REASON_ERROR);
    do_trace_end(q, code ? code : GRPC_STATUS_UNKNOWN, message,
                 LLMSERVE__V1__FINISH_REASON__FINISH_REASON_ERROR, 0);
    do_finish(q);
}

static void do_timings(relay_req_t *q, Llmserve__V1__Timings *t)
{
    int64_t now = ls_now_us();
    int64_t queued_us = q->queued_us + (q->phase == PHASE_QUEUED ? now - q->t_queued_us : 0);
    t->router_queue_us =
        (uint64_t)(q->t_routed_us > q->t_recv_us ? q->t_routed_us - q->t_recv_us : 0) +
        (uint64_t)queued_us;
    t->cache_lookup_us = q->cache_lookup_us;
    t->inference_queue_us = q->inference_queue_us;
    t->prefill_us = q->prefill_us;
    t->decode_us = q->decode_us;
    t->ttft_us = q->first_token_us ? (uint64_t)(q->first_token_us - q->t_recv_us) : 0;
    t->total_us = (uint64_t)(now - q->t_recv_us);
}

static void do_done(relay_req_t *q, Llmserve__V1__FinishReason reason, uint32_t completion_tokens)
{
    if (q->phase == PHASE_DONE)
        return;
    Llmserve__V1__Usage usage = LLMSERVE__V1__USAGE__INIT;
    usage.prompt_tokens = q->prompt_tokens;
    usage.completion_tokens = completion_tokens;
    usage.cached_prompt_tokens = q->cached_prompt_tokens;
    Llmserve__V1__Timings t = LLMSERVE__V1__TIMINGS__INIT;
    do_timings(q, &t);
    Llmserve__V1__GenerateDone d = LLMSERVE__V1__GENERATE_DONE__INIT;
    d.finish_reason = reason;
    d.usage = &usage;
    d.timings = &t;
    Llmserve__V1__GenerateEvent ev = LLMSERVE__V1__GENERATE_EVENT__INIT;
    ev.kind_case = LLMSERVE__V1__GENERATE_EVENT__KIND_DONE;
    ev.done = &d;
    do_emit(q, &ev);
    do_report_end(q, GRPC_STATUS_OK, reason);
    do_trace_end(q, GRPC_STATUS_OK, NULL, reason, completion_tokens);
    do_finish(q);
}

/* The model inst serves and its version, as GenerateStarted names them: what
 * Inference.Info said, the configured version winning (it is what the split chose).
 * inst NULL: both empty. */
static void instance_model(router_instance_t *inst, char model[128], char version[64])
{
    model[0] = version[0] = '\0';
    if (!inst)
        return;
    router__conn_t *conn = router_instance_user(inst);
    if (conn) {
        pthread_mutex_lock(&conn->mu);
        snprintf(model, 128, "%s", conn->model);
        snprintf(version, 64, "%s", conn->version);
        pthread_mutex_unlock(&conn->mu);
    }
    if (router_instance_version(inst)[0])
        snprintf(version, 64, "%s", router_instance_version(inst));
}

static void do_started(relay_req_t *q, bool cache_hit, const Llmserve__V1__CacheLookupResult *hit)
{
    Llmserve__V1__GenerateStarted s = LLMSERVE__V1__GENERATE_STARTED__INIT;
    char model[128], version[64];
    instance_model(q->inst, model, version);
    s.pool = q->pool;
    s.model = model;
    s.model_version = version;
    s.instance = (char *)(q->inst && !cache_hit ? router_instance_addr(q->inst) : "");
    s.cache_hit = cache_hit;
    char reason[260];
    if (cache_hit) {
        s.model_version = hit->model_version;
        s.cache_hit_kind = hit->kind;
        s.cache_similarity = hit->similarity;
        snprintf(reason, sizeof(reason), "%s; cache", q->reason);
    } else {
        snprintf(reason, sizeof(reason), "%s", q->reason);
    }
    s.route_reason = reason;
    s.complexity = q->scored ? (float)q->score : 0.0f;
    s.fallback = q->fallback;
    s.fallback_reason = q->fallback ? q->fallback_reason : "";
    s.attempt = q->attempt;
    /* Tokens already sent: this try continues the answer after them. */
    s.failover = !cache_hit && q->tokens_sent > 0;
    s.failover_reason = s.failover ? q->failover_reason : "";
    s.resumed_tokens = s.failover ? q->tokens_sent : 0;
    s.priority = (Llmserve__V1__Priority)q->priority;
    char tp[SVC_TRACEPARENT_LEN + 1];
    s.traceparent = q->r->cfg.tracer ? (char *)do_next_hop(q, NULL, tp) : "";
    snprintf(q->m_model, sizeof(q->m_model), "%s", s.model);
    snprintf(q->m_version, sizeof(q->m_version), "%s", s.model_version);
    Llmserve__V1__GenerateEvent ev = LLMSERVE__V1__GENERATE_EVENT__INIT;
    ev.kind_case = LLMSERVE__V1__GENERATE_EVENT__KIND_STARTED;
    ev.started = &s;
    do_emit(q, &ev);
}

/* ---- routing ---------------------------------------------------------------------- */

static void do_dispatch(relay_req_t *q);
static void do_submit(relay_req_t *q);

/* No instance can take q (msg says why): it fails with code, or, when tokens were sent
 * already (a failover found no instance of the model), with UNAVAILABLE naming the
 * failure it meant to recover from. */
static void do_no_route(relay_req_t *q, int code, const char *msg)
{
    if (q->tokens_sent == 0) {
        do_fail(q, code, msg);
        return;
    }
    char full[1024];
    snprintf(full, sizeof(full), "%s; no instance of model %s%s%s could continue the answer: %s",
             q->failover_reason, q->m_model, q->m_version[0] ? " version " : "", q->m_version, msg);
    do_fail(q, GRPC_STATUS_UNAVAILABLE, full);
}

/* Adds inst (referenced) to the instances q never tries again, unless it is there already
 * or the list is full (do_dispatch then gives up anyway). */
static void do_exclude(relay_req_t *q, router_instance_t *inst)
{
    for (size_t i = 0; i < q->n_tried; i++)
        if (q->tried[i] == inst)
            return;
    if (q->n_tried >= RELAY_MAX_TRIED)
        return;
    router_instance_ref(q->r->pools, inst);
    q->tried[q->n_tried++] = inst;
}

/* True when q's current pick serves the model that began the answer (name and version:
 * another model has another vocabulary, and another version other weights). */
static bool do_pick_continues(const relay_req_t *q)
{
    char model[128], version[64];
    instance_model(q->inst, model, version);
    return strcmp(model, q->m_model) == 0 && strcmp(version, q->m_version) == 0;
}

/* What q's cache key is made of, for the pool and instance serving it now. */
static void do_cache_query(relay_req_t *q, router_cache_query_t *cq, const char *traceparent)
{
    router_cache_policy_model(q->cache_model, sizeof(q->cache_model), q->pool,
                              q->inst ? router_instance_version(q->inst) : "");
    cq->submit = q->sub;
    cq->model = q->cache_model;
    cq->sampling = &q->sampling;
    cq->semantic = q->r->cfg.cache_semantic;
    cq->tenant = q->bound_tenant;
    cq->traceparent = traceparent;
}

/* A CLIENT span for a Cache.Session operation on c (op "lookup" or "store"). */
static svc_span_t *do_cache_span(relay_req_t *q, const router_cache_t *c, const char *op)
{
    svc_span_t *s = do_child(q, "llmserve.v1.Cache/Session", SVC_SPAN_CLIENT, 0);
    if (!s)
        return NULL;
    span_rpc(s, "llmserve.v1.Cache", "Session");
    span_server(s, router_cache_addr(c));
    svc_span_set_str(s, "llmserve.cache.operation", op);
    svc_span_set_str(s, "gen_ai.request.model", q->cache_model);
    return s;
}

static void do_cache_lookup(relay_req_t *q)
{
    router_t *r = q->r;
    router_cache_t *c = router_caches_pick(r->caches);
    q->lookup = false; /* once per request, whatever happens */
    if (!c) {
        router_report_lookup(r->report, "skipped", 0);
        do_submit(q);
        return;
    }
    router_cache_query_t cq;
    char tp[SVC_TRACEPARENT_LEN + 1];
    do_cache_query(q, &cq, NULL);
    q->cache_span = do_cache_span(q, c, "lookup");
    cq.traceparent = do_next_hop(q, q->cache_span, tp);
    router_cache_msg_t cm;
    router_cache_policy_lookup(&cm, &cq, router__next_id(r));
    q->phase = PHASE_LOOKUP;
    q->t_lookup_us = ls_now_us();
    if (rpc_mux_request(router_cache_mux(c), cm.req.id, &cm.req.base, &cache_handler, q) != LS_OK) {
        do_trace_lookup_end(q, "error", GRPC_STATUS_UNAVAILABLE, "cache stream not up");
        router_caches_release(r->caches, c);
        router_report_lookup(r->report, "skipped", ls_now_us() - q->t_lookup_us);
        do_submit(q); /* cache stream not up (or just removed): a miss */
        return;
    }
    q->cache = c;
    q->cache_id = cm.req.id;
    q->cache_timer = do_arm(q, TIMER_CACHE, q->t_lookup_us + r->cfg.cache_timeout_ms * 1000);
}

static void do_cache_store(relay_req_t *q, const Llmserve__V1__InferenceDone *d)
{
    if (q->answer.too_big)
        return;
    router_cache_t *c = router_caches_pick(q->r->caches);
    if (!c)
        return;
    router_cache_query_t cq;
    char tp[SVC_TRACEPARENT_LEN + 1];
    do_cache_query(q, &cq, NULL);
    svc_span_t *span = do_cache_span(q, c, "store");
    cq.traceparent = do_next_hop(q, span, tp);
    char version[64] = "";
    if (q->inst && router_instance_version(q->inst)[0]) {
        snprintf(version, sizeof(version), "%s", router_instance_version(q->inst));
    } else if (q->conn) {
        pthread_mutex_lock(&q->conn->mu);
        snprintf(version, sizeof(version), "%s", q->conn->version);
        pthread_mutex_unlock(&q->conn->mu);
    }
    router_cache_outcome_t o = {
        .finish_reason = d->finish_reason,
        .prompt_tokens = q->prompt_tokens,
        .completion_tokens = d->usage ? d->usage->completion_tokens : q->tokens_sent,
        .ttl_s = (uint32_t)q->r->cfg.cache_ttl_s,
        .model_version = version,
    };
    router_cache_msg_t cm;
    router_cache_policy_store(&cm, &cq, router__next_id(q->r), &q->answer, &o);
    /* Nobody waits for the answer: the reply's id is unregistered and dropped.  The span
     * covers the send. */
    int rc = rpc_mux_send(router_cache_mux(c), &cm.req.base);
    svc_span_end(span, rc == LS_OK ? 0 : GRPC_STATUS_UNAVAILABLE,
                 rc == LS_OK ? NULL : "cache stream not up or full");
    router_caches_release(q->r->caches, c);
}

/* q has an instance: the router queue time is reported, and it goes on with the cache
 * lookup or the submit.  A failover's pick of an instance serving another model is not a
 * try: it is released and excluded, and q is routed again. */
static void do_picked(relay_req_t *q)
{
    do_report_queue(q);
    if (q->tokens_sent > 0 && !do_pick_continues(q)) {
        LS_LOG_DEBUG("router", "failover skips another model id=%s instance=%s", q->id,
                     router_instance_addr(q->inst));
        do_exclude(q, q->inst);
        q->attempt--;
        do_end_attempt(q, false);
        do_dispatch(q);
        return;
    }
    if (q->lookup)
        do_cache_lookup(q);
    else
        do_submit(q);
}

/* How long a refused client might wait before trying again, ms: about how long the
 * oldest waiter has waited (oldest_since_us; 0: no waiter). */
static uint32_t retry_hint_ms(int64_t oldest_since_us)
{
    if (!oldest_since_us)
        return RELAY_RETRY_DEFAULT_MS;
    int64_t ms = (ls_now_us() - oldest_since_us) / 1000;
    return (uint32_t)(ms < RELAY_RETRY_MIN_MS   ? RELAY_RETRY_MIN_MS
                      : ms > RELAY_RETRY_MAX_MS ? RELAY_RETRY_MAX_MS
                                                : ms);
}

/* q waits in the router's queue of its pool (the pools hold its waiter). */
static void do_queued(relay_req_t *q)
{
    router_t *r = q->r;
    do_cancel_timer(q, &q->queue_timer);
    router__req_ref(q); /* the queue's */
    q->in_queue = true;
    q->phase = PHASE_QUEUED;
    q->t_queued_us = q->waiter.since_us;
    router_report_queued(r->report, q->pool, 1);
    svc_span_event(q->span, "queued");
    int64_t wait_ms = r->cfg.queue_wait_ms;
    const char *fb = router_policy_fallback(&r->policy, q->pool);
    int64_t ttft_ms = router_policy_ttft_ms(&r->policy, q->pool);
    if (fb && !q->fell_back_once && ttft_ms > 0 && ttft_ms < wait_ms)
        wait_ms = ttft_ms; /* the TTFT budget runs out first: then the fallback pool */
    q->queue_timer = do_arm(q, TIMER_QUEUE, q->t_queued_us + wait_ms * 1000);
    LS_LOG_DEBUG("router", "queued id=%s pool=%s", q->id, q->pool);
}

/* Picks an instance of q->pool (falling back once when the pool has none, or no room and
 * a full queue), or queues q when its instances are all at capacity, and goes on with
 * the cache lookup or the submit. */
static void do_dispatch(relay_req_t *q)
{
    router_t *r = q->r;
    for (;;) {
        if (q->n_tried >= RELAY_MAX_TRIED) {
            do_no_route(q, GRPC_STATUS_UNAVAILABLE, "no instance answered after retries");
            return;
        }
        router_pick_t pk;
        q->waiter.ud = q;
        q->waiter.since_us = ls_now_us();
        q->waiter.priority = q->priority;
        q->waiter.prefix_key = q->prefix_key;
        int rc = router_pools_pick_or_wait(r->pools, q->pool, q->sub->conversation_id, q->tried,
                                           q->n_tried, &q->waiter, (size_t)r->cfg.queue_max, &pk);
        if (rc == LS_OK && pk.queued) {
            do_queued(q);
            return;
        }
        if (rc == LS_OK) {
            q->inst = pk.inst;
            q->conn = router_instance_user(pk.inst);
            router_instance_ref(r->pools, pk.inst);
            q->tried[q->n_tried++] = pk.inst;
            q->inst_tried = true;
            q->attempt++;
            if (pk.affinity && !strstr(q->reason, "affinity")) {
                size_t l = strlen(q->reason);
                snprintf(q->reason + l, sizeof(q->reason) - l, "; affinity");
            }
            if (pk.prefix_affinity && !strstr(q->reason, "prefix affinity")) {
                size_t l = strlen(q->reason);
                snprintf(q->reason + l, sizeof(q->reason) - l, "; prefix affinity");
            }
            if (pk.prefix_affinity || pk.prefix_spilled)
                router_report_prefix(r->report, q->pool, pk.prefix_affinity);
            break;
        }
        const char *fb = router_policy_fallback(&r->policy, q->pool);
        if (fb && !q->fell_back_once && router_pools_has(r->pools, fb)) {
            if (rc == LS_ERR_FULL)
                snprintf(q->fallback_reason, sizeof(q->fallback_reason),
                         "pool %s at capacity: every instance busy and %zu requests queued",
                         q->pool, pk.waiting);
            else
                snprintf(q->fallback_reason, sizeof(q->fallback_reason),
                         "pool %s unavailable: no healthy instance%s", q->pool,
                         q->n_tried ? " left" : "");
            do_fall_back(q, fb);
            continue;
        }
        char msg[300];
        if (rc == LS_ERR_FULL) {
            /* Busy, not down: RESOURCE_EXHAUSTED, which clients retry after the hint. */
            q->retry_after_ms = retry_hint_ms(pk.oldest_since_us);
            snprintf(msg, sizeof(msg),
                     "pool %s is at capacity: every instance is busy and the router's queue "
                     "holds %zu requests (--queue-max %" PRId64 "); retry after %u ms",
                     q->pool, pk.waiting, r->cfg.queue_max, q->retry_after_ms);
            do_no_route(q, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
            return;
        }
        if (router_pools_count(r->pools, q->pool) == 0)
            snprintf(msg, sizeof(msg), "no instance in pool %s (discovery lists none)", q->pool);
        else
            snprintf(msg, sizeof(msg), "no healthy instance in pool %s%s", q->pool,
                     q->tokens_sent ? " left" : "");
        do_no_route(q, GRPC_STATUS_UNAVAILABLE, msg);
        return;
    }
    do_picked(q);
}

/* The instance refused the current try for want of room (its own RESOURCE_EXHAUSTED,
 * before any token): not a failure of the instance.  It counts as full until a request
 * of ours there ends, and q is routed again (queued, most likely); with nothing of ours
 * there to end, q pauses (RELAY_BACKOFF_MS, doubling) and is routed again, within
 * --queue-wait-ms and its deadline. */
static void do_instance_full(relay_req_t *q, const char *why)
{
    router_t *r = q->r;
    router_instance_t *inst = q->inst;
    bool tried = q->inst_tried;
    do_cancel_timer(q, &q->ttft_timer);
    q->inst = NULL;
    q->conn = NULL;
    q->inst_tried = false;
    bool marked = router_pools_release_full(r->pools, inst);
    /* Full is not failed: the instance stays a candidate, for the queue to wait on. */
    if (tried && q->n_tried && q->tried[q->n_tried - 1] == inst) {
        q->n_tried--;
        router_instance_unref(r->pools, inst);
    }
    LS_LOG_DEBUG("router", "instance full id=%s marked=%d why=\"%s\"", q->id, (int)marked, why);
    if (marked) {
        do_dispatch(q); /* queued until a release there, or another instance with room */
        return;
    }
    /* Nothing of ours there will end to say when room comes (requests from elsewhere
     * hold it, or a cancel it has not acted on yet): try again after a growing pause,
     * within the queue's wait. */
    unsigned shift = q->backoffs < 5 ? q->backoffs : 5;
    q->backoffs++;
    q->phase = PHASE_QUEUED;
    q->t_queued_us = ls_now_us();
    q->queue_timer = do_arm(q, TIMER_QUEUE, q->t_queued_us + (RELAY_BACKOFF_MS << shift) * 1000);
}

/* The current try failed before any token: try another instance or the fallback. */
static void do_retry(relay_req_t *q, int code, const char *why)
{
    do_end_attempt(q, true);
    if (q->retries >= (unsigned)q->r->cfg.max_retries) {
        char msg[400];
        snprintf(msg, sizeof(msg), "%s (after %u tries)", why, q->attempt);
        do_no_route(q, code, msg);
        return;
    }
    q->retries++;
    router_report_retry(q->r->report, q->pool);
    svc_span_event(q->span, "retry");
    LS_LOG_DEBUG("router", "retrying id=%s attempt=%u why=\"%s\"", q->id, q->attempt, why);
    do_dispatch(q);
}

/* The current try failed after tokens were sent (why: its stream broke, or the instance
 * answered a retryable error): the answer goes on from those tokens on another instance
 * of the same model (do_picked checks the model), the failed one excluded, within the
 * retry limit and the deadline.  An answer that is complete already (its EOS relayed,
 * or max_tokens reached) ends with Done instead. */
static void do_failover(relay_req_t *q, const char *why)
{
    router_instance_t *failed = q->inst;
    if (q->eos_sent || q->tokens_sent >= (uint32_t)q->sampling.max_tokens) {
        /* Only the Done was lost.  The EOS carried held-back text but is no answer token. */
        do_end_attempt(q, false);
        if (q->eos_sent)
            do_done(q, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS, q->tokens_sent - 1);
        else
            do_done(q, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH, q->tokens_sent);
        return;
    }
    snprintf(q->failover_reason, sizeof(q->failover_reason), "%s after %u tokens", why,
             q->tokens_sent);
    if (failed)
        do_exclude(q, failed);
    do_end_attempt(q, true);
    if (q->ids_lost) {
        char msg[400];
        snprintf(msg, sizeof(msg), "%s (no failover: out of memory keeping its token ids)",
                 q->failover_reason);
        do_fail(q, GRPC_STATUS_UNAVAILABLE, msg);
        return;
    }
    if (q->retries >= (unsigned)q->r->cfg.max_retries) {
        char msg[500];
        snprintf(msg, sizeof(msg), "%s (no failover left: %u retries and failovers, --max-retries)",
                 q->failover_reason, q->retries);
        do_fail(q, GRPC_STATUS_UNAVAILABLE, msg);
        return;
    }
    q->retries++;
    q->failovers++;
    router_report_failover(q->r->report, q->pool);
    svc_span_event(q->span, "failover");
    LS_LOG_INFO("router", "failover id=%s attempt=%u tokens=%u why=\"%s\"", q->id, q->attempt,
                q->tokens_sent, why);
    do_dispatch(q);
}

/* Records id, the token just relayed, for a failover. */
static void do_keep_id(relay_req_t *q, int32_t id)
{
    if (q->ids_lost)
        return;
    if (q->tokens_sent >= q->ids_cap) {
        size_t cap = q->ids_cap ? q->ids_cap * 2 : 64;
        int32_t *ids = realloc(q->ids, cap * sizeof(*ids));
        if (!ids) { /* request-sized: the answer goes on, only without a failover */
            free(q->ids);
            q->ids = NULL;
            q->ids_cap = 0;
            q->ids_lost = true;
            return;
        }
        q->ids = ids;
        q->ids_cap = cap;
    }
    q->ids[q->tokens_sent] = id;
}

static void do_submit(relay_req_t *q)
{
    router_t *r = q->r;
    int64_t now = ls_now_us();
    int64_t left_us = q->deadline_us - now;
    if (left_us <= 0) {
        if (q->tokens_sent > 0)
            do_done(q, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_DEADLINE, q->tokens_sent);
        else
            do_fail(q, GRPC_STATUS_DEADLINE_EXCEEDED, "deadline passed before the first token");
        return;
    }
    uint64_t up_id = router__next_id(r);
    char idbuf[ROUTER_UPSTREAM_ID_LEN];
    Llmserve__V1__InferenceSubmit s = LLMSERVE__V1__INFERENCE_SUBMIT__INIT;
    s.request_id = router_upstream_id_format(up_id, idbuf, sizeof(idbuf));
    s.prompt = q->sub->prompt;
    s.n_messages = q->sub->n_messages;
    s.messages = q->sub->messages;
    s.sampling = &q->sampling;
    int64_t left_ms = (left_us + 999) / 1000;
    s.timeout_ms = left_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)left_ms;
    /* A failover: the new instance continues after every token sent. */
    s.n_resume_tokens = q->tokens_sent;
    s.resume_tokens = q->tokens_sent ? q->ids : NULL;
    s.priority = (Llmserve__V1__Priority)q->priority;
    char tp[SVC_TRACEPARENT_LEN + 1];
    if (q->span) {
        q->infer_span = do_child(q, "llmserve.v1.Inference/Generate", SVC_SPAN_CLIENT, now);
        span_rpc(q->infer_span, "llmserve.v1.Inference", "Generate");
        span_server(q->infer_span, router_instance_addr(q->inst));
        svc_span_set_str(q->infer_span, "llmserve.pool", q->pool);
        svc_span_set_int(q->infer_span, "llmserve.attempt", q->attempt);
        svc_span_set_str(q->infer_span, "llmserve.upstream_id", s.request_id);
        if (q->tokens_sent)
            svc_span_set_int(q->infer_span, "llmserve.resumed_tokens", q->tokens_sent);
    }
    s.traceparent = (char *)do_next_hop(q, q->infer_span, tp);
    Llmserve__V1__InferenceRequest m = LLMSERVE__V1__INFERENCE_REQUEST__INIT;
    m.kind_case = LLMSERVE__V1__INFERENCE_REQUEST__KIND_SUBMIT;
    m.submit = &s;
    q->phase = PHASE_INFER;
    int rc = rpc_mux_request(q->conn->mux, up_id, &m.base, &infer_handler, q);
    if (rc != LS_OK) {
        char why[200];
        snprintf(why, sizeof(why), "instance %s: %s", router_instance_addr(q->inst),
                 rc == LS_ERR_FULL ? "send queue full" : "not connected");
        do_trace_try_end(q, rc == LS_ERR_FULL ? GRPC_STATUS_RESOURCE_EXHAUSTED
                                              : GRPC_STATUS_UNAVAILABLE,
                         why);
        if (q->tokens_sent > 0)
            do_failover(q, why);
        else
            do_retry(q,
                     rc == LS_ERR_FULL ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_UNAVAILABLE,
                     why);
        return;
    }
    q->up_id = up_id;
    q->resumed = q->tokens_sent;
    q->try_tokens = 0;
    do_started(q, false, NULL);
    /* The TTFT budget is for the first token; a failover has sent it already. */
    int64_t ttft_ms =
        q->fell_back_once || q->tokens_sent ? 0 : router_policy_ttft_ms(&r->policy, q->pool);
    if (ttft_ms > 0)
        q->ttft_timer = do_arm(q, TIMER_TTFT, now + ttft_ms * 1000);
}

/* ---- upstream events -------------------------------------------------------------- */

static bool retryable(int code)
{
    return code == GRPC_STATUS_UNAVAILABLE || code == GRPC_STATUS_RESOURCE_EXHAUSTED ||
           code == GRPC_STATUS_INTERNAL || code == GRPC_STATUS_ABORTED;
}

static void on_infer_message(void *ud, uint64_t id, const ProtobufCMessage *msg, bool terminal)
{
    relay_req_t *q = ud;
    const Llmserve__V1__InferenceEvent *ev = (const Llmserve__V1__InferenceEvent *)msg;
    pthread_mutex_lock(&q->mu);
    if (q->phase != PHASE_INFER || id != q->up_id) {
        pthread_mutex_unlock(&q->mu);
        return; /* an older try's event, or the request is over */
    }
    if (terminal)
        q->up_id = 0; /* the mux dropped the registration */
    switch (ev->kind_case) {
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_STARTED:
        q->inference_queue_us = ev->started->queue_us;
        if (!q->resumed) /* after a failover the prompt is still the one first counted */
            q->prompt_tokens = ev->started->prompt_tokens;
        break;
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_TOKEN: {
        if (q->resumed && ev->token->index != q->tokens_sent) {
            /* An instance that ignored the resume tokens would repeat the answer. */
            char why[300];
            snprintf(why, sizeof(why),
                     "instance %s did not continue the answer: token index %u after %u tokens "
                     "sent",
                     router_instance_addr(q->inst), ev->token->index, q->tokens_sent);
            do_trace_try_end(q, GRPC_STATUS_INTERNAL, why);
            do_fail(q, GRPC_STATUS_UNAVAILABLE, why);
            break;
        }
        int64_t now = ls_now_us();
        router_report_labels_t l = do_labels(q);
        if (q->tokens_sent == 0) {
            q->first_token_us = now;
            svc_span_event(q->infer_span, "first_token");
            svc_span_event(q->span, "first_token");
            do_cancel_timer(q, &q->ttft_timer);
            router_report_first_token(q->r->report, &l, now - q->t_recv_us);
        } else {
            router_report_token_gap(q->r->report, &l, now - q->m_last_token_us);
        }
        q->m_last_token_us = now;
        Llmserve__V1__GenerateToken t = LLMSERVE__V1__GENERATE_TOKEN__INIT;
        t.text = ev->token->text;
        t.id = ev->token->id;
        t.index = q->tokens_sent;
        Llmserve__V1__GenerateEvent out = LLMSERVE__V1__GENERATE_EVENT__INIT;
        out.kind_case = LLMSERVE__V1__GENERATE_EVENT__KIND_TOKEN;
        out.token = &t;
        do_emit(q, &out);
        do_keep_id(q, ev->token->id);
        q->tokens_sent++;
        q->try_tokens++;
        q->eos_sent = !q->sampling.ignore_eos &&
                      (ev->token->id == RELAY_TOKEN_EOS || ev->token->id == RELAY_TOKEN_BOS);
        if (q->store)
            router_answer_append(&q->answer, ev->token->text, ev->token->id);
        break;
    }
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_DONE: {
        const Llmserve__V1__InferenceDone *d = ev->done;
        if (d->timings) {
            q->inference_queue_us = d->timings->inference_queue_us ? d->timings->inference_queue_us
                                                                   : q->inference_queue_us;
            q->prefill_us = d->timings->prefill_us;
            q->decode_us = d->timings->decode_us;
        }
        if (d->usage && d->usage->prompt_tokens && !q->resumed)
            q->prompt_tokens = d->usage->prompt_tokens;
        if (d->usage)
            q->cached_prompt_tokens = d->usage->cached_prompt_tokens;
        do_trace_try_end(q, GRPC_STATUS_OK, NULL);
        if (q->store && router_cache_policy_storable(d->finish_reason))
            do_cache_store(q, d);
        do_done(q, d->finish_reason, d->usage ? d->usage->completion_tokens : q->tokens_sent);
        break;
    }
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_ERROR: {
        int code = ev->error->code ? ev->error->code : GRPC_STATUS_UNKNOWN;
        char why[400];
        snprintf(why, sizeof(why), "instance %s: %s", router_instance_addr(q->inst),
                 ev->error->message);
        do_trace_try_end(q, code, ev->error->message);
        if (q->try_tokens == 0 && code == GRPC_STATUS_RESOURCE_EXHAUSTED)
            do_instance_full(q, why); /* no room there, before this try's first token */
        else if (q->tokens_sent == 0 && retryable(code))
            do_retry(q, code, why);
        else if (retryable(code))
            do_failover(q, why);
        else
            do_fail(q, code, why);
        break;
    }
    default:
        break;
    }
    pthread_mutex_unlock(&q->mu);
}

static void on_infer_broken(void *ud, uint64_t id, const char *why)
{
    relay_req_t *q = ud;
    pthread_mutex_lock(&q->mu);
    if (q->phase == PHASE_INFER && id == q->up_id) {
        q->up_id = 0;
        do_trace_try_end(q, GRPC_STATUS_UNAVAILABLE, why);
        if (q->tokens_sent == 0) {
            do_retry(q, GRPC_STATUS_UNAVAILABLE, why);
        } else {
            do_failover(q, why); /* why names the instance */
        }
    }
    pthread_mutex_unlock(&q->mu);
}

static const rpc_mux_handler_t infer_handler = {on_infer_message, on_infer_broken, h_ref, h_unref};

/* ---- cache events ----------------------------------------------------------------- */

static void replay_emit(void *ud, Llmserve__V1__GenerateEvent *ev)
{
    do_emit(ud, ev);
}

/* A hit: its start event, its tokens (replay.h) and its done. */
static void do_replay_hit(relay_req_t *q, const Llmserve__V1__CacheLookupResult *hit)
{
    q->m_cache =
        hit->kind == LLMSERVE__V1__CACHE_HIT_KIND__CACHE_HIT_KIND_SEMANTIC ? "semantic" : "exact";
    do_started(q, true, hit);
    q->first_token_us = ls_now_us();
    svc_span_event(q->span, "first_token");
    router_report_labels_t l = do_labels(q);
    router_report_first_token(q->r->report, &l, q->first_token_us - q->t_recv_us);
    uint32_t n_events = 0;
    int rc =
        router_replay_hit(hit, (size_t)q->r->cfg.cache_replay_events, replay_emit, q, &n_events);
    if (rc != LS_OK) {
        do_fail(q, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory replaying a cached answer");
        return;
    }
    q->tokens_sent = n_events;
    if (hit->usage)
        q->prompt_tokens = hit->usage->prompt_tokens;
    do_done(q, router_replay_finish_reason(hit), hit->usage ? hit->usage->completion_tokens : 0);
}

/* The lookup is over (answered, failed or timed out; result is the metric's "hit",
 * "miss" or "error"): a hit (non-NULL) replays, anything else runs the model. */
static void do_lookup_result(relay_req_t *q, const Llmserve__V1__CacheLookupResult *hit,
                             const char *result, int code, const char *message)
{
    q->cache_id = 0; /* answered or broken: the mux dropped the registration */
    if (q->cache_span && hit)
        svc_span_set_str(q->cache_span, "llmserve.cache.hit_kind",
                         hit->kind == LLMSERVE__V1__CACHE_HIT_KIND__CACHE_HIT_KIND_SEMANTIC
                             ? "semantic"
                             : "exact");
    do_trace_lookup_end(q, result, code, message);
    do_end_lookup(q);
    do_cancel_timer(q, &q->cache_timer);
    q->cache_lookup_us = (uint64_t)(ls_now_us() - q->t_lookup_us);
    router_report_lookup(q->r->report, result, (int64_t)q->cache_lookup_us);
    if (hit)
        do_replay_hit(q, hit);
    else
        do_submit(q);
}

static void on_cache_message(void *ud, uint64_t id, const ProtobufCMessage *msg, bool terminal)
{
    (void)terminal;
    relay_req_t *q = ud;
    const Llmserve__V1__CacheResponse *resp = (const Llmserve__V1__CacheResponse *)msg;
    pthread_mutex_lock(&q->mu);
    if (q->phase == PHASE_LOOKUP && id == q->cache_id) {
        bool failed = resp->kind_case == LLMSERVE__V1__CACHE_RESPONSE__KIND_ERROR;
        if (failed)
            LS_LOG_WARN("router", "cache lookup failed id=%s code=%d msg=\"%s\"", q->id,
                        resp->error->code, resp->error->message);
        const Llmserve__V1__CacheLookupResult *hit = router_cache_policy_hit(resp);
        do_lookup_result(q, hit, hit ? "hit" : failed ? "error" : "miss",
                         failed ? (resp->error->code ? resp->error->code : GRPC_STATUS_UNKNOWN)
                                : 0,
                         failed ? resp->error->message : NULL);
    }
    pthread_mutex_unlock(&q->mu);
}

static void on_cache_broken(void *ud, uint64_t id, const char *why)
{
    relay_req_t *q = ud;
    pthread_mutex_lock(&q->mu);
    if (q->phase == PHASE_LOOKUP && id == q->cache_id)
        do_lookup_result(q, NULL, "error", GRPC_STATUS_UNAVAILABLE, why);
    pthread_mutex_unlock(&q->mu);
}

static const rpc_mux_handler_t cache_handler = {on_cache_message, on_cache_broken, h_ref, h_unref};

/* ---- timers ----------------------------------------------------------------------- */

/* q waited waited_ms in the router's queue (now out of it) without room: the fallback
 * pool, else DEADLINE_EXCEEDED. */
static void do_queue_timeout(relay_req_t *q, int64_t waited_ms)
{
    router_t *r = q->r;
    const char *fb = router_policy_fallback(&r->policy, q->pool);
    if (fb && !q->fell_back_once && router_pools_has(r->pools, fb)) {
        snprintf(q->fallback_reason, sizeof(q->fallback_reason),
                 "pool %s at capacity: no room within %" PRId64 " ms in the router's queue",
                 q->pool, waited_ms);
        do_fall_back(q, fb);
        do_dispatch(q);
        return;
    }
    char msg[200];
    snprintf(msg, sizeof(msg),
             "pool %s at capacity: no room within %" PRId64
             " ms in the router's queue (--queue-wait-ms %" PRId64 ")",
             q->pool, waited_ms, r->cfg.queue_wait_ms);
    do_no_route(q, GRPC_STATUS_DEADLINE_EXCEEDED, msg);
}

static void on_timer(void *ud, bool fired)
{
    timer_ctx_t *t = ud;
    relay_req_t *q = t->q;
    pthread_mutex_lock(&q->mu);
    timer_ctx_t **slot = t->kind == TIMER_DEADLINE ? &q->deadline_timer
                         : t->kind == TIMER_TTFT   ? &q->ttft_timer
                         : t->kind == TIMER_QUEUE  ? &q->queue_timer
                                                   : &q->cache_timer;
    bool current = fired && *slot == t;
    if (*slot == t)
        *slot = NULL;
    if (current && q->phase != PHASE_DONE) {
        if (t->kind == TIMER_DEADLINE) {
            if (q->tokens_sent == 0) {
                char msg[160];
                snprintf(msg, sizeof(msg),
                         "deadline passed before the first token (%" PRId64 " ms after receipt%s)",
                         (ls_now_us() - q->t_recv_us) / 1000,
                         q->phase == PHASE_QUEUED ? ", queued in the router: pool at capacity"
                                                  : "");
                do_fail(q, GRPC_STATUS_DEADLINE_EXCEEDED, msg);
            } else {
                do_done(q, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_DEADLINE, q->tokens_sent);
            }
        } else if (t->kind == TIMER_TTFT && q->phase == PHASE_INFER && q->tokens_sent == 0 &&
                   t->attempt == q->attempt) {
            const char *fb = router_policy_fallback(&q->r->policy, q->pool);
            if (fb && !q->fell_back_once) {
                snprintf(q->fallback_reason, sizeof(q->fallback_reason),
                         "no first token from pool %s within %" PRId64 " ms", q->pool,
                         router_policy_ttft_ms(&q->r->policy, q->pool));
                do_trace_try_end(q, GRPC_STATUS_CANCELLED, q->fallback_reason);
                do_fall_back(q, fb);
                do_end_attempt(q, true);
                do_dispatch(q);
            }
        } else if (t->kind == TIMER_QUEUE && q->phase == PHASE_QUEUED && q->in_queue) {
            int64_t waited_ms = (ls_now_us() - q->t_queued_us) / 1000;
            if (do_unqueue(q, false))
                do_queue_timeout(q, waited_ms);
        } else if (t->kind == TIMER_QUEUE && q->phase == PHASE_QUEUED) {
            /* the pause after an instance's refusal (do_instance_full) is over */
            q->queued_us += ls_now_us() - q->t_queued_us;
            if (q->queued_us >= q->r->cfg.queue_wait_ms * 1000)
                do_queue_timeout(q, q->queued_us / 1000);
            else
                do_dispatch(q);
        } else if (t->kind == TIMER_CACHE && q->phase == PHASE_LOOKUP) {
            do_end_lookup(q);
            /* too slow: answered as a miss */
            do_lookup_result(q, NULL, "error", GRPC_STATUS_DEADLINE_EXCEEDED,
                             "no answer within --cache-timeout-ms");
        }
    }
    pthread_mutex_unlock(&q->mu);
    free(t);
    router__req_unref(q);
}

/* ---- entry points ----------------------------------------------------------------- */

/* The sampling parameters as the instance and the cache key see them, and the cache plan. */
static void resolve_sampling(relay_req_t *q)
{
    Llmserve__V1__SamplingParams def = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    const Llmserve__V1__SamplingParams *in = q->sub->sampling ? q->sub->sampling : &def;
    q->sampling = *in;
    if (q->sampling.max_tokens == 0)
        q->sampling.max_tokens = (int32_t)q->r->cfg.default_max_tokens;
    if (!q->sampling.has_seed)
        q->sampling.seed = 0;
    router_cache_plan_t plan = router_cache_policy_resolve(q->sub->cache_policy, &q->sampling,
                                                           router_caches_any(q->r->caches));
    q->lookup = plan.lookup;
    q->store = plan.store;
    q->m_cache = plan.lookup ? "miss" : "bypass";
}

static void do_route(relay_req_t *q)
{
    router_t *r = q->r;
    if (q->sub->model_hint[0]) {
        snprintf(q->pool, sizeof(q->pool), "%s", q->sub->model_hint);
        snprintf(q->reason, sizeof(q->reason), "hint");
        return;
    }
    size_t n = q->sub->n_messages;
    router_scorer_msg_t stack_msgs[16];
    router_scorer_msg_t *msgs = n <= 16 ? stack_msgs : ls_xcalloc(n, sizeof(*msgs));
    for (size_t i = 0; i < n; i++)
        msgs[i].content = q->sub->messages[i]->content;
    router_score_t s;
    router_scorer_score(&r->cfg.scorer, q->sub->prompt, msgs, n, &s);
    if (msgs != stack_msgs)
        free(msgs);
    double th = 0;
    const char *pool = router_policy_pool_for(&r->policy, s.score, &th);
    char why[120];
    router_scorer_explain(&r->cfg.scorer, &s, why, sizeof(why));
    snprintf(q->pool, sizeof(q->pool), "%s", pool);
    q->score = s.score;
    q->scored = true;
    snprintf(q->reason, sizeof(q->reason), "complexity %.3f %s %.3f (%s)", s.score,
             s.score >= th && r->policy.n_tiers ? ">=" : "<", th, why);
}

/* The routing decision as a child span (receipt to routed) and on the SERVER span. */
static void do_trace_route(relay_req_t *q)
{
    if (!q->span)
        return;
    svc_span_t *s = do_child(q, "route", SVC_SPAN_INTERNAL, q->t_recv_us);
    svc_span_t *both[2] = {q->span, s};
    for (int i = 0; i < 2; i++) {
        svc_span_set_str(both[i], "llmserve.pool", q->pool);
        if (q->scored)
            svc_span_set_double(both[i], "llmserve.complexity", q->score);
    }
    svc_span_set_str(s, "llmserve.route_reason", q->reason);
    svc_span_end_at(s, 0, NULL, q->t_routed_us);
    svc_span_t *sp = q->span;
    svc_span_set_str(sp, "gen_ai.request.model", q->sub->model_hint[0] ? q->sub->model_hint
                                                                       : q->pool);
    svc_span_set_int(sp, "gen_ai.request.max_tokens", q->sampling.max_tokens);
    svc_span_set_double(sp, "gen_ai.request.temperature", q->sampling.temperature);
    if (q->sampling.top_p > 0)
        svc_span_set_double(sp, "gen_ai.request.top_p", q->sampling.top_p);
    if (q->sampling.top_k > 0)
        svc_span_set_int(sp, "gen_ai.request.top_k", q->sampling.top_k);
    if (q->sampling.has_seed)
        svc_span_set_int(sp, "gen_ai.request.seed", (int64_t)q->sampling.seed);
    svc_span_set_str(sp, "llmserve.cache.policy", q->lookup ? (q->store ? "lookup_store" : "lookup")
                                                  : q->store ? "store"
                                                             : "bypass");
}

void router__req_start(relay_req_t *q)
{
    router_t *r = q->r;
    pthread_mutex_lock(&q->mu);
    char msg[256];
    if (router_validate_submit(q->sub, q->id_required, (size_t)r->cfg.max_prompt_bytes, msg,
                               sizeof(msg)) != LS_OK) {
        do_fail(q, GRPC_STATUS_INVALID_ARGUMENT, msg);
        goto out;
    }
    if (router_validate_priority(q->sub->priority, q->key_priority, &q->priority, msg,
                                 sizeof(msg)) != LS_OK) {
        do_fail(q, GRPC_STATUS_INVALID_ARGUMENT, msg);
        goto out;
    }
    q->prefix_key = router_prefix_key(q->sub, (size_t)r->cfg.prefix_affinity_bytes);
    if (q->sub->model_hint[0] && !router_pools_has(r->pools, q->sub->model_hint)) {
        char names[128];
        router_pools_names(r->pools, names, sizeof(names));
        snprintf(msg, sizeof(msg), "model_hint '%.64s' is not a pool (pools: %s)",
                 q->sub->model_hint, names);
        do_fail(q, GRPC_STATUS_INVALID_ARGUMENT, msg);
        goto out;
    }
    resolve_sampling(q);
    int64_t timeout_ms = r->cfg.request_timeout_ms;
    if (q->sub->timeout_ms && (int64_t)q->sub->timeout_ms < timeout_ms)
        timeout_ms = q->sub->timeout_ms;
    q->deadline_us = q->t_recv_us + timeout_ms * 1000;
    /* The earliest of the three deadlines: the router's default, the request's own, and
     * what is left of the client's call. */
    if (q->call_left_us != INT64_MAX && q->t_recv_us + q->call_left_us < q->deadline_us)
        q->deadline_us = q->t_recv_us + q->call_left_us;
    do_route(q);
    q->t_routed_us = ls_now_us();
    do_trace_route(q);
    q->m_flight = router_report_enter(r->report, q->pool);
    router_report_priority(r->report, q->pool, q->priority);
    q->deadline_timer = do_arm(q, TIMER_DEADLINE, q->deadline_us);
    do_dispatch(q);
out:
    pthread_mutex_unlock(&q->mu);
}

void router__req_cancel(relay_req_t *q)
{
    pthread_mutex_lock(&q->mu);
    if (q->phase != PHASE_DONE)
        do_done(q, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_CANCELLED, q->tokens_sent);
    pthread_mutex_unlock(&q->mu);
}

void router__req_reject(relay_req_t *q, int grpc_code, const char *message)
{
    pthread_mutex_lock(&q->mu);
    do_fail(q, grpc_code, message);
    pthread_mutex_unlock(&q->mu);
}

void router__req_granted(router_waiter_t *w, router_instance_t *inst)
{
    relay_req_t *q = w->ud;
    pthread_mutex_lock(&q->mu);
    if (!q->in_queue) { /* it ended while the grant was on its way */
        if (inst)
            router_pools_release(q->r->pools, inst);
    } else {
        do_left_queue(q);
        if (!inst) {
            do_dispatch(q); /* the pool has no eligible instance now: routed again */
        } else {
            q->inst = inst;
            q->conn = router_instance_user(inst);
            q->attempt++;
            do_picked(q);
        }
    }
    pthread_mutex_unlock(&q->mu);
    router__req_unref(q); /* the queue's */
}
