/*
 * llmbench - load generator and latency report for the router.
 *
 * N concurrent bidirectional streams, each with one request in flight at a time (a new
 * one as soon as the last ends), prompts drawn from a mix:
 *   simple   short story openings, each different (the small pool; cache misses)
 *   complex  code and reasoning questions, each different (the large pool)
 *   repeat   a few fixed prompts asked again and again (cache hits after the first)
 * Reports TTFT, inter-token latency and end-to-end p50/p95/p99, tokens/s, requests/s, the
 * cache hit rate, the split between pools, and the cache-hit path on its own.
 *
 * With --direct HOST:PORT (an inference instance, normally the small pool's only one) it
 * first runs the same load of simple prompts straight against Inference.Generate and
 * then through the router with the cache bypassed and the pool hinted, so the two differ
 * only by the router: that difference is the router's overhead, measured in one run.
 * With --router none as well, only the direct run happens: a benchmark of one
 * inference instance on its own (tools/gpu-check.sh runs it on the CUDA backend).
 *
 * With --tls-router HOST:PORT (a second router on the same instances, serving TLS) it
 * runs that same load of simple prompts through the plaintext router and through the
 * TLS one, alternating (plain, TLS, TLS, plain, ...: --compare-rounds rounds), and
 * reports what TLS costs: TTFT, end to end and requests/s of one against the other.
 * The --tls-* options then apply to the TLS router only; --api-key to every router call.
 *
 * With --metrics HOST:PORT (the collector, llmserve-metrics) it prints, after the mixed
 * run, the collector's view of that run beside its own: TTFT, inter-token and end-to-end
 * quantiles and the request rate as the services reported them (the collector's
 * quantiles are estimated from histogram buckets, so they agree to a bucket's width).
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "grpc/health/v1/health.pb-c.h"
#include "llmserve/v1/inference.pb-c.h"
#include "llmserve/v1/metrics.pb-c.h"
#include "llmserve/v1/router.pb-c.h"
#include "rpc/client.h"
#include "svc/client.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    double *v;
    size_t n, cap;
} series_t;

static void push(series_t *s, double x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->v = realloc(s->v, s->cap * sizeof(double));
        if (!s->v) {
            fprintf(stderr, "llmbench: out of memory\n");
            exit(1);
        }
    }
    s->v[s->n++] = x;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(series_t *s, double p)
{
    if (s->n == 0)
        return 0;
    qsort(s->v, s->n, sizeof(double), cmp_double);
    size_t i = (size_t)(p / 100.0 * (double)(s->n - 1) + 0.5);
    return s->v[i < s->n ? i : s->n - 1];
}

typedef enum { MODE_ROUTER, MODE_DIRECT } mode_t_;

typedef struct {
    /* config */
    mode_t_ mode;
    int streams, requests, max_tokens;
    int w_simple, w_complex, w_repeat;
    bool bypass_cache;
    const char *hint;
    const rpc_md_t *metadata; /* of every stream (authorization) */
    /* progress */
    atomic_int issued, finished, errors;
    /* results, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    series_t ttft_ms, itl_ms, e2e_ms, hit_ttft_ms, hit_e2e_ms;
    uint64_t tokens, hits, lookups;
    char pools[8][33];
    uint64_t pool_count[8];
    int live_streams;
    char first_error[300];
    int64_t t0_us, t1_us;
} run_t;

typedef struct {
    run_t *run;
    rpc_stream_t *s;
    int seq;
    int64_t t_send, t_first, t_last;
    bool cache_hit;
    char pool[33];
    char id[32];
} worker_t;

static const char *const simple_openers[] = {
    "Once upon a time there was a little", "The cat sat by the window and",
    "Tom and Lily went to the park to",    "One sunny day a small bird",
    "In a quiet town lived an old",        "The dog found a red ball under the",
};
static const char *const complex_prompts[] = {
    "Explain step by step why quicksort is O(n log n) on average and prove the bound.",
    "Compare these two C functions and explain which is faster and why: ```int f(int *a,int n){int "
    "s=0;for(int i=0;i<n;i++)s+=a[i];return s;}```",
    "Solve the equation 3x + 7 = 22 and explain each step. Why does it work? What if x were a "
    "matrix?",
    "Analyze the trade-offs between a hash table and a balanced tree; evaluate memory, speed and "
    "ordering.",
};
static const char *const repeat_prompts[] = {
    "What is the capital of France?",
    "Tell me a story about a dragon.",
    "Write a haiku about rain.",
};

/* Picks prompt number seq by the mix; writes it into buf.  Returns the kind (0 simple,
 * 1 complex, 2 repeat). */
