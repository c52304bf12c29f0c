/*
 * Where each tier's state lives and who may touch it: the L1, generation table,
 * breakers and semantic index are thread-safe objects of their own; counters are
 * atomics; idle_mu makes sure only one worker at a time runs the idle duties (probes
 * and generation write-backs).  Nothing here holds a lock across a memcached call.
 */
#define _GNU_SOURCE
#include "engine.h"
#include "op_span.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "cache/cache_breaker.h"
#include "cache/cache_embed.h"
#include "cache/cache_gen.h"
#include "cache/cache_lexicon.h"
#include "cache/cache_lru.h"
#include "cache/cache_semantic.h"
#include "svc/gauge.h"
#include "svc/metric_names.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_PREFIX "llmserve:v1:"
#define MAX_MODELS 65536 /* generations remembered in-process */

struct engine {
    engine_config_t cfg;
    cache_lru_t *l1;
    cache_gen_t *gen;
    cache_breaker_t *brk;
    cache_semantic_t *sem; /* NULL when the semantic cache is off */
    cache_embedder_t *emb; /* NULL when the semantic cache is off */
    cache_pool_t *pool;
    size_t n_servers;
    char (*probe_keys)[48]; /* one key per server that hashes to it */
    pthread_mutex_t idle_mu;
    _Atomic uint64_t hits, misses, l1_hits, semantic_hits, stores, errors;
    _Atomic uint64_t vetoes[CACHE_GUARD_REASONS];
    svc_reporter_t *rep;                /* cfg.reporter */
    svc_gauge_t breaker_open, degraded; /* servers open; reported as flags */
};

static const svc_label_t TIER_L1[] = {{"tier", "l1"}};
static const svc_label_t TIER_MC[] = {{"tier", "memcached"}};
static const svc_label_t TIER_SEM[] = {{"tier", "semantic"}};
static const svc_label_t OP_GET[] = {{"op", "get"}};
static const svc_label_t VETO_LABELS[CACHE_GUARD_REASONS][1] = {
    {{"reason", "ok"}},       {{"reason", "number"}}, {{"reason", "unit"}},
    {{"reason", "negation"}}, {{"reason", "entity"}}, {{"reason", "order"}},
};
static const svc_label_t OP_SET[] = {{"op", "set"}};

/* The lexicon `wordnet` names (engine_config_t.wordnet) into *out (NULL for none). */
static int load_lexicon(const char *wordnet, cache_lexicon_t **out)
{
    char err[512];
    int64_t t0 = ls_now_us();
    if (cache_lexicon_open(wordnet, NULL, out, err, sizeof(err)) != LS_OK) {
        LS_LOG_ERROR("cache", "cannot load the WordNet dictionary reason=\"%s\"", err);
        return LS_ERR_INVALID;
    }
    if (*out)
        LS_LOG_INFO("cache", "WordNet loaded lemmas=%zu ms=%lld", cache_lexicon_size(*out),
                    (long long)((ls_now_us() - t0) / 1000));
    else if (err[0])
        LS_LOG_WARN("cache",
                    "semantic keys without WordNet lemmas, spelling and synonyms (install "
                    "wordnet-base or pass --wordnet DIR) reason=\"%s\"",
                    err);
    return LS_OK;
}

void engine_config_init(engine_config_t *cfg)
{
    cfg->l1_bytes = 64u << 20;         /* 64 MiB */
    cfg->default_ttl_s = 3600;         /* 1 hour */
    cfg->max_ttl_s = 86400;            /* 1 day */
    cfg->max_value_bytes = 512u << 10; /* 512 KiB, under memcached's 1 MiB item limit */
    cfg->semantic = true;
    cfg->semantic_threshold = ENGINE_DEFAULT_THRESHOLD;
    cfg->semantic_guards = true;
    cfg->semantic_max_per_scope = 2048;
    cfg->semantic_max_scopes = 4096;
    cfg->embed_dim = CACHE_EMBED_NGRAM_SPACE;
    cfg->wordnet = "auto";
    cfg->stem = true;
    cfg->gen_refresh_us = 1000000;   /* 1 s */
    cfg->breaker_threshold = 2;      /* failures in a row */
    cfg->probe_interval_us = 500000; /* 500 ms */
    cache_pool_config_init(&cfg->pool);
    cfg->reporter = NULL; /* no metrics */

    cfg->embedder = ENGINE_EMBED_NGRAM;
    cfg->embed_model.target = NULL;     /* ENGINE_EMBED_MODEL needs one */
    cfg->embed_model.model = "";        /* the one served */
    cfg->embed_model.timeout_ms = 2000; /* per Embed call */
    cfg->embed_model.channel = NULL;    /* plaintext */
}

