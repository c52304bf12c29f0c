/*
 * test_config.c - ls_config_load and ls_config_usage (libs/base/config.c).
 *
 * Criterion runs every test in its own process, so setenv in one test cannot leak into
 * another; the suite's init still unsets our variables in case the caller's environment
 * has them.
 */
#define _POSIX_C_SOURCE 200809L
#include "base/config.h"
#include "base/err.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ENV_NAME "LSTEST_CFG_NAME"
#define ENV_PORT "LSTEST_CFG_PORT"
#define ENV_RATIO "LSTEST_CFG_RATIO"
#define ENV_VERBOSE "LSTEST_CFG_VERBOSE"

typedef struct {
    const char *name;
    int64_t port; /* [1, 65535] */
    double ratio; /* [0, 1] */
    bool verbose;
    int64_t offset; /* unchecked range, no environment variable */
    double scale;   /* unchecked range, no environment variable */
} tcfg_t;

static tcfg_t c;
static const ls_opt_t opts[] = {
    {"name", ENV_NAME, LS_OPT_STRING, &c.name, "instance name", 0, 0},
    {"port", ENV_PORT, LS_OPT_INT, &c.port, "listen port", 1, 65535},
    {"ratio", ENV_RATIO, LS_OPT_DOUBLE, &c.ratio, "fraction of memory to use", 0.0, 1.0},
    {"verbose", ENV_VERBOSE, LS_OPT_BOOL, &c.verbose, "log more", 0, 0},
    {"offset", NULL, LS_OPT_INT, &c.offset, "start offset (bytes)", 0, 0},
    {"scale", NULL, LS_OPT_DOUBLE, &c.scale, "scale factor", 0, 0},
};
static const ls_config_t cfg = {
    .program = "test-prog",
    .summary = "a program for config tests",
    .opts = opts,
    .n_opts = sizeof(opts) / sizeof(opts[0]),
};
static char err[256];

static void setup(void)
{
    unsetenv(ENV_NAME);
    unsetenv(ENV_PORT);
    unsetenv(ENV_RATIO);
    unsetenv(ENV_VERBOSE);
    c.name = "default-name";
    c.port = 8080;
    c.ratio = 0.25;
    c.verbose = false;
    c.offset = 0;
    c.scale = 1.5;
    memset(err, 0, sizeof(err));
}

TestSuite(config, .init = setup);

static int load_argv(char **argv)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    return ls_config_load(&cfg, argc, argv, err, sizeof(err));
}

/* LOAD("--a", "b") loads argv {"test-prog", "--a", "b"}; LOAD0() loads no flags. */
#define LOAD(...) load_argv((char *[]){"test-prog", __VA_ARGS__, NULL})
#define LOAD0() load_argv((char *[]){"test-prog", NULL})

#define ASSERT_INVALID_NAMING(rc, what)                                                            \
    do {                                                                                           \
        cr_assert_eq((rc), LS_ERR_INVALID, "rc = %d", (rc));                                       \
        cr_assert_neq(err[0], '\0', "no error message");                                           \
        cr_assert_not_null(strstr(err, (what)), "message \"%s\" does not name %s", err, (what));   \
        cr_assert_null(strchr(err, '\n'), "message \"%s\" is not one line", err);                  \
    } while (0)

