/*
 * config.c - consul_config_t from Consul's own environment variables, read as Consul's
 * Go client reads them (api.go: DefaultConfig and NewClient), but stricter where it
 * would only log: a value that does not parse is an error here, so a service with a
 * mistyped variable fails at start instead of talking to the wrong place.
 */
#define _POSIX_C_SOURCE 200809L
#include "consul/consul_int.h"

#include "base/err.h"
#include "base/file.h"
#include "base/log.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_ADDR "127.0.0.1:8500"
#define TOKEN_FILE_MAX 65536 /* bytes; a token is a UUID */

/* The variable's value, or NULL when it is unset or empty (Consul treats both alike). */
static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

static bool is_host_char(char ch)
{
    return isalnum((unsigned char)ch) || ch == '-' || ch == '.' || ch == '_';
}

int consul__parse_hostport(const char *s, size_t len, consul__hostport_t *out, char *err,
                           size_t err_len)
{
    memset(out, 0, sizeof(*out));
    if (len > 0 && s[len - 1] == '/')
        len--;
    const char *host = s, *rest;
    size_t host_len;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close) {
            ls_set_err(err, err_len, "an IPv6 address without its closing ']'");
            return LS_ERR_INVALID;
        }
        host = s + 1;
        host_len = (size_t)(close - host);
        for (size_t i = 0; i < host_len; i++)
            if (!isxdigit((unsigned char)host[i]) && host[i] != ':' && host[i] != '.') {
                ls_set_err(err, err_len, "a character an IPv6 address cannot hold");
                return LS_ERR_INVALID;
            }
        out->v6 = true;
        rest = close + 1;
    } else {
        const char *colon = memchr(s, ':', len);
        host_len = colon ? (size_t)(colon - s) : len;
        for (size_t i = 0; i < host_len; i++)
            if (!is_host_char(host[i])) {
                ls_set_err(err, err_len,
                           "a character a host name cannot hold (a path, user or space?)");
                return LS_ERR_INVALID;
            }
        rest = s + host_len;
    }
    if (host_len == 0 || host_len >= sizeof(out->host)) {
        ls_set_err(err, err_len, host_len ? "a host name too long" : "no host");
        return LS_ERR_INVALID;
    }
    memcpy(out->host, host, host_len);
    size_t rest_len = len - (size_t)(rest - s);
    if (rest_len == 0)
        return LS_OK;
    /* ":port", 1..65535, digits only. */
    long port = 0;
    size_t i = 1;
    for (; rest[0] == ':' && i < rest_len && i <= 6 && isdigit((unsigned char)rest[i]); i++)
        port = port * 10 + (rest[i] - '0');
    if (rest[0] != ':' || i == 1 || i != rest_len || port < 1 || port > 65535) {
        ls_set_err(err, err_len, "a port that is not a number in 1..65535");
        return LS_ERR_INVALID;
    }
    out->port = (int)port;
    return LS_OK;
}

/* strconv.ParseBool's spellings. */
static int parse_bool(const char *name, const char *v, bool *out, char *err, size_t err_len)
{
    static const char *const yes[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const no[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcmp(v, yes[i]) == 0) {
            *out = true;
            return LS_OK;
        }
        if (strcmp(v, no[i]) == 0) {
            *out = false;
            return LS_OK;
        }
    }
    ls_set_err(err, err_len, "%s is not a boolean (true or false): \"%.32s\"", name, v);
    return LS_ERR_INVALID;
}

/* A token travels in a header: printable ASCII without spaces.  The reason never shows
 * the token. */
static bool token_ok(const char *t)
{
    for (; *t; t++)
        if (*t < 0x21 || *t > 0x7e)
            return false;
    return true;
}

static char *dup_or_null(const char *s)
{
    return s ? ls_xstrdup(s) : NULL;
}

/* The token from CONSUL_HTTP_TOKEN_FILE (whitespace around it trimmed, as Consul does)
 * or CONSUL_HTTP_TOKEN; NULL for none. */
static int read_token(char **out, char *err, size_t err_len)
{
    *out = NULL;
    const char *file = env("CONSUL_HTTP_TOKEN_FILE");
    const char *name = file ? "CONSUL_HTTP_TOKEN_FILE" : "CONSUL_HTTP_TOKEN";
    char *tok;
    if (file) {
        tok = ls_file_read(file, TOKEN_FILE_MAX, NULL);
        if (!tok) {
            ls_set_err(err, err_len, "CONSUL_HTTP_TOKEN_FILE cannot be read: %s: %s", file,
                       strerror(errno));
            return LS_ERR_INVALID;
        }
        size_t len = strlen(tok);
        while (len > 0 && isspace((unsigned char)tok[len - 1]))
            tok[--len] = '\0';
        size_t skip = strspn(tok, " \t\r\n\v\f");
        memmove(tok, tok + skip, len - skip + 1);
    } else {
        tok = dup_or_null(env("CONSUL_HTTP_TOKEN"));
    }
    if (tok && !tok[0]) {
        free(tok);
        tok = NULL;
    }
    if (tok && !token_ok(tok)) {
        free(tok);
        ls_set_err(err, err_len, "%s holds characters an HTTP header cannot carry", name);
        return LS_ERR_INVALID;
    }
    *out = tok;
    return LS_OK;
}

