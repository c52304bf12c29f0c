#include "answer.h"

#include <stdlib.h>
#include <string.h>

void router_answer_init(router_answer_t *a, size_t max_bytes)
{
    memset(a, 0, sizeof(*a));
    a->max_bytes = max_bytes;
}

/* Stops recording: an answer that will not be stored needs none of its memory. */
static void give_up(router_answer_t *a)
{
    size_t max_bytes = a->max_bytes;
    router_answer_free(a);
    router_answer_init(a, max_bytes);
    a->too_big = true;
}

void router_answer_append(router_answer_t *a, const char *text, int32_t id)
{
    if (a->too_big)
        return;
    size_t n = strlen(text);
    if (a->n_tokens == a->tokens_cap) {
        size_t cap = a->tokens_cap ? a->tokens_cap * 2 : 64;
        int32_t *ids = realloc(a->ids, cap * sizeof(*ids));
        if (ids)
            a->ids = ids;
        uint32_t *pieces = ids ? realloc(a->pieces, cap * sizeof(*pieces)) : NULL;
        if (!pieces) {
            give_up(a); /* no memory for it: relayed without caching */
            return;
        }
        a->pieces = pieces;
        a->tokens_cap = cap;
    }
    if (a->len + n + 1 > a->max_bytes) {
        give_up(a);
        return;
    }
    if (a->len + n + 1 > a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        while (cap < a->len + n + 1)
            cap *= 2;
        char *t = realloc(a->text, cap);
        if (!t) {
            give_up(a);
            return;
        }
        a->text = t;
        a->cap = cap;
    }
    a->ids[a->n_tokens] = id;
    a->pieces[a->n_tokens++] = (uint32_t)n;
    memcpy(a->text + a->len, text, n + 1);
    a->len += n;
}

void router_answer_free(router_answer_t *a)
{
    free(a->text);
    free(a->ids);
    free(a->pieces);
    a->text = NULL;
    a->ids = NULL;
    a->pieces = NULL;
    a->len = a->cap = a->n_tokens = a->tokens_cap = 0;
}
