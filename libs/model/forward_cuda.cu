/*
 * forward_cuda.cu - the CUDA backend of the batched forward pass.
 *
 * create copies the weights to the device once (fp32, or int8 for Q8_0 checkpoints:
 * see below), allocates the paged KV cache and every scratch buffer for the largest
 * step (max_step_tokens tokens over max_batch items), pinned host staging for a step's
 * inputs and outputs, and a cuBLAS workspace; then it runs one small warm-up step so
 * the kernels and cuBLAS are loaded before the first real step.  step allocates
 * nothing: it packs the items into the pinned buffer, sends it with one copy, enqueues
 * the whole pass on one stream and waits once for the picked tokens.
 *
 * A step treats the tokens of all its items as one matrix of T rows (prefill chunks
 * and decode tokens alike), so every weight matrix is read once per step by one
 * cuBLAS GEMM.  q, k and v come from one GEMM over a fused [wq; wk; wv] matrix and
 * gate and up from one over [w1; w3]; wo and w2 accumulate straight into the residual
 * stream (beta = 1).  Kernels do the rest: embedding gather, RMSNorm, RoPE fused with
 * the KV-cache write, attention over each sequence's pages, SwiGLU, and sampling.
 * Only each item's last token goes through the final norm and the classifier.
 *
 * GEMMs run in plain fp32 (CUBLAS_DEFAULT_MATH, no TF32), so logits differ from the
 * CPU backend's by summation order only (the test allows 1e-3 relative).  TF32 or
 * fp16/bf16 weights (GemmEx, half the memory and bandwidth) are the next step for
 * speed; they need a looser tolerance in tests/unit/model/test_forward_cuda.c, so they
 * would come with their own switch.
 *
 * int8 (Q8_0, ak42 version 2) checkpoints keep their matrices int8 on the device (a
 * quarter of the fp32 bytes plus one fp32 scale per group) in the same fused layouts,
 * and run llama2.c runq.c's arithmetic rather than cuBLAS: each matmul's input rows
 * are quantized per group on the device (q8_quantize_kernel), and q8_matmul_kernel
 * sums each group's int8 products in int32 with __dp4a and adds them in fp32 times
 * both scales.  The embedding row of each token is dequantized when the step starts.
 * Everything else (norms, RoPE, attention, KV cache, SwiGLU, sampling) is the fp32
 * path's.  Logits follow ref_forward.c's Q8_0 pass up to summation order, which can
 * move an activation to the neighbouring int8 value (the test allows for it).
 *
 * Threads: as forward.h says, one thread at a time uses a forward_t; step selects
 * the device itself, so that thread need not be the one that created it.
 */

/* log.h is C11 (_Noreturn); nvcc's C++ front end spells it [[noreturn]]. */
#define _Noreturn [[noreturn]]
extern "C" {
#include "base/err.h"
#include "base/log.h"
#include "model/forward_backend.h"
}
#undef _Noreturn

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "forward_cuda"

#define KVB FORWARD_KV_BLOCK
#define NORM_THREADS 256                          /* embedding, RMSNorm, RoPE/KV write, SwiGLU */
#define ATT_THREADS 128                           /* one block per (token, query head) */
#define SAMPLE_THREADS 1024                       /* one block per item */
#define CUBLAS_WORKSPACE_BYTES ((size_t)32 << 20) /* what cuBLAS asks for on Hopper */
#define RMS_EPS 1e-5f

/* ---- reductions ----------------------------------------------------------------- */

/* Every lane ends with the same value: the xor butterfly adds the same pairs in every
 * lane, so block-wide decisions taken on the result are uniform. */
__device__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ int warp_sum_int(int v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Block-wide reductions for blockDim.x a multiple of 32; red holds 32 entries of
 * shared memory.  Every thread must call them and every thread gets the result. */
__device__ float block_sum(float v, float *red)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* the previous call's readers are done with red */
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    return warp_sum(lane < n_warps ? red[lane] : 0.0f);
}

__device__ float block_max(float v, float *red)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    return warp_max(lane < n_warps ? red[lane] : -INFINITY);
}

__device__ int block_sum_int(int v, int *red)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum_int(v);
    __syncthreads();
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    return warp_sum_int(lane < n_warps ? red[lane] : 0);
}

/* Largest v, lowest index among equals (what a left-to-right scan with ">" keeps). */
__device__ void argmax_merge(float *v, int *i, float ov, int oi)
{
    if (ov > *v || (ov == *v && oi < *i)) {
        *v = ov;
        *i = oi;
    }
}

__device__ int block_argmax(float v, int i, float *redv, int *redi)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        argmax_merge(&v, &i, __shfl_xor_sync(0xffffffffu, v, o),
                     __shfl_xor_sync(0xffffffffu, i, o));
    __syncthreads();
    if (lane == 0) {
        redv[warp] = v;
        redi[warp] = i;
    }
    __syncthreads();
    v = lane < n_warps ? redv[lane] : -INFINITY;
    i = lane < n_warps ? redi[lane] : INT32_MAX;
    for (int o = 16; o > 0; o >>= 1)
        argmax_merge(&v, &i, __shfl_xor_sync(0xffffffffu, v, o),
                     __shfl_xor_sync(0xffffffffu, i, o));
    return i;
}

/* ---- the layers ----------------------------------------------------------------- */

/* Step inputs, packed by the host into one buffer and copied with one transfer.
 * All arrays are int32 or float; offsets are in 4-byte words. */
typedef struct {
    const int *tok;          /* [T] token ids */
    const int *tok_pos;      /* [T] position of each token in its sequence */
    const int *tok_item;     /* [T] item each token belongs to */
    const int *item_last;    /* [n] row of the item's last token */
    const int *item_bt;      /* [n] offset of the item's block table in bt */
    const int *item_top_k;   /* [n] */
    const float *item_temp;  /* [n] */
    const float *item_top_p; /* [n] */
    const float *item_coin;  /* [n] */
    const int *bt;           /* block tables, item after item */
} step_in_t;

/* x[t] = token_embedding[tok[t]]; one block per token. */
__global__ void embed_kernel(float *x, const float *emb, const int *tok, int dim)
{
    const float *row = emb + (size_t)tok[blockIdx.x] * dim;
    float *out = x + (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[i] = row[i];
}

/* out[r] = w * x[row] / rms(x[row]) with row = rows ? rows[r] : r; one block per row. */
__global__ void rmsnorm_kernel(float *out, const float *x, const float *w, int dim, const int *rows)
{
    __shared__ float red[32];
    const float *xr = x + (size_t)(rows ? rows[blockIdx.x] : (int)blockIdx.x) * dim;
    float *o = out + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        ss += xr[i] * xr[i];
    ss = block_sum(ss, red);
    float s = 1.0f / sqrtf(ss / (float)dim + RMS_EPS);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        o[i] = w[i] * (s * xr[i]);
}

/* Rotates q and k of token t (one block per token) by llama2.c's RoPE: the pair
 * (i, i+1) of each head turns by pos / 10000^((i % head_dim) / head_dim), read from the
 * table the CPU backend uses (forward__rope_table, [seq_len][head_dim / 2]), so both
 * rotate by the same bits; and writes the rotated k and the v of the token into its
 * KV slot.  qkv rows are [q | k | v]. */
__global__ void rope_kv_kernel(float *qkv, float *k_cache, float *v_cache, step_in_t in, int dim,
                               int kv_dim, int head_dim, const float *rope_cos,
                               const float *rope_sin)
{
    int t = blockIdx.x;
    int pos = in.tok_pos[t];
    float *q = qkv + (size_t)t * (dim + 2 * kv_dim);
    const float *k = q + dim;
    const float *v = k + kv_dim;
    int blk = in.bt[in.item_bt[in.tok_item[t]] + pos / KVB];
    size_t slot = ((size_t)blk * KVB + pos % KVB) * kv_dim;
    const float *cs = rope_cos + (size_t)pos * (head_dim / 2);
    const float *sn = rope_sin + (size_t)pos * (head_dim / 2);
    for (int i = 2 * threadIdx.x; i < dim; i += 2 * blockDim.x) {
        float fcr = cs[(i % head_dim) / 2], fci = sn[(i % head_dim) / 2];
        float q0 = q[i], q1 = q[i + 1];
        q[i] = q0 * fcr - q1 * fci;
        q[i + 1] = q0 * fci + q1 * fcr;
        if (i < kv_dim) {
            float k0 = k[i], k1 = k[i + 1];
            k_cache[slot + i] = k0 * fcr - k1 * fci;
            k_cache[slot + i + 1] = k0 * fci + k1 * fcr;
        }
    }
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x)
        v_cache[slot + i] = v[i];
}

/*
 * Attention of one query head of one token over positions 0..pos of its sequence,
 * read from the paged cache (this step's own keys were written by rope_kv_kernel, so
 * a prefill chunk is causal by construction).  One block per (token, head); query
 * head h reads KV head h / (n_heads / n_kv_heads).
 *
 * Each block reads its sequence's keys and values itself: simple and right for decode,
 * where a step has one query per sequence.  Long prefill chunks read the same pages
 * once per query row and per query head of a group; a tiled kernel that shares each
 * page across rows and heads (flash-attention style) is the next step for them.
 *
 * Dynamic shared memory: q [head_dim], partial sums [ATT_THREADS], scores [seq_len].
 * Scores for the whole context fit (seq_len 4096 is 16 KiB); create raises the
 * block's shared-memory limit to what seq_len needs and refuses a seq_len beyond the
 * device's opt-in limit (about 57000 positions on H100, 41000 on A100).
 */
