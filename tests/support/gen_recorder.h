/*
 * gen_recorder.h - the client end of a Generate stream as a test watches it: many
 * requests multiplexed on one bidirectional stream, each event filed under its request
 * id, with waits for a request's tokens or end and for the stream's end.
 *
 * Router.Generate and Inference.Generate share this shape and differ in their messages:
 * router_stream.h and inference_stream.h are the two kinds, and tests use those.  A kind
 * says how one event message is filed into its own record type.
 *
 * Threads: one lock per recorder guards its records, its status and the kind's own
 * counters; the kind's on_message runs with it held on the client's callback thread.
 * Functions named gen_recorder_do_* expect it held; every other function may be called
 * from any thread.
 */
#ifndef TEST_GEN_RECORDER_H
#define TEST_GEN_RECORDER_H

#include "rpc/client.h"

#include <stdbool.h>
#include <stddef.h>

/* Requests one recorder keeps records for; events of any further id are counted in
 * gen_recorder_unfiled and otherwise dropped. */
#define GEN_RECORDER_MAX_RECS 128

typedef struct gen_recorder gen_recorder_t;

/* A kind of Generate stream: its method, its event message, and its record type (one
 * per request id, rec_size bytes, made zeroed and set by init_rec). */
typedef struct {
    const char *method;                           /* e.g. "/llmserve.v1.Router/Generate" */
    const ProtobufCMessageDescriptor *event_desc; /* the stream's response message */
    size_t rec_size;
    /* Sets up a zeroed record for id (copying id if the record keeps it).  It must not
     * allocate: it also makes the empty copy a wait returns for an id not seen yet. */
    void (*init_rec)(void *rec, const char *id);
    /* Files one message (borrowed until return) into records got from
     * gen_recorder_do_rec.  Lock held; must not block. */
    void (*on_message)(gen_recorder_t *g, const ProtobufCMessage *msg);
    /* The counts gen_recorder_wait looks at: token events and terminal (done and error)
     * events so far.  Lock held. */
    void (*progress)(const void *rec, int *tokens, int *terminal);
    /* Frees what a record owns, from gen_recorder_destroy.  NULL: nothing. */
    void (*free_rec)(void *rec);
} gen_recorder_kind_t;

/* Opens kind->method on ch with opts (borrowed during the call) and a recorder that files
 * its events.  kind and ctx (the kind's own per-stream state, for gen_recorder_ctx) are
 * borrowed until gen_recorder_destroy returns.  Returns the recorder, or NULL when the
 * stream cannot be opened. */
gen_recorder_t *gen_recorder_open(rpc_channel_t *ch, const gen_recorder_kind_t *kind, void *ctx,
                                  const rpc_call_opts_t *opts);

/* The ctx given to gen_recorder_open. */
void *gen_recorder_ctx(gen_recorder_t *g);

void gen_recorder_lock(gen_recorder_t *g);
void gen_recorder_unlock(gen_recorder_t *g);

/* The record of id, made (zeroed, then init_rec) on first sight; NULL when
 * GEN_RECORDER_MAX_RECS records exist already (the event is counted as unfiled).  The
 * record is the recorder's; it stays valid until gen_recorder_destroy. */
void *gen_recorder_do_rec(gen_recorder_t *g, const char *id);

/* The record of id, or NULL when no event has named it. */
void *gen_recorder_do_find(gen_recorder_t *g, const char *id);

/* The records made so far, in the order their first events came; i < the count. */
int gen_recorder_do_count(gen_recorder_t *g);
void *gen_recorder_do_at(gen_recorder_t *g, int i);

/* Events that found no room for their record. */
int gen_recorder_unfiled(gen_recorder_t *g);

/* Sends msg on the stream (it stays the caller's).  Returns rpc_stream_send's result. */
int gen_recorder_send(gen_recorder_t *g, const ProtobufCMessage *msg);

/* Half-closes the stream.  Returns rpc_stream_close_send's result. */
int gen_recorder_close_send(gen_recorder_t *g);

/* Waits up to timeout_ms until id has n_tokens token events or a terminal event (when
 * n_tokens > 0) or n_terminal terminal events (when n_tokens is 0), or the stream has
 * ended, whichever comes first.  Copies id's record into out (rec_size bytes; as
 * init_rec makes it when no event has named id yet).  Returns whether the condition was
 * met.  timeout_ms 0 only looks. */
bool gen_recorder_wait(gen_recorder_t *g, const char *id, int n_tokens, int n_terminal,
                       int timeout_ms, void *out);

/* Waits up to timeout_ms for the stream's end (its status); returns whether it ended. */
bool gen_recorder_wait_end(gen_recorder_t *g, int timeout_ms);

/* The stream's final status; code GRPC_STATUS_UNKNOWN with details "not ended" while it
 * has not ended. */
rpc_status_t gen_recorder_status(gen_recorder_t *g);

/* Cancels the stream if it has not ended, waits for its end, releases it and frees the
 * recorder and its records (free_rec on each); returns true.  If the stream does not
 * end within 60 s, the recorder is left allocated (callbacks may still come, with ctx),
 * a message says so and it returns false: the caller then keeps ctx too.  NULL is a
 * no-op returning true. */
bool gen_recorder_destroy(gen_recorder_t *g);

#endif
