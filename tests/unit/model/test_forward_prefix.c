/*
 * test_forward_prefix.c - the prefix KV block cache of libs/model/forward.c, on the CPU
 * backend with real model arithmetic.
 *
 * A request served from cached blocks must give the same bits as the same request with
 * the cache off.  The CPU kernels sum in an order that depends on how many token rows a
 * step holds (16 or more rows take AVX-512's broadcast form), so every run here feeds a
 * position in a step of the same shape as the run it is compared with: prompts in
 * chunks that end at block boundaries (a cached run starts at a boundary, so its chunks
 * are the uncached run's), decode steps one token per sequence.  Where the cached KV
 * came from decode steps (a conversation's next turn), the uncached run replays them as
 * decode steps.
 */
#include "base/err.h"
#include "model/forward.h"
#include "model/sampler.h"
#include "rand_ckpt.h"

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum {
    GEN = 20,                /* tokens generated per turn */
    CHUNK = FORWARD_KV_BLOCK /* prompt steps end at multiples of this */
};

/* GQA, seq_len 256 (16 blocks): room for a long shared prefix and two turns. */
static ckpt_t *long_model(void)
{
    return rand_ckpt_make(72, 100, 2, 6, 2, 301, 256, false, 7);
}

static forward_t *make_fwd(const ckpt_t *ck, bool prefix_cache, int max_batch,
                           int64_t kv_budget_tokens)
{
    forward_config_t cfg;
    forward_config_init(&cfg);
    cfg.backend = FORWARD_CPU;
    cfg.max_batch = max_batch;
    cfg.max_step_tokens = 64;
    cfg.kv_budget_tokens = kv_budget_tokens;
    cfg.threads = 2;
    cfg.prefix_cache = prefix_cache;
    char err[256];
    forward_t *f = forward_create(ck, &cfg, err, sizeof(err));
    cr_assert_not_null(f, "forward_create: %s", err);
    cr_assert_eq(forward_prefix_cache_on(f), prefix_cache);
    return f;
}

static uint64_t g_rng = 0x2545f4914f6cdd1dull;

static int rand_below(int n)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (int)(g_rng % (uint64_t)n);
}

