/*
 * checkpoint.c - maps llama2.c checkpoints (legacy, "ak42" version 1 fp32 and version 2
 * Q8_0) read-only.
 *
 * Every size is computed in uint64_t with overflow checks before any pointer is formed,
 * and the file must be exactly as long as its header says: a legacy file has no
 * magic, so an exact length is the only guard against a mis-identified or truncated
 * file.  Published files (stories15M.bin: 28 + 15204000 * 4 bytes) match exactly.
 */
#define _GNU_SOURCE
#include "model/checkpoint.h"

#include "base/err.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(sizeof(float) == 4, "checkpoints hold IEEE fp32");
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoints are little-endian and are mapped without conversion"
#endif

#define CKPT_MAGIC 0x616b3432u   /* "ak42" */
#define CKPT_V1_HEADER_BYTES 256 /* export.py pads the version-1 header to 256 bytes */
#define CKPT_LEGACY_HEADER_BYTES 28
#define CKPT_SHARED_OFFSET 36     /* the shared-classifier byte in the ak42 header */
#define CKPT_GROUP_SIZE_OFFSET 37 /* version 2: int32 group_size, packed right after it */
#define CKPT_MAX_BYTES ((uint64_t)INT64_MAX)

/* a * b and a + b in 63 bits; false on overflow. */
static bool mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r) || r > CKPT_MAX_BYTES)
        return false;
    *out = r;
    return true;
}

static bool add_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r) || r > CKPT_MAX_BYTES)
        return false;
    *out = r;
    return true;
}

/* The float counts of each tensor of a checked shape (all fit in 63 bits once
 * ckpt_config_check has passed). */
typedef struct {
    uint64_t embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, rope, wcls;
    /* rope: both legacy RoPE tables */
} ckpt_sizes_t;

static bool sizes_of(const ckpt_config_t *c, ckpt_sizes_t *s)
{
    uint64_t L = (uint64_t)c->n_layers, dim = (uint64_t)c->dim, hid = (uint64_t)c->hidden_dim;
    uint64_t kv = (uint64_t)c->n_kv_heads * (uint64_t)(c->dim / c->n_heads);
    uint64_t t;
    memset(s, 0, sizeof(*s));
    if (!mul_ok((uint64_t)c->vocab_size, dim, &s->embedding))
        return false;
    if (!mul_ok(L, dim, &s->rms_att))
        return false;
    s->rms_ffn = s->rms_att;
    if (!mul_ok(dim, dim, &t) || !mul_ok(L, t, &s->wq))
        return false;
    s->wo = s->wq;
    if (!mul_ok(kv, dim, &t) || !mul_ok(L, t, &s->wk))
        return false;
    s->wv = s->wk;
    if (!mul_ok(hid, dim, &t) || !mul_ok(L, t, &s->w1))
        return false;
    s->w2 = s->w3 = s->w1;
    s->rms_final = dim;
    /* freq_cis_real and freq_cis_imag together: seq_len * head_dim / 2 floats each */
    if (!mul_ok((uint64_t)c->seq_len, (uint64_t)(c->dim / c->n_heads), &s->rope))
        return false;
    s->wcls = c->shared_classifier ? 0 : s->embedding;
    return true;
}

/* Sum of the tensors a file holds, with or without the RoPE tables; false on overflow. */
static bool total_floats(const ckpt_sizes_t *s, bool with_rope, uint64_t *out)
{
    const uint64_t parts[] = {s->embedding, s->rms_att, s->wq,        s->wk,
                              s->wv,        s->wo,      s->rms_ffn,   s->w1,
                              s->w2,        s->w3,      s->rms_final, with_rope ? s->rope : 0,
                              s->wcls};
    uint64_t sum = 0;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        if (!add_ok(sum, parts[i], &sum))
            return false;
    /* bytes must fit too */
    uint64_t bytes;
    if (!mul_ok(sum, sizeof(float), &bytes) || !add_ok(bytes, CKPT_V1_HEADER_BYTES, &bytes))
        return false;
    *out = sum;
    return true;
}

