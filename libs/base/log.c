#define _POSIX_C_SOURCE 200809L
#include "log.h"

#include "utf8.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* -1 until the first call reads LLMSERVE_LOG_LEVEL / LLMSERVE_LOG_FORMAT. */
static atomic_int g_level = -1;
static atomic_int g_format = -1;
static atomic_int g_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

bool ls_log_parse_level(const char *name, ls_log_level_t *out)
{
    for (int i = 0; i <= LS_LOG_OFF; i++) {
        if (name && strcasecmp(name, level_names[i]) == 0) {
            *out = (ls_log_level_t)i;
            return true;
        }
    }
    return false;
}

ls_log_level_t ls_log_get_level(void)
{
    int level = atomic_load(&g_level);
    if (level < 0) {
        ls_log_level_t parsed = LS_LOG_INFO;
        const char *env = getenv("LLMSERVE_LOG_LEVEL");
        if (env && !ls_log_parse_level(env, &parsed))
            parsed = LS_LOG_INFO;
        int expected = -1;
        atomic_compare_exchange_strong(&g_level, &expected, (int)parsed);
        level = atomic_load(&g_level);
    }
    return (ls_log_level_t)level;
}

void ls_log_set_level(ls_log_level_t level)
{
    atomic_store(&g_level, (int)level);
}

bool ls_log_parse_format(const char *name, ls_log_format_t *out)
{
    if (name && strcasecmp(name, "text") == 0) {
        *out = LS_LOG_TEXT;
        return true;
    }
    if (name && strcasecmp(name, "json") == 0) {
        *out = LS_LOG_JSON;
        return true;
    }
    return false;
}

static ls_log_format_t get_format(void)
{
    int f = atomic_load(&g_format);
    if (f < 0) {
        ls_log_format_t parsed = LS_LOG_TEXT;
        const char *env = getenv("LLMSERVE_LOG_FORMAT");
        if (env && !ls_log_parse_format(env, &parsed))
            parsed = LS_LOG_TEXT;
        int expected = -1;
        atomic_compare_exchange_strong(&g_format, &expected, (int)parsed);
        f = atomic_load(&g_format);
    }
    return (ls_log_format_t)f;
}

void ls_log_set_format(ls_log_format_t format)
{
    atomic_store(&g_format, (int)format);
}

void ls_log_set_fd(int fd)
{
    atomic_store(&g_fd, fd);
}

/* ---- JSON lines -------------------------------------------------------------------- */

/* A bounded writer: once full it writes nothing more, and `room` keeps space for the
 * closing bytes so the object always ends well formed. */
typedef struct {
    char *buf;
    size_t len, cap;
    bool full;
} jw_t;

