/*
 * test_router.c - the whole suite end to end: memcached, llmserve-cache, inference
 * instances and llmserve-router as real processes on loopback (tests/support/suite.h),
 * driven over Router.Generate with the library's client (tests/support/router_stream.h).
 *
 * Models come from the router_models fixture (tests/router.cmake): two tiny models with
 * different seeds ("small", "large") and a wider "slow" one whose tokens take long
 * enough to act between them (cancel, kill, deadline mid-stream) even on a fast CPU.
 * Instances are frozen with SIGSTOP where a test needs a pool that does not answer.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "grpc/health/v1/health.pb-c.h"
#include "support/net.h"
#include "support/proc.h"
#include "support/router_stream.h"
#include "support/suite.h"

#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define SIMPLE_PROMPT "Once upon a time there was a cat"
#define COMPLEX_PROMPT                                                                             \
    "Explain step by step why this C code is slow and prove the bound: ```for (int i = 0; i "      \
    "< n; i++) { s += a[i] * 2; }``` What is 3 * 4? Why?"

static suite_t S;

static void stop_suite(void)
{
    suite_stop(&S);
}

/* A Generate stream to the router. */
static router_stream_t *gen_open(void)
{
    return router_stream_open(S.ch, suite_call_opts(&S));
}

/* One request on its own stream, to completion. */
static router_stream_rec_t run_one(const router_stream_req_t *o, char *pool, char *instance,
                                   char *reason, bool *cache_hit)
{
    router_stream_t *g = gen_open();
    router_stream_submit(g, o);
    router_stream_rec_t r = router_stream_finish(g, o->id);
    if (r.started) {
        const Llmserve__V1__GenerateStarted *s = router_stream_route(g, o->id);
        if (pool)
            snprintf(pool, 33, "%s", s->pool);
        if (instance)
            snprintf(instance, 64, "%s", s->instance);
        if (reason)
            snprintf(reason, 200, "%s", s->route_reason);
        if (cache_hit)
            *cache_hit = s->cache_hit;
    }
    router_stream_close(g);
    return r;
}

/* ---- tests ------------------------------------------------------------------------- */

static void start_basic(void)
{
    suite_opts_t o = {.n_small = 1, .n_large = 1, .cache = true};
    suite_start(&S, &o);
}

/* As start_basic, with cache hits replayed token by token (up to 64 events). */
static void start_basic_replay(void)
{
    static const char *const replay[] = {"--cache-replay-events", "64", NULL};
    suite_opts_t o = {.n_small = 1, .n_large = 1, .cache = true, .router_args = replay};
    suite_start(&S, &o);
}

TestSuite(router, .fini = stop_suite, .timeout = 180);

Test(router, scoring_and_hint_pick_the_pool, .init = start_basic)
{
    char pool[33], reason[200];
    router_stream_req_t a = {.id = "simple", .prompt = SIMPLE_PROMPT, .max_tokens = 12};
    router_stream_rec_t r = run_one(&a, pool, NULL, reason, NULL);
    cr_assert(r.done, "simple: error %d %s", r.err_code, r.err_msg);
    cr_assert_str_eq(pool, "small");
    cr_assert(strstr(reason, "complexity") && strstr(reason, "<"), "%s", reason);
    cr_assert(r.indexes_ok);
    cr_assert_eq((int)r.completion_tokens, r.tokens);

    router_stream_req_t b = {.id = "complex", .prompt = COMPLEX_PROMPT, .max_tokens = 12};
    r = run_one(&b, pool, NULL, reason, NULL);
    cr_assert(r.done, "complex: error %d %s", r.err_code, r.err_msg);
    cr_assert_str_eq(pool, "large", "reason: %s", reason);
    cr_assert(strstr(reason, ">="), "%s", reason);

    router_stream_req_t c = {
        .id = "hinted", .prompt = SIMPLE_PROMPT, .hint = "large", .max_tokens = 12};
    router_stream_t *g = gen_open();
    router_stream_submit(g, &c);
    r = router_stream_finish(g, "hinted");
    cr_assert(r.done);
    const Llmserve__V1__GenerateStarted *s = router_stream_route(g, "hinted");
    cr_assert_str_eq(s->pool, "large");
    cr_assert_str_eq(s->route_reason, "hint");
    cr_assert_eq(s->complexity, 0);
    cr_assert_str_eq(s->model, "tiny-large");
    cr_assert_eq(s->attempt, 1);
    cr_assert_not(s->fallback);
    router_stream_close(g);
    suite_end(&S);
}

