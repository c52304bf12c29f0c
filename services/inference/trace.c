/*
 * trace.c - the inference service's spans, made after the fact (see trace.h).
 */
#include "trace.h"

#include "base/clock.h"
#include "base/utf8.h"

#include <string.h>

bool inf_trace_parent(const inf_trace_t *tr, const char *traceparent, svc_trace_ctx_t *out)
{
    if (!tr->tracer || !traceparent || !traceparent[0])
        return false;
    return svc_traceparent_parse(traceparent, out);
}

/* The SERVER span's attributes that do not depend on the request's state. */
static svc_span_t *start_server(const inf_trace_t *tr, const svc_trace_ctx_t *parent,
                                int64_t arrival_us, const char *request_id, bool chat)
{
    svc_span_t *sp =
        svc_span_start_at(tr->tracer, INF_TRACE_SPAN, SVC_SPAN_SERVER, parent, arrival_us);
    if (!sp)
        return NULL; /* not sampled */
    svc_span_set_str(sp, "rpc.system", "grpc");
    svc_span_set_str(sp, "rpc.service", "llmserve.v1.Inference");
    svc_span_set_str(sp, "rpc.method", "Generate");
    if (request_id && request_id[0] && ls_utf8_valid(request_id, strlen(request_id)))
        svc_span_set_str(sp, "llmserve.request_id", request_id);
    svc_span_set_str(sp, "gen_ai.operation.name", chat ? "chat" : "text_completion");
    if (tr->model && tr->model[0])
        svc_span_set_str(sp, "gen_ai.request.model", tr->model);
    if (tr->backend && tr->backend[0])
        svc_span_set_str(sp, "llmserve.backend", tr->backend);
    return sp;
}

/* One stage of the request, a child of the SERVER span's context. */
static void stage(svc_tracer_t *t, const svc_trace_ctx_t *parent, const char *name, int64_t from_us,
                  int64_t to_us, int code, const char *message, const char *key, int64_t value)
{
    svc_span_t *sp = svc_span_start_at(t, name, SVC_SPAN_INTERNAL, parent, from_us);
    if (key)
        svc_span_set_int(sp, key, value);
    svc_span_end_at(sp, code, message, to_us);
}

void inf_trace_request(const inf_trace_t *tr, const inf_request_t *r, const inf_trace_end_t *end)
{
    if (!tr->tracer)
        return;
    int64_t end_us = end->at_us > 0 ? end->at_us : ls_now_us();
    svc_span_t *sp = start_server(tr, r->has_trace_parent ? &r->trace_parent : NULL, r->arrival_us,
                                  r->id, r->chat);
    if (!sp)
        return;
    svc_span_set_int(sp, "gen_ai.request.max_tokens", r->max_tokens);
    svc_span_set_double(sp, "gen_ai.request.temperature", (double)r->sampler.temperature);
    svc_span_set_double(sp, "gen_ai.request.top_p", (double)r->sampler.top_p);
    if (r->sampler.top_k > 0)
        svc_span_set_int(sp, "gen_ai.request.top_k", r->sampler.top_k);
    if (r->has_seed)
        svc_span_set_int(sp, "gen_ai.request.seed", (int64_t)r->seed); /* bits as int64 */
    svc_span_set_int(sp, "gen_ai.usage.input_tokens", r->n_prompt);
    svc_span_set_int(sp, "gen_ai.usage.output_tokens", r->n_generated);
    const char *reasons[1] = {end->finish_reason};
    svc_span_set_strs(sp, "gen_ai.response.finish_reasons", reasons, 1);
    bool admitted = r->admit_us > 0, answered = r->first_token_us > 0;
    if (admitted)
        svc_span_set_int(sp, "llmserve.batch_size", r->batch_size);
    if (answered)
        svc_span_event_at(sp, "first_token", r->first_token_us);

    /* The last stage reached ends with the outcome; the ones before it ended well. */
    svc_trace_ctx_t ctx;
    svc_span_context(sp, &ctx);
    if (admitted)
        stage(tr->tracer, &ctx, "queue", r->arrival_us, r->admit_us, 0, NULL, NULL, 0);
    else
        stage(tr->tracer, &ctx, "queue", r->arrival_us, end_us, end->code, end->message, NULL, 0);
    if (admitted && answered)
        stage(tr->tracer, &ctx, "prefill", r->admit_us, r->first_token_us, 0, NULL,
              "llmserve.prompt_tokens", r->n_prompt);
    else if (admitted)
        stage(tr->tracer, &ctx, "prefill", r->admit_us, end_us, end->code, end->message,
              "llmserve.prompt_tokens", r->n_prompt);
    if (answered)
        stage(tr->tracer, &ctx, "decode", r->first_token_us, end_us, end->code, end->message,
              "llmserve.tokens", r->n_generated);
    svc_span_end_at(sp, end->code, end->message, end_us);
}

void inf_trace_refused(const inf_trace_t *tr, const Llmserve__V1__InferenceSubmit *sub,
                       const svc_trace_ctx_t *parent, int64_t arrival_us, int code,
                       const char *message)
{
    if (!tr->tracer)
        return;
    svc_span_t *sp = start_server(tr, parent, arrival_us, sub->request_id, sub->n_messages > 0);
    if (!sp)
        return;
    const Llmserve__V1__SamplingParams *p = sub->sampling;
    if (p) {
        if (p->max_tokens > 0)
            svc_span_set_int(sp, "gen_ai.request.max_tokens", p->max_tokens);
        svc_span_set_double(sp, "gen_ai.request.temperature", (double)p->temperature);
        svc_span_set_double(sp, "gen_ai.request.top_p", (double)p->top_p);
        if (p->top_k > 0)
            svc_span_set_int(sp, "gen_ai.request.top_k", p->top_k);
        if (p->has_seed)
            svc_span_set_int(sp, "gen_ai.request.seed", (int64_t)p->seed);
    }
    svc_span_set_int(sp, "gen_ai.usage.output_tokens", 0);
    const char *reasons[1] = {"error"};
    svc_span_set_strs(sp, "gen_ai.response.finish_reasons", reasons, 1);
    svc_span_end(sp, code, message);
}
