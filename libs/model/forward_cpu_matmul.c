/*
 * forward_cpu_matmul.c - matmul, dot and axpy for the CPU backend.
 *
 * Both operands of a step's matmul hold the reduced dimension contiguously (weights
 * [out][in], token rows [n_tok][in]), so the kernel works in dot-product form: a
 * register tile of ROWS weight rows by COLS token rows keeps ROWS * COLS vector
 * accumulators and reduces each to one float at the end.  Rows are the outer loop and
 * tokens the inner one, so a tile's weight rows stay in L1 while every token goes past
 * them: the weights stream from memory once per step and only the (small) token rows
 * are re-read, from L1/L2.  Token rows are taken in chunks of MM_TOKEN_CHUNK so that a
 * chunk of a long prefill stays in L2.
 *
 * One accumulator chain per row reaches about a fifth of the memory bandwidth; the
 * tiles give 8 (decode) to 12 (batch) independent chains.  With AVX-512F and 16 or
 * more token rows, the kernel switches to broadcast form over token rows transposed
 * on the fly (matmul_512_bcast): measured on stories15M at 32 sequences, the
 * dot-product tiles spent about as long reducing accumulators and reloading token
 * rows as on FMAs.  The AVX2+FMA code is
 * compiled with function target attributes and chosen at run time, so the build needs
 * no -mavx2 and the library still runs (on the plain C kernel) on an older x86-64.
 *
 * Rejected: OpenBLAS sgemm (0.3.21, Haswell kernels, one thread) for the token rows.
 * Measured on the 2-core development machine for a 2048x768 matrix, the tile kernel
 * gave 30/67/88/92 GFLOPS at 1/4/32/64 tokens against OpenBLAS's 6/25/75/85: sgemm's
 * packing does not pay for itself at these sizes, and its own threads would contend
 * with the backend's pool for the same cores.
 */
#include "model/forward_cpu_matmul.h"
#include "model/forward_cpu_simd.h"

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>


/* Token rows per pass over a weight slice: 64 rows of the widest input (hidden_dim
 * 2048 floats) are 512 KiB, which stays in a 1 MiB L2. */
#define MM_TOKEN_CHUNK 64


static bool g_avx2;
static bool g_avx512;
static bool g_vnni; /* AVX-512 VNNI and BW, for the int8 kernels */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void kernels_pick(void)
{
#if MM_HAVE_X86
    __builtin_cpu_init();
    /* LLMSERVE_CPU_KERNELS caps the choice, so tests cover every kernel on one machine. */
    const char *cap = getenv("LLMSERVE_CPU_KERNELS");
    bool allow_avx2 = !cap || strcmp(cap, "generic") != 0;
    bool allow_512 = !cap || strcmp(cap, "avx512") == 0;
    g_avx2 = allow_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    g_avx512 = allow_512 && g_avx2 && __builtin_cpu_supports("avx512f");
    g_vnni = g_avx512 && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vnni");
#endif
}

void forward__kernels_init(void)
{
    pthread_once(&g_once, kernels_pick);
}

forward_kernels_level_t forward__kernels_level(void)
{
    return g_vnni ? FWD_K_AVX512_VNNI : g_avx512 ? FWD_K_AVX512 : g_avx2 ? FWD_K_AVX2 : FWD_K_GENERIC;
}

const char *forward__kernels_name(void)
{
    return g_avx512 ? "avx512f" : g_avx2 ? "avx2+fma" : "generic";
}

/* ---- plain C ---------------------------------------------------------------------- */

