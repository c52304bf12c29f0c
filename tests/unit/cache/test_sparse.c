/* test_sparse.c - libs/cache/cache_sparse.c: sparse vectors and their dot product. */
#define _GNU_SOURCE
#include "base/err.h"
#include "cache/cache_embed.h"
#include "cache/cache_sparse.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#define DIM 1024

/* A random sparse vector of about `fill` of DIM entries, and the same written densely. */
static void random_vec(unsigned *seed, double fill, cache_sparse_t *sv, float *dense)
{
    memset(dense, 0, DIM * sizeof(float));
    sv->n = 0;
    cr_assert_eq(cache_sparse_reserve(sv, DIM), LS_OK);
    for (uint32_t i = 0; i < DIM; i++) {
        if (rand_r(seed) > fill * RAND_MAX)
            continue;
        float v = (float)rand_r(seed) / RAND_MAX - 0.5f;
        if (v == 0)
            continue;
        sv->index[sv->n] = i;
        sv->value[sv->n++] = v;
        dense[i] = v;
    }
}

Test(sparse, dot_equals_the_dense_dot_bit_for_bit)
{
    unsigned seed = 7;
    cache_sparse_t a = CACHE_SPARSE_INIT, b = CACHE_SPARSE_INIT;
    float da[DIM], db[DIM];
    for (int round = 0; round < 500; round++) {
        random_vec(&seed, round % 2 ? 0.05 : 0.5, &a, da);
        random_vec(&seed, round % 3 ? 0.1 : 0.9, &b, db);
        float s = cache_sparse_dot(&a, &b), d = cache_embed_cosine(da, db, DIM);
        cr_assert_eq(memcmp(&s, &d, sizeof(s)), 0, "round %d: %g vs %g", round, s, d);
        cr_assert_eq(cache_sparse_dot(&a, &b), cache_sparse_dot(&b, &a));
    }
    cache_sparse_free(&a);
    cache_sparse_free(&b);
}

Test(sparse, reserve_copy_and_free)
{
    cache_sparse_t a = CACHE_SPARSE_INIT, b = CACHE_SPARSE_INIT, empty = CACHE_SPARSE_INIT;
    cr_assert_eq(cache_sparse_dot(&a, &b), 0.0f);
    cr_assert_eq(cache_sparse_reserve(&a, 3), LS_OK);
    cr_assert_geq(a.cap, 3);
    a.index[0] = 2, a.value[0] = 0.5f;
    a.index[1] = 9, a.value[1] = -0.25f;
    a.n = 2;
    cr_assert_eq(cache_sparse_reserve(&a, 1000), LS_OK, "growing keeps the pairs");
    cr_assert_eq(a.n, 2);
    cr_assert_eq(a.index[1], 9);
    cr_assert_eq(a.value[1], -0.25f);
    cr_assert_eq(cache_sparse_copy(&b, &a), LS_OK);
    cr_assert_eq(b.n, 2);
    cr_assert_eq(cache_sparse_dot(&a, &b), 0.5f * 0.5f + 0.25f * 0.25f);
    cr_assert_eq(cache_sparse_copy(&b, &empty), LS_OK);
    cr_assert_eq(b.n, 0);
    cache_sparse_free(&a);
    cr_assert_null(a.index);
    cr_assert_eq(a.n + a.cap, 0);
    cache_sparse_free(&a);
    cache_sparse_free(&b);
    cache_sparse_free(NULL);
}
