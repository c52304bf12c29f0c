#define _GNU_SOURCE
#include "request.h"

#include "base/err.h"
#include "base/utf8.h"
#include "cache/cache_entry.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A refusal: its reason into err, code as the result.  A macro because a variadic
 * function cannot hand its arguments on to ls_set_err. */
#define REFUSE(code, err, len, ...) (ls_set_err((err), (len), __VA_ARGS__), (code))

static bool is_text(const char *s)
{
    return ls_utf8_valid(s, strlen(s));
}

static grpc_status_code check_sampling(const Llmserve__V1__SamplingParams *p, char *err, size_t len)
{
    if (!p)
        return GRPC_STATUS_OK;
    if (p->max_tokens < 0)
        return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len, "sampling.max_tokens is negative");
    if (!(p->temperature >= 0.0f && p->temperature <= 2.0f))
        return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len,
                      "sampling.temperature must be in [0, 2]");
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f))
        return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len, "sampling.top_p must be in [0, 1]");
    if (p->top_k < 0)
        return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len, "sampling.top_k is negative");
    if (p->n_stop > REQUEST_MAX_STOP)
        return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len, "more than %d stop strings",
                      REQUEST_MAX_STOP);
    for (size_t i = 0; i < p->n_stop; i++) {
        size_t l = strlen(p->stop[i]);
        if (l == 0 || l > REQUEST_MAX_STOP_BYTES || !ls_utf8_valid(p->stop[i], l))
            return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len,
                          "stop string %zu must be 1 to %d bytes of UTF-8", i,
                          REQUEST_MAX_STOP_BYTES);
    }
    return GRPC_STATUS_OK;
}

static grpc_status_code check_model(const request_limits_t *lim, const char *model, char *err,
                                    size_t len)
{
    size_t l = strlen(model);
    if (l == 0)
        return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len, "model is empty");
    if (l > REQUEST_MAX_NAME_BYTES || !ls_utf8_valid(model, l))
        return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len,
                      "model must be at most %d bytes of UTF-8", REQUEST_MAX_NAME_BYTES);
    if (lim->n_models == 0)
        return GRPC_STATUS_OK;
    for (size_t i = 0; i < lim->n_models; i++)
        if (strcmp(lim->models[i], model) == 0)
            return GRPC_STATUS_OK;
    return REFUSE(GRPC_STATUS_NOT_FOUND, err, len, "unknown model \"%.64s\"", model);
}

static grpc_status_code check_key(const request_limits_t *lim, const Llmserve__V1__CacheKey *k,
                                  char *err, size_t len)
{
    if (!k)
        return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len, "key is required");
    size_t tl = strlen(k->tenant);
    if (tl > REQUEST_MAX_NAME_BYTES || !ls_utf8_valid(k->tenant, tl))
        return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len,
                      "tenant must be at most %d bytes of UTF-8", REQUEST_MAX_NAME_BYTES);
    grpc_status_code code = check_model(lim, k->model, err, len);
    if (code != GRPC_STATUS_OK)
        return code;
    bool has_prompt = k->prompt[0] != '\0';
    if (has_prompt && k->n_messages > 0)
        return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len,
                      "key has both prompt and messages; give exactly one");
    if (!has_prompt && k->n_messages == 0)
        return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len,
                      "key has neither prompt nor messages (empty prompt)");
    size_t total = 0;
    if (has_prompt) {
        total = strlen(k->prompt);
        if (total > lim->max_key_bytes)
            return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len,
                          "prompt is %zu bytes, more than max-key-bytes %zu", total,
                          lim->max_key_bytes);
        if (!ls_utf8_valid(k->prompt, total))
            return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len, "prompt is not valid UTF-8");
        if (cache_key_normalize(k->prompt, total, NULL) == 0)
            return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len, "prompt is only whitespace");
    } else {
        if (k->n_messages > REQUEST_MAX_MESSAGES)
            return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len, "more than %d messages",
                          REQUEST_MAX_MESSAGES);
        for (size_t i = 0; i < k->n_messages; i++) {
            const Llmserve__V1__ChatMessage *m = k->messages[i];
            if (m->role != LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_SYSTEM &&
                m->role != LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER &&
                m->role != LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_ASSISTANT)
                return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len,
                              "message %zu has no valid role", i);
            if (m->role == LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_SYSTEM && i != 0)
                return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len,
                              "a system message may only come first (message %zu)", i);
            size_t cl = strlen(m->content);
            total += cl;
            if (total > lim->max_key_bytes)
                return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len,
                              "messages exceed max-key-bytes %zu", lim->max_key_bytes);
            if (!ls_utf8_valid(m->content, cl))
                return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len,
                              "message %zu is not valid UTF-8", i);
        }
    }
    return check_sampling(k->sampling, err, len);
}

