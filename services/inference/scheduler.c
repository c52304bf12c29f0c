/*
 * scheduler.c - the batching loop.
 *
 * Lock rules: s->mu guards the admission queue (q_head/q_tail/n_queued), n_active,
 * draining, drain_deadline_us, failed and stop.  The running batch, the step buffers and the
 * forward_t belong to the scheduler thread alone and need no lock, except that
 * admission (forward_seq_open_tokens) and preemption (which puts a running request back
 * in the queue) happen under s->mu because they change the queue.  No
 * sink callback (emit, release) is ever called with s->mu held: sinks take their own
 * stream locks, and rpc threads take a stream lock before s->mu (submit, cancel).
 * cfg.on_fatal is called the same way, with no lock held.
 * The metrics reporter may be called with s->mu held: it never blocks or calls back.
 *
 * Nothing allocates in the loop: the batch, the step items and the text buffers are
 * sized at create time from max_batch and the tokenizer's longest piece.
 */
#define _GNU_SOURCE
#include "scheduler.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "report.h"
#include "trace.h"

#include <errno.h>
#include <grpc/status.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Why a queued request must leave the queue (inf_request_t.end). */
enum {
    END_NONE = 0,
    END_CANCELLED,
    END_DEADLINE,
    END_SHUTDOWN,
    END_NEVER_FITS, /* the KV budget cannot hold its reservation even when empty */
    END_INTERNAL,   /* forward_seq_open refused the reservation */
    END_DEVICE,     /* the device failed for good */
    END_RESUMED,    /* a resume token already ended generation (r->resume_end) */
};

struct inf_sched {
    forward_t *f;
    const tok_t *tok;
    inf_sched_config_t cfg;
    int max_batch;
    int max_step_tokens;
    pthread_t thread;

    pthread_mutex_t mu;
    pthread_cond_t wake;    /* to the scheduler: submit, cancel, drain, stop */
    pthread_cond_t idle_cv; /* from the scheduler: nothing queued or running */
    inf_request_t *q_head, *q_tail;
    int n_queued;
    int n_active; /* copy of n_running, for inf_sched_counts and drain */
    bool draining;
    int64_t drain_deadline_us; /* INT64_MAX until drain */
    bool failed;               /* the device failed for good: nothing is admitted again */
    bool stop;
    inf_report_t rep; /* the load gauges in it: scheduler thread only */
    int class_running[INF_PRIO_COUNT]; /* running requests by class (scheduler thread) */
    inf_trace_t trace; /* model and backend owned (scheduler thread only) */

    /* scheduler thread only */
    inf_request_t **running; /* admission order */
    int n_running;
    inf_request_t **admitted; /* joined in this round, for their started events */
    forward_item_t *items;
    inf_request_t **item_req;
    int *item_prev;   /* token before the picked one, for tok_piece */
    bool *item_picks; /* the item's pick is a generated token (not a prefill chunk's) */
    int *out_tokens;
    inf_text_scratch_t text;
    char *evtext; /* one token event's text, NUL-terminated */
    size_t evtext_cap;
    /* Sinks with a flush that were emitted to this round (scheduler thread only). */
    const inf_sink_t *round_sinks[4];
    int n_round_sinks;
    int step_generated; /* tokens generated in the step being handed out */
};

/* ---- events --------------------------------------------------------------------- */

static void flush_round(inf_sched_t *s)
{
    for (int i = 0; i < s->n_round_sinks; i++)
        s->round_sinks[i]->flush(s->round_sinks[i]);
    s->n_round_sinks = 0;
}

/* Notes that r's sink holds events until the round ends. */
static void touch_sink(inf_sched_t *s, const inf_sink_t *k)
{
    if (!k->flush)
        return;
    for (int i = 0; i < s->n_round_sinks; i++)
        if (s->round_sinks[i] == k)
            return;
    if (s->n_round_sinks == (int)(sizeof(s->round_sinks) / sizeof(s->round_sinks[0])))
        flush_round(s); /* more sinks than slots: send what they hold now */
    s->round_sinks[s->n_round_sinks++] = k;
}

static void emit(inf_request_t *r, Llmserve__V1__InferenceEvent *ev)
{
    if (r->sink_dead)
        return;
    touch_sink(r->sched, r->sink);
    ev->request_id = r->id;
    if (r->sink->emit(r, ev) != LS_OK) {
        r->sink_dead = true;
        atomic_store(&r->cancel, true);
    }
}

