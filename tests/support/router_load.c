/*
 * router_load.c - streams that keep requests in flight (see router_load.h).
 *
 * Lock rules: each stream's mu guards its counters and its submits (a submit is sent
 * with it held, so sequence numbers and sends stay in order).
 */
#define _GNU_SOURCE
#include "router_load.h"

#include "base/clock.h"
#include "base/err.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REQS (1 << 18) /* per stream; far more than a run submits */

typedef struct {
    router_load_t *load;
    int idx;
    rpc_stream_t *s;
    pthread_mutex_t mu;
    bool stopping; /* submit nothing more */
    uint32_t submitted, terminals, errors, extra, unknown, send_failures;
    uint8_t *terminal; /* terminal events per request, by sequence number */
    char first_error[300];
    bool ended;
    rpc_status_t status;
} stream_t;

struct router_load {
    router_load_opts_t o;
    atomic_uint_fast64_t starts_on;
    stream_t streams[ROUTER_LOAD_MAX_STREAMS];
};

static void do_submit(stream_t *st)
{
    const router_load_opts_t *o = &st->load->o;
    if (st->stopping || st->submitted == MAX_REQS)
        return;
    char id[32];
    snprintf(id, sizeof(id), "s%d-%u", st->idx, st->submitted);
    Llmserve__V1__SamplingParams sp = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    sp.max_tokens = o->max_tokens;
    sp.temperature = 0;
    Llmserve__V1__GenerateSubmit s = LLMSERVE__V1__GENERATE_SUBMIT__INIT;
    s.request_id = id;
    s.prompt = (char *)o->prompt;
    s.sampling = &sp;
    s.cache_policy = o->policy;
    Llmserve__V1__GenerateRequest req = LLMSERVE__V1__GENERATE_REQUEST__INIT;
    req.kind_case = LLMSERVE__V1__GENERATE_REQUEST__KIND_SUBMIT;
    req.submit = &s;
    if (rpc_stream_send(st->s, &req.base) != LS_OK) {
        st->send_failures++;
        return;
    }
    st->submitted++;
}

/* On a client thread: count the event; a terminal one makes room for the next request. */
static void on_event(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    (void)s;
    stream_t *st = ud;
    const Llmserve__V1__GenerateEvent *ev = (const Llmserve__V1__GenerateEvent *)msg;
    int idx = -1;
    unsigned seq = 0;
    pthread_mutex_lock(&st->mu);
    if (sscanf(ev->request_id, "s%d-%u", &idx, &seq) != 2 || idx != st->idx ||
        seq >= st->submitted) {
        st->unknown++;
        pthread_mutex_unlock(&st->mu);
        return;
    }
    switch (ev->kind_case) {
    case LLMSERVE__V1__GENERATE_EVENT__KIND_STARTED: {
        const char *w = st->load->o.watched_instance;
        if (w && strcmp(ev->started->instance, w) == 0)
            atomic_fetch_add(&st->load->starts_on, 1);
        break;
    }
    case LLMSERVE__V1__GENERATE_EVENT__KIND_TOKEN:
        if (st->terminal[seq])
            st->extra++;
        break;
    case LLMSERVE__V1__GENERATE_EVENT__KIND_ERROR:
    case LLMSERVE__V1__GENERATE_EVENT__KIND_DONE:
        if (ev->kind_case == LLMSERVE__V1__GENERATE_EVENT__KIND_ERROR && !st->errors++)
            snprintf(st->first_error, sizeof(st->first_error), "%s: code %d %s", ev->request_id,
                     ev->error->code, ev->error->message);
        if (st->terminal[seq]++)
            st->extra++;
        else
            st->terminals++;
        do_submit(st);
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&st->mu);
}

static void on_status(rpc_stream_t *s, void *ud, const rpc_status_t *status, const rpc_md_t *t)
{
    (void)s;
    (void)t;
    stream_t *st = ud;
    pthread_mutex_lock(&st->mu);
    st->status = *status;
    st->ended = true;
    pthread_mutex_unlock(&st->mu);
}

