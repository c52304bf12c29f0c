/*
 * defer.c - a FIFO of jobs and the thread that runs them.
 *
 * Lock rules: d->mu guards the queue, the pending count and the stop flag; jobs run with
 * it released.
 */
#define _GNU_SOURCE
#include "rpc/defer.h"

#include "base/log.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct job {
    rpc_defer_fn fn;
    void *ud;
    struct job *next;
} job_t;

struct rpc_defer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    job_t *head, *tail;
    size_t pending; /* queued plus the one running */
    bool stop;
};

static void *defer_main(void *arg)
{
    rpc_defer_t *d = arg;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        job_t *j = d->head;
        if (!j) {
            if (d->stop)
                break;
            pthread_cond_wait(&d->cv, &d->mu);
            continue;
        }
        d->head = j->next;
        if (!d->head)
            d->tail = NULL;
        pthread_mutex_unlock(&d->mu);
        j->fn(j->ud);
        free(j);
        pthread_mutex_lock(&d->mu);
        d->pending--;
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

rpc_defer_t *rpc_defer_create(void)
{
    rpc_defer_t *d = ls_xcalloc(1, sizeof(*d));
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    if (pthread_create(&d->thread, NULL, defer_main, d) != 0) {
        pthread_cond_destroy(&d->cv);
        pthread_mutex_destroy(&d->mu);
        free(d);
        return NULL;
    }
    pthread_setname_np(d->thread, "rpc-defer");
    return d;
}

void rpc_defer_add(rpc_defer_t *d, rpc_defer_fn fn, void *ud)
{
    job_t *j = ls_xcalloc(1, sizeof(*j));
    j->fn = fn;
    j->ud = ud;
    pthread_mutex_lock(&d->mu);
    if (d->tail)
        d->tail->next = j;
    else
        d->head = j;
    d->tail = j;
    d->pending++;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

size_t rpc_defer_pending(rpc_defer_t *d)
{
    pthread_mutex_lock(&d->mu);
    size_t n = d->pending;
    pthread_mutex_unlock(&d->mu);
    return n;
}

void rpc_defer_destroy(rpc_defer_t *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    d->stop = true;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->thread, NULL);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
