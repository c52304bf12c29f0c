/*
 * test_router_failover.c - mid-stream failover end to end: real llmserve-inference
 * instances and llmserve-router (tests/support/suite.h), an instance killed with SIGKILL
 * while it streams an answer, and the answer continued on another instance of the same
 * model as if nothing had happened.
 *
 * Every instance pauses after each forward step (--step-delay-us), so an answer takes
 * long enough for the test to see its first tokens and kill the instance serving it
 * however fast this machine decodes.  An uninterrupted run of the same request, made
 * first in the same test, is what the continued answer must equal: greedy and seeded
 * answers are deterministic, so the text and every token id must match.  Also: under
 * load (no request lost), with no instance of the model left (UNAVAILABLE, once), the
 * cache storing the whole continued answer, Router.Complete, and the failover counter the
 * router reports to a collector of the test's own (support/metrics_sink.h).
 */
#define _GNU_SOURCE
#include "support/metrics_sink.h"
#include "support/router_stream.h"
#include "support/suite.h"
#include "svc/metric_names.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define PROMPT "Once upon a time there was a cat"
#define ANSWER_TOKENS 60
#define KILL_AFTER 10 /* tokens seen before the kill */

static suite_t S;
static metrics_sink_t *g_sink; /* the router's collector, in tests that read its metrics */

static void stop_suite(void)
{
    suite_stop(&S);
    metrics_sink_destroy(g_sink);
    g_sink = NULL;
}

/* n_small instances of one model (same checkpoint, same name) in pool "small", each
 * pausing 20 ms after every step; no large pool, no cache. */
static void start_same_model(int n_small)
{
    static const char *const slow_steps[] = {"--step-delay-us", "20000", NULL};
    suite_opts_t o = {
        .n_small = n_small, .n_large = 0, .cache = false, .inference_args = slow_steps};
    suite_start(&S, &o);
}

static void start_two(void)
{
    start_same_model(2);
}

/* As start_two, the router reporting to a collector of the test's own every 50 ms. */
static void start_two_metered(void)
{
    g_sink = metrics_sink_create(0);
    cr_assert_not_null(g_sink);
    static char collector[64];
    snprintf(collector, sizeof(collector), "127.0.0.1:%d", metrics_sink_port(g_sink));
    const char *const router_args[] = {"--metrics", collector, "--metrics-interval-ms", "50", NULL};
    static const char *const slow_steps[] = {"--step-delay-us", "20000", NULL};
    suite_opts_t o = {.n_small = 2,
                      .n_large = 0,
                      .cache = false,
                      .router_args = router_args,
                      .inference_args = slow_steps};
    suite_start(&S, &o);
}

/* As start_two, with no retry (nor failover) allowed: --max-retries 0. */
static void start_two_no_retries(void)
{
    static const char *const no_retries[] = {"--max-retries", "0", NULL};
    static const char *const slow_steps[] = {"--step-delay-us", "20000", NULL};
    suite_opts_t o = {.n_small = 2,
                      .n_large = 0,
                      .cache = false,
                      .router_args = no_retries,
                      .inference_args = slow_steps};
    suite_start(&S, &o);
}

/* As start_two, with memcached and the cache service. */
static void start_two_cached(void)
{
    static const char *const slow_steps[] = {"--step-delay-us", "20000", NULL};
    suite_opts_t o = {.n_small = 2, .n_large = 0, .cache = true, .inference_args = slow_steps};
    suite_start(&S, &o);
}

static void start_three(void)
{
    start_same_model(3);
}

/* "small" (tiny-small) falls back to nothing, "large" (tiny-large, another model) falls
 * back to "small": one instance each. */
static void start_two_models(void)
{
    static const char *const slow_steps[] = {"--step-delay-us", "20000", NULL};
    suite_opts_t o = {.n_small = 1, .n_large = 1, .cache = false, .inference_args = slow_steps};
    suite_start(&S, &o);
}

TestSuite(failover, .fini = stop_suite, .timeout = 300);

static router_stream_t *gen_open(void)
{
    return router_stream_open(S.ch, suite_call_opts(&S));
}

