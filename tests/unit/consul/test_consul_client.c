/*
 * test_consul_client.c - libs/consul against a scripted HTTP server in the test process
 * (support/http_responder.h): the environment, the register body, the agent calls and
 * their errors, parsing the health answer (and refusing malformed ones), TLS, and the
 * watch's rules (deliveries, the index, back-off, rate limit, a prompt stop).
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "consul/consul.h"
#include "support/certs.h"
#include "support/http_responder.h"
#include "support/tmpdir.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOKEN "5e0b7c1a-77f6-4a0e-9d1e-secret-token"

static const char *const consul_vars[] = {"CONSUL_HTTP_ADDR",       "CONSUL_HTTP_TOKEN",
                                          "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_SSL",
                                          "CONSUL_CACERT",          "CONSUL_CAPATH",
                                          "CONSUL_CLIENT_CERT",     "CONSUL_CLIENT_KEY",
                                          "CONSUL_TLS_SERVER_NAME", "CONSUL_HTTP_SSL_VERIFY"};

static responder_t *g_resp;
static consul_t *g_consul;

static void quiet(void)
{
    ls_log_set_level(getenv("CONSUL_TEST_DEBUG") ? LS_LOG_DEBUG : LS_LOG_ERROR);
    for (size_t i = 0; i < sizeof(consul_vars) / sizeof(consul_vars[0]); i++)
        unsetenv(consul_vars[i]);
}

static void teardown(void)
{
    consul_destroy(g_consul);
    g_consul = NULL;
    responder_destroy(g_resp);
    g_resp = NULL;
}

/* A responder and a client pointed at it (with the token when with_token). */
static void start_pair(bool with_token)
{
    g_resp = responder_start(NULL);
    cr_assert_not_null(g_resp);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", responder_port(g_resp));
    consul_config_t cfg = {.base_url = url,
                           .unix_socket = NULL,
                           .token = with_token ? TOKEN : NULL,
                           .ca_file = NULL,
                           .ca_path = NULL,
                           .client_cert = NULL,
                           .client_key = NULL,
                           .tls_server_name = NULL,
                           .verify = true,
                           .addr_set = true};
    g_consul = consul_create(&cfg);
    cr_assert_not_null(g_consul);
}

static void reply(int status, uint64_t index, const char *body, int delay_ms)
{
    responder_reply_t r = {.status = status,
                           .index = index,
                           .index_text = NULL,
                           .body = body,
                           .body_len = 0,
                           .delay_ms = delay_ms};
    responder_push(g_resp, &r);
}

static void default_reply(int status, uint64_t index, const char *body, int delay_ms)
{
    responder_reply_t r = {.status = status,
                           .index = index,
                           .index_text = NULL,
                           .body = body,
                           .body_len = 0,
                           .delay_ms = delay_ms};
    responder_set_default(g_resp, &r);
}

static const responder_request_t *request(size_t i)
{
    cr_assert(responder_wait(g_resp, i + 1, 10000), "request %zu never came", i);
    return responder_request(g_resp, i);
}

/* The query parameter key of request i, or "<absent>". */
static const char *query_of(size_t i, const char *key)
{
    static char buf[8][128];
    static int next;
    char *out = buf[next++ % 8];
    if (!responder_query_value(request(i), key, out, 128))
        snprintf(out, 128, "<absent>");
    return out;
}

/* Log lines go to a temporary file from here on; log_text reads them back. */
static char g_log_path[64];

static void capture_log(void)
{
    snprintf(g_log_path, sizeof(g_log_path), "/tmp/consul-log-XXXXXX");
    int fd = mkstemp(g_log_path);
    cr_assert(fd >= 0);
    ls_log_set_level(LS_LOG_INFO);
    ls_log_set_fd(fd);
}

static char *log_text(void)
{
    FILE *f = fopen(g_log_path, "r");
    cr_assert_not_null(f);
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static void end_log_capture(void)
{
    ls_log_set_fd(2);
    if (g_log_path[0])
        unlink(g_log_path);
    g_log_path[0] = '\0';
}

/* ---- configuration from the environment --------------------------------------------------- */

TestSuite(config, .init = quiet, .timeout = 30);

static consul_config_t env_ok(void)
{
    consul_config_t cfg;
    char err[256] = "";
    int rc = consul_config_from_env(&cfg, err, sizeof(err));
    cr_assert_eq(rc, LS_OK, "from_env failed: %s", err);
    return cfg;
}

static void env_bad(const char *why_contains)
{
    consul_config_t cfg;
    char err[256] = "";
    cr_assert_eq(consul_config_from_env(&cfg, err, sizeof(err)), LS_ERR_INVALID);
    cr_expect(strstr(err, why_contains) != NULL, "reason \"%s\" lacks \"%s\"", err, why_contains);
    cr_expect_null(cfg.base_url);
    cr_expect_null(cfg.token);
    cr_expect(strstr(err, TOKEN) == NULL, "the reason shows the token");
    consul_config_free(&cfg);
}

Test(config, defaults)
{
    consul_config_t cfg = env_ok();
    cr_expect_str_eq(cfg.base_url, "http://127.0.0.1:8500");
    cr_expect_not(cfg.addr_set);
    cr_expect(cfg.verify);
    cr_expect_null(cfg.unix_socket);
    cr_expect_null(cfg.token);
    cr_expect_null(cfg.ca_file);
    cr_expect_null(cfg.ca_path);
    cr_expect_null(cfg.client_cert);
    cr_expect_null(cfg.client_key);
    cr_expect_null(cfg.tls_server_name);
    consul_config_free(&cfg);
    consul_config_free(&cfg); /* twice is harmless */
    consul_config_free(NULL);
}

Test(config, address_forms)
{
    static const struct {
        const char *addr, *ssl, *url, *socket;
    } cases[] = {
        {"10.0.0.7:8501", NULL, "http://10.0.0.7:8501", NULL},
        {"consul.service:8500", NULL, "http://consul.service:8500", NULL},
        {"http://agent:1", NULL, "http://agent:1", NULL},
        {"https://agent:8501", NULL, "https://agent:8501", NULL},
        {"https://agent:8501/", NULL, "https://agent:8501", NULL},
        {"agent", NULL, "http://agent", NULL},
        {"[::1]:8500", NULL, "http://[::1]:8500", NULL},
        {"agent:8501", "true", "https://agent:8501", NULL},
        {"http://agent:8501", "1", "https://agent:8501", NULL}, /* never back to http */
        {"https://agent:8501", "false", "https://agent:8501", NULL},
        {"unix:///run/consul/agent.sock", NULL, "http://localhost", "/run/consul/agent.sock"},
        {"", NULL, "http://127.0.0.1:8500", NULL}, /* empty is unset */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        setenv("CONSUL_HTTP_ADDR", cases[i].addr, 1);
        if (cases[i].ssl)
            setenv("CONSUL_HTTP_SSL", cases[i].ssl, 1);
        else
            unsetenv("CONSUL_HTTP_SSL");
        consul_config_t cfg = env_ok();
        cr_expect_str_eq(cfg.base_url, cases[i].url, "%s", cases[i].addr);
        cr_expect_eq(cfg.addr_set, cases[i].addr[0] != '\0', "%s", cases[i].addr);
        if (cases[i].socket)
            cr_expect_str_eq(cfg.unix_socket, cases[i].socket);
        else
            cr_expect_null(cfg.unix_socket, "%s", cases[i].addr);
        consul_config_free(&cfg);
    }
}

Test(config, bad_addresses)
{
    static const char *const bad[] = {
        "ftp://agent:21", "agent:0",   "agent:65536", "agent:http",      "::1",   "agent:8500/v1",
        "user@agent:1",   "unix://",   "[::1",        "agent :1",        ":8500", "https://",
        "agent:8500x",    "[zz]:8500", "agent:1:2",   "agent:123456789",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("CONSUL_HTTP_ADDR", bad[i], 1);
        consul_config_t cfg;
        char err[256] = "";
        cr_expect_eq(consul_config_from_env(&cfg, err, sizeof(err)), LS_ERR_INVALID, "%s", bad[i]);
        cr_expect(strstr(err, "CONSUL_HTTP_ADDR") != NULL, "%s: %s", bad[i], err);
        consul_config_free(&cfg);
    }
}

Test(config, token_and_token_file)
{
    setenv("CONSUL_HTTP_TOKEN", "from-the-variable", 1);
    consul_config_t cfg = env_ok();
    cr_expect_str_eq(cfg.token, "from-the-variable");
    consul_config_free(&cfg);

    test_tmpdir_t d;
    cr_assert_eq(test_tmpdir_make(&d, "consul-token"), 0);
    char path[200];
    test_tmpdir_file(&d, "token", path, sizeof(path));
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "  \n" TOKEN "\n\n");
    fclose(f);
    setenv("CONSUL_HTTP_TOKEN_FILE", path, 1);
    cfg = env_ok();
    cr_expect_str_eq(cfg.token, TOKEN, "the file wins, whitespace trimmed");
    consul_config_free(&cfg);

    f = fopen(path, "w");
    fprintf(f, "\n");
    fclose(f);
    cfg = env_ok();
    cr_expect_null(cfg.token, "an empty file is no token (not the variable's)");
    consul_config_free(&cfg);

    f = fopen(path, "w");
    fprintf(f, "two\nlines");
    fclose(f);
    env_bad("CONSUL_HTTP_TOKEN_FILE");

    unsetenv("CONSUL_HTTP_TOKEN_FILE");
    setenv("CONSUL_HTTP_TOKEN", TOKEN "\r\nX-Injected: 1", 1);
    env_bad("CONSUL_HTTP_TOKEN");

    setenv("CONSUL_HTTP_TOKEN_FILE", "/nonexistent/consul/token", 1);
    env_bad("/nonexistent/consul/token");
    test_tmpdir_remove(&d);
}