static void rand_tokens(int *t, int n, int vocab)
{
    for (int i = 0; i < n; i++)
        t[i] = rand_below(vocab);
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

/* The logits a run computed, by position: each step's last position. */
typedef struct {
    int vocab, seq_len;
    float *logits; /* [seq_len][vocab] */
    bool *have;    /* [seq_len] */
} trace_t;

static void trace_init(trace_t *t, const ckpt_t *ck)
{
    t->vocab = ck->cfg.vocab_size;
    t->seq_len = ck->cfg.seq_len;
    t->logits = calloc((size_t)t->seq_len * (size_t)t->vocab, sizeof(float));
    t->have = calloc((size_t)t->seq_len, sizeof(bool));
    cr_assert(t->logits && t->have);
}

static void trace_free(trace_t *t)
{
    free(t->logits);
    free(t->have);
}

static float *trace_at(trace_t *t, int pos)
{
    t->have[pos] = true;
    return t->logits + (size_t)pos * (size_t)t->vocab;
}

/* Every position that a computed, b computed with the same bits (and a computed some). */
static void assert_same_trace(const trace_t *a, const trace_t *b, const char *what)
{
    int n = 0;
    for (int p = 0; p < a->seq_len; p++) {
        if (!a->have[p])
            continue;
        cr_assert(b->have[p], "%s: position %d missing in the uncached run", what, p);
        const float *x = a->logits + (size_t)p * (size_t)a->vocab;
        const float *y = b->logits + (size_t)p * (size_t)b->vocab;
        cr_assert(memcmp(x, y, (size_t)a->vocab * sizeof(float)) == 0,
                  "%s: logits at position %d differ from the uncached run", what, p);
        n++;
    }
    cr_assert_gt(n, 0, "%s: nothing compared", what);
}

/* Feeds toks[from..to) at positions from..to-1 of seq, one step per chunk-aligned piece;
 * returns the token picked after the last. */
static int feed(forward_t *f, int seq, const int *toks, int from, int to, int chunk, trace_t *t)
{
    sampler_t s = greedy();
    int next = -1;
    for (int pos = from; pos < to;) {
        int end = (pos / chunk + 1) * chunk;
        if (end > to)
            end = to;
        forward_item_t it = item(seq, toks + pos, end - pos, pos, &s);
        cr_assert_eq(forward_step(f, &it, 1, &next, trace_at(t, end - 1)), LS_OK,
                     "step at pos %d, %d tokens", pos, end - pos);
        pos = end;
    }
    return next;
}

/* One turn: all[from..n) in block-aligned chunks, then GEN greedy tokens into
 * all[n..n+GEN), one decode step each. */
static void turn(forward_t *f, int seq, int *all, int from, int n, trace_t *t)
{
    all[n] = feed(f, seq, all, from, n, CHUNK, t);
    for (int i = 1; i < GEN; i++)
        all[n + i] = feed(f, seq, all, n + i - 1, n + i, 1, t);
}

/* The request all[0..n) alone on a fresh forward pass with the prefix cache off; its
 * answer goes to all[n..n+GEN). */
static void run_alone_off(const ckpt_t *ck, int *all, int n, trace_t *t)
{
    forward_t *f = make_fwd(ck, false, 2, 0);
    int cached = -1;
    int seq = forward_seq_open_tokens(f, all, n, n + GEN, &cached);
    cr_assert_geq(seq, 0);
    cr_assert_eq(cached, 0);
    turn(f, seq, all, 0, n, t);
    forward_seq_close(f, seq);
    forward_destroy(f);
}

/* Runs conv[0..n) on f (cache on) from what the cache holds, expecting want_cached, and
 * checks tokens and logits against the request alone with the cache off. */
static void check_request(forward_t *f, const ckpt_t *ck, int *conv, int n, int want_cached,
                          const char *what)
{
    int cached = -1;
    int seq = forward_seq_open_tokens(f, conv, n, n + GEN, &cached);
    cr_assert_geq(seq, 0, "%s: open", what);
    cr_assert_eq(cached, want_cached, "%s: cached_tokens", what);
    trace_t on, off;
    trace_init(&on, ck);
    trace_init(&off, ck);
    turn(f, seq, conv, cached, n, &on);
    forward_seq_close(f, seq);
    int *alone = malloc((size_t)(n + GEN) * sizeof(int));
    memcpy(alone, conv, (size_t)n * sizeof(int));
    run_alone_off(ck, alone, n, &off);
    cr_assert_arr_eq(conv + n, alone + n, GEN * sizeof(int), "%s: greedy tokens differ", what);
    assert_same_trace(&on, &off, what);
    free(alone);
    trace_free(&on);
    trace_free(&off);
}

static void assert_stats(const forward_t *f, int64_t lookups, int64_t hit_tokens,
                         int64_t cached_blocks, int64_t unused_blocks, int64_t evictions)
{
    forward_prefix_stats_t st;
    forward_prefix_stats(f, &st);
    cr_assert_eq(st.lookups, lookups);
    cr_assert_eq(st.hit_tokens, hit_tokens);
    cr_assert_eq(st.cached_blocks, cached_blocks);
    cr_assert_eq(st.unused_blocks, unused_blocks);
    cr_assert_eq(st.evictions, evictions);
}

Test(forward_prefix, config_default_is_on)
{
    forward_config_t cfg;
    forward_config_init(&cfg);
    cr_assert(cfg.prefix_cache);
}

/* Requests sharing a 100-token prefix, one of them a whole number of blocks and sent
 * twice, then the next turn of that conversation: the same tokens and the same logits,
 * bit for bit, as each request alone with the cache off. */
Test(forward_prefix, same_bits_as_cache_off)
{
    ckpt_t *ck = long_model();
    int vocab = ck->cfg.vocab_size;
    forward_t *f = make_fwd(ck, true, 4, 0);
    enum { P = 100 };
    int a[256], b[256], c[256];
    rand_tokens(a, P, vocab);
    memcpy(b, a, P * sizeof(int));
    rand_tokens(a + P, 7, vocab);
    rand_tokens(b + P, 12, vocab); /* 112 tokens: 7 whole blocks */
    memcpy(c, b, 112 * sizeof(int));

    check_request(f, ck, a, P + 7, 0, "first request");
    /* The prefix's 6 whole blocks (96 positions) come from the first request. */
    check_request(f, ck, b, 112, 96, "whole-block prompt");
    /* The same 112 tokens again: 7 blocks are cached, but the last one is left to feed. */
    check_request(f, ck, c, 112, 96, "whole-block prompt again");
    cr_assert_arr_eq(b + 112, c + 112, GEN * sizeof(int));
    /* Published: the first request's 7 whole blocks, then the second's blocks 6 and 7
     * (the third computed the same ones and kept its copies private). */
    assert_stats(f, 3, 192, 7 + 2, 7 + 2, 0);

    /* The next turn: the prompt, its answer and 9 new tokens (141).  The answer's first
     * 19 tokens are held (131 positions), so 8 whole blocks (128) are cached. */
    enum { N2 = 112 + GEN + 9 };
    rand_tokens(c + 112 + GEN, 9, vocab);
    int cached = -1;
    int seq = forward_seq_open_tokens(f, c, N2, N2 + GEN, &cached);
    cr_assert_geq(seq, 0);
    cr_assert_eq(cached, 128);
    trace_t on, off;
    trace_init(&on, ck);
    trace_init(&off, ck);
    turn(f, seq, c, cached, N2, &on);
    forward_seq_close(f, seq);
    assert_stats(f, 4, 320, 9 + 2, 9 + 2, 0); /* and the new turn's blocks 8 and 9 */

    /* Uncached, the cached positions computed as the earlier turn did: the prompt in
     * chunks, the answer one decode step at a time. */
    int d[256];
    memcpy(d, c, N2 * sizeof(int));
    forward_t *g = make_fwd(ck, false, 2, 0);
    seq = forward_seq_open_tokens(g, d, N2, N2 + GEN, &cached);
    cr_assert_geq(seq, 0);
    cr_assert_eq(cached, 0);
    feed(g, seq, d, 0, 112, CHUNK, &off);
    feed(g, seq, d, 112, 128, 1, &off);
    turn(g, seq, d, 128, N2, &off);
    forward_seq_close(g, seq);
    cr_assert_arr_eq(c + N2, d + N2, GEN * sizeof(int), "next turn: greedy tokens differ");
    assert_same_trace(&on, &off, "next turn");
    assert_stats(g, 0, 0, 0, 0, 0);

    trace_free(&on);
    trace_free(&off);
    forward_destroy(g);
    forward_destroy(f);
    rand_ckpt_free(ck);
}

/* cached_tokens is the longest cached chain of whole blocks, never all the tokens. */
Test(forward_prefix, hit_accounting)
{
    ckpt_t *ck = long_model();
    int vocab = ck->cfg.vocab_size;
    forward_t *f = make_fwd(ck, true, 4, 0);
    int64_t budget = forward_config(f)->kv_budget_tokens;
    trace_t t;
    trace_init(&t, ck);
    int p[64];
    rand_tokens(p, 64, vocab);

    /* A sequence opened without tokens publishes its blocks too, and is no lookup. */
    int seq = forward_seq_open(f, 64);
    cr_assert_geq(seq, 0);
    feed(f, seq, p, 0, 48, CHUNK, &t);
    assert_stats(f, 0, 0, 3, 0, 0);
    forward_seq_close(f, seq);
    assert_stats(f, 0, 0, 3, 3, 0);
    cr_assert_eq(forward_kv_free_tokens(f), budget);

    static const struct {
        int n_tokens, want;
    } cases[] = {{1, 0},   {15, 0},  {16, 0},  {17, 16}, {32, 16},
                 {33, 32}, {48, 32}, {49, 48}, {64, 48}};
    int64_t lookups = 0, hits = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int cached = -1;
        seq = forward_seq_open_tokens(f, p, cases[i].n_tokens, 64, &cached);
        cr_assert_geq(seq, 0);
        cr_assert_eq(cached, cases[i].want, "%d tokens: cached %d, want %d", cases[i].n_tokens,
                     cached, cases[i].want);
        lookups++;
        hits += cached;
        /* Shared or not, the sequence holds 4 distinct blocks. */
        cr_assert_eq(forward_kv_free_tokens(f), budget - 64);
        forward_seq_close(f, seq);
        cr_assert_eq(forward_kv_free_tokens(f), budget);
    }
    assert_stats(f, lookups, hits, 3, 3, 0);

    /* A token changed inside the second block: only the first block matches. */
    int q[64];
    memcpy(q, p, sizeof(q));
    q[20] = (q[20] + 1) % vocab;
    int cached = -1;
    seq = forward_seq_open_tokens(f, q, 48, 64, &cached);
    cr_assert_eq(cached, 16);
    /* The next step must start at cached_tokens: not inside it, not past it. */
    sampler_t s = greedy();
    int out;
    forward_item_t it = item(seq, q, 16, 0, &s);
    cr_assert_eq(forward_step(f, &it, 1, &out, NULL), LS_ERR_INVALID);
    it = item(seq, q + 17, 1, 17, &s);
    cr_assert_eq(forward_step(f, &it, 1, &out, NULL), LS_ERR_INVALID);
    feed(f, seq, q, 16, 48, CHUNK, &t);
    forward_seq_close(f, seq);
    assert_stats(f, lookups + 1, hits + 16, 5, 5, 0);

    /* Bad arguments change nothing. */
    int bad[17];
    memcpy(bad, p, sizeof(bad));
    bad[16] = vocab;
    cr_assert_eq(forward_seq_open_tokens(f, bad, 17, 64, NULL), LS_ERR_INVALID);
    bad[16] = -1;
    cr_assert_eq(forward_seq_open_tokens(f, bad, 17, 64, NULL), LS_ERR_INVALID);
    cr_assert_eq(forward_seq_open_tokens(f, p, 33, 32, NULL), LS_ERR_INVALID);
    cr_assert_eq(forward_seq_open_tokens(f, NULL, 5, 32, NULL), LS_ERR_INVALID);
    cr_assert_eq(forward_seq_open_tokens(f, p, -1, 32, NULL), LS_ERR_INVALID);
    cr_assert_eq(forward_seq_open_tokens(f, p, 16, 257, NULL), LS_ERR_INVALID);
    cr_assert_eq(forward_seq_open_tokens(f, p, 0, 0, NULL), LS_ERR_INVALID);
    assert_stats(f, lookups + 1, hits + 16, 5, 5, 0);
    cr_assert_eq(forward_kv_free_tokens(f), budget);

    /* NULL cached_tokens is fine; the hit still counts. */
    seq = forward_seq_open_tokens(f, p, 40, 64, NULL);
    cr_assert_geq(seq, 0);
    forward_seq_close(f, seq);
    assert_stats(f, lookups + 2, hits + 16 + 32, 5, 5, 0);

    trace_free(&t);
    forward_destroy(f);
    rand_ckpt_free(ck);
}

