/*
 * gauge.h - a gauge that many threads change by steps (requests in flight, breakers open),
 * reported through reporter.h so that the value reported last is always the current one.
 *
 * Setting a gauge from a count kept elsewhere races: two threads change the count, then
 * report what each saw, and the older value can land last and stay (a pool shown busy
 * while idle).  Here every change marks the gauge dirty and one thread at a time reports
 * it, re-reading the count until nothing changed meanwhile; a thread that finds another
 * reporting leaves the work to it instead of waiting.  A mutex held across the report
 * would do the same but make rpc threads wait on each other for a metric.
 *
 * With a NULL reporter each call is one pointer test and the count is not kept.
 * Thread-safe: every function may be called from any thread at once; name and labels
 * are borrowed for the call.
 */
#ifndef SVC_GAUGE_H
#define SVC_GAUGE_H

#include "svc/reporter.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    atomic_int_fast64_t value;
    atomic_bool dirty; /* changed since the last report began */
    atomic_bool busy;  /* a thread is reporting */
    bool flag;         /* report 1 while value > 0, else 0 (e.g. "any breaker open") */
} svc_gauge_t;

/* Zeroes g; flag as above. */
static inline void svc_gauge_init(svc_gauge_t *g, bool flag)
{
    atomic_init(&g->value, 0);
    atomic_init(&g->dirty, false);
    atomic_init(&g->busy, false);
    g->flag = flag;
}

/* Reports g until no change is left unreported, unless another thread is at it. */
static inline void svc__gauge_report(svc_gauge_t *g, svc_reporter_t *r, const char *name,
                                     const svc_label_t *labels, size_t n_labels)
{
    atomic_store(&g->dirty, true);
    /* A change made while the reporting thread lets go of busy is seen by the check of
     * dirty after the release, or its own thread finds busy free. */
    while (atomic_load(&g->dirty)) {
        if (atomic_exchange(&g->busy, true))
            return;
        while (atomic_exchange(&g->dirty, false)) {
            int_fast64_t v = atomic_load(&g->value);
            svc_metric_set(r, name, labels, n_labels, g->flag ? (v > 0 ? 1.0 : 0.0) : (double)v);
        }
        atomic_store(&g->busy, false);
    }
}

/* Adds delta (may be negative or 0: 0 reports the current value) and reports. */
static inline void svc_gauge_add(svc_gauge_t *g, svc_reporter_t *r, const char *name,
                                 const svc_label_t *labels, size_t n_labels, int64_t delta)
{
    if (!r)
        return;
    atomic_fetch_add(&g->value, delta);
    svc__gauge_report(g, r, name, labels, n_labels);
}

#endif
