/*
 * consul.h - Consul's HTTP API through libcurl: the agent's service registration, the
 * health endpoint with blocking queries, and a watch thread that keeps a service's
 * passing instances current.
 *
 * Configuration comes from Consul's own environment variables, read as Consul's tools
 * read them (consul_config_from_env): CONSUL_HTTP_ADDR (host:port, or with http://,
 * https:// or unix://; default 127.0.0.1:8500), CONSUL_HTTP_TOKEN and
 * CONSUL_HTTP_TOKEN_FILE (the file wins), CONSUL_HTTP_SSL, CONSUL_CACERT, CONSUL_CAPATH,
 * CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME, CONSUL_HTTP_SSL_VERIFY.
 * The token travels in X-Consul-Token and is never logged.  CONSUL_TLS_SERVER_NAME is
 * the name TLS sends (SNI) and checks the agent's certificate against: requests name it
 * in their URL and connect to CONSUL_HTTP_ADDR's address (CURLOPT_CONNECT_TO).
 *
 * Blocking queries follow Consul's documented rules (api-docs/features/blocking):
 *   - the index comes from X-Consul-Index (absent: 0; not a number: LS_ERR_FORMAT);
 *   - the first query sends no index (it does not block);
 *   - after an answer, the index sent next is the one it carried, with 0 taken as 1, so
 *     no index below 1 is ever sent after an answer...
 *   - ...except when that index is below the one sent (it went backwards): then the
 *     index is reset to 0 and the next query, without an index, starts afresh (counted
 *     in index_resets);
 *   - errors leave the index as it was;
 *   - the HTTP timeout of a blocking query is wait*17/16 (Consul's jitter) plus 5 s
 *     (CONSUL_QUERY_MARGIN_MS); a query without an index gets the 5 s alone;
 *   - two queries start at least min_interval_ms apart;
 *   - a return does not mean a change: the watch calls back only when the list differs.
 * Errors back off (backoff_ms, doubled after each further failure, capped at
 * backoff_max_ms) and never replace the last good list.  The watch logs once when its
 * queries start failing (a warning with the reason) and once when they work again.
 *
 * Threads: a consul_t may be used from several threads at once (each call has its own
 * curl handle).  A watch runs its own thread.
 */
#ifndef CONSUL_CONSUL_H
#define CONSUL_CONSUL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- configuration ------------------------------------------------------------------ */

typedef struct {
    char *base_url;        /* "http://127.0.0.1:8500" (no trailing slash); for unix://,
                              "http://localhost" (https with CONSUL_HTTP_SSL) with
                              unix_socket set */
    char *unix_socket;     /* path, or NULL */
    char *token;           /* ACL token, or NULL */
    char *ca_file;         /* CONSUL_CACERT, or NULL */
    char *ca_path;         /* CONSUL_CAPATH, or NULL */
    char *client_cert;     /* CONSUL_CLIENT_CERT, or NULL */
    char *client_key;      /* CONSUL_CLIENT_KEY, or NULL */
    char *tls_server_name; /* CONSUL_TLS_SERVER_NAME, or NULL */
    bool verify;           /* CONSUL_HTTP_SSL_VERIFY (default true) */
    bool addr_set;         /* CONSUL_HTTP_ADDR was in the environment */
} consul_config_t;

/* Reads the environment into cfg (allocated strings; consul_config_free).  An empty
 * variable counts as unset.  Returns LS_OK, or LS_ERR_INVALID with a one-line reason in
 * err that names the variable (an address that does not parse, an unknown scheme, a
 * boolean other than Go's 1/t/T/TRUE/true/True/0/f/F/FALSE/false/False, an unreadable
 * token file, a token an HTTP header cannot carry, a client certificate without its key
 * or a key without its certificate, a server name that is not a host name); cfg is then
 * empty (consul_config_free is still safe). */
int consul_config_from_env(consul_config_t *cfg, char *err, size_t err_len);

/* Frees cfg's strings and empties it; NULL is a no-op, and so is a second call. */
void consul_config_free(consul_config_t *cfg);

/* ---- client ------------------------------------------------------------------------- */

typedef struct consul consul_t;

/* Copies cfg (the caller keeps it).  Starts libcurl on the first call in the process
 * (curl_global_init, never at load time).  Returns NULL only when libcurl cannot start. */
consul_t *consul_create(const consul_config_t *cfg);

/* NULL is a no-op.  Every watch on c must be stopped first. */
void consul_destroy(consul_t *c);

/* The agent's address for log lines (never the token): base_url, or the socket's path.
 * Borrowed from c. */
const char *consul_where(const consul_t *c);

/* What one HTTP exchange gave: status 0 when no answer came (refused, timed out, TLS);
 * err a one-line reason for anything but a 2xx (with the start of Consul's body). */
typedef struct {
    int status;
    char err[256];
} consul_result_t;

/* A key/value pair (Meta). */
typedef struct {
    const char *key;
    const char *value;
} consul_kv_t;

/* A service for PUT /v1/agent/service/register, with at most one gRPC health check.
 * Strings and arrays are borrowed for the call. */
