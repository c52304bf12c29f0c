/*
 * test_forward_cpu.c - the batched forward pass on the CPU backend (libs/model/forward.c,
 * forward_cpu*.c) against the plain one-sequence reference in ref_forward.c.
 *
 * Logits are compared with a tolerance relative to the row's largest magnitude:
 * |fast - ref| <= 1e-4 * max|ref|.  Element-wise relative error is meaningless for
 * logits near zero, and the fast path sums in a different order (vector lanes,
 * tiles), so bit equality is not expected.  Shapes are small and deliberately odd
 * (widths that are not multiples of the vector length, grouped-query attention, a
 * vocabulary that does not split evenly between threads) so every tail is exercised,
 * and the sanitizer build runs in seconds.
 */
#include "base/err.h"
#include "model/forward.h"
#include "model/checkpoint_write.h"
#include "model/forward_backend.h"
#include "model/sampler.h"
#include "rand_ckpt.h"
#include "ref_forward.h"
#include "support/tmpdir.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-4
/* Int8 (Q8_0) models: the fast path quantizes its activations from sums taken in
 * another order than the reference's, so now and then a value within a rounding error
 * of halfway between two int8 steps rounds the other way.  One such flip moves the
 * next layer's inputs by a fraction of a step, which flips more of them: past the
 * first layers the two passes differ by quantization noise, not by rounding error.  So
 * for Q8_0 the whole logit row is compared, ||fast - ref|| <= TOL_Q8 * ||ref||: the
 * int8 model itself is about 0.015 from its fp32 source by that measure (README), and
 * a wrong scale, group or row gives errors of order one.  test_forward_q8_kernels
 * checks the int8 matmul itself to rounding error. */
#define TOL_Q8 0.05

/* An int8 model of this shape: the seed's weights written by the model maker's writer
 * as Q8_0 in groups of gs, and opened as any checkpoint file is (the file is removed
 * at once; its mapping stays). */
static ckpt_t *q8_model(int dim, int hidden, int layers, int heads, int kv_heads, int vocab,
                        int seq_len, bool shared, int gs, uint64_t seed)
{
    ckpt_config_t c = {.dim = dim,
                       .hidden_dim = hidden,
                       .n_layers = layers,
                       .n_heads = heads,
                       .n_kv_heads = kv_heads,
                       .vocab_size = vocab,
                       .seq_len = seq_len,
                       .shared_classifier = shared,
                       .group_size = gs};
    test_tmpdir_t dir;
    char path[256], err[256];
    cr_assert_eq(test_tmpdir_make(&dir, "llmserve-fwd-q8"), 0);
    test_tmpdir_file(&dir, "m.bin", path, sizeof(path));
    cr_assert_eq(ckpt_write(path, &c, seed, CKPT_FORMAT_Q8_0, err, sizeof(err)), LS_OK, "%s",
                 err);
    ckpt_t *ck = ckpt_open(path, err, sizeof(err));
    cr_assert_not_null(ck, "%s", err);
    test_tmpdir_remove(&dir);
    return ck;
}

static void free_model(ckpt_t *ck)
{
    if (ck && ck->format_version == 2)
        ckpt_close(ck);
    else
        rand_ckpt_free(ck);
}

/* GQA: 6 query heads over 2 KV heads, head_dim 12, hidden 100, vocab 301. */
static ckpt_t *gqa_model(void)
{
    return rand_ckpt_make(72, 100, 2, 6, 2, 301, 64, false, 7);
}

/* Plain multi-head attention with a shared classifier. */
static ckpt_t *mha_model(void)
{
    return rand_ckpt_make(64, 128, 3, 4, 4, 256, 48, true, 11);
}

static forward_t *make_cpu(const ckpt_t *ck, int max_batch, int max_step_tokens, int64_t kv_budget,
                           int threads)
{
    forward_config_t cfg;
    forward_config_init(&cfg);
    cfg.backend = FORWARD_CPU;
    cfg.max_batch = max_batch;
    cfg.max_step_tokens = max_step_tokens;
    cfg.kv_budget_tokens = kv_budget;
    cfg.threads = threads;
    char err[256];
    forward_t *f = forward_create(ck, &cfg, err, sizeof(err));
    cr_assert_not_null(f, "forward_create: %s", err);
    return f;
}

static uint64_t g_rng = 88172645463325252ull;

