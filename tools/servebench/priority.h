/*
 * priority.h - servebench's priority mode: the TTFT of interactive requests while batch
 * work saturates one instance, with priority classes and without, in the same run.
 *
 * A phase keeps batch_streams loops busy, each submitting a batch request (batch_tokens
 * tokens, EOS ignored) as soon as its last one ends; once the instance's batch is full
 * (max_batch of them started) a prober submits a short request (interactive_tokens
 * tokens) every interval_ms for duration_s, open loop, recording its TTFT.  Then the
 * prober stops, the loops stop submitting, and the phase waits for every request to end
 * (the load drains before the next phase).  Phases alternate for `rounds` rounds (which
 * one goes first alternates too): "priorities" (batch requests PRIORITY_BATCH, probes
 * PRIORITY_INTERACTIVE) and "no priorities" (all PRIORITY_UNSPECIFIED).
 */
#ifndef SERVEBENCH_PRIORITY_H
#define SERVEBENCH_PRIORITY_H

#include "instance.h"

#include <stdint.h>

typedef struct {
    sb_instance_t *target;
    const rpc_md_t *md; /* metadata of every stream; may be NULL */
    int batch_streams;  /* concurrent batch loops */
    int batch_tokens, interactive_tokens, prompt_tokens;
    int interval_ms, duration_s, rounds;
    uint64_t seed;
    uint32_t timeout_ms; /* each request's deadline at the instance */
} sb_priority_config_t;

/* Runs the phases and prints the report to stdout.  Returns the exit status: 0, 1 when
 * a request failed, the stream broke its contract or no probe got a token, 2 when the
 * target cannot take the run (the reason on stderr). */
int sb_priority_run(const sb_priority_config_t *cfg);

#endif
