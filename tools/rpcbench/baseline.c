/*
 * baseline.c - the Bench service in plain gRPC C core, written out by hand as
 * GRPC-CORE-NOTES.md describes: the yardstick that libs/rpc is measured against.
 *
 * Server: one completion queue drained by one thread.  Every call's state is touched by
 * that thread only, so calls need no lock.  Down is completion-driven: the next message
 * is started when the previous SEND_MESSAGE completes, as fast as gRPC lets one call
 * write.  Requests and messages are packed and unpacked with protobuf-c, as the library
 * does, so both sides do the same codec work.
 *
 * Client: the calling thread.  Unary calls use one pluck queue, created once and reused;
 * streams use a next queue drained by the calling thread, one write in flight.
 *
 * Lock rules: t->mu guards shutdown_seen only (set by the server thread, waited for by
 * the thread that destroys the target).
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "base/log.h"
#include "bench.pb-c.h"
#include "stats.h"
#include "target.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct bl_tag {
    void (*fn)(struct bl_tag *tag, bool ok);
} bl_tag_t;

#define BL_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

typedef enum { BL_UNARY, BL_DOWN, BL_UP, BL_N_METHODS } bl_method_t;

typedef struct {
    bench_target_t base;
    bench_params_t p;
    uint8_t *payload; /* p.payload_bytes of filler */

    /* server */
    grpc_server *server;
    grpc_completion_queue *server_cq;
    pthread_t server_thread;
    bool server_started, server_thread_started;
    void *registered[BL_N_METHODS];
    bl_tag_t shutdown_tag;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool shutdown_seen;

    /* client */
    grpc_channel *channel;
    void *call_handle[BL_N_METHODS];
    grpc_completion_queue *unary_cq;  /* pluck */
    grpc_completion_queue *stream_cq; /* next, drained by the calling thread */
} bl_target_t;

/* One server call, from its posted request to its last completion. */
typedef struct {
    bl_tag_t request_tag, send_tag, recv_tag, status_tag, close_tag;
    bl_target_t *t;
    bl_method_t method;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *in;  /* the request payload, then each received message */
    grpc_byte_buffer *out; /* the message being sent */
    int cancelled;         /* written by gRPC at RECV_CLOSE_ON_SERVER */
    int ops;               /* batches started whose completion has not run yet */
    uint64_t want;         /* Down: messages to send */
    uint64_t sent;         /* Down: messages whose send completed */
    uint64_t received;     /* Up: messages received in order */
} bl_call_t;

static const char *const method_path[BL_N_METHODS] = {BENCH_METHOD_UNARY, BENCH_METHOD_DOWN,
                                                      BENCH_METHOD_UP};

/* ---- messages ------------------------------------------------------------------- */

/* Packs a BenchMsg into a new byte buffer (caller destroys it). */
static grpc_byte_buffer *encode(uint64_t seq, const uint8_t *payload, size_t len)
{
    Llmserve__Bench__BenchMsg m = LLMSERVE__BENCH__BENCH_MSG__INIT;
    m.seq = seq;
    m.payload.data = (uint8_t *)payload;
    m.payload.len = len;
    grpc_slice slice = grpc_slice_malloc(llmserve__bench__bench_msg__get_packed_size(&m));
    llmserve__bench__bench_msg__pack(&m, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

/* Unpacks bb (which stays the caller's).  Returns the message (caller frees it with
 * llmserve__bench__bench_msg__free_unpacked) or NULL when bb is NULL or undecodable. */
static Llmserve__Bench__BenchMsg *decode(grpc_byte_buffer *bb)
{
    if (!bb)
        return NULL;
    if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
        bb->data.raw.slice_buffer.count == 1) {
        grpc_slice s = bb->data.raw.slice_buffer.slices[0];
        return llmserve__bench__bench_msg__unpack(NULL, GRPC_SLICE_LENGTH(s),
                                                  GRPC_SLICE_START_PTR(s));
    }
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return NULL;
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    Llmserve__Bench__BenchMsg *m =
        llmserve__bench__bench_msg__unpack(NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    return m;
}

static gpr_timespec deadline_after_ms(int64_t ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* ---- server calls ------------------------------------------------------------------ */

static int post_request(bl_target_t *t, bl_method_t method);

static void call_release(bl_call_t *c)
{
    if (c->call)
        grpc_call_unref(c->call);
    if (c->in)
        grpc_byte_buffer_destroy(c->in);
    if (c->out)
        grpc_byte_buffer_destroy(c->out);
    grpc_metadata_array_destroy(&c->md);
    free(c);
}

static void call_release_if_idle(bl_call_t *c)
{
    if (c->ops == 0)
        call_release(c);
}

static void call_start(bl_call_t *c, const grpc_op *ops, size_t n, bl_tag_t *tag)
{
    c->ops++;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        c->ops--;
        LS_LOG_ERROR("rpcbench", "baseline server start_batch failed error=%d method=%s", (int)e,
                     method_path[c->method]);
    }
}

static void start_close(bl_call_t *c)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    call_start(c, &op, 1, &c->close_tag);
}

/* Starts the status (with c->out as last message when set, and the initial metadata
 * when with_md). */
static void start_status(bl_call_t *c, bool with_md)
{
    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (with_md)
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->out) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->out;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n++].data.send_status_from_server.status = GRPC_STATUS_OK;
    call_start(c, ops, n, &c->status_tag);
}

