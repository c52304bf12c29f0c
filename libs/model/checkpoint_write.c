/*
 * checkpoint_write.c - streams a pseudo-random model to disk in either file format.
 *
 * Each tensor of each layer draws from its own xorshift64* stream seeded from (seed,
 * tensor, layer), so the two formats, which order tensors differently, hold the same
 * values and a tensor's contents never depend on the shape of the ones before it.
 */
#define _GNU_SOURCE
#include "model/checkpoint_write.h"

#include "base/err.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WRITE_CHUNK_FLOATS 16384

typedef enum {
    T_EMBEDDING,
    T_RMS_ATT,
    T_WQ,
    T_WK,
    T_WV,
    T_WO,
    T_RMS_FFN,
    T_W1,
    T_W2,
    T_W3,
    T_RMS_FINAL,
    T_WCLS,
} tensor_kind_t;

typedef struct {
    FILE *f;
    const char *path; /* the final path, for messages */
    const ckpt_config_t *cfg;
    uint64_t seed;
    float buf[WRITE_CHUNK_FLOATS];
    char *err;
    size_t err_len;
} writer_t;

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t xorshift64s(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

static int put(writer_t *w, const void *p, size_t n)
{
    if (fwrite(p, 1, n, w->f) != n) {
        ls_set_err(w->err, w->err_len, "%s: write failed: %s", w->path, strerror(errno));
        return LS_ERR_IO;
    }
    return LS_OK;
}

/* Writes count values of tensor kind for one layer: uniform in center +- half. */
static int put_random(writer_t *w, tensor_kind_t kind, int layer, uint64_t count, float center,
                      float half)
{
    uint64_t s = splitmix64(w->seed ^ splitmix64(((uint64_t)kind << 32) | (uint32_t)layer));
    if (s == 0)
        s = 1;
    while (count > 0) {
        size_t n = count < WRITE_CHUNK_FLOATS ? (size_t)count : WRITE_CHUNK_FLOATS;
        for (size_t i = 0; i < n; i++) {
            /* 24 high bits: exactly representable, in [0, 1) */
            float u = (float)(xorshift64s(&s) >> 40) * (1.0f / 16777216.0f);
            w->buf[i] = center + half * (2.0f * u - 1.0f);
        }
        int rc = put(w, w->buf, n * sizeof(float));
        if (rc != LS_OK)
            return rc;
        count -= n;
    }
    return LS_OK;
}

/* One tensor across all layers ([n_layers][rows][cols] or a single [rows][cols]). */
static int put_tensor(writer_t *w, tensor_kind_t kind)
{
    const ckpt_config_t *c = w->cfg;
    uint64_t dim = (uint64_t)c->dim, hid = (uint64_t)c->hidden_dim, kv = (uint64_t)c->kv_dim;
    float norm_half = 0.1f;
    float emb_half = 2.0f / sqrtf((float)c->dim);
    float in_dim = 1.0f / sqrtf((float)c->dim), in_hid = 1.0f / sqrtf((float)c->hidden_dim);
    switch (kind) {
    case T_EMBEDDING:
        return put_random(w, kind, 0, (uint64_t)c->vocab_size * dim, 0.0f, emb_half);
    case T_WCLS:
        return put_random(w, kind, 0, (uint64_t)c->vocab_size * dim, 0.0f, emb_half);
    case T_RMS_FINAL:
        return put_random(w, kind, 0, dim, 1.0f, norm_half);
    default:
        break;
    }
    for (int l = 0; l < c->n_layers; l++) {
        int rc;
        switch (kind) {
        case T_RMS_ATT:
        case T_RMS_FFN:
            rc = put_random(w, kind, l, dim, 1.0f, norm_half);
            break;
        case T_WQ:
        case T_WO:
            rc = put_random(w, kind, l, dim * dim, 0.0f, in_dim);
            break;
        case T_WK:
        case T_WV:
            rc = put_random(w, kind, l, kv * dim, 0.0f, in_dim);
            break;
        case T_W1:
        case T_W3:
            rc = put_random(w, kind, l, hid * dim, 0.0f, in_dim);
            break;
        case T_W2:
        default:
            rc = put_random(w, kind, l, dim * hid, 0.0f, in_hid);
            break;
        }
        if (rc != LS_OK)
            return rc;
    }
    return LS_OK;
}

/* freq_cis_real and freq_cis_imag as llama2.c's model.py computes them (theta 10000),
 * [seq_len][head_dim / 2] each.  Readers skip them; they are written for fidelity. */
static int put_rope(writer_t *w, bool imag)
{
    const ckpt_config_t *c = w->cfg;
    int half = c->head_dim / 2;
    size_t n = 0;
    for (int pos = 0; pos < c->seq_len; pos++) {
        for (int i = 0; i < half; i++) {
            double freq = 1.0 / pow(10000.0, (2.0 * i) / c->head_dim);
            double a = pos * freq;
            w->buf[n++] = (float)(imag ? sin(a) : cos(a));
            if (n == WRITE_CHUNK_FLOATS) {
                int rc = put(w, w->buf, n * sizeof(float));
                if (rc != LS_OK)
                    return rc;
                n = 0;
            }
        }
    }
    return n ? put(w, w->buf, n * sizeof(float)) : LS_OK;
}

static int put_legacy(writer_t *w)
{
    const ckpt_config_t *c = w->cfg;
    int32_t h[7] = {c->dim,        c->hidden_dim,
                    c->n_layers,   c->n_heads,
                    c->n_kv_heads, c->shared_classifier ? c->vocab_size : -c->vocab_size,
                    c->seq_len};
    int rc = put(w, h, sizeof(h));
    static const tensor_kind_t order[] = {T_EMBEDDING, T_RMS_ATT, T_WQ, T_WK, T_WV,       T_WO,
                                          T_RMS_FFN,   T_W1,      T_W2, T_W3, T_RMS_FINAL};
    for (size_t i = 0; rc == LS_OK && i < sizeof(order) / sizeof(order[0]); i++)
        rc = put_tensor(w, order[i]);
    if (rc == LS_OK)
        rc = put_rope(w, false);
    if (rc == LS_OK)
        rc = put_rope(w, true);
    if (rc == LS_OK && !c->shared_classifier)
        rc = put_tensor(w, T_WCLS);
    return rc;
}

static int put_v1(writer_t *w)
{
    const ckpt_config_t *c = w->cfg;
    unsigned char header[256];
    memset(header, 0, sizeof(header));
    uint32_t magic = 0x616b3432u; /* "ak42" */
    int32_t h[8] = {1,          c->dim,        c->hidden_dim, c->n_layers,
                    c->n_heads, c->n_kv_heads, c->vocab_size, c->seq_len};
    memcpy(header, &magic, 4);
    memcpy(header + 4, h, sizeof(h));
    header[36] = c->shared_classifier ? 1 : 0;
    int rc = put(w, header, sizeof(header));
    static const tensor_kind_t order[] = {
        T_RMS_ATT, T_RMS_FFN, T_RMS_FINAL, T_EMBEDDING, T_WQ, T_WK, T_WV, T_WO, T_W1, T_W2, T_W3};
    for (size_t i = 0; rc == LS_OK && i < sizeof(order) / sizeof(order[0]); i++)
        rc = put_tensor(w, order[i]);
    if (rc == LS_OK && !c->shared_classifier)
        rc = put_tensor(w, T_WCLS);
    return rc;
}

int ckpt_write(const char *path, const ckpt_config_t *cfg, uint64_t seed, ckpt_format_t format,
               char *err, size_t err_len)
{
    ckpt_config_t c = *cfg;
    char why[200];
    if (ckpt_config_check(&c, why, sizeof(why)) != LS_OK) {
        ls_set_err(err, err_len, "%s: bad shape: %s", path, why);
        return LS_ERR_INVALID;
    }
    if (format != CKPT_FORMAT_LEGACY && format != CKPT_FORMAT_V1) {
        ls_set_err(err, err_len, "%s: unknown checkpoint format %d", path, (int)format);
        return LS_ERR_INVALID;
    }
    size_t tmp_len = strlen(path) + 5;
    char *tmp = malloc(tmp_len);
    writer_t *w = malloc(sizeof(*w));
    int rc = LS_ERR_NOMEM;
    if (!tmp || !w) {
        ls_set_err(err, err_len, "%s: out of memory", path);
        goto out_free;
    }
    snprintf(tmp, tmp_len, "%s.tmp", path);
    w->f = fopen(tmp, "wb");
    if (!w->f) {
        ls_set_err(err, err_len, "%s: cannot create: %s", tmp, strerror(errno));
        rc = LS_ERR_IO;
        goto out_free;
    }
    w->path = path;
    w->cfg = &c;
    w->seed = seed;
    w->err = err;
    w->err_len = err_len;
    rc = format == CKPT_FORMAT_V1 ? put_v1(w) : put_legacy(w);
    if (fclose(w->f) != 0 && rc == LS_OK) {
        ls_set_err(err, err_len, "%s: write failed: %s", path, strerror(errno));
        rc = LS_ERR_IO;
    }
    if (rc == LS_OK && rename(tmp, path) != 0) {
        ls_set_err(err, err_len, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        rc = LS_ERR_IO;
    }
    if (rc != LS_OK)
        unlink(tmp);
out_free:
    free(w);
    free(tmp);
    return rc;
}
