/*
 * test_forward_cuda.c - the CUDA backend (libs/model/forward_cuda.cu) against the CPU
 * backend on the same checkpoints and items: logits within LOGIT_RTOL, the same greedy
 * tokens, sampling on the device equal to sampler_pick on the host for the same logits
 * and coin, and KV paging over many non-contiguous blocks.  int8 (Q8_0) checkpoints run
 * against the reference pass instead (ref_forward.c: llama2.c runq.c's arithmetic,
 * which defines what a Q8_0 result is).
 *
 * Every test that needs a device skips with a message when there is none (CI builds
 * with CUDA and runs without a GPU), unless LLMSERVE_REQUIRE_CUDA=1 makes that a
 * failure; backend_choice runs everywhere and checks that FORWARD_AUTO falls back to
 * the CPU cleanly.
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "model/checkpoint.h"
#include "model/checkpoint_write.h"
#include "model/forward.h"
#include "model/forward_backend.h"
#include "model/sampler.h"
#include "ref_forward.h"
#include "support/tmpdir.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* fp32 cuBLAS and fp32 kernels differ from the CPU only in summation order. */
#define LOGIT_RTOL 1e-3f
/* Over a whole 4096-position context: both backends rotate with the same RoPE table
 * (forward__rope_table), so what is left is summation order over longer sums. */
#define LONG_CONTEXT_RTOL 1e-4f
/* How far (in coin and in top_p) float sums in another order may move a boundary of
 * the cumulative distribution: see pick_explained. */
#define SLACK 1e-4f

/* LLMSERVE_REQUIRE_CUDA=1 (tools/gpu-check.sh sets it) turns every skip into a
 * failure with the runtime's reason, so a GPU run cannot pass by testing nothing. */
static bool cuda_required(void)
{
    const char *v = getenv("LLMSERVE_REQUIRE_CUDA");
    return v && *v && strcmp(v, "0") != 0;
}

static void need_cuda(void)
{
    char why[160] = "";
    if (!forward__cuda()) {
        cr_assert(!cuda_required(), "LLMSERVE_REQUIRE_CUDA is set but llmserve was built without "
                                    "CUDA");
        cr_skip_test("llmserve was built without CUDA");
    }
    if (!forward__cuda_present(why, sizeof(why))) {
        cr_assert(!cuda_required(), "LLMSERVE_REQUIRE_CUDA is set but no CUDA device is usable: %s",
                  why);
        cr_skip_test("no CUDA device on this machine (%s): the CUDA backend is not exercised", why);
    }
}

/* ---- checkpoints ---------------------------------------------------------------- */

typedef struct {
    test_tmpdir_t dir;
    char path[192];
    ckpt_t *ck;
} model_t;

static ckpt_config_t shape(int dim, int hidden, int layers, int heads, int kv_heads, int vocab,
                           int seq_len, bool shared)
{
    ckpt_config_t c;
    memset(&c, 0, sizeof(c));
    c.dim = dim;
    c.hidden_dim = hidden;
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = kv_heads;
    c.vocab_size = vocab;
    c.seq_len = seq_len;
    c.shared_classifier = shared;
    return c;
}

static const ckpt_t *model_open(model_t *m, ckpt_config_t c, uint64_t seed)
{
    char err[256];
    cr_assert_eq(test_tmpdir_make(&m->dir, "llmserve-cuda"), 0, "mkdtemp failed");
    test_tmpdir_file(&m->dir, "model.bin", m->path, sizeof(m->path));
    cr_assert_eq(ckpt_write(m->path, &c, seed, CKPT_FORMAT_LEGACY, err, sizeof(err)), LS_OK,
                 "ckpt_write: %s", err);
    m->ck = ckpt_open(m->path, err, sizeof(err));
    cr_assert_not_null(m->ck, "ckpt_open: %s", err);
    return m->ck;
}

static void model_close(model_t *m)
{
    ckpt_close(m->ck);
    test_tmpdir_remove(&m->dir);
}

/* ---- the two backends side by side ----------------------------------------------- */

typedef struct {
    forward_t *cpu, *gpu;
    int vocab;
    float *cpu_logits, *gpu_logits; /* [max_batch][vocab] */
    int *cpu_tok, *gpu_tok;         /* [max_batch] */
    float rtol;                     /* logits may differ by rtol * max(1, max |logit|) */
    float worst;                    /* the largest such relative difference seen */
} pair_t;

static forward_t *create(const ckpt_t *ck, forward_backend_t be, int max_batch, int max_step,
                         int64_t kv_budget)
{
    forward_config_t cfg;
    forward_config_init(&cfg);
    cfg.backend = be;
    cfg.max_batch = max_batch;
    cfg.max_step_tokens = max_step;
    cfg.kv_budget_tokens = kv_budget;
    char err[256] = "";
    forward_t *f = forward_create(ck, &cfg, err, sizeof(err));
    cr_assert_not_null(f, "forward_create(%s): %s", be == FORWARD_CPU ? "cpu" : "cuda", err);
    return f;
}

static void pair_create(pair_t *p, const ckpt_t *ck, int max_batch, int max_step, int64_t kv_budget)
{
    p->cpu = create(ck, FORWARD_CPU, max_batch, max_step, kv_budget);
    p->gpu = create(ck, FORWARD_CUDA, max_batch, max_step, kv_budget);
    cr_assert_str_eq(forward_backend_name(p->gpu), "cuda");
    cr_assert_not_null(strstr(forward_device_name(p->gpu), "sm_"), "device name \"%s\"",
                       forward_device_name(p->gpu));
    p->vocab = ck->cfg.vocab_size;
    p->rtol = LOGIT_RTOL;
    p->worst = 0.0f;
    p->cpu_logits = calloc((size_t)max_batch * p->vocab, sizeof(float));
    p->gpu_logits = calloc((size_t)max_batch * p->vocab, sizeof(float));
    p->cpu_tok = calloc((size_t)max_batch, sizeof(int));
    p->gpu_tok = calloc((size_t)max_batch, sizeof(int));
    cr_assert(p->cpu_logits && p->gpu_logits && p->cpu_tok && p->gpu_tok);
}

