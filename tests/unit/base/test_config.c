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
#include "base/log.h"

#include <criterion/criterion.h>
#include <fcntl.h>
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

/* ---- the service scheme: prefix, standard names, aliases, lists, secrets ------------ */

typedef struct {
    const char *listen;
    int64_t rpc_threads;
    const char *consul;
    const char *token;
    ls_strlist_t pools;
} scfg_t;

static scfg_t sc;
static const ls_opt_t sopts[] = {
    {"listen", NULL, LS_OPT_STRING, &sc.listen, "address", 0, 0},
    {"rpc-threads", NULL, LS_OPT_INT, &sc.rpc_threads, "threads", 0, 64},
    {"consul-addr", "LSTEST_STD_ADDR", LS_OPT_STRING, &sc.consul, "agent", 0, 0},
    {"token", "LSTEST_STD_TOKEN", LS_OPT_SECRET, &sc.token, "a secret", 0, 0},
    {"pool", NULL, LS_OPT_LIST, &sc.pools, "pools", 0, 0},
};
static const ls_alias_t saliases[] = {
    {"--threads", "rpc-threads"},
    {"LSTEST_OLD_LISTEN", "listen"},
};
static const ls_config_t scfg = {
    .program = "svc-prog",
    .summary = "a service",
    .env_prefix = "LSTEST_SVC_",
    .opts = sopts,
    .n_opts = sizeof(sopts) / sizeof(sopts[0]),
    .aliases = saliases,
    .n_aliases = sizeof(saliases) / sizeof(saliases[0]),
};

static int log_fd[2];

static void ssetup(void)
{
    static const char *const vars[] = {"LSTEST_SVC_LISTEN",      "LSTEST_SVC_RPC_THREADS",
                                       "LSTEST_SVC_CONSUL_ADDR", "LSTEST_STD_ADDR",
                                       "LSTEST_SVC_TOKEN",       "LSTEST_STD_TOKEN",
                                       "LSTEST_SVC_POOL",        "LSTEST_OLD_LISTEN"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    memset(&sc, 0, sizeof(sc));
    sc.listen = "127.0.0.1:1";
    sc.rpc_threads = 2;
    memset(err, 0, sizeof(err));
    cr_assert_eq(pipe(log_fd), 0);
    ls_log_set_fd(log_fd[1]);
    ls_log_set_level(LS_LOG_INFO); /* ctest runs with LLMSERVE_LOG_LEVEL=warn */
}

static void steardown(void)
{
    ls_strlist_free(&sc.pools);
    ls_log_set_fd(2);
    close(log_fd[0]);
    close(log_fd[1]);
}

TestSuite(scheme, .init = ssetup, .fini = steardown);

static int sload_argv(char **argv)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    return ls_config_load(&scfg, argc, argv, err, sizeof(err));
}
#define SLOAD(...) sload_argv((char *[]){"svc-prog", __VA_ARGS__, NULL})
#define SLOAD0() sload_argv((char *[]){"svc-prog", NULL})

