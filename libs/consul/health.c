/*
 * health.c - GET /v1/health/service/<name>: the query and the parsing of its answer into
 * consul_instance_t.
 *
 * The answer is input from the network: every field is checked for its type before use.
 * A field that is absent or null takes its zero value, as Consul's own Go client decodes
 * it (Tags and Meta are often null); a field of the wrong type, or an entry without a
 * Service.ID or without any address, makes the whole answer LS_ERR_FORMAT: it is not
 * Consul speaking, and the watch then keeps its last good list.
 */
#define _GNU_SOURCE
#include "consul/consul_int.h"

#include "base/err.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A parse in progress: the first failure wins and stops the rest. */
typedef struct {
    int rc;
    char why[160];
} parse_t;

static void fail(parse_t *p, int rc, const char *why, size_t entry)
{
    if (p->rc != LS_OK)
        return;
    p->rc = rc;
    snprintf(p->why, sizeof(p->why), "entry %zu: %s", entry, why);
}

static char *dup_checked(parse_t *p, const char *s, size_t entry)
{
    char *d = strdup(s ? s : "");
    if (!d)
        fail(p, LS_ERR_NOMEM, "out of memory", entry);
    return d;
}

/* The member key of obj: NULL when absent or null, else it must have the type is()
 * accepts. */
static const cJSON *member(parse_t *p, const cJSON *obj, const char *key,
                           cJSON_bool (*is)(const cJSON *), const char *why, size_t entry)
{
    const cJSON *m = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!m || cJSON_IsNull(m))
        return NULL;
    if (!is(m)) {
        fail(p, LS_ERR_FORMAT, why, entry);
        return NULL;
    }
    return m;
}

static const char *string_member(parse_t *p, const cJSON *obj, const char *key, const char *why,
                                 size_t entry)
{
    const cJSON *m = member(p, obj, key, cJSON_IsString, why, entry);
    return m ? m->valuestring : "";
}

typedef struct {
    char *key, *value;
} pair_t;

static int pair_cmp(const void *a, const void *b)
{
    return strcmp(((const pair_t *)a)->key, ((const pair_t *)b)->key);
}

/* Meta as key-sorted parallel arrays, so two lists compare pair by pair. */
static void parse_meta(parse_t *p, const cJSON *meta, consul_instance_t *in, size_t entry)
{
    size_t n = (size_t)cJSON_GetArraySize(meta);
    if (n == 0)
        return;
    pair_t *pairs = calloc(n, sizeof(*pairs));
    in->meta_keys = calloc(n, sizeof(char *));
    in->meta_values = calloc(n, sizeof(char *));
    if (!pairs || !in->meta_keys || !in->meta_values) {
        fail(p, LS_ERR_NOMEM, "out of memory", entry);
        free(pairs);
        return;
    }
    size_t i = 0;
    for (const cJSON *m = meta->child; m && p->rc == LS_OK; m = m->next, i++) {
        if (!cJSON_IsString(m) || !m->string) {
            fail(p, LS_ERR_FORMAT, "a Service.Meta value is not a string", entry);
            break;
        }
        pairs[i].key = dup_checked(p, m->string, entry);
        pairs[i].value = dup_checked(p, m->valuestring, entry);
    }
    if (p->rc == LS_OK)
        qsort(pairs, n, sizeof(*pairs), pair_cmp);
    /* Hand every copy over, even after a failure, so consul_instances_free frees them. */
    for (size_t j = 0; j < n; j++) {
        in->meta_keys[j] = pairs[j].key;
        in->meta_values[j] = pairs[j].value;
    }
    in->n_meta = n;
    free(pairs);
}

