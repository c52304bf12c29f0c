#define _GNU_SOURCE
/*
 * Lock rules: idx->lock guards every scope and the scope table.  Searches take it
 * shared and only read (recency of scopes is stamped with an atomic, and the sparse
 * search's scratch space is per thread, so a search need not write); everything else
 * takes it exclusive.
 *
 * A scope's entries live in numbered slots; a removed entry's slot goes on a free list
 * and is the next one used, so slot numbers stay below max_per_scope and never move (the
 * sparse index names vectors by slot).
 *
 * Dense scopes keep their vectors in one array, searched linearly: memory bound, a
 * dim-float row per entry per search.  Sparse scopes keep an inverted index
 * (cache_postings.c) whose threshold search reads only the postings that can matter.
 * An approximate index (HNSW, IVF) would be faster on big dense scopes but may miss the
 * best match; with a conservative threshold the cache wants the exact nearest
 * neighbour, and both kinds of scope give it.
 */
#include "cache/cache_semantic.h"

#include "base/err.h"
#include "base/log.h"
#include "cache/cache_embed.h"
#include "cache/cache_postings.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* What add and remove scan, apart from the guard signatures they seldom read. */
typedef struct {
    cache_digest_t exact;
    int64_t expires_us;
    bool live;    /* holds an entry (else on the free list or never used) */
    bool guarded; /* the slot's signature is the stored prompt's guard signature */
} slot_t;

typedef struct scope {
    struct scope *hnext;
    cache_digest_t id;
    uint64_t model_tag;
    _Atomic int64_t used_us; /* last search or add, for scope eviction */
    size_t n;                /* live slots */
    size_t used;             /* slots ever used: every live one is below */
    size_t cap;
    slot_t *slots;
    cache_guard_sig_t *sigs; /* by slot */
    uint32_t *free_slots;    /* a stack of free slot numbers below used */
    size_t n_free;
    float *vecs;            /* dense scopes: cap * dim */
    cache_postings_t *post; /* sparse scopes */
} scope_t;

