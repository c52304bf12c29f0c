/*
 * tick.h - a thread of its own that calls one function periodically: the collector's
 * once-a-second housekeeping (staleness, gauge history).  The function runs on that
 * thread only and may block briefly (it takes the store's lock).
 */
#ifndef METRICS_TICK_H
#define METRICS_TICK_H

#include <stdint.h>

typedef struct tick tick_t;

typedef void (*tick_fn)(void *ud, int64_t now_us);

/* Calls fn(ud, now) at first_us, first_us + period_us, ... (ls_now_us clock; a
 * call that runs late is not repeated to catch up).  ud is borrowed until tick_stop
 * returns.  Returns NULL when the thread cannot start. */
tick_t *tick_start(int64_t first_us, int64_t period_us, tick_fn fn, void *ud);

/* Stops the thread (a call in progress finishes first) and frees it.  NULL is a no-op. */
void tick_stop(tick_t *t);

#endif