/* Down: sends message number c->sent, or the status once all were sent. */
static void send_next(bl_call_t *c, bool with_md)
{
    if (c->sent == c->want) {
        start_status(c, with_md);
        return;
    }
    c->out = encode(c->sent, c->t->payload, (size_t)c->t->p.payload_bytes);
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (with_md)
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->out;
    call_start(c, ops, n, &c->send_tag);
}

static void post_recv(bl_call_t *c, bool with_md)
{
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (with_md)
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &c->in;
    call_start(c, ops, n, &c->recv_tag);
}

static void on_send(bl_tag_t *tag, bool ok)
{
    bl_call_t *c = BL_CONTAINER_OF(tag, bl_call_t, send_tag);
    c->ops--;
    grpc_byte_buffer_destroy(c->out);
    c->out = NULL;
    if (ok) { /* not ok: the call is over; the close op reports how */
        c->sent++;
        send_next(c, false);
    }
    call_release_if_idle(c);
}

static void on_recv(bl_tag_t *tag, bool ok)
{
    bl_call_t *c = BL_CONTAINER_OF(tag, bl_call_t, recv_tag);
    c->ops--;
    grpc_byte_buffer *bb = c->in;
    c->in = NULL;
    if (ok && bb) {
        Llmserve__Bench__BenchMsg *m = decode(bb);
        if (!m) {
            grpc_call_cancel_with_status(c->call, GRPC_STATUS_INVALID_ARGUMENT,
                                         "message does not decode as BenchMsg", NULL);
        } else {
            if (m->seq == c->received)
                c->received++;
            llmserve__bench__bench_msg__free_unpacked(m, NULL);
            post_recv(c, false);
        }
    } else if (ok) { /* half-closed: reply with the count */
        c->out = encode(c->received, NULL, 0);
        start_status(c, false);
    }
    if (bb)
        grpc_byte_buffer_destroy(bb);
    call_release_if_idle(c);
}

static void on_status(bl_tag_t *tag, bool ok)
{
    (void)ok; /* a failed status means a cancelled call; the close op reports it */
    bl_call_t *c = BL_CONTAINER_OF(tag, bl_call_t, status_tag);
    c->ops--;
    if (c->out) {
        grpc_byte_buffer_destroy(c->out);
        c->out = NULL;
    }
    call_release_if_idle(c);
}

static void on_close(bl_tag_t *tag, bool ok)
{
    (void)ok;
    bl_call_t *c = BL_CONTAINER_OF(tag, bl_call_t, close_tag);
    c->ops--;
    call_release_if_idle(c);
}

/* Decodes the request payload of a Unary or Down call; NULL after cancelling it. */
static Llmserve__Bench__BenchMsg *take_request(bl_call_t *c)
{
    /* NULL payload: the client went away before sending. */
    Llmserve__Bench__BenchMsg *m = decode(c->in);
    if (c->in)
        grpc_byte_buffer_destroy(c->in);
    c->in = NULL;
    if (!m)
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_INVALID_ARGUMENT,
                                     "request does not decode as BenchMsg", NULL);
    return m;
}

static void serve_unary(bl_call_t *c)
{
    Llmserve__Bench__BenchMsg *req = take_request(c);
    if (!req)
        return;
    c->out = encode(req->seq, req->payload.data, req->payload.len);
    llmserve__bench__bench_msg__free_unpacked(req, NULL);
    /* One batch: the whole unary exchange, as a hand-written server does it. */
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->out;
    ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[2].data.send_status_from_server.status = GRPC_STATUS_OK;
    ops[3].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[3].data.recv_close_on_server.cancelled = &c->cancelled;
    call_start(c, ops, 4, &c->status_tag);
}

