/*
 * timer.h - one thread that runs callbacks at given monotonic times (deadlines, TTFT
 * budgets, cache lookup timeouts, reconnect back-off).
 *
 * Callbacks run on the timer thread, one at a time, with no lock held, and must not
 * block.  Thread-safe: add and cancel from any thread, including from callbacks.
 */
#ifndef ROUTER_TIMER_H
#define ROUTER_TIMER_H

#include <stdbool.h>
#include <stdint.h>

typedef struct router_timer router_timer_t;

/* fired is true when the time came, false when the timer service was destroyed first
 * (release ud then, do nothing else). */
typedef void (*router_timer_fn)(void *ud, bool fired);

/* Creates the service and starts its thread.  Returns NULL if the thread cannot start. */
router_timer_t *router_timer_create(void);

/* Calls fn(ud, true) at at_us (ls_now_us clock; a past time fires at once).  Returns the
 * timer's id (never 0). */
uint64_t router_timer_add(router_timer_t *t, int64_t at_us, router_timer_fn fn, void *ud);

/* Removes timer id.  Returns true when it was removed before running (fn will never run
 * for it: the caller releases ud); false when it already ran, is running, or id is 0. */
bool router_timer_cancel(router_timer_t *t, uint64_t id);

/* Stops the thread, calls fn(ud, false) for every timer left, frees the service.
 * NULL is a no-op. */
void router_timer_destroy(router_timer_t *t);

#endif
