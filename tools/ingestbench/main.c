/*
 * main.c - llmserve-ingestbench: how many samples per second the metrics collector
 * takes in.  Opens --streams Metrics.Report streams to --target, each from its own
 * source, and keeps --window reports in flight on each (a new one per ack) for
 * --seconds; each report carries --histograms histogram series of --values values, and
 * as many counters and gauges, over --series label values (so the collector holds
 * a realistic number of series).  Prints reports/s and samples/s (each histogram value
 * counts one, as the collector counts them) and the rejected count.  Exit status: 0 when
 * every report was acked with nothing rejected, 1 otherwise, 2 for bad flags.
 */
#include "base/clock.h"
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "llmserve/v1/metrics.pb-c.h"
#include "rpc/client.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_HIST 64

typedef struct {
    int64_t histograms, values, series, window;
} shape_t;

/* One report's worth of samples, built once and sent again and again (sequence set per
 * send). */
typedef struct {
    Llmserve__V1__MetricsReport msg;
    Llmserve__V1__MetricsSource src;
    Llmserve__V1__HistogramSample hs[MAX_HIST];
    Llmserve__V1__CounterSample cs[MAX_HIST];
    Llmserve__V1__GaugeSample gs[MAX_HIST];
    Llmserve__V1__HistogramSample *hp[MAX_HIST];
    Llmserve__V1__CounterSample *cp[MAX_HIST];
    Llmserve__V1__GaugeSample *gp[MAX_HIST];
    Llmserve__V1__Label lab[MAX_HIST][2];
    Llmserve__V1__Label *labp[MAX_HIST][2];
    char val[MAX_HIST][16];
    double *values;
} report_t;

typedef struct {
    report_t rep;
    rpc_stream_t *s;
    pthread_mutex_t mu;
    uint64_t next_seq;
    atomic_ulong acked, rejected;
    atomic_bool ended;
    int64_t deadline_us;
    char instance[32];
} bench_stream_t;

static void report_init(report_t *r, const shape_t *sh, int stream)
{
    llmserve__v1__metrics_report__init(&r->msg);
    llmserve__v1__metrics_source__init(&r->src);
    r->values = calloc((size_t)sh->values, sizeof(double));
    for (int64_t v = 0; v < sh->values; v++)
        r->values[v] = 0.0005 * (double)(1 + (v * 7919 + stream) % 2000); /* 0.5 ms .. 1 s */
    for (int i = 0; i < sh->histograms; i++) {
        snprintf(r->val[i], sizeof(r->val[i]), "p%d", (int)(i % sh->series));
        llmserve__v1__label__init(&r->lab[i][0]);
        r->lab[i][0].name = "pool";
        r->lab[i][0].value = r->val[i];
        r->labp[i][0] = &r->lab[i][0];
        llmserve__v1__histogram_sample__init(&r->hs[i]);
        r->hs[i].name = i % 2 ? "llmserve_ttft_seconds" : "llmserve_request_duration_seconds";
        r->hs[i].n_labels = 1;
        r->hs[i].labels = r->labp[i];
        r->hs[i].n_values = (size_t)sh->values;
        r->hs[i].values = r->values;
        r->hp[i] = &r->hs[i];
        llmserve__v1__counter_sample__init(&r->cs[i]);
        r->cs[i].name = "llmserve_requests_total";
        r->cs[i].n_labels = 1;
        r->cs[i].labels = r->labp[i];
        r->cs[i].increment = 1;
        r->cp[i] = &r->cs[i];
        llmserve__v1__gauge_sample__init(&r->gs[i]);
        r->gs[i].name = "llmserve_requests_in_flight";
        r->gs[i].n_labels = 1;
        r->gs[i].labels = r->labp[i];
        r->gs[i].value = (double)i;
        r->gp[i] = &r->gs[i];
    }
    r->msg.n_histograms = r->msg.n_counters = r->msg.n_gauges = (size_t)sh->histograms;
    r->msg.histograms = r->hp;
    r->msg.counters = r->cp;
    r->msg.gauges = r->gp;
}

/* Sends the next report (the first carries the source); false once the time is up. */
static bool send_next(bench_stream_t *b)
{
    if (ls_now_us() >= b->deadline_us)
        return false;
    pthread_mutex_lock(&b->mu);
    b->rep.msg.sequence = ++b->next_seq;
    b->rep.msg.source = b->next_seq == 1 ? &b->rep.src : NULL;
    int rc = rpc_stream_send(b->s, &b->rep.msg.base);
    pthread_mutex_unlock(&b->mu);
    return rc == LS_OK;
}

static void on_ack(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    (void)s;
    bench_stream_t *b = ud;
    const Llmserve__V1__ReportAck *ack = (const Llmserve__V1__ReportAck *)msg;
    atomic_fetch_add(&b->acked, 1);
    atomic_fetch_add(&b->rejected, ack->rejected);
    if (!send_next(b))
        (void)rpc_stream_close_send(b->s);
}

