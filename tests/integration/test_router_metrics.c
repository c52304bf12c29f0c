/*
 * test_router_metrics.c - what the router reports (services/router/report.c) for the
 * requests it serves, counted against what its clients saw.
 *
 * The router runs in this process with a recording reporter, in front of one real
 * inference process (pool "small", the router_models fixture's tiny model) and a real
 * llmserve-cache over a memcached of the test's own.  Requests: answers the model runs
 * (looked up and missed, then stored), a repeat answered by the cache, one that bypasses
 * the cache, and one refused before routing.
 *
 * Checked: exactly one llmserve_requests_total per request with its labels; TTFT and end
 * to end times once per request; a gap per token after the first of a model's answer and
 * the tokens streamed; cache lookups by result; router queue time per routed request;
 * in flight back to 0; every name with the kind and label keys of metric_names.h.  And,
 * before an instance of the slow model that holds two requests at once, the depth of the
 * router's queue as requests wait there and leave it.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "discovery.h"
#include "router.h"
#include "rpc/server.h"
#include "support/channel.h"
#include "support/memcached.h"
#include "support/proc.h"
#include "support/recording_reporter.h"
#include "support/router_stream.h"
#include "svc/metric_names.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODEL "tiny-small"
#define N_MISS 4 /* distinct prompts the model answers */
#define MAX_TOKENS 6

static test_proc_t g_inf, g_cache;
static test_memcached_t g_mc;

static void stop_all(void)
{
    test_proc_stop(&g_inf, SIGTERM, 30000);
    test_proc_stop(&g_cache, SIGTERM, 30000);
    test_memcached_stop(&g_mc, SIGKILL);
}

TestSuite(router_metrics, .fini = stop_all, .timeout = 300);

/* The inference instance of pool small: models/<file> served as name, with extra
 * flags (NULL-terminated; NULL: none). */
static void start_inference(const char *file, const char *name, const char *const *extra)
{
    char model[512], tok[512];
    snprintf(model, sizeof(model), "%s/%s", test_env_path("LLMSERVE_ROUTER_MODELS"), file);
    snprintf(tok, sizeof(tok), "%s/tok.bin", test_env_path("LLMSERVE_ROUTER_MODELS"));
    char *inf[32] = {(char *)test_env_path("LLMSERVE_INFERENCE_BIN"),
                     "--listen",
                     "127.0.0.1:0",
                     "--model",
                     model,
                     "--tokenizer",
                     tok,
                     "--pool",
                     "small",
                     "--model-name",
                     (char *)name,
                     "--cpu-threads",
                     "1",
                     "--grace-ms",
                     "500"};
    int n = 15;
    for (; extra && *extra && n < 31; extra++)
        inf[n++] = (char *)*extra;
    inf[n] = NULL;
    cr_assert_eq(test_proc_start(&g_inf, inf, 60000), 0, "inference did not start");
}

static void start_processes(void)
{
    start_inference("small.bin", MODEL, NULL);
    cr_assert_eq(test_memcached_start(&g_mc, 0), 0, "memcached did not start");
    char conf[96];
    test_memcached_config(&g_mc, conf, sizeof(conf));
    char *cache[] = {(char *)test_env_path("LLMSERVE_CACHE_BIN"),
                     "--listen",
                     "127.0.0.1:0",
                     "--memcached",
                     conf,
                     NULL};
    cr_assert_eq(test_proc_start(&g_cache, cache, 60000), 0, "llmserve-cache did not start");
}

static router_stream_req_t req_of(const char *id, const char *prompt)
{
    router_stream_req_t q = {.id = id, .prompt = prompt, .max_tokens = MAX_TOKENS};
    q.ignore_eos = true; /* every model answer is MAX_TOKENS tokens, ending with LENGTH */
    return q;
}

static bool wait_gauge(recording_reporter_t *rr, const char *name, const svc_label_t *match,
                       size_t n, double want, int timeout_ms)
{
    int64_t end = ls_now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        double v = -1;
        if (recording_reporter_gauge(rr, name, match, n, &v) && v == want)
            return true;
        if (ls_now_us() >= end)
            return false;
        ls_sleep_us(2000);
    }
}

/* Requests whose labels include these (NULL value: that label left out of the match). */
static double requests(recording_reporter_t *rr, const char *pool, const char *cache,
                       const char *code, const char *finish)
{
    svc_label_t m[4];
    size_t n = 0;
    const char *keys[4] = {"pool", "cache", "code", "finish_reason"};
    const char *vals[4] = {pool, cache, code, finish};
    for (int i = 0; i < 4; i++)
        if (vals[i])
            m[n++] = (svc_label_t){keys[i], vals[i]};
    return recording_reporter_sum(rr, M_REQUESTS, m, n);
}

