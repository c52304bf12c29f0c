/*
 * test_tracer_otlp.c - the OTLP/HTTP JSON tracer (libs/svc/tracer_otlp.c): its
 * configuration from the OTEL_* environment, the JSON it sends (parsed back with cJSON)
 * to a scripted HTTP receiver (support/http_responder.h), the batch span processor
 * (schedule, batch size, queue bound, retries, Retry-After, a receiver that is down or
 * slow, the flush at destroy), and the samplers.
 *
 * Criterion runs each test in a process of its own, so setenv here stays in the test.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "support/http_responder.h"
#include "support/net.h"
#include "svc/tracer_otlp.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static responder_t *g_resp;

static const char *const otel_vars[] = {
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
};

static void setup(void)
{
    ls_log_set_level(getenv("OTLP_DEBUG") ? LS_LOG_DEBUG : LS_LOG_ERROR);
    for (size_t i = 0; i < sizeof(otel_vars) / sizeof(otel_vars[0]); i++)
        unsetenv(otel_vars[i]);
}

static void teardown(void)
{
    responder_destroy(g_resp);
    g_resp = NULL;
}

/* One timeout for both suites: criterion's runner leaks an allocation (seen under
 * LeakSanitizer, --jobs=2) when the suites of one binary differ in it. */
TestSuite(otlp_env, .init = setup, .timeout = 60);
TestSuite(otlp, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers ----------------------------------------------------------------------- */

/* Reads the environment; asserts it parses. */
static svc_otlp_config_t from_env(void)
{
    svc_otlp_config_t c;
    char err[256] = "";
    int rc = svc_otlp_config_from_env(&c, "llmserve-test", err, sizeof(err));
    cr_assert_eq(rc, LS_OK, "config_from_env failed: %s", err);
    return c;
}

/* Asserts the environment is refused with a reason that names var. */
static void refused(const char *var)
{
    svc_otlp_config_t c;
    char err[256] = "";
    cr_assert_eq(svc_otlp_config_from_env(&c, "llmserve-test", err, sizeof(err)), LS_ERR_INVALID);
    cr_assert(strstr(err, var), "the reason '%s' does not name %s", err, var);
}

static void start_responder(void)
{
    g_resp = responder_start(NULL);
    cr_assert_not_null(g_resp);
}

static char g_url[64];

/* Short periods so that tests run in a second; a schedule of a minute where a test wants
 * batches only from the batch size or the destroy. */
static svc_otlp_config_t config_to_responder(int64_t schedule_delay_ms)
{
    snprintf(g_url, sizeof(g_url), "http://127.0.0.1:%d/v1/traces", responder_port(g_resp));
    svc_otlp_config_t c;
    svc_otlp_config_init(&c, "llmserve-test");
    c.enabled = true;
    snprintf(c.endpoint, sizeof(c.endpoint), "%s", g_url);
    c.schedule_delay_ms = schedule_delay_ms;
    c.export_timeout_ms = 3000;
    c.timeout_ms = 2000;
    c.backoff_min_ms = 20;
    c.backoff_max_ms = 100;
    return c;
}

static svc_tracer_t *tracer_to_responder(int64_t schedule_delay_ms)
{
    svc_otlp_config_t c = config_to_responder(schedule_delay_ms);
    svc_tracer_t *t = svc_otlp_tracer_create(&c);
    cr_assert_not_null(t);
    return t;
}

static void reply(int status, const char *body, const char *headers, int delay_ms)
{
    responder_reply_t r = {.status = status,
                           .index = 0,
                           .index_text = NULL,
                           .body = body,
                           .body_len = 0,
                           .delay_ms = delay_ms,
                           .headers = headers};
    responder_push(g_resp, &r);
}

static void default_reply(int status, int delay_ms)
{
    responder_reply_t r = {.status = status,
                           .index = 0,
                           .index_text = NULL,
                           .body = "{}",
                           .body_len = 0,
                           .delay_ms = delay_ms,
                           .headers = NULL};
    responder_set_default(g_resp, &r);
}

static svc_otlp_stats_t stats(svc_tracer_t *t)
{
    svc_otlp_stats_t s;
    svc_otlp_tracer_stats(t, &s);
    return s;
}

/* Waits up to 3 s until n spans were exported. */
static void wait_exported(svc_tracer_t *t, uint64_t n)
{
    int64_t until = ls_now_us() + 3000000;
    while (stats(t).exported < n && ls_now_us() < until)
        ls_sleep_us(5000);
}

/* Request i's body, parsed; the caller frees it with cJSON_Delete. */
static cJSON *body_of(size_t i)
{
    const responder_request_t *q = responder_request(g_resp, i);
    cr_assert_not_null(q, "no request %zu", i);
    cr_assert_str_eq(q->method, "POST");
    cJSON *root = cJSON_Parse(q->body);
    cr_assert_not_null(root, "request %zu is not JSON: %.200s", i, q->body);
    return root;
}

static cJSON *item(const cJSON *o, const char *key)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert_not_null(v, "no field %s", key);
    return v;
}

static cJSON *resource_spans0(const cJSON *root)
{
    cJSON *rss = item(root, "resourceSpans");
    cr_assert_eq(cJSON_GetArraySize(rss), 1);
    return cJSON_GetArrayItem(rss, 0);
}

static cJSON *spans_of(const cJSON *root)
{
    cJSON *sss = item(resource_spans0(root), "scopeSpans");
    cr_assert_eq(cJSON_GetArraySize(sss), 1);
    cJSON *ss = cJSON_GetArrayItem(sss, 0);
    cJSON *scope = item(ss, "scope");
    cr_assert_str_eq(item(scope, "name")->valuestring, "llmserve");
    cr_assert(cJSON_IsString(item(scope, "version")));
    cJSON *spans = item(ss, "spans");
    cr_assert(cJSON_IsArray(spans));
    return spans;
}

static size_t span_count(size_t request)
{
    cJSON *root = body_of(request);
    size_t n = (size_t)cJSON_GetArraySize(spans_of(root));
    cJSON_Delete(root);
    return n;
}

static cJSON *find_span(const cJSON *spans, const char *name)
{
    const cJSON *s;
    cJSON_ArrayForEach(s, spans)
    {
        if (strcmp(item(s, "name")->valuestring, name) == 0)
            return (cJSON *)s;
    }
    cr_assert_fail("no span named %s", name);
    return NULL;
}

/* The value object of attribute key in an attributes array; NULL when absent. */
static cJSON *attr(const cJSON *attrs, const char *key)
{
    const cJSON *a;
    cJSON_ArrayForEach(a, attrs)
    {
        if (strcmp(item(a, "key")->valuestring, key) == 0)
            return item(a, "value");
    }
    return NULL;
}

static const char *attr_str(const cJSON *attrs, const char *key)
{
    cJSON *v = attr(attrs, key);
    cr_assert_not_null(v, "no attribute %s", key);
    return item(v, "stringValue")->valuestring;
}

