/*
 * membw.c - read bandwidth: each thread sums its share of one large buffer.
 *
 * The sum uses eight independent accumulators per thread so that the loop is limited
 * by loads, not by the latency of a chain of additions, and the result is kept so the
 * compiler cannot drop the reads.  The best of the repeats is reported: noise from
 * other processes only ever lowers a figure.
 */
#define _GNU_SOURCE
#include "membw.h"

#include "base/clock.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const float *buf;
    size_t n; /* floats, a multiple of 8 */
    float sum;
} membw_part_t;

static void *read_part(void *arg)
{
    membw_part_t *p = arg;
    float acc[8] = {0};
    for (size_t i = 0; i < p->n; i += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += p->buf[i + l];
    float s = 0.0f;
    for (int l = 0; l < 8; l++)
        s += acc[l];
    p->sum = s;
    return NULL;
}

double membw_read_bytes_per_s(size_t bytes, int threads, int repeats)
{
    if (threads < 1 || threads > 256 || repeats < 1)
        return -1.0;
    size_t per = bytes / sizeof(float) / (size_t)threads & ~(size_t)7;
    size_t n = per * (size_t)threads;
    float *buf = aligned_alloc(64, n * sizeof(float));
    membw_part_t *parts = calloc((size_t)threads, sizeof(*parts));
    pthread_t *tids = calloc((size_t)threads, sizeof(*tids));
    double best = -1.0;
    if (!buf || !parts || !tids)
        goto out_free;
    for (size_t i = 0; i < n; i++)
        buf[i] = (float)(i & 1023);
    for (int r = 0; r < repeats; r++) {
        int64_t t0 = ls_now_us();
        int started = 0;
        for (int t = 0; t < threads; t++) {
            parts[t].buf = buf + (size_t)t * per;
            parts[t].n = per;
            if (pthread_create(&tids[t], NULL, read_part, &parts[t]) != 0)
                break;
            started++;
        }
        for (int t = 0; t < started; t++)
            pthread_join(tids[t], NULL);
        if (started < threads) {
            best = -1.0;
            goto out_free;
        }
        double s = (double)(ls_now_us() - t0) / 1e6;
        double bw = (double)(n * sizeof(float)) / s;
        if (bw > best)
            best = bw;
    }
    /* Keeps the sums observable. */
    if (parts[0].sum < -1.0f)
        best = -1.0;
out_free:
    free(tids);
    free(parts);
    free(buf);
    return best;
}
