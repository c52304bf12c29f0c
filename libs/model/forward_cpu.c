/*
 * forward_cpu.c - the CPU backend: the llama forward pass over a whole step at once.
 *
 * The step's tokens (every item's, prefill chunks included) are concatenated into
 * n_tok rows, and each weight matrix is multiplied against all rows in one pass
 * (forward_cpu_matmul.c), so the weights, which dominate memory traffic, are read once
 * per step rather than once per sequence.  Threads split each matrix by output rows.
 * Attention is per sequence over its own paged KV (work items are (item, head) pairs
 * handed out through an atomic counter), so its cost grows with each sequence's
 * length, not with the batch.  Only each item's last row goes through the final norm
 * and the classifier.
 *
 * Phases of a layer (forward_cpu_pool.h: every phase is cut into chunks that threads
 * claim; the next phase starts when all chunks of this one are done):
 *   1. rms_att norm of x into xb; q, k, v = xb * wq, wk, wv; RoPE on q and k; k and v
 *      into the KV blocks                 (chunks of output rows)
 *   2. attention into att                 (one (item, head) pair per chunk)
 *   3. x += att * wo                      (output rows)
 *   4. rms_ffn norm of x into xb; hb = silu(xb * w1) * (xb * w3)   (hidden rows)
 *   5. x += hb * w2                       (output rows)
 * then the final norm of last rows with the classifier (vocab rows), and sampling
 * (one item per chunk).  A thread normalises all rows into its own xb when it takes
 * its first chunk of a phase: a few microseconds of arithmetic, where a shared xb
 * would need a phase of its own, whose hand-off on a decode step costs more than the
 * norm itself.
 *
 * KV storage: block b holds, for each layer, FORWARD_KV_BLOCK key rows then
 * FORWARD_KV_BLOCK value rows of kv_dim floats.  The weights are not copied: they are
 * read in place from the checkpoint's read-only mapping, which processes share.
 *
 * Int8 (Q8_0) checkpoints take the same phases with forward_cpu_q8.h's matmul: a
 * thread quantizes a phase's input rows into its own buffer at its first chunk (where
 * the fp32 kernels may transpose them), embedding rows are dequantized as they are
 * copied, and everything between the matmuls (norms, RoPE, attention, KV, SwiGLU,
 * sampling) stays fp32, as in llama2.c's runq.c.
 * All buffers are sized at create time for max_step_tokens and max_batch.
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "base/log.h"
#include "model/forward_backend.h"
#include "model/forward_cpu_matmul.h"
#include "model/forward_cpu_pool.h"
#include "model/forward_cpu_q8.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Output rows are split between threads in multiples of this: even (RoPE rotates
 * pairs of rows within one thread's share) and a whole number of cache lines. */
#define CPU_ROW_ALIGN 16

