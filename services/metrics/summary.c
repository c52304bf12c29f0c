/*
 * Lock rules: summary_t.mu guards the gauge history and the cached document.  The
 * store is read with its own lock, never while holding mu (a render computes first,
 * then stores the result under mu).
 */
#define _GNU_SOURCE
#include "summary.h"

#include "base/err.h"
#include "base/log.h"
#include "svc/metric_names.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define H STORE_HISTORY_S

struct summary {
    store_t *store;
    uint32_t window_s;
    alerts_config_t alerts;
    pthread_mutex_t mu;
    struct {
        int64_t sec; /* the second sampled, -1 for none */
        double queue_depth, in_flight;
    } gauges[H];
    char *cached;
    size_t cached_len;
    int64_t cached_at_us;
};

summary_t *summary_create(store_t *store, uint32_t window_s, const alerts_config_t *alerts)
{
    summary_t *sm = ls_xcalloc(1, sizeof(*sm));
    sm->store = store;
    sm->window_s = window_s;
    sm->alerts = *alerts;
    pthread_mutex_init(&sm->mu, NULL);
    for (size_t i = 0; i < H; i++)
        sm->gauges[i].sec = -1;
    return sm;
}

void summary_destroy(summary_t *sm)
{
    if (!sm)
        return;
    pthread_mutex_destroy(&sm->mu);
    free(sm->cached);
    free(sm);
}

/* The sum of a gauge's current values over the matching series; NAN when none. */
static double gauge_total(store_t *st, const char *name, const store_label_t *m, size_t n,
                          bool up_only, int64_t now_us)
{
    store_result_t r;
    if (store_query(st, name, m, n, 0, up_only, now_us, &r) != LS_OK || r.series == 0)
        return NAN;
    return r.sum;
}

void summary_tick(summary_t *sm, int64_t now_us)
{
    int64_t sec = store_second(sm->store, now_us) - 1;
    if (sec < 0)
        return;
    double q = gauge_total(sm->store, M_INF_WAITING, NULL, 0, true, now_us);
    double f = gauge_total(sm->store, M_IN_FLIGHT, NULL, 0, true, now_us);
    pthread_mutex_lock(&sm->mu);
    sm->gauges[sec % H].sec = sec;
    sm->gauges[sec % H].queue_depth = q;
    sm->gauges[sec % H].in_flight = f;
    pthread_mutex_unlock(&sm->mu);
}

/* ---- figures over the window --------------------------------------------------------- */

typedef struct {
    double rps, tps, error_rate, cache_hit_rate, in_flight, queue_depth;
    double consulted_rps; /* requests per second that consulted the cache */
    double q[3][3]; /* ttft, itl, e2e x p50, p95, p99 */
    uint32_t window_s;
} figures_t;

static const char *const LATENCIES[3] = {M_TTFT, M_ITL, M_E2E};
static const char *const LATENCY_KEYS[3] = {"ttft", "itl", "e2e"};

static double clamp01(double v)
{
    return v < 0 ? 0 : v > 1 ? 1 : v;
}

/* The share of requests (over the window) with label = one of values. */
static double share(summary_t *sm, store_label_t *m, size_t n, const char *label,
                    const char *const *values, size_t n_values, double all, int64_t now_us)
{
    double part = 0;
    for (size_t i = 0; i < n_values; i++) {
        store_result_t r;
        m[n] = (store_label_t){label, values[i]};
        if (store_query(sm->store, M_REQUESTS, m, n + 1, sm->window_s, false, now_us, &r) == LS_OK)
            part += r.in_window;
    }
    return clamp01(part / all);
}

