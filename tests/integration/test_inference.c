/*
 * test_inference.c - the real llmserve-inference process on loopback, serving models
 * made at test time by llmserve-modelmaker, driven by libs/rpc's client.
 *
 * Two shapes: "tiny" (fast, for counts and determinism) and "slow" (wider, deeper and
 * a longer context, so one request runs long enough to be cancelled, time out or be
 * caught by a shutdown).
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "grpc/health/v1/health.pb-c.h"
#include "llmserve/v1/inference.pb-c.h"
#include "rpc/client.h"
#include "support/channel.h"
#include "support/proc.h"
#include "support/tmpdir.h"

#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DONE(reason) LLMSERVE__V1__FINISH_REASON__FINISH_REASON_##reason
#define GENERATE "/llmserve.v1.Inference/Generate"

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
static const char *const SLOW[] = {"--preset",   "tiny", "--dim",     "384", "--hidden-dim",
                                   "1024",       "--layers", "8",     "--heads", "6",
                                   "--kv-heads", "3",    "--seq-len", "1024", NULL};

static void start_with(const char *const *shape, const char *const *extra)
{
    run_modelmaker(shape);
    char *argv[48];
    int n = 0;
    argv[n++] = (char *)test_env_path("LLMSERVE_INFERENCE");
    const char *base[] = {"--listen",        "127.0.0.1:0", "--model",   g_model,
                          "--tokenizer",     g_tokfile,     "--pool",    "small",
                          "--model-version", "v7",          "--threads", "1",
                          "--rpc-threads",   "2",           NULL};
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

/* ---- a Generate stream and what each request on it saw -------------------------------- */

#define MAX_RECS 48

typedef struct {
    char id[160];
    int started, tokens, terminal;
    bool order_ok;
    int ids[1024];
    char text[4096];
    size_t text_len;
    uint32_t prompt_tokens, batch_size;
    int reason, error;
    char msg[256];
    uint32_t completion_tokens, usage_prompt_tokens;
    uint64_t ttft_us, total_us, queue_us, prefill_us, decode_us;
    int64_t started_at, ended_at; /* when the client saw them */
} rec_t;

typedef struct {
    pthread_mutex_t mu;
    rpc_stream_t *s;
    rec_t recs[MAX_RECS];
    int n_recs;
    int terminals;
    int messages, events; /* received; more events than messages only with batching */
    bool batch_seen;      /* a message carried InferenceEvent.batch */
    bool ended;
    rpc_status_t status;
} gen_t;

/* The record of id, created on first sight.  g->mu held. */
static rec_t *do_rec(gen_t *g, const char *id)
{
    for (int i = 0; i < g->n_recs; i++)
        if (strcmp(g->recs[i].id, id) == 0)
            return &g->recs[i];
    cr_assert_lt(g->n_recs, MAX_RECS);
    rec_t *r = &g->recs[g->n_recs++];
    memset(r, 0, sizeof(*r));
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->order_ok = true;
    return r;
}

/* One event.  g->mu held. */
static void do_event(gen_t *g, const Llmserve__V1__InferenceEvent *ev)
{
    g->events++;
    rec_t *r = do_rec(g, ev->request_id);
    if (r->terminal)
        r->order_ok = false;
    switch (ev->kind_case) {
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_STARTED:
        if (r->started++ || r->tokens)
            r->order_ok = false;
        r->prompt_tokens = ev->started->prompt_tokens;
        r->batch_size = ev->started->batch_size;
        r->started_at = ls_now_us();
        r->queue_us = ev->started->queue_us;
        break;
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_TOKEN: {
        if (!r->started || ev->token->index != (uint32_t)r->tokens)
            r->order_ok = false;
        if (r->tokens < 1024)
            r->ids[r->tokens] = ev->token->id;
        r->tokens++;
        size_t len = strlen(ev->token->text);
        if (r->text_len + len < sizeof(r->text)) {
            memcpy(r->text + r->text_len, ev->token->text, len);
            r->text_len += len;
            r->text[r->text_len] = '\0';
        }
        break;
    }
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_DONE:
        r->terminal++;
        g->terminals++;
        r->reason = ev->done->finish_reason;
        if (ev->done->usage) {
            r->completion_tokens = ev->done->usage->completion_tokens;
            r->usage_prompt_tokens = ev->done->usage->prompt_tokens;
        }
        if (ev->done->timings) {
            r->ttft_us = ev->done->timings->ttft_us;
            r->total_us = ev->done->timings->total_us;
            r->prefill_us = ev->done->timings->prefill_us;
            r->decode_us = ev->done->timings->decode_us;
        }
        r->ended_at = ls_now_us();
        break;
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_ERROR:
        r->terminal++;
        g->terminals++;
        r->error = ev->error->code;
        snprintf(r->msg, sizeof(r->msg), "%s", ev->error->message);
        r->ended_at = ls_now_us();
        break;
    default:
        r->order_ok = false;
        break;
    }
}