typedef struct {
    const ckpt_t *ck;
    ckpt_config_t c;
    forward__pool_t *pool;
    int n_threads;
    int max_tok; /* max_step_tokens */
    int max_batch;
    char device[128];

    /* Q8_0 weights (ck->format_version 2). */
    bool q8;
    forward_q8_kernel_t q8k;
    forward_q8mat_t *qm; /* [n_layers][CPU_MATS] then the classifier */
    int32_t *q8_bias;    /* the VNNI kernel's per-block sums of every matrix */

    float *kv;           /* [n_blocks][n_layers][2][FORWARD_KV_BLOCK][kv_dim] */
    size_t block_floats; /* floats per block */
    size_t layer_floats; /* floats per layer within a block */
    float *rope_cos;     /* [seq_len][head_dim / 2] */
    float *rope_sin;

    /* Step scratch, rows of the concatenated tokens. */
    float *x;  /* [max_tok][dim] residual stream */
    float *xb; /* [n_threads][max_tok][dim] normed input of a matmul, per thread */
    float *xt; /* [n_threads][xt_floats] a phase's input rows in the kernel's layout
                  (Q8_0: quantized) */
    size_t xt_floats;
    float *q;             /* [max_tok][dim] */
    float *k;             /* [max_tok][kv_dim] */
    float *v;             /* [max_tok][kv_dim] */
    float *att;           /* [max_tok][dim] attention output */
    float *hb;            /* [max_tok][hidden_dim] */
    float *hb2;           /* [max_tok][hidden_dim] */
    float *xf;            /* [n_threads][max_batch][dim] final-normed last rows, per thread */
    float *logits;        /* [max_batch][vocab_size] */
    float *scores;        /* [n_threads][seq_len] attention weights */
    sampler_prob_t *pick; /* [n_threads][vocab_size] sampler scratch */
    int *row_item;        /* [max_tok] item of each row */
    int *row_pos;         /* [max_tok] position of each row */
    int *item_row;        /* [max_batch] first row of each item */

    /* The step in progress (set by cpu_step before the parallel region). */
    const forward_item_t *items;
    int n_items;
    int n_tok;
    const int *const *tables;
    int *out_tokens;
    float *out_logits;
    /* Rows per chunk and chunks per matrix, fixed at create time. */
    int q_rows, q_chunks;   /* over dim (wq) */
    int kv_rows, kv_chunks; /* over kv_dim (wk and wv together) */
    int d_rows, d_chunks;   /* over dim (wo, w2) */
    int h_rows, h_chunks;   /* over hidden_dim (w1 and w3 together) */
    int v_rows, v_chunks;   /* over vocab_size (wcls) */
    int n_phases;           /* CPU_PHASES_PER_LAYER * n_layers + 2 */
    int *phase_chunks;      /* [n_phases] chunks of each phase of the step */
} cpu_t;

/* Phases: five per layer, then the classifier and sampling. */
enum { PH_QKV, PH_ATT, PH_WO, PH_FFN, PH_W2, CPU_PHASES_PER_LAYER };

/* The matrices of a layer, and the classifier after the last layer's. */
enum { M_Q, M_K, M_V, M_O, M_1, M_2, M_3, CPU_MATS, M_CLS = CPU_MATS };

/* A phase's input rows, in the form the weights' kernels read. */
typedef struct {
    forward_rows_t f;   /* fp32 weights */
    forward_q8rows_t q; /* Q8_0 weights */
} cpu_rows_t;

/* Chunks per thread and matrix: enough that a thread slowed down by another process
 * sheds work to the others, few enough that claiming stays a small cost. */
#define CPU_CHUNKS_PER_THREAD 4

static void *alloc_floats(size_t n)
{
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes ? bytes : 64);
}

/* Rows per chunk so that n rows make about chunks chunks, a multiple of CPU_ROW_ALIGN. */
static int chunk_rows(int n, int chunks)
{
    int rows = (n + chunks - 1) / chunks;
    rows = (rows + CPU_ROW_ALIGN - 1) / CPU_ROW_ALIGN * CPU_ROW_ALIGN;
    return rows > 0 ? rows : CPU_ROW_ALIGN;
}

/* [lo, hi) of chunk c of n rows in chunks of rows. */
static void chunk_range(int n, int rows, int c, int *lo, int *hi)
{
    *lo = c * rows;
    *hi = *lo + rows < n ? *lo + rows : n;
}

/* Prepares rows x ([n_tok][k_dim]) for the matmuls of a phase, in thread buffer buf. */
static void rows_make(const cpu_t *cp, cpu_rows_t *in, const float *x, int n_tok, int k_dim,
                      float *buf)
{
    if (cp->q8)
        forward__q8rows_make(&in->q, cp->q8k, x, k_dim, n_tok, k_dim, cp->c.group_size, buf);
    else
        forward__rows_make(&in->f, x, k_dim, n_tok, k_dim, buf);
}