router_load_t *router_load_start(rpc_channel_t *ch, const router_load_opts_t *o)
{
    cr_assert(o->streams >= 1 && o->streams <= ROUTER_LOAD_MAX_STREAMS, "streams %d", o->streams);
    router_load_t *l = calloc(1, sizeof(*l));
    cr_assert_not_null(l);
    l->o = *o;
    atomic_init(&l->starts_on, 0);
    for (int i = 0; i < o->streams; i++) {
        stream_t *st = &l->streams[i];
        st->load = l;
        st->idx = i;
        pthread_mutex_init(&st->mu, NULL);
        st->terminal = malloc(MAX_REQS);
        cr_assert_not_null(st->terminal);
        memset(st->terminal, 0, MAX_REQS); /* touched now, not while memory is measured */
        rpc_stream_handler_t h = {on_event, on_status};
        rpc_call_opts_t opts = {.wait_for_ready = true};
        st->s = rpc_stream_open(ch, "/llmserve.v1.Router/Generate",
                                &llmserve__v1__generate_event__descriptor, &h, st, &opts, 0);
        cr_assert_not_null(st->s);
        pthread_mutex_lock(&st->mu);
        for (int k = 0; k < o->window; k++)
            do_submit(st);
        pthread_mutex_unlock(&st->mu);
    }
    return l;
}

uint64_t router_load_starts_on(router_load_t *l)
{
    return atomic_load(&l->starts_on);
}

uint64_t router_load_finish(router_load_t *l)
{
    uint64_t total = 0;
    bool all_ended = true;
    for (int i = 0; i < l->o.streams; i++) {
        stream_t *st = &l->streams[i];
        pthread_mutex_lock(&st->mu);
        st->stopping = true;
        pthread_mutex_unlock(&st->mu);
    }
    for (int i = 0; i < l->o.streams; i++) {
        stream_t *st = &l->streams[i];
        int64_t until = ls_now_us() + 60000000;
        pthread_mutex_lock(&st->mu);
        while (st->terminals < st->submitted && ls_now_us() < until) {
            pthread_mutex_unlock(&st->mu);
            ls_sleep_us(5000);
            pthread_mutex_lock(&st->mu);
        }
        pthread_mutex_unlock(&st->mu);
        rpc_stream_close_send(st->s);
        while (!rpc_stream_ended(st->s) && ls_now_us() < until)
            ls_sleep_us(5000);
        pthread_mutex_lock(&st->mu);
        cr_expect_eq(st->terminals, st->submitted, "stream %d: %u of %u requests ended", i,
                     st->terminals, st->submitted);
        cr_expect_eq(st->errors, 0, "stream %d: %u errors, the first %s", i, st->errors,
                     st->first_error);
        cr_expect_eq(st->extra, 0, "stream %d: %u events after a terminal one", i, st->extra);
        cr_expect_eq(st->unknown, 0, "stream %d: %u events of unknown requests", i, st->unknown);
        cr_expect_eq(st->send_failures, 0, "stream %d: %u submits not sent", i, st->send_failures);
        cr_expect(st->ended, "stream %d did not end after half-close", i);
        cr_expect_eq(st->status.code, GRPC_STATUS_OK, "stream %d: status %d %s", i, st->status.code,
                     st->status.details);
        total += st->submitted;
        all_ended = all_ended && st->ended;
        pthread_mutex_unlock(&st->mu);
        rpc_stream_release(st->s);
    }
    /* A stream that did not end may still call back: then l stays (the test failed). */
    for (int i = 0; all_ended && i < l->o.streams; i++) {
        pthread_mutex_destroy(&l->streams[i].mu);
        free(l->streams[i].terminal);
    }
    if (all_ended)
        free(l);
    return total;
}
