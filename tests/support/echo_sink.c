#define _GNU_SOURCE
#include "echo_sink.h"

#include "base/clock.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

void echo_sink_init(echo_sink_t *k)
{
    memset(k, 0, sizeof(*k));
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    k->order_ok = true;
}

void echo_sink_destroy(echo_sink_t *k)
{
    if (k->stream)
        rpc_stream_release(k->stream);
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
}

static void on_message(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    echo_sink_t *k = ud;
    const Llmserve__Test__EchoReply *r = (const Llmserve__Test__EchoReply *)msg;
    if (k->read_delay_us > 0)
        ls_sleep_us(k->read_delay_us);
    pthread_mutex_lock(&k->mu);
    if (k->check_seq) {
        if (r->seq != k->expect_seq)
            k->order_ok = false;
        k->expect_seq = r->seq + 1;
    }
    snprintf(k->last_metadata, sizeof(k->last_metadata), "%s", r->metadata);
    k->received++;
    bool cancel = k->cancel_after > 0 && k->received == k->cancel_after;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
    if (cancel)
        rpc_stream_cancel(s);
}

static void on_status(rpc_stream_t *s, void *ud, const rpc_status_t *st, const rpc_md_t *trailers)
{
    (void)s;
    echo_sink_t *k = ud;
    pthread_mutex_lock(&k->mu);
    k->status = *st;
    const char *t = rpc_md_get(trailers, "x-echo-trailer", NULL);
    snprintf(k->trailer, sizeof(k->trailer), "%s", t ? t : "");
    k->ended = true;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

const rpc_stream_handler_t echo_sink_handler = {on_message, on_status};

int echo_sink_open(echo_sink_t *k, rpc_channel_t *ch, const rpc_call_opts_t *opts)
{
    k->stream = rpc_stream_open(ch, "/llmserve.test.Echo/Stream",
                                &llmserve__test__echo_reply__descriptor, &echo_sink_handler, k,
                                opts, 0);
    return k->stream ? 0 : -1;
}

int echo_sink_send(echo_sink_t *k, const Llmserve__Test__EchoRequest *req)
{
    return rpc_stream_send(k->stream, &req->base);
}

static void deadline_ts(struct timespec *ts, int timeout_ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    long long ns = ts->tv_nsec + (long long)(timeout_ms % 1000) * 1000000;
    ts->tv_sec += timeout_ms / 1000 + ns / 1000000000;
    ts->tv_nsec = ns % 1000000000;
}

int echo_sink_wait_replies(echo_sink_t *k, int n, int timeout_ms)
{
    struct timespec ts;
    deadline_ts(&ts, timeout_ms);
    pthread_mutex_lock(&k->mu);
    while (k->received < n && !k->ended) {
        if (pthread_cond_timedwait(&k->cv, &k->mu, &ts) != 0)
            break;
    }
    int got = k->received;
    pthread_mutex_unlock(&k->mu);
    return got;
}

bool echo_sink_wait_end(echo_sink_t *k, int timeout_ms)
{
    struct timespec ts;
    deadline_ts(&ts, timeout_ms);
    pthread_mutex_lock(&k->mu);
    while (!k->ended) {
        if (pthread_cond_timedwait(&k->cv, &k->mu, &ts) != 0)
            break;
    }
    bool ended = k->ended;
    pthread_mutex_unlock(&k->mu);
    return ended;
}
