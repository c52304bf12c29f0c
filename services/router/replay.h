/*
 * replay.h - a cache hit turned back into the token events of a Generate stream.
 *
 * A hit is replayed in at most max_events token events: as the tokens it was first
 * streamed as (ids included) when the cache kept each token's text length and there are
 * few enough, else as runs of consecutive tokens per event (id -1).  Without the lengths
 * the whole text is one event.  Each event is one write to the client, a round trip
 * through its call's write queue, so one event (the router's default) is by far the
 * fastest; README's Router section has the measurement.
 *
 * Pure functions of the hit, thread-safe.
 */
#ifndef ROUTER_REPLAY_H
#define ROUTER_REPLAY_H

#include "llmserve/v1/cache.pb-c.h"
#include "llmserve/v1/router.pb-c.h"

#include <stddef.h>
#include <stdint.h>

/* Receives one token event (kind TOKEN, cache_hit set, index counting from 0, request_id
 * left for the caller to set); ev and everything it points to are borrowed until return. */
typedef void (*router_replay_emit_fn)(void *ud, Llmserve__V1__GenerateEvent *ev);

/* Emits hit's token events through emit, in order, on the calling thread: at most
 * max_events of them (0 counts as 1), at least one (an empty text is one empty event).
 * hit's token lengths are trusted only when they add up to its text (the cache checks
 * that they cut it into valid UTF-8 pieces).  Returns LS_OK with *n_events set, or
 * LS_ERR_NOMEM before any event. */
int router_replay_hit(const Llmserve__V1__CacheLookupResult *hit, size_t max_events,
                      router_replay_emit_fn emit, void *ud, uint32_t *n_events);

/* The finish reason a replayed hit ends with: the recorded one when answers are stored
 * with it (router_cache_policy_storable), else LENGTH. */
Llmserve__V1__FinishReason router_replay_finish_reason(const Llmserve__V1__CacheLookupResult *hit);

#endif
