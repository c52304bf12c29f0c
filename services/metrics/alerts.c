#include "alerts.h"

#include <math.h>
#include <stdio.h>

void alerts_config_init(alerts_config_t *cfg)
{
    cfg->ttft_p95_s = 0.5;
    cfg->e2e_p95_s = 0.8;
    cfg->error_rate = 0.01;
    cfg->cache_hit_rate = 0.05;
    cfg->cache_min_rps = 0.5;
    cfg->queue_saturation = 0.9;
}

static void set(alert_t *a, const char *name, const char *severity, double value, double threshold,
                bool crossed)
{
    a->name = name;
    a->severity = severity;
    a->value = value;
    a->threshold = threshold;
    a->crossed = crossed;
}

/* Comparisons with NAN are false: no data, not crossed. */
void alerts_eval(const alerts_config_t *cfg, const alerts_input_t *in, alert_t out[ALERTS_N])
{
    alert_t *a = out;
    set(a, "LlmserveTTFTHigh", "critical", in->ttft_p95_s, cfg->ttft_p95_s,
        in->ttft_p95_s > cfg->ttft_p95_s);
    snprintf(a->summary, sizeof(a->summary), "TTFT p95 above %g ms", cfg->ttft_p95_s * 1000);
    a++;
    set(a, "LlmserveE2EHigh", "warning", in->e2e_p95_s, cfg->e2e_p95_s,
        in->e2e_p95_s > cfg->e2e_p95_s);
    snprintf(a->summary, sizeof(a->summary), "End-to-end latency p95 above %g ms",
             cfg->e2e_p95_s * 1000);
    a++;
    set(a, "LlmserveErrorRateHigh", "critical", in->error_rate, cfg->error_rate,
        in->error_rate > cfg->error_rate);
    snprintf(a->summary, sizeof(a->summary), "Error rate above %g %%", cfg->error_rate * 100);
    a++;
    set(a, "LlmserveCacheHitRateLow", "warning", in->cache_hit_rate, cfg->cache_hit_rate,
        in->cache_hit_rate < cfg->cache_hit_rate && in->requests_per_second > cfg->cache_min_rps);
    snprintf(a->summary, sizeof(a->summary),
             "Cache hit rate below %g %% at more than %g requests/s", cfg->cache_hit_rate * 100,
             cfg->cache_min_rps);
    a++;
    set(a, "LlmserveInstanceDown", "critical", in->instances_down, 0, in->instances_down > 0);
    snprintf(a->summary, sizeof(a->summary), "An instance stopped reporting");
    a++;
    set(a, "LlmserveQueueSaturated", "warning", in->queue_saturation, cfg->queue_saturation,
        in->queue_saturation > cfg->queue_saturation);
    if (in->queue_pool)
        snprintf(a->summary, sizeof(a->summary), "Queue of pool %s above %g %% of its limit",
                 in->queue_pool, cfg->queue_saturation * 100);
    else
        snprintf(a->summary, sizeof(a->summary), "A pool's queue above %g %% of its limit",
                 cfg->queue_saturation * 100);
}
