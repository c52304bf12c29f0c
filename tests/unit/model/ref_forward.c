/*
 * ref_forward.c - llama2.c run.c's forward pass, one token of one sequence at a time.
 */
#include "ref_forward.h"

#include "base/log.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct ref_forward {
    const ckpt_t *ck;
    float *x, *xb, *xb2, *hb, *hb2, *q, *att, *logits; /* activations of one token */
    float *key_cache;                                  /* [n_layers][seq_len][kv_dim] */
    float *value_cache;                                /* [n_layers][seq_len][kv_dim] */
};

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
    free(r);
}

const float *ref_forward_token(ref_forward_t *r, int token, int pos)
{
    const ckpt_config_t *p = &r->ck->cfg;
    const ckpt_weights_t *w = &r->ck->w;
    int dim = p->dim, kv_dim = p->kv_dim, hidden_dim = p->hidden_dim;
    int head_size = dim / p->n_heads;
    int kv_mul = p->n_heads / p->n_kv_heads;
    float *x = r->x;

    memcpy(x, w->token_embedding + (size_t)token * dim, (size_t)dim * sizeof(float));

    for (int l = 0; l < p->n_layers; l++) {
        rmsnorm(r->xb, x, w->rms_att + (size_t)l * dim, dim);

        size_t loff = (size_t)l * p->seq_len * kv_dim;
        float *k = r->key_cache + loff + (size_t)pos * kv_dim;
        float *v = r->value_cache + loff + (size_t)pos * kv_dim;
        matmul(r->q, r->xb, w->wq + (size_t)l * dim * dim, dim, dim);
        matmul(k, r->xb, w->wk + (size_t)l * dim * kv_dim, dim, kv_dim);
        matmul(v, r->xb, w->wv + (size_t)l * dim * kv_dim, dim, kv_dim);

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

        matmul(r->xb2, r->xb, w->wo + (size_t)l * dim * dim, dim, dim);
        for (int i = 0; i < dim; i++)
            x[i] += r->xb2[i];

        rmsnorm(r->xb, x, w->rms_ffn + (size_t)l * dim, dim);
        matmul(r->hb, r->xb, w->w1 + (size_t)l * dim * hidden_dim, dim, hidden_dim);
        matmul(r->hb2, r->xb, w->w3 + (size_t)l * dim * hidden_dim, dim, hidden_dim);
        for (int i = 0; i < hidden_dim; i++) {
            float val = r->hb[i];
            val *= 1.0f / (1.0f + expf(-val));
            r->hb[i] = val * r->hb2[i];
        }
        matmul(r->xb, r->hb, w->w2 + (size_t)l * dim * hidden_dim, hidden_dim, dim);
        for (int i = 0; i < dim; i++)
            x[i] += r->xb[i];
    }

    rmsnorm(x, x, w->rms_final, dim);
    matmul(r->logits, x, w->wcls, dim, p->vocab_size);
    return r->logits;
}
