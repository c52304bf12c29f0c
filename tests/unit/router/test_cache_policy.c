/*
 * test_cache_policy.c - services/router/cache_policy.c: the lookup/store table, the keys'
 * model names, the Lookup and Store messages (through the wire and back), and what a
 * lookup's response means.
 */
#include "cache_policy.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P(x) LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_##x

/* Sampling of each kind: greedy, seeded (random but repeatable), random. */
static Llmserve__V1__SamplingParams sampling_of(int kind)
{
    Llmserve__V1__SamplingParams s = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    s.max_tokens = 16;
    if (kind == 1) {
        s.temperature = 0.8f;
        s.has_seed = true;
        s.seed = 7;
    } else if (kind == 2) {
        s.temperature = 0.8f;
    }
    return s;
}

Test(cache_policy, the_table_for_every_policy_sampling_and_cache)
{
    static const struct {
        Llmserve__V1__CachePolicy policy;
        bool deterministic, lookup, store;
    } table[] = {
        {P(DEFAULT), true, true, true},     {P(DEFAULT), false, false, false},
        {P(BYPASS), true, false, false},    {P(BYPASS), false, false, false},
        {P(READ_ONLY), true, true, false},  {P(READ_ONLY), false, false, false},
        {P(WRITE_ONLY), true, false, true}, {P(WRITE_ONLY), false, false, false},
        {P(FORCE), true, true, true},       {P(FORCE), false, true, true},
    };
    int rows = 0;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        for (int kind = 0; kind < 3; kind++) {
            if ((kind < 2) != table[i].deterministic)
                continue;
            Llmserve__V1__SamplingParams s = sampling_of(kind);
            for (int cache = 0; cache < 2; cache++) {
                router_cache_plan_t p = router_cache_policy_resolve(table[i].policy, &s, cache);
                bool want_lookup = cache && table[i].lookup;
                bool want_store = cache && table[i].store;
                cr_assert_eq(p.lookup, want_lookup, "policy %d sampling %d cache %d: lookup",
                             (int)table[i].policy, kind, cache);
                cr_assert_eq(p.store, want_store, "policy %d sampling %d cache %d: store",
                             (int)table[i].policy, kind, cache);
                rows++;
            }
        }
    }
    cr_assert_eq(rows, 5 * 3 * 2, "every policy, sampling kind and cache presence");
}

Test(cache_policy, storable_finish_reasons)
{
    for (int r = 0; r <= 7; r++) {
        bool want = r == LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH ||
                    r == LLMSERVE__V1__FINISH_REASON__FINISH_REASON_STOP ||
                    r == LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS;
        cr_assert_eq(router_cache_policy_storable((Llmserve__V1__FinishReason)r), want, "reason %d",
                     r);
    }
}

Test(cache_policy, model_names_versions_apart)
{
    char buf[64];
    router_cache_policy_model(buf, sizeof(buf), "small", "");
    cr_assert_str_eq(buf, "small");
    router_cache_policy_model(buf, sizeof(buf), "small", NULL);
    cr_assert_str_eq(buf, "small");
    router_cache_policy_model(buf, sizeof(buf), "large", "v2");
    cr_assert_str_eq(buf, "large@v2");
    router_cache_policy_model(buf, 6, "large", "v2");
    cr_assert_str_eq(buf, "large", "truncated to fit");
}

/* Packs req and unpacks it as the cache would; the caller frees the result. */
static Llmserve__V1__CacheRequest *over_the_wire(const Llmserve__V1__CacheRequest *req)
{
    size_t n = llmserve__v1__cache_request__get_packed_size(req);
    uint8_t *buf = malloc(n ? n : 1);
    cr_assert_eq(llmserve__v1__cache_request__pack(req, buf), n);
    Llmserve__V1__CacheRequest *out = llmserve__v1__cache_request__unpack(NULL, n, buf);
    free(buf);
    cr_assert_not_null(out);
    return out;
}

