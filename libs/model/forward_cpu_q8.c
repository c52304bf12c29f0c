/*
 * forward_cpu_q8.c - the int8 (Q8_0) matmul of the CPU backend (forward_cpu_q8.h).
 *
 * The kernels are tiled as the fp32 ones are (forward_cpu_matmul.c): a tile of ROWS
 * weight rows by COLS token rows keeps ROWS * COLS float accumulators; rows are the
 * outer loop so a tile's weight rows stay in L1 while every token row goes past them,
 * and the weights stream from memory once per step.  Per block of 64 (VNNI) or 32
 * (AVX2) bytes a tile does one integer dot product per (row, token), converts it to
 * float and adds it in times the block's two scales; the integer sums of one block are
 * exact, so the result differs from runq.c's (one int32 per group, then floats) only in
 * the order the floats are added.
 */
#include "model/forward_cpu_q8.h"
#include "model/forward_cpu_matmul.h"
#include "model/forward_cpu_simd.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* Token rows per pass over a weight slice, as for fp32: a chunk stays in L2. */
#define Q8_TOKEN_CHUNK 64

/* Weight rows prefetched ahead of a single-token pass: int8 rows are a quarter of
 * fp32 ones, so twice as many rows as the fp32 kernel's are still half the bytes. */
#ifndef Q8_PREFETCH_ROWS_1
#define Q8_PREFETCH_ROWS_1 32
#endif
#ifndef Q8_PREFETCH_ROWS_N
#define Q8_PREFETCH_ROWS_N 16
#endif

forward_q8_kernel_t forward__q8_kernel(int group_size)
{
    forward__kernels_init();
    forward_kernels_level_t l = forward__kernels_level();
    if (l >= FWD_K_AVX512_VNNI && group_size % 4 == 0)
        return Q8K_VNNI;
    if (l >= FWD_K_AVX2 && group_size % 32 == 0)
        return Q8K_AVX2;
    return Q8K_GENERIC;
}

const char *forward__q8_kernel_name(forward_q8_kernel_t k)
{
    return k == Q8K_VNNI ? "avx512-vnni" : k == Q8K_AVX2 ? "avx2" : "generic";
}

size_t forward__q8_bias_count(int rows, int cols, int group_size)
{
    if (forward__q8_kernel(group_size) != Q8K_VNNI)
        return 0;
    return (size_t)rows * (size_t)(cols / group_size);
}

void forward__q8_bias_make(forward_q8_kernel_t k, const ckpt_q8_t *m, int rows, int cols,
                           int group_size, int32_t *bias)
{
    if (k != Q8K_VNNI)
        return;
    /* vpdpbusd adds (x + 128) * w; each group's 128 * sum(w) is taken back out through
     * the accumulators' starting values: -8 * sum in each of the 16 int32 lanes when
     * the lanes share one dot product, 16 times that when each lane is a token. */
    size_t groups = (size_t)rows * (size_t)(cols / group_size);
    for (size_t g = 0; g < groups; g++) {
        const int8_t *q = m->q + g * (size_t)group_size;
        int32_t sum = 0;
        for (int i = 0; i < group_size; i++)
            sum += q[i];
        bias[g] = -8 * sum;
    }
}

void forward__q8_row(const ckpt_q8_t *m, int cols, int group_size, int r, float *out)
{
    const int8_t *q = m->q + (size_t)r * (size_t)cols;
    const float *s = m->s + (size_t)r * (size_t)(cols / group_size);
    for (int i = 0; i < cols; i++)
        out[i] = (float)q[i] * s[i / group_size];
}

/* ---- token rows ------------------------------------------------------------------- */

static size_t round64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

/* Rows rounded up to whole blocks of 16 for the transposed copy. */
static size_t rows16(int n_tok)
{
    return ((size_t)n_tok + 15) & ~(size_t)15;
}

