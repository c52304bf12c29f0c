/*
 * test_scheduler.c - services/inference/scheduler.c over a real CPU forward pass of a
 * tiny random-weight model, with a sink that records every event.  No RPC: this is
 * the batching loop's own contract (events per request, batching, KV, limits).
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "model/checkpoint_write.h"
#include "model/forward.h"
#include "model/tokenizer_make.h"
#include "request.h"
#include "scheduler.h"
#include "support/recording_reporter.h"
#include "support/tmpdir.h"
#include "svc/metric_names.h"

#include <criterion/criterion.h>
#include <grpc/status.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VOCAB 512
#define SEQ_LEN 1024 /* long enough that a full-length answer outlasts a cancel */
#define MAX_TOK 1024

static test_tmpdir_t g_dir;
static char g_model[192], g_tokfile[192];
static ckpt_t *g_ck;
static tok_t *g_tok;
static inf_limits_t g_lim;

/* ---- what the sink saw, per request ----------------------------------------------- */

typedef struct {
    int started, tokens, terminal;
    bool order_ok; /* started first, indexes 0,1,2..., nothing after the terminal */
    int ids[MAX_TOK];
    char text[8192];
    size_t text_len;
    size_t text_at[MAX_TOK]; /* text_len after each token */
    uint32_t cached_tokens;
    uint32_t batch_size, prompt_tokens;
    uint64_t queue_us;
    int reason; /* FinishReason of done, or 0 */
    int error;  /* gRPC code of error, or 0 */
    char error_msg[160];
    uint32_t completion_tokens;
    int64_t started_at, ended_at;
    bool released;
} rec_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
/* While set, the scheduler thread stops in the started event of this request (the sink
 * runs with no scheduler lock held), so a test can queue requests before any step. */
static const rec_t *g_gate;
static bool g_gate_reached; /* the scheduler is waiting at the gate */

static int sink_emit(inf_request_t *r, const Llmserve__V1__InferenceEvent *ev)
{
    rec_t *rec = r->owner;
    pthread_mutex_lock(&g_mu);
    if (g_gate == rec && ev->kind_case == LLMSERVE__V1__INFERENCE_EVENT__KIND_STARTED) {
        g_gate_reached = true;
        pthread_cond_broadcast(&g_cv);
    }
    while (g_gate == rec && ev->kind_case == LLMSERVE__V1__INFERENCE_EVENT__KIND_STARTED)
        pthread_cond_wait(&g_cv, &g_mu);
    if (rec->terminal > 0)
        rec->order_ok = false;
    switch (ev->kind_case) {
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_STARTED:
        if (rec->started++ > 0)
            rec->order_ok = false;
        rec->batch_size = ev->started->batch_size;
        rec->prompt_tokens = ev->started->prompt_tokens;
        rec->queue_us = ev->started->queue_us;
        rec->cached_tokens = ev->started->cached_tokens;
        rec->started_at = ls_now_us();
        break;
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_TOKEN:
        if (!rec->started || (int)ev->token->index != rec->tokens)
            rec->order_ok = false;
        if (rec->tokens < MAX_TOK)
            rec->ids[rec->tokens] = ev->token->id;
        rec->tokens++;
        size_t len = strlen(ev->token->text);
        if (rec->text_len + len < sizeof(rec->text)) {
            memcpy(rec->text + rec->text_len, ev->token->text, len);
            rec->text_len += len;
            rec->text[rec->text_len] = '\0';
        }
        if (rec->tokens - 1 < MAX_TOK)
            rec->text_at[rec->tokens - 1] = rec->text_len;
        break;
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_DONE:
        rec->terminal++;
        rec->reason = ev->done->finish_reason;
        rec->completion_tokens = ev->done->usage->completion_tokens;
        rec->ended_at = ls_now_us();
        break;
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_ERROR:
        rec->terminal++;
        rec->error = ev->error->code;
        snprintf(rec->error_msg, sizeof(rec->error_msg), "%s", ev->error->message);
        rec->ended_at = ls_now_us();
        break;
    default:
        rec->order_ok = false;
        break;
    }
    pthread_mutex_unlock(&g_mu);
    return LS_OK;
}

