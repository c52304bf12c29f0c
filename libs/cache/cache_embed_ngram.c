/*
 * The n-gram embedder.  Why these features: whole words carry the topic (so "France"
 * and "Germany" pull two otherwise identical questions apart), character trigrams
 * absorb inflection and small spelling changes ("capital"/"capitals"), and ordered word
 * pairs reward the same phrasing.  Function words are down-weighted because paraphrases
 * change them freely and unrelated questions share them ("what is the ...").
 * Contractions are spelled out first, so "don't" and "do not" give the same features
 * (measured on tests/data/semcache_tune.tsv: typo paraphrases 10 -> 14 of 37 found).
 */
#include "base/err.h"
#include "base/log.h"
#include "cache/cache_embed.h"
#include "cache/cache_lexicon.h"

#include <libstemmer.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define WORD_MAX 48 /* longer words are cut; they are rare and the cut still discriminates */

#define W_WORD 1.0f
#define W_STOP 0.25f
#define W_PAIR 0.5f
#define W_TRIGRAM 0.35f

/* Snowball stemmers are not thread-safe, so each call borrows one of a few, each with
 * its own lock (a free one when there is one). */
#define STEMMERS 8

typedef struct {
    pthread_mutex_t mu;
    struct sb_stemmer *st;
} stemmer_t;

typedef struct {
    cache_embedder_t base;
    cache_lexicon_t *lex; /* NULL: words as written */
    bool stem;
    stemmer_t stemmers[STEMMERS];
    _Atomic unsigned next_stemmer;
} ngram_t;

/* One emitted feature, for the sparse output. */
typedef struct {
    uint32_t bucket;
    float w; /* signed weight */
} feature_t;

static const char *const k_stop[] = {
    "a",     "an",     "the",   "is",    "are",     "was",      "were", "be",    "to",
    "of",    "in",     "on",    "for",   "and",     "or",       "it",   "its",   "this",
    "that",  "what",   "whats", "how",   "do",      "does",     "did",  "can",   "could",
    "would", "should", "i",     "me",    "my",      "you",      "your", "we",    "please",
    "tell",  "give",   "with",  "about", "s",       "some",     "as",   "at",    "by",
    "from",  "there",  "which", "who",   "explain", "describe", "show", "write", "let"};

/* Greetings, thanks and hedges: they say nothing about the question, so they give no
 * feature at all (a short question keeps its meaning when someone says hi first). */
static const char *const k_filler[] = {"hi",    "hello", "hey",   "thanks", "thank",   "thx",
                                       "ty",    "pls",   "plz",   "kindly", "sorry",   "um",
                                       "umm",   "uh",    "hmm",   "cheers", "advance", "dear",
                                       "just",  "wondering", "curious", "mind", "bother",
                                       "question", "remind", "know",
                                       "want",  "u",     "r",     "any",    "tips",    "help"};

static bool in_list(const char *const *list, size_t n, const char *w, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(list[i]) == len && memcmp(list[i], w, len) == 0)
            return true;
    return false;
}

static bool is_stop(const char *w, size_t len)
{
    return in_list(k_stop, sizeof(k_stop) / sizeof(k_stop[0]), w, len);
}