Test(config, tls_variables)
{
    setenv("CONSUL_HTTP_ADDR", "https://agent:8501", 1);
    setenv("CONSUL_CACERT", "/etc/consul/ca.pem", 1);
    setenv("CONSUL_CAPATH", "/etc/consul/cas", 1);
    setenv("CONSUL_CLIENT_CERT", "/etc/consul/client.pem", 1);
    setenv("CONSUL_CLIENT_KEY", "/etc/consul/client-key.pem", 1);
    setenv("CONSUL_TLS_SERVER_NAME", "server.dc1.consul", 1);
    setenv("CONSUL_HTTP_SSL_VERIFY", "false", 1);
    consul_config_t cfg = env_ok();
    cr_expect_str_eq(cfg.ca_file, "/etc/consul/ca.pem");
    cr_expect_str_eq(cfg.ca_path, "/etc/consul/cas");
    cr_expect_str_eq(cfg.client_cert, "/etc/consul/client.pem");
    cr_expect_str_eq(cfg.client_key, "/etc/consul/client-key.pem");
    cr_expect_str_eq(cfg.tls_server_name, "server.dc1.consul");
    cr_expect_not(cfg.verify);
    consul_config_free(&cfg);

    setenv("CONSUL_HTTP_SSL_VERIFY", "T", 1);
    cfg = env_ok();
    cr_expect(cfg.verify);
    consul_config_free(&cfg);

    setenv("CONSUL_HTTP_SSL_VERIFY", "maybe", 1);
    env_bad("CONSUL_HTTP_SSL_VERIFY");
    unsetenv("CONSUL_HTTP_SSL_VERIFY");
    setenv("CONSUL_HTTP_SSL", "yes", 1); /* Go's ParseBool does not take it either */
    env_bad("CONSUL_HTTP_SSL");
    unsetenv("CONSUL_HTTP_SSL");

    unsetenv("CONSUL_CLIENT_KEY");
    env_bad("CONSUL_CLIENT_KEY");
    setenv("CONSUL_CLIENT_KEY", "/etc/consul/client-key.pem", 1);
    unsetenv("CONSUL_CLIENT_CERT");
    env_bad("CONSUL_CLIENT_CERT");
    setenv("CONSUL_CLIENT_CERT", "/etc/consul/client.pem", 1);

    setenv("CONSUL_TLS_SERVER_NAME", "server.dc1.consul:8501", 1);
    env_bad("CONSUL_TLS_SERVER_NAME");
}

/* ---- the agent's service endpoints -------------------------------------------------------- */

TestSuite(agent, .init = quiet, .fini = teardown, .timeout = 30);

static const char *json_str(const cJSON *o, const char *key)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert(cJSON_IsString(m), "%s is not a string", key);
    return m->valuestring;
}

static cJSON *register_and_parse(const consul_service_t *s)
{
    consul_result_t res;
    cr_assert_eq(consul_register(g_consul, s, 5000, &res), LS_OK, "%s", res.err);
    cr_expect_eq(res.status, 200);
    const responder_request_t *q = request(0);
    cr_expect_str_eq(q->method, "PUT");
    cr_expect_str_eq(q->path, "/v1/agent/service/register");
    char ct[64] = "";
    cr_expect(responder_header(q, "Content-Type", ct, sizeof(ct)));
    cr_expect_str_eq(ct, "application/json");
    cJSON *o = cJSON_Parse(q->body);
    cr_assert(cJSON_IsObject(o), "body is not a JSON object: %s", q->body);
    return o;
}

