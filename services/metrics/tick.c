#define _GNU_SOURCE
#include "tick.h"

#include "base/clock.h"
#include "base/log.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

struct tick {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC, the clock of ls_now_us */
    bool stop;
    int64_t next_us, period_us;
    tick_fn fn;
    void *ud;
};

static void *run(void *arg)
{
    tick_t *t = arg;
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        int64_t now = ls_now_us();
        if (now < t->next_us) {
            struct timespec ts = {(time_t)(t->next_us / 1000000),
                                  (long)(t->next_us % 1000000) * 1000};
            pthread_cond_timedwait(&t->cv, &t->mu, &ts);
            continue;
        }
        while (t->next_us <= now)
            t->next_us += t->period_us;
        pthread_mutex_unlock(&t->mu);
        t->fn(t->ud, now);
        pthread_mutex_lock(&t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

tick_t *tick_start(int64_t first_us, int64_t period_us, tick_fn fn, void *ud)
{
    tick_t *t = ls_xcalloc(1, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    t->next_us = first_us;
    t->period_us = period_us > 0 ? period_us : 1000000;
    t->fn = fn;
    t->ud = ud;
    if (pthread_create(&t->thread, NULL, run, t) != 0) {
        pthread_cond_destroy(&t->cv);
        pthread_mutex_destroy(&t->mu);
        free(t);
        return NULL;
    }
    pthread_setname_np(t->thread, "metrics-tick");
    return t;
}

void tick_stop(tick_t *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