Test(router, repeat_prompt_is_a_cache_hit_with_identical_text, .init = start_basic_replay)
{
    router_stream_req_t a = {
        .id = "first", .prompt = "The little dog ran to the", .max_tokens = 24};
    bool hit = true;
    router_stream_rec_t first = run_one(&a, NULL, NULL, NULL, &hit);
    cr_assert(first.done, "%d %s", first.err_code, first.err_msg);
    cr_assert_not(hit, "an empty cache cannot hit");
    cr_assert_gt(first.tokens, 0);
    /* The store is sent before the first answer's Done; give the cache a moment. */
    router_stream_rec_t again;
    char pool[33];
    for (int i = 0; i < 40; i++) {
        router_stream_req_t b = {
            .id = "again", .prompt = "The little dog ran to the", .max_tokens = 24};
        again = run_one(&b, pool, NULL, NULL, &hit);
        if (hit)
            break;
        usleep(50000);
    }
    cr_assert(hit, "the repeated prompt never hit the cache");
    cr_assert(again.done);
    cr_assert(again.token_cache_hit);
    cr_assert_str_eq(again.text, first.text);
    cr_assert_str_eq(pool, "small");
    cr_assert_eq(again.completion_tokens, first.completion_tokens);
    cr_assert_gt(again.cache_lookup_us, 0);
    /* Replayed as the tokens it was first streamed as. */
    cr_assert_eq(again.tokens, first.tokens);
    cr_assert(again.indexes_ok);
    cr_assert_eq(memcmp(again.ids, first.ids, (size_t)first.tokens * sizeof(int)), 0,
                 "replayed token ids differ");

    /* A long answer replays as at most 64 events of consecutive tokens, same text (the
     * default, one event, is checked from Python). */
    router_stream_req_t l = {
        .id = "long", .prompt = "Once there was a", .max_tokens = 200, .ignore_eos = true};
    router_stream_rec_t long1 = run_one(&l, NULL, NULL, NULL, &hit);
    cr_assert(long1.done, "%d %s", long1.err_code, long1.err_msg);
    cr_assert_eq(long1.tokens, 200);
    router_stream_rec_t long2;
    for (int i = 0; i < 40; i++) {
        long2 = run_one(&l, NULL, NULL, NULL, &hit);
        if (hit)
            break;
        usleep(50000);
    }
    cr_assert(hit, "the long answer never hit the cache");
    cr_assert_str_eq(long2.text, long1.text);
    cr_assert(long2.tokens > 1 && long2.tokens <= 64, "%d events", long2.tokens);
    cr_assert(long2.indexes_ok);
    cr_assert_eq(long2.completion_tokens, 200);

    /* BYPASS neither looks up nor hits. */
    router_stream_req_t c = {.id = "bypass",
                             .prompt = "The little dog ran to the",
                             .max_tokens = 24,
                             .policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_BYPASS};
    router_stream_rec_t by = run_one(&c, NULL, NULL, NULL, &hit);
    cr_assert(by.done);
    cr_assert_not(hit);
    cr_assert_str_eq(by.text, first.text, "greedy decoding is deterministic");
    suite_end(&S);
}

