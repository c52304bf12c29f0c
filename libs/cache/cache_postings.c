/*
 * The threshold search is MaxScore (Turtle and Flood, 1995) cut down to one pass.  Each
 * list keeps an upper bound of |value| over its postings, so a query feature i can add
 * at most ub_i = |q_i| * bound_i to any vector's score.  Lists whose ub sum stays below
 * the threshold are "skipped": a vector found in none of the other lists scores below
 * the threshold, so the other lists yield every candidate.  The longest lists are
 * skipped first (common trigrams and function words, which the embedder weighs little),
 * which is where the postings are, while their ub sum stays under SKIP_SHARE of the
 * threshold.  A candidate's bound is then its partial sum plus the skipped ub sum; the
 * skipped features are looked up in its vector one by one, biggest ub first, each
 * replacing its ub by its true share, until the bound falls below the threshold or
 * MAX_LOOKUPS were made.  The survivors are
 * scored in full with cache_sparse_dot, so a similarity never depends on which lists were skipped.
 *
 * Sums of floats round: every bound is compared with PRUNE_MARGIN to spare, far more
 * than the rounding of a sum of a few hundred products of unit-vector entries.
 *
 * Rejected: skipping by the smallest bounds first (the textbook order) keeps the long
 * lists of common features; document-at-a-time traversal needs lists sorted by slot,
 * which slot reuse would break.
 */
#define _GNU_SOURCE
#include "cache/cache_postings.h"

#include "base/err.h"
#include "base/log.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define PRUNE_MARGIN 1e-4f
/* The share of the threshold the skipped lists may take.  All of it reads the fewest
 * postings but leaves the partial sums no slack, so nearly every candidate's vector is
 * then read (a cache miss each); some slack lets the partial sums alone drop most of
 * them (semcachebench --latency: a lower p99 and max than with all of it or 0.6). */
#define SKIP_SHARE 0.8f
/* Skipped features looked up in a candidate's vector before it is scored in full: a
 * candidate still alive after the biggest few is likely a hit, and one merge of the two
 * vectors costs less than looking up every other skipped feature. */
#define MAX_LOOKUPS 6
#define TABLE_MIN 64

typedef struct {
    uint32_t slot;
    float value;
} posting_t;

typedef struct {
    uint32_t feature;
    uint32_t n, cap;
    float bound; /* at least |value| of every posting (may be stale high after removals) */
    posting_t *p;
} plist_t;

/* A table cell holds the feature too, so a probe reads only the table. */
typedef struct {
    uint32_t feature;
    uint32_t list; /* list number + 1, 0 for an empty cell */
} cell_t;

struct cache_postings {
    cell_t *table; /* open addressing by feature */
    size_t table_cap;
    plist_t *lists;
    size_t n_lists, lists_cap;
    size_t n_empty;       /* lists with no postings, dropped by compact() */
    cache_sparse_t *vecs; /* by slot; n == 0: no vector */
    size_t vecs_cap;
    size_t count;
};

static uint32_t mix(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

cache_postings_t *cache_postings_create(void)
{
    cache_postings_t *p = ls_xcalloc(1, sizeof(*p));
    p->table_cap = TABLE_MIN;
    p->table = ls_xcalloc(p->table_cap, sizeof(*p->table));
    return p;
}

void cache_postings_destroy(cache_postings_t *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_lists; i++)
        free(p->lists[i].p);
    for (size_t i = 0; i < p->vecs_cap; i++)
        cache_sparse_free(&p->vecs[i]);
    free(p->lists);
    free(p->vecs);
    free(p->table);
    free(p);
}

static plist_t *find_list(const cache_postings_t *p, uint32_t feature)
{
    size_t mask = p->table_cap - 1;
    for (size_t i = mix(feature) & mask;; i = (i + 1) & mask) {
        const cell_t *c = &p->table[i];
        if (!c->list)
            return NULL;
        if (c->feature == feature)
            return &p->lists[c->list - 1];
    }
}

static void table_put(cell_t *table, size_t cap, uint32_t feature, uint32_t list_no)
{
    size_t mask = cap - 1;
    size_t i = mix(feature) & mask;
    while (table[i].list)
        i = (i + 1) & mask;
    table[i] = (cell_t){feature, list_no + 1};
}

/* Rebuilds the table for the lists held into `cap` cells.  LS_ERR_NOMEM: unchanged. */
static int rebuild_table(cache_postings_t *p, size_t cap)
{
    cell_t *table = calloc(cap, sizeof(*table));
    if (!table)
        return LS_ERR_NOMEM;
    for (size_t i = 0; i < p->n_lists; i++)
        table_put(table, cap, p->lists[i].feature, (uint32_t)i);
    free(p->table);
    p->table = table;
    p->table_cap = cap;
    return LS_OK;
}