/* Four accumulators per row so that the additions do not form one serial chain. */
static float dot_c(const float *a, const float *b, int n)
{
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static void matmul_c(const float *w, int k_dim, int o0, int o1, const float *x, int ldx, int n_tok,
                     float *y, int ldy, bool accumulate)
{
    for (int o = o0; o < o1; o++) {
        const float *wr = w + (size_t)o * (size_t)k_dim;
        for (int t = 0; t < n_tok; t++) {
            float s = dot_c(wr, x + (size_t)t * (size_t)ldx, k_dim);
            float *yo = y + (size_t)t * (size_t)ldy + o;
            *yo = accumulate ? *yo + s : s;
        }
    }
}

/* ---- AVX2 + FMA ------------------------------------------------------------------- */
#if MM_HAVE_X86

/* One ROWS x COLS tile: ROWS weight rows (stride k_dim) against COLS token rows
 * (stride ldx).  ROWS and COLS are compile-time constants at every call, so the loops
 * unroll and the accumulators live in registers (ROWS * COLS + COLS + 1 <= 16). */
static MM_AVX2_INLINE void tile_avx2(const float *w, size_t k_dim, const float *x, size_t ldx,
                                     float *y, size_t ldy, bool accumulate, const int ROWS,
                                     const int COLS)
{
    __m256 acc[8][3];
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 8
        for (int c = 0; c < COLS; c++)
            acc[r][c] = _mm256_setzero_ps();
    size_t k = 0;
    size_t k_vec = k_dim & ~(size_t)7;
    for (; k < k_vec; k += 8) {
        __m256 xv[3];
#pragma GCC unroll 8
        for (int c = 0; c < COLS; c++)
            xv[c] = _mm256_loadu_ps(x + c * ldx + k);
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; r++) {
            __m256 wv = _mm256_loadu_ps(w + r * k_dim + k);
#pragma GCC unroll 8
            for (int c = 0; c < COLS; c++)
                acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; r++) {
#pragma GCC unroll 8
        for (int c = 0; c < COLS; c++) {
            float s = hsum8(acc[r][c]);
            for (size_t kk = k; kk < k_dim; kk++)
                s += w[r * k_dim + kk] * x[c * ldx + kk];
            float *yo = y + c * ldy + r;
            *yo = accumulate ? *yo + s : s;
        }
    }
}

#define MM_TILE(R, C)                                                                              \
    static MM_AVX2 void tile_avx2_##R##x##C(const float *w, size_t k_dim, const float *x,          \
                                            size_t ldx, float *y, size_t ldy, bool acc)            \
    {                                                                                              \
        tile_avx2(w, k_dim, x, ldx, y, ldy, acc, R, C);                                            \
    }
MM_TILE(8, 1)
MM_TILE(4, 1)
MM_TILE(2, 1)
MM_TILE(1, 1)
MM_TILE(4, 3)
MM_TILE(4, 2)
MM_TILE(2, 3)
MM_TILE(2, 2)
MM_TILE(1, 3)
MM_TILE(1, 2)


typedef void (*tile_fn_t)(const float *, size_t, const float *, size_t, float *, size_t, bool);

/* [rows - 1 among 1, 2, 4][cols - 1] for the batch tiles. */
static const tile_fn_t g_tiles[3][3] = {
    {tile_avx2_1x1, tile_avx2_1x2, tile_avx2_1x3},
    {tile_avx2_2x1, tile_avx2_2x2, tile_avx2_2x3},
    {tile_avx2_4x1, tile_avx2_4x2, tile_avx2_4x3},
};

static MM_AVX2 void matmul_avx2(const float *w, int k_dim, int o0, int o1, const float *x, int ldx,
                                int n_tok, float *y, int ldy, bool accumulate)
{
    size_t kd = (size_t)k_dim, lx = (size_t)ldx, ly = (size_t)ldy;
    if (n_tok == 1) {
        /* Decode of one sequence: eight rows at a time for eight independent chains. */
        int o = o0;
        for (; o + 8 <= o1; o += 8) {
            tile_avx2_8x1(w + o * kd, kd, x, lx, y + o, ly, accumulate);
        }
        for (; o + 4 <= o1; o += 4)
            tile_avx2_4x1(w + o * kd, kd, x, lx, y + o, ly, accumulate);
        for (; o < o1; o++)
            tile_avx2_1x1(w + o * kd, kd, x, lx, y + o, ly, accumulate);
        return;
    }
    for (int t0 = 0; t0 < n_tok; t0 += MM_TOKEN_CHUNK) {
        int t1 = n_tok - t0 < MM_TOKEN_CHUNK ? n_tok : t0 + MM_TOKEN_CHUNK;
        int o = o0;
        while (o < o1) {
            int rows = o1 - o >= 4 ? 4 : o1 - o >= 2 ? 2 : 1;
            int ri = rows == 4 ? 2 : rows - 1;
            const float *wr = w + o * kd;
            int t = t0;
            for (; t + 3 <= t1; t += 3)
                g_tiles[ri][2](wr, kd, x + t * lx, lx, y + t * ly + o, ly, accumulate);
            if (t < t1)
                g_tiles[ri][t1 - t - 1](wr, kd, x + t * lx, lx, y + t * ly + o, ly, accumulate);
            o += rows;
        }
    }
}