static void sink_release(inf_request_t *r)
{
    rec_t *rec = r->owner;
    inf_request_destroy(r);
    pthread_mutex_lock(&g_mu);
    rec->released = true;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static const inf_sink_t g_sink = {sink_emit, sink_release, NULL};

/* ---- fixtures ------------------------------------------------------------------------- */

static void setup(void)
{
    cr_assert_eq(test_tmpdir_make(&g_dir, "llmserve-test-sched"), 0);
    test_tmpdir_file(&g_dir, "model.bin", g_model, sizeof(g_model));
    test_tmpdir_file(&g_dir, "tokenizer.bin", g_tokfile, sizeof(g_tokfile));
    ckpt_config_t c = {.dim = 64,
                       .hidden_dim = 172,
                       .n_layers = 2,
                       .n_heads = 4,
                       .n_kv_heads = 2,
                       .vocab_size = VOCAB,
                       .seq_len = SEQ_LEN,
                       .shared_classifier = false};
    char err[256];
    cr_assert_eq(ckpt_write(g_model, &c, 42, CKPT_FORMAT_LEGACY, err, sizeof(err)), LS_OK, "%s",
                 err);
    cr_assert_eq(tok_make(g_tokfile, VOCAB, err, sizeof(err)), LS_OK, "%s", err);
    g_ck = ckpt_open(g_model, err, sizeof(err));
    cr_assert_not_null(g_ck, "%s", err);
    g_tok = tok_load(g_tokfile, VOCAB, err, sizeof(err));
    cr_assert_not_null(g_tok, "%s", err);
    g_lim.vocab_size = VOCAB;
    g_lim.seq_len = SEQ_LEN;
    g_lim.default_max_tokens = 32;
    g_lim.max_tokens_limit = 0;
    g_lim.max_prompt_bytes = (size_t)SEQ_LEN * inf_longest_piece(g_tok);
}

static void teardown(void)
{
    tok_destroy(g_tok);
    ckpt_close(g_ck);
    test_tmpdir_remove(&g_dir);
}

TestSuite(sched, .init = setup, .fini = teardown, .timeout = 120);

typedef struct {
    const char *prompt;
    const int32_t *tokens; /* pre-tokenized prompt, or NULL */
    size_t n_tokens;
    int max_tokens;
    bool ignore_eos;
    float temperature;
    char **stop;
    size_t n_stop;
    int64_t deadline_in_us; /* 0 = none */
    const int32_t *resume;  /* resume_tokens, or NULL */
    size_t n_resume;
    int priority; /* Priority enum value; 0 = unspecified */
} params_t;

/* Priority settings rig_make_full gives every scheduler (a test sets them first). */
static int64_t g_aging_us;
static int g_class_max[INF_PRIO_COUNT];
static int g_max_preemptions;
static int64_t g_step_delay_us; /* a pause after each step, for tests that race the batch */

static inf_request_t *make_req(const char *id, const params_t *p, rec_t *rec)
{
    Llmserve__V1__InferenceSubmit sub = LLMSERVE__V1__INFERENCE_SUBMIT__INIT;
    Llmserve__V1__SamplingParams sp = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    sub.request_id = (char *)id;
    sub.prompt = (char *)(p->prompt ? p->prompt : "");
    sub.prompt_tokens = (int32_t *)p->tokens;
    sub.n_prompt_tokens = p->n_tokens;
    sub.sampling = &sp;
    sub.resume_tokens = (int32_t *)p->resume;
    sub.n_resume_tokens = p->n_resume;
    sub.priority = (Llmserve__V1__Priority)p->priority;
    sp.max_tokens = p->max_tokens;
    sp.ignore_eos = p->ignore_eos;
    sp.temperature = p->temperature;
    sp.stop = p->stop;
    sp.n_stop = p->n_stop;
    sp.has_seed = true;
    sp.seed = 1234;
    inf_request_t *r = NULL;
    char err[256];
    int64_t now = ls_now_us();
    cr_assert_eq(inf_request_create(&sub, g_tok, &g_lim, now, &r, err, sizeof(err)), LS_OK, "%s",
                 err);
    if (p->deadline_in_us > 0)
        r->deadline_us = now + p->deadline_in_us;
    memset(rec, 0, sizeof(*rec));
    rec->order_ok = true;
    r->sink = &g_sink;
    r->owner = rec;
    return r;
}

typedef struct {
    forward_t *f;
    inf_sched_t *s;
} rig_t;

/* What on_fatal saw: calls, the reason, and what the scheduler said when asked from
 * inside the callback (which proves no scheduler lock was held). */
typedef struct {
    inf_sched_t *s; /* set once the scheduler is made */
    int calls;
    char reason[256];
    pthread_t thread;
    int queued, running;
    int submit_rc;
} fatal_rec_t;

static fatal_rec_t g_fatal;

static void on_fatal(void *ud, const char *reason)
{
    fatal_rec_t *fr = ud;
    pthread_mutex_lock(&g_mu);
    inf_sched_t *s = fr->s;
    pthread_mutex_unlock(&g_mu);
    int queued = -1, running = -1;
    inf_sched_counts(s, &queued, &running);
    static rec_t rec; /* outlives the call, should the submit be taken */
    params_t p = {.prompt = "inside", .max_tokens = 4};
    inf_request_t *r = make_req("inside", &p, &rec);
    int rc = inf_sched_submit(s, r);
    if (rc != LS_OK)
        inf_request_destroy(r);
    pthread_mutex_lock(&g_mu);
    fr->calls++;
    snprintf(fr->reason, sizeof(fr->reason), "%s", reason);
    fr->thread = pthread_self();
    fr->queued = queued;
    fr->running = running;
    fr->submit_rc = rc;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

/* The compute backend under test: the CPU, or CUDA with LLMSERVE_TEST_BACKEND=cuda
 * (tools/gpu-check.sh on a GPU machine). */
static forward_backend_t test_backend(void)
{
    const char *b = getenv("LLMSERVE_TEST_BACKEND");
    return b && strcmp(b, "cuda") == 0 ? FORWARD_CUDA : FORWARD_CPU;
}

/* fault_after_steps > 0: the device fails for good after that many steps (on CUDA a
 * real illegal-address fault, on the CPU a reported one).  rep: the scheduler reports
 * to it (NULL: none), as pool "p1", model "m1". */
static rig_t rig_make_full(int max_batch, int max_step_tokens, int64_t kv_budget, int max_queue,
                           int fault_after_steps, svc_reporter_t *rep)
{
    forward_config_t fc;
    forward_config_init(&fc);
    fc.backend = test_backend();
    fc.max_batch = max_batch;
    fc.max_step_tokens = max_step_tokens;
    fc.kv_budget_tokens = kv_budget;
    fc.threads = 1;
    fc.fault_after_steps = fault_after_steps;
    char err[256];
    rig_t rig;
    rig.f = forward_create(g_ck, &fc, err, sizeof(err));
    cr_assert_not_null(rig.f, "%s", err);
    inf_sched_config_t sc = {.max_queue = max_queue,
                             .max_queue_delay_us = 1000,
                             .on_fatal = on_fatal,
                             .on_fatal_ud = &g_fatal,
                             .reporter = rep,
                             .pool = "p1",
                             .model = "m1",
                             .priority_aging_us = g_aging_us,
                             .class_max_running = {g_class_max[0], g_class_max[1], g_class_max[2]},
                             .max_preemptions = g_max_preemptions,
                             .step_delay_us = g_step_delay_us};
    rig.s = inf_sched_create(rig.f, g_tok, &sc, err, sizeof(err));
    cr_assert_not_null(rig.s, "%s", err);
    pthread_mutex_lock(&g_mu);
    g_fatal.s = rig.s; /* before any submit, so before any step can fail */
    pthread_mutex_unlock(&g_mu);
    return rig;
}

static rig_t rig_make_faulty(int max_batch, int max_step_tokens, int64_t kv_budget, int max_queue,
                             int fault_after_steps)
{
    return rig_make_full(max_batch, max_step_tokens, kv_budget, max_queue, fault_after_steps, NULL);
}

static rig_t rig_make_reported(int max_batch, int max_step_tokens, int64_t kv_budget, int max_queue,
                               svc_reporter_t *rep)
{
    return rig_make_full(max_batch, max_step_tokens, kv_budget, max_queue, 0, rep);
}

static rig_t rig_make(int max_batch, int max_step_tokens, int64_t kv_budget, int max_queue)
{
    return rig_make_full(max_batch, max_step_tokens, kv_budget, max_queue, 0, NULL);
}

static void rig_free(rig_t *rig)
{
    inf_sched_destroy(rig->s);
    forward_destroy(rig->f);
}

static void submit_ok(rig_t *rig, const char *id, const params_t *p, rec_t *rec)
{
    inf_request_t *r = make_req(id, p, rec);
    cr_assert_eq(inf_sched_submit(rig->s, r), LS_OK, "submit %s", id);
}

static bool wait_released(rec_t *rec, int timeout_ms)
{
    int64_t end = ls_now_us() + (int64_t)timeout_ms * 1000;
    pthread_mutex_lock(&g_mu);
    while (!rec->released && ls_now_us() < end) {
        pthread_mutex_unlock(&g_mu);
        ls_sleep_us(1000);
        pthread_mutex_lock(&g_mu);
    }
    bool ok = rec->released;
    pthread_mutex_unlock(&g_mu);
    return ok;
}

static bool wait_tokens(rec_t *rec, int n, int timeout_ms)
{
    int64_t end = ls_now_us() + (int64_t)timeout_ms * 1000;
    pthread_mutex_lock(&g_mu);
    while (rec->tokens < n && !rec->released && ls_now_us() < end) {
        pthread_mutex_unlock(&g_mu);
        ls_sleep_us(200);
        pthread_mutex_lock(&g_mu);
    }
    bool ok = rec->tokens >= n;
    pthread_mutex_unlock(&g_mu);
    return ok;
}

#define DONE(reason) LLMSERVE__V1__FINISH_REASON__FINISH_REASON_##reason

/* ---- tests ------------------------------------------------------------------------------ */

Test(sched, every_request_completes_with_exact_counts_and_ordered_events)
{
    enum { N = 12, MAX_BATCH = 5, LEN = 20 };
    rig_t rig = rig_make(MAX_BATCH, 64, 0, 64);
    rec_t recs[N];
    params_t p = {.prompt = "once upon a time", .max_tokens = LEN, .ignore_eos = true};
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "r%d", i);
        submit_ok(&rig, id, &p, &recs[i]);
    }
    for (int i = 0; i < N; i++) {
        cr_assert(wait_released(&recs[i], 60000), "request %d never ended", i);
        cr_assert(recs[i].order_ok, "request %d: events out of order", i);
        cr_assert_eq(recs[i].started, 1);
        cr_assert_eq(recs[i].terminal, 1);
        cr_assert_eq(recs[i].tokens, LEN, "request %d: %d tokens", i, recs[i].tokens);
        cr_assert_eq(recs[i].reason, DONE(LENGTH));
        cr_assert_eq(recs[i].completion_tokens, LEN);
        cr_assert_geq(recs[i].batch_size, 1);
        cr_assert_leq(recs[i].batch_size, MAX_BATCH);
    }
    /* Identical greedy requests: identical answers, however they were batched. */
    for (int i = 1; i < N; i++)
        cr_assert_eq(memcmp(recs[i].ids, recs[0].ids, LEN * sizeof(int)), 0,
                     "request %d differs from request 0", i);
    cr_assert_eq(forward_kv_free_tokens(rig.f), forward_config(rig.f)->kv_budget_tokens,
                 "every KV block is back");
    rig_free(&rig);
}

