#include "validate.h"

#include "base/err.h"

#include "base/utf8.h"
#include "svc/keys.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Every refusal: its reason into msg, LS_ERR_INVALID as the result.  A macro because a
 * variadic function cannot hand its arguments on to ls_set_err. */
#define REFUSE(msg, len, ...) (ls_set_err((msg), (len), __VA_ARGS__), LS_ERR_INVALID)

static bool text_ok(const char *s)
{
    return ls_utf8_valid(s, strlen(s));
}

int router_validate_submit(const Llmserve__V1__GenerateSubmit *s, bool id_required,
                           size_t max_prompt_bytes, char *msg, size_t len)
{
    size_t id_len = strlen(s->request_id);
    if (id_required && id_len == 0)
        return REFUSE(msg, len, "request_id is empty (1 to %d bytes)", ROUTER_MAX_ID_BYTES);
    if (id_len > ROUTER_MAX_ID_BYTES)
        return REFUSE(msg, len, "request_id is %zu bytes (at most %d)", id_len,
                      ROUTER_MAX_ID_BYTES);
    if (!text_ok(s->request_id))
        return REFUSE(msg, len, "request_id is not valid UTF-8");
    bool has_prompt = s->prompt[0] != '\0';
    if (has_prompt == (s->n_messages > 0))
        return REFUSE(msg, len,
                      has_prompt ? "both prompt and messages are set (exactly one)"
                                 : "neither prompt nor messages is set (exactly one)");
    size_t total = strlen(s->prompt);
    if (has_prompt && !text_ok(s->prompt))
        return REFUSE(msg, len, "prompt is not valid UTF-8");
    if (s->n_messages > ROUTER_MAX_MESSAGES)
        return REFUSE(msg, len, "%zu messages (at most %d)", s->n_messages, ROUTER_MAX_MESSAGES);
    for (size_t i = 0; i < s->n_messages; i++) {
        const Llmserve__V1__ChatMessage *m = s->messages[i];
        if (m->role != LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_SYSTEM &&
            m->role != LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER &&
            m->role != LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_ASSISTANT)
            return REFUSE(msg, len, "messages[%zu].role is %d (want SYSTEM, USER or ASSISTANT)", i,
                          (int)m->role);
        if (m->role == LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_SYSTEM && i != 0)
            return REFUSE(msg, len, "messages[%zu] is a system message (only the first may be)", i);
        if (!text_ok(m->content))
            return REFUSE(msg, len, "messages[%zu].content is not valid UTF-8", i);
        total += strlen(m->content);
    }
    if (total > max_prompt_bytes)
        return REFUSE(msg, len, "prompt is %zu bytes (at most %zu)", total, max_prompt_bytes);
    const Llmserve__V1__SamplingParams *p = s->sampling;
    if (p) {
        if (p->max_tokens < 0)
            return REFUSE(msg, len, "sampling.max_tokens is %d (must be >= 0)", p->max_tokens);
        if (isnan(p->temperature) || p->temperature < 0 || p->temperature > 2)
            return REFUSE(msg, len, "sampling.temperature is %g (must be in [0, 2])",
                          (double)p->temperature);
        if (isnan(p->top_p) || p->top_p < 0 || p->top_p > 1)
            return REFUSE(msg, len, "sampling.top_p is %g (must be in [0, 1])", (double)p->top_p);
        if (p->top_k < 0)
            return REFUSE(msg, len, "sampling.top_k is %d (must be >= 0)", p->top_k);
        if (p->n_stop > ROUTER_MAX_STOP)
            return REFUSE(msg, len, "sampling.stop has %zu strings (at most %d)", p->n_stop,
                          ROUTER_MAX_STOP);
        for (size_t i = 0; i < p->n_stop; i++) {
            size_t l = strlen(p->stop[i]);
            if (l == 0 || l > ROUTER_MAX_STOP_BYTES)
                return REFUSE(msg, len, "sampling.stop[%zu] is %zu bytes (1 to %d)", i, l,
                              ROUTER_MAX_STOP_BYTES);
            if (!text_ok(p->stop[i]))
                return REFUSE(msg, len, "sampling.stop[%zu] is not valid UTF-8", i);
        }
    }
    if (strlen(s->conversation_id) > ROUTER_MAX_CONVERSATION_BYTES)
        return REFUSE(msg, len, "conversation_id is %zu bytes (at most %d)",
                      strlen(s->conversation_id), ROUTER_MAX_CONVERSATION_BYTES);
    if (strlen(s->tenant) > ROUTER_MAX_TENANT_BYTES)
        return REFUSE(msg, len, "tenant is %zu bytes (at most %d)", strlen(s->tenant),
                      ROUTER_MAX_TENANT_BYTES);
    if (!text_ok(s->conversation_id) || !text_ok(s->tenant) || !text_ok(s->model_hint))
        return REFUSE(msg, len, "conversation_id, tenant or model_hint is not valid UTF-8");
    if ((int)s->cache_policy < 0 || (int)s->cache_policy > 4)
        return REFUSE(msg, len, "cache_policy is %d (want 0 to 4)", (int)s->cache_policy);
    return LS_OK;
}

int router_validate_priority(int asked, int key_class, int *resolved, char *msg, size_t len)
{
    if (asked < LLMSERVE__V1__PRIORITY__PRIORITY_UNSPECIFIED ||
        asked > LLMSERVE__V1__PRIORITY__PRIORITY_BATCH)
        return REFUSE(msg, len,
                      "priority %d is not a known class (0 unspecified, 1 interactive, 2 "
                      "normal, 3 batch)",
                      asked);
    if (asked == LLMSERVE__V1__PRIORITY__PRIORITY_UNSPECIFIED) {
        *resolved = key_class ? key_class : LLMSERVE__V1__PRIORITY__PRIORITY_NORMAL;
        return LS_OK;
    }
    if (key_class && asked < key_class)
        return REFUSE(msg, len,
                      "priority %s is above this API key's class %s (ask for %s or lower, or "
                      "leave it unspecified)",
                      svc_priority_name(asked), svc_priority_name(key_class),
                      svc_priority_name(key_class));
    *resolved = asked;
    return LS_OK;
}
