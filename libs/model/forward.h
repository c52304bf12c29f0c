/*
 * forward.h - the batched forward pass: one step runs every active sequence at once.
 *
 * A forward_t owns the weights on its device, a paged KV cache with a fixed budget,
 * and the scratch buffers of the largest step it accepts, all sized at create time
 * (nothing allocates in forward_step).  Backends are sibling files behind this
 * header: forward_cpu.c (threads + BLAS-style GEMM) and forward_cuda.cu (cuBLAS and
 * kernels, built when CUDA is enabled); FORWARD_AUTO picks CUDA when a device is
 * present and the CPU otherwise.
 *
 * KV memory is handed out in blocks of FORWARD_KV_BLOCK positions.  A sequence
 * reserves the positions it may ever need (prompt + max completion) when it opens,
 * so a step can never run out of KV space mid-generation: when the budget is spent,
 * forward_seq_open fails with LS_ERR_FULL and the caller waits or refuses.
 *
 * Threads: a forward_t is used by one thread (the scheduler that owns it);
 * forward_kv_free_tokens may be read from any thread.
 */
#ifndef MODEL_FORWARD_H
#define MODEL_FORWARD_H

#include "model/checkpoint.h"
#include "model/sampler.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FORWARD_KV_BLOCK 16 /* positions per KV block */

typedef enum {
    FORWARD_AUTO = 0, /* CUDA when built in and a device is present, else CPU */
    FORWARD_CPU = 1,
    FORWARD_CUDA = 2, /* fails at create time without a device */
} forward_backend_t;

typedef struct {
    forward_backend_t backend; /* default FORWARD_AUTO */
    int max_batch;             /* sequences per step; default 32 */
    int max_step_tokens;       /* tokens per step over all items (prefill chunks count
                                  every token); default 512 */
    int64_t kv_budget_tokens;  /* KV positions over all open sequences; default
                                  max_batch * seq_len */
    int threads;               /* CPU threads; default 0 = online cores */
    int cuda_device;           /* default 0 */
    int fault_after_steps;     /* fault injection, for testing the fatal-device path:
                                  after this many successful steps the device fails
                                  for good (CUDA: a kernel makes a real illegal-address
                                  fault; CPU: the step reports LS_ERR_DEVICE).  0 (the
                                  default) = never */
    bool prefix_cache;         /* keep and share full KV blocks of equal prefixes */
} forward_config_t;

typedef struct forward forward_t;

/* One sequence's part of a step: append tokens[0..n_tokens) at positions
 * pos..pos+n_tokens-1 and pick the token that follows the last of them. */
typedef struct {
    int seq;                  /* from forward_seq_open */
    const int *tokens;        /* borrowed for the call */
    int n_tokens;             /* >= 1; > 1 is a prefill chunk */
    int pos;                  /* tokens the sequence already holds */
    const sampler_t *sampler; /* parameters for the pick */
    float coin;               /* sampler_coin(sampler) drawn by the caller */
} forward_item_t;

/* Fills cfg with the defaults above. */
void forward_config_init(forward_config_t *cfg);

/* Builds a forward pass for ck (borrowed; must outlive the result) on the backend cfg
 * asks for.  Returns a new forward_t (free with forward_destroy) or NULL with a reason
 * in err (no device, out of device memory, budget smaller than one sequence, ...).
 * Int8 (Q8_0, format_version 2) checkpoints run on both backends with runq.c's
 * arithmetic: the CPU's int8 kernels (forward_cpu_q8.h) and the CUDA backend's. */
forward_t *forward_create(const ckpt_t *ck, const forward_config_t *cfg, char *err,
                          size_t err_len);

/* Frees everything; NULL is a no-op. */
void forward_destroy(forward_t *f);

/* "cpu" or "cuda" (static string). */
const char *forward_backend_name(const forward_t *f);

/* A description of the device, e.g. "2 threads" or "NVIDIA H100 80GB HBM3 (sm_90, 79
 * GiB, driver CUDA 13.0, runtime 13.0)" (borrowed from f). */
const char *forward_device_name(const forward_t *f);

/* The limits f was built with (after defaults were applied). */
const forward_config_t *forward_config(const forward_t *f);

/* Opens a sequence that may hold up to reserve_tokens positions (<= seq_len).
 * Returns its id (>= 0), LS_ERR_FULL when the KV budget or max_batch sequences are
 * in use, or LS_ERR_INVALID when reserve_tokens is out of range. */
int forward_seq_open(forward_t *f, int reserve_tokens);

/* Opens a sequence whose first n_tokens positions will be tokens[0..n_tokens), reserving
 * reserve_tokens positions as forward_seq_open does; *cached_tokens (may be NULL) gets
 * the positions already held, where its first step must start (0 here). */
int forward_seq_open_tokens(forward_t *f, const int *tokens, int n_tokens, int reserve_tokens,
                            int *cached_tokens);

/* Releases the sequence's KV blocks; unknown ids are ignored. */
void forward_seq_close(forward_t *f, int seq);

/* KV positions not reserved by any open sequence (any thread may read it). */
int64_t forward_kv_free_tokens(const forward_t *f);

/* Runs one step over n items (distinct open sequences, n <= max_batch, total tokens
 * <= max_step_tokens, pos + n_tokens <= the sequence's reservation).  Writes the
 * picked token of items[i] to out_tokens[i]; when logits is not NULL also writes
 * each item's final-position logits (n * vocab_size floats, before sampling) there.
 * Returns LS_OK, LS_ERR_INVALID for an item that breaks those rules (nothing is
 * changed), LS_ERR_INTERNAL when the step failed but the device still works, or
 * LS_ERR_DEVICE when the device failed for good (a sticky CUDA error such as an
 * illegal address or an uncorrectable ECC error): every later step then returns
 * LS_ERR_DEVICE at once, and the process must end to get the device back. */
int forward_step(forward_t *f, const forward_item_t *items, int n, int *out_tokens,
                 float *logits);

/* True once a step returned LS_ERR_DEVICE (any thread may read it). */
bool forward_device_lost(const forward_t *f);

/* Read bandwidth of CUDA device `device` in bytes per second: the best of `repeats`
 * timed reads of a bytes-long buffer by a kernel (one untimed read first).  -1 with a
 * reason in err without CUDA or a device, or when the buffer cannot be had. */
double forward_cuda_read_bandwidth(int device, size_t bytes, int repeats, char *err,
                                   size_t err_len);

#endif
