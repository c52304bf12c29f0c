/*
 * recording_reporter.h - an in-process svc_reporter_t (libs/svc/reporter.h) that keeps
 * every call made to it (kind, name, labels, value), for tests that check what a
 * service reports: counter totals, a histogram's observations, a gauge's last value, and
 * that each name was reported with the kind and the label keys metric_names.h lists.
 *
 * A query names a metric and a match: label pairs a call must carry with those values
 * (n_match 0 matches every call of the name); other labels of the call do not matter.
 *
 * Memory grows with every call: for tests of bounded length, not soak tests.
 * Thread-safe: the reporter's operations and the queries may run on any thread at once.
 */
#ifndef TEST_RECORDING_REPORTER_H
#define TEST_RECORDING_REPORTER_H

#include "svc/reporter.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum {
    RECORDING_COUNTER, /* counter_add */
    RECORDING_GAUGE,   /* gauge_set */
    RECORDING_OBSERVE, /* observe */
} recording_kind_t;

typedef struct recording_reporter recording_reporter_t;

/* Creates an empty recorder (aborts when out of memory). */
recording_reporter_t *recording_reporter_create(void);

/* The reporter to hand to the code under test; borrowed until destroy. */
svc_reporter_t *recording_reporter_base(recording_reporter_t *rr);

/* Frees the recorder and all it kept; the same as svc_reporter_destroy on its base.
 * NULL is a no-op. */
void recording_reporter_destroy(recording_reporter_t *rr);

/* Sum of the counter adds of name that match. */
double recording_reporter_sum(recording_reporter_t *rr, const char *name, const svc_label_t *match,
                              size_t n_match);

/* Observations of name that match: returns how many there are and copies the first cap
 * of them, in call order, into out (out may be NULL when cap is 0). */
size_t recording_reporter_observations(recording_reporter_t *rr, const char *name,
                                       const svc_label_t *match, size_t n_match, double *out,
                                       size_t cap);

/* The value of the last matching set of gauge name: returns true with *value, or false
 * when the gauge was never set so. */
bool recording_reporter_gauge(recording_reporter_t *rr, const char *name, const svc_label_t *match,
                              size_t n_match, double *value);

/* Calls of name of any kind that match. */
size_t recording_reporter_calls(recording_reporter_t *rr, const char *name,
                                const svc_label_t *match, size_t n_match);

/* Calls of name that break its contract: a kind other than kind, or label keys other than
 * exactly keys[0..n_keys) (in any order).  0 when every call keeps it. */
size_t recording_reporter_misfits(recording_reporter_t *rr, const char *name, recording_kind_t kind,
                                  const char *const *keys, size_t n_keys);

/* Writes every call, one a line, to f (for a failing test's output). */
void recording_reporter_dump(recording_reporter_t *rr, FILE *f);

#endif