static void pair_destroy(pair_t *p)
{
    forward_destroy(p->cpu);
    forward_destroy(p->gpu);
    free(p->cpu_logits);
    free(p->gpu_logits);
    free(p->cpu_tok);
    free(p->gpu_tok);
}

/* Opens a sequence on both; the allocators are the same code, so the ids agree. */
static int pair_open(pair_t *p, int reserve)
{
    int a = forward_seq_open(p->cpu, reserve), b = forward_seq_open(p->gpu, reserve);
    cr_assert_geq(a, 0, "cpu forward_seq_open(%d) = %d", reserve, a);
    cr_assert_eq(a, b, "sequence ids differ: cpu %d cuda %d", a, b);
    return a;
}

static void pair_close(pair_t *p, int seq)
{
    forward_seq_close(p->cpu, seq);
    forward_seq_close(p->gpu, seq);
}

/* Runs the items on both backends and checks the logits and, for greedy items, the
 * tokens: the CUDA pick may differ only on a near tie of the CPU's logits. */
static void pair_step(pair_t *p, const forward_item_t *items, int n, const char *what)
{
    cr_assert_eq(forward_step(p->cpu, items, n, p->cpu_tok, p->cpu_logits), LS_OK, "%s: cpu step",
                 what);
    cr_assert_eq(forward_step(p->gpu, items, n, p->gpu_tok, p->gpu_logits), LS_OK, "%s: cuda step",
                 what);
    for (int i = 0; i < n; i++) {
        const float *c = p->cpu_logits + (size_t)i * p->vocab;
        const float *g = p->gpu_logits + (size_t)i * p->vocab;
        float max_abs = 0.0f, max_diff = 0.0f;
        int worst = 0;
        for (int v = 0; v < p->vocab; v++) {
            if (isnan(c[v])) {
                cr_assert(isnan(g[v]), "%s: item %d logit %d is %g on cuda, NaN on the cpu", what,
                          i, v, g[v]);
                continue;
            }
            cr_assert(isfinite(g[v]), "%s: item %d logit %d is %g on cuda", what, i, v, g[v]);
            max_abs = fmaxf(max_abs, fabsf(c[v]));
            if (fabsf(c[v] - g[v]) > max_diff) {
                max_diff = fabsf(c[v] - g[v]);
                worst = v;
            }
        }
        float tol = p->rtol * fmaxf(1.0f, max_abs);
        p->worst = fmaxf(p->worst, max_diff / fmaxf(1.0f, max_abs));
        cr_assert_leq(max_diff, tol,
                      "%s: item %d (seq %d pos %d n_tokens %d) logit %d: cpu %g cuda %g", what, i,
                      items[i].seq, items[i].pos, items[i].n_tokens, worst, c[worst], g[worst]);
        cr_assert(p->gpu_tok[i] >= 0 && p->gpu_tok[i] < p->vocab);
        if (items[i].sampler->temperature == 0.0f && p->cpu_tok[i] != p->gpu_tok[i])
            cr_assert_leq(fabsf(c[p->cpu_tok[i]] - c[p->gpu_tok[i]]), 2.0f * tol,
                          "%s: item %d greedy token cpu %d (%g) cuda %d (%g)", what, i,
                          p->cpu_tok[i], c[p->cpu_tok[i]], p->gpu_tok[i], c[p->gpu_tok[i]]);
    }
}

/* Deterministic token ids in [0, vocab). */
static void fill_tokens(int *t, int n, int vocab, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1u;
    for (int i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        t[i] = (int)((x >> 8) % (uint32_t)vocab);
    }
}

static forward_item_t item(int seq, const int *tokens, int n_tokens, int pos, const sampler_t *s,
                           float coin)
{
    forward_item_t it;
    memset(&it, 0, sizeof(it));
    it.seq = seq;
    it.tokens = tokens;
    it.n_tokens = n_tokens;
    it.pos = pos;
    it.sampler = s;
    it.coin = coin;
    return it;
}

/* ---- tests ---------------------------------------------------------------------- */

Test(forward_cuda, backend_choice)
{
    model_t m;
    const ckpt_t *ck = model_open(&m, shape(32, 64, 1, 4, 2, 64, 32, true), 1);
    forward_config_t cfg;
    forward_config_init(&cfg);
    cfg.max_batch = 2;
    cfg.max_step_tokens = 16;
    char err[256] = "";
    forward_t *f = forward_create(ck, &cfg, err, sizeof(err));
    cr_assert_not_null(f, "FORWARD_AUTO: %s", err);
    if (forward__cuda_present(NULL, 0)) {
        cr_expect_str_eq(forward_backend_name(f), "cuda");
        cr_expect_not_null(strstr(forward_device_name(f), "GiB, driver CUDA"), "device name \"%s\"",
                           forward_device_name(f));
    } else {
        cr_expect_str_eq(forward_backend_name(f), "cpu");
        cfg.backend = FORWARD_CUDA;
        err[0] = '\0';
        forward_t *g = forward_create(ck, &cfg, err, sizeof(err));
        cr_expect_null(g, "FORWARD_CUDA succeeded without a device");
        forward_destroy(g);
        cr_expect_not_null(strstr(err, "cuda"), "reason \"%s\"", err);
    }
    forward_destroy(f);
    model_close(&m);
}

/* Prefill chunks of several lengths and decode tokens in the same steps, a sequence
 * joining mid-way with a chunked prefill, grouped-query attention (8 query heads over
 * 2 KV heads, head_dim 16). */