static int rand_below(int n)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (int)(g_rng % (uint64_t)n);
}

static double max_abs(const float *a, int n)
{
    double m = 0.0;
    for (int i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i]));
    return m;
}

static double rel_l2(const float *got, const float *ref, int n)
{
    double d = 0.0, r = 0.0;
    for (int i = 0; i < n; i++) {
        d += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
        r += (double)ref[i] * ref[i];
    }
    return sqrt(d / fmax(r, 1e-30));
}

/* fp32: |got - ref| <= TOL * max|ref| for every logit; Q8_0: the row's relative error
 * within TOL_Q8. */
static void assert_logits_close(const ckpt_t *ck, const float *got, const float *ref, int n,
                                const char *what, int a, int b)
{
    if (ck->format_version == 2) {
        double e = rel_l2(got, ref, n);
        cr_assert(e <= TOL_Q8, "%s (%d, %d): ||got - ref|| / ||ref|| = %g > %g", what, a, b, e,
                  TOL_Q8);
        return;
    }
    double scale = fmax(max_abs(ref, n), 1e-6);
    double worst = 0.0;
    int at = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= worst)) {
            worst = d;
            at = i;
        }
    }
    cr_assert(worst <= TOL * scale,
              "%s (%d, %d): logit %d differs: got %g want %g (|diff| %g > %g)", what, a, b, at,
              (double)got[at], (double)ref[at], worst, TOL * scale);
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Reference logits of every position of tokens[0..n). */
static float *ref_all(const ckpt_t *ck, const int *tokens, int n)
{
    int vocab = ck->cfg.vocab_size;
    float *out = malloc((size_t)n * vocab * sizeof(float));
    ref_forward_t *r = ref_forward_create(ck);
    for (int p = 0; p < n; p++)
        memcpy(out + (size_t)p * vocab, ref_forward_token(r, tokens[p], p),
               (size_t)vocab * sizeof(float));
    ref_forward_destroy(r);
    return out;
}

static sampler_t greedy(void)
{
    sampler_t s;
    sampler_init(&s, 0.0f, 1.0f, 0, 1);
    return s;
}

static forward_item_t item(int seq, const int *tokens, int n, int pos, const sampler_t *s)
{
    forward_item_t it = {
        .seq = seq, .tokens = tokens, .n_tokens = n, .pos = pos, .sampler = s, .coin = 0.5f};
    return it;
}

/* Token-by-token decode of one sequence on the fast path against the reference, at
 * every position of the context. */
