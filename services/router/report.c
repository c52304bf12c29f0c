/*
 * report.c - the router's metrics.
 *
 * The pool table: a slot goes free -> being named -> named, once, by compare-and-swap.
 * Every lookup scans from the first slot and waits out a slot being named before it
 * compares, so two threads naming the same new pool cannot both claim a slot: the
 * second reaches the first's slot and finds the name there.  Slots are never freed
 * (pools come from the configuration: few, and a gauge that went away would freeze at
 * its last value in the collector).  A mutex would do as well but would be one more
 * lock taken by every request.
 */
#define _GNU_SOURCE
#include "report.h"

#include "base/log.h"
#include "llmserve/v1/common.pb-c.h"
#include "policy.h"
#include "svc/finish_reason.h"
#include "svc/gauge.h"
#include "svc/keys.h"
#include "rpc/status.h"
#include "svc/metric_names.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SLOT_FREE, SLOT_NAMING, SLOT_NAMED };

struct router_report_pool {
    atomic_int state;
    char name[ROUTER_POOL_NAME_MAX + 1];
    svc_label_t label; /* {"pool", name} */
    svc_gauge_t in_flight;
    svc_gauge_t queued; /* in the router's queue */
};

struct router_report {
    svc_reporter_t *r;
    router_report_pool_t pools[ROUTER_REPORT_POOLS];
    router_report_pool_t other; /* every pool past the table */
};

router_report_t *router_report_create(svc_reporter_t *r)
{
    if (!r)
        return NULL;
    router_report_t *rep = ls_xcalloc(1, sizeof(*rep));
    rep->r = r;
    for (int i = 0; i < ROUTER_REPORT_POOLS; i++) {
        atomic_init(&rep->pools[i].state, SLOT_FREE);
        rep->pools[i].label = (svc_label_t){"pool", rep->pools[i].name};
        svc_gauge_init(&rep->pools[i].in_flight, false);
        svc_gauge_init(&rep->pools[i].queued, false);
    }
    atomic_init(&rep->other.state, SLOT_NAMED);
    snprintf(rep->other.name, sizeof(rep->other.name), "other");
    rep->other.label = (svc_label_t){"pool", rep->other.name};
    svc_gauge_init(&rep->other.in_flight, false);
    svc_gauge_init(&rep->other.queued, false);
    return rep;
}

void router_report_destroy(router_report_t *rep)
{
    free(rep);
}

/* ---- in flight ------------------------------------------------------------------------ */

static router_report_pool_t *pool_slot(router_report_t *rep, const char *pool)
{
    for (int i = 0; i < ROUTER_REPORT_POOLS; i++) {
        router_report_pool_t *p = &rep->pools[i];
        int st = atomic_load(&p->state);
        if (st == SLOT_FREE) {
            int expect = SLOT_FREE;
            if (atomic_compare_exchange_strong(&p->state, &expect, SLOT_NAMING)) {
                snprintf(p->name, sizeof(p->name), "%s", pool);
                atomic_store(&p->state, SLOT_NAMED);
                return p;
            }
            st = expect;
        }
        while (st == SLOT_NAMING) { /* a few instructions away, unless its thread was preempted */
            sched_yield();
            st = atomic_load(&p->state);
        }
        if (strncmp(p->name, pool, sizeof(p->name) - 1) == 0)
            return p;
    }
    return &rep->other;
}

router_report_pool_t *router_report_enter(router_report_t *rep, const char *pool)
{
    if (!rep)
        return NULL;
    router_report_pool_t *p = pool_slot(rep, pool);
    svc_gauge_add(&p->in_flight, rep->r, M_IN_FLIGHT, &p->label, 1, 1);
    return p;
}

void router_report_leave(router_report_t *rep, router_report_pool_t *p)
{
    if (rep && p)
        svc_gauge_add(&p->in_flight, rep->r, M_IN_FLIGHT, &p->label, 1, -1);
}

