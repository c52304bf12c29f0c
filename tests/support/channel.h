/*
 * channel.h - client-side helpers shared by the tests.
 */
#ifndef TEST_CHANNEL_H
#define TEST_CHANNEL_H

#include "rpc/client.h"

#include <stdbool.h>
#include <stdint.h>

/* Creates a channel on client to 127.0.0.1:port with cfg (NULL = plaintext with
 * defaults).  Returns it (the caller destroys it with rpc_channel_destroy), or NULL as
 * rpc_channel_create does. */
rpc_channel_t *test_channel_to(rpc_client_t *client, int port, const rpc_channel_config_t *cfg);

/* Connects ch by waiting (up to timeout_ms) for a health Check answered with status OK.
 * A suite calls it in its setup so that no test's first fail-fast call is the one to
 * meet a slow handshake on a loaded machine.  Returns whether the server answered. */
bool test_channel_ready(rpc_channel_t *ch, int64_t timeout_ms);

/* A channel configuration for TLS trusting ca, with a client certificate and key for
 * mutual TLS (cert and key may be NULL; ca NULL is TLS with the system's roots). */
rpc_channel_config_t test_tls_config(const char *ca, const char *cert, const char *key);

/* One unary call of method with req on a client and channel of its own to
 * "localhost:port" (so a certificate for localhost verifies), deadline 20 s: a fresh
 * connection and handshake every time (own_connections), never one gRPC kept from an
 * earlier call.  Returns the call's status code; the decoded
 * reply of type resp_desc goes to *resp (the caller frees it) when resp is not NULL,
 * else it is dropped. */
int test_unary_once(int port, const rpc_channel_config_t *cfg, const char *method,
                    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                    ProtobufCMessage **resp);

#endif
