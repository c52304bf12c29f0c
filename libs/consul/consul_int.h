/*
 * consul_int.h - what the files of libs/consul share: the client's state, the parsed
 * agent address, the one HTTP exchange every call makes, and the health query the watch
 * runs.  Not for users of the module (they include consul.h).
 */
#ifndef CONSUL_CONSUL_INT_H
#define CONSUL_CONSUL_INT_H

#include "consul/consul.h"

#include <curl/curl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The host and port of an agent address ("host", "host:port", "[v6]" or "[v6]:port"). */
typedef struct {
    char host[256]; /* without brackets */
    bool v6;        /* host is an IPv6 literal (written in brackets in URLs) */
    int port;       /* 0 when the address has none (the scheme's default applies) */
} consul__hostport_t;

/* Parses s (up to len bytes) as host[:port]; a trailing '/' is accepted.  Returns LS_OK,
 * or LS_ERR_INVALID with a one-line reason in err (names what is wrong, not the whole
 * value). */
int consul__parse_hostport(const char *s, size_t len, consul__hostport_t *out, char *err,
                           size_t err_len);

struct consul {
    char *base_url;                /* the agent as configured: consul_where and logs */
    char *url;                     /* where requests go: base_url, or the TLS server name's URL */
    struct curl_slist *hdrs;       /* X-Consul-Token (never logged) and "Expect:" */
    struct curl_slist *hdrs_json;  /* the same and Content-Type: application/json */
    struct curl_slist *connect_to; /* the agent's own address when url names the server
                                      name; NULL otherwise */
    char *unix_socket, *ca_file, *ca_path, *client_cert, *client_key;
    bool verify;
};

/* Lets a blocking exchange be abandoned from another thread: the exchange runs on multi
 * and gives up as soon as *stop is true; the stopping thread sets *stop, then calls
 * curl_multi_wakeup(multi). */
typedef struct {
    CURLM *multi;
    const atomic_bool *stop;
} consul__cancel_t;

/* Answers larger than this are refused (LS_ERR_FORMAT): 16 MiB holds tens of thousands
 * of instances. */
#define CONSUL_MAX_BODY ((size_t)16 << 20)

typedef struct {
    const char *method;             /* "GET" or "PUT" */
    const char *path;               /* "/v1/...", query included, every part already escaped */
    const char *body;               /* JSON, or NULL for none */
    int64_t timeout_ms;             /* the whole exchange, connection included */
    const consul__cancel_t *cancel; /* NULL: a plain blocking call */
} consul__req_t;

typedef struct {
    int status; /* 0: no answer */
    char *body; /* NUL-terminated (body_len bytes before the NUL); free() it */
    size_t body_len;
    uint64_t index; /* X-Consul-Index; 0 when absent */
} consul__resp_t;

/* Makes one exchange on a new curl handle.  Returns LS_OK for a 2xx answer; otherwise
 * LS_ERR_INVALID (4xx), LS_ERR_UNAVAILABLE (no answer, or any other status),
 * LS_ERR_FORMAT (an answer over CONSUL_MAX_BODY, or an X-Consul-Index that is not a
 * number), LS_ERR_CANCELLED (rq->cancel stopped it) or LS_ERR_NOMEM, with res filled
 * (status, and a reason for anything but LS_OK; res may be NULL).  rs gets whatever
 * answer came, even a non-2xx one (the caller frees rs->body in every case). */
int consul__http(consul_t *c, const consul__req_t *rq, consul__resp_t *rs, consul_result_t *res);

/* The HTTP timeout of a health query: wait*17/16 (Consul's jitter) plus this margin, or
 * the margin alone for a query that does not block (index 0). */
#define CONSUL_QUERY_MARGIN_MS 5000

/* The longest wait Consul takes (10 minutes). */
#define CONSUL_WAIT_MAX_MS 600000

/* consul_health_service with a way to abandon it (LS_ERR_CANCELLED); cancel may be
 * NULL. */
int consul__health_query(consul_t *c, const char *name, bool passing, uint64_t index,
                         int64_t wait_ms, const consul__cancel_t *cancel, consul_instance_t **list,
                         size_t *n, uint64_t *index_out, consul_result_t *res);

/* s percent-encoded for one path segment or query value (all but A-Z a-z 0-9 - . _ ~),
 * in a new string the caller frees; NULL when memory is exhausted. */
char *consul__escape(const char *s);

/* Writes a one-line reason into res->err (res may be NULL). */
void consul__set_err(consul_result_t *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