static void gen_on_message(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    (void)s;
    gen_t *g = ud;
    const Llmserve__V1__InferenceEvent *ev = (const Llmserve__V1__InferenceEvent *)msg;
    pthread_mutex_lock(&g->mu);
    g->messages++;
    do_event(g, ev);
    for (size_t i = 0; i < ev->n_batch; i++) {
        g->batch_seen = true;
        if (ev->batch[i]->n_batch)
            do_rec(g, ev->batch[i]->request_id)->order_ok = false; /* no nesting */
        do_event(g, ev->batch[i]);
    }
    pthread_mutex_unlock(&g->mu);
}

static void gen_on_status(rpc_stream_t *s, void *ud, const rpc_status_t *st, const rpc_md_t *t)
{
    (void)s;
    (void)t;
    gen_t *g = ud;
    pthread_mutex_lock(&g->mu);
    g->status = *st;
    g->ended = true;
    pthread_mutex_unlock(&g->mu);
}

/* Streams live in static storage for the whole test process: a failed assertion
 * leaves the test function while its streams may still call back, and criterion runs
 * each test in a process of its own. */
static gen_t g_gens[40];
static int g_n_gens;

static gen_t *gen_open_md(int64_t timeout_us, const rpc_md_t *md)
{
    cr_assert_lt(g_n_gens, 40);
    gen_t *g = &g_gens[g_n_gens++];
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
    rpc_stream_handler_t h = {gen_on_message, gen_on_status};
    rpc_call_opts_t opts = {.timeout_us = timeout_us, .wait_for_ready = true, .metadata = md};
    g->s = rpc_stream_open(g_ch, GENERATE, &llmserve__v1__inference_event__descriptor, &h, g, &opts,
                           0);
    cr_assert_not_null(g->s);
    return g;
}

static gen_t *gen_open_with(int64_t timeout_us)
{
    return gen_open_md(timeout_us, NULL);
}

static gen_t *gen_open(void)
{
    return gen_open_with(0);
}

/* Waits for the stream's end; releases it. */
static bool gen_wait_end(gen_t *g, int timeout_ms)
{
    int64_t end = ls_now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        pthread_mutex_lock(&g->mu);
        bool ended = g->ended;
        pthread_mutex_unlock(&g->mu);
        if (ended)
            return true;
        if (ls_now_us() >= end)
            return false;
        ls_sleep_us(2000);
    }
}

static void gen_release(gen_t *g)
{
    rpc_stream_release(g->s);
    g->s = NULL;
}

typedef struct {
    const char *prompt;
    int max_tokens;
    bool ignore_eos;
    float temperature, top_p;
    int top_k;
    uint32_t timeout_ms;
    const int32_t *tokens;
    size_t n_tokens;
    char **stop;
    size_t n_stop;
    Llmserve__V1__ChatMessage **messages;
    size_t n_messages;
} params_t;

static void gen_submit(gen_t *g, const char *id, const params_t *p)
{
    Llmserve__V1__SamplingParams sp = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    sp.max_tokens = p->max_tokens;
    sp.ignore_eos = p->ignore_eos;
    sp.temperature = p->temperature;
    sp.top_p = p->top_p;
    sp.top_k = p->top_k;
    sp.stop = p->stop;
    sp.n_stop = p->n_stop;
    Llmserve__V1__InferenceSubmit sub = LLMSERVE__V1__INFERENCE_SUBMIT__INIT;
    sub.request_id = (char *)id;
    sub.prompt = (char *)(p->prompt ? p->prompt : "");
    sub.sampling = &sp;
    sub.timeout_ms = p->timeout_ms;
    sub.prompt_tokens = (int32_t *)p->tokens;
    sub.n_prompt_tokens = p->n_tokens;
    sub.messages = p->messages;
    sub.n_messages = p->n_messages;
    Llmserve__V1__InferenceRequest req = LLMSERVE__V1__INFERENCE_REQUEST__INIT;
    req.kind_case = LLMSERVE__V1__INFERENCE_REQUEST__KIND_SUBMIT;
    req.submit = &sub;
    cr_assert_eq(rpc_stream_send(g->s, &req.base), LS_OK, "send %s", id);
}

