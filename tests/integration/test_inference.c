/*
 * test_inference.c - the real llmserve-inference process on loopback, serving models
 * made at test time by llmserve-modelmaker, driven by libs/rpc's client.
 *
 * Two shapes: "tiny" (fast, for counts and determinism) and "slow" (wider, deeper and
 * a longer context, so one request runs long enough to be cancelled, time out or be
 * caught by a shutdown or a device failure).
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "grpc/health/v1/health.pb-c.h"
#include "llmserve/v1/inference.pb-c.h"
#include "rpc/client.h"
#include "support/channel.h"
#include "support/health_watch.h"
#include "support/inference_stream.h"
#include "support/proc.h"
#include "support/tmpdir.h"

#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DONE(reason) LLMSERVE__V1__FINISH_REASON__FINISH_REASON_##reason

static test_proc_t g_server;
static rpc_client_t *g_client;
static rpc_channel_t *g_ch;
static test_tmpdir_t g_dir;
static char g_model[192], g_tokfile[192];

/* ---- model and server ----------------------------------------------------------------- */

static void run_modelmaker(const char *const *shape)
{
    cr_assert_eq(test_tmpdir_make(&g_dir, "llmserve-test-inference"), 0);
    test_tmpdir_file(&g_dir, "model.bin", g_model, sizeof(g_model));
    test_tmpdir_file(&g_dir, "tokenizer.bin", g_tokfile, sizeof(g_tokfile));
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)test_env_path("LLMSERVE_MODELMAKER");
    argv[n++] = "--out";
    argv[n++] = g_model;
    argv[n++] = "--tokenizer-out";
    argv[n++] = g_tokfile;
    for (; shape && *shape && n < 30; shape++)
        argv[n++] = (char *)*shape;
    argv[n] = NULL;
    int status = test_run(argv, 120000);
    cr_assert_eq(status, 0, "modelmaker failed: %d", status);
}

static const char *const TINY[] = {"--preset", "tiny", NULL}; /* seq_len 256, vocab 512 */
/* Slow enough that 1000 tokens take seconds on one thread of a fast CPU (~2.5 ms a token
 * with AVX-512), so cancels, deadlines and admission can be watched mid-generation. */
static const char *const SLOW[] = {"--preset",   "tiny",     "--dim",     "384",     "--hidden-dim",
                                   "1024",       "--layers", "8",         "--heads", "6",
                                   "--kv-heads", "3",        "--seq-len", "1024",    NULL};

/* The compute backend under test: cpu, or cuda with LLMSERVE_TEST_BACKEND=cuda
 * (tools/gpu-check.sh on a GPU machine). */
static const char *test_backend(void)
{
    const char *b = getenv("LLMSERVE_TEST_BACKEND");
    return b && strcmp(b, "cuda") == 0 ? "cuda" : "cpu";
}

/* Starts the server on the model run_modelmaker made, with extra flags. */
static void launch(const char *const *extra)
{
    char *argv[48];
    int n = 0;
    argv[n++] = (char *)test_env_path("LLMSERVE_INFERENCE");
    const char *base[] = {"--listen",
                          "127.0.0.1:0",
                          "--model",
                          g_model,
                          "--tokenizer",
                          g_tokfile,
                          "--pool",
                          "small",
                          "--model-version",
                          "v7",
                          "--cpu-threads",
                          "1",
                          "--rpc-threads",
                          "2",
                          "--backend",
                          test_backend(),
                          NULL};
    for (const char *const *a = base; *a; a++)
        argv[n++] = (char *)*a;
    for (; extra && *extra && n < 46; extra++)
        argv[n++] = (char *)*extra;
    argv[n] = NULL;
    cr_assert_eq(test_proc_start(&g_server, argv, 30000), 0, "inference server did not start");
    g_client = rpc_client_create(1);
    cr_assert_not_null(g_client);
    g_ch = test_channel_to(g_client, g_server.port, NULL);
    cr_assert_not_null(g_ch);
}

static void start_with(const char *const *shape, const char *const *extra)
{
    run_modelmaker(shape);
    launch(extra);
}

/* Stops the server and its client, keeping the model for another launch. */
static void stop_server(void)
{
    rpc_channel_destroy(g_ch);
    g_ch = NULL;
    rpc_client_destroy(g_client);
    g_client = NULL;
    int status = test_proc_stop(&g_server, SIGTERM, 30000);
    cr_assert_eq(status, 0, "inference server exit status %d", status);
    g_server.pid = 0;
}

/* Stops the server (if still running) and checks it exited 0: leaks and crashes at
 * shutdown fail here. */
static void stop_all(void)
{
    rpc_channel_destroy(g_ch);
    g_ch = NULL;
    rpc_client_destroy(g_client);
    g_client = NULL;
    if (g_server.pid > 0) {
        int status = test_proc_stop(&g_server, SIGTERM, 30000);
        cr_expect_eq(status, 0, "inference server exit status %d", status);
    }
    test_tmpdir_remove(&g_dir);
}

/* A Generate stream to the server: wait for ready, no deadline. */
static inference_stream_t *gen_open(void)
{
    return inference_stream_open(g_ch, NULL);
}

/* ---- tests: the tiny model ------------------------------------------------------------ */

static void start_tiny(void)
{
    static const char *const extra[] = {"--max-batch",        "8",   "--max-queue", "64",
                                        "--max-tokens-limit", "200", NULL};
    start_with(TINY, extra);
}

TestSuite(inference, .init = start_tiny, .fini = stop_all, .timeout = 240);

