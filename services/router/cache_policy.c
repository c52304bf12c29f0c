#include "cache_policy.h"

#include <stdio.h>
#include <string.h>

router_cache_plan_t router_cache_policy_resolve(Llmserve__V1__CachePolicy policy,
                                                const Llmserve__V1__SamplingParams *sampling,
                                                bool have_cache)
{
    bool deterministic = sampling->temperature == 0 || sampling->has_seed;
    router_cache_plan_t p;
    switch (policy) {
    case LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_BYPASS:
        p.lookup = p.store = false;
        break;
    case LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_READ_ONLY:
        p.lookup = deterministic;
        p.store = false;
        break;
    case LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_WRITE_ONLY:
        p.lookup = false;
        p.store = deterministic;
        break;
    case LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_FORCE:
        p.lookup = p.store = true;
        break;
    default:
        p.lookup = p.store = deterministic;
        break;
    }
    p.lookup = p.lookup && have_cache;
    p.store = p.store && have_cache;
    return p;
}

bool router_cache_policy_storable(Llmserve__V1__FinishReason reason)
{
    return reason == LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH ||
           reason == LLMSERVE__V1__FINISH_REASON__FINISH_REASON_STOP ||
           reason == LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS;
}

void router_cache_policy_model(char *buf, size_t len, const char *pool, const char *version)
{
    if (version && version[0])
        snprintf(buf, len, "%s@%s", pool, version);
    else
        snprintf(buf, len, "%s", pool);
}

/* protobuf-c's message fields are not const; the builders only borrow. */
static void fill_request(router_cache_msg_t *m, const router_cache_query_t *q, uint64_t id)
{
    const Llmserve__V1__GenerateSubmit *sub = q->submit;
    llmserve__v1__cache_key__init(&m->key);
    m->key.tenant = q->tenant ? (char *)q->tenant : sub->tenant;
    m->key.model = (char *)q->model;
    m->key.prompt = sub->prompt;
    m->key.n_messages = sub->n_messages;
    m->key.messages = sub->messages;
    m->key.sampling = (Llmserve__V1__SamplingParams *)q->sampling;
    llmserve__v1__cache_request__init(&m->req);
    m->req.id = id;
    m->req.traceparent = q->traceparent ? (char *)q->traceparent : "";
}

void router_cache_policy_lookup(router_cache_msg_t *m, const router_cache_query_t *q, uint64_t id)
{
    fill_request(m, q, id);
    llmserve__v1__cache_lookup__init(&m->lookup);
    m->lookup.key = &m->key;
    m->lookup.semantic = q->semantic;
    m->lookup.cache_policy = q->submit->cache_policy;
    m->req.kind_case = LLMSERVE__V1__CACHE_REQUEST__KIND_LOOKUP;
    m->req.lookup = &m->lookup;
}

void router_cache_policy_store(router_cache_msg_t *m, const router_cache_query_t *q, uint64_t id,
                               const router_answer_t *answer, const router_cache_outcome_t *o)
{
    fill_request(m, q, id);
    llmserve__v1__cache_store__init(&m->store);
    m->store.key = &m->key;
    m->store.text = answer->text ? answer->text : "";
    m->store.n_token_ids = answer->n_tokens;
    m->store.token_ids = answer->ids;
    m->store.n_token_text_bytes = answer->n_tokens;
    m->store.token_text_bytes = answer->pieces;
    m->store.finish_reason = o->finish_reason;
    llmserve__v1__usage__init(&m->usage);
    m->usage.prompt_tokens = o->prompt_tokens;
    m->usage.completion_tokens = o->completion_tokens;
    m->store.usage = &m->usage;
    m->store.ttl_seconds = o->ttl_s;
    m->store.cache_policy = q->submit->cache_policy;
    m->store.model_version = (char *)o->model_version;
    m->store.semantic = q->semantic;
    m->req.kind_case = LLMSERVE__V1__CACHE_REQUEST__KIND_STORE;
    m->req.store = &m->store;
}

const Llmserve__V1__CacheLookupResult *
router_cache_policy_hit(const Llmserve__V1__CacheResponse *resp)
{
    if (resp->kind_case != LLMSERVE__V1__CACHE_RESPONSE__KIND_LOOKUP || !resp->lookup)
        return NULL;
    return resp->lookup->hit ? resp->lookup : NULL;
}