static bool lower_hex(const char *s, size_t len)
{
    if (strlen(s) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static unsigned long long u64_of(const cJSON *o, const char *key)
{
    cJSON *v = item(o, key);
    cr_assert(cJSON_IsString(v), "%s is not a string", key);
    char *end;
    unsigned long long x = strtoull(v->valuestring, &end, 10);
    cr_assert(*end == '\0' && end != v->valuestring, "%s is not decimal", key);
    return x;
}

/* Ends n spans named name (roots, kind internal, OK). */
static void end_spans(svc_tracer_t *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        svc_span_end(svc_span_start(t, name, SVC_SPAN_INTERNAL, NULL), 0, NULL);
}

/* ---- configuration from the environment ------------------------------------------- */

Test(otlp_env, off_without_endpoint_with_defaults)
{
    svc_otlp_config_t c = from_env();
    cr_assert_not(c.enabled);
    cr_assert_str_eq(c.service_name, "llmserve-test");
    cr_assert_eq(c.timeout_ms, 10000);
    cr_assert_eq(c.sampler, SVC_OTLP_SAMPLER_PARENTBASED_ALWAYS_ON);
    cr_assert_eq(c.ratio, 1.0);
    cr_assert_eq(c.schedule_delay_ms, 5000);
    cr_assert_eq(c.export_timeout_ms, 30000);
    cr_assert_eq(c.max_queue_size, 2048);
    cr_assert_eq(c.max_export_batch_size, 512);
    cr_assert_eq(c.n_headers, 0);
    cr_assert_eq(c.n_resource, 0);
    cr_assert_null(svc_otlp_tracer_create(&c), "a tracer while tracing is off");
}

Test(otlp_env, disabled)
{
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318", 1);
    cr_assert(from_env().enabled);
    setenv("OTEL_SDK_DISABLED", "TRUE", 1);
    cr_assert_not(from_env().enabled);
    setenv("OTEL_SDK_DISABLED", "false", 1);
    cr_assert(from_env().enabled);
    setenv("OTEL_SDK_DISABLED", "", 1);
    cr_assert(from_env().enabled);
    setenv("OTEL_SDK_DISABLED", "yes", 1);
    refused("OTEL_SDK_DISABLED");
}

Test(otlp_env, endpoint_forms)
{
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318", 1);
    cr_assert_str_eq(from_env().endpoint, "http://collector:4318/v1/traces");
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318/", 1);
    cr_assert_str_eq(from_env().endpoint, "https://collector:4318/v1/traces");
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://gw/otel", 1);
    cr_assert_str_eq(from_env().endpoint, "http://gw/otel/v1/traces");
    setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://jaeger:4318/custom/path", 1);
    cr_assert_str_eq(from_env().endpoint, "http://jaeger:4318/custom/path", "used as is");
    setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318", 1);
    refused("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    unsetenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector", 1);
    refused("OTEL_EXPORTER_OTLP_ENDPOINT");
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://", 1);
    refused("OTEL_EXPORTER_OTLP_ENDPOINT");
}

Test(otlp_env, protocol)
{
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318", 1);
    setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", 1);
    cr_assert(from_env().enabled);
    setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", 1);
    cr_assert(from_env().enabled, "let pass with a warning");
    setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", 1);
    refused("OTEL_EXPORTER_OTLP_PROTOCOL");
    setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json", 1);
    cr_assert(from_env().enabled, "the TRACES_ variable wins");
    setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift", 1);
    refused("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
}

Test(otlp_env, headers_decoded)
{
    setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=abc%20def%3D, x-tenant = t1 ,,", 1);
    svc_otlp_config_t c = from_env();
    cr_assert_eq(c.n_headers, 2);
    cr_assert_str_eq(c.headers[0].key, "api-key");
    cr_assert_str_eq(c.headers[0].value, "abc def=");
    cr_assert_str_eq(c.headers[1].key, "x-tenant");
    cr_assert_str_eq(c.headers[1].value, "t1");
    setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "only=this", 1);
    c = from_env();
    cr_assert_eq(c.n_headers, 1, "the TRACES_ variable wins");
    cr_assert_str_eq(c.headers[0].key, "only");
    unsetenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS");
    setenv("OTEL_EXPORTER_OTLP_HEADERS", "novalue", 1);
    refused("OTEL_EXPORTER_OTLP_HEADERS");
    setenv("OTEL_EXPORTER_OTLP_HEADERS", "k=%zz", 1);
    refused("OTEL_EXPORTER_OTLP_HEADERS");
    setenv("OTEL_EXPORTER_OTLP_HEADERS", "k=%4", 1);
    refused("OTEL_EXPORTER_OTLP_HEADERS");
    setenv("OTEL_EXPORTER_OTLP_HEADERS", "=v", 1);
    refused("OTEL_EXPORTER_OTLP_HEADERS");
    setenv("OTEL_EXPORTER_OTLP_HEADERS", "k=a%0D%0AX-Injected: 1", 1);
    refused("OTEL_EXPORTER_OTLP_HEADERS");
}

Test(otlp_env, timeouts)
{
    setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500", 1);
    cr_assert_eq(from_env().timeout_ms, 2500);
    setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700", 1);
    cr_assert_eq(from_env().timeout_ms, 700, "the TRACES_ variable wins");
    const char *bad[] = {"abc", "0", "-5", "10s", "1.5", "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", bad[i], 1);
        refused("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT");
    }
    unsetenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT");
    setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "soon", 1);
    refused("OTEL_EXPORTER_OTLP_TIMEOUT");
}

Test(otlp_env, service_name_and_resource)
{
    setenv("OTEL_RESOURCE_ATTRIBUTES",
           "deployment.environment=prod%2Ceu, service.name=from-attrs ,team=ml%20platform", 1);
    svc_otlp_config_t c = from_env();
    cr_assert_str_eq(c.service_name, "from-attrs");
    cr_assert_eq(c.n_resource, 2, "service.name is not repeated among the others");
    cr_assert_str_eq(c.resource[0].key, "deployment.environment");
    cr_assert_str_eq(c.resource[0].value, "prod,eu");
    cr_assert_str_eq(c.resource[1].key, "team");
    cr_assert_str_eq(c.resource[1].value, "ml platform");
    setenv("OTEL_SERVICE_NAME", "from-name", 1);
    cr_assert_str_eq(from_env().service_name, "from-name", "OTEL_SERVICE_NAME wins");
    setenv("OTEL_RESOURCE_ATTRIBUTES", "a=1,b", 1);
    refused("OTEL_RESOURCE_ATTRIBUTES");
    setenv("OTEL_RESOURCE_ATTRIBUTES", "a=%G1", 1);
    refused("OTEL_RESOURCE_ATTRIBUTES");
}

Test(otlp_env, samplers_and_ratio)
{
    static const struct {
        const char *name;
        svc_otlp_sampler_t s;
    } names[] = {
        {"always_on", SVC_OTLP_SAMPLER_ALWAYS_ON},
        {"always_off", SVC_OTLP_SAMPLER_ALWAYS_OFF},
        {"traceidratio", SVC_OTLP_SAMPLER_TRACEIDRATIO},
        {"parentbased_always_on", SVC_OTLP_SAMPLER_PARENTBASED_ALWAYS_ON},
        {"parentbased_always_off", SVC_OTLP_SAMPLER_PARENTBASED_ALWAYS_OFF},
        {"parentbased_traceidratio", SVC_OTLP_SAMPLER_PARENTBASED_TRACEIDRATIO},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        setenv("OTEL_TRACES_SAMPLER", names[i].name, 1);
        cr_assert_eq(from_env().sampler, names[i].s, "%s", names[i].name);
    }
    setenv("OTEL_TRACES_SAMPLER", "sometimes", 1);
    refused("OTEL_TRACES_SAMPLER");

    setenv("OTEL_TRACES_SAMPLER", "traceidratio", 1);
    cr_assert_eq(from_env().ratio, 1.0, "default ratio");
    setenv("OTEL_TRACES_SAMPLER_ARG", "0.25", 1);
    cr_assert_eq(from_env().ratio, 0.25);
    setenv("OTEL_TRACES_SAMPLER_ARG", "0", 1);
    cr_assert_eq(from_env().ratio, 0.0);
    setenv("OTEL_TRACES_SAMPLER_ARG", "1", 1);
    cr_assert_eq(from_env().ratio, 1.0);
    /* The specification's rule: an invalid argument warns and falls back to 1.0. */
    const char *bad[] = {"1.5", "-0.1", "abc", "0.5x", "nan"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("OTEL_TRACES_SAMPLER_ARG", bad[i], 1);
        cr_assert_eq(from_env().ratio, 1.0, "%s", bad[i]);
    }
}

