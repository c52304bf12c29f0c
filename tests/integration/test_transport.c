/*
 * test_transport.c - libs/rpc end to end: the real llmserve-test-echo process on
 * loopback, driven by the library's client.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "echo.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc/client.h"
#include "support/channel.h"
#include "support/echo_sink.h"
#include "support/health_watch.h"
#include "support/proc.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static test_proc_t g_server;
static rpc_client_t *g_client;
static rpc_channel_t *g_ch;

/* Starts the echo server with extra flags (NULL-terminated) and a channel to it. */
static void start_server_with(const char *const *extra)
{
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)test_env_path("LLMSERVE_ECHO_SERVER");
    for (; extra && *extra && n < 30; extra++)
        argv[n++] = (char *)*extra;
    argv[n] = NULL;
    cr_assert_eq(test_proc_start(&g_server, argv, 15000), 0, "echo server did not start");
    g_client = rpc_client_create(1);
    cr_assert_not_null(g_client);
    g_ch = test_channel_to(g_client, g_server.port, NULL);
    cr_assert_not_null(g_ch);
    /* Seen under the sanitizers without it: "connection attempt timed out before
     * receiving SETTINGS frame" on a test's first, fail-fast, call. */
    cr_assert(test_channel_ready(g_ch, 20000), "echo server did not answer");
}

static void start_server(void)
{
    start_server_with(NULL);
}

static void stop_all(void)
{
    rpc_channel_destroy(g_ch);
    g_ch = NULL;
    rpc_client_destroy(g_client);
    g_client = NULL;
    if (g_server.pid > 0) {
        int status = test_proc_stop(&g_server, SIGTERM, 20000);
        cr_expect_eq(status, 0, "echo server exit status %d (leak or crash at shutdown?)",
                     status);
    }
}

static Llmserve__Test__EchoReply *unary(rpc_channel_t *ch, const Llmserve__Test__EchoRequest *req,
                                       const rpc_call_opts_t *opts, rpc_status_t *st)
{
    ProtobufCMessage *resp = NULL;
    int rc = rpc_channel_unary(ch, "/llmserve.test.Echo/Unary", &req->base,
                               &llmserve__test__echo_reply__descriptor, opts, &resp, st);
    cr_assert_eq(rc, LS_OK, "unary call could not be made: %s", ls_strerror(rc));
    return (Llmserve__Test__EchoReply *)resp;
}

static void assert_healthy(void)
{
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    req.text = "still there?";
    rpc_status_t st;
    Llmserve__Test__EchoReply *r = unary(g_ch, &req, NULL, &st);
    cr_assert_eq(st.code, GRPC_STATUS_OK, "server not healthy: %d %s", st.code, st.details);
    cr_assert_str_eq(r->text, "still there?");
    llmserve__test__echo_reply__free_unpacked(r, NULL);
}

TestSuite(transport, .init = start_server, .fini = stop_all, .timeout = 120);

