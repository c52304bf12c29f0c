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
 * Prefix cache (forward_config_t.prefix_cache): every KV block that a step fills (all
 * FORWARD_KV_BLOCK positions written) is published under its token ids and the chain
 * of blocks before it, so a later sequence opened with forward_seq_open_tokens on the
 * same leading tokens maps those blocks into its table (shared, read-only) instead of
 * computing them again.  Published blocks are reference counted by the open sequences
 * holding them; when none holds one it stays cached on an LRU list and counts as free
 * (forward_kv_free_tokens), to be evicted when an open needs the space.  A forward_t
 * serves one checkpoint, so its cache is per model by construction: KV is never shared
 * across models.  A step may not write into a published block (LS_ERR_INVALID), so
 * shared KV never changes.
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
    bool prefix_cache;         /* share full KV blocks between sequences with the same
                                  leading tokens (see above); default true.  false:
                                  every sequence computes all of its KV itself */
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

/* Opens a sequence that may hold up to reserve_tokens positions (<= seq_len), with no
 * tokens known in advance (nothing is taken from the prefix cache; its blocks are still
 * published as steps fill them).  Returns its id (>= 0), LS_ERR_FULL when the KV budget
 * (after evicting every unused cached block) or max_batch sequences are in use, or
 * LS_ERR_INVALID when reserve_tokens is out of range. */
int forward_seq_open(forward_t *f, int reserve_tokens);

/* Opens a sequence whose first n_tokens positions will be tokens[0..n_tokens) and that may
 * hold up to reserve_tokens positions (n_tokens <= reserve_tokens <= seq_len).  With the
 * prefix cache, the longest chain of cached full blocks equal to tokens' leading full blocks
 * is mapped into the sequence (shared, read-only) -- never all n_tokens: at least one token
 * is always left to feed, so a prompt that is a whole number of cached blocks reuses all but
 * its last block.  *cached_tokens (may be NULL) gets the positions already held (a multiple
 * of FORWARD_KV_BLOCK; 0 without the prefix cache); the sequence's next step must start
 * there (pos == *cached_tokens).  tokens is borrowed for the call (may be NULL when
 * n_tokens is 0).  Returns the id, LS_ERR_FULL (no free slot, or the budget cannot give
 * the blocks beyond the shared ones even after evicting every unused cached block),
 * LS_ERR_INVALID (bad arguments: a count out of range, a token outside the vocabulary).
 * On failure nothing changes. */
int forward_seq_open_tokens(forward_t *f, const int *tokens, int n_tokens, int reserve_tokens,
                            int *cached_tokens);

/* Releases the sequence's KV blocks; unknown ids are ignored.  Its private blocks become
 * free; its published blocks lose one reference each and, when no sequence holds them any
 * more, stay cached (unused, evictable, counted by forward_kv_free_tokens). */
void forward_seq_close(forward_t *f, int seq);

/* KV positions an open could get now: free blocks plus cached blocks that no open
 * sequence holds, times FORWARD_KV_BLOCK (any thread may read it). */
int64_t forward_kv_free_tokens(const forward_t *f);

typedef struct {
    int64_t lookups;       /* opens with tokens, prefix cache on (successful opens) */
    int64_t hit_tokens;    /* positions mapped from the cache, summed */
    int64_t cached_blocks; /* published blocks now, used or not */
    int64_t unused_blocks; /* of them, held by no sequence (evictable) */
    int64_t evictions;     /* cached blocks reused for something else */
} forward_prefix_stats_t;

/* Fills out with the prefix cache's counters (all zero when it is off).  Owner thread. */
void forward_prefix_stats(const forward_t *f, forward_prefix_stats_t *out);

/* True when f was built with prefix_cache on (any thread may call it). */
bool forward_prefix_cache_on(const forward_t *f);

/* Runs one step over n items (distinct open sequences, n <= max_batch, total tokens
 * <= max_step_tokens, pos + n_tokens <= the sequence's reservation, pos not below the
 * sequence's first unpublished block: a rewind into a published block, shared or not,
 * would change cached KV).  With the prefix cache, every block the step fills is
 * published when it returns LS_OK.  Writes the picked token of items[i] to
 * out_tokens[i]; when logits is not NULL also writes each item's final-position
 * logits (n * vocab_size floats, before sampling) there.  Returns LS_OK,
 * LS_ERR_INVALID for an item that breaks those rules (nothing is changed),
 * LS_ERR_INTERNAL when the step failed but the device still works, or LS_ERR_DEVICE
 * when the device failed for good (a sticky CUDA error such as an illegal address or
 * an uncorrectable ECC error): every later step then returns LS_ERR_DEVICE at once,
 * and the process must end to get the device back. */
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
