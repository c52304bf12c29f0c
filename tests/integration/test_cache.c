/*
 * test_cache.c - llmserve-cache end to end, exact cache: real memcached processes on
 * ephemeral ports, the real service binary, the library's client.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "support/channel.h"
#include "test_cache_support.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static test_memcached_t g_mc;
static tc_conn_t g_c;
static char g_mcconf[64];

static rpc_channel_t *channel_to(rpc_client_t *c, int port)
{
    rpc_channel_t *ch = test_channel_to(c, port, NULL);
    cr_assert_not_null(ch);
    return ch;
}

static void start_with(const char *const *extra)
{
    cr_assert_eq(test_memcached_start(&g_mc, 0), 0, "memcached did not start");
    test_memcached_config(&g_mc, g_mcconf, sizeof(g_mcconf));
    tc_connect(&g_c, g_mcconf, extra);
}

static const char *const k_small_limits[] = {
    "--max-value-bytes", "4096", "--max-key-bytes", "1024", "--models", "small,large,other", NULL};

static void start_default(void)
{
    start_with(k_small_limits);
}

static void stop_all(void)
{
    tc_disconnect(&g_c);
    test_memcached_stop(&g_mc, SIGTERM);
}

static void expect_hit(const char *tenant, const char *model, const char *prompt, const char *text,
                       Llmserve__V1__CacheSource source)
{
    Llmserve__V1__CacheResponse *r = tc_do_lookup(&g_c.s, tenant, model, prompt, false);
    cr_assert(r->lookup->hit, "expected a hit for \"%s\"", prompt);
    cr_assert_str_eq(r->lookup->text, text);
    cr_assert_eq(r->lookup->kind, LLMSERVE__V1__CACHE_HIT_KIND__CACHE_HIT_KIND_EXACT);
    if (source)
        cr_assert_eq(r->lookup->source, source, "source %d, wanted %d", r->lookup->source, source);
    llmserve__v1__cache_response__free_unpacked(r, NULL);
}

static void expect_miss(const char *tenant, const char *model, const char *prompt)
{
    Llmserve__V1__CacheResponse *r = tc_do_lookup(&g_c.s, tenant, model, prompt, false);
    cr_assert_not(r->lookup->hit, "expected a miss for \"%s\", got \"%s\"", prompt,
                  r->lookup->text);
    cr_assert_eq(r->lookup->kind, LLMSERVE__V1__CACHE_HIT_KIND__CACHE_HIT_KIND_NONE);
    cr_assert_eq(r->lookup->similarity, 0.0f);
    cr_assert_str_eq(r->lookup->text, "");
    llmserve__v1__cache_response__free_unpacked(r, NULL);
}

static void expect_error(Llmserve__V1__CacheRequest *req, grpc_status_code code, const char *needle)
{
    Llmserve__V1__CacheResponse *r = tc_call(&g_c.s, req);
    cr_assert_not_null(r, "no answer");
    cr_assert_eq(r->id, req->id);
    cr_assert_eq(r->kind_case, LLMSERVE__V1__CACHE_RESPONSE__KIND_ERROR, "kind %d, wanted an error",
                 r->kind_case);
    cr_assert_eq(r->error->code, (int)code, "code %d (%s), wanted %d", r->error->code,
                 r->error->message, code);
    if (needle)
        cr_assert(strstr(r->error->message, needle), "message: %s", r->error->message);
    llmserve__v1__cache_response__free_unpacked(r, NULL);
}

TestSuite(cache, .init = start_default, .fini = stop_all, .timeout = 60);

Test(cache, miss_store_hit_with_every_field)
{
    expect_miss("", "small", "What is the capital of France?");
    tc_req_t r;
    Llmserve__V1__CacheRequest *req =
        tc_store(&r, "", "small", "What is the capital of France?", "Paris.", false);
    int32_t ids[] = {3, 14, 15};
    r.store.token_ids = ids;
    r.store.n_token_ids = 3;
    uint32_t pieces[] = {1, 4, 1}; /* "P" "aris" "." */
    r.store.token_text_bytes = pieces;
    r.store.n_token_text_bytes = 3;
    r.store.model_version = "small@v7";
    Llmserve__V1__CacheResponse *resp = tc_call(&g_c.s, req);
    cr_assert_not_null(resp);
    cr_assert(resp->store->stored, "%s", resp->store->reason);
    cr_assert_str_eq(resp->store->reason, "");
    llmserve__v1__cache_response__free_unpacked(resp, NULL);

    resp = tc_do_lookup(&g_c.s, "", "small", "  What is the capital   of France?\n", false);
    Llmserve__V1__CacheLookupResult *l = resp->lookup;
    cr_assert(l->hit);
    cr_assert_eq(l->kind, LLMSERVE__V1__CACHE_HIT_KIND__CACHE_HIT_KIND_EXACT);
    cr_assert_float_eq(l->similarity, 1.0f, 1e-6);
    cr_assert_str_eq(l->text, "Paris.");
    cr_assert_eq(l->n_token_ids, 3);
    cr_assert_eq(l->token_ids[2], 15);
    cr_assert_eq(l->n_token_text_bytes, 3);
    cr_assert_eq(l->token_text_bytes[1], 4);
    cr_assert_eq(l->finish_reason, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS);
    cr_assert_eq(l->usage->prompt_tokens, 5);
    cr_assert_eq(l->usage->completion_tokens, 3);
    cr_assert_eq(l->source, LLMSERVE__V1__CACHE_SOURCE__CACHE_SOURCE_L1);
    cr_assert_str_eq(l->model_version, "small@v7");
    llmserve__v1__cache_response__free_unpacked(resp, NULL);

    resp = tc_do_stats(&g_c.s);
    cr_assert_geq(resp->stats->hits, 1);
    cr_assert_geq(resp->stats->misses, 1);
    cr_assert_geq(resp->stats->l1_hits, 1);
    cr_assert_geq(resp->stats->stores, 1);
    cr_assert_geq(resp->stats->entries, 1);
    cr_assert_not(resp->stats->degraded);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
}

