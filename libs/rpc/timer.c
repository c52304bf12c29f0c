/*
 * timer.c - a binary min-heap of timers and the thread that fires them.
 *
 * Lock rules: t->mu guards the heap and the id map; callbacks run with it released.
 */
#define _GNU_SOURCE
#include "rpc/timer.h"

#include "base/clock.h"
#include "base/log.h"
#include "rpc/idmap.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

typedef struct {
    int64_t at_us;
    uint64_t id;
    rpc_timer_fn fn;
    void *ud;
    size_t pos; /* index in the heap */
} entry_t;

struct rpc_timer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    entry_t **heap;
    size_t n, cap;
    rpc_idmap_t by_id;
    uint64_t next_id;
    bool stop;
};

static bool before(const entry_t *a, const entry_t *b)
{
    return a->at_us < b->at_us || (a->at_us == b->at_us && a->id < b->id);
}

static void place(rpc_timer_t *t, size_t i, entry_t *e)
{
    t->heap[i] = e;
    e->pos = i;
}

static void sift_up(rpc_timer_t *t, size_t i)
{
    entry_t *e = t->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(e, t->heap[parent]))
            break;
        place(t, i, t->heap[parent]);
        i = parent;
    }
    place(t, i, e);
}

static void sift_down(rpc_timer_t *t, size_t i)
{
    entry_t *e = t->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const entry_t *best = e;
        if (l < t->n && before(t->heap[l], best)) {
            m = l;
            best = t->heap[l];
        }
        if (r < t->n && before(t->heap[r], best))
            m = r;
        if (m == i)
            break;
        place(t, i, t->heap[m]);
        i = m;
    }
    place(t, i, e);
}

static void do_remove_at(rpc_timer_t *t, size_t i)
{
    entry_t *last = t->heap[--t->n];
    if (i == t->n)
        return;
    place(t, i, last);
    sift_down(t, i);
    sift_up(t, last->pos);
}

static void cond_wait_until(rpc_timer_t *t, int64_t at_us)
{
    /* The condition variable runs on CLOCK_MONOTONIC, the clock of ls_now_us. */
    struct timespec ts = {(time_t)(at_us / 1000000), (long)(at_us % 1000000) * 1000};
    pthread_cond_timedwait(&t->cv, &t->mu, &ts);
}

static void *timer_main(void *arg)
{
    rpc_timer_t *t = arg;
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        if (t->n == 0) {
            pthread_cond_wait(&t->cv, &t->mu);
            continue;
        }
        int64_t now = ls_now_us();
        entry_t *top = t->heap[0];
        if (top->at_us > now) {
            cond_wait_until(t, top->at_us);
            continue;
        }
        do_remove_at(t, 0);
        rpc_idmap_del(&t->by_id, top->id);
        pthread_mutex_unlock(&t->mu);
        top->fn(top->ud, true);
        free(top);
        pthread_mutex_lock(&t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

rpc_timer_t *rpc_timer_create(void)
{
    rpc_timer_t *t = ls_xcalloc(1, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&t->thread, NULL, timer_main, t) != 0) {
        pthread_cond_destroy(&t->cv);
        pthread_mutex_destroy(&t->mu);
        free(t);
        return NULL;
    }
    pthread_setname_np(t->thread, "rpc-timer");
    return t;
}

uint64_t rpc_timer_add(rpc_timer_t *t, int64_t at_us, rpc_timer_fn fn, void *ud)
{
    entry_t *e = ls_xcalloc(1, sizeof(*e));
    e->at_us = at_us;
    e->fn = fn;
    e->ud = ud;
    pthread_mutex_lock(&t->mu);
    e->id = ++t->next_id;
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        entry_t **h = realloc(t->heap, t->cap * sizeof(*h));
        if (!h) {
            LS_LOG_ERROR("rpc", "out of memory for timers");
            abort();
        }
        t->heap = h;
    }
    t->heap[t->n] = e;
    e->pos = t->n++;
    sift_up(t, e->pos);
    rpc_idmap_put(&t->by_id, e->id, e);
    bool wake = t->heap[0] == e;
    uint64_t id = e->id;
    pthread_mutex_unlock(&t->mu);
    if (wake)
        pthread_cond_signal(&t->cv);
    return id;
}

bool rpc_timer_cancel(rpc_timer_t *t, uint64_t id)
{
    if (id == 0)
        return false;
    pthread_mutex_lock(&t->mu);
    entry_t *e = rpc_idmap_del(&t->by_id, id);
    if (e)
        do_remove_at(t, e->pos);
    pthread_mutex_unlock(&t->mu);
    bool found = e != NULL;
    free(e);
    return found;
}

void rpc_timer_destroy(rpc_timer_t *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    pthread_mutex_unlock(&t->mu);
    pthread_cond_broadcast(&t->cv);
    pthread_join(t->thread, NULL);
    for (size_t i = 0; i < t->n; i++) {
        t->heap[i]->fn(t->heap[i]->ud, false);
        free(t->heap[i]);
    }
    free(t->heap);
    rpc_idmap_free(&t->by_id);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
