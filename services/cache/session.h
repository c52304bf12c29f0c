/*
 * session.h - the llmserve.v1.Cache/Session stream handler.
 *
 * Each CacheRequest gets exactly one CacheResponse with its id.  Stats, bad requests
 * and L1 hits are answered on the completion-queue thread that read them; everything
 * that may touch memcached (lookups that miss L1, stores, invalidations) becomes a job
 * on the engine's workers, which answer with rpc_call_send.  The stream ends with OK
 * once the client has half-closed and every job of the stream has answered.
 *
 * Errors for one request travel as CacheResponse.error (a gRPC code and a message),
 * the stream goes on: ALREADY_EXISTS for an id already in flight, RESOURCE_EXHAUSTED
 * when the stream has max_in_flight requests at workers or the worker queue is full,
 * and the codes of request.h.
 */
#ifndef CACHE_SESSION_H
#define CACHE_SESSION_H

#include "engine.h"
#include "request.h"
#include "rpc/server.h"
#include "svc/tracer.h"

typedef struct {
    engine_t *engine;        /* borrowed */
    request_limits_t limits; /* borrowed strings */
    size_t max_in_flight;    /* per stream */
    svc_tracer_t *tracer;    /* borrowed; NULL: tracing off (op_span.h) */
} session_config_t;

/* The handler for rpc_server_add_method; method_ctx is a session_config_t that must
 * outlive the server. */
extern const rpc_handler_t session_handler;

#define SESSION_METHOD "/llmserve.v1.Cache/Session"

#endif