Test(otlp_env, batch_processor_values)
{
    setenv("OTEL_BSP_SCHEDULE_DELAY", "250", 1);
    setenv("OTEL_BSP_EXPORT_TIMEOUT", "4000", 1);
    setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100", 1);
    setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "40", 1);
    svc_otlp_config_t c = from_env();
    cr_assert_eq(c.schedule_delay_ms, 250);
    cr_assert_eq(c.export_timeout_ms, 4000);
    cr_assert_eq(c.max_queue_size, 100);
    cr_assert_eq(c.max_export_batch_size, 40);

    setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "101", 1);
    refused("OTEL_BSP_MAX_EXPORT_BATCH_SIZE");
    unsetenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE");
    cr_assert_eq(from_env().max_export_batch_size, 100, "the default batch shrinks to the queue");

    const char *vars[] = {"OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT",
                          "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"};
    const char *bad[] = {"0", "-1", "x", "12ms"};
    for (size_t v = 0; v < sizeof(vars) / sizeof(vars[0]); v++)
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            setenv(vars[v], bad[i], 1);
            refused(vars[v]);
            unsetenv(vars[v]);
        }
}

/* ---- the JSON sent ----------------------------------------------------------------- */

Test(otlp, json_parent_children_attributes_events)
{
    start_responder();
    svc_otlp_config_t c = config_to_responder(60000);
    c.n_headers = 1;
    snprintf(c.headers[0].key, sizeof(c.headers[0].key), "x-api-key");
    snprintf(c.headers[0].value, sizeof(c.headers[0].value), "secret value");
    svc_tracer_t *t = svc_otlp_tracer_create(&c);
    cr_assert_not_null(t);
    svc_otlp_tracer_set_instance(t, "10.0.0.5:50051");

    int64_t before_ns = ls_wall_us() * 1000;
    svc_span_t *parent = svc_span_start(t, "llmserve.v1.Router/Generate", SVC_SPAN_SERVER, NULL);
    cr_assert_not_null(parent);
    svc_trace_ctx_t pctx;
    cr_assert(svc_span_context(parent, &pctx));
    cr_assert(pctx.flags & SVC_TRACE_SAMPLED);
    svc_span_set_str(parent, "rpc.system", "grpc");
    svc_span_set_int(parent, "gen_ai.usage.output_tokens", -42);
    svc_span_set_double(parent, "gen_ai.request.temperature", 0.75);
    svc_span_set_str(parent, "replaced", "first");
    svc_span_set_str(parent, "replaced", "second");
    svc_span_event(parent, "first_token");
    svc_span_event(parent, "last_token");
    svc_span_t *a = svc_span_start(t, "child-a", SVC_SPAN_CLIENT, &pctx);
    svc_span_t *b = svc_span_start(t, "child-b", SVC_SPAN_CLIENT, &pctx);
    cr_assert(a && b);
    svc_span_set_str(b, "rpc.system", "grpc");
    svc_span_t *in = svc_span_start(t, "internal", SVC_SPAN_INTERNAL, &pctx);
    ls_sleep_us(2000);
    svc_span_end(a, 0, NULL);
    svc_span_end(b, 14, "cache down");
    svc_span_end(in, 0, NULL);
    svc_span_end(parent, 0, "ignored for OK");
    int64_t after_ns = ls_wall_us() * 1000;
    svc_tracer_destroy(t); /* the flush */

    cr_assert_eq(responder_count(g_resp), 1);
    const responder_request_t *q = responder_request(g_resp, 0);
    cr_assert_str_eq(q->path, "/v1/traces");
    char h[128];
    cr_assert(responder_header(q, "Content-Type", h, sizeof(h)));
    cr_assert_str_eq(h, "application/json");
    cr_assert(responder_header(q, "x-api-key", h, sizeof(h)));
    cr_assert_str_eq(h, "secret value");

    cJSON *root = body_of(0);
    cJSON *rattrs = item(item(resource_spans0(root), "resource"), "attributes");
    cr_assert_str_eq(attr_str(rattrs, "service.name"), "llmserve-test");
    cr_assert_str_eq(attr_str(rattrs, "service.instance.id"), "10.0.0.5:50051");
    cr_assert_str_eq(attr_str(rattrs, "telemetry.sdk.name"), "llmserve");
    cr_assert_str_eq(attr_str(rattrs, "telemetry.sdk.language"), "c");
    cr_assert_gt(strlen(attr_str(rattrs, "service.version")), 0);

    cJSON *spans = spans_of(root);
    cr_assert_eq(cJSON_GetArraySize(spans), 4);
    cJSON *p = find_span(spans, "llmserve.v1.Router/Generate");
    cJSON *ca = find_span(spans, "child-a"), *cb = find_span(spans, "child-b");
    cJSON *ci = find_span(spans, "internal");
    const cJSON *s;
    cJSON_ArrayForEach(s, spans)
    {
        cr_assert(lower_hex(item(s, "traceId")->valuestring, 32));
        cr_assert(lower_hex(item(s, "spanId")->valuestring, 16));
        cr_assert_str_eq(item(s, "traceId")->valuestring, item(p, "traceId")->valuestring,
                         "one trace");
        unsigned long long st = u64_of(s, "startTimeUnixNano"), en = u64_of(s, "endTimeUnixNano");
        cr_assert_geq(en, st);
        cr_assert_geq(st, (unsigned long long)before_ns - 1000000);
        cr_assert_leq(en, (unsigned long long)after_ns + 1000000);
    }
    cJSON *pp = cJSON_GetObjectItemCaseSensitive(p, "parentSpanId");
    cr_assert(!pp || (cJSON_IsString(pp) && !pp->valuestring[0]), "a root has no parent");
    const char *pid = item(p, "spanId")->valuestring;
    cr_assert_str_eq(item(ca, "parentSpanId")->valuestring, pid);
    cr_assert_str_eq(item(cb, "parentSpanId")->valuestring, pid);
    cr_assert_str_neq(item(ca, "spanId")->valuestring, item(cb, "spanId")->valuestring);
    cr_assert_eq(item(p, "kind")->valueint, 2);
    cr_assert_eq(item(ca, "kind")->valueint, 3);
    cr_assert_eq(item(ci, "kind")->valueint, 1);

    cJSON *pa = item(p, "attributes");
    cr_assert_str_eq(attr_str(pa, "rpc.system"), "grpc");
    cr_assert_str_eq(item(attr(pa, "gen_ai.usage.output_tokens"), "intValue")->valuestring, "-42");
    cr_assert_float_eq(item(attr(pa, "gen_ai.request.temperature"), "doubleValue")->valuedouble,
                       0.75, 1e-12);
    cr_assert_str_eq(attr_str(pa, "replaced"), "second");
    cr_assert_eq(cJSON_GetArraySize(pa), 5, "a key set twice is one attribute");
    cr_assert_str_eq(item(attr(pa, "rpc.grpc.status_code"), "intValue")->valuestring, "0");
    cJSON *events = item(p, "events");
    cr_assert_eq(cJSON_GetArraySize(events), 2);
    cr_assert_str_eq(item(cJSON_GetArrayItem(events, 0), "name")->valuestring, "first_token");
    cr_assert_str_eq(item(cJSON_GetArrayItem(events, 1), "name")->valuestring, "last_token");
    unsigned long long e0 = u64_of(cJSON_GetArrayItem(events, 0), "timeUnixNano");
    cr_assert_geq(e0, u64_of(p, "startTimeUnixNano"));
    cr_assert_leq(e0, u64_of(p, "endTimeUnixNano"));

    cr_assert_eq(item(item(p, "status"), "code")->valueint, 0, "OK leaves it unset");
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(item(p, "status"), "message"));
    cr_assert_eq(item(item(cb, "status"), "code")->valueint, 2);
    cr_assert_str_eq(item(item(cb, "status"), "message")->valuestring, "cache down");
    cr_assert_str_eq(
        item(attr(item(cb, "attributes"), "rpc.grpc.status_code"), "intValue")->valuestring, "14");
    /* not a gRPC call (no rpc.system): no rpc.grpc.status_code */
    cr_assert_null(attr(item(ca, "attributes"), "rpc.grpc.status_code"));
    cr_assert_null(attr(item(ci, "attributes"), "rpc.grpc.status_code"));
    cJSON_Delete(root);
}

