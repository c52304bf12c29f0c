/*
 * test_report_client.c - the metrics reporter (libs/svc/report_client.c) against a real
 * gRPC collector in the test process (support/metrics_sink.h): aggregation and batching,
 * the source, reconnects, bounds and drops, and that reporting never holds up its
 * callers or its destroy.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "svc/metric_names.h"
#include "svc/report_client.h"
#include "support/metrics_sink.h"
#include "support/net.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static metrics_sink_t *g_sink;

static void quiet(void)
{
    ls_log_set_level(getenv("REPORT_DEBUG") ? LS_LOG_DEBUG : LS_LOG_ERROR);
}

static void stop_sink(void)
{
    metrics_sink_destroy(g_sink);
    g_sink = NULL;
}

TestSuite(report, .init = quiet, .fini = stop_sink, .timeout = 60);

/* A configuration for 127.0.0.1:port with short periods, so tests run in a second. */
static svc_report_config_t config_to(int port, const char *instance)
{
    static char target[TEST_ADDR_LEN];
    test_addr(target, port);
    svc_report_config_t cfg;
    svc_report_config_init(&cfg);
    cfg.target = target;
    cfg.service = "demo";
    cfg.instance = instance;
    cfg.interval_ms = 50;
    cfg.backoff_min_ms = 50;
    cfg.backoff_max_ms = 200;
    return cfg;
}

static svc_report_stats_t stats(svc_reporter_t *r)
{
    svc_report_stats_t st;
    svc_report_client_stats(r, &st);
    return st;
}

/* Waits until every report sent was acked (none left to resend after a break). */
static bool wait_all_acked(svc_reporter_t *r, int timeout_ms)
{
    for (int i = 0; i < timeout_ms / 10; i++) {
        svc_report_stats_t st = stats(r);
        if (st.connected && st.in_flight == 0 && st.reports_acked == st.reports_sent)
            return true;
        ls_sleep_us(10000);
    }
    return false;
}

/* Threads of this process named name (from /proc/self/task/N/comm). */
static int threads_named(const char *name)
{
    DIR *d = opendir("/proc/self/task");
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[64] = "";
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f && fgets(comm, sizeof(comm), f))
            comm[strcspn(comm, "\n")] = '\0';
        if (f)
            fclose(f);
        n += strcmp(comm, name) == 0;
    }
    closedir(d);
    return n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- aggregation and batching ------------------------------------------------------------ */

#define WRITERS 4
#define ADDS 10000
#define OBSERVATIONS 2000

typedef struct {
    svc_reporter_t *r;
    int id;
} writer_t;

static void *writer(void *arg)
{
    writer_t *w = arg;
    svc_label_t a = {"kind", "a"}, b = {"kind", "b"}, op = {"op", "x"};
    for (int i = 0; i < ADDS; i++) {
        svc_metric_add(w->r, "llmserve_test_events_total", &a, 1, 1);
        svc_metric_add(w->r, "llmserve_test_events_total", &b, 1, 0.5);
        if (i < OBSERVATIONS)
            svc_metric_observe(w->r, "llmserve_test_latency_seconds", &op, 1,
                               (w->id * OBSERVATIONS + i) / 1e6);
        if (w->id == 0)
            svc_metric_set(w->r, "llmserve_test_level", NULL, 0, i + 1);
        if (i % 1000 == 0)
            ls_sleep_us(5000); /* spread over several reports */
    }
    return NULL;
}

