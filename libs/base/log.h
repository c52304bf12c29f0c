/*
 * log.h - one printf-style logger for every service and tool.
 *
 * A line is  "2026-11-22T04:45:00.123456Z level=info mod=rpc msg text key=value ..." ,
 * written with one write(2) so lines from different threads never interleave.
 * The message format is the caller's: keep the text fixed and put variable parts in
 * key=value fields (values with spaces in double quotes, \" and \\ escaped) so logs
 * stay greppable.  In the JSON format the same line is one object:
 *   {"ts":"2026-11-22T04:45:00.123456Z","level":"info","mod":"rpc","msg":"msg text",
 *    "key":"value",...}
 * with the fields parsed out of the message (every value a string; a field named like
 * one of the four fixed keys gets a leading '_'); a message that does not read as text
 * followed by key=value fields stays whole in "msg".  Thread-safe.
 */
#ifndef LS_LOG_H
#define LS_LOG_H

#include <stdbool.h>

/* Longest line written, newline included: PIPE_BUF, so one line written to a pipe
 * never interleaves with another's.  Longer lines are truncated (JSON stays valid). */
#define LS_LOG_LINE_MAX 4096

typedef enum {
    LS_LOG_DEBUG = 0,
    LS_LOG_INFO = 1,
    LS_LOG_WARN = 2,
    LS_LOG_ERROR = 3,
    LS_LOG_OFF = 4,
} ls_log_level_t;

/* Sets the lowest level written (default LS_LOG_INFO, or LLMSERVE_LOG_LEVEL from the
 * environment, read at the first log call). */
void ls_log_set_level(ls_log_level_t level);

/* Returns the current lowest level written. */
ls_log_level_t ls_log_get_level(void);

/* Parses "debug", "info", "warn", "error" or "off"; returns false on anything else. */
bool ls_log_parse_level(const char *name, ls_log_level_t *out);

typedef enum {
    LS_LOG_TEXT = 0, /* the default */
    LS_LOG_JSON = 1,
} ls_log_format_t;

/* Sets the line format (default LS_LOG_TEXT, or LLMSERVE_LOG_FORMAT from the environment,
 * read at the first log call). */
void ls_log_set_format(ls_log_format_t format);

/* Parses "text" or "json"; returns false on anything else. */
bool ls_log_parse_format(const char *name, ls_log_format_t *out);

/* Sets the file descriptor lines go to (default 2, standard error). */
void ls_log_set_fd(int fd);

/* Writes one line at level from module mod; a trailing newline in fmt is not needed. */
void ls_log(ls_log_level_t level, const char *mod, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LS_LOG_DEBUG(mod, ...) ls_log(LS_LOG_DEBUG, mod, __VA_ARGS__)
#define LS_LOG_INFO(mod, ...) ls_log(LS_LOG_INFO, mod, __VA_ARGS__)
#define LS_LOG_WARN(mod, ...) ls_log(LS_LOG_WARN, mod, __VA_ARGS__)
#define LS_LOG_ERROR(mod, ...) ls_log(LS_LOG_ERROR, mod, __VA_ARGS__)

/* Invariant check in every build: logs file:line and the expression, then aborts.
 * For invariants only, never for validating input. */
#define LS_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ls__assert_fail(#cond, __FILE__, __LINE__);                                            \
    } while (0)

_Noreturn void ls__assert_fail(const char *expr, const char *file, int line);

/* Allocation for small control structures: aborts with a logged message when memory is
 * exhausted (request-sized buffers must use malloc and fail with LS_ERR_NOMEM instead). */
void *ls_xmalloc(unsigned long size);
void *ls_xcalloc(unsigned long n, unsigned long size);
char *ls_xstrdup(const char *s);

#endif