Test(otlp, status_per_kind_follows_grpc_conventions)
{
    start_responder();
    svc_tracer_t *t = tracer_to_responder(60000);
    cr_assert_not_null(t);
    char name[32];
    for (int code = 0; code <= 16; code++) {
        snprintf(name, sizeof(name), "server-%d", code);
        svc_span_t *s = svc_span_start(t, name, SVC_SPAN_SERVER, NULL);
        svc_span_set_str(s, "rpc.system", "grpc");
        svc_span_end(s, code, "why");
        snprintf(name, sizeof(name), "client-%d", code);
        s = svc_span_start(t, name, SVC_SPAN_CLIENT, NULL);
        svc_span_set_str(s, "rpc.system", "grpc");
        svc_span_end(s, code, "why");
    }
    svc_tracer_destroy(t);
    cr_assert_eq(responder_count(g_resp), 1);
    cJSON *root = body_of(0);
    cJSON *spans = spans_of(root);
    const bool server_errors[17] = {
        [2] = true, [4] = true, [12] = true, [13] = true, [14] = true, [15] = true};
    for (int code = 0; code <= 16; code++) {
        char want[8];
        snprintf(want, sizeof(want), "%d", code);
        snprintf(name, sizeof(name), "server-%d", code);
        cJSON *s = find_span(spans, name);
        cr_assert_eq(item(item(s, "status"), "code")->valueint, server_errors[code] ? 2 : 0,
                     "server code %d", code);
        cr_assert_str_eq(
            item(attr(item(s, "attributes"), "rpc.grpc.status_code"), "intValue")->valuestring,
            want);
        snprintf(name, sizeof(name), "client-%d", code);
        s = find_span(spans, name);
        cr_assert_eq(item(item(s, "status"), "code")->valueint, code ? 2 : 0, "client code %d",
                     code);
        cr_assert_str_eq(
            item(attr(item(s, "attributes"), "rpc.grpc.status_code"), "intValue")->valuestring,
            want);
    }
    cJSON_Delete(root);
}

Test(otlp, attribute_and_event_bounds)
{
    start_responder();
    svc_tracer_t *t = tracer_to_responder(60000);
    svc_span_t *s = svc_span_start(t, "busy", SVC_SPAN_SERVER, NULL);
    svc_span_set_str(s, "rpc.system", "grpc");
    char key[32];
    for (int i = 1; i < SVC_OTLP_MAX_ATTRS + 6; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        svc_span_set_int(s, key, i);
    }
    for (int i = 0; i < SVC_OTLP_MAX_EVENTS + 8; i++)
        svc_span_event(s, "tick");
    svc_span_end(s, 13, "boom");
    svc_tracer_destroy(t);
    cJSON *root = body_of(0);
    cJSON *sp = find_span(spans_of(root), "busy");
    cJSON *attrs = item(sp, "attributes");
    cr_assert_eq(cJSON_GetArraySize(attrs), SVC_OTLP_MAX_ATTRS + 1);
    cr_assert_not_null(attr(attrs, "rpc.grpc.status_code"), "kept though the span was full");
    cr_assert_null(attr(attrs, "k64"));
    cr_assert_eq(item(sp, "droppedAttributesCount")->valueint, 6);
    cr_assert_eq(cJSON_GetArraySize(item(sp, "events")), SVC_OTLP_MAX_EVENTS);
    cr_assert_eq(item(sp, "droppedEventsCount")->valueint, 8);
    cJSON_Delete(root);
}

Test(otlp, resource_from_environment)
{
    start_responder();
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", responder_port(g_resp));
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url, 1);
    setenv("OTEL_RESOURCE_ATTRIBUTES",
           "service.name=attrs-name,deployment.environment=staging%20eu,"
           "telemetry.sdk.name=impostor",
           1);
    setenv("OTEL_SERVICE_NAME", "env-name", 1);
    svc_otlp_config_t c = from_env();
    cr_assert(c.enabled);
    svc_tracer_t *t = svc_otlp_tracer_create(&c);
    cr_assert_not_null(t);
    end_spans(t, 1, "one");
    svc_tracer_destroy(t);
    cr_assert_eq(responder_count(g_resp), 1);
    cr_assert_str_eq(responder_request(g_resp, 0)->path, "/v1/traces");
    cJSON *root = body_of(0);
    cJSON *rattrs = item(item(resource_spans0(root), "resource"), "attributes");
    cr_assert_str_eq(attr_str(rattrs, "service.name"), "env-name");
    cr_assert_str_eq(attr_str(rattrs, "deployment.environment"), "staging eu");
    cr_assert_str_eq(attr_str(rattrs, "telemetry.sdk.name"), "llmserve");
    cr_assert_null(attr(rattrs, "service.instance.id"), "no instance was set");
    int names = 0;
    const cJSON *a;
    cJSON_ArrayForEach(a, rattrs)
    {
        names += strcmp(item(a, "key")->valuestring, "service.name") == 0;
    }
    cr_assert_eq(names, 1);
    cJSON_Delete(root);
}

/* ---- the batch span processor ------------------------------------------------------ */

Test(otlp, schedule_delay_sends_a_partial_batch)
{
    start_responder();
    svc_tracer_t *t = tracer_to_responder(400);
    ls_sleep_us(100000);
    int64_t ended = ls_now_us();
    end_spans(t, 3, "few");
    ls_sleep_us(150000);
    cr_assert_eq(responder_count(g_resp), 0, "sent before the schedule");
    cr_assert(responder_wait(g_resp, 1, 3000));
    int64_t waited = responder_request(g_resp, 0)->at_us - ended;
    cr_assert_geq(waited, 200000, "sent after %lld us", (long long)waited);
    cr_assert_leq(waited, 1500000, "sent after %lld us", (long long)waited);
    cr_assert_eq(span_count(0), 3);
    wait_exported(t, 3); /* the request is recorded before it is answered */
    svc_otlp_stats_t st = stats(t);
    cr_assert_eq(st.exported, 3);
    cr_assert_eq(st.requests, 1);
    svc_tracer_destroy(t);
    cr_assert_eq(responder_count(g_resp), 1, "nothing left for the destroy");
}

