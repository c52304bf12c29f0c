/*
 * report.h - what the inference service reports through the metrics seam
 * (libs/svc/reporter.h), with the names, kinds and labels of libs/svc/metric_names.h:
 * every metric carries the instance's pool and model (as Info reports them).
 *
 * The scheduler reports per step, per request and the load gauges from its own thread;
 * the service reports the submits it refuses itself from rpc threads.  With a NULL
 * reporter each function is one pointer test.  Label arrays are built on the stack.
 *
 * Threads: inf_report_refused, inf_report_seconds and inf_report_step may be called from
 * any thread; inf_report_limits and inf_report_load by one thread at a time (the
 * scheduler's), since they keep what the gauges last said.
 */
#ifndef INF_REPORT_H
#define INF_REPORT_H

#include "model/forward.h"
#include "svc/metric_names.h"
#include "svc/reporter.h"

#include <stdint.h>

/* Reasons of M_INF_REFUSED. */
#define INF_REFUSED_QUEUE_FULL "queue_full"   /* --max-queue requests already wait */
#define INF_REFUSED_TOO_LONG "too_long"       /* no room in the context or the KV budget */
#define INF_REFUSED_DRAINING "draining"       /* the server is shutting down */
#define INF_REFUSED_DEVICE_LOST "device_lost" /* the compute device failed for good */

typedef struct {
    svc_reporter_t *reporter; /* NULL: report nothing */
    svc_label_t labels[2];    /* pool, model (values owned) */
    /* the gauges (one thread) */
    int64_t queue_limit, kv_blocks_total;
    int64_t sent_waiting, sent_running, sent_kv_used; /* -1 before the first report */
    int64_t refresh_at_us;                            /* every gauge is sent again from then on */
} inf_report_t;

/* Sets rep up for reporter r (borrowed; NULL: nothing is reported) with pool and model
 * (copied; NULL reads as ""). */
void inf_report_init(inf_report_t *rep, svc_reporter_t *r, const char *pool, const char *model);

/* Frees what rep owns.  Safe on a zeroed rep. */
void inf_report_free(inf_report_t *rep);

/* One submit refused at admission, for reason (an INF_REFUSED_* value). */
void inf_report_refused(const inf_report_t *rep, const char *reason);

/* Observes a span of span_us microseconds on the histogram name (M_INF_QUEUE, ...).
 * A negative span (clock values not yet set) is not observed. */
void inf_report_seconds(const inf_report_t *rep, const char *name, int64_t span_us);

/* One forward step that took step_us with batch sequences, prefilling prompt_tokens
 * prompt tokens and generating generated tokens. */
void inf_report_step(const inf_report_t *rep, int64_t step_us, int batch, int prompt_tokens,
                     int generated);

/* n prompt tokens of an admitted request found in the prefix cache (0 counts nothing). */
void inf_report_prefix_hit(const inf_report_t *rep, int n);

/* One running request of class prio ("interactive", ...) preempted. */
void inf_report_preempted(const inf_report_t *rep, const char *prio);

/* The gauges that never change: the queue's bound and the KV blocks in all.  Sent now
 * and again with every refresh. */
void inf_report_limits(inf_report_t *rep, int64_t queue_limit, int64_t kv_blocks_total);

/* The load now: requests waiting and running, and the KV blocks f has in use.  Sends the
 * gauges that changed since the last call, and every gauge once INF_REPORT_REFRESH_US
 * passed since they were last all sent (so a sample the reporter dropped does not stay
 * lost while the load holds still). */
void inf_report_load(inf_report_t *rep, int waiting, int running, const forward_t *f,
                     int64_t now_us);

#define INF_REPORT_REFRESH_US 10000000 /* 10 s */

#endif
