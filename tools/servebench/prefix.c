#include "prefix.h"

#include "base/err.h"
#include "conn.h"
#include "prompt.h"
#include "rpcbench/stats.h"
#include "tally.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Beyond a request's own deadline, how long the client waits for its terminal event
 * before it gives up on the stream (transport and scheduling slack). */
#define PREFIX_WAIT_SLACK_US (5 * 1000000LL)

enum { SIDE_CACHED, SIDE_UNCACHED, SIDES };
enum { KIND_FIRST, KIND_SEQUENTIAL, KIND_CONCURRENT, KINDS };

static const char *const side_names[SIDES] = {"cached", "uncached"};

typedef struct {
    const sb_prefix_config_t *cfg;
    uint32_t vocab;
    int per_round;   /* requests per instance per round: 1 + requests + concurrency */
    int32_t *prompt; /* prefix_tokens + suffix_tokens ids; the prefix written once */
    sb_req_t *reqs[SIDES];
    int32_t *ids[SIDES]; /* per_round * max_tokens token ids of this round's requests */
    bool *ok[SIDES];     /* per_round: ended with InferenceDone in this round */
    sb_tally_t tally[SIDES][KINDS];
    int64_t first_ns[SIDES]; /* round 1's warm-up TTFT; 0 when it failed */
    uint64_t protocol_errors[SIDES];
    char first_protocol_error[SIDES][200];
    uint64_t compared, differ;
    char first_difference[200];
} prefix_run_t;

/* The round's request idx as prompt ids: the prefix, then its own suffix. */
static void make_prompt(prefix_run_t *p, int round, int idx)
{
    const sb_prefix_config_t *cfg = p->cfg;
    uint64_t stream = 1 + (uint64_t)round * (uint64_t)p->per_round + (uint64_t)idx;
    sb_prompt_fill(p->prompt + cfg->prefix_tokens, (size_t)cfg->suffix_tokens, cfg->seed, stream,
                   p->vocab);
}

static int submit(prefix_run_t *p, sb_conn_t *c, int side, int round, int idx, int kind)
{
    const sb_prefix_config_t *cfg = p->cfg;
    make_prompt(p, round, idx);
    sb_req_t *r = &p->reqs[side][idx];
    r->ids = p->ids[side] + (size_t)idx * (size_t)cfg->max_tokens;
    r->ids_cap = (size_t)cfg->max_tokens;
    p->ok[side][idx] = false;
    sb_submit_t s = {.prompt = p->prompt,
                     .n_prompt = (size_t)(cfg->prefix_tokens + cfg->suffix_tokens),
                     .max_tokens = cfg->max_tokens,
                     .priority = 0,
                     .timeout_ms = cfg->timeout_ms};
    int rc = sb_conn_submit(c, r, &s);
    if (rc != LS_OK) {
        char m[96];
        snprintf(m, sizeof(m), "the submit could not be sent: %s", ls_strerror(rc));
        sb_tally_add_error(&p->tally[side][kind], GRPC_STATUS_UNAVAILABLE, m);
    }
    return rc;
}

/* Waits for request idx until deadline_ns and counts it.  Returns false when the client
 * gave up waiting (the stream is then not to be trusted with more requests). */
static bool finish(prefix_run_t *p, sb_conn_t *c, int side, int round, int idx, int kind,
                   int64_t deadline_ns)
{
    sb_req_t *r = &p->reqs[side][idx];
    int64_t left_us = (deadline_ns - bench_now_ns()) / 1000;
    if (!sb_conn_wait(c, r, left_us > 0 ? left_us : 0)) {
        char m[128];
        snprintf(m, sizeof(m), "no terminal event within %u ms of the submit (the client gave up)",
                 (unsigned)(p->cfg->timeout_ms + PREFIX_WAIT_SLACK_US / 1000));
        sb_tally_add_error(&p->tally[side][kind], GRPC_STATUS_DEADLINE_EXCEEDED, m);
        return false;
    }
    sb_tally_add(&p->tally[side][kind], r);
    p->ok[side][idx] = r->code == 0;
    if (kind == KIND_FIRST && round == 0 && r->code == 0 && r->first_ns)
        p->first_ns[side] = r->first_ns - r->sent_ns;
    return true;
}

static int64_t wait_deadline(const prefix_run_t *p)
{
    return bench_now_ns() + ((int64_t)p->cfg->timeout_ms * 1000 + PREFIX_WAIT_SLACK_US) * 1000;
}

