/*
 * test_metrics.c - the real llmserve-metrics process on loopback: reports over gRPC
 * (libs/rpc's client), /metrics read over HTTP and linted by `promtool check metrics`,
 * Query against what was sent, /api/summary as JSON, bad input refused and counted, a
 * flood of series stopped at --max-series, staleness, the HTTP paths, and SIGTERM with
 * streams open.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "llmserve/v1/metrics.pb-c.h"
#include "rpc/client.h"
#include "support/channel.h"
#include "support/http.h"
#include "support/metrics_stream.h"
#include "support/proc.h"
#include "support/tmpdir.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static test_proc_t g_proc;
static rpc_client_t *g_client;
static rpc_channel_t *g_ch;
static test_tmpdir_t g_dir;

/* ---- the process --------------------------------------------------------------------- */

static void start_with(const char *const *extra)
{
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)test_env_path("LLMSERVE_METRICS_BIN");
    const char *base[] = {"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--grace-ms",
                          "1000",     NULL};
    for (const char *const *a = base; *a; a++)
        argv[n++] = (char *)*a;
    for (; extra && *extra && n < 30; extra++)
        argv[n++] = (char *)*extra;
    argv[n] = NULL;
    cr_assert_eq(test_proc_start(&g_proc, argv, 30000), 0, "llmserve-metrics did not start");
    cr_assert_gt(g_proc.http_port, 0, "no HTTP port line");
    g_client = rpc_client_create(1);
    g_ch = test_channel_to(g_client, g_proc.port, NULL);
    cr_assert_not_null(g_ch);
    cr_assert(test_channel_ready(g_ch, 20000), "collector not answering health checks");
    cr_assert_eq(test_tmpdir_make(&g_dir, "llmserve-test-metrics"), 0);
}

static void start(void)
{
    start_with(NULL);
}

/* Stops the collector (if still running) and checks it exited 0: leaks and crashes at
 * shutdown fail here. */
static void stop_all(void)
{
    rpc_channel_destroy(g_ch);
    g_ch = NULL;
    rpc_client_destroy(g_client);
    g_client = NULL;
    if (g_proc.pid > 0) {
        int status = test_proc_stop(&g_proc, SIGTERM, 30000);
        cr_expect_eq(status, 0, "llmserve-metrics exit status %d", status);
    }
    test_tmpdir_remove(&g_dir);
}

/* ---- reading it ----------------------------------------------------------------------- */

/* GET path; asserts 200 and returns the body (the caller frees it). */
static char *get(const char *path)
{
    char *body = NULL;
    size_t len = 0;
    int code = test_http_get(g_proc.http_port, path, &body, &len);
    cr_assert_eq(code, 200, "GET %s: %d", path, code);
    return body;
}

/* Runs `promtool check metrics` on text; asserts that it is clean. */
static void promtool_check(const char *text)
{
    char in[192], out[192], cmd[512];
    test_tmpdir_file(&g_dir, "metrics.txt", in, sizeof(in));
    test_tmpdir_file(&g_dir, "promtool.out", out, sizeof(out));
    FILE *f = fopen(in, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd),
             "command -v promtool >/dev/null || { echo 'promtool is not on PATH'; exit 127; }; "
             "promtool check metrics < '%s'",
             in);
    snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " > '%s' 2>&1", out);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    int status = test_run(argv, 60000);
    char said[4096] = "";
    f = fopen(out, "r");
    if (f) {
        size_t n = fread(said, 1, sizeof(said) - 1, f);
        said[n] = '\0';
        fclose(f);
    }
    cr_assert_eq(status, 0, "promtool check metrics: status %d:\n%s", status, said);
    cr_assert_str_eq(said, "", "promtool check metrics said:\n%s", said);
}

/* The value of the exposition line that starts with prefix (name and labels), or NAN. */
static double sample(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, prefix, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return NAN;
}

static double metric_now(const char *prefix)
{
    char *t = get("/metrics");
    double v = sample(t, prefix);
    free(t);
    return v;
}

/* Polls /metrics until the line prefix has value want (NAN: until it is absent). */
static bool wait_metric(const char *prefix, double want, int timeout_ms)
{
    int64_t end = ls_now_us() + (int64_t)timeout_ms * 1000;
    do {
        double v = metric_now(prefix);
        if (isnan(want) ? isnan(v) : v == want)
            return true;
        ls_sleep_us(50000);
    } while (ls_now_us() < end);
    return false;
}

