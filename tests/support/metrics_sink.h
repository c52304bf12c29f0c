/*
 * metrics_sink.h - a metrics collector for tests: a real gRPC server (libs/rpc) on
 * 127.0.0.1 implementing llmserve.v1.Metrics/Report that records every report it gets
 * and acks each one, in order, as the collector does.
 *
 * It can be paused (reports are still read but neither recorded nor acked, as a stalled
 * collector; on resume those of streams still open are recorded and acked in order) and
 * stopped and started again on the same port (streams end, records are kept), so that a
 * test sees what a reporter sends across a collector's restart.
 *
 * Queries name a series by metric name and labels written "k=v,k2=v2" ("" for none;
 * order does not matter, the set must match exactly).  Thread-safe: every function may
 * be called from any thread; the server's callbacks run on its own thread.
 */
#ifndef TEST_METRICS_SINK_H
#define TEST_METRICS_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct metrics_sink metrics_sink_t;

/* Starts a sink on 127.0.0.1:port (0: any free port).  Returns NULL when the port cannot
 * be bound.  Free with metrics_sink_destroy. */
metrics_sink_t *metrics_sink_create(int port);

/* As metrics_sink_create, serving TLS with cert and key (PEM files), and mutual TLS when
 * client_ca is not NULL (the paths are copied; a restart reads the files again). */
metrics_sink_t *metrics_sink_create_tls(int port, const char *cert, const char *key,
                                        const char *client_ca);

/* The port it listens (or listened) on. */
int metrics_sink_port(const metrics_sink_t *k);

/* Stops serving: open streams end (the reporter sees them break), held reports are
 * discarded; what was recorded stays.  Does nothing when stopped. */
void metrics_sink_stop(metrics_sink_t *k);

/* Serves again on the same port.  Returns 0, or -1 when it cannot be bound. */
int metrics_sink_start(metrics_sink_t *k);

/* Pauses (true) or resumes (false) recording and acking, see above. */
void metrics_sink_pause(metrics_sink_t *k, bool paused);

/* Stops and frees everything.  NULL is a no-op. */
void metrics_sink_destroy(metrics_sink_t *k);

/* One recorded report. */
typedef struct {
    int stream;      /* 1, 2, ... in the order streams were opened */
    uint64_t seq;    /* its sequence number */
    bool has_source; /* it carried a MetricsSource */
    char service[64], instance[128];
    size_t n_counters, n_gauges, n_histograms;
} metrics_sink_report_t;

/* Reports recorded, streams opened so far. */
size_t metrics_sink_reports(metrics_sink_t *k);
int metrics_sink_streams(metrics_sink_t *k);

/* The i-th report recorded (from 0); false past the last. */
bool metrics_sink_report(metrics_sink_t *k, size_t i, metrics_sink_report_t *out);

/* Sum of every increment recorded for the counter series. */
double metrics_sink_counter(metrics_sink_t *k, const char *name, const char *labels);

/* Counter samples recorded for the series (how many reports carried it). */
size_t metrics_sink_counter_samples(metrics_sink_t *k, const char *name, const char *labels);

/* The last value recorded for the gauge series into *out, and on which stream into
 * *stream (may be NULL); false when none was. */
bool metrics_sink_gauge(metrics_sink_t *k, const char *name, const char *labels, double *out,
                        int *stream);

/* The number of observations recorded for the histogram series; the first max of them,
 * in the order received, go to out (may be NULL). */
size_t metrics_sink_histogram(metrics_sink_t *k, const char *name, const char *labels, double *out,
                              size_t max);

/* Waits up to timeout_ms, checking every 10 ms, until the counter's sum reaches want;
 * returns whether it did. */
bool metrics_sink_wait_counter(metrics_sink_t *k, const char *name, const char *labels, double want,
                               int timeout_ms);

/* Waits up to timeout_ms until the gauge's last value is want; returns whether it was. */
bool metrics_sink_wait_gauge(metrics_sink_t *k, const char *name, const char *labels, double want,
                             int timeout_ms);

#endif
