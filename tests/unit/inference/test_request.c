/*
 * test_request.c - services/inference/request.c: validation of submits, resolved
 * defaults, prompt building, and the text of generated tokens.  Uses a real
 * tokenizer written by libs/model's tok_make.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "model/tokenizer_make.h"
#include "request.h"
#include "support/tmpdir.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VOCAB 512
#define SEQ_LEN 64

static test_tmpdir_t g_dir;
static char g_path[192];
static tok_t *g_tok;
static inf_limits_t g_lim;

static void setup(void)
{
    cr_assert_eq(test_tmpdir_make(&g_dir, "llmserve-test-request"), 0);
    test_tmpdir_file(&g_dir, "tokenizer.bin", g_path, sizeof(g_path));
    char err[256];
    cr_assert_eq(tok_make(g_path, VOCAB, err, sizeof(err)), LS_OK, "%s", err);
    g_tok = tok_load(g_path, VOCAB, err, sizeof(err));
    cr_assert_not_null(g_tok, "%s", err);
    g_lim.vocab_size = VOCAB;
    g_lim.seq_len = SEQ_LEN;
    g_lim.default_max_tokens = 16;
    g_lim.max_tokens_limit = 100;
    g_lim.max_prompt_bytes = (size_t)SEQ_LEN * inf_longest_piece(g_tok);
}

static void teardown(void)
{
    tok_destroy(g_tok);
    test_tmpdir_remove(&g_dir);
}

TestSuite(request, .init = setup, .fini = teardown);

typedef struct {
    Llmserve__V1__InferenceSubmit sub;
    Llmserve__V1__SamplingParams sp;
} submit_t;

static void submit_init(submit_t *s, const char *id, const char *prompt)
{
    Llmserve__V1__InferenceSubmit sub = LLMSERVE__V1__INFERENCE_SUBMIT__INIT;
    Llmserve__V1__SamplingParams sp = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    s->sub = sub;
    s->sp = sp;
    s->sub.request_id = (char *)id;
    s->sub.prompt = (char *)prompt;
    s->sub.sampling = &s->sp;
}

static inf_request_t *create_ok(const submit_t *s)
{
    inf_request_t *r = NULL;
    char err[256] = "";
    int rc = inf_request_create(&s->sub, g_tok, &g_lim, ls_now_us(), &r, err, sizeof(err));
    cr_assert_eq(rc, LS_OK, "expected success, got %s: %s", ls_strerror(rc), err);
    cr_assert_not_null(r);
    return r;
}

/* Asserts INVALID_ARGUMENT with a message that mentions `why`. */
static void expect_invalid(const submit_t *s, const char *why)
{
    inf_request_t *r = NULL;
    char err[256] = "";
    int rc = inf_request_create(&s->sub, g_tok, &g_lim, ls_now_us(), &r, err, sizeof(err));
    cr_assert_eq(rc, LS_ERR_INVALID, "expected INVALID for %s, got %s", why, ls_strerror(rc));
    cr_assert_null(r);
    cr_assert(strstr(err, why), "message \"%s\" should mention \"%s\"", err, why);
}

/* Asserts the refusal of a prompt the context cannot hold (INVALID_ARGUMENT for the
 * client, told apart so the service can count it), with a message that mentions `why`. */
static void expect_too_long(const submit_t *s, const char *why)
{
    inf_request_t *r = NULL;
    char err[256] = "";
    int rc = inf_request_create(&s->sub, g_tok, &g_lim, ls_now_us(), &r, err, sizeof(err));
    cr_assert_eq(rc, LS_ERR_FULL, "expected FULL for %s, got %s", why, ls_strerror(rc));
    cr_assert_null(r);
    cr_assert(strstr(err, why), "message \"%s\" should mention \"%s\"", err, why);
}

Test(request, an_empty_prompt_is_refused)
{
    submit_t s;
    submit_init(&s, "r", "");
    expect_invalid(&s, "prompt is empty");
}