Test(cache, answers_are_shared_through_memcached_by_instances)
{
    tc_do_store(&g_c.s, "", "small", "shared question", "shared answer", false);
    /* A second instance on the same memcached, with no L1 of its own. */
    static const char *const no_l1[] = {"--l1-bytes", "0", NULL};
    test_proc_t other;
    tc_cache_start(&other, g_mcconf, no_l1);
    rpc_channel_t *ch = channel_to(g_c.client, other.port);
    tc_session_t s;
    cr_assert_eq(tc_session_open(&s, ch), 0);
    Llmserve__V1__CacheResponse *r = tc_do_lookup(&s, "", "small", "shared question", false);
    cr_assert(r->lookup->hit);
    cr_assert_str_eq(r->lookup->text, "shared answer");
    cr_assert_eq(r->lookup->source, LLMSERVE__V1__CACHE_SOURCE__CACHE_SOURCE_MEMCACHED);
    llmserve__v1__cache_response__free_unpacked(r, NULL);
    cr_assert_eq(tc_session_close(&s), GRPC_STATUS_OK);
    rpc_channel_destroy(ch);
    cr_assert_eq(tc_cache_stop(&other), 0);
}

Test(cache, tenant_model_and_parameter_isolation)
{
    tc_do_store(&g_c.s, "acme", "small", "Summarize our Q3 plan.", "acme secret plan", false);
    expect_hit("acme", "small", "Summarize our Q3 plan.", "acme secret plan", 0);
    expect_miss("globex", "small", "Summarize our Q3 plan.");
    expect_miss("", "small", "Summarize our Q3 plan.");
    expect_miss("acme", "large", "Summarize our Q3 plan.");
    expect_miss("acme", "small", "summarize our Q3 plan.");
    tc_req_t r;
    Llmserve__V1__CacheRequest *req =
        tc_lookup(&r, "acme", "small", "Summarize our Q3 plan.", false);
    r.sampling.max_tokens = 17;
    Llmserve__V1__CacheResponse *resp = tc_call(&g_c.s, req);
    cr_assert_not(resp->lookup->hit, "other max_tokens must miss");
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    /* Greedy decoding ignores the seed: same answer. */
    req = tc_lookup(&r, "acme", "small", "Summarize our Q3 plan.", false);
    r.sampling.has_seed = true;
    r.sampling.seed = 99;
    resp = tc_call(&g_c.s, req);
    cr_assert(resp->lookup->hit);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
}

