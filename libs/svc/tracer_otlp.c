/*
 * tracer_otlp.c - the OTLP/HTTP JSON tracer of tracer_otlp.h.
 *
 * A span lives in its own allocation from start to end; end appends it, as it is, to
 * the queue, and the exporter thread ("svc-otlp") takes batches off the queue, turns
 * them into JSON and POSTs them with its own curl easy handle (kept across requests so
 * that the connection is reused).  Serializing on the exporter thread keeps the callers'
 * cost to one list append.
 *
 * Lock rules: mu guards the queue, stop, the instance id and the statistics.  It is never
 * held while JSON is built or a request is made; the exporter takes a batch out of the
 * queue and works on it alone.  cv (CLOCK_MONOTONIC) wakes the exporter for a full batch
 * or the stop; it also times the back-off between retries, so that destroy shortens it.
 */
#define _GNU_SOURCE
#include "svc/tracer_otlp.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/utf8.h"
#include "svc/metric_names.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#ifndef LLMSERVE_VERSION
#define LLMSERVE_VERSION "0.0.0"
#endif

#define MOD "otlp"
#define SCOPE_NAME "llmserve"
#define MAX_RETRY_AFTER_S 86400 /* a longer Retry-After is read as this (the export gives up) */
#define MAX_BODY_KEPT 4096      /* of an answer's body, for partialSuccess and the logs */

/* ---- spans ------------------------------------------------------------------------- */

typedef enum { ATTR_STR, ATTR_INT, ATTR_DOUBLE, ATTR_STRS } attr_type_t;

typedef struct {
    char *key;
    attr_type_t type;
    union {
        char *s;
        int64_t i;
        double d;
        struct {
            char **v;
            size_t n;
        } a;
    } v;
} attr_t;

typedef struct {
    char *name;
    uint64_t time_ns;
} event_t;

typedef struct otlp_span {
    svc_span_t base; /* first: the tracer.h contract */
    struct otlp_span *next;
    uint8_t trace_id[16], span_id[8], parent_id[8];
    bool has_parent;
    svc_span_kind_t kind;
    char *name;
    uint64_t start_ns, end_ns;
    attr_t attrs[SVC_OTLP_MAX_ATTRS + 1]; /* the last for rpc.grpc.status_code alone */
    size_t n_attrs;
    uint32_t dropped_attrs;
    event_t events[SVC_OTLP_MAX_EVENTS];
    size_t n_events;
    uint32_t dropped_events;
    int status; /* 0 unset, 1 ok, 2 error */
    char *status_msg;
} otlp_span_t;

typedef struct {
    svc_tracer_t base; /* first: the tracer.h contract */
    svc_otlp_config_t cfg;
    uint64_t ratio_bound; /* traceidratio: sampled when the id's value is below it */
    CURL *curl;           /* the exporter thread's */
    struct curl_slist *hdrs;
    pthread_t thread;

    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    bool stop;
    int64_t stop_deadline_us; /* ls_now_us clock; INT64_MAX until destroy */
    char *instance;
    otlp_span_t *head, **tail;
    size_t n_queued;
    atomic_uint_fast64_t started, sampled; /* counted without mu: start takes no lock */
    uint64_t exported, dropped, failed, retries, requests;
    int state; /* exporter's: 0 ok, else the failure last logged (status, or -curl code) */
    bool partial_logged;
    uint64_t rng; /* the back-off's jitter and the ids' fallback; mu held */
} otlp_tracer_t;

static uint64_t now_unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* at_us (ls_now_us clock; 0 = now) as Unix nanoseconds: now on the wall clock less how
 * long ago at_us was.  A time in the future counts as now. */
