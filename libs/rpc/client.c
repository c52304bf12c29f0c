/*
 * client.c - rpc_client_t, rpc_channel_t, unary calls and rpc_stream_t.
 *
 * Lock rules:
 * - client->mu guards the list of live streams and its count.
 * - ch->mu guards the channel's table of registered methods.
 * - s->mu guards a stream's shared fields and every grpc_call_start_batch /
 *   grpc_call_cancel on it; do_* functions expect it held.  Callbacks run with no lock.
 * - Order: s->mu, then client->mu.
 *
 * As in server.c, s->ops counts batches whose completion handler has not finished;
 * on_status is delivered once the status op has come back and ops is zero, so it is
 * always the last callback.
 */
#define _GNU_SOURCE
#include "rpc/client.h"

#include "base/err.h"
#include "base/log.h"
#include "rpc/codec.h"
#include "rpc/cq.h"
#include "rpc/init.h"
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

#define RPC_DEFAULT_STREAM_QUEUE 4096

struct rpc_client {
    rpc__cqpool_t *pool;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rpc_stream_t *streams; /* live streams (on_status not yet delivered) */
    int live;
    bool pollers_started; /* under mu */
};

typedef struct method_entry {
    char *path;
    void *handle;
    struct method_entry *next;
} method_entry_t;

struct rpc_channel {
    rpc_client_t *client;
    grpc_channel *channel;
    pthread_mutex_t mu;
    method_entry_t *methods;
};

struct rpc_stream {
    rpc__tag_t status_tag, recv_tag, send_tag, close_tag;
    rpc_client_t *client;
    grpc_call *call;
    const ProtobufCMessageDescriptor *resp_desc;
    rpc_stream_handler_t h;
    void *ud;
    atomic_int refs; /* the opener's, plus the library's until on_status */
    rpc_stream_t *prev, *next;

    pthread_mutex_t mu;
    int ops;
    bool status_received, ended, cancelled, close_requested, close_started, write_in_flight;
    grpc_byte_buffer *recv_buf, *write_buf;
    grpc_byte_buffer **q;
    size_t q_head, q_len, q_cap, max_q;
    rpc_stream_drain_fn drain_fn; /* rpc_stream_on_drain; guarded by mu */
    void *drain_ud;
    size_t drain_low;
    rpc_md_t send_md;
    grpc_metadata *send_md_arr;
    grpc_metadata_array recv_initial_md, trailing_md;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
};

/* ---- client --------------------------------------------------------------------- */

