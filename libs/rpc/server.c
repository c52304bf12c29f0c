/*
 * server.c - rpc_server_t and rpc_call_t.
 *
 * Lock rules:
 * - srv->mu guards the server's life-cycle fields (live_calls, shutdown state).
 * - call->mu guards every field of a call that more than one thread touches, and every
 *   grpc_call_start_batch / grpc_call_cancel_with_status on that call, so application
 *   threads may send while the poller completes batches.  Functions named do_* expect
 *   call->mu held.  Handler callbacks are always invoked with no lock held.
 * - Order: health mutex, then call->mu, then srv->mu.  Never the other way.
 *
 * Every batch started on a call counts in call->ops until its completion handler has
 * finished all its work (including starting follow-up batches), so "ops == 0 and the
 * close op came back" means nothing of this call is left in gRPC: that is when
 * on_done runs and the grpc_call is released.
 */
#define _GNU_SOURCE
#include "rpc/server.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "rpc/codec.h"
#include "rpc/cq.h"
#include "rpc/init.h"
#include "rpc/health.h"
#include "rpc/tls.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Requests kept posted per method per completion queue: two, so a burst of new calls
 * does not wait for the poller to re-post after each one. */
#define RPC_REQUESTS_PER_CQ 2

typedef struct rpc__method {
    char *path;
    rpc_kind_t kind;
    const ProtobufCMessageDescriptor *req;
    rpc_handler_t h;
    void *ctx;
    void *registered; /* grpc_server_register_method handle; NULL for the catch-all */
} rpc__method_t;

/* A TLS listening port: its files, and the certificates gRPC fetches at each handshake
 * (see tls_fetch), replaced by rpc_server_reload_tls.  mu guards pem and the counters. */
typedef struct tls_port {
    char *cert_file, *key_file, *ca_file;
    pthread_mutex_t mu;
    rpc__pem_t pem;
    uint64_t generation, delivered; /* gRPC has the generation `delivered` */
    struct tls_port *next;
} tls_port_t;

struct rpc_server {
    rpc_server_config_t cfg;
    char name[32];
    grpc_server *server;
    rpc__cqpool_t *pool;
    rpc__method_t **methods;
    size_t n_methods;
    rpc__method_t unknown; /* answers UNIMPLEMENTED for methods nobody registered */
    rpc__health_t *health;
    int n_ports;
    bool started;
    atomic_bool draining;
    rpc_auth_fn auth; /* NULL: every call is let in */
    void *auth_ud;
    rpc_call_observer_fn observer; /* NULL: nobody hears about ended calls */
    void *observer_ud;
    tls_port_t *tls_ports;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int live_calls;
    bool shutdown_begun, shutdown_notified, shutdown_complete;
    rpc__tag_t shutdown_tag;
};

/* One posted grpc_server_request_*call. */
typedef struct {
    rpc__tag_t tag;
    rpc_server_t *srv;
    rpc__method_t *method;
    grpc_completion_queue *cq;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* catch-all only */
} rpc__request_t;

struct rpc_call {
    rpc__tag_t recv_tag, send_tag, status_tag, close_tag;
    rpc_server_t *srv;
    rpc__method_t *method;
    grpc_call *call;
    void *state;
    char *peer;
    char *path; /* only for the catch-all, whose method has no fixed path */
    char *principal; /* what the authorizer said the caller is; NULL: nothing */
    bool rejected;   /* refused by the authorizer: no handler callback ever runs */
    rpc_md_t md;
    int64_t deadline_us; /* on ls_now_us's clock; INT64_MAX for none */
    atomic_int refs;

    pthread_mutex_t mu;
    int ops;
    int cancelled_flag; /* written by gRPC when the close op completes */
    bool closed, cancelled, done;
    bool md_sent, finish_requested, status_started, write_in_flight;
    rpc_drain_fn drain_fn; /* rpc_call_on_drain; guarded by mu */
    void *drain_ud;
    size_t drain_low;
    grpc_byte_buffer *recv_buf;
    grpc_byte_buffer *write_buf;
    grpc_byte_buffer **q; /* ring of queued writes */
    size_t q_head, q_len, q_cap, q_bytes;
    grpc_status_code status_code;
    grpc_slice status_details;
    grpc_status_code cancel_code; /* the first cancel's, when cancel_code_set */
    bool cancel_code_set;
    rpc_md_t trailers;
    grpc_metadata *trailer_arr;
};

static void post_request(rpc_server_t *srv, rpc__method_t *m, grpc_completion_queue *cq);

/* ---- configuration ---------------------------------------------------------------- */

void rpc_server_config_init(rpc_server_config_t *cfg)
{
    cfg->threads = 0;                           /* default: online cores */
    cfg->max_write_queue = 4096;                /* messages */
    cfg->max_write_queue_bytes = 16u << 20;     /* 16 MiB */
    cfg->max_recv_message_bytes = 4 << 20;      /* 4 MiB */
    cfg->name = "rpc";
    cfg->initial_health = RPC_HEALTH_SERVING;
}

/* ---- calls: reference counting and completion ------------------------------------- */

void rpc_call_ref(rpc_call_t *call)
{
    atomic_fetch_add(&call->refs, 1);
}

