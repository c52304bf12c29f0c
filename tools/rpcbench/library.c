/*
 * library.c - the Bench service on libs/rpc, used the way a real service uses it.
 *
 * Server: rpc_server_t with p.server_threads completion-queue threads.  Unary replies
 * from on_message.  Down, by default, fills the write queue to p.window (lowered for
 * large messages, see down_window) from on_message and refills it from
 * rpc_call_on_drain whenever it falls to half: completion-driven on the call's own
 * thread, like the baseline.  With p.app_producer it produces from a thread of its own
 * instead, as a service whose messages come from elsewhere (a model, a cache) must:
 * that thread keeps rpc_call_write_queue_len under the window and sleeps p.backoff_us
 * when it is not.  Producing everything from on_message was rejected: 200000 messages
 * would overflow the write-queue bound and the call would be cancelled.  Up counts in
 * on_message and replies at on_half_close.
 *
 * Client: rpc_client_t with one thread for stream callbacks; rpc_channel_unary for
 * unary calls.  Up, by default, fills p.window messages from the calling thread and
 * refills from rpc_stream_on_drain (the stream's callback thread) when half are sent;
 * with p.app_producer the calling thread sends everything, retrying after p.backoff_us
 * when rpc_stream_send answers LS_ERR_FULL (the window is rpc_stream_open's bound).
 * The calling thread waits for on_status.
 *
 * Lock rules: t->mu guards the producer fields, `ended` and `status`.  The stream's
 * counters (received, misordered, reply) are written by its on_message callbacks only,
 * without the lock: one stream's callbacks run on one thread, on_status last, and the
 * calling thread reads them only after seeing `ended` under the lock.  A lock per message
 * would be this tool's cost, not the library's.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "bench.pb-c.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "stats.h"
#include "target.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    bench_target_t base;
    bench_params_t p;
    char describe[400];
    uint8_t *payload;   /* p.payload_bytes of filler */
    size_t down_window; /* p.window, lowered to stay under the server's byte bound */
    rpc_server_t *srv;
    rpc_client_t *client;
    rpc_channel_t *ch;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* the Down producer: one Down call at a time */
    pthread_t producer;
    bool producer_running;
    /* the client stream being run (one at a time) */
    bool ended;
    rpc_status_t status;
    uint64_t received, misordered; /* Down; see the lock rules */
    uint64_t reply;                /* Up; see the lock rules */
} lib_target_t;

/* A Down call's producer thread; holds a reference on call. */
typedef struct {
    lib_target_t *t;
    rpc_call_t *call;
    uint64_t want;
} producer_t;

/* ---- server ----------------------------------------------------------------------- */

static void *on_start_ctx(rpc_call_t *call, void *method_ctx)
{
    (void)call;
    return method_ctx;
}

static void unary_on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    (void)state;
    const Llmserve__Bench__BenchMsg *req = (const Llmserve__Bench__BenchMsg *)msg;
    Llmserve__Bench__BenchMsg reply = LLMSERVE__BENCH__BENCH_MSG__INIT;
    reply.seq = req->seq;
    reply.payload = req->payload;
    int rc = rpc_call_reply(call, &reply.base);
    if (rc != LS_OK)
        LS_LOG_WARN("rpcbench", "library unary reply failed err=%s", ls_strerror(rc));
}

static void *producer_main(void *arg)
{
    producer_t *job = arg;
    lib_target_t *t = job->t;
    Llmserve__Bench__BenchMsg m = LLMSERVE__BENCH__BENCH_MSG__INIT;
    m.payload.data = t->payload;
    m.payload.len = (size_t)t->p.payload_bytes;
    size_t window = t->down_window;
    uint64_t i = 0;
    int rc = LS_OK;
    while (i < job->want && rc == LS_OK) {
        size_t queued = rpc_call_write_queue_len(job->call);
        if (queued >= window) {
            ls_sleep_us(t->p.backoff_us);
            continue;
        }
        for (; queued < window && i < job->want; queued++) {
            m.seq = i;
            rc = rpc_call_send(job->call, &m.base);
            if (rc != LS_OK)
                break;
            i++;
        }
    }
    if (rc == LS_OK)
        rc = rpc_call_finish(job->call, GRPC_STATUS_OK, NULL);
    if (rc != LS_OK)
        LS_LOG_WARN("rpcbench", "library down producer stopped queued=%llu err=%s",
                    (unsigned long long)i, ls_strerror(rc));
    rpc_call_unref(job->call);
    free(job);
    return NULL;
}