__global__ void __launch_bounds__(ATT_THREADS)
    attention_kernel(float *out, const float *qkv, const float *k_cache, const float *v_cache,
                     step_in_t in, int n_heads, int n_kv_heads, int head_dim, int dim, int kv_dim)
{
    extern __shared__ float smem[];
    __shared__ float red[32];
    float *q = smem;
    float *part = q + head_dim;
    float *att = part + ATT_THREADS;

    int t = blockIdx.x / n_heads, h = blockIdx.x % n_heads;
    int n_ctx = in.tok_pos[t] + 1;
    const int *table = in.bt + in.item_bt[in.tok_item[t]];
    size_t kv_off = (size_t)(h / (n_heads / n_kv_heads)) * head_dim;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, n_warps = blockDim.x >> 5;

    const float *qsrc = qkv + (size_t)t * (dim + 2 * kv_dim) + (size_t)h * head_dim;
    for (int d = tid; d < head_dim; d += blockDim.x)
        q[d] = qsrc[d];
    __syncthreads();

    /* scores: one warp per position, lanes across the head */
    float scale = 1.0f / sqrtf((float)head_dim);
    for (int j = warp; j < n_ctx; j += n_warps) {
        const float *kj = k_cache + ((size_t)table[j / KVB] * KVB + j % KVB) * kv_dim + kv_off;
        float s = 0.0f;
        for (int d = lane; d < head_dim; d += 32)
            s += q[d] * kj[d];
        s = warp_sum(s);
        if (lane == 0)
            att[j] = s * scale;
    }
    __syncthreads();

    /* softmax, shifted by the maximum */
    float m = -INFINITY;
    for (int j = tid; j < n_ctx; j += blockDim.x)
        m = fmaxf(m, att[j]);
    m = block_max(m, red);
    float sum = 0.0f;
    for (int j = tid; j < n_ctx; j += blockDim.x) {
        float e = expf(att[j] - m);
        att[j] = e;
        sum += e;
    }
    sum = block_sum(sum, red);
    __syncthreads(); /* att holds the weights for every thread */
    float inv = 1.0f / sum;

    /* weighted sum of values: groups of head_dim threads split the positions; lanes of
     * a group read consecutive floats of one value row */
    float *o = out + (size_t)t * dim + (size_t)h * head_dim;
    if (head_dim <= (int)blockDim.x) {
        int groups = blockDim.x / head_dim, g = tid / head_dim, d = tid % head_dim;
        if (g < groups) {
            float acc = 0.0f;
            for (int j = g; j < n_ctx; j += groups) {
                const float *vj =
                    v_cache + ((size_t)table[j / KVB] * KVB + j % KVB) * kv_dim + kv_off;
                acc += att[j] * vj[d];
            }
            part[tid] = acc;
        }
        __syncthreads();
        if (tid < head_dim) {
            float acc = 0.0f;
            for (int gi = 0; gi < groups; gi++)
                acc += part[gi * head_dim + tid];
            o[tid] = acc * inv;
        }
    } else {
        for (int d = tid; d < head_dim; d += blockDim.x) {
            float acc = 0.0f;
            for (int j = 0; j < n_ctx; j++) {
                const float *vj =
                    v_cache + ((size_t)table[j / KVB] * KVB + j % KVB) * kv_dim + kv_off;
                acc += att[j] * vj[d];
            }
            o[d] = acc * inv;
        }
    }
}

/* out[t][i] = silu(gu[t][i]) * gu[t][hidden + i]; gu rows are [gate | up]. */
__global__ void swiglu_kernel(float *out, const float *gu, int hidden, size_t n)
{
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        size_t t = e / hidden, i = e % hidden;
        float g = gu[t * 2 * hidden + i];
        float u = gu[t * 2 * hidden + hidden + i];
        out[e] = g / (1.0f + expf(-g)) * u;
    }
}

/* ---- int8 (Q8_0) matrices ------------------------------------------------------- */

/* x[t] = the dequantized row tok[t] of a Q8_0 embedding (q * its group's scale), the
 * values runq.c's table holds after it dequantizes at load; one block per token. */
__global__ void embed_q8_kernel(float *x, const int8_t *q, const float *s, const int *tok, int dim,
                                int gs)
{
    size_t row = (size_t)tok[blockIdx.x] * dim;
    float *out = x + (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[i] = (float)q[row + i] * s[(row + i) / gs];
}

/* Row blockIdx.x of x ([rows][k]) to int8 in groups of gs as runq.c's quantize does:
 * scale = max|x| / 127, q = roundf(x / scale), zeros for an all-zero group.  One warp
 * per group; the maximum does not depend on order and the division is IEEE (no fast
 * math in this build), so the values are the host's bit for bit. */
__global__ void q8_quantize_kernel(int8_t *xq, float *xs, const float *x, int k, int gs)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    int n_groups = k / gs;
    const float *xr = x + (size_t)blockIdx.x * k;
    int8_t *qr = xq + (size_t)blockIdx.x * k;
    for (int g = warp; g < n_groups; g += n_warps) {
        const float *xg = xr + (size_t)g * gs;
        float wmax = 0.0f;
        for (int j = lane; j < gs; j += 32)
            wmax = fmaxf(wmax, fabsf(xg[j]));
        wmax = warp_max(wmax);
        float scale = wmax / 127.0f;
        if (lane == 0)
            xs[(size_t)blockIdx.x * n_groups + g] = scale;
        int8_t *qg = qr + (size_t)g * gs;
        for (int j = lane; j < gs; j += 32)
            qg[j] = scale > 0.0f ? (int8_t)roundf(xg[j] / scale) : (int8_t)0;
    }
}

#define Q8_THREADS 128 /* four warps, one output row each */
#define Q8_TOK_TILE 8  /* token rows that share each load of weights */

/* The int32 dot products of one group of one weight row with the same group of up to
 * Q8_TOK_TILE activation rows (nt of them, k apart).  VEC is how many bytes one load
 * takes: 16 (gs % 16 == 0: int4 loads, four __dp4a each), 4 (gs % 4 == 0: one
 * __dp4a) or 1 (any other group size: byte products).  The row and group offsets are
 * multiples of gs and k (a multiple of gs), so the wide loads are aligned. */
template <int VEC>
__device__ void q8_group_dots(int *dot, const int8_t *wg, const int8_t *xg, size_t k, int gs,
                              int nt)
{
    if (VEC == 16) {
        for (int j = 0; j < gs; j += 16) {
            int4 w = *(const int4 *)(wg + j);
#pragma unroll
            for (int t = 0; t < Q8_TOK_TILE; t++) {
                if (t < nt) {
                    int4 a = *(const int4 *)(xg + (size_t)t * k + j);
                    dot[t] = __dp4a(w.x, a.x, dot[t]);
                    dot[t] = __dp4a(w.y, a.y, dot[t]);
                    dot[t] = __dp4a(w.z, a.z, dot[t]);
                    dot[t] = __dp4a(w.w, a.w, dot[t]);
                }
            }
        }
    } else if (VEC == 4) {
        for (int j = 0; j < gs; j += 4) {
            int w = *(const int *)(wg + j);
#pragma unroll
            for (int t = 0; t < Q8_TOK_TILE; t++)
                if (t < nt)
                    dot[t] = __dp4a(w, *(const int *)(xg + (size_t)t * k + j), dot[t]);
        }
    } else {
        for (int j = 0; j < gs; j++) {
            int w = wg[j];
#pragma unroll
            for (int t = 0; t < Q8_TOK_TILE; t++)
                if (t < nt)
                    dot[t] += w * (int)xg[(size_t)t * k + j];
        }
    }
}

/*
 * y[t][i] = sum over groups g of dot(w[i] group g, xq[t] group g) * ws[i][g] * xs[t][g]
 * (+ y[t][i] when accumulate): runq.c's matmul over rows activation rows at once, with
 * w [m][k] and xq [rows][k] int8 and their scales [m][k / gs] and [rows][k / gs].
 *
 * One warp per weight row i; its lanes take the groups in turn (lane, lane + 32, ...)
 * and each keeps a float sum per token, so the groups are added in another order than
 * runq.c's left-to-right one (the tests allow for it).  Each weight group loaded serves
 * a tile of Q8_TOK_TILE tokens; the tiles of a prefill step reread the matrix from L2.
 * A kernel that stages weight tiles in shared memory for many tokens (or int8 tensor
 * cores through cuBLASLt) is the next step for long prefill chunks.
 */