/* A budget of 16 blocks, filled with unused cached blocks by closed sequences: opens
 * evict them oldest first (a chain's deepest block first), forward_kv_free_tokens stays
 * exact, an evicted block ends its chain's hits, and answers equal the uncached ones. */
Test(forward_prefix, eviction_under_a_full_budget)
{
    ckpt_t *ck = long_model();
    int vocab = ck->cfg.vocab_size;
    forward_t *f = make_fwd(ck, true, 4, 256);
    cr_assert_eq(forward_kv_free_tokens(f), 256);
    int x1[256], x2[256], y[256], z[256];
    rand_tokens(x1, 256, vocab);
    rand_tokens(x2, 256, vocab);
    rand_tokens(y, 256, vocab);
    rand_tokens(z, 256, vocab);

    /* 64-token prompts with 20-token answers: 6 blocks each, 5 of them whole (83 held). */
    check_request(f, ck, x1, 64, 0, "x1");
    cr_assert_eq(forward_kv_free_tokens(f), 256);
    assert_stats(f, 1, 0, 5, 5, 0);
    check_request(f, ck, x2, 64, 0, "x2");
    assert_stats(f, 2, 0, 10, 10, 0);
    check_request(f, ck, y, 64, 0, "y"); /* takes the last 6 free blocks */
    assert_stats(f, 3, 0, 15, 15, 0);
    cr_assert_eq(forward_kv_free_tokens(f), 256);

    /* z (44 + 20 = 4 blocks) finds 1 free block and evicts x1's 3 deepest. */
    int cached = -1;
    int seq = forward_seq_open_tokens(f, z, 44, 44 + GEN, &cached);
    cr_assert_geq(seq, 0);
    cr_assert_eq(cached, 0);
    assert_stats(f, 4, 0, 12, 12, 3);
    cr_assert_eq(forward_kv_free_tokens(f), 256 - 64);
    /* Nothing left for a whole sequence of 256 while z is open. */
    cr_assert_eq(forward_seq_open(f, 256), LS_ERR_FULL);
    cr_assert_eq(forward_seq_open_tokens(f, x2, 200, 256, NULL), LS_ERR_FULL);
    assert_stats(f, 4, 0, 12, 12, 3);
    cr_assert_eq(forward_kv_free_tokens(f), 256 - 64);
    forward_seq_close(f, seq);
    check_request(f, ck, z, 44, 0, "z");
    cr_assert_eq(forward_kv_free_tokens(f), 256);

    /* x1's conversation again (prompt + 17 answer tokens): its blocks 2..4 were evicted,
     * so only 2 blocks (32) are hit, though 5 would be without the eviction. */
    forward_prefix_stats_t before;
    forward_prefix_stats(f, &before);
    cr_assert_eq(before.evictions, 3);
    check_request(f, ck, x1, 81, 32, "x1 after eviction");
    cr_assert_eq(forward_kv_free_tokens(f), 256);
    forward_prefix_stats_t after;
    forward_prefix_stats(f, &after);
    cr_assert_gt(after.evictions, before.evictions);
    cr_assert_eq(after.cached_blocks, after.unused_blocks);
    cr_assert_leq(after.cached_blocks, 16);

    forward_destroy(f);
    rand_ckpt_free(ck);
}