/* The list of feature, made empty when there is none.  NULL when out of memory. */
static plist_t *get_list(cache_postings_t *p, uint32_t feature)
{
    plist_t *l = find_list(p, feature);
    if (l)
        return l;
    if ((p->n_lists + 1) * 2 > p->table_cap && rebuild_table(p, p->table_cap * 2) != LS_OK)
        return NULL;
    if (p->n_lists == p->lists_cap) {
        size_t cap = p->lists_cap ? p->lists_cap * 2 : 64;
        plist_t *lists = realloc(p->lists, cap * sizeof(*lists));
        if (!lists)
            return NULL;
        p->lists = lists;
        p->lists_cap = cap;
    }
    l = &p->lists[p->n_lists];
    *l = (plist_t){.feature = feature};
    table_put(p->table, p->table_cap, feature, (uint32_t)p->n_lists);
    p->n_lists++;
    p->n_empty++;
    return l;
}

/* Drops the lists that removals emptied, once they are half of all. */
static void compact(cache_postings_t *p)
{
    if (p->n_empty < TABLE_MIN || p->n_empty * 2 < p->n_lists)
        return;
    size_t kept = 0;
    for (size_t i = 0; i < p->n_lists; i++) {
        if (p->lists[i].n == 0) {
            free(p->lists[i].p);
            continue;
        }
        p->lists[kept++] = p->lists[i];
    }
    p->n_lists = kept;
    p->n_empty = 0;
    size_t cap = TABLE_MIN;
    while (cap < kept * 2 + 2)
        cap *= 2;
    /* Out of memory: the old, bigger table would still point at the moved lists, so
     * rebuild it in place; its size is enough for what is left. */
    if (rebuild_table(p, cap) != LS_OK) {
        memset(p->table, 0, p->table_cap * sizeof(*p->table));
        for (size_t i = 0; i < p->n_lists; i++)
            table_put(p->table, p->table_cap, p->lists[i].feature, (uint32_t)i);
    }
}

/* Takes slot's posting out of l (it must be there). */
static void list_remove(cache_postings_t *p, plist_t *l, uint32_t slot)
{
    uint32_t i = 0;
    while (l->p[i].slot != slot)
        i++;
    float gone = fabsf(l->p[i].value);
    l->p[i] = l->p[--l->n];
    if (l->n == 0) {
        free(l->p);
        l->p = NULL;
        l->cap = 0;
        l->bound = 0;
        p->n_empty++;
        return;
    }
    if (gone >= l->bound) { /* the bound may have left: tighten it */
        float b = 0;
        for (uint32_t k = 0; k < l->n; k++)
            if (fabsf(l->p[k].value) > b)
                b = fabsf(l->p[k].value);
        l->bound = b;
    }
}

int cache_postings_add(cache_postings_t *p, uint32_t slot, const cache_sparse_t *v)
{
    if (v->n == 0)
        return LS_ERR_INVALID;
    if (slot >= p->vecs_cap) {
        size_t cap = p->vecs_cap ? p->vecs_cap : 16;
        while (cap <= slot)
            cap *= 2;
        cache_sparse_t *vecs = realloc(p->vecs, cap * sizeof(*vecs));
        if (!vecs)
            return LS_ERR_NOMEM;
        memset(vecs + p->vecs_cap, 0, (cap - p->vecs_cap) * sizeof(*vecs));
        p->vecs = vecs;
        p->vecs_cap = cap;
    }
    LS_ASSERT(p->vecs[slot].n == 0);
    cache_sparse_t copy = CACHE_SPARSE_INIT;
    if (cache_sparse_copy(&copy, v) != LS_OK)
        return LS_ERR_NOMEM;
    size_t i = 0;
    for (; i < v->n; i++) {
        plist_t *l = get_list(p, v->index[i]);
        if (!l)
            goto out_undo;
        if (l->n == l->cap) {
            uint32_t cap = l->cap ? l->cap * 2 : 4;
            posting_t *np = realloc(l->p, cap * sizeof(*np));
            if (!np)
                goto out_undo;
            l->p = np;
            l->cap = cap;
        }
        if (l->n == 0)
            p->n_empty--;
        l->p[l->n++] = (posting_t){slot, v->value[i]};
        if (fabsf(v->value[i]) > l->bound)
            l->bound = fabsf(v->value[i]);
    }
    p->vecs[slot] = copy;
    p->count++;
    return LS_OK;
out_undo:
    while (i-- > 0)
        list_remove(p, find_list(p, v->index[i]), slot);
    cache_sparse_free(&copy);
    return LS_ERR_NOMEM;
}

