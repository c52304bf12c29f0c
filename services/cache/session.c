/*
 * Lock rules: session_t.mu guards refs, the in-flight id set, pending, half_closed and
 * finished.  It is never held across rpc_call_send/finish or engine calls.
 *
 * A session is shared by its call (one reference until on_done) and each job (one
 * reference each); the last unref frees it.  Each job also holds a call reference, so
 * a worker may still answer (and get LS_ERR_CLOSED) after the call has ended.
 *
 * Spans (op_span.h): each request's span is started where the request is read and
 * ended by the send_* function that answers it; a request handed to a worker hands its
 * span over with it (the job owns it from then on).
 */
#define _GNU_SOURCE
#include "session.h"

#include "op_span.h"

#include "base/err.h"
#include "base/log.h"
#include "base/utf8.h"
#include "rpc/codec.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_BUCKETS 256

typedef struct id_node {
    struct id_node *next;
    uint64_t id;
} id_node_t;

typedef struct {
    pthread_mutex_t mu;
    int refs;
    size_t pending; /* requests at workers */
    bool half_closed;
    bool finished;
    id_node_t *ids[ID_BUCKETS];
    const session_config_t *cfg;
} session_t;

typedef struct {
    session_t *s;
    rpc_call_t *call;
    Llmserve__V1__CacheRequest *req; /* owned copy */
    svc_span_t *span;                /* the request's span, owned; NULL: none */
    bool released;                   /* its id is no longer in flight */
} job_t;

/* ---- ids in flight ----------------------------------------------------------------- */

static bool do_has_id(session_t *s, uint64_t id)
{
    for (id_node_t *n = s->ids[id % ID_BUCKETS]; n; n = n->next)
        if (n->id == id)
            return true;
    return false;
}

static void do_add_id(session_t *s, uint64_t id)
{
    id_node_t *n = ls_xmalloc(sizeof(*n));
    n->id = id;
    n->next = s->ids[id % ID_BUCKETS];
    s->ids[id % ID_BUCKETS] = n;
}

static void do_remove_id(session_t *s, uint64_t id)
{
    for (id_node_t **pp = &s->ids[id % ID_BUCKETS]; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            id_node_t *n = *pp;
            *pp = n->next;
            free(n);
            return;
        }
    }
}

