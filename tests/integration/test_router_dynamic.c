/*
 * test_router_dynamic.c - the router over a discovery source whose lists change while it
 * serves (as Consul's do): pools the policy names that have no instance yet, and cache
 * instances that come and go under load.
 *
 * The router runs in this process over a discovery source the test drives
 * (support/driven_discovery), in front of a real inference process (the tiny model of
 * the router_models fixture) and, for the caches, in-process Cache.Session servers
 * (support/inproc_cache) that answer lookups with misses a little late, so that lookups
 * are in flight when their cache goes.
 *
 * Checked: a static list must give an instance of every pool the policy names; a dynamic
 * one may give none, and then a request for such a pool ends with UNAVAILABLE saying so
 * (a pool nobody names stays INVALID_ARGUMENT); an instance delivered later serves within
 * a second.  While the cache list cycles through {A}, {A, B}, {B}, {}, {B, A} under load,
 * every request ends exactly once without an error, both caches are asked and stored
 * to, every lookup a cache got is answered, and removed caches are freed, their streams
 * ended.
 *
 * LLMSERVE_CACHE_CHURN_CYCLES sets the number of cache list changes (default 200).
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "llmserve/v1/router.pb-c.h"
#include "router.h"
#include "router_int.h" /* what the router holds: r->caches, r->reaper */
#include "rpc/server.h"
#include "support/inproc_cache.h"
#include "support/channel.h"
#include "support/driven_discovery.h"
#include "support/proc.h"
#include "support/router_load.h"
#include "support/router_stream.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CYCLES 200

static test_proc_t g_inf;
static inproc_cache_t *g_cache_a, *g_cache_b;

static void stop_all(void)
{
    test_proc_stop(&g_inf, SIGTERM, 30000);
    inproc_cache_stop(g_cache_a);
    inproc_cache_stop(g_cache_b);
}

TestSuite(router_dynamic, .fini = stop_all, .timeout = 300);

static void start_inference(test_proc_t *p)
{
    char model[512], tok[512];
    snprintf(model, sizeof(model), "%s/small.bin", test_env_path("LLMSERVE_ROUTER_MODELS"));
    snprintf(tok, sizeof(tok), "%s/tok.bin", test_env_path("LLMSERVE_ROUTER_MODELS"));
    char *argv[] = {(char *)test_env_path("LLMSERVE_INFERENCE_BIN"),
                    "--listen",
                    "127.0.0.1:0",
                    "--model",
                    model,
                    "--tokenizer",
                    tok,
                    "--pool",
                    "small",
                    "--model-name",
                    "tiny-small",
                    "--cpu-threads",
                    "1",
                    "--grace-ms",
                    "500",
                    NULL};
    cr_assert_eq(test_proc_start(p, argv, 60000), 0, "inference did not start");
}

/* The router served on loopback, and a client channel to it. */
typedef struct {
    rpc_server_t *srv;
    rpc_client_t *client;
    rpc_channel_t *ch;
} served_t;

static served_t serve(router_t *r)
{
    served_t s;
    rpc_server_config_t scfg;
    rpc_server_config_init(&scfg);
    scfg.threads = 2;
    scfg.name = "router";
    s.srv = rpc_server_create(&scfg);
    cr_assert_not_null(s.srv);
    int port = 0;
    cr_assert_eq(rpc_server_listen(s.srv, "127.0.0.1:0", NULL, &port), LS_OK);
    cr_assert_eq(router_register(r, s.srv), LS_OK);
    cr_assert_eq(rpc_server_start(s.srv), LS_OK);
    s.client = rpc_client_create(2);
    s.ch = test_channel_to(s.client, port, NULL);
    cr_assert(test_channel_ready(s.ch, 30000), "the router does not answer");
    return s;
}

static void unserve(served_t *s, router_t *r)
{
    rpc_channel_destroy(s->ch);
    rpc_client_destroy(s->client);
    rpc_server_shutdown(s->srv, 1000);
    rpc_server_destroy(s->srv);
    router_destroy(r);
}

/* One request to its end: the record of what came back. */
static router_stream_rec_t ask(router_stream_t *g, const char *id, const char *hint)
{
    router_stream_req_t q = {.id = id, .prompt = "Once upon a time", .hint = hint};
    q.max_tokens = 4;
    q.policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_BYPASS;
    router_stream_submit(g, &q);
    return router_stream_finish(g, id);
}

