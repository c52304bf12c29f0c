/*
 * test_inference_embed.c - Inference.Embed on the real llmserve-inference process, over
 * models made at test time (fp32 and Q8_0): the vectors against the checkpoint's own
 * table read here, bit-identical repeats whatever the batch, unit norm, the model's
 * dim, and every bad input with its status.
 *
 * The weights are random, so nothing here can say whether the embeddings are any good
 * for meaning; only that they are what the design says they are.
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "llmserve/v1/inference.pb-c.h"
#include "model/checkpoint.h"
#include "model/tokenizer.h"
#include "rpc/client.h"
#include "support/channel.h"
#include "support/inference_proc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EMBED_METHOD "/llmserve.v1.Inference/Embed"

static test_inference_t g_inf;
static rpc_client_t *g_client;
static rpc_channel_t *g_ch;

static void start_shape(const char *const *shape)
{
    cr_assert_eq(test_inference_make(&g_inf, shape), 0, "modelmaker failed");
    cr_assert_eq(test_inference_start(&g_inf, 0, NULL), 0, "inference server did not start");
    g_client = rpc_client_create(1);
    g_ch = test_channel_to(g_client, g_inf.proc.port, NULL);
    cr_assert_not_null(g_ch);
}

static const char *const TINY[] = {"--preset", "tiny", NULL}; /* dim 64, vocab 512, seq 256 */
static const char *const Q8[] = {"--preset",     "tiny", "--dim",      "128",
                                 "--hidden-dim", "384",  "--quantize", "q8_0",
                                 "--group-size", "64",   NULL};

static void start_tiny(void)
{
    start_shape(TINY);
}

static void start_q8(void)
{
    start_shape(Q8);
}

static void stop_all(void)
{
    rpc_channel_destroy(g_ch);
    g_ch = NULL;
    rpc_client_destroy(g_client);
    g_client = NULL;
    int status = test_inference_destroy(&g_inf);
    cr_expect_eq(status, 0, "inference server exit status %d", status);
}

/* Embed of texts (n of them) for model; returns the reply on OK (caller frees it), NULL
 * otherwise with the status in *st. */
static Llmserve__V1__EmbedResponse *embed_call(const char *model, const char *const *texts,
                                               size_t n, rpc_status_t *st)
{
    Llmserve__V1__EmbedRequest req = LLMSERVE__V1__EMBED_REQUEST__INIT;
    req.model = (char *)model;
    req.texts = (char **)texts;
    req.n_texts = n;
    ProtobufCMessage *resp = NULL;
    rpc_call_opts_t opts = {.timeout_us = 10000000, .wait_for_ready = true};
    cr_assert_eq(rpc_channel_unary(g_ch, EMBED_METHOD, &req.base,
                                   &llmserve__v1__embed_response__descriptor, &opts, &resp, st),
                 LS_OK);
    return st->code == GRPC_STATUS_OK ? (Llmserve__V1__EmbedResponse *)resp : NULL;
}

/* The embedding of one text, asserting success; copies dim floats into out. */
static void embed_one(const char *text, float *out, size_t dim)
{
    rpc_status_t st;
    Llmserve__V1__EmbedResponse *r = embed_call("", &text, 1, &st);
    cr_assert_not_null(r, "Embed \"%s\": %d %s", text, st.code, st.details);
    cr_assert_eq(r->n_embeddings, 1);
    cr_assert_eq(r->embeddings[0]->n_values, dim);
    memcpy(out, r->embeddings[0]->values, dim * sizeof(float));
    llmserve__v1__embed_response__free_unpacked(r, NULL);
}

/* The status code of an Embed that must fail, with its details in why. */
static int embed_code(const char *model, const char *const *texts, size_t n, char *why,
                      size_t why_len)
{
    rpc_status_t st;
    Llmserve__V1__EmbedResponse *r = embed_call(model, texts, n, &st);
    if (r)
        llmserve__v1__embed_response__free_unpacked(r, NULL);
    snprintf(why, why_len, "%s", st.details);
    return st.code;
}

/* What the design says a text's embedding is, computed here from the files: the mean
 * of the table rows of its tokens after BOS, scaled to unit length. */