Test(otlp, full_batches_leave_at_once_and_split)
{
    start_responder();
    svc_otlp_config_t c = config_to_responder(60000);
    c.max_queue_size = 100;
    c.max_export_batch_size = 10;
    svc_tracer_t *t = svc_otlp_tracer_create(&c);
    end_spans(t, 25, "many");
    cr_assert(responder_wait(g_resp, 2, 3000), "full batches wait for the schedule");
    ls_sleep_us(200000);
    cr_assert_eq(responder_count(g_resp), 2, "a partial batch left before its time");
    cr_assert_eq(span_count(0), 10);
    cr_assert_eq(span_count(1), 10);
    svc_tracer_destroy(t);
    cr_assert_eq(responder_count(g_resp), 3);
    cr_assert_eq(span_count(2), 5);
}

Test(otlp, destroy_flushes_what_is_queued)
{
    start_responder();
    svc_tracer_t *t = tracer_to_responder(60000);
    end_spans(t, 7, "late");
    cr_assert_eq(stats(t).queued, 7);
    int64_t t0 = ls_now_us();
    svc_tracer_destroy(t);
    cr_assert_lt(ls_now_us() - t0, 2000000);
    cr_assert_eq(responder_count(g_resp), 1);
    cr_assert_eq(span_count(0), 7);
}

Test(otlp, full_queue_drops_and_counts)
{
    start_responder();
    default_reply(200, 500); /* the exporter is busy while the burst comes */
    svc_otlp_config_t c = config_to_responder(60000);
    c.max_queue_size = 8;
    c.max_export_batch_size = 8;
    svc_tracer_t *t = svc_otlp_tracer_create(&c);
    end_spans(t, 1000, "burst");
    svc_otlp_stats_t st = stats(t);
    cr_assert_eq(st.sampled, 1000);
    cr_assert_geq(st.dropped, 900, "dropped=%llu", (unsigned long long)st.dropped);
    cr_assert_leq(st.queued, 8);
    svc_tracer_destroy(t);
}

Test(otlp, retry_on_503_then_success)
{
    start_responder();
    reply(503, "busy", NULL, 0);
    svc_tracer_t *t = tracer_to_responder(60000);
    end_spans(t, 4, "again");
    svc_tracer_destroy(t);
    cr_assert_eq(responder_count(g_resp), 2);
    cr_assert_str_eq(responder_request(g_resp, 0)->body, responder_request(g_resp, 1)->body,
                     "the same batch again");
    cr_assert_eq(span_count(1), 4);
}

Test(otlp, retry_counts_in_stats)
{
    start_responder();
    reply(429, NULL, NULL, 0);
    reply(502, NULL, NULL, 0);
    svc_tracer_t *t = tracer_to_responder(50);
    end_spans(t, 4, "again");
    cr_assert(responder_wait(g_resp, 3, 3000));
    wait_exported(t, 4);
    svc_otlp_stats_t st = stats(t);
    cr_assert_eq(st.exported, 4);
    cr_assert_eq(st.retries, 2);
    cr_assert_eq(st.failed, 0);
    cr_assert_eq(st.requests, 3);
    svc_tracer_destroy(t);
}

Test(otlp, no_retry_on_400)
{
    start_responder();
    reply(400, "{\"message\":\"bad\"}", NULL, 0);
    svc_tracer_t *t = tracer_to_responder(50);
    end_spans(t, 5, "refused");
    cr_assert(responder_wait(g_resp, 1, 3000));
    ls_sleep_us(300000);
    cr_assert_eq(responder_count(g_resp), 1, "a 400 was retried");
    svc_otlp_stats_t st = stats(t);
    cr_assert_eq(st.failed, 5);
    cr_assert_eq(st.retries, 0);
    cr_assert_eq(st.exported, 0);
    end_spans(t, 2, "later"); /* the default 200: export works again */
    cr_assert(responder_wait(g_resp, 2, 3000));
    svc_tracer_destroy(t);
    cr_assert_eq(span_count(1), 2);
}

Test(otlp, partial_success_is_not_retried)
{
    start_responder();
    reply(200, "{\"partialSuccess\":{\"rejectedSpans\":\"1\",\"errorMessage\":\"too old\"}}", NULL,
          0);
    svc_tracer_t *t = tracer_to_responder(60000);
    end_spans(t, 3, "partly");
    svc_tracer_destroy(t);
    cr_assert_eq(responder_count(g_resp), 1);
}

Test(otlp, retry_after_is_honoured)
{
    start_responder();
    reply(503, NULL, "Retry-After: 1\r\n", 0);
    svc_tracer_t *t = tracer_to_responder(50);
    end_spans(t, 2, "patient");
    cr_assert(responder_wait(g_resp, 2, 4000));
    int64_t gap = responder_request(g_resp, 1)->at_us - responder_request(g_resp, 0)->at_us;
    /* The back-off alone would be 10..20 ms. */
    cr_assert_geq(gap, 950000, "retried after %lld us", (long long)gap);
    cr_assert_leq(gap, 2500000, "retried after %lld us", (long long)gap);
    svc_tracer_destroy(t);
}

Test(otlp, retry_after_past_the_export_timeout_gives_up)
{
    start_responder();
    reply(503, NULL, "Retry-After: 30\r\n", 0);
    svc_otlp_config_t c = config_to_responder(50);
    c.export_timeout_ms = 1000;
    svc_tracer_t *t = svc_otlp_tracer_create(&c);
    end_spans(t, 2, "impatient");
    cr_assert(responder_wait(g_resp, 1, 3000));
    int64_t until = ls_now_us() + 2000000;
    while (stats(t).failed < 2 && ls_now_us() < until)
        ls_sleep_us(10000);
    cr_assert_eq(stats(t).failed, 2);
    cr_assert_eq(responder_count(g_resp), 1);
    svc_tracer_destroy(t);
}

/* Occurrences of text in what the log file f holds. */
static int log_count(FILE *f, const char *text)
{
    fflush(f);
    rewind(f);
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, text) != NULL;
    fseek(f, 0, SEEK_END);
    return n;
}

Test(otlp, failures_logged_once_per_change)
{
    start_responder();
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    ls_log_set_fd(fileno(f));
    ls_log_set_level(LS_LOG_INFO);
    for (int i = 0; i < 3; i++)
        reply(503, NULL, NULL, 0);
    reply(200, "{}", NULL, 0);
    reply(400, NULL, NULL, 0);
    reply(400, NULL, NULL, 0);
    svc_tracer_t *t = tracer_to_responder(20);
    end_spans(t, 1, "a"); /* 503 three times, then 200 */
    wait_exported(t, 1);
    cr_assert_eq(stats(t).exported, 1);
    cr_assert_eq(log_count(f, "span export failed"), 1, "the same 503 three times: one line");
    cr_assert_eq(log_count(f, "result=http_503"), 1);
    cr_assert_eq(log_count(f, "span export works again"), 1);
    end_spans(t, 1, "b"); /* 400 */
    cr_assert(responder_wait(g_resp, 5, 3000));
    end_spans(t, 1, "c"); /* 400 again: nothing new to say */
    cr_assert(responder_wait(g_resp, 6, 3000));
    int64_t until = ls_now_us() + 3000000;
    while (stats(t).failed < 2 && ls_now_us() < until)
        ls_sleep_us(5000);
    cr_assert_eq(stats(t).failed, 2);
    cr_assert_eq(log_count(f, "result=http_400"), 1);
    cr_assert_eq(log_count(f, "span export failed"), 2);
    svc_tracer_destroy(t);
    ls_log_set_fd(2);
    fclose(f);
}

/* Callers' cost must not depend on the receiver: a burst of span ends while the receiver
 * takes 5 s to answer stays fast, and the overflow is counted. */