/* req (its id replaced by id) to completion on its own stream, uninterrupted. */
static router_stream_rec_t run_whole(router_stream_req_t req, const char *id)
{
    req.id = id;
    router_stream_t *g = gen_open();
    router_stream_submit(g, &req);
    router_stream_rec_t r = router_stream_finish(g, id);
    router_stream_close(g);
    cr_assert(r.done, "%s: error %d %s", id, r.err_code, r.err_msg);
    cr_assert_eq(r.tokens, ANSWER_TOKENS, "%s: %d tokens", id, r.tokens);
    cr_assert_eq(r.failovers, 0);
    return r;
}

/* Kills the instance serving id on g once id has `after` tokens; returns its address
 * (into victim, 64 bytes). */
static void kill_server_of(router_stream_t *g, const char *id, int after, char *victim)
{
    router_stream_rec_t r = router_stream_wait(g, id, after, 60000);
    cr_assert_geq(r.tokens, after, "%s: %d tokens, error %d %s", id, r.tokens, r.err_code,
                  r.err_msg);
    cr_assert_eq(r.terminal, 0, "%s ended before the kill", id);
    snprintf(victim, 64, "%s", router_stream_route(g, id)->instance);
    suite_kill(suite_instance(&S, victim));
}

/* got is the whole answer of want, continued once after the kill of victim. */
static void expect_continued(router_stream_t *g, const router_stream_rec_t *got,
                             const router_stream_rec_t *want, const char *victim)
{
    cr_assert(got->done, "%s: error %d %s after %d tokens", got->id, got->err_code, got->err_msg,
              got->tokens);
    cr_expect_eq(got->finish, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH);
    cr_expect_eq(got->completion_tokens, ANSWER_TOKENS);
    cr_expect_eq(got->prompt_tokens, want->prompt_tokens, "prompt tokens %u, uninterrupted %u",
                 got->prompt_tokens, want->prompt_tokens);
    cr_expect_eq(got->tokens, ANSWER_TOKENS);
    cr_expect(got->indexes_ok, "token indexes not 0..%d in order", ANSWER_TOKENS - 1);
    cr_assert_eq(got->failovers, 1, "%d failover events", got->failovers);
    cr_expect_eq(got->started, 2);
    cr_expect_geq(got->tokens_at_failover, KILL_AFTER);
    cr_expect_eq((int)got->resumed_tokens, got->tokens_at_failover,
                 "resumed %u tokens, the client had %d", got->resumed_tokens,
                 got->tokens_at_failover);
    const Llmserve__V1__GenerateStarted *s = router_stream_route(g, got->id);
    cr_expect(s->failover);
    cr_expect_eq(s->attempt, 2);
    cr_expect_str_neq(s->instance, victim);
    cr_expect_str_eq(s->pool, "small");
    cr_expect_str_eq(s->model, "tiny-small");
    cr_expect(strstr(s->failover_reason, victim), "reason '%s'", s->failover_reason);
    cr_expect_str_eq(got->text, want->text);
    cr_expect_arr_eq(got->ids, want->ids, sizeof(int) * ANSWER_TOKENS);
}

/* The request of a failover test: killed after KILL_AFTER tokens, then compared with the
 * same request run whole first. */
static void failover_once(router_stream_req_t req)
{
    router_stream_rec_t want = run_whole(req, "whole");
    router_stream_t *g = gen_open();
    req.id = "killed";
    router_stream_submit(g, &req);
    char victim[64];
    kill_server_of(g, "killed", KILL_AFTER, victim);
    router_stream_rec_t got = router_stream_finish(g, "killed");
    expect_continued(g, &got, &want, victim);
    router_stream_close(g);
}

