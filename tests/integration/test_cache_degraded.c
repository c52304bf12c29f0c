/*
 * test_cache_degraded.c - llmserve-cache when memcached dies, stalls, comes back, or is
 * one of several servers.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "grpc/health/v1/health.pb-c.h"
#include "support/channel.h"
#include "test_cache_support.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static test_memcached_t g_mc, g_mc2;
static tc_conn_t g_c;

static void start(const char *conf, const char *const *extra)
{
    tc_connect(&g_c, conf, extra);
}

static void stop_all(void)
{
    tc_disconnect(&g_c);
    test_memcached_stop(&g_mc, SIGKILL);
    test_memcached_stop(&g_mc2, SIGKILL);
}

static bool degraded(void)
{
    Llmserve__V1__CacheResponse *r = tc_do_stats(&g_c.s);
    bool d = r->stats->degraded;
    llmserve__v1__cache_response__free_unpacked(r, NULL);
    return d;
}

static int health(void)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "";
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_call_opts_t opts = {.timeout_us = 5000000, .wait_for_ready = true};
    cr_assert_eq(rpc_channel_unary(g_c.ch, "/grpc.health.v1.Health/Check", &req.base,
                                   &grpc__health__v1__health_check_response__descriptor, &opts,
                                   &resp, &st),
                 LS_OK);
    cr_assert_eq(st.code, GRPC_STATUS_OK);
    int s = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
    protobuf_c_message_free_unpacked(resp, NULL);
    return s;
}

/* Looks up prompt, asserts a lookup answer (never an error) within max_us. */
static bool lookup_hit(const char *prompt, int64_t max_us, Llmserve__V1__CacheSource *source)
{
    int64_t t0 = ls_now_us();
    Llmserve__V1__CacheResponse *r = tc_do_lookup(&g_c.s, "", "small", prompt, false);
    int64_t took = ls_now_us() - t0;
    cr_assert_leq(took, max_us, "lookup took %lld us", (long long)took);
    bool hit = r->lookup->hit;
    if (source)
        *source = r->lookup->source;
    llmserve__v1__cache_response__free_unpacked(r, NULL);
    return hit;
}

static bool wait_for(bool (*cond)(void), bool want, int timeout_ms)
{
    int64_t end = ls_now_us() + (int64_t)timeout_ms * 1000;
    while (ls_now_us() < end) {
        if (cond() == want)
            return true;
        ls_sleep_us(50000);
    }
    return false;
}

TestSuite(degraded, .fini = stop_all, .timeout = 90);

static const char *const k_no_l1[] = {"--l1-bytes", "0", "--probe-interval-ms", "200", NULL};

Test(degraded, memcached_killed_then_restarted)
{
    cr_assert_eq(test_memcached_start(&g_mc, 0), 0);
    char conf[64];
    start(test_memcached_config(&g_mc, conf, sizeof(conf)), k_no_l1);
    tc_do_store(&g_c.s, "", "small", "before", "stored before", false);
    Llmserve__V1__CacheSource src;
    cr_assert(lookup_hit("before", 1000000, &src));
    cr_assert_eq(src, LLMSERVE__V1__CACHE_SOURCE__CACHE_SOURCE_MEMCACHED);

    test_memcached_stop(&g_mc, SIGKILL);
    /* Misses, never errors, each well inside a second. */
    for (int i = 0; i < 10; i++)
        cr_assert_not(lookup_hit("before", 500000, NULL));
    cr_assert(degraded(), "stats do not say degraded");
    cr_assert_eq(health(), GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    /* With no L1 and no memcached a store is dropped, with the reason. */
    tc_req_t r;
    Llmserve__V1__CacheResponse *resp =
        tc_call(&g_c.s, tc_store(&r, "", "small", "during", "stored during", false));
    cr_assert_not_null(resp);
    cr_assert_eq(resp->kind_case, LLMSERVE__V1__CACHE_RESPONSE__KIND_STORE);
    cr_assert_not(resp->store->stored);
    cr_assert(strstr(resp->store->reason, "memcached unavailable"), "%s", resp->store->reason);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);

    /* memcached returns (empty, as after a crash): the cache recovers by itself. */
    cr_assert_eq(test_memcached_start(&g_mc, g_mc.port), 0, "memcached did not restart");
    cr_assert(wait_for(degraded, false, 10000), "still degraded after memcached returned");
    cr_assert_not(lookup_hit("before", 1000000, NULL), "memcached lost everything on restart");
    tc_do_store(&g_c.s, "", "small", "after", "stored after", false);
    cr_assert(lookup_hit("after", 1000000, &src));
    cr_assert_eq(src, LLMSERVE__V1__CACHE_SOURCE__CACHE_SOURCE_MEMCACHED);
    Llmserve__V1__CacheResponse *st = tc_do_stats(&g_c.s);
    cr_assert_gt(st->stats->errors, 0, "memcached failures are counted");
    llmserve__v1__cache_response__free_unpacked(st, NULL);
}