/* Layer l's fp32 matrix m (M_CLS: the classifier). */
static const float *f32_matrix(const cpu_t *cp, int m, int l)
{
    const ckpt_weights_t *w = &cp->ck->w;
    size_t dim = (size_t)cp->c.dim, kvd = (size_t)cp->c.kv_dim, hid = (size_t)cp->c.hidden_dim;
    switch (m) {
    case M_Q:
        return w->wq + (size_t)l * dim * dim;
    case M_K:
        return w->wk + (size_t)l * kvd * dim;
    case M_V:
        return w->wv + (size_t)l * kvd * dim;
    case M_O:
        return w->wo + (size_t)l * dim * dim;
    case M_1:
        return w->w1 + (size_t)l * hid * dim;
    case M_2:
        return w->w2 + (size_t)l * dim * hid;
    case M_3:
        return w->w3 + (size_t)l * hid * dim;
    default:
        return w->wcls;
    }
}

/* y rows [lo, hi) = (or += when accumulate) layer l's matrix m times the rows in. */
static void mm(const cpu_t *cp, int m, int l, int lo, int hi, const cpu_rows_t *in, float *y,
               int ldy, bool accumulate)
{
    if (cp->q8) {
        const forward_q8mat_t *qm = &cp->qm[m == M_CLS ? cp->c.n_layers * CPU_MATS
                                                       : l * CPU_MATS + m];
        forward__matmul_q8(qm, lo, hi, &in->q, y, ldy, accumulate);
        return;
    }
    forward__matmul_rows(f32_matrix(cp, m, l), lo, hi, &in->f, y, ldy, accumulate);
}

static void rmsnorm(float *o, const float *x, const float *w, int n)
{
    float ss = 0.0f;
    for (int j = 0; j < n; j++)
        ss += x[j] * x[j];
    ss /= (float)n;
    ss += 1e-5f;
    ss = 1.0f / sqrtf(ss);
    for (int j = 0; j < n; j++)
        o[j] = w[j] * (ss * x[j]);
}

static void softmax(float *x, int n)
{
    float max = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > max)
            max = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}

static float *kv_key(const cpu_t *cp, const int *table, int layer, int pos)
{
    float *blk = cp->kv + (size_t)table[pos / FORWARD_KV_BLOCK] * cp->block_floats +
                 (size_t)layer * cp->layer_floats;
    return blk + (size_t)(pos % FORWARD_KV_BLOCK) * (size_t)cp->c.kv_dim;
}

static float *kv_value(const cpu_t *cp, const int *table, int layer, int pos)
{
    return kv_key(cp, table, layer, pos) + (size_t)FORWARD_KV_BLOCK * (size_t)cp->c.kv_dim;
}

/* Rotates entries [lo, hi) (lo even) of a q or k row at position pos, pairs (2i, 2i+1). */
static void rope(const cpu_t *cp, float *row, int lo, int hi, int pos)
{
    int hd = cp->c.head_dim;
    const float *cs = cp->rope_cos + (size_t)pos * (size_t)(hd / 2);
    const float *sn = cp->rope_sin + (size_t)pos * (size_t)(hd / 2);
    for (int i = lo; i < hi; i += 2) {
        int f = (i % hd) / 2;
        float v0 = row[i], v1 = row[i + 1];
        row[i] = v0 * cs[f] - v1 * sn[f];
        row[i + 1] = v0 * sn[f] + v1 * cs[f];
    }
}

/* Thread t's xb: every row of x normalised with weight. */
static float *norm_rows(cpu_t *cp, const float *weight, int t)
{
    int dim = cp->c.dim;
    float *xb = cp->xb + (size_t)t * (size_t)cp->max_tok * (size_t)dim;
    for (int r = 0; r < cp->n_tok; r++)
        rmsnorm(xb + (size_t)r * dim, cp->x + (size_t)r * dim, weight, dim);
    return xb;
}

