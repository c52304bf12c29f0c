/*
 * report_agg.c - the metrics aggregate and the reports made from it.
 *
 * Lock rules: a->mu guards the series table and list, each series' value, dirty flag and
 * pending count, the observation buffer and the dropped counts.  svc__agg_record holds it
 * for a hash lookup and an add (an allocation for a new series); svc__agg_take for one
 * walk of the series list.  The batch_* fields of a series are the reporter thread's
 * alone (never touched under the lock by anyone else).
 */
#define _GNU_SOURCE
#include "svc/report_agg.h"

#include "base/log.h"
#include "svc/metric_names.h"
#include "svc/report_client.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Takes in a row with nothing to send before a counter or histogram series is forgotten
 * (a minute at the default interval). */
#define SERIES_IDLE_TAKES 60

struct svc__series {
    svc__series_t *hash_next; /* the bucket's chain */
    svc__series_t *next;      /* the list of every series */
    uint64_t hash;
    svc__kind_t kind;
    const char *name;    /* in this allocation, as the labels' strings */
    svc_label_t *labels; /* n_labels */
    size_t n_labels;
    double value;   /* counter: increment not yet taken; gauge: the last value */
    bool dirty;     /* counter, gauge: changed since the last take */
    size_t pending; /* histogram: its values in the observation buffer */
    unsigned idle;  /* takes in a row with nothing to send */
    /* The reporter thread's, while it builds a report. */
    size_t batch_n, batch_at;
    double *batch_values;
};

struct svc__agg {
    size_t max_series, max_observations;
    size_t obs_hint; /* the reporter thread's: the last take's observation count */
    pthread_mutex_t mu;
    svc__series_t **buckets;
    size_t bucket_mask;
    svc__series_t *all;
    size_t n_series;
    svc__sample_t *obs;
    size_t n_obs, cap_obs;
    uint64_t dropped_pending; /* not yet taken */
    uint64_t dropped_total;
    bool early_asked; /* an early report was asked since the last take */
};

svc__agg_t *svc__agg_create(size_t max_series, size_t max_observations)
{
    svc__agg_t *a = ls_xcalloc(1, sizeof(*a));
    a->max_series = max_series;
    a->max_observations = max_observations;
    size_t buckets = 64;
    while (buckets < max_series * 2)
        buckets *= 2;
    a->buckets = ls_xcalloc(buckets, sizeof(*a->buckets));
    a->bucket_mask = buckets - 1;
    pthread_mutex_init(&a->mu, NULL);
    return a;
}

size_t svc__agg_destroy(svc__agg_t *a)
{
    size_t held = a->n_obs + (a->dropped_pending ? 1 : 0);
    while (a->all) {
        svc__series_t *s = a->all;
        a->all = s->next;
        held += s->kind == SVC__COUNTER && s->dirty;
        free(s);
    }
    free(a->buckets);
    free(a->obs);
    pthread_mutex_destroy(&a->mu);
    free(a);
    return held;
}

/* ---- recording --------------------------------------------------------------------- */

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (h ^ 0xff) * 1099511628211ull; /* the NUL: "ab","c" differs from "a","bc" */
}

/* The series' hash and key size; false when the key breaks the bounds. */
static bool series_hash(svc__kind_t kind, const char *name, const svc_label_t *labels, size_t n,
                        uint64_t *hash, size_t *key_bytes)
{
    if (!name || n > SVC_REPORT_MAX_LABELS || (n && !labels))
        return false;
    size_t bytes = strlen(name) + 1;
    uint64_t h = fnv(14695981039346656037ull + (uint64_t)kind, name);
    for (size_t i = 0; i < n; i++) {
        if (!labels[i].key || !labels[i].value)
            return false;
        bytes += strlen(labels[i].key) + strlen(labels[i].value) + 2;
        h = fnv(fnv(h, labels[i].key), labels[i].value);
    }
    if (bytes > SVC_REPORT_MAX_KEY_BYTES)
        return false;
    *hash = h;
    *key_bytes = bytes;
    return true;
}