Test(agent, register_body_has_every_field)
{
    start_pair(true);
    static const char *const tags[] = {"llmserve", "pool=small"};
    static const consul_kv_t meta[] = {{"pool", "small"}, {"model", "tiny-small"}};
    consul_service_t s = {.id = "llmserve-inference-h1-7001",
                          .name = "llmserve-inference",
                          .address = "10.1.2.3",
                          .port = 7001,
                          .tags = tags,
                          .n_tags = 2,
                          .meta = meta,
                          .n_meta = 2,
                          .grpc_target = "10.1.2.3:7001",
                          .grpc_use_tls = true,
                          .tls_skip_verify = false,
                          .tls_server_name = NULL,
                          .check_interval_ms = 1500,
                          .check_timeout_ms = 500,
                          .deregister_after_ms = 60000};
    cJSON *o = register_and_parse(&s);
    cr_expect_str_eq(json_str(o, "ID"), "llmserve-inference-h1-7001");
    cr_expect_str_eq(json_str(o, "Name"), "llmserve-inference");
    cr_expect_str_eq(json_str(o, "Address"), "10.1.2.3");
    const cJSON *port = cJSON_GetObjectItemCaseSensitive(o, "Port");
    cr_expect(cJSON_IsNumber(port) && port->valuedouble == 7001);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "Tags");
    cr_assert(cJSON_IsArray(t) && cJSON_GetArraySize(t) == 2);
    cr_expect_str_eq(cJSON_GetArrayItem(t, 0)->valuestring, "llmserve");
    cr_expect_str_eq(cJSON_GetArrayItem(t, 1)->valuestring, "pool=small");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "Meta");
    cr_assert(cJSON_IsObject(m) && cJSON_GetArraySize(m) == 2);
    cr_expect_str_eq(json_str(m, "pool"), "small");
    cr_expect_str_eq(json_str(m, "model"), "tiny-small");
    const cJSON *chk = cJSON_GetObjectItemCaseSensitive(o, "Check");
    cr_assert(cJSON_IsObject(chk));
    cr_expect(strlen(json_str(chk, "Name")) > 0);
    cr_expect_str_eq(json_str(chk, "GRPC"), "10.1.2.3:7001");
    cr_expect(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(chk, "GRPCUseTLS")));
    cr_expect(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(chk, "TLSSkipVerify")));
    cr_expect_str_eq(json_str(chk, "TLSServerName"), "10.1.2.3", "the target's host");
    cr_expect_str_eq(json_str(chk, "Interval"), "1500ms");
    cr_expect_str_eq(json_str(chk, "Timeout"), "500ms");
    cr_expect_str_eq(json_str(chk, "DeregisterCriticalServiceAfter"), "60000ms");
    cJSON_Delete(o);

    char tok[128] = "";
    cr_expect(responder_header(request(0), "X-Consul-Token", tok, sizeof(tok)));
    cr_expect_str_eq(tok, TOKEN);
}

Test(agent, register_minimal_and_check_variants)
{
    start_pair(false);
    consul_service_t s = {.id = "r1",
                          .name = "llmserve-router",
                          .address = NULL,
                          .port = 7000,
                          .tags = NULL,
                          .n_tags = 0,
                          .meta = NULL,
                          .n_meta = 0,
                          .grpc_target = NULL,
                          .grpc_use_tls = false,
                          .tls_skip_verify = false,
                          .tls_server_name = NULL,
                          .check_interval_ms = 0,
                          .check_timeout_ms = 0,
                          .deregister_after_ms = 0};
    cJSON *o = register_and_parse(&s);
    cr_expect_str_eq(json_str(o, "Address"), "", "empty: the node's address");
    cr_expect(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(o, "Tags")));
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "Tags")), 0);
    cr_expect(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(o, "Meta")));
    cr_expect_null(cJSON_GetObjectItemCaseSensitive(o, "Check"));
    cJSON_Delete(o);
    char tok[128];
    cr_expect_not(responder_header(request(0), "X-Consul-Token", tok, sizeof(tok)),
                  "no token, no header");

    /* Plaintext check: no TLS fields; no Timeout or deregistration when 0. */
    s.grpc_target = "127.0.0.1:7000";
    s.check_interval_ms = 2000;
    consul_result_t res;
    cr_assert_eq(consul_register(g_consul, &s, 5000, &res), LS_OK, "%s", res.err);
    o = cJSON_Parse(request(1)->body);
    const cJSON *chk = cJSON_GetObjectItemCaseSensitive(o, "Check");
    cr_assert(cJSON_IsObject(chk));
    cr_expect(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(chk, "GRPCUseTLS")));
    cr_expect_null(cJSON_GetObjectItemCaseSensitive(chk, "TLSServerName"));
    cr_expect_null(cJSON_GetObjectItemCaseSensitive(chk, "Timeout"));
    cr_expect_null(cJSON_GetObjectItemCaseSensitive(chk, "DeregisterCriticalServiceAfter"));
    cr_expect_str_eq(json_str(chk, "Interval"), "2000ms");
    cJSON_Delete(o);

    /* TLS check on an IPv6 target with a service suffix; then an explicit server name. */
    s.grpc_target = "[fd00::5]:7000/grpc.health.v1.Health";
    s.grpc_use_tls = true;
    s.tls_skip_verify = true;
    cr_assert_eq(consul_register(g_consul, &s, 5000, &res), LS_OK, "%s", res.err);
    o = cJSON_Parse(request(2)->body);
    chk = cJSON_GetObjectItemCaseSensitive(o, "Check");
    cr_expect_str_eq(json_str(chk, "TLSServerName"), "fd00::5");
    cr_expect(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(chk, "TLSSkipVerify")));
    cJSON_Delete(o);
    s.tls_server_name = "router.llmserve.internal";
    cr_assert_eq(consul_register(g_consul, &s, 5000, &res), LS_OK, "%s", res.err);
    o = cJSON_Parse(request(3)->body);
    chk = cJSON_GetObjectItemCaseSensitive(o, "Check");
    cr_expect_str_eq(json_str(chk, "TLSServerName"), "router.llmserve.internal");
    cJSON_Delete(o);
}

Test(agent, register_refuses_an_incomplete_service_without_a_request)
{
    start_pair(false);
    static const char *const null_tag[] = {NULL};
    consul_service_t ok = {.id = "a",
                           .name = "b",
                           .address = NULL,
                           .port = 1,
                           .tags = NULL,
                           .n_tags = 0,
                           .meta = NULL,
                           .n_meta = 0,
                           .grpc_target = NULL,
                           .grpc_use_tls = false,
                           .tls_skip_verify = false,
                           .tls_server_name = NULL,
                           .check_interval_ms = 0,
                           .check_timeout_ms = 0,
                           .deregister_after_ms = 0};
    consul_service_t bad[6];
    for (int i = 0; i < 6; i++)
        bad[i] = ok;
    bad[0].id = NULL;
    bad[1].name = "";
    bad[2].port = 70000;
    bad[3].n_tags = 2; /* tags NULL */
    bad[4].tags = null_tag;
    bad[4].n_tags = 1;
    bad[5].grpc_target = "127.0.0.1:1"; /* no interval */
    for (int i = 0; i < 6; i++) {
        consul_result_t res;
        cr_expect_eq(consul_register(g_consul, &bad[i], 1000, &res), LS_ERR_INVALID, "case %d", i);
        cr_expect_eq(res.status, 0);
        cr_expect(res.err[0] != '\0');
    }
    usleep(100000);
    cr_expect_eq(responder_count(g_resp), 0);
}

