/*
 * forward_cpu_pool.c - persistent workers that share a run's phases chunk by chunk.
 *
 * Synchronisation rules:
 *  - run_gen (a futex word) numbers the runs; a run starts when it changes.  The phase
 *    counters are reset (forward__pool_prepare) before it is bumped and read by workers
 *    after they see the new value (seq_cst orders them).  fn and arg never change.
 *  - Each phase has a claim and a done counter, 64 bits: the run number in the high
 *    half, the count in the low half.  A thread claims with compare-and-swap against
 *    its own run number, so a late worker still walking the previous run can never take
 *    (and lose) a chunk of the current one.  done needs no such check: a run cannot
 *    end while a chunk claimed in it is not done, so the run number cannot change
 *    between a claim and its done.
 *  - phase_word (a futex word) is bumped whenever a phase completes; a thread waiting
 *    for a phase spins, then counts itself in phase_sleepers and sleeps on phase_word.
 *    The one completing a phase bumps phase_word and then wakes if phase_sleepers is
 *    non-zero; the sleeper registers before it reads phase_word and rechecks the phase
 *    before FUTEX_WAIT, which returns at once if phase_word moved: no lost wake-up.
 * Rejected: a mutex and condition variable per phase.  It puts a context switch on
 * every one of the ~60 phases of a decode step that lasts about a millisecond.
 */
#define _GNU_SOURCE
#include "model/forward_cpu_pool.h"

#include "base/err.h"
#include "base/log.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Polls before sleeping: ~50-100 us, longer than the gap between the phases of a
 * step, shorter than a scheduler tick.  While polling a thread yields now and then:
 * when the machine has more runnable threads than cores, the thread being waited for
 * may be queued behind this one. */
#define POOL_SPIN 4000
#define POOL_YIELD_EVERY 512

typedef struct {
    alignas(64) atomic_uint_least64_t claim; /* run << 32 | chunks claimed */
    atomic_int n_chunks;                     /* of the run in the claim tag */
    alignas(64) atomic_uint_least64_t done;  /* run << 32 | chunks done */
} pool_phase_t;

struct forward__pool {
    int n_threads;
    int max_phases;
    pthread_t *workers;   /* n_threads - 1 */
    uint32_t *thread_run; /* [n_threads] the run each thread is walking */
    pool_phase_t *phases; /* [max_phases] */
    uint32_t next_run;    /* the run prepared last */
    forward__pool_fn_t fn;
    void *arg;
    alignas(64) atomic_int run_gen;
    atomic_int run_sleepers;
    atomic_bool stop;
    alignas(64) atomic_int phase_word;
    atomic_int phase_sleepers;
};

