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
 * Version 2 (Q8_0, export.py version2_export, read by runq.c) adds an int32 group_size
 * after the shared-classifier byte; the norms stay fp32 and come first, then every
 * matrix is stored as int8 values followed by one fp32 scale per group_size consecutive
 * values (value i = q[i] * s[i / group_size]): the embedding, then wq, wk, wv, wo, w1,
 * w2, w3 one layer at a time (each layer its own values-then-scales pair), then wcls
 * when unshared.
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
    int group_size; /* Q8_0 values per scale (ak42 version 2); 0 for fp32 files */
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

/* One Q8_0 matrix: value i (row-major, as the fp32 matrices) is q[i] * s[i / group_size].
 * group_size divides the row length, so no group spans two rows. */
typedef struct {
    const int8_t *q; /* [rows][cols] */
    const float *s;  /* [rows * cols / group_size] */
} ckpt_q8_t;

/* The quantized matrices of a version-2 file.  The per-layer arrays are [n_layers]
 * and share one allocation owned by the ckpt_t; the tensors point into the mapping. */
typedef struct {
    ckpt_q8_t token_embedding; /* [vocab_size][dim] */
    ckpt_q8_t *wq;             /* [n_layers] of [dim][dim] */
    ckpt_q8_t *wk;             /* [n_layers] of [kv_dim][dim] */
    ckpt_q8_t *wv;             /* [n_layers] of [kv_dim][dim] */
    ckpt_q8_t *wo;             /* [n_layers] of [dim][dim] */
    ckpt_q8_t *w1;             /* [n_layers] of [hidden_dim][dim] */
    ckpt_q8_t *w2;             /* [n_layers] of [dim][hidden_dim] */
    ckpt_q8_t *w3;             /* [n_layers] of [hidden_dim][dim] */
    ckpt_q8_t wcls;            /* [vocab_size][dim]; equal to token_embedding when shared */
} ckpt_q8_weights_t;

typedef struct {
    char *path;         /* as given to ckpt_open (owned) */
    char *name;         /* file name without directory or extension, e.g. "stories15M" (owned) */
    ckpt_config_t cfg;
    /* Pointers into the mapping.  For version 2 only the three norms are set; the
     * matrices (embedding and wcls too) are NULL and live in q8 instead. */
    ckpt_weights_t w;
    ckpt_q8_weights_t q8; /* version 2 only; all NULL for the fp32 formats */
    const void *map;    /* the whole file, read-only */
    size_t map_bytes;
    int format_version; /* 0 = legacy, 1 = ak42 v1 fp32, 2 = ak42 v2 Q8_0 */
} ckpt_t;

/* Maps and validates the checkpoint at path.  Returns a new ckpt_t (caller owns it;
 * free with ckpt_close) or NULL after writing one line into err (err_len bytes) that
 * names the file and what is wrong (missing, truncated, bad shape, ...). */
ckpt_t *ckpt_open(const char *path, char *err, size_t err_len);

/* Unmaps and frees; NULL is a no-op. */
void ckpt_close(ckpt_t *ck);

/* Checks a shape: positive sizes, dim divisible by n_heads, n_heads by n_kv_heads,
 * even head_dim, and sizes small enough that byte counts fit in 63 bits.  A nonzero
 * group_size (Q8_0) must be positive and divide dim and hidden_dim (runq.c's matmul
 * and activation quantizer work in whole groups along each row), and every matrix
 * must hold a multiple of 4 values so that the scales after it are 4-byte aligned
 * in the mapping.  Fills head_dim and kv_dim.  Returns LS_OK or LS_ERR_INVALID with
 * a reason in err. */
int ckpt_config_check(ckpt_config_t *cfg, char *err, size_t err_len);

/* Number of fp32 values a legacy file of this shape holds after the header. */
uint64_t ckpt_float_count(const ckpt_config_t *cfg);

/* Bytes a version-2 (Q8_0) file of this shape and cfg->group_size holds, the
 * 256-byte header included; 0 when the shape or group size does not pass
 * ckpt_config_check. */
uint64_t ckpt_q8_file_bytes(const ckpt_config_t *cfg);

#endif