Test(forward_cuda, mixed_prefill_and_decode_match_cpu)
{
    need_cuda();
    model_t m;
    const ckpt_t *ck = model_open(&m, shape(128, 352, 2, 8, 2, 512, 256, true), 7);
    pair_t p;
    pair_create(&p, ck, 4, 128, 0);
    sampler_t greedy;
    sampler_init(&greedy, 0.0f, 1.0f, 0, 1);

    int prompt[4][80];
    for (int s = 0; s < 4; s++)
        fill_tokens(prompt[s], 80, 512, (uint32_t)s + 1);
    int seq[4], pos[4] = {0, 0, 0, 0}, next[4];
    for (int s = 0; s < 3; s++)
        seq[s] = pair_open(&p, 256);

    forward_item_t it[4];
    it[0] = item(seq[0], prompt[0], 37, 0, &greedy, 0.5f);
    it[1] = item(seq[1], prompt[1], 5, 0, &greedy, 0.5f);
    it[2] = item(seq[2], prompt[2], 1, 0, &greedy, 0.5f);
    pair_step(&p, it, 3, "first prefill");
    pos[0] = 37, pos[1] = 5, pos[2] = 1;
    for (int s = 0; s < 3; s++)
        next[s] = p.cpu_tok[s];

    for (int step = 0; step < 24; step++) {
        char what[64];
        snprintf(what, sizeof(what), "step %d", step);
        int n = 0;
        for (int s = 0; s < 3; s++)
            it[n++] = item(seq[s], &next[s], 1, pos[s], &greedy, 0.5f);
        if (step == 6) {
            seq[3] = pair_open(&p, 256);
            it[n++] = item(seq[3], prompt[3], 50, 0, &greedy, 0.5f);
        } else if (step == 7) {
            it[n++] = item(seq[3], prompt[3] + 50, 30, 50, &greedy, 0.5f);
        } else if (step > 7) {
            it[n++] = item(seq[3], &next[3], 1, pos[3], &greedy, 0.5f);
        }
        pair_step(&p, it, n, what);
        for (int i = 0; i < n; i++) {
            int s = i;
            pos[s] += it[i].n_tokens;
            next[s] = p.cpu_tok[i]; /* both continue from the CPU's token */
        }
    }
    pair_destroy(&p);
    model_close(&m);
}

/* Sequences whose blocks are scattered over the cache (a closed sequence's blocks
 * are reused by the next one), prefill chunks that cross many block boundaries, and
 * head_dim 128 (one attention thread per dimension) with an unshared classifier. */
Test(forward_cuda, kv_paging_across_many_blocks)
{
    need_cuda();
    model_t m;
    const ckpt_t *ck = model_open(&m, shape(256, 512, 2, 2, 1, 256, 1024, false), 11);
    pair_t p;
    pair_create(&p, ck, 3, 160, 3 * 1024);
    sampler_t greedy;
    sampler_init(&greedy, 0.0f, 1.0f, 0, 1);

    int a = pair_open(&p, 1024);
    int gap = pair_open(&p, 300);
    int c = pair_open(&p, 200);
    pair_close(&p, gap);
    int b = pair_open(&p, 720); /* the gap's blocks, then fresh ones after c's */

    static int pa[1024], pb[720];
    fill_tokens(pa, 1024, 256, 21);
    fill_tokens(pb, 720, 256, 22);
    int pos_a = 0, pos_b = 0, na = 0, nb = 0;
    forward_item_t it[3];
    for (int step = 0; pos_b + 90 <= 700; step++) {
        char what[64];
        snprintf(what, sizeof(what), "prefill step %d", step);
        it[0] = item(a, pa + pos_a, 70, pos_a, &greedy, 0.5f);
        it[1] = item(b, pb + pos_b, 90, pos_b, &greedy, 0.5f);
        pair_step(&p, it, 2, what);
        pos_a += 70;
        pos_b += 90;
        na = p.cpu_tok[0];
        nb = p.cpu_tok[1];
    }
    cr_assert_geq(pos_b, 600, "the prefill loop ran %d positions", pos_b);
    /* a short third sequence alongside, then decode all three */
    int pc[40];
    fill_tokens(pc, 40, 256, 23);
    it[0] = item(c, pc, 40, 0, &greedy, 0.5f);
    pair_step(&p, it, 1, "third sequence");
    int pos_c = 40, nc = p.cpu_tok[0];
    for (int step = 0; step < 12; step++) {
        char what[64];
        snprintf(what, sizeof(what), "decode step %d", step);
        it[0] = item(a, &na, 1, pos_a, &greedy, 0.5f);
        it[1] = item(b, &nb, 1, pos_b, &greedy, 0.5f);
        it[2] = item(c, &nc, 1, pos_c, &greedy, 0.5f);
        pair_step(&p, it, 3, what);
        pos_a++, pos_b++, pos_c++;
        na = p.cpu_tok[0], nb = p.cpu_tok[1], nc = p.cpu_tok[2];
    }
    pair_destroy(&p);
    model_close(&m);
}

/* A whole 4096-position context in prefill chunks of 512 (attention scores for 4096
 * positions in shared memory), head_dim 128, then the last position as a decode. */
Test(forward_cuda, full_context_4096)
{
    need_cuda();
    model_t m;
    const ckpt_t *ck = model_open(&m, shape(128, 256, 1, 1, 1, 128, 4096, true), 13);
    pair_t p;
    pair_create(&p, ck, 1, 512, 4096);
    p.rtol = LONG_CONTEXT_RTOL;
    sampler_t greedy;
    sampler_init(&greedy, 0.0f, 1.0f, 0, 1);
    int s = pair_open(&p, 4096);
    static int prompt[4095];
    fill_tokens(prompt, 4095, 128, 31);
    forward_item_t it;
    int pos = 0;
    while (pos < 4095) {
        int n = 4095 - pos < 512 ? 4095 - pos : 512;
        char what[64];
        snprintf(what, sizeof(what), "chunk at %d", pos);
        it = item(s, prompt + pos, n, pos, &greedy, 0.5f);
        pair_step(&p, &it, 1, what);
        pos += n;
    }
    int next = p.cpu_tok[0];
    it = item(s, &next, 1, pos, &greedy, 0.5f);
    pair_step(&p, &it, 1, "last position");
    /* the figure for the record (tools/gpu-check.sh keeps the output) */
    fprintf(stderr,
            "full_context_4096: largest logit difference %.3g of max(1, |logit|) (bound %.0e)\n",
            (double)p.worst, (double)LONG_CONTEXT_RTOL);
    pair_destroy(&p);
    model_close(&m);
}

