#include "embed.h"

#include "base/err.h"
#include "base/utf8.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int inf_embed_scratch_init(inf_embed_scratch_t *sc, const ckpt_t *ck)
{
    memset(sc, 0, sizeof(*sc));
    size_t dim = (size_t)ck->cfg.dim;
    sc->cap_ids = ck->cfg.seq_len;
    sc->ids = malloc((size_t)sc->cap_ids * sizeof(int));
    sc->row = malloc(dim * sizeof(float));
    sc->sum = malloc(dim * sizeof(double));
    if (!sc->ids || !sc->row || !sc->sum) {
        inf_embed_scratch_free(sc);
        return LS_ERR_NOMEM;
    }
    return LS_OK;
}

void inf_embed_scratch_free(inf_embed_scratch_t *sc)
{
    free(sc->ids);
    free(sc->row);
    free(sc->sum);
    memset(sc, 0, sizeof(*sc));
}

/* Row id of the token embedding table as floats: a pointer into the mapping for fp32
 * files, else dequantized into sc->row the way the forward pass reads it
 * (forward__q8_row: q * scale, in float). */
static const float *table_row(const ckpt_t *ck, int id, float *row)
{
    int dim = ck->cfg.dim;
    if (ck->format_version != 2)
        return ck->w.token_embedding + (size_t)id * (size_t)dim;
    const ckpt_q8_t *m = &ck->q8.token_embedding;
    int gs = ck->cfg.group_size;
    const int8_t *q = m->q + (size_t)id * (size_t)dim;
    const float *s = m->s + (size_t)id * (size_t)(dim / gs);
    for (int i = 0; i < dim; i++)
        row[i] = (float)q[i] * s[i / gs];
    return row;
}

int inf_embed_text(const ckpt_t *ck, const tok_t *tok, const char *text, size_t len,
                   size_t max_bytes, inf_embed_scratch_t *sc, float *out, int *n_tokens, char *err,
                   size_t err_len)
{
    int seq_len = ck->cfg.seq_len, dim = ck->cfg.dim, vocab = ck->cfg.vocab_size;
    if (len == 0) {
        snprintf(err, err_len, "is empty");
        return LS_ERR_INVALID;
    }
    if (!ls_utf8_valid(text, len)) {
        snprintf(err, err_len, "is not valid UTF-8");
        return LS_ERR_INVALID;
    }
    /* No token covers more than max_bytes / seq_len bytes, so longer text cannot fit:
     * refused before it costs tokenizer time. */
    if (max_bytes > 0 && len > max_bytes) {
        snprintf(err, err_len, "has %zu bytes, more than the model's context of %d tokens can hold",
                 len, seq_len);
        return LS_ERR_INVALID;
    }
    int n = tok_encode(tok, text, len, true, false, sc->ids, sc->cap_ids);
    if (n == LS_ERR_NOMEM) {
        snprintf(err, err_len, "out of memory");
        return LS_ERR_NOMEM;
    }
    if (n < 0) {
        snprintf(err, err_len, "needs more than %d tokens, the model's context (BOS included)",
                 seq_len);
        return LS_ERR_INVALID;
    }
    /* ids[0] is BOS: the same row for every text, it would only pull all vectors
     * towards one point. */
    int first = n > 0 && sc->ids[0] == TOK_BOS ? 1 : 0;
    if (n - first == 0) {
        snprintf(err, err_len, "has no tokens to embed");
        return LS_ERR_INVALID;
    }
    for (int j = 0; j < dim; j++)
        sc->sum[j] = 0.0;
    for (int i = first; i < n; i++) {
        int id = sc->ids[i];
        if (id < 0 || id >= vocab) { /* the tokenizer was loaded for this vocab_size */
            snprintf(err, err_len, "gave token %d outside the vocabulary [0, %d)", id, vocab);
            return LS_ERR_INVALID;
        }
        const float *row = table_row(ck, id, sc->row);
        for (int j = 0; j < dim; j++)
            sc->sum[j] += (double)row[j];
    }
    double count = (double)(n - first), ss = 0.0;
    for (int j = 0; j < dim; j++) {
        sc->sum[j] /= count;
        ss += sc->sum[j] * sc->sum[j];
    }
    double norm = sqrt(ss);
    if (!(norm > 0.0) || !isfinite(norm)) {
        snprintf(err, err_len, "has a mean embedding of zero length (no direction)");
        return LS_ERR_INVALID;
    }
    for (int j = 0; j < dim; j++)
        out[j] = (float)(sc->sum[j] / norm);
    *n_tokens = n - first;
    return LS_OK;
}