/* A drain-driven Down call (the call's state; freed at on_done). */
typedef struct {
    lib_target_t *t;
    uint64_t want, sent;
} drain_job_t;

static void *down_drain_on_start(rpc_call_t *call, void *method_ctx)
{
    (void)call;
    drain_job_t *j = ls_xcalloc(1, sizeof(*j));
    j->t = method_ctx;
    return j;
}

/* Tops the queue up to the window; finishes once everything is queued. */
static void down_fill(rpc_call_t *call, void *ud)
{
    drain_job_t *j = ud;
    lib_target_t *t = j->t;
    Llmserve__Bench__BenchMsg m = LLMSERVE__BENCH__BENCH_MSG__INIT;
    m.payload.data = t->payload;
    m.payload.len = (size_t)t->p.payload_bytes;
    int rc = LS_OK;
    for (size_t q = rpc_call_write_queue_len(call); q < t->down_window && j->sent < j->want;
         q++) {
        m.seq = j->sent;
        if ((rc = rpc_call_send(call, &m.base)) != LS_OK)
            break;
        j->sent++;
    }
    if (rc == LS_OK && j->sent == j->want) {
        rpc_call_on_drain(call, 0, NULL, NULL);
        rc = rpc_call_finish(call, GRPC_STATUS_OK, NULL);
    }
    if (rc != LS_OK) {
        rpc_call_on_drain(call, 0, NULL, NULL);
        LS_LOG_WARN("rpcbench", "library down stopped queued=%llu err=%s",
                    (unsigned long long)j->sent, ls_strerror(rc));
    }
}

static void down_drain_on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    drain_job_t *j = state;
    j->want = ((const Llmserve__Bench__BenchMsg *)msg)->seq;
    rpc_call_on_drain(call, j->t->down_window / 2, down_fill, j);
    down_fill(call, j);
}

static void down_drain_on_done(rpc_call_t *call, void *state)
{
    (void)call;
    free(state);
}

static void down_on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    lib_target_t *t = state;
    producer_t *job = ls_xmalloc(sizeof(*job));
    job->t = t;
    job->call = call;
    job->want = ((const Llmserve__Bench__BenchMsg *)msg)->seq;
    rpc_call_ref(call);
    pthread_mutex_lock(&t->mu);
    bool started =
        !t->producer_running && pthread_create(&t->producer, NULL, producer_main, job) == 0;
    if (started) {
        t->producer_running = true;
        pthread_setname_np(t->producer, "bench-producer");
    }
    pthread_mutex_unlock(&t->mu);
    if (!started) {
        rpc_call_cancel(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "no producer thread free");
        rpc_call_unref(call);
        free(job);
    }
}

/* Waits for the Down producer thread, if one ran. */
static void join_producer(lib_target_t *t)
{
    pthread_mutex_lock(&t->mu);
    bool running = t->producer_running;
    t->producer_running = false;
    pthread_mutex_unlock(&t->mu);
    if (running)
        pthread_join(t->producer, NULL);
}

typedef struct {
    uint64_t received; /* in order; one call's callbacks never overlap, so no lock */
} up_state_t;

static void *up_on_start(rpc_call_t *call, void *method_ctx)
{
    (void)call;
    (void)method_ctx;
    return ls_xcalloc(1, sizeof(up_state_t));
}

static void up_on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    (void)call;
    up_state_t *st = state;
    if (((const Llmserve__Bench__BenchMsg *)msg)->seq == st->received)
        st->received++;
}

