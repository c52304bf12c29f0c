/*
 * runs.h - timed runs of a forward_t: one stream decoding, a prompt prefilled, and
 * many streams decoding together.  Every run opens its own sequences, closes them
 * before returning, and picks greedily; vocab is the model's vocabulary size.
 */
#ifndef MODELBENCH_RUNS_H
#define MODELBENCH_RUNS_H

#include "model/forward.h"

/* Prefills prompt_tokens (one chunk) into one sequence, then times decode_tokens
 * single-item steps.  Returns LS_OK and tokens per second in *tok_s, or the error of
 * the step or open that failed. */
int runs_decode(forward_t *f, int vocab, int prompt_tokens, int decode_tokens, double *tok_s);

/* Times a prompt of prompt_tokens going through in one step (one chunk) on a fresh
 * sequence.  Returns LS_OK and prompt tokens per second in *tok_s, or an error. */
int runs_prefill(forward_t *f, int vocab, int prompt_tokens, double *tok_s);

/* Opens batch sequences, prefills prompt_tokens into each (steps of at most
 * max_step_tokens), then times steps decode steps of all batch items at once.
 * Returns LS_OK with generated tokens per second over all sequences in *tok_s and the
 * mean step time in *step_ms, or an error. */
int runs_batch(forward_t *f, int vocab, int batch, int prompt_tokens, int steps, double *tok_s,
               double *step_ms);

#endif
