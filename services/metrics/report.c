/*
 * Lock rules: report_service_t.mu guards the list of open streams, draining, and each
 * stream's finished flag.  It is held across rpc_call_finish in the drain (libs/rpc
 * runs no callback from inside it), never across store calls.  A stream's inst is
 * touched only by its call's callbacks, which libs/rpc runs one at a time.
 */
#define _GNU_SOURCE
#include "report.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "llmserve/v1/metrics.pb-c.h"
#include "validate.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct stream stream_t;

struct report_service {
    store_t *store;
    pthread_mutex_t mu;
    stream_t *streams;
    bool draining;
};

struct stream {
    stream_t *prev, *next;
    report_service_t *rs;
    rpc_call_t *call;
    store_inst_t *inst; /* NULL until a report names its source */
    bool finished;
    bool warned; /* a refusal on this stream was logged already */
};

/* ---- Report ----------------------------------------------------------------------- */

static void *report_on_start(rpc_call_t *call, void *ctx)
{
    report_service_t *rs = ctx;
    stream_t *st = ls_xcalloc(1, sizeof(*st));
    st->rs = rs;
    st->call = call;
    pthread_mutex_lock(&rs->mu);
    st->next = rs->streams;
    if (rs->streams)
        rs->streams->prev = st;
    rs->streams = st;
    bool refuse = rs->draining;
    st->finished = refuse;
    pthread_mutex_unlock(&rs->mu);
    if (refuse)
        rpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, "metrics collector shutting down");
    return st;
}

/* Resolves the stream's source from r; returns why not, or NULL. */
static const char *resolve_source(stream_t *st, const Llmserve__V1__MetricsReport *r)
{
    const Llmserve__V1__MetricsSource *src = r->source;
    bool given = src && (src->service[0] || src->instance[0]);
    if (!given)
        return st->inst ? NULL : "the first report on a stream must carry source";
    if (!src->service[0] || !src->instance[0] || !validate_label_value(src->service) ||
        !validate_label_value(src->instance))
        return "source needs a service and an instance, each UTF-8 of at most 256 bytes";
    if (st->inst)
        return store_inst_is(st->inst, src->service, src->instance)
                   ? NULL
                   : "source differs from the one this stream began with";
    st->inst = store_attach(st->rs->store, src->service, src->instance, ls_now_us());
    return NULL;
}

static void report_on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    stream_t *st = state;
    report_service_t *rs = st->rs;
    const Llmserve__V1__MetricsReport *r = (const Llmserve__V1__MetricsReport *)msg;
    pthread_mutex_lock(&rs->mu);
    bool finished = st->finished;
    pthread_mutex_unlock(&rs->mu);
    if (finished)
        return;
    store_ack_t ack;
    const char *why = resolve_source(st, r);
    if (why)
        store_refuse(rs->store, r, REJECT_SOURCE, why, &ack);
    else
        store_apply(rs->store, st->inst, r, ls_now_us(), &ack);
    if (ack.rejected) {
        /* One line per stream at warn: a client that keeps sending bad samples does not
         * flood the log; the counts are in llmserve_collector_rejected_total. */
        ls_log_level_t lvl = st->warned ? LS_LOG_DEBUG : LS_LOG_WARN;
        st->warned = true;
        ls_log(lvl, "metrics", "samples refused peer=%s sequence=%llu rejected=%u reason=\"%s\"",
               rpc_call_peer(call), (unsigned long long)r->sequence, ack.rejected, ack.message);
    }
    Llmserve__V1__ReportAck a = LLMSERVE__V1__REPORT_ACK__INIT;
    a.sequence = r->sequence;
    a.rejected = ack.rejected;
    a.message = ack.message;
    rpc_call_send(call, &a.base);
}