Test(sched, greedy_answer_is_the_same_alone_and_in_a_mixed_batch)
{
    rig_t rig = rig_make(8, 64, 0, 64);
    params_t p = {.prompt = "the little dog ran", .max_tokens = 24, .ignore_eos = true};
    rec_t alone;
    submit_ok(&rig, "alone", &p, &alone);
    cr_assert(wait_released(&alone, 60000));

    rec_t others[6], again;
    const char *prompts[] = {
        "a", "big red ball and a small blue one", "x y z", "hello", "the cat", "what is the time"};
    for (int i = 0; i < 6; i++) {
        params_t q = {.prompt = prompts[i],
                      .max_tokens = 400 + 7 * i,
                      .ignore_eos = true,
                      .temperature = i % 2 ? 0.8f : 0.0f};
        char id[16];
        snprintf(id, sizeof(id), "o%d", i);
        submit_ok(&rig, id, &q, &others[i]);
    }
    /* Joins a batch that is already decoding. */
    cr_assert(wait_tokens(&others[0], 1, 60000));
    submit_ok(&rig, "again", &p, &again);
    cr_assert(wait_released(&again, 60000));
    for (int i = 0; i < 6; i++)
        cr_assert(wait_released(&others[i], 60000));
    cr_assert_gt(again.batch_size, 1, "the repeat should have shared its batch");
    cr_assert_eq(again.tokens, 24);
    cr_assert_eq(memcmp(again.ids, alone.ids, 24 * sizeof(int)), 0,
                 "batching changed a greedy answer");
    cr_assert_str_eq(again.text, alone.text);
    rig_free(&rig);
}

Test(sched, chunked_prefill_gives_the_same_tokens)
{
    int32_t prompt[120];
    for (int i = 0; i < 120; i++)
        prompt[i] = 259 + (i * 37) % (VOCAB - 259);
    params_t p = {.tokens = prompt, .n_tokens = 120, .max_tokens = 16, .ignore_eos = true};

    rig_t whole = rig_make(4, 256, 0, 8);
    rec_t a;
    submit_ok(&whole, "a", &p, &a);
    cr_assert(wait_released(&a, 60000));
    rig_free(&whole);

    /* 4 tokens a step: the prompt takes 30 steps, sharing them with a decoding request. */
    rig_t chunked = rig_make(4, 4, 0, 8);
    rec_t b, other;
    params_t q = {.prompt = "hi", .max_tokens = 40, .ignore_eos = true};
    submit_ok(&chunked, "other", &q, &other);
    cr_assert(wait_tokens(&other, 1, 60000));
    submit_ok(&chunked, "b", &p, &b);
    cr_assert(wait_released(&b, 60000));
    cr_assert(wait_released(&other, 60000));
    cr_assert_eq(b.prompt_tokens, 120);
    cr_assert_eq(b.tokens, 16);
    cr_assert_eq(memcmp(a.ids, b.ids, 16 * sizeof(int)), 0, "chunking changed the answer");
    cr_assert_eq(other.tokens, 40);
    rig_free(&chunked);
}

Test(sched, cancel_frees_the_kv_for_the_next_request)
{
    /* A budget of exactly one full sequence. */
    rig_t rig = rig_make(4, 64, SEQ_LEN, 8);
    int64_t budget = forward_kv_free_tokens(rig.f);
    params_t big = {.prompt = "go", .max_tokens = SEQ_LEN, .ignore_eos = true};
    rec_t a, b;
    inf_request_t *ra = make_req("a", &big, &a);
    cr_assert_eq(inf_sched_submit(rig.s, ra), LS_OK);
    cr_assert(wait_tokens(&a, 3, 60000));
    params_t small = {.prompt = "next", .max_tokens = 8, .ignore_eos = true};
    submit_ok(&rig, "b", &small, &b);
    ls_sleep_us(20000);
    pthread_mutex_lock(&g_mu);
    bool b_started = b.started;
    pthread_mutex_unlock(&g_mu);
    cr_assert_not(b_started, "b must wait: a holds the whole KV budget");

    inf_sched_cancel(rig.s, ra);
    cr_assert(wait_released(&a, 10000));
    cr_assert_eq(a.terminal, 1);
    cr_assert_eq(a.reason, DONE(CANCELLED));
    cr_assert_lt(a.tokens, SEQ_LEN - 1);
    cr_assert(wait_released(&b, 60000));
    cr_assert_eq(b.reason, DONE(LENGTH));
    cr_assert_eq(b.tokens, 8);
    cr_assert_geq(b.started_at, a.ended_at, "b joined only after a left");
    cr_assert_eq(forward_kv_free_tokens(rig.f), budget);
    rig_free(&rig);
}

Test(sched, cancel_while_queued_ends_with_cancelled)
{
    rig_t rig = rig_make(1, 64, 0, 8);
    params_t big = {.prompt = "go", .max_tokens = SEQ_LEN, .ignore_eos = true};
    rec_t a, b;
    inf_request_t *ra = make_req("a", &big, &a);
    cr_assert_eq(inf_sched_submit(rig.s, ra), LS_OK);
    cr_assert(wait_tokens(&a, 1, 60000));
    inf_request_t *rb = make_req("b", &big, &b);
    cr_assert_eq(inf_sched_submit(rig.s, rb), LS_OK);
    inf_sched_cancel(rig.s, rb);
    cr_assert(wait_released(&b, 10000));
    cr_assert_eq(b.started, 0, "never joined the batch");
    cr_assert_eq(b.terminal, 1);
    cr_assert_eq(b.reason, DONE(CANCELLED));
    inf_sched_cancel(rig.s, ra);
    cr_assert(wait_released(&a, 10000));
    rig_free(&rig);
}

