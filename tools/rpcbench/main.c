/*
 * main.c - llmserve-rpcbench: what libs/rpc costs against plain gRPC C core.
 *
 * Runs both implementations (target.h) in this process, each server on its own
 * threads, and measures on loopback, back to back: unary round trips (p50, p99,
 * calls/s), server->client stream messages/s and client->server stream messages/s.
 * Every run gets a fresh server, client and connection (connected before timing).
 * Each figure is run `repeats` times with baseline and library alternating (which one
 * goes first flips every round, so drift on a noisy machine hits both alike) and the
 * median is reported, with the ratio library/baseline and a verdict against "the
 * wrapper costs under 10 %".  Exit status: 0 when every run completed and checked out
 * (whatever the verdicts), 1 when a run failed, 2 for bad flags.
 */
#define _GNU_SOURCE
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "report.h"
#include "stats.h"
#include "target.h"

#include <grpc/grpc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_DESCRIBE_LEN 400

typedef struct {
    int64_t calls;          /* timed unary calls per run; 0: 20000, or 1000 with --quick */
    int64_t warmup;         /* unary calls before timing; -1: 2000, or 100 with --quick */
    int64_t messages;       /* messages per stream run; 0: 200000, or 10000 with --quick */
    int64_t payload_bytes;  /* filler bytes per message; default 16 */
    int64_t server_threads; /* library server threads; default 1, like the baseline */
    int64_t repeats;        /* runs per figure and implementation; default 3 */
    int64_t window;         /* library: messages queued per stream; default 1024 */
    int64_t backoff_us;     /* library: wait when the window is full; default 100 us */
    const char *producer;   /* library streams: "drain" (default) or "thread" */
    int64_t deadline_ms;    /* deadline of every call and stream; default 120000 ms */
    bool quick;             /* small counts for a smoke run */
    bool json;              /* JSON on stdout instead of the table */
} rpcbench_config_t;

static void rpcbench_config_init(rpcbench_config_t *cfg)
{
    cfg->calls = 0;
    cfg->warmup = -1;
    cfg->messages = 0;
    cfg->payload_bytes = 16;
    cfg->server_threads = 1;
    cfg->repeats = 3;
    /* A quarter of the library's 4096-message bound, and a wait far shorter than the
     * ~10 ms it takes to send 1024 messages, so the queue never runs dry.  Measured on 2
     * cores: 256/50 and 4096/1000 gave the same figures within the noise. */
    cfg->window = 1024;
    cfg->backoff_us = 100;
    cfg->producer = "drain";
    cfg->deadline_ms = 120000;
    cfg->quick = false;
    cfg->json = false;
}

enum { M_P50, M_P99, M_CALLS, M_DOWN, M_UP, M_COUNT };

typedef enum { RUN_UNARY, RUN_DOWN, RUN_UP, RUN_COUNT } run_kind_t;

static bench_target_t *(*const create_target[2])(const bench_params_t *) = {
    [BENCH_BASELINE] = bench_baseline_create,
    [BENCH_LIBRARY] = bench_library_create,
};

/* Runs one figure of implementation impl, round r, on a target of its own.  Only one
 * implementation is alive at a time, because a gRPC thread idle in
 * grpc_completion_queue_next still takes part in polling every connection of the
 * process: with the other target's idle threads merely present, the baseline's Down rose
 * from ~112k to ~165k msg/s, and one extra idle thread raised its unary p50 from ~52 to
 * ~87 us.  Copies the target's description into describe (len bytes). */
