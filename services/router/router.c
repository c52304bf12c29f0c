/*
 * router.c - the router object: policy, pools, connections to instances and caches.
 *
 * Lock rules: r->conns_mu guards the list of connections; conn->mu guards what
 * Inference.Info said and the removed flag; r->live_mu guards the live request count;
 * the cache set (caches.c) has its own.
 * None is held while calling into another module, except conn->mu around
 * router_instance_set_healthy and router_instance_set_capacity (the pools' lock is taken
 * after it, never before; the grants they may make are handed to the admitter thread,
 * not run there) and rpc_mux_create (which calls nothing back before it returns).
 *
 * Instance churn: a connection is made when discovery adds an instance and destroyed when
 * the instance is freed, after its removal and the release of the last pick or reference
 * a request held on it.  That last release can happen on any thread (often a client
 * callback thread of the connection's own stream), and destroying a mux blocks until its
 * stream ends, so on_free only unlists the connection and hands it to the reaper thread.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "router_int.h"
#include "upstream_id.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void router_config_init(router_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->default_pool = "small";
    cfg->tiers = "large=0.3";
    cfg->pool_fallback = "";
    cfg->pool_ttft_ms = "";
    cfg->ttft_budget_ms = 10000; /* ms */
    cfg->cache = "";             /* no cache */
    cfg->cache_timeout_ms = 500; /* ms */
    cfg->cache_ttl_s = 0;        /* the cache's default */
    cfg->cache_semantic = false;
    cfg->cache_replay_events = 1;     /* the whole answer in one event: the fastest */
    cfg->request_timeout_ms = 120000; /* ms */
    cfg->default_max_tokens = 256;    /* tokens */
    cfg->max_retries = 2;
    cfg->queue_max = 512;             /* requests waiting for room, per pool */
    cfg->queue_wait_ms = 30000;       /* ms */
    cfg->max_in_flight = 1024;        /* requests per client stream */
    cfg->max_prompt_bytes = 1 << 20;  /* 1 MiB */
    cfg->max_affinity = 100000;       /* conversations */
    cfg->priority_aging_ms = 1000;    /* ms */
    cfg->prefix_affinity_bytes = 256; /* bytes */
    cfg->prefix_affinity_slack = 4;   /* requests */
    cfg->client_threads = 2;
    cfg->seed = 0;
    router_scorer_config_init(&cfg->scorer);
    cfg->reporter = NULL; /* no metrics */
}

uint64_t router__next_id(router_t *r)
{
    return atomic_fetch_add(&r->next_id, 1) + 1;
}

/* ---- inference connections -------------------------------------------------------- */

static bool route_inference(const ProtobufCMessage *msg, uint64_t *id, bool *terminal)
{
    const Llmserve__V1__InferenceEvent *ev = (const Llmserve__V1__InferenceEvent *)msg;
    if (!router_upstream_id_parse(ev->request_id, id))
        return false;
    *terminal = ev->kind_case == LLMSERVE__V1__INFERENCE_EVENT__KIND_DONE ||
                ev->kind_case == LLMSERVE__V1__INFERENCE_EVENT__KIND_ERROR;
    return true;
}

/* The events an instance packed behind ev (inference.proto: InferenceEvent.batch). */
static const ProtobufCMessage *inference_batch_item(const ProtobufCMessage *msg, size_t i)
{
    const Llmserve__V1__InferenceEvent *ev = (const Llmserve__V1__InferenceEvent *)msg;
    return i < ev->n_batch ? &ev->batch[i]->base : NULL;
}

