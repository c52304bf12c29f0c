/*
 * mux.c - a supervised, multiplexed upstream stream.
 *
 * Lock rules: m->mu guards the stream pointer, the flags and the registrations.  It is
 * never held while a handler callback or a probe runs; rpc_stream_send/close_send are
 * called under it (they take only the stream's own lock and never call back).
 */
#define _GNU_SOURCE
#include "rpc/mux.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "rpc/idmap.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const rpc_mux_handler_t *h;
    void *ud;
} reg_t;

struct rpc_mux {
    rpc_mux_config_t cfg;
    rpc_channel_config_t channel; /* cfg.channel's copy, or the defaults */
    char *target;
    rpc_client_t *client;
    rpc_channel_t *ch;
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    rpc_stream_t *stream; /* the open stream (our reference), NULL when none */
    int ending;           /* on_stream_status calls still running */
    bool up;              /* stream open and taking requests */
    bool stop;
    int64_t opened_at_us;
    rpc_idmap_t regs; /* id -> reg_t* */
};

static void wait_until(rpc_mux_t *m, int64_t at_us)
{
    struct timespec ts = {(time_t)(at_us / 1000000), (long)(at_us % 1000000) * 1000};
    pthread_cond_timedwait(&m->cv, &m->mu, &ts);
}

static void dispatch(rpc_mux_t *m, const ProtobufCMessage *msg)
{
    uint64_t id = 0;
    bool terminal = false;
    if (!m->cfg.route(msg, &id, &terminal))
        return;
    pthread_mutex_lock(&m->mu);
    reg_t *r = terminal ? rpc_idmap_del(&m->regs, id) : rpc_idmap_get(&m->regs, id);
    const rpc_mux_handler_t *h = r ? r->h : NULL;
    void *rud = r ? r->ud : NULL;
    if (r && !terminal)
        h->ref(rud); /* the callback's own reference: a concurrent forget may drop the
                        registration's */
    pthread_mutex_unlock(&m->mu);
    if (!r)
        return; /* forgotten (cancelled, timed out) or never ours: drop */
    h->on_message(rud, id, msg, terminal);
    h->unref(rud);
    if (terminal)
        free(r);
}

static void on_stream_message(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    (void)s;
    rpc_mux_t *m = ud;
    dispatch(m, msg);
    const ProtobufCMessage *item;
    for (size_t i = 0; m->cfg.batch_item && (item = m->cfg.batch_item(msg, i)) != NULL; i++)
        dispatch(m, item);
}

