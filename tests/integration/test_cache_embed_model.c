/*
 * test_cache_embed_model.c - the model embedder (libs/cache/cache_embed_model.h) against
 * a real llmserve-inference, and llmserve-cache started with --embedder model: the dim
 * learned at create, a semantic hit the exact key cannot make, and an instance that
 * comes back with a model of another dim (embeds refused, no crash, back to normal when
 * the first model returns).
 *
 * The models have random weights: these tests check the plumbing and the guarantees,
 * not whether the vectors mean anything.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "cache/cache_embed_model.h"
#include "support/channel.h"
#include "support/inference_proc.h"
#include "test_cache_support.h"

#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static const char *const TINY[] = {"--preset", "tiny", NULL}; /* dim 64 */
static const char *const WIDE[] = {"--preset", "tiny", "--dim", "128", "--hidden-dim", "384", NULL};
static const char *const AS_EMB[] = {"--model-name", "emb", NULL};

static test_inference_t g_inf;  /* dim 64, served as "emb" */
static test_inference_t g_wide; /* dim 128, the same name: made, started only to swap */
static char g_target[32];

static void start_inference(void)
{
    cr_assert_eq(test_inference_make(&g_inf, TINY), 0, "modelmaker failed");
    cr_assert_eq(test_inference_make(&g_wide, WIDE), 0, "modelmaker failed");
    cr_assert_eq(test_inference_start(&g_inf, 0, AS_EMB), 0, "inference did not start");
    snprintf(g_target, sizeof(g_target), "127.0.0.1:%d", g_inf.proc.port);
}

static void stop_inference(void)
{
    cr_expect_eq(test_inference_destroy(&g_wide), 0);
    cr_expect_eq(test_inference_destroy(&g_inf), 0);
}

/* The instance at g_target now serves the dim-128 model under the same name, or (back)
 * the dim-64 one. */
static void swap_to(test_inference_t *from, test_inference_t *to)
{
    int port = from->proc.port;
    cr_assert_eq(test_inference_stop(from), 0);
    cr_assert_eq(test_inference_start(to, port, AS_EMB), 0, "restart on port %d failed", port);
}

static cache_embedder_t *make(const char *model, int64_t timeout_ms, char *err, size_t err_len)
{
    cache_embed_model_config_t cfg = {
        .target = g_target, .model = model, .timeout_ms = timeout_ms, .channel = NULL};
    return cache_embed_model_create(&cfg, err, err_len);
}

static bool all_zero(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] != 0.0f)
            return false;
    return true;
}

/* ---- the embedder alone -------------------------------------------------------------- */

TestSuite(embed_model, .init = start_inference, .fini = stop_inference, .timeout = 120);

Test(embed_model, learns_dim_and_embeds_deterministically)
{
    char err[512];
    cache_embedder_t *e = make("", 2000, err, sizeof(err));
    cr_assert_not_null(e, "%s", err);
    cr_assert_eq(e->dim, 64, "the model's width");
    cr_assert_str_eq(e->name, "model:emb");
    float a[64], b[64], c[64];
    const char *t = "the little red boat";
    cr_assert_eq(e->embed(e, t, strlen(t), a), LS_OK);
    cr_assert_eq(e->embed(e, t, strlen(t), b), LS_OK);
    cr_assert_eq(memcmp(a, b, sizeof(a)), 0);
    cr_assert_float_eq(cache_embed_cosine(a, a, 64), 1.0f, 1e-5f);
    /* Not NUL-terminated: only len bytes count. */
    cr_assert_eq(e->embed(e, "the little red boatXYZ", strlen(t), c), LS_OK);
    cr_assert_eq(memcmp(a, c, sizeof(a)), 0);
    /* Nothing to embed: LS_ERR_INVALID and zeros, like the n-gram embedder. */
    c[0] = 1.0f;
    cr_assert_eq(e->embed(e, "", 0, c), LS_ERR_INVALID);
    cr_assert(all_zero(c, 64));
    cache_embedder_destroy(e);

    e = make("emb", 2000, err, sizeof(err));
    cr_assert_not_null(e, "naming the served model: %s", err);
    cache_embedder_destroy(e);
}

