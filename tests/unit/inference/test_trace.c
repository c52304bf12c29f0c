/*
 * test_trace.c - services/inference/trace.c: which spans a request gets for the stages
 * it reached, their times, parents, codes and attributes, through a tracer that records
 * every call.  (tests/python/test_inference_traces.py checks the same spans exported by
 * the real binary.)
 */
#include "trace.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SPANS 8
#define MAX_ATTRS 24

typedef struct {
    svc_span_t base;
    char name[64];
    svc_span_kind_t kind;
    bool has_parent;
    svc_trace_ctx_t parent, self;
    int64_t start_us, end_us;
    bool ended;
    int code;
    char message[128];
    char keys[MAX_ATTRS][64];
    char values[MAX_ATTRS][64]; /* every value as text; arrays as "[a]" */
    int n_attrs;
    char event[32];
    int64_t event_us;
    int n_events;
} rec_span_t;

typedef struct {
    svc_tracer_t base;
    rec_span_t spans[MAX_SPANS];
    int n_spans;
    bool sample; /* false: start returns NULL */
} rec_tracer_t;

static rec_tracer_t g_rec;

static svc_span_t *r_start(svc_tracer_t *t, const char *name, svc_span_kind_t kind,
                           const svc_trace_ctx_t *parent, int64_t at_us)
{
    rec_tracer_t *rt = (rec_tracer_t *)t;
    if (!rt->sample)
        return NULL;
    cr_assert_lt(rt->n_spans, MAX_SPANS);
    rec_span_t *s = &rt->spans[rt->n_spans++];
    memset(s, 0, sizeof(*s));
    s->base.tracer = t;
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->kind = kind;
    s->start_us = at_us;
    if (parent) {
        s->has_parent = true;
        s->parent = *parent;
        memcpy(s->self.trace_id, parent->trace_id, sizeof(s->self.trace_id));
    } else {
        memset(s->self.trace_id, 0xab, sizeof(s->self.trace_id));
    }
    memset(s->self.span_id, rt->n_spans, sizeof(s->self.span_id));
    s->self.flags = SVC_TRACE_SAMPLED;
    return &s->base;
}

static void put(svc_span_t *sp, const char *key, const char *value)
{
    rec_span_t *s = (rec_span_t *)sp;
    cr_assert_not(s->ended, "attribute %s after the end", key);
    for (int i = 0; i < s->n_attrs; i++)
        cr_assert_str_neq(s->keys[i], key, "attribute %s set twice", key);
    cr_assert_lt(s->n_attrs, MAX_ATTRS);
    snprintf(s->keys[s->n_attrs], sizeof(s->keys[0]), "%s", key);
    snprintf(s->values[s->n_attrs], sizeof(s->values[0]), "%s", value);
    s->n_attrs++;
}

static void r_set_str(svc_span_t *s, const char *key, const char *value)
{
    put(s, key, value);
}

static void r_set_int(svc_span_t *s, const char *key, int64_t value)
{
    char v[32];
    snprintf(v, sizeof(v), "%lld", (long long)value);
    put(s, key, v);
}

static void r_set_double(svc_span_t *s, const char *key, double value)
{
    char v[32];
    snprintf(v, sizeof(v), "%.3f", value);
    put(s, key, v);
}

static void r_set_strs(svc_span_t *s, const char *key, const char *const *values, size_t n)
{
    cr_assert_eq(n, 1);
    char v[64];
    snprintf(v, sizeof(v), "[%s]", values[0]);
    put(s, key, v);
}

static void r_event(svc_span_t *sp, const char *name, int64_t at_us)
{
    rec_span_t *s = (rec_span_t *)sp;
    snprintf(s->event, sizeof(s->event), "%s", name);
    s->event_us = at_us;
    s->n_events++;
}

static void r_context(const svc_span_t *sp, svc_trace_ctx_t *out)
{
    *out = ((const rec_span_t *)sp)->self;
}

static void r_end(svc_span_t *sp, int code, const char *message, int64_t at_us)
{
    rec_span_t *s = (rec_span_t *)sp;
    cr_assert_not(s->ended, "%s ended twice", s->name);
    s->ended = true;
    s->code = code;
    snprintf(s->message, sizeof(s->message), "%s", message ? message : "");
    s->end_us = at_us;
}

static void r_destroy(svc_tracer_t *t)
{
    (void)t;
}