static void gen_cancel(gen_t *g, const char *id)
{
    Llmserve__V1__InferenceCancel c = LLMSERVE__V1__INFERENCE_CANCEL__INIT;
    c.request_id = (char *)id;
    Llmserve__V1__InferenceRequest req = LLMSERVE__V1__INFERENCE_REQUEST__INIT;
    req.kind_case = LLMSERVE__V1__INFERENCE_REQUEST__KIND_CANCEL;
    req.cancel = &c;
    cr_assert_eq(rpc_stream_send(g->s, &req.base), LS_OK);
}

/* Waits until id has had n_terminal terminal events (when n_tokens is 0) or n_tokens
 * tokens; returns a copy of its record. */
static rec_t gen_wait_n(gen_t *g, const char *id, int n_tokens, int n_terminal, int timeout_ms)
{
    int64_t end = ls_now_us() + (int64_t)timeout_ms * 1000;
    rec_t out;
    for (;;) {
        pthread_mutex_lock(&g->mu);
        rec_t *r = do_rec(g, id);
        bool ready =
            n_tokens > 0 ? r->tokens >= n_tokens || r->terminal > 0 : r->terminal >= n_terminal;
        out = *r;
        pthread_mutex_unlock(&g->mu);
        if (ready)
            return out;
        cr_assert_lt(ls_now_us(), end, "request %s: no %s in %d ms (tokens %d)", id,
                     n_tokens > 0 ? "tokens" : "terminal event", timeout_ms, out.tokens);
        ls_sleep_us(1000);
    }
}

/* Waits for id's terminal event (n_tokens 0) or its first n_tokens tokens. */
static rec_t gen_wait(gen_t *g, const char *id, int n_tokens, int timeout_ms)
{
    return gen_wait_n(g, id, n_tokens, 1, timeout_ms);
}

/* ---- tests: the tiny model ------------------------------------------------------------ */

static void start_tiny(void)
{
    static const char *const extra[] = {"--max-batch",        "8",   "--max-queue", "64",
                                        "--max-tokens-limit", "200", NULL};
    start_with(TINY, extra);
}

TestSuite(inference, .init = start_tiny, .fini = stop_all, .timeout = 240);

Test(inference, info_reports_shape_backend_and_limits)
{
    Llmserve__V1__InfoRequest req = LLMSERVE__V1__INFO_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_call_opts_t opts = {.timeout_us = 5000000, .wait_for_ready = true};
    cr_assert_eq(rpc_channel_unary(g_ch, "/llmserve.v1.Inference/Info", &req.base,
                                   &llmserve__v1__info_response__descriptor, &opts, &resp, &st),
                 LS_OK);
    cr_assert_eq(st.code, GRPC_STATUS_OK, "%s", st.details);
    Llmserve__V1__InfoResponse *info = (Llmserve__V1__InfoResponse *)resp;
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
    cr_assert_str_eq(info->backend, "cpu");
    cr_assert_neq(info->device[0], '\0', "device must be described");
    cr_assert_eq(info->max_batch, 8);
    cr_assert_eq(info->max_queue, 64);
    cr_assert_eq(info->kv_budget_tokens, 8 * 256, "default budget: max_batch * seq_len");
    protobuf_c_message_free_unpacked(resp, NULL);
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
    gen_t *gens[N];
    for (int i = 0; i < N; i++) {
        gens[i] = gen_open();
        params_t p = {.prompt = "once upon a time",
                      .max_tokens = 10 + i,
                      .ignore_eos = true,
                      .temperature = i % 3 ? 0.9f : 0.0f};
        gen_submit(gens[i], "only", &p);
        cr_assert_eq(rpc_stream_close_send(gens[i]->s), LS_OK);
    }
    for (int i = 0; i < N; i++) {
        rec_t r = gen_wait(gens[i], "only", 0, 120000);
        cr_assert(gen_wait_end(gens[i], 10000), "stream %d did not end after its request", i);
        cr_assert_eq(gens[i]->status.code, GRPC_STATUS_OK, "stream %d: %s", i,
                     gens[i]->status.details);
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
        gen_release(gens[i]);
    }
}