struct cache_semantic {
    pthread_rwlock_t lock;
    size_t dim, max_per_scope, max_scopes;
    bool sparse;
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

static cache_semantic_t *create(size_t dim, size_t max_per_scope, size_t max_scopes, bool sparse)
{
    cache_semantic_t *idx = ls_xcalloc(1, sizeof(*idx));
    /* glibc's default lets a steady stream of searches starve every add (seen in
     * test_cache_semantic's race test); no thread here takes the lock twice, which is
     * what writer preference forbids. */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&idx->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    idx->dim = dim;
    idx->sparse = sparse;
    idx->max_per_scope = max_per_scope ? max_per_scope : 1;
    if (idx->max_per_scope > UINT32_MAX)
        idx->max_per_scope = UINT32_MAX;
    idx->max_scopes = max_scopes ? max_scopes : 1;
    idx->n_buckets = 256;
    while (idx->n_buckets < idx->max_scopes && idx->n_buckets < (1u << 20))
        idx->n_buckets *= 2;
    idx->buckets = ls_xcalloc(idx->n_buckets, sizeof(scope_t *));
    return idx;
}

cache_semantic_t *cache_semantic_create(size_t dim, size_t max_per_scope, size_t max_scopes)
{
    return create(dim, max_per_scope, max_scopes, false);
}

cache_semantic_t *cache_semantic_create_sparse(size_t dim, size_t max_per_scope, size_t max_scopes)
{
    return create(dim, max_per_scope, max_scopes, true);
}

bool cache_semantic_is_sparse(const cache_semantic_t *idx)
{
    return idx->sparse;
}

static void scope_free(scope_t *s)
{
    free(s->slots);
    free(s->sigs);
    free(s->free_slots);
    free(s->vecs);
    cache_postings_destroy(s->post);
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
    s->slots[i].live = false;
    if (s->post)
        cache_postings_remove(s->post, (uint32_t)i);
    s->free_slots[s->n_free++] = (uint32_t)i;
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

/* Room for one more slot number at s->used.  LS_ERR_NOMEM: s unchanged but for arrays
 * that grew. */
static int do_grow(cache_semantic_t *idx, scope_t *s)
{
    size_t cap = s->cap ? s->cap * 2 : 8;
    if (cap > idx->max_per_scope)
        cap = idx->max_per_scope;
    slot_t *slots = realloc(s->slots, cap * sizeof(*slots));
    if (!slots)
        return LS_ERR_NOMEM;
    s->slots = slots;
    cache_guard_sig_t *sigs = realloc(s->sigs, cap * sizeof(*sigs));
    if (!sigs)
        return LS_ERR_NOMEM;
    s->sigs = sigs;
    uint32_t *free_slots = realloc(s->free_slots, cap * sizeof(*free_slots));
    if (!free_slots)
        return LS_ERR_NOMEM;
    s->free_slots = free_slots;
    if (!idx->sparse) {
        float *vecs = realloc(s->vecs, cap * idx->dim * sizeof(float));
        if (!vecs)
            return LS_ERR_NOMEM;
        s->vecs = vecs;
    }
    s->cap = cap;
    return LS_OK;
}

/* The add of both kinds: the scope found or made, the same answer's entry replaced,
 * expired ones swept, the first to expire evicted when full.  Stores one of vec or
 * svec. */
static int add(cache_semantic_t *idx, const cache_digest_t *scope, uint64_t model_tag,
               const float *vec, const cache_sparse_t *svec, const cache_guard_sig_t *sig,
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
        if (idx->sparse)
            s->post = cache_postings_create();
        s->id = *scope;
        s->model_tag = model_tag;
        size_t i = bucket_of(idx, scope);
        s->hnext = idx->buckets[i];
        idx->buckets[i] = s;
        idx->n_scopes++;
    }
    atomic_store(&s->used_us, atomic_fetch_add(&idx->clock, 1));

    /* Replace an entry for the same answer; sweep expired ones on the way. */
    for (size_t i = 0; i < s->used; i++)
        if (s->slots[i].live &&
            (cache_digest_equal(&s->slots[i].exact, exact) || s->slots[i].expires_us <= now_us))
            do_remove_slot(idx, s, i);
    if (s->n >= idx->max_per_scope) {
        size_t victim = SIZE_MAX;
        for (size_t i = 0; i < s->used; i++)
            if (s->slots[i].live &&
                (victim == SIZE_MAX || s->slots[i].expires_us < s->slots[victim].expires_us))
                victim = i;
        do_remove_slot(idx, s, victim);
    }
    size_t i;
    if (s->n_free) {
        i = s->free_slots[s->n_free - 1];
    } else {
        if (s->used == s->cap && (rc = do_grow(idx, s)) != LS_OK)
            goto out_unlock;
        i = s->used;
    }
    if (svec) {
        if ((rc = cache_postings_add(s->post, (uint32_t)i, svec)) != LS_OK)
            goto out_unlock;
    } else {
        memcpy(s->vecs + i * idx->dim, vec, idx->dim * sizeof(float));
    }
    if (s->n_free)
        s->n_free--;
    else
        s->used++;
    s->slots[i].exact = *exact;
    s->slots[i].expires_us = expires_us;
    s->slots[i].live = true;
    s->slots[i].guarded = sig != NULL;
    if (sig)
        s->sigs[i] = *sig;
    s->n++;
    idx->n_entries++;
out_unlock:
    pthread_rwlock_unlock(&idx->lock);
    return rc;
}

int cache_semantic_add(cache_semantic_t *idx, const cache_digest_t *scope, uint64_t model_tag,
                       const float *vec, const cache_digest_t *exact, int64_t expires_us,
                       int64_t now_us)
{
    return cache_semantic_add_guarded(idx, scope, model_tag, vec, NULL, exact, expires_us, now_us);
}

int cache_semantic_add_guarded(cache_semantic_t *idx, const cache_digest_t *scope,
                               uint64_t model_tag, const float *vec, const cache_guard_sig_t *sig,
                               const cache_digest_t *exact, int64_t expires_us, int64_t now_us)
{
    LS_ASSERT(!idx->sparse);
    return add(idx, scope, model_tag, vec, NULL, sig, exact, expires_us, now_us);
}

int cache_semantic_add_sparse(cache_semantic_t *idx, const cache_digest_t *scope,
                              uint64_t model_tag, const cache_sparse_t *vec,
                              const cache_guard_sig_t *sig, const cache_digest_t *exact,
                              int64_t expires_us, int64_t now_us)
{
    LS_ASSERT(idx->sparse);
    if (vec->n == 0)
        return LS_ERR_INVALID;
    if (vec->n > CACHE_SEMANTIC_MAX_PAIRS)
        return LS_ERR_FULL;
    for (size_t i = 0; i < vec->n; i++)
        if (vec->index[i] >= idx->dim || (i && vec->index[i] <= vec->index[i - 1]))
            return LS_ERR_INVALID;
    return add(idx, scope, model_tag, NULL, vec, sig, exact, expires_us, now_us);
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
    LS_ASSERT(!idx->sparse);
    bool found = false;
    cache_guard_reason_t vetoed = CACHE_GUARD_OK;
    pthread_rwlock_rdlock(&idx->lock);
    scope_t *s = do_find(idx, scope);
    if (s) {
        atomic_store(&s->used_us, atomic_fetch_add(&idx->clock, 1));
        float best = -2.0f, best_vetoed = -2.0f;
        size_t best_i = 0;
        for (size_t i = 0; i < s->used; i++) {
            if (!s->slots[i].live || s->slots[i].expires_us <= now_us)
                continue;
            float sim = cache_embed_cosine(vec, s->vecs + i * idx->dim, idx->dim);
            if (sim <= best)
                continue;
            /* the guards run only on entries that would win: few per search */
            if (sig && sim >= min_similarity && s->slots[i].guarded) {
                cache_guard_reason_t r = cache_guard_check(&s->sigs[i], sig);
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

/* Most similar first; equal similarities by slot, so a search's answer is repeatable. */
static int by_similarity_desc(const void *pa, const void *pb)
{
    const cache_postings_hit_t *a = pa, *b = pb;
    if (a->similarity != b->similarity)
        return a->similarity < b->similarity ? 1 : -1;
    return a->slot < b->slot ? -1 : a->slot > b->slot;
}

bool cache_semantic_search_sparse(cache_semantic_t *idx, const cache_digest_t *scope,
                                  const cache_sparse_t *vec, const cache_guard_sig_t *sig,
                                  float min_similarity, int64_t now_us, cache_digest_t *exact,
                                  float *similarity, cache_guard_reason_t *veto)
{
    LS_ASSERT(idx->sparse);
    bool found = false;
    cache_guard_reason_t vetoed = CACHE_GUARD_OK;
    pthread_rwlock_rdlock(&idx->lock);
    scope_t *s = do_find(idx, scope);
    if (s) {
        atomic_store(&s->used_us, atomic_fetch_add(&idx->clock, 1));
        /* The postings give every entry at or above the threshold; the answer is the
         * most similar one the guards let through, and the veto is that of the most
         * similar one turned down before it: the dense scan's answer. */
        cache_postings_hit_t *hits;
        size_t n = cache_postings_search(s->post, vec, min_similarity, &hits);
        for (size_t k = 0; k < n; k++) { /* read below, one cache miss or more each */
            __builtin_prefetch(&s->slots[hits[k].slot]);
            __builtin_prefetch(&s->sigs[hits[k].slot]);
        }
        if (n > 1) /* qsort wants a non-NULL array even for none */
            qsort(hits, n, sizeof(*hits), by_similarity_desc);
        bool have_veto = false;
        float best_vetoed = 0;
        for (size_t k = 0; k < n; k++) {
            size_t i = hits[k].slot;
            if (s->slots[i].expires_us <= now_us)
                continue;
            if (sig && s->slots[i].guarded) {
                cache_guard_reason_t r = cache_guard_check(&s->sigs[i], sig);
                if (r != CACHE_GUARD_OK) {
                    if (!have_veto) {
                        have_veto = true;
                        best_vetoed = hits[k].similarity;
                        vetoed = r;
                    }
                    continue;
                }
            }
            *exact = s->slots[i].exact;
            *similarity = hits[k].similarity > 1.0f ? 1.0f : hits[k].similarity;
            found = true;
            if (have_veto && best_vetoed <= hits[k].similarity)
                vetoed = CACHE_GUARD_OK; /* a tie turned down changed nothing */
            break;
        }
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
    for (size_t i = 0; s && i < s->used; i++) {
        if (s->slots[i].live && cache_digest_equal(&s->slots[i].exact, exact)) {
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

size_t cache_semantic_bytes(cache_semantic_t *idx)
{
    pthread_rwlock_rdlock(&idx->lock);
    size_t b = sizeof(*idx) + idx->n_buckets * sizeof(scope_t *);
    for (size_t i = 0; i < idx->n_buckets; i++)
        for (scope_t *s = idx->buckets[i]; s; s = s->hnext) {
            b += sizeof(*s) +
                 s->cap * (sizeof(slot_t) + sizeof(cache_guard_sig_t) + sizeof(uint32_t));
            if (s->vecs)
                b += s->cap * idx->dim * sizeof(float);
            if (s->post)
                b += cache_postings_bytes(s->post);
        }
    pthread_rwlock_unlock(&idx->lock);
    return b;
}