Test(sched, full_queue_refuses_at_once)
{
    rig_t rig = rig_make(1, 64, 0, 2);
    params_t big = {.prompt = "go", .max_tokens = SEQ_LEN, .ignore_eos = true};
    rec_t a, q1, q2, extra;
    inf_request_t *ra = make_req("a", &big, &a);
    cr_assert_eq(inf_sched_submit(rig.s, ra), LS_OK);
    cr_assert(wait_tokens(&a, 1, 60000));
    inf_request_t *r1 = make_req("q1", &big, &q1);
    inf_request_t *r2 = make_req("q2", &big, &q2);
    cr_assert_eq(inf_sched_submit(rig.s, r1), LS_OK);
    cr_assert_eq(inf_sched_submit(rig.s, r2), LS_OK);
    inf_request_t *rx = make_req("x", &big, &extra);
    cr_assert_eq(inf_sched_submit(rig.s, rx), LS_ERR_FULL);
    cr_assert_eq(extra.terminal + extra.started + extra.tokens, 0,
                 "a refused request gets no event");
    inf_request_destroy(rx);
    int queued, running;
    inf_sched_counts(rig.s, &queued, &running);
    cr_assert_eq(queued, 2);
    cr_assert_eq(running, 1);
    inf_sched_cancel(rig.s, r1);
    inf_sched_cancel(rig.s, r2);
    inf_sched_cancel(rig.s, ra);
    cr_assert(wait_released(&a, 10000));
    cr_assert(wait_released(&q1, 10000));
    cr_assert(wait_released(&q2, 10000));
    rig_free(&rig);
}

Test(sched, deadlines_while_queued_and_while_running)
{
    rig_t rig = rig_make(1, 64, 0, 8);
    params_t slow = {
        .prompt = "go", .max_tokens = SEQ_LEN, .ignore_eos = true, .deadline_in_us = 60000};
    rec_t a, b;
    submit_ok(&rig, "a", &slow, &a);
    cr_assert(wait_tokens(&a, 1, 60000));
    params_t queued = {.prompt = "late", .max_tokens = 4, .deadline_in_us = 20000};
    submit_ok(&rig, "b", &queued, &b);
    cr_assert(wait_released(&b, 10000));
    cr_assert(wait_released(&a, 10000));
    /* b waited behind a (max_batch 1) until its deadline. */
    cr_assert_eq(b.started, 0);
    cr_assert_eq(b.error, GRPC_STATUS_DEADLINE_EXCEEDED, "b: error %d reason %d", b.error,
                 b.reason);
    /* a produced a token before its deadline, so it ends with done DEADLINE - unless it
     * was fast enough to finish every token first (then LENGTH). */
    if (a.reason == DONE(LENGTH)) {
        cr_assert_eq(a.tokens, SEQ_LEN - (int)a.prompt_tokens);
    } else {
        cr_assert_eq(a.reason, DONE(DEADLINE), "a: error %d reason %d", a.error, a.reason);
        cr_assert_eq(a.completion_tokens, (uint32_t)a.tokens);
    }
    cr_assert_eq(a.terminal, 1);
    rig_free(&rig);
}

/* Copies into stop (16 bytes) about len bytes of whole characters of full's answer from
 * about `at` (moved back to a character's start); returns where they start. */
static size_t stop_from(const rec_t *full, size_t at, size_t len, char *stop)
{
    while (at > 0 && ((unsigned char)full->text[at] & 0xc0) == 0x80)
        at--;
    size_t end = at + len;
    while (end < full->text_len && ((unsigned char)full->text[end] & 0xc0) == 0x80)
        end++;
    cr_assert_lt(end - at, 16);
    memcpy(stop, full->text + at, end - at);
    stop[end - at] = '\0';
    return at;
}

Test(sched, stop_string_ends_the_answer_before_it)
{
    rig_t rig = rig_make(4, 64, 0, 8);
    params_t p = {.prompt = "the quick brown fox", .max_tokens = 60, .ignore_eos = true};
    rec_t full;
    submit_ok(&rig, "full", &p, &full);
    cr_assert(wait_released(&full, 60000));
    cr_assert_gt(full.text_len, 12, "need some text to cut: \"%s\"", full.text);

    /* A stop string taken from the middle of the answer (whole characters), cut at
     * its first occurrence. */
    char stop[16];
    (void)stop_from(&full, full.text_len / 2, 3, stop);
    size_t first = (size_t)(strstr(full.text, stop) - full.text);
    char *stops[] = {stop};
    params_t q = p;
    q.stop = stops;
    q.n_stop = 1;
    rec_t cut;
    submit_ok(&rig, "cut", &q, &cut);
    cr_assert(wait_released(&cut, 60000));
    cr_assert_eq(cut.reason, DONE(STOP), "reason %d", cut.reason);
    cr_assert_eq(cut.text_len, first, "answer \"%s\", stop \"%s\"", cut.text, stop);
    cr_assert_eq(strncmp(cut.text, full.text, first), 0);
    cr_assert_lt(cut.tokens, full.tokens);
    cr_assert_eq(cut.completion_tokens, (uint32_t)cut.tokens);
    rig_free(&rig);
}

Test(sched, drain_ends_everything_and_refuses_new_work)
{
    rig_t rig = rig_make(2, 64, 0, 8);
    params_t big = {.prompt = "go", .max_tokens = SEQ_LEN, .ignore_eos = true};
    rec_t recs[5];
    for (int i = 0; i < 5; i++) {
        char id[8];
        snprintf(id, sizeof(id), "d%d", i);
        submit_ok(&rig, id, &big, &recs[i]);
    }
    cr_assert(wait_tokens(&recs[0], 1, 60000));
    int64_t t0 = ls_now_us();
    inf_sched_drain(rig.s, 30000);
    cr_assert_lt(ls_now_us() - t0, 5000000, "drain took too long");
    for (int i = 0; i < 5; i++) {
        cr_assert(recs[i].released, "request %d still in flight after drain", i);
        cr_assert_eq(recs[i].terminal, 1, "request %d: %d terminal events", i, recs[i].terminal);
        if (recs[i].error)
            cr_assert_eq(recs[i].error, GRPC_STATUS_UNAVAILABLE, "%d: %s", i, recs[i].error_msg);
        else
            cr_assert_eq(recs[i].reason, DONE(LENGTH), "only a finished answer may be done");
    }
    rec_t late;
    inf_request_t *r = make_req("late", &big, &late);
    cr_assert_eq(inf_sched_submit(rig.s, r), LS_ERR_CLOSED);
    inf_request_destroy(r);
    rig_free(&rig);
}

