/*
 * store.h - the collector's series: counters, gauges and histograms keyed by metric
 * name and sorted labels (service and instance included), the instances that report
 * them, and a per-second history of the last STORE_HISTORY_S seconds for quantiles and
 * rates over a recent window.
 *
 * What a series keeps:
 *   counter     the total since the series appeared, and its increase in each second;
 *   gauge       the last value;
 *   histogram   the count per bucket (layout from buckets.h), the count and the sum
 *               since the series appeared, and the count per bucket in each second.
 * A per-second history takes memory only once its series has data: 8 bytes a second
 * for a counter, 4 bytes a second per bucket for a histogram (about 30 KB for a latency
 * histogram), so --max-series bounds the memory of a flooding reporter.
 *
 * Instances.  A Report stream attaches to its (service, instance) with its first
 * report and detaches at its end.  An instance is up while at least one stream is
 * attached and it reported within stale_us; it is down from the end of its last stream
 * or from stale_us after its last report, and forgotten, with all its series,
 * stale_us after it went down (store_tick does this).  A down instance that reports
 * again is up again.
 *
 * Time: every call takes now_us on the ls_now_us clock; seconds are counted from
 * store_create, so history slots are whole seconds of that clock.
 *
 * Thread-safe: one mutex guards everything, held for one call (a report, a query, the
 * copy of a snapshot); formatting happens outside it (expo.h works on a snapshot).
 */
#ifndef METRICS_STORE_H
#define METRICS_STORE_H

#include "buckets.h"
#include "llmserve/v1/metrics.pb-c.h"
#include "validate.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Seconds of per-second history kept (the longest window a query can use). */
#define STORE_HISTORY_S 300

/* Metric kinds, numbered as metrics.proto's MetricKind. */
typedef enum {
    STORE_HISTOGRAM = 1,
    STORE_COUNTER = 2,
    STORE_GAUGE = 3,
} store_kind_t;

typedef struct {
    size_t max_series;         /* series kept; a new series past it is refused */
    size_t max_report_samples; /* samples in one report (each histogram value counts);
                                  a larger report is refused whole */
    int64_t stale_us;          /* silence that marks an instance down, and how long a
                                  down instance is kept */
    uint32_t window_s;         /* window of a query that names none */
} store_config_t;

/* Fills cfg with the defaults: 10000 series, 100000 samples a report, 300 s, 60 s. */
void store_config_init(store_config_t *cfg);

typedef struct store store_t;
typedef struct store_inst store_inst_t;

/* A label as the store takes it: strings borrowed for the call. */
typedef struct {
    const char *name;
    const char *value;
} store_label_t;

/* Creates an empty store whose clock starts at now_us.  Aborts on out-of-memory. */
store_t *store_create(const store_config_t *cfg, int64_t now_us);

/* Frees everything.  No stream may be attached any more.  NULL is a no-op. */
void store_destroy(store_t *s);

/* The configuration in use (borrowed for the store's life). */
const store_config_t *store_config(const store_t *s);

/* ---- reports ------------------------------------------------------------------------ */

/* Attaches a stream to instance (service, instance), creating it if needed; both
 * strings must have passed validate_label_value and be non-empty.  Returns the
 * instance (valid until store_detach). */
store_inst_t *store_attach(store_t *s, const char *service, const char *instance, int64_t now_us);

/* Whether inst is (service, instance).  Any thread, no lock needed (immutable). */
bool store_inst_is(const store_inst_t *inst, const char *service, const char *instance);

/* Detaches a stream from inst: the last stream to go marks the instance down.  inst
 * must not be used after this. */
void store_detach(store_t *s, store_inst_t *inst, int64_t now_us);

/* What a report's ack says: samples (single histogram values) refused, and why the
 * first one was. */
typedef struct {
    uint32_t rejected;
    char message[256]; /* "" when none was */
} store_ack_t;

/* Samples in r as the collector counts them: each counter and gauge, each histogram
 * value (a histogram sample with no values counts one). */
size_t store_report_samples(const Llmserve__V1__MetricsReport *r);

/* Applies r from inst (its source already resolved by the caller): valid samples are
 * stored, invalid ones refused and counted into ack (the rules are metrics.proto's,
 * plus the bounds of validate.h and --max-series); a report with more than
 * max_report_samples samples is refused whole.  Counts the report. */
void store_apply(store_t *s, store_inst_t *inst, const Llmserve__V1__MetricsReport *r,
                 int64_t now_us, store_ack_t *ack);

/* Counts r as received and refused whole for why, with message (copied into ack). */
void store_refuse(store_t *s, const Llmserve__V1__MetricsReport *r, reject_reason_t why,
                  const char *message, store_ack_t *ack);

