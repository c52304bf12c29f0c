/*
 * health_watch.h - a grpc.health.v1.Health/Watch client for tests: records the statuses
 * a server streams for one service and how the stream ended.
 *
 * Functions that assert fail the calling test; call them from the test's own thread.
 */
#ifndef TEST_HEALTH_WATCH_H
#define TEST_HEALTH_WATCH_H

#include "rpc/client.h"

#include <pthread.h>
#include <stdbool.h>

#define TEST_HEALTH_WATCH_MAX 8

/* Fields under mu; read them after test_health_watch_wait, or under mu. */
typedef struct {
    pthread_mutex_t mu;
    int statuses[TEST_HEALTH_WATCH_MAX]; /* ServingStatus values, the first ones in order */
    int n;                               /* statuses received (counts past the array) */
    bool ended;                          /* the stream is over */
    rpc_status_t st;                     /* how, once ended */
    rpc_stream_t *stream;
} test_health_watch_t;

/* Opens Watch of service ("" = the whole server) on ch into w, which is borrowed until
 * test_health_watch_close returns.  Asserts that the stream opened. */
void test_health_watch_open(test_health_watch_t *w, rpc_channel_t *ch, const char *service);

/* Waits up to timeout_ms for n statuses and, with want_end, the stream's end; returns
 * whether both came. */
bool test_health_watch_wait(test_health_watch_t *w, int n, bool want_end, int timeout_ms);

/* Cancels the watch if still open, waits for its end and lets it go. */
void test_health_watch_close(test_health_watch_t *w);

#endif
