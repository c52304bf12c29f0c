/*
 * store_int.h - the store's insides, shared by store.c (instances, reports) and
 * store_read.c (queries, snapshots); not for other files.  Lock rules: store.c's.
 */
#ifndef METRICS_STORE_INT_H
#define METRICS_STORE_INT_H

#include "keymap.h"
#include "store.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define H STORE_HISTORY_S

typedef struct family family_t;
typedef struct series series_t;

struct family {
    char *name;
    store_kind_t kind;
    const buckets_t *buckets; /* histograms */
    series_t *head;           /* its series, doubly linked */
    size_t n_series;
};

struct series {
    series_t *fprev, *fnext; /* in the family */
    series_t *iprev, *inext; /* in the instance */
    family_t *fam;
    store_inst_t *inst;
    char *key; /* name NUL (label NUL value NUL)*, labels sorted by name */
    size_t key_len;
    char *text;            /* escaped label pairs for the exposition */
    store_label_t *labels; /* sorted by name; strings point into key */
    size_t n_labels;
    double value;      /* counter total, gauge value, histogram sum */
    uint64_t count;    /* histograms */
    uint64_t *counts;  /* histograms: per bucket, n + 1 */
    int64_t ring_last; /* last second written into ring */
    void *ring;        /* NULL until the first data: double[H] for counters,
                          uint32_t[H][n + 1] for histograms; slot t % H holds second t */
};

struct store_inst {
    char *service, *instance;
    char *key; /* service NUL instance */
    size_t key_len;
    int streams;            /* attached streams */
    int64_t last_report_us; /* the last report applied (or the attach) */
    int64_t down_since_us;  /* 0 until known down */
    bool forgotten;         /* its series are gone; kept only while streams hold it */
    series_t *series;       /* its series, doubly linked */
};

struct store {
    pthread_mutex_t mu;
    store_config_t cfg;
    int64_t start_us;
    keymap_t *families; /* name -> family_t */
    keymap_t *series;   /* key -> series_t */
    keymap_t *insts;    /* key -> store_inst_t */
    uint64_t reports, samples;
    uint64_t rejected[REJECT_N_REASONS];
};

/* Whether in is up at now_us (lock held). */
static inline bool store__up(const store_t *s, const store_inst_t *in, int64_t now_us)
{
    return !in->forgotten && in->streams > 0 && now_us - in->last_report_us < s->cfg.stale_us;
}

/* Whether the ring of se holds second t (lock held). */
static inline bool store__ring_has(const series_t *se, int64_t t)
{
    return se->ring && t >= 0 && t <= se->ring_last && t > se->ring_last - H;
}

#endif