static uint64_t at_unix_ns(int64_t at_us)
{
    uint64_t now = now_unix_ns();
    if (at_us <= 0)
        return now;
    int64_t ago_us = ls_now_us() - at_us;
    if (ago_us <= 0)
        return now;
    uint64_t ago_ns = (uint64_t)ago_us * 1000u;
    return ago_ns < now ? now - ago_ns : now;
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static bool all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

/* n random bytes, never all zero (an invalid id).  getrandom(2) does not fail for so few
 * bytes once the pool is ready; should it, a seeded generator stands in. */
static void random_id(otlp_tracer_t *t, uint8_t *out, size_t n)
{
    do {
        ssize_t k;
        do
            k = getrandom(out, n, 0);
        while (k < 0 && errno == EINTR);
        if (k != (ssize_t)n) {
            pthread_mutex_lock(&t->mu);
            for (size_t i = 0; i < n; i++)
                out[i] = (uint8_t)(xorshift(&t->rng) >> 24);
            pthread_mutex_unlock(&t->mu);
        }
    } while (all_zero(out, n));
}

/* The TraceIdRatioBased decision: deterministic in the trace id, so that every service
 * configured alike decides alike.  The low 8 bytes are the random part of a W3C trace
 * id; one bit is shifted out so that ratio 1 (bound 2^63) takes every value. */
static bool ratio_sampled(const otlp_tracer_t *t, const uint8_t *trace_id)
{
    uint64_t x = 0;
    for (int i = 8; i < 16; i++)
        x = x << 8 | trace_id[i];
    return (x >> 1) < t->ratio_bound;
}

static bool should_sample(const otlp_tracer_t *t, const svc_trace_ctx_t *parent,
                          const uint8_t *trace_id)
{
    bool parent_sampled = parent && (parent->flags & SVC_TRACE_SAMPLED);
    switch (t->cfg.sampler) {
    case SVC_OTLP_SAMPLER_ALWAYS_ON:
        return true;
    case SVC_OTLP_SAMPLER_ALWAYS_OFF:
        return false;
    case SVC_OTLP_SAMPLER_TRACEIDRATIO:
        return ratio_sampled(t, trace_id);
    case SVC_OTLP_SAMPLER_PARENTBASED_ALWAYS_ON:
        return parent ? parent_sampled : true;
    case SVC_OTLP_SAMPLER_PARENTBASED_ALWAYS_OFF:
        return parent ? parent_sampled : false;
    case SVC_OTLP_SAMPLER_PARENTBASED_TRACEIDRATIO:
        return parent ? parent_sampled : ratio_sampled(t, trace_id);
    }
    return false;
}

static svc_span_t *t_start(svc_tracer_t *tr, const char *name, svc_span_kind_t kind,
                           const svc_trace_ctx_t *parent, int64_t at_us)
{
    otlp_tracer_t *t = (otlp_tracer_t *)tr;
    uint8_t trace_id[16];
    if (parent)
        memcpy(trace_id, parent->trace_id, sizeof(trace_id));
    else
        random_id(t, trace_id, sizeof(trace_id));
    bool sampled = should_sample(t, parent, trace_id);
    atomic_fetch_add_explicit(&t->started, 1, memory_order_relaxed);
    if (sampled)
        atomic_fetch_add_explicit(&t->sampled, 1, memory_order_relaxed);
    if (!sampled)
        return NULL;
    otlp_span_t *s = calloc(1, sizeof(*s));
    char *nm = strdup(name ? name : "");
    if (!s || !nm) { /* a span is not worth failing a request for */
        free(s);
        free(nm);
        return NULL;
    }
    s->base.tracer = tr;
    memcpy(s->trace_id, trace_id, sizeof(trace_id));
    random_id(t, s->span_id, sizeof(s->span_id));
    if (parent) {
        memcpy(s->parent_id, parent->span_id, sizeof(s->parent_id));
        s->has_parent = true;
    }
    s->kind = kind;
    s->name = nm;
    s->start_ns = at_unix_ns(at_us);
    return &s->base;
}

/* Counts n spans in the reporter's metric (metric_names.h) with reason; never blocks. */
static void count_spans(const otlp_tracer_t *t, const char *name, const char *reason, size_t n)
{
    if (!n)
        return;
    svc_label_t l = {"reason", reason};
    svc_metric_add(t->cfg.reporter, name, reason ? &l : NULL, reason ? 1 : 0, (double)n);
}

static void attr_clear(attr_t *a)
{
    if (a->type == ATTR_STR)
        free(a->v.s);
    if (a->type == ATTR_STRS) {
        for (size_t i = 0; i < a->v.a.n; i++)
            free(a->v.a.v[i]);
        free(a->v.a.v);
    }
    a->type = ATTR_INT;
}

/* The slot for key: its own when set before, else a new one; NULL when the span has no
 * room (counted) or memory ran out. */
static attr_t *attr_slot(otlp_span_t *s, const char *key, bool reserved)
{
    if (!key)
        return NULL;
    for (size_t i = 0; i < s->n_attrs; i++)
        if (strcmp(s->attrs[i].key, key) == 0) {
            attr_clear(&s->attrs[i]);
            return &s->attrs[i];
        }
    if (s->n_attrs >= SVC_OTLP_MAX_ATTRS + (reserved ? 1u : 0u)) {
        s->dropped_attrs++;
        return NULL;
    }
    attr_t *a = &s->attrs[s->n_attrs];
    a->key = strdup(key);
    if (!a->key)
        return NULL;
    a->type = ATTR_INT;
    s->n_attrs++;
    return a;
}

static void t_set_str(svc_span_t *sp, const char *key, const char *value)
{
    attr_t *a = attr_slot((otlp_span_t *)sp, key, false);
    if (!a)
        return;
    a->v.s = strdup(value ? value : "");
    a->type = a->v.s ? ATTR_STR : ATTR_INT;
    if (!a->v.s)
        a->v.i = 0;
}

static void t_set_int(svc_span_t *sp, const char *key, int64_t value)
{
    attr_t *a = attr_slot((otlp_span_t *)sp, key, false);
    if (!a)
        return;
    a->type = ATTR_INT;
    a->v.i = value;
}

static void t_set_double(svc_span_t *sp, const char *key, double value)
{
    attr_t *a = attr_slot((otlp_span_t *)sp, key, false);
    if (!a)
        return;
    a->type = ATTR_DOUBLE;
    a->v.d = value;
}

static void t_set_strs(svc_span_t *sp, const char *key, const char *const *values, size_t n)
{
    attr_t *a = attr_slot((otlp_span_t *)sp, key, false);
    if (!a)
        return;
    a->v.i = 0;
    char **v = n ? calloc(n, sizeof(*v)) : NULL;
    if (n && !v)
        return; /* left as int 0: memory ran out */
    for (size_t i = 0; i < n; i++) {
        v[i] = strdup(values[i] ? values[i] : "");
        if (!v[i]) {
            while (i--)
                free(v[i]);
            free(v);
            return;
        }
    }
    a->type = ATTR_STRS;
    a->v.a.v = v;
    a->v.a.n = n;
}

static void t_event(svc_span_t *sp, const char *name, int64_t at_us)
{
    otlp_span_t *s = (otlp_span_t *)sp;
    if (s->n_events == SVC_OTLP_MAX_EVENTS) {
        s->dropped_events++;
        return;
    }
    event_t *e = &s->events[s->n_events];
    e->name = strdup(name ? name : "");
    if (!e->name)
        return;
    e->time_ns = at_unix_ns(at_us);
    s->n_events++;
}

static void t_context(const svc_span_t *sp, svc_trace_ctx_t *out)
{
    const otlp_span_t *s = (const otlp_span_t *)sp;
    memcpy(out->trace_id, s->trace_id, sizeof(out->trace_id));
    memcpy(out->span_id, s->span_id, sizeof(out->span_id));
    out->flags = SVC_TRACE_SAMPLED; /* only sampled spans exist */
}

static void span_free(otlp_span_t *s)
{
    for (size_t i = 0; i < s->n_attrs; i++) {
        attr_clear(&s->attrs[i]);
        free(s->attrs[i].key);
    }
    for (size_t i = 0; i < s->n_events; i++)
        free(s->events[i].name);
    free(s->name);
    free(s->status_msg);
    free(s);
}

static void spans_free(otlp_span_t *s)
{
    while (s) {
        otlp_span_t *next = s->next;
        span_free(s);
        s = next;
    }
}

/* The gRPC semantic conventions v1.37.0: which codes make a server span an error. */
static bool server_error(int code)
{
    switch (code) {
    case 2:  /* UNKNOWN */
    case 4:  /* DEADLINE_EXCEEDED */
    case 12: /* UNIMPLEMENTED */
    case 13: /* INTERNAL */
    case 14: /* UNAVAILABLE */
    case 15: /* DATA_LOSS */
        return true;
    default:
        return false;
    }
}

static void t_end(svc_span_t *sp, int grpc_code, const char *message, int64_t at_us)
{
    otlp_span_t *s = (otlp_span_t *)sp;
    otlp_tracer_t *t = (otlp_tracer_t *)sp->tracer;
    s->end_ns = at_unix_ns(at_us);
    if (s->end_ns < s->start_ns) /* the wall clock stepped back */
        s->end_ns = s->start_ns;
    attr_t *a = attr_slot(s, "rpc.grpc.status_code", true); /* set always */
    if (a) {
        a->type = ATTR_INT;
        a->v.i = grpc_code;
    }
    bool error = s->kind == SVC_SPAN_SERVER ? server_error(grpc_code) : grpc_code != 0;
    if (error) {
        s->status = 2;
        s->status_msg = message && *message ? strdup(message) : NULL;
    }

    pthread_mutex_lock(&t->mu);
    if (t->n_queued >= t->cfg.max_queue_size) {
        t->dropped++;
        pthread_mutex_unlock(&t->mu);
        span_free(s);
        count_spans(t, M_TRACE_DROPPED, "queue_full", 1);
        return;
    }
    *t->tail = s;
    t->tail = &s->next;
    if (++t->n_queued == t->cfg.max_export_batch_size)
        pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* ---- JSON -------------------------------------------------------------------------- */

static void hex(char *out, const uint8_t *b, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

/* JSON strings must be UTF-8: a receiver rejects the whole batch otherwise, so text that
 * is not has its bytes above ASCII replaced. */
static cJSON *add_text(cJSON *obj, const char *key, const char *s)
{
    if (ls_utf8_valid(s, strlen(s)))
        return cJSON_AddStringToObject(obj, key, s);
    char *c = strdup(s);
    if (!c)
        return NULL;
    for (char *p = c; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    cJSON *r = cJSON_AddStringToObject(obj, key, c);
    free(c);
    return r;
}

static bool add_u64(cJSON *obj, const char *key, uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    return cJSON_AddStringToObject(obj, key, buf) != NULL;
}

/* {key, value: {...}} appended to arr; the value object is returned to be filled. */
static cJSON *add_kv(cJSON *arr, const char *key)
{
    cJSON *kv = cJSON_CreateObject();
    if (!kv)
        return NULL;
    cJSON_AddItemToArray(arr, kv);
    if (!add_text(kv, "key", key))
        return NULL;
    return cJSON_AddObjectToObject(kv, "value");
}

static bool add_str_attr(cJSON *arr, const char *key, const char *value)
{
    cJSON *v = add_kv(arr, key);
    return v && add_text(v, "stringValue", value);
}

static bool add_attr(cJSON *arr, const attr_t *a)
{
    cJSON *v = add_kv(arr, a->key);
    if (!v)
        return false;
    switch (a->type) {
    case ATTR_STR:
        return add_text(v, "stringValue", a->v.s) != NULL;
    case ATTR_INT: {
        char buf[24];
        snprintf(buf, sizeof(buf), "%" PRId64, a->v.i);
        return cJSON_AddStringToObject(v, "intValue", buf) != NULL;
    }
    case ATTR_DOUBLE:
        if (!isfinite(a->v.d)) /* JSON has no NaN or infinity; the mapping spells them */
            return cJSON_AddStringToObject(v, "doubleValue",
                                           isnan(a->v.d) ? "NaN"
                                           : a->v.d > 0  ? "Infinity"
                                                         : "-Infinity") != NULL;
        return cJSON_AddNumberToObject(v, "doubleValue", a->v.d) != NULL;
    case ATTR_STRS: {
        cJSON *av = cJSON_AddObjectToObject(v, "arrayValue");
        cJSON *vals = av ? cJSON_AddArrayToObject(av, "values") : NULL;
        if (!vals)
            return false;
        for (size_t i = 0; i < a->v.a.n; i++) {
            cJSON *e = cJSON_CreateObject();
            if (!e)
                return false;
            cJSON_AddItemToArray(vals, e);
            if (!add_text(e, "stringValue", a->v.a.v[i]))
                return false;
        }
        return true;
    }
    }
    return false;
}

static bool has_resource_key(const svc_otlp_config_t *cfg, const char *key)
{
    for (size_t i = 0; i < cfg->n_resource; i++)
        if (strcmp(cfg->resource[i].key, key) == 0)
            return true;
    return false;
}

static bool add_resource(cJSON *rs, const otlp_tracer_t *t, const char *instance)
{
    const svc_otlp_config_t *cfg = &t->cfg;
    cJSON *res = cJSON_AddObjectToObject(rs, "resource");
    cJSON *attrs = res ? cJSON_AddArrayToObject(res, "attributes") : NULL;
    if (!attrs || !add_str_attr(attrs, "service.name", cfg->service_name))
        return false;
    if (instance && !has_resource_key(cfg, "service.instance.id") &&
        !add_str_attr(attrs, "service.instance.id", instance))
        return false;
    if (!has_resource_key(cfg, "service.version") &&
        !add_str_attr(attrs, "service.version", LLMSERVE_VERSION))
        return false;
    if (!add_str_attr(attrs, "telemetry.sdk.name", "llmserve") ||
        !add_str_attr(attrs, "telemetry.sdk.language", "c") ||
        !add_str_attr(attrs, "telemetry.sdk.version", LLMSERVE_VERSION))
        return false;
    for (size_t i = 0; i < cfg->n_resource; i++) {
        const svc_otlp_kv_t *kv = &cfg->resource[i];
        if (strncmp(kv->key, "telemetry.sdk.", 14) == 0) /* they describe this code */
            continue;
        if (!add_str_attr(attrs, kv->key, kv->value))
            return false;
    }
    return true;
}

static bool add_span(cJSON *arr, const otlp_span_t *s)
{
    static const int kinds[] = {1, 2, 3}; /* SVC_SPAN_INTERNAL, _SERVER, _CLIENT */
    char id[33];
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return false;
    cJSON_AddItemToArray(arr, o);
    hex(id, s->trace_id, 16);
    bool ok = cJSON_AddStringToObject(o, "traceId", id) != NULL;
    hex(id, s->span_id, 8);
    ok = ok && cJSON_AddStringToObject(o, "spanId", id);
    if (s->has_parent) {
        hex(id, s->parent_id, 8);
        ok = ok && cJSON_AddStringToObject(o, "parentSpanId", id);
    }
    ok = ok && add_text(o, "name", s->name);
    ok = ok && cJSON_AddNumberToObject(o, "kind", (unsigned)s->kind < 3 ? kinds[s->kind] : 1);
    ok = ok && add_u64(o, "startTimeUnixNano", s->start_ns);
    ok = ok && add_u64(o, "endTimeUnixNano", s->end_ns);
    cJSON *attrs = ok ? cJSON_AddArrayToObject(o, "attributes") : NULL;
    ok = attrs != NULL;
    for (size_t i = 0; ok && i < s->n_attrs; i++)
        ok = add_attr(attrs, &s->attrs[i]);
    if (ok && s->dropped_attrs)
        ok = cJSON_AddNumberToObject(o, "droppedAttributesCount", s->dropped_attrs) != NULL;
    cJSON *events = ok ? cJSON_AddArrayToObject(o, "events") : NULL;
    ok = events != NULL;
    for (size_t i = 0; ok && i < s->n_events; i++) {
        cJSON *e = cJSON_CreateObject();
        ok = e != NULL;
        if (ok) {
            cJSON_AddItemToArray(events, e);
            ok = add_u64(e, "timeUnixNano", s->events[i].time_ns) &&
                 add_text(e, "name", s->events[i].name);
        }
    }
    if (ok && s->dropped_events)
        ok = cJSON_AddNumberToObject(o, "droppedEventsCount", s->dropped_events) != NULL;
    cJSON *st = ok ? cJSON_AddObjectToObject(o, "status") : NULL;
    ok = st && cJSON_AddNumberToObject(st, "code", s->status);
    if (ok && s->status_msg)
        ok = add_text(st, "message", s->status_msg) != NULL;
    return ok;
}

/* The request body for the batch; NULL when memory ran out.  Caller frees it. */
static char *batch_json(const otlp_tracer_t *t, const otlp_span_t *batch, const char *instance)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *rss = root ? cJSON_AddArrayToObject(root, "resourceSpans") : NULL;
    cJSON *rs = rss ? cJSON_CreateObject() : NULL;
    bool ok = rs != NULL;
    if (ok)
        cJSON_AddItemToArray(rss, rs);
    ok = ok && add_resource(rs, t, instance);
    cJSON *sss = ok ? cJSON_AddArrayToObject(rs, "scopeSpans") : NULL;
    cJSON *ss = sss ? cJSON_CreateObject() : NULL;
    ok = ss != NULL;
    if (ok)
        cJSON_AddItemToArray(sss, ss);
    cJSON *scope = ok ? cJSON_AddObjectToObject(ss, "scope") : NULL;
    ok = scope && cJSON_AddStringToObject(scope, "name", SCOPE_NAME) &&
         cJSON_AddStringToObject(scope, "version", LLMSERVE_VERSION);
    cJSON *spans = ok ? cJSON_AddArrayToObject(ss, "spans") : NULL;
    ok = spans != NULL;
    for (const otlp_span_t *s = batch; ok && s; s = s->next)
        ok = add_span(spans, s);
    char *out = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return out;
}

/* ---- export ------------------------------------------------------------------------ */

typedef struct {
    char body[MAX_BODY_KEPT + 1];
    size_t len;
    int64_t retry_after_s; /* -1: none */
} answer_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    answer_t *a = ud;
    size_t n = size * nmemb;
    size_t room = MAX_BODY_KEPT - a->len;
    size_t k = n < room ? n : room;
    memcpy(a->body + a->len, data, k);
    a->len += k;
    a->body[a->len] = '\0';
    return n; /* the rest is read and let go */
}

/* Retry-After as delay-seconds; an HTTP date is not used (the back-off applies). */
static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    answer_t *a = ud;
    size_t n = size * nmemb;
    static const char name[] = "Retry-After:";
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        a->retry_after_s = -1;
        return n;
    }
    if (n < sizeof(name) - 1 || strncasecmp(data, name, sizeof(name) - 1) != 0)
        return n;
    int64_t v = 0;
    size_t i = sizeof(name) - 1, digits = 0;
    while (i < n && (data[i] == ' ' || data[i] == '\t'))
        i++;
    for (; i < n && isdigit((unsigned char)data[i]); i++, digits++)
        v = v >= MAX_RETRY_AFTER_S ? MAX_RETRY_AFTER_S : v * 10 + (data[i] - '0');
    while (i < n && isspace((unsigned char)data[i]))
        i++;
    a->retry_after_s = digits && i == n ? v : -1;
    return n;
}