static int next_prompt(run_t *r, int seq, char *buf, size_t len)
{
    int total = r->w_simple + r->w_complex + r->w_repeat;
    int x = (int)((unsigned)seq * 2654435761u % (unsigned)(total ? total : 1));
    if (x < r->w_simple || total == 0) {
        snprintf(buf, len, "%s %d", simple_openers[seq % 6], seq);
        return 0;
    }
    if (x < r->w_simple + r->w_complex) {
        snprintf(buf, len, "%s (case %d)", complex_prompts[seq % 4], seq);
        return 1;
    }
    snprintf(buf, len, "%s", repeat_prompts[seq % 3]);
    return 2;
}

static void send_next(worker_t *w);

static void record(worker_t *w, bool ok, const char *err)
{
    run_t *r = w->run;
    int64_t now = ls_now_us();
    pthread_mutex_lock(&r->mu);
    if (ok) {
        double e2e = (now - w->t_send) / 1000.0;
        push(&r->e2e_ms, e2e);
        if (w->t_first) {
            push(&r->ttft_ms, (w->t_first - w->t_send) / 1000.0);
            if (w->cache_hit) {
                push(&r->hit_ttft_ms, (w->t_first - w->t_send) / 1000.0);
                push(&r->hit_e2e_ms, e2e);
            }
        }
        r->hits += w->cache_hit;
        if (w->pool[0]) {
            int i = 0;
            while (i < 8 && r->pools[i][0] && strcmp(r->pools[i], w->pool) != 0)
                i++;
            if (i < 8) {
                snprintf(r->pools[i], sizeof(r->pools[i]), "%s", w->pool);
                r->pool_count[i]++;
            }
        }
    } else {
        atomic_fetch_add(&r->errors, 1);
        if (!r->first_error[0])
            snprintf(r->first_error, sizeof(r->first_error), "%s", err);
    }
    pthread_mutex_unlock(&r->mu);
    atomic_fetch_add(&r->finished, 1);
}

static void on_token(worker_t *w, bool cache_hit)
{
    int64_t now = ls_now_us();
    run_t *r = w->run;
    pthread_mutex_lock(&r->mu);
    if (!w->t_first)
        w->t_first = now;
    else if (!cache_hit)
        push(&r->itl_ms, (now - w->t_last) / 1000.0);
    r->tokens++;
    pthread_mutex_unlock(&r->mu);
    w->t_last = now;
}

static void router_on_message(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    (void)s;
    worker_t *w = ud;
    const Llmserve__V1__GenerateEvent *ev = (const Llmserve__V1__GenerateEvent *)msg;
    switch (ev->kind_case) {
    case LLMSERVE__V1__GENERATE_EVENT__KIND_STARTED:
        w->cache_hit = ev->started->cache_hit;
        snprintf(w->pool, sizeof(w->pool), "%s", ev->started->pool);
        break;
    case LLMSERVE__V1__GENERATE_EVENT__KIND_TOKEN:
        on_token(w, ev->token->cache_hit);
        break;
    case LLMSERVE__V1__GENERATE_EVENT__KIND_DONE:
        record(w, true, NULL);
        send_next(w);
        break;
    case LLMSERVE__V1__GENERATE_EVENT__KIND_ERROR:
        record(w, false, ev->error->message);
        send_next(w);
        break;
    default:
        break;
    }
}

