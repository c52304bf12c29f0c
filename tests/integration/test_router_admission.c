/*
 * test_router_admission.c - a saturated pool through the router (issue 18): instances
 * that hold one request running and one waiting (--max-batch 1 --max-queue 1), many more
 * requests than that at once.  The router queues what the instances cannot take and
 * dispatches as they finish; beyond its own queue (--queue-max) it refuses with
 * RESOURCE_EXHAUSTED and a retry hint (the error's retry_after_ms on Generate, the
 * grpc-retry-pushback-ms trailer on Complete), never with "no healthy instance"; a
 * request queued past its deadline, or cancelled there, ends with one terminal event; the
 * instance stays SERVING throughout.
 *
 * Real processes (tests/support/suite.h): the small pool serves the tiny model (fast),
 * the large one the slow model, frozen (SIGSTOP) once it holds two long answers, so the
 * pool stays full while the test acts.
 */
#define _GNU_SOURCE
#include "grpc/health/v1/health.pb-c.h"
#include "llmserve/v1/router.pb-c.h"
#include "rpc/metadata.h"
#include "support/channel.h"
#include "support/router_stream.h"
#include "support/suite.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROMPT "Once upon a time there was a cat"

static suite_t S;

static void stop_suite(void)
{
    suite_stop(&S);
}

static const char *const tight_instance[] = {"--max-batch", "1", "--max-queue", "1", NULL};

/* An instance's health as a probe sees it (SERVING 1, NOT_SERVING 2), or -code. */
static int instance_health(const test_proc_t *p)
{
    rpc_channel_t *ch = test_channel_to(S.client, p->port, NULL);
    cr_assert_not_null(ch);
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "";
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_call_opts_t o = {.timeout_us = 5000000, .wait_for_ready = true};
    rpc_channel_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                      &grpc__health__v1__health_check_response__descriptor, &o, &resp, &st);
    int status = resp ? (int)((Grpc__Health__V1__HealthCheckResponse *)resp)->status : -st.code;
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    rpc_channel_destroy(ch);
    return status;
}

TestSuite(router_admission, .fini = stop_suite, .timeout = 240);

/* The scenario: 8 streams, 40 requests, one instance that holds two. */
static void start_tight_small(void)
{
    static const char *const router[] = {"--tiers", "", NULL};
    suite_opts_t o = {.n_small = 1, .inference_args = tight_instance, .router_args = router};
    suite_start(&S, &o);
}

Test(router_admission, saturated_pool_queues_and_every_request_succeeds, .init = start_tight_small)
{
    enum { STREAMS = 8, PER_STREAM = 5 };
    router_stream_t *g[STREAMS];
    for (int s = 0; s < STREAMS; s++)
        g[s] = router_stream_open(S.ch, suite_call_opts(&S));
    char id[32];
    for (int i = 0; i < PER_STREAM; i++) {
        for (int s = 0; s < STREAMS; s++) {
            snprintf(id, sizeof(id), "s%d-r%d", s, i);
            router_stream_req_t r = {.id = id, .prompt = PROMPT, .max_tokens = 8};
            router_stream_submit(g[s], &r);
        }
    }
    for (int s = 0; s < STREAMS; s++) {
        for (int i = 0; i < PER_STREAM; i++) {
            snprintf(id, sizeof(id), "s%d-r%d", s, i);
            router_stream_rec_t r = router_stream_finish(g[s], id);
            cr_assert(r.done, "%s: error %d %s", id, r.err_code, r.err_msg);
            cr_assert_gt(r.tokens, 0, "%s", id);
        }
    }
    for (int s = 0; s < STREAMS; s++)
        router_stream_close(g[s]);
    cr_assert_eq(instance_health(&S.small[0]), 1, "the instance is not SERVING");
    suite_end(&S);
}

/* The slow large pool, no fallback from it, a router queue of 2. */
static void start_tight_large(void)
{
    static const char *const router[] = {"--pool-fallback", "large=none", "--queue-max", "2", NULL};
    suite_opts_t o = {.n_small = 1,
                      .n_large = 1,
                      .slow_large = true,
                      .inference_args = tight_instance,
                      .router_args = router};
    suite_start(&S, &o);
}