static void emit_started(inf_request_t *r)
{
    r->started_sent = true;
    Llmserve__V1__InferenceStarted st = LLMSERVE__V1__INFERENCE_STARTED__INIT;
    st.queue_us = (uint64_t)(r->admit_us - r->arrival_us);
    st.prompt_tokens = (uint32_t)r->n_prompt;
    st.batch_size = (uint32_t)r->batch_size;
    st.cached_tokens = (uint32_t)r->n_cached;
    Llmserve__V1__InferenceEvent ev = LLMSERVE__V1__INFERENCE_EVENT__INIT;
    ev.kind_case = LLMSERVE__V1__INFERENCE_EVENT__KIND_STARTED;
    ev.started = &st;
    emit(r, &ev);
}

static void emit_token(inf_request_t *r, char *text, int id, int index)
{
    Llmserve__V1__InferenceToken tk = LLMSERVE__V1__INFERENCE_TOKEN__INIT;
    tk.text = text;
    tk.id = id;
    tk.index = (uint32_t)index;
    Llmserve__V1__InferenceEvent ev = LLMSERVE__V1__INFERENCE_EVENT__INIT;
    ev.kind_case = LLMSERVE__V1__INFERENCE_EVENT__KIND_TOKEN;
    ev.token = &tk;
    emit(r, &ev);
}

static uint64_t span_us(int64_t from, int64_t to)
{
    return from > 0 && to > from ? (uint64_t)(to - from) : 0;
}

static const char *reason_name(Llmserve__V1__FinishReason reason)
{
    switch (reason) {
    case LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH:
        return "length";
    case LLMSERVE__V1__FINISH_REASON__FINISH_REASON_STOP:
        return "stop";
    case LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS:
        return "eos";
    case LLMSERVE__V1__FINISH_REASON__FINISH_REASON_CANCELLED:
        return "cancelled";
    case LLMSERVE__V1__FINISH_REASON__FINISH_REASON_DEADLINE:
        return "deadline";
    default:
        return "other";
    }
}

/* Terminal: done with reason, then release. */
static void finish_done(inf_request_t *r, Llmserve__V1__FinishReason reason, int64_t now)
{
    Llmserve__V1__Usage usage = LLMSERVE__V1__USAGE__INIT;
    usage.prompt_tokens = (uint32_t)r->n_prompt;
    usage.completion_tokens = (uint32_t)r->n_generated;
    usage.cached_prompt_tokens = (uint32_t)r->n_cached;
    Llmserve__V1__Timings tm = LLMSERVE__V1__TIMINGS__INIT;
    tm.inference_queue_us = span_us(r->arrival_us, r->admit_us);
    tm.prefill_us = span_us(r->admit_us, r->first_token_us);
    tm.decode_us = span_us(r->first_token_us, r->last_token_us);
    tm.ttft_us = span_us(r->arrival_us, r->first_token_us);
    tm.total_us = span_us(r->arrival_us, now);
    Llmserve__V1__InferenceDone done = LLMSERVE__V1__INFERENCE_DONE__INIT;
    done.finish_reason = reason;
    done.usage = &usage;
    done.timings = &tm;
    Llmserve__V1__InferenceEvent ev = LLMSERVE__V1__INFERENCE_EVENT__INIT;
    ev.kind_case = LLMSERVE__V1__INFERENCE_EVENT__KIND_DONE;
    ev.done = &done;
    emit(r, &ev);
    if (r->first_token_us > 0)
        inf_report_seconds(&r->sched->rep, M_INF_DECODE, r->last_token_us - r->first_token_us);
    LS_LOG_DEBUG("sched",
                 "request done id=%s reason=%s prompt_tokens=%d completion_tokens=%d "
                 "queue_us=%llu ttft_us=%llu total_us=%llu",
                 r->id, reason_name(reason), r->n_prompt, r->n_generated,
                 (unsigned long long)tm.inference_queue_us, (unsigned long long)tm.ttft_us,
                 (unsigned long long)tm.total_us);
    if (r->sched->trace.tracer) {
        bool cancelled = reason == LLMSERVE__V1__FINISH_REASON__FINISH_REASON_CANCELLED;
        inf_trace_end_t end = {.code = cancelled ? GRPC_STATUS_CANCELLED : GRPC_STATUS_OK,
                               .message = cancelled ? "request cancelled" : NULL,
                               .finish_reason = svc_finish_reason_name(reason),
                               .at_us = now};
        inf_trace_request(&r->sched->trace, r, &end);
    }
    r->sink->release(r);
}

