/*
 * request.h - one generation request: validation of what the client sent, and the
 * state of its generation (prompt tokens, sampler, stop strings, text stream,
 * counters and timings).
 *
 * Life: the stream handler builds a request with inf_request_create (which validates
 * every field and tokenizes the prompt), hands it to the scheduler, and gets it back
 * through its sink's release callback after the scheduler has sent its terminal
 * event.  The fields under "scheduler" are touched only by the scheduler thread;
 * `cancel` may be set from any thread.
 *
 * Rules applied here (also in README.md, "Inference service"):
 * - request_id: 1 to INF_REQUEST_ID_MAX bytes of UTF-8.
 * - prompt_tokens non-empty: used as the prompt; each id in [0, vocab_size).
 *   Otherwise messages (rendered by chat.h) or prompt, tokenized with BOS in front;
 *   all three empty, prompt and messages both non-empty, or text that is not UTF-8,
 *   is INVALID_ARGUMENT.
 * - A prompt of seq_len tokens or more leaves no room to generate: INVALID_ARGUMENT
 *   (LS_ERR_FULL from inf_request_create, so the service can count it as too long).
 * - max_tokens: negative is INVALID_ARGUMENT; 0 means the configured default; above
 *   the configured limit is INVALID_ARGUMENT; above what seq_len leaves after the
 *   prompt it is clamped to that room (the request then ends with LENGTH there).
 * - temperature in [0, 2] (0 = greedy); top_p in [0, 1] (0 and 1 = off); top_k >= 0
 *   (0 = off; above vocab_size clamped); NaN anywhere is INVALID_ARGUMENT.
 * - seed: used when has_seed, else drawn from getrandom(2) (the clock if that fails).
 * - stop: at most INF_STOP_MAX_STRINGS strings of 1 to INF_STOP_MAX_BYTES bytes of UTF-8.
 * - resume_tokens (a request another instance began): each id in [0, vocab_size), at
 *   most seq_len of them.  They follow the prompt in `tokens`, count as generated, their
 *   text is replayed into the UTF-8 and stop-string hold-back without being sent, and a
 *   seeded sampler draws one coin per resume token, so the next pick is the one the
 *   uninterrupted run would make.  One that ends generation (EOS, a completed stop
 *   string, max_tokens reached) sets resume_end: the scheduler ends the request at once.
 * - priority: a Priority enum value; UNSPECIFIED is NORMAL, unknown is INVALID_ARGUMENT.
 */
#ifndef INF_REQUEST_H
#define INF_REQUEST_H

#include "llmserve/v1/inference.pb-c.h"
#include "model/sampler.h"
#include "model/tokenizer.h"
#include "stop.h"
#include "svc/tracer.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INF_REQUEST_ID_MAX 128 /* bytes */

typedef struct inf_request inf_request_t;

/* Where a request's events go; implemented by the stream handler (service.c). */
typedef struct {
    /* Sends ev (borrowed for the call) to the request's client, or packs it to send at
     * the next flush.  Returns LS_OK, or an error when the client can no longer be
     * reached (the request is then treated as cancelled and gets no further events);
     * a sink that holds events back reports a failed send at the emit after it. */
    int (*emit)(inf_request_t *r, const Llmserve__V1__InferenceEvent *ev);
    /* The request is over (its terminal event was sent or could not be): the owner
     * unlinks and destroys it.  Called exactly once, by the scheduler thread. */
    void (*release)(inf_request_t *r);
    /* Optional (NULL: emit sends at once).  A sink may hold emitted events back to send
     * several in one message; the scheduler calls flush at the end of every round in
     * which it emitted to this sink, and release must send what the request's client
     * still has held back.  Scheduler thread only. */
    void (*flush)(const void *sink);
} inf_sink_t;

/* The model-dependent limits a request is checked against. */
typedef struct {
    int vocab_size;
    int seq_len;             /* prompt + completion, tokens */
    int default_max_tokens;  /* used when max_tokens is 0 */
    int max_tokens_limit;    /* larger max_tokens is INVALID_ARGUMENT; 0 = no limit */
    size_t max_prompt_bytes; /* longer text is refused before tokenizing; 0 = no limit */
    size_t longest_piece;    /* inf_longest_piece(tok): sizes the resume replay's buffers;
                                0 = computed per resumed request */
} inf_limits_t;

/* Scheduling classes, best first (InferenceSubmit.priority - 1). */
enum { INF_PRIO_INTERACTIVE = 0, INF_PRIO_NORMAL = 1, INF_PRIO_BATCH = 2, INF_PRIO_COUNT = 3 };

/* "interactive", "normal" or "batch" (static). */
const char *inf_prio_name(int prio);