static void serve_down(bl_call_t *c)
{
    Llmserve__Bench__BenchMsg *req = take_request(c);
    if (!req)
        return;
    c->want = req->seq;
    llmserve__bench__bench_msg__free_unpacked(req, NULL);
    start_close(c);
    send_next(c, true);
}

static void on_request(bl_tag_t *tag, bool ok)
{
    bl_call_t *c = BL_CONTAINER_OF(tag, bl_call_t, request_tag);
    if (!ok) { /* the server is shutting down: this request will never be a call */
        call_release(c);
        return;
    }
    post_request(c->t, c->method); /* the next call's request, before this one's work */
    switch (c->method) {
    case BL_UNARY:
        serve_unary(c);
        break;
    case BL_DOWN:
        serve_down(c);
        break;
    case BL_UP:
        start_close(c);
        post_recv(c, true);
        break;
    case BL_N_METHODS:
        break;
    }
    call_release_if_idle(c);
}

static int post_request(bl_target_t *t, bl_method_t method)
{
    bl_call_t *c = ls_xcalloc(1, sizeof(*c));
    c->request_tag.fn = on_request;
    c->send_tag.fn = on_send;
    c->recv_tag.fn = on_recv;
    c->status_tag.fn = on_status;
    c->close_tag.fn = on_close;
    c->t = t;
    c->method = method;
    grpc_metadata_array_init(&c->md);
    grpc_call_error e = grpc_server_request_registered_call(
        t->server, t->registered[method], &c->call, &c->deadline, &c->md,
        method == BL_UP ? NULL : &c->in, t->server_cq, t->server_cq, &c->request_tag);
    if (e != GRPC_CALL_OK) {
        LS_LOG_ERROR("rpcbench", "baseline cannot request calls error=%d method=%s", (int)e,
                     method_path[method]);
        call_release(c);
        return LS_ERR_INTERNAL;
    }
    return LS_OK;
}

