/*
 * discovery_consul.c - the Consul source: one watch on the inference service, one on
 * the cache service when asked, their lists converted (discovery_consul_list.c) and
 * handed to the router.
 *
 * Lock rules: s->mu is held across every delivery (from either watch's thread, or from
 * start's own empty list), so deliveries never overlap and stop can wait for the one
 * running; it guards the callbacks, the delivered and stopped flags and the skips.
 * consul_watch_stop is never called with it held (it waits for a callback that may be
 * waiting for the lock).
 */
#define _GNU_SOURCE
#include "discovery_consul.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    discovery_t base;
    consul_t *consul;
    char *inference_service, *cache_service; /* cache_service NULL: not watched */
    int64_t wait_ms, wait_first_ms;

    pthread_mutex_t mu;
    discovery_update_fn fn;
    void *ud;
    discovery_caches_fn caches_fn;
    void *caches_ud;
    bool delivered; /* an inference list went to fn */
    bool stopped;
    discovery_consul_skips_t *skips, *cache_skips;
    consul_watch_t *inference, *caches; /* set and cleared by start, watch_caches, stop */
} consul_source_t;

void discovery_consul_config_init(discovery_consul_config_t *cfg)
{
    cfg->inference_service = "llmserve-inference";
    cfg->cache_service = "llmserve-cache";
    cfg->wait_ms = 30000;      /* ms */
    cfg->wait_first_ms = 2000; /* ms */
}

/* On the inference watch's thread. */
static void on_inference(void *ud, const consul_instance_t *list, size_t n)
{
    consul_source_t *s = ud;
    pthread_mutex_lock(&s->mu);
    if (!s->stopped) {
        discovery_instance_t *l;
        size_t k;
        discovery_consul_instances(list, n, s->skips, &l, &k, NULL);
        LS_LOG_INFO("router", "consul inference instances service=%s passing=%zu used=%zu",
                    s->inference_service, n, k);
        s->fn(s->ud, l, k);
        s->delivered = true;
        discovery_list_free(l, k);
    }
    pthread_mutex_unlock(&s->mu);
}

/* On the cache watch's thread. */
static void on_caches(void *ud, const consul_instance_t *list, size_t n)
{
    consul_source_t *s = ud;
    pthread_mutex_lock(&s->mu);
    if (!s->stopped) {
        char **addrs;
        size_t k;
        discovery_consul_caches(list, n, s->cache_skips, &addrs, &k, NULL);
        LS_LOG_INFO("router", "consul cache instances service=%s passing=%zu used=%zu",
                    s->cache_service, n, k);
        s->caches_fn(s->caches_ud, (const char *const *)addrs, k);
        discovery_consul_caches_free(addrs, k);
    }
    pthread_mutex_unlock(&s->mu);
}

static consul_watch_t *watch(consul_source_t *s, const char *service, consul_watch_fn fn)
{
    consul_watch_config_t wc;
    consul_watch_config_init(&wc, service);
    wc.wait_ms = s->wait_ms;
    consul_watch_t *w = consul_watch_start(s->consul, &wc, fn, s);
    if (!w)
        LS_LOG_ERROR("router", "cannot start the consul watch service=%s", service);
    return w;
}

static int source_watch_caches(discovery_t *d, discovery_caches_fn fn, void *ud)
{
    consul_source_t *s = (consul_source_t *)d;
    if (!s->cache_service)
        return LS_OK;
    pthread_mutex_lock(&s->mu);
    s->caches_fn = fn;
    s->caches_ud = ud;
    pthread_mutex_unlock(&s->mu);
    s->caches = watch(s, s->cache_service, on_caches);
    return s->caches ? LS_OK : LS_ERR_INTERNAL;
}

static int source_start(discovery_t *d, discovery_update_fn fn, void *ud)
{
    consul_source_t *s = (consul_source_t *)d;
    pthread_mutex_lock(&s->mu);
    s->fn = fn;
    s->ud = ud;
    pthread_mutex_unlock(&s->mu);
    LS_LOG_INFO("router", "consul watching agent=%s inference_service=%s cache_service=%s",
                consul_where(s->consul), s->inference_service,
                s->caches ? s->cache_service : "(none)");
    int64_t t0 = ls_now_us();
    s->inference = watch(s, s->inference_service, on_inference);
    if (!s->inference)
        return LS_ERR_INTERNAL;
    /* Both watches ask at once; together they get wait_first_ms. */
    bool inference_came = consul_watch_wait_first(s->inference, s->wait_first_ms);
    if (s->caches) {
        int64_t left_ms = s->wait_first_ms - (ls_now_us() - t0) / 1000;
        if (!consul_watch_wait_first(s->caches, left_ms > 0 ? left_ms : 0))
            LS_LOG_WARN("router",
                        "consul gave no cache list in time, no cache until it does "
                        "wait_first_ms=%" PRId64 " agent=%s service=%s",
                        s->wait_first_ms, consul_where(s->consul), s->cache_service);
    }
    pthread_mutex_lock(&s->mu);
    if (!s->delivered) {
        s->fn(s->ud, NULL, 0);
        s->delivered = true;
    }
    pthread_mutex_unlock(&s->mu);
    if (!inference_came)
        LS_LOG_WARN("router",
                    "consul gave no inference list in time, serving with no instance while "
                    "the watch goes on wait_first_ms=%" PRId64 " agent=%s service=%s",
                    s->wait_first_ms, consul_where(s->consul), s->inference_service);
    return LS_OK;
}

static void source_stop(discovery_t *d)
{
    consul_source_t *s = (consul_source_t *)d;
    pthread_mutex_lock(&s->mu);
    s->stopped = true; /* a delivery running now has ended; later ones do nothing */
    pthread_mutex_unlock(&s->mu);
    consul_watch_stop(s->inference);
    s->inference = NULL;
    consul_watch_stop(s->caches);
    s->caches = NULL;
}

static void source_destroy(discovery_t *d)
{
    consul_source_t *s = (consul_source_t *)d;
    discovery_consul_skips_destroy(s->skips);
    discovery_consul_skips_destroy(s->cache_skips);
    pthread_mutex_destroy(&s->mu);
    free(s->inference_service);
    free(s->cache_service);
    free(s);
}

static const discovery_ops_t source_ops = {.name = "consul",
                                           .dynamic = true,
                                           .start = source_start,
                                           .stop = source_stop,
                                           .destroy = source_destroy,
                                           .watch_caches = source_watch_caches};

discovery_t *discovery_consul_create(consul_t *c, const discovery_consul_config_t *cfg)
{
    consul_source_t *s = ls_xcalloc(1, sizeof(*s));
    s->base.ops = &source_ops;
    s->consul = c;
    s->inference_service = ls_xstrdup(cfg->inference_service);
    if (cfg->cache_service && cfg->cache_service[0])
        s->cache_service = ls_xstrdup(cfg->cache_service);
    s->wait_ms = cfg->wait_ms;
    s->wait_first_ms = cfg->wait_first_ms;
    pthread_mutex_init(&s->mu, NULL);
    s->skips = discovery_consul_skips_create("inference");
    s->cache_skips = discovery_consul_skips_create("cache");
    return &s->base;
}