/* Bytes of one Q8_0 tensor of count values: the int8 values, then count / gs scales. */
static bool q8_tensor_bytes(uint64_t count, uint64_t gs, uint64_t *out)
{
    uint64_t scales;
    return mul_ok(count / gs, sizeof(float), &scales) && add_ok(count, scales, out);
}

/* Bytes of a version-2 file, header included; false on overflow.  Matrices are
 * quantized one layer at a time, so each layer's tensor is counted on its own. */
static bool q8_total_bytes(const ckpt_config_t *c, const ckpt_sizes_t *s, uint64_t *out)
{
    uint64_t gs = (uint64_t)c->group_size, L = (uint64_t)c->n_layers;
    uint64_t total = CKPT_V1_HEADER_BYTES, t;
    if (!mul_ok(s->rms_att + s->rms_ffn + s->rms_final, sizeof(float), &t) ||
        !add_ok(total, t, &total))
        return false;
    const uint64_t whole[] = {s->embedding, s->wcls};
    for (size_t i = 0; i < sizeof(whole) / sizeof(whole[0]); i++)
        if (whole[i] && (!q8_tensor_bytes(whole[i], gs, &t) || !add_ok(total, t, &total)))
            return false;
    const uint64_t layered[] = {s->wq, s->wk, s->wv, s->wo, s->w1, s->w2, s->w3};
    for (size_t i = 0; i < sizeof(layered) / sizeof(layered[0]); i++)
        if (!q8_tensor_bytes(layered[i] / L, gs, &t) || !mul_ok(t, L, &t) ||
            !add_ok(total, t, &total))
            return false;
    *out = total;
    return true;
}

/* The Q8_0 rules of ckpt_config_check, for a shape that passed the others. */
static int group_size_check(const ckpt_config_t *cfg, const ckpt_sizes_t *s, char *err,
                            size_t err_len)
{
    int gs = cfg->group_size;
    if (gs < 0) {
        ls_set_err(err, err_len, "group_size is %d, must be positive", gs);
        return LS_ERR_INVALID;
    }
    if (cfg->dim % gs != 0) {
        ls_set_err(err, err_len, "group_size %d does not divide dim %d", gs, cfg->dim);
        return LS_ERR_INVALID;
    }
    if (cfg->hidden_dim % gs != 0) {
        ls_set_err(err, err_len, "group_size %d does not divide hidden_dim %d", gs,
                   cfg->hidden_dim);
        return LS_ERR_INVALID;
    }
    /* dim and kv_dim are even (even head_dim), so only these two products can be 2 mod 4 */
    if (((uint64_t)cfg->hidden_dim * (uint64_t)cfg->dim) % 4 != 0 ||
        ((uint64_t)cfg->vocab_size * (uint64_t)cfg->dim) % 4 != 0) {
        ls_set_err(err, err_len,
                   "hidden_dim %d * dim %d or vocab_size %d * dim %d is not a multiple of 4; "
                   "the fp32 scales after those int8 tensors would be misaligned",
                   cfg->hidden_dim, cfg->dim, cfg->vocab_size, cfg->dim);
        return LS_ERR_INVALID;
    }
    uint64_t total;
    if (!q8_total_bytes(cfg, s, &total)) {
        ls_set_err(err, err_len,
                   "shape dim=%d hidden_dim=%d n_layers=%d vocab_size=%d "
                   "group_size=%d is too large",
                   cfg->dim, cfg->hidden_dim, cfg->n_layers, cfg->vocab_size, gs);
        return LS_ERR_INVALID;
    }
    return LS_OK;
}