void cache_postings_remove(cache_postings_t *p, uint32_t slot)
{
    if (slot >= p->vecs_cap || p->vecs[slot].n == 0)
        return;
    cache_sparse_t *v = &p->vecs[slot];
    for (size_t i = 0; i < v->n; i++)
        list_remove(p, find_list(p, v->index[i]), slot);
    cache_sparse_free(v);
    p->count--;
    compact(p);
}

size_t cache_postings_count(const cache_postings_t *p)
{
    return p->count;
}

size_t cache_postings_bytes(const cache_postings_t *p)
{
    size_t b = sizeof(*p) + p->table_cap * sizeof(*p->table) + p->lists_cap * sizeof(plist_t) +
               p->vecs_cap * sizeof(cache_sparse_t);
    for (size_t i = 0; i < p->n_lists; i++)
        b += p->lists[i].cap * sizeof(posting_t);
    for (size_t i = 0; i < p->vecs_cap; i++)
        b += p->vecs[i].cap * (sizeof(uint32_t) + sizeof(float));
    return b;
}

/* ---- search ---------------------------------------------------------------------- */

typedef struct {
    const plist_t *list; /* NULL once skipped */
    uint32_t feature;
    float q;  /* the query's value for the feature */
    float ub; /* |q| * the list's bound: the most it adds to a score */
} term_t;

/* A thread's scratch space, grown to the largest index it has searched. */
typedef struct {
    float *acc;      /* by slot: partial score */
    uint32_t *stamp; /* by slot: the search (epoch) acc belongs to */
    uint32_t *touched;
    cache_postings_hit_t *hits;
    size_t slots_cap;
    uint32_t epoch;
    term_t *terms;
    size_t terms_cap;
} scratch_t;

static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *arg)
{
    scratch_t *s = arg;
    free(s->acc);
    free(s->stamp);
    free(s->touched);
    free(s->hits);
    free(s->terms);
    free(s);
}

static void scratch_key_create(void)
{
    LS_ASSERT(pthread_key_create(&g_scratch_key, scratch_free) == 0);
}

/* This thread's scratch with room for `slots` slots and `terms` terms, or NULL. */
static scratch_t *scratch_get(size_t slots, size_t terms)
{
    pthread_once(&g_scratch_once, scratch_key_create);
    scratch_t *s = pthread_getspecific(g_scratch_key);
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s || pthread_setspecific(g_scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (slots > s->slots_cap) {
        size_t cap = s->slots_cap ? s->slots_cap : 64;
        while (cap < slots)
            cap *= 2;
        float *acc = realloc(s->acc, cap * sizeof(*acc));
        if (acc)
            s->acc = acc;
        uint32_t *stamp = realloc(s->stamp, cap * sizeof(*stamp));
        if (stamp)
            s->stamp = stamp;
        uint32_t *touched = realloc(s->touched, cap * sizeof(*touched));
        if (touched)
            s->touched = touched;
        cache_postings_hit_t *hits = realloc(s->hits, cap * sizeof(*hits));
        if (hits)
            s->hits = hits;
        if (!acc || !stamp || !touched || !hits)
            return NULL; /* the grown arrays stay; slots_cap still bounds what is valid */
        memset(s->stamp + s->slots_cap, 0, (cap - s->slots_cap) * sizeof(*s->stamp));
        s->slots_cap = cap;
    }
    if (terms > s->terms_cap) {
        term_t *t = realloc(s->terms, terms * sizeof(*t));
        if (!t)
            return NULL;
        s->terms = t;
        s->terms_cap = terms;
    }
    return s;
}

static int by_length_desc(const void *pa, const void *pb)
{
    const term_t *a = pa, *b = pb;
    return a->list->n < b->list->n ? 1 : a->list->n > b->list->n ? -1 : 0;
}

static int by_ub_desc(const void *pa, const void *pb)
{
    const term_t *a = pa, *b = pb;
    return a->ub < b->ub ? 1 : a->ub > b->ub ? -1 : 0;
}

/* v's value at index `feature`, 0 when it has none. */
static float value_at(const cache_sparse_t *v, uint32_t feature)
{
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v->index[mid] < feature)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < v->n && v->index[lo] == feature ? v->value[lo] : 0.0f;
}

