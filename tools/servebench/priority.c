/*
 * priority.c - the phases of the priority mode.
 *
 * Lock rules: phase_t.mu guards batch_tally; the loops' stop flag and stream counter are
 * atomics.  The prober runs on the calling thread and keeps its own tally.
 */
#define _GNU_SOURCE
#include "priority.h"

#include "base/clock.h"
#include "base/err.h"
#include "conn.h"
#include "llmserve/v1/common.pb-c.h"
#include "prompt.h"
#include "rpcbench/stats.h"
#include "tally.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Beyond a request's own deadline, how long the client waits for its terminal event
 * before it gives up on the stream. */
#define PRIORITY_WAIT_SLACK_US (5 * 1000000LL)
/* Longest wait for the batch loops to fill the instance's batch before probing. */
#define PRIORITY_SATURATE_US (30 * 1000000LL)

enum { PHASE_PRIORITIES, PHASE_NONE, PHASES };
static const char *const phase_names[PHASES] = {"priorities", "no priorities"};

/* What a phase measured; merged over rounds. */
typedef struct {
    sb_tally_t probes;
    sb_tally_t batch;
    uint64_t probes_sent;
    uint64_t window_tokens; /* batch tokens received during the probing windows */
    double window_s;        /* the probing windows' length, seconds */
    uint64_t protocol_errors;
    char first_protocol_error[200];
    int unsaturated; /* rounds whose batch did not fill before probing */
} phase_result_t;

/* One phase in progress. */
typedef struct {
    const sb_priority_config_t *cfg;
    sb_conn_t *batch; /* the batch loops' stream */
    int batch_priority;
    atomic_bool stop;
    atomic_uint_fast64_t next_stream; /* prompt streams of the run, shared by all phases */
    pthread_mutex_t mu;
    sb_tally_t batch_tally; /* under mu */
} phase_t;

typedef struct {
    phase_t *ph;
    pthread_t thread;
    int32_t *prompt;
    sb_req_t req;
} loop_t;

static int64_t wait_us(const sb_priority_config_t *cfg)
{
    return (int64_t)cfg->timeout_ms * 1000 + PRIORITY_WAIT_SLACK_US;
}

static void batch_error(phase_t *ph, int code, const char *message)
{
    pthread_mutex_lock(&ph->mu);
    sb_tally_add_error(&ph->batch_tally, code, message);
    pthread_mutex_unlock(&ph->mu);
}

/* A batch loop: a new request as soon as the last one ended, until stop. */
static void *batch_loop(void *arg)
{
    loop_t *l = arg;
    phase_t *ph = l->ph;
    const sb_priority_config_t *cfg = ph->cfg;
    sb_submit_t s = {.prompt = l->prompt,
                     .n_prompt = (size_t)cfg->prompt_tokens,
                     .max_tokens = cfg->batch_tokens,
                     .priority = ph->batch_priority,
                     .timeout_ms = cfg->timeout_ms};
    while (!atomic_load(&ph->stop)) {
        sb_prompt_fill(l->prompt, (size_t)cfg->prompt_tokens, cfg->seed,
                       atomic_fetch_add(&ph->next_stream, 1), cfg->target->vocab_size);
        int rc = sb_conn_submit(ph->batch, &l->req, &s);
        if (rc != LS_OK) {
            char m[96];
            snprintf(m, sizeof(m), "a batch submit could not be sent: %s", ls_strerror(rc));
            batch_error(ph, GRPC_STATUS_UNAVAILABLE, m);
            break;
        }
        if (!sb_conn_wait(ph->batch, &l->req, wait_us(cfg))) {
            batch_error(ph, GRPC_STATUS_DEADLINE_EXCEEDED,
                        "a batch request got no terminal event in time (the client gave up)");
            break;
        }
        pthread_mutex_lock(&ph->mu);
        sb_tally_add(&ph->batch_tally, &l->req);
        pthread_mutex_unlock(&ph->mu);
        /* a refusal comes at once: do not spin on it */
        if (l->req.code != 0)
            ls_sleep_us((int64_t)cfg->interval_ms * 1000);
    }
    return NULL;
}