/* Inference.Info of the server under test (free with protobuf_c_message_free_unpacked). */
static Llmserve__V1__InfoResponse *info_call(void)
{
    Llmserve__V1__InfoRequest req = LLMSERVE__V1__INFO_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_call_opts_t opts = {.timeout_us = 5000000, .wait_for_ready = true};
    cr_assert_eq(rpc_channel_unary(g_ch, "/llmserve.v1.Inference/Info", &req.base,
                                   &llmserve__v1__info_response__descriptor, &opts, &resp, &st),
                 LS_OK);
    cr_assert_eq(st.code, GRPC_STATUS_OK, "%s", st.details);
    return (Llmserve__V1__InfoResponse *)resp;
}

Test(inference, info_reports_shape_backend_and_limits)
{
    Llmserve__V1__InfoResponse *info = info_call();
    cr_assert_str_eq(info->model, "model", "checkpoint file name without extension");
    cr_assert_str_eq(info->model_version, "v7");
    cr_assert_str_eq(info->pool, "small");
    cr_assert_eq(info->dim, 64);
    cr_assert_eq(info->hidden_dim, 172);
    cr_assert_eq(info->n_layers, 2);
    cr_assert_eq(info->n_heads, 4);
    cr_assert_eq(info->n_kv_heads, 2);
    cr_assert_eq(info->vocab_size, 512);
    cr_assert_eq(info->seq_len, 256);
    cr_assert_str_eq(info->backend, test_backend());
    cr_assert_neq(info->device[0], '\0', "device must be described");
    cr_assert_eq(info->max_batch, 8);
    cr_assert_eq(info->max_queue, 64);
    cr_assert_eq(info->kv_budget_tokens, 8 * 256, "default budget: max_batch * seq_len");
    protobuf_c_message_free_unpacked(&info->base, NULL);
}

static int health(const char *service)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_call_opts_t opts = {.timeout_us = 5000000, .wait_for_ready = true};
    cr_assert_eq(rpc_channel_unary(g_ch, "/grpc.health.v1.Health/Check", &req.base,
                                   &grpc__health__v1__health_check_response__descriptor, &opts,
                                   &resp, &st),
                 LS_OK);
    cr_assert_eq(st.code, GRPC_STATUS_OK, "%s", st.details);
    int status = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
    protobuf_c_message_free_unpacked(resp, NULL);
    return status;
}

Test(inference, health_is_serving_once_loaded)
{
    cr_assert_eq(health(""), GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    cr_assert_eq(health("llmserve.v1.Inference"),
                 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
}

Test(inference, thirty_two_concurrent_streams_complete_with_exact_counts)
{
    enum { N = 32 };
    inference_stream_t *gens[N];
    for (int i = 0; i < N; i++) {
        gens[i] = gen_open();
        inference_stream_req_t p = {.prompt = "once upon a time",
                                    .max_tokens = 10 + i,
                                    .ignore_eos = true,
                                    .temperature = i % 3 ? 0.9f : 0.0f};
        inference_stream_submit(gens[i], "only", &p);
        cr_assert_eq(inference_stream_close_send(gens[i]), LS_OK);
    }
    for (int i = 0; i < N; i++) {
        inference_stream_rec_t r = inference_stream_wait(gens[i], "only", 0, 120000);
        cr_assert(inference_stream_wait_end(gens[i], 10000),
                  "stream %d did not end after its request", i);
        rpc_status_t st = inference_stream_status(gens[i]);
        cr_assert_eq(st.code, GRPC_STATUS_OK, "stream %d: %s", i, st.details);
        cr_assert(r.order_ok, "stream %d: events out of order", i);
        cr_assert_eq(r.started, 1);
        cr_assert_eq(r.terminal, 1);
        cr_assert_eq(r.error, 0, "stream %d: %d %s", i, r.error, r.msg);
        cr_assert_eq(r.reason, DONE(LENGTH));
        cr_assert_eq(r.tokens, 10 + i, "stream %d: %d tokens", i, r.tokens);
        cr_assert_eq(r.completion_tokens, (uint32_t)(10 + i));
        cr_assert_eq(r.usage_prompt_tokens, r.prompt_tokens);
        cr_assert_gt(r.ttft_us, 0);
        cr_assert_geq(r.total_us, r.ttft_us);
        cr_assert_leq(r.batch_size, 8);
        inference_stream_destroy(gens[i]);
    }
}

Test(inference, many_requests_multiplexed_on_one_stream)
{
    enum { N = 40 };
    inference_stream_t *g = gen_open();
    Llmserve__V1__ChatMessage sys = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    sys.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_SYSTEM;
    sys.content = "Be brief.";
    Llmserve__V1__ChatMessage user = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    user.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER;
    user.content = "Tell me a story.";
    Llmserve__V1__ChatMessage *chat[] = {&sys, &user};
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "m%d", i);
        inference_stream_req_t p = {
            .prompt = i % 4 == 3 ? NULL : "the sun", .max_tokens = 5 + i, .ignore_eos = true};
        if (i % 4 == 3) {
            p.messages = chat;
            p.n_messages = 2;
        }
        inference_stream_submit(g, id, &p);
    }
    cr_assert_eq(inference_stream_close_send(g), LS_OK);
    cr_assert(inference_stream_wait_end(g, 120000), "stream did not end after its requests");
    rpc_status_t st = inference_stream_status(g);
    cr_assert_eq(st.code, GRPC_STATUS_OK, "%s", st.details);
    inference_stream_counts_t c = inference_stream_counts(g);
    cr_assert_eq(c.requests, N);
    cr_assert_eq(c.terminals, N);
    uint32_t chat_prompt = 0;
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "m%d", i);
        inference_stream_rec_t r = inference_stream_wait(g, id, 0, 1000);
        cr_assert(r.order_ok, "%s: out of order", id);
        cr_assert_eq(r.terminal, 1);
        cr_assert_eq(r.reason, DONE(LENGTH), "%s: reason %d error %d %s", id, r.reason, r.error,
                     r.msg);
        cr_assert_eq(r.tokens, 5 + i, "%s: %d tokens", id, r.tokens);
        if (i % 4 == 3)
            chat_prompt = r.prompt_tokens;
    }
    /* "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nTell me a story. [/INST]" is many tokens. */
    cr_assert_gt(chat_prompt, 10, "chat prompt had %u tokens", chat_prompt);
    inference_stream_destroy(g);
}

