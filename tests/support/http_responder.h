/*
 * http_responder.h - a scriptable HTTP/1.1 server on loopback (TCP, TLS or a unix
 * socket) for tests of HTTP clients: it records every request (method, path, query,
 * headers, body, when it came) and answers each from a script of replies (status,
 * X-Consul-Index, body, a delay), then closes the connection.
 *
 * Each connection has its own thread, so a delayed answer holds up no other request;
 * responder_destroy cuts every delay short and waits for every thread.
 *
 * Threads: every function may be called from any thread, except that responder_destroy
 * must be the last call.
 */
#ifndef TEST_HTTP_RESPONDER_H
#define TEST_HTTP_RESPONDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int status;             /* 0: 200 */
    uint64_t index;         /* X-Consul-Index; 0: no such header */
    const char *index_text; /* sent as X-Consul-Index as is (a malformed one); NULL: index */
    const char *body;       /* NULL: empty */
    size_t body_len;        /* 0: strlen(body) */
    int delay_ms;           /* before answering */
    const char *headers;    /* more header lines, each ending in "\r\n" (a Retry-After,
                               say); NULL: none */
} responder_reply_t;

typedef struct {
    char method[16];
    char path[512];  /* without the query */
    char query[512]; /* after '?'; "" when none */
    char *headers;   /* the header lines as received, "\r\n" after each */
    char *body;      /* NUL-terminated; body_len bytes */
    size_t body_len;
    char sni[256]; /* TLS: the server name the client asked for ("" for none) */
    int64_t at_us; /* when it was read whole, on ls_now_us's clock */
} responder_request_t;

typedef struct {
    const char *cert, *key; /* the server's certificate and key files */
    const char *client_ca;  /* require a client certificate from this CA; NULL: none asked */
} responder_tls_t;

typedef struct responder responder_t;

/* Listens on 127.0.0.1 on a free port, speaking TLS when tls is not NULL (the files are
 * read now).  Replies default to 200 with "[]" and no index.  Returns NULL when it
 * cannot listen or the TLS files do not load. */
responder_t *responder_start(const responder_tls_t *tls);

/* Listens on a unix socket at path (removed first if present, and by destroy). */
responder_t *responder_start_unix(const char *path);

/* The TCP port (0 for a unix socket). */
int responder_port(const responder_t *r);

/* Appends a reply to the script (copied): requests take them in order; when the script
 * is empty they get the default. */
void responder_push(responder_t *r, const responder_reply_t *reply);

/* Replaces the default reply (copied). */
void responder_set_default(responder_t *r, const responder_reply_t *reply);

/* Requests recorded so far. */
size_t responder_count(responder_t *r);

/* TLS handshakes that failed (the client refused the certificate, or gave none). */
size_t responder_tls_failures(responder_t *r);

/* Waits up to timeout_ms until at least n requests were recorded; returns whether they
 * were. */
bool responder_wait(responder_t *r, size_t n, int timeout_ms);

/* The i-th request (from 0), borrowed until responder_destroy; NULL when there is none
 * yet. */
const responder_request_t *responder_request(responder_t *r, size_t i);

/* The value of query parameter key of q (undecoded) into out (cap bytes); false when
 * absent.  A parameter without '=' has the value "". */
bool responder_query_value(const responder_request_t *q, const char *key, char *out, size_t cap);

/* The value of header name (case-insensitive) of q into out (cap bytes), spaces around
 * it trimmed; false when absent. */
bool responder_header(const responder_request_t *q, const char *name, char *out, size_t cap);

/* Stops listening, ends every delay, waits for every connection thread and frees
 * everything.  NULL is a no-op. */
void responder_destroy(responder_t *r);

#endif