grpc_status_code request_check(const request_limits_t *lim, const Llmserve__V1__CacheRequest *req,
                               char *err, size_t len)
{
    grpc_status_code code;
    switch (req->kind_case) {
    case LLMSERVE__V1__CACHE_REQUEST__KIND_LOOKUP: {
        const Llmserve__V1__CacheLookup *l = req->lookup;
        if (!(l->min_similarity >= 0.0f && l->min_similarity <= 1.0f))
            return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len,
                          "min_similarity must be in [0, 1]");
        return check_key(lim, l->key, err, len);
    }
    case LLMSERVE__V1__CACHE_REQUEST__KIND_STORE: {
        const Llmserve__V1__CacheStore *s = req->store;
        if ((code = check_key(lim, s->key, err, len)) != GRPC_STATUS_OK)
            return code;
        if (!is_text(s->text))
            return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len, "text is not valid UTF-8");
        if (strlen(s->model_version) > REQUEST_MAX_NAME_BYTES || !is_text(s->model_version))
            return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len,
                          "model_version must be at most %d bytes of UTF-8",
                          REQUEST_MAX_NAME_BYTES);
        for (size_t i = 0; i < s->n_token_ids; i++)
            if (s->token_ids[i] < 0)
                return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len, "token_ids[%zu] is negative",
                              i);
        if (s->n_token_text_bytes && s->n_token_ids &&
            s->n_token_text_bytes != s->n_token_ids)
            return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len,
                          "token_text_bytes has %zu entries for %zu token_ids",
                          s->n_token_text_bytes, s->n_token_ids);
        if (s->n_token_text_bytes && !cache_pieces_valid(s->text, strlen(s->text),
                                                         s->token_text_bytes,
                                                         s->n_token_text_bytes))
            return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len,
                          "token_text_bytes do not cut text into valid UTF-8 pieces that make "
                          "up all of it");
        return GRPC_STATUS_OK;
    }
    case LLMSERVE__V1__CACHE_REQUEST__KIND_INVALIDATE: {
        const Llmserve__V1__CacheInvalidate *v = req->invalidate;
        if (v->all_of_model)
            return check_model(lim, v->model, err, len);
        return check_key(lim, v->key, err, len);
    }
    case LLMSERVE__V1__CACHE_REQUEST__KIND_STATS:
        return GRPC_STATUS_OK;
    default:
        return REFUSE(GRPC_STATUS_INVALID_ARGUMENT, err, len,
                      "request has no operation (lookup, store, invalidate or stats)");
    }
}

grpc_status_code request_key_make(const Llmserve__V1__CacheKey *k, request_key_t *out)
{
    memset(out, 0, sizeof(*out));
    cache_key_input_t *in = &out->in;
    in->tenant = k->tenant;
    in->model = k->model;
    if (k->prompt[0]) {
        in->prompt = k->prompt;
    } else {
        out->msgs = calloc(k->n_messages, sizeof(cache_msg_t));
        if (!out->msgs)
            return GRPC_STATUS_RESOURCE_EXHAUSTED;
        for (size_t i = 0; i < k->n_messages; i++) {
            out->msgs[i].role = (int)k->messages[i]->role;
            out->msgs[i].content = k->messages[i]->content;
            out->msgs[i].content_len = strlen(k->messages[i]->content);
        }
        in->messages = out->msgs;
        in->n_messages = k->n_messages;
    }
    const Llmserve__V1__SamplingParams *p = k->sampling;
    if (p) {
        in->sampling.max_tokens = p->max_tokens;
        in->sampling.temperature = p->temperature;
        in->sampling.top_p = p->top_p;
        in->sampling.top_k = p->top_k;
        in->sampling.seed = p->seed;
        in->sampling.has_seed = p->has_seed;
        in->sampling.stop = (const char *const *)p->stop;
        in->sampling.n_stop = p->n_stop;
        in->sampling.ignore_eos = p->ignore_eos;
    }
    return GRPC_STATUS_OK;
}

void request_key_clear(request_key_t *k)
{
    free(k->msgs);
    k->msgs = NULL;
}
