/*
 * test_cache_similar.c - llmserve-cache's semantic cache end to end: paraphrase hits,
 * unrelated misses, the threshold edge, scope isolation, expiry and invalidation, the
 * guards, word normalization (WordNet, stems) and a WordNet directory refused at start.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "support/channel.h"
#include "test_cache_support.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static test_memcached_t g_mc;
static tc_conn_t g_c;

static void start_with(const char *const *extra)
{
    cr_assert_eq(test_memcached_start(&g_mc, 0), 0);
    char conf[64];
    tc_connect(&g_c, test_memcached_config(&g_mc, conf, sizeof(conf)), extra);
}

static void start_default(void)
{
    start_with(NULL);
}

static void stop_all(void)
{
    tc_disconnect(&g_c);
    test_memcached_stop(&g_mc, SIGTERM);
}

static const char *Q = "How do I install Docker on Ubuntu?";
static const char *PARA = "How can I install Docker on Ubuntu?";
static const char *A = "sudo apt-get install docker.io";

/* A semantic lookup; min 0 = the service's threshold.  Returns the answer. */
static Llmserve__V1__CacheResponse *look(const char *tenant, const char *model, const char *prompt,
                                         float min, float temperature)
{
    tc_req_t r;
    Llmserve__V1__CacheRequest *req = tc_lookup(&r, tenant, model, prompt, true);
    r.lookup.min_similarity = min;
    r.sampling.temperature = temperature;
    r.sampling.has_seed = temperature > 0;
    Llmserve__V1__CacheResponse *resp = tc_call(&g_c.s, req);
    cr_assert_not_null(resp);
    cr_assert_eq(resp->kind_case, LLMSERVE__V1__CACHE_RESPONSE__KIND_LOOKUP, "kind %d",
                 resp->kind_case);
    return resp;
}

static bool look_hit(const char *tenant, const char *model, const char *prompt, float min)
{
    Llmserve__V1__CacheResponse *r = look(tenant, model, prompt, min, 0);
    bool hit = r->lookup->hit;
    llmserve__v1__cache_response__free_unpacked(r, NULL);
    return hit;
}

TestSuite(similar, .init = start_default, .fini = stop_all, .timeout = 60);

Test(similar, paraphrase_hits_unrelated_misses)
{
    tc_do_store(&g_c.s, "", "small", Q, A, true);
    Llmserve__V1__CacheResponse *r = look("", "small", PARA, 0, 0);
    Llmserve__V1__CacheLookupResult *l = r->lookup;
    cr_assert(l->hit, "paraphrase missed");
    cr_assert_eq(l->kind, LLMSERVE__V1__CACHE_HIT_KIND__CACHE_HIT_KIND_SEMANTIC);
    cr_assert_str_eq(l->text, A);
    cr_assert_geq(l->similarity, 0.85f);
    cr_assert_lt(l->similarity, 1.0f);
    llmserve__v1__cache_response__free_unpacked(r, NULL);
    /* The same lookup without semantic matching is a miss. */
    Llmserve__V1__CacheResponse *e = tc_do_lookup(&g_c.s, "", "small", PARA, false);
    cr_assert_not(e->lookup->hit);
    llmserve__v1__cache_response__free_unpacked(e, NULL);
    cr_assert_not(look_hit("", "small", "How do I install Docker on Windows?", 0),
                  "a near miss must not hit at the default threshold");
    cr_assert_not(look_hit("", "small", "What causes the seasons on Earth?", 0));
    Llmserve__V1__CacheResponse *st = tc_do_stats(&g_c.s);
    cr_assert_eq(st->stats->semantic_hits, 1);
    llmserve__v1__cache_response__free_unpacked(st, NULL);
}

Test(similar, threshold_edge)
{
    tc_do_store(&g_c.s, "", "small", "Explain how photosynthesis works.", "light to sugar", true);
    Llmserve__V1__CacheResponse *r =
        look("", "small", "Can you explain how photosynthesis works?", 0.05f, 0);
    cr_assert(r->lookup->hit);
    float sim = r->lookup->similarity;
    llmserve__v1__cache_response__free_unpacked(r, NULL);
    cr_assert(look_hit("", "small", "Can you explain how photosynthesis works?", sim),
              "a match exactly at the threshold hits (%.6f)", sim);
    cr_assert_not(look_hit("", "small", "Can you explain how photosynthesis works?", sim + 0.001f),
                  "a match just under the threshold misses (%.6f)", sim);
}

Test(similar, no_match_across_tenants_models_or_parameters)
{
    tc_do_store(&g_c.s, "acme", "small", Q, "acme answer", true);
    /* Identical text at the loosest threshold: still nothing outside the scope. */
    cr_assert(look_hit("acme", "small", PARA, 0.01f));
    cr_assert_not(look_hit("globex", "small", PARA, 0.01f));
    cr_assert_not(look_hit("globex", "small", Q, 0.01f));
    cr_assert_not(look_hit("acme", "large", Q, 0.01f));
    Llmserve__V1__CacheResponse *r = look("acme", "small", PARA, 0.01f, 0.7f);
    cr_assert_not(r->lookup->hit, "other sampling parameters must not match");
    llmserve__v1__cache_response__free_unpacked(r, NULL);
}

