/*
 * Lock rules: store_t.mu guards everything below it (maps, families, series, instances,
 * figures).  Every public function takes it for its whole call and calls nothing that
 * takes another lock; do_* functions expect it held.  The configuration and an
 * instance's service and instance strings never change, so they are read without it.
 */
#define _GNU_SOURCE
#include "store.h"

#include "base/err.h"
#include "base/log.h"
#include "store_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest series key: name, then name and value of each label (service and instance
 * included), each with a NUL. */
#define KEY_MAX                                                                                    \
    (VALIDATE_MAX_NAME + 1 +                                                                       \
     (VALIDATE_MAX_LABELS + 2) * (VALIDATE_MAX_NAME + VALIDATE_MAX_VALUE + 2))

void store_config_init(store_config_t *cfg)
{
    cfg->max_series = 10000;
    cfg->max_report_samples = 100000;
    cfg->stale_us = 300 * 1000000ll;
    cfg->window_s = 60;
}

store_t *store_create(const store_config_t *cfg, int64_t now_us)
{
    store_t *s = ls_xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    s->cfg = *cfg;
    if (s->cfg.window_s == 0)
        s->cfg.window_s = 60;
    s->start_us = now_us;
    s->families = keymap_create();
    s->series = keymap_create();
    s->insts = keymap_create();
    return s;
}

static void series_free(series_t *se)
{
    free(se->key);
    free(se->text);
    free(se->labels);
    free(se->counts);
    free(se->ring);
    free(se);
}

static void inst_free(store_inst_t *in)
{
    free(in->service);
    free(in->instance);
    free(in->key);
    free(in);
}

