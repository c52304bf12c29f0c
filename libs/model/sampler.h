/*
 * sampler.h - picks the next token from logits: greedy, temperature, top-k, top-p.
 *
 * Each request has its own sampler_t and random stream (xorshift64*), so a seed
 * reproduces the same tokens whatever else shares the batch.  The random draw
 * (sampler_coin) is separate from the pick (sampler_pick) so a device backend can
 * pick on the GPU with the same coin the CPU would use and give the same token.
 */
#ifndef MODEL_SAMPLER_H
#define MODEL_SAMPLER_H

#include <stdint.h>

typedef struct {
    float temperature; /* 0 = greedy (argmax); otherwise logits are divided by it */
    float top_p;       /* nucleus mass in (0, 1]; 1 = off */
    int top_k;         /* keep the k most likely; 0 = off */
    uint64_t rng;      /* xorshift64* state, never 0 */
} sampler_t;

/* A probability with its token id: scratch for top-k/top-p. */
typedef struct {
    float prob;
    int id;
} sampler_prob_t;

/* Sets the parameters and seeds the random stream (seed 0 is mapped to a fixed
 * non-zero state).  Does not validate ranges: the service does, at the edge. */
void sampler_init(sampler_t *s, float temperature, float top_p, int top_k, uint64_t seed);

/* Advances the random stream and returns a uniform draw in [0, 1). */
float sampler_coin(sampler_t *s);

/* Picks a token from logits (n entries; overwritten with probabilities unless greedy)
 * using coin from sampler_coin.  scratch holds n entries.  Never fails; NaN logits
 * are treated as -inf.  Exactly:
 *  - temperature <= 0 (or NaN) or top_k == 1: the highest logit, lowest id on ties;
 *  - else p = softmax(logits / temperature), and candidates ordered by p descending,
 *    then id ascending:
 *    - neither top-k (0 < top_k < n) nor top-p (0 < top_p < 1): the first id, in id
 *      order, whose cumulative p exceeds coin (run.c's sample_mult);
 *    - top-k: the k best candidates, of mass M; with top-p too, only the shortest prefix
 *      of them whose cumulative p exceeds top_p * M; then the first candidate whose
 *      cumulative p exceeds coin * (mass kept);
 *    - top-p alone: the shortest prefix whose cumulative p exceeds top_p (run.c's
 *      sample_topp), then the first whose cumulative p exceeds coin * (its mass);
 *    - rounding that leaves the draw past the end picks the last candidate (the last id,
 *      for sample_mult) with p > 0. */
int sampler_pick(const sampler_t *s, float *logits, int n, float coin, sampler_prob_t *scratch);

#endif