static Llmserve__V1__QueryResponse *query(const char *name, const char *const *labels,
                                          uint32_t window, int *code)
{
    Llmserve__V1__QueryRequest q = LLMSERVE__V1__QUERY_REQUEST__INIT;
    q.name = (char *)name;
    q.window_seconds = window;
    Llmserve__V1__Label ls[8], *lp[8];
    size_t n = 0;
    for (; labels && labels[2 * n] && n < 8; n++) {
        llmserve__v1__label__init(&ls[n]);
        ls[n].name = (char *)labels[2 * n];
        ls[n].value = (char *)labels[2 * n + 1];
        lp[n] = &ls[n];
    }
    q.n_labels = n;
    q.labels = lp;
    rpc_call_opts_t o = {.timeout_us = 10000000, .wait_for_ready = true};
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    cr_assert_eq(rpc_channel_unary(g_ch, "/llmserve.v1.Metrics/Query", &q.base,
                                   &llmserve__v1__query_response__descriptor, &o, &resp, &st),
                 LS_OK);
    *code = st.code;
    return (Llmserve__V1__QueryResponse *)resp;
}

/* ---- a realistic report ----------------------------------------------------------------- */

static const char *const SMALL_MISS[] = {"pool", "small", "model", "tiny", "version",
                                         "v1",   "cache", "miss",  NULL};

static metrics_report_t *router_report(uint64_t seq, const char *instance)
{
    metrics_report_t *r = metrics_report_new(seq, seq == 1 ? "router" : NULL, instance);
    double ttft[10] = {0.01, 0.012, 0.015, 0.02, 0.02, 0.03, 0.04, 0.05, 0.06, 0.3};
    double itl[5] = {0.004, 0.004, 0.005, 0.006, 0.009};
    double e2e[10] = {0.1, 0.1, 0.15, 0.2, 0.2, 0.25, 0.3, 0.4, 0.5, 0.9};
    metrics_report_hist(r, "llmserve_ttft_seconds", SMALL_MISS, ttft, 10);
    metrics_report_hist(r, "llmserve_inter_token_latency_seconds",
                        ((const char *[]){"pool", "small", "model", "tiny", "version", "v1", NULL}),
                        itl, 5);
    metrics_report_hist(r, "llmserve_request_duration_seconds", SMALL_MISS, e2e, 10);
    metrics_report_counter(
        r, "llmserve_requests_total",
        ((const char *[]){"pool", "small", "model", "tiny", "version", "v1", "code", "OK",
                          "finish_reason", "stop", "cache", "miss", NULL}),
        9);
    metrics_report_counter(
        r, "llmserve_requests_total",
        ((const char *[]){"pool", "small", "model", "tiny", "version", "v1", "code", "UNAVAILABLE",
                          "finish_reason", "error", "cache", "miss", NULL}),
        1);
    metrics_report_counter(
        r, "llmserve_tokens_total",
        ((const char *[]){"pool", "small", "model", "tiny", "version", "v1", NULL}), 250);
    metrics_report_gauge(r, "llmserve_requests_in_flight",
                         ((const char *[]){"pool", "small", NULL}), 2);
    metrics_report_counter(
        r, "llmserve_grpc_server_handled_total",
        ((const char *[]){"method", "/llmserve.v1.Router/Generate", "code", "OK", NULL}), 10);
    metrics_report_gauge(r, "llmserve_up", NULL, 1);
    /* a value with every character the text format escapes */
    metrics_report_gauge(r, "llmserve_build_info",
                         ((const char *[]){"note", "back\\slash \"quoted\"\nnew line", NULL}), 1);
    return r;
}

static metrics_report_t *inference_report(uint64_t seq, const char *instance)
{
    metrics_report_t *r = metrics_report_new(seq, "inference", instance);
    const char *const pm[] = {"pool", "small", "model", "tiny", NULL};
    double batch[4] = {1, 2, 2, 8};
    double step[4] = {0.002, 0.0021, 0.003, 0.004};
    metrics_report_hist(r, "llmserve_inference_batch_size", pm, batch, 4);
    metrics_report_hist(r, "llmserve_inference_step_seconds", pm, step, 4);
    metrics_report_gauge(r, "llmserve_inference_requests_running", pm, 3);
    metrics_report_gauge(r, "llmserve_inference_requests_waiting", pm, 1);
    metrics_report_gauge(r, "llmserve_inference_queue_limit", pm, 256);
    metrics_report_gauge(r, "llmserve_inference_kv_blocks_used", pm, 10);
    metrics_report_gauge(r, "llmserve_inference_kv_blocks_capacity", pm, 512);
    metrics_report_counter(r, "llmserve_inference_generated_tokens_total", pm, 250);
    return r;
}

