/* test_semantic.c - libs/cache/cache_semantic.c: the semantic index, dense and sparse. */
#define _GNU_SOURCE
#include "base/err.h"
#include "cache/cache_embed.h"
#include "cache/cache_semantic.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
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

/* ---- sparse scopes ----------------------------------------------------------------- */

#define SPACE (1u << 20)

static cache_embedder_t *g_s;

static void setup_sparse(void)
{
    g_s = cache_embed_ngram_create(SPACE);
}

static void teardown_sparse(void)
{
    cache_embedder_destroy(g_s);
}

TestSuite(semantic_sparse, .init = setup_sparse, .fini = teardown_sparse);

static void svec(const char *text, cache_sparse_t *v)
{
    cr_assert_eq(g_s->embed_sparse(g_s, text, strlen(text), v), LS_OK);
}

static bool ssearch(cache_semantic_t *idx, const cache_digest_t *scope, const cache_sparse_t *v,
                    float min, int64_t now, cache_digest_t *found, float *s)
{
    return cache_semantic_search_sparse(idx, scope, v, NULL, min, now, found, s, NULL);
}

Test(semantic_sparse, nearest_entry_above_threshold)
{
    cache_semantic_t *idx = cache_semantic_create_sparse(SPACE, 16, 16);
    cr_assert(cache_semantic_is_sparse(idx));
    cache_digest_t scope = digest(100), a = digest(1), b = digest(2), found;
    cache_sparse_t v = CACHE_SPARSE_INIT;
    float s;
    svec("How do I reverse a list in Python?", &v);
    cr_assert_eq(cache_semantic_add_sparse(idx, &scope, 1, &v, NULL, &a, 1000, 0), LS_OK);
    svec("What causes the seasons on Earth?", &v);
    cr_assert_eq(cache_semantic_add_sparse(idx, &scope, 1, &v, NULL, &b, 1000, 0), LS_OK);
    svec("How can I reverse a Python list?", &v);
    cr_assert(ssearch(idx, &scope, &v, 0.6f, 0, &found, &s));
    cr_assert(cache_digest_equal(&found, &a));
    cr_assert_gt(s, 0.6f);
    cr_assert_leq(s, 1.0f);
    cr_assert(ssearch(idx, &scope, &v, s, 0, &found, &s), "exactly the similarity hits");
    cr_assert_not(ssearch(idx, &scope, &v, s + 1e-4f, 0, &found, &s));
    cr_assert(ssearch(idx, &scope, &v, -1.0f, 0, &found, &s), "every entry reaches -1");
    svec("Tell me about the French Revolution", &v);
    cr_assert_not(ssearch(idx, &scope, &v, 0.6f, 0, &found, &s));
    cr_assert_not(ssearch(idx, &(cache_digest_t){{9}}, &v, 0.0f, 0, &found, &s),
                  "no entry in another scope");
    cache_sparse_free(&v);
    cache_semantic_destroy(idx);
}