static void on_stream_status(rpc_stream_t *s, void *ud, const rpc_status_t *st,
                             const rpc_md_t *trailers)
{
    (void)trailers;
    rpc_mux_t *m = ud;
    pthread_mutex_lock(&m->mu);
    LS_ASSERT(m->stream == s);
    m->stream = NULL;
    m->ending++;
    bool was_up = m->up;
    m->up = false;
    size_t n = m->regs.count;
    uint64_t *ids = ls_xcalloc(n ? n : 1, sizeof(*ids));
    reg_t **regs = ls_xcalloc(n ? n : 1, sizeof(*regs));
    n = 0;
    for (size_t i = 0; i < m->regs.cap; i++) {
        if (m->regs.keys[i]) {
            ids[n] = m->regs.keys[i];
            regs[n++] = m->regs.vals[i];
        }
    }
    rpc_idmap_free(&m->regs);
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    rpc_stream_release(s);
    if (st->code != GRPC_STATUS_OK || n > 0)
        LS_LOG_WARN("rpc",
                    "upstream stream ended kind=%s target=%s code=%d in_flight=%zu "
                    "details=\"%s\"",
                    m->cfg.name, m->target, (int)st->code, n, st->details);
    if (was_up && m->cfg.on_health)
        m->cfg.on_health(m->cfg.ud, false);
    char why[320];
    snprintf(why, sizeof(why), "stream to %s %s broke: %s", m->cfg.name, m->target,
             st->code == GRPC_STATUS_OK ? "ended" : st->details);
    for (size_t i = 0; i < n; i++) {
        reg_t *r = regs[i];
        r->h->on_broken(r->ud, ids[i], why);
        r->h->unref(r->ud);
        free(r);
    }
    free(regs);
    free(ids);
    /* Last touch of m: rpc_mux_destroy waits for this before freeing it. */
    pthread_mutex_lock(&m->mu);
    m->ending--;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

static const rpc_stream_handler_t stream_handler = {on_stream_message, on_stream_status};

static void *supervisor_main(void *arg)
{
    rpc_mux_t *m = arg;
    int64_t backoff = m->cfg.backoff_min_ms;
    bool failing_logged = false;
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        if (m->stream) {
            pthread_cond_wait(&m->cv, &m->mu);
            if (!m->stream && !m->stop) {
                /* A stream that died young waits before the next try; one that lived
                 * reconnects at once (a restart of the peer, not a crash loop). */
                bool young = ls_now_us() - m->opened_at_us < m->cfg.backoff_max_ms * 1000;
                if (young) {
                    wait_until(m, ls_now_us() + backoff * 1000);
                    backoff =
                        backoff * 2 > m->cfg.backoff_max_ms ? m->cfg.backoff_max_ms : backoff * 2;
                } else {
                    backoff = m->cfg.backoff_min_ms;
                }
            }
            continue;
        }
        pthread_mutex_unlock(&m->mu);
        bool ok = m->cfg.probe ? m->cfg.probe(m->cfg.ud, m->ch, m->cfg.probe_timeout_ms) : true;
        pthread_mutex_lock(&m->mu);
        if (m->stop)
            break;
        if (ok) {
            rpc_call_opts_t opts = {.metadata = m->cfg.metadata};
            m->stream = rpc_stream_open(m->ch, m->cfg.method, m->cfg.resp_desc, &stream_handler, m,
                                        &opts, m->cfg.max_write_queue);
            if (m->stream) {
                m->up = true;
                m->opened_at_us = ls_now_us();
                failing_logged = false;
                pthread_mutex_unlock(&m->mu);
                LS_LOG_INFO("rpc", "upstream stream open kind=%s target=%s", m->cfg.name,
                            m->target);
                if (m->cfg.on_health)
                    m->cfg.on_health(m->cfg.ud, true);
                pthread_mutex_lock(&m->mu);
                continue;
            }
        }
        if (!failing_logged) {
            LS_LOG_WARN("rpc", "upstream not reachable kind=%s target=%s retrying=true",
                        m->cfg.name, m->target);
            failing_logged = true;
        }
        wait_until(m, ls_now_us() + backoff * 1000);
        backoff = backoff * 2 > m->cfg.backoff_max_ms ? m->cfg.backoff_max_ms : backoff * 2;
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

rpc_mux_t *rpc_mux_create(rpc_client_t *client, const char *target, const rpc_mux_config_t *cfg)
{
    rpc_mux_t *m = ls_xcalloc(1, sizeof(*m));
    m->cfg = *cfg;
    if (m->cfg.backoff_min_ms <= 0)
        m->cfg.backoff_min_ms = 50;
    if (m->cfg.backoff_max_ms <= 0)
        m->cfg.backoff_max_ms = 1000;
    if (m->cfg.backoff_max_ms < m->cfg.backoff_min_ms)
        m->cfg.backoff_max_ms = m->cfg.backoff_min_ms;
    if (m->cfg.probe_timeout_ms <= 0)
        m->cfg.probe_timeout_ms = 1000;
    if (m->cfg.max_write_queue == 0)
        m->cfg.max_write_queue = 8192;
    m->target = ls_xstrdup(target);
    m->client = client;
    if (cfg->channel)
        m->channel = *cfg->channel;
    else
        rpc_channel_config_init(&m->channel);
    m->channel.reconnect_max_ms = m->cfg.backoff_max_ms;
    m->cfg.channel = &m->channel;
    m->ch = rpc_channel_create(client, target, &m->channel);
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!m->ch || pthread_create(&m->thread, NULL, supervisor_main, m) != 0) {
        rpc_channel_destroy(m->ch);
        pthread_cond_destroy(&m->cv);
        pthread_mutex_destroy(&m->mu);
        free(m->target);
        free(m);
        return NULL;
    }
    m->thread_started = true;
    pthread_setname_np(m->thread, "rpc-mux");
    return m;
}

bool rpc_mux_up(rpc_mux_t *m)
{
    pthread_mutex_lock(&m->mu);
    bool up = m->up;
    pthread_mutex_unlock(&m->mu);
    return up;
}

int rpc_mux_request(rpc_mux_t *m, uint64_t id, const ProtobufCMessage *msg,
                    const rpc_mux_handler_t *h, void *ud)
{
    pthread_mutex_lock(&m->mu);
    if (!m->up || m->stop) {
        pthread_mutex_unlock(&m->mu);
        return LS_ERR_UNAVAILABLE;
    }
    if (rpc_idmap_get(&m->regs, id)) {
        pthread_mutex_unlock(&m->mu);
        return LS_ERR_EXISTS;
    }
    reg_t *r = ls_xcalloc(1, sizeof(*r));
    r->h = h;
    r->ud = ud;
    h->ref(ud);
    rpc_idmap_put(&m->regs, id, r);
    int rc = rpc_stream_send(m->stream, msg);
    if (rc != LS_OK)
        rpc_idmap_del(&m->regs, id);
    pthread_mutex_unlock(&m->mu);
    if (rc != LS_OK) {
        h->unref(ud);
        free(r);
        return rc == LS_ERR_FULL ? LS_ERR_FULL : LS_ERR_UNAVAILABLE;
    }
    return LS_OK;
}

int rpc_mux_send(rpc_mux_t *m, const ProtobufCMessage *msg)
{
    pthread_mutex_lock(&m->mu);
    int rc = m->stream ? rpc_stream_send(m->stream, msg) : LS_ERR_UNAVAILABLE;
    pthread_mutex_unlock(&m->mu);
    if (rc == LS_ERR_CLOSED)
        rc = LS_ERR_UNAVAILABLE;
    return rc;
}

bool rpc_mux_forget(rpc_mux_t *m, uint64_t id)
{
    pthread_mutex_lock(&m->mu);
    reg_t *r = rpc_idmap_del(&m->regs, id);
    pthread_mutex_unlock(&m->mu);
    if (!r)
        return false;
    r->h->unref(r->ud);
    free(r);
    return true;
}

void rpc_mux_shutdown(rpc_mux_t *m)
{
    pthread_mutex_lock(&m->mu);
    if (m->stop) {
        pthread_mutex_unlock(&m->mu);
        return;
    }
    m->stop = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    if (m->thread_started)
        pthread_join(m->thread, NULL);
    pthread_mutex_lock(&m->mu);
    m->up = false;
    if (m->stream)
        rpc_stream_close_send(m->stream);
    pthread_mutex_unlock(&m->mu);
}

void rpc_mux_destroy(rpc_mux_t *m)
{
    if (!m)
        return;
    rpc_mux_shutdown(m);
    pthread_mutex_lock(&m->mu);
    /* Requests in flight finish after the half-close; a peer that does not end the
     * stream within the grace is cancelled (its requests then hear on_broken). */
    int64_t give_up = ls_now_us() + 3000000;
    while (m->stream && ls_now_us() < give_up)
        wait_until(m, give_up);
    if (m->stream)
        rpc_stream_cancel(m->stream);
    while (m->stream || m->ending > 0)
        pthread_cond_wait(&m->cv, &m->mu);
    pthread_mutex_unlock(&m->mu);
    rpc_channel_destroy(m->ch);
    rpc_idmap_free(&m->regs);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m->target);
    free(m);
}