static const char *const k_with_l1[] = {"--probe-interval-ms", "200", NULL};

Test(degraded, l1_keeps_serving_while_memcached_is_down)
{
    cr_assert_eq(test_memcached_start(&g_mc, 0), 0);
    char conf[64];
    start(test_memcached_config(&g_mc, conf, sizeof(conf)), k_with_l1);
    tc_do_store(&g_c.s, "", "small", "hot", "hot answer", false);
    test_memcached_stop(&g_mc, SIGKILL);
    Llmserve__V1__CacheSource src;
    for (int i = 0; i < 5; i++) {
        cr_assert(lookup_hit("hot", 500000, &src));
        cr_assert_eq(src, LLMSERVE__V1__CACHE_SOURCE__CACHE_SOURCE_L1);
        cr_assert_not(lookup_hit("cold", 500000, NULL));
    }
    tc_req_t r;
    Llmserve__V1__CacheResponse *resp =
        tc_call(&g_c.s, tc_store(&r, "", "small", "new", "kept in L1", false));
    cr_assert(resp->store->stored);
    cr_assert_str_eq(resp->store->reason, "memcached unavailable: L1 only");
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    cr_assert(lookup_hit("new", 500000, NULL));
    /* Invalidating a key memcached may still hold is reported, not hidden. */
    resp = tc_call(&g_c.s, tc_invalidate_key(&r, "", "small", "hot"));
    cr_assert_eq(resp->kind_case, LLMSERVE__V1__CACHE_RESPONSE__KIND_ERROR);
    cr_assert_eq(resp->error->code, GRPC_STATUS_UNAVAILABLE);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    cr_assert_not(lookup_hit("hot", 500000, NULL), "removed from L1 all the same");
    /* Invalidating a model works locally at once. */
    resp = tc_call(&g_c.s, tc_invalidate_model(&r, "small"));
    cr_assert_eq(resp->kind_case, LLMSERVE__V1__CACHE_RESPONSE__KIND_INVALIDATE);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    cr_assert_not(lookup_hit("new", 500000, NULL));
}

Test(degraded, stalled_memcached_times_out_and_recovers)
{
    cr_assert_eq(test_memcached_start(&g_mc, 0), 0);
    char conf[64];
    start(test_memcached_config(&g_mc, conf, sizeof(conf)), k_no_l1);
    tc_do_store(&g_c.s, "", "small", "q", "a", false);
    kill(g_mc.pid, SIGSTOP);
    for (int i = 0; i < 6; i++)
        cr_assert_not(lookup_hit("q", 400000, NULL), "a stalled memcached must be a miss");
    cr_assert(degraded());

    /* While a worker waits on the stalled server, a second request with the same id is
     * refused: ids must be unique among requests in flight. */
    tc_req_t r1, r2;
    Llmserve__V1__CacheRequest *a = tc_lookup(&r1, "", "small", "dup-a", false);
    Llmserve__V1__CacheRequest *b = tc_lookup(&r2, "", "small", "dup-b", false);
    r1.req.id = r2.req.id = 777777;
    /* A probe may be due: send two in a row so that one of them waits for a timeout. */
    cr_assert_eq(rpc_stream_send(g_c.s.stream, &a->base), LS_OK);
    cr_assert_eq(rpc_stream_send(g_c.s.stream, &b->base), LS_OK);
    Llmserve__V1__CacheResponse *x = tc_wait(&g_c.s, 777777, 5000);
    Llmserve__V1__CacheResponse *y = tc_wait(&g_c.s, 777777, 5000);
    cr_assert_not_null(x);
    cr_assert_not_null(y);
    llmserve__v1__cache_response__free_unpacked(x, NULL);
    llmserve__v1__cache_response__free_unpacked(y, NULL);

    kill(g_mc.pid, SIGCONT);
    cr_assert(wait_for(degraded, false, 10000), "still degraded after memcached resumed");
    cr_assert(lookup_hit("q", 1000000, NULL), "the answer survived the stall");
}

