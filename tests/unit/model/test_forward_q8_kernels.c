/*
 * test_forward_q8_kernels.c - the CPU backend's int8 (Q8_0) matmul and activation
 * quantizer (libs/model/forward_cpu_q8.c) against plain loops over the same values.
 *
 * The integer dot products are exact, so given the same quantized token rows the
 * kernels may differ from the plain sum only by float rounding in the order the groups
 * are added: outputs are checked to 1e-5 of the sum of the terms' magnitudes.  The
 * quantizer is checked against runq.c's formula (scale = max|x| / 127, q = round(x /
 * scale)) value by value.  ctest runs this file once per kernel family
 * (LLMSERVE_CPU_KERNELS unset, avx2, generic); the group sizes make every family's
 * block loop run with one and several blocks per group and with a partial (masked)
 * block, token counts take the VNNI
 * kernel's dot-product and broadcast forms (under and from Q8_BCAST_MIN_TOKENS), and
 * shapes leave tails of rows and tokens that no tile fits.
 */
#include "model/checkpoint.h"
#include "model/forward_cpu_matmul.h"
#include "model/forward_cpu_q8.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint64_t next(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static float uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)((next() >> 11) * (1.0 / 9007199254740992.0));
}

/* The int8 value of row t, column k that the kernel will read. */
static int row_value(const forward_q8rows_t *r, int t, int k)
{
    int8_t b = r->q[(size_t)t * (size_t)r->k_dim + (size_t)k];
    return r->kernel == Q8K_VNNI ? (int)(uint8_t)b - 128 : (int)b;
}

/* rows x k_dim weights with group size gs against n_tok token rows; extreme puts
 * -128 and 127 into the weights (a file may hold -128 though the exporter never
 * writes it). */
static void check_matmul(int rows, int k_dim, int gs, int n_tok, int o0, int o1, bool extreme)
{
    forward_q8_kernel_t kern = forward__q8_kernel(gs);
    size_t nw = (size_t)rows * (size_t)k_dim, ng = (size_t)(k_dim / gs);
    int8_t *wq = malloc(nw);
    float *ws = malloc((size_t)rows * ng * sizeof(float));
    for (size_t i = 0; i < nw; i++)
        wq[i] = (int8_t)((int)(next() % 255) - 127);
    if (extreme)
        for (size_t i = 0; i < nw; i += 7)
            wq[i] = (i / 7) % 2 ? 127 : -128;
    for (size_t i = 0; i < (size_t)rows * ng; i++)
        ws[i] = uniform(1e-3f, 2e-2f);
    ckpt_q8_t m = {.q = wq, .s = ws};
    size_t nb = forward__q8_bias_count(rows, k_dim, gs);
    int32_t *bias = nb ? malloc(nb * sizeof(int32_t)) : NULL;
    forward__q8_bias_make(kern, &m, rows, k_dim, gs, bias);
    forward_q8mat_t w = {.q = wq, .s = ws, .bias = bias};

    float *x = malloc((size_t)n_tok * (size_t)k_dim * sizeof(float));
    for (size_t i = 0; i < (size_t)n_tok * (size_t)k_dim; i++)
        x[i] = uniform(-3.0f, 3.0f);
    /* a group of zeros (scale 0) in the first row */
    memset(x, 0, (size_t)gs * sizeof(float));
    void *buf = aligned_alloc(64, (forward__q8rows_bytes(n_tok, k_dim, gs) + 63) & ~(size_t)63);
    forward_q8rows_t xr;
    forward__q8rows_make(&xr, kern, x, k_dim, n_tok, k_dim, gs, buf);
    /* one row in 32-byte groups goes to the AVX2 kernel even where VNNI is there */
    bool to_avx2 = kern == Q8K_VNNI && n_tok == 1 && gs % 64 != 0 && gs % 32 == 0;
    cr_assert_eq(xr.kernel, to_avx2 ? Q8K_AVX2 : kern);

    float *y = malloc((size_t)n_tok * (size_t)rows * sizeof(float));
    for (int pass = 0; pass < 2; pass++) {
        bool acc = pass == 1;
        for (size_t i = 0; i < (size_t)n_tok * (size_t)rows; i++)
            y[i] = 0.25f;
        forward__matmul_q8(&w, o0, o1, &xr, y, rows, acc);
        for (int t = 0; t < n_tok; t++)
            for (int o = 0; o < rows; o++) {
                float got = y[(size_t)t * rows + o];
                if (o < o0 || o >= o1) {
                    cr_assert_eq(got, 0.25f, "row %d outside [%d, %d) was written", o, o0, o1);
                    continue;
                }
                double want = acc ? 0.25 : 0.0, mag = fabs(want);
                for (size_t g = 0; g < ng; g++) {
                    int64_t iv = 0, iabs = 0;
                    for (int k = (int)g * gs; k < ((int)g + 1) * gs; k++) {
                        int64_t p = (int64_t)wq[(size_t)o * k_dim + k] * row_value(&xr, t, k);
                        iv += p;
                        iabs += p < 0 ? -p : p;
                    }
                    double sc = (double)ws[(size_t)o * ng + g] * xr.s[(size_t)t * ng + g];
                    want += (double)iv * sc;
                    /* the kernels add partial sums of a few products in float */
                    mag += (double)iabs * sc;
                }
                cr_assert(fabs(got - want) <= 1e-5 * mag + 1e-30,
                          "%s kernel, %dx%d gs %d, %d tokens: y[%d][%d] = %.9g, want %.9g",
                          forward__q8_kernel_name(kern), rows, k_dim, gs, n_tok, t, o, got,
                          want);
            }
    }
    free(y);
    free(buf);
    free(x);
    free(bias);
    free(ws);
    free(wq);
}