/* Terminal: error with a gRPC code, then release. */
static void finish_error(inf_request_t *r, grpc_status_code code, const char *msg)
{
    Llmserve__V1__Status st = LLMSERVE__V1__STATUS__INIT;
    st.code = (int32_t)code;
    st.message = (char *)msg;
    Llmserve__V1__InferenceEvent ev = LLMSERVE__V1__INFERENCE_EVENT__INIT;
    ev.kind_case = LLMSERVE__V1__INFERENCE_EVENT__KIND_ERROR;
    ev.error = &st;
    emit(r, &ev);
    LS_LOG_DEBUG("sched", "request failed id=%s code=%d msg=\"%s\"", r->id, (int)code, msg);
    if (r->sched->trace.tracer) {
        inf_trace_end_t end = {.code = (int)code, .message = msg, .finish_reason = "error"};
        inf_trace_request(&r->sched->trace, r, &end);
    }
    r->sink->release(r);
}

/* ---- the admission queue (s->mu held) ----------------------------------------------- */

static bool past(int64_t deadline_us, int64_t now)
{
    return deadline_us != INT64_MAX && now >= deadline_us;
}

/* Why queued r must leave now, or END_NONE. */
static int do_queued_end(const inf_sched_t *s, const inf_request_t *r, int64_t now)
{
    if (atomic_load(&r->cancel))
        return END_CANCELLED;
    if (past(r->deadline_us, now))
        return END_DEADLINE;
    if (past(s->drain_deadline_us, now))
        return END_SHUTDOWN;
    return END_NONE;
}

/* Moves every queued request that must leave onto *out (linked by queue_next). */
static void do_sweep_queue(inf_sched_t *s, int64_t now, inf_request_t **out)
{
    inf_request_t **link = &s->q_head;
    inf_request_t *prev = NULL;
    while (*link) {
        inf_request_t *r = *link;
        int end = do_queued_end(s, r, now);
        if (end == END_NONE) {
            prev = r;
            link = &r->queue_next;
            continue;
        }
        *link = r->queue_next;
        if (s->q_tail == r)
            s->q_tail = prev;
        s->n_queued--;
        r->end = end;
        r->queue_next = *out;
        *out = r;
    }
}

/* Takes r (after prev, NULL for the head) off the queue. */
static void do_unlink(inf_sched_t *s, inf_request_t *r, inf_request_t *prev)
{
    if (prev)
        prev->queue_next = r->queue_next;
    else
        s->q_head = r->queue_next;
    if (s->q_tail == r)
        s->q_tail = prev;
    r->queue_next = NULL;
    s->n_queued--;
}

static void do_append(inf_sched_t *s, inf_request_t *r)
{
    r->queue_next = NULL;
    if (s->q_tail)
        s->q_tail->queue_next = r;
    else
        s->q_head = r;
    s->q_tail = r;
    s->n_queued++;
}

/* The class r counts as now: one better per full aging period it has waited. */
static int do_eff_class(const inf_sched_t *s, const inf_request_t *r, int64_t now)
{
    int c = r->prio;
    if (s->cfg.priority_aging_us > 0 && now > r->enqueue_us) {
        int64_t up = (now - r->enqueue_us) / s->cfg.priority_aging_us;
        c = up >= c ? 0 : c - (int)up;
    }
    return c;
}

static bool do_class_full(const inf_sched_t *s, int prio)
{
    int limit = s->cfg.class_max_running[prio];
    return limit > 0 && s->class_running[prio] >= limit;
}

/* The queued request to admit next: best class as aged, then earliest arrival (a
 * preempted request keeps its arrival, so it goes before later ones of its class); a
 * class at its running limit is passed over.  *prev_out = its predecessor. */
static inf_request_t *do_best(const inf_sched_t *s, int64_t now, inf_request_t **prev_out)
{
    inf_request_t *best = NULL, *best_prev = NULL, *prev = NULL;
    int best_c = INF_PRIO_COUNT;
    for (inf_request_t *r = s->q_head; r; prev = r, r = r->queue_next) {
        if (do_class_full(s, r->prio))
            continue;
        int c = do_eff_class(s, r, now);
        if (!best || c < best_c || (c == best_c && r->arrival_us < best->arrival_us)) {
            best = r;
            best_c = c;
            best_prev = prev;
        }
    }
    *prev_out = best_prev;
    return best;
}

/* The running request that a waiter of class cls (its own, not as aged: aging orders the
 * queue but never makes equals preempt each other) may preempt: a worse class, not
 * admitted in this round, preempted fewer than max_preemptions times; the worst class,
 * then the latest admitted (the least work to redo).  NULL when there is none. */