/* Text from the network made safe for a key="value" log field. */
static void log_safe(char *out, size_t len, const char *in)
{
    size_t i = 0;
    for (; in && in[i] && i + 1 < len; i++)
        out[i] = in[i] >= 0x20 && in[i] < 0x7f && in[i] != '"' && in[i] != '\\' ? in[i] : '_';
    out[i] = '\0';
}

/* One POST; returns the HTTP status, or 0 when no answer came (curl's code in *cc). */
static long post(otlp_tracer_t *t, const char *body, int64_t timeout_ms, answer_t *a, CURLcode *cc,
                 char *curl_err)
{
    CURL *h = t->curl;
    a->len = 0;
    a->body[0] = '\0';
    a->retry_after_s = -1;
    curl_err[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, t->cfg.endpoint);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > 0 ? timeout_ms : 1));
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, a);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, t->hdrs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    *cc = curl_easy_perform(h);
    long status = 0;
    if (*cc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    pthread_mutex_lock(&t->mu);
    t->requests++;
    pthread_mutex_unlock(&t->mu);
    return status;
}

/* Logs a failure when it differs from the one logged last.  state: the status, or minus
 * curl's code. */
static void note_failure(otlp_tracer_t *t, int state, const char *what, const char *detail,
                         size_t spans)
{
    pthread_mutex_lock(&t->mu);
    bool changed = t->state != state;
    t->state = state;
    pthread_mutex_unlock(&t->mu);
    if (changed)
        LS_LOG_WARN(MOD,
                    "span export failed (logged once until it changes) endpoint=%s "
                    "result=%s spans=%zu detail=\"%s\"",
                    t->cfg.endpoint, what, spans, detail);
}