typedef struct {
    const char *id;      /* required */
    const char *name;    /* required */
    const char *address; /* "" or NULL: the node's address */
    int port;
    const char *const *tags;
    size_t n_tags;
    const consul_kv_t *meta;
    size_t n_meta;
    /* The check: Consul calls grpc.health.v1.Health/Check on grpc_target ("host:port")
     * every interval; NULL: no check.  It starts critical (no Status is sent), so the
     * instance is not passing before its first good check. */
    const char *grpc_target;
    bool grpc_use_tls;
    bool tls_skip_verify;        /* sent with grpc_use_tls only */
    const char *tls_server_name; /* with grpc_use_tls; NULL: the host of grpc_target */
    int64_t check_interval_ms;   /* required (> 0) with a check */
    int64_t check_timeout_ms;    /* 0: Consul's default */
    int64_t deregister_after_ms; /* DeregisterCriticalServiceAfter; 0: never (Consul raises
                                    anything under a minute to a minute) */
} consul_service_t;

/* PUT /v1/agent/service/register, waiting at most timeout_ms.  LS_OK on 200 (any 2xx);
 * otherwise LS_ERR_UNAVAILABLE (no answer, 5xx), LS_ERR_INVALID (4xx; res->status tells
 * 403, a missing or refused token, from the rest; or s is incomplete: no id or name, a
 * port outside 0..65535, a check without an interval, and then nothing is sent) or
 * LS_ERR_NOMEM, with res filled (res may be NULL).  Any thread. */
int consul_register(consul_t *c, const consul_service_t *s, int64_t timeout_ms,
                    consul_result_t *res);

/* PUT /v1/agent/service/deregister/<id>: as consul_register, but a 404 (the agent does
 * not have the id: current Consul; older agents answer 200) is LS_OK. */
int consul_deregister(consul_t *c, const char *id, int64_t timeout_ms, consul_result_t *res);

/* GET /v1/agent/service/<id>: LS_OK when the agent has it, LS_ERR_NOT_FOUND when it does
 * not (404, or 500 "unknown service" from older agents), or an error as above. */
int consul_service_present(consul_t *c, const char *id, int64_t timeout_ms, consul_result_t *res);

/* One instance from GET /v1/health/service/<name>. */
typedef struct {
    char *id;      /* Service.ID */
    char *node;    /* Node.Node */
    char *address; /* Service.Address, or Node.Address when that is empty */
    int port;      /* Service.Port */
    char **tags;
    size_t n_tags;
    char **meta_keys, **meta_values;
    size_t n_meta;
} consul_instance_t;

/* Meta value for key, or NULL. */
const char *consul_instance_meta(const consul_instance_t *in, const char *key);

/* GET /v1/health/service/<name>?passing=true[&index=I&wait=<W>ms] (index 0: no
 * blocking; wait_ms is capped at 600000, Consul's maximum).  The HTTP timeout is as in the header
 * comment.  On LS_OK *list (sorted by id, then node) and *n are the caller's
 * (consul_instances_free; *list may be non-NULL with *n 0) and *index_out is
 * X-Consul-Index (0 when absent).  Errors as consul_register, with *list NULL and *n 0;
 * LS_ERR_FORMAT for an answer that is not Consul's: not a JSON array of objects, a
 * field of the wrong type (absent or null fields take their zero value), an entry
 * without Service.ID or without any address, a port outside 0..65535, an answer over
 * 16 MiB, an X-Consul-Index that is not a number.  Any thread. */
int consul_health_service(consul_t *c, const char *name, bool passing, uint64_t index,
                          int64_t wait_ms, consul_instance_t **list, size_t *n, uint64_t *index_out,
                          consul_result_t *res);

void consul_instances_free(consul_instance_t *list, size_t n);

/* ---- watch -------------------------------------------------------------------------- */

typedef struct consul_watch consul_watch_t;

/* The whole current list of passing instances (borrowed until return), on the watch's
 * thread: after the first answer (even an empty list), and after every answer whose list
 * differs from the last delivered (compared on id, address, port, tags in order and
 * meta).  Never after an error.  It must not call consul_watch_stop on its own watch. */
typedef void (*consul_watch_fn)(void *ud, const consul_instance_t *list, size_t n);

/* Values out of range are brought into it at start (wait_ms <= 0: the default). */
typedef struct {
    const char *service;     /* required; copied at start */
    int64_t wait_ms;         /* blocking wait; default 30000 (max 600000) */
    int64_t min_interval_ms; /* between two queries at least; default 50 */
    int64_t backoff_ms;      /* first pause after an error; default 200 */
    int64_t backoff_max_ms;  /* cap; default 10000 */
} consul_watch_config_t;

void consul_watch_config_init(consul_watch_config_t *cfg, const char *service);

/* Starts the thread; c must outlive the watch.  Returns NULL when cfg has no service or
 * fn is NULL, or the thread cannot start. */
consul_watch_t *consul_watch_start(consul_t *c, const consul_watch_config_t *cfg,
                                   consul_watch_fn fn, void *ud);

/* Waits up to timeout_ms for the first delivered list; true when it came. */
bool consul_watch_wait_first(consul_watch_t *w, int64_t timeout_ms);

/* Counters, for tests and logs. */
typedef struct {
    uint64_t queries;      /* HTTP requests made */
    uint64_t errors;       /* of which failed (no answer, non-2xx, bad body) */
    uint64_t deliveries;   /* callbacks made */
    uint64_t index_resets; /* times the index went backwards and was reset */
    uint64_t index;        /* the index in use now */
} consul_watch_stats_t;

void consul_watch_stats(consul_watch_t *w, consul_watch_stats_t *out);

/* Stops the thread (a blocking query in flight, or a pause between queries, is
 * abandoned at once) and frees w; returns once no callback runs.  Not from the
 * callback.  NULL is a no-op. */
void consul_watch_stop(consul_watch_t *w);

#endif