static inf_request_t *do_victim(const inf_sched_t *s, int cls, int64_t now)
{
    inf_request_t *v = NULL;
    for (int i = 0; i < s->n_running; i++) {
        inf_request_t *q = s->running[i];
        if (q->prio <= cls || q->preemptions >= s->cfg.max_preemptions || q->admit_us >= now)
            continue;
        if (!v || q->prio > v->prio || (q->prio == v->prio && q->admit_us > v->admit_us))
            v = q;
    }
    return v;
}

/* True while an idle scheduler should wait for more arrivals before starting. */
static bool do_hold_for_batch(const inf_sched_t *s, int64_t now)
{
    return s->n_running == 0 && !s->draining && s->q_head && s->n_queued < s->max_batch &&
           now < s->q_head->arrival_us + s->cfg.max_queue_delay_us;
}

static void leave_batch(inf_sched_t *s, inf_request_t *r);

/* Takes running v out of the batch for a waiter of a better class: its KV is freed (its
 * full blocks stay in the prefix cache while the budget allows), everything else is
 * kept, and it waits again to be resumed by recomputing its tokens. */
static void do_preempt(inf_sched_t *s, inf_request_t *v, int64_t now)
{
    leave_batch(s, v);
    v->n_fed = 0;
    v->preemptions++;
    v->enqueue_us = now;
    do_append(s, v);
    inf_report_preempted(&s->rep, inf_prio_name(v->prio));
    LS_LOG_DEBUG("sched", "preempted id=%s class=%s generated=%d times=%d", v->id,
                 inf_prio_name(v->prio), v->n_generated, v->preemptions);
}

/* Admits the best waiters (do_best) while the batch and the KV budget have room,
 * preempting running requests of a worse class when they do not.  A waiter that does
 * not fit and may preempt no one waits, and so does everything behind it (nothing
 * overtakes it).  Requests that can never be admitted, or whose resume tokens already
 * ended them, go onto *out.  Returns how many joined. */
static int do_admit(inf_sched_t *s, int64_t now, inf_request_t **out)
{
    int n = 0;
    for (;;) {
        inf_request_t *prev;
        inf_request_t *r = do_best(s, now, &prev);
        if (!r)
            break;
        if (r->resume_end) {
            do_unlink(s, r, prev);
            r->end = END_RESUMED;
            r->queue_next = *out;
            *out = r;
            continue;
        }
        int cls = r->prio;
        int fill = r->n_prompt + r->n_generated;
        int seq = LS_ERR_FULL, cached = 0;
        for (;;) {
            if (s->n_running < s->max_batch) {
                seq = forward_seq_open_tokens(s->f, r->prompt, fill, r->n_prompt + r->max_tokens,
                                              &cached);
                if (seq != LS_ERR_FULL)
                    break;
            }
            inf_request_t *v = s->cfg.max_preemptions > 0 ? do_victim(s, cls, now) : NULL;
            if (!v)
                break;
            do_preempt(s, v, now);
            /* the victim went to the tail: r's predecessor may have changed */
            prev = NULL;
            for (inf_request_t *q = s->q_head; q != r; q = q->queue_next)
                prev = q;
        }
        if (seq == LS_ERR_FULL && s->n_running > 0)
            break; /* waits for running requests to free room */
        do_unlink(s, r, prev);
        if (seq < 0) {
            r->end = seq == LS_ERR_FULL ? END_NEVER_FITS : END_INTERNAL;
            r->queue_next = *out;
            *out = r;
            continue;
        }
        r->seq = seq;
        r->admit_us = now;
        r->n_fill = fill;
        r->n_fed = cached;
        r->n_cached = cached;
        inf_report_prefix_hit(&s->rep, cached);
        s->running[s->n_running++] = r;
        s->class_running[r->prio]++;
        r->batch_size = s->n_running;
        s->admitted[n] = r;
        n++;
    }
    return n;
}

/* When the idle scheduler must look again: a queued deadline, the end of the batch
 * hold, or the drain deadline.  INT64_MAX = only when woken. */
static int64_t do_next_wake(const inf_sched_t *s)
{
    /* Only times that change something count: a drain deadline that passed with an
     * empty queue would make the wait return at once, forever, holding s->mu. */
    int64_t t = s->q_head ? s->drain_deadline_us : INT64_MAX;
    for (const inf_request_t *r = s->q_head; r; r = r->queue_next)
        if (r->deadline_us < t)
            t = r->deadline_us;
    if (s->q_head && !s->draining) {
        int64_t hold = s->q_head->arrival_us + s->cfg.max_queue_delay_us;
        if (hold < t)
            t = hold;
    }
    return t;
}