/* ---- AVX-512F: 32 vector registers allow a 4 x 6 tile, so up to six token rows go
 * past a weight block in one pass (one read of the weights from memory) ---------- */

static MM_512_INLINE void tile_512(const float *w, size_t k_dim, const float *x, size_t ldx,
                                   float *y, size_t ldy, bool accumulate, const int ROWS,
                                   const int COLS)
{
    __m512 acc[8][6];
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 8
        for (int c = 0; c < COLS; c++)
            acc[r][c] = _mm512_setzero_ps();
    size_t k = 0;
    size_t k_vec = k_dim & ~(size_t)15;
    for (; k < k_vec; k += 16) {
        __m512 xv[6];
#pragma GCC unroll 8
        for (int c = 0; c < COLS; c++)
            xv[c] = _mm512_loadu_ps(x + c * ldx + k);
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; r++) {
            __m512 wv = _mm512_loadu_ps(w + r * k_dim + k);
#pragma GCC unroll 8
            for (int c = 0; c < COLS; c++)
                acc[r][c] = _mm512_fmadd_ps(wv, xv[c], acc[r][c]);
        }
    }
    if (ROWS % 4 == 0 && k == k_dim) {
        /* Four rows' accumulators of one token reduce together into four adjacent
         * outputs: about a third of the shuffles and adds of four separate horizontal
         * sums, which at k_dim 288 cost nearly half as much as the FMAs. */
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; r += 4) {
#pragma GCC unroll 8
            for (int c = 0; c < COLS; c++) {
                __m128 s = reduce4_512(acc[r][c], acc[r + 1][c], acc[r + 2][c], acc[r + 3][c]);
                float *yo = y + c * ldy + r;
                if (accumulate)
                    s = _mm_add_ps(s, _mm_loadu_ps(yo));
                _mm_storeu_ps(yo, s);
            }
        }
        return;
    }
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; r++) {
#pragma GCC unroll 8
        for (int c = 0; c < COLS; c++) {
            float s = _mm512_reduce_add_ps(acc[r][c]);
            for (size_t kk = k; kk < k_dim; kk++)
                s += w[r * k_dim + kk] * x[c * ldx + kk];
            float *yo = y + c * ldy + r;
            *yo = accumulate ? *yo + s : s;
        }
    }
}

#define MM_TILE512(R, C)                                                                           \
    static MM_512 void tile_512_##R##x##C(const float *w, size_t k_dim, const float *x,            \
                                          size_t ldx, float *y, size_t ldy, bool acc)              \
    {                                                                                              \
        tile_512(w, k_dim, x, ldx, y, ldy, acc, R, C);                                             \
    }
MM_TILE512(8, 1)
MM_TILE512(4, 1)
MM_TILE512(4, 2)
MM_TILE512(4, 3)
MM_TILE512(4, 4)
MM_TILE512(4, 5)
MM_TILE512(4, 6)
MM_TILE512(2, 1)
MM_TILE512(2, 2)
MM_TILE512(2, 3)
MM_TILE512(2, 4)
MM_TILE512(2, 5)
MM_TILE512(2, 6)
MM_TILE512(1, 1)
MM_TILE512(1, 2)
MM_TILE512(1, 3)
MM_TILE512(1, 4)
MM_TILE512(1, 5)
MM_TILE512(1, 6)

/* [rows 1, 2, 4 -> 0, 1, 2][cols - 1] */
static const tile_fn_t g_tiles512[3][6] = {
    {tile_512_1x1, tile_512_1x2, tile_512_1x3, tile_512_1x4, tile_512_1x5, tile_512_1x6},
    {tile_512_2x1, tile_512_2x2, tile_512_2x3, tile_512_2x4, tile_512_2x5, tile_512_2x6},
    {tile_512_4x1, tile_512_4x2, tile_512_4x3, tile_512_4x4, tile_512_4x5, tile_512_4x6},
};

/* Asks for the next tile's rows [o, o + rows) of w (clamped to o_end) to be brought into
 * L2, for the broadcast form below.  The dot-product tiles no longer prefetch: measured
 * on stories110M (2026-12-06, same sitting, three alternating rounds), dropping their
 * prefetch of 8-16 rows ahead raised one stream from 89-95 to 101-109 tok/s and B=4 from
 * 254-260 to 261-274; the prefetch instructions themselves stalled, a third of the
 * single-stream matmul's samples in perf, while the hardware prefetcher keeps up. */