static int run_one(int impl, run_kind_t kind, size_t r, const bench_params_t *p, int64_t *lat_ns,
                   bench_metric_t *metrics, char *describe, size_t len)
{
    bench_target_t *t = create_target[impl](p);
    if (!t)
        return LS_ERR_INTERNAL;
    snprintf(describe, len, "%s", t->describe);
    int64_t elapsed_ns = 0;
    int rc;
    switch (kind) {
    case RUN_UNARY:
        rc = t->unary(t, lat_ns, &elapsed_ns);
        if (rc != LS_OK)
            break;
        bench_sort_i64(lat_ns, (size_t)p->calls);
        metrics[M_P50].runs[impl][r] =
            (double)bench_quantile_i64(lat_ns, (size_t)p->calls, 0.50) / 1e3;
        metrics[M_P99].runs[impl][r] =
            (double)bench_quantile_i64(lat_ns, (size_t)p->calls, 0.99) / 1e3;
        metrics[M_CALLS].runs[impl][r] = (double)p->calls * 1e9 / (double)(elapsed_ns + 1);
        break;
    case RUN_DOWN:
        rc = t->down(t, &elapsed_ns);
        metrics[M_DOWN].runs[impl][r] = (double)p->messages * 1e9 / (double)(elapsed_ns + 1);
        break;
    case RUN_UP:
    default:
        rc = t->up(t, &elapsed_ns);
        metrics[M_UP].runs[impl][r] = (double)p->messages * 1e9 / (double)(elapsed_ns + 1);
        break;
    }
    bench_target_destroy(t);
    return rc;
}

/* Runs every figure `repeats` times for both implementations, alternating which goes
 * first; returns LS_OK or the first failure. */
static int run_all(const bench_params_t *p, size_t repeats, bench_metric_t *metrics,
                   char describe[2][BENCH_DESCRIBE_LEN])
{
    int64_t *lat_ns = ls_xmalloc((unsigned long)p->calls * sizeof(*lat_ns));
    int rc = LS_OK;
    for (size_t r = 0; r < repeats && rc == LS_OK; r++) {
        for (int kind = 0; kind < RUN_COUNT && rc == LS_OK; kind++) {
            for (int k = 0; k < 2 && rc == LS_OK; k++) {
                int impl = r % 2 ? 1 - k : k;
                rc = run_one(impl, (run_kind_t)kind, r, p, lat_ns, metrics, describe[impl],
                             BENCH_DESCRIBE_LEN);
            }
        }
        for (int m = 0; m < M_COUNT; m++)
            metrics[m].n = r + 1;
        LS_LOG_INFO("rpcbench", "round done round=%zu of=%zu", r + 1, repeats);
    }
    free(lat_ns);
    return rc;
}

