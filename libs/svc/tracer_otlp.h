/*
 * tracer_otlp.h - an svc_tracer_t (tracer.h) that exports spans to an OpenTelemetry
 * collector (or Jaeger, v1.35+) as OTLP/HTTP JSON: POST <endpoint> with
 * Content-Type application/json, one ExportTraceServiceRequest per batch.
 *
 * Configuration comes from the standard OTEL_* environment (svc_otlp_config_from_env).
 * With no endpoint set, or OTEL_SDK_DISABLED=true, tracing is off: the service gets no
 * tracer, and tracer.h's NULL tracer costs one pointer test per call.
 *
 * Spans: ids from a generator per thread seeded from getrandom(2); times in Unix
 * nanoseconds (CLOCK_REALTIME).  A span keeps at most SVC_OTLP_MAX_ATTRS attributes (setting a key again replaces its value; more keys
 * are dropped and counted in droppedAttributesCount) and SVC_OTLP_MAX_EVENTS events
 * (likewise, droppedEventsCount); its strings are copied into one buffer of its own, so
 * that making a span is one allocation (more only past about 700 bytes of text).  Ending
 * a span sets its status per the gRPC semantic conventions v1.37.0, and on a span that
 * describes a gRPC call (one with an rpc.system attribute) the int attribute
 * rpc.grpc.status_code: a server
 * span is Error only for UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE
 * and DATA_LOSS; a client or internal span for any code but OK; otherwise the status stays
 * unset.  The message goes with an Error only.
 *
 * Sampling is decided at start (OTEL_TRACES_SAMPLER): parentbased_* follow the parent's
 * sampled flag when there is a parent and use their root sampler otherwise; traceidratio
 * decides on the trace id alone (bytes 8..15 read big-endian, shifted right by one, below
 * ratio * 2^63), so every llmserve service with the same ratio decides alike for one
 * trace.
 * Limitation: an unsampled span is NULL (the seam's no-op), so svc_span_context returns
 * false for it and a caller has no context of its own to pass on; it should pass on the
 * incoming traceparent as it came (its sampled flag is clear, so the next hop's
 * parentbased sampler drops it too), or nothing for a trace started here.
 *
 * Batch span processor: an ended span goes, as it is, into a queue of at most
 * max_queue_size spans (a full queue drops it and counts it).  A thread of ours
 * ("svc-otlp") sends batches of at most max_export_batch_size spans every
 * schedule_delay_ms, or as soon as a full batch is queued.  One export may take at most
 * export_timeout_ms, each HTTP request at most timeout_ms.  A 2xx is done (a
 * partialSuccess in the body is logged once, never retried); 429, 502, 503, 504 and no
 * answer at all (refused, timed out) are retried with exponential back-off with jitter, or
 * after Retry-After when the answer has one in seconds (an HTTP date is not read), while
 * the export's time lasts; any other status (400 among them) drops the batch.  A batch that is not
 * delivered counts its spans as failed.  Failures are logged once per change of state (mod "otlp"),
 * and the recovery once.
 *
 * Threads: the tracer is thread-safe as tracer.h says.  The span functions never wait on
 * the network: start draws ids and allocates once, and takes no lock; end takes
 * one short lock (a list append, a signal).  svc_otlp_tracer_set_instance and
 * svc_otlp_tracer_stats may be called from any thread; create and destroy from one.
 */
#ifndef SVC_TRACER_OTLP_H
#define SVC_TRACER_OTLP_H

#include "svc/reporter.h"
#include "svc/tracer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SVC_OTLP_MAX_ATTRS 64  /* attributes kept per span */
#define SVC_OTLP_MAX_EVENTS 32 /* events kept per span */
#define SVC_OTLP_MAX_HEADERS 16
#define SVC_OTLP_MAX_RESOURCE 32 /* attributes from OTEL_RESOURCE_ATTRIBUTES */

typedef enum {
    SVC_OTLP_SAMPLER_ALWAYS_ON = 0,
    SVC_OTLP_SAMPLER_ALWAYS_OFF = 1,
    SVC_OTLP_SAMPLER_TRACEIDRATIO = 2,
    SVC_OTLP_SAMPLER_PARENTBASED_ALWAYS_ON = 3,
    SVC_OTLP_SAMPLER_PARENTBASED_ALWAYS_OFF = 4,
    SVC_OTLP_SAMPLER_PARENTBASED_TRACEIDRATIO = 5,
} svc_otlp_sampler_t;

typedef struct {
    char key[128];
    char value[512];
} svc_otlp_kv_t;

