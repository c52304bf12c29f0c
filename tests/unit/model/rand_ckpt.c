/*
 * rand_ckpt.c - an in-memory ckpt_t over one malloc'd block of floats.
 */
#include "rand_ckpt.h"

#include "base/log.h"

#include <math.h>
#include <stdlib.h>

static float uniform(uint64_t *s, float scale)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    uint32_t bits = (uint32_t)((*s * 0x2545F4914F6CDD1Dull) >> 40); /* 24 bits */
    return ((float)bits / 16777216.0f * 2.0f - 1.0f) * scale;
}

static float *fill(float **next, size_t n, uint64_t *s, float center, float scale)
{
    float *t = *next;
    for (size_t i = 0; i < n; i++)
        t[i] = center + uniform(s, scale);
    *next += n;
    return t;
}

ckpt_t *rand_ckpt_make(int dim, int hidden_dim, int n_layers, int n_heads, int n_kv_heads,
                       int vocab_size, int seq_len, bool shared_classifier, uint64_t seed)
{
    ckpt_t *ck = ls_xcalloc(1, sizeof(*ck));
    ckpt_config_t *c = &ck->cfg;
    c->dim = dim;
    c->hidden_dim = hidden_dim;
    c->n_layers = n_layers;
    c->n_heads = n_heads;
    c->n_kv_heads = n_kv_heads;
    c->vocab_size = vocab_size;
    c->seq_len = seq_len;
    c->shared_classifier = shared_classifier;
    c->head_dim = dim / n_heads;
    c->kv_dim = n_kv_heads * c->head_dim;

    size_t d = (size_t)dim, h = (size_t)hidden_dim, L = (size_t)n_layers;
    size_t kvd = (size_t)c->kv_dim, v = (size_t)vocab_size;
    size_t n = v * d + L * d * 2 + L * d * d * 2 + L * kvd * d * 2 + L * h * d * 3 + d +
               (shared_classifier ? 0 : v * d);
    float *all = ls_xmalloc(n * sizeof(float));
    float *next = all;
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    float emb = 2.0f / sqrtf((float)dim), in_d = 1.0f / sqrtf((float)dim);
    ckpt_weights_t *w = &ck->w;
    w->token_embedding = fill(&next, v * d, &s, 0.0f, emb);
    w->rms_att = fill(&next, L * d, &s, 1.0f, 0.1f);
    w->wq = fill(&next, L * d * d, &s, 0.0f, in_d);
    w->wk = fill(&next, L * kvd * d, &s, 0.0f, in_d);
    w->wv = fill(&next, L * kvd * d, &s, 0.0f, in_d);
    w->wo = fill(&next, L * d * d, &s, 0.0f, in_d);
    w->rms_ffn = fill(&next, L * d, &s, 1.0f, 0.1f);
    w->w1 = fill(&next, L * h * d, &s, 0.0f, in_d);
    w->w2 = fill(&next, L * d * h, &s, 0.0f, 1.0f / sqrtf((float)hidden_dim));
    w->w3 = fill(&next, L * h * d, &s, 0.0f, in_d);
    w->rms_final = fill(&next, d, &s, 1.0f, 0.1f);
    w->wcls = shared_classifier ? w->token_embedding : fill(&next, v * d, &s, 0.0f, emb);
    ck->map = all;
    ck->map_bytes = n * sizeof(float);
    return ck;
}

void rand_ckpt_free(ckpt_t *ck)
{
    if (!ck)
        return;
    free((void *)ck->map);
    free(ck);
}
