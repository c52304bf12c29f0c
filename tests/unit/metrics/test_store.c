/*
 * test_store.c - the collector's store on a clock the test sets: what reports store,
 * what they refuse and why (metrics.proto's rules), the series bound, windows, history,
 * staleness and the snapshot.
 */
#include "store.h"
#include "support/metrics_stream.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define T0 1000000000ll /* the store's clock starts here, microseconds */
#define SEC(s) (T0 + (int64_t)((s)*1e6))

static store_t *S;

static store_t *make(size_t max_series, int64_t stale_s)
{
    store_config_t c;
    store_config_init(&c);
    c.max_series = max_series;
    c.stale_us = stale_s * 1000000;
    return store_create(&c, T0);
}

static void fini(void)
{
    store_destroy(S);
    S = NULL;
}

/* Applies r from inst at now, frees r, returns the ack. */
static store_ack_t apply(store_inst_t *inst, metrics_report_t *r, int64_t now)
{
    store_ack_t a;
    store_apply(S, inst, metrics_report_msg(r), now, &a);
    metrics_report_free(r);
    return a;
}

static store_result_t query(const char *name, const store_label_t *m, size_t n, uint32_t w,
                            int64_t now)
{
    store_result_t r;
    cr_assert_eq(store_query(S, name, m, n, w, false, now, &r), 0, "query %s failed", name);
    return r;
}

static const char *const ROUTER_LABELS[] = {"pool", "small", "model", "m", "cache", "miss", NULL};

Test(store, histogram_counts_sum_quantiles_and_rate, .fini = fini)
{
    S = make(100, 300);
    store_inst_t *in = store_attach(S, "router", "r1", SEC(0));
    double v[100];
    for (int i = 0; i < 100; i++)
        v[i] = i < 50 ? 0.01 : 0.2;
    metrics_report_t *r = metrics_report_new(1, NULL, NULL);
    metrics_report_hist(r, "llmserve_ttft_seconds", ROUTER_LABELS, v, 100);
    store_ack_t a = apply(in, r, SEC(10.5));
    cr_assert_eq(a.rejected, 0, "%s", a.message);
    cr_assert_str_eq(a.message, "");

    store_result_t q = query("llmserve_ttft_seconds", NULL, 0, 60, SEC(10.7));
    cr_assert_eq(q.kind, STORE_HISTOGRAM);
    cr_assert_eq(q.series, 1);
    cr_assert_eq(q.count, 100);
    cr_assert_float_eq(q.sum, 50 * 0.01 + 50 * 0.2, 1e-9);
    /* 0.01 falls in (0.005, 0.01], 0.2 in (0.15, 0.2] */
    cr_assert_float_eq(q.p50, 0.01, 1e-9);
    cr_assert_float_eq(q.p95, 0.15 + 0.05 * 45 / 50, 1e-9);
    cr_assert_float_eq(q.p99, 0.15 + 0.05 * 49 / 50, 1e-9);
    /* eleven seconds have begun since the start: the window is clamped to them */
    cr_assert_eq(q.window_s, 11);
    cr_assert_float_eq(q.rate, 100.0 / 11, 1e-9);

    store_label_t miss = {"cache", "miss"}, hit = {"cache", "exact"};
    cr_assert_eq(query("llmserve_ttft_seconds", &miss, 1, 0, SEC(11)).count, 100);
    store_result_t none = query("llmserve_ttft_seconds", &hit, 1, 0, SEC(11));
    cr_assert_eq(none.series, 0);
    cr_assert_eq(none.count, 0);
    cr_assert(isnan(none.p50));
    store_label_t svc = {"service", "router"};
    cr_assert_eq(query("llmserve_ttft_seconds", &svc, 1, 0, SEC(11)).series, 1);

    store_result_t nf;
    cr_assert_eq(store_query(S, "llmserve_nothing", NULL, 0, 0, false, SEC(11), &nf),
                 -7 /* LS_ERR_NOT_FOUND */);
    store_detach(S, in, SEC(12));
}