static const svc_tracer_ops_t rec_ops = {r_start, r_set_str, r_set_int, r_set_double, r_set_strs,
                                         r_event, r_context, r_end,     r_destroy};

static void setup(void)
{
    memset(&g_rec, 0, sizeof(g_rec));
    g_rec.base.ops = &rec_ops;
    g_rec.sample = true;
}

TestSuite(trace, .init = setup);

static const inf_trace_t g_tr = {&g_rec.base, "tiny", "cpu"};

/* The attribute key of s as text, or NULL. */
static const char *attr(const rec_span_t *s, const char *key)
{
    for (int i = 0; i < s->n_attrs; i++)
        if (strcmp(s->keys[i], key) == 0)
            return s->values[i];
    return NULL;
}

static void assert_attr(const rec_span_t *s, const char *key, const char *want)
{
    const char *got = attr(s, key);
    cr_assert_not_null(got, "%s: no %s", s->name, key);
    cr_assert_str_eq(got, want, "%s: %s", s->name, key);
}

static const char PARENT[] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/* A request that arrived at 1000 us, prompt of 7 tokens, 5 generated. */
static inf_request_t *make_request(void)
{
    inf_request_t *r = calloc(1, sizeof(*r));
    snprintf(r->id, sizeof(r->id), "req-1");
    r->n_prompt = 7;
    r->n_generated = 5;
    r->max_tokens = 16;
    sampler_init(&r->sampler, 0.5f, 0.9f, 40, 99);
    r->has_seed = true;
    r->seed = 99;
    r->arrival_us = 1000;
    r->batch_size = 3;
    cr_assert(inf_trace_parent(&g_tr, PARENT, &r->trace_parent));
    r->has_trace_parent = true;
    return r;
}

static rec_span_t *span_named(const char *name)
{
    for (int i = 0; i < g_rec.n_spans; i++)
        if (strcmp(g_rec.spans[i].name, name) == 0)
            return &g_rec.spans[i];
    return NULL;
}

/* s is a child of the server span. */
static void assert_child(const rec_span_t *s, const rec_span_t *server)
{
    cr_assert_eq(s->kind, SVC_SPAN_INTERNAL, "%s", s->name);
    cr_assert(s->has_parent, "%s", s->name);
    cr_assert_eq(memcmp(&s->parent, &server->self, sizeof(s->parent)), 0, "%s", s->name);
    cr_assert(s->ended, "%s", s->name);
}

Test(trace, a_finished_request_has_every_stage_at_its_measured_times)
{
    inf_request_t *r = make_request();
    r->admit_us = 3000;
    r->first_token_us = 4500;
    r->last_token_us = 9000;
    inf_trace_end_t end = {
        0, NULL, svc_finish_reason_name(LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH), 9000};
    inf_trace_request(&g_tr, r, &end);
    cr_assert_eq(g_rec.n_spans, 4);
    rec_span_t *server = span_named(INF_TRACE_SPAN);
    cr_assert_not_null(server);
    cr_assert_eq(server->kind, SVC_SPAN_SERVER);
    cr_assert(server->has_parent);
    svc_trace_ctx_t want;
    cr_assert(svc_traceparent_parse(PARENT, &want));
    cr_assert_eq(memcmp(&server->parent, &want, sizeof(want)), 0);
    cr_assert_eq(server->start_us, 1000);
    cr_assert_eq(server->end_us, 9000);
    cr_assert(server->ended);
    cr_assert_eq(server->code, 0);
    assert_attr(server, "rpc.system", "grpc");
    assert_attr(server, "rpc.service", "llmserve.v1.Inference");
    assert_attr(server, "rpc.method", "Generate");
    assert_attr(server, "llmserve.request_id", "req-1");
    assert_attr(server, "gen_ai.operation.name", "text_completion");
    assert_attr(server, "gen_ai.request.model", "tiny");
    assert_attr(server, "gen_ai.request.max_tokens", "16");
    assert_attr(server, "gen_ai.request.temperature", "0.500");
    assert_attr(server, "gen_ai.request.top_p", "0.900");
    assert_attr(server, "gen_ai.request.top_k", "40");
    assert_attr(server, "gen_ai.request.seed", "99");
    assert_attr(server, "gen_ai.usage.input_tokens", "7");
    assert_attr(server, "gen_ai.usage.output_tokens", "5");
    assert_attr(server, "gen_ai.response.finish_reasons", "[length]");
    assert_attr(server, "llmserve.batch_size", "3");
    assert_attr(server, "llmserve.backend", "cpu");
    cr_assert_eq(server->n_events, 1);
    cr_assert_str_eq(server->event, "first_token");
    cr_assert_eq(server->event_us, 4500);

    rec_span_t *q = span_named("queue"), *p = span_named("prefill"), *d = span_named("decode");
    cr_assert(q && p && d);
    assert_child(q, server);
    assert_child(p, server);
    assert_child(d, server);
    cr_assert_eq(q->start_us, 1000);
    cr_assert_eq(q->end_us, 3000);
    cr_assert_eq(p->start_us, 3000);
    cr_assert_eq(p->end_us, 4500);
    cr_assert_eq(d->start_us, 4500);
    cr_assert_eq(d->end_us, 9000);
    cr_assert_eq(q->code + p->code + d->code, 0);
    assert_attr(p, "llmserve.prompt_tokens", "7");
    assert_attr(d, "llmserve.tokens", "5");
    free(r);
}