/* An open may not count the unused blocks it matched as evictable: they are its own. */
Test(forward_prefix, matched_blocks_are_not_evictable)
{
    ckpt_t *ck = long_model();
    int vocab = ck->cfg.vocab_size;
    forward_t *f = make_fwd(ck, true, 4, 256);
    int p[64];
    rand_tokens(p, 64, vocab);
    trace_t t;
    trace_init(&t, ck);
    int seq = forward_seq_open_tokens(f, p, 64, 64, NULL);
    feed(f, seq, p, 0, 64, CHUNK, &t);
    forward_seq_close(f, seq);
    assert_stats(f, 1, 0, 4, 4, 0);

    /* Hold the 12 free blocks: only the 4 cached ones remain. */
    int w = forward_seq_open(f, 12 * FORWARD_KV_BLOCK);
    cr_assert_geq(w, 0);
    cr_assert_eq(forward_kv_free_tokens(f), 64);
    assert_stats(f, 1, 0, 4, 4, 0);

    /* 3 blocks match; 5 blocks need 2 more, but only 1 unmatched block can be evicted. */
    cr_assert_eq(forward_seq_open_tokens(f, p, 64, 80, NULL), LS_ERR_FULL);
    cr_assert_eq(forward_kv_free_tokens(f), 64);
    assert_stats(f, 1, 0, 4, 4, 0);

    /* 4 blocks need 1 more: the unmatched one is evicted, nothing is left. */
    int cached = -1;
    int u = forward_seq_open_tokens(f, p, 64, 64, &cached);
    cr_assert_geq(u, 0);
    cr_assert_eq(cached, 48);
    assert_stats(f, 2, 48, 3, 0, 1);
    cr_assert_eq(forward_kv_free_tokens(f), 0);
    cr_assert_eq(forward_seq_open(f, 1), LS_ERR_FULL);

    /* The shared blocks still hold p's KV: the last block's logits equal a fresh run. */
    trace_t again;
    trace_init(&again, ck);
    feed(f, u, p, 48, 64, CHUNK, &again);
    forward_t *g = make_fwd(ck, false, 2, 0);
    seq = forward_seq_open(g, 64);
    trace_t off;
    trace_init(&off, ck);
    feed(g, seq, p, 0, 64, CHUNK, &off);
    assert_same_trace(&again, &off, "after the refused open");
    forward_seq_close(g, seq);

    forward_seq_close(f, u);
    forward_seq_close(f, w);
    cr_assert_eq(forward_kv_free_tokens(f), 256);
    trace_free(&t);
    trace_free(&again);
    trace_free(&off);
    forward_destroy(g);
    forward_destroy(f);
    rand_ckpt_free(ck);
}

