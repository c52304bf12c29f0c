/*
 * cache_stub.h - an in-process llmserve.v1.Cache/Session server for router tests: it
 * answers every lookup with a miss and every store with stored, counts what it got, and
 * can hold or delay its lookup answers so that lookups are in flight while a test acts.
 *
 * A Session the client half-closes is finished (status OK) once every lookup on it has
 * been answered, as the real cache does.
 *
 * cache_stub_start and cache_stub_stop assert (cr_assert): call them from the test's
 * thread.  The rest is thread-safe.
 */
#ifndef TEST_CACHE_STUB_H
#define TEST_CACHE_STUB_H

#include <stdbool.h>
#include <stdint.h>

typedef struct cache_stub cache_stub_t;

/* Starts a stub on 127.0.0.1 (any free port) with a thread of its own for the answers
 * it holds or delays.  Asserts that it listens. */
cache_stub_t *cache_stub_start(void);

/* "127.0.0.1:PORT" (borrowed for the stub's life). */
const char *cache_stub_addr(const cache_stub_t *s);

/* While held, lookups get no answer; releasing the hold answers every lookup waiting. */
void cache_stub_hold(cache_stub_t *s, bool hold);

/* Each lookup is answered delay_ms after it came (0, the default: at once). */
void cache_stub_delay(cache_stub_t *s, int delay_ms);

typedef struct {
    uint64_t lookups;  /* lookups received */
    uint64_t answered; /* lookups answered (sent; the client may have gone) */
    uint64_t stores;   /* stores received */
    uint64_t waiting;  /* lookups received and not answered yet */
    uint64_t sessions; /* Session calls started */
    uint64_t open;     /* of which not over yet */
    uint64_t finished; /* of which ended by the stub, after the client's half-close */
} cache_stub_counts_t;

cache_stub_counts_t cache_stub_counts(cache_stub_t *s);

/* Waits up to timeout_ms until at least n lookups have come; returns whether they did. */
bool cache_stub_wait_lookups(cache_stub_t *s, uint64_t n, int timeout_ms);

/* Shuts the server down (no grace: calls still open are cancelled), joins the thread
 * and frees the stub.  NULL is a no-op. */
void cache_stub_stop(cache_stub_t *s);

#endif
