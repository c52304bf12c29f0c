/*
 * svc.h - the service runtime: one option scheme, one lifecycle and one place for TLS,
 * API keys, and the seams (metrics reporter, tracer, registrar) of every service binary.
 *
 * A service's main.c is its option table, its hooks and one call:
 *
 *     int main(int argc, char **argv) { ...; return svc_main(&spec, argc, argv); }
 *
 * Options.  Every flag --foo-bar is also read from LLMSERVE_<SERVICE>_FOO_BAR (flags
 * win; see libs/base/config.h).  Every service has the common options, with the same
 * names everywhere:
 *   --listen HOST:PORT, --rpc-threads N, --grace-ms MS, --max-write-queue N,
 *   --log-level debug|info|warn|error (also LLMSERVE_LOG_LEVEL),
 *   --log-format text|json (also LLMSERVE_LOG_FORMAT),
 *   --tls-cert FILE --tls-key FILE [--tls-client-ca FILE]   (TLS, mutual TLS),
 *   --metrics HOST:PORT   the collector (llmserve.v1.Metrics) to report to; "consul":
 *                         the one registered in Consul as llmserve-metrics (followed
 *                         as it changes); "off": none.  Default: consul when Consul is
 *                         on, else off.  TLS as for upstream calls (--upstream-tls-*)
 *                         where the service has them, else plaintext,
 *   --metrics-interval-ms MS   between reports (default 1000),
 *   --metrics-instance NAME    the instance label at the collector (default: the
 *                         advertised host and port),
 *   --advertise HOST[:PORT]    where peers reach this process (default: the listen
 *                         host, this host's name for 0.0.0.0 or ::, and the bound port),
 *   --consul auto|on|off  registration with the local Consul agent (registrar_consul.h;
 *                         auto: on when CONSUL_HTTP_ADDR is set), configured by Consul's
 *                         own variables (libs/consul/consul.h), with
 *   --consul-tags T,...  --consul-check-interval-ms --consul-check-timeout-ms
 *   --consul-deregister-after-ms --consul-resync-ms --consul-check-tls-server-name,
 * services that call others (spec.upstreams; the metrics collector counts) also
 *   --upstream-tls-ca FILE [--upstream-tls-cert FILE --upstream-tls-key FILE]
 *   [--upstream-tls-server-name NAME],
 * and services that take API keys (spec.api_keys) --api-keys FILE (keys.h).
 * --help lists all with their variables and defaults; --version prints the version.
 *
 * Lifecycle (exit status 2 for bad options, 1 when the service cannot start or failed
 * (svc_fail), 0 after an orderly stop):
 *   options parsed and checked (hooks.check); logging set up; signals blocked;
 *   the effective configuration logged, secrets redacted
 *   report client      made for --metrics unless spec.reporter is set: svc_reporter()
 *                      holds it from hooks.create on; samples wait in it until it starts
 *   hooks.create       build objects, register methods on svc_server()
 *   listen             "LISTENING port=N" on stdout; the report client starts under
 *                      its instance name, every call that ends is counted in
 *                      llmserve_grpc_server_handled_total{method,code}; the server
 *                      starts NOT_SERVING
 *   hooks.start        load, connect (may block)
 *   health SERVING, llmserve_up 1, the registrar registers (Consul: name
 *                      llmserve-<service>, id llmserve-<service>-<host>-<port>, the
 *                      advertised address, a gRPC health check), "SERVING" on stdout
 *   then, until SIGTERM or SIGINT or svc_fail:
 *     SIGHUP           server TLS certificates, API keys and hooks.reload are read
 *                      again; what fails to load is logged and the old stays in use
 *   SIGTERM/SIGINT     health NOT_SERVING, llmserve_up 0, the registrar deregisters,
 *                      hooks.drain (stop admitting; work in flight may finish until
 *                      --grace-ms after the signal), the server stops (events still
 *                      queued get spec.flush_ms to reach their clients), hooks.destroy,
 *                      the report client sends what it holds (final counts included;
 *                      at most 500 ms) and stops, exit 0.
 *   svc_fail           (any thread, e.g. a device that failed for good) the reason is
 *                      logged and health turns NOT_SERVING at once; then the same stop
 *                      as SIGTERM, but exit 1, so that an orchestrator restarts the
 *                      process.  Called during hooks.start, health never turns SERVING
 *                      and "SERVING" is not printed; called during the stop, the stop
 *                      goes on and the exit status is 1.
 *
 * Threads: svc_main runs on the main thread and blocks SIGINT/SIGTERM/SIGHUP before any
 * other thread exists (every thread inherits the mask; signals are taken with
 * sigwait).  Hooks run on the main thread.  The getters and svc_fail are safe from any
 * thread once hooks.create has been called.
 */
#ifndef SVC_SVC_H
#define SVC_SVC_H

#include "base/config.h"
#include "consul/consul.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "svc/keys.h"
#include "svc/registrar.h"
#include "svc/reporter.h"
#include "svc/tracer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct svc svc_t;

