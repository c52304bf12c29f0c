/*
 * cache_embed.h - turns a prompt into an L2-normalized vector for the semantic cache.
 *
 * One interface, several embedders: the n-gram embedder (cache_embed_ngram.c) needs no
 * model and no download; a model-based embedder can replace it by filling the same
 * struct.  Vectors from different embedders (or dimensions) are not comparable, so the
 * semantic index is created for one embedder's dim.
 *
 * An embedder whose vectors have few non-zero entries (the n-gram one: a feature per
 * word, word pair and trigram in a space of up to 2^24) also offers them sparse
 * (embed_sparse), and the cache then indexes them sparse (cache_semantic_create_sparse);
 * a dense embedder leaves embed_sparse NULL and is indexed dense.
 *
 * Thread-safe: embed may be called from any number of threads at once.
 */
#ifndef CACHE_EMBED_H
#define CACHE_EMBED_H

#include "cache/cache_sparse.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct cache_embedder cache_embedder_t;

struct cache_embedder {
    const char *name; /* for logs, e.g. "ngram" */
    size_t dim;       /* floats per dense vector; the index space of sparse ones */
    /* Writes the unit-length embedding of text[0..len) to out (dim floats).  Returns
     * LS_OK, or LS_ERR_INVALID when the text has nothing to embed (then out is all
     * zeros and must not be indexed). */
    int (*embed)(const cache_embedder_t *e, const char *text, size_t len, float *out);
    /* Frees the embedder. */
    void (*destroy)(cache_embedder_t *e);
    /* The vector embed gives, as its non-zero entries (indexes below dim, ascending),
     * written to out: out's arrays are grown as needed (caller owns out; free with
     * cache_sparse_free).  Returns LS_OK, LS_ERR_INVALID when the text has nothing to
     * embed (out is then empty and must not be indexed), or LS_ERR_NOMEM.  NULL for an
     * embedder whose vectors are dense. */
    int (*embed_sparse)(const cache_embedder_t *e, const char *text, size_t len,
                        cache_sparse_t *out);
};

/* Hashed character and word n-grams: lowercased ASCII letters and digits form words
 * (bytes of 0x80 and above count as letters, so UTF-8 text works; a contraction is
 * its two words: "don't" is "do not", "what's" is "what is"; greetings, thanks and
 * hedges such as "hi", "thanks" or "just" give no feature); the features are
 * each word (weight 1, function words 0.25), each word pair in order (0.5) and each
 * character trigram of " word " (0.35), hashed with a sign into dim buckets, then
 * L2-normalized.  Offers embed_sparse: a prompt has a few hundred features, so in a big
 * space (CACHE_EMBED_NGRAM_SPACE) the vector is sparse and few features collide.  dim
 * must be a power of two from 64 to 2^24; returns NULL otherwise. */
cache_embedder_t *cache_embed_ngram_create(size_t dim);

#define CACHE_EMBED_NGRAM_MAX_DIM ((size_t)1 << 24)

/* The n-gram hash space the cache service uses unless configured otherwise (its
 * --embed-dim default): big enough that features seldom collide (see README, "Semantic
 * figures"), and sparse vectors cost nothing per bucket. */
#define CACHE_EMBED_NGRAM_SPACE ((size_t)1 << 20)

/* The n-gram embedder's options: cache_embed_ngram_create is this with lex NULL and
 * stem false. */
typedef struct cache_lexicon cache_lexicon_t;
typedef struct {
    size_t dim;           /* as above; default 512 */
    cache_lexicon_t *lex; /* content words first go through the lexicon (lemma, spelling,
                             synonym: cache_lexicon.h); taken, freed with the embedder or
                             at once when the embedder is refused; default NULL */
    bool stem;            /* then through the Snowball English stemmer; default false */
} cache_embed_ngram_config_t;

/* Fills cfg with the defaults above. */
void cache_embed_ngram_config_init(cache_embed_ngram_config_t *cfg);

/* The n-gram embedder with options; NULL when dim is refused (as above). */
cache_embedder_t *cache_embed_ngram_create_cfg(const cache_embed_ngram_config_t *cfg);

/* Calls e->destroy; NULL is a no-op. */
void cache_embedder_destroy(cache_embedder_t *e);

/* Cosine similarity of two unit vectors of dim floats (their dot product). */
float cache_embed_cosine(const float *a, const float *b, size_t dim);

#endif