static void check_decode_matches(ckpt_t *ck, int threads)
{
    int vocab = ck->cfg.vocab_size, n = ck->cfg.seq_len;
    int *tokens = malloc((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++)
        tokens[i] = rand_below(vocab);
    float *want = ref_all(ck, tokens, n);
    forward_t *f = make_cpu(ck, 4, 64, 0, threads);
    int seq = forward_seq_open(f, n);
    cr_assert_geq(seq, 0);
    sampler_t s = greedy();
    float *logits = malloc((size_t)vocab * sizeof(float));
    for (int p = 0; p < n; p++) {
        forward_item_t it = item(seq, &tokens[p], 1, p, &s);
        int out = -1;
        cr_assert_eq(forward_step(f, &it, 1, &out, logits), LS_OK);
        assert_logits_close(ck, logits, want + (size_t)p * vocab, vocab, "decode pos", p, threads);
        cr_assert_eq(out, argmax(logits, vocab), "greedy pick at pos %d", p);
    }
    free(logits);
    forward_destroy(f);
    free(want);
    free(tokens);
    free_model(ck);
}

Test(forward_cpu, decode_matches_reference_gqa)
{
    check_decode_matches(gqa_model(), 2);
}

Test(forward_cpu, decode_matches_reference_mha_one_thread)
{
    check_decode_matches(mha_model(), 1);
}

Test(forward_cpu, decode_matches_reference_three_threads)
{
    check_decode_matches(gqa_model(), 3);
}

/* Prompts in chunks against token-by-token reference logits (seq_len >= 40). */
static void check_prefill(ckpt_t *ck)
{
    int vocab = ck->cfg.vocab_size;
    enum { N = 40 };
    int tokens[N];
    for (int i = 0; i < N; i++)
        tokens[i] = rand_below(vocab);
    float *want = ref_all(ck, tokens, N);
    forward_t *f = make_cpu(ck, 4, 64, 0, 2);
    sampler_t s = greedy();
    float *logits = malloc((size_t)vocab * sizeof(float));

    /* Chunks of 1, 7, 13, 19 tokens: each chunk attends causally within itself. */
    int chunks[] = {1, 7, 13, 19};
    int seq = forward_seq_open(f, N);
    int pos = 0;
    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        forward_item_t it = item(seq, tokens + pos, chunks[c], pos, &s);
        int out = -1;
        cr_assert_eq(forward_step(f, &it, 1, &out, logits), LS_OK);
        pos += chunks[c];
        assert_logits_close(ck, logits, want + (size_t)(pos - 1) * vocab, vocab, "chunk end", pos,
                            chunks[c]);
        /* Q8_0: near-ties may differ (see TOL_Q8); the pick must still be the row's top. */
        const float *top = ck->format_version == 2 ? logits : want + (size_t)(pos - 1) * vocab;
        cr_assert_eq(out, argmax(top, vocab));
    }
    cr_assert_eq(pos, N);

    /* A whole prompt in one chunk, then decoding on: the chunk's KV must be right at
     * every position, not only the last. */
    forward_seq_close(f, seq);
    seq = forward_seq_open(f, N);
    forward_item_t it = item(seq, tokens, 30, 0, &s);
    int out;
    cr_assert_eq(forward_step(f, &it, 1, &out, logits), LS_OK);
    assert_logits_close(ck, logits, want + (size_t)29 * vocab, vocab, "prompt", 30, 0);
    for (int p = 30; p < N; p++) {
        it = item(seq, &tokens[p], 1, p, &s);
        cr_assert_eq(forward_step(f, &it, 1, &out, logits), LS_OK);
        assert_logits_close(ck, logits, want + (size_t)p * vocab, vocab, "decode after prompt", p, 0);
    }
    free(logits);
    forward_destroy(f);
    free(want);
    free_model(ck);
}

Test(forward_cpu, prefill_chunks_equal_token_by_token)
{
    check_prefill(gqa_model());
}

/* B sequences with their own scripts, advanced together in steps that mix prefill
 * chunks and single-token decode items at different positions; every item's logits
 * must equal that sequence run alone through the reference. */
static void check_batched(ckpt_t *ck, int B, int max_step_tokens, int threads)
{
    int vocab = ck->cfg.vocab_size, seq_len = ck->cfg.seq_len;
    int *len = malloc((size_t)B * sizeof(int));
    int **script = malloc((size_t)B * sizeof(int *));
    float **want = malloc((size_t)B * sizeof(float *));
    int *seq = malloc((size_t)B * sizeof(int));
    int *done = calloc((size_t)B, sizeof(int));
    forward_t *f = make_cpu(ck, B, max_step_tokens, 0, threads);
    for (int b = 0; b < B; b++) {
        len[b] = 8 + rand_below(seq_len - 8);
        script[b] = malloc((size_t)len[b] * sizeof(int));
        for (int i = 0; i < len[b]; i++)
            script[b][i] = rand_below(vocab);
        want[b] = ref_all(ck, script[b], len[b]);
        seq[b] = forward_seq_open(f, len[b]);
        cr_assert_geq(seq[b], 0);
    }
    forward_item_t *items = malloc((size_t)B * sizeof(forward_item_t));
    int *owner = malloc((size_t)B * sizeof(int));
    int *out = malloc((size_t)B * sizeof(int));
    float *logits = malloc((size_t)B * vocab * sizeof(float));
    sampler_t s = greedy();
    int steps = 0;
    for (;;) {
        int n = 0, budget = max_step_tokens;
        /* Start at a different sequence every step so the item order varies. */
        for (int k = 0; k < B; k++) {
            int b = (k + steps) % B;
            int left = len[b] - done[b];
            if (left == 0 || budget == 0)
                continue;
            int chunk = rand_below(3) == 0 ? 1 + rand_below(left < 9 ? left : 9) : 1;
            if (chunk > budget)
                chunk = budget;
            budget -= chunk;
            items[n] = item(seq[b], script[b] + done[b], chunk, done[b], &s);
            owner[n++] = b;
        }
        if (n == 0)
            break;
        cr_assert_eq(forward_step(f, items, n, out, logits), LS_OK);
        for (int i = 0; i < n; i++) {
            int b = owner[i];
            done[b] += items[i].n_tokens;
            const float *ref = want[b] + (size_t)(done[b] - 1) * vocab;
            assert_logits_close(ck, logits + (size_t)i * vocab, ref, vocab, "batched seq/pos", b,
                                done[b] - 1);
            cr_assert_eq(out[i], argmax(logits + (size_t)i * vocab, vocab));
        }
        steps++;
    }
    for (int b = 0; b < B; b++) {
        forward_seq_close(f, seq[b]);
        free(script[b]);
        free(want[b]);
    }
    cr_assert_eq(forward_kv_free_tokens(f), forward_config(f)->kv_budget_tokens);
    forward_destroy(f);
    free(items);
    free(owner);
    free(out);
    free(logits);
    free(len);
    free(script);
    free(want);
    free(seq);
    free(done);
    free_model(ck);
}

