/*
 * engine.h - the cache service's tiers put together: generations, keys, L1, memcached
 * (through the worker pool and circuit breakers) and the semantic index.
 *
 * Two kinds of entry points.  engine_lookup_fast runs on a gRPC completion-queue
 * thread: memory only (L1), never memcached; it answers an L1 hit or says the lookup
 * needs a worker.  Everything else takes the calling worker's memcached client and runs
 * on a pool thread (engine_submit puts jobs there).
 *
 * Reports (libs/svc/metric_names.h, through engine_config_t.reporter): lookups and
 * hits by tier, counted once per request and tier.  l1 counts the L1 check of the
 * exact key: a completion-queue lookup counts it only when it hits, since on a miss the
 * worker checks L1 again and counts then.  memcached counts the gets that went out
 * (not those its breaker answered at once); semantic counts the searches of the index
 * after an exact miss, and its hits whatever tier held the answer it pointed to; the
 * guards' vetoes by reason count each search whose answer a veto changed.  Also
 * stores, L1 evictions, each memcached call's time (op get: answers, generations,
 * probes; op set: answers and generations), and the breaker-open and degraded gauges
 * (both 1 while any server's breaker is open: that is what degraded means here).
 *
 * Thread-safe: every function may be called from any thread at once.
 */
#ifndef CACHE_ENGINE_H
#define CACHE_ENGINE_H

#include "cache/cache_embed_model.h"
#include "cache/cache_entry.h"
#include "cache/cache_key.h"
#include "cache/cache_pool.h"
#include "cache/cache_semantic.h"
#include "svc/reporter.h"
#include "svc/tracer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct engine engine_t;

/* Where the semantic index's vectors come from. */
typedef enum {
    ENGINE_EMBED_NGRAM, /* hashed n-grams of embed_dim floats (cache_embed.h) */
    ENGINE_EMBED_MODEL, /* a served model's Inference.Embed (cache_embed_model.h) */
} engine_embedder_t;

typedef struct {
    size_t l1_bytes;               /* L1 size in bytes; 0 disables it */
    uint32_t default_ttl_s;        /* TTL of a store that names none */
    uint32_t max_ttl_s;            /* longer TTLs are clamped to this */
    size_t max_value_bytes;        /* largest encoded answer stored */
    bool semantic;                 /* semantic cache on */
    float semantic_threshold;      /* least cosine similarity for a semantic hit */
    bool semantic_guards;          /* veto semantic hits whose numbers, units, negation,
                                      names or direction differ (cache_guard.h) */
    size_t semantic_max_per_scope; /* entries per scope */
    size_t semantic_max_scopes;    /* scopes held */
    size_t embed_dim;              /* n-gram hash space, buckets (power of two); the
                                      vectors are sparse in it (cache_embed.h) */
    const char *wordnet;           /* WordNet dictionary directory for the n-gram embedder's
                                      lemmas, spelling and synonyms (cache_lexicon.h),
                                      borrowed; "auto": /usr/share/wordnet when it is there,
                                      else none (logged); "none" or "": none; a directory
                                      that cannot be loaded fails engine_create */
    bool stem;                     /* Snowball stems of content words */
    engine_embedder_t embedder;    /* the semantic index's embedder; its dim sizes the index */
    /* For ENGINE_EMBED_MODEL; strings borrowed for engine_create. */
    cache_embed_model_config_t embed_model;
    int64_t gen_refresh_us;        /* how long a model generation read is trusted */
    int breaker_threshold;         /* failures in a row that mark a server down */
    int64_t probe_interval_us;     /* how often a down server is tried */
    cache_pool_config_t pool;      /* workers and memcached client settings */
    svc_reporter_t *reporter;      /* metrics (see "Reports" above), borrowed; NULL = none */
} engine_config_t;

/* Defaults: 64 MiB L1, TTL 3600 s (max 86400 s), 512 KiB values, semantic on at
 * ENGINE_DEFAULT_THRESHOLD with guards, 2048 entries per scope and 4096 scopes, n-gram
 * features hashed into 2^20 buckets (sparse) with WordNet "auto" and stems (the model
 * embedder: no target, the served model, 2000 ms calls, plaintext), generations trusted
 * 1 s, 2 failures open a breaker, probes every 500 ms, 4 workers, memcached on
 * 127.0.0.1:11211 with 50 ms timeouts. */
void engine_config_init(engine_config_t *cfg);

#define ENGINE_DEFAULT_THRESHOLD CACHE_SEMANTIC_DEFAULT_THRESHOLD