Test(inference, many_requests_multiplexed_on_one_stream)
{
    enum { N = 40 };
    gen_t *g = gen_open();
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
        params_t p = {
            .prompt = i % 4 == 3 ? NULL : "the sun", .max_tokens = 5 + i, .ignore_eos = true};
        if (i % 4 == 3) {
            p.messages = chat;
            p.n_messages = 2;
        }
        gen_submit(g, id, &p);
    }
    cr_assert_eq(rpc_stream_close_send(g->s), LS_OK);
    cr_assert(gen_wait_end(g, 120000), "stream did not end after its requests");
    cr_assert_eq(g->status.code, GRPC_STATUS_OK, "%s", g->status.details);
    cr_assert_eq(g->n_recs, N);
    cr_assert_eq(g->terminals, N);
    uint32_t chat_prompt = 0;
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "m%d", i);
        rec_t r = gen_wait(g, id, 0, 1000);
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
    gen_release(g);
}

Test(inference, event_batching_packs_a_steps_events_when_asked_and_only_then)
{
    enum { N = 6, TOKENS = 20 };
    static const char *const prompts[] = {"a small red hen", "bees", "the old tree"};
    rpc_md_t md = RPC_MD_INIT;
    cr_assert_eq(rpc_md_add(&md, "llmserve-event-batch", "1"), LS_OK);
    gen_t *both[2] = {gen_open_md(0, &md), gen_open()};
    for (int k = 0; k < 2; k++) {
        gen_t *g = both[k];
        for (int i = 0; i < N; i++) {
            char id[16];
            snprintf(id, sizeof(id), "b%d", i);
            params_t p = {.prompt = prompts[i % 3], .max_tokens = TOKENS, .ignore_eos = true};
            gen_submit(g, id, &p);
        }
        cr_assert_eq(rpc_stream_close_send(g->s), LS_OK);
        cr_assert(gen_wait_end(g, 60000));
        cr_assert_eq(g->status.code, GRPC_STATUS_OK, "%s", g->status.details);
        for (int i = 0; i < N; i++) {
            char id[16];
            snprintf(id, sizeof(id), "b%d", i);
            rec_t r = gen_wait(g, id, 0, 1000);
            cr_assert(r.order_ok, "%s: events out of order", id);
            cr_assert_eq(r.started, 1);
            cr_assert_eq(r.tokens, TOKENS, "%s: %d tokens", id, r.tokens);
            cr_assert_eq(r.terminal, 1);
            cr_assert_eq(r.reason, DONE(LENGTH));
        }
        /* started + tokens + done for each request */
        cr_assert_eq(g->events, N * (TOKENS + 2));
    }
    /* Asked: requests decoding together share messages.  Not asked: one event each. */
    cr_assert(both[0]->batch_seen);
    cr_assert_lt(both[0]->messages, both[0]->events / 2, "%d messages for %d events",
                 both[0]->messages, both[0]->events);
    cr_assert_not(both[1]->batch_seen);
    cr_assert_eq(both[1]->messages, both[1]->events);
    /* The same requests gave the same text either way. */
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "b%d", i);
        rec_t a = gen_wait(both[0], id, 0, 0), b = gen_wait(both[1], id, 0, 0);
        cr_assert_str_eq(a.text, b.text, "%s", id);
    }
    gen_release(both[0]);
    gen_release(both[1]);
    rpc_md_clear(&md);
}

Test(inference, greedy_output_is_the_same_alone_and_in_a_batch)
{
    params_t p = {.prompt = "a small red hen", .max_tokens = 30, .ignore_eos = true};
    gen_t *g = gen_open();
    gen_submit(g, "alone", &p);
    rec_t alone = gen_wait(g, "alone", 0, 60000);
    cr_assert_eq(alone.tokens, 30);

    /* The same request again while seven others with other prompts and sampling run.  It is
     * sent right behind them, so it joins their batch unless this machine stalls the server
     * for their whole 200 steps; such a stall is retried, a batch that was shared is not. */
    rec_t batched = {0};
    for (int attempt = 0; attempt < 3 && batched.batch_size <= 1; attempt++) {
        for (int i = 0; i < 7; i++) {
            char id[16];
            snprintf(id, sizeof(id), "o%d-%d", attempt, i);
            params_t q = {.prompt = i % 2 ? "bees" : "the old tree by the river",
                          .max_tokens = 200,
                          .ignore_eos = true,
                          .temperature = 0.7f * (float)(i % 3)};
            gen_submit(g, id, &q);
        }
        char id[16];
        snprintf(id, sizeof(id), "batched%d", attempt);
        gen_submit(g, id, &p);
        batched = gen_wait(g, id, 0, 60000);
    }
    cr_assert_gt(batched.batch_size, 1, "the repeat did not share a batch in 3 tries");
    cr_assert_eq(batched.tokens, 30);
    cr_assert_eq(memcmp(alone.ids, batched.ids, 30 * sizeof(int)), 0,
                 "greedy tokens changed with batching");
    cr_assert_str_eq(alone.text, batched.text);
    cr_assert_eq(rpc_stream_close_send(g->s), LS_OK);
    cr_assert(gen_wait_end(g, 60000));
    gen_release(g);
}

