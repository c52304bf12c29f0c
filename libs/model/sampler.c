/*
 * sampler.c - token choice from logits, as llama2.c run.c samples, plus top-k.
 *
 * The nucleus is never found by sorting the whole vocabulary.  As in run.c, tokens
 * below (1 - top_p) / (n - 1) are dropped first (they cannot be in the nucleus: even
 * all n - 1 of them together hold less than 1 - top_p), and the survivors go into a
 * binary max-heap that is popped in order only until the nucleus is complete, so the
 * cost is O(m + k log m) for m survivors and a nucleus of k tokens.  Top-k pops at
 * most k entries from a heap over all n.
 */
#include "model/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>

#define SAMPLER_SEED_ZERO 0x9E3779B97F4A7C15ull /* the state seed 0 stands for */

void sampler_init(sampler_t *s, float temperature, float top_p, int top_k, uint64_t seed)
{
    s->temperature = temperature;
    s->top_p = top_p;
    s->top_k = top_k;
    s->rng = seed ? seed : SAMPLER_SEED_ZERO;
}

float sampler_coin(sampler_t *s)
{
    /* xorshift64* (Vigna), taking the top 24 bits of the high word as run.c does */
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    uint32_t u = (uint32_t)((s->rng * 0x2545F4914F6CDD1Dull) >> 32);
    return (float)(u >> 8) / 16777216.0f;
}

/* Highest logit, lowest id on ties; NaN counts as -inf.  All -inf/NaN gives 0. */
static int argmax(const float *x, int n)
{
    int best = 0;
    float best_v = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (x[i] > best_v) { /* false for NaN */
            best_v = x[i];
            best = i;
        }
    }
    return best;
}

/* Overwrites logits with softmax(logits / temperature); NaN logits get probability 0.
 * Returns false when no logit is above -inf (nothing to sample). */
static bool softmax(float *x, int n, float temperature)
{
    float max = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (isnan(x[i]))
            x[i] = -INFINITY;
        else if (x[i] > max)
            max = x[i];
    }
    if (max == -INFINITY)
        return false;
    if (max == INFINITY) {
        /* the +inf logits share all the mass */
        float count = 0.0f;
        for (int i = 0; i < n; i++)
            count += x[i] == INFINITY ? 1.0f : 0.0f;
        for (int i = 0; i < n; i++)
            x[i] = x[i] == INFINITY ? 1.0f / count : 0.0f;
        return true;
    }
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf((x[i] - max) / temperature);
        sum += x[i];
    }
    for (int i = 0; i < n; i++)
        x[i] /= sum;
    return true;
}

/* Strict order of candidates: more probable first, then lower id. */
static bool prob_before(const sampler_prob_t *a, const sampler_prob_t *b)
{
    return a->prob > b->prob || (a->prob == b->prob && a->id < b->id);
}

static void sift_down(sampler_prob_t *h, int n, int i)
{
    sampler_prob_t v = h[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && prob_before(&h[c + 1], &h[c]))
            c++;
        if (!prob_before(&h[c], &v))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
}

/* Heap-sorts in place only as far as needed: after the call h[m - 1], h[m - 2], ...,
 * h[m - popped] hold the popped candidates, most probable first.  Pops until `limit`
 * are out or, when mass_limit >= 0, their mass exceeds mass_limit.  Returns the number
 * popped and their mass in *mass. */
static int pop_best(sampler_prob_t *h, int m, int limit, float mass_limit, float *mass)
{
    for (int i = m / 2 - 1; i >= 0; i--)
        sift_down(h, m, i);
    int popped = 0;
    float sum = 0.0f;
    int left = m;
    while (popped < limit && left > 0) {
        sampler_prob_t top = h[0];
        h[0] = h[left - 1];
        h[left - 1] = top;
        left--;
        sift_down(h, left, 0);
        popped++;
        sum += top.prob;
        if (mass_limit >= 0.0f && sum > mass_limit)
            break;
    }
    *mass = sum;
    return popped;
}

/* Walks the candidates h[m - 1] down to h[m - k] (most probable first) and returns the
 * one where coin * mass falls; when rounding leaves the draw past the end, the last one
 * with any probability (top-k may hold tokens of probability 0, such as NaN logits). */
static int draw_sorted(const sampler_prob_t *h, int m, int k, float mass, float coin)
{
    float r = coin * mass;
    float cdf = 0.0f;
    for (int j = 0; j < k; j++) {
        cdf += h[m - 1 - j].prob;
        if (r < cdf)
            return h[m - 1 - j].id;
    }
    for (int j = k - 1; j > 0; j--)
        if (h[m - 1 - j].prob > 0.0f)
            return h[m - 1 - j].id;
    return h[m - 1].id;
}

int sampler_pick(const sampler_t *s, float *logits, int n, float coin, sampler_prob_t *scratch)
{
    if (n <= 1)
        return 0;
    /* !(t > 0) also sends NaN and negative temperatures to greedy */
    if (!(s->temperature > 0.0f) || s->top_k == 1)
        return argmax(logits, n);
    if (!softmax(logits, n, s->temperature))
        return 0;
    bool use_k = s->top_k > 0 && s->top_k < n;
    bool use_p = s->top_p > 0.0f && s->top_p < 1.0f;

    if (!use_k && !use_p) {
        /* run.c's sample_mult: the CDF in id order */
        float cdf = 0.0f;
        for (int i = 0; i < n; i++) {
            cdf += logits[i];
            if (coin < cdf)
                return i;
        }
        /* rounding: the last token with any mass */
        for (int i = n - 1; i > 0; i--)
            if (logits[i] > 0.0f)
                return i;
        return 0;
    }

    int m = 0;
    float mass;
    int k;
    if (use_k) {
        for (int i = 0; i < n; i++) {
            scratch[m].prob = logits[i];
            scratch[m].id = i;
            m++;
        }
        k = pop_best(scratch, m, s->top_k, -1.0f, &mass);
        if (use_p) {
            /* the nucleus of the renormalised top k: the shortest prefix holding more
             * than top_p of their mass */
            float limit = s->top_p * mass, cum = 0.0f;
            int keep = k;
            for (int j = 0; j < k; j++) {
                cum += scratch[m - 1 - j].prob;
                if (cum > limit) {
                    keep = j + 1;
                    break;
                }
            }
            k = keep;
            mass = cum;
        }
    } else {
        const float cutoff = (1.0f - s->top_p) / (float)(n - 1);
        for (int i = 0; i < n; i++) {
            if (logits[i] >= cutoff) {
                scratch[m].prob = logits[i];
                scratch[m].id = i;
                m++;
            }
        }
        /* Nothing survives only when top_p < 1/n; then the top token alone (p >= 1/n)
         * is the nucleus.  run.c reads index -1 here. */
        if (m == 0)
            return argmax(logits, n);
        k = pop_best(scratch, m, m, s->top_p, &mass);
    }
    return draw_sorted(scratch, m, k, mass, coin);
}