Test(router, bad_requests_get_invalid_argument, .init = start_basic)
{
    router_stream_t *g = gen_open();
    router_stream_req_t empty_id = {.id = "", .prompt = "x"};
    router_stream_submit(g, &empty_id);
    router_stream_req_t neither = {.id = "neither", .prompt = ""};
    router_stream_submit(g, &neither);
    router_stream_req_t hot = {.id = "hot", .prompt = "x", .temperature = 3.0f};
    router_stream_submit(g, &hot);
    router_stream_req_t hint = {.id = "hint", .prompt = "x", .hint = "huge"};
    router_stream_submit(g, &hint);
    router_stream_req_t role = {.id = "role", .prompt = "x", .chat = true, .role = 9};
    router_stream_submit(g, &role);
    router_stream_req_t negative = {.id = "neg", .prompt = "x", .max_tokens = -5};
    router_stream_submit(g, &negative);
    struct {
        const char *id, *needle;
    } want[] = {{"", "request_id"},     {"neither", "neither prompt"},
                {"hot", "temperature"}, {"hint", "not a pool"},
                {"role", "role"},       {"neg", "max_tokens"}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        router_stream_rec_t r = router_stream_finish(g, want[i].id);
        cr_assert_eq(r.err_code, GRPC_STATUS_INVALID_ARGUMENT, "%s: code %d", want[i].id,
                     r.err_code);
        cr_assert(strstr(r.err_msg, want[i].needle), "%s: message '%s'", want[i].id, r.err_msg);
        cr_assert_eq(r.started, 0);
    }
    /* The stream is still good. */
    router_stream_req_t ok = {.id = "ok", .prompt = SIMPLE_PROMPT, .max_tokens = 4};
    router_stream_submit(g, &ok);
    cr_assert(router_stream_finish(g, "ok").done);
    router_stream_close(g);
    suite_end(&S);
}

/* Two large instances picked by least outstanding alone: the tests send one prompt many
 * times and count on it spreading, which prefix affinity would keep on one instance. */
static void start_slow(void)
{
    static const char *const no_prefix[] = {"--prefix-affinity-bytes", "0", NULL};
    suite_opts_t o = {
        .n_small = 1, .n_large = 2, .slow_large = true, .cache = false, .router_args = no_prefix};
    suite_start(&S, &o);
}

/* Submits a to the large pool's slow model, waits for its first `tokens` tokens and
 * freezes the instance serving it, so the request is surely still in flight while the
 * test acts on it, however fast this machine decodes.  Returns the frozen instance. */
static test_proc_t *run_then_freeze(router_stream_t *g, const router_stream_req_t *a, int tokens)
{
    router_stream_submit(g, a);
    router_stream_rec_t r = router_stream_wait(g, a->id, tokens, 60000);
    cr_assert_geq(r.tokens, tokens, "no tokens: %d %s", r.err_code, r.err_msg);
    test_proc_t *up = suite_instance(&S, router_stream_route(g, a->id)->instance);
    suite_freeze(up);
    return up;
}

Test(router, cancel_mid_stream_ends_with_cancelled_at_once, .init = start_slow)
{
    router_stream_t *g = gen_open();
    router_stream_req_t a = {.id = "long",
                             .prompt = SIMPLE_PROMPT,
                             .hint = "large",
                             .max_tokens = 400,
                             .ignore_eos = true};
    /* The router must end it without the upstream. */
    test_proc_t *up = run_then_freeze(g, &a, 3);
    router_stream_rec_t r = router_stream_wait(g, "long", 0, 200);
    cr_assert_eq(r.terminal, 0, "finished before the cancel");
    int64_t t0 = ls_now_us();
    router_stream_cancel(g, "long");
    r = router_stream_finish(g, "long");
    int64_t took_ms = (ls_now_us() - t0) / 1000;
    suite_thaw(up);
    cr_assert(r.done);
    cr_assert_eq(r.finish, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_CANCELLED);
    cr_assert_lt(r.tokens, 400);
    cr_assert_eq((int)r.completion_tokens, r.tokens);
    cr_assert_lt(took_ms, 2000, "cancel took %lld ms", (long long)took_ms);
    /* Cancelling an unknown or finished id is ignored. */
    router_stream_cancel(g, "long");
    router_stream_cancel(g, "never-sent");
    usleep(300000);
    router_stream_req_t b = {.id = "after", .prompt = SIMPLE_PROMPT, .max_tokens = 4};
    router_stream_submit(g, &b);
    cr_assert(router_stream_finish(g, "after").done);
    router_stream_close(g); /* checks: no event after any terminal */
    suite_end(&S);
}