void store_destroy(store_t *s)
{
    if (!s)
        return;
    keymap_iter_t it = {0};
    void *v;
    while (keymap_next(s->series, &it, &v))
        series_free(v);
    it = (keymap_iter_t){0};
    while (keymap_next(s->families, &it, &v)) {
        free(((family_t *)v)->name);
        free(v);
    }
    it = (keymap_iter_t){0};
    while (keymap_next(s->insts, &it, &v))
        inst_free(v);
    keymap_destroy(s->series);
    keymap_destroy(s->families);
    keymap_destroy(s->insts);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

const store_config_t *store_config(const store_t *s)
{
    return &s->cfg;
}

int64_t store_second(const store_t *s, int64_t now_us)
{
    int64_t d = now_us - s->start_us;
    return d > 0 ? d / 1000000 : 0;
}

int64_t store_second_start_us(const store_t *s, int64_t sec)
{
    return s->start_us + sec * 1000000;
}

/* ---- instances -------------------------------------------------------------------- */

static size_t inst_key(char *buf, const char *service, const char *instance)
{
    size_t a = strlen(service), b = strlen(instance);
    memcpy(buf, service, a + 1);
    memcpy(buf + a + 1, instance, b);
    return a + 1 + b;
}

store_inst_t *store_attach(store_t *s, const char *service, const char *instance, int64_t now_us)
{
    char key[2 * VALIDATE_MAX_VALUE + 2];
    LS_ASSERT(strlen(service) <= VALIDATE_MAX_VALUE && strlen(instance) <= VALIDATE_MAX_VALUE);
    size_t len = inst_key(key, service, instance);
    pthread_mutex_lock(&s->mu);
    store_inst_t *in = keymap_get(s->insts, key, len);
    if (!in) {
        in = ls_xcalloc(1, sizeof(*in));
        in->service = ls_xstrdup(service);
        in->instance = ls_xstrdup(instance);
        in->key = ls_xmalloc(len);
        memcpy(in->key, key, len);
        in->key_len = len;
        keymap_put(s->insts, key, len, in);
    }
    in->streams++;
    in->last_report_us = now_us;
    in->down_since_us = 0;
    in->forgotten = false;
    pthread_mutex_unlock(&s->mu);
    return in;
}

bool store_inst_is(const store_inst_t *inst, const char *service, const char *instance)
{
    return strcmp(inst->service, service) == 0 && strcmp(inst->instance, instance) == 0;
}

static void do_series_remove(store_t *s, series_t *se)
{
    family_t *f = se->fam;
    if (se->fprev)
        se->fprev->fnext = se->fnext;
    else
        f->head = se->fnext;
    if (se->fnext)
        se->fnext->fprev = se->fprev;
    f->n_series--;
    keymap_remove(s->series, se->key, se->key_len);
    if (f->n_series == 0) {
        keymap_remove(s->families, f->name, strlen(f->name));
        free(f->name);
        free(f);
    }
    series_free(se);
}

/* Drops every series of in; frees in unless a stream still holds it. */
static void do_forget(store_t *s, store_inst_t *in)
{
    for (series_t *se = in->series, *next; se; se = next) {
        next = se->inext;
        do_series_remove(s, se);
    }
    in->series = NULL;
    if (in->streams > 0) {
        in->forgotten = true;
        return;
    }
    keymap_remove(s->insts, in->key, in->key_len);
    inst_free(in);
}

void store_detach(store_t *s, store_inst_t *in, int64_t now_us)
{
    pthread_mutex_lock(&s->mu);
    LS_ASSERT(in->streams > 0);
    if (--in->streams == 0) {
        if (in->forgotten) {
            keymap_remove(s->insts, in->key, in->key_len);
            inst_free(in);
        } else if (in->down_since_us == 0) {
            in->down_since_us = now_us;
        }
    }
    pthread_mutex_unlock(&s->mu);
}

void store_tick(store_t *s, int64_t now_us)
{
    pthread_mutex_lock(&s->mu);
    /* Collected first: forgetting changes the map being walked. */
    size_t n = 0, cap = keymap_len(s->insts);
    store_inst_t **gone = cap ? ls_xcalloc(cap, sizeof(*gone)) : NULL;
    keymap_iter_t it = {0};
    void *v;
    while (keymap_next(s->insts, &it, &v)) {
        store_inst_t *in = v;
        if (in->forgotten || store__up(s, in, now_us))
            continue;
        if (in->down_since_us == 0) /* went silent with a stream open */
            in->down_since_us = in->last_report_us + s->cfg.stale_us;
        if (now_us - in->down_since_us >= s->cfg.stale_us)
            gone[n++] = in;
    }
    for (size_t i = 0; i < n; i++) {
        LS_LOG_INFO("metrics", "instance forgotten service=%s instance=%s", gone[i]->service,
                    gone[i]->instance);
        do_forget(s, gone[i]);
    }
    free(gone);
    pthread_mutex_unlock(&s->mu);
}

/* ---- validation and series ------------------------------------------------------- */

/* Counts units refused for why; the first refusal of a report names itself in ack. */
static void do_reject(store_t *s, store_ack_t *ack, reject_reason_t why, uint32_t units,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void do_reject(store_t *s, store_ack_t *ack, reject_reason_t why, uint32_t units,
                      const char *fmt, ...)
{
    s->rejected[why] += units;
    if (ack->rejected == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ack->message, sizeof(ack->message), fmt, ap);
        va_end(ap);
    }
    ack->rejected += units;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static const char *kind_name(store_kind_t k)
{
    return k == STORE_HISTOGRAM ? "histogram" : k == STORE_COUNTER ? "counter" : "gauge";
}

/* Whether a new family (name, kind) would clash in the exposition with one already
 * there: a histogram's name_bucket, name_sum and name_count lines with a family of
 * that name, or the other way round. */
static bool do_clashes(store_t *s, const char *name, store_kind_t kind)
{
    static const char *const SUFFIXES[] = {"_bucket", "_sum", "_count"};
    char buf[VALIDATE_MAX_NAME + 16];
    size_t n = strlen(name);
    for (size_t i = 0; i < 3; i++) {
        size_t m = strlen(SUFFIXES[i]);
        if (kind == STORE_HISTOGRAM) {
            memcpy(buf, name, n);
            memcpy(buf + n, SUFFIXES[i], m);
            if (keymap_get(s->families, buf, n + m))
                return true;
        }
        if (ends_with(name, SUFFIXES[i])) {
            family_t *f = keymap_get(s->families, name, n - m);
            if (f && f->kind == STORE_HISTOGRAM)
                return true;
        }
    }
    return false;
}

static int label_cmp(const void *a, const void *b)
{
    return strcmp(((const store_label_t *)a)->name, ((const store_label_t *)b)->name);
}

/* Appends v escaped for the text format (backslash, double quote, line feed). */
static size_t escape_value(char *out, const char *v)
{
    size_t n = 0;
    for (; *v; v++) {
        if (*v == '\\' || *v == '"') {
            out[n++] = '\\';
            out[n++] = *v;
        } else if (*v == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else {
            out[n++] = *v;
        }
    }
    return n;
}

static series_t *do_series_create(store_t *s, store_inst_t *in, family_t *f, const char *key,
                                  size_t key_len, const store_label_t *sorted, size_t n)
{
    series_t *se = ls_xcalloc(1, sizeof(*se));
    se->fam = f;
    se->inst = in;
    se->key = ls_xmalloc(key_len);
    memcpy(se->key, key, key_len);
    se->key_len = key_len;
    se->n_labels = n;
    se->labels = ls_xcalloc(n ? n : 1, sizeof(store_label_t));
    /* Label strings point into the key copy: name NUL (label NUL value NUL)*. */
    const char *p = se->key + strlen(se->key) + 1;
    size_t text_len = 1;
    for (size_t i = 0; i < n; i++) {
        se->labels[i].name = p;
        p += strlen(p) + 1;
        se->labels[i].value = p;
        p += strlen(p) + 1;
        text_len += strlen(sorted[i].name) + 2 * strlen(sorted[i].value) + 4;
    }
    se->text = ls_xmalloc(text_len);
    size_t t = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            se->text[t++] = ',';
        size_t ln = strlen(sorted[i].name);
        memcpy(se->text + t, sorted[i].name, ln);
        t += ln;
        se->text[t++] = '=';
        se->text[t++] = '"';
        t += escape_value(se->text + t, sorted[i].value);
        se->text[t++] = '"';
    }
    se->text[t] = '\0';
    if (f->kind == STORE_HISTOGRAM)
        se->counts = ls_xcalloc(f->buckets->n + 1, sizeof(uint64_t));
    se->ring_last = -1;
    se->fnext = f->head;
    if (f->head)
        f->head->fprev = se;
    f->head = se;
    f->n_series++;
    se->inext = in->series;
    if (in->series)
        in->series->iprev = se;
    in->series = se;
    keymap_put(s->series, key, key_len, se);
    return se;
}

/* The series for a sample, created if new, or NULL after counting it refused
 * (units: how many samples it stands for). */
static series_t *do_series(store_t *s, store_inst_t *in, store_kind_t kind, const char *name,
                           Llmserve__V1__Label *const *labels, size_t n_labels, uint32_t units,
                           store_ack_t *ack)
{
    const char *what = kind_name(kind);
    if (!validate_metric_name(name)) {
        do_reject(s, ack, REJECT_NAME, units, "%s sample: name is not a valid metric name", what);
        return NULL;
    }
    if (validate_reserved_name(name)) {
        do_reject(s, ack, REJECT_NAME, units, "%s %.64s: name is reserved for the collector", what,
                  name);
        return NULL;
    }
    if (kind == STORE_COUNTER && !ends_with(name, "_total")) {
        do_reject(s, ack, REJECT_NAME, units, "counter %.64s: name does not end in _total", name);
        return NULL;
    }
    if (n_labels > VALIDATE_MAX_LABELS) {
        do_reject(s, ack, REJECT_LABEL, units, "%s %.64s: %zu labels, more than %d", what, name,
                  n_labels, VALIDATE_MAX_LABELS);
        return NULL;
    }
    store_label_t sorted[VALIDATE_MAX_LABELS + 2];
    size_t n = 0;
    for (size_t i = 0; i < n_labels; i++) {
        const Llmserve__V1__Label *l = labels[i];
        if (!validate_label_name(l->name)) {
            do_reject(s, ack, REJECT_LABEL, units, "%s %.64s: a label name is not valid", what,
                      name);
            return NULL;
        }
        if (strcmp(l->name, "service") == 0 || strcmp(l->name, "instance") == 0 ||
            (kind == STORE_HISTOGRAM && strcmp(l->name, "le") == 0)) {
            do_reject(s, ack, REJECT_LABEL, units, "%s %.64s: label %s is reserved", what, name,
                      l->name);
            return NULL;
        }
        if (!validate_label_value(l->value)) {
            do_reject(s, ack, REJECT_LABEL, units,
                      "%s %.64s: value of label %.64s is longer than %d bytes or not UTF-8", what,
                      name, l->name, VALIDATE_MAX_VALUE);
            return NULL;
        }
        sorted[n++] = (store_label_t){l->name, l->value};
    }
    sorted[n++] = (store_label_t){"instance", in->instance};
    sorted[n++] = (store_label_t){"service", in->service};
    qsort(sorted, n, sizeof(sorted[0]), label_cmp);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(sorted[i - 1].name, sorted[i].name) == 0) {
            do_reject(s, ack, REJECT_LABEL, units, "%s %.64s: label %s given twice", what, name,
                      sorted[i].name);
            return NULL;
        }
    }
    family_t *f = keymap_get(s->families, name, strlen(name));
    if (f && f->kind != kind) {
        do_reject(s, ack, REJECT_KIND, units, "%s %.64s: the name is already a %s", what, name,
                  kind_name(f->kind));
        return NULL;
    }
    if (!f && do_clashes(s, name, kind)) {
        do_reject(s, ack, REJECT_KIND, units,
                  "%s %.64s: the name clashes with a histogram's _bucket, _sum or _count", what,
                  name);
        return NULL;
    }

    char key[KEY_MAX];
    size_t len = strlen(name) + 1;
    memcpy(key, name, len);
    for (size_t i = 0; i < n; i++) {
        size_t a = strlen(sorted[i].name) + 1, b = strlen(sorted[i].value) + 1;
        memcpy(key + len, sorted[i].name, a);
        memcpy(key + len + a, sorted[i].value, b);
        len += a + b;
    }
    series_t *se = keymap_get(s->series, key, len);
    if (se)
        return se;
    if (keymap_len(s->series) >= s->cfg.max_series) {
        do_reject(s, ack, REJECT_SERIES_LIMIT, units,
                  "%s %.64s: a new series past the limit of %zu series", what, name,
                  s->cfg.max_series);
        return NULL;
    }
    if (!f) {
        f = ls_xcalloc(1, sizeof(*f));
        f->name = ls_xstrdup(name);
        f->kind = kind;
        f->buckets = kind == STORE_HISTOGRAM ? buckets_for(name) : NULL;
        keymap_put(s->families, name, strlen(name), f);
    }
    return do_series_create(s, in, f, key, len, sorted, n);
}