Test(forward_cpu, batched_equals_each_alone_b4)
{
    check_batched(mha_model(), 4, 16, 2);
}

Test(forward_cpu, batched_equals_each_alone_b32_mixed)
{
    check_batched(gqa_model(), 32, 64, 2);
}

Test(forward_cpu, batched_equals_each_alone_b32_three_threads)
{
    check_batched(mha_model(), 32, 48, 3);
}

/* hidden_dim over 1024: the down projection's reduced dimension takes two blocks in the
 * AVX-512 broadcast kernel (the second adds to the first), with 16+ token rows a step. */
Test(forward_cpu, batched_equals_each_alone_wide_hidden)
{
    check_batched(rand_ckpt_make(32, 1100, 1, 4, 2, 97, 32, true, 5), 20, 40, 2);
}

/* Generates greedily, or with temperature and a seeded coin stream, from one prompt. */
static void generate(forward_t *f, const int *prompt, int n_prompt, int n_gen, float temp,
                     uint64_t seed, int *out)
{
    sampler_t s;
    sampler_init(&s, temp, 0.9f, 0, seed);
    int seq = forward_seq_open(f, n_prompt + n_gen);
    cr_assert_geq(seq, 0);
    forward_item_t it = item(seq, prompt, n_prompt, 0, &s);
    it.coin = sampler_coin(&s);
    cr_assert_eq(forward_step(f, &it, 1, &out[0], NULL), LS_OK);
    for (int i = 1; i < n_gen; i++) {
        it = item(seq, &out[i - 1], 1, n_prompt + i - 1, &s);
        it.coin = sampler_coin(&s);
        cr_assert_eq(forward_step(f, &it, 1, &out[i], NULL), LS_OK);
    }
    forward_seq_close(f, seq);
}

Test(forward_cpu, generation_is_deterministic)
{
    ckpt_t *ck = mha_model();
    int prompt[5] = {1, 17, 42, 99, 3};
    enum { GEN = 30 };
    int a[GEN], b[GEN], c[GEN], d[GEN];
    forward_t *f1 = make_cpu(ck, 4, 16, 0, 2);
    forward_t *f2 = make_cpu(ck, 8, 64, 0, 1);
    generate(f1, prompt, 5, GEN, 0.0f, 1, a);
    generate(f2, prompt, 5, GEN, 0.0f, 1, b);
    cr_assert_arr_eq(a, b, sizeof(a), "greedy generation differs between two instances");
    generate(f1, prompt, 5, GEN, 0.0f, 1, b);
    cr_assert_arr_eq(a, b, sizeof(a), "greedy generation differs on the same instance");

    /* The greedy tokens are the reference's argmax at every position. */
    int all[5 + GEN];
    memcpy(all, prompt, sizeof(prompt));
    memcpy(all + 5, a, sizeof(a));
    float *want = ref_all(ck, all, 5 + GEN - 1);
    for (int i = 0; i < GEN; i++)
        cr_assert_eq(a[i], argmax(want + (size_t)(4 + i) * ck->cfg.vocab_size, ck->cfg.vocab_size),
                     "token %d", i);
    free(want);

    /* Sampling: the same seed gives the same tokens. */
    generate(f1, prompt, 5, GEN, 1.0f, 1234, c);
    generate(f2, prompt, 5, GEN, 1.0f, 1234, d);
    cr_assert_arr_eq(c, d, sizeof(c), "seeded sampling differs between instances");
    forward_destroy(f1);
    forward_destroy(f2);
    free_model(ck);
}

