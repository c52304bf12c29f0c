/*
 * test_engine.c - what services/cache/engine.c reports through the metrics seam: lookups
 * and hits by tier, stores, L1 evictions, memcached call times, and the breaker and
 * degraded gauges, against a real memcached (tools/test.sh's LLMSERVE_TEST_MEMCACHED, or
 * one of the test's own where it must die and come back).
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "engine.h"
#include "support/memcached.h"
#include "support/recording_reporter.h"
#include "svc/metric_names.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static test_memcached_t g_own;
static char g_conf[96];
static char g_model[64]; /* fresh per test: a shared memcached keeps other runs' answers */

static void setup(void)
{
    snprintf(g_model, sizeof(g_model), "engine-test-%d-%lld", (int)getpid(),
             (long long)ls_now_us());
    const char *addr = getenv("LLMSERVE_TEST_MEMCACHED");
    if (addr && *addr) {
        snprintf(g_conf, sizeof(g_conf), "--SERVER=%s", addr);
        return;
    }
    cr_assert_eq(test_memcached_start(&g_own, 0), 0);
    test_memcached_config(&g_own, g_conf, sizeof(g_conf));
}

static void teardown(void)
{
    test_memcached_stop(&g_own, SIGKILL);
}

TestSuite(engine, .init = setup, .fini = teardown, .timeout = 60);

typedef struct {
    engine_t *eng;
    cache_mc_t *mc; /* this thread's client, as a worker's */
} rig_t;

static rig_t rig_make(const char *conf, size_t l1_bytes, bool semantic, svc_reporter_t *rep)
{
    engine_config_t c;
    engine_config_init(&c);
    c.l1_bytes = l1_bytes;
    c.semantic = semantic;
    c.pool.workers = 1;
    c.pool.mc.servers = conf;
    c.probe_interval_us = 50000; /* 50 ms */
    c.reporter = rep;
    rig_t rig = {engine_create(&c), cache_mc_create(&c.pool.mc)};
    cr_assert_not_null(rig.eng);
    cr_assert_not_null(rig.mc);
    return rig;
}

static void rig_free(rig_t *rig)
{
    cache_mc_destroy(rig->mc);
    engine_destroy(rig->eng);
}

static cache_key_input_t key_of(const char *prompt)
{
    cache_key_input_t in = {.tenant = "", .model = g_model, .prompt = prompt};
    in.sampling.max_tokens = 16;
    return in;
}

static void store(rig_t *rig, const char *prompt, const char *answer, bool semantic)
{
    cache_key_input_t in = key_of(prompt);
    engine_answer_t a = {.text = answer,
                         .text_len = strlen(answer),
                         .finish_reason = 1,
                         .completion_tokens = 3,
                         .semantic = semantic};
    bool stored = false;
    const char *reason = "";
    cr_assert_eq(engine_store(rig->eng, rig->mc, &in, &a, NULL, &stored, &reason), LS_OK);
    cr_assert(stored, "not stored: %s", reason);
}

/* A worker's lookup; returns whether it hit (and how, in *h's flags). */
static bool lookup(rig_t *rig, const char *prompt, bool semantic, engine_hit_t *h)
{
    cache_key_input_t in = key_of(prompt);
    cr_assert_eq(engine_lookup(rig->eng, rig->mc, &in, semantic, 0.5f, NULL, h), LS_OK);
    bool hit = h->hit;
    return hit;
}

static double tier(recording_reporter_t *rr, const char *name, const char *t)
{
    svc_label_t l = {"tier", t};
    return recording_reporter_sum(rr, name, &l, 1);
}