int ckpt_config_check(ckpt_config_t *cfg, char *err, size_t err_len)
{
    const struct {
        const char *name;
        int v;
    } dims[] = {
        {"dim", cfg->dim},         {"hidden_dim", cfg->hidden_dim}, {"n_layers", cfg->n_layers},
        {"n_heads", cfg->n_heads}, {"n_kv_heads", cfg->n_kv_heads}, {"vocab_size", cfg->vocab_size},
        {"seq_len", cfg->seq_len},
    };
    for (size_t i = 0; i < sizeof(dims) / sizeof(dims[0]); i++) {
        if (dims[i].v <= 0) {
            ls_set_err(err, err_len, "%s is %d, must be positive", dims[i].name, dims[i].v);
            return LS_ERR_INVALID;
        }
    }
    if (cfg->dim % cfg->n_heads != 0) {
        ls_set_err(err, err_len, "dim %d is not a multiple of n_heads %d", cfg->dim, cfg->n_heads);
        return LS_ERR_INVALID;
    }
    if (cfg->n_kv_heads > cfg->n_heads || cfg->n_heads % cfg->n_kv_heads != 0) {
        ls_set_err(err, err_len, "n_heads %d is not a multiple of n_kv_heads %d", cfg->n_heads,
                cfg->n_kv_heads);
        return LS_ERR_INVALID;
    }
    int head_dim = cfg->dim / cfg->n_heads;
    if (head_dim % 2 != 0) {
        ls_set_err(err, err_len, "head_dim %d (dim %d / n_heads %d) is odd; RoPE needs pairs",
                head_dim, cfg->dim, cfg->n_heads);
        return LS_ERR_INVALID;
    }
    ckpt_sizes_t s;
    uint64_t total;
    if (!sizes_of(cfg, &s) || !total_floats(&s, true, &total)) {
        ls_set_err(err, err_len,
                "shape dim=%d hidden_dim=%d n_layers=%d vocab_size=%d seq_len=%d is "
                "too large",
                cfg->dim, cfg->hidden_dim, cfg->n_layers, cfg->vocab_size, cfg->seq_len);
        return LS_ERR_INVALID;
    }
    if (cfg->group_size != 0 && group_size_check(cfg, &s, err, err_len) != LS_OK)
        return LS_ERR_INVALID;
    cfg->head_dim = head_dim;
    cfg->kv_dim = cfg->n_kv_heads * head_dim;
    return LS_OK;
}

uint64_t ckpt_float_count(const ckpt_config_t *cfg)
{
    ckpt_sizes_t s;
    uint64_t total;
    if (!sizes_of(cfg, &s) || !total_floats(&s, true, &total))
        return 0;
    return total;
}

uint64_t ckpt_q8_file_bytes(const ckpt_config_t *cfg)
{
    ckpt_config_t c = *cfg;
    ckpt_sizes_t s;
    uint64_t total;
    if (c.group_size <= 0 || ckpt_config_check(&c, NULL, 0) != LS_OK || !sizes_of(&c, &s) ||
        !q8_total_bytes(&c, &s, &total))
        return 0;
    return total;
}

/* Points the weights into the mapping for the legacy layout; sizes already checked. */
static void place_legacy(ckpt_t *ck, const ckpt_sizes_t *s, const float *p)
{
    ckpt_weights_t *w = &ck->w;
    w->token_embedding = p;
    p += s->embedding;
    w->rms_att = p;
    p += s->rms_att;
    w->wq = p;
    p += s->wq;
    w->wk = p;
    p += s->wk;
    w->wv = p;
    p += s->wv;
    w->wo = p;
    p += s->wo;
    w->rms_ffn = p;
    p += s->rms_ffn;
    w->w1 = p;
    p += s->w1;
    w->w2 = p;
    p += s->w2;
    w->w3 = p;
    p += s->w3;
    w->rms_final = p;
    p += s->rms_final;
    p += s->rope; /* freq_cis_real, freq_cis_imag: RoPE is computed, not read */
    w->wcls = ck->cfg.shared_classifier ? w->token_embedding : p;
}

/* export.py version1_export order: every norm, the embedding, then each matrix kind
 * across all layers, then the classifier when unshared. */
static void place_v1(ckpt_t *ck, const ckpt_sizes_t *s, const float *p)
{
    ckpt_weights_t *w = &ck->w;
    w->rms_att = p;
    p += s->rms_att;
    w->rms_ffn = p;
    p += s->rms_ffn;
    w->rms_final = p;
    p += s->rms_final;
    w->token_embedding = p;
    p += s->embedding;
    w->wq = p;
    p += s->wq;
    w->wk = p;
    p += s->wk;
    w->wv = p;
    p += s->wv;
    w->wo = p;
    p += s->wo;
    w->w1 = p;
    p += s->w1;
    w->w2 = p;
    p += s->w2;
    w->w3 = p;
    p += s->w3;
    w->wcls = ck->cfg.shared_classifier ? w->token_embedding : p;
}