Test(forward_cpu, kv_budget_full_then_free_after_close)
{
    ckpt_t *ck = gqa_model();                   /* seq_len 64 = 4 blocks */
    forward_t *f = make_cpu(ck, 4, 16, 100, 2); /* 6 whole blocks = 96 positions */
    cr_assert_eq(forward_kv_free_tokens(f), 96);
    int a = forward_seq_open(f, 64);
    cr_assert_geq(a, 0);
    cr_assert_eq(forward_kv_free_tokens(f), 32);
    int b = forward_seq_open(f, 17); /* 2 blocks */
    cr_assert_geq(b, 0);
    cr_assert_eq(forward_kv_free_tokens(f), 0);
    cr_assert_eq(forward_seq_open(f, 1), LS_ERR_FULL);
    forward_seq_close(f, a);
    cr_assert_eq(forward_kv_free_tokens(f), 64);
    int c = forward_seq_open(f, 64);
    cr_assert_geq(c, 0);
    cr_assert_eq(forward_seq_open(f, 1), LS_ERR_FULL);
    forward_seq_close(f, b);
    forward_seq_close(f, b); /* twice: ignored */
    forward_seq_close(f, 12345);
    forward_seq_close(f, -1);
    cr_assert_eq(forward_kv_free_tokens(f), 32);

    /* A reused sequence computes like a fresh one. */
    sampler_t s = greedy();
    int tokens[3] = {5, 6, 7};
    float *want = ref_all(ck, tokens, 3);
    float *logits = malloc((size_t)ck->cfg.vocab_size * sizeof(float));
    forward_item_t it = item(c, tokens, 3, 0, &s);
    int out;
    cr_assert_eq(forward_step(f, &it, 1, &out, logits), LS_OK);
    assert_logits_close(ck, logits, want + 2 * ck->cfg.vocab_size, ck->cfg.vocab_size, "reused", 0, 0);
    free(logits);
    free(want);
    forward_seq_close(f, c);
    cr_assert_eq(forward_kv_free_tokens(f), 96);

    /* max_batch sequences at most, whatever the budget. */
    int ids[4];
    for (int i = 0; i < 4; i++) {
        ids[i] = forward_seq_open(f, 16);
        cr_assert_geq(ids[i], 0);
    }
    cr_assert_eq(forward_seq_open(f, 16), LS_ERR_FULL);
    cr_assert_eq(forward_seq_open(f, 0), LS_ERR_INVALID);
    cr_assert_eq(forward_seq_open(f, 65), LS_ERR_INVALID);
    forward_destroy(f);
    free_model(ck);
}