int consul_config_from_env(consul_config_t *cfg, char *err, size_t err_len)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->verify = true;
    bool ssl = false;
    const char *v;
    int rc;
    if ((v = env("CONSUL_HTTP_SSL")) &&
        (rc = parse_bool("CONSUL_HTTP_SSL", v, &ssl, err, err_len)) != LS_OK)
        goto out_free;
    if ((v = env("CONSUL_HTTP_SSL_VERIFY")) &&
        (rc = parse_bool("CONSUL_HTTP_SSL_VERIFY", v, &cfg->verify, err, err_len)) != LS_OK)
        goto out_free;

    const char *addr = env("CONSUL_HTTP_ADDR");
    cfg->addr_set = addr != NULL;
    if (!addr)
        addr = DEFAULT_ADDR;
    const char *sep = strstr(addr, "://");
    const char *hostport = sep ? sep + 3 : addr;
    if (sep) {
        size_t scheme_len = (size_t)(sep - addr);
        /* As Consul: "http://" never turns TLS off when CONSUL_HTTP_SSL asked for it. */
        if (scheme_len == 5 && strncmp(addr, "https", 5) == 0) {
            ssl = true;
        } else if (scheme_len == 4 && strncmp(addr, "unix", 4) == 0) {
            if (!hostport[0]) {
                ls_set_err(err, err_len, "CONSUL_HTTP_ADDR: unix:// without a socket path");
                rc = LS_ERR_INVALID;
                goto out_free;
            }
            cfg->unix_socket = ls_xstrdup(hostport);
        } else if (!(scheme_len == 4 && strncmp(addr, "http", 4) == 0)) {
            ls_set_err(err, err_len,
                       "CONSUL_HTTP_ADDR: unknown scheme \"%.*s\" (http, https or unix)",
                       (int)(scheme_len > 16 ? 16 : scheme_len), addr);
            rc = LS_ERR_INVALID;
            goto out_free;
        }
    }
    const char *scheme = ssl ? "https" : "http";
    if (cfg->unix_socket) {
        /* The host only names the agent in the Host header; the socket is the address. */
        size_t n = strlen(scheme) + sizeof("://localhost");
        cfg->base_url = ls_xmalloc(n);
        snprintf(cfg->base_url, n, "%s://localhost", scheme);
    } else {
        consul__hostport_t hp;
        char why[160];
        if (consul__parse_hostport(hostport, strlen(hostport), &hp, why, sizeof(why)) != LS_OK) {
            ls_set_err(err, err_len, "CONSUL_HTTP_ADDR does not parse as [scheme://]host:port: %s",
                       why);
            rc = LS_ERR_INVALID;
            goto out_free;
        }
        size_t n = strlen(hp.host) + 32;
        cfg->base_url = ls_xmalloc(n);
        char port[16] = "";
        if (hp.port)
            snprintf(port, sizeof(port), ":%d", hp.port);
        snprintf(cfg->base_url, n, "%s://%s%s%s%s", scheme, hp.v6 ? "[" : "", hp.host,
                 hp.v6 ? "]" : "", port);
    }

    if ((rc = read_token(&cfg->token, err, err_len)) != LS_OK)
        goto out_free;
    cfg->ca_file = dup_or_null(env("CONSUL_CACERT"));
    cfg->ca_path = dup_or_null(env("CONSUL_CAPATH"));
    cfg->client_cert = dup_or_null(env("CONSUL_CLIENT_CERT"));
    cfg->client_key = dup_or_null(env("CONSUL_CLIENT_KEY"));
    cfg->tls_server_name = dup_or_null(env("CONSUL_TLS_SERVER_NAME"));
    if (!cfg->client_cert != !cfg->client_key) {
        ls_set_err(err, err_len, "%s is set without %s",
                   cfg->client_cert ? "CONSUL_CLIENT_CERT" : "CONSUL_CLIENT_KEY",
                   cfg->client_cert ? "CONSUL_CLIENT_KEY" : "CONSUL_CLIENT_CERT");
        rc = LS_ERR_INVALID;
        goto out_free;
    }
    if (cfg->tls_server_name) {
        consul__hostport_t hp;
        const char *name = cfg->tls_server_name;
        if (consul__parse_hostport(name, strlen(name), &hp, NULL, 0) != LS_OK || hp.port || hp.v6 ||
            name[strlen(name) - 1] == '/') {
            ls_set_err(err, err_len, "CONSUL_TLS_SERVER_NAME is not a host name");
            rc = LS_ERR_INVALID;
            goto out_free;
        }
    }
    return LS_OK;

out_free:
    consul_config_free(cfg);
    return rc;
}

void consul_config_free(consul_config_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->base_url);
    free(cfg->unix_socket);
    free(cfg->token);
    free(cfg->ca_file);
    free(cfg->ca_path);
    free(cfg->client_cert);
    free(cfg->client_key);
    free(cfg->tls_server_name);
    memset(cfg, 0, sizeof(*cfg));
    cfg->verify = true;
}
