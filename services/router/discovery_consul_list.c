/*
 * discovery_consul_list.c - Consul's lists of passing instances into the router's:
 * Meta to pool, version and weight, address and port to "host:port", entries left out
 * with one warning each.  See discovery_consul.h for the rules.
 */
#define _GNU_SOURCE
#include "discovery_consul.h"

#include "base/err.h"
#include "base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for "[" + the longest address discovery_addr_valid takes + "]:65535". */
#define ADDR_MAX 272

typedef struct {
    char *id;
    char *reason;
} skip_t;

struct discovery_consul_skips {
    char *kind;
    skip_t *items; /* what the last list left out */
    size_t n;
};

discovery_consul_skips_t *discovery_consul_skips_create(const char *kind)
{
    discovery_consul_skips_t *s = ls_xcalloc(1, sizeof(*s));
    s->kind = ls_xstrdup(kind);
    return s;
}

static void skips_free_items(skip_t *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(items[i].id);
        free(items[i].reason);
    }
    free(items);
}

void discovery_consul_skips_destroy(discovery_consul_skips_t *s)
{
    if (!s)
        return;
    skips_free_items(s->items, s->n);
    free(s->kind);
    free(s);
}

/* One conversion's left-out entries, becoming the skips' when it ends. */
typedef struct {
    discovery_consul_skips_t *s;
    skip_t *items;
    size_t n, cap;
    size_t warned;
} skipping_t;

static const char *str(const char *s)
{
    return s ? s : "";
}

/* Up to max bytes of s for a reason in a log field: what would end the quoted field or
 * the line ('"', '\\', control bytes) becomes '?'.  Returns dst. */
static char *shown(char *dst, size_t len, const char *s, size_t max)
{
    size_t i = 0;
    for (; s && s[i] && i < max && i + 1 < len; i++)
        dst[i] = (s[i] == '"' || s[i] == '\\' || (unsigned char)s[i] < 0x20) ? '?' : s[i];
    dst[i] = '\0';
    return dst;
}

static void skip(skipping_t *k, const consul_instance_t *in, const char *reason)
{
    bool known = false;
    for (size_t i = 0; i < k->s->n && !known; i++)
        known = strcmp(k->s->items[i].id, str(in->id)) == 0 &&
                strcmp(k->s->items[i].reason, reason) == 0;
    if (!known) {
        char id[136], node[136], why[400];
        LS_LOG_WARN("router", "consul %s instance left out id=\"%s\" node=\"%s\" reason=\"%s\"",
                    k->s->kind, shown(id, sizeof(id), in->id, 128),
                    shown(node, sizeof(node), in->node, 128), shown(why, sizeof(why), reason, 399));
        k->warned++;
    }
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 8;
        skip_t *a = ls_xcalloc(k->cap, sizeof(*a));
        if (k->n)
            memcpy(a, k->items, k->n * sizeof(*a));
        free(k->items);
        k->items = a;
    }
    k->items[k->n].id = ls_xstrdup(str(in->id));
    k->items[k->n].reason = ls_xstrdup(reason);
    k->n++;
}

static void skipping_end(skipping_t *k, size_t *warned)
{
    skips_free_items(k->s->items, k->s->n);
    k->s->items = k->items;
    k->s->n = k->n;
    if (warned)
        *warned = k->warned;
}

/* in's Meta value for key, or NULL.  consul_instance_meta does the same; this one keeps
 * the conversion free of the client library's code, so it is tested without it. */
static const char *meta(const consul_instance_t *in, const char *key)
{
    for (size_t i = 0; i < in->n_meta; i++)
        if (in->meta_keys[i] && strcmp(in->meta_keys[i], key) == 0)
            return in->meta_values[i];
    return NULL;
}

/* Writes in's "host:port" ("[v6]:port") into buf; false when it has no usable one. */
static bool format_addr(const consul_instance_t *in, char buf[ADDR_MAX])
{
    const char *a = str(in->address);
    if (!a[0] || in->port < 1 || in->port > 65535)
        return false;
    bool v6 = strchr(a, ':') && a[0] != '[';
    int w = snprintf(buf, ADDR_MAX, v6 ? "[%s]:%d" : "%s:%d", a, in->port);
    return w > 0 && w < ADDR_MAX && discovery_addr_valid(buf);
}

/* The weight in Meta: -1 when absent or empty, -2 when not an integer in 0..1000000. */
static int64_t parse_weight(const char *s)
{
    if (!s || !*s)
        return -1;
    int64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9' || p - s >= 7)
            return -2;
        v = v * 10 + (*p - '0');
    }
    return v <= 1000000 ? v : -2;
}

static int cmp_entry(const void *a, const void *b)
{
    const consul_instance_t *x = *(const consul_instance_t *const *)a;
    const consul_instance_t *y = *(const consul_instance_t *const *)b;
    int c = strcmp(str(x->id), str(y->id));
    if (c == 0)
        c = strcmp(str(x->node), str(y->node));
    if (c == 0)
        c = strcmp(str(x->address), str(y->address));
    if (c == 0)
        c = (x->port > y->port) - (x->port < y->port);
    return c;
}

/* in[0..n) in id order (then node, address, port), whatever order Consul gave. */
static const consul_instance_t **in_order(const consul_instance_t *in, size_t n)
{
    const consul_instance_t **o = ls_xcalloc(n ? n : 1, sizeof(*o));
    for (size_t i = 0; i < n; i++)
        o[i] = &in[i];
    qsort(o, n, sizeof(*o), cmp_entry);
    return o;
}

