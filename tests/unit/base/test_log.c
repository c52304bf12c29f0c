/*
 * test_log.c - the logger, LS_ASSERT and the small allocators (libs/base/log.c), and the
 * clock (libs/base/clock.c).
 *
 * Log lines go to a non-blocking pipe: ls_log writes with one write(2) before it
 * returns, so everything logged is already in the pipe when the test reads it, and an
 * empty pipe reads EAGAIN instead of blocking.
 */
#define _GNU_SOURCE /* timegm */
#include "base/clock.h"
#include "base/log.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int log_pipe[2] = {-1, -1};

static void setup(void)
{
    cr_assert_eq(pipe2(log_pipe, O_NONBLOCK | O_CLOEXEC), 0);
    ls_log_set_fd(log_pipe[1]);
    ls_log_set_level(LS_LOG_INFO);
}

static void teardown(void)
{
    ls_log_set_fd(2);
    close(log_pipe[0]);
    close(log_pipe[1]);
}

TestSuite(log, .init = setup, .fini = teardown);

/* Reads what the pipe holds now into buf (NUL-terminated); returns its length. */
static size_t drain(char *buf, size_t cap)
{
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t n = read(log_pipe[0], buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            cr_assert(n == 0 || errno == EAGAIN, "read: %s", strerror(errno));
            break;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    return len;
}

static size_t count_char(const char *s, size_t len, char ch)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += s[i] == ch;
    return n;
}

static bool matches(const char *s, const char *pattern)
{
    regex_t re;
    cr_assert_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0, "bad regex %s", pattern);
    bool ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

#define TS_RE "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z"

/* ---- line format --------------------------------------------------------------- */

Test(log, line_has_timestamp_level_module_and_text)
{
    ls_log(LS_LOG_INFO, "x", "hello n=%d s=%s", 42, "str");
    char buf[4096];
    size_t len = drain(buf, sizeof(buf));
    cr_assert(matches(buf, "^" TS_RE " level=info mod=x hello n=42 s=str\n$"), "line: %s", buf);
    cr_assert_eq(count_char(buf, len, '\n'), 1);
}

Test(log, level_names_in_lines)
{
    ls_log_set_level(LS_LOG_DEBUG);
    LS_LOG_DEBUG("m", "d");
    LS_LOG_INFO("m", "i");
    LS_LOG_WARN("m", "w");
    LS_LOG_ERROR("m", "e");
    char buf[4096];
    drain(buf, sizeof(buf));
    cr_assert(matches(buf, "^" TS_RE " level=debug mod=m d\n" TS_RE " level=info mod=m i\n" TS_RE
                           " level=warn mod=m w\n" TS_RE " level=error mod=m e\n$"),
              "lines:\n%s", buf);
}

Test(log, null_module_is_dash)
{
    ls_log(LS_LOG_WARN, NULL, "text");
    char buf[4096];
    drain(buf, sizeof(buf));
    cr_assert(matches(buf, "^" TS_RE " level=warn mod=- text\n$"), "line: %s", buf);
}