/* ---- reports ------------------------------------------------------------------------ */

static void count_tier(engine_t *eng, const char *name, const svc_label_t *tier)
{
    svc_metric_add(eng->rep, name, tier, 1, 1);
}

/* One memcached call of op that began at since_us. */
static void observe_mc(engine_t *eng, const svc_label_t *op, int64_t since_us)
{
    if (eng->rep)
        svc_metric_observe(eng->rep, M_CACHE_MEMCACHED, op, 1,
                           (double)(ls_now_us() - since_us) / 1e6);
}

/* A breaker opened (+1) or closed (-1). */
static void breaker_moved(engine_t *eng, int delta)
{
    svc_gauge_add(&eng->breaker_open, eng->rep, M_CACHE_BREAKER_OPEN, NULL, 0, delta);
    svc_gauge_add(&eng->degraded, eng->rep, M_CACHE_DEGRADED, NULL, 0, delta);
}

/* ---- keys in memcached ---------------------------------------------------------- */

static size_t answer_key(const cache_digest_t *d, char *out)
{
    char hex[2 * CACHE_SHA256_BYTES + 1];
    cache_digest_hex(d, hex);
    return (size_t)sprintf(out, KEY_PREFIX "a:%s", hex);
}

static size_t gen_key(const char *model, char *out)
{
    cache_sha256_t h;
    cache_digest_t d;
    cache_sha256_init(&h);
    cache_sha256_update(&h, model, strlen(model));
    cache_sha256_final(&h, d.b);
    char hex[2 * CACHE_SHA256_BYTES + 1];
    cache_digest_hex(&d, hex);
    return (size_t)sprintf(out, KEY_PREFIX "g:%s", hex);
}

/* ---- memcached through the breakers ------------------------------------------------ */

/* Records the outcome of a call to server s, logging state changes once. */
static void note(engine_t *eng, cache_mc_t *mc, size_t s, int rc)
{
    if (cache_mc_server_failed(rc)) {
        atomic_fetch_add(&eng->errors, 1);
        if (cache_breaker_failure(eng->brk, s, ls_now_us())) {
            LS_LOG_WARN("cache", "memcached server down, running degraded server=%zu reason=\"%s\"",
                        s, cache_mc_last_error(mc));
            breaker_moved(eng, 1);
        }
    } else if (cache_breaker_success(eng->brk, s)) {
        LS_LOG_INFO("cache", "memcached server back, degraded mode over server=%zu", s);
        breaker_moved(eng, -1);
    }
}

/* The span of one call to server s, child of the operation's span op (NULL: none). */
static svc_span_t *mc_span(svc_span_t *op, cache_mc_t *mc, size_t s, op_span_mc_t call)
{
    if (!op)
        return NULL;
    const char *host = NULL;
    int port = 0;
    cache_mc_server_addr(mc, s, &host, &port);
    return op_span_mc_start(op, call, host, port);
}

static void mc_span_end(svc_span_t *span, cache_mc_t *mc, int rc)
{
    if (span)
        op_span_mc_end(span, rc, cache_mc_last_error(mc));
}

/* Each returns LS_ERR_UNAVAILABLE at once while the key's server is marked down; a call
 * that goes out gets a span under op (the operation's span; NULL: none).
 * mc_get sets *asked (when non-NULL) to whether the get went out to the server. */
static int mc_get(engine_t *eng, cache_mc_t *mc, svc_span_t *op, const char *key, size_t klen,
                  uint8_t **val, size_t *len, bool *asked)
{
    size_t s = cache_mc_server_of(mc, key, klen);
    int64_t t0 = ls_now_us();
    if (asked)
        *asked = false;
    if (!cache_breaker_allow(eng->brk, s, t0))
        return LS_ERR_UNAVAILABLE;
    if (asked)
        *asked = true;
    svc_span_t *span = mc_span(op, mc, s, OP_SPAN_MC_GET);
    int rc = cache_mc_get(mc, key, klen, val, len);
    mc_span_end(span, mc, rc);
    observe_mc(eng, OP_GET, t0);
    note(eng, mc, s, rc);
    return rc;
}