/* Phase 1, chunk c: rows of q (c < q_chunks) or of k and v, for every token. */
static void chunk_qkv(cpu_t *cp, int layer, int c, const cpu_rows_t *xb)
{
    int dim = cp->c.dim, kvd = cp->c.kv_dim, n = cp->n_tok;
    int lo, hi;
    if (c < cp->q_chunks) {
        chunk_range(dim, cp->q_rows, c, &lo, &hi);
        mm(cp, M_Q, layer, lo, hi, xb, cp->q, dim, false);
        for (int r = 0; r < n; r++)
            rope(cp, cp->q + (size_t)r * dim, lo, hi, cp->row_pos[r]);
        return;
    }
    chunk_range(kvd, cp->kv_rows, c - cp->q_chunks, &lo, &hi);
    mm(cp, M_K, layer, lo, hi, xb, cp->k, kvd, false);
    mm(cp, M_V, layer, lo, hi, xb, cp->v, kvd, false);
    for (int r = 0; r < n; r++) {
        int pos = cp->row_pos[r];
        const int *table = cp->tables[cp->row_item[r]];
        float *kr = cp->k + (size_t)r * kvd;
        rope(cp, kr, lo, hi, pos);
        memcpy(kv_key(cp, table, layer, pos) + lo, kr + lo, (size_t)(hi - lo) * sizeof(float));
        memcpy(kv_value(cp, table, layer, pos) + lo, cp->v + (size_t)r * kvd + lo,
               (size_t)(hi - lo) * sizeof(float));
    }
}

/* Phase 2 for one (item, head): causal attention of the item's rows over its KV. */
static void attend(cpu_t *cp, int layer, int item, int head, float *scores)
{
    const ckpt_config_t *c = &cp->c;
    const forward_item_t *it = &cp->items[item];
    const int *table = cp->tables[item];
    int hd = c->head_dim;
    int kvh = head / (c->n_heads / c->n_kv_heads);
    float scale = 1.0f / sqrtf((float)hd);
    int row0 = cp->item_row[item];
    for (int j = 0; j < it->n_tokens; j++) {
        int pos = it->pos + j;
        const float *q = cp->q + (size_t)(row0 + j) * c->dim + (size_t)head * hd;
        /* A KV block's rows are kv_dim floats apart, so each block is one kernel call. */
        for (int p = 0; p <= pos; p += FORWARD_KV_BLOCK) {
            int n = pos + 1 - p < FORWARD_KV_BLOCK ? pos + 1 - p : FORWARD_KV_BLOCK;
            forward__dots(q, kv_key(cp, table, layer, p) + (size_t)kvh * hd, (size_t)c->kv_dim, n,
                          hd, scale, scores + p);
        }
        softmax(scores, pos + 1);
        float *o = cp->att + (size_t)(row0 + j) * c->dim + (size_t)head * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
        for (int p = 0; p <= pos; p += FORWARD_KV_BLOCK) {
            int n = pos + 1 - p < FORWARD_KV_BLOCK ? pos + 1 - p : FORWARD_KV_BLOCK;
            forward__axpys(o, scores + p, kv_value(cp, table, layer, p) + (size_t)kvh * hd,
                           (size_t)c->kv_dim, n, hd);
        }
    }
}

/* Phase 4, chunk c: hidden rows of w1 and w3, then SwiGLU on them. */
static void chunk_ffn_up(cpu_t *cp, int layer, int c, const cpu_rows_t *xb)
{
    int hid = cp->c.hidden_dim, n = cp->n_tok;
    int lo, hi;
    chunk_range(hid, cp->h_rows, c, &lo, &hi);
    mm(cp, M_1, layer, lo, hi, xb, cp->hb, hid, false);
    mm(cp, M_3, layer, lo, hi, xb, cp->hb2, hid, false);
    for (int r = 0; r < n; r++) {
        float *h1 = cp->hb + (size_t)r * hid;
        const float *h3 = cp->hb2 + (size_t)r * hid;
        for (int i = lo; i < hi; i++) {
            float g = h1[i];
            h1[i] = g * (1.0f / (1.0f + expf(-g))) * h3[i];
        }
    }
}