Test(cache, chat_messages_are_keys_too)
{
    Llmserve__V1__ChatMessage sys = LLMSERVE__V1__CHAT_MESSAGE__INIT,
                              user = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    sys.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_SYSTEM;
    sys.content = "Be brief.";
    user.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER;
    user.content = "Name a prime.";
    Llmserve__V1__ChatMessage *msgs[] = {&sys, &user};
    tc_req_t r;
    Llmserve__V1__CacheRequest *req = tc_store(&r, "", "small", "", "7", false);
    r.key.n_messages = 2;
    r.key.messages = msgs;
    Llmserve__V1__CacheResponse *resp = tc_call(&g_c.s, req);
    cr_assert(resp->store->stored, "%s", resp->store->reason);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    req = tc_lookup(&r, "", "small", "", false);
    r.key.n_messages = 2;
    r.key.messages = msgs;
    resp = tc_call(&g_c.s, req);
    cr_assert(resp->lookup->hit);
    cr_assert_str_eq(resp->lookup->text, "7");
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    expect_miss("", "small", "Name a prime.");
}

Test(cache, ttl_expiry)
{
    tc_req_t r;
    Llmserve__V1__CacheRequest *req = tc_store(&r, "", "small", "short lived", "gone soon", false);
    /* memcached counts TTLs in whole seconds on a clock that ticks once a second, so a
     * 1 s TTL can run out within milliseconds: 2 s is the shortest that surely holds
     * for the first lookup. */
    r.store.ttl_seconds = 2;
    Llmserve__V1__CacheResponse *resp = tc_call(&g_c.s, req);
    cr_assert(resp->store->stored);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    expect_hit("", "small", "short lived", "gone soon", 0);
    ls_sleep_us(3500000);
    expect_miss("", "small", "short lived");
}

Test(cache, invalidate_by_key)
{
    tc_do_store(&g_c.s, "", "small", "to be dropped", "old answer", false);
    tc_req_t r;
    Llmserve__V1__CacheResponse *resp =
        tc_call(&g_c.s, tc_invalidate_key(&r, "", "small", "to be dropped"));
    cr_assert_eq(resp->kind_case, LLMSERVE__V1__CACHE_RESPONSE__KIND_INVALIDATE);
    cr_assert_eq(resp->invalidate->removed, 1);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    expect_miss("", "small", "to be dropped");
    resp = tc_call(&g_c.s, tc_invalidate_key(&r, "", "small", "to be dropped"));
    cr_assert_eq(resp->invalidate->removed, 0);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
}

Test(cache, invalidate_by_model_across_tenants_and_instances)
{
    tc_do_store(&g_c.s, "t1", "large", "q1", "a1", false);
    tc_do_store(&g_c.s, "t2", "large", "q2", "a2", false);
    tc_do_store(&g_c.s, "t1", "other", "q1", "kept", false);
    /* A second instance that reads the generation often sees the bump through memcached. */
    static const char *const fast_gen[] = {"--l1-bytes", "0", "--generation-refresh-ms", "100",
                                           NULL};
    test_proc_t other;
    tc_cache_start(&other, g_mcconf, fast_gen);
    rpc_channel_t *ch = channel_to(g_c.client, other.port);
    tc_session_t s;
    cr_assert_eq(tc_session_open(&s, ch), 0);
    Llmserve__V1__CacheResponse *resp = tc_do_lookup(&s, "t2", "large", "q2", false);
    cr_assert(resp->lookup->hit);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);

    tc_req_t r;
    resp = tc_call(&g_c.s, tc_invalidate_model(&r, "large"));
    cr_assert_eq(resp->kind_case, LLMSERVE__V1__CACHE_RESPONSE__KIND_INVALIDATE);
    cr_assert_geq(resp->invalidate->removed, 2, "in-process entries of the model");
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    expect_miss("t1", "large", "q1");
    expect_miss("t2", "large", "q2");
    expect_hit("t1", "other", "q1", "kept", 0);

    ls_sleep_us(300000);
    resp = tc_do_lookup(&s, "t2", "large", "q2", false);
    cr_assert_not(resp->lookup->hit, "the other instance still serves an invalidated answer");
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    cr_assert_eq(tc_session_close(&s), GRPC_STATUS_OK);
    rpc_channel_destroy(ch);
    cr_assert_eq(tc_cache_stop(&other), 0);

    /* New answers for the model work again. */
    tc_do_store(&g_c.s, "t1", "large", "q1", "a1 new", false);
    expect_hit("t1", "large", "q1", "a1 new", 0);
}