static int mc_set(engine_t *eng, cache_mc_t *mc, svc_span_t *op, const char *key, size_t klen,
                  const void *val, size_t len, uint32_t ttl_s, bool add_only)
{
    size_t s = cache_mc_server_of(mc, key, klen);
    int64_t t0 = ls_now_us();
    if (!cache_breaker_allow(eng->brk, s, t0))
        return LS_ERR_UNAVAILABLE;
    svc_span_t *span = mc_span(op, mc, s, add_only ? OP_SPAN_MC_ADD : OP_SPAN_MC_SET);
    int rc = add_only ? cache_mc_add(mc, key, klen, val, len, ttl_s)
                      : cache_mc_set(mc, key, klen, val, len, ttl_s);
    mc_span_end(span, mc, rc);
    observe_mc(eng, OP_SET, t0);
    note(eng, mc, s, rc);
    return rc;
}

static int mc_delete(engine_t *eng, cache_mc_t *mc, svc_span_t *op, const char *key, size_t klen)
{
    size_t s = cache_mc_server_of(mc, key, klen);
    if (!cache_breaker_allow(eng->brk, s, ls_now_us()))
        return LS_ERR_UNAVAILABLE;
    svc_span_t *span = mc_span(op, mc, s, OP_SPAN_MC_DELETE);
    int rc = cache_mc_delete(mc, key, klen);
    mc_span_end(span, mc, rc);
    note(eng, mc, s, rc);
    return rc;
}

/* ---- generations --------------------------------------------------------------- */

static uint64_t parse_gen(const uint8_t *v, size_t n)
{
    uint64_t g = 0;
    if (n == 0 || n > 20)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return 0;
        g = g * 10 + (uint64_t)(v[i] - '0');
    }
    return g;
}

/* The model's generation: the cached one while fresh (or when mc is NULL), else read
 * from memcached (created there when absent) and merged.  force reads even when fresh.
 * When memcached cannot be reached the cached value (0 if none) is used. */
static uint64_t generation(engine_t *eng, cache_mc_t *mc, svc_span_t *op, const char *model,
                           bool force)
{
    int64_t now = ls_now_us();
    uint64_t local;
    cache_gen_state_t st = cache_gen_get(eng->gen, model, now, eng->cfg.gen_refresh_us, &local);
    if ((st == CACHE_GEN_FRESH && !force) || !mc)
        return local;
    char key[128];
    size_t klen = gen_key(model, key);
    uint8_t *v = NULL;
    size_t n = 0;
    uint64_t remote = 0;
    int rc = mc_get(eng, mc, op, key, klen, &v, &n, NULL);
    if (rc == LS_ERR_NOT_FOUND) {
        /* Absent: never set, or lost with a memcached restart.  A new value above
         * every earlier one keeps answers from before the loss from coming back. */
        uint64_t wall = (uint64_t)ls_wall_us();
        uint64_t cand = local + 1 > wall ? local + 1 : wall;
        char txt[32];
        int tl = snprintf(txt, sizeof(txt), "%" PRIu64, cand);
        rc = mc_set(eng, mc, op, key, klen, txt, (size_t)tl, 0, true);
        if (rc == LS_OK)
            remote = cand;
        else if (rc == LS_ERR_EXISTS)
            rc = mc_get(eng, mc, op, key, klen, &v, &n, NULL); /* another instance won the race */
    }
    if (rc == LS_OK && v) {
        remote = parse_gen(v, n);
        free(v);
    }
    if (rc != LS_OK)
        return local;
    bool write_back = false;
    uint64_t use = cache_gen_merge(eng->gen, model, remote, now, &write_back);
    if (write_back) {
        char txt[32];
        int tl = snprintf(txt, sizeof(txt), "%" PRIu64, use);
        if (mc_set(eng, mc, op, key, klen, txt, (size_t)tl, 0, false) == LS_OK)
            cache_gen_written(eng->gen, model, use);
    }
    return use;
}

/* ---- answers -------------------------------------------------------------------- */

typedef enum { FETCH_FOUND, FETCH_MISSING, FETCH_UNKNOWN } fetch_t;