/* Creates the engine and starts its workers.  Returns NULL (with a logged reason) when
 * the memcached configuration is invalid, the embedder cannot be made (for the model
 * embedder: its inference instance did not answer the probe) or threads cannot start.
 * With the model embedder, blocks for the probe (up to embed_model.timeout_ms). */
engine_t *engine_create(const engine_config_t *cfg);

/* Stops the workers after the jobs queued have run.  Idempotent. */
void engine_shutdown(engine_t *eng);

/* Shuts down and frees.  NULL is a no-op. */
void engine_destroy(engine_t *eng);

/* Queues fn(arg, mc) on a worker.  Same returns as cache_pool_submit. */
int engine_submit(engine_t *eng, cache_job_fn_t fn, void *arg);

/* A lookup's outcome.  On a hit, entry points into buf, which the result owns. */
typedef struct {
    bool hit;
    bool semantic;    /* matched through the semantic index */
    bool from_l1;     /* the answer came from L1 (else memcached) */
    float similarity; /* 1 for exact hits */
    cache_entry_t entry;
    uint8_t *buf;
} engine_hit_t;

/* Frees what a result owns and zeroes it. */
void engine_hit_clear(engine_hit_t *h);

/* Returned by engine_lookup_fast when only a worker can answer. */
#define ENGINE_NEED_WORKER 1

/* Completion-queue-thread lookup: L1 only, and only when the model's generation is
 * fresh.  Returns LS_OK with out->hit true on an L1 exact hit, ENGINE_NEED_WORKER, or
 * LS_ERR_INVALID for a key that cannot be computed.  Counts the hit; a worker result
 * is counted by engine_lookup. */
int engine_lookup_fast(engine_t *eng, const cache_key_input_t *in, engine_hit_t *out);

/* Full lookup on a worker: L1, memcached, then (when semantic and enabled) the
 * semantic index at min_similarity (0 = the configured threshold).  memcached being
 * down or slow is a miss.  Returns LS_OK (out->hit says which) or LS_ERR_INVALID.
 *
 * span, here and below: the operation's span, borrowed for the call (NULL: none); each
 * memcached call that goes out gets a child span (op_span.h). */
int engine_lookup(engine_t *eng, cache_mc_t *mc, const cache_key_input_t *in, bool semantic,
                  float min_similarity, svc_span_t *span, engine_hit_t *out);

/* An answer to store; strings borrowed for the call. */
typedef struct {
    const char *text;
    size_t text_len;
    const int32_t *token_ids;
    size_t n_tokens;
    const uint32_t *piece_lens; /* byte length of each token's text; validated by the caller */
    size_t n_pieces;
    int32_t finish_reason;
    uint32_t prompt_tokens, completion_tokens;
    const char *model_version;
    uint32_t ttl_s; /* 0 = default; clamped to max */
    bool semantic;  /* also index the prompt */
} engine_answer_t;

/* Stores an answer in L1 and memcached (and the semantic index).  Sets *stored and a
 * reason (static text, "" when fully stored).  Returns LS_OK or LS_ERR_INVALID. */
int engine_store(engine_t *eng, cache_mc_t *mc, const cache_key_input_t *in,
                 const engine_answer_t *a, svc_span_t *span, bool *stored, const char **reason);

/* Removes one answer from every tier; *removed is 1 when some tier held it. */
int engine_invalidate_key(engine_t *eng, cache_mc_t *mc, const cache_key_input_t *in,
                          svc_span_t *span, uint64_t *removed);

/* Moves model to a new key generation and drops its in-process entries; *removed
 * counts those (memcached's cannot be counted). */
int engine_invalidate_model(engine_t *eng, cache_mc_t *mc, const char *model, svc_span_t *span,
                            uint64_t *removed);

typedef struct {
    uint64_t hits, misses, l1_hits, semantic_hits, stores, errors;
    uint64_t vetoes[CACHE_GUARD_REASONS]; /* semantic hits the guards turned down, by
                                             reason ([CACHE_GUARD_OK] unused) */
    bool degraded;
    uint64_t entries;
} engine_stats_t;

void engine_stats(engine_t *eng, engine_stats_t *out);

/* True while any memcached server's breaker is open (the engine runs degraded). */
bool engine_degraded(engine_t *eng);

/* Counts an error answered to a client. */
void engine_count_error(engine_t *eng);

/* Counts a lookup answered as a miss without looking (policy or non-deterministic). */
void engine_count_miss(engine_t *eng);

/* The configuration in use (borrowed for the engine's life). */
const engine_config_t *engine_config(const engine_t *eng);

#endif
