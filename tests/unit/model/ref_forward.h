/*
 * ref_forward.h - a plain forward pass for one sequence, to check the fast ones against.
 *
 * Straight loops in the order of llama2.c's run.c (RMSNorm, RoPE on pairs (2i, 2i+1),
 * grouped-query attention over a contiguous KV cache, SwiGLU, classifier), with no
 * batching, blocking, paging or threads: slow, and easy to read against the paper.
 *
 * An int8 (Q8_0, format_version 2) checkpoint runs as llama2.c's runq.c runs it: the
 * embedding row is dequantized, and before every matrix product the activation vector
 * is quantized to int8 in groups of group_size (scale max|x| / 127), each group's
 * int8 dot product is summed in int32 and multiplied by both scales.  Everything else
 * (norms, RoPE, attention, KV cache, SwiGLU) stays fp32, as there.
 */
#ifndef TESTS_MODEL_REF_FORWARD_H
#define TESTS_MODEL_REF_FORWARD_H

#include "model/checkpoint.h"

typedef struct ref_forward ref_forward_t;

/* Builds the state for one sequence of up to seq_len positions over ck (borrowed).
 * Aborts when out of memory (test code). */
ref_forward_t *ref_forward_create(const ckpt_t *ck);

/* Frees; NULL is a no-op. */
void ref_forward_destroy(ref_forward_t *r);

/* Runs token at position pos (positions 0..pos-1 must have been run before) and
 * returns the logits (vocab_size floats, borrowed from r until the next call). */
const float *ref_forward_token(ref_forward_t *r, int token, int pos);

#endif