/* Reads everything in the file behind fd from its start; caller frees. */
static char *slurp(int fd)
{
    cr_assert_eq(lseek(fd, 0, SEEK_SET), 0);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    for (;;) {
        if (len + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            cr_assert_not_null(buf);
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        cr_assert_geq(n, 0);
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return buf;
}

/* Runs ls_config_load with standard output sent to a temporary file; returns the rc and
 * the text written in *out (caller frees). */
static int load_capturing_stdout(char **argv, char **out)
{
    FILE *tmp = tmpfile();
    cr_assert_not_null(tmp);
    fflush(stdout);
    int saved = dup(1);
    cr_assert_geq(saved, 0);
    cr_assert_eq(dup2(fileno(tmp), 1), 1);
    int rc = load_argv(argv);
    fflush(stdout);
    cr_assert_eq(dup2(saved, 1), 1);
    close(saved);
    *out = slurp(fileno(tmp));
    fclose(tmp);
    return rc;
}

/* ---- defaults, environment, flags ------------------------------------------ */

Test(config, defaults_kept_without_env_or_flags)
{
    cr_assert_eq(LOAD0(), LS_OK, "%s", err);
    cr_assert_str_eq(c.name, "default-name");
    cr_assert_eq(c.port, 8080);
    cr_assert_float_eq(c.ratio, 0.25, 1e-12);
    cr_assert_eq(c.verbose, false);
    cr_assert_eq(c.offset, 0);
    cr_assert_float_eq(c.scale, 1.5, 1e-12);
}

Test(config, env_overrides_default)
{
    setenv(ENV_NAME, "from-env", 1);
    setenv(ENV_PORT, "9000", 1);
    setenv(ENV_RATIO, "0.5", 1);
    setenv(ENV_VERBOSE, "yes", 1);
    cr_assert_eq(LOAD0(), LS_OK, "%s", err);
    cr_assert_str_eq(c.name, "from-env");
    cr_assert_eq(c.port, 9000);
    cr_assert_float_eq(c.ratio, 0.5, 1e-12);
    cr_assert_eq(c.verbose, true);
    cr_assert_eq(c.offset, 0);
}

Test(config, empty_env_var_is_ignored)
{
    setenv(ENV_PORT, "", 1);
    setenv(ENV_NAME, "", 1);
    cr_assert_eq(LOAD0(), LS_OK, "%s", err);
    cr_assert_eq(c.port, 8080);
    cr_assert_str_eq(c.name, "default-name");
}

Test(config, env_bool_spellings)
{
    static const struct {
        const char *text;
        bool want;
    } cases[] = {{"1", true},  {"true", true},   {"TRUE", true}, {"on", true},  {"Yes", true},
                 {"0", false}, {"false", false}, {"no", false},  {"OFF", false}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        c.verbose = !cases[i].want;
        setenv(ENV_VERBOSE, cases[i].text, 1);
        cr_assert_eq(LOAD0(), LS_OK, "%s: %s", cases[i].text, err);
        cr_assert_eq(c.verbose, cases[i].want, "%s", cases[i].text);
    }
}

Test(config, bad_env_value_is_invalid_naming_the_variable)
{
    setenv(ENV_PORT, "eighty", 1);
    int rc = LOAD0();
    ASSERT_INVALID_NAMING(rc, ENV_PORT);
    cr_assert_not_null(strstr(err, "eighty"), "%s", err);
}

Test(config, env_out_of_range_is_invalid)
{
    setenv(ENV_RATIO, "2.5", 1);
    int rc = LOAD0();
    ASSERT_INVALID_NAMING(rc, ENV_RATIO);
}

Test(config, flag_overrides_env)
{
    setenv(ENV_NAME, "from-env", 1);
    setenv(ENV_PORT, "9000", 1);
    setenv(ENV_RATIO, "0.5", 1);
    setenv(ENV_VERBOSE, "true", 1);
    int rc = LOAD("--name=from-flag", "--port", "9100", "--ratio=0.75", "--no-verbose");
    cr_assert_eq(rc, LS_OK, "%s", err);
    cr_assert_str_eq(c.name, "from-flag");
    cr_assert_eq(c.port, 9100);
    cr_assert_float_eq(c.ratio, 0.75, 1e-12);
    cr_assert_eq(c.verbose, false);
}

Test(config, flag_before_env_still_wins)
{
    /* Order on the command line is irrelevant: the environment is applied first. */
    setenv(ENV_PORT, "9000", 1);
    cr_assert_eq(LOAD("--port=1234"), LS_OK, "%s", err);
    cr_assert_eq(c.port, 1234);
}

Test(config, equals_form)
{
    int rc = LOAD("--name=abc", "--port=443", "--ratio=0.125", "--offset=-7");
    cr_assert_eq(rc, LS_OK, "%s", err);
    cr_assert_str_eq(c.name, "abc");
    cr_assert_eq(c.port, 443);
    cr_assert_float_eq(c.ratio, 0.125, 1e-12);
    cr_assert_eq(c.offset, -7);
}

Test(config, space_form)
{
    int rc = LOAD("--name", "abc", "--port", "443", "--ratio", "0.125", "--offset", "-7");
    cr_assert_eq(rc, LS_OK, "%s", err);
    cr_assert_str_eq(c.name, "abc");
    cr_assert_eq(c.port, 443);
    cr_assert_float_eq(c.ratio, 0.125, 1e-12);
    cr_assert_eq(c.offset, -7);
}

Test(config, string_value_points_into_argv)
{
    char *argv[] = {"test-prog", "--name", "space-form", "--name=eq-form", NULL};
    cr_assert_eq(load_argv(argv), LS_OK, "%s", err);
    cr_assert_eq(c.name, argv[3] + strlen("--name="));
    char *argv2[] = {"test-prog", "--name", "space-form", NULL};
    cr_assert_eq(load_argv(argv2), LS_OK, "%s", err);
    cr_assert_eq(c.name, argv2[2]);
}

Test(config, empty_string_value_with_equals)
{
    cr_assert_eq(LOAD("--name="), LS_OK, "%s", err);
    cr_assert_str_eq(c.name, "");
}

Test(config, later_flag_wins)
{
    cr_assert_eq(LOAD("--port=1", "--port", "2", "--port=3"), LS_OK, "%s", err);
    cr_assert_eq(c.port, 3);
}

Test(config, bool_bare_flag_sets_true)
{
    cr_assert_eq(LOAD("--verbose"), LS_OK, "%s", err);
    cr_assert_eq(c.verbose, true);
}

Test(config, bool_bare_flag_does_not_take_next_argument)
{
    /* "--verbose false" is the flag then a stray positional, not verbose=false. */
    int rc = LOAD("--verbose", "false");
    ASSERT_INVALID_NAMING(rc, "false");
}

Test(config, bool_no_flag_sets_false)
{
    c.verbose = true;
    cr_assert_eq(LOAD("--no-verbose"), LS_OK, "%s", err);
    cr_assert_eq(c.verbose, false);
}

Test(config, bool_equals_values)
{
    c.verbose = true;
    cr_assert_eq(LOAD("--verbose=false"), LS_OK, "%s", err);
    cr_assert_eq(c.verbose, false);
    cr_assert_eq(LOAD("--verbose=true"), LS_OK, "%s", err);
    cr_assert_eq(c.verbose, true);
    cr_assert_eq(LOAD("--verbose=0"), LS_OK, "%s", err);
    cr_assert_eq(c.verbose, false);
    cr_assert_eq(LOAD("--verbose=on"), LS_OK, "%s", err);
    cr_assert_eq(c.verbose, true);
}

Test(config, bool_last_of_flag_and_no_flag_wins)
{
    cr_assert_eq(LOAD("--verbose", "--no-verbose"), LS_OK, "%s", err);
    cr_assert_eq(c.verbose, false);
    cr_assert_eq(LOAD("--no-verbose", "--verbose"), LS_OK, "%s", err);
    cr_assert_eq(c.verbose, true);
}

Test(config, bool_bad_value_is_invalid_naming_the_flag)
{
    int rc = LOAD("--verbose=maybe");
    ASSERT_INVALID_NAMING(rc, "--verbose");
    cr_assert_not_null(strstr(err, "maybe"), "%s", err);
}

Test(config, no_prefix_on_non_bool_is_unknown)
{
    int rc = LOAD("--no-port");
    ASSERT_INVALID_NAMING(rc, "--no-port");
}

/* ---- ranges ------------------------------------------------------------------ */

Test(config, int_range_is_inclusive)
{
    cr_assert_eq(LOAD("--port=1"), LS_OK, "%s", err);
    cr_assert_eq(c.port, 1);
    cr_assert_eq(LOAD("--port=65535"), LS_OK, "%s", err);
    cr_assert_eq(c.port, 65535);
}

Test(config, int_above_range_is_invalid_naming_the_flag)
{
    int rc = LOAD("--port=70000");
    ASSERT_INVALID_NAMING(rc, "--port");
    cr_assert_not_null(strstr(err, "70000"), "%s", err);
    cr_assert_not_null(strstr(err, "65535"), "message should give the range: %s", err);
}

Test(config, int_below_range_is_invalid_naming_the_flag)
{
    int rc = LOAD("--port", "0");
    ASSERT_INVALID_NAMING(rc, "--port");
    memset(err, 0, sizeof(err));
    rc = LOAD("--port", "-1");
    ASSERT_INVALID_NAMING(rc, "--port");
}

Test(config, int_not_a_number_is_invalid)
{
    const char *bad[] = {"--port=abc", "--port=12x", "--port=0x10",
                         "--port=1.5", "--port=",    "--port=80 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(err, 0, sizeof(err));
        c.port = 8080;
        int rc = load_argv((char *[]){"test-prog", (char *)bad[i], NULL});
        cr_assert_eq(rc, LS_ERR_INVALID, "%s accepted", bad[i]);
        cr_assert_not_null(strstr(err, "--port"), "%s: message \"%s\"", bad[i], err);
    }
}

Test(config, int_overflow_is_invalid_even_unchecked)
{
    cr_assert_eq(LOAD("--offset=-9223372036854775808"), LS_OK, "%s", err);
    cr_assert_eq(c.offset, INT64_MIN);
    cr_assert_eq(LOAD("--offset=9223372036854775807"), LS_OK, "%s", err);
    cr_assert_eq(c.offset, INT64_MAX);
    int rc = LOAD("--offset=9223372036854775808");
    ASSERT_INVALID_NAMING(rc, "--offset");
}

Test(config, double_range_is_inclusive)
{
    cr_assert_eq(LOAD("--ratio=0"), LS_OK, "%s", err);
    cr_assert_float_eq(c.ratio, 0.0, 1e-12);
    cr_assert_eq(LOAD("--ratio=1"), LS_OK, "%s", err);
    cr_assert_float_eq(c.ratio, 1.0, 1e-12);
    cr_assert_eq(LOAD("--ratio=1e-1"), LS_OK, "%s", err);
    cr_assert_float_eq(c.ratio, 0.1, 1e-12);
}

Test(config, double_out_of_range_is_invalid_naming_the_flag)
{
    int rc = LOAD("--ratio=1.0001");
    ASSERT_INVALID_NAMING(rc, "--ratio");
    memset(err, 0, sizeof(err));
    rc = LOAD("--ratio", "-0.1");
    ASSERT_INVALID_NAMING(rc, "--ratio");
}

Test(config, double_non_finite_or_garbage_is_invalid)
{
    const char *bad[] = {"--ratio=nan",  "--ratio=inf",  "--ratio=-inf", "--ratio=1e400",
                         "--ratio=half", "--ratio=0.5x", "--ratio="};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(err, 0, sizeof(err));
        int rc = load_argv((char *[]){"test-prog", (char *)bad[i], NULL});
        cr_assert_eq(rc, LS_ERR_INVALID, "%s accepted", bad[i]);
        cr_assert_not_null(strstr(err, "--ratio"), "%s: message \"%s\"", bad[i], err);
    }
}

Test(config, double_unchecked_range_still_rejects_non_finite)
{
    cr_assert_eq(LOAD("--scale=-1e300"), LS_OK, "%s", err);
    cr_assert_float_eq(c.scale, -1e300, 1e288);
    cr_assert_eq(LOAD("--scale", "12345.5"), LS_OK, "%s", err);
    cr_assert_float_eq(c.scale, 12345.5, 1e-9);
    const char *bad[] = {"--scale=nan", "--scale=NaN", "--scale=inf", "--scale=-infinity",
                         "--scale=1e400"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(err, 0, sizeof(err));
        int rc = load_argv((char *[]){"test-prog", (char *)bad[i], NULL});
        cr_assert_eq(rc, LS_ERR_INVALID, "%s accepted", bad[i]);
        cr_assert_not_null(strstr(err, "--scale"), "%s: message \"%s\"", bad[i], err);
    }
}

/* ---- argument errors --------------------------------------------------------- */

Test(config, unknown_flag_is_invalid_with_message)
{
    int rc = LOAD("--port=1", "--bogus");
    ASSERT_INVALID_NAMING(rc, "--bogus");
}

Test(config, unknown_flag_with_value_names_only_the_flag)
{
    int rc = LOAD("--bogus=secret");
    ASSERT_INVALID_NAMING(rc, "--bogus");
    cr_assert_null(strstr(err, "secret"), "%s", err);
}

Test(config, flag_name_prefix_is_not_a_match)
{
    int rc = LOAD("--por=1");
    ASSERT_INVALID_NAMING(rc, "--por");
    memset(err, 0, sizeof(err));
    rc = LOAD("--portx=1");
    ASSERT_INVALID_NAMING(rc, "--portx");
}

Test(config, missing_value_is_invalid_with_message)
{
    int rc = LOAD("--port");
    ASSERT_INVALID_NAMING(rc, "--port");
    cr_assert_not_null(strstr(err, "value"), "%s", err);
    memset(err, 0, sizeof(err));
    rc = LOAD("--verbose", "--name");
    ASSERT_INVALID_NAMING(rc, "--name");
}

Test(config, stray_positional_is_invalid_with_message)
{
    int rc = LOAD("--port=1", "extra");
    ASSERT_INVALID_NAMING(rc, "extra");
}

Test(config, single_dash_and_bare_double_dash_are_invalid)
{
    int rc = LOAD("-p");
    ASSERT_INVALID_NAMING(rc, "-p");
    memset(err, 0, sizeof(err));
    rc = LOAD("--");
    ASSERT_INVALID_NAMING(rc, "--");
}

Test(config, error_without_buffer_still_fails)
{
    char *argv[] = {"test-prog", "--bogus", NULL};
    cr_assert_eq(ls_config_load(&cfg, 2, argv, NULL, 0), LS_ERR_INVALID);
    char one = 'x';
    cr_assert_eq(ls_config_load(&cfg, 2, argv, &one, 0), LS_ERR_INVALID);
    cr_assert_eq(one, 'x', "err_len 0 must not be written");
}

Test(config, error_message_truncated_to_buffer)
{
    char small[8];
    memset(small, 'z', sizeof(small));
    char *argv[] = {"test-prog", "--a-very-long-unknown-flag-name", NULL};
    cr_assert_eq(ls_config_load(&cfg, 2, argv, small, sizeof(small)), LS_ERR_INVALID);
    cr_assert_eq(strnlen(small, sizeof(small)), sizeof(small) - 1, "not NUL-terminated in bounds");
}

/* ---- help and usage ---------------------------------------------------------- */

Test(config, help_returns_help_and_prints_usage)
{
    char *out = NULL;
    int rc = load_capturing_stdout((char *[]){"test-prog", "--help", NULL}, &out);
    cr_assert_eq(rc, LS_CONFIG_HELP);
    cr_assert_not_null(strstr(out, "test-prog"), "%s", out);
    cr_assert_not_null(strstr(out, "--port"), "%s", out);
    cr_assert_not_null(strstr(out, ENV_PORT), "%s", out);
    free(out);
}

Test(config, short_h_is_help)
{
    char *out = NULL;
    int rc = load_capturing_stdout((char *[]){"test-prog", "-h", NULL}, &out);
    cr_assert_eq(rc, LS_CONFIG_HELP);
    cr_assert_not_null(strstr(out, "--ratio"), "%s", out);
    free(out);
}

Test(config, help_wins_over_bad_arguments)
{
    char *out = NULL;
    setenv(ENV_PORT, "not-a-port", 1);
    int rc =
        load_capturing_stdout((char *[]){"test-prog", "--bogus", "stray", "--help", NULL}, &out);
    cr_assert_eq(rc, LS_CONFIG_HELP, "%s", err);
    cr_assert_not_null(strstr(out, "usage"), "%s", out);
    free(out);
}

static char *usage_text(void)
{
    FILE *tmp = tmpfile();
    cr_assert_not_null(tmp);
    ls_config_usage(&cfg, fileno(tmp));
    char *out = slurp(fileno(tmp));
    fclose(tmp);
    return out;
}

Test(config, usage_lists_every_flag_env_and_default)
{
    char *out = usage_text();
    cr_assert_not_null(strstr(out, "test-prog"), "%s", out);
    cr_assert_not_null(strstr(out, "a program for config tests"), "%s", out);

    static const char *const want[] = {
        "--name STR\n",
        "instance name",
        "env " ENV_NAME ", default \"default-name\"",
        "--port INT\n",
        "listen port",
        "env " ENV_PORT ", default \"8080\"",
        "--ratio NUM\n",
        "fraction of memory to use",
        "env " ENV_RATIO ", default \"0.25\"",
        "--verbose\n",
        "log more",
        "env " ENV_VERBOSE ", default \"false\"",
        "--offset INT\n",
        "start offset (bytes)",
        "env (none), default \"0\"",
        "--scale NUM\n",
        "scale factor",
        "env (none), default \"1.5\"",
        "--help",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        cr_assert_not_null(strstr(out, want[i]), "usage lacks \"%s\":\n%s", want[i], out);
    free(out);
}

Test(config, usage_lists_flags_in_table_order)
{
    char *out = usage_text();
    const char *prev = out;
    for (size_t i = 0; i < cfg.n_opts; i++) {
        char flag[64];
        snprintf(flag, sizeof(flag), "  --%s", opts[i].name);
        const char *at = strstr(prev, flag);
        cr_assert_not_null(at, "%s missing or out of order:\n%s", flag, out);
        prev = at + 1;
    }
    free(out);
}

Test(config, usage_default_is_the_current_value)
{
    setenv(ENV_PORT, "4321", 1);
    cr_assert_eq(LOAD("--verbose", "--name=loaded"), LS_OK, "%s", err);
    char *out = usage_text();
    cr_assert_not_null(strstr(out, "env " ENV_PORT ", default \"4321\""), "%s", out);
    cr_assert_not_null(strstr(out, "default \"true\""), "%s", out);
    cr_assert_not_null(strstr(out, "default \"loaded\""), "%s", out);
    free(out);
}

Test(config, usage_of_null_string_default_is_empty)
{
    c.name = NULL;
    char *out = usage_text();
    cr_assert_not_null(strstr(out, "env " ENV_NAME ", default \"\""), "%s", out);
    free(out);
}