static bool series_is(const svc__series_t *s, uint64_t h, svc__kind_t kind, const char *name,
                      const svc_label_t *labels, size_t n)
{
    if (s->hash != h || s->kind != kind || s->n_labels != n || strcmp(s->name, name) != 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(s->labels[i].key, labels[i].key) != 0 ||
            strcmp(s->labels[i].value, labels[i].value) != 0)
            return false;
    return true;
}

/* The series, added if new; NULL when the table is full.  a->mu held. */
static svc__series_t *do_series(svc__agg_t *a, svc__kind_t kind, const char *name,
                                const svc_label_t *labels, size_t n, uint64_t h, size_t key_bytes)
{
    svc__series_t **bucket = &a->buckets[h & a->bucket_mask];
    for (svc__series_t *s = *bucket; s; s = s->hash_next)
        if (series_is(s, h, kind, name, labels, n))
            return s;
    if (a->n_series >= a->max_series)
        return NULL;
    svc__series_t *s = ls_xcalloc(1, sizeof(*s) + n * sizeof(svc_label_t) + key_bytes);
    s->labels = (svc_label_t *)(s + 1);
    char *p = (char *)(s->labels + n);
    size_t len = strlen(name) + 1;
    s->name = memcpy(p, name, len);
    p += len;
    for (size_t i = 0; i < n; i++) {
        len = strlen(labels[i].key) + 1;
        s->labels[i].key = memcpy(p, labels[i].key, len);
        p += len;
        len = strlen(labels[i].value) + 1;
        s->labels[i].value = memcpy(p, labels[i].value, len);
        p += len;
    }
    s->n_labels = n;
    s->hash = h;
    s->kind = kind;
    s->hash_next = *bucket;
    *bucket = s;
    s->next = a->all;
    a->all = s;
    a->n_series++;
    return s;
}

/* Appends one observation of s; false when the buffer is at its bound.  a->mu held. */
static bool do_append_obs(svc__agg_t *a, svc__series_t *s, double v)
{
    if (a->n_obs >= a->max_observations)
        return false;
    if (a->n_obs == a->cap_obs) {
        size_t cap = a->cap_obs ? a->cap_obs * 2 : 256;
        if (cap > a->max_observations)
            cap = a->max_observations;
        svc__sample_t *obs = realloc(a->obs, cap * sizeof(*obs));
        if (!obs)
            return false;
        a->obs = obs;
        a->cap_obs = cap;
    }
    a->obs[a->n_obs++] = (svc__sample_t){s, v};
    s->pending++;
    return true;
}

static void do_drop(svc__agg_t *a)
{
    a->dropped_pending++;
    a->dropped_total++;
}

bool svc__agg_record(svc__agg_t *a, svc__kind_t kind, const char *name, const svc_label_t *labels,
                     size_t n_labels, double v)
{
    uint64_t h = 0;
    size_t key_bytes = 0;
    bool ok = isfinite(v) && (kind != SVC__COUNTER || v >= 0) &&
              series_hash(kind, name, labels, n_labels, &h, &key_bytes);
    bool early = false;
    pthread_mutex_lock(&a->mu);
    svc__series_t *s = ok ? do_series(a, kind, name, labels, n_labels, h, key_bytes) : NULL;
    if (!s) {
        do_drop(a);
    } else if (kind == SVC__COUNTER) {
        s->value += v;
        s->dirty = true;
    } else if (kind == SVC__GAUGE) {
        s->value = v;
        s->dirty = true;
    } else if (!do_append_obs(a, s, v)) {
        do_drop(a);
    } else if (a->n_obs >= a->max_observations / 2 && !a->early_asked) {
        a->early_asked = early = true;
    }
    pthread_mutex_unlock(&a->mu);
    return early;
}

void svc__agg_counts(svc__agg_t *a, uint64_t *dropped, size_t *series, size_t *observations)
{
    pthread_mutex_lock(&a->mu);
    *dropped = a->dropped_total;
    *series = a->n_series;
    *observations = a->n_obs;
    pthread_mutex_unlock(&a->mu);
}

/* ---- taking, merging back ------------------------------------------------------------ */

static void unlink_series(svc__agg_t *a, svc__series_t *s)
{
    svc__series_t **pp = &a->buckets[s->hash & a->bucket_mask];
    while (*pp != s)
        pp = &(*pp)->hash_next;
    *pp = s->hash_next;
    a->n_series--;
}

