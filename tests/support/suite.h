/*
 * suite.h - the whole llmserve suite as real processes on loopback, for end-to-end
 * tests: memcached and llmserve-cache (optional), inference instances in a "small" and
 * a "large" pool, and llmserve-router in front, with a client channel to the router.
 *
 * Binaries and models come from the environment tests/router.cmake sets
 * (LLMSERVE_ROUTER_BIN, LLMSERVE_INFERENCE_BIN, LLMSERVE_CACHE_BIN, LLMSERVE_MEMCACHED,
 * LLMSERVE_ROUTER_MODELS with small.bin, large.bin, slow.bin and tok.bin from the
 * router_models fixture).
 *
 * Each process gets the suite's own flags first and then the test's extra ones, so an
 * extra flag given again overrides the suite's (flags apply in order).  The suite's:
 *   inference  --listen 127.0.0.1:0 --model M --tokenizer tok.bin --pool P
 *              --model-name tiny-small|tiny-large|slow-large --cpu-threads 1 --grace-ms 500
 *              (and --kv-budget-tokens 8192 on the slow model)
 *   cache      --listen 127.0.0.1:0 --memcached --SERVER=127.0.0.1:PORT
 *   router     --listen 127.0.0.1:0 --pool small=A,B;large=C --cache ADDR|""
 *              --ttft-budget-ms 3000 --grace-ms 500 --seed 1 (--tiers "" with no large)
 *
 * Every function asserts (cr_assert) on failure, so call them from a test, its .init or
 * its .fini, on the test's thread.
 */
#ifndef TEST_SUITE_H
#define TEST_SUITE_H

#include "memcached.h"
#include "proc.h"
#include "rpc/client.h"

#include <stdbool.h>

#define SUITE_MAX_INST 4 /* inference instances per pool */

typedef struct {
    int n_small;     /* instances in pool "small": 1..SUITE_MAX_INST */
    int n_large;     /* instances in pool "large": 0..SUITE_MAX_INST */
    bool slow_large; /* the large pool serves the slow model (milliseconds a token) */
    bool cache;      /* start memcached and llmserve-cache; else the router has none */
    /* Extra flags per process kind, NULL-terminated (NULL: none); borrowed during
     * suite_start. */
    const char *const *router_args;
    const char *const *cache_args;
    const char *const *inference_args; /* given to every instance */
    /* The client's channel to the router (TLS roots, client certificate, server name);
     * NULL is plaintext with defaults.  Borrowed during suite_start. */
    const rpc_channel_config_t *channel;
    /* Metadata sent on every call made with suite_call_opts (an API key); NULL: none.
     * Borrowed until suite_stop. */
    const rpc_md_t *metadata;
} suite_opts_t;

/* A running suite.  Tests read it, and may freeze, thaw or kill the processes in it
 * (test_proc_freeze, test_proc_stop with SIGKILL): stopping skips a process whose pid
 * is 0, and thaws each one before its SIGTERM. */
typedef struct {
    test_memcached_t memcached; /* pid 0 without the cache */
    test_proc_t cache;          /* pid 0 without the cache */
    test_proc_t small[SUITE_MAX_INST], large[SUITE_MAX_INST];
    int n_small, n_large;
    test_proc_t router;
    rpc_client_t *client;
    rpc_channel_t *ch;    /* the client's channel to the router */
    rpc_call_opts_t call; /* wait for ready, a 120 s deadline, the metadata */
    bool stopped;
} suite_t;

/* Starts every process of o (instances first, then memcached and the cache, then the
 * router, each waited for until it listens) and a client with a channel to the router.
 * Asserts that each one started. */
void suite_start(suite_t *s, const suite_opts_t *o);

/* Options for calls to the router: wait for ready, a 120 s deadline, the suite's
 * metadata.  Borrowed from s. */
const rpc_call_opts_t *suite_call_opts(const suite_t *s);

/* The instance at addr ("127.0.0.1:PORT", as a started event's instance names it).
 * Asserts that there is one. */
test_proc_t *suite_instance(suite_t *s, const char *addr);

/* Freezes p (SIGSTOP: it keeps its connections and answers nothing) and asserts that it
 * was running; suite_thaw lets it go on. */
void suite_freeze(test_proc_t *p);
void suite_thaw(test_proc_t *p);

/* Kills p with SIGKILL, as a crash, and reaps it (its pid becomes 0). */
void suite_kill(test_proc_t *p);

/* Ends a test that passed so far: destroys the client, stops the router with SIGTERM
 * and asserts that it exits 0 (a leak or a crash at shutdown fails the test here, where
 * a failed check still counts), then stops the rest as suite_stop. */
void suite_end(suite_t *s);

/* Stops everything still running (SIGTERM, after SIGCONT) and destroys the client;
 * expects (cr_expect) the router's exit status 0.  Only the first call does anything:
 * use it as .fini after a test that may have failed before suite_end. */
void suite_stop(suite_t *s);

#endif