/* Four sequences open at once on one cached prefix (each prefix block held by all four),
 * decoded together in one batch; one closes half way.  Each equals its request alone
 * with the cache off. */
Test(forward_prefix, concurrent_sequences_share_a_prefix)
{
    ckpt_t *ck = long_model();
    int vocab = ck->cfg.vocab_size;
    enum { B = 4, P = 100 };
    static const int suffix[B] = {5, 17, 30, 44};
    forward_t *f = make_fwd(ck, true, 8, 0);
    int64_t budget = forward_config(f)->kv_budget_tokens;
    int conv[B][256], n[B], seq[B], held_blocks = 0;
    trace_t on[B];
    rand_tokens(conv[0], P, vocab);
    for (int b = 0; b < B; b++) {
        memcpy(conv[b], conv[0], P * sizeof(int));
        rand_tokens(conv[b] + P, suffix[b], vocab);
        n[b] = P + suffix[b];
        trace_init(&on[b], ck);
        int cached = -1;
        seq[b] = forward_seq_open_tokens(f, conv[b], n[b], n[b] + GEN, &cached);
        cr_assert_geq(seq[b], 0);
        cr_assert_eq(cached, b == 0 ? 0 : 96);
        held_blocks += (n[b] + GEN + FORWARD_KV_BLOCK - 1) / FORWARD_KV_BLOCK - (b ? 6 : 0);
        conv[b][n[b]] = feed(f, seq[b], conv[b], cached, n[b], CHUNK, &on[b]);
    }
    /* The 6 prefix blocks are held four times but counted once. */
    cr_assert_eq(forward_kv_free_tokens(f), budget - (int64_t)held_blocks * FORWARD_KV_BLOCK);
    /* Published: the prefix's 6, then 0, 1, 2 and 3 more whole blocks of each prompt. */
    assert_stats(f, B, 3 * 96, 6 + 0 + 1 + 2 + 3, 0, 0);

    sampler_t s = greedy();
    forward_item_t items[B];
    int owner[B], out[B];
    float *logits = malloc((size_t)B * (size_t)vocab * sizeof(float));
    bool open[B] = {true, true, true, true};
    for (int i = 1; i < GEN; i++) {
        if (i == GEN / 2) {
            forward_seq_close(f, seq[1]);
            open[1] = false;
            held_blocks -= (n[1] + GEN + FORWARD_KV_BLOCK - 1) / FORWARD_KV_BLOCK - 6;
            cr_assert_eq(forward_kv_free_tokens(f),
                         budget - (int64_t)held_blocks * FORWARD_KV_BLOCK);
        }
        int k = 0;
        for (int b = 0; b < B; b++) {
            if (!open[b])
                continue;
            int pos = n[b] + i - 1;
            items[k] = item(seq[b], &conv[b][pos], 1, pos, &s);
            owner[k++] = b;
        }
        cr_assert_eq(forward_step(f, items, k, out, logits), LS_OK);
        for (int j = 0; j < k; j++) {
            int b = owner[j];
            conv[b][n[b] + i] = out[j];
            memcpy(trace_at(&on[b], n[b] + i - 1), logits + (size_t)j * (size_t)vocab,
                   (size_t)vocab * sizeof(float));
        }
    }
    for (int b = 0; b < B; b++) {
        int alone[256];
        memcpy(alone, conv[b], (size_t)n[b] * sizeof(int));
        trace_t off;
        trace_init(&off, ck);
        run_alone_off(ck, alone, n[b], &off);
        int gen = open[b] ? GEN : GEN / 2;
        cr_assert_arr_eq(conv[b] + n[b], alone + n[b], (size_t)gen * sizeof(int),
                         "sequence %d: greedy tokens differ", b);
        assert_same_trace(&on[b], &off, "concurrent");
        trace_free(&off);
        trace_free(&on[b]);
        if (open[b])
            forward_seq_close(f, seq[b]);
    }
    cr_assert_eq(forward_kv_free_tokens(f), budget);
    free(logits);
    forward_destroy(f);
    rand_ckpt_free(ck);
}

