#define _GNU_SOURCE
#include "router_stream.h"

#include "base/err.h"
#include "gen_recorder.h"
#include "rpc/codec.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct router_stream {
    gen_recorder_t *rec;
    int n_started; /* requests with a started event; under the recorder's lock */
};

static void init_rec(void *rec, const char *id)
{
    router_stream_rec_t *r = rec;
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->indexes_ok = true;
}

static void progress(const void *rec, int *tokens, int *terminal)
{
    const router_stream_rec_t *r = rec;
    *tokens = r->tokens;
    *terminal = r->terminal;
}

static void free_rec(void *rec)
{
    router_stream_rec_t *r = rec;
    if (r->route)
        llmserve__v1__generate_started__free_unpacked(r->route, NULL);
}

static void do_token(router_stream_rec_t *r, const Llmserve__V1__GenerateToken *t)
{
    if (t->index != (uint32_t)r->tokens)
        r->indexes_ok = false;
    if (r->tokens < 256)
        r->ids[r->tokens] = t->id;
    r->tokens++;
    r->token_cache_hit = t->cache_hit;
    size_t n = strlen(t->text);
    if (r->text_len + n < sizeof(r->text)) {
        memcpy(r->text + r->text_len, t->text, n + 1);
        r->text_len += n;
    }
}

static void on_message(gen_recorder_t *g, const ProtobufCMessage *msg)
{
    const Llmserve__V1__GenerateEvent *ev = (const Llmserve__V1__GenerateEvent *)msg;
    router_stream_rec_t *r = gen_recorder_do_rec(g, ev->request_id);
    if (!r)
        return;
    if (ev->kind_case == LLMSERVE__V1__GENERATE_EVENT__KIND_ERROR &&
        ev->error->code == GRPC_STATUS_ALREADY_EXISTS) {
        /* The refusal of a duplicate id is the one documented case of an error event
         * that does not end the request the id belongs to: count it apart, so tokens
         * of the first request arriving meanwhile are still counted. */
        r->refused_duplicates++;
        return;
    }
    if (r->terminal) {
        r->after_terminal++;
        return;
    }
    switch (ev->kind_case) {
    case LLMSERVE__V1__GENERATE_EVENT__KIND_STARTED:
        r->started++;
        if (r->route)
            llmserve__v1__generate_started__free_unpacked(r->route, NULL);
        r->route = (Llmserve__V1__GenerateStarted *)rpc_codec_copy(&ev->started->base);
        if (!r->first_attempt_seen)
            r->first_attempt_seen = ev->started->attempt;
        if (ev->started->failover) {
            r->failovers++;
            r->tokens_at_failover = r->tokens;
            r->resumed_tokens = ev->started->resumed_tokens;
        }
        if (!r->started_rank) {
            router_stream_t *rs = gen_recorder_ctx(g);
            r->started_rank = ++rs->n_started;
        }
        break;
    case LLMSERVE__V1__GENERATE_EVENT__KIND_TOKEN:
        do_token(r, ev->token);
        break;
    case LLMSERVE__V1__GENERATE_EVENT__KIND_DONE:
        r->terminal++;
        r->done = true;
        r->finish = ev->done->finish_reason;
        r->completion_tokens = ev->done->usage ? ev->done->usage->completion_tokens : 0;
        r->prompt_tokens = ev->done->usage ? ev->done->usage->prompt_tokens : 0;
        if (ev->done->timings) {
            r->ttft_us = ev->done->timings->ttft_us;
            r->total_us = ev->done->timings->total_us;
            r->cache_lookup_us = ev->done->timings->cache_lookup_us;
            r->router_queue_us = ev->done->timings->router_queue_us;
        }
        break;
    case LLMSERVE__V1__GENERATE_EVENT__KIND_ERROR:
        r->terminal++;
        r->err_code = ev->error->code;
        snprintf(r->err_msg, sizeof(r->err_msg), "%s", ev->error->message);
        r->retry_after_ms = ev->error->retry_after_ms;
        break;
    default:
        break;
    }
}

static const gen_recorder_kind_t kind = {
    .method = "/llmserve.v1.Router/Generate",
    .event_desc = &llmserve__v1__generate_event__descriptor,
    .rec_size = sizeof(router_stream_rec_t),
    .init_rec = init_rec,
    .on_message = on_message,
    .progress = progress,
    .free_rec = free_rec,
};

router_stream_t *router_stream_open(rpc_channel_t *ch, const rpc_call_opts_t *opts)
{
    rpc_call_opts_t dflt = {.wait_for_ready = true, .timeout_us = 120000000};
    router_stream_t *g = calloc(1, sizeof(*g));
    cr_assert_not_null(g);
    g->rec = gen_recorder_open(ch, &kind, g, opts ? opts : &dflt);
    cr_assert_not_null(g->rec, "cannot open Router.Generate");
    return g;
}