size_t forward__q8rows_bytes(int n_tok, int k_dim, int group_size)
{
    size_t ng = (size_t)(k_dim / group_size);
    size_t rows = round64((size_t)n_tok * (size_t)k_dim) + round64((size_t)n_tok * ng * 4);
    /* blocks of 2, 4, 8 or 16 rows: at most rows16 rows of values, and scales for
     * 16 lanes of every block (two blocks of 8 for 12 rows: 32 lanes) */
    size_t transposed =
        round64(rows16(n_tok) * (size_t)k_dim) + (rows16(n_tok) + 32) * ng * sizeof(float);
    return rows + transposed;
}

/* Token rows per block of the broadcast form for n_tok rows: a block fills the 64
 * bytes of a vector with 64 / T bytes of each of its T rows, so fewer rows take
 * fewer, wider slices rather than leaving lanes idle. */
static int bcast_rows_per_block(int n_tok, int group_size)
{
    int t = n_tok <= 2 ? 2 : n_tok <= 4 ? 4 : n_tok <= 12 ? 8 : 16;
    while (t < 16 && group_size % (64 / t)) /* a slice must not straddle two groups */
        t *= 2;
    return t;
}

/* The broadcast form's copy of r's rows (see forward_q8rows_t). */
static void q8rows_transpose(forward_q8rows_t *r, int8_t *qt, float *st)
{
    int T = r->block_rows, C = 64 / T, lanes = 16 / T; /* int32 lanes per row */
    size_t nq = (size_t)r->k_dim / (size_t)C, ng = (size_t)(r->k_dim / r->group_size);
    size_t blocks = ((size_t)r->n_tok + (size_t)T - 1) / (size_t)T;
    for (size_t b = 0; b < blocks; b++)
        for (int i = 0; i < T; i++) {
            size_t t = b * (size_t)T + (size_t)i;
            int8_t *d = qt + b * nq * 64 + (size_t)i * (size_t)C;
            float *ds = st + b * ng * 16 + (size_t)i * (size_t)lanes;
            bool real = t < (size_t)r->n_tok;
            const int8_t *src = r->q + t * (size_t)r->k_dim;
            for (size_t q = 0; q < nq; q++) {
                if (real)
                    memcpy(d + q * 64, src + q * (size_t)C, (size_t)C);
                else
                    memset(d + q * 64, 0, (size_t)C);
            }
            for (size_t g = 0; g < ng; g++)
                for (int l = 0; l < lanes; l++)
                    ds[g * 16 + (size_t)l] = real ? r->s[t * ng + g] : 0.0f;
        }
}

/* One row of n values in groups of gs, as runq.c's quantize (scale = max|x| / 127),
 * plus 128 when offset. */
static void quantize_c(int8_t *q, float *s, const float *x, int n, int gs, bool offset)
{
    for (int g = 0; g < n / gs; g++) {
        const float *xg = x + (size_t)g * (size_t)gs;
        float amax = 0.0f;
        for (int i = 0; i < gs; i++)
            amax = fmaxf(amax, fabsf(xg[i]));
        float scale = amax / 127.0f;
        float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        s[g] = scale;
        for (int i = 0; i < gs; i++) {
            int v = (int)roundf(xg[i] * inv);
            v = v > 127 ? 127 : v < -127 ? -127 : v;
            q[(size_t)g * gs + i] = (int8_t)(offset ? (uint8_t)(v + 128) : (uint8_t)v);
        }
    }
}

#if MM_HAVE_X86
/* quantize_c with 16 floats per vector (gs a multiple of 16); rounds half to even
 * where roundf rounds away from zero, which only a value exactly between two steps
 * can tell apart. */