static void note_success(otlp_tracer_t *t, const answer_t *a)
{
    bool recovered = false, log_partial = false;
    cJSON *root = a->len ? cJSON_Parse(a->body) : NULL;
    cJSON *ps = root ? cJSON_GetObjectItemCaseSensitive(root, "partialSuccess") : NULL;
    cJSON *rej = ps ? cJSON_GetObjectItemCaseSensitive(ps, "rejectedSpans") : NULL;
    cJSON *msg = ps ? cJSON_GetObjectItemCaseSensitive(ps, "errorMessage") : NULL;
    /* rejectedSpans is an int64, so a string in JSON; a number is taken too. */
    bool partial = (cJSON_IsString(rej) && strcmp(rej->valuestring, "0") != 0) ||
                   (cJSON_IsNumber(rej) && rej->valuedouble > 0) ||
                   (cJSON_IsString(msg) && msg->valuestring[0]);
    pthread_mutex_lock(&t->mu);
    recovered = t->state != 0;
    t->state = 0;
    if (partial && !t->partial_logged)
        log_partial = t->partial_logged = true;
    pthread_mutex_unlock(&t->mu);
    if (recovered)
        LS_LOG_INFO(MOD, "span export works again endpoint=%s", t->cfg.endpoint);
    if (log_partial) {
        char why[200];
        log_safe(why, sizeof(why), cJSON_IsString(msg) ? msg->valuestring : "");
        LS_LOG_WARN(MOD,
                    "the trace receiver rejected some spans (logged once) endpoint=%s "
                    "rejected=%s message=\"%s\"",
                    t->cfg.endpoint, cJSON_IsString(rej) ? rej->valuestring : "?", why);
    }
    cJSON_Delete(root);
}

