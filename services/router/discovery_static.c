/*
 * discovery_static.c - the instance list from configuration, fixed for the process's life.
 */
#define _GNU_SOURCE
#include "discovery.h"

#include "base/err.h"
#include "base/log.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

typedef struct {
    discovery_instance_t *items;
    size_t n, cap;
    bool *explicit_weight; /* parallel to items */
} list_t;

static void push(list_t *l, const char *pool, size_t pool_len, const char *version,
                 size_t version_len, uint32_t weight, bool explicit_weight, const char *addr)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        discovery_instance_t *items = ls_xcalloc(l->cap, sizeof(*items));
        bool *ew = ls_xcalloc(l->cap, sizeof(*ew));
        if (l->n) {
            memcpy(items, l->items, l->n * sizeof(*items));
            memcpy(ew, l->explicit_weight, l->n * sizeof(*ew));
        }
        free(l->items);
        free(l->explicit_weight);
        l->items = items;
        l->explicit_weight = ew;
    }
    discovery_instance_t *it = &l->items[l->n];
    it->pool = strndup(pool, pool_len);
    it->version = strndup(version, version_len);
    it->addr = ls_xstrdup(addr);
    if (!it->pool || !it->version) {
        LS_LOG_ERROR("discovery", "out of memory");
        abort();
    }
    it->weight = weight;
    l->explicit_weight[l->n] = explicit_weight;
    l->n++;
}

/* Parses one NAME[@VERSION[:WEIGHT]]=ADDR,... entry. */
static int parse_entry(list_t *l, char *entry, char *err, size_t err_len)
{
    char *eq = strchr(entry, '=');
    if (!eq) {
        ls_set_err(err, err_len,
                   "pool entry '%s' has no '=' (want NAME[@VERSION[:WEIGHT]]=HOST:PORT,...)",
                   entry);
        return LS_ERR_INVALID;
    }
    *eq = '\0';
    char *head = trim(entry), *addrs = eq + 1;
    char *at = strchr(head, '@');
    const char *version = "";
    size_t version_len = 0;
    uint32_t weight = 100;
    bool explicit_weight = false;
    size_t name_len = at ? (size_t)(at - head) : strlen(head);
    if (at) {
        version = at + 1;
        char *colon = strchr(version, ':');
        version_len = colon ? (size_t)(colon - version) : strlen(version);
        if (colon) {
            char *end = NULL;
            long w = strtol(colon + 1, &end, 10);
            if (end == colon + 1 || *end || w < 0 || w > 1000000) {
                ls_set_err(err, err_len,
                           "pool '%.*s': weight '%s' is not an integer in [0, 1000000]",
                           (int)name_len, head, colon + 1);
                return LS_ERR_INVALID;
            }
            weight = (uint32_t)w;
            explicit_weight = true;
        }
        if (!discovery_version_valid(version, version_len)) {
            ls_set_err(err, err_len, "pool '%.*s': version '%.*s' must be 1-32 of [A-Za-z0-9._-]",
                       (int)name_len, head, (int)version_len, version);
            return LS_ERR_INVALID;
        }
    }
    if (!discovery_pool_name_valid(head, name_len)) {
        ls_set_err(err, err_len, "pool name '%.*s' must be 1-32 of [a-z0-9_-]", (int)name_len,
                   head);
        return LS_ERR_INVALID;
    }
    size_t before = l->n;
    char *save = NULL;
    for (char *a = strtok_r(addrs, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        a = trim(a);
        if (!*a)
            continue;
        if (!discovery_addr_valid(a)) {
            ls_set_err(err, err_len, "pool '%.*s': '%s' is not HOST:PORT", (int)name_len, head, a);
            return LS_ERR_INVALID;
        }
        for (size_t i = 0; i < l->n; i++) {
            if (strcmp(l->items[i].addr, a) == 0) {
                ls_set_err(err, err_len, "instance %s is listed twice", a);
                return LS_ERR_INVALID;
            }
        }
        push(l, head, name_len, version, version_len, weight, explicit_weight, a);
    }
    if (l->n == before) {
        ls_set_err(err, err_len, "pool '%.*s' lists no instance", (int)name_len, head);
        return LS_ERR_INVALID;
    }
    return LS_OK;
}

int discovery_static_parse(const char *spec, discovery_instance_t **list, size_t *n, char *err,
                           size_t err_len)
{
    *list = NULL;
    *n = 0;
    if (!spec) {
        ls_set_err(err, err_len, "no pool given");
        return LS_ERR_INVALID;
    }
    char *copy = ls_xstrdup(spec);
    list_t l = {0};
    int rc = LS_OK;
    char *save = NULL;
    for (char *e = strtok_r(copy, ";\n", &save); e; e = strtok_r(NULL, ";\n", &save)) {
        e = trim(e);
        if (!*e)
            continue;
        rc = parse_entry(&l, e, err, err_len);
        if (rc != LS_OK)
            break;
    }
    free(copy);
    if (rc == LS_OK && l.n == 0) {
        ls_set_err(err, err_len, "no pool given (want NAME[@VERSION[:WEIGHT]]=HOST:PORT,...)");
        rc = LS_ERR_INVALID;
    }
    /* One pool must not mix named and unnamed versions: traffic would be ambiguous. */
    for (size_t i = 0; rc == LS_OK && i < l.n; i++) {
        for (size_t j = i + 1; j < l.n; j++) {
            if (strcmp(l.items[i].pool, l.items[j].pool) == 0 &&
                (!*l.items[i].version) != (!*l.items[j].version)) {
                ls_set_err(err, err_len, "pool '%s' mixes a named version with an unnamed one",
                           l.items[i].pool);
                rc = LS_ERR_INVALID;
                break;
            }
        }
    }
    if (rc != LS_OK) {
        discovery_list_free(l.items, l.n);
        free(l.explicit_weight);
        return rc;
    }
    discovery_fill_weights(l.items, l.n, l.explicit_weight);
    free(l.explicit_weight);
    *list = l.items;
    *n = l.n;
    return LS_OK;
}

typedef struct {
    discovery_t base;
    discovery_instance_t *list;
    size_t n;
} static_source_t;

static int static_start(discovery_t *d, discovery_update_fn fn, void *ud)
{
    static_source_t *s = (static_source_t *)d;
    fn(ud, s->list, s->n);
    return LS_OK;
}

static void static_stop(discovery_t *d)
{
    (void)d; /* nothing runs after start */
}

static void static_destroy(discovery_t *d)
{
    static_source_t *s = (static_source_t *)d;
    discovery_list_free(s->list, s->n);
    free(s);
}

static const discovery_ops_t static_ops = {.name = "static",
                                           .dynamic = false,
                                           .start = static_start,
                                           .stop = static_stop,
                                           .destroy = static_destroy,
                                           .watch_caches = NULL};

discovery_t *discovery_static_create(const char *spec, char *err, size_t err_len)
{
    discovery_instance_t *list;
    size_t n;
    if (discovery_static_parse(spec, &list, &n, err, err_len) != LS_OK)
        return NULL;
    static_source_t *s = ls_xcalloc(1, sizeof(*s));
    s->base.ops = &static_ops;
    s->list = list;
    s->n = n;
    return &s->base;
}