/* The classifier's input on thread t: the final norm of each item's last row. */
static float *final_rows(cpu_t *cp, int t)
{
    int dim = cp->c.dim;
    float *xf = cp->xf + (size_t)t * (size_t)cp->max_batch * (size_t)dim;
    for (int i = 0; i < cp->n_items; i++) {
        int last = cp->item_row[i] + cp->items[i].n_tokens - 1;
        rmsnorm(xf + (size_t)i * dim, cp->x + (size_t)last * dim, cp->ck->w.rms_final, dim);
    }
    return xf;
}

static void chunk_sample(cpu_t *cp, int i, int t)
{
    int vocab = cp->c.vocab_size;
    float *lg = cp->logits + (size_t)i * vocab;
    if (cp->out_logits)
        memcpy(cp->out_logits + (size_t)i * vocab, lg, (size_t)vocab * sizeof(float));
    cp->out_tokens[i] = sampler_pick(cp->items[i].sampler, lg, vocab, cp->items[i].coin,
                                     cp->pick + (size_t)t * (size_t)vocab);
}

/* Does thread t's share of one phase: claims chunks until none is left, then waits
 * for the others' chunks.  Shared state is read only inside a claimed chunk (a thread
 * late from the previous step claims nothing). */
static void run_phase(cpu_t *cp, int t, int phase)
{
    const ckpt_weights_t *w = &cp->ck->w;
    int dim = cp->c.dim, hid = cp->c.hidden_dim;
    int layer = phase / CPU_PHASES_PER_LAYER, kind = phase % CPU_PHASES_PER_LAYER;
    bool last_two = layer == cp->c.n_layers;
    /* This thread's input rows of the phase's matmuls (normed where the phase norms),
     * made at its first chunk, in the layout the kernels want. */
    cpu_rows_t in;
    bool have_in = false;
    float *xt = cp->xt + (size_t)t * cp->xt_floats;
    int c, lo, hi;
    while ((c = forward__pool_claim(cp->pool, t, phase)) >= 0) {
        if (last_two && kind == 0) {
            if (!have_in)
                rows_make(cp, &in, final_rows(cp, t), cp->n_items, dim, xt);
            have_in = true;
            chunk_range(cp->c.vocab_size, cp->v_rows, c, &lo, &hi);
            mm(cp, M_CLS, 0, lo, hi, &in, cp->logits, cp->c.vocab_size, false);
        } else if (last_two) {
            chunk_sample(cp, c, t);
        } else if (kind == PH_QKV) {
            if (!have_in)
                rows_make(cp, &in, norm_rows(cp, w->rms_att + (size_t)layer * dim, t), cp->n_tok,
                          dim, xt);
            have_in = true;
            chunk_qkv(cp, layer, c, &in);
        } else if (kind == PH_ATT) {
            attend(cp, layer, c / cp->c.n_heads, c % cp->c.n_heads,
                   cp->scores + (size_t)t * (size_t)cp->c.seq_len);
        } else if (kind == PH_WO) {
            if (!have_in)
                rows_make(cp, &in, cp->att, cp->n_tok, dim, xt);
            have_in = true;
            chunk_range(dim, cp->d_rows, c, &lo, &hi);
            mm(cp, M_O, layer, lo, hi, &in, cp->x, dim, true);
        } else if (kind == PH_FFN) {
            if (!have_in)
                rows_make(cp, &in, norm_rows(cp, w->rms_ffn + (size_t)layer * dim, t), cp->n_tok,
                          dim, xt);
            have_in = true;
            chunk_ffn_up(cp, layer, c, &in);
        } else {
            if (!have_in)
                rows_make(cp, &in, cp->hb, cp->n_tok, hid, xt);
            have_in = true;
            chunk_range(dim, cp->d_rows, c, &lo, &hi);
            mm(cp, M_2, layer, lo, hi, &in, cp->x, dim, true);
        }
        forward__pool_done(cp->pool, t, phase);
    }
    forward__pool_wait(cp->pool, t, phase);
}