/* Whether an entry kept before has addr; its id goes to reason if so. */
static bool addr_taken(char *const *kept_addrs, const char *const *kept_ids, size_t n_kept,
                       const char *addr, char *reason, size_t len)
{
    for (size_t i = 0; i < n_kept; i++) {
        if (strcmp(kept_addrs[i], addr) == 0) {
            snprintf(reason, len, "address %s is instance %s's already", addr, kept_ids[i]);
            return true;
        }
    }
    return false;
}

static int cmp_instance(const void *a, const void *b)
{
    return strcmp(((const discovery_instance_t *)a)->addr, ((const discovery_instance_t *)b)->addr);
}

/* Gives every instance of a version the version's weight (the largest explicit one of
 * its instances) and explicitness, so the weight rule sees one weight per version. */
static void version_weights(discovery_instance_t *l, size_t n, bool *explicit_weight)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            if (!explicit_weight[j] || strcmp(l[i].pool, l[j].pool) != 0 ||
                strcmp(l[i].version, l[j].version) != 0)
                continue;
            if (!explicit_weight[i] || l[j].weight > l[i].weight)
                l[i].weight = l[j].weight;
            explicit_weight[i] = true;
        }
    }
}

void discovery_consul_instances(const consul_instance_t *in, size_t n,
                                discovery_consul_skips_t *skips, discovery_instance_t **out,
                                size_t *n_out, size_t *warned)
{
    const consul_instance_t **o = in_order(in, n);
    discovery_instance_t *l = ls_xcalloc(n ? n : 1, sizeof(*l));
    bool *explicit_weight = ls_xcalloc(n ? n : 1, sizeof(*explicit_weight));
    const char **ids = ls_xcalloc(n ? n : 1, sizeof(*ids));
    char **addrs = ls_xcalloc(n ? n : 1, sizeof(*addrs));
    size_t k = 0;
    skipping_t sk = {.s = skips};
    for (size_t i = 0; i < n; i++) {
        const consul_instance_t *e = o[i];
        const char *pool = meta(e, "pool"), *version = str(meta(e, "version"));
        const char *weight_s = meta(e, "weight");
        int64_t weight = parse_weight(weight_s);
        char addr[ADDR_MAX], why[400], v[72];
        if (!pool || !pool[0]) {
            snprintf(why, sizeof(why), "no Meta pool");
        } else if (!discovery_pool_name_valid(pool, strlen(pool))) {
            snprintf(why, sizeof(why), "Meta pool '%s' is not 1-32 of [a-z0-9_-]",
                     shown(v, sizeof(v), pool, 40));
        } else if (version[0] && !discovery_version_valid(version, strlen(version))) {
            snprintf(why, sizeof(why), "Meta version '%s' is not 1-32 of [A-Za-z0-9._-]",
                     shown(v, sizeof(v), version, 40));
        } else if (weight == -2) {
            snprintf(why, sizeof(why), "Meta weight '%s' is not an integer in 0..1000000",
                     shown(v, sizeof(v), weight_s, 20));
        } else if (!format_addr(e, addr)) {
            snprintf(why, sizeof(why), "no usable address (address '%s' port %d)",
                     shown(v, sizeof(v), e->address, 64), e->port);
        } else if (!addr_taken(addrs, ids, k, addr, why, sizeof(why))) {
            why[0] = '\0';
        }
        if (why[0]) {
            skip(&sk, e, why);
            continue;
        }
        l[k].pool = ls_xstrdup(pool);
        l[k].version = ls_xstrdup(version);
        l[k].addr = ls_xstrdup(addr);
        l[k].weight = weight >= 0 ? (uint32_t)weight : 0;
        explicit_weight[k] = weight >= 0;
        ids[k] = str(e->id);
        addrs[k] = l[k].addr;
        k++;
    }
    skipping_end(&sk, warned);
    version_weights(l, k, explicit_weight);
    discovery_fill_weights(l, k, explicit_weight);
    qsort(l, k, sizeof(*l), cmp_instance);
    free(addrs);
    free(ids);
    free(explicit_weight);
    free(o);
    *out = l;
    *n_out = k;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void discovery_consul_caches(const consul_instance_t *in, size_t n, discovery_consul_skips_t *skips,
                             char ***out, size_t *n_out, size_t *warned)
{
    const consul_instance_t **o = in_order(in, n);
    char **addrs = ls_xcalloc(n ? n : 1, sizeof(*addrs));
    const char **ids = ls_xcalloc(n ? n : 1, sizeof(*ids));
    size_t k = 0;
    skipping_t sk = {.s = skips};
    for (size_t i = 0; i < n; i++) {
        const consul_instance_t *e = o[i];
        char addr[ADDR_MAX], why[400], v[72];
        if (!format_addr(e, addr)) {
            snprintf(why, sizeof(why), "no usable address (address '%s' port %d)",
                     shown(v, sizeof(v), e->address, 64), e->port);
            skip(&sk, e, why);
            continue;
        }
        if (addr_taken(addrs, ids, k, addr, why, sizeof(why))) {
            skip(&sk, e, why);
            continue;
        }
        addrs[k] = ls_xstrdup(addr);
        ids[k] = str(e->id);
        k++;
    }
    skipping_end(&sk, warned);
    qsort(addrs, k, sizeof(*addrs), cmp_str);
    free(ids);
    free(o);
    *out = addrs;
    *n_out = k;
}

void discovery_consul_caches_free(char **addrs, size_t n)
{
    if (!addrs)
        return;
    for (size_t i = 0; i < n; i++)
        free(addrs[i]);
    free(addrs);
}