static Llmserve__V1__GenerateSubmit submit_of(Llmserve__V1__CachePolicy policy)
{
    Llmserve__V1__GenerateSubmit sub = LLMSERVE__V1__GENERATE_SUBMIT__INIT;
    sub.request_id = "r1";
    sub.prompt = "Once upon a time";
    sub.tenant = "acme";
    sub.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    sub.cache_policy = policy;
    return sub;
}

Test(cache_policy, lookup_message)
{
    Llmserve__V1__GenerateSubmit sub = submit_of(P(READ_ONLY));
    Llmserve__V1__SamplingParams s = sampling_of(1);
    router_cache_query_t q = {&sub, "large@v2", &s, true, NULL, sub.traceparent};
    router_cache_msg_t m;
    router_cache_policy_lookup(&m, &q, 42);
    Llmserve__V1__CacheRequest *got = over_the_wire(&m.req);
    cr_assert_eq(got->id, 42);
    cr_assert_str_eq(got->traceparent, sub.traceparent);
    cr_assert_eq(got->kind_case, LLMSERVE__V1__CACHE_REQUEST__KIND_LOOKUP);
    const Llmserve__V1__CacheLookup *lk = got->lookup;
    cr_assert(lk->semantic);
    cr_assert_eq(lk->cache_policy, P(READ_ONLY));
    cr_assert_str_eq(lk->key->tenant, "acme");
    cr_assert_str_eq(lk->key->model, "large@v2");
    cr_assert_str_eq(lk->key->prompt, "Once upon a time");
    cr_assert_eq(lk->key->n_messages, 0);
    cr_assert_eq(lk->key->sampling->max_tokens, 16);
    cr_assert(lk->key->sampling->has_seed);
    cr_assert_eq(lk->key->sampling->seed, 7);
    cr_assert_float_eq(lk->key->sampling->temperature, 0.8f, 1e-6);
    llmserve__v1__cache_request__free_unpacked(got, NULL);
}

Test(cache_policy, lookup_of_a_chat_keys_its_messages)
{
    Llmserve__V1__ChatMessage a = LLMSERVE__V1__CHAT_MESSAGE__INIT, b = a;
    a.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_SYSTEM;
    a.content = "Be brief.";
    b.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER;
    b.content = "Hi";
    Llmserve__V1__ChatMessage *msgs[] = {&a, &b};
    Llmserve__V1__GenerateSubmit sub = submit_of(P(DEFAULT));
    sub.prompt = "";
    sub.n_messages = 2;
    sub.messages = msgs;
    Llmserve__V1__SamplingParams s = sampling_of(0);
    router_cache_query_t q = {&sub, "small", &s, false, NULL, NULL};
    router_cache_msg_t m;
    router_cache_policy_lookup(&m, &q, 7);
    Llmserve__V1__CacheRequest *got = over_the_wire(&m.req);
    cr_assert_not(got->lookup->semantic);
    cr_assert_str_eq(got->lookup->key->prompt, "");
    cr_assert_eq(got->lookup->key->n_messages, 2);
    cr_assert_str_eq(got->lookup->key->messages[0]->content, "Be brief.");
    cr_assert_eq(got->lookup->key->messages[1]->role, LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER);
    llmserve__v1__cache_request__free_unpacked(got, NULL);
}

