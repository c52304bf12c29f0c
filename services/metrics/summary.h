/*
 * summary.h - /api/summary: what the status page draws, as the JSON of API.md (via
 * cJSON): request and token rates, error and cache hit rates, in-flight and queued
 * requests, TTFT / inter-token / end-to-end quantiles over the window, overall and per
 * pool; every instance; the alert thresholds crossed now (alerts.h); one point per
 * second of the last STORE_HISTORY_S seconds; the collector's own figures.  A number
 * without data is null.
 *
 * Gauges have no per-second history in the store, so summary_tick samples the queue
 * depth and in-flight totals once a second for the history arrays.
 *
 * Thread-safe: render from any thread (HTTP), tick from one.  A rendered document is
 * reused for SUMMARY_CACHE_US, so that many open status pages cost one computation.
 */
#ifndef METRICS_SUMMARY_H
#define METRICS_SUMMARY_H

#include "alerts.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

#define SUMMARY_CACHE_US 250000

typedef struct summary summary_t;

/* store is borrowed for the summary's life; window_s is the window of rates and
 * quantiles (clamped as store_query does). */
summary_t *summary_create(store_t *store, uint32_t window_s, const alerts_config_t *alerts);

/* NULL is a no-op. */
void summary_destroy(summary_t *sm);

/* Records the gauge totals of the second before now's. */
void summary_tick(summary_t *sm, int64_t now_us);

/* The document at now_us (ls_now_us clock) and wall_us (Unix microseconds).  Returns a
 * new NUL-terminated string of *len bytes (the caller frees it) or NULL when memory is
 * exhausted. */
char *summary_render(summary_t *sm, int64_t now_us, int64_t wall_us, size_t *len);

#endif