Test(report, counters_sum_gauges_keep_the_last_value_histograms_keep_every_value)
{
    g_sink = metrics_sink_create(0);
    cr_assert_not_null(g_sink);
    svc_report_config_t cfg = config_to(metrics_sink_port(g_sink), "host-a:7000");
    svc_reporter_t *r = svc_report_client_create(&cfg);
    cr_assert_not_null(r);
    pthread_t t[WRITERS];
    writer_t w[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (writer_t){r, i};
        pthread_create(&t[i], NULL, writer, &w[i]);
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(t[i], NULL);
    svc_reporter_destroy(r); /* the last report goes out here */

    cr_expect_eq(metrics_sink_counter(g_sink, "llmserve_test_events_total", "kind=a"),
                 WRITERS * ADDS, "counters sum exactly");
    cr_expect_eq(metrics_sink_counter(g_sink, "llmserve_test_events_total", "kind=b"),
                 WRITERS * ADDS * 0.5);
    double level = 0;
    cr_expect(metrics_sink_gauge(g_sink, "llmserve_test_level", "", &level, NULL));
    cr_expect_eq(level, ADDS, "the gauge's last value");

    double *got = calloc(WRITERS * OBSERVATIONS + 1, sizeof(double));
    size_t n = metrics_sink_histogram(g_sink, "llmserve_test_latency_seconds", "op=x", got,
                                      WRITERS * OBSERVATIONS + 1);
    cr_expect_eq(n, WRITERS * OBSERVATIONS, "every observation arrives once");
    qsort(got, n, sizeof(double), cmp_double);
    for (size_t i = 0; i < n && i < WRITERS * OBSERVATIONS; i++)
        cr_expect_eq(got[i], i / 1e6, "value %zu", i);
    free(got);

    /* Batched: a report per interval, not a message per call, and each series at most
     * once per report. */
    size_t reports = metrics_sink_reports(g_sink);
    cr_expect_gt(reports, 0);
    cr_expect_lt(reports, 200, "%zu reports for %d calls", reports, WRITERS * ADDS * 3);
    cr_expect_leq(metrics_sink_counter_samples(g_sink, "llmserve_test_events_total", "kind=a"),
                  reports);
    cr_expect_eq(metrics_sink_counter(g_sink, M_REPORT_DROPPED, ""), 0, "nothing dropped");
}

Test(report, the_first_report_of_a_stream_names_the_source)
{
    g_sink = metrics_sink_create(0);
    svc_report_config_t cfg = config_to(metrics_sink_port(g_sink), "host-b:7001");
    svc_reporter_t *r = svc_report_client_create(&cfg);
    for (int i = 0; i < 5; i++) {
        svc_metric_add(r, "llmserve_test_total", NULL, 0, 1);
        ls_sleep_us(80000);
    }
    cr_assert(metrics_sink_wait_counter(g_sink, "llmserve_test_total", "", 5, 5000));
    svc_reporter_destroy(r);

    metrics_sink_report_t rep;
    cr_assert(metrics_sink_report(g_sink, 0, &rep));
    cr_expect(rep.has_source);
    cr_expect_eq(rep.seq, 1);
    cr_expect_str_eq(rep.service, "demo");
    cr_expect_str_eq(rep.instance, "host-b:7001");
    cr_expect_gt(metrics_sink_reports(g_sink), 1);
    for (size_t i = 1; metrics_sink_report(g_sink, i, &rep); i++) {
        cr_expect_eq(rep.stream, 1);
        cr_expect_not(rep.has_source, "report %zu: empty later = same as before", i);
        cr_expect_eq(rep.seq, i + 1, "acked in order, numbered 1, 2, 3...");
    }
}

Test(report, nothing_is_sent_before_start_and_samples_wait_for_it)
{
    g_sink = metrics_sink_create(0);
    svc_report_config_t cfg = config_to(metrics_sink_port(g_sink), NULL);
    svc_reporter_t *r = svc_report_client_create(&cfg);
    cr_assert_not_null(r);
    svc_metric_add(r, "llmserve_test_total", NULL, 0, 3);
    ls_sleep_us(200000);
    cr_expect_eq(metrics_sink_streams(g_sink), 0);
    cr_expect_eq(threads_named("svc-report"), 0);
    cr_assert_eq(svc_report_client_start(r, ""), LS_ERR_INVALID);
    cr_assert_eq(svc_report_client_start(r, "late:1"), LS_OK);
    cr_assert_eq(svc_report_client_start(r, "late:2"), LS_ERR_EXISTS);
    cr_expect(metrics_sink_wait_counter(g_sink, "llmserve_test_total", "", 3, 5000));
    svc_reporter_destroy(r);
    metrics_sink_report_t rep;
    cr_assert(metrics_sink_report(g_sink, 0, &rep));
    cr_expect_str_eq(rep.instance, "late:1");
}

Test(report, create_refuses_a_config_without_target_or_service)
{
    svc_report_config_t cfg = config_to(1, "x");
    cfg.target = NULL;
    cr_expect_null(svc_report_client_create(&cfg));
    cfg = config_to(1, "x");
    cfg.service = NULL;
    cr_expect_null(svc_report_client_create(&cfg));
    cr_expect_null(svc_report_client_create(NULL));
    svc_reporter_destroy(NULL);
}

/* Discovery names the collector late and then another one: samples wait for the first,
 * the second gets the stream (with every gauge) and the totals go on from there. */
Test(report, a_target_named_later_and_changed_gets_the_samples)
{
    svc_report_config_t cfg = config_to(1, "moving:1");
    cfg.target = ""; /* none known yet */
    svc_reporter_t *r = svc_report_client_create(&cfg);
    cr_assert_not_null(r);
    svc_metric_add(r, "llmserve_test_total", NULL, 0, 2);
    svc_metric_set(r, "llmserve_test_level", NULL, 0, 7);
    ls_sleep_us(200000);
    cr_expect_eq(stats(r).streams_opened, 0, "a stream opened with no collector known");

    g_sink = metrics_sink_create(0);
    cr_assert_not_null(g_sink);
    char first[TEST_ADDR_LEN];
    test_addr(first, metrics_sink_port(g_sink));
    svc_report_client_set_target(r, first);
    cr_assert(metrics_sink_wait_counter(g_sink, "llmserve_test_total", "", 2, 5000));
    cr_assert(metrics_sink_wait_gauge(g_sink, "llmserve_test_level", "", 7, 5000));
    cr_assert(wait_all_acked(r, 5000));

    metrics_sink_t *second = metrics_sink_create(0);
    cr_assert_not_null(second);
    char addr[TEST_ADDR_LEN];
    test_addr(addr, metrics_sink_port(second));
    svc_report_client_set_target(r, addr);
    svc_report_client_set_target(r, addr); /* the same again changes nothing */
    svc_metric_add(r, "llmserve_test_total", NULL, 0, 3);
    bool moved = metrics_sink_wait_counter(second, "llmserve_test_total", "", 3, 5000) &&
                 metrics_sink_wait_gauge(second, "llmserve_test_level", "", 7, 5000);
    size_t on_first = metrics_sink_reports(g_sink);
    ls_sleep_us(300000);
    bool first_quiet = metrics_sink_reports(g_sink) == on_first;
    svc_reporter_destroy(r);
    metrics_sink_destroy(second);
    cr_assert(moved, "the new collector did not get the samples and the gauges");
    cr_assert(first_quiet, "the old collector still gets reports");
    cr_expect_eq(metrics_sink_counter(g_sink, "llmserve_test_total", ""), 2);
}

/* ---- reconnects ------------------------------------------------------------------------ */

Test(report, reconnects_after_the_collector_restarts_and_loses_no_counter_total)
{
    g_sink = metrics_sink_create(0);
    int port = metrics_sink_port(g_sink);
    svc_report_config_t cfg = config_to(port, "host-c:7002");
    svc_reporter_t *r = svc_report_client_create(&cfg);
    svc_metric_set(r, "llmserve_test_level", NULL, 0, 42); /* set once, never again */
    for (int i = 0; i < 100; i++)
        svc_metric_add(r, "llmserve_test_total", NULL, 0, 1);
    cr_assert(metrics_sink_wait_counter(g_sink, "llmserve_test_total", "", 100, 5000));
    cr_assert(wait_all_acked(r, 5000));

    metrics_sink_stop(g_sink);
    for (int i = 0; i < 50; i++) {
        svc_metric_add(r, "llmserve_test_total", NULL, 0, 1);
        ls_sleep_us(6000); /* across several failed reconnects */
    }
    cr_expect_not(stats(r).connected);
    cr_assert_eq(metrics_sink_start(g_sink), 0, "port %d taken meanwhile", port);
    cr_assert(metrics_sink_wait_counter(g_sink, "llmserve_test_total", "", 150, 10000), "total %g",
              metrics_sink_counter(g_sink, "llmserve_test_total", ""));
    double level = 0;
    int stream = 0;
    cr_expect(metrics_sink_gauge(g_sink, "llmserve_test_level", "", &level, &stream));
    cr_expect_eq(level, 42);
    cr_expect_gt(stream, 1, "a new stream sends every gauge again");
    svc_reporter_destroy(r);

    cr_expect_eq(metrics_sink_counter(g_sink, "llmserve_test_total", ""), 150, "no loss");
    cr_expect_geq(metrics_sink_streams(g_sink), 2);
    metrics_sink_report_t rep;
    int last_stream = 0;
    for (size_t i = 0; metrics_sink_report(g_sink, i, &rep); i++) {
        if (rep.stream != last_stream)
            cr_expect(rep.has_source && rep.seq == 1, "report %zu opens stream %d", i, rep.stream);
        last_stream = rep.stream;
    }
}

Test(report, a_stalled_collector_is_left_after_the_ack_timeout)
{
    g_sink = metrics_sink_create(0);
    svc_report_config_t cfg = config_to(metrics_sink_port(g_sink), "host-d:7003");
    cfg.ack_timeout_ms = 1000;
    svc_reporter_t *r = svc_report_client_create(&cfg);
    metrics_sink_pause(g_sink, true);
    for (int i = 0; i < 30; i++) {
        svc_metric_add(r, "llmserve_test_total", NULL, 0, 1);
        ls_sleep_us(10000);
    }
    cr_expect_leq(stats(r).in_flight, cfg.max_in_flight, "no pile of unacked reports");
    for (int i = 0; i < 500 && metrics_sink_streams(g_sink) < 2; i++)
        ls_sleep_us(10000);
    cr_assert_geq(metrics_sink_streams(g_sink), 2, "the stalled stream was reopened");
    ls_sleep_us(100000);
    metrics_sink_pause(g_sink, false);
    cr_assert(metrics_sink_wait_counter(g_sink, "llmserve_test_total", "", 30, 10000));
    svc_reporter_destroy(r);
    cr_expect_eq(metrics_sink_counter(g_sink, "llmserve_test_total", ""), 30);
}

/* ---- bounds and drops ------------------------------------------------------------------- */

Test(report, drops_and_counts_beyond_its_bounds_while_the_collector_is_away)
{
    int port = test_free_port(); /* nothing listens there yet */
    svc_report_config_t cfg = config_to(port, "host-e:7004");
    cfg.max_observations = 1000;
    cfg.max_series = 8;
    svc_reporter_t *r = svc_report_client_create(&cfg);
    for (int i = 0; i < 5000; i++)
        svc_metric_observe(r, "llmserve_test_seconds", NULL, 0, i);
    char value[8][8];
    for (int i = 0; i < 10; i++) { /* 7 new counter series fit, 3 do not */
        snprintf(value[i % 8], sizeof(value[0]), "%d", i);
        svc_label_t l = {"n", value[i % 8]};
        svc_metric_add(r, "llmserve_test_total", &l, 1, 1);
    }
    svc_label_t zero = {"n", "0"};
    for (int i = 0; i < 1000; i++) /* an existing series: aggregates, nothing dropped */
        svc_metric_add(r, "llmserve_test_total", &zero, 1, 1);
    ls_sleep_us(300000); /* failed connects meanwhile */

    svc_report_stats_t st = stats(r);
    cr_expect_eq(st.observations, 1000, "the observation buffer is bounded");
    cr_expect_eq(st.series, 8, "the series table is bounded");
    cr_expect_eq(st.dropped, 4000 + 3);
    cr_expect_not(st.connected);

    g_sink = metrics_sink_create(port);
    cr_assert_not_null(g_sink, "port %d taken meanwhile", port);
    cr_assert(metrics_sink_wait_counter(g_sink, M_REPORT_DROPPED, "", 4003, 10000), "dropped %g",
              metrics_sink_counter(g_sink, M_REPORT_DROPPED, ""));
    svc_reporter_destroy(r);
    cr_expect_eq(metrics_sink_counter(g_sink, M_REPORT_DROPPED, ""), 4003);
    cr_expect_eq(metrics_sink_histogram(g_sink, "llmserve_test_seconds", "", NULL, 0), 1000);
    cr_expect_eq(metrics_sink_counter(g_sink, "llmserve_test_total", "n=0"), 1001);
    cr_expect_eq(metrics_sink_counter(g_sink, "llmserve_test_total", "n=6"), 1);
    cr_expect_eq(metrics_sink_counter_samples(g_sink, "llmserve_test_total", "n=7"), 0);
}

Test(report, invalid_samples_are_dropped_and_counted)
{
    g_sink = metrics_sink_create(0);
    svc_report_config_t cfg = config_to(metrics_sink_port(g_sink), "host-f:7005");
    svc_reporter_t *r = svc_report_client_create(&cfg);
    svc_metric_set(r, "llmserve_test_level", NULL, 0, NAN);
    svc_metric_observe(r, "llmserve_test_seconds", NULL, 0, INFINITY);
    svc_metric_add(r, "llmserve_test_total", NULL, 0, -1);
    svc_label_t many[SVC_REPORT_MAX_LABELS + 1];
    for (int i = 0; i <= SVC_REPORT_MAX_LABELS; i++)
        many[i] = (svc_label_t){"k", "v"};
    svc_metric_add(r, "llmserve_test_total", many, SVC_REPORT_MAX_LABELS + 1, 1);
    char big[SVC_REPORT_MAX_KEY_BYTES + 1];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    svc_label_t huge = {"k", big};
    svc_metric_add(r, "llmserve_test_total", &huge, 1, 1);
    svc_metric_add(r, "llmserve_test_total", NULL, 0, 0); /* zero is a valid increment */
    cr_expect_eq(stats(r).dropped, 5);
    cr_assert(metrics_sink_wait_counter(g_sink, M_REPORT_DROPPED, "", 5, 5000));
    svc_reporter_destroy(r);
    cr_expect_eq(metrics_sink_counter_samples(g_sink, "llmserve_test_total", ""), 1,
                 "a counter touched with 0 is reported (the series exists)");
}

Test(report, idle_counter_series_are_forgotten_gauges_kept)
{
    g_sink = metrics_sink_create(0);
    svc_report_config_t cfg = config_to(metrics_sink_port(g_sink), "host-g:7006");
    cfg.interval_ms = 10; /* sixty idle reports in under a second */
    svc_reporter_t *r = svc_report_client_create(&cfg);
    svc_metric_add(r, "llmserve_test_total", NULL, 0, 1);
    svc_metric_observe(r, "llmserve_test_seconds", NULL, 0, 1);
    svc_metric_set(r, "llmserve_test_level", NULL, 0, 1);
    cr_assert(metrics_sink_wait_counter(g_sink, "llmserve_test_total", "", 1, 5000));
    for (int i = 0; i < 500 && stats(r).series > 1; i++)
        ls_sleep_us(10000);
    cr_expect_eq(stats(r).series, 1, "only the gauge is left");
    svc_metric_add(r, "llmserve_test_total", NULL, 0, 1); /* comes back as a new series */
    cr_expect(metrics_sink_wait_counter(g_sink, "llmserve_test_total", "", 2, 5000));
    svc_reporter_destroy(r);
}

/* ---- never in the way ------------------------------------------------------------------- */

/* A TCP port that accepts connections (the kernel's backlog) and never says a word: a
 * collector that hangs.  Returns the listening socket; *port gets its port. */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(fd, 16), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* 100k metric calls of every kind; returns how long they took in microseconds. */
static int64_t hammer(svc_reporter_t *r)
{
    svc_label_t l[2] = {{"method", "/llmserve.v1.Router/Generate"}, {"code", "OK"}};
    int64_t t0 = ls_now_us();
    for (int i = 0; i < 100000; i++) {
        switch (i % 3) {
        case 0:
            svc_metric_add(r, M_GRPC_HANDLED, l, 2, 1);
            break;
        case 1:
            svc_metric_set(r, "llmserve_test_level", l, 1, i);
            break;
        default:
            svc_metric_observe(r, "llmserve_test_seconds", l, 1, i * 1e-6);
        }
    }
    return ls_now_us() - t0;
}

/* Generous for a loaded machine under sanitizers; a call that waited on the network even
 * once per report would take seconds. */
#define HAMMER_BOUND_US 3000000

Test(report, metric_calls_stay_fast_while_the_collector_is_away_hung_or_stalled)
{
    /* Away: nothing listens. */
    svc_report_config_t cfg = config_to(test_free_port(), "host-h:7007");
    svc_reporter_t *r = svc_report_client_create(&cfg);
    int64_t away_us = hammer(r);
    svc_reporter_destroy(r);

    /* Hung: the connection is accepted and nothing ever answers. */
    int port = 0;
    int fd = silent_listener(&port);
    cfg = config_to(port, "host-h:7007");
    r = svc_report_client_create(&cfg);
    ls_sleep_us(100000);
    int64_t hung_us = hammer(r);
    svc_reporter_destroy(r);
    close(fd);

    /* Stalled: the stream is up and the collector stops acking. */
    g_sink = metrics_sink_create(0);
    cfg = config_to(metrics_sink_port(g_sink), "host-h:7007");
    r = svc_report_client_create(&cfg);
    svc_metric_add(r, "llmserve_test_total", NULL, 0, 1);
    cr_assert(metrics_sink_wait_counter(g_sink, "llmserve_test_total", "", 1, 5000));
    metrics_sink_pause(g_sink, true);
    for (int i = 0; i < 300 && stats(r).in_flight < cfg.max_in_flight; i++) {
        svc_metric_add(r, "llmserve_test_total", NULL, 0, 1);
        ls_sleep_us(10000);
    }
    cr_expect_eq(stats(r).in_flight, cfg.max_in_flight, "the collector holds reports unacked");
    int64_t stalled_us = hammer(r);
    svc_report_stats_t st = stats(r);
    cr_expect_leq(st.observations, cfg.max_observations);
    svc_reporter_destroy(r);

    cr_log_info("100k metric calls: away %lld us, hung %lld us, stalled %lld us",
                (long long)away_us, (long long)hung_us, (long long)stalled_us);
    cr_expect_lt(away_us, HAMMER_BOUND_US, "away: %lld us", (long long)away_us);
    cr_expect_lt(hung_us, HAMMER_BOUND_US, "hung: %lld us", (long long)hung_us);
    cr_expect_lt(stalled_us, HAMMER_BOUND_US, "stalled: %lld us", (long long)stalled_us);
}

/* Destroy's own bound (500 ms) plus room for a loaded machine. */
#define DESTROY_BOUND_US 1500000

Test(report, destroy_returns_within_its_bound_whatever_the_collector_does)
{
    /* Away. */
    svc_report_config_t cfg = config_to(test_free_port(), "host-i:7008");
    svc_reporter_t *r = svc_report_client_create(&cfg);
    svc_metric_add(r, "llmserve_test_total", NULL, 0, 1);
    ls_sleep_us(100000);
    int64_t t0 = ls_now_us();
    svc_reporter_destroy(r);
    int64_t away_us = ls_now_us() - t0;

    /* Hung. */
    int port = 0;
    int fd = silent_listener(&port);
    cfg = config_to(port, "host-i:7008");
    r = svc_report_client_create(&cfg);
    svc_metric_add(r, "llmserve_test_total", NULL, 0, 1);
    ls_sleep_us(100000);
    t0 = ls_now_us();
    svc_reporter_destroy(r);
    int64_t hung_us = ls_now_us() - t0;
    close(fd);

    /* Stalled. */
    g_sink = metrics_sink_create(0);
    cfg = config_to(metrics_sink_port(g_sink), "host-i:7008");
    r = svc_report_client_create(&cfg);
    svc_metric_add(r, "llmserve_test_total", NULL, 0, 1);
    cr_assert(metrics_sink_wait_counter(g_sink, "llmserve_test_total", "", 1, 5000));
    metrics_sink_pause(g_sink, true);
    svc_metric_add(r, "llmserve_test_total", NULL, 0, 1);
    ls_sleep_us(100000);
    t0 = ls_now_us();
    svc_reporter_destroy(r);
    int64_t stalled_us = ls_now_us() - t0;

    cr_log_info("destroy: away %lld us, hung %lld us, stalled %lld us", (long long)away_us,
                (long long)hung_us, (long long)stalled_us);
    cr_expect_lt(away_us, DESTROY_BOUND_US, "away: %lld us", (long long)away_us);
    cr_expect_lt(hung_us, DESTROY_BOUND_US, "hung: %lld us", (long long)hung_us);
    cr_expect_lt(stalled_us, DESTROY_BOUND_US, "stalled: %lld us", (long long)stalled_us);
    cr_expect_eq(threads_named("svc-report"), 0, "no reporter thread left");
}

Test(report, destroy_sends_the_last_samples)
{
    g_sink = metrics_sink_create(0);
    svc_report_config_t cfg = config_to(metrics_sink_port(g_sink), "host-j:7009");
    cfg.interval_ms = 3600000; /* no report but the first and the last */
    svc_reporter_t *r = svc_report_client_create(&cfg);
    cr_assert(wait_all_acked(r, 5000));
    svc_metric_add(r, "llmserve_test_total", NULL, 0, 7);
    svc_metric_set(r, "llmserve_test_level", NULL, 0, 0);
    svc_reporter_destroy(r);
    cr_expect_eq(metrics_sink_counter(g_sink, "llmserve_test_total", ""), 7);
    double level = -1;
    cr_expect(metrics_sink_gauge(g_sink, "llmserve_test_level", "", &level, NULL));
    cr_expect_eq(level, 0);
}
