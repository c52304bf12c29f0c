#define _GNU_SOURCE
/*
 * Lock rules: idx->lock guards every scope and the scope table.  Searches take it
 * shared and only read (recency of scopes is stamped with an atomic, so a search need
 * not write); everything else takes it exclusive.
 *
 * A scope keeps its vectors in one array, searched linearly.  At the default bounds
 * (2048 entries of 256 floats) a full scan is about half a million multiply-adds, a
 * few hundred microseconds at worst, paid only after an exact miss.  An approximate
 * index (HNSW, IVF) would be faster on big scopes but may miss the best match; with a
 * conservative threshold the cache wants the exact nearest neighbour.
 */
#include "cache/cache_semantic.h"

#include "base/err.h"
#include "base/log.h"
#include "cache/cache_embed.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    cache_digest_t exact;
    int64_t expires_us;
    bool guarded; /* sig holds the stored prompt's guard signature */
    cache_guard_sig_t sig;
} slot_t;

typedef struct scope {
    struct scope *hnext;
    cache_digest_t id;
    uint64_t model_tag;
    _Atomic int64_t used_us; /* last search or add, for scope eviction */
    size_t n, cap;
    slot_t *slots;
    float *vecs; /* cap * dim */
} scope_t;

struct cache_semantic {
    pthread_rwlock_t lock;
    size_t dim, max_per_scope, max_scopes;
    scope_t **buckets;
    size_t n_buckets;
    size_t n_scopes;
    size_t n_entries;
    _Atomic int64_t clock; /* logical time for scope recency */
};

static size_t bucket_of(const cache_semantic_t *idx, const cache_digest_t *d)
{
    uint64_t h;
    memcpy(&h, d->b, sizeof(h));
    return (size_t)h & (idx->n_buckets - 1);
}

cache_semantic_t *cache_semantic_create(size_t dim, size_t max_per_scope, size_t max_scopes)
{
    cache_semantic_t *idx = ls_xcalloc(1, sizeof(*idx));
    pthread_rwlock_init(&idx->lock, NULL);
    idx->dim = dim;
    idx->max_per_scope = max_per_scope ? max_per_scope : 1;
    idx->max_scopes = max_scopes ? max_scopes : 1;
    idx->n_buckets = 256;
    while (idx->n_buckets < idx->max_scopes && idx->n_buckets < (1u << 20))
        idx->n_buckets *= 2;
    idx->buckets = ls_xcalloc(idx->n_buckets, sizeof(scope_t *));
    return idx;
}

static void scope_free(scope_t *s)
{
    free(s->slots);
    free(s->vecs);
    free(s);
}

void cache_semantic_destroy(cache_semantic_t *idx)
{
    if (!idx)
        return;
    for (size_t i = 0; i < idx->n_buckets; i++)
        for (scope_t *s = idx->buckets[i], *next; s; s = next) {
            next = s->hnext;
            scope_free(s);
        }
    free(idx->buckets);
    pthread_rwlock_destroy(&idx->lock);
    free(idx);
}

static scope_t *do_find(cache_semantic_t *idx, const cache_digest_t *id)
{
    for (scope_t *s = idx->buckets[bucket_of(idx, id)]; s; s = s->hnext)
        if (cache_digest_equal(&s->id, id))
            return s;
    return NULL;
}

static void do_unlink_scope(cache_semantic_t *idx, scope_t *s)
{
    scope_t **pp = &idx->buckets[bucket_of(idx, &s->id)];
    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
    idx->n_scopes--;
    idx->n_entries -= s->n;
    scope_free(s);
}

static void do_remove_slot(cache_semantic_t *idx, scope_t *s, size_t i)
{
    size_t last = s->n - 1;
    if (i != last) {
        s->slots[i] = s->slots[last];
        memcpy(s->vecs + i * idx->dim, s->vecs + last * idx->dim, idx->dim * sizeof(float));
    }
    s->n--;
    idx->n_entries--;
}

/* Drops the least recently used scope (a linear walk: evictions are rare next to
 * searches, and a scope table of a few thousand is walked in microseconds). */
static void do_evict_scope(cache_semantic_t *idx)
{
    scope_t *victim = NULL;
    for (size_t i = 0; i < idx->n_buckets; i++)
        for (scope_t *s = idx->buckets[i]; s; s = s->hnext)
            if (!victim || atomic_load(&s->used_us) < atomic_load(&victim->used_us))
                victim = s;
    if (victim)
        do_unlink_scope(idx, victim);
}

int cache_semantic_add(cache_semantic_t *idx, const cache_digest_t *scope, uint64_t model_tag,
                       const float *vec, const cache_digest_t *exact, int64_t expires_us,
                       int64_t now_us)
{
    return cache_semantic_add_guarded(idx, scope, model_tag, vec, NULL, exact, expires_us,
                                      now_us);
}

