/*
 * svc.c - svc_main: options, lifecycle and signals for every service binary.
 *
 * Everything here runs on the main thread but svc_fail; the getters only read fields
 * written before the first hook runs.  svc_fail hands its reason to the main thread
 * through `failed` (set after fail_reason is written) and wakes its sigwait with a
 * SIGTERM sent to that thread alone: every thread blocks the signal, so nothing else
 * can take it, and a process-wide kill could be taken by a thread of a test process
 * that runs svc_main without blocking it.
 */
#define _GNU_SOURCE
#include "svc/svc.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/signals.h"
#include "rpc/init.h"
#include "rpc/status.h"
#include "svc/metric_names.h"
#include "svc/registrar_consul.h"
#include "svc/report_client.h"
#include "svc/tracer_otlp.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef LLMSERVE_VERSION
#define LLMSERVE_VERSION "unknown"
#endif

/* How long deregistration may hold up the drain at shutdown. */
#define SVC_DEREGISTER_MS 2000

struct svc {
    const svc_spec_t *spec;
    svc_common_t common;
    char mod[32];
    char env_prefix[64];
    ls_opt_t *opts;
    size_t n_opts;
    ls_config_t conf;

    rpc_server_t *srv;
    rpc_channel_config_t upstream;
    int port;
    svc_keys_t *keys;
    svc_reporter_t *reporter;
    svc_reporter_t *own_reporter; /* made from --metrics (then also reporter) */
    svc_tracer_t *tracer;
    svc_tracer_t *own_tracer;    /* made from the OTEL_* environment (then also tracer) */
    svc_otlp_config_t *otlp_cfg; /* read at the check; NULL when the spec brought a tracer */
    svc_registrar_t *registrar;
    svc_registrar_t *own_registrar; /* made for Consul (then also registrar) */
    consul_config_t consul_cfg;
    consul_t *consul;              /* --consul on */
    consul_watch_t *metrics_watch; /* --metrics consul: follows llmserve-metrics */
    bool metrics_consul;
    char metrics_target[300]; /* the collector Consul named last (its watch thread's) */

    char **tags;
    size_t n_tags;
    svc_label_t *meta;
    size_t n_meta;

    pthread_t main_thread;    /* runs svc_main; svc_fail wakes it */
    atomic_bool fail_claimed; /* a svc_fail call is the first */
    atomic_bool failed;       /* fail_reason is written: stop, exit 1 */
    char fail_reason[512];
};

/* ---- getters ---------------------------------------------------------------------- */

rpc_server_t *svc_server(svc_t *svc)
{
    return svc->srv;
}

const svc_common_t *svc_common(svc_t *svc)
{
    return &svc->common;
}

const rpc_channel_config_t *svc_upstream_channel(svc_t *svc)
{
    return &svc->upstream;
}

int svc_port(svc_t *svc)
{
    return svc->port;
}

svc_keys_t *svc_keys(svc_t *svc)
{
    return svc->keys;
}

svc_reporter_t *svc_reporter(svc_t *svc)
{
    return svc->reporter;
}

svc_tracer_t *svc_tracer(svc_t *svc)
{
    return svc->tracer;
}

consul_t *svc_consul(svc_t *svc)
{
    return svc->consul;
}

void svc_add_tag(svc_t *svc, const char *tag)
{
    char **t = realloc(svc->tags, (svc->n_tags + 1) * sizeof(*t));
    LS_ASSERT(t != NULL);
    svc->tags = t;
    svc->tags[svc->n_tags++] = ls_xstrdup(tag);
}

void svc_add_meta(svc_t *svc, const char *key, const char *value)
{
    svc_label_t *m = realloc(svc->meta, (svc->n_meta + 1) * sizeof(*m));
    LS_ASSERT(m != NULL);
    svc->meta = m;
    svc->meta[svc->n_meta].key = ls_xstrdup(key);
    svc->meta[svc->n_meta].value = ls_xstrdup(value);
    svc->n_meta++;
}

void svc_fail(svc_t *svc, const char *reason)
{
    if (atomic_exchange(&svc->fail_claimed, true)) {
        LS_LOG_WARN(svc->mod, "service already failing, another failure reason=\"%s\"",
                    reason ? reason : "");
        return;
    }
    snprintf(svc->fail_reason, sizeof(svc->fail_reason), "%s", reason ? reason : "");
    atomic_store(&svc->failed, true);
    LS_LOG_ERROR(svc->mod, "service failed, stopping with exit status 1 reason=\"%s\"",
                 svc->fail_reason);
    rpc_server_set_health_all(svc->srv, RPC_HEALTH_NOT_SERVING);
    pthread_kill(svc->main_thread, SIGTERM);
}

/* ---- options --------------------------------------------------------------------- */