Test(agent, register_errors)
{
    start_pair(true);
    consul_service_t s = {.id = "a",
                          .name = "b",
                          .address = NULL,
                          .port = 1,
                          .tags = NULL,
                          .n_tags = 0,
                          .meta = NULL,
                          .n_meta = 0,
                          .grpc_target = NULL,
                          .grpc_use_tls = false,
                          .tls_skip_verify = false,
                          .tls_server_name = NULL,
                          .check_interval_ms = 0,
                          .check_timeout_ms = 0,
                          .deregister_after_ms = 0};
    consul_result_t res;
    reply(403, 0, "Permission denied: token with AccessorID 'x' lacks service:write", 0);
    cr_expect_eq(consul_register(g_consul, &s, 5000, &res), LS_ERR_INVALID);
    cr_expect_eq(res.status, 403);
    cr_expect(strstr(res.err, "403") && strstr(res.err, "Permission denied"), "%s", res.err);
    cr_expect(strstr(res.err, TOKEN) == NULL);

    reply(500, 0, "rpc error making call: No cluster leader", 0);
    cr_expect_eq(consul_register(g_consul, &s, 5000, &res), LS_ERR_UNAVAILABLE);
    cr_expect_eq(res.status, 500);
    cr_expect(strstr(res.err, "No cluster leader") != NULL, "%s", res.err);

    /* No answer in time: no status, and the call keeps to its timeout. */
    reply(200, 0, "", 5000);
    int64_t t0 = ls_now_us();
    cr_expect_eq(consul_register(g_consul, &s, 300, &res), LS_ERR_UNAVAILABLE);
    int64_t took_ms = (ls_now_us() - t0) / 1000;
    cr_expect_eq(res.status, 0);
    cr_expect(took_ms < 3000, "a 300 ms call took %lld ms", (long long)took_ms);

    /* Nobody listening. */
    consul_config_t cfg = {.base_url = "http://127.0.0.1:1",
                           .unix_socket = NULL,
                           .token = NULL,
                           .ca_file = NULL,
                           .ca_path = NULL,
                           .client_cert = NULL,
                           .client_key = NULL,
                           .tls_server_name = NULL,
                           .verify = true,
                           .addr_set = true};
    consul_t *c = consul_create(&cfg);
    cr_assert_not_null(c);
    cr_expect_str_eq(consul_where(c), "http://127.0.0.1:1");
    cr_expect_eq(consul_register(c, &s, 2000, &res), LS_ERR_UNAVAILABLE);
    cr_expect_eq(res.status, 0);
    cr_expect(res.err[0] != '\0');
    consul_destroy(c);
}

Test(agent, deregister_path_is_escaped)
{
    start_pair(true);
    consul_result_t res;
    cr_expect_eq(consul_deregister(g_consul, "llmserve-router-h1-7000", 5000, &res), LS_OK);
    cr_expect_str_eq(request(0)->method, "PUT");
    cr_expect_str_eq(request(0)->path, "/v1/agent/service/deregister/llmserve-router-h1-7000");
    char tok[128] = "";
    cr_expect(responder_header(request(0), "X-Consul-Token", tok, sizeof(tok)));
    cr_expect_str_eq(tok, TOKEN);
    cr_expect_eq(consul_deregister(g_consul, "a b/c?d", 5000, &res), LS_OK);
    cr_expect_str_eq(request(1)->path, "/v1/agent/service/deregister/a%20b%2Fc%3Fd");
    cr_expect_str_eq(request(1)->query, "");
    reply(403, 0, "ACL not found", 0);
    cr_expect_eq(consul_deregister(g_consul, "x", 5000, &res), LS_ERR_INVALID);
    cr_expect_eq(res.status, 403);
    cr_expect_eq(consul_deregister(g_consul, "", 5000, &res), LS_ERR_INVALID);
}

Test(agent, present_404_and_old_500)
{
    start_pair(false);
    consul_result_t res;
    reply(200, 0, "{\"ID\":\"r1\",\"Service\":\"llmserve-router\"}", 0);
    cr_expect_eq(consul_service_present(g_consul, "r1", 5000, &res), LS_OK);
    cr_expect_str_eq(request(0)->method, "GET");
    cr_expect_str_eq(request(0)->path, "/v1/agent/service/r1");

    reply(404, 0, "unknown service ID: r1", 0);
    cr_expect_eq(consul_service_present(g_consul, "r1", 5000, &res), LS_ERR_NOT_FOUND);
    cr_expect_eq(res.status, 404);

    reply(500, 0, "Unknown service ID \"r1\". Ensure that the service ID is passed", 0);
    cr_expect_eq(consul_service_present(g_consul, "r1", 5000, &res), LS_ERR_NOT_FOUND,
                 "older agents: 500 unknown service");
    cr_expect_eq(res.status, 500);

    reply(500, 0, "rpc error: No cluster leader", 0);
    cr_expect_eq(consul_service_present(g_consul, "r1", 5000, &res), LS_ERR_UNAVAILABLE);

    reply(403, 0, "Permission denied", 0);
    cr_expect_eq(consul_service_present(g_consul, "r1", 5000, &res), LS_ERR_INVALID);
    cr_expect_eq(res.status, 403);
}

/* ---- the health endpoint ------------------------------------------------------------------ */

TestSuite(health, .init = quiet, .fini = teardown, .timeout = 60);

static const char HEALTH_BODY[] =
    "[{\"Node\":{\"Node\":\"n2\",\"Address\":\"10.0.0.2\"},"
    "  \"Service\":{\"ID\":\"web-b\",\"Service\":\"web\",\"Tags\":[\"t1\",\"t2\"],"
    "  \"Address\":\"\",\"Port\":7002,\"Meta\":{\"pool\":\"large\",\"model\":\"m2\"}},"
    "  \"Checks\":[{\"Status\":\"passing\"}]},"
    " {\"Node\":{\"Node\":\"n1\",\"Address\":\"10.0.0.1\"},"
    "  \"Service\":{\"ID\":\"web-a\",\"Service\":\"web\",\"Tags\":null,"
    "  \"Address\":\"192.168.1.1\",\"Port\":7001,\"Meta\":null},\"Checks\":[]}]";

Test(health, parses_sorts_and_falls_back_to_the_node_address)
{
    start_pair(true);
    reply(200, 1234, HEALTH_BODY, 0);
    consul_instance_t *list = NULL;
    size_t n = 0;
    uint64_t index = 0;
    consul_result_t res;
    cr_assert_eq(consul_health_service(g_consul, "web", true, 0, 30000, &list, &n, &index, &res),
                 LS_OK, "%s", res.err);
    cr_expect_eq(index, 1234);
    cr_assert_eq(n, 2);
    cr_expect_str_eq(list[0].id, "web-a", "sorted by id");
    cr_expect_str_eq(list[0].node, "n1");
    cr_expect_str_eq(list[0].address, "192.168.1.1", "the service's own address first");
    cr_expect_eq(list[0].port, 7001);
    cr_expect_eq(list[0].n_tags, 0);
    cr_expect_eq(list[0].n_meta, 0);
    cr_expect_null(consul_instance_meta(&list[0], "pool"));
    cr_expect_str_eq(list[1].id, "web-b");
    cr_expect_str_eq(list[1].address, "10.0.0.2", "empty Service.Address: the node's");
    cr_expect_eq(list[1].port, 7002);
    cr_assert_eq(list[1].n_tags, 2);
    cr_expect_str_eq(list[1].tags[0], "t1");
    cr_expect_str_eq(list[1].tags[1], "t2");
    cr_assert_eq(list[1].n_meta, 2);
    cr_expect_str_eq(list[1].meta_keys[0], "model", "meta sorted by key");
    cr_expect_str_eq(consul_instance_meta(&list[1], "pool"), "large");
    cr_expect_str_eq(consul_instance_meta(&list[1], "model"), "m2");
    consul_instances_free(list, n);

    const responder_request_t *q = request(0);
    cr_expect_str_eq(q->method, "GET");
    cr_expect_str_eq(q->path, "/v1/health/service/web");
    cr_expect_str_eq(query_of(0, "passing"), "true");
    cr_expect_str_eq(query_of(0, "index"), "<absent>", "index 0 does not block");
    cr_expect_str_eq(query_of(0, "wait"), "<absent>");
    char tok[128] = "";
    cr_expect(responder_header(q, "X-Consul-Token", tok, sizeof(tok)));
    cr_expect_str_eq(tok, TOKEN);

    /* A blocking query: index and wait sent; an empty list; no index header: 0. */
    reply(200, 0, "[]", 0);
    cr_assert_eq(consul_health_service(g_consul, "web", false, 42, 2500, &list, &n, &index, &res),
                 LS_OK, "%s", res.err);
    cr_expect_eq(n, 0);
    cr_expect_eq(index, 0);
    consul_instances_free(list, n);
    cr_expect_str_eq(query_of(1, "index"), "42");
    cr_expect_str_eq(query_of(1, "wait"), "2500ms");
    cr_expect_str_eq(query_of(1, "passing"), "<absent>");
}