static bool retryable(long status)
{
    return status == 0 || status == 429 || status == 502 || status == 503 || status == 504;
}

/* Waits until at_us or the stop deadline, whichever is first (ls_now_us clock).  mu
 * held. */
static void do_wait_until(otlp_tracer_t *t, int64_t at_us)
{
    if (t->stop_deadline_us < at_us)
        at_us = t->stop_deadline_us;
    if (at_us == INT64_MAX) {
        pthread_cond_wait(&t->cv, &t->mu);
        return;
    }
    struct timespec ts = {(time_t)(at_us / 1000000), (long)(at_us % 1000000) * 1000};
    pthread_cond_timedwait(&t->cv, &t->mu, &ts);
}

/* Sends the batch (n spans) until it is accepted, refused, or its time is up; counts the
 * outcome.  Takes ownership of batch. */
static void export_batch(otlp_tracer_t *t, otlp_span_t *batch, size_t n)
{
    pthread_mutex_lock(&t->mu);
    char *instance = t->instance ? strdup(t->instance) : NULL;
    int64_t deadline = ls_now_us() + t->cfg.export_timeout_ms * 1000;
    if (deadline > t->stop_deadline_us)
        deadline = t->stop_deadline_us;
    pthread_mutex_unlock(&t->mu);
    char *body = batch_json(t, batch, instance);
    free(instance);
    spans_free(batch);
    if (!body) {
        LS_LOG_ERROR(MOD, "out of memory building a span batch spans=%zu", n);
        pthread_mutex_lock(&t->mu);
        t->failed += n;
        pthread_mutex_unlock(&t->mu);
        count_spans(t, M_TRACE_DROPPED, "export_failed", n);
        return;
    }

    int64_t backoff_ms = t->cfg.backoff_min_ms;
    answer_t *a = malloc(sizeof(*a));
    char curl_err[CURL_ERROR_SIZE];
    bool delivered = false;
    for (int attempt = 0; a; attempt++) {
        pthread_mutex_lock(&t->mu);
        int64_t until = deadline < t->stop_deadline_us ? deadline : t->stop_deadline_us;
        pthread_mutex_unlock(&t->mu);
        int64_t left_ms = (until - ls_now_us()) / 1000;
        if (left_ms <= 0) {
            note_failure(t, -1000, "timeout", "the export's time ran out", n);
            break;
        }
        if (attempt > 0) {
            pthread_mutex_lock(&t->mu);
            t->retries++;
            pthread_mutex_unlock(&t->mu);
        }
        CURLcode cc;
        long status = post(t, body, left_ms < t->cfg.timeout_ms ? left_ms : t->cfg.timeout_ms, a,
                           &cc, curl_err);
        if (status >= 200 && status < 300) {
            note_success(t, a);
            delivered = true;
            break;
        }
        char what[32], detail[200];
        if (status == 0) {
            snprintf(what, sizeof(what), "no_answer");
            log_safe(detail, sizeof(detail), curl_err[0] ? curl_err : curl_easy_strerror(cc));
        } else {
            snprintf(what, sizeof(what), "http_%ld", status);
            log_safe(detail, sizeof(detail), a->body);
        }
        note_failure(t, status ? (int)status : -(int)cc, what, detail, n);
        if (!retryable(status))
            break;
        /* Retry-After when the receiver gave one, else the back-off with jitter in
         * [1/2, 1] of it, so that a fleet does not come back at once. */
        int64_t wait_us;
        pthread_mutex_lock(&t->mu);
        if (a->retry_after_s >= 0) {
            wait_us = a->retry_after_s * 1000000;
        } else {
            int64_t d_us = backoff_ms * 1000;
            wait_us = d_us / 2 + (int64_t)(xorshift(&t->rng) % (uint64_t)(d_us / 2 + 1));
            backoff_ms =
                backoff_ms * 2 > t->cfg.backoff_max_ms ? t->cfg.backoff_max_ms : backoff_ms * 2;
        }
        int64_t at = ls_now_us() + wait_us;
        if (at >= deadline || at >= t->stop_deadline_us) {
            pthread_mutex_unlock(&t->mu);
            break; /* the answer would come too late anyway */
        }
        while (ls_now_us() < at && ls_now_us() < t->stop_deadline_us)
            do_wait_until(t, at);
        pthread_mutex_unlock(&t->mu);
    }
    free(a);
    free(body);
    pthread_mutex_lock(&t->mu);
    if (delivered)
        t->exported += n;
    else
        t->failed += n;
    pthread_mutex_unlock(&t->mu);
    if (delivered)
        count_spans(t, M_TRACE_EXPORTED, NULL, n);
    else
        count_spans(t, M_TRACE_DROPPED, "export_failed", n);
}