Test(otlp, slow_receiver_never_blocks_callers)
{
    start_responder();
    default_reply(200, 5000);
    svc_otlp_config_t c = config_to_responder(10);
    c.max_queue_size = 100;
    c.max_export_batch_size = 50;
    c.export_timeout_ms = 1000;
    svc_tracer_t *t = svc_otlp_tracer_create(&c);
    end_spans(t, 50, "first"); /* the exporter is now waiting on the receiver */
    cr_assert(responder_wait(g_resp, 1, 3000));
    int64_t worst = 0, t0 = ls_now_us();
    for (int i = 0; i < 5000; i++) {
        int64_t a = ls_now_us();
        svc_span_t *s = svc_span_start(t, "burst", SVC_SPAN_SERVER, NULL);
        svc_span_set_int(s, "i", i);
        svc_span_end(s, 0, NULL);
        int64_t d = ls_now_us() - a;
        worst = d > worst ? d : worst;
    }
    int64_t total = ls_now_us() - t0;
    cr_assert_lt(total, 1000000, "5000 spans took %lld us", (long long)total);
    cr_assert_lt(worst, 100000, "one span took %lld us", (long long)worst);
    cr_assert_geq(stats(t).dropped, 4800);
    int64_t d0 = ls_now_us();
    svc_tracer_destroy(t);
    cr_assert_lt(ls_now_us() - d0, 2500000, "destroy is bounded by the export timeout");
}

Test(otlp, receiver_down_counts_failures)
{
    int port = test_free_port(); /* nobody listens there */
    cr_assert_gt(port, 0);
    svc_otlp_config_t c;
    svc_otlp_config_init(&c, "llmserve-test");
    c.enabled = true;
    snprintf(c.endpoint, sizeof(c.endpoint), "http://127.0.0.1:%d/v1/traces", port);
    c.schedule_delay_ms = 20;
    c.max_queue_size = 100;
    c.max_export_batch_size = 50;
    c.export_timeout_ms = 300;
    c.backoff_min_ms = 20;
    c.backoff_max_ms = 50;
    svc_tracer_t *t = svc_otlp_tracer_create(&c);
    int64_t t0 = ls_now_us();
    end_spans(t, 2000, "void");
    cr_assert_lt(ls_now_us() - t0, 1000000);
    int64_t until = ls_now_us() + 3000000;
    while (stats(t).failed == 0 && ls_now_us() < until)
        ls_sleep_us(10000);
    svc_otlp_stats_t st = stats(t);
    cr_assert_gt(st.failed, 0, "a refused connection is a failed export");
    cr_assert_gt(st.retries, 0, "connecting is retried");
    cr_assert_geq(st.dropped, 1800);
    cr_assert_eq(st.exported, 0);
    int64_t d0 = ls_now_us();
    svc_tracer_destroy(t);
    cr_assert_lt(ls_now_us() - d0, 1500000);
}

static void *span_thread(void *arg)
{
    svc_tracer_t *t = arg;
    for (int i = 0; i < 2000; i++) {
        svc_span_t *s = svc_span_start(t, "threaded", SVC_SPAN_CLIENT, NULL);
        svc_span_set_str(s, "k", "v");
        svc_span_event(s, "e");
        svc_span_end(s, i % 3, "m");
    }
    return NULL;
}

Test(otlp, threads_end_spans_while_batches_leave)
{
    start_responder();
    svc_otlp_config_t c = config_to_responder(5);
    c.max_queue_size = 20000;
    c.max_export_batch_size = 64;
    svc_tracer_t *t = svc_otlp_tracer_create(&c);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, span_thread, t), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    wait_exported(t, 8000);
    svc_otlp_stats_t st = stats(t);
    cr_assert_eq(st.started, 8000);
    cr_assert_eq(st.exported, 8000, "exported %llu", (unsigned long long)st.exported);
    cr_assert_eq(st.dropped + st.failed, 0);
    svc_tracer_destroy(t);
    size_t spans = 0;
    for (size_t i = 0; i < responder_count(g_resp); i++) {
        size_t n = span_count(i);
        cr_assert_leq(n, 64);
        spans += n;
    }
    cr_assert_eq(spans, 8000);
}

/* ---- sampling ---------------------------------------------------------------------- */

static svc_tracer_t *tracer_with(svc_otlp_sampler_t sampler, double ratio)
{
    svc_otlp_config_t c = config_to_responder(60000);
    c.sampler = sampler;
    c.ratio = ratio;
    c.max_queue_size = 20000;
    c.max_export_batch_size = 512;
    svc_tracer_t *t = svc_otlp_tracer_create(&c);
    cr_assert_not_null(t);
    return t;
}

static svc_trace_ctx_t random_parent(uint8_t flags)
{
    svc_trace_ctx_t p;
    cr_assert_eq(getrandom(p.trace_id, sizeof(p.trace_id), 0), (ssize_t)sizeof(p.trace_id));
    cr_assert_eq(getrandom(p.span_id, sizeof(p.span_id), 0), (ssize_t)sizeof(p.span_id));
    p.flags = flags;
    return p;
}

Test(otlp, parentbased_follows_the_parent_flag)
{
    start_responder();
    svc_tracer_t *t = tracer_with(SVC_OTLP_SAMPLER_PARENTBASED_ALWAYS_ON, 1.0);
    svc_trace_ctx_t yes = random_parent(SVC_TRACE_SAMPLED), no = random_parent(0);
    svc_span_t *s = svc_span_start(t, "child", SVC_SPAN_SERVER, &yes);
    cr_assert_not_null(s);
    svc_trace_ctx_t got;
    cr_assert(svc_span_context(s, &got));
    cr_assert_arr_eq(got.trace_id, yes.trace_id, 16, "the parent's trace");
    cr_assert(memcmp(got.span_id, yes.span_id, 8) != 0, "a span id of its own");
    svc_span_end(s, 0, NULL);
    cr_assert_null(svc_span_start(t, "child", SVC_SPAN_SERVER, &no));
    svc_span_t *root = svc_span_start(t, "root", SVC_SPAN_SERVER, NULL);
    cr_assert_not_null(root, "a root is sampled by always_on");
    svc_span_end(root, 0, NULL);
    svc_otlp_stats_t st = stats(t);
    cr_assert_eq(st.started, 3);
    cr_assert_eq(st.sampled, 2);
    svc_tracer_destroy(t);

    cJSON *body = body_of(0);
    cJSON *child = find_span(spans_of(body), "child");
    char hexid[17];
    for (int i = 0; i < 8; i++)
        snprintf(hexid + 2 * i, 3, "%02x", yes.span_id[i]);
    cr_assert_str_eq(item(child, "parentSpanId")->valuestring, hexid);
    cJSON_Delete(body);

    t = tracer_with(SVC_OTLP_SAMPLER_PARENTBASED_ALWAYS_OFF, 1.0);
    cr_assert_null(svc_span_start(t, "root", SVC_SPAN_SERVER, NULL), "always_off at the root");
    s = svc_span_start(t, "child", SVC_SPAN_SERVER, &yes);
    cr_assert_not_null(s, "a sampled parent wins");
    svc_span_end(s, 0, NULL);
    cr_assert_null(svc_span_start(t, "child", SVC_SPAN_SERVER, &no));
    svc_tracer_destroy(t);
}

Test(otlp, always_on_and_off_ignore_the_parent)
{
    start_responder();
    svc_trace_ctx_t no = random_parent(0), yes = random_parent(SVC_TRACE_SAMPLED);
    svc_tracer_t *t = tracer_with(SVC_OTLP_SAMPLER_ALWAYS_ON, 1.0);
    svc_span_t *s = svc_span_start(t, "x", SVC_SPAN_SERVER, &no);
    cr_assert_not_null(s);
    svc_span_end(s, 0, NULL);
    svc_tracer_destroy(t);
    t = tracer_with(SVC_OTLP_SAMPLER_ALWAYS_OFF, 1.0);
    cr_assert_null(svc_span_start(t, "x", SVC_SPAN_SERVER, &yes));
    cr_assert_null(svc_span_start(t, "x", SVC_SPAN_SERVER, NULL));
    svc_tracer_destroy(t);
}

