#define _GNU_SOURCE
#include "metrics_stream.h"

#include "base/clock.h"
#include "base/err.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- building reports ------------------------------------------------------------ */

/* Every allocation of a report, freed together. */
struct metrics_report {
    Llmserve__V1__MetricsReport msg;
    Llmserve__V1__MetricsSource source;
    size_t cap_h, cap_c, cap_g; /* room in msg's sample arrays */
    void **allocs;
    size_t n_allocs, cap_allocs;
};

static void *keep(metrics_report_t *r, void *p)
{
    cr_assert_not_null(p);
    if (r->n_allocs == r->cap_allocs) {
        r->cap_allocs = r->cap_allocs ? r->cap_allocs * 2 : 32;
        r->allocs = realloc(r->allocs, r->cap_allocs * sizeof(void *));
        cr_assert_not_null(r->allocs);
    }
    r->allocs[r->n_allocs++] = p;
    return p;
}

static char *keep_str(metrics_report_t *r, const char *s)
{
    return keep(r, strdup(s));
}

metrics_report_t *metrics_report_new(uint64_t seq, const char *service, const char *instance)
{
    metrics_report_t *r = calloc(1, sizeof(*r));
    cr_assert_not_null(r);
    llmserve__v1__metrics_report__init(&r->msg);
    r->msg.sequence = seq;
    if (service) {
        llmserve__v1__metrics_source__init(&r->source);
        r->source.service = keep_str(r, service);
        r->source.instance = keep_str(r, instance ? instance : "");
        r->msg.source = &r->source;
    }
    return r;
}

static Llmserve__V1__Label **labels_of(metrics_report_t *r, const char *const *kv, size_t *n)
{
    *n = 0;
    if (!kv)
        return NULL;
    while (kv[2 * *n])
        (*n)++;
    Llmserve__V1__Label **v = keep(r, calloc(*n ? *n : 1, sizeof(*v)));
    for (size_t i = 0; i < *n; i++) {
        Llmserve__V1__Label *l = keep(r, malloc(sizeof(*l)));
        llmserve__v1__label__init(l);
        l->name = keep_str(r, kv[2 * i]);
        l->value = keep_str(r, kv[2 * i + 1]);
        v[i] = l;
    }
    return v;
}

/* Appends item to the array *arr of *n pointers with room for *cap (freed with the
 * report, not through the allocation list: realloc moves it). */
static void push(void ***arr, size_t *n, size_t *cap, void *item)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *arr = realloc(*arr, *cap * sizeof(void *));
        cr_assert_not_null(*arr);
    }
    (*arr)[(*n)++] = item;
}

void metrics_report_hist(metrics_report_t *r, const char *name, const char *const *labels,
                         const double *values, size_t n_values)
{
    Llmserve__V1__HistogramSample *h = keep(r, malloc(sizeof(*h)));
    llmserve__v1__histogram_sample__init(h);
    h->name = keep_str(r, name);
    h->labels = labels_of(r, labels, &h->n_labels);
    h->n_values = n_values;
    h->values = keep(r, malloc((n_values ? n_values : 1) * sizeof(double)));
    if (n_values)
        memcpy(h->values, values, n_values * sizeof(double));
    push((void ***)&r->msg.histograms, &r->msg.n_histograms, &r->cap_h, h);
}

void metrics_report_counter(metrics_report_t *r, const char *name, const char *const *labels,
                            double increment)
{
    Llmserve__V1__CounterSample *c = keep(r, malloc(sizeof(*c)));
    llmserve__v1__counter_sample__init(c);
    c->name = keep_str(r, name);
    c->labels = labels_of(r, labels, &c->n_labels);
    c->increment = increment;
    push((void ***)&r->msg.counters, &r->msg.n_counters, &r->cap_c, c);
}

void metrics_report_gauge(metrics_report_t *r, const char *name, const char *const *labels,
                          double value)
{
    Llmserve__V1__GaugeSample *g = keep(r, malloc(sizeof(*g)));
    llmserve__v1__gauge_sample__init(g);
    g->name = keep_str(r, name);
    g->labels = labels_of(r, labels, &g->n_labels);
    g->value = value;
    push((void ***)&r->msg.gauges, &r->msg.n_gauges, &r->cap_g, g);
}

const Llmserve__V1__MetricsReport *metrics_report_msg(const metrics_report_t *r)
{
    return &r->msg;
}

void metrics_report_free(metrics_report_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_allocs; i++)
        free(r->allocs[i]);
    free(r->allocs);
    free(r->msg.histograms);
    free(r->msg.counters);
    free(r->msg.gauges);
    free(r);
}

/* ---- the stream --------------------------------------------------------------------- */

#define MAX_ACKS 4096

struct metrics_stream {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rpc_stream_t *s;
    metrics_ack_t acks[MAX_ACKS];
    size_t n_acks; /* may exceed MAX_ACKS: only the first ones are kept */
    bool ended;
    rpc_status_t status;
};