static MM_512 void quantize_512(int8_t *q, float *s, const float *x, int n, int gs, bool offset)
{
    const __m128i flip = _mm_set1_epi8((char)0x80);
    for (int g = 0; g < n / gs; g++) {
        const float *xg = x + (size_t)g * (size_t)gs;
        __m512 m = _mm512_setzero_ps();
        for (int i = 0; i < gs; i += 16)
            m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(xg + i)));
        float scale = _mm512_reduce_max_ps(m) / 127.0f;
        __m512 inv = _mm512_set1_ps(scale > 0.0f ? 1.0f / scale : 0.0f);
        s[g] = scale;
        for (int i = 0; i < gs; i += 16) {
            __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xg + i), inv));
            v = _mm512_max_epi32(_mm512_min_epi32(v, _mm512_set1_epi32(127)),
                                 _mm512_set1_epi32(-127));
            __m128i b = _mm512_cvtepi32_epi8(v);
            if (offset)
                b = _mm_xor_si128(b, flip);
            _mm_storeu_si128((__m128i *)(q + (size_t)g * gs + i), b);
        }
    }
}
#endif

void forward__q8rows_make(forward_q8rows_t *r, forward_q8_kernel_t k, const float *x, int ldx,
                          int n_tok, int k_dim, int group_size, void *buf)
{
    int8_t *q = buf;
    float *s = (float *)((char *)buf + round64((size_t)n_tok * (size_t)k_dim));
    int ng = k_dim / group_size;
    char *tbuf = (char *)s + round64((size_t)n_tok * (size_t)ng * 4);
    /* One row whose groups are not whole 64-byte vectors: the AVX2 kernel reads them
     * as 32-byte blocks, where the VNNI one would mask half of each vector (measured
     * on the stories15M shape, group 32: 1.5-2x faster single-stream decode). */
    if (k == Q8K_VNNI && n_tok == 1 && group_size % 64 != 0 && group_size % 32 == 0)
        k = Q8K_AVX2;
    bool offset = k == Q8K_VNNI;
    for (int t = 0; t < n_tok; t++) {
        int8_t *qt = q + (size_t)t * (size_t)k_dim;
        float *st = s + (size_t)t * (size_t)ng;
        const float *xt = x + (size_t)t * (size_t)ldx;
#if MM_HAVE_X86
        if (forward__kernels_level() >= FWD_K_AVX512 && group_size % 16 == 0) {
            quantize_512(qt, st, xt, k_dim, group_size, offset);
            continue;
        }
#endif
        quantize_c(qt, st, xt, k_dim, group_size, offset);
    }
    r->q = q;
    r->s = s;
    r->n_tok = n_tok;
    r->k_dim = k_dim;
    r->group_size = group_size;
    r->kernel = k;
    r->qt = NULL;
    r->st = NULL;
    r->block_rows = 0;
    if (k == Q8K_VNNI && n_tok >= 2) {
        r->block_rows = bcast_rows_per_block(n_tok, group_size);
        int8_t *qt = (int8_t *)tbuf;
        float *st = (float *)(tbuf + round64(rows16(n_tok) * (size_t)k_dim));
        q8rows_transpose(r, qt, st);
        r->qt = qt;
        r->st = st;
    }
}

static inline void prefetch_bytes(const void *from, size_t bytes)
{
    const char *p = from, *end = p + bytes;
    for (; p < end; p += 64)
        __builtin_prefetch(p, 0, 2);
}

/* Asks for rows [o, o + rows) of w (clamped to o_end) to be brought into the caches:
 * their values and, from their own arrays, their scales and VNNI sums, which the
 * hardware prefetcher, following the values, would not fetch early enough. */
static inline void prefetch_q8_rows(const forward_q8mat_t *w, size_t k_dim, size_t ng, int o,
                                    int rows, int o_end)
{
    if (o >= o_end)
        return;
    if (o + rows > o_end)
        rows = o_end - o;
    prefetch_bytes(w->q + (size_t)o * k_dim, (size_t)rows * k_dim);
    prefetch_bytes(w->s + (size_t)o * ng, (size_t)rows * ng * sizeof(float));
    if (w->bias)
        prefetch_bytes(w->bias + (size_t)o * ng, (size_t)rows * ng * sizeof(int32_t));
}

