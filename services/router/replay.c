#include "replay.h"

#include "base/err.h"
#include "cache_policy.h"

#include <stdlib.h>
#include <string.h>

int router_replay_hit(const Llmserve__V1__CacheLookupResult *hit, size_t max_events,
                      router_replay_emit_fn emit, void *ud, uint32_t *n_events)
{
    size_t n = hit->n_token_text_bytes, text_len = strlen(hit->text);
    size_t sum = 0;
    for (size_t i = 0; i < n && sum <= text_len; i++)
        sum += hit->token_text_bytes[i];
    bool ids = hit->n_token_ids == n;
    if (n == 0 || sum != text_len) { /* not kept, or not this text: one event */
        n = 0;
        ids = hit->n_token_ids == 1;
    }
    if (max_events == 0)
        max_events = 1;
    /* Each event's text is a copy: the pieces are not NUL-terminated within hit->text. */
    char *piece = malloc(text_len + 1);
    if (!piece)
        return LS_ERR_NOMEM;
    size_t per = n > max_events ? (n + max_events - 1) / max_events : 1;
    size_t at = 0, tok = 0;
    uint32_t index = 0;
    do {
        size_t run = n ? (n - tok < per ? n - tok : per) : 1, bytes = 0;
        for (size_t i = 0; n && i < run; i++)
            bytes += hit->token_text_bytes[tok + i];
        if (!n)
            bytes = text_len;
        memcpy(piece, hit->text + at, bytes);
        piece[bytes] = '\0';
        Llmserve__V1__GenerateToken t = LLMSERVE__V1__GENERATE_TOKEN__INIT;
        t.text = piece;
        t.id = ids && run == 1 ? hit->token_ids[tok] : -1;
        t.index = index++;
        t.cache_hit = true;
        Llmserve__V1__GenerateEvent ev = LLMSERVE__V1__GENERATE_EVENT__INIT;
        ev.kind_case = LLMSERVE__V1__GENERATE_EVENT__KIND_TOKEN;
        ev.token = &t;
        emit(ud, &ev);
        at += bytes;
        tok += run;
    } while (tok < n);
    free(piece);
    *n_events = index;
    return LS_OK;
}

Llmserve__V1__FinishReason router_replay_finish_reason(const Llmserve__V1__CacheLookupResult *hit)
{
    return router_cache_policy_storable(hit->finish_reason)
               ? hit->finish_reason
               : LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH;
}
