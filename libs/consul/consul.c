/*
 * consul.c - the client (a copy of the configuration turned into what every exchange
 * needs) and the agent's service endpoints: register, deregister, present.
 *
 * CONSUL_TLS_SERVER_NAME: libcurl has no option that checks a certificate against a name
 * other than the URL's host.  So the URL carries the server name (it is what TLS sends as
 * SNI and verifies the certificate against) and CURLOPT_CONNECT_TO sends the connection
 * to the configured address.  The Host header then names the server name too, which the
 * agent ignores.  With a unix socket the URL's host is only a name anyway.
 */
#define _GNU_SOURCE
#include "consul/consul_int.h"

#include "base/err.h"
#include "base/log.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_rc = CURLE_FAILED_INIT;

/* Once per process, on the first consul_create rather than at load time: the services
 * start OpenSSL their own way first (libs/rpc/init.c), and curl then finds it started.
 * Never undone: curl_global_cleanup is not thread-safe and others may still use curl. */
static void curl_start(void)
{
    g_curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

char *consul__escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(s);
    char *out = malloc(len * 3 + 1);
    if (!out)
        return NULL;
    char *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

static char *dup_or_null(const char *s)
{
    return s ? ls_xstrdup(s) : NULL;
}

static struct curl_slist *slist_add(struct curl_slist *l, const char *s)
{
    struct curl_slist *n = curl_slist_append(l, s);
    if (!n) {
        LS_LOG_ERROR("consul", "out of memory");
        abort();
    }
    return n;
}

/* The request URL and connect-to entry for a TLS server name (see the top of the file);
 * leaves c->url as the base URL when there is none or the base URL does not parse. */
static void map_server_name(consul_t *c, const char *name)
{
    static const char https[] = "https://";
    if (!name || strncmp(c->base_url, https, sizeof(https) - 1) != 0)
        return;
    char buf[600];
    if (c->unix_socket) {
        snprintf(buf, sizeof(buf), "https://%s", name);
        free(c->url);
        c->url = ls_xstrdup(buf);
        return;
    }
    const char *hp_s = c->base_url + sizeof(https) - 1;
    consul__hostport_t hp;
    if (consul__parse_hostport(hp_s, strlen(hp_s), &hp, NULL, 0) != LS_OK) {
        LS_LOG_WARN("consul", "the agent's URL does not parse, TLS server name unused url=%s",
                    c->base_url);
        return;
    }
    int port = hp.port ? hp.port : 443;
    snprintf(buf, sizeof(buf), "https://%s:%d", name, port);
    free(c->url);
    c->url = ls_xstrdup(buf);
    /* An empty request host and port match every request this handle makes. */
    snprintf(buf, sizeof(buf), "::%s%s%s:%d", hp.v6 ? "[" : "", hp.host, hp.v6 ? "]" : "", port);
    c->connect_to = slist_add(NULL, buf);
}

consul_t *consul_create(const consul_config_t *cfg)
{
    pthread_once(&g_curl_once, curl_start);
    if (g_curl_rc != CURLE_OK) {
        LS_LOG_ERROR("consul", "libcurl did not start reason=\"%s\"",
                     curl_easy_strerror(g_curl_rc));
        return NULL;
    }
    consul_t *c = ls_xcalloc(1, sizeof(*c));
    c->base_url = ls_xstrdup(cfg->base_url ? cfg->base_url : "http://127.0.0.1:8500");
    size_t len = strlen(c->base_url);
    while (len > 0 && c->base_url[len - 1] == '/')
        c->base_url[--len] = '\0';
    c->url = ls_xstrdup(c->base_url);
    c->unix_socket = dup_or_null(cfg->unix_socket);
    c->ca_file = dup_or_null(cfg->ca_file);
    c->ca_path = dup_or_null(cfg->ca_path);
    c->client_cert = dup_or_null(cfg->client_cert);
    c->client_key = dup_or_null(cfg->client_key);
    c->verify = cfg->verify;
    map_server_name(c, cfg->tls_server_name);

    /* "Expect:" keeps curl from waiting for a 100 Continue before a larger body. */
    c->hdrs = slist_add(NULL, "Expect:");
    c->hdrs_json = slist_add(NULL, "Expect:");
    c->hdrs_json = slist_add(c->hdrs_json, "Content-Type: application/json");
    if (cfg->token && cfg->token[0]) {
        size_t n = strlen(cfg->token) + sizeof("X-Consul-Token: ");
        char *h = ls_xmalloc(n);
        snprintf(h, n, "X-Consul-Token: %s", cfg->token);
        c->hdrs = slist_add(c->hdrs, h);
        c->hdrs_json = slist_add(c->hdrs_json, h);
        memset(h, 0, n);
        free(h);
    }
    return c;
}

void consul_destroy(consul_t *c)
{
    if (!c)
        return;
    free(c->base_url);
    free(c->url);
    curl_slist_free_all(c->hdrs);
    curl_slist_free_all(c->hdrs_json);
    curl_slist_free_all(c->connect_to);
    free(c->unix_socket);
    free(c->ca_file);
    free(c->ca_path);
    free(c->client_cert);
    free(c->client_key);
    free(c);
}

const char *consul_where(const consul_t *c)
{
    return c->unix_socket ? c->unix_socket : c->base_url;
}

/* ---- registration ---------------------------------------------------------------------- */

/* "<ms>ms": a Go duration Consul parses as is. */
static cJSON *add_duration(cJSON *obj, const char *key, int64_t ms)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%" PRId64 "ms", ms);
    return cJSON_AddStringToObject(obj, key, buf);
}