Test(cache_policy, store_message_carries_the_recorded_answer)
{
    Llmserve__V1__GenerateSubmit sub = submit_of(P(FORCE));
    Llmserve__V1__SamplingParams s = sampling_of(2);
    router_cache_query_t q = {&sub, "small", &s, false, NULL, NULL};
    router_answer_t a;
    router_answer_init(&a, ROUTER_ANSWER_MAX_BYTES);
    router_answer_append(&a, " there", 11);
    router_answer_append(&a, " was", 12);
    router_answer_append(&a, " é", 13);
    router_cache_outcome_t o = {LLMSERVE__V1__FINISH_REASON__FINISH_REASON_STOP, 5, 3, 3600, "v9"};
    router_cache_msg_t m;
    router_cache_policy_store(&m, &q, 43, &a, &o);
    Llmserve__V1__CacheRequest *got = over_the_wire(&m.req);
    router_answer_free(&a);
    cr_assert_eq(got->id, 43);
    cr_assert_eq(got->kind_case, LLMSERVE__V1__CACHE_REQUEST__KIND_STORE);
    const Llmserve__V1__CacheStore *st = got->store;
    cr_assert_str_eq(st->key->model, "small");
    cr_assert_str_eq(st->key->prompt, "Once upon a time");
    cr_assert_float_eq(st->key->sampling->temperature, 0.8f, 1e-6);
    cr_assert_str_eq(st->text, " there was é");
    cr_assert_eq(st->n_token_ids, 3);
    cr_assert_eq(st->token_ids[2], 13);
    cr_assert_eq(st->n_token_text_bytes, 3);
    cr_assert_eq(st->token_text_bytes[0], 6);
    cr_assert_eq(st->token_text_bytes[2], 3);
    cr_assert_eq(st->finish_reason, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_STOP);
    cr_assert_eq(st->usage->prompt_tokens, 5);
    cr_assert_eq(st->usage->completion_tokens, 3);
    cr_assert_eq(st->ttl_seconds, 3600);
    cr_assert_eq(st->cache_policy, P(FORCE));
    cr_assert_str_eq(st->model_version, "v9");
    cr_assert_not(st->semantic);
    llmserve__v1__cache_request__free_unpacked(got, NULL);
}

Test(cache_policy, store_of_an_empty_answer_has_empty_text)
{
    Llmserve__V1__GenerateSubmit sub = submit_of(P(DEFAULT));
    Llmserve__V1__SamplingParams s = sampling_of(0);
    router_cache_query_t q = {&sub, "small", &s, true, NULL, NULL};
    router_answer_t a;
    router_answer_init(&a, ROUTER_ANSWER_MAX_BYTES);
    router_cache_outcome_t o = {LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS, 5, 0, 0, ""};
    router_cache_msg_t m;
    router_cache_policy_store(&m, &q, 44, &a, &o);
    Llmserve__V1__CacheRequest *got = over_the_wire(&m.req);
    cr_assert_str_eq(got->store->text, "");
    cr_assert_eq(got->store->n_token_ids, 0);
    cr_assert(got->store->semantic);
    llmserve__v1__cache_request__free_unpacked(got, NULL);
}

Test(cache_policy, a_response_is_a_hit_only_when_a_lookup_found_an_answer)
{
    Llmserve__V1__CacheLookupResult found = LLMSERVE__V1__CACHE_LOOKUP_RESULT__INIT;
    found.hit = true;
    found.text = "cached";
    Llmserve__V1__CacheLookupResult missed = LLMSERVE__V1__CACHE_LOOKUP_RESULT__INIT;
    Llmserve__V1__CacheResponse r = LLMSERVE__V1__CACHE_RESPONSE__INIT;
    r.id = 1;
    r.kind_case = LLMSERVE__V1__CACHE_RESPONSE__KIND_LOOKUP;
    r.lookup = &found;
    cr_assert_eq(router_cache_policy_hit(&r), &found);
    r.lookup = &missed;
    cr_assert_null(router_cache_policy_hit(&r));
    Llmserve__V1__Status err = LLMSERVE__V1__STATUS__INIT;
    err.code = 14;
    err.message = "memcached down";
    r.kind_case = LLMSERVE__V1__CACHE_RESPONSE__KIND_ERROR;
    r.error = &err;
    cr_assert_null(router_cache_policy_hit(&r));
    Llmserve__V1__CacheStoreResult stored = LLMSERVE__V1__CACHE_STORE_RESULT__INIT;
    r.kind_case = LLMSERVE__V1__CACHE_RESPONSE__KIND_STORE;
    r.store = &stored;
    cr_assert_null(router_cache_policy_hit(&r));
    r.kind_case = LLMSERVE__V1__CACHE_RESPONSE__KIND__NOT_SET;
    cr_assert_null(router_cache_policy_hit(&r));
}
