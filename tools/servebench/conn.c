/*
 * conn.c - one Generate stream and its requests in flight.
 *
 * Lock rules: c->mu guards the in-flight map, every sb_req_t in it, the counters and
 * the stream's end.  The stream's callbacks take it for each event; waiters sleep on
 * c->cv, which is broadcast whenever a request ends or the stream does.  The lock is
 * never held across rpc_stream_send, whose completion runs on the same client thread.
 */
#define _GNU_SOURCE
#include "conn.h"

#include "base/err.h"
#include "base/log.h"
#include "llmserve/v1/inference.pb-c.h"
#include "rpc/idmap.h"
#include "rpcbench/stats.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sb_conn {
    rpc_stream_t *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rpc_idmap_t inflight; /* seq -> sb_req_t *, requests without their terminal event */
    uint64_t next_seq;
    uint64_t tokens, started, protocol_errors;
    char first_protocol_error[200];
    bool over; /* on_status delivered */
};

/* Counts a broken contract; keeps the first description.  Lock held. */
static void do_protocol_error(sb_conn_t *c, const char *what, const char *id)
{
    if (c->protocol_errors++ == 0)
        snprintf(c->first_protocol_error, sizeof(c->first_protocol_error), "%s (request %s)", what,
                 id);
}

/* Ends r with code and message.  Lock held; r has left the map. */
static void do_end(sb_conn_t *c, sb_req_t *r, int code, const char *message)
{
    r->code = code;
    if (code != 0)
        snprintf(r->message, sizeof(r->message), "%.*s", (int)sizeof(r->message) - 1,
                 message ? message : ""); /* a longer one is cut */
    r->end_ns = bench_now_ns();
    r->ended = true;
    pthread_cond_broadcast(&c->cv);
}

/* "r<seq>" back to seq; 0 when id is not one of ours. */
static uint64_t parse_id(const char *id)
{
    if (id[0] != 'r' || id[1] < '1' || id[1] > '9')
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(id + 1, &end, 10);
    return errno || *end ? 0 : (uint64_t)v;
}

static void on_message(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    (void)s;
    sb_conn_t *c = ud;
    const Llmserve__V1__InferenceEvent *ev = (const Llmserve__V1__InferenceEvent *)msg;
    pthread_mutex_lock(&c->mu);
    uint64_t seq = parse_id(ev->request_id);
    sb_req_t *r = seq ? rpc_idmap_get(&c->inflight, seq) : NULL;
    if (!r) {
        do_protocol_error(c, "event for a request not in flight (ended already, or unknown)",
                          ev->request_id);
        goto out_unlock;
    }
    switch (ev->kind_case) {
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_STARTED:
        if (r->started || r->n_tokens)
            do_protocol_error(c, "started out of order", ev->request_id);
        r->started = true;
        r->cached_tokens = ev->started->cached_tokens;
        r->prompt_tokens = ev->started->prompt_tokens;
        c->started++;
        break;
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_TOKEN:
        if (!r->started || ev->token->index != r->n_tokens)
            do_protocol_error(c, "token out of order", ev->request_id);
        if (r->n_tokens == 0)
            r->first_ns = bench_now_ns();
        if (r->ids && r->n_tokens < r->ids_cap)
            r->ids[r->n_tokens] = ev->token->id;
        r->n_tokens++;
        c->tokens++;
        break;
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_DONE:
        rpc_idmap_del(&c->inflight, seq);
        if (ev->done->usage)
            r->usage_cached = ev->done->usage->cached_prompt_tokens;
        do_end(c, r, 0, NULL);
        break;
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_ERROR:
        rpc_idmap_del(&c->inflight, seq);
        /* a Status with code 0 would be no error at all: count it as one anyway */
        do_end(c, r, ev->error->code ? ev->error->code : GRPC_STATUS_UNKNOWN, ev->error->message);
        break;
    default:
        break;
    }
out_unlock:
    pthread_mutex_unlock(&c->mu);
}

