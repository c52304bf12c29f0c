/*
 * inproc_cache.c - the in-process Cache.Session server (see inproc_cache.h).
 *
 * Lock rules: s->mu guards the counts, the flags, the sessions' fields and the queue of
 * held lookups; no rpc call is made with it held.
 */
#define _GNU_SOURCE
#include "inproc_cache.h"

#include "base/clock.h"
#include "base/err.h"
#include "llmserve/v1/cache.pb-c.h"
#include "net.h"
#include "rpc/server.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct session {
    inproc_cache_t *owner;
    rpc_call_t *call; /* referenced until the server stops */
    int pending;      /* lookups not answered yet */
    bool half_closed, finished;
    struct session *next;
} session_t;

typedef struct held {
    session_t *sess;
    uint64_t id;
    int64_t due_us;
    struct held *next;
} held_t;

struct inproc_cache {
    rpc_server_t *srv;
    char addr[TEST_ADDR_LEN];
    pthread_t thread;
    pthread_mutex_t mu;
    bool stop, hold;
    int delay_ms;
    session_t *sessions;
    held_t *held; /* in arrival order */
    inproc_cache_counts_t c;
};

static void send_miss(rpc_call_t *call, uint64_t id)
{
    Llmserve__V1__CacheLookupResult res = LLMSERVE__V1__CACHE_LOOKUP_RESULT__INIT;
    Llmserve__V1__CacheResponse resp = LLMSERVE__V1__CACHE_RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = LLMSERVE__V1__CACHE_RESPONSE__KIND_LOOKUP;
    resp.lookup = &res;
    rpc_call_send(call, &resp.base); /* CLOSED when the client went: fine */
}

/* With s->mu held, once a lookup's answer was sent (not before: a half-close seeing
 * nothing left would finish the call ahead of it): one lookup of sess less to answer;
 * true when the session is to be finished now (its client half-closed, nothing left). */
static bool do_answered(inproc_cache_t *s, session_t *sess)
{
    sess->pending--;
    s->c.answered++;
    if (sess->half_closed && sess->pending == 0 && !sess->finished) {
        sess->finished = true;
        s->c.finished++;
        return true;
    }
    return false;
}

static void *on_start(rpc_call_t *call, void *ctx)
{
    inproc_cache_t *s = ctx;
    session_t *sess = calloc(1, sizeof(*sess));
    sess->owner = s;
    sess->call = call;
    rpc_call_ref(call);
    pthread_mutex_lock(&s->mu);
    sess->next = s->sessions;
    s->sessions = sess;
    s->c.sessions++;
    s->c.open++;
    pthread_mutex_unlock(&s->mu);
    return sess;
}

static void on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    session_t *sess = state;
    inproc_cache_t *s = sess->owner;
    const Llmserve__V1__CacheRequest *req = (const Llmserve__V1__CacheRequest *)msg;
    if (req->kind_case == LLMSERVE__V1__CACHE_REQUEST__KIND_STORE) {
        pthread_mutex_lock(&s->mu);
        s->c.stores++;
        pthread_mutex_unlock(&s->mu);
        Llmserve__V1__CacheStoreResult res = LLMSERVE__V1__CACHE_STORE_RESULT__INIT;
        res.stored = true;
        Llmserve__V1__CacheResponse resp = LLMSERVE__V1__CACHE_RESPONSE__INIT;
        resp.id = req->id;
        resp.kind_case = LLMSERVE__V1__CACHE_RESPONSE__KIND_STORE;
        resp.store = &res;
        rpc_call_send(call, &resp.base);
        return;
    }
    if (req->kind_case != LLMSERVE__V1__CACHE_REQUEST__KIND_LOOKUP)
        return;
    pthread_mutex_lock(&s->mu);
    s->c.lookups++;
    sess->pending++;
    if (!s->hold && s->delay_ms == 0) {
        pthread_mutex_unlock(&s->mu);
        send_miss(call, req->id);
        pthread_mutex_lock(&s->mu);
        do_answered(s, sess); /* not half-closed: this callback runs before that one */
        pthread_mutex_unlock(&s->mu);
        return;
    }
    held_t *h = calloc(1, sizeof(*h));
    h->sess = sess;
    h->id = req->id;
    h->due_us = ls_now_us() + (int64_t)s->delay_ms * 1000;
    held_t **tail = &s->held;
    while (*tail)
        tail = &(*tail)->next;
    *tail = h;
    s->c.waiting++;
    pthread_mutex_unlock(&s->mu);
}

