/*
 * instance.h - an inference instance as servebench sees it: a channel to its address and
 * what Inference.Info says about its model and limits.
 *
 * Not thread-safe: main-thread setup and teardown; the channel itself may be used from
 * any thread.
 */
#ifndef SERVEBENCH_INSTANCE_H
#define SERVEBENCH_INSTANCE_H

#include "rpc/client.h"
#include "rpc/metadata.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *addr; /* host:port, borrowed from the caller */
    rpc_channel_t *ch;
    char model[128];
    char backend[16];
    char device[128];
    uint32_t vocab_size, seq_len, max_batch, max_queue;
    uint64_t kv_budget_tokens;
    bool prefix_cache;
} sb_instance_t;

/* Creates a channel to addr (cfg NULL: plaintext) and asks Info, waiting up to
 * timeout_ms for the instance to answer; md's entries (may be NULL) go with the call.
 * Returns LS_OK, or an error with the reason in err (and nothing to close). */
int sb_instance_open(sb_instance_t *in, rpc_client_t *client, const char *addr,
                     const rpc_channel_config_t *cfg, const rpc_md_t *md, int64_t timeout_ms,
                     char *err, size_t err_len);

/* Prints one line describing the instance after label. */
void sb_instance_print(const sb_instance_t *in, const char *label);

/* Destroys the channel (every stream on it must have been closed).  NULL channel: no-op. */
void sb_instance_close(sb_instance_t *in);

#endif