Test(failover, greedy_answer_continues_on_the_other_instance_unchanged, .init = start_two_metered)
{
    router_stream_req_t req = {
        .prompt = PROMPT, .hint = "small", .max_tokens = ANSWER_TOKENS, .ignore_eos = true};
    failover_once(req);
    /* One failover counted, and it is no retry (the retries are before the first token). */
    cr_expect(metrics_sink_wait_counter(g_sink, M_FAILOVERS, "pool=small", 1, 10000),
              "failovers_total{pool=small}: %g",
              metrics_sink_counter(g_sink, M_FAILOVERS, "pool=small"));
    cr_expect_eq(metrics_sink_counter(g_sink, M_FAILOVERS, "pool=small"), 1);
    cr_expect_eq(metrics_sink_counter(g_sink, M_RETRIES, "pool=small"), 0);
    suite_end(&S);
}

Test(failover, seeded_sampled_answer_continues_unchanged, .init = start_two)
{
    router_stream_req_t req = {.prompt = PROMPT,
                               .hint = "small",
                               .max_tokens = ANSWER_TOKENS,
                               .ignore_eos = true,
                               .temperature = 0.8f,
                               .top_p = 0.9f,
                               .has_seed = true,
                               .seed = 4242};
    failover_once(req);
    suite_end(&S);
}

#define LOAD_N 30

/* Request i of the load test: greedy (even i) or seeded (odd i), with one of a few
 * prompts, so answers differ between requests. */
static router_stream_req_t load_req(int i, char *id, const char *tag)
{
    static const char *const prompts[] = {PROMPT, "The little dog ran to the park",
                                          "A girl found a red ball", "The sun was hot and"};
    snprintf(id, 32, "%s%d", tag, i);
    router_stream_req_t r = {.id = id,
                             .prompt = prompts[i % 4],
                             .hint = "small",
                             .max_tokens = ANSWER_TOKENS,
                             .ignore_eos = true};
    if (i % 2) {
        r.temperature = 0.8f;
        r.top_p = 0.9f;
        r.has_seed = true;
        r.seed = (uint64_t)(1000 + i);
    }
    return r;
}

Test(failover, under_load_one_instance_killed_costs_no_request, .init = start_three)
{
    static router_stream_rec_t want[LOAD_N];
    char ids[LOAD_N][32];
    router_stream_t *g = gen_open();
    for (int i = 0; i < LOAD_N; i++) {
        router_stream_req_t r = load_req(i, ids[i], "whole");
        router_stream_submit(g, &r);
    }
    for (int i = 0; i < LOAD_N; i++) {
        want[i] = router_stream_finish(g, ids[i]);
        cr_assert(want[i].done, "%s: error %d %s", ids[i], want[i].err_code, want[i].err_msg);
        cr_assert_eq(want[i].tokens, ANSWER_TOKENS);
    }
    router_stream_close(g);

    g = gen_open();
    for (int i = 0; i < LOAD_N; i++) {
        router_stream_req_t r = load_req(i, ids[i], "load");
        router_stream_submit(g, &r);
    }
    char victim[64];
    kill_server_of(g, ids[0], KILL_AFTER, victim);
    int failed_over = 0;
    for (int i = 0; i < LOAD_N; i++) {
        router_stream_rec_t got = router_stream_finish(g, ids[i]);
        cr_expect(got.done, "%s: error %d %s", ids[i], got.err_code, got.err_msg);
        if (!got.done)
            continue;
        cr_expect_eq(got.tokens, ANSWER_TOKENS, "%s: %d tokens", ids[i], got.tokens);
        cr_expect_eq(got.completion_tokens, ANSWER_TOKENS, "%s", ids[i]);
        cr_expect(got.indexes_ok, "%s: token indexes out of order", ids[i]);
        cr_expect_leq(got.failovers, 1, "%s: %d failovers", ids[i], got.failovers);
        if (got.failovers) {
            failed_over++;
            cr_expect_eq((int)got.resumed_tokens, got.tokens_at_failover, "%s", ids[i]);
            cr_expect_str_neq(router_stream_route(g, ids[i])->instance, victim);
        }
        cr_expect_str_eq(got.text, want[i].text, "%s differs from its uninterrupted answer",
                         ids[i]);
        cr_expect_arr_eq(got.ids, want[i].ids, sizeof(int) * ANSWER_TOKENS, "%s", ids[i]);
    }
    cr_expect_geq(failed_over, 1, "the killed instance served none of them");
    router_stream_close(g);
    suite_end(&S);
}