Test(inference, stop_string_is_not_sent)
{
    gen_t *g = gen_open();
    params_t p = {.prompt = "one two three", .max_tokens = 80, .ignore_eos = true};
    gen_submit(g, "full", &p);
    rec_t full = gen_wait(g, "full", 0, 60000);
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
    gen_submit(g, "cut", &p);
    rec_t cut = gen_wait(g, "cut", 0, 60000);
    cr_assert_eq(cut.reason, DONE(STOP));
    cr_assert_eq(cut.text_len, first, "got \"%s\" for stop \"%s\" in \"%s\"", cut.text, stop,
                 full.text);
    cr_assert_null(strstr(cut.text, stop));
    gen_release(g);
}

Test(inference, bad_inputs_each_get_invalid_argument_and_the_stream_goes_on)
{
    gen_t *g = gen_open();
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
        params_t p;
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
        gen_submit(g, cases[i].id, &cases[i].p);
    char long_id[140];
    memset(long_id, 'i', 129);
    long_id[129] = '\0';
    params_t ok = {.prompt = "x", .max_tokens = 3, .ignore_eos = true};
    gen_submit(g, long_id, &ok);

    for (size_t i = 0; i < n; i++) {
        rec_t r = gen_wait(g, cases[i].id, 0, 10000);
        cr_assert_eq(r.error, GRPC_STATUS_INVALID_ARGUMENT, "case %s: error %d reason %d",
                     cases[i].id, r.error, r.reason);
        cr_assert(strstr(r.msg, cases[i].why), "case %s: message \"%s\"", cases[i].id, r.msg);
        cr_assert_eq(r.started + r.tokens, 0, "case %s: events before the error", cases[i].id);
        cr_assert_eq(r.terminal, 1);
    }
    rec_t r = gen_wait(g, long_id, 0, 10000);
    cr_assert_eq(r.error, GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(r.msg, "129"), "%s", r.msg);

    /* The stream is still good. */
    gen_submit(g, "after", &ok);
    rec_t after = gen_wait(g, "after", 0, 30000);
    cr_assert_eq(after.reason, DONE(LENGTH));
    cr_assert_eq(after.tokens, 3);
    cr_assert_eq(rpc_stream_close_send(g->s), LS_OK);
    cr_assert(gen_wait_end(g, 30000));
    cr_assert_eq(g->status.code, GRPC_STATUS_OK);
    gen_release(g);
}

/* ---- tests: the slow model ------------------------------------------------------------ */

TestSuite(slow, .fini = stop_all, .timeout = 240);