int main(int argc, char **argv)
{
    rpcbench_config_t cfg;
    rpcbench_config_init(&cfg);
    const ls_opt_t opts[] = {
        {"calls", "LLMSERVE_RPCBENCH_CALLS", LS_OPT_INT, &cfg.calls,
         "timed sequential unary calls per run (0: 20000, or 1000 with --quick)", 0, 1e7},
        {"warmup", "LLMSERVE_RPCBENCH_WARMUP", LS_OPT_INT, &cfg.warmup,
         "unary calls before the timed ones (-1: 2000, or 100 with --quick)", -1, 1e8},
        {"messages", "LLMSERVE_RPCBENCH_MESSAGES", LS_OPT_INT, &cfg.messages,
         "messages per stream run, each direction (0: 200000, or 10000 with --quick)", 0, 1e9},
        {"payload-bytes", "LLMSERVE_RPCBENCH_PAYLOAD_BYTES", LS_OPT_INT, &cfg.payload_bytes,
         "filler bytes in every message (bytes)", 0, 1 << 20},
        {"server-threads", "LLMSERVE_RPCBENCH_SERVER_THREADS", LS_OPT_INT, &cfg.server_threads,
         "library server completion-queue threads (the baseline always has 1)", 1, 64},
        {"repeats", "LLMSERVE_RPCBENCH_REPEATS", LS_OPT_INT, &cfg.repeats,
         "runs per figure and implementation, alternating; the median is reported", 1,
         BENCH_MAX_REPEATS},
        {"window", "LLMSERVE_RPCBENCH_WINDOW", LS_OPT_INT, &cfg.window,
         "library streams: messages queued before the sender waits (messages; the server's "
         "bound is 4096)",
         1, 4096},
        {"backoff-us", "LLMSERVE_RPCBENCH_BACKOFF_US", LS_OPT_INT, &cfg.backoff_us,
         "library streams: how long a sender with a full window waits (microseconds)", 0, 1e6},
        {"producer", "LLMSERVE_RPCBENCH_PRODUCER", LS_OPT_STRING, &cfg.producer,
         "library streams: 'drain' refills from rpc_call_on_drain / rpc_stream_on_drain on "
         "the completion thread (as the baseline sends); 'thread' sends from an app thread "
         "that watches the queue or retries on LS_ERR_FULL (as a service whose messages come "
         "from a model does)",
         0, 0},
        {"deadline-ms", "LLMSERVE_RPCBENCH_DEADLINE_MS", LS_OPT_INT, &cfg.deadline_ms,
         "deadline of every call and stream (milliseconds)", 1, 1e8},
        {"quick", "LLMSERVE_RPCBENCH_QUICK", LS_OPT_BOOL, &cfg.quick,
         "small counts for a smoke run of a few seconds", 0, 0},
        {"json", "LLMSERVE_RPCBENCH_JSON", LS_OPT_BOOL, &cfg.json,
         "print one JSON object instead of the table", 0, 0},
    };
    ls_config_t lc = {.program = "llmserve-rpcbench", .summary = "Measures libs/rpc against plain gRPC C core on loopback (unary p50/p99/calls per s, "
        "stream messages per s each way); both servers run in this process on their own "
        "threads.  Exit 0 when every run completed, whatever the verdicts.", .opts = opts, .n_opts = sizeof(opts) / sizeof(opts[0])};
    char err[256];
    int rc = ls_config_load(&lc, argc, argv, err, sizeof(err));
    if (rc == LS_CONFIG_HELP)
        return 0;
    if (rc != LS_OK) {
        fprintf(stderr, "llmserve-rpcbench: %s\n", err);
        return 2;
    }
    if (cfg.calls == 0)
        cfg.calls = cfg.quick ? 1000 : 20000;
    if (cfg.warmup < 0)
        cfg.warmup = cfg.quick ? 100 : 2000;
    if (cfg.messages == 0)
        cfg.messages = cfg.quick ? 10000 : 200000;
    if (strcmp(cfg.producer, "drain") != 0 && strcmp(cfg.producer, "thread") != 0) {
        fprintf(stderr, "llmserve-rpcbench: --producer must be drain or thread\n");
        return 2;
    }
    ls_config_log(&lc, "rpcbench");

    bench_params_t p = {
        .warmup_calls = cfg.warmup,
        .calls = cfg.calls,
        .messages = cfg.messages,
        .payload_bytes = cfg.payload_bytes,
        .server_threads = cfg.server_threads,
        .window = cfg.window,
        .backoff_us = cfg.backoff_us,
        .app_producer = strcmp(cfg.producer, "thread") == 0,
        .deadline_ms = cfg.deadline_ms,
    };
    bench_metric_t metrics[M_COUNT] = {
        [M_P50] = {.key = "unary_p50_us", .label = "unary p50 (us)", .kind = BENCH_LATENCY},
        [M_P99] = {.key = "unary_p99_us", .label = "unary p99 (us)", .kind = BENCH_LATENCY},
        [M_CALLS] = {.key = "unary_calls_per_s",
                     .label = "unary calls/s",
                     .kind = BENCH_THROUGHPUT},
        [M_DOWN] = {.key = "stream_server_to_client_msgs_per_s",
                    .label = "stream server->client msg/s",
                    .kind = BENCH_THROUGHPUT},
        [M_UP] = {.key = "stream_client_to_server_msgs_per_s",
                  .label = "stream client->server msg/s",
                  .kind = BENCH_THROUGHPUT},
    };

    /* Held for the whole run, so gRPC is not torn down and restarted between targets. */
    grpc_init();
    int status = 1;
    char describe[2][BENCH_DESCRIBE_LEN] = {"", ""};
    rc = run_all(&p, (size_t)cfg.repeats, metrics, describe);
    if (rc != LS_OK) {
        LS_LOG_ERROR("rpcbench", "a run failed; no figures reported err=%s", ls_strerror(rc));
        goto out_shutdown;
    }
    bench_report_t report = {
        .where = "server in this process on its own threads (no fork); one implementation "
                 "alive at a time, a fresh server and connection per run",
        .describe = {describe[BENCH_BASELINE], describe[BENCH_LIBRARY]},
        .p = &p,
        .repeats = (size_t)cfg.repeats,
        .metrics = metrics,
        .n_metrics = M_COUNT,
    };
    if (cfg.json)
        bench_report_json(stdout, &report);
    else
        bench_report_table(stdout, &report);
    fflush(stdout);
    status = 0;

out_shutdown:
    grpc_shutdown();
    return status;
}