Test(cache, value_size_limit)
{
    char *big = malloc(5000);
    memset(big, 'x', 4999);
    big[4999] = '\0';
    tc_req_t r;
    Llmserve__V1__CacheResponse *resp =
        tc_call(&g_c.s, tc_store(&r, "", "small", "big answer", big, false));
    cr_assert_eq(resp->kind_case, LLMSERVE__V1__CACHE_RESPONSE__KIND_STORE);
    cr_assert_not(resp->store->stored);
    cr_assert(strstr(resp->store->reason, "max-value-bytes"), "%s", resp->store->reason);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    expect_miss("", "small", "big answer");
    big[3000] = '\0';
    tc_do_store(&g_c.s, "", "small", "big answer", big, false);
    expect_hit("", "small", "big answer", big, 0);
    free(big);
}

Test(cache, policies_and_random_sampling)
{
    tc_req_t r;
    Llmserve__V1__CacheRequest *req = tc_store(&r, "", "small", "tell a joke", "joke", false);
    r.sampling.temperature = 0.8f;
    Llmserve__V1__CacheResponse *resp = tc_call(&g_c.s, req);
    cr_assert_not(resp->store->stored, "random sampling stored by default");
    cr_assert(strstr(resp->store->reason, "FORCE"), "%s", resp->store->reason);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);

    req = tc_store(&r, "", "small", "tell a joke", "joke", false);
    r.sampling.temperature = 0.8f;
    r.store.cache_policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_FORCE;
    resp = tc_call(&g_c.s, req);
    cr_assert(resp->store->stored, "%s", resp->store->reason);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);

    req = tc_lookup(&r, "", "small", "tell a joke", false);
    r.sampling.temperature = 0.8f;
    resp = tc_call(&g_c.s, req);
    cr_assert_not(resp->lookup->hit, "a DEFAULT lookup with random sampling must not look");
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    req = tc_lookup(&r, "", "small", "tell a joke", false);
    r.sampling.temperature = 0.8f;
    r.lookup.cache_policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_FORCE;
    resp = tc_call(&g_c.s, req);
    cr_assert(resp->lookup->hit);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    /* With a seed the request is deterministic. */
    req = tc_store(&r, "", "small", "tell a joke", "seeded joke", false);
    r.sampling.temperature = 0.8f;
    r.sampling.has_seed = true;
    r.sampling.seed = 5;
    resp = tc_call(&g_c.s, req);
    cr_assert(resp->store->stored);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);

    tc_do_store(&g_c.s, "", "small", "policy q", "policy a", false);
    req = tc_lookup(&r, "", "small", "policy q", false);
    r.lookup.cache_policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_BYPASS;
    resp = tc_call(&g_c.s, req);
    cr_assert_not(resp->lookup->hit);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    req = tc_store(&r, "", "small", "policy q", "other", false);
    r.store.cache_policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_READ_ONLY;
    resp = tc_call(&g_c.s, req);
    cr_assert_not(resp->store->stored);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    req = tc_store(&r, "", "small", "policy q", "cut", false);
    r.store.finish_reason = LLMSERVE__V1__FINISH_REASON__FINISH_REASON_CANCELLED;
    resp = tc_call(&g_c.s, req);
    cr_assert_not(resp->store->stored, "a cancelled answer must not be stored");
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
    expect_hit("", "small", "policy q", "policy a", 0);
}