static void direct_on_message(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    (void)s;
    worker_t *w = ud;
    const Llmserve__V1__InferenceEvent *ev = (const Llmserve__V1__InferenceEvent *)msg;
    switch (ev->kind_case) {
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_TOKEN:
        on_token(w, false);
        break;
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_DONE:
        record(w, true, NULL);
        send_next(w);
        break;
    case LLMSERVE__V1__INFERENCE_EVENT__KIND_ERROR:
        record(w, false, ev->error->message);
        send_next(w);
        break;
    default:
        break;
    }
}

static void on_status(rpc_stream_t *s, void *ud, const rpc_status_t *st, const rpc_md_t *t)
{
    (void)s;
    (void)t;
    worker_t *w = ud;
    run_t *r = w->run;
    pthread_mutex_lock(&r->mu);
    if (st->code != GRPC_STATUS_OK && !r->first_error[0])
        snprintf(r->first_error, sizeof(r->first_error), "stream ended: %s", st->details);
    /* the run ends with its last stream, not at the next progress poll (which would
     * round every run's length up to 100 ms) */
    if (--r->live_streams == 0)
        r->t1_us = ls_now_us();
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Sends the worker's next request, or half-closes when the run's quota is taken. */
static void send_next(worker_t *w)
{
    run_t *r = w->run;
    int seq = atomic_fetch_add(&r->issued, 1);
    if (seq >= r->requests) {
        rpc_stream_close_send(w->s);
        return;
    }
    char prompt[512];
    /* The comparison runs (direct, and hinted through the router) use simple prompts
     * only, the same ones in both. */
    if (r->mode == MODE_DIRECT || r->hint)
        snprintf(prompt, sizeof(prompt), "%s %d", simple_openers[seq % 6], seq);
    else
        next_prompt(r, seq, prompt, sizeof(prompt));
    snprintf(w->id, sizeof(w->id), "b%d", seq);
    w->t_send = ls_now_us();
    w->t_first = w->t_last = 0;
    w->cache_hit = false;
    w->pool[0] = '\0';
    Llmserve__V1__SamplingParams sp = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    sp.max_tokens = r->max_tokens;
    sp.ignore_eos = true; /* fixed lengths make runs comparable */
    int rc;
    if (r->mode == MODE_DIRECT) {
        Llmserve__V1__InferenceSubmit sub = LLMSERVE__V1__INFERENCE_SUBMIT__INIT;
        sub.request_id = w->id;
        sub.prompt = prompt;
        sub.sampling = &sp;
        Llmserve__V1__InferenceRequest req = LLMSERVE__V1__INFERENCE_REQUEST__INIT;
        req.kind_case = LLMSERVE__V1__INFERENCE_REQUEST__KIND_SUBMIT;
        req.submit = &sub;
        rc = rpc_stream_send(w->s, &req.base);
    } else {
        Llmserve__V1__GenerateSubmit sub = LLMSERVE__V1__GENERATE_SUBMIT__INIT;
        sub.request_id = w->id;
        sub.prompt = prompt;
        sub.sampling = &sp;
        sub.model_hint = (char *)(r->hint ? r->hint : "");
        sub.cache_policy = r->bypass_cache ? LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_BYPASS
                                           : LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_DEFAULT;
        Llmserve__V1__GenerateRequest req = LLMSERVE__V1__GENERATE_REQUEST__INIT;
        req.kind_case = LLMSERVE__V1__GENERATE_REQUEST__KIND_SUBMIT;
        req.submit = &sub;
        rc = rpc_stream_send(w->s, &req.base);
    }
    if (rc != LS_OK) {
        record(w, false, "send failed");
        rpc_stream_close_send(w->s);
    }
}

static void progress(run_t *r, const char *label, bool final)
{
    int done = atomic_load(&r->finished);
    double secs = (ls_now_us() - r->t0_us) / 1e6;
    int width = 30, fill = r->requests ? done * width / r->requests : width;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r%-8s [%s] %5d/%d  %6.1f req/s  errors %d%s", label, bar, done, r->requests,
            secs > 0 ? done / secs : 0.0, atomic_load(&r->errors), final ? "\n" : "");
}