Test(forward_cpu, invalid_items_rejected_and_nothing_changes)
{
    ckpt_t *ck = gqa_model();
    int vocab = ck->cfg.vocab_size;
    forward_t *f = make_cpu(ck, 4, 16, 0, 2);
    sampler_t s = greedy();
    int tokens[20];
    for (int i = 0; i < 20; i++)
        tokens[i] = rand_below(vocab);
    float *want = ref_all(ck, tokens, 20);
    int a = forward_seq_open(f, 20);
    int b = forward_seq_open(f, 8);
    float *logits = malloc((size_t)4 * vocab * sizeof(float));
    int out[4];
    forward_item_t it[5];
    it[0] = item(a, tokens, 4, 0, &s);
    cr_assert_eq(forward_step(f, it, 1, out, logits), LS_OK);

    int bad_token[2] = {3, vocab};
    int neg_token[1] = {-1};
    forward_item_t cases[][2] = {
        {item(a, tokens + 4, 1, 4, &s), item(a, tokens + 5, 1, 5, &s)}, /* same seq twice */
        {item(a, tokens + 4, 1, 4, &s), item(3, tokens, 1, 0, &s)},     /* never opened */
        {item(a, tokens + 4, 1, 4, &s), item(-1, tokens, 1, 0, &s)},
        {item(a, tokens + 4, 1, 4, &s), item(b, tokens, 9, 0, &s)},    /* past reserve */
        {item(a, tokens + 4, 1, 4, &s), item(b, tokens, 1, 1, &s)},    /* skips a position */
        {item(a, tokens + 4, 1, 4, &s), item(b, bad_token, 2, 0, &s)}, /* token >= vocab */
        {item(a, tokens + 4, 1, 4, &s), item(b, neg_token, 1, 0, &s)}, /* token < 0 */
        {item(a, tokens + 4, 1, 4, &s), item(b, tokens, 0, 0, &s)},    /* no tokens */
        {item(a, tokens + 4, 1, 4, &s), item(b, NULL, 1, 0, &s)},
        {item(a, tokens + 4, 1, 4, &s), item(b, tokens, 1, 0, NULL)},
        {item(a, tokens + 4, 8, 4, &s), item(b, tokens, 8, 0, &s)}, /* 16 tokens: fits */
        {item(a, tokens + 4, 9, 4, &s), item(b, tokens, 8, 0, &s)}, /* 17 > max_step_tokens */
        {item(a, tokens + 4, 1, -1, &s), item(b, tokens, 1, 0, &s)},
    };
    size_t n_cases = sizeof(cases) / sizeof(cases[0]);
    for (size_t c = 0; c < n_cases; c++) {
        if (c == 10)
            continue; /* the valid one, kept in the table to show the boundary */
        out[0] = out[1] = -7;
        cr_assert_eq(forward_step(f, cases[c], 2, out, logits), LS_ERR_INVALID, "case %zu", c);
        cr_assert_eq(out[0], -7, "case %zu wrote a token", c);
    }
    forward_item_t nan_coin = item(a, tokens + 4, 1, 4, &s);
    nan_coin.coin = NAN;
    cr_assert_eq(forward_step(f, &nan_coin, 1, out, logits), LS_ERR_INVALID);
    /* More items than max_batch. */
    for (int i = 0; i < 5; i++)
        it[i] = item(a, tokens + 4, 1, 4, &s);
    cr_assert_eq(forward_step(f, it, 5, out, logits), LS_ERR_INVALID);
    cr_assert_eq(forward_step(f, it, -1, out, logits), LS_ERR_INVALID);
    cr_assert_eq(forward_step(f, it, 0, out, logits), LS_OK);

    /* Nothing moved: a continues at position 4 and b at 0, with the reference's logits. */
    it[0] = item(a, tokens + 4, 1, 4, &s);
    it[1] = item(b, tokens, 2, 0, &s);
    cr_assert_eq(forward_step(f, it, 2, out, logits), LS_OK);
    assert_logits_close(ck, logits, want + 4 * vocab, vocab, "a after rejects", 4, 0);
    assert_logits_close(ck, logits + vocab, want + 1 * vocab, vocab, "b after rejects", 1, 0);
    free(logits);
    free(want);
    forward_destroy(f);
    free_model(ck);
}

Test(forward_cpu, config_and_backend_choice)
{
    ckpt_t *ck = gqa_model();
    forward_config_t cfg;
    forward_config_init(&cfg);
    cr_assert_eq(cfg.backend, FORWARD_AUTO);
    cr_assert_eq(cfg.max_batch, 32);
    cr_assert_eq(cfg.max_step_tokens, 512);
    char err[256];

    forward_t *f = forward_create(ck, &cfg, err, sizeof(err));
    cr_assert_not_null(f, "%s", err);
    if (!forward__cuda_present(NULL, 0))
        cr_assert_str_eq(forward_backend_name(f), "cpu");
    cr_assert_eq(forward_config(f)->kv_budget_tokens, 32 * 64, "default budget");
    cr_assert_gt(forward_config(f)->threads, 0);
    cr_assert_not_null(forward_device_name(f));
    forward_destroy(f);
    forward_destroy(NULL);

    if (!forward__cuda_present(NULL, 0)) {
        cfg.backend = FORWARD_CUDA;
        err[0] = '\0';
        cr_assert_null(forward_create(ck, &cfg, err, sizeof(err)));
        cr_assert_neq(err[0], '\0', "no reason given");
    }
    forward_config_init(&cfg);
    cfg.backend = FORWARD_CPU;
    cfg.kv_budget_tokens = 63; /* less than one sequence of 64 */
    cr_assert_null(forward_create(ck, &cfg, err, sizeof(err)));
    cfg.kv_budget_tokens = 0;
    cfg.max_batch = 0;
    cr_assert_null(forward_create(ck, &cfg, err, sizeof(err)));
    cfg.max_batch = 8;
    cfg.max_step_tokens = 4;
    cr_assert_null(forward_create(ck, &cfg, err, sizeof(err)));
    free_model(ck);
}

/* fault_after_steps on the CPU: the step after N good ones reports the device lost,
 * every later step does too, and nothing else changes. */
