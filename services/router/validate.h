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

/* Resolves a request's class: asked is GenerateSubmit.priority, key_class the class of
 * the caller's API key (llmserve.v1.Priority numbers; 0 = the key names none, or no keys
 * are configured).  Unspecified asks for the key's class, else NORMAL.  A key's class
 * is a ceiling: a request may ask for it or a lower class (a higher number), never a
 * higher one.  Returns LS_OK with the class (1 to 3) in *resolved, or LS_ERR_INVALID
 * with a one-line reason in msg (len bytes) for an INVALID_ARGUMENT status: an unknown
 * value, or a class above the key's. */
int router_validate_priority(int asked, int key_class, int *resolved, char *msg, size_t len);

#endif
