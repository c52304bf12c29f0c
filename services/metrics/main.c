/*
 * main.c - llmserve-metrics: the metrics collector's options and its wiring for the
 * service runtime (libs/svc).  gRPC (--listen) takes Report streams and Query calls;
 * HTTP (--http-listen) serves /metrics, /api/summary, /healthz and the status page;
 * a tick thread marks silent instances down and samples gauges once a second.
 * SIGTERM: /healthz turns 503, open Report streams end with UNAVAILABLE (reporters
 * reconnect), the servers stop.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "http.h"
#include "report.h"
#include "status_page.h"
#include "store.h"
#include "summary.h"
#include "svc/svc.h"
#include "tick.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *http_listen;
    int64_t http_threads;
    int64_t max_series;
    int64_t max_report_samples;
    int64_t stale_s;
    int64_t window_s;
    alerts_config_t alerts;
    /* built by the hooks */
    store_t *store;
    summary_t *summary;
    report_service_t *reports;
    http_t *http;
    tick_t *tick;
} metrics_config_t;

static void metrics_config_init(metrics_config_t *cfg)
{
    store_config_t sc;
    store_config_init(&sc);
    memset(cfg, 0, sizeof(*cfg));
    cfg->http_listen = "0.0.0.0:9464";                        /* Prometheus scrapes here */
    cfg->http_threads = 2;                                    /* threads answering HTTP */
    cfg->max_series = (int64_t)sc.max_series;                 /* 10000 series */
    cfg->max_report_samples = (int64_t)sc.max_report_samples; /* 100000 samples a report */
    cfg->stale_s = sc.stale_us / 1000000;                     /* 300 s */
    cfg->window_s = sc.window_s;                              /* 60 s */
    alerts_config_init(&cfg->alerts); /* 0.5 s, 0.8 s, 1 %, 5 % at 0.5 req/s, 90 % */
}

static void on_tick(void *ud, int64_t now_us)
{
    metrics_config_t *cfg = ud;
    store_tick(cfg->store, now_us);
    summary_tick(cfg->summary, now_us);
}

static int metrics_check(svc_t *svc, void *ud, char *err, size_t err_len)
{
    (void)svc;
    metrics_config_t *cfg = ud;
    return http_check_listen(cfg->http_listen, err, err_len);
}

static int metrics_create(svc_t *svc, void *ud, char *err, size_t err_len)
{
    metrics_config_t *cfg = ud;
    store_config_t sc;
    store_config_init(&sc);
    sc.max_series = (size_t)cfg->max_series;
    sc.max_report_samples = (size_t)cfg->max_report_samples;
    sc.stale_us = cfg->stale_s * 1000000;
    sc.window_s = (uint32_t)cfg->window_s;
    cfg->store = store_create(&sc, ls_now_us());
    cfg->summary = summary_create(cfg->store, sc.window_s, &cfg->alerts);
    cfg->reports = report_service_create(svc_server(svc), cfg->store);
    if (!cfg->reports) {
        ls_set_err(err, err_len, "cannot register %s and %s", REPORT_METHOD, QUERY_METHOD);
        summary_destroy(cfg->summary);
        store_destroy(cfg->store);
        return LS_ERR_INTERNAL;
    }
    return LS_OK;
}

static int metrics_start(svc_t *svc, void *ud, char *err, size_t err_len)
{
    metrics_config_t *cfg = ud;
    http_config_t hc = {.store = cfg->store,
                        .summary = cfg->summary,
                        .page = metrics_status_html,
                        .page_len = metrics_status_html_len,
                        .threads = (int)cfg->http_threads};
    int port = 0;
    cfg->http = http_start(cfg->http_listen, &hc, &port, err, err_len);
    if (!cfg->http)
        return LS_ERR_IO;
    LS_LOG_INFO("metrics", "http serving addr=%s port=%d", cfg->http_listen, port);
    printf("HTTP port=%d\n", port);
    fflush(stdout);
    char http_port[16];
    snprintf(http_port, sizeof(http_port), "%d", port);
    svc_add_meta(svc, "http_port", http_port); /* where Prometheus scrapes /metrics */
    /* Just after each second of the store's clock, so that the gauges sampled belong
     * to the second that just ended. */
    int64_t next = store_second_start_us(cfg->store, store_second(cfg->store, ls_now_us()) + 1);
    cfg->tick = tick_start(next + 20000, 1000000, on_tick, cfg);
    if (!cfg->tick) {
        ls_set_err(err, err_len, "cannot start the tick thread");
        return LS_ERR_INTERNAL;
    }
    return LS_OK;
}