/* ---- sampling ------------------------------------------------------------------- */

/* a before b in the order a walk of the distribution takes: id order without top-k and
 * top-p, else more probable first and lower id on ties (probabilities in pr) */
static bool walk_before(const float *pr, bool sorted, int a, int b)
{
    return sorted ? pr[a] > pr[b] || (pr[a] == pr[b] && a < b) : a < b;
}

/*
 * True when sampler_pick on logits gives the device's token d for coin, or for a coin
 * and a top_p within SLACK of them.  The device sums probabilities in another order,
 * which moves every boundary of the cumulative distribution (and the end of the
 * nucleus) by float rounding; a pick may differ only there.  With a coin that close
 * to 1 the walk may also run to any later token of the kept set.  Greedy must match.
 */
static bool pick_explained(const sampler_t *s, const float *logits, int vocab, float coin, int d,
                           int *host_tok)
{
    float *pr = malloc((size_t)vocab * sizeof(float));
    sampler_prob_t *scratch = malloc((size_t)vocab * sizeof(sampler_prob_t));
    cr_assert(pr && scratch);
    memcpy(pr, logits, (size_t)vocab * sizeof(float));
    *host_tok = sampler_pick(s, pr, vocab, coin, scratch);
    bool ok = *host_tok == d;
    bool greedy = !(s->temperature > 0.0f) || s->top_k == 1;
    bool use_k = s->top_k > 0 && s->top_k < vocab;
    bool use_p = s->top_p > 0.0f && s->top_p < 1.0f;
    const float top_ps[3] = {s->top_p, s->top_p - SLACK, s->top_p + SLACK};
    bool open_end = coin + SLACK >= 0.99999994f;
    for (int t = 0; t < (use_p ? 3 : 1) && !ok && !greedy; t++) {
        sampler_t u = *s;
        if (use_p)
            u.top_p = fminf(fmaxf(top_ps[t], 1e-6f), 0.99999994f);
        memcpy(pr, logits, (size_t)vocab * sizeof(float));
        int hi = sampler_pick(&u, pr, vocab, open_end ? 0.99999994f : coin + SLACK, scratch);
        memcpy(pr, logits, (size_t)vocab * sizeof(float));
        int lo = sampler_pick(&u, pr, vocab, fmaxf(0.0f, coin - SLACK), scratch);
        bool sorted = use_k || use_p;
        if (walk_before(pr, sorted, d, lo))
            continue;
        if (!open_end) {
            ok = !walk_before(pr, sorted, hi, d);
            continue;
        }
        if (!(pr[d] > 0.0f))
            continue;
        int rank = 0;
        for (int i = 0; i < vocab && use_k; i++)
            rank += walk_before(pr, true, i, d);
        ok = !use_k || rank < s->top_k;
    }
    free(pr);
    free(scratch);
    return ok;
}

typedef struct {
    float temperature, top_p;
    int top_k;
} sample_cfg_t;

static const sample_cfg_t sample_cfgs[] = {
    {0.0f, 1.0f, 0},   {1.0f, 1.0f, 0}, {0.7f, 1.0f, 0},   {1.0f, 1.0f, 40},  {1.0f, 0.9f, 0},
    {0.8f, 0.95f, 50}, {1.0f, 1.0f, 1}, {1.3f, 0.5f, 0},   {1.0f, 0.999f, 0}, {2.0f, 1.0f, 5000},
    {1.0f, 0.05f, 0},  {0.1f, 0.9f, 0}, {0.5f, 0.8f, 300}, {1.0f, 0.3f, 7},
};
#define N_SAMPLE_CFGS ((int)(sizeof(sample_cfgs) / sizeof(sample_cfgs[0])))

/* Device picks against sampler_pick on the logits the device returned, for each
 * sampler above and coins spread over [0, 1) (the ends included). */
