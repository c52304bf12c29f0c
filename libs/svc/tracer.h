/*
 * tracer.h - the tracing seam: spans with a parent context, and W3C trace context.
 *
 * A request's trace starts from the caller's `traceparent` (W3C Trace Context, level 1)
 * when it has a valid one, and every hop passes its own span's context on.  A tracer
 * (an OTLP exporter, say) implements the ops; services call the svc_span_* functions,
 * which with no tracer configured (NULL) do nothing and cost one pointer test: a span
 * from a NULL tracer is NULL, and every operation on a NULL span is a no-op.
 *
 * Threads: a tracer is thread-safe; one span is used by one thread at a time (a
 * request's lock serialises it).  Strings are borrowed for the call.
 */
#ifndef SVC_TRACER_H
#define SVC_TRACER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- W3C trace context ---------------------------------------------------------- */

/* "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>" */
#define SVC_TRACEPARENT_LEN 55

#define SVC_TRACE_SAMPLED 0x01 /* the flags' sampled bit */

typedef struct {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags;
} svc_trace_ctx_t;

/* Parses a traceparent value.  Returns false, leaving out untouched, for anything the
 * specification says to ignore: a length other than 55 for version 00 (a later version
 * may carry more after a '-'), hex that is not lower case, version ff, an all-zero
 * trace id or parent id, or a malformed separator.  A caller then starts a new trace;
 * a bad value is never an error for the request. */
bool svc_traceparent_parse(const char *s, svc_trace_ctx_t *out);

/* Writes c as a version-00 traceparent into out (SVC_TRACEPARENT_LEN + 1 bytes). */
void svc_traceparent_format(const svc_trace_ctx_t *c, char *out);

/* Fills out with a fresh random trace id and span id (getrandom(2)), flags 0. */
void svc_trace_ctx_random(svc_trace_ctx_t *out);

/* ---- spans ------------------------------------------------------------------------ */

typedef enum {
    SVC_SPAN_INTERNAL = 0,
    SVC_SPAN_SERVER = 1,
    SVC_SPAN_CLIENT = 2,
} svc_span_kind_t;

typedef struct svc_tracer svc_tracer_t;
typedef struct svc_span svc_span_t;

/* Times: at_us is a time on ls_now_us()'s clock (base/clock.h, monotonic), for a span or
 * event that began or ended a moment ago (a queue wait measured by the scheduler, say);
 * 0 means now.  A tracer turns it into wall-clock time when it is given. */
typedef struct {
    /* Starts a span named name, child of parent (NULL: the root of a new trace), at at_us.
     * Returns NULL when not sampled (the callers' no-op). */
    svc_span_t *(*start)(svc_tracer_t *t, const char *name, svc_span_kind_t kind,
                         const svc_trace_ctx_t *parent, int64_t at_us);
    void (*set_str)(svc_span_t *s, const char *key, const char *value);
    void (*set_int)(svc_span_t *s, const char *key, int64_t value);
    void (*set_double)(svc_span_t *s, const char *key, double value);
    /* An attribute whose value is an array of n strings. */
    void (*set_strs)(svc_span_t *s, const char *key, const char *const *values, size_t n);
    /* A timed event inside the span (e.g. "first_token"), at at_us. */
    void (*event)(svc_span_t *s, const char *name, int64_t at_us);
    /* The span's own context, for children and the next hop. */
    void (*context)(const svc_span_t *s, svc_trace_ctx_t *out);
    /* Ends the span at at_us with a gRPC status code (0 = OK) and message, and releases
     * it. */
    void (*end)(svc_span_t *s, int grpc_code, const char *message, int64_t at_us);
    void (*destroy)(svc_tracer_t *t);
} svc_tracer_ops_t;

/* Implementations embed these first. */
struct svc_tracer {
    const svc_tracer_ops_t *ops;
};

struct svc_span {
    svc_tracer_t *tracer;
};

static inline svc_span_t *svc_span_start(svc_tracer_t *t, const char *name, svc_span_kind_t kind,
                                         const svc_trace_ctx_t *parent)
{
    return t ? t->ops->start(t, name, kind, parent, 0) : (svc_span_t *)0;
}

/* A span that began at at_us (ls_now_us clock). */
static inline svc_span_t *svc_span_start_at(svc_tracer_t *t, const char *name,
                                            svc_span_kind_t kind, const svc_trace_ctx_t *parent,
                                            int64_t at_us)
{
    return t ? t->ops->start(t, name, kind, parent, at_us) : (svc_span_t *)0;
}

static inline void svc_span_set_str(svc_span_t *s, const char *key, const char *value)
{
    if (s)
        s->tracer->ops->set_str(s, key, value);
}

static inline void svc_span_set_int(svc_span_t *s, const char *key, int64_t value)
{
    if (s)
        s->tracer->ops->set_int(s, key, value);
}

static inline void svc_span_set_double(svc_span_t *s, const char *key, double value)
{
    if (s)
        s->tracer->ops->set_double(s, key, value);
}

static inline void svc_span_set_strs(svc_span_t *s, const char *key, const char *const *values,
                                     size_t n)
{
    if (s)
        s->tracer->ops->set_strs(s, key, values, n);
}

static inline void svc_span_event(svc_span_t *s, const char *name)
{
    if (s)
        s->tracer->ops->event(s, name, 0);
}

static inline void svc_span_event_at(svc_span_t *s, const char *name, int64_t at_us)
{
    if (s)
        s->tracer->ops->event(s, name, at_us);
}

/* Returns false (out untouched) for a NULL span. */
static inline bool svc_span_context(const svc_span_t *s, svc_trace_ctx_t *out)
{
    if (!s)
        return false;
    s->tracer->ops->context(s, out);
    return true;
}

static inline void svc_span_end(svc_span_t *s, int grpc_code, const char *message)
{
    if (s)
        s->tracer->ops->end(s, grpc_code, message, 0);
}

static inline void svc_span_end_at(svc_span_t *s, int grpc_code, const char *message,
                                   int64_t at_us)
{
    if (s)
        s->tracer->ops->end(s, grpc_code, message, at_us);
}

/* The context to pass to the next hop (a downstream request's traceparent), as an
 * OpenTelemetry SDK propagates a span it did not record:
 * - s sampled: s's own context;
 * - a tracer but no span (this service's sampler dropped the trace, or the parent was not
 *   sampled): the parent's trace id (a fresh one without a parent) with a fresh span id
 *   and the sampled flag clear, so that the next hop's parent-based sampler drops it too
 *   and every hop shares one trace id;
 * - no tracer (tracing off here): the parent as it came, or false (out untouched) without
 *   one: nothing to pass on. */
static inline bool svc_trace_next_hop(svc_tracer_t *t, const svc_span_t *s,
                                      const svc_trace_ctx_t *parent, svc_trace_ctx_t *out)
{
    if (svc_span_context(s, out))
        return true;
    if (!t) {
        if (!parent)
            return false;
        *out = *parent;
        return true;
    }
    svc_trace_ctx_random(out);
    if (parent) {
        for (int i = 0; i < 16; i++)
            out->trace_id[i] = parent->trace_id[i];
        out->flags = (uint8_t)(parent->flags & ~SVC_TRACE_SAMPLED);
    }
    return true;
}
/* NULL is a no-op. */
static inline void svc_tracer_destroy(svc_tracer_t *t)
{
    if (t)
        t->ops->destroy(t);
}

#endif