/* ---- scenarios ------------------------------------------------------------------------ */

/* One timeout for all: criterion (2.4) leaks a timer entry in its runner when tests with
 * different timeouts follow each other, which LeakSanitizer then reports. */
TestSuite(metrics, .timeout = 300);

Test(metrics, exposition_passes_promtool, .init = start, .fini = stop_all)
{
    metrics_stream_t *rs = metrics_stream_open(g_ch);
    metrics_stream_t *is = metrics_stream_open(g_ch);
    for (uint64_t seq = 1; seq <= 3; seq++) {
        metrics_report_t *r = router_report(seq, "127.0.0.1:7000");
        metrics_ack_t a = metrics_stream_report(rs, r);
        metrics_report_free(r);
        cr_assert_eq(a.sequence, seq);
        cr_assert_eq(a.rejected, 0, "%s", a.message);
        cr_assert_str_eq(a.message, "");
        r = inference_report(seq, "127.0.0.1:7001");
        a = metrics_stream_report(is, r);
        metrics_report_free(r);
        cr_assert_eq(a.rejected, 0, "%s", a.message);
    }
    char *text = get("/metrics");
    promtool_check(text);
    const char *L = "cache=\"miss\",instance=\"127.0.0.1:7000\",model=\"tiny\",pool=\"small\","
                    "service=\"router\",version=\"v1\"";
    char prefix[512];
    snprintf(prefix, sizeof(prefix), "llmserve_ttft_seconds_count{%s}", L);
    cr_assert_float_eq(sample(text, prefix), 30, 1e-9, "%s", prefix);
    snprintf(prefix, sizeof(prefix), "llmserve_ttft_seconds_bucket{%s,le=\"+Inf\"}", L);
    cr_assert_float_eq(sample(text, prefix), 30, 1e-9);
    snprintf(prefix, sizeof(prefix), "llmserve_ttft_seconds_bucket{%s,le=\"0.025\"}", L);
    cr_assert_float_eq(sample(text, prefix), 15, 1e-9);
    cr_assert_float_eq(sample(text, "llmserve_instance_up{instance=\"127.0.0.1:7000\","
                                    "service=\"router\"}"),
                       1, 1e-9);
    cr_assert_float_eq(sample(text, "llmserve_instance_up{instance=\"127.0.0.1:7001\","
                                    "service=\"inference\"}"),
                       1, 1e-9);
    cr_assert_float_eq(sample(text, "llmserve_inference_batch_size_bucket{instance=\"127.0.0.1:"
                                    "7001\",model=\"tiny\",pool=\"small\",service=\"inference\","
                                    "le=\"2\"}"),
                       9, 1e-9);
    cr_assert(strstr(text, "note=\"back\\\\slash \\\"quoted\\\"\\nnew line\""), "escaping");
    cr_assert_float_eq(sample(text, "llmserve_collector_reports_total"), 6, 1e-9);
    cr_assert_float_eq(sample(text, "llmserve_collector_rejected_total{reason=\"name\"}"), 0, 1e-9);
    cr_assert(strstr(text, "# TYPE llmserve_ttft_seconds histogram\n"));
    free(text);

    /* HEAD carries the type and no body */
    char *head = NULL;
    cr_assert_eq(test_http_head(g_proc.http_port, "HEAD", "/metrics", &head, 10000), 200);
    cr_assert(strcasestr(head, "Content-Type: text/plain; version=0.0.4"), "%s", head);
    free(head);
    metrics_stream_close_send(rs);
    metrics_stream_close_send(is);
    cr_assert(metrics_stream_wait_end(rs, 10000));
    cr_assert_eq(metrics_stream_status(rs).code, GRPC_STATUS_OK);
    metrics_stream_destroy(rs);
    metrics_stream_destroy(is);
}

