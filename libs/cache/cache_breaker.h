/*
 * cache_breaker.h - one circuit breaker per memcached server.
 *
 * Closed: requests go to the server.  After `threshold` failures in a row it opens:
 * requests for that server are answered at once without trying (a lookup becomes a
 * miss, a store is kept in L1 only), and once every probe_interval one caller is let
 * through as a probe; the first success closes it again.  The service is "degraded"
 * while any breaker is open.
 *
 * Thread-safe: one mutex; calls are short and never block on I/O.
 */
#ifndef CACHE_BREAKER_H
#define CACHE_BREAKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cache_breaker cache_breaker_t;

/* Creates breakers for n servers (n >= 1).  Aborts when out of memory. */
cache_breaker_t *cache_breaker_create(size_t n, int threshold, int64_t probe_interval_us);

void cache_breaker_destroy(cache_breaker_t *b);

/* True when the caller may use server i now: always while closed; while open, only the
 * first caller after each probe_interval (that caller is the probe). */
bool cache_breaker_allow(cache_breaker_t *b, size_t i, int64_t now_us);

/* Records the outcome of a use of server i.  Returns true when this call changed the
 * server's state (opened or closed it), so the caller can log the transition once. */
bool cache_breaker_success(cache_breaker_t *b, size_t i);
bool cache_breaker_failure(cache_breaker_t *b, size_t i, int64_t now_us);

/* True while server i is open. */
bool cache_breaker_is_open(cache_breaker_t *b, size_t i);

/* True while any server is open. */
bool cache_breaker_degraded(cache_breaker_t *b);

/* Servers watched. */
size_t cache_breaker_count(const cache_breaker_t *b);

#endif