Test(transport, unary_echo_with_metadata_and_trailers)
{
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    req.text = "hello";
    req.seq = 42;
    rpc_md_t md = RPC_MD_INIT;
    rpc_md_add(&md, "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    rpc_md_add(&md, "authorization", "Bearer secret");
    rpc_md_t trailers = RPC_MD_INIT;
    rpc_call_opts_t opts = {.metadata = &md, .trailers_out = &trailers};
    rpc_status_t st;
    Llmserve__Test__EchoReply *r = unary(g_ch, &req, &opts, &st);
    cr_assert_eq(st.code, GRPC_STATUS_OK, "%s", st.details);
    cr_assert_str_eq(r->text, "hello");
    cr_assert_eq(r->seq, 42);
    cr_assert_eq(r->remaining_us, -1, "no deadline was set, server saw %lld",
                 (long long)r->remaining_us);
    cr_assert_str_eq(r->metadata, "traceparent=00-0af7651916cd43dd8448eb211c80319c-"
                                  "b7ad6b7169203331-01;authorization=Bearer secret;");
    cr_assert_str_eq(rpc_md_get(&trailers, "x-echo-trailer", NULL), "done");
    llmserve__test__echo_reply__free_unpacked(r, NULL);
    rpc_md_clear(&md);
    rpc_md_clear(&trailers);
}

Test(transport, ten_thousand_messages_each_way_in_order)
{
    echo_sink_t k;
    echo_sink_init(&k);
    k.check_seq = true;
    cr_assert_eq(echo_sink_open(&k, g_ch, NULL), 0);
    const int total = 10000, window = 256;
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    req.text = "m";
    for (int i = 0; i < total; i++) {
        /* An application-level window keeps the client from flooding its own queue. */
        if (i >= window)
            echo_sink_wait_replies(&k, i - window + 1, 10000);
        req.seq = (uint64_t)i;
        cr_assert_eq(echo_sink_send(&k, &req), LS_OK, "send %d failed", i);
    }
    cr_assert_eq(rpc_stream_close_send(k.stream), LS_OK);
    cr_assert(echo_sink_wait_end(&k, 30000), "stream did not end");
    cr_assert_eq(k.status.code, GRPC_STATUS_OK, "%d %s", k.status.code, k.status.details);
    cr_assert_eq(k.received, total);
    cr_assert(k.order_ok, "replies out of order");
    cr_assert_eq(k.expect_seq, (uint64_t)total);
    cr_assert_str_eq(k.trailer, "done");
    echo_sink_destroy(&k);
}

Test(transport, hundred_concurrent_streams)
{
    enum { N = 100, PER = 20 };
    echo_sink_t *sinks = calloc(N, sizeof(*sinks));
    for (int i = 0; i < N; i++) {
        echo_sink_init(&sinks[i]);
        sinks[i].check_seq = true;
        cr_assert_eq(echo_sink_open(&sinks[i], g_ch, NULL), 0);
    }
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    for (int m = 0; m < PER; m++) {
        for (int i = 0; i < N; i++) {
            char text[32];
            snprintf(text, sizeof(text), "s%d", i);
            req.text = text;
            req.seq = (uint64_t)m;
            cr_assert_eq(echo_sink_send(&sinks[i], &req), LS_OK);
        }
    }
    for (int i = 0; i < N; i++)
        rpc_stream_close_send(sinks[i].stream);
    for (int i = 0; i < N; i++) {
        cr_assert(echo_sink_wait_end(&sinks[i], 30000), "stream %d did not end", i);
        cr_assert_eq(sinks[i].status.code, GRPC_STATUS_OK, "stream %d: %s", i,
                     sinks[i].status.details);
        cr_assert_eq(sinks[i].received, PER, "stream %d got %d", i, sinks[i].received);
        cr_assert(sinks[i].order_ok, "stream %d out of order", i);
        echo_sink_destroy(&sinks[i]);
    }
    free(sinks);
}

Test(transport, client_cancel_mid_stream)
{
    echo_sink_t k;
    echo_sink_init(&k);
    k.cancel_after = 10;
    cr_assert_eq(echo_sink_open(&k, g_ch, NULL), 0);
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    req.repeat = 100000;
    req.interval_us = 1000;
    cr_assert_eq(echo_sink_send(&k, &req), LS_OK);
    cr_assert(echo_sink_wait_end(&k, 10000), "cancelled stream did not end");
    cr_assert_eq(k.status.code, GRPC_STATUS_CANCELLED, "%d %s", k.status.code, k.status.details);
    cr_assert_lt(k.received, 1000, "stream kept flowing after cancel: %d", k.received);
    cr_assert_eq(echo_sink_send(&k, &req), LS_ERR_CLOSED);
    assert_healthy();
    echo_sink_destroy(&k);
}

Test(transport, deadline_exceeded_and_remaining_time_visible)
{
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    req.sleep_ms = 2000;
    rpc_call_opts_t opts = {.timeout_us = 150000};
    rpc_status_t st;
    int64_t t0 = ls_now_us();
    Llmserve__Test__EchoReply *r = unary(g_ch, &req, &opts, &st);
    int64_t took = ls_now_us() - t0;
    cr_assert_null(r);
    cr_assert_eq(st.code, GRPC_STATUS_DEADLINE_EXCEEDED, "%d %s", st.code, st.details);
    cr_assert_lt(took, 1500000, "deadline of 150 ms took %lld us", (long long)took);

    req.sleep_ms = 0;
    opts.timeout_us = 3000000;
    r = unary(g_ch, &req, &opts, &st);
    cr_assert_eq(st.code, GRPC_STATUS_OK);
    cr_assert_gt(r->remaining_us, 0);
    /* grpc-timeout on the wire keeps a few significant digits and rounds up, so the
     * server may see slightly more than was sent: allow 1 % plus 20 ms, no more. */
    cr_assert_leq(r->remaining_us, 3000000 + 30000 + 20000, "server saw %lld us left",
                  (long long)r->remaining_us);
    cr_assert_gt(r->remaining_us, 2000000, "server saw %lld us left", (long long)r->remaining_us);
    llmserve__test__echo_reply__free_unpacked(r, NULL);

    /* A stream's deadline ends it too. */
    echo_sink_t k;
    echo_sink_init(&k);
    rpc_call_opts_t sopts = {.timeout_us = 300000};
    cr_assert_eq(echo_sink_open(&k, g_ch, &sopts), 0);
    req.repeat = 100000;
    req.interval_us = 1000;
    cr_assert_eq(echo_sink_send(&k, &req), LS_OK);
    cr_assert(echo_sink_wait_end(&k, 5000));
    cr_assert_eq(k.status.code, GRPC_STATUS_DEADLINE_EXCEEDED, "%d %s", k.status.code,
                 k.status.details);
    cr_assert_gt(k.received, 0);
    echo_sink_destroy(&k);
    assert_healthy();
}

Test(transport, undecodable_bytes_are_invalid_argument_and_connection_survives)
{
    static const unsigned char junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12};
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    int rc = rpc_channel_unary_raw(g_ch, "/llmserve.test.Echo/Unary", junk, sizeof(junk),
                                   &llmserve__test__echo_reply__descriptor, NULL, &resp, &st);
    cr_assert_eq(rc, LS_OK);
    cr_assert_null(resp);
    cr_assert_eq(st.code, GRPC_STATUS_INVALID_ARGUMENT, "%d %s", st.code, st.details);
    cr_assert(strstr(st.details, "llmserve.test.EchoRequest"), "details: %s", st.details);

    /* On a stream: good message, then junk; the good one is answered first. */
    echo_sink_t k;
    echo_sink_init(&k);
    cr_assert_eq(echo_sink_open(&k, g_ch, NULL), 0);
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    req.text = "ok";
    cr_assert_eq(echo_sink_send(&k, &req), LS_OK);
    cr_assert_eq(rpc_stream_send_raw(k.stream, junk, sizeof(junk)), LS_OK);
    cr_assert(echo_sink_wait_end(&k, 10000));
    cr_assert_eq(k.status.code, GRPC_STATUS_INVALID_ARGUMENT, "%d %s", k.status.code,
                 k.status.details);
    cr_assert_eq(k.received, 1);
    echo_sink_destroy(&k);
    assert_healthy();
}