/* The common options, then the service's own, into one table. */
static void build_options(svc_t *s)
{
    const svc_spec_t *sp = s->spec;
    svc_common_t *c = &s->common;
    const ls_opt_t common[] = {
        {"listen", NULL, LS_OPT_STRING, &c->listen,
         "address to serve on, HOST:PORT (port 0: any free port, printed at start)", 0, 0},
        {"rpc-threads", NULL, LS_OPT_INT, &c->rpc_threads,
         "gRPC completion-queue threads (0: one per core)", 0, 256},
        {"grace-ms", NULL, LS_OPT_INT, &c->grace_ms,
         "after SIGTERM/SIGINT, ms the work in flight may take to finish", 0, 3600000},
        {"max-write-queue", NULL, LS_OPT_INT, &c->max_write_queue,
         "messages queued per call for a client that reads slowly before its call is cut off "
         "(RESOURCE_EXHAUSTED)",
         16, 1e9},
        {"log-level", "LLMSERVE_LOG_LEVEL", LS_OPT_STRING, &c->log_level,
         "lowest level logged: debug, info, warn or error", 0, 0},
        {"log-format", "LLMSERVE_LOG_FORMAT", LS_OPT_STRING, &c->log_format,
         "log lines as text (key=value fields) or json (one object per line)", 0, 0},
        {"tls-cert", NULL, LS_OPT_STRING, &c->tls_cert,
         "PEM certificate chain for --listen; with --tls-key the port speaks TLS only", 0, 0},
        {"tls-key", NULL, LS_OPT_STRING, &c->tls_key, "PEM private key of --tls-cert", 0, 0},
        {"tls-client-ca", NULL, LS_OPT_STRING, &c->tls_client_ca,
         "PEM CA certificates; clients must present a certificate they signed (mutual TLS)", 0, 0},
        {"metrics", NULL, LS_OPT_STRING, &c->metrics,
         "metrics collector to report to: HOST:PORT, consul (the llmserve-metrics instance "
         "registered in Consul) or off; empty: consul when Consul is on, else off; TLS as "
         "for upstream calls",
         0, 0},
        {"metrics-interval-ms", NULL, LS_OPT_INT, &c->metrics_interval_ms,
         "ms between two reports to the collector", 10, 3600000},
        {"metrics-instance", NULL, LS_OPT_STRING, &c->metrics_instance,
         "this process's name at the collector (its instance label); empty: the address "
         "peers reach and the port (--advertise)",
         0, 0},
        {"advertise", NULL, LS_OPT_STRING, &c->advertise,
         "HOST[:PORT] where peers reach this process, when not what --listen says (NAT, a "
         "container); empty: the listen host (this host's name for 0.0.0.0 or ::) and the "
         "bound port",
         0, 0},
        {"consul", NULL, LS_OPT_STRING, &c->consul,
         "register with the local Consul agent: on, off, or auto (on when CONSUL_HTTP_ADDR "
         "is set); the agent and its token come from Consul's own CONSUL_HTTP_* variables",
         0, 0},
        {"consul-tags", NULL, LS_OPT_STRING, &c->consul_tags,
         "extra tags of the Consul registration, comma-separated", 0, 0},
        {"consul-check-interval-ms", NULL, LS_OPT_INT, &c->consul_check_interval_ms,
         "ms between two gRPC health checks the Consul agent makes", 100, 3600000},
        {"consul-check-timeout-ms", NULL, LS_OPT_INT, &c->consul_check_timeout_ms,
         "ms one Consul health check may take", 100, 600000},
        {"consul-deregister-after-ms", NULL, LS_OPT_INT, &c->consul_deregister_after_ms,
         "ms a failing check may last before the agent removes the registration (Consul "
         "raises it to 1 minute at least; 0: never)",
         0, 86400000.0 * 30},
        {"consul-resync-ms", NULL, LS_OPT_INT, &c->consul_resync_ms,
         "ms between two checks that the agent still has the registration (a restarted "
         "agent gets it again)",
         100, 3600000},
        {"consul-check-tls-server-name", NULL, LS_OPT_STRING, &c->consul_check_tls_server_name,
         "name the agent's TLS health check expects in this service's certificate "
         "(TLSServerName); empty: the advertised host",
         0, 0},
    };
    const ls_opt_t upstream[] = {
        {"upstream-tls-ca", NULL, LS_OPT_STRING, &c->upstream_tls_ca,
         "PEM CA certificates that the services this one calls must present a certificate "
         "from (turns TLS on for those calls; without it, with another upstream TLS flag, "
         "the system's roots)",
         0, 0},
        {"upstream-tls-cert", NULL, LS_OPT_STRING, &c->upstream_tls_cert,
         "PEM client certificate shown to the services this one calls (mutual TLS)", 0, 0},
        {"upstream-tls-key", NULL, LS_OPT_STRING, &c->upstream_tls_key,
         "PEM private key of --upstream-tls-cert", 0, 0},
        {"upstream-tls-server-name", NULL, LS_OPT_STRING, &c->upstream_tls_server_name,
         "name expected in the upstream certificates instead of the host dialled", 0, 0},
    };
    const ls_opt_t keys[] = {
        {"api-keys", NULL, LS_OPT_STRING, &c->api_keys,
         "file of API keys, one per line, each optionally followed by the tenant it is bound "
         "to; clients then send \"authorization: Bearer KEY\" (re-read on SIGHUP)",
         0, 0},
    };
    size_t n_common = sizeof(common) / sizeof(common[0]);
    size_t n_up = sp->upstreams ? sizeof(upstream) / sizeof(upstream[0]) : 0;
    size_t n_keys = sp->api_keys ? 1 : 0;
    s->n_opts = n_common + n_up + n_keys + sp->n_opts;
    s->opts = ls_xcalloc(s->n_opts, sizeof(*s->opts));
    size_t at = 0;
    memcpy(s->opts + at, common, sizeof(common));
    at += n_common;
    if (n_up)
        memcpy(s->opts + at, upstream, sizeof(upstream));
    at += n_up;
    if (n_keys)
        memcpy(s->opts + at, keys, sizeof(keys));
    at += n_keys;
    if (sp->n_opts)
        memcpy(s->opts + at, sp->opts, sp->n_opts * sizeof(*sp->opts));

    snprintf(s->env_prefix, sizeof(s->env_prefix), "LLMSERVE_");
    for (const char *p = sp->service; *p && strlen(s->env_prefix) < sizeof(s->env_prefix) - 2;
         p++) {
        size_t l = strlen(s->env_prefix);
        s->env_prefix[l] = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p == '-' ? '_' : *p);
        s->env_prefix[l + 1] = '\0';
    }
    strcat(s->env_prefix, "_");
    s->conf = (ls_config_t){.program = sp->program,
                            .summary = sp->summary,
                            .env_prefix = s->env_prefix,
                            .opts = s->opts,
                            .n_opts = s->n_opts,
                            .aliases = sp->aliases,
                            .n_aliases = sp->n_aliases};
}