/* ---- plain C ---------------------------------------------------------------------- */

static void matmul_q8_c(const forward_q8mat_t *w, int o0, int o1, const forward_q8rows_t *x,
                        float *y, int ldy, bool accumulate)
{
    int kd = x->k_dim, gs = x->group_size, ng = kd / gs;
    for (int o = o0; o < o1; o++) {
        const int8_t *wr = w->q + (size_t)o * (size_t)kd;
        const float *ws = w->s + (size_t)o * (size_t)ng;
        for (int t = 0; t < x->n_tok; t++) {
            const int8_t *xr = x->q + (size_t)t * (size_t)kd;
            const float *xs = x->s + (size_t)t * (size_t)ng;
            float val = 0.0f;
            for (int g = 0; g < ng; g++) {
                int32_t iv = 0;
                for (int i = g * gs; i < (g + 1) * gs; i++)
                    iv += (int32_t)wr[i] * (int32_t)xr[i];
                val += (float)iv * ws[g] * xs[g];
            }
            float *yo = y + (size_t)t * (size_t)ldy + o;
            *yo = accumulate ? *yo + val : val;
        }
    }
}

#if MM_HAVE_X86
/* ---- AVX2: 32-byte blocks, |w| times x with w's sign ------------------------------ */

static MM_AVX2_INLINE void tile_q8_avx2(const int8_t *w, const float *ws, size_t kd, size_t ng,
                                        int bpg, const int8_t *x, const float *xs, float *y,
                                        size_t ldy, bool accumulate, const int ROWS,
                                        const int COLS)
{
    __m256 acc[4][3];
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 4
        for (int c = 0; c < COLS; c++)
            acc[r][c] = _mm256_setzero_ps();
    for (size_t g = 0; g < ng; g++) {
        __m256 sx[3];
#pragma GCC unroll 4
        for (int c = 0; c < COLS; c++)
            sx[c] = _mm256_set1_ps(xs[c * ng + g]);
        for (int b = 0; b < bpg; b++) {
            size_t k = (g * (size_t)bpg + (size_t)b) * 32;
            __m256i xv[3];
#pragma GCC unroll 4
            for (int c = 0; c < COLS; c++)
                xv[c] = _mm256_loadu_si256((const __m256i *)(x + c * kd + k));
#pragma GCC unroll 4
            for (int r = 0; r < ROWS; r++) {
                __m256i wv = _mm256_loadu_si256((const __m256i *)(w + r * kd + k));
                __m256i aw = _mm256_sign_epi8(wv, wv);
                __m256 sw = _mm256_set1_ps(ws[r * ng + g]);
#pragma GCC unroll 4
                for (int c = 0; c < COLS; c++) {
                    __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv[c], wv));
                    __m256 d = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
                    acc[r][c] = _mm256_fmadd_ps(d, _mm256_mul_ps(sw, sx[c]), acc[r][c]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 4
        for (int c = 0; c < COLS; c++) {
            float s = hsum8(acc[r][c]);
            float *yo = y + c * ldy + r;
            *yo = accumulate ? *yo + s : s;
        }
}

typedef void (*q8_tile_fn_t)(const int8_t *, const float *, size_t, size_t, int, const int8_t *,
                             const float *, float *, size_t, bool);

#define Q8_TILE_AVX2(R, C)                                                                         \
    static MM_AVX2 void tile_q8_avx2_##R##x##C(const int8_t *w, const float *ws, size_t kd,        \
                                               size_t ng, int bpg, const int8_t *x,                \
                                               const float *xs, float *y, size_t ldy, bool acc)    \
    {                                                                                              \
        tile_q8_avx2(w, ws, kd, ng, bpg, x, xs, y, ldy, acc, R, C);                                \
    }
Q8_TILE_AVX2(4, 1)
Q8_TILE_AVX2(4, 2)
Q8_TILE_AVX2(4, 3)
Q8_TILE_AVX2(2, 1)
Q8_TILE_AVX2(2, 2)
Q8_TILE_AVX2(2, 3)
Q8_TILE_AVX2(1, 1)
Q8_TILE_AVX2(1, 2)
Q8_TILE_AVX2(1, 3)

/* [rows 1, 2, 4 -> 0, 1, 2][cols - 1] */
static const q8_tile_fn_t g_q8_avx2[3][3] = {
    {tile_q8_avx2_1x1, tile_q8_avx2_1x2, tile_q8_avx2_1x3},
    {tile_q8_avx2_2x1, tile_q8_avx2_2x2, tile_q8_avx2_2x3},
    {tile_q8_avx2_4x1, tile_q8_avx2_4x2, tile_q8_avx2_4x3},
};

/* ---- AVX-512 VNNI: 64-byte blocks, (x + 128) times w ------------------------------ */
#define Q8_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))
#define Q8_VNNI_INLINE __attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) inline

/* One token row against ROWS weight rows taken one after another, so the weights are
 * read in address order (rather than down several rows at once); two
 * accumulators per row alternate between groups. */
static Q8_VNNI_INLINE void tile_q8_vnni_seq(const int8_t *w, const float *ws, const int32_t *wb,
                                            size_t kd, size_t ng, int gs, const int8_t *x,
                                            const float *xs, float *y, bool accumulate,
                                            const int ROWS)
{
    /* a group's last gs % 64 bytes: masked loads read zeros past them (zero token
     * bytes add nothing; the group sum in the starting value covers its bytes only) */
    int tail = gs % 64;
    __mmask64 tail_mask = _cvtu64_mask64(tail ? ~0ull >> (64 - tail) : 0);
    __m512 acc[4];
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; r++) {
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        const int8_t *wr = w + r * kd;
        for (size_t g = 0; g < ng; g++) {
            __m512 sc = _mm512_set1_ps(ws[r * ng + g] * xs[g]);
            __m512i dp = _mm512_set1_epi32(wb[r * ng + g]);
            size_t k = g * (size_t)gs, end = k + (size_t)(gs - tail);
            for (; k < end; k += 64)
                dp = _mm512_dpbusd_epi32(dp, _mm512_loadu_si512((const void *)(x + k)),
                                         _mm512_loadu_si512((const void *)(wr + k)));
            if (tail)
                dp = _mm512_dpbusd_epi32(dp, _mm512_maskz_loadu_epi8(tail_mask, x + k),
                                         _mm512_maskz_loadu_epi8(tail_mask, wr + k));
            if (g & 1)
                a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), sc, a1);
            else
                a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), sc, a0);
        }
        acc[r] = _mm512_add_ps(a0, a1);
    }
    if (ROWS == 4) {
        __m128 s = reduce4_512(acc[0], acc[1], acc[2], acc[3]);
        if (accumulate)
            s = _mm_add_ps(s, _mm_loadu_ps(y));
        _mm_storeu_ps(y, s);
        return;
    }
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; r++) {
        float v = _mm512_reduce_add_ps(acc[r]);
        y[r] = accumulate ? y[r] + v : v;
    }
}

