/*
 * metadata.h - gRPC metadata as an owned list of key/value pairs.
 *
 * Keys are lowercase ASCII (gRPC rejects others); values are bytes with a length and
 * always also NUL-terminated, so text values can be used as C strings.  Binary values
 * go under keys ending in "-bin".  Not thread-safe.
 */
#ifndef RPC_METADATA_H
#define RPC_METADATA_H

#include <grpc/grpc.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *key;
    char *value;
    size_t value_len;
} rpc_md_entry_t;

typedef struct {
    rpc_md_entry_t *items;
    size_t count;
    size_t cap;
} rpc_md_t;

#define RPC_MD_INIT {NULL, 0, 0}

/* Adds a copy of key and value.  Returns LS_OK, or LS_ERR_INVALID when the key is empty,
 * not lowercase [a-z0-9-_.] or a reserved "grpc-" / ":" key. */
int rpc_md_add(rpc_md_t *md, const char *key, const char *value);
int rpc_md_add_bytes(rpc_md_t *md, const char *key, const void *value, size_t len);

/* Returns the first value under key (borrowed from md), or NULL; *len gets its length
 * when len is not NULL. */
const char *rpc_md_get(const rpc_md_t *md, const char *key, size_t *len);

/* Frees every entry; md can be reused afterwards. */
void rpc_md_clear(rpc_md_t *md);

/* Internal: copies a received grpc_metadata_array into md (adds to it). */
void rpc__md_from_grpc(rpc_md_t *md, const grpc_metadata_array *arr);

/* Internal: makes a grpc_metadata array viewing md's entries; the caller frees the array
 * with gpr_free and unrefs nothing (the slices are static views of md, which must outlive
 * the batch that sends them).  Returns NULL when md is empty. */
grpc_metadata *rpc__md_to_grpc(const rpc_md_t *md, size_t *count);

/* Adds a copy of key and value with no check of the key: for the reserved "grpc-" keys
 * the library itself sends (rpc_call_set_retry_pushback). */
void rpc__md_add_reserved(rpc_md_t *md, const char *key, const char *value);

#endif