static void expect_contract(recording_reporter_t *rr)
{
    static const char *const tier_key[] = {"tier"}, *const op_key[] = {"op"};
    cr_expect_eq(recording_reporter_misfits(rr, M_CACHE_LOOKUPS, RECORDING_COUNTER, tier_key, 1),
                 0);
    cr_expect_eq(recording_reporter_misfits(rr, M_CACHE_HITS, RECORDING_COUNTER, tier_key, 1), 0);
    cr_expect_eq(recording_reporter_misfits(rr, M_CACHE_STORES, RECORDING_COUNTER, NULL, 0), 0);
    cr_expect_eq(recording_reporter_misfits(rr, M_CACHE_EVICTIONS, RECORDING_COUNTER, NULL, 0), 0);
    cr_expect_eq(recording_reporter_misfits(rr, M_CACHE_MEMCACHED, RECORDING_OBSERVE, op_key, 1),
                 0);
    cr_expect_eq(recording_reporter_misfits(rr, M_CACHE_BREAKER_OPEN, RECORDING_GAUGE, NULL, 0), 0);
    cr_expect_eq(recording_reporter_misfits(rr, M_CACHE_DEGRADED, RECORDING_GAUGE, NULL, 0), 0);
}

Test(engine, lookups_and_hits_by_tier_and_stores)
{
    recording_reporter_t *rr = recording_reporter_create();
    rig_t a = rig_make(g_conf, 1 << 20, true, recording_reporter_base(rr));
    const char *prompt = "tell me a story about a brave little dog and a red ball";
    engine_hit_t h;

    /* A miss asks every tier once. */
    cr_assert_not(lookup(&a, prompt, true, &h));
    cr_expect_eq(tier(rr, M_CACHE_LOOKUPS, "l1"), 1);
    cr_expect_eq(tier(rr, M_CACHE_LOOKUPS, "memcached"), 1);
    cr_expect_eq(tier(rr, M_CACHE_LOOKUPS, "semantic"), 1);
    cr_expect_eq(recording_reporter_sum(rr, M_CACHE_HITS, NULL, 0), 0);

    store(&a, prompt, "once there was a dog", true);
    cr_expect_eq(recording_reporter_sum(rr, M_CACHE_STORES, NULL, 0), 1);

    /* The completion-queue path answers from L1 (the generation is fresh). */
    cache_key_input_t in = key_of(prompt);
    cr_assert_eq(engine_lookup_fast(a.eng, &in, &h), LS_OK);
    cr_assert(h.hit && h.from_l1);
    engine_hit_clear(&h);
    cr_expect_eq(tier(rr, M_CACHE_LOOKUPS, "l1"), 2);
    cr_expect_eq(tier(rr, M_CACHE_HITS, "l1"), 1);

    /* A paraphrase misses L1 and memcached and hits the semantic index. */
    cr_assert(lookup(&a, "tell me a story about a brave little dog and a blue ball", true, &h));
    cr_assert(h.semantic);
    engine_hit_clear(&h);
    cr_expect_eq(tier(rr, M_CACHE_LOOKUPS, "l1"), 3);
    cr_expect_eq(tier(rr, M_CACHE_LOOKUPS, "memcached"), 2);
    cr_expect_eq(tier(rr, M_CACHE_LOOKUPS, "semantic"), 2);
    cr_expect_eq(tier(rr, M_CACHE_HITS, "semantic"), 1);
    cr_expect_eq(tier(rr, M_CACHE_HITS, "l1"), 1, "the pointed-to answer counts as semantic");

    /* Another instance, without L1: memcached answers, and the L1 tier is not counted. */
    recording_reporter_t *rr2 = recording_reporter_create();
    rig_t b = rig_make(g_conf, 0, false, recording_reporter_base(rr2));
    cr_assert(lookup(&b, prompt, false, &h));
    cr_assert_not(h.from_l1);
    engine_hit_clear(&h);
    cr_expect_eq(tier(rr2, M_CACHE_LOOKUPS, "memcached"), 1);
    cr_expect_eq(tier(rr2, M_CACHE_HITS, "memcached"), 1);
    cr_expect_eq(recording_reporter_calls(rr2, M_CACHE_LOOKUPS, NULL, 0), 1);

    /* Every memcached call was timed: gets (answers, generations) and sets. */
    svc_label_t get = {"op", "get"}, set = {"op", "set"};
    cr_expect_geq(recording_reporter_observations(rr, M_CACHE_MEMCACHED, &get, 1, NULL, 0), 2);
    cr_expect_geq(recording_reporter_observations(rr, M_CACHE_MEMCACHED, &set, 1, NULL, 0), 1);
    double v = -1;
    cr_expect(recording_reporter_gauge(rr, M_CACHE_BREAKER_OPEN, NULL, 0, &v));
    cr_expect_eq(v, 0);
    cr_expect(recording_reporter_gauge(rr, M_CACHE_DEGRADED, NULL, 0, &v));
    cr_expect_eq(v, 0);
    expect_contract(rr);
    expect_contract(rr2);
    rig_free(&b);
    rig_free(&a);
    recording_reporter_destroy(rr2);
    recording_reporter_destroy(rr);
}

