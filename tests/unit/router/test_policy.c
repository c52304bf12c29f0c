/*
 * test_policy.c - services/router/policy.c: tiers, fallbacks, TTFT budgets.
 */
#include "base/err.h"
#include "policy.h"

#include <criterion/criterion.h>
#include <string.h>

Test(policy, two_pools_by_default_shape)
{
    router_policy_t p;
    char err[128];
    cr_assert_eq(router_policy_parse(&p, "small", "large=0.3", "", "", 10000, err, sizeof(err)),
                 LS_OK, "%s", err);
    double th;
    cr_assert_str_eq(router_policy_pool_for(&p, 0.1, &th), "small");
    cr_assert_float_eq(th, 0.3, 1e-12);
    cr_assert_str_eq(router_policy_pool_for(&p, 0.3, &th), "large");
    cr_assert_str_eq(router_policy_fallback(&p, "large"), "small");
    cr_assert_null(router_policy_fallback(&p, "small"));
    cr_assert_eq(router_policy_ttft_ms(&p, "large"), 10000);
    cr_assert_eq(router_policy_ttft_ms(&p, "small"), 0, "no fallback, no budget");
}

Test(policy, three_pools_chained_fallbacks_and_budgets)
{
    router_policy_t p;
    char err[128];
    cr_assert_eq(router_policy_parse(&p, "small", "large=0.6, medium=0.25",
                                     "large=medium,medium=small", "large=1500,medium=0", 5000,
                                     err, sizeof(err)),
                 LS_OK, "%s", err);
    double th;
    cr_assert_str_eq(router_policy_pool_for(&p, 0.2, &th), "small");
    cr_assert_str_eq(router_policy_pool_for(&p, 0.3, &th), "medium");
    cr_assert_str_eq(router_policy_pool_for(&p, 0.9, &th), "large");
    cr_assert_float_eq(th, 0.6, 1e-12);
    cr_assert_str_eq(router_policy_fallback(&p, "large"), "medium");
    cr_assert_str_eq(router_policy_fallback(&p, "medium"), "small");
    cr_assert_eq(router_policy_ttft_ms(&p, "large"), 1500);
    cr_assert_eq(router_policy_ttft_ms(&p, "medium"), 0);
    cr_assert_str_eq(router_policy_fallback(&p, "other"), "small", "unlisted pools fall back");
    cr_assert_eq(router_policy_ttft_ms(&p, "other"), 5000);
}

Test(policy, none_disables_a_fallback)
{
    router_policy_t p;
    cr_assert_eq(router_policy_parse(&p, "small", "large=0.3", "large=none", "", 100, NULL, 0),
                 LS_OK);
    cr_assert_null(router_policy_fallback(&p, "large"));
    cr_assert_eq(router_policy_ttft_ms(&p, "large"), 0);
}

static void bad(const char *def, const char *tiers, const char *fb, const char *ttft,
                const char *want)
{
    router_policy_t p;
    char err[160] = "";
    cr_assert_eq(router_policy_parse(&p, def, tiers, fb, ttft, 0, err, sizeof(err)),
                 LS_ERR_INVALID);
    cr_assert(strstr(err, want), "error '%s' lacks '%s'", err, want);
}

Test(policy, bad_settings_are_refused)
{
    bad("Small", "", "", "", "--default-pool");
    bad("small", "large", "", "", "POOL=VALUE");
    bad("small", "large=x", "", "", "threshold");
    bad("small", "large=-1", "", "", "threshold");
    bad("small", "", "large=large", "", "itself");
    bad("small", "", "", "large=-5", "--pool-ttft-ms");
}