Test(metrics, query_answers_what_was_sent, .init = start, .fini = stop_all)
{
    metrics_stream_t *s = metrics_stream_open(g_ch);
    metrics_report_t *r = router_report(1, "r1");
    metrics_stream_report(s, r);
    metrics_report_free(r);
    r = router_report(2, "r1");
    metrics_stream_report(s, r);
    metrics_report_free(r);

    int code = -1;
    Llmserve__V1__QueryResponse *q = query("llmserve_ttft_seconds", NULL, 0, &code);
    cr_assert_eq(code, GRPC_STATUS_OK);
    cr_assert_eq(q->kind, LLMSERVE__V1__METRIC_KIND__METRIC_KIND_HISTOGRAM);
    cr_assert_eq(q->series, 1);
    cr_assert_eq(q->count, 20);
    cr_assert_float_eq(q->sum, 2 * 0.557, 1e-9);
    /* per bucket: (0.005, 0.01] 2, (0.01, 0.025] 8, (0.025, 0.05] 6, (0.05, 0.075] 2,
     * (0.2, 0.3] 2.  Rank 10 of 20 ends the second; rank 19 is half way into the last
     * (linear interpolation, as histogram_quantile). */
    cr_assert_float_eq(q->p50, 0.025, 1e-9);
    cr_assert_float_eq(q->p95, 0.25, 1e-9);
    cr_assert_float_eq(q->p99, 0.2 + 0.1 * (19.8 - 18) / 2, 1e-9);
    cr_assert_gt(q->window_seconds, 0);
    cr_assert_leq(q->window_seconds, 60);
    cr_assert_float_eq(q->rate, 20.0 / q->window_seconds, 1e-9);
    llmserve__v1__query_response__free_unpacked(q, NULL);

    q = query("llmserve_requests_total", ((const char *[]){"code", "OK", NULL}), 0, &code);
    cr_assert_eq(code, GRPC_STATUS_OK);
    cr_assert_eq(q->kind, LLMSERVE__V1__METRIC_KIND__METRIC_KIND_COUNTER);
    cr_assert_eq(q->series, 1);
    cr_assert_float_eq(q->sum, 18, 1e-9);
    cr_assert_eq(q->count, 0);
    cr_assert_float_eq(q->p50, 0, 1e-12);
    llmserve__v1__query_response__free_unpacked(q, NULL);

    q = query("llmserve_requests_total", ((const char *[]){"service", "router", NULL}), 1000,
              &code);
    cr_assert_eq(q->series, 2);
    cr_assert_float_eq(q->sum, 20, 1e-9);
    cr_assert_leq(q->window_seconds, 300);
    llmserve__v1__query_response__free_unpacked(q, NULL);

    q = query("llmserve_requests_in_flight", NULL, 0, &code);
    cr_assert_eq(q->kind, LLMSERVE__V1__METRIC_KIND__METRIC_KIND_GAUGE);
    cr_assert_float_eq(q->sum, 2, 1e-12);
    llmserve__v1__query_response__free_unpacked(q, NULL);

    q = query("llmserve_ttft_seconds", ((const char *[]){"pool", "large", NULL}), 0, &code);
    cr_assert_eq(code, GRPC_STATUS_OK);
    cr_assert_eq(q->series, 0);
    cr_assert_eq(q->count, 0);
    cr_assert_float_eq(q->p99, 0, 1e-12);
    llmserve__v1__query_response__free_unpacked(q, NULL);

    q = query("llmserve_never_reported_total", NULL, 0, &code);
    cr_assert_eq(code, GRPC_STATUS_NOT_FOUND);
    cr_assert_null(q);
    q = query("bad name", NULL, 0, &code);
    cr_assert_eq(code, GRPC_STATUS_INVALID_ARGUMENT);
    q = query("llmserve_ttft_seconds", ((const char *[]){"__x", "y", NULL}), 0, &code);
    cr_assert_eq(code, GRPC_STATUS_INVALID_ARGUMENT);
    metrics_stream_destroy(s);
}

static cJSON *item(cJSON *o, const char *key)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert_not_null(v, "no %s", key);
    return v;
}