static void on_status(rpc_stream_t *s, void *ud, const rpc_status_t *st, const rpc_md_t *trailers)
{
    (void)s;
    (void)trailers;
    sb_conn_t *c = ud;
    pthread_mutex_lock(&c->mu);
    size_t n = 0;
    void **left = rpc_idmap_take_all(&c->inflight, &n);
    char message[320];
    snprintf(message, sizeof(message), "the stream ended before the request's terminal event: %s",
             st->details[0] ? st->details : "no details");
    for (size_t i = 0; i < n; i++)
        do_end(c, left[i], st->code != GRPC_STATUS_OK ? (int)st->code : GRPC_STATUS_UNAVAILABLE,
               message);
    free(left);
    c->over = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

sb_conn_t *sb_conn_open(rpc_channel_t *ch, const rpc_md_t *md)
{
    sb_conn_t *c = ls_xcalloc(1, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    c->next_seq = 1;
    rpc_stream_handler_t h = {on_message, on_status};
    rpc_call_opts_t opts = {.metadata = md, .wait_for_ready = true};
    c->s = rpc_stream_open(ch, "/llmserve.v1.Inference/Generate",
                           &llmserve__v1__inference_event__descriptor, &h, c, &opts, 0);
    if (!c->s) {
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return NULL;
    }
    return c;
}

int sb_conn_submit(sb_conn_t *c, sb_req_t *r, const sb_submit_t *s)
{
    int32_t *ids = r->ids;
    size_t ids_cap = r->ids_cap;
    pthread_mutex_lock(&c->mu);
    if (c->over) {
        pthread_mutex_unlock(&c->mu);
        return LS_ERR_CLOSED;
    }
    memset(r, 0, sizeof(*r));
    r->ids = ids;
    r->ids_cap = ids_cap;
    r->seq = c->next_seq++;
    /* in the map before the send: the first event can arrive before send returns */
    rpc_idmap_put(&c->inflight, r->seq, r);
    r->sent_ns = bench_now_ns();
    pthread_mutex_unlock(&c->mu);

    char id[24];
    snprintf(id, sizeof(id), "r%" PRIu64, r->seq);
    Llmserve__V1__SamplingParams sp = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    sp.max_tokens = s->max_tokens;
    sp.ignore_eos = true;
    Llmserve__V1__InferenceSubmit sub = LLMSERVE__V1__INFERENCE_SUBMIT__INIT;
    sub.request_id = id;
    sub.prompt_tokens = (int32_t *)s->prompt;
    sub.n_prompt_tokens = s->n_prompt;
    sub.sampling = &sp;
    sub.timeout_ms = s->timeout_ms;
    sub.priority = (Llmserve__V1__Priority)s->priority;
    Llmserve__V1__InferenceRequest req = LLMSERVE__V1__INFERENCE_REQUEST__INIT;
    req.kind_case = LLMSERVE__V1__INFERENCE_REQUEST__KIND_SUBMIT;
    req.submit = &sub;
    int rc = rpc_stream_send(c->s, &req.base);
    if (rc != LS_OK) {
        pthread_mutex_lock(&c->mu);
        /* the stream may have ended meanwhile and ended r already: then it stays ended
         * and the caller, told it failed, does not wait for it */
        rpc_idmap_del(&c->inflight, r->seq);
        pthread_mutex_unlock(&c->mu);
    }
    return rc;
}

/* Waits on c->cv until deadline_ns (CLOCK_MONOTONIC); false once it has passed.  Lock
 * held. */
static bool do_wait_until(sb_conn_t *c, int64_t deadline_ns)
{
    struct timespec ts = {.tv_sec = deadline_ns / 1000000000, .tv_nsec = deadline_ns % 1000000000};
    return pthread_cond_timedwait(&c->cv, &c->mu, &ts) != ETIMEDOUT;
}

bool sb_conn_wait(sb_conn_t *c, sb_req_t *r, int64_t timeout_us)
{
    int64_t deadline = bench_now_ns() + timeout_us * 1000;
    pthread_mutex_lock(&c->mu);
    while (!r->ended && do_wait_until(c, deadline))
        ;
    bool ended = r->ended;
    pthread_mutex_unlock(&c->mu);
    return ended;
}

static uint64_t read_counter(sb_conn_t *c, const uint64_t *v)
{
    pthread_mutex_lock(&c->mu);
    uint64_t x = *v;
    pthread_mutex_unlock(&c->mu);
    return x;
}

uint64_t sb_conn_tokens(sb_conn_t *c)
{
    return read_counter(c, &c->tokens);
}

uint64_t sb_conn_started(sb_conn_t *c)
{
    return read_counter(c, &c->started);
}

uint64_t sb_conn_protocol_errors(sb_conn_t *c)
{
    return read_counter(c, &c->protocol_errors);
}

const char *sb_conn_first_protocol_error(sb_conn_t *c)
{
    return c->first_protocol_error;
}

/* Waits for on_status until deadline_ns; true when it came. */
static bool wait_over(sb_conn_t *c, int64_t deadline_ns)
{
    pthread_mutex_lock(&c->mu);
    while (!c->over && do_wait_until(c, deadline_ns))
        ;
    bool over = c->over;
    pthread_mutex_unlock(&c->mu);
    return over;
}

void sb_conn_close(sb_conn_t *c, int64_t timeout_us)
{
    if (!c)
        return;
    rpc_stream_close_send(c->s);
    if (!wait_over(c, bench_now_ns() + timeout_us * 1000)) {
        rpc_stream_cancel(c->s);
        /* gRPC delivers the status of a cancelled call promptly; the bound is for a
         * client library that does not */
        if (!wait_over(c, bench_now_ns() + 10 * 1000000000LL))
            LS_LOG_ERROR("servebench", "a cancelled Generate stream did not end in 10 s");
    }
    rpc_stream_release(c->s);
    /* on_status has run (or the stream is stuck, and then its memory is left alone) */
    if (!c->over)
        return;
    rpc_idmap_free(&c->inflight);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
