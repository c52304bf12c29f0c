/*
 * checkpoint_write.c - streams a pseudo-random model, or the weights of an fp32
 * checkpoint, to disk in any of the file formats.
 *
 * Each tensor of each layer draws from its own stream: for a random model, an
 * xorshift64* generator seeded from (seed, tensor, layer), so the formats, which order
 * tensors differently, hold the same values and a tensor's contents never depend on
 * the shape of the ones before it; for a conversion, the source's values of that
 * tensor and layer in order.  A Q8_0 tensor is its int8 values followed by its scales,
 * so its stream is drawn twice, once for each, rather than held in memory.
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
    const ckpt_t *src; /* a conversion's fp32 source; NULL for a random model */
    int group_size; /* Q8_0 values per scale; 0 writes fp32 matrices */
    float *group;   /* [group_size] one group's fp32 values */
    float buf[WRITE_CHUNK_FLOATS];
    int8_t qbuf[WRITE_CHUNK_FLOATS];
    char *err;
    size_t err_len;
} writer_t;

/* One tensor of one layer: uniform values in center +- half, or the source's values
 * from p on. */
typedef struct {
    uint64_t s;
    float center, half;
    const float *p;
} stream_t;

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

/* The source's values of tensor kind, layer layer. */
static const float *source_of(const ckpt_t *src, tensor_kind_t kind, int layer)
{
    const ckpt_config_t *c = &src->cfg;
    const ckpt_weights_t *sw = &src->w;
    size_t l = (size_t)layer, dim = (size_t)c->dim, hid = (size_t)c->hidden_dim;
    size_t kv = (size_t)c->kv_dim;
    switch (kind) {
    case T_EMBEDDING:
        return sw->token_embedding;
    case T_RMS_ATT:
        return sw->rms_att + l * dim;
    case T_WQ:
        return sw->wq + l * dim * dim;
    case T_WK:
        return sw->wk + l * kv * dim;
    case T_WV:
        return sw->wv + l * kv * dim;
    case T_WO:
        return sw->wo + l * dim * dim;
    case T_RMS_FFN:
        return sw->rms_ffn + l * dim;
    case T_W1:
        return sw->w1 + l * hid * dim;
    case T_W2:
        return sw->w2 + l * dim * hid;
    case T_W3:
        return sw->w3 + l * hid * dim;
    case T_RMS_FINAL:
        return sw->rms_final;
    case T_WCLS:
    default:
        return sw->wcls;
    }
}

static stream_t stream_of(const writer_t *w, tensor_kind_t kind, int layer, float center,
                          float half)
{
    stream_t st = {splitmix64(w->seed ^ splitmix64(((uint64_t)kind << 32) | (uint32_t)layer)),
                   center, half, w->src ? source_of(w->src, kind, layer) : NULL};
    if (st.s == 0)
        st.s = 1;
    return st;
}

static float stream_next(stream_t *st)
{
    if (st->p)
        return *st->p++;
    /* 24 high bits: exactly representable, in [0, 1) */
    float u = (float)(xorshift64s(&st->s) >> 40) * (1.0f / 16777216.0f);
    return st->center + st->half * (2.0f * u - 1.0f);
}

/* Writes count values of tensor kind for one layer: uniform in center +- half. */
static int put_random(writer_t *w, tensor_kind_t kind, int layer, uint64_t count, float center,
                      float half)
{
    stream_t st = stream_of(w, kind, layer, center, half);
    while (count > 0) {
        size_t n = count < WRITE_CHUNK_FLOATS ? (size_t)count : WRITE_CHUNK_FLOATS;
        for (size_t i = 0; i < n; i++)
            w->buf[i] = stream_next(&st);
        int rc = put(w, w->buf, n * sizeof(float));
        if (rc != LS_OK)
            return rc;
        count -= n;
    }
    return LS_OK;
}

/* Draws the next group_size values into w->group and returns their scale,
 * max|v| / 127 as export.py's quantize_q80 computes it. */
static float draw_group(writer_t *w, stream_t *st)
{
    float wmax = 0.0f;
    for (int i = 0; i < w->group_size; i++) {
        w->group[i] = stream_next(st);
        float a = fabsf(w->group[i]);
        if (a > wmax)
            wmax = a;
    }
    return wmax / 127.0f;
}

static int8_t quantize_one(float v, float scale)
{
    if (scale == 0.0f) /* an all-zero group: every value is 0 */
        return 0;
    /* roundf rounds halves away from zero (runq.c's round) where torch.round rounds them
     * to even; an exact half almost never occurs and either is within scale / 2 */
    float q = roundf(v / scale);
    return (int8_t)(q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q);
}

/* Writes count values of tensor kind for one layer as Q8_0: the int8 values, then
 * one fp32 scale per group. */
static int put_q8(writer_t *w, tensor_kind_t kind, int layer, uint64_t count, float center,
                  float half)
{
    uint64_t groups = count / (uint64_t)w->group_size;
    stream_t st = stream_of(w, kind, layer, center, half);
    size_t n = 0;
    int rc;
    for (uint64_t g = 0; g < groups; g++) {
        float scale = draw_group(w, &st);
        for (int i = 0; i < w->group_size; i++) {
            w->qbuf[n++] = quantize_one(w->group[i], scale);
            if (n == WRITE_CHUNK_FLOATS) {
                if ((rc = put(w, w->qbuf, n)) != LS_OK)
                    return rc;
                n = 0;
            }
        }
    }
    if (n && (rc = put(w, w->qbuf, n)) != LS_OK)
        return rc;
    st = stream_of(w, kind, layer, center, half); /* again, for the scales */
    n = 0;
    for (uint64_t g = 0; g < groups; g++) {
        w->buf[n++] = draw_group(w, &st);
        if (n == WRITE_CHUNK_FLOATS) {
            if ((rc = put(w, w->buf, n * sizeof(float))) != LS_OK)
                return rc;
            n = 0;
        }
    }
    return n ? put(w, w->buf, n * sizeof(float)) : LS_OK;
}