Test(metrics, summary_is_the_json_of_api_md, .init = start, .fini = stop_all)
{
    metrics_stream_t *s = metrics_stream_open(g_ch), *i = metrics_stream_open(g_ch);
    metrics_report_t *r = router_report(1, "r1");
    /* slow first tokens: TTFT p95 over 0.5 s */
    double slow[40];
    for (int k = 0; k < 40; k++)
        slow[k] = 0.9;
    metrics_report_hist(r, "llmserve_ttft_seconds", SMALL_MISS, slow, 40);
    metrics_stream_report(s, r);
    metrics_report_free(r);
    r = inference_report(1, "i1");
    metrics_stream_report(i, r);
    metrics_report_free(r);

    char *text = get("/api/summary");
    cJSON *doc = cJSON_Parse(text);
    cr_assert_not_null(doc, "not JSON: %s", text);
    free(text);
    cr_assert(cJSON_IsNumber(item(doc, "now")));
    cr_assert(cJSON_IsNumber(item(doc, "window_seconds")));
    cJSON *overall = item(doc, "overall");
    static const char *const NUMS[] = {"requests_per_second", "tokens_per_second", "error_rate",
                                       "cache_hit_rate",      "in_flight",         "queue_depth"};
    for (size_t k = 0; k < 6; k++)
        cr_assert(cJSON_IsNumber(item(overall, NUMS[k])), "overall.%s", NUMS[k]);
    cr_assert_float_eq(item(overall, "error_rate")->valuedouble, 0.1, 1e-9);
    cr_assert_float_eq(item(overall, "cache_hit_rate")->valuedouble, 0, 1e-9);
    cr_assert_float_eq(item(overall, "in_flight")->valuedouble, 2, 1e-9);
    cr_assert_float_eq(item(overall, "queue_depth")->valuedouble, 1, 1e-9);
    cr_assert_gt(item(item(overall, "ttft"), "p95")->valuedouble, 0.5);
    cr_assert(cJSON_IsNumber(item(item(overall, "itl"), "p50")));
    cr_assert(cJSON_IsNumber(item(item(overall, "e2e"), "p99")));
    cJSON *pools = item(doc, "pools");
    cr_assert_eq(cJSON_GetArraySize(pools), 1);
    cr_assert_str_eq(item(cJSON_GetArrayItem(pools, 0), "pool")->valuestring, "small");
    cJSON *insts = item(doc, "instances");
    cr_assert_eq(cJSON_GetArraySize(insts), 2);
    cJSON *inf = cJSON_GetArrayItem(insts, 0); /* sorted: inference before router */
    cr_assert_str_eq(item(inf, "service")->valuestring, "inference");
    cr_assert(cJSON_IsTrue(item(inf, "up")));
    cr_assert_str_eq(item(inf, "model")->valuestring, "tiny");
    cr_assert_float_eq(item(inf, "queue_limit")->valuedouble, 256, 1e-9);
    cJSON *rt = cJSON_GetArrayItem(insts, 1);
    cr_assert(cJSON_IsNull(item(rt, "pool")));
    cr_assert_float_eq(item(rt, "in_flight")->valuedouble, 2, 1e-9);
    /* 10 requests over a window as long as the collector has run (seconds): the rate
     * decides whether a hit rate of 0 counts */
    bool busy = item(overall, "requests_per_second")->valuedouble > 0.5;
    cJSON *a, *alerts = item(doc, "alerts");
    cJSON_ArrayForEach(a, alerts)
    {
        const char *name = item(a, "name")->valuestring;
        bool want = strcmp(name, "LlmserveTTFTHigh") == 0 || strcmp(name, "LlmserveE2EHigh") == 0 ||
                    strcmp(name, "LlmserveErrorRateHigh") == 0 ||
                    (busy && strcmp(name, "LlmserveCacheHitRateLow") == 0);
        cr_assert_eq(cJSON_IsTrue(item(a, "crossed")), want, "%s", name);
    }
    cr_assert_eq(cJSON_GetArraySize(alerts), 6);
    cJSON *h = item(doc, "history");
    int n = cJSON_GetArraySize(item(h, "t"));
    cr_assert_leq(n, 300);
    cJSON *arr;
    cJSON_ArrayForEach(arr, h) cr_assert_eq(cJSON_GetArraySize(arr), n, "history.%s", arr->string);
    cJSON *c = item(doc, "collector");
    cr_assert_float_eq(item(c, "reports_total")->valuedouble, 2, 1e-9);
    cr_assert_float_eq(item(c, "series_limit")->valuedouble, 10000, 1e-9);
    cJSON_Delete(doc);

    /* the status page is served, self-contained */
    char *page = get("/");
    cr_assert(strstr(page, "<html") && strstr(page, "api/summary"));
    cr_assert_null(strstr(page, "src=\"http"));
    free(page);
    metrics_stream_destroy(s);
    metrics_stream_destroy(i);
}