static void jw_raw(jw_t *w, const char *s, size_t n)
{
    if (w->full || w->len + n > w->cap) {
        w->full = true;
        return;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

/* s[0..n) as a JSON string body: quotes, backslashes and control bytes escaped; bytes
 * that are not UTF-8 become U+FFFD.  Stops at a character boundary when full. */
static void jw_escaped(jw_t *w, const char *s, size_t n)
{
    for (size_t i = 0; i < n && !w->full;) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            jw_raw(w, esc, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            jw_raw(w, esc, 6);
            i++;
        } else if (c < 0x80) {
            jw_raw(w, (const char *)&s[i], 1);
            i++;
        } else {
            size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            if (i + len <= n && ls_utf8_valid(s + i, len)) {
                jw_raw(w, s + i, len);
                i += len;
            } else {
                jw_raw(w, "\xef\xbf\xbd", 3);
                i++;
            }
        }
    }
}

/* "key":"value" (after a comma unless first).  A field that does not fit is dropped
 * whole, except when cut_ok: then its value is cut and the string still closed. */
static void jw_field(jw_t *w, const char *key, size_t key_len, const char *val, size_t val_len,
                     bool first, bool cut_ok)
{
    size_t mark = w->len;
    jw_raw(w, first ? "\"" : ",\"", first ? 1 : 2);
    jw_escaped(w, key, key_len);
    jw_raw(w, "\":\"", 3);
    size_t value_at = w->len;
    jw_escaped(w, val, val_len);
    jw_raw(w, "\"", 1);
    if (!w->full)
        return;
    if (cut_ok && value_at > mark && w->len >= value_at) {
        w->buf[w->len++] = '"'; /* the writer kept a byte for this */
        return;
    }
    w->len = mark;
}

static bool key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

typedef struct {
    const char *key, *val;
    size_t key_len, val_len;
    bool quoted;
} kv_t;

/* Parses "text k=v k2=\"v 2\"" into text and fields; false when the message does not
 * have that shape (a word that is not a field after the first field, an open quote). */
static bool split_fields(const char *m, size_t n, size_t *text_len, kv_t *kv, size_t *n_kv,
                         size_t max_kv)
{
    size_t i = 0, text_end = 0;
    bool in_fields = false;
    *n_kv = 0;
    while (i < n) {
        while (i < n && m[i] == ' ')
            i++;
        if (i >= n)
            break;
        size_t k = i;
        while (k < n && key_char(m[k]))
            k++;
        bool is_field = k > i && k < n && m[k] == '=';
        if (!is_field) {
            if (in_fields)
                return false;
            while (i < n && m[i] != ' ')
                i++;
            text_end = i;
            continue;
        }
        if (*n_kv == max_kv)
            return false;
        kv_t *f = &kv[(*n_kv)++];
        f->key = m + i;
        f->key_len = k - i;
        size_t v = k + 1;
        if (v < n && m[v] == '"') {
            size_t e = v + 1;
            while (e < n && m[e] != '"')
                e += m[e] == '\\' && e + 1 < n ? 2 : 1;
            if (e >= n)
                return false;
            f->val = m + v + 1;
            f->val_len = e - v - 1;
            f->quoted = true;
            i = e + 1;
            if (i < n && m[i] != ' ')
                return false;
        } else {
            size_t e = v;
            while (e < n && m[e] != ' ')
                e++;
            f->val = m + v;
            f->val_len = e - v;
            f->quoted = false;
            i = e;
        }
        in_fields = true;
    }
    *text_len = text_end;
    return true;
}

/* A quoted value's body without its \" and \\ escapes, into out (cap bytes). */
static size_t unescape(const char *v, size_t n, char *out, size_t cap)
{
    size_t w = 0;
    for (size_t i = 0; i < n && w < cap; i++) {
        if (v[i] == '\\' && i + 1 < n && (v[i + 1] == '"' || v[i + 1] == '\\'))
            i++;
        out[w++] = v[i];
    }
    return w;
}

static size_t format_json(char *out, size_t cap, const char *ts, const char *level, const char *mod,
                          const char *msg, size_t msg_len)
{
    jw_t w = {out, 0, cap - 3, false}; /* room for a cut string's quote and "}\n" */
    jw_raw(&w, "{", 1);
    jw_field(&w, "ts", 2, ts, strlen(ts), true, false);
    jw_field(&w, "level", 5, level, strlen(level), false, false);
    jw_field(&w, "mod", 3, mod, strlen(mod), false, true);
    kv_t kv[64];
    size_t n_kv = 0, text_len = msg_len;
    if (!split_fields(msg, msg_len, &text_len, kv, &n_kv, 64)) {
        n_kv = 0;
        text_len = msg_len;
    }
    jw_field(&w, "msg", 3, msg, text_len, false, true);
    for (size_t i = 0; i < n_kv && !w.full; i++) {
        char key[80];
        size_t kl = kv[i].key_len < 64 ? kv[i].key_len : 64;
        bool reserved = (kl == 2 && !memcmp(kv[i].key, "ts", 2)) ||
                        (kl == 5 && !memcmp(kv[i].key, "level", 5)) ||
                        (kl == 3 && (!memcmp(kv[i].key, "mod", 3) || !memcmp(kv[i].key, "msg", 3)));
        size_t at = 0;
        if (reserved)
            key[at++] = '_';
        memcpy(key + at, kv[i].key, kl);
        char val[LS_LOG_LINE_MAX];
        size_t vl = kv[i].quoted
                        ? unescape(kv[i].val, kv[i].val_len, val, sizeof(val))
                        : (size_t)snprintf(val, sizeof(val), "%.*s", (int)kv[i].val_len, kv[i].val);
        if (vl >= sizeof(val))
            vl = sizeof(val) - 1;
        jw_field(&w, key, at + kl, val, vl, false, false);
    }
    out[w.len++] = '}';
    out[w.len++] = '\n';
    return w.len;
}

void ls_log(ls_log_level_t level, const char *mod, const char *fmt, ...)
{
    if (level < ls_log_get_level() || level >= LS_LOG_OFF)
        return;

    char line[LS_LOG_LINE_MAX];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[96]; /* 27 bytes; room for any int the compiler cannot bound */
    snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);
    bool json = get_format() == LS_LOG_JSON;
    int n = json ? 0
                 : snprintf(line, sizeof(line), "%s level=%s mod=%s ", stamp, level_names[level],
                            mod ? mod : "-");
    /* snprintf answers the length it wanted: a header that alone fills the buffer
     * (a very long mod) must not leave the message a negative size. */
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof(line) - 2)
        n = (int)(sizeof(line) - 2);
    int m = 0;
    if ((size_t)n < sizeof(line) - 2) {
        va_list ap;
        va_start(ap, fmt);
        m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
        va_end(ap);
    }
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2; /* truncated: still one line */
    while (len > 0 && line[len - 1] == '\n')
        len--;
    /* One message, one line: a newline inside a value must not split it. */
    for (size_t i = 0; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    if (json) {
        char out[LS_LOG_LINE_MAX];
        size_t olen =
            format_json(out, sizeof(out), stamp, level_names[level], mod ? mod : "-", line, len);
        ssize_t w = write(atomic_load(&g_fd), out, olen);
        (void)w; /* nowhere left to report a failed log write */
        return;
    }
    line[len++] = '\n';
    ssize_t w = write(atomic_load(&g_fd), line, len);
    (void)w; /* nowhere left to report a failed log write */
}

void ls__assert_fail(const char *expr, const char *file, int line)
{
    ls_log(LS_LOG_ERROR, "assert", "assertion failed expr=\"%s\" at=%s:%d", expr, file, line);
    abort();
}

static void *oom(unsigned long size)
{
    ls_log(LS_LOG_ERROR, "base", "out of memory bytes=%lu", size);
    abort();
}

void *ls_xmalloc(unsigned long size)
{
    void *p = malloc(size ? size : 1);
    return p ? p : oom(size);
}

void *ls_xcalloc(unsigned long n, unsigned long size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    return p ? p : oom(n * size);
}

char *ls_xstrdup(const char *s)
{
    size_t len = strlen(s) + 1;
    char *p = ls_xmalloc(len);
    memcpy(p, s, len);
    return p;
}
