/*
 * http_responder.c - the scriptable HTTP server of http_responder.h.
 *
 * Lock rules: mu guards the script, the default reply, the recorded requests, the
 * connection list and stop; cv (CLOCK_MONOTONIC) announces a new request and the stop.
 * Connection threads do their socket I/O without mu, with 100 ms socket timeouts so they
 * notice the stop between reads and writes.
 */
#define _GNU_SOURCE
#include "http_responder.h"

#include "base/clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX 65536
#define BODY_MAX ((size_t)4 << 20)
#define READ_DEADLINE_US 10000000 /* a request must arrive whole within 10 s */
#define IO_SLICE_MS 100

typedef struct item {
    struct item *next;
    responder_reply_t reply; /* body and index_text point at the copies below */
    char *body, *index_text, *headers;
} item_t;

typedef struct conn {
    struct conn *next;
    responder_t *r;
    int fd;
    SSL *ssl;
    pthread_t thread;
} conn_t;

struct responder {
    int lfd, port;
    char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    SSL_CTX *ctx;
    pthread_t accept_thread;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    item_t *script, **script_tail;
    item_t dflt;
    responder_request_t **reqs;
    size_t n_reqs, cap_reqs;
    size_t tls_failures;
    conn_t *conns;
};

static void item_set(item_t *it, const responder_reply_t *reply)
{
    free(it->body);
    free(it->index_text);
    free(it->headers);
    it->reply = *reply;
    size_t len = reply->body ? (reply->body_len ? reply->body_len : strlen(reply->body)) : 0;
    it->body = malloc(len + 1);
    if (!it->body)
        abort();
    if (len)
        memcpy(it->body, reply->body, len);
    it->body[len] = '\0';
    it->reply.body = it->body;
    it->reply.body_len = len;
    it->index_text = reply->index_text ? strdup(reply->index_text) : NULL;
    it->reply.index_text = it->index_text;
    it->headers = reply->headers ? strdup(reply->headers) : NULL;
    it->reply.headers = it->headers;
}

static bool stopping(responder_t *r)
{
    pthread_mutex_lock(&r->mu);
    bool s = r->stop;
    pthread_mutex_unlock(&r->mu);
    return s;
}

/* ---- one connection ---------------------------------------------------------------------- */

/* Reads up to n bytes before deadline_us; 0 at the end of the stream, -1 on failure or a
 * stop. */
static ssize_t conn_read(conn_t *c, char *buf, size_t n, int64_t deadline_us)
{
    for (;;) {
        if (stopping(c->r) || ls_now_us() > deadline_us)
            return -1;
        if (c->ssl) {
            int k = SSL_read(c->ssl, buf, (int)n);
            if (k > 0)
                return k;
            int e = SSL_get_error(c->ssl, k);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                continue;
            return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
        }
        ssize_t k = recv(c->fd, buf, n, 0);
        if (k >= 0)
            return k;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -1;
    }
}

static bool conn_write(conn_t *c, const char *buf, size_t n)
{
    while (n > 0) {
        if (stopping(c->r))
            return false;
        ssize_t k;
        if (c->ssl) {
            int w = SSL_write(c->ssl, buf, (int)(n > (1 << 30) ? (1 << 30) : n));
            if (w <= 0) {
                int e = SSL_get_error(c->ssl, w);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    continue;
                return false;
            }
            k = w;
        } else {
            k = send(c->fd, buf, n, MSG_NOSIGNAL);
            if (k < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                    continue;
                return false;
            }
        }
        buf += k;
        n -= (size_t)k;
    }
    return true;
}

static bool tls_accept(conn_t *c)
{
    responder_t *r = c->r;
    c->ssl = SSL_new(r->ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
        return false;
    int64_t deadline = ls_now_us() + READ_DEADLINE_US;
    for (;;) {
        int k = SSL_accept(c->ssl);
        if (k == 1)
            return true;
        int e = SSL_get_error(c->ssl, k);
        if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) || stopping(r) ||
            ls_now_us() > deadline) {
            ERR_clear_error();
            pthread_mutex_lock(&r->mu);
            r->tls_failures++;
            pthread_mutex_unlock(&r->mu);
            return false;
        }
    }
}

