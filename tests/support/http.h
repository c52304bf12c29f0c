/*
 * http.h - a minimal HTTP/1.0 client for tests of services that serve HTTP on loopback
 * (the metrics collector's /metrics, /api/summary, /healthz).  Thread-safe (no state).
 */
#ifndef TEST_HTTP_H
#define TEST_HTTP_H

#include <stddef.h>

/* Sends "method path" to 127.0.0.1:port with Connection: close and reads the whole
 * answer within timeout_ms.  Returns the status code with the body in *body (NUL-
 * terminated, *len bytes; the caller frees it; body may be NULL to drop it), or -1
 * when there was no well-formed answer in time. */
int test_http(int port, const char *method, const char *path, char **body, size_t *len,
              int timeout_ms);

/* test_http with GET and a 10 s timeout. */
int test_http_get(int port, const char *path, char **body, size_t *len);

/* As test_http, but returns the head (status line and headers) in *head instead of the
 * body (the caller frees it). */
int test_http_head(int port, const char *method, const char *path, char **head, int timeout_ms);

#endif