Test(slow, cancel_mid_generation_frees_the_slot_for_the_next_request)
{
    /* The KV budget holds exactly one full-length sequence. */
    static const char *const extra[] = {"--max-batch", "4", "--kv-budget-tokens", "1024", NULL};
    start_with(SLOW, extra);
    gen_t *g = gen_open();
    /* max_tokens above the room is clamped: a reserves the whole context. */
    params_t big = {.prompt = "go", .max_tokens = 5000, .ignore_eos = true};
    gen_submit(g, "a", &big);
    gen_wait(g, "a", 3, 60000);
    params_t small = {.prompt = "next", .max_tokens = 12, .ignore_eos = true};
    gen_submit(g, "b", &small);
    ls_sleep_us(100000);
    pthread_mutex_lock(&g->mu);
    int b_started = do_rec(g, "b")->started;
    pthread_mutex_unlock(&g->mu);
    cr_assert_eq(b_started, 0, "b must wait while a holds the whole KV budget");

    gen_cancel(g, "no-such-request"); /* ignored: no event */
    gen_cancel(g, "a");
    rec_t a = gen_wait(g, "a", 0, 10000);
    cr_assert_eq(a.reason, DONE(CANCELLED), "reason %d error %d", a.reason, a.error);
    cr_assert_lt(a.tokens, 1000);
    cr_assert_eq(a.prompt_tokens + a.tokens < 1024, true);
    cr_assert_eq(a.completion_tokens, (uint32_t)a.tokens);
    rec_t b = gen_wait(g, "b", 0, 60000);
    cr_assert_eq(b.reason, DONE(LENGTH));
    cr_assert_eq(b.tokens, 12);
    /* b was admitted only once a's KV came back (one stream: events arrive in order). */
    cr_assert_geq(b.started_at, a.ended_at, "b started before a ended");
    cr_assert_gt(b.queue_us, 0);
    cr_assert_eq(rpc_stream_close_send(g->s), LS_OK);
    cr_assert(gen_wait_end(g, 30000));
    cr_assert_eq(g->status.code, GRPC_STATUS_OK);
    pthread_mutex_lock(&g->mu);
    cr_assert_eq(g->n_recs, 2, "the cancel of an unknown id made an event");
    pthread_mutex_unlock(&g->mu);
    gen_release(g);
}

Test(slow, duplicate_id_is_refused_and_the_first_goes_on)
{
    start_with(SLOW, NULL);
    gen_t *g = gen_open();
    /* 150 slow tokens: far longer than the second submit takes to arrive. */
    params_t first = {.prompt = "go on", .max_tokens = 150, .ignore_eos = true};
    params_t second = {.prompt = "x", .max_tokens = 3, .ignore_eos = true};
    gen_submit(g, "dup", &first);
    gen_submit(g, "dup", &second);
    gen_submit(g, "after", &second);
    rec_t after = gen_wait(g, "after", 0, 30000);
    cr_assert_eq(after.reason, DONE(LENGTH));
    cr_assert_eq(after.tokens, 3);
    rec_t dup = gen_wait_n(g, "dup", 0, 2, 30000);
    cr_assert_eq(dup.terminal, 2, "one ALREADY_EXISTS error plus the first request's done");
    cr_assert_eq(dup.error, GRPC_STATUS_ALREADY_EXISTS, "%d %s", dup.error, dup.msg);
    cr_assert_eq(dup.reason, DONE(LENGTH));
    cr_assert_eq(dup.tokens, 150, "the first request went on undisturbed");
    cr_assert_eq(rpc_stream_close_send(g->s), LS_OK);
    cr_assert(gen_wait_end(g, 30000));
    gen_release(g);
}

Test(slow, full_queue_answers_resource_exhausted_at_once)
{
    static const char *const extra[] = {"--max-batch", "1", "--max-queue", "2", NULL};
    start_with(SLOW, extra);
    gen_t *g = gen_open();
    params_t big = {.prompt = "go", .max_tokens = 1000, .ignore_eos = true};
    gen_submit(g, "run", &big);
    gen_wait(g, "run", 1, 60000);
    gen_submit(g, "q1", &big);
    gen_submit(g, "q2", &big);
    int64_t t0 = ls_now_us();
    gen_submit(g, "over", &big);
    rec_t over = gen_wait(g, "over", 0, 10000);
    cr_assert_eq(over.error, GRPC_STATUS_RESOURCE_EXHAUSTED, "%d %s", over.error, over.msg);
    cr_assert_lt(over.ended_at - t0, 2000000, "the refusal must not wait for the batch");
    gen_cancel(g, "run");
    gen_cancel(g, "q1");
    gen_cancel(g, "q2");
    params_t small = {.prompt = "x", .max_tokens = 4, .ignore_eos = true};
    rec_t run = gen_wait(g, "run", 0, 10000);
    rec_t q1 = gen_wait(g, "q1", 0, 10000);
    rec_t q2 = gen_wait(g, "q2", 0, 10000);
    cr_assert_eq(run.reason, DONE(CANCELLED));
    cr_assert_eq(q1.reason, DONE(CANCELLED));
    cr_assert_eq(q2.reason, DONE(CANCELLED));
    gen_submit(g, "later", &small); /* the stream stayed open */
    rec_t later = gen_wait(g, "later", 0, 30000);
    cr_assert_eq(later.reason, DONE(LENGTH));
    cr_assert_eq(later.tokens, 4);
    gen_release(g);
}

