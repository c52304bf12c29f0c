/* test_breaker.c - libs/cache/cache_breaker.c: per-server circuit breakers. */
#include "cache/cache_breaker.h"

#include <criterion/criterion.h>

Test(breaker, opens_after_threshold_probes_and_closes)
{
    cache_breaker_t *b = cache_breaker_create(2, 2, 100);
    cr_assert(cache_breaker_allow(b, 0, 0));
    cr_assert_not(cache_breaker_failure(b, 0, 0));
    cr_assert_not(cache_breaker_degraded(b));
    cr_assert(cache_breaker_failure(b, 0, 0), "second failure opens");
    cr_assert(cache_breaker_degraded(b));
    cr_assert(cache_breaker_is_open(b, 0));
    cr_assert_not(cache_breaker_is_open(b, 1));
    cr_assert(cache_breaker_allow(b, 1, 0), "other servers are unaffected");
    cr_assert_not(cache_breaker_allow(b, 0, 50));
    cr_assert(cache_breaker_allow(b, 0, 100), "one probe per interval");
    cr_assert_not(cache_breaker_allow(b, 0, 101));
    cr_assert_not(cache_breaker_failure(b, 0, 101), "still open: no transition");
    cr_assert(cache_breaker_allow(b, 0, 200));
    cr_assert(cache_breaker_success(b, 0), "a successful probe closes");
    cr_assert_not(cache_breaker_degraded(b));
    cr_assert(cache_breaker_allow(b, 0, 201));
    cr_assert_not(cache_breaker_success(b, 0));
    cr_assert_not(cache_breaker_allow(b, 5, 0), "no such server");
    cache_breaker_destroy(b);
    cache_breaker_destroy(NULL);
}

Test(breaker, success_resets_the_failure_run)
{
    cache_breaker_t *b = cache_breaker_create(1, 3, 100);
    cache_breaker_failure(b, 0, 0);
    cache_breaker_failure(b, 0, 0);
    cache_breaker_success(b, 0);
    cache_breaker_failure(b, 0, 0);
    cache_breaker_failure(b, 0, 0);
    cr_assert_not(cache_breaker_degraded(b));
    cache_breaker_destroy(b);
}
