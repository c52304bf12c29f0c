#include "expo.h"

#include "svc/metric_names.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The comments of metric_names.h as HELP lines. */
static const struct {
    const char *name;
    const char *help;
} HELP[] = {
    {M_UP, "1 while the process serves, 0 while it drains."},
    {M_GRPC_HANDLED, "gRPC calls that ended, by full method name and status code."},
    {M_REPORT_DROPPED, "Samples the reporter dropped (buffer full, collector away)."},
    {M_TRACE_EXPORTED, "Spans the OTLP exporter delivered."},
    {M_TRACE_DROPPED, "Spans the OTLP exporter dropped, by reason (queue_full, export_failed, "
                      "shutdown)."},
    {M_TTFT, "Router: request start to first token out, seconds."},
    {M_ITL, "Router: time between consecutive tokens of a request, seconds."},
    {M_E2E, "Router: request start to its terminal event, seconds."},
    {M_ROUTER_QUEUE, "Router: time a request waited in the router before it was sent on "
                     "(routing, and its queue while the pool was at capacity), seconds."},
    {M_CACHE_LOOKUP, "Router: the cache lookup, seconds, by result (hit, miss, error, skipped)."},
    {M_REQUESTS, "Router: requests that ended, by pool, model, version, code, finish reason and "
                 "cache."},
    {M_TOKENS, "Router: tokens streamed to clients."},
    {M_FALLBACKS, "Router: requests sent to another pool or instance after a failure."},
    {M_RETRIES, "Router: retries before the first token."},
    {M_FAILOVERS, "Router: answers continued on another instance after tokens were sent."},
    {M_IN_FLIGHT, "Router: requests in flight."},
    {M_ROUTER_QUEUE_DEPTH, "Router: requests waiting in the router's queue for room in a pool."},
    {M_ROUTER_BY_PRIORITY, "Router: requests routed, by scheduling class."},
    {M_ROUTER_PREFIX, "Router: picks decided by a request's prefix (kept) or away from it "
                      "for load (spilled)."},
    {M_INF_QUEUE, "Inference: arrival to admission into the batch, seconds."},
    {M_INF_PREFILL, "Inference: admission to the first token (the prompt's prefill), seconds."},
    {M_INF_DECODE, "Inference: first token to the last, seconds."},
    {M_INF_STEP, "Inference: one forward step, seconds."},
    {M_INF_BATCH, "Inference: sequences in one forward step (requests)."},
    {M_INF_PROMPT_TOKENS, "Inference: prompt tokens prefilled."},
    {M_INF_GEN_TOKENS, "Inference: tokens generated."},
    {M_INF_RUNNING, "Inference: requests in the running batch."},
    {M_INF_WAITING, "Inference: requests queued for admission."},
    {M_INF_KV_USED, "Inference: KV blocks in use."},
    {M_INF_KV_CAPACITY, "Inference: KV blocks in all."},
    {M_INF_QUEUE_LIMIT, "Inference: the admission queue's bound (--max-queue)."},
    {M_INF_REFUSED, "Inference: requests refused at admission, by reason (queue_full, too_long, "
                    "draining, device_lost)."},
    {M_INF_PREFIX_HIT_TOKENS, "Inference: prompt tokens whose KV the prefix cache held "
                              "(not computed)."},
    {M_INF_PREEMPTIONS, "Inference: running requests preempted for a better class, by the "
                        "preempted one's priority."},
    {M_CACHE_LOOKUPS, "Cache: lookups that reached the tier."},
    {M_CACHE_VETOES, "Cache: semantic hits turned down because the prompts differ in a "
                     "number, unit, negation, name or direction."},
    {M_CACHE_HITS, "Cache: lookups the tier answered."},
    {M_CACHE_STORES, "Cache: answers stored."},
    {M_CACHE_EVICTIONS, "Cache: entries the L1 evicted."},
    {M_CACHE_MEMCACHED, "Cache: one memcached call, seconds, by op (get, set)."},
    {M_CACHE_BREAKER_OPEN, "Cache: 1 while the memcached circuit breaker is open."},
    {M_CACHE_DEGRADED, "Cache: 1 while the cache serves without memcached (degraded)."},
};

const char *expo_help(const char *name)
{
    for (size_t i = 0; i < sizeof(HELP) / sizeof(HELP[0]); i++)
        if (strcmp(HELP[i].name, name) == 0)
            return HELP[i].help;
    return "Reported to the llmserve collector (not in libs/svc/metric_names.h).";
}

char *expo_format_double(char *buf, double v)
{
    if (isnan(v))
        return strcpy(buf, "NaN");
    if (isinf(v))
        return strcpy(buf, v > 0 ? "+Inf" : "-Inf");
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, 32, "%.*g", prec, v);
        if (prec == 17 || strtod(buf, NULL) == v)
            break;
    }
    return buf;
}

/* ---- a growing buffer ------------------------------------------------------------------ */

typedef struct {
    char *p;
    size_t len, cap;
    bool failed;
} buf_t;