Test(slow, deadlines_are_respected)
{
    static const char *const extra[] = {"--max-batch", "1", "--kv-budget-tokens", "1024", NULL};
    start_with(SLOW, extra);
    gen_t *g = gen_open();
    /* Running: the request's own timeout ends it (done DEADLINE once it has a token). */
    params_t timed = {.prompt = "go", .max_tokens = 1000, .ignore_eos = true, .timeout_ms = 300};
    int64_t t0 = ls_now_us();
    gen_submit(g, "timed", &timed);
    rec_t r = gen_wait(g, "timed", 0, 30000);
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
    params_t big = {.prompt = "go", .max_tokens = 1000, .ignore_eos = true};
    gen_submit(g, "long", &big);
    gen_wait(g, "long", 1, 60000);
    params_t queued = {.prompt = "x", .max_tokens = 4, .timeout_ms = 150};
    gen_submit(g, "queued", &queued);
    rec_t q = gen_wait(g, "queued", 0, 30000);
    cr_assert_eq(q.error, GRPC_STATUS_DEADLINE_EXCEEDED, "%d %s", q.error, q.msg);
    cr_assert_eq(q.started, 0);
    gen_cancel(g, "long");
    gen_wait(g, "long", 0, 10000);
    gen_release(g);

    /* The call's own deadline ends the stream; its request's KV comes back, so a
     * request needing the whole budget still runs afterwards. */
    gen_t *d = gen_open_with(400000);
    gen_submit(d, "doomed", &big);
    cr_assert(gen_wait_end(d, 10000), "a stream with a 400 ms deadline did not end");
    cr_assert_eq(d->status.code, GRPC_STATUS_DEADLINE_EXCEEDED, "%d %s", d->status.code,
                 d->status.details);
    gen_release(d);
    gen_t *after = gen_open();
    params_t whole = {.prompt = "go", .max_tokens = 1000, .ignore_eos = true};
    gen_submit(after, "whole", &whole);
    rec_t w = gen_wait(after, "whole", 1, 30000);
    cr_assert_eq(w.error, 0, "%d %s", w.error, w.msg);
    gen_cancel(after, "whole");
    w = gen_wait(after, "whole", 0, 10000);
    cr_assert_eq(w.reason, DONE(CANCELLED));
    gen_release(after);
}

Test(slow, sigterm_with_requests_in_flight_ends_each_once_and_exits_zero)
{
    static const char *const extra[] = {"--max-batch", "2", "--grace-ms", "300", NULL};
    start_with(SLOW, extra);
    gen_t *g = gen_open();
    params_t big = {.prompt = "go", .max_tokens = 1000, .ignore_eos = true};
    params_t small = {.prompt = "hi", .max_tokens = 3, .ignore_eos = true};
    const char *ids[] = {"r0", "r1", "r2", "r3", "quick"};
    gen_submit(g, "quick", &small);
    for (int i = 0; i < 4; i++)
        gen_submit(g, ids[i], &big);
    gen_wait(g, "r0", 1, 60000);

    cr_assert_eq(kill(g_server.pid, SIGTERM), 0);
    cr_assert(gen_wait_end(g, 20000), "stream did not end at shutdown");
    int status = test_proc_stop(&g_server, SIGTERM, 20000);
    cr_assert_eq(status, 0, "exit status %d", status);
    for (int i = 0; i < 5; i++) {
        rec_t r = gen_wait(g, ids[i], 0, 1000);
        cr_assert_eq(r.terminal, 1, "%s: %d terminal events", ids[i], r.terminal);
        cr_assert(r.order_ok, "%s: events out of order", ids[i]);
        if (r.error)
            cr_assert_eq(r.error, GRPC_STATUS_UNAVAILABLE, "%s: %d %s", ids[i], r.error, r.msg);
        else
            cr_assert_eq(r.reason, DONE(LENGTH), "%s: reason %d", ids[i], r.reason);
    }
    rec_t quick = gen_wait(g, "quick", 0, 1000);
    cr_assert_eq(quick.reason, DONE(LENGTH), "a short request finishes within the grace");
    cr_assert_eq(g->status.code, GRPC_STATUS_UNAVAILABLE, "%d %s", g->status.code,
                 g->status.details);
    gen_release(g);
}
