/*
 * mux.h - one long-lived bidirectional stream to one upstream instance, multiplexing
 * many requests by id, reopened when it breaks.
 *
 * A service keeps one mux per upstream instance so that no request pays for a new HTTP/2
 * stream (the router: one per inference instance on Inference.Generate, one per cache
 * instance on Cache.Session).  A supervisor thread per mux ("rpc-mux") opens the stream
 * (after an optional blocking probe, e.g. Inference.Info), waits while it is up, and
 * reopens it with capped exponential back-off when it ends.
 *
 * Each request registers an id with a handler; responses are routed to it by id until a
 * terminal response, rpc_mux_forget, or the stream breaking (on_broken: every registered
 * request hears about it exactly once, so none is left in silence).  The mux holds a
 * reference on each registered request (handler ref/unref) and another one while a
 * callback runs, so a request stays valid across races with its own cancellation.
 *
 * Threads: callbacks run on the rpc client's threads (probe and on_health also on the
 * supervisor) with no mux lock held, and must not block.  Every function is safe from any
 * thread; all but rpc_mux_shutdown and rpc_mux_destroy, which block, also from callbacks.
 */
#ifndef RPC_MUX_H
#define RPC_MUX_H

#include "rpc/client.h"

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct rpc_mux rpc_mux_t;

/* What a registered request hears.  msg is borrowed until return. */
typedef struct {
    void (*on_message)(void *ud, uint64_t id, const ProtobufCMessage *msg, bool terminal);
    /* The stream ended before the request's terminal response; why is borrowed. */
    void (*on_broken)(void *ud, uint64_t id, const char *why);
    void (*ref)(void *ud);
    void (*unref)(void *ud);
} rpc_mux_handler_t;

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
    /* Optional: TLS or mutual TLS for the upstream channel, its probes included; NULL is
     * plaintext with rpc_channel_config_init's defaults.  Copied at create (its strings
     * must outlive the mux); reconnect_max_ms is always set from backoff_max_ms. */
    const rpc_channel_config_t *channel;
    int64_t backoff_min_ms;   /* first reconnect delay; default 50 */
    int64_t backoff_max_ms;   /* cap; default 1000 */
    int64_t probe_timeout_ms; /* default 1000 */
    size_t max_write_queue;   /* messages waiting to be sent; default 8192 */
} rpc_mux_config_t;

/* Creates the mux for target ("host:port") on client and starts its supervisor.  cfg is
 * copied (strings must outlive the mux).  Returns NULL when the channel or the thread
 * cannot be created (e.g. TLS files in cfg->channel that cannot be read); no callback
 * runs then. */
rpc_mux_t *rpc_mux_create(rpc_client_t *client, const char *target, const rpc_mux_config_t *cfg);

/* True while the stream is open. */
bool rpc_mux_up(rpc_mux_t *m);

/* Registers id (nonzero, unique among this mux's registrations) for h/ud and sends msg.
 * Returns LS_OK (h will hear about id), LS_ERR_UNAVAILABLE when the stream is not open,
 * LS_ERR_FULL when its write queue is full, LS_ERR_EXISTS for an id in use; on error
 * nothing is registered and no callback runs. */
int rpc_mux_request(rpc_mux_t *m, uint64_t id, const ProtobufCMessage *msg,
                    const rpc_mux_handler_t *h, void *ud);

/* Sends msg with nothing registered (cancels, fire-and-forget stores).  Returns LS_OK,
 * LS_ERR_UNAVAILABLE or LS_ERR_FULL. */
int rpc_mux_send(rpc_mux_t *m, const ProtobufCMessage *msg);

/* Drops id's registration (its reference is released).  Returns true when it was
 * registered; false when a terminal response or a break already took it (then the
 * callback delivering that is running or has run). */
bool rpc_mux_forget(rpc_mux_t *m, uint64_t id);

/* Stops the supervisor and half-closes the stream (requests in flight still finish);
 * no new request is accepted.  Blocks until the supervisor has exited.  Idempotent. */
void rpc_mux_shutdown(rpc_mux_t *m);

/* Shuts down if needed, waits for the stream to end and frees the mux.  Blocks: requests
 * in flight get up to 3 s to finish after the half-close, then the stream is cancelled
 * (they hear on_broken); never call it from a callback or another thread that must not
 * block.  NULL is a no-op. */
void rpc_mux_destroy(rpc_mux_t *m);

#endif
