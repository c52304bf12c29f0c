/*
 * report.h - what the router reports through the metrics seam (libs/svc/reporter.h),
 * with the names, kinds and labels of libs/svc/metric_names.h: per request its router
 * queue time, cache lookup, TTFT, gaps between tokens, end to end time, its outcome
 * (exactly one llmserve_requests_total per request, at its terminal event) and tokens;
 * fallbacks, retries and failovers; requests in flight and requests queued per pool.
 *
 * A router made without a reporter has no router_report_t (NULL): every function here
 * is then one pointer test.  Label arrays are built on the stack; the in-flight gauges
 * live in a fixed table of pools claimed without a lock (svc/gauge.h reports them).
 *
 * Thread-safe: every function may be called from any thread at once (relay.c calls them
 * with a request's lock held: none blocks or calls back).  Strings are borrowed for the
 * call.
 */
#ifndef ROUTER_REPORT_H
#define ROUTER_REPORT_H

#include "svc/reporter.h"

#include <stdbool.h>
#include <stdint.h>

/* Pools with a gauge of their own; requests of further pools are counted as pool
 * "other" (pool names come from the configuration, never from clients). */
#define ROUTER_REPORT_POOLS 64

typedef struct router_report router_report_t;
typedef struct router_report_pool router_report_pool_t;

/* A request's labels as far as they are known: pool routed to ("" before routing),
 * model and version of the instance that served it ("" until one started it; a cache
 * hit takes the instance it would have gone to and the entry's version), cache
 * "bypass" | "miss" | "exact" | "semantic". */
typedef struct {
    const char *pool, *model, *version, *cache;
} router_report_labels_t;

/* The report of a router with reporter r (borrowed for the report's life), or NULL
 * when r is NULL. */
router_report_t *router_report_create(svc_reporter_t *r);

/* NULL is a no-op. */
void router_report_destroy(router_report_t *rep);

/* The request starts to count in flight in pool; returns what router_report_leave
 * takes (NULL when rep is NULL). */
router_report_pool_t *router_report_enter(router_report_t *rep, const char *pool);

/* The request stops counting in flight where router_report_enter put it (NULL: no-op). */
void router_report_leave(router_report_t *rep, router_report_pool_t *p);

/* One request more (delta 1) or less (-1) waiting in the router's queue of pool. */
void router_report_queued(router_report_t *rep, const char *pool, int delta);

/* Time from receipt to leaving the router for an instance (routing, and waiting in the
 * router's queue), in pool. */
void router_report_queue(router_report_t *rep, const char *pool, int64_t span_us);

/* A cache lookup that ended with result ("hit", "miss", "error" or "skipped"). */
void router_report_lookup(router_report_t *rep, const char *result, int64_t span_us);

/* The first token out, ttft_us after receipt. */
void router_report_first_token(router_report_t *rep, const router_report_labels_t *l,
                               int64_t ttft_us);

/* A token streamed gap_us after the one before it. */
void router_report_token_gap(router_report_t *rep, const router_report_labels_t *l, int64_t gap_us);

/* The terminal event: code (a gRPC status code; 0 for a Done event) and finish_reason
 * (a llmserve.v1.FinishReason value; ignored unless code is 0), e2e_us after receipt,
 * with tokens streamed from an instance (0 for a cache hit's replay). */
void router_report_end(router_report_t *rep, const router_report_labels_t *l, int code,
                       int finish_reason, int64_t e2e_us, uint32_t tokens);

/* A request of class priority (a llmserve.v1.Priority value) was routed to pool. */
void router_report_priority(router_report_t *rep, const char *pool, int priority);

/* A pick in pool where the request's prefix key had a say: kept (the prefix's instance
 * took it) or not (spilled to the least loaded instance). */
void router_report_prefix(router_report_t *rep, const char *pool, bool kept);

/* The request left pool for its fallback / tries again in pool after a failure. */
void router_report_fallback(router_report_t *rep, const char *pool);
void router_report_retry(router_report_t *rep, const char *pool);

/* The request's answer, failed mid-stream in pool, goes on on another instance. */
void router_report_failover(router_report_t *rep, const char *pool);

#endif