/* Points one Q8_0 tensor of count values at p and returns the byte after its scales. */
static const unsigned char *place_q8_tensor(ckpt_q8_t *t, const unsigned char *p, uint64_t count,
                                            uint64_t gs)
{
    t->q = (const int8_t *)p;
    p += count;
    t->s = (const float *)p; /* aligned: ckpt_config_check made count a multiple of 4 */
    return p + count / gs * sizeof(float);
}

/* export.py version2_export order: the fp32 norms, then the embedding, each matrix kind
 * layer by layer, and the classifier when unshared, each tensor as values then scales.
 * Allocates the per-layer arrays; returns false when out of memory. */
static bool place_q8(ckpt_t *ck, const ckpt_sizes_t *s, const unsigned char *p)
{
    const ckpt_config_t *c = &ck->cfg;
    size_t L = (size_t)c->n_layers;
    uint64_t gs = (uint64_t)c->group_size;
    ckpt_q8_t *arrays = calloc(7 * L, sizeof(ckpt_q8_t));
    if (!arrays)
        return false;
    ckpt_weights_t *w = &ck->w;
    const float *f = (const float *)p;
    w->rms_att = f;
    f += s->rms_att;
    w->rms_ffn = f;
    f += s->rms_ffn;
    w->rms_final = f;
    f += s->rms_final;
    p = (const unsigned char *)f;
    ckpt_q8_weights_t *q = &ck->q8;
    p = place_q8_tensor(&q->token_embedding, p, s->embedding, gs);
    ckpt_q8_t **kinds[] = {&q->wq, &q->wk, &q->wv, &q->wo, &q->w1, &q->w2, &q->w3};
    const uint64_t counts[] = {s->wq, s->wk, s->wv, s->wo, s->w1, s->w2, s->w3};
    for (size_t k = 0; k < 7; k++) {
        *kinds[k] = arrays + k * L;
        for (size_t l = 0; l < L; l++)
            p = place_q8_tensor(&(*kinds[k])[l], p, counts[k] / L, gs);
    }
    if (c->shared_classifier)
        q->wcls = q->token_embedding;
    else
        place_q8_tensor(&q->wcls, p, s->wcls, gs);
    return true;
}

/* Every scale must be finite: a NaN or infinity would silently poison every logit. */
static int check_q8_scales(const ckpt_t *ck, const ckpt_sizes_t *s, char *err, size_t err_len)
{
    const ckpt_q8_weights_t *q = &ck->q8;
    uint64_t gs = (uint64_t)ck->cfg.group_size;
    int L = ck->cfg.n_layers;
    const struct {
        const char *name;
        const ckpt_q8_t *t; /* [layers] */
        int layers;
        uint64_t count; /* values per layer */
    } tensors[] = {
        {"token_embedding", &q->token_embedding, 1, s->embedding},
        {"wq", q->wq, L, s->wq / (uint64_t)L},
        {"wk", q->wk, L, s->wk / (uint64_t)L},
        {"wv", q->wv, L, s->wv / (uint64_t)L},
        {"wo", q->wo, L, s->wo / (uint64_t)L},
        {"w1", q->w1, L, s->w1 / (uint64_t)L},
        {"w2", q->w2, L, s->w2 / (uint64_t)L},
        {"w3", q->w3, L, s->w3 / (uint64_t)L},
        {"wcls", &q->wcls, ck->cfg.shared_classifier ? 0 : 1, s->wcls},
    };
    for (size_t i = 0; i < sizeof(tensors) / sizeof(tensors[0]); i++) {
        for (int l = 0; l < tensors[i].layers; l++) {
            const float *sc = tensors[i].t[l].s;
            for (uint64_t g = 0; g < tensors[i].count / gs; g++) {
                if (!isfinite(sc[g])) {
                    ls_set_err(
                        err, err_len,
                        "%s: %s layer %d scale %llu (byte %zu) is %g; Q8_0 scales "
                        "must be finite",
                        ck->path, tensors[i].name, l, (unsigned long long)g,
                        (size_t)((const unsigned char *)&sc[g] - (const unsigned char *)ck->map),
                        (double)sc[g]);
                    return LS_ERR_FORMAT;
                }
            }
        }
    }
    return LS_OK;
}