Test(failover, no_instance_of_that_model_left_ends_with_unavailable, .init = start_two_models)
{
    /* The large pool's only instance dies; its fallback, the small pool, serves another
     * model (another vocabulary), so nothing can continue the answer. */
    router_stream_t *g = gen_open();
    router_stream_req_t req = {.id = "orphan",
                               .prompt = PROMPT,
                               .hint = "large",
                               .max_tokens = ANSWER_TOKENS,
                               .ignore_eos = true};
    router_stream_submit(g, &req);
    char victim[64];
    kill_server_of(g, "orphan", KILL_AFTER, victim);
    router_stream_rec_t r = router_stream_finish(g, "orphan");
    cr_assert_eq(r.err_code, GRPC_STATUS_UNAVAILABLE, "code %d finish %d after %d tokens",
                 r.err_code, r.finish, r.tokens);
    cr_expect(strstr(r.err_msg, victim), "message '%s'", r.err_msg);
    cr_expect(strstr(r.err_msg, "no instance of model tiny-large"), "message '%s'", r.err_msg);
    cr_expect_geq(r.tokens, KILL_AFTER);
    cr_expect_lt(r.tokens, ANSWER_TOKENS);
    cr_expect(r.indexes_ok);
    cr_expect_eq(r.failovers, 0, "a failover to another model was announced");
    /* The stream and the other pool are fine. */
    router_stream_req_t after = {.id = "after", .prompt = PROMPT, .hint = "small", .max_tokens = 4};
    router_stream_submit(g, &after);
    cr_expect(router_stream_finish(g, "after").done);
    router_stream_close(g);
    suite_end(&S);
}

Test(failover, the_cache_stores_the_whole_continued_answer, .init = start_two_cached)
{
    router_stream_req_t req = {.prompt = PROMPT,
                               .hint = "small",
                               .max_tokens = ANSWER_TOKENS,
                               .ignore_eos = true,
                               .policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_BYPASS};
    router_stream_rec_t want = run_whole(req, "whole");
    /* Stored, never looked up: the answer runs, fails over and is stored at its end. */
    req.policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_WRITE_ONLY;
    req.id = "killed";
    router_stream_t *g = gen_open();
    router_stream_submit(g, &req);
    char victim[64];
    kill_server_of(g, "killed", KILL_AFTER, victim);
    router_stream_rec_t got = router_stream_finish(g, "killed");
    expect_continued(g, &got, &want, victim);
    /* Looked up, never stored: the hit is the whole answer.  The store is sent before the
     * Done, on the one cache stream, but the cache may take a moment to write it. */
    req.policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_READ_ONLY;
    bool hit = false;
    router_stream_rec_t again;
    for (int i = 0; i < 20 && !hit; i++) {
        char id[16];
        snprintf(id, sizeof(id), "again%d", i);
        req.id = id;
        router_stream_submit(g, &req);
        again = router_stream_finish(g, id);
        cr_assert(again.done, "%s: error %d %s", id, again.err_code, again.err_msg);
        hit = router_stream_route(g, id)->cache_hit;
        if (!hit)
            usleep(100000);
    }
    cr_assert(hit, "the continued answer was not stored");
    cr_expect_str_eq(again.text, want.text);
    cr_expect_eq(again.completion_tokens, ANSWER_TOKENS);
    cr_expect_eq(again.prompt_tokens, want.prompt_tokens);
    router_stream_close(g);
    suite_end(&S);
}

#define COMPLETE_TOKENS 150

typedef struct {
    router_stream_req_t req;
    rpc_status_t st;
    Llmserve__V1__CompleteResponse *resp; /* NULL unless OK */
} complete_call_t;