static char *logged(void)
{
    static char buf[8192];
    fcntl(log_fd[0], F_SETFL, O_NONBLOCK);
    ssize_t n = read(log_fd[0], buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

Test(scheme, prefix_names_every_flag)
{
    setenv("LSTEST_SVC_LISTEN", "0.0.0.0:9", 1);
    setenv("LSTEST_SVC_RPC_THREADS", "7", 1);
    cr_assert_eq(SLOAD0(), LS_OK, "%s", err);
    cr_assert_str_eq(sc.listen, "0.0.0.0:9");
    cr_assert_eq(sc.rpc_threads, 7);
    char env[64];
    ls_config_env_name(&scfg, &sopts[1], env, sizeof(env));
    cr_assert_str_eq(env, "LSTEST_SVC_RPC_THREADS");
}

Test(scheme, env_equals_flag)
{
    setenv("LSTEST_SVC_RPC_THREADS", "5", 1);
    cr_assert_eq(SLOAD0(), LS_OK, "%s", err);
    int64_t from_env = sc.rpc_threads;
    unsetenv("LSTEST_SVC_RPC_THREADS");
    cr_assert_eq(SLOAD("--rpc-threads", "5"), LS_OK, "%s", err);
    cr_assert_eq(sc.rpc_threads, from_env);
}

Test(scheme, standard_variable_is_read_and_the_prefixed_one_wins)
{
    setenv("LSTEST_STD_ADDR", "agent:8500", 1);
    cr_assert_eq(SLOAD0(), LS_OK, "%s", err);
    cr_assert_str_eq(sc.consul, "agent:8500");
    setenv("LSTEST_SVC_CONSUL_ADDR", "other:8500", 1);
    cr_assert_eq(SLOAD0(), LS_OK, "%s", err);
    cr_assert_str_eq(sc.consul, "other:8500");
    cr_assert_eq(SLOAD("--consul-addr", "flag:1"), LS_OK, "%s", err);
    cr_assert_str_eq(sc.consul, "flag:1");
}

Test(scheme, bad_env_value_names_the_variable_and_the_flag)
{
    setenv("LSTEST_SVC_RPC_THREADS", "many", 1);
    cr_assert_eq(SLOAD0(), LS_ERR_INVALID);
    cr_assert_not_null(strstr(err, "LSTEST_SVC_RPC_THREADS"), "%s", err);
    cr_assert_not_null(strstr(err, "--rpc-threads"), "%s", err);
}

Test(scheme, deprecated_flag_still_works_with_a_warning)
{
    cr_assert_eq(SLOAD("--threads", "9"), LS_OK, "%s", err);
    cr_assert_eq(sc.rpc_threads, 9);
    char *log = logged();
    cr_assert_not_null(strstr(log, "deprecated flag"), "%s", log);
    cr_assert_not_null(strstr(log, "use=--rpc-threads"), "%s", log);
}

Test(scheme, deprecated_variable_still_works_and_loses_to_the_new_one)
{
    setenv("LSTEST_OLD_LISTEN", "old:1", 1);
    cr_assert_eq(SLOAD0(), LS_OK, "%s", err);
    cr_assert_str_eq(sc.listen, "old:1");
    cr_assert_not_null(strstr(logged(), "var=LSTEST_OLD_LISTEN"));
    setenv("LSTEST_SVC_LISTEN", "new:1", 1);
    cr_assert_eq(SLOAD0(), LS_OK, "%s", err);
    cr_assert_str_eq(sc.listen, "new:1");
}

Test(scheme, unknown_flag_suggests_the_closest)
{
    cr_assert_eq(SLOAD("--rpc-thread", "1"), LS_ERR_INVALID);
    cr_assert_not_null(strstr(err, "--rpc-thread'"), "%s", err);
    cr_assert_not_null(strstr(err, "did you mean --rpc-threads"), "%s", err);
    cr_assert_eq(SLOAD("--zzzzzz"), LS_ERR_INVALID);
    cr_assert_null(strstr(err, "did you mean"), "%s", err);
}

Test(scheme, list_flag_repeats_and_replaces_the_environment)
{
    setenv("LSTEST_SVC_POOL", "env=1", 1);
    cr_assert_eq(SLOAD0(), LS_OK, "%s", err);
    cr_assert_eq(sc.pools.n, 1);
    cr_assert_str_eq(sc.pools.items[0], "env=1");
    cr_assert_eq(SLOAD("--pool", "a=1", "--pool=b=2"), LS_OK, "%s", err);
    cr_assert_eq(sc.pools.n, 2);
    cr_assert_str_eq(sc.pools.items[0], "a=1");
    cr_assert_str_eq(sc.pools.items[1], "b=2");
    char *j = ls_strlist_join(&sc.pools, ";");
    cr_assert_str_eq(j, "a=1;b=2");
    free(j);
}

Test(scheme, secrets_never_show)
{
    setenv("LSTEST_STD_TOKEN", "hunter2-secret", 1);
    cr_assert_eq(SLOAD0(), LS_OK, "%s", err);
    cr_assert_str_eq(sc.token, "hunter2-secret");
    ls_config_log(&scfg, "t");
    char *log = logged();
    cr_assert_null(strstr(log, "hunter2"), "%s", log);
    cr_assert_not_null(strstr(log, "token=<redacted>"), "%s", log);
    FILE *tmp = tmpfile();
    ls_config_usage(&scfg, fileno(tmp));
    char *out = slurp(fileno(tmp));
    fclose(tmp);
    cr_assert_null(strstr(out, "hunter2"), "%s", out);
    cr_assert_not_null(strstr(out, "LSTEST_SVC_TOKEN or LSTEST_STD_TOKEN"), "%s", out);
    cr_assert_not_null(strstr(out, "--threads -> --rpc-threads"), "%s", out);
    free(out);
}

Test(scheme, log_quotes_values_with_spaces)
{
    sc.listen = "a b\"c";
    ls_config_log(&scfg, "t");
    char *log = logged();
    cr_assert_not_null(strstr(log, "listen=\"a b\\\"c\""), "%s", log);
}