/* Starts n roots (and n children of unsampled random parents, which traceidratio decides
 * on their trace id alone); returns how many were sampled. */
static size_t sampled_of(svc_tracer_t *t, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        svc_trace_ctx_t p = random_parent(0);
        svc_span_t *s = svc_span_start(t, "r", SVC_SPAN_SERVER, i % 2 ? &p : NULL);
        k += s != NULL;
        svc_span_end(s, 0, NULL);
    }
    return k;
}

Test(otlp, ratio_zero_and_one)
{
    start_responder();
    svc_tracer_t *t = tracer_with(SVC_OTLP_SAMPLER_TRACEIDRATIO, 0.0);
    cr_assert_eq(sampled_of(t, 2000), 0);
    svc_tracer_destroy(t);
    t = tracer_with(SVC_OTLP_SAMPLER_TRACEIDRATIO, 1.0);
    cr_assert_eq(sampled_of(t, 2000), 2000);
    svc_tracer_destroy(t);
}

Test(otlp, ratio_samples_about_that_share_and_decides_alike)
{
    start_responder();
    svc_tracer_t *t = tracer_with(SVC_OTLP_SAMPLER_TRACEIDRATIO, 0.25);
    size_t k = sampled_of(t, 10000);
    cr_assert(k > 2100 && k < 2900, "sampled %zu of 10000 at 0.25", k);
    /* The decision is the trace id's: the same id decides alike every time, whatever
     * the parent's flag. */
    for (int i = 0; i < 200; i++) {
        svc_trace_ctx_t p = random_parent(0), q = p;
        q.flags = SVC_TRACE_SAMPLED;
        svc_span_t *a = svc_span_start(t, "a", SVC_SPAN_SERVER, &p);
        svc_span_t *b = svc_span_start(t, "b", SVC_SPAN_SERVER, &q);
        cr_assert_eq(a != NULL, b != NULL);
        svc_span_end(a, 0, NULL);
        svc_span_end(b, 0, NULL);
    }
    svc_tracer_destroy(t);

    t = tracer_with(SVC_OTLP_SAMPLER_PARENTBASED_TRACEIDRATIO, 0.25);
    size_t roots = 0;
    for (int i = 0; i < 4000; i++) {
        svc_span_t *s = svc_span_start(t, "root", SVC_SPAN_SERVER, NULL);
        roots += s != NULL;
        svc_span_end(s, 0, NULL);
    }
    cr_assert(roots > 700 && roots < 1300, "sampled %zu of 4000 roots at 0.25", roots);
    svc_trace_ctx_t yes = random_parent(SVC_TRACE_SAMPLED);
    svc_span_t *s = svc_span_start(t, "child", SVC_SPAN_SERVER, &yes);
    cr_assert_not_null(s, "a sampled parent wins over the ratio");
    svc_span_end(s, 0, NULL);
    svc_tracer_destroy(t);
}

/* ---- times, arrays, the next hop, metrics ----------------------------------------- */

Test(otlp, times_given_on_the_monotonic_clock)
{
    start_responder();
    svc_tracer_t *t = tracer_to_responder(60000);
    int64_t now = ls_now_us();
    uint64_t wall0 = (uint64_t)ls_wall_us() * 1000u;
    /* a span that began 300 ms ago and ended 100 ms ago, with an event 200 ms ago */
    svc_span_t *s = svc_span_start_at(t, "past", SVC_SPAN_INTERNAL, NULL, now - 300000);
    svc_span_event_at(s, "middle", now - 200000);
    svc_span_event_at(s, "future", now + 5000000); /* later than now counts as now */
    svc_span_end_at(s, 0, NULL, now - 100000);
    svc_tracer_destroy(t);
    cJSON *root = body_of(0);
    cJSON *sp = find_span(spans_of(root), "past");
    unsigned long long start = u64_of(sp, "startTimeUnixNano");
    unsigned long long end = u64_of(sp, "endTimeUnixNano");
    cr_assert(end - start > 190000000ull && end - start < 210000000ull, "length %llu ns",
              end - start);
    cr_assert(start < wall0 - 280000000ull && start > wall0 - 400000000ull, "start %lld ms ago",
              (long long)(wall0 - start) / 1000000);
    cJSON *ev = item(sp, "events");
    cr_assert_eq(cJSON_GetArraySize(ev), 2);
    unsigned long long e0 = u64_of(cJSON_GetArrayItem(ev, 0), "timeUnixNano");
    unsigned long long e1 = u64_of(cJSON_GetArrayItem(ev, 1), "timeUnixNano");
    cr_assert(e0 > start + 90000000ull && e0 < end - 90000000ull);
    cr_assert_geq(e1, wall0);
    cJSON_Delete(root);
}

Test(otlp, string_array_attribute)
{
    start_responder();
    svc_tracer_t *t = tracer_to_responder(60000);
    svc_span_t *s = svc_span_start(t, "arr", SVC_SPAN_INTERNAL, NULL);
    const char *const reasons[] = {"stop", "length"};
    svc_span_set_strs(s, "gen_ai.response.finish_reasons", reasons, 2);
    svc_span_set_strs(s, "empty", NULL, 0);
    svc_span_set_strs(s, "replaced", reasons, 1);
    svc_span_set_str(s, "replaced", "text"); /* an array's slot takes another type */
    svc_span_end(s, 0, NULL);
    svc_tracer_destroy(t);
    cJSON *root = body_of(0);
    cJSON *attrs = item(find_span(spans_of(root), "arr"), "attributes");
    cJSON *vals = item(item(attr(attrs, "gen_ai.response.finish_reasons"), "arrayValue"), "values");
    cr_assert_eq(cJSON_GetArraySize(vals), 2);
    cr_assert_str_eq(item(cJSON_GetArrayItem(vals, 0), "stringValue")->valuestring, "stop");
    cr_assert_str_eq(item(cJSON_GetArrayItem(vals, 1), "stringValue")->valuestring, "length");
    cJSON *empty = item(item(attr(attrs, "empty"), "arrayValue"), "values");
    cr_assert_eq(cJSON_GetArraySize(empty), 0);
    cr_assert_str_eq(attr_str(attrs, "replaced"), "text");
    cJSON_Delete(root);
}