static void parse_tags(parse_t *p, const cJSON *tags, consul_instance_t *in, size_t entry)
{
    size_t n = (size_t)cJSON_GetArraySize(tags);
    if (n == 0)
        return;
    in->tags = calloc(n, sizeof(char *));
    if (!in->tags) {
        fail(p, LS_ERR_NOMEM, "out of memory", entry);
        return;
    }
    in->n_tags = n;
    size_t i = 0;
    for (const cJSON *t = tags->child; t && p->rc == LS_OK; t = t->next, i++) {
        if (!cJSON_IsString(t))
            fail(p, LS_ERR_FORMAT, "a Service.Tags item is not a string", entry);
        else
            in->tags[i] = dup_checked(p, t->valuestring, entry);
    }
}

static void parse_entry(parse_t *p, const cJSON *e, consul_instance_t *in, size_t i)
{
    if (!cJSON_IsObject(e)) {
        fail(p, LS_ERR_FORMAT, "not an object", i);
        return;
    }
    const cJSON *node = member(p, e, "Node", cJSON_IsObject, "Node is not an object", i);
    const cJSON *svc = member(p, e, "Service", cJSON_IsObject, "Service is not an object", i);
    if (p->rc == LS_OK && !svc)
        fail(p, LS_ERR_FORMAT, "no Service", i);
    const char *id = string_member(p, svc, "ID", "Service.ID is not a string", i);
    const char *node_name = string_member(p, node, "Node", "Node.Node is not a string", i);
    const char *node_addr = string_member(p, node, "Address", "Node.Address is not a string", i);
    const char *addr = string_member(p, svc, "Address", "Service.Address is not a string", i);
    const cJSON *port = member(p, svc, "Port", cJSON_IsNumber, "Service.Port is not a number", i);
    const cJSON *tags = member(p, svc, "Tags", cJSON_IsArray, "Service.Tags is not an array", i);
    const cJSON *meta = member(p, svc, "Meta", cJSON_IsObject, "Service.Meta is not an object", i);
    if (p->rc != LS_OK)
        return;
    if (!id[0]) {
        fail(p, LS_ERR_FORMAT, "no Service.ID", i);
        return;
    }
    if (!addr[0])
        addr = node_addr;
    if (!addr[0]) {
        fail(p, LS_ERR_FORMAT, "neither Service.Address nor Node.Address", i);
        return;
    }
    double pv = port ? port->valuedouble : 0;
    if (!(pv >= 0 && pv <= 65535) || pv != (double)(int)pv) {
        fail(p, LS_ERR_FORMAT, "Service.Port is not a port number", i);
        return;
    }
    in->port = (int)pv;
    in->id = dup_checked(p, id, i);
    in->node = dup_checked(p, node_name, i);
    in->address = dup_checked(p, addr, i);
    if (tags)
        parse_tags(p, tags, in, i);
    if (meta)
        parse_meta(p, meta, in, i);
}

static int instance_cmp(const void *a, const void *b)
{
    const consul_instance_t *x = a, *y = b;
    int d = strcmp(x->id, y->id);
    if (!d)
        d = strcmp(x->node, y->node);
    if (!d)
        d = strcmp(x->address, y->address);
    return d ? d : (x->port > y->port) - (x->port < y->port);
}

/* Parses body (len bytes, NUL-terminated).  On LS_OK *list and *n are the caller's. */
static int parse_health(const char *body, size_t len, consul_instance_t **list, size_t *n,
                        consul_result_t *res)
{
    *list = NULL;
    *n = 0;
    if (memchr(body, '\0', len)) {
        consul__set_err(res, "the health answer holds a NUL byte");
        return LS_ERR_FORMAT;
    }
    /* len + 1 takes the NUL in, so trailing garbage after the JSON is refused. */
    cJSON *root = cJSON_ParseWithLengthOpts(body, len + 1, NULL, 1);
    if (!root || !cJSON_IsArray(root)) {
        cJSON_Delete(root);
        consul__set_err(res, "the health answer is not a JSON array");
        return LS_ERR_FORMAT;
    }
    size_t count = (size_t)cJSON_GetArraySize(root);
    consul_instance_t *out = calloc(count ? count : 1, sizeof(*out));
    parse_t p = {.rc = out ? LS_OK : LS_ERR_NOMEM, .why = "out of memory"};
    size_t i = 0;
    for (const cJSON *e = root->child; e && p.rc == LS_OK; e = e->next, i++)
        parse_entry(&p, e, &out[i], i);
    cJSON_Delete(root);
    if (p.rc != LS_OK) {
        consul_instances_free(out, count);
        consul__set_err(res, "the health answer is malformed: %s", p.why);
        return p.rc;
    }
    qsort(out, count, sizeof(*out), instance_cmp);
    *list = out;
    *n = count;
    return LS_OK;
}