/* The ring slot of second sec, cleared up to it; NULL when the ring cannot be
 * allocated (the totals still count; the window misses these samples). */
static void *do_ring_slot(series_t *se, int64_t sec, size_t slot_bytes)
{
    if (!se->ring) {
        se->ring = calloc(H, slot_bytes);
        if (!se->ring)
            return NULL;
        se->ring_last = sec;
    }
    if (sec > se->ring_last) {
        int64_t from = se->ring_last + 1 > sec - H + 1 ? se->ring_last + 1 : sec - H + 1;
        for (int64_t t = from; t <= sec; t++)
            memset((char *)se->ring + (size_t)(t % H) * slot_bytes, 0, slot_bytes);
        se->ring_last = sec;
    }
    return (char *)se->ring + (size_t)(sec % H) * slot_bytes;
}

static void do_histogram(store_t *s, store_inst_t *in, const Llmserve__V1__HistogramSample *h,
                         int64_t sec, store_ack_t *ack)
{
    size_t bad = 0;
    for (size_t i = 0; i < h->n_values; i++)
        bad += !isfinite(h->values[i]);
    if (h->n_values > 0 && bad == h->n_values) { /* nothing to store: no series either */
        if (validate_metric_name(h->name))
            do_reject(s, ack, REJECT_VALUE, (uint32_t)bad,
                      "histogram %.64s: every value is NaN or infinite", h->name);
        else
            do_reject(s, ack, REJECT_NAME, (uint32_t)bad,
                      "histogram sample: name is not a valid metric name");
        return;
    }
    uint32_t units = h->n_values ? (uint32_t)h->n_values : 1;
    series_t *se = do_series(s, in, STORE_HISTOGRAM, h->name, h->labels, h->n_labels, units, ack);
    if (!se)
        return;
    if (bad)
        do_reject(s, ack, REJECT_VALUE, (uint32_t)bad,
                  "histogram %.64s: %zu values are NaN or infinite", h->name, bad);
    const buckets_t *b = se->fam->buckets;
    uint32_t *slot =
        h->n_values > bad ? do_ring_slot(se, sec, (b->n + 1) * sizeof(uint32_t)) : NULL;
    for (size_t i = 0; i < h->n_values; i++) {
        double v = h->values[i];
        if (!isfinite(v))
            continue;
        size_t k = buckets_index(b, v);
        se->counts[k]++;
        se->count++;
        se->value += v;
        if (slot && slot[k] < UINT32_MAX)
            slot[k]++;
    }
    s->samples += h->n_values - bad;
}