/* Figures over the series of pool (NULL: all). */
static void figures(summary_t *sm, const char *pool, int64_t now_us, figures_t *f)
{
    store_t *st = sm->store;
    store_label_t m[2];
    size_t n = 0;
    if (pool)
        m[n++] = (store_label_t){"pool", pool};
    store_result_t all, r;
    bool have = store_query(st, M_REQUESTS, m, n, sm->window_s, false, now_us, &all) == LS_OK;
    f->window_s = all.window_s;
    /* API.md: no traffic in the window is null, not 0. */
    f->rps = have && all.in_window > 0 ? all.rate : NAN;
    f->error_rate = f->cache_hit_rate = f->consulted_rps = NAN;
    if (have && all.in_window > 0) {
        static const char *const OK[] = {"OK"};
        static const char *const HITS[] = {"exact", "semantic"};
        f->error_rate = 1 - share(sm, m, n, "code", OK, 1, all.in_window, now_us);
        /* as deploy/prometheus/alerts.yml: among the requests that consulted the cache
         * (cache != bypass), the share that hit */
        static const char *const BYPASS[] = {"bypass"};
        double consulted = all.in_window * (1 - share(sm, m, n, "cache", BYPASS, 1,
                                                      all.in_window, now_us));
        f->consulted_rps = all.window_s > 0 ? consulted / all.window_s : NAN;
        if (consulted > 0.5)
            f->cache_hit_rate = share(sm, m, n, "cache", HITS, 2, consulted, now_us);
    }
    bool tokens = store_query(st, M_TOKENS, m, n, sm->window_s, false, now_us, &r) == LS_OK;
    f->tps = tokens && r.in_window > 0 ? r.rate : NAN;
    f->in_flight = gauge_total(st, M_IN_FLIGHT, m, n, true, now_us);
    f->queue_depth = gauge_total(st, M_INF_WAITING, m, n, true, now_us);
    for (int i = 0; i < 3; i++) {
        store_query(st, LATENCIES[i], m, n, sm->window_s, false, now_us, &r);
        f->q[i][0] = r.p50;
        f->q[i][1] = r.p95;
        f->q[i][2] = r.p99;
    }
}

/* ---- JSON ------------------------------------------------------------------------------ */

