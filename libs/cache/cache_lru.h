/*
 * cache_lru.h - the in-process L1: encoded answers by key digest, least recently used
 * out first, bounded in bytes.
 *
 * Every entry is charged its value bytes plus its bookkeeping, so max_bytes bounds the
 * memory the L1 really holds.  Entries carry an expiry (monotonic microseconds) equal
 * to their memcached TTL, so L1 never outlives the tier behind it, and a model tag so
 * that invalidating a model can drop its entries.
 *
 * Thread-safe: one mutex guards the table and the list; values are copied in and out
 * under it, so no caller ever holds a pointer into the cache.
 */
#ifndef CACHE_LRU_H
#define CACHE_LRU_H

#include "cache/cache_key.h"

#include <stddef.h>
#include <stdint.h>

typedef struct cache_lru cache_lru_t;

/* Creates an L1 holding at most max_bytes (0 = disabled: puts are refused, gets miss).
 * Returns the cache (aborts when out of memory: a control structure). */
cache_lru_t *cache_lru_create(size_t max_bytes);

/* Frees every entry and the cache.  NULL is a no-op. */
void cache_lru_destroy(cache_lru_t *lru);

/* Copies the value for key into a new buffer (caller owns *val; free()) and marks the
 * entry recently used.  An entry past its expiry at now_us is removed and missed.
 * Returns LS_OK, LS_ERR_NOT_FOUND, or LS_ERR_NOMEM. */
int cache_lru_get(cache_lru_t *lru, const cache_digest_t *key, int64_t now_us, uint8_t **val,
                  size_t *len);

/* Stores a copy of val[0..len) under key (replacing any entry), expiring at expires_us,
 * tagged with model_tag, evicting least recently used entries to make room; *evicted
 * (when evicted is non-NULL) says how many went, 0 on failure.  Returns LS_OK,
 * LS_ERR_FULL when the entry alone is larger than the cache, or LS_ERR_NOMEM (state
 * unchanged). */
int cache_lru_put(cache_lru_t *lru, const cache_digest_t *key, uint64_t model_tag,
                  int64_t expires_us, const void *val, size_t len, size_t *evicted);

/* Removes the entry for key; returns true when there was one. */
bool cache_lru_remove(cache_lru_t *lru, const cache_digest_t *key);

/* Removes every entry tagged model_tag; returns how many. */
size_t cache_lru_remove_tag(cache_lru_t *lru, uint64_t model_tag);

typedef struct {
    size_t entries;
    size_t bytes; /* charged bytes held */
    size_t max_bytes;
    uint64_t evictions; /* entries pushed out for room since creation */
} cache_lru_stats_t;

void cache_lru_stats(cache_lru_t *lru, cache_lru_stats_t *out);

/* Bytes an entry with a value of len bytes is charged. */
size_t cache_lru_charge(size_t len);

#endif