static void do_drop_queue(rpc_call_t *c)
{
    while (c->q_len > 0) {
        grpc_byte_buffer_destroy(c->q[c->q_head]);
        c->q_head = (c->q_head + 1) % c->q_cap;
        c->q_len--;
    }
    c->q_bytes = 0;
}

void rpc_call_unref(rpc_call_t *call)
{
    if (atomic_fetch_sub(&call->refs, 1) != 1)
        return;
    do_drop_queue(call);
    free(call->q);
    if (call->write_buf)
        grpc_byte_buffer_destroy(call->write_buf);
    grpc_slice_unref(call->status_details);
    gpr_free(call->trailer_arr);
    rpc_md_clear(&call->trailers);
    rpc_md_clear(&call->md);
    gpr_free(call->peer);
    free(call->path);
    free(call->principal);
    pthread_mutex_destroy(&call->mu);
    free(call);
}

/* How much earlier than the server's deadline a client's cancel still counts as that
 * deadline (see do_final_code). */
#define DEADLINE_SLACK_US 100000

/* The status the client saw (see rpc_call_observer_fn), once the close op is back. */
static grpc_status_code do_final_code(const rpc_call_t *c)
{
    if (!c->cancelled_flag && c->status_started)
        return c->status_code;
    if (c->cancel_code_set)
        return c->cancel_code;
    /* A client whose deadline passes resets the stream, and its reset can arrive before
     * the server's own copy of the deadline passes: the server's deadline is the
     * client's timeout counted from the moment the call arrived, so later by the time
     * the call took to get here.  A cancel that close to the deadline is the deadline. */
    if (c->deadline_us != INT64_MAX && ls_now_us() >= c->deadline_us - DEADLINE_SLACK_US)
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    return GRPC_STATUS_CANCELLED;
}

/* Records why the server cancels c (the first reason wins). */
static void do_note_cancel(rpc_call_t *c, grpc_status_code code)
{
    if (!c->cancel_code_set) {
        c->cancel_code = code;
        c->cancel_code_set = true;
    }
}

/* Ends one batch of c; the last one after the close op releases the call. */
static void op_finished(rpc_call_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->ops--;
    bool fire = c->ops == 0 && c->closed && !c->done;
    grpc_status_code code = GRPC_STATUS_OK;
    if (fire) {
        c->done = true;
        do_drop_queue(c);
        code = do_final_code(c);
    }
    pthread_mutex_unlock(&c->mu);
    if (!fire)
        return;
    if (c->srv->observer)
        c->srv->observer(c->srv->observer_ud, c->method->path, code);
    if (c->method->h.on_done && !c->rejected)
        c->method->h.on_done(c, c->state);
    grpc_call_unref(c->call);
    rpc_server_t *srv = c->srv;
    pthread_mutex_lock(&srv->mu);
    if (--srv->live_calls == 0)
        pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
    rpc_call_unref(c);
}

static int do_start(rpc_call_t *c, const grpc_op *ops, size_t n, rpc__tag_t *tag)
{
    c->ops++;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        c->ops--;
        LS_LOG_ERROR("rpc", "start_batch failed error=%d method=%s", (int)e, rpc_call_method(c));
        return LS_ERR_INTERNAL;
    }
    return LS_OK;
}

static void do_start_status(rpc_call_t *c)
{
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (!c->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->md_sent = true;
    }
    size_t n_trailers = 0;
    c->trailer_arr = rpc__md_to_grpc(&c->trailers, &n_trailers);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = c->status_code;
    ops[n].data.send_status_from_server.status_details = &c->status_details;
    ops[n].data.send_status_from_server.trailing_metadata = c->trailer_arr;
    ops[n].data.send_status_from_server.trailing_metadata_count = n_trailers;
    n++;
    c->status_started = true;
    do_start(c, ops, n, &c->status_tag);
}

static int do_start_send(rpc_call_t *c, grpc_byte_buffer *bb)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    c->write_buf = bb;
    c->write_in_flight = true;
    int rc = do_start(c, &op, 1, &c->send_tag);
    if (rc != LS_OK) {
        c->write_buf = NULL;
        c->write_in_flight = false;
    }
    return rc;
}

static void do_post_recv(rpc_call_t *c, bool with_initial_metadata)
{
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (with_initial_metadata) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->md_sent = true;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = &c->recv_buf;
    n++;
    do_start(c, ops, n, &c->recv_tag);
}

static void on_send_done(rpc__tag_t *tag, bool ok)
{
    rpc_call_t *c = RPC__CONTAINER_OF(tag, rpc_call_t, send_tag);
    pthread_mutex_lock(&c->mu);
    grpc_byte_buffer_destroy(c->write_buf);
    c->write_buf = NULL;
    c->write_in_flight = false;
    if (!ok)
        do_drop_queue(c);
    while (c->q_len > 0 && !c->write_in_flight) {
        grpc_byte_buffer *next = c->q[c->q_head];
        c->q_head = (c->q_head + 1) % c->q_cap;
        c->q_len--;
        c->q_bytes -= grpc_byte_buffer_length(next);
        if (do_start_send(c, next) != LS_OK)
            grpc_byte_buffer_destroy(next);
    }
    if (!c->write_in_flight && c->finish_requested && !c->status_started)
        do_start_status(c);
    rpc_drain_fn drain = NULL;
    void *drain_ud = NULL;
    if (ok && c->drain_fn && c->q_len <= c->drain_low && !c->done && !c->closed &&
        !c->cancelled && !c->finish_requested) {
        drain = c->drain_fn;
        drain_ud = c->drain_ud;
    }
    pthread_mutex_unlock(&c->mu);
    if (drain)
        drain(c, drain_ud); /* this op's reference keeps the call alive meanwhile */
    op_finished(c);
}

