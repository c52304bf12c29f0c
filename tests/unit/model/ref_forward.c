/*
 * ref_forward.c - llama2.c run.c's forward pass (runq.c's for Q8_0 checkpoints), one
 * token of one sequence at a time.
 */
#include "ref_forward.h"

#include "base/log.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct ref_forward {
    const ckpt_t *ck;
    float *x, *xb, *xb2, *hb, *hb2, *q, *att, *logits; /* activations of one token */
    float *key_cache;                                  /* [n_layers][seq_len][kv_dim] */
    float *value_cache;                                /* [n_layers][seq_len][kv_dim] */
    int8_t *xq; /* Q8_0 only: the activation being multiplied, [max(dim, hidden_dim)] */
    float *xs;  /* Q8_0 only: its scales, [max(dim, hidden_dim) / group_size] */
};

/* Layer l's matrix of one kind: fp32 (f) or Q8_0 (q), by the checkpoint's format. */
typedef struct {
    const float *f;
    const ckpt_q8_t *q;
} ref_matrix_t;

static void rmsnorm(float *o, const float *x, const float *weight, int size)
{
    float ss = 0.0f;
    for (int j = 0; j < size; j++)
        ss += x[j] * x[j];
    ss /= (float)size;
    ss += 1e-5f;
    ss = 1.0f / sqrtf(ss);
    for (int j = 0; j < size; j++)
        o[j] = weight[j] * (ss * x[j]);
}

static void softmax(float *x, int size)
{
    float max_val = x[0];
    for (int i = 1; i < size; i++)
        if (x[i] > max_val)
            max_val = x[i];
    float sum = 0.0f;
    for (int i = 0; i < size; i++) {
        x[i] = expf(x[i] - max_val);
        sum += x[i];
    }
    for (int i = 0; i < size; i++)
        x[i] /= sum;
}

/* xout[d] = W[d][n] * x[n] */
static void matmul(float *xout, const float *x, const float *w, int n, int d)
{
    for (int i = 0; i < d; i++) {
        float val = 0.0f;
        for (int j = 0; j < n; j++)
            val += w[(size_t)i * n + j] * x[j];
        xout[i] = val;
    }
}

/* x[n] to int8 in groups of gs, as runq.c's quantize: scale = max|x| / 127. */
static void quantize(int8_t *q, float *s, const float *x, int n, int gs)
{
    for (int g = 0; g < n / gs; g++) {
        const float *xg = x + (size_t)g * gs;
        float wmax = 0.0f;
        for (int i = 0; i < gs; i++)
            if (fabsf(xg[i]) > wmax)
                wmax = fabsf(xg[i]);
        float scale = wmax / 127.0f;
        s[g] = scale;
        for (int i = 0; i < gs; i++) /* an all-zero group quantizes to zeros */
            q[(size_t)g * gs + i] = scale > 0.0f ? (int8_t)roundf(xg[i] / scale) : 0;
    }
}

/* xout[d] = W[d][n] * x[n] as runq.c's matmul: x quantized first, then per group an
 * int32 dot product times the weight's and the activation's scales. */
static void matmul_q8(ref_forward_t *r, float *xout, const float *x, const ckpt_q8_t *w, int n,
                      int d)
{
    int gs = r->ck->cfg.group_size;
    quantize(r->xq, r->xs, x, n, gs);
    for (int i = 0; i < d; i++) {
        size_t in = (size_t)i * n;
        float val = 0.0f;
        for (int j = 0; j < n; j += gs) {
            int32_t ival = 0;
            for (int k = 0; k < gs; k++)
                ival += (int32_t)r->xq[j + k] * (int32_t)w->q[in + j + k];
            val += (float)ival * w->s[(in + j) / gs] * r->xs[j / gs];
        }
        xout[i] = val;
    }
}

static void matmul_any(ref_forward_t *r, float *xout, const float *x, ref_matrix_t w, int n, int d)
{
    if (w.q)
        matmul_q8(r, xout, x, w.q, n, d);
    else
        matmul(xout, x, w.f, n, d);
}

/* Layer l of a kind whose layers hold count values each: q8 is the checkpoint's Q8_0
 * array (NULL for fp32 files, whose f is then offset; never offset a NULL pointer). */
static ref_matrix_t layer_of(const float *f, const ckpt_q8_t *q8, int l, size_t count)
{
    ref_matrix_t m = {NULL, NULL};
    if (q8)
        m.q = &q8[l];
    else
        m.f = f + (size_t)l * count;
    return m;
}

ref_forward_t *ref_forward_create(const ckpt_t *ck)
{
    const ckpt_config_t *p = &ck->cfg;
    ref_forward_t *r = ls_xcalloc(1, sizeof(*r));
    r->ck = ck;
    r->x = ls_xcalloc((unsigned long)p->dim, sizeof(float));
    r->xb = ls_xcalloc((unsigned long)p->dim, sizeof(float));
    r->xb2 = ls_xcalloc((unsigned long)p->dim, sizeof(float));
    r->hb = ls_xcalloc((unsigned long)p->hidden_dim, sizeof(float));
    r->hb2 = ls_xcalloc((unsigned long)p->hidden_dim, sizeof(float));
    r->q = ls_xcalloc((unsigned long)p->dim, sizeof(float));
    r->att = ls_xcalloc((unsigned long)p->n_heads * (unsigned long)p->seq_len, sizeof(float));
    r->logits = ls_xcalloc((unsigned long)p->vocab_size, sizeof(float));
    unsigned long kv =
        (unsigned long)p->n_layers * (unsigned long)p->seq_len * (unsigned long)p->kv_dim;
    r->key_cache = ls_xcalloc(kv, sizeof(float));
    r->value_cache = ls_xcalloc(kv, sizeof(float));
    if (ck->format_version == 2) {
        int widest = p->dim > p->hidden_dim ? p->dim : p->hidden_dim;
        r->xq = ls_xcalloc((unsigned long)widest, sizeof(int8_t));
        r->xs = ls_xcalloc((unsigned long)(widest / p->group_size), sizeof(float));
    }
    return r;
}

