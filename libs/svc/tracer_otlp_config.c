/*
 * tracer_otlp_config.c - the OTLP tracer's configuration from the OTEL_* environment
 * (tracer_otlp.h), as the OTel specification's sdk-environment-variables.md names it.
 */
#define _GNU_SOURCE
#include "svc/tracer_otlp.h"

#include "base/err.h"
#include "base/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MOD "otlp"
#define MAX_MS 3600000000LL /* the largest duration accepted from the environment: 1000 h */
#define MAX_QUEUE 1048576   /* the largest OTEL_BSP_MAX_QUEUE_SIZE accepted */

void svc_otlp_config_init(svc_otlp_config_t *cfg, const char *service_name)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->enabled = false;
    snprintf(cfg->service_name, sizeof(cfg->service_name), "%s", service_name ? service_name : "");
    cfg->timeout_ms = 10000;                               /* ms per request */
    cfg->sampler = SVC_OTLP_SAMPLER_PARENTBASED_ALWAYS_ON; /* the specification's */
    cfg->ratio = 1.0;                                      /* share of traces */
    cfg->schedule_delay_ms = 5000;                         /* ms between batches */
    cfg->export_timeout_ms = 30000;                        /* ms per export */
    cfg->max_queue_size = 2048;                            /* spans */
    cfg->max_export_batch_size = 512;                      /* spans per request */
    cfg->backoff_min_ms = 1000;                            /* ms */
    cfg->backoff_max_ms = 5000;                            /* ms */
}

/* The variable's value, NULL when unset.  An empty value counts as unset, as the
 * specification says. */
static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* A positive decimal number of at most max, digits only (spaces around allowed). */
static bool parse_count(const char *s, int64_t max, int64_t *out)
{
    while (*s == ' ' || *s == '\t')
        s++;
    int64_t v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (*p - '0');
        if (v > max)
            return false;
    }
    if (p == s)
        return false;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p || v <= 0)
        return false;
    *out = v;
    return true;
}

