/*
 * test_embed.c - services/inference/embed.c over checkpoints built in memory (a table
 * whose rows are known: fp32, and Q8_0 with known scales) and a tokenizer made by
 * tok_make: BOS left out of the mean, the arithmetic, the limits and each refusal.
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "embed.h"
#include "model/tokenizer_make.h"
#include "support/tmpdir.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define VOCAB 512
#define DIM 8
#define SEQ_LEN 16
#define GROUP 4

static test_tmpdir_t g_dir;
static tok_t *g_tok;
static float g_table[VOCAB * DIM];
static int8_t g_q[VOCAB * DIM];
static float g_s[VOCAB * DIM / GROUP];

static void setup(void)
{
    cr_assert_eq(test_tmpdir_make(&g_dir, "llmserve-test-embed"), 0);
    char path[192], err[256];
    test_tmpdir_file(&g_dir, "tok.bin", path, sizeof(path));
    cr_assert_eq(tok_make(path, VOCAB, err, sizeof(err)), LS_OK, "%s", err);
    g_tok = tok_load(path, VOCAB, err, sizeof(err));
    cr_assert_not_null(g_tok, "%s", err);
    /* Row id: value j is id + j + 1, except row 0 (<unk>) all zero. */
    for (int id = 0; id < VOCAB; id++)
        for (int j = 0; j < DIM; j++) {
            g_table[id * DIM + j] = id == 0 ? 0.0f : (float)(id % 7 + j + 1);
            g_q[id * DIM + j] = (int8_t)(id == 0 ? 0 : (id % 5) - j);
        }
    for (int g = 0; g < VOCAB * DIM / GROUP; g++)
        g_s[g] = 0.25f * (float)(g % 3 + 1);
}

static void teardown(void)
{
    tok_destroy(g_tok);
    test_tmpdir_remove(&g_dir);
}

static ckpt_t make_ckpt(int format_version)
{
    ckpt_t ck;
    memset(&ck, 0, sizeof(ck));
    ck.cfg.dim = DIM;
    ck.cfg.vocab_size = VOCAB;
    ck.cfg.seq_len = SEQ_LEN;
    ck.format_version = format_version;
    if (format_version == 2) {
        ck.cfg.group_size = GROUP;
        ck.q8.token_embedding.q = g_q;
        ck.q8.token_embedding.s = g_s;
    } else {
        ck.w.token_embedding = g_table;
    }
    return ck;
}

/* Row id of the test table as the forward pass reads it. */
static float row_value(const ckpt_t *ck, int id, int j)
{
    if (ck->format_version != 2)
        return g_table[id * DIM + j];
    return (float)g_q[id * DIM + j] * g_s[(id * DIM + j) / GROUP];
}

/* What embed.h promises: the unit mean of the rows after BOS. */
static void check_text(const ckpt_t *ck, const char *text)
{
    inf_embed_scratch_t sc;
    cr_assert_eq(inf_embed_scratch_init(&sc, ck), LS_OK);
    float out[DIM];
    int n_tokens = 0;
    char err[256];
    cr_assert_eq(
        inf_embed_text(ck, g_tok, text, strlen(text), 0, &sc, out, &n_tokens, err, sizeof(err)),
        LS_OK, "%s", err);
    int ids[SEQ_LEN];
    int n = tok_encode(g_tok, text, strlen(text), true, false, ids, SEQ_LEN);
    cr_assert_eq(ids[0], TOK_BOS);
    cr_assert_eq(n_tokens, n - 1, "BOS is not counted");
    double mean[DIM] = {0}, ss = 0;
    for (int i = 1; i < n; i++)
        for (int j = 0; j < DIM; j++)
            mean[j] += row_value(ck, ids[i], j);
    for (int j = 0; j < DIM; j++)
        ss += mean[j] * mean[j];
    for (int j = 0; j < DIM; j++)
        cr_assert_float_eq(out[j], mean[j] / sqrt(ss), 1e-6, "value %d of \"%s\"", j, text);
    inf_embed_scratch_free(&sc);
}

TestSuite(embed, .init = setup, .fini = teardown);

Test(embed, fp32_rows_after_bos_averaged_and_normalized)
{
    ckpt_t ck = make_ckpt(1);
    check_text(&ck, "a");
    check_text(&ck, "the cat sat");
    check_text(&ck, "caf\xc3\xa9 \xe2\x82\xac");
}

