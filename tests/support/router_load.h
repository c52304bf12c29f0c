/*
 * router_load.h - steady load on a router for churn tests: a few Router.Generate streams
 * that each keep a window of requests in flight (a terminal event makes room for the
 * next submit) until told to stop, counting what every request got.
 *
 * router_load_start and router_load_finish assert (cr_assert, cr_expect): call them from
 * the test's thread.  router_load_starts_on is thread-safe.
 */
#ifndef TEST_ROUTER_LOAD_H
#define TEST_ROUTER_LOAD_H

#include "llmserve/v1/router.pb-c.h"
#include "rpc/client.h"

#include <stdint.h>

#define ROUTER_LOAD_MAX_STREAMS 8

typedef struct router_load router_load_t;

typedef struct {
    int streams;                      /* 1..ROUTER_LOAD_MAX_STREAMS */
    int window;                       /* requests in flight per stream */
    int max_tokens;                   /* of each request */
    const char *prompt;               /* of each request (borrowed until finish) */
    Llmserve__V1__CachePolicy policy; /* of each request; temperature is 0 */
    /* Started events naming this instance ("host:port") are counted; NULL: none.
     * Borrowed until finish. */
    const char *watched_instance;
} router_load_opts_t;

/* Opens the streams on ch (waiting for ready) and submits each one's first window. */
router_load_t *router_load_start(rpc_channel_t *ch, const router_load_opts_t *o);

/* Started events so far that named o->watched_instance. */
uint64_t router_load_starts_on(router_load_t *l);

/* Stops submitting, waits up to 60 s for every request's terminal event and each
 * stream's end after a half-close, and expects (cr_expect) that every request ended
 * exactly once and without an error, that no event came after a terminal one or for an
 * unknown request, that every submit was sent, and that each stream ended with OK.
 * Frees l; returns the requests submitted. */
uint64_t router_load_finish(router_load_t *l);

#endif
