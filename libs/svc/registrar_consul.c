/*
 * registrar_consul.c - keeps a service registered with the Consul agent (see
 * registrar_consul.h).  One thread per registrar; the state below is guarded by mu.
 */
#define _GNU_SOURCE
#include "svc/registrar_consul.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    svc_registrar_t base; /* first: the registrar.h contract */
    svc_consul_registrar_config_t cfg;
    char *tls_server_name;
    consul_t *consul;

    /* The registration, copied (owned). */
    char *name, *id, *address, *check_target;
    int port;
    bool tls;
    char **tags;
    size_t n_tags;
    consul_kv_t *meta;
    size_t n_meta;

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    bool have_reg, stop;
    bool in_call;    /* the thread is inside an HTTP call */
    bool registered; /* the agent has it, as far as we know */
    bool failing;    /* the current outage was logged */
    bool ever_registered;
    int64_t backoff_ms;
    uint64_t rng;
    svc_consul_registrar_stats_t stats;
} consul_registrar_t;

void svc_consul_registrar_config_init(svc_consul_registrar_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->check_interval_ms = 10000;
    cfg->check_timeout_ms = 5000;
    cfg->deregister_after_ms = 60000;
    cfg->resync_ms = 10000;
    cfg->call_timeout_ms = 3000;
    cfg->backoff_min_ms = 200;
    cfg->backoff_max_ms = 30000;
}

/* Waits on r->cv until at_us (ls_now_us clock) or a signal.  mu held. */
static void do_wait_until(consul_registrar_t *r, int64_t at_us)
{
    struct timespec ts = {(time_t)(at_us / 1000000), (long)(at_us % 1000000) * 1000};
    pthread_cond_timedwait(&r->cv, &r->mu, &ts);
}

/* The pause before the next try: the back-off with jitter in [1/2, 1] of it, so that a
 * fleet whose agent came back does not retry in step; doubles it.  mu held. */
static int64_t do_next_backoff_us(consul_registrar_t *r)
{
    r->rng ^= r->rng << 13;
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    int64_t d_us = r->backoff_ms * 1000;
    int64_t delay = d_us / 2 + (int64_t)(r->rng % (uint64_t)(d_us / 2 + 1));
    r->backoff_ms =
        r->backoff_ms * 2 > r->cfg.backoff_max_ms ? r->cfg.backoff_max_ms : r->backoff_ms * 2;
    return delay;
}

/* A failed call: logged once per outage (later ones at debug level). */
static void do_note_failure(consul_registrar_t *r, const char *what, const consul_result_t *res)
{
    r->stats.failures++;
    ls_log(r->failing ? LS_LOG_DEBUG : LS_LOG_WARN, "consul",
           "%s failed, retrying agent=%s id=%s status=%d reason=\"%s\"", what,
           consul_where(r->consul), r->id, res->status, res->err);
    r->failing = true;
}

static int do_register(consul_registrar_t *r)
{
    consul_service_t s = {
        .id = r->id,
        .name = r->name,
        .address = r->address,
        .port = r->port,
        .tags = (const char *const *)r->tags,
        .n_tags = r->n_tags,
        .meta = r->meta,
        .n_meta = r->n_meta,
        .grpc_target = r->check_target,
        .grpc_use_tls = r->tls,
        .tls_skip_verify = r->cfg.check_tls_skip_verify,
        .tls_server_name = r->tls_server_name,
        .check_interval_ms = r->cfg.check_interval_ms,
        .check_timeout_ms = r->cfg.check_timeout_ms,
        .deregister_after_ms = r->cfg.deregister_after_ms,
    };
    consul_result_t res;
    r->in_call = true;
    pthread_mutex_unlock(&r->mu);
    int rc = consul_register(r->consul, &s, r->cfg.call_timeout_ms, &res);
    pthread_mutex_lock(&r->mu);
    r->in_call = false;
    pthread_cond_broadcast(&r->cv);
    if (rc != LS_OK) {
        do_note_failure(r, "registration", &res);
        return rc;
    }
    r->stats.registrations++;
    LS_LOG_INFO("consul", "%s agent=%s name=%s id=%s address=%s port=%d check_interval_ms=%lld",
                r->ever_registered ? "registered again" : "registered", consul_where(r->consul),
                r->name, r->id, r->address, r->port, (long long)r->cfg.check_interval_ms);
    r->registered = r->ever_registered = true;
    r->failing = false;
    r->backoff_ms = r->cfg.backoff_min_ms;
    return LS_OK;
}

