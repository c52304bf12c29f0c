/*
 * op_span.h - the trace spans of the cache service (OpenTelemetry semantic conventions
 * v1.37.0 plus llmserve.cache.*).
 *
 * One SERVER span per CacheRequest on a Cache.Session stream, named
 * "llmserve.v1.Cache/Session": a child of the request's traceparent when that parses
 * (else the root of a new trace), from the moment the request is read until its answer is
 * sent (or, for one never answered, until its job gives up), ended with the gRPC code of
 * the answer (0, or an error answer's code).  Attributes:
 *   rpc.system "grpc", rpc.service "llmserve.v1.Cache", rpc.method "Session"
 *   llmserve.cache.operation  "lookup", "store", "invalidate" or "stats"
 *   gen_ai.request.model      the model the request names (once the request is checked)
 *   llmserve.cache.result     lookup: "hit", "miss" (a lookup the policy skips included)
 *                             or "error"; store: "stored" (memcached took it),
 *                             "l1_only" (memcached refused it or was unreachable; L1
 *                             holds it), "skipped" (not stored: policy, sampling, finish
 *                             reason, size, no tier took it) or "error";
 *                             invalidate: "invalidated" or "error"; stats: "ok" or "error"
 *   llmserve.cache.tier       on a hit: "l1", "memcached" (where the exact answer was) or
 *                             "semantic" (found through the semantic index)
 *   llmserve.cache.hit_kind   on a hit: "exact" or "semantic"
 *   llmserve.cache.similarity on a semantic hit: the cosine similarity (double)
 *   llmserve.cache.degraded   1 when a memcached circuit breaker was open at the end
 * No prompt, answer or tenant ever goes into a span.
 *
 * One CLIENT span per memcached round trip made for the operation, a child of its span:
 * "memcached get", "memcached set", "memcached add" or "memcached delete", with
 * db.system.name "memcached", db.operation.name, server.address and server.port; ended
 * with 0 for an answer (a miss and an add that found the key are answers) and otherwise
 * the gRPC code of the failure and libmemcached's reason.  Calls a breaker refused never
 * went out and have none.
 *
 * With tracing off every function costs one pointer test: op_span_start returns NULL for
 * a NULL tracer before looking at the request, and the rest do nothing with a NULL span.
 * Threads: as tracer.h (one span used by one thread at a time: the completion-queue
 * thread that read the request, then the worker its job went to).
 */
#ifndef CACHE_OP_SPAN_H
#define CACHE_OP_SPAN_H

#include "engine.h"
#include "llmserve/v1/cache.pb-c.h"
#include "svc/tracer.h"

#define OP_SPAN_NAME "llmserve.v1.Cache/Session"

/* Starts the span of req, just read.  Returns NULL when t is NULL or the trace is not
 * sampled.  The request's fields other than its kind and traceparent are not read: they
 * are not checked yet. */
svc_span_t *op_span_start(svc_tracer_t *t, const Llmserve__V1__CacheRequest *req);

/* Sets gen_ai.request.model from req once request_check has passed it. */
void op_span_model(svc_span_t *s, const Llmserve__V1__CacheRequest *req);

/* Sets llmserve.cache.result (static text). */
void op_span_result(svc_span_t *s, const char *result);

/* Sets the attributes of a hit: result, tier, hit_kind and (semantic) similarity. */
void op_span_hit(svc_span_t *s, const engine_hit_t *h);

/* Sets llmserve.cache.degraded when eng runs degraded, and ends s with grpc_code and
 * message (borrowed for the call). */
void op_span_end(svc_span_t *s, engine_t *eng, int grpc_code, const char *message);

typedef enum {
    OP_SPAN_MC_GET,
    OP_SPAN_MC_SET,
    OP_SPAN_MC_ADD,
    OP_SPAN_MC_DELETE,
} op_span_mc_t;

/* Starts the CLIENT span of one memcached call, child of op, to host:port (host NULL:
 * unknown).  Returns NULL when op is NULL. */
svc_span_t *op_span_mc_start(svc_span_t *op, op_span_mc_t call, const char *host, int port);

/* Ends a memcached span with the call's result (base/err.h) and, for a failure, why. */
void op_span_mc_end(svc_span_t *s, int rc, const char *why);

#endif