/* Inference.Info before each (re)open: the instance answers, and says its model. */
static bool probe_info(void *ud, rpc_channel_t *ch, int64_t timeout_ms)
{
    router__conn_t *c = ud;
    Llmserve__V1__InfoRequest req = LLMSERVE__V1__INFO_REQUEST__INIT;
    rpc_call_opts_t opts = {.timeout_us = timeout_ms * 1000};
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    int rc = rpc_channel_unary(ch, "/llmserve.v1.Inference/Info", &req.base,
                               &llmserve__v1__info_response__descriptor, &opts, &resp, &st);
    if (rc != LS_OK || st.code != GRPC_STATUS_OK) {
        if (resp)
            protobuf_c_message_free_unpacked(resp, NULL);
        return false;
    }
    const Llmserve__V1__InfoResponse *info = (const Llmserve__V1__InfoResponse *)resp;
    /* What the instance holds at once: its batch plus its admission queue; a submit
     * beyond that is refused with RESOURCE_EXHAUSTED, so the router queues instead. */
    int64_t capacity = (int64_t)info->max_batch + (int64_t)info->max_queue;
    pthread_mutex_lock(&c->mu);
    snprintf(c->model, sizeof(c->model), "%s", info->model);
    snprintf(c->version, sizeof(c->version), "%s", info->model_version);
    c->max_batch = info->max_batch;
    c->max_queue = info->max_queue;
    if (!c->removed)
        router_instance_set_capacity(c->r->pools, c->inst, capacity);
    pthread_mutex_unlock(&c->mu);
    if (info->pool[0] && strcmp(info->pool, router_instance_pool(c->inst)) != 0)
        LS_LOG_WARN("router", "instance reports another pool addr=%s configured=%s reported=%s",
                    router_instance_addr(c->inst), router_instance_pool(c->inst), info->pool);
    protobuf_c_message_free_unpacked(resp, NULL);
    return true;
}

static void conn_health(void *ud, bool up)
{
    router__conn_t *c = ud;
    /* A stream can end (on a client thread) after its instance was removed and freed;
     * removed is set, under this lock, before the instance can go. */
    pthread_mutex_lock(&c->mu);
    if (!c->removed)
        router_instance_set_healthy(c->r->pools, c->inst, up);
    pthread_mutex_unlock(&c->mu);
}

static void on_instance_add(void *ud, router_instance_t *inst)
{
    router_t *r = ud;
    router__conn_t *c = ls_xcalloc(1, sizeof(*c));
    c->r = r;
    c->inst = inst;
    pthread_mutex_init(&c->mu, NULL);
    rpc_mux_config_t mc = {0};
    mc.name = "inference";
    mc.method = "/llmserve.v1.Inference/Generate";
    mc.resp_desc = &llmserve__v1__inference_event__descriptor;
    mc.route = route_inference;
    mc.batch_item = inference_batch_item;
    mc.metadata = &r->event_batch_md;
    mc.probe = probe_info;
    mc.on_health = conn_health;
    mc.ud = c;
    mc.channel = r->cfg.upstream;
    /* The supervisor may find the instance up, and conn_health make it pickable, before
     * rpc_mux_create returns: c->mu, which conn_health takes, is held until a pick can
     * find the connection and its mux. */
    pthread_mutex_lock(&c->mu);
    router_instance_set_user(inst, c);
    c->mux = rpc_mux_create(r->client, router_instance_addr(inst), &mc);
    pthread_mutex_unlock(&c->mu);
    if (!c->mux)
        LS_LOG_ERROR("router", "cannot connect to instance addr=%s", router_instance_addr(inst));
    pthread_mutex_lock(&r->conns_mu);
    if (r->n_conns == r->cap_conns) {
        r->cap_conns = r->cap_conns ? r->cap_conns * 2 : 8;
        router__conn_t **a = ls_xcalloc(r->cap_conns, sizeof(*a));
        if (r->n_conns)
            memcpy(a, r->conns, r->n_conns * sizeof(*a));
        free(r->conns);
        r->conns = a;
    }
    r->conns[r->n_conns++] = c;
    pthread_mutex_unlock(&r->conns_mu);
}

/* A removed instance takes no new requests; the ones in flight finish on its stream.
 * Runs on the discovery thread while the pools still hold inst; once it returns no mux
 * callback touches inst (the supervisor is joined, conn_health sees removed). */
static void on_instance_remove(void *ud, router_instance_t *inst)
{
    (void)ud;
    router__conn_t *c = router_instance_user(inst);
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->removed = true;
    pthread_mutex_unlock(&c->mu);
    if (c->mux)
        rpc_mux_shutdown(c->mux);
}

/* On the reaper: waits for the stream to end (its requests are over: none holds the
 * instance any more), then frees. */