/* Asks the agent whether it still has the registration; a lost one is registered again
 * by the next round.  Returns the delay until the next ask. */
static int64_t do_resync(consul_registrar_t *r)
{
    consul_result_t res;
    r->in_call = true;
    pthread_mutex_unlock(&r->mu);
    int rc = consul_service_present(r->consul, r->id, r->cfg.call_timeout_ms, &res);
    pthread_mutex_lock(&r->mu);
    r->in_call = false;
    pthread_cond_broadcast(&r->cv);
    if (rc == LS_ERR_NOT_FOUND) {
        r->stats.lost++;
        r->registered = false;
        LS_LOG_WARN("consul", "the agent lost the registration, registering again agent=%s id=%s",
                    consul_where(r->consul), r->id);
        return 0;
    }
    if (rc != LS_OK) {
        do_note_failure(r, "registration check", &res);
        return do_next_backoff_us(r);
    }
    if (r->failing)
        LS_LOG_INFO("consul", "agent reachable again agent=%s id=%s", consul_where(r->consul),
                    r->id);
    r->failing = false;
    r->backoff_ms = r->cfg.backoff_min_ms;
    return r->cfg.resync_ms * 1000;
}

static void *registrar_main(void *arg)
{
    consul_registrar_t *r = arg;
    pthread_mutex_lock(&r->mu);
    int64_t next_us = ls_now_us();
    while (!r->stop) {
        if (!r->have_reg || ls_now_us() < next_us) {
            do_wait_until(r, r->have_reg ? next_us : ls_now_us() + 1000000);
            continue;
        }
        if (!r->registered) {
            if (do_register(r) == LS_OK)
                next_us = ls_now_us() + r->cfg.resync_ms * 1000;
            else
                next_us = ls_now_us() + do_next_backoff_us(r);
        } else {
            next_us = ls_now_us() + do_resync(r);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

static void free_reg(consul_registrar_t *r)
{
    free(r->name);
    free(r->id);
    free(r->address);
    free(r->check_target);
    for (size_t i = 0; i < r->n_tags; i++)
        free(r->tags[i]);
    free(r->tags);
    for (size_t i = 0; i < r->n_meta; i++) {
        free((char *)r->meta[i].key);
        free((char *)r->meta[i].value);
    }
    free(r->meta);
}

static int r_register(svc_registrar_t *base, const svc_registration_t *reg)
{
    consul_registrar_t *r = (consul_registrar_t *)base;
    if (!reg || !reg->name || !reg->name[0] || !reg->id || !reg->id[0] || !reg->address ||
        !reg->address[0] || reg->port <= 0 || reg->port > 65535)
        return LS_ERR_INVALID;
    pthread_mutex_lock(&r->mu);
    if (r->have_reg) {
        pthread_mutex_unlock(&r->mu);
        return LS_ERR_EXISTS;
    }
    r->name = ls_xstrdup(reg->name);
    r->id = ls_xstrdup(reg->id);
    r->address = ls_xstrdup(reg->address);
    r->port = reg->port;
    r->tls = reg->tls;
    char target[320];
    snprintf(target, sizeof(target), strchr(reg->address, ':') ? "[%s]:%d" : "%s:%d", reg->address,
             reg->port);
    r->check_target = ls_xstrdup(target);
    r->tags = ls_xcalloc(reg->n_tags + 1, sizeof(*r->tags));
    for (size_t i = 0; i < reg->n_tags; i++)
        r->tags[i] = ls_xstrdup(reg->tags[i]);
    r->n_tags = reg->n_tags;
    r->meta = ls_xcalloc(reg->n_meta + 1, sizeof(*r->meta));
    for (size_t i = 0; i < reg->n_meta; i++) {
        r->meta[i].key = ls_xstrdup(reg->meta[i].key);
        r->meta[i].value = ls_xstrdup(reg->meta[i].value);
    }
    r->n_meta = reg->n_meta;
    r->have_reg = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return LS_OK;
}

/* Stops the thread: waits for a call in flight until deadline_us, then leaves it to
 * finish on its own (destroy joins it). */
static void stop_thread(consul_registrar_t *r, int64_t deadline_us)
{
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->cv);
    while (r->in_call && ls_now_us() < deadline_us)
        do_wait_until(r, deadline_us);
    pthread_mutex_unlock(&r->mu);
}

static int r_deregister(svc_registrar_t *base, int64_t timeout_ms)
{
    consul_registrar_t *r = (consul_registrar_t *)base;
    int64_t t0 = ls_now_us();
    stop_thread(r, t0 + timeout_ms * 500); /* half the time, for the call in flight */
    pthread_mutex_lock(&r->mu);
    bool have = r->have_reg;
    pthread_mutex_unlock(&r->mu);
    if (!have)
        return LS_OK;
    /* Whether or not the agent has it now: deregistering an absent id is a no-op, and a
     * registration still in flight may land. */
    int64_t left_ms = timeout_ms - (ls_now_us() - t0) / 1000;
    if (left_ms < 100)
        left_ms = 100;
    consul_result_t res;
    int rc = consul_deregister(r->consul, r->id, left_ms, &res);
    if (rc == LS_OK) {
        pthread_mutex_lock(&r->mu);
        r->registered = false;
        pthread_mutex_unlock(&r->mu);
        LS_LOG_INFO("consul", "deregistered agent=%s id=%s", consul_where(r->consul), r->id);
    } else {
        LS_LOG_WARN("consul",
                    "deregistration failed; the agent removes the service once its check has "
                    "been critical for %lld ms agent=%s id=%s status=%d reason=\"%s\"",
                    (long long)r->cfg.deregister_after_ms, consul_where(r->consul), r->id,
                    res.status, res.err);
    }
    return rc;
}

static void r_destroy(svc_registrar_t *base)
{
    consul_registrar_t *r = (consul_registrar_t *)base;
    stop_thread(r, ls_now_us());
    if (r->thread_started)
        pthread_join(r->thread, NULL);
    free_reg(r);
    free(r->tls_server_name);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static const svc_registrar_ops_t consul_registrar_ops = {r_register, r_deregister, r_destroy};

svc_registrar_t *svc_consul_registrar_create(consul_t *c, const svc_consul_registrar_config_t *cfg)
{
    if (!c)
        return NULL;
    consul_registrar_t *r = ls_xcalloc(1, sizeof(*r));
    r->base.ops = &consul_registrar_ops;
    svc_consul_registrar_config_init(&r->cfg);
    if (cfg)
        r->cfg = *cfg;
    svc_consul_registrar_config_t d;
    svc_consul_registrar_config_init(&d);
    if (r->cfg.check_interval_ms <= 0)
        r->cfg.check_interval_ms = d.check_interval_ms;
    if (r->cfg.check_timeout_ms <= 0)
        r->cfg.check_timeout_ms = d.check_timeout_ms;
    if (r->cfg.deregister_after_ms < 0)
        r->cfg.deregister_after_ms = d.deregister_after_ms;
    if (r->cfg.resync_ms <= 0)
        r->cfg.resync_ms = d.resync_ms;
    if (r->cfg.call_timeout_ms <= 0)
        r->cfg.call_timeout_ms = d.call_timeout_ms;
    if (r->cfg.backoff_min_ms <= 0)
        r->cfg.backoff_min_ms = d.backoff_min_ms;
    if (r->cfg.backoff_max_ms < r->cfg.backoff_min_ms)
        r->cfg.backoff_max_ms = r->cfg.backoff_min_ms;
    r->tls_server_name = cfg && cfg->check_tls_server_name && cfg->check_tls_server_name[0]
                             ? ls_xstrdup(cfg->check_tls_server_name)
                             : NULL;
    r->cfg.check_tls_server_name = r->tls_server_name;
    r->consul = c;
    r->backoff_ms = r->cfg.backoff_min_ms;
    r->rng = (uint64_t)ls_wall_us() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)r;
    if (!r->rng)
        r->rng = 1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&r->thread, NULL, registrar_main, r) != 0) {
        LS_LOG_ERROR("consul", "cannot start the registration thread");
        r_destroy(&r->base);
        return NULL;
    }
    pthread_setname_np(r->thread, "svc-consul");
    r->thread_started = true;
    return &r->base;
}

void svc_consul_registrar_stats(svc_registrar_t *base, svc_consul_registrar_stats_t *out)
{
    consul_registrar_t *r = (consul_registrar_t *)base;
    pthread_mutex_lock(&r->mu);
    *out = r->stats;
    out->registered = r->registered;
    pthread_mutex_unlock(&r->mu);
}