Test(store, window_leaves_out_older_seconds_and_wraps, .fini = fini)
{
    S = make(100, 3600);
    store_inst_t *in = store_attach(S, "inference", "i1", SEC(0));
    double one = 0.3, two[2] = {5, 5};
    metrics_report_t *r = metrics_report_new(1, NULL, NULL);
    metrics_report_hist(r, "llmserve_inference_step_seconds", NULL, &one, 1);
    metrics_report_counter(r, "llmserve_inference_generated_tokens_total", NULL, 7);
    apply(in, r, SEC(10));

    store_result_t q = query("llmserve_inference_step_seconds", NULL, 0, 60, SEC(100));
    cr_assert_eq(q.count, 1);
    cr_assert_float_eq(q.in_window, 0, 1e-12);
    cr_assert(isnan(q.p50));
    cr_assert_float_eq(q.rate, 0, 1e-12);
    q = query("llmserve_inference_step_seconds", NULL, 0, 1000, SEC(100));
    cr_assert_eq(q.window_s, 101); /* clamped to the seconds since the start */
    cr_assert_float_eq(q.in_window, 1, 1e-12);
    store_result_t c = query("llmserve_inference_generated_tokens_total", NULL, 0, 0, SEC(40));
    cr_assert_eq(c.kind, STORE_COUNTER);
    cr_assert_float_eq(c.sum, 7, 1e-12);
    cr_assert_float_eq(c.in_window, 7, 1e-12);
    cr_assert_eq(c.window_s, 41);

    /* 400 s on, the ring has gone round: only the new second counts */
    r = metrics_report_new(2, NULL, NULL);
    metrics_report_hist(r, "llmserve_inference_step_seconds", NULL, two, 2);
    metrics_report_counter(r, "llmserve_inference_generated_tokens_total", NULL, 3);
    apply(in, r, SEC(410));
    q = query("llmserve_inference_step_seconds", NULL, 0, 300, SEC(410.5));
    cr_assert_eq(q.window_s, STORE_HISTORY_S);
    cr_assert_eq(q.count, 3);
    cr_assert_float_eq(q.in_window, 2, 1e-12);
    cr_assert_float_eq(q.p50, 3.75, 1e-9); /* rank 1 of the 2 in (2.5, 5] */
    c = query("llmserve_inference_generated_tokens_total", NULL, 0, 300, SEC(410.5));
    cr_assert_float_eq(c.sum, 10, 1e-12);
    cr_assert_float_eq(c.in_window, 3, 1e-12);
    cr_assert_float_eq(c.rate, 3.0 / 300, 1e-12);
    store_detach(S, in, SEC(411));
}

Test(store, gauges_replace_and_sum, .fini = fini)
{
    S = make(100, 300);
    store_inst_t *a = store_attach(S, "inference", "a", SEC(0));
    store_inst_t *b = store_attach(S, "inference", "b", SEC(0));
    const char *const small[] = {"pool", "small", NULL};
    metrics_report_t *r = metrics_report_new(1, NULL, NULL);
    metrics_report_gauge(r, "llmserve_inference_requests_waiting", small, 5);
    metrics_report_gauge(r, "llmserve_inference_requests_waiting", small, 3); /* replaces */
    apply(a, r, SEC(1));
    r = metrics_report_new(1, NULL, NULL);
    metrics_report_gauge(r, "llmserve_inference_requests_waiting", small, -2);
    apply(b, r, SEC(1));
    store_result_t q = query("llmserve_inference_requests_waiting", NULL, 0, 0, SEC(2));
    cr_assert_eq(q.kind, STORE_GAUGE);
    cr_assert_eq(q.series, 2);
    cr_assert_float_eq(q.sum, 1, 1e-12);
    cr_assert_float_eq(q.rate, 0, 1e-12);
    /* up_only leaves out b once its stream is gone */
    store_detach(S, b, SEC(3));
    store_result_t u;
    cr_assert_eq(
        store_query(S, "llmserve_inference_requests_waiting", NULL, 0, 0, true, SEC(4), &u), 0);
    cr_assert_eq(u.series, 1);
    cr_assert_float_eq(u.sum, 3, 1e-12);
    store_detach(S, a, SEC(5));
}

