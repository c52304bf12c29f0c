/*
 * forward_cpu_pool.h - the CPU backend's persistent worker threads (internal).
 *
 * A step runs as one parallel region: forward__pool_run starts the same function on
 * every thread (the caller is thread 0).  Inside it, work is a fixed sequence of
 * phases, each cut into chunks; every thread walks the phases in order, claims chunks
 * of the current one until none is left, then waits until all chunks of it are done
 * before moving on.  A phase is over when its chunks are done, not when every thread
 * has arrived: a thread the kernel has descheduled (another process wanting the core)
 * holds up the others only for the chunk it is in, and a thread that never woke at
 * all is simply not needed.  With a plain barrier per phase, one such thread stalled
 * every phase of the step; measured on the shared 2-core machine under load, two
 * threads were then half as fast as one.
 *
 * Waiting threads spin briefly (a decode step's phases last microseconds) and then
 * sleep on a futex, so an idle pool costs no CPU.
 *
 * Threads: forward__pool_run is called by one thread at a time (the forward_t's
 * owner); the phase calls only from inside the function it runs.
 */
#ifndef MODEL_FORWARD_CPU_POOL_H
#define MODEL_FORWARD_CPU_POOL_H

#include <stddef.h>

typedef struct forward__pool forward__pool_t;

/* fn(arg, thread) with thread in [0, threads). */
typedef void (*forward__pool_fn_t)(void *arg, int thread);

/* Starts threads - 1 workers (threads >= 1) for runs of fn(arg, thread) with up to
 * max_phases phases (arg is borrowed and must outlive the pool).  Returns the pool
 * (free with forward__pool_destroy) or NULL with a reason in err. */
forward__pool_t *forward__pool_create(int threads, int max_phases, forward__pool_fn_t fn, void *arg,
                                      char *err, size_t err_len);

/* Stops and joins the workers; NULL is a no-op.  Not during forward__pool_run. */
void forward__pool_destroy(forward__pool_t *p);

int forward__pool_threads(const forward__pool_t *p);

/* Sets up the next run: phase i (i < n_phases <= max_phases) will have n_chunks[i]
 * chunks.  Call it before changing any state the previous run read: from here on, a
 * worker late from the previous run can claim nothing.  A worker reads shared state
 * only inside a chunk it claimed. */
void forward__pool_prepare(forward__pool_t *p, const int *n_chunks, int n_phases);

/* Runs fn(arg, t) on every thread t of the pool for the run prepared last, and returns
 * when thread 0's call has returned.  fn must end by waiting for its last phase
 * (forward__pool_wait), so that all the run's work is done on return; workers that are
 * late may still be walking the phases, finding no chunk left, and touch nothing. */
void forward__pool_run(forward__pool_t *p);

/* Claims the next chunk of phase for thread.  Returns the chunk index, or -1 when all
 * are claimed (or the thread's run is over).  Every claimed chunk must be followed by
 * forward__pool_done. */
int forward__pool_claim(forward__pool_t *p, int thread, int phase);

/* Marks one chunk of phase, claimed by thread, as done. */
void forward__pool_done(forward__pool_t *p, int thread, int phase);

/* Returns once all chunks of phase are done (or the thread's run is over). */
void forward__pool_wait(forward__pool_t *p, int thread, int phase);

#endif