Test(cache, bad_input_gets_proper_codes_and_the_stream_goes_on)
{
    tc_req_t r;
    expect_error(tc_lookup(&r, "", "small", "", false), GRPC_STATUS_INVALID_ARGUMENT, "empty");
    expect_error(tc_lookup(&r, "", "small", " \n\t ", false), GRPC_STATUS_INVALID_ARGUMENT,
                 "whitespace");
    expect_error(tc_lookup(&r, "", "", "q", false), GRPC_STATUS_INVALID_ARGUMENT, "model");
    expect_error(tc_lookup(&r, "", "mystery", "q", false), GRPC_STATUS_NOT_FOUND, "unknown model");
    char *long_prompt = malloc(2000);
    memset(long_prompt, 'p', 1999);
    long_prompt[1999] = '\0';
    expect_error(tc_lookup(&r, "", "small", long_prompt, false), GRPC_STATUS_INVALID_ARGUMENT,
                 "max-key-bytes");
    expect_error(tc_store(&r, "", "small", long_prompt, "a", false), GRPC_STATUS_INVALID_ARGUMENT,
                 "max-key-bytes");
    free(long_prompt);
    expect_error(tc_lookup(&r, "", "small", "bad \xff\xfe utf8", false),
                 GRPC_STATUS_INVALID_ARGUMENT, "UTF-8");
    Llmserve__V1__CacheRequest *req = tc_lookup(&r, "", "small", "q", false);
    r.sampling.temperature = 3.0f;
    expect_error(req, GRPC_STATUS_INVALID_ARGUMENT, "temperature");
    req = tc_lookup(&r, "", "small", "q", true);
    r.lookup.min_similarity = 1.5f;
    expect_error(req, GRPC_STATUS_INVALID_ARGUMENT, "min_similarity");
    Llmserve__V1__ChatMessage m = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    Llmserve__V1__ChatMessage *msgs[] = {&m};
    m.content = "hi";
    req = tc_lookup(&r, "", "small", "", false);
    r.key.messages = msgs;
    r.key.n_messages = 1;
    expect_error(req, GRPC_STATUS_INVALID_ARGUMENT, "role");
    req = tc_lookup(&r, "", "small", "both", false);
    m.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER;
    r.key.messages = msgs;
    r.key.n_messages = 1;
    expect_error(req, GRPC_STATUS_INVALID_ARGUMENT, "both");
    req = tc_store(&r, "", "small", "q", "a", false);
    int32_t bad_ids[] = {1, -2};
    r.store.token_ids = bad_ids;
    r.store.n_token_ids = 2;
    expect_error(req, GRPC_STATUS_INVALID_ARGUMENT, "token_ids[1]");
    req = tc_store(&r, "", "small", "q", "ab", false);
    int32_t two_ids[] = {1, 2};
    uint32_t three_pieces[] = {1, 1, 0};
    r.store.token_ids = two_ids;
    r.store.n_token_ids = 2;
    r.store.token_text_bytes = three_pieces;
    r.store.n_token_text_bytes = 3;
    expect_error(req, GRPC_STATUS_INVALID_ARGUMENT, "3 entries for 2 token_ids");
    req = tc_store(&r, "", "small", "q", "\xc3\xa9", false);
    uint32_t split[] = {1, 1}; /* cuts the character in two */
    r.store.token_text_bytes = split;
    r.store.n_token_text_bytes = 2;
    expect_error(req, GRPC_STATUS_INVALID_ARGUMENT, "token_text_bytes");
    req = tc_store(&r, "", "small", "q", "ab", false);
    uint32_t short_sum[] = {1};
    r.store.token_text_bytes = short_sum;
    r.store.n_token_text_bytes = 1;
    expect_error(req, GRPC_STATUS_INVALID_ARGUMENT, "make up all of it");
    expect_error(tc_invalidate_model(&r, ""), GRPC_STATUS_INVALID_ARGUMENT, "model");
    req = tc_lookup(&r, "", "small", "q", false);
    r.req.kind_case = LLMSERVE__V1__CACHE_REQUEST__KIND__NOT_SET;
    expect_error(req, GRPC_STATUS_INVALID_ARGUMENT, "no operation");
    req = tc_lookup(&r, "", "small", "q", false);
    r.lookup.key = NULL;
    expect_error(req, GRPC_STATUS_INVALID_ARGUMENT, "key");

    /* The stream still serves. */
    tc_do_store(&g_c.s, "", "small", "after errors", "fine", false);
    expect_hit("", "small", "after errors", "fine", 0);
    Llmserve__V1__CacheResponse *st = tc_do_stats(&g_c.s);
    cr_assert_geq(st->stats->errors, 14);
    llmserve__v1__cache_response__free_unpacked(st, NULL);
}

Test(cache, undecodable_bytes_end_only_that_stream)
{
    tc_session_t s;
    cr_assert_eq(tc_session_open(&s, g_c.ch), 0);
    static const unsigned char junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12};
    cr_assert_eq(rpc_stream_send_raw(s.stream, junk, sizeof(junk)), LS_OK);
    cr_assert_eq(tc_session_close(&s), GRPC_STATUS_INVALID_ARGUMENT);
    tc_do_store(&g_c.s, "", "small", "still alive", "yes", false);
}