/* One sample per report: the ack's count and first reason, and the reason's counter. */
static void expect_refused(store_inst_t *in, metrics_report_t *r, uint32_t n, reject_reason_t why,
                           const char *words)
{
    store_stats_t before, after;
    store_stats(S, SEC(1), &before);
    store_ack_t a = apply(in, r, SEC(1));
    store_stats(S, SEC(1), &after);
    cr_assert_eq(a.rejected, n, "rejected %u, wanted %u (%s)", a.rejected, n, a.message);
    cr_assert(strstr(a.message, words), "message '%s' lacks '%s'", a.message, words);
    cr_assert_eq(after.rejected[why] - before.rejected[why], n, "reason %s",
                 validate_reason_name(why));
    cr_assert_eq(after.series, before.series, "a refused sample made a series");
}

Test(store, refuses_what_metrics_proto_refuses, .fini = fini)
{
    S = make(100, 300);
    store_inst_t *in = store_attach(S, "router", "r1", SEC(0));
    double v3[3] = {0.1, 0.2, 0.3}, x = 1;
    metrics_report_t *r;

#define ONE_COUNTER(name, labels, inc)                                                             \
    (r = metrics_report_new(1, NULL, NULL), metrics_report_counter(r, name, labels, inc), r)
#define ONE_GAUGE(name, labels, val)                                                               \
    (r = metrics_report_new(1, NULL, NULL), metrics_report_gauge(r, name, labels, val), r)
#define ONE_HIST(name, labels, vals, n)                                                            \
    (r = metrics_report_new(1, NULL, NULL), metrics_report_hist(r, name, labels, vals, n), r)

    expect_refused(in, ONE_COUNTER("bad-name_total", NULL, 1), 1, REJECT_NAME, "not a valid");
    expect_refused(in, ONE_COUNTER("llmserve_requests", NULL, 1), 1, REJECT_NAME, "_total");
    expect_refused(in, ONE_GAUGE("llmserve_collector_series", NULL, 1), 1, REJECT_NAME, "reserved");
    expect_refused(in, ONE_GAUGE("llmserve_instance_up", NULL, 1), 1, REJECT_NAME, "reserved");
    expect_refused(in, ONE_HIST("9lives_seconds", NULL, v3, 3), 3, REJECT_NAME, "not a valid");
    expect_refused(in, ONE_COUNTER("c_total", NULL, -1), 1, REJECT_VALUE, "negative");
    expect_refused(in, ONE_COUNTER("c_total", NULL, NAN), 1, REJECT_VALUE, "NaN");
    expect_refused(in, ONE_COUNTER("c_total", NULL, INFINITY), 1, REJECT_VALUE, "infinite");
    expect_refused(in, ONE_GAUGE("g", NULL, NAN), 1, REJECT_VALUE, "NaN");
    expect_refused(in, ONE_GAUGE("g", NULL, -INFINITY), 1, REJECT_VALUE, "NaN or infinite");
    double nans[2] = {NAN, INFINITY};
    expect_refused(in, ONE_HIST("h_seconds", NULL, nans, 2), 2, REJECT_VALUE, "every value");

    expect_refused(in, ONE_GAUGE("g", ((const char *[]){"service", "x", NULL}), 1), 1, REJECT_LABEL,
                   "reserved");
    expect_refused(in, ONE_GAUGE("g", ((const char *[]){"instance", "x", NULL}), 1), 1,
                   REJECT_LABEL, "reserved");
    expect_refused(in, ONE_HIST("h_seconds", ((const char *[]){"le", "1", NULL}), v3, 3), 3,
                   REJECT_LABEL, "reserved");
    expect_refused(in, ONE_GAUGE("g", ((const char *[]){"__name__", "x", NULL}), 1), 1,
                   REJECT_LABEL, "not valid");
    expect_refused(in, ONE_GAUGE("g", ((const char *[]){"bad-label", "x", NULL}), 1), 1,
                   REJECT_LABEL, "not valid");
    expect_refused(in, ONE_GAUGE("g", ((const char *[]){"a", "1", "b", "2", "a", "3", NULL}), 1), 1,
                   REJECT_LABEL, "twice");
    expect_refused(in, ONE_GAUGE("g", ((const char *[]){"a", "\xff", NULL}), 1), 1, REJECT_LABEL,
                   "UTF-8");
    char long_value[300];
    memset(long_value, 'v', sizeof(long_value));
    long_value[257] = '\0';
    expect_refused(in, ONE_GAUGE("g", ((const char *[]){"a", long_value, NULL}), 1), 1,
                   REJECT_LABEL, "256");
    long_value[256] = '\0'; /* exactly 256 bytes is fine */
    cr_assert_eq(
        apply(in, ONE_GAUGE("g_long", ((const char *[]){"a", long_value, NULL}), 1), SEC(1))
            .rejected,
        0);
    const char *many[2 * 17 + 1];
    char names[17][8];
    for (int i = 0; i < 17; i++) {
        snprintf(names[i], sizeof(names[i]), "l%d", i);
        many[2 * i] = names[i];
        many[2 * i + 1] = "v";
    }
    many[34] = NULL;
    expect_refused(in, ONE_GAUGE("g", many, 1), 1, REJECT_LABEL, "more than 16");
    many[32] = NULL; /* 16 labels are fine */
    cr_assert_eq(apply(in, ONE_GAUGE("g_many", many, 1), SEC(1)).rejected, 0);

    /* a name is one kind only, and a histogram's lines keep their names to themselves */
    cr_assert_eq(apply(in, ONE_GAUGE("shared", NULL, 1), SEC(1)).rejected, 0);
    expect_refused(in, ONE_HIST("shared", NULL, v3, 3), 3, REJECT_KIND, "already a gauge");
    cr_assert_eq(apply(in, ONE_HIST("lat_seconds", NULL, &x, 1), SEC(1)).rejected, 0);
    expect_refused(in, ONE_GAUGE("lat_seconds_count", NULL, 1), 1, REJECT_KIND, "clashes");
    cr_assert_eq(apply(in, ONE_GAUGE("other_sum", NULL, 1), SEC(1)).rejected, 0);
    expect_refused(in, ONE_HIST("other", NULL, v3, 3), 3, REJECT_KIND, "clashes");

    /* NaN values of a good histogram go one by one; the rest is stored */
    double mixed[4] = {0.1, NAN, 0.2, INFINITY};
    store_ack_t a = apply(in, ONE_HIST("lat_seconds", NULL, mixed, 4), SEC(1));
    cr_assert_eq(a.rejected, 2);
    cr_assert(strstr(a.message, "NaN or infinite"), "%s", a.message);
    cr_assert_eq(query("lat_seconds", NULL, 0, 0, SEC(1)).count, 3);

    /* several faults in one report: all counted, the first one named */
    r = metrics_report_new(1, NULL, NULL);
    metrics_report_hist(r, "h_seconds", ((const char *[]){"service", "x", NULL}), v3, 3);
    metrics_report_counter(r, "c", NULL, 1);
    metrics_report_gauge(r, "good", NULL, 4);
    a = apply(in, r, SEC(1));
    cr_assert_eq(a.rejected, 4);
    cr_assert(strstr(a.message, "histogram h_seconds: label service"), "%s", a.message);
    cr_assert_float_eq(query("good", NULL, 0, 0, SEC(1)).sum, 4, 1e-12);
    store_detach(S, in, SEC(2));
}

