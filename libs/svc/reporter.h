/*
 * reporter.h - the metrics seam: what a service measures, handed to whoever collects it.
 *
 * Services call the svc_metric_* functions below on their hot paths; with no reporter
 * configured (NULL) each is one test of a pointer and nothing else.  A reporter
 * (libs/svc's runtime owns the one a service uses) must never block or slow serving:
 * it buffers within a bound and drops, counting what it dropped, when its collector is
 * slow or away.
 *
 * Names follow Prometheus conventions (llmserve_<what>_<unit>, counters end in _total,
 * durations in seconds); labels are a few key/value pairs with small value sets (pool,
 * model, method, code), never request ids.  Thread-safe: every operation may be called
 * from any thread at once; name, labels and their strings are borrowed for the call.
 */
#ifndef SVC_REPORTER_H
#define SVC_REPORTER_H

#include <stddef.h>

typedef struct {
    const char *key;
    const char *value;
} svc_label_t;

typedef struct svc_reporter svc_reporter_t;

typedef struct {
    /* Adds delta (>= 0) to a counter. */
    void (*counter_add)(svc_reporter_t *r, const char *name, const svc_label_t *labels,
                        size_t n_labels, double delta);
    /* Sets a gauge to value. */
    void (*gauge_set)(svc_reporter_t *r, const char *name, const svc_label_t *labels,
                      size_t n_labels, double value);
    /* Records one observation of a distribution (a latency, a batch size). */
    void (*observe)(svc_reporter_t *r, const char *name, const svc_label_t *labels, size_t n_labels,
                    double value);
    /* Flushes what it can within a short bound and frees the reporter. */
    void (*destroy)(svc_reporter_t *r);
} svc_reporter_ops_t;

/* Implementations embed this first. */
struct svc_reporter {
    const svc_reporter_ops_t *ops;
};

static inline void svc_metric_add(svc_reporter_t *r, const char *name, const svc_label_t *labels,
                                  size_t n_labels, double delta)
{
    if (r)
        r->ops->counter_add(r, name, labels, n_labels, delta);
}

static inline void svc_metric_set(svc_reporter_t *r, const char *name, const svc_label_t *labels,
                                  size_t n_labels, double value)
{
    if (r)
        r->ops->gauge_set(r, name, labels, n_labels, value);
}

static inline void svc_metric_observe(svc_reporter_t *r, const char *name,
                                      const svc_label_t *labels, size_t n_labels, double value)
{
    if (r)
        r->ops->observe(r, name, labels, n_labels, value);
}

/* NULL is a no-op. */
static inline void svc_reporter_destroy(svc_reporter_t *r)
{
    if (r)
        r->ops->destroy(r);
}

#endif