Test(inference, event_batching_packs_a_steps_events_when_asked_and_only_then)
{
    enum { N = 6, TOKENS = 20 };
    static const char *const prompts[] = {"a small red hen", "bees", "the old tree"};
    rpc_md_t md = RPC_MD_INIT;
    cr_assert_eq(rpc_md_add(&md, "llmserve-event-batch", "1"), LS_OK);
    rpc_call_opts_t batched = {.wait_for_ready = true, .metadata = &md};
    inference_stream_t *both[2] = {inference_stream_open(g_ch, &batched), gen_open()};
    for (int k = 0; k < 2; k++) {
        inference_stream_t *g = both[k];
        for (int i = 0; i < N; i++) {
            char id[16];
            snprintf(id, sizeof(id), "b%d", i);
            inference_stream_req_t p = {
                .prompt = prompts[i % 3], .max_tokens = TOKENS, .ignore_eos = true};
            inference_stream_submit(g, id, &p);
        }
        cr_assert_eq(inference_stream_close_send(g), LS_OK);
        cr_assert(inference_stream_wait_end(g, 60000));
        rpc_status_t st = inference_stream_status(g);
        cr_assert_eq(st.code, GRPC_STATUS_OK, "%s", st.details);
        for (int i = 0; i < N; i++) {
            char id[16];
            snprintf(id, sizeof(id), "b%d", i);
            inference_stream_rec_t r = inference_stream_wait(g, id, 0, 1000);
            cr_assert(r.order_ok, "%s: events out of order", id);
            cr_assert_eq(r.started, 1);
            cr_assert_eq(r.tokens, TOKENS, "%s: %d tokens", id, r.tokens);
            cr_assert_eq(r.terminal, 1);
            cr_assert_eq(r.reason, DONE(LENGTH));
        }
        /* started + tokens + done for each request */
        cr_assert_eq(inference_stream_counts(g).events, N * (TOKENS + 2));
    }
    /* Asked: requests decoding together share messages.  Not asked: one event each. */
    inference_stream_counts_t asked = inference_stream_counts(both[0]);
    inference_stream_counts_t not_asked = inference_stream_counts(both[1]);
    cr_assert(asked.batch_seen);
    cr_assert_lt(asked.messages, asked.events / 2, "%d messages for %d events", asked.messages,
                 asked.events);
    cr_assert_not(not_asked.batch_seen);
    cr_assert_eq(not_asked.messages, not_asked.events);
    /* The same requests gave the same text either way. */
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "b%d", i);
        inference_stream_rec_t a = inference_stream_wait(both[0], id, 0, 0),
                               b = inference_stream_wait(both[1], id, 0, 0);
        cr_assert_str_eq(a.text, b.text, "%s", id);
    }
    inference_stream_destroy(both[0]);
    inference_stream_destroy(both[1]);
    rpc_md_clear(&md);
}

Test(inference, greedy_output_is_the_same_alone_and_in_a_batch)
{
    inference_stream_req_t p = {.prompt = "a small red hen", .max_tokens = 30, .ignore_eos = true};
    inference_stream_t *g = gen_open();
    inference_stream_submit(g, "alone", &p);
    inference_stream_rec_t alone = inference_stream_wait(g, "alone", 0, 60000);
    cr_assert_eq(alone.tokens, 30);

    /* The same request again while seven others with other prompts and sampling run.  It is
     * sent right behind them, so it joins their batch unless this machine stalls the server
     * for their whole 200 steps; such a stall is retried, a batch that was shared is not. */
    inference_stream_rec_t batched = {0};
    for (int attempt = 0; attempt < 3 && batched.batch_size <= 1; attempt++) {
        for (int i = 0; i < 7; i++) {
            char id[16];
            snprintf(id, sizeof(id), "o%d-%d", attempt, i);
            inference_stream_req_t q = {.prompt = i % 2 ? "bees" : "the old tree by the river",
                                        .max_tokens = 200,
                                        .ignore_eos = true,
                                        .temperature = 0.7f * (float)(i % 3)};
            inference_stream_submit(g, id, &q);
        }
        char id[16];
        snprintf(id, sizeof(id), "batched%d", attempt);
        inference_stream_submit(g, id, &p);
        batched = inference_stream_wait(g, id, 0, 60000);
    }
    cr_assert_gt(batched.batch_size, 1, "the repeat did not share a batch in 3 tries");
    cr_assert_eq(batched.tokens, 30);
    cr_assert_eq(memcmp(alone.ids, batched.ids, 30 * sizeof(int)), 0,
                 "greedy tokens changed with batching");
    cr_assert_str_eq(alone.text, batched.text);
    cr_assert_eq(inference_stream_close_send(g), LS_OK);
    cr_assert(inference_stream_wait_end(g, 60000));
    inference_stream_destroy(g);
}

Test(inference, stop_string_is_not_sent)
{
    inference_stream_t *g = gen_open();
    inference_stream_req_t p = {.prompt = "one two three", .max_tokens = 80, .ignore_eos = true};
    inference_stream_submit(g, "full", &p);
    inference_stream_rec_t full = inference_stream_wait(g, "full", 0, 60000);
    cr_assert_gt(full.text_len, 10);
    size_t at = full.text_len / 2;
    while (at > 0 && ((unsigned char)full.text[at] & 0xc0) == 0x80)
        at--;
    size_t end = at + 2;
    while (end < full.text_len && ((unsigned char)full.text[end] & 0xc0) == 0x80)
        end++;
    char stop[16];
    snprintf(stop, sizeof(stop), "%.*s", (int)(end - at), full.text + at);
    size_t first = (size_t)(strstr(full.text, stop) - full.text);
    char *stops[] = {stop};
    p.stop = stops;
    p.n_stop = 1;
    inference_stream_submit(g, "cut", &p);
    inference_stream_rec_t cut = inference_stream_wait(g, "cut", 0, 60000);
    cr_assert_eq(cut.reason, DONE(STOP));
    cr_assert_eq(cut.text_len, first, "got \"%s\" for stop \"%s\" in \"%s\"", cut.text, stop,
                 full.text);
    cr_assert_null(strstr(cut.text, stop));
    inference_stream_destroy(g);
}

