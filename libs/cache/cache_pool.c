#define _GNU_SOURCE
/*
 * Lock rules: pool->mu guards the ring, the closing flag and last_idle_us; workers
 * wait on pool->cv.  Jobs and on_idle run without the lock.
 */
#include "cache/cache_pool.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

typedef struct {
    cache_job_fn_t fn;
    void *arg;
} job_t;

typedef struct {
    cache_pool_t *pool;
    cache_mc_t *mc;
    pthread_t thread;
    bool started;
} worker_t;

struct cache_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *ring;
    size_t cap, head, count;
    bool closing;
    bool joined;
    int64_t last_idle_us;
    cache_pool_config_t cfg;
    worker_t *workers;
    int n_workers;
};

void cache_pool_config_init(cache_pool_config_t *cfg)
{
    cfg->workers = 4;
    cfg->max_queue = 65536;
    cache_mc_config_init(&cfg->mc);
    cfg->idle_interval_us = 100000;
    cfg->on_idle = NULL;
    cfg->idle_arg = NULL;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    cache_pool_t *p = w->pool;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (p->count > 0) {
            job_t j = p->ring[p->head];
            p->head = (p->head + 1) % p->cap;
            p->count--;
            pthread_mutex_unlock(&p->mu);
            j.fn(j.arg, w->mc);
            pthread_mutex_lock(&p->mu);
            continue;
        }
        if (p->closing)
            break;
        int64_t now = ls_now_us();
        if (p->cfg.on_idle && now - p->last_idle_us >= p->cfg.idle_interval_us) {
            p->last_idle_us = now;
            pthread_mutex_unlock(&p->mu);
            p->cfg.on_idle(p->cfg.idle_arg, w->mc);
            pthread_mutex_lock(&p->mu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t wait_ns = p->cfg.idle_interval_us * 1000;
        ts.tv_sec += wait_ns / 1000000000;
        ts.tv_nsec += wait_ns % 1000000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        int rc = pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        (void)rc; /* ETIMEDOUT or a wake-up: the loop looks again either way */
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

cache_pool_t *cache_pool_create(const cache_pool_config_t *cfg)
{
    cache_pool_t *p = ls_xcalloc(1, sizeof(*p));
    p->cfg = *cfg;
    if (p->cfg.workers < 1)
        p->cfg.workers = 1;
    if (p->cfg.max_queue < 1)
        p->cfg.max_queue = 1;
    if (p->cfg.idle_interval_us < 1000)
        p->cfg.idle_interval_us = 1000;
    p->cap = p->cfg.max_queue;
    p->ring = ls_xcalloc(p->cap, sizeof(job_t));
    p->last_idle_us = ls_now_us();
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    p->workers = ls_xcalloc((size_t)p->cfg.workers, sizeof(worker_t));
    for (int i = 0; i < p->cfg.workers; i++) {
        p->workers[i].pool = p;
        p->workers[i].mc = cache_mc_create(&p->cfg.mc);
        if (!p->workers[i].mc)
            goto out_destroy;
    }
    for (int i = 0; i < p->cfg.workers; i++) {
        if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0)
            goto out_destroy;
        p->workers[i].started = true;
        p->n_workers++;
    }
    return p;
out_destroy:
    cache_pool_destroy(p);
    return NULL;
}

int cache_pool_submit(cache_pool_t *p, cache_job_fn_t fn, void *arg)
{
    int rc = LS_OK;
    pthread_mutex_lock(&p->mu);
    if (p->closing) {
        rc = LS_ERR_CLOSED;
    } else if (p->count == p->cap) {
        rc = LS_ERR_FULL;
    } else {
        p->ring[(p->head + p->count) % p->cap] = (job_t){fn, arg};
        p->count++;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

size_t cache_pool_queued(cache_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->count;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void cache_pool_shutdown(cache_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    bool join = !p->joined;
    p->closing = true;
    p->joined = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (!join)
        return;
    for (int i = 0; i < p->cfg.workers; i++)
        if (p->workers[i].started)
            pthread_join(p->workers[i].thread, NULL);
}

void cache_pool_destroy(cache_pool_t *p)
{
    if (!p)
        return;
    cache_pool_shutdown(p);
    for (int i = 0; i < p->cfg.workers; i++)
        cache_mc_destroy(p->workers[i].mc);
    free(p->workers);
    free(p->ring);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
