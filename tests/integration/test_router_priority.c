/*
 * test_router_priority.c - scheduling classes in the router: the order in which a full
 * pool's queue is served (class, then arrival, with aging), the class an API key sets
 * and bounds, and the class carried on GenerateStarted.
 *
 * Real processes (tests/support/suite.h): one small instance that holds one request
 * running and one waiting (--max-batch 1 --max-queue 1) and pauses after every step
 * (--step-delay-us), so two long answers fill it while the router's queue fills.  The
 * order of the queued requests' started events is the order the router granted them
 * room: it submits to the instance as it grants.
 */
#define _GNU_SOURCE
#include "llmserve/v1/router.pb-c.h"
#include "rpc/metadata.h"
#include "support/router_stream.h"
#include "support/suite.h"
#include "support/tmpdir.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROMPT "Once upon a time there was a cat"
#define INTERACTIVE LLMSERVE__V1__PRIORITY__PRIORITY_INTERACTIVE
#define NORMAL LLMSERVE__V1__PRIORITY__PRIORITY_NORMAL
#define BATCH LLMSERVE__V1__PRIORITY__PRIORITY_BATCH

static suite_t S;

static void stop_suite(void)
{
    suite_stop(&S);
}

TestSuite(router_priority, .fini = stop_suite, .timeout = 240);

static const char *const slow_tight_instance[] = {"--max-batch",     "1",     "--max-queue", "1",
                                                  "--step-delay-us", "20000", NULL};

static void start_with_aging(const char *aging_ms)
{
    const char *router[] = {"--tiers", "", "--priority-aging-ms", aging_ms, NULL};
    suite_opts_t o = {.n_small = 1, .inference_args = slow_tight_instance, .router_args = router};
    suite_start(&S, &o);
}

static void start_no_aging(void)
{
    start_with_aging("600000");
}

static void start_fast_aging(void)
{
    start_with_aging("300");
}

/* a1 runs and a2 waits in the instance, which is then full for the router (capacity 2);
 * both are long answers (20 ms a step), ended by cancels. */
static void fill_instance(router_stream_t *g)
{
    router_stream_req_t a1 = {.id = "a1", .prompt = PROMPT, .max_tokens = 1000, .ignore_eos = true};
    router_stream_req_t a2 = a1;
    a2.id = "a2";
    router_stream_submit(g, &a1);
    router_stream_rec_t r = router_stream_wait(g, "a1", 1, 60000);
    cr_assert_gt(r.tokens, 0, "a1: %d %s", r.err_code, r.err_msg);
    router_stream_submit(g, &a2);
    usleep(200000);
}

static void submit_class(router_stream_t *g, const char *id, int priority)
{
    router_stream_req_t r = {.id = id, .prompt = PROMPT, .max_tokens = 3, .priority = priority};
    router_stream_submit(g, &r);
    usleep(30000); /* arrivals in a known order */
    cr_assert_eq(router_stream_wait(g, id, 0, 0).started_rank, 0, "%s was not queued", id);
}

static void free_instance(router_stream_t *g)
{
    router_stream_cancel(g, "a1");
    router_stream_cancel(g, "a2");
    router_stream_finish(g, "a1");
    router_stream_finish(g, "a2");
}

Test(router_priority, interactive_requests_pass_batch_ones_that_waited_longer,
     .init = start_no_aging)
{
    router_stream_t *g = router_stream_open(S.ch, suite_call_opts(&S));
    fill_instance(g);
    static const char *const batch[] = {"b1", "b2", "b3"};
    static const char *const inter[] = {"i1", "i2", "i3"};
    for (int i = 0; i < 3; i++)
        submit_class(g, batch[i], BATCH);
    submit_class(g, "n1", 0); /* unspecified: normal, no key */
    for (int i = 0; i < 3; i++)
        submit_class(g, inter[i], INTERACTIVE);
    free_instance(g);
    /* Granted: i1 i2 i3 (arrival order), then n1, then b1 b2 b3. */
    static const char *const want[] = {"i1", "i2", "i3", "n1", "b1", "b2", "b3"};
    int prev = 0;
    for (int i = 0; i < 7; i++) {
        router_stream_rec_t r = router_stream_finish(g, want[i]);
        cr_assert(r.done, "%s: %d %s", want[i], r.err_code, r.err_msg);
        cr_assert_gt(r.started_rank, prev, "%s started at rank %d, before the one ahead (%d)",
                     want[i], r.started_rank, prev);
        prev = r.started_rank;
    }
    cr_assert_eq(router_stream_route(g, "i1")->priority, INTERACTIVE);
    cr_assert_eq(router_stream_route(g, "n1")->priority, NORMAL);
    cr_assert_eq(router_stream_route(g, "b3")->priority, BATCH);
    router_stream_close(g);
    suite_end(&S);
}