static void expect_contract(recording_reporter_t *rr)
{
    static const char *const pmvc[] = {"pool", "model", "version", "cache"};
    static const char *const outcome[] = {"pool",  "model", "version",
                                          "cache", "code",  "finish_reason"};
    static const char *const pool[] = {"pool"}, *const result[] = {"result"};
    cr_expect_eq(recording_reporter_misfits(rr, M_TTFT, RECORDING_OBSERVE, pmvc, 4), 0);
    cr_expect_eq(recording_reporter_misfits(rr, M_ITL, RECORDING_OBSERVE, pmvc, 3), 0);
    cr_expect_eq(recording_reporter_misfits(rr, M_E2E, RECORDING_OBSERVE, pmvc, 4), 0);
    cr_expect_eq(recording_reporter_misfits(rr, M_ROUTER_QUEUE, RECORDING_OBSERVE, pool, 1), 0);
    cr_expect_eq(recording_reporter_misfits(rr, M_CACHE_LOOKUP, RECORDING_OBSERVE, result, 1), 0);
    cr_expect_eq(recording_reporter_misfits(rr, M_REQUESTS, RECORDING_COUNTER, outcome, 6), 0);
    cr_expect_eq(recording_reporter_misfits(rr, M_TOKENS, RECORDING_COUNTER, pmvc, 3), 0);
    cr_expect_eq(recording_reporter_misfits(rr, M_FALLBACKS, RECORDING_COUNTER, pool, 1), 0);
    cr_expect_eq(recording_reporter_misfits(rr, M_RETRIES, RECORDING_COUNTER, pool, 1), 0);
    cr_expect_eq(recording_reporter_misfits(rr, M_IN_FLIGHT, RECORDING_GAUGE, pool, 1), 0);
    static const char *const by_class[] = {"pool", "priority"};
    static const char *const prefix[] = {"pool", "outcome"};
    cr_expect_eq(
        recording_reporter_misfits(rr, M_ROUTER_BY_PRIORITY, RECORDING_COUNTER, by_class, 2), 0);
    cr_expect_eq(recording_reporter_misfits(rr, M_ROUTER_PREFIX, RECORDING_COUNTER, prefix, 2), 0);
}

/* A router made from cfg and disc, serving on a loopback port, and a client channel to
 * it; unserve takes them down. */
typedef struct {
    router_t *r;
    rpc_server_t *srv;
    rpc_client_t *client;
    rpc_channel_t *ch;
} served_t;

static void serve(const router_config_t *cfg, discovery_t *disc, served_t *sv)
{
    char err[256] = "";
    sv->r = router_create(cfg, disc, err, sizeof(err));
    cr_assert_not_null(sv->r, "router_create: %s", err);
    cr_assert(router_wait_ready(sv->r, 30000), "instance or cache not connected");
    rpc_server_config_t scfg;
    rpc_server_config_init(&scfg);
    scfg.threads = 2;
    scfg.name = "router";
    sv->srv = rpc_server_create(&scfg);
    cr_assert_not_null(sv->srv);
    int port = 0;
    cr_assert_eq(rpc_server_listen(sv->srv, "127.0.0.1:0", NULL, &port), LS_OK);
    cr_assert_eq(router_register(sv->r, sv->srv), LS_OK);
    cr_assert_eq(rpc_server_start(sv->srv), LS_OK);
    sv->client = rpc_client_create(1);
    sv->ch = test_channel_to(sv->client, port, NULL);
}

static void unserve(served_t *sv)
{
    rpc_channel_destroy(sv->ch);
    rpc_client_destroy(sv->client);
    rpc_server_shutdown(sv->srv, 1000);
    rpc_server_destroy(sv->srv);
    router_destroy(sv->r);
}

