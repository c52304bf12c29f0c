/*
 * metrics_stream.h - a Metrics.Report client for tests of the metrics collector: builds
 * MetricsReports from plain values, sends them on one stream and records the acks in
 * order.
 *
 * Functions that assert (a send accepted) fail the calling test; call them from the
 * test's own thread.  The rest may be called from any thread.
 */
#ifndef TEST_METRICS_STREAM_H
#define TEST_METRICS_STREAM_H

#include "llmserve/v1/metrics.pb-c.h"
#include "rpc/client.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- building reports ------------------------------------------------------------ */

typedef struct metrics_report metrics_report_t;

/* A report with sequence seq from (service, instance); service NULL sends no source. */
metrics_report_t *metrics_report_new(uint64_t seq, const char *service, const char *instance);

/* Adds a sample.  labels is NULL or a NULL-terminated list of name, value, name,
 * value...; strings are copied. */
void metrics_report_hist(metrics_report_t *r, const char *name, const char *const *labels,
                         const double *values, size_t n_values);
void metrics_report_counter(metrics_report_t *r, const char *name, const char *const *labels,
                            double increment);
void metrics_report_gauge(metrics_report_t *r, const char *name, const char *const *labels,
                          double value);

/* The message (borrowed from r). */
const Llmserve__V1__MetricsReport *metrics_report_msg(const metrics_report_t *r);

/* NULL is a no-op. */
void metrics_report_free(metrics_report_t *r);

/* ---- the stream --------------------------------------------------------------------- */

typedef struct metrics_stream metrics_stream_t;

typedef struct {
    uint64_t sequence;
    uint32_t rejected;
    char message[256];
} metrics_ack_t;

/* Opens Metrics.Report on ch (wait for ready, no deadline); asserts that it opened. */
metrics_stream_t *metrics_stream_open(rpc_channel_t *ch);

/* Sends r (or raw bytes); asserts that the stream took it. */
void metrics_stream_send(metrics_stream_t *m, const metrics_report_t *r);
void metrics_stream_send_raw(metrics_stream_t *m, const void *data, size_t len);

/* Sends r and waits up to 10 s for its ack (the next one); asserts that it came.
 * Returns it. */
metrics_ack_t metrics_stream_report(metrics_stream_t *m, const metrics_report_t *r);

/* Waits up to timeout_ms until n acks have come in all; returns whether they did. */
bool metrics_stream_wait_acks(metrics_stream_t *m, size_t n, int timeout_ms);

/* Acks received so far, and a copy of ack i (zeros when there is none). */
size_t metrics_stream_n_acks(metrics_stream_t *m);
metrics_ack_t metrics_stream_ack(metrics_stream_t *m, size_t i);

/* Half-closes the stream.  Returns rpc_stream_close_send's result. */
int metrics_stream_close_send(metrics_stream_t *m);

/* Waits up to timeout_ms for the stream's end; returns whether it ended. */
bool metrics_stream_wait_end(metrics_stream_t *m, int timeout_ms);

/* The stream's final status (GRPC_STATUS_UNKNOWN, "not ended", before its end). */
rpc_status_t metrics_stream_status(metrics_stream_t *m);

/* Cancels the stream if it has not ended, waits for its end and frees it.  NULL is a
 * no-op. */
void metrics_stream_destroy(metrics_stream_t *m);

#endif