template <int VEC>
__global__ void __launch_bounds__(Q8_THREADS)
    q8_matmul_kernel(float *y, const int8_t *w, const float *ws, const int8_t *xq, const float *xs,
                     int rows, int m, int k, int gs, bool accumulate)
{
    int lane = threadIdx.x & 31;
    int i = blockIdx.x * (Q8_THREADS / 32) + (threadIdx.x >> 5);
    if (i >= m) /* the whole warp leaves; nothing below synchronizes the block */
        return;
    int n_groups = k / gs, n_tiles = (rows + Q8_TOK_TILE - 1) / Q8_TOK_TILE;
    const int8_t *wrow = w + (size_t)i * k;
    const float *wsrow = ws + (size_t)i * n_groups;
    for (int tile = blockIdx.y; tile < n_tiles; tile += gridDim.y) {
        int t0 = tile * Q8_TOK_TILE;
        int nt = min(Q8_TOK_TILE, rows - t0);
        const int8_t *xt = xq + (size_t)t0 * k;
        const float *st = xs + (size_t)t0 * n_groups;
        float acc[Q8_TOK_TILE];
#pragma unroll
        for (int t = 0; t < Q8_TOK_TILE; t++)
            acc[t] = 0.0f;
        for (int g = lane; g < n_groups; g += 32) {
            int dot[Q8_TOK_TILE];
#pragma unroll
            for (int t = 0; t < Q8_TOK_TILE; t++)
                dot[t] = 0;
            q8_group_dots<VEC>(dot, wrow + (size_t)g * gs, xt + (size_t)g * gs, (size_t)k, gs, nt);
            float wsc = wsrow[g];
#pragma unroll
            for (int t = 0; t < Q8_TOK_TILE; t++)
                if (t < nt)
                    acc[t] += (float)dot[t] * wsc * st[(size_t)t * n_groups + g];
        }
#pragma unroll
        for (int t = 0; t < Q8_TOK_TILE; t++) {
            float v = warp_sum(acc[t]);
            if (lane == 0 && t < nt) {
                float *out = y + (size_t)(t0 + t) * m + i;
                *out = accumulate ? *out + v : v;
            }
        }
    }
}

/* ---- sampling ------------------------------------------------------------------- */

/*
 * sampler_pick (libs/model/sampler.c) on the device, one block per item, with the same
 * rules: greedy for temperature <= 0 (or NaN) and for top_k == 1; softmax of
 * (logit - max) / temperature with NaN as -inf; without top-k and top-p the CDF in id
 * order; otherwise the order "more probable first, lower id on ties", cut to the top
 * k, then to the shortest prefix holding more than top_p of the kept mass (top-k and
 * top-p) or of all the mass among tokens >= (1 - top_p) / (n - 1) (top-p alone), and a
 * walk of that prefix to coin * its mass.
 *
 * Rather than sort the vocabulary, the block finds each cut of that order by bisection
 * on the bit pattern of the probability (non-negative floats order like their bits)
 * and then counts ids within the group of equal probabilities.  Each bisection step is
 * one pass over the vocabulary plus two block reductions, about 30 steps per cut.
 * A radix select with 8-bit digits would need 4 passes; it is the next step if
 * sampling shows up in profiles.
 *
 * The arithmetic is sampler.c's, but sums run in another order (a tree instead of left
 * to right), so a pick can differ from the CPU's only when coin * mass, or top_p times
 * the kept mass, lies within float rounding (about 1e-6 relative) of a boundary of the
 * cumulative distribution.  Greedy picks are exact.
 *
 * A cut (bits, m) is the prefix of the order holding every token whose probability has
 * bits above `bits` and the m lowest ids among those with exactly `bits`.
 */
typedef struct {
    unsigned bits;
    int m;
} cut_t;

#define BITS_INF 0x7f800000u /* above every probability */

__device__ unsigned prob_bits(float p)
{
    return __float_as_uint(p);
}

__device__ int block_max_int(int v, int *red)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    v = lane < n_warps ? red[lane] : INT32_MIN;
    for (int o = 16; o > 0; o >>= 1)
        v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Count and mass of the tokens whose probability bits are >= b. */
__device__ void mass_ge(const float *p, int n, unsigned b, int *count, float *mass, float *redf,
                        int *redi)
{
    int c = 0;
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = p[i];
        if (prob_bits(v) >= b) {
            c++;
            s += v;
        }
    }
    *count = block_sum_int(c, redi);
    *mass = block_sum(s, redf);
}

/* The prefix that ends with the last token whose bits are exactly b (one exists). */
__device__ cut_t cut_whole_group(const float *p, int n, unsigned b, float *redf, int *redi)
{
    int c_ge, c_above;
    float s;
    mass_ge(p, n, b, &c_ge, &s, redf, redi);
    mass_ge(p, n, b + 1, &c_above, &s, redf, redi);
    cut_t cut = {b, c_ge - c_above};
    return cut;
}

/* The k most probable tokens (1 <= k <= n). */
__device__ cut_t cut_by_count(const float *p, int n, int k, float *redf, int *redi)
{
    unsigned lo = 0, hi = BITS_INF; /* count_ge(lo) >= k holds throughout */
    int c;
    float s;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo + 1) / 2;
        mass_ge(p, n, mid, &c, &s, redf, redi);
        if (c >= k)
            lo = mid;
        else
            hi = mid - 1;
    }
    mass_ge(p, n, lo + 1, &c, &s, redf, redi); /* lo < BITS_INF: probabilities are <= 1 */
    cut_t cut = {lo, k - c};
    return cut;
}

/* The shortest prefix whose mass exceeds target; found = false when the whole
 * vocabulary does not. */
__device__ cut_t cut_by_mass(const float *p, int n, float target, bool *found, float *redf,
                             int *redi)
{
    int c_all, c_above;
    float s_all, s_above;
    cut_t cut = {0u, 0};
    mass_ge(p, n, 0u, &c_all, &s_all, redf, redi);
    *found = s_all > target;
    if (!*found)
        return cut;
    unsigned lo = 0, hi = BITS_INF; /* mass_ge(lo) > target holds throughout */
    while (lo < hi) {
        unsigned mid = lo + (hi - lo + 1) / 2;
        mass_ge(p, n, mid, &c_all, &s_all, redf, redi);
        if (s_all > target)
            lo = mid;
        else
            hi = mid - 1;
    }
    /* mass_ge(lo) > target >= mass_ge(lo + 1): some token has exactly these bits, and
     * its probability is positive (zeros add no mass) */
    mass_ge(p, n, lo, &c_all, &s_all, redf, redi);
    mass_ge(p, n, lo + 1, &c_above, &s_above, redf, redi);
    int n_eq = c_all - c_above;
    float pv = __uint_as_float(lo);
    /* the first m with s_above + m * pv > target, as a walk adding pv would find it */
    float q = floorf((target - s_above) / pv);
    int m = q < 0.0f ? 1 : (q >= (float)n_eq ? n_eq : (int)q + 1);
    while (m > 1 && s_above + (float)(m - 1) * pv > target)
        m--;
    while (m < n_eq && !(s_above + (float)m * pv > target))
        m++;
    cut.bits = lo;
    cut.m = m;
    return cut;
}

/* True when cut a ends no later in the order than cut b. */
__device__ bool cut_le(cut_t a, cut_t b)
{
    return a.bits > b.bits || (a.bits == b.bits && a.m <= b.m);
}

/* Mass of the prefix (the tokens above the cut's group plus m of the group). */
__device__ float cut_mass(const float *p, int n, cut_t cut, float *redf, int *redi)
{
    int c;
    float s;
    mass_ge(p, n, cut.bits + 1, &c, &s, redf, redi);
    return s + (float)cut.m * __uint_as_float(cut.bits);
}

/* The token that ends the cut: the m-th lowest id among tokens with bits equal to
 * cut.bits, by a block-wide running count over the ids in order. */
__device__ int cut_token(const float *p, int n, cut_t cut, int *redi, int *s_tok)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    int seen = 0;
    if (threadIdx.x == 0)
        *s_tok = -1;
    for (int base = 0; base < n; base += blockDim.x) {
        int i = base + threadIdx.x;
        bool eq = i < n && prob_bits(p[i]) == cut.bits;
        unsigned ballot = __ballot_sync(0xffffffffu, eq);
        __syncthreads(); /* redi is free again; *s_tok is initialised */
        if (lane == 0)
            redi[warp] = __popc(ballot);
        __syncthreads();
        int before = seen + __popc(ballot & ((1u << lane) - 1u));
        for (int w = 0; w < warp; w++)
            before += redi[w];
        if (eq && before + 1 == cut.m)
            *s_tok = i;
        for (int w = 0; w < n_warps; w++)
            seen += redi[w];
        if (seen >= cut.m)
            break;
    }
    __syncthreads();
    return *s_tok;
}

/* Greedy: the highest value, lowest id on ties, NaN as -inf (0 when nothing is above
 * -inf). */
__device__ int block_argmax_row(const float *x, int n, float *redf, int *redi)
{
    float best = -INFINITY;
    int best_i = INT32_MAX;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        argmax_merge(&best, &best_i, isnan(x[i]) ? -INFINITY : x[i], i);
    return block_argmax(best, best_i, redf, redi);
}

/* sampler.c's sample_mult: the first id whose running CDF (in id order) exceeds coin;
 * past the end by rounding, the last token with any mass. */
__device__ int pick_in_id_order(const float *p, int n, float coin, float *redf, int *redi)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    float run = 0.0f;
    for (int base = 0; base < n; base += blockDim.x) {
        int i = base + threadIdx.x;
        float x = i < n ? p[i] : 0.0f;
        for (int o = 1; o < 32; o <<= 1) { /* inclusive scan within the warp */
            float y = __shfl_up_sync(0xffffffffu, x, o);
            if (lane >= o)
                x += y;
        }
        __syncthreads(); /* redf is free again */
        if (lane == 31)
            redf[warp] = x;
        __syncthreads();
        float cdf = run + x, total = run;
        for (int w = 0; w < warp; w++)
            cdf += redf[w];
        for (int w = 0; w < n_warps; w++)
            total += redf[w];
        int hit = block_argmax(0.0f, i < n && coin < cdf ? i : INT32_MAX, redf, redi);
        if (hit != INT32_MAX)
            return hit;
        run = total;
    }
    int last = -1;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        if (p[i] > 0.0f)
            last = i;
    last = block_max_int(last, redi);
    return last > 0 ? last : 0;
}

