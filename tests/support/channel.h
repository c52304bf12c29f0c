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

#endif