static inline void prefetch_rows(const float *w, size_t k_dim, int o, int rows, int o_end)
{
    if (o >= o_end)
        return;
    if (o + rows > o_end)
        rows = o_end - o;
    const char *p = (const char *)(w + (size_t)o * k_dim);
    const char *end = (const char *)(w + (size_t)(o + rows) * k_dim);
    for (; p < end; p += 64)
        __builtin_prefetch(p, 0, 2);
}

/* ---- AVX-512F, many token rows: broadcast form ---------------------------------
 * With 16 or more token rows the dot-product tiles above spend as much time on
 * reloading token rows and reducing accumulators as on FMAs.  Here the token rows
 * are first transposed into xt ([k][16 * V], zero past the last token), so one vector
 * holds one k of 16 tokens; a tile of R weight rows broadcasts each weight to V such
 * vectors.  No reduction is needed, each weight row is read once per 16 * V tokens,
 * and the only per-tile extra is writing the R x 16V results out to y's columns. */

/* Floats of k per transposed block: 1024 x 32 tokens is 128 KiB of stack, and every
 * matrix of the stories models but w2 of the larger ones needs only one block. */
#define MM_BCAST_K 1024
#define MM_BCAST_TOK 32

static MM_512_INLINE void btile_512(const float *w, size_t k_dim, const float *xt, int kn, float *y,
                                    size_t ldy, int n_tok, bool accumulate, const int R,
                                    const int V)
{
    __m512 acc[12][2];
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < V; v++)
            acc[r][v] = _mm512_setzero_ps();
    for (int kk = 0; kk < kn; kk++) {
        __m512 xv[2];
#pragma GCC unroll 2
        for (int v = 0; v < V; v++)
            xv[v] = _mm512_load_ps(xt + (size_t)kk * MM_BCAST_TOK + 16 * v);
#pragma GCC unroll 12
        for (int r = 0; r < R; r++) {
            __m512 wb = _mm512_set1_ps(w[r * k_dim + kk]);
#pragma GCC unroll 2
            for (int v = 0; v < V; v++)
                acc[r][v] = _mm512_fmadd_ps(wb, xv[v], acc[r][v]);
        }
    }
    float out[12][MM_BCAST_TOK] __attribute__((aligned(64)));
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < V; v++)
            _mm512_store_ps(out[r] + 16 * v, acc[r][v]);
    /* n_tok <= 16 * V always; the bound also lets -O3 see that only stored columns are
     * read. */
    int cols = n_tok < 16 * V ? n_tok : 16 * V;
    for (int t = 0; t < cols; t++) {
        float *yt = y + (size_t)t * ldy;
#pragma GCC unroll 12
        for (int r = 0; r < R; r++)
            yt[r] = accumulate ? yt[r] + out[r][t] : out[r][t];
    }
}

#define MM_BTILE512(R, V)                                                                          \
    static MM_512 void btile_512_##R##x##V(const float *w, size_t k_dim, const float *xt, int kn,  \
                                           float *y, size_t ldy, int n_tok, bool acc)              \
    {                                                                                              \
        btile_512(w, k_dim, xt, kn, y, ldy, n_tok, acc, R, V);                                     \
    }
MM_BTILE512(12, 1)
MM_BTILE512(12, 2)
MM_BTILE512(4, 1)
MM_BTILE512(4, 2)
MM_BTILE512(1, 1)
MM_BTILE512(1, 2)

typedef void (*btile_fn_t)(const float *, size_t, const float *, int, float *, size_t, int, bool);

/* Rows [o0, o1) of w against one block of nt token rows: xt holds k values
 * [k0, k0 + kn) of the block, MM_BCAST_TOK floats per k (zero past nt). */
static MM_512_INLINE void bcast_rows(const float *w, size_t kd, int o0, int o1, int k0,
                                     const float *xt, int kn, float *yb, size_t ly, int nt,
                                     bool acc)
{
    static const btile_fn_t tiles[3][2] = {
        {btile_512_12x1, btile_512_12x2},
        {btile_512_4x1, btile_512_4x2},
        {btile_512_1x1, btile_512_1x2},
    };
    int vi = nt > 16 ? 1 : 0;
    int o = o0;
    while (o < o1) {
        int rows = o1 - o >= 12 ? 12 : o1 - o >= 4 ? 4 : 1;
        int ri = rows == 12 ? 0 : rows == 4 ? 1 : 2;
        prefetch_rows(w, kd, o + rows, rows, o1);
        tiles[ri][vi](w + (size_t)o * kd + (size_t)k0, kd, xt, kn, yb + o, ly, nt, acc);
        o += rows;
    }
}