static router_stream_req_t long_req(const char *id, uint32_t timeout_ms)
{
    router_stream_req_t r = {.id = id,
                             .prompt = PROMPT,
                             .hint = "large",
                             .max_tokens = 1500,
                             .ignore_eos = true,
                             .timeout_ms = timeout_ms};
    return r;
}

/* a1 runs and a2 waits in the large instance, which is then full; frozen (freeze), it
 * holds both for as long as the test needs (the slow model's answers are long, not
 * endless), and its stream stays open, so it stays healthy. */
static void fill_large(router_stream_t *g, int max_tokens, bool freeze)
{
    router_stream_req_t a1 = long_req("a1", 0), a2 = long_req("a2", 0);
    a1.max_tokens = a2.max_tokens = max_tokens;
    router_stream_submit(g, &a1);
    router_stream_rec_t r = router_stream_wait(g, "a1", 1, 60000);
    cr_assert_gt(r.tokens, 0, "a1: %d %s", r.err_code, r.err_msg);
    router_stream_submit(g, &a2);
    usleep(100000);
    if (freeze)
        suite_freeze(&S.large[0]);
}

/* One Complete for the large pool; *pushback_ms gets the trailer (-1: none). */
static rpc_status_t complete_large(long *pushback_ms)
{
    Llmserve__V1__SamplingParams sp = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    sp.max_tokens = 4;
    Llmserve__V1__GenerateSubmit sub = LLMSERVE__V1__GENERATE_SUBMIT__INIT;
    sub.prompt = PROMPT;
    sub.model_hint = "large";
    sub.sampling = &sp;
    Llmserve__V1__CompleteRequest req = LLMSERVE__V1__COMPLETE_REQUEST__INIT;
    req.request = &sub;
    rpc_md_t trailers = {0};
    rpc_call_opts_t o = *suite_call_opts(&S);
    o.trailers_out = &trailers;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_channel_unary(S.ch, "/llmserve.v1.Router/Complete", &req.base,
                      &llmserve__v1__complete_response__descriptor, &o, &resp, &st);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    size_t len = 0;
    const char *v = rpc_md_get(&trailers, "grpc-retry-pushback-ms", &len);
    char buf[32] = "";
    if (v && len < sizeof(buf))
        memcpy(buf, v, len);
    *pushback_ms = v ? strtol(buf, NULL, 10) : -1;
    rpc_md_clear(&trailers);
    return st;
}

Test(router_admission, full_router_queue_refuses_with_resource_exhausted_and_a_hint,
     .init = start_tight_large)
{
    router_stream_t *g = router_stream_open(S.ch, suite_call_opts(&S));
    /* a1 runs, a2 waits in the instance: the instance is full. */
    fill_large(g, 1500, true);
    router_stream_rec_t r;
    /* q1 waits in the router's queue; q2 too, until its deadline. */
    router_stream_req_t q1 = long_req("q1", 0), q2 = long_req("q2", 1500);
    router_stream_submit(g, &q1);
    router_stream_submit(g, &q2);
    usleep(200000);
    /* The router's queue (2) is full: refused at once, with a hint, not as an outage. */
    router_stream_req_t x = long_req("x", 0);
    router_stream_submit(g, &x);
    r = router_stream_finish(g, "x");
    cr_assert_eq(r.err_code, 8, "x: %d %s", r.err_code, r.err_msg);
    cr_assert(strstr(r.err_msg, "at capacity") && strstr(r.err_msg, "retry after"), "%s",
              r.err_msg);
    cr_assert_null(strstr(r.err_msg, "no healthy"), "%s", r.err_msg);
    cr_assert_gt(r.retry_after_ms, 0);
    /* Complete: the status, and the trailer gRPC retry policies read. */
    long pushback = -1;
    rpc_status_t st = complete_large(&pushback);
    cr_assert_eq(st.code, GRPC_STATUS_RESOURCE_EXHAUSTED, "%d %s", st.code, st.details);
    cr_assert_gt(pushback, 0, "no grpc-retry-pushback-ms trailer");
    /* q2's deadline passes in the queue: one terminal event, DEADLINE_EXCEEDED. */
    r = router_stream_finish(g, "q2");
    cr_assert_eq(r.err_code, 4, "q2: %d %s", r.err_code, r.err_msg);
    cr_assert(strstr(r.err_msg, "queued in the router"), "%s", r.err_msg);
    /* Cancel while queued: one terminal event, Done(CANCELLED), nothing after. */
    router_stream_cancel(g, "q1");
    r = router_stream_finish(g, "q1");
    cr_assert(r.done, "q1: %d %s", r.err_code, r.err_msg);
    cr_assert_eq(r.finish, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_CANCELLED);
    cr_assert_eq(r.tokens, 0);
    cr_assert_geq(r.router_queue_us, 100000, "q1's Done counts %llu us queued",
                  (unsigned long long)r.router_queue_us);
    /* Room in the queue again: a request queues, and runs once a1 and a2 end. */
    router_stream_req_t y = {.id = "y", .prompt = PROMPT, .hint = "large", .max_tokens = 4};
    router_stream_submit(g, &y);
    usleep(100000);
    cr_assert_eq(router_stream_wait(g, "y", 0, 0).terminal, 0, "y was not queued");
    suite_thaw(&S.large[0]);
    router_stream_cancel(g, "a1");
    router_stream_cancel(g, "a2");
    r = router_stream_finish(g, "y");
    cr_assert(r.done, "y: %d %s", r.err_code, r.err_msg);
    cr_assert_geq(r.router_queue_us, 100000, "y waited %llu us in the router's queue",
                  (unsigned long long)r.router_queue_us);
    router_stream_finish(g, "a1");
    router_stream_finish(g, "a2");
    router_stream_close(g);
    cr_assert_eq(instance_health(&S.large[0]), 1, "the instance is not SERVING");
    suite_end(&S);
}