static Q8_VNNI void tile_q8_vnni_seq_4(const int8_t *w, const float *ws, const int32_t *wb,
                                       size_t kd, size_t ng, int gs, const int8_t *x,
                                       const float *xs, float *y, bool acc)
{
    tile_q8_vnni_seq(w, ws, wb, kd, ng, gs, x, xs, y, acc, 4);
}

static Q8_VNNI void tile_q8_vnni_seq_1(const int8_t *w, const float *ws, const int32_t *wb,
                                       size_t kd, size_t ng, int gs, const int8_t *x,
                                       const float *xs, float *y, bool acc)
{
    tile_q8_vnni_seq(w, ws, wb, kd, ng, gs, x, xs, y, acc, 1);
}


/* Broadcast form: T token rows per vector, each in 16 / T int32 lanes.  Per C = 64 / T
 * values of k a tile broadcasts each weight row's C bytes against V vectors of token
 * rows transposed that way, so a group's dot products accumulate in int32 lanes with
 * no reduction, and are converted and scaled once per group: with T = 16 and group
 * size 64, 16 vpdpbusd for about 4 other instructions, where the dot-product form
 * needs 3 others for every one.  The lanes of one token row are added at the end. */
static Q8_VNNI_INLINE __m512i bcast_w(const int8_t *p, const int T)
{
    if (T == 16) {
        int32_t v;
        memcpy(&v, p, 4);
        return _mm512_set1_epi32(v);
    }
    if (T == 8) {
        long long v;
        memcpy(&v, p, 8);
        return _mm512_set1_epi64(v);
    }
    if (T == 4)
        return _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)p));
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)p));
}