typedef struct {
    forward__pool_t *pool;
    int thread;
} pool_worker_arg_t;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void futex_wait(atomic_int *word, int expected)
{
    syscall(SYS_futex, (void *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_all(atomic_int *word)
{
    syscall(SYS_futex, (void *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static uint64_t tag(uint32_t run, uint32_t count)
{
    return (uint64_t)run << 32 | count;
}

int forward__pool_claim(forward__pool_t *p, int thread, int phase)
{
    uint32_t run = p->thread_run[thread];
    atomic_uint_least64_t *c = &p->phases[phase].claim;
    uint64_t v = atomic_load(c);
    for (;;) {
        /* n_chunks is read after the tag matched, so it is this run's count. */
        if ((uint32_t)(v >> 32) != run ||
            (uint32_t)v >= (uint32_t)atomic_load(&p->phases[phase].n_chunks))
            return -1;
        if (atomic_compare_exchange_weak(c, &v, v + 1))
            return (int)(uint32_t)v;
    }
}

void forward__pool_done(forward__pool_t *p, int thread, int phase)
{
    (void)thread;
    uint64_t v = atomic_fetch_add(&p->phases[phase].done, 1) + 1;
    if ((uint32_t)v == (uint32_t)atomic_load(&p->phases[phase].n_chunks)) {
        atomic_fetch_add(&p->phase_word, 1);
        if (atomic_load(&p->phase_sleepers) > 0)
            futex_wake_all(&p->phase_word);
    }
}

static bool phase_over(forward__pool_t *p, uint32_t run, int phase)
{
    uint64_t v = atomic_load(&p->phases[phase].done);
    return (uint32_t)(v >> 32) != run ||
           (uint32_t)v >= (uint32_t)atomic_load(&p->phases[phase].n_chunks);
}

void forward__pool_wait(forward__pool_t *p, int thread, int phase)
{
    uint32_t run = p->thread_run[thread];
    for (int i = 1; i <= POOL_SPIN; i++) {
        if (phase_over(p, run, phase))
            return;
        cpu_relax();
        if (i % POOL_YIELD_EVERY == 0)
            sched_yield();
    }
    atomic_fetch_add(&p->phase_sleepers, 1);
    for (;;) {
        int w = atomic_load(&p->phase_word);
        if (phase_over(p, run, phase))
            break;
        futex_wait(&p->phase_word, w);
    }
    atomic_fetch_sub(&p->phase_sleepers, 1);
}

/* Returns the value of run_gen once it differs from seen. */
static int wait_run(forward__pool_t *p, int seen)
{
    for (int i = 1; i <= POOL_SPIN; i++) {
        int v = atomic_load_explicit(&p->run_gen, memory_order_acquire);
        if (v != seen)
            return v;
        cpu_relax();
        if (i % POOL_YIELD_EVERY == 0)
            sched_yield();
    }
    atomic_fetch_add(&p->run_sleepers, 1);
    int v;
    while ((v = atomic_load(&p->run_gen)) == seen)
        futex_wait(&p->run_gen, seen);
    atomic_fetch_sub(&p->run_sleepers, 1);
    return v;
}

static void *worker_main(void *a)
{
    pool_worker_arg_t wa = *(pool_worker_arg_t *)a;
    free(a);
    forward__pool_t *p = wa.pool;
    int seen = 0;
    for (;;) {
        seen = wait_run(p, seen);
        if (atomic_load(&p->stop))
            return NULL;
        p->thread_run[wa.thread] = (uint32_t)seen;
        p->fn(p->arg, wa.thread);
    }
}

void forward__pool_prepare(forward__pool_t *p, const int *n_chunks, int n_phases)
{
    LS_ASSERT(n_phases <= p->max_phases);
    uint32_t run = (uint32_t)atomic_load(&p->run_gen) + 1;
    p->next_run = run;
    /* The tag first, so that a late worker that sees the new count also sees a tag that
     * is not its own.  Phases past n_phases get no chunks. */
    for (int i = 0; i < p->max_phases; i++) {
        atomic_store(&p->phases[i].claim, tag(run, 0));
        atomic_store(&p->phases[i].done, tag(run, 0));
        atomic_store(&p->phases[i].n_chunks, i < n_phases ? n_chunks[i] : 0);
    }
}

void forward__pool_run(forward__pool_t *p)
{
    uint32_t run = p->next_run;
    LS_ASSERT(run == (uint32_t)atomic_load(&p->run_gen) + 1);
    p->thread_run[0] = run;
    atomic_fetch_add(&p->run_gen, 1);
    if (p->n_threads > 1 && atomic_load(&p->run_sleepers) > 0)
        futex_wake_all(&p->run_gen);
    p->fn(p->arg, 0);
}

static void pool_stop(forward__pool_t *p, int started)
{
    atomic_store(&p->stop, true);
    atomic_fetch_add(&p->run_gen, 1);
    futex_wake_all(&p->run_gen);
    for (int i = 0; i < started; i++)
        pthread_join(p->workers[i], NULL);
}

forward__pool_t *forward__pool_create(int threads, int max_phases, forward__pool_fn_t fn, void *arg,
                                      char *err, size_t err_len)
{
    if (threads < 1 || max_phases < 1) {
        snprintf(err, err_len, "threads and phases must be at least 1 (got %d, %d)", threads,
                 max_phases);
        return NULL;
    }
    forward__pool_t *p = aligned_alloc(64, sizeof(*p));
    pool_phase_t *phases = aligned_alloc(64, (size_t)max_phases * sizeof(pool_phase_t));
    if (!p || !phases) {
        free(p);
        free(phases);
        snprintf(err, err_len, "out of memory for the thread pool");
        return NULL;
    }
    memset(p, 0, sizeof(*p));
    p->n_threads = threads;
    p->max_phases = max_phases;
    p->phases = phases;
    p->fn = fn;
    p->arg = arg;
    for (int i = 0; i < max_phases; i++) {
        atomic_init(&phases[i].claim, 0);
        atomic_init(&phases[i].done, 0);
        atomic_init(&phases[i].n_chunks, 0);
    }
    atomic_init(&p->run_gen, 0);
    atomic_init(&p->run_sleepers, 0);
    atomic_init(&p->stop, false);
    atomic_init(&p->phase_word, 0);
    atomic_init(&p->phase_sleepers, 0);
    p->thread_run = ls_xcalloc((unsigned long)threads, sizeof(uint32_t));
    p->workers = ls_xcalloc((unsigned long)threads, sizeof(pthread_t));
    for (int i = 1; i < threads; i++) {
        pool_worker_arg_t *wa = ls_xmalloc(sizeof(*wa));
        wa->pool = p;
        wa->thread = i;
        int rc = pthread_create(&p->workers[i - 1], NULL, worker_main, wa);
        if (rc != 0) {
            free(wa);
            snprintf(err, err_len, "cannot start worker thread %d: %s", i, strerror(rc));
            pool_stop(p, i - 1);
            free(p->workers);
            free(p->thread_run);
            free(p->phases);
            free(p);
            return NULL;
        }
    }
    return p;
}

void forward__pool_destroy(forward__pool_t *p)
{
    if (!p)
        return;
    pool_stop(p, p->n_threads - 1);
    free(p->workers);
    free(p->thread_run);
    free(p->phases);
    free(p);
}

int forward__pool_threads(const forward__pool_t *p)
{
    return p->n_threads;
}
