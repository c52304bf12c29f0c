/*
 * test_svc.c - the service runtime (libs/svc/svc.c) in one process: options and exit
 * statuses, the lifecycle and its order (health, seams, hooks), SIGHUP and SIGTERM.
 *
 * svc_main runs on the test's main thread, as in a service binary; a second thread
 * plays the outside world (reads "LISTENING port=N" from the redirected stdout, calls
 * the service, sends signals to the main thread with pthread_kill so that no other
 * thread of the test process can take them, or fails the service with svc_fail).
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "echo.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc/client.h"
#include "svc/metric_names.h"
#include "svc/svc.h"
#include "support/certs.h"
#include "support/channel.h"
#include "support/metrics_sink.h"
#include "support/net.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- what happened, in order ------------------------------------------------------ */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_events[64][64];
static int g_n_events;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    pthread_mutex_lock(&g_mu);
    if (g_n_events < 64) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g_events[g_n_events++], 64, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&g_mu);
}

static int event_at(const char *name)
{
    pthread_mutex_lock(&g_mu);
    int at = -1;
    for (int i = 0; i < g_n_events && at < 0; i++)
        if (strcmp(g_events[i], name) == 0)
            at = i;
    pthread_mutex_unlock(&g_mu);
    return at;
}

static bool wait_event(const char *name, int timeout_ms)
{
    for (int i = 0; i < timeout_ms / 10; i++) {
        if (event_at(name) >= 0)
            return true;
        usleep(10000);
    }
    return event_at(name) >= 0;
}

/* ---- seams that record -------------------------------------------------------------- */

static void r_add(svc_reporter_t *r, const char *name, const svc_label_t *l, size_t n, double d)
{
    (void)r, (void)l, (void)n;
    note("counter %s %g", name, d);
}

static void r_set(svc_reporter_t *r, const char *name, const svc_label_t *l, size_t n, double v)
{
    (void)r;
    note("gauge %s{%s=%s} %g", name, n ? l[0].key : "", n ? l[0].value : "", v);
}

static void r_observe(svc_reporter_t *r, const char *name, const svc_label_t *l, size_t n, double v)
{
    (void)r, (void)l, (void)n;
    note("observe %s %g", name, v);
}

static void r_destroy(svc_reporter_t *r)
{
    (void)r;
}

static const svc_reporter_ops_t rec_reporter_ops = {r_add, r_set, r_observe, r_destroy};
static svc_reporter_t rec_reporter = {&rec_reporter_ops};

static char g_reg_name[64], g_reg_meta[64];
static int g_reg_port;

static int g_register(svc_registrar_t *r, const svc_registration_t *reg)
{
    (void)r;
    snprintf(g_reg_name, sizeof(g_reg_name), "%s", reg->name);
    snprintf(g_reg_meta, sizeof(g_reg_meta), "%s=%s", reg->n_meta ? reg->meta[0].key : "",
             reg->n_meta ? reg->meta[0].value : "");
    g_reg_port = reg->port;
    note("register");
    return LS_OK;
}

static int g_deregister(svc_registrar_t *r, int64_t timeout_ms)
{
    (void)r, (void)timeout_ms;
    note("deregister");
    return LS_OK;
}

static void g_destroy(svc_registrar_t *r)
{
    (void)r;
}

static const svc_registrar_ops_t rec_registrar_ops = {g_register, g_deregister, g_destroy};
static svc_registrar_t rec_registrar = {&rec_registrar_ops};

/* ---- the demo service --------------------------------------------------------------- */

typedef struct {
    const char *greeting;
    int64_t count;
    int port;
} demo_t;

static demo_t g_demo;
static svc_t *g_svc;         /* for svc_fail from outside */
static bool g_fail_in_start; /* h_start fails the service */
static bool g_hold_drain;    /* h_drain waits for "outside done" */

static void h_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    (void)state, (void)msg;
    Llmserve__Test__EchoReply reply = LLMSERVE__TEST__ECHO_REPLY__INIT;
    reply.text = (char *)g_demo.greeting;
    rpc_call_reply(call, &reply.base);
}