static const char *format_name(int version)
{
    switch (version) {
    case 0:
        return "legacy";
    case 1:
        return "ak42 v1";
    default:
        return "ak42 v2 (Q8_0)";
    }
}

static char *base_name_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = (dot && dot != base) ? (size_t)(dot - base) : strlen(base);
    char *name = malloc(n + 1);
    if (!name)
        return NULL;
    memcpy(name, base, n);
    name[n] = '\0';
    return name;
}

/* Reads the header from the mapping into ck->cfg and returns the offset of the first
 * tensor and whether the RoPE tables are present, or a negative error. */
static int parse_header(ckpt_t *ck, const unsigned char *m, size_t n, size_t *data_off,
                        bool *has_rope, char *err, size_t err_len)
{
    int32_t h[9];
    uint32_t magic;
    if (n < sizeof(magic)) {
        ls_set_err(err, err_len, "%s: file is %zu bytes, too short for a checkpoint header", ck->path,
                n);
        return LS_ERR_FORMAT;
    }
    memcpy(&magic, m, sizeof(magic));
    ckpt_config_t *c = &ck->cfg;
    if (magic == CKPT_MAGIC) {
        if (n < CKPT_V1_HEADER_BYTES) {
            ls_set_err(err, err_len, "%s: truncated: %zu bytes, the ak42 header alone is %d", ck->path,
                    n, CKPT_V1_HEADER_BYTES);
            return LS_ERR_FORMAT;
        }
        memcpy(h, m + 4, 8 * sizeof(int32_t)); /* version + 7 params */
        int version = h[0];
        if (version != 1 && version != 2) {
            ls_set_err(err, err_len, "%s: unsupported ak42 version %d (1: fp32, 2: Q8_0 int8)",
                       ck->path, version);
            return LS_ERR_FORMAT;
        }
        c->dim = h[1];
        c->hidden_dim = h[2];
        c->n_layers = h[3];
        c->n_heads = h[4];
        c->n_kv_heads = h[5];
        c->vocab_size = h[6];
        c->seq_len = h[7];
        unsigned char shared = m[CKPT_SHARED_OFFSET];
        if (shared > 1) {
            ls_set_err(err, err_len, "%s: shared_classifier flag is %u, must be 0 or 1", ck->path,
                    shared);
            return LS_ERR_FORMAT;
        }
        c->shared_classifier = shared == 1;
        if (version == 2) {
            /* export.py packs the int32 right after the flag byte, unaligned */
            int32_t gs;
            memcpy(&gs, m + CKPT_GROUP_SIZE_OFFSET, sizeof(gs));
            if (gs <= 0) {
                ls_set_err(err, err_len, "%s: group_size is %d, must be positive", ck->path,
                           (int)gs);
                return LS_ERR_FORMAT;
            }
            c->group_size = gs;
        }
        ck->format_version = version;
        *data_off = CKPT_V1_HEADER_BYTES;
        *has_rope = false;
        return LS_OK;
    }
    if (n < CKPT_LEGACY_HEADER_BYTES) {
        ls_set_err(err, err_len, "%s: file is %zu bytes, too short for a checkpoint header", ck->path,
                n);
        return LS_ERR_FORMAT;
    }
    memcpy(h, m, 7 * sizeof(int32_t));
    c->dim = h[0];
    c->hidden_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    c->shared_classifier = h[5] > 0;
    /* INT32_MIN has no positive counterpart; leave it negative so the check rejects it */
    c->vocab_size = h[5] > 0 ? h[5] : (h[5] == INT32_MIN ? h[5] : -h[5]);
    c->seq_len = h[6];
    ck->format_version = 0;
    *data_off = CKPT_LEGACY_HEADER_BYTES;
    *has_rope = true;
    return LS_OK;
}

