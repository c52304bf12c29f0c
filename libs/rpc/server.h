/*
 * server.h - a gRPC server over the C core with unary and bidirectional-stream
 * handlers, per-call ordered write queues, health, and graceful shutdown.
 *
 * Life of a server:
 *   rpc_server_create -> rpc_server_listen (one or more ports) -> rpc_server_add_method
 *   (any number) -> rpc_server_start -> ... -> rpc_server_shutdown -> rpc_server_destroy.
 *
 * Threads.  The server polls `threads` completion queues, one thread each.  A call is
 * bound to one queue, so all callbacks of one call run on one thread, one at a time,
 * in order.  Callbacks must not block (no sleeping, no memcached, no CUDA sync): hand
 * slow work to a thread of your own and answer from there.  rpc_call_send,
 * rpc_call_reply, rpc_call_finish, rpc_call_cancel, rpc_call_ref/unref and the
 * getters are safe from any thread at any time, including from inside callbacks.
 *
 * Life of a call, as its handler sees it:
 *   on_start                   once, first; returns the handler's per-call state
 *   on_message                 each request message, in order (unary: exactly one)
 *   on_half_close              streams only: the client will send nothing more
 *   on_cancel                  at most once: cancelled by the client, its deadline, a
 *                              disconnect, write-queue overflow or server shutdown
 *   on_done                    exactly once, last: free the state here
 * Any callback pointer may be NULL.  The handler ends a call with rpc_call_finish (or
 * rpc_call_reply for unary) exactly once unless on_cancel came first; a call the
 * handler never finishes lives until its deadline or its client goes away.
 *
 * Reading is paced by the handler: the next message is read only after on_message
 * returns, so a fast client cannot pile up unbounded input in the server.
 * Writing is queued: rpc_call_send never blocks; messages go out in call order, one
 * at a time.  When a slow reader lets more than max_write_queue messages (or
 * max_write_queue_bytes) pile up, the call is cancelled with RESOURCE_EXHAUSTED and
 * its queue dropped, so memory stays bounded.
 *
 * Undecodable request bytes end that call with INVALID_ARGUMENT (the handler sees
 * on_cancel, then on_done); the connection and other calls are unaffected.  Unknown
 * methods get UNIMPLEMENTED at once.
 */
#ifndef RPC_SERVER_H
#define RPC_SERVER_H

#include "rpc/metadata.h"

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rpc_server rpc_server_t;
typedef struct rpc_call rpc_call_t;

/* Health status values, as grpc.health.v1.HealthCheckResponse.ServingStatus. */
typedef enum {
    RPC_HEALTH_UNKNOWN = 0,
    RPC_HEALTH_SERVING = 1,
    RPC_HEALTH_NOT_SERVING = 2,
} rpc_health_status_t;

typedef struct {
    int threads;                  /* completion-queue threads; default 0 = online cores */
    size_t max_write_queue;       /* queued messages per call; default 4096 */
    size_t max_write_queue_bytes; /* queued bytes per call; default 16 MiB */
    int max_recv_message_bytes;   /* largest request message; default 4 MiB */
    const char *name;             /* for logs and thread names; default "rpc" */
    rpc_health_status_t initial_health; /* of every service at registration and of the
                                           whole server at start; default SERVING (a
                                           server that loads first starts NOT_SERVING) */
} rpc_server_config_t;

/* Fills cfg with the defaults above. */
void rpc_server_config_init(rpc_server_config_t *cfg);

/* TLS for a listening port; files are PEM.  With client_ca_file set, clients must
 * present a certificate signed by it (mutual TLS).  The files are checked when the port
 * is bound (a key that does not match the certificate is refused there, not at the
 * first handshake) and read again by rpc_server_reload_tls. */
typedef struct {
    const char *cert_file;
    const char *key_file;
    const char *client_ca_file; /* NULL: no client certificate asked */
} rpc_tls_server_t;

typedef enum {
    RPC_UNARY,  /* one request, one response */
    RPC_STREAM, /* any number each way; also serves server-streaming methods */
} rpc_kind_t;

typedef struct {
    /* Returns the per-call state handed to the other callbacks (NULL is fine). */
    void *(*on_start)(rpc_call_t *call, void *method_ctx);
    /* msg is borrowed until the callback returns and is of the method's request type. */
    void (*on_message)(rpc_call_t *call, void *state, const ProtobufCMessage *msg);
    void (*on_half_close)(rpc_call_t *call, void *state);
    void (*on_cancel)(rpc_call_t *call, void *state);
    void (*on_done)(rpc_call_t *call, void *state);
} rpc_handler_t;

/* Creates a server (not yet listening).  cfg may be NULL for defaults.  Calls
 * grpc_init; the matching grpc_shutdown happens in rpc_server_destroy.  Returns NULL
 * if gRPC cannot create the server. */
