/*
 * cache_sparse.h - a sparse vector: the non-zero entries of a vector in a large index
 * space, as (index, value) pairs in ascending index order with no index twice.
 *
 * The n-gram embedder hashes a prompt's hundred or so features into a space of up to
 * 2^24 buckets; kept sparse, such a vector costs bytes per feature instead of a float
 * per bucket, and two of them are compared in time proportional to their features.
 *
 * Not thread-safe: a vector is owned by one thread at a time; reading one from several
 * threads at once is fine.
 */
#ifndef CACHE_SPARSE_H
#define CACHE_SPARSE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t *index; /* ascending, no repeats */
    float *value;    /* value[i] belongs to index[i]; none is zero */
    size_t n;        /* pairs held */
    size_t cap;      /* room in index and value */
} cache_sparse_t;

/* An empty vector with no memory: the state cache_sparse_free leaves. */
#define CACHE_SPARSE_INIT                                                                          \
    {                                                                                              \
        NULL, NULL, 0, 0                                                                           \
    }

/* Makes room for n pairs (keeping those held).  Returns LS_OK, or LS_ERR_NOMEM with v
 * as it was. */
int cache_sparse_reserve(cache_sparse_t *v, size_t n);

/* Copies src into dst (dst's old pairs are dropped).  Returns LS_OK or LS_ERR_NOMEM
 * (dst unchanged). */
int cache_sparse_copy(cache_sparse_t *dst, const cache_sparse_t *src);

/* Frees the arrays and leaves v empty; a NULL v is a no-op. */
void cache_sparse_free(cache_sparse_t *v);

/* The dot product (the cosine similarity of two unit vectors).  The products of shared
 * indexes are summed in ascending index order, so the result equals, bit for bit, the
 * dense dot product (cache_embed_cosine) of the same vectors written out densely. */
float cache_sparse_dot(const cache_sparse_t *a, const cache_sparse_t *b);

#endif