struct inf_request {
    char id[INF_REQUEST_ID_MAX + 1];
    /* The prompt's n_prompt ids (BOS included when wanted), then the answer's ids as
     * they are generated (resume tokens first): room for n_prompt + max_tokens (owned). */
    int *prompt;
    int n_prompt;
    int n_resume;   /* resume tokens (already in prompt[], after the prompt) */
    int resume_end; /* FinishReason a resume token reached, or 0: go on generating */
    int prio;       /* INF_PRIO_* */
    int max_tokens; /* resolved: 1 <= max_tokens <= seq_len - n_prompt */
    bool ignore_eos;
    sampler_t sampler;
    inf_stop_t stop;
    int64_t arrival_us;  /* ls_now_us() when it arrived */
    int64_t deadline_us; /* ls_now_us() clock; INT64_MAX = none */
    atomic_bool cancel;  /* set by the client's cancel, the stream ending, or a failed emit */
    bool chat;           /* the submit had messages (a chat, not a text completion) */
    bool has_seed;       /* the client gave seed */
    uint64_t seed;       /* the sampler's seed, given or drawn */
    svc_trace_ctx_t trace_parent; /* the submit's traceparent, when has_trace_parent */
    bool has_trace_parent;        /* set by the owner, and only with tracing on (trace.h) */

    /* owner (service.c) */
    const inf_sink_t *sink;
    void *owner;
    inf_request_t *owner_prev, *owner_next;

    /* scheduler */
    struct inf_sched *sched; /* set at submit */
    inf_request_t *queue_next;
    int seq;           /* forward sequence id while admitted; -1 before */
    int n_fill;        /* tokens of prompt[] to feed before decoding: the prompt and the
                          tokens generated before this admission (resumed, preempted) */
    int n_fed;         /* tokens in the KV cache: prompt chunks, then generated tokens */
    int n_cached;      /* of them, found in the prefix cache at the last admission */
    int preemptions;   /* times it left the batch for a higher class */
    bool started_sent; /* its started event went out (only the first admission sends one) */
    int64_t enqueue_us; /* when it last entered the queue (submit, preemption): aging */
    int n_generated;   /* answer tokens so far (EOS not counted) */
    int last_token;    /* the token to feed next once the prompt is in */
    tok_stream_t text; /* holds back split UTF-8 characters */
    int end;           /* why it must leave the queue (scheduler.c's own codes) */
    bool sink_dead;    /* an emit failed: no further events */
    int64_t admit_us, first_token_us, last_token_us;
    int batch_size; /* sequences in the batch once it was admitted, itself included (for its
                       started event and its span) */
};

/* Checks a request id (see the rules above).  Returns LS_OK or LS_ERR_INVALID with a
 * reason in err. */
int inf_request_check_id(const char *id, char *err, size_t err_len);

/* Validates sub against lim and tok, tokenizes its prompt and builds the request
 * (arrival now_us, deadline from timeout_ms; sink and owner unset).  Returns LS_OK
 * with *out (caller owns it; free with inf_request_destroy), LS_ERR_INVALID with a
 * reason in err (one line, for the client), LS_ERR_FULL with a reason in err when the
 * prompt leaves no room in the model's context (also INVALID_ARGUMENT for the client),
 * or LS_ERR_NOMEM.  Thread-safe. */
int inf_request_create(const Llmserve__V1__InferenceSubmit *sub, const tok_t *tok,
                       const inf_limits_t *lim, int64_t now_us, inf_request_t **out, char *err,
                       size_t err_len);

/* Longest text any token of tok stands for, in bytes: bounds the text buffers, and
 * (times seq_len) the prompt bytes worth tokenizing.  Walks the vocabulary once. */
size_t inf_longest_piece(const tok_t *tok);

/* Frees r; NULL is a no-op. */
void inf_request_destroy(inf_request_t *r);

/* True when token ends generation by itself: EOS, or BOS (which llama2.c models
 * emit between documents), unless the request ignores EOS. */
bool inf_request_is_eos(const inf_request_t *r, int token);

/* Scratch for turning tokens into text, sized once by the scheduler. */
typedef struct {
    char *utf8;      /* complete characters of one piece */
    size_t utf8_cap; /* >= the longest piece + 4 */
} inf_text_scratch_t;

/* Bytes of out that inf_request_push_text needs for a piece of piece_len bytes, and
 * that inf_request_flush_text needs, at most. */
#define INF_TEXT_PUSH_NEED(piece_len) (INF_STOP_MAX_BYTES + (piece_len) + 4)
#define INF_TEXT_FLUSH_NEED (INF_STOP_MAX_BYTES + 4)

/* Appends the text of token (generated after prev) to the answer: writes into out
 * (out_cap >= INF_TEXT_PUSH_NEED(longest piece)) what can be sent now, that is
 * complete UTF-8 characters that cannot be the start of a stop string, and returns
 * its length.  Sets *stopped when a stop string completed (what was written is then
 * the text before it). */
size_t inf_request_push_text(inf_request_t *r, const tok_t *tok, int prev, int token,
                             const inf_text_scratch_t *sc, char *out, size_t out_cap,
                             bool *stopped);

/* At the end of generation: writes into out (out_cap >= INF_TEXT_FLUSH_NEED) what is
 * still held back (an incomplete character as U+FFFD, a possible stop-string prefix)
 * and returns its length; *stopped as for inf_request_push_text (the held bytes may
 * complete a stop string). */
size_t inf_request_flush_text(inf_request_t *r, const inf_text_scratch_t *sc, char *out,
                              size_t out_cap, bool *stopped);

#endif
