#include "health_watch.h"

#include "base/clock.h"
#include "base/err.h"
#include "grpc/health/v1/health.pb-c.h"

#include <criterion/criterion.h>
#include <string.h>

static void watch_msg(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    (void)s;
    test_health_watch_t *w = ud;
    pthread_mutex_lock(&w->mu);
    if (w->n < TEST_HEALTH_WATCH_MAX)
        w->statuses[w->n] = ((const Grpc__Health__V1__HealthCheckResponse *)msg)->status;
    w->n++;
    pthread_mutex_unlock(&w->mu);
}

static void watch_status(rpc_stream_t *s, void *ud, const rpc_status_t *st, const rpc_md_t *t)
{
    (void)s;
    (void)t;
    test_health_watch_t *w = ud;
    pthread_mutex_lock(&w->mu);
    w->st = *st;
    w->ended = true;
    pthread_mutex_unlock(&w->mu);
}

void test_health_watch_open(test_health_watch_t *w, rpc_channel_t *ch, const char *service)
{
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    rpc_stream_handler_t h = {watch_msg, watch_status};
    w->stream =
        rpc_stream_open(ch, "/grpc.health.v1.Health/Watch",
                        &grpc__health__v1__health_check_response__descriptor, &h, w, NULL, 0);
    cr_assert_not_null(w->stream, "cannot open a health Watch");
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    cr_assert_eq(rpc_stream_send(w->stream, &req.base), LS_OK);
    cr_assert_eq(rpc_stream_close_send(w->stream), LS_OK);
}

bool test_health_watch_wait(test_health_watch_t *w, int n, bool want_end, int timeout_ms)
{
    int64_t end = ls_now_us() + (int64_t)timeout_ms * 1000;
    pthread_mutex_lock(&w->mu);
    while ((w->n < n || (want_end && !w->ended)) && ls_now_us() < end) {
        pthread_mutex_unlock(&w->mu);
        ls_sleep_us(2000);
        pthread_mutex_lock(&w->mu);
    }
    bool ok = w->n >= n && (!want_end || w->ended);
    pthread_mutex_unlock(&w->mu);
    return ok;
}

void test_health_watch_close(test_health_watch_t *w)
{
    if (!w->stream)
        return;
    rpc_stream_cancel(w->stream);
    cr_assert(test_health_watch_wait(w, 0, true, 10000), "a cancelled health Watch did not end");
    rpc_stream_release(w->stream);
    w->stream = NULL;
    pthread_mutex_destroy(&w->mu);
}
