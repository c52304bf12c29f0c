/*
 * forward_cpu_matmul.h - the CPU backend's arithmetic kernels (internal to libs/model).
 *
 * One matmul multiplies a slice of a weight matrix's rows against every token row of
 * a step at once, so a weight row is read from memory once per step however many
 * tokens the step holds (decode of B sequences, prefill chunks, or both).  The kernels
 * use AVX-512F or AVX2+FMA when the CPU has them (checked at run time, so the build
 * needs no -m flags and runs on any x86-64) and plain C otherwise.
 * Every function is reentrant: threads call them at once on disjoint outputs.
 */
#ifndef MODEL_FORWARD_CPU_MATMUL_H
#define MODEL_FORWARD_CPU_MATMUL_H

#include <stdbool.h>
#include <stddef.h>

/* Picks the kernels for this CPU: AVX-512F, else AVX2+FMA, else plain C.  The
 * environment variable LLMSERVE_CPU_KERNELS=avx2 or =generic caps the choice (read
 * once per process).  Safe to call more than once, from any thread. */
void forward__kernels_init(void);

/* What forward__kernels_init found usable (after the LLMSERVE_CPU_KERNELS cap). */
typedef enum {
    FWD_K_GENERIC = 0,
    FWD_K_AVX2 = 1,       /* AVX2 + FMA */
    FWD_K_AVX512 = 2,     /* and AVX-512F */
    FWD_K_AVX512_VNNI = 3 /* and AVX-512 BW and VNNI (the int8 kernels) */
} forward_kernels_level_t;

forward_kernels_level_t forward__kernels_level(void);

/* "avx512f", "avx2+fma" or "generic": the kernels forward__kernels_init picked. */
const char *forward__kernels_name(void);

/* For rows o in [o0, o1) of w ([out][k_dim] row-major) and tokens t in [0, n_tok):
 *   y[t * ldy + o] = sum_k w[o * k_dim + k] * x[t * ldx + k]      (accumulate false)
 *   y[t * ldy + o] += that sum                                  (accumulate true)
 * Runs on the calling thread only. */
void forward__matmul(const float *w, int k_dim, int o0, int o1, const float *x, int ldx, int n_tok,
                     float *y, int ldy, bool accumulate);

/* Token rows prepared once for the several matmuls that read them.  With AVX-512 and 16
 * or more rows the kernel works on them transposed (blocks of 32 tokens, k-major); made
 * once per thread and phase instead of inside every call, that copy stops costing a
 * seventh of a batched step. */
typedef struct {
    const float *x; /* the rows as given: x[t * ldx + k] */
    int ldx, n_tok, k_dim;
    const float *xt; /* the transposed copy, or NULL when the kernels read x itself */
} forward_rows_t;

/* Floats forward__rows_make may write into its buffer for n_tok rows of k_dim. */
size_t forward__rows_floats(int n_tok, int k_dim);

/* Fills r for rows x; writes the transposed copy into buf (forward__rows_floats floats,
 * 64-byte aligned; NULL: never copy) when the kernels in use want one. */
void forward__rows_make(forward_rows_t *r, const float *x, int ldx, int n_tok, int k_dim,
                        float *buf);

/* forward__matmul over prepared rows (k_dim, x, ldx and n_tok from r). */
void forward__matmul_rows(const float *w, int o0, int o1, const forward_rows_t *r, float *y,
                          int ldy, bool accumulate);

/* sum_i a[i] * b[i] over n floats. */
float forward__dot(const float *a, const float *b, int n);

/* y[i] += s * x[i] over n floats. */
void forward__axpy(float *y, float s, const float *x, int n);

/* out[p] = scale * sum_i q[i] * k[p * ld + i] for p in [0, n), i in [0, hd): the
 * attention scores of one query against n key rows ld floats apart. */
void forward__dots(const float *q, const float *k, size_t ld, int n, int hd, float scale,
                   float *out);

/* o[i] += sum_p s[p] * v[p * ld + i] for i in [0, hd), p in [0, n): n value rows ld
 * floats apart, weighted by their scores, added into one output row. */
void forward__axpys(float *o, const float *s, const float *v, size_t ld, int n, int hd);

#endif