static bool set(const char *s)
{
    return s && *s;
}

/* HOST or HOST:PORT or [V6]:PORT with a port in 1..65535; LS_OK or LS_ERR_INVALID. */
static int check_advertise(const char *a, char *err, size_t err_len)
{
    const char *colon = strrchr(a, ':');
    if (a[0] == '[') {
        const char *end = strchr(a, ']');
        if (!end || end == a + 1 || (end[1] && end[1] != ':')) {
            ls_set_err(err, err_len, "'%s' is not HOST[:PORT] ([V6]:PORT for IPv6)", a);
            return LS_ERR_INVALID;
        }
        colon = end[1] ? end + 1 : NULL;
    } else if (colon && strchr(a, ':') != colon) {
        ls_set_err(err, err_len, "'%s': an IPv6 address goes in brackets", a);
        return LS_ERR_INVALID;
    }
    if (colon == a) {
        ls_set_err(err, err_len, "'%s' has no host", a);
        return LS_ERR_INVALID;
    }
    if (colon) {
        char *end = NULL;
        long port = strtol(colon + 1, &end, 10);
        if (!colon[1] || *end || port < 1 || port > 65535) {
            ls_set_err(err, err_len, "'%s': the port is not 1..65535", a);
            return LS_ERR_INVALID;
        }
    }
    return LS_OK;
}