Test(degraded, duplicate_id_in_flight_is_already_exists)
{
    cr_assert_eq(test_memcached_start(&g_mc, 0), 0);
    char conf[64];
    test_memcached_config(&g_mc, conf, sizeof(conf));
    /* One worker and a long probe interval: the first request holds the worker for the
     * whole 300 ms timeout of a stalled server while the second arrives. */
    static const char *const slow[] = {
        "--l1-bytes",         "0",   "--workers", "1", "--memcached-timeout-ms", "300",
        "--breaker-failures", "100", NULL};
    start(conf, slow);
    kill(g_mc.pid, SIGSTOP);
    tc_req_t r1, r2;
    Llmserve__V1__CacheRequest *a = tc_lookup(&r1, "", "small", "dup-a", false);
    Llmserve__V1__CacheRequest *b = tc_lookup(&r2, "", "small", "dup-b", false);
    r1.req.id = r2.req.id = 4242;
    cr_assert_eq(rpc_stream_send(g_c.s.stream, &a->base), LS_OK);
    cr_assert_eq(rpc_stream_send(g_c.s.stream, &b->base), LS_OK);
    Llmserve__V1__CacheResponse *first = tc_wait(&g_c.s, 4242, 5000);
    Llmserve__V1__CacheResponse *second = tc_wait(&g_c.s, 4242, 5000);
    cr_assert_not_null(first);
    cr_assert_not_null(second);
    /* The refusal comes first: it is answered at once, the lookup after its timeout. */
    cr_assert_eq(first->kind_case, LLMSERVE__V1__CACHE_RESPONSE__KIND_ERROR);
    cr_assert_eq(first->error->code, GRPC_STATUS_ALREADY_EXISTS);
    cr_assert_eq(second->kind_case, LLMSERVE__V1__CACHE_RESPONSE__KIND_LOOKUP);
    cr_assert_not(second->lookup->hit);
    llmserve__v1__cache_response__free_unpacked(first, NULL);
    llmserve__v1__cache_response__free_unpacked(second, NULL);
    kill(g_mc.pid, SIGCONT);
    /* The id is free again once answered. */
    cr_assert_not(lookup_hit("dup-a", 2000000, NULL));
}

Test(degraded, two_servers_share_keys_and_one_can_fail)
{
    cr_assert_eq(test_memcached_start(&g_mc, 0), 0);
    cr_assert_eq(test_memcached_start(&g_mc2, 0), 0);
    char conf[96];
    snprintf(conf, sizeof(conf), "--SERVER=127.0.0.1:%d --SERVER=127.0.0.1:%d", g_mc.port,
             g_mc2.port);
    start(conf, k_no_l1);
    enum { N = 60 };
    char prompt[32];
    for (int i = 0; i < N; i++) {
        snprintf(prompt, sizeof(prompt), "spread %d", i);
        tc_do_store(&g_c.s, "", "small", prompt, "x", false);
    }
    test_memcached_stop(&g_mc2, SIGKILL);
    int hits = 0;
    for (int pass = 0; pass < 2; pass++) {
        hits = 0;
        for (int i = 0; i < N; i++) {
            snprintf(prompt, sizeof(prompt), "spread %d", i);
            hits += lookup_hit(prompt, 500000, NULL);
        }
    }
    /* Consistent hashing put part of the keys on each server: the survivor still answers
     * its share (the generation key lives on one of them, so allow for either). */
    cr_assert(hits == 0 || (hits > N / 6 && hits < N * 5 / 6), "%d of %d hits", hits, N);
    cr_assert(degraded());
}
