/*
 * test_server.c - rpc_server_t and rpc_call_t contracts, with server and client in one
 * process: registration rules, finish/send rules, runtime health, TLS and mutual TLS.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "echo.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "rpc/status.h"
#include "support/certs.h"
#include "support/channel.h"
#include "support/echo_sink.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const ProtobufCMessageDescriptor *const REQ = &llmserve__test__echo_request__descriptor;
static const ProtobufCMessageDescriptor *const REP = &llmserve__test__echo_reply__descriptor;

/* What the handlers below saw and did, for the test to check. */
typedef struct {
    pthread_mutex_t mu;
    int starts, messages, half_closes, cancels, dones;
    int finish_again_rc; /* rpc_call_finish after a finish */
    int send_after_rc;   /* rpc_call_send after a finish */
    int reply_again_rc;  /* rpc_call_reply after a reply */
    rpc_call_t *kept;    /* a call kept past on_done with rpc_call_ref */
} seen_t;

static seen_t g_seen = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void *h_start(rpc_call_t *call, void *ctx)
{
    (void)call;
    pthread_mutex_lock(&g_seen.mu);
    g_seen.starts++;
    pthread_mutex_unlock(&g_seen.mu);
    return ctx;
}

static void h_unary_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    (void)state;
    const Llmserve__Test__EchoRequest *req = (const Llmserve__Test__EchoRequest *)msg;
    Llmserve__Test__EchoReply reply = LLMSERVE__TEST__ECHO_REPLY__INIT;
    reply.text = req->text;
    reply.seq = req->seq + 1;
    int rc = rpc_call_reply(call, &reply.base);
    int again = rpc_call_reply(call, &reply.base);
    pthread_mutex_lock(&g_seen.mu);
    g_seen.messages++;
    g_seen.reply_again_rc = again;
    pthread_mutex_unlock(&g_seen.mu);
    (void)rc; /* the client checks the reply itself */
}

static void h_stream_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    (void)state;
    const Llmserve__Test__EchoRequest *req = (const Llmserve__Test__EchoRequest *)msg;
    pthread_mutex_lock(&g_seen.mu);
    g_seen.messages++;
    pthread_mutex_unlock(&g_seen.mu);
    Llmserve__Test__EchoReply reply = LLMSERVE__TEST__ECHO_REPLY__INIT;
    reply.text = req->text;
    for (int i = 0; i < (req->repeat > 0 ? req->repeat : 1); i++) {
        reply.index = i;
        rpc_call_send(call, &reply.base);
    }
    if (req->fail_code) {
        rpc_call_add_trailer(call, "x-why", "asked");
        rpc_call_finish(call, (grpc_status_code)req->fail_code, "as asked");
        int again = rpc_call_finish(call, GRPC_STATUS_OK, NULL);
        int send = rpc_call_send(call, &reply.base);
        pthread_mutex_lock(&g_seen.mu);
        g_seen.finish_again_rc = again;
        g_seen.send_after_rc = send;
        pthread_mutex_unlock(&g_seen.mu);
    }
}

static void h_half_close(rpc_call_t *call, void *state)
{
    (void)state;
    pthread_mutex_lock(&g_seen.mu);
    g_seen.half_closes++;
    pthread_mutex_unlock(&g_seen.mu);
    rpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void h_cancel(rpc_call_t *call, void *state)
{
    (void)call;
    (void)state;
    pthread_mutex_lock(&g_seen.mu);
    g_seen.cancels++;
    pthread_mutex_unlock(&g_seen.mu);
}

static void h_done(rpc_call_t *call, void *state)
{
    (void)state;
    pthread_mutex_lock(&g_seen.mu);
    g_seen.dones++;
    if (!g_seen.kept) {
        rpc_call_ref(call);
        g_seen.kept = call;
    }
    pthread_mutex_unlock(&g_seen.mu);
}

/* A producer driven by rpc_call_on_drain: sends req.repeat replies, never more than
 * DRAIN_WINDOW queued, refilling when the queue falls to DRAIN_LOW. */
#define DRAIN_WINDOW 256
#define DRAIN_LOW 64
typedef struct {
    int want, sent, drains;
    size_t max_queued;
} drain_job_t;

static drain_job_t g_drain;

static void drain_fill(rpc_call_t *call, void *ud)
{
    drain_job_t *j = ud;
    j->drains++;
    Llmserve__Test__EchoReply reply = LLMSERVE__TEST__ECHO_REPLY__INIT;
    reply.text = "d";
    for (size_t q = rpc_call_write_queue_len(call); q < DRAIN_WINDOW && j->sent < j->want; q++) {
        reply.index = j->sent;
        if (rpc_call_send(call, &reply.base) != LS_OK)
            return;
        j->sent++;
    }
    size_t q = rpc_call_write_queue_len(call);
    if (q > j->max_queued)
        j->max_queued = q;
    if (j->sent == j->want) {
        rpc_call_on_drain(call, 0, NULL, NULL);
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
    }
}

static void h_drain_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    (void)state;
    memset(&g_drain, 0, sizeof(g_drain));
    g_drain.want = ((const Llmserve__Test__EchoRequest *)msg)->repeat;
    rpc_call_on_drain(call, DRAIN_LOW, drain_fill, &g_drain);
    drain_fill(call, &g_drain);
    g_drain.drains--; /* the first fill was this handler's own */
}