static void up_on_half_close(rpc_call_t *call, void *state)
{
    up_state_t *st = state;
    Llmserve__Bench__BenchMsg reply = LLMSERVE__BENCH__BENCH_MSG__INIT;
    reply.seq = st->received;
    int rc = rpc_call_send(call, &reply.base);
    if (rc == LS_OK)
        rc = rpc_call_finish(call, GRPC_STATUS_OK, NULL);
    if (rc != LS_OK)
        LS_LOG_WARN("rpcbench", "library up reply failed err=%s", ls_strerror(rc));
}

static void up_on_done(rpc_call_t *call, void *state)
{
    (void)call;
    free(state);
}

/* ---- client ------------------------------------------------------------------------ */

static rpc_call_opts_t call_opts(const lib_target_t *t)
{
    rpc_call_opts_t opts;
    memset(&opts, 0, sizeof(opts));
    opts.timeout_us = t->p.deadline_ms * 1000;
    opts.wait_for_ready = true;
    return opts;
}

/* One unary call of sequence number seq; checks the echo. */
static int unary_once(lib_target_t *t, const rpc_call_opts_t *opts, uint64_t seq)
{
    Llmserve__Bench__BenchMsg req = LLMSERVE__BENCH__BENCH_MSG__INIT;
    req.seq = seq;
    req.payload.data = t->payload;
    req.payload.len = (size_t)t->p.payload_bytes;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    int rc = rpc_channel_unary(t->ch, BENCH_METHOD_UNARY, &req.base,
                               &llmserve__bench__bench_msg__descriptor, opts, &resp, &st);
    if (rc != LS_OK) {
        LS_LOG_ERROR("rpcbench", "library unary could not be made err=%s", ls_strerror(rc));
        return rc;
    }
    if (st.code != GRPC_STATUS_OK) {
        LS_LOG_ERROR("rpcbench", "library unary failed status=%d details=\"%s\"", (int)st.code,
                     st.details);
        return LS_ERR_IO;
    }
    const Llmserve__Bench__BenchMsg *m = (const Llmserve__Bench__BenchMsg *)resp;
    bool right = m->seq == seq && m->payload.len == req.payload.len;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (!right) {
        LS_LOG_ERROR("rpcbench", "library unary reply is wrong seq=%llu", (unsigned long long)seq);
        return LS_ERR_FORMAT;
    }
    return LS_OK;
}

static int lib_unary(bench_target_t *base, int64_t *lat_ns, int64_t *elapsed_ns)
{
    lib_target_t *t = (lib_target_t *)base;
    rpc_call_opts_t opts = call_opts(t);
    int64_t total = t->p.warmup_calls + t->p.calls;
    int64_t start = bench_now_ns();
    for (int64_t i = 0; i < total; i++) {
        int64_t t0 = bench_now_ns();
        if (i == t->p.warmup_calls)
            start = t0;
        int rc = unary_once(t, &opts, (uint64_t)i);
        if (rc != LS_OK)
            return rc;
        if (i >= t->p.warmup_calls)
            lat_ns[i - t->p.warmup_calls] = bench_now_ns() - t0;
    }
    *elapsed_ns = bench_now_ns() - start;
    return LS_OK;
}

static void down_on_reply(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    (void)s;
    lib_target_t *t = ud;
    uint64_t seq = ((const Llmserve__Bench__BenchMsg *)msg)->seq;
    if (seq == t->received)
        t->received++;
    else
        t->misordered++;
}

static void up_on_reply(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    (void)s;
    lib_target_t *t = ud;
    t->reply = ((const Llmserve__Bench__BenchMsg *)msg)->seq;
}

