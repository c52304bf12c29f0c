/*
 * prefix.c - the prefix key of a request (FNV-1a over its first bytes).
 */
#include "prefix.h"

#include <string.h>

typedef struct {
    uint64_t h;
    size_t left; /* bytes still to hash */
    size_t fed;
} fnv_t;

static void feed(fnv_t *f, const void *data, size_t n)
{
    const unsigned char *b = data;
    if (n > f->left)
        n = f->left;
    for (size_t i = 0; i < n; i++) {
        f->h ^= b[i];
        f->h *= 1099511628211ULL;
    }
    f->left -= n;
    f->fed += n;
}

uint64_t router_prefix_key(const Llmserve__V1__GenerateSubmit *s, size_t max_bytes)
{
    if (max_bytes == 0)
        return 0;
    fnv_t f = {1469598103934665603ULL, max_bytes, 0};
    if (s->prompt && s->prompt[0]) {
        feed(&f, s->prompt, strlen(s->prompt));
    } else {
        for (size_t i = 0; i < s->n_messages && f.left; i++) {
            const Llmserve__V1__ChatMessage *m = s->messages[i];
            /* The role as one byte and a separator after the content, so that "ab"+"c"
             * and "a"+"bc" differ. */
            unsigned char role = (unsigned char)m->role;
            feed(&f, &role, 1);
            feed(&f, m->content, strlen(m->content));
            feed(&f, "\n", 1);
            if (m->role == LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER)
                break;
        }
    }
    if (f.fed == 0)
        return 0;
    return f.h ? f.h : 1;
}
