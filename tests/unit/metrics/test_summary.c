/*
 * test_summary.c - /api/summary from a store on a clock the test sets: the fields of
 * API.md, nulls where there is no data, per-pool figures, instances, alerts and
 * history.
 */
#define _GNU_SOURCE
#include "store.h"
#include "summary.h"
#include "support/metrics_stream.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0 1000000000ll
#define SEC(s) (T0 + (int64_t)((s)*1e6))
#define WALL 1764979200000000ll

static store_t *S;
static summary_t *SM;
static cJSON *DOC;

static void init(void)
{
    store_config_t c;
    store_config_init(&c);
    S = store_create(&c, T0);
    alerts_config_t a;
    alerts_config_init(&a);
    SM = summary_create(S, 60, &a);
}

static void fini(void)
{
    cJSON_Delete(DOC);
    summary_destroy(SM);
    store_destroy(S);
}

static void render(int64_t now)
{
    size_t len = 0;
    char *text = summary_render(SM, now, WALL, &len);
    cr_assert_not_null(text);
    cr_assert_eq(strlen(text), len);
    cJSON_Delete(DOC);
    DOC = cJSON_Parse(text);
    cr_assert_not_null(DOC, "not JSON: %s", text);
    free(text);
}

static cJSON *at(cJSON *o, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k; k = strtok_r(NULL, ".", &save)) {
        cr_assert(cJSON_IsObject(o), "%s: not an object at %s", path, k);
        o = cJSON_GetObjectItemCaseSensitive(o, k);
        cr_assert_not_null(o, "%s: no %s", path, k);
    }
    return o;
}

static double num(cJSON *o, const char *path)
{
    cJSON *v = at(o, path);
    cr_assert(cJSON_IsNumber(v), "%s is not a number", path);
    return v->valuedouble;
}

static void is_null(cJSON *o, const char *path)
{
    cr_assert(cJSON_IsNull(at(o, path)), "%s is not null", path);
}

static cJSON *find(cJSON *arr, const char *key, const char *value)
{
    cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(e, key);
        if (cJSON_IsString(v) && strcmp(v->valuestring, value) == 0)
            return e;
    }
    cr_assert_fail("no element with %s=%s", key, value);
    return NULL;
}

static void apply(store_inst_t *in, metrics_report_t *r, int64_t now)
{
    store_ack_t a;
    store_apply(S, in, metrics_report_msg(r), now, &a);
    metrics_report_free(r);
    cr_assert_eq(a.rejected, 0, "%s", a.message);
}

Test(summary, empty_collector_has_every_field_and_nulls, .init = init, .fini = fini)
{
    render(SEC(5.5));
    cr_assert_float_eq(num(DOC, "now"), WALL / 1e6, 1e-6);
    cr_assert_float_eq(num(DOC, "window_seconds"), 6, 1e-9);
    static const char *const NULLS[] = {"overall.requests_per_second",
                                        "overall.tokens_per_second",
                                        "overall.error_rate",
                                        "overall.cache_hit_rate",
                                        "overall.in_flight",
                                        "overall.queue_depth",
                                        "overall.ttft.p50",
                                        "overall.itl.p95",
                                        "overall.e2e.p99"};
    for (size_t i = 0; i < sizeof(NULLS) / sizeof(NULLS[0]); i++)
        is_null(DOC, NULLS[i]);
    cr_assert_eq(cJSON_GetArraySize(at(DOC, "pools")), 0);
    cr_assert_eq(cJSON_GetArraySize(at(DOC, "instances")), 0);
    cJSON *alerts = at(DOC, "alerts");
    cr_assert_eq(cJSON_GetArraySize(alerts), ALERTS_N);
    cJSON *a;
    cJSON_ArrayForEach(a, alerts)
    {
        cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(a, "crossed")) ||
                  strcmp(cJSON_GetObjectItem(a, "name")->valuestring, "LlmserveInstanceDown") == 0);
        cr_assert(cJSON_IsString(cJSON_GetObjectItem(a, "severity")));
        cr_assert(cJSON_IsString(cJSON_GetObjectItem(a, "summary")));
        cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(a, "threshold")));
    }
    cr_assert(cJSON_IsFalse(at(find(alerts, "name", "LlmserveInstanceDown"), "crossed")));
    cJSON *h = at(DOC, "history");
    static const char *const KEYS[] = {"t",
                                       "ttft_p50",
                                       "ttft_p95",
                                       "ttft_p99",
                                       "itl_p50",
                                       "itl_p95",
                                       "itl_p99",
                                       "e2e_p50",
                                       "e2e_p95",
                                       "e2e_p99",
                                       "requests_per_second",
                                       "tokens_per_second",
                                       "cache_hit_rate",
                                       "error_rate",
                                       "queue_depth",
                                       "in_flight"};
    for (size_t i = 0; i < sizeof(KEYS) / sizeof(KEYS[0]); i++)
        cr_assert_eq(cJSON_GetArraySize(at(h, KEYS[i])), 5, "history.%s", KEYS[i]);
    cr_assert_float_eq(num(DOC, "collector.series"), 0, 1e-9);
    cr_assert_float_eq(num(DOC, "collector.series_limit"), 10000, 1e-9);
    cr_assert_float_eq(num(DOC, "collector.uptime_seconds"), 5, 1e-9);
}

