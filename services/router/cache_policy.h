/*
 * cache_policy.h - what the router asks of the answer cache for one request: whether to
 * look up and whether to store (from the request's CachePolicy and sampling), the
 * Cache.Session messages that do it, and what a lookup's response means.
 *
 * Pure functions, thread-safe.  The builders fill a caller's router_cache_msg_t whose
 * strings and arrays are borrowed from their arguments: send it before those change.
 */
#ifndef ROUTER_CACHE_POLICY_H
#define ROUTER_CACHE_POLICY_H

#include "answer.h"
#include "llmserve/v1/cache.pb-c.h"
#include "llmserve/v1/router.pb-c.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    bool lookup; /* look the answer up before running the model */
    bool store;  /* store a finished answer */
} router_cache_plan_t;

/* Resolves policy for a request with sampling (as resolved: max_tokens and seed filled
 * in): DEFAULT looks up and stores deterministic requests (temperature 0 or a seed),
 * BYPASS does neither, READ_ONLY only looks up and WRITE_ONLY only stores (deterministic
 * ones), FORCE does both for any request.  Without a cache (have_cache false) nothing. */
router_cache_plan_t router_cache_policy_resolve(Llmserve__V1__CachePolicy policy,
                                                const Llmserve__V1__SamplingParams *sampling,
                                                bool have_cache);

/* True for the finish reasons an answer is stored with: LENGTH, STOP, EOS (not
 * CANCELLED or DEADLINE: the answer is cut short). */
bool router_cache_policy_storable(Llmserve__V1__FinishReason reason);

/* Writes the key's model into buf (len bytes): "pool@version" for a versioned pool, so
 * versions never share answers, else "pool". */
void router_cache_policy_model(char *buf, size_t len, const char *pool, const char *version);

/* What a request's key is made of; everything borrowed. */
typedef struct {
    const Llmserve__V1__GenerateSubmit *submit;   /* tenant, prompt or messages, policy */
    const char *model;                            /* router_cache_policy_model's */
    const Llmserve__V1__SamplingParams *sampling; /* as resolved */
    bool semantic;                                /* semantic lookups and stores */
    const char *tenant; /* the tenant the caller's API key is bound to, which replaces the
                           submit's (so no tenant reads another's answers); NULL: none */
    const char *traceparent; /* the router's span for this operation (the cache's span
                                becomes its child); NULL: none */
} router_cache_query_t;

/* How a stored answer ended; model_version borrowed. */
typedef struct {
    Llmserve__V1__FinishReason finish_reason;
    uint32_t prompt_tokens, completion_tokens;
    uint32_t ttl_s; /* 0 = the cache's default */
    const char *model_version;
} router_cache_outcome_t;

/* A Cache.Session request and the messages it points to; send req. */
typedef struct {
    Llmserve__V1__CacheRequest req;
    Llmserve__V1__CacheKey key;
    Llmserve__V1__CacheLookup lookup;
    Llmserve__V1__CacheStore store;
    Llmserve__V1__Usage usage;
} router_cache_msg_t;

/* Fills m with the lookup of q's key under request id (nonzero). */
void router_cache_policy_lookup(router_cache_msg_t *m, const router_cache_query_t *q, uint64_t id);

/* Fills m with the store of answer (its recording, not too_big) for q's key under
 * request id (nonzero). */
void router_cache_policy_store(router_cache_msg_t *m, const router_cache_query_t *q, uint64_t id,
                               const router_answer_t *answer, const router_cache_outcome_t *o);

/* The hit in a lookup's response (borrowed from resp), or NULL for a miss, an error or
 * any other response. */
const Llmserve__V1__CacheLookupResult *
router_cache_policy_hit(const Llmserve__V1__CacheResponse *resp);

#endif