Test(trace, a_request_cancelled_in_the_queue_has_only_the_queue)
{
    inf_request_t *r = make_request();
    r->n_generated = 0;
    inf_trace_end_t end = {1, "request cancelled", "cancelled", 2500};
    inf_trace_request(&g_tr, r, &end);
    cr_assert_eq(g_rec.n_spans, 2);
    rec_span_t *server = span_named(INF_TRACE_SPAN), *q = span_named("queue");
    cr_assert(server && q);
    assert_child(q, server);
    cr_assert_eq(q->start_us, 1000);
    cr_assert_eq(q->end_us, 2500);
    cr_assert_eq(q->code, 1);
    cr_assert_str_eq(q->message, "request cancelled");
    cr_assert_eq(server->code, 1);
    cr_assert_eq(server->end_us, 2500);
    cr_assert_eq(server->n_events, 0);
    cr_assert_null(attr(server, "llmserve.batch_size"));
    assert_attr(server, "gen_ai.response.finish_reasons", "[cancelled]");
    assert_attr(server, "gen_ai.usage.output_tokens", "0");
    free(r);
}

Test(trace, an_error_before_the_first_token_ends_the_prefill_with_it)
{
    inf_request_t *r = make_request();
    r->n_generated = 0;
    r->admit_us = 2000;
    inf_trace_end_t end = {13, "forward pass failed: internal error", "error", 2600};
    inf_trace_request(&g_tr, r, &end);
    cr_assert_eq(g_rec.n_spans, 3);
    rec_span_t *q = span_named("queue"), *p = span_named("prefill");
    cr_assert(q && p);
    cr_assert_null(span_named("decode"));
    cr_assert_eq(q->end_us, 2000);
    cr_assert_eq(q->code, 0);
    cr_assert_eq(p->start_us, 2000);
    cr_assert_eq(p->end_us, 2600);
    cr_assert_eq(p->code, 13);
    cr_assert_str_eq(p->message, "forward pass failed: internal error");
    cr_assert_eq(span_named(INF_TRACE_SPAN)->code, 13);
    free(r);
}

Test(trace, a_chat_without_seed_or_top_k_and_an_unset_end_time)
{
    inf_request_t *r = make_request();
    r->chat = true;
    r->has_seed = false;
    sampler_init(&r->sampler, 0.0f, 1.0f, 0, 1);
    r->has_trace_parent = false;
    r->admit_us = 2000;
    r->first_token_us = 2100;
    r->last_token_us = 2200;
    inf_trace_end_t end = {
        0, NULL, svc_finish_reason_name(LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS), 0};
    inf_trace_request(&g_tr, r, &end);
    rec_span_t *server = span_named(INF_TRACE_SPAN);
    cr_assert_not(server->has_parent, "no traceparent: a new trace");
    assert_attr(server, "gen_ai.operation.name", "chat");
    assert_attr(server, "gen_ai.response.finish_reasons", "[stop]");
    cr_assert_null(attr(server, "gen_ai.request.seed"));
    cr_assert_null(attr(server, "gen_ai.request.top_k"));
    /* at_us 0: the end is now, after every measured time */
    cr_assert_geq(server->end_us, 2200);
    cr_assert_eq(span_named("decode")->end_us, server->end_us);
    free(r);
}