Test(semantic_sparse, bad_vectors_are_refused)
{
    cache_semantic_t *idx = cache_semantic_create_sparse(1024, 16, 16);
    cache_digest_t scope = digest(100), a = digest(1);
    uint32_t ix[] = {5, 3};
    float vx[] = {0.6f, 0.8f};
    cache_sparse_t unsorted = {ix, vx, 2, 2}, empty = CACHE_SPARSE_INIT;
    cr_assert_eq(cache_semantic_add_sparse(idx, &scope, 1, &unsorted, NULL, &a, 1000, 0),
                 LS_ERR_INVALID);
    cr_assert_eq(cache_semantic_add_sparse(idx, &scope, 1, &empty, NULL, &a, 1000, 0),
                 LS_ERR_INVALID);
    ix[0] = 3;
    ix[1] = 1024;
    cr_assert_eq(cache_semantic_add_sparse(idx, &scope, 1, &unsorted, NULL, &a, 1000, 0),
                 LS_ERR_INVALID, "an index outside the space");
    cr_assert_eq(cache_semantic_count(idx), 0);
    cache_sparse_t big = CACHE_SPARSE_INIT;
    cr_assert_eq(cache_sparse_reserve(&big, CACHE_SEMANTIC_MAX_PAIRS + 1), LS_OK);
    for (uint32_t i = 0; i <= CACHE_SEMANTIC_MAX_PAIRS; i++) {
        big.index[i] = i;
        big.value[i] = 0.015f;
    }
    big.n = CACHE_SEMANTIC_MAX_PAIRS + 1;
    cache_semantic_t *wide = cache_semantic_create_sparse(SPACE, 16, 16);
    cr_assert_eq(cache_semantic_add_sparse(wide, &scope, 1, &big, NULL, &a, 1000, 0), LS_ERR_FULL,
                 "an entry's memory is bounded");
    big.n = CACHE_SEMANTIC_MAX_PAIRS;
    cr_assert_eq(cache_semantic_add_sparse(wide, &scope, 1, &big, NULL, &a, 1000, 0), LS_OK);
    cache_digest_t found;
    float sim;
    cr_assert(ssearch(wide, &scope, &big, 0.5f, 0, &found, &sim));
    cache_sparse_free(&big);
    cache_semantic_destroy(wide);
    cache_semantic_destroy(idx);
}

Test(semantic_sparse, dense_calls_on_a_sparse_index_abort, .signal = SIGABRT)
{
    cache_semantic_t *idx = cache_semantic_create_sparse(1024, 16, 16);
    float v[1024] = {1.0f};
    cache_digest_t scope = digest(100), a = digest(1);
    cache_semantic_add(idx, &scope, 1, v, &a, 1000, 0);
}

Test(semantic_sparse, entries_expire_and_are_swept)
{
    cache_semantic_t *idx = cache_semantic_create_sparse(SPACE, 16, 16);
    cache_digest_t scope = digest(100), a = digest(1), b = digest(2), found;
    cache_sparse_t v = CACHE_SPARSE_INIT;
    float s;
    svec("What is the capital of France?", &v);
    cache_semantic_add_sparse(idx, &scope, 1, &v, NULL, &a, 500, 0);
    cr_assert(ssearch(idx, &scope, &v, 0.9f, 499, &found, &s));
    cr_assert_not(ssearch(idx, &scope, &v, 0.9f, 500, &found, &s));
    cache_sparse_t w = CACHE_SPARSE_INIT;
    svec("Why is the sky blue?", &w);
    cache_semantic_add_sparse(idx, &scope, 1, &w, NULL, &b, 2000, 600);
    cr_assert_eq(cache_semantic_count(idx), 1, "the expired entry is swept by the add");
    cr_assert_not(ssearch(idx, &scope, &v, 0.5f, 600, &found, &s),
                  "the swept entry's postings are gone");
    cr_assert(ssearch(idx, &scope, &w, 0.99f, 600, &found, &s));
    cache_sparse_free(&v);
    cache_sparse_free(&w);
    cache_semantic_destroy(idx);
}

Test(semantic_sparse, full_scope_evicts_the_entry_expiring_first)
{
    cache_semantic_t *idx = cache_semantic_create_sparse(SPACE, 3, 16);
    cache_digest_t scope = digest(100), found;
    const char *texts[] = {"alpha question", "beta question", "gamma question", "delta question"};
    int64_t exp[] = {5000, 1000, 9000, 7000};
    cache_sparse_t v = CACHE_SPARSE_INIT;
    float s;
    for (unsigned i = 0; i < 4; i++) {
        cache_digest_t d = digest(i);
        svec(texts[i], &v);
        cr_assert_eq(cache_semantic_add_sparse(idx, &scope, 1, &v, NULL, &d, exp[i], 0), LS_OK);
    }
    cr_assert_eq(cache_semantic_count(idx), 3);
    svec("beta question", &v);
    cr_assert_not(ssearch(idx, &scope, &v, 0.99f, 0, &found, &s),
                  "the soonest-expiring entry should be gone");
    for (unsigned i = 0; i < 4; i++) {
        if (i == 1)
            continue;
        svec(texts[i], &v);
        cr_assert(ssearch(idx, &scope, &v, 0.99f, 0, &found, &s), "%s", texts[i]);
        cr_assert(cache_digest_equal(&found, &(cache_digest_t){{(uint8_t)i}}));
    }
    cache_sparse_free(&v);
    cache_semantic_destroy(idx);
}