Test(router, deadline_before_and_after_the_first_token, .init = start_slow)
{
    router_stream_t *g = gen_open();
    /* Tokens flowing when the deadline passes: Done with DEADLINE. */
    router_stream_req_t a = {.id = "late",
                             .prompt = SIMPLE_PROMPT,
                             .hint = "large",
                             .max_tokens = 400,
                             .ignore_eos = true,
                             .timeout_ms = 1500};
    /* Frozen after its first token, the instance cannot finish before the deadline. */
    test_proc_t *up = run_then_freeze(g, &a, 1);
    router_stream_rec_t r = router_stream_finish(g, "late");
    suite_thaw(up);
    cr_assert(r.done, "error %d %s", r.err_code, r.err_msg);
    cr_assert_eq(r.finish, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_DEADLINE,
                 "finish %d after %d tokens", r.finish, r.tokens);
    cr_assert(r.tokens > 0 && r.tokens < 400, "%d tokens", r.tokens);
    /* Ended by the 1.5 s deadline: not before it, and not long after (a loaded machine
     * may delay the router's timer a little). */
    cr_assert(r.total_us >= 1450000 && r.total_us < 4500000, "total %llu us",
              (unsigned long long)r.total_us);

    /* Nothing produced in time: DEADLINE_EXCEEDED.  The small pool is frozen (it has no
     * fallback, so nothing else can answer). */
    suite_freeze(&S.small[0]);
    int64_t t0 = ls_now_us();
    router_stream_req_t b = {.id = "early",
                             .prompt = SIMPLE_PROMPT,
                             .hint = "small",
                             .max_tokens = 8,
                             .timeout_ms = 400};
    router_stream_submit(g, &b);
    r = router_stream_finish(g, "early");
    int64_t took_ms = (ls_now_us() - t0) / 1000;
    suite_thaw(&S.small[0]);
    cr_assert_eq(r.err_code, GRPC_STATUS_DEADLINE_EXCEEDED, "code %d %s", r.err_code, r.err_msg);
    cr_assert_eq(r.tokens, 0);
    cr_assert(took_ms >= 350 && took_ms < 2500, "took %lld ms", (long long)took_ms);
    router_stream_close(g);
    suite_end(&S);
}

Test(router, killed_instance_fails_its_answers_over_and_new_ones_go_elsewhere, .init = start_slow)
{
    router_stream_t *g = gen_open();
    const char *ids[4] = {"k0", "k1", "k2", "k3"};
    for (int i = 0; i < 4; i++) {
        /* Seconds of decoding even on a fast CPU: none ends before both instances freeze. */
        router_stream_req_t a = {.id = ids[i],
                                 .prompt = SIMPLE_PROMPT,
                                 .hint = "large",
                                 .max_tokens = 1800,
                                 .ignore_eos = true};
        router_stream_submit(g, &a);
    }
    for (int i = 0; i < 4; i++) {
        router_stream_rec_t r = router_stream_wait(g, ids[i], 2, 60000);
        cr_assert_geq(r.tokens, 2, "%s: %d %s", ids[i], r.err_code, r.err_msg);
    }
    /* Both instances stop where they are, so the victim's requests are still in flight when
     * it dies, however fast this machine decodes. */
    for (int i = 0; i < S.n_large; i++)
        suite_freeze(&S.large[i]);
    char victim[64];
    snprintf(victim, sizeof(victim), "%s", router_stream_route(g, "k0")->instance);
    int on_victim = 0;
    for (int i = 0; i < 4; i++)
        on_victim += strcmp(router_stream_route(g, ids[i])->instance, victim) == 0;
    cr_assert(on_victim >= 1 && on_victim < 4, "least outstanding should spread: %d of 4",
              on_victim);
    test_proc_t *p = suite_instance(&S, victim);
    suite_kill(p);
    for (int i = 0; i < S.n_large; i++)
        if (S.large[i].pid)
            suite_thaw(&S.large[i]);
    for (int i = 0; i < 4; i++) {
        bool was_on_victim = strcmp(router_stream_route(g, ids[i])->instance, victim) == 0;
        if (!was_on_victim) {
            router_stream_cancel(g,
                                 ids[i]); /* the survivor's requests are fine; end them quickly */
            router_stream_rec_t r = router_stream_finish(g, ids[i]);
            cr_assert(r.done, "%s on the survivor: %d %s", ids[i], r.err_code, r.err_msg);
            continue;
        }
        /* The victim's requests fail over to the survivor, which serves the same model, and
         * go on there from the tokens already sent (test_router_failover.c checks the
         * answers); two tokens more show it, then a cancel ends them. */
        router_stream_rec_t r = router_stream_wait(g, ids[i], 1, 0);
        r = router_stream_wait(g, ids[i], r.tokens + 2, 60000);
        cr_assert_eq(r.terminal, 0, "%s: code %d %s after %d tokens", ids[i], r.err_code, r.err_msg,
                     r.tokens);
        cr_assert_eq(r.failovers, 1, "%s: %d failovers", ids[i], r.failovers);
        cr_assert(r.indexes_ok);
        const Llmserve__V1__GenerateStarted *s = router_stream_route(g, ids[i]);
        cr_assert_str_neq(s->instance, victim);
        cr_assert(strstr(s->failover_reason, victim), "%s", s->failover_reason);
        router_stream_cancel(g, ids[i]);
        r = router_stream_finish(g, ids[i]);
        cr_assert(r.done, "%s: %d %s", ids[i], r.err_code, r.err_msg);
    }
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "new%d", i);
        router_stream_req_t a = {
            .id = id, .prompt = SIMPLE_PROMPT, .hint = "large", .max_tokens = 3};
        router_stream_submit(g, &a);
        router_stream_rec_t r = router_stream_finish(g, id);
        cr_assert(r.done, "%s: %d %s", id, r.err_code, r.err_msg);
        cr_assert_str_neq(router_stream_route(g, id)->instance, victim);
    }
    router_stream_close(g);
    suite_end(&S);
}