static const rpc_handler_t drain_h = {h_start, h_drain_message, NULL, h_cancel, h_done};
static const rpc_handler_t unary_h = {h_start, h_unary_message, NULL, h_cancel, h_done};
static const rpc_handler_t stream_h = {h_start, h_stream_message, h_half_close, h_cancel, h_done};

static rpc_server_t *g_srv;
static rpc_client_t *g_client;
static rpc_channel_t *g_ch;
static int g_port;

static rpc_server_t *make_server(const rpc_tls_server_t *tls, int *port)
{
    rpc_server_config_t cfg;
    rpc_server_config_init(&cfg);
    cfg.threads = 2;
    rpc_server_t *srv = rpc_server_create(&cfg);
    cr_assert_not_null(srv);
    cr_assert_eq(rpc_server_listen(srv, "127.0.0.1:0", tls, port), LS_OK);
    cr_assert_eq(
        rpc_server_add_method(srv, "/llmserve.test.Echo/Unary", RPC_UNARY, REQ, &unary_h, NULL),
        LS_OK);
    cr_assert_eq(
        rpc_server_add_method(srv, "/llmserve.test.Echo/Stream", RPC_STREAM, REQ, &stream_h, NULL),
        LS_OK);
    cr_assert_eq(
        rpc_server_add_method(srv, "/llmserve.test.Echo/Drain", RPC_STREAM, REQ, &drain_h, NULL),
        LS_OK);
    cr_assert_eq(rpc_server_start(srv), LS_OK);
    return srv;
}

static void setup(void)
{
    g_srv = make_server(NULL, &g_port);
    g_client = rpc_client_create(1);
    g_ch = test_channel_to(g_client, g_port, NULL);
    cr_assert(test_channel_ready(g_ch, 20000), "the server did not answer");
}

static void teardown(void)
{
    rpc_channel_destroy(g_ch);
    rpc_client_destroy(g_client);
    rpc_server_destroy(g_srv);
    pthread_mutex_lock(&g_seen.mu);
    if (g_seen.kept) {
        /* Kept past on_done: still safe to use, and says the call is over. */
        Llmserve__Test__EchoReply reply = LLMSERVE__TEST__ECHO_REPLY__INIT;
        cr_expect_eq(rpc_call_send(g_seen.kept, &reply.base), LS_ERR_CLOSED);
        cr_expect_eq(rpc_call_finish(g_seen.kept, GRPC_STATUS_OK, NULL), LS_ERR_CLOSED);
        rpc_call_unref(g_seen.kept);
        g_seen.kept = NULL;
    }
    pthread_mutex_unlock(&g_seen.mu);
}

TestSuite(server, .init = setup, .fini = teardown, .timeout = 60);

Test(server, registration_rules)
{
    rpc_server_t *srv = rpc_server_create(NULL);
    cr_assert_eq(rpc_server_start(srv), LS_ERR_INVALID, "start without a port");
    cr_assert_eq(rpc_server_add_method(srv, "no-slash", RPC_UNARY, REQ, &unary_h, NULL),
                 LS_ERR_INVALID);
    cr_assert_eq(rpc_server_add_method(srv, "/a.B", RPC_UNARY, REQ, &unary_h, NULL),
                 LS_ERR_INVALID);
    cr_assert_eq(rpc_server_add_method(srv, "/a.B/C/D", RPC_UNARY, REQ, &unary_h, NULL),
                 LS_ERR_INVALID);
    cr_assert_eq(rpc_server_add_method(srv, "/a.B/C", RPC_UNARY, NULL, &unary_h, NULL),
                 LS_ERR_INVALID);
    cr_assert_eq(rpc_server_add_method(srv, "/a.B/C", RPC_UNARY, REQ, &unary_h, NULL), LS_OK);
    cr_assert_eq(rpc_server_add_method(srv, "/a.B/C", RPC_STREAM, REQ, &stream_h, NULL),
                 LS_ERR_EXISTS);
    cr_assert_eq(
        rpc_server_add_method(srv, "/grpc.health.v1.Health/Check", RPC_UNARY, REQ, &unary_h, NULL),
        LS_ERR_EXISTS, "health is built in");
    cr_assert_eq(rpc_server_listen(srv, "256.1.1.1:1", NULL, NULL), LS_ERR_IO);
    rpc_tls_server_t tls = {"/nonexistent/cert.pem", "/nonexistent/key.pem", NULL};
    cr_assert_eq(rpc_server_listen(srv, "127.0.0.1:0", &tls, NULL), LS_ERR_INVALID);
    rpc_server_destroy(srv); /* never started: destroy alone is enough */
    rpc_server_destroy(NULL);
}

