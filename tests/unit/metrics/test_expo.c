/*
 * test_expo.c - the text exposition of a store: HELP and TYPE once per family,
 * cumulative buckets up to +Inf, _sum and _count, escaping, order, the collector's own
 * metrics, and floats written as Prometheus reads them.
 */
#include "expo.h"
#include "store.h"
#include "support/metrics_stream.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0 1000000000ll

static store_t *S;
static char *TEXT;

static void fini(void)
{
    store_destroy(S);
    free(TEXT);
}

static void apply(store_inst_t *in, metrics_report_t *r)
{
    store_ack_t a;
    store_apply(S, in, metrics_report_msg(r), T0 + 1000000, &a);
    metrics_report_free(r);
    cr_assert_eq(a.rejected, 0, "%s", a.message);
}

static void render(void)
{
    store_snap_t *snap = store_snapshot(S, T0 + 2000000);
    cr_assert_not_null(snap);
    size_t len = 0;
    free(TEXT);
    TEXT = expo_render(snap, &len);
    store_snap_free(snap);
    cr_assert_not_null(TEXT);
    cr_assert_eq(strlen(TEXT), len);
}

static int count(const char *needle)
{
    int n = 0;
    for (const char *p = TEXT; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void has(const char *line)
{
    cr_assert(strstr(TEXT, line), "missing line:\n%s\nin:\n%s", line, TEXT);
}

Test(expo, families_buckets_and_escaping, .fini = fini)
{
    store_config_t c;
    store_config_init(&c);
    S = store_create(&c, T0);
    store_inst_t *r1 = store_attach(S, "router", "10.0.0.1:7000", T0);
    store_inst_t *i1 = store_attach(S, "inference", "i\"1", T0);
    metrics_report_t *r = metrics_report_new(1, NULL, NULL);
    double ttft[3] = {0.004, 0.02, 100};
    metrics_report_hist(r, "llmserve_ttft_seconds",
                        ((const char *[]){"pool", "small", "cache", "miss", NULL}), ttft, 3);
    metrics_report_counter(r, "llmserve_requests_total",
                           ((const char *[]){"code", "OK", "note", "a\\b\"c\nd", NULL}), 2);
    metrics_report_gauge(r, "llmserve_requests_in_flight", NULL, 1.5);
    apply(r1, r);
    r = metrics_report_new(1, NULL, NULL);
    metrics_report_gauge(r, "llmserve_requests_in_flight", NULL, 0.1);
    double batch[2] = {3, 3};
    metrics_report_hist(r, "llmserve_inference_batch_size", NULL, batch, 2);
    apply(i1, r);
    render();

    /* one HELP and one TYPE per family */
    cr_assert_eq(count("# TYPE llmserve_requests_in_flight gauge\n"), 1);
    cr_assert_eq(count("# HELP llmserve_requests_in_flight "), 1);
    has("# HELP llmserve_ttft_seconds Router: request start to first token out, seconds.\n");
    has("# TYPE llmserve_ttft_seconds histogram\n");
    has("# TYPE llmserve_requests_total counter\n");
    /* cumulative buckets, +Inf, _sum, _count, labels sorted */
    const char *L = "cache=\"miss\",instance=\"10.0.0.1:7000\",pool=\"small\",service=\"router\"";
    char line[512];
    snprintf(line, sizeof(line), "llmserve_ttft_seconds_bucket{%s,le=\"0.0025\"} 0\n", L);
    has(line);
    snprintf(line, sizeof(line), "llmserve_ttft_seconds_bucket{%s,le=\"0.005\"} 1\n", L);
    has(line);
    snprintf(line, sizeof(line), "llmserve_ttft_seconds_bucket{%s,le=\"0.025\"} 2\n", L);
    has(line);
    snprintf(line, sizeof(line), "llmserve_ttft_seconds_bucket{%s,le=\"80\"} 2\n", L);
    has(line);
    snprintf(line, sizeof(line), "llmserve_ttft_seconds_bucket{%s,le=\"+Inf\"} 3\n", L);
    has(line);
    snprintf(line, sizeof(line), "llmserve_ttft_seconds_sum{%s} 100.02", L);
    has(line);
    snprintf(line, sizeof(line), "llmserve_ttft_seconds_count{%s} 3\n", L);
    has(line);
    cr_assert_eq(count("llmserve_ttft_seconds_bucket{"), 25);
    has("llmserve_inference_batch_size_bucket{instance=\"i\\\"1\",service=\"inference\",le=\"4\"} "
        "2\n");
    has("llmserve_requests_total{code=\"OK\",instance=\"10.0.0.1:7000\",note=\"a\\\\b\\\"c\\nd\","
        "service=\"router\"} 2\n");
    /* series of a family sorted by labels */
    const char *a = strstr(TEXT, "llmserve_requests_in_flight{instance=\"10.0.0.1:7000\"");
    const char *b = strstr(TEXT, "llmserve_requests_in_flight{instance=\"i\\\"1\"");
    cr_assert(a && b && a < b);
    has("llmserve_requests_in_flight{instance=\"i\\\"1\",service=\"inference\"} 0.1\n");
    /* families sorted by name, after the collector's own */
    const char *f1 = strstr(TEXT, "# TYPE llmserve_inference_batch_size ");
    const char *f2 = strstr(TEXT, "# TYPE llmserve_requests_in_flight ");
    const char *f3 = strstr(TEXT, "# TYPE llmserve_ttft_seconds ");
    const char *own = strstr(TEXT, "# TYPE llmserve_instance_up gauge");
    cr_assert(own && f1 && f2 && f3 && own < f1 && f1 < f2 && f2 < f3);
    /* the collector's own */
    has("llmserve_instance_up{instance=\"10.0.0.1:7000\",service=\"router\"} 1\n");
    has("llmserve_instance_up{instance=\"i\\\"1\",service=\"inference\"} 1\n");
    has("llmserve_collector_series 5\n");
    has("llmserve_collector_series_limit 10000\n");
    has("llmserve_collector_reports_total 2\n");
    has("llmserve_collector_samples_total 8\n");
    has("llmserve_collector_rejected_total{reason=\"series_limit\"} 0\n");
    cr_assert_eq(TEXT[strlen(TEXT) - 1], '\n');
    store_detach(S, r1, T0 + 3000000);
    store_detach(S, i1, T0 + 3000000);
}

Test(expo, empty_store_still_shows_the_collector)
{
    store_config_t c;
    store_config_init(&c);
    S = store_create(&c, T0);
    render();
    has("# TYPE llmserve_collector_series gauge\nllmserve_collector_series 0\n");
    cr_assert_eq(count("llmserve_collector_rejected_total{"), REJECT_N_REASONS);
    fini();
    S = NULL;
    TEXT = NULL;
}

Test(expo, doubles_as_prometheus_reads_them)
{
    char b[32];
    cr_assert_str_eq(expo_format_double(b, 0.1), "0.1");
    cr_assert_str_eq(expo_format_double(b, 0.0001), "0.0001");
    cr_assert_str_eq(expo_format_double(b, 80), "80");
    cr_assert_str_eq(expo_format_double(b, -2.5), "-2.5");
    cr_assert_str_eq(expo_format_double(b, 1e300), "1e+300");
    cr_assert_str_eq(expo_format_double(b, NAN), "NaN");
    cr_assert_str_eq(expo_format_double(b, INFINITY), "+Inf");
    cr_assert_str_eq(expo_format_double(b, -INFINITY), "-Inf");
    double third = 1.0 / 3;
    cr_assert_eq(strtod(expo_format_double(b, third), NULL), third);
    double sum = 0.1 + 0.2; /* needs 17 digits to read back */
    cr_assert_eq(strtod(expo_format_double(b, sum), NULL), sum);
}

Test(expo, help_from_the_table)
{
    cr_assert(strstr(expo_help("llmserve_inference_queue_limit"), "--max-queue"));
    cr_assert(strstr(expo_help("custom_thing"), "not in libs/svc/metric_names.h"));
}