/* Checks the common options; LS_OK or LS_ERR_INVALID with the reason in err. */
static int check_common(svc_t *s, char *err, size_t err_len)
{
    svc_common_t *c = &s->common;
    ls_log_level_t lvl;
    ls_log_format_t fmt;
    char why[400];
    if (!ls_log_parse_level(c->log_level, &lvl)) {
        ls_set_err(err, err_len, "--log-level: '%s' is not debug, info, warn or error",
                   c->log_level ? c->log_level : "");
        return LS_ERR_INVALID;
    }
    if (!ls_log_parse_format(c->log_format, &fmt)) {
        ls_set_err(err, err_len, "--log-format: '%s' is not text or json",
                   c->log_format ? c->log_format : "");
        return LS_ERR_INVALID;
    }
    /* Before anything below logs (the key file does). */
    ls_log_set_level(lvl);
    ls_log_set_format(fmt);
    if (!set(c->listen)) {
        ls_set_err(err, err_len, "--listen: an address HOST:PORT is needed");
        return LS_ERR_INVALID;
    }
    if (set(c->tls_cert) != set(c->tls_key)) {
        ls_set_err(err, err_len, "--tls-cert and --tls-key go together");
        return LS_ERR_INVALID;
    }
    if (set(c->tls_client_ca) && !set(c->tls_cert)) {
        ls_set_err(err, err_len,
                   "--tls-client-ca needs --tls-cert and --tls-key (mutual TLS "
                   "is TLS first)");
        return LS_ERR_INVALID;
    }
    if (set(c->tls_cert) && rpc_tls_check_files(c->tls_cert, c->tls_key,
                                                set(c->tls_client_ca) ? c->tls_client_ca : NULL,
                                                why, sizeof(why)) != LS_OK) {
        ls_set_err(err, err_len, "--tls-cert/--tls-key/--tls-client-ca: %s", why);
        return LS_ERR_INVALID;
    }
    if (set(c->upstream_tls_cert) != set(c->upstream_tls_key)) {
        ls_set_err(err, err_len, "--upstream-tls-cert and --upstream-tls-key go together");
        return LS_ERR_INVALID;
    }
    if ((set(c->upstream_tls_cert) || set(c->upstream_tls_ca)) &&
        rpc_tls_check_files(set(c->upstream_tls_cert) ? c->upstream_tls_cert : NULL,
                            set(c->upstream_tls_key) ? c->upstream_tls_key : NULL,
                            set(c->upstream_tls_ca) ? c->upstream_tls_ca : NULL, why,
                            sizeof(why)) != LS_OK) {
        ls_set_err(err, err_len, "--upstream-tls-*: %s", why);
        return LS_ERR_INVALID;
    }
    if (strcmp(c->consul, "auto") != 0 && strcmp(c->consul, "on") != 0 &&
        strcmp(c->consul, "off") != 0) {
        ls_set_err(err, err_len, "--consul: '%s' is not on, off or auto", c->consul);
        return LS_ERR_INVALID;
    }
    if (set(c->advertise) && check_advertise(c->advertise, why, sizeof(why)) != LS_OK) {
        ls_set_err(err, err_len, "--advertise: %s", why);
        return LS_ERR_INVALID;
    }
    /* auto: on when CONSUL_HTTP_ADDR is set (Consul's other variables are read only
     * then, so a stray one cannot stop a service that does not use Consul). */
    const char *addr_env = getenv("CONSUL_HTTP_ADDR");
    if (strcmp(c->consul, "on") == 0 ||
        (strcmp(c->consul, "auto") == 0 && addr_env && addr_env[0])) {
        if (consul_config_from_env(&s->consul_cfg, why, sizeof(why)) != LS_OK) {
            ls_set_err(err, err_len, "Consul configuration: %s", why);
            return LS_ERR_INVALID;
        }
        s->consul = consul_create(&s->consul_cfg);
        if (!s->consul) {
            ls_set_err(err, err_len, "--consul: the HTTP client did not start");
            return LS_ERR_INVALID;
        }
    }
    if (strcmp(c->metrics, "consul") == 0 && !s->consul) {
        ls_set_err(err, err_len, "--metrics consul needs Consul (--consul on or CONSUL_HTTP_ADDR)");
        return LS_ERR_INVALID;
    }
    s->metrics_consul = strcmp(c->metrics, "consul") == 0 || (!set(c->metrics) && s->consul);
    if (set(c->api_keys)) {
        s->keys = svc_keys_load(c->api_keys, why, sizeof(why));
        if (!s->keys) {
            ls_set_err(err, err_len, "--api-keys: %s", why);
            return LS_ERR_INVALID;
        }
    }
    return LS_OK;
}

static void build_upstream(svc_t *s)
{
    const svc_common_t *c = &s->common;
    rpc_channel_config_init(&s->upstream);
    bool tls =
        set(c->upstream_tls_ca) || set(c->upstream_tls_cert) || set(c->upstream_tls_server_name);
    if (!tls)
        return;
    s->upstream.tls = true;
    s->upstream.tls_root_file = set(c->upstream_tls_ca) ? c->upstream_tls_ca : NULL;
    s->upstream.tls_cert_file = set(c->upstream_tls_cert) ? c->upstream_tls_cert : NULL;
    s->upstream.tls_key_file = set(c->upstream_tls_key) ? c->upstream_tls_key : NULL;
    s->upstream.tls_server_name =
        set(c->upstream_tls_server_name) ? c->upstream_tls_server_name : NULL;
}

/* ---- lifecycle -------------------------------------------------------------------- */

static void reload(svc_t *s)
{
    char err[512];
    LS_LOG_INFO(s->mod, "reloading signal=SIGHUP");
    if (rpc_server_reload_tls(s->srv, err, sizeof(err)) != LS_OK)
        LS_LOG_ERROR(s->mod, "TLS certificates not reloaded, the old stay in use reason=\"%s\"",
                     err);
    if (s->keys && svc_keys_reload(s->keys, err, sizeof(err)) != LS_OK)
        LS_LOG_ERROR(s->mod, "API keys not reloaded, the old stay in use reason=\"%s\"", err);
    if (s->spec->hooks.reload && s->spec->hooks.reload(s, s->spec->ud, err, sizeof(err)) != LS_OK)
        LS_LOG_ERROR(s->mod, "reload failed reason=\"%s\"", err);
}