Test(summary, figures_pools_instances_alerts_history, .init = init, .fini = fini)
{
    store_inst_t *r1 = store_attach(S, "router", "127.0.0.1:7000", SEC(0));
    store_inst_t *i1 = store_attach(S, "inference", "127.0.0.1:7001", SEC(0));
    metrics_report_t *r = metrics_report_new(1, NULL, NULL);
    metrics_report_counter(r, "llmserve_requests_total",
                           ((const char *[]){"pool", "small", "code", "OK", "cache", "miss", NULL}),
                           8);
    metrics_report_counter(
        r, "llmserve_requests_total",
        ((const char *[]){"pool", "small", "code", "UNAVAILABLE", "cache", "miss", NULL}), 2);
    metrics_report_counter(
        r, "llmserve_requests_total",
        ((const char *[]){"pool", "large", "code", "OK", "cache", "exact", NULL}), 10);
    metrics_report_counter(r, "llmserve_tokens_total", ((const char *[]){"pool", "small", NULL}),
                           110);
    double slow[10] = {0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6};
    metrics_report_hist(r, "llmserve_ttft_seconds", ((const char *[]){"pool", "small", NULL}), slow,
                        10);
    metrics_report_gauge(r, "llmserve_requests_in_flight",
                         ((const char *[]){"pool", "small", NULL}), 3);
    apply(r1, r, SEC(10.2));
    r = metrics_report_new(1, NULL, NULL);
    const char *const im[] = {"pool", "small", "model", "stories15M", NULL};
    metrics_report_gauge(r, "llmserve_inference_requests_running", im, 2);
    metrics_report_gauge(r, "llmserve_inference_requests_waiting", im, 95);
    metrics_report_gauge(r, "llmserve_inference_queue_limit", im, 100);
    metrics_report_gauge(r, "llmserve_inference_kv_blocks_used", im, 10);
    metrics_report_gauge(r, "llmserve_inference_kv_blocks_capacity", im, 512);
    apply(i1, r, SEC(10.3));
    summary_tick(SM, SEC(11.02)); /* samples the gauges into second 10 */
    render(SEC(11.5));

    cr_assert_float_eq(num(DOC, "window_seconds"), 12, 1e-9);
    cr_assert_float_eq(num(DOC, "overall.requests_per_second"), 20.0 / 12, 1e-9);
    cr_assert_float_eq(num(DOC, "overall.tokens_per_second"), 110.0 / 12, 1e-9);
    cr_assert_float_eq(num(DOC, "overall.error_rate"), 0.1, 1e-9);
    cr_assert_float_eq(num(DOC, "overall.cache_hit_rate"), 0.5, 1e-9);
    cr_assert_float_eq(num(DOC, "overall.in_flight"), 3, 1e-9);
    cr_assert_float_eq(num(DOC, "overall.queue_depth"), 95, 1e-9);
    cr_assert_float_eq(num(DOC, "overall.ttft.p50"), 0.5 + 0.25 * 0.5, 1e-9); /* (0.5, 0.75] */
    is_null(DOC, "overall.itl.p50");

    cJSON *pools = at(DOC, "pools");
    cr_assert_eq(cJSON_GetArraySize(pools), 2);
    cJSON *small = find(pools, "pool", "small"), *large = find(pools, "pool", "large");
    cr_assert_float_eq(num(small, "requests_per_second"), 10.0 / 12, 1e-9);
    cr_assert_float_eq(num(small, "error_rate"), 0.2, 1e-9);
    cr_assert_float_eq(num(small, "cache_hit_rate"), 0, 1e-9);
    cr_assert_float_eq(num(small, "queue_depth"), 95, 1e-9);
    cr_assert_float_eq(num(large, "cache_hit_rate"), 1, 1e-9);
    is_null(large, "queue_depth");
    is_null(large, "ttft.p95");

    cJSON *insts = at(DOC, "instances");
    cr_assert_eq(cJSON_GetArraySize(insts), 2);
    cJSON *inf = find(insts, "service", "inference"), *rt = find(insts, "service", "router");
    cr_assert_str_eq(at(inf, "instance")->valuestring, "127.0.0.1:7001");
    cr_assert(cJSON_IsTrue(at(inf, "up")));
    cr_assert_float_eq(num(inf, "last_report_seconds_ago"), 1.2, 1e-9);
    cr_assert_str_eq(at(inf, "pool")->valuestring, "small");
    cr_assert_str_eq(at(inf, "model")->valuestring, "stories15M");
    cr_assert_float_eq(num(inf, "running"), 2, 1e-9);
    cr_assert_float_eq(num(inf, "waiting"), 95, 1e-9);
    cr_assert_float_eq(num(inf, "queue_limit"), 100, 1e-9);
    cr_assert_float_eq(num(inf, "kv_used"), 10, 1e-9);
    cr_assert_float_eq(num(inf, "kv_total"), 512, 1e-9);
    is_null(rt, "pool");
    is_null(rt, "model");
    cr_assert_float_eq(num(rt, "in_flight"), 3, 1e-9);
    cr_assert_null(cJSON_GetObjectItem(rt, "running"));

    cJSON *alerts = at(DOC, "alerts");
    cJSON *ttft = find(alerts, "name", "LlmserveTTFTHigh");
    cr_assert(cJSON_IsTrue(at(ttft, "crossed")));
    cr_assert_str_eq(at(ttft, "severity")->valuestring, "critical");
    cr_assert_float_eq(num(ttft, "threshold"), 0.5, 1e-12);
    cr_assert_gt(num(ttft, "value"), 0.5);
    cr_assert(cJSON_IsTrue(at(find(alerts, "name", "LlmserveErrorRateHigh"), "crossed")));
    cJSON *q = find(alerts, "name", "LlmserveQueueSaturated");
    cr_assert(cJSON_IsTrue(at(q, "crossed")));
    cr_assert_float_eq(num(q, "value"), 0.95, 1e-9);
    cr_assert(strstr(at(q, "summary")->valuestring, "small"));
    cr_assert(cJSON_IsFalse(at(find(alerts, "name", "LlmserveCacheHitRateLow"), "crossed")));
    cr_assert(cJSON_IsFalse(at(find(alerts, "name", "LlmserveE2EHigh"), "crossed")));
    is_null(find(alerts, "name", "LlmserveE2EHigh"), "value");
    cr_assert(cJSON_IsFalse(at(find(alerts, "name", "LlmserveInstanceDown"), "crossed")));

    cJSON *h = at(DOC, "history");
    cr_assert_eq(cJSON_GetArraySize(at(h, "t")), 11); /* seconds 0 .. 10 */
    cr_assert_float_eq(cJSON_GetArrayItem(at(h, "t"), 10)->valuedouble, WALL / 1000000 - 1, 1e-9);
    cr_assert_float_eq(cJSON_GetArrayItem(at(h, "requests_per_second"), 10)->valuedouble, 20, 1e-9);
    cr_assert(cJSON_IsNull(cJSON_GetArrayItem(at(h, "requests_per_second"), 9)));
    cr_assert(cJSON_IsNull(cJSON_GetArrayItem(at(h, "tokens_per_second"), 9)));
    cr_assert_float_eq(cJSON_GetArrayItem(at(h, "tokens_per_second"), 10)->valuedouble, 110, 1e-9);
    cr_assert(cJSON_IsNull(cJSON_GetArrayItem(at(h, "error_rate"), 9)));
    cr_assert_float_eq(cJSON_GetArrayItem(at(h, "error_rate"), 10)->valuedouble, 0.1, 1e-9);
    cr_assert_float_eq(cJSON_GetArrayItem(at(h, "cache_hit_rate"), 10)->valuedouble, 0.5, 1e-9);
    cr_assert_float_eq(cJSON_GetArrayItem(at(h, "ttft_p50"), 10)->valuedouble, 0.625, 1e-9);
    cr_assert_float_eq(cJSON_GetArrayItem(at(h, "queue_depth"), 10)->valuedouble, 95, 1e-9);
    cr_assert_float_eq(cJSON_GetArrayItem(at(h, "in_flight"), 10)->valuedouble, 3, 1e-9);
    cr_assert(cJSON_IsNull(cJSON_GetArrayItem(at(h, "queue_depth"), 9)));

    /* a minute and more later the window has no traffic: rates and ratios are null,
     * quantiles too; the gauges are still values */
    render(SEC(80));
    is_null(DOC, "overall.requests_per_second");
    is_null(DOC, "overall.tokens_per_second");
    is_null(DOC, "overall.error_rate");
    is_null(DOC, "overall.cache_hit_rate");
    is_null(DOC, "overall.ttft.p95");
    is_null(find(at(DOC, "pools"), "pool", "small"), "requests_per_second");
    cr_assert_float_eq(num(DOC, "overall.in_flight"), 3, 1e-9);
    cr_assert(cJSON_IsFalse(at(find(at(DOC, "alerts"), "name", "LlmserveTTFTHigh"), "crossed")));

    /* the inference stream ends: the instance is down, its gauges no longer count */
    store_detach(S, i1, SEC(81));
    render(SEC(81.5));
    cJSON *down = find(at(DOC, "alerts"), "name", "LlmserveInstanceDown");
    cr_assert(cJSON_IsTrue(at(down, "crossed")));
    cr_assert_float_eq(num(down, "value"), 1, 1e-9);
    cr_assert(cJSON_IsFalse(at(find(at(DOC, "instances"), "service", "inference"), "up")));
    is_null(DOC, "overall.queue_depth");
    store_detach(S, r1, SEC(82));
}
