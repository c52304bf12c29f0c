/*
 * watch.c - a thread that keeps one service's passing instances current with blocking
 * queries on /v1/health/service/<name>, following the rules in consul.h.
 *
 * Lock rules: mu guards the statistics and first_delivered; stop is atomic so the
 * exchange in flight can test it without the lock, and is raised under mu (with a
 * broadcast) so a pause between queries cannot miss it.  Nothing else is shared: the
 * index, the last list and the failure state belong to the thread.  No lock is held
 * during a query or a callback.
 */
#define _GNU_SOURCE
#include "consul/consul_int.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAIT_DEFAULT_MS 30000

struct consul_watch {
    consul_t *c;
    char *service;
    consul_watch_config_t cfg; /* cfg.service points at service */
    consul_watch_fn fn;
    void *ud;
    CURLM *multi;
    pthread_t thread;

    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC: stop, the first delivery */
    bool first_delivered;
    consul_watch_stats_t stats;
};

void consul_watch_config_init(consul_watch_config_t *cfg, const char *service)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->service = service;
    cfg->wait_ms = WAIT_DEFAULT_MS; /* ms a blocking query may wait */
    cfg->min_interval_ms = 50;      /* ms between the starts of two queries */
    cfg->backoff_ms = 200;          /* ms, the first pause after an error */
    cfg->backoff_max_ms = 10000;    /* ms, the longest pause */
}

static struct timespec mono_ts(int64_t us)
{
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000};
    return ts;
}

/* Sleeps until until_us (monotonic) or a stop; returns false on a stop. */
static bool pause_until(consul_watch_t *w, int64_t until_us)
{
    pthread_mutex_lock(&w->mu);
    struct timespec ts = mono_ts(until_us);
    while (!atomic_load(&w->stop) && ls_now_us() < until_us)
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    bool go_on = !atomic_load(&w->stop);
    pthread_mutex_unlock(&w->mu);
    return go_on;
}

/* backoff_ms doubled for each failure after the first, capped. */
static int64_t backoff_ms(const consul_watch_config_t *cfg, uint64_t failures)
{
    int64_t ms = cfg->backoff_ms;
    for (uint64_t i = 1; i < failures && ms < cfg->backoff_max_ms; i++)
        ms *= 2;
    return ms < cfg->backoff_max_ms ? ms : cfg->backoff_max_ms;
}

static bool strings_equal(char *const *a, char *const *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return true;
}

/* Compared on what a consumer routes by: id, address, port, tags (in order) and meta
 * (sorted by key when parsed).  Both lists are sorted the same way. */
static bool lists_equal(const consul_instance_t *a, size_t na, const consul_instance_t *b,
                        size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++) {
        const consul_instance_t *x = &a[i], *y = &b[i];
        if (strcmp(x->id, y->id) != 0 || strcmp(x->address, y->address) != 0 ||
            x->port != y->port || x->n_tags != y->n_tags || x->n_meta != y->n_meta ||
            !strings_equal(x->tags, y->tags, x->n_tags) ||
            !strings_equal(x->meta_keys, y->meta_keys, x->n_meta) ||
            !strings_equal(x->meta_values, y->meta_values, x->n_meta))
            return false;
    }
    return true;
}

/* The index to send after an answer carrying got, when prev was sent (consul.h). */
static uint64_t next_index(uint64_t prev, uint64_t got, bool *reset)
{
    uint64_t next = got < 1 ? 1 : got;
    *reset = next < prev;
    return *reset ? 0 : next;
}