static void start_fallback(void)
{
    static const char *const extra[] = {"--pool-ttft-ms", "large=500", NULL};
    suite_opts_t o = {.n_small = 1, .n_large = 1, .cache = false, .router_args = extra};
    suite_start(&S, &o);
}

Test(router, large_pool_down_or_slow_falls_back_to_small, .init = start_fallback)
{
    /* Slow: the large instance is frozen, so no first token within its 500 ms budget. */
    suite_freeze(&S.large[0]);
    router_stream_t *g = gen_open();
    router_stream_req_t a = {.id = "slow", .prompt = COMPLEX_PROMPT, .max_tokens = 6};
    router_stream_submit(g, &a);
    router_stream_rec_t r = router_stream_finish(g, "slow");
    cr_assert(r.done, "%d %s", r.err_code, r.err_msg);
    cr_assert_eq(r.started, 2, "one started per try");
    cr_assert_eq(r.first_attempt_seen, 1);
    const Llmserve__V1__GenerateStarted *s = router_stream_route(g, "slow");
    cr_assert_str_eq(s->pool, "small");
    cr_assert(s->fallback);
    cr_assert(strstr(s->fallback_reason, "no first token from pool large"), "%s",
              s->fallback_reason);
    cr_assert_eq(s->attempt, 2);
    cr_assert_gt(s->complexity, 0.3);
    suite_thaw(&S.large[0]);

    /* Down: the large instance is gone. */
    suite_kill(&S.large[0]);
    usleep(200000);
    router_stream_req_t b = {.id = "down", .prompt = COMPLEX_PROMPT, .max_tokens = 6};
    router_stream_submit(g, &b);
    r = router_stream_finish(g, "down");
    cr_assert(r.done, "%d %s", r.err_code, r.err_msg);
    s = router_stream_route(g, "down");
    cr_assert_str_eq(s->pool, "small");
    cr_assert(s->fallback);
    cr_assert(strstr(s->fallback_reason, "unavailable"), "%s", s->fallback_reason);
    router_stream_close(g);
    suite_end(&S);
}

#define N_STREAMS 64