/* The host of a gRPC target "host:port[/service]" ("[v6]:port" gives "v6") into out. */
static void target_host(const char *target, char *out, size_t cap)
{
    size_t len = strcspn(target, "/");
    const char *start = target;
    if (target[0] == '[') {
        const char *close = memchr(target, ']', len);
        start = target + 1;
        len = close ? (size_t)(close - start) : len - 1;
    } else {
        const char *colon = memrchr(target, ':', len);
        if (colon)
            len = (size_t)(colon - target);
    }
    snprintf(out, cap, "%.*s", (int)len, start);
}

static const char *check_service(const consul_service_t *s)
{
    if (!s->id || !s->id[0] || !s->name || !s->name[0])
        return "a service needs an id and a name";
    if (s->port < 0 || s->port > 65535)
        return "port outside 0..65535";
    if ((s->n_tags && !s->tags) || (s->n_meta && !s->meta) || s->n_tags > INT32_MAX)
        return "tags or meta missing for their count";
    for (size_t i = 0; i < s->n_tags; i++)
        if (!s->tags[i])
            return "a tag is NULL";
    for (size_t i = 0; i < s->n_meta; i++)
        if (!s->meta[i].key || !s->meta[i].key[0] || !s->meta[i].value)
            return "a meta key is empty or a meta value NULL";
    if (s->grpc_target && (!s->grpc_target[0] || s->check_interval_ms <= 0 ||
                           s->check_timeout_ms < 0 || s->deregister_after_ms < 0))
        return "a check needs a target and an interval above 0";
    return NULL;
}