/* The slow large pool falls back to small; a queue of 1 and a wait of 500 ms (its TTFT
 * budget, which would bound the wait too, is longer: a2, waiting in the instance, must
 * not fall back during the test). */
static void start_tight_large_fallback(void)
{
    static const char *const router[] = {"--pool-fallback",
                                         "large=small",
                                         "--pool-ttft-ms",
                                         "large=20000",
                                         "--queue-wait-ms",
                                         "500",
                                         "--queue-max",
                                         "1",
                                         NULL};
    suite_opts_t o = {.n_small = 1,
                      .n_large = 1,
                      .slow_large = true,
                      .inference_args = tight_instance,
                      .router_args = router};
    suite_start(&S, &o);
}

Test(router_admission, queued_past_its_wait_or_beyond_the_queue_falls_back,
     .init = start_tight_large_fallback)
{
    router_stream_t *g = router_stream_open(S.ch, suite_call_opts(&S));
    fill_large(g, 1500, true);
    router_stream_rec_t r;
    /* q waits (the queue holds 1) and, past its wait, goes to small; o finds the queue
     * full and goes to small at once. */
    router_stream_req_t q = {.id = "q", .prompt = PROMPT, .hint = "large", .max_tokens = 4};
    router_stream_req_t o = {.id = "o", .prompt = PROMPT, .hint = "large", .max_tokens = 4};
    router_stream_submit(g, &q);
    usleep(100000);
    router_stream_submit(g, &o);
    r = router_stream_finish(g, "o");
    cr_assert(r.done, "o: %d %s", r.err_code, r.err_msg);
    const Llmserve__V1__GenerateStarted *s = router_stream_route(g, "o");
    cr_assert_str_eq(s->pool, "small");
    cr_assert(s->fallback);
    cr_assert(strstr(s->fallback_reason, "at capacity"), "%s", s->fallback_reason);
    r = router_stream_finish(g, "q");
    cr_assert(r.done, "q: %d %s", r.err_code, r.err_msg);
    s = router_stream_route(g, "q");
    cr_assert_str_eq(s->pool, "small");
    cr_assert(strstr(s->fallback_reason, "no room within"), "%s", s->fallback_reason);
    cr_assert_geq(r.router_queue_us, 400000, "q waited %llu us",
                  (unsigned long long)r.router_queue_us);
    suite_thaw(&S.large[0]);
    router_stream_cancel(g, "a1");
    router_stream_cancel(g, "a2");
    router_stream_finish(g, "a1");
    router_stream_finish(g, "a2");
    router_stream_close(g);
    suite_end(&S);
}