void svc__agg_take(svc__agg_t *a, bool all_gauges, bool may_evict, svc__taken_t *t)
{
    memset(t, 0, sizeof(*t));
    /* The next buffer, sized as the last one was filled, allocated before the lock. */
    size_t fresh_cap = a->obs_hint > 256 ? a->obs_hint : 256;
    if (fresh_cap > a->max_observations)
        fresh_cap = a->max_observations;
    svc__sample_t *fresh = malloc(fresh_cap * sizeof(*fresh)); /* NULL: grows on demand */
    svc__series_t *evicted = NULL;

    pthread_mutex_lock(&a->mu);
    t->obs = a->obs;
    t->n_obs = a->n_obs;
    a->obs = fresh;
    a->cap_obs = fresh ? fresh_cap : 0;
    a->n_obs = 0;
    t->dropped = a->dropped_pending;
    a->dropped_pending = 0;
    a->early_asked = false;
    size_t n = a->n_series ? a->n_series : 1;
    t->counters = ls_xcalloc(n, sizeof(svc__sample_t));
    t->gauges = ls_xcalloc(n, sizeof(svc__sample_t));
    t->hists = ls_xcalloc(n, sizeof(svc__series_t *));
    svc__series_t **pp = &a->all;
    while (*pp) {
        svc__series_t *s = *pp;
        bool busy = s->dirty || s->pending > 0;
        if (s->kind == SVC__COUNTER && s->dirty) {
            t->counters[t->n_counters++] = (svc__sample_t){s, s->value};
            s->value = 0;
        } else if (s->kind == SVC__GAUGE && (s->dirty || all_gauges)) {
            t->gauges[t->n_gauges++] = (svc__sample_t){s, s->value};
        } else if (s->kind == SVC__HISTOGRAM && s->pending > 0) {
            t->hists[t->n_hists++] = s;
            s->batch_n = s->pending;
            s->pending = 0;
        }
        s->dirty = false;
        s->idle = busy ? 0 : may_evict ? s->idle + 1 : s->idle;
        if (s->kind != SVC__GAUGE && s->idle >= SERIES_IDLE_TAKES) {
            *pp = s->next;
            unlink_series(a, s);
            s->next = evicted;
            evicted = s;
            continue;
        }
        pp = &s->next;
    }
    pthread_mutex_unlock(&a->mu);

    a->obs_hint = t->n_obs;
    while (evicted) {
        svc__series_t *s = evicted;
        evicted = s->next;
        free(s);
    }
}

bool svc__taken_empty(const svc__taken_t *t)
{
    return t->n_counters == 0 && t->n_gauges == 0 && t->n_hists == 0 && t->dropped == 0;
}

void svc__taken_free(svc__taken_t *t)
{
    free(t->counters);
    free(t->obs);
    free(t->gauges);
    free(t->hists);
    memset(t, 0, sizeof(*t));
}

void svc__agg_merge_back(svc__agg_t *a, const svc__taken_t *t)
{
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < t->n_counters; i++) {
        t->counters[i].s->value += t->counters[i].v;
        t->counters[i].s->dirty = true;
    }
    for (size_t i = 0; i < t->n_obs; i++)
        if (!do_append_obs(a, t->obs[i].s, t->obs[i].v))
            do_drop(a);
    a->dropped_pending += t->dropped;
    pthread_mutex_unlock(&a->mu);
}

/* ---- building a MetricsReport --------------------------------------------------------- */

static Llmserve__V1__Label **fill_labels(const svc__series_t *s, svc__report_t *m, size_t *at)
{
    Llmserve__V1__Label **first = m->labp + *at;
    for (size_t i = 0; i < s->n_labels; i++, (*at)++) {
        Llmserve__V1__Label *l = &m->lab[*at];
        llmserve__v1__label__init(l);
        l->name = (char *)s->labels[i].key;
        l->value = (char *)s->labels[i].value;
        m->labp[*at] = l;
    }
    return first;
}

