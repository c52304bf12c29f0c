/*
 * store_read.c - the store's answers: queries, history, instances, figures and the
 * snapshot for the exposition.  Lock rules: store.c's.
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "base/log.h"
#include "store_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reading ----------------------------------------------------------------------- */

static const char *label_value(const series_t *se, const char *name)
{
    for (size_t i = 0; i < se->n_labels; i++)
        if (strcmp(se->labels[i].name, name) == 0)
            return se->labels[i].value;
    return NULL;
}

static bool do_matches(const store_t *s, const series_t *se, const store_label_t *match,
                       size_t n_match, bool up_only, int64_t now_us)
{
    if (up_only && !store__up(s, se->inst, now_us))
        return false;
    for (size_t i = 0; i < n_match; i++) {
        const char *v = label_value(se, match[i].name);
        if (!v || strcmp(v, match[i].value) != 0)
            return false;
    }
    return true;
}

/* Adds the ring counts of seconds [from, to] of histogram se into counts. */
static void add_hist_window(const series_t *se, int64_t from, int64_t to, uint64_t *counts)
{
    size_t nb = se->fam->buckets->n + 1;
    for (int64_t t = from; t <= to; t++) {
        if (!store__ring_has(se, t))
            continue;
        const uint32_t *slot = (const uint32_t *)se->ring + (size_t)(t % H) * nb;
        for (size_t k = 0; k < nb; k++)
            counts[k] += slot[k];
    }
}

static double add_counter_window(const series_t *se, int64_t from, int64_t to)
{
    double sum = 0;
    for (int64_t t = from; t <= to; t++)
        if (store__ring_has(se, t))
            sum += ((const double *)se->ring)[t % H];
    return sum;
}

int store_query(store_t *s, const char *name, const store_label_t *match, size_t n_match,
                uint32_t window_s, bool up_only, int64_t now_us, store_result_t *out)
{
    memset(out, 0, sizeof(*out));
    out->p50 = out->p95 = out->p99 = NAN;
    int64_t sec = store_second(s, now_us);
    uint32_t w = window_s ? window_s : s->cfg.window_s;
    if (w > H)
        w = H;
    if ((int64_t)w > sec + 1)
        w = (uint32_t)(sec + 1);
    out->window_s = w;
    int64_t from = sec - w + 1;

    pthread_mutex_lock(&s->mu);
    family_t *f = keymap_get(s->families, name, strlen(name));
    if (!f) {
        pthread_mutex_unlock(&s->mu);
        return LS_ERR_NOT_FOUND;
    }
    out->kind = f->kind;
    uint64_t counts[64] = {0};
    LS_ASSERT(!f->buckets || f->buckets->n + 1 <= 64);
    for (series_t *se = f->head; se; se = se->fnext) {
        if (!do_matches(s, se, match, n_match, up_only, now_us))
            continue;
        out->series++;
        out->sum += se->value;
        if (f->kind == STORE_HISTOGRAM) {
            out->count += se->count;
            add_hist_window(se, from, sec, counts);
        } else if (f->kind == STORE_COUNTER) {
            out->in_window += add_counter_window(se, from, sec);
        }
    }
    if (f->kind == STORE_HISTOGRAM) {
        for (size_t k = 0; k <= f->buckets->n; k++)
            out->in_window += (double)counts[k];
        out->p50 = buckets_quantile(f->buckets, counts, 0.50);
        out->p95 = buckets_quantile(f->buckets, counts, 0.95);
        out->p99 = buckets_quantile(f->buckets, counts, 0.99);
    }
    pthread_mutex_unlock(&s->mu);
    if (f->kind != STORE_GAUGE)
        out->rate = out->in_window / (double)w;
    return LS_OK;
}