Test(router_metrics, every_request_is_reported_once_with_its_labels)
{
    start_processes();
    recording_reporter_t *rr = recording_reporter_create();
    char spec[96], cache_addr[64], err[256] = "";
    snprintf(spec, sizeof(spec), "small=127.0.0.1:%d", g_inf.port);
    snprintf(cache_addr, sizeof(cache_addr), "127.0.0.1:%d", g_cache.port);
    discovery_t *disc = discovery_static_create(spec, err, sizeof(err));
    cr_assert_not_null(disc, "%s", err);
    router_config_t cfg;
    router_config_init(&cfg);
    cfg.tiers = ""; /* one pool */
    cfg.cache = cache_addr;
    cfg.seed = 1;
    cfg.reporter = recording_reporter_base(rr);
    served_t sv;
    serve(&cfg, disc, &sv);
    router_stream_t *g = router_stream_open(sv.ch, NULL);

    /* Answers the model runs: looked up, missed, then stored. */
    static const char *const prompts[N_MISS] = {"the little dog ran", "a big red ball",
                                                "once upon a time", "the cat sat down"};
    int model_tokens = 0;
    for (int i = 0; i < N_MISS; i++) {
        char id[16];
        snprintf(id, sizeof(id), "m%d", i);
        router_stream_req_t q = req_of(id, prompts[i]);
        router_stream_submit(g, &q);
        router_stream_rec_t rec = router_stream_finish(g, id);
        cr_assert(rec.done, "%s: error %d %s", id, rec.err_code, rec.err_msg);
        cr_assert_eq(rec.tokens, MAX_TOKENS);
        cr_assert_not(router_stream_route(g, id)->cache_hit);
        model_tokens += rec.tokens;
    }
    /* A repeat, until the cache has the stored answer (stores are not waited for). */
    int hits = 0, repeats = 0;
    for (int64_t until = ls_now_us() + 10000000; hits == 0 && ls_now_us() < until;) {
        char id[16];
        snprintf(id, sizeof(id), "h%d", repeats++);
        router_stream_req_t q = req_of(id, prompts[0]);
        router_stream_submit(g, &q);
        router_stream_rec_t rec = router_stream_finish(g, id);
        cr_assert(rec.done);
        if (router_stream_route(g, id)->cache_hit) {
            hits++;
        } else {
            model_tokens += rec.tokens;
            ls_sleep_us(20000);
        }
    }
    cr_assert_eq(hits, 1, "the repeat never hit the cache");
    int misses = N_MISS + repeats - 1;
    /* No cache asked. */
    router_stream_req_t b = req_of("bypass", "something else entirely");
    b.policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_BYPASS;
    b.priority = LLMSERVE__V1__PRIORITY__PRIORITY_BATCH;
    router_stream_submit(g, &b);
    router_stream_rec_t rb = router_stream_finish(g, "bypass");
    cr_assert(rb.done);
    model_tokens += rb.tokens;
    /* Refused before routing. */
    router_stream_req_t bad = req_of("bad", "");
    router_stream_submit(g, &bad);
    router_stream_rec_t rbad = router_stream_finish(g, "bad");
    cr_assert_eq(rbad.err_code, GRPC_STATUS_INVALID_ARGUMENT);
    router_stream_close(g);

    int total = misses + hits + 2, served = misses + 1; /* by the model */
    svc_label_t small = {"pool", "small"};
    cr_assert(wait_gauge(rr, M_IN_FLIGHT, &small, 1, 0, 10000), "requests still in flight");
    cr_expect_eq(recording_reporter_sum(rr, M_REQUESTS, NULL, 0), total);
    cr_expect_eq(requests(rr, "small", "miss", "OK", "length"), misses);
    cr_expect_eq(requests(rr, "small", "exact", "OK", "length"), hits);
    cr_expect_eq(requests(rr, "small", "bypass", "OK", "length"), 1);
    cr_expect_eq(requests(rr, "", "bypass", "INVALID_ARGUMENT", "error"), 1);
    svc_label_t served_by[2] = {{"model", MODEL}, {"version", ""}};
    cr_expect_eq(recording_reporter_sum(rr, M_REQUESTS, served_by, 2), total - 1,
                 "model and version name the instance, hits included");

    cr_expect_eq(recording_reporter_observations(rr, M_E2E, NULL, 0, NULL, 0), total);
    cr_expect_eq(recording_reporter_observations(rr, M_TTFT, NULL, 0, NULL, 0), total - 1);
    svc_label_t exact = {"cache", "exact"};
    cr_expect_eq(recording_reporter_observations(rr, M_TTFT, &exact, 1, NULL, 0), hits);
    cr_expect_eq(recording_reporter_observations(rr, M_ITL, &small, 1, NULL, 0),
                 model_tokens - served, "a gap per token after each answer's first");
    cr_expect_eq(recording_reporter_sum(rr, M_TOKENS, &small, 1), model_tokens,
                 "tokens streamed from the instance; the replay is not counted");
    cr_expect_eq(recording_reporter_observations(rr, M_ROUTER_QUEUE, &small, 1, NULL, 0),
                 total - 1);
    svc_label_t res = {"result", "miss"};
    cr_expect_eq(recording_reporter_observations(rr, M_CACHE_LOOKUP, &res, 1, NULL, 0), misses);
    res.value = "hit";
    cr_expect_eq(recording_reporter_observations(rr, M_CACHE_LOOKUP, &res, 1, NULL, 0), hits);
    cr_expect_eq(recording_reporter_observations(rr, M_CACHE_LOOKUP, NULL, 0, NULL, 0),
                 misses + hits, "no lookup for the bypass nor the refused one");
    cr_expect_eq(recording_reporter_calls(rr, M_FALLBACKS, NULL, 0), 0);
    cr_expect_eq(recording_reporter_calls(rr, M_RETRIES, NULL, 0), 0);
    svc_label_t by_class[2] = {{"pool", "small"}, {"priority", "batch"}};
    cr_expect_eq(recording_reporter_sum(rr, M_ROUTER_BY_PRIORITY, by_class, 2), 1);
    by_class[1].value = "normal";
    cr_expect_eq(recording_reporter_sum(rr, M_ROUTER_BY_PRIORITY, by_class, 2), total - 2,
                 "every routed request once, by its class; the refused one not at all");
    cr_expect_eq(recording_reporter_calls(rr, M_ROUTER_PREFIX, NULL, 0), 0,
                 "one instance: the prefix decides nothing");
    expect_contract(rr);

    unserve(&sv);
    recording_reporter_destroy(rr);
}