static Q8_VNNI_INLINE void btile_q8_vnni(const int8_t *w, const float *ws, const int32_t *wb,
                                         size_t kd, size_t ng, int gs, const int8_t *xt,
                                         const float *st, float *y, size_t ldy, int n_tok,
                                         bool accumulate, const int R, const int V, const int T,
                                         const int GS)
{
    /* GS: the group size as a constant (0: gs), so the common ones unroll fully */
    const int C = 64 / T, L = 16 / T, qn = (GS ? GS : gs) / C;
    size_t nq = kd / (size_t)C;
    __m512 acc[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < V; v++)
            acc[r][v] = _mm512_setzero_ps();
    for (size_t g = 0; g < ng; g++) {
        __m512i dp[4][2];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            /* the group's -128 * sum(w) spread over the L lanes of each token row */
            __m512i b = _mm512_set1_epi32(wb[r * ng + g] * T);
#pragma GCC unroll 2
            for (int v = 0; v < V; v++)
                dp[r][v] = b;
        }
        size_t q0 = g * (size_t)qn;
#pragma GCC unroll 16
        for (int qi = 0; qi < qn; qi++) {
            size_t q = q0 + (size_t)qi;
            __m512i xv[2];
#pragma GCC unroll 2
            for (int v = 0; v < V; v++)
                xv[v] = _mm512_load_si512((const void *)(xt + ((size_t)v * nq + q) * 64));
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                __m512i wv = bcast_w(w + r * kd + q * (size_t)C, T);
#pragma GCC unroll 2
                for (int v = 0; v < V; v++)
                    dp[r][v] = _mm512_dpbusd_epi32(dp[r][v], xv[v], wv);
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m512 sw = _mm512_set1_ps(ws[r * ng + g]);
#pragma GCC unroll 2
            for (int v = 0; v < V; v++) {
                __m512 sx = _mm512_load_ps(st + ((size_t)v * ng + g) * 16);
                acc[r][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp[r][v]), _mm512_mul_ps(sw, sx),
                                            acc[r][v]);
            }
        }
    }
    /* out to y's columns: R adjacent outputs of each token row */
    float out[4][16];
#pragma GCC unroll 2
    for (int v = 0; v < V; v++) {
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            _mm512_storeu_ps(out[r], acc[r][v]);
        int n = n_tok - v * T < T ? n_tok - v * T : T;
        float *yv = y + (size_t)v * (size_t)T * ldy;
        for (int i = 0; i < n; i++)
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                float sum = 0.0f;
#pragma GCC unroll 8
                for (int l = 0; l < L; l++)
                    sum += out[r][i * L + l];
                float *yo = yv + (size_t)i * ldy + r;
                *yo = accumulate ? *yo + sum : sum;
            }
    }
}

typedef void (*q8_btile_fn_t)(const int8_t *, const float *, const int32_t *, size_t, size_t, int,
                              const int8_t *, const float *, float *, size_t, int, bool);