static void check_device_sampling(forward_t *gpu, int vocab, int batch, int steps,
                                  const int *prompts, int prompt_len, bool rewind)
{
    sampler_t *s = calloc((size_t)batch, sizeof(sampler_t));
    forward_item_t *it = calloc((size_t)batch, sizeof(forward_item_t));
    int *seq = calloc((size_t)batch, sizeof(int)), *pos = calloc((size_t)batch, sizeof(int));
    int *next = calloc((size_t)batch, sizeof(int)), *tok = calloc((size_t)batch, sizeof(int));
    float *logits = calloc((size_t)batch * vocab, sizeof(float));
    cr_assert(s && it && seq && pos && next && tok && logits);
    for (int i = 0; i < batch; i++) {
        seq[i] = forward_seq_open(gpu, prompt_len + steps);
        cr_assert_geq(seq[i], 0);
    }
    sampler_t coins;
    sampler_init(&coins, 1.0f, 1.0f, 0, 99);
    int checked = 0, exact = 0;
    for (int step = 0; step < steps; step++) {
        for (int i = 0; i < batch; i++) {
            const sample_cfg_t *c = &sample_cfgs[(i + step) % N_SAMPLE_CFGS];
            sampler_init(&s[i], c->temperature, c->top_p, c->top_k, (uint64_t)i + 1);
            float coin = sampler_coin(&coins);
            if (i % 11 == 0)
                coin = 0.0f;
            else if (i % 11 == 1)
                coin = 0.99999994f;
            if (step == 0 || rewind)
                it[i] = item(seq[i], prompts + (size_t)i * prompt_len, prompt_len, 0, &s[i], coin);
            else
                it[i] = item(seq[i], &next[i], 1, pos[i], &s[i], coin);
        }
        cr_assert_eq(forward_step(gpu, it, batch, tok, logits), LS_OK);
        for (int i = 0; i < batch; i++) {
            int host = -1;
            const float *row = logits + (size_t)i * vocab;
            cr_assert(pick_explained(&s[i], row, vocab, it[i].coin, tok[i], &host),
                      "step %d item %d (temperature %g top_p %g top_k %d coin %.9g): device "
                      "picked %d, sampler_pick %d",
                      step, i, s[i].temperature, s[i].top_p, s[i].top_k, it[i].coin, tok[i], host);
            checked++;
            exact += host == tok[i];
            pos[i] = it[i].pos + it[i].n_tokens;
            next[i] = tok[i];
        }
    }
    cr_assert_eq(checked, batch * steps);
    /* rounding explains a rare difference, not a habit */
    cr_assert_geq(exact * 20, checked * 19, "only %d of %d picks equal sampler_pick", exact,
                  checked);
    for (int i = 0; i < batch; i++)
        forward_seq_close(gpu, seq[i]);
    free(s);
    free(it);
    free(seq);
    free(pos);
    free(next);
    free(tok);
    free(logits);
}

/* Logits from a random model: flat enough that top-p keeps thousands of tokens, and a
 * vocabulary of several block-widths so scans cross tiles. */
Test(forward_cuda, device_sampling_matches_sampler_pick)
{
    need_cuda();
    model_t m;
    const int vocab = 3000, batch = 32, steps = 8, plen = 3;
    const ckpt_t *ck = model_open(&m, shape(64, 128, 1, 4, 4, vocab, 64, true), 17);
    forward_t *gpu = create(ck, FORWARD_CUDA, batch, batch * plen, 0);
    int prompts[32 * 3];
    fill_tokens(prompts, batch * plen, vocab, 41);
    check_device_sampling(gpu, vocab, batch, steps, prompts, plen, false);
    forward_destroy(gpu);
    model_close(&m);
}

/*
 * A hand-built model whose logits are chosen exactly: the residual stream stays the
 * embedding (every wo and w2 is zero), the embedding is e_0, the final norm keeps
 * only dimension 0, so logit v = wcls[v][0] * s with s the same on both backends.
 * That gives exact ties (at the maximum, inside top-k, inside the nucleus) and a NaN.
 */
#define CR_DIM 32
#define CR_VOCAB 1500

typedef struct {
    ckpt_t ck;
    float *mem;
} crafted_t;

static const ckpt_t *crafted_open(crafted_t *m)
{
    ckpt_config_t c = shape(CR_DIM, CR_DIM, 1, 2, 2, CR_VOCAB, 16, false);
    char err[128];
    cr_assert_eq(ckpt_config_check(&c, err, sizeof(err)), LS_OK, "%s", err);
    size_t dd = (size_t)CR_DIM * CR_DIM, vd = (size_t)CR_VOCAB * CR_DIM;
    size_t total = vd + CR_DIM + 4 * dd + CR_DIM + 3 * dd + CR_DIM + vd;
    m->mem = calloc(total, sizeof(float));
    cr_assert_not_null(m->mem);
    memset(&m->ck, 0, sizeof(m->ck));
    m->ck.cfg = c;
    float *p = m->mem;
    float *emb = p, *rms_att = (p += vd), *wq = (p += CR_DIM), *wk = (p += dd), *wv = (p += dd),
          *wo = (p += dd), *rms_ffn = (p += dd), *w1 = (p += CR_DIM), *w2 = (p += dd),
          *w3 = (p += dd), *rms_final = (p += dd), *wcls = (p += CR_DIM);
    for (int v = 0; v < CR_VOCAB; v++)
        emb[(size_t)v * CR_DIM] = 1.0f;
    for (int i = 0; i < CR_DIM; i++)
        rms_att[i] = rms_ffn[i] = 1.0f;
    rms_final[0] = 1.0f;
    uint32_t x = 12345;
    for (int v = 0; v < CR_VOCAB; v++) {
        x = x * 1664525u + 1013904223u;
        float d = -2.0f * (float)(x >> 8) / 16777216.0f; /* [-2, 0) */
        if (v >= 100 && v < 400)
            d = 0.25f; /* 300 equal tokens: cut by top-k and top-p */
        if (v == 5 || v == 700 || v == CR_VOCAB - 1)
            d = 0.75f; /* three equal maxima: greedy takes the lowest id */
        if (v == 2)
            d = NAN;
        wcls[(size_t)v * CR_DIM] = d;
    }
    ckpt_weights_t *w = &m->ck.w;
    w->token_embedding = emb, w->rms_att = rms_att, w->wq = wq, w->wk = wk, w->wv = wv;
    w->wo = wo, w->rms_ffn = rms_ffn, w->w1 = w1, w->w2 = w2, w->w3 = w3;
    w->rms_final = rms_final, w->wcls = wcls;
    return &m->ck;
}