static void expected_embedding(const char *text, float *out, int *n_tokens)
{
    char err[256];
    ckpt_t *ck = ckpt_open(g_inf.model, err, sizeof(err));
    cr_assert_not_null(ck, "%s", err);
    tok_t *tok = tok_load(g_inf.tokenizer, ck->cfg.vocab_size, err, sizeof(err));
    cr_assert_not_null(tok, "%s", err);
    int dim = ck->cfg.dim;
    int ids[512];
    int n = tok_encode(tok, text, strlen(text), true, false, ids, 512);
    cr_assert_gt(n, 1);
    cr_assert_eq(ids[0], TOK_BOS);
    double *sum = calloc((size_t)dim, sizeof(double));
    for (int i = 1; i < n; i++)
        for (int j = 0; j < dim; j++) {
            size_t at = (size_t)ids[i] * (size_t)dim + (size_t)j;
            float v = ck->format_version == 2
                          ? (float)ck->q8.token_embedding.q[at] *
                                ck->q8.token_embedding.s[at / (size_t)ck->cfg.group_size]
                          : ck->w.token_embedding[at];
            sum[j] += v;
        }
    double ss = 0;
    for (int j = 0; j < dim; j++)
        ss += sum[j] * sum[j];
    for (int j = 0; j < dim; j++)
        out[j] = (float)(sum[j] / sqrt(ss));
    *n_tokens = n - 1;
    free(sum);
    tok_destroy(tok);
    ckpt_close(ck);
}

static double norm_of(const float *v, size_t dim)
{
    double ss = 0;
    for (size_t j = 0; j < dim; j++)
        ss += (double)v[j] * v[j];
    return sqrt(ss);
}

/* The checks both models share: values against the files, dim, norm, repeats. */
static void check_vectors(uint32_t want_dim)
{
    static const char *const texts[] = {"once upon a time", "the old tree",
                                        "a little dog ran to the park"};
    rpc_status_t st;
    Llmserve__V1__EmbedResponse *r = embed_call("", texts, 3, &st);
    cr_assert_not_null(r, "%d %s", st.code, st.details);
    cr_assert_str_eq(r->model, "model", "the checkpoint's file name, as Info says");
    cr_assert_eq(r->dim, want_dim);
    cr_assert_eq(r->n_embeddings, 3);
    for (size_t i = 0; i < 3; i++) {
        const Llmserve__V1__Embedding *e = r->embeddings[i];
        cr_assert_eq(e->n_values, want_dim);
        cr_assert_float_eq(norm_of(e->values, want_dim), 1.0, 1e-5, "text %zu", i);
        float want[256];
        int n_tokens = 0;
        expected_embedding(texts[i], want, &n_tokens);
        cr_assert_eq(e->tokens, (uint32_t)n_tokens, "text %zu: %u tokens, want %d", i, e->tokens,
                     n_tokens);
        for (uint32_t j = 0; j < want_dim; j++)
            cr_assert_float_eq(e->values[j], want[j], 1e-6, "text %zu value %u", i, j);
    }
    cr_assert_neq(
        memcmp(r->embeddings[0]->values, r->embeddings[1]->values, want_dim * sizeof(float)), 0,
        "different texts, different vectors");
    llmserve__v1__embed_response__free_unpacked(r, NULL);
}

/* The same text alone, twice, and at every position of batches of other texts (the
 * largest batch allowed among them): the same bits every time. */
static void check_batch_invariance(size_t dim)
{
    static const char *const A = "the cat sat on the warm mat";
    float alone[256], again[256];
    embed_one(A, alone, dim);
    embed_one(A, again, dim);
    cr_assert_eq(memcmp(alone, again, dim * sizeof(float)), 0, "same text twice");

    static const char *const others[] = {"once upon a time", "x", "she said hello",
                                         "a long way home through the dark wood"};
    enum { BIG = 256 };
    const char **batch = calloc(BIG, sizeof(char *));
    size_t sizes[] = {2, 5, BIG};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t n = sizes[s];
        size_t positions[] = {0, n / 2, n - 1};
        for (size_t p = 0; p < 3; p++) {
            for (size_t i = 0; i < n; i++)
                batch[i] = others[i % 4];
            batch[positions[p]] = A;
            rpc_status_t st;
            Llmserve__V1__EmbedResponse *r = embed_call("", batch, n, &st);
            cr_assert_not_null(r, "batch of %zu: %d %s", n, st.code, st.details);
            cr_assert_eq(r->n_embeddings, n);
            cr_assert_eq(memcmp(r->embeddings[positions[p]]->values, alone, dim * sizeof(float)), 0,
                         "batch of %zu, position %zu: not the bits of the text alone", n,
                         positions[p]);
            llmserve__v1__embed_response__free_unpacked(r, NULL);
        }
    }
    free(batch);
}