static void on_stream_status(rpc_stream_t *s, void *ud, const rpc_status_t *status,
                             const rpc_md_t *trailers)
{
    (void)s;
    (void)trailers;
    lib_target_t *t = ud;
    pthread_mutex_lock(&t->mu);
    t->status = *status;
    t->ended = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void reset_stream_result(lib_target_t *t)
{
    pthread_mutex_lock(&t->mu);
    t->ended = false;
    t->received = t->misordered = 0;
    t->reply = UINT64_MAX;
    pthread_mutex_unlock(&t->mu);
}

static void wait_stream_end(lib_target_t *t)
{
    pthread_mutex_lock(&t->mu);
    while (!t->ended)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

static int stream_failed(lib_target_t *t, const char *what)
{
    LS_LOG_ERROR("rpcbench", "library %s failed status=%d details=\"%s\"", what,
                 (int)t->status.code, t->status.details);
    return LS_ERR_IO;
}

static int lib_down(bench_target_t *base, int64_t *elapsed_ns)
{
    lib_target_t *t = (lib_target_t *)base;
    uint64_t want = (uint64_t)t->p.messages;
    rpc_call_opts_t opts = call_opts(t);
    rpc_stream_handler_t h = {.on_message = down_on_reply, .on_status = on_stream_status};
    reset_stream_result(t);
    int64_t t0 = bench_now_ns();
    rpc_stream_t *s = rpc_stream_open(t->ch, BENCH_METHOD_DOWN,
                                      &llmserve__bench__bench_msg__descriptor, &h, t, &opts, 0);
    if (!s) {
        LS_LOG_ERROR("rpcbench", "library cannot open a down stream");
        return LS_ERR_INTERNAL;
    }
    Llmserve__Bench__BenchMsg req = LLMSERVE__BENCH__BENCH_MSG__INIT;
    req.seq = want;
    if (rpc_stream_send(s, &req.base) != LS_OK || rpc_stream_close_send(s) != LS_OK)
        rpc_stream_cancel(s);
    wait_stream_end(t);
    *elapsed_ns = bench_now_ns() - t0;
    rpc_stream_release(s);
    join_producer(t);

    pthread_mutex_lock(&t->mu);
    int rc = LS_OK;
    if (t->status.code != GRPC_STATUS_OK) {
        rc = stream_failed(t, "down stream");
    } else if (t->received != want || t->misordered) {
        LS_LOG_ERROR("rpcbench",
                     "library down stream lost messages want=%llu in_order=%llu other=%llu",
                     (unsigned long long)want, (unsigned long long)t->received,
                     (unsigned long long)t->misordered);
        rc = LS_ERR_FORMAT;
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

/* A drain-driven Up: the calling thread's first fill and the drain callbacks share it. */
typedef struct {
    lib_target_t *t;
    rpc_stream_t *s;
    uint64_t want, sent;
    bool finished; /* half-closed, or failed */
    int rc;
    pthread_mutex_t mu;
} up_job_t;

/* Tops the queue up to the window; half-closes once everything is queued. */
static void up_fill(rpc_stream_t *s, void *ud)
{
    up_job_t *j = ud;
    Llmserve__Bench__BenchMsg m = LLMSERVE__BENCH__BENCH_MSG__INIT;
    m.payload.data = j->t->payload;
    m.payload.len = (size_t)j->t->p.payload_bytes;
    size_t window = (size_t)j->t->p.window;
    pthread_mutex_lock(&j->mu);
    if (!j->finished) {
        int rc = LS_OK;
        for (size_t q = rpc_stream_write_queue_len(s); q < window && j->sent < j->want; q++) {
            m.seq = j->sent;
            if ((rc = rpc_stream_send(s, &m.base)) != LS_OK)
                break;
            j->sent++;
        }
        if (rc == LS_ERR_FULL)
            rc = LS_OK; /* the queue filled meanwhile: the next drain goes on */
        if (rc == LS_OK && j->sent == j->want) {
            rc = rpc_stream_close_send(s);
            j->finished = true;
        }
        if (rc != LS_OK) {
            LS_LOG_ERROR("rpcbench", "library up stream send failed err=%s", ls_strerror(rc));
            rpc_stream_cancel(s);
            j->rc = rc;
            j->finished = true;
        }
        if (j->finished)
            rpc_stream_on_drain(s, 0, NULL, NULL);
    }
    pthread_mutex_unlock(&j->mu);
}

static int lib_up(bench_target_t *base, int64_t *elapsed_ns)
{
    lib_target_t *t = (lib_target_t *)base;
    uint64_t want = (uint64_t)t->p.messages;
    rpc_call_opts_t opts = call_opts(t);
    rpc_stream_handler_t h = {.on_message = up_on_reply, .on_status = on_stream_status};
    reset_stream_result(t);
    int64_t t0 = bench_now_ns();
    rpc_stream_t *s =
        rpc_stream_open(t->ch, BENCH_METHOD_UP, &llmserve__bench__bench_msg__descriptor, &h, t,
                        &opts, (size_t)t->p.window);
    if (!s) {
        LS_LOG_ERROR("rpcbench", "library cannot open an up stream");
        return LS_ERR_INTERNAL;
    }
    int rc = LS_OK;
    if (!t->p.app_producer) {
        up_job_t j = {.t = t, .s = s, .want = want, .mu = PTHREAD_MUTEX_INITIALIZER};
        rpc_stream_on_drain(s, (size_t)t->p.window / 2, up_fill, &j);
        up_fill(s, &j);
        wait_stream_end(t); /* on_status comes after the stream's last callback */
        rc = j.rc;
        pthread_mutex_destroy(&j.mu);
    } else {
        Llmserve__Bench__BenchMsg m = LLMSERVE__BENCH__BENCH_MSG__INIT;
        m.payload.data = t->payload;
        m.payload.len = (size_t)t->p.payload_bytes;
        for (uint64_t i = 0; i < want && rc == LS_OK; i++) {
            m.seq = i;
            while ((rc = rpc_stream_send(s, &m.base)) == LS_ERR_FULL)
                ls_sleep_us(t->p.backoff_us);
        }
        if (rc == LS_OK)
            rc = rpc_stream_close_send(s);
        if (rc != LS_OK) {
            LS_LOG_ERROR("rpcbench", "library up stream send failed err=%s", ls_strerror(rc));
            rpc_stream_cancel(s);
        }
        wait_stream_end(t);
    }
    *elapsed_ns = bench_now_ns() - t0;
    rpc_stream_release(s);

    pthread_mutex_lock(&t->mu);
    if (rc != LS_OK) {
        /* already logged */
    } else if (t->status.code != GRPC_STATUS_OK) {
        rc = stream_failed(t, "up stream");
    } else if (t->reply != want) {
        LS_LOG_ERROR("rpcbench", "library up stream count is wrong want=%llu counted=%llu",
                     (unsigned long long)want, (unsigned long long)t->reply);
        rc = LS_ERR_FORMAT;
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

/* ---- life cycle ------------------------------------------------------------------------ */

static void lib_destroy(bench_target_t *base)
{
    lib_target_t *t = (lib_target_t *)base;
    rpc_channel_destroy(t->ch);
    rpc_client_destroy(t->client);
    if (t->srv)
        rpc_server_shutdown(t->srv, 1000); /* every call has ended: returns at once */
    join_producer(t); /* after shutdown: its sends now fail at once, so it ends */
    rpc_server_destroy(t->srv);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t->payload);
    free(t);
}

bench_target_t *bench_library_create(const bench_params_t *p)
{
    lib_target_t *t = ls_xcalloc(1, sizeof(*t));
    t->p = *p;
    t->base.name = "library";
    t->base.describe = t->describe;
    t->base.unary = lib_unary;
    t->base.down = lib_down;
    t->base.up = lib_up;
    t->base.destroy = lib_destroy;
    t->payload = ls_xmalloc((unsigned long)p->payload_bytes + 1);
    memset(t->payload, 'x', (size_t)p->payload_bytes);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);

    rpc_server_config_t cfg;
    rpc_server_config_init(&cfg);
    cfg.threads = (int)p->server_threads;
    cfg.name = "bench";
    /* rpc_call_write_queue_len counts messages, but the server also cancels a call whose
     * queue holds more than max_write_queue_bytes: with large messages the producer must
     * work out the byte bound in messages itself. */
    Llmserve__Bench__BenchMsg probe = LLMSERVE__BENCH__BENCH_MSG__INIT;
    probe.seq = UINT64_MAX;
    probe.payload.data = t->payload;
    probe.payload.len = (size_t)p->payload_bytes;
    size_t by_bytes =
        cfg.max_write_queue_bytes / llmserve__bench__bench_msg__get_packed_size(&probe);
    t->down_window = (size_t)p->window < by_bytes ? (size_t)p->window : by_bytes;
    if (t->down_window < 1)
        t->down_window = 1;
    snprintf(t->describe, sizeof(t->describe),
             "libs/rpc: rpc_server_t threads=%lld, Down %s (window %lld); rpc_client_t 1 "
             "thread, rpc_channel_unary, rpc_stream_* (Up window %lld, retry after %lld us on "
             "LS_ERR_FULL)",
             (long long)p->server_threads,
             p->app_producer ? "produced by an app thread watching rpc_call_write_queue_len"
                            : "refilled from rpc_call_on_drain (completion-driven)",
             (long long)t->down_window, (long long)p->window, (long long)p->backoff_us);
    t->srv = rpc_server_create(&cfg);
    if (!t->srv) {
        LS_LOG_ERROR("rpcbench", "library cannot create a server");
        goto out_destroy;
    }
    const ProtobufCMessageDescriptor *desc = &llmserve__bench__bench_msg__descriptor;
    rpc_handler_t unary = {.on_start = on_start_ctx, .on_message = unary_on_message};
    rpc_handler_t down = {.on_start = on_start_ctx, .on_message = down_on_message};
    if (!p->app_producer)
        down = (rpc_handler_t){.on_start = down_drain_on_start,
                               .on_message = down_drain_on_message,
                               .on_done = down_drain_on_done};
    rpc_handler_t up = {.on_start = up_on_start,
                        .on_message = up_on_message,
                        .on_half_close = up_on_half_close,
                        .on_done = up_on_done};
    int port = 0;
    int rc = rpc_server_listen(t->srv, "127.0.0.1:0", NULL, &port);
    if (rc == LS_OK)
        rc = rpc_server_add_method(t->srv, BENCH_METHOD_UNARY, RPC_UNARY, desc, &unary, t);
    /* Server-streaming and client-streaming methods are served as RPC_STREAM. */
    if (rc == LS_OK)
        rc = rpc_server_add_method(t->srv, BENCH_METHOD_DOWN, RPC_STREAM, desc, &down, t);
    if (rc == LS_OK)
        rc = rpc_server_add_method(t->srv, BENCH_METHOD_UP, RPC_STREAM, desc, &up, t);
    if (rc == LS_OK)
        rc = rpc_server_start(t->srv);
    if (rc != LS_OK) {
        LS_LOG_ERROR("rpcbench", "library server did not start err=%s", ls_strerror(rc));
        goto out_destroy;
    }
    t->client = rpc_client_create(1);
    if (!t->client) {
        LS_LOG_ERROR("rpcbench", "library cannot create a client");
        goto out_destroy;
    }
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    t->ch = rpc_channel_create(t->client, target, NULL);
    if (!t->ch) {
        LS_LOG_ERROR("rpcbench", "library cannot create a channel target=%s", target);
        goto out_destroy;
    }
    /* Connect now, so no run times the connection set-up. */
    rpc_call_opts_t opts = call_opts(t);
    if (unary_once(t, &opts, 0) != LS_OK)
        goto out_destroy;
    LS_LOG_DEBUG("rpcbench", "library connected port=%d", port);
    return &t->base;

out_destroy:
    lib_destroy(&t->base);
    return NULL;
}