rpc_server_t *rpc_server_create(const rpc_server_config_t *cfg);

/* Binds addr ("host:port", port 0 picks a free one); tls NULL means plaintext.  Before
 * rpc_server_start.  Returns LS_OK and the bound port in *port (may be NULL), or
 * LS_ERR_IO when the address cannot be bound or LS_ERR_INVALID when the TLS files
 * cannot be read or do not hold a certificate and its key (the reason is logged). */
int rpc_server_listen(rpc_server_t *srv, const char *addr, const rpc_tls_server_t *tls,
                      int *port);

/* Registers method path "/package.Service/Method" with request type req, handler h (copied)
 * and method_ctx (borrowed for the server's life).  Before rpc_server_start.  The service
 * name is added to health as SERVING.  Returns LS_OK, LS_ERR_EXISTS or LS_ERR_INVALID. */
int rpc_server_add_method(rpc_server_t *srv, const char *path, rpc_kind_t kind,
                          const ProtobufCMessageDescriptor *req, const rpc_handler_t *h,
                          void *method_ctx);

/* Reads every TLS port's files again (certificate rotation, e.g. on SIGHUP): when all of
 * them are good, new handshakes use them (connections already up keep theirs); when any
 * is not, nothing changes.  Thread-safe.  Returns LS_OK (also when no port uses TLS) or
 * LS_ERR_INVALID with a one-line reason in err. */
int rpc_server_reload_tls(rpc_server_t *srv, char *err, size_t err_len);

/* Checks TLS files as rpc_server_listen and rpc_channel_create will (any may be NULL;
 * a certificate needs its key): for a configuration check at start that names the
 * problem.  Returns LS_OK, or LS_ERR_INVALID with a one-line reason in err. */
int rpc_tls_check_files(const char *cert_file, const char *key_file, const char *ca_file,
                        char *err, size_t err_len);

/* Longest principal an authorizer may give a call, NUL included. */
#define RPC_PRINCIPAL_MAX 128

/* Decides whether call may proceed, from its method and metadata (rpc_call_method,
 * rpc_call_metadata).  Returns GRPC_STATUS_OK to let it in, with what the caller is
 * (e.g. the tenant an API key is bound to; "" for nothing) written into principal; or
 * the status to end it with (UNAUTHENTICATED, PERMISSION_DENIED), with details for
 * the client in why.  Runs on a completion-queue thread for each new call before any
 * handler callback, so it must not block; a refused call never reaches the handler. */
typedef grpc_status_code (*rpc_auth_fn)(void *ud, const rpc_call_t *call, char *principal,
                                        size_t principal_len, char *why, size_t why_len);

/* Puts fn in front of every method except grpc.health.v1.Health (probes carry no
 * credentials), unknown methods included.  Before rpc_server_start; ud is borrowed for
 * the server's life. */
void rpc_server_set_auth(rpc_server_t *srv, rpc_auth_fn fn, void *ud);

/* Hears about every call once it is over: method is the path as registered
 * ("(unknown)" for a method nobody registered, so that clients cannot invent names), code
 * the status the call ended with as its client sees it: the one it was finished with
 * (rpc_call_finish, rpc_call_reply, the authorizer's refusal, UNIMPLEMENTED); the one
 * given to rpc_call_cancel (INVALID_ARGUMENT for undecodable input, RESOURCE_EXHAUSTED
 * for a write-queue overflow); otherwise, for a call cancelled by its client, a
 * disconnect or the server's shutdown, DEADLINE_EXCEEDED when its deadline had passed
 * or was less than 100 ms away (the client's copy of the deadline passes first, by the
 * time the call took to arrive) and CANCELLED when not.  Runs on the call's completion-queue thread just before the
 * handler's on_done, for every call: it must be cheap and must not block. */
typedef void (*rpc_call_observer_fn)(void *ud, const char *method, grpc_status_code code);

/* Sets the one call observer (fn NULL: none).  Before rpc_server_start; ud is borrowed for
 * the server's life. */
void rpc_server_set_call_observer(rpc_server_t *srv, rpc_call_observer_fn fn, void *ud);

/* Starts serving (grpc.health.v1.Health included).  Returns LS_OK, LS_ERR_INVALID when
 * no port was bound, or LS_ERR_INTERNAL. */
int rpc_server_start(rpc_server_t *srv);

/* Sets the health of service ("" is the whole server) and notifies Watch streams.
 * Thread-safe.  Returns LS_OK or LS_ERR_CLOSED after shutdown began. */
int rpc_server_set_health(rpc_server_t *srv, const char *service, rpc_health_status_t status);

/* Sets the health of every registered service and of the whole server ("") at once,
 * and notifies Watch streams.  Thread-safe.  Returns LS_OK or LS_ERR_CLOSED. */
int rpc_server_set_health_all(rpc_server_t *srv, rpc_health_status_t status);