static void on_status_done(rpc__tag_t *tag, bool ok)
{
    (void)ok; /* a failed status means the call was cancelled; the close op reports it */
    rpc_call_t *c = RPC__CONTAINER_OF(tag, rpc_call_t, status_tag);
    pthread_mutex_lock(&c->mu);
    if (c->write_buf) { /* unary reply sent together with the status */
        grpc_byte_buffer_destroy(c->write_buf);
        c->write_buf = NULL;
        c->write_in_flight = false;
    }
    pthread_mutex_unlock(&c->mu);
    op_finished(c);
}

static void on_close_done(rpc__tag_t *tag, bool ok)
{
    (void)ok;
    rpc_call_t *c = RPC__CONTAINER_OF(tag, rpc_call_t, close_tag);
    pthread_mutex_lock(&c->mu);
    c->closed = true;
    bool cancelled = c->cancelled_flag != 0;
    if (cancelled) {
        c->cancelled = true;
        do_drop_queue(c);
    }
    pthread_mutex_unlock(&c->mu);
    if (cancelled && c->method->h.on_cancel && !c->rejected)
        c->method->h.on_cancel(c, c->state);
    op_finished(c);
}

static void on_recv_done(rpc__tag_t *tag, bool ok)
{
    rpc_call_t *c = RPC__CONTAINER_OF(tag, rpc_call_t, recv_tag);
    pthread_mutex_lock(&c->mu);
    grpc_byte_buffer *bb = c->recv_buf;
    c->recv_buf = NULL;
    pthread_mutex_unlock(&c->mu);

    if (!ok) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        op_finished(c);
        return;
    }
    if (!bb) { /* the client half-closed */
        if (c->method->h.on_half_close && !rpc_call_cancelled(c))
            c->method->h.on_half_close(c, c->state);
        op_finished(c);
        return;
    }
    ProtobufCMessage *msg = rpc_codec_decode(c->method->req, bb);
    grpc_byte_buffer_destroy(bb);
    if (!msg) {
        char why[160];
        snprintf(why, sizeof(why), "request message does not decode as %s", c->method->req->name);
        LS_LOG_WARN("rpc", "undecodable request method=%s peer=%s", rpc_call_method(c), c->peer);
        rpc_call_cancel(c, GRPC_STATUS_INVALID_ARGUMENT, why);
        op_finished(c);
        return;
    }
    if (c->method->h.on_message)
        c->method->h.on_message(c, c->state, msg);
    protobuf_c_message_free_unpacked(msg, NULL);
    pthread_mutex_lock(&c->mu);
    if (!c->cancelled && !c->closed)
        do_post_recv(c, false);
    pthread_mutex_unlock(&c->mu);
    op_finished(c);
}

/* ---- calls: public operations --------------------------------------------------- */

static int enqueue(rpc_call_t *c, grpc_byte_buffer *bb)
{
    size_t len = grpc_byte_buffer_length(bb);
    pthread_mutex_lock(&c->mu);
    if (c->done || c->closed || c->cancelled || c->finish_requested) {
        pthread_mutex_unlock(&c->mu);
        grpc_byte_buffer_destroy(bb);
        return LS_ERR_CLOSED;
    }
    if (!c->write_in_flight) {
        int rc = do_start_send(c, bb);
        pthread_mutex_unlock(&c->mu);
        if (rc != LS_OK)
            grpc_byte_buffer_destroy(bb);
        return rc;
    }
    const rpc_server_config_t *cfg = &c->srv->cfg;
    if (c->q_len >= cfg->max_write_queue || c->q_bytes + len > cfg->max_write_queue_bytes) {
        c->cancelled = true;
        do_note_cancel(c, GRPC_STATUS_RESOURCE_EXHAUSTED);
        do_drop_queue(c);
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "write queue full: the client reads too slowly", NULL);
        pthread_mutex_unlock(&c->mu);
        grpc_byte_buffer_destroy(bb);
        LS_LOG_WARN("rpc", "write queue overflow, call cancelled method=%s peer=%s",
                    rpc_call_method(c), c->peer);
        return LS_ERR_FULL;
    }
    if (c->q_len == c->q_cap) {
        size_t cap = c->q_cap ? c->q_cap * 2 : 16;
        grpc_byte_buffer **q = ls_xmalloc(cap * sizeof(*q));
        for (size_t i = 0; i < c->q_len; i++)
            q[i] = c->q[(c->q_head + i) % c->q_cap];
        free(c->q);
        c->q = q;
        c->q_head = 0;
        c->q_cap = cap;
    }
    c->q[(c->q_head + c->q_len) % c->q_cap] = bb;
    c->q_len++;
    c->q_bytes += len;
    pthread_mutex_unlock(&c->mu);
    return LS_OK;
}

