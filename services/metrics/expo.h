/*
 * expo.h - the Prometheus text exposition format 0.0.4 of a store snapshot: # HELP and
 * # TYPE once per family, histograms as cumulative _bucket{le} lines up to le="+Inf"
 * with _sum and _count, label values escaped, families sorted by name and series by
 * labels, and the collector's own metrics (llmserve_collector_*, llmserve_instance_up)
 * first.  Thread-safe (no state).
 */
#ifndef METRICS_EXPO_H
#define METRICS_EXPO_H

#include "store.h"

#include <stddef.h>

/* The Content-Type of the format. */
#define EXPO_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Renders snap.  Returns a new NUL-terminated buffer of *len bytes (the caller frees
 * it), or NULL when memory is exhausted. */
char *expo_render(const store_snap_t *snap, size_t *len);

/* The HELP text of a metric: from the table of libs/svc/metric_names.h for the names
 * it lists, a generic line for others (static). */
const char *expo_help(const char *name);

/* Writes v as the text format writes a float: the shortest decimal that reads back as
 * v, "+Inf", "-Inf" or "NaN".  buf holds at least 32 bytes; returns buf. */
char *expo_format_double(char *buf, double v);

#endif