/* The address peers reach: --advertise's host, else the listen host, or this host's
 * name for a wildcard.  IPv6 without brackets. */
static void advertised_host(const svc_t *s, char *address, size_t len)
{
    char host[256] = "";
    if (set(s->common.advertise)) {
        const char *a = s->common.advertise;
        if (a[0] == '[') {
            snprintf(address, len, "%.*s", (int)(strchr(a, ']') - a - 1), a + 1);
        } else {
            const char *colon = strchr(a, ':');
            snprintf(address, len, "%.*s", (int)(colon ? (size_t)(colon - a) : strlen(a)), a);
        }
        return;
    }
    const char *listen = s->common.listen;
    const char *colon = strrchr(listen, ':');
    size_t hl = colon ? (size_t)(colon - listen) : strlen(listen);
    snprintf(address, len, "%.*s", (int)hl, listen);
    if (address[0] == '[') { /* [::1] */
        memmove(address, address + 1, strlen(address));
        address[strcspn(address, "]")] = '\0';
    }
    gethostname(host, sizeof(host) - 1);
    if (!address[0] || strcmp(address, "0.0.0.0") == 0 || strcmp(address, "::") == 0)
        snprintf(address, len, "%s", host);
}

/* The port peers reach: --advertise's, else the bound one. */
static int advertised_port(const svc_t *s)
{
    const char *a = s->common.advertise;
    if (!set(a))
        return s->port;
    const char *end = a[0] == '[' ? strchr(a, ']') : a;
    const char *colon = strchr(end, ':');
    return colon ? atoi(colon + 1) : s->port;
}

/* The registration the registrar gets: the service's name, an id unique per host and
 * port, the address peers reach, the service's tags and --consul-tags. */
static void do_register(svc_t *s)
{
    if (!s->registrar)
        return;
    char host[256] = "", address[256], id[400];
    advertised_host(s, address, sizeof(address));
    gethostname(host, sizeof(host) - 1);
    int port = advertised_port(s);
    snprintf(id, sizeof(id), "%s-%s-%d", s->spec->program, host, port);
    if (set(s->common.consul_tags)) {
        char *copy = ls_xstrdup(s->common.consul_tags), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            while (*t == ' ')
                t++;
            size_t l = strlen(t);
            while (l > 0 && t[l - 1] == ' ')
                t[--l] = '\0';
            if (*t)
                svc_add_tag(s, t);
        }
        free(copy);
    }
    svc_registration_t reg = {.name = s->spec->program,
                              .id = id,
                              .address = address,
                              .port = port,
                              .tls = set(s->common.tls_cert),
                              .tags = (const char *const *)s->tags,
                              .n_tags = s->n_tags,
                              .meta = s->meta,
                              .n_meta = s->n_meta};
    if (svc_registrar_register(s->registrar, &reg) != LS_OK)
        LS_LOG_ERROR(s->mod, "registration refused id=%s", id);
}

/* ---- metrics reporting -------------------------------------------------------------- */

static void on_call_ended(void *ud, const char *method, grpc_status_code code)
{
    svc_t *s = ud;
    svc_label_t labels[2] = {{"method", method}, {"code", rpc_status_name(code)}};
    svc_metric_add(s->reporter, M_GRPC_HANDLED, labels, 2, 1);
}

/* Before hooks.create, so that the service holds the reporter from the start: the report
 * client for --metrics (unless the spec brought a reporter).  It aggregates until
 * reporting_start names the instance.  LS_OK, or an error with the reason in err. */
static int reporting_create(svc_t *s, char *err, size_t err_len)
{
    if (s->reporter)
        return LS_OK;
    if (!s->metrics_consul && (!set(s->common.metrics) || strcmp(s->common.metrics, "off") == 0))
        return LS_OK;
    svc_report_config_t cfg;
    svc_report_config_init(&cfg);
    cfg.target = s->metrics_consul ? "" : s->common.metrics; /* "": Consul names it later */
    cfg.service = s->spec->service;
    cfg.channel = &s->upstream;
    cfg.interval_ms = s->common.metrics_interval_ms;
    s->own_reporter = svc_report_client_create(&cfg);
    if (!s->own_reporter) {
        ls_set_err(err, err_len, "--metrics: cannot report to '%s' (see the log)",
                   s->common.metrics);
        return LS_ERR_INVALID;
    }
    s->reporter = s->own_reporter;
    return LS_OK;
}

/* The collectors registered in Consul (watch thread): the one in use stays while it is
 * listed; otherwise the first by id.  An empty list changes nothing (the last one may
 * come back; samples wait within their bounds meanwhile). */