Test(similar, entries_expire_with_their_answer)
{
    tc_req_t r;
    Llmserve__V1__CacheRequest *req = tc_store(&r, "", "small", Q, A, true);
    /* memcached counts TTLs in whole seconds on a clock that ticks once a second, so a
     * 1 s TTL can run out within milliseconds; 2 s once ran out before the first
     * lookup on a loaded machine: 3 s. */
    r.store.ttl_seconds = 3;
    Llmserve__V1__CacheResponse *resp = tc_call(&g_c.s, req);
    cr_assert(resp->store->stored);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    cr_assert(look_hit("", "small", PARA, 0));
    ls_sleep_us(4500000);
    cr_assert_not(look_hit("", "small", PARA, 0));
}

Test(similar, invalidation_reaches_the_index)
{
    tc_do_store(&g_c.s, "", "small", Q, A, true);
    tc_do_store(&g_c.s, "", "small", "Why is the sky blue?", "Rayleigh scattering", true);
    tc_req_t r;
    Llmserve__V1__CacheResponse *resp = tc_call(&g_c.s, tc_invalidate_key(&r, "", "small", Q));
    cr_assert_eq(resp->invalidate->removed, 1);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    cr_assert_not(look_hit("", "small", PARA, 0));
    cr_assert(look_hit("", "small", "why is the sky blue", 0));
    resp = tc_call(&g_c.s, tc_invalidate_model(&r, "small"));
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    cr_assert_not(look_hit("", "small", "why is the sky blue", 0));
}

static const char *const k_off[] = {"--no-semantic", NULL};

static void start_off(void)
{
    start_with(k_off);
}

Test(similar_off, semantic_disabled_means_exact_only, .init = start_off, .fini = stop_all,
     .timeout = 60)
{
    tc_do_store(&g_c.s, "", "small", Q, A, true);
    cr_assert_not(look_hit("", "small", PARA, 0.01f));
    cr_assert(look_hit("", "small", Q, 0));
}

/* The guards: a conversion asked the other way round scores far above the threshold
 * but is turned down; the same stores and lookups with --no-semantic-guards hit. */
static const char *CONV = "Convert 26 miles to kilometers.";
static const char *CONV_BACK = "Convert 26 kilometers to miles.";
static const char *CONV_SAME = "Please convert 26 miles to kilometers";

Test(similar, guards_turn_down_a_reversed_conversion)
{
    tc_do_store(&g_c.s, "", "small", CONV, "41.8 km", true);
    cr_assert_not(look_hit("", "small", CONV_BACK, 0.5f), "the reversed question must not hit");
    cr_assert(look_hit("", "small", CONV_SAME, 0.5f), "the same question reworded hits");
}

static const char *const k_no_guards[] = {"--no-semantic-guards", NULL};

static void start_no_guards(void)
{
    start_with(k_no_guards);
}

Test(similar_no_guards, similarity_alone_answers_the_reversed_conversion,
     .init = start_no_guards, .fini = stop_all, .timeout = 60)
{
    tc_do_store(&g_c.s, "", "small", CONV, "41.8 km", true);
    cr_assert(look_hit("", "small", CONV_BACK, 0.5f),
              "without guards the reversed question hits: what the guards are for");
}

/* Word normalization in the service (WordNet "auto" and stems by default): a typo and a
 * change of inflection find the stored prompt; a service started with --wordnet none
 * --no-stem misses the same lookups, which is what the normalization is for. */
static const char *POP = "What is the population of Japan?";
static const char *POP_TYPO = "what is the populaton of japan";
static const char *PLANTS = "Which plants grow in shady gardens?";
static const char *PLANTS_ONE = "Which plant grows in a shady garden?";

Test(similar, normalized_words_find_the_stored_prompt)
{
    tc_do_store(&g_c.s, "", "small", POP, "about 124 million", true);
    tc_do_store(&g_c.s, "", "small", PLANTS, "hostas and ferns", true);
    cr_assert(look_hit("", "small", POP_TYPO, 0), "a misspelled word should still hit");
    cr_assert(look_hit("", "small", PLANTS_ONE, 0), "singular for plural should still hit");
    cr_assert_not(look_hit("", "small", "What is the population of China?", 0),
                  "another country must not hit");
}

static const char *const k_plain[] = {"--wordnet", "none", "--no-stem", NULL};

static void start_plain(void)
{
    start_with(k_plain);
}

Test(similar_plain, words_as_written_miss_them, .init = start_plain, .fini = stop_all,
     .timeout = 60)
{
    tc_do_store(&g_c.s, "", "small", POP, "about 124 million", true);
    tc_do_store(&g_c.s, "", "small", PLANTS, "hostas and ferns", true);
    cr_assert_not(look_hit("", "small", POP_TYPO, 0));
    cr_assert_not(look_hit("", "small", PLANTS_ONE, 0));
    cr_assert(look_hit("", "small", POP, 0));
}

/* A WordNet directory that cannot be loaded stops the service at start. */
Test(similar_start, a_missing_wordnet_directory_is_refused, .timeout = 60)
{
    char *argv[] = {(char *)test_env_path("LLMSERVE_CACHE_SERVER"),
                    "--listen",
                    "127.0.0.1:0",
                    "--memcached",
                    "--SERVER=127.0.0.1:1",
                    "--wordnet",
                    "/nonexistent-wordnet",
                    NULL};
    int st = test_run(argv, 20000);
    cr_assert(st > 0 && st < 128, "llmserve-cache exit status %d, want a refusal", st);
}
