#define _POSIX_C_SOURCE 200809L
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* -1 until the first call reads LLMSERVE_LOG_LEVEL. */
static atomic_int g_level = -1;
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

void ls_log_set_fd(int fd)
{
    atomic_store(&g_fd, fd);
}

void ls_log(ls_log_level_t level, const char *mod, const char *fmt, ...)
{
    if (level < ls_log_get_level() || level >= LS_LOG_OFF)
        return;

    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ level=%s mod=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000, level_names[level], mod ? mod : "-");
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