static void start_tight_large_drain(void)
{
    static const char *const router[] = {"--pool-fallback", "large=none", "--grace-ms", "300",
                                         NULL};
    suite_opts_t o = {.n_small = 1,
                      .n_large = 1,
                      .slow_large = true,
                      .inference_args = tight_instance,
                      .router_args = router};
    suite_start(&S, &o);
}

/* SIGTERM with requests queued: past the grace period each ends with one UNAVAILABLE, and
 * the router exits 0 (nothing leaked under ASan). */
Test(router_admission, drain_ends_queued_requests_once, .init = start_tight_large_drain)
{
    router_stream_t *g = router_stream_open(S.ch, suite_call_opts(&S));
    router_stream_req_t q = long_req("q", 0);
    fill_large(g, 1500, true);
    router_stream_rec_t r;
    router_stream_submit(g, &q);
    usleep(100000);
    cr_assert_eq(router_stream_wait(g, "q", 0, 0).terminal, 0, "q was not queued");
    cr_assert_eq(kill(S.router.pid, SIGTERM), 0);
    r = router_stream_finish(g, "q");
    cr_assert_eq(r.err_code, GRPC_STATUS_UNAVAILABLE, "q: %d %s", r.err_code, r.err_msg);
    suite_thaw(&S.large[0]);
    router_stream_finish(g, "a1");
    router_stream_finish(g, "a2");
    cr_assert(router_stream_wait_end(g, 10000));
    router_stream_destroy(g);
    int st = test_proc_stop(&S.router, SIGTERM, 30000);
    cr_assert_eq(st, 0, "router exit status %d", st);
    suite_end(&S);
}

/* A second router in front of the same instance, which the first one fills: the second
 * counts nothing there, so the instance's own RESOURCE_EXHAUSTED is what it learns from.
 * Not a failure and not an outage: its request pauses and tries again (no release of its
 * own there would say when room comes) and completes once the first router's requests
 * end. */
Test(router_admission, an_instance_filled_by_another_router_is_waited_for,
     .init = start_tight_large)
{
    router_stream_t *g = router_stream_open(S.ch, suite_call_opts(&S));
    fill_large(g, 2000, false);
    router_stream_rec_t r;

    char pool[64];
    snprintf(pool, sizeof(pool), "large=127.0.0.1:%d", S.large[0].port);
    char *argv[] = {(char *)test_env_path("LLMSERVE_ROUTER_BIN"),
                    "--listen",
                    "127.0.0.1:0",
                    "--pool",
                    pool,
                    "--default-pool",
                    "large",
                    "--tiers",
                    "",
                    "--grace-ms",
                    "500",
                    NULL};
    test_proc_t other = {0};
    cr_assert_eq(test_proc_start(&other, argv, 60000), 0, "the second router did not start");
    rpc_channel_t *ch = test_channel_to(S.client, other.port, NULL);
    cr_assert_not_null(ch);
    router_stream_t *g2 = router_stream_open(ch, suite_call_opts(&S));
    router_stream_req_t b = {.id = "b", .prompt = PROMPT, .max_tokens = 4};
    router_stream_submit(g2, &b);
    usleep(300000);
    cr_assert_eq(router_stream_wait(g2, "b", 0, 0).terminal, 0, "b: %s",
                 router_stream_wait(g2, "b", 0, 0).err_msg);
    router_stream_cancel(g, "a1");
    router_stream_cancel(g, "a2");
    r = router_stream_finish(g2, "b");
    cr_assert(r.done, "b: %d %s", r.err_code, r.err_msg);
    cr_assert_geq(router_stream_route(g2, "b")->attempt, 2, "b was not refused at first");
    cr_assert_geq(r.router_queue_us, 200000, "b paused %llu us",
                  (unsigned long long)r.router_queue_us);
    router_stream_close(g2);
    rpc_channel_destroy(ch);
    cr_assert_eq(test_proc_stop(&other, SIGTERM, 30000), 0, "the second router's exit status");
    router_stream_finish(g, "a1");
    router_stream_finish(g, "a2");
    router_stream_close(g);
    cr_assert_eq(instance_health(&S.large[0]), 1, "the instance is not SERVING");
    suite_end(&S);
}
