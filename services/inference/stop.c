/*
 * stop.c - stop-string matching over streamed text.
 *
 * Why holding back the longest suffix that is a prefix of a stop string is enough:
 * a stop string that ends inside the new text and starts before it has its first
 * part as a suffix of the old text that is also a prefix of that stop string, and
 * that part is no longer than the held text (the longest such suffix).  So every
 * match lies inside held + new, and text before the held tail can be released.
 */
#include "stop.h"

#include "base/err.h"
#include "base/log.h"

#include <stdio.h>
#include <string.h>

int inf_stop_init(inf_stop_t *s, const char *const *strs, const size_t *lens, size_t n, char *err,
                  size_t err_len)
{
    s->n = 0;
    s->max_len = 0;
    s->n_held = 0;
    s->matched = false;
    if (n > INF_STOP_MAX_STRINGS) {
        snprintf(err, err_len, "too many stop strings: %zu (at most %d)", n, INF_STOP_MAX_STRINGS);
        return LS_ERR_INVALID;
    }
    for (size_t i = 0; i < n; i++) {
        if (lens[i] == 0 || lens[i] > INF_STOP_MAX_BYTES) {
            snprintf(err, err_len, "stop string %zu has %zu bytes (1 to %d allowed)", i, lens[i],
                     INF_STOP_MAX_BYTES);
            s->n = 0;
            s->max_len = 0;
            return LS_ERR_INVALID;
        }
        memcpy(s->strs[i], strs[i], lens[i]);
        s->lens[i] = lens[i];
        if (lens[i] > s->max_len)
            s->max_len = lens[i];
        s->n = (int)i + 1;
    }
    return LS_OK;
}

size_t inf_stop_out_need(const inf_stop_t *s, size_t len)
{
    return s->n_held + len;
}

/* Position of the earliest stop string in t[0..len), or len when there is none. */
static size_t find_first(const inf_stop_t *s, const char *t, size_t len)
{
    for (size_t p = 0; p < len; p++) {
        for (int i = 0; i < s->n; i++) {
            size_t l = s->lens[i];
            if (l <= len - p && t[p] == s->strs[i][0] && memcmp(t + p, s->strs[i], l) == 0)
                return p;
        }
    }
    return len;
}

/* Length of the longest suffix of t[0..len) that is a proper prefix of a stop string. */
static size_t longest_prefix_suffix(const inf_stop_t *s, const char *t, size_t len)
{
    size_t k = s->max_len > 0 ? s->max_len - 1 : 0;
    if (k > len)
        k = len;
    for (; k > 0; k--) {
        for (int i = 0; i < s->n; i++) {
            if (s->lens[i] > k && memcmp(t + len - k, s->strs[i], k) == 0)
                return k;
        }
    }
    return 0;
}

size_t inf_stop_feed(inf_stop_t *s, const char *text, size_t len, char *out, size_t cap,
                     bool *matched)
{
    *matched = s->matched;
    if (s->matched)
        return 0;
    size_t total = s->n_held + len;
    LS_ASSERT(cap >= total);
    memcpy(out, s->held, s->n_held);
    if (len > 0)
        memcpy(out + s->n_held, text, len);
    s->n_held = 0;
    if (s->n == 0)
        return total;
    size_t at = find_first(s, out, total);
    if (at < total) {
        s->matched = true;
        *matched = true;
        return at;
    }
    size_t keep = longest_prefix_suffix(s, out, total);
    memcpy(s->held, out + total - keep, keep);
    s->n_held = keep;
    return total - keep;
}

size_t inf_stop_flush(inf_stop_t *s, char *out, size_t cap)
{
    size_t n = s->matched ? 0 : s->n_held;
    LS_ASSERT(cap >= n);
    memcpy(out, s->held, n);
    s->n_held = 0;
    return n;
}