static void on_shutdown(bl_tag_t *tag, bool ok)
{
    (void)ok;
    bl_target_t *t = BL_CONTAINER_OF(tag, bl_target_t, shutdown_tag);
    pthread_mutex_lock(&t->mu);
    t->shutdown_seen = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* Runs one completion of the server queue; returns false once the queue is shut down. */
static bool server_dispatch(grpc_completion_queue *cq)
{
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
        return false;
    if (ev.type == GRPC_OP_COMPLETE) {
        bl_tag_t *tag = ev.tag;
        tag->fn(tag, ev.success != 0);
    }
    return true;
}

static void *server_main(void *arg)
{
    while (server_dispatch(arg)) {
    }
    return NULL;
}

/* ---- client ---------------------------------------------------------------------- */

/* Logs a failed status; returns LS_ERR_IO. */
static int status_failed(const char *what, grpc_status_code code, grpc_slice details)
{
    LS_LOG_ERROR("rpcbench", "baseline %s failed status=%d details=\"%.*s\"", what, (int)code,
                 (int)GRPC_SLICE_LENGTH(details), (const char *)GRPC_SLICE_START_PTR(details));
    return LS_ERR_IO;
}

static int unary_once(bl_target_t *t, uint64_t seq)
{
    grpc_call *call = grpc_channel_create_registered_call(
        t->channel, NULL, GRPC_PROPAGATE_DEFAULTS, t->unary_cq, t->call_handle[BL_UNARY],
        deadline_after_ms(t->p.deadline_ms), NULL);
    if (!call) {
        LS_LOG_ERROR("rpcbench", "baseline cannot create a unary call");
        return LS_ERR_INTERNAL;
    }
    grpc_byte_buffer *req = encode(seq, t->payload, (size_t)t->p.payload_bytes);
    grpc_byte_buffer *resp = NULL;
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &resp;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &code;
    ops[5].data.recv_status_on_client.status_details = &details;

    int rc = LS_OK;
    grpc_call_error e = grpc_call_start_batch(call, ops, 6, ops, NULL);
    if (e != GRPC_CALL_OK) {
        LS_LOG_ERROR("rpcbench", "baseline unary start_batch failed error=%d", (int)e);
        rc = LS_ERR_INTERNAL;
        goto out_free;
    }
    /* Completes with success even for error statuses: the status tells. */
    grpc_completion_queue_pluck(t->unary_cq, ops, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (code != GRPC_STATUS_OK) {
        rc = status_failed("unary", code, details);
        goto out_free;
    }
    Llmserve__Bench__BenchMsg *m = decode(resp);
    if (!m || m->seq != seq || m->payload.len != (size_t)t->p.payload_bytes) {
        LS_LOG_ERROR("rpcbench", "baseline unary reply is wrong seq=%llu", (unsigned long long)seq);
        rc = LS_ERR_FORMAT;
    }
    if (m)
        llmserve__bench__bench_msg__free_unpacked(m, NULL);
out_free:
    if (resp)
        grpc_byte_buffer_destroy(resp);
    grpc_byte_buffer_destroy(req);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_call_unref(call);
    return rc;
}

static int bl_unary(bench_target_t *base, int64_t *lat_ns, int64_t *elapsed_ns)
{
    bl_target_t *t = (bl_target_t *)base;
    int64_t total = t->p.warmup_calls + t->p.calls;
    int64_t start = bench_now_ns();
    for (int64_t i = 0; i < total; i++) {
        int64_t t0 = bench_now_ns();
        if (i == t->p.warmup_calls)
            start = t0;
        int rc = unary_once(t, (uint64_t)i);
        if (rc != LS_OK)
            return rc;
        if (i >= t->p.warmup_calls)
            lat_ns[i - t->p.warmup_calls] = bench_now_ns() - t0;
    }
    *elapsed_ns = bench_now_ns() - start;
    return LS_OK;
}

/* State of one client stream, driven by the calling thread through t->stream_cq. */
typedef struct {
    grpc_call *call;
    int pending; /* batches started whose completion has not been taken yet */
    grpc_byte_buffer *in, *out;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code code;
    grpc_slice details;
    /* tags: their addresses tell the batches apart */
    char tag_send, tag_recv, tag_status, tag_close;
} bl_stream_t;

static int stream_open(bl_target_t *t, bl_stream_t *s, bl_method_t method)
{
    memset(s, 0, sizeof(*s));
    s->call = grpc_channel_create_registered_call(t->channel, NULL, GRPC_PROPAGATE_DEFAULTS,
                                                  t->stream_cq, t->call_handle[method],
                                                  deadline_after_ms(t->p.deadline_ms), NULL);
    if (!s->call) {
        LS_LOG_ERROR("rpcbench", "baseline cannot create a stream method=%s", method_path[method]);
        return LS_ERR_INTERNAL;
    }
    grpc_metadata_array_init(&s->initial_md);
    grpc_metadata_array_init(&s->trailing_md);
    s->code = GRPC_STATUS_UNKNOWN;
    s->details = grpc_empty_slice();
    return LS_OK;
}

static void stream_start(bl_stream_t *s, const grpc_op *ops, size_t n, void *tag)
{
    grpc_call_error e = grpc_call_start_batch(s->call, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        LS_LOG_ERROR("rpcbench", "baseline client start_batch failed error=%d", (int)e);
        grpc_call_cancel(s->call, NULL); /* the pending batches still come back */
        return;
    }
    s->pending++;
}

/* Starts the status batch (with the initial metadata) and the first read. */
static void stream_start_common(bl_stream_t *s)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
    ops[1].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[1].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
    ops[1].data.recv_status_on_client.status = &s->code;
    ops[1].data.recv_status_on_client.status_details = &s->details;
    stream_start(s, ops, 2, &s->tag_status);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[0].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = &s->in;
    stream_start(s, ops, 2, &s->tag_recv);
}

static void stream_send(bl_stream_t *s, grpc_byte_buffer *bb)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    s->out = bb;
    stream_start(s, &op, 1, &s->tag_send);
}

static void stream_close_send(bl_stream_t *s)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    stream_start(s, &op, 1, &s->tag_close);
}

static void stream_post_recv(bl_stream_t *s)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->in;
    stream_start(s, &op, 1, &s->tag_recv);
}

static void stream_free(bl_stream_t *s)
{
    if (s->in)
        grpc_byte_buffer_destroy(s->in);
    if (s->out)
        grpc_byte_buffer_destroy(s->out);
    grpc_metadata_array_destroy(&s->initial_md);
    grpc_metadata_array_destroy(&s->trailing_md);
    grpc_slice_unref(s->details);
    grpc_call_unref(s->call);
}

