/*
 * test_sampler.c - sampler_init, sampler_coin and sampler_pick (libs/model/sampler.c).
 *
 * Top-k and top-p picks are compared with a plain reference that sorts every
 * probability, which must give the very same token for the same coin.
 */
#include "model/sampler.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Asserts only on failure: ctest runs criterion with --full-stats, which reports every
 * passing assertion, and the loops here make hundreds of thousands of checks. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            cr_assert(cond, __VA_ARGS__);                                                          \
    } while (0)

#define N_BIG 32000

static sampler_prob_t scratch[N_BIG];

static int pick(float t, float p, int k, float *logits, int n, float coin)
{
    sampler_t s;
    sampler_init(&s, t, p, k, 1);
    return sampler_pick(&s, logits, n, coin, scratch);
}

static void random_logits(float *x, int n, uint64_t seed, float spread)
{
    sampler_t s;
    sampler_init(&s, 1, 1, 0, seed);
    for (int i = 0; i < n; i++)
        x[i] = spread * (2.0f * sampler_coin(&s) - 1.0f);
}

Test(sampler, greedy_is_argmax_lowest_id_on_ties)
{
    float x[] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
    float copy[5];
    memcpy(copy, x, sizeof(x));
    cr_assert_eq(pick(0.0f, 1.0f, 0, x, 5, 0.99f), 1);
    cr_assert_eq(memcmp(x, copy, sizeof(x)), 0, "greedy must leave logits alone");
    cr_assert_eq(pick(-1.0f, 0.9f, 40, x, 5, 0.3f), 1, "negative temperature is greedy");
    cr_assert_eq(pick(NAN, 0.9f, 40, x, 5, 0.3f), 1, "NaN temperature is greedy");
    float y[] = {-INFINITY, -INFINITY, -3.0f};
    cr_assert_eq(pick(0.0f, 1.0f, 0, y, 3, 0.5f), 2);
}

Test(sampler, nan_logits_are_never_picked)
{
    float x[6];
    for (int round = 0; round < 200; round++) {
        for (int mode = 0; mode < 4; mode++) {
            float v[6] = {NAN, 1.0f, NAN, 0.5f, -2.0f, NAN};
            memcpy(x, v, sizeof(v));
            float coin = (float)round / 200.0f;
            float t = mode == 0 ? 0.0f : 1.0f;
            float p = mode == 2 ? 0.8f : 1.0f;
            int k = mode == 3 ? 2 : 0;
            int id = pick(t, p, k, x, 6, coin);
            CHECK(id == 1 || id == 3 || id == 4, "mode %d coin %g picked NaN token %d", mode, coin,
                  id);
            if (mode == 1)
                for (int i = 0; i < 6; i++)
                    CHECK(!isnan(x[i]), "probability %d is NaN", i);
        }
    }
    /* top-k wider than the finite logits: the NaN tokens sit in the candidates with
     * probability 0, and not even a coin at the top of the range reaches them */
    for (int c = 0; c < 100; c++) {
        float v[5] = {NAN, 1.0f, NAN, 0.5f, NAN};
        float coin = c < 99 ? (float)c / 100.0f : 0.99999994f;
        int id = pick(1.0f, 1.0f, 4, v, 5, coin);
        CHECK(id == 1 || id == 3, "coin %g picked NaN token %d", coin, id);
    }
    float all_nan[3] = {NAN, NAN, NAN};
    int id = pick(1.0f, 0.9f, 0, all_nan, 3, 0.5f);
    cr_assert(id >= 0 && id < 3);
    float all_nan2[3] = {NAN, NAN, NAN};
    cr_assert_eq(pick(0.0f, 1.0f, 0, all_nan2, 3, 0.5f), 0);
}

Test(sampler, infinite_logit_takes_all_mass)
{
    for (int i = 0; i < 50; i++) {
        float x[4] = {1.0f, INFINITY, 3.0f, -INFINITY};
        CHECK(pick(0.7f, 1.0f, 0, x, 4, (float)i / 50.0f) == 1, "coin %d", i);
    }
}