/* The register body as JSON text (the caller frees it), or NULL when memory runs out. */
static char *register_body(const consul_service_t *s)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;
    ok = ok && cJSON_AddStringToObject(o, "ID", s->id);
    ok = ok && cJSON_AddStringToObject(o, "Name", s->name);
    cJSON *tags = !ok         ? NULL
                  : s->n_tags ? cJSON_CreateStringArray(s->tags, (int)s->n_tags)
                              : cJSON_CreateArray();
    ok = ok && tags && cJSON_AddItemToObject(o, "Tags", tags);
    if (!ok)
        cJSON_Delete(tags);
    ok = ok && cJSON_AddStringToObject(o, "Address", s->address ? s->address : "");
    ok = ok && cJSON_AddNumberToObject(o, "Port", s->port);
    cJSON *meta = ok ? cJSON_AddObjectToObject(o, "Meta") : NULL;
    ok = ok && meta;
    for (size_t i = 0; ok && i < s->n_meta; i++)
        ok = cJSON_AddStringToObject(meta, s->meta[i].key, s->meta[i].value) != NULL;
    if (ok && s->grpc_target) {
        cJSON *chk = cJSON_AddObjectToObject(o, "Check");
        char name[300], host[256];
        snprintf(name, sizeof(name), "gRPC health of %s", s->id);
        ok = chk && cJSON_AddStringToObject(chk, "Name", name);
        ok = ok && cJSON_AddStringToObject(chk, "GRPC", s->grpc_target);
        ok = ok && cJSON_AddBoolToObject(chk, "GRPCUseTLS", s->grpc_use_tls);
        if (ok && s->grpc_use_tls) {
            target_host(s->grpc_target, host, sizeof(host));
            ok = cJSON_AddBoolToObject(chk, "TLSSkipVerify", s->tls_skip_verify) &&
                 cJSON_AddStringToObject(chk, "TLSServerName",
                                         s->tls_server_name ? s->tls_server_name : host);
        }
        ok = ok && add_duration(chk, "Interval", s->check_interval_ms);
        if (ok && s->check_timeout_ms > 0)
            ok = add_duration(chk, "Timeout", s->check_timeout_ms) != NULL;
        if (ok && s->deregister_after_ms > 0)
            ok =
                add_duration(chk, "DeregisterCriticalServiceAfter", s->deregister_after_ms) != NULL;
    }
    char *text = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return text;
}

int consul_register(consul_t *c, const consul_service_t *s, int64_t timeout_ms,
                    consul_result_t *res)
{
    if (res)
        memset(res, 0, sizeof(*res));
    const char *bad = check_service(s);
    if (bad) {
        consul__set_err(res, "%s", bad);
        return LS_ERR_INVALID;
    }
    char *body = register_body(s);
    if (!body) {
        consul__set_err(res, "out of memory");
        return LS_ERR_NOMEM;
    }
    consul__req_t rq = {.method = "PUT",
                        .path = "/v1/agent/service/register",
                        .body = body,
                        .timeout_ms = timeout_ms,
                        .cancel = NULL};
    consul__resp_t rs;
    int rc = consul__http(c, &rq, &rs, res);
    free(rs.body);
    free(body);
    return rc;
}

/* An agent call on "<prefix><escaped id>". */
static int agent_call(consul_t *c, const char *method, const char *prefix, const char *id,
                      int64_t timeout_ms, consul__resp_t *rs, consul_result_t *res)
{
    memset(rs, 0, sizeof(*rs));
    if (res)
        memset(res, 0, sizeof(*res));
    if (!id || !id[0]) {
        consul__set_err(res, "no service id");
        return LS_ERR_INVALID;
    }
    char *esc = consul__escape(id);
    size_t n = strlen(prefix) + (esc ? strlen(esc) : 0) + 1;
    char *path = esc ? malloc(n) : NULL;
    if (!path) {
        free(esc);
        consul__set_err(res, "out of memory");
        return LS_ERR_NOMEM;
    }
    snprintf(path, n, "%s%s", prefix, esc);
    consul__req_t rq = {
        .method = method, .path = path, .body = NULL, .timeout_ms = timeout_ms, .cancel = NULL};
    int rc = consul__http(c, &rq, rs, res);
    free(path);
    free(esc);
    return rc;
}

int consul_deregister(consul_t *c, const char *id, int64_t timeout_ms, consul_result_t *res)
{
    consul__resp_t rs;
    int rc = agent_call(c, "PUT", "/v1/agent/service/deregister/", id, timeout_ms, &rs, res);
    /* Current agents answer an id they do not have with 404 (older ones with 200): the
     * registration is gone either way, which is what was asked. */
    if (rs.status == 404) {
        rc = LS_OK;
        if (res)
            res->err[0] = '\0';
    }
    free(rs.body);
    return rc;
}

int consul_service_present(consul_t *c, const char *id, int64_t timeout_ms, consul_result_t *res)
{
    consul__resp_t rs;
    int rc = agent_call(c, "GET", "/v1/agent/service/", id, timeout_ms, &rs, res);
    /* Older agents answer an unknown id with 500 "unknown service ID: ..." */
    if (rs.status == 404 || (rs.status == 500 && rs.body && strcasestr(rs.body, "unknown service")))
        rc = LS_ERR_NOT_FOUND;
    free(rs.body);
    return rc;
}