static bool is_filler(const char *w, size_t len)
{
    return in_list(k_filler, sizeof(k_filler) / sizeof(k_filler[0]), w, len);
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

/* Where features go: added into a dense vector, or listed for a sparse one. */
typedef struct {
    float *dense; /* dim floats, or NULL: list the features */
    feature_t *list;
    size_t n, cap;
    bool nomem; /* the list could not grow: the embedding fails */
} sink_t;

static void add(sink_t *s, size_t dim, uint64_t h, float w)
{
    uint32_t bucket = (uint32_t)(h & (dim - 1));
    float signed_w = (h >> 63) ? -w : w;
    if (s->dense) {
        s->dense[bucket] += signed_w;
        return;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        feature_t *list = realloc(s->list, cap * sizeof(*list));
        if (!list) {
            s->nomem = true;
            return;
        }
        s->list = list;
        s->cap = cap;
    }
    s->list[s->n] = (feature_t){bucket, signed_w};
    s->n++;
}

static bool word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

/* Contractions as their two words, so "don't" and "do not" give the same features. */
static const char *const k_contractions[][3] = {
    {"dont", "do", "not"},       {"doesnt", "does", "not"},   {"didnt", "did", "not"},
    {"cant", "can", "not"},      {"cannot", "can", "not"},    {"couldnt", "could", "not"},
    {"wont", "will", "not"},     {"wouldnt", "would", "not"}, {"shouldnt", "should", "not"},
    {"isnt", "is", "not"},       {"arent", "are", "not"},     {"wasnt", "was", "not"},
    {"werent", "were", "not"},   {"hasnt", "has", "not"},     {"havent", "have", "not"},
    {"hadnt", "had", "not"},     {"im", "i", "am"},           {"ive", "i", "have"},
    {"youre", "you", "are"},     {"youve", "you", "have"},    {"theyre", "they", "are"},
    {"weve", "we", "have"},      {"whats", "what", "is"},     {"hows", "how", "is"},
    {"wheres", "where", "is"},   {"whos", "who", "is"},       {"thats", "that", "is"},
    {"theres", "there", "is"},   {"lets", "let", "us"},       {"id", "i", "would"},
    {"ill", "i", "will"},        {"itll", "it", "will"},      {"youll", "you", "will"},
    {"its", "it", "is"},         {"hes", "he", "is"},         {"shes", "she", "is"},
    {"heres", "here", "is"},     {"whens", "when", "is"},     {"whys", "why", "is"},
};

/* Words whose "'s" is "is". */
static bool takes_is(const char *w, size_t wl)
{
    static const char *const k[] = {"what",  "how",   "where", "who", "that", "there",
                                    "it",    "he",    "she",   "here", "when", "why"};
    for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++)
        if (strlen(k[i]) == wl && memcmp(k[i], w, wl) == 0)
            return true;
    return false;
}

typedef struct {
    ngram_t *n;
    const cache_lexicon_t *lex;
    size_t dim;
    sink_t *out;
    char prev[WORD_MAX];
    size_t prev_len;
    bool have_prev;
} feat_t;

/* The Snowball English stem of w[0..len) into out (WORD_MAX bytes); returns its length
 * (len, with w copied, when the stemmer gives nothing usable). */
static size_t stem_word(ngram_t *n, const char *w, size_t len, char *out)
{
    unsigned start = atomic_fetch_add(&n->next_stemmer, 1u) % STEMMERS;
    stemmer_t *s = NULL;
    for (unsigned k = 0; k < STEMMERS && !s; k++)
        if (pthread_mutex_trylock(&n->stemmers[(start + k) % STEMMERS].mu) == 0)
            s = &n->stemmers[(start + k) % STEMMERS];
    if (!s) {
        s = &n->stemmers[start];
        pthread_mutex_lock(&s->mu);
    }
    const sb_symbol *r = sb_stemmer_stem(s->st, (const sb_symbol *)w, (int)len);
    int rl = r ? sb_stemmer_length(s->st) : 0;
    if (rl > 0 && rl <= WORD_MAX) {
        memcpy(out, r, (size_t)rl);
        len = (size_t)rl;
    } else {
        memcpy(out, w, len);
    }
    pthread_mutex_unlock(&s->mu);
    return len;
}