Test(semantic_sparse, replace_remove_and_remove_by_model)
{
    cache_semantic_t *idx = cache_semantic_create_sparse(SPACE, 16, 16);
    cache_digest_t s1 = digest(100), s2 = digest(200), s3 = digest(300), a = digest(1), found;
    cache_sparse_t v = CACHE_SPARSE_INIT, w = CACHE_SPARSE_INIT;
    float s;
    svec("What is the capital of France?", &v);
    svec("Why is the sky blue?", &w);
    cache_semantic_add_sparse(idx, &s1, 7, &v, NULL, &a, 1000, 0);
    cache_semantic_add_sparse(idx, &s1, 7, &w, NULL, &a, 1000, 0);
    cr_assert_eq(cache_semantic_count(idx), 1, "same exact key replaces");
    cr_assert_not(ssearch(idx, &s1, &v, 0.5f, 0, &found, &s), "the replaced vector is gone");
    cr_assert(ssearch(idx, &s1, &w, 0.99f, 0, &found, &s));
    cache_semantic_add_sparse(idx, &s2, 7, &v, NULL, &a, 1000, 0);
    cache_semantic_add_sparse(idx, &s3, 8, &v, NULL, &a, 1000, 0);
    cr_assert(cache_semantic_remove(idx, &s1, &a));
    cr_assert_not(cache_semantic_remove(idx, &s1, &a));
    cr_assert_eq(cache_semantic_remove_tag(idx, 7), 1);
    cr_assert_not(ssearch(idx, &s2, &v, 0.5f, 0, &found, &s));
    cr_assert(ssearch(idx, &s3, &v, 0.5f, 0, &found, &s));
    cr_assert_eq(cache_semantic_scopes(idx), 1);
    cr_assert_gt(cache_semantic_bytes(idx), 0);
    cache_sparse_free(&v);
    cache_sparse_free(&w);
    cache_semantic_destroy(idx);
}

Test(semantic_sparse, scope_count_is_bounded)
{
    cache_semantic_t *idx = cache_semantic_create_sparse(SPACE, 4, 8);
    cache_sparse_t v = CACHE_SPARSE_INIT;
    svec("some question", &v);
    for (unsigned i = 0; i < 100; i++) {
        cache_digest_t sc = digest(1000 + i), k = digest(i);
        cr_assert_eq(cache_semantic_add_sparse(idx, &sc, 1, &v, NULL, &k, 1000, 0), LS_OK);
    }
    cr_assert_eq(cache_semantic_scopes(idx), 8);
    cr_assert_eq(cache_semantic_count(idx), 8);
    cache_sparse_free(&v);
    cache_semantic_destroy(idx);
}

/* The guarded search of a sparse index answers as the dense index does, bit for bit:
 * every prompt pair of the tuning set (its hard negatives are what the guards turn
 * down), at thresholds from 0.3 to 0.95, in one embedding space for both (so the
 * vectors are the same), with duplicates (equal similarities), removals, replacements
 * and expired entries on the way. */
typedef struct {
    char *stored, *later;
} tsv_pair_t;

