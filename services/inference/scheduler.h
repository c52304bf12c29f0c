/*
 * scheduler.h - continuous batching: one thread owns the forward pass and runs every
 * admitted request a step at a time.
 *
 * Requests arrive from rpc threads (inf_sched_submit) into a bounded admission queue.
 * Between steps the scheduler admits the best waiter -- its class (interactive, normal,
 * batch; one class better per priority_aging_us waited), then its arrival -- while the
 * batch has room (forward max_batch) and the KV budget can reserve prompt + max_tokens
 * positions for it (forward_seq_open_tokens, which maps the longest cached prefix of
 * its tokens).  When it does not fit, a running request of a worse class is preempted:
 * its KV is freed, its state (tokens so far, sampler, text hold-back) kept, and it
 * waits again, to be resumed by recomputing prompt + tokens (cheap when the prefix
 * cache still holds them) without losing or repeating a token.  A waiter that does not
 * fit and may preempt no one waits, and so does everything behind it (no overtaking).
 * With every request of one class this is the FIFO order of arrival.  Each step carries
 * one decode token for every request past its prompt, then prompt chunks of admitted
 * requests in admission order until max_step_tokens are used, so a long prompt is
 * processed over several steps while the others keep decoding.  When the batch is
 * empty and fewer than max_batch requests wait, the scheduler waits up to
 * max_queue_delay_us after the oldest arrival for more, so a burst starts together.
 *
 * With a tracer, a request's spans (trace.h) are made on the scheduler thread right after
 * its terminal event, before the sink's release.
 *
 * Events go out through each request's sink from the scheduler thread, as each step
 * finishes: started when a request joins, a token per step, and exactly one terminal
 * event (done, or an error) followed by the sink's release.  How requests end:
 * - max_tokens or the context is reached: done LENGTH; EOS: done EOS (unless
 *   ignore_eos); a stop string: done STOP.
 * - cancel flag (client cancel, stream gone, failed emit): done CANCELLED, whether
 *   queued or running; the sequence's KV is freed before the next step.
 * - deadline: error DEADLINE_EXCEEDED before the first token, done DEADLINE after.
 * - drain grace over: error UNAVAILABLE.  Forward failure: error INTERNAL.
 * - the device failed for good (forward_step returned LS_ERR_DEVICE): every request,
 *   in the failed step, running or queued, gets error UNAVAILABLE
 *   (INF_SCHED_DEVICE_FAILED_MSG); the scheduler is then "failed": it never steps
 *   again, refuses every submit, and calls cfg.on_fatal once.  Nothing in this process
 *   can get the device back, so the owner's answer is to end the process.
 *
 * Threads: every function may be called from any thread; none blocks on model work
 * except inf_sched_drain and inf_sched_destroy, which wait for the scheduler.
 */
#ifndef INF_SCHEDULER_H
#define INF_SCHEDULER_H

#include "model/forward.h"
#include "model/tokenizer.h"
#include "request.h"
#include "svc/reporter.h"
#include "svc/tracer.h"

#include <stdint.h>

typedef struct inf_sched inf_sched_t;

/* The message of the UNAVAILABLE error that requests get once the device failed. */
#define INF_SCHED_DEVICE_FAILED_MSG                                                                \
    "the compute device failed: this instance is restarting; retry on another"

typedef struct {
    int max_queue;              /* requests waiting for admission; one more is refused */
    int64_t max_queue_delay_us; /* how long an idle scheduler waits for a batch to fill */
    /* Called once when the device failed for good, after every request had its terminal
     * event: on the scheduler thread, with no scheduler lock held (it may call any
     * inf_sched_* function but drain and destroy).  reason (one line) is borrowed for the
     * call.  NULL: nobody is told. */
    void (*on_fatal)(void *ud, const char *reason);
    void *on_fatal_ud;
    svc_reporter_t *reporter;   /* metrics (report.h), borrowed; NULL = none */
    const char *pool, *model;   /* their labels, copied; NULL = "" */
    svc_tracer_t *tracer;       /* each request's spans (trace.h), borrowed; NULL = none */
    int64_t step_delay_us;      /* testing: sleep after each step (--step-delay-us); 0 = none */
    /* Priority classes (request.h INF_PRIO_*).  A waiter counts as one class better per
     * full priority_aging_us waited (0 = never), so a low class waits a bounded time;
     * class_max_running[c] caps the running requests of class c (0 = no cap);
     * max_preemptions is how often one request may be preempted (0 = never preempt). */
    int64_t priority_aging_us;
    int class_max_running[INF_PRIO_COUNT];
    int max_preemptions;
} inf_sched_config_t;

/* Starts the scheduler thread over f and tok (both borrowed; they must outlive the
 * scheduler).  Returns the scheduler or NULL with a reason in err. */
inf_sched_t *inf_sched_create(forward_t *f, const tok_t *tok, const inf_sched_config_t *cfg,
                              char *err, size_t err_len);

/* Queues r (its sink set).  Returns LS_OK: the scheduler owns r until it calls
 * r->sink->release.  Returns LS_ERR_FULL when max_queue requests already wait,
 * LS_ERR_DEVICE once the device failed, or LS_ERR_CLOSED once draining began; r then
 * stays the caller's and no event was sent. */
int inf_sched_submit(inf_sched_t *s, inf_request_t *r);

/* Marks r cancelled and wakes the scheduler; r must be submitted and not yet released
 * (the caller guarantees it, e.g. by holding the lock its release takes). */
void inf_sched_cancel(inf_sched_t *s, inf_request_t *r);

/* Requests waiting in the admission queue and running in the batch (a snapshot). */
void inf_sched_counts(inf_sched_t *s, int *queued, int *running);

/* Stops admitting new submits (they get LS_ERR_CLOSED), lets queued and running
 * requests go on for up to grace_us, then ends the rest with UNAVAILABLE.  Returns
 * when no request is left. */
void inf_sched_drain(inf_sched_t *s, int64_t grace_us);

/* Drains with no grace, stops the thread and frees.  NULL is a no-op. */
void inf_sched_destroy(inf_sched_t *s);

#endif