Test(trace, finish_reasons)
{
    cr_assert_str_eq(svc_finish_reason_name(LLMSERVE__V1__FINISH_REASON__FINISH_REASON_STOP),
                     "stop");
    cr_assert_str_eq(svc_finish_reason_name(LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS),
                     "stop");
    cr_assert_str_eq(svc_finish_reason_name(LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH),
                     "length");
    cr_assert_str_eq(svc_finish_reason_name(LLMSERVE__V1__FINISH_REASON__FINISH_REASON_CANCELLED),
                     "cancelled");
    cr_assert_str_eq(svc_finish_reason_name(LLMSERVE__V1__FINISH_REASON__FINISH_REASON_DEADLINE),
                     "deadline");
    cr_assert_str_eq(svc_finish_reason_name(LLMSERVE__V1__FINISH_REASON__FINISH_REASON_ERROR),
                     "error");
}

Test(trace, a_refused_submit_gets_a_server_span_from_what_it_said)
{
    Llmserve__V1__SamplingParams sp = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    sp.temperature = 5.0f;
    sp.max_tokens = 8;
    Llmserve__V1__InferenceSubmit sub = LLMSERVE__V1__INFERENCE_SUBMIT__INIT;
    sub.request_id = "bad-1";
    sub.prompt = "hello";
    sub.sampling = &sp;
    svc_trace_ctx_t parent;
    cr_assert(inf_trace_parent(&g_tr, PARENT, &parent));
    inf_trace_refused(&g_tr, &sub, &parent, 500, 3, "temperature is 5 (must be in [0, 2])");
    cr_assert_eq(g_rec.n_spans, 1, "no stage spans for a refused submit");
    rec_span_t *s = &g_rec.spans[0];
    cr_assert_str_eq(s->name, INF_TRACE_SPAN);
    cr_assert(s->has_parent);
    cr_assert_eq(s->start_us, 500);
    cr_assert_eq(s->end_us, 0, "ends now");
    cr_assert_eq(s->code, 3);
    cr_assert_str_eq(s->message, "temperature is 5 (must be in [0, 2])");
    assert_attr(s, "llmserve.request_id", "bad-1");
    assert_attr(s, "gen_ai.request.temperature", "5.000");
    assert_attr(s, "gen_ai.request.max_tokens", "8");
    assert_attr(s, "gen_ai.response.finish_reasons", "[error]");
    assert_attr(s, "gen_ai.usage.output_tokens", "0");
    cr_assert_null(attr(s, "gen_ai.usage.input_tokens"), "never tokenized");
}

Test(trace, a_request_id_that_is_not_utf8_is_left_out)
{
    Llmserve__V1__InferenceSubmit sub = LLMSERVE__V1__INFERENCE_SUBMIT__INIT;
    sub.request_id = "bad\xff";
    inf_trace_refused(&g_tr, &sub, NULL, 500, 3, "request_id is not valid UTF-8");
    cr_assert_eq(g_rec.n_spans, 1);
    cr_assert_not(g_rec.spans[0].has_parent);
    cr_assert_null(attr(&g_rec.spans[0], "llmserve.request_id"));
}

Test(trace, an_unsampled_span_makes_nothing_else)
{
    g_rec.sample = false;
    inf_request_t *r = make_request();
    r->admit_us = 2000;
    r->first_token_us = 2100;
    inf_trace_end_t end = {0, NULL, "length", 3000};
    inf_trace_request(&g_tr, r, &end);
    cr_assert_eq(g_rec.n_spans, 0);
    free(r);
}

Test(trace, the_traceparent_is_read_only_with_a_tracer)
{
    inf_trace_t off = {NULL, "tiny", "cpu"};
    svc_trace_ctx_t c;
    memset(&c, 0x5a, sizeof(c));
    svc_trace_ctx_t before = c;
    cr_assert_not(inf_trace_parent(&off, PARENT, &c));
    cr_assert_not(inf_trace_parent(&g_tr, "", &c));
    cr_assert_not(inf_trace_parent(&g_tr, NULL, &c));
    cr_assert_not(
        inf_trace_parent(&g_tr, "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01", &c));
    cr_assert_eq(memcmp(&c, &before, sizeof(c)), 0);
    /* With no tracer nothing is recorded, whatever the request. */
    inf_request_t *r = make_request();
    inf_trace_end_t end = {0, NULL, "length", 3000};
    inf_trace_request(&off, r, &end);
    inf_trace_refused(&off, &(Llmserve__V1__InferenceSubmit)LLMSERVE__V1__INFERENCE_SUBMIT__INIT,
                      NULL, 500, 3, "x");
    cr_assert_eq(g_rec.n_spans, 0);
    free(r);
}