Test(server, unary_reply_once)
{
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    req.text = "x";
    req.seq = 7;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    cr_assert_eq(
        rpc_channel_unary(g_ch, "/llmserve.test.Echo/Unary", &req.base, REP, NULL, &resp, &st),
        LS_OK);
    cr_assert_eq(st.code, GRPC_STATUS_OK, "%s", st.details);
    cr_assert_eq(((Llmserve__Test__EchoReply *)resp)->seq, 8);
    protobuf_c_message_free_unpacked(resp, NULL);
    /* The client can have the reply before the handler has noted the second try. */
    int64_t end = ls_now_us() + 5000000;
    pthread_mutex_lock(&g_seen.mu);
    while (g_seen.messages == 0 && ls_now_us() < end) {
        pthread_mutex_unlock(&g_seen.mu);
        ls_sleep_us(1000);
        pthread_mutex_lock(&g_seen.mu);
    }
    int again = g_seen.reply_again_rc;
    pthread_mutex_unlock(&g_seen.mu);
    /* Refused either way: EXISTS while the call is still open, CLOSED once on_done ran
     * (the first reply can complete the call before the second try). */
    cr_assert(again == LS_ERR_EXISTS || again == LS_ERR_CLOSED, "a second reply returned %d",
              again);
}

typedef struct {
    pthread_mutex_t mu;
    int n;
    bool ended;
    rpc_status_t st;
    char why[32];
} collect_t;

static void c_msg(rpc_stream_t *s, void *ud, const ProtobufCMessage *m)
{
    (void)s;
    (void)m;
    collect_t *c = ud;
    pthread_mutex_lock(&c->mu);
    c->n++;
    pthread_mutex_unlock(&c->mu);
}

static void c_status(rpc_stream_t *s, void *ud, const rpc_status_t *st, const rpc_md_t *t)
{
    (void)s;
    collect_t *c = ud;
    pthread_mutex_lock(&c->mu);
    c->st = *st;
    const char *why = rpc_md_get(t, "x-why", NULL);
    snprintf(c->why, sizeof(c->why), "%s", why ? why : "");
    c->ended = true;
    pthread_mutex_unlock(&c->mu);
}

static bool wait_ended(collect_t *c, int ms)
{
    for (int i = 0; i < ms; i++) {
        pthread_mutex_lock(&c->mu);
        bool e = c->ended;
        pthread_mutex_unlock(&c->mu);
        if (e)
            return true;
        ls_sleep_us(1000);
    }
    return false;
}

Test(server, finish_sends_queued_messages_first_then_refuses_more)
{
    collect_t c = {.mu = PTHREAD_MUTEX_INITIALIZER};
    rpc_stream_handler_t h = {c_msg, c_status};
    rpc_stream_t *s = rpc_stream_open(g_ch, "/llmserve.test.Echo/Stream", REP, &h, &c, NULL, 0);
    cr_assert_not_null(s);
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    req.repeat = 500;
    req.fail_code = GRPC_STATUS_ABORTED;
    cr_assert_eq(rpc_stream_send(s, &req.base), LS_OK);
    cr_assert(wait_ended(&c, 10000));
    cr_assert_eq(c.st.code, GRPC_STATUS_ABORTED);
    cr_assert_str_eq(c.st.details, "as asked");
    cr_assert_str_eq(c.why, "asked", "trailer sent with the status");
    cr_assert_eq(c.n, 500, "every message queued before finish arrives");
    pthread_mutex_lock(&g_seen.mu);
    cr_assert_eq(g_seen.finish_again_rc, LS_ERR_EXISTS);
    cr_assert_eq(g_seen.send_after_rc, LS_ERR_CLOSED);
    pthread_mutex_unlock(&g_seen.mu);
    cr_assert_eq(rpc_stream_send(s, &req.base), LS_ERR_CLOSED, "stream over");
    cr_assert(rpc_stream_ended(s));
    rpc_stream_release(s);
}

Test(server, drain_callback_refills_the_queue_past_its_bound_without_a_thread)
{
    /* 20000 replies from one request: five times the default write-queue bound (4096),
     * so sending them at once would cancel the call; refilled on drain they all arrive. */
    collect_t c = {.mu = PTHREAD_MUTEX_INITIALIZER};
    rpc_stream_handler_t h = {c_msg, c_status};
    rpc_stream_t *s = rpc_stream_open(g_ch, "/llmserve.test.Echo/Drain", REP, &h, &c, NULL, 0);
    cr_assert_not_null(s);
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    req.repeat = 20000;
    cr_assert_eq(rpc_stream_send(s, &req.base), LS_OK);
    cr_assert(wait_ended(&c, 30000));
    cr_assert_eq(c.st.code, GRPC_STATUS_OK, "%s", c.st.details);
    cr_assert_eq(c.n, 20000);
    /* The handler's fill reaches the window; every later fill came from a drain. */
    cr_assert_eq(g_drain.sent, 20000);
    cr_assert_gt(g_drain.drains, 20000 / DRAIN_WINDOW - 1, "%d drains", g_drain.drains);
    cr_assert_leq(g_drain.max_queued, DRAIN_WINDOW);
    rpc_stream_release(s);
}

/* A client producer driven by rpc_stream_on_drain (first fill from the test thread). */
typedef struct {
    pthread_mutex_t mu;
    int want, sent, drains;
    bool closed;
} up_job_t;