static void metrics_drain(svc_t *svc, void *ud, int64_t deadline_us)
{
    (void)svc;
    (void)deadline_us;
    metrics_config_t *cfg = ud;
    if (cfg->http)
        http_set_draining(cfg->http);
    report_service_drain(cfg->reports);
}

static void metrics_destroy(svc_t *svc, void *ud)
{
    (void)svc;
    metrics_config_t *cfg = ud;
    tick_stop(cfg->tick);
    http_stop(cfg->http);
    report_service_destroy(cfg->reports);
    summary_destroy(cfg->summary);
    store_destroy(cfg->store);
}

int main(int argc, char **argv)
{
    static metrics_config_t cfg;
    metrics_config_init(&cfg);
    alerts_config_t *a = &cfg.alerts;
    const ls_opt_t opts[] = {
        {"http-listen", NULL, LS_OPT_STRING, &cfg.http_listen,
         "HTTP address for /metrics, /api/summary, /healthz and the status page, HOST:PORT "
         "(port 0: any free port)",
         0, 0},
        {"http-threads", NULL, LS_OPT_INT, &cfg.http_threads, "threads answering HTTP", 1, 64},
        {"max-series", NULL, LS_OPT_INT, &cfg.max_series,
         "series kept at most; new series past it are refused and counted", 1, 1e7},
        {"max-report-samples", NULL, LS_OPT_INT, &cfg.max_report_samples,
         "samples in one report (each histogram value counts); a larger report is refused", 1, 1e7},
        {"stale-seconds", NULL, LS_OPT_INT, &cfg.stale_s,
         "seconds of silence that mark an instance down, and seconds a down instance is kept "
         "before it and its series are forgotten",
         1, 86400},
        {"window-seconds", NULL, LS_OPT_INT, &cfg.window_s,
         "window of rates and quantiles in /api/summary and of a Query that names none, "
         "seconds",
         1, STORE_HISTORY_S},
        {"alert-ttft-p95-seconds", NULL, LS_OPT_DOUBLE, &a->ttft_p95_s,
         "LlmserveTTFTHigh: TTFT p95 above this, seconds", 0, 1e6},
        {"alert-e2e-p95-seconds", NULL, LS_OPT_DOUBLE, &a->e2e_p95_s,
         "LlmserveE2EHigh: end-to-end p95 above this, seconds", 0, 1e6},
        {"alert-error-rate", NULL, LS_OPT_DOUBLE, &a->error_rate,
         "LlmserveErrorRateHigh: share of requests not OK above this, 0..1", 0, 1},
        {"alert-cache-hit-rate", NULL, LS_OPT_DOUBLE, &a->cache_hit_rate,
         "LlmserveCacheHitRateLow: cache hit share below this, 0..1 ...", 0, 1},
        {"alert-cache-min-rps", NULL, LS_OPT_DOUBLE, &a->cache_min_rps,
         "... while requests per second are above this", 0, 1e9},
        {"alert-queue-saturation", NULL, LS_OPT_DOUBLE, &a->queue_saturation,
         "LlmserveQueueSaturated: a pool's waiting / queue limit above this, 0..1", 0, 1},
    };
    svc_spec_t spec = {
        .service = "metrics",
        .program = "llmserve-metrics",
        .summary = "Metrics collector: Report streams in, Prometheus /metrics, /api/summary and "
                   "a status page out (llmserve.v1.Metrics).",
        .default_listen = "0.0.0.0:9465",
        .default_rpc_threads = 2,
        .default_grace_ms = 2000,
        .flush_ms = 500,
        .opts = opts,
        .n_opts = sizeof(opts) / sizeof(opts[0]),
        .hooks = {.check = metrics_check,
                  .create = metrics_create,
                  .start = metrics_start,
                  .drain = metrics_drain,
                  .destroy = metrics_destroy},
        .ud = &cfg,
    };
    return svc_main(&spec, argc, argv);
}