/* Tokens per block: 32, and a remainder of 16 or fewer goes as one vector. */
static inline int bcast_block_tokens(int left)
{
    return left > 16 ? (left < MM_BCAST_TOK ? left : MM_BCAST_TOK) : left;
}

/* Copies k values [k0, k0 + kn) of token rows [t0, t0 + nt) of x into dst, transposed:
 * MM_BCAST_TOK floats per k, zero past nt up to the vector the kernel reads. */
static inline void bcast_transpose(const float *x, size_t lx, int t0, int nt, int k0, int kn,
                                   float *dst)
{
    int width = nt > 16 ? 32 : 16;
    for (int kk = 0; kk < kn; kk++) {
        float *row = dst + (size_t)kk * MM_BCAST_TOK;
        for (int t = 0; t < nt; t++)
            row[t] = x[(size_t)(t0 + t) * lx + (size_t)(k0 + kk)];
        for (int t = nt; t < width; t++)
            row[t] = 0.0f;
    }
}

static MM_512 void matmul_512_bcast(const float *w, int k_dim, int o0, int o1, const float *x,
                                    int ldx, int n_tok, float *y, int ldy, bool accumulate)
{
    float xt[MM_BCAST_K * MM_BCAST_TOK] __attribute__((aligned(64)));
    size_t kd = (size_t)k_dim, ly = (size_t)ldy;
    for (int t0 = 0; t0 < n_tok;) {
        int nt = bcast_block_tokens(n_tok - t0);
        for (int k0 = 0; k0 < k_dim; k0 += MM_BCAST_K) {
            int kn = k_dim - k0 < MM_BCAST_K ? k_dim - k0 : MM_BCAST_K;
            bcast_transpose(x, (size_t)ldx, t0, nt, k0, kn, xt);
            /* Later k blocks add to what the earlier ones wrote. */
            bcast_rows(w, kd, o0, o1, k0, xt, kn, y + (size_t)t0 * ly, ly, nt,
                       accumulate || k0 > 0);
        }
        t0 += nt;
    }
}

/* As matmul_512_bcast over token rows transposed once beforehand (forward__rows_make):
 * block b of 32 tokens is k_dim * MM_BCAST_TOK floats at xt + b * k_dim * MM_BCAST_TOK. */
static MM_512 void matmul_512_bcast_xt(const float *w, int k_dim, int o0, int o1, const float *xt,
                                       int n_tok, float *y, int ldy, bool accumulate)
{
    size_t kd = (size_t)k_dim, ly = (size_t)ldy;
    for (int t0 = 0; t0 < n_tok;) {
        int nt = bcast_block_tokens(n_tok - t0);
        const float *xb = xt + (size_t)(t0 / MM_BCAST_TOK) * kd * MM_BCAST_TOK;
        for (int k0 = 0; k0 < k_dim; k0 += MM_BCAST_K) {
            int kn = k_dim - k0 < MM_BCAST_K ? k_dim - k0 : MM_BCAST_K;
            bcast_rows(w, kd, o0, o1, k0, xb + (size_t)k0 * MM_BCAST_TOK, kn, y + (size_t)t0 * ly,
                       ly, nt, accumulate || k0 > 0);
        }
        t0 += nt;
    }
}

static MM_512 void transpose_512_rows(const float *x, int ldx, int n_tok, int k_dim, float *xt)
{
    for (int t0 = 0; t0 < n_tok;) {
        int nt = bcast_block_tokens(n_tok - t0);
        bcast_transpose(x, (size_t)ldx, t0, nt, 0, k_dim,
                        xt + (size_t)(t0 / MM_BCAST_TOK) * (size_t)k_dim * MM_BCAST_TOK);
        t0 += nt;
    }
}

