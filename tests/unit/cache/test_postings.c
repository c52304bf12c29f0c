/*
 * test_postings.c - libs/cache/cache_postings.c: the inverted index's threshold search
 * against a brute-force scan, on random sparse unit vectors with skewed features (some
 * lists long, most short, as prompts' trigrams and words are), signed values, random
 * thresholds, and vectors removed and added between searches.
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "cache/cache_postings.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SPACE 5000
#define SLOTS 600

static double unit(unsigned *seed)
{
    return (double)rand_r(seed) / ((double)RAND_MAX + 1.0);
}

static int by_index(const void *pa, const void *pb)
{
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    return a < b ? -1 : a > b;
}

/* A unit vector of 5 to 120 features: a feature's number is skewed towards 0 (common
 * features), values are signed.  With base non-NULL, most features are base's. */
static void random_vec(unsigned *seed, const cache_sparse_t *base, cache_sparse_t *v)
{
    size_t n = 5 + (size_t)(unit(seed) * 116);
    uint32_t idx[256];
    size_t m = 0;
    if (base)
        for (size_t i = 0; i < base->n && m < n; i++)
            if (unit(seed) < 0.85)
                idx[m++] = base->index[i];
    while (m < n) {
        double u = unit(seed);
        idx[m++] = (uint32_t)(u * u * u * SPACE);
    }
    qsort(idx, m, sizeof(idx[0]), by_index);
    cr_assert_eq(cache_sparse_reserve(v, m), LS_OK);
    v->n = 0;
    double norm = 0;
    for (size_t i = 0; i < m; i++) {
        if (v->n && v->index[v->n - 1] == idx[i])
            continue;
        float x = (float)(unit(seed) * 2 - 0.6);
        if (x == 0)
            x = 0.5f;
        v->index[v->n] = idx[i];
        v->value[v->n++] = x;
        norm += (double)x * x;
    }
    for (size_t i = 0; i < v->n; i++)
        v->value[i] = (float)(v->value[i] / sqrt(norm));
}

static int by_slot(const void *pa, const void *pb)
{
    const cache_postings_hit_t *a = pa, *b = pb;
    return a->slot < b->slot ? -1 : a->slot > b->slot;
}

Test(postings, threshold_search_equals_a_full_scan)
{
    unsigned seed = 12345;
    cache_postings_t *p = cache_postings_create();
    cache_sparse_t *vecs = calloc(SLOTS, sizeof(*vecs)); /* n == 0: slot empty */
    cache_sparse_t q = CACHE_SPARSE_INIT;
    cache_postings_hit_t *want = malloc(SLOTS * sizeof(*want));
    size_t held = 0, searches = 0, total_hits = 0;
    for (int round = 0; round < 6000; round++) {
        /* change the index: mostly adds until full, then as many removals as adds */
        uint32_t slot = (uint32_t)(unit(&seed) * SLOTS);
        if (vecs[slot].n && unit(&seed) < 0.5) {
            cache_postings_remove(p, slot);
            cache_sparse_free(&vecs[slot]);
            held--;
        } else if (!vecs[slot].n) {
            uint32_t like = (uint32_t)(unit(&seed) * SLOTS);
            random_vec(&seed, vecs[like].n && unit(&seed) < 0.5 ? &vecs[like] : NULL, &vecs[slot]);
            cr_assert_eq(cache_postings_add(p, slot, &vecs[slot]), LS_OK);
            held++;
        }
        cr_assert_eq(cache_postings_count(p), held);

        /* a query near a held vector or anywhere, at a random threshold */
        uint32_t near = (uint32_t)(unit(&seed) * SLOTS);
        random_vec(&seed, vecs[near].n && unit(&seed) < 0.7 ? &vecs[near] : NULL, &q);
        float thr = round % 50 == 0 ? (float)(unit(&seed) - 0.5) : (float)(0.02 + unit(&seed));
        size_t n_want = 0;
        for (uint32_t s = 0; s < SLOTS; s++) {
            if (!vecs[s].n)
                continue;
            float sim = cache_sparse_dot(&q, &vecs[s]);
            if (sim >= thr)
                want[n_want++] = (cache_postings_hit_t){s, sim};
        }
        cache_postings_hit_t *got;
        size_t n_got = cache_postings_search(p, &q, thr, &got);
        cr_assert_eq(n_got, n_want, "round %d threshold %.4f: %zu hits, the scan finds %zu", round,
                     thr, n_got, n_want);
        qsort(got, n_got, sizeof(*got), by_slot);
        for (size_t i = 0; i < n_got; i++) {
            cr_assert_eq(got[i].slot, want[i].slot, "round %d: slot %u vs %u", round, got[i].slot,
                         want[i].slot);
            cr_assert_eq(memcmp(&got[i].similarity, &want[i].similarity, sizeof(float)), 0,
                         "round %d slot %u: %g vs %g", round, got[i].slot, got[i].similarity,
                         want[i].similarity);
        }
        searches++;
        total_hits += n_got;
    }
    cr_assert_gt(total_hits, searches / 4, "the queries should find something: %zu hits",
                 total_hits);
    for (uint32_t s = 0; s < SLOTS; s++)
        cache_sparse_free(&vecs[s]);
    cache_sparse_free(&q);
    free(vecs);
    free(want);
    cache_postings_destroy(p);
}