Test(request, defaults_for_a_minimal_submit)
{
    submit_t s;
    submit_init(&s, "r1", "x");
    s.sub.sampling = NULL;
    inf_request_t *r = create_ok(&s);
    cr_assert_str_eq(r->id, "r1");
    cr_assert_geq(r->n_prompt, 2, "BOS, then the prompt's tokens");
    cr_assert_eq(r->prompt[0], TOK_BOS);
    cr_assert_eq(r->max_tokens, 16, "max_tokens 0 takes the configured default");
    cr_assert_eq(r->sampler.temperature, 0.0f);
    cr_assert_eq(r->sampler.top_p, 1.0f);
    cr_assert_eq(r->sampler.top_k, 0);
    cr_assert_eq(r->deadline_us, INT64_MAX);
    cr_assert_not(r->ignore_eos);
    cr_assert_eq(r->stop.n, 0);
    inf_request_destroy(r);
}

Test(request, prompt_is_tokenized_with_bos)
{
    submit_t s;
    submit_init(&s, "r", "hello world");
    inf_request_t *r = create_ok(&s);
    int want[SEQ_LEN];
    int n = tok_encode(g_tok, "hello world", 11, true, false, want, SEQ_LEN);
    cr_assert_gt(n, 1);
    cr_assert_eq(r->n_prompt, n);
    cr_assert_eq(memcmp(r->prompt, want, (size_t)n * sizeof(int)), 0);
    inf_request_destroy(r);
}

Test(request, chat_messages_render_then_tokenize)
{
    submit_t s;
    submit_init(&s, "r", "");
    Llmserve__V1__ChatMessage m = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    m.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER;
    m.content = "hi";
    Llmserve__V1__ChatMessage *msgs[] = {&m};
    s.sub.messages = msgs;
    s.sub.n_messages = 1;
    inf_request_t *r = create_ok(&s);
    const char *text = "[INST] hi [/INST]";
    int want[SEQ_LEN];
    int n = tok_encode(g_tok, text, strlen(text), true, false, want, SEQ_LEN);
    cr_assert_eq(r->n_prompt, n);
    cr_assert_eq(memcmp(r->prompt, want, (size_t)n * sizeof(int)), 0);
    inf_request_destroy(r);

    s.sub.prompt = "also text";
    expect_invalid(&s, "both");
    s.sub.prompt = "";
    m.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_UNSPECIFIED;
    expect_invalid(&s, "role");
}

Test(request, max_tokens_rules)
{
    submit_t s;
    submit_init(&s, "r", "x");
    s.sp.max_tokens = -1;
    expect_invalid(&s, "max_tokens");
    s.sp.max_tokens = 101;
    expect_invalid(&s, "at most 100");
    s.sp.max_tokens = 100; /* allowed, then clamped to the room the context leaves */
    inf_request_t *r = create_ok(&s);
    cr_assert_eq(r->max_tokens, SEQ_LEN - r->n_prompt);
    inf_request_destroy(r);
    s.sp.max_tokens = 5;
    r = create_ok(&s);
    cr_assert_eq(r->max_tokens, 5);
    inf_request_destroy(r);

    int32_t ids[SEQ_LEN];
    for (int i = 0; i < SEQ_LEN; i++)
        ids[i] = 300 + i;
    s.sub.prompt_tokens = ids;
    s.sub.n_prompt_tokens = 60;
    s.sp.max_tokens = 50;
    r = create_ok(&s);
    cr_assert_eq(r->max_tokens, 4, "clamped to seq_len - prompt");
    cr_assert_eq(r->n_prompt + r->max_tokens, SEQ_LEN);
    inf_request_destroy(r);
}

