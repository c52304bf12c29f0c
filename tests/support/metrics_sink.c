/*
 * metrics_sink.c - the test collector.
 *
 * Lock rules: k->mu guards everything below it in the struct; acks are sent under it
 * (rpc_call_send takes only the call's own lock and never calls back), so the acks of
 * held reports and of new ones cannot overtake each other.
 */
#define _GNU_SOURCE
#include "metrics_sink.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "llmserve/v1/metrics.pb-c.h"
#include "rpc/codec.h"
#include "rpc/server.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int stream;
    Llmserve__V1__MetricsReport *msg; /* a copy */
} entry_t;

typedef struct held {
    struct held *next;
    rpc_call_t *call; /* referenced */
    entry_t e;
} held_t;

struct metrics_sink {
    int port;
    char *cert, *key, *client_ca; /* TLS when cert is set */
    pthread_mutex_t mu;
    rpc_server_t *srv; /* NULL while stopped */
    bool paused;
    int streams;
    entry_t *entries;
    size_t n_entries, cap_entries;
    held_t *held, **held_tail;
};

/* ---- the server ---------------------------------------------------------------------- */

typedef struct {
    metrics_sink_t *k;
    int stream;
} call_state_t;

static void *on_start(rpc_call_t *call, void *ctx)
{
    (void)call;
    metrics_sink_t *k = ctx;
    call_state_t *st = ls_xcalloc(1, sizeof(*st));
    st->k = k;
    pthread_mutex_lock(&k->mu);
    st->stream = ++k->streams;
    pthread_mutex_unlock(&k->mu);
    return st;
}

/* Records e and acks it on call.  k->mu held. */
static void do_apply(metrics_sink_t *k, rpc_call_t *call, entry_t e)
{
    Llmserve__V1__ReportAck ack = LLMSERVE__V1__REPORT_ACK__INIT;
    ack.sequence = e.msg->sequence;
    if (rpc_call_send(call, &ack.base) != LS_OK) { /* the stream is over: never applied */
        protobuf_c_message_free_unpacked(&e.msg->base, NULL);
        return;
    }
    if (k->n_entries == k->cap_entries) {
        k->cap_entries = k->cap_entries ? k->cap_entries * 2 : 64;
        k->entries = realloc(k->entries, k->cap_entries * sizeof(*k->entries));
        LS_ASSERT(k->entries != NULL);
    }
    k->entries[k->n_entries++] = e;
}

static void on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    call_state_t *st = state;
    metrics_sink_t *k = st->k;
    entry_t e = {st->stream, (Llmserve__V1__MetricsReport *)rpc_codec_copy(msg)};
    LS_ASSERT(e.msg != NULL);
    pthread_mutex_lock(&k->mu);
    if (k->paused || k->held) {
        held_t *h = ls_xcalloc(1, sizeof(*h));
        rpc_call_ref(call);
        h->call = call;
        h->e = e;
        *k->held_tail = h;
        k->held_tail = &h->next;
    } else {
        do_apply(k, call, e);
    }
    pthread_mutex_unlock(&k->mu);
}

