/*
 * router_stream.h - a Router.Generate client for end-to-end tests: submits and cancels
 * requests on one stream and records, per request id, what came back (started events
 * and the route they name, tokens and their text, the terminal event), so a test can
 * wait for a request's first tokens or its end and check what it got.
 *
 * Functions that check something the stream's contract promises (a send accepted, one
 * terminal event, status OK at the end) fail the calling test with cr_assert or
 * cr_expect; call them from the test's own thread.  The rest may be called from any
 * thread.
 */
#ifndef TEST_ROUTER_STREAM_H
#define TEST_ROUTER_STREAM_H

#include "llmserve/v1/router.pb-c.h"
#include "rpc/client.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct router_stream router_stream_t;

/* What one request on the stream received. */
typedef struct {
    char id[64];
    int started;            /* started events: one per try (a fallback tries again) */
    int tokens;             /* token events */
    int terminal;           /* Done and Error events, but for refused duplicates */
    int after_terminal;     /* events after the terminal one: the contract says none */
    int refused_duplicates; /* ALREADY_EXISTS answers to a second submit of a live id */
    bool done;              /* the terminal event was Done ... */
    int finish;             /* ... with this FinishReason */
    int err_code;           /* the terminal event was Error with this gRPC code (else 0) */
    char err_msg[512];
    uint32_t retry_after_ms; /* the Error's retry hint (0: none) */
    char text[16384];        /* the tokens' text, in order (cut short if longer) */
    size_t text_len;
    int ids[256];                /* the ids of the first 256 token events */
    bool indexes_ok;             /* token indexes came as 0, 1, 2, ... */
    bool token_cache_hit;        /* the last token event said cache_hit */
    uint32_t completion_tokens;  /* Done's usage */
    uint32_t prompt_tokens;      /* Done's usage */
    uint64_t ttft_us, total_us;  /* Done's timings */
    uint64_t cache_lookup_us;    /* Done's timings */
    uint64_t router_queue_us;    /* Done's timings */
    uint32_t first_attempt_seen; /* the first started event's attempt */
    int failovers;               /* started events with failover set (after tokens) */
    int tokens_at_failover;      /* tokens received when the last of them came */
    uint32_t resumed_tokens;     /* its resumed_tokens */
    int started_rank;            /* 1 + the requests on the stream started before this one
                                    (by their first started event); 0: not started */
    /* The last started event, owned by the stream: NULL in the copies tests get (read it
     * with router_stream_route). */
    Llmserve__V1__GenerateStarted *route;
} router_stream_rec_t;

/* One submit.  Strings are borrowed during router_stream_submit; NULL is "". */
typedef struct {
    const char *id, *prompt, *hint, *conversation, *tenant;
    int max_tokens;
    bool ignore_eos;
    uint32_t timeout_ms; /* the request's deadline; 0 = none */
    Llmserve__V1__CachePolicy policy;
    float temperature;
    float top_p;
    bool has_seed; /* seed is set */
    uint64_t seed;
    bool chat;    /* send prompt as one chat message ... */
    int role;     /* ... of this role (0 = USER) */
    int priority; /* GenerateSubmit.priority (0 = unspecified) */
} router_stream_req_t;

/* Opens Router.Generate on ch.  opts (borrowed during the call, metadata included) NULL
 * means wait for ready with a 120 s deadline.  Asserts that the stream opened.  The
 * caller ends it with router_stream_close or router_stream_destroy; a test that fails
 * before that leaves it allocated, so callbacks that still come (until the client is
 * destroyed) never write to freed memory. */
router_stream_t *router_stream_open(rpc_channel_t *ch, const rpc_call_opts_t *opts);

/* Sends a submit of req; asserts that the stream took it. */
void router_stream_submit(router_stream_t *g, const router_stream_req_t *req);

/* As router_stream_submit, returning rpc_stream_send's result instead of asserting (for
 * a stream the router may already have ended). */
int router_stream_send_submit(router_stream_t *g, const router_stream_req_t *req);

/* Sends a cancel of id; asserts that the stream took it. */
void router_stream_cancel(router_stream_t *g, const char *id);

/* Waits up to timeout_ms until id has at least `tokens` tokens (tokens > 0) or its
 * terminal event, or the stream ends; returns a copy of its record either way (the
 * caller checks what it needs).  timeout_ms 0 only looks. */
router_stream_rec_t router_stream_wait(router_stream_t *g, const char *id, int tokens,
                                       int timeout_ms);

/* Waits up to 60 s for id's terminal event; asserts there is exactly one and returns a
 * copy of its record. */
router_stream_rec_t router_stream_finish(router_stream_t *g, const char *id);

/* The last started event of id: which pool, instance and model, why, which attempt.
 * Borrowed until the stream is closed or destroyed.  Asserts that there was one. */
const Llmserve__V1__GenerateStarted *router_stream_route(router_stream_t *g, const char *id);

/* Waits up to timeout_ms for the stream's end; returns whether it ended. */
bool router_stream_wait_end(router_stream_t *g, int timeout_ms);

/* The stream's final status (GRPC_STATUS_UNKNOWN, "not ended", before its end). */
rpc_status_t router_stream_status(router_stream_t *g);

/* Half-closes the stream, waits up to 60 s for its end and frees it, expecting
 * (cr_expect) that it ended with status OK, that no request got an event after its
 * terminal event and that every event had room for its record. */
void router_stream_close(router_stream_t *g);

/* Cancels the stream if it has not ended, waits for its end and frees it, checking
 * nothing: for a stream a test expects to fail.  NULL is a no-op. */
void router_stream_destroy(router_stream_t *g);

#endif