static void do_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t until_us)
{
    if (until_us == INT64_MAX) {
        pthread_cond_wait(cv, mu);
        return;
    }
    int64_t left = until_us - ls_now_us();
    if (left <= 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = ts.tv_nsec + (left % 1000000) * 1000;
    ts.tv_sec += left / 1000000 + ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    pthread_cond_timedwait(cv, mu, &ts);
}

/* Ends a request taken off the queue (no lock held). */
static void end_queued(inf_sched_t *s, inf_request_t *r, int64_t now)
{
    char msg[160];
    switch (r->end) {
    case END_CANCELLED:
        finish_done(r, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_CANCELLED, now);
        return;
    case END_DEADLINE:
        if (r->n_generated > 0) /* preempted or resumed: the client has tokens */
            finish_done(r, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_DEADLINE, now);
        else
            finish_error(r, GRPC_STATUS_DEADLINE_EXCEEDED, "deadline passed while queued");
        return;
    case END_RESUMED:
        if (!r->started_sent) {
            r->admit_us = now;
            emit_started(r);
        }
        finish_done(r, (Llmserve__V1__FinishReason)r->resume_end, now);
        return;
    case END_SHUTDOWN:
        finish_error(r, GRPC_STATUS_UNAVAILABLE, "server shutting down");
        return;
    case END_DEVICE:
        finish_error(r, GRPC_STATUS_UNAVAILABLE, INF_SCHED_DEVICE_FAILED_MSG);
        return;
    case END_NEVER_FITS:
        inf_report_refused(&s->rep, INF_REFUSED_TOO_LONG);
        snprintf(msg, sizeof(msg),
                 "request needs %d KV positions; the KV budget of %lld cannot hold them",
                 r->n_prompt + r->max_tokens, (long long)forward_config(s->f)->kv_budget_tokens);
        finish_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
        return;
    default:
        finish_error(r, GRPC_STATUS_INTERNAL, "the forward pass refused the KV reservation");
        return;
    }
}

/* ---- the running batch (scheduler thread) ------------------------------------------- */

/* Takes r out of the batch and frees its KV (the caller ends it). */
static void leave_batch(inf_sched_t *s, inf_request_t *r)
{
    forward_seq_close(s->f, r->seq);
    r->seq = -1;
    s->class_running[r->prio]--;
    for (int i = 0; i < s->n_running; i++) {
        if (s->running[i] == r) {
            memmove(&s->running[i], &s->running[i + 1],
                    (size_t)(s->n_running - i - 1) * sizeof(*s->running));
            s->n_running--;
            return;
        }
    }
    LS_ASSERT(!"request not in the batch");
}

/* Ends running requests that were cancelled, ran out of time, or outlived the drain. */
static void sweep_running(inf_sched_t *s, int64_t now, int64_t drain_deadline_us)
{
    for (int i = 0; i < s->n_running;) {
        inf_request_t *r = s->running[i];
        if (atomic_load(&r->cancel)) {
            leave_batch(s, r);
            finish_done(r, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_CANCELLED, now);
        } else if (past(r->deadline_us, now)) {
            leave_batch(s, r);
            if (r->n_generated == 0)
                finish_error(r, GRPC_STATUS_DEADLINE_EXCEEDED,
                             "deadline passed before the first token");
            else
                finish_done(r, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_DEADLINE, now);
        } else if (past(drain_deadline_us, now)) {
            leave_batch(s, r);
            finish_error(r, GRPC_STATUS_UNAVAILABLE, "server shutting down");
        } else {
            i++;
        }
    }
}

/* Handles the token r generated after prev: sends its text, and ends r (out of the
 * batch, terminal event, released) when it was the last. */
static void take_token(inf_sched_t *s, inf_request_t *r, int prev, int token, int64_t now)
{
    if (r->first_token_us == 0) { /* the first token this instance made */
        r->first_token_us = now;
        inf_report_seconds(&s->rep, M_INF_PREFILL, now - r->admit_us);
    }
    r->last_token_us = now;
    bool stopped = false;
    if (inf_request_is_eos(r, token)) {
        /* Held-back text still belongs to the answer: it goes out with the EOS token
         * (not counted in completion_tokens). */
        size_t len = inf_request_flush_text(r, &s->text, s->evtext, s->evtext_cap - 1, &stopped);
        if (len > 0) {
            s->evtext[len] = '\0';
            emit_token(r, s->evtext, token, r->n_generated);
        }
        leave_batch(s, r);
        finish_done(r,
                    stopped ? LLMSERVE__V1__FINISH_REASON__FINISH_REASON_STOP
                            : LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS,
                    now);
        return;
    }
    int index = r->n_generated++;
    r->prompt[r->n_prompt + index] = token; /* room: index < max_tokens */
    s->step_generated++;
    size_t len = inf_request_push_text(r, s->tok, prev, token, &s->text, s->evtext,
                                       s->evtext_cap - 1, &stopped);
    bool length = !stopped && r->n_generated >= r->max_tokens;
    if (length)
        len +=
            inf_request_flush_text(r, &s->text, s->evtext + len, s->evtext_cap - 1 - len, &stopped);
    s->evtext[len] = '\0';
    emit_token(r, s->evtext, token, index);
    r->last_token = token;
    if (!stopped && !length)
        return;
    leave_batch(s, r);
    finish_done(r,
                stopped ? LLMSERVE__V1__FINISH_REASON__FINISH_REASON_STOP
                        : LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH,
                now);
}

/* The device failed for good: the scheduler becomes failed (submits are refused from now
 * on), every request of the batch and of the queue gets error UNAVAILABLE, and the owner
 * hears of it once.  Requests of other steps could only fail the same way, so none is
 * kept; with the batch and the queue empty and no admission, no step runs again. */
static void fail_device(inf_sched_t *s, int step_items, int64_t now)
{
    pthread_mutex_lock(&s->mu);
    s->failed = true;
    inf_request_t *queued = s->q_head;
    int n_queued = s->n_queued;
    s->q_head = s->q_tail = NULL;
    s->n_queued = 0;
    /* In hand until their events are out, as sched_main counts them, so a drain that
     * waits does not return before the last terminal event. */
    s->n_active = s->n_running + n_queued;
    pthread_mutex_unlock(&s->mu);

    LS_LOG_ERROR("sched",
                 "compute device failed for good, ending every request with UNAVAILABLE "
                 "backend=%s device=\"%s\" step_items=%d running=%d queued=%d",
                 forward_backend_name(s->f), forward_device_name(s->f), step_items, s->n_running,
                 n_queued);
    /* For the owner's log, inside its own quoted field: no quotes. */
    char reason[256];
    snprintf(reason, sizeof(reason), "the compute device failed for good (backend %s, device %s)",
             forward_backend_name(s->f), forward_device_name(s->f));
    while (s->n_running > 0) {
        inf_request_t *r = s->running[s->n_running - 1];
        leave_batch(s, r);
        finish_error(r, GRPC_STATUS_UNAVAILABLE, INF_SCHED_DEVICE_FAILED_MSG);
    }
    while (queued) {
        inf_request_t *r = queued;
        queued = r->queue_next;
        r->queue_next = NULL;
        r->end = END_DEVICE;
        end_queued(s, r, now);
    }
    flush_round(s);

    pthread_mutex_lock(&s->mu);
    s->n_active = 0;
    pthread_mutex_unlock(&s->mu);
    if (s->cfg.on_fatal)
        s->cfg.on_fatal(s->cfg.on_fatal_ud, reason);
}

/* Builds one step from the batch, runs it and hands out the tokens. */
static void run_step(inf_sched_t *s)
{
    int budget = s->max_step_tokens;
    int n = 0;
    for (int i = 0; i < s->n_running && budget > 0; i++) {
        inf_request_t *r = s->running[i];
        if (r->n_fed < r->n_fill)
            continue;
        forward_item_t *it = &s->items[n];
        it->seq = r->seq;
        it->tokens = &r->last_token;
        it->n_tokens = 1;
        it->pos = r->n_fed;
        it->sampler = &r->sampler;
        it->coin = sampler_coin(&r->sampler);
        s->item_req[n] = r;
        s->item_prev[n] = r->last_token;
        s->item_picks[n] = true;
        budget--;
        n++;
    }
    int prompt_tokens = 0;
    for (int i = 0; i < s->n_running && budget > 0; i++) {
        inf_request_t *r = s->running[i];
        if (r->n_fed >= r->n_fill)
            continue;
        int chunk = r->n_fill - r->n_fed;
        if (chunk > budget)
            chunk = budget;
        bool last = r->n_fed + chunk == r->n_fill;
        forward_item_t *it = &s->items[n];
        it->seq = r->seq;
        it->tokens = r->prompt + r->n_fed;
        it->n_tokens = chunk;
        it->pos = r->n_fed;
        it->sampler = &r->sampler;
        /* Only the pick after the whole prompt is used; drawing no coin for the other
         * chunks keeps a seeded request's tokens independent of how it was chunked. */
        it->coin = last ? sampler_coin(&r->sampler) : 0.0f;
        s->item_req[n] = r;
        s->item_prev[n] = r->prompt[r->n_fill - 1];
        s->item_picks[n] = last;
        budget -= chunk;
        prompt_tokens += chunk;
        n++;
    }
    if (n == 0)
        return;
    int64_t start = ls_now_us();
    int rc = forward_step(s->f, s->items, n, s->out_tokens, NULL);
    int64_t now = ls_now_us();
    if (rc == LS_ERR_DEVICE) {
        fail_device(s, n, now);
        return;
    }
    if (rc != LS_OK) {
        LS_LOG_ERROR("sched", "forward step failed items=%d err=%s", n, ls_strerror(rc));
        char msg[128];
        snprintf(msg, sizeof(msg), "forward pass failed: %s", ls_strerror(rc));
        for (int k = 0; k < n; k++) {
            leave_batch(s, s->item_req[k]);
            finish_error(s->item_req[k], GRPC_STATUS_INTERNAL, msg);
        }
        return;
    }
    s->step_generated = 0;
    for (int k = 0; k < n; k++) {
        inf_request_t *r = s->item_req[k];
        r->n_fed += s->items[k].n_tokens;
        if (s->item_picks[k])
            take_token(s, r, s->item_prev[k], s->out_tokens[k], now);
    }
    inf_report_step(&s->rep, now - start, n, prompt_tokens, s->step_generated);
    if (s->cfg.step_delay_us > 0) {
        flush_round(s); /* what the step produced goes out before the pause */
        struct timespec ts = {.tv_sec = (time_t)(s->cfg.step_delay_us / 1000000),
                              .tv_nsec = (long)(s->cfg.step_delay_us % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
}

/* ---- the thread ---------------------------------------------------------------------- */

static void *sched_main(void *arg)
{
    inf_sched_t *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int64_t now = ls_now_us();
        inf_request_t *leaving = NULL;
        do_sweep_queue(s, now, &leaving);
        int n_admitted = do_hold_for_batch(s, now) ? 0 : do_admit(s, now, &leaving);
        /* Requests in hand count as active until their events are out, so a drain
         * does not return while a terminal event is still being sent. */
        s->n_active = s->n_running;
        for (const inf_request_t *r = leaving; r; r = r->queue_next)
            s->n_active++;
        inf_report_load(&s->rep, s->n_queued, s->n_running, s->f, now);
        if (!leaving && n_admitted == 0 && s->n_running == 0) {
            if (s->n_queued == 0) {
                pthread_cond_broadcast(&s->idle_cv);
                if (s->stop)
                    break;
            }
            do_wait_until(&s->wake, &s->mu, do_next_wake(s));
            continue;
        }
        int64_t drain_deadline_us = s->drain_deadline_us;
        pthread_mutex_unlock(&s->mu);

        while (leaving) {
            inf_request_t *r = leaving;
            leaving = r->queue_next;
            r->queue_next = NULL;
            end_queued(s, r, now);
        }
        for (int i = 0; i < n_admitted; i++) {
            inf_request_t *r = s->admitted[i];
            if (r->started_sent)
                continue; /* back after a preemption: it said started before */
            inf_report_seconds(&s->rep, M_INF_QUEUE, r->admit_us - r->arrival_us);
            emit_started(r);
        }
        sweep_running(s, ls_now_us(), drain_deadline_us);
        run_step(s);
        flush_round(s);

        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- public -------------------------------------------------------------------------- */

static void free_buffers(inf_sched_t *s)
{
    free(s->running);
    free(s->admitted);
    free(s->items);
    free(s->item_req);
    free(s->item_prev);
    free(s->item_picks);
    free(s->out_tokens);
    free(s->text.utf8);
    free(s->evtext);
    inf_report_free(&s->rep);
    free((char *)s->trace.model);
    free((char *)s->trace.backend);
}

inf_sched_t *inf_sched_create(forward_t *f, const tok_t *tok, const inf_sched_config_t *cfg,
                              char *err, size_t err_len)
{
    const forward_config_t *fc = forward_config(f);
    if (fc->max_step_tokens < fc->max_batch) {
        snprintf(err, err_len, "max_step_tokens (%d) must be at least max_batch (%d)",
                 fc->max_step_tokens, fc->max_batch);
        return NULL;
    }
    inf_sched_t *s = ls_xcalloc(1, sizeof(*s));
    s->f = f;
    s->tok = tok;
    s->cfg = *cfg;
    s->max_batch = fc->max_batch;
    s->max_step_tokens = fc->max_step_tokens;
    s->drain_deadline_us = INT64_MAX;
    inf_report_init(&s->rep, cfg->reporter, cfg->pool, cfg->model);
    inf_report_limits(&s->rep, cfg->max_queue, fc->kv_budget_tokens / FORWARD_KV_BLOCK);
    s->trace.tracer = cfg->tracer;
    s->trace.model = ls_xstrdup(cfg->model ? cfg->model : "");
    s->trace.backend = ls_xstrdup(forward_backend_name(f));
    size_t nb = (size_t)s->max_batch;
    s->running = calloc(nb, sizeof(*s->running));
    s->admitted = calloc(nb, sizeof(*s->admitted));
    s->items = calloc(nb, sizeof(*s->items));
    s->item_req = calloc(nb, sizeof(*s->item_req));
    s->item_prev = calloc(nb, sizeof(*s->item_prev));
    s->item_picks = calloc(nb, sizeof(*s->item_picks));
    s->out_tokens = calloc(nb, sizeof(*s->out_tokens));
    size_t piece = inf_longest_piece(tok);
    s->text.utf8_cap = piece + 8;
    s->text.utf8 = malloc(s->text.utf8_cap);
    /* A token event carries a push and, on the last token, a flush. */
    s->evtext_cap = INF_TEXT_PUSH_NEED(piece) + INF_TEXT_FLUSH_NEED + 1;
    s->evtext = malloc(s->evtext_cap);
    if (!s->running || !s->admitted || !s->items || !s->item_req || !s->item_prev ||
        !s->item_picks || !s->out_tokens || !s->text.utf8 || !s->evtext) {
        snprintf(err, err_len, "out of memory for a batch of %d", s->max_batch);
        goto out_free;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    pthread_cond_init(&s->idle_cv, NULL);
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        snprintf(err, err_len, "cannot start the scheduler thread");
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->wake);
        pthread_cond_destroy(&s->idle_cv);
        goto out_free;
    }
    return s;

out_free:
    free_buffers(s);
    free(s);
    return NULL;
}

int inf_sched_submit(inf_sched_t *s, inf_request_t *r)
{
    r->sched = s;
    pthread_mutex_lock(&s->mu);
    if (s->failed) {
        pthread_mutex_unlock(&s->mu);
        inf_report_refused(&s->rep, INF_REFUSED_DEVICE_LOST);
        return LS_ERR_DEVICE;
    }
    if (s->draining || s->stop) {
        pthread_mutex_unlock(&s->mu);
        inf_report_refused(&s->rep, INF_REFUSED_DRAINING);
        return LS_ERR_CLOSED;
    }
    if (s->n_queued >= s->cfg.max_queue) {
        pthread_mutex_unlock(&s->mu);
        inf_report_refused(&s->rep, INF_REFUSED_QUEUE_FULL);
        return LS_ERR_FULL;
    }
    r->end = END_NONE;
    do_append(s, r);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
    return LS_OK;
}

void inf_sched_cancel(inf_sched_t *s, inf_request_t *r)
{
    atomic_store(&r->cancel, true);
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void inf_sched_counts(inf_sched_t *s, int *queued, int *running)
{
    pthread_mutex_lock(&s->mu);
    *queued = s->n_queued;
    *running = s->n_active;
    pthread_mutex_unlock(&s->mu);
}

void inf_sched_drain(inf_sched_t *s, int64_t grace_us)
{
    pthread_mutex_lock(&s->mu);
    s->draining = true;
    int64_t deadline = ls_now_us() + (grace_us > 0 ? grace_us : 0);
    if (deadline < s->drain_deadline_us)
        s->drain_deadline_us = deadline;
    pthread_cond_signal(&s->wake);
    while (s->n_queued > 0 || s->n_active > 0)
        pthread_cond_wait(&s->idle_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

void inf_sched_destroy(inf_sched_t *s)
{
    if (!s)
        return;
    inf_sched_drain(s, 0);
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    LS_ASSERT(s->n_running == 0 && s->n_queued == 0);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->idle_cv);
    free_buffers(s);
    free(s);
}
