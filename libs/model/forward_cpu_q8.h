/*
 * forward_cpu_q8.h - the CPU backend's int8 (Q8_0) matmul (internal to libs/model).
 *
 * A Q8_0 matmul works as llama2.c's runq.c does: each token row is quantized in groups
 * of group_size values (scale = max|x| / 127, q = round(x / scale)), and each output is
 * the sum over groups of (int32 dot product of the int8 values) * weight scale *
 * activation scale.  As with the fp32 kernels, one call multiplies a slice of weight
 * rows against every token row of a step, so weights stream from memory once per step.
 *
 * Kernels, picked at run time (LLMSERVE_CPU_KERNELS caps them as for fp32):
 *   - "avx512-vnni": group_size a multiple of 4 and a CPU with AVX-512 VNNI and BW.
 *     vpdpbusd multiplies unsigned by signed bytes, so token values are stored plus
 *     128 (1..255) and each weight group's 128 * sum(q) is taken back out through the
 *     accumulator's starting value (forward_q8mat_t.bias).  A single token row whose
 *     group size is a multiple of 32 but not of 64 takes the AVX2 kernel instead
 *     (forward__q8rows_make decides; the weights serve both);
 *   - "avx2": group_size a multiple of 32 and AVX2: |w| times x with w's sign
 *     (vpmaddubsw cannot saturate: both magnitudes are at most 127);
 *   - "generic": any group size, plain C.
 * Every function is reentrant: threads call them at once on disjoint outputs.
 */
#ifndef MODEL_FORWARD_CPU_Q8_H
#define MODEL_FORWARD_CPU_Q8_H

#include "model/checkpoint.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The kernel family for a group size on this CPU (after forward__kernels_init). */
typedef enum { Q8K_GENERIC = 0, Q8K_AVX2 = 1, Q8K_VNNI = 2 } forward_q8_kernel_t;

forward_q8_kernel_t forward__q8_kernel(int group_size);

/* "avx512-vnni", "avx2" or "generic". */
const char *forward__q8_kernel_name(forward_q8_kernel_t k);

/* One weight matrix, [rows][cols] with cols a multiple of the group size. */
typedef struct {
    const int8_t *q;     /* [rows][cols] */
    const float *s;      /* [rows][cols / group_size] */
    const int32_t *bias; /* VNNI only: [rows][cols / group_size], each group's
                            -8 * sum(q) (its 128 * sum over 16 int32 lanes); else NULL */
} forward_q8mat_t;

/* int32 values forward__q8_bias_make writes for a rows x cols matrix. */
size_t forward__q8_bias_count(int rows, int cols, int group_size);

/* Fills bias for m (m->bias is ignored) when kernel k needs one; a no-op otherwise. */
void forward__q8_bias_make(forward_q8_kernel_t k, const ckpt_q8_t *m, int rows, int cols,
                           int group_size, int32_t *bias);

/* Token rows quantized for the int8 matmul. */
typedef struct {
    const int8_t *q; /* [n_tok][k_dim] (VNNI: the bytes are value + 128, read unsigned) */
    const float *s;  /* [n_tok][k_dim / group_size] */
    /* VNNI with 2 or more rows: the same values transposed for the broadcast-form
     * kernel, in blocks of block_rows (T = 2, 4, 8 or 16) rows, C = 64 / T bytes of
     * each: qt[block][k / C][T rows][C bytes]; st[block][group][16 lanes], each row's
     * scale in its 16 / T lanes.  Rows past n_tok hold zeros.  NULL otherwise. */
    const int8_t *qt;
    const float *st;
    int block_rows;
    int n_tok, k_dim, group_size;
    forward_q8_kernel_t kernel;
} forward_q8rows_t;

/* Bytes forward__q8rows_make may write into its buffer for n_tok rows of k_dim. */
size_t forward__q8rows_bytes(int n_tok, int k_dim, int group_size);

/* Quantizes rows x[t * ldx + k] (t < n_tok, k < k_dim) into buf (forward__q8rows_bytes
 * bytes, 64-byte aligned) for kernel k and fills r. */
void forward__q8rows_make(forward_q8rows_t *r, forward_q8_kernel_t k, const float *x, int ldx,
                          int n_tok, int k_dim, int group_size, void *buf);

/* For rows o in [o0, o1) of w and every token row t of x:
 *   y[t * ldy + o] = sum over groups (accumulate false), += (accumulate true).
 * x's kernel runs; w must hold the sums (bias) when that is the VNNI one. */
void forward__matmul_q8(const forward_q8mat_t *w, int o0, int o1, const forward_q8rows_t *x,
                        float *y, int ldy, bool accumulate);

/* Row r of a Q8_0 matrix with cols columns, dequantized into out (cols floats). */
void forward__q8_row(const ckpt_q8_t *m, int cols, int group_size, int r, float *out);

#endif
