/* test_key.c - libs/cache/cache_key.c: normalization and what does and does not change a key. */
#include "base/err.h"
#include "cache/cache_key.h"

#include <criterion/criterion.h>
#include <string.h>

static cache_key_input_t prompt_in(const char *tenant, const char *model, const char *prompt)
{
    cache_key_input_t in = {0};
    in.tenant = tenant;
    in.model = model;
    in.prompt = prompt;
    return in;
}

static cache_key_t key_of(const cache_key_input_t *in, uint64_t gen)
{
    cache_key_t k;
    cr_assert_eq(cache_key_compute(in, gen, &k), LS_OK);
    return k;
}

static bool same_exact(const cache_key_input_t *a, const cache_key_input_t *b)
{
    cache_key_t ka = key_of(a, 1), kb = key_of(b, 1);
    return cache_digest_equal(&ka.exact, &kb.exact);
}

Test(key, normalization_trims_and_collapses_ascii_whitespace)
{
    static const struct {
        const char *in, *out;
    } v[] = {
        {"  hello   world \n", "hello world"},
        {"a\t\r\n\v\fb", "a b"},
        {"", ""},
        {" \t\n ", ""},
        {"x", "x"},
        {"Ünïcode  stays", "Ünïcode stays"},
        {"Case Stays.", "Case Stays."},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char out[64];
        size_t n = cache_key_normalize(v[i].in, strlen(v[i].in), out);
        cr_assert_eq(n, strlen(v[i].out), "case %zu", i);
        cr_assert_eq(memcmp(out, v[i].out, n), 0, "case %zu", i);
        cr_assert_eq(cache_key_normalize(v[i].in, strlen(v[i].in), NULL), n);
    }
}

Test(key, whitespace_variants_share_a_key_case_does_not)
{
    cache_key_input_t a = prompt_in("", "small", "What is  the capital\nof France?");
    cache_key_input_t b = prompt_in("", "small", "  What is the capital of France? ");
    cache_key_input_t c = prompt_in("", "small", "what is the capital of France?");
    cr_assert(same_exact(&a, &b));
    cr_assert_not(same_exact(&a, &c));
}

Test(key, tenant_model_generation_and_prompt_all_separate)
{
    cache_key_input_t base = prompt_in("t1", "small", "hi");
    cache_key_input_t t2 = prompt_in("t2", "small", "hi");
    cache_key_input_t m2 = prompt_in("t1", "large", "hi");
    cache_key_input_t p2 = prompt_in("t1", "small", "hi!");
    cr_assert_not(same_exact(&base, &t2));
    cr_assert_not(same_exact(&base, &m2));
    cr_assert_not(same_exact(&base, &p2));
    cache_key_t g1 = key_of(&base, 1), g2 = key_of(&base, 2);
    cr_assert_not(cache_digest_equal(&g1.exact, &g2.exact));
    cr_assert_not(cache_digest_equal(&g1.scope, &g2.scope));
    /* Field boundaries are length-prefixed: moving bytes between fields changes the key. */
    cache_key_input_t x = prompt_in("ab", "c", "p"), y = prompt_in("a", "bc", "p");
    cr_assert_not(same_exact(&x, &y));
    /* The model tag ignores the tenant. */
    cr_assert_eq(key_of(&base, 1).model_tag, key_of(&t2, 1).model_tag);
    cr_assert_neq(key_of(&base, 1).model_tag, key_of(&m2, 1).model_tag);
}

Test(key, sampling_parameters_count_only_where_they_change_the_answer)
{
    cache_key_input_t a = prompt_in("", "m", "q"), b = a;
    /* Greedy: top_p, top_k and seed do not matter. */
    b.sampling.top_p = 0.5f;
    b.sampling.top_k = 40;
    b.sampling.seed = 7;
    b.sampling.has_seed = true;
    cr_assert(same_exact(&a, &b));
    /* max_tokens and ignore_eos always do. */
    b = a;
    b.sampling.max_tokens = 10;
    cr_assert_not(same_exact(&a, &b));
    b = a;
    b.sampling.ignore_eos = true;
    cr_assert_not(same_exact(&a, &b));
    /* Sampling: temperature, top_p, top_k and seed do; top_p 1 and 0 are both off. */
    a.sampling.temperature = 0.7f;
    a.sampling.has_seed = true;
    a.sampling.seed = 1;
    b = a;
    b.sampling.top_p = 1.0f;
    cr_assert(same_exact(&a, &b));
    b.sampling.top_p = 0.9f;
    cr_assert_not(same_exact(&a, &b));
    b = a;
    b.sampling.seed = 2;
    cr_assert_not(same_exact(&a, &b));
    b = a;
    b.sampling.temperature = 0.8f;
    cr_assert_not(same_exact(&a, &b));
    b = a;
    b.sampling.top_k = 5;
    cr_assert_not(same_exact(&a, &b));
    /* -0 is 0. */
    cache_key_input_t z = prompt_in("", "m", "q"), nz = z;
    nz.sampling.temperature = -0.0f;
    cr_assert(same_exact(&z, &nz));
}

