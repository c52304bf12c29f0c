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
 * tiles give 8 (decode) to 12 (batch) independent chains.  The AVX2+FMA code is
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

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MM_HAVE_X86 1
#else
#define MM_HAVE_X86 0
#endif

/* Token rows per pass over a weight slice: 64 rows of the widest input (hidden_dim
 * 2048 floats) are 512 KiB, which stays in a 1 MiB L2. */
#define MM_TOKEN_CHUNK 64

/* How far ahead (in weight rows) the next rows are prefetched, for one token row and
 * for several. */
#ifndef MM_PREFETCH_ROWS_1
#define MM_PREFETCH_ROWS_1 16
#endif
#ifndef MM_PREFETCH_ROWS_N
#define MM_PREFETCH_ROWS_N 4
#endif

static bool g_avx2;
static bool g_avx512;
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
#endif
}

void forward__kernels_init(void)
{
    pthread_once(&g_once, kernels_pick);
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
#define MM_AVX2 __attribute__((target("avx2,fma")))
#define MM_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline

static MM_AVX2_INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

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

/* Asks for rows [o, o + rows) of w (clamped to o_end) to be brought into L2.  The
 * hardware prefetcher follows each row's stream but does not start the next rows
 * early enough: without this, a weight matrix larger than the caches arrived at
 * 10-25 GB/s instead of the ~33 GB/s one core can read. */
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
            prefetch_rows(w, kd, o + MM_PREFETCH_ROWS_1, 8, o1);
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
            prefetch_rows(w, kd, o + MM_PREFETCH_ROWS_N, rows, o1);
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
#define MM_512 __attribute__((target("avx512f")))
#define MM_512_INLINE __attribute__((target("avx512f"), always_inline)) inline

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

static MM_512 void matmul_512(const float *w, int k_dim, int o0, int o1, const float *x, int ldx,
                              int n_tok, float *y, int ldy, bool accumulate)
{
    size_t kd = (size_t)k_dim, lx = (size_t)ldx, ly = (size_t)ldy;
    if (n_tok == 1) {
        int o = o0;
        for (; o + 8 <= o1; o += 8) {
            prefetch_rows(w, kd, o + MM_PREFETCH_ROWS_1, 8, o1);
            tile_512_8x1(w + o * kd, kd, x, lx, y + o, ly, accumulate);
        }
        for (; o + 4 <= o1; o += 4)
            tile_512_4x1(w + o * kd, kd, x, lx, y + o, ly, accumulate);
        for (; o < o1; o++)
            tile_512_1x1(w + o * kd, kd, x, lx, y + o, ly, accumulate);
        return;
    }
    for (int t0 = 0; t0 < n_tok; t0 += MM_TOKEN_CHUNK) {
        int t1 = n_tok - t0 < MM_TOKEN_CHUNK ? n_tok : t0 + MM_TOKEN_CHUNK;
        int o = o0;
        while (o < o1) {
            int rows = o1 - o >= 4 ? 4 : o1 - o >= 2 ? 2 : 1;
            int ri = rows == 4 ? 2 : rows - 1;
            const float *wr = w + o * kd;
            prefetch_rows(w, kd, o + MM_PREFETCH_ROWS_N, rows, o1);
            int t = t0;
            for (; t + 6 <= t1; t += 6)
                g_tiles512[ri][5](wr, kd, x + t * lx, lx, y + t * ly + o, ly, accumulate);
            if (t < t1)
                g_tiles512[ri][t1 - t - 1](wr, kd, x + t * lx, lx, y + t * ly + o, ly, accumulate);
            o += rows;
        }
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
