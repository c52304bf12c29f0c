/*
 * validate.h - the checks a GenerateSubmit must pass before the router works on it.
 *
 * Everything the router can decide from the message alone: ids, the prompt/messages
 * rule, roles, UTF-8, sampling ranges, stop strings, sizes, the cache policy.  Whether
 * the model hint names a pool and whether the prompt fits the model's context are
 * decided later (by the pools and by the inference instance).  Thread-safe.
 */
#ifndef ROUTER_VALIDATE_H
#define ROUTER_VALIDATE_H

#include "llmserve/v1/router.pb-c.h"

#include <stdbool.h>
#include <stddef.h>

#define ROUTER_MAX_ID_BYTES 128
#define ROUTER_MAX_CONVERSATION_BYTES 128
#define ROUTER_MAX_TENANT_BYTES 64
#define ROUTER_MAX_STOP 8
#define ROUTER_MAX_STOP_BYTES 256
#define ROUTER_MAX_MESSAGES 1024


/* Checks s; id_required is false for Complete (request_id optional there).  max_prompt_bytes
 * bounds the prompt plus every message's content.  Returns LS_OK, or LS_ERR_INVALID with a
 * one-line reason in msg (len bytes) suitable for an INVALID_ARGUMENT status. */
int router_validate_submit(const Llmserve__V1__GenerateSubmit *s, bool id_required,
                           size_t max_prompt_bytes, char *msg, size_t len);

#endif