static void on_collectors(void *ud, const consul_instance_t *list, size_t n)
{
    svc_t *s = ud;
    char addr[300];
    if (n == 0) {
        LS_LOG_INFO(s->mod,
                    "no metrics collector passing in Consul service=llmserve-metrics "
                    "collector=%s",
                    s->metrics_target[0] ? s->metrics_target : "none");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(addr, sizeof(addr), strchr(list[i].address, ':') ? "[%s]:%d" : "%s:%d",
                 list[i].address, list[i].port);
        if (strcmp(addr, s->metrics_target) == 0)
            return;
    }
    snprintf(addr, sizeof(addr), strchr(list[0].address, ':') ? "[%s]:%d" : "%s:%d",
             list[0].address, list[0].port);
    snprintf(s->metrics_target, sizeof(s->metrics_target), "%s", addr);
    svc_report_client_set_target(s->own_reporter, addr);
}

/* After the listen, before the server starts: every call that ends is counted, and the
 * report client starts under its instance name (the port is known now). */
/* The instance's name for metrics and traces: --metrics-instance, else host:port as
 * peers reach it. */
static void instance_name(const svc_t *s, char *instance, size_t len)
{
    char host[256];
    if (set(s->common.metrics_instance)) {
        snprintf(instance, len, "%s", s->common.metrics_instance);
    } else {
        advertised_host(s, host, sizeof(host));
        snprintf(instance, len, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host,
                 advertised_port(s));
    }
}

static int reporting_start(svc_t *s)
{
    if (!s->reporter)
        return LS_OK;
    rpc_server_set_call_observer(s->srv, on_call_ended, s);
    if (!s->own_reporter)
        return LS_OK;
    char instance[300];
    instance_name(s, instance, sizeof(instance));
    LS_LOG_INFO(s->mod, "reporting metrics collector=%s instance=%s interval_ms=%lld",
                s->metrics_consul ? "consul:llmserve-metrics" : s->common.metrics, instance,
                (long long)s->common.metrics_interval_ms);
    if (svc_report_client_start(s->own_reporter, instance) != LS_OK)
        return LS_ERR_INTERNAL;
    if (s->metrics_consul) {
        consul_watch_config_t wc;
        consul_watch_config_init(&wc, "llmserve-metrics");
        s->metrics_watch = consul_watch_start(s->consul, &wc, on_collectors, s);
        if (!s->metrics_watch)
            return LS_ERR_INTERNAL;
    }
    return LS_OK;
}

/* ---- tracing ----------------------------------------------------------------------- */

/* At the check: the OTEL_* environment (tracer_otlp.h), unless the spec brought a
 * tracer.  A value that does not parse is a usage error, like a bad flag. */
static int tracing_check(svc_t *s, char *err, size_t err_len)
{
    if (s->tracer)
        return LS_OK;
    s->otlp_cfg = ls_xcalloc(1, sizeof(*s->otlp_cfg));
    return svc_otlp_config_from_env(s->otlp_cfg, s->spec->program, err, err_len);
}

/* After reporting_create (the tracer counts its drops there): the OTLP exporter when
 * tracing is on.  LS_OK, or an error with the reason in err. */
static int tracing_create(svc_t *s, char *err, size_t err_len)
{
    if (!s->otlp_cfg || !s->otlp_cfg->enabled) {
        LS_LOG_DEBUG(s->mod, "tracing off (no OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT)");
        return LS_OK;
    }
    s->otlp_cfg->reporter = s->reporter;
    s->own_tracer = svc_otlp_tracer_create(s->otlp_cfg);
    if (!s->own_tracer) {
        ls_set_err(err, err_len, "tracing: cannot export to '%s' (see the log)",
                   s->otlp_cfg->endpoint);
        return LS_ERR_INVALID;
    }
    s->tracer = s->own_tracer;
    LS_LOG_INFO(s->mod,
                "tracing endpoint=%s service_name=%s sampler=%s ratio=%g schedule_delay_ms=%lld "
                "max_queue_size=%zu",
                s->otlp_cfg->endpoint, s->otlp_cfg->service_name,
                svc_otlp_sampler_name(s->otlp_cfg->sampler), s->otlp_cfg->ratio,
                (long long)s->otlp_cfg->schedule_delay_ms, s->otlp_cfg->max_queue_size);
    return LS_OK;
}

/* After the listen: spans carry service.instance.id from now on. */
static void tracing_start(svc_t *s)
{
    if (!s->own_tracer)
        return;
    char instance[300];
    instance_name(s, instance, sizeof(instance));
    svc_otlp_tracer_set_instance(s->own_tracer, instance);
}