Test(inference, bad_inputs_each_get_invalid_argument_and_the_stream_goes_on)
{
    inference_stream_t *g = gen_open();
    int32_t out_of_range[] = {1, 512};
    static int32_t too_many[256];
    for (int i = 0; i < 256; i++)
        too_many[i] = 300;
    static char long_prompt[4000];
    for (size_t i = 0; i + 1 < sizeof(long_prompt); i++)
        long_prompt[i] = "the cat sat on a mat "[i % 21];
    char *nine[9] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
    char *empty_stop[] = {""};
    Llmserve__V1__ChatMessage late_sys = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    late_sys.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_SYSTEM;
    Llmserve__V1__ChatMessage user = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    user.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER;
    user.content = "hi";
    Llmserve__V1__ChatMessage no_role = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    no_role.content = "who?";
    Llmserve__V1__ChatMessage *sys_late[] = {&user, &late_sys};
    Llmserve__V1__ChatMessage *unspecified[] = {&no_role};
    Llmserve__V1__ChatMessage *just_user[] = {&user};

    struct {
        const char *id;
        inference_stream_req_t p;
        const char *why;
    } cases[] = {
        {"utf8", {.prompt = "bad \xc3\x28"}, "UTF-8"},
        {"neg-max", {.prompt = "x", .max_tokens = -1}, "max_tokens"},
        {"over-limit", {.prompt = "x", .max_tokens = 201}, "max_tokens"},
        {"temp-high", {.prompt = "x", .temperature = 3.0f}, "temperature"},
        {"temp-nan", {.prompt = "x", .temperature = NAN}, "temperature"},
        {"top-p", {.prompt = "x", .top_p = 1.5f}, "top_p"},
        {"top-k", {.prompt = "x", .top_k = -1}, "top_k"},
        {"nine-stops", {.prompt = "x", .stop = nine, .n_stop = 9}, "stop"},
        {"empty-stop", {.prompt = "x", .stop = empty_stop, .n_stop = 1}, "stop"},
        {"token-range", {.tokens = out_of_range, .n_tokens = 2}, "prompt_tokens[1]"},
        {"tokens-fill-context", {.tokens = too_many, .n_tokens = 256}, "context"},
        {"text-too-long", {.prompt = long_prompt}, "context"},
        {"prompt-and-messages", {.prompt = "x", .messages = just_user, .n_messages = 1}, "both"},
        {"system-late", {.messages = sys_late, .n_messages = 2}, "system"},
        {"no-role", {.messages = unspecified, .n_messages = 1}, "role"},
        {"", {.prompt = "x"}, "request_id"},
        {"empty", {.prompt = ""}, "prompt is empty"},
    };
    size_t n = sizeof(cases) / sizeof(cases[0]);
    for (size_t i = 0; i < n; i++)
        inference_stream_submit(g, cases[i].id, &cases[i].p);
    char long_id[140];
    memset(long_id, 'i', 129);
    long_id[129] = '\0';
    inference_stream_req_t ok = {.prompt = "x", .max_tokens = 3, .ignore_eos = true};
    inference_stream_submit(g, long_id, &ok);

    for (size_t i = 0; i < n; i++) {
        inference_stream_rec_t r = inference_stream_wait(g, cases[i].id, 0, 10000);
        cr_assert_eq(r.error, GRPC_STATUS_INVALID_ARGUMENT, "case %s: error %d reason %d",
                     cases[i].id, r.error, r.reason);
        cr_assert(strstr(r.msg, cases[i].why), "case %s: message \"%s\"", cases[i].id, r.msg);
        cr_assert_eq(r.started + r.tokens, 0, "case %s: events before the error", cases[i].id);
        cr_assert_eq(r.terminal, 1);
    }
    inference_stream_rec_t r = inference_stream_wait(g, long_id, 0, 10000);
    cr_assert_eq(r.error, GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(r.msg, "129"), "%s", r.msg);

    /* The stream is still good. */
    inference_stream_submit(g, "after", &ok);
    inference_stream_rec_t after = inference_stream_wait(g, "after", 0, 30000);
    cr_assert_eq(after.reason, DONE(LENGTH));
    cr_assert_eq(after.tokens, 3);
    cr_assert_eq(inference_stream_close_send(g), LS_OK);
    cr_assert(inference_stream_wait_end(g, 30000));
    cr_assert_eq(inference_stream_status(g).code, GRPC_STATUS_OK);
    inference_stream_destroy(g);
}

/* ---- tests: an int8 (Q8_0) model ------------------------------------------------------ */

/* Group size 64, so a machine with AVX-512 VNNI runs its VNNI kernels. */
static const char *const Q8[] = {"--preset",       "tiny", "--dim",        "128",
                                 "--hidden-dim",   "384",  "--quantize",   "q8_0",
                                 "--group-size",   "64",   NULL};

static void start_q8(void)
{
    static const char *const extra[] = {"--max-batch", "8", "--max-queue", "64", NULL};
    start_with(Q8, extra);
}

TestSuite(int8, .init = start_q8, .fini = stop_all, .timeout = 240);