static MM_512 void matmul_512(const float *w, int k_dim, int o0, int o1, const float *x, int ldx,
                              int n_tok, float *y, int ldy, bool accumulate)
{
    size_t kd = (size_t)k_dim, lx = (size_t)ldx, ly = (size_t)ldy;
    if (n_tok == 1) {
        int o = o0;
        for (; o + 8 <= o1; o += 8) {
            tile_512_8x1(w + o * kd, kd, x, lx, y + o, ly, accumulate);
        }
        for (; o + 4 <= o1; o += 4)
            tile_512_4x1(w + o * kd, kd, x, lx, y + o, ly, accumulate);
        for (; o < o1; o++)
            tile_512_1x1(w + o * kd, kd, x, lx, y + o, ly, accumulate);
        return;
    }
    if (n_tok >= 16) {
        matmul_512_bcast(w, k_dim, o0, o1, x, ldx, n_tok, y, ldy, accumulate);
        return;
    }
    for (int t0 = 0; t0 < n_tok; t0 += MM_TOKEN_CHUNK) {
        int t1 = n_tok - t0 < MM_TOKEN_CHUNK ? n_tok : t0 + MM_TOKEN_CHUNK;
        int o = o0;
        while (o < o1) {
            int rows = o1 - o >= 4 ? 4 : o1 - o >= 2 ? 2 : 1;
            int ri = rows == 4 ? 2 : rows - 1;
            const float *wr = w + o * kd;
            /* Six tokens a tile; a remainder of 7 or 8 goes as 4 + 3 or 4 + 4 rather than
             * 6 + 1 or 6 + 2, whose narrow tile reloads the weights for little work. */
            for (int t = t0; t < t1;) {
                int n = t1 - t > 6 ? (t1 - t <= 8 ? 4 : 6) : t1 - t;
                g_tiles512[ri][n - 1](wr, kd, x + t * lx, lx, y + t * ly + o, ly, accumulate);
                t += n;
            }
            o += rows;
        }
    }
}

/* Masks for the 16-float chunk of a row that starts at i of hd floats. */
static inline __mmask16 chunk_mask(int i, int hd)
{
    return hd - i >= 16 ? (__mmask16)0xFFFF : hd - i <= 0 ? 0 : (__mmask16)((1u << (hd - i)) - 1);
}

/* Four key rows at a time, so that four independent chains run and one reduction
 * serves four scores. */
static MM_512 void dots_512(const float *q, const float *k, size_t ld, int n, int hd, float scale,
                            float *out)
{
    __m512 sc = _mm512_set1_ps(scale);
    int p = 0;
    for (; p + 4 <= n; p += 4) {
        const float *k0 = k + (size_t)p * ld;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < hd; i += 16) {
            __mmask16 m = chunk_mask(i, hd);
            __m512 qv = _mm512_maskz_loadu_ps(m, q + i);
            a0 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k0 + i), a0);
            a1 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k0 + ld + i), a1);
            a2 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k0 + 2 * ld + i), a2);
            a3 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k0 + 3 * ld + i), a3);
        }
        _mm_storeu_ps(out + p, _mm_mul_ps(reduce4_512(a0, a1, a2, a3), _mm512_castps512_ps128(sc)));
    }
    for (; p < n; p++) {
        const float *kr = k + (size_t)p * ld;
        __m512 a = _mm512_setzero_ps();
        for (int i = 0; i < hd; i += 16) {
            __mmask16 m = chunk_mask(i, hd);
            a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + i), _mm512_maskz_loadu_ps(m, kr + i),
                                a);
        }
        out[p] = _mm512_reduce_add_ps(a) * scale;
    }
}

/* The output row stays in registers, 64 floats (four chains) at a time, while every
 * value row goes past it. */
static MM_512 void axpys_512(float *o, const float *s, const float *v, size_t ld, int n, int hd)
{
    for (int i0 = 0; i0 < hd; i0 += 64) {
        __mmask16 m0 = chunk_mask(i0, hd), m1 = chunk_mask(i0 + 16, hd);
        __mmask16 m2 = chunk_mask(i0 + 32, hd), m3 = chunk_mask(i0 + 48, hd);
        __m512 a0 = _mm512_maskz_loadu_ps(m0, o + i0);
        __m512 a1 = _mm512_maskz_loadu_ps(m1, o + i0 + 16);
        __m512 a2 = _mm512_maskz_loadu_ps(m2, o + i0 + 32);
        __m512 a3 = _mm512_maskz_loadu_ps(m3, o + i0 + 48);
        for (int p = 0; p < n; p++) {
            const float *vr = v + (size_t)p * ld + i0;
            __m512 sv = _mm512_set1_ps(s[p]);
            a0 = _mm512_fmadd_ps(sv, _mm512_maskz_loadu_ps(m0, vr), a0);
            a1 = _mm512_fmadd_ps(sv, _mm512_maskz_loadu_ps(m1, vr + 16), a1);
            a2 = _mm512_fmadd_ps(sv, _mm512_maskz_loadu_ps(m2, vr + 32), a2);
            a3 = _mm512_fmadd_ps(sv, _mm512_maskz_loadu_ps(m3, vr + 48), a3);
        }
        _mm512_mask_storeu_ps(o + i0, m0, a0);
        _mm512_mask_storeu_ps(o + i0 + 16, m1, a1);
        _mm512_mask_storeu_ps(o + i0 + 32, m2, a2);
        _mm512_mask_storeu_ps(o + i0 + 48, m3, a3);
    }
}