Test(health, same_id_on_two_nodes_sorts_by_node)
{
    start_pair(false);
    reply(200, 7,
          "[{\"Node\":{\"Node\":\"zeta\",\"Address\":\"10.0.0.9\"},"
          "\"Service\":{\"ID\":\"web\",\"Port\":1}},"
          "{\"Node\":{\"Node\":\"alpha\",\"Address\":\"10.0.0.8\"},"
          "\"Service\":{\"ID\":\"web\",\"Port\":1}}]",
          0);
    consul_instance_t *list;
    size_t n;
    uint64_t index;
    consul_result_t res;
    cr_assert_eq(consul_health_service(g_consul, "web", true, 0, 1000, &list, &n, &index, &res),
                 LS_OK, "%s", res.err);
    cr_assert_eq(n, 2);
    cr_expect_str_eq(list[0].node, "alpha");
    cr_expect_str_eq(list[1].node, "zeta");
    consul_instances_free(list, n);
}

Test(health, malformed_bodies_are_format_errors)
{
    start_pair(false);
    static const char *const bodies[] = {
        "",
        "{",
        "{}",
        "null",
        "\"text\"",
        "[1]",
        "[{}]",
        "[{\"Service\":[]}]",
        "[{\"Service\":{\"ID\":7,\"Address\":\"a\"}}]",
        "[{\"Service\":{\"Address\":\"a\"}}]",
        "[{\"Service\":{\"ID\":\"\",\"Address\":\"a\"}}]",
        "[{\"Service\":{\"ID\":\"x\"}}]",
        "[{\"Node\":{\"Address\":\"\"},\"Service\":{\"ID\":\"x\",\"Address\":\"\"}}]",
        "[{\"Node\":\"n1\",\"Service\":{\"ID\":\"x\",\"Address\":\"a\"}}]",
        "[{\"Node\":{\"Address\":5},\"Service\":{\"ID\":\"x\"}}]",
        "[{\"Service\":{\"ID\":\"x\",\"Address\":\"a\",\"Port\":\"7000\"}}]",
        "[{\"Service\":{\"ID\":\"x\",\"Address\":\"a\",\"Port\":70000}}]",
        "[{\"Service\":{\"ID\":\"x\",\"Address\":\"a\",\"Port\":-1}}]",
        "[{\"Service\":{\"ID\":\"x\",\"Address\":\"a\",\"Port\":1.5}}]",
        "[{\"Service\":{\"ID\":\"x\",\"Address\":\"a\",\"Tags\":\"t\"}}]",
        "[{\"Service\":{\"ID\":\"x\",\"Address\":\"a\",\"Tags\":[\"t\",3]}}]",
        "[{\"Service\":{\"ID\":\"x\",\"Address\":\"a\",\"Meta\":[]}}]",
        "[{\"Service\":{\"ID\":\"x\",\"Address\":\"a\",\"Meta\":{\"k\":1}}}]",
        "[{\"Service\":{\"ID\":\"x\",\"Address\":[\"a\"]}}]",
        "[{\"Service\":{\"ID\":\"x\",\"Address\":\"a\"}},7]",
        "[] trailing",
        "[{\"Service\":{\"ID\":\"x\",\"Address\":\"a\"}}",
    };
    size_t nb = sizeof(bodies) / sizeof(bodies[0]);
    for (size_t i = 0; i < nb; i++) {
        reply(200, 5, bodies[i], 0);
        consul_instance_t *list = (consul_instance_t *)1;
        size_t n = 99;
        uint64_t index = 99;
        consul_result_t res;
        int rc = consul_health_service(g_consul, "web", true, 0, 1000, &list, &n, &index, &res);
        cr_expect_eq(rc, LS_ERR_FORMAT, "body %zu %s gave %d", i, bodies[i], rc);
        cr_expect_null(list, "body %zu", i);
        cr_expect_eq(n, 0);
        cr_expect(res.err[0] != '\0');
        if (rc == LS_OK)
            consul_instances_free(list, n);
    }

    /* A NUL inside, and nesting deeper than the parser goes. */
    static const char nul_body[] = "[]\0[1]";
    responder_reply_t r = {.status = 200,
                           .index = 5,
                           .index_text = NULL,
                           .body = nul_body,
                           .body_len = sizeof(nul_body) - 1,
                           .delay_ms = 0};
    responder_push(g_resp, &r);
    size_t depth = 5000;
    char *deep = malloc(depth * 2 + 1);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    deep[depth * 2] = '\0';
    reply(200, 5, deep, 0);
    free(deep);
    for (int i = 0; i < 2; i++) {
        consul_instance_t *list;
        size_t n;
        uint64_t index;
        consul_result_t res;
        cr_expect_eq(consul_health_service(g_consul, "web", true, 0, 1000, &list, &n, &index, &res),
                     LS_ERR_FORMAT, "case %d", i);
        cr_expect_null(list);
    }
}

Test(health, a_malformed_index_header_is_a_format_error)
{
    start_pair(false);
    responder_reply_t r = {.status = 200,
                           .index = 0,
                           .index_text = "12abc",
                           .body = "[]",
                           .body_len = 0,
                           .delay_ms = 0};
    responder_push(g_resp, &r);
    r.index_text = "99999999999999999999999"; /* over 2^64 */
    responder_push(g_resp, &r);
    for (int i = 0; i < 2; i++) {
        consul_instance_t *list;
        size_t n;
        uint64_t index;
        consul_result_t res;
        cr_expect_eq(consul_health_service(g_consul, "web", true, 0, 1000, &list, &n, &index, &res),
                     LS_ERR_FORMAT, "case %d", i);
        cr_expect_null(list);
    }
    r.index_text = "18446744073709551615"; /* 2^64 - 1 is fine */
    responder_push(g_resp, &r);
    consul_instance_t *list;
    size_t n;
    uint64_t index;
    consul_result_t res;
    cr_expect_eq(consul_health_service(g_consul, "web", true, 0, 1000, &list, &n, &index, &res),
                 LS_OK, "%s", res.err);
    cr_expect_eq(index, UINT64_MAX);
    consul_instances_free(list, n);
}