Test(sched, device_lost_ends_every_request_once_with_unavailable_and_refuses_new_work)
{
    enum { N = 5, MAX_BATCH = 2, FAULT_AFTER = 10 };
    rig_t rig = rig_make_faulty(MAX_BATCH, 64, 0, 8, FAULT_AFTER);
    params_t big = {.prompt = "go", .max_tokens = SEQ_LEN, .ignore_eos = true};
    rec_t recs[N];
    /* Every request is in before the first step: MAX_BATCH run, the rest queue. */
    pthread_mutex_lock(&g_mu);
    g_gate = &recs[0];
    pthread_mutex_unlock(&g_mu);
    for (int i = 0; i < N; i++) {
        char id[8];
        snprintf(id, sizeof(id), "f%d", i);
        submit_ok(&rig, id, &big, &recs[i]);
    }
    pthread_mutex_lock(&g_mu);
    g_gate = NULL;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);

    int n_started = 0;
    for (int i = 0; i < N; i++) {
        cr_assert(wait_released(&recs[i], 60000), "request %d never ended", i);
        pthread_mutex_lock(&g_mu);
        rec_t r = recs[i];
        pthread_mutex_unlock(&g_mu);
        cr_assert(r.order_ok, "request %d: events out of order", i);
        cr_assert_eq(r.terminal, 1, "request %d: %d terminal events", i, r.terminal);
        cr_assert_eq(r.error, GRPC_STATUS_UNAVAILABLE, "request %d: error %d reason %d", i, r.error,
                     r.reason);
        cr_assert_str_eq(r.error_msg, INF_SCHED_DEVICE_FAILED_MSG);
        if (r.started) {
            n_started++;
            cr_assert_gt(r.tokens, 0, "request %d ran but has no token", i);
            cr_assert_leq(r.tokens, FAULT_AFTER, "request %d: a token after the fault", i);
        } else {
            cr_assert_eq(r.tokens, 0);
        }
    }
    cr_assert_eq(n_started, MAX_BATCH, "the batch runs, the rest waits in the queue");
    cr_assert(forward_device_lost(rig.f));

    /* on_fatal: once, from the scheduler thread, with no scheduler lock held. */
    pthread_mutex_lock(&g_mu);
    int64_t end = ls_now_us() + 10000000;
    while (g_fatal.calls == 0 && ls_now_us() < end) {
        pthread_mutex_unlock(&g_mu);
        ls_sleep_us(1000);
        pthread_mutex_lock(&g_mu);
    }
    fatal_rec_t fr = g_fatal;
    pthread_mutex_unlock(&g_mu);
    cr_assert_eq(fr.calls, 1);
    cr_assert_not(pthread_equal(fr.thread, pthread_self()), "on_fatal ran on the test thread");
    cr_assert_not_null(strstr(fr.reason, "compute device failed"), "%s", fr.reason);
    cr_assert_eq(fr.queued, 0, "the queue was emptied before on_fatal");
    cr_assert_eq(fr.running, 0, "the batch was emptied before on_fatal");
    cr_assert_eq(fr.submit_rc, LS_ERR_DEVICE, "a submit inside on_fatal: %d", fr.submit_rc);

    /* Later: submits are refused with no event, nothing runs, on_fatal stays at one. */
    rec_t late;
    inf_request_t *r = make_req("late", &big, &late);
    cr_assert_eq(inf_sched_submit(rig.s, r), LS_ERR_DEVICE);
    inf_request_destroy(r);
    ls_sleep_us(50000);
    int queued = -1, running = -1;
    inf_sched_counts(rig.s, &queued, &running);
    cr_assert_eq(queued + running, 0);
    pthread_mutex_lock(&g_mu);
    cr_assert_eq(late.started + late.tokens + late.terminal, 0, "a refused request got events");
    cr_assert_eq(g_fatal.calls, 1, "on_fatal more than once");
    pthread_mutex_unlock(&g_mu);
    cr_assert_eq(forward_kv_free_tokens(rig.f), forward_config(rig.f)->kv_budget_tokens,
                 "every KV block is back");
    int64_t t0 = ls_now_us();
    rig_free(&rig); /* drains and joins a failed scheduler */
    cr_assert_lt(ls_now_us() - t0, 5000000, "destroying a failed scheduler took too long");
}

/* ---- metrics (libs/svc/metric_names.h, through a recording reporter) ------------------- */

static const svc_label_t g_instance[] = {{"pool", "p1"}, {"model", "m1"}};
#define INSTANCE g_instance, 2

/* Waits until gauge name (of this instance) was last set to want. */
static bool wait_gauge(recording_reporter_t *rr, const char *name, double want, int timeout_ms)
{
    int64_t end = ls_now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        double v = -1;
        if (recording_reporter_gauge(rr, name, INSTANCE, &v) && v == want)
            return true;
        if (ls_now_us() >= end)
            return false;
        ls_sleep_us(1000);
    }
}

/* Every name the scheduler reports, with the kind and label keys the contract lists. */
static void expect_contract(recording_reporter_t *rr)
{
    static const char *const inst[] = {"pool", "model"};
    static const char *const refused[] = {"pool", "model", "reason"};
    static const struct {
        const char *name;
        recording_kind_t kind;
    } plain[] = {
        {M_INF_QUEUE, RECORDING_OBSERVE},      {M_INF_PREFILL, RECORDING_OBSERVE},
        {M_INF_DECODE, RECORDING_OBSERVE},     {M_INF_STEP, RECORDING_OBSERVE},
        {M_INF_BATCH, RECORDING_OBSERVE},      {M_INF_PROMPT_TOKENS, RECORDING_COUNTER},
        {M_INF_GEN_TOKENS, RECORDING_COUNTER}, {M_INF_RUNNING, RECORDING_GAUGE},
        {M_INF_WAITING, RECORDING_GAUGE},      {M_INF_KV_USED, RECORDING_GAUGE},
        {M_INF_KV_CAPACITY, RECORDING_GAUGE},     {M_INF_QUEUE_LIMIT, RECORDING_GAUGE},
        {M_INF_PREFIX_HIT_TOKENS, RECORDING_COUNTER},
    };
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
        cr_expect_eq(recording_reporter_misfits(rr, plain[i].name, plain[i].kind, inst, 2), 0,
                     "%s reported with another kind or other labels", plain[i].name);
    cr_expect_eq(recording_reporter_misfits(rr, M_INF_REFUSED, RECORDING_COUNTER, refused, 3), 0);
    static const char *const by_prio[] = {"pool", "model", "priority"};
    cr_expect_eq(
        recording_reporter_misfits(rr, M_INF_PREEMPTIONS, RECORDING_COUNTER, by_prio, 3), 0);
}

