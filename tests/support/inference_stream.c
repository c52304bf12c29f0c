#define _GNU_SOURCE
#include "inference_stream.h"

#include "base/clock.h"
#include "base/err.h"
#include "gen_recorder.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The counts; guarded by the recorder's lock. */
struct inference_stream {
    gen_recorder_t *rec;
    inference_stream_counts_t counts;
};

static void init_rec(void *rec, const char *id)
{
    inference_stream_rec_t *r = rec;
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->order_ok = true;
}

static void progress(const void *rec, int *tokens, int *terminal)
{
    const inference_stream_rec_t *r = rec;
    *tokens = r->tokens;
    *terminal = r->terminal;
}

static void do_token(inference_stream_rec_t *r, const Llmserve__V1__InferenceToken *t)
{
    if (!r->started || t->index != (uint32_t)r->tokens)
        r->order_ok = false;
    if (r->tokens < 1024)
        r->ids[r->tokens] = t->id;
    r->tokens++;
    size_t len = strlen(t->text);
    if (r->text_len + len < sizeof(r->text)) {
        memcpy(r->text + r->text_len, t->text, len);
        r->text_len += len;
        r->text[r->text_len] = '\0';
    }
}

/* One event.  Lock held. */
static void do_event(gen_recorder_t *g, inference_stream_t *is,
                     const Llmserve__V1__InferenceEvent *ev)
{
    is->counts.events++;
    inference_stream_rec_t *r = gen_recorder_do_rec(g, ev->request_id);
    if (!r)
        return;
    if (r->terminal)
        r->order_ok = false;
    switch (ev->kind_case) {
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_STARTED:
        if (r->started++ || r->tokens)
            r->order_ok = false;
        r->prompt_tokens = ev->started->prompt_tokens;
        r->cached_tokens = ev->started->cached_tokens;
        r->batch_size = ev->started->batch_size;
        r->started_at = ls_now_us();
        r->queue_us = ev->started->queue_us;
        break;
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_TOKEN:
        do_token(r, ev->token);
        break;
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_DONE:
        r->terminal++;
        is->counts.terminals++;
        r->reason = ev->done->finish_reason;
        if (ev->done->usage) {
            r->completion_tokens = ev->done->usage->completion_tokens;
            r->usage_prompt_tokens = ev->done->usage->prompt_tokens;
            r->usage_cached_tokens = ev->done->usage->cached_prompt_tokens;
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
        is->counts.terminals++;
        r->error = ev->error->code;
        snprintf(r->msg, sizeof(r->msg), "%s", ev->error->message);
        r->ended_at = ls_now_us();
        break;
    default:
        r->order_ok = false;
        break;
    }
}

static void on_message(gen_recorder_t *g, const ProtobufCMessage *msg)
{
    inference_stream_t *is = gen_recorder_ctx(g);
    const Llmserve__V1__InferenceEvent *ev = (const Llmserve__V1__InferenceEvent *)msg;
    is->counts.messages++;
    do_event(g, is, ev);
    for (size_t i = 0; i < ev->n_batch; i++) {
        is->counts.batch_seen = true;
        if (ev->batch[i]->n_batch) {
            inference_stream_rec_t *r = gen_recorder_do_rec(g, ev->batch[i]->request_id);
            if (r)
                r->order_ok = false; /* no nesting */
        }
        do_event(g, is, ev->batch[i]);
    }
}

static const gen_recorder_kind_t kind = {
    .method = "/llmserve.v1.Inference/Generate",
    .event_desc = &llmserve__v1__inference_event__descriptor,
    .rec_size = sizeof(inference_stream_rec_t),
    .init_rec = init_rec,
    .on_message = on_message,
    .progress = progress,
};

inference_stream_t *inference_stream_open(rpc_channel_t *ch, const rpc_call_opts_t *opts)
{
    rpc_call_opts_t dflt = {.wait_for_ready = true};
    inference_stream_t *g = calloc(1, sizeof(*g));
    cr_assert_not_null(g);
    g->rec = gen_recorder_open(ch, &kind, g, opts ? opts : &dflt);
    cr_assert_not_null(g->rec, "cannot open Inference.Generate");
    return g;
}

void inference_stream_submit(inference_stream_t *g, const char *id, const inference_stream_req_t *p)
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
    sub.resume_tokens = (int32_t *)p->resume;
    sub.n_resume_tokens = p->n_resume;
    sub.priority = (Llmserve__V1__Priority)p->priority;
    sub.messages = p->messages;
    sub.n_messages = p->n_messages;
    Llmserve__V1__InferenceRequest req = LLMSERVE__V1__INFERENCE_REQUEST__INIT;
    req.kind_case = LLMSERVE__V1__INFERENCE_REQUEST__KIND_SUBMIT;
    req.submit = &sub;
    cr_assert_eq(gen_recorder_send(g->rec, &req.base), LS_OK, "send %s", id);
}

void inference_stream_cancel(inference_stream_t *g, const char *id)
{
    Llmserve__V1__InferenceCancel c = LLMSERVE__V1__INFERENCE_CANCEL__INIT;
    c.request_id = (char *)id;
    Llmserve__V1__InferenceRequest req = LLMSERVE__V1__INFERENCE_REQUEST__INIT;
    req.kind_case = LLMSERVE__V1__INFERENCE_REQUEST__KIND_CANCEL;
    req.cancel = &c;
    cr_assert_eq(gen_recorder_send(g->rec, &req.base), LS_OK, "cancel %s", id);
}

static inference_stream_rec_t wait_n(inference_stream_t *g, const char *id, int n_tokens,
                                     int n_terminal, int timeout_ms)
{
    inference_stream_rec_t out;
    if (!gen_recorder_wait(g->rec, id, n_tokens, n_terminal, timeout_ms, &out)) {
        rpc_status_t st = gen_recorder_status(g->rec); /* "not ended" while open */
        cr_assert_fail("request %s: no %s in %d ms (tokens %d; stream: %d %s)", id,
                       n_tokens > 0 ? "tokens" : "terminal event", timeout_ms, out.tokens, st.code,
                       st.details);
    }
    return out;
}

inference_stream_rec_t inference_stream_wait(inference_stream_t *g, const char *id, int n_tokens,
                                             int timeout_ms)
{
    return wait_n(g, id, n_tokens, 1, timeout_ms);
}

inference_stream_rec_t inference_stream_wait_terminals(inference_stream_t *g, const char *id,
                                                       int n_terminal, int timeout_ms)
{
    return wait_n(g, id, 0, n_terminal, timeout_ms);
}

inference_stream_rec_t inference_stream_get(inference_stream_t *g, const char *id)
{
    inference_stream_rec_t out;
    gen_recorder_wait(g->rec, id, 0, 1, 0, &out);
    return out;
}

inference_stream_counts_t inference_stream_counts(inference_stream_t *g)
{
    gen_recorder_lock(g->rec);
    inference_stream_counts_t c = g->counts;
    c.requests = gen_recorder_do_count(g->rec);
    gen_recorder_unlock(g->rec);
    return c;
}

int inference_stream_close_send(inference_stream_t *g)
{
    return gen_recorder_close_send(g->rec);
}

bool inference_stream_wait_end(inference_stream_t *g, int timeout_ms)
{
    return gen_recorder_wait_end(g->rec, timeout_ms);
}

rpc_status_t inference_stream_status(inference_stream_t *g)
{
    return gen_recorder_status(g->rec);
}

void inference_stream_destroy(inference_stream_t *g)
{
    if (!g)
        return;
    if (gen_recorder_destroy(g->rec))
        free(g); /* else its callbacks may still come */
}