Test(forward_cuda, device_sampling_with_exact_ties_and_nan)
{
    need_cuda();
    crafted_t m;
    const ckpt_t *ck = crafted_open(&m);
    const int batch = 28;
    pair_t p;
    pair_create(&p, ck, batch, batch, batch * 16);

    /* the crafted logits are the same on both backends, and greedy ignores the NaN */
    sampler_t greedy;
    sampler_init(&greedy, 0.0f, 1.0f, 0, 1);
    int s0 = pair_open(&p, 1), tok0 = 3;
    forward_item_t it = item(s0, &tok0, 1, 0, &greedy, 0.5f);
    pair_step(&p, &it, 1, "crafted");
    cr_assert(isnan(p.gpu_logits[2]), "logit 2 is %g", p.gpu_logits[2]);
    cr_assert_eq(p.gpu_tok[0], 5, "greedy picked %d, not the lowest of the tied maxima",
                 p.gpu_tok[0]);
    cr_assert_eq(p.cpu_tok[0], 5);
    pair_close(&p, s0);

    /* sampling: many steps, each rewinding every sequence to position 0 */
    int prompts[28];
    for (int i = 0; i < batch; i++)
        prompts[i] = i;
    check_device_sampling(p.gpu, CR_VOCAB, batch, 12, prompts, 1, true);
    pair_destroy(&p);
    free(m.mem);
}

Test(forward_cuda, create_reports_out_of_device_memory)
{
    need_cuda();
    model_t m;
    /* 64 KiB of KV per block: 4 Mi blocks ask for 256 GiB */
    const ckpt_t *ck = model_open(&m, shape(512, 512, 1, 8, 8, 64, 64, true), 3);
    forward_config_t cfg;
    forward_config_init(&cfg);
    cfg.backend = FORWARD_CUDA;
    cfg.max_batch = 1;
    cfg.max_step_tokens = 16;
    cfg.kv_budget_tokens = (int64_t)16 << 22;
    char err[256] = "";
    forward_t *f = forward_create(ck, &cfg, err, sizeof(err));
    cr_assert_null(f, "a 256 GiB KV cache fit on the device");
    cr_assert_not_null(strstr(err, "out of device memory"), "reason \"%s\"", err);
    /* and the device is still usable afterwards */
    cfg.kv_budget_tokens = 0;
    f = forward_create(ck, &cfg, err, sizeof(err));
    cr_assert_not_null(f, "%s", err);
    forward_destroy(f);
    model_close(&m);
}

/* The attention kernel's shared-memory limit belongs to the kernel, not to one forward
 * object: a second object with a short context must not lower it under the first's
 * 4096-position needs. */
Test(forward_cuda, attention_limit_survives_a_shorter_model)
{
    need_cuda();
    model_t long_m, short_m;
    const ckpt_t *long_ck = model_open(&long_m, shape(128, 256, 1, 1, 1, 128, 4096, true), 41);
    const ckpt_t *short_ck = model_open(&short_m, shape(32, 64, 1, 4, 2, 64, 32, true), 42);
    pair_t p;
    pair_create(&p, long_ck, 1, 512, 4096);
    forward_t *short_f = create(short_ck, FORWARD_CUDA, 1, 16, 32);
    sampler_t greedy;
    sampler_init(&greedy, 0.0f, 1.0f, 0, 1);
    int s = pair_open(&p, 4096);
    static int prompt[512];
    fill_tokens(prompt, 512, 128, 43);
    forward_item_t it = item(s, prompt, 512, 0, &greedy, 0.5f);
    pair_step(&p, &it, 1, "long model after a short one was created");
    forward_destroy(short_f);
    pair_destroy(&p);
    model_close(&short_m);
    model_close(&long_m);
}

/* A coin of 1 (or rounding) leaves the draw past the end of the kept tokens.  With
 * top-k wider than the tokens that have any probability (a low temperature zeroes all
 * but the three tied maxima 5, 700 and 1499; logit 2 is NaN), sampler.c takes the
 * last kept token with probability, 1499; so must the device, rather than a token of
 * probability 0. */
Test(forward_cuda, coin_one_with_top_k_picks_a_token_with_mass)
{
    need_cuda();
    crafted_t m;
    const ckpt_t *ck = crafted_open(&m);
    pair_t p;
    pair_create(&p, ck, 4, 4, 4 * 16);
    const int top_ks[] = {4, 40, 1000, CR_VOCAB - 1};
    for (size_t k = 0; k < sizeof(top_ks) / sizeof(top_ks[0]); k++) {
        sampler_t sk;
        sampler_init(&sk, 0.01f, 1.0f, top_ks[k], 1);
        int seq = pair_open(&p, 1), tok = 7;
        forward_item_t it = item(seq, &tok, 1, 0, &sk, 1.0f);
        char what[64];
        snprintf(what, sizeof(what), "top_k %d, coin 1", top_ks[k]);
        pair_step(&p, &it, 1, what);
        /* what sampler_pick makes of the device's own logits */
        sampler_prob_t *scratch = calloc(CR_VOCAB, sizeof(*scratch));
        cr_assert_not_null(scratch);
        int want = sampler_pick(&sk, p.gpu_logits, CR_VOCAB, 1.0f, scratch);
        free(scratch);
        cr_expect_eq(p.cpu_tok[0], 1499, "%s: cpu picked %d", what, p.cpu_tok[0]);
        cr_expect_eq(want, 1499, "%s: sampler_pick on the device's logits picked %d", what, want);
        cr_expect_eq(p.gpu_tok[0], want, "%s: cuda picked %d, sampler_pick %d", what, p.gpu_tok[0],
                     want);
        pair_close(&p, seq);
    }
    pair_destroy(&p);
    free(m.mem);
}

/* fault_after_steps makes a real illegal-address fault on the device: the step after
 * it must say the device is lost (not a passing INTERNAL), and so must every later one. */
