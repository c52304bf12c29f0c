/* test_gen.c - libs/cache/cache_gen.c: model key generations. */
#include "cache/cache_gen.h"

#include <criterion/criterion.h>
#include <stdio.h>

Test(gen, unknown_then_fresh_then_stale)
{
    cache_gen_t *g = cache_gen_create(8);
    uint64_t v;
    cr_assert_eq(cache_gen_get(g, "m", 0, 1000, &v), CACHE_GEN_UNKNOWN);
    cr_assert_eq(v, 0);
    bool wb;
    cr_assert_eq(cache_gen_merge(g, "m", 500, 10, &wb), 500);
    cr_assert_not(wb);
    cr_assert_eq(cache_gen_get(g, "m", 500, 1000, &v), CACHE_GEN_FRESH);
    cr_assert_eq(v, 500);
    cr_assert_eq(cache_gen_get(g, "m", 1010, 1000, &v), CACHE_GEN_STALE);
    cr_assert_eq(v, 500);
    cache_gen_destroy(g);
}

Test(gen, never_goes_down_and_bumps_are_written_back)
{
    cache_gen_t *g = cache_gen_create(8);
    bool wb;
    uint64_t v;
    cache_gen_merge(g, "m", 100, 0, &wb);
    cr_assert_eq(cache_gen_bump(g, "m", 50, 0), 101, "old + 1 when above the floor");
    cr_assert_eq(cache_gen_bump(g, "m", 1000, 0), 1000, "the floor when higher");
    cr_assert(cache_gen_pending(g));
    char name[16];
    cr_assert(cache_gen_next_pending(g, name, sizeof(name)));
    cr_assert_str_eq(name, "m");
    /* memcached still has the old value (down during the bump): local wins, write back. */
    cr_assert_eq(cache_gen_merge(g, "m", 100, 5, &wb), 1000);
    cr_assert(wb);
    cache_gen_written(g, "m", 1000);
    cr_assert_not(cache_gen_pending(g));
    /* Another instance moved further: take its value. */
    cr_assert_eq(cache_gen_merge(g, "m", 2000, 6, &wb), 2000);
    cr_assert_not(wb);
    cr_assert_eq(cache_gen_get(g, "m", 6, 1000, &v), CACHE_GEN_FRESH);
    cr_assert_eq(v, 2000);
    cache_gen_destroy(g);
}

Test(gen, table_is_bounded_and_keeps_unwritten_bumps)
{
    cache_gen_t *g = cache_gen_create(4);
    bool wb;
    cache_gen_bump(g, "dirty", 10, 0);
    for (int i = 0; i < 50; i++) {
        char name[16];
        snprintf(name, sizeof(name), "m%d", i);
        cache_gen_merge(g, name, 1, i + 1, &wb);
    }
    uint64_t v;
    cr_assert_neq(cache_gen_get(g, "dirty", 100, 1000, &v), CACHE_GEN_UNKNOWN);
    cr_assert_eq(v, 10);
    cache_gen_destroy(g);
    cache_gen_destroy(NULL);
}