/* Checks that buf holds the answer for key, still fresh; fills out from it. */
static bool accept(const cache_digest_t *key, uint8_t *buf, size_t len, engine_hit_t *out)
{
    cache_entry_t e;
    if (cache_entry_decode(buf, len, &e) != LS_OK || !cache_digest_equal(&e.key, key))
        return false;
    if (e.expires_wall_s <= ls_wall_us() / 1000000)
        return false;
    out->hit = true;
    out->entry = e;
    out->buf = buf;
    return true;
}

/* Finds the answer for key in L1, then (mc non-NULL) in memcached, filling L1 from it.
 * *asked_mc (when non-NULL) says whether a get went out to memcached. */
static fetch_t fetch_answer(engine_t *eng, cache_mc_t *mc, svc_span_t *op,
                            const cache_digest_t *key, uint64_t model_tag, engine_hit_t *out,
                            bool *asked_mc)
{
    if (asked_mc)
        *asked_mc = false;
    uint8_t *buf = NULL;
    size_t len = 0;
    int64_t now = ls_now_us();
    if (cache_lru_get(eng->l1, key, now, &buf, &len) == LS_OK) {
        if (accept(key, buf, len, out)) {
            out->from_l1 = true;
            return FETCH_FOUND;
        }
        free(buf);
        cache_lru_remove(eng->l1, key);
    }
    if (!mc)
        return FETCH_UNKNOWN;
    char mkey[128];
    size_t mlen = answer_key(key, mkey);
    int rc = mc_get(eng, mc, op, mkey, mlen, &buf, &len, asked_mc);
    if (rc == LS_ERR_NOT_FOUND)
        return FETCH_MISSING;
    if (rc != LS_OK)
        return FETCH_UNKNOWN;
    if (!accept(key, buf, len, out)) {
        LS_LOG_WARN("cache", "memcached value rejected (wrong key, stale or malformed) bytes=%zu",
                    len);
        free(buf);
        return FETCH_MISSING;
    }
    int64_t left_us = out->entry.expires_wall_s * 1000000 - ls_wall_us();
    size_t evicted = 0;
    cache_lru_put(eng->l1, key, model_tag, now + left_us, buf, len, &evicted);
    if (evicted)
        svc_metric_add(eng->rep, M_CACHE_EVICTIONS, NULL, 0, (double)evicted);
    out->from_l1 = false;
    return FETCH_FOUND;
}

void engine_hit_clear(engine_hit_t *h)
{
    free(h->buf);
    memset(h, 0, sizeof(*h));
}

static void count_hit(engine_t *eng, const engine_hit_t *h)
{
    atomic_fetch_add(&eng->hits, 1);
    if (h->from_l1)
        atomic_fetch_add(&eng->l1_hits, 1);
    if (h->semantic)
        atomic_fetch_add(&eng->semantic_hits, 1);
}

int engine_lookup_fast(engine_t *eng, const cache_key_input_t *in, engine_hit_t *out)
{
    memset(out, 0, sizeof(*out));
    uint64_t g;
    if (cache_gen_get(eng->gen, in->model, ls_now_us(), eng->cfg.gen_refresh_us, &g) !=
        CACHE_GEN_FRESH)
        return ENGINE_NEED_WORKER;
    cache_key_t k;
    if (cache_key_compute(in, g, &k) != LS_OK)
        return LS_ERR_INVALID;
    if (fetch_answer(eng, NULL, NULL, &k.exact, k.model_tag, out, NULL) != FETCH_FOUND)
        return ENGINE_NEED_WORKER; /* the worker checks L1 again and counts the lookup */
    out->similarity = 1.0f;
    count_hit(eng, out);
    count_tier(eng, M_CACHE_LOOKUPS, TIER_L1);
    count_tier(eng, M_CACHE_HITS, TIER_L1);
    return LS_OK;
}

/* The guard signature of the text the semantic cache compares. */
static void guard_sig(const cache_key_input_t *in, cache_guard_sig_t *sig)
{
    const char *text;
    size_t len;
    cache_key_semantic_text(in, &text, &len);
    cache_guard_sig(text, len, sig);
}

/* A prompt's embedding: sparse when the embedder offers it (the index is then sparse,
 * see engine_create), else dense. */
typedef struct {
    float *dense;
    cache_sparse_t sparse;
} emb_vec_t;

/* Embeds the text the semantic cache compares into *v.  Returns false when there is
 * nothing to embed or no memory; free *v with emb_vec_free either way. */
