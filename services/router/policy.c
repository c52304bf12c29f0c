#define _GNU_SOURCE
#include "policy.h"

#include "base/err.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool copy_name(char *dst, const char *src, size_t len)
{
    if (len == 0 || len > ROUTER_POOL_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
    return true;
}

static router_pool_policy_t *pool_entry(router_policy_t *p, const char *name)
{
    for (size_t i = 0; i < p->n_pools; i++)
        if (strcmp(p->pools[i].pool, name) == 0)
            return &p->pools[i];
    if (p->n_pools == ROUTER_POLICY_MAX)
        return NULL;
    router_pool_policy_t *e = &p->pools[p->n_pools++];
    memset(e, 0, sizeof(*e));
    snprintf(e->pool, sizeof(e->pool), "%s", name);
    e->ttft_ms = -1;
    snprintf(e->fallback, sizeof(e->fallback), "%s",
             strcmp(name, p->default_pool) == 0 ? "" : p->default_pool);
    return e;
}

/* Walks "KEY=VALUE,KEY=VALUE"; fn gets each pair (not NUL-terminated). */
static int each_pair(const char *list, const char *what,
                     int (*fn)(router_policy_t *, const char *, size_t, const char *, size_t,
                               char *, size_t),
                     router_policy_t *p, char *err, size_t err_len)
{
    if (!list)
        return LS_OK;
    const char *s = list;
    while (*s) {
        while (*s == ' ' || *s == ',')
            s++;
        if (!*s)
            break;
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *eq = memchr(s, '=', len);
        if (!eq) {
            ls_set_err(err, err_len, "%s: '%.*s' is not POOL=VALUE", what, (int)len, s);
            return LS_ERR_INVALID;
        }
        int rc = fn(p, s, (size_t)(eq - s), eq + 1, len - (size_t)(eq - s) - 1, err, err_len);
        if (rc != LS_OK)
            return rc;
        s += len;
    }
    return LS_OK;
}

static int add_tier(router_policy_t *p, const char *k, size_t kl, const char *v, size_t vl,
                    char *err, size_t err_len)
{
    if (p->n_tiers == ROUTER_POLICY_MAX) {
        ls_set_err(err, err_len, "--tiers: more than %d tiers", ROUTER_POLICY_MAX);
        return LS_ERR_INVALID;
    }
    router_tier_t *t = &p->tiers[p->n_tiers];
    if (!copy_name(t->pool, k, kl)) {
        ls_set_err(err, err_len, "--tiers: '%.*s' is not a pool name", (int)kl, k);
        return LS_ERR_INVALID;
    }
    char num[64];
    snprintf(num, sizeof(num), "%.*s", (int)(vl < 63 ? vl : 63), v);
    char *end = NULL;
    errno = 0;
    double th = strtod(num, &end);
    if (errno || end == num || *end || !isfinite(th) || th < 0) {
        ls_set_err(err, err_len, "--tiers: threshold '%s' of pool %s is not a number >= 0", num,
                   t->pool);
        return LS_ERR_INVALID;
    }
    t->threshold = th;
    /* Keep ascending order. */
    size_t i = p->n_tiers++;
    while (i > 0 && p->tiers[i - 1].threshold > p->tiers[i].threshold) {
        router_tier_t tmp = p->tiers[i - 1];
        p->tiers[i - 1] = p->tiers[i];
        p->tiers[i] = tmp;
        i--;
    }
    return LS_OK;
}

static int add_fallback(router_policy_t *p, const char *k, size_t kl, const char *v, size_t vl,
                        char *err, size_t err_len)
{
    char name[ROUTER_POOL_NAME_MAX + 1], fb[ROUTER_POOL_NAME_MAX + 1];
    if (!copy_name(name, k, kl) || !copy_name(fb, v, vl)) {
        ls_set_err(err, err_len, "--pool-fallback: '%.*s=%.*s' is not POOL=POOL or POOL=none",
                   (int)kl, k, (int)vl, v);
        return LS_ERR_INVALID;
    }
    if (strcmp(name, fb) == 0) {
        ls_set_err(err, err_len, "--pool-fallback: pool %s cannot fall back to itself", name);
        return LS_ERR_INVALID;
    }
    router_pool_policy_t *e = pool_entry(p, name);
    if (!e) {
        ls_set_err(err, err_len, "--pool-fallback: too many pools");
        return LS_ERR_INVALID;
    }
    snprintf(e->fallback, sizeof(e->fallback), "%s", strcmp(fb, "none") == 0 ? "" : fb);
    return LS_OK;
}

static int add_ttft(router_policy_t *p, const char *k, size_t kl, const char *v, size_t vl,
                    char *err, size_t err_len)
{
    char name[ROUTER_POOL_NAME_MAX + 1];
    if (!copy_name(name, k, kl)) {
        ls_set_err(err, err_len, "--pool-ttft-ms: '%.*s' is not a pool name", (int)kl, k);
        return LS_ERR_INVALID;
    }
    char num[32];
    snprintf(num, sizeof(num), "%.*s", (int)(vl < 31 ? vl : 31), v);
    char *end = NULL;
    errno = 0;
    long long ms = strtoll(num, &end, 10);
    if (errno || end == num || *end || ms < 0 || ms > 3600000) {
        ls_set_err(err, err_len, "--pool-ttft-ms: '%s' for pool %s is not in [0, 3600000] ms", num,
                   name);
        return LS_ERR_INVALID;
    }
    router_pool_policy_t *e = pool_entry(p, name);
    if (!e) {
        ls_set_err(err, err_len, "--pool-ttft-ms: too many pools");
        return LS_ERR_INVALID;
    }
    e->ttft_ms = ms;
    return LS_OK;
}

int router_policy_parse(router_policy_t *p, const char *default_pool, const char *tiers,
                        const char *fallbacks, const char *pool_ttft, int64_t default_ttft_ms,
                        char *err, size_t err_len)
{
    memset(p, 0, sizeof(*p));
    if (!default_pool || !copy_name(p->default_pool, default_pool, strlen(default_pool))) {
        ls_set_err(err, err_len, "--default-pool: '%s' is not a pool name ([a-z0-9_-], 1-32)",
                   default_pool ? default_pool : "");
        return LS_ERR_INVALID;
    }
    p->default_ttft_ms = default_ttft_ms;
    int rc = each_pair(tiers, "--tiers", add_tier, p, err, err_len);
    if (rc == LS_OK)
        rc = each_pair(fallbacks, "--pool-fallback", add_fallback, p, err, err_len);
    if (rc == LS_OK)
        rc = each_pair(pool_ttft, "--pool-ttft-ms", add_ttft, p, err, err_len);
    return rc;
}

const char *router_policy_pool_for(const router_policy_t *p, double score, double *threshold)
{
    const char *pool = p->default_pool;
    *threshold = p->n_tiers ? p->tiers[0].threshold : 0;
    for (size_t i = 0; i < p->n_tiers; i++) {
        if (score >= p->tiers[i].threshold) {
            pool = p->tiers[i].pool;
            *threshold = p->tiers[i].threshold;
        }
    }
    return pool;
}

const char *router_policy_fallback(const router_policy_t *p, const char *pool)
{
    for (size_t i = 0; i < p->n_pools; i++)
        if (strcmp(p->pools[i].pool, pool) == 0)
            return p->pools[i].fallback[0] ? p->pools[i].fallback : NULL;
    return strcmp(pool, p->default_pool) == 0 ? NULL : p->default_pool;
}

int64_t router_policy_ttft_ms(const router_policy_t *p, const char *pool)
{
    if (!router_policy_fallback(p, pool))
        return 0;
    for (size_t i = 0; i < p->n_pools; i++)
        if (strcmp(p->pools[i].pool, pool) == 0 && p->pools[i].ttft_ms >= 0)
            return p->pools[i].ttft_ms;
    return p->default_ttft_ms;
}

int router_policy_each_pool(const router_policy_t *p, int (*fn)(void *ud, const char *pool),
                            void *ud)
{
    int rc = fn(ud, p->default_pool);
    for (size_t i = 0; rc == LS_OK && i < p->n_tiers; i++)
        rc = fn(ud, p->tiers[i].pool);
    for (size_t i = 0; rc == LS_OK && i < p->n_pools; i++)
        if (p->pools[i].fallback[0])
            rc = fn(ud, p->pools[i].fallback);
    return rc;
}
