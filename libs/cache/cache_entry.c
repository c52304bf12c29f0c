#include "cache/cache_entry.h"

#include "base/err.h"
#include "base/log.h"
#include "base/utf8.h"

#include <stdlib.h>
#include <string.h>

#define MAGIC "LSC2"
#define MAGIC_V1 "LSC1" /* no pieces */
/* magic, digest, expiry, reason, two counts, and the four length words */
#define FIXED_BYTES (4 + CACHE_SHA256_BYTES + 8 + 4 + 4 + 4 + 4 + 4 + 4 + 4)

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

size_t cache_entry_encoded_size(const cache_entry_t *e)
{
    return FIXED_BYTES + e->text_len + e->model_version_len + 4 * e->n_tokens + 4 * e->n_pieces;
}

int cache_entry_encode(const cache_entry_t *e, uint8_t **out, size_t *out_len)
{
    if (e->text_len > UINT32_MAX || e->model_version_len > UINT32_MAX ||
        e->n_tokens > UINT32_MAX / 4 || e->n_pieces > UINT32_MAX / 4)
        return LS_ERR_INVALID;
    size_t len = cache_entry_encoded_size(e);
    uint8_t *buf = malloc(len);
    if (!buf)
        return LS_ERR_NOMEM;
    uint8_t *p = buf;
    memcpy(p, MAGIC, 4);
    p += 4;
    memcpy(p, e->key.b, CACHE_SHA256_BYTES);
    p += CACHE_SHA256_BYTES;
    put32(p, (uint32_t)((uint64_t)e->expires_wall_s));
    put32(p + 4, (uint32_t)((uint64_t)e->expires_wall_s >> 32));
    p += 8;
    put32(p, (uint32_t)e->finish_reason);
    put32(p + 4, e->prompt_tokens);
    put32(p + 8, e->completion_tokens);
    p += 12;
    put32(p, (uint32_t)e->text_len);
    p += 4;
    if (e->text_len)
        memcpy(p, e->text, e->text_len);
    p += e->text_len;
    put32(p, (uint32_t)e->model_version_len);
    p += 4;
    if (e->model_version_len)
        memcpy(p, e->model_version, e->model_version_len);
    p += e->model_version_len;
    put32(p, (uint32_t)e->n_tokens);
    p += 4;
    if (e->n_tokens)
        memcpy(p, e->token_bytes, 4 * e->n_tokens);
    p += 4 * e->n_tokens;
    put32(p, (uint32_t)e->n_pieces);
    p += 4;
    if (e->n_pieces)
        memcpy(p, e->piece_bytes, 4 * e->n_pieces);
    p += 4 * e->n_pieces;
    LS_ASSERT((size_t)(p - buf) == len);
    *out = buf;
    *out_len = len;
    return LS_OK;
}

int cache_entry_decode(const uint8_t *buf, size_t len, cache_entry_t *e)
{
    if (!buf || len < FIXED_BYTES - 4)
        return LS_ERR_FORMAT;
    bool v1 = memcmp(buf, MAGIC_V1, 4) == 0;
    if (!v1 && (len < FIXED_BYTES || memcmp(buf, MAGIC, 4) != 0))
        return LS_ERR_FORMAT;
    const uint8_t *p = buf + 4, *end = buf + len;
    memcpy(e->key.b, p, CACHE_SHA256_BYTES);
    p += CACHE_SHA256_BYTES;
    e->expires_wall_s = (int64_t)((uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32);
    p += 8;
    e->finish_reason = (int32_t)get32(p);
    e->prompt_tokens = get32(p + 4);
    e->completion_tokens = get32(p + 8);
    p += 12;
    size_t n = get32(p);
    p += 4;
    if ((size_t)(end - p) < n + 4)
        return LS_ERR_FORMAT;
    e->text = (const char *)p;
    e->text_len = n;
    p += n;
    n = get32(p);
    p += 4;
    if ((size_t)(end - p) < n + 4)
        return LS_ERR_FORMAT;
    e->model_version = (const char *)p;
    e->model_version_len = n;
    p += n;
    n = get32(p);
    p += 4;
    e->token_bytes = p;
    e->n_tokens = n;
    e->piece_bytes = NULL;
    e->n_pieces = 0;
    if (v1)
        return (size_t)(end - p) / 4 == n && (size_t)(end - p) % 4 == 0 ? LS_OK : LS_ERR_FORMAT;
    if ((size_t)(end - p) / 4 < n + 1)
        return LS_ERR_FORMAT;
    p += 4 * n;
    n = get32(p);
    p += 4;
    if ((size_t)(end - p) / 4 != n || (size_t)(end - p) % 4 != 0)
        return LS_ERR_FORMAT;
    e->piece_bytes = n ? p : NULL;
    e->n_pieces = n;
    return LS_OK;
}

uint32_t cache_entry_piece(const cache_entry_t *e, size_t i)
{
    return get32(e->piece_bytes + 4 * i);
}

void cache_entry_set_pieces(uint8_t *bytes, const uint32_t *lens, size_t n)
{
    for (size_t i = 0; i < n; i++)
        put32(bytes + 4 * i, lens[i]);
}

bool cache_pieces_valid(const char *text, size_t text_len, const uint32_t *lens, size_t n)
{
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] > text_len - at || !ls_utf8_valid(text + at, lens[i]))
            return false;
        at += lens[i];
    }
    return at == text_len;
}

int32_t cache_entry_token(const cache_entry_t *e, size_t i)
{
    return (int32_t)get32(e->token_bytes + 4 * i);
}

void cache_entry_set_tokens(uint8_t *bytes, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        put32(bytes + 4 * i, (uint32_t)ids[i]);
}