Test(int8, serves_concurrent_streams_and_greedy_repeats_exactly)
{
    Llmserve__V1__InfoResponse *info = info_call();
    cr_assert_eq(info->dim, 128);
    if (strcmp(test_backend(), "cpu") == 0)
        cr_assert(strstr(info->device, "int8") != NULL, "device: %s", info->device);
    protobuf_c_message_free_unpacked(&info->base, NULL);

    enum { N = 12 };
    inference_stream_t *gens[N];
    for (int i = 0; i < N; i++) {
        gens[i] = gen_open();
        inference_stream_req_t p = {.prompt = i % 2 ? "the old tree" : "once upon a time",
                                    .max_tokens = 20 + i,
                                    .ignore_eos = true,
                                    .temperature = i % 3 ? 0.8f : 0.0f};
        inference_stream_submit(gens[i], "only", &p);
        cr_assert_eq(inference_stream_close_send(gens[i]), LS_OK);
    }
    for (int i = 0; i < N; i++) {
        inference_stream_rec_t r = inference_stream_wait(gens[i], "only", 0, 120000);
        cr_assert(inference_stream_wait_end(gens[i], 10000), "stream %d did not end", i);
        cr_assert_eq(inference_stream_status(gens[i]).code, GRPC_STATUS_OK);
        cr_assert(r.order_ok, "stream %d: events out of order", i);
        cr_assert_eq(r.terminal, 1);
        cr_assert_eq(r.error, 0, "stream %d: %d %s", i, r.error, r.msg);
        cr_assert_eq(r.tokens, 20 + i, "stream %d: %d tokens", i, r.tokens);
        inference_stream_destroy(gens[i]);
    }

    /* Greedy decoding of one prompt, alone, twice: the same tokens. */
    inference_stream_req_t p = {.prompt = "a small red hen", .max_tokens = 40, .ignore_eos = true};
    inference_stream_t *g = gen_open();
    inference_stream_submit(g, "a", &p);
    inference_stream_rec_t a = inference_stream_wait(g, "a", 0, 60000);
    inference_stream_submit(g, "b", &p);
    inference_stream_rec_t b = inference_stream_wait(g, "b", 0, 60000);
    cr_assert_eq(a.tokens, 40);
    cr_assert_eq(b.tokens, 40);
    cr_assert_eq(memcmp(a.ids, b.ids, 40 * sizeof(int)), 0, "greedy tokens differ between runs");
    cr_assert_str_eq(a.text, b.text);
    cr_assert_eq(inference_stream_close_send(g), LS_OK);
    cr_assert(inference_stream_wait_end(g, 60000));
    inference_stream_destroy(g);
}

/* ---- tests: the slow model ------------------------------------------------------------ */

TestSuite(slow, .fini = stop_all, .timeout = 240);

Test(slow, cancel_mid_generation_frees_the_slot_for_the_next_request)
{
    /* The KV budget holds exactly one full-length sequence. */
    static const char *const extra[] = {"--max-batch", "4", "--kv-budget-tokens", "1024", NULL};
    start_with(SLOW, extra);
    inference_stream_t *g = gen_open();
    /* max_tokens above the room is clamped: a reserves the whole context. */
    inference_stream_req_t big = {.prompt = "go", .max_tokens = 5000, .ignore_eos = true};
    inference_stream_submit(g, "a", &big);
    inference_stream_wait(g, "a", 3, 60000);
    inference_stream_req_t small = {.prompt = "next", .max_tokens = 12, .ignore_eos = true};
    inference_stream_submit(g, "b", &small);
    ls_sleep_us(100000);
    int b_started = inference_stream_get(g, "b").started;
    cr_assert_eq(b_started, 0, "b must wait while a holds the whole KV budget");

    inference_stream_cancel(g, "no-such-request"); /* ignored: no event */
    inference_stream_cancel(g, "a");
    inference_stream_rec_t a = inference_stream_wait(g, "a", 0, 10000);
    cr_assert_eq(a.reason, DONE(CANCELLED), "reason %d error %d", a.reason, a.error);
    cr_assert_lt(a.tokens, 1000);
    cr_assert_eq(a.prompt_tokens + a.tokens < 1024, true);
    cr_assert_eq(a.completion_tokens, (uint32_t)a.tokens);
    inference_stream_rec_t b = inference_stream_wait(g, "b", 0, 60000);
    cr_assert_eq(b.reason, DONE(LENGTH));
    cr_assert_eq(b.tokens, 12);
    /* b was admitted only once a's KV came back (one stream: events arrive in order). */
    cr_assert_geq(b.started_at, a.ended_at, "b started before a ended");
    cr_assert_gt(b.queue_us, 0);
    cr_assert_eq(inference_stream_close_send(g), LS_OK);
    cr_assert(inference_stream_wait_end(g, 30000));
    cr_assert_eq(inference_stream_status(g).code, GRPC_STATUS_OK);
    cr_assert_eq(inference_stream_counts(g).requests, 2,
                 "the cancel of an unknown id made an event");
    inference_stream_destroy(g);
}

Test(slow, duplicate_id_is_refused_and_the_first_goes_on)
{
    start_with(SLOW, NULL);
    inference_stream_t *g = gen_open();
    /* 150 slow tokens: far longer than the second submit takes to arrive. */
    inference_stream_req_t first = {.prompt = "go on", .max_tokens = 150, .ignore_eos = true};
    inference_stream_req_t second = {.prompt = "x", .max_tokens = 3, .ignore_eos = true};
    inference_stream_submit(g, "dup", &first);
    inference_stream_submit(g, "dup", &second);
    inference_stream_submit(g, "after", &second);
    inference_stream_rec_t after = inference_stream_wait(g, "after", 0, 30000);
    cr_assert_eq(after.reason, DONE(LENGTH));
    cr_assert_eq(after.tokens, 3);
    inference_stream_rec_t dup = inference_stream_wait_terminals(g, "dup", 2, 30000);
    cr_assert_eq(dup.terminal, 2, "one ALREADY_EXISTS error plus the first request's done");
    cr_assert_eq(dup.error, GRPC_STATUS_ALREADY_EXISTS, "%d %s", dup.error, dup.msg);
    cr_assert_eq(dup.reason, DONE(LENGTH));
    cr_assert_eq(dup.tokens, 150, "the first request went on undisturbed");
    cr_assert_eq(inference_stream_close_send(g), LS_OK);
    cr_assert(inference_stream_wait_end(g, 30000));
    inference_stream_destroy(g);
}