Test(sampler, coin_is_uniform_and_seeded)
{
    sampler_t a, b, c, z;
    sampler_init(&a, 1, 1, 0, 1234);
    sampler_init(&b, 1, 1, 0, 1234);
    sampler_init(&c, 1, 1, 0, 1235);
    sampler_init(&z, 1, 1, 0, 0);
    cr_assert_neq(z.rng, 0, "seed 0 must not leave xorshift stuck at 0");
    double sum = 0;
    int same_c = 0, buckets[10] = {0};
    const int n = 100000;
    for (int i = 0; i < n; i++) {
        float x = sampler_coin(&a), y = sampler_coin(&b), w = sampler_coin(&c);
        float q = sampler_coin(&z);
        CHECK(x >= 0.0f && x < 1.0f, "draw %d is %g", i, x);
        CHECK(q >= 0.0f && q < 1.0f, "seed 0: draw %d is %g", i, q);
        CHECK(x == y, "same seed, different draw %d", i);
        same_c += x == w;
        sum += x;
        buckets[(int)(x * 10)]++;
    }
    cr_assert_lt(same_c, 100, "different seeds should give different streams");
    cr_assert_float_eq(sum / n, 0.5, 0.01);
    for (int i = 0; i < 10; i++)
        cr_assert(abs(buckets[i] - n / 10) < n / 100, "bucket %d has %d", i, buckets[i]);
}

Test(sampler, xorshift_matches_llama2c_first_draw)
{
    /* run.c from state 1: x ^= x >> 12; x ^= x << 25; x ^= x >> 27 gives 0x2000001;
     * (x * 0x2545F4914F6CDD1D) >> 32 = 0x47e4ce4b; >> 8 = 4711630; / 2^24 */
    sampler_t s;
    sampler_init(&s, 1, 1, 0, 1);
    cr_assert_eq(s.rng, 1, "a non-zero seed is the state, as in run.c");
    cr_assert_eq(sampler_coin(&s), 4711630.0f / 16777216.0f);
    cr_assert_eq(s.rng, 0x2000001ull);
}

Test(sampler, seeded_picks_are_reproducible)
{
    float base[100], x[100];
    random_logits(base, 100, 77, 4.0f);
    int first[200];
    for (int pass = 0; pass < 2; pass++) {
        sampler_t s;
        sampler_init(&s, 0.8f, 0.9f, 20, 4242);
        for (int i = 0; i < 200; i++) {
            memcpy(x, base, sizeof(x));
            int id = sampler_pick(&s, x, 100, sampler_coin(&s), scratch);
            if (pass == 0)
                first[i] = id;
            else
                CHECK(id == first[i], "draw %d differs between runs", i);
        }
    }
}

Test(sampler, top_k_1_is_greedy)
{
    float base[500], x[500];
    for (int r = 0; r < 50; r++) {
        random_logits(base, 500, (uint64_t)r + 1, 3.0f);
        memcpy(x, base, sizeof(x));
        int g = pick(0.0f, 1.0f, 0, x, 500, 0.0f);
        for (int c = 0; c < 5; c++) {
            memcpy(x, base, sizeof(x));
            CHECK(pick(1.5f, 0.95f, 1, x, 500, (float)c / 5.0f) == g, "round %d coin %d", r, c);
        }
    }
}

Test(sampler, small_top_p_is_argmax)
{
    float base[N_BIG];
    static float x[N_BIG];
    random_logits(base, N_BIG, 9, 2.0f);
    memcpy(x, base, sizeof(base));
    int g = pick(0.0f, 1.0f, 0, x, N_BIG, 0.0f);
    for (int c = 0; c < 20; c++) {
        memcpy(x, base, sizeof(base));
        CHECK(pick(1.0f, 1e-6f, 0, x, N_BIG, (float)c / 20.0f) == g, "coin %d", c);
    }
    /* top_p below 1/n: nothing passes run.c's cutoff, and the answer is still argmax */
    float y[3] = {0.1f, 0.3f, 0.2f};
    cr_assert_eq(pick(1.0f, 0.01f, 0, y, 3, 0.9f), 1);
}

/* Draws many times from logits log(p) and checks the frequencies against want. */
static void check_distribution(float t, float p, int k, const float *probs, const float *want)
{
    sampler_t s;
    sampler_init(&s, t, p, k, 2024);
    int counts[3] = {0};
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        float x[3] = {logf(probs[0]), logf(probs[1]), logf(probs[2])};
        int id = sampler_pick(&s, x, 3, sampler_coin(&s), scratch);
        CHECK(id >= 0 && id < 3, "picked %d", id);
        counts[id]++;
    }
    for (int i = 0; i < 3; i++)
        cr_assert(fabs((double)counts[i] / n - want[i]) < 0.006,
                  "t=%g p=%g k=%d: token %d drawn %.4f, want %.4f", t, p, k, i,
                  (double)counts[i] / n, want[i]);
}