static void do_counter(store_t *s, store_inst_t *in, const Llmserve__V1__CounterSample *c,
                       int64_t sec, store_ack_t *ack)
{
    if (!isfinite(c->increment) || c->increment < 0) {
        /* Names are checked first so that the reason names the first fault. */
        if (!validate_metric_name(c->name)) {
            do_reject(s, ack, REJECT_NAME, 1, "counter sample: name is not a valid metric name");
            return;
        }
        do_reject(s, ack, REJECT_VALUE, 1, "counter %.64s: increment is negative, NaN or infinite",
                  c->name);
        return;
    }
    series_t *se = do_series(s, in, STORE_COUNTER, c->name, c->labels, c->n_labels, 1, ack);
    if (!se)
        return;
    se->value += c->increment;
    double *slot = do_ring_slot(se, sec, sizeof(double));
    if (slot)
        *slot += c->increment;
    s->samples++;
}

static void do_gauge(store_t *s, store_inst_t *in, const Llmserve__V1__GaugeSample *g,
                     store_ack_t *ack)
{
    if (!isfinite(g->value)) {
        if (!validate_metric_name(g->name)) {
            do_reject(s, ack, REJECT_NAME, 1, "gauge sample: name is not a valid metric name");
            return;
        }
        do_reject(s, ack, REJECT_VALUE, 1, "gauge %.64s: value is NaN or infinite", g->name);
        return;
    }
    series_t *se = do_series(s, in, STORE_GAUGE, g->name, g->labels, g->n_labels, 1, ack);
    if (!se)
        return;
    se->value = g->value;
    s->samples++;
}