/* Stops accepting calls and marks health NOT_SERVING; calls in flight may finish for
 * grace_ms, after which the rest are cancelled; returns when every call has seen
 * on_done and every thread is joined.  Thread-safe; later calls return at once. */
void rpc_server_shutdown(rpc_server_t *srv, int64_t grace_ms);

/* True once rpc_server_shutdown has begun (for handlers that want to stop early). */
bool rpc_server_draining(const rpc_server_t *srv);

/* Shuts down with no grace if still running, then frees everything.  NULL is a no-op. */
void rpc_server_destroy(rpc_server_t *srv);

/* ---- calls -------------------------------------------------------------- */

/* Queues msg (packed at once; msg stays the caller's) for the client.  Returns LS_OK;
 * LS_ERR_CLOSED when the call is over, cancelled or already finished; LS_ERR_FULL when
 * the write queue overflowed (the call is then cancelled with RESOURCE_EXHAUSTED). */
int rpc_call_send(rpc_call_t *call, const ProtobufCMessage *msg);

/* As rpc_call_send with a message already packed: len bytes at data (copied). */
int rpc_call_send_raw(rpc_call_t *call, const void *data, size_t len);

/* Unary calls: sends msg and status OK in one batch.  Same returns as rpc_call_send,
 * plus LS_ERR_EXISTS when the call was already finished. */
int rpc_call_reply(rpc_call_t *call, const ProtobufCMessage *msg);

/* Ends the call with code and details (copied; may be NULL) after every queued message
 * has been written.  Returns LS_OK, LS_ERR_EXISTS when already finished, LS_ERR_CLOSED
 * when the call is over (ended before it was finished, or past on_done, which wins over
 * "already finished" so that a call kept with rpc_call_ref always says CLOSED). */
int rpc_call_finish(rpc_call_t *call, grpc_status_code code, const char *details);

/* Adds trailing metadata sent with the status (copied).  Before rpc_call_finish.
 * Returns LS_OK, LS_ERR_INVALID for a bad key, LS_ERR_EXISTS after finishing. */
int rpc_call_add_trailer(rpc_call_t *call, const char *key, const char *value);

/* Asks the client to wait ms milliseconds before retrying: the `grpc-retry-pushback-ms`
 * trailer (gRFC A6), which gRPC clients with a retry policy honour, sent with the status
 * (set it before rpc_call_finish; the one reserved key a server may set).  Returns LS_OK,
 * LS_ERR_EXISTS after finishing. */
int rpc_call_set_retry_pushback(rpc_call_t *call, uint32_t ms);

/* Cancels the call with code and details; the client sees that status. */
void rpc_call_cancel(rpc_call_t *call, grpc_status_code code, const char *details);

/* Keeps call's memory valid past on_done for a thread that may still use it; every
 * ref needs one unref.  The call functions above stay safe on such a call and return
 * LS_ERR_CLOSED once it is over. */
void rpc_call_ref(rpc_call_t *call);
void rpc_call_unref(rpc_call_t *call);

/* What the authorizer said the caller is (borrowed for the call's life); "" when no
 * authorizer is set or it said nothing. */
const char *rpc_call_principal(const rpc_call_t *call);

/* The client's initial metadata (borrowed for the call's life). */
const rpc_md_t *rpc_call_metadata(const rpc_call_t *call);

/* Microseconds left until the call's deadline; INT64_MAX when it has none; <= 0
 * once it has passed. */
int64_t rpc_call_remaining_us(const rpc_call_t *call);

/* The method path, e.g. "/llmserve.v1.Router/Generate" (borrowed). */
const char *rpc_call_method(const rpc_call_t *call);

/* The client's address as gRPC names it, e.g. "ipv4:127.0.0.1:5000" (borrowed). */
const char *rpc_call_peer(const rpc_call_t *call);

/* True once the call was cancelled (any cause). */
bool rpc_call_cancelled(const rpc_call_t *call);

/* Messages waiting in the write queue (not counting the one being written): a producer
 * can slow down before the bound is hit. */
size_t rpc_call_write_queue_len(const rpc_call_t *call);

/* Called on the call's completion-queue thread after a write completes and leaves at
 * most low_water messages queued (and the call is neither over nor finishing), so a
 * producer can refill the queue as it drains: no thread of its own, no polling, and
 * never past the write-queue bound.  It runs like the call's other callbacks (one at
 * a time, must not block) and may send, finish or set another drain callback.  Only
 * completed writes trigger it: a producer sends its first messages itself.  fn NULL
 * stops it. */
typedef void (*rpc_drain_fn)(rpc_call_t *call, void *ud);
void rpc_call_on_drain(rpc_call_t *call, size_t low_water, rpc_drain_fn fn, void *ud);

/* The server the call arrived on. */
rpc_server_t *rpc_call_server(const rpc_call_t *call);

#endif
