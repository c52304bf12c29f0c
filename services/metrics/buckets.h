/*
 * buckets.h - histogram bucket layouts per metric name, and quantiles estimated from
 * bucket counts as Prometheus's histogram_quantile does.  Thread-safe (no state).
 */
#ifndef METRICS_BUCKETS_H
#define METRICS_BUCKETS_H

#include <stddef.h>
#include <stdint.h>

/* Upper bounds of one layout, strictly increasing and finite; the +Inf bucket is
 * implied (a histogram keeps n + 1 counts). */
typedef struct {
    const double *bounds;
    size_t n;
} buckets_t;

/* The layout for histogram `name` (static; never NULL):
 *   names ending in _seconds: 0.1 ms .. 80 s, fine at the low end, long at the top;
 *   llmserve_inference_batch_size: powers of two 1 .. 512;
 *   anything else: Prometheus's default buckets 0.005 .. 10. */
const buckets_t *buckets_for(const char *name);

/* Index of the bucket value falls into: the first bound >= value, or n for +Inf. */
size_t buckets_index(const buckets_t *b, double value);

/* The q-quantile (0 < q < 1) of the observations counted in counts[0..b->n] (per
 * bucket, not cumulative; counts[b->n] is the +Inf bucket), interpolated linearly
 * within the bucket the rank falls into, with 0 as the lower edge of the first bucket
 * (histogram_quantile's rules: a rank in the +Inf bucket gives the highest finite
 * bound).  Returns NAN when there are no observations. */
double buckets_quantile(const buckets_t *b, const uint64_t *counts, double q);

#endif
