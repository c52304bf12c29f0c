#include "cache/cache_key.h"

#include "base/err.h"

#include <stdlib.h>
#include <string.h>

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

size_t cache_key_normalize(const char *s, size_t len, char *out)
{
    size_t n = 0;
    bool pending_space = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_space(c)) {
            pending_space = n > 0;
            continue;
        }
        if (pending_space) {
            if (out)
                out[n] = ' ';
            n++;
            pending_space = false;
        }
        if (out)
            out[n] = (char)c;
        n++;
    }
    return n;
}

/* Hashes the normalized form of s without materialising it: its length first, then the
 * bytes, so that field boundaries are unambiguous. */
static void put_normalized(cache_sha256_t *h, const char *s, size_t len)
{
    uint64_t n = cache_key_normalize(s, len, NULL);
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(n >> (8 * i));
    cache_sha256_update(h, le, sizeof(le));
    char buf[256];
    size_t used = 0;
    bool pending_space = false;
    bool any = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_space(c)) {
            pending_space = any;
            continue;
        }
        if (pending_space) {
            buf[used++] = ' ';
            pending_space = false;
        }
        buf[used++] = (char)c;
        any = true;
        if (used >= sizeof(buf) - 1) {
            cache_sha256_update(h, buf, used);
            used = 0;
        }
    }
    cache_sha256_update(h, buf, used);
}

static void put_u64(cache_sha256_t *h, uint64_t v)
{
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(v >> (8 * i));
    cache_sha256_update(h, le, sizeof(le));
}

static void put_bytes(cache_sha256_t *h, const char *s, size_t len)
{
    put_u64(h, len);
    cache_sha256_update(h, s, len);
}

static void put_float(cache_sha256_t *h, float f)
{
    if (f == 0.0f)
        f = 0.0f; /* -0 and +0 are the same setting */
    uint32_t bits;
    memcpy(&bits, &f, sizeof(bits));
    put_u64(h, bits);
}

bool cache_key_deterministic(const cache_sampling_t *s)
{
    return s->temperature == 0.0f || s->has_seed;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int put_sampling(cache_sha256_t *h, const cache_sampling_t *s)
{
    if (s->n_stop > CACHE_KEY_MAX_STOP || (s->n_stop > 0 && !s->stop))
        return LS_ERR_INVALID;
    bool greedy = s->temperature == 0.0f;
    float top_p = s->top_p == 1.0f ? 0.0f : s->top_p;
    put_u64(h, (uint64_t)(int64_t)s->max_tokens);
    put_float(h, s->temperature);
    put_float(h, greedy ? 0.0f : top_p);
    put_u64(h, greedy ? 0 : (uint64_t)(int64_t)s->top_k);
    put_u64(h, !greedy && s->has_seed);
    put_u64(h, !greedy && s->has_seed ? s->seed : 0);
    put_u64(h, s->ignore_eos);
    const char *sorted[CACHE_KEY_MAX_STOP];
    for (size_t i = 0; i < s->n_stop; i++) {
        if (!s->stop[i])
            return LS_ERR_INVALID;
        sorted[i] = s->stop[i];
    }
    qsort(sorted, s->n_stop, sizeof(sorted[0]), cmp_str);
    put_u64(h, s->n_stop);
    for (size_t i = 0; i < s->n_stop; i++)
        put_bytes(h, sorted[i], strlen(sorted[i]));
    return LS_OK;
}

/* Hashes everything shared by the exact and the scope digest. */
static int put_common(cache_sha256_t *h, const char *tag, const cache_key_input_t *in,
                      uint64_t generation)
{
    put_bytes(h, tag, strlen(tag));
    put_bytes(h, in->tenant, strlen(in->tenant));
    put_bytes(h, in->model, strlen(in->model));
    put_u64(h, generation);
    return put_sampling(h, &in->sampling);
}

static void put_message(cache_sha256_t *h, const cache_msg_t *m)
{
    put_u64(h, (uint64_t)(int64_t)m->role);
    put_normalized(h, m->content ? m->content : "", m->content ? m->content_len : 0);
}

int cache_key_compute(const cache_key_input_t *in, uint64_t generation, cache_key_t *out)
{
    if (!in->tenant || !in->model)
        return LS_ERR_INVALID;
    bool has_prompt = in->prompt != NULL;
    bool has_messages = in->n_messages > 0;
    if (has_prompt == has_messages || (has_messages && !in->messages))
        return LS_ERR_INVALID;

    cache_sha256_t ex, sc;
    cache_sha256_init(&ex);
    cache_sha256_init(&sc);
    if (put_common(&ex, "llmserve.cache.exact.v1", in, generation) != LS_OK ||
        put_common(&sc, "llmserve.cache.scope.v1", in, generation) != LS_OK)
        return LS_ERR_INVALID;
    if (has_prompt) {
        put_u64(&ex, 1);
        put_normalized(&ex, in->prompt, strlen(in->prompt));
        put_u64(&sc, 1);
    } else {
        put_u64(&ex, 2);
        put_u64(&ex, in->n_messages);
        for (size_t i = 0; i < in->n_messages; i++)
            put_message(&ex, &in->messages[i]);
        /* The scope holds the history and the role of the last turn, not its text. */
        put_u64(&sc, 2);
        put_u64(&sc, in->n_messages);
        for (size_t i = 0; i + 1 < in->n_messages; i++)
            put_message(&sc, &in->messages[i]);
        put_u64(&sc, (uint64_t)(int64_t)in->messages[in->n_messages - 1].role);
    }
    cache_sha256_final(&ex, out->exact.b);
    cache_sha256_final(&sc, out->scope.b);
    out->model_tag = cache_key_model_tag(in->model);
    return LS_OK;
}

void cache_key_semantic_text(const cache_key_input_t *in, const char **text, size_t *len)
{
    if (in->prompt) {
        *text = in->prompt;
        *len = strlen(in->prompt);
    } else if (in->n_messages > 0 && in->messages[in->n_messages - 1].content) {
        *text = in->messages[in->n_messages - 1].content;
        *len = in->messages[in->n_messages - 1].content_len;
    } else {
        *text = "";
        *len = 0;
    }
}

uint64_t cache_key_model_tag(const char *model)
{
    cache_sha256_t h;
    cache_sha256_init(&h);
    put_bytes(&h, "llmserve.cache.model.v1", strlen("llmserve.cache.model.v1"));
    put_bytes(&h, model, strlen(model));
    uint8_t d[CACHE_SHA256_BYTES];
    cache_sha256_final(&h, d);
    uint64_t tag = 0;
    for (int i = 0; i < 8; i++)
        tag |= (uint64_t)d[i] << (8 * i);
    return tag;
}

void cache_digest_hex(const cache_digest_t *d, char out[2 * CACHE_SHA256_BYTES + 1])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < CACHE_SHA256_BYTES; i++) {
        out[2 * i] = hex[d->b[i] >> 4];
        out[2 * i + 1] = hex[d->b[i] & 15];
    }
    out[2 * CACHE_SHA256_BYTES] = '\0';
}

bool cache_digest_equal(const cache_digest_t *a, const cache_digest_t *b)
{
    return memcmp(a->b, b->b, sizeof(a->b)) == 0;
}