Test(router, sixty_four_concurrent_streams, .init = start_basic)
{
    router_stream_t *g[N_STREAMS];
    for (int i = 0; i < N_STREAMS; i++) {
        g[i] = gen_open();
        char id[16], prompt[256];
        snprintf(id, sizeof(id), "c%d", i);
        snprintf(prompt, sizeof(prompt), "%s number %d", i % 2 ? SIMPLE_PROMPT : COMPLEX_PROMPT, i);
        router_stream_req_t a = {.id = id,
                                 .prompt = prompt,
                                 .max_tokens = 16,
                                 .policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_BYPASS};
        router_stream_submit(g[i], &a);
    }
    int small = 0, large = 0;
    for (int i = 0; i < N_STREAMS; i++) {
        char id[16];
        snprintf(id, sizeof(id), "c%d", i);
        router_stream_rec_t r = router_stream_finish(g[i], id);
        cr_assert(r.done, "%s: %d %s", id, r.err_code, r.err_msg);
        cr_assert(r.indexes_ok);
        cr_assert_eq(r.started, 1);
        const char *pool = router_stream_route(g[i], id)->pool;
        small += strcmp(pool, "small") == 0;
        large += strcmp(pool, "large") == 0;
        router_stream_close(g[i]);
    }
    cr_assert_eq(small, N_STREAMS / 2);
    cr_assert_eq(large, N_STREAMS / 2);
    suite_end(&S);
}

/* Reads what fd has (non-blocking) into buf at *len; returns false at end of file. */
static bool drain_fd(int fd, char *buf, size_t cap, size_t *len, int wait_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, wait_ms) <= 0)
        return true;
    ssize_t n = read(fd, buf + *len, cap - 1 - *len);
    if (n <= 0)
        return false;
    *len += (size_t)n;
    buf[*len] = '\0';
    return *len < cap - 1;
}

Test(router, llmctl_ctrl_c_cancels_the_request_and_still_prints_the_summary, .init = start_slow)
{
    int out[2], err[2];
    cr_assert_eq(pipe(out), 0);
    cr_assert_eq(pipe(err), 0);
    char router[TEST_ADDR_LEN];
    test_addr(router, S.router.port);
    /* posix_spawn, not fork: this process runs gRPC threads, and a forked child would run
     * gRPC's fork handlers before its exec (seen to hang it). */
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    posix_spawn_file_actions_addclose(&fa, err[0]);
    char *argv[] = {"llmctl",     "--router",     router,      "--pool",
                    "large",      "--max-tokens", "1800",      "--ignore-eos",
                    "--priority", "batch",        "Tell me a long story", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, test_env_path("LLMSERVE_LLMCTL_BIN"), &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(rc, 0, "posix_spawn: %s", strerror(rc));
    close(out[1]);
    close(err[1]);
    static char so[65536], se[8192];
    size_t no = 0, ne = 0;
    int64_t until = ls_now_us() + 60000000;
    while (no < 20 && ls_now_us() < until && drain_fd(out[0], so, sizeof(so), &no, 50))
        ;
    if (no < 20) {
        kill(pid, SIGKILL);
        drain_fd(err[0], se, sizeof(se), &ne, 100);
        waitpid(pid, NULL, 0);
    }
    cr_assert_geq(no, 20, "llmctl printed %zu bytes: %s; stderr: %s", no, so, se);
    int64_t t0 = ls_now_us();
    cr_assert_eq(kill(pid, SIGINT), 0);
    int status = 0;
    bool out_open = true, err_open = true;
    while ((out_open || err_open) && ls_now_us() < t0 + 10000000) {
        if (out_open)
            out_open = drain_fd(out[0], so, sizeof(so), &no, 10);
        if (err_open)
            err_open = drain_fd(err[0], se, sizeof(se), &ne, 10);
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    int64_t took_ms = (ls_now_us() - t0) / 1000;
    close(out[0]);
    close(err[0]);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 130, "status %d, stderr: %s", status, se);
    cr_assert_lt(took_ms, 5000, "llmctl took %lld ms to stop", (long long)took_ms);
    cr_assert(strstr(se, "cancelling"), "%s", se);
    cr_assert(strstr(se, "finish    cancelled"), "the summary must still print: %s", se);
    cr_assert(strstr(se, "priority=batch"), "the route line names the class: %s", se);
    cr_assert(strstr(se, "route     pool=large"), "%s", se);
    suite_end(&S);
}

Test(router, duplicate_id_in_flight_is_refused_and_the_first_goes_on, .init = start_slow)
{
    router_stream_t *g = gen_open();
    router_stream_req_t a = {.id = "dup",
                             .prompt = SIMPLE_PROMPT,
                             .hint = "large",
                             .max_tokens = 30,
                             .ignore_eos = true};
    /* The large pool is frozen, so the first request is surely still in flight (waiting
     * for its first token, well inside the TTFT budget) when the second arrives, however
     * fast this machine decodes. */
    for (int i = 0; i < S.n_large; i++)
        suite_freeze(&S.large[i]);
    router_stream_submit(g, &a);
    usleep(50000);
    router_stream_submit(g, &a);
    for (int i = 0; i < 100 && router_stream_wait(g, "dup", 0, 0).refused_duplicates == 0; i++)
        usleep(10000);
    for (int i = 0; i < S.n_large; i++)
        suite_thaw(&S.large[i]);
    router_stream_rec_t r = router_stream_finish(g, "dup");
    cr_assert_eq(r.refused_duplicates, 1, "the second submit must be refused");
    cr_assert(r.done, "the first request must go on: %d %s", r.err_code, r.err_msg);
    cr_assert_eq(r.tokens, 30, "tokens %d finish %d completion %u", r.tokens, r.finish,
                 r.completion_tokens);
    router_stream_close(g);
    suite_end(&S);
}

/* The router's health as a probe sees it (SERVING 1, NOT_SERVING 2), or -code. */
static int router_health(void)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "";
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_call_opts_t o = {.timeout_us = 5000000};
    rpc_channel_unary(S.ch, "/grpc.health.v1.Health/Check", &req.base,
                      &grpc__health__v1__health_check_response__descriptor, &o, &resp, &st);
    int status = resp ? (int)((Grpc__Health__V1__HealthCheckResponse *)resp)->status : -st.code;
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return status;
}