static void up_fill(rpc_stream_t *s, up_job_t *j)
{
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    req.text = "u";
    pthread_mutex_lock(&j->mu);
    for (size_t q = rpc_stream_write_queue_len(s); q < DRAIN_WINDOW && j->sent < j->want; q++) {
        req.seq = j->sent;
        if (rpc_stream_send(s, &req.base) != LS_OK)
            break;
        j->sent++;
    }
    if (j->sent == j->want && !j->closed) {
        rpc_stream_on_drain(s, 0, NULL, NULL);
        rpc_stream_close_send(s);
        j->closed = true;
    }
    pthread_mutex_unlock(&j->mu);
}

static void up_drain(rpc_stream_t *s, void *ud)
{
    up_job_t *j = ud;
    pthread_mutex_lock(&j->mu);
    j->drains++;
    pthread_mutex_unlock(&j->mu);
    up_fill(s, j);
}

Test(server, client_drain_callback_refills_past_the_send_bound)
{
    /* 20000 requests through a send queue bounded at 512: LS_ERR_FULL if sent at once. */
    collect_t c = {.mu = PTHREAD_MUTEX_INITIALIZER};
    rpc_stream_handler_t h = {c_msg, c_status};
    rpc_stream_t *s = rpc_stream_open(g_ch, "/llmserve.test.Echo/Stream", REP, &h, &c, NULL, 512);
    cr_assert_not_null(s);
    static up_job_t j = {.mu = PTHREAD_MUTEX_INITIALIZER, .want = 20000};
    rpc_stream_on_drain(s, DRAIN_LOW, up_drain, &j);
    up_fill(s, &j);
    cr_assert(wait_ended(&c, 30000));
    cr_assert_eq(c.st.code, GRPC_STATUS_OK, "%s", c.st.details);
    cr_assert_eq(c.n, 20000, "one echo per request");
    cr_assert(j.closed);
    cr_assert_gt(j.drains, 20000 / DRAIN_WINDOW - 1, "%d drains", j.drains);
    rpc_stream_release(s);
}

Test(server, callbacks_in_order_and_done_exactly_once)
{
    collect_t c = {.mu = PTHREAD_MUTEX_INITIALIZER};
    rpc_stream_handler_t h = {c_msg, c_status};
    rpc_stream_t *s = rpc_stream_open(g_ch, "/llmserve.test.Echo/Stream", REP, &h, &c, NULL, 0);
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rpc_stream_send(s, &req.base), LS_OK);
    cr_assert_eq(rpc_stream_close_send(s), LS_OK);
    cr_assert_eq(rpc_stream_close_send(s), LS_ERR_CLOSED);
    cr_assert(wait_ended(&c, 10000));
    cr_assert_eq(c.st.code, GRPC_STATUS_OK);
    cr_assert_eq(c.n, 3);
    rpc_stream_release(s);
    /* on_done may trail the client's status by a moment. */
    for (int i = 0; i < 2000; i++) {
        pthread_mutex_lock(&g_seen.mu);
        int dones = g_seen.dones;
        pthread_mutex_unlock(&g_seen.mu);
        if (dones == 1)
            break;
        ls_sleep_us(1000);
    }
    pthread_mutex_lock(&g_seen.mu);
    cr_assert_eq(g_seen.starts, 1);
    cr_assert_eq(g_seen.messages, 3);
    cr_assert_eq(g_seen.half_closes, 1);
    cr_assert_eq(g_seen.cancels, 0);
    cr_assert_eq(g_seen.dones, 1);
    pthread_mutex_unlock(&g_seen.mu);
}

Test(server, client_write_queue_is_bounded)
{
    collect_t c = {.mu = PTHREAD_MUTEX_INITIALIZER};
    rpc_stream_handler_t h = {c_msg, c_status};
    rpc_stream_t *s = rpc_stream_open(g_ch, "/llmserve.test.Echo/Stream", REP, &h, &c, NULL, 4);
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    int full = 0;
    for (int i = 0; i < 50; i++)
        if (rpc_stream_send(s, &req.base) == LS_ERR_FULL)
            full++;
    cr_assert_gt(full, 0, "a queue of 4 took 50 messages at once");
    cr_assert_leq(rpc_stream_write_queue_len(s), 4);
    rpc_stream_cancel(s);
    cr_assert(wait_ended(&c, 10000));
    cr_assert_eq(c.st.code, GRPC_STATUS_CANCELLED);
    rpc_stream_release(s);
}

static int health_of(rpc_channel_t *ch, const char *service)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_channel_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                      &grpc__health__v1__health_check_response__descriptor, NULL, &resp, &st);
    if (st.code != GRPC_STATUS_OK)
        return -st.code;
    int status = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
    protobuf_c_message_free_unpacked(resp, NULL);
    return status;
}

static int check_health(const char *service)
{
    return health_of(g_ch, service);
}