static void svc_free(svc_t *s)
{
    for (size_t i = 0; i < s->n_tags; i++)
        free(s->tags[i]);
    free(s->tags);
    for (size_t i = 0; i < s->n_meta; i++) {
        free((char *)s->meta[i].key);
        free((char *)s->meta[i].value);
    }
    free(s->meta);
    svc_keys_destroy(s->keys);
    consul_watch_stop(s->metrics_watch); /* no target changes from here on */
    /* The exporter's last flush (within OTEL_BSP_EXPORT_TIMEOUT), before the reporter it
     * counts drops in. */
    svc_tracer_destroy(s->own_tracer);
    free(s->otlp_cfg);
    svc_reporter_destroy(s->own_reporter); /* the report client's last flush */
    svc_registrar_destroy(s->own_registrar);
    consul_destroy(s->consul);
    consul_config_free(&s->consul_cfg);
    free(s->opts);
    free(s);
}

/* svc_fail's SIGTERM is left pending when the main thread was not in sigwait (a failure
 * while starting or stopping); taken here so that a later svc_main in the same process
 * (a test) does not stop at once.  A SIGTERM from outside may go with it: the process is
 * stopping anyway. */
static void take_pending_sigterm(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    struct timespec zero = {0, 0};
    while (sigtimedwait(&set, NULL, &zero) == SIGTERM) {
    }
}

static int fail_usage(svc_t *s, const char *err)
{
    fprintf(stderr, "%s: %s\n", s->spec->program, err);
    svc_free(s);
    return 2;
}