static bool embed(engine_t *eng, const cache_key_input_t *in, emb_vec_t *v)
{
    const char *text;
    size_t len;
    cache_key_semantic_text(in, &text, &len);
    *v = (emb_vec_t){.dense = NULL, .sparse = CACHE_SPARSE_INIT};
    if (eng->emb->embed_sparse)
        return eng->emb->embed_sparse(eng->emb, text, len, &v->sparse) == LS_OK;
    v->dense = malloc(eng->emb->dim * sizeof(float));
    return v->dense && eng->emb->embed(eng->emb, text, len, v->dense) == LS_OK;
}

static void emb_vec_free(emb_vec_t *v)
{
    free(v->dense);
    cache_sparse_free(&v->sparse);
}

static bool sem_search(engine_t *eng, const cache_digest_t *scope, const emb_vec_t *v,
                       const cache_guard_sig_t *sig, float threshold, cache_digest_t *exact,
                       float *sim, cache_guard_reason_t *veto)
{
    if (!v->dense)
        return cache_semantic_search_sparse(eng->sem, scope, &v->sparse, sig, threshold,
                                            ls_now_us(), exact, sim, veto);
    return cache_semantic_search_guarded(eng->sem, scope, v->dense, sig, threshold, ls_now_us(),
                                         exact, sim, veto);
}

static void sem_add(engine_t *eng, const cache_key_t *k, const emb_vec_t *v,
                    const cache_guard_sig_t *sig, int64_t expires_us, int64_t now)
{
    if (!v->dense)
        cache_semantic_add_sparse(eng->sem, &k->scope, k->model_tag, &v->sparse, sig, &k->exact,
                                  expires_us, now);
    else
        cache_semantic_add_guarded(eng->sem, &k->scope, k->model_tag, v->dense, sig, &k->exact,
                                   expires_us, now);
}

int engine_lookup(engine_t *eng, cache_mc_t *mc, const cache_key_input_t *in, bool semantic,
                  float min_similarity, svc_span_t *span, engine_hit_t *out)
{
    memset(out, 0, sizeof(*out));
    uint64_t g = generation(eng, mc, span, in->model, false);
    cache_key_t k;
    if (cache_key_compute(in, g, &k) != LS_OK)
        return LS_ERR_INVALID;
    bool asked_mc = false;
    fetch_t f = fetch_answer(eng, mc, span, &k.exact, k.model_tag, out, &asked_mc);
    if (eng->cfg.l1_bytes > 0) /* an L1 that is off is no tier */
        count_tier(eng, M_CACHE_LOOKUPS, TIER_L1);
    if (asked_mc)
        count_tier(eng, M_CACHE_LOOKUPS, TIER_MC);
    if (f == FETCH_FOUND) {
        out->similarity = 1.0f;
        count_hit(eng, out);
        count_tier(eng, M_CACHE_HITS, out->from_l1 ? TIER_L1 : TIER_MC);
        return LS_OK;
    }
    if (semantic && eng->sem) {
        count_tier(eng, M_CACHE_LOOKUPS, TIER_SEM);
        float threshold = min_similarity > 0 ? min_similarity : eng->cfg.semantic_threshold;
        emb_vec_t vec;
        bool embedded = embed(eng, in, &vec);
        cache_digest_t cand;
        float sim = 0;
        cache_guard_sig_t sig;
        if (eng->cfg.semantic_guards)
            guard_sig(in, &sig);
        cache_guard_reason_t veto = CACHE_GUARD_OK;
        bool found =
            embedded && sem_search(eng, &k.scope, &vec, eng->cfg.semantic_guards ? &sig : NULL,
                                   threshold, &cand, &sim, &veto);
        if (veto != CACHE_GUARD_OK) {
            atomic_fetch_add(&eng->vetoes[veto], 1);
            svc_metric_add(eng->rep, M_CACHE_VETOES, VETO_LABELS[veto], 1, 1);
        }
        if (found) {
            f = fetch_answer(eng, mc, span, &cand, k.model_tag, out, NULL);
            if (f == FETCH_FOUND) {
                out->semantic = true;
                out->similarity = sim;
                count_hit(eng, out);
                count_tier(eng, M_CACHE_HITS, TIER_SEM);
                emb_vec_free(&vec);
                return LS_OK;
            }
            if (f == FETCH_MISSING) /* evicted or invalidated elsewhere: drop the pointer */
                cache_semantic_remove(eng->sem, &k.scope, &cand);
        }
        emb_vec_free(&vec);
    }
    memset(out, 0, sizeof(*out));
    atomic_fetch_add(&eng->misses, 1);
    return LS_OK;
}