/* Router.Complete of c->req (prompt, hint, conversation, sampling), on its own thread. */
static void *complete_thread(void *arg)
{
    complete_call_t *c = arg;
    Llmserve__V1__SamplingParams sp = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    sp.max_tokens = c->req.max_tokens;
    sp.ignore_eos = c->req.ignore_eos;
    Llmserve__V1__GenerateSubmit sub = LLMSERVE__V1__GENERATE_SUBMIT__INIT;
    sub.request_id = (char *)c->req.id;
    sub.prompt = (char *)c->req.prompt;
    sub.model_hint = (char *)c->req.hint;
    sub.conversation_id = (char *)c->req.conversation;
    sub.sampling = &sp;
    Llmserve__V1__CompleteRequest creq = LLMSERVE__V1__COMPLETE_REQUEST__INIT;
    creq.request = &sub;
    ProtobufCMessage *resp = NULL;
    rpc_channel_unary(S.ch, "/llmserve.v1.Router/Complete", &creq.base,
                      &llmserve__v1__complete_response__descriptor, suite_call_opts(&S), &resp,
                      &c->st);
    c->resp = (Llmserve__V1__CompleteResponse *)resp;
    return NULL;
}

Test(failover, complete_fails_over_too, .init = start_two)
{
    /* The conversation's first request says which instance it stays on (affinity), so
     * the test knows whom to kill while the Complete runs there. */
    router_stream_req_t req = {.id = "whole",
                               .prompt = PROMPT,
                               .hint = "small",
                               .conversation = "failover-conv",
                               .max_tokens = COMPLETE_TOKENS,
                               .ignore_eos = true};
    router_stream_t *g = gen_open();
    router_stream_submit(g, &req);
    router_stream_rec_t want = router_stream_finish(g, "whole");
    cr_assert(want.done, "error %d %s", want.err_code, want.err_msg);
    char victim[64];
    snprintf(victim, sizeof(victim), "%s", router_stream_route(g, "whole")->instance);
    router_stream_close(g);

    complete_call_t c = {.req = req};
    c.req.id = "complete";
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, complete_thread, &c), 0);
    /* A quarter of the answer's 3 s of steps. */
    usleep(750000);
    suite_kill(suite_instance(&S, victim));
    pthread_join(th, NULL);
    cr_assert_eq(c.st.code, GRPC_STATUS_OK, "Complete: %d %s", c.st.code, c.st.details);
    cr_assert_not_null(c.resp);
    const Llmserve__V1__GenerateStarted *route = c.resp->route;
    cr_assert_not_null(route);
    cr_expect(route->failover, "killed before its first token, or not failed over");
    cr_expect_str_neq(route->instance, victim);
    cr_expect_gt(route->resumed_tokens, 0);
    cr_expect_lt(route->resumed_tokens, COMPLETE_TOKENS);
    cr_expect_eq(c.resp->finish_reason, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH);
    cr_expect_eq(c.resp->usage->completion_tokens, COMPLETE_TOKENS);
    cr_expect_eq(c.resp->usage->prompt_tokens, want.prompt_tokens);
    cr_expect_str_eq(c.resp->text, want.text);
    protobuf_c_message_free_unpacked(&c.resp->base, NULL);
    suite_end(&S);
}

Test(failover, the_retry_limit_bounds_failovers_too, .init = start_two_no_retries)
{
    /* Another instance of the model is there, but --max-retries 0 allows no second try. */
    router_stream_t *g = gen_open();
    router_stream_req_t req = {.id = "limited",
                               .prompt = PROMPT,
                               .hint = "small",
                               .max_tokens = ANSWER_TOKENS,
                               .ignore_eos = true};
    router_stream_submit(g, &req);
    char victim[64];
    kill_server_of(g, "limited", KILL_AFTER, victim);
    router_stream_rec_t r = router_stream_finish(g, "limited");
    cr_assert_eq(r.err_code, GRPC_STATUS_UNAVAILABLE, "code %d finish %d after %d tokens",
                 r.err_code, r.finish, r.tokens);
    cr_expect(strstr(r.err_msg, victim), "message '%s'", r.err_msg);
    cr_expect(strstr(r.err_msg, "--max-retries"), "message '%s'", r.err_msg);
    cr_expect_eq(r.failovers, 0);
    cr_expect(r.indexes_ok);
    router_stream_close(g);
    suite_end(&S);
}