/* Where sampler.c's draw_sorted lands when rounding (or a coin of 1) leaves the draw
 * past the end of the kept prefix: its last token with any probability.  That is the
 * prefix itself unless it ends among tokens of probability 0 (top-k wider than the
 * tokens with mass, say after NaN logits); then it ends with the group of the least
 * probable token that has mass.  With no mass at all, the first token of the order. */
__device__ cut_t last_positive(const float *p, int n, cut_t keep, float *redf, int *redi)
{
    if (keep.bits > 0)
        return keep;
    int low = INT32_MIN; /* minus the least positive bits (bits < 2^31) */
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        if (p[i] > 0.0f)
            low = max(low, -(int)prob_bits(p[i]));
    low = block_max_int(low, redi);
    if (low == INT32_MIN)
        return cut_by_count(p, n, 1, redf, redi);
    return cut_whole_group(p, n, (unsigned)-low, redf, redi);
}

__device__ int pick_token(const float *l, float *p, int n, float temp, float top_p, int top_k,
                          float coin, float *redf, int *redi, int *s_tok)
{
    if (n <= 1)
        return 0;
    if (!(temp > 0.0f) || top_k == 1)
        return block_argmax_row(l, n, redf, redi);

    /* softmax of (logit - max) / temperature */
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        if (!isnan(l[i]))
            mx = fmaxf(mx, l[i]);
    mx = block_max(mx, redf);
    if (mx == -INFINITY)
        return 0;
    if (mx == INFINITY) {
        int c = 0;
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            c += l[i] == INFINITY;
        float share = 1.0f / (float)block_sum_int(c, redi);
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            p[i] = l[i] == INFINITY ? share : 0.0f;
    } else {
        float sum = 0.0f;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            float e = isnan(l[i]) ? 0.0f : expf((l[i] - mx) / temp);
            p[i] = e;
            sum += e;
        }
        sum = block_sum(sum, redf);
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            p[i] = p[i] / sum;
    }
    __syncthreads(); /* p is read across threads from here on */

    bool use_k = top_k > 0 && top_k < n;
    bool use_p = top_p > 0.0f && top_p < 1.0f;
    if (!use_k && !use_p)
        return pick_in_id_order(p, n, coin, redf, redi);

    cut_t keep;
    float mass;
    bool found;
    if (use_k) {
        keep = cut_by_count(p, n, top_k, redf, redi);
        mass = cut_mass(p, n, keep, redf, redi);
        if (use_p) {
            cut_t pc = cut_by_mass(p, n, top_p * mass, &found, redf, redi);
            if (found && cut_le(pc, keep)) {
                keep = pc;
                mass = cut_mass(p, n, keep, redf, redi);
            }
        }
    } else {
        /* tokens below the cutoff cannot be in the nucleus; the survivors are a prefix
         * of the order, ending with the group of the least probable survivor */
        float cutoff = (1.0f - top_p) / (float)(n - 1);
        int low = INT32_MIN; /* minus the least survivor's bits (bits < 2^31) */
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            if (p[i] >= cutoff)
                low = max(low, -(int)prob_bits(p[i]));
        low = block_max_int(low, redi);
        if (low == INT32_MIN) /* no survivor (top_p below 1/n): the most probable token */
            return block_argmax_row(p, n, redf, redi);
        keep = cut_whole_group(p, n, (unsigned)-low, redf, redi);
        cut_t pc = cut_by_mass(p, n, top_p, &found, redf, redi);
        if (found && cut_le(pc, keep))
            keep = pc;
        mass = cut_mass(p, n, keep, redf, redi);
    }
    cut_t pick = cut_by_mass(p, n, coin * mass, &found, redf, redi);
    if (!found || !cut_le(pick, keep))
        pick = last_positive(p, n, keep, redf, redi);
    return cut_token(p, n, pick, redi, s_tok);
}

__global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_kernel(int *out_tok, float *probs, const float *logits, int n, step_in_t in)
{
    __shared__ float redf[32];
    __shared__ int redi[32];
    __shared__ int s_tok;
    int item = blockIdx.x;
    int tok = pick_token(logits + (size_t)item * n, probs + (size_t)item * n, n, in.item_temp[item],
                         in.item_top_p[item], in.item_top_k[item], in.item_coin[item], redf, redi,
                         &s_tok);
    if (threadIdx.x == 0)
        out_tok[item] = tok;
}

/* ---- the backend ---------------------------------------------------------------- */

typedef struct {
    int device;
    char device_name[320];
    ckpt_config_t c;
    int max_batch, max_step_tokens, n_blocks, max_seq_blocks;
    size_t att_smem; /* dynamic shared memory of attention_kernel, bytes */

    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_ws;

    /* weights; layer l of a per-layer tensor starts at l * its per-layer size */
    float *emb;       /* [vocab][dim] */
    float *rms_att;   /* [layers][dim] */
    float *wqkv;      /* [layers][dim + 2 kv_dim][dim]: wq, wk, wv stacked */
    float *wo;        /* [layers][dim][dim] */
    float *rms_ffn;   /* [layers][dim] */
    float *w13;       /* [layers][2 hidden][dim]: w1, w3 stacked */
    float *w2;        /* [layers][dim][hidden] */
    float *rms_final; /* [dim] */
    float *rope_cos;  /* [seq_len][head_dim / 2], forward__rope_table's */
    float *rope_sin;
    float *wcls;      /* [vocab][dim]; == emb when shared */

    /* Q8_0 checkpoints (format_version 2): the matrices above as int8 values (_q) with
     * one fp32 scale per group_size values along each row (_s), in the same layouts
     * (fused wq/wk/wv and w1/w3 included: no group spans two rows, so stacking rows
     * stacks their scales); the fp32 matrix pointers are then NULL. */
    bool q8;
    int8_t *emb_q, *wqkv_q, *wo_q, *w13_q, *w2_q, *wcls_q; /* wcls_q == emb_q when shared */
    float *emb_s, *wqkv_s, *wo_s, *w13_s, *w2_s, *wcls_s;

    float *k_cache, *v_cache; /* [layers][n_blocks][KVB][kv_dim] */

    /* scratch for max_step_tokens rows (T) or max_batch items (B) */
    float *x;      /* [T][dim] residual stream */
    float *xb;     /* [T][dim] normed */
    float *qkv;    /* [T][dim + 2 kv_dim] */
    float *att;    /* [T][dim] attention output */
    float *gu;     /* [T][2 hidden] */
    float *hb;     /* [T][hidden] */
    float *xl;     /* [B][dim] last tokens, normed */
    float *logits; /* [B][vocab] */
    float *probs;  /* [B][vocab] */
    int *out_tok;  /* [B] */
    int8_t *xq;    /* Q8_0 only: [T][max(dim, hidden)] a matmul's input quantized */
    float *xs;     /* Q8_0 only: [T][max(dim, hidden) / group_size] its scales */

    /* step inputs: host (pinned) and device copies of the same layout */
    size_t in_words; /* capacity in 4-byte words */
    size_t off_tok, off_pos, off_item, off_last, off_bt_off, off_top_k, off_temp, off_top_p,
        off_coin, off_bt;
    uint32_t *h_in, *d_in;
    int *h_out_tok; /* [B] pinned */
} cuda_fwd_t;

static void set_err(char *err, size_t err_len, const char *fmt, const char *what, cudaError_t e)
{
    if (err_len)
        snprintf(err, err_len, fmt, what, cudaGetErrorString(e));
}

static bool dev_alloc(void **p, size_t bytes, const char *what, char *err, size_t err_len)
{
    cudaError_t e = cudaMalloc(p, bytes);
    if (e == cudaSuccess)
        return true;
    *p = NULL;
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    (void)cudaMemGetInfo(&free_b, &total_b);
    if (err_len)
        snprintf(err, err_len,
                 "cuda: %s allocating %s (%zu MiB; %zu MiB of %zu MiB free on the device)",
                 e == cudaErrorMemoryAllocation ? "out of device memory" : cudaGetErrorString(e),
                 what, bytes >> 20, free_b >> 20, total_b >> 20);
    return false;
}

static bool upload(float *dst, const float *src, size_t n, const char *what, char *err,
                   size_t err_len)
{
    cudaError_t e = cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        set_err(err, err_len, "cuda: copying %s to the device: %s", what, e);
        return false;
    }
    return true;
}

static void cuda_destroy(void *impl)
{
    cuda_fwd_t *f = (cuda_fwd_t *)impl;
    if (!f)
        return;
    (void)cudaSetDevice(f->device);
    if (f->stream)
        (void)cudaStreamSynchronize(f->stream);
    if (f->blas)
        (void)cublasDestroy(f->blas);
    void *dev[] = {f->blas_ws, f->emb,   f->rms_att,   f->wqkv,     f->wo,       f->rms_ffn,
                   f->w13,     f->w2,    f->rms_final, f->rope_cos, f->rope_sin, f->k_cache,
                   f->v_cache, f->x,     f->xb,        f->qkv,      f->att,      f->gu,
                   f->hb,      f->xl,    f->logits,    f->probs,    f->out_tok,  f->d_in,
                   f->emb_q,   f->emb_s, f->wqkv_q,    f->wqkv_s,   f->wo_q,     f->wo_s,
                   f->w13_q,   f->w13_s, f->w2_q,      f->w2_s,     f->xq,       f->xs};
    for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++)
        (void)cudaFree(dev[i]);
    if (f->wcls != f->emb)
        (void)cudaFree(f->wcls);
    if (f->wcls_q != f->emb_q) {
        (void)cudaFree(f->wcls_q);
        (void)cudaFree(f->wcls_s);
    }
    (void)cudaFreeHost(f->h_in);
    (void)cudaFreeHost(f->h_out_tok);
    if (f->stream)
        (void)cudaStreamDestroy(f->stream);
    (void)cudaGetLastError();
    free(f);
}

