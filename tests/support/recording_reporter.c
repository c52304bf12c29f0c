/*
 * recording_reporter.c - every call in one growing array under one mutex; each call's
 * strings copied into one allocation of its own.
 */
#define _GNU_SOURCE
#include "recording_reporter.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LABELS 8 /* a call with more is kept with the first MAX_LABELS */

typedef struct {
    recording_kind_t kind;
    double value;
    const char *name; /* into text */
    svc_label_t labels[MAX_LABELS];
    size_t n_labels;
    size_t n_labels_given; /* before truncation: a misfit when above MAX_LABELS */
    char *text;
} call_t;

struct recording_reporter {
    svc_reporter_t base; /* first: the ops take the base */
    pthread_mutex_t mu;
    call_t *calls;
    size_t n, cap;
};

static void *xalloc(void *p)
{
    if (!p)
        abort(); /* a test's scaffolding: nothing sensible to do */
    return p;
}

/* Copies s to *at and advances it. */
static const char *put(char **at, const char *s)
{
    size_t len = strlen(s) + 1;
    memcpy(*at, s, len);
    const char *out = *at;
    *at += len;
    return out;
}

static void record(svc_reporter_t *r, recording_kind_t kind, const char *name,
                   const svc_label_t *labels, size_t n_labels, double value)
{
    recording_reporter_t *rr = (recording_reporter_t *)r;
    call_t c = {.kind = kind, .value = value, .n_labels_given = n_labels};
    c.n_labels = n_labels < MAX_LABELS ? n_labels : MAX_LABELS;
    size_t bytes = strlen(name) + 1;
    for (size_t i = 0; i < c.n_labels; i++)
        bytes += strlen(labels[i].key) + strlen(labels[i].value) + 2;
    c.text = xalloc(malloc(bytes));
    char *at = c.text;
    c.name = put(&at, name);
    for (size_t i = 0; i < c.n_labels; i++) {
        c.labels[i].key = put(&at, labels[i].key);
        c.labels[i].value = put(&at, labels[i].value);
    }
    pthread_mutex_lock(&rr->mu);
    if (rr->n == rr->cap) {
        rr->cap = rr->cap ? 2 * rr->cap : 256;
        rr->calls = xalloc(realloc(rr->calls, rr->cap * sizeof(*rr->calls)));
    }
    rr->calls[rr->n++] = c;
    pthread_mutex_unlock(&rr->mu);
}

static void op_add(svc_reporter_t *r, const char *name, const svc_label_t *labels, size_t n,
                   double v)
{
    record(r, RECORDING_COUNTER, name, labels, n, v);
}

static void op_set(svc_reporter_t *r, const char *name, const svc_label_t *labels, size_t n,
                   double v)
{
    record(r, RECORDING_GAUGE, name, labels, n, v);
}

static void op_observe(svc_reporter_t *r, const char *name, const svc_label_t *labels, size_t n,
                       double v)
{
    record(r, RECORDING_OBSERVE, name, labels, n, v);
}

static void op_destroy(svc_reporter_t *r)
{
    recording_reporter_t *rr = (recording_reporter_t *)r;
    for (size_t i = 0; i < rr->n; i++)
        free(rr->calls[i].text);
    free(rr->calls);
    pthread_mutex_destroy(&rr->mu);
    free(rr);
}

static const svc_reporter_ops_t ops = {op_add, op_set, op_observe, op_destroy};

recording_reporter_t *recording_reporter_create(void)
{
    recording_reporter_t *rr = xalloc(calloc(1, sizeof(*rr)));
    rr->base.ops = &ops;
    pthread_mutex_init(&rr->mu, NULL);
    return rr;
}

svc_reporter_t *recording_reporter_base(recording_reporter_t *rr)
{
    return &rr->base;
}

void recording_reporter_destroy(recording_reporter_t *rr)
{
    if (rr)
        op_destroy(&rr->base);
}

/* ---- queries (rr->mu held) ------------------------------------------------------------ */