void ref_forward_destroy(ref_forward_t *r)
{
    if (!r)
        return;
    free(r->x);
    free(r->xb);
    free(r->xb2);
    free(r->hb);
    free(r->hb2);
    free(r->q);
    free(r->att);
    free(r->logits);
    free(r->key_cache);
    free(r->value_cache);
    free(r->xq);
    free(r->xs);
    free(r);
}

const float *ref_forward_token(ref_forward_t *r, int token, int pos)
{
    const ckpt_config_t *p = &r->ck->cfg;
    const ckpt_weights_t *w = &r->ck->w;
    const ckpt_q8_weights_t *q8 = &r->ck->q8; /* all NULL for fp32 files */
    int dim = p->dim, kv_dim = p->kv_dim, hidden_dim = p->hidden_dim;
    int head_size = dim / p->n_heads;
    int kv_mul = p->n_heads / p->n_kv_heads;
    size_t d = (size_t)dim, kvd = (size_t)kv_dim, hid = (size_t)hidden_dim;
    float *x = r->x;

    if (r->ck->format_version == 2) {
        /* runq.c dequantizes the whole table at load; one row is the same values */
        const ckpt_q8_t *e = &q8->token_embedding;
        size_t row = (size_t)token * d, gs = (size_t)p->group_size;
        for (size_t i = 0; i < d; i++)
            x[i] = (float)e->q[row + i] * e->s[(row + i) / gs];
    } else {
        memcpy(x, w->token_embedding + (size_t)token * dim, (size_t)dim * sizeof(float));
    }

    for (int l = 0; l < p->n_layers; l++) {
        rmsnorm(r->xb, x, w->rms_att + (size_t)l * dim, dim);

        size_t loff = (size_t)l * p->seq_len * kv_dim;
        float *k = r->key_cache + loff + (size_t)pos * kv_dim;
        float *v = r->value_cache + loff + (size_t)pos * kv_dim;
        matmul_any(r, r->q, r->xb, layer_of(w->wq, q8->wq, l, d * d), dim, dim);
        matmul_any(r, k, r->xb, layer_of(w->wk, q8->wk, l, d * kvd), dim, kv_dim);
        matmul_any(r, v, r->xb, layer_of(w->wv, q8->wv, l, d * kvd), dim, kv_dim);

        for (int i = 0; i < dim; i += 2) {
            int head_dim = i % head_size;
            float freq = 1.0f / powf(10000.0f, (float)head_dim / (float)head_size);
            float val = (float)pos * freq;
            float fcr = cosf(val), fci = sinf(val);
            int rotn = i < kv_dim ? 2 : 1; /* rotate q and k, or only q */
            for (int a = 0; a < rotn; a++) {
                float *vec = a == 0 ? r->q : k;
                float v0 = vec[i], v1 = vec[i + 1];
                vec[i] = v0 * fcr - v1 * fci;
                vec[i + 1] = v0 * fci + v1 * fcr;
            }
        }

        for (int h = 0; h < p->n_heads; h++) {
            const float *q = r->q + (size_t)h * head_size;
            float *att = r->att + (size_t)h * p->seq_len;
            for (int t = 0; t <= pos; t++) {
                const float *kt =
                    r->key_cache + loff + (size_t)t * kv_dim + (size_t)(h / kv_mul) * head_size;
                float score = 0.0f;
                for (int i = 0; i < head_size; i++)
                    score += q[i] * kt[i];
                att[t] = score / sqrtf((float)head_size);
            }
            softmax(att, pos + 1);
            float *xb = r->xb + (size_t)h * head_size;
            memset(xb, 0, (size_t)head_size * sizeof(float));
            for (int t = 0; t <= pos; t++) {
                const float *vt =
                    r->value_cache + loff + (size_t)t * kv_dim + (size_t)(h / kv_mul) * head_size;
                for (int i = 0; i < head_size; i++)
                    xb[i] += att[t] * vt[i];
            }
        }

        matmul_any(r, r->xb2, r->xb, layer_of(w->wo, q8->wo, l, d * d), dim, dim);
        for (int i = 0; i < dim; i++)
            x[i] += r->xb2[i];

        rmsnorm(r->xb, x, w->rms_ffn + (size_t)l * dim, dim);
        matmul_any(r, r->hb, r->xb, layer_of(w->w1, q8->w1, l, d * hid), dim, hidden_dim);
        matmul_any(r, r->hb2, r->xb, layer_of(w->w3, q8->w3, l, d * hid), dim, hidden_dim);
        for (int i = 0; i < hidden_dim; i++) {
            float val = r->hb[i];
            val *= 1.0f / (1.0f + expf(-val));
            r->hb[i] = val * r->hb2[i];
        }
        matmul_any(r, r->xb, r->hb, layer_of(w->w2, q8->w2, l, d * hid), hidden_dim, dim);
        for (int i = 0; i < dim; i++)
            x[i] += r->xb[i];
    }

    rmsnorm(x, x, w->rms_final, dim);
    ref_matrix_t cls = {w->wcls, r->ck->format_version == 2 ? &q8->wcls : NULL};
    matmul_any(r, r->logits, x, cls, dim, p->vocab_size);
    return r->logits;
}