/* One instance's part of a round on a stream of its own. */
static void run_side(prefix_run_t *p, int side, int round)
{
    const sb_prefix_config_t *cfg = p->cfg;
    sb_instance_t *in = side == SIDE_CACHED ? cfg->cached : cfg->uncached;
    memset(p->ok[side], 0, (size_t)p->per_round * sizeof(bool));
    sb_conn_t *c = sb_conn_open(in->ch, cfg->md);
    if (!c) {
        sb_tally_add_error(&p->tally[side][KIND_FIRST], GRPC_STATUS_UNAVAILABLE,
                           "cannot open a Generate stream");
        return;
    }
    int idx = 0, first, sent = 0;
    int64_t deadline;
    if (submit(p, c, side, round, idx, KIND_FIRST) != LS_OK ||
        !finish(p, c, side, round, idx, KIND_FIRST, wait_deadline(p)))
        goto out_close;
    for (idx = 1; idx <= cfg->requests; idx++)
        if (submit(p, c, side, round, idx, KIND_SEQUENTIAL) != LS_OK ||
            !finish(p, c, side, round, idx, KIND_SEQUENTIAL, wait_deadline(p)))
            goto out_close;
    first = idx;
    for (; sent < cfg->concurrency; sent++)
        if (submit(p, c, side, round, first + sent, KIND_CONCURRENT) != LS_OK)
            break;
    deadline = wait_deadline(p);
    for (int i = 0; i < sent; i++)
        if (!finish(p, c, side, round, first + i, KIND_CONCURRENT, deadline))
            goto out_close;
out_close:
    if (sb_conn_protocol_errors(c) && !p->protocol_errors[side])
        snprintf(p->first_protocol_error[side], sizeof(p->first_protocol_error[side]), "%s",
                 sb_conn_first_protocol_error(c));
    p->protocol_errors[side] += sb_conn_protocol_errors(c);
    sb_conn_close(c, PREFIX_WAIT_SLACK_US);
}

/* The same request on both instances: the same greedy ids, in number and value. */
static void compare_round(prefix_run_t *p, int round)
{
    size_t max = (size_t)p->cfg->max_tokens;
    for (int idx = 0; idx < p->per_round; idx++) {
        if (!p->ok[SIDE_CACHED][idx] || !p->ok[SIDE_UNCACHED][idx])
            continue;
        const sb_req_t *a = &p->reqs[SIDE_CACHED][idx], *b = &p->reqs[SIDE_UNCACHED][idx];
        p->compared++;
        size_t n = a->n_tokens < max ? a->n_tokens : max;
        bool same = a->n_tokens == b->n_tokens && memcmp(a->ids, b->ids, n * sizeof(int32_t)) == 0;
        if (same)
            continue;
        if (p->differ++ == 0) {
            size_t at = 0;
            while (at < n && at < b->n_tokens && a->ids[at] == b->ids[at])
                at++;
            snprintf(p->first_difference, sizeof(p->first_difference),
                     "round %d request %d: %u and %u tokens, first difference at token %zu",
                     round + 1, idx, a->n_tokens, b->n_tokens, at);
        }
    }
}

static void row(sb_tally_t *t, const char *side, const char *kind)
{
    double n = t->ok ? (double)t->ok : 1;
    printf("  %-9s %-14s %9.2f %9.2f %9.2f %9.1f %9.1f %6llu %6llu\n", side, kind,
           sb_tally_ttft_ms(t, 0.5), sb_tally_ttft_ms(t, 0.95), sb_tally_ttft_mean_ms(t),
           (double)t->cached_tokens / n, (double)t->usage_cached / n, (unsigned long long)t->ok,
           (unsigned long long)t->errors);
}

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0;
}

static void report(prefix_run_t *p)
{
    const sb_prefix_config_t *cfg = p->cfg;
    char conc[32];
    snprintf(conc, sizeof(conc), "concurrent %d", cfg->concurrency);
    printf("\n  %-9s %-14s %9s %9s %9s %9s %9s %6s %6s\n", "instance", "requests", "TTFT p50",
           "p95", "mean ms", "cached", "usage", "ok", "errors");
    for (int kind = KIND_SEQUENTIAL; kind < KINDS; kind++) {
        if (kind == KIND_CONCURRENT && cfg->concurrency == 0)
            continue;
        for (int side = 0; side < SIDES; side++)
            row(&p->tally[side][kind], side_names[side],
                kind == KIND_SEQUENTIAL ? "one at a time" : conc);
    }
    for (int side = 0; side < SIDES; side++)
        row(&p->tally[side][KIND_FIRST], side_names[side], "first");
    printf("  (cached: mean InferenceStarted.cached_tokens; usage: mean "
           "Usage.cached_prompt_tokens; first: each round's warm-up request, round 1's TTFT "
           "cached %.2f ms, uncached %.2f ms)\n",
           (double)p->first_ns[SIDE_CACHED] / 1e6, (double)p->first_ns[SIDE_UNCACHED] / 1e6);
    printf("\n");
    for (int kind = KIND_SEQUENTIAL; kind < KINDS; kind++) {
        if (kind == KIND_CONCURRENT && cfg->concurrency == 0)
            continue;
        sb_tally_t *c = &p->tally[SIDE_CACHED][kind], *u = &p->tally[SIDE_UNCACHED][kind];
        printf("uncached / cached TTFT (%s): p50 x%.2f  p95 x%.2f\n",
               kind == KIND_SEQUENTIAL ? "one at a time" : conc,
               ratio(sb_tally_ttft_ms(u, 0.5), sb_tally_ttft_ms(c, 0.5)),
               ratio(sb_tally_ttft_ms(u, 0.95), sb_tally_ttft_ms(c, 0.95)));
    }
    printf("outputs identical: %s (%llu requests compared, %llu differ%s%s)\n",
           p->differ == 0 && p->compared > 0 ? "yes" : "no", (unsigned long long)p->compared,
           (unsigned long long)p->differ, p->differ ? "; " : "", p->first_difference);
    for (int side = 0; side < SIDES; side++) {
        sb_tally_t all = {0};
        for (int kind = 0; kind < KINDS; kind++)
            sb_tally_merge(&all, &p->tally[side][kind]);
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "errors (%s): ", side_names[side]);
        sb_tally_print_errors(&all, prefix);
        sb_tally_free(&all);
        if (p->protocol_errors[side])
            printf("stream contract broken (%s): %llu events (first: %s)\n", side_names[side],
                   (unsigned long long)p->protocol_errors[side], p->first_protocol_error[side]);
    }
}

