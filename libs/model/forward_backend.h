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
     * FORWARD_KV_BLOCK] at slot p % FORWARD_KV_BLOCK).  Same outputs as forward_step. */
    int (*step)(void *impl, const forward_item_t *items, int n, const int *const *block_tables,
                int *out_tokens, float *logits);
    const char *(*device_name)(void *impl);
} forward__backend_t;

extern const forward__backend_t forward__cpu;

/* The CUDA backend, or NULL when llmserve was built without CUDA. */
const forward__backend_t *forward__cuda(void);

/* True when the CUDA backend is built in and at least one device is usable. */
bool forward__cuda_present(void);

#endif
