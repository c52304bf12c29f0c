#include "buckets.h"

#include "svc/metric_names.h"

#include <math.h>
#include <string.h>

/* Latencies: sub-millisecond steps for cache lookups and forward steps, long top
 * buckets for requests that generate for a minute (vLLM's users asked for both). */
static const double LATENCY[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                 0.05,   0.075,   0.1,    0.15,  0.2,    0.3,   0.5,  0.75,
                                 1,      1.5,     2.5,    5,     10,     20,    40,   80};
static const double BATCH[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
static const double DEFAULT[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

#define LAYOUT(a)                                                                                  \
    {                                                                                              \
        a, sizeof(a) / sizeof(a[0])                                                                \
    }
static const buckets_t LATENCY_LAYOUT = LAYOUT(LATENCY);
static const buckets_t BATCH_LAYOUT = LAYOUT(BATCH);
static const buckets_t DEFAULT_LAYOUT = LAYOUT(DEFAULT);

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

const buckets_t *buckets_for(const char *name)
{
    if (strcmp(name, M_INF_BATCH) == 0)
        return &BATCH_LAYOUT;
    if (ends_with(name, "_seconds"))
        return &LATENCY_LAYOUT;
    return &DEFAULT_LAYOUT;
}

size_t buckets_index(const buckets_t *b, double value)
{
    size_t lo = 0, hi = b->n; /* the answer is in [lo, hi] */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (value <= b->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

double buckets_quantile(const buckets_t *b, const uint64_t *counts, double q)
{
    uint64_t total = 0;
    for (size_t i = 0; i <= b->n; i++)
        total += counts[i];
    if (total == 0)
        return NAN;
    double rank = q * (double)total;
    uint64_t below = 0; /* observations in the buckets before i */
    for (size_t i = 0; i <= b->n; i++) {
        uint64_t upto = below + counts[i];
        if ((double)upto >= rank && counts[i] > 0) {
            if (i == b->n) /* +Inf: nothing to interpolate towards */
                return b->n > 0 ? b->bounds[b->n - 1] : NAN;
            double hi = b->bounds[i];
            double lo = i == 0 ? 0.0 : b->bounds[i - 1];
            if (i == 0 && hi <= 0) /* the first bucket ends at or below zero */
                return hi;
            return lo + (hi - lo) * ((rank - (double)below) / (double)counts[i]);
        }
        below = upto;
    }
    return b->bounds[b->n - 1]; /* not reached: rank <= total */
}