Test(slow, full_queue_answers_resource_exhausted_at_once)
{
    static const char *const extra[] = {"--max-batch", "1", "--max-queue", "2", NULL};
    start_with(SLOW, extra);
    inference_stream_t *g = gen_open();
    inference_stream_req_t big = {.prompt = "go", .max_tokens = 1000, .ignore_eos = true};
    inference_stream_submit(g, "run", &big);
    inference_stream_wait(g, "run", 1, 60000);
    inference_stream_submit(g, "q1", &big);
    inference_stream_submit(g, "q2", &big);
    int64_t t0 = ls_now_us();
    inference_stream_submit(g, "over", &big);
    inference_stream_rec_t over = inference_stream_wait(g, "over", 0, 10000);
    cr_assert_eq(over.error, GRPC_STATUS_RESOURCE_EXHAUSTED, "%d %s", over.error, over.msg);
    cr_assert_lt(over.ended_at - t0, 2000000, "the refusal must not wait for the batch");
    inference_stream_cancel(g, "run");
    inference_stream_cancel(g, "q1");
    inference_stream_cancel(g, "q2");
    inference_stream_req_t small = {.prompt = "x", .max_tokens = 4, .ignore_eos = true};
    inference_stream_rec_t run = inference_stream_wait(g, "run", 0, 10000);
    inference_stream_rec_t q1 = inference_stream_wait(g, "q1", 0, 10000);
    inference_stream_rec_t q2 = inference_stream_wait(g, "q2", 0, 10000);
    cr_assert_eq(run.reason, DONE(CANCELLED));
    cr_assert_eq(q1.reason, DONE(CANCELLED));
    cr_assert_eq(q2.reason, DONE(CANCELLED));
    inference_stream_submit(g, "later", &small); /* the stream stayed open */
    inference_stream_rec_t later = inference_stream_wait(g, "later", 0, 30000);
    cr_assert_eq(later.reason, DONE(LENGTH));
    cr_assert_eq(later.tokens, 4);
    inference_stream_destroy(g);
}

Test(slow, deadlines_are_respected)
{
    static const char *const extra[] = {"--max-batch", "1", "--kv-budget-tokens", "1024", NULL};
    start_with(SLOW, extra);
    inference_stream_t *g = gen_open();
    /* Running: the request's own timeout ends it (done DEADLINE once it has a token). */
    inference_stream_req_t timed = {
        .prompt = "go", .max_tokens = 1000, .ignore_eos = true, .timeout_ms = 300};
    int64_t t0 = ls_now_us();
    inference_stream_submit(g, "timed", &timed);
    inference_stream_rec_t r = inference_stream_wait(g, "timed", 0, 30000);
    int64_t took = r.ended_at - t0;
    cr_assert_lt(took, 2500000, "a 300 ms deadline took %lld us", (long long)took);
    cr_assert_geq(took, 250000, "ended before its deadline: %lld us", (long long)took);
    if (r.tokens > 0) {
        cr_assert_eq(r.reason, DONE(DEADLINE), "reason %d error %d", r.reason, r.error);
        cr_assert_lt(r.tokens, 1000);
    } else {
        cr_assert_eq(r.error, GRPC_STATUS_DEADLINE_EXCEEDED);
    }

    /* Queued: waiting behind a long request until its deadline passes. */
    inference_stream_req_t big = {.prompt = "go", .max_tokens = 1000, .ignore_eos = true};
    inference_stream_submit(g, "long", &big);
    inference_stream_wait(g, "long", 1, 60000);
    inference_stream_req_t queued = {.prompt = "x", .max_tokens = 4, .timeout_ms = 150};
    inference_stream_submit(g, "queued", &queued);
    inference_stream_rec_t q = inference_stream_wait(g, "queued", 0, 30000);
    cr_assert_eq(q.error, GRPC_STATUS_DEADLINE_EXCEEDED, "%d %s", q.error, q.msg);
    cr_assert_eq(q.started, 0);
    inference_stream_cancel(g, "long");
    inference_stream_wait(g, "long", 0, 10000);
    inference_stream_destroy(g);

    /* The call's own deadline ends the stream; its request's KV comes back, so a
     * request needing the whole budget still runs afterwards. */
    rpc_call_opts_t deadline = {.timeout_us = 400000, .wait_for_ready = true};
    inference_stream_t *d = inference_stream_open(g_ch, &deadline);
    inference_stream_submit(d, "doomed", &big);
    cr_assert(inference_stream_wait_end(d, 10000), "a stream with a 400 ms deadline did not end");
    rpc_status_t st = inference_stream_status(d);
    cr_assert_eq(st.code, GRPC_STATUS_DEADLINE_EXCEEDED, "%d %s", st.code, st.details);
    inference_stream_destroy(d);
    inference_stream_t *after = gen_open();
    inference_stream_req_t whole = {.prompt = "go", .max_tokens = 1000, .ignore_eos = true};
    inference_stream_submit(after, "whole", &whole);
    inference_stream_rec_t w = inference_stream_wait(after, "whole", 1, 30000);
    cr_assert_eq(w.error, 0, "%d %s", w.error, w.msg);
    inference_stream_cancel(after, "whole");
    w = inference_stream_wait(after, "whole", 0, 10000);
    cr_assert_eq(w.reason, DONE(CANCELLED));
    inference_stream_destroy(after);
}