ckpt_t *ckpt_open(const char *path, char *err, size_t err_len)
{
    if (!path) {
        ls_set_err(err, err_len, "no checkpoint path given");
        return NULL;
    }
    ckpt_t *ck = calloc(1, sizeof(*ck));
    if (!ck) {
        ls_set_err(err, err_len, "%s: out of memory", path);
        return NULL;
    }
    ck->path = strdup(path);
    ck->name = base_name_of(path);
    if (!ck->path || !ck->name) {
        ls_set_err(err, err_len, "%s: out of memory", path);
        goto out_free;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ls_set_err(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        goto out_free;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        ls_set_err(err, err_len, "%s: cannot stat: %s", path, strerror(errno));
        goto out_close_fd;
    }
    if (!S_ISREG(st.st_mode)) {
        ls_set_err(err, err_len, "%s: not a regular file", path);
        goto out_close_fd;
    }
    if (st.st_size == 0) {
        ls_set_err(err, err_len, "%s: file is empty", path);
        goto out_close_fd;
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        ls_set_err(err, err_len, "%s: file of %lld bytes does not fit the address space", path,
                (long long)st.st_size);
        goto out_close_fd;
    }
    size_t n = (size_t)st.st_size;
    void *m = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        ls_set_err(err, err_len, "%s: mmap of %zu bytes failed: %s", path, n, strerror(errno));
        goto out_close_fd;
    }
    close(fd); /* the mapping keeps the file */
    fd = -1;
    ck->map = m;
    ck->map_bytes = n;

    size_t data_off;
    bool has_rope;
    if (parse_header(ck, m, n, &data_off, &has_rope, err, err_len) != LS_OK)
        goto out_unmap;
    char why[200];
    if (ckpt_config_check(&ck->cfg, why, sizeof(why)) != LS_OK) {
        ls_set_err(err, err_len, "%s: bad shape: %s", path, why);
        goto out_unmap;
    }
    ckpt_sizes_t s;
    uint64_t floats, want;
    bool q8 = ck->format_version == 2;
    /* cannot fail after ckpt_config_check, which checked these totals */
    if (!sizes_of(&ck->cfg, &s) ||
        (q8 ? !q8_total_bytes(&ck->cfg, &s, &want)
            : (!total_floats(&s, has_rope, &floats) || !mul_ok(floats, sizeof(float), &want) ||
               !add_ok(want, data_off, &want)))) {
        ls_set_err(err, err_len, "%s: bad shape: sizes overflow", path);
        goto out_unmap;
    }
    if ((uint64_t)n != want) {
        char gs[32] = "";
        if (q8)
            snprintf(gs, sizeof(gs), " group_size=%d", ck->cfg.group_size);
        ls_set_err(err, err_len,
                   "%s: %s: file is %zu bytes but a %s checkpoint of dim=%d hidden_dim=%d "
                   "n_layers=%d n_heads=%d n_kv_heads=%d vocab_size=%d seq_len=%d%s %s classifier "
                   "is %llu bytes",
                   path, (uint64_t)n < want ? "truncated" : "oversized", n,
                   format_name(ck->format_version), ck->cfg.dim, ck->cfg.hidden_dim,
                   ck->cfg.n_layers, ck->cfg.n_heads, ck->cfg.n_kv_heads, ck->cfg.vocab_size,
                   ck->cfg.seq_len, gs, ck->cfg.shared_classifier ? "shared" : "separate",
                   (unsigned long long)want);
        goto out_unmap;
    }
    const unsigned char *data = (const unsigned char *)m + data_off;
    if (q8) {
        if (!place_q8(ck, &s, data)) {
            ls_set_err(err, err_len, "%s: out of memory", path);
            goto out_unmap;
        }
        if (check_q8_scales(ck, &s, err, err_len) != LS_OK)
            goto out_free_q8;
    } else if (ck->format_version == 1) {
        place_v1(ck, &s, (const float *)data);
    } else {
        place_legacy(ck, &s, (const float *)data);
    }
    return ck;

out_close_fd:
    if (fd >= 0)
        close(fd);
    goto out_free;
out_free_q8:
    free(ck->q8.wq);
out_unmap:
    munmap((void *)ck->map, ck->map_bytes);
out_free:
    free(ck->name);
    free(ck->path);
    free(ck);
    return NULL;
}

void ckpt_close(ckpt_t *ck)
{
    if (!ck)
        return;
    if (ck->map)
        munmap((void *)ck->map, ck->map_bytes);
    free(ck->q8.wq); /* the one allocation behind every per-layer array */
    free(ck->name);
    free(ck->path);
    free(ck);
}
