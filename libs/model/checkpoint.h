/*
 * checkpoint.h - llama-architecture weights in llama2.c's file formats.
 *
 * Legacy format: seven int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 * vocab_size, seq_len; a negative vocab_size means the classifier is stored
 * separately rather than shared with the token embedding), then fp32 tensors in
 * llama2.c's order: token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3,
 * rms_final, two unused RoPE tables (seq_len * head_dim / 2 floats each), then wcls
 * when unshared.  Versioned format: magic "ak42", int32 version (1 = fp32), the
 * shape, a shared-classifier byte, padding to 256 bytes, then fp32 tensors in
 * export.py's version-1 order (norms first, then embedding and per-kind matrices).
 *
 * The file is memory-mapped read-only, so processes that open the same checkpoint
 * share its pages.  Every matrix is row-major [out][in]: y[i] = sum_j w[i*in + j] * x[j].
 * A ckpt_t is immutable after ckpt_open and may be read from any thread.
 */
#ifndef MODEL_CHECKPOINT_H
#define MODEL_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int dim;        /* model width */
    int hidden_dim; /* feed-forward width */
    int n_layers;
    int n_heads;    /* query heads */
    int n_kv_heads; /* key/value heads; n_heads % n_kv_heads == 0 (grouped-query attention) */
    int vocab_size;
    int seq_len;    /* longest sequence (prompt + completion) in tokens */
    bool shared_classifier; /* wcls == token_embedding */
    int head_dim;   /* dim / n_heads */
    int kv_dim;     /* n_kv_heads * head_dim */
} ckpt_config_t;

typedef struct {
    const float *token_embedding; /* [vocab_size][dim] */
    const float *rms_att;         /* [n_layers][dim] */
    const float *wq;              /* [n_layers][dim][dim] */
    const float *wk;              /* [n_layers][kv_dim][dim] */
    const float *wv;              /* [n_layers][kv_dim][dim] */
    const float *wo;              /* [n_layers][dim][dim] */
    const float *rms_ffn;         /* [n_layers][dim] */
    const float *w1;              /* [n_layers][hidden_dim][dim] (gate) */
    const float *w2;              /* [n_layers][dim][hidden_dim] (down) */
    const float *w3;              /* [n_layers][hidden_dim][dim] (up) */
    const float *rms_final;       /* [dim] */
    const float *wcls;            /* [vocab_size][dim] */
} ckpt_weights_t;

typedef struct {
    char *path;         /* as given to ckpt_open (owned) */
    char *name;         /* file name without directory or extension, e.g. "stories15M" (owned) */
    ckpt_config_t cfg;
    ckpt_weights_t w;   /* pointers into the mapping */
    const void *map;    /* the whole file, read-only */
    size_t map_bytes;
    int format_version; /* 0 = legacy, 1 = ak42 v1 fp32 */
} ckpt_t;

/* Maps and validates the checkpoint at path.  Returns a new ckpt_t (caller owns it;
 * free with ckpt_close) or NULL after writing one line into err (err_len bytes) that
 * names the file and what is wrong (missing, truncated, bad shape, ...). */
ckpt_t *ckpt_open(const char *path, char *err, size_t err_len);

/* Unmaps and frees; NULL is a no-op. */
void ckpt_close(ckpt_t *ck);

/* Checks a shape: positive sizes, dim divisible by n_heads, n_heads by n_kv_heads,
 * even head_dim, and sizes small enough that byte counts fit in 63 bits.  Fills
 * head_dim and kv_dim.  Returns LS_OK or LS_ERR_INVALID with a reason in err. */
int ckpt_config_check(ckpt_config_t *cfg, char *err, size_t err_len);

/* Number of fp32 values a legacy file of this shape holds after the header. */
uint64_t ckpt_float_count(const ckpt_config_t *cfg);

#endif