static int run_load(run_t *r, rpc_channel_t *ch, const char *label, bool show_progress)
{
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    worker_t *ws = calloc((size_t)r->streams, sizeof(*ws));
    rpc_stream_handler_t h = {r->mode == MODE_DIRECT ? direct_on_message : router_on_message,
                              on_status};
    const char *method =
        r->mode == MODE_DIRECT ? "/llmserve.v1.Inference/Generate" : "/llmserve.v1.Router/Generate";
    const ProtobufCMessageDescriptor *desc = r->mode == MODE_DIRECT
                                                 ? &llmserve__v1__inference_event__descriptor
                                                 : &llmserve__v1__generate_event__descriptor;
    r->t0_us = ls_now_us();
    rpc_call_opts_t opts = {.wait_for_ready = true, .metadata = r->metadata};
    for (int i = 0; i < r->streams; i++) {
        ws[i].run = r;
        ws[i].s = rpc_stream_open(ch, method, desc, &h, &ws[i], &opts, 0);
        if (!ws[i].s) {
            fprintf(stderr, "llmbench: cannot open stream %d\n", i);
            return -1;
        }
        pthread_mutex_lock(&r->mu);
        r->live_streams++;
        pthread_mutex_unlock(&r->mu);
    }
    for (int i = 0; i < r->streams; i++)
        send_next(&ws[i]);
    pthread_mutex_lock(&r->mu);
    while (r->live_streams > 0) {
        pthread_mutex_unlock(&r->mu);
        if (show_progress)
            progress(r, label, false);
        usleep(100000);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    if (show_progress)
        progress(r, label, true);
    for (int i = 0; i < r->streams; i++)
        rpc_stream_release(ws[i].s);
    free(ws);
    return 0;
}

static void line(const char *name, series_t *s)
{
    printf("  %-22s p50 %8.2f  p95 %8.2f  p99 %8.2f ms  (n=%zu)\n", name, pct(s, 50), pct(s, 95),
           pct(s, 99), s->n);
}

static void report(run_t *r, const char *title)
{
    double secs = (r->t1_us - r->t0_us) / 1e6;
    int ok = atomic_load(&r->finished) - atomic_load(&r->errors);
    printf("%s\n", title);
    line("TTFT", &r->ttft_ms);
    line("inter-token latency", &r->itl_ms);
    line("end to end", &r->e2e_ms);
    printf("  throughput             %.1f tokens/s, %.1f requests/s over %.2f s (%d ok, %d "
           "errors)\n",
           r->tokens / secs, ok / secs, secs, ok, atomic_load(&r->errors));
    if (r->mode == MODE_ROUTER) {
        printf("  cache hit rate         %.1f %% (%llu of %d)\n", ok ? 100.0 * r->hits / ok : 0.0,
               (unsigned long long)r->hits, ok);
        printf("  pools                 ");
        for (int i = 0; i < 8 && r->pools[i][0]; i++)
            printf(" %s %.1f %% (%llu)", r->pools[i], ok ? 100.0 * r->pool_count[i] / ok : 0.0,
                   (unsigned long long)r->pool_count[i]);
        printf("\n");
        if (r->hit_e2e_ms.n) {
            line("cache-hit TTFT", &r->hit_ttft_ms);
            line("cache-hit end to end", &r->hit_e2e_ms);
        }
    }
    if (r->first_error[0])
        printf("  first error            %s\n", r->first_error);
}

static void run_free(run_t *r)
{
    free(r->ttft_ms.v);
    free(r->itl_ms.v);
    free(r->e2e_ms.v);
    free(r->hit_ttft_ms.v);
    free(r->hit_e2e_ms.v);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
}

/* One metric from the collector over the last window_s seconds; false when it cannot
 * be had (the reason printed once). */
static bool collector_query(rpc_channel_t *mch, const char *name, uint32_t window_s,
                            Llmserve__V1__QueryResponse **out)
{
    Llmserve__V1__QueryRequest req = LLMSERVE__V1__QUERY_REQUEST__INIT;
    req.name = (char *)name;
    req.window_seconds = window_s;
    rpc_status_t st;
    rpc_call_opts_t opts = {.timeout_us = 3000000};
    ProtobufCMessage *resp = NULL;
    int rc = rpc_channel_unary(mch, "/llmserve.v1.Metrics/Query", &req.base,
                               &llmserve__v1__query_response__descriptor, &opts, &resp, &st);
    if (rc != LS_OK || st.code != GRPC_STATUS_OK) {
        printf("  %-22s (collector: %s)\n", name, rc != LS_OK ? ls_strerror(rc) : st.details);
        if (resp)
            protobuf_c_message_free_unpacked(resp, NULL);
        return false;
    }
    *out = (Llmserve__V1__QueryResponse *)resp;
    return true;
}

/* The collector's view of run r next to llmbench's own figures. */
static void collector_view(rpc_channel_t *mch, const char *addr, run_t *r, int interval_ms)
{
    /* the services flush once per reporting interval: wait for the last one */
    usleep((useconds_t)(interval_ms + 500) * 1000);
    double secs = (double)(r->t1_us - r->t0_us) / 1e6;
    uint32_t window = (uint32_t)secs + 2;
    printf("\n== the collector's view of the mixed run (llmserve-metrics at %s, last %u s)\n", addr,
           window);
    struct {
        const char *name, *label;
        series_t *own;
    } hs[] = {{"llmserve_ttft_seconds", "TTFT", &r->ttft_ms},
              {"llmserve_inter_token_latency_seconds", "inter-token latency", &r->itl_ms},
              {"llmserve_request_duration_seconds", "end to end", &r->e2e_ms}};
    for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++) {
        Llmserve__V1__QueryResponse *q = NULL;
        if (!collector_query(mch, hs[i].name, window, &q))
            continue;
        printf("  %-22s p50 %8.2f  p95 %8.2f  p99 %8.2f ms  (llmbench p50 %.2f p95 %.2f p99 "
               "%.2f)\n",
               hs[i].label, q->p50 * 1e3, q->p95 * 1e3, q->p99 * 1e3, pct(hs[i].own, 50),
               pct(hs[i].own, 95), pct(hs[i].own, 99));
        protobuf_c_message_free_unpacked(&q->base, NULL);
    }
    Llmserve__V1__QueryResponse *q = NULL;
    if (collector_query(mch, "llmserve_requests_total", window, &q)) {
        printf("  %-22s %.1f requests/s over the window (llmbench %.1f over %.2f s)\n", "requests",
               q->rate, secs > 0 ? atomic_load(&r->finished) / secs : 0.0, secs);
        protobuf_c_message_free_unpacked(&q->base, NULL);
    }
}