/* Reads one request into q; false when none came whole. */
static bool read_request(conn_t *c, responder_request_t *q)
{
    char *head = malloc(HEAD_MAX + 1);
    if (!head)
        return false;
    size_t used = 0;
    char *end = NULL;
    int64_t deadline = ls_now_us() + READ_DEADLINE_US;
    while (!end) {
        if (used == HEAD_MAX)
            goto out_fail;
        ssize_t k = conn_read(c, head + used, HEAD_MAX - used, deadline);
        if (k <= 0)
            goto out_fail;
        used += (size_t)k;
        head[used] = '\0';
        end = strstr(head, "\r\n\r\n");
    }
    char target[1024];
    if (sscanf(head, "%15s %1023s HTTP/1.%*d", q->method, target) != 2)
        goto out_fail;
    char *qm = strchr(target, '?');
    if (qm)
        *qm = '\0';
    snprintf(q->path, sizeof(q->path), "%.511s", target);
    snprintf(q->query, sizeof(q->query), "%.511s", qm ? qm + 1 : "");
    char *lines = strstr(head, "\r\n") + 2;
    size_t lines_len = (size_t)(end + 2 - lines);
    q->headers = strndup(lines, lines_len);
    if (!q->headers)
        goto out_fail;
    char cl[32] = "0";
    responder_header(q, "Content-Length", cl, sizeof(cl));
    size_t want = strtoul(cl, NULL, 10);
    if (want > BODY_MAX)
        goto out_fail;
    q->body = malloc(want + 1);
    if (!q->body)
        goto out_fail;
    size_t have = used - (size_t)(end + 4 - head);
    if (have > want)
        have = want;
    memcpy(q->body, end + 4, have);
    while (have < want) {
        ssize_t k = conn_read(c, q->body + have, want - have, deadline);
        if (k <= 0)
            goto out_fail;
        have += (size_t)k;
    }
    q->body[want] = '\0';
    q->body_len = want;
    free(head);
    return true;

out_fail:
    free(head);
    return false;
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

static void answer(conn_t *c, const responder_reply_t *reply)
{
    responder_t *r = c->r;
    if (reply->delay_ms > 0) {
        int64_t until = ls_now_us() + (int64_t)reply->delay_ms * 1000;
        struct timespec ts = {.tv_sec = until / 1000000, .tv_nsec = (until % 1000000) * 1000};
        pthread_mutex_lock(&r->mu);
        while (!r->stop && ls_now_us() < until)
            pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        pthread_mutex_unlock(&r->mu);
    }
    int status = reply->status ? reply->status : 200;
    char index[80] = "";
    if (reply->index_text)
        snprintf(index, sizeof(index), "X-Consul-Index: %s\r\n", reply->index_text);
    else if (reply->index)
        snprintf(index, sizeof(index), "X-Consul-Index: %llu\r\n",
                 (unsigned long long)reply->index);
    char head[2048];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "%s%.1024sConnection: close\r\n\r\n",
                     status, reason(status), reply->body_len, index,
                     reply->headers ? reply->headers : "");
    if (conn_write(c, head, (size_t)n))
        conn_write(c, reply->body, reply->body_len);
}

/* Serves the one request of a connection and closes it. */
static void serve(conn_t *c)
{
    responder_t *r = c->r;
    struct timeval tv = {.tv_sec = 0, .tv_usec = IO_SLICE_MS * 1000};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (r->ctx && !tls_accept(c))
        return;
    responder_request_t *q = calloc(1, sizeof(*q));
    if (!q)
        abort();
    if (!read_request(c, q)) {
        free(q->headers);
        free(q->body);
        free(q);
        return;
    }
    if (c->ssl) {
        const char *sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
        snprintf(q->sni, sizeof(q->sni), "%s", sni ? sni : "");
    }
    q->at_us = ls_now_us();

    item_t mine = {.next = NULL, .body = NULL, .index_text = NULL, .headers = NULL};
    pthread_mutex_lock(&r->mu);
    if (r->n_reqs == r->cap_reqs) {
        r->cap_reqs = r->cap_reqs ? r->cap_reqs * 2 : 64;
        r->reqs = realloc(r->reqs, r->cap_reqs * sizeof(*r->reqs));
        if (!r->reqs)
            abort();
    }
    r->reqs[r->n_reqs++] = q;
    item_t *it = r->script;
    if (it) {
        r->script = it->next;
        if (!r->script)
            r->script_tail = &r->script;
    }
    item_set(&mine, it ? &it->reply : &r->dflt.reply);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (it) {
        free(it->body);
        free(it->index_text);
        free(it->headers);
        free(it);
    }
    answer(c, &mine.reply);
    free(mine.body);
    free(mine.index_text);
    free(mine.headers);
}

static void *conn_main(void *arg)
{
    conn_t *c = arg;
    serve(c);
    SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->fd);
    return NULL;
}

/* ---- listening --------------------------------------------------------------------------- */

static void *accept_main(void *arg)
{
    responder_t *r = arg;
    while (!stopping(r)) {
        struct pollfd p = {.fd = r->lfd, .events = POLLIN, .revents = 0};
        if (poll(&p, 1, IO_SLICE_MS) <= 0)
            continue;
        int fd = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        conn_t *c = calloc(1, sizeof(*c));
        if (!c)
            abort();
        c->r = r;
        c->fd = fd;
        if (pthread_create(&c->thread, NULL, conn_main, c) != 0) {
            close(fd);
            free(c);
            continue;
        }
        pthread_mutex_lock(&r->mu);
        c->next = r->conns;
        r->conns = c;
        pthread_mutex_unlock(&r->mu);
    }
    return NULL;
}