Test(request, sampling_ranges)
{
    submit_t s;
    submit_init(&s, "r", "x");
    s.sp.temperature = -0.1f;
    expect_invalid(&s, "temperature");
    s.sp.temperature = 2.5f;
    expect_invalid(&s, "temperature");
    s.sp.temperature = NAN;
    expect_invalid(&s, "temperature");
    s.sp.temperature = 2.0f;
    inf_request_t *r = create_ok(&s);
    cr_assert_eq(r->sampler.temperature, 2.0f);
    inf_request_destroy(r);

    s.sp.top_p = -0.5f;
    expect_invalid(&s, "top_p");
    s.sp.top_p = 1.01f;
    expect_invalid(&s, "top_p");
    s.sp.top_p = NAN;
    expect_invalid(&s, "top_p");
    s.sp.top_p = 0.5f;
    r = create_ok(&s);
    cr_assert_eq(r->sampler.top_p, 0.5f);
    inf_request_destroy(r);

    s.sp.top_k = -1;
    expect_invalid(&s, "top_k");
    s.sp.top_k = 100000;
    r = create_ok(&s);
    cr_assert_eq(r->sampler.top_k, VOCAB, "top_k above the vocabulary is clamped");
    inf_request_destroy(r);
}

Test(request, stop_string_rules)
{
    submit_t s;
    submit_init(&s, "r", "x");
    char *nine[9] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
    s.sp.stop = nine;
    s.sp.n_stop = 9;
    expect_invalid(&s, "stop");
    s.sp.n_stop = 8;
    inf_request_t *r = create_ok(&s);
    cr_assert_eq(r->stop.n, 8);
    inf_request_destroy(r);
    char *empty[] = {"ok", ""};
    s.sp.stop = empty;
    s.sp.n_stop = 2;
    expect_invalid(&s, "stop string 1");
    char *bad[] = {"\xff"};
    s.sp.stop = bad;
    s.sp.n_stop = 1;
    expect_invalid(&s, "UTF-8");
}

Test(request, prompt_token_rules)
{
    submit_t s;
    submit_init(&s, "r", "kept for logs");
    int32_t ids[SEQ_LEN + 1];
    for (int i = 0; i <= SEQ_LEN; i++)
        ids[i] = i % VOCAB;
    s.sub.prompt_tokens = ids;
    s.sub.n_prompt_tokens = 3;
    inf_request_t *r = create_ok(&s);
    cr_assert_eq(r->n_prompt, 3, "prompt_tokens win over prompt");
    cr_assert_eq(r->prompt[2], 2);
    inf_request_destroy(r);

    ids[1] = VOCAB;
    expect_invalid(&s, "prompt_tokens[1]");
    ids[1] = -1;
    expect_invalid(&s, "prompt_tokens[1]");
    ids[1] = 1;
    s.sub.n_prompt_tokens = SEQ_LEN;
    expect_too_long(&s, "context");
    s.sub.n_prompt_tokens = SEQ_LEN - 1;
    r = create_ok(&s);
    cr_assert_eq(r->max_tokens, 1);
    inf_request_destroy(r);
}

Test(request, prompt_text_rules)
{
    submit_t s;
    submit_init(&s, "r", "caf\xc3");
    expect_invalid(&s, "UTF-8");

    /* As many bytes as may be tokenized: more tokens than the context holds. */
    size_t n = g_lim.max_prompt_bytes;
    char *longer = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        longer[i] = "the cat sat on a mat "[i % 21];
    longer[n] = '\0';
    s.sub.prompt = longer;
    expect_too_long(&s, "context");
    free(longer);

    size_t huge = g_lim.max_prompt_bytes + 1;
    char *big = malloc(huge + 1);
    memset(big, 'a', huge);
    big[huge] = '\0';
    s.sub.prompt = big;
    expect_too_long(&s, "bytes");
    free(big);
}

Test(request, request_id_rules)
{
    char err[128];
    cr_assert_eq(inf_request_check_id("", err, sizeof(err)), LS_ERR_INVALID);
    cr_assert_eq(inf_request_check_id(NULL, err, sizeof(err)), LS_ERR_INVALID);
    char id[INF_REQUEST_ID_MAX + 2];
    memset(id, 'x', sizeof(id));
    id[INF_REQUEST_ID_MAX + 1] = '\0';
    cr_assert_eq(inf_request_check_id(id, err, sizeof(err)), LS_ERR_INVALID);
    cr_assert(strstr(err, "129"), "%s", err);
    id[INF_REQUEST_ID_MAX] = '\0';
    cr_assert_eq(inf_request_check_id(id, err, sizeof(err)), LS_OK);
    cr_assert_eq(inf_request_check_id("\xc3(", err, sizeof(err)), LS_ERR_INVALID);

    submit_t s;
    submit_init(&s, "", "x");
    expect_invalid(&s, "request_id");
}