/* The fp32 matrices, wq/wk/wv and w1/w3 fused per layer. */
static bool upload_matrices_f32(cuda_fwd_t *f, const ckpt_t *ck, char *err, size_t err_len)
{
    const ckpt_config_t *c = &f->c;
    const ckpt_weights_t *w = &ck->w;
    size_t dim = c->dim, kv = c->kv_dim, hid = c->hidden_dim, L = c->n_layers;
    size_t vocab = c->vocab_size, qkv_rows = dim + 2 * kv;

    if (!dev_alloc((void **)&f->emb, vocab * dim * 4, "token embedding", err, err_len) ||
        !dev_alloc((void **)&f->wqkv, L * qkv_rows * dim * 4, "wq/wk/wv", err, err_len) ||
        !dev_alloc((void **)&f->wo, L * dim * dim * 4, "wo", err, err_len) ||
        !dev_alloc((void **)&f->w13, L * 2 * hid * dim * 4, "w1/w3", err, err_len) ||
        !dev_alloc((void **)&f->w2, L * dim * hid * 4, "w2", err, err_len))
        return false;
    if (c->shared_classifier || w->wcls == w->token_embedding)
        f->wcls = f->emb;
    else if (!dev_alloc((void **)&f->wcls, vocab * dim * 4, "classifier", err, err_len))
        return false;

    if (!upload(f->emb, w->token_embedding, vocab * dim, "token embedding", err, err_len) ||
        !upload(f->wo, w->wo, L * dim * dim, "wo", err, err_len) ||
        !upload(f->w2, w->w2, L * dim * hid, "w2", err, err_len))
        return false;
    if (f->wcls != f->emb && !upload(f->wcls, w->wcls, vocab * dim, "classifier", err, err_len))
        return false;
    for (size_t l = 0; l < L; l++) {
        float *qkv = f->wqkv + l * qkv_rows * dim;
        float *w13 = f->w13 + l * 2 * hid * dim;
        if (!upload(qkv, w->wq + l * dim * dim, dim * dim, "wq", err, err_len) ||
            !upload(qkv + dim * dim, w->wk + l * kv * dim, kv * dim, "wk", err, err_len) ||
            !upload(qkv + (dim + kv) * dim, w->wv + l * kv * dim, kv * dim, "wv", err, err_len) ||
            !upload(w13, w->w1 + l * hid * dim, hid * dim, "w1", err, err_len) ||
            !upload(w13 + hid * dim, w->w3 + l * hid * dim, hid * dim, "w3", err, err_len))
            return false;
    }
    return true;
}

/* Room for a Q8_0 matrix (or rows of them) of n values: n int8 and n / gs scales. */
static bool dev_alloc_q8(int8_t **q, float **s, size_t n, size_t gs, const char *what, char *err,
                         size_t err_len)
{
    return dev_alloc((void **)q, n, what, err, err_len) &&
           dev_alloc((void **)s, n / gs * 4, what, err, err_len);
}

/* Copies the n values of src to q and their n / gs scales to s. */
static bool upload_q8(int8_t *q, float *s, const ckpt_q8_t *src, size_t n, size_t gs,
                      const char *what, char *err, size_t err_len)
{
    cudaError_t e = cudaMemcpy(q, src->q, n, cudaMemcpyHostToDevice);
    if (e == cudaSuccess)
        e = cudaMemcpy(s, src->s, n / gs * sizeof(float), cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        set_err(err, err_len, "cuda: copying %s to the device: %s", what, e);
        return false;
    }
    return true;
}

/* The Q8_0 matrices in the fp32 path's layouts.  Row r of a matrix with k columns
 * starts at value r * k and scale r * k / gs in every layout, fused or not. */
static bool upload_matrices_q8(cuda_fwd_t *f, const ckpt_t *ck, char *err, size_t err_len)
{
    const ckpt_config_t *c = &f->c;
    const ckpt_q8_weights_t *w = &ck->q8;
    size_t dim = c->dim, kv = c->kv_dim, hid = c->hidden_dim, L = c->n_layers;
    size_t vocab = c->vocab_size, qkv_rows = dim + 2 * kv, gs = c->group_size;

    if (!dev_alloc_q8(&f->emb_q, &f->emb_s, vocab * dim, gs, "token embedding", err, err_len) ||
        !dev_alloc_q8(&f->wqkv_q, &f->wqkv_s, L * qkv_rows * dim, gs, "wq/wk/wv", err, err_len) ||
        !dev_alloc_q8(&f->wo_q, &f->wo_s, L * dim * dim, gs, "wo", err, err_len) ||
        !dev_alloc_q8(&f->w13_q, &f->w13_s, L * 2 * hid * dim, gs, "w1/w3", err, err_len) ||
        !dev_alloc_q8(&f->w2_q, &f->w2_s, L * dim * hid, gs, "w2", err, err_len))
        return false;
    if (c->shared_classifier || w->wcls.q == w->token_embedding.q) {
        f->wcls_q = f->emb_q;
        f->wcls_s = f->emb_s;
    } else if (!dev_alloc_q8(&f->wcls_q, &f->wcls_s, vocab * dim, gs, "classifier", err, err_len)) {
        return false;
    }

    if (!upload_q8(f->emb_q, f->emb_s, &w->token_embedding, vocab * dim, gs, "token embedding", err,
                   err_len))
        return false;
    if (f->wcls_q != f->emb_q &&
        !upload_q8(f->wcls_q, f->wcls_s, &w->wcls, vocab * dim, gs, "classifier", err, err_len))
        return false;
    for (size_t l = 0; l < L; l++) {
        size_t qkv = l * qkv_rows * dim, w13 = l * 2 * hid * dim, o = l * dim * dim;
        size_t w2 = l * dim * hid, k_at = qkv + dim * dim, v_at = qkv + (dim + kv) * dim;
        size_t w3_at = w13 + hid * dim;
        if (!upload_q8(f->wqkv_q + qkv, f->wqkv_s + qkv / gs, &w->wq[l], dim * dim, gs, "wq", err,
                       err_len) ||
            !upload_q8(f->wqkv_q + k_at, f->wqkv_s + k_at / gs, &w->wk[l], kv * dim, gs, "wk", err,
                       err_len) ||
            !upload_q8(f->wqkv_q + v_at, f->wqkv_s + v_at / gs, &w->wv[l], kv * dim, gs, "wv", err,
                       err_len) ||
            !upload_q8(f->wo_q + o, f->wo_s + o / gs, &w->wo[l], dim * dim, gs, "wo", err,
                       err_len) ||
            !upload_q8(f->w13_q + w13, f->w13_s + w13 / gs, &w->w1[l], hid * dim, gs, "w1", err,
                       err_len) ||
            !upload_q8(f->w13_q + w3_at, f->w13_s + w3_at / gs, &w->w3[l], hid * dim, gs, "w3", err,
                       err_len) ||
            !upload_q8(f->w2_q + w2, f->w2_s + w2 / gs, &w->w2[l], dim * hid, gs, "w2", err,
                       err_len))
            return false;
    }
    return true;
}

static bool upload_weights(cuda_fwd_t *f, const ckpt_t *ck, char *err, size_t err_len)
{
    const ckpt_config_t *c = &f->c;
    const ckpt_weights_t *w = &ck->w;
    size_t dim = c->dim, L = c->n_layers;

    if (!dev_alloc((void **)&f->rms_att, L * dim * 4, "attention norms", err, err_len) ||
        !dev_alloc((void **)&f->rms_ffn, L * dim * 4, "feed-forward norms", err, err_len) ||
        !dev_alloc((void **)&f->rms_final, dim * 4, "final norm", err, err_len))
        return false;
    if (!upload(f->rms_att, w->rms_att, L * dim, "attention norms", err, err_len) ||
        !upload(f->rms_ffn, w->rms_ffn, L * dim, "feed-forward norms", err, err_len) ||
        !upload(f->rms_final, w->rms_final, dim, "final norm", err, err_len))
        return false;
    if (!(f->q8 ? upload_matrices_q8(f, ck, err, err_len)
                : upload_matrices_f32(f, ck, err, err_len)))
        return false;
    size_t rope_n = (size_t)c->seq_len * (c->head_dim / 2);
    float *tab = (float *)malloc(2 * rope_n * sizeof(float));
    if (!tab) {
        if (err_len)
            snprintf(err, err_len, "cuda: out of host memory for the rotary table");
        return false;
    }
    forward__rope_table(c->seq_len, c->head_dim, tab, tab + rope_n);
    bool ok = dev_alloc((void **)&f->rope_cos, rope_n * 4, "rotary table", err, err_len) &&
              dev_alloc((void **)&f->rope_sin, rope_n * 4, "rotary table", err, err_len) &&
              upload(f->rope_cos, tab, rope_n, "rotary table", err, err_len) &&
              upload(f->rope_sin, tab + rope_n, rope_n, "rotary table", err, err_len);
    /* A copy from pageable memory may return before its DMA lands, and the step stream
     * does not wait for the legacy default stream: wait for every copy above (the
     * weights' too) before freeing the table and before the first step. */
    cudaError_t se = cudaDeviceSynchronize();
    free(tab);
    if (!ok)
        return false;
    if (se != cudaSuccess) {
        set_err(err, err_len, "cuda: %s: %s", "uploading the weights", se);
        return false;
    }
    return true;
}