/* The common options as parsed (strings borrowed from argv or the environment). */
typedef struct {
    const char *listen;
    int64_t rpc_threads;
    int64_t grace_ms;
    int64_t max_write_queue;
    const char *log_level;
    const char *log_format;
    const char *tls_cert, *tls_key, *tls_client_ca;
    const char *upstream_tls_ca, *upstream_tls_cert, *upstream_tls_key;
    const char *upstream_tls_server_name;
    const char *api_keys;
    const char *metrics;          /* collector HOST:PORT, "consul", "off"; "" = the default
                                     (consul when Consul is on, else off) */
    int64_t metrics_interval_ms;  /* between reports */
    const char *metrics_instance; /* "" = the advertised host:port */
    const char *advertise;        /* HOST[:PORT] peers reach; "" = from --listen */
    const char *consul;           /* "auto" (on with CONSUL_HTTP_ADDR), "on", "off" */
    const char *consul_tags;      /* extra tags, comma-separated */
    int64_t consul_check_interval_ms, consul_check_timeout_ms;
    int64_t consul_deregister_after_ms, consul_resync_ms;
    const char *consul_check_tls_server_name;
} svc_common_t;

/* What a service hands the runtime.  Every hook may be NULL; ud is the service's.  err
 * (err_len bytes) takes a one-line reason when a hook fails. */
typedef struct {
    /* After parsing: checks values the option table cannot (combinations, files).
     * LS_OK, or an error: the reason is printed and the process exits 2. */
    int (*check)(svc_t *svc, void *ud, char *err, size_t err_len);
    /* Builds the service and registers its methods on svc_server(svc).  An error exits
     * 1 (LS_ERR_INVALID: 2, a configuration the service refused); a create that fails
     * frees what it made (destroy is not called then). */
    int (*create)(svc_t *svc, void *ud, char *err, size_t err_len);
    /* The server is up (NOT_SERVING): load, connect, warm up; may block.  Returning
     * LS_OK turns health SERVING; an error stops the process with status 1. */
    int (*start)(svc_t *svc, void *ud, char *err, size_t err_len);
    /* SIGHUP: reads again what the service can; an error is logged, nothing else. */
    int (*reload)(svc_t *svc, void *ud, char *err, size_t err_len);
    /* SIGTERM/SIGINT: stop admitting new work and return once the work in flight has
     * ended or at deadline_us (ls_now_us clock), ending what is left. */
    void (*drain)(svc_t *svc, void *ud, int64_t deadline_us);
    /* After the server has stopped (no call in flight): frees the service. */
    void (*destroy)(svc_t *svc, void *ud);
} svc_hooks_t;

typedef struct {
    const char *service; /* "router": LLMSERVE_ROUTER_*, logs under mod=router */
    const char *program; /* "llmserve-router" */
    const char *summary; /* one line for --help */
    /* Defaults of the common options. */
    const char *default_listen;  /* e.g. "0.0.0.0:50051" */
    int64_t default_rpc_threads; /* 0 = one per core */
    int64_t default_grace_ms;
    int64_t flush_ms;     /* after the drain, how long queued events may take to leave */
    bool upstreams;       /* offers --upstream-tls-* */
    bool api_keys;        /* offers --api-keys */
    const ls_opt_t *opts; /* the service's own options */
    size_t n_opts;
    const ls_alias_t *aliases; /* old flag and variable names still read, with a warning */
    size_t n_aliases;
    svc_hooks_t hooks;
    void *ud;
    /* Optional, borrowed: seams a caller (a test) provides.  NULL: none, at no cost,
     * except the reporter, which the runtime makes from --metrics when set
     * (report_client.h), the tracer, which it makes from the OTEL_* environment when
     * that names an endpoint (tracer_otlp.h), and the registrar, made for Consul. */
    svc_reporter_t *reporter;
    svc_tracer_t *tracer;
    svc_registrar_t *registrar;
} svc_spec_t;

/* Runs the service from argv to exit; returns the process exit status. */
int svc_main(const svc_spec_t *spec, int argc, char **argv);

/* ---- for hooks -------------------------------------------------------------------- */

/* The gRPC server (created before hooks.create). */
rpc_server_t *svc_server(svc_t *svc);

/* The common options. */
const svc_common_t *svc_common(svc_t *svc);

/* The channel settings for calls to other services (TLS when --upstream-tls-ca is set),
 * for rpc_channel_create; borrowed for the runtime's life. */
const rpc_channel_config_t *svc_upstream_channel(svc_t *svc);

/* The port bound (0 before the listen). */
int svc_port(svc_t *svc);

/* The API keys in use (NULL without --api-keys). */
svc_keys_t *svc_keys(svc_t *svc);

/* The seams (NULL when not configured: the svc_metric_*, svc_span_* and
 * svc_registrar_* calls then do nothing).  The reporter and the tracer are set from
 * hooks.create on and live until after hooks.destroy (the tracer's last flush runs
 * then, before the reporter's, which counts its dropped spans). */
svc_reporter_t *svc_reporter(svc_t *svc);
svc_tracer_t *svc_tracer(svc_t *svc);

/* The Consul client when Consul is on (--consul), else NULL; for services that discover
 * others (the router).  Lives from before hooks.create until after hooks.destroy. */
consul_t *svc_consul(svc_t *svc);

/* The service cannot go on (its compute device failed for good, say): logs reason at
 * error level, sets health NOT_SERVING at once, and makes svc_main stop as for SIGTERM
 * (deregister, hooks.drain, server shutdown, hooks.destroy) but return 1.  Only the
 * first call counts; a later one is logged and ignored.  reason is copied.  Thread-safe
 * and non-blocking: any thread may call it from the start of hooks.create until
 * hooks.destroy returns, hooks included. */
void svc_fail(svc_t *svc, const char *reason);

/* Adds a tag or a meta entry to the registration (before hooks.start returns); copied. */
void svc_add_tag(svc_t *svc, const char *tag);
void svc_add_meta(svc_t *svc, const char *key, const char *value);

#endif