/* The features of one lowercased word. */
static void add_word(feat_t *f, const char *word, size_t word_len)
{
    char w[WORD_MAX + 2];
    if (word_len > WORD_MAX)
        word_len = WORD_MAX;
    w[0] = ' ';
    memcpy(w + 1, word, word_len);
    w[word_len + 1] = ' ';
    if (is_filler(word, word_len))
        return;
    bool stop = is_stop(word, word_len);
    if (!stop && f->lex) {
        size_t nl = 0;
        const char *norm = cache_lexicon_normalize(f->lex, word, word_len, &nl);
        if (norm && nl <= WORD_MAX && !is_stop(norm, nl)) {
            word = norm;
            word_len = nl;
            memcpy(w + 1, word, word_len);
            w[word_len + 1] = ' ';
        }
    }
    char stemmed[WORD_MAX];
    if (!stop && f->n->stem) {
        word_len = stem_word(f->n, word, word_len, stemmed);
        word = stemmed;
        memcpy(w + 1, word, word_len);
        w[word_len + 1] = ' ';
    }
    size_t wl = word_len + 2;
    add(f->out, f->dim, hash_feature('w', word, word_len, NULL, 0), stop ? W_STOP : W_WORD);
    if (stop)
        return;
    for (size_t k = 0; k + 3 <= wl; k++)
        add(f->out, f->dim, hash_feature('t', w + k, 3, NULL, 0), W_TRIGRAM);
    if (f->have_prev)
        add(f->out, f->dim, hash_feature('p', f->prev, f->prev_len, word, word_len), W_PAIR);
    memcpy(f->prev, word, word_len);
    f->prev_len = word_len;
    f->have_prev = true;
}

/* Emits every feature of text[0..len) into out. */
static void emit_features(ngram_t *n, sink_t *out, size_t dim, const char *text, size_t len)
{
    feat_t f = {.n = n, .lex = n->lex, .dim = dim, .out = out, .prev_len = 0, .have_prev = false};
    size_t i = 0;
    while (i < len) {
        while (i < len && !word_byte((unsigned char)text[i]))
            i++;
        if (i >= len)
            break;
        char w[WORD_MAX];
        size_t wl = 0;
        for (;;) {
            while (i < len && word_byte((unsigned char)text[i])) {
                unsigned char c = (unsigned char)text[i++];
                if (c >= 'A' && c <= 'Z')
                    c = (unsigned char)(c - 'A' + 'a');
                if (wl < WORD_MAX)
                    w[wl++] = (char)c;
            }
            /* an apostrophe before t, re, ve, ll, m or d joins a contraction ("don't");
             * before s only after a word that "is" follows ("what's"): elsewhere it is a
             * possessive ("dog's" stays "dog" and "s") */
            if (i + 1 < len && text[i] == '\'' && word_byte((unsigned char)text[i + 1]) &&
                ((text[i + 1] != 's' && text[i + 1] != 'S') || takes_is(w, wl))) {
                i++;
                continue;
            }
            break;
        }
        size_t c = 0, nc = sizeof(k_contractions) / sizeof(k_contractions[0]);
        while (c < nc && !(strlen(k_contractions[c][0]) == wl &&
                           memcmp(k_contractions[c][0], w, wl) == 0))
            c++;
        if (c < nc) {
            add_word(&f, k_contractions[c][1], strlen(k_contractions[c][1]));
            add_word(&f, k_contractions[c][2], strlen(k_contractions[c][2]));
        } else {
            add_word(&f, w, wl);
        }
    }
}

