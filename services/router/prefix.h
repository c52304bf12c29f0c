/*
 * prefix.h - a request's prefix key: what the router hashes to send requests that begin
 * alike to the instance whose prefix KV cache likely holds that beginning (pool.h,
 * prefix affinity).
 *
 * The key covers the first max_bytes bytes of what the model reads first: for a plain
 * prompt, the prompt; for messages, each message up to and including the first user
 * message, as its role and content (the system prompt and the opening question, which
 * a conversation and its retries share; later turns differ and would scatter it).  A
 * prompt shorter than max_bytes is hashed whole.  Thread-safe (no state).
 */
#ifndef ROUTER_PREFIX_H
#define ROUTER_PREFIX_H

#include "llmserve/v1/router.pb-c.h"

#include <stddef.h>
#include <stdint.h>

/* The prefix key of s over at most max_bytes bytes; 0 (no key) when max_bytes is 0 or
 * there is nothing to hash.  Never 0 otherwise. */
uint64_t router_prefix_key(const Llmserve__V1__GenerateSubmit *s, size_t max_bytes);

#endif