Test(q8_kernels, decode_one_token)
{
    check_matmul(40, 256, 64, 1, 0, 40, false);
    check_matmul(37, 384, 128, 1, 3, 37, false);
    check_matmul(21, 96, 32, 1, 0, 21, false);
    check_matmul(9, 36, 12, 1, 0, 9, false);
    check_matmul(11, 192, 96, 1, 0, 11, false); /* a 64-byte block and a masked 32 */
    check_matmul(7, 120, 20, 1, 0, 7, false);
    check_matmul(5, 36, 6, 1, 0, 5, false);
}

Test(q8_kernels, batches_with_token_tails)
{
    for (int n = 1; n <= 17; n++) { /* every block size of the VNNI broadcast form */
        check_matmul(19, 128, 64, n, 1, 18, false);
        check_matmul(9, 96, 32, n, 0, 9, false);
        check_matmul(6, 96, 12, n, 0, 6, false); /* slices of 4 bytes only: blocks of 16 */
    }
    check_matmul(24, 192, 64, 70, 0, 24, false); /* more tokens than one pass's chunk */
    check_matmul(22, 256, 128, 33, 0, 22, false);
    check_matmul(13, 160, 32, 5, 0, 13, false);
    check_matmul(10, 100, 4, 7, 2, 9, false);
}

Test(q8_kernels, extreme_weights_do_not_overflow)
{
    check_matmul(16, 512, 64, 4, 0, 16, true);
    check_matmul(16, 512, 64, 20, 0, 16, true);
    check_matmul(16, 512, 256, 3, 0, 16, true);
    check_matmul(6, 512, 256, 40, 0, 6, true);
    check_matmul(8, 96, 32, 5, 0, 8, true);
}

/* The quantizer against runq.c's: the same scales, and the same values except where
 * x / scale lies within rounding error of halfway between two integers. */
Test(q8_kernels, quantizer_matches_runq)
{
    int gss[] = {4, 12, 32, 64, 128};
    for (size_t gi = 0; gi < sizeof(gss) / sizeof(gss[0]); gi++) {
        int gs = gss[gi], k_dim = gs * 6, n_tok = 3;
        forward_q8_kernel_t kern = forward__q8_kernel(gs);
        float *x = malloc((size_t)n_tok * (size_t)k_dim * sizeof(float));
        for (int i = 0; i < n_tok * k_dim; i++)
            x[i] = uniform(-5.0f, 5.0f) * (i % 5 == 0 ? 20.0f : 1.0f);
        memset(x + gs, 0, (size_t)gs * sizeof(float)); /* an all-zero group */
        void *buf =
            aligned_alloc(64, (forward__q8rows_bytes(n_tok, k_dim, gs) + 63) & ~(size_t)63);
        forward_q8rows_t r;
        forward__q8rows_make(&r, kern, x, k_dim, n_tok, k_dim, gs, buf);
        for (int t = 0; t < n_tok; t++)
            for (int g = 0; g < k_dim / gs; g++) {
                const float *xg = x + (size_t)t * k_dim + (size_t)g * gs;
                float amax = 0.0f;
                for (int i = 0; i < gs; i++)
                    amax = fmaxf(amax, fabsf(xg[i]));
                float scale = amax / 127.0f;
                cr_assert_eq(r.s[(size_t)t * (k_dim / gs) + g], scale, "gs %d: scale of group %d",
                             gs, g);
                for (int i = 0; i < gs; i++) {
                    int got = row_value(&r, t, g * gs + i);
                    float ratio = scale > 0.0f ? xg[i] / scale : 0.0f;
                    int want = scale > 0.0f ? (int)roundf(ratio) : 0;
                    bool tie = fabsf(fabsf(ratio - truncf(ratio)) - 0.5f) < 1e-4f;
                    cr_assert(got == want || (tie && abs(got - want) == 1),
                              "gs %d (%s): x %.9g / scale %.9g quantized to %d, want %d", gs,
                              forward__q8_kernel_name(kern), xg[i], scale, got, want);
                }
            }
        free(buf);
        free(x);
    }
}

/* The families each kernel cap allows (LLMSERVE_CPU_KERNELS is read once per process). */
Test(q8_kernels, kernel_choice_follows_group_size_and_cap)
{
    forward__kernels_init();
    forward_kernels_level_t l = forward__kernels_level();
    const char *cap = getenv("LLMSERVE_CPU_KERNELS");
    if (cap && strcmp(cap, "generic") == 0)
        cr_assert_eq(l, FWD_K_GENERIC);
    if (cap && strcmp(cap, "avx2") == 0)
        cr_assert_leq(l, FWD_K_AVX2);
    bool vnni = l >= FWD_K_AVX512_VNNI;
    cr_assert_eq(forward__q8_kernel(6), Q8K_GENERIC);
    cr_assert_eq(forward__q8_kernel(12), vnni ? Q8K_VNNI : Q8K_GENERIC);
    cr_assert_eq(forward__q8_kernel(64), vnni                 ? Q8K_VNNI
                                         : l >= FWD_K_AVX2 ? Q8K_AVX2
                                                           : Q8K_GENERIC);
    cr_assert_eq(forward__q8_kernel(32), vnni                 ? Q8K_VNNI
                                         : l >= FWD_K_AVX2 ? Q8K_AVX2
                                                           : Q8K_GENERIC);
    cr_assert_eq(forward__q8_bias_count(8, 128, 64), vnni ? 16u : 0u);
}