Test(router_dynamic, a_static_list_must_give_every_pool_the_policy_names)
{
    char err[256] = "";
    discovery_t *disc = discovery_static_create("small=127.0.0.1:1", err, sizeof(err));
    cr_assert_not_null(disc, "%s", err);
    router_config_t cfg;
    router_config_init(&cfg); /* tiers large=0.3: pools small and large */
    router_t *r = router_create(&cfg, disc, err, sizeof(err));
    cr_assert_null(r, "created with no instance of pool large");
    cr_assert(strstr(err, "names pool 'large', which has no instance"), "%s", err);
}

Test(router_dynamic, declared_pools_answer_unavailable_until_an_instance_comes)
{
    start_inference(&g_inf);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", g_inf.port);
    driven_discovery_t *dd = driven_discovery_create(NULL, 0, true, false);
    router_config_t cfg;
    router_config_init(&cfg); /* pools small and large, neither with an instance */
    cfg.seed = 1;
    char err[256] = "";
    router_t *r = router_create(&cfg, driven_discovery_base(dd), err, sizeof(err));
    cr_assert_not_null(r, "router_create over an empty dynamic list: %s", err);
    /* Not ready while a pool the policy names has no instance: start waits for one. */
    cr_assert_not(router_wait_ready(r, 200), "ready with no instance in the policy's pools");
    served_t s = serve(r);
    router_stream_t *g = router_stream_open(s.ch, NULL);

    router_stream_rec_t rec = ask(g, "none-small", NULL);
    cr_assert_eq(rec.err_code, GRPC_STATUS_UNAVAILABLE, "code %d %s", rec.err_code, rec.err_msg);
    cr_assert(strstr(rec.err_msg, "no instance in pool small"), "%s", rec.err_msg);
    rec = ask(g, "none-large", "large"); /* declared; falls back to small, empty too */
    cr_assert_eq(rec.err_code, GRPC_STATUS_UNAVAILABLE, "code %d %s", rec.err_code, rec.err_msg);
    cr_assert(strstr(rec.err_msg, "no instance in pool"), "%s", rec.err_msg);
    rec = ask(g, "unknown", "medium");
    cr_assert_eq(rec.err_code, GRPC_STATUS_INVALID_ARGUMENT, "a pool nobody names");
    cr_assert(strstr(rec.err_msg, "pools: small, large"), "%s", rec.err_msg);

    /* An instance comes: it serves within a second. */
    discovery_instance_t a = {"small", "", 100, addr};
    int64_t t0 = ls_now_us();
    driven_discovery_deliver(dd, &a, 1);
    int64_t served_us = -1;
    char id[32] = "";
    for (int i = 0; served_us < 0 && ls_now_us() - t0 < 5000000; i++) {
        snprintf(id, sizeof(id), "after-%d", i);
        rec = ask(g, id, NULL);
        if (rec.done)
            served_us = ls_now_us() - t0;
        else
            ls_sleep_us(10000);
    }
    fprintf(stderr, "dynamic: first request served %.1f ms after the instance was listed\n",
            (double)served_us / 1000);
    cr_assert_geq(served_us, 0, "the instance never served");
    cr_expect_lt(served_us, 1000000, "served %lld ms after it was listed",
                 (long long)served_us / 1000);
    cr_assert_str_eq(router_stream_route(g, id)->instance, addr);

    /* It goes: no new request reaches it, the pool stays. */
    driven_discovery_deliver(dd, NULL, 0);
    rec = ask(g, "gone", NULL);
    cr_assert_eq(rec.err_code, GRPC_STATUS_UNAVAILABLE, "code %d %s", rec.err_code, rec.err_msg);
    cr_assert(strstr(rec.err_msg, "no instance in pool small"), "%s", rec.err_msg);

    router_stream_close(g);
    unserve(&s, r);
}

static int cycles_wanted(void)
{
    const char *s = getenv("LLMSERVE_CACHE_CHURN_CYCLES");
    int n = s && *s ? atoi(s) : DEFAULT_CYCLES;
    return n > 0 ? n : DEFAULT_CYCLES;
}

static uint64_t lookups_so_far(void)
{
    return inproc_cache_counts(g_cache_a).lookups + inproc_cache_counts(g_cache_b).lookups;
}

/* Waits until no removed cache is held and the reaper is idle; returns the stats. */
static router_caches_stats_t settle(router_t *r)
{
    router_caches_stats_t st;
    int64_t until = ls_now_us() + 10000000;
    for (;;) {
        router_caches_stats(r->caches, &st);
        if ((st.removed_held == 0 && rpc_defer_pending(r->reaper) == 0) || ls_now_us() >= until)
            return st;
        ls_sleep_us(2000);
    }
}

