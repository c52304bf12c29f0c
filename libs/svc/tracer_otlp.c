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

/* A span keeps its text (name, keys, string values, event names, the status message) in
 * one buffer of its own, inline while it fits: making a span is one allocation, and
 * setting an attribute a copy into that buffer, never a malloc of its own. */
#define SPAN_TEXT_INLINE 768

typedef enum { ATTR_STR, ATTR_INT, ATTR_DOUBLE, ATTR_STRS } attr_type_t;

typedef struct {
    uint32_t key;  /* offset of its NUL-terminated key in the span's text */
    uint32_t hash; /* of the key (key_hash): most keys set again are told apart by it */
    attr_type_t type;
    union {
        int64_t i;
        double d;
        struct {
            uint32_t off, n; /* ATTR_STR: one string at off; ATTR_STRS: n, one after another */
        } s;
    } v;
} attr_t;

typedef struct {
    uint32_t name; /* offset in the span's text */
    uint64_t time_ns;
} event_t;

typedef struct otlp_span {
    svc_span_t base; /* first: the tracer.h contract */
    struct otlp_span *next;
    uint8_t trace_id[16], span_id[8], parent_id[8];
    bool has_parent;
    bool oom; /* text could not grow: later strings are dropped (counted as attributes) */
    svc_span_kind_t kind;
    uint32_t name;
    uint64_t start_ns, end_ns;
    uint32_t n_attrs, dropped_attrs, n_events, dropped_events;
    int status;          /* 0 unset, 1 ok, 2 error */
    int64_t status_msg;  /* offset in text; -1: none */
    attr_t attrs[SVC_OTLP_MAX_ATTRS + 1]; /* the last for rpc.grpc.status_code alone */
    event_t events[SVC_OTLP_MAX_EVENTS];
    char *text; /* text_inline, or a heap copy once it outgrew it */
    uint32_t text_len, text_cap;
    char text_inline[SPAN_TEXT_INLINE];
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

/* splitmix64: each thread's id generator, seeded once from getrandom(2) (W3C Trace Context
 * level 2 asks for random trace ids; a generator seeded so is, and costs no system call
 * per id). */
static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* n (8 or 16) random bytes, never all zero (an invalid id). */
static void random_id(uint8_t *out, size_t n)
{
    static _Thread_local uint64_t state;
    static _Thread_local bool seeded;
    if (!seeded) {
        if (getrandom(&state, sizeof(state), GRND_NONBLOCK) != (ssize_t)sizeof(state))
            state = now_unix_ns() ^ ((uint64_t)pthread_self() << 17) ^ (uint64_t)(uintptr_t)&state;
        seeded = true;
    }
    do {
        for (size_t i = 0; i < n; i += 8) {
            uint64_t z = splitmix(&state);
            memcpy(out + i, &z, n - i < 8 ? n - i : 8);
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

/* Copies n bytes of s and a NUL into the span's text; returns their offset, or -1 when
 * the text cannot grow (the span is then marked oom and the caller drops what it set). */
static int64_t text_add(otlp_span_t *s, const char *str, size_t n)
{
    if (s->oom)
        return -1;
    if (n >= UINT32_MAX / 2 || s->text_len + n + 1 > s->text_cap) {
        size_t cap = s->text_cap * 2;
        while (cap < s->text_len + n + 1)
            cap *= 2;
        if (n >= UINT32_MAX / 2 || cap > UINT32_MAX) {
            s->oom = true;
            return -1;
        }
        char *t = s->text == s->text_inline ? malloc(cap) : realloc(s->text, cap);
        if (!t) {
            s->oom = true;
            return -1;
        }
        if (s->text == s->text_inline)
            memcpy(t, s->text_inline, s->text_len);
        s->text = t;
        s->text_cap = (uint32_t)cap;
    }
    uint32_t off = s->text_len;
    memcpy(s->text + off, str, n);
    s->text[off + n] = '\0';
    s->text_len += (uint32_t)n + 1;
    return off;
}

static int64_t text_str(otlp_span_t *s, const char *str)
{
    return text_add(s, str ? str : "", str ? strlen(str) : 0);
}

static const char *text_at(const otlp_span_t *s, uint32_t off)
{
    return s->text + off;
}

static svc_span_t *t_start(svc_tracer_t *tr, const char *name, svc_span_kind_t kind,
                           const svc_trace_ctx_t *parent, int64_t at_us)
{
    otlp_tracer_t *t = (otlp_tracer_t *)tr;
    uint8_t trace_id[16];
    if (parent)
        memcpy(trace_id, parent->trace_id, sizeof(trace_id));
    else
        random_id(trace_id, sizeof(trace_id));
    bool sampled = should_sample(t, parent, trace_id);
    atomic_fetch_add_explicit(&t->started, 1, memory_order_relaxed);
    if (sampled)
        atomic_fetch_add_explicit(&t->sampled, 1, memory_order_relaxed);
    if (!sampled)
        return NULL;
    otlp_span_t *s = malloc(sizeof(*s));
    if (!s) /* a span is not worth failing a request for */
        return NULL;
    s->base.tracer = tr;
    s->next = NULL;
    memcpy(s->trace_id, trace_id, sizeof(trace_id));
    random_id(s->span_id, sizeof(s->span_id));
    s->has_parent = parent != NULL;
    if (parent)
        memcpy(s->parent_id, parent->span_id, sizeof(s->parent_id));
    s->oom = false;
    s->kind = kind;
    s->start_ns = at_unix_ns(at_us);
    s->end_ns = 0;
    s->n_attrs = s->dropped_attrs = s->n_events = s->dropped_events = 0;
    s->status = 0;
    s->status_msg = -1;
    s->text = s->text_inline;
    s->text_len = 0;
    s->text_cap = SPAN_TEXT_INLINE;
    int64_t off = text_str(s, name);
    s->name = off < 0 ? 0 : (uint32_t)off; /* the inline text always has room for a name */
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

/* FNV-1a of key; *len gets its length. */
static uint32_t key_hash(const char *key, size_t *len)
{
    uint32_t h = 2166136261u;
    const char *p = key;
    for (; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    *len = (size_t)(p - key);
    return h;
}

/* The attribute set under key, or NULL. */
static attr_t *attr_find(otlp_span_t *s, const char *key, uint32_t hash)
{
    for (uint32_t i = 0; i < s->n_attrs; i++)
        if (s->attrs[i].hash == hash && strcmp(text_at(s, s->attrs[i].key), key) == 0)
            return &s->attrs[i];
    return NULL;
}

/* The slot for key: its own when set before, else a new one with the key copied; NULL
 * when the span has no room (counted).  reserved: the slot kept for rpc.grpc.status_code. */
static attr_t *attr_slot(otlp_span_t *s, const char *key, bool reserved)
{
    if (!key)
        return NULL;
    size_t len;
    uint32_t hash = key_hash(key, &len);
    attr_t *found = attr_find(s, key, hash);
    if (found)
        return found;
    if (s->n_attrs >= SVC_OTLP_MAX_ATTRS + (reserved ? 1u : 0u)) {
        s->dropped_attrs++;
        return NULL;
    }
    int64_t off = text_add(s, key, len);
    if (off < 0) {
        s->dropped_attrs++;
        return NULL;
    }
    attr_t *a = &s->attrs[s->n_attrs++];
    a->key = (uint32_t)off;
    a->hash = hash;
    a->type = ATTR_INT;
    a->v.i = 0;
    return a;
}

static void t_set_str(svc_span_t *sp, const char *key, const char *value)
{
    otlp_span_t *s = (otlp_span_t *)sp;
    attr_t *a = attr_slot(s, key, false);
    if (!a)
        return;
    int64_t off = text_str(s, value);
    if (off < 0) { /* memory ran out: the attribute keeps an empty value */
        a->type = ATTR_INT;
        a->v.i = 0;
        return;
    }
    a->type = ATTR_STR;
    a->v.s.off = (uint32_t)off;
    a->v.s.n = 1;
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
    otlp_span_t *s = (otlp_span_t *)sp;
    attr_t *a = attr_slot(s, key, false);
    if (!a)
        return;
    uint32_t first = s->text_len;
    for (size_t i = 0; i < n; i++)
        if (text_str(s, values[i]) < 0) { /* memory ran out */
            a->type = ATTR_INT;
            a->v.i = 0;
            return;
        }
    a->type = ATTR_STRS;
    a->v.s.off = first;
    a->v.s.n = (uint32_t)n;
}

static void t_event(svc_span_t *sp, const char *name, int64_t at_us)
{
    otlp_span_t *s = (otlp_span_t *)sp;
    if (s->n_events == SVC_OTLP_MAX_EVENTS) {
        s->dropped_events++;
        return;
    }
    int64_t off = text_str(s, name);
    if (off < 0) {
        s->dropped_events++;
        return;
    }
    event_t *e = &s->events[s->n_events++];
    e->name = (uint32_t)off;
    e->time_ns = at_unix_ns(at_us);
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
    if (s->text != s->text_inline)
        free(s->text);
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

/* True when the span describes a gRPC call (it carries rpc.system): only those get
 * rpc.grpc.status_code. */
static bool is_rpc_span(otlp_span_t *s)
{
    size_t len;
    return attr_find(s, "rpc.system", key_hash("rpc.system", &len)) != NULL;
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
    if (is_rpc_span(s)) {
        attr_t *a = attr_slot(s, "rpc.grpc.status_code", true);
        if (a) {
            a->type = ATTR_INT;
            a->v.i = grpc_code;
        }
    }
    bool error = s->kind == SVC_SPAN_SERVER ? server_error(grpc_code) : grpc_code != 0;
    if (error) {
        s->status = 2;
        s->status_msg = message && *message ? text_str(s, message) : -1;
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

/* The request body, written straight into one growing buffer (OTLP/JSON: ids as hex,
 * 64-bit integers as decimal strings, enums as numbers). */
typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} jbuf_t;

/* Room for n more bytes and a NUL; false (oom set) when memory ran out. */
static bool jb_grow(jbuf_t *b, size_t n)
{
    if (b->oom)
        return false;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static inline void jb_raw(jbuf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap && !jb_grow(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* lit: a string literal (sizeof gives its length), never an expression. */
#define JB_LIT(b, lit) jb_raw((b), "" lit, sizeof(lit) - 1)

/* A JSON string.  JSON must be UTF-8 (a receiver refuses the whole batch otherwise): text
 * that is not has its bytes above ASCII replaced by '?'. */
static void jb_str(jbuf_t *b, const char *s)
{
    static const char digits[] = "0123456789abcdef";
    size_t n = 0;
    bool plain = true, high = false; /* plain: nothing to escape; high: bytes >= 0x80 */
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        plain &= c >= 0x20 && c != '"' && c != '\\' && c < 0x80;
        high |= c >= 0x80;
    }
    if (plain) { /* the common case: ASCII with nothing to escape, copied at once */
        if (b->len + n + 3 > b->cap && !jb_grow(b, n + 2))
            return;
        b->p[b->len] = '"';
        memcpy(b->p + b->len + 1, s, n);
        b->p[b->len + 1 + n] = '"';
        b->len += n + 2;
        b->p[b->len] = '\0';
        return;
    }
    bool ascii_only = high && !ls_utf8_valid(s, n);
    JB_LIT(b, "\"");
    size_t run = 0; /* bytes copied as they are, pending */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        size_t en = 0;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            en = 2;
        } else if (c < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = digits[c >> 4];
            esc[5] = digits[c & 15];
            en = 6;
        } else if (c >= 0x80 && ascii_only) {
            esc[0] = '?';
            en = 1;
        } else {
            run++;
            continue;
        }
        jb_raw(b, s + i - run, run);
        run = 0;
        jb_raw(b, esc, en);
    }
    jb_raw(b, s + n - run, run);
    JB_LIT(b, "\"");
}

static void jb_u64(jbuf_t *b, uint64_t v) /* as a JSON string, as OTLP/JSON wants */
{
    char buf[24], *p = buf + sizeof(buf);
    *--p = '"';
    do
        *--p = (char)('0' + v % 10);
    while (v /= 10);
    *--p = '"';
    jb_raw(b, p, (size_t)(buf + sizeof(buf) - p));
}

static void jb_i64(jbuf_t *b, int64_t v)
{
    if (v >= 0) {
        jb_u64(b, (uint64_t)v);
        return;
    }
    char buf[24];
    int n = snprintf(buf, sizeof(buf), "\"%" PRId64 "\"", v);
    jb_raw(b, buf, (size_t)n);
}

static void jb_int(jbuf_t *b, long v) /* a plain JSON number (enums, 32-bit counts) */
{
    char buf[24];
    int n = snprintf(buf, sizeof(buf), "%ld", v);
    jb_raw(b, buf, (size_t)n);
}

static void jb_double(jbuf_t *b, double d)
{
    if (!isfinite(d)) { /* JSON has no NaN or infinity; the mapping spells them */
        if (isnan(d))
            JB_LIT(b, "\"NaN\"");
        else if (d > 0)
            JB_LIT(b, "\"Infinity\"");
        else
            JB_LIT(b, "\"-Infinity\"");
        return;
    }
    char buf[40];
    int n = snprintf(buf, sizeof(buf), "%.15g", d); /* 0.7, not 0.69999999999999996 */
    if (strtod(buf, NULL) != d)                      /* unless that does not read back */
        n = snprintf(buf, sizeof(buf), "%.17g", d);
    jb_raw(b, buf, (size_t)n);
}

static void jb_hex(jbuf_t *b, const uint8_t *id, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char buf[34];
    buf[0] = '"';
    for (size_t i = 0; i < n; i++) {
        buf[1 + 2 * i] = digits[id[i] >> 4];
        buf[2 + 2 * i] = digits[id[i] & 15];
    }
    buf[1 + 2 * n] = '"';
    jb_raw(b, buf, 2 * n + 2);
}

/* {"key":K,"value":{"stringValue":V}} */
static void jb_str_kv(jbuf_t *b, const char *key, const char *value)
{
    JB_LIT(b, "{\"key\":");
    jb_str(b, key);
    JB_LIT(b, ",\"value\":{\"stringValue\":");
    jb_str(b, value);
    JB_LIT(b, "}}");
}

static void jb_attr(jbuf_t *b, const otlp_span_t *s, const attr_t *a)
{
    JB_LIT(b, "{\"key\":");
    jb_str(b, text_at(s, a->key));
    JB_LIT(b, ",\"value\":{");
    switch (a->type) {
    case ATTR_STR:
        JB_LIT(b, "\"stringValue\":");
        jb_str(b, text_at(s, a->v.s.off));
        break;
    case ATTR_INT:
        JB_LIT(b, "\"intValue\":");
        jb_i64(b, a->v.i);
        break;
    case ATTR_DOUBLE:
        JB_LIT(b, "\"doubleValue\":");
        jb_double(b, a->v.d);
        break;
    case ATTR_STRS: {
        JB_LIT(b, "\"arrayValue\":{\"values\":[");
        const char *v = text_at(s, a->v.s.off);
        for (uint32_t i = 0; i < a->v.s.n; i++) {
            if (i)
                JB_LIT(b, ",");
            JB_LIT(b, "{\"stringValue\":");
            jb_str(b, v);
            JB_LIT(b, "}");
            v += strlen(v) + 1;
        }
        JB_LIT(b, "]}");
        break;
    }
    }
    JB_LIT(b, "}}");
}

static bool has_resource_key(const svc_otlp_config_t *cfg, const char *key)
{
    for (size_t i = 0; i < cfg->n_resource; i++)
        if (strcmp(cfg->resource[i].key, key) == 0)
            return true;
    return false;
}

static void jb_resource(jbuf_t *b, const otlp_tracer_t *t, const char *instance)
{
    const svc_otlp_config_t *cfg = &t->cfg;
    JB_LIT(b, "\"resource\":{\"attributes\":[");
    jb_str_kv(b, "service.name", cfg->service_name);
    if (instance && !has_resource_key(cfg, "service.instance.id")) {
        JB_LIT(b, ",");
        jb_str_kv(b, "service.instance.id", instance);
    }
    if (!has_resource_key(cfg, "service.version")) {
        JB_LIT(b, ",");
        jb_str_kv(b, "service.version", LLMSERVE_VERSION);
    }
    JB_LIT(b, ",");
    jb_str_kv(b, "telemetry.sdk.name", "llmserve");
    JB_LIT(b, ",");
    jb_str_kv(b, "telemetry.sdk.language", "c");
    JB_LIT(b, ",");
    jb_str_kv(b, "telemetry.sdk.version", LLMSERVE_VERSION);
    for (size_t i = 0; i < cfg->n_resource; i++) {
        const svc_otlp_kv_t *kv = &cfg->resource[i];
        if (strncmp(kv->key, "telemetry.sdk.", 14) == 0) /* they describe this code */
            continue;
        JB_LIT(b, ",");
        jb_str_kv(b, kv->key, kv->value);
    }
    JB_LIT(b, "]}");
}

static void jb_span(jbuf_t *b, const otlp_span_t *s)
{
    static const int kinds[] = {1, 2, 3}; /* SVC_SPAN_INTERNAL, _SERVER, _CLIENT */
    JB_LIT(b, "{\"traceId\":");
    jb_hex(b, s->trace_id, 16);
    JB_LIT(b, ",\"spanId\":");
    jb_hex(b, s->span_id, 8);
    if (s->has_parent) {
        JB_LIT(b, ",\"parentSpanId\":");
        jb_hex(b, s->parent_id, 8);
    }
    JB_LIT(b, ",\"name\":");
    jb_str(b, text_at(s, s->name));
    JB_LIT(b, ",\"kind\":");
    jb_int(b, (unsigned)s->kind < 3 ? kinds[s->kind] : 1);
    JB_LIT(b, ",\"startTimeUnixNano\":");
    jb_u64(b, s->start_ns);
    JB_LIT(b, ",\"endTimeUnixNano\":");
    jb_u64(b, s->end_ns);
    JB_LIT(b, ",\"attributes\":[");
    for (uint32_t i = 0; i < s->n_attrs; i++) {
        if (i)
            JB_LIT(b, ",");
        jb_attr(b, s, &s->attrs[i]);
    }
    JB_LIT(b, "]");
    if (s->dropped_attrs) {
        JB_LIT(b, ",\"droppedAttributesCount\":");
        jb_int(b, (long)s->dropped_attrs);
    }
    JB_LIT(b, ",\"events\":[");
    for (uint32_t i = 0; i < s->n_events; i++) {
        if (i)
            JB_LIT(b, ",");
        JB_LIT(b, "{\"timeUnixNano\":");
        jb_u64(b, s->events[i].time_ns);
        JB_LIT(b, ",\"name\":");
        jb_str(b, text_at(s, s->events[i].name));
        JB_LIT(b, "}");
    }
    JB_LIT(b, "]");
    if (s->dropped_events) {
        JB_LIT(b, ",\"droppedEventsCount\":");
        jb_int(b, (long)s->dropped_events);
    }
    JB_LIT(b, ",\"status\":{\"code\":");
    jb_int(b, s->status);
    if (s->status_msg >= 0) {
        JB_LIT(b, ",\"message\":");
        jb_str(b, text_at(s, (uint32_t)s->status_msg));
    }
    JB_LIT(b, "}}");
}

/* The request body for the batch; NULL when memory ran out.  Caller frees it. */
static char *batch_json(const otlp_tracer_t *t, const otlp_span_t *batch, const char *instance)
{
    jbuf_t b = {0};
    JB_LIT(&b, "{\"resourceSpans\":[{");
    jb_resource(&b, t, instance);
    JB_LIT(&b, ",\"scopeSpans\":[{\"scope\":{\"name\":");
    jb_str(&b, SCOPE_NAME);
    JB_LIT(&b, ",\"version\":");
    jb_str(&b, LLMSERVE_VERSION);
    JB_LIT(&b, "},\"spans\":[");
    for (const otlp_span_t *s = batch; s; s = s->next) {
        if (s != batch)
            JB_LIT(&b, ",");
        jb_span(&b, s);
    }
    JB_LIT(&b, "]}]}]}");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
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
