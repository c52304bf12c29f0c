/* test_lru.c - libs/cache/cache_lru.c: the L1. */
#include "base/err.h"
#include "cache/cache_lru.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static cache_digest_t key(unsigned i)
{
    cache_digest_t d = {{0}};
    memcpy(d.b, &i, sizeof(i));
    d.b[31] = (uint8_t)i;
    return d;
}

static bool has(cache_lru_t *l, unsigned i, int64_t now)
{
    cache_digest_t k = key(i);
    uint8_t *v;
    size_t n;
    int rc = cache_lru_get(l, &k, now, &v, &n);
    if (rc == LS_OK)
        free(v);
    return rc == LS_OK;
}

static void put(cache_lru_t *l, unsigned i, size_t len, int64_t exp, uint64_t tag)
{
    char *v = malloc(len);
    memset(v, (int)i, len);
    cache_digest_t k = key(i);
    cr_assert_eq(cache_lru_put(l, &k, tag, exp, v, len, NULL), LS_OK);
    free(v);
}

Test(lru, put_get_and_replace)
{
    cache_lru_t *l = cache_lru_create(1 << 20);
    put(l, 1, 10, 100, 0);
    cache_digest_t k = key(1);
    uint8_t *v;
    size_t n;
    cr_assert_eq(cache_lru_get(l, &k, 0, &v, &n), LS_OK);
    cr_assert_eq(n, 10);
    cr_assert_eq(v[9], 1);
    free(v);
    cache_lru_put(l, &k, 0, 100, "xyz", 3, NULL);
    cr_assert_eq(cache_lru_get(l, &k, 0, &v, &n), LS_OK);
    cr_assert_eq(n, 3);
    cr_assert_eq(memcmp(v, "xyz", 3), 0);
    free(v);
    cache_lru_stats_t st;
    cache_lru_stats(l, &st);
    cr_assert_eq(st.entries, 1);
    cr_assert_eq(st.bytes, cache_lru_charge(3));
    cache_lru_destroy(l);
}

Test(lru, least_recently_used_goes_first_and_bytes_stay_bounded)
{
    size_t per = cache_lru_charge(100);
    cache_lru_t *l = cache_lru_create(per * 3);
    put(l, 1, 100, 100, 0);
    put(l, 2, 100, 100, 0);
    put(l, 3, 100, 100, 0);
    cr_assert(has(l, 1, 0)); /* 1 is now the most recent; 2 the least */
    put(l, 4, 100, 100, 0);
    cr_assert_not(has(l, 2, 0));
    cr_assert(has(l, 1, 0));
    cr_assert(has(l, 3, 0));
    cr_assert(has(l, 4, 0));
    /* One big entry pushes out as many as it needs, and says how many. */
    char *v5 = calloc(1, 100 + per);
    cache_digest_t k5 = key(5);
    size_t pushed = 0;
    cr_assert_eq(cache_lru_put(l, &k5, 0, 100, v5, 100 + per, &pushed), LS_OK);
    free(v5);
    cr_assert_eq(pushed, 2);
    cache_lru_stats_t st;
    cache_lru_stats(l, &st);
    cr_assert_leq(st.bytes, st.max_bytes);
    cr_assert_eq(st.entries, 2, "the big entry and the most recent small one");
    cr_assert_eq(st.evictions, 3);
    cr_assert(has(l, 4, 0));
    /* Larger than the whole cache: refused, nothing evicted. */
    cache_digest_t k = key(9);
    char *big = calloc(1, per * 3);
    size_t evicted = 99;
    cr_assert_eq(cache_lru_put(l, &k, 0, 100, big, per * 3, &evicted), LS_ERR_FULL);
    cr_assert_eq(evicted, 0);
    free(big);
    cr_assert(has(l, 5, 0));
    cache_lru_destroy(l);
}

Test(lru, entries_expire)
{
    cache_lru_t *l = cache_lru_create(1 << 20);
    put(l, 1, 10, 1000, 0);
    cr_assert(has(l, 1, 999));
    cr_assert_not(has(l, 1, 1000));
    cache_lru_stats_t st;
    cache_lru_stats(l, &st);
    cr_assert_eq(st.entries, 0, "an expired entry is dropped when seen");
    cache_lru_destroy(l);
}

Test(lru, remove_and_remove_by_model_tag)
{
    cache_lru_t *l = cache_lru_create(1 << 20);
    for (unsigned i = 0; i < 100; i++)
        put(l, i, 8, 100, i % 3 == 0 ? 77 : 5);
    cache_digest_t k = key(1);
    cr_assert(cache_lru_remove(l, &k));
    cr_assert_not(cache_lru_remove(l, &k));
    cr_assert_eq(cache_lru_remove_tag(l, 77), 34);
    for (unsigned i = 0; i < 100; i++)
        cr_assert_eq(has(l, i, 0), i % 3 != 0 && i != 1, "entry %u", i);
    cache_lru_destroy(l);
}

Test(lru, disabled_cache_holds_nothing)
{
    cache_lru_t *l = cache_lru_create(0);
    cache_digest_t k = key(1);
    cr_assert_eq(cache_lru_put(l, &k, 0, 100, "x", 1, NULL), LS_ERR_FULL);
    cr_assert_not(has(l, 1, 0));
    cache_lru_destroy(l);
    cache_lru_destroy(NULL);
}

Test(lru, many_entries_grow_the_table)
{
    cache_lru_t *l = cache_lru_create(64 << 20);
    for (unsigned i = 0; i < 20000; i++)
        put(l, i, 4, 100, 0);
    for (unsigned i = 0; i < 20000; i += 97)
        cr_assert(has(l, i, 0));
    cache_lru_destroy(l);
}

static void *hammer(void *arg)
{
    cache_lru_t *l = arg;
    for (unsigned i = 0; i < 20000; i++) {
        cache_digest_t k = key(i % 500);
        char v[64];
        memset(v, 1, sizeof(v));
        cache_lru_put(l, &k, i % 4, 100, v, 1 + i % 64, NULL);
        uint8_t *out;
        size_t n;
        if (cache_lru_get(l, &k, 0, &out, &n) == LS_OK)
            free(out);
        if (i % 1000 == 0)
            cache_lru_remove_tag(l, 1);
    }
    return NULL;
}

Test(lru, concurrent_use_keeps_the_bound)
{
    cache_lru_t *l = cache_lru_create(16 * 1024);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer, l);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    cache_lru_stats_t st;
    cache_lru_stats(l, &st);
    cr_assert_leq(st.bytes, st.max_bytes);
    cache_lru_destroy(l);
}