Test(server, health_status_set_at_run_time)
{
    cr_assert_eq(check_health("llmserve.test.Echo"), RPC_HEALTH_SERVING);
    cr_assert_eq(rpc_server_set_health(g_srv, "llmserve.test.Echo", RPC_HEALTH_NOT_SERVING), LS_OK);
    cr_assert_eq(check_health("llmserve.test.Echo"), RPC_HEALTH_NOT_SERVING);
    cr_assert_eq(check_health(""), RPC_HEALTH_SERVING, "overall status untouched");
    cr_assert_eq(rpc_server_set_health(g_srv, "model.loading", RPC_HEALTH_NOT_SERVING), LS_OK);
    cr_assert_eq(check_health("model.loading"), RPC_HEALTH_NOT_SERVING);
    cr_assert_eq(check_health("unknown"), -GRPC_STATUS_NOT_FOUND);
    rpc_server_shutdown(g_srv, 0);
    cr_assert(rpc_server_draining(g_srv));
    cr_assert_eq(rpc_server_set_health(g_srv, "", RPC_HEALTH_SERVING), LS_ERR_CLOSED);
    rpc_server_shutdown(g_srv, 0); /* a second shutdown returns at once */
}

/* ---- TLS ------------------------------------------------------------------------- */

static test_certs_t g_certs;

static void make_certs(void)
{
    cr_assert_eq(test_certs_make(&g_certs), 0, "openssl could not make test certificates");
}

static void remove_certs(void)
{
    test_certs_remove(&g_certs);
}