Test(slow, sigterm_with_requests_in_flight_ends_each_once_and_exits_zero)
{
    static const char *const extra[] = {"--max-batch", "2", "--grace-ms", "300", NULL};
    start_with(SLOW, extra);
    inference_stream_t *g = gen_open();
    inference_stream_req_t big = {.prompt = "go", .max_tokens = 1000, .ignore_eos = true};
    inference_stream_req_t small = {.prompt = "hi", .max_tokens = 3, .ignore_eos = true};
    const char *ids[] = {"r0", "r1", "r2", "r3", "quick"};
    inference_stream_submit(g, "quick", &small);
    for (int i = 0; i < 4; i++)
        inference_stream_submit(g, ids[i], &big);
    inference_stream_wait(g, "r0", 1, 60000);

    cr_assert_eq(kill(g_server.pid, SIGTERM), 0);
    cr_assert(inference_stream_wait_end(g, 20000), "stream did not end at shutdown");
    int status = test_proc_stop(&g_server, SIGTERM, 20000);
    cr_assert_eq(status, 0, "exit status %d", status);
    for (int i = 0; i < 5; i++) {
        inference_stream_rec_t r = inference_stream_wait(g, ids[i], 0, 1000);
        cr_assert_eq(r.terminal, 1, "%s: %d terminal events", ids[i], r.terminal);
        cr_assert(r.order_ok, "%s: events out of order", ids[i]);
        if (r.error)
            cr_assert_eq(r.error, GRPC_STATUS_UNAVAILABLE, "%s: %d %s", ids[i], r.error, r.msg);
        else
            cr_assert_eq(r.reason, DONE(LENGTH), "%s: reason %d", ids[i], r.reason);
    }
    inference_stream_rec_t quick = inference_stream_wait(g, "quick", 0, 1000);
    cr_assert_eq(quick.reason, DONE(LENGTH), "a short request finishes within the grace");
    rpc_status_t st = inference_stream_status(g);
    cr_assert_eq(st.code, GRPC_STATUS_UNAVAILABLE, "%d %s", st.code, st.details);
    inference_stream_destroy(g);
}

/* ---- tests: a compute device that fails for good ------------------------------------------ */