Test(embed_model, create_fails_clearly)
{
    char err[512];
    cr_assert_null(make("other", 2000, err, sizeof(err)));
    cr_assert(strstr(err, "NOT_FOUND") && strstr(err, g_target), "%s", err);

    /* Nothing listens on port 1. */
    cache_embed_model_config_t cfg = {.target = "127.0.0.1:1", .model = "", .timeout_ms = 300};
    int64_t t0 = ls_now_us();
    cr_assert_null(cache_embed_model_create(&cfg, err, sizeof(err)));
    cr_assert(strstr(err, "127.0.0.1:1"), "%s", err);
    cr_assert_lt(ls_now_us() - t0, 5000000, "the probe is bounded by the timeout");

    cfg.target = "";
    cr_assert_null(cache_embed_model_create(&cfg, err, sizeof(err)));
}

Test(embed_model, another_dim_behind_the_target_is_refused_then_recovers)
{
    char err[512];
    cache_embedder_t *e = make("", 2000, err, sizeof(err));
    cr_assert_not_null(e, "%s", err);
    float before[64], v[64], after[64];
    const char *t = "green apples";
    cr_assert_eq(e->embed(e, t, strlen(t), before), LS_OK);

    swap_to(&g_inf, &g_wide);
    int rc = LS_ERR_UNAVAILABLE;
    for (int i = 0; i < 100 && rc == LS_ERR_UNAVAILABLE; i++) { /* the reconnect */
        rc = e->embed(e, t, strlen(t), v);
        if (rc == LS_ERR_UNAVAILABLE)
            ls_sleep_us(50000);
    }
    cr_assert_eq(rc, LS_ERR_INVALID, "a reply of dim 128 must be refused (rc %d)", rc);
    cr_assert(all_zero(v, 64));

    swap_to(&g_wide, &g_inf);
    rc = LS_ERR_UNAVAILABLE;
    for (int i = 0; i < 100 && rc != LS_OK; i++) {
        rc = e->embed(e, t, strlen(t), after);
        if (rc != LS_OK)
            ls_sleep_us(50000);
    }
    cr_assert_eq(rc, LS_OK);
    cr_assert_eq(memcmp(before, after, sizeof(before)), 0, "the same model, the same bits");
    cache_embedder_destroy(e);
}

/* ---- through llmserve-cache ------------------------------------------------------------ */

static test_memcached_t g_mc;
static tc_conn_t g_c;

static void start_all(void)
{
    start_inference();
    cr_assert_eq(test_memcached_start(&g_mc, 0), 0);
    char conf[64];
    /* A memcached timeout far above the default 50 ms: a generation read that times out
     * on a loaded machine leaves the store and a later lookup in different scopes (the
     * engine falls back to the generation it knew), a semantic miss this test would
     * blame on the embedder (seen with three test processes on two cores). */
    const char *extra[] = {
        "--embedder", "model", "--embed-target", g_target, "--memcached-timeout-ms", "1000", NULL};
    tc_connect(&g_c, test_memcached_config(&g_mc, conf, sizeof(conf)), extra);
}

static void stop_all(void)
{
    tc_disconnect(&g_c);
    test_memcached_stop(&g_mc, SIGTERM);
    stop_inference();
}

/* A semantic lookup at the service's threshold; returns the answer (caller frees). */
static Llmserve__V1__CacheResponse *look(const char *prompt)
{
    return tc_do_lookup(&g_c.s, "", "small", prompt, true);
}

static bool look_hit(const char *prompt)
{
    Llmserve__V1__CacheResponse *r = look(prompt);
    bool hit = r->lookup->hit;
    llmserve__v1__cache_response__free_unpacked(r, NULL);
    return hit;
}

