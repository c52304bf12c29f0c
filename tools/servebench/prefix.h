/*
 * prefix.h - servebench's prefix mode: TTFT of requests that share a long prefix on an
 * instance with the prefix cache and on one without, in the same run, and a check that
 * both answer every request with the same greedy tokens.
 *
 * Each request is the run's prefix (prefix_tokens ids, the same for every request) and a
 * suffix of its own (suffix_tokens ids), sent as prompt_tokens, greedy, max_tokens with
 * EOS ignored.  Rounds alternate which instance goes first; in each, each instance gets
 * one warm-up request (it fills the cache; reported apart as "first"), then `requests`
 * one at a time (TTFT without queueing), then `concurrency` at once (0: none).  Both
 * instances get exactly the same requests.
 */
#ifndef SERVEBENCH_PREFIX_H
#define SERVEBENCH_PREFIX_H

#include "instance.h"

#include <stdint.h>

typedef struct {
    sb_instance_t *cached;   /* started with the prefix cache */
    sb_instance_t *uncached; /* started with --no-prefix-cache, same model */
    const rpc_md_t *md;      /* metadata of every stream; may be NULL */
    int prefix_tokens, suffix_tokens, max_tokens;
    int rounds, requests, concurrency;
    uint64_t seed;
    uint32_t timeout_ms; /* each request's deadline at the instance */
} sb_prefix_config_t;

/* Runs the rounds and prints the report to stdout.  Returns the exit status: 0, 1 when
 * a request failed, the stream broke its contract or the outputs differ, 2 when the two
 * instances cannot be compared (the reason on stderr). */
int sb_prefix_run(const sb_prefix_config_t *cfg);

#endif
