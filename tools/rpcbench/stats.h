/*
 * stats.h - timing and the few statistics the benchmark reports.  Thread-safe.
 */
#ifndef BENCH_STATS_H
#define BENCH_STATS_H

#include <stddef.h>
#include <stdint.h>

/* Nanoseconds on CLOCK_MONOTONIC.  ls_now_us's microseconds are too coarse for a
 * 40 us round trip. */
int64_t bench_now_ns(void);

/* Sorts v (n entries) in place, ascending. */
void bench_sort_i64(int64_t *v, size_t n);

/* The q-quantile (0 < q <= 1) of sorted v by nearest rank: the smallest value with at
 * least q * n values at or below it.  n must be at least 1. */
int64_t bench_quantile_i64(const int64_t *sorted, size_t n, double q);

/* The median of v (n >= 1 entries; v is not changed): the middle value, or the mean of
 * the two middle ones. */
double bench_median(const double *v, size_t n);

#endif