Test(log, timestamp_is_utc_wall_time_now)
{
    int64_t before = ls_wall_us();
    ls_log(LS_LOG_INFO, "x", "t");
    int64_t after = ls_wall_us();
    char buf[4096];
    drain(buf, sizeof(buf));
    struct tm tm = {0};
    long usec = -1;
    int n = sscanf(buf, "%4d-%2d-%2dT%2d:%2d:%2d.%6ldZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &usec);
    cr_assert_eq(n, 7, "line: %s", buf);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    int64_t ts = (int64_t)timegm(&tm) * 1000000 + usec;
    cr_assert_geq(ts, before, "logged %lld before %lld", (long long)ts, (long long)before);
    cr_assert_leq(ts, after, "logged %lld after %lld", (long long)ts, (long long)after);
}

Test(log, trailing_newlines_in_format_give_one_newline)
{
    ls_log(LS_LOG_INFO, "x", "one\n");
    ls_log(LS_LOG_INFO, "x", "two\n\n\n");
    char buf[4096];
    size_t len = drain(buf, sizeof(buf));
    cr_assert_eq(count_char(buf, len, '\n'), 2, "output:\n%s", buf);
    cr_assert(matches(buf, "^" TS_RE " level=info mod=x one\n" TS_RE " level=info mod=x two\n$"),
              "output:\n%s", buf);
}

Test(log, newlines_inside_a_value_do_not_split_the_line)
{
    ls_log(LS_LOG_WARN, "x", "peer said=\"%s\"", "first\nsecond\r\nthird");
    char buf[4096];
    size_t len = drain(buf, sizeof(buf));
    cr_assert_eq(count_char(buf, len, '\n'), 1, "output:\n%s", buf);
    cr_assert(matches(buf, "^" TS_RE " level=warn mod=x peer said=\"first second  third\"\n$"),
              "output:\n%s", buf);
}

Test(log, empty_message_is_still_a_line)
{
    ls_log(LS_LOG_INFO, "x", "%s", "");
    char buf[4096];
    size_t len = drain(buf, sizeof(buf));
    cr_assert_eq(count_char(buf, len, '\n'), 1);
    cr_assert_eq(buf[len - 1], '\n');
    cr_assert(matches(buf, "^" TS_RE " level=info mod=x \n$"), "line: %s", buf);
}

Test(log, very_long_message_is_truncated_to_one_line)
{
    size_t big = 10000;
    char *msg = malloc(big + 1);
    cr_assert_not_null(msg);
    memset(msg, 'a', big);
    msg[big] = '\0';
    ls_log(LS_LOG_INFO, "x", "start %s", msg);
    free(msg);

    char buf[16384];
    size_t len = drain(buf, sizeof(buf));
    cr_assert_gt(len, 1000, "line too short: %zu", len);
    cr_assert_lt(len, big, "not truncated: %zu bytes", len);
    cr_assert_eq(buf[len - 1], '\n');
    cr_assert_eq(count_char(buf, len, '\n'), 1);
    cr_assert_eq(strlen(buf), len, "NUL byte inside the line");
    cr_assert(matches(buf, "^" TS_RE " level=info mod=x start a+\n$"), "bad line");
}

Test(log, long_message_that_ends_in_newline_still_one_line)
{
    char msg[3000];
    memset(msg, 'b', sizeof(msg) - 2);
    msg[sizeof(msg) - 2] = '\n';
    msg[sizeof(msg) - 1] = '\0';
    ls_log(LS_LOG_INFO, "x", "%s", msg);
    char buf[8192];
    size_t len = drain(buf, sizeof(buf));
    cr_assert_eq(buf[len - 1], '\n');
    cr_assert_eq(count_char(buf, len, '\n'), 1);
}

Test(log, message_exactly_filling_the_buffer)
{
    /* Every length around the line buffer gives exactly one full line. */
    char prefix[LS_LOG_LINE_MAX];
    ls_log(LS_LOG_INFO, "x", "%s", "");
    size_t plen = drain(prefix, sizeof(prefix)) - 1; /* header bytes without '\n' */
    cr_assert_lt(plen, 200, "header: %s", prefix);
    char msg[LS_LOG_LINE_MAX + 64];
    for (size_t m = LS_LOG_LINE_MAX - 8 - plen; m < LS_LOG_LINE_MAX + 12 - plen; m++) {
        memset(msg, 'c', m);
        msg[m] = '\0';
        ls_log(LS_LOG_INFO, "x", "%s", msg);
        char buf[2 * LS_LOG_LINE_MAX];
        size_t len = drain(buf, sizeof(buf));
        cr_assert_eq(count_char(buf, len, '\n'), 1, "m=%zu", m);
        cr_assert_eq(buf[len - 1], '\n', "m=%zu", m);
        cr_assert_eq(strlen(buf), len, "m=%zu: NUL inside", m);
        size_t want = plen + m + 1 < LS_LOG_LINE_MAX - 1 ? plen + m + 1 : LS_LOG_LINE_MAX - 1;
        cr_assert_eq(len, want, "m=%zu", m);
    }
}

/* Regression test for a stack overflow in ls_log: the header is formatted with snprintf
 * and the message then written at line + n with size sizeof(line) - n - 1, which wraps
 * to SIZE_MAX once the header alone (here a long mod) fills the line buffer.
 * ASan reports the write for these lengths; longer mods land past the redzone unseen. */
Test(log, very_long_module_name_is_truncated_to_one_line)
{
    static char mod[LS_LOG_LINE_MAX + 150];
    for (size_t mlen = LS_LOG_LINE_MAX - 60; mlen < sizeof(mod); mlen += 7) {
        memset(mod, 'm', mlen);
        mod[mlen] = '\0';
        ls_log(LS_LOG_INFO, mod, "text");
        char buf[2 * LS_LOG_LINE_MAX];
        size_t len = drain(buf, sizeof(buf));
        cr_assert_gt(len, 0, "mlen=%zu", mlen);
        cr_assert_leq(len, LS_LOG_LINE_MAX - 1, "mlen=%zu", mlen);
        cr_assert_eq(buf[len - 1], '\n', "mlen=%zu", mlen);
        cr_assert_eq(count_char(buf, len, '\n'), 1, "mlen=%zu", mlen);
    }
}

/* ---- levels ---------------------------------------------------------------------- */

Test(log, lines_below_the_level_are_dropped)
{
    ls_log_set_level(LS_LOG_WARN);
    cr_assert_eq(ls_log_get_level(), LS_LOG_WARN);
    LS_LOG_DEBUG("x", "dropped-debug");
    LS_LOG_INFO("x", "dropped-info");
    LS_LOG_WARN("x", "kept-warn");
    LS_LOG_ERROR("x", "kept-error");
    char buf[4096];
    size_t len = drain(buf, sizeof(buf));
    cr_assert_eq(count_char(buf, len, '\n'), 2, "output:\n%s", buf);
    cr_assert_null(strstr(buf, "dropped"), "output:\n%s", buf);
    cr_assert_not_null(strstr(buf, "level=warn mod=x kept-warn\n"), "output:\n%s", buf);
    cr_assert_not_null(strstr(buf, "level=error mod=x kept-error\n"), "output:\n%s", buf);
}

Test(log, default_info_drops_debug)
{
    LS_LOG_DEBUG("x", "dropped");
    char buf[64];
    cr_assert_eq(drain(buf, sizeof(buf)), 0, "output: %s", buf);
    LS_LOG_INFO("x", "kept");
    cr_assert_gt(drain(buf, sizeof(buf)), 0);
}

Test(log, level_off_drops_everything)
{
    ls_log_set_level(LS_LOG_OFF);
    LS_LOG_ERROR("x", "dropped");
    ls_log(LS_LOG_OFF, "x", "dropped");
    char buf[64];
    cr_assert_eq(drain(buf, sizeof(buf)), 0, "output: %s", buf);
}

Test(log, off_is_not_a_level_to_log_at)
{
    ls_log_set_level(LS_LOG_DEBUG);
    ls_log(LS_LOG_OFF, "x", "never");
    char buf[64];
    cr_assert_eq(drain(buf, sizeof(buf)), 0, "output: %s", buf);
}

Test(log, set_fd_redirects_lines)
{
    int other[2];
    cr_assert_eq(pipe2(other, O_NONBLOCK), 0);
    ls_log_set_fd(other[1]);
    LS_LOG_WARN("x", "elsewhere");
    char buf[4096];
    cr_assert_eq(drain(buf, sizeof(buf)), 0, "first pipe got: %s", buf);
    ssize_t n = read(other[0], buf, sizeof(buf) - 1);
    cr_assert_gt(n, 0);
    buf[n] = '\0';
    cr_assert_not_null(strstr(buf, "elsewhere\n"), "%s", buf);
    ls_log_set_fd(log_pipe[1]);
    close(other[0]);
    close(other[1]);
}

/* These two run with a level never set in this process, so the first log call reads
 * LLMSERVE_LOG_LEVEL; criterion starts each test in a fresh process. */
static void setup_env_error(void)
{
    cr_assert_eq(pipe2(log_pipe, O_NONBLOCK | O_CLOEXEC), 0);
    ls_log_set_fd(log_pipe[1]);
    setenv("LLMSERVE_LOG_LEVEL", "ERROR", 1);
}

Test(log_env, level_comes_from_environment, .init = setup_env_error, .fini = teardown)
{
    cr_assert_eq(ls_log_get_level(), LS_LOG_ERROR);
    LS_LOG_WARN("x", "dropped");
    char buf[64];
    cr_assert_eq(drain(buf, sizeof(buf)), 0, "output: %s", buf);
}

static void setup_env_garbage(void)
{
    cr_assert_eq(pipe2(log_pipe, O_NONBLOCK | O_CLOEXEC), 0);
    ls_log_set_fd(log_pipe[1]);
    setenv("LLMSERVE_LOG_LEVEL", "loud", 1);
}

Test(log_env, bad_environment_level_means_info, .init = setup_env_garbage, .fini = teardown)
{
    cr_assert_eq(ls_log_get_level(), LS_LOG_INFO);
    LS_LOG_DEBUG("x", "dropped");
    char buf[64];
    cr_assert_eq(drain(buf, sizeof(buf)), 0, "output: %s", buf);
}

/* ---- JSON lines ------------------------------------------------------------------ */

/* Reads one line from the pipe and parses it; the caller deletes the object. */
static cJSON *json_line(void)
{
    char buf[2 * LS_LOG_LINE_MAX];
    size_t len = drain(buf, sizeof(buf));
    cr_assert_gt(len, 0, "no line");
    cr_assert_eq(count_char(buf, len, '\n'), 1, "not one line: %s", buf);
    cr_assert_eq(buf[len - 1], '\n');
    cr_assert_leq(len, LS_LOG_LINE_MAX, "line of %zu bytes", len);
    cJSON *j = cJSON_Parse(buf);
    cr_assert_not_null(j, "not JSON: %s", buf);
    return j;
}

static const char *jstr(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

Test(log, json_line_has_fixed_keys_and_parsed_fields)
{
    ls_log_set_format(LS_LOG_JSON);
    LS_LOG_WARN("router", "instance added pool=%s weight=%d addr=%s", "small", 95,
                "127.0.0.1:7001");
    cJSON *j = json_line();
    cr_assert(matches(jstr(j, "ts"), "^" TS_RE "$"), "ts %s", jstr(j, "ts"));
    cr_assert_str_eq(jstr(j, "level"), "warn");
    cr_assert_str_eq(jstr(j, "mod"), "router");
    cr_assert_str_eq(jstr(j, "msg"), "instance added");
    cr_assert_str_eq(jstr(j, "pool"), "small");
    cr_assert_str_eq(jstr(j, "weight"), "95");
    cr_assert_str_eq(jstr(j, "addr"), "127.0.0.1:7001");
    cJSON_Delete(j);
}

Test(log, json_quoted_values_are_unescaped)
{
    ls_log_set_format(LS_LOG_JSON);
    LS_LOG_INFO("x", "stream ended details=\"%s\" code=%d", "a \\\"b\\\" c\\\\d", 14);
    cJSON *j = json_line();
    cr_assert_str_eq(jstr(j, "details"), "a \"b\" c\\d");
    cr_assert_str_eq(jstr(j, "code"), "14");
    cr_assert_str_eq(jstr(j, "msg"), "stream ended");
    cJSON_Delete(j);
}

Test(log, json_message_that_is_not_text_then_fields_stays_whole)
{
    ls_log_set_format(LS_LOG_JSON);
    LS_LOG_INFO("x", "a=1 then words");
    cJSON *j = json_line();
    cr_assert_str_eq(jstr(j, "msg"), "a=1 then words");
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(j, "a"));
    cJSON_Delete(j);
    LS_LOG_INFO("x", "open quote k=\"never closed");
    j = json_line();
    cr_assert_str_eq(jstr(j, "msg"), "open quote k=\"never closed");
    cJSON_Delete(j);
}

Test(log, json_reserved_field_names_get_an_underscore)
{
    ls_log_set_format(LS_LOG_JSON);
    LS_LOG_INFO("x", "hello msg=inner level=9 mod=m ts=t");
    cJSON *j = json_line();
    cr_assert_str_eq(jstr(j, "msg"), "hello");
    cr_assert_str_eq(jstr(j, "level"), "info");
    cr_assert_str_eq(jstr(j, "_msg"), "inner");
    cr_assert_str_eq(jstr(j, "_level"), "9");
    cr_assert_str_eq(jstr(j, "_mod"), "m");
    cr_assert_str_eq(jstr(j, "_ts"), "t");
    cJSON_Delete(j);
}

Test(log, json_escapes_control_bytes_and_replaces_bad_utf8)
{
    ls_log_set_format(LS_LOG_JSON);
    LS_LOG_INFO("x", "bytes v=%s", "tab\there\x01\xff\xc3\xa9");
    cJSON *j = json_line();
    cr_assert_str_eq(jstr(j, "v"), "tab\there\x01\xef\xbf\xbd\xc3\xa9");
    cJSON_Delete(j);
}

Test(log, json_long_message_is_cut_and_still_valid)
{
    ls_log_set_format(LS_LOG_JSON);
    static char big[3 * LS_LOG_LINE_MAX];
    memset(big, '"', sizeof(big) - 1); /* every byte doubles when escaped */
    LS_LOG_INFO("x", "%s", big);
    cJSON *j = json_line();
    cr_assert_gt(strlen(jstr(j, "msg")), LS_LOG_LINE_MAX / 4);
    cJSON_Delete(j);
    static char mod[LS_LOG_LINE_MAX + 100];
    memset(mod, 'm', sizeof(mod) - 1);
    LS_LOG_INFO(mod, "text k=v");
    j = json_line();
    cr_assert_not_null(jstr(j, "mod"));
    cJSON_Delete(j);
}

Test(log, parse_format_names)
{
    ls_log_format_t f;
    cr_assert(ls_log_parse_format("json", &f) && f == LS_LOG_JSON);
    cr_assert(ls_log_parse_format("TEXT", &f) && f == LS_LOG_TEXT);
    cr_assert_not(ls_log_parse_format("yaml", &f));
    cr_assert_not(ls_log_parse_format(NULL, &f));
}

static void setup_env_json(void)
{
    cr_assert_eq(pipe2(log_pipe, O_NONBLOCK | O_CLOEXEC), 0);
    ls_log_set_fd(log_pipe[1]);
    setenv("LLMSERVE_LOG_FORMAT", "json", 1);
}

Test(log_env, format_comes_from_environment, .init = setup_env_json, .fini = teardown)
{
    LS_LOG_WARN("x", "from env k=v");
    cJSON *j = json_line();
    cr_assert_str_eq(jstr(j, "k"), "v");
    cJSON_Delete(j);
}

Test(log, parse_level_accepts_names_in_any_case)
{
    static const struct {
        const char *name;
        ls_log_level_t want;
    } cases[] = {
        {"debug", LS_LOG_DEBUG}, {"DEBUG", LS_LOG_DEBUG}, {"info", LS_LOG_INFO},
        {"Info", LS_LOG_INFO},   {"warn", LS_LOG_WARN},   {"WaRn", LS_LOG_WARN},
        {"error", LS_LOG_ERROR}, {"ERROR", LS_LOG_ERROR}, {"off", LS_LOG_OFF},
        {"OFF", LS_LOG_OFF},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ls_log_level_t got = (ls_log_level_t)-1;
        cr_assert(ls_log_parse_level(cases[i].name, &got), "rejected %s", cases[i].name);
        cr_assert_eq(got, cases[i].want, "%s gave %d", cases[i].name, (int)got);
    }
}

Test(log, parse_level_rejects_others)
{
    const char *bad[] = {"",      "inf",     "information", "warning", "err",  " info",
                         "info ", "debug\n", "0",           "1",       "none", "trace"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ls_log_level_t got = LS_LOG_WARN;
        cr_assert_not(ls_log_parse_level(bad[i], &got), "accepted \"%s\"", bad[i]);
        cr_assert_eq(got, LS_LOG_WARN, "\"%s\" changed *out on failure", bad[i]);
    }
    ls_log_level_t got = LS_LOG_WARN;
    cr_assert_not(ls_log_parse_level(NULL, &got));
    cr_assert_eq(got, LS_LOG_WARN);
}

/* ---- LS_ASSERT and allocators ----------------------------------------------------- */

Test(assert, false_aborts, .signal = SIGABRT)
{
    ls_log_set_fd(-1); /* keep the failure line out of the test output */
    LS_ASSERT(false);
}

Test(assert, true_does_not_abort)
{
    int x = 1;
    LS_ASSERT(x == 1);
    cr_assert_eq(x, 1);
}

Test(assert, failure_logs_expression_and_location_then_aborts)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
        /* No criterion calls in the child: with --full-stats even a passing assertion
         * messages the runner and waits for its answer, which never comes. */
        close(p[0]);
        ls_log_set_fd(p[1]);
        int x = 1;
        LS_ASSERT(x == 2);
        _exit(0); /* not reached when LS_ASSERT works */
    }
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    close(p[1]);
    char buf[4096];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(p[0], buf + len, sizeof(buf) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(p[0]);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status), "child did not die by a signal (status %d)", status);
    cr_assert_eq(WTERMSIG(status), SIGABRT);
    cr_assert(matches(buf, "level=error mod=assert .*x == 2.*test_log\\.c:[0-9]+"), "line: %s",
              buf);
    cr_assert_eq(count_char(buf, len, '\n'), 1, "line: %s", buf);
}