/* The whole step, run by every thread t. */
static void step_body(void *arg, int t)
{
    cpu_t *cp = arg;
    for (int phase = 0; phase < cp->n_phases; phase++)
        run_phase(cp, t, phase);
}

static int cpu_step(void *impl, const forward_item_t *items, int n, const int *const *tables,
                    int *out_tokens, float *logits)
{
    cpu_t *cp = impl;
    int row = 0, dim = cp->c.dim;
    LS_ASSERT(n <= cp->max_batch);
    for (int l = 0; l < cp->c.n_layers; l++)
        cp->phase_chunks[l * CPU_PHASES_PER_LAYER + PH_ATT] = n * cp->c.n_heads;
    cp->phase_chunks[cp->n_phases - 1] = n;
    /* From here on no thread late from the previous step can claim work, so the step's
     * state may change. */
    forward__pool_prepare(cp->pool, cp->phase_chunks, cp->n_phases);
    /* The embedding rows are copied here, before the workers start: a memcpy of at most
     * max_step_tokens rows is cheaper than the barrier a parallel copy would need. */
    for (int i = 0; i < n; i++) {
        cp->item_row[i] = row;
        for (int j = 0; j < items[i].n_tokens; j++) {
            LS_ASSERT(row < cp->max_tok);
            cp->row_item[row] = i;
            cp->row_pos[row] = items[i].pos + j;
            float *xr = cp->x + (size_t)row * dim;
            if (cp->q8)
                forward__q8_row(&cp->ck->q8.token_embedding, dim, cp->c.group_size,
                                items[i].tokens[j], xr);
            else
                memcpy(xr, cp->ck->w.token_embedding + (size_t)items[i].tokens[j] * dim,
                       (size_t)dim * sizeof(float));
            row++;
        }
    }
    cp->items = items;
    cp->n_items = n;
    cp->n_tok = row;
    cp->tables = tables;
    cp->out_tokens = out_tokens;
    cp->out_logits = logits;
    forward__pool_run(cp->pool);
    return LS_OK;
}

static void cpu_destroy(void *impl)
{
    cpu_t *cp = impl;
    if (!cp)
        return;
    forward__pool_destroy(cp->pool);
    free(cp->kv);
    free(cp->rope_cos);
    free(cp->rope_sin);
    free(cp->x);
    free(cp->xb);
    free(cp->xt);
    free(cp->q);
    free(cp->k);
    free(cp->v);
    free(cp->att);
    free(cp->hb);
    free(cp->hb2);
    free(cp->xf);
    free(cp->logits);
    free(cp->scores);
    free(cp->pick);
    free(cp->row_item);
    free(cp->row_pos);
    free(cp->item_row);
    free(cp->phase_chunks);
    free(cp->qm);
    free(cp->q8_bias);
    free(cp);
}

/* Layer l's Q8_0 matrix m (M_CLS: the classifier) and its shape. */
static const ckpt_q8_t *q8_matrix(const cpu_t *cp, int m, int l, int *rows, int *cols)
{
    const ckpt_q8_weights_t *q8 = &cp->ck->q8;
    int dim = cp->c.dim, kvd = cp->c.kv_dim, hid = cp->c.hidden_dim;
    *cols = m == M_2 ? hid : dim;
    *rows = m == M_K || m == M_V ? kvd : m == M_1 || m == M_3 ? hid : m == M_CLS ? cp->c.vocab_size
                                                                                 : dim;
    switch (m) {
    case M_Q:
        return &q8->wq[l];
    case M_K:
        return &q8->wk[l];
    case M_V:
        return &q8->wv[l];
    case M_O:
        return &q8->wo[l];
    case M_1:
        return &q8->w1[l];
    case M_2:
        return &q8->w2[l];
    case M_3:
        return &q8->w3[l];
    default:
        return &q8->wcls;
    }
}

/* The Q8_0 matrices of every layer and the classifier, with the per-block sums the
 * VNNI kernel starts from (computed here once: one pass over the int8 weights). */