size_t cache_postings_search(const cache_postings_t *p, const cache_sparse_t *q,
                             float min_similarity, cache_postings_hit_t **hits)
{
    scratch_t *s = scratch_get(p->vecs_cap, q->n);
    *hits = NULL;
    if (!s)
        return 0;
    *hits = s->hits;
    size_t n_hits = 0;
    if (min_similarity <= 0) {
        /* vectors sharing no feature with q score 0 and count: score them all */
        for (size_t slot = 0; slot < p->vecs_cap; slot++) {
            if (p->vecs[slot].n == 0)
                continue;
            float sim = cache_sparse_dot(q, &p->vecs[slot]);
            if (sim >= min_similarity)
                s->hits[n_hits++] = (cache_postings_hit_t){(uint32_t)slot, sim};
        }
        return n_hits;
    }

    /* On a big scope each step below is a cache miss per feature or candidate (table
     * cell, list head, postings; a candidate's vector and its arrays): each step is
     * asked for, for all of them, before the next reads any, so the misses overlap. */
    size_t mask = p->table_cap - 1;
    for (size_t i = 0; i < q->n; i++)
        __builtin_prefetch(&p->table[mix(q->index[i]) & mask]);
    size_t n_terms = 0;
    for (size_t i = 0; i < q->n; i++) {
        const plist_t *l = find_list(p, q->index[i]);
        if (l) {
            __builtin_prefetch(l);
            s->terms[n_terms++] = (term_t){l, q->index[i], q->value[i], 0};
        }
    }
    size_t kept = 0;
    for (size_t i = 0; i < n_terms; i++) {
        const plist_t *l = s->terms[i].list;
        if (!l->n)
            continue;
        s->terms[i].ub = fabsf(s->terms[i].q) * l->bound;
        s->terms[kept++] = s->terms[i];
    }
    n_terms = kept;
    if (n_terms > 1) /* qsort wants a non-NULL array even for none */
        qsort(s->terms, n_terms, sizeof(*s->terms), by_length_desc);
    float skipped = 0; /* the ub sum of the skipped lists */
    for (size_t i = 0; i < n_terms; i++) {
        if (skipped + s->terms[i].ub <= min_similarity * SKIP_SHARE - PRUNE_MARGIN) {
            skipped += s->terms[i].ub;
            s->terms[i].list = NULL;
        }
    }
    /* the skipped terms first, biggest ub first, for the candidates' lookups */
    size_t n_skipped = 0;
    for (size_t i = 0; i < n_terms; i++)
        if (!s->terms[i].list) {
            term_t t = s->terms[i];
            s->terms[i] = s->terms[n_skipped];
            s->terms[n_skipped++] = t;
        }
    if (n_skipped > 1)
        qsort(s->terms, n_skipped, sizeof(*s->terms), by_ub_desc);

    if (++s->epoch == 0) { /* wrapped: stamps of 4 billion searches ago would match */
        if (s->slots_cap)
            memset(s->stamp, 0, s->slots_cap * sizeof(*s->stamp));
        s->epoch = 1;
    }
    for (size_t i = n_skipped; i < n_terms; i++)
        __builtin_prefetch(s->terms[i].list->p);
    size_t n_touched = 0;
    for (size_t i = n_skipped; i < n_terms; i++) {
        const plist_t *l = s->terms[i].list;
        float qv = s->terms[i].q;
        for (uint32_t k = 0; k < l->n; k++) {
            uint32_t slot = l->p[k].slot;
            if (s->stamp[slot] != s->epoch) {
                s->stamp[slot] = s->epoch;
                s->acc[slot] = 0;
                s->touched[n_touched++] = slot;
            }
            s->acc[slot] += qv * l->p[k].value;
        }
    }
    size_t n_alive = 0; /* candidates the partial sums alone cannot drop */
    for (size_t i = 0; i < n_touched; i++) {
        uint32_t slot = s->touched[i];
        if (s->acc[slot] + skipped >= min_similarity - PRUNE_MARGIN) {
            __builtin_prefetch(&p->vecs[slot]);
            s->touched[n_alive++] = slot;
        }
    }
    for (size_t i = 0; i < n_alive; i++) {
        __builtin_prefetch(p->vecs[s->touched[i]].index);
        __builtin_prefetch(p->vecs[s->touched[i]].value);
    }
    for (size_t i = 0; i < n_alive; i++) {
        uint32_t slot = s->touched[i];
        const cache_sparse_t *v = &p->vecs[slot];
        float bound = s->acc[slot] + skipped;
        size_t looks = n_skipped < MAX_LOOKUPS ? n_skipped : MAX_LOOKUPS;
        for (size_t k = 0; k < looks && bound >= min_similarity - PRUNE_MARGIN; k++)
            bound += s->terms[k].q * value_at(v, s->terms[k].feature) - s->terms[k].ub;
        if (bound < min_similarity - PRUNE_MARGIN)
            continue;
        float sim = cache_sparse_dot(q, v);
        if (sim >= min_similarity)
            s->hits[n_hits++] = (cache_postings_hit_t){slot, sim};
    }
    return n_hits;
}