static void conn_destroy(void *ud)
{
    router__conn_t *c = ud;
    rpc_mux_destroy(c->mux);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* The instance's last reference went (any thread, must not block): the connection leaves
 * the list and goes to the reaper. */
static void on_instance_free(void *ud, void *user)
{
    router_t *r = ud;
    router__conn_t *c = user;
    pthread_mutex_lock(&r->conns_mu);
    for (size_t i = 0; i < r->n_conns; i++) {
        if (r->conns[i] == c) {
            r->conns[i] = r->conns[--r->n_conns];
            break;
        }
    }
    pthread_mutex_unlock(&r->conns_mu);
    rpc_defer_add(r->reaper, conn_destroy, c);
}

/* A waiter was granted room (or handed back): on the admitter thread, since the grant
 * comes from whichever thread made the room, often one holding a request's lock. */
typedef struct {
    router_waiter_t *w;
    router_instance_t *inst;
} grant_job_t;

static void grant_job(void *ud)
{
    grant_job_t *j = ud;
    router__req_granted(j->w, j->inst);
    free(j);
}

static void on_grant(void *ud, router_waiter_t *w, router_instance_t *inst)
{
    router_t *r = ud;
    grant_job_t *j = ls_xcalloc(1, sizeof(*j));
    j->w = w;
    j->inst = inst;
    rpc_defer_add(r->admitter, grant_job, j);
}

static void on_discovery_update(void *ud, const discovery_instance_t *list, size_t n)
{
    router_t *r = ud;
    router_pools_update(r->pools, list, n);
}

static void on_discovery_caches(void *ud, const char *const *addrs, size_t n)
{
    router__caches_update(ud, addrs, n);
}

/* ---- cache connections ------------------------------------------------------------ */

int router__caches_update(router_t *r, const char *const *addrs, size_t n)
{
    char err[300];
    int rc = router_caches_update(r->caches, addrs, n, err, sizeof(err));
    if (rc != LS_OK)
        LS_LOG_WARN("router", "cache list applied in part: %s", err);
    return rc;
}

/* The static list of --cache, checked and applied once. */
static int connect_caches(router_t *r, char *err, size_t err_len)
{
    if (!r->cfg.cache || !r->cfg.cache[0])
        return LS_OK;
    char *copy = ls_xstrdup(r->cfg.cache);
    size_t cap = 1;
    for (const char *p = copy; *p; p++)
        cap += *p == ',';
    const char **addrs = ls_xcalloc(cap, sizeof(*addrs));
    size_t n = 0;
    int rc = LS_OK;
    char *save = NULL;
    for (char *a = strtok_r(copy, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        while (*a == ' ')
            a++;
        if (!*a)
            continue;
        if (!strchr(a, ':')) {
            ls_set_err(err, err_len, "--cache: '%s' is not HOST:PORT", a);
            rc = LS_ERR_INVALID;
            break;
        }
        addrs[n++] = a;
    }
    char why[300];
    if (rc == LS_OK && router_caches_update(r->caches, addrs, n, why, sizeof(why)) != LS_OK) {
        ls_set_err(err, err_len, "--cache: %s", why);
        rc = LS_ERR_INVALID;
    }
    free(addrs);
    free(copy);
    return rc;
}

/* ---- life ------------------------------------------------------------------------- */

typedef struct {
    router_t *r;
    char *err;
    size_t err_len;
} check_ctx_t;

static int declare_pool(void *ud, const char *pool)
{
    router_pools_declare(ud, pool);
    return LS_OK;
}

static int check_pool(void *ud, const char *pool)
{
    check_ctx_t *c = ud;
    if (router_pools_has(c->r->pools, pool))
        return LS_OK;
    char names[256];
    router_pools_names(c->r->pools, names, sizeof(names));
    ls_set_err(c->err, c->err_len,
               "the routing policy names pool '%s', which has no instance "
               "(pools: %s)",
               pool, names);
    return LS_ERR_INVALID;
}

router_t *router_create(const router_config_t *cfg, discovery_t *disc, char *err, size_t err_len)
{
    router_t *r = ls_xcalloc(1, sizeof(*r));
    r->cfg = *cfg;
    /* One message per inference step and stream rather than one per event. */
    rpc_md_add(&r->event_batch_md, "llmserve-event-batch", "1");
    pthread_mutex_init(&r->conns_mu, NULL);
    pthread_mutex_init(&r->live_mu, NULL);
    pthread_cond_init(&r->live_cv, NULL);
    pthread_mutex_init(&r->sinks_mu, NULL);
    atomic_init(&r->draining, false);
    atomic_init(&r->next_id, 0);
    r->report = router_report_create(cfg->reporter);
    r->disc = disc;
    if (router_policy_parse(&r->policy, cfg->default_pool, cfg->tiers, cfg->pool_fallback,
                            cfg->pool_ttft_ms, cfg->ttft_budget_ms, err, err_len) != LS_OK)
        goto fail;
    r->timer = rpc_timer_create();
    r->client = rpc_client_create((int)(cfg->client_threads > 0 ? cfg->client_threads : 1));
    r->reaper = rpc_defer_create();
    r->admitter = rpc_defer_create();
    if (!r->timer || !r->client || !r->reaper || !r->admitter) {
        ls_set_err(err, err_len, "cannot start the router's threads");
        goto fail;
    }
    uint64_t seed = cfg->seed ? (uint64_t)cfg->seed : (uint64_t)ls_wall_us();
    router_pools_hooks_t hooks = {on_instance_add, on_instance_remove, on_instance_free, r,
                                  on_grant};
    r->pools = router_pools_create(seed, (size_t)cfg->max_affinity, &hooks);
    router_pools_set_aging(r->pools, cfg->priority_aging_ms * 1000);
    router_pools_set_prefix_slack(r->pools, cfg->prefix_affinity_slack);
    r->caches = router_caches_create(r->client, cfg->upstream, r->reaper);
    /* A source whose lists change may have none of a pool yet: the pool exists anyway,
     * and answers UNAVAILABLE until an instance comes. */
    if (disc->ops->dynamic)
        router_policy_each_pool(&r->policy, declare_pool, r->pools);
    bool static_caches = cfg->cache && cfg->cache[0];
    if (!static_caches && disc->ops->watch_caches &&
        discovery_watch_caches(disc, on_discovery_caches, r) != LS_OK) {
        ls_set_err(err, err_len, "discovery (%s) cannot watch the cache instances",
                   disc->ops->name);
        goto fail;
    }
    if (discovery_start(disc, on_discovery_update, r) != LS_OK) {
        ls_set_err(err, err_len, "discovery (%s) did not start", disc->ops->name);
        goto fail;
    }
    check_ctx_t cc = {r, err, err_len};
    if (!disc->ops->dynamic && router_policy_each_pool(&r->policy, check_pool, &cc) != LS_OK)
        goto fail;
    if (connect_caches(r, err, err_len) != LS_OK)
        goto fail;
    return r;
fail:
    router_destroy(r);
    return NULL;
}

int router__register_service(router_t *r, rpc_server_t *srv);

int router_register(router_t *r, rpc_server_t *srv)
{
    return router__register_service(r, srv);
}

typedef struct {
    router_t *r;
} ready_ctx_t;

static int pool_ready(void *ud, const char *pool)
{
    ready_ctx_t *c = ud;
    return router_pools_healthy_count(c->r->pools, pool) > 0 ? LS_OK : LS_ERR_UNAVAILABLE;
}

bool router_wait_ready(router_t *r, int64_t timeout_ms)
{
    int64_t until = ls_now_us() + timeout_ms * 1000;
    ready_ctx_t c = {r};
    /* Every instance connected is the aim (requests spread over all of them from the
     * start); at the timeout, one per pool is enough.  Every pool the policy names must
     * have one either way: a dynamic source may not have listed any yet (no instance at
     * all is not "all healthy"). */
    for (;;) {
        router_caches_stats_t cst;
        router_caches_stats(r->caches, &cst);
        bool caches_up = cst.up == cst.listed;
        if (caches_up && router_pools_all_healthy(r->pools) &&
            router_policy_each_pool(&r->policy, pool_ready, &c) == LS_OK)
            return true;
        if (ls_now_us() >= until)
            return caches_up && router_policy_each_pool(&r->policy, pool_ready, &c) == LS_OK;
        ls_sleep_us(20000);
    }
}

void router__sink_add(router_t *r, relay_sink_t *s)
{
    pthread_mutex_lock(&r->sinks_mu);
    s->prev = NULL;
    s->next = r->sinks;
    if (r->sinks)
        r->sinks->prev = s;
    r->sinks = s;
    pthread_mutex_unlock(&r->sinks_mu);
}

void router__sink_remove(router_t *r, relay_sink_t *s)
{
    pthread_mutex_lock(&r->sinks_mu);
    if (s->prev)
        s->prev->next = s->next;
    else if (r->sinks == s)
        r->sinks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    pthread_mutex_unlock(&r->sinks_mu);
}

bool router__draining(router_t *r)
{
    return atomic_load(&r->draining);
}

void router_drain(router_t *r, int64_t deadline_us)
{
    atomic_store(&r->draining, true);
    pthread_mutex_lock(&r->live_mu);
    int64_t left = r->live;
    while (r->live > 0 && ls_now_us() < deadline_us) {
        pthread_mutex_unlock(&r->live_mu);
        ls_sleep_us(5000);
        pthread_mutex_lock(&r->live_mu);
    }
    int64_t cut = r->live;
    pthread_mutex_unlock(&r->live_mu);
    LS_LOG_INFO("router", "drained requests_at_start=%lld cut_at_deadline=%lld", (long long)left,
                (long long)cut);
    /* The calls still open: referenced under the lock, closed outside it (closing calls
     * back into requests and the server). */
    pthread_mutex_lock(&r->sinks_mu);
    size_t n = 0;
    for (relay_sink_t *s = r->sinks; s; s = s->next)
        n++;
    relay_sink_t **open = ls_xcalloc(n ? n : 1, sizeof(*open));
    n = 0;
    for (relay_sink_t *s = r->sinks; s; s = s->next) {
        s->ops->ref(s);
        open[n++] = s;
    }
    pthread_mutex_unlock(&r->sinks_mu);
    for (size_t i = 0; i < n; i++) {
        open[i]->ops->close(open[i], "the router is shutting down; retry elsewhere");
        open[i]->ops->unref(open[i]);
    }
    free(open);
}

void router_destroy(router_t *r)
{
    if (!r)
        return;
    /* Requests still finishing (a timer or upstream callback holding the last reference)
     * go within moments once the server has ended every call. */
    pthread_mutex_lock(&r->live_mu);
    int64_t give_up = ls_now_us() + 5000000;
    while (r->live > 0 && ls_now_us() < give_up) {
        pthread_mutex_unlock(&r->live_mu);
        ls_sleep_us(5000);
        pthread_mutex_lock(&r->live_mu);
    }
    if (r->live > 0)
        LS_LOG_WARN("router", "requests still alive at shutdown count=%lld", (long long)r->live);
    pthread_mutex_unlock(&r->live_mu);
    discovery_destroy(r->disc);
    /* Half-closes every instance's stream; the instances no request holds are freed, and
     * their connections handed to the reaper. */
    if (r->pools)
        router_pools_clear(r->pools);
    /* Grants still queued end their requests (clearing hands every waiter back: no pool
     * has an instance now). */
    rpc_defer_destroy(r->admitter);
    /* Ends every cache stream (the removed ones the reaper holds: below). */
    router_caches_destroy(r->caches);
    rpc_defer_destroy(r->reaper); /* destroys every connection handed to it */
    /* Left: connections of instances still held by requests that outlived the wait above
     * (warned about there). */
    for (size_t i = 0; i < r->n_conns; i++)
        conn_destroy(r->conns[i]);
    free(r->conns);
    router_pools_destroy(r->pools);
    rpc_timer_destroy(r->timer);
    rpc_client_destroy(r->client);
    rpc_md_clear(&r->event_batch_md);
    router_report_destroy(r->report);
    pthread_cond_destroy(&r->live_cv);
    pthread_mutex_destroy(&r->live_mu);
    pthread_mutex_destroy(&r->sinks_mu);
    pthread_mutex_destroy(&r->conns_mu);
    free(r);
}