/* Takes up to a batch's worth off the queue.  mu held. */
static otlp_span_t *do_take(otlp_tracer_t *t, size_t *n)
{
    otlp_span_t *batch = t->head, **tail = &batch;
    size_t k = 0;
    while (*tail && k < t->cfg.max_export_batch_size) {
        tail = &(*tail)->next;
        k++;
    }
    t->head = *tail;
    *tail = NULL;
    if (!t->head)
        t->tail = &t->head;
    t->n_queued -= k;
    *n = k;
    return batch;
}

static void *exporter_main(void *arg)
{
    otlp_tracer_t *t = arg;
    pthread_mutex_lock(&t->mu);
    int64_t next_us = ls_now_us() + t->cfg.schedule_delay_ms * 1000;
    for (;;) {
        int64_t now = ls_now_us();
        if (t->stop && (!t->head || now >= t->stop_deadline_us))
            break;
        bool due = t->stop || now >= next_us || t->n_queued >= t->cfg.max_export_batch_size;
        if (!due || !t->head) {
            if (now >= next_us)
                next_us = now + t->cfg.schedule_delay_ms * 1000;
            do_wait_until(t, next_us);
            continue;
        }
        size_t n;
        otlp_span_t *batch = do_take(t, &n);
        pthread_mutex_unlock(&t->mu);
        export_batch(t, batch, n);
        pthread_mutex_lock(&t->mu);
        if (ls_now_us() >= next_us || !t->head)
            next_us = ls_now_us() + t->cfg.schedule_delay_ms * 1000;
    }
    size_t left = t->n_queued;
    otlp_span_t *rest = t->head;
    t->head = NULL;
    t->tail = &t->head;
    t->n_queued = 0;
    t->dropped += left;
    pthread_mutex_unlock(&t->mu);
    spans_free(rest);
    count_spans(t, M_TRACE_DROPPED, "shutdown", left);
    if (left)
        LS_LOG_WARN(MOD, "spans not sent at exit endpoint=%s spans=%zu", t->cfg.endpoint, left);
    return NULL;
}