Test(request, timeout_sets_the_deadline)
{
    submit_t s;
    submit_init(&s, "r", "x");
    s.sub.timeout_ms = 1500;
    inf_request_t *r = NULL;
    char err[128];
    cr_assert_eq(inf_request_create(&s.sub, g_tok, &g_lim, 1000000, &r, err, sizeof(err)), LS_OK);
    cr_assert_eq(r->arrival_us, 1000000);
    cr_assert_eq(r->deadline_us, 1000000 + 1500000);
    inf_request_destroy(r);
}

Test(request, seed_makes_the_random_stream_repeatable)
{
    submit_t s;
    submit_init(&s, "r", "x");
    s.sp.temperature = 1.0f;
    s.sp.has_seed = true;
    s.sp.seed = 7;
    inf_request_t *a = create_ok(&s);
    inf_request_t *b = create_ok(&s);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(sampler_coin(&a->sampler), sampler_coin(&b->sampler));
    inf_request_destroy(a);
    inf_request_destroy(b);

    s.sp.has_seed = false; /* seed ignored: each request draws its own */
    a = create_ok(&s);
    b = create_ok(&s);
    int same = 0;
    for (int i = 0; i < 8; i++)
        same += sampler_coin(&a->sampler) == sampler_coin(&b->sampler);
    cr_assert_lt(same, 8, "two unseeded requests drew the same random stream");
    inf_request_destroy(a);
    inf_request_destroy(b);
}

Test(request, eos_and_bos_end_generation_unless_ignored)
{
    submit_t s;
    submit_init(&s, "r", "x");
    inf_request_t *r = create_ok(&s);
    cr_assert(inf_request_is_eos(r, TOK_EOS));
    cr_assert(inf_request_is_eos(r, TOK_BOS));
    cr_assert_not(inf_request_is_eos(r, 300));
    inf_request_destroy(r);
    s.sp.ignore_eos = true;
    r = create_ok(&s);
    cr_assert_not(inf_request_is_eos(r, TOK_EOS));
    inf_request_destroy(r);
}

/* Decodes tokens[1..n) as generated text (tokens[0] is the first "prev"). */
static size_t decode(inf_request_t *r, const int *tokens, int n, char *out, bool *stopped)
{
    char utf8[256], buf[1024];
    inf_text_scratch_t sc = {utf8, sizeof(utf8)};
    size_t total = 0;
    *stopped = false;
    for (int i = 1; i < n && !*stopped; i++) {
        size_t len = inf_request_push_text(r, g_tok, tokens[i - 1], tokens[i], &sc, buf,
                                           sizeof(buf), stopped);
        memcpy(out + total, buf, len);
        total += len;
    }
    if (!*stopped) {
        size_t len = inf_request_flush_text(r, &sc, buf, sizeof(buf), stopped);
        memcpy(out + total, buf, len);
        total += len;
    }
    out[total] = '\0';
    return total;
}

Test(request, token_text_round_trips_and_honours_stop_strings)
{
    int ids[SEQ_LEN];
    const char *text = "the cat sat on the mat";
    int n = tok_encode(g_tok, text, strlen(text), true, false, ids, SEQ_LEN);
    cr_assert_gt(n, 2);

    submit_t s;
    submit_init(&s, "r", "x");
    inf_request_t *r = create_ok(&s);
    char out[256];
    bool stopped;
    decode(r, ids, n, out, &stopped);
    cr_assert_not(stopped);
    cr_assert_str_eq(out, text, "the space SentencePiece adds after BOS is dropped");
    inf_request_destroy(r);

    char *stops[] = {"on th"};
    s.sp.stop = stops;
    s.sp.n_stop = 1;
    r = create_ok(&s);
    decode(r, ids, n, out, &stopped);
    cr_assert(stopped);
    cr_assert_str_eq(out, "the cat sat ");
    inf_request_destroy(r);
}