static size_t read_tune(tsv_pair_t **out)
{
    FILE *f = fopen(SEMCACHE_TUNE, "r");
    cr_assert_not_null(f, "%s", SEMCACHE_TUNE);
    tsv_pair_t *p = NULL;
    size_t n = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0 || line[0] == '#')
            continue;
        char *save = NULL;
        strtok_r(line, "\t", &save);
        strtok_r(NULL, "\t", &save);
        char *stored = strtok_r(NULL, "\t", &save), *later = strtok_r(NULL, "\t", &save);
        cr_assert(stored && later);
        p = realloc(p, (n + 1) * sizeof(*p));
        p[n].stored = strdup(stored);
        p[n].later = strdup(later);
        n++;
    }
    free(line);
    fclose(f);
    *out = p;
    return n;
}

Test(semantic_sparse, guarded_answers_equal_the_dense_index)
{
    enum { DIM_BOTH = 4096 };
    cache_embedder_t *e = cache_embed_ngram_create(DIM_BOTH);
    tsv_pair_t *p;
    size_t n = read_tune(&p);
    cr_assert_gt(n, 300);
    cache_semantic_t *dense = cache_semantic_create(DIM_BOTH, 4096, 4);
    cache_semantic_t *sparse = cache_semantic_create_sparse(DIM_BOTH, 4096, 4);
    cache_digest_t scope = digest(100);
    float *dv = malloc(DIM_BOTH * sizeof(float));
    cache_sparse_t sv = CACHE_SPARSE_INIT;
    /* every stored prompt, a few twice under another key, a few expiring at 50 */
    for (unsigned i = 0; i < n; i++) {
        const char *t = p[i].stored;
        cache_guard_sig_t sig;
        cache_guard_sig(t, strlen(t), &sig);
        cr_assert_eq(e->embed(e, t, strlen(t), dv), LS_OK);
        cr_assert_eq(e->embed_sparse(e, t, strlen(t), &sv), LS_OK);
        unsigned copies = i % 17 == 0 ? 2 : 1;
        for (unsigned c = 0; c < copies; c++) {
            cache_digest_t d = digest(i + 10000 * c);
            int64_t exp = i % 13 == 0 ? 50 : 1000000;
            const cache_guard_sig_t *g = i % 11 == 5 ? NULL : &sig; /* some unguarded */
            cr_assert_eq(cache_semantic_add_guarded(dense, &scope, 1, dv, g, &d, exp, 0), LS_OK);
            cr_assert_eq(cache_semantic_add_sparse(sparse, &scope, 1, &sv, g, &d, exp, 0), LS_OK);
        }
        if (i % 7 == 3) { /* removals free slots that later adds reuse */
            cache_digest_t gone = digest(i - 2);
            cr_assert_eq(cache_semantic_remove(dense, &scope, &gone),
                         cache_semantic_remove(sparse, &scope, &gone));
        }
    }
    cr_assert_eq(cache_semantic_count(dense), cache_semantic_count(sparse));
    const float thr[] = {0.3f, 0.5f, 0.7f, 0.8f, 0.85f, 0.9f, 0.95f};
    size_t hits = 0, vetoes = 0;
    for (unsigned i = 0; i < n; i++) {
        const char *t = p[i].later;
        cache_guard_sig_t sig;
        cache_guard_sig(t, strlen(t), &sig);
        if (e->embed(e, t, strlen(t), dv) != LS_OK)
            continue;
        cr_assert_eq(e->embed_sparse(e, t, strlen(t), &sv), LS_OK);
        for (size_t k = 0; k < sizeof(thr) / sizeof(thr[0]); k++) {
            int64_t now = i % 2 ? 100 : 0; /* half the searches after some entries expired */
            const cache_guard_sig_t *g = i % 5 == 4 ? NULL : &sig;
            cache_digest_t fd = {{0}}, fs = {{0}};
            float simd = 0, sims = 0;
            cache_guard_reason_t vd, vs;
            bool okd =
                cache_semantic_search_guarded(dense, &scope, dv, g, thr[k], now, &fd, &simd, &vd);
            bool oks =
                cache_semantic_search_sparse(sparse, &scope, &sv, g, thr[k], now, &fs, &sims, &vs);
            cr_assert_eq(okd, oks, "\"%s\" at %.2f: dense %d sparse %d", t, thr[k], okd, oks);
            cr_assert_eq(vd, vs, "\"%s\" at %.2f: veto %d vs %d", t, thr[k], vd, vs);
            if (okd) {
                cr_assert(cache_digest_equal(&fd, &fs), "\"%s\" at %.2f", t, thr[k]);
                cr_assert_eq(memcmp(&simd, &sims, sizeof(float)), 0, "%g vs %g", simd, sims);
            }
            hits += okd;
            vetoes += vd != CACHE_GUARD_OK;
        }
    }
    cr_assert_gt(hits, 200, "the comparison should cover hits: %zu", hits);
    cr_assert_gt(vetoes, 50, "and vetoes: %zu", vetoes);
    for (size_t i = 0; i < n; i++) {
        free(p[i].stored);
        free(p[i].later);
    }
    free(p);
    free(dv);
    cache_sparse_free(&sv);
    cache_semantic_destroy(dense);
    cache_semantic_destroy(sparse);
    cache_embedder_destroy(e);
}