Test(forward_cpu, fault_injection_reports_device_lost)
{
    ckpt_t *ck = gqa_model();
    forward_config_t cfg;
    forward_config_init(&cfg);
    cfg.backend = FORWARD_CPU;
    cfg.max_batch = 2;
    cfg.max_step_tokens = 16;
    cfg.threads = 1;
    cfg.fault_after_steps = 3;
    char err[256];
    forward_t *f = forward_create(ck, &cfg, err, sizeof(err));
    cr_assert_not_null(f, "forward_create: %s", err);
    int seq = forward_seq_open(f, 8);
    cr_assert_geq(seq, 0);
    sampler_t g = greedy();
    int tok = 5, out = -1;
    for (int pos = 0; pos < 3; pos++) {
        forward_item_t it = item(seq, &tok, 1, pos, &g);
        cr_assert_eq(forward_step(f, &it, 1, &out, NULL), LS_OK, "step %d", pos);
    }
    cr_assert(!forward_device_lost(f));
    forward_item_t it = item(seq, &tok, 1, 3, &g);
    cr_assert_eq(forward_step(f, &it, 1, &out, NULL), LS_ERR_DEVICE);
    cr_assert(forward_device_lost(f));
    cr_assert_eq(forward_step(f, &it, 1, &out, NULL), LS_ERR_DEVICE);
    /* an invalid item is still refused as such, and an empty step is still fine */
    it.seq = 99;
    cr_assert_eq(forward_step(f, &it, 1, &out, NULL), LS_ERR_INVALID);
    cr_assert_eq(forward_step(f, &it, 0, &out, NULL), LS_OK);
    forward_destroy(f);
    free_model(ck);
}

/* ---- int8 (Q8_0) checkpoints: the same checks against the reference's runq.c pass.
 * Group sizes pick the kernel on a machine with AVX-512 VNNI: 64 and 128 the VNNI one
 * (one and two 64-byte blocks per group), 32 the AVX2 one, 4 and 12 the plain C one;
 * LLMSERVE_CPU_KERNELS=avx2 and =generic run them all on the narrower kernels. */

Test(forward_cpu, q8_decode_matches_reference_g64_gqa)
{
    check_decode_matches(q8_model(128, 320, 2, 4, 2, 301, 64, false, 64, 21), 2);
}

Test(forward_cpu, q8_decode_matches_reference_g128_mha)
{
    check_decode_matches(q8_model(256, 384, 2, 4, 4, 256, 48, true, 128, 22), 2);
}

Test(forward_cpu, q8_decode_matches_reference_g32_three_threads)
{
    check_decode_matches(q8_model(96, 160, 2, 6, 2, 301, 48, true, 32, 23), 3);
}

Test(forward_cpu, q8_decode_matches_reference_g4_odd_shape)
{
    check_decode_matches(q8_model(72, 100, 2, 6, 2, 301, 64, false, 4, 24), 2);
}

Test(forward_cpu, q8_prefill_chunks_equal_token_by_token)
{
    check_prefill(q8_model(128, 320, 2, 4, 2, 301, 64, false, 64, 25));
}

Test(forward_cpu, q8_batched_equals_each_alone_b32_g64)
{
    check_batched(q8_model(128, 320, 2, 4, 2, 301, 64, false, 64, 26), 32, 64, 2);
}

Test(forward_cpu, q8_batched_equals_each_alone_b6_g12)
{
    check_batched(q8_model(96, 180, 2, 4, 4, 97, 40, true, 12, 27), 6, 24, 3);
}

Test(forward_cpu, q8_batched_equals_each_alone_b20_g32)
{
    check_batched(q8_model(96, 160, 1, 6, 2, 301, 48, false, 32, 28), 20, 40, 2);
}

/* The CPU backend says it runs int8 and with which kernel. */
Test(forward_cpu, q8_device_names_the_int8_kernels)
{
    ckpt_t *ck = q8_model(128, 320, 1, 4, 2, 64, 32, true, 64, 29);
    forward_t *f = make_cpu(ck, 2, 16, 0, 2);
    cr_assert(strstr(forward_device_name(f), "int8") != NULL, "%s", forward_device_name(f));
    cr_assert(strstr(forward_device_name(f), "group 64") != NULL, "%s", forward_device_name(f));
    forward_destroy(f);
    free_model(ck);
}
