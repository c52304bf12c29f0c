/*
 * trace.h - the inference service's spans, through the tracing seam (libs/svc/tracer.h),
 * after the OpenTelemetry semantic conventions v1.37.0 (RPC and GenAI).
 *
 * Each submit on Inference.Generate gets one SERVER span named INF_TRACE_SPAN, a child of
 * the submit's traceparent when that is valid (else the root of a new trace), from the
 * request's arrival to its terminal event, ended with the gRPC code of the outcome: 0 for
 * done, CANCELLED for a cancelled request, the error event's code otherwise.  Its
 * attributes: rpc.system, rpc.service, rpc.method, llmserve.request_id,
 * gen_ai.operation.name ("chat" for messages, else "text_completion"),
 * gen_ai.request.model, gen_ai.request.max_tokens (resolved), .temperature, .top_p (as the
 * sampler uses them), .top_k (when on), .seed (when the submit gave one),
 * gen_ai.usage.input_tokens and .output_tokens, gen_ai.response.finish_reasons (one of
 * "stop", "length", "cancelled", "deadline", "error"), llmserve.batch_size (sequences in
 * the batch once it joined, itself included) and llmserve.backend; an event first_token.
 * Its INTERNAL children, one per stage the request reached: queue (arrival to
 * admission), prefill (admission to the first token; llmserve.prompt_tokens) and decode
 * (first token to the last; llmserve.tokens).  The last stage reached ends with the
 * outcome's code at the terminal event; the ones before it end with 0.
 *
 * Spans are made after the fact, from the request's measured timestamps, once its
 * terminal event is out: nothing is traced while it runs, so the decode loop does no
 * tracing work.  With tracing off (a NULL tracer) every function is one pointer test.
 *
 * Threads: any thread, for requests it holds; each call makes and ends its own spans.
 */
#ifndef INF_TRACE_H
#define INF_TRACE_H

#include "llmserve/v1/inference.pb-c.h"
#include "request.h"
#include "svc/finish_reason.h"
#include "svc/tracer.h"

#include <stdbool.h>
#include <stdint.h>

#define INF_TRACE_SPAN "llmserve.v1.Inference/Generate"

/* Where spans go and what every span of this instance says. */
typedef struct {
    svc_tracer_t *tracer; /* borrowed; NULL: tracing off */
    const char *model;    /* gen_ai.request.model, as Info reports it; NULL or "": not set */
    const char *backend;  /* llmserve.backend ("cpu", "cuda"); NULL or "": not set */
} inf_trace_t;

/* How a request ended. */
typedef struct {
    int code;                  /* gRPC code (see above) */
    const char *message;       /* the error's message, or why it was cancelled; may be NULL */
    const char *finish_reason; /* gen_ai.response.finish_reasons' one value
                                  (svc_finish_reason_name) */
    int64_t at_us;             /* when its terminal event went out (ls_now_us); 0 = now */
} inf_trace_end_t;

/* Parses traceparent (may be NULL) into *out when tracing is on.  Returns false, out
 * untouched, when tracing is off or the value is empty or not valid (the request then
 * starts a new trace). */
bool inf_trace_parent(const inf_trace_t *tr, const char *traceparent, svc_trace_ctx_t *out);

/* Records the spans of r, whose terminal event has just been sent (see above); r's
 * trace_parent and timestamps say where and when.  r is borrowed for the call. */
void inf_trace_request(const inf_trace_t *tr, const inf_request_t *r, const inf_trace_end_t *end);

/* Records the SERVER span of a submit refused before it reached the scheduler (a bad
 * field, a full queue, the server not ready or draining), from what sub says: it starts
 * at arrival_us and ends now with code and message.  parent may be NULL (a new trace).
 * sub is borrowed for the call. */
void inf_trace_refused(const inf_trace_t *tr, const Llmserve__V1__InferenceSubmit *sub,
                       const svc_trace_ctx_t *parent, int64_t arrival_us, int code,
                       const char *message);

#endif