typedef struct {
    bool enabled;        /* false: tracing off (no endpoint, or OTEL_SDK_DISABLED=true) */
    char endpoint[1024]; /* the full URL spans are POSTed to, ".../v1/traces" */
    svc_otlp_kv_t headers[SVC_OTLP_MAX_HEADERS]; /* sent with every request */
    size_t n_headers;
    int64_t timeout_ms;                            /* one HTTP request; default 10000 */
    char service_name[256];                        /* service.name */
    svc_otlp_kv_t resource[SVC_OTLP_MAX_RESOURCE]; /* more resource attributes */
    size_t n_resource;
    svc_otlp_sampler_t sampler;   /* default SVC_OTLP_SAMPLER_PARENTBASED_ALWAYS_ON */
    double ratio;                 /* for the traceidratio samplers, in [0, 1]; default 1.0 */
    int64_t schedule_delay_ms;    /* between batches; default 5000 */
    int64_t export_timeout_ms;    /* one export with its retries, and destroy's flush;
                                     default 30000 */
    size_t max_queue_size;        /* ended spans waiting; default 2048 */
    size_t max_export_batch_size; /* spans per request; default 512, <= max_queue_size */
    int64_t backoff_min_ms;       /* first retry delay (jitter in [1/2, 1] of it), doubling;
                                     default 1000; not from the environment */
    int64_t backoff_max_ms;       /* cap of the retry delay; default 5000; not from the
                                     environment */
    svc_reporter_t *reporter;     /* borrowed, may be NULL: counts spans exported and
                                     dropped (metric_names.h, llmserve_trace_spans_*); must
                                     outlive the tracer; not from the environment */
} svc_otlp_config_t;

/* Fills cfg with the defaults above, tracing off, service name service_name (truncated to
 * fit; NULL: ""). */
void svc_otlp_config_init(svc_otlp_config_t *cfg, const char *service_name);

/* Fills cfg from the environment, service_name ("llmserve-router", say) being the
 * service.name unless OTEL_SERVICE_NAME or service.name in OTEL_RESOURCE_ATTRIBUTES names
 * one (in that order).  Reads OTEL_SDK_DISABLED ("true" or "false", any case; empty is
 * false), OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as is) or else OTEL_EXPORTER_OTLP_ENDPOINT
 * (a base URL: "/v1/traces" is appended, one '/' between), both http:// or https://;
 * OTEL_EXPORTER_OTLP_[TRACES_]HEADERS (k=v,... values percent-decoded) and
 * OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT (ms), the TRACES_ ones winning; OTEL_SERVICE_NAME;
 * OTEL_RESOURCE_ATTRIBUTES (k=v,... values percent-decoded); OTEL_TRACES_SAMPLER and
 * OTEL_TRACES_SAMPLER_ARG; OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_EXPORT_TIMEOUT (ms, > 0),
 * OTEL_BSP_MAX_QUEUE_SIZE and OTEL_BSP_MAX_EXPORT_BATCH_SIZE (> 0, batch <= queue);
 * OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL: http/json, or http/protobuf with a warning (JSON is
 * sent all the same, which OTLP/HTTP receivers take on the same path), grpc refused.
 *
 * Returns LS_OK with cfg->enabled telling whether tracing is on, or LS_ERR_INVALID with a
 * one-line reason in err (err_len bytes) for any value that does not parse or is out of
 * range (the service exits 2 with it), even where the OTel specification would log a
 * warning and ignore the value: a misspelt setting should not pass unnoticed.  The one
 * exception follows the specification: an OTEL_TRACES_SAMPLER_ARG that is not a number
 * in [0, 1] for a ratio sampler logs a warning and the ratio is 1.0.  Values are checked
 * even when tracing is off. */
int svc_otlp_config_from_env(svc_otlp_config_t *cfg, const char *service_name, char *err,
                             size_t err_len);

/* The sampler's name as OTEL_TRACES_SAMPLER spells it ("parentbased_always_on"); static. */
const char *svc_otlp_sampler_name(svc_otlp_sampler_t s);

/* Creates the tracer and starts its thread (cfg is copied).  Returns NULL when cfg is not
 * enabled or not valid (logged), or the thread or curl cannot start.  The caller owns the
 * result: free it with svc_tracer_destroy, which sends what is queued within
 * export_timeout_ms at most (spans still unsent then are dropped and logged), stops the
 * thread and frees everything.  End every span before. */
svc_tracer_t *svc_otlp_tracer_create(const svc_otlp_config_t *cfg);

/* Sets service.instance.id (copied), known only once the service listens; batches sent
 * from now on carry it (unless OTEL_RESOURCE_ATTRIBUTES names one).  Thread-safe. */
void svc_otlp_tracer_set_instance(svc_tracer_t *t, const char *instance_id);

/* What the tracer has done so far. */
typedef struct {
    uint64_t started;  /* svc_span_start calls */
    uint64_t sampled;  /* of which sampled (spans made) */
    uint64_t exported; /* spans the receiver accepted (200) */
    uint64_t dropped;  /* spans dropped: the queue was full, or unsent at destroy */
    uint64_t failed;   /* spans of batches not delivered (a status not retried, or the
                          export's time ran out) */
    uint64_t retries;  /* requests sent again */
    uint64_t requests; /* HTTP requests made */
    size_t queued;     /* ended spans waiting now */
} svc_otlp_stats_t;

/* Fills *out for t, a tracer made by svc_otlp_tracer_create.  Thread-safe. */
void svc_otlp_tracer_stats(svc_tracer_t *t, svc_otlp_stats_t *out);

#endif