Test(slow, device_failure_ends_each_request_once_goes_not_serving_and_exits_1)
{
    enum { N = 6 };
    /* 4 run and 2 wait in the queue; the queue delay lets the first 4 start together, and
     * the slow model makes the 200 steps outlast the submits (20 did not always, in a
     * release build: a submit that reaches a server already stopping is never read). */
    static const char *const extra[] = {"--max-batch", "4",    "--fault-after-steps",  "200",
                                        "--grace-ms",  "5000", "--max-queue-delay-ms", "1000",
                                        NULL};
    start_with(SLOW, extra);
    test_health_watch_t health;
    test_health_watch_open(&health, g_ch, "");
    cr_assert(test_health_watch_wait(&health, 1, false, 10000), "no first health status");
    cr_assert_eq(health.statuses[0],
                 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    inference_stream_t *gens[N];
    for (int i = 0; i < N; i++)
        gens[i] = gen_open();
    inference_stream_req_t big = {.prompt = "go", .max_tokens = 500, .ignore_eos = true};
    for (int i = 0; i < N; i++)
        inference_stream_submit(gens[i], "r", &big);

    int started = 0;
    for (int i = 0; i < N; i++) {
        inference_stream_rec_t r = inference_stream_wait(gens[i], "r", 0, 60000);
        cr_assert(r.order_ok, "stream %d: events out of order", i);
        cr_assert_eq(r.terminal, 1, "stream %d: %d terminal events", i, r.terminal);
        cr_assert_eq(r.error, GRPC_STATUS_UNAVAILABLE, "stream %d: error %d reason %d %s", i,
                     r.error, r.reason, r.msg);
        cr_assert_not_null(strstr(r.msg, "compute device failed"), "stream %d: %s", i, r.msg);
        cr_assert_lt(r.tokens, 500);
        started += r.started;
    }
    cr_assert_leq(started, 4, "at most a batch ran");
    cr_assert_geq(started, 1, "the fault came before any request ran");

    /* Every stream ends (UNAVAILABLE: the server stops), with no second terminal event. */
    for (int i = 0; i < N; i++) {
        cr_assert(inference_stream_wait_end(gens[i], 20000), "stream %d did not end", i);
        rpc_status_t st = inference_stream_status(gens[i]);
        cr_assert_eq(st.code, GRPC_STATUS_UNAVAILABLE, "stream %d: %d %s", i, st.code, st.details);
        cr_assert_eq(inference_stream_counts(gens[i]).terminals, 1, "stream %d", i);
    }
    /* Health turned NOT_SERVING (then the server went, ending the watch). */
    cr_assert(test_health_watch_wait(&health, 2, true, 20000), "health: %d statuses, ended=%d",
              health.n, health.ended);
    cr_assert_eq(health.statuses[1],
                 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    test_health_watch_close(&health);

    /* The process ends on its own with status 1, for an orchestrator to restart it. */
    int status = test_proc_wait(&g_server, 20000);
    cr_assert_eq(status, 1, "exit status %d", status);
    for (int i = 0; i < N; i++)
        inference_stream_destroy(gens[i]);
}

/* ---- tests: the prefix cache ------------------------------------------------------------ */

/* The tiny model with room for long shared prompts. */
static const char *const LONG[] = {"--preset", "tiny", "--seq-len", "1024", NULL};

enum { PFX = 300, SFX = 10, ANSWER = 20, N_SHARED = 6 };

/* Prompt k of a family: PFX ids shared by the family (seed), then SFX ids of its own. */
static void family_prompt(int family, int k, int32_t *out)
{
    uint32_t x = 2166136261u ^ (uint32_t)family * 16777619u;
    for (int i = 0; i < PFX + SFX; i++) {
        if (i == PFX)
            x ^= (uint32_t)(k + 1) * 2654435761u;
        x = x * 1103515245u + 12345u;
        out[i] = 3 + (int32_t)((x >> 8) % 509u);
    }
}

typedef struct {
    int ids[N_SHARED + 1][ANSWER];
    char text[N_SHARED + 1][4096];
    uint32_t cached[N_SHARED + 1], usage_cached[N_SHARED + 1];
} family_run_t;

/* One request of family 0 alone, then N_SHARED others of it at once on one stream. */
static void run_family(family_run_t *out)
{
    inference_stream_t *g = gen_open();
    static int32_t prompts[N_SHARED + 1][PFX + SFX];
    for (int k = 0; k <= N_SHARED; k++)
        family_prompt(0, k, prompts[k]);
    for (int phase = 0; phase < 2; phase++) {
        int from = phase == 0 ? 0 : 1, to = phase == 0 ? 1 : N_SHARED + 1;
        for (int k = from; k < to; k++) {
            char id[16];
            snprintf(id, sizeof(id), "f%d", k);
            inference_stream_req_t req = {.tokens = prompts[k], .n_tokens = PFX + SFX,
                                          .max_tokens = ANSWER, .ignore_eos = true};
            inference_stream_submit(g, id, &req);
        }
        for (int k = from; k < to; k++) {
            char id[16];
            snprintf(id, sizeof(id), "f%d", k);
            inference_stream_rec_t r = inference_stream_wait(g, id, 0, 60000);
            cr_assert_eq(r.terminal, 1, "%s", id);
            cr_assert_eq(r.reason, DONE(LENGTH), "%s: reason %d error %d %s", id, r.reason,
                         r.error, r.msg);
            cr_assert_eq(r.tokens, ANSWER);
            memcpy(out->ids[k], r.ids, sizeof(out->ids[k]));
            snprintf(out->text[k], sizeof(out->text[k]), "%s", r.text);
            out->cached[k] = r.cached_tokens;
            out->usage_cached[k] = r.usage_cached_tokens;
        }
    }
    inference_stream_destroy(g);
}

TestSuite(prefix, .fini = stop_all, .timeout = 240);

Test(prefix, greedy_answers_are_the_same_with_and_without_it_and_hits_are_reported)
{
    run_modelmaker(LONG);
    static const char *const off[] = {"--no-prefix-cache", "--max-batch", "8", NULL};
    launch(off);
    Llmserve__V1__InfoResponse *info = info_call();
    cr_assert(!info->prefix_cache);
    protobuf_c_message_free_unpacked(&info->base, NULL);
    static family_run_t cold, warm;
    run_family(&cold);
    stop_server();

    static const char *const on[] = {"--max-batch", "8", NULL};
    launch(on);
    info = info_call();
    cr_assert(info->prefix_cache);
    protobuf_c_message_free_unpacked(&info->base, NULL);
    run_family(&warm);
    for (int k = 0; k <= N_SHARED; k++) {
        cr_assert_eq(cold.cached[k], 0, "no cache, no hit");
        cr_assert_eq(memcmp(cold.ids[k], warm.ids[k], sizeof(cold.ids[k])), 0,
                     "request %d: the prefix cache changed a greedy answer", k);
        cr_assert_str_eq(cold.text[k], warm.text[k]);
        cr_assert_eq(warm.usage_cached[k], warm.cached[k], "done reports what started said");
    }
    cr_assert_eq(warm.cached[0], 0, "the first request finds nothing");
    for (int k = 1; k <= N_SHARED; k++)
        cr_assert_eq(warm.cached[k], PFX / 16 * 16, "request %d hit %u tokens", k,
                     warm.cached[k]);
}

Test(prefix, a_full_budget_evicts_the_least_recently_used_and_answers_stay_the_same)
{
    run_modelmaker(LONG);
    /* One context's worth of KV (64 blocks): three 330-token requests leave 63 blocks
     * cached, so the fourth family evicts the first one's. */
    static const char *const on[] = {"--max-batch", "2", "--kv-budget-tokens", "1024", NULL};
    launch(on);
    inference_stream_t *g = gen_open();
    static int32_t p[PFX + SFX];
    int first_ids[ANSWER];
    uint32_t cached[6];
    static const int order[6] = {0, 0, 1, 2, 3, 0}; /* families, one request at a time */
    for (int i = 0; i < 6; i++) {
        family_prompt(order[i], i, p);
        char id[16];
        snprintf(id, sizeof(id), "e%d", i);
        inference_stream_req_t req = {.tokens = p, .n_tokens = PFX + SFX, .max_tokens = ANSWER,
                                      .ignore_eos = true};
        if (i == 5) { /* the first request again, word for word */
            family_prompt(0, 0, p);
        }
        inference_stream_submit(g, id, &req);
        inference_stream_rec_t r = inference_stream_wait(g, id, 0, 60000);
        cr_assert_eq(r.reason, DONE(LENGTH), "%s: error %d %s", id, r.error, r.msg);
        cached[i] = r.cached_tokens;
        if (i == 0)
            memcpy(first_ids, r.ids, sizeof(first_ids));
        if (i == 5)
            cr_assert_eq(memcmp(first_ids, r.ids, sizeof(first_ids)), 0,
                         "an evicted prefix, recomputed, gives the same answer");
    }
    inference_stream_destroy(g);
    cr_assert_eq(cached[0], 0);
    cr_assert_eq(cached[1], PFX / 16 * 16, "same family: prefix hit");
    cr_assert_eq(cached[2], 0, "another family shares nothing");
    cr_assert_lt(cached[5], PFX / 16 * 16, "the first family was (at least partly) evicted");
}
