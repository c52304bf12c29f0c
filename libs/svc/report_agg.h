/*
 * report_agg.h - the metrics aggregate between two reports, and the MetricsReport made
 * from what is taken out of it (internal to libs/svc: the report client's).
 *
 * Counters are summed per series, gauges keep their last value, histogram observations
 * are appended; a take moves out what changed since the previous one.  Bounded: at most
 * max_series series and max_observations observations held; what does not fit is
 * dropped and counted, and the count goes out with the next take as
 * llmserve_metrics_dropped_total.
 *
 * Threads: svc__agg_record and svc__agg_counts are safe from any thread at once (one
 * short lock).  Take, merge back, build and destroy belong to one thread, the
 * reporter's: series are freed only there (idle ones at a take), and a series' name and
 * labels never change once added, so that thread reads them without the lock.
 */
#ifndef SVC_REPORT_AGG_H
#define SVC_REPORT_AGG_H

#include "llmserve/v1/metrics.pb-c.h"
#include "svc/reporter.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { SVC__COUNTER, SVC__GAUGE, SVC__HISTOGRAM } svc__kind_t;

typedef struct svc__agg svc__agg_t;
typedef struct svc__series svc__series_t;

/* A value of a series: a counter increment, a gauge value, an observation. */
typedef struct {
    svc__series_t *s;
    double v;
} svc__sample_t;

/* What one take moved out.  The series it points to stay valid as long as no take with
 * may_evict runs (see svc__agg_take). */
typedef struct {
    svc__sample_t *counters; /* increments, merged back if the report is lost */
    size_t n_counters;
    svc__sample_t *obs; /* observations in the order made, merged back likewise */
    size_t n_obs;
    uint64_t dropped;      /* samples dropped since the last take, merged back likewise */
    svc__sample_t *gauges; /* values to send */
    size_t n_gauges;
    svc__series_t **hists; /* the histogram series that have values in obs */
    size_t n_hists;
} svc__taken_t;

/* Creates an empty aggregate.  Aborts on out-of-memory. */
svc__agg_t *svc__agg_create(size_t max_series, size_t max_observations);

/* Frees it and every series.  Returns the samples it still held (for a log line). */
size_t svc__agg_destroy(svc__agg_t *a);

/* Adds one sample (name and labels borrowed for the call).  Drops and counts it when it
 * is invalid (NaN or infinite, a negative counter increment, more than
 * SVC_REPORT_MAX_LABELS labels or SVC_REPORT_MAX_KEY_BYTES of name and labels) or does
 * not fit.  Returns true the first time since the last take that half of
 * max_observations are held: time for an early report. */
bool svc__agg_record(svc__agg_t *a, svc__kind_t kind, const char *name, const svc_label_t *labels,
                     size_t n_labels, double v);

/* Moves what changed since the last take into *t: counter increments (of counters
 * touched, 0 included), gauge values (every gauge when all_gauges), observations and the
 * dropped count.  With may_evict, counter and histogram series idle for 60 takes in a
 * row are forgotten: pass it only when no earlier svc__taken_t is still kept.  The
 * caller frees *t with svc__taken_free. */
void svc__agg_take(svc__agg_t *a, bool all_gauges, bool may_evict, svc__taken_t *t);

/* Whether *t carries nothing to send. */
bool svc__taken_empty(const svc__taken_t *t);

/* Puts the counters, observations and dropped count of a lost report back, so that the
 * next take carries them (observations beyond the bound are dropped and counted). */
void svc__agg_merge_back(svc__agg_t *a, const svc__taken_t *t);

void svc__taken_free(svc__taken_t *t);

/* Dropped since creation, series held, observations held (not yet taken). */
void svc__agg_counts(svc__agg_t *a, uint64_t *dropped, size_t *series, size_t *observations);

/* A MetricsReport of *t (no source), pointing into t's series and into memory of its
 * own: send it, then svc__report_free. */
typedef struct {
    Llmserve__V1__MetricsReport msg;
    Llmserve__V1__CounterSample *cs, **csp;
    Llmserve__V1__GaugeSample *gs, **gsp;
    Llmserve__V1__HistogramSample *hs, **hsp;
    Llmserve__V1__Label *lab, **labp;
    double *values;
} svc__report_t;

void svc__report_build(const svc__taken_t *t, uint64_t seq, svc__report_t *m);
void svc__report_free(svc__report_t *m);

#endif