/* The slow model, one request running and one waiting: two at once. */
static void start_tight_instance(void)
{
    static const char *const tight[] = {"--kv-budget-tokens", "8192", "--max-batch", "1",
                                        "--max-queue", "1", NULL};
    start_inference("slow.bin", "slow", tight);
}

Test(router_metrics, the_queue_depth_follows_requests_waiting_for_room)
{
    start_tight_instance();
    recording_reporter_t *rr = recording_reporter_create();
    char spec[96], err[256] = "";
    snprintf(spec, sizeof(spec), "small=127.0.0.1:%d", g_inf.port);
    discovery_t *disc = discovery_static_create(spec, err, sizeof(err));
    cr_assert_not_null(disc, "%s", err);
    router_config_t cfg;
    router_config_init(&cfg);
    cfg.tiers = "";
    cfg.seed = 1;
    cfg.reporter = recording_reporter_base(rr);
    served_t sv;
    serve(&cfg, disc, &sv);
    router_stream_t *g = router_stream_open(sv.ch, NULL);

    static const char *const ids[] = {"a1", "a2", "q1", "q2"};
    for (int i = 0; i < 4; i++) {
        router_stream_req_t q = req_of(ids[i], "once upon a time");
        q.max_tokens = 1500;
        q.policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_BYPASS;
        router_stream_submit(g, &q);
        if (i == 0)
            cr_assert_gt(router_stream_wait(g, "a1", 1, 60000).tokens, 0, "a1 did not start");
    }
    svc_label_t small = {"pool", "small"};
    cr_assert(wait_gauge(rr, M_ROUTER_QUEUE_DEPTH, &small, 1, 2, 10000),
              "q1 and q2 are not counted as queued");
    router_stream_cancel(g, "q1");
    router_stream_finish(g, "q1");
    cr_assert(wait_gauge(rr, M_ROUTER_QUEUE_DEPTH, &small, 1, 1, 10000));
    for (int i = 0; i < 4; i++)
        router_stream_cancel(g, ids[i]);
    for (int i = 1; i < 4; i++)
        router_stream_finish(g, ids[i]);
    router_stream_finish(g, "a1");
    router_stream_close(g);
    cr_assert(wait_gauge(rr, M_ROUTER_QUEUE_DEPTH, &small, 1, 0, 10000), "still counted queued");
    cr_assert(wait_gauge(rr, M_IN_FLIGHT, &small, 1, 0, 10000), "requests still in flight");
    cr_expect_eq(recording_reporter_observations(rr, M_ROUTER_QUEUE, &small, 1, NULL, 0), 4,
                 "router queue time once per request, queued or not");
    cr_expect_eq(recording_reporter_calls(rr, M_RETRIES, NULL, 0), 0);
    static const char *const pool[] = {"pool"};
    cr_expect_eq(recording_reporter_misfits(rr, M_ROUTER_QUEUE_DEPTH, RECORDING_GAUGE, pool, 1), 0);

    unserve(&sv);
    recording_reporter_destroy(rr);
}
