/*
 * embed.h - a text's embedding from the served model's own token embedding table, for
 * Inference.Embed: the text is tokenized as a Generate prompt is (BOS in front), the
 * table's rows of its tokens (BOS left out: it is the same row for every text) are
 * averaged, and the mean is scaled to unit L2 norm.
 *
 * Why the table and not the final hidden states: no forward pass, so embedding never
 * takes a place in the scheduler's batch, never waits behind generation and cannot
 * disturb it; and the result depends on nothing but the text and the checkpoint.  The
 * price: the mean of token rows does not see word order ("red blue" and "blue red" get
 * the same vector).
 *
 * Determinism: rows are summed in token order in double precision and the sum is
 * divided and normalized in double before one rounding to float, so the same text
 * gives the same bits whatever batch it came in (each text is computed alone).  Q8_0
 * rows are dequantized exactly as the forward pass does (q * scale in float).
 *
 * Thread-safe: ck and tok are immutable; every call brings its own buffers.
 */
#ifndef INF_EMBED_H
#define INF_EMBED_H

#include "model/checkpoint.h"
#include "model/tokenizer.h"

#include <stddef.h>

#define INF_EMBED_MAX_TEXTS 256 /* texts per Embed call */

/* Scratch for one text, sized once per call for the model: tokens (seq_len ints), a
 * dequantized row and the running sum (dim each). */
typedef struct {
    int *ids;
    int cap_ids; /* seq_len */
    float *row;
    double *sum;
} inf_embed_scratch_t;

/* Sizes sc for ck.  Returns LS_OK or LS_ERR_NOMEM (sc is then empty). */
int inf_embed_scratch_init(inf_embed_scratch_t *sc, const ckpt_t *ck);

/* Frees what sc holds; a zeroed sc is fine. */
void inf_embed_scratch_free(inf_embed_scratch_t *sc);

/* Embeds text[0..len) into out (ck->cfg.dim floats) and sets *n_tokens to the tokens
 * averaged.  max_bytes: longer text is refused before tokenizing (0 = no limit).
 * Returns LS_OK, or LS_ERR_INVALID with a one-line reason in err (for the client) when
 * the text is empty, not UTF-8, needs more than seq_len tokens with BOS, or has no
 * direction (its mean row is zero).  out is written only on LS_OK. */
int inf_embed_text(const ckpt_t *ck, const tok_t *tok, const char *text, size_t len,
                   size_t max_bytes, inf_embed_scratch_t *sc, float *out, int *n_tokens, char *err,
                   size_t err_len);

#endif