static int h_check(svc_t *svc, void *ud, char *err, size_t err_len)
{
    (void)svc;
    demo_t *d = ud;
    note("check");
    if (strcmp(d->greeting, "forbidden") == 0) {
        snprintf(err, err_len, "--greeting: 'forbidden' is not allowed");
        return LS_ERR_INVALID;
    }
    return LS_OK;
}

static int h_create(svc_t *svc, void *ud, char *err, size_t err_len)
{
    (void)ud, (void)err, (void)err_len;
    note("create");
    g_svc = svc;
    rpc_handler_t h = {.on_message = h_message};
    return rpc_server_add_method(svc_server(svc), "/llmserve.test.Echo/Unary", RPC_UNARY,
                                 &llmserve__test__echo_request__descriptor, &h, NULL);
}

static int health_now(int port)
{
    rpc_client_t *client = rpc_client_create(1);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    rpc_channel_t *ch = rpc_channel_create(client, target, NULL);
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "";
    rpc_call_opts_t o = {.timeout_us = 5000000, .wait_for_ready = true};
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_channel_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                      &grpc__health__v1__health_check_response__descriptor, &o, &resp, &st);
    int status = resp ? (int)((Grpc__Health__V1__HealthCheckResponse *)resp)->status : -1;
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    rpc_channel_destroy(ch);
    rpc_client_destroy(client);
    return status;
}

static int h_start(svc_t *svc, void *ud, char *err, size_t err_len)
{
    (void)ud, (void)err, (void)err_len;
    /* Still loading: probes must see NOT_SERVING. */
    note("start health=%d", health_now(svc_port(svc)));
    svc_add_meta(svc, "pool", "demo-pool");
    if (g_fail_in_start)
        svc_fail(svc, "test: failed while starting");
    return LS_OK;
}

static int h_reload(svc_t *svc, void *ud, char *err, size_t err_len)
{
    (void)svc, (void)ud, (void)err, (void)err_len;
    note("reload");
    return LS_OK;
}

static void h_drain(svc_t *svc, void *ud, int64_t deadline_us)
{
    (void)svc, (void)ud;
    note("drain %s", deadline_us > ls_now_us() ? "before-deadline" : "late");
    if (g_hold_drain)
        wait_event("outside done", 10000); /* the server stays up for the outside's checks */
}

static void h_destroy(svc_t *svc, void *ud)
{
    (void)svc, (void)ud;
    note("destroy");
}

static const ls_opt_t demo_opts[] = {
    {"greeting", NULL, LS_OPT_STRING, &g_demo.greeting, "what the service answers", 0, 0},
    {"count", NULL, LS_OPT_INT, &g_demo.count, "a number", 1, 10},
};
static const ls_alias_t demo_aliases[] = {{"--threads", "rpc-threads"},
                                          {"DEMO_GREETING", "greeting"}};

static svc_spec_t demo_spec(void)
{
    g_demo.greeting = "hello";
    g_demo.count = 1;
    svc_spec_t spec = {
        .service = "demo",
        .program = "llmserve-demo",
        .summary = "a service for the runtime's tests",
        .default_listen = "127.0.0.1:0",
        .default_rpc_threads = 1,
        .default_grace_ms = 3000,
        .flush_ms = 100,
        .upstreams = true,
        .api_keys = true,
        .opts = demo_opts,
        .n_opts = sizeof(demo_opts) / sizeof(demo_opts[0]),
        .aliases = demo_aliases,
        .n_aliases = sizeof(demo_aliases) / sizeof(demo_aliases[0]),
        .hooks = {h_check, h_create, h_start, h_reload, h_drain, h_destroy},
        .ud = &g_demo,
        .reporter = &rec_reporter,
        .registrar = &rec_registrar,
    };
    return spec;
}

/* ---- running svc_main with stdout and stderr captured ---------------------------------- */

static int g_out[2], g_err[2];

static void capture(void)
{
    ls_log_set_level(LS_LOG_WARN);
    cr_assert_eq(pipe(g_out), 0);
    cr_assert_eq(pipe(g_err), 0);
    fflush(stdout);
    dup2(g_out[1], 1);
    dup2(g_err[1], 2);
}

