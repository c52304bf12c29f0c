/*
 * defer.h - a thread for work that may block, handed over by threads that must not: a
 * client callback that drops the last reference to something whose teardown waits
 * (rpc_mux_destroy waits for its stream to end), say.
 *
 * Jobs run one at a time, in the order they were added, on the defer thread
 * ("rpc-defer"), with no lock held.  Thread-safe: rpc_defer_add and rpc_defer_pending
 * from any thread, callbacks and jobs included.
 */
#ifndef RPC_DEFER_H
#define RPC_DEFER_H

#include <stddef.h>

typedef struct rpc_defer rpc_defer_t;

typedef void (*rpc_defer_fn)(void *ud);

/* Creates the queue and starts its thread.  Returns NULL if the thread cannot start. */
rpc_defer_t *rpc_defer_create(void);

/* Queues fn(ud) to run on the defer thread; ud is the job's until fn returns.  Never
 * blocks (aborts with a logged message if the small queue entry cannot be allocated). */
void rpc_defer_add(rpc_defer_t *d, rpc_defer_fn fn, void *ud);

/* Jobs queued or running now. */
size_t rpc_defer_pending(rpc_defer_t *d);

/* Runs every job still queued, those that jobs add meanwhile included, then stops the
 * thread and frees d.  Blocks until then; nothing may be added after it returns.  Call it
 * from a thread other than the defer thread.  NULL is a no-op. */
void rpc_defer_destroy(rpc_defer_t *d);

#endif
