/*
 * report.h - llmserve.v1.Metrics over gRPC (libs/rpc): the Report stream handler and
 * Query.
 *
 * Report: each MetricsReport gets one ReportAck with its sequence, in order, sent from
 * the completion-queue thread that read it (the store's work is short), so the next
 * report is read only after this one is applied (libs/rpc paces reads) and a client
 * that never reads its acks is cut off by the write-queue bound.  The first report
 * must carry a MetricsSource (service and instance, each non-empty UTF-8 of at most
 * 256 bytes); a report without one, with a bad one, or with another one than the
 * stream began with is refused whole (counted, the ack says why) and the stream goes
 * on.  The stream ends OK when the client half-closes, UNAVAILABLE when the collector
 * drains.  Its end marks its instance down (store.h).
 *
 * Query: INVALID_ARGUMENT for a bad metric name or label, NOT_FOUND for a name no
 * series has (the collector's own metrics are only on /metrics), else the answer of
 * metrics.proto with 0 for quantiles over an empty window.
 */
#ifndef METRICS_REPORT_H
#define METRICS_REPORT_H

#include "rpc/server.h"
#include "store.h"

#define REPORT_METHOD "/llmserve.v1.Metrics/Report"
#define QUERY_METHOD "/llmserve.v1.Metrics/Query"

typedef struct report_service report_service_t;

/* Registers Report and Query on srv (before rpc_server_start); store is borrowed for
 * the service's life.  Returns NULL when a method cannot be registered. */
report_service_t *report_service_create(rpc_server_t *srv, store_t *store);

/* Ends every open Report stream with UNAVAILABLE and refuses new ones the same way.
 * Any thread. */
void report_service_drain(report_service_t *rs);

/* After the server has stopped (no call left).  NULL is a no-op. */
void report_service_destroy(report_service_t *rs);

#endif
