/*
 * target.h - one implementation of the Bench service under test: its server on its own
 * threads in this process, and a client connected to it over loopback.
 *
 * Two backends sit behind this header, so main.c drives both the same way:
 *   baseline.c  plain gRPC C core written out by hand: one completion queue and one
 *               thread in the server, the client on the calling thread;
 *   library.c   libs/rpc: rpc_server_t, rpc_channel_unary and rpc_stream_*.
 * Each run checks what came back (status, counts, order) and fails with an error
 * rather than report a figure for work that was not done.
 *
 * Not thread-safe: one thread creates, runs and destroys a target.
 */
#ifndef BENCH_TARGET_H
#define BENCH_TARGET_H

#include <stdbool.h>
#include <stdint.h>

#define BENCH_METHOD_UNARY "/llmserve.bench.Bench/Unary"
#define BENCH_METHOD_DOWN "/llmserve.bench.Bench/Down"
#define BENCH_METHOD_UP "/llmserve.bench.Bench/Up"

typedef struct {
    int64_t warmup_calls;   /* unary calls before the timed ones */
    int64_t calls;          /* timed unary calls, one after another */
    int64_t messages;       /* messages per stream run, each direction */
    int64_t payload_bytes;  /* filler bytes in every message */
    int64_t server_threads; /* library server completion-queue threads (baseline: 1) */
    int64_t window;         /* library: messages queued per stream before the sender waits */
    int64_t backoff_us;     /* library: how long a sender waits when its window is full */
    bool app_producer;      /* library streams: app threads produce (else drain-driven) */
    int64_t deadline_ms;    /* deadline of every call and stream */
} bench_params_t;

typedef struct bench_target bench_target_t;

struct bench_target {
    const char *name;     /* "baseline" or "library" */
    const char *describe; /* one line: what runs on which threads */
    /* Makes warmup_calls + calls sequential unary calls; lat_ns[i] gets the round trip
     * of timed call i (calls entries), *elapsed_ns the time of all timed calls.
     * Returns LS_OK, or an error after logging what went wrong. */
    int (*unary)(bench_target_t *t, int64_t *lat_ns, int64_t *elapsed_ns);
    /* One Down stream of `messages` messages; *elapsed_ns from call start to status. */
    int (*down)(bench_target_t *t, int64_t *elapsed_ns);
    /* One Up stream of `messages` messages; *elapsed_ns from call start to status. */
    int (*up)(bench_target_t *t, int64_t *elapsed_ns);
    /* Shuts the server and the client down and frees everything.  NULL is a no-op. */
    void (*destroy)(bench_target_t *t);
};

/* Start a server on 127.0.0.1 (any free port) and connect a client to it, making one
 * unary call so that no run times the connection set-up.  p is copied.  Return the
 * target, or NULL after logging why it could not start. */
bench_target_t *bench_baseline_create(const bench_params_t *p);
bench_target_t *bench_library_create(const bench_params_t *p);

/* Destroys t through its backend; NULL is a no-op. */
static inline void bench_target_destroy(bench_target_t *t)
{
    if (t)
        t->destroy(t);
}

#endif