/* A health check (every server answers it, API keys or not): false with the reason
 * printed when the server cannot be reached (down, wrong address, TLS refused). */
static bool reachable(rpc_channel_t *ch, const char *what, const char *addr)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "";
    rpc_call_opts_t o = {.timeout_us = 10000000, .wait_for_ready = true};
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    int rc =
        rpc_channel_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                          &grpc__health__v1__health_check_response__descriptor, &o, &resp, &st);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    if (rc == LS_OK && st.code == GRPC_STATUS_OK)
        return true;
    fprintf(stderr, "llmbench: %s %s is not reachable: %s\n", what, addr,
            rc == LS_OK ? st.details : ls_strerror(rc));
    return false;
}

/* Appends src's samples to dst (for results over several rounds). */
static void merge(run_t *dst, const run_t *src)
{
    const series_t *from[] = {&src->ttft_ms, &src->itl_ms, &src->e2e_ms};
    series_t *to[] = {&dst->ttft_ms, &dst->itl_ms, &dst->e2e_ms};
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < from[k]->n; i++)
            push(to[k], from[k]->v[i]);
    atomic_fetch_add(&dst->finished, atomic_load(&src->finished));
    atomic_fetch_add(&dst->errors, atomic_load(&src->errors));
    dst->tokens += src->tokens;
    dst->hits += src->hits;
    for (int i = 0; i < 8 && src->pools[i][0]; i++) {
        int j = 0;
        while (j < 8 && dst->pools[j][0] && strcmp(dst->pools[j], src->pools[i]) != 0)
            j++;
        if (j < 8) {
            snprintf(dst->pools[j], sizeof(dst->pools[j]), "%s", src->pools[i]);
            dst->pool_count[j] += src->pool_count[i];
        }
    }
    dst->t1_us += src->t1_us - src->t0_us; /* dst keeps t0 = 0: t1 is the time spent */
    if (!dst->first_error[0] && src->first_error[0])
        snprintf(dst->first_error, sizeof(dst->first_error), "%s", src->first_error);
}