int router_stream_send_submit(router_stream_t *g, const router_stream_req_t *o)
{
    Llmserve__V1__SamplingParams sp = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    sp.max_tokens = o->max_tokens;
    sp.ignore_eos = o->ignore_eos;
    sp.temperature = o->temperature;
    sp.top_p = o->top_p;
    sp.has_seed = o->has_seed;
    sp.seed = o->seed;
    Llmserve__V1__ChatMessage m = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    Llmserve__V1__ChatMessage *msgs[1] = {&m};
    Llmserve__V1__GenerateSubmit s = LLMSERVE__V1__GENERATE_SUBMIT__INIT;
    s.request_id = (char *)(o->id ? o->id : "");
    if (o->chat) {
        m.role = o->role ? o->role : LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER;
        m.content = (char *)(o->prompt ? o->prompt : "");
        s.n_messages = 1;
        s.messages = msgs;
    } else {
        s.prompt = (char *)(o->prompt ? o->prompt : "");
    }
    s.sampling = &sp;
    s.model_hint = (char *)(o->hint ? o->hint : "");
    s.conversation_id = (char *)(o->conversation ? o->conversation : "");
    s.tenant = (char *)(o->tenant ? o->tenant : "");
    s.timeout_ms = o->timeout_ms;
    s.cache_policy = o->policy;
    s.priority = (Llmserve__V1__Priority)o->priority;
    Llmserve__V1__GenerateRequest req = LLMSERVE__V1__GENERATE_REQUEST__INIT;
    req.kind_case = LLMSERVE__V1__GENERATE_REQUEST__KIND_SUBMIT;
    req.submit = &s;
    return gen_recorder_send(g->rec, &req.base);
}

void router_stream_submit(router_stream_t *g, const router_stream_req_t *req)
{
    int rc = router_stream_send_submit(g, req);
    cr_assert_eq(rc, LS_OK, "submit %s: %s", req->id ? req->id : "", ls_strerror(rc));
}

void router_stream_cancel(router_stream_t *g, const char *id)
{
    Llmserve__V1__GenerateCancel c = LLMSERVE__V1__GENERATE_CANCEL__INIT;
    c.request_id = (char *)id;
    Llmserve__V1__GenerateRequest req = LLMSERVE__V1__GENERATE_REQUEST__INIT;
    req.kind_case = LLMSERVE__V1__GENERATE_REQUEST__KIND_CANCEL;
    req.cancel = &c;
    int rc = gen_recorder_send(g->rec, &req.base);
    cr_assert_eq(rc, LS_OK, "cancel %s: %s", id, ls_strerror(rc));
}

router_stream_rec_t router_stream_wait(router_stream_t *g, const char *id, int tokens,
                                       int timeout_ms)
{
    router_stream_rec_t snap;
    gen_recorder_wait(g->rec, id, tokens, 1, timeout_ms, &snap);
    snap.route = NULL; /* the stream's, not the copy's */
    return snap;
}

router_stream_rec_t router_stream_finish(router_stream_t *g, const char *id)
{
    router_stream_rec_t r = router_stream_wait(g, id, 0, 60000);
    cr_assert_eq(r.terminal, 1, "request %s: %d terminal events", id, r.terminal);
    return r;
}

const Llmserve__V1__GenerateStarted *router_stream_route(router_stream_t *g, const char *id)
{
    gen_recorder_lock(g->rec);
    router_stream_rec_t *r = gen_recorder_do_find(g->rec, id);
    const Llmserve__V1__GenerateStarted *s = r ? r->route : NULL;
    gen_recorder_unlock(g->rec);
    cr_assert_not_null(s, "no started event for %s", id);
    return s;
}

bool router_stream_wait_end(router_stream_t *g, int timeout_ms)
{
    return gen_recorder_wait_end(g->rec, timeout_ms);
}

rpc_status_t router_stream_status(router_stream_t *g)
{
    return gen_recorder_status(g->rec);
}

void router_stream_close(router_stream_t *g)
{
    gen_recorder_close_send(g->rec);
    bool ended = gen_recorder_wait_end(g->rec, 60000);
    rpc_status_t st = gen_recorder_status(g->rec);
    gen_recorder_lock(g->rec);
    for (int i = 0; i < gen_recorder_do_count(g->rec); i++) {
        const router_stream_rec_t *r = gen_recorder_do_at(g->rec, i);
        cr_expect_eq(r->after_terminal, 0, "request %s got %d events after its terminal event",
                     r->id, r->after_terminal);
    }
    gen_recorder_unlock(g->rec);
    cr_expect(ended, "stream did not end after half-close");
    cr_expect_eq(st.code, GRPC_STATUS_OK, "stream status %d %s", st.code, st.details);
    cr_expect_eq(gen_recorder_unfiled(g->rec), 0, "events with no room for their record");
    router_stream_destroy(g);
}

void router_stream_destroy(router_stream_t *g)
{
    if (!g)
        return;
    if (gen_recorder_destroy(g->rec))
        free(g); /* else its callbacks may still come */
}
