#define _GNU_SOURCE
/* Lock rules: b->mu guards every server's state. */
#include "cache/cache_breaker.h"

#include "base/log.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct {
    int failures; /* in a row */
    bool open;
    int64_t next_probe_us;
} server_t;

struct cache_breaker {
    pthread_mutex_t mu;
    size_t n;
    int threshold;
    int64_t probe_interval_us;
    size_t n_open;
    server_t *s;
};

cache_breaker_t *cache_breaker_create(size_t n, int threshold, int64_t probe_interval_us)
{
    cache_breaker_t *b = ls_xcalloc(1, sizeof(*b));
    pthread_mutex_init(&b->mu, NULL);
    b->n = n ? n : 1;
    b->threshold = threshold > 0 ? threshold : 1;
    b->probe_interval_us = probe_interval_us;
    b->s = ls_xcalloc(b->n, sizeof(server_t));
    return b;
}

void cache_breaker_destroy(cache_breaker_t *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->mu);
    free(b->s);
    free(b);
}

bool cache_breaker_allow(cache_breaker_t *b, size_t i, int64_t now_us)
{
    if (i >= b->n)
        return false;
    pthread_mutex_lock(&b->mu);
    server_t *s = &b->s[i];
    bool ok = !s->open;
    if (s->open && now_us >= s->next_probe_us) {
        s->next_probe_us = now_us + b->probe_interval_us;
        ok = true;
    }
    pthread_mutex_unlock(&b->mu);
    return ok;
}

bool cache_breaker_success(cache_breaker_t *b, size_t i)
{
    if (i >= b->n)
        return false;
    pthread_mutex_lock(&b->mu);
    server_t *s = &b->s[i];
    bool changed = s->open;
    s->failures = 0;
    if (s->open) {
        s->open = false;
        b->n_open--;
    }
    pthread_mutex_unlock(&b->mu);
    return changed;
}

bool cache_breaker_failure(cache_breaker_t *b, size_t i, int64_t now_us)
{
    if (i >= b->n)
        return false;
    pthread_mutex_lock(&b->mu);
    server_t *s = &b->s[i];
    bool changed = false;
    if (++s->failures >= b->threshold && !s->open) {
        s->open = true;
        s->next_probe_us = now_us + b->probe_interval_us;
        b->n_open++;
        changed = true;
    }
    pthread_mutex_unlock(&b->mu);
    return changed;
}

bool cache_breaker_is_open(cache_breaker_t *b, size_t i)
{
    if (i >= b->n)
        return true;
    pthread_mutex_lock(&b->mu);
    bool open = b->s[i].open;
    pthread_mutex_unlock(&b->mu);
    return open;
}

bool cache_breaker_degraded(cache_breaker_t *b)
{
    pthread_mutex_lock(&b->mu);
    bool d = b->n_open > 0;
    pthread_mutex_unlock(&b->mu);
    return d;
}

size_t cache_breaker_count(const cache_breaker_t *b)
{
    return b->n;
}