Test(metrics, bad_input_is_refused_and_counted, .init = start, .fini = stop_all)
{
    metrics_stream_t *s = metrics_stream_open(g_ch);
    /* no source on the first report: refused whole */
    metrics_report_t *r = metrics_report_new(1, NULL, NULL);
    metrics_report_gauge(r, "g", NULL, 1);
    metrics_report_gauge(r, "g2", NULL, 1);
    metrics_ack_t a = metrics_stream_report(s, r);
    metrics_report_free(r);
    cr_assert_eq(a.sequence, 1);
    cr_assert_eq(a.rejected, 2);
    cr_assert(strstr(a.message, "source"), "%s", a.message);

    r = metrics_report_new(2, "router", "r1");
    double v[3] = {0.1, NAN, 0.2};
    metrics_report_hist(r, "llmserve_ttft_seconds", NULL, v, 3);                   /* 1 NaN */
    metrics_report_counter(r, "llmserve_requests", NULL, 1);                       /* no _total */
    metrics_report_counter(r, "llmserve_tokens_total", NULL, -5);                  /* negative */
    metrics_report_gauge(r, "g", ((const char *[]){"service", "x", NULL}), 1);     /* reserved */
    metrics_report_gauge(r, "g", ((const char *[]){"a", "1", "a", "2", NULL}), 1); /* twice */
    metrics_report_gauge(r, "bad name", NULL, 1);
    metrics_report_gauge(r, "g", ((const char *[]){"a", "\xc3", NULL}), 1); /* not UTF-8 */
    metrics_report_gauge(r, "ok_value", NULL, 7);
    a = metrics_stream_report(s, r);
    metrics_report_free(r);
    cr_assert_eq(a.sequence, 2);
    cr_assert_eq(a.rejected, 7, "%s", a.message);
    cr_assert(strstr(a.message, "NaN"), "first reason: %s", a.message);

    /* a name is one kind only */
    r = metrics_report_new(3, NULL, NULL);
    metrics_report_counter(r, "ok_value_total", NULL, 1);
    metrics_report_hist(r, "ok_value", NULL, v, 1);
    a = metrics_stream_report(s, r);
    metrics_report_free(r);
    cr_assert_eq(a.rejected, 1);
    cr_assert(strstr(a.message, "already a gauge"), "%s", a.message);

    /* another source on the same stream: refused whole */
    r = metrics_report_new(4, "cache", "c9");
    metrics_report_gauge(r, "g3", NULL, 1);
    a = metrics_stream_report(s, r);
    metrics_report_free(r);
    cr_assert_eq(a.rejected, 1);
    cr_assert(strstr(a.message, "differs"), "%s", a.message);

    char *text = get("/metrics");
    promtool_check(text);
    cr_assert_float_eq(sample(text, "llmserve_collector_rejected_total{reason=\"value\"}"), 2,
                       1e-9);
    cr_assert_float_eq(sample(text, "llmserve_collector_rejected_total{reason=\"name\"}"), 2, 1e-9);
    cr_assert_float_eq(sample(text, "llmserve_collector_rejected_total{reason=\"label\"}"), 3,
                       1e-9);
    cr_assert_float_eq(sample(text, "llmserve_collector_rejected_total{reason=\"source\"}"), 3,
                       1e-9);
    cr_assert_float_eq(sample(text, "llmserve_collector_rejected_total{reason=\"kind\"}"), 1, 1e-9);
    cr_assert_float_eq(sample(text, "ok_value{instance=\"r1\",service=\"router\"}"), 7, 1e-9);
    cr_assert_float_eq(sample(text, "ok_value_total{instance=\"r1\",service=\"router\"}"), 1, 1e-9);
    cr_assert_null(strstr(text, "\ng{"));
    cr_assert_null(strstr(text, "llmserve_requests{"));
    free(text);

    /* undecodable bytes end that stream with INVALID_ARGUMENT; the collector carries on */
    static const unsigned char junk[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f};
    metrics_stream_send_raw(s, junk, sizeof(junk));
    cr_assert(metrics_stream_wait_end(s, 10000));
    cr_assert_eq(metrics_stream_status(s).code, GRPC_STATUS_INVALID_ARGUMENT);
    metrics_stream_destroy(s);
    s = metrics_stream_open(g_ch);
    r = router_report(1, "r2");
    a = metrics_stream_report(s, r);
    metrics_report_free(r);
    cr_assert_eq(a.rejected, 0, "%s", a.message);
    metrics_stream_destroy(s);
}

/* Resident memory of the collector, KiB (0 when unreadable). */
static long rss_kib(void)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)g_proc.pid);
    FILE *f = fopen(path, "r");
    long kib = 0;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static metrics_report_t *flood(uint64_t seq, int from, int n)
{
    metrics_report_t *r = metrics_report_new(seq, seq == 1 ? "router" : NULL, "flooder");
    char id[32];
    double v = 0.01;
    for (int k = from; k < from + n; k++) {
        snprintf(id, sizeof(id), "req-%d", k);
        if (k % 2)
            metrics_report_hist(r, "llmserve_ttft_seconds", ((const char *[]){"id", id, NULL}), &v,
                                1);
        else
            metrics_report_counter(r, "llmserve_requests_total", ((const char *[]){"id", id, NULL}),
                                   1);
    }
    return r;
}

