/*
 * http.c - one HTTP exchange with the agent on a curl easy handle of its own.
 *
 * A handle per call keeps consul_t usable from several threads without a lock (libcurl
 * handles are not shareable between threads) at the price of a new connection per call,
 * which control-plane traffic (a registration, a blocking query every few seconds) can
 * afford.  A cancellable exchange runs on the caller's multi handle so that
 * curl_multi_wakeup can cut a blocking query short; a plain one uses curl_easy_perform.
 */
#define _GNU_SOURCE
#include "consul/consul_int.h"

#include "base/err.h"
#include "base/log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* How long one curl_multi_poll waits at most; a stop wakes it at once anyway. */
#define POLL_MS 1000

void consul__set_err(consul_result_t *res, const char *fmt, ...)
{
    if (!res)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->err, sizeof(res->err), fmt, ap);
    va_end(ap);
    /* Fit for a quoted log field whatever curl or the agent said. */
    for (char *p = res->err; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\')
            *p = *p == '"' ? '\'' : ' ';
}

typedef struct {
    consul__resp_t *rs;
    size_t cap;
    bool too_big;
    bool index_bad;
} sink_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    sink_t *k = ud;
    size_t n = size * nmemb;
    consul__resp_t *rs = k->rs;
    if (n > CONSUL_MAX_BODY - rs->body_len) {
        k->too_big = true;
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    }
    if (rs->body_len + n + 1 > k->cap) {
        size_t cap = k->cap ? k->cap : 4096;
        while (cap < rs->body_len + n + 1)
            cap *= 2;
        char *nb = realloc(rs->body, cap);
        if (!nb)
            return 0;
        rs->body = nb;
        k->cap = cap;
    }
    memcpy(rs->body + rs->body_len, data, n);
    rs->body_len += n;
    rs->body[rs->body_len] = '\0';
    return n;
}

/* X-Consul-Index: digits only, no overflow; anything else marks the answer malformed.
 * Headers of an interim answer (a new status line) are forgotten. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    sink_t *k = ud;
    size_t n = size * nmemb;
    static const char name[] = "X-Consul-Index:";
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        k->rs->index = 0;
        k->index_bad = false;
        return n;
    }
    if (n < sizeof(name) - 1 || strncasecmp(data, name, sizeof(name) - 1) != 0)
        return n;
    size_t i = sizeof(name) - 1, end = n;
    while (i < end && (data[i] == ' ' || data[i] == '\t'))
        i++;
    while (end > i && isspace((unsigned char)data[end - 1]))
        end--;
    uint64_t v = 0;
    bool ok = i < end;
    for (; ok && i < end; i++) {
        unsigned d = (unsigned)(data[i] - '0');
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            ok = false;
        else
            v = v * 10 + d;
    }
    k->rs->index = ok ? v : 0;
    k->index_bad = !ok;
    return n;
}

/* The start of an answer's body, fit for a log field: printable ASCII, no quotes. */
static void body_excerpt(char *out, size_t cap, const char *body, size_t len)
{
    size_t j = 0;
    for (size_t i = 0; i < len && j + 1 < cap; i++) {
        unsigned char ch = (unsigned char)body[i];
        if (ch == '\n' || ch == '\r' || ch == '\t')
            ch = ' ';
        out[j++] = (ch < 0x20 || ch > 0x7e || ch == '"' || ch == '\\') ? '?' : (char)ch;
    }
    while (j > 0 && out[j - 1] == ' ')
        j--;
    out[j] = '\0';
}