int engine_store(engine_t *eng, cache_mc_t *mc, const cache_key_input_t *in,
                 const engine_answer_t *a, svc_span_t *span, bool *stored, const char **reason)
{
    *stored = false;
    *reason = "";
    uint32_t ttl = a->ttl_s ? a->ttl_s : eng->cfg.default_ttl_s;
    if (ttl > eng->cfg.max_ttl_s)
        ttl = eng->cfg.max_ttl_s;
    uint64_t g = generation(eng, mc, span, in->model, false);
    cache_key_t k;
    if (cache_key_compute(in, g, &k) != LS_OK)
        return LS_ERR_INVALID;

    cache_entry_t e = {0};
    e.key = k.exact;
    e.expires_wall_s = ls_wall_us() / 1000000 + ttl;
    e.finish_reason = a->finish_reason;
    e.prompt_tokens = a->prompt_tokens;
    e.completion_tokens = a->completion_tokens;
    e.text = a->text;
    e.text_len = a->text_len;
    e.model_version = a->model_version ? a->model_version : "";
    e.model_version_len = strlen(e.model_version);
    e.n_tokens = a->n_tokens;
    e.n_pieces = a->n_pieces;
    if (cache_entry_encoded_size(&e) > eng->cfg.max_value_bytes) {
        *reason = "answer larger than the configured max-value-bytes";
        return LS_OK;
    }
    /* Token ids then piece lengths, in one allocation. */
    uint8_t *words = NULL;
    if (a->n_tokens + a->n_pieces) {
        words = malloc(4 * (a->n_tokens + a->n_pieces));
        if (!words)
            return LS_ERR_NOMEM;
        cache_entry_set_tokens(words, a->token_ids, a->n_tokens);
        cache_entry_set_pieces(words + 4 * a->n_tokens, a->piece_lens, a->n_pieces);
    }
    e.token_bytes = words;
    e.piece_bytes = words ? words + 4 * a->n_tokens : NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = cache_entry_encode(&e, &buf, &len);
    free(words);
    if (rc != LS_OK)
        return rc;

    int64_t now = ls_now_us();
    int64_t expires_us = now + (int64_t)ttl * 1000000;
    size_t evicted = 0;
    bool in_l1 =
        cache_lru_put(eng->l1, &k.exact, k.model_tag, expires_us, buf, len, &evicted) == LS_OK;
    if (evicted)
        svc_metric_add(eng->rep, M_CACHE_EVICTIONS, NULL, 0, (double)evicted);
    char mkey[128];
    size_t mlen = answer_key(&k.exact, mkey);
    int mrc = mc_set(eng, mc, span, mkey, mlen, buf, len, ttl, false);
    free(buf);
    bool in_mc = mrc == LS_OK;
    if (!in_mc && in_l1)
        *reason = mrc == LS_ERR_FULL ? "memcached refused the size: L1 only"
                                     : "memcached unavailable: L1 only";
    else if (!in_mc)
        *reason = mrc == LS_ERR_FULL ? "memcached refused the size and L1 is off or too small"
                                     : "memcached unavailable and L1 is off or too small";
    *stored = in_l1 || in_mc;
    if (*stored) {
        atomic_fetch_add(&eng->stores, 1);
        svc_metric_add(eng->rep, M_CACHE_STORES, NULL, 0, 1);
        if (a->semantic && eng->sem) {
            emb_vec_t vec;
            cache_guard_sig_t sig;
            if (eng->cfg.semantic_guards)
                guard_sig(in, &sig);
            if (embed(eng, in, &vec))
                sem_add(eng, &k, &vec, eng->cfg.semantic_guards ? &sig : NULL, expires_us, now);
            emb_vec_free(&vec);
        }
    }
    return LS_OK;
}

