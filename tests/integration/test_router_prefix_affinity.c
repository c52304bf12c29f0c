/*
 * test_router_prefix_affinity.c - requests that begin alike go to one instance (its
 * prefix KV cache holds their beginning) while load allows, different beginnings spread
 * over the pool, and load beyond --prefix-affinity-slack spills a prefix's requests to
 * the least loaded instances.
 *
 * Real processes (tests/support/suite.h): three small instances, no large pool, no
 * cache (a cache hit would start no instance).
 */
#define _GNU_SOURCE
#include "llmserve/v1/router.pb-c.h"
#include "support/router_stream.h"
#include "support/suite.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static suite_t S;

static void stop_suite(void)
{
    suite_stop(&S);
}

TestSuite(router_prefix_affinity, .fini = stop_suite, .timeout = 240);

static void start_three(void)
{
    static const char *const router[] = {"--tiers", "", NULL};
    suite_opts_t o = {.n_small = 3, .router_args = router};
    suite_start(&S, &o);
}

/* A 300-byte system-like preamble shared by every prompt of the shared-prefix tests. */
static void shared_prefix(char *buf, size_t len)
{
    static const char line[] = "You are a careful assistant for the llmserve suite. ";
    size_t n = 0;
    while (n + sizeof(line) - 1 < 300) {
        memcpy(buf + n, line, sizeof(line) - 1);
        n += sizeof(line) - 1;
    }
    memset(buf + n, '.', 300 - n);
    cr_assert_lt(300, len);
    buf[300] = '\0';
}

/* The index of the instance at addr in S.small. */
static int instance_index(const char *addr)
{
    test_proc_t *p = suite_instance(&S, addr);
    for (int i = 0; i < S.n_small; i++)
        if (&S.small[i] == p)
            return i;
    cr_assert_fail("%s is not a small instance", addr);
    return -1;
}

Test(router_prefix_affinity, a_shared_prefix_keeps_to_one_instance_while_unloaded,
     .init = start_three)
{
    router_stream_t *g = router_stream_open(S.ch, suite_call_opts(&S));
    char prefix[400], prompt[600], id[32];
    shared_prefix(prefix, sizeof(prefix));
    int first = -1;
    for (int i = 0; i < 12; i++) {
        snprintf(prompt, sizeof(prompt), "%s Question %d: what is %d plus %d?", prefix, i, i,
                 i * 7);
        snprintf(id, sizeof(id), "p%d", i);
        router_stream_req_t r = {.id = id, .prompt = prompt, .max_tokens = 2};
        router_stream_submit(g, &r);
        router_stream_rec_t rec = router_stream_finish(g, id); /* one at a time: unloaded */
        cr_assert(rec.done, "%s: %d %s", id, rec.err_code, rec.err_msg);
        const Llmserve__V1__GenerateStarted *s = router_stream_route(g, id);
        int at = instance_index(s->instance);
        if (first < 0)
            first = at;
        cr_assert_eq(at, first, "%s went to instance %d, the prefix's is %d", id, at, first);
        cr_assert(strstr(s->route_reason, "prefix affinity"), "%s: %s", id, s->route_reason);
    }
    router_stream_close(g);
    suite_end(&S);
}

Test(router_prefix_affinity, different_prefixes_spread_over_the_instances, .init = start_three)
{
    router_stream_t *g = router_stream_open(S.ch, suite_call_opts(&S));
    int per[3] = {0};
    char prompt[128], id[32];
    for (int i = 0; i < 24; i++) {
        snprintf(prompt, sizeof(prompt), "Topic %d: tell me a story about the number %d.", i,
                 i * 31);
        snprintf(id, sizeof(id), "d%d", i);
        router_stream_req_t r = {.id = id, .prompt = prompt, .max_tokens = 2};
        router_stream_submit(g, &r);
        router_stream_rec_t rec = router_stream_finish(g, id);
        cr_assert(rec.done, "%s: %d %s", id, rec.err_code, rec.err_msg);
        per[instance_index(router_stream_route(g, id)->instance)]++;
    }
    int used = (per[0] > 0) + (per[1] > 0) + (per[2] > 0);
    cr_assert_geq(used, 2, "24 prefixes on %d instance(s): %d %d %d", used, per[0], per[1], per[2]);
    router_stream_close(g);
    suite_end(&S);
}

static void start_three_slow_slack_one(void)
{
    static const char *const router[] = {"--tiers", "", "--prefix-affinity-slack", "1", NULL};
    static const char *const inference[] = {"--step-delay-us", "20000", NULL};
    suite_opts_t o = {.n_small = 3, .router_args = router, .inference_args = inference};
    suite_start(&S, &o);
}

Test(router_prefix_affinity, load_beyond_the_slack_spills_to_other_instances,
     .init = start_three_slow_slack_one)
{
    router_stream_t *g = router_stream_open(S.ch, suite_call_opts(&S));
    char prefix[400], prompt[600], id[32];
    shared_prefix(prefix, sizeof(prefix));
    enum { N = 6 };
    /* All at once, each long enough (20 ms a step) to be outstanding while the rest
     * are picked. */
    for (int i = 0; i < N; i++) {
        snprintf(prompt, sizeof(prompt), "%s Request %d.", prefix, i);
        snprintf(id, sizeof(id), "l%d", i);
        router_stream_req_t r = {.id = id, .prompt = prompt, .max_tokens = 30, .ignore_eos = true};
        router_stream_submit(g, &r);
    }
    int per[3] = {0}, kept = 0;
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "l%d", i);
        router_stream_rec_t rec = router_stream_finish(g, id);
        cr_assert(rec.done, "%s: %d %s", id, rec.err_code, rec.err_msg);
        const Llmserve__V1__GenerateStarted *s = router_stream_route(g, id);
        per[instance_index(s->instance)]++;
        kept += strstr(s->route_reason, "prefix affinity") != NULL;
    }
    int most = per[0] > per[1] ? per[0] : per[1];
    most = most > per[2] ? most : per[2];
    /* Slack 1: the prefix's instance takes a request while it has at most one more than
     * the least loaded, so 6 at once end up 3 there (or fewer), the rest elsewhere. */
    cr_assert_leq(most, 3, "%d of %d on one instance: %d %d %d", most, N, per[0], per[1], per[2]);
    cr_assert_geq(kept, 2, "the prefix's instance took only %d", kept);
    cr_assert_lt(kept, N, "nothing spilled");
    router_stream_close(g);
    suite_end(&S);
}