/* Two sequences compute the same blocks in the same steps: the first publishes them,
 * the second keeps its copies private (and may rewrite them). */
Test(forward_prefix, equal_blocks_computed_at_once_stay_private)
{
    ckpt_t *ck = long_model();
    int vocab = ck->cfg.vocab_size;
    forward_t *f = make_fwd(ck, true, 4, 0);
    int64_t budget = forward_config(f)->kv_budget_tokens;
    int p[40];
    rand_tokens(p, 40, vocab);
    int c0 = -1, c1 = -1;
    int s0 = forward_seq_open_tokens(f, p, 40, 48, &c0);
    int s1 = forward_seq_open_tokens(f, p, 40, 48, &c1);
    cr_assert(s0 >= 0 && s1 >= 0 && c0 == 0 && c1 == 0);
    sampler_t s = greedy();
    int out[2];
    float *logits = malloc(2 * (size_t)vocab * sizeof(float));
    for (int pos = 0; pos < 40; pos += 16) {
        int len = pos + 16 <= 40 ? 16 : 40 - pos;
        forward_item_t it[2] = {item(s0, p + pos, len, pos, &s), item(s1, p + pos, len, pos, &s)};
        cr_assert_eq(forward_step(f, it, 2, out, logits), LS_OK);
        cr_assert(memcmp(logits, logits + vocab, (size_t)vocab * sizeof(float)) == 0);
    }
    assert_stats(f, 2, 0, 2, 0, 0);
    cr_assert_eq(forward_kv_free_tokens(f), budget - 6 * FORWARD_KV_BLOCK);

    /* s0's blocks are published, s1's copies are not. */
    forward_item_t it = item(s0, p, 16, 0, &s);
    cr_assert_eq(forward_step(f, &it, 1, out, NULL), LS_ERR_INVALID);
    it = item(s1, p, 16, 0, &s);
    cr_assert_eq(forward_step(f, &it, 1, out, NULL), LS_OK);

    forward_seq_close(f, s1);
    assert_stats(f, 2, 0, 2, 0, 0);
    forward_seq_close(f, s0);
    assert_stats(f, 2, 0, 2, 2, 0);
    cr_assert_eq(forward_kv_free_tokens(f), budget);
    int cached = -1;
    int s2 = forward_seq_open_tokens(f, p, 40, 48, &cached);
    cr_assert_eq(cached, 32);
    forward_seq_close(f, s2);
    free(logits);
    forward_destroy(f);
    rand_ckpt_free(ck);
}