int engine_invalidate_key(engine_t *eng, cache_mc_t *mc, const cache_key_input_t *in,
                          svc_span_t *span, uint64_t *removed)
{
    *removed = 0;
    uint64_t g = generation(eng, mc, span, in->model, false);
    cache_key_t k;
    if (cache_key_compute(in, g, &k) != LS_OK)
        return LS_ERR_INVALID;
    bool was = cache_lru_remove(eng->l1, &k.exact);
    if (eng->sem)
        cache_semantic_remove(eng->sem, &k.scope, &k.exact);
    char mkey[128];
    size_t mlen = answer_key(&k.exact, mkey);
    int rc = mc_delete(eng, mc, span, mkey, mlen);
    *removed = (was || rc == LS_OK) ? 1 : 0;
    /* A copy memcached still holds would come back when it returns: say so. */
    return rc == LS_OK || rc == LS_ERR_NOT_FOUND ? LS_OK : LS_ERR_UNAVAILABLE;
}

int engine_invalidate_model(engine_t *eng, cache_mc_t *mc, const char *model, svc_span_t *span,
                            uint64_t *removed)
{
    uint64_t g = cache_gen_bump(eng->gen, model, (uint64_t)ls_wall_us(), ls_now_us());
    uint64_t tag = cache_key_model_tag(model);
    size_t n = cache_lru_remove_tag(eng->l1, tag);
    if (eng->sem)
        n += cache_semantic_remove_tag(eng->sem, tag);
    *removed = n;
    /* Written through the merge path so a newer value from another instance is kept;
     * if memcached is down the bump stays marked and the idle worker writes it later. */
    uint64_t now_gen = generation(eng, mc, span, model, true);
    LS_LOG_INFO("cache", "model invalidated model=\"%s\" generation=%" PRIu64 " removed=%zu", model,
                now_gen > g ? now_gen : g, n);
    return LS_OK;
}

void engine_stats(engine_t *eng, engine_stats_t *out)
{
    cache_lru_stats_t ls;
    cache_lru_stats(eng->l1, &ls);
    out->hits = atomic_load(&eng->hits);
    out->misses = atomic_load(&eng->misses);
    out->l1_hits = atomic_load(&eng->l1_hits);
    out->semantic_hits = atomic_load(&eng->semantic_hits);
    for (int r = 0; r < CACHE_GUARD_REASONS; r++)
        out->vetoes[r] = atomic_load(&eng->vetoes[r]);
    out->stores = atomic_load(&eng->stores);
    out->errors = atomic_load(&eng->errors);
    out->degraded = cache_breaker_degraded(eng->brk);
    out->entries = ls.entries + (eng->sem ? cache_semantic_count(eng->sem) : 0);
}

bool engine_degraded(engine_t *eng)
{
    return cache_breaker_degraded(eng->brk);
}

void engine_count_error(engine_t *eng)
{
    atomic_fetch_add(&eng->errors, 1);
}

void engine_count_miss(engine_t *eng)
{
    atomic_fetch_add(&eng->misses, 1);
}

const engine_config_t *engine_config(const engine_t *eng)
{
    return &eng->cfg;
}

/* ---- idle duties: probes and generation write-backs --------------------------------- */

static void on_idle(void *arg, cache_mc_t *mc)
{
    engine_t *eng = arg;
    if (pthread_mutex_trylock(&eng->idle_mu) != 0)
        return;
    int64_t now = ls_now_us();
    for (size_t s = 0; s < eng->n_servers; s++) {
        if (!cache_breaker_is_open(eng->brk, s) || !cache_breaker_allow(eng->brk, s, now))
            continue;
        uint8_t *v = NULL;
        size_t n = 0;
        const char *key = eng->probe_keys[s];
        int64_t t0 = ls_now_us();
        int rc = cache_mc_get(mc, key, strlen(key), &v, &n);
        observe_mc(eng, OP_GET, t0);
        free(v);
        note(eng, mc, s, rc);
    }
    char model[1024];
    for (int i = 0; i < 16 && cache_gen_next_pending(eng->gen, model, sizeof(model)); i++) {
        generation(eng, mc, NULL, model, true);
        if (cache_breaker_degraded(eng->brk))
            break;
    }
    pthread_mutex_unlock(&eng->idle_mu);
}

/* ---- life ---------------------------------------------------------------------- */

/* The configured embedder, or NULL with the reason logged. */
static cache_embedder_t *create_embedder(const engine_config_t *cfg)
{
    if (cfg->embedder == ENGINE_EMBED_MODEL) {
        char err[512];
        cache_embedder_t *e = cache_embed_model_create(&cfg->embed_model, err, sizeof(err));
        if (!e)
            LS_LOG_ERROR("cache", "cannot create the model embedder reason=\"%s\"", err);
        return e;
    }
    cache_embed_ngram_config_t ec;
    cache_embed_ngram_config_init(&ec);
    ec.dim = cfg->embed_dim;
    ec.stem = cfg->stem;
    if (load_lexicon(cfg->wordnet, &ec.lex) != LS_OK)
        return NULL;
    cache_embedder_t *e = cache_embed_ngram_create_cfg(&ec);
    if (!e)
        LS_LOG_ERROR("cache", "n-gram hash space must be a power of two from 64 to 16777216 dim=%zu",
                     cfg->embed_dim);
    return e;
}