/* The mean of token rows cannot see word order (test_inference_embed checks that), so
 * the same words in another order are a semantic hit at similarity 1, which the exact
 * key, that keeps the order, cannot make. */
static const char *STORED = "red blue green yellow";
static const char *REORDERED = "yellow green blue red";

TestSuite(cache_model, .init = start_all, .fini = stop_all, .timeout = 120);

Test(cache_model, reordered_words_hit_through_the_model_embedder)
{
    tc_do_store(&g_c.s, "", "small", STORED, "colours", true);
    Llmserve__V1__CacheResponse *e = tc_do_lookup(&g_c.s, "", "small", REORDERED, false);
    cr_assert_not(e->lookup->hit, "the exact key keeps word order");
    llmserve__v1__cache_response__free_unpacked(e, NULL);

    Llmserve__V1__CacheResponse *r = look(REORDERED);
    cr_assert(r->lookup->hit, "the reordered prompt missed");
    cr_assert_eq(r->lookup->kind, LLMSERVE__V1__CACHE_HIT_KIND__CACHE_HIT_KIND_SEMANTIC);
    cr_assert_str_eq(r->lookup->text, "colours");
    cr_assert_geq(r->lookup->similarity, 0.9999f);
    llmserve__v1__cache_response__free_unpacked(r, NULL);
    cr_assert_not(look_hit("once upon a time there was a little dog"), "other words must not hit");
}

Test(cache_model, a_model_of_another_dim_is_refused_without_a_crash)
{
    tc_do_store(&g_c.s, "", "small", STORED, "colours", true);
    cr_assert(look_hit(REORDERED));

    swap_to(&g_inf, &g_wide);
    /* Embeds are refused: semantic lookups miss, stores still store (not indexed). */
    for (int i = 0; i < 5; i++)
        cr_assert_not(look_hit(REORDERED), "lookup %d", i);
    tc_do_store(&g_c.s, "", "small", "one two three", "numbers", true);
    Llmserve__V1__CacheResponse *r = tc_do_lookup(&g_c.s, "", "small", "one two three", false);
    cr_assert(r->lookup->hit, "the exact tiers still work");
    llmserve__v1__cache_response__free_unpacked(r, NULL);

    swap_to(&g_wide, &g_inf);
    bool hit = false;
    for (int i = 0; i < 100 && !hit; i++) { /* until the channel has reconnected */
        hit = look_hit(REORDERED);
        if (!hit)
            ls_sleep_us(50000);
    }
    cr_assert(hit, "the index is whole again once the first model is back");
    cr_assert_not(look_hit("three two one"), "nothing was indexed with the other model");
}

/* A cache told to use a model that is not there does not start. */
Test(cache_model_down, start_fails_when_the_target_is_unreachable)
{
    cr_assert_eq(test_memcached_start(&g_mc, 0), 0);
    char conf[64];
    char *argv[] = {(char *)test_env_path("LLMSERVE_CACHE_SERVER"),
                    "--listen",
                    "127.0.0.1:0",
                    "--memcached",
                    (char *)test_memcached_config(&g_mc, conf, sizeof(conf)),
                    "--embedder",
                    "model",
                    "--embed-target",
                    "127.0.0.1:1",
                    "--embed-timeout-ms",
                    "300",
                    NULL};
    int status = test_run(argv, 20000);
    cr_assert_eq(status, 1, "exit status %d", status);
    char *no_target[] = {argv[0], "--embedder", "model", NULL};
    status = test_run(no_target, 20000);
    cr_assert_eq(status, 2, "--embedder model without --embed-target: exit status %d", status);
    char *unknown[] = {argv[0], "--embedder", "bert", NULL};
    status = test_run(unknown, 20000);
    cr_assert_eq(status, 2, "--embedder bert: exit status %d", status);
    test_memcached_stop(&g_mc, SIGTERM);
}
