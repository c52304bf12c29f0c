/*
 * test_checkpoint.c - ckpt_open, ckpt_config_check and ckpt_write (libs/model/checkpoint.c,
 * libs/model/checkpoint_write.c).
 *
 * Layout checks compute tensor offsets here, from the file formats, rather than trusting
 * the reader's own arithmetic.  The model maker is run for its --quantize flags
 * (LLMSERVE_MODELMAKER names the binary).
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "model/checkpoint.h"
#include "model/checkpoint_write.h"
#include "model/forward.h"
#include "support/proc.h"
#include "support/tmpdir.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Asserts only on failure: ctest runs criterion with --full-stats, which reports every
 * passing assertion, and the loops over weights make tens of thousands of checks. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            cr_assert(cond, __VA_ARGS__);                                                          \
    } while (0)

static test_tmpdir_t dir;

static void make_dir(void)
{
    cr_assert_eq(test_tmpdir_make(&dir, "llmserve-ckpt"), 0);
}

static void remove_dir(void)
{
    test_tmpdir_remove(&dir);
}

TestSuite(checkpoint, .init = make_dir, .fini = remove_dir);

static const char *path_of(const char *name)
{
    static char p[4][256];
    static int next;
    return test_tmpdir_file(&dir, name, p[next++ % 4], sizeof(p[0]));
}

static ckpt_config_t tiny(bool shared)
{
    ckpt_config_t c = {.dim = 64,
                       .hidden_dim = 172,
                       .n_layers = 2,
                       .n_heads = 4,
                       .n_kv_heads = 2,
                       .vocab_size = 300,
                       .seq_len = 32,
                       .shared_classifier = shared};
    return c;
}

static void write_ok(const char *path, ckpt_config_t c, uint64_t seed, ckpt_format_t f)
{
    char err[256] = "";
    int rc = ckpt_write(path, &c, seed, f, err, sizeof(err));
    cr_assert_eq(rc, LS_OK, "ckpt_write: %s", err);
}

static ckpt_t *open_ok(const char *path)
{
    char err[512] = "";
    ckpt_t *ck = ckpt_open(path, err, sizeof(err));
    cr_assert_not_null(ck, "ckpt_open(%s): %s", path, err);
    return ck;
}

/* Opens path expecting failure; the message must name the file and contain what. */
static void open_fails(const char *path, const char *what)
{
    char err[512] = "";
    ckpt_t *ck = ckpt_open(path, err, sizeof(err));
    cr_assert_null(ck, "%s opened but should fail with \"%s\"", path, what);
    cr_assert(strstr(err, path) != NULL, "error \"%s\" does not name %s", err, path);
    cr_assert(strstr(err, what) != NULL, "error \"%s\" lacks \"%s\"", err, what);
}