Test(router_dynamic, cache_list_changes_under_load_lose_no_request)
{
    start_inference(&g_inf);
    g_cache_a = inproc_cache_start();
    g_cache_b = inproc_cache_start();
    inproc_cache_delay(g_cache_a, 2);
    inproc_cache_delay(g_cache_b, 2);
    const char *a = inproc_cache_addr(g_cache_a), *b = inproc_cache_addr(g_cache_b);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", g_inf.port);
    discovery_instance_t inst = {"small", "", 100, addr};
    driven_discovery_t *dd = driven_discovery_create(&inst, 1, true, true);
    router_config_t cfg;
    router_config_init(&cfg);
    cfg.tiers = ""; /* one pool */
    cfg.seed = 1;   /* cfg.cache empty: the caches come from the source */
    char err[256] = "";
    router_t *r = router_create(&cfg, driven_discovery_base(dd), err, sizeof(err));
    cr_assert_not_null(r, "router_create: %s", err);
    const char *only_a[] = {a};
    driven_discovery_caches(dd, only_a, 1);
    cr_assert(router_wait_ready(r, 30000), "instance or cache A not connected");
    served_t s = serve(r);

    /* Deterministic requests: each one looks up (a miss), runs the model, stores. */
    router_load_opts_t lo = {.streams = 4,
                             .window = 2,
                             .max_tokens = 4,
                             .prompt = "Once upon a time there was a cat",
                             .policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_DEFAULT,
                             .watched_instance = NULL};
    router_load_t *load = router_load_start(s.ch, &lo);
    const char *lists[5][2] = {{a, NULL}, {a, b}, {b, NULL}, {NULL, NULL}, {b, a}};
    const size_t sizes[5] = {1, 2, 1, 0, 2};
    int cycles = cycles_wanted(), quiet = 0;
    int64_t t0 = ls_now_us();
    for (int i = 0; i < cycles; i++) {
        driven_discovery_caches(dd, lists[i % 5], sizes[i % 5]);
        /* A few lookups on the new list before the next (a moment while it is empty:
         * then requests run without one). */
        uint64_t seen = lookups_so_far();
        int64_t until = ls_now_us() + (sizes[i % 5] ? 50000 : 5000);
        while (lookups_so_far() < seen + 3 && ls_now_us() < until)
            ls_sleep_us(500);
        quiet += sizes[i % 5] && lookups_so_far() == seen;
    }
    driven_discovery_caches(dd, only_a, 1);
    uint64_t requests = router_load_finish(load);
    router_caches_stats_t st = settle(r);
    inproc_cache_counts_t ca = inproc_cache_counts(g_cache_a), cb = inproc_cache_counts(g_cache_b);
    fprintf(stderr,
            "cache churn: cycles=%d requests=%llu s=%.1f a: lookups=%llu stores=%llu "
            "sessions=%llu b: lookups=%llu stores=%llu sessions=%llu cycles_without_lookup=%d\n",
            cycles, (unsigned long long)requests, (double)(ls_now_us() - t0) / 1e6,
            (unsigned long long)ca.lookups, (unsigned long long)ca.stores,
            (unsigned long long)ca.sessions, (unsigned long long)cb.lookups,
            (unsigned long long)cb.stores, (unsigned long long)cb.sessions, quiet);

    cr_expect_gt(ca.lookups, 0);
    cr_expect_gt(cb.lookups, 0);
    cr_expect_gt(ca.stores + cb.stores, 0, "no answer was stored");
    cr_expect_eq(ca.waiting + cb.waiting, 0, "lookups a cache never answered");
    cr_expect_eq(ca.answered, ca.lookups);
    cr_expect_eq(cb.answered, cb.lookups);
    cr_expect_geq(cb.sessions, (uint64_t)cycles / 5, "B was not reconnected each time it came");
    cr_expect_eq(st.listed, 1, "the set lists %zu caches; A's only is right", st.listed);
    cr_expect_eq(st.removed_held, 0, "removed caches still held");
    cr_expect_eq(rpc_defer_pending(r->reaper), 0);
    /* B's streams all ended (each removal half-closed one); A's last one is open. */
    int64_t until = ls_now_us() + 10000000;
    while (inproc_cache_counts(g_cache_b).open > 0 && ls_now_us() < until)
        ls_sleep_us(2000);
    cr_expect_eq(inproc_cache_counts(g_cache_b).open, 0, "a removed cache's stream is still open");
    cr_expect_eq(inproc_cache_counts(g_cache_a).open, 1);

    unserve(&s, r);
}