Test(transport, unknown_method_is_unimplemented)
{
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_call_opts_t opts = {.timeout_us = 5000000};
    int rc = rpc_channel_unary(g_ch, "/llmserve.test.Echo/Nope", &req.base,
                               &llmserve__test__echo_reply__descriptor, &opts, &resp, &st);
    cr_assert_eq(rc, LS_OK);
    cr_assert_eq(st.code, GRPC_STATUS_UNIMPLEMENTED, "%d %s", st.code, st.details);
    cr_assert(strstr(st.details, "/llmserve.test.Echo/Nope"), "details: %s", st.details);
}

Test(transport, requested_failure_status_reaches_client)
{
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    req.fail_code = GRPC_STATUS_FAILED_PRECONDITION;
    rpc_status_t st;
    Llmserve__Test__EchoReply *r = unary(g_ch, &req, NULL, &st);
    cr_assert_null(r);
    cr_assert_eq(st.code, GRPC_STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(st.details, "failure requested");
}

/* ---- health --------------------------------------------------------------------- */

static int health_check(const char *service, int *status_out)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_call_opts_t opts = {.timeout_us = 5000000};
    cr_assert_eq(rpc_channel_unary(g_ch, "/grpc.health.v1.Health/Check", &req.base,
                                   &grpc__health__v1__health_check_response__descriptor, &opts,
                                   &resp, &st),
                 LS_OK);
    if (resp) {
        *status_out = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return st.code;
}

Test(transport, health_check_and_watch_through_shutdown)
{
    int status = -1;
    cr_assert_eq(health_check("", &status), GRPC_STATUS_OK);
    cr_assert_eq(status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    cr_assert_eq(health_check("llmserve.test.Echo", &status), GRPC_STATUS_OK);
    cr_assert_eq(status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    cr_assert_eq(health_check("no.such.Service", &status), GRPC_STATUS_NOT_FOUND);

    test_health_watch_t w;
    test_health_watch_open(&w, g_ch, "");
    cr_assert(test_health_watch_wait(&w, 1, false, 5000), "no first Watch message");
    cr_assert_eq(w.statuses[0], GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);

    /* A watch of an unknown service says so and stays open. */
    test_health_watch_t u;
    test_health_watch_open(&u, g_ch, "no.such.Service");
    cr_assert(test_health_watch_wait(&u, 1, false, 5000));
    cr_assert_eq(u.statuses[0],
                 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN);

    /* Shutdown flips the status, then ends the watch: it does not hold up the server. */
    int64_t t0 = ls_now_us();
    kill(g_server.pid, SIGTERM);
    cr_assert(test_health_watch_wait(&w, 2, true, 10000), "watch saw %d messages, ended=%d", w.n,
              w.ended);
    cr_assert_eq(w.statuses[1],
                 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    cr_assert_neq(w.st.code, GRPC_STATUS_OK);
    cr_assert(test_health_watch_wait(&u, 1, true, 10000));
    int exit_status = test_proc_stop(&g_server, SIGTERM, 10000);
    cr_assert_eq(exit_status, 0);
    /* The default grace is 2 s; with only watches open the stop must not wait for it. */
    cr_assert_lt(ls_now_us() - t0, 1800000, "shutdown waited %lld us for watches",
                 (long long)(ls_now_us() - t0));
    test_health_watch_close(&w);
    test_health_watch_close(&u);
}

/* ---- back-pressure ---------------------------------------------------------------- */

TestSuite(slow, .timeout = 120);

static const char *const small_queue[] = {"--max-write-queue", "64", NULL};

Test(slow, slow_reader_hits_write_queue_bound, .init = NULL, .fini = stop_all)
{
    start_server_with(small_queue);
    /* A reader that keeps up gets everything, paced at 2k messages/s. */
    echo_sink_t fast;
    echo_sink_init(&fast);
    cr_assert_eq(echo_sink_open(&fast, g_ch, NULL), 0);
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    req.repeat = 2000;
    req.interval_us = 500;
    req.payload_bytes = 1024;
    cr_assert_eq(echo_sink_send(&fast, &req), LS_OK);
    cr_assert_eq(echo_sink_wait_replies(&fast, 2000, 30000), 2000);
    rpc_stream_close_send(fast.stream);
    cr_assert(echo_sink_wait_end(&fast, 10000));
    cr_assert_eq(fast.status.code, GRPC_STATUS_OK, "%d %s", fast.status.code, fast.status.details);
    echo_sink_destroy(&fast);

    /* A reader taking 20 ms a message falls behind until the server gives up on it. */
    echo_sink_t slow;
    echo_sink_init(&slow);
    slow.read_delay_us = 20000;
    cr_assert_eq(echo_sink_open(&slow, g_ch, NULL), 0);
    req.repeat = 1000000;
    req.interval_us = 100;
    req.payload_bytes = 16384;
    cr_assert_eq(echo_sink_send(&slow, &req), LS_OK);
    cr_assert(echo_sink_wait_end(&slow, 60000), "slow reader never hit the bound");
    cr_assert_eq(slow.status.code, GRPC_STATUS_RESOURCE_EXHAUSTED, "%d %s", slow.status.code,
                 slow.status.details);
    cr_assert_lt(slow.received, 1000000);
    echo_sink_destroy(&slow);
    assert_healthy();
}

/* ---- shutdown ------------------------------------------------------------------- */

static const char *const short_grace[] = {"--grace-ms", "800", NULL};

typedef struct {
    Llmserve__Test__EchoReply *reply;
    rpc_status_t st;
} unary_result_t;

static void *slow_unary(void *arg)
{
    unary_result_t *res = arg;
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    req.text = "slow";
    req.sleep_ms = 300;
    ProtobufCMessage *resp = NULL;
    rpc_channel_unary(g_ch, "/llmserve.test.Echo/Unary", &req.base,
                      &llmserve__test__echo_reply__descriptor, NULL, &resp, &res->st);
    res->reply = (Llmserve__Test__EchoReply *)resp;
    return NULL;
}

Test(slow, shutdown_with_calls_in_flight, .fini = stop_all)
{
    start_server_with(short_grace);
    /* An endless stream, which only the grace period can end. */
    echo_sink_t k;
    echo_sink_init(&k);
    cr_assert_eq(echo_sink_open(&k, g_ch, NULL), 0);
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    req.repeat = 1000000;
    req.interval_us = 2000;
    cr_assert_eq(echo_sink_send(&k, &req), LS_OK);
    cr_assert_geq(echo_sink_wait_replies(&k, 5, 5000), 5);

    /* A unary call that finishes inside the grace period. */
    unary_result_t res = {0};
    pthread_t t;
    pthread_create(&t, NULL, slow_unary, &res);
    ls_sleep_us(100000);

    int64_t t0 = ls_now_us();
    kill(g_server.pid, SIGTERM);
    pthread_join(t, NULL);
    cr_assert_eq(res.st.code, GRPC_STATUS_OK, "in-flight unary: %d %s", res.st.code,
                 res.st.details);
    cr_assert_not_null(res.reply);
    cr_assert_str_eq(res.reply->text, "slow");
    llmserve__test__echo_reply__free_unpacked(res.reply, NULL);

    cr_assert(echo_sink_wait_end(&k, 10000), "stream not ended by shutdown");
    int64_t ended_after = ls_now_us() - t0;
    cr_assert_neq(k.status.code, GRPC_STATUS_OK);
    cr_assert_geq(ended_after, 600000, "stream cut before the grace period: %lld us",
                  (long long)ended_after);
    cr_assert_lt(ended_after, 5000000, "stream outlived the grace period: %lld us",
                 (long long)ended_after);
    int status = test_proc_stop(&g_server, SIGTERM, 10000);
    cr_assert_eq(status, 0, "server exit status %d", status);

    /* New calls are refused once the server is gone. */
    rpc_status_t st;
    rpc_call_opts_t opts = {.timeout_us = 2000000};
    Llmserve__Test__EchoReply *r = unary(g_ch, &req, &opts, &st);
    cr_assert_null(r);
    cr_assert_eq(st.code, GRPC_STATUS_UNAVAILABLE, "%d %s", st.code, st.details);
    echo_sink_destroy(&k);
}