rpc_client_t *rpc_client_create(int threads)
{
    rpc__grpc_init();
    rpc_client_t *c = ls_xcalloc(1, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->pool = rpc__cqpool_create(threads > 0 ? threads : 1);
    return c;
}

/* The polling threads start with the first stream, not with the client.  Measured
 * with tools/rpcbench: an idle thread blocked on the client's queue takes part in
 * polling the channel's sockets, so a unary call (which plucks its own queue) paid a
 * hand-off between threads on every response and ran at about half the calls/s of
 * plain gRPC.  Unary-only clients now never start them. */
static int ensure_pollers(rpc_client_t *c)
{
    int rc = LS_OK;
    pthread_mutex_lock(&c->mu);
    if (!c->pollers_started) {
        rc = rpc__cqpool_start(c->pool, "client");
        c->pollers_started = rc == LS_OK;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

void rpc_client_destroy(rpc_client_t *client)
{
    if (!client)
        return;
    pthread_mutex_lock(&client->mu);
    for (rpc_stream_t *s = client->streams; s; s = s->next)
        grpc_call_cancel(s->call, NULL); /* thread-safe; s stays listed until on_status */
    while (client->live > 0)
        pthread_cond_wait(&client->cv, &client->mu);
    pthread_mutex_unlock(&client->mu);
    rpc__cqpool_destroy(client->pool);
    pthread_mutex_destroy(&client->mu);
    pthread_cond_destroy(&client->cv);
    free(client);
    grpc_shutdown();
}

/* ---- channels ------------------------------------------------------------------- */

void rpc_channel_config_init(rpc_channel_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_recv_message_bytes = 4 << 20; /* 4 MiB */
    cfg->reconnect_max_ms = 2000;          /* ms */
    cfg->keepalive_ms = 0;                 /* off */
}

rpc_channel_t *rpc_channel_create(rpc_client_t *client, const char *target,
                                  const rpc_channel_config_t *cfg)
{
    rpc_channel_config_t defaults;
    if (!cfg) {
        rpc_channel_config_init(&defaults);
        cfg = &defaults;
    }
    grpc_arg args[10];
    size_t n = 0;
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[n++].value.integer = cfg->max_recv_message_bytes;
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[n++].value.integer = 100;
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS;
    args[n++].value.integer = 100;
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[n++].value.integer = (int)(cfg->reconnect_max_ms > 0 ? cfg->reconnect_max_ms : 2000);
    if (cfg->keepalive_ms > 0) {
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = GRPC_ARG_KEEPALIVE_TIME_MS;
        args[n++].value.integer = (int)cfg->keepalive_ms;
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS;
        args[n++].value.integer = 1;
    }
    if (cfg->own_connections) {
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
        args[n++].value.integer = 1;
    }
    if (cfg->tls_server_name) {
        args[n].type = GRPC_ARG_STRING;
        args[n].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        args[n++].value.string = (char *)cfg->tls_server_name;
    }
    grpc_channel_args chargs = {n, args};

    grpc_channel_credentials *creds;
    if (cfg->tls || cfg->tls_root_file) {
        rpc__pem_t pem;
        char why[512];
        if (rpc__pem_load(&pem, "client", cfg->tls_cert_file, cfg->tls_key_file,
                          cfg->tls_root_file, why, sizeof(why)) != LS_OK) {
            LS_LOG_ERROR("rpc", "cannot use TLS files for channel target=%s reason=\"%s\"",
                         target, why);
            return NULL;
        }
        grpc_ssl_pem_key_cert_pair pair = {pem.key, pem.cert};
        creds = grpc_ssl_credentials_create(pem.ca, pem.cert ? &pair : NULL, NULL, NULL);
        rpc__pem_free(&pem);
    } else {
        creds = grpc_insecure_credentials_create();
    }
    rpc_channel_t *ch = ls_xcalloc(1, sizeof(*ch));
    ch->client = client;
    ch->channel = grpc_channel_create(target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    pthread_mutex_init(&ch->mu, NULL);
    return ch;
}

void rpc_channel_destroy(rpc_channel_t *ch)
{
    if (!ch)
        return;
    grpc_channel_destroy(ch->channel);
    while (ch->methods) {
        method_entry_t *m = ch->methods;
        ch->methods = m->next;
        free(m->path);
        free(m);
    }
    pthread_mutex_destroy(&ch->mu);
    free(ch);
}

/* Registered call handles skip a per-call method string lookup in gRPC. */
static void *method_handle(rpc_channel_t *ch, const char *method)
{
    pthread_mutex_lock(&ch->mu);
    method_entry_t *m = ch->methods;
    while (m && strcmp(m->path, method) != 0)
        m = m->next;
    if (!m) {
        m = ls_xcalloc(1, sizeof(*m));
        m->path = ls_xstrdup(method);
        m->handle = grpc_channel_register_call(ch->channel, m->path, NULL, NULL);
        m->next = ch->methods;
        ch->methods = m;
    }
    void *handle = m->handle;
    pthread_mutex_unlock(&ch->mu);
    return handle;
}

static gpr_timespec deadline_of(const rpc_call_opts_t *opts)
{
    if (!opts || opts->timeout_us <= 0)
        return gpr_inf_future(GPR_CLOCK_REALTIME);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_micros(opts->timeout_us, GPR_TIMESPAN));
}

static void set_status(rpc_status_t *st, grpc_status_code code, grpc_slice details,
                       const char *error_string)
{
    st->code = code;
    size_t len = GRPC_SLICE_LENGTH(details);
    if (len == 0 && error_string && code != GRPC_STATUS_OK) {
        snprintf(st->details, sizeof(st->details), "%s", error_string);
        return;
    }
    if (len >= sizeof(st->details))
        len = sizeof(st->details) - 1;
    memcpy(st->details, GRPC_SLICE_START_PTR(details), len);
    st->details[len] = '\0';
}

/* ---- unary ---------------------------------------------------------------------- */

static int unary_bb(rpc_channel_t *ch, const char *method, grpc_byte_buffer *req_bb,
                    const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts_t *opts,
                    ProtobufCMessage **resp, rpc_status_t *status)
{
    *resp = NULL;
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_call *call = grpc_channel_create_registered_call(
        ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method_handle(ch, method),
        deadline_of(opts), NULL);
    if (!call) {
        grpc_byte_buffer_destroy(req_bb);
        grpc_completion_queue_shutdown(cq);
        grpc_completion_queue_destroy(cq);
        return LS_ERR_INTERNAL;
    }
    size_t n_md = 0;
    grpc_metadata *md = rpc__md_to_grpc(opts ? opts->metadata : NULL, &n_md);
    grpc_metadata_array recv_md, trailing;
    grpc_metadata_array_init(&recv_md);
    grpc_metadata_array_init(&trailing);
    grpc_byte_buffer *resp_bb = NULL;
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    const char *error_string = NULL;

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.metadata = md;
    ops[0].data.send_initial_metadata.count = n_md;
    ops[0].flags = opts && opts->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &recv_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &resp_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &code;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.error_string = &error_string;

    int rc = LS_OK;
    grpc_call_error e = grpc_call_start_batch(call, ops, 6, ops, NULL);
    if (e != GRPC_CALL_OK) {
        rc = LS_ERR_INTERNAL;
    } else {
        /* Completes with success even for error statuses: the status tells. */
        grpc_completion_queue_pluck(cq, ops, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        set_status(status, code, details, error_string);
        if (code == GRPC_STATUS_OK) {
            *resp = rpc_codec_decode(resp_desc, resp_bb);
            if (!*resp) {
                status->code = GRPC_STATUS_INTERNAL;
                snprintf(status->details, sizeof(status->details),
                         "reply does not decode as %s", resp_desc->name);
            }
        }
        if (opts && opts->trailers_out)
            rpc__md_from_grpc(opts->trailers_out, &trailing);
    }
    if (resp_bb)
        grpc_byte_buffer_destroy(resp_bb);
    grpc_byte_buffer_destroy(req_bb);
    grpc_slice_unref(details);
    gpr_free((void *)error_string);
    grpc_metadata_array_destroy(&recv_md);
    grpc_metadata_array_destroy(&trailing);
    gpr_free(md);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_completion_queue_destroy(cq);
    return rc;
}

int rpc_channel_unary(rpc_channel_t *ch, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts_t *opts,
                      ProtobufCMessage **resp, rpc_status_t *status)
{
    grpc_byte_buffer *bb = rpc_codec_encode(req);
    if (!bb)
        return LS_ERR_NOMEM;
    return unary_bb(ch, method, bb, resp_desc, opts, resp, status);
}

int rpc_channel_unary_raw(rpc_channel_t *ch, const char *method, const void *data, size_t len,
                          const ProtobufCMessageDescriptor *resp_desc,
                          const rpc_call_opts_t *opts, ProtobufCMessage **resp,
                          rpc_status_t *status)
{
    grpc_byte_buffer *bb = rpc_codec_encode_raw(data, len);
    if (!bb)
        return LS_ERR_NOMEM;
    return unary_bb(ch, method, bb, resp_desc, opts, resp, status);
}

/* ---- streams -------------------------------------------------------------------- */

static void stream_free(rpc_stream_t *s)
{
    while (s->q_len > 0) {
        grpc_byte_buffer_destroy(s->q[s->q_head]);
        s->q_head = (s->q_head + 1) % s->q_cap;
        s->q_len--;
    }
    free(s->q);
    if (s->write_buf)
        grpc_byte_buffer_destroy(s->write_buf);
    if (s->recv_buf)
        grpc_byte_buffer_destroy(s->recv_buf);
    grpc_metadata_array_destroy(&s->recv_initial_md);
    grpc_metadata_array_destroy(&s->trailing_md);
    grpc_slice_unref(s->details);
    gpr_free((void *)s->error_string);
    gpr_free(s->send_md_arr);
    rpc_md_clear(&s->send_md);
    if (s->call)
        grpc_call_unref(s->call);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static void stream_unref(rpc_stream_t *s)
{
    if (atomic_fetch_sub(&s->refs, 1) == 1)
        stream_free(s);
}

static void op_finished(rpc_stream_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->ops--;
    bool fire = s->ops == 0 && s->status_received && !s->ended;
    if (fire)
        s->ended = true;
    pthread_mutex_unlock(&s->mu);
    if (!fire)
        return;
    rpc_status_t st;
    set_status(&st, s->status, s->details, s->error_string);
    rpc_md_t trailers = RPC_MD_INIT;
    rpc__md_from_grpc(&trailers, &s->trailing_md);
    if (s->h.on_status)
        s->h.on_status(s, s->ud, &st, &trailers);
    rpc_md_clear(&trailers);

    rpc_client_t *client = s->client;
    pthread_mutex_lock(&client->mu);
    if (s->prev)
        s->prev->next = s->next;
    else
        client->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (--client->live == 0)
        pthread_cond_broadcast(&client->cv);
    pthread_mutex_unlock(&client->mu);
    /* Ended: nobody touches s->call any more (every user checks s->ended first). */
    grpc_call_unref(s->call);
    s->call = NULL;
    stream_unref(s);
}

static int do_start(rpc_stream_t *s, const grpc_op *ops, size_t n, rpc__tag_t *tag)
{
    s->ops++;
    grpc_call_error e = grpc_call_start_batch(s->call, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        s->ops--;
        LS_LOG_ERROR("rpc", "client start_batch failed error=%d", (int)e);
        return LS_ERR_INTERNAL;
    }
    return LS_OK;
}

static void do_post_recv(rpc_stream_t *s, bool with_initial_metadata)
{
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (with_initial_metadata) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->recv_initial_md;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &s->recv_buf;
    do_start(s, ops, n, &s->recv_tag);
}

static void do_start_close(rpc_stream_t *s)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    s->close_started = true;
    do_start(s, &op, 1, &s->close_tag);
}

static int do_start_send(rpc_stream_t *s, grpc_byte_buffer *bb)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    s->write_buf = bb;
    s->write_in_flight = true;
    int rc = do_start(s, &op, 1, &s->send_tag);
    if (rc != LS_OK) {
        s->write_buf = NULL;
        s->write_in_flight = false;
    }
    return rc;
}

static void on_status_op(rpc__tag_t *tag, bool ok)
{
    (void)ok;
    rpc_stream_t *s = RPC__CONTAINER_OF(tag, rpc_stream_t, status_tag);
    pthread_mutex_lock(&s->mu);
    s->status_received = true;
    pthread_mutex_unlock(&s->mu);
    op_finished(s);
}

static void on_recv_op(rpc__tag_t *tag, bool ok)
{
    rpc_stream_t *s = RPC__CONTAINER_OF(tag, rpc_stream_t, recv_tag);
    pthread_mutex_lock(&s->mu);
    grpc_byte_buffer *bb = s->recv_buf;
    s->recv_buf = NULL;
    pthread_mutex_unlock(&s->mu);
    if (!ok || !bb) { /* stream over (or failing): the status op reports how */
        if (bb)
            grpc_byte_buffer_destroy(bb);
        op_finished(s);
        return;
    }
    ProtobufCMessage *msg = rpc_codec_decode(s->resp_desc, bb);
    grpc_byte_buffer_destroy(bb);
    if (!msg) {
        LS_LOG_WARN("rpc", "undecodable response type=%s", s->resp_desc->name);
        pthread_mutex_lock(&s->mu);
        s->cancelled = true;
        grpc_call_cancel_with_status(s->call, GRPC_STATUS_INTERNAL,
                                     "response message does not decode", NULL);
        pthread_mutex_unlock(&s->mu);
        op_finished(s);
        return;
    }
    if (s->h.on_message)
        s->h.on_message(s, s->ud, msg);
    protobuf_c_message_free_unpacked(msg, NULL);
    pthread_mutex_lock(&s->mu);
    if (!s->status_received)
        do_post_recv(s, false);
    pthread_mutex_unlock(&s->mu);
    op_finished(s);
}

static void on_send_op(rpc__tag_t *tag, bool ok)
{
    rpc_stream_t *s = RPC__CONTAINER_OF(tag, rpc_stream_t, send_tag);
    pthread_mutex_lock(&s->mu);
    grpc_byte_buffer_destroy(s->write_buf);
    s->write_buf = NULL;
    s->write_in_flight = false;
    while (ok && s->q_len > 0 && !s->write_in_flight) {
        grpc_byte_buffer *next = s->q[s->q_head];
        s->q_head = (s->q_head + 1) % s->q_cap;
        s->q_len--;
        if (do_start_send(s, next) != LS_OK)
            grpc_byte_buffer_destroy(next);
    }
    if (!ok) {
        while (s->q_len > 0) {
            grpc_byte_buffer_destroy(s->q[s->q_head]);
            s->q_head = (s->q_head + 1) % s->q_cap;
            s->q_len--;
        }
    }
    if (!s->write_in_flight && s->close_requested && !s->close_started)
        do_start_close(s);
    rpc_stream_drain_fn drain = NULL;
    void *drain_ud = NULL;
    if (ok && s->drain_fn && s->q_len <= s->drain_low && !s->ended && !s->cancelled &&
        !s->close_requested) {
        drain = s->drain_fn;
        drain_ud = s->drain_ud;
    }
    pthread_mutex_unlock(&s->mu);
    if (drain)
        drain(s, drain_ud); /* this op's reference keeps the stream alive meanwhile */
    op_finished(s);
}

static void on_close_op(rpc__tag_t *tag, bool ok)
{
    (void)ok;
    op_finished(RPC__CONTAINER_OF(tag, rpc_stream_t, close_tag));
}

rpc_stream_t *rpc_stream_open(rpc_channel_t *ch, const char *method,
                              const ProtobufCMessageDescriptor *resp_desc,
                              const rpc_stream_handler_t *h, void *ud,
                              const rpc_call_opts_t *opts, size_t max_write_queue)
{
    rpc_client_t *client = ch->client;
    if (ensure_pollers(client) != LS_OK)
        return NULL;
    rpc_stream_t *s = ls_xcalloc(1, sizeof(*s));
    s->status_tag.fn = on_status_op;
    s->recv_tag.fn = on_recv_op;
    s->send_tag.fn = on_send_op;
    s->close_tag.fn = on_close_op;
    s->client = client;
    s->resp_desc = resp_desc;
    s->h = *h;
    s->ud = ud;
    s->max_q = max_write_queue ? max_write_queue : RPC_DEFAULT_STREAM_QUEUE;
    s->details = grpc_empty_slice();
    atomic_init(&s->refs, 2);
    pthread_mutex_init(&s->mu, NULL);
    grpc_metadata_array_init(&s->recv_initial_md);
    grpc_metadata_array_init(&s->trailing_md);
    if (opts && opts->metadata) {
        for (size_t i = 0; i < opts->metadata->count; i++) {
            const rpc_md_entry_t *e = &opts->metadata->items[i];
            rpc_md_add_bytes(&s->send_md, e->key, e->value, e->value_len);
        }
    }

    s->call = grpc_channel_create_registered_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS,
                                                  rpc__cqpool_next(client->pool),
                                                  method_handle(ch, method), deadline_of(opts),
                                                  NULL);
    if (!s->call) {
        stream_free(s);
        return NULL;
    }
    size_t n_md = 0;
    s->send_md_arr = rpc__md_to_grpc(&s->send_md, &n_md);
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.metadata = s->send_md_arr;
    ops[0].data.send_initial_metadata.count = n_md;
    ops[0].flags = opts && opts->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
    ops[1].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[1].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
    ops[1].data.recv_status_on_client.status = &s->status;
    ops[1].data.recv_status_on_client.status_details = &s->details;
    ops[1].data.recv_status_on_client.error_string = &s->error_string;

    pthread_mutex_lock(&client->mu);
    s->next = client->streams;
    if (s->next)
        s->next->prev = s;
    client->streams = s;
    client->live++;
    pthread_mutex_unlock(&client->mu);

    pthread_mutex_lock(&s->mu);
    int rc = do_start(s, ops, 2, &s->status_tag);
    if (rc == LS_OK)
        do_post_recv(s, true);
    pthread_mutex_unlock(&s->mu);
    if (rc != LS_OK) {
        pthread_mutex_lock(&client->mu);
        if (s->prev)
            s->prev->next = s->next;
        else
            client->streams = s->next;
        if (s->next)
            s->next->prev = s->prev;
        if (--client->live == 0)
            pthread_cond_broadcast(&client->cv);
        pthread_mutex_unlock(&client->mu);
        stream_free(s);
        return NULL;
    }
    return s;
}

static int stream_enqueue(rpc_stream_t *s, grpc_byte_buffer *bb)
{
    pthread_mutex_lock(&s->mu);
    int rc = LS_OK;
    if (s->status_received || s->cancelled || s->close_requested) {
        rc = LS_ERR_CLOSED;
    } else if (!s->write_in_flight) {
        rc = do_start_send(s, bb);
        if (rc == LS_OK)
            bb = NULL;
    } else if (s->q_len >= s->max_q) {
        rc = LS_ERR_FULL;
    } else {
        if (s->q_len == s->q_cap) {
            size_t cap = s->q_cap ? s->q_cap * 2 : 16;
            grpc_byte_buffer **q = ls_xmalloc(cap * sizeof(*q));
            for (size_t i = 0; i < s->q_len; i++)
                q[i] = s->q[(s->q_head + i) % s->q_cap];
            free(s->q);
            s->q = q;
            s->q_head = 0;
            s->q_cap = cap;
        }
        s->q[(s->q_head + s->q_len) % s->q_cap] = bb;
        s->q_len++;
        bb = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    if (bb)
        grpc_byte_buffer_destroy(bb);
    return rc;
}

int rpc_stream_send(rpc_stream_t *s, const ProtobufCMessage *msg)
{
    grpc_byte_buffer *bb = rpc_codec_encode(msg);
    return bb ? stream_enqueue(s, bb) : LS_ERR_NOMEM;
}

int rpc_stream_send_raw(rpc_stream_t *s, const void *data, size_t len)
{
    grpc_byte_buffer *bb = rpc_codec_encode_raw(data, len);
    return bb ? stream_enqueue(s, bb) : LS_ERR_NOMEM;
}

int rpc_stream_close_send(rpc_stream_t *s)
{
    pthread_mutex_lock(&s->mu);
    int rc = LS_OK;
    if (s->status_received || s->cancelled || s->close_requested) {
        rc = LS_ERR_CLOSED;
    } else {
        s->close_requested = true;
        if (!s->write_in_flight)
            do_start_close(s);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void rpc_stream_cancel(rpc_stream_t *s)
{
    pthread_mutex_lock(&s->mu);
    if (!s->ended) {
        s->cancelled = true;
        grpc_call_cancel(s->call, NULL);
    }
    pthread_mutex_unlock(&s->mu);
}

void rpc_stream_on_drain(rpc_stream_t *s, size_t low_water, rpc_stream_drain_fn fn, void *ud)
{
    pthread_mutex_lock(&s->mu);
    s->drain_fn = fn;
    s->drain_ud = ud;
    s->drain_low = low_water;
    pthread_mutex_unlock(&s->mu);
}

size_t rpc_stream_write_queue_len(rpc_stream_t *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->q_len;
    pthread_mutex_unlock(&s->mu);
    return n;
}

bool rpc_stream_ended(rpc_stream_t *s)
{
    pthread_mutex_lock(&s->mu);
    bool v = s->ended;
    pthread_mutex_unlock(&s->mu);
    return v;
}

void rpc_stream_release(rpc_stream_t *s)
{
    if (s)
        stream_unref(s);
}