Test(health, an_oversized_answer_is_refused)
{
    start_pair(false);
    size_t len = ((size_t)17 << 20);
    char *big = malloc(len + 1);
    big[0] = '[';
    memset(big + 1, ' ', len - 2);
    big[len - 1] = ']';
    big[len] = '\0';
    reply(200, 5, big, 0);
    free(big);
    consul_instance_t *list;
    size_t n;
    uint64_t index;
    consul_result_t res;
    cr_expect_eq(consul_health_service(g_consul, "web", true, 0, 1000, &list, &n, &index, &res),
                 LS_ERR_FORMAT);
    cr_expect_null(list);
    cr_expect(strstr(res.err, "larger") != NULL, "%s", res.err);
}

Test(health, over_a_unix_socket)
{
    test_tmpdir_t d;
    cr_assert_eq(test_tmpdir_make(&d, "consul-unix"), 0);
    char path[200];
    test_tmpdir_file(&d, "agent.sock", path, sizeof(path));
    g_resp = responder_start_unix(path);
    cr_assert_not_null(g_resp);
    char addr[256];
    snprintf(addr, sizeof(addr), "unix://%s", path);
    setenv("CONSUL_HTTP_ADDR", addr, 1);
    consul_config_t cfg;
    char err[256];
    cr_assert_eq(consul_config_from_env(&cfg, err, sizeof(err)), LS_OK, "%s", err);
    g_consul = consul_create(&cfg);
    consul_config_free(&cfg);
    cr_assert_not_null(g_consul);
    cr_expect_str_eq(consul_where(g_consul), path);
    reply(200, 3, HEALTH_BODY, 0);
    consul_instance_t *list;
    size_t n;
    uint64_t index;
    consul_result_t res;
    cr_assert_eq(consul_health_service(g_consul, "web", true, 0, 1000, &list, &n, &index, &res),
                 LS_OK, "%s", res.err);
    cr_expect_eq(n, 2);
    cr_expect_eq(index, 3);
    consul_instances_free(list, n);
    char host[64] = "";
    cr_expect(responder_header(request(0), "Host", host, sizeof(host)));
    cr_expect_str_eq(host, "localhost");
    teardown();
    test_tmpdir_remove(&d);
}

/* ---- TLS ---------------------------------------------------------------------------------- */

TestSuite(tls, .init = quiet, .fini = teardown, .timeout = 60);

static test_certs_t g_certs;

static int tls_query(const char *url, const char *ca, const char *server_name, bool verify,
                     bool client_cert)
{
    consul_config_t cfg = {.base_url = (char *)url,
                           .unix_socket = NULL,
                           .token = NULL,
                           .ca_file = (char *)ca,
                           .ca_path = NULL,
                           .client_cert = client_cert ? g_certs.client_cert : NULL,
                           .client_key = client_cert ? g_certs.client_key : NULL,
                           .tls_server_name = (char *)server_name,
                           .verify = verify,
                           .addr_set = true};
    consul_t *c = consul_create(&cfg);
    cr_assert_not_null(c);
    consul_instance_t *list;
    size_t n;
    uint64_t index;
    consul_result_t res;
    int rc = consul_health_service(c, "web", true, 0, 1000, &list, &n, &index, &res);
    if (rc == LS_OK)
        consul_instances_free(list, n);
    else
        cr_expect_eq(res.status, 0, "a failed handshake is no answer");
    consul_destroy(c);
    return rc;
}

Test(tls, ca_verification_and_server_name)
{
    cr_assert_eq(test_certs_make(&g_certs), 0);
    responder_tls_t tls = {
        .cert = g_certs.server_cert, .key = g_certs.server_key, .client_ca = NULL};
    g_resp = responder_start(&tls);
    cr_assert_not_null(g_resp);
    char url[64];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d", responder_port(g_resp));

    cr_expect_eq(tls_query(url, g_certs.ca, NULL, true, false), LS_OK);
    cr_expect_eq(tls_query(url, g_certs.rogue_ca, NULL, true, false), LS_ERR_UNAVAILABLE,
                 "a CA that did not sign the server's certificate");
    cr_expect_eq(tls_query(url, g_certs.rogue_ca, NULL, false, false), LS_OK,
                 "CONSUL_HTTP_SSL_VERIFY=false");
    size_t before = responder_count(g_resp);
    /* The server name travels as SNI and the certificate must match it. */
    cr_expect_eq(tls_query(url, g_certs.ca, "localhost", true, false), LS_OK);
    cr_assert_eq(responder_count(g_resp), before + 1);
    cr_expect_str_eq(responder_request(g_resp, before)->sni, "localhost");
    cr_expect_eq(tls_query(url, g_certs.ca, "other.example", true, false), LS_ERR_UNAVAILABLE,
                 "a certificate that does not name the server name");
    cr_expect_eq(tls_query(url, g_certs.ca, "other.example", false, false), LS_OK);
    cr_expect_str_eq(responder_request(g_resp, responder_count(g_resp) - 1)->sni, "other.example");
    test_certs_remove(&g_certs);
}

Test(tls, client_certificate)
{
    cr_assert_eq(test_certs_make(&g_certs), 0);
    responder_tls_t tls = {
        .cert = g_certs.server_cert, .key = g_certs.server_key, .client_ca = g_certs.ca};
    g_resp = responder_start(&tls);
    cr_assert_not_null(g_resp);
    char url[64];
    snprintf(url, sizeof(url), "https://localhost:%d", responder_port(g_resp));
    cr_expect_eq(tls_query(url, g_certs.ca, NULL, true, true), LS_OK);
    cr_expect_eq(tls_query(url, g_certs.ca, NULL, true, false), LS_ERR_UNAVAILABLE);
    cr_expect_eq(responder_count(g_resp), 1);
    cr_expect_geq(responder_tls_failures(g_resp), 1);
    test_certs_remove(&g_certs);
}

/* ---- the watch ---------------------------------------------------------------------------- */

/* What the callback saw: each delivery as "id@address:port[tag,...]{key=value,...}"
 * (brackets only when there are tags or meta) joined with ',' ("" for an empty list). */
typedef struct {
    pthread_mutex_t mu;
    char seen[32][256];
    int n;
} recorder_t;

static recorder_t g_rec = {.mu = PTHREAD_MUTEX_INITIALIZER, .seen = {{0}}, .n = 0};

static void on_list(void *ud, const consul_instance_t *list, size_t n)
{
    recorder_t *r = ud;
    char buf[256] = "";
    for (size_t i = 0; i < n; i++) {
        size_t at = strlen(buf);
        snprintf(buf + at, sizeof(buf) - at, "%s%s@%s:%d", i ? "," : "", list[i].id,
                 list[i].address, list[i].port);
        for (size_t j = 0; j < list[i].n_tags; j++) {
            at = strlen(buf);
            snprintf(buf + at, sizeof(buf) - at, "%s%s%s", j ? "," : "[", list[i].tags[j],
                     j + 1 == list[i].n_tags ? "]" : "");
        }
        for (size_t j = 0; j < list[i].n_meta; j++) {
            at = strlen(buf);
            snprintf(buf + at, sizeof(buf) - at, "%s%s=%s%s", j ? "," : "{", list[i].meta_keys[j],
                     list[i].meta_values[j], j + 1 == list[i].n_meta ? "}" : "");
        }
    }
    pthread_mutex_lock(&r->mu);
    if (r->n < 32)
        snprintf(r->seen[r->n], sizeof(r->seen[0]), "%s", buf);
    r->n++;
    pthread_mutex_unlock(&r->mu);
}