static int tls_call(int port, const rpc_channel_config_t *cfg)
{
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    req.text = "secret";
    ProtobufCMessage *resp = NULL;
    int code = test_unary_once(port, cfg, "/llmserve.test.Echo/Unary", &req.base, REP, &resp);
    if (resp) {
        cr_assert_str_eq(((Llmserve__Test__EchoReply *)resp)->text, "secret");
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return code;
}

TestSuite(tls, .init = make_certs, .fini = remove_certs, .timeout = 60);

Test(tls, server_tls_and_mutual_tls)
{
    const test_certs_t *c = &g_certs;
    int port = 0;
    rpc_tls_server_t tls = {c->server_cert, c->server_key, NULL};
    rpc_server_t *srv = make_server(&tls, &port);
    rpc_channel_config_t cfg = test_tls_config(c->ca, NULL, NULL);
    cr_assert_eq(tls_call(port, &cfg), GRPC_STATUS_OK, "TLS with the right CA");
    cr_assert_eq(tls_call(port, NULL), GRPC_STATUS_UNAVAILABLE, "plaintext to a TLS port");
    rpc_channel_config_t wrong = test_tls_config(c->rogue_ca, NULL, NULL);
    cr_assert_eq(tls_call(port, &wrong), GRPC_STATUS_UNAVAILABLE, "TLS with the wrong CA");
    cr_assert_eq(tls_call(port, &cfg), GRPC_STATUS_OK, "the server carries on");
    rpc_server_destroy(srv);

    rpc_tls_server_t mtls = {c->server_cert, c->server_key, c->ca};
    srv = make_server(&mtls, &port);
    cr_assert_neq(tls_call(port, &cfg), GRPC_STATUS_OK, "mutual TLS without a client cert");
    rpc_channel_config_t rogue = test_tls_config(c->ca, c->rogue_cert, c->rogue_key);
    cr_assert_neq(tls_call(port, &rogue), GRPC_STATUS_OK, "a client cert from another CA");
    rpc_channel_config_t good = test_tls_config(c->ca, c->client_cert, c->client_key);
    cr_assert_eq(tls_call(port, &good), GRPC_STATUS_OK, "mutual TLS with a client cert");
    rpc_channel_config_t plain = {0};
    rpc_channel_config_init(&plain);
    cr_assert_eq(tls_call(port, &plain), GRPC_STATUS_UNAVAILABLE, "plaintext to a mTLS port");
    cr_assert_eq(tls_call(port, &good), GRPC_STATUS_OK, "the server carries on");
    rpc_server_destroy(srv);
}

Test(tls, files_are_checked_when_the_port_is_bound)
{
    const test_certs_t *c = &g_certs;
    rpc_server_t *srv = rpc_server_create(NULL);
    rpc_tls_server_t mismatched = {c->server_cert, c->client_key, NULL};
    cr_assert_eq(rpc_server_listen(srv, "127.0.0.1:0", &mismatched, NULL), LS_ERR_INVALID,
                 "a key that is not the certificate's");
    rpc_tls_server_t swapped = {c->server_key, c->server_cert, NULL};
    cr_assert_eq(rpc_server_listen(srv, "127.0.0.1:0", &swapped, NULL), LS_ERR_INVALID,
                 "key and certificate swapped");
    rpc_tls_server_t bad_ca = {c->server_cert, c->server_key, c->server_key};
    cr_assert_eq(rpc_server_listen(srv, "127.0.0.1:0", &bad_ca, NULL), LS_ERR_INVALID,
                 "a client CA file without a certificate");
    rpc_tls_server_t no_key = {c->server_cert, NULL, NULL};
    cr_assert_eq(rpc_server_listen(srv, "127.0.0.1:0", &no_key, NULL), LS_ERR_INVALID);
    rpc_server_destroy(srv);
}

Test(tls, expired_certificate_fails_the_handshake_cleanly)
{
    const test_certs_t *c = &g_certs;
    int port = 0;
    rpc_tls_server_t tls = {c->expired_cert, c->expired_key, NULL};
    rpc_server_t *srv = make_server(&tls, &port);
    rpc_channel_config_t cfg = test_tls_config(c->ca, NULL, NULL);
    cr_assert_eq(tls_call(port, &cfg), GRPC_STATUS_UNAVAILABLE, "an expired server cert");
    cr_assert_eq(tls_call(port, &cfg), GRPC_STATUS_UNAVAILABLE, "still refused, no crash");
    rpc_server_destroy(srv);
}

static void copy_file(const char *from, const char *to)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

Test(tls, reload_switches_certificates_and_keeps_them_on_a_bad_file)
{
    const test_certs_t *c = &g_certs;
    char cert[192], key[192];
    test_tmpdir_file(&g_certs.tmp, "live.pem", cert, sizeof(cert));
    test_tmpdir_file(&g_certs.tmp, "live.key", key, sizeof(key));
    copy_file(c->expired_cert, cert);
    copy_file(c->expired_key, key);
    int port = 0;
    rpc_tls_server_t tls = {cert, key, NULL};
    rpc_server_t *srv = make_server(&tls, &port);
    rpc_channel_config_t cfg = test_tls_config(c->ca, NULL, NULL);
    cr_assert_eq(tls_call(port, &cfg), GRPC_STATUS_UNAVAILABLE, "expired before the reload");

    copy_file(c->server_cert, cert);
    copy_file(c->server_key, key);
    char err[256] = "";
    cr_assert_eq(rpc_server_reload_tls(srv, err, sizeof(err)), LS_OK, "%s", err);
    cr_assert_eq(tls_call(port, &cfg), GRPC_STATUS_OK, "the rotated certificate is used");

    copy_file(c->client_key, key); /* no longer the certificate's key */
    cr_assert_eq(rpc_server_reload_tls(srv, err, sizeof(err)), LS_ERR_INVALID);
    cr_assert_not_null(strstr(err, "does not belong"), "%s", err);
    cr_assert_eq(tls_call(port, &cfg), GRPC_STATUS_OK, "the last good certificate stays");
    rpc_server_destroy(srv);

    srv = make_server(NULL, &port);
    cr_assert_eq(rpc_server_reload_tls(srv, err, sizeof(err)), LS_OK, "no TLS: nothing to do");
    rpc_server_destroy(srv);
}

/* ---- authorization ------------------------------------------------------------------ */

static grpc_status_code key_auth(void *ud, const rpc_call_t *call, char *principal,
                                 size_t principal_len, char *why, size_t why_len)
{
    (void)ud;
    const char *v = rpc_md_get(rpc_call_metadata(call), "authorization", NULL);
    if (v && strcmp(v, "Bearer good-key") == 0) {
        snprintf(principal, principal_len, "tenant-a");
        return GRPC_STATUS_OK;
    }
    if (v && strcmp(v, "Bearer anyone") == 0)
        return GRPC_STATUS_OK;
    snprintf(why, why_len, "missing or unknown API key");
    return GRPC_STATUS_UNAUTHENTICATED;
}

static void h_whoami(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    (void)state;
    (void)msg;
    Llmserve__Test__EchoReply reply = LLMSERVE__TEST__ECHO_REPLY__INIT;
    reply.text = (char *)rpc_call_principal(call);
    rpc_call_reply(call, &reply.base);
}

static const rpc_handler_t whoami_h = {h_start, h_whoami, NULL, NULL, h_done};

/* A unary call with optional authorization; returns the status code and the reply text
 * (or the status details) in out. */
static int auth_call(rpc_channel_t *ch, const char *method, const char *auth, char *out,
                     size_t out_len)
{
    rpc_md_t md = RPC_MD_INIT;
    if (auth)
        rpc_md_add(&md, "authorization", auth);
    rpc_call_opts_t opts = {.timeout_us = 5000000, .metadata = &md};
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_channel_unary(ch, method, &req.base, REP, &opts, &resp, &st);
    snprintf(out, out_len, "%s", resp ? ((Llmserve__Test__EchoReply *)resp)->text : st.details);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    rpc_md_clear(&md);
    return st.code;
}

Test(auth, authorizer_guards_every_method_but_health, .timeout = 60)
{
    rpc_server_t *srv = rpc_server_create(NULL);
    int port = 0;
    cr_assert_eq(rpc_server_listen(srv, "127.0.0.1:0", NULL, &port), LS_OK);
    cr_assert_eq(
        rpc_server_add_method(srv, "/llmserve.test.Echo/Unary", RPC_UNARY, REQ, &whoami_h, NULL),
        LS_OK);
    cr_assert_eq(
        rpc_server_add_method(srv, "/llmserve.test.Echo/Stream", RPC_STREAM, REQ, &stream_h, NULL),
        LS_OK);
    rpc_server_set_auth(srv, key_auth, NULL);
    cr_assert_eq(rpc_server_start(srv), LS_OK);
    rpc_client_t *client = rpc_client_create(1);
    char target[64], out[256];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    rpc_channel_t *ch = rpc_channel_create(client, target, NULL);
    cr_assert(test_channel_ready(ch, 20000), "health answers without credentials");

    pthread_mutex_lock(&g_seen.mu);
    int starts = g_seen.starts;
    pthread_mutex_unlock(&g_seen.mu);
    cr_assert_eq(auth_call(ch, "/llmserve.test.Echo/Unary", NULL, out, sizeof(out)),
                 GRPC_STATUS_UNAUTHENTICATED);
    cr_assert_str_eq(out, "missing or unknown API key");
    cr_assert_eq(auth_call(ch, "/llmserve.test.Echo/Unary", "Bearer bad", out, sizeof(out)),
                 GRPC_STATUS_UNAUTHENTICATED);
    cr_assert_eq(auth_call(ch, "/llmserve.test.Nope/X", NULL, out, sizeof(out)),
                 GRPC_STATUS_UNAUTHENTICATED, "unknown methods say nothing to strangers");
    cr_assert_eq(auth_call(ch, "/llmserve.test.Nope/X", "Bearer anyone", out, sizeof(out)),
                 GRPC_STATUS_UNIMPLEMENTED);
    pthread_mutex_lock(&g_seen.mu);
    cr_assert_eq(g_seen.starts, starts, "a refused call never reaches its handler");
    pthread_mutex_unlock(&g_seen.mu);

    cr_assert_eq(auth_call(ch, "/llmserve.test.Echo/Unary", "Bearer good-key", out, sizeof(out)),
                 GRPC_STATUS_OK);
    cr_assert_str_eq(out, "tenant-a", "the principal reaches the handler");
    cr_assert_eq(auth_call(ch, "/llmserve.test.Echo/Unary", "Bearer anyone", out, sizeof(out)),
                 GRPC_STATUS_OK);
    cr_assert_str_eq(out, "", "no principal");

    /* A stream refused before its first message: the client hears the status. */
    echo_sink_t k;
    echo_sink_init(&k);
    cr_assert_eq(echo_sink_open(&k, ch, NULL), 0);
    cr_assert(echo_sink_wait_end(&k, 5000));
    cr_assert_eq(k.status.code, GRPC_STATUS_UNAUTHENTICATED);
    echo_sink_destroy(&k);

    rpc_channel_destroy(ch);
    rpc_client_destroy(client);
    rpc_server_destroy(srv);
}

Test(health, a_server_that_starts_not_serving_and_turns_serving, .timeout = 60)
{
    rpc_server_config_t cfg;
    rpc_server_config_init(&cfg);
    cfg.initial_health = RPC_HEALTH_NOT_SERVING;
    rpc_server_t *srv = rpc_server_create(&cfg);
    int port = 0;
    cr_assert_eq(rpc_server_listen(srv, "127.0.0.1:0", NULL, &port), LS_OK);
    cr_assert_eq(
        rpc_server_add_method(srv, "/llmserve.test.Echo/Unary", RPC_UNARY, REQ, &unary_h, NULL),
        LS_OK);
    cr_assert_eq(rpc_server_start(srv), LS_OK);
    rpc_client_t *client = rpc_client_create(1);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    rpc_channel_t *ch = rpc_channel_create(client, target, NULL);
    cr_assert(test_channel_ready(ch, 20000));
    cr_assert_eq(health_of(ch, ""), RPC_HEALTH_NOT_SERVING);
    cr_assert_eq(health_of(ch, "llmserve.test.Echo"), RPC_HEALTH_NOT_SERVING);
    cr_assert_eq(rpc_server_set_health_all(srv, RPC_HEALTH_SERVING), LS_OK);
    cr_assert_eq(health_of(ch, ""), RPC_HEALTH_SERVING);
    cr_assert_eq(health_of(ch, "llmserve.test.Echo"), RPC_HEALTH_SERVING);
    cr_assert_eq(rpc_server_set_health_all(srv, RPC_HEALTH_NOT_SERVING), LS_OK);
    cr_assert_eq(health_of(ch, "llmserve.test.Echo"), RPC_HEALTH_NOT_SERVING);
    rpc_channel_destroy(ch);
    rpc_client_destroy(client);
    rpc_server_shutdown(srv, 0);
    cr_assert_eq(rpc_server_set_health_all(srv, RPC_HEALTH_SERVING), LS_ERR_CLOSED);
    rpc_server_destroy(srv);
}

/* ---- the call observer --------------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    int n;
    char seen[32][96]; /* "method code" */
} observed_t;