/* ---- life -------------------------------------------------------------------------- */

static void t_destroy(svc_tracer_t *tr);

static const svc_tracer_ops_t otlp_ops = {t_start,  t_set_str, t_set_int, t_set_double,
                                          t_set_strs, t_event, t_context, t_end,
                                          t_destroy};

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_rc = CURLE_FAILED_INIT;

/* Once per process, on the first create (see libs/consul/consul.c: the services start
 * OpenSSL first); never undone, as others may still use curl. */
static void curl_start(void)
{
    g_curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static bool config_valid(const svc_otlp_config_t *c)
{
    return c->enabled &&
           (strncasecmp(c->endpoint, "http://", 7) == 0 ||
            strncasecmp(c->endpoint, "https://", 8) == 0) &&
           c->timeout_ms > 0 && c->schedule_delay_ms > 0 && c->export_timeout_ms > 0 &&
           c->max_queue_size > 0 && c->max_export_batch_size > 0 &&
           c->max_export_batch_size <= c->max_queue_size && c->ratio >= 0.0 && c->ratio <= 1.0 &&
           c->backoff_min_ms > 0 && c->backoff_max_ms >= c->backoff_min_ms &&
           c->n_headers <= SVC_OTLP_MAX_HEADERS && c->n_resource <= SVC_OTLP_MAX_RESOURCE;
}

svc_tracer_t *svc_otlp_tracer_create(const svc_otlp_config_t *cfg)
{
    if (!cfg || !config_valid(cfg)) {
        LS_LOG_ERROR(MOD, "no tracer: the OTLP configuration is off or not valid");
        return NULL;
    }
    pthread_once(&g_curl_once, curl_start);
    if (g_curl_rc != CURLE_OK) {
        LS_LOG_ERROR(MOD, "no tracer: libcurl does not start");
        return NULL;
    }
    otlp_tracer_t *t = ls_xcalloc(1, sizeof(*t));
    t->base.ops = &otlp_ops;
    t->cfg = *cfg;
    /* ratio * 2^63, exact at both ends: 1.0 takes every value, 0.0 none. */
    t->ratio_bound = cfg->ratio >= 1.0 ? (UINT64_C(1) << 63) : (uint64_t)(cfg->ratio * 0x1p63);
    t->curl = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    for (size_t i = 0; h && i < cfg->n_headers; i++) {
        char line[sizeof(cfg->headers[i].key) + sizeof(cfg->headers[i].value) + 4];
        snprintf(line, sizeof(line), "%s: %s", cfg->headers[i].key, cfg->headers[i].value);
        struct curl_slist *nh = curl_slist_append(h, line);
        if (!nh) {
            curl_slist_free_all(h);
            h = NULL;
            break;
        }
        h = nh;
    }
    t->hdrs = h;
    if (!t->curl || !t->hdrs) {
        LS_LOG_ERROR(MOD, "no tracer: libcurl cannot make a handle");
        goto out_free;
    }
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    t->tail = &t->head;
    t->stop_deadline_us = INT64_MAX;
    t->rng = now_unix_ns() ^ (uint64_t)(uintptr_t)t;
    if (!t->rng)
        t->rng = 1;
    if (pthread_create(&t->thread, NULL, exporter_main, t) != 0) {
        LS_LOG_ERROR(MOD, "no tracer: cannot start the exporter thread");
        pthread_cond_destroy(&t->cv);
        pthread_mutex_destroy(&t->mu);
        goto out_free;
    }
    pthread_setname_np(t->thread, "svc-otlp");
    LS_LOG_INFO(MOD,
                "exporting spans endpoint=%s service=%s sampler=%s ratio=%g "
                "schedule_delay_ms=%" PRId64 " max_queue_size=%zu max_export_batch_size=%zu "
                "timeout_ms=%" PRId64 " export_timeout_ms=%" PRId64 " headers=%zu",
                cfg->endpoint, cfg->service_name, svc_otlp_sampler_name(cfg->sampler), cfg->ratio,
                cfg->schedule_delay_ms, cfg->max_queue_size, cfg->max_export_batch_size,
                cfg->timeout_ms, cfg->export_timeout_ms, cfg->n_headers);
    return &t->base;

out_free:
    curl_slist_free_all(t->hdrs);
    curl_easy_cleanup(t->curl);
    free(t);
    return NULL;
}

void svc_otlp_tracer_set_instance(svc_tracer_t *tr, const char *instance_id)
{
    otlp_tracer_t *t = (otlp_tracer_t *)tr;
    char *copy = instance_id && *instance_id ? ls_xstrdup(instance_id) : NULL;
    pthread_mutex_lock(&t->mu);
    char *old = t->instance;
    t->instance = copy;
    pthread_mutex_unlock(&t->mu);
    free(old);
}

void svc_otlp_tracer_stats(svc_tracer_t *tr, svc_otlp_stats_t *out)
{
    otlp_tracer_t *t = (otlp_tracer_t *)tr;
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&t->mu);
    out->started = atomic_load_explicit(&t->started, memory_order_relaxed);
    out->sampled = atomic_load_explicit(&t->sampled, memory_order_relaxed);
    out->exported = t->exported;
    out->dropped = t->dropped;
    out->failed = t->failed;
    out->retries = t->retries;
    out->requests = t->requests;
    out->queued = t->n_queued;
    pthread_mutex_unlock(&t->mu);
}

static void t_destroy(svc_tracer_t *tr)
{
    otlp_tracer_t *t = (otlp_tracer_t *)tr;
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    t->stop_deadline_us = ls_now_us() + t->cfg.export_timeout_ms * 1000;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    curl_slist_free_all(t->hdrs);
    curl_easy_cleanup(t->curl);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t->instance);
    free(t);
}