static int deliveries(void)
{
    pthread_mutex_lock(&g_rec.mu);
    int n = g_rec.n;
    pthread_mutex_unlock(&g_rec.mu);
    return n;
}

static const char *seen(int i)
{
    pthread_mutex_lock(&g_rec.mu);
    const char *s = i < g_rec.n ? g_rec.seen[i] : "<none>";
    pthread_mutex_unlock(&g_rec.mu);
    return s;
}

static consul_watch_t *g_watch;

static void watch_teardown(void)
{
    consul_watch_stop(g_watch);
    g_watch = NULL;
    teardown();
    end_log_capture();
}

TestSuite(watch, .init = quiet, .fini = watch_teardown, .timeout = 60);

static const char LIST_A[] = "[{\"Node\":{\"Node\":\"n1\",\"Address\":\"10.0.0.1\"},"
                             "\"Service\":{\"ID\":\"a\",\"Port\":7001}}]";
static const char LIST_B[] = "[{\"Node\":{\"Node\":\"n1\",\"Address\":\"10.0.0.1\"},"
                             "\"Service\":{\"ID\":\"a\",\"Port\":7001}},"
                             "{\"Node\":{\"Node\":\"n2\",\"Address\":\"10.0.0.2\"},"
                             "\"Service\":{\"ID\":\"b\",\"Port\":7002}}]";
/* LIST_A with port and more fields in its Service (",\"Tags\":[...]"), in a buffer of
 * its own (reply copies it). */
static const char *list_a_with(int port, const char *extra)
{
    static char buf[4][512];
    static int next;
    char *out = buf[next++ % 4];
    snprintf(out, 512,
             "[{\"Node\":{\"Node\":\"n1\",\"Address\":\"10.0.0.1\"},"
             "\"Service\":{\"ID\":\"a\",\"Port\":%d%s}}]",
             port, extra);
    return out;
}

static void start_watch(int64_t min_interval_ms, int64_t backoff_ms, int64_t backoff_max_ms)
{
    consul_watch_config_t cfg;
    consul_watch_config_init(&cfg, "web");
    cr_expect_eq(cfg.wait_ms, 30000);
    cfg.wait_ms = 2000;
    cfg.min_interval_ms = min_interval_ms;
    cfg.backoff_ms = backoff_ms;
    cfg.backoff_max_ms = backoff_max_ms;
    g_watch = consul_watch_start(g_consul, &cfg, on_list, &g_rec);
    cr_assert_not_null(g_watch);
}

static consul_watch_stats_t stats(void)
{
    consul_watch_stats_t st;
    consul_watch_stats(g_watch, &st);
    return st;
}

Test(watch, first_answer_is_delivered_even_empty)
{
    start_pair(true);
    reply(200, 3, "[]", 0);
    default_reply(200, 3, "[]", 300); /* later: "no change" after 300 ms */
    start_watch(1, 100, 1000);
    cr_assert(consul_watch_wait_first(g_watch, 5000));
    cr_expect_eq(deliveries(), 1);
    cr_expect_str_eq(seen(0), "");
    cr_assert(responder_wait(g_resp, 3, 5000));
    consul_watch_stats_t st = stats();
    cr_expect_geq(st.queries, 3);
    cr_expect_eq(st.errors, 0);
    cr_expect_eq(st.deliveries, 1, "no change, no delivery");
    cr_expect_eq(deliveries(), 1);
    cr_expect_eq(st.index, 3);
    char tok[128] = "";
    cr_expect(responder_header(request(1), "X-Consul-Token", tok, sizeof(tok)));
    cr_expect_str_eq(tok, TOKEN);
    cr_expect_str_eq(query_of(1, "passing"), "true");
}

Test(watch, delivers_changes_only_and_sends_the_index_back)
{
    start_pair(false);
    static const char *const changes[] = {
        ",\"Meta\":{\"pool\":\"small\"}",                    /* meta added */
        ",\"Meta\":{\"pool\":\"large\"}",                    /* a meta value */
        ",\"Meta\":{\"tier\":\"large\"}",                    /* a meta key */
        ",\"Meta\":{\"tier\":\"large\"},\"Tags\":[\"gpu\"]", /* a tag added */
        ",\"Meta\":{\"tier\":\"large\"},\"Tags\":[\"cpu\"]", /* a tag changed */
        ",\"Meta\":{\"tier\":\"large\"},\"Tags\":[\"cpu\"],\"Address\":\"10.9.9.9\"",
        ",\"Meta\":{\"tier\":\"large\"},\"Tags\":[\"cpu\"],\"Address\":\"10.9.9.9\"",
    };
    static const char *const want[] = {
        "a@10.0.0.1:7001{pool=small}",      "a@10.0.0.1:7001{pool=large}",
        "a@10.0.0.1:7001{tier=large}",      "a@10.0.0.1:7001[gpu]{tier=large}",
        "a@10.0.0.1:7001[cpu]{tier=large}", "a@10.9.9.9:7001[cpu]{tier=large}",
        "a@10.9.9.9:7009[cpu]{tier=large}",
    };
    const size_t n_changes = sizeof(changes) / sizeof(changes[0]);
    reply(200, 10, LIST_A, 0);
    reply(200, 11, LIST_A, 0); /* a return without a change */
    reply(200, 12, LIST_B, 0); /* an instance more */
    reply(200, 13, LIST_A, 0); /* one left */
    for (size_t i = 0; i < n_changes; i++)
        reply(200, 14 + i, list_a_with(i + 1 < n_changes ? 7001 : 7009, changes[i]), 0);
    default_reply(200, 14 + n_changes - 1, list_a_with(7009, changes[n_changes - 1]), 200);
    start_watch(1, 100, 1000);
    size_t n_replies = 4 + n_changes;
    cr_assert(responder_wait(g_resp, n_replies + 2, 5000));
    cr_expect_eq(deliveries(), 3 + (int)n_changes);
    cr_expect_str_eq(seen(0), "a@10.0.0.1:7001");
    cr_expect_str_eq(seen(1), "a@10.0.0.1:7001,b@10.0.0.2:7002");
    cr_expect_str_eq(seen(2), "a@10.0.0.1:7001");
    for (size_t i = 0; i < n_changes; i++)
        cr_expect_str_eq(seen(3 + (int)i), want[i]);
    cr_expect_str_eq(query_of(0, "index"), "<absent>");
    for (size_t i = 1; i <= n_replies; i++) {
        char index[16];
        snprintf(index, sizeof(index), "%zu", 9 + i);
        cr_expect_str_eq(query_of(i, "index"), index, "request %zu", i);
        cr_expect_str_eq(query_of(i, "wait"), "2000ms");
    }
    cr_expect_str_eq(query_of(n_replies + 1, "index"), query_of(n_replies, "index"));
    consul_watch_stats_t st = stats();
    cr_expect_eq(st.index_resets, 0);
    cr_expect_eq(st.errors, 0);
    cr_expect_eq(st.deliveries, 3 + n_changes);
}