static double rate(run_t *r)
{
    double secs = (double)(r->t1_us - r->t0_us) / 1e6;
    return secs > 0 ? (double)atomic_load(&r->finished) / secs : 0;
}

/* The TLS comparison: the same simple-prompt load through the plaintext router and the
 * TLS one, alternating; returns nonzero on errors. */
static int compare_tls(rpc_channel_t *plain, rpc_channel_t *tls, const rpc_md_t *md, int streams,
                       int requests, int max_tokens, const char *pool, int rounds,
                       bool progress_bar)
{
    run_t all[2] = {{.mode = MODE_ROUTER}, {.mode = MODE_ROUTER}};
    pthread_mutex_init(&all[0].mu, NULL);
    pthread_mutex_init(&all[1].mu, NULL);
    pthread_cond_init(&all[0].cv, NULL);
    pthread_cond_init(&all[1].cv, NULL);
    int status = 0;
    printf("\n== plaintext against TLS (%d rounds, %d requests each, alternating)\n", rounds,
           requests);
    for (int round = 0; round < rounds; round++) {
        double e2e[2], ttft[2], rps[2];
        for (int k = 0; k < 2; k++) {
            int which = round % 2 ? 1 - k : k; /* plain, TLS, then TLS, plain, ... */
            run_t r = {.mode = MODE_ROUTER,
                       .streams = streams,
                       .requests = requests,
                       .max_tokens = max_tokens,
                       .bypass_cache = true,
                       .hint = pool,
                       .metadata = md};
            if (run_load(&r, which ? tls : plain, which ? "tls" : "plain", progress_bar) != 0)
                status = 1;
            status |= atomic_load(&r.errors) != 0;
            e2e[which] = pct(&r.e2e_ms, 50);
            ttft[which] = pct(&r.ttft_ms, 50);
            rps[which] = rate(&r);
            merge(&all[which], &r);
            run_free(&r);
        }
        printf("   round %d: TLS / plaintext  TTFT p50 x%.2f  end to end p50 x%.2f  "
               "requests/s x%.2f\n",
               round + 1, ttft[0] > 0 ? ttft[1] / ttft[0] : 0, e2e[0] > 0 ? e2e[1] / e2e[0] : 0,
               rps[0] > 0 ? rps[1] / rps[0] : 0);
    }
    report(&all[0], "\n== plaintext router, all rounds (cache bypassed, pool hinted)");
    report(&all[1], "\n== TLS router, all rounds (cache bypassed, pool hinted)");
    double t0 = pct(&all[0].ttft_ms, 50), t1 = pct(&all[1].ttft_ms, 50);
    double e0 = pct(&all[0].e2e_ms, 50), e1 = pct(&all[1].e2e_ms, 50);
    double p0 = pct(&all[0].e2e_ms, 99), p1 = pct(&all[1].e2e_ms, 99);
    double r0 = rate(&all[0]), r1 = rate(&all[1]);
    printf("\n== TLS cost: TTFT p50 %+.2f ms (x%.2f), end to end p50 %+.2f ms (x%.2f), "
           "p99 x%.2f, requests/s x%.2f\n",
           t1 - t0, t0 > 0 ? t1 / t0 : 0, e1 - e0, e0 > 0 ? e1 / e0 : 0, p0 > 0 ? p1 / p0 : 0,
           r0 > 0 ? r1 / r0 : 0);
    run_free(&all[0]);
    run_free(&all[1]);
    return status;
}