static bool alloc_buffers(cuda_fwd_t *f, char *err, size_t err_len)
{
    const ckpt_config_t *c = &f->c;
    size_t dim = c->dim, kv = c->kv_dim, hid = c->hidden_dim, vocab = c->vocab_size;
    size_t T = f->max_step_tokens, B = f->max_batch;
    size_t kv_bytes = (size_t)c->n_layers * f->n_blocks * KVB * kv * 4;

    if (!dev_alloc((void **)&f->k_cache, kv_bytes, "KV cache (keys)", err, err_len) ||
        !dev_alloc((void **)&f->v_cache, kv_bytes, "KV cache (values)", err, err_len) ||
        !dev_alloc((void **)&f->x, T * dim * 4, "activations", err, err_len) ||
        !dev_alloc((void **)&f->xb, T * dim * 4, "activations", err, err_len) ||
        !dev_alloc((void **)&f->qkv, T * (dim + 2 * kv) * 4, "activations", err, err_len) ||
        !dev_alloc((void **)&f->att, T * dim * 4, "activations", err, err_len) ||
        !dev_alloc((void **)&f->gu, T * 2 * hid * 4, "activations", err, err_len) ||
        !dev_alloc((void **)&f->hb, T * hid * 4, "activations", err, err_len) ||
        !dev_alloc((void **)&f->xl, B * dim * 4, "activations", err, err_len) ||
        !dev_alloc((void **)&f->logits, B * vocab * 4, "logits", err, err_len) ||
        !dev_alloc((void **)&f->probs, B * vocab * 4, "sampling scratch", err, err_len) ||
        !dev_alloc((void **)&f->out_tok, B * 4, "sampled tokens", err, err_len) ||
        !dev_alloc(&f->blas_ws, CUBLAS_WORKSPACE_BYTES, "cuBLAS workspace", err, err_len))
        return false;
    if (f->q8) {
        size_t widest = dim > hid ? dim : hid;
        if (!dev_alloc_q8(&f->xq, &f->xs, T * widest, (size_t)c->group_size,
                          "quantized activations", err, err_len))
            return false;
    }

    /* step input layout, in 4-byte words */
    size_t o = 0;
    f->off_tok = o, o += T;
    f->off_pos = o, o += T;
    f->off_item = o, o += T;
    f->off_last = o, o += B;
    f->off_bt_off = o, o += B;
    f->off_top_k = o, o += B;
    f->off_temp = o, o += B;
    f->off_top_p = o, o += B;
    f->off_coin = o, o += B;
    f->off_bt = o, o += B * (size_t)f->max_seq_blocks;
    f->in_words = o;
    if (!dev_alloc((void **)&f->d_in, o * 4, "step inputs", err, err_len))
        return false;
    cudaError_t e = cudaMallocHost((void **)&f->h_in, o * 4);
    if (e == cudaSuccess)
        e = cudaMallocHost((void **)&f->h_out_tok, B * 4);
    if (e != cudaSuccess) {
        set_err(err, err_len, "cuda: %s: pinned host memory: %s", "step staging", e);
        return false;
    }
    return true;
}

static step_in_t step_in(const cuda_fwd_t *f)
{
    const uint32_t *d = f->d_in;
    step_in_t in;
    in.tok = (const int *)(d + f->off_tok);
    in.tok_pos = (const int *)(d + f->off_pos);
    in.tok_item = (const int *)(d + f->off_item);
    in.item_last = (const int *)(d + f->off_last);
    in.item_bt = (const int *)(d + f->off_bt_off);
    in.item_top_k = (const int *)(d + f->off_top_k);
    in.item_temp = (const float *)(d + f->off_temp);
    in.item_top_p = (const float *)(d + f->off_top_p);
    in.item_coin = (const float *)(d + f->off_coin);
    in.bt = (const int *)(d + f->off_bt);
    return in;
}

/* After a failure: whether the device still runs work.  A sticky error (illegal
 * address, launch failure, uncorrectable ECC error, ...) poisons the context: every
 * later call fails too, and only a new process gets the device back. */
static bool device_alive(cuda_fwd_t *f)
{
    cudaError_t e = cudaMemsetAsync(f->out_tok, 0, sizeof(int), f->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(f->stream);
    if (e == cudaSuccess)
        return true;
    (void)cudaGetLastError();
    LS_LOG_ERROR(MOD, "device lost device=\"%s\" error=\"%s\": nothing more can run on it in "
                      "this process",
                 f->device_name, cudaGetErrorString(e));
    return false;
}

/* Logs the failed call and waits for what the step already queued, so the next step
 * cannot overwrite staging memory a copy is still reading; LS_ERR_DEVICE when the
 * device is gone for good, else LS_ERR_INTERNAL. */
static int step_fail(cuda_fwd_t *f, const char *what, const char *why)
{
    LS_LOG_ERROR(MOD, "step failed call=%s error=\"%s\"", what, why);
    (void)cudaStreamSynchronize(f->stream);
    (void)cudaGetLastError();
    return device_alive(f) ? LS_ERR_INTERNAL : LS_ERR_DEVICE;
}

/* Fault injection (forward_config_t.fault_after_steps): a write to an address no
 * allocation covers, a real illegal-address fault that makes the context sticky. */
__global__ void fault_kernel(int *p)
{
    *p = 1;
}

static void cuda_inject_fault(void *impl)
{
    cuda_fwd_t *f = (cuda_fwd_t *)impl;
    (void)cudaSetDevice(f->device);
    fault_kernel<<<1, 1, 0, f->stream>>>((int *)(uintptr_t)64);
}

#define CUDA_STEP(call)                                                                            \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return step_fail(f, #call, cudaGetErrorString(e_));                                    \
    } while (0)

#define BLAS_STEP(call)                                                                            \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            return step_fail(f, #call, cublasGetStatusString(s_));                                 \
    } while (0)

/* y[rows][m] = x[rows][k] . w[m][k]^T + beta * y, all row-major (cuBLAS sees the
 * column-major transposes: y^T = w . x^T). */
static cublasStatus_t gemm(cuda_fwd_t *f, const float *w, int m, int k, const float *x, int rows,
                           float *y, float beta)
{
    const float one = 1.0f;
    return cublasSgemm(f->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, rows, k, &one, w, k, x, k, &beta, y,
                       m);
}

/* y[rows][m] = x[rows][k] . w[m][k]^T (+ y when beta is 1) for the matrix that starts
 * at value off of its layout: w32 for an fp32 checkpoint (cuBLAS), wq and ws for a
 * Q8_0 one (x quantized per group, then q8_matmul_kernel).  Only the pointers of the
 * checkpoint's format are offset: the others are NULL.  Returns LS_OK or what
 * step_fail returns. */
static int matmul(cuda_fwd_t *f, const float *w32, const int8_t *wq, const float *ws, size_t off,
                  int m, int k, const float *x, int rows, float *y, float beta)
{
    if (!f->q8) {
        BLAS_STEP(gemm(f, w32 + off, m, k, x, rows, y, beta));
        return LS_OK;
    }
    int gs = f->c.group_size;
    q8_quantize_kernel<<<rows, NORM_THREADS, 0, f->stream>>>(f->xq, f->xs, x, k, gs);
    CUDA_STEP(cudaGetLastError());
    int rows_per_block = Q8_THREADS / 32, n_tiles = (rows + Q8_TOK_TILE - 1) / Q8_TOK_TILE;
    dim3 grid((unsigned)((m + rows_per_block - 1) / rows_per_block),
              (unsigned)(n_tiles < 65535 ? n_tiles : 65535));
    const int8_t *w = wq + off;
    const float *s = ws + off / (size_t)gs;
    bool acc = beta != 0.0f;
    if (gs % 16 == 0)
        q8_matmul_kernel<16>
            <<<grid, Q8_THREADS, 0, f->stream>>>(y, w, s, f->xq, f->xs, rows, m, k, gs, acc);
    else if (gs % 4 == 0)
        q8_matmul_kernel<4>
            <<<grid, Q8_THREADS, 0, f->stream>>>(y, w, s, f->xq, f->xs, rows, m, k, gs, acc);
    else
        q8_matmul_kernel<1>
            <<<grid, Q8_THREADS, 0, f->stream>>>(y, w, s, f->xq, f->xs, rows, m, k, gs, acc);
    CUDA_STEP(cudaGetLastError());
    return LS_OK;
}

