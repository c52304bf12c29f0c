/*
 * report.h - the figures of both implementations, their ratio and the verdict against
 * the target "the wrapper costs under 10 %", as a table or as JSON.  Not thread-safe.
 */
#ifndef BENCH_REPORT_H
#define BENCH_REPORT_H

#include "target.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define BENCH_MAX_REPEATS 25
#define BENCH_BASELINE 0
#define BENCH_LIBRARY 1
#define BENCH_TARGET_COST 0.10 /* the library may cost at most 10 % against the baseline */

typedef enum {
    BENCH_LATENCY,    /* lower is better: library/baseline must stay <= 1.10 */
    BENCH_THROUGHPUT, /* higher is better: library/baseline must stay >= 0.90 */
} bench_kind_t;

typedef struct {
    const char *key;   /* JSON name with its unit, e.g. "unary_p50_us" */
    const char *label; /* table name with its unit, e.g. "unary p50 (us)" */
    bench_kind_t kind;
    size_t n;                          /* runs recorded for each implementation */
    double runs[2][BENCH_MAX_REPEATS]; /* [BENCH_BASELINE or BENCH_LIBRARY][run] */
} bench_metric_t;

typedef struct {
    const char *where;       /* where the servers run, one line */
    const char *describe[2]; /* each implementation, one line */
    const bench_params_t *p;
    size_t repeats;
    const bench_metric_t *metrics;
    size_t n_metrics;
} bench_report_t;

/* The median of m's runs for implementation impl (BENCH_BASELINE or BENCH_LIBRARY). */
double bench_metric_median(const bench_metric_t *m, int impl);

/* Median library / median baseline (0 when the baseline median is 0). */
double bench_metric_ratio(const bench_metric_t *m);

/* True when the ratio meets the target for m's kind. */
bool bench_metric_pass(const bench_metric_t *m);

/* Writes the human-readable table to f. */
void bench_report_table(FILE *f, const bench_report_t *r);

/* Writes one JSON object (and a newline) to f. */
void bench_report_json(FILE *f, const bench_report_t *r);

#endif