/* What the process wrote so far (non-blocking). */
static const char *drained(int fd)
{
    static char buf[2][16384];
    static size_t len[2];
    int w = fd == g_out[0] ? 0 : 1;
    fcntl(fd, F_SETFL, O_NONBLOCK);
    ssize_t n;
    while ((n = read(fd, buf[w] + len[w], sizeof(buf[w]) - 1 - len[w])) > 0)
        len[w] += (size_t)n;
    buf[w][len[w]] = '\0';
    return buf[w];
}

/* The runtime makes its own reporter from --metrics (no recording one in the spec). */
static bool g_own_reporter;

static int run(char **argv)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    svc_spec_t spec = demo_spec();
    if (g_own_reporter)
        spec.reporter = NULL;
    fflush(stdout);
    int status = svc_main(&spec, argc, argv);
    fflush(stdout);
    return status;
}

#define RUN(...) run((char *[]){"llmserve-demo", __VA_ARGS__, NULL})

TestSuite(svc_options, .init = capture);

Test(svc_options, help_lists_every_option_with_its_variable)
{
    cr_assert_eq(RUN("--help"), 0);
    const char *out = drained(g_out[0]);
    static const char *const want[] = {"usage: llmserve-demo",
                                       "--listen STR",
                                       "LLMSERVE_DEMO_LISTEN",
                                       "--rpc-threads INT",
                                       "LLMSERVE_DEMO_RPC_THREADS",
                                       "--grace-ms",
                                       "--log-level",
                                       "LLMSERVE_LOG_LEVEL",
                                       "--log-format",
                                       "--tls-cert",
                                       "--tls-client-ca",
                                       "--upstream-tls-ca",
                                       "--api-keys",
                                       "--metrics STR",
                                       "LLMSERVE_DEMO_METRICS",
                                       "--metrics-interval-ms INT",
                                       "--metrics-instance STR",
                                       "--greeting STR",
                                       "LLMSERVE_DEMO_GREETING",
                                       "--count INT",
                                       "--threads -> --rpc-threads",
                                       "DEMO_GREETING -> --greeting"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        cr_assert_not_null(strstr(out, want[i]), "no \"%s\" in:\n%s", want[i], out);
    cr_assert_eq(event_at("create"), -1, "--help starts nothing");
}

Test(svc_options, version)
{
    cr_assert_eq(RUN("--version"), 0);
    cr_assert_not_null(strstr(drained(g_out[0]), "llmserve-demo "));
}

Test(svc_options, usage_errors_exit_2_naming_the_flag)
{
    static const struct {
        const char *a, *b, *says;
    } cases[] = {
        {"--bogus", NULL, "--bogus"},
        {"--count", "11", "--count"},
        {"--rpc-threads", "many", "--rpc-threads"},
        {"--log-level", "loud", "--log-level"},
        {"--log-format", "yaml", "--log-format"},
        {"--tls-cert", "/nonexistent.pem", "--tls-key"},
        {"--tls-client-ca", "/x.pem", "--tls-client-ca"},
        {"--upstream-tls-cert", "/x.pem", "--upstream-tls-key"},
        {"--api-keys", "/nonexistent-keys", "--api-keys"},
        {"--greeting", "forbidden", "--greeting"},
        {"--metrics-interval-ms", "5", "--metrics-interval-ms"},
        {"stray", NULL, "stray"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[] = {"llmserve-demo", (char *)cases[i].a, (char *)cases[i].b, NULL};
        cr_assert_eq(run(argv), 2, "%s %s", cases[i].a, cases[i].b ? cases[i].b : "");
        const char *e = drained(g_err[0]);
        cr_assert_not_null(strstr(e, cases[i].says), "case %zu: %s", i, e);
        cr_assert_not_null(strstr(e, "llmserve-demo: "), "%s", e);
    }
    cr_assert_eq(event_at("create"), -1, "a bad option starts nothing");
}

Test(svc_options, bad_environment_value_exits_2_naming_variable_and_flag)
{
    setenv("LLMSERVE_DEMO_COUNT", "0", 1);
    cr_assert_eq(RUN("--greeting", "x"), 2);
    const char *e = drained(g_err[0]);
    cr_assert_not_null(strstr(e, "LLMSERVE_DEMO_COUNT (--count)"), "%s", e);
}

/* ---- the lifecycle ------------------------------------------------------------------ */

static pthread_t g_main;
static int g_port;
static char g_reply[64];
static int g_health_serving;

static int port_from_stdout(int timeout_ms)
{
    for (int i = 0; i < timeout_ms / 10; i++) {
        const char *out = drained(g_out[0]);
        const char *l = strstr(out, "LISTENING port=");
        if (l && strstr(out, "SERVING\n"))
            return atoi(l + 15);
        usleep(10000);
    }
    return -1;
}

static void *outside(void *arg)
{
    (void)arg;
    g_port = port_from_stdout(20000);
    if (g_port <= 0) {
        pthread_kill(g_main, SIGTERM);
        return NULL;
    }
    g_health_serving = health_now(g_port);
    rpc_client_t *client = rpc_client_create(1);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", g_port);
    rpc_channel_t *ch = rpc_channel_create(client, target, NULL);
    Llmserve__Test__EchoRequest req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_call_opts_t o = {.timeout_us = 5000000};
    rpc_channel_unary(ch, "/llmserve.test.Echo/Unary", &req.base,
                      &llmserve__test__echo_reply__descriptor, &o, &resp, &st);
    if (resp) {
        snprintf(g_reply, sizeof(g_reply), "%s", ((Llmserve__Test__EchoReply *)resp)->text);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    rpc_channel_destroy(ch);
    rpc_client_destroy(client);
    pthread_kill(g_main, SIGHUP);
    wait_event("reload", 5000);
    pthread_kill(g_main, SIGTERM);
    return NULL;
}

/* The outside thread must not take the signals meant for svc_main's sigwait. */
static void block_stop_signals(void)
{
    g_main = pthread_self();
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

Test(svc_lifecycle, runs_in_order_and_stops_cleanly, .init = capture, .timeout = 60)
{
    block_stop_signals();
    pthread_t t;
    pthread_create(&t, NULL, outside, NULL);
    setenv("LLMSERVE_DEMO_GREETING", "from-env", 1);
    int status = RUN("--grace-ms", "2000", "--log-level", "warn");
    pthread_join(t, NULL);
    cr_assert_eq(status, 0, "stderr: %s", drained(g_err[0]));
    cr_assert_gt(g_port, 0, "no LISTENING/SERVING lines: %s", drained(g_out[0]));
    cr_assert_str_eq(g_reply, "from-env", "the variable set the option");
    cr_assert_eq(g_health_serving, RPC_HEALTH_SERVING);

    const char *order[] = {"check",
                           "create",
                           "start health=2", /* NOT_SERVING while starting */
                           "gauge llmserve_up{=} 1",
                           "register",
                           "reload",
                           "gauge llmserve_up{=} 0",
                           "deregister",
                           "drain before-deadline",
                           "destroy"};
    int prev = -1;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        int at = event_at(order[i]);
        cr_assert_gt(at, prev, "\"%s\" at %d, after %d", order[i], at, prev);
        prev = at;
    }
    cr_assert_str_eq(g_reg_name, "llmserve-demo");
    cr_assert_eq(g_reg_port, g_port);
    cr_assert_str_eq(g_reg_meta, "pool=demo-pool");
}

Test(svc_lifecycle, deprecated_names_still_work, .init = capture, .timeout = 60)
{
    setenv("DEMO_GREETING", "old-env", 1);
    block_stop_signals();
    pthread_t t;
    pthread_create(&t, NULL, outside, NULL);
    int status = RUN("--threads", "2", "--log-level", "warn");
    pthread_join(t, NULL);
    cr_assert_eq(status, 0);
    cr_assert_str_eq(g_reply, "old-env");
}

/* ---- svc_fail ------------------------------------------------------------------------ */

static int g_health_after_fail;

/* Plays a thread of the service that finds it cannot go on. */
static void *failer(void *arg)
{
    (void)arg;
    g_port = port_from_stdout(20000);
    if (g_port <= 0) {
        pthread_kill(g_main, SIGTERM);
        return NULL;
    }
    g_health_serving = health_now(g_port);
    svc_fail(g_svc, "test: the device is gone");
    /* At once, while the drain still holds the server up. */
    g_health_after_fail = health_now(g_port);
    svc_fail(g_svc, "test: a second failure"); /* logged, nothing more */
    note("outside done");
    return NULL;
}

Test(svc_lifecycle, svc_fail_from_another_thread_stops_as_sigterm_and_exits_1, .init = capture,
     .timeout = 60)
{
    block_stop_signals();
    g_hold_drain = true;
    pthread_t t;
    pthread_create(&t, NULL, failer, NULL);
    int64_t t0 = ls_now_us();
    int status = RUN("--grace-ms", "2000", "--log-level", "warn");
    pthread_join(t, NULL);
    const char *err = drained(g_err[0]);
    cr_assert_eq(status, 1, "stderr: %s", err);
    cr_assert_gt(g_port, 0, "no LISTENING/SERVING lines: %s", drained(g_out[0]));
    cr_assert_eq(g_health_serving, RPC_HEALTH_SERVING);
    cr_assert_eq(g_health_after_fail, RPC_HEALTH_NOT_SERVING, "health right after svc_fail");
    cr_assert_lt(ls_now_us() - t0, 20000000, "the stop took too long");
    cr_assert_not_null(strstr(err, "test: the device is gone"), "reason not logged: %s", err);
    cr_assert_not_null(strstr(err, "test: a second failure"), "second call not logged: %s", err);
    const char *order[] = {"register",     "gauge llmserve_up{=} 0",
                           "deregister",   "drain before-deadline",
                           "outside done", "destroy"};
    int prev = -1;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        int at = event_at(order[i]);
        cr_assert_gt(at, prev, "\"%s\" at %d, after %d", order[i], at, prev);
        prev = at;
    }
    cr_assert_eq(event_at("reload"), -1, "svc_fail is not a SIGHUP");
    /* The wake-up signal was taken: nothing is left pending for the next svc_main. */
    sigset_t pending;
    sigpending(&pending);
    cr_assert_not(sigismember(&pending, SIGTERM));
}

Test(svc_lifecycle, svc_fail_while_starting_never_serves_and_exits_1, .init = capture,
     .timeout = 60)
{
    block_stop_signals();
    g_fail_in_start = true;
    int status = RUN("--log-level", "warn");
    const char *err = drained(g_err[0]);
    cr_assert_eq(status, 1, "stderr: %s", err);
    const char *out = drained(g_out[0]);
    cr_assert_not_null(strstr(out, "LISTENING port="), "%s", out);
    cr_assert_null(strstr(out, "SERVING\n"), "a failed start printed SERVING: %s", out);
    cr_assert_not_null(strstr(err, "test: failed while starting"), "%s", err);
    cr_assert_eq(event_at("register"), -1, "a failed start registered");
    cr_assert_eq(event_at("deregister"), -1);
    cr_assert_eq(event_at("gauge llmserve_up{=} 1"), -1);
    cr_assert_gt(event_at("destroy"), event_at("drain before-deadline"));
    cr_assert_geq(event_at("drain before-deadline"), 0);
    sigset_t pending;
    sigpending(&pending);
    cr_assert_not(sigismember(&pending, SIGTERM), "svc_fail's SIGTERM was left pending");
}

/* ---- reporting to a collector (--metrics) -------------------------------------------- */

/* Runs the demo service with --metrics to a test collector and the extra flags, through
 * the outside thread's calls, SIGHUP and SIGTERM; returns the collector (the caller
 * destroys it) after checking the exit status. */
static metrics_sink_t *run_reporting(char *extra1, char *extra2)
{
    metrics_sink_t *k = metrics_sink_create(0);
    cr_assert_not_null(k);
    char addr[TEST_ADDR_LEN];
    test_addr(addr, metrics_sink_port(k));
    g_own_reporter = true;
    block_stop_signals();
    pthread_t t;
    pthread_create(&t, NULL, outside, NULL);
    int status = RUN("--metrics", addr, "--metrics-interval-ms", "50", "--log-level", "warn",
                     extra1 ? extra1 : "--grace-ms", extra2 ? extra2 : "1000");
    pthread_join(t, NULL);
    cr_assert_eq(status, 0, "stderr: %s", drained(g_err[0]));
    cr_assert_gt(g_port, 0);
    return k;
}

Test(svc_metrics, reports_up_and_every_call_with_its_method_and_code, .init = capture,
     .timeout = 60)
{
    metrics_sink_t *k = run_reporting(NULL, NULL);
    metrics_sink_report_t first;
    cr_assert(metrics_sink_report(k, 0, &first));
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%d", g_port);
    cr_expect(first.has_source);
    cr_expect_str_eq(first.service, "demo");
    cr_expect_str_eq(first.instance, want, "the advertised host and the bound port");
    cr_expect_eq(
        metrics_sink_counter(k, M_GRPC_HANDLED, "method=/llmserve.test.Echo/Unary,code=OK"), 1);
    /* The start hook's probe (NOT_SERVING) and the outside thread's. */
    cr_expect_eq(
        metrics_sink_counter(k, M_GRPC_HANDLED, "method=/grpc.health.v1.Health/Check,code=OK"), 2);
    double up = -1;
    cr_expect(metrics_sink_gauge(k, M_UP, "", &up, NULL), "llmserve_up, with no labels");
    cr_expect_eq(up, 0, "the last report left after the server stopped");
    metrics_sink_destroy(k);
}

Test(svc_metrics, a_wildcard_listen_reports_as_the_host_name, .init = capture, .timeout = 60)
{
    metrics_sink_t *k = run_reporting("--listen", "0.0.0.0:0");
    metrics_sink_report_t first;
    cr_assert(metrics_sink_report(k, 0, &first));
    char host[256] = "", want[300];
    gethostname(host, sizeof(host) - 1);
    snprintf(want, sizeof(want), "%s:%d", host, g_port);
    cr_expect_str_eq(first.instance, want);
    metrics_sink_destroy(k);
}

Test(svc_metrics, the_instance_name_can_be_given, .init = capture, .timeout = 60)
{
    setenv("LLMSERVE_DEMO_METRICS_INSTANCE", "pod-7", 1);
    metrics_sink_t *k = run_reporting(NULL, NULL);
    metrics_sink_report_t first;
    cr_assert(metrics_sink_report(k, 0, &first));
    cr_expect_str_eq(first.instance, "pod-7");
    metrics_sink_destroy(k);
}

Test(svc_metrics, reports_over_the_upstream_tls_settings, .init = capture, .timeout = 60)
{
    test_certs_t certs;
    cr_assert_eq(test_certs_make(&certs), 0);
    /* The collector asks for a client certificate: only the upstream settings have one. */
    metrics_sink_t *k = metrics_sink_create_tls(0, certs.server_cert, certs.server_key, certs.ca);
    cr_assert_not_null(k);
    char addr[TEST_ADDR_LEN];
    test_addr(addr, metrics_sink_port(k));
    g_own_reporter = true;
    block_stop_signals();
    pthread_t t;
    pthread_create(&t, NULL, outside, NULL);
    int status = RUN("--metrics", addr, "--metrics-interval-ms", "50", "--upstream-tls-ca",
                     certs.ca, "--upstream-tls-cert", certs.client_cert, "--upstream-tls-key",
                     certs.client_key, "--log-level", "warn");
    pthread_join(t, NULL);
    cr_assert_eq(status, 0, "stderr: %s", drained(g_err[0]));
    cr_expect_eq(
        metrics_sink_counter(k, M_GRPC_HANDLED, "method=/llmserve.test.Echo/Unary,code=OK"), 1);
    metrics_sink_destroy(k);
    test_certs_remove(&certs);
}
