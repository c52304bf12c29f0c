/*
 * report_client.h - the metrics reporter that streams to the collector: an
 * svc_reporter_t (reporter.h) on one long-lived llmserve.v1.Metrics/Report stream.
 *
 * Between reports it aggregates in process: counters summed per series, gauges keep
 * their last value, histogram observations appended per series.  Every interval_ms (or
 * sooner, once half of max_observations are held) one MetricsReport leaves with what
 * changed.  Each stream opens with a report of MetricsSource{service, instance} alone;
 * samples follow once the collector has acked it (while it is away they stay here),
 * and the first of them carries every gauge's last value (a restarted collector has
 * lost them).  The collector acks each report; at most max_in_flight are unacked at a
 * time, and while that many are, aggregation goes on and the next report waits.
 *
 * When the stream breaks (collector restarted, network) or cannot be opened, the
 * client reopens it with capped exponential back-off with jitter.  Meanwhile counters
 * and gauges keep aggregating into their series, so no total is lost; counter
 * increments and observations of reports that were sent but not acked are merged back
 * and sent again (a report the collector applied but whose ack was lost is then
 * counted twice: the collector does not deduplicate, and losing totals is the worse
 * failure).  A stream whose oldest report goes unacked for ack_timeout_ms (a stalled
 * collector) is cancelled and reopened the same way.
 *
 * Bounds: at most max_series series (a sample of a new series beyond it is dropped),
 * at most max_observations histogram values held (later ones are dropped); a series'
 * name and labels take at most SVC_REPORT_MAX_KEY_BYTES and SVC_REPORT_MAX_LABELS
 * (else the sample is dropped), and NaN, infinite or negative counter increments are
 * dropped.  Every dropped sample counts in llmserve_metrics_dropped_total, reported
 * with the next report.  Counter and histogram series with nothing to report for 60
 * intervals in a row are forgotten (gauges stay: they hold a value).  With the defaults
 * a report stays under gRPC's 4 MiB message limit.
 *
 * Threads: the svc_metric_* calls on it are safe from any thread and never wait on
 * the network: they take one short lock (a hash lookup, an add; an allocation for a new
 * series) and never block otherwise.  The client runs one thread of its own
 * ("svc-report") and one gRPC completion-queue thread once started.  Create, start and
 * destroy from one thread.
 */
#ifndef SVC_REPORT_CLIENT_H
#define SVC_REPORT_CLIENT_H

#include "rpc/client.h"
#include "svc/reporter.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest name + label keys and values of one series, in bytes. */
#define SVC_REPORT_MAX_KEY_BYTES 512
/* Most labels on one series. */
#define SVC_REPORT_MAX_LABELS 16

typedef struct {
    const char *target;   /* the collector, "host:port" or a gRPC target URI; "": none
                             known yet (samples aggregate within their bounds until
                             svc_report_client_set_target names one) */
    const char *service;  /* MetricsSource.service, e.g. "router"; required */
    const char *instance; /* MetricsSource.instance, e.g. "10.0.0.5:50051"; NULL: set by
                             svc_report_client_start, nothing is sent until then */
    const rpc_channel_config_t *channel; /* TLS for the collector; NULL: plaintext.  Copied
                                            at create; its file names must stay valid for
                                            the reporter's life (a new target reads them
                                            again) */
    int64_t interval_ms;                 /* between reports; default 1000 */
    size_t max_series;                   /* series held; default 4096 */
    size_t max_observations;             /* histogram values held between reports; default 65536 */
    size_t max_in_flight;                /* reports sent and not acked; default 2, at most 8 */
    int64_t ack_timeout_ms;     /* unacked this long: the stream is reopened; default 10000 */
    int64_t backoff_min_ms;     /* first delay before reopening; default 100 */
    int64_t backoff_max_ms;     /* cap of the delay (and of gRPC's reconnects); default 5000 */
    int64_t destroy_timeout_ms; /* what destroy may spend on the last report; default 500 */
} svc_report_config_t;

/* Fills cfg with the defaults above (target, service, instance NULL). */
void svc_report_config_init(svc_report_config_t *cfg);

/* Creates the reporter (cfg and its strings are copied).  With cfg->instance set it
 * starts at once; without, it aggregates (within its bounds) until
 * svc_report_client_start.  Returns NULL when target is NULL or service missing or empty, or
 * the channel cannot be created (TLS files unreadable; logged).  The caller owns the
 * result: free it with svc_reporter_destroy. */
svc_reporter_t *svc_report_client_create(const svc_report_config_t *cfg);

/* Reports to target from now on ("" or NULL: to nobody until the next call), e.g. when
 * discovery finds another collector: the stream to the old one ends, its unacked
 * reports are merged back, and a stream to the new one opens (its first report carries
 * every gauge).  Returns at once; the client's thread does the work.  Thread-safe; a
 * target equal to the current one changes nothing. */
void svc_report_client_set_target(svc_reporter_t *r, const char *target);

/* Sets the instance name (copied) and starts reporting: the thread starts and the
 * stream opens.  For a reporter created without an instance; call once, from the thread
 * that created it.  Returns LS_OK, LS_ERR_EXISTS when already started, LS_ERR_INVALID for
 * an empty instance or LS_ERR_INTERNAL when the thread cannot start. */
int svc_report_client_start(svc_reporter_t *r, const char *instance);

/* What the reporter has done so far. */
typedef struct {
    uint64_t streams_opened; /* Report streams opened */
    uint64_t reports_sent;   /* reports handed to a stream */
    uint64_t reports_acked;  /* reports the collector acked */
    uint64_t rejected;       /* samples the collector acked as invalid */
    uint64_t dropped;        /* samples dropped here (all time) */
    size_t series;           /* series held now */
    size_t observations;     /* histogram values held now, not yet sent */
    size_t in_flight;        /* reports sent and not yet acked */
    bool connected;          /* a stream is open and has acked a report */
} svc_report_stats_t;

/* Fills *out for r, a reporter made by svc_report_client_create.  Thread-safe. */
void svc_report_client_stats(svc_reporter_t *r, svc_report_stats_t *out);

#endif
