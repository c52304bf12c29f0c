/*
 * mux.h - one long-lived bidirectional stream to one upstream instance, multiplexing
 * many requests by id, reopened when it breaks.
 *
 * The router keeps one mux per inference instance (Inference.Generate) and one per cache
 * instance (Cache.Session), so no request pays for a new HTTP/2 stream.  A supervisor
 * thread per mux opens the stream (after an optional blocking probe, e.g. Inference.Info),
 * waits while it is up, and reopens it with capped exponential back-off when it ends.
 *
 * Each request registers an id with a handler; responses are routed to it by id until a
 * terminal response, mux_forget, or the stream breaking (on_broken: every registered
 * request hears about it exactly once, so none is left in silence).  The mux holds a
 * reference on each registered request (handler ref/unref) and another one while a
 * callback runs, so a request stays valid across races with its own cancellation.
 *
 * Threads: callbacks run on the rpc client's threads with no mux lock held, and must not
 * block.  Every function is safe from any thread, including from callbacks.
 */
#ifndef ROUTER_MUX_H
#define ROUTER_MUX_H

#include "rpc/client.h"

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct mux mux_t;

/* What a registered request hears.  msg is borrowed until return. */
typedef struct {
    void (*on_message)(void *ud, uint64_t id, const ProtobufCMessage *msg, bool terminal);
    /* The stream ended before the request's terminal response; why is borrowed. */
    void (*on_broken)(void *ud, uint64_t id, const char *why);
    void (*ref)(void *ud);
    void (*unref)(void *ud);
} mux_handler_t;

typedef struct {
    const char *name;   /* for logs: "inference", "cache" */
    const char *method; /* e.g. "/llmserve.v1.Inference/Generate" */
    const ProtobufCMessageDescriptor *resp_desc;
    /* Reads a response's request id and whether it ends that request.  Returns false for
     * a response that belongs to no request (it is dropped). */
    bool (*route)(const ProtobufCMessage *msg, uint64_t *id, bool *terminal);
    /* Optional: the i-th further response packed inside msg (NULL past the last); each
     * is routed after msg, in order, as if it had come alone. */
    const ProtobufCMessage *(*batch_item)(const ProtobufCMessage *msg, size_t i);
    /* Optional: initial metadata of every stream the mux opens (borrowed for its life). */
    const rpc_md_t *metadata;
    /* Optional, on the supervisor thread before each open (may block, honour timeout_ms):
     * returns true when the peer answers.  A false result counts as a failed connect. */
    bool (*probe)(void *ud, rpc_channel_t *ch, int64_t timeout_ms);
    /* Optional: the stream came up (true) or went down (false); supervisor or client
     * thread, no lock held. */
    void (*on_health)(void *ud, bool up);
    void *ud;
    int64_t backoff_min_ms;   /* first reconnect delay; default 50 */
    int64_t backoff_max_ms;   /* cap; default 1000 */
    int64_t probe_timeout_ms; /* default 1000 */
    size_t max_write_queue;   /* messages waiting to be sent; default 8192 */
} mux_config_t;

/* Creates the mux for target ("host:port") on client and starts its supervisor.  cfg is
 * copied (strings must outlive the mux).  Returns NULL when the channel or the thread
 * cannot be created. */
mux_t *mux_create(rpc_client_t *client, const char *target, const mux_config_t *cfg);

/* True while the stream is open. */
bool mux_up(mux_t *m);

/* Registers id (nonzero, unique among this mux's registrations) for h/ud and sends msg.
 * Returns LS_OK (h will hear about id), LS_ERR_UNAVAILABLE when the stream is not open,
 * LS_ERR_FULL when its write queue is full, LS_ERR_EXISTS for an id in use; on error
 * nothing is registered and no callback runs. */
int mux_request(mux_t *m, uint64_t id, const ProtobufCMessage *msg, const mux_handler_t *h,
                void *ud);

/* Sends msg with nothing registered (cancels, fire-and-forget stores).  Returns LS_OK,
 * LS_ERR_UNAVAILABLE or LS_ERR_FULL. */
int mux_send(mux_t *m, const ProtobufCMessage *msg);

/* Drops id's registration (its reference is released).  Returns true when it was
 * registered; false when a terminal response or a break already took it (then the
 * callback delivering that is running or has run). */
bool mux_forget(mux_t *m, uint64_t id);

/* Stops the supervisor and half-closes the stream (requests in flight still finish);
 * no new request is accepted.  Blocks until the supervisor has exited.  Idempotent. */
void mux_shutdown(mux_t *m);

/* Shuts down if needed and drops the owner's reference; the memory goes once the stream
 * has ended.  NULL is a no-op. */
void mux_destroy(mux_t *m);

#endif