static observed_t g_observed = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void observe_call(void *ud, const char *method, grpc_status_code code)
{
    observed_t *o = ud;
    pthread_mutex_lock(&o->mu);
    if (o->n < 32)
        snprintf(o->seen[o->n++], sizeof(o->seen[0]), "%s %s", method, rpc_status_name(code));
    pthread_mutex_unlock(&o->mu);
}

/* Waits up to 5 s for "method code" among the observed calls; returns how often it was seen. */
static int observed(const char *what)
{
    int count = 0;
    for (int i = 0; i < 500 && count == 0; i++) {
        pthread_mutex_lock(&g_observed.mu);
        for (int k = 0; k < g_observed.n; k++)
            count += strcmp(g_observed.seen[k], what) == 0;
        pthread_mutex_unlock(&g_observed.mu);
        if (count == 0)
            ls_sleep_us(10000);
    }
    return count;
}

static void stream_until_end(rpc_channel_t *ch, const rpc_call_opts_t *opts, int fail_code,
                             bool cancel)
{
    collect_t c = {.mu = PTHREAD_MUTEX_INITIALIZER};
    rpc_stream_handler_t h = {c_msg, c_status};
    rpc_stream_t *s = rpc_stream_open(ch, "/llmserve.test.Echo/Stream", REP, &h, &c, opts, 0);
    cr_assert_not_null(s);
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    req.fail_code = fail_code;
    cr_assert_eq(rpc_stream_send(s, &req.base), LS_OK);
    if (cancel) {
        for (int i = 0; i < 5000; i++) { /* the call is under way */
            pthread_mutex_lock(&c.mu);
            int n = c.n;
            pthread_mutex_unlock(&c.mu);
            if (n)
                break;
            ls_sleep_us(1000);
        }
        rpc_stream_cancel(s);
    }
    cr_assert(wait_ended(&c, 10000));
    rpc_stream_release(s);
}

