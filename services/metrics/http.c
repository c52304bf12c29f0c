#define _GNU_SOURCE
#include "http.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "expo.h"

#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct http {
    struct MHD_Daemon *d;
    http_config_t cfg;
    atomic_bool draining;
};

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    LS_LOG_WARN("metrics", "http: %s", line);
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned int code, const char *type,
                              void *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result text(struct MHD_Connection *c, unsigned int code, const char *msg)
{
    return answer(c, code, "text/plain; charset=utf-8", (void *)msg, strlen(msg),
                  MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    (void)upload_data;
    (void)con_cls;
    http_t *h = cls;
    /* Every answer is queued at the first call, before any request body is read (MHD
     * then discards the body), so a body cannot make us buffer anything. */
    *upload_data_size = 0;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (strcmp(url, "/metrics") == 0) {
        store_snap_t *snap = store_snapshot(h->cfg.store, ls_now_us());
        size_t len = 0;
        char *body = snap ? expo_render(snap, &len) : NULL;
        store_snap_free(snap);
        if (!body)
            return text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        return answer(c, MHD_HTTP_OK, EXPO_CONTENT_TYPE, body, len, MHD_RESPMEM_MUST_FREE);
    }
    if (strcmp(url, "/api/summary") == 0) {
        size_t len = 0;
        char *body = summary_render(h->cfg.summary, ls_now_us(), ls_wall_us(), &len);
        if (!body)
            return text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        return answer(c, MHD_HTTP_OK, "application/json", body, len, MHD_RESPMEM_MUST_FREE);
    }
    if (strcmp(url, "/healthz") == 0)
        return atomic_load(&h->draining) ? text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "draining\n")
                                         : text(c, MHD_HTTP_OK, "ok\n");
    if (strcmp(url, "/") == 0)
        return answer(c, MHD_HTTP_OK, "text/html; charset=utf-8", (void *)h->cfg.page,
                      h->cfg.page_len, MHD_RESPMEM_PERSISTENT);
    return text(c, MHD_HTTP_NOT_FOUND, "not found\n");
}

/* Splits "host:port" or "[v6]:port" into host and port (copies in buf). */
static int split_listen(const char *listen, char *buf, size_t len, const char **host,
                        const char **port)
{
    if (snprintf(buf, len, "%s", listen) >= (int)len)
        return LS_ERR_INVALID;
    char *colon = strrchr(buf, ':');
    if (!colon || colon == buf || !colon[1])
        return LS_ERR_INVALID;
    *colon = '\0';
    *port = colon + 1;
    *host = buf;
    if (buf[0] == '[') {
        size_t n = strlen(buf);
        if (n < 3 || buf[n - 1] != ']')
            return LS_ERR_INVALID;
        buf[n - 1] = '\0';
        *host = buf + 1;
    }
    return LS_OK;
}

int http_check_listen(const char *listen, char *err, size_t err_len)
{
    char buf[300];
    const char *host, *port;
    bool ok = split_listen(listen, buf, sizeof(buf), &host, &port) == LS_OK && *host;
    long v = -1;
    if (ok) {
        char *end = NULL;
        v = strtol(port, &end, 10);
        ok = *port >= '0' && *port <= '9' && *end == '\0' && v <= 65535;
    }
    if (!ok) {
        ls_set_err(err, err_len, "--http-listen: '%s' is not HOST:PORT", listen);
        return LS_ERR_INVALID;
    }
    return LS_OK;
}

http_t *http_start(const char *listen, const http_config_t *cfg, int *port, char *err,
                   size_t err_len)
{
    char buf[300];
    const char *host, *service;
    if (split_listen(listen, buf, sizeof(buf), &host, &service) != LS_OK) {
        ls_set_err(err, err_len, "--http-listen: '%s' is not HOST:PORT", listen);
        return NULL;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(host, service, &hints, &ai);
    if (gai != 0) {
        ls_set_err(err, err_len, "--http-listen: %s: %s", listen, gai_strerror(gai));
        return NULL;
    }
    http_t *h = ls_xcalloc(1, sizeof(*h));
    h->cfg = *cfg;
    if (h->cfg.threads <= 0)
        h->cfg.threads = 2;
    atomic_init(&h->draining, false);
    unsigned int flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* The logger first: MHD logs by itself about options before it. */
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER,
                            mhd_log, NULL, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)h->cfg.threads,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned int)256,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)30, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->d) {
        ls_set_err(err, err_len, "--http-listen: cannot serve HTTP on %s (see the log)", listen);
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    *port = info ? info->port : 0;
    return h;
}

void http_set_draining(http_t *h)
{
    atomic_store(&h->draining, true);
}

void http_stop(http_t *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    free(h);
}