static int q8_setup(cpu_t *cp, char *err, size_t err_len)
{
    int n = cp->c.n_layers * CPU_MATS + 1, rows, cols;
    cp->qm = calloc((size_t)n, sizeof(*cp->qm));
    size_t bias_total = 0;
    for (int i = 0; i < n; i++) {
        q8_matrix(cp, i == n - 1 ? M_CLS : i % CPU_MATS, i / CPU_MATS, &rows, &cols);
        bias_total += forward__q8_bias_count(rows, cols, cp->c.group_size);
    }
    if (bias_total)
        cp->q8_bias = malloc(bias_total * sizeof(int32_t));
    if (!cp->qm || (bias_total && !cp->q8_bias)) {
        snprintf(err, err_len, "out of memory for the int8 kernels' tables (%zu MiB)",
                 bias_total * sizeof(int32_t) >> 20);
        return LS_ERR_NOMEM;
    }
    int32_t *bias = cp->q8_bias;
    for (int i = 0; i < n; i++) {
        const ckpt_q8_t *m =
            q8_matrix(cp, i == n - 1 ? M_CLS : i % CPU_MATS, i / CPU_MATS, &rows, &cols);
        cp->qm[i].q = m->q;
        cp->qm[i].s = m->s;
        size_t count = forward__q8_bias_count(rows, cols, cp->c.group_size);
        if (count) {
            forward__q8_bias_make(cp->q8k, m, rows, cols, cp->c.group_size, bias);
            cp->qm[i].bias = bias;
            bias += count;
        }
    }
    return LS_OK;
}