Test(key, stop_strings_are_a_set)
{
    const char *s1[] = {"END", "\n\n"};
    const char *s2[] = {"\n\n", "END"};
    const char *s3[] = {"END"};
    cache_key_input_t a = prompt_in("", "m", "q"), b = a, c = a;
    a.sampling.stop = s1;
    a.sampling.n_stop = 2;
    b.sampling.stop = s2;
    b.sampling.n_stop = 2;
    c.sampling.stop = s3;
    c.sampling.n_stop = 1;
    cr_assert(same_exact(&a, &b));
    cr_assert_not(same_exact(&a, &c));
}

Test(key, determinism)
{
    cache_sampling_t s = {0};
    cr_assert(cache_key_deterministic(&s));
    s.temperature = 0.8f;
    cr_assert_not(cache_key_deterministic(&s));
    s.has_seed = true;
    cr_assert(cache_key_deterministic(&s));
}

Test(key, chat_keys_and_scopes)
{
    cache_msg_t m1[] = {{1, "Be brief.", 9}, {2, "What is  DNA?", 13}};
    cache_msg_t m2[] = {{1, "Be brief.", 9}, {2, "Explain DNA", 11}};
    cache_msg_t m3[] = {{1, "Be verbose.", 11}, {2, "What is  DNA?", 13}};
    cache_msg_t m4[] = {{1, "Be brief.", 9}, {3, "What is  DNA?", 13}};
    cache_key_input_t a = {.tenant = "", .model = "m", .messages = m1, .n_messages = 2};
    cache_key_input_t b = a, c = a, d = a;
    b.messages = m2;
    c.messages = m3;
    d.messages = m4;
    cache_key_t ka = key_of(&a, 1), kb = key_of(&b, 1), kc = key_of(&c, 1), kd = key_of(&d, 1);
    cr_assert_not(cache_digest_equal(&ka.exact, &kb.exact));
    /* Same history, different last turn: one semantic scope. */
    cr_assert(cache_digest_equal(&ka.scope, &kb.scope));
    /* Different history or role: different scopes. */
    cr_assert_not(cache_digest_equal(&ka.scope, &kc.scope));
    cr_assert_not(cache_digest_equal(&ka.scope, &kd.scope));
    /* A prompt and a one-message chat with the same text are different questions. */
    cache_msg_t one[] = {{2, "hi", 2}};
    cache_key_input_t chat = {.tenant = "", .model = "m", .messages = one, .n_messages = 1};
    cache_key_input_t plain = prompt_in("", "m", "hi");
    cr_assert_not(same_exact(&chat, &plain));
    const char *t;
    size_t len;
    cache_key_semantic_text(&a, &t, &len);
    cr_assert_eq(len, 13);
    cr_assert_eq(memcmp(t, "What is  DNA?", 13), 0);
}

Test(key, bad_inputs_are_invalid)
{
    cache_key_t k;
    cache_key_input_t in = prompt_in("", "m", "q");
    in.tenant = NULL;
    cr_assert_eq(cache_key_compute(&in, 0, &k), LS_ERR_INVALID);
    in = prompt_in("", NULL, "q");
    cr_assert_eq(cache_key_compute(&in, 0, &k), LS_ERR_INVALID);
    cache_msg_t m[] = {{2, "x", 1}};
    in = prompt_in("", "m", "q");
    in.messages = m;
    in.n_messages = 1;
    cr_assert_eq(cache_key_compute(&in, 0, &k), LS_ERR_INVALID, "both prompt and messages");
    in = prompt_in("", "m", NULL);
    cr_assert_eq(cache_key_compute(&in, 0, &k), LS_ERR_INVALID, "neither");
    const char *stops[CACHE_KEY_MAX_STOP + 1] = {0};
    for (int i = 0; i <= CACHE_KEY_MAX_STOP; i++)
        stops[i] = "s";
    in = prompt_in("", "m", "q");
    in.sampling.stop = stops;
    in.sampling.n_stop = CACHE_KEY_MAX_STOP + 1;
    cr_assert_eq(cache_key_compute(&in, 0, &k), LS_ERR_INVALID);
}
