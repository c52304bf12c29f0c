/*
 * tally.h - the outcome of a set of requests: TTFT samples, cached-prompt-token sums,
 * errors by gRPC code with the first error's message, and quantiles of the samples.
 *
 * Not thread-safe: the owner's lock guards it (or one thread uses it).
 */
#ifndef SERVEBENCH_TALLY_H
#define SERVEBENCH_TALLY_H

#include "conn.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t *ttft_ns; /* one per request that got a first token */
    size_t n, cap;
    uint64_t ok;            /* requests that ended with InferenceDone */
    uint64_t cached_tokens; /* sum of InferenceStarted.cached_tokens of the ok ones */
    uint64_t usage_cached;  /* sum of Usage.cached_prompt_tokens of the ok ones */
    uint64_t tokens;        /* token events of every request */
    uint64_t errors;        /* requests that ended with an error */
    uint64_t by_code[17];   /* errors by gRPC code, 0 to 16 */
    char first_error[240];  /* "CODE: message" of the first error; "" when none */
} sb_tally_t;

/* Adds an ended request. */
void sb_tally_add(sb_tally_t *t, const sb_req_t *r);

/* Adds a request that got no terminal event from the instance (could not be sent, or
 * the client stopped waiting): counted under code with message. */
void sb_tally_add_error(sb_tally_t *t, int code, const char *message);

/* Appends src's samples and counts to dst. */
void sb_tally_merge(sb_tally_t *dst, const sb_tally_t *src);

/* The q-quantile (0 < q <= 1, nearest rank) of the TTFT samples in milliseconds; 0 when
 * there are none.  Sorts the samples. */
double sb_tally_ttft_ms(sb_tally_t *t, double q);

/* The mean TTFT in milliseconds; 0 when there are no samples. */
double sb_tally_ttft_mean_ms(const sb_tally_t *t);

/* Prints the errors by code ("none" when there are none) and the first one, on one line
 * after prefix. */
void sb_tally_print_errors(const sb_tally_t *t, const char *prefix);

/* Frees the samples and empties t. */
void sb_tally_free(sb_tally_t *t);

#endif