static void *cpu_create(const ckpt_t *ck, const forward_config_t *cfg, int n_blocks, char *err,
                        size_t err_len)
{
    forward__kernels_init();
    cpu_t *cp = calloc(1, sizeof(*cp));
    if (!cp) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    cp->ck = ck;
    cp->c = ck->cfg;
    const ckpt_config_t *c = &cp->c;
    size_t T = (size_t)cfg->max_step_tokens, B = (size_t)cfg->max_batch;
    size_t dim = (size_t)c->dim, kvd = (size_t)c->kv_dim, hid = (size_t)c->hidden_dim;
    size_t vocab = (size_t)c->vocab_size, hd = (size_t)c->head_dim;
    cp->max_tok = cfg->max_step_tokens;
    cp->max_batch = cfg->max_batch;
    cp->n_threads = cfg->threads;

    cp->layer_floats = 2 * (size_t)FORWARD_KV_BLOCK * kvd;
    cp->block_floats = (size_t)c->n_layers * cp->layer_floats;
    /* The KV store is allocated but not touched: its pages are committed as sequences
     * first write them, so a generous budget costs address space, not memory. */
    cp->kv = alloc_floats((size_t)n_blocks * cp->block_floats);
    cp->rope_cos = alloc_floats((size_t)c->seq_len * (hd / 2));
    cp->rope_sin = alloc_floats((size_t)c->seq_len * (hd / 2));
    cp->x = alloc_floats(T * dim);
    size_t nt = (size_t)cfg->threads;
    cp->xb = alloc_floats(nt * T * dim);
    int widest = (int)(hid > dim ? hid : dim);
    cp->q8 = ck->format_version == 2;
    if (cp->q8) {
        cp->q8k = forward__q8_kernel(c->group_size);
        /* bytes as floats, each thread's share a whole number of cache lines */
        size_t bytes = forward__q8rows_bytes((int)T, widest, c->group_size);
        cp->xt_floats = (bytes + 63) / 64 * 16;
    } else {
        cp->xt_floats = forward__rows_floats((int)T, widest);
    }
    cp->xt = alloc_floats(nt * cp->xt_floats);
    cp->q = alloc_floats(T * dim);
    cp->k = alloc_floats(T * kvd);
    cp->v = alloc_floats(T * kvd);
    cp->att = alloc_floats(T * dim);
    cp->hb = alloc_floats(T * hid);
    cp->hb2 = alloc_floats(T * hid);
    cp->xf = alloc_floats(nt * B * dim);
    cp->logits = alloc_floats(B * vocab);
    cp->scores = alloc_floats((size_t)cp->n_threads * (size_t)c->seq_len);
    cp->pick = malloc((size_t)cp->n_threads * vocab * sizeof(sampler_prob_t));
    cp->row_item = malloc(T * sizeof(int));
    cp->row_pos = malloc(T * sizeof(int));
    cp->item_row = malloc(B * sizeof(int));
    cp->n_phases = CPU_PHASES_PER_LAYER * c->n_layers + 2;
    cp->phase_chunks = calloc((size_t)cp->n_phases, sizeof(int));
    if (!cp->kv || !cp->rope_cos || !cp->rope_sin || !cp->x || !cp->xb || !cp->xt || !cp->q ||
        !cp->k || !cp->v || !cp->att || !cp->hb || !cp->hb2 || !cp->xf || !cp->logits ||
        !cp->scores || !cp->pick || !cp->row_item || !cp->row_pos || !cp->item_row ||
        !cp->phase_chunks) {
        snprintf(err, err_len, "out of memory for the KV cache (%d blocks, %zu MiB) or scratch",
                 n_blocks, (size_t)n_blocks * cp->block_floats * sizeof(float) >> 20);
        goto out_destroy;
    }
    if (cp->q8 && q8_setup(cp, err, err_len) != LS_OK)
        goto out_destroy;
    int per = CPU_CHUNKS_PER_THREAD * cp->n_threads;
    cp->q_rows = chunk_rows(c->dim, per);
    cp->q_chunks = (c->dim + cp->q_rows - 1) / cp->q_rows;
    cp->kv_rows = chunk_rows(c->kv_dim, per);
    cp->kv_chunks = (c->kv_dim + cp->kv_rows - 1) / cp->kv_rows;
    cp->d_rows = cp->q_rows;
    cp->d_chunks = cp->q_chunks;
    cp->h_rows = chunk_rows(c->hidden_dim, per);
    cp->h_chunks = (c->hidden_dim + cp->h_rows - 1) / cp->h_rows;
    cp->v_rows = chunk_rows(c->vocab_size, per);
    cp->v_chunks = (c->vocab_size + cp->v_rows - 1) / cp->v_rows;
    for (int l = 0; l < c->n_layers; l++) {
        int *ph = cp->phase_chunks + l * CPU_PHASES_PER_LAYER;
        ph[PH_QKV] = cp->q_chunks + cp->kv_chunks;
        ph[PH_WO] = cp->d_chunks;
        ph[PH_FFN] = cp->h_chunks;
        ph[PH_W2] = cp->d_chunks;
    }
    cp->phase_chunks[cp->n_phases - 2] = cp->v_chunks;

    /* llama2.c's rotary table, computed with the same float expressions as its forward
     * pass so that both agree to the last bit (the CUDA backend uploads the same). */
    forward__rope_table(c->seq_len, (int)hd, cp->rope_cos, cp->rope_sin);

    cp->pool = forward__pool_create(cp->n_threads, cp->n_phases, step_body, cp, err, err_len);
    if (!cp->pool)
        goto out_destroy;
    if (cp->q8)
        snprintf(cp->device, sizeof(cp->device), "%d threads, int8 %s kernels (Q8_0, group %d)",
                 cp->n_threads, forward__q8_kernel_name(cp->q8k), c->group_size);
    else
        snprintf(cp->device, sizeof(cp->device), "%d threads, %s kernels", cp->n_threads,
                 forward__kernels_name());
    return cp;

out_destroy:
    cpu_destroy(cp);
    return NULL;
}

static const char *cpu_device_name(void *impl)
{
    return ((cpu_t *)impl)->device;
}

const forward__backend_t forward__cpu = {
    .name = "cpu",
    .create = cpu_create,
    .destroy = cpu_destroy,
    .step = cpu_step,
    .device_name = cpu_device_name,
};