static void keep_protocol_errors(phase_result_t *res, sb_conn_t *c)
{
    if (!c)
        return;
    if (sb_conn_protocol_errors(c) && !res->protocol_errors)
        snprintf(res->first_protocol_error, sizeof(res->first_protocol_error), "%s",
                 sb_conn_first_protocol_error(c));
    res->protocol_errors += sb_conn_protocol_errors(c);
}

/* Waits until the batch loops have started as many requests as the batch holds. */
static bool saturate(phase_t *ph)
{
    const sb_priority_config_t *cfg = ph->cfg;
    uint64_t want = (uint64_t)cfg->batch_streams;
    if (want > cfg->target->max_batch)
        want = cfg->target->max_batch;
    int64_t until = ls_now_us() + PRIORITY_SATURATE_US;
    while (sb_conn_started(ph->batch) < want && ls_now_us() < until)
        ls_sleep_us(2000);
    return sb_conn_started(ph->batch) >= want;
}

/* Probes every interval_ms for duration_s on c, then waits for them; counts them in
 * tally, and adds the window's length and the batch tokens received in it to res. */
static void probe(phase_t *ph, sb_conn_t *c, sb_req_t *probes, size_t cap, int priority,
                  phase_result_t *res, sb_tally_t *tally)
{
    const sb_priority_config_t *cfg = ph->cfg;
    int32_t *prompt = calloc((size_t)cfg->prompt_tokens, sizeof(int32_t));
    if (!prompt) {
        sb_tally_add_error(tally, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for a prompt");
        return;
    }
    sb_submit_t s = {.prompt = prompt,
                     .n_prompt = (size_t)cfg->prompt_tokens,
                     .max_tokens = cfg->interactive_tokens,
                     .priority = priority,
                     .timeout_ms = cfg->timeout_ms};
    int64_t t0 = ls_now_us(), t_end = t0 + (int64_t)cfg->duration_s * 1000000;
    uint64_t tokens0 = sb_conn_tokens(ph->batch);
    size_t sent = 0;
    for (size_t i = 0; i < cap; i++) {
        int64_t at = t0 + (int64_t)i * cfg->interval_ms * 1000;
        if (at >= t_end)
            break;
        int64_t now = ls_now_us();
        if (at > now)
            ls_sleep_us(at - now);
        sb_prompt_fill(prompt, (size_t)cfg->prompt_tokens, cfg->seed,
                       atomic_fetch_add(&ph->next_stream, 1), cfg->target->vocab_size);
        int rc = sb_conn_submit(c, &probes[sent], &s);
        res->probes_sent++;
        if (rc != LS_OK) {
            char m[96];
            snprintf(m, sizeof(m), "a probe could not be sent: %s", ls_strerror(rc));
            sb_tally_add_error(tally, GRPC_STATUS_UNAVAILABLE, m);
            continue;
        }
        sent++;
    }
    int64_t now = ls_now_us();
    if (t_end > now)
        ls_sleep_us(t_end - now);
    res->window_tokens += sb_conn_tokens(ph->batch) - tokens0;
    res->window_s += (double)(ls_now_us() - t0) / 1e6;
    int64_t deadline = ls_now_us() + wait_us(cfg);
    for (size_t i = 0; i < sent; i++) {
        int64_t left = deadline - ls_now_us();
        if (!sb_conn_wait(c, &probes[i], left > 0 ? left : 0)) {
            sb_tally_add_error(tally, GRPC_STATUS_DEADLINE_EXCEEDED,
                               "a probe got no terminal event in time (the client gave up)");
            continue;
        }
        sb_tally_add(tally, &probes[i]);
    }
    free(prompt);
}

/* One phase: the load, the probes, the drain.  Adds what it measured to res and prints
 * the round's line. */
static void run_phase(const sb_priority_config_t *cfg, int phase, int round,
                      atomic_uint_fast64_t *next_stream, phase_result_t *res)
{
    phase_t ph = {.cfg = cfg};
    ph.batch_priority = phase == PHASE_PRIORITIES ? LLMSERVE__V1__PRIORITY__PRIORITY_BATCH
                                                  : LLMSERVE__V1__PRIORITY__PRIORITY_UNSPECIFIED;
    int probe_priority = phase == PHASE_PRIORITIES ? LLMSERVE__V1__PRIORITY__PRIORITY_INTERACTIVE
                                                   : LLMSERVE__V1__PRIORITY__PRIORITY_UNSPECIFIED;
    atomic_init(&ph.stop, false);
    atomic_init(&ph.next_stream, atomic_load(next_stream));
    pthread_mutex_init(&ph.mu, NULL);
    size_t cap = (size_t)cfg->duration_s * 1000 / (size_t)cfg->interval_ms + 1;
    sb_tally_t probes = {0};
    sb_req_t *reqs = calloc(cap, sizeof(*reqs));
    loop_t *loops = calloc((size_t)cfg->batch_streams, sizeof(*loops));
    int started = 0;
    uint64_t sent0 = res->probes_sent, tokens0 = res->window_tokens;
    double window0 = res->window_s;
    ph.batch = sb_conn_open(cfg->target->ch, cfg->md);
    sb_conn_t *pc = sb_conn_open(cfg->target->ch, cfg->md);
    if (!reqs || !loops || !ph.batch || !pc) {
        sb_tally_add_error(&probes, GRPC_STATUS_UNAVAILABLE,
                           "cannot open the Generate streams (or out of memory)");
        goto out_close;
    }
    for (; started < cfg->batch_streams; started++) {
        loop_t *l = &loops[started];
        l->ph = &ph;
        l->prompt = calloc((size_t)cfg->prompt_tokens, sizeof(int32_t));
        if (!l->prompt || pthread_create(&l->thread, NULL, batch_loop, l) != 0) {
            free(l->prompt);
            sb_tally_add_error(&probes, GRPC_STATUS_RESOURCE_EXHAUSTED,
                               "cannot start a batch loop");
            break;
        }
    }
    if (!saturate(&ph))
        res->unsaturated++;
    probe(&ph, pc, reqs, cap, probe_priority, res, &probes);
out_close:
    /* the drain: no new batch requests, every one in flight runs to its end */
    atomic_store(&ph.stop, true);
    for (int i = 0; i < started; i++) {
        pthread_join(loops[i].thread, NULL);
        free(loops[i].prompt);
    }
    keep_protocol_errors(res, ph.batch);
    keep_protocol_errors(res, pc);
    sb_conn_close(ph.batch, PRIORITY_WAIT_SLACK_US);
    sb_conn_close(pc, PRIORITY_WAIT_SLACK_US);
    atomic_store(next_stream, atomic_load(&ph.next_stream));
    double window = res->window_s - window0;
    printf("  round %d %-14s probe TTFT p50 %8.2f  p95 %8.2f ms, %llu of %llu probes ok, "
           "batch %.0f tokens/s\n",
           round + 1, phase_names[phase], sb_tally_ttft_ms(&probes, 0.5),
           sb_tally_ttft_ms(&probes, 0.95), (unsigned long long)probes.ok,
           (unsigned long long)(res->probes_sent - sent0),
           window > 0 ? (double)(res->window_tokens - tokens0) / window : 0);
    fflush(stdout);
    sb_tally_merge(&res->probes, &probes);
    sb_tally_merge(&res->batch, &ph.batch_tally);
    sb_tally_free(&probes);
    sb_tally_free(&ph.batch_tally);
    pthread_mutex_destroy(&ph.mu);
    free(loops);
    free(reqs);
}

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0;
}