static int cuda_step(void *impl, const forward_item_t *items, int n, const int *const *block_tables,
                     int *out_tokens, float *logits)
{
    cuda_fwd_t *f = (cuda_fwd_t *)impl;
    const ckpt_config_t *c = &f->c;
    int dim = c->dim, kv = c->kv_dim, hid = c->hidden_dim, vocab = c->vocab_size;
    if (n <= 0)
        return LS_OK;
    LS_ASSERT(n <= f->max_batch);

    /* pack the inputs */
    uint32_t *h = f->h_in;
    int *tok = (int *)(h + f->off_tok), *tpos = (int *)(h + f->off_pos);
    int *titem = (int *)(h + f->off_item), *last = (int *)(h + f->off_last);
    int *bt_off = (int *)(h + f->off_bt_off), *top_k = (int *)(h + f->off_top_k);
    float *temp = (float *)(h + f->off_temp), *top_p = (float *)(h + f->off_top_p);
    float *coin = (float *)(h + f->off_coin);
    int *bt = (int *)(h + f->off_bt);
    int T = 0, n_bt = 0;
    for (int i = 0; i < n; i++) {
        const forward_item_t *it = &items[i];
        int end = it->pos + it->n_tokens;
        LS_ASSERT(it->n_tokens >= 1 && it->pos >= 0 && end <= c->seq_len);
        LS_ASSERT(T + it->n_tokens <= f->max_step_tokens);
        for (int j = 0; j < it->n_tokens; j++, T++) {
            LS_ASSERT(it->tokens[j] >= 0 && it->tokens[j] < vocab);
            tok[T] = it->tokens[j];
            tpos[T] = it->pos + j;
            titem[T] = i;
        }
        last[i] = T - 1;
        bt_off[i] = n_bt;
        int blocks = (end + KVB - 1) / KVB;
        for (int b = 0; b < blocks; b++) {
            LS_ASSERT(block_tables[i][b] >= 0 && block_tables[i][b] < f->n_blocks);
            bt[n_bt++] = block_tables[i][b];
        }
        top_k[i] = it->sampler->top_k;
        temp[i] = it->sampler->temperature;
        top_p[i] = it->sampler->top_p;
        coin[i] = it->coin;
    }

    CUDA_STEP(cudaSetDevice(f->device));
    CUDA_STEP(cudaMemcpyAsync(f->d_in, f->h_in, (f->off_bt + n_bt) * 4, cudaMemcpyHostToDevice,
                              f->stream));
    step_in_t in = step_in(f);
    size_t qkv_rows = (size_t)dim + 2 * kv;
    size_t layer_kv = (size_t)f->n_blocks * KVB * kv;

    int rc;
    if (f->q8)
        embed_q8_kernel<<<T, NORM_THREADS, 0, f->stream>>>(f->x, f->emb_q, f->emb_s, in.tok, dim,
                                                           c->group_size);
    else
        embed_kernel<<<T, NORM_THREADS, 0, f->stream>>>(f->x, f->emb, in.tok, dim);
    CUDA_STEP(cudaGetLastError());
    for (int l = 0; l < c->n_layers; l++) {
        rmsnorm_kernel<<<T, NORM_THREADS, 0, f->stream>>>(f->xb, f->x, f->rms_att + (size_t)l * dim,
                                                          dim, NULL);
        CUDA_STEP(cudaGetLastError());
        if ((rc = matmul(f, f->wqkv, f->wqkv_q, f->wqkv_s, l * qkv_rows * dim, (int)qkv_rows, dim,
                         f->xb, T, f->qkv, 0.0f)) != LS_OK)
            return rc;
        float *kc = f->k_cache + l * layer_kv, *vc = f->v_cache + l * layer_kv;
        rope_kv_kernel<<<T, NORM_THREADS, 0, f->stream>>>(f->qkv, kc, vc, in, dim, kv, c->head_dim,
                                                          f->rope_cos, f->rope_sin);
        CUDA_STEP(cudaGetLastError());
        attention_kernel<<<T * c->n_heads, ATT_THREADS, f->att_smem, f->stream>>>(
            f->att, f->qkv, kc, vc, in, c->n_heads, c->n_kv_heads, c->head_dim, dim, kv);
        CUDA_STEP(cudaGetLastError());
        if ((rc = matmul(f, f->wo, f->wo_q, f->wo_s, (size_t)l * dim * dim, dim, dim, f->att, T,
                         f->x, 1.0f)) != LS_OK)
            return rc;

        rmsnorm_kernel<<<T, NORM_THREADS, 0, f->stream>>>(f->xb, f->x, f->rms_ffn + (size_t)l * dim,
                                                          dim, NULL);
        CUDA_STEP(cudaGetLastError());
        if ((rc = matmul(f, f->w13, f->w13_q, f->w13_s, (size_t)l * 2 * hid * dim, 2 * hid, dim,
                         f->xb, T, f->gu, 0.0f)) != LS_OK)
            return rc;
        size_t n_h = (size_t)T * hid;
        int grid = (int)((n_h + NORM_THREADS - 1) / NORM_THREADS);
        swiglu_kernel<<<grid, NORM_THREADS, 0, f->stream>>>(f->hb, f->gu, hid, n_h);
        CUDA_STEP(cudaGetLastError());
        if ((rc = matmul(f, f->w2, f->w2_q, f->w2_s, (size_t)l * dim * hid, dim, hid, f->hb, T,
                         f->x, 1.0f)) != LS_OK)
            return rc;
    }
    rmsnorm_kernel<<<n, NORM_THREADS, 0, f->stream>>>(f->xl, f->x, f->rms_final, dim, in.item_last);
    CUDA_STEP(cudaGetLastError());
    if ((rc = matmul(f, f->wcls, f->wcls_q, f->wcls_s, 0, vocab, dim, f->xl, n, f->logits, 0.0f)) !=
        LS_OK)
        return rc;
    if (logits)
        CUDA_STEP(cudaMemcpyAsync(logits, f->logits, (size_t)n * vocab * 4, cudaMemcpyDeviceToHost,
                                  f->stream));
    sample_kernel<<<n, SAMPLE_THREADS, 0, f->stream>>>(f->out_tok, f->probs, f->logits, vocab, in);
    CUDA_STEP(cudaGetLastError());
    CUDA_STEP(cudaMemcpyAsync(f->h_out_tok, f->out_tok, (size_t)n * 4, cudaMemcpyDeviceToHost,
                              f->stream));
    CUDA_STEP(cudaStreamSynchronize(f->stream));
    for (int i = 0; i < n; i++) {
        if (f->h_out_tok[i] < 0 || f->h_out_tok[i] >= vocab) {
            LS_LOG_ERROR(MOD, "sampling picked an invalid token item=%d token=%d", i,
                         f->h_out_tok[i]);
            return LS_ERR_INTERNAL;
        }
        out_tokens[i] = f->h_out_tok[i];
    }
    return LS_OK;
}

static const char *cuda_device_name(void *impl)
{
    return ((cuda_fwd_t *)impl)->device_name;
}

