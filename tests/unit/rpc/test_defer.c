/*
 * test_defer.c - libs/rpc/defer.c: order, adds that never wait for a blocking job, and a
 * destroy that runs everything queued.
 */
#include "base/clock.h"
#include "rpc/defer.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int ran[64];
static int n_ran;
static rpc_defer_t *g_defer;

static void record(void *ud)
{
    pthread_mutex_lock(&mu);
    ran[n_ran++] = (int)(intptr_t)ud;
    pthread_mutex_unlock(&mu);
}

static void slow(void *ud)
{
    ls_sleep_us(200000); /* a job may block: that is what the thread is for */
    record(ud);
}

/* A job that queues another, as a teardown that frees a second object would. */
static void chain(void *ud)
{
    record(ud);
    rpc_defer_add(g_defer, record, (void *)((intptr_t)ud + 1));
}

Test(defer, runs_in_order_without_blocking_who_adds)
{
    rpc_defer_t *d = rpc_defer_create();
    cr_assert_not_null(d);
    cr_assert_eq(rpc_defer_pending(d), 0);
    rpc_defer_add(d, slow, (void *)1);
    int64_t t0 = ls_now_us();
    for (int i = 2; i <= 10; i++)
        rpc_defer_add(d, record, (void *)(intptr_t)i);
    cr_assert_lt(ls_now_us() - t0, 100000, "add waited for the slow job");
    cr_assert_geq(rpc_defer_pending(d), 9);
    for (int i = 0; i < 500 && rpc_defer_pending(d) > 0; i++)
        ls_sleep_us(10000);
    cr_assert_eq(rpc_defer_pending(d), 0);
    pthread_mutex_lock(&mu);
    cr_assert_eq(n_ran, 10);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(ran[i], i + 1);
    pthread_mutex_unlock(&mu);
    rpc_defer_destroy(d);
    rpc_defer_destroy(NULL);
}

Test(defer, destroy_runs_everything_queued_and_what_jobs_add)
{
    g_defer = rpc_defer_create();
    cr_assert_not_null(g_defer);
    rpc_defer_add(g_defer, slow, (void *)1);
    rpc_defer_add(g_defer, chain, (void *)2);
    rpc_defer_destroy(g_defer); /* at once: the slow job is still running */
    cr_assert_eq(n_ran, 3);
    cr_assert_eq(ran[0], 1);
    cr_assert_eq(ran[1], 2);
    cr_assert_eq(ran[2], 3, "the job added by a job ran too");
}