static void report(const sb_priority_config_t *cfg, phase_result_t *res)
{
    printf("\n  %-14s %9s %9s %9s %13s %14s %7s\n", "phase", "TTFT p50", "p95", "p99 ms",
           "probes ok", "batch tok/s", "errors");
    double tps[PHASES];
    for (int ph = 0; ph < PHASES; ph++) {
        phase_result_t *r = &res[ph];
        tps[ph] = r->window_s > 0 ? (double)r->window_tokens / r->window_s : 0;
        char ok[32];
        snprintf(ok, sizeof(ok), "%llu/%llu", (unsigned long long)r->probes.ok,
                 (unsigned long long)r->probes_sent);
        printf("  %-14s %9.2f %9.2f %9.2f %13s %14.0f %7llu\n", phase_names[ph],
               sb_tally_ttft_ms(&r->probes, 0.5), sb_tally_ttft_ms(&r->probes, 0.95),
               sb_tally_ttft_ms(&r->probes, 0.99), ok, tps[ph],
               (unsigned long long)(r->probes.errors + r->batch.errors));
    }
    printf("  (TTFT: the probes'; batch tok/s: batch tokens received during the probing "
           "windows, %d s per phase and round; batch requests done: priorities %llu, no "
           "priorities %llu)\n",
           cfg->duration_s, (unsigned long long)res[PHASE_PRIORITIES].batch.ok,
           (unsigned long long)res[PHASE_NONE].batch.ok);
    printf("\nno priorities / priorities: probe TTFT p95 x%.2f  p50 x%.2f;  batch tokens/s x%.2f\n",
           ratio(sb_tally_ttft_ms(&res[PHASE_NONE].probes, 0.95),
                 sb_tally_ttft_ms(&res[PHASE_PRIORITIES].probes, 0.95)),
           ratio(sb_tally_ttft_ms(&res[PHASE_NONE].probes, 0.5),
                 sb_tally_ttft_ms(&res[PHASE_PRIORITIES].probes, 0.5)),
           ratio(tps[PHASE_NONE], tps[PHASE_PRIORITIES]));
    for (int ph = 0; ph < PHASES; ph++) {
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "errors (%s, probes): ", phase_names[ph]);
        sb_tally_print_errors(&res[ph].probes, prefix);
        snprintf(prefix, sizeof(prefix), "errors (%s, batch): ", phase_names[ph]);
        sb_tally_print_errors(&res[ph].batch, prefix);
        if (res[ph].protocol_errors)
            printf("stream contract broken (%s): %llu events (first: %s)\n", phase_names[ph],
                   (unsigned long long)res[ph].protocol_errors, res[ph].first_protocol_error);
        if (res[ph].unsaturated)
            printf("note (%s): the batch loops did not fill the instance's batch (%u requests) "
                   "within %lld s before probing, in %d of %d rounds\n",
                   phase_names[ph], cfg->target->max_batch,
                   (long long)(PRIORITY_SATURATE_US / 1000000), res[ph].unsaturated, cfg->rounds);
    }
}

