/*
 * The n-gram embedder.  Why these features: whole words carry the topic (so "France"
 * and "Germany" pull two otherwise identical questions apart), character trigrams
 * absorb inflection and small spelling changes ("capital"/"capitals"), and ordered word
 * pairs reward the same phrasing.  Function words are down-weighted because paraphrases
 * change them freely and unrelated questions share them ("what is the ...").
 */
#include "base/err.h"
#include "base/log.h"
#include "cache/cache_embed.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define WORD_MAX 48 /* longer words are cut; they are rare and the cut still discriminates */

#define W_WORD 1.0f
#define W_STOP 0.25f
#define W_PAIR 0.5f
#define W_TRIGRAM 0.35f

typedef struct {
    cache_embedder_t base;
} ngram_t;

static const char *const k_stop[] = {
    "a",     "an",     "the",   "is",    "are",     "was",      "were", "be",    "to",
    "of",    "in",     "on",    "for",   "and",     "or",       "it",   "its",   "this",
    "that",  "what",   "whats", "how",   "do",      "does",     "did",  "can",   "could",
    "would", "should", "i",     "me",    "my",      "you",      "your", "we",    "please",
    "tell",  "give",   "with",  "about", "s",       "some",     "as",   "at",    "by",
    "from",  "there",  "which", "who",   "explain", "describe", "show", "write", "let"};

static bool is_stop(const char *w, size_t len)
{
    for (size_t i = 0; i < sizeof(k_stop) / sizeof(k_stop[0]); i++)
        if (strlen(k_stop[i]) == len && memcmp(k_stop[i], w, len) == 0)
            return true;
    return false;
}

/* FNV-1a over a tag byte and the bytes, then a 64-bit finalizer so low bits mix well. */
static uint64_t hash_feature(char tag, const char *s, size_t len, const char *s2, size_t len2)
{
    uint64_t h = 1469598103934665603ULL;
    h = (h ^ (uint8_t)tag) * 1099511628211ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
    for (size_t i = 0; i < len2; i++)
        h = (h ^ (uint8_t)s2[i]) * 1099511628211ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static void add(float *v, size_t dim, uint64_t h, float w)
{
    v[h & (dim - 1)] += (h >> 63) ? -w : w;
}

static bool word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

static int ngram_embed(const cache_embedder_t *e, const char *text, size_t len, float *out)
{
    size_t dim = e->dim;
    memset(out, 0, dim * sizeof(float));
    char prev[WORD_MAX];
    size_t prev_len = 0;
    bool have_prev = false;
    size_t i = 0;
    while (i < len) {
        while (i < len && !word_byte((unsigned char)text[i]))
            i++;
        if (i >= len)
            break;
        char w[WORD_MAX + 2];
        size_t wl = 0;
        w[wl++] = ' ';
        while (i < len && word_byte((unsigned char)text[i])) {
            unsigned char c = (unsigned char)text[i++];
            if (c >= 'A' && c <= 'Z')
                c = (unsigned char)(c - 'A' + 'a');
            if (wl <= WORD_MAX)
                w[wl++] = (char)c;
        }
        w[wl++] = ' ';
        const char *word = w + 1;
        size_t word_len = wl - 2;
        bool stop = is_stop(word, word_len);
        add(out, dim, hash_feature('w', word, word_len, NULL, 0), stop ? W_STOP : W_WORD);
        if (!stop) {
            for (size_t k = 0; k + 3 <= wl; k++)
                add(out, dim, hash_feature('t', w + k, 3, NULL, 0), W_TRIGRAM);
            if (have_prev)
                add(out, dim, hash_feature('p', prev, prev_len, word, word_len), W_PAIR);
            memcpy(prev, word, word_len);
            prev_len = word_len;
            have_prev = true;
        }
    }
    double norm = 0;
    for (size_t k = 0; k < dim; k++)
        norm += (double)out[k] * out[k];
    if (norm <= 0) {
        memset(out, 0, dim * sizeof(float));
        return LS_ERR_INVALID;
    }
    float inv = (float)(1.0 / sqrt(norm));
    for (size_t k = 0; k < dim; k++)
        out[k] *= inv;
    return LS_OK;
}

static void ngram_destroy(cache_embedder_t *e)
{
    free(e);
}

cache_embedder_t *cache_embed_ngram_create(size_t dim)
{
    if (dim < 64 || dim > 65536 || (dim & (dim - 1)) != 0)
        return NULL;
    ngram_t *n = ls_xcalloc(1, sizeof(*n));
    n->base.name = "ngram";
    n->base.dim = dim;
    n->base.embed = ngram_embed;
    n->base.destroy = ngram_destroy;
    return &n->base;
}

void cache_embedder_destroy(cache_embedder_t *e)
{
    if (e)
        e->destroy(e);
}

float cache_embed_cosine(const float *a, const float *b, size_t dim)
{
    float s = 0;
    for (size_t i = 0; i < dim; i++)
        s += a[i] * b[i];
    return s;
}