int store_history(store_t *s, const char *name, const store_label_t *match, size_t n_match,
                  size_t n, int64_t now_us, store_point_t *out)
{
    LS_ASSERT(n <= H);
    for (size_t i = 0; i < n; i++)
        out[i] = (store_point_t){0, NAN, NAN, NAN};
    int64_t sec = store_second(s, now_us);
    int64_t from = sec - (int64_t)n; /* out[0] is second from, out[n - 1] is sec - 1 */
    pthread_mutex_lock(&s->mu);
    family_t *f = keymap_get(s->families, name, strlen(name));
    if (!f) {
        pthread_mutex_unlock(&s->mu);
        return LS_ERR_NOT_FOUND;
    }
    if (f->kind == STORE_GAUGE) {
        pthread_mutex_unlock(&s->mu);
        return LS_OK;
    }
    size_t nb = f->kind == STORE_HISTOGRAM ? f->buckets->n + 1 : 0;
    uint64_t *agg = nb ? calloc(n * nb, sizeof(uint64_t)) : NULL;
    if (nb && !agg) {
        pthread_mutex_unlock(&s->mu);
        return LS_ERR_NOMEM;
    }
    for (series_t *se = f->head; se; se = se->fnext) {
        if (!se->ring || !do_matches(s, se, match, n_match, false, now_us))
            continue;
        for (size_t i = 0; i < n; i++) {
            int64_t t = from + (int64_t)i;
            if (!store__ring_has(se, t))
                continue;
            if (nb) {
                const uint32_t *slot = (const uint32_t *)se->ring + (size_t)(t % H) * nb;
                for (size_t k = 0; k < nb; k++)
                    agg[i * nb + k] += slot[k];
            } else {
                out[i].value += ((const double *)se->ring)[t % H];
            }
        }
    }
    const buckets_t *b = f->buckets;
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; nb && i < n; i++) {
        const uint64_t *c = agg + i * nb;
        for (size_t k = 0; k < nb; k++)
            out[i].value += (double)c[k];
        out[i].p50 = buckets_quantile(b, c, 0.50);
        out[i].p95 = buckets_quantile(b, c, 0.95);
        out[i].p99 = buckets_quantile(b, c, 0.99);
    }
    free(agg);
    return LS_OK;
}

bool store_label_of(store_t *s, const char *name, const store_label_t *match, size_t n_match,
                    bool up_only, int64_t now_us, const char *label, char *buf, size_t len)
{
    bool found = false;
    pthread_mutex_lock(&s->mu);
    family_t *f = keymap_get(s->families, name, strlen(name));
    for (series_t *se = f ? f->head : NULL; se && !found; se = se->fnext) {
        if (!do_matches(s, se, match, n_match, up_only, now_us))
            continue;
        const char *v = label_value(se, label);
        if (v) {
            snprintf(buf, len, "%s", v);
            found = true;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

size_t store_label_values(store_t *s, const char *const *names, size_t n_names, const char *label,
                          char ***out)
{
    size_t n = 0, cap = 0;
    char **v = NULL;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < n_names; i++) {
        family_t *f = keymap_get(s->families, names[i], strlen(names[i]));
        for (series_t *se = f ? f->head : NULL; se; se = se->fnext) {
            const char *val = label_value(se, label);
            if (!val)
                continue;
            bool seen = false;
            for (size_t j = 0; j < n && !seen; j++)
                seen = strcmp(v[j], val) == 0;
            if (seen)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 8;
                char **nv = realloc(v, cap * sizeof(char *));
                if (!nv)
                    break;
                v = nv;
            }
            v[n++] = ls_xstrdup(val);
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (n)
        qsort(v, n, sizeof(char *), str_cmp);
    *out = v;
    return n;
}

void store_strings_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int inst_info_cmp(const void *a, const void *b)
{
    const store_inst_info_t *x = a, *y = b;
    int c = strcmp(x->service, y->service);
    return c ? c : strcmp(x->instance, y->instance);
}

/* Copies the listed instances into a new array; NULL with *n 0 when there are none or
 * memory is exhausted. */
static store_inst_info_t *do_instances(store_t *s, int64_t now_us, size_t *n)
{
    *n = 0;
    size_t cap = keymap_len(s->insts);
    store_inst_info_t *v = cap ? calloc(cap, sizeof(*v)) : NULL;
    if (!v)
        return NULL;
    keymap_iter_t it = {0};
    void *p;
    while (keymap_next(s->insts, &it, &p)) {
        store_inst_t *in = p;
        if (in->forgotten)
            continue;
        store_inst_info_t *o = &v[(*n)++];
        o->service = ls_xstrdup(in->service);
        o->instance = ls_xstrdup(in->instance);
        o->up = store__up(s, in, now_us);
        o->last_report_ago_s = (double)(now_us - in->last_report_us) / 1e6;
    }
    return v;
}

size_t store_instances(store_t *s, int64_t now_us, store_inst_info_t **out)
{
    size_t n;
    pthread_mutex_lock(&s->mu);
    *out = do_instances(s, now_us, &n);
    pthread_mutex_unlock(&s->mu);
    if (n)
        qsort(*out, n, sizeof(**out), inst_info_cmp);
    return n;
}

void store_instances_free(store_inst_info_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].service);
        free(v[i].instance);
    }
    free(v);
}