static bool matches(const call_t *c, const char *name, const svc_label_t *match, size_t n_match)
{
    if (strcmp(c->name, name) != 0)
        return false;
    for (size_t m = 0; m < n_match; m++) {
        bool found = false;
        for (size_t i = 0; i < c->n_labels && !found; i++)
            found = strcmp(c->labels[i].key, match[m].key) == 0 &&
                    strcmp(c->labels[i].value, match[m].value) == 0;
        if (!found)
            return false;
    }
    return true;
}

double recording_reporter_sum(recording_reporter_t *rr, const char *name, const svc_label_t *match,
                              size_t n_match)
{
    double sum = 0;
    pthread_mutex_lock(&rr->mu);
    for (size_t i = 0; i < rr->n; i++)
        if (rr->calls[i].kind == RECORDING_COUNTER && matches(&rr->calls[i], name, match, n_match))
            sum += rr->calls[i].value;
    pthread_mutex_unlock(&rr->mu);
    return sum;
}

size_t recording_reporter_observations(recording_reporter_t *rr, const char *name,
                                       const svc_label_t *match, size_t n_match, double *out,
                                       size_t cap)
{
    size_t n = 0;
    pthread_mutex_lock(&rr->mu);
    for (size_t i = 0; i < rr->n; i++) {
        if (rr->calls[i].kind != RECORDING_OBSERVE || !matches(&rr->calls[i], name, match, n_match))
            continue;
        if (n < cap)
            out[n] = rr->calls[i].value;
        n++;
    }
    pthread_mutex_unlock(&rr->mu);
    return n;
}

bool recording_reporter_gauge(recording_reporter_t *rr, const char *name, const svc_label_t *match,
                              size_t n_match, double *value)
{
    bool found = false;
    pthread_mutex_lock(&rr->mu);
    for (size_t i = rr->n; i-- > 0;) {
        if (rr->calls[i].kind == RECORDING_GAUGE && matches(&rr->calls[i], name, match, n_match)) {
            *value = rr->calls[i].value;
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&rr->mu);
    return found;
}

size_t recording_reporter_calls(recording_reporter_t *rr, const char *name,
                                const svc_label_t *match, size_t n_match)
{
    size_t n = 0;
    pthread_mutex_lock(&rr->mu);
    for (size_t i = 0; i < rr->n; i++)
        n += matches(&rr->calls[i], name, match, n_match);
    pthread_mutex_unlock(&rr->mu);
    return n;
}

/* True when c's label keys are exactly keys (each once, any order). */
static bool same_keys(const call_t *c, const char *const *keys, size_t n_keys)
{
    if (c->n_labels_given != n_keys)
        return false;
    for (size_t k = 0; k < n_keys; k++) {
        size_t seen = 0;
        for (size_t i = 0; i < c->n_labels; i++)
            seen += strcmp(c->labels[i].key, keys[k]) == 0;
        if (seen != 1)
            return false;
    }
    return true;
}

size_t recording_reporter_misfits(recording_reporter_t *rr, const char *name, recording_kind_t kind,
                                  const char *const *keys, size_t n_keys)
{
    size_t n = 0;
    pthread_mutex_lock(&rr->mu);
    for (size_t i = 0; i < rr->n; i++) {
        const call_t *c = &rr->calls[i];
        if (strcmp(c->name, name) == 0 && (c->kind != kind || !same_keys(c, keys, n_keys)))
            n++;
    }
    pthread_mutex_unlock(&rr->mu);
    return n;
}

void recording_reporter_dump(recording_reporter_t *rr, FILE *f)
{
    static const char *const kinds[] = {"counter", "gauge", "observe"};
    pthread_mutex_lock(&rr->mu);
    for (size_t i = 0; i < rr->n; i++) {
        const call_t *c = &rr->calls[i];
        fprintf(f, "%s %s{", kinds[c->kind], c->name);
        for (size_t l = 0; l < c->n_labels; l++)
            fprintf(f, "%s%s=\"%s\"", l ? "," : "", c->labels[l].key, c->labels[l].value);
        fprintf(f, "} %g\n", c->value);
    }
    pthread_mutex_unlock(&rr->mu);
}