int svc_main(const svc_spec_t *spec, int argc, char **argv)
{
    /* OpenSSL first, so that its start is ours (no exit handler: see rpc/init.h), not
     * libcurl's or gRPC's. */
    rpc__openssl_init();
    svc_t *s = ls_xcalloc(1, sizeof(*s));
    s->spec = spec;
    s->main_thread = pthread_self();
    snprintf(s->mod, sizeof(s->mod), "%s", spec->service);
    svc_common_t *c = &s->common;
    c->listen = spec->default_listen;
    c->rpc_threads = spec->default_rpc_threads;
    c->grace_ms = spec->default_grace_ms;
    c->max_write_queue = 4096;
    c->log_level = "info";
    c->log_format = "text";
    c->metrics = "";
    c->metrics_interval_ms = 1000;
    c->metrics_instance = "";
    c->advertise = "";
    c->consul = "auto";
    c->consul_tags = "";
    c->consul_check_interval_ms = 10000;
    c->consul_check_timeout_ms = 5000;
    c->consul_deregister_after_ms = 60000;
    c->consul_resync_ms = 10000;
    c->consul_check_tls_server_name = "";
    s->reporter = spec->reporter;
    s->tracer = spec->tracer;
    s->registrar = spec->registrar;
    build_options(s);

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            printf("%s %s\n", spec->program, LLMSERVE_VERSION);
            svc_free(s);
            return 0;
        }
    }
    char err[1024];
    int rc = ls_config_load(&s->conf, argc, argv, err, sizeof(err));
    if (rc == LS_CONFIG_HELP) {
        svc_free(s);
        return 0;
    }
    if (rc != LS_OK)
        return fail_usage(s, err);
    if (check_common(s, err, sizeof(err)) != LS_OK)
        return fail_usage(s, err);
    if (spec->hooks.check && spec->hooks.check(s, spec->ud, err, sizeof(err)) != LS_OK)
        return fail_usage(s, err);
    if (tracing_check(s, err, sizeof(err)) != LS_OK)
        return fail_usage(s, err);
    build_upstream(s);
    /* Before any thread (gRPC's included) exists, so that every thread inherits it. */
    ls_signals_block();
    if (s->consul && !s->registrar) {
        svc_consul_registrar_config_t rc_cfg;
        svc_consul_registrar_config_init(&rc_cfg);
        rc_cfg.check_interval_ms = c->consul_check_interval_ms;
        rc_cfg.check_timeout_ms = c->consul_check_timeout_ms;
        rc_cfg.deregister_after_ms = c->consul_deregister_after_ms;
        rc_cfg.resync_ms = c->consul_resync_ms;
        rc_cfg.check_tls_server_name =
            set(c->consul_check_tls_server_name) ? c->consul_check_tls_server_name : NULL;
        s->own_registrar = svc_consul_registrar_create(s->consul, &rc_cfg);
        s->registrar = s->own_registrar;
    }
    ls_config_log(&s->conf, s->mod);
    LS_LOG_INFO(s->mod,
                "starting program=%s version=%s pid=%d tls=%s mutual_tls=%s "
                "upstream_tls=%s api_keys=%zu consul=%s",
                spec->program, LLMSERVE_VERSION, (int)getpid(), set(c->tls_cert) ? "on" : "off",
                set(c->tls_client_ca) ? "on" : "off", s->upstream.tls ? "on" : "off",
                s->keys ? svc_keys_count(s->keys) : (size_t)0,
                s->consul ? consul_where(s->consul) : "off");

    if (reporting_create(s, err, sizeof(err)) != LS_OK ||
        tracing_create(s, err, sizeof(err)) != LS_OK) {
        fprintf(stderr, "%s: %s\n", spec->program, err);
        svc_free(s);
        return 1;
    }
    int status = 1;
    rpc_server_config_t scfg;
    rpc_server_config_init(&scfg);
    scfg.threads = (int)c->rpc_threads;
    scfg.max_write_queue = (size_t)c->max_write_queue;
    scfg.name = spec->service;
    scfg.initial_health = RPC_HEALTH_NOT_SERVING;
    s->srv = rpc_server_create(&scfg);
    if (!s->srv) {
        LS_LOG_ERROR(s->mod, "cannot create the gRPC server");
        svc_free(s);
        return 1;
    }
    if (s->keys)
        rpc_server_set_auth(s->srv, svc_keys_authorize, s->keys);
    bool created = false;
    if (spec->hooks.create) {
        rc = spec->hooks.create(s, spec->ud, err, sizeof(err));
        if (rc != LS_OK) {
            fprintf(stderr, "%s: %s\n", spec->program, err);
            LS_LOG_ERROR(s->mod, "cannot start reason=\"%s\"", err);
            status = rc == LS_ERR_INVALID ? 2 : 1;
            goto out_server;
        }
    }
    created = true;
    rpc_tls_server_t tls = {c->tls_cert, c->tls_key,
                            set(c->tls_client_ca) ? c->tls_client_ca : NULL};
    if (rpc_server_listen(s->srv, c->listen, set(c->tls_cert) ? &tls : NULL, &s->port) != LS_OK ||
        reporting_start(s) != LS_OK || rpc_server_start(s->srv) != LS_OK) {
        fprintf(stderr, "%s: cannot serve on %s (see the log)\n", spec->program, c->listen);
        goto out_server;
    }
    tracing_start(s);
    printf("LISTENING port=%d\n", s->port);
    fflush(stdout);

    if (spec->hooks.start && spec->hooks.start(s, spec->ud, err, sizeof(err)) != LS_OK) {
        fprintf(stderr, "%s: %s\n", spec->program, err);
        LS_LOG_ERROR(s->mod, "cannot start reason=\"%s\"", err);
        rpc_server_shutdown(s->srv, 0);
        goto out_server;
    }
    /* After a failure during start, never SERVING.  A failure just after this test is
     * overwritten by SERVING only until the stop below sets NOT_SERVING again. */
    bool serving = !atomic_load(&s->failed);
    if (serving) {
        rpc_server_set_health_all(s->srv, RPC_HEALTH_SERVING);
        svc_metric_set(s->reporter, M_UP, NULL, 0, 1);
        do_register(s);
        LS_LOG_INFO(s->mod, "serving port=%d", s->port);
        printf("SERVING\n");
        fflush(stdout);
    }

    int sig = SIGTERM;
    while (!atomic_load(&s->failed) && (sig = ls_signals_wait()) == SIGHUP)
        reload(s);
    int64_t t0 = ls_now_us();
    if (atomic_load(&s->failed))
        LS_LOG_INFO(s->mod, "stopping cause=failure grace_ms=%lld reason=\"%s\"",
                    (long long)c->grace_ms, s->fail_reason);
    else
        LS_LOG_INFO(s->mod, "stopping cause=%s grace_ms=%lld",
                    sig == SIGTERM ? "SIGTERM" : "SIGINT", (long long)c->grace_ms);
    rpc_server_set_health_all(s->srv, RPC_HEALTH_NOT_SERVING);
    svc_metric_set(s->reporter, M_UP, NULL, 0, 0);
    if (serving && s->registrar &&
        svc_registrar_deregister(s->registrar, SVC_DEREGISTER_MS) != LS_OK)
        LS_LOG_WARN(s->mod, "deregistration did not finish; the catalogue will expire it");
    int64_t deadline = t0 + c->grace_ms * 1000;
    int64_t server_grace_ms;
    if (spec->hooks.drain) {
        spec->hooks.drain(s, spec->ud, deadline);
        server_grace_ms = spec->flush_ms;
    } else {
        int64_t left = (deadline - ls_now_us()) / 1000;
        server_grace_ms = left > 0 ? left : 0;
    }
    rpc_server_shutdown(s->srv, server_grace_ms);
    LS_LOG_INFO(s->mod, "stopped after_ms=%lld", (long long)((ls_now_us() - t0) / 1000));
    status = 0;

out_server:
    rpc_server_shutdown(s->srv, 0);
    if (created && spec->hooks.destroy)
        spec->hooks.destroy(s, spec->ud);
    rpc_server_destroy(s->srv);
    if (atomic_load(&s->failed)) {
        /* A failure while stopping counts too: the process did not end in order. */
        status = 1;
        take_pending_sigterm();
    }
    svc_free(s);
    return status;
}
