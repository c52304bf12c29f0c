#include "chat.h"

#include "base/err.h"
#include "base/log.h"
#include "base/utf8.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYS_OPEN "<<SYS>>\n"
#define SYS_CLOSE "\n<</SYS>>\n\n"
#define INST_OPEN "[INST] "
#define INST_CLOSE " [/INST]"

/* Appends s (len bytes) at *at in buf when buf is not NULL; always advances *at, so a
 * first pass with buf NULL measures. */
static void put(char *buf, size_t *at, const char *s, size_t len)
{
    if (buf)
        memcpy(buf + *at, s, len);
    *at += len;
}

static void put_str(char *buf, size_t *at, const char *s)
{
    put(buf, at, s, strlen(s));
}

/* One pass of rendering; returns the length.  Messages are already validated. */
static size_t render(Llmserve__V1__ChatMessage *const *msgs, size_t n, char *buf)
{
    size_t at = 0;
    const char *sys = NULL;
    for (size_t i = 0; i < n; i++) {
        const Llmserve__V1__ChatMessage *m = msgs[i];
        const char *content = m->content ? m->content : "";
        switch (m->role) {
        case LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_SYSTEM:
            sys = content;
            break;
        case LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER:
            if (at > 0)
                put_str(buf, &at, " ");
            put_str(buf, &at, INST_OPEN);
            if (sys) {
                put_str(buf, &at, SYS_OPEN);
                put_str(buf, &at, sys);
                put_str(buf, &at, SYS_CLOSE);
                sys = NULL;
            }
            put_str(buf, &at, content);
            put_str(buf, &at, INST_CLOSE);
            break;
        default: /* assistant */
            if (sys) {
                put_str(buf, &at, INST_OPEN SYS_OPEN);
                put_str(buf, &at, sys);
                put_str(buf, &at, SYS_CLOSE INST_CLOSE);
                sys = NULL;
            }
            put_str(buf, &at, " ");
            put_str(buf, &at, content);
            break;
        }
    }
    if (sys) {
        put_str(buf, &at, INST_OPEN SYS_OPEN);
        put_str(buf, &at, sys);
        put_str(buf, &at, SYS_CLOSE INST_CLOSE);
    }
    return at;
}

int inf_chat_render(Llmserve__V1__ChatMessage *const *msgs, size_t n, char **out, size_t *out_len,
                    char *err, size_t err_len)
{
    if (n == 0) {
        snprintf(err, err_len, "no chat messages");
        return LS_ERR_INVALID;
    }
    for (size_t i = 0; i < n; i++) {
        const Llmserve__V1__ChatMessage *m = msgs[i];
        switch (m->role) {
        case LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_SYSTEM:
            if (i != 0) {
                snprintf(err, err_len, "message %zu: a system message may only come first", i);
                return LS_ERR_INVALID;
            }
            break;
        case LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER:
        case LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_ASSISTANT:
            break;
        default:
            snprintf(err, err_len, "message %zu: role %d is not system, user or assistant", i,
                     (int)m->role);
            return LS_ERR_INVALID;
        }
        const char *content = m->content ? m->content : "";
        if (!ls_utf8_valid(content, strlen(content))) {
            snprintf(err, err_len, "message %zu: content is not valid UTF-8", i);
            return LS_ERR_INVALID;
        }
    }
    size_t len = render(msgs, n, NULL);
    char *buf = malloc(len + 1);
    if (!buf) {
        snprintf(err, err_len, "out of memory rendering %zu chat messages", n);
        return LS_ERR_NOMEM;
    }
    size_t wrote = render(msgs, n, buf);
    LS_ASSERT(wrote == len);
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return LS_OK;
}