Test(observer, hears_every_call_with_method_and_final_code, .timeout = 60)
{
    rpc_server_t *srv = rpc_server_create(NULL);
    int port = 0;
    cr_assert_eq(rpc_server_listen(srv, "127.0.0.1:0", NULL, &port), LS_OK);
    cr_assert_eq(
        rpc_server_add_method(srv, "/llmserve.test.Echo/Unary", RPC_UNARY, REQ, &unary_h, NULL),
        LS_OK);
    cr_assert_eq(
        rpc_server_add_method(srv, "/llmserve.test.Echo/Stream", RPC_STREAM, REQ, &stream_h, NULL),
        LS_OK);
    rpc_server_set_call_observer(srv, observe_call, &g_observed);
    cr_assert_eq(rpc_server_start(srv), LS_OK);
    rpc_client_t *client = rpc_client_create(1);
    rpc_channel_t *ch = test_channel_to(client, port, NULL);
    cr_assert(test_channel_ready(ch, 20000));

    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    cr_assert_eq(
        rpc_channel_unary(ch, "/llmserve.test.Echo/Unary", &req.base, REP, NULL, &resp, &st),
        LS_OK);
    protobuf_c_message_free_unpacked(resp, NULL);
    rpc_channel_unary(ch, "/llmserve.test.Echo/Unary", &req.base, REP, NULL, &resp, &st);
    protobuf_c_message_free_unpacked(resp, NULL);
    rpc_channel_unary_raw(ch, "/llmserve.test.Echo/Unary", "\xff\xff\xff", 3, REP, NULL, &resp,
                          &st);
    cr_assert_eq(st.code, GRPC_STATUS_INVALID_ARGUMENT);
    rpc_channel_unary(ch, "/llmserve.test.Nobody/Home", &req.base, REP, NULL, &resp, &st);
    cr_assert_eq(st.code, GRPC_STATUS_UNIMPLEMENTED);
    stream_until_end(ch, NULL, GRPC_STATUS_ABORTED, false);
    stream_until_end(ch, NULL, 0, true);
    rpc_call_opts_t short_deadline = {.timeout_us = 300000};
    stream_until_end(ch, &short_deadline, 0, false);
    /* The server hears a cancelled or expired call after the client does: wait for it. */
    int64_t end = ls_now_us() + 10000000;
    pthread_mutex_lock(&g_observed.mu);
    while (g_observed.n < 8 && ls_now_us() < end) {
        pthread_mutex_unlock(&g_observed.mu);
        ls_sleep_us(2000);
        pthread_mutex_lock(&g_observed.mu);
    }
    pthread_mutex_unlock(&g_observed.mu);

    cr_expect_eq(observed("/grpc.health.v1.Health/Check OK"), 1);
    cr_expect_eq(observed("/llmserve.test.Echo/Unary OK"), 2);
    cr_expect_eq(observed("/llmserve.test.Echo/Unary INVALID_ARGUMENT"), 1);
    cr_expect_eq(observed("(unknown) UNIMPLEMENTED"), 1, "a client cannot invent names");
    cr_expect_eq(observed("/llmserve.test.Echo/Stream ABORTED"), 1);
    cr_expect_eq(observed("/llmserve.test.Echo/Stream CANCELLED"), 1);
    cr_expect_eq(observed("/llmserve.test.Echo/Stream DEADLINE_EXCEEDED"), 1);
    pthread_mutex_lock(&g_observed.mu);
    cr_expect_eq(g_observed.n, 8, "one report per call");
    pthread_mutex_unlock(&g_observed.mu);

    rpc_channel_destroy(ch);
    rpc_client_destroy(client);
    rpc_server_destroy(srv);
}

Test(observer, status_names)
{
    cr_assert_str_eq(rpc_status_name(GRPC_STATUS_OK), "OK");
    cr_assert_str_eq(rpc_status_name(GRPC_STATUS_INVALID_ARGUMENT), "INVALID_ARGUMENT");
    cr_assert_str_eq(rpc_status_name(GRPC_STATUS_UNAUTHENTICATED), "UNAUTHENTICATED");
    cr_assert_str_eq(rpc_status_name((grpc_status_code)99), "UNKNOWN");
    cr_assert_str_eq(rpc_status_name((grpc_status_code)-1), "UNKNOWN");
}