static void start_drain(void)
{
    static const char *const grace[] = {"--grace-ms", "30000", NULL};
    suite_opts_t o = {.n_small = 1, .n_large = 1, .slow_large = true, .router_args = grace};
    suite_start(&S, &o);
}

/* SIGTERM: health NOT_SERVING at once, new requests refused, the one in flight finishes,
 * then every open stream (an idle one too) ends with UNAVAILABLE and the router exits 0. */
Test(router, sigterm_drains_what_is_in_flight_and_refuses_the_rest, .init = start_drain)
{
    router_stream_t *g = gen_open();
    router_stream_t *idle = gen_open();
    router_stream_req_t a = {.id = "long",
                             .prompt = SIMPLE_PROMPT,
                             .hint = "large",
                             .max_tokens = 60,
                             .ignore_eos = true};
    test_proc_t *up = run_then_freeze(g, &a, 3);
    cr_assert_eq(router_health(), 1);
    cr_assert_eq(kill(S.router.pid, SIGTERM), 0);
    int health = 1;
    for (int i = 0; i < 200 && health == 1; i++) {
        usleep(10000);
        health = router_health();
    }
    cr_assert_eq(health, 2, "health after SIGTERM: %d", health);
    router_stream_req_t b = {.id = "late", .prompt = SIMPLE_PROMPT, .max_tokens = 4};
    router_stream_submit(g, &b);
    router_stream_rec_t late = router_stream_finish(g, "late");
    cr_assert_eq(late.err_code, GRPC_STATUS_UNAVAILABLE, "late: %d %s", late.err_code,
                 late.err_msg);
    cr_assert_not_null(strstr(late.err_msg, "shutting down"), "%s", late.err_msg);
    cr_assert_not(router_stream_wait_end(idle, 300), "an idle stream ended before the drain");
    suite_thaw(up);
    router_stream_rec_t r = router_stream_finish(g, "long");
    cr_assert(r.done, "the request in flight: %d %s", r.err_code, r.err_msg);
    cr_assert_eq(r.tokens, 60, "the drain cut it short");
    cr_assert(router_stream_wait_end(g, 10000));
    cr_assert(router_stream_wait_end(idle, 10000), "the idle stream was left open");
    cr_assert_eq(router_stream_status(idle).code, GRPC_STATUS_UNAVAILABLE);
    cr_assert_eq(router_stream_status(g).code, GRPC_STATUS_UNAVAILABLE);
    router_stream_destroy(g);
    router_stream_destroy(idle);
    int st = test_proc_stop(&S.router, SIGTERM, 30000);
    cr_assert_eq(st, 0, "router exit status %d", st);
    suite_end(&S);
}
