/*
 * report_client.c - svc_reporter_t on one llmserve.v1.Metrics/Report stream.
 *
 * The svc_metric_* calls go to the aggregate (report_agg.h) and nowhere else.  One
 * thread of ours, the supervisor, opens the stream, takes reports out of the aggregate
 * and sends them, and merges back those that were lost; acks and the stream's end come
 * on the rpc client's thread and only move reports out of flight and wake it.
 *
 * Lock rules: mu guards the stream's state (the stream pointer and flags, the reports in
 * flight, the statistics).  It is never held while a report is taken, built, packed or
 * sent, nor together with the aggregate's lock.  The stream is released only by the
 * supervisor, so it may send on it without mu.
 *
 * Reports in flight point at the aggregate's series (to merge them back if lost); series
 * are evicted only by a take made while no report is in flight, so they outlive them.
 */
#define _GNU_SOURCE
#include "svc/report_client.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "llmserve/v1/metrics.pb-c.h"
#include "svc/report_agg.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REPORT_METHOD "/llmserve.v1.Metrics/Report"
#define MAX_IN_FLIGHT_CAP 8

/* A report sent and not yet acked (the stream's hello carries nothing). */
typedef struct record {
    struct record *next;
    uint64_t seq;
    int64_t sent_us;
    svc__taken_t t;
} record_t;

typedef struct {
    svc_reporter_t base; /* first: the reporter.h contract */
    svc_report_config_t cfg;
    char *target, *service, *instance; /* target "": no collector known */
    rpc_client_t *client;
    rpc_channel_t *ch;           /* NULL while no collector is known */
    rpc_channel_config_t ch_cfg; /* for the channels to later targets */
    pthread_t thread;
    bool started; /* the creating thread's */
    svc__agg_t *agg;

    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    bool stop;
    int64_t stop_deadline_us;
    bool retarget; /* svc_report_client_set_target was called: next_target is next */
    char *next_target;
    bool wake; /* an early report is wanted */
    rpc_stream_t *stream;
    bool broken; /* the stream's on_status came */
    rpc_status_t broken_status;
    bool hello_due;  /* the stream's first report (its source) is still to send */
    bool gauges_due; /* every gauge goes in the next report (a new stream) */
    bool failing;    /* the outage was logged */
    bool rejected_logged;
    uint64_t seq; /* the last sequence number sent on the stream */
    uint64_t acked_on_stream;
    int64_t flush_at_us, connect_at_us, backoff_ms;
    record_t *in_flight, **in_flight_tail;
    size_t n_in_flight;
    uint64_t streams_opened, reports_sent, reports_acked, rejected;
    uint64_t rng;
} report_client_t;

void svc_report_config_init(svc_report_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->interval_ms = 1000;       /* ms between reports */
    cfg->max_series = 4096;        /* series */
    cfg->max_observations = 65536; /* histogram values, 1 MiB held at most */
    cfg->max_in_flight = 2;        /* unacked reports */
    cfg->ack_timeout_ms = 10000;   /* ms */
    cfg->backoff_min_ms = 100;     /* ms */
    cfg->backoff_max_ms = 5000;    /* ms */
    cfg->destroy_timeout_ms = 500; /* ms */
}

/* ---- the svc_metric_* calls ------------------------------------------------------------ */