static int bl_down(bench_target_t *base, int64_t *elapsed_ns)
{
    bl_target_t *t = (bl_target_t *)base;
    uint64_t want = (uint64_t)t->p.messages, received = 0, misordered = 0;
    int64_t t0 = bench_now_ns();
    bl_stream_t s;
    int rc = stream_open(t, &s, BL_DOWN);
    if (rc != LS_OK)
        return rc;
    stream_start_common(&s);
    stream_send(&s, encode(want, NULL, 0));
    stream_close_send(&s);
    while (s.pending > 0) {
        grpc_event ev =
            grpc_completion_queue_next(t->stream_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        LS_ASSERT(ev.type == GRPC_OP_COMPLETE);
        s.pending--;
        if (ev.tag == &s.tag_send) {
            grpc_byte_buffer_destroy(s.out);
            s.out = NULL;
        } else if (ev.tag == &s.tag_recv && ev.success && s.in) {
            Llmserve__Bench__BenchMsg *m = decode(s.in);
            if (m && m->seq == received)
                received++;
            else
                misordered++;
            if (m)
                llmserve__bench__bench_msg__free_unpacked(m, NULL);
            grpc_byte_buffer_destroy(s.in);
            s.in = NULL;
            stream_post_recv(&s);
        }
    }
    *elapsed_ns = bench_now_ns() - t0;
    if (s.code != GRPC_STATUS_OK)
        rc = status_failed("down stream", s.code, s.details);
    else if (received != want || misordered) {
        LS_LOG_ERROR(
            "rpcbench", "baseline down stream lost messages want=%llu in_order=%llu other=%llu",
            (unsigned long long)want, (unsigned long long)received, (unsigned long long)misordered);
        rc = LS_ERR_FORMAT;
    }
    stream_free(&s);
    return rc;
}

static int bl_up(bench_target_t *base, int64_t *elapsed_ns)
{
    bl_target_t *t = (bl_target_t *)base;
    uint64_t want = (uint64_t)t->p.messages, sent = 0, reply = UINT64_MAX;
    int64_t t0 = bench_now_ns();
    bl_stream_t s;
    int rc = stream_open(t, &s, BL_UP);
    if (rc != LS_OK)
        return rc;
    stream_start_common(&s);
    if (want > 0)
        stream_send(&s, encode(0, t->payload, (size_t)t->p.payload_bytes));
    else
        stream_close_send(&s);
    while (s.pending > 0) {
        grpc_event ev =
            grpc_completion_queue_next(t->stream_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        LS_ASSERT(ev.type == GRPC_OP_COMPLETE);
        s.pending--;
        if (ev.tag == &s.tag_send) {
            grpc_byte_buffer_destroy(s.out);
            s.out = NULL;
            if (!ev.success) /* the call is over; the status says why */
                continue;
            if (++sent < want)
                stream_send(&s, encode(sent, t->payload, (size_t)t->p.payload_bytes));
            else
                stream_close_send(&s);
        } else if (ev.tag == &s.tag_recv && ev.success && s.in) {
            Llmserve__Bench__BenchMsg *m = decode(s.in);
            if (m) {
                reply = m->seq;
                llmserve__bench__bench_msg__free_unpacked(m, NULL);
            }
            grpc_byte_buffer_destroy(s.in);
            s.in = NULL;
        }
    }
    *elapsed_ns = bench_now_ns() - t0;
    if (s.code != GRPC_STATUS_OK)
        rc = status_failed("up stream", s.code, s.details);
    else if (reply != want) {
        LS_LOG_ERROR("rpcbench", "baseline up stream count is wrong want=%llu counted=%llu",
                     (unsigned long long)want, (unsigned long long)reply);
        rc = LS_ERR_FORMAT;
    }
    stream_free(&s);
    return rc;
}

/* ---- life cycle ---------------------------------------------------------------------- */

/* Drains a queue after grpc_completion_queue_shutdown and destroys it. */
static void drain_cq(grpc_completion_queue *cq, bool pluck)
{
    if (!cq)
        return;
    grpc_completion_queue_shutdown(cq);
    for (;;) {
        grpc_event ev =
            pluck ? grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                  : grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
    }
    grpc_completion_queue_destroy(cq);
}

static void bl_destroy(bench_target_t *base)
{
    bl_target_t *t = (bl_target_t *)base;
    if (t->channel)
        grpc_channel_destroy(t->channel);
    drain_cq(t->unary_cq, true);
    drain_cq(t->stream_cq, false);

    if (t->server_started) {
        grpc_server_shutdown_and_notify(t->server, t->server_cq, &t->shutdown_tag);
        if (!t->server_thread_started) {
            while (!t->shutdown_seen && server_dispatch(t->server_cq)) {
            }
        }
        /* Every call has ended by now; the grace is for one that a failed run left. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 2;
        pthread_mutex_lock(&t->mu);
        while (!t->shutdown_seen && pthread_cond_timedwait(&t->cv, &t->mu, &ts) == 0) {
        }
        bool clean = t->shutdown_seen;
        pthread_mutex_unlock(&t->mu);
        if (!clean)
            grpc_server_cancel_all_calls(t->server);
        pthread_mutex_lock(&t->mu);
        while (!t->shutdown_seen)
            pthread_cond_wait(&t->cv, &t->mu);
        pthread_mutex_unlock(&t->mu);
    }
    if (t->server)
        grpc_server_destroy(t->server);
    if (t->server_thread_started) {
        grpc_completion_queue_shutdown(t->server_cq);
        pthread_join(t->server_thread, NULL);
        grpc_completion_queue_destroy(t->server_cq);
    } else if (t->server_cq) {
        grpc_completion_queue_shutdown(t->server_cq);
        while (server_dispatch(t->server_cq)) { /* failed requests are freed on the way */
        }
        grpc_completion_queue_destroy(t->server_cq);
    }
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t->payload);
    free(t);
    grpc_shutdown();
}

