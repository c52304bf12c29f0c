/*
 * cache_key.h - what identifies a cached answer: normalization and the key digests.
 *
 * Normalization (the contract with every client, also stated in cache.proto and the
 * README): the prompt text and each chat message's content have leading and trailing
 * ASCII whitespace (space, tab, newline, carriage return, vertical tab, form feed)
 * removed and every run of such whitespace replaced by one space.  Nothing else is
 * changed: case, punctuation and Unicode (no NFC) are kept, because they can change a
 * model's answer.
 *
 * Sampling parameters enter the key only where they change the answer:
 *   temperature 0 (greedy) ignores top_p, top_k and the seed, so they are left out;
 *   top_p 1 and top_p 0 both mean "off" and hash the same;
 *   a seed counts only when has_seed is set;
 *   stop strings are a set: their order does not matter;
 *   max_tokens and ignore_eos always count.
 *
 * The exact digest is SHA-256 over length-prefixed fields (so no two field lists can
 * run together into the same bytes): a domain tag, tenant, model, the model's key
 * generation (see cache_gen.h), the sampling parameters above, and the prompt or the
 * (role, content) pairs in order.  The scope digest covers the same fields except the
 * text of the last turn: prompts in one scope differ only in the text the semantic
 * cache compares, so a semantic match can never cross tenants, models, generations,
 * parameters or conversation histories.
 *
 * Thread-safe (pure functions).
 */
#ifndef CACHE_KEY_H
#define CACHE_KEY_H

#include "cache/cache_sha256.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CACHE_KEY_MAX_STOP 16 /* stop strings a key can hold; more is LS_ERR_INVALID */

/* A SHA-256 digest naming an answer or a semantic scope. */
typedef struct {
    uint8_t b[CACHE_SHA256_BYTES];
} cache_digest_t;

/* One chat turn; content need not be NUL-terminated. */
typedef struct {
    int role; /* llmserve.v1.ChatRole value */
    const char *content;
    size_t content_len;
} cache_msg_t;

/* Sampling parameters as the router resolved them (llmserve.v1.SamplingParams). */
typedef struct {
    int32_t max_tokens;
    float temperature;
    float top_p;
    int32_t top_k;
    uint64_t seed;
    bool has_seed;
    const char *const *stop; /* n_stop NUL-terminated strings */
    size_t n_stop;
    bool ignore_eos;
} cache_sampling_t;

/* Everything a key is made of; strings are borrowed for the call. */
typedef struct {
    const char *tenant; /* "" = the default tenant */
    const char *model;
    const char *prompt; /* NUL-terminated; NULL when messages are used */
    const cache_msg_t *messages;
    size_t n_messages;
    cache_sampling_t sampling;
} cache_key_input_t;

typedef struct {
    cache_digest_t exact; /* names the answer */
    cache_digest_t scope; /* names the semantic scope the prompt belongs to */
    uint64_t model_tag;   /* cache_key_model_tag(model) */
} cache_key_t;

/* Writes the normalized form of s[0..len) to out (room for len bytes; may be NULL to
 * only measure) and returns its length, which is never more than len. */
size_t cache_key_normalize(const char *s, size_t len, char *out);

/* True when the request's answer is reproducible: temperature 0 or a seed. */
bool cache_key_deterministic(const cache_sampling_t *s);

/* Computes the exact and scope digests of in for the model's key generation.
 * Returns LS_OK, or LS_ERR_INVALID when a string is NULL, both or neither of prompt and
 * messages are given, or there are more than CACHE_KEY_MAX_STOP stop strings. */
int cache_key_compute(const cache_key_input_t *in, uint64_t generation, cache_key_t *out);

/* The text the semantic cache compares: the prompt, or the last message's content
 * (borrowed from in). */
void cache_key_semantic_text(const cache_key_input_t *in, const char **text, size_t *len);

/* A 64-bit tag of the model name, the same for every tenant: in-process entries carry
 * it so that invalidating a model can find them. */
uint64_t cache_key_model_tag(const char *model);

/* Lowercase hex of d into out (65 bytes with the NUL). */
void cache_digest_hex(const cache_digest_t *d, char out[2 * CACHE_SHA256_BYTES + 1]);

bool cache_digest_equal(const cache_digest_t *a, const cache_digest_t *b);

#endif
