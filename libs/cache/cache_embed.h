/*
 * cache_embed.h - turns a prompt into an L2-normalized vector for the semantic cache.
 *
 * One interface, several embedders: the n-gram embedder (cache_embed_ngram.c) needs no
 * model and no download; a model-based embedder can replace it by filling the same
 * struct.  Vectors from different embedders (or dimensions) are not comparable, so the
 * semantic index is created for one embedder's dim.
 *
 * Thread-safe: embed may be called from any number of threads at once.
 */
#ifndef CACHE_EMBED_H
#define CACHE_EMBED_H

#include <stdbool.h>
#include <stddef.h>

typedef struct cache_embedder cache_embedder_t;

struct cache_embedder {
    const char *name; /* for logs, e.g. "ngram" */
    size_t dim;       /* floats per vector */
    /* Writes the unit-length embedding of text[0..len) to out (dim floats).  Returns
     * LS_OK, or LS_ERR_INVALID when the text has nothing to embed (then out is all
     * zeros and must not be indexed). */
    int (*embed)(const cache_embedder_t *e, const char *text, size_t len, float *out);
    /* Frees the embedder. */
    void (*destroy)(cache_embedder_t *e);
};

/* Hashed character and word n-grams: lowercased ASCII letters and digits form words
 * (bytes of 0x80 and above count as letters, so UTF-8 text works; a contraction is
 * its two words: "don't" is "do not", "what's" is "what is"); the features are
 * each word (weight 1, function words 0.25), each word pair in order (0.5) and each
 * character trigram of " word " (0.35), hashed with a sign into dim buckets, then
 * L2-normalized.  dim must be a power of two from 64 to 65536; returns NULL otherwise. */
cache_embedder_t *cache_embed_ngram_create(size_t dim);

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