/* Runs h on the cancel's multi handle until it is done or the stop flag rises. */
static CURLcode perform_cancellable(CURL *h, const consul__cancel_t *cancel, bool *cancelled)
{
    CURLM *m = cancel->multi;
    *cancelled = false;
    if (curl_multi_add_handle(m, h) != CURLM_OK)
        return CURLE_FAILED_INIT;
    CURLcode result = CURLE_OK;
    for (;;) {
        /* A stop raised after this test still wakes the poll below: curl_multi_wakeup
         * called while no poll waits makes the next one return at once. */
        if (atomic_load(cancel->stop)) {
            *cancelled = true;
            break;
        }
        int running = 0;
        if (curl_multi_perform(m, &running) != CURLM_OK) {
            result = CURLE_FAILED_INIT;
            break;
        }
        CURLMsg *msg;
        int left;
        bool done = false;
        while ((msg = curl_multi_info_read(m, &left)) != NULL)
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == h) {
                result = msg->data.result;
                done = true;
            }
        if (done)
            break;
        if (curl_multi_poll(m, NULL, 0, POLL_MS, NULL) != CURLM_OK) {
            result = CURLE_FAILED_INIT;
            break;
        }
    }
    curl_multi_remove_handle(m, h);
    return result;
}

int consul__http(consul_t *c, const consul__req_t *rq, consul__resp_t *rs, consul_result_t *res)
{
    memset(rs, 0, sizeof(*rs));
    if (res)
        memset(res, 0, sizeof(*res));
    size_t url_len = strlen(c->url) + strlen(rq->path) + 1;
    char *url = malloc(url_len);
    CURL *h = curl_easy_init();
    if (!url || !h) {
        free(url);
        curl_easy_cleanup(h);
        consul__set_err(res, "out of memory");
        return LS_ERR_NOMEM;
    }
    snprintf(url, url_len, "%s%s", c->url, rq->path);
    sink_t sink = {.rs = rs, .cap = 0, .too_big = false, .index_bad = false};
    char curl_err[CURL_ERROR_SIZE] = "";
    int64_t timeout_ms = rq->timeout_ms > 0 ? rq->timeout_ms : 1;

    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* other threads; no SIGALRM for DNS */
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &sink);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, rq->body ? c->hdrs_json : c->hdrs);
    if (strcmp(rq->method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)(rq->body ? strlen(rq->body) : 0));
    }
    if (c->unix_socket)
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->unix_socket);
    if (c->connect_to)
        curl_easy_setopt(h, CURLOPT_CONNECT_TO, c->connect_to);
    if (c->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    if (c->ca_path)
        curl_easy_setopt(h, CURLOPT_CAPATH, c->ca_path);
    if (c->client_cert)
        curl_easy_setopt(h, CURLOPT_SSLCERT, c->client_cert);
    if (c->client_key)
        curl_easy_setopt(h, CURLOPT_SSLKEY, c->client_key);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, c->verify ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, c->verify ? 2L : 0L);

    bool cancelled = false;
    CURLcode cc =
        rq->cancel ? perform_cancellable(h, rq->cancel, &cancelled) : curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    free(url);

    int rc;
    if (cancelled) {
        consul__set_err(res, "cancelled");
        rc = LS_ERR_CANCELLED;
    } else if (sink.too_big) {
        consul__set_err(res, "the agent's answer is larger than %zu bytes", CONSUL_MAX_BODY);
        rc = LS_ERR_FORMAT;
    } else if (cc != CURLE_OK) {
        status = 0;
        consul__set_err(res, "no answer from the agent: %s",
                        curl_err[0] ? curl_err : curl_easy_strerror(cc));
        rc = cc == CURLE_WRITE_ERROR ? LS_ERR_NOMEM : LS_ERR_UNAVAILABLE;
    } else if (status >= 200 && status < 300 && sink.index_bad) {
        consul__set_err(res, "X-Consul-Index is not a number");
        rc = LS_ERR_FORMAT;
    } else if (status >= 200 && status < 300) {
        rc = LS_OK;
    } else {
        char excerpt[160];
        body_excerpt(excerpt, sizeof(excerpt), rs->body ? rs->body : "", rs->body_len);
        consul__set_err(res, "HTTP %ld: %s", status, excerpt[0] ? excerpt : "(no body)");
        rc = status >= 400 && status < 500 ? LS_ERR_INVALID : LS_ERR_UNAVAILABLE;
    }
    rs->status = (int)status;
    if (res)
        res->status = (int)status;
    if (!rs->body && rc == LS_OK) {
        rs->body = calloc(1, 1);
        if (!rs->body) {
            consul__set_err(res, "out of memory");
            rc = LS_ERR_NOMEM;
        }
    }
    return rc;
}