Test(alloc, xstrdup_copies)
{
    const char *src = "copy me";
    char *d = ls_xstrdup(src);
    cr_assert_not_null(d);
    cr_assert_neq(d, src);
    cr_assert_str_eq(d, src);
    free(d);
}

Test(alloc, xcalloc_zeroes_and_zero_sizes_are_valid)
{
    unsigned char *p = ls_xcalloc(64, 4);
    static const unsigned char zero[256];
    cr_assert_arr_eq(p, zero, sizeof(zero));
    free(p);
    void *z = ls_xmalloc(0);
    cr_assert_not_null(z);
    free(z);
    z = ls_xcalloc(0, 0);
    cr_assert_not_null(z);
    free(z);
}

/* ---- clock ------------------------------------------------------------------------ */

Test(clock, now_us_is_monotonic)
{
    /* One assertion after the loop: with --full-stats each assertion is a message to
     * the runner, too slow for 100000 of them. */
    int64_t first = ls_now_us(), prev = first, back_from = 0, back_to = 0;
    cr_assert_gt(first, 0);
    for (int i = 0; i < 100000; i++) {
        int64_t t = ls_now_us();
        if (t < prev && back_from == 0) {
            back_from = prev;
            back_to = t;
        }
        prev = t;
    }
    cr_assert_eq(back_from, 0, "went back from %lld to %lld", (long long)back_from,
                 (long long)back_to);
    cr_assert_gt(prev, first, "did not advance in 100000 calls");
}

