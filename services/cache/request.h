/*
 * request.h - checks a CacheRequest from the network before anything uses it.
 *
 * Every field that is hostile in principle is checked here: presence, UTF-8, lengths,
 * counts, ranges and the allowed-model list.  A failure gives the gRPC code the
 * request is answered with and a one-line reason.  Codes:
 *   INVALID_ARGUMENT  missing or malformed fields, empty prompt, out-of-range sampling
 *                     parameters, a prompt over max_key_bytes, negative token ids
 *   NOT_FOUND         a model not in the allowed list (when one is configured)
 * Thread-safe (pure functions).
 */
#ifndef CACHE_REQUEST_H
#define CACHE_REQUEST_H

#include "cache/cache_key.h"
#include "llmserve/v1/cache.pb-c.h"

#include <grpc/status.h>
#include <stdbool.h>
#include <stddef.h>

#define REQUEST_MAX_NAME_BYTES 256 /* tenant and model */
#define REQUEST_MAX_MESSAGES 1024  /* chat turns in a key */
#define REQUEST_MAX_STOP 8         /* as common.proto */
#define REQUEST_MAX_STOP_BYTES 256

typedef struct {
    size_t max_key_bytes;      /* prompt, or all message contents together */
    const char *const *models; /* allowed models; n_models == 0 means any */
    size_t n_models;
} request_limits_t;

/* A CacheKey turned into what libs/cache hashes; points into the message it came
 * from (borrowed: valid while that message is). */
typedef struct {
    cache_key_input_t in;
    cache_msg_t *msgs; /* owned */
} request_key_t;

/* Checks req as a whole (kind set, every field of the kind).  Returns GRPC_STATUS_OK
 * or the code to answer with, the reason written to err. */
grpc_status_code request_check(const request_limits_t *lim, const Llmserve__V1__CacheRequest *req,
                               char *err, size_t err_len);

/* Converts a checked key.  Returns GRPC_STATUS_OK or RESOURCE_EXHAUSTED when memory for
 * the message list runs out.  Free with request_key_clear. */
grpc_status_code request_key_make(const Llmserve__V1__CacheKey *key, request_key_t *out);

void request_key_clear(request_key_t *k);


#endif