Test(store, series_bound_refuses_new_series_only, .fini = fini)
{
    S = make(10, 300);
    store_inst_t *in = store_attach(S, "router", "flood", SEC(0));
    metrics_report_t *r = metrics_report_new(1, NULL, NULL);
    char v[16];
    for (int i = 0; i < 25; i++) {
        snprintf(v, sizeof(v), "%d", i);
        metrics_report_counter(r, "flood_total", ((const char *[]){"id", v, NULL}), 1);
    }
    store_ack_t a = apply(in, r, SEC(1));
    cr_assert_eq(a.rejected, 15);
    cr_assert(strstr(a.message, "limit of 10"), "%s", a.message);
    store_stats_t st;
    store_stats(S, SEC(1), &st);
    cr_assert_eq(st.series, 10);
    cr_assert_eq(st.series_limit, 10);
    cr_assert_eq(st.rejected[REJECT_SERIES_LIMIT], 15);
    /* the series already there still count */
    r = metrics_report_new(2, NULL, NULL);
    metrics_report_counter(r, "flood_total", ((const char *[]){"id", "0", NULL}), 1);
    metrics_report_gauge(r, "new_gauge", NULL, 1);
    a = apply(in, r, SEC(2));
    cr_assert_eq(a.rejected, 1);
    cr_assert_float_eq(query("flood_total", NULL, 0, 0, SEC(2)).sum, 11, 1e-12);
    store_stats(S, SEC(2), &st);
    cr_assert_eq(st.series, 10);
    store_detach(S, in, SEC(3));
}