static responder_t *start(int lfd, const responder_tls_t *tls)
{
    signal(SIGPIPE, SIG_IGN); /* SSL_write to a client that left */
    responder_t *r = calloc(1, sizeof(*r));
    if (!r)
        abort();
    r->lfd = lfd;
    r->script_tail = &r->script;
    responder_reply_t dflt = {.status = 200,
                              .index = 0,
                              .index_text = NULL,
                              .body = "[]",
                              .body_len = 0,
                              .delay_ms = 0,
                              .headers = NULL};
    item_set(&r->dflt, &dflt);
    if (tls) {
        r->ctx = SSL_CTX_new(TLS_server_method());
        if (!r->ctx || SSL_CTX_use_certificate_chain_file(r->ctx, tls->cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(r->ctx, tls->key, SSL_FILETYPE_PEM) != 1 ||
            (tls->client_ca && SSL_CTX_load_verify_locations(r->ctx, tls->client_ca, NULL) != 1))
            goto out_fail;
        if (tls->client_ca)
            SSL_CTX_set_verify(r->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (listen(lfd, 64) != 0 || pthread_create(&r->accept_thread, NULL, accept_main, r) != 0) {
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        goto out_fail;
    }
    return r;

out_fail:
    ERR_clear_error();
    SSL_CTX_free(r->ctx);
    free(r->dflt.body);
    free(r->dflt.index_text);
    free(r->dflt.headers);
    free(r);
    close(lfd);
    return NULL;
}

responder_t *responder_start(const responder_tls_t *tls)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return NULL;
    }
    responder_t *r = start(fd, tls);
    if (r)
        r->port = ntohs(a.sin_port);
    return r;
}

responder_t *responder_start_unix(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(a.sun_path))
        return NULL;
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return NULL;
    }
    responder_t *r = start(fd, NULL);
    if (r)
        snprintf(r->unix_path, sizeof(r->unix_path), "%s", path);
    return r;
}

int responder_port(const responder_t *r)
{
    return r->port;
}

void responder_push(responder_t *r, const responder_reply_t *reply)
{
    item_t *it = calloc(1, sizeof(*it));
    if (!it)
        abort();
    item_set(it, reply);
    pthread_mutex_lock(&r->mu);
    *r->script_tail = it;
    r->script_tail = &it->next;
    pthread_mutex_unlock(&r->mu);
}

void responder_set_default(responder_t *r, const responder_reply_t *reply)
{
    pthread_mutex_lock(&r->mu);
    item_set(&r->dflt, reply);
    pthread_mutex_unlock(&r->mu);
}

size_t responder_count(responder_t *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->n_reqs;
    pthread_mutex_unlock(&r->mu);
    return n;
}

size_t responder_tls_failures(responder_t *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->tls_failures;
    pthread_mutex_unlock(&r->mu);
    return n;
}

bool responder_wait(responder_t *r, size_t n, int timeout_ms)
{
    int64_t until = ls_now_us() + (int64_t)timeout_ms * 1000;
    struct timespec ts = {.tv_sec = until / 1000000, .tv_nsec = (until % 1000000) * 1000};
    pthread_mutex_lock(&r->mu);
    while (r->n_reqs < n && ls_now_us() < until)
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    bool ok = r->n_reqs >= n;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

const responder_request_t *responder_request(responder_t *r, size_t i)
{
    pthread_mutex_lock(&r->mu);
    const responder_request_t *q = i < r->n_reqs ? r->reqs[i] : NULL;
    pthread_mutex_unlock(&r->mu);
    return q;
}

bool responder_query_value(const responder_request_t *q, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);
    for (const char *p = q->query; *p;) {
        size_t len = strcspn(p, "&");
        if (len >= klen && strncmp(p, key, klen) == 0 && (len == klen || p[klen] == '=')) {
            const char *v = len == klen ? p + len : p + klen + 1;
            snprintf(out, cap, "%.*s", (int)(p + len - v), v);
            return true;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    return false;
}

bool responder_header(const responder_request_t *q, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    for (const char *p = q->headers; p && *p;) {
        size_t len = strcspn(p, "\r\n");
        if (len > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            const char *e = p + len;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            snprintf(out, cap, "%.*s", (int)(e - v), v);
            return true;
        }
        p += len;
        p += strspn(p, "\r\n");
    }
    return false;
}

void responder_destroy(responder_t *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->accept_thread, NULL);
    close(r->lfd);
    if (r->unix_path[0])
        unlink(r->unix_path);
    /* The accept thread is gone: the list no longer grows. */
    for (conn_t *c = r->conns, *next; c; c = next) {
        next = c->next;
        pthread_join(c->thread, NULL);
        free(c);
    }
    for (size_t i = 0; i < r->n_reqs; i++) {
        free(r->reqs[i]->headers);
        free(r->reqs[i]->body);
        free(r->reqs[i]);
    }
    free(r->reqs);
    for (item_t *it = r->script, *next; it; it = next) {
        next = it->next;
        free(it->body);
        free(it->index_text);
        free(it->headers);
        free(it);
    }
    free(r->dflt.body);
    free(r->dflt.index_text);
    free(r->dflt.headers);
    SSL_CTX_free(r->ctx);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
