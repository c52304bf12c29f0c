/*
 * caches.c - the set of cache instances: entries, picks, reconciliation, teardown.
 *
 * Lock rules: cs->mu guards the entry array and every entry's refs and listed flag, and
 * the round-robin counter; it is held only for those, and around rpc_mux_up (which calls
 * nothing back).  cs->update_mu serializes updates; it is held across the calls that
 * block (rpc_mux_create, rpc_mux_shutdown), never while cs->mu is.  Order: update_mu,
 * then mu.
 *
 * References: the set holds one on each listed entry, each pick one more.  The entry
 * leaves the array when its count reaches 0 (it is unlisted by then) and goes to the
 * reaper, which ends its stream and frees it.
 */
#define _GNU_SOURCE
#include "caches.h"

#include "base/err.h"
#include "base/log.h"
#include "grpc/health/v1/health.pb-c.h"
#include "llmserve/v1/cache.pb-c.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct router_cache {
    char *addr;
    rpc_mux_t *mux;
    int refs;
    bool listed;
};

struct router_caches {
    pthread_mutex_t mu;
    pthread_mutex_t update_mu;
    rpc_client_t *client;
    const rpc_channel_config_t *channel;
    rpc_defer_t *reaper;
    router_cache_t **e; /* listed entries, and removed ones still held */
    size_t n, cap;
    size_t rr; /* round robin */
};

static bool route_cache(const ProtobufCMessage *msg, uint64_t *id, bool *terminal)
{
    const Llmserve__V1__CacheResponse *resp = (const Llmserve__V1__CacheResponse *)msg;
    *id = resp->id;
    *terminal = true; /* one response per request */
    return resp->id != 0;
}

/* Before each (re)open, on the mux's supervisor: the cache answers a health check with
 * SERVING.  Without it a stream counts as up from the moment it is opened, before its
 * connection is even tried, so a cache where nothing listens would flap up and down and
 * be picked meanwhile (the inference streams have Inference.Info for the same reason). */
static bool probe_health(void *ud, rpc_channel_t *ch, int64_t timeout_ms)
{
    (void)ud;
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "";
    rpc_call_opts_t opts = {.timeout_us = timeout_ms * 1000};
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    int rc = rpc_channel_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                               &grpc__health__v1__health_check_response__descriptor, &opts, &resp,
                               &st);
    bool serving = rc == LS_OK && st.code == GRPC_STATUS_OK && resp &&
                   ((Grpc__Health__V1__HealthCheckResponse *)resp)->status ==
                       GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return serving;
}

router_caches_t *router_caches_create(rpc_client_t *client, const rpc_channel_config_t *channel,
                                      rpc_defer_t *reaper)
{
    router_caches_t *cs = ls_xcalloc(1, sizeof(*cs));
    pthread_mutex_init(&cs->mu, NULL);
    pthread_mutex_init(&cs->update_mu, NULL);
    cs->client = client;
    cs->channel = channel;
    cs->reaper = reaper;
    return cs;
}

/* Ends the entry's stream (blocks until it has ended) and frees it. */
static void entry_destroy(void *ud)
{
    router_cache_t *c = ud;
    rpc_mux_destroy(c->mux);
    free(c->addr);
    free(c);
}

void router_caches_destroy(router_caches_t *cs)
{
    if (!cs)
        return;
    for (size_t i = 0; i < cs->n; i++)
        entry_destroy(cs->e[i]);
    free(cs->e);
    pthread_mutex_destroy(&cs->update_mu);
    pthread_mutex_destroy(&cs->mu);
    free(cs);
}

/* Drops one reference; when it was the last, takes c out of the array and returns true
 * (the caller hands it to the reaper, after unlocking). */
static bool do_unref(router_caches_t *cs, router_cache_t *c)
{
    LS_ASSERT(c->refs > 0);
    if (--c->refs > 0)
        return false;
    LS_ASSERT(!c->listed);
    for (size_t i = 0; i < cs->n; i++) {
        if (cs->e[i] == c) {
            cs->e[i] = cs->e[--cs->n];
            break;
        }
    }
    return true;
}

static bool listed_in(const char *addr, const char *const *addrs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(addrs[i], addr) == 0)
            return true;
    return false;
}

/* The listed entry for addr, or NULL. */
static router_cache_t *do_find(router_caches_t *cs, const char *addr)
{
    for (size_t i = 0; i < cs->n; i++)
        if (cs->e[i]->listed && strcmp(cs->e[i]->addr, addr) == 0)
            return cs->e[i];
    return NULL;
}

static void do_push(router_caches_t *cs, router_cache_t *c)
{
    if (cs->n == cs->cap) {
        cs->cap = cs->cap ? cs->cap * 2 : 4;
        router_cache_t **a = ls_xcalloc(cs->cap, sizeof(*a));
        if (cs->n)
            memcpy(a, cs->e, cs->n * sizeof(*a));
        free(cs->e);
        cs->e = a;
    }
    cs->e[cs->n++] = c;
}