Test(metrics, series_flood_stops_at_the_bound, .init = NULL, .fini = stop_all)
{
    start_with((const char *const[]){"--max-series", "200", NULL});
    metrics_stream_t *s = metrics_stream_open(g_ch);
    metrics_report_t *r = flood(1, 0, 1000);
    metrics_ack_t a = metrics_stream_report(s, r);
    metrics_report_free(r);
    cr_assert_eq(a.rejected, 800);
    cr_assert(strstr(a.message, "limit of 200"), "%s", a.message);
    cr_assert_float_eq(metric_now("llmserve_collector_series"), 200, 1e-9);
    cr_assert_float_eq(metric_now("llmserve_collector_series_limit"), 200, 1e-9);
    /* more of the same: nothing more is kept */
    long before = rss_kib();
    for (uint64_t seq = 2; seq <= 21; seq++) {
        r = flood(seq, (int)seq * 1000, 1000);
        a = metrics_stream_report(s, r);
        metrics_report_free(r);
        cr_assert_eq(a.rejected, 1000);
    }
    long after = rss_kib();
    char *text = get("/metrics");
    cr_assert_float_eq(sample(text, "llmserve_collector_series"), 200, 1e-9);
    cr_assert_float_eq(sample(text, "llmserve_collector_rejected_total{reason=\"series_limit\"}"),
                       20800, 1e-9);
    promtool_check(text);
    free(text);
    /* Under AddressSanitizer freed memory sits in quarantine and RSS grows regardless. */
    if (!getenv("ASAN_OPTIONS"))
        cr_assert_lt(after - before, 16 * 1024, "RSS grew from %ld to %ld KiB", before, after);
    metrics_stream_destroy(s);
}

Test(metrics, ended_stream_goes_down_then_is_forgotten, .init = NULL, .fini = stop_all)
{
    start_with((const char *const[]){"--stale-seconds", "2", NULL});
    metrics_stream_t *s = metrics_stream_open(g_ch);
    metrics_report_t *r = inference_report(1, "i-gone");
    metrics_stream_report(s, r);
    metrics_report_free(r);
    const char *UP = "llmserve_instance_up{instance=\"i-gone\",service=\"inference\"}";
    const char *RUN = "llmserve_inference_requests_running{instance=\"i-gone\",model=\"tiny\","
                      "pool=\"small\",service=\"inference\"}";
    cr_assert_float_eq(metric_now(UP), 1, 1e-9);
    cr_assert_float_eq(metric_now(RUN), 3, 1e-9);
    metrics_stream_close_send(s);
    cr_assert(metrics_stream_wait_end(s, 10000));
    cr_assert(wait_metric(UP, 0, 5000), "instance not marked down");
    cr_assert_float_eq(metric_now(RUN), 3, 1e-9, "series gone before the instance was forgotten");
    cr_assert(wait_metric(UP, NAN, 10000), "instance not forgotten");
    cr_assert(isnan(metric_now(RUN)), "its series outlived it");
    cr_assert_float_eq(metric_now("llmserve_collector_series"), 0, 1e-9);
    int code;
    cr_assert_null(query("llmserve_inference_requests_running", NULL, 0, &code));
    cr_assert_eq(code, GRPC_STATUS_NOT_FOUND);
    metrics_stream_destroy(s);
}

Test(metrics, silent_stream_goes_down_and_comes_back, .init = NULL, .fini = stop_all)
{
    start_with((const char *const[]){"--stale-seconds", "2", NULL});
    metrics_stream_t *s = metrics_stream_open(g_ch);
    metrics_report_t *r = router_report(1, "r-quiet");
    metrics_stream_report(s, r);
    metrics_report_free(r);
    const char *UP = "llmserve_instance_up{instance=\"r-quiet\",service=\"router\"}";
    cr_assert_float_eq(metric_now(UP), 1, 1e-9);
    cr_assert(wait_metric(UP, 0, 6000), "a silent instance stayed up");
    cr_assert(wait_metric(UP, NAN, 10000), "a silent instance was not forgotten");
    r = router_report(2, "r-quiet"); /* no source needed: the stream still has it */
    metrics_ack_t a = metrics_stream_report(s, r);
    metrics_report_free(r);
    cr_assert_eq(a.rejected, 0, "%s", a.message);
    cr_assert_float_eq(metric_now(UP), 1, 1e-9);
    metrics_stream_destroy(s);
}