size_t store_report_samples(const Llmserve__V1__MetricsReport *r)
{
    size_t n = r->n_counters + r->n_gauges;
    for (size_t i = 0; i < r->n_histograms; i++)
        n += r->histograms[i]->n_values ? r->histograms[i]->n_values : 1;
    return n;
}

static void do_refuse(store_t *s, const Llmserve__V1__MetricsReport *r, reject_reason_t why,
                      const char *message, store_ack_t *ack)
{
    size_t n = store_report_samples(r);
    uint32_t units = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    s->rejected[why] += units;
    ack->rejected = units;
    snprintf(ack->message, sizeof(ack->message), "%s", message);
}

void store_refuse(store_t *s, const Llmserve__V1__MetricsReport *r, reject_reason_t why,
                  const char *message, store_ack_t *ack)
{
    memset(ack, 0, sizeof(*ack));
    pthread_mutex_lock(&s->mu);
    s->reports++;
    do_refuse(s, r, why, message, ack);
    pthread_mutex_unlock(&s->mu);
}

void store_apply(store_t *s, store_inst_t *in, const Llmserve__V1__MetricsReport *r, int64_t now_us,
                 store_ack_t *ack)
{
    memset(ack, 0, sizeof(*ack));
    size_t n = store_report_samples(r);
    pthread_mutex_lock(&s->mu);
    s->reports++;
    if (n > s->cfg.max_report_samples) {
        char why[128];
        snprintf(why, sizeof(why), "report has %zu samples, more than %zu: refused whole", n,
                 s->cfg.max_report_samples);
        do_refuse(s, r, REJECT_REPORT_SIZE, why, ack);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    in->last_report_us = now_us;
    in->down_since_us = 0;
    in->forgotten = false;
    int64_t sec = store_second(s, now_us);
    for (size_t i = 0; i < r->n_histograms; i++)
        do_histogram(s, in, r->histograms[i], sec, ack);
    for (size_t i = 0; i < r->n_counters; i++)
        do_counter(s, in, r->counters[i], sec, ack);
    for (size_t i = 0; i < r->n_gauges; i++)
        do_gauge(s, in, r->gauges[i], ack);
    pthread_mutex_unlock(&s->mu);
}