Test(request, split_characters_are_held_until_complete)
{
    /* "é" as two byte tokens (<0xC3> <0xA9>, ids 3 + byte). */
    int ids[] = {300, 3 + 0xC3, 3 + 0xA9};
    submit_t s;
    submit_init(&s, "r", "x");
    inf_request_t *r = create_ok(&s);
    char utf8[64], buf[512];
    inf_text_scratch_t sc = {utf8, sizeof(utf8)};
    bool stopped = false;
    size_t len = inf_request_push_text(r, g_tok, ids[0], ids[1], &sc, buf, sizeof(buf), &stopped);
    cr_assert_eq(len, 0, "half a character must not go out");
    len = inf_request_push_text(r, g_tok, ids[1], ids[2], &sc, buf, sizeof(buf), &stopped);
    cr_assert_eq(len, 2);
    cr_assert_eq(memcmp(buf, "\xc3\xa9", 2), 0);

    /* A dangling lead byte at the end comes out as U+FFFD, never as a broken byte. */
    len = inf_request_push_text(r, g_tok, ids[2], 3 + 0xE2, &sc, buf, sizeof(buf), &stopped);
    cr_assert_eq(len, 0);
    len = inf_request_flush_text(r, &sc, buf, sizeof(buf), &stopped);
    cr_assert_eq(len, 3);
    cr_assert_eq(memcmp(buf, "\xef\xbf\xbd", 3), 0);
    inf_request_destroy(r);
}

Test(request, priority_and_resume_token_rules)
{
    submit_t s;
    submit_init(&s, "r", "hello");
    inf_request_t *r = create_ok(&s);
    cr_assert_eq(r->prio, INF_PRIO_NORMAL, "unspecified is normal");
    inf_request_destroy(r);
    s.sub.priority = LLMSERVE__V1__PRIORITY__PRIORITY_BATCH;
    r = create_ok(&s);
    cr_assert_eq(r->prio, INF_PRIO_BATCH);
    inf_request_destroy(r);
    s.sub.priority = (Llmserve__V1__Priority)4;
    expect_invalid(&s, "priority");
    s.sub.priority = LLMSERVE__V1__PRIORITY__PRIORITY_INTERACTIVE;

    int32_t bad[] = {300, g_lim.vocab_size};
    s.sub.resume_tokens = bad;
    s.sub.n_resume_tokens = 2;
    expect_invalid(&s, "resume_tokens[1]");
    int32_t neg[] = {-1};
    s.sub.resume_tokens = neg;
    s.sub.n_resume_tokens = 1;
    expect_invalid(&s, "resume_tokens[0]");

    /* Good ones follow the prompt, count as generated and advance a seeded sampler. */
    int32_t good[] = {300, 301, 302};
    s.sub.resume_tokens = good;
    s.sub.n_resume_tokens = 3;
    s.sp.has_seed = true;
    s.sp.seed = 99;
    s.sp.max_tokens = 10;
    s.sp.ignore_eos = true;
    r = create_ok(&s);
    cr_assert_eq(r->n_resume, 3);
    cr_assert_eq(r->n_generated, 3);
    cr_assert_eq(r->resume_end, 0);
    cr_assert_eq(r->last_token, 302);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(r->prompt[r->n_prompt + i], good[i]);
    sampler_t fresh;
    sampler_init(&fresh, 0.0f, 1.0f, 0, 99);
    for (int i = 0; i < 3; i++)
        (void)sampler_coin(&fresh);
    cr_assert_eq(sampler_coin(&fresh), sampler_coin(&r->sampler), "three draws skipped");
    inf_request_destroy(r);
    s.sp.max_tokens = 3;
    r = create_ok(&s);
    cr_assert_eq(r->resume_end, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH);
    inf_request_destroy(r);
}