Test(store, report_bound_and_refusal_whole, .fini = fini)
{
    store_config_t c;
    store_config_init(&c);
    c.max_report_samples = 5;
    S = store_create(&c, T0);
    store_inst_t *in = store_attach(S, "cache", "c1", SEC(0));
    double v[5] = {1, 2, 3, 4, 5};
    metrics_report_t *r = metrics_report_new(1, NULL, NULL);
    metrics_report_hist(r, "h", NULL, v, 5);
    metrics_report_gauge(r, "g", NULL, 1);
    store_ack_t a = apply(in, r, SEC(1));
    cr_assert_eq(a.rejected, 6);
    cr_assert(strstr(a.message, "refused whole"), "%s", a.message);
    store_stats_t st;
    store_stats(S, SEC(1), &st);
    cr_assert_eq(st.series, 0);
    cr_assert_eq(st.rejected[REJECT_REPORT_SIZE], 6);
    cr_assert_eq(st.reports, 1);

    r = metrics_report_new(2, NULL, NULL);
    metrics_report_gauge(r, "g", NULL, 1);
    store_refuse(S, metrics_report_msg(r), REJECT_SOURCE, "no source", &a);
    metrics_report_free(r);
    cr_assert_eq(a.rejected, 1);
    cr_assert_str_eq(a.message, "no source");
    store_stats(S, SEC(1), &st);
    cr_assert_eq(st.rejected[REJECT_SOURCE], 1);
    cr_assert_eq(st.reports, 2);
    cr_assert_eq(st.rejected_total, 7);
    store_detach(S, in, SEC(2));
}

static bool listed(const char *instance, bool *up, int64_t now)
{
    store_inst_info_t *v;
    size_t n = store_instances(S, now, &v);
    bool found = false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].instance, instance) == 0) {
            found = true;
            *up = v[i].up;
        }
    store_instances_free(v, n);
    return found;
}

Test(store, ended_stream_goes_down_then_is_forgotten, .fini = fini)
{
    S = make(100, 30);
    store_inst_t *in = store_attach(S, "inference", "i1", SEC(0));
    metrics_report_t *r = metrics_report_new(1, NULL, NULL);
    metrics_report_gauge(r, "llmserve_inference_requests_running", NULL, 2);
    metrics_report_counter(r, "llmserve_inference_generated_tokens_total", NULL, 2);
    apply(in, r, SEC(1));
    bool up = false;
    cr_assert(listed("i1", &up, SEC(2)) && up);
    store_detach(S, in, SEC(10));
    cr_assert(listed("i1", &up, SEC(10)));
    cr_assert_not(up);
    store_tick(S, SEC(39));
    cr_assert(listed("i1", &up, SEC(39)), "forgotten too early");
    cr_assert_eq(query("llmserve_inference_requests_running", NULL, 0, 0, SEC(39)).series, 1);
    store_tick(S, SEC(40));
    cr_assert_not(listed("i1", &up, SEC(40)));
    store_result_t q;
    cr_assert_eq(
        store_query(S, "llmserve_inference_requests_running", NULL, 0, 0, false, SEC(40), &q), -7);
    store_stats_t st;
    store_stats(S, SEC(40), &st);
    cr_assert_eq(st.series, 0);
}