static void on_message(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    (void)s;
    metrics_stream_t *m = ud;
    const Llmserve__V1__ReportAck *a = (const Llmserve__V1__ReportAck *)msg;
    pthread_mutex_lock(&m->mu);
    if (m->n_acks < MAX_ACKS) {
        metrics_ack_t *k = &m->acks[m->n_acks];
        k->sequence = a->sequence;
        k->rejected = a->rejected;
        snprintf(k->message, sizeof(k->message), "%s", a->message);
    }
    m->n_acks++;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

static void on_status(rpc_stream_t *s, void *ud, const rpc_status_t *st, const rpc_md_t *tr)
{
    (void)s;
    (void)tr;
    metrics_stream_t *m = ud;
    pthread_mutex_lock(&m->mu);
    m->ended = true;
    m->status = *st;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

metrics_stream_t *metrics_stream_open(rpc_channel_t *ch)
{
    metrics_stream_t *m = calloc(1, sizeof(*m));
    cr_assert_not_null(m);
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    m->status.code = GRPC_STATUS_UNKNOWN;
    snprintf(m->status.details, sizeof(m->status.details), "not ended");
    rpc_stream_handler_t h = {.on_message = on_message, .on_status = on_status};
    rpc_call_opts_t o = {.wait_for_ready = true};
    m->s = rpc_stream_open(ch, "/llmserve.v1.Metrics/Report", &llmserve__v1__report_ack__descriptor,
                           &h, m, &o, 0);
    cr_assert_not_null(m->s, "cannot open Metrics.Report");
    return m;
}

void metrics_stream_send(metrics_stream_t *m, const metrics_report_t *r)
{
    cr_assert_eq(rpc_stream_send(m->s, &r->msg.base), LS_OK, "Report send refused");
}

void metrics_stream_send_raw(metrics_stream_t *m, const void *data, size_t len)
{
    cr_assert_eq(rpc_stream_send_raw(m->s, data, len), LS_OK, "Report send refused");
}

/* Waits until pred holds or timeout_ms passed.  Lock held. */
static bool do_wait(metrics_stream_t *m, size_t n_acks, bool end, int timeout_ms)
{
    int64_t until = ls_now_us() + (int64_t)timeout_ms * 1000;
    while (end ? !m->ended : (m->n_acks < n_acks && !m->ended)) {
        int64_t left = until - ls_now_us();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + (left % 1000000) * 1000;
        ts.tv_sec += left / 1000000 + ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&m->cv, &m->mu, &ts);
    }
    return end ? m->ended : m->n_acks >= n_acks;
}

bool metrics_stream_wait_acks(metrics_stream_t *m, size_t n, int timeout_ms)
{
    pthread_mutex_lock(&m->mu);
    bool ok = do_wait(m, n, false, timeout_ms);
    pthread_mutex_unlock(&m->mu);
    return ok;
}

metrics_ack_t metrics_stream_report(metrics_stream_t *m, const metrics_report_t *r)
{
    size_t want = metrics_stream_n_acks(m) + 1;
    metrics_stream_send(m, r);
    cr_assert(metrics_stream_wait_acks(m, want, 10000), "no ack for report %llu (status %d %s)",
              (unsigned long long)r->msg.sequence, metrics_stream_status(m).code,
              metrics_stream_status(m).details);
    return metrics_stream_ack(m, want - 1);
}

size_t metrics_stream_n_acks(metrics_stream_t *m)
{
    pthread_mutex_lock(&m->mu);
    size_t n = m->n_acks;
    pthread_mutex_unlock(&m->mu);
    return n;
}

metrics_ack_t metrics_stream_ack(metrics_stream_t *m, size_t i)
{
    metrics_ack_t a = {0};
    pthread_mutex_lock(&m->mu);
    if (i < m->n_acks && i < MAX_ACKS)
        a = m->acks[i];
    pthread_mutex_unlock(&m->mu);
    return a;
}

int metrics_stream_close_send(metrics_stream_t *m)
{
    return rpc_stream_close_send(m->s);
}

bool metrics_stream_wait_end(metrics_stream_t *m, int timeout_ms)
{
    pthread_mutex_lock(&m->mu);
    bool ok = do_wait(m, 0, true, timeout_ms);
    pthread_mutex_unlock(&m->mu);
    return ok;
}

rpc_status_t metrics_stream_status(metrics_stream_t *m)
{
    pthread_mutex_lock(&m->mu);
    rpc_status_t st = m->status;
    pthread_mutex_unlock(&m->mu);
    return st;
}

void metrics_stream_destroy(metrics_stream_t *m)
{
    if (!m)
        return;
    rpc_stream_cancel(m->s);
    bool ended = metrics_stream_wait_end(m, 10000);
    rpc_stream_release(m->s);
    if (!ended) /* its callbacks may still come: leave it allocated */
        return;
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
}
