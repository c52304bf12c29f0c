/*
 * rand_ckpt.h - a checkpoint built in memory with deterministic pseudo-random weights,
 * so forward-pass tests need no file and no checkpoint writer.
 */
#ifndef TESTS_MODEL_RAND_CKPT_H
#define TESTS_MODEL_RAND_CKPT_H

#include "model/checkpoint.h"

#include <stdint.h>

/* A ckpt_t of the given shape (head_dim and kv_dim are derived here) whose tensors
 * are uniform: matrices in +-1/sqrt(in), norm weights in [0.9, 1.1], embedding and
 * classifier (shared when shared_classifier) in +-2/sqrt(dim).  Same seed, same
 * weights.  Caller owns the result; free with rand_ckpt_free.  Aborts when out of
 * memory (test code). */
ckpt_t *rand_ckpt_make(int dim, int hidden_dim, int n_layers, int n_heads, int n_kv_heads,
                       int vocab_size, int seq_len, bool shared_classifier, uint64_t seed);

/* Frees; NULL is a no-op. */
void rand_ckpt_free(ckpt_t *ck);

#endif