Test(watch, index_0_is_sent_as_1_and_backwards_resets_to_0)
{
    start_pair(false);
    reply(200, 0, LIST_A, 0); /* no index (0) after the first answer: send 1, never 0 */
    reply(200, 100, LIST_A, 0);
    reply(200, 50, LIST_A, 0); /* backwards: reset, query afresh with no index */
    reply(200, 50, LIST_A, 0); /* the fresh answer: 50 from now on */
    reply(200, 0, LIST_A, 0);  /* 0 after 50 is backwards too */
    default_reply(200, 60, LIST_A, 200);
    start_watch(1, 100, 1000);
    cr_assert(responder_wait(g_resp, 7, 5000));
    cr_expect_str_eq(query_of(0, "index"), "<absent>");
    cr_expect_str_eq(query_of(1, "index"), "1");
    cr_expect_str_eq(query_of(2, "index"), "100");
    cr_expect_str_eq(query_of(3, "index"), "<absent>", "reset after the index went backwards");
    cr_expect_str_eq(query_of(3, "wait"), "<absent>");
    cr_expect_str_eq(query_of(4, "index"), "50");
    cr_expect_str_eq(query_of(5, "index"), "<absent>");
    cr_expect_str_eq(query_of(6, "index"), "60");
    consul_watch_stats_t st = stats();
    cr_expect_eq(st.index_resets, 2);
    cr_expect_eq(st.errors, 0);
    cr_expect_eq(deliveries(), 1, "the list never changed");
}

Test(watch, errors_back_off_and_keep_the_last_list)
{
    start_pair(false);
    capture_log();
    reply(200, 5, LIST_A, 0);
    reply(500, 0, "No cluster leader", 0);
    reply(200, 6, "{\"not\":\"a list\"}", 0); /* a malformed answer is an error too */
    reply(403, 0, "ACL not found", 0);
    reply(200, 6, LIST_A, 0); /* back, unchanged: no delivery */
    reply(200, 7, LIST_B, 0);
    default_reply(200, 7, LIST_B, 200);
    start_watch(1, 50, 200);
    cr_assert(responder_wait(g_resp, 7, 10000));
    cr_expect_eq(deliveries(), 2);
    cr_expect_str_eq(seen(0), "a@10.0.0.1:7001");
    cr_expect_str_eq(seen(1), "a@10.0.0.1:7001,b@10.0.0.2:7002");
    /* Errors change nothing in the index. */
    cr_expect_str_eq(query_of(2, "index"), "5");
    cr_expect_str_eq(query_of(3, "index"), "5");
    cr_expect_str_eq(query_of(4, "index"), "5");
    cr_expect_str_eq(query_of(5, "index"), "6");
    consul_watch_stats_t st = stats();
    cr_expect_eq(st.errors, 3);

    char *log = log_text();
    cr_expect_eq(count_of(log, "health query failing"), 1, "one warning per outage:\n%s", log);
    cr_expect_eq(count_of(log, "level=warn"), 1, "%s", log);
    cr_expect(strstr(log, "No cluster leader") != NULL, "the first reason: %s", log);
    cr_expect_eq(count_of(log, "reachable again"), 1, "%s", log);
    cr_expect(strstr(log, "service=web") != NULL);
    free(log);
}

Test(watch, back_off_doubles_up_to_its_cap)
{
    start_pair(true);
    capture_log();
    default_reply(500, 0, "down", 0);
    start_watch(1, 100, 400);
    /* Pauses 100, 200, 400, 400, 400 ms: six queries in about 1.5 s. */
    cr_assert(responder_wait(g_resp, 6, 10000));
    cr_expect_not(consul_watch_wait_first(g_watch, 0), "nothing delivered on errors");
    consul_watch_stop(g_watch);
    g_watch = NULL;
    static const int64_t want_ms[] = {100, 200, 400, 400, 400};
    for (size_t i = 0; i < 5; i++) {
        int64_t gap_ms = (request(i + 1)->at_us - request(i)->at_us) / 1000;
        cr_expect_geq(gap_ms, want_ms[i] - 20, "gap %zu: %lld ms, want %lld", i, (long long)gap_ms,
                      (long long)want_ms[i]);
    }
    size_t n = responder_count(g_resp);
    int64_t span_ms = (request(n - 1)->at_us - request(0)->at_us) / 1000;
    cr_expect_leq((int64_t)n, 2 + span_ms / 100, "%zu queries in %lld ms", n, (long long)span_ms);
    char *log = log_text();
    cr_expect_eq(count_of(log, "health query failing"), 1, "%s", log);
    cr_expect(strstr(log, TOKEN) == NULL, "the token is never logged");
    free(log);
}

Test(watch, successive_queries_are_rate_limited)
{
    start_pair(false);
    /* An agent that answers at once, every time, without a change (an index that never
     * blocks): the watch must not spin. */
    default_reply(200, 9, LIST_A, 0);
    start_watch(200, 100, 1000);
    cr_assert(consul_watch_wait_first(g_watch, 5000));
    usleep(1500 * 1000);
    consul_watch_stop(g_watch);
    g_watch = NULL;
    size_t n = responder_count(g_resp);
    int64_t span_ms = (request(n - 1)->at_us - request(0)->at_us) / 1000;
    cr_expect_geq(n, 4, "the watch kept querying: %zu", n);
    cr_expect_leq((int64_t)n, 2 + span_ms / 200, "%zu queries in %lld ms", n, (long long)span_ms);
    cr_expect_eq(deliveries(), 1);
}

Test(watch, stop_abandons_a_blocking_query_at_once)
{
    start_pair(false);
    default_reply(200, 9, LIST_A, 30000);
    start_watch(1, 100, 1000);
    cr_assert(responder_wait(g_resp, 1, 5000));
    /* The query is in flight, waiting for its answer, and libcurl's own early timers
     * (connection set-up) are past: only a wake-up ends its wait now. */
    usleep(400 * 1000);
    int64_t t0 = ls_now_us();
    consul_watch_stop(g_watch);
    g_watch = NULL;
    int64_t took_ms = (ls_now_us() - t0) / 1000;
    cr_expect_lt(took_ms, 500, "stop took %lld ms", (long long)took_ms);
    cr_expect_eq(deliveries(), 0);
}

Test(watch, stop_ends_a_back_off_pause_at_once)
{
    start_pair(false);
    default_reply(500, 0, "down", 0);
    start_watch(1, 30000, 30000);
    cr_assert(responder_wait(g_resp, 1, 5000));
    usleep(200 * 1000);
    int64_t t0 = ls_now_us();
    consul_watch_stop(g_watch);
    g_watch = NULL;
    int64_t took_ms = (ls_now_us() - t0) / 1000;
    cr_expect_lt(took_ms, 500, "stop took %lld ms", (long long)took_ms);
    cr_expect_eq(responder_count(g_resp), 1);
}

Test(watch, a_blocking_query_may_outlast_its_wait)
{
    /* Consul adds up to wait/16 of jitter: an answer later than wait is no timeout. */
    start_pair(false);
    reply(200, 4, "[]", 0);
    reply(200, 5, LIST_A, 2500); /* wait is 2000 ms */
    default_reply(200, 5, LIST_A, 300);
    start_watch(1, 100, 1000);
    cr_assert(responder_wait(g_resp, 3, 10000));
    consul_watch_stats_t st = stats();
    cr_expect_eq(st.errors, 0);
    cr_expect_eq(deliveries(), 2);
    cr_expect_str_eq(seen(1), "a@10.0.0.1:7001");
}

Test(watch, no_op_on_null)
{
    consul_watch_stop(NULL);
    consul_destroy(NULL);
    consul_instances_free(NULL, 0);
}
