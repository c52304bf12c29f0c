/*
 * test_buckets.c - bucket layouts per name and quantiles as histogram_quantile
 * computes them.
 */
#include "buckets.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

Test(buckets, layouts_by_name)
{
    const buckets_t *lat = buckets_for("llmserve_ttft_seconds");
    cr_assert_eq(lat->n, 24);
    cr_assert_float_eq(lat->bounds[0], 0.0001, 1e-12);
    cr_assert_float_eq(lat->bounds[23], 80, 1e-12);
    const buckets_t *batch = buckets_for("llmserve_inference_batch_size");
    cr_assert_eq(batch->n, 10);
    cr_assert_float_eq(batch->bounds[9], 512, 1e-12);
    const buckets_t *def = buckets_for("something_else");
    cr_assert_eq(def->n, 11);
    cr_assert_float_eq(def->bounds[10], 10, 1e-12);
    cr_assert_eq(buckets_for("x_seconds"), lat);
    for (const buckets_t *b = lat; b; b = b == lat ? batch : b == batch ? def : NULL)
        for (size_t i = 1; i < b->n; i++)
            cr_assert_lt(b->bounds[i - 1], b->bounds[i]);
}

Test(buckets, index_is_the_first_bound_at_or_above)
{
    const buckets_t *b = buckets_for("llmserve_inference_batch_size"); /* 1 2 4 ... 512 */
    cr_assert_eq(buckets_index(b, -3), 0);
    cr_assert_eq(buckets_index(b, 1), 0);
    cr_assert_eq(buckets_index(b, 1.5), 1);
    cr_assert_eq(buckets_index(b, 2), 1);
    cr_assert_eq(buckets_index(b, 512), 9);
    cr_assert_eq(buckets_index(b, 513), 10); /* +Inf */
}

/* Counts per bucket of the batch layout (1 2 4 8 ... 512, +Inf). */
static uint64_t C[11];

Test(buckets, quantile_interpolates_within_the_bucket)
{
    const buckets_t *b = buckets_for("llmserve_inference_batch_size");
    memset(C, 0, sizeof(C));
    C[2] = 10; /* (2, 4]: ten observations */
    /* rank 5 of 10 in (2, 4]: 2 + 2 * 5 / 10 = 3 */
    cr_assert_float_eq(buckets_quantile(b, C, 0.5), 3.0, 1e-9);
    /* rank 9.5: 2 + 2 * 0.95 */
    cr_assert_float_eq(buckets_quantile(b, C, 0.95), 3.9, 1e-9);
    C[0] = 10; /* (0, 1]: ten more; rank 10 of 20 ends the first bucket */
    cr_assert_float_eq(buckets_quantile(b, C, 0.5), 1.0, 1e-9);
    /* rank 2 in the first bucket: 0 + 1 * 2 / 10 */
    cr_assert_float_eq(buckets_quantile(b, C, 0.1), 0.2, 1e-9);
    /* rank 19.8 of 20: 2 + 2 * 9.8 / 10 */
    cr_assert_float_eq(buckets_quantile(b, C, 0.99), 3.96, 1e-9);
}

Test(buckets, quantile_in_inf_bucket_is_the_highest_bound)
{
    const buckets_t *b = buckets_for("llmserve_inference_batch_size");
    memset(C, 0, sizeof(C));
    C[10] = 5;
    cr_assert_float_eq(buckets_quantile(b, C, 0.5), 512, 1e-9);
    C[0] = 95;
    cr_assert_float_eq(buckets_quantile(b, C, 0.99), 512, 1e-9);
    cr_assert_float_eq(buckets_quantile(b, C, 0.5), 50.0 / 95, 1e-9);
}

Test(buckets, quantile_without_observations_is_nan)
{
    const buckets_t *b = buckets_for("x_seconds");
    uint64_t zero[25] = {0};
    cr_assert(isnan(buckets_quantile(b, zero, 0.5)));
}

Test(buckets, quantile_skips_empty_buckets_below_the_rank)
{
    const buckets_t *b = buckets_for("llmserve_inference_batch_size");
    memset(C, 0, sizeof(C));
    C[1] = 1; /* (1, 2] */
    C[5] = 1; /* (16, 32] */
    /* rank 1 of 2 lands at the end of (1, 2]; rank 1.9 in (16, 32] at 0.9 of it */
    cr_assert_float_eq(buckets_quantile(b, C, 0.5), 2, 1e-9);
    cr_assert_float_eq(buckets_quantile(b, C, 0.95), 16 + 16 * 0.9, 1e-9);
}