Test(sched, reports_exact_counts_tokens_batches_and_idle_gauges)
{
    enum { N = 10, MAX_BATCH = 4, LEN = 12, PROMPT = 9, MAX_QUEUE = 32 };
    recording_reporter_t *rr = recording_reporter_create();
    rig_t rig = rig_make_reported(MAX_BATCH, 64, 0, MAX_QUEUE, recording_reporter_base(rr));
    int32_t prompt[PROMPT];
    for (int i = 0; i < PROMPT; i++)
        prompt[i] = 300 + 11 * i;
    params_t p = {.tokens = prompt, .n_tokens = PROMPT, .max_tokens = LEN, .ignore_eos = true};
    rec_t recs[N];
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "m%d", i);
        submit_ok(&rig, id, &p, &recs[i]);
    }
    for (int i = 0; i < N; i++) {
        cr_assert(wait_released(&recs[i], 60000), "request %d never ended", i);
        cr_assert_eq(recs[i].tokens, LEN);
    }
    /* The gauges settle once the scheduler has looked at its empty batch. */
    cr_assert(wait_gauge(rr, M_INF_RUNNING, 0, 10000), "running never back to 0");
    cr_assert(wait_gauge(rr, M_INF_WAITING, 0, 10000), "waiting never back to 0");
    cr_assert(wait_gauge(rr, M_INF_KV_USED, 0, 10000), "KV blocks still in use");

    cr_expect_eq(recording_reporter_sum(rr, M_INF_PROMPT_TOKENS, INSTANCE), N * PROMPT);
    cr_expect_eq(recording_reporter_sum(rr, M_INF_GEN_TOKENS, INSTANCE), N * LEN);
    cr_expect_eq(recording_reporter_observations(rr, M_INF_QUEUE, INSTANCE, NULL, 0), N);
    cr_expect_eq(recording_reporter_observations(rr, M_INF_PREFILL, INSTANCE, NULL, 0), N);
    cr_expect_eq(recording_reporter_observations(rr, M_INF_DECODE, INSTANCE, NULL, 0), N);

    /* One batch size per step; together they are every item the steps carried: a decode
     * item per token after each request's first, and at least one prefill chunk each. */
    double sizes[4096];
    size_t steps = recording_reporter_observations(rr, M_INF_BATCH, INSTANCE, sizes, 4096);
    cr_assert_gt(steps, 0);
    cr_assert_leq(steps, 4096);
    cr_expect_eq(recording_reporter_observations(rr, M_INF_STEP, INSTANCE, NULL, 0), steps);
    double items = 0, largest = 0;
    for (size_t i = 0; i < steps; i++) {
        cr_expect(sizes[i] >= 1 && sizes[i] <= MAX_BATCH, "batch of %g", sizes[i]);
        items += sizes[i];
        largest = sizes[i] > largest ? sizes[i] : largest;
    }
    cr_expect_geq(items, N * LEN);
    cr_expect_gt(largest, 1, "%d requests at once never shared a step", N);

    double v = -1;
    cr_expect(recording_reporter_gauge(rr, M_INF_QUEUE_LIMIT, INSTANCE, &v));
    cr_expect_eq(v, MAX_QUEUE);
    cr_expect(recording_reporter_gauge(rr, M_INF_KV_CAPACITY, INSTANCE, &v));
    cr_expect_eq(v, (double)(forward_config(rig.f)->kv_budget_tokens / FORWARD_KV_BLOCK));
    cr_expect_eq(recording_reporter_calls(rr, M_INF_REFUSED, NULL, 0), 0);
    expect_contract(rr);
    rig_free(&rig);
    recording_reporter_destroy(rr);
}

Test(sched, reports_refusals_by_reason)
{
    recording_reporter_t *rr = recording_reporter_create();
    /* too_long is the service's (a prompt the context cannot hold), with no rpc here; the
     * scheduler's own (a reservation the KV budget can never hold) cannot happen while
     * the budget holds a whole context, which forward_create requires. */
    rig_t rig = rig_make_reported(1, 64, SEQ_LEN, 1, recording_reporter_base(rr));
    params_t big = {.prompt = "go", .max_tokens = SEQ_LEN, .ignore_eos = true};
    rec_t a, q, full, late;
    inf_request_t *ra = make_req("a", &big, &a);
    cr_assert_eq(inf_sched_submit(rig.s, ra), LS_OK);
    cr_assert(wait_tokens(&a, 1, 60000));
    inf_request_t *rq = make_req("q", &big, &q);
    cr_assert_eq(inf_sched_submit(rig.s, rq), LS_OK);
    inf_request_t *rf = make_req("full", &big, &full);
    cr_assert_eq(inf_sched_submit(rig.s, rf), LS_ERR_FULL);
    inf_request_destroy(rf);
    cr_assert(wait_gauge(rr, M_INF_WAITING, 1, 10000));
    cr_assert(wait_gauge(rr, M_INF_RUNNING, 1, 10000));
    inf_sched_cancel(rig.s, rq);
    inf_sched_cancel(rig.s, ra);
    cr_assert(wait_released(&a, 10000));
    cr_assert(wait_released(&q, 10000));

    inf_sched_drain(rig.s, 0);
    inf_request_t *rl = make_req("late", &big, &late);
    cr_assert_eq(inf_sched_submit(rig.s, rl), LS_ERR_CLOSED);
    inf_request_destroy(rl);

    svc_label_t by[3] = {g_instance[0], g_instance[1], {"reason", "queue_full"}};
    cr_expect_eq(recording_reporter_sum(rr, M_INF_REFUSED, by, 3), 1);
    by[2].value = "draining";
    cr_expect_eq(recording_reporter_sum(rr, M_INF_REFUSED, by, 3), 1);
    cr_expect_eq(recording_reporter_sum(rr, M_INF_REFUSED, INSTANCE), 2);
    cr_expect(wait_gauge(rr, M_INF_RUNNING, 0, 10000));
    cr_expect(wait_gauge(rr, M_INF_WAITING, 0, 10000));
    /* q was cancelled before its first token: no decode span; a's only. */
    cr_expect_eq(recording_reporter_observations(rr, M_INF_DECODE, INSTANCE, NULL, 0), 1);
    expect_contract(rr);
    rig_free(&rig);
    recording_reporter_destroy(rr);
}

/* ---- resume (failover) and priority classes ------------------------------------------- */

/* Submits p resumed after the first n tokens of ref, with rec preset to what a client of
 * ref had seen by then, so that rec ends up holding the whole answer as seen. */
static void submit_resumed(rig_t *rig, const char *id, const params_t *p, const rec_t *ref, int n,
                           rec_t *rec)
{
    static int32_t ids[MAX_TOK];
    for (int i = 0; i < n; i++)
        ids[i] = ref->ids[i];
    params_t q = *p;
    q.resume = ids;
    q.n_resume = (size_t)n;
    inf_request_t *r = make_req(id, &q, rec);
    memcpy(rec->ids, ref->ids, (size_t)n * sizeof(int));
    memcpy(rec->text_at, ref->text_at, (size_t)n * sizeof(size_t));
    rec->text_len = n > 0 ? ref->text_at[n - 1] : 0;
    memcpy(rec->text, ref->text, rec->text_len);
    rec->text[rec->text_len] = '\0';
    rec->tokens = n;
    cr_assert_eq(inf_sched_submit(rig->s, r), LS_OK, "submit %s", id);
}

