/*
 * inproc_cache.h - an in-process llmserve.v1.Cache/Session server for router tests: it
 * answers every lookup with a miss and every store with stored, counts what it got, and
 * can hold or delay its lookup answers so that lookups are in flight while a test acts.
 *
 * A Session the client half-closes is finished (status OK) once every lookup on it has
 * been answered, as the real cache does.
 *
 * inproc_cache_start and inproc_cache_stop assert (cr_assert): call them from the test's
 * thread.  The rest is thread-safe.
 */
#ifndef TEST_INPROC_CACHE_H
#define TEST_INPROC_CACHE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct inproc_cache inproc_cache_t;

/* Starts a server on 127.0.0.1 (any free port) with a thread of its own for the answers
 * it holds or delays.  Asserts that it listens. */
inproc_cache_t *inproc_cache_start(void);

/* "127.0.0.1:PORT" (borrowed for the server's life). */
const char *inproc_cache_addr(const inproc_cache_t *s);

/* While held, lookups get no answer; releasing the hold answers every lookup waiting. */
void inproc_cache_hold(inproc_cache_t *s, bool hold);

/* Each lookup is answered delay_ms after it came (0, the default: at once). */
void inproc_cache_delay(inproc_cache_t *s, int delay_ms);

typedef struct {
    uint64_t lookups;  /* lookups received */
    uint64_t answered; /* lookups answered (sent; the client may have gone) */
    uint64_t stores;   /* stores received */
    uint64_t waiting;  /* lookups received and not answered yet */
    uint64_t sessions; /* Session calls started */
    uint64_t open;     /* of which not over yet */
    uint64_t finished; /* of which ended by the server, after the client's half-close */
} inproc_cache_counts_t;

inproc_cache_counts_t inproc_cache_counts(inproc_cache_t *s);

/* Waits up to timeout_ms until at least n lookups have come; returns whether they did. */
bool inproc_cache_wait_lookups(inproc_cache_t *s, uint64_t n, int timeout_ms);

/* Shuts the server down (no grace: calls still open are cancelled), joins the thread
 * and frees the server.  NULL is a no-op. */
void inproc_cache_stop(inproc_cache_t *s);

#endif