/* Searches while another thread adds and removes: every search finds the entry that
 * stays, nothing crashes (ASan and UBSan in the sanitizer build), and the adds are not
 * starved by the searches (the test would take minutes). */
typedef struct {
    cache_semantic_t *idx;
    const cache_sparse_t *keep;
    atomic_bool stop;
    atomic_int misses;
    atomic_long searches;
} race_t;

static void *race_search(void *arg)
{
    race_t *r = arg;
    cache_digest_t scope = digest(100), found;
    float s;
    while (!atomic_load(&r->stop)) {
        if (!cache_semantic_search_sparse(r->idx, &scope, r->keep, NULL, 0.99f, 0, &found, &s,
                                          NULL) ||
            !cache_digest_equal(&found, &(cache_digest_t){{0xee, 0xee, 0xee, 0xee, 0xee}}))
            atomic_fetch_add(&r->misses, 1);
        atomic_fetch_add(&r->searches, 1);
    }
    return NULL;
}

Test(semantic_sparse, searches_while_adding_and_removing)
{
    cache_semantic_t *idx = cache_semantic_create_sparse(SPACE, 300, 4);
    cache_digest_t scope = digest(100), keep = {{0xee, 0xee, 0xee, 0xee, 0xee}};
    cache_sparse_t kv = CACHE_SPARSE_INIT, v = CACHE_SPARSE_INIT;
    svec("What is the boiling point of water at sea level?", &kv);
    cr_assert_eq(cache_semantic_add_sparse(idx, &scope, 1, &kv, NULL, &keep, INT64_MAX, 0), LS_OK);
    race_t r = {.idx = idx, .keep = &kv};
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, race_search, &r), 0);
    char text[128];
    for (unsigned i = 0; i < 3000; i++) {
        snprintf(text, sizeof(text), "question number %u about boiling water and %u kettles", i,
                 i % 37);
        svec(text, &v);
        cache_digest_t d = digest(i);
        cr_assert_eq(cache_semantic_add_sparse(idx, &scope, 1, &v, NULL, &d, 1000 + i, 0), LS_OK);
        if (i % 3 == 0) {
            cache_digest_t old = digest(i / 2);
            cache_semantic_remove(idx, &scope, &old);
        }
    }
    atomic_store(&r.stop, true);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(atomic_load(&r.misses), 0, "%d of %ld searches missed the kept entry",
                 atomic_load(&r.misses), atomic_load(&r.searches));
    cr_assert_gt(atomic_load(&r.searches), 0);
    cr_assert_leq(cache_semantic_count(idx), 300);
    cache_sparse_free(&kv);
    cache_sparse_free(&v);
    cache_semantic_destroy(idx);
}
