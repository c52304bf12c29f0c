/*
 * driven_discovery.c - the discovery source a test drives (see driven_discovery.h).
 *
 * Lock rules: d->mu is held across every delivery and guards the callbacks and flags.
 */
#define _GNU_SOURCE
#include "driven_discovery.h"

#include "base/err.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct driven_discovery {
    discovery_t base;
    discovery_ops_t ops;
    pthread_mutex_t mu;
    discovery_update_fn fn;
    void *ud;
    discovery_caches_fn caches_fn;
    void *caches_ud;
    bool started, stopped;
    discovery_instance_t *first; /* until start */
    size_t n_first;
};

static int d_start(discovery_t *base, discovery_update_fn fn, void *ud)
{
    driven_discovery_t *d = (driven_discovery_t *)base;
    pthread_mutex_lock(&d->mu);
    d->fn = fn;
    d->ud = ud;
    d->started = true;
    fn(ud, d->first, d->n_first);
    pthread_mutex_unlock(&d->mu);
    return LS_OK;
}

static int d_watch_caches(discovery_t *base, discovery_caches_fn fn, void *ud)
{
    driven_discovery_t *d = (driven_discovery_t *)base;
    pthread_mutex_lock(&d->mu);
    d->caches_fn = fn;
    d->caches_ud = ud;
    pthread_mutex_unlock(&d->mu);
    return LS_OK;
}

static void d_stop(discovery_t *base)
{
    driven_discovery_t *d = (driven_discovery_t *)base;
    pthread_mutex_lock(&d->mu);
    d->stopped = true;
    pthread_mutex_unlock(&d->mu);
}

static void d_destroy(discovery_t *base)
{
    driven_discovery_t *d = (driven_discovery_t *)base;
    for (size_t i = 0; i < d->n_first; i++) {
        free(d->first[i].pool);
        free(d->first[i].version);
        free(d->first[i].addr);
    }
    free(d->first);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

driven_discovery_t *driven_discovery_create(const discovery_instance_t *first, size_t n,
                                            bool dynamic, bool caches)
{
    driven_discovery_t *d = calloc(1, sizeof(*d));
    d->ops = (discovery_ops_t){.name = "driven",
                               .dynamic = dynamic,
                               .start = d_start,
                               .stop = d_stop,
                               .destroy = d_destroy,
                               .watch_caches = caches ? d_watch_caches : NULL};
    d->base.ops = &d->ops;
    pthread_mutex_init(&d->mu, NULL);
    d->first = calloc(n ? n : 1, sizeof(*d->first));
    d->n_first = n;
    for (size_t i = 0; i < n; i++) {
        d->first[i].pool = strdup(first[i].pool);
        d->first[i].version = strdup(first[i].version);
        d->first[i].addr = strdup(first[i].addr);
        d->first[i].weight = first[i].weight;
    }
    return d;
}

discovery_t *driven_discovery_base(driven_discovery_t *d)
{
    return &d->base;
}

void driven_discovery_deliver(driven_discovery_t *d, const discovery_instance_t *list, size_t n)
{
    pthread_mutex_lock(&d->mu);
    if (d->started && !d->stopped)
        d->fn(d->ud, list, n);
    pthread_mutex_unlock(&d->mu);
}

void driven_discovery_caches(driven_discovery_t *d, const char *const *addrs, size_t n)
{
    pthread_mutex_lock(&d->mu);
    if (d->caches_fn && !d->stopped)
        d->caches_fn(d->caches_ud, addrs, n);
    pthread_mutex_unlock(&d->mu);
}