#define Q8_BTILE_VNNI(R, V, T)                                                                     \
    static Q8_VNNI void btile_q8_vnni_##R##x##V##_##T(                                             \
        const int8_t *w, const float *ws, const int32_t *wb, size_t kd, size_t ng, int gs,         \
        const int8_t *xt, const float *st, float *y, size_t ldy, int n_tok, bool acc)              \
    {                                                                                              \
        if (gs == 64)                                                                              \
            btile_q8_vnni(w, ws, wb, kd, ng, gs, xt, st, y, ldy, n_tok, acc, R, V, T, 64);         \
        else if (gs == 32)                                                                         \
            btile_q8_vnni(w, ws, wb, kd, ng, gs, xt, st, y, ldy, n_tok, acc, R, V, T, 32);         \
        else                                                                                       \
            btile_q8_vnni(w, ws, wb, kd, ng, gs, xt, st, y, ldy, n_tok, acc, R, V, T, 0);          \
    }
#define Q8_BTILES_VNNI(T)                                                                          \
    Q8_BTILE_VNNI(4, 1, T)                                                                         \
    Q8_BTILE_VNNI(4, 2, T)                                                                         \
    Q8_BTILE_VNNI(2, 1, T)                                                                         \
    Q8_BTILE_VNNI(2, 2, T)                                                                         \
    Q8_BTILE_VNNI(1, 1, T)                                                                         \
    Q8_BTILE_VNNI(1, 2, T)
Q8_BTILES_VNNI(2)
Q8_BTILES_VNNI(4)
Q8_BTILES_VNNI(8)
Q8_BTILES_VNNI(16)

