/*
 * echo_sink.h - a client-side collector for Echo streams in tests: counts replies,
 * checks their order, records the final status, and lets the test wait for either.
 */
#ifndef TEST_ECHO_SINK_H
#define TEST_ECHO_SINK_H

#include "echo.pb-c.h"
#include "rpc/client.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int received;           /* replies so far */
    uint64_t expect_seq;    /* next seq expected when check_seq */
    bool check_seq;         /* replies must carry seq 0, 1, 2, ... */
    bool order_ok;          /* false once a reply came out of order */
    int64_t read_delay_us;  /* sleep in on_message: a slow reader */
    int cancel_after;       /* cancel the stream after this many replies; 0 = never */
    bool ended;
    rpc_status_t status;
    char trailer[64];       /* value of x-echo-trailer, if any */
    char last_metadata[256];
    rpc_stream_t *stream;
} echo_sink_t;

void echo_sink_init(echo_sink_t *k);
void echo_sink_destroy(echo_sink_t *k);

/* Handler for rpc_stream_open with ud = the sink. */
extern const rpc_stream_handler_t echo_sink_handler;

/* Opens an Echo/Stream on ch into k (k->stream).  Returns 0 or -1. */
int echo_sink_open(echo_sink_t *k, rpc_channel_t *ch, const rpc_call_opts_t *opts);

/* Sends one request; returns the rpc_stream_send result. */
int echo_sink_send(echo_sink_t *k, const Llmserve__Test__EchoRequest *req);

/* Waits until at least n replies or the end; returns the replies received. */
int echo_sink_wait_replies(echo_sink_t *k, int n, int timeout_ms);

/* Waits for the end of the stream; returns true if it ended within timeout_ms. */
bool echo_sink_wait_end(echo_sink_t *k, int timeout_ms);

#endif