int cache_semantic_add_guarded(cache_semantic_t *idx, const cache_digest_t *scope,
                               uint64_t model_tag, const float *vec, const cache_guard_sig_t *sig,
                               const cache_digest_t *exact, int64_t expires_us, int64_t now_us)
{
    int rc = LS_OK;
    pthread_rwlock_wrlock(&idx->lock);
    scope_t *s = do_find(idx, scope);
    if (!s) {
        if (idx->n_scopes >= idx->max_scopes)
            do_evict_scope(idx);
        s = calloc(1, sizeof(*s));
        if (!s) {
            rc = LS_ERR_NOMEM;
            goto out_unlock;
        }
        s->id = *scope;
        s->model_tag = model_tag;
        size_t i = bucket_of(idx, scope);
        s->hnext = idx->buckets[i];
        idx->buckets[i] = s;
        idx->n_scopes++;
    }
    atomic_store(&s->used_us, atomic_fetch_add(&idx->clock, 1));

    /* Replace an entry for the same answer; sweep expired ones on the way. */
    for (size_t i = 0; i < s->n;) {
        if (cache_digest_equal(&s->slots[i].exact, exact) || s->slots[i].expires_us <= now_us) {
            do_remove_slot(idx, s, i);
            continue;
        }
        i++;
    }
    if (s->n >= idx->max_per_scope) {
        size_t victim = 0;
        for (size_t i = 1; i < s->n; i++)
            if (s->slots[i].expires_us < s->slots[victim].expires_us)
                victim = i;
        do_remove_slot(idx, s, victim);
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        if (cap > idx->max_per_scope)
            cap = idx->max_per_scope;
        slot_t *slots = realloc(s->slots, cap * sizeof(slot_t));
        if (!slots) {
            rc = LS_ERR_NOMEM;
            goto out_unlock;
        }
        s->slots = slots;
        float *vecs = realloc(s->vecs, cap * idx->dim * sizeof(float));
        if (!vecs) {
            rc = LS_ERR_NOMEM;
            goto out_unlock;
        }
        s->vecs = vecs;
        s->cap = cap;
    }
    s->slots[s->n].exact = *exact;
    s->slots[s->n].expires_us = expires_us;
    s->slots[s->n].guarded = sig != NULL;
    if (sig)
        s->slots[s->n].sig = *sig;
    memcpy(s->vecs + s->n * idx->dim, vec, idx->dim * sizeof(float));
    s->n++;
    idx->n_entries++;
out_unlock:
    pthread_rwlock_unlock(&idx->lock);
    return rc;
}

bool cache_semantic_search(cache_semantic_t *idx, const cache_digest_t *scope, const float *vec,
                           float min_similarity, int64_t now_us, cache_digest_t *exact,
                           float *similarity)
{
    return cache_semantic_search_guarded(idx, scope, vec, NULL, min_similarity, now_us, exact,
                                         similarity, NULL);
}

bool cache_semantic_search_guarded(cache_semantic_t *idx, const cache_digest_t *scope,
                                   const float *vec, const cache_guard_sig_t *sig,
                                   float min_similarity, int64_t now_us, cache_digest_t *exact,
                                   float *similarity, cache_guard_reason_t *veto)
{
    bool found = false;
    cache_guard_reason_t vetoed = CACHE_GUARD_OK;
    pthread_rwlock_rdlock(&idx->lock);
    scope_t *s = do_find(idx, scope);
    if (s) {
        atomic_store(&s->used_us, atomic_fetch_add(&idx->clock, 1));
        float best = -2.0f, best_vetoed = -2.0f;
        size_t best_i = 0;
        for (size_t i = 0; i < s->n; i++) {
            if (s->slots[i].expires_us <= now_us)
                continue;
            float sim = cache_embed_cosine(vec, s->vecs + i * idx->dim, idx->dim);
            if (sim <= best)
                continue;
            /* the guards run only on entries that would win: few per search */
            if (sig && sim >= min_similarity && s->slots[i].guarded) {
                cache_guard_reason_t r = cache_guard_check(&s->slots[i].sig, sig);
                if (r != CACHE_GUARD_OK) {
                    if (sim > best_vetoed) {
                        best_vetoed = sim;
                        vetoed = r;
                    }
                    continue;
                }
            }
            best = sim;
            best_i = i;
        }
        if (best >= min_similarity) {
            *exact = s->slots[best_i].exact;
            *similarity = best > 1.0f ? 1.0f : best;
            found = true;
        }
        if (best_vetoed <= best)
            vetoed = CACHE_GUARD_OK; /* a veto that changed nothing is not one */
    }
    pthread_rwlock_unlock(&idx->lock);
    if (veto)
        *veto = vetoed;
    return found;
}

bool cache_semantic_remove(cache_semantic_t *idx, const cache_digest_t *scope,
                           const cache_digest_t *exact)
{
    bool removed = false;
    pthread_rwlock_wrlock(&idx->lock);
    scope_t *s = do_find(idx, scope);
    for (size_t i = 0; s && i < s->n; i++) {
        if (cache_digest_equal(&s->slots[i].exact, exact)) {
            do_remove_slot(idx, s, i);
            removed = true;
            break;
        }
    }
    if (s && s->n == 0)
        do_unlink_scope(idx, s);
    pthread_rwlock_unlock(&idx->lock);
    return removed;
}

size_t cache_semantic_remove_tag(cache_semantic_t *idx, uint64_t model_tag)
{
    pthread_rwlock_wrlock(&idx->lock);
    size_t before = idx->n_entries;
    for (size_t i = 0; i < idx->n_buckets; i++)
        for (scope_t *s = idx->buckets[i], *next; s; s = next) {
            next = s->hnext;
            if (s->model_tag == model_tag)
                do_unlink_scope(idx, s);
        }
    size_t removed = before - idx->n_entries;
    pthread_rwlock_unlock(&idx->lock);
    return removed;
}

size_t cache_semantic_count(cache_semantic_t *idx)
{
    pthread_rwlock_rdlock(&idx->lock);
    size_t n = idx->n_entries;
    pthread_rwlock_unlock(&idx->lock);
    return n;
}

size_t cache_semantic_scopes(cache_semantic_t *idx)
{
    pthread_rwlock_rdlock(&idx->lock);
    size_t n = idx->n_scopes;
    pthread_rwlock_unlock(&idx->lock);
    return n;
}
