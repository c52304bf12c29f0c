/*
 * cache_gen.h - per-model key generations: how "drop every answer of model M" works
 * when memcached cannot list its keys.
 *
 * Every key digest includes its model's generation.  Invalidating a model moves it to
 * a new generation; the old entries are never asked for again and age out of
 * memcached by TTL or LRU.  The generation lives in memcached (shared by every cache
 * instance, no TTL) and is cached here, refreshed after max_age.
 *
 * Generations are wall-clock microseconds at the time of the bump, and never go down:
 * a new value is max(old + 1, now).  So if memcached loses the generation key (restart,
 * eviction), the value created again is newer than any used before and old answers
 * cannot come back; and a bump made while memcached was down (kept here, marked to be
 * written back) wins over the older value memcached still holds when it returns.
 *
 * Thread-safe: one mutex.
 */
#ifndef CACHE_GEN_H
#define CACHE_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cache_gen cache_gen_t;

typedef enum {
    CACHE_GEN_UNKNOWN = 0, /* never read from memcached and never bumped */
    CACHE_GEN_STALE = 1,   /* known, but read longer ago than max_age */
    CACHE_GEN_FRESH = 2,   /* known and recent */
} cache_gen_state_t;

/* Creates a table of at most max_models models (a full table forgets the least recently
 * refreshed model that has nothing to write back).  Aborts when out of memory. */
cache_gen_t *cache_gen_create(size_t max_models);

void cache_gen_destroy(cache_gen_t *g);

/* Reads the model's generation into *gen (0 when unknown). */
cache_gen_state_t cache_gen_get(cache_gen_t *g, const char *model, int64_t now_us,
                                int64_t max_age_us, uint64_t *gen);

/* Merges remote, the value just read from memcached, into the table and marks it
 * refreshed at now_us.  Returns the generation to use (the larger of the two); sets
 * *write_back when the local value is larger and memcached must be told. */
uint64_t cache_gen_merge(cache_gen_t *g, const char *model, uint64_t remote, int64_t now_us,
                         bool *write_back);

/* Moves the model to a new generation max(current + 1, floor) and marks it to be
 * written back; returns the new generation. */
uint64_t cache_gen_bump(cache_gen_t *g, const char *model, uint64_t floor, int64_t now_us);

/* Records that memcached now holds gen for model (clears the write-back mark when gen
 * is still current). */
void cache_gen_written(cache_gen_t *g, const char *model, uint64_t gen);

/* True when some model's bump still has to be written to memcached. */
bool cache_gen_pending(cache_gen_t *g);

/* Copies one model name whose bump must be written into buf (len bytes); returns false
 * when there is none. */
bool cache_gen_next_pending(cache_gen_t *g, char *buf, size_t len);

#endif