Test(clock, now_us_agrees_with_clock_monotonic)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ref = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    int64_t now = ls_now_us();
    cr_assert_geq(now, ref);
    cr_assert_lt(now - ref, 1000000, "ls_now_us is %lld us ahead", (long long)(now - ref));
}

Test(clock, wall_us_is_epoch_time)
{
    int64_t before = (int64_t)time(NULL);
    int64_t wall = ls_wall_us();
    int64_t after = (int64_t)time(NULL);
    cr_assert_geq(wall / 1000000, before);
    cr_assert_leq(wall / 1000000, after);
}

Test(clock, sleep_us_sleeps_at_least_that_long)
{
    int64_t t0 = ls_now_us();
    ls_sleep_us(20000);
    int64_t dt = ls_now_us() - t0;
    cr_assert_geq(dt, 20000, "slept only %lld us", (long long)dt);
}

static void on_alarm(int sig)
{
    (void)sig;
}

Test(clock, sleep_us_continues_after_a_signal)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm; /* no SA_RESTART: nanosleep returns EINTR */
    cr_assert_eq(sigaction(SIGALRM, &sa, NULL), 0);
    timer_t timer;
    struct sigevent sev = {0};
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGALRM;
    cr_assert_eq(timer_create(CLOCK_MONOTONIC, &sev, &timer), 0);
    struct itimerspec its = {.it_value = {.tv_sec = 0, .tv_nsec = 5 * 1000 * 1000}};
    cr_assert_eq(timer_settime(timer, 0, &its, NULL), 0);
    int64_t t0 = ls_now_us();
    ls_sleep_us(50000);
    int64_t dt = ls_now_us() - t0;
    timer_delete(timer);
    cr_assert_geq(dt, 50000, "slept only %lld us", (long long)dt);
}

Test(clock, sleep_us_of_zero_or_negative_returns)
{
    /* Returns at once; the negative values must not hang or crash. */
    int64_t t0 = ls_now_us();
    ls_sleep_us(0);
    ls_sleep_us(-1);
    ls_sleep_us(-1000000);
    int64_t dt = ls_now_us() - t0;
    cr_assert_lt(dt, 500000, "took %lld us", (long long)dt);
}
