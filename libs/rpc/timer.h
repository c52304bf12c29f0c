/*
 * timer.h - one thread that runs callbacks at given monotonic times (deadlines, TTFT
 * budgets, cache lookup timeouts, reconnect back-off).
 *
 * Callbacks run on the timer thread ("rpc-timer"), one at a time, with no lock held, and
 * must not block.  Thread-safe: add and cancel from any thread, including from callbacks.
 */
#ifndef RPC_TIMER_H
#define RPC_TIMER_H

#include <stdbool.h>
#include <stdint.h>

typedef struct rpc_timer rpc_timer_t;

/* fired is true when the time came, false when the timer service was destroyed first
 * (release ud then, do nothing else). */
typedef void (*rpc_timer_fn)(void *ud, bool fired);

/* Creates the service and starts its thread.  Returns NULL if the thread cannot start. */
rpc_timer_t *rpc_timer_create(void);

/* Calls fn(ud, true) at at_us (ls_now_us clock; a past time fires at once).  Returns the
 * timer's id (never 0). */
uint64_t rpc_timer_add(rpc_timer_t *t, int64_t at_us, rpc_timer_fn fn, void *ud);

/* Removes timer id.  Returns true when it was removed before running (fn will never run
 * for it: the caller releases ud); false when it already ran, is running, or id is 0. */
bool rpc_timer_cancel(rpc_timer_t *t, uint64_t id);

/* Stops the thread, calls fn(ud, false) for every timer left, frees the service.
 * NULL is a no-op. */
void rpc_timer_destroy(rpc_timer_t *t);

#endif