/* [T 2, 4, 8, 16 -> 0..3][rows 1, 2, 4 -> 0, 1, 2][vectors - 1] */
#define Q8_BTILE_ROW(T)                                                                            \
    {                                                                                              \
        {btile_q8_vnni_1x1_##T, btile_q8_vnni_1x2_##T},                                            \
            {btile_q8_vnni_2x1_##T, btile_q8_vnni_2x2_##T},                                        \
        {                                                                                          \
            btile_q8_vnni_4x1_##T, btile_q8_vnni_4x2_##T                                           \
        }                                                                                          \
    }
static const q8_btile_fn_t g_q8_bvnni[4][3][2] = {Q8_BTILE_ROW(2), Q8_BTILE_ROW(4),
                                                  Q8_BTILE_ROW(8), Q8_BTILE_ROW(16)};

static void matmul_q8_vnni_bcast(const forward_q8mat_t *w, int o0, int o1,
                                 const forward_q8rows_t *x, float *y, int ldy, bool accumulate)
{
    size_t kd = (size_t)x->k_dim, ng = kd / (size_t)x->group_size, ly = (size_t)ldy;
    int T = x->block_rows, ti = T == 2 ? 0 : T == 4 ? 1 : T == 8 ? 2 : 3;
    int blocks = (x->n_tok + T - 1) / T;
    for (int o = o0; o < o1;) {
        int rows = o1 - o >= 4 ? 4 : o1 - o >= 2 ? 2 : 1;
        int ri = rows == 4 ? 2 : rows - 1;
        prefetch_q8_rows(w, kd, ng, o + Q8_PREFETCH_ROWS_N, rows, o1);
        const int8_t *wr = w->q + o * kd;
        const float *ws = w->s + o * ng;
        const int32_t *wb = w->bias + o * ng;
        /* a tile's rows (4 x kd bytes) stay in L1 while every block of tokens goes by */
        for (int b = 0; b < blocks;) {
            int v = blocks - b >= 2 ? 2 : 1;
            int t = b * T;
            g_q8_bvnni[ti][ri][v - 1](wr, ws, wb, kd, ng, x->group_size, x->qt + (size_t)b * 64 * (kd / (size_t)(64 / T)),
                                      x->st + (size_t)b * 16 * ng, y + t * ly + o, ly, x->n_tok - t,
                                      accumulate);
            b += v;
        }
        o += rows;
    }
}

static void matmul_q8_vnni(const forward_q8mat_t *w, int o0, int o1, const forward_q8rows_t *x,
                           float *y, int ldy, bool accumulate)
{
    if (x->qt) {
        matmul_q8_vnni_bcast(w, o0, o1, x, y, ldy, accumulate);
        return;
    }
    /* One token row (decode of one sequence): four weight rows at a time, each read in
     * address order.  The first rows are asked for at once, rather than met one miss at
     * a time. */
    size_t kd = (size_t)x->k_dim, ng = kd / (size_t)x->group_size;
    int gs = x->group_size;
    prefetch_q8_rows(w, kd, ng, o0, Q8_PREFETCH_ROWS_1, o1);
    for (int t = 0; t < x->n_tok; t++) {
        const int8_t *xq = x->q + (size_t)t * kd;
        const float *xs = x->s + (size_t)t * ng;
        float *yt = y + (size_t)t * (size_t)ldy;
        int o = o0;
        for (; o + 4 <= o1; o += 4) {
            prefetch_q8_rows(w, kd, ng, o + Q8_PREFETCH_ROWS_1, 4, o1);
            tile_q8_vnni_seq_4(w->q + o * kd, w->s + o * ng, w->bias + o * ng, kd, ng, gs, xq, xs,
                               yt + o, accumulate);
        }
        for (; o < o1; o++)
            tile_q8_vnni_seq_1(w->q + o * kd, w->s + o * ng, w->bias + o * ng, kd, ng, gs, xq, xs,
                               yt + o, accumulate);
    }
}

static void matmul_q8_avx2(const forward_q8mat_t *w, int o0, int o1, const forward_q8rows_t *x,
                           float *y, int ldy, bool accumulate)
{
    size_t kd = (size_t)x->k_dim, ng = kd / (size_t)x->group_size, ly = (size_t)ldy;
    int bpg = x->group_size / 32;
    int prefetch = x->n_tok == 1 ? Q8_PREFETCH_ROWS_1 : Q8_PREFETCH_ROWS_N;
    for (int t0 = 0; t0 < x->n_tok; t0 += Q8_TOKEN_CHUNK) {
        int t1 = x->n_tok - t0 < Q8_TOKEN_CHUNK ? x->n_tok : t0 + Q8_TOKEN_CHUNK;
        for (int o = o0; o < o1;) {
            int rows = o1 - o >= 4 ? 4 : o1 - o >= 2 ? 2 : 1;
            int ri = rows == 4 ? 2 : rows - 1;
            prefetch_q8_rows(w, kd, ng, o + prefetch, rows, o1);
            const int8_t *wr = w->q + o * kd;
            const float *ws = w->s + o * ng;
            for (int t = t0; t < t1;) {
                int cols = t1 - t >= 3 ? 3 : t1 - t;
                g_q8_avx2[ri][cols - 1](wr, ws, kd, ng, bpg, x->q + t * kd, x->s + t * ng,
                                        y + t * ly + o, ly, accumulate);
                t += cols;
            }
            o += rows;
        }
    }
}
#endif

void forward__matmul_q8(const forward_q8mat_t *w, int o0, int o1, const forward_q8rows_t *x,
                        float *y, int ldy, bool accumulate)
{
    if (o1 <= o0 || x->n_tok <= 0)
        return;
#if MM_HAVE_X86
    if (x->kernel == Q8K_VNNI) {
        matmul_q8_vnni(w, o0, o1, x, y, ldy, accumulate);
        return;
    }
    if (x->kernel == Q8K_AVX2) {
        matmul_q8_avx2(w, o0, o1, x, y, ldy, accumulate);
        return;
    }
#endif
    matmul_q8_c(w, o0, o1, x, y, ldy, accumulate);
}
