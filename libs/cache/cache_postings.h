/*
 * cache_postings.h - an inverted index of sparse unit vectors, for the semantic index's
 * sparse scopes: for each index (feature) of the space, the list of (slot, value) of the
 * vectors that hold it, and a threshold search that returns every vector whose dot
 * product with a query reaches a threshold, exactly as a full scan would.
 *
 * Vectors are named by slot numbers the caller chooses (small integers: the slot arrays
 * are sized by the largest).  Removal is eager: the slot's postings leave their lists at
 * once, so a freed slot number can be given to a new vector straight away.
 *
 * Not thread-safe: the caller locks.  Searches only read the index (their scratch space
 * is per thread), so any number may run at once while nothing changes it.
 */
#ifndef CACHE_POSTINGS_H
#define CACHE_POSTINGS_H

#include "cache/cache_sparse.h"

#include <stddef.h>
#include <stdint.h>

typedef struct cache_postings cache_postings_t;

typedef struct {
    uint32_t slot;
    float similarity; /* the dot product with the query, as cache_sparse_dot gives it */
} cache_postings_hit_t;

/* Creates an empty index.  Returns it (aborts when out of memory: a control structure). */
cache_postings_t *cache_postings_create(void);

/* Frees everything.  NULL is a no-op. */
void cache_postings_destroy(cache_postings_t *p);

/* Adds v (copied) under slot, which must not hold a vector.  Returns LS_OK or
 * LS_ERR_NOMEM (then nothing was added). */
int cache_postings_add(cache_postings_t *p, uint32_t slot, const cache_sparse_t *v);

/* Removes the vector of slot; a slot without one is a no-op. */
void cache_postings_remove(cache_postings_t *p, uint32_t slot);

/* Vectors held. */
size_t cache_postings_count(const cache_postings_t *p);

/* Bytes held for vectors, postings and tables (for the benchmark's memory figure). */
size_t cache_postings_bytes(const cache_postings_t *p);

/* Every vector whose dot product with q (a unit vector) is at least min_similarity, with
 * that dot product, in no particular order.  Exact: the same set, with the same values,
 * that a scan of every vector with cache_sparse_dot finds.  Returns the count and points
 * *hits at them: a per-thread buffer the caller may reorder, valid until the thread's
 * next search.  Returns 0 with *hits NULL when out of memory for that buffer (a miss,
 * which the cache may always answer). */
size_t cache_postings_search(const cache_postings_t *p, const cache_sparse_t *q,
                             float min_similarity, cache_postings_hit_t **hits);

#endif
