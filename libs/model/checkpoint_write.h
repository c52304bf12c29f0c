/*
 * checkpoint_write.h - writes llama2.c checkpoints with deterministic pseudo-random
 * weights, for tests, benchmarks and demos that need a model of a given shape, and
 * converts fp32 checkpoints to the other formats (int8 Q8_0 among them).
 *
 * Weights depend only on the seed, the tensor and the position in it, so the same
 * seed gives the same model in either format.  Scales keep activations near one
 * through any depth: matrices are uniform in +-1/sqrt(in), RMS norm weights in
 * [0.9, 1.1], the embedding and the classifier in +-2/sqrt(dim) (logits spread by
 * about one).  Thread-safe (no shared state).
 */
#ifndef MODEL_CHECKPOINT_WRITE_H
#define MODEL_CHECKPOINT_WRITE_H

#include "model/checkpoint.h"

#include <stddef.h>
#include <stdint.h>

typedef enum {
    CKPT_FORMAT_LEGACY = 0, /* llama2.c run.c's format (export.py --version 0) */
    CKPT_FORMAT_V1 = 1,     /* "ak42" version 1, fp32 (export.py --version 1) */
    CKPT_FORMAT_Q8_0 = 2,   /* "ak42" version 2, int8 matrices (export.py --version 2) */
} ckpt_format_t;

/* export.py's default Q8_0 group size, used when cfg->group_size is 0 */
#define CKPT_Q8_DEFAULT_GROUP 64

/* Writes a checkpoint of shape cfg (checked with ckpt_config_check; head_dim and
 * kv_dim are recomputed, cfg is not changed) to path, streaming: memory use does not
 * grow with the model.  CKPT_FORMAT_Q8_0 quantizes the same fp32 values the other
 * formats hold, in groups of cfg->group_size (0: CKPT_Q8_DEFAULT_GROUP) as export.py
 * does: scale = max|w| / 127, q = round(w / scale); the fp32 formats ignore
 * group_size.  The file appears under path only when complete (written to path.tmp,
 * then renamed).  Returns LS_OK, LS_ERR_INVALID for a bad shape, group size or format,
 * LS_ERR_NOMEM, or LS_ERR_IO, each with a reason naming the file in err. */
int ckpt_write(const char *path, const ckpt_config_t *cfg, uint64_t seed, ckpt_format_t format,
               char *err, size_t err_len);

/* Writes the weights of src (an fp32 checkpoint: legacy or ak42 version 1) to path in
 * format, as ckpt_write writes its own values: the same layout, Q8_0 in groups of
 * group_size (0: CKPT_Q8_DEFAULT_GROUP; ignored for the fp32 formats) quantized the
 * same way.  So converting a model-maker file gives, byte for byte, the file the model
 * maker writes in that format from the same seed.  Same results as ckpt_write, and
 * LS_ERR_INVALID for a Q8_0 source, a group size that does not fit the shape, or path
 * naming the source itself. */
int ckpt_convert(const char *path, const ckpt_t *src, ckpt_format_t format, int group_size,
                 char *err, size_t err_len);

#endif