static long file_size(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    return (long)st.st_size;
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n + 1);
    cr_assert_eq(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static void spit(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    if (n)
        cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

static size_t off_of(const ckpt_t *ck, const float *p)
{
    return (size_t)((const char *)p - (const char *)ck->map);
}

Test(checkpoint, float_count_matches_published_stories15M)
{
    /* stories15M.bin from llama2.c is 60816028 bytes: a 28-byte header and fp32 */
    ckpt_config_t c = {288, 768, 6, 6, 6, 32000, 256, true, 0, 0, 0};
    cr_assert_eq(ckpt_config_check(&c, NULL, 0), LS_OK);
    cr_assert_eq(ckpt_float_count(&c), (60816028u - 28u) / 4u);
    cr_assert_eq(c.head_dim, 48);
    cr_assert_eq(c.kv_dim, 288);
}

Test(checkpoint, legacy_shared_round_trip_layout)
{
    const char *p = path_of("tiny.bin");
    ckpt_config_t c = tiny(true);
    write_ok(p, c, 7, CKPT_FORMAT_LEGACY);
    ckpt_t *ck = open_ok(p);
    cr_assert_str_eq(ck->name, "tiny");
    cr_assert_str_eq(ck->path, p);
    cr_assert_eq(ck->format_version, 0);
    cr_assert_eq(ck->cfg.dim, 64);
    cr_assert_eq(ck->cfg.hidden_dim, 172);
    cr_assert_eq(ck->cfg.n_layers, 2);
    cr_assert_eq(ck->cfg.n_heads, 4);
    cr_assert_eq(ck->cfg.n_kv_heads, 2);
    cr_assert_eq(ck->cfg.vocab_size, 300);
    cr_assert_eq(ck->cfg.seq_len, 32);
    cr_assert(ck->cfg.shared_classifier);
    cr_assert_eq(ck->cfg.head_dim, 16);
    cr_assert_eq(ck->cfg.kv_dim, 32);

    size_t D = 64, H = 172, L = 2, V = 300, KV = 32, S = 32, HD = 16;
    size_t o = 28;
    cr_assert_eq(off_of(ck, ck->w.token_embedding), o);
    o += 4 * V * D;
    cr_assert_eq(off_of(ck, ck->w.rms_att), o);
    o += 4 * L * D;
    cr_assert_eq(off_of(ck, ck->w.wq), o);
    o += 4 * L * D * D;
    cr_assert_eq(off_of(ck, ck->w.wk), o);
    o += 4 * L * KV * D;
    cr_assert_eq(off_of(ck, ck->w.wv), o);
    o += 4 * L * KV * D;
    cr_assert_eq(off_of(ck, ck->w.wo), o);
    o += 4 * L * D * D;
    cr_assert_eq(off_of(ck, ck->w.rms_ffn), o);
    o += 4 * L * D;
    cr_assert_eq(off_of(ck, ck->w.w1), o);
    o += 4 * L * H * D;
    cr_assert_eq(off_of(ck, ck->w.w2), o);
    o += 4 * L * D * H;
    cr_assert_eq(off_of(ck, ck->w.w3), o);
    o += 4 * L * H * D;
    cr_assert_eq(off_of(ck, ck->w.rms_final), o);
    o += 4 * D;
    /* freq_cis_real[pos][i] = cos(pos * 10000^(-2i/head_dim)), as model.py writes */
    const float *rope = (const float *)((const char *)ck->map + o);
    cr_assert_float_eq(rope[0], 1.0f, 1e-6);
    cr_assert_float_eq(rope[1 * HD / 2 + 0], cosf(1.0f), 1e-6);
    o += 2 * 4 * S * HD / 2;
    cr_assert_eq(o, ck->map_bytes);
    cr_assert_eq(ck->w.wcls, ck->w.token_embedding);
    cr_assert_eq((long)ck->map_bytes, file_size(p));
    cr_assert_eq(ck->map_bytes, 28 + 4 * ckpt_float_count(&ck->cfg));
    ckpt_close(ck);
}

Test(checkpoint, legacy_unshared_has_negative_vocab_and_trailing_wcls)
{
    const char *p = path_of("sep.bin");
    write_ok(p, tiny(false), 7, CKPT_FORMAT_LEGACY);
    size_t n;
    unsigned char *b = slurp(p, &n);
    int32_t h[7];
    memcpy(h, b, sizeof(h));
    cr_assert_eq(h[5], -300);
    free(b);
    ckpt_t *ck = open_ok(p);
    cr_assert_not(ck->cfg.shared_classifier);
    cr_assert_eq(ck->cfg.vocab_size, 300);
    cr_assert_eq(off_of(ck, ck->w.wcls), ck->map_bytes - 4u * 300u * 64u);
    cr_assert_neq(memcmp(ck->w.wcls, ck->w.token_embedding, 4u * 300u * 64u), 0);
    ckpt_close(ck);
}

Test(checkpoint, v1_layout_follows_export_py)
{
    const char *p = path_of("v1.bin");
    write_ok(p, tiny(false), 7, CKPT_FORMAT_V1);
    size_t n;
    unsigned char *b = slurp(p, &n);
    uint32_t magic;
    int32_t h[8];
    memcpy(&magic, b, 4);
    memcpy(h, b + 4, sizeof(h));
    cr_assert_eq(memcmp(b, "24ka", 4), 0, "magic 0x616b3432 little-endian");
    cr_assert_eq(magic, 0x616b3432u);
    cr_assert_eq(h[0], 1);
    cr_assert_eq(h[6], 300, "version 1 states the vocabulary size as is");
    cr_assert_eq(b[36], 0);
    for (size_t i = 37; i < 256; i++)
        CHECK(b[i] == 0, "padding byte %zu", i);
    free(b);

    ckpt_t *ck = open_ok(p);
    cr_assert_eq(ck->format_version, 1);
    size_t D = 64, H = 172, L = 2, V = 300, KV = 32;
    size_t o = 256;
    cr_assert_eq(off_of(ck, ck->w.rms_att), o);
    o += 4 * L * D;
    cr_assert_eq(off_of(ck, ck->w.rms_ffn), o);
    o += 4 * L * D;
    cr_assert_eq(off_of(ck, ck->w.rms_final), o);
    o += 4 * D;
    cr_assert_eq(off_of(ck, ck->w.token_embedding), o);
    o += 4 * V * D;
    cr_assert_eq(off_of(ck, ck->w.wq), o);
    o += 4 * L * D * D;
    cr_assert_eq(off_of(ck, ck->w.wk), o);
    o += 4 * L * KV * D;
    cr_assert_eq(off_of(ck, ck->w.wv), o);
    o += 4 * L * KV * D;
    cr_assert_eq(off_of(ck, ck->w.wo), o);
    o += 4 * L * D * D;
    cr_assert_eq(off_of(ck, ck->w.w1), o);
    o += 4 * L * H * D;
    cr_assert_eq(off_of(ck, ck->w.w2), o);
    o += 4 * L * D * H;
    cr_assert_eq(off_of(ck, ck->w.w3), o);
    o += 4 * L * H * D;
    cr_assert_eq(off_of(ck, ck->w.wcls), o);
    o += 4 * V * D;
    cr_assert_eq(o, ck->map_bytes);
    ckpt_close(ck);
}

static void assert_same_weights(const ckpt_t *a, const ckpt_t *b)
{
    const ckpt_config_t *c = &a->cfg;
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, L = (size_t)c->n_layers;
    size_t V = (size_t)c->vocab_size, KV = (size_t)c->kv_dim;
    struct {
        const char *name;
        const float *x, *y;
        size_t n;
    } t[] = {
        {"token_embedding", a->w.token_embedding, b->w.token_embedding, V * D},
        {"rms_att", a->w.rms_att, b->w.rms_att, L * D},
        {"wq", a->w.wq, b->w.wq, L * D * D},
        {"wk", a->w.wk, b->w.wk, L * KV * D},
        {"wv", a->w.wv, b->w.wv, L * KV * D},
        {"wo", a->w.wo, b->w.wo, L * D * D},
        {"rms_ffn", a->w.rms_ffn, b->w.rms_ffn, L * D},
        {"w1", a->w.w1, b->w.w1, L * H * D},
        {"w2", a->w.w2, b->w.w2, L * D * H},
        {"w3", a->w.w3, b->w.w3, L * H * D},
        {"rms_final", a->w.rms_final, b->w.rms_final, D},
        {"wcls", a->w.wcls, b->w.wcls, V * D},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        cr_assert_eq(memcmp(t[i].x, t[i].y, t[i].n * sizeof(float)), 0, "%s differs", t[i].name);
}

Test(checkpoint, both_formats_hold_the_same_model)
{
    for (int shared = 0; shared < 2; shared++) {
        const char *a = path_of("a.bin"), *b = path_of("b.bin");
        write_ok(a, tiny(shared), 99, CKPT_FORMAT_LEGACY);
        write_ok(b, tiny(shared), 99, CKPT_FORMAT_V1);
        ckpt_t *x = open_ok(a), *y = open_ok(b);
        cr_assert_eq(x->cfg.shared_classifier, y->cfg.shared_classifier);
        assert_same_weights(x, y);
        ckpt_close(x);
        ckpt_close(y);
    }
}

Test(checkpoint, weights_are_deterministic_and_scaled)
{
    const char *a = path_of("a.bin"), *b = path_of("b.bin"), *c = path_of("c.bin");
    write_ok(a, tiny(true), 5, CKPT_FORMAT_LEGACY);
    write_ok(b, tiny(true), 5, CKPT_FORMAT_LEGACY);
    write_ok(c, tiny(true), 6, CKPT_FORMAT_LEGACY);
    size_t na, nb, nc;
    unsigned char *x = slurp(a, &na), *y = slurp(b, &nb), *z = slurp(c, &nc);
    cr_assert_eq(na, nb);
    cr_assert_eq(memcmp(x, y, na), 0, "same seed, different bytes");
    cr_assert_neq(memcmp(x + 28, z + 28, na - 28), 0, "different seeds, same weights");
    free(x);
    free(y);
    free(z);

    ckpt_t *ck = open_ok(a);
    const ckpt_config_t *k = &ck->cfg;
    for (int i = 0; i < k->n_layers * k->dim; i++) {
        CHECK(ck->w.rms_att[i] >= 0.9f && ck->w.rms_att[i] <= 1.1f, "rms_att[%d]", i);
        CHECK(ck->w.rms_ffn[i] >= 0.9f && ck->w.rms_ffn[i] <= 1.1f, "rms_ffn[%d]", i);
    }
    float bound = 1.0f / sqrtf((float)k->dim);
    double sum2 = 0;
    size_t n = (size_t)k->n_layers * k->dim * k->dim;
    for (size_t i = 0; i < n; i++) {
        CHECK(fabsf(ck->w.wq[i]) <= bound, "wq[%zu] = %g", i, ck->w.wq[i]);
        sum2 += (double)ck->w.wq[i] * ck->w.wq[i];
    }
    /* uniform in +-b has variance b^2 / 3 */
    double var = sum2 / (double)n, want = (double)bound * bound / 3.0;
    cr_assert(fabs(var - want) < 0.1 * want, "wq variance %g, want %g", var, want);
    bound = 1.0f / sqrtf((float)k->hidden_dim);
    for (size_t i = 0; i < (size_t)k->n_layers * k->dim * k->hidden_dim; i++)
        CHECK(fabsf(ck->w.w2[i]) <= bound, "w2[%zu] = %g", i, ck->w.w2[i]);
    ckpt_close(ck);
}

Test(checkpoint, grouped_query_and_multi_query_shapes)
{
    const int kv[] = {1, 2, 4};
    for (size_t i = 0; i < 3; i++) {
        ckpt_config_t c = tiny(true);
        c.n_kv_heads = kv[i];
        const char *p = path_of("gqa.bin");
        write_ok(p, c, 1, i % 2 ? CKPT_FORMAT_V1 : CKPT_FORMAT_LEGACY);
        ckpt_t *ck = open_ok(p);
        cr_assert_eq(ck->cfg.n_kv_heads, kv[i]);
        cr_assert_eq(ck->cfg.kv_dim, kv[i] * 16);
        cr_assert_eq((size_t)(ck->w.wv - ck->w.wk), (size_t)2 * kv[i] * 16 * 64);
        ckpt_close(ck);
    }
}

Test(checkpoint, name_is_base_name_without_extension)
{
    const char *p = path_of("stories15M.bin");
    write_ok(p, tiny(true), 1, CKPT_FORMAT_LEGACY);
    ckpt_t *ck = open_ok(p);
    cr_assert_str_eq(ck->name, "stories15M");
    ckpt_close(ck);
    p = path_of("model");
    write_ok(p, tiny(true), 1, CKPT_FORMAT_LEGACY);
    ck = open_ok(p);
    cr_assert_str_eq(ck->name, "model");
    ckpt_close(ck);
    ckpt_close(NULL);
}

Test(checkpoint, truncated_or_oversized_by_one_byte)
{
    const int formats[] = {CKPT_FORMAT_LEGACY, CKPT_FORMAT_V1};
    for (int f = 0; f < 2; f++) {
        for (int shared = 0; shared < 2; shared++) {
            const char *p = path_of("good.bin"), *q = path_of("bad.bin");
            write_ok(p, tiny(shared), 3, (ckpt_format_t)formats[f]);
            size_t n;
            unsigned char *b = slurp(p, &n);
            spit(q, b, n - 1);
            open_fails(q, "truncated");
            b = realloc(b, n + 1);
            b[n] = 0;
            spit(q, b, n + 1);
            open_fails(q, "oversized");
            spit(q, b, n - 4u * 64u); /* a whole row short */
            open_fails(q, "truncated");
            free(b);
        }
    }
}

/* Writes a good legacy file, then sets header int i to v. */
static const char *legacy_with(int i, int32_t v)
{
    const char *p = path_of("good.bin"), *q = path_of("bad.bin");
    write_ok(p, tiny(true), 3, CKPT_FORMAT_LEGACY);
    size_t n;
    unsigned char *b = slurp(p, &n);
    memcpy(b + 4 * i, &v, 4);
    spit(q, b, n);
    free(b);
    return q;
}

Test(checkpoint, legacy_header_lies)
{
    open_fails(legacy_with(0, 128), "truncated");  /* dim doubled */
    open_fails(legacy_with(0, 32), "oversized");   /* dim halved */
    open_fails(legacy_with(2, 3), "truncated");    /* a layer more */
    open_fails(legacy_with(5, -300), "truncated"); /* says wcls follows */
    open_fails(legacy_with(6, 31), "oversized");   /* seq_len: RoPE tables shrink */
    open_fails(legacy_with(4, 4), "truncated");    /* kv heads: bigger wk, wv */
}

Test(checkpoint, legacy_bad_shapes)
{
    open_fails(legacy_with(0, -64), "dim is -64");
    open_fails(legacy_with(0, 0), "dim is 0");
    open_fails(legacy_with(1, 0), "hidden_dim is 0");
    open_fails(legacy_with(2, 0), "n_layers is 0");
    open_fails(legacy_with(2, -1), "n_layers is -1");
    open_fails(legacy_with(3, 0), "n_heads is 0");
    open_fails(legacy_with(4, 0), "n_kv_heads is 0");
    open_fails(legacy_with(5, 0), "vocab_size is 0");
    open_fails(legacy_with(5, INT32_MIN), "vocab_size is");
    open_fails(legacy_with(6, -5), "seq_len is -5");
    open_fails(legacy_with(3, 5), "not a multiple of n_heads");
    open_fails(legacy_with(4, 3), "n_heads 4 is not a multiple of n_kv_heads 3");
    open_fails(legacy_with(4, 8), "n_kv_heads 8");
    open_fails(legacy_with(3, 64), "odd"); /* head_dim 1 */
    open_fails(legacy_with(0, INT32_MAX), "bad shape");
    open_fails(legacy_with(1, INT32_MAX), "file is"); /* fits in 63 bits: a size mismatch */
}

Test(checkpoint, sizes_that_overflow_are_refused)
{
    ckpt_config_t c = {1 << 30, 1 << 30, 1 << 30, 1 << 14, 1 << 14, 1 << 30,
                       1 << 30, true,    0,       0,       0};
    char err[256] = "";
    cr_assert_eq(ckpt_config_check(&c, err, sizeof(err)), LS_ERR_INVALID);
    cr_assert(strstr(err, "too large") != NULL, "%s", err);
    cr_assert_eq(ckpt_float_count(&c), 0);
    /* every field at its limit one at a time: checked without overflow */
    for (int i = 0; i < 7; i++) {
        ckpt_config_t d = {64, 172, 2, 4, 2, 300, 32, false, 0, 0, 0};
        int *f[] = {&d.dim,        &d.hidden_dim, &d.n_layers, &d.n_heads,
                    &d.n_kv_heads, &d.vocab_size, &d.seq_len};
        *f[i] = INT32_MAX;
        err[0] = '\0';
        int rc = ckpt_config_check(&d, err, sizeof(err));
        if (rc == LS_OK)
            cr_assert_gt(ckpt_float_count(&d), 0);
        else
            cr_assert_gt(strlen(err), 0);
    }
}

/* Writes a good v1 file, then overwrites 4 bytes at off with v. */
static const char *v1_with(size_t off, uint32_t v)
{
    const char *p = path_of("good.bin"), *q = path_of("bad.bin");
    write_ok(p, tiny(true), 3, CKPT_FORMAT_V1);
    size_t n;
    unsigned char *b = slurp(p, &n);
    memcpy(b + off, &v, 4);
    spit(q, b, n);
    free(b);
    return q;
}

Test(checkpoint, v1_bad_versions_and_flags)
{
    /* a v1 file relabelled version 2 reads zero where the group size would be */
    open_fails(v1_with(4, 2), "group_size is 0");
    open_fails(v1_with(4, 3), "unsupported ak42 version 3");
    open_fails(v1_with(4, 0), "unsupported ak42 version 0");
    open_fails(v1_with(36, 7), "shared_classifier flag is 7");
    open_fails(v1_with(36, 0), "truncated"); /* says wcls follows */
    open_fails(v1_with(8, (uint32_t)-64), "dim is -64");
    open_fails(v1_with(28, 0), "vocab_size is 0");
    open_fails(v1_with(24, 0), "n_kv_heads is 0");
    open_fails(v1_with(28, (uint32_t)-300), "vocab_size is -300");
    /* the magic and a short header */
    const char *q = path_of("short.bin");
    unsigned char b[100] = {0x32, 0x34, 0x6b, 0x61, 1};
    spit(q, b, sizeof(b));
    open_fails(q, "truncated");
}

Test(checkpoint, wrong_magic_reads_as_legacy_and_fails_cleanly)
{
    /* "ak43": not the magic, so the first int is a (huge) legacy dim */
    open_fails(v1_with(0, 0x616b3433u), "bad shape");
}

Test(checkpoint, missing_directory_empty_and_tiny_files)
{
    open_fails(path_of("nope.bin"), "No such file");
    open_fails(dir.path, "not a regular file");
    const char *q = path_of("empty.bin");
    spit(q, "", 0);
    open_fails(q, "empty");
    spit(q, "abc", 3);
    open_fails(q, "too short");
    spit(q, "abcdefghij", 10);
    open_fails(q, "too short");
    char err[64];
    cr_assert_null(ckpt_open(NULL, err, sizeof(err)));
}

Test(checkpoint, write_refuses_bad_shapes_and_paths)
{
    char err[256] = "";
    ckpt_config_t c = tiny(true);
    c.n_heads = 3;
    cr_assert_eq(ckpt_write(path_of("x.bin"), &c, 1, CKPT_FORMAT_LEGACY, err, sizeof(err)),
                 LS_ERR_INVALID);
    cr_assert(strstr(err, "x.bin") != NULL, "%s", err);
    c = tiny(true);
    cr_assert_eq(ckpt_write(path_of("x.bin"), &c, 1, (ckpt_format_t)9, err, sizeof(err)),
                 LS_ERR_INVALID);
    cr_assert_eq(ckpt_write("/nonexistent-dir/x.bin", &c, 1, CKPT_FORMAT_LEGACY, err, sizeof(err)),
                 LS_ERR_IO);
    cr_assert(strstr(err, "/nonexistent-dir/x.bin") != NULL, "%s", err);
    struct stat st;
    cr_assert_neq(stat(path_of("x.bin"), &st), 0, "nothing is left behind");
    cr_assert_neq(stat(path_of("x.bin.tmp"), &st), 0, "nothing is left behind");
}

/* ---- Q8_0: ak42 version 2 (export.py version2_export, runq.c) ---------------------- */

/* tiny with a hidden_dim that 32 divides and 64 does not */
static ckpt_config_t q8_shape(bool shared, int group_size)
{
    ckpt_config_t c = tiny(shared);
    c.hidden_dim = 160;
    c.group_size = group_size;
    return c;
}

/* Bytes of one Q8_0 tensor of n values in groups of gs. */
static size_t q8_bytes(size_t n, size_t gs)
{
    return n + 4 * (n / gs);
}

static size_t off_of_q8(const ckpt_t *ck, const void *p)
{
    return (size_t)((const char *)p - (const char *)ck->map);
}

Test(checkpoint, q8_layout_follows_export_py_version2)
{
    for (int shared = 0; shared < 2; shared++) {
        const char *p = path_of("q8.bin");
        write_ok(p, q8_shape(shared, 32), 7, CKPT_FORMAT_Q8_0);
        size_t n;
        unsigned char *b = slurp(p, &n);
        int32_t h[8], gs;
        memcpy(h, b + 4, sizeof(h));
        memcpy(&gs, b + 37, 4);
        cr_assert_eq(memcmp(b, "24ka", 4), 0);
        cr_assert_eq(h[0], 2);
        cr_assert_eq(h[2], 160);
        cr_assert_eq(b[36], shared);
        cr_assert_eq(gs, 32, "int32 group size packed right after the flag byte");
        for (size_t i = 41; i < 256; i++)
            CHECK(b[i] == 0, "padding byte %zu", i);
        free(b);

        ckpt_t *ck = open_ok(p);
        cr_assert_eq(ck->format_version, 2);
        cr_assert_eq(ck->cfg.group_size, 32);
        cr_assert_eq(ck->cfg.hidden_dim, 160);
        cr_assert_eq(ck->cfg.kv_dim, 32);
        cr_assert_eq(ck->cfg.shared_classifier, (bool)shared);
        cr_assert_null(ck->w.token_embedding);
        cr_assert_null(ck->w.wq);
        cr_assert_null(ck->w.w2);
        cr_assert_null(ck->w.wcls);
        size_t D = 64, H = 160, L = 2, V = 300, KV = 32, G = 32;
        size_t o = 256;
        cr_assert_eq(off_of(ck, ck->w.rms_att), o);
        o += 4 * L * D;
        cr_assert_eq(off_of(ck, ck->w.rms_ffn), o);
        o += 4 * L * D;
        cr_assert_eq(off_of(ck, ck->w.rms_final), o);
        o += 4 * D;
        cr_assert_eq(off_of_q8(ck, ck->q8.token_embedding.q), o);
        cr_assert_eq(off_of_q8(ck, ck->q8.token_embedding.s), o + V * D);
        o += q8_bytes(V * D, G);
        const ckpt_q8_t *kinds[] = {ck->q8.wq, ck->q8.wk, ck->q8.wv, ck->q8.wo,
                                    ck->q8.w1, ck->q8.w2, ck->q8.w3};
        const size_t counts[] = {D * D, KV * D, KV * D, D * D, H * D, D * H, H * D};
        for (size_t k = 0; k < 7; k++) {
            for (size_t l = 0; l < L; l++) {
                cr_assert_eq(off_of_q8(ck, kinds[k][l].q), o, "kind %zu layer %zu", k, l);
                cr_assert_eq(off_of_q8(ck, kinds[k][l].s), o + counts[k], "kind %zu layer %zu", k,
                             l);
                o += q8_bytes(counts[k], G);
            }
        }
        if (shared) {
            cr_assert_eq(ck->q8.wcls.q, ck->q8.token_embedding.q);
            cr_assert_eq(ck->q8.wcls.s, ck->q8.token_embedding.s);
        } else {
            cr_assert_eq(off_of_q8(ck, ck->q8.wcls.q), o);
            cr_assert_eq(off_of_q8(ck, ck->q8.wcls.s), o + V * D);
            o += q8_bytes(V * D, G);
        }
        cr_assert_eq(o, ck->map_bytes);
        cr_assert_eq(ck->map_bytes, ckpt_q8_file_bytes(&ck->cfg));
        ckpt_close(ck);
    }
}

/* Every group of the Q8_0 file against the same seed's fp32 file: the scale is
 * max|w| / 127 of the fp32 group and every value is within half a scale. */
static void assert_quantized_from(const ckpt_t *f, const ckpt_t *q)
{
    const ckpt_config_t *c = &f->cfg;
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t KV = (size_t)c->kv_dim, gs = (size_t)q->cfg.group_size;
    int L = c->n_layers;
    const struct {
        const char *name;
        const float *f;
        const ckpt_q8_t *q;
        int layers;
        size_t n;
    } t[] = {
        {"token_embedding", f->w.token_embedding, &q->q8.token_embedding, 1, V * D},
        {"wq", f->w.wq, q->q8.wq, L, D * D},
        {"wk", f->w.wk, q->q8.wk, L, KV * D},
        {"wv", f->w.wv, q->q8.wv, L, KV * D},
        {"wo", f->w.wo, q->q8.wo, L, D * D},
        {"w1", f->w.w1, q->q8.w1, L, H * D},
        {"w2", f->w.w2, q->q8.w2, L, D * H},
        {"w3", f->w.w3, q->q8.w3, L, H * D},
        {"wcls", f->w.wcls, &q->q8.wcls, 1, V * D},
    };
    double worst = 0; /* largest error in scales */
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        for (int l = 0; l < t[i].layers; l++) {
            const float *w = t[i].f + (size_t)l * t[i].n;
            const ckpt_q8_t *m = &t[i].q[l];
            for (size_t g = 0; g < t[i].n / gs; g++) {
                float wmax = 0.0f;
                for (size_t j = g * gs; j < (g + 1) * gs; j++)
                    wmax = fabsf(w[j]) > wmax ? fabsf(w[j]) : wmax;
                float s = m->s[g];
                CHECK(s == wmax / 127.0f, "%s layer %d group %zu: scale %g, max|w| / 127 %g",
                      t[i].name, l, g, s, wmax / 127.0f);
                bool hit_max = false;
                for (size_t j = g * gs; j < (g + 1) * gs; j++) {
                    float e = fabsf((float)m->q[j] * s - w[j]);
                    CHECK(m->q[j] >= -127 && e <= 0.5001f * s,
                          "%s layer %d [%zu]: q %d scale %g w %g", t[i].name, l, j, m->q[j], s,
                          w[j]);
                    hit_max |= m->q[j] == 127 || m->q[j] == -127;
                    worst = e / s > worst ? e / s : worst;
                }
                CHECK(hit_max, "%s layer %d group %zu: the largest value is not +-127", t[i].name,
                      l, g);
            }
        }
    }
    cr_assert_lt(worst, 0.5001);
    const struct {
        const float *a, *b;
        size_t n;
    } norms[] = {{f->w.rms_att, q->w.rms_att, (size_t)L * D},
                 {f->w.rms_ffn, q->w.rms_ffn, (size_t)L * D},
                 {f->w.rms_final, q->w.rms_final, D}};
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(memcmp(norms[i].a, norms[i].b, norms[i].n * sizeof(float)), 0,
                     "norms stay fp32");
}

Test(checkpoint, q8_values_are_the_fp32_model_quantized)
{
    const int sizes[] = {4, 32};
    for (int shared = 0; shared < 2; shared++) {
        for (size_t i = 0; i < 2; i++) {
            const char *a = path_of("f.bin"), *b = path_of("q.bin");
            write_ok(a, q8_shape(shared, sizes[i]), 11, CKPT_FORMAT_V1);
            write_ok(b, q8_shape(shared, sizes[i]), 11, CKPT_FORMAT_Q8_0);
            ckpt_t *f = open_ok(a), *q = open_ok(b);
            cr_assert_eq(f->cfg.group_size, 0, "fp32 formats ignore the group size");
            cr_assert_eq(q->cfg.group_size, sizes[i]);
            assert_quantized_from(f, q);
            ckpt_close(f);
            ckpt_close(q);
        }
    }
}

Test(checkpoint, q8_truncated_or_oversized)
{
    for (int shared = 0; shared < 2; shared++) {
        const char *p = path_of("good.bin"), *q = path_of("bad.bin");
        write_ok(p, q8_shape(shared, 32), 3, CKPT_FORMAT_Q8_0);
        size_t n;
        unsigned char *b = slurp(p, &n);
        spit(q, b, n - 1);
        open_fails(q, "truncated");
        b = realloc(b, n + 4);
        memset(b + n, 0, 4);
        spit(q, b, n + 1);
        open_fails(q, "oversized");
        spit(q, b, n + 4); /* one more (zero) scale */
        open_fails(q, "oversized");
        spit(q, b, n - 4); /* the last scale short */
        open_fails(q, "truncated");
        spit(q, b, 256);
        open_fails(q, "truncated");
        free(b);
    }
}

/* Writes a good Q8_0 file (q8_shape, group size 32), then overwrites 4 bytes at off. */
static const char *q8_with(size_t off, uint32_t v)
{
    const char *p = path_of("good.bin"), *q = path_of("bad.bin");
    write_ok(p, q8_shape(false, 32), 3, CKPT_FORMAT_Q8_0);
    size_t n;
    unsigned char *b = slurp(p, &n);
    memcpy(b + off, &v, 4);
    spit(q, b, n);
    free(b);
    return q;
}

Test(checkpoint, q8_bad_headers)
{
    open_fails(q8_with(37, 0), "group_size is 0");
    open_fails(q8_with(37, (uint32_t)-32), "group_size is -32");
    open_fails(q8_with(37, 48), "group_size 48 does not divide dim 64");
    open_fails(q8_with(37, 64), "group_size 64 does not divide hidden_dim 160");
    open_fails(q8_with(37, 128), "group_size 128 does not divide dim 64");
    open_fails(q8_with(37, 16), "truncated"); /* twice the scales */
    open_fails(q8_with(37, 16), "group_size=16");
    open_fails(q8_with(4, 3), "unsupported ak42 version 3");
    open_fails(q8_with(4, 1), "truncated"); /* read as fp32 version 1 */
    open_fails(q8_with(36, 7), "shared_classifier flag is 7");
    /* flag 1 (shared), group size 32 kept: the file holds a wcls it does not expect */
    open_fails(q8_with(36, 1u | 32u << 8), "oversized");
    open_fails(q8_with(8, (uint32_t)-64), "dim is -64");
    open_fails(q8_with(24, 3), "n_heads 4 is not a multiple of n_kv_heads 3");
    open_fails(q8_with(12, 192), "truncated"); /* hidden_dim 192: larger, 32 divides it */
}

/* The offset of scale g of layer l of wq in a q8_shape(false, 32) file. */
static size_t wq_scale_offset(int l, size_t g)
{
    size_t D = 64, L = 2, V = 300, G = 32;
    return 256 + 4 * (2 * L * D + D) + q8_bytes(V * D, G) + (size_t)l * q8_bytes(D * D, G) + D * D +
           4 * g;
}

Test(checkpoint, q8_non_finite_scales_are_refused)
{
    open_fails(q8_with(wq_scale_offset(1, 3), 0x7fc00000u), "wq layer 1 scale 3");
    open_fails(q8_with(wq_scale_offset(0, 0), 0x7f800000u), "must be finite");     /* +inf */
    open_fails(q8_with(wq_scale_offset(1, 0), 0xff800000u), "wq layer 1 scale 0"); /* -inf */
    /* the last scale of the file is wcls's */
    const char *p = path_of("good.bin"), *q = path_of("bad.bin");
    write_ok(p, q8_shape(false, 32), 3, CKPT_FORMAT_Q8_0);
    size_t n;
    unsigned char *b = slurp(p, &n);
    uint32_t nan = 0x7fc00001u;
    memcpy(b + n - 4, &nan, 4);
    spit(q, b, n);
    free(b);
    open_fails(q, "wcls layer 0 scale 599");
}

Test(checkpoint, q8_group_size_rules)
{
    char err[256] = "";
    ckpt_config_t c = q8_shape(true, 48);
    cr_assert_eq(ckpt_write(path_of("x.bin"), &c, 1, CKPT_FORMAT_Q8_0, err, sizeof(err)),
                 LS_ERR_INVALID);
    cr_assert(strstr(err, "x.bin") != NULL && strstr(err, "does not divide dim 64"), "%s", err);
    struct stat st;
    cr_assert_neq(stat(path_of("x.bin"), &st), 0, "nothing is left behind");
    cr_assert_neq(stat(path_of("x.bin.tmp"), &st), 0, "nothing is left behind");

    c = q8_shape(true, -1);
    cr_assert_eq(ckpt_config_check(&c, err, sizeof(err)), LS_ERR_INVALID);
    cr_assert(strstr(err, "group_size is -1") != NULL, "%s", err);
    cr_assert_eq(ckpt_q8_file_bytes(&c), 0);
    c = q8_shape(true, 0);
    cr_assert_eq(ckpt_config_check(&c, err, sizeof(err)), LS_OK, "0: an fp32 shape");
    cr_assert_eq(ckpt_q8_file_bytes(&c), 0);

    /* dim 18 (one head of 18) and hidden_dim 27: 9 divides both, but 27 * 18 int8 values
     * would leave w1's scales at an odd address */
    ckpt_config_t odd = {.dim = 18,
                         .hidden_dim = 27,
                         .n_layers = 1,
                         .n_heads = 1,
                         .n_kv_heads = 1,
                         .vocab_size = 300,
                         .seq_len = 8,
                         .shared_classifier = true,
                         .group_size = 9};
    cr_assert_eq(ckpt_config_check(&odd, err, sizeof(err)), LS_ERR_INVALID);
    cr_assert(strstr(err, "misaligned") != NULL, "%s", err);
    odd.hidden_dim = 36;
    cr_assert_eq(ckpt_config_check(&odd, err, sizeof(err)), LS_OK, "%s", err);

    /* group_size 0: export.py's default of 64 */
    c = tiny(true);
    c.dim = 128;
    c.hidden_dim = 256;
    const char *p = path_of("default.bin");
    write_ok(p, c, 1, CKPT_FORMAT_Q8_0);
    ckpt_t *ck = open_ok(p);
    cr_assert_eq(ck->cfg.group_size, CKPT_Q8_DEFAULT_GROUP);
    cr_assert_eq(CKPT_Q8_DEFAULT_GROUP, 64);
    ckpt_close(ck);
}

/* A Q8_0 file opened from disk runs through the forward pass (the int8 CPU kernels;
 * test_forward_cpu checks their logits against the reference). */
Test(checkpoint, q8_file_runs_through_the_forward_pass)
{
    const char *p = path_of("q8.bin");
    write_ok(p, q8_shape(true, 32), 1, CKPT_FORMAT_Q8_0);
    ckpt_t *ck = open_ok(p);
    forward_config_t fc;
    forward_config_init(&fc);
    fc.backend = FORWARD_CPU;
    fc.threads = 1;
    fc.max_batch = 1;
    char err[512] = "";
    forward_t *f = forward_create(ck, &fc, err, sizeof(err));
    cr_assert_not_null(f, "%s", err);
    cr_assert(strstr(forward_device_name(f), "int8") != NULL, "%s", forward_device_name(f));
    int seq = forward_seq_open(f, 4);
    cr_assert_geq(seq, 0);
    sampler_t s;
    sampler_init(&s, 0.0f, 1.0f, 0, 1);
    int prompt[3] = {1, 5, 9}, out = -1;
    forward_item_t it = {.seq = seq, .tokens = prompt, .n_tokens = 3, .pos = 0, .sampler = &s};
    cr_assert_eq(forward_step(f, &it, 1, &out, NULL), LS_OK);
    cr_assert(out >= 0 && out < ck->cfg.vocab_size, "token %d", out);
    forward_destroy(f);
    ckpt_close(ck);
}

/* Runs the model maker with args (NULL-terminated) and --out out; its exit status. */
static int modelmaker(const char *out, const char *const *args)
{
    char *argv[24];
    int n = 0;
    argv[n++] = (char *)test_env_path("LLMSERVE_MODELMAKER");
    argv[n++] = "--out";
    argv[n++] = (char *)out;
    for (; *args && n < 22; args++)
        argv[n++] = (char *)*args;
    argv[n] = NULL;
    return test_run(argv, 60000);
}

Test(checkpoint, q8_modelmaker_flags)
{
    const char *p = path_of("mm.bin");
    /* tiny's hidden_dim 172: 64 halves to 4, as export.py backs off */
    const char *const tiny_q8[] = {"--quantize", "q8_0", NULL};
    cr_assert_eq(modelmaker(p, tiny_q8), 0);
    ckpt_t *ck = open_ok(p);
    cr_assert_eq(ck->format_version, 2);
    cr_assert_eq(ck->cfg.group_size, 4);
    cr_assert_eq(ck->cfg.hidden_dim, 172);
    ckpt_close(ck);

    const char *const wide[] = {
        "--quantize", "q8_0", "--dim", "128", "--hidden-dim", "256", "--no-shared-classifier",
        NULL};
    cr_assert_eq(modelmaker(p, wide), 0);
    ck = open_ok(p);
    cr_assert_eq(ck->cfg.group_size, 64);
    cr_assert_not(ck->cfg.shared_classifier);
    ckpt_close(ck);

    const char *const explicit_gs[] = {"--quantize", "q8_0", "--group-size", "2", NULL};
    cr_assert_eq(modelmaker(p, explicit_gs), 0);
    ck = open_ok(p);
    cr_assert_eq(ck->cfg.group_size, 2);
    ckpt_close(ck);

    const char *q = path_of("refused.bin");
    const char *const bad_gs[] = {"--quantize", "q8_0", "--group-size", "64", NULL};
    const char *const both[] = {"--quantize", "q8_0", "--format", "v1", NULL};
    const char *const unknown[] = {"--quantize", "q4_0", NULL};
    const char *const gs_alone[] = {"--group-size", "4", NULL};
    cr_assert_eq(modelmaker(q, bad_gs), 2, "64 does not divide hidden_dim 172");
    cr_assert_eq(modelmaker(q, both), 2);
    cr_assert_eq(modelmaker(q, unknown), 2);
    cr_assert_eq(modelmaker(q, gs_alone), 2);
    struct stat st;
    cr_assert_neq(stat(q, &st), 0);
}

/* ---- conversion of fp32 checkpoints (ckpt_convert, llmserve-modelmaker --from) ---- */

static void assert_same_bytes(const char *a, const char *b)
{
    size_t na, nb;
    unsigned char *x = slurp(a, &na), *y = slurp(b, &nb);
    cr_assert_eq(na, nb, "%s is %zu bytes, %s %zu", a, na, b, nb);
    cr_assert(memcmp(x, y, na) == 0, "%s and %s differ", a, b);
    free(x);
    free(y);
}

/* Converting a model-maker file gives the file the model maker writes in the target
 * format from the same seed, byte for byte: the same values, layout and quantization. */
Test(checkpoint, convert_gives_the_model_makers_file_in_every_format)
{
    for (int shared = 0; shared < 2; shared++) {
        ckpt_config_t c = q8_shape(shared, 32);
        const char *legacy = path_of("src-legacy.bin");
        write_ok(legacy, c, 77, CKPT_FORMAT_LEGACY);
        ckpt_t *src = open_ok(legacy);
        char err[512] = "";

        const char *want = path_of("want.bin"), *got = path_of("got.bin");
        write_ok(want, c, 77, CKPT_FORMAT_Q8_0);
        cr_assert_eq(ckpt_convert(got, src, CKPT_FORMAT_Q8_0, 32, err, sizeof(err)), LS_OK, "%s",
                     err);
        assert_same_bytes(want, got);

        write_ok(want, c, 77, CKPT_FORMAT_V1);
        cr_assert_eq(ckpt_convert(got, src, CKPT_FORMAT_V1, 0, err, sizeof(err)), LS_OK, "%s",
                     err);
        assert_same_bytes(want, got);
        ckpt_close(src);

        /* and from version 1 back to the legacy format */
        src = open_ok(got);
        const char *back = path_of("back.bin");
        cr_assert_eq(ckpt_convert(back, src, CKPT_FORMAT_LEGACY, 0, err, sizeof(err)), LS_OK,
                     "%s", err);
        assert_same_bytes(legacy, back);
        ckpt_close(src);
    }
}

Test(checkpoint, convert_refuses_q8_sources_bad_groups_and_its_own_path)
{
    ckpt_config_t c = q8_shape(true, 32);
    const char *fp = path_of("fp.bin"), *q8 = path_of("q8.bin"), *out = path_of("out.bin");
    write_ok(fp, c, 3, CKPT_FORMAT_V1);
    write_ok(q8, c, 3, CKPT_FORMAT_Q8_0);
    char err[512] = "";
    ckpt_t *q = open_ok(q8);
    cr_assert_eq(ckpt_convert(out, q, CKPT_FORMAT_Q8_0, 32, err, sizeof(err)), LS_ERR_INVALID);
    cr_assert(strstr(err, "int8 (Q8_0) already") != NULL, "%s", err);
    ckpt_close(q);
    ckpt_t *f = open_ok(fp);
    cr_assert_eq(ckpt_convert(out, f, CKPT_FORMAT_Q8_0, 48, err, sizeof(err)), LS_ERR_INVALID,
                 "48 does not divide dim 64");
    cr_assert_eq(ckpt_convert(fp, f, CKPT_FORMAT_Q8_0, 32, err, sizeof(err)), LS_ERR_INVALID);
    cr_assert(strstr(err, "would replace") != NULL, "%s", err);
    cr_assert_neq(access(out, F_OK), 0, "nothing written on refusal");
    ckpt_close(f);
}

Test(checkpoint, modelmaker_from_converts_and_refuses_shape_flags)
{
    const char *src = path_of("stories.bin"), *out = path_of("stories-q8.bin");
    const char *want = path_of("want-q8.bin");
    const char *const make[] = {"--dim", "128", "--hidden-dim", "256", "--seed", "9", NULL};
    cr_assert_eq(modelmaker(src, make), 0);
    const char *const make_q8[] = {"--dim",  "128", "--hidden-dim", "256", "--seed",
                                   "9",      "--quantize", "q8_0", NULL};
    cr_assert_eq(modelmaker(want, make_q8), 0);
    const char *const from[] = {"--from", src, "--quantize", "q8_0", NULL};
    cr_assert_eq(modelmaker(out, from), 0);
    assert_same_bytes(want, out);
    ckpt_t *ck = open_ok(out);
    cr_assert_eq(ck->cfg.group_size, 64, "export.py's default group");
    ckpt_close(ck);

    const char *q = path_of("refused.bin");
    const char *const with_dim[] = {"--from", src, "--quantize", "q8_0", "--dim", "64", NULL};
    const char *const with_seed[] = {"--from", src, "--seed", "3", NULL};
    const char *const from_q8[] = {"--from", out, "--quantize", "q8_0", NULL};
    const char *const missing[] = {"--from", "/nonexistent/model.bin", NULL};
    cr_assert_eq(modelmaker(q, with_dim), 2);
    cr_assert_eq(modelmaker(q, with_seed), 2);
    cr_assert_eq(modelmaker(q, from_q8), 2);
    cr_assert_eq(modelmaker(q, missing), 1);
    cr_assert_neq(access(q, F_OK), 0, "nothing written on refusal");
}