void svc__report_build(const svc__taken_t *t, uint64_t seq, svc__report_t *m)
{
    memset(m, 0, sizeof(*m));
    llmserve__v1__metrics_report__init(&m->msg);
    m->msg.sequence = seq;
    size_t n_cs = t->n_counters + (t->dropped ? 1 : 0), n_labels = 0;
    for (size_t i = 0; i < t->n_counters; i++)
        n_labels += t->counters[i].s->n_labels;
    for (size_t i = 0; i < t->n_gauges; i++)
        n_labels += t->gauges[i].s->n_labels;
    for (size_t i = 0; i < t->n_hists; i++)
        n_labels += t->hists[i]->n_labels;
    m->cs = ls_xcalloc(n_cs + 1, sizeof(*m->cs));
    m->csp = ls_xcalloc(n_cs + 1, sizeof(*m->csp));
    m->gs = ls_xcalloc(t->n_gauges + 1, sizeof(*m->gs));
    m->gsp = ls_xcalloc(t->n_gauges + 1, sizeof(*m->gsp));
    m->hs = ls_xcalloc(t->n_hists + 1, sizeof(*m->hs));
    m->hsp = ls_xcalloc(t->n_hists + 1, sizeof(*m->hsp));
    m->lab = ls_xcalloc(n_labels + 1, sizeof(*m->lab));
    m->labp = ls_xcalloc(n_labels + 1, sizeof(*m->labp));
    m->values = ls_xcalloc(t->n_obs + 1, sizeof(*m->values));

    size_t at = 0;
    for (size_t i = 0; i < t->n_counters; i++) {
        const svc__series_t *s = t->counters[i].s;
        Llmserve__V1__CounterSample *x = &m->cs[i];
        llmserve__v1__counter_sample__init(x);
        x->name = (char *)s->name;
        x->n_labels = s->n_labels;
        x->labels = fill_labels(s, m, &at);
        x->increment = t->counters[i].v;
        m->csp[i] = x;
    }
    if (t->dropped) {
        Llmserve__V1__CounterSample *x = &m->cs[t->n_counters];
        llmserve__v1__counter_sample__init(x);
        x->name = M_REPORT_DROPPED;
        x->increment = (double)t->dropped;
        m->csp[t->n_counters] = x;
    }
    m->msg.n_counters = n_cs;
    m->msg.counters = m->csp;

    for (size_t i = 0; i < t->n_gauges; i++) {
        const svc__series_t *s = t->gauges[i].s;
        Llmserve__V1__GaugeSample *x = &m->gs[i];
        llmserve__v1__gauge_sample__init(x);
        x->name = (char *)s->name;
        x->n_labels = s->n_labels;
        x->labels = fill_labels(s, m, &at);
        x->value = t->gauges[i].v;
        m->gsp[i] = x;
    }
    m->msg.n_gauges = t->n_gauges;
    m->msg.gauges = m->gsp;

    /* Each histogram's values, contiguous and in the order observed. */
    size_t off = 0;
    for (size_t i = 0; i < t->n_hists; i++) {
        svc__series_t *s = t->hists[i];
        s->batch_values = m->values + off;
        s->batch_at = 0;
        off += s->batch_n;
    }
    for (size_t i = 0; i < t->n_obs; i++) {
        svc__series_t *s = t->obs[i].s;
        s->batch_values[s->batch_at++] = t->obs[i].v;
    }
    for (size_t i = 0; i < t->n_hists; i++) {
        const svc__series_t *s = t->hists[i];
        Llmserve__V1__HistogramSample *x = &m->hs[i];
        llmserve__v1__histogram_sample__init(x);
        x->name = (char *)s->name;
        x->n_labels = s->n_labels;
        x->labels = fill_labels(s, m, &at);
        x->n_values = s->batch_n;
        x->values = s->batch_values;
        m->hsp[i] = x;
    }
    m->msg.n_histograms = t->n_hists;
    m->msg.histograms = m->hsp;
}

void svc__report_free(svc__report_t *m)
{
    free(m->cs);
    free(m->csp);
    free(m->gs);
    free(m->gsp);
    free(m->hs);
    free(m->hsp);
    free(m->lab);
    free(m->labp);
    free(m->values);
    memset(m, 0, sizeof(*m));
}