Test(metrics, http_paths_and_methods, .init = start, .fini = stop_all)
{
    char *body = NULL;
    cr_assert_eq(test_http_get(g_proc.http_port, "/healthz", &body, NULL), 200);
    cr_assert_str_eq(body, "ok\n");
    free(body);
    cr_assert_eq(test_http_get(g_proc.http_port, "/nope", NULL, NULL), 404);
    cr_assert_eq(test_http_get(g_proc.http_port, "/metrics/extra", NULL, NULL), 404);
    cr_assert_eq(test_http(g_proc.http_port, "POST", "/metrics", NULL, NULL, 10000), 405);
    cr_assert_eq(test_http(g_proc.http_port, "DELETE", "/api/summary", NULL, NULL, 10000), 405);
    char *head = NULL;
    cr_assert_eq(test_http_head(g_proc.http_port, "PUT", "/", &head, 10000), 405);
    cr_assert(strcasestr(head, "Allow: GET, HEAD"), "%s", head);
    free(head);
    cr_assert_eq(test_http_head(g_proc.http_port, "GET", "/api/summary", &head, 10000), 200);
    cr_assert(strcasestr(head, "Content-Type: application/json"), "%s", head);
    free(head);
    cr_assert_eq(test_http_get(g_proc.http_port, "/?x=1", NULL, NULL), 200);
}

Test(metrics, sigterm_ends_open_streams, .init = start, .fini = stop_all)
{
    metrics_stream_t *s = metrics_stream_open(g_ch);
    metrics_report_t *r = router_report(1, "r1");
    metrics_stream_report(s, r);
    metrics_report_free(r);
    int status = test_proc_stop(&g_proc, SIGTERM, 20000);
    cr_assert_eq(status, 0, "exit status %d", status);
    cr_assert(metrics_stream_wait_end(s, 10000));
    cr_assert_eq(metrics_stream_status(s).code, GRPC_STATUS_UNAVAILABLE, "%s",
                 metrics_stream_status(s).details);
    metrics_stream_destroy(s);
}

Test(metrics, bad_http_listen_exits_2, .fini = stop_all)
{
    const char *bin = test_env_path("LLMSERVE_METRICS_BIN");
    static const char *const BAD[] = {"nonsense",       "127.0.0.1:",      ":9464",
                                      "127.0.0.1:http", "127.0.0.1:70000", "[::1]9464"};
    for (size_t i = 0; i < sizeof(BAD) / sizeof(BAD[0]); i++) {
        char *argv[] = {(char *)bin,     "--listen",     "127.0.0.1:0",
                        "--http-listen", (char *)BAD[i], NULL};
        cr_assert_eq(test_run(argv, 30000), 2, "--http-listen %s", BAD[i]);
    }
}

Test(metrics, concurrent_streams_and_scrapes, .init = start, .fini = stop_all)
{
    enum { STREAMS = 8, REPORTS = 50 };
    metrics_stream_t *s[STREAMS];
    char inst[STREAMS][16];
    for (int k = 0; k < STREAMS; k++) {
        s[k] = metrics_stream_open(g_ch);
        snprintf(inst[k], sizeof(inst[k]), "r%d", k);
    }
    /* every stream's reports queued at once, scrapes in between */
    for (uint64_t seq = 1; seq <= REPORTS; seq++) {
        for (int k = 0; k < STREAMS; k++) {
            metrics_report_t *r = router_report(seq, inst[k]);
            metrics_stream_send(s[k], r);
            metrics_report_free(r);
        }
        if (seq % 10 == 0) {
            free(get("/metrics"));
            free(get("/api/summary"));
        }
    }
    for (int k = 0; k < STREAMS; k++) {
        cr_assert(metrics_stream_wait_acks(s[k], REPORTS, 60000), "stream %d: %zu acks", k,
                  metrics_stream_n_acks(s[k]));
        for (size_t i = 0; i < REPORTS; i++) {
            metrics_ack_t a = metrics_stream_ack(s[k], i);
            cr_assert_eq(a.sequence, i + 1, "acks out of order");
            cr_assert_eq(a.rejected, 0, "%s", a.message);
        }
    }
    char *text = get("/metrics");
    cr_assert_float_eq(sample(text, "llmserve_collector_reports_total"), STREAMS * REPORTS, 1e-9);
    promtool_check(text);
    free(text);
    int code;
    Llmserve__V1__QueryResponse *q = query("llmserve_ttft_seconds", NULL, 0, &code);
    cr_assert_eq(code, GRPC_STATUS_OK);
    cr_assert_eq(q->series, STREAMS);
    cr_assert_eq(q->count, STREAMS * REPORTS * 10);
    llmserve__v1__query_response__free_unpacked(q, NULL);
    for (int k = 0; k < STREAMS; k++)
        metrics_stream_destroy(s[k]);
}