static void report_on_half_close(rpc_call_t *call, void *state)
{
    stream_t *st = state;
    pthread_mutex_lock(&st->rs->mu);
    bool fin = !st->finished;
    st->finished = true;
    pthread_mutex_unlock(&st->rs->mu);
    if (fin)
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void report_on_done(rpc_call_t *call, void *state)
{
    (void)call;
    stream_t *st = state;
    report_service_t *rs = st->rs;
    if (st->inst)
        store_detach(rs->store, st->inst, ls_now_us());
    pthread_mutex_lock(&rs->mu);
    if (st->prev)
        st->prev->next = st->next;
    else
        rs->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    pthread_mutex_unlock(&rs->mu);
    free(st);
}

/* ---- Query ------------------------------------------------------------------------- */

static double or_zero(double v)
{
    return isfinite(v) ? v : 0;
}

/* Query needs the store: its method context is the service, handed to on_start. */
static void *query_on_start(rpc_call_t *call, void *ctx)
{
    (void)call;
    return ctx;
}

static void query_answer(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    report_service_t *rs = state;
    const Llmserve__V1__QueryRequest *q = (const Llmserve__V1__QueryRequest *)msg;
    char why[160];
    if (!validate_metric_name(q->name)) {
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "name is not a valid metric name");
        return;
    }
    if (q->n_labels > VALIDATE_MAX_LABELS + 2) {
        snprintf(why, sizeof(why), "%zu labels, more than %d", q->n_labels,
                 VALIDATE_MAX_LABELS + 2);
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, why);
        return;
    }
    store_label_t match[VALIDATE_MAX_LABELS + 2];
    for (size_t i = 0; i < q->n_labels; i++) {
        const Llmserve__V1__Label *l = q->labels[i];
        if (!validate_label_name(l->name) || !validate_label_value(l->value)) {
            rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                            "a label name is not valid or a value is not UTF-8 of at most 256 "
                            "bytes");
            return;
        }
        match[i] = (store_label_t){l->name, l->value};
    }
    store_result_t r;
    if (store_query(rs->store, q->name, match, q->n_labels, q->window_seconds, false, ls_now_us(),
                    &r) != LS_OK) {
        snprintf(why, sizeof(why), "no metric named %s", q->name);
        rpc_call_finish(call, GRPC_STATUS_NOT_FOUND, why);
        return;
    }
    Llmserve__V1__QueryResponse resp = LLMSERVE__V1__QUERY_RESPONSE__INIT;
    resp.kind = (Llmserve__V1__MetricKind)r.kind;
    resp.series = r.series;
    resp.count = r.count;
    resp.sum = r.sum;
    resp.p50 = or_zero(r.p50);
    resp.p95 = or_zero(r.p95);
    resp.p99 = or_zero(r.p99);
    resp.rate = r.rate;
    resp.window_seconds = r.window_s;
    rpc_call_reply(call, &resp.base);
}

/* ---- life -------------------------------------------------------------------------- */

report_service_t *report_service_create(rpc_server_t *srv, store_t *store)
{
    report_service_t *rs = ls_xcalloc(1, sizeof(*rs));
    rs->store = store;
    pthread_mutex_init(&rs->mu, NULL);
    rpc_handler_t report = {.on_start = report_on_start,
                            .on_message = report_on_message,
                            .on_half_close = report_on_half_close,
                            .on_done = report_on_done};
    rpc_handler_t query = {.on_start = query_on_start, .on_message = query_answer};
    if (rpc_server_add_method(srv, REPORT_METHOD, RPC_STREAM,
                              &llmserve__v1__metrics_report__descriptor, &report, rs) != LS_OK ||
        rpc_server_add_method(srv, QUERY_METHOD, RPC_UNARY,
                              &llmserve__v1__query_request__descriptor, &query, rs) != LS_OK) {
        LS_LOG_ERROR("metrics", "cannot register the Metrics methods");
        report_service_destroy(rs);
        return NULL;
    }
    return rs;
}

void report_service_drain(report_service_t *rs)
{
    int n = 0;
    pthread_mutex_lock(&rs->mu);
    rs->draining = true;
    for (stream_t *st = rs->streams; st; st = st->next) {
        if (st->finished)
            continue;
        st->finished = true;
        rpc_call_finish(st->call, GRPC_STATUS_UNAVAILABLE, "metrics collector shutting down");
        n++;
    }
    pthread_mutex_unlock(&rs->mu);
    LS_LOG_INFO("metrics", "drained report_streams_ended=%d", n);
}

void report_service_destroy(report_service_t *rs)
{
    if (!rs)
        return;
    LS_ASSERT(rs->streams == NULL);
    pthread_mutex_destroy(&rs->mu);
    free(rs);
}
