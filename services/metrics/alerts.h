/*
 * alerts.h - the alert thresholds of deploy/prometheus/alerts.yml, evaluated by the
 * collector on its own window so that /api/summary can say which are crossed now.  The
 * collector does not notify anyone: Prometheus's rules do that.  Thread-safe (no
 * state).
 */
#ifndef METRICS_ALERTS_H
#define METRICS_ALERTS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    double ttft_p95_s;       /* LlmserveTTFTHigh: TTFT p95 above this (critical) */
    double e2e_p95_s;        /* LlmserveE2EHigh: end-to-end p95 above this (warning) */
    double error_rate;       /* LlmserveErrorRateHigh: non-OK share above this (critical) */
    double cache_hit_rate;   /* LlmserveCacheHitRateLow: hit share below this (warning) ... */
    double cache_min_rps;    /* ... while requests per second are above this */
    double queue_saturation; /* LlmserveQueueSaturated: a pool's waiting / queue_limit above
                                this (warning) */
} alerts_config_t;

/* Fills cfg with the defaults: 0.5 s, 0.8 s, 0.01, 0.05 at more than 0.5 requests/s,
 * 0.9. */
void alerts_config_init(alerts_config_t *cfg);

/* What the rules look at; NAN where there is no data (a rule with no data is not
 * crossed). */
typedef struct {
    double ttft_p95_s, e2e_p95_s;
    double error_rate, cache_hit_rate;
    double requests_per_second; /* of requests that consulted the cache (cache != bypass) */
    double instances_down;   /* LlmserveInstanceDown: crossed when above 0 (warning) */
    double queue_saturation; /* the largest over the pools */
    const char *queue_pool;  /* the pool it belongs to, or NULL */
} alerts_input_t;

typedef struct {
    const char *name;     /* static */
    const char *severity; /* "critical" or "warning" */
    char summary[384];    /* room for a pool name of 256 bytes */
    double value;         /* NAN without data */
    double threshold;
    bool crossed;
} alert_t;

#define ALERTS_N 6

/* Evaluates every rule into out, in a fixed order. */
void alerts_eval(const alerts_config_t *cfg, const alerts_input_t *in, alert_t out[ALERTS_N]);

#endif