/* Marks down the instances silent for stale_us and forgets those down for stale_us.
 * Called about once a second. */
void store_tick(store_t *s, int64_t now_us);

/* ---- reading ---------------------------------------------------------------------- */

/* One metric over the series that carry every label of match, as metrics.proto's
 * QueryResponse: count and sum since the series appeared; p50/p95/p99 (NAN when the
 * window has no observation), observations or increase and rate per second over the
 * window.  Gauges: sum is the sum of the current values. */
typedef struct {
    store_kind_t kind;
    uint32_t series;
    uint64_t count;
    double sum;
    double p50, p95, p99;
    double in_window; /* histograms: observations in the window; counters: increase */
    double rate;      /* in_window / window_s */
    uint32_t window_s;
} store_result_t;

/* Reads name.  window_s 0 is the configured default; it is clamped to
 * STORE_HISTORY_S and to the seconds since the store started (the current one
 * counting as a whole), and the window used is returned in out->window_s.  up_only
 * leaves out the series of instances that are down.  Returns LS_OK, or
 * LS_ERR_NOT_FOUND when no series has that name (out then zeroed). */
int store_query(store_t *s, const char *name, const store_label_t *match, size_t n_match,
                uint32_t window_s, bool up_only, int64_t now_us, store_result_t *out);

/* One second of history: histograms: observations and quantiles (NAN without
 * observations); counters: the increase (quantiles NAN). */
typedef struct {
    double value;
    double p50, p95, p99;
} store_point_t;

/* The n seconds before the current one, oldest first (n <= STORE_HISTORY_S), of name
 * over the series matching match.  Returns LS_OK, or LS_ERR_NOT_FOUND (out then holds
 * zeros and NANs) when no series has that name. */
int store_history(store_t *s, const char *name, const store_label_t *match, size_t n_match,
                  size_t n, int64_t now_us, store_point_t *out);

/* Seconds since the store started, the current one not counted: 0 in the first. */
int64_t store_second(const store_t *s, int64_t now_us);

/* When second sec of the store's clock begins (ls_now_us clock). */
int64_t store_second_start_us(const store_t *s, int64_t sec);

/* Writes into buf (len bytes) the value of label in one series of name that matches
 * match (of the up instances when up_only).  Returns whether one was found. */
bool store_label_of(store_t *s, const char *name, const store_label_t *match, size_t n_match,
                    bool up_only, int64_t now_us, const char *label, char *buf, size_t len);

/* Distinct values of label over the series of the n_names metrics, sorted; the caller
 * frees the result with store_strings_free.  Returns how many. */
size_t store_label_values(store_t *s, const char *const *names, size_t n_names, const char *label,
                          char ***out);
void store_strings_free(char **v, size_t n);

/* An instance as the store sees it. */
typedef struct {
    char *service;
    char *instance;
    bool up;
    double last_report_ago_s;
} store_inst_info_t;

/* The known instances (forgotten ones left out), sorted by service then instance; the
 * caller frees with store_instances_free.  Returns how many. */
size_t store_instances(store_t *s, int64_t now_us, store_inst_info_t **out);
void store_instances_free(store_inst_info_t *v, size_t n);

/* The collector's own figures. */
typedef struct {
    uint64_t reports;
    uint64_t samples; /* stored */
    uint64_t rejected[REJECT_N_REASONS];
    uint64_t rejected_total;
    size_t series;
    size_t series_limit;
    double uptime_s;
} store_stats_t;

void store_stats(store_t *s, int64_t now_us, store_stats_t *out);

/* ---- snapshot for the exposition ---------------------------------------------------- */

typedef struct {
    const char *labels;     /* label pairs sorted by name, values escaped for the text format,
                               without braces: instance="a:1",pool="small",service="router" */
    double value;           /* counter total, gauge value, histogram sum */
    uint64_t count;         /* histograms */
    const uint64_t *counts; /* histograms: per bucket (buckets->n + 1, the last +Inf),
                               not cumulative */
} store_snap_series_t;

typedef struct {
    const char *name;
    store_kind_t kind;
    const buckets_t *buckets; /* histograms */
    store_snap_series_t *series;
    size_t n_series;
} store_snap_family_t;

/* A copy of what /metrics shows: families sorted by name, series by labels, instances
 * as store_instances, and the figures. */
typedef struct {
    store_snap_family_t *families;
    size_t n_families;
    store_inst_info_t *instances;
    size_t n_instances;
    store_stats_t stats;
} store_snap_t;

/* Copies the store under its lock and sorts the copy outside it.  Returns the snapshot
 * (free with store_snap_free) or NULL when memory is exhausted. */
store_snap_t *store_snapshot(store_t *s, int64_t now_us);

/* NULL is a no-op. */
void store_snap_free(store_snap_t *snap);

#endif