static void record_sample(report_client_t *c, svc__kind_t kind, const char *name,
                          const svc_label_t *labels, size_t n, double v)
{
    if (!svc__agg_record(c->agg, kind, name, labels, n, v))
        return;
    /* Half the observation bound is held: wake the supervisor for an early report. */
    pthread_mutex_lock(&c->mu);
    c->wake = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void r_counter_add(svc_reporter_t *r, const char *name, const svc_label_t *labels,
                          size_t n_labels, double delta)
{
    record_sample((report_client_t *)r, SVC__COUNTER, name, labels, n_labels, delta);
}

static void r_gauge_set(svc_reporter_t *r, const char *name, const svc_label_t *labels,
                        size_t n_labels, double value)
{
    record_sample((report_client_t *)r, SVC__GAUGE, name, labels, n_labels, value);
}

static void r_observe(svc_reporter_t *r, const char *name, const svc_label_t *labels,
                      size_t n_labels, double value)
{
    record_sample((report_client_t *)r, SVC__HISTOGRAM, name, labels, n_labels, value);
}

static void records_free(record_t *rec)
{
    while (rec) {
        record_t *next = rec->next;
        svc__taken_free(&rec->t);
        free(rec);
        rec = next;
    }
}

/* ---- the stream ------------------------------------------------------------------------ */

/* Text from the network made safe for a key="value" log field. */
static void log_safe(char *out, size_t len, const char *in)
{
    size_t i = 0;
    for (; in && in[i] && i + 1 < len; i++)
        out[i] = in[i] >= 0x20 && in[i] < 0x7f && in[i] != '"' && in[i] != '\\' ? in[i] : '_';
    out[i] = '\0';
}

static void on_ack(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    (void)s;
    report_client_t *c = ud;
    const Llmserve__V1__ReportAck *ack = (const Llmserve__V1__ReportAck *)msg;
    record_t *done = NULL, **tail = &done;
    pthread_mutex_lock(&c->mu);
    bool connected_now = c->acked_on_stream == 0;
    while (c->in_flight && c->in_flight->seq <= ack->sequence) {
        record_t *rec = c->in_flight;
        c->in_flight = rec->next;
        rec->next = NULL;
        *tail = rec;
        tail = &rec->next;
        c->n_in_flight--;
        c->reports_acked++;
        c->acked_on_stream++;
    }
    if (!c->in_flight)
        c->in_flight_tail = &c->in_flight;
    connected_now = connected_now && done;
    bool recovered = connected_now && c->failing;
    if (connected_now)
        c->failing = false;
    c->rejected += ack->rejected;
    bool log_rejected = ack->rejected > 0 && !c->rejected_logged;
    if (log_rejected)
        c->rejected_logged = true;
    char target[256];
    snprintf(target, sizeof(target), "%s", c->target); /* the supervisor may swap it */
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    records_free(done);
    if (connected_now)
        ls_log(recovered ? LS_LOG_INFO : LS_LOG_DEBUG, "svc",
               "reporting metrics target=%s service=%s instance=%s", target, c->service,
               c->instance);
    if (log_rejected) {
        char why[200];
        log_safe(why, sizeof(why), ack->message);
        LS_LOG_WARN("svc",
                    "the metrics collector rejected samples (logged once per stream) "
                    "target=%s rejected=%u reason=\"%s\"",
                    target, ack->rejected, why);
    }
}

static void on_stream_status(rpc_stream_t *s, void *ud, const rpc_status_t *st,
                             const rpc_md_t *trailers)
{
    (void)s, (void)trailers;
    report_client_t *c = ud;
    pthread_mutex_lock(&c->mu);
    c->broken = true;
    c->broken_status = *st;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static const rpc_stream_handler_t stream_handler = {on_ack, on_stream_status};

/* Waits on c->cv until at_us (ls_now_us clock; INT64_MAX: a signal).  mu held. */
static void do_wait_until(report_client_t *c, int64_t at_us)
{
    if (at_us == INT64_MAX) {
        pthread_cond_wait(&c->cv, &c->mu);
        return;
    }
    struct timespec ts = {(time_t)(at_us / 1000000), (long)(at_us % 1000000) * 1000};
    pthread_cond_timedwait(&c->cv, &c->mu, &ts);
}

/* The delay before the next try: the back-off with jitter in [1/2, 1] of it, so that a
 * fleet that lost its collector at once does not come back at once; doubles it.  mu held. */
static int64_t do_next_backoff_us(report_client_t *c)
{
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    int64_t d_us = c->backoff_ms * 1000;
    int64_t delay = d_us / 2 + (int64_t)(c->rng % (uint64_t)(d_us / 2 + 1));
    c->backoff_ms =
        c->backoff_ms * 2 > c->cfg.backoff_max_ms ? c->cfg.backoff_max_ms : c->backoff_ms * 2;
    return delay;
}

/* Opens the stream (fail fast: a collector that is down fails it at once).  mu held. */
static void do_open(report_client_t *c)
{
    rpc_call_opts_t opts = {0};
    if (!c->ch) { /* no collector known: wait for svc_report_client_set_target */
        c->connect_at_us = INT64_MAX;
        return;
    }
    c->broken = false;
    c->stream = rpc_stream_open(c->ch, REPORT_METHOD, &llmserve__v1__report_ack__descriptor,
                                &stream_handler, c, &opts, 16);
    if (!c->stream) {
        c->connect_at_us = ls_now_us() + do_next_backoff_us(c);
        return;
    }
    c->streams_opened++;
    c->hello_due = true;
    c->gauges_due = true; /* a collector that restarted has lost them */
    c->seq = 0;
    c->acked_on_stream = 0;
    c->rejected_logged = false;
}

/* The stream is over: releases it, merges its unacked reports back and schedules the
 * next one.  mu held; released meanwhile. */
static void do_end_stream(report_client_t *c)
{
    rpc_stream_t *s = c->stream;
    record_t *lost = c->in_flight;
    size_t n_lost = c->n_in_flight;
    bool worked = c->acked_on_stream > 0;
    bool first_failure = !worked && !c->failing;
    bool stopping = c->stop;
    rpc_status_t st = c->broken_status;
    c->stream = NULL;
    c->broken = false;
    c->in_flight = NULL;
    c->in_flight_tail = &c->in_flight;
    c->n_in_flight = 0;
    if (!worked)
        c->failing = true;
    if (worked)
        c->backoff_ms = c->cfg.backoff_min_ms;
    c->connect_at_us = ls_now_us() + do_next_backoff_us(c);
    pthread_mutex_unlock(&c->mu);

    rpc_stream_release(s);
    for (record_t *rec = lost; rec; rec = rec->next)
        svc__agg_merge_back(c->agg, &rec->t);
    records_free(lost);
    char why[200];
    log_safe(why, sizeof(why), st.details);
    if (worked && !stopping)
        LS_LOG_WARN("svc",
                    "metrics stream to the collector ended, reconnecting target=%s code=%d "
                    "unacked_reports=%zu details=\"%s\"",
                    c->target, (int)st.code, n_lost, why);
    else if (!worked)
        ls_log(first_failure && !stopping ? LS_LOG_WARN : LS_LOG_DEBUG, "svc",
               "metrics collector not reachable, samples kept within bounds target=%s "
               "code=%d retrying=true details=\"%s\"",
               c->target, (int)st.code, why);
    pthread_mutex_lock(&c->mu);
}

/* Puts rec in flight as the next report of the stream; returns its sequence.  mu held. */
static uint64_t do_in_flight(report_client_t *c, record_t *rec)
{
    rec->seq = ++c->seq;
    rec->sent_us = ls_now_us();
    *c->in_flight_tail = rec;
    c->in_flight_tail = &rec->next;
    c->n_in_flight++;
    c->reports_sent++;
    return rec->seq;
}

/* CLOSED: the stream is ending, and its end merges the report back. */
static void sent(rpc_stream_t *stream, int rc)
{
    if (rc != LS_OK && rc != LS_ERR_CLOSED)
        rpc_stream_cancel(stream);
}

/* The stream's first report: the source and nothing else.  Samples leave only once it
 * is acked, so that while the collector is away they stay aggregated here instead of
 * going back and forth in reports that fail.  mu held; released meanwhile. */
static void do_hello(report_client_t *c)
{
    rpc_stream_t *stream = c->stream; /* only this thread releases it */
    c->hello_due = false;
    uint64_t seq = do_in_flight(c, ls_xcalloc(1, sizeof(record_t)));
    pthread_mutex_unlock(&c->mu);
    Llmserve__V1__MetricsReport msg = LLMSERVE__V1__METRICS_REPORT__INIT;
    Llmserve__V1__MetricsSource source = LLMSERVE__V1__METRICS_SOURCE__INIT;
    source.service = c->service;
    source.instance = c->instance;
    msg.sequence = seq;
    msg.source = &source;
    sent(stream, rpc_stream_send(stream, &msg.base));
    pthread_mutex_lock(&c->mu);
}

/* Takes what changed out of the aggregate and sends it, if anything did.  mu held;
 * released meanwhile. */
static void do_flush(report_client_t *c)
{
    bool all_gauges = c->gauges_due;
    bool may_evict = c->n_in_flight == 0; /* only this thread adds to it */
    rpc_stream_t *stream = c->stream;     /* only this thread releases it */
    c->gauges_due = false;
    c->wake = false;
    c->flush_at_us = ls_now_us() + c->cfg.interval_ms * 1000;
    pthread_mutex_unlock(&c->mu);

    record_t *rec = ls_xcalloc(1, sizeof(*rec));
    svc__agg_take(c->agg, all_gauges, may_evict, &rec->t);
    if (svc__taken_empty(&rec->t)) {
        records_free(rec);
        pthread_mutex_lock(&c->mu);
        return;
    }
    /* Built before it goes in flight: from then on an ack (any sequence number a
     * collector sends) may free rec, and m refers only to the series and itself. */
    svc__report_t m;
    svc__report_build(&rec->t, 0, &m);
    pthread_mutex_lock(&c->mu);
    m.msg.sequence = do_in_flight(c, rec);
    pthread_mutex_unlock(&c->mu);
    sent(stream, rpc_stream_send(stream, &m.msg.base));
    svc__report_free(&m);
    pthread_mutex_lock(&c->mu);
}

/* What the supervisor does next on an open stream: 'h' hello, 'f' flush, or 0 (wait
 * until *at_us).  mu held. */
static int do_next_step(report_client_t *c, int64_t now, bool final, int64_t *at_us)
{
    bool room = c->n_in_flight < c->cfg.max_in_flight;
    bool up = c->acked_on_stream > 0;
    bool due = final || c->wake || c->gauges_due || now >= c->flush_at_us;
    *at_us = c->in_flight ? c->in_flight->sent_us + c->cfg.ack_timeout_ms * 1000 : INT64_MAX;
    if (c->hello_due && room)
        return 'h';
    if (up && due && room)
        return 'f';
    if (up && !due && c->flush_at_us < *at_us)
        *at_us = c->flush_at_us;
    return 0;
}

/* Stopping: what the aggregate holds goes in a last report, acked if the collector
 * answers before the deadline (a stream opened now if none is up); then the stream
 * ends.  mu held. */
static void do_final(report_client_t *c)
{
    int64_t deadline = c->stop_deadline_us;
    if (c->stream && c->broken)
        do_end_stream(c);
    if (!c->stream && c->ch && ls_now_us() < deadline)
        do_open(c);
    if (!c->stream)
        return;
    bool flushed = false;
    while (!c->broken && ls_now_us() < deadline) {
        int64_t at;
        int step = do_next_step(c, ls_now_us(), !flushed, &at);
        if (step == 'h') {
            do_hello(c);
        } else if (step == 'f') {
            do_flush(c);
            flushed = true;
        } else if (flushed && c->n_in_flight == 0) {
            break;
        } else {
            do_wait_until(c, deadline);
        }
    }
    if (!c->broken)
        rpc_stream_close_send(c->stream);
    while (!c->broken && ls_now_us() < deadline)
        do_wait_until(c, deadline);
    if (!c->broken)
        rpc_stream_cancel(c->stream);
    while (!c->broken) /* a cancel ends it promptly */
        pthread_cond_wait(&c->cv, &c->mu);
    do_end_stream(c);
}

/* Moves to next_target: the stream to the old collector ends (its unacked reports are
 * merged back and go to the new one), the channel is replaced.  mu held; released
 * meanwhile. */
static void do_retarget(report_client_t *c)
{
    if (c->stream) {
        if (!c->broken)
            rpc_stream_cancel(c->stream);
        while (!c->broken) /* a cancel ends it promptly */
            pthread_cond_wait(&c->cv, &c->mu);
        do_end_stream(c);
    }
    char *target = c->next_target;
    c->next_target = NULL;
    c->retarget = false;
    rpc_channel_t *old = c->ch;
    c->ch = NULL;
    pthread_mutex_unlock(&c->mu);
    rpc_channel_destroy(old);
    rpc_channel_t *ch = target[0] ? rpc_channel_create(c->client, target, &c->ch_cfg) : NULL;
    if (target[0] && !ch)
        LS_LOG_ERROR("svc", "cannot make a channel to the metrics collector target=%s", target);
    else
        LS_LOG_INFO("svc", "metrics collector changed target=%s previous=%s",
                    target[0] ? target : "none", c->target[0] ? c->target : "none");
    pthread_mutex_lock(&c->mu);
    free(c->target);
    c->target = target;
    c->cfg.target = target;
    c->ch = ch;
    c->failing = false;
    c->backoff_ms = c->cfg.backoff_min_ms;
    c->connect_at_us = ls_now_us();
}

static void *supervisor_main(void *arg)
{
    report_client_t *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        int64_t now = ls_now_us();
        if (c->retarget) {
            do_retarget(c);
            continue;
        }
        if (c->stream && c->broken) {
            do_end_stream(c);
            continue;
        }
        if (!c->stream) {
            if (now >= c->connect_at_us)
                do_open(c);
            else
                do_wait_until(c, c->connect_at_us);
            continue;
        }
        int64_t at;
        int step = do_next_step(c, now, false, &at);
        if (step == 'h') {
            do_hello(c);
        } else if (step == 'f') {
            do_flush(c);
        } else if (c->in_flight && now >= c->in_flight->sent_us + c->cfg.ack_timeout_ms * 1000) {
            LS_LOG_WARN("svc",
                        "the metrics collector does not ack, reopening the stream target=%s "
                        "unacked_reports=%zu",
                        c->target, c->n_in_flight);
            rpc_stream_cancel(c->stream);
            while (!c->broken)
                pthread_cond_wait(&c->cv, &c->mu);
        } else {
            do_wait_until(c, at);
        }
    }
    do_final(c);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* ---- life ------------------------------------------------------------------------------ */

static void r_destroy(svc_reporter_t *r);

static const svc_reporter_ops_t report_ops = {r_counter_add, r_gauge_set, r_observe, r_destroy};

static bool set(const char *s)
{
    return s && *s;
}

svc_reporter_t *svc_report_client_create(const svc_report_config_t *cfg)
{
    if (!cfg || !cfg->target || !set(cfg->service))
        return NULL;
    report_client_t *c = ls_xcalloc(1, sizeof(*c));
    c->base.ops = &report_ops;
    c->cfg = *cfg;
    svc_report_config_t d;
    svc_report_config_init(&d);
    if (c->cfg.interval_ms <= 0)
        c->cfg.interval_ms = d.interval_ms;
    if (c->cfg.max_series == 0)
        c->cfg.max_series = d.max_series;
    if (c->cfg.max_observations == 0)
        c->cfg.max_observations = d.max_observations;
    if (c->cfg.max_in_flight == 0)
        c->cfg.max_in_flight = d.max_in_flight;
    if (c->cfg.max_in_flight > MAX_IN_FLIGHT_CAP)
        c->cfg.max_in_flight = MAX_IN_FLIGHT_CAP;
    if (c->cfg.ack_timeout_ms <= 0)
        c->cfg.ack_timeout_ms = d.ack_timeout_ms;
    if (c->cfg.backoff_min_ms <= 0)
        c->cfg.backoff_min_ms = d.backoff_min_ms;
    if (c->cfg.backoff_max_ms < c->cfg.backoff_min_ms)
        c->cfg.backoff_max_ms =
            d.backoff_max_ms > c->cfg.backoff_min_ms ? d.backoff_max_ms : c->cfg.backoff_min_ms;
    if (c->cfg.destroy_timeout_ms < 0)
        c->cfg.destroy_timeout_ms = d.destroy_timeout_ms;
    c->target = ls_xstrdup(cfg->target);
    c->service = ls_xstrdup(cfg->service);
    c->cfg.target = c->target;
    c->cfg.service = c->service;
    c->cfg.instance = NULL;
    c->cfg.channel = NULL;

    rpc_channel_config_t ch;
    if (cfg->channel)
        ch = *cfg->channel;
    else
        rpc_channel_config_init(&ch);
    ch.reconnect_max_ms = c->cfg.backoff_max_ms;
    c->ch_cfg = ch;
    c->client = rpc_client_create(1);
    c->ch = c->client && c->target[0] ? rpc_channel_create(c->client, c->target, &ch) : NULL;
    if (!c->client || (c->target[0] && !c->ch)) {
        rpc_client_destroy(c->client);
        free(c->target);
        free(c->service);
        free(c);
        return NULL;
    }

    c->agg = svc__agg_create(c->cfg.max_series, c->cfg.max_observations);
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    c->in_flight_tail = &c->in_flight;
    c->backoff_ms = c->cfg.backoff_min_ms;
    c->rng = (uint64_t)ls_wall_us() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)c;
    if (!c->rng)
        c->rng = 1;
    if (set(cfg->instance) && svc_report_client_start(&c->base, cfg->instance) != LS_OK) {
        r_destroy(&c->base);
        return NULL;
    }
    return &c->base;
}

int svc_report_client_start(svc_reporter_t *r, const char *instance)
{
    report_client_t *c = (report_client_t *)r;
    if (c->started)
        return LS_ERR_EXISTS;
    if (!set(instance))
        return LS_ERR_INVALID;
    c->instance = ls_xstrdup(instance);
    c->cfg.instance = c->instance;
    if (pthread_create(&c->thread, NULL, supervisor_main, c) != 0) {
        LS_LOG_ERROR("svc", "cannot start the metrics reporter thread");
        return LS_ERR_INTERNAL;
    }
    pthread_setname_np(c->thread, "svc-report");
    c->started = true;
    return LS_OK;
}

void svc_report_client_stats(svc_reporter_t *r, svc_report_stats_t *out)
{
    report_client_t *c = (report_client_t *)r;
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&c->mu);
    out->streams_opened = c->streams_opened;
    out->reports_sent = c->reports_sent;
    out->reports_acked = c->reports_acked;
    out->rejected = c->rejected;
    out->in_flight = c->n_in_flight;
    out->connected = c->stream && !c->broken && c->acked_on_stream > 0;
    pthread_mutex_unlock(&c->mu);
    svc__agg_counts(c->agg, &out->dropped, &out->series, &out->observations);
}

static void r_destroy(svc_reporter_t *r)
{
    report_client_t *c = (report_client_t *)r;
    if (c->started) {
        pthread_mutex_lock(&c->mu);
        c->stop = true;
        c->stop_deadline_us = ls_now_us() + c->cfg.destroy_timeout_ms * 1000;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->thread, NULL);
    }
    rpc_channel_destroy(c->ch);
    rpc_client_destroy(c->client);

    records_free(c->in_flight); /* none: the supervisor's end merged them back */
    size_t undelivered = svc__agg_destroy(c->agg);
    if (undelivered > 0)
        LS_LOG_INFO("svc", "metrics not delivered at exit target=%s samples=%zu", c->target,
                    undelivered);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c->target);
    free(c->next_target);
    free(c->service);
    free(c->instance);
    free(c);
}

void svc_report_client_set_target(svc_reporter_t *r, const char *target)
{
    report_client_t *c = (report_client_t *)r;
    if (!target)
        target = "";
    pthread_mutex_lock(&c->mu);
    const char *now = c->retarget ? c->next_target : c->target;
    if (strcmp(now, target) != 0) {
        free(c->next_target);
        c->next_target = ls_xstrdup(target);
        c->retarget = true;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
}