int main(int argc, char **argv)
{
    const char *router = "127.0.0.1:7000", *direct = NULL, *mix = "simple:6,complex:2,repeat:2";
    const char *direct_pool = "small", *tls_router = NULL, *metrics = NULL;
    int64_t metrics_interval_ms = 1000;
    int64_t streams = 16, requests = 400, max_tokens = 32, direct_requests = 200;
    int64_t compare_rounds = 2;
    bool no_progress = false;
    svc_client_opts_t sec = {0};
    const ls_opt_t opts[] = {
        {"router", "LLMBENCH_ROUTER", LS_OPT_STRING, &router,
         "router address, host:port; none: no router (only the --direct run)", 0, 0},
        {"streams", NULL, LS_OPT_INT, &streams, "concurrent bidirectional streams", 1, 4096},
        {"requests", NULL, LS_OPT_INT, &requests, "requests in the mixed run (0: no mixed run)", 0,
         1e8},
        {"max-tokens", NULL, LS_OPT_INT, &max_tokens, "tokens per answer (EOS ignored)", 1,
         1 << 16},
        {"mix", NULL, LS_OPT_STRING, &mix, "prompt mix simple:W,complex:W,repeat:W", 0, 0},
        {"direct", NULL, LS_OPT_STRING, &direct,
         "inference instance to compare with (router overhead), host:port", 0, 0},
        {"direct-pool", NULL, LS_OPT_STRING, &direct_pool,
         "the router pool the comparisons hint (the --direct instance's pool)", 0, 0},
        {"direct-requests", NULL, LS_OPT_INT, &direct_requests, "requests in each comparison run",
         1, 1e8},
        {"tls-router", NULL, LS_OPT_STRING, &tls_router,
         "a router serving TLS on the same instances: compare it with --router (TLS cost)", 0, 0},
        {"compare-rounds", NULL, LS_OPT_INT, &compare_rounds,
         "rounds of the TLS comparison, each one run per router", 1, 100},
        {"no-progress", NULL, LS_OPT_BOOL, &no_progress, "no progress bar", 0, 0},
        {"metrics", "LLMBENCH_METRICS", LS_OPT_STRING, &metrics,
         "the collector (llmserve-metrics gRPC address): print its view of the mixed run", 0, 0},
        {"metrics-interval-ms", NULL, LS_OPT_INT, &metrics_interval_ms,
         "the services' reporting interval (how long to wait before asking the collector)", 0,
         60000},
        SVC_CLIENT_OPTIONS(&sec),
    };
    ls_config_t conf = {.program = "llmbench",
                        .summary = "Load generator and latency report for the llmserve router.",
                        .opts = opts,
                        .n_opts = sizeof(opts) / sizeof(opts[0])};
    char err[512];
    int rc = ls_config_load(&conf, argc, argv, err, sizeof(err));
    if (rc == LS_CONFIG_HELP)
        return 0;
    if (rc == LS_OK)
        rc = svc_client_check(&sec, err, sizeof(err));
    if (rc != LS_OK) {
        fprintf(stderr, "llmbench: %s\n", err);
        return 2;
    }
    int ws = 0, wc = 0, wr = 0;
    if (sscanf(mix, "simple:%d,complex:%d,repeat:%d", &ws, &wc, &wr) != 3 || ws < 0 || wc < 0 ||
        wr < 0 || ws + wc + wr == 0) {
        fprintf(stderr, "llmbench: --mix '%s' is not simple:W,complex:W,repeat:W\n", mix);
        return 2;
    }
    bool no_router = strcmp(router, "none") == 0;
    if (no_router && (!direct || tls_router)) {
        fprintf(stderr, "llmbench: --router none needs --direct (and no --tls-router)\n");
        return 2;
    }
    if (no_router)
        requests = 0; /* the mixed run needs the router */
    ls_log_set_level(LS_LOG_ERROR);
    rpc_client_t *client = rpc_client_create(2);
    rpc_channel_config_t secured;
    rpc_channel_config_init(&secured);
    svc_client_channel(&sec, &secured);
    /* The --tls-* options belong to the TLS router when there is one, else to --router. */
    rpc_channel_t *rch =
        no_router ? NULL : rpc_channel_create(client, router, tls_router ? NULL : &secured);
    rpc_channel_t *tch = tls_router ? rpc_channel_create(client, tls_router, &secured) : NULL;
    rpc_channel_t *dch = direct ? rpc_channel_create(client, direct, NULL) : NULL;
    if ((!rch && !no_router) || (tls_router && !tch)) {
        fprintf(stderr, "llmbench: cannot use the TLS files (see --tls-ca, --tls-cert)\n");
        return 2;
    }
    if ((rch && !reachable(rch, "router", router)) || (tch && !reachable(tch, "TLS router", tls_router)) ||
        (dch && !reachable(dch, "instance", direct))) {
        rpc_channel_destroy(rch);
        rpc_channel_destroy(tch);
        rpc_channel_destroy(dch);
        rpc_client_destroy(client);
        return 1;
    }
    rpc_md_t md = RPC_MD_INIT;
    svc_client_metadata(&sec, &md);
    int status = 0;
    printf("llmbench: %lld streams, %lld tokens per answer, router %s%s%s\n", (long long)streams,
           (long long)max_tokens, router, tls_router ? ", TLS router " : "",
           tls_router ? tls_router : "");

    if (dch) {
        run_t d = {.mode = MODE_DIRECT,
                   .streams = (int)streams,
                   .requests = (int)direct_requests,
                   .max_tokens = (int)max_tokens};
        run_t v = {.mode = MODE_ROUTER,
                   .streams = (int)streams,
                   .requests = (int)direct_requests,
                   .max_tokens = (int)max_tokens,
                   .bypass_cache = true,
                   .hint = direct_pool,
                   .metadata = &md};
        if (run_load(&d, dch, "direct", !no_progress) != 0)
            status = 1;
        report(&d, "\n== inference called directly (simple prompts)");
        status |= atomic_load(&d.errors) != 0;
        if (no_router) {
            run_free(&d);
            run_free(&v);
            goto done;
        }
        if (run_load(&v, rch, "via", !no_progress) != 0)
            status = 1;
        report(&v, "\n== the same load through the router (cache bypassed, pool hinted)");
        double d50 = pct(&d.ttft_ms, 50), v50 = pct(&v.ttft_ms, 50);
        double de = pct(&d.e2e_ms, 50), ve = pct(&v.e2e_ms, 50);
        printf("\n== router overhead: TTFT p50 +%.2f ms (x%.2f), end to end p50 +%.2f ms "
               "(x%.2f), requests/s x%.2f\n",
               v50 - d50, d50 > 0 ? v50 / d50 : 0, ve - de, de > 0 ? ve / de : 0,
               (double)(atomic_load(&v.finished)) / ((v.t1_us - v.t0_us) / 1e6) /
                   ((double)atomic_load(&d.finished) / ((d.t1_us - d.t0_us) / 1e6)));
        status |= atomic_load(&d.errors) || atomic_load(&v.errors);
        run_free(&d);
        run_free(&v);
    }
    if (tch)
        status |= compare_tls(rch, tch, &md, (int)streams, (int)direct_requests, (int)max_tokens,
                              direct_pool, (int)compare_rounds, !no_progress);
    if (requests > 0) {
        run_t m = {.mode = MODE_ROUTER,
                   .streams = (int)streams,
                   .requests = (int)requests,
                   .max_tokens = (int)max_tokens,
                   .w_simple = ws,
                   .w_complex = wc,
                   .w_repeat = wr,
                   .metadata = &md};
        if (run_load(&m, rch, "mix", !no_progress) != 0)
            status = 1;
        char title[160];
        snprintf(title, sizeof(title), "\n== mixed load through the router (mix %s)", mix);
        report(&m, title);
        if (metrics) {
            rpc_channel_t *mch = rpc_channel_create(client, metrics, NULL);
            if (mch && reachable(mch, "collector", metrics))
                collector_view(mch, metrics, &m, (int)metrics_interval_ms);
            rpc_channel_destroy(mch);
        }
        status |= atomic_load(&m.errors) != 0;
        run_free(&m);
    }
done:
    rpc_channel_destroy(rch);
    rpc_channel_destroy(tch);
    rpc_channel_destroy(dch);
    rpc_client_destroy(client);
    rpc_md_clear(&md);
    return status;
}
