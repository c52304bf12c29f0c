/*
 * conn.h - one Inference.Generate stream to an instance, carrying many requests at once,
 * with what servebench measures of each: client-side TTFT (submit sent to first token
 * event received), the prefix-cache fields and the greedy token ids.
 *
 * It checks the stream's contract as it goes: per request, events in order (started,
 * tokens with index 0, 1, 2, ..., exactly one terminal event).  An event that breaks it
 * (an unknown id, a second terminal event, a token out of order) counts as a protocol
 * error.  When the stream ends, every request still in flight ends with the stream's
 * code (UNAVAILABLE when the stream ended OK) and a message saying it got no terminal
 * event, so a request always ends once.
 *
 * Threads: every function may be called from any thread.  sb_conn_wait and
 * sb_conn_close block (each for at most the time given).
 */
#ifndef SERVEBENCH_CONN_H
#define SERVEBENCH_CONN_H

#include "rpc/client.h"
#include "rpc/metadata.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sb_conn sb_conn_t;

/* One request's record.  The caller owns it; between sb_conn_submit and its end the
 * connection writes it under its lock, so the caller reads it only once sb_conn_wait
 * said it ended. */
typedef struct {
    int32_t *ids;   /* caller's buffer for the first ids_cap token ids, or NULL */
    size_t ids_cap; /* entries of ids */
    /* written by the connection */
    uint64_t seq;           /* the request id's number ("r<seq>" on the wire) */
    int64_t sent_ns;        /* bench_now_ns just before the submit was queued */
    int64_t first_ns;       /* first token event received; 0 = none */
    int64_t end_ns;         /* terminal event received (or the stream ended) */
    bool started;           /* InferenceStarted received */
    uint32_t cached_tokens; /* InferenceStarted.cached_tokens */
    uint32_t prompt_tokens; /* InferenceStarted.prompt_tokens */
    uint32_t usage_cached;  /* InferenceDone usage.cached_prompt_tokens */
    uint32_t n_tokens;      /* token events received */
    int code;               /* gRPC code of the terminal event: 0 for InferenceDone */
    char message[200];      /* the error's message, when code is not 0 */
    bool ended;
} sb_req_t;

/* What to ask for; prompt is borrowed during sb_conn_submit. */
typedef struct {
    const int32_t *prompt;
    size_t n_prompt;
    int32_t max_tokens;  /* greedy, EOS ignored: exactly this many tokens */
    int priority;        /* an Llmserve__V1__Priority value */
    uint32_t timeout_ms; /* the request's deadline at the instance; 0 = none */
} sb_submit_t;

/* Opens a Generate stream on ch (waiting for the channel to connect), sending md's
 * entries (borrowed during the call; may be NULL).  Returns NULL when the call cannot
 * be created.  Caller owns the result; free with sb_conn_close. */
sb_conn_t *sb_conn_open(rpc_channel_t *ch, const rpc_md_t *md);

/* Resets r's results, gives it an id and sends the submit.  Returns LS_OK, or
 * LS_ERR_CLOSED (the stream is over) / LS_ERR_FULL (too many messages waiting to be
 * sent), in which case r is not in flight and will not end. */
int sb_conn_submit(sb_conn_t *c, sb_req_t *r, const sb_submit_t *s);

/* Waits until r (submitted on c) has ended, for at most timeout_us.  Returns true when
 * it has. */
bool sb_conn_wait(sb_conn_t *c, sb_req_t *r, int64_t timeout_us);

/* Token events received on c since it opened, all requests together. */
uint64_t sb_conn_tokens(sb_conn_t *c);

/* InferenceStarted events received on c since it opened. */
uint64_t sb_conn_started(sb_conn_t *c);

/* Events that broke the stream's contract (see above) since it opened. */
uint64_t sb_conn_protocol_errors(sb_conn_t *c);

/* The first protocol error, described; "" when there was none.  The string stays c's. */
const char *sb_conn_first_protocol_error(sb_conn_t *c);

/* Half-closes the stream and waits up to timeout_us for it to end (after every request
 * in flight), then cancels it if it has not, waits for its end, and frees c.  Requests
 * still in flight end as the header says.  NULL is a no-op. */
void sb_conn_close(sb_conn_t *c, int64_t timeout_us);

#endif
