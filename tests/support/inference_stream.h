/*
 * inference_stream.h - an Inference.Generate client for tests of the inference service:
 * submits and cancels requests on one stream and records, per request id, what came
 * back (started, tokens and their text, the terminal event, whether they came in
 * order), unpacking event batches (InferenceEvent.batch) into their events.
 *
 * Functions that assert (a send accepted, a wait met in time) fail the calling test;
 * call them from the test's own thread.  The rest may be called from any thread.
 */
#ifndef TEST_INFERENCE_STREAM_H
#define TEST_INFERENCE_STREAM_H

#include "llmserve/v1/inference.pb-c.h"
#include "rpc/client.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct inference_stream inference_stream_t;

/* What one request on the stream received. */
typedef struct {
    char id[160];
    int started, tokens; /* started and token events */
    int terminal;        /* Done and Error events (an ALREADY_EXISTS refusal is one) */
    bool order_ok;       /* started first, token indexes 0, 1, 2..., nothing after the
                          * terminal event, no nested batch */
    int ids[1024];       /* the ids of the first 1024 tokens */
    char text[4096];     /* the tokens' text, in order (cut short if longer) */
    size_t text_len;
    uint32_t prompt_tokens, batch_size;                /* from the started event */
    uint64_t queue_us;                                 /* from the started event */
    int reason;                                        /* FinishReason of the last Done, or 0 */
    int error;                                         /* gRPC code of the last Error, or 0 */
    char msg[256];                                     /* its message */
    uint32_t completion_tokens, usage_prompt_tokens;   /* Done's usage */
    uint32_t cached_tokens, usage_cached_tokens; /* started's and Done's prefix-cache hits */
    uint64_t ttft_us, total_us, prefill_us, decode_us; /* Done's timings */
    int64_t started_at, ended_at; /* ls_now_us when the client saw started and terminal */
} inference_stream_rec_t;

/* Counts over the whole stream. */
typedef struct {
    int requests;    /* ids seen */
    int terminals;   /* terminal events of every request */
    int messages;    /* InferenceEvent messages received */
    int events;      /* events in them: more than messages only with batching */
    bool batch_seen; /* a message carried InferenceEvent.batch */
} inference_stream_counts_t;

/* One submit.  Pointers are borrowed during inference_stream_submit; prompt NULL is "". */
typedef struct {
    const char *prompt;
    int max_tokens;
    bool ignore_eos;
    float temperature, top_p;
    int top_k;
    uint32_t timeout_ms;   /* the request's deadline; 0 = none */
    const int32_t *tokens; /* prompt as token ids */
    size_t n_tokens;
    char **stop;
    size_t n_stop;
    Llmserve__V1__ChatMessage **messages;
    size_t n_messages;
    const int32_t *resume; /* resume_tokens */
    size_t n_resume;
    int priority; /* Priority enum value; 0 = unspecified */
} inference_stream_req_t;

/* Opens Inference.Generate on ch.  opts (borrowed during the call: deadline, metadata)
 * NULL means wait for ready and no deadline.  Asserts that the stream opened.  The
 * caller frees it with inference_stream_destroy; a test that fails before that leaves
 * it allocated, so callbacks that still come (until the client is destroyed) never
 * write to freed memory. */
inference_stream_t *inference_stream_open(rpc_channel_t *ch, const rpc_call_opts_t *opts);

/* Sends a submit of req under id; asserts that the stream took it. */
void inference_stream_submit(inference_stream_t *g, const char *id,
                             const inference_stream_req_t *req);

/* Sends a cancel of id; asserts that the stream took it. */
void inference_stream_cancel(inference_stream_t *g, const char *id);

/* Waits up to timeout_ms for id's terminal event (n_tokens 0) or its first n_tokens
 * tokens (or an earlier end); returns a copy of its record.  Asserts that it came in
 * time. */
inference_stream_rec_t inference_stream_wait(inference_stream_t *g, const char *id, int n_tokens,
                                             int timeout_ms);

/* As inference_stream_wait with n_tokens 0, for n_terminal terminal events (a refused
 * duplicate id counts one besides the first request's own). */
inference_stream_rec_t inference_stream_wait_terminals(inference_stream_t *g, const char *id,
                                                       int n_terminal, int timeout_ms);

/* A copy of id's record now (zero counts if nothing came for it yet). */
inference_stream_rec_t inference_stream_get(inference_stream_t *g, const char *id);

inference_stream_counts_t inference_stream_counts(inference_stream_t *g);

/* Half-closes the stream.  Returns rpc_stream_close_send's result. */
int inference_stream_close_send(inference_stream_t *g);

/* Waits up to timeout_ms for the stream's end; returns whether it ended. */
bool inference_stream_wait_end(inference_stream_t *g, int timeout_ms);

/* The stream's final status (GRPC_STATUS_UNKNOWN, "not ended", before its end). */
rpc_status_t inference_stream_status(inference_stream_t *g);

/* Cancels the stream if it has not ended, waits for its end and frees it.  NULL is a
 * no-op. */
void inference_stream_destroy(inference_stream_t *g);

#endif
