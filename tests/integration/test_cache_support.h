/*
 * test_cache_support.h - what the cache integration tests share: the real
 * llmserve-cache process and a Cache.Session client that matches answers to requests by
 * id.  memcached processes of their own come from support/memcached.h.
 */
#ifndef TEST_CACHE_SUPPORT_H
#define TEST_CACHE_SUPPORT_H

#include "llmserve/v1/cache.pb-c.h"
#include "rpc/client.h"
#include "support/memcached.h"
#include "support/proc.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- the service --------------------------------------------------------------- */

/* Starts llmserve-cache against the memcached config string (NULL-terminated extra
 * flags after it) and fills p.  Asserts on failure. */
void tc_cache_start(test_proc_t *p, const char *memcached_config, const char *const *extra);

/* Stops it with SIGTERM and returns its exit status. */
int tc_cache_stop(test_proc_t *p);

/* ---- a session ------------------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rpc_stream_t *stream;
    Llmserve__V1__CacheResponse **got; /* answers not yet taken */
    size_t n_got, cap_got;
    uint64_t received;
    bool ended;
    rpc_status_t status;
    uint64_t next_id;
} tc_session_t;

/* Opens a Session on ch.  Returns 0 or -1. */
int tc_session_open(tc_session_t *s, rpc_channel_t *ch);

/* Half-closes, waits for the end, frees what is left.  Returns the final status code. */
int tc_session_close(tc_session_t *s);

/* A started llmserve-cache with a client, a channel to it and one open session: what
 * most cache tests hold for their whole run. */
typedef struct {
    test_proc_t svc;
    rpc_client_t *client;
    rpc_channel_t *ch;
    tc_session_t s;
} tc_conn_t;

/* tc_cache_start, then the client, the channel and the session.  Asserts on failure. */
void tc_connect(tc_conn_t *c, const char *memcached_config, const char *const *extra);

/* Closes the session (expecting OK), the channel and the client, and stops the service
 * (expecting exit status 0: a leak or crash at shutdown under the sanitizers shows here). */
void tc_disconnect(tc_conn_t *c);

/* Sends req with a fresh id (written into req->id); returns the id. */
uint64_t tc_send(tc_session_t *s, Llmserve__V1__CacheRequest *req);

/* Waits up to timeout_ms for the answer to id; caller frees it with
 * llmserve__v1__cache_response__free_unpacked.  NULL on timeout or stream end. */
Llmserve__V1__CacheResponse *tc_wait(tc_session_t *s, uint64_t id, int timeout_ms);

/* tc_send then tc_wait (5 s). */
Llmserve__V1__CacheResponse *tc_call(tc_session_t *s, Llmserve__V1__CacheRequest *req);

/* ---- request builders (strings borrowed) ------------------------------------------- */

typedef struct {
    Llmserve__V1__CacheRequest req;
    Llmserve__V1__CacheKey key;
    Llmserve__V1__SamplingParams sampling;
    Llmserve__V1__CacheLookup lookup;
    Llmserve__V1__CacheStore store;
    Llmserve__V1__CacheInvalidate inv;
    Llmserve__V1__CacheStatsRequest stats;
    Llmserve__V1__Usage usage;
} tc_req_t;

/* A lookup of prompt for (tenant, model), greedy sampling. */
Llmserve__V1__CacheRequest *tc_lookup(tc_req_t *r, const char *tenant, const char *model,
                                      const char *prompt, bool semantic);

/* A store of text for (tenant, model, prompt), finish EOS. */
Llmserve__V1__CacheRequest *tc_store(tc_req_t *r, const char *tenant, const char *model,
                                     const char *prompt, const char *text, bool semantic);

Llmserve__V1__CacheRequest *tc_invalidate_key(tc_req_t *r, const char *tenant, const char *model,
                                              const char *prompt);
Llmserve__V1__CacheRequest *tc_invalidate_model(tc_req_t *r, const char *model);
Llmserve__V1__CacheRequest *tc_stats(tc_req_t *r);

/* Convenience: runs a lookup and returns the answer (asserts one came back). */
Llmserve__V1__CacheResponse *tc_do_lookup(tc_session_t *s, const char *tenant, const char *model,
                                          const char *prompt, bool semantic);

/* Convenience: stores and asserts stored = true. */
void tc_do_store(tc_session_t *s, const char *tenant, const char *model, const char *prompt,
                 const char *text, bool semantic);

/* Reads the stats. */
Llmserve__V1__CacheResponse *tc_do_stats(tc_session_t *s);

#endif