Test(store, silent_stream_goes_down_and_back_up, .fini = fini)
{
    S = make(100, 30);
    store_inst_t *in = store_attach(S, "router", "r1", SEC(0));
    metrics_report_t *r = metrics_report_new(1, NULL, NULL);
    metrics_report_gauge(r, "llmserve_requests_in_flight", NULL, 1);
    apply(in, r, SEC(5));
    bool up = false;
    store_tick(S, SEC(34));
    cr_assert(listed("r1", &up, SEC(34)) && up);
    store_tick(S, SEC(35)); /* 30 s without a report */
    cr_assert(listed("r1", &up, SEC(35)));
    cr_assert_not(up);
    store_tick(S, SEC(64));
    cr_assert(listed("r1", &up, SEC(64)));
    store_tick(S, SEC(65)); /* down for 30 s: forgotten, though its stream is open */
    cr_assert_not(listed("r1", &up, SEC(65)));
    store_stats_t st;
    store_stats(S, SEC(65), &st);
    cr_assert_eq(st.series, 0);
    r = metrics_report_new(2, NULL, NULL);
    metrics_report_gauge(r, "llmserve_requests_in_flight", NULL, 4);
    apply(in, r, SEC(70));
    cr_assert(listed("r1", &up, SEC(70)) && up);
    cr_assert_float_eq(query("llmserve_requests_in_flight", NULL, 0, 0, SEC(70)).sum, 4, 1e-12);
    store_detach(S, in, SEC(71));
    cr_assert(listed("r1", &up, SEC(71)));
    cr_assert_not(up);
}

Test(store, two_streams_of_one_instance, .fini = fini)
{
    S = make(100, 30);
    store_inst_t *a = store_attach(S, "cache", "c1", SEC(0));
    store_inst_t *b = store_attach(S, "cache", "c1", SEC(1));
    cr_assert_eq(a, b);
    cr_assert(store_inst_is(a, "cache", "c1"));
    cr_assert_not(store_inst_is(a, "cache", "c2"));
    store_detach(S, a, SEC(2));
    bool up = false;
    cr_assert(listed("c1", &up, SEC(2)) && up, "one stream is still open");
    store_detach(S, b, SEC(3));
    cr_assert(listed("c1", &up, SEC(3)));
    cr_assert_not(up);
}

Test(store, history_per_second, .fini = fini)
{
    S = make(100, 300);
    store_inst_t *in = store_attach(S, "router", "r1", SEC(0));
    for (int s = 1; s <= 5; s++) {
        double v[5] = {0.05, 0.05, 0.05, 0.05, 0.05};
        metrics_report_t *r = metrics_report_new((uint64_t)s, NULL, NULL);
        if (s != 3)
            metrics_report_hist(r, "llmserve_ttft_seconds", NULL, v, (size_t)s);
        metrics_report_counter(r, "llmserve_requests_total", ((const char *[]){"code", "OK", NULL}),
                               s);
        apply(in, r, SEC(s + 0.5));
    }
    store_point_t p[6];
    cr_assert_eq(store_history(S, "llmserve_ttft_seconds", NULL, 0, 6, SEC(6.2), p), 0);
    /* p[0] is second 0 ... p[5] second 5 */
    cr_assert_float_eq(p[0].value, 0, 1e-12);
    cr_assert(isnan(p[0].p50));
    cr_assert_float_eq(p[1].value, 1, 1e-12);
    cr_assert_float_eq(p[4].value, 4, 1e-12);
    cr_assert_float_eq(p[3].value, 0, 1e-12);
    cr_assert(isnan(p[3].p95));
    cr_assert_float_eq(p[5].p50, 0.0375, 1e-9); /* rank 2.5 of the 5 in (0.025, 0.05] */
    cr_assert_eq(store_history(S, "llmserve_requests_total", NULL, 0, 6, SEC(6.2), p), 0);
    for (int s = 1; s <= 5; s++)
        cr_assert_float_eq(p[s].value, s, 1e-12);
    store_label_t bad = {"code", "UNAVAILABLE"};
    cr_assert_eq(store_history(S, "llmserve_requests_total", &bad, 1, 6, SEC(6.2), p), 0);
    cr_assert_float_eq(p[5].value, 0, 1e-12);
    cr_assert_eq(store_history(S, "nothing", NULL, 0, 6, SEC(6.2), p), -7);
    cr_assert_eq(store_second(S, SEC(6.2)), 6);
    store_detach(S, in, SEC(7));
}

