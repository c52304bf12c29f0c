/* test_semantic.c - libs/cache/cache_semantic.c: the semantic index. */
#include "base/err.h"
#include "cache/cache_embed.h"
#include "cache/cache_semantic.h"

#include <criterion/criterion.h>
#include <string.h>

#define DIM 256

static cache_embedder_t *g_e;

static void setup(void)
{
    g_e = cache_embed_ngram_create(DIM);
}

static void teardown(void)
{
    cache_embedder_destroy(g_e);
}

TestSuite(semantic, .init = setup, .fini = teardown);

static cache_digest_t digest(unsigned i)
{
    cache_digest_t d = {{0}};
    memcpy(d.b, &i, sizeof(i));
    return d;
}

static void vec(const char *text, float *v)
{
    cr_assert_eq(g_e->embed(g_e, text, strlen(text), v), LS_OK);
}

Test(semantic, nearest_entry_above_threshold)
{
    cache_semantic_t *idx = cache_semantic_create(DIM, 16, 16);
    cache_digest_t scope = digest(100), a = digest(1), b = digest(2), found;
    float v[DIM], s;
    vec("How do I reverse a list in Python?", v);
    cr_assert_eq(cache_semantic_add(idx, &scope, 1, v, &a, 1000, 0), LS_OK);
    vec("What causes the seasons on Earth?", v);
    cr_assert_eq(cache_semantic_add(idx, &scope, 1, v, &b, 1000, 0), LS_OK);
    vec("How can I reverse a Python list?", v);
    cr_assert(cache_semantic_search(idx, &scope, v, 0.6f, 0, &found, &s));
    cr_assert(cache_digest_equal(&found, &a));
    cr_assert_gt(s, 0.6f);
    cr_assert_leq(s, 1.0f);
    /* Threshold edge: exactly the similarity hits, just above it misses. */
    cr_assert(cache_semantic_search(idx, &scope, v, s, 0, &found, &s));
    cr_assert_not(cache_semantic_search(idx, &scope, v, s + 1e-4f, 0, &found, &s));
    vec("Tell me about the French Revolution", v);
    cr_assert_not(cache_semantic_search(idx, &scope, v, 0.6f, 0, &found, &s));
    cache_semantic_destroy(idx);
}

Test(semantic, scopes_never_mix)
{
    cache_semantic_t *idx = cache_semantic_create(DIM, 16, 16);
    cache_digest_t s1 = digest(100), s2 = digest(200), a = digest(1), found;
    float v[DIM], s;
    vec("What is the capital of France?", v);
    cache_semantic_add(idx, &s1, 1, v, &a, 1000, 0);
    cr_assert(cache_semantic_search(idx, &s1, v, 0.99f, 0, &found, &s));
    cr_assert_not(cache_semantic_search(idx, &s2, v, 0.0f, 0, &found, &s),
                  "an identical vector in another scope must not match");
    cache_semantic_destroy(idx);
}

Test(semantic, entries_expire_and_are_swept)
{
    cache_semantic_t *idx = cache_semantic_create(DIM, 16, 16);
    cache_digest_t scope = digest(100), a = digest(1), b = digest(2), found;
    float v[DIM], s;
    vec("What is the capital of France?", v);
    cache_semantic_add(idx, &scope, 1, v, &a, 500, 0);
    cr_assert(cache_semantic_search(idx, &scope, v, 0.9f, 499, &found, &s));
    cr_assert_not(cache_semantic_search(idx, &scope, v, 0.9f, 500, &found, &s));
    vec("Why is the sky blue?", v);
    cache_semantic_add(idx, &scope, 1, v, &b, 2000, 600);
    cr_assert_eq(cache_semantic_count(idx), 1, "the expired entry is swept by the add");
    cache_semantic_destroy(idx);
}

Test(semantic, full_scope_evicts_the_entry_expiring_first)
{
    cache_semantic_t *idx = cache_semantic_create(DIM, 3, 16);
    cache_digest_t scope = digest(100), found;
    const char *texts[] = {"alpha question", "beta question", "gamma question", "delta question"};
    int64_t exp[] = {5000, 1000, 9000, 7000};
    float v[DIM], s;
    for (unsigned i = 0; i < 4; i++) {
        cache_digest_t d = digest(i);
        vec(texts[i], v);
        cr_assert_eq(cache_semantic_add(idx, &scope, 1, v, &d, exp[i], 0), LS_OK);
    }
    cr_assert_eq(cache_semantic_count(idx), 3);
    vec("beta question", v);
    cr_assert(!cache_semantic_search(idx, &scope, v, 0.99f, 0, &found, &s) ||
                  !cache_digest_equal(&found, &(cache_digest_t){{1}}),
              "the soonest-expiring entry should be gone");
    vec("delta question", v);
    cr_assert(cache_semantic_search(idx, &scope, v, 0.99f, 0, &found, &s));
    cache_semantic_destroy(idx);
}

Test(semantic, replace_remove_and_remove_by_model)
{
    cache_semantic_t *idx = cache_semantic_create(DIM, 16, 16);
    cache_digest_t s1 = digest(100), s2 = digest(200), s3 = digest(300), a = digest(1), found;
    float v[DIM], s;
    vec("What is the capital of France?", v);
    cache_semantic_add(idx, &s1, 7, v, &a, 1000, 0);
    cache_semantic_add(idx, &s1, 7, v, &a, 1000, 0);
    cr_assert_eq(cache_semantic_count(idx), 1, "same exact key replaces");
    cache_semantic_add(idx, &s2, 7, v, &a, 1000, 0);
    cache_semantic_add(idx, &s3, 8, v, &a, 1000, 0);
    cr_assert(cache_semantic_remove(idx, &s1, &a));
    cr_assert_not(cache_semantic_remove(idx, &s1, &a));
    cr_assert_eq(cache_semantic_remove_tag(idx, 7), 1);
    cr_assert_not(cache_semantic_search(idx, &s2, v, 0.5f, 0, &found, &s));
    cr_assert(cache_semantic_search(idx, &s3, v, 0.5f, 0, &found, &s));
    cr_assert_eq(cache_semantic_scopes(idx), 1);
    cache_semantic_destroy(idx);
}

Test(semantic, scope_count_is_bounded)
{
    cache_semantic_t *idx = cache_semantic_create(DIM, 4, 8);
    float v[DIM];
    vec("some question", v);
    for (unsigned i = 0; i < 100; i++) {
        cache_digest_t sc = digest(1000 + i), k = digest(i);
        cr_assert_eq(cache_semantic_add(idx, &sc, 1, v, &k, 1000, 0), LS_OK);
    }
    cr_assert_eq(cache_semantic_scopes(idx), 8);
    cr_assert_eq(cache_semantic_count(idx), 8);
    cache_semantic_destroy(idx);
    cache_semantic_destroy(NULL);
}
