/*
 * http.h - the collector's HTTP side (libmicrohttpd, its own threads):
 *   GET /metrics       Prometheus text format 0.0.4 (expo.h)
 *   GET /api/summary   the JSON of API.md (summary.h)
 *   GET /healthz       200 "ok" while serving, 503 "draining" after http_set_draining
 *   GET /              the status page (self-contained HTML)
 * HEAD is answered as GET without the body; other methods get 405 with Allow, unknown
 * paths 404.  Thread-safe: the store and the summary are.
 */
#ifndef METRICS_HTTP_H
#define METRICS_HTTP_H

#include "store.h"
#include "summary.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct http http_t;

typedef struct {
    store_t *store;     /* borrowed until http_stop */
    summary_t *summary; /* borrowed until http_stop */
    const char *page;   /* the status page, borrowed until http_stop */
    size_t page_len;
    int threads; /* threads that answer requests; default 2 */
} http_config_t;

/* Checks the form of listen as http_start reads it ("HOST:PORT" or "[V6]:PORT", a port
 * 0..65535), for the option check at start.  Returns LS_OK, or LS_ERR_INVALID with a
 * one-line reason in err. */
int http_check_listen(const char *listen, char *err, size_t err_len);

/* Serves on listen ("HOST:PORT", "[V6]:PORT"; port 0 picks a free one).  Returns the
 * server with the bound port in *port, or NULL with a one-line reason in err. */
http_t *http_start(const char *listen, const http_config_t *cfg, int *port, char *err,
                   size_t err_len);

/* From now on /healthz answers 503. */
void http_set_draining(http_t *h);

/* Stops serving (requests in progress finish) and frees it.  NULL is a no-op. */
void http_stop(http_t *h);

#endif