static void on_half_close(rpc_call_t *call, void *state)
{
    (void)state;
    rpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void on_done(rpc_call_t *call, void *state)
{
    (void)call;
    free(state);
}

static const rpc_handler_t report_handler = {on_start, on_message, on_half_close, NULL, on_done};

/* Takes the held reports out (k->mu held); the caller frees them with free_held. */
static held_t *do_take_held(metrics_sink_t *k)
{
    held_t *h = k->held;
    k->held = NULL;
    k->held_tail = &k->held;
    return h;
}

static void free_held(held_t *h)
{
    while (h) {
        held_t *next = h->next;
        rpc_call_unref(h->call);
        if (h->e.msg)
            protobuf_c_message_free_unpacked(&h->e.msg->base, NULL);
        free(h);
        h = next;
    }
}

int metrics_sink_start(metrics_sink_t *k)
{
    pthread_mutex_lock(&k->mu);
    bool running = k->srv != NULL;
    pthread_mutex_unlock(&k->mu);
    if (running)
        return 0;
    rpc_server_config_t cfg;
    rpc_server_config_init(&cfg);
    cfg.threads = 1;
    cfg.name = "metrics-sink";
    rpc_server_t *srv = rpc_server_create(&cfg);
    if (!srv)
        return -1;
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", k->port);
    int port = 0;
    rpc_tls_server_t tls = {k->cert, k->key, k->client_ca};
    if (rpc_server_listen(srv, addr, k->cert ? &tls : NULL, &port) != LS_OK ||
        rpc_server_add_method(srv, "/llmserve.v1.Metrics/Report", RPC_STREAM,
                              &llmserve__v1__metrics_report__descriptor, &report_handler,
                              k) != LS_OK ||
        rpc_server_start(srv) != LS_OK) {
        rpc_server_destroy(srv);
        return -1;
    }
    pthread_mutex_lock(&k->mu);
    k->port = port;
    k->srv = srv;
    pthread_mutex_unlock(&k->mu);
    return 0;
}

static void sink_free(metrics_sink_t *k)
{
    free(k->cert);
    free(k->key);
    free(k->client_ca);
    pthread_mutex_destroy(&k->mu);
    free(k);
}

metrics_sink_t *metrics_sink_create_tls(int port, const char *cert, const char *key,
                                        const char *client_ca)
{
    metrics_sink_t *k = ls_xcalloc(1, sizeof(*k));
    pthread_mutex_init(&k->mu, NULL);
    k->port = port;
    k->held_tail = &k->held;
    k->cert = cert ? ls_xstrdup(cert) : NULL;
    k->key = key ? ls_xstrdup(key) : NULL;
    k->client_ca = client_ca ? ls_xstrdup(client_ca) : NULL;
    if (metrics_sink_start(k) != 0) {
        sink_free(k);
        return NULL;
    }
    return k;
}

metrics_sink_t *metrics_sink_create(int port)
{
    return metrics_sink_create_tls(port, NULL, NULL, NULL);
}

int metrics_sink_port(const metrics_sink_t *k)
{
    return k->port;
}

void metrics_sink_stop(metrics_sink_t *k)
{
    pthread_mutex_lock(&k->mu);
    rpc_server_t *srv = k->srv;
    k->srv = NULL;
    held_t *h = do_take_held(k);
    pthread_mutex_unlock(&k->mu);
    free_held(h);
    if (srv) {
        rpc_server_shutdown(srv, 0);
        rpc_server_destroy(srv);
    }
}

void metrics_sink_pause(metrics_sink_t *k, bool paused)
{
    pthread_mutex_lock(&k->mu);
    k->paused = paused;
    held_t *h = NULL;
    if (!paused) {
        h = do_take_held(k);
        for (held_t *x = h; x; x = x->next) {
            do_apply(k, x->call, x->e);
            x->e.msg = NULL; /* applied or freed */
        }
    }
    pthread_mutex_unlock(&k->mu);
    free_held(h);
}

void metrics_sink_destroy(metrics_sink_t *k)
{
    if (!k)
        return;
    metrics_sink_stop(k);
    for (size_t i = 0; i < k->n_entries; i++)
        protobuf_c_message_free_unpacked(&k->entries[i].msg->base, NULL);
    free(k->entries);
    sink_free(k);
}

/* ---- queries --------------------------------------------------------------------------- */

size_t metrics_sink_reports(metrics_sink_t *k)
{
    pthread_mutex_lock(&k->mu);
    size_t n = k->n_entries;
    pthread_mutex_unlock(&k->mu);
    return n;
}

int metrics_sink_streams(metrics_sink_t *k)
{
    pthread_mutex_lock(&k->mu);
    int n = k->streams;
    pthread_mutex_unlock(&k->mu);
    return n;
}

bool metrics_sink_report(metrics_sink_t *k, size_t i, metrics_sink_report_t *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&k->mu);
    bool ok = i < k->n_entries;
    if (ok) {
        const Llmserve__V1__MetricsReport *m = k->entries[i].msg;
        out->stream = k->entries[i].stream;
        out->seq = m->sequence;
        out->has_source = m->source != NULL;
        if (m->source) {
            snprintf(out->service, sizeof(out->service), "%s", m->source->service);
            snprintf(out->instance, sizeof(out->instance), "%s", m->source->instance);
        }
        out->n_counters = m->n_counters;
        out->n_gauges = m->n_gauges;
        out->n_histograms = m->n_histograms;
    }
    pthread_mutex_unlock(&k->mu);
    return ok;
}