static int ngram_embed(const cache_embedder_t *e, const char *text, size_t len, float *out)
{
    size_t dim = e->dim;
    memset(out, 0, dim * sizeof(float));
    sink_t sink = {.dense = out};
    emit_features((ngram_t *)e, &sink, dim, text, len);
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

/* Sorts s's features by bucket, keeping emission order among equal buckets: an LSD
 * radix sort, stable, and cheaper than qsort's comparator calls for a few hundred
 * features.  Returns LS_OK or LS_ERR_NOMEM (s unchanged). */
static int sort_features(sink_t *s, size_t dim)
{
    if (s->n < 2)
        return LS_OK;
    feature_t *src = s->list, *dst = malloc(s->n * sizeof(*dst));
    if (!dst)
        return LS_ERR_NOMEM;
    for (unsigned shift = 0; ((size_t)1 << shift) < dim; shift += 8) {
        size_t start[257] = {0};
        for (size_t i = 0; i < s->n; i++)
            start[((src[i].bucket >> shift) & 0xff) + 1]++;
        for (int b = 0; b < 256; b++)
            start[b + 1] += start[b];
        for (size_t i = 0; i < s->n; i++)
            dst[start[(src[i].bucket >> shift) & 0xff]++] = src[i];
        feature_t *t = src;
        src = dst;
        dst = t;
    }
    free(dst);
    s->list = src;
    s->cap = s->n; /* the sorted array may be the one sized for n */
    return LS_OK;
}

/* The dense vector's non-zero buckets, computed the same way: each bucket sums its
 * features in emission order and the norm sums the buckets in index order, so the values
 * equal the dense embedding's bit for bit (tests/unit/cache/test_embed.c checks it). */
static int ngram_embed_sparse(const cache_embedder_t *e, const char *text, size_t len,
                              cache_sparse_t *out)
{
    out->n = 0;
    sink_t sink = {.dense = NULL};
    emit_features((ngram_t *)e, &sink, e->dim, text, len);
    int rc = LS_OK;
    if (sink.nomem) {
        rc = LS_ERR_NOMEM;
        goto out_free_list;
    }
    /* at most one pair per feature; reserving them all first leaves nothing to fail */
    if (sort_features(&sink, e->dim) != LS_OK || cache_sparse_reserve(out, sink.n) != LS_OK) {
        rc = LS_ERR_NOMEM;
        goto out_free_list;
    }
    double norm = 0;
    for (size_t i = 0; i < sink.n;) {
        uint32_t bucket = sink.list[i].bucket;
        float v = 0;
        for (; i < sink.n && sink.list[i].bucket == bucket; i++)
            v += sink.list[i].w;
        if (v == 0)
            continue; /* cancelled out, as a zero bucket of the dense vector */
        out->index[out->n] = bucket;
        out->value[out->n] = v;
        out->n++;
        norm += (double)v * v;
    }
    if (norm <= 0) {
        out->n = 0;
        rc = LS_ERR_INVALID;
        goto out_free_list;
    }
    float inv = (float)(1.0 / sqrt(norm));
    for (size_t i = 0; i < out->n; i++)
        out->value[i] *= inv;
out_free_list:
    free(sink.list);
    return rc;
}

static void ngram_destroy(cache_embedder_t *e)
{
    ngram_t *n = (ngram_t *)e;
    cache_lexicon_destroy(n->lex);
    for (int i = 0; i < STEMMERS; i++)
        if (n->stem) {
            sb_stemmer_delete(n->stemmers[i].st);
            pthread_mutex_destroy(&n->stemmers[i].mu);
        }
    free(n);
}

void cache_embed_ngram_config_init(cache_embed_ngram_config_t *cfg)
{
    cfg->dim = 512;
    cfg->lex = NULL;
    cfg->stem = false;
}

cache_embedder_t *cache_embed_ngram_create(size_t dim)
{
    cache_embed_ngram_config_t cfg;
    cache_embed_ngram_config_init(&cfg);
    cfg.dim = dim;
    return cache_embed_ngram_create_cfg(&cfg);
}

cache_embedder_t *cache_embed_ngram_create_cfg(const cache_embed_ngram_config_t *cfg)
{
    size_t dim = cfg->dim;
    if (dim < 64 || dim > CACHE_EMBED_NGRAM_MAX_DIM || (dim & (dim - 1)) != 0) {
        cache_lexicon_destroy(cfg->lex);
        return NULL;
    }
    ngram_t *n = ls_xcalloc(1, sizeof(*n));
    n->lex = cfg->lex;
    n->stem = cfg->stem;
    for (int i = 0; i < STEMMERS && n->stem; i++) {
        pthread_mutex_init(&n->stemmers[i].mu, NULL);
        n->stemmers[i].st = sb_stemmer_new("english", NULL);
        if (!n->stemmers[i].st) {
            LS_LOG_ERROR("cache", "out of memory creating a Snowball stemmer");
            abort();
        }
    }
    n->base.name = "ngram";
    n->base.dim = dim;
    n->base.embed = ngram_embed;
    n->base.destroy = ngram_destroy;
    n->base.embed_sparse = ngram_embed_sparse;
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
