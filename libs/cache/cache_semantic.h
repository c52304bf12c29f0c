/*
 * cache_semantic.h - the in-process semantic index: per scope, (embedding -> exact key)
 * entries searched by cosine similarity.
 *
 * A scope is a cache_key_t.scope digest (tenant, model, key generation, sampling
 * parameters, conversation history): a search looks only inside the scope it names,
 * so a semantic hit can never cross tenants or models by construction.  The index
 * holds keys, not answers; the answer is fetched by the exact key from L1 or memcached.
 *
 * Bounded: at most max_per_scope entries per scope (a full scope evicts the entry that
 * expires first) and at most max_scopes scopes (the least recently used scope goes).
 * Entries expire with their answer's TTL (expires_us, monotonic) and are skipped, then
 * swept, once expired.
 *
 * An index holds dense vectors (cache_semantic_create; the _add, _add_guarded, _search
 * and _search_guarded calls) or sparse ones (cache_semantic_create_sparse; the _sparse
 * calls), as its embedder gives them (cache_embed.h); calling the other kind's functions
 * is a programming error and aborts.  Both search exactly: the answer is the one a
 * comparison with every entry gives.  A dense search reads every entry of the scope; a
 * sparse one reads only the inverted-index postings that can reach the threshold.
 *
 * Thread-safe: a read-write lock; searches share it, changes take it alone.
 */
#ifndef CACHE_SEMANTIC_H
#define CACHE_SEMANTIC_H

#include "cache/cache_guard.h"
#include "cache/cache_key.h"
#include "cache/cache_sparse.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The least cosine similarity for a semantic hit unless configured otherwise (the cache
 * service's --semantic-threshold default; llmserve-semcachebench's). */
#define CACHE_SEMANTIC_DEFAULT_THRESHOLD 0.80f

typedef struct cache_semantic cache_semantic_t;

/* Creates an index of dim-float vectors.  Returns the index (aborts when out of memory:
 * a control structure). */
cache_semantic_t *cache_semantic_create(size_t dim, size_t max_per_scope, size_t max_scopes);

/* Creates an index of sparse unit vectors with indexes below dim.  Returns the index
 * (aborts when out of memory: a control structure). */
cache_semantic_t *cache_semantic_create_sparse(size_t dim, size_t max_per_scope, size_t max_scopes);

/* Whether idx was made by cache_semantic_create_sparse. */
bool cache_semantic_is_sparse(const cache_semantic_t *idx);

/* Frees everything.  NULL is a no-op. */
void cache_semantic_destroy(cache_semantic_t *idx);

/* Adds vec (copied; a unit vector) for exact key `exact` in scope, expiring at
 * expires_us, replacing an entry for the same exact key and sweeping the scope's
 * entries expired at now_us.  Returns LS_OK or LS_ERR_NOMEM (the new entry is then not
 * added). */
int cache_semantic_add(cache_semantic_t *idx, const cache_digest_t *scope, uint64_t model_tag,
                       const float *vec, const cache_digest_t *exact, int64_t expires_us,
                       int64_t now_us);

/* Finds the unexpired entry of scope most similar to vec.  Returns true and fills
 * *exact and *similarity when its similarity is at least min_similarity. */
bool cache_semantic_search(cache_semantic_t *idx, const cache_digest_t *scope, const float *vec,
                           float min_similarity, int64_t now_us, cache_digest_t *exact,
                           float *similarity);

/* cache_semantic_add with the stored prompt's guard signature (copied), which
 * cache_semantic_search_guarded checks before the entry may answer a query. */
int cache_semantic_add_guarded(cache_semantic_t *idx, const cache_digest_t *scope,
                               uint64_t model_tag, const float *vec, const cache_guard_sig_t *sig,
                               const cache_digest_t *exact, int64_t expires_us, int64_t now_us);

/* cache_semantic_search where an entry stored with a guard signature can answer only if
 * cache_guard_check(its signature, sig) passes: the result is the most similar entry at
 * or above min_similarity that the guards let through.  *veto (NULL: not wanted) is
 * the reason the guards turned down an entry more similar than the result (or than
 * min_similarity when there is none), else CACHE_GUARD_OK.  sig NULL: no guards. */
bool cache_semantic_search_guarded(cache_semantic_t *idx, const cache_digest_t *scope,
                                   const float *vec, const cache_guard_sig_t *sig,
                                   float min_similarity, int64_t now_us, cache_digest_t *exact,
                                   float *similarity, cache_guard_reason_t *veto);

/* The most (index, value) pairs a sparse entry may have: its memory grows with them (16
 * bytes a pair, against 2 KiB for a 512-float dense entry), and the prompt comes from the
 * network.  A prompt of several hundred words reaches it. */
#define CACHE_SEMANTIC_MAX_PAIRS 4096

/* cache_semantic_add_guarded for a sparse index: vec (copied) must have ascending
 * indexes below the index's dim and at least one entry, else LS_ERR_INVALID, and at
 * most CACHE_SEMANTIC_MAX_PAIRS, else LS_ERR_FULL.  Returns LS_OK, LS_ERR_INVALID,
 * LS_ERR_FULL or LS_ERR_NOMEM (the new entry is then not added; the index is
 * unchanged but for LS_ERR_NOMEM, after which expired entries may have been swept). */
int cache_semantic_add_sparse(cache_semantic_t *idx, const cache_digest_t *scope,
                              uint64_t model_tag, const cache_sparse_t *vec,
                              const cache_guard_sig_t *sig, const cache_digest_t *exact,
                              int64_t expires_us, int64_t now_us);

/* cache_semantic_search_guarded for a sparse index, with the answer and veto a dense
 * index holding the same vectors gives (of entries equally similar, both take the one
 * added into the lowest free slot).  Borrows vec for the call.  Out of memory for the
 * search's scratch space (a per-thread buffer) is a miss. */
bool cache_semantic_search_sparse(cache_semantic_t *idx, const cache_digest_t *scope,
                                  const cache_sparse_t *vec, const cache_guard_sig_t *sig,
                                  float min_similarity, int64_t now_us, cache_digest_t *exact,
                                  float *similarity, cache_guard_reason_t *veto);

/* Removes the entry for exact key `exact` in scope; returns true when there was one. */
bool cache_semantic_remove(cache_semantic_t *idx, const cache_digest_t *scope,
                           const cache_digest_t *exact);

/* Removes every scope of the model; returns the entries removed. */
size_t cache_semantic_remove_tag(cache_semantic_t *idx, uint64_t model_tag);

/* Entries held, all scopes. */
size_t cache_semantic_count(cache_semantic_t *idx);

/* Scopes held. */
size_t cache_semantic_scopes(cache_semantic_t *idx);

/* Bytes the index holds for its scopes and entries (vectors, postings, guard
 * signatures), allocator overhead aside. */
size_t cache_semantic_bytes(cache_semantic_t *idx);

#endif