Test(forward_cuda, sticky_device_error_is_reported_as_lost)
{
    need_cuda();
    model_t m;
    const ckpt_t *ck = model_open(&m, shape(32, 64, 1, 4, 2, 64, 32, true), 5);
    forward_config_t cfg;
    forward_config_init(&cfg);
    cfg.backend = FORWARD_CUDA;
    cfg.max_batch = 1;
    cfg.max_step_tokens = 16;
    cfg.fault_after_steps = 2;
    char err[256] = "";
    forward_t *f = forward_create(ck, &cfg, err, sizeof(err));
    cr_assert_not_null(f, "%s", err);
    int seq = forward_seq_open(f, 32);
    cr_assert_geq(seq, 0);
    sampler_t greedy;
    sampler_init(&greedy, 0.0f, 1.0f, 0, 1);
    int tok = 3, out = -1;
    for (int pos = 0; pos < 2; pos++) {
        forward_item_t it = item(seq, &tok, 1, pos, &greedy, 0.5f);
        cr_assert_eq(forward_step(f, &it, 1, &out, NULL), LS_OK, "step %d before the fault", pos);
        cr_assert(!forward_device_lost(f));
    }
    forward_item_t it = item(seq, &tok, 1, 2, &greedy, 0.5f);
    int rc = forward_step(f, &it, 1, &out, NULL);
    cr_assert_eq(rc, LS_ERR_DEVICE, "the step after the fault returned %s", ls_strerror(rc));
    cr_assert(forward_device_lost(f));
    rc = forward_step(f, &it, 1, &out, NULL);
    cr_assert_eq(rc, LS_ERR_DEVICE, "a later step returned %s", ls_strerror(rc));
    forward_destroy(f); /* frees what it can on a poisoned context, without crashing */
    model_close(&m);
}

/* ---- int8 (Q8_0) checkpoints ------------------------------------------------------ */

/*
 * The CUDA backend against ref_forward.c's Q8_0 pass (llama2.c runq.c's arithmetic).
 * Both quantize each matmul input to int8 the same way, but the device sums in another
 * order (groups across lanes, norms and attention in trees, FMA), and an activation
 * whose x / scale lands within rounding of a half step then rounds to the neighbouring
 * int8 value; that moves a logit by up to about 1e-2 of max(1, |logit|) after a few
 * dozen positions (measured on the host by summing the reference's groups in the
 * device's order, with 4e-6 relative noise on every product: 1.1e-2 at worst over 20
 * seeds of the shapes below).  A wrong scale, group or layout moves logits by their
 * own size.
 */
#define Q8_LOGIT_RTOL 5e-2f
#define Q8_MAX_SEQS 8

static const ckpt_t *model_open_q8(model_t *m, ckpt_config_t c, int group_size, uint64_t seed)
{
    char err[256];
    c.group_size = group_size;
    cr_assert_eq(test_tmpdir_make(&m->dir, "llmserve-cuda-q8"), 0, "mkdtemp failed");
    test_tmpdir_file(&m->dir, "model-q8.bin", m->path, sizeof(m->path));
    cr_assert_eq(ckpt_write(m->path, &c, seed, CKPT_FORMAT_Q8_0, err, sizeof(err)), LS_OK,
                 "ckpt_write: %s", err);
    m->ck = ckpt_open(m->path, err, sizeof(err));
    cr_assert_not_null(m->ck, "ckpt_open: %s", err);
    cr_assert_eq(m->ck->format_version, 2);
    cr_assert_eq(m->ck->cfg.group_size, group_size);
    return m->ck;
}

/* The device and one reference pass per sequence id, fed the same tokens. */
typedef struct {
    const ckpt_t *ck;
    forward_t *gpu;
    ref_forward_t *ref[Q8_MAX_SEQS]; /* by sequence id */
    int vocab;
    float *logits; /* [max_batch][vocab] */
    int *tok;      /* [max_batch] the device's picks */
    int *ref_tok;  /* [max_batch] greedy picks of the reference's logits */
    float worst;   /* largest |device - reference| / max(1, max |reference|) seen */
} q8_pair_t;

static void q8_pair_create(q8_pair_t *p, const ckpt_t *ck, int max_batch, int max_step)
{
    cr_assert_leq(max_batch, Q8_MAX_SEQS);
    memset(p, 0, sizeof(*p));
    p->ck = ck;
    p->gpu = create(ck, FORWARD_CUDA, max_batch, max_step, 0);
    cr_assert_str_eq(forward_backend_name(p->gpu), "cuda");
    p->vocab = ck->cfg.vocab_size;
    p->logits = calloc((size_t)max_batch * p->vocab, sizeof(float));
    p->tok = calloc((size_t)max_batch, sizeof(int));
    p->ref_tok = calloc((size_t)max_batch, sizeof(int));
    cr_assert(p->logits && p->tok && p->ref_tok);
}

static void q8_pair_destroy(q8_pair_t *p)
{
    forward_destroy(p->gpu);
    for (int s = 0; s < Q8_MAX_SEQS; s++)
        ref_forward_destroy(p->ref[s]);
    free(p->logits);
    free(p->tok);
    free(p->ref_tok);
}

static int q8_open(q8_pair_t *p, int reserve)
{
    int s = forward_seq_open(p->gpu, reserve);
    cr_assert(s >= 0 && s < Q8_MAX_SEQS, "forward_seq_open(%d) = %d", reserve, s);
    if (!p->ref[s])
        p->ref[s] = ref_forward_create(p->ck); /* positions are rewritten from 0 */
    return s;
}

/* Runs the items on the device and every token of theirs through the references;
 * checks each item's logits and its greedy pick (which may differ only on a near tie
 * of the reference's logits). */