/* A step into a published block, shared or not, is refused and changes nothing. */
Test(forward_prefix, writes_into_published_blocks_are_refused)
{
    ckpt_t *ck = long_model();
    int vocab = ck->cfg.vocab_size;
    forward_t *f = make_fwd(ck, true, 4, 0);
    int p[64], q[64];
    rand_tokens(p, 40, vocab);
    memcpy(q, p, 40 * sizeof(int));
    trace_t t0, t1, off;
    trace_init(&t0, ck);
    trace_init(&t1, ck);
    trace_init(&off, ck);

    int s0 = forward_seq_open_tokens(f, p, 40, 40 + GEN, NULL);
    p[40] = feed(f, s0, p, 0, 40, CHUNK, &t0); /* blocks 0 and 1 published */
    int cached = -1;
    int s1 = forward_seq_open_tokens(f, q, 40, 40 + GEN, &cached);
    cr_assert_eq(cached, 32); /* blocks 0 and 1 shared */
    assert_stats(f, 2, 32, 2, 0, 0);
    int64_t free_before = forward_kv_free_tokens(f);

    sampler_t s = greedy();
    int out[2];
    int junk[16] = {0};
    forward_item_t it[2];
    it[0] = item(s0, junk, 16, 16, &s);
    cr_assert_eq(forward_step(f, it, 1, out, NULL), LS_ERR_INVALID);
    it[0] = item(s0, junk, 1, 31, &s);
    cr_assert_eq(forward_step(f, it, 1, out, NULL), LS_ERR_INVALID);
    it[0] = item(s0, junk, 16, 0, &s);
    cr_assert_eq(forward_step(f, it, 1, out, NULL), LS_ERR_INVALID);
    /* With a valid item beside it the whole step is refused. */
    it[0] = item(s0, p + 40, 1, 40, &s);
    it[1] = item(s1, junk, 4, 28, &s);
    cr_assert_eq(forward_step(f, it, 2, out, NULL), LS_ERR_INVALID);
    it[0] = item(s1, junk, 1, 0, &s);
    cr_assert_eq(forward_step(f, it, 1, out, NULL), LS_ERR_INVALID);
    assert_stats(f, 2, 32, 2, 0, 0);
    cr_assert_eq(forward_kv_free_tokens(f), free_before);

    /* Both continue where they are and answer as if nothing had been tried. */
    for (int i = 1; i < GEN; i++)
        p[40 + i] = feed(f, s0, p, 40 + i - 1, 40 + i, 1, &t0);
    turn(f, s1, q, 32, 40, &t1);
    int alone[64];
    memcpy(alone, p, 40 * sizeof(int));
    run_alone_off(ck, alone, 40, &off);
    cr_assert_arr_eq(p + 40, alone + 40, GEN * sizeof(int));
    cr_assert_arr_eq(q + 40, alone + 40, GEN * sizeof(int));
    assert_same_trace(&t0, &off, "owner after refused writes");
    assert_same_trace(&t1, &off, "sharer after refused writes");

    forward_seq_close(f, s0);
    forward_seq_close(f, s1);
    trace_free(&t0);
    trace_free(&t1);
    trace_free(&off);
    forward_destroy(f);
    rand_ckpt_free(ck);
}