Test(postings, removal_frees_the_slot_and_its_postings)
{
    cache_postings_t *p = cache_postings_create();
    uint32_t ia[] = {3, 70, 900};
    float va[] = {0.6f, -0.01f, 0.79993750f};
    cache_sparse_t a = {ia, va, 3, 3};
    cache_postings_hit_t *hits;
    cr_assert_eq(cache_postings_add(p, 5, &a), LS_OK);
    cr_assert_eq(cache_postings_search(p, &a, 0.99f, &hits), 1);
    cr_assert_eq(hits[0].slot, 5);
    size_t bytes = cache_postings_bytes(p);
    cr_assert_gt(bytes, 0);
    cache_postings_remove(p, 5);
    cache_postings_remove(p, 5);
    cache_postings_remove(p, 100000);
    cr_assert_eq(cache_postings_count(p), 0);
    cr_assert_eq(cache_postings_search(p, &a, 0.5f, &hits), 0);
    cr_assert_eq(cache_postings_add(p, 5, &a), LS_OK, "the slot is free again");
    cr_assert_eq(cache_postings_search(p, &a, 0.5f, &hits), 1);
    cache_sparse_t empty = CACHE_SPARSE_INIT;
    cr_assert_eq(cache_postings_add(p, 6, &empty), LS_ERR_INVALID);
    cache_postings_destroy(p);
    cache_postings_destroy(NULL);
}

/* Many distinct features come and go: emptied lists are dropped and the table shrinks. */
Test(postings, churn_of_features_is_compacted)
{
    cache_postings_t *p = cache_postings_create();
    uint32_t idx[8];
    float val[8];
    for (int i = 0; i < 8; i++)
        val[i] = 0.35355339f;
    cache_sparse_t v = {idx, val, 8, 8};
    size_t peak = 0;
    for (uint32_t round = 0; round < 20000; round++) {
        for (uint32_t i = 0; i < 8; i++)
            idx[i] = round * 8 + i;
        cr_assert_eq(cache_postings_add(p, round % 4, &v), LS_OK);
        cache_postings_hit_t *hits;
        cr_assert_eq(cache_postings_search(p, &v, 0.9f, &hits), 1);
        if (round >= 3)
            cache_postings_remove(p, (round - 3) % 4);
        if (cache_postings_bytes(p) > peak)
            peak = cache_postings_bytes(p);
    }
    cr_assert_lt(peak, 64 * 1024, "lists of gone features must not pile up: %zu bytes", peak);
    cache_postings_destroy(p);
}
