/*
 * channel.h - client-side helpers shared by the tests.
 */
#ifndef TEST_CHANNEL_H
#define TEST_CHANNEL_H

#include "rpc/client.h"

#include <stdbool.h>
#include <stdint.h>

/* Connects ch by waiting (up to timeout_ms) for a health Check answered with status OK.
 * A suite calls it in its setup so that no test's first fail-fast call is the one to
 * meet a slow handshake on a loaded machine.  Returns whether the server answered. */
bool test_channel_ready(rpc_channel_t *ch, int64_t timeout_ms);

#endif