static void add_num(cJSON *o, const char *key, double v)
{
    if (isfinite(v))
        cJSON_AddNumberToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

static void add_str(cJSON *o, const char *key, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

static void add_figures(cJSON *o, const figures_t *f)
{
    add_num(o, "requests_per_second", f->rps);
    add_num(o, "tokens_per_second", f->tps);
    add_num(o, "error_rate", f->error_rate);
    add_num(o, "cache_hit_rate", f->cache_hit_rate);
    add_num(o, "in_flight", f->in_flight);
    add_num(o, "queue_depth", f->queue_depth);
    for (int i = 0; i < 3; i++) {
        cJSON *q = cJSON_AddObjectToObject(o, LATENCY_KEYS[i]);
        add_num(q, "p50", f->q[i][0]);
        add_num(q, "p95", f->q[i][1]);
        add_num(q, "p99", f->q[i][2]);
    }
}

/* The pools named by the router's and the inference instances' series. */
static size_t pools(summary_t *sm, char ***out)
{
    static const char *const NAMES[] = {M_REQUESTS,    M_TOKENS,      M_TTFT,
                                        M_ITL,         M_E2E,         M_IN_FLIGHT,
                                        M_INF_WAITING, M_INF_RUNNING, M_INF_QUEUE_LIMIT};
    return store_label_values(sm->store, NAMES, sizeof(NAMES) / sizeof(NAMES[0]), "pool", out);
}

static const char *const INF_GAUGES[] = {M_INF_RUNNING, M_INF_WAITING, M_INF_QUEUE_LIMIT,
                                         M_INF_KV_USED, M_INF_KV_CAPACITY};
static const char *const INF_KEYS[] = {"running", "waiting", "queue_limit", "kv_used", "kv_total"};
#define N_INF_GAUGES (sizeof(INF_GAUGES) / sizeof(INF_GAUGES[0]))

/* The value of label in any of the instance's inference gauges. */
static bool inst_label(summary_t *sm, const store_label_t *m, const char *label, char *buf,
                       size_t len, int64_t now_us)
{
    for (size_t i = 0; i < N_INF_GAUGES; i++)
        if (store_label_of(sm->store, INF_GAUGES[i], m, 2, false, now_us, label, buf, len))
            return true;
    return false;
}

static void add_instance(summary_t *sm, cJSON *arr, const store_inst_info_t *in, int64_t now_us)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToArray(arr, o);
    cJSON_AddStringToObject(o, "service", in->service);
    cJSON_AddStringToObject(o, "instance", in->instance);
    cJSON_AddBoolToObject(o, "up", in->up);
    add_num(o, "last_report_seconds_ago", in->last_report_ago_s);
    store_label_t m[2] = {{"service", in->service}, {"instance", in->instance}};
    char pool[VALIDATE_MAX_VALUE + 1], model[VALIDATE_MAX_VALUE + 1];
    bool inference = inst_label(sm, m, "pool", pool, sizeof(pool), now_us);
    add_str(o, "pool", inference ? pool : NULL);
    add_str(o, "model", inst_label(sm, m, "model", model, sizeof(model), now_us) ? model : NULL);
    if (inference || strcmp(in->service, "inference") == 0)
        for (size_t i = 0; i < N_INF_GAUGES; i++)
            add_num(o, INF_KEYS[i], gauge_total(sm->store, INF_GAUGES[i], m, 2, false, now_us));
    double in_flight = gauge_total(sm->store, M_IN_FLIGHT, m, 2, false, now_us);
    if (isfinite(in_flight) || strcmp(in->service, "router") == 0)
        add_num(o, "in_flight", in_flight);
}

static void add_history(summary_t *sm, cJSON *o, int64_t now_us, int64_t wall_us)
{
    int64_t sec = store_second(sm->store, now_us);
    size_t n = (size_t)(sec < H ? sec : H);
    store_point_t *p = calloc(n ? n : 1, sizeof(*p) * 9);
    if (!p)
        return;
    store_point_t *lat[3] = {p, p + n, p + 2 * n}, *req = p + 3 * n, *ok = p + 4 * n,
                  *exact = p + 5 * n, *sem = p + 6 * n, *tok = p + 7 * n;
    for (int i = 0; i < 3; i++)
        store_history(sm->store, LATENCIES[i], NULL, 0, n, now_us, lat[i]);
    store_label_t m = {"code", "OK"};
    store_history(sm->store, M_REQUESTS, NULL, 0, n, now_us, req);
    store_history(sm->store, M_REQUESTS, &m, 1, n, now_us, ok);
    m = (store_label_t){"cache", "exact"};
    store_history(sm->store, M_REQUESTS, &m, 1, n, now_us, exact);
    m = (store_label_t){"cache", "semantic"};
    store_history(sm->store, M_REQUESTS, &m, 1, n, now_us, sem);
    store_history(sm->store, M_TOKENS, NULL, 0, n, now_us, tok);

    static const char *const KEYS[16] = {"t",
                                         "ttft_p50",
                                         "ttft_p95",
                                         "ttft_p99",
                                         "itl_p50",
                                         "itl_p95",
                                         "itl_p99",
                                         "e2e_p50",
                                         "e2e_p95",
                                         "e2e_p99",
                                         "requests_per_second",
                                         "tokens_per_second",
                                         "cache_hit_rate",
                                         "error_rate",
                                         "queue_depth",
                                         "in_flight"};
    cJSON *a[16];
    for (int i = 0; i < 16; i++)
        a[i] = cJSON_AddArrayToObject(o, KEYS[i]);
    int64_t wall_s = wall_us / 1000000;
    pthread_mutex_lock(&sm->mu);
    for (size_t i = 0; i < n; i++) {
        int64_t t = sec - (int64_t)n + (int64_t)i;
        double v[16];
        v[0] = (double)(wall_s - (sec - t));
        for (int k = 0; k < 3; k++) {
            v[1 + 3 * k] = lat[k][i].p50;
            v[2 + 3 * k] = lat[k][i].p95;
            v[3 + 3 * k] = lat[k][i].p99;
        }
        double all = req[i].value;
        v[10] = all > 0 ? all : NAN;
        v[11] = tok[i].value > 0 ? tok[i].value : NAN;
        v[12] = all > 0 ? clamp01((exact[i].value + sem[i].value) / all) : NAN;
        v[13] = all > 0 ? clamp01(1 - ok[i].value / all) : NAN;
        bool g = sm->gauges[t % H].sec == t;
        v[14] = g ? sm->gauges[t % H].queue_depth : NAN;
        v[15] = g ? sm->gauges[t % H].in_flight : NAN;
        for (int k = 0; k < 16; k++)
            cJSON_AddItemToArray(a[k],
                                 isfinite(v[k]) ? cJSON_CreateNumber(v[k]) : cJSON_CreateNull());
    }
    pthread_mutex_unlock(&sm->mu);
    free(p);
}

static char *render(summary_t *sm, int64_t now_us, int64_t wall_us)
{
    store_t *st = sm->store;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "now", (double)wall_us / 1e6);
    figures_t all;
    figures(sm, NULL, now_us, &all);
    cJSON_AddNumberToObject(root, "window_seconds", all.window_s);
    add_figures(cJSON_AddObjectToObject(root, "overall"), &all);

    alerts_input_t ain = {.ttft_p95_s = all.q[0][1],
                          .e2e_p95_s = all.q[2][1],
                          .error_rate = all.error_rate,
                          .cache_hit_rate = all.cache_hit_rate,
                          .requests_per_second = all.consulted_rps,
                          .instances_down = 0,
                          .queue_saturation = NAN,
                          .queue_pool = NULL};
    char **pl = NULL;
    size_t n_pools = pools(sm, &pl);
    cJSON *pa = cJSON_AddArrayToObject(root, "pools");
    for (size_t i = 0; i < n_pools; i++) {
        if (!*pl[i])
            continue;
        figures_t f;
        figures(sm, pl[i], now_us, &f);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(pa, o);
        cJSON_AddStringToObject(o, "pool", pl[i]);
        add_figures(o, &f);
        store_label_t m = {"pool", pl[i]};
        double waiting = gauge_total(st, M_INF_WAITING, &m, 1, true, now_us);
        double limit = gauge_total(st, M_INF_QUEUE_LIMIT, &m, 1, true, now_us);
        double sat = limit > 0 && isfinite(waiting) ? waiting / limit : NAN;
        if (isfinite(sat) && !(sat <= ain.queue_saturation)) {
            ain.queue_saturation = sat;
            ain.queue_pool = pl[i];
        }
    }

    store_inst_info_t *insts = NULL;
    size_t n_insts = store_instances(st, now_us, &insts);
    cJSON *ia = cJSON_AddArrayToObject(root, "instances");
    for (size_t i = 0; i < n_insts; i++) {
        add_instance(sm, ia, &insts[i], now_us);
        ain.instances_down += !insts[i].up;
    }
    store_instances_free(insts, n_insts);

    alert_t alerts[ALERTS_N];
    alerts_eval(&sm->alerts, &ain, alerts);
    cJSON *aa = cJSON_AddArrayToObject(root, "alerts");
    for (size_t i = 0; i < ALERTS_N; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(aa, o);
        cJSON_AddStringToObject(o, "name", alerts[i].name);
        cJSON_AddStringToObject(o, "severity", alerts[i].severity);
        cJSON_AddStringToObject(o, "summary", alerts[i].summary);
        add_num(o, "value", alerts[i].value);
        add_num(o, "threshold", alerts[i].threshold);
        cJSON_AddBoolToObject(o, "crossed", alerts[i].crossed);
    }
    store_strings_free(pl, n_pools);

    add_history(sm, cJSON_AddObjectToObject(root, "history"), now_us, wall_us);

    store_stats_t ss;
    store_stats(st, now_us, &ss);
    cJSON *c = cJSON_AddObjectToObject(root, "collector");
    cJSON_AddNumberToObject(c, "uptime_seconds", floor(ss.uptime_s));
    cJSON_AddNumberToObject(c, "reports_total", (double)ss.reports);
    cJSON_AddNumberToObject(c, "samples_total", (double)ss.samples);
    cJSON_AddNumberToObject(c, "rejected_total", (double)ss.rejected_total);
    cJSON_AddNumberToObject(c, "series", (double)ss.series);
    cJSON_AddNumberToObject(c, "series_limit", (double)ss.series_limit);

    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

char *summary_render(summary_t *sm, int64_t now_us, int64_t wall_us, size_t *len)
{
    pthread_mutex_lock(&sm->mu);
    if (sm->cached && now_us - sm->cached_at_us < SUMMARY_CACHE_US) {
        char *copy = malloc(sm->cached_len + 1);
        if (copy) {
            memcpy(copy, sm->cached, sm->cached_len + 1);
            *len = sm->cached_len;
        }
        pthread_mutex_unlock(&sm->mu);
        return copy;
    }
    pthread_mutex_unlock(&sm->mu);

    char *doc = render(sm, now_us, wall_us);
    if (!doc)
        return NULL;
    size_t n = strlen(doc);
    char *keep = malloc(n + 1);
    if (keep) {
        memcpy(keep, doc, n + 1);
        pthread_mutex_lock(&sm->mu);
        free(sm->cached);
        sm->cached = keep;
        sm->cached_len = n;
        sm->cached_at_us = now_us;
        pthread_mutex_unlock(&sm->mu);
    }
    *len = n;
    return doc;
}