int sb_priority_run(const sb_priority_config_t *cfg)
{
    const sb_instance_t *in = cfg->target;
    if (in->vocab_size <= SB_PROMPT_FIRST_ID) {
        fprintf(stderr, "servebench: a vocabulary of %u tokens is too small\n", in->vocab_size);
        return 2;
    }
    long need =
        (long)cfg->prompt_tokens +
        (cfg->batch_tokens > cfg->interactive_tokens ? cfg->batch_tokens : cfg->interactive_tokens);
    if (need > (long)in->seq_len) {
        fprintf(stderr,
                "servebench: --prompt-tokens + --batch-tokens (%ld) exceed the model's seq_len "
                "(%u)\n",
                need, in->seq_len);
        return 2;
    }
    printf("== priority: %d rounds of both phases; %d batch loops of %d-token requests, a "
           "%d-token probe every %d ms for %d s; prompts of %d token ids\n",
           cfg->rounds, cfg->batch_streams, cfg->batch_tokens, cfg->interactive_tokens,
           cfg->interval_ms, cfg->duration_s, cfg->prompt_tokens);
    fflush(stdout);
    phase_result_t res[PHASES];
    memset(res, 0, sizeof(res));
    atomic_uint_fast64_t next_stream;
    atomic_init(&next_stream, 1);
    for (int round = 0; round < cfg->rounds; round++) {
        int first = round % 2 ? PHASE_NONE : PHASE_PRIORITIES;
        run_phase(cfg, first, round, &next_stream, &res[first]);
        run_phase(cfg, 1 - first, round, &next_stream, &res[1 - first]);
    }
    report(cfg, res);
    int status = 0;
    for (int ph = 0; ph < PHASES; ph++) {
        if (res[ph].probes.errors || res[ph].batch.errors || res[ph].protocol_errors ||
            res[ph].probes.n == 0)
            status = 1;
        sb_tally_free(&res[ph].probes);
        sb_tally_free(&res[ph].batch);
    }
    return status;
}