/* 0 when the two instances can be compared, else 2 with the reason on stderr. */
static int check_instances(const sb_prefix_config_t *cfg)
{
    const sb_instance_t *a = cfg->cached, *b = cfg->uncached;
    if (a->vocab_size != b->vocab_size || a->seq_len != b->seq_len ||
        strcmp(a->model, b->model) != 0) {
        fprintf(stderr, "servebench: --cached and --uncached serve different models (%s and %s)\n",
                a->model, b->model);
        return 2;
    }
    if (!a->prefix_cache || b->prefix_cache) {
        fprintf(stderr,
                "servebench: --cached must have the prefix cache and --uncached not (Info says "
                "%s and %s)\n",
                a->prefix_cache ? "on" : "off", b->prefix_cache ? "on" : "off");
        return 2;
    }
    if (a->vocab_size <= SB_PROMPT_FIRST_ID) {
        fprintf(stderr, "servebench: a vocabulary of %u tokens is too small\n", a->vocab_size);
        return 2;
    }
    long need = (long)cfg->prefix_tokens + cfg->suffix_tokens + cfg->max_tokens;
    if (need > (long)a->seq_len) {
        fprintf(stderr,
                "servebench: --prefix-tokens + --suffix-tokens + --max-tokens (%ld) exceed the "
                "model's seq_len (%u)\n",
                need, a->seq_len);
        return 2;
    }
    return 0;
}

int sb_prefix_run(const sb_prefix_config_t *cfg)
{
    int status = check_instances(cfg);
    if (status)
        return status;
    prefix_run_t p = {.cfg = cfg, .vocab = cfg->cached->vocab_size};
    p.per_round = 1 + cfg->requests + cfg->concurrency;
    p.prompt = calloc((size_t)(cfg->prefix_tokens + cfg->suffix_tokens), sizeof(int32_t));
    for (int side = 0; side < SIDES; side++) {
        p.reqs[side] = calloc((size_t)p.per_round, sizeof(sb_req_t));
        p.ids[side] = calloc((size_t)p.per_round * (size_t)cfg->max_tokens, sizeof(int32_t));
        p.ok[side] = calloc((size_t)p.per_round, sizeof(bool));
        if (!p.reqs[side] || !p.ids[side] || !p.ok[side])
            status = 1;
    }
    if (!p.prompt || status) {
        fprintf(stderr, "servebench: out of memory for %d requests\n", p.per_round);
        status = 1;
        goto out_free;
    }
    sb_prompt_fill(p.prompt, (size_t)cfg->prefix_tokens, cfg->seed, 0, p.vocab);
    printf("== prefix: %d rounds; per instance and round: 1 first, %d one at a time, %d at "
           "once; prompts of %d shared + %d own token ids, %d tokens each (greedy, EOS "
           "ignored)\n",
           cfg->rounds, cfg->requests, cfg->concurrency, cfg->prefix_tokens, cfg->suffix_tokens,
           cfg->max_tokens);
    fflush(stdout);
    for (int round = 0; round < cfg->rounds; round++) {
        /* the instance that goes first alternates, so neither always meets a cold
         * process or a warm CPU */
        int first = round % 2 ? SIDE_UNCACHED : SIDE_CACHED;
        run_side(&p, first, round);
        run_side(&p, 1 - first, round);
        compare_round(&p, round);
        fflush(stdout);
        fprintf(stderr, "servebench: prefix round %d of %d done\n", round + 1, cfg->rounds);
    }
    report(&p);
    for (int side = 0; side < SIDES; side++)
        for (int kind = 0; kind < KINDS; kind++)
            if (p.tally[side][kind].errors)
                status = 1;
    if (p.protocol_errors[SIDE_CACHED] || p.protocol_errors[SIDE_UNCACHED] || p.differ ||
        p.compared == 0)
        status = 1;
out_free:
    for (int side = 0; side < SIDES; side++) {
        for (int kind = 0; kind < KINDS; kind++)
            sb_tally_free(&p.tally[side][kind]);
        free(p.reqs[side]);
        free(p.ids[side]);
        free(p.ok[side]);
    }
    free(p.prompt);
    return status;
}