int consul__health_query(consul_t *c, const char *name, bool passing, uint64_t index,
                         int64_t wait_ms, const consul__cancel_t *cancel, consul_instance_t **list,
                         size_t *n, uint64_t *index_out, consul_result_t *res)
{
    *list = NULL;
    *n = 0;
    *index_out = 0;
    if (res)
        memset(res, 0, sizeof(*res));
    if (!name || !name[0]) {
        consul__set_err(res, "no service name");
        return LS_ERR_INVALID;
    }
    char *esc = consul__escape(name);
    size_t path_len = (esc ? strlen(esc) : 0) + 128;
    char *path = esc ? malloc(path_len) : NULL;
    if (!path) {
        free(esc);
        consul__set_err(res, "out of memory");
        return LS_ERR_NOMEM;
    }
    int at = snprintf(path, path_len, "/v1/health/service/%s", esc);
    char sep = '?';
    if (passing) {
        at += snprintf(path + at, path_len - (size_t)at, "%cpassing=true", sep);
        sep = '&';
    }
    int64_t timeout_ms = CONSUL_QUERY_MARGIN_MS;
    if (index > 0) {
        wait_ms = wait_ms < 1 ? 1 : wait_ms > CONSUL_WAIT_MAX_MS ? CONSUL_WAIT_MAX_MS : wait_ms;
        snprintf(path + at, path_len - (size_t)at, "%cindex=%" PRIu64 "&wait=%" PRId64 "ms", sep,
                 index, wait_ms);
        timeout_ms += wait_ms + wait_ms / 16;
    }
    consul__req_t rq = {
        .method = "GET", .path = path, .body = NULL, .timeout_ms = timeout_ms, .cancel = cancel};
    consul__resp_t rs;
    int rc = consul__http(c, &rq, &rs, res);
    free(path);
    free(esc);
    if (rc == LS_OK) {
        rc = parse_health(rs.body, rs.body_len, list, n, res);
        if (rc == LS_OK)
            *index_out = rs.index;
    }
    free(rs.body);
    return rc;
}

int consul_health_service(consul_t *c, const char *name, bool passing, uint64_t index,
                          int64_t wait_ms, consul_instance_t **list, size_t *n, uint64_t *index_out,
                          consul_result_t *res)
{
    return consul__health_query(c, name, passing, index, wait_ms, NULL, list, n, index_out, res);
}

void consul_instances_free(consul_instance_t *list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++) {
        consul_instance_t *in = &list[i];
        free(in->id);
        free(in->node);
        free(in->address);
        for (size_t j = 0; in->tags && j < in->n_tags; j++)
            free(in->tags[j]);
        free(in->tags);
        for (size_t j = 0; j < in->n_meta; j++) {
            free(in->meta_keys ? in->meta_keys[j] : NULL);
            free(in->meta_values ? in->meta_values[j] : NULL);
        }
        free(in->meta_keys);
        free(in->meta_values);
    }
    free(list);
}

const char *consul_instance_meta(const consul_instance_t *in, const char *key)
{
    for (size_t i = 0; i < in->n_meta; i++)
        if (strcmp(in->meta_keys[i], key) == 0)
            return in->meta_values[i];
    return NULL;
}