static void expect_same_answer(const rec_t *got, const rec_t *ref, const char *what)
{
    cr_assert(got->order_ok, "%s: events out of order", what);
    cr_assert_eq(got->started, 1, "%s: %d started", what, got->started);
    cr_assert_eq(got->terminal, 1, "%s", what);
    cr_assert_eq(got->tokens, ref->tokens, "%s: %d tokens, want %d", what, got->tokens,
                 ref->tokens);
    cr_assert_eq(memcmp(got->ids, ref->ids, (size_t)ref->tokens * sizeof(int)), 0,
                 "%s: token ids differ", what);
    cr_assert_str_eq(got->text, ref->text, "%s", what);
    cr_assert_eq(got->reason, ref->reason, "%s: reason %d want %d", what, got->reason,
                 ref->reason);
    cr_assert_eq(got->completion_tokens, ref->completion_tokens, "%s", what);
}

/* p resumed after ref's first n tokens ends up with ref's whole answer. */
static void expect_resumed_same(rig_t *rig, const params_t *p, const rec_t *ref, int n,
                                const char *what)
{
    rec_t got;
    submit_resumed(rig, "resumed", p, ref, n, &got);
    cr_assert(wait_released(&got, 60000), "%s", what);
    expect_same_answer(&got, ref, what);
}

Test(sched, resumed_requests_continue_exactly_greedy_and_seeded)
{
    rig_t rig = rig_make(4, 64, 0, 16);
    for (int sampled = 0; sampled < 2; sampled++) {
        params_t p = {.prompt = "once upon a time there was",
                      .max_tokens = 60,
                      .ignore_eos = true,
                      .temperature = sampled ? 0.9f : 0.0f};
        rec_t ref;
        submit_ok(&rig, "ref", &p, &ref);
        cr_assert(wait_released(&ref, 60000));
        cr_assert_eq(ref.tokens, 60);
        static const int at[] = {1, 2, 7, 30, 59};
        for (size_t k = 0; k < sizeof(at) / sizeof(at[0]); k++) {
            char what[64];
            snprintf(what, sizeof(what), "%s resumed at %d", sampled ? "seeded" : "greedy", at[k]);
            expect_resumed_same(&rig, &p, &ref, at[k], what);
        }
    }
    rig_free(&rig);
}

Test(sched, resumed_text_keeps_the_stop_string_hold_back)
{
    rig_t rig = rig_make(4, 64, 0, 16);
    params_t p = {.prompt = "the quick brown fox", .max_tokens = 60, .ignore_eos = true};
    rec_t full;
    submit_ok(&rig, "full", &p, &full);
    cr_assert(wait_released(&full, 60000));
    /* A stop string from the last third of the answer: the tokens before it hold back text
     * that might start it, which a resumed request must replay, not resend or lose. */
    char stop[16];
    (void)stop_from(&full, full.text_len * 2 / 3, 4, stop);
    char *stops[] = {stop};
    params_t q = p;
    q.stop = stops;
    q.n_stop = 1;
    rec_t cut;
    submit_ok(&rig, "cut", &q, &cut);
    cr_assert(wait_released(&cut, 60000));
    cr_assert_eq(cut.reason, DONE(STOP));
    for (int n = 1; n < cut.tokens; n++) {
        char what[64];
        snprintf(what, sizeof(what), "stop \"%s\", resumed at %d of %d", stop, n, cut.tokens);
        expect_resumed_same(&rig, &q, &cut, n, what);
    }
    rig_free(&rig);
}

Test(sched, resume_tokens_that_already_end_the_answer_end_it_at_once)
{
    rig_t rig = rig_make(4, 64, 0, 16);
    params_t p = {.prompt = "hello there", .max_tokens = 12, .ignore_eos = true};
    rec_t ref;
    submit_ok(&rig, "ref", &p, &ref);
    cr_assert(wait_released(&ref, 60000));
    rec_t got;
    submit_resumed(&rig, "all", &p, &ref, 12, &got);
    cr_assert(wait_released(&got, 60000));
    cr_assert_eq(got.started, 1);
    cr_assert_eq(got.terminal, 1);
    cr_assert_eq(got.tokens, 12, "no token after the last one");
    cr_assert_eq(got.reason, DONE(LENGTH));
    cr_assert_eq(got.completion_tokens, 12);

    /* An EOS among them (not ignored) ends it with EOS. */
    params_t e = {.prompt = "hello there", .max_tokens = 12};
    int32_t eos[] = {300, 1 /* TOK_BOS ends generation too */, 301};
    inf_request_t *r;
    rec_t ended;
    e.resume = eos;
    e.n_resume = 3;
    r = make_req("eos", &e, &ended);
    cr_assert_eq(inf_sched_submit(rig.s, r), LS_OK);
    cr_assert(wait_released(&ended, 60000));
    cr_assert_eq(ended.reason, DONE(EOS), "reason %d", ended.reason);
    cr_assert_eq(ended.tokens, 0);
    cr_assert_eq(ended.completion_tokens, 1, "the token before the EOS counts");
    rig_free(&rig);
}

/* Submits a long request that takes a batch slot and stops the scheduler in its started
 * event (so nothing is admitted or stepped) until release_slot. */
static inf_request_t *hold_slot(rig_t *rig, rec_t *h)
{
    params_t hold = {.prompt = "hold", .max_tokens = 1000, .ignore_eos = true};
    inf_request_t *rh = make_req("hold", &hold, h);
    pthread_mutex_lock(&g_mu);
    g_gate = h;
    g_gate_reached = false;
    pthread_mutex_unlock(&g_mu);
    cr_assert_eq(inf_sched_submit(rig->s, rh), LS_OK);
    pthread_mutex_lock(&g_mu);
    while (!g_gate_reached)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
    return rh;
}