Test(sampler, distribution_matches_softmax)
{
    const float probs[3] = {0.5f, 0.3f, 0.2f};
    check_distribution(1.0f, 1.0f, 0, probs, probs);
    /* temperature 0.5 squares the probabilities: .25, .09, .04 over .38 */
    const float sq[3] = {0.25f / 0.38f, 0.09f / 0.38f, 0.04f / 0.38f};
    check_distribution(0.5f, 1.0f, 0, probs, sq);
    /* top-k 2 and top-p 0.7 both keep {0, 1}, renormalised */
    const float two[3] = {0.625f, 0.375f, 0.0f};
    check_distribution(1.0f, 1.0f, 2, probs, two);
    check_distribution(1.0f, 0.7f, 0, probs, two);
    check_distribution(1.0f, 0.7f, 2, probs, two);
    /* top-p 0.45: 0.5 alone exceeds it */
    const float one[3] = {1.0f, 0.0f, 0.0f};
    check_distribution(1.0f, 0.45f, 0, probs, one);
    /* top-k 2 then top-p 0.6 of their mass (0.48): 0.5 alone exceeds it */
    check_distribution(1.0f, 0.6f, 2, probs, one);
}

/* ---- reference: sort everything, then cut ------------------------------------------- */

static int cmp_desc(const void *a, const void *b)
{
    const sampler_prob_t *x = a, *y = b;
    if (x->prob != y->prob)
        return x->prob > y->prob ? -1 : 1;
    return x->id - y->id;
}

static sampler_prob_t ref_buf[N_BIG];

static int ref_pick(float t, float p, int k, const float *logits, int n, float coin)
{
    float max = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++)
        max = logits[i] > max ? logits[i] : max;
    for (int i = 0; i < n; i++) {
        ref_buf[i].prob = expf((logits[i] - max) / t);
        ref_buf[i].id = i;
        sum += ref_buf[i].prob;
    }
    for (int i = 0; i < n; i++)
        ref_buf[i].prob /= sum;
    qsort(ref_buf, (size_t)n, sizeof(ref_buf[0]), cmp_desc);
    int m = (k > 0 && k < n) ? k : n;
    float mass = 1.0f;
    if (k > 0 && k < n) {
        mass = 0;
        for (int i = 0; i < m; i++)
            mass += ref_buf[i].prob;
    }
    float cum = 0;
    int keep = m;
    if (p > 0 && p < 1) {
        for (int i = 0; i < m; i++) {
            cum += ref_buf[i].prob;
            if (cum > p * mass) {
                keep = i + 1;
                break;
            }
        }
        mass = cum;
    }
    float r = coin * mass, cdf = 0;
    for (int i = 0; i < keep; i++) {
        cdf += ref_buf[i].prob;
        if (r < cdf)
            return ref_buf[i].id;
    }
    return ref_buf[keep - 1].id;
}

Test(sampler, top_k_and_top_p_equal_full_sort_reference)
{
    static float base[N_BIG], x[N_BIG];
    const struct {
        float t, p;
        int k;
        float spread;
        int n;
    } cases[] = {
        {1.0f, 0.9f, 0, 8.0f, N_BIG},  {0.7f, 0.5f, 0, 12.0f, N_BIG},
        {1.0f, 0.99f, 0, 1.0f, 4000},  {1.0f, 1.0f, 40, 8.0f, N_BIG},
        {1.2f, 0.8f, 40, 6.0f, N_BIG}, {0.9f, 0.95f, 300, 3.0f, 5000},
        {1.0f, 0.3f, 0, 0.0f, 1000},   {1.0f, 1.0f, 7, 0.0f, 100},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        random_logits(base, cases[c].n, c + 100, cases[c].spread);
        for (int d = 0; d < 40; d++) {
            float coin = (float)d / 40.0f + 0.0123f;
            memcpy(x, base, (size_t)cases[c].n * sizeof(float));
            int got = pick(cases[c].t, cases[c].p, cases[c].k, x, cases[c].n, coin);
            int want = ref_pick(cases[c].t, cases[c].p, cases[c].k, base, cases[c].n, coin);
            CHECK(got == want, "case %zu coin %g: %d, reference %d", c, coin, got, want);
        }
    }
}

Test(sampler, degenerate_sizes)
{
    float one[1] = {3.0f};
    cr_assert_eq(pick(1.0f, 0.9f, 0, one, 1, 0.7f), 0);
    cr_assert_eq(pick(1.0f, 0.9f, 5, one, 1, 0.7f), 0);
    float two[2] = {0.0f, 0.0f};
    int id = pick(1.0f, 1.0f, 5, two, 2, 0.99f); /* top_k >= n: off */
    cr_assert_eq(id, 1);
    float three[3] = {1.0f, 2.0f, 3.0f};
    cr_assert_eq(pick(1.0f, 1.0f, 0, three, 3, 0.9999999f), 2);
}