static void do_stats(store_t *s, int64_t now_us, store_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->reports = s->reports;
    out->samples = s->samples;
    for (size_t i = 0; i < REJECT_N_REASONS; i++) {
        out->rejected[i] = s->rejected[i];
        out->rejected_total += s->rejected[i];
    }
    out->series = keymap_len(s->series);
    out->series_limit = s->cfg.max_series;
    out->uptime_s = (double)(now_us - s->start_us) / 1e6;
}

void store_stats(store_t *s, int64_t now_us, store_stats_t *out)
{
    pthread_mutex_lock(&s->mu);
    do_stats(s, now_us, out);
    pthread_mutex_unlock(&s->mu);
}

/* ---- snapshot ------------------------------------------------------------------------- */

/* The snapshot and everything it points to live in one block after the header. */
typedef struct {
    store_snap_t snap;
    char *block;
} snap_holder_t;

static int family_cmp(const void *a, const void *b)
{
    return strcmp(((const store_snap_family_t *)a)->name, ((const store_snap_family_t *)b)->name);
}

static int snap_series_cmp(const void *a, const void *b)
{
    return strcmp(((const store_snap_series_t *)a)->labels,
                  ((const store_snap_series_t *)b)->labels);
}

/* Carves len bytes, aligned for any field, from *p. */
static void *carve(char **p, size_t len)
{
    void *r = *p;
    *p += (len + 15) & ~(size_t)15;
    return r;
}

static size_t round16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

store_snap_t *store_snapshot(store_t *s, int64_t now_us)
{
    snap_holder_t *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    store_snap_t *snap = &h->snap;
    pthread_mutex_lock(&s->mu);
    /* First the size of the copy, then the copy, both under the lock. */
    size_t nf = keymap_len(s->families), bytes = round16(nf * sizeof(store_snap_family_t));
    keymap_iter_t it = {0};
    void *v;
    while (keymap_next(s->families, &it, &v)) {
        family_t *f = v;
        bytes += round16(strlen(f->name) + 1) + round16(f->n_series * sizeof(store_snap_series_t));
        for (series_t *se = f->head; se; se = se->fnext) {
            bytes += round16(strlen(se->text) + 1);
            if (se->counts)
                bytes += round16((f->buckets->n + 1) * sizeof(uint64_t));
        }
    }
    char *p = h->block = malloc(bytes ? bytes : 1);
    if (!p) {
        pthread_mutex_unlock(&s->mu);
        free(h);
        return NULL;
    }
    snap->families = carve(&p, nf * sizeof(store_snap_family_t));
    snap->n_families = nf;
    it = (keymap_iter_t){0};
    size_t fi = 0;
    while (keymap_next(s->families, &it, &v)) {
        family_t *f = v;
        store_snap_family_t *sf = &snap->families[fi++];
        size_t ln = strlen(f->name) + 1;
        sf->name = memcpy(carve(&p, ln), f->name, ln);
        sf->kind = f->kind;
        sf->buckets = f->buckets;
        sf->n_series = f->n_series;
        sf->series = carve(&p, f->n_series * sizeof(store_snap_series_t));
        size_t si = 0;
        for (series_t *se = f->head; se; se = se->fnext) {
            store_snap_series_t *ss = &sf->series[si++];
            size_t lt = strlen(se->text) + 1;
            ss->labels = memcpy(carve(&p, lt), se->text, lt);
            ss->value = se->value;
            ss->count = se->count;
            if (se->counts) {
                size_t lc = (f->buckets->n + 1) * sizeof(uint64_t);
                ss->counts = memcpy(carve(&p, lc), se->counts, lc);
            }
        }
    }
    snap->instances = do_instances(s, now_us, &snap->n_instances);
    do_stats(s, now_us, &snap->stats);
    pthread_mutex_unlock(&s->mu);

    qsort(snap->families, snap->n_families, sizeof(store_snap_family_t), family_cmp);
    for (size_t i = 0; i < snap->n_families; i++)
        qsort(snap->families[i].series, snap->families[i].n_series, sizeof(store_snap_series_t),
              snap_series_cmp);
    if (snap->n_instances)
        qsort(snap->instances, snap->n_instances, sizeof(store_inst_info_t), inst_info_cmp);
    return snap;
}

void store_snap_free(store_snap_t *snap)
{
    if (!snap)
        return;
    snap_holder_t *h = (snap_holder_t *)snap; /* snap is the holder's first field */
    store_instances_free(snap->instances, snap->n_instances);
    free(h->block);
    free(h);
}