static rpc_mux_t *open_stream(router_caches_t *cs, const char *addr)
{
    rpc_mux_config_t mc = {0};
    mc.name = "cache";
    mc.method = "/llmserve.v1.Cache/Session";
    mc.resp_desc = &llmserve__v1__cache_response__descriptor;
    mc.route = route_cache;
    mc.probe = probe_health;
    mc.channel = cs->channel;
    return rpc_mux_create(cs->client, addr, &mc);
}

int router_caches_update(router_caches_t *cs, const char *const *addrs, size_t n, char *err,
                         size_t err_len)
{
    int rc = LS_OK;
    pthread_mutex_lock(&cs->update_mu);
    /* Unlist what the list lacks: from now on no pick finds it. */
    pthread_mutex_lock(&cs->mu);
    router_cache_t **gone = ls_xcalloc(cs->n ? cs->n : 1, sizeof(*gone));
    size_t n_gone = 0;
    for (size_t i = 0; i < cs->n; i++) {
        router_cache_t *c = cs->e[i];
        if (c->listed && !listed_in(c->addr, addrs, n)) {
            c->listed = false;
            gone[n_gone++] = c;
        }
    }
    pthread_mutex_unlock(&cs->mu);
    /* Their streams half-close: lookups in flight still get answers.  The set's
     * reference goes; a pick may hold the entry a while longer. */
    for (size_t i = 0; i < n_gone; i++) {
        router_cache_t *c = gone[i];
        LS_LOG_INFO("router", "cache removed addr=%s", c->addr);
        rpc_mux_shutdown(c->mux);
        pthread_mutex_lock(&cs->mu);
        bool dead = do_unref(cs, c);
        pthread_mutex_unlock(&cs->mu);
        if (dead)
            rpc_defer_add(cs->reaper, entry_destroy, c);
    }
    free(gone);
    /* Only this thread adds entries (update_mu), so what is not listed now is new. */
    for (size_t i = 0; i < n; i++) {
        const char *addr = addrs[i];
        pthread_mutex_lock(&cs->mu);
        bool have = !addr[0] || do_find(cs, addr);
        pthread_mutex_unlock(&cs->mu);
        if (have)
            continue;
        rpc_mux_t *m = open_stream(cs, addr);
        if (!m) {
            LS_LOG_ERROR("router", "cannot connect to cache addr=%s", addr);
            if (rc == LS_OK)
                ls_set_err(err, err_len, "cannot connect to cache '%s'", addr);
            rc = LS_ERR_UNAVAILABLE;
            continue;
        }
        router_cache_t *c = ls_xcalloc(1, sizeof(*c));
        c->addr = ls_xstrdup(addr);
        c->mux = m;
        c->refs = 1; /* the set's */
        c->listed = true;
        pthread_mutex_lock(&cs->mu);
        do_push(cs, c);
        pthread_mutex_unlock(&cs->mu);
        LS_LOG_INFO("router", "cache added addr=%s", addr);
    }
    pthread_mutex_unlock(&cs->update_mu);
    return rc;
}

router_cache_t *router_caches_pick(router_caches_t *cs)
{
    router_cache_t *chosen = NULL;
    pthread_mutex_lock(&cs->mu);
    size_t start = cs->rr++;
    for (size_t k = 0; k < cs->n && !chosen; k++) {
        router_cache_t *c = cs->e[(start + k) % cs->n];
        if (c->listed && rpc_mux_up(c->mux))
            chosen = c;
    }
    if (chosen)
        chosen->refs++;
    pthread_mutex_unlock(&cs->mu);
    return chosen;
}

void router_caches_release(router_caches_t *cs, router_cache_t *c)
{
    pthread_mutex_lock(&cs->mu);
    bool dead = do_unref(cs, c);
    pthread_mutex_unlock(&cs->mu);
    if (dead)
        rpc_defer_add(cs->reaper, entry_destroy, c);
}

rpc_mux_t *router_cache_mux(const router_cache_t *c)
{
    return c->mux;
}

const char *router_cache_addr(const router_cache_t *c)
{
    return c->addr;
}

void router_caches_stats(router_caches_t *cs, router_caches_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&cs->mu);
    for (size_t i = 0; i < cs->n; i++) {
        router_cache_t *c = cs->e[i];
        if (c->listed) {
            out->listed++;
            out->up += rpc_mux_up(c->mux);
        } else {
            out->removed_held++;
        }
    }
    pthread_mutex_unlock(&cs->mu);
}

bool router_caches_any(router_caches_t *cs)
{
    pthread_mutex_lock(&cs->mu);
    bool any = false;
    for (size_t i = 0; i < cs->n && !any; i++)
        any = cs->e[i]->listed;
    pthread_mutex_unlock(&cs->mu);
    return any;
}