static void on_half_close(rpc_call_t *call, void *state)
{
    session_t *sess = state;
    inproc_cache_t *s = sess->owner;
    pthread_mutex_lock(&s->mu);
    sess->half_closed = true;
    bool finish = sess->pending == 0 && !sess->finished;
    if (finish) {
        sess->finished = true;
        s->c.finished++;
    }
    pthread_mutex_unlock(&s->mu);
    if (finish)
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void on_done(rpc_call_t *call, void *state)
{
    (void)call;
    session_t *sess = state;
    pthread_mutex_lock(&sess->owner->mu);
    sess->owner->c.open--;
    pthread_mutex_unlock(&sess->owner->mu);
}

/* Answers held lookups when they are due and the hold is off. */
static void *answer_thread(void *ud)
{
    inproc_cache_t *s = ud;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        int64_t now = ls_now_us();
        held_t *h = s->held;
        if (!s->hold && h && h->due_us <= now) {
            s->held = h->next;
            s->c.waiting--;
            pthread_mutex_unlock(&s->mu);
            send_miss(h->sess->call, h->id);
            pthread_mutex_lock(&s->mu);
            bool finish = do_answered(s, h->sess);
            pthread_mutex_unlock(&s->mu);
            if (finish)
                rpc_call_finish(h->sess->call, GRPC_STATUS_OK, NULL);
            free(h);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        ls_sleep_us(500);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

inproc_cache_t *inproc_cache_start(void)
{
    inproc_cache_t *s = calloc(1, sizeof(*s));
    cr_assert_not_null(s);
    pthread_mutex_init(&s->mu, NULL);
    rpc_server_config_t cfg;
    rpc_server_config_init(&cfg);
    cfg.threads = 1;
    cfg.name = "cache-server";
    s->srv = rpc_server_create(&cfg);
    cr_assert_not_null(s->srv);
    int port = 0;
    cr_assert_eq(rpc_server_listen(s->srv, "127.0.0.1:0", NULL, &port), LS_OK);
    rpc_handler_t h = {on_start, on_message, on_half_close, NULL, on_done};
    cr_assert_eq(rpc_server_add_method(s->srv, "/llmserve.v1.Cache/Session", RPC_STREAM,
                                       &llmserve__v1__cache_request__descriptor, &h, s),
                 LS_OK);
    cr_assert_eq(rpc_server_start(s->srv), LS_OK);
    test_addr(s->addr, port);
    cr_assert_eq(pthread_create(&s->thread, NULL, answer_thread, s), 0);
    return s;
}

const char *inproc_cache_addr(const inproc_cache_t *s)
{
    return s->addr;
}

void inproc_cache_hold(inproc_cache_t *s, bool hold)
{
    pthread_mutex_lock(&s->mu);
    s->hold = hold;
    pthread_mutex_unlock(&s->mu);
}

void inproc_cache_delay(inproc_cache_t *s, int delay_ms)
{
    pthread_mutex_lock(&s->mu);
    s->delay_ms = delay_ms;
    pthread_mutex_unlock(&s->mu);
}

inproc_cache_counts_t inproc_cache_counts(inproc_cache_t *s)
{
    pthread_mutex_lock(&s->mu);
    inproc_cache_counts_t c = s->c;
    pthread_mutex_unlock(&s->mu);
    return c;
}

bool inproc_cache_wait_lookups(inproc_cache_t *s, uint64_t n, int timeout_ms)
{
    int64_t until = ls_now_us() + (int64_t)timeout_ms * 1000;
    while (inproc_cache_counts(s).lookups < n) {
        if (ls_now_us() >= until)
            return false;
        ls_sleep_us(1000);
    }
    return true;
}

void inproc_cache_stop(inproc_cache_t *s)
{
    if (!s)
        return;
    rpc_server_shutdown(s->srv, 0);
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_mutex_unlock(&s->mu);
    cr_assert_eq(pthread_join(s->thread, NULL), 0);
    while (s->held) {
        held_t *h = s->held;
        s->held = h->next;
        free(h);
    }
    while (s->sessions) {
        session_t *sess = s->sessions;
        s->sessions = sess->next;
        rpc_call_unref(sess->call);
        free(sess);
    }
    rpc_server_destroy(s->srv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