engine_t *engine_create(const engine_config_t *cfg)
{
    cache_mc_t *mc = cache_mc_create(&cfg->pool.mc);
    if (!mc) {
        LS_LOG_ERROR("cache", "invalid memcached configuration servers=\"%s\"",
                     cfg->pool.mc.servers);
        return NULL;
    }
    engine_t *eng = ls_xcalloc(1, sizeof(*eng));
    eng->cfg = *cfg;
    eng->rep = cfg->reporter;
    svc_gauge_init(&eng->breaker_open, true);
    svc_gauge_init(&eng->degraded, true);
    breaker_moved(eng, 0); /* both 0 from the start, not absent */
    pthread_mutex_init(&eng->idle_mu, NULL);
    eng->n_servers = cache_mc_server_count(mc);
    eng->probe_keys = ls_xcalloc(eng->n_servers, sizeof(*eng->probe_keys));
    size_t found = 0;
    for (unsigned i = 0; found < eng->n_servers && i < 100000; i++) {
        char key[48];
        int kl = snprintf(key, sizeof(key), KEY_PREFIX "probe:%u", i);
        size_t s = cache_mc_server_of(mc, key, (size_t)kl);
        if (!eng->probe_keys[s][0]) {
            memcpy(eng->probe_keys[s], key, (size_t)kl + 1);
            found++;
        }
    }
    for (size_t s = 0; s < eng->n_servers; s++)
        if (!eng->probe_keys[s][0]) /* a server with no share of the ring: probe any key */
            snprintf(eng->probe_keys[s], sizeof(eng->probe_keys[s]), KEY_PREFIX "probe");
    cache_mc_destroy(mc);

    eng->l1 = cache_lru_create(cfg->l1_bytes);
    eng->gen = cache_gen_create(MAX_MODELS);
    eng->brk = cache_breaker_create(eng->n_servers, cfg->breaker_threshold, cfg->probe_interval_us);
    if (cfg->semantic) {
        eng->emb = create_embedder(cfg);
        if (!eng->emb)
            goto out_free;
        /* an embedder with sparse vectors gets the inverted index (cache_semantic.h) */
        eng->sem = eng->emb->embed_sparse
                       ? cache_semantic_create_sparse(eng->emb->dim, cfg->semantic_max_per_scope,
                                                      cfg->semantic_max_scopes)
                       : cache_semantic_create(eng->emb->dim, cfg->semantic_max_per_scope,
                                               cfg->semantic_max_scopes);
    }
    cache_pool_config_t pc = cfg->pool;
    pc.on_idle = on_idle;
    pc.idle_arg = eng;
    pc.idle_interval_us = cfg->probe_interval_us / 2 > 10000 ? cfg->probe_interval_us / 2 : 10000;
    if (pc.idle_interval_us > 100000)
        pc.idle_interval_us = 100000;
    eng->pool = cache_pool_create(&pc);
    if (!eng->pool) {
        LS_LOG_ERROR("cache", "cannot start memcached workers workers=%d", pc.workers);
        goto out_free;
    }
    return eng;
out_free:
    engine_destroy(eng);
    return NULL;
}

int engine_submit(engine_t *eng, cache_job_fn_t fn, void *arg)
{
    return cache_pool_submit(eng->pool, fn, arg);
}

void engine_shutdown(engine_t *eng)
{
    if (eng->pool)
        cache_pool_shutdown(eng->pool);
}

void engine_destroy(engine_t *eng)
{
    if (!eng)
        return;
    cache_pool_destroy(eng->pool);
    cache_semantic_destroy(eng->sem);
    cache_embedder_destroy(eng->emb);
    cache_breaker_destroy(eng->brk);
    cache_gen_destroy(eng->gen);
    cache_lru_destroy(eng->l1);
    free(eng->probe_keys);
    pthread_mutex_destroy(&eng->idle_mu);
    free(eng);
}