static void *watch_main(void *arg)
{
    consul_watch_t *w = arg;
    const consul_watch_config_t *cfg = &w->cfg;
    consul__cancel_t cancel = {.multi = w->multi, .stop = &w->stop};
    consul_instance_t *last = NULL;
    size_t n_last = 0;
    bool have_last = false, failing = false;
    uint64_t index = 0, failures = 0;
    int64_t next_us = 0;

    while (pause_until(w, next_us)) {
        int64_t started_us = ls_now_us();
        pthread_mutex_lock(&w->mu);
        w->stats.queries++;
        pthread_mutex_unlock(&w->mu);

        consul_instance_t *list;
        size_t n;
        uint64_t got;
        consul_result_t res;
        int rc = consul__health_query(w->c, w->service, true, index, cfg->wait_ms, &cancel, &list,
                                      &n, &got, &res);
        if (rc == LS_ERR_CANCELLED || atomic_load(&w->stop)) {
            consul_instances_free(list, n);
            break;
        }
        if (rc != LS_OK) {
            failures++;
            int64_t pause_ms = backoff_ms(cfg, failures);
            pthread_mutex_lock(&w->mu);
            w->stats.errors++;
            pthread_mutex_unlock(&w->mu);
            if (!failing)
                LS_LOG_WARN("consul",
                            "health query failing, keeping the last list service=%s agent=%s "
                            "status=%d error=%s retry_ms=%" PRId64 " reason=\"%s\"",
                            w->service, consul_where(w->c), res.status, ls_strerror(rc), pause_ms,
                            res.err);
            failing = true;
            next_us = ls_now_us() + pause_ms * 1000;
            continue;
        }
        if (failing)
            LS_LOG_INFO("consul",
                        "agent reachable again service=%s agent=%s failed_queries=%" PRIu64,
                        w->service, consul_where(w->c), failures);
        failing = false;
        failures = 0;

        bool reset;
        uint64_t next = next_index(index, got, &reset);
        if (reset)
            LS_LOG_INFO("consul",
                        "index went backwards, querying afresh service=%s from=%" PRIu64
                        " to=%" PRIu64,
                        w->service, index, got);
        index = next;
        bool deliver = !have_last || !lists_equal(last, n_last, list, n);
        pthread_mutex_lock(&w->mu);
        w->stats.index = index;
        w->stats.index_resets += reset;
        pthread_mutex_unlock(&w->mu);
        if (deliver) {
            LS_LOG_DEBUG("consul", "instances changed service=%s instances=%zu index=%" PRIu64,
                         w->service, n, index);
            w->fn(w->ud, list, n);
            consul_instances_free(last, n_last);
            last = list;
            n_last = n;
            have_last = true;
            pthread_mutex_lock(&w->mu);
            w->stats.deliveries++;
            w->first_delivered = true;
            pthread_cond_broadcast(&w->cv);
            pthread_mutex_unlock(&w->mu);
        } else {
            consul_instances_free(list, n);
        }
        next_us = started_us + cfg->min_interval_ms * 1000;
    }
    consul_instances_free(last, n_last);
    return NULL;
}

static int64_t clamp(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

consul_watch_t *consul_watch_start(consul_t *c, const consul_watch_config_t *cfg,
                                   consul_watch_fn fn, void *ud)
{
    if (!cfg->service || !cfg->service[0] || !fn) {
        LS_LOG_ERROR("consul", "a watch needs a service name and a callback");
        return NULL;
    }
    consul_watch_t *w = ls_xcalloc(1, sizeof(*w));
    w->c = c;
    w->service = ls_xstrdup(cfg->service);
    w->cfg = *cfg;
    w->cfg.service = w->service;
    w->cfg.wait_ms =
        cfg->wait_ms > 0 ? clamp(cfg->wait_ms, 1, CONSUL_WAIT_MAX_MS) : WAIT_DEFAULT_MS;
    w->cfg.min_interval_ms = clamp(cfg->min_interval_ms, 0, INT32_MAX);
    w->cfg.backoff_ms = clamp(cfg->backoff_ms, 1, INT32_MAX);
    w->cfg.backoff_max_ms = clamp(cfg->backoff_max_ms, w->cfg.backoff_ms, INT32_MAX);
    w->fn = fn;
    w->ud = ud;
    atomic_init(&w->stop, false);
    w->multi = curl_multi_init();
    if (!w->multi)
        goto out_free;
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&w->thread, NULL, watch_main, w) != 0)
        goto out_destroy_sync;
    pthread_setname_np(w->thread, "consul-watch");
    return w;

out_destroy_sync:
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    curl_multi_cleanup(w->multi);
out_free:
    LS_LOG_ERROR("consul", "the watch thread did not start service=%s", cfg->service);
    free(w->service);
    free(w);
    return NULL;
}

bool consul_watch_wait_first(consul_watch_t *w, int64_t timeout_ms)
{
    int64_t until_us = ls_now_us() + timeout_ms * 1000;
    struct timespec ts = mono_ts(until_us);
    pthread_mutex_lock(&w->mu);
    while (!w->first_delivered && ls_now_us() < until_us)
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    bool got = w->first_delivered;
    pthread_mutex_unlock(&w->mu);
    return got;
}

void consul_watch_stats(consul_watch_t *w, consul_watch_stats_t *out)
{
    pthread_mutex_lock(&w->mu);
    *out = w->stats;
    pthread_mutex_unlock(&w->mu);
}

void consul_watch_stop(consul_watch_t *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->stop, true);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    curl_multi_wakeup(w->multi);
    pthread_join(w->thread, NULL);
    curl_multi_cleanup(w->multi);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->service);
    free(w);
}
