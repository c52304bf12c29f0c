/*
 * chat.h - renders chat messages into one prompt with the Llama 2 chat template.
 *
 *   [INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user 1} [/INST] {assistant 1} [INST] {user 2} [/INST]
 *
 * Rules: at most one system message, and only first; its block goes inside the first
 * [INST] (with an empty user turn when no user message follows it directly).  Each
 * user message becomes "[INST] {content} [/INST]", each assistant message " {content}",
 * and a user turn after an assistant turn is separated by one space.  Roles may come
 * in any order after the system message; the model writes what follows the last one
 * (after a user turn: the next assistant turn; after an assistant turn: more of it).
 * The result is plain text, tokenized like any prompt (one BOS in front).
 * Thread-safe.
 */
#ifndef INF_CHAT_H
#define INF_CHAT_H

#include "llmserve/v1/common.pb-c.h"

#include <stddef.h>

/* Renders msgs[0..n) (n >= 1).  On LS_OK *out is a NUL-terminated string of *out_len
 * bytes (caller owns it; free with free()).  Returns LS_ERR_INVALID with a reason in
 * err for a message with no role (or an unknown one), a system message that is not
 * first, or content that is not UTF-8; LS_ERR_NOMEM when the text cannot be
 * allocated.  On error *out is untouched. */
int inf_chat_render(Llmserve__V1__ChatMessage *const *msgs, size_t n, char **out, size_t *out_len,
                    char *err, size_t err_len);

#endif
