/*
 * test_timer.c - libs/rpc/timer.c: order, cancel, and release at destroy.
 */
#include "base/clock.h"
#include "rpc/timer.h"

#include <criterion/criterion.h>
#include <pthread.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int order[16];
static int n_fired, n_dropped;

static void fn(void *ud, bool fired)
{
    pthread_mutex_lock(&mu);
    if (fired)
        order[n_fired++] = (int)(intptr_t)ud;
    else
        n_dropped++;
    pthread_mutex_unlock(&mu);
}

Test(timer, fires_in_time_order_and_cancels)
{
    rpc_timer_t *t = rpc_timer_create();
    cr_assert_not_null(t);
    int64_t now = ls_now_us();
    rpc_timer_add(t, now + 60000, fn, (void *)3);
    rpc_timer_add(t, now + 20000, fn, (void *)1);
    uint64_t gone = rpc_timer_add(t, now + 30000, fn, (void *)9);
    rpc_timer_add(t, now + 40000, fn, (void *)2);
    rpc_timer_add(t, now - 1000, fn, (void *)0); /* past: at once */
    cr_assert(rpc_timer_cancel(t, gone));
    cr_assert_not(rpc_timer_cancel(t, gone));
    cr_assert_not(rpc_timer_cancel(t, 0));
    rpc_timer_add(t, now + 10000000, fn, (void *)7); /* never fires: dropped at destroy */
    ls_sleep_us(150000);
    pthread_mutex_lock(&mu);
    cr_assert_eq(n_fired, 4);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(order[i], i);
    pthread_mutex_unlock(&mu);
    rpc_timer_destroy(t);
    cr_assert_eq(n_dropped, 1);
    cr_assert_eq(n_fired, 4);
    rpc_timer_destroy(NULL);
}