static void q8_step(q8_pair_t *p, const forward_item_t *items, int n, const char *what)
{
    cr_assert_eq(forward_step(p->gpu, items, n, p->tok, p->logits), LS_OK, "%s: cuda step", what);
    for (int i = 0; i < n; i++) {
        const forward_item_t *it = &items[i];
        const float *r = NULL;
        for (int j = 0; j < it->n_tokens; j++)
            r = ref_forward_token(p->ref[it->seq], it->tokens[j], it->pos + j);
        const float *g = p->logits + (size_t)i * p->vocab;
        float max_abs = 0.0f, max_diff = 0.0f;
        int worst = 0, best = 0;
        for (int v = 0; v < p->vocab; v++) {
            cr_assert(isfinite(g[v]), "%s: item %d logit %d is %g on cuda", what, i, v, g[v]);
            max_abs = fmaxf(max_abs, fabsf(r[v]));
            if (fabsf(r[v] - g[v]) > max_diff) {
                max_diff = fabsf(r[v] - g[v]);
                worst = v;
            }
            if (r[v] > r[best])
                best = v;
        }
        float tol = Q8_LOGIT_RTOL * fmaxf(1.0f, max_abs);
        p->worst = fmaxf(p->worst, max_diff / fmaxf(1.0f, max_abs));
        cr_assert_leq(max_diff, tol,
                      "%s: item %d (seq %d pos %d n_tokens %d) logit %d: reference %g cuda %g",
                      what, i, it->seq, it->pos, it->n_tokens, worst, r[worst], g[worst]);
        p->ref_tok[i] = best;
        if (p->tok[i] != best)
            cr_assert_leq(fabsf(r[best] - r[p->tok[i]]), 2.0f * tol,
                          "%s: item %d greedy token reference %d (%g) cuda %d (%g)", what, i, best,
                          r[best], p->tok[i], r[p->tok[i]]);
    }
}

/*
 * One schedule for every Q8_0 shape: n_seqs sequences start with prefill chunks of
 * several lengths (some longer than the matmul's 8-token tile) in one step; the first
 * continues its prompt with a second chunk while the others decode; a late sequence
 * joins mid-way with a chunk of 17; then all decode greedily, every sequence reading
 * the reference's picks.  seq_len must be at least 64.
 */
static void q8_schedule(const ckpt_t *ck, int n_seqs, const char *name)
{
    q8_pair_t p;
    q8_pair_create(&p, ck, n_seqs + 1, 96);
    sampler_t greedy;
    sampler_init(&greedy, 0.0f, 1.0f, 0, 1);
    int vocab = ck->cfg.vocab_size;
    static int prompt[Q8_MAX_SEQS][40];
    for (int s = 0; s < n_seqs + 1; s++)
        fill_tokens(prompt[s], 40, vocab, (uint32_t)(s + 101));
    int seq[Q8_MAX_SEQS], pos[Q8_MAX_SEQS], next[Q8_MAX_SEQS];
    forward_item_t it[Q8_MAX_SEQS];
    for (int s = 0; s < n_seqs; s++) {
        seq[s] = q8_open(&p, 64);
        int len = 1 + (s * 5) % 11; /* 1, 6, 11, 5, 10, ... */
        it[s] = item(seq[s], prompt[s], len, 0, &greedy, 0.5f);
        pos[s] = len;
    }
    q8_step(&p, it, n_seqs, "first prefill");
    for (int s = 0; s < n_seqs; s++)
        next[s] = p.ref_tok[s];

    int late = n_seqs, n_live = n_seqs;
    for (int step = 0; step < 14; step++) {
        char what[80];
        snprintf(what, sizeof(what), "%s step %d", name, step);
        if (step == 5) {
            seq[late] = q8_open(&p, 64);
            pos[late] = 0;
            n_live++;
        }
        for (int s = 0; s < n_live; s++) { /* item s is sequence s */
            if (step == 0 && s == 0)       /* the rest of the first prompt */
                it[s] = item(seq[s], prompt[s] + pos[s], 9, pos[s], &greedy, 0.5f);
            else if (step == 5 && s == late)
                it[s] = item(seq[s], prompt[s], 17, 0, &greedy, 0.5f);
            else
                it[s] = item(seq[s], &next[s], 1, pos[s], &greedy, 0.5f);
        }
        q8_step(&p, it, n_live, what);
        for (int s = 0; s < n_live; s++) {
            pos[s] += it[s].n_tokens;
            next[s] = p.ref_tok[s];
        }
    }
    fprintf(stderr, "q8 %s: largest logit difference %.3g of max(1, |logit|) (bound %.0e)\n", name,
            (double)p.worst, (double)Q8_LOGIT_RTOL);
    q8_pair_destroy(&p);
}

/* Grouped-query attention (6 query heads over 2 KV heads), an unshared classifier and
 * group size 12: whole 4-byte words per group (__dp4a on int32 loads). */
Test(forward_cuda, q8_gqa_group12_matches_reference)
{
    need_cuda();
    model_t m;
    const ckpt_t *ck = model_open_q8(&m, shape(96, 288, 2, 6, 2, 300, 64, false), 12, 51);
    q8_schedule(ck, 3, "gqa-g12");
    model_close(&m);
}

/* Group size 64 (int4 loads, four __dp4a each), a shared classifier (the embedding's
 * int8 rows serve both), multi-head attention and a batch of six sequences. */
Test(forward_cuda, q8_group64_batch_matches_reference)
{
    need_cuda();
    model_t m;
    const ckpt_t *ck = model_open_q8(&m, shape(128, 384, 2, 8, 8, 512, 64, true), 64, 52);
    q8_schedule(ck, 6, "mha-g64");
    model_close(&m);
}

/* Group size 8 and one KV head for four query heads (multi-query), three layers. */
Test(forward_cuda, q8_mqa_group8_matches_reference)
{
    need_cuda();
    model_t m;
    const ckpt_t *ck = model_open_q8(&m, shape(64, 160, 3, 4, 1, 256, 64, true), 8, 53);
    q8_schedule(ck, 2, "mqa-g8");
    model_close(&m);
}

/* Group size 6: not a multiple of 4 bytes, so the byte-by-byte path. */
Test(forward_cuda, q8_group6_matches_reference)
{
    need_cuda();
    model_t m;
    const ckpt_t *ck = model_open_q8(&m, shape(48, 96, 2, 4, 2, 200, 64, false), 6, 54);
    q8_schedule(ck, 3, "gqa-g6");
    model_close(&m);
}