bench_target_t *bench_baseline_create(const bench_params_t *p)
{
    grpc_init();
    bl_target_t *t = ls_xcalloc(1, sizeof(*t));
    t->base.name = "baseline";
    t->base.describe = "gRPC C core by hand: server 1 completion queue + 1 thread, client on "
                       "the calling thread (reused pluck queue for unary, next queue for "
                       "streams), Down completion-driven";
    t->base.unary = bl_unary;
    t->base.down = bl_down;
    t->base.up = bl_up;
    t->base.destroy = bl_destroy;
    t->p = *p;
    t->payload = ls_xmalloc((unsigned long)p->payload_bytes + 1);
    memset(t->payload, 'x', (size_t)p->payload_bytes);
    t->shutdown_tag.fn = on_shutdown;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);

    t->server = grpc_server_create(NULL, NULL);
    if (!t->server) {
        LS_LOG_ERROR("rpcbench", "baseline cannot create a server");
        goto out_destroy;
    }
    for (int m = 0; m < BL_N_METHODS; m++) {
        /* Unary and Down take exactly one request: read it with the call. */
        t->registered[m] = grpc_server_register_method(
            t->server, method_path[m], NULL,
            m == BL_UP ? GRPC_SRM_PAYLOAD_NONE : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    }
    t->server_cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(t->server, t->server_cq, NULL);
    grpc_server_credentials *screds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(t->server, "127.0.0.1:0", screds);
    grpc_server_credentials_release(screds);
    if (port == 0) {
        LS_LOG_ERROR("rpcbench", "baseline cannot bind 127.0.0.1:0");
        goto out_destroy;
    }
    grpc_server_start(t->server);
    t->server_started = true;
    if (pthread_create(&t->server_thread, NULL, server_main, t->server_cq) != 0) {
        LS_LOG_ERROR("rpcbench", "baseline cannot start its server thread");
        goto out_destroy;
    }
    pthread_setname_np(t->server_thread, "bl-server");
    t->server_thread_started = true;
    /* No catch-all request for unknown methods: only this file's client calls this
     * server, and it calls the three methods above. */
    for (int m = 0; m < BL_N_METHODS; m++) {
        if (post_request(t, (bl_method_t)m) != LS_OK)
            goto out_destroy;
    }

    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    grpc_channel_credentials *ccreds = grpc_insecure_credentials_create();
    t->channel = grpc_channel_create(target, ccreds, NULL);
    grpc_channel_credentials_release(ccreds);
    for (int m = 0; m < BL_N_METHODS; m++)
        t->call_handle[m] = grpc_channel_register_call(t->channel, method_path[m], NULL, NULL);
    t->unary_cq = grpc_completion_queue_create_for_pluck(NULL);
    t->stream_cq = grpc_completion_queue_create_for_next(NULL);
    /* Connect now, so no run times the connection set-up. */
    if (unary_once(t, 0) != LS_OK)
        goto out_destroy;
    LS_LOG_DEBUG("rpcbench", "baseline connected port=%d", port);
    return &t->base;

out_destroy:
    bl_destroy(&t->base);
    return NULL;
}
