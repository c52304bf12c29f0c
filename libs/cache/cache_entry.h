/*
 * cache_entry.h - a cached answer as bytes, the form it takes in L1 and in memcached.
 *
 * Layout (all integers little-endian):
 *   "LSC1" | key digest (32) | expires_wall_s (u64) | finish_reason (i32) |
 *   prompt_tokens (u32) | completion_tokens (u32) | text_len (u32) | text |
 *   model_version_len (u32) | model_version | n_tokens (u32) | token ids (i32 each) |
 *   n_pieces (u32) | piece lengths (u32 each)
 * Magic "LSC2"; an "LSC1" entry (the same without the pieces) still decodes, with none.
 * The pieces are the byte lengths of the answer's tokens' texts in order (they sum to
 * text_len), so a hit can be replayed token by token as it was first streamed.
 * The digest of the key the answer belongs to travels inside the value: a reader
 * checks it, so a value can never be handed out for a different key even if a store
 * mixed keys up.  Decoding checks every length against the buffer: memcached's bytes
 * are treated as untrusted.  Thread-safe (pure functions).
 */
#ifndef CACHE_ENTRY_H
#define CACHE_ENTRY_H

#include "cache/cache_key.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    cache_digest_t key;     /* exact digest of the question */
    int64_t expires_wall_s; /* Unix seconds when the answer goes stale */
    int32_t finish_reason;  /* llmserve.v1.FinishReason */
    uint32_t prompt_tokens;
    uint32_t completion_tokens;
    const char *text; /* text_len bytes, not NUL-terminated */
    size_t text_len;
    const char *model_version; /* model_version_len bytes */
    size_t model_version_len;
    const uint8_t *token_bytes; /* n_tokens little-endian int32s (read with cache_entry_token) */
    size_t n_tokens;
    const uint8_t *piece_bytes; /* n_pieces little-endian u32s (read with cache_entry_piece) */
    size_t n_pieces;
} cache_entry_t;

/* Bytes cache_entry_encode writes for e. */
size_t cache_entry_encoded_size(const cache_entry_t *e);

/* Encodes e into a new buffer; the caller owns *out (free()).  Token ids are read from
 * e->token_bytes as written by cache_entry_set_tokens.  Returns LS_OK, LS_ERR_NOMEM, or
 * LS_ERR_INVALID when a length does not fit 32 bits. */
int cache_entry_encode(const cache_entry_t *e, uint8_t **out, size_t *out_len);

/* Points e at the fields in buf (borrowed: e is valid while buf is).  Returns LS_OK or
 * LS_ERR_FORMAT when buf is not a whole, well-formed entry. */
int cache_entry_decode(const uint8_t *buf, size_t len, cache_entry_t *e);

/* Token id i of a decoded entry. */
int32_t cache_entry_token(const cache_entry_t *e, size_t i);

/* Piece length i of a decoded entry. */
uint32_t cache_entry_piece(const cache_entry_t *e, size_t i);

/* Writes n token ids into bytes (4 * n bytes) in the entry's byte order, for encoding. */
void cache_entry_set_tokens(uint8_t *bytes, const int32_t *ids, size_t n);

/* Writes n piece lengths into bytes (4 * n bytes) in the entry's byte order. */
void cache_entry_set_pieces(uint8_t *bytes, const uint32_t *lens, size_t n);

/* True when n piece lengths (read from a decoded entry or given by a client) cut text into
 * n valid UTF-8 strings that together are the whole text. */
bool cache_pieces_valid(const char *text, size_t text_len, const uint32_t *lens, size_t n);

#endif
