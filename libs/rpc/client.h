/*
 * client.h - gRPC client over the C core: channels, blocking unary calls with
 * deadlines, and long-lived bidirectional streams driven by callbacks.
 *
 * An rpc_client_t owns the completion-queue threads that run stream callbacks; make
 * one per process and create channels from it.  A channel reconnects by itself
 * (exponential back-off capped by reconnect_max_ms); a stream that breaks ends with
 * UNAVAILABLE and the owner opens a new one on the same channel.
 *
 * Threads: rpc_channel_unary blocks the calling thread (never call it from a
 * completion-queue thread).  Stream callbacks run on one client thread per stream, in
 * order, and must not block.  rpc_stream_send / close_send / cancel / release are safe
 * from any thread, including from inside callbacks.
 */
#ifndef RPC_CLIENT_H
#define RPC_CLIENT_H

#include "rpc/metadata.h"

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rpc_client rpc_client_t;
typedef struct rpc_channel rpc_channel_t;
typedef struct rpc_stream rpc_stream_t;

/* A call's final status. */
typedef struct {
    grpc_status_code code;
    char details[256]; /* truncated if longer */
} rpc_status_t;

/* Creates the client with `threads` completion-queue threads (0 = 1), started with the
 * first stream (unary calls do not need them).  Calls grpc_init.  Aborts on
 * out-of-memory; never returns NULL today (callers may still check). */
rpc_client_t *rpc_client_create(int threads);

/* Cancels every stream still open, waits until each has delivered on_status and been
 * released, stops the threads and calls grpc_shutdown.  Channels must be destroyed
 * first.  NULL is a no-op. */
void rpc_client_destroy(rpc_client_t *client);

typedef struct {
    const char *tls_root_file;   /* PEM roots; set = TLS (NULL roots use the system's) */
    bool tls;                    /* TLS even without tls_root_file */
    const char *tls_cert_file;   /* client certificate for mutual TLS */
    const char *tls_key_file;
    const char *tls_server_name; /* name checked in the server certificate, if not the host */
    int max_recv_message_bytes;  /* default 4 MiB */
    int64_t reconnect_max_ms;    /* cap of the reconnect back-off; default 2000 */
    int64_t keepalive_ms;        /* HTTP/2 pings on idle connections; default 0 = off */
    bool own_connections;        /* connections of this channel alone: gRPC otherwise shares
                                    one (and its reconnect back-off) between channels with the
                                    same target and settings; default false */
} rpc_channel_config_t;

void rpc_channel_config_init(rpc_channel_config_t *cfg);

/* Creates a channel to target ("host:port", or any gRPC target URI); cfg NULL means
 * plaintext with defaults.  Connects lazily.  Returns NULL when TLS files cannot be read. */
rpc_channel_t *rpc_channel_create(rpc_client_t *client, const char *target,
                                  const rpc_channel_config_t *cfg);

/* Releases the channel.  Streams on it must have been released first.  NULL is a no-op. */
void rpc_channel_destroy(rpc_channel_t *ch);

/* Per-call options; a zeroed struct means no deadline, no metadata, fail fast. */
typedef struct {
    int64_t timeout_us;       /* deadline from now; 0 = none */
    const rpc_md_t *metadata; /* initial metadata to send (borrowed during the call) */
    bool wait_for_ready;      /* wait for the channel to connect instead of failing fast */
    rpc_md_t *trailers_out;   /* unary only: receives the server's trailing metadata */
} rpc_call_opts_t;

/* Blocking unary call of method with request req; on status OK *resp gets the decoded
 * reply of type resp_desc (caller frees it with protobuf_c_message_free_unpacked).
 * Returns LS_OK when the call completed (status says how; check status->code), or
 * LS_ERR_NOMEM / LS_ERR_INTERNAL when it could not be made.  An undecodable reply
 * gives status INTERNAL. */
int rpc_channel_unary(rpc_channel_t *ch, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts_t *opts,
                      ProtobufCMessage **resp, rpc_status_t *status);

/* As rpc_channel_unary with raw request bytes (for tests of undecodable input). */
int rpc_channel_unary_raw(rpc_channel_t *ch, const char *method, const void *data, size_t len,
                          const ProtobufCMessageDescriptor *resp_desc,
                          const rpc_call_opts_t *opts, ProtobufCMessage **resp,
                          rpc_status_t *status);

typedef struct {
    /* Each response in order; msg is borrowed until return. */
    void (*on_message)(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg);
    /* Exactly once, after the last on_message: the stream is over.  trailers is
     * borrowed until return. */
    void (*on_status)(rpc_stream_t *s, void *ud, const rpc_status_t *status,
                      const rpc_md_t *trailers);
} rpc_stream_handler_t;

/* Opens a bidirectional stream of method.  h is copied; ud is borrowed until on_status
 * has returned.  max_write_queue bounds messages waiting to be sent (0 = 4096).
 * Returns the stream (the caller holds one reference: rpc_stream_release) or NULL if
 * the call cannot be created; on NULL no callback runs. */
rpc_stream_t *rpc_stream_open(rpc_channel_t *ch, const char *method,
                              const ProtobufCMessageDescriptor *resp_desc,
                              const rpc_stream_handler_t *h, void *ud,
                              const rpc_call_opts_t *opts, size_t max_write_queue);

/* Queues msg (packed at once; stays the caller's).  Returns LS_OK, LS_ERR_CLOSED after
 * close_send/cancel/end, or LS_ERR_FULL when max_write_queue messages are waiting (the
 * stream stays open: the caller decides what to drop or fail). */
int rpc_stream_send(rpc_stream_t *s, const ProtobufCMessage *msg);

/* As rpc_stream_send with raw bytes. */
int rpc_stream_send_raw(rpc_stream_t *s, const void *data, size_t len);

/* Half-closes after every queued message is sent.  Returns LS_OK or LS_ERR_CLOSED. */
int rpc_stream_close_send(rpc_stream_t *s);

/* Cancels the stream; on_status follows with CANCELLED (unless it already ended). */
void rpc_stream_cancel(rpc_stream_t *s);

/* Messages waiting to be sent. */
size_t rpc_stream_write_queue_len(rpc_stream_t *s);

/* Called on the stream's callback thread after a write completes and leaves at most
 * low_water messages queued (and the stream is neither over nor half-closing), so a
 * producer can refill the queue as it drains instead of retrying on LS_ERR_FULL.  It
 * must not block, may send, close_send or set another drain callback; it can run while
 * the caller's own thread is still sending (the first messages, which only the caller
 * can send), so a producer that does both synchronises them.  fn NULL stops it. */
typedef void (*rpc_stream_drain_fn)(rpc_stream_t *s, void *ud);
void rpc_stream_on_drain(rpc_stream_t *s, size_t low_water, rpc_stream_drain_fn fn, void *ud);

/* True once on_status has been delivered. */
bool rpc_stream_ended(rpc_stream_t *s);

/* Drops the caller's reference from rpc_stream_open.  The stream keeps running (and
 * its callbacks keep coming) until it ends; its memory goes after on_status.  After
 * this the caller must not use s, except from inside its callbacks. */
void rpc_stream_release(rpc_stream_t *s);

#endif