/* Sets up everything but the weights' contents; false with a reason in err. */
static bool cuda_setup(cuda_fwd_t *f, const ckpt_t *ck, char *err, size_t err_len)
{
    cudaError_t e;
    cudaDeviceProp prop;
    if ((e = cudaSetDevice(f->device)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&prop, f->device)) != cudaSuccess) {
        if (err_len)
            snprintf(err, err_len, "cuda: selecting device %d: %s", f->device,
                     cudaGetErrorString(e));
        return false;
    }
    int drv = 0, rt = 0;
    (void)cudaDriverGetVersion(&drv);
    (void)cudaRuntimeGetVersion(&rt);
    /* cudaDeviceProp.name is 256 bytes, device_name 320: the name is cut to fit */
    snprintf(f->device_name, sizeof(f->device_name),
             "%.200s (sm_%d%d, %zu GiB, driver CUDA %d.%d, runtime %d.%d)", prop.name,
             prop.major % 100, prop.minor % 100, (size_t)(prop.totalGlobalMem >> 30) % 100000,
             drv / 1000 % 100, drv % 1000 / 10 % 100, rt / 1000 % 100, rt % 1000 / 10 % 100);

    /* attention keeps a score per context position in shared memory */
    f->att_smem = ((size_t)f->c.head_dim + ATT_THREADS + (size_t)f->c.seq_len) * sizeof(float);
    int smem_optin = 0;
    cudaFuncAttributes fa;
    if ((e = cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                    f->device)) != cudaSuccess ||
        (e = cudaFuncGetAttributes(&fa, attention_kernel)) != cudaSuccess) {
        set_err(err, err_len, "cuda: %s: %s", "reading the shared-memory limits", e);
        return false;
    }
    size_t smem_max = (size_t)smem_optin - fa.sharedSizeBytes;
    if (f->att_smem > smem_max) {
        if (err_len)
            snprintf(err, err_len,
                     "cuda: seq_len %d needs %zu bytes of shared memory per attention block; "
                     "the device allows %zu",
                     f->c.seq_len, f->att_smem, smem_max);
        return false;
    }
    /* The limit belongs to the kernel on this device, not to this object: set it to the
     * device's maximum (above 48 KiB needs the opt-in), so that a later object with a
     * shorter seq_len cannot lower it under an earlier one's needs.  A launch still
     * takes only the att_smem it asks for. */
    if ((e = cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)smem_max)) != cudaSuccess) {
        set_err(err, err_len, "cuda: %s: %s", "raising attention shared memory", e);
        return false;
    }

    /* one clear message up front rather than a failure half-way through */
    const ckpt_config_t *c = &f->c;
    size_t dim = c->dim, kv = c->kv_dim, hid = c->hidden_dim, L = c->n_layers;
    size_t vocab = c->vocab_size, T = f->max_step_tokens, B = f->max_batch;
    /* matrix values; Q8_0 holds one int8 per value plus a 4-byte scale per group */
    size_t mat_n = vocab * dim * (ck->cfg.shared_classifier ? 1 : 2) +
                   L * ((dim + 2 * kv) * dim + dim * dim + 3 * hid * dim);
    size_t mat_bytes = f->q8 ? mat_n + mat_n / c->group_size * 4 : 4 * mat_n;
    size_t w_bytes = mat_bytes + 4 * (L * 2 * dim + dim + (size_t)c->seq_len * c->head_dim);
    size_t kv_bytes = 2 * 4 * L * (size_t)f->n_blocks * KVB * kv;
    size_t s_bytes =
        4 * (T * (4 * dim + 2 * kv + 3 * hid) + B * (dim + 2 * vocab)) + CUBLAS_WORKSPACE_BYTES;
    if (f->q8) {
        size_t widest = dim > hid ? dim : hid;
        s_bytes += T * widest + T * widest / c->group_size * 4;
    }
    size_t free_b = 0, total_b = 0;
    if ((e = cudaMemGetInfo(&free_b, &total_b)) != cudaSuccess) {
        set_err(err, err_len, "cuda: %s: %s", "reading free device memory", e);
        return false;
    }
    if (w_bytes + kv_bytes + s_bytes > free_b) {
        if (err_len)
            snprintf(err, err_len,
                     "cuda: out of device memory: needs %zu MiB (weights %zu, KV cache %zu, "
                     "scratch %zu) but %s has %zu MiB free",
                     (w_bytes + kv_bytes + s_bytes) >> 20, w_bytes >> 20, kv_bytes >> 20,
                     s_bytes >> 20, prop.name, free_b >> 20);
        return false;
    }

    if ((e = cudaStreamCreateWithFlags(&f->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        set_err(err, err_len, "cuda: %s: %s", "creating a stream", e);
        return false;
    }
    cublasStatus_t s = cublasCreate(&f->blas);
    if (s != CUBLAS_STATUS_SUCCESS) {
        f->blas = NULL;
        if (err_len)
            snprintf(err, err_len, "cuda: creating a cuBLAS handle: %s", cublasGetStatusString(s));
        return false;
    }
    if (!alloc_buffers(f, err, err_len))
        return false;
    if ((s = cublasSetStream(f->blas, f->stream)) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasSetWorkspace(f->blas, f->blas_ws, CUBLAS_WORKSPACE_BYTES)) !=
            CUBLAS_STATUS_SUCCESS ||
        (s = cublasSetMathMode(f->blas, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS) {
        if (err_len)
            snprintf(err, err_len, "cuda: configuring cuBLAS: %s", cublasGetStatusString(s));
        return false;
    }
    return true;
}

/* One decode step of token 0 at position 0 in block 0 with top-k and top-p sampling,
 * so every kernel is loaded now.  Block 0 belongs to no sequence yet, and a sequence
 * writes each position before it reads it, so the garbage left there is never seen. */
static bool warm_up(cuda_fwd_t *f, char *err, size_t err_len)
{
    sampler_t s;
    memset(&s, 0, sizeof(s));
    s.temperature = 1.0f;
    s.top_p = 0.9f;
    s.top_k = 2;
    s.rng = 1;
    int token = 0, block = 0, out = 0;
    const int *table = &block;
    forward_item_t it;
    memset(&it, 0, sizeof(it));
    it.tokens = &token;
    it.n_tokens = 1;
    it.sampler = &s;
    it.coin = 0.5f;
    if (cuda_step(f, &it, 1, &table, &out, NULL) != LS_OK) {
        if (err_len)
            snprintf(err, err_len, "cuda: the warm-up step failed (see the log)");
        return false;
    }
    if (out < 0 || out >= f->c.vocab_size) {
        if (err_len)
            snprintf(err, err_len, "cuda: the warm-up step picked token %d of %d", out,
                     f->c.vocab_size);
        return false;
    }
    return true;
}

static void *cuda_create(const ckpt_t *ck, const forward_config_t *cfg, int n_blocks, char *err,
                         size_t err_len)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count <= 0) {
        (void)cudaGetLastError();
        if (err_len)
            snprintf(err, err_len, "cuda: no usable device (%s)",
                     e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        return NULL;
    }
    if (cfg->cuda_device < 0 || cfg->cuda_device >= count) {
        if (err_len)
            snprintf(err, err_len, "cuda: device %d does not exist (%d present)", cfg->cuda_device,
                     count);
        return NULL;
    }
    LS_ASSERT(n_blocks >= 1 && cfg->max_batch >= 1 && cfg->max_step_tokens >= 1);

    cuda_fwd_t *f = (cuda_fwd_t *)ls_xcalloc(1, sizeof(*f));
    f->device = cfg->cuda_device;
    f->c = ck->cfg;
    f->max_batch = cfg->max_batch;
    f->max_step_tokens = cfg->max_step_tokens;
    f->n_blocks = n_blocks;
    f->max_seq_blocks = (ck->cfg.seq_len + KVB - 1) / KVB;
    f->q8 = ck->format_version == 2;
    LS_ASSERT(!f->q8 || f->c.group_size > 0); /* ckpt_open checked it */
    if (!cuda_setup(f, ck, err, err_len) || !upload_weights(f, ck, err, err_len) ||
        !warm_up(f, err, err_len)) {
        cuda_destroy(f);
        return NULL;
    }
    LS_LOG_INFO(MOD,
                "device ready device=\"%s\" weights=%s kv_blocks=%d max_batch=%d "
                "max_step_tokens=%d",
                f->device_name, f->q8 ? "q8_0" : "fp32", n_blocks, f->max_batch,
                f->max_step_tokens);
    return f;
}

static const forward__backend_t cuda_backend = {
    "cuda", cuda_create, cuda_destroy, cuda_step, cuda_device_name, cuda_inject_fault,
};

extern "C" const forward__backend_t *forward__cuda(void)
{
    return &cuda_backend;
}

/* Asking the runtime is all it takes: without a driver or a device cudaGetDeviceCount
 * returns an error (insufficient driver, no device), which is an answer, not a fault.
 * The reason is logged once at warning level: a GPU machine whose driver is too old
 * for this CUDA must not look like a machine without a GPU. */
extern "C" bool forward__cuda_present(char *why, size_t why_len)
{
    static int warned;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e == cudaSuccess && count > 0)
        return true;
    (void)cudaGetLastError();
    const char *reason = e != cudaSuccess ? cudaGetErrorString(e) : "the runtime found no device";
    if (why_len)
        snprintf(why, why_len, "%s", reason);
    if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
        LS_LOG_WARN(MOD, "no usable CUDA device, the CUDA backend is off error=\"%s\"", reason);
    return false;
}

/* ---- read bandwidth ------------------------------------------------------------- */

__global__ void bw_fill_kernel(float4 *dst, size_t n4)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = (float)(i % 1021) * 0.001f + 1.0f;
        dst[i] = make_float4(v, -v, 0.5f * v, 2.0f * v);
    }
}

/* Reads every float4 once; the sum goes out only if it hits an impossible value, so
 * the loads cannot be dropped and nothing else is written. */
__global__ void bw_read_kernel(const float4 *src, size_t n4, float *sink)
{
    float acc = 0.0f;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n4; i += 4 * stride) {
        float4 a = src[i], b = src[i + stride], c = src[i + 2 * stride], d = src[i + 3 * stride];
        acc += (a.x + a.y + a.z + a.w) + (b.x + b.y + b.z + b.w) + (c.x + c.y + c.z + c.w) +
               (d.x + d.y + d.z + d.w);
    }
    for (; i < n4; i += stride) {
        float4 a = src[i];
        acc += a.x + a.y + a.z + a.w;
    }
    if (acc == -1.0e30f)
        sink[0] = acc;
}

extern "C" double forward_cuda_read_bandwidth(int device, size_t bytes, int repeats, char *err,
                                              size_t err_len)
{
    char why[160];
    if (!forward__cuda_present(why, sizeof(why))) {
        if (err_len)
            snprintf(err, err_len, "no usable CUDA device: %s", why);
        return -1.0;
    }
    size_t n4 = bytes / sizeof(float4);
    if (n4 == 0 || repeats < 1) {
        if (err_len)
            snprintf(err, err_len, "nothing to measure");
        return -1.0;
    }
    float4 *buf = NULL;
    float *sink = NULL;
    cudaEvent_t t0 = NULL, t1 = NULL;
    cudaDeviceProp prop;
    double best = -1.0;
    cudaError_t e;
    if ((e = cudaSetDevice(device)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess ||
        (e = cudaMalloc((void **)&buf, n4 * sizeof(float4))) != cudaSuccess ||
        (e = cudaMalloc((void **)&sink, sizeof(float))) != cudaSuccess ||
        (e = cudaEventCreate(&t0)) != cudaSuccess || (e = cudaEventCreate(&t1)) != cudaSuccess)
        goto out;
    {
        int grid = prop.multiProcessorCount * 8, threads = 512;
        bw_fill_kernel<<<grid, threads>>>(buf, n4);
        bw_read_kernel<<<grid, threads>>>(buf, n4, sink); /* warm-up */
        if ((e = cudaDeviceSynchronize()) != cudaSuccess)
            goto out;
        for (int r = 0; r < repeats; r++) {
            float ms = 0.0f;
            (void)cudaEventRecord(t0);
            bw_read_kernel<<<grid, threads>>>(buf, n4, sink);
            (void)cudaEventRecord(t1);
            if ((e = cudaEventSynchronize(t1)) != cudaSuccess ||
                (e = cudaEventElapsedTime(&ms, t0, t1)) != cudaSuccess)
                goto out;
            double v = ms > 0.0f ? (double)(n4 * sizeof(float4)) / (ms / 1e3) : -1.0;
            best = v > best ? v : best;
        }
    }
out:
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (err_len)
            snprintf(err, err_len, "cuda: measuring read bandwidth: %s", cudaGetErrorString(e));
        best = -1.0;
    }
    if (t0)
        (void)cudaEventDestroy(t0);
    if (t1)
        (void)cudaEventDestroy(t1);
    (void)cudaFree(buf);
    (void)cudaFree(sink);
    return best;
}
