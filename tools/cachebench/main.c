/*
 * llmserve-cachebench - lookups per second and latency of llmserve-cache through its
 * gRPC stream, from a client on the same machine.
 *
 * Phases, each on `--streams` Session streams with `--window` lookups in flight per
 * stream: "l1" asks for one stored answer again and again (L1 hits); "hit" cycles over
 * `--keys` stored answers (memcached hits when the service runs with --l1-bytes 0);
 * "miss" asks for answers never stored (a memcached round trip that finds nothing).
 * Each lookup's latency is from its send to its answer; every answer's source is
 * counted, so the table says which tier really answered.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "llmserve/v1/cache.pb-c.h"
#include "rpc/client.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *target;
    int64_t requests;
    int64_t window;
    int64_t streams;
    int64_t keys;
    int64_t value_bytes;
    const char *phases;
} bench_config_t;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rpc_stream_t *stream;
    int64_t *sent_ns; /* by id */
    int64_t *lat_ns;  /* by id */
    int in_flight;
    int64_t done;
    int64_t by_source[3];
    int64_t hits, errors;
    bool ended;
} lane_t;

static void on_msg(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    (void)s;
    lane_t *l = ud;
    int64_t t = now_ns();
    const Llmserve__V1__CacheResponse *r = (const Llmserve__V1__CacheResponse *)msg;
    pthread_mutex_lock(&l->mu);
    l->lat_ns[r->id] = t - l->sent_ns[r->id];
    if (r->kind_case == LLMSERVE__V1__CACHE_RESPONSE__KIND_LOOKUP) {
        if (r->lookup->hit)
            l->hits++;
        if (r->lookup->source < 3)
            l->by_source[r->lookup->source]++;
    } else if (r->kind_case == LLMSERVE__V1__CACHE_RESPONSE__KIND_ERROR) {
        l->errors++;
    }
    l->in_flight--;
    l->done++;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static void on_status(rpc_stream_t *s, void *ud, const rpc_status_t *st, const rpc_md_t *t)
{
    (void)s;
    (void)t;
    lane_t *l = ud;
    pthread_mutex_lock(&l->mu);
    if (st->code != GRPC_STATUS_OK)
        fprintf(stderr, "stream ended: %d %s\n", st->code, st->details);
    l->ended = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

typedef struct {
    lane_t *lane;
    const bench_config_t *cfg;
    const char *phase;
    int64_t n;
    int index;
} driver_t;

static void make_prompt(char *buf, size_t len, const char *phase, int64_t i, int64_t keys, int lane)
{
    if (strcmp(phase, "l1") == 0)
        snprintf(buf, len, "cachebench hot question");
    else if (strcmp(phase, "hit") == 0)
        snprintf(buf, len, "cachebench stored question %lld", (long long)(i % keys));
    else
        snprintf(buf, len, "cachebench never stored %d %lld %lld", lane, (long long)i,
                 (long long)now_ns());
}

static void *drive(void *arg)
{
    driver_t *d = arg;
    lane_t *l = d->lane;
    Llmserve__V1__SamplingParams sp = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    Llmserve__V1__CacheKey key = LLMSERVE__V1__CACHE_KEY__INIT;
    Llmserve__V1__CacheLookup lk = LLMSERVE__V1__CACHE_LOOKUP__INIT;
    Llmserve__V1__CacheRequest req = LLMSERVE__V1__CACHE_REQUEST__INIT;
    key.model = "bench";
    key.sampling = &sp;
    lk.key = &key;
    req.kind_case = LLMSERVE__V1__CACHE_REQUEST__KIND_LOOKUP;
    req.lookup = &lk;
    char prompt[128];
    for (int64_t i = 0; i < d->n; i++) {
        make_prompt(prompt, sizeof(prompt), d->phase, i + d->index * 7919, d->cfg->keys, d->index);
        key.prompt = prompt;
        req.id = (uint64_t)i;
        pthread_mutex_lock(&l->mu);
        while (l->in_flight >= d->cfg->window && !l->ended)
            pthread_cond_wait(&l->cv, &l->mu);
        l->in_flight++;
        l->sent_ns[i] = now_ns();
        pthread_mutex_unlock(&l->mu);
        if (rpc_stream_send(l->stream, &req.base) != LS_OK) {
            fprintf(stderr, "send failed\n");
            break;
        }
    }
    pthread_mutex_lock(&l->mu);
    while (l->done < d->n && !l->ended)
        pthread_cond_wait(&l->cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t quantile(const int64_t *sorted, size_t n, double q)
{
    size_t rank = (size_t)(q * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

/* Stores the answers the hit and l1 phases look for, on one stream, window 64. */
static int seed_answers(rpc_channel_t *ch, const bench_config_t *cfg)
{
    lane_t l = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    int64_t n = cfg->keys + 1;
    l.sent_ns = calloc((size_t)n, sizeof(int64_t));
    l.lat_ns = calloc((size_t)n, sizeof(int64_t));
    rpc_stream_handler_t h = {on_msg, on_status};
    rpc_call_opts_t opts = {.wait_for_ready = true};
    l.stream = rpc_stream_open(ch, "/llmserve.v1.Cache/Session",
                               &llmserve__v1__cache_response__descriptor, &h, &l, &opts, 0);
    if (!l.stream)
        return -1;
    char *text = malloc((size_t)cfg->value_bytes + 1);
    memset(text, 'a', (size_t)cfg->value_bytes);
    text[cfg->value_bytes] = '\0';
    Llmserve__V1__SamplingParams sp = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    Llmserve__V1__CacheKey key = LLMSERVE__V1__CACHE_KEY__INIT;
    Llmserve__V1__CacheStore st = LLMSERVE__V1__CACHE_STORE__INIT;
    Llmserve__V1__CacheRequest req = LLMSERVE__V1__CACHE_REQUEST__INIT;
    key.model = "bench";
    key.sampling = &sp;
    st.key = &key;
    st.text = text;
    st.finish_reason = LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS;
    req.kind_case = LLMSERVE__V1__CACHE_REQUEST__KIND_STORE;
    req.store = &st;
    char prompt[128];
    for (int64_t i = 0; i < n; i++) {
        if (i == cfg->keys)
            snprintf(prompt, sizeof(prompt), "cachebench hot question");
        else
            snprintf(prompt, sizeof(prompt), "cachebench stored question %lld", (long long)i);
        key.prompt = prompt;
        req.id = (uint64_t)i;
        pthread_mutex_lock(&l.mu);
        while (l.in_flight >= 64)
            pthread_cond_wait(&l.cv, &l.mu);
        l.in_flight++;
        pthread_mutex_unlock(&l.mu);
        rpc_stream_send(l.stream, &req.base);
    }
    rpc_stream_close_send(l.stream);
    pthread_mutex_lock(&l.mu);
    while (!l.ended)
        pthread_cond_wait(&l.cv, &l.mu);
    pthread_mutex_unlock(&l.mu);
    rpc_stream_release(l.stream);
    free(text);
    free(l.sent_ns);
    free(l.lat_ns);
    return l.errors ? -1 : 0;
}

static void run_phase(rpc_channel_t *ch, const bench_config_t *cfg, const char *phase)
{
    int S = (int)cfg->streams;
    int64_t per = cfg->requests / S;
    lane_t *lanes = calloc((size_t)S, sizeof(lane_t));
    driver_t *drv = calloc((size_t)S, sizeof(driver_t));
    pthread_t *th = calloc((size_t)S, sizeof(pthread_t));
    rpc_stream_handler_t h = {on_msg, on_status};
    rpc_call_opts_t opts = {.wait_for_ready = true};
    for (int i = 0; i < S; i++) {
        pthread_mutex_init(&lanes[i].mu, NULL);
        pthread_cond_init(&lanes[i].cv, NULL);
        lanes[i].sent_ns = calloc((size_t)per, sizeof(int64_t));
        lanes[i].lat_ns = calloc((size_t)per, sizeof(int64_t));
        lanes[i].stream =
            rpc_stream_open(ch, "/llmserve.v1.Cache/Session",
                            &llmserve__v1__cache_response__descriptor, &h, &lanes[i], &opts, 0);
        drv[i] = (driver_t){&lanes[i], cfg, phase, per / 10, i};
    }
    /* Warm-up: a tenth of the requests, not measured. */
    for (int i = 0; i < S; i++)
        pthread_create(&th[i], NULL, drive, &drv[i]);
    for (int i = 0; i < S; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < S; i++) {
        lanes[i].done = 0;
        lanes[i].hits = lanes[i].errors = 0;
        memset(lanes[i].by_source, 0, sizeof(lanes[i].by_source));
        drv[i].n = per;
    }
    int64_t t0 = now_ns();
    for (int i = 0; i < S; i++)
        pthread_create(&th[i], NULL, drive, &drv[i]);
    for (int i = 0; i < S; i++)
        pthread_join(th[i], NULL);
    int64_t elapsed = now_ns() - t0;

    size_t total = (size_t)(per * S);
    int64_t *all = malloc(total * sizeof(int64_t));
    int64_t hits = 0, errors = 0, src[3] = {0};
    for (int i = 0; i < S; i++) {
        memcpy(all + (size_t)i * (size_t)per, lanes[i].lat_ns, (size_t)per * sizeof(int64_t));
        hits += lanes[i].hits;
        errors += lanes[i].errors;
        for (int k = 0; k < 3; k++)
            src[k] += lanes[i].by_source[k];
        rpc_stream_close_send(lanes[i].stream);
    }
    qsort(all, total, sizeof(int64_t), cmp_i64);
    printf("| %-4s | %3d x %-3d | %8zu | %9.0f | %7.1f | %7.1f | %7.1f | %6.1f%% | l1=%lld mc=%lld "
           "none=%lld err=%lld |\n",
           phase, S, (int)cfg->window, total, (double)total / ((double)elapsed / 1e9),
           quantile(all, total, 0.50) / 1e3, quantile(all, total, 0.99) / 1e3,
           quantile(all, total, 0.999) / 1e3, 100.0 * (double)hits / (double)total,
           (long long)src[1], (long long)src[2], (long long)src[0], (long long)errors);
    fflush(stdout);
    for (int i = 0; i < S; i++) {
        pthread_mutex_lock(&lanes[i].mu);
        while (!lanes[i].ended)
            pthread_cond_wait(&lanes[i].cv, &lanes[i].mu);
        pthread_mutex_unlock(&lanes[i].mu);
        rpc_stream_release(lanes[i].stream);
        free(lanes[i].sent_ns);
        free(lanes[i].lat_ns);
    }
    free(all);
    free(lanes);
    free(drv);
    free(th);
}

int main(int argc, char **argv)
{
    bench_config_t cfg = {
        .target = "127.0.0.1:50052", /* llmserve-cache */
        .requests = 20000,           /* measured lookups per phase */
        .window = 1,                 /* lookups in flight per stream */
        .streams = 1,
        .keys = 2000,       /* stored answers the hit phase cycles over */
        .value_bytes = 512, /* answer text size */
        .phases = "l1,hit,miss",
    };
    const ls_opt_t opts[] = {
        {"target", "CACHEBENCH_TARGET", LS_OPT_STRING, &cfg.target, "llmserve-cache host:port", 0,
         0},
        {"requests", "CACHEBENCH_REQUESTS", LS_OPT_INT, &cfg.requests,
         "measured lookups per phase (plus 10% warm-up)", 1, 1e9},
        {"window", "CACHEBENCH_WINDOW", LS_OPT_INT, &cfg.window, "lookups in flight per stream", 1,
         4096},
        {"streams", "CACHEBENCH_STREAMS", LS_OPT_INT, &cfg.streams, "Session streams", 1, 1024},
        {"keys", "CACHEBENCH_KEYS", LS_OPT_INT, &cfg.keys,
         "stored answers the hit phase cycles over", 1, 1e7},
        {"value-bytes", "CACHEBENCH_VALUE_BYTES", LS_OPT_INT, &cfg.value_bytes,
         "answer text size in bytes", 1, 1 << 20},
        {"phases", "CACHEBENCH_PHASES", LS_OPT_STRING, &cfg.phases,
         "comma-separated phases: l1, hit, miss", 0, 0},
    };
    ls_config_t conf = {.program = "llmserve-cachebench", .summary = "Lookups/s and latency of llmserve-cache through Cache.Session.", .opts = opts, .n_opts = sizeof(opts) / sizeof(opts[0])};
    char err[256];
    int rc = ls_config_load(&conf, argc, argv, err, sizeof(err));
    if (rc == LS_CONFIG_HELP)
        return 0;
    if (rc != LS_OK) {
        fprintf(stderr, "llmserve-cachebench: %s\n", err);
        return 2;
    }
    rpc_client_t *client = rpc_client_create(1);
    rpc_channel_t *ch = client ? rpc_channel_create(client, cfg.target, NULL) : NULL;
    if (!ch || seed_answers(ch, &cfg) != 0) {
        fprintf(stderr, "llmserve-cachebench: cannot store the benchmark answers at %s\n",
                cfg.target);
        return 1;
    }
    printf("| phase | streams x window | lookups | lookups/s | p50 us | p99 us | p99.9 us | hits | "
           "answered by |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    char phases[64];
    snprintf(phases, sizeof(phases), "%s", cfg.phases);
    for (char *save = NULL, *p = strtok_r(phases, ",", &save); p; p = strtok_r(NULL, ",", &save))
        run_phase(ch, &cfg, p);
    rpc_channel_destroy(ch);
    rpc_client_destroy(client);
    return 0;
}