/* ---- L1 eviction, on a service with a small L1 ------------------------------------- */

static const char *const k_tiny_l1[] = {"--l1-bytes", "8192", NULL};

static void start_tiny_l1(void)
{
    start_with(k_tiny_l1);
}

Test(cache_l1, eviction_falls_back_to_memcached, .init = start_tiny_l1, .fini = stop_all,
     .timeout = 60)
{
    char text[600];
    memset(text, 'a', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    char prompt[32];
    for (int i = 0; i < 40; i++) {
        snprintf(prompt, sizeof(prompt), "question %d", i);
        text[0] = (char)('A' + i % 26);
        tc_do_store(&g_c.s, "", "small", prompt, text, false);
    }
    /* The newest answers are in L1; the oldest were evicted and come from memcached,
     * after which they are in L1 again. */
    snprintf(prompt, sizeof(prompt), "question %d", 39);
    text[0] = (char)('A' + 39 % 26);
    expect_hit("", "small", prompt, text, LLMSERVE__V1__CACHE_SOURCE__CACHE_SOURCE_L1);
    snprintf(prompt, sizeof(prompt), "question %d", 0);
    text[0] = 'A';
    expect_hit("", "small", prompt, text, LLMSERVE__V1__CACHE_SOURCE__CACHE_SOURCE_MEMCACHED);
    expect_hit("", "small", prompt, text, LLMSERVE__V1__CACHE_SOURCE__CACHE_SOURCE_L1);
    Llmserve__V1__CacheResponse *st = tc_do_stats(&g_c.s);
    cr_assert_lt(st->stats->entries, 40, "L1 held %llu entries in 8 KiB",
                 (unsigned long long)st->stats->entries);
    llmserve__v1__cache_response__free_unpacked(st, NULL);
}

/* ---- 64 concurrent streams -------------------------------------------------------- */

Test(cache_load, sixty_four_concurrent_lookup_streams, .init = start_default, .fini = stop_all,
     .timeout = 120)
{
    enum { STREAMS = 64, KEYS = 32, PER = 40 };
    char prompt[32], text[48];
    for (int k = 0; k < KEYS; k++) {
        snprintf(prompt, sizeof(prompt), "load question %d", k);
        snprintf(text, sizeof(text), "load answer %d", k);
        tc_do_store(&g_c.s, "", "small", prompt, text, false);
    }
    tc_session_t *s = calloc(STREAMS, sizeof(*s));
    for (int i = 0; i < STREAMS; i++)
        cr_assert_eq(tc_session_open(&s[i], g_c.ch), 0);
    /* Every stream has all its lookups in flight at once; half miss (unknown keys). */
    uint64_t ids[STREAMS][PER];
    for (int j = 0; j < PER; j++) {
        for (int i = 0; i < STREAMS; i++) {
            int k = (i + j) % (2 * KEYS);
            snprintf(prompt, sizeof(prompt), "load question %d", k);
            tc_req_t r;
            ids[i][j] = tc_send(&s[i], tc_lookup(&r, "", "small", prompt, false));
        }
    }
    for (int i = 0; i < STREAMS; i++) {
        for (int j = 0; j < PER; j++) {
            Llmserve__V1__CacheResponse *resp = tc_wait(&s[i], ids[i][j], 20000);
            cr_assert_not_null(resp, "stream %d request %d unanswered", i, j);
            cr_assert_eq(resp->kind_case, LLMSERVE__V1__CACHE_RESPONSE__KIND_LOOKUP);
            int k = (i + j) % (2 * KEYS);
            if (k < KEYS) {
                snprintf(text, sizeof(text), "load answer %d", k);
                cr_assert(resp->lookup->hit, "stream %d key %d missed", i, k);
                cr_assert_str_eq(resp->lookup->text, text, "an answer for another question");
            } else {
                cr_assert_not(resp->lookup->hit);
            }
            llmserve__v1__cache_response__free_unpacked(resp, NULL);
        }
        cr_assert_eq(s[i].received, PER, "stream %d: exactly one answer per request", i);
    }
    for (int i = 0; i < STREAMS; i++)
        cr_assert_eq(tc_session_close(&s[i]), GRPC_STATUS_OK);
    free(s);
}