static void on_status(rpc_stream_t *s, void *ud, const rpc_status_t *st, const rpc_md_t *tr)
{
    (void)s, (void)tr;
    bench_stream_t *b = ud;
    if (st->code != GRPC_STATUS_OK)
        fprintf(stderr, "llmserve-ingestbench: stream %s ended: %d %s\n", b->instance,
                (int)st->code, st->details);
    atomic_store(&b->ended, true);
}

int main(int argc, char **argv)
{
    const char *target = "127.0.0.1:9465";
    int64_t streams = 4, seconds = 5;
    shape_t sh = {.histograms = 20, .values = 10, .series = 10, .window = 4};
    const ls_opt_t opts[] = {
        {"target", NULL, LS_OPT_STRING, &target, "the collector's gRPC address", 0, 0},
        {"streams", NULL, LS_OPT_INT, &streams, "Report streams (one source each)", 1, 256},
        {"seconds", NULL, LS_OPT_INT, &seconds, "how long to send", 1, 3600},
        {"histograms", NULL, LS_OPT_INT, &sh.histograms,
         "histogram samples per report (and as many counters and gauges)", 1, MAX_HIST},
        {"values", NULL, LS_OPT_INT, &sh.values, "values per histogram sample", 1, 10000},
        {"series", NULL, LS_OPT_INT, &sh.series, "distinct label values per metric", 1, MAX_HIST},
        {"window", NULL, LS_OPT_INT, &sh.window, "reports in flight per stream", 1, 64},
    };
    ls_config_t conf = {.program = "llmserve-ingestbench",
                        .summary = "How many samples per second the metrics collector takes in.",
                        .opts = opts,
                        .n_opts = sizeof(opts) / sizeof(opts[0])};
    char err[256];
    int rc = ls_config_load(&conf, argc, argv, err, sizeof(err));
    if (rc == LS_CONFIG_HELP)
        return 0;
    if (rc != LS_OK) {
        fprintf(stderr, "llmserve-ingestbench: %s\n", err);
        return 2;
    }
    ls_log_set_level(LS_LOG_ERROR);
    rpc_client_t *client = rpc_client_create(2);
    rpc_channel_t *ch = rpc_channel_create(client, target, NULL);
    bench_stream_t *bs = calloc((size_t)streams, sizeof(*bs));
    if (!client || !ch || !bs) {
        fprintf(stderr, "llmserve-ingestbench: cannot set up the client\n");
        return 1;
    }
    int64_t t0 = ls_now_us();
    rpc_stream_handler_t h = {on_ack, on_status};
    rpc_call_opts_t copts = {.wait_for_ready = true};
    for (int64_t i = 0; i < streams; i++) {
        bench_stream_t *b = &bs[i];
        pthread_mutex_init(&b->mu, NULL);
        snprintf(b->instance, sizeof(b->instance), "bench-%d", (int)i);
        report_init(&b->rep, &sh, (int)i);
        b->rep.src.service = "ingestbench";
        b->rep.src.instance = b->instance;
        b->deadline_us = t0 + seconds * 1000000;
        b->s = rpc_stream_open(ch, "/llmserve.v1.Metrics/Report",
                               &llmserve__v1__report_ack__descriptor, &h, b, &copts, 0);
        if (!b->s) {
            fprintf(stderr, "llmserve-ingestbench: cannot open stream %d\n", (int)i);
            return 1;
        }
        for (int64_t w = 0; w < sh.window; w++)
            send_next(b);
    }
    bool all_ended = false;
    while (!all_ended && ls_now_us() < t0 + (seconds + 30) * 1000000) {
        ls_sleep_us(20000);
        all_ended = true;
        for (int64_t i = 0; i < streams; i++)
            all_ended &= atomic_load(&bs[i].ended);
    }
    double secs = (double)(ls_now_us() - t0) / 1e6;
    uint64_t acked = 0, sent = 0, rejected = 0;
    for (int64_t i = 0; i < streams; i++) {
        acked += atomic_load(&bs[i].acked);
        rejected += atomic_load(&bs[i].rejected);
        sent += bs[i].next_seq;
    }
    double per_report = (double)(sh.histograms * sh.values + 2 * sh.histograms);
    printf("llmserve-ingestbench: %d streams, %.1f s: %llu reports acked (%.0f/s), %.0f "
           "samples/s (%d histograms x %d values + %d counters + %d gauges per report), %llu "
           "rejected\n",
           (int)streams, secs, (unsigned long long)acked, (double)acked / secs,
           (double)acked * per_report / secs, (int)sh.histograms, (int)sh.values,
           (int)sh.histograms, (int)sh.histograms, (unsigned long long)rejected);
    for (int64_t i = 0; i < streams; i++) {
        rpc_stream_release(bs[i].s);
        free(bs[i].rep.values);
        pthread_mutex_destroy(&bs[i].mu);
    }
    free(bs);
    rpc_channel_destroy(ch);
    rpc_client_destroy(client);
    return all_ended && acked == sent && rejected == 0 ? 0 : 1;
}