Test(engine, l1_evictions_are_counted)
{
    recording_reporter_t *rr = recording_reporter_create();
    /* Room for a few answers of 1000 bytes. */
    rig_t a = rig_make(g_conf, 4096, false, recording_reporter_base(rr));
    char answer[1001];
    memset(answer, 'x', 1000);
    answer[1000] = '\0';
    enum { N = 10 };
    for (int i = 0; i < N; i++) {
        char prompt[32];
        snprintf(prompt, sizeof(prompt), "question number %d", i);
        store(&a, prompt, answer, false);
    }
    engine_stats_t st;
    engine_stats(a.eng, &st);
    cr_assert_lt(st.entries, N);
    cr_expect_eq(recording_reporter_sum(rr, M_CACHE_EVICTIONS, NULL, 0), N - (double)st.entries);
    cr_expect_eq(recording_reporter_sum(rr, M_CACHE_STORES, NULL, 0), N);
    expect_contract(rr);
    rig_free(&a);
    recording_reporter_destroy(rr);
}

/* Waits until gauge name was last set to want. */
static bool wait_gauge(recording_reporter_t *rr, const char *name, double want, int timeout_ms)
{
    int64_t end = ls_now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        double v = -1;
        if (recording_reporter_gauge(rr, name, NULL, 0, &v) && v == want)
            return true;
        if (ls_now_us() >= end)
            return false;
        ls_sleep_us(5000);
    }
}

Test(engine, breaker_and_degraded_gauges_follow_memcached)
{
    test_memcached_t m = {0};
    cr_assert_eq(test_memcached_start(&m, 0), 0);
    char conf[96];
    test_memcached_config(&m, conf, sizeof(conf));
    recording_reporter_t *rr = recording_reporter_create();
    rig_t a = rig_make(conf, 1 << 20, false, recording_reporter_base(rr));
    cr_assert(wait_gauge(rr, M_CACHE_BREAKER_OPEN, 0, 1000), "the gauge starts at 0");

    test_memcached_stop(&m, SIGKILL);
    engine_hit_t h;
    for (int i = 0; i < 4; i++) { /* failures in a row open the breaker */
        lookup(&a, "anything at all", false, &h);
        engine_hit_clear(&h);
    }
    cr_expect(wait_gauge(rr, M_CACHE_BREAKER_OPEN, 1, 2000), "breaker open not reported");
    cr_expect(wait_gauge(rr, M_CACHE_DEGRADED, 1, 2000), "degraded not reported");

    /* Back on the same port: the idle worker's probe closes the breaker. */
    cr_assert_eq(test_memcached_start(&m, m.port), 0);
    cr_expect(wait_gauge(rr, M_CACHE_BREAKER_OPEN, 0, 10000), "breaker close not reported");
    cr_expect(wait_gauge(rr, M_CACHE_DEGRADED, 0, 10000), "degraded end not reported");
    expect_contract(rr);
    rig_free(&a);
    recording_reporter_destroy(rr);
    test_memcached_stop(&m, SIGKILL);
}