Test(embed, q8_rows_dequantized_as_the_forward_pass_does)
{
    ckpt_t ck = make_ckpt(2);
    check_text(&ck, "the cat sat");
    check_text(&ck, "once upon a time");
}

Test(embed, refusals)
{
    ckpt_t ck = make_ckpt(1);
    inf_embed_scratch_t sc;
    cr_assert_eq(inf_embed_scratch_init(&sc, &ck), LS_OK);
    float out[DIM];
    for (int j = 0; j < DIM; j++)
        out[j] = 42.0f;
    int n = -1;
    char err[256];
    cr_assert_eq(inf_embed_text(&ck, g_tok, "", 0, 0, &sc, out, &n, err, sizeof(err)),
                 LS_ERR_INVALID);
    cr_assert_str_eq(err, "is empty");
    cr_assert_eq(inf_embed_text(&ck, g_tok, "\xff", 1, 0, &sc, out, &n, err, sizeof(err)),
                 LS_ERR_INVALID);
    cr_assert_str_eq(err, "is not valid UTF-8");
    /* SEQ_LEN is 16 tokens with BOS: 20 words cannot fit. */
    const char *words = "a b c d e f g h i j k l m n o p q r s t";
    cr_assert_eq(
        inf_embed_text(&ck, g_tok, words, strlen(words), 0, &sc, out, &n, err, sizeof(err)),
        LS_ERR_INVALID);
    cr_assert(strstr(err, "more than 16 tokens"), "%s", err);
    /* Over max_bytes: refused before the tokenizer runs. */
    cr_assert_eq(inf_embed_text(&ck, g_tok, "hello", 5, 4, &sc, out, &n, err, sizeof(err)),
                 LS_ERR_INVALID);
    cr_assert(strstr(err, "5 bytes"), "%s", err);
    for (int j = 0; j < DIM; j++)
        cr_assert_eq(out[j], 42.0f, "out is written only on LS_OK");
    cr_assert_eq(n, -1);
    inf_embed_scratch_free(&sc);
}

Test(embed, a_zero_mean_has_no_direction)
{
    /* Every row zero: any text's mean is the zero vector, which has no unit length. */
    static float zeros[VOCAB * DIM];
    ckpt_t ck = make_ckpt(1);
    ck.w.token_embedding = zeros;
    inf_embed_scratch_t sc;
    cr_assert_eq(inf_embed_scratch_init(&sc, &ck), LS_OK);
    float out[DIM];
    int n = 0;
    char err[256];
    cr_assert_eq(inf_embed_text(&ck, g_tok, "the cat", 7, 0, &sc, out, &n, err, sizeof(err)),
                 LS_ERR_INVALID);
    cr_assert(strstr(err, "no direction"), "%s", err);
    inf_embed_scratch_free(&sc);
}

Test(embed, a_text_that_fills_the_context_exactly_fits)
{
    ckpt_t ck = make_ckpt(1);
    inf_embed_scratch_t sc;
    cr_assert_eq(inf_embed_scratch_init(&sc, &ck), LS_OK);
    /* Find a run of words whose tokens with BOS are exactly SEQ_LEN. */
    char text[256] = "";
    int ids[64];
    int n = 0;
    while (n < SEQ_LEN) {
        strcat(text, n == 0 ? "a" : " a");
        n = tok_encode(g_tok, text, strlen(text), true, false, ids, 64);
    }
    cr_assert_eq(n, SEQ_LEN, "each \" a\" is one token here");
    float out[DIM];
    int n_tokens = 0;
    char err[256];
    cr_assert_eq(
        inf_embed_text(&ck, g_tok, text, strlen(text), 0, &sc, out, &n_tokens, err, sizeof(err)),
        LS_OK, "%s", err);
    cr_assert_eq(n_tokens, SEQ_LEN - 1);
    strcat(text, " a");
    cr_assert_eq(
        inf_embed_text(&ck, g_tok, text, strlen(text), 0, &sc, out, &n_tokens, err, sizeof(err)),
        LS_ERR_INVALID, "one token more does not fit");
    inf_embed_scratch_free(&sc);
}