/* Cancels the held request and lets the scheduler go on. */
static void release_slot(rig_t *rig, inf_request_t *rh)
{
    inf_sched_cancel(rig->s, rh); /* not released yet: the scheduler holds it at the gate */
    pthread_mutex_lock(&g_mu);
    g_gate = NULL;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static int64_t started_at(rec_t *rec)
{
    pthread_mutex_lock(&g_mu);
    int64_t t = rec->started_at;
    pthread_mutex_unlock(&g_mu);
    return t;
}

Test(sched, waiters_are_admitted_by_class_then_arrival)
{
    g_max_preemptions = 0;
    g_aging_us = 0;
    rig_t rig = rig_make(1, 64, 0, 16);
    rec_t h;
    inf_request_t *rh = hold_slot(&rig, &h);
    enum { N = 5 };
    static const int prio[N] = {3, 3, 2, 1, 1}; /* batch, batch, normal, interactive x2 */
    static const int want[N] = {3, 4, 2, 0, 1}; /* start order: i, i, n, b, b */
    rec_t w[N];
    for (int i = 0; i < N; i++) {
        params_t q = {.prompt = "wait", .max_tokens = 2, .ignore_eos = true, .priority = prio[i]};
        char id[8];
        snprintf(id, sizeof(id), "w%d", i);
        submit_ok(&rig, id, &q, &w[i]);
        ls_sleep_us(2000);
    }
    release_slot(&rig, rh);
    for (int i = 0; i < N; i++)
        cr_assert(wait_released(&w[i], 60000));
    for (int k = 1; k < N; k++)
        cr_assert_lt(started_at(&w[want[k - 1]]), started_at(&w[want[k]]),
                     "w%d should start before w%d", want[k - 1], want[k]);
    rig_free(&rig);
}

Test(sched, a_long_wait_lifts_a_low_class_ahead_of_later_arrivals)
{
    for (int aging = 0; aging < 2; aging++) {
        g_max_preemptions = 0;
        g_aging_us = aging ? 40000 : 0;
        rig_t rig = rig_make(1, 64, 0, 16);
        rec_t h, b, i;
        inf_request_t *rh = hold_slot(&rig, &h);
        params_t pb = {.prompt = "b", .max_tokens = 2, .ignore_eos = true, .priority = 3};
        params_t pi = {.prompt = "i", .max_tokens = 2, .ignore_eos = true, .priority = 1};
        submit_ok(&rig, "batch", &pb, &b);
        ls_sleep_us(150000); /* > 2 aging periods: batch counts as interactive */
        submit_ok(&rig, "interactive", &pi, &i);
        release_slot(&rig, rh);
        cr_assert(wait_released(&b, 60000));
        cr_assert(wait_released(&i, 60000));
        if (aging)
            cr_assert_lt(started_at(&b), started_at(&i), "the aged batch request goes first");
        else
            cr_assert_lt(started_at(&i), started_at(&b), "without aging the class decides");
        rig_free(&rig);
    }
}

Test(sched, a_class_cap_leaves_slots_to_the_others)
{
    g_class_max[INF_PRIO_BATCH] = 1;
    rig_t rig = rig_make(3, 64, 0, 16);
    params_t pb = {.prompt = "b", .max_tokens = 600, .ignore_eos = true, .priority = 3};
    params_t pn = {.prompt = "n", .max_tokens = 4, .ignore_eos = true};
    rec_t b1, b2, n;
    submit_ok(&rig, "b1", &pb, &b1);
    submit_ok(&rig, "b2", &pb, &b2);
    cr_assert(wait_tokens(&b1, 1, 60000));
    submit_ok(&rig, "n", &pn, &n);
    cr_assert(wait_released(&n, 60000));
    cr_assert(wait_released(&b1, 60000));
    cr_assert(wait_released(&b2, 60000));
    cr_assert_geq(started_at(&b2), b1.ended_at, "two batch requests ran at once");
    cr_assert_lt(started_at(&n), b1.ended_at, "normal work waited behind batch work");
    rig_free(&rig);
}

/* A batch request's answer, alone and undisturbed, for comparing. */
static void run_alone(const params_t *p, rec_t *rec)
{
    rig_t rig = rig_make(2, 64, 0, 16);
    submit_ok(&rig, "alone", p, rec);
    cr_assert(wait_released(rec, 60000));
    rig_free(&rig);
}

static void preemption_case(int max_batch, int64_t kv_budget, int batch_tokens)
{
    params_t pb[2] = {{.prompt = "batch work one", .max_tokens = batch_tokens, .ignore_eos = true,
                       .priority = 3},
                      {.prompt = "batch work two", .max_tokens = batch_tokens, .ignore_eos = true,
                       .priority = 3, .temperature = 0.9f}};
    rec_t ref[2];
    for (int k = 0; k < 2; k++)
        run_alone(&pb[k], &ref[k]);

    g_max_preemptions = 2;
    g_aging_us = 0;
    g_step_delay_us = 500; /* the batch work lasts over 0.5 s, the interactive 20 ms */
    recording_reporter_t *rr = recording_reporter_create();
    rig_t rig = rig_make_reported(max_batch, 64, kv_budget, 16, recording_reporter_base(rr));
    rec_t b[2], in;
    for (int k = 0; k < 2; k++) {
        char id[8];
        snprintf(id, sizeof(id), "b%d", k);
        submit_ok(&rig, id, &pb[k], &b[k]);
    }
    cr_assert(wait_tokens(&b[0], 20, 60000));
    cr_assert(wait_tokens(&b[1], 20, 60000));
    params_t pi = {.prompt = "a person waits", .max_tokens = 40, .ignore_eos = true,
                   .priority = 1};
    submit_ok(&rig, "in", &pi, &in);
    cr_assert(wait_released(&in, 60000));
    cr_assert_eq(in.tokens, 40);
    for (int k = 0; k < 2; k++) {
        cr_assert(wait_released(&b[k], 120000));
        cr_assert_lt(in.started_at, b[k].ended_at,
                     "the interactive request waited for batch work to finish");
        expect_same_answer(&b[k], &ref[k], k ? "preempted seeded" : "preempted greedy");
    }
    svc_label_t by[3] = {g_instance[0], g_instance[1], {"priority", "batch"}};
    cr_assert_geq(recording_reporter_sum(rr, M_INF_PREEMPTIONS, by, 3), 1, "nothing preempted");
    cr_assert_eq(forward_kv_free_tokens(rig.f), forward_config(rig.f)->kv_budget_tokens,
                 "every KV block is back");
    rig_free(&rig);
    recording_reporter_destroy(rr);
}

Test(sched, preempted_at_the_slot_limit_resumes_without_losing_a_token)
{
    preemption_case(2, 0, 900);
}

Test(sched, preempted_at_the_kv_limit_resumes_without_losing_a_token)
{
    /* The two batch requests reserve 2 x 63 of the 128 blocks: the interactive one (3
     * blocks) does not fit beside them. */
    preemption_case(4, 2 * SEQ_LEN, 1000);
}

Test(sched, prefix_hits_are_reported_in_started_done_and_the_metric)
{
    recording_reporter_t *rr = recording_reporter_create();
    rig_t rig = rig_make_reported(4, 64, 0, 16, recording_reporter_base(rr));
    int32_t prompt[40];
    for (int i = 0; i < 40; i++)
        prompt[i] = 259 + (i * 53) % (VOCAB - 259);
    params_t p = {.tokens = prompt, .n_tokens = 40, .max_tokens = 8, .ignore_eos = true};
    rec_t a, b;
    submit_ok(&rig, "a", &p, &a);
    cr_assert(wait_released(&a, 60000));
    submit_ok(&rig, "b", &p, &b);
    cr_assert(wait_released(&b, 60000));
    cr_assert_eq(a.cached_tokens, 0);
    cr_assert_eq(b.cached_tokens, 32, "two of the prompt's blocks were cached (%u)",
                 b.cached_tokens);
    cr_assert_eq(memcmp(a.ids, b.ids, 8 * sizeof(int)), 0);
    cr_assert_eq(recording_reporter_sum(rr, M_INF_PREFIX_HIT_TOKENS, INSTANCE), 32);
    cr_assert_eq(recording_reporter_sum(rr, M_INF_PROMPT_TOKENS, INSTANCE), 40 + 8,
                 "only what was not cached is prefilled");
    expect_contract(rr);
    rig_free(&rig);
    recording_reporter_destroy(rr);
}