Test(router_priority, a_batch_request_that_waited_two_aging_periods_goes_first,
     .init = start_fast_aging)
{
    router_stream_t *g = router_stream_open(S.ch, suite_call_opts(&S));
    fill_instance(g);
    submit_class(g, "b1", BATCH);
    usleep(700000); /* two periods of 300 ms: b1 counts as interactive, and came first */
    submit_class(g, "i1", INTERACTIVE);
    submit_class(g, "b2", BATCH); /* fresh: behind the interactive ones, unlike FIFO */
    submit_class(g, "i2", INTERACTIVE);
    free_instance(g);
    static const char *const want[] = {"b1", "i1", "i2", "b2"};
    int prev = 0;
    for (int i = 0; i < 4; i++) {
        router_stream_rec_t r = router_stream_finish(g, want[i]);
        cr_assert(r.done, "%s: %d %s", want[i], r.err_code, r.err_msg);
        cr_assert_gt(r.started_rank, prev, "%s started at rank %d, before the one ahead (%d)",
                     want[i], r.started_rank, prev);
        prev = r.started_rank;
    }
    cr_assert_eq(router_stream_route(g, "b1")->priority, BATCH,
                 "aging changes the order, not the class reported");
    router_stream_close(g);
    suite_end(&S);
}

/* ---- API keys ------------------------------------------------------------------------ */

#define KEY_BATCH "batch-key-for-the-priority-tests-0123"
#define KEY_FREE "free-key-for-the-priority-tests-45678"

static test_tmpdir_t T;
static char g_keys[192];

static void start_with_keys(void)
{
    cr_assert_eq(test_tmpdir_make(&T, "llmserve-prio-keys"), 0);
    test_tmpdir_file(&T, "api-keys", g_keys, sizeof(g_keys));
    FILE *f = fopen(g_keys, "w");
    cr_assert_not_null(f);
    fputs(KEY_BATCH " evals priority=batch\n" KEY_FREE "\n", f);
    fclose(f);
    const char *router[] = {"--tiers", "", "--api-keys", g_keys, NULL};
    suite_opts_t o = {.n_small = 1, .router_args = router};
    suite_start(&S, &o);
}

static void stop_with_keys(void)
{
    suite_stop(&S);
    test_tmpdir_remove(&T);
}

/* One request with key and priority on a stream of its own; its record, and its
 * started event's class in *started (-1: none). */
static router_stream_rec_t keyed(const char *key, int priority, int *started)
{
    rpc_md_t md = RPC_MD_INIT;
    char v[128];
    snprintf(v, sizeof(v), "Bearer %s", key);
    rpc_md_add(&md, "authorization", v);
    rpc_call_opts_t o = *suite_call_opts(&S);
    o.metadata = &md;
    router_stream_t *g = router_stream_open(S.ch, &o);
    router_stream_req_t req = {.id = "k", .prompt = PROMPT, .max_tokens = 2, .priority = priority};
    router_stream_submit(g, &req);
    router_stream_rec_t r = router_stream_finish(g, "k");
    *started = r.started ? (int)router_stream_route(g, "k")->priority : -1;
    router_stream_close(g);
    rpc_md_clear(&md);
    return r;
}

