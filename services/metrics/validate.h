/*
 * validate.h - what the collector accepts from a reporting process, as metrics.proto
 * states it, and the reasons it counts what it refuses.  Thread-safe (no state).
 */
#ifndef METRICS_VALIDATE_H
#define METRICS_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

/* Longest metric name, label value and source field accepted, in bytes.  Label values
 * are bounded by metrics.proto; names and sources by the collector, so that one
 * sample cannot make a series key of unbounded size. */
#define VALIDATE_MAX_NAME 200
#define VALIDATE_MAX_VALUE 256
/* Labels a sample may carry, besides the service and instance the collector adds. */
#define VALIDATE_MAX_LABELS 16

/* Why a sample (or a report) was refused: the `reason` label of
 * llmserve_collector_rejected_total. */
typedef enum {
    REJECT_NAME,         /* "name": bad, too long or reserved metric name */
    REJECT_LABEL,        /* "label": bad, reserved, duplicate or too many labels */
    REJECT_VALUE,        /* "value": NaN, infinite, or negative counter increment */
    REJECT_KIND,         /* "kind": the name is already another kind of metric */
    REJECT_SERIES_LIMIT, /* "series_limit": a new series past --max-series */
    REJECT_SOURCE,       /* "source": no or bad MetricsSource, the report refused whole */
    REJECT_REPORT_SIZE,  /* "report_size": too many samples, the report refused whole */
    REJECT_N_REASONS,
} reject_reason_t;

/* The reason's label value (static). */
const char *validate_reason_name(reject_reason_t r);

/* A metric name: [a-zA-Z_:][a-zA-Z0-9_:]*, at most VALIDATE_MAX_NAME bytes. */
bool validate_metric_name(const char *name);

/* A label name: [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__", at most
 * VALIDATE_MAX_NAME bytes. */
bool validate_label_name(const char *name);

/* A label value or source field: well-formed UTF-8 of at most VALIDATE_MAX_VALUE
 * bytes. */
bool validate_label_value(const char *value);

/* Names the collector exports itself (llmserve_instance_up, llmserve_collector_*),
 * which no reporter may use. */
bool validate_reserved_name(const char *name);

#endif