TestSuite(embed, .init = start_tiny, .fini = stop_all, .timeout = 240);

Test(embed, vectors_are_the_unit_mean_of_the_table_rows)
{
    check_vectors(64);
}

Test(embed, same_bits_alone_twice_and_anywhere_in_a_batch)
{
    check_batch_invariance(64);
}

Test(embed, the_served_model_by_name_or_empty_other_names_not_found)
{
    static const char *const t[] = {"hello there"};
    rpc_status_t st;
    Llmserve__V1__EmbedResponse *r = embed_call("model", t, 1, &st);
    cr_assert_not_null(r, "%d %s", st.code, st.details);
    llmserve__v1__embed_response__free_unpacked(r, NULL);
    char why[256];
    cr_assert_eq(embed_code("large", t, 1, why, sizeof(why)), GRPC_STATUS_NOT_FOUND, "%s", why);
    cr_assert(strstr(why, "\"large\"") && strstr(why, "\"model\""), "%s", why);
}

/* The mean of table rows cannot see word order: why the cache test can make a semantic
 * hit from two prompts the exact key tells apart. */
Test(embed, word_order_gives_the_same_vector)
{
    float a[64], b[64];
    embed_one("red blue green", a, 64);
    embed_one("green red blue", b, 64);
    cr_assert_eq(memcmp(a, b, sizeof(a)), 0);
}

Test(embed, bad_input_gets_invalid_argument_and_the_server_lives)
{
    char why[256];
    cr_assert_eq(embed_code("", NULL, 0, why, sizeof(why)), GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(why, "texts is empty"), "%s", why);

    const char **many = calloc(257, sizeof(char *));
    for (int i = 0; i < 257; i++)
        many[i] = "hi";
    cr_assert_eq(embed_code("", many, 257, why, sizeof(why)), GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(why, "257 texts (at most 256"), "%s", why);
    free(many);

    static const char *const with_empty[] = {"fine", "", "fine"};
    cr_assert_eq(embed_code("", with_empty, 3, why, sizeof(why)), GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(why, "texts[1] is empty"), "%s", why);

    static const char *const bad_utf8[] = {"ok", "caf\xc3(", NULL};
    cr_assert_eq(embed_code("", bad_utf8, 2, why, sizeof(why)), GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(why, "texts[1] is not valid UTF-8"), "%s", why);

    /* seq_len is 256: 300 words of at least one token each cannot fit. */
    char *long_text = malloc(300 * 4 + 1);
    long_text[0] = '\0';
    for (int i = 0; i < 300; i++)
        strcat(long_text, i % 2 ? "dog " : "cat ");
    const char *const too_long[] = {long_text};
    cr_assert_eq(embed_code("", too_long, 1, why, sizeof(why)), GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(why, "texts[0]") && strstr(why, "256"), "%s", why);
    free(long_text);

    /* An undecodable request. */
    static const unsigned char junk[] = {0x12, 0xff, 0xff, 0xff, 0xff, 0x0f};
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_call_opts_t opts = {.timeout_us = 5000000, .wait_for_ready = true};
    cr_assert_eq(rpc_channel_unary_raw(g_ch, EMBED_METHOD, junk, sizeof(junk),
                                       &llmserve__v1__embed_response__descriptor, &opts, &resp,
                                       &st),
                 LS_OK);
    cr_assert_eq(st.code, GRPC_STATUS_INVALID_ARGUMENT, "%d %s", st.code, st.details);

    /* Still serving. */
    float v[64];
    embed_one("still here", v, 64);
}

TestSuite(embed_q8, .init = start_q8, .fini = stop_all, .timeout = 240);

Test(embed_q8, vectors_are_the_unit_mean_of_the_dequantized_rows)
{
    check_vectors(128);
}

Test(embed_q8, same_bits_alone_twice_and_anywhere_in_a_batch)
{
    check_batch_invariance(128);
}