Test(router_priority, a_keys_class_is_the_default_and_the_ceiling, .init = start_with_keys,
     .fini = stop_with_keys)
{
    int cls;
    router_stream_rec_t r = keyed(KEY_BATCH, 0, &cls);
    cr_assert(r.done, "%d %s", r.err_code, r.err_msg);
    cr_assert_eq(cls, BATCH, "unspecified takes the key's class");
    r = keyed(KEY_BATCH, BATCH, &cls);
    cr_assert(r.done, "%d %s", r.err_code, r.err_msg);
    r = keyed(KEY_BATCH, INTERACTIVE, &cls);
    cr_assert_eq(r.err_code, GRPC_STATUS_INVALID_ARGUMENT, "%d %s", r.err_code, r.err_msg);
    cr_assert(strstr(r.err_msg, "interactive is above this API key's class batch"), "%s",
              r.err_msg);
    cr_assert_eq(cls, -1, "a refused request never starts");
    r = keyed(KEY_BATCH, NORMAL, &cls);
    cr_assert_eq(r.err_code, GRPC_STATUS_INVALID_ARGUMENT, "%d %s", r.err_code, r.err_msg);
    /* A key without a class: any class, NORMAL by default. */
    r = keyed(KEY_FREE, 0, &cls);
    cr_assert(r.done, "%d %s", r.err_code, r.err_msg);
    cr_assert_eq(cls, NORMAL);
    r = keyed(KEY_FREE, INTERACTIVE, &cls);
    cr_assert(r.done, "%d %s", r.err_code, r.err_msg);
    cr_assert_eq(cls, INTERACTIVE);
    /* An unknown value is refused whatever the key. */
    r = keyed(KEY_FREE, 9, &cls);
    cr_assert_eq(r.err_code, GRPC_STATUS_INVALID_ARGUMENT, "%d %s", r.err_code, r.err_msg);
    cr_assert(strstr(r.err_msg, "priority 9 is not a known class"), "%s", r.err_msg);
    suite_end(&S);
}

/* ---- cache hits ---------------------------------------------------------------------- */

static void start_with_cache(void)
{
    static const char *const router[] = {"--tiers", "", NULL};
    suite_opts_t o = {.n_small = 1, .cache = true, .router_args = router};
    suite_start(&S, &o);
}

Test(router_priority, a_cache_hit_reports_the_class_too, .init = start_with_cache)
{
    router_stream_t *g = router_stream_open(S.ch, suite_call_opts(&S));
    router_stream_req_t first = {
        .id = "miss", .prompt = "The little dog ran to the", .max_tokens = 8, .priority = BATCH};
    router_stream_submit(g, &first);
    router_stream_rec_t r = router_stream_finish(g, "miss");
    cr_assert(r.done, "%d %s", r.err_code, r.err_msg);
    cr_assert_not(router_stream_route(g, "miss")->cache_hit);
    /* The store reaches the cache around the first answer's Done: ask until it hits. */
    bool hit = false;
    char id[32];
    for (int i = 0; i < 40 && !hit; i++) {
        snprintf(id, sizeof(id), "hit%d", i);
        router_stream_req_t again = first;
        again.id = id;
        router_stream_submit(g, &again);
        r = router_stream_finish(g, id);
        cr_assert(r.done, "%s: %d %s", id, r.err_code, r.err_msg);
        const Llmserve__V1__GenerateStarted *s = router_stream_route(g, id);
        hit = s->cache_hit;
        cr_assert_eq(s->priority, BATCH, "%s (hit %d)", id, (int)hit);
        if (!hit)
            usleep(50000);
    }
    cr_assert(hit, "the repeated prompt never hit the cache");
    /* The class is not part of the cache key: unspecified hits the same entry, as
     * NORMAL. */
    router_stream_req_t plain = first;
    plain.id = "plain";
    plain.priority = 0;
    router_stream_submit(g, &plain);
    r = router_stream_finish(g, "plain");
    cr_assert(r.done, "%d %s", r.err_code, r.err_msg);
    cr_assert(router_stream_route(g, "plain")->cache_hit);
    cr_assert_eq(router_stream_route(g, "plain")->priority, NORMAL);
    router_stream_close(g);
    suite_end(&S);
}
