#define _GNU_SOURCE
#include "http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The whole answer (head and body) as read until the server closed; NULL on failure. */
static char *exchange(int port, const char *method, const char *path, size_t *len, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char req[512];
    int n =
        snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                 method, path);
    char *buf = NULL;
    size_t used = 0, cap = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || n <= 0 || n >= (int)sizeof(req) ||
        write(fd, req, (size_t)n) != n)
        goto out_fail;
    long long end = now_ms() + timeout_ms;
    for (;;) {
        long long left = end - now_ms();
        struct pollfd p = {fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            goto out_fail;
        if (used + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 131072;
            char *nb = realloc(buf, cap);
            if (!nb)
                goto out_fail;
            buf = nb;
        }
        ssize_t r = read(fd, buf + used, cap - used - 1);
        if (r < 0)
            goto out_fail;
        if (r == 0)
            break;
        used += (size_t)r;
    }
    close(fd);
    if (!buf)
        return NULL;
    buf[used] = '\0';
    *len = used;
    return buf;
out_fail:
    close(fd);
    free(buf);
    return NULL;
}

/* Splits an answer: returns the status code and the offset of the body, or -1. */
static int parse(const char *buf, size_t len, size_t *body_at)
{
    int code = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &code) != 1)
        return -1;
    const char *sep = memmem(buf, len, "\r\n\r\n", 4);
    if (!sep)
        return -1;
    *body_at = (size_t)(sep - buf) + 4;
    return code;
}

int test_http(int port, const char *method, const char *path, char **body, size_t *len,
              int timeout_ms)
{
    size_t n = 0, at = 0;
    char *buf = exchange(port, method, path, &n, timeout_ms);
    if (!buf)
        return -1;
    int code = parse(buf, n, &at);
    if (code < 0) {
        free(buf);
        return -1;
    }
    if (len)
        *len = n - at;
    if (body) {
        memmove(buf, buf + at, n - at + 1);
        *body = buf;
    } else {
        free(buf);
    }
    return code;
}

int test_http_get(int port, const char *path, char **body, size_t *len)
{
    return test_http(port, "GET", path, body, len, 10000);
}

int test_http_head(int port, const char *method, const char *path, char **head, int timeout_ms)
{
    size_t n = 0, at = 0;
    char *buf = exchange(port, method, path, &n, timeout_ms);
    if (!buf)
        return -1;
    int code = parse(buf, n, &at);
    if (code < 0) {
        free(buf);
        return -1;
    }
    buf[at] = '\0';
    *head = buf;
    return code;
}
