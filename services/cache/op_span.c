#include "op_span.h"

#include "base/err.h"

#include <stddef.h>

static const char *operation(const Llmserve__V1__CacheRequest *req)
{
    switch (req->kind_case) {
    case LLMSERVE__V1__CACHE_REQUEST__KIND_LOOKUP:
        return "lookup";
    case LLMSERVE__V1__CACHE_REQUEST__KIND_STORE:
        return "store";
    case LLMSERVE__V1__CACHE_REQUEST__KIND_INVALIDATE:
        return "invalidate";
    case LLMSERVE__V1__CACHE_REQUEST__KIND_STATS:
        return "stats";
    default:
        return NULL; /* no operation: answered INVALID_ARGUMENT */
    }
}

svc_span_t *op_span_start(svc_tracer_t *t, const Llmserve__V1__CacheRequest *req)
{
    if (!t)
        return NULL;
    svc_trace_ctx_t parent;
    bool has_parent = req->traceparent && svc_traceparent_parse(req->traceparent, &parent);
    svc_span_t *s = svc_span_start(t, OP_SPAN_NAME, SVC_SPAN_SERVER, has_parent ? &parent : NULL);
    if (!s)
        return NULL;
    svc_span_set_str(s, "rpc.system", "grpc");
    svc_span_set_str(s, "rpc.service", "llmserve.v1.Cache");
    svc_span_set_str(s, "rpc.method", "Session");
    const char *op = operation(req);
    if (op)
        svc_span_set_str(s, "llmserve.cache.operation", op);
    return s;
}

void op_span_model(svc_span_t *s, const Llmserve__V1__CacheRequest *req)
{
    if (!s)
        return;
    const char *model = NULL;
    switch (req->kind_case) {
    case LLMSERVE__V1__CACHE_REQUEST__KIND_LOOKUP:
        model = req->lookup->key->model;
        break;
    case LLMSERVE__V1__CACHE_REQUEST__KIND_STORE:
        model = req->store->key->model;
        break;
    case LLMSERVE__V1__CACHE_REQUEST__KIND_INVALIDATE:
        model =
            req->invalidate->all_of_model ? req->invalidate->model : req->invalidate->key->model;
        break;
    default:
        break;
    }
    if (model)
        svc_span_set_str(s, "gen_ai.request.model", model);
}

void op_span_result(svc_span_t *s, const char *result)
{
    svc_span_set_str(s, "llmserve.cache.result", result);
}

void op_span_hit(svc_span_t *s, const engine_hit_t *h)
{
    if (!s)
        return;
    svc_span_set_str(s, "llmserve.cache.result", "hit");
    svc_span_set_str(s, "llmserve.cache.hit_kind", h->semantic ? "semantic" : "exact");
    /* The tier names of the lookups and hits counters (libs/svc/metric_names.h). */
    svc_span_set_str(s, "llmserve.cache.tier",
                     h->semantic ? "semantic" : (h->from_l1 ? "l1" : "memcached"));
    if (h->semantic)
        svc_span_set_double(s, "llmserve.cache.similarity", (double)h->similarity);
}

void op_span_end(svc_span_t *s, engine_t *eng, int grpc_code, const char *message)
{
    if (!s)
        return;
    if (engine_degraded(eng))
        svc_span_set_int(s, "llmserve.cache.degraded", 1);
    svc_span_end(s, grpc_code, message);
}

svc_span_t *op_span_mc_start(svc_span_t *op, op_span_mc_t call, const char *host, int port)
{
    static const char *const names[] = {
        [OP_SPAN_MC_GET] = "memcached get",
        [OP_SPAN_MC_SET] = "memcached set",
        [OP_SPAN_MC_ADD] = "memcached add",
        [OP_SPAN_MC_DELETE] = "memcached delete",
    };
    static const char *const ops[] = {
        [OP_SPAN_MC_GET] = "get",
        [OP_SPAN_MC_SET] = "set",
        [OP_SPAN_MC_ADD] = "add",
        [OP_SPAN_MC_DELETE] = "delete",
    };
    svc_trace_ctx_t ctx;
    if (!svc_span_context(op, &ctx))
        return NULL;
    svc_span_t *s = svc_span_start(op->tracer, names[call], SVC_SPAN_CLIENT, &ctx);
    svc_span_set_str(s, "db.system.name", "memcached");
    svc_span_set_str(s, "db.operation.name", ops[call]);
    if (host) {
        svc_span_set_str(s, "server.address", host);
        svc_span_set_int(s, "server.port", port);
    }
    return s;
}

void op_span_mc_end(svc_span_t *s, int rc, const char *why)
{
    if (!s)
        return;
    /* A miss and an add that found the key are answers from a healthy server. */
    if (rc == LS_OK || rc == LS_ERR_NOT_FOUND || rc == LS_ERR_EXISTS)
        svc_span_end(s, 0, NULL);
    else
        svc_span_end(s, ls_err_to_grpc(rc), why);
}