Test(store, snapshot_is_sorted_and_escaped, .fini = fini)
{
    S = make(100, 300);
    store_inst_t *b = store_attach(S, "router", "b", SEC(0));
    store_inst_t *a = store_attach(S, "cache", "a", SEC(0));
    metrics_report_t *r = metrics_report_new(1, NULL, NULL);
    metrics_report_gauge(r, "zeta", ((const char *[]){"v", "q\"uo\\te\nnl", NULL}), 1);
    metrics_report_gauge(r, "alpha", NULL, 2);
    apply(b, r, SEC(1));
    r = metrics_report_new(1, NULL, NULL);
    metrics_report_gauge(r, "alpha", NULL, 3);
    double x = 3;
    metrics_report_hist(r, "mid_seconds", NULL, &x, 1);
    apply(a, r, SEC(1));
    store_snap_t *snap = store_snapshot(S, SEC(2));
    cr_assert_not_null(snap);
    cr_assert_eq(snap->n_families, 3);
    cr_assert_str_eq(snap->families[0].name, "alpha");
    cr_assert_str_eq(snap->families[1].name, "mid_seconds");
    cr_assert_str_eq(snap->families[2].name, "zeta");
    cr_assert_eq(snap->families[0].n_series, 2);
    cr_assert_str_eq(snap->families[0].series[0].labels, "instance=\"a\",service=\"cache\"");
    cr_assert_str_eq(snap->families[0].series[1].labels, "instance=\"b\",service=\"router\"");
    cr_assert_str_eq(snap->families[2].series[0].labels,
                     "instance=\"b\",service=\"router\",v=\"q\\\"uo\\\\te\\nnl\"");
    const store_snap_series_t *h = &snap->families[1].series[0];
    cr_assert_eq(h->count, 1);
    cr_assert_eq(h->counts[buckets_index(snap->families[1].buckets, 3)], 1);
    cr_assert_eq(snap->n_instances, 2);
    cr_assert_str_eq(snap->instances[0].service, "cache");
    cr_assert_str_eq(snap->instances[1].service, "router");
    cr_assert_eq(snap->stats.series, 4);
    store_snap_free(snap);
    store_snap_free(NULL);
    store_detach(S, a, SEC(3));
    store_detach(S, b, SEC(3));
}

Test(store, label_values_and_label_of, .fini = fini)
{
    S = make(100, 300);
    store_inst_t *in = store_attach(S, "inference", "i1", SEC(0));
    metrics_report_t *r = metrics_report_new(1, NULL, NULL);
    metrics_report_gauge(r, "llmserve_inference_requests_running",
                         ((const char *[]){"pool", "small", "model", "m1", NULL}), 1);
    metrics_report_gauge(r, "llmserve_requests_in_flight",
                         ((const char *[]){"pool", "large", NULL}), 1);
    metrics_report_gauge(r, "llmserve_requests_in_flight",
                         ((const char *[]){"pool", "small", NULL}), 1);
    apply(in, r, SEC(1));
    const char *names[] = {"llmserve_inference_requests_running", "llmserve_requests_in_flight",
                           "absent"};
    char **v;
    size_t n = store_label_values(S, names, 3, "pool", &v);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(v[0], "large");
    cr_assert_str_eq(v[1], "small");
    store_strings_free(v, n);
    char buf[64];
    store_label_t m[2] = {{"service", "inference"}, {"instance", "i1"}};
    cr_assert(store_label_of(S, "llmserve_inference_requests_running", m, 2, true, SEC(1), "model",
                             buf, sizeof(buf)));
    cr_assert_str_eq(buf, "m1");
    cr_assert_not(store_label_of(S, "llmserve_inference_requests_running", m, 2, true, SEC(1),
                                 "version", buf, sizeof(buf)));
    store_detach(S, in, SEC(2));
}
