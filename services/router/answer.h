/*
 * answer.h - an answer as it is relayed, recorded for the cache store: its text, and each
 * token's id and text length so that a hit can be replayed token by token (replay.h).
 *
 * Recording stops for good once the text would reach max_bytes or memory runs out; such
 * an answer is relayed but not stored.  Not thread-safe: the owner's lock guards it.
 */
#ifndef ROUTER_ANSWER_H
#define ROUTER_ANSWER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The router's cap on a stored answer: larger answers are relayed, not cached. */
#define ROUTER_ANSWER_MAX_BYTES (1 << 20)

/* Fields are read-only outside answer.c. */
typedef struct {
    char *text;       /* NUL-terminated once a token was appended; NULL before */
    size_t len, cap;  /* bytes of text, without / with room for the NUL */
    int32_t *ids;     /* each token's id ... */
    uint32_t *pieces; /* ... and its text's length in bytes, in order */
    size_t n_tokens, tokens_cap;
    size_t max_bytes; /* the text plus its NUL stays within this */
    bool too_big;     /* recording stopped: past max_bytes or out of memory */
} router_answer_t;

/* Starts an empty answer whose text and NUL must stay within max_bytes. */
void router_answer_init(router_answer_t *a, size_t max_bytes);

/* Appends one token: text (its piece, NUL-terminated, copied) and id.  Once the text would
 * not fit, or memory runs out, too_big is set, the recording is dropped and later calls
 * do nothing. */
void router_answer_append(router_answer_t *a, const char *text, int32_t id);

/* Frees what the answer holds; it may be appended to again only after init. */
void router_answer_free(router_answer_t *a);

#endif