void router_report_queued(router_report_t *rep, const char *pool, int delta)
{
    if (!rep)
        return;
    router_report_pool_t *p = pool_slot(rep, pool);
    svc_gauge_add(&p->queued, rep->r, M_ROUTER_QUEUE_DEPTH, &p->label, 1, delta);
}

/* ---- per request ---------------------------------------------------------------------- */

static double seconds(int64_t us)
{
    return us > 0 ? (double)us / 1e6 : 0.0;
}

void router_report_queue(router_report_t *rep, const char *pool, int64_t span_us)
{
    if (!rep)
        return;
    svc_label_t l = {"pool", pool};
    svc_metric_observe(rep->r, M_ROUTER_QUEUE, &l, 1, seconds(span_us));
}

void router_report_lookup(router_report_t *rep, const char *result, int64_t span_us)
{
    if (!rep)
        return;
    svc_label_t l = {"result", result};
    svc_metric_observe(rep->r, M_CACHE_LOOKUP, &l, 1, seconds(span_us));
}

void router_report_first_token(router_report_t *rep, const router_report_labels_t *l,
                               int64_t ttft_us)
{
    if (!rep)
        return;
    svc_label_t ls[4] = {
        {"pool", l->pool}, {"model", l->model}, {"version", l->version}, {"cache", l->cache}};
    svc_metric_observe(rep->r, M_TTFT, ls, 4, seconds(ttft_us));
}

void router_report_token_gap(router_report_t *rep, const router_report_labels_t *l, int64_t gap_us)
{
    if (!rep)
        return;
    svc_label_t ls[3] = {{"pool", l->pool}, {"model", l->model}, {"version", l->version}};
    svc_metric_observe(rep->r, M_ITL, ls, 3, seconds(gap_us));
}

/* metric_names.h's finish_reason: EOS is a stop (the answer ended by itself). */
static const char *finish_name(int code, int reason)
{
    return code != 0 ? "error" : svc_finish_reason_name((Llmserve__V1__FinishReason)reason);
}

void router_report_end(router_report_t *rep, const router_report_labels_t *l, int code,
                       int finish_reason, int64_t e2e_us, uint32_t tokens)
{
    if (!rep)
        return;
    svc_label_t ls[6] = {{"pool", l->pool},
                         {"model", l->model},
                         {"version", l->version},
                         {"cache", l->cache},
                         {"code", rpc_status_name((grpc_status_code)code)},
                         {"finish_reason", finish_name(code, finish_reason)}};
    svc_metric_observe(rep->r, M_E2E, ls, 4, seconds(e2e_us));
    svc_metric_add(rep->r, M_REQUESTS, ls, 6, 1);
    if (tokens > 0)
        svc_metric_add(rep->r, M_TOKENS, ls, 3, tokens);
}

void router_report_priority(router_report_t *rep, const char *pool, int priority)
{
    if (!rep)
        return;
    svc_label_t ls[2] = {{"pool", pool}, {"priority", svc_priority_name(priority)}};
    svc_metric_add(rep->r, M_ROUTER_BY_PRIORITY, ls, 2, 1);
}

void router_report_prefix(router_report_t *rep, const char *pool, bool kept)
{
    if (!rep)
        return;
    svc_label_t ls[2] = {{"pool", pool}, {"outcome", kept ? "kept" : "spilled"}};
    svc_metric_add(rep->r, M_ROUTER_PREFIX, ls, 2, 1);
}

void router_report_fallback(router_report_t *rep, const char *pool)
{
    if (!rep)
        return;
    svc_label_t l = {"pool", pool};
    svc_metric_add(rep->r, M_FALLBACKS, &l, 1, 1);
}

void router_report_retry(router_report_t *rep, const char *pool)
{
    if (!rep)
        return;
    svc_label_t l = {"pool", pool};
    svc_metric_add(rep->r, M_RETRIES, &l, 1, 1);
}

void router_report_failover(router_report_t *rep, const char *pool)
{
    if (!rep)
        return;
    svc_label_t l = {"pool", pool};
    svc_metric_add(rep->r, M_FAILOVERS, &l, 1, 1);
}