static MM_AVX2 float dot_avx2(const float *a, const float *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static MM_AVX2 void axpy_avx2(float *y, float s, const float *x, int n)
{
    __m256 sv = _mm256_set1_ps(s);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(sv, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += s * x[i];
}
#endif

/* ---- dispatch --------------------------------------------------------------------- */

void forward__matmul(const float *w, int k_dim, int o0, int o1, const float *x, int ldx, int n_tok,
                     float *y, int ldy, bool accumulate)
{
    if (o1 <= o0 || n_tok <= 0)
        return;
#if MM_HAVE_X86
    if (g_avx512) {
        matmul_512(w, k_dim, o0, o1, x, ldx, n_tok, y, ldy, accumulate);
        return;
    }
    if (g_avx2) {
        matmul_avx2(w, k_dim, o0, o1, x, ldx, n_tok, y, ldy, accumulate);
        return;
    }
#endif
    matmul_c(w, k_dim, o0, o1, x, ldx, n_tok, y, ldy, accumulate);
}

size_t forward__rows_floats(int n_tok, int k_dim)
{
    int blocks = (n_tok + MM_BCAST_TOK - 1) / MM_BCAST_TOK;
    return (size_t)blocks * (size_t)k_dim * MM_BCAST_TOK;
}

void forward__rows_make(forward_rows_t *r, const float *x, int ldx, int n_tok, int k_dim,
                        float *buf)
{
    r->x = x;
    r->ldx = ldx;
    r->n_tok = n_tok;
    r->k_dim = k_dim;
    r->xt = NULL;
#if MM_HAVE_X86
    if (g_avx512 && n_tok >= 16 && buf) {
        transpose_512_rows(x, ldx, n_tok, k_dim, buf);
        r->xt = buf;
    }
#endif
}

void forward__matmul_rows(const float *w, int o0, int o1, const forward_rows_t *r, float *y,
                          int ldy, bool accumulate)
{
    if (o1 <= o0 || r->n_tok <= 0)
        return;
#if MM_HAVE_X86
    if (r->xt) {
        matmul_512_bcast_xt(w, r->k_dim, o0, o1, r->xt, r->n_tok, y, ldy, accumulate);
        return;
    }
#endif
    forward__matmul(w, r->k_dim, o0, o1, r->x, r->ldx, r->n_tok, y, ldy, accumulate);
}

float forward__dot(const float *a, const float *b, int n)
{
#if MM_HAVE_X86
    if (g_avx2)
        return dot_avx2(a, b, n);
#endif
    return dot_c(a, b, n);
}

void forward__axpy(float *y, float s, const float *x, int n)
{
#if MM_HAVE_X86
    if (g_avx2) {
        axpy_avx2(y, s, x, n);
        return;
    }
#endif
    for (int i = 0; i < n; i++)
        y[i] += s * x[i];
}

void forward__dots(const float *q, const float *k, size_t ld, int n, int hd, float scale,
                   float *out)
{
#if MM_HAVE_X86
    if (g_avx512) {
        dots_512(q, k, ld, n, hd, scale, out);
        return;
    }
#endif
    for (int p = 0; p < n; p++)
        out[p] = forward__dot(q, k + (size_t)p * ld, hd) * scale;
}

void forward__axpys(float *o, const float *s, const float *v, size_t ld, int n, int hd)
{
#if MM_HAVE_X86
    if (g_avx512) {
        axpys_512(o, s, v, ld, n, hd);
        return;
    }
#endif
    for (int p = 0; p < n; p++)
        forward__axpy(o, s[p], v + (size_t)p * ld, hd);
}
