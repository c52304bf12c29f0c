/*
 * cache_pool.h - the worker threads that talk to memcached.
 *
 * gRPC completion-queue threads must never block, so every memcached call runs here: a
 * fixed set of threads, each with its own memcached client, fed by one bounded, locked
 * queue.  A full queue refuses the job at once (the caller answers
 * RESOURCE_EXHAUSTED) rather than letting latency grow without bound.  When no job
 * arrives for idle_interval, one worker runs on_idle (health probes, write-backs).
 *
 * Thread-safe: submit from any thread.  Jobs run on pool threads, in submission order
 * as they are taken, several at once.
 */
#ifndef CACHE_POOL_H
#define CACHE_POOL_H

#include "cache/cache_mc.h"

#include <stddef.h>
#include <stdint.h>

typedef struct cache_pool cache_pool_t;

/* A job: runs once on a pool thread with that thread's memcached client. */
typedef void (*cache_job_fn_t)(void *arg, cache_mc_t *mc);

typedef struct {
    int workers;              /* threads; default 4 */
    size_t max_queue;         /* jobs waiting; default 65536 */
    cache_mc_config_t mc;     /* each worker's client */
    int64_t idle_interval_us; /* default 100000 (100 ms) */
    cache_job_fn_t on_idle;   /* may be NULL; arg is idle_arg */
    void *idle_arg;
} cache_pool_config_t;

void cache_pool_config_init(cache_pool_config_t *cfg);

/* Starts the workers.  Returns NULL when the memcached configuration is invalid or a
 * thread cannot start. */
cache_pool_t *cache_pool_create(const cache_pool_config_t *cfg);

/* Queues fn(arg).  Returns LS_OK (fn will run exactly once), LS_ERR_FULL when the queue
 * is full or LS_ERR_CLOSED after shutdown began (fn will not run). */
int cache_pool_submit(cache_pool_t *pool, cache_job_fn_t fn, void *arg);

/* Jobs waiting (not counting those running). */
size_t cache_pool_queued(cache_pool_t *pool);

/* Refuses new jobs, runs every queued one, joins the threads.  Later calls return at
 * once. */
void cache_pool_shutdown(cache_pool_t *pool);

/* Shuts down if needed, then frees.  NULL is a no-op. */
void cache_pool_destroy(cache_pool_t *pool);

#endif