static void session_unref(session_t *s)
{
    pthread_mutex_lock(&s->mu);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (!last)
        return;
    for (size_t i = 0; i < ID_BUCKETS; i++)
        for (id_node_t *n = s->ids[i], *next; n; n = next) {
            next = n->next;
            free(n);
        }
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- responses ---------------------------------------------------------------- */

/* Each send_* answers request id and ends its span (NULL: none) with what it sends, just
 * before the answer goes: ended after it, the span could end after the client has read the
 * answer (a thread preempted between the two) and look longer than the client's span
 * around it. */
static void send_error(const session_config_t *cfg, rpc_call_t *call, uint64_t id, svc_span_t *span,
                       grpc_status_code code, const char *message)
{
    engine_count_error(cfg->engine);
    Llmserve__V1__Status st = LLMSERVE__V1__STATUS__INIT;
    st.code = (int32_t)code;
    st.message = (char *)message;
    Llmserve__V1__CacheResponse resp = LLMSERVE__V1__CACHE_RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = LLMSERVE__V1__CACHE_RESPONSE__KIND_ERROR;
    resp.error = &st;
    op_span_result(span, "error");
    op_span_end(span, cfg->engine, code, message);
    rpc_call_send(call, &resp.base);
}

static void send_miss(const session_config_t *cfg, rpc_call_t *call, uint64_t id, svc_span_t *span)
{
    Llmserve__V1__CacheLookupResult r = LLMSERVE__V1__CACHE_LOOKUP_RESULT__INIT;
    Llmserve__V1__CacheResponse resp = LLMSERVE__V1__CACHE_RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = LLMSERVE__V1__CACHE_RESPONSE__KIND_LOOKUP;
    resp.lookup = &r;
    op_span_result(span, "miss");
    op_span_end(span, cfg->engine, GRPC_STATUS_OK, NULL);
    rpc_call_send(call, &resp.base);
}

static char *dup_text(const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (d) {
        memcpy(d, s, len);
        d[len] = '\0';
    }
    return d;
}

/* Sends a hit, or a miss when the stored answer cannot be sent as it is. */
static void send_hit(const session_config_t *cfg, rpc_call_t *call, uint64_t id, svc_span_t *span,
                     const engine_hit_t *h)
{
    const cache_entry_t *e = &h->entry;
    char *text = dup_text(e->text, e->text_len);
    char *version = dup_text(e->model_version, e->model_version_len);
    int32_t *tokens = e->n_tokens ? malloc(e->n_tokens * sizeof(int32_t)) : NULL;
    uint32_t *pieces = e->n_pieces ? malloc(e->n_pieces * sizeof(uint32_t)) : NULL;
    if (!text || !version || (e->n_tokens && !tokens) || (e->n_pieces && !pieces)) {
        send_error(cfg, call, id, span, GRPC_STATUS_RESOURCE_EXHAUSTED,
                   "out of memory for the answer");
        goto out_free;
    }
    /* Stored text was checked on the way in; a value that is no longer clean text
     * (memory or disk trouble) is not worth sending. */
    if (strlen(text) != e->text_len || !ls_utf8_valid(text, e->text_len) ||
        !ls_utf8_valid(version, strlen(version))) {
        LS_LOG_WARN("cache", "cached answer is not valid text, answering a miss id=%llu",
                    (unsigned long long)id);
        send_miss(cfg, call, id, span);
        goto out_free;
    }
    for (size_t i = 0; i < e->n_tokens; i++)
        tokens[i] = cache_entry_token(e, i);
    for (size_t i = 0; i < e->n_pieces; i++)
        pieces[i] = cache_entry_piece(e, i);
    /* Pieces that no longer cut the text cleanly are dropped: the hit replays as one. */
    size_t n_pieces = e->n_pieces;
    if (n_pieces && !cache_pieces_valid(text, e->text_len, pieces, n_pieces)) {
        LS_LOG_WARN("cache", "cached token pieces do not match the text, replaying it whole "
                             "id=%llu", (unsigned long long)id);
        n_pieces = 0;
    }
    Llmserve__V1__Usage usage = LLMSERVE__V1__USAGE__INIT;
    usage.prompt_tokens = e->prompt_tokens;
    usage.completion_tokens = e->completion_tokens;
    Llmserve__V1__CacheLookupResult r = LLMSERVE__V1__CACHE_LOOKUP_RESULT__INIT;
    r.hit = 1;
    r.kind = h->semantic ? LLMSERVE__V1__CACHE_HIT_KIND__CACHE_HIT_KIND_SEMANTIC
                         : LLMSERVE__V1__CACHE_HIT_KIND__CACHE_HIT_KIND_EXACT;
    r.similarity = h->similarity;
    r.text = text;
    r.n_token_ids = e->n_tokens;
    r.token_ids = tokens;
    r.finish_reason = (Llmserve__V1__FinishReason)e->finish_reason;
    r.usage = &usage;
    r.source = h->from_l1 ? LLMSERVE__V1__CACHE_SOURCE__CACHE_SOURCE_L1
                          : LLMSERVE__V1__CACHE_SOURCE__CACHE_SOURCE_MEMCACHED;
    r.model_version = version;
    r.n_token_text_bytes = n_pieces;
    r.token_text_bytes = pieces;
    Llmserve__V1__CacheResponse resp = LLMSERVE__V1__CACHE_RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = LLMSERVE__V1__CACHE_RESPONSE__KIND_LOOKUP;
    resp.lookup = &r;
    op_span_hit(span, h);
    op_span_end(span, cfg->engine, GRPC_STATUS_OK, NULL);
    rpc_call_send(call, &resp.base);
out_free:
    free(text);
    free(version);
    free(tokens);
    free(pieces);
}

static void send_stats(const session_config_t *cfg, rpc_call_t *call, uint64_t id, svc_span_t *span)
{
    engine_stats_t es;
    engine_stats(cfg->engine, &es);
    Llmserve__V1__CacheStats st = LLMSERVE__V1__CACHE_STATS__INIT;
    st.hits = es.hits;
    st.misses = es.misses;
    st.l1_hits = es.l1_hits;
    st.semantic_hits = es.semantic_hits;
    st.stores = es.stores;
    st.errors = es.errors;
    st.degraded = es.degraded;
    st.entries = es.entries;
    Llmserve__V1__CacheResponse resp = LLMSERVE__V1__CACHE_RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = LLMSERVE__V1__CACHE_RESPONSE__KIND_STATS;
    resp.stats = &st;
    op_span_result(span, "ok");
    op_span_end(span, cfg->engine, GRPC_STATUS_OK, NULL);
    rpc_call_send(call, &resp.base);
}

/* reason is "" when every tier took the answer (engine_store). */
static void send_store(const session_config_t *cfg, rpc_call_t *call, uint64_t id, svc_span_t *span,
                       bool stored, const char *reason)
{
    Llmserve__V1__CacheStoreResult r = LLMSERVE__V1__CACHE_STORE_RESULT__INIT;
    r.stored = stored;
    r.reason = (char *)reason;
    Llmserve__V1__CacheResponse resp = LLMSERVE__V1__CACHE_RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = LLMSERVE__V1__CACHE_RESPONSE__KIND_STORE;
    resp.store = &r;
    op_span_result(span, !stored ? "skipped" : (reason[0] ? "l1_only" : "stored"));
    op_span_end(span, cfg->engine, GRPC_STATUS_OK, NULL);
    rpc_call_send(call, &resp.base);
}

static void send_invalidate(const session_config_t *cfg, rpc_call_t *call, uint64_t id,
                            svc_span_t *span, uint64_t removed)
{
    Llmserve__V1__CacheInvalidateResult r = LLMSERVE__V1__CACHE_INVALIDATE_RESULT__INIT;
    r.removed = removed;
    Llmserve__V1__CacheResponse resp = LLMSERVE__V1__CACHE_RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = LLMSERVE__V1__CACHE_RESPONSE__KIND_INVALIDATE;
    resp.invalidate = &r;
    op_span_result(span, "invalidated");
    op_span_end(span, cfg->engine, GRPC_STATUS_OK, NULL);
    rpc_call_send(call, &resp.base);
}

/* ---- policies ----------------------------------------------------------------- */

static bool deterministic(const Llmserve__V1__CacheKey *k)
{
    const Llmserve__V1__SamplingParams *p = k->sampling;
    return !p || p->temperature == 0.0f || p->has_seed;
}

/* Why a lookup is answered as a miss without looking, or NULL to look. */
static bool lookup_skipped(const Llmserve__V1__CacheLookup *l)
{
    switch (l->cache_policy) {
    case LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_BYPASS:
    case LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_WRITE_ONLY:
        return true;
    case LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_FORCE:
        return false;
    default:
        return !deterministic(l->key);
    }
}

/* Why a store is refused, or NULL to store. */
static const char *store_refused(const Llmserve__V1__CacheStore *s)
{
    switch (s->cache_policy) {
    case LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_BYPASS:
        return "cache policy BYPASS";
    case LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_READ_ONLY:
        return "cache policy READ_ONLY";
    case LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_FORCE:
        break;
    default:
        if (!deterministic(s->key))
            return "sampling is random (temperature > 0 without a seed); "
                   "CACHE_POLICY_FORCE stores it anyway";
    }
    switch (s->finish_reason) {
    case LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH:
    case LLMSERVE__V1__FINISH_REASON__FINISH_REASON_STOP:
    case LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS:
        return NULL;
    default:
        return "only answers that finished with LENGTH, STOP or EOS are stored";
    }
}

/* ---- jobs on workers ------------------------------------------------------------ */

static void maybe_finish(session_t *s, rpc_call_t *call)
{
    pthread_mutex_lock(&s->mu);
    bool fin = s->half_closed && s->pending == 0 && !s->finished;
    if (fin)
        s->finished = true;
    pthread_mutex_unlock(&s->mu);
    if (fin)
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* The id stops being in flight just before its answer is queued, so a client that
 * reuses it the moment the answer arrives is not refused, and one that reuses it
 * earlier is. */
static void release_id(job_t *j)
{
    if (j->released)
        return;
    j->released = true;
    pthread_mutex_lock(&j->s->mu);
    do_remove_id(j->s, j->req->id);
    pthread_mutex_unlock(&j->s->mu);
}

/* Runs the request and answers it, which ends its span. */
static void run_job(job_t *j, cache_mc_t *mc)
{
    const session_config_t *cfg = j->s->cfg;
    engine_t *eng = cfg->engine;
    const Llmserve__V1__CacheRequest *req = j->req;
    uint64_t id = req->id;
    svc_span_t *span = j->span;
    j->span = NULL;
    request_key_t key = {0};
    const Llmserve__V1__CacheKey *pk = NULL;
    if (req->kind_case == LLMSERVE__V1__CACHE_REQUEST__KIND_LOOKUP)
        pk = req->lookup->key;
    else if (req->kind_case == LLMSERVE__V1__CACHE_REQUEST__KIND_STORE)
        pk = req->store->key;
    else if (!req->invalidate->all_of_model)
        pk = req->invalidate->key;
    if (pk && request_key_make(pk, &key) != GRPC_STATUS_OK) {
        release_id(j);
        send_error(cfg, j->call, id, span, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }

    int rc = LS_OK;
    switch (req->kind_case) {
    case LLMSERVE__V1__CACHE_REQUEST__KIND_LOOKUP: {
        engine_hit_t hit;
        rc = engine_lookup(eng, mc, &key.in, req->lookup->semantic, req->lookup->min_similarity,
                           span, &hit);
        release_id(j);
        if (rc == LS_OK)
            hit.hit ? send_hit(cfg, j->call, id, span, &hit) : send_miss(cfg, j->call, id, span);
        engine_hit_clear(&hit);
        break;
    }
    case LLMSERVE__V1__CACHE_REQUEST__KIND_STORE: {
        const Llmserve__V1__CacheStore *st = req->store;
        engine_answer_t a = {
            .text = st->text,
            .text_len = strlen(st->text),
            .token_ids = st->token_ids,
            .n_tokens = st->n_token_ids,
            .piece_lens = st->token_text_bytes,
            .n_pieces = st->n_token_text_bytes,
            .finish_reason = (int32_t)st->finish_reason,
            .prompt_tokens = st->usage ? st->usage->prompt_tokens : 0,
            .completion_tokens = st->usage ? st->usage->completion_tokens : 0,
            .model_version = st->model_version,
            .ttl_s = st->ttl_seconds,
            .semantic = st->semantic,
        };
        bool stored = false;
        const char *reason = "";
        rc = engine_store(eng, mc, &key.in, &a, span, &stored, &reason);
        release_id(j);
        if (rc == LS_OK)
            send_store(cfg, j->call, id, span, stored, reason);
        break;
    }
    default: {
        uint64_t removed = 0;
        rc = req->invalidate->all_of_model
                 ? engine_invalidate_model(eng, mc, req->invalidate->model, span, &removed)
                 : engine_invalidate_key(eng, mc, &key.in, span, &removed);
        release_id(j);
        if (rc == LS_OK)
            send_invalidate(cfg, j->call, id, span, removed);
        else if (rc == LS_ERR_UNAVAILABLE)
            send_error(cfg, j->call, id, span, GRPC_STATUS_UNAVAILABLE,
                       "memcached unavailable: removed in-process only; retry the invalidation");
        break;
    }
    }
    /* Only an invalidation has answered an UNAVAILABLE of its own above. */
    bool answered =
        rc == LS_ERR_UNAVAILABLE && req->kind_case == LLMSERVE__V1__CACHE_REQUEST__KIND_INVALIDATE;
    if (rc != LS_OK && !answered)
        send_error(cfg, j->call, id, span, (grpc_status_code)ls_err_to_grpc(rc), ls_strerror(rc));
    request_key_clear(&key);
}

static void job_main(void *arg, cache_mc_t *mc)
{
    job_t *j = arg;
    session_t *s = j->s;
    if (!rpc_call_cancelled(j->call))
        run_job(j, mc);
    else /* never answered: the operation ends here */
        op_span_end(j->span, s->cfg->engine, GRPC_STATUS_CANCELLED, "the call was cancelled");
    release_id(j);
    pthread_mutex_lock(&s->mu);
    s->pending--;
    pthread_mutex_unlock(&s->mu);
    maybe_finish(s, j->call);
    llmserve__v1__cache_request__free_unpacked(j->req, NULL);
    rpc_call_unref(j->call);
    session_unref(s);
    free(j);
}

/* Hands req and its span to a worker.  Answers the request itself when that cannot be
 * done. */
static void submit(session_t *s, rpc_call_t *call, const Llmserve__V1__CacheRequest *req,
                   svc_span_t *span)
{
    const session_config_t *cfg = s->cfg;
    pthread_mutex_lock(&s->mu);
    bool full = s->pending >= cfg->max_in_flight;
    pthread_mutex_unlock(&s->mu);
    if (full) {
        send_error(cfg, call, req->id, span, GRPC_STATUS_RESOURCE_EXHAUSTED,
                   "too many requests in flight on this stream");
        return;
    }
    /* The library frees the message when on_message returns: keep a copy. */
    Llmserve__V1__CacheRequest *copy = (Llmserve__V1__CacheRequest *)rpc_codec_copy(&req->base);
    if (!copy) {
        send_error(cfg, call, req->id, span, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    job_t *j = ls_xcalloc(1, sizeof(*j));
    j->s = s;
    j->call = call;
    j->req = copy;
    j->span = span;
    pthread_mutex_lock(&s->mu);
    s->refs++;
    s->pending++;
    do_add_id(s, req->id);
    pthread_mutex_unlock(&s->mu);
    rpc_call_ref(call);
    int rc = engine_submit(cfg->engine, job_main, j);
    if (rc == LS_OK)
        return;
    pthread_mutex_lock(&s->mu);
    s->refs--;
    s->pending--;
    do_remove_id(s, req->id);
    pthread_mutex_unlock(&s->mu);
    rpc_call_unref(call);
    llmserve__v1__cache_request__free_unpacked(copy, NULL);
    free(j);
    send_error(cfg, call, req->id, span,
               rc == LS_ERR_FULL ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_UNAVAILABLE,
               rc == LS_ERR_FULL ? "cache workers are saturated" : "cache is shutting down");
}

/* ---- the handler ------------------------------------------------------------- */

static void *on_start(rpc_call_t *call, void *ctx)
{
    (void)call;
    session_t *s = ls_xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    s->refs = 1;
    s->cfg = ctx;
    return s;
}

static void lookup_fast_or_submit(session_t *s, rpc_call_t *call,
                                  const Llmserve__V1__CacheRequest *req, svc_span_t *span)
{
    const session_config_t *cfg = s->cfg;
    request_key_t key;
    if (request_key_make(req->lookup->key, &key) != GRPC_STATUS_OK) {
        send_error(cfg, call, req->id, span, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    engine_hit_t hit;
    int rc = engine_lookup_fast(cfg->engine, &key.in, &hit);
    request_key_clear(&key);
    if (rc == LS_OK)
        send_hit(cfg, call, req->id, span, &hit);
    else if (rc == ENGINE_NEED_WORKER)
        submit(s, call, req, span);
    else
        send_error(cfg, call, req->id, span, (grpc_status_code)ls_err_to_grpc(rc), ls_strerror(rc));
    engine_hit_clear(&hit);
}

static void on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    session_t *s = state;
    const session_config_t *cfg = s->cfg;
    const Llmserve__V1__CacheRequest *req = (const Llmserve__V1__CacheRequest *)msg;
    svc_span_t *span = op_span_start(cfg->tracer, req);
    char err[256];
    grpc_status_code code = request_check(&cfg->limits, req, err, sizeof(err));
    if (code != GRPC_STATUS_OK) {
        send_error(cfg, call, req->id, span, code, err);
        return;
    }
    op_span_model(span, req);
    pthread_mutex_lock(&s->mu);
    bool dup = do_has_id(s, req->id);
    pthread_mutex_unlock(&s->mu);
    if (dup) {
        send_error(cfg, call, req->id, span, GRPC_STATUS_ALREADY_EXISTS,
                   "a request with this id is already in flight on this stream");
        return;
    }
    switch (req->kind_case) {
    case LLMSERVE__V1__CACHE_REQUEST__KIND_STATS:
        send_stats(cfg, call, req->id, span);
        break;
    case LLMSERVE__V1__CACHE_REQUEST__KIND_LOOKUP:
        if (lookup_skipped(req->lookup)) {
            engine_count_miss(cfg->engine);
            send_miss(cfg, call, req->id, span);
        } else {
            lookup_fast_or_submit(s, call, req, span);
        }
        break;
    case LLMSERVE__V1__CACHE_REQUEST__KIND_STORE: {
        const char *why = store_refused(req->store);
        if (why)
            send_store(cfg, call, req->id, span, false, why);
        else
            submit(s, call, req, span);
        break;
    }
    default:
        submit(s, call, req, span);
        break;
    }
}

static void on_half_close(rpc_call_t *call, void *state)
{
    session_t *s = state;
    pthread_mutex_lock(&s->mu);
    s->half_closed = true;
    pthread_mutex_unlock(&s->mu);
    maybe_finish(s, call);
}

static void on_done(rpc_call_t *call, void *state)
{
    (void)call;
    session_unref(state);
}

const rpc_handler_t session_handler = {
    .on_start = on_start,
    .on_message = on_message,
    .on_half_close = on_half_close,
    .on_done = on_done,
};
