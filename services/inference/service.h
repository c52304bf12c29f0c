/*
 * service.h - the llmserve.v1.Inference methods: Generate (a bidirectional stream
 * multiplexing many requests), Info and Embed (unary).
 *
 * Generate handlers run on completion-queue threads and only validate, tokenize and
 * queue: the model runs on the scheduler thread, which sends each request's events
 * straight to its stream (rpc_call_send is thread-safe).  Per stream: request ids
 * must be unique among the requests in flight (a duplicate is ALREADY_EXISTS and
 * the earlier request goes on); a cancel for an id not in flight is ignored; after
 * the client half-closes, the stream ends with OK once its last request has ended;
 * when the call is cancelled or breaks (including the transport cancelling a slow
 * reader with RESOURCE_EXHAUSTED) every request on it is cancelled and its KV freed.
 *
 * Embed (embed.h) runs on the rpc thread that received it, beside the scheduler: it
 * reads the checkpoint's token embedding table and never joins the batch.
 *
 * Until inf_service_attach, submits get UNAVAILABLE ("model is loading") and Info and
 * Embed fail with UNAVAILABLE (Embed also from inf_service_drain on); health says
 * NOT_SERVING until then and again from inf_service_drain on.  Once the scheduler's device failed for good, submits get
 * UNAVAILABLE (INF_SCHED_DEVICE_FAILED_MSG); health is main's (svc_fail) to turn.
 *
 * Threads: create, attach, drain and destroy are called by main; the handlers run on
 * rpc threads and the sink on the scheduler thread.
 */
#ifndef INF_SERVICE_H
#define INF_SERVICE_H

#include "model/checkpoint.h"
#include "model/forward.h"
#include "model/tokenizer.h"
#include "rpc/server.h"
#include "scheduler.h"

#include <stdint.h>

#define INF_SERVICE_NAME "llmserve.v1.Inference"

typedef struct inf_service inf_service_t;

typedef struct {
    const char *model_name;    /* for Info; NULL or "" = the checkpoint's name */
    const char *model_version; /* for Info; may be "" */
    const char *pool;          /* for Info; may be "" */
    int default_max_tokens;    /* for max_tokens 0 */
    int max_tokens_limit;      /* larger max_tokens is INVALID_ARGUMENT; 0 = none */
    int max_queue;             /* reported by Info (the scheduler enforces it) */
    svc_reporter_t *reporter;  /* for the submits the service refuses itself (report.h),
                                  borrowed; NULL = none */
    svc_tracer_t *tracer;      /* for the submits the service refuses itself (trace.h), and
                                  to read each submit's traceparent; borrowed; NULL = none */
} inf_service_config_t;

/* Registers Generate, Info and Embed on srv (before rpc_server_start).  cfg's strings are
 * copied.  Returns the service or NULL when a method cannot be registered. */
inf_service_t *inf_service_create(rpc_server_t *srv, const inf_service_config_t *cfg);

/* Sets health of "" and INF_SERVICE_NAME to SERVING or NOT_SERVING. */
void inf_service_set_serving(inf_service_t *svc, bool serving);

/* The model is ready: requests are accepted from now on and health is SERVING.
 * ck, tok, f and sched are borrowed until inf_service_destroy. */
void inf_service_attach(inf_service_t *svc, const ckpt_t *ck, const tok_t *tok, forward_t *f,
                        inf_sched_t *sched);

/* Graceful stop: health NOT_SERVING, new submits get UNAVAILABLE, requests in flight
 * may finish for grace_ms and then end with UNAVAILABLE; then every open Generate
 * stream ends with status UNAVAILABLE ("server shutting down").  Returns when every
 * request has had its terminal event queued. */
void inf_service_drain(inf_service_t *svc, int64_t grace_ms);

/* Frees the service; after rpc_server_shutdown (no call left).  NULL is a no-op. */
void inf_service_destroy(inf_service_t *svc);

#endif