int rpc_call_send(rpc_call_t *call, const ProtobufCMessage *msg)
{
    grpc_byte_buffer *bb = rpc_codec_encode(msg);
    if (!bb)
        return LS_ERR_NOMEM;
    return enqueue(call, bb);
}

void rpc_call_on_drain(rpc_call_t *call, size_t low_water, rpc_drain_fn fn, void *ud)
{
    pthread_mutex_lock(&call->mu);
    call->drain_fn = fn;
    call->drain_ud = ud;
    call->drain_low = low_water;
    pthread_mutex_unlock(&call->mu);
}

int rpc_call_send_raw(rpc_call_t *call, const void *data, size_t len)
{
    grpc_byte_buffer *bb = rpc_codec_encode_raw(data, len);
    if (!bb)
        return LS_ERR_NOMEM;
    return enqueue(call, bb);
}

int rpc_call_reply(rpc_call_t *call, const ProtobufCMessage *msg)
{
    grpc_byte_buffer *bb = rpc_codec_encode(msg);
    if (!bb)
        return LS_ERR_NOMEM;
    rpc_call_t *c = call;
    pthread_mutex_lock(&c->mu);
    int rc = LS_OK;
    if (c->done) { /* as in rpc_call_finish */
        rc = LS_ERR_CLOSED;
    } else if (c->finish_requested) {
        rc = LS_ERR_EXISTS;
    } else if (c->closed || c->cancelled || c->write_in_flight) {
        rc = LS_ERR_CLOSED;
    } else {
        grpc_op ops[3];
        size_t n = 0;
        memset(ops, 0, sizeof(ops));
        if (!c->md_sent) {
            ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
            c->md_sent = true;
        }
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = bb;
        size_t n_trailers = 0;
        c->trailer_arr = rpc__md_to_grpc(&c->trailers, &n_trailers);
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = GRPC_STATUS_OK;
        ops[n].data.send_status_from_server.status_details = &c->status_details;
        ops[n].data.send_status_from_server.trailing_metadata = c->trailer_arr;
        ops[n].data.send_status_from_server.trailing_metadata_count = n_trailers;
        n++;
        c->finish_requested = true;
        c->status_started = true;
        c->status_code = GRPC_STATUS_OK;
        c->write_buf = bb;
        c->write_in_flight = true;
        rc = do_start(c, ops, n, &c->status_tag);
        if (rc != LS_OK) {
            c->write_buf = NULL;
            c->write_in_flight = false;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (rc != LS_OK)
        grpc_byte_buffer_destroy(bb);
    return rc;
}

int rpc_call_finish(rpc_call_t *call, grpc_status_code code, const char *details)
{
    rpc_call_t *c = call;
    pthread_mutex_lock(&c->mu);
    int rc = LS_OK;
    /* After on_done the call is over, and says so (server.h); until then a second
     * finish is "already finished" whatever the close op has done meanwhile. */
    if (c->done) {
        rc = LS_ERR_CLOSED;
    } else if (c->finish_requested) {
        rc = LS_ERR_EXISTS;
    } else if (c->closed) {
        rc = LS_ERR_CLOSED;
    } else {
        c->finish_requested = true;
        c->status_code = code;
        grpc_slice_unref(c->status_details);
        c->status_details = grpc_slice_from_copied_string(details ? details : "");
        if (!c->write_in_flight)
            do_start_status(c);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int rpc_call_add_trailer(rpc_call_t *call, const char *key, const char *value)
{
    pthread_mutex_lock(&call->mu);
    int rc = call->finish_requested ? LS_ERR_EXISTS : rpc_md_add(&call->trailers, key, value);
    pthread_mutex_unlock(&call->mu);
    return rc;
}

int rpc_call_set_retry_pushback(rpc_call_t *call, uint32_t ms)
{
    char v[16];
    snprintf(v, sizeof(v), "%u", ms);
    pthread_mutex_lock(&call->mu);
    int rc = LS_ERR_EXISTS;
    if (!call->finish_requested) {
        rpc__md_add_reserved(&call->trailers, "grpc-retry-pushback-ms", v);
        rc = LS_OK;
    }
    pthread_mutex_unlock(&call->mu);
    return rc;
}

void rpc_call_cancel(rpc_call_t *call, grpc_status_code code, const char *details)
{
    pthread_mutex_lock(&call->mu);
    if (!call->done && !call->closed) {
        call->cancelled = true;
        do_note_cancel(call, code);
        do_drop_queue(call);
        grpc_call_cancel_with_status(call->call, code, details ? details : "", NULL);
    }
    pthread_mutex_unlock(&call->mu);
}

const char *rpc_call_principal(const rpc_call_t *call)
{
    return call->principal ? call->principal : "";
}

const rpc_md_t *rpc_call_metadata(const rpc_call_t *call)
{
    return &call->md;
}

int64_t rpc_call_remaining_us(const rpc_call_t *call)
{
    if (call->deadline_us == INT64_MAX)
        return INT64_MAX;
    return call->deadline_us - ls_now_us();
}

const char *rpc_call_method(const rpc_call_t *call)
{
    return call->path ? call->path : call->method->path;
}

const char *rpc_call_peer(const rpc_call_t *call)
{
    return call->peer ? call->peer : "";
}

bool rpc_call_cancelled(const rpc_call_t *call)
{
    rpc_call_t *c = (rpc_call_t *)call;
    pthread_mutex_lock(&c->mu);
    bool v = c->cancelled;
    pthread_mutex_unlock(&c->mu);
    return v;
}

size_t rpc_call_write_queue_len(const rpc_call_t *call)
{
    rpc_call_t *c = (rpc_call_t *)call;
    pthread_mutex_lock(&c->mu);
    size_t n = c->q_len;
    pthread_mutex_unlock(&c->mu);
    return n;
}

rpc_server_t *rpc_call_server(const rpc_call_t *call)
{
    return call->srv;
}

/* ---- new calls ---------------------------------------------------------------- */

static int64_t deadline_to_us(gpr_timespec deadline)
{
    if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) == 0)
        return INT64_MAX;
    gpr_timespec mono = gpr_convert_clock_type(deadline, GPR_CLOCK_MONOTONIC);
    gpr_timespec left = gpr_time_sub(mono, gpr_now(GPR_CLOCK_MONOTONIC));
    int64_t left_us = (int64_t)left.tv_sec * 1000000 + left.tv_nsec / 1000;
    return ls_now_us() + left_us;
}

static void start_call(rpc__request_t *req)
{
    rpc_server_t *srv = req->srv;
    rpc_call_t *c = ls_xcalloc(1, sizeof(*c));
    c->recv_tag.fn = on_recv_done;
    c->send_tag.fn = on_send_done;
    c->status_tag.fn = on_status_done;
    c->close_tag.fn = on_close_done;
    c->srv = srv;
    c->method = req->method ? req->method : &srv->unknown;
    c->call = req->call;
    c->peer = grpc_call_get_peer(req->call);
    c->deadline_us = deadline_to_us(req->deadline);
    c->status_details = grpc_empty_slice();
    atomic_init(&c->refs, 1); /* the library's, dropped after on_done */
    pthread_mutex_init(&c->mu, NULL);
    rpc__md_from_grpc(&c->md, &req->md);
    if (!req->method) {
        size_t len = GRPC_SLICE_LENGTH(req->details.method);
        c->path = ls_xmalloc(len + 1);
        memcpy(c->path, GRPC_SLICE_START_PTR(req->details.method), len);
        c->path[len] = '\0';
    }

    pthread_mutex_lock(&srv->mu);
    srv->live_calls++;
    pthread_mutex_unlock(&srv->mu);

    grpc_op close_op;
    memset(&close_op, 0, sizeof(close_op));
    close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close_op.data.recv_close_on_server.cancelled = &c->cancelled_flag;
    pthread_mutex_lock(&c->mu);
    int rc = do_start(c, &close_op, 1, &c->close_tag);
    pthread_mutex_unlock(&c->mu);
    if (rc != LS_OK) {
        /* Nothing of ours is pending in gRPC: release directly. */
        grpc_call_cancel(c->call, NULL);
        pthread_mutex_lock(&c->mu);
        c->closed = true;
        c->ops++;
        pthread_mutex_unlock(&c->mu);
        op_finished(c);
        return;
    }

    /* Hold an op while the handler runs so the call cannot complete under it. */
    pthread_mutex_lock(&c->mu);
    c->ops++;
    pthread_mutex_unlock(&c->mu);

    rpc__method_t *m = c->method;
    /* The health service answers everyone: Kubernetes probes and Consul checks carry no
     * credentials.  Everything else, unknown methods included, asks the authorizer. */
    if (srv->auth && strncmp(rpc_call_method(c), "/grpc.health.v1.Health/", 23) != 0) {
        char principal[RPC_PRINCIPAL_MAX] = "", why[256] = "";
        grpc_status_code code =
            srv->auth(srv->auth_ud, c, principal, sizeof(principal), why, sizeof(why));
        if (code != GRPC_STATUS_OK) {
            c->rejected = true;
            rpc_call_finish(c, code, why[0] ? why : "unauthenticated");
            op_finished(c);
            return;
        }
        if (principal[0])
            c->principal = ls_xstrdup(principal);
    }
    if (m == &srv->unknown) {
        char why[300];
        snprintf(why, sizeof(why), "unknown method %s", c->path);
        rpc_call_finish(c, GRPC_STATUS_UNIMPLEMENTED, why);
    } else {
        c->state = m->h.on_start ? m->h.on_start(c, m->ctx) : NULL;
        if (m->kind == RPC_UNARY) {
            grpc_byte_buffer *bb = req->payload;
            req->payload = NULL;
            if (bb) { /* NULL: the client went away before sending; close reports it */
                ProtobufCMessage *msg = rpc_codec_decode(m->req, bb);
                grpc_byte_buffer_destroy(bb);
                if (!msg) {
                    char why[160];
                    snprintf(why, sizeof(why), "request message does not decode as %s",
                             m->req->name);
                    rpc_call_cancel(c, GRPC_STATUS_INVALID_ARGUMENT, why);
                } else {
                    if (m->h.on_message)
                        m->h.on_message(c, c->state, msg);
                    protobuf_c_message_free_unpacked(msg, NULL);
                }
            }
        } else {
            pthread_mutex_lock(&c->mu);
            if (!c->cancelled && !c->closed)
                do_post_recv(c, !c->md_sent);
            pthread_mutex_unlock(&c->mu);
        }
    }
    op_finished(c);
}

static void on_request(rpc__tag_t *tag, bool ok)
{
    rpc__request_t *req = RPC__CONTAINER_OF(tag, rpc__request_t, tag);
    rpc_server_t *srv = req->srv;
    if (ok) {
        if (!atomic_load(&srv->draining))
            post_request(srv, req->method, req->cq);
        start_call(req);
    }
    if (req->payload)
        grpc_byte_buffer_destroy(req->payload);
    grpc_metadata_array_destroy(&req->md);
    if (!req->method)
        grpc_call_details_destroy(&req->details);
    free(req);
}

static void post_request(rpc_server_t *srv, rpc__method_t *m, grpc_completion_queue *cq)
{
    rpc__request_t *req = ls_xcalloc(1, sizeof(*req));
    req->tag.fn = on_request;
    req->srv = srv;
    req->method = m;
    req->cq = cq;
    grpc_metadata_array_init(&req->md);
    grpc_call_error e;
    if (m) {
        e = grpc_server_request_registered_call(srv->server, m->registered, &req->call,
                                                &req->deadline, &req->md,
                                                m->kind == RPC_UNARY ? &req->payload : NULL, cq,
                                                cq, &req->tag);
    } else {
        grpc_call_details_init(&req->details);
        e = grpc_server_request_call(srv->server, &req->call, &req->details, &req->md, cq, cq,
                                     &req->tag);
    }
    if (e != GRPC_CALL_OK) {
        LS_LOG_ERROR("rpc", "cannot request calls error=%d", (int)e);
        grpc_metadata_array_destroy(&req->md);
        if (!m)
            grpc_call_details_destroy(&req->details);
        free(req);
    }
}

/* ---- server ------------------------------------------------------------------- */

static void on_shutdown_notified(rpc__tag_t *tag, bool ok)
{
    (void)ok;
    rpc_server_t *srv = RPC__CONTAINER_OF(tag, rpc_server_t, shutdown_tag);
    pthread_mutex_lock(&srv->mu);
    srv->shutdown_notified = true;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

rpc_server_t *rpc_server_create(const rpc_server_config_t *cfg)
{
    rpc__grpc_init();
    rpc_server_t *srv = ls_xcalloc(1, sizeof(*srv));
    if (cfg)
        srv->cfg = *cfg;
    else
        rpc_server_config_init(&srv->cfg);
    snprintf(srv->name, sizeof(srv->name), "%s", srv->cfg.name ? srv->cfg.name : "rpc");
    srv->cfg.name = srv->name;
    if (srv->cfg.threads <= 0)
        srv->cfg.threads = rpc__cpu_count();

    grpc_arg args[1];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = srv->cfg.max_recv_message_bytes;
    grpc_channel_args chargs = {1, args};
    srv->server = grpc_server_create(&chargs, NULL);
    if (!srv->server) {
        free(srv);
        grpc_shutdown();
        return NULL;
    }
    srv->pool = rpc__cqpool_create(srv->cfg.threads);
    for (int i = 0; i < srv->cfg.threads; i++)
        grpc_server_register_completion_queue(srv->server, rpc__cqpool_at(srv->pool, i), NULL);
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    srv->shutdown_tag.fn = on_shutdown_notified;
    srv->unknown.path = "(unknown)";
    srv->unknown.kind = RPC_STREAM;
    srv->health = rpc__health_create();
    if (rpc__health_register(srv->health, srv) != LS_OK) {
        rpc_server_destroy(srv);
        return NULL;
    }
    return srv;
}

/* gRPC asks at each handshake; a reload has bumped the generation when there is news. */
static grpc_ssl_certificate_config_reload_status
tls_fetch(void *ud, grpc_ssl_server_certificate_config **config)
{
    tls_port_t *t = ud;
    pthread_mutex_lock(&t->mu);
    grpc_ssl_certificate_config_reload_status st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    if (t->delivered != t->generation) {
        grpc_ssl_pem_key_cert_pair pair = {t->pem.key, t->pem.cert};
        /* gRPC 1.51 asserts that a fetched config has root certificates, even when no
         * client certificate is requested (then they are never used): give it the
         * server's own chain in that case. */
        *config = grpc_ssl_server_certificate_config_create(t->pem.ca ? t->pem.ca : t->pem.cert,
                                                            &pair, 1);
        if (*config) {
            t->delivered = t->generation;
            st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
        } else {
            st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return st;
}

static void tls_port_free(tls_port_t *t)
{
    rpc__pem_free(&t->pem);
    free(t->cert_file);
    free(t->key_file);
    free(t->ca_file);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

int rpc_server_listen(rpc_server_t *srv, const char *addr, const rpc_tls_server_t *tls, int *port)
{
    if (srv->started || !addr)
        return LS_ERR_INVALID;
    grpc_server_credentials *creds;
    tls_port_t *t = NULL;
    if (tls) {
        t = ls_xcalloc(1, sizeof(*t));
        pthread_mutex_init(&t->mu, NULL);
        char why[512];
        if (!tls->cert_file || !tls->key_file ||
            rpc__pem_load(&t->pem, "server", tls->cert_file, tls->key_file,
                          tls->client_ca_file, why, sizeof(why)) != LS_OK) {
            LS_LOG_ERROR("rpc", "cannot use TLS files reason=\"%s\"",
                         tls->cert_file && tls->key_file ? why : "a certificate and a key are "
                                                                 "needed");
            tls_port_free(t);
            return LS_ERR_INVALID;
        }
        t->cert_file = ls_xstrdup(tls->cert_file);
        t->key_file = ls_xstrdup(tls->key_file);
        t->ca_file = tls->client_ca_file ? ls_xstrdup(tls->client_ca_file) : NULL;
        t->generation = 1;
        grpc_ssl_server_credentials_options *o =
            grpc_ssl_server_credentials_create_options_using_config_fetcher(
                tls->client_ca_file ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                    : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
                tls_fetch, t);
        creds = o ? grpc_ssl_server_credentials_create_with_options(o) : NULL;
        if (!creds) {
            LS_LOG_ERROR("rpc", "cannot create TLS credentials address=%s", addr);
            tls_port_free(t);
            return LS_ERR_INVALID;
        }
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    int bound = grpc_server_add_http2_port(srv->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (bound == 0) {
        LS_LOG_ERROR("rpc", "cannot bind address=%s", addr);
        /* The credentials may still be referenced by gRPC: t lives with the server. */
    }
    if (t) {
        t->next = srv->tls_ports;
        srv->tls_ports = t;
    }
    if (bound == 0)
        return LS_ERR_IO;
    srv->n_ports++;
    if (port)
        *port = bound;
    return LS_OK;
}

int rpc_server_reload_tls(rpc_server_t *srv, char *err, size_t err_len)
{
    size_t n = 0;
    for (tls_port_t *t = srv->tls_ports; t; t = t->next)
        n++;
    if (n == 0)
        return LS_OK;
    rpc__pem_t *fresh = ls_xcalloc(n, sizeof(*fresh));
    size_t i = 0;
    int rc = LS_OK;
    for (tls_port_t *t = srv->tls_ports; t && rc == LS_OK; t = t->next, i++)
        rc = rpc__pem_load(&fresh[i], "server", t->cert_file, t->key_file, t->ca_file, err,
                           err_len);
    if (rc == LS_OK) { /* every port's files are good: switch them all */
        i = 0;
        for (tls_port_t *t = srv->tls_ports; t; t = t->next, i++) {
            pthread_mutex_lock(&t->mu);
            rpc__pem_t old = t->pem;
            t->pem = fresh[i];
            fresh[i] = old;
            t->generation++;
            pthread_mutex_unlock(&t->mu);
        }
    }
    for (i = 0; i < n; i++)
        rpc__pem_free(&fresh[i]);
    free(fresh);
    return rc;
}

static bool path_ok(const char *path)
{
    /* "/pkg.Service/Method": a leading slash, one more slash, a dot in the service. */
    if (!path || path[0] != '/')
        return false;
    const char *slash = strchr(path + 1, '/');
    return slash && slash > path + 1 && slash[1] != '\0' && !strchr(slash + 1, '/');
}

int rpc_server_add_method(rpc_server_t *srv, const char *path, rpc_kind_t kind,
                          const ProtobufCMessageDescriptor *req, const rpc_handler_t *h,
                          void *method_ctx)
{
    if (srv->started || !path_ok(path) || !req || !h)
        return LS_ERR_INVALID;
    for (size_t i = 0; i < srv->n_methods; i++)
        if (strcmp(srv->methods[i]->path, path) == 0)
            return LS_ERR_EXISTS;
    rpc__method_t *m = ls_xcalloc(1, sizeof(*m));
    m->path = ls_xstrdup(path);
    m->kind = kind;
    m->req = req;
    m->h = *h;
    m->ctx = method_ctx;
    m->registered = grpc_server_register_method(
        srv->server, m->path, NULL,
        kind == RPC_UNARY ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER : GRPC_SRM_PAYLOAD_NONE, 0);
    if (!m->registered) {
        free(m->path);
        free(m);
        return LS_ERR_INVALID;
    }
    rpc__method_t **methods = realloc(srv->methods, (srv->n_methods + 1) * sizeof(*methods));
    if (!methods) {
        LS_LOG_ERROR("rpc", "out of memory registering method");
        abort();
    }
    srv->methods = methods;
    srv->methods[srv->n_methods++] = m;

    /* "/pkg.Service/Method" -> health entry "pkg.Service", SERVING until told otherwise. */
    const char *slash = strchr(path + 1, '/');
    char service[256];
    snprintf(service, sizeof(service), "%.*s", (int)(slash - path - 1), path + 1);
    rpc__health_set(srv->health, service, srv->cfg.initial_health);
    return LS_OK;
}

int rpc_server_start(rpc_server_t *srv)
{
    if (srv->started || srv->n_ports == 0)
        return LS_ERR_INVALID;
    grpc_server_start(srv->server);
    srv->started = true;
    if (rpc__cqpool_start(srv->pool, srv->name) != LS_OK)
        return LS_ERR_INTERNAL;
    rpc__health_set(srv->health, "", srv->cfg.initial_health);
    for (int i = 0; i < rpc__cqpool_size(srv->pool); i++) {
        grpc_completion_queue *cq = rpc__cqpool_at(srv->pool, i);
        for (int k = 0; k < RPC_REQUESTS_PER_CQ; k++) {
            for (size_t j = 0; j < srv->n_methods; j++)
                post_request(srv, srv->methods[j], cq);
        }
        post_request(srv, NULL, cq);
    }
    LS_LOG_INFO("rpc", "server started name=%s threads=%d methods=%zu", srv->name,
                srv->cfg.threads, srv->n_methods);
    return LS_OK;
}

int rpc_server_set_health(rpc_server_t *srv, const char *service, rpc_health_status_t status)
{
    return rpc__health_set(srv->health, service ? service : "", status);
}

int rpc_server_set_health_all(rpc_server_t *srv, rpc_health_status_t status)
{
    return rpc__health_set_all(srv->health, status);
}

void rpc_server_set_auth(rpc_server_t *srv, rpc_auth_fn fn, void *ud)
{
    srv->auth = fn;
    srv->auth_ud = ud;
}

void rpc_server_set_call_observer(rpc_server_t *srv, rpc_call_observer_fn fn, void *ud)
{
    srv->observer = fn;
    srv->observer_ud = ud;
}

bool rpc_server_draining(const rpc_server_t *srv)
{
    return atomic_load(&srv->draining);
}

/* Waits on srv->cv until *flag or until deadline_us (INT64_MAX: forever).  srv->mu held. */
static bool do_wait(rpc_server_t *srv, const bool *flag, int64_t deadline_us)
{
    while (!*flag) {
        if (deadline_us == INT64_MAX) {
            pthread_cond_wait(&srv->cv, &srv->mu);
            continue;
        }
        int64_t left = deadline_us - ls_now_us();
        if (left <= 0)
            return false;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (left % 1000000) * 1000;
        ts.tv_sec += left / 1000000 + ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&srv->cv, &srv->mu, &ts);
    }
    return true;
}

void rpc_server_shutdown(rpc_server_t *srv, int64_t grace_ms)
{
    pthread_mutex_lock(&srv->mu);
    if (srv->shutdown_begun) {
        do_wait(srv, &srv->shutdown_complete, INT64_MAX);
        pthread_mutex_unlock(&srv->mu);
        return;
    }
    srv->shutdown_begun = true;
    pthread_mutex_unlock(&srv->mu);
    atomic_store(&srv->draining, true);
    int64_t t0 = ls_now_us();

    if (srv->started) {
        rpc__health_shutdown(srv->health);
        grpc_server_shutdown_and_notify(srv->server, rpc__cqpool_at(srv->pool, 0),
                                        &srv->shutdown_tag);
        pthread_mutex_lock(&srv->mu);
        int64_t grace_end = t0 + (grace_ms > 0 ? grace_ms * 1000 : 0);
        bool clean = do_wait(srv, &srv->shutdown_notified, grace_end);
        int cancelled = srv->live_calls;
        pthread_mutex_unlock(&srv->mu);
        if (!clean) {
            /* With no calls left the wait only raced the shutdown notice: not news. */
            ls_log(cancelled > 0 ? LS_LOG_INFO : LS_LOG_DEBUG, "rpc",
                   "grace period over, cancelling calls name=%s calls=%d", srv->name, cancelled);
            grpc_server_cancel_all_calls(srv->server);
        }
        pthread_mutex_lock(&srv->mu);
        do_wait(srv, &srv->shutdown_notified, INT64_MAX);
        while (srv->live_calls > 0)
            pthread_cond_wait(&srv->cv, &srv->mu);
        pthread_mutex_unlock(&srv->mu);
    }
    grpc_server_destroy(srv->server);
    srv->server = NULL;
    rpc__cqpool_destroy(srv->pool); /* drains posted requests: they come back failed */
    srv->pool = NULL;
    LS_LOG_INFO("rpc", "server stopped name=%s after_ms=%lld", srv->name,
                (long long)((ls_now_us() - t0) / 1000));

    pthread_mutex_lock(&srv->mu);
    srv->shutdown_complete = true;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

void rpc_server_destroy(rpc_server_t *srv)
{
    if (!srv)
        return;
    rpc_server_shutdown(srv, 0);
    rpc__health_destroy(srv->health);
    for (size_t i = 0; i < srv->n_methods; i++) {
        free(srv->methods[i]->path);
        free(srv->methods[i]);
    }
    free(srv->methods);
    while (srv->tls_ports) { /* gRPC asks them nothing more: the server is destroyed */
        tls_port_t *t = srv->tls_ports;
        srv->tls_ports = t->next;
        tls_port_free(t);
    }
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
    free(srv);
    grpc_shutdown();
}