/* prefix_cache = false: no hits, nothing kept after close, rewinds anywhere allowed. */
Test(forward_prefix, cache_off_keeps_nothing)
{
    ckpt_t *ck = long_model();
    int vocab = ck->cfg.vocab_size;
    forward_t *f = make_fwd(ck, false, 4, 0);
    int64_t budget = forward_config(f)->kv_budget_tokens;
    int a[128], b[128];
    rand_tokens(a, 64, vocab);
    memcpy(b, a, 64 * sizeof(int));
    trace_t ta, tb;
    trace_init(&ta, ck);
    trace_init(&tb, ck);
    int cached = -1;
    int seq = forward_seq_open_tokens(f, a, 64, 64 + GEN, &cached);
    cr_assert_eq(cached, 0);
    turn(f, seq, a, 0, 64, &ta);
    forward_seq_close(f, seq);
    cr_assert_eq(forward_kv_free_tokens(f), budget);
    seq = forward_seq_open_tokens(f, b, 64, 64 + GEN, &cached);
    cr_assert_eq(cached, 0);
    turn(f, seq, b, 0, 64, &tb);
    cr_assert_arr_eq(a + 64, b + 64, GEN * sizeof(int));
    assert_same_trace(&ta, &tb, "cache off, twice");
    /* No block is published, so a rewind into the first block is allowed. */
    sampler_t s = greedy();
    int out;
    forward_item_t it = item(seq, b, 16, 0, &s);
    cr_assert_eq(forward_step(f, &it, 1, &out, NULL), LS_OK);
    forward_seq_close(f, seq);
    assert_stats(f, 0, 0, 0, 0, 0);
    cr_assert_eq(forward_kv_free_tokens(f), budget);
    trace_free(&ta);
    trace_free(&tb);
    forward_destroy(f);
    rand_ckpt_free(ck);
}