Test(otlp, next_hop_context)
{
    start_responder();
    svc_trace_ctx_t out, parent = random_parent(0);
    /* no tracer, no parent: nothing to pass */
    cr_assert_not(svc_trace_next_hop(NULL, NULL, NULL, &out));
    /* no tracer, a parent: passed on as it came */
    cr_assert(svc_trace_next_hop(NULL, NULL, &parent, &out));
    cr_assert_eq(memcmp(&out, &parent, sizeof(out)), 0);
    svc_tracer_t *t = tracer_with(SVC_OTLP_SAMPLER_PARENTBASED_ALWAYS_ON, 1.0);
    /* an unsampled parent: no span; its trace id goes on, unsampled, from a new span id */
    svc_span_t *s = svc_span_start(t, "x", SVC_SPAN_SERVER, &parent);
    cr_assert_null(s);
    cr_assert(svc_trace_next_hop(t, s, &parent, &out));
    cr_assert_eq(memcmp(out.trace_id, parent.trace_id, 16), 0);
    cr_assert_neq(memcmp(out.span_id, parent.span_id, 8), 0);
    cr_assert_eq(out.flags, 0);
    /* a sampled parent this service's sampler drops: passed on unsampled */
    svc_tracer_t *off = tracer_with(SVC_OTLP_SAMPLER_TRACEIDRATIO, 0.0);
    svc_trace_ctx_t sp = random_parent(SVC_TRACE_SAMPLED);
    cr_assert_null(svc_span_start(off, "z", SVC_SPAN_SERVER, &sp));
    cr_assert(svc_trace_next_hop(off, NULL, &sp, &out));
    cr_assert_eq(memcmp(out.trace_id, sp.trace_id, 16), 0);
    cr_assert_eq(out.flags, 0);
    svc_tracer_destroy(off);
    /* a sampled span: its own context */
    svc_trace_ctx_t sampled = random_parent(SVC_TRACE_SAMPLED);
    s = svc_span_start(t, "y", SVC_SPAN_SERVER, &sampled);
    cr_assert(svc_trace_next_hop(t, s, &sampled, &out));
    cr_assert_eq(memcmp(out.trace_id, sampled.trace_id, 16), 0);
    cr_assert_neq(memcmp(out.span_id, sampled.span_id, 8), 0);
    cr_assert_eq(out.flags, SVC_TRACE_SAMPLED);
    svc_span_end(s, 0, NULL);
    svc_tracer_destroy(t);
    /* a tracer that samples nothing, no parent: a fresh unsampled context, new each time */
    t = tracer_with(SVC_OTLP_SAMPLER_ALWAYS_OFF, 1.0);
    svc_trace_ctx_t a, b;
    cr_assert(svc_trace_next_hop(t, NULL, NULL, &a));
    cr_assert(svc_trace_next_hop(t, NULL, NULL, &b));
    cr_assert_eq(a.flags, 0);
    cr_assert_neq(memcmp(a.trace_id, b.trace_id, 16), 0);
    char tp[SVC_TRACEPARENT_LEN + 1];
    svc_traceparent_format(&a, tp);
    svc_trace_ctx_t back;
    cr_assert(svc_traceparent_parse(tp, &back), "%s", tp);
    cr_assert_eq(memcmp(&back, &a, sizeof(a)), 0);
    svc_tracer_destroy(t);
}

/* A reporter that sums counters by name and reason. */
typedef struct {
    svc_reporter_t base;
    pthread_mutex_t mu;
    double exported, queue_full, export_failed, shutdown;
} sum_reporter_t;

static void sum_add(svc_reporter_t *r, const char *name, const svc_label_t *labels,
                    size_t n_labels, double delta)
{
    sum_reporter_t *s = (sum_reporter_t *)r;
    pthread_mutex_lock(&s->mu);
    if (strcmp(name, "llmserve_trace_spans_exported_total") == 0) {
        cr_assert_eq(n_labels, 0);
        s->exported += delta;
    } else if (strcmp(name, "llmserve_trace_spans_dropped_total") == 0) {
        cr_assert_eq(n_labels, 1);
        cr_assert_str_eq(labels[0].key, "reason");
        const char *v = labels[0].value;
        *(strcmp(v, "queue_full") == 0      ? &s->queue_full
          : strcmp(v, "export_failed") == 0 ? &s->export_failed
                                            : &s->shutdown) += delta;
    }
    pthread_mutex_unlock(&s->mu);
}

static void sum_set(svc_reporter_t *r, const char *name, const svc_label_t *labels,
                    size_t n_labels, double value)
{
    (void)r, (void)name, (void)labels, (void)n_labels, (void)value;
}

static void sum_destroy(svc_reporter_t *r)
{
    (void)r;
}

static const svc_reporter_ops_t sum_ops = {sum_add, sum_set, sum_set, sum_destroy};

Test(otlp, drops_and_exports_are_reported)
{
    start_responder();
    sum_reporter_t rep = {.base = {&sum_ops}};
    pthread_mutex_init(&rep.mu, NULL);
    default_reply(200, 300); /* busy while the burst comes */
    svc_otlp_config_t c = config_to_responder(60000);
    c.max_queue_size = 8;
    c.max_export_batch_size = 8;
    c.reporter = &rep.base;
    svc_tracer_t *t = svc_otlp_tracer_create(&c);
    end_spans(t, 100, "burst");
    svc_tracer_destroy(t);
    cr_assert_gt(rep.queue_full, 0);
    cr_assert_gt(rep.exported, 0);
    cr_assert_eq(rep.queue_full + rep.exported + rep.export_failed + rep.shutdown, 100,
                 "every span counted once: %g %g %g %g", rep.queue_full, rep.exported,
                 rep.export_failed, rep.shutdown);

    /* a receiver answering 400: the batch counted as failed */
    sum_reporter_t rep2 = {.base = {&sum_ops}};
    pthread_mutex_init(&rep2.mu, NULL);
    default_reply(400, 0);
    c.reporter = &rep2.base;
    t = svc_otlp_tracer_create(&c);
    end_spans(t, 5, "refused");
    svc_tracer_destroy(t);
    cr_assert_eq(rep2.export_failed, 5);
    cr_assert_eq(rep2.exported, 0);
}

Test(otlp, json_strings_escaped_and_utf8_kept_valid)
{
    start_responder();
    svc_tracer_t *t = tracer_to_responder(60000);
    svc_span_t *s = svc_span_start(t, "q\"b\\n\nt\tc\x01", SVC_SPAN_INTERNAL, NULL);
    svc_span_set_str(s, "utf8", "caf\xc3\xa9 \xe2\x82\xac");         /* valid: kept */
    svc_span_set_str(s, "latin1", "caf\xe9 \"x\"");                    /* not UTF-8 */
    svc_span_set_str(s, "k\"ey", "");
    svc_span_set_double(s, "short", 0.7);
    svc_span_set_double(s, "sum", 0.1 + 0.2);                          /* needs 17 digits */
    svc_span_set_double(s, "nan", 0.0 / 0.0);
    svc_span_set_int(s, "min", INT64_MIN);
    const char *const arr[] = {"a\"", "\xff"};
    svc_span_set_strs(s, "arr", arr, 2);
    svc_span_end(s, 0, NULL);
    svc_tracer_destroy(t);
    const responder_request_t *q = responder_request(g_resp, 0);
    cr_assert_not_null(q);
    cr_assert(strstr(q->body, "\"doubleValue\":0.7}"), "%s", q->body);
    cJSON *root = body_of(0);
    cJSON *sp = find_span(spans_of(root), "q\"b\\n\nt\tc\x01");
    cJSON *attrs = item(sp, "attributes");
    cr_assert_str_eq(attr_str(attrs, "utf8"), "caf\xc3\xa9 \xe2\x82\xac");
    cr_assert_str_eq(attr_str(attrs, "latin1"), "caf? \"x\"");
    cr_assert_str_eq(attr_str(attrs, "k\"ey"), "");
    cr_assert_eq(item(attr(attrs, "sum"), "doubleValue")->valuedouble, 0.1 + 0.2);
    cr_assert_str_eq(item(attr(attrs, "nan"), "doubleValue")->valuestring, "NaN");
    cr_assert_str_eq(item(attr(attrs, "min"), "intValue")->valuestring, "-9223372036854775808");
    cJSON *vals = item(item(attr(attrs, "arr"), "arrayValue"), "values");
    cr_assert_str_eq(item(cJSON_GetArrayItem(vals, 0), "stringValue")->valuestring, "a\"");
    cr_assert_str_eq(item(cJSON_GetArrayItem(vals, 1), "stringValue")->valuestring, "?");
    cJSON_Delete(root);
}