static bool reserve(buf_t *b, size_t more)
{
    if (b->failed)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void put(buf_t *b, const char *s, size_t n)
{
    if (!reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(buf_t *b, const char *s)
{
    put(b, s, strlen(s));
}

static void putf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* HELP text escapes backslash and line feed. */
static void put_header(buf_t *b, const char *name, const char *help, const char *type)
{
    putf(b, "# HELP %s ", name);
    for (const char *c = help; *c; c++) {
        if (*c == '\\')
            puts_(b, "\\\\");
        else if (*c == '\n')
            puts_(b, "\\n");
        else
            put(b, c, 1);
    }
    putf(b, "\n# TYPE %s %s\n", name, type);
}

/* Label values escaped for the text format (backslash, double quote, line feed). */
static void put_escaped(buf_t *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            put(b, "\\", 1);
        if (*v == '\n')
            puts_(b, "\\n");
        else
            put(b, v, 1);
    }
}

/* name{labels[,extra]} value */
static void put_sample(buf_t *b, const char *name, const char *suffix, const char *labels,
                       const char *extra, const char *value)
{
    puts_(b, name);
    puts_(b, suffix);
    bool has = labels && *labels;
    if (has || extra) {
        put(b, "{", 1);
        if (has)
            puts_(b, labels);
        if (has && extra)
            put(b, ",", 1);
        if (extra)
            puts_(b, extra);
        put(b, "}", 1);
    }
    put(b, " ", 1);
    puts_(b, value);
    put(b, "\n", 1);
}

static void put_own(buf_t *b, const store_snap_t *snap)
{
    const store_stats_t *st = &snap->stats;
    char v[32], le[64];
    put_header(b, "llmserve_collector_rejected_total",
               "Samples (single histogram values) the collector refused, by reason.", "counter");
    for (int r = 0; r < REJECT_N_REASONS; r++) {
        snprintf(le, sizeof(le), "reason=\"%s\"", validate_reason_name((reject_reason_t)r));
        snprintf(v, sizeof(v), "%" PRIu64, st->rejected[r]);
        put_sample(b, "llmserve_collector_rejected_total", "", le, NULL, v);
    }
    put_header(b, "llmserve_collector_reports_total", "Reports received on Report streams.",
               "counter");
    snprintf(v, sizeof(v), "%" PRIu64, st->reports);
    put_sample(b, "llmserve_collector_reports_total", "", NULL, NULL, v);
    put_header(b, "llmserve_collector_samples_total",
               "Samples stored (each histogram value counts one).", "counter");
    snprintf(v, sizeof(v), "%" PRIu64, st->samples);
    put_sample(b, "llmserve_collector_samples_total", "", NULL, NULL, v);
    put_header(b, "llmserve_collector_series", "Series the collector holds.", "gauge");
    snprintf(v, sizeof(v), "%zu", st->series);
    put_sample(b, "llmserve_collector_series", "", NULL, NULL, v);
    put_header(b, "llmserve_collector_series_limit",
               "Series the collector holds at most (--max-series); new ones past it are refused.",
               "gauge");
    snprintf(v, sizeof(v), "%zu", st->series_limit);
    put_sample(b, "llmserve_collector_series_limit", "", NULL, NULL, v);
    put_header(b, "llmserve_instance_up",
               "1 while the instance's Report stream is open and it reported within the "
               "staleness period, 0 after.",
               "gauge");
    for (size_t i = 0; i < snap->n_instances; i++) {
        const store_inst_info_t *in = &snap->instances[i];
        puts_(b, "llmserve_instance_up{instance=\"");
        put_escaped(b, in->instance);
        puts_(b, "\",service=\"");
        put_escaped(b, in->service);
        puts_(b, in->up ? "\"} 1\n" : "\"} 0\n");
    }
}

static void put_histogram(buf_t *b, const store_snap_family_t *f, const store_snap_series_t *s)
{
    char v[32], le[48], bound[32];
    uint64_t cum = 0;
    for (size_t k = 0; k <= f->buckets->n; k++) {
        cum += s->counts[k];
        if (k < f->buckets->n)
            snprintf(le, sizeof(le), "le=\"%s\"", expo_format_double(bound, f->buckets->bounds[k]));
        else
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        snprintf(v, sizeof(v), "%" PRIu64, cum);
        put_sample(b, f->name, "_bucket", s->labels, le, v);
    }
    put_sample(b, f->name, "_sum", s->labels, NULL, expo_format_double(v, s->value));
    snprintf(v, sizeof(v), "%" PRIu64, s->count);
    put_sample(b, f->name, "_count", s->labels, NULL, v);
}

char *expo_render(const store_snap_t *snap, size_t *len)
{
    buf_t b = {0};
    reserve(&b, 0);
    put_own(&b, snap);
    for (size_t i = 0; i < snap->n_families; i++) {
        const store_snap_family_t *f = &snap->families[i];
        const char *type = f->kind == STORE_HISTOGRAM ? "histogram"
                           : f->kind == STORE_COUNTER ? "counter"
                                                      : "gauge";
        put_header(&b, f->name, expo_help(f->name), type);
        for (size_t j = 0; j < f->n_series; j++) {
            const store_snap_series_t *s = &f->series[j];
            char v[32];
            if (f->kind == STORE_HISTOGRAM)
                put_histogram(&b, f, s);
            else
                put_sample(&b, f->name, "", s->labels, NULL, expo_format_double(v, s->value));
        }
    }
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