/* A matrix (or the embedding or classifier) of one layer, fp32 or Q8_0 by the format. */
static int put_matrix(writer_t *w, tensor_kind_t kind, int layer, uint64_t count, float center,
                      float half)
{
    return w->group_size ? put_q8(w, kind, layer, count, center, half)
                         : put_random(w, kind, layer, count, center, half);
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
        return put_matrix(w, kind, 0, (uint64_t)c->vocab_size * dim, 0.0f, emb_half);
    case T_WCLS:
        return put_matrix(w, kind, 0, (uint64_t)c->vocab_size * dim, 0.0f, emb_half);
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
            rc = put_matrix(w, kind, l, dim * dim, 0.0f, in_dim);
            break;
        case T_WK:
        case T_WV:
            rc = put_matrix(w, kind, l, kv * dim, 0.0f, in_dim);
            break;
        case T_W1:
        case T_W3:
            rc = put_matrix(w, kind, l, hid * dim, 0.0f, in_dim);
            break;
        case T_W2:
        default:
            rc = put_matrix(w, kind, l, dim * hid, 0.0f, in_hid);
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

/* Versions 1 and 2 share the header (version 2 adds the group size) and the order. */
static int put_ak42(writer_t *w, int32_t version)
{
    const ckpt_config_t *c = w->cfg;
    unsigned char header[256];
    memset(header, 0, sizeof(header));
    uint32_t magic = 0x616b3432u; /* "ak42" */
    int32_t h[8] = {version,    c->dim,        c->hidden_dim, c->n_layers,
                    c->n_heads, c->n_kv_heads, c->vocab_size, c->seq_len};
    memcpy(header, &magic, 4);
    memcpy(header + 4, h, sizeof(h));
    header[36] = c->shared_classifier ? 1 : 0;
    if (version == 2) {
        int32_t gs = w->group_size;
        memcpy(header + 37, &gs, sizeof(gs)); /* packed after the flag byte, as export.py */
    }
    int rc = put(w, header, sizeof(header));
    static const tensor_kind_t order[] = {
        T_RMS_ATT, T_RMS_FFN, T_RMS_FINAL, T_EMBEDDING, T_WQ, T_WK, T_WV, T_WO, T_W1, T_W2, T_W3};
    for (size_t i = 0; rc == LS_OK && i < sizeof(order) / sizeof(order[0]); i++)
        rc = put_tensor(w, order[i]);
    if (rc == LS_OK && !c->shared_classifier)
        rc = put_tensor(w, T_WCLS);
    return rc;
}

/* Writes shape cfg in format to path: the seed's random values, or src's. */
static int write_file(const char *path, const ckpt_config_t *cfg, uint64_t seed,
                      const ckpt_t *src, ckpt_format_t format, char *err, size_t err_len)
{
    if (format != CKPT_FORMAT_LEGACY && format != CKPT_FORMAT_V1 && format != CKPT_FORMAT_Q8_0) {
        ls_set_err(err, err_len, "%s: unknown checkpoint format %d", path, (int)format);
        return LS_ERR_INVALID;
    }
    ckpt_config_t c = *cfg;
    if (format != CKPT_FORMAT_Q8_0)
        c.group_size = 0;
    else if (c.group_size == 0)
        c.group_size = CKPT_Q8_DEFAULT_GROUP;
    char why[200];
    if (ckpt_config_check(&c, why, sizeof(why)) != LS_OK) {
        ls_set_err(err, err_len, "%s: bad shape: %s", path, why);
        return LS_ERR_INVALID;
    }
    size_t tmp_len = strlen(path) + 5;
    char *tmp = malloc(tmp_len);
    writer_t *w = calloc(1, sizeof(*w));
    int rc = LS_ERR_NOMEM;
    if (!tmp || !w) {
        ls_set_err(err, err_len, "%s: out of memory", path);
        goto out_free;
    }
    w->group_size = c.group_size;
    if (w->group_size) {
        w->group = malloc((size_t)w->group_size * sizeof(float));
        if (!w->group) {
            ls_set_err(err, err_len, "%s: out of memory for a group of %d values", path,
                       w->group_size);
            goto out_free;
        }
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
    w->src = src;
    w->err = err;
    w->err_len = err_len;
    rc = format == CKPT_FORMAT_LEGACY ? put_legacy(w)
                                      : put_ak42(w, format == CKPT_FORMAT_V1 ? 1 : 2);
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
    if (w)
        free(w->group);
    free(w);
    free(tmp);
    return rc;
}

int ckpt_write(const char *path, const ckpt_config_t *cfg, uint64_t seed, ckpt_format_t format,
               char *err, size_t err_len)
{
    return write_file(path, cfg, seed, NULL, format, err, err_len);
}

int ckpt_convert(const char *path, const ckpt_t *src, ckpt_format_t format, int group_size,
                 char *err, size_t err_len)
{
    if (src->format_version == 2) {
        ls_set_err(err, err_len,
                   "%s: is int8 (Q8_0) already; conversion reads fp32 checkpoints (legacy or "
                   "ak42 version 1)",
                   src->path ? src->path : "source");
        return LS_ERR_INVALID;
    }
    if (src->path && strcmp(src->path, path) == 0) {
        ls_set_err(err, err_len, "%s: the output would replace the checkpoint it is read from",
                   path);
        return LS_ERR_INVALID;
    }
    ckpt_config_t c = src->cfg;
    c.group_size = group_size;
    return write_file(path, &c, 0, src, format, err, err_len);
}
