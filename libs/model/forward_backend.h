/*
 * forward_backend.h - what forward.c needs from a backend (internal to libs/model).
 *
 * forward.c validates items, keeps the KV block allocator and each sequence's block
 * table, and calls the backend to do the arithmetic.  A backend owns its copy of the
 * weights, its KV storage (n_blocks blocks of FORWARD_KV_BLOCK positions, each
 * holding keys and values for every layer) and its scratch buffers.
 */
#ifndef MODEL_FORWARD_BACKEND_H
#define MODEL_FORWARD_BACKEND_H

#include "model/forward.h"

typedef struct {
    const char *name; /* "cpu", "cuda" */
    /* Allocates everything for cfg and n_blocks KV blocks.  Returns the backend's
     * state or NULL with a reason in err. */
    void *(*create)(const ckpt_t *ck, const forward_config_t *cfg, int n_blocks, char *err,
                    size_t err_len);
    void (*destroy)(void *impl);
    /* Items are already validated.  block_tables[i] lists the KV blocks of items[i]'s
     * sequence in position order (position p lives in block_tables[i][p /
     * FORWARD_KV_BLOCK] at slot p % FORWARD_KV_BLOCK).  Same outputs and errors as
     * forward_step (LS_ERR_DEVICE only when the device can no longer run anything). */
    int (*step)(void *impl, const forward_item_t *items, int n, const int *const *block_tables,
                int *out_tokens, float *logits);
    const char *(*device_name)(void *impl);
    /* Fault injection (forward_config_t.fault_after_steps): breaks the device for real
     * so that the next step must detect and report LS_ERR_DEVICE.  NULL: forward.c
     * reports the failure itself. */
    void (*inject_fault)(void *impl);
} forward__backend_t;

extern const forward__backend_t forward__cpu;

/* llama2.c's rotary table for every backend, so all rotate identically: for position
 * pos and pair i (0 <= i < head_dim / 2), cos_tab/sin_tab[pos * head_dim / 2 + i] =
 * cos/sin(pos / 10000^(2i / head_dim)), computed with run.c's float expressions. */
void forward__rope_table(int seq_len, int head_dim, float *cos_tab, float *sin_tab);

/* The CUDA backend, or NULL when llmserve was built without CUDA. */
const forward__backend_t *forward__cuda(void);

/* True when the CUDA backend is built in and at least one device is usable; otherwise
 * false with the reason in why (why_len bytes; NULL/0 for none).  The first time a
 * build with CUDA finds no device, the runtime's reason is logged at warning level. */
bool forward__cuda_present(char *why, size_t why_len);

#endif