/* Reads a positive integer variable into *out (left as is when unset). */
static int env_count(const char *name, int64_t max, int64_t *out, char *err, size_t err_len)
{
    const char *v = env(name);
    if (!v)
        return LS_OK;
    if (!parse_count(v, max, out)) {
        ls_set_err(err, err_len, "%s must be a whole number from 1 to %" PRId64 ", not '%.64s'",
                   name, max, v);
        return LS_ERR_INVALID;
    }
    return LS_OK;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Copies s[0..n) into out (cap bytes), spaces around trimmed, %XX decoded when decode;
 * false when it does not fit or an escape is malformed. */
static bool copy_trimmed(const char *s, size_t n, bool decode, char *out, size_t cap)
{
    while (n > 0 && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (decode && c == '%') {
            int hi = i + 2 < n ? hex_digit(s[i + 1]) : -1;
            int lo = hi >= 0 ? hex_digit(s[i + 2]) : -1;
            if (lo < 0)
                return false;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (o + 1 >= cap)
            return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

/* Parses "k=v,k2=v2" (values percent-decoded) into kv (at most max; *n set).  Empty
 * entries are skipped; an entry without '=' or with an empty key is an error. */
static int parse_pairs(const char *name, const char *s, svc_otlp_kv_t *kv, size_t max, size_t *n,
                       char *err, size_t err_len)
{
    *n = 0;
    for (const char *p = s; *p;) {
        size_t len = strcspn(p, ",");
        const char *eq = memchr(p, '=', len);
        bool blank = strspn(p, " \t") >= len;
        if (!blank) {
            if (*n == max) {
                ls_set_err(err, err_len, "%s has more than %zu entries", name, max);
                return LS_ERR_INVALID;
            }
            svc_otlp_kv_t *e = &kv[*n];
            if (!eq || !copy_trimmed(p, (size_t)(eq - p), false, e->key, sizeof(e->key)) ||
                !e->key[0] ||
                !copy_trimmed(eq + 1, len - (size_t)(eq + 1 - p), true, e->value,
                              sizeof(e->value))) {
                ls_set_err(err, err_len,
                           "%s: entry %zu is not key=value (percent-encoded, key at most %zu "
                           "and value at most %zu bytes)",
                           name, *n + 1, sizeof(e->key) - 1, sizeof(e->value) - 1);
                return LS_ERR_INVALID;
            }
            (*n)++;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return LS_OK;
}

static bool http_url(const char *s)
{
    return (strncasecmp(s, "http://", 7) == 0 && s[7]) ||
           (strncasecmp(s, "https://", 8) == 0 && s[8]);
}

static int config_endpoint(svc_otlp_config_t *cfg, char *err, size_t err_len)
{
    const char *traces = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    const char *base = env("OTEL_EXPORTER_OTLP_ENDPOINT");
    const char *name =
        traces ? "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" : "OTEL_EXPORTER_OTLP_ENDPOINT";
    const char *v = traces ? traces : base;
    if (!v)
        return LS_OK;
    if (!http_url(v) || strpbrk(v, " \t\r\n")) {
        ls_set_err(err, err_len, "%s must be an http:// or https:// URL, not '%.128s'", name, v);
        return LS_ERR_INVALID;
    }
    size_t len = strlen(v);
    int n;
    if (traces)
        n = snprintf(cfg->endpoint, sizeof(cfg->endpoint), "%s", v);
    else
        n = snprintf(cfg->endpoint, sizeof(cfg->endpoint), "%s%sv1/traces", v,
                     v[len - 1] == '/' ? "" : "/");
    if (n < 0 || (size_t)n >= sizeof(cfg->endpoint)) {
        ls_set_err(err, err_len, "%s is longer than %zu bytes", name, sizeof(cfg->endpoint) - 20);
        return LS_ERR_INVALID;
    }
    cfg->enabled = true;
    return LS_OK;
}

/* This exporter speaks http/json only.  http/protobuf goes to the same port and path,
 * where an OTLP/HTTP receiver takes JSON as well, so it is let pass with a warning (an
 * environment shared with other SDKs often names it); grpc is another port and protocol. */
static int config_protocol(char *err, size_t err_len)
{
    const char *name = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
    const char *v = env(name);
    if (!v) {
        name = "OTEL_EXPORTER_OTLP_PROTOCOL";
        v = env(name);
    }
    if (!v || strcmp(v, "http/json") == 0)
        return LS_OK;
    if (strcmp(v, "http/protobuf") == 0) {
        LS_LOG_WARN(MOD, "this exporter sends OTLP/HTTP JSON, not protobuf variable=%s value=%s",
                    name, v);
        return LS_OK;
    }
    ls_set_err(err, err_len,
               "%s: this exporter speaks http/json (http/protobuf is let pass), not '%.64s'", name,
               v);
    return LS_ERR_INVALID;
}

static int config_sampler(svc_otlp_config_t *cfg, char *err, size_t err_len)
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
    const char *v = env("OTEL_TRACES_SAMPLER");
    if (v) {
        size_t i = 0;
        while (i < sizeof(names) / sizeof(names[0]) && strcmp(names[i].name, v) != 0)
            i++;
        if (i == sizeof(names) / sizeof(names[0])) {
            ls_set_err(err, err_len,
                       "OTEL_TRACES_SAMPLER must be always_on, always_off, traceidratio, "
                       "parentbased_always_on, parentbased_always_off or "
                       "parentbased_traceidratio, not '%.64s'",
                       v);
            return LS_ERR_INVALID;
        }
        cfg->sampler = names[i].s;
    }
    const char *arg = env("OTEL_TRACES_SAMPLER_ARG");
    if (!arg || (cfg->sampler != SVC_OTLP_SAMPLER_TRACEIDRATIO &&
                 cfg->sampler != SVC_OTLP_SAMPLER_PARENTBASED_TRACEIDRATIO))
        return LS_OK;
    char *end;
    errno = 0;
    double r = strtod(arg, &end);
    while (*end == ' ' || *end == '\t')
        end++;
    if (end == arg || *end || errno || !(r >= 0.0 && r <= 1.0)) {
        /* The specification's rule for this one variable: warn and use the default. */
        LS_LOG_WARN(MOD,
                    "OTEL_TRACES_SAMPLER_ARG is not a ratio in [0, 1], sampling every "
                    "trace value=\"%.64s\" ratio=1.0",
                    arg);
        cfg->ratio = 1.0;
        return LS_OK;
    }
    cfg->ratio = r;
    return LS_OK;
}

static int config_resource(svc_otlp_config_t *cfg, char *err, size_t err_len)
{
    const char *v = env("OTEL_RESOURCE_ATTRIBUTES");
    svc_otlp_kv_t all[SVC_OTLP_MAX_RESOURCE + 1];
    size_t n = 0;
    if (v) {
        int rc = parse_pairs("OTEL_RESOURCE_ATTRIBUTES", v, all, SVC_OTLP_MAX_RESOURCE + 1, &n, err,
                             err_len);
        if (rc != LS_OK)
            return rc;
    }
    cfg->n_resource = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(all[i].key, "service.name") == 0) {
            snprintf(cfg->service_name, sizeof(cfg->service_name), "%.*s",
                     (int)sizeof(cfg->service_name) - 1, all[i].value);
            continue;
        }
        if (cfg->n_resource == SVC_OTLP_MAX_RESOURCE) {
            ls_set_err(err, err_len, "OTEL_RESOURCE_ATTRIBUTES has more than %d entries",
                       SVC_OTLP_MAX_RESOURCE);
            return LS_ERR_INVALID;
        }
        cfg->resource[cfg->n_resource++] = all[i];
    }
    const char *name = env("OTEL_SERVICE_NAME");
    if (name)
        snprintf(cfg->service_name, sizeof(cfg->service_name), "%s", name);
    return LS_OK;
}

int svc_otlp_config_from_env(svc_otlp_config_t *cfg, const char *service_name, char *err,
                             size_t err_len)
{
    svc_otlp_config_t c;
    svc_otlp_config_init(&c, service_name);
    int rc;

    bool disabled = false;
    const char *dis = env("OTEL_SDK_DISABLED");
    if (dis && strcasecmp(dis, "true") == 0) {
        disabled = true;
    } else if (dis && strcasecmp(dis, "false") != 0) {
        ls_set_err(err, err_len, "OTEL_SDK_DISABLED must be true or false, not '%.64s'", dis);
        return LS_ERR_INVALID;
    }
    if ((rc = config_endpoint(&c, err, err_len)) != LS_OK ||
        (rc = config_protocol(err, err_len)) != LS_OK)
        return rc;

    const char *hv = env("OTEL_EXPORTER_OTLP_TRACES_HEADERS");
    const char *hname = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
    if (!hv) {
        hv = env("OTEL_EXPORTER_OTLP_HEADERS");
        hname = "OTEL_EXPORTER_OTLP_HEADERS";
    }
    if (hv && (rc = parse_pairs(hname, hv, c.headers, SVC_OTLP_MAX_HEADERS, &c.n_headers, err,
                                err_len)) != LS_OK)
        return rc;
    for (size_t i = 0; i < c.n_headers; i++) {
        /* A header line cannot carry these: they would split the request. */
        if (strpbrk(c.headers[i].key, ":\r\n \t") || strpbrk(c.headers[i].value, "\r\n")) {
            ls_set_err(err, err_len, "%s: header '%.64s' has a character not allowed there", hname,
                       c.headers[i].key);
            return LS_ERR_INVALID;
        }
    }

    if ((rc = env_count("OTEL_EXPORTER_OTLP_TIMEOUT", MAX_MS, &c.timeout_ms, err, err_len)) ||
        (rc =
             env_count("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", MAX_MS, &c.timeout_ms, err, err_len)) ||
        (rc = config_resource(&c, err, err_len)) || (rc = config_sampler(&c, err, err_len)) ||
        (rc = env_count("OTEL_BSP_SCHEDULE_DELAY", MAX_MS, &c.schedule_delay_ms, err, err_len)) ||
        (rc = env_count("OTEL_BSP_EXPORT_TIMEOUT", MAX_MS, &c.export_timeout_ms, err, err_len)))
        return rc;
    int64_t q = (int64_t)c.max_queue_size, b = (int64_t)c.max_export_batch_size;
    if ((rc = env_count("OTEL_BSP_MAX_QUEUE_SIZE", MAX_QUEUE, &q, err, err_len)) ||
        (rc = env_count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", MAX_QUEUE, &b, err, err_len)))
        return rc;
    if (b > q) {
        if (env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")) {
            ls_set_err(err, err_len,
                       "OTEL_BSP_MAX_EXPORT_BATCH_SIZE (%" PRId64 ") must not exceed "
                       "OTEL_BSP_MAX_QUEUE_SIZE (%" PRId64 ")",
                       b, q);
            return LS_ERR_INVALID;
        }
        b = q; /* only the queue was made smaller than the default batch */
    }
    c.max_queue_size = (size_t)q;
    c.max_export_batch_size = (size_t)b;
    if (disabled)
        c.enabled = false;
    *cfg = c;
    return LS_OK;
}

const char *svc_otlp_sampler_name(svc_otlp_sampler_t s)
{
    switch (s) {
    case SVC_OTLP_SAMPLER_ALWAYS_ON:
        return "always_on";
    case SVC_OTLP_SAMPLER_ALWAYS_OFF:
        return "always_off";
    case SVC_OTLP_SAMPLER_TRACEIDRATIO:
        return "traceidratio";
    case SVC_OTLP_SAMPLER_PARENTBASED_ALWAYS_ON:
        return "parentbased_always_on";
    case SVC_OTLP_SAMPLER_PARENTBASED_ALWAYS_OFF:
        return "parentbased_always_off";
    case SVC_OTLP_SAMPLER_PARENTBASED_TRACEIDRATIO:
        return "parentbased_traceidratio";
    }
    return "unknown";
}
