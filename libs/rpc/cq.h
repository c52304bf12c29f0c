/*
 * cq.h - completion-queue pollers shared by the server and the client (internal).
 *
 * A pool owns n completion queues, each drained by exactly one thread.  A call is
 * bound to one queue for its whole life, so every completion of that call runs on
 * one thread, in order: a handler never sees two callbacks of one call at once.
 * Tags handed to grpc_call_start_batch are rpc__tag_t, embedded in the object they
 * belong to; the poller calls tag->fn(tag, ok).
 */
#ifndef RPC_CQ_H
#define RPC_CQ_H

#include <grpc/grpc.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct rpc__tag {
    void (*fn)(struct rpc__tag *tag, bool ok);
} rpc__tag_t;

#define RPC__CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

typedef struct rpc__cqpool rpc__cqpool_t;

/* Creates n queues (n >= 1) without threads yet.  Aborts on out-of-memory. */
rpc__cqpool_t *rpc__cqpool_create(int n);

/* Starts one polling thread per queue; returns LS_OK or LS_ERR_INTERNAL. */
int rpc__cqpool_start(rpc__cqpool_t *p, const char *name);

int rpc__cqpool_size(const rpc__cqpool_t *p);
grpc_completion_queue *rpc__cqpool_at(rpc__cqpool_t *p, int i);

/* Picks a queue round-robin; thread-safe. */
grpc_completion_queue *rpc__cqpool_next(rpc__cqpool_t *p);

/* Shuts every queue down, lets the pollers drain them (late tags still run with
 * ok=false), joins the threads and destroys the queues and the pool.  No call may
 * still hold a pending batch on these queues except ones that will fail. */
void rpc__cqpool_destroy(rpc__cqpool_t *p);

/* Online CPU count, at least 1. */
int rpc__cpu_count(void);

#endif