/* Whether labels are exactly the set written in spec ("k=v,k2=v2"). */
static bool labels_match(Llmserve__V1__Label *const *labels, size_t n, const char *spec)
{
    size_t want = 0;
    const char *p = spec ? spec : "";
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (!eq)
            return false;
        size_t kl = (size_t)(eq - p), vl = len - kl - 1;
        bool found = false;
        for (size_t i = 0; i < n && !found; i++)
            found = strlen(labels[i]->name) == kl && strncmp(labels[i]->name, p, kl) == 0 &&
                    strlen(labels[i]->value) == vl && strncmp(labels[i]->value, eq + 1, vl) == 0;
        if (!found)
            return false;
        want++;
        p += len + (end ? 1 : 0);
    }
    return want == n;
}

double metrics_sink_counter(metrics_sink_t *k, const char *name, const char *labels)
{
    double sum = 0;
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < k->n_entries; i++) {
        const Llmserve__V1__MetricsReport *m = k->entries[i].msg;
        for (size_t j = 0; j < m->n_counters; j++)
            if (strcmp(m->counters[j]->name, name) == 0 &&
                labels_match(m->counters[j]->labels, m->counters[j]->n_labels, labels))
                sum += m->counters[j]->increment;
    }
    pthread_mutex_unlock(&k->mu);
    return sum;
}

size_t metrics_sink_counter_samples(metrics_sink_t *k, const char *name, const char *labels)
{
    size_t n = 0;
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < k->n_entries; i++) {
        const Llmserve__V1__MetricsReport *m = k->entries[i].msg;
        for (size_t j = 0; j < m->n_counters; j++)
            n += strcmp(m->counters[j]->name, name) == 0 &&
                 labels_match(m->counters[j]->labels, m->counters[j]->n_labels, labels);
    }
    pthread_mutex_unlock(&k->mu);
    return n;
}

bool metrics_sink_gauge(metrics_sink_t *k, const char *name, const char *labels, double *out,
                        int *stream)
{
    bool found = false;
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < k->n_entries; i++) {
        const Llmserve__V1__MetricsReport *m = k->entries[i].msg;
        for (size_t j = 0; j < m->n_gauges; j++) {
            if (strcmp(m->gauges[j]->name, name) == 0 &&
                labels_match(m->gauges[j]->labels, m->gauges[j]->n_labels, labels)) {
                found = true;
                *out = m->gauges[j]->value;
                if (stream)
                    *stream = k->entries[i].stream;
            }
        }
    }
    pthread_mutex_unlock(&k->mu);
    return found;
}

size_t metrics_sink_histogram(metrics_sink_t *k, const char *name, const char *labels, double *out,
                              size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < k->n_entries; i++) {
        const Llmserve__V1__MetricsReport *m = k->entries[i].msg;
        for (size_t j = 0; j < m->n_histograms; j++) {
            const Llmserve__V1__HistogramSample *h = m->histograms[j];
            if (strcmp(h->name, name) != 0 || !labels_match(h->labels, h->n_labels, labels))
                continue;
            for (size_t v = 0; v < h->n_values; v++, n++)
                if (out && n < max)
                    out[n] = h->values[v];
        }
    }
    pthread_mutex_unlock(&k->mu);
    return n;
}

bool metrics_sink_wait_counter(metrics_sink_t *k, const char *name, const char *labels, double want,
                               int timeout_ms)
{
    int64_t end = ls_now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        if (metrics_sink_counter(k, name, labels) >= want)
            return true;
        if (ls_now_us() >= end)
            return false;
        ls_sleep_us(10000);
    }
}

bool metrics_sink_wait_gauge(metrics_sink_t *k, const char *name, const char *labels, double want,
                             int timeout_ms)
{
    int64_t end = ls_now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        double v = 0;
        if (metrics_sink_gauge(k, name, labels, &v, NULL) && v == want)
            return true;
        if (ls_now_us() >= end)
            return false;
        ls_sleep_us(10000);
    }
}
