/*
 * pool.c - pools, instances, least-outstanding picks, affinity and version split.
 *
 * Lock rules: p->mu guards everything in the set, instances included (their counters,
 * flags and reference counts).  Hooks are called with p->mu released.
 */
#define _GNU_SOURCE
#include "pool.h"

#include "base/err.h"
#include "base/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct router_instance {
    char *pool, *version, *addr;
    uint32_t weight;     /* of the instance's version */
    int64_t outstanding; /* picks not yet released */
    int refs;            /* the set's (while listed) + picks + router_instance_ref */
    bool healthy, removed;
    void *user;
};

/* Conversation -> address of the instance that served it; LRU order for eviction. */
typedef struct aff_node {
    uint64_t hash;
    char *conv;
    char *addr;
    struct aff_node *hnext;
    struct aff_node *older, *newer;
} aff_node_t;

struct router_pools {
    pthread_mutex_t mu;
    router_pools_hooks_t hooks;
    router_instance_t **inst; /* listed instances */
    size_t n, cap;
    char **declared; /* pool names that exist with or without instances */
    size_t n_declared;
    uint64_t rng;
    uint64_t rotate; /* tie-break among equally loaded instances */

    aff_node_t **buckets;
    size_t n_buckets, n_aff, max_aff;
    aff_node_t *oldest, *newest;
};

/* ---- affinity map ---------------------------------------------------------------- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static void aff_unlink_lru(router_pools_t *p, aff_node_t *a)
{
    if (a->older)
        a->older->newer = a->newer;
    else
        p->oldest = a->newer;
    if (a->newer)
        a->newer->older = a->older;
    else
        p->newest = a->older;
    a->older = a->newer = NULL;
}

static void aff_push_newest(router_pools_t *p, aff_node_t *a)
{
    a->older = p->newest;
    a->newer = NULL;
    if (p->newest)
        p->newest->newer = a;
    else
        p->oldest = a;
    p->newest = a;
}

static aff_node_t *aff_find(router_pools_t *p, const char *conv, uint64_t h)
{
    if (!p->n_buckets)
        return NULL;
    for (aff_node_t *a = p->buckets[h & (p->n_buckets - 1)]; a; a = a->hnext)
        if (a->hash == h && strcmp(a->conv, conv) == 0)
            return a;
    return NULL;
}

static void aff_remove(router_pools_t *p, aff_node_t *a)
{
    aff_node_t **pp = &p->buckets[a->hash & (p->n_buckets - 1)];
    while (*pp != a)
        pp = &(*pp)->hnext;
    *pp = a->hnext;
    aff_unlink_lru(p, a);
    free(a->conv);
    free(a->addr);
    free(a);
    p->n_aff--;
}

static void aff_grow(router_pools_t *p)
{
    size_t nb = p->n_buckets ? p->n_buckets * 2 : 64;
    aff_node_t **b = ls_xcalloc(nb, sizeof(*b));
    for (size_t i = 0; i < p->n_buckets; i++) {
        aff_node_t *a = p->buckets[i];
        while (a) {
            aff_node_t *next = a->hnext;
            a->hnext = b[a->hash & (nb - 1)];
            b[a->hash & (nb - 1)] = a;
            a = next;
        }
    }
    free(p->buckets);
    p->buckets = b;
    p->n_buckets = nb;
}

static void aff_set(router_pools_t *p, const char *conv, const char *addr)
{
    if (p->max_aff == 0)
        return;
    uint64_t h = hash_str(conv);
    aff_node_t *a = aff_find(p, conv, h);
    if (a) {
        if (strcmp(a->addr, addr) != 0) {
            free(a->addr);
            a->addr = ls_xstrdup(addr);
        }
        aff_unlink_lru(p, a);
        aff_push_newest(p, a);
        return;
    }
    if (p->n_aff + 1 > p->n_buckets)
        aff_grow(p);
    a = ls_xcalloc(1, sizeof(*a));
    a->hash = h;
    a->conv = ls_xstrdup(conv);
    a->addr = ls_xstrdup(addr);
    a->hnext = p->buckets[h & (p->n_buckets - 1)];
    p->buckets[h & (p->n_buckets - 1)] = a;
    aff_push_newest(p, a);
    p->n_aff++;
    while (p->n_aff > p->max_aff)
        aff_remove(p, p->oldest);
}

/* ---- the set --------------------------------------------------------------------- */

router_pools_t *router_pools_create(uint64_t seed, size_t max_affinity,
                                    const router_pools_hooks_t *hooks)
{
    router_pools_t *p = ls_xcalloc(1, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    if (hooks)
        p->hooks = *hooks;
    p->rng = seed ? seed : 0x9e3779b97f4a7c15ULL;
    p->max_aff = max_affinity;
    return p;
}

static void instance_free(router_instance_t *inst)
{
    free(inst->pool);
    free(inst->version);
    free(inst->addr);
    free(inst);
}

/* Drops one reference; returns the instance to free (after unlocking) or NULL. */
static router_instance_t *do_unref(router_instance_t *inst)
{
    LS_ASSERT(inst->refs > 0);
    return --inst->refs == 0 ? inst : NULL;
}

static void finish_free(router_pools_t *p, router_instance_t *dead)
{
    if (!dead)
        return;
    if (p->hooks.on_free && dead->user)
        p->hooks.on_free(p->hooks.ud, dead->user);
    instance_free(dead);
}

void router_pools_destroy(router_pools_t *p)
{
    if (!p)
        return;
    router_pools_clear(p);
    for (size_t i = 0; i < p->n_buckets; i++) {
        aff_node_t *a = p->buckets[i];
        while (a) {
            aff_node_t *next = a->hnext;
            free(a->conv);
            free(a->addr);
            free(a);
            a = next;
        }
    }
    free(p->buckets);
    free(p->inst);
    for (size_t i = 0; i < p->n_declared; i++)
        free(p->declared[i]);
    free(p->declared);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static router_instance_t *find_addr(router_pools_t *p, const char *addr)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->inst[i]->addr, addr) == 0)
            return p->inst[i];
    return NULL;
}

static bool do_declared(router_pools_t *p, const char *pool)
{
    for (size_t i = 0; i < p->n_declared; i++)
        if (strcmp(p->declared[i], pool) == 0)
            return true;
    return false;
}

/* A pool exists when it is declared or has a listed instance. */
static bool do_known(router_pools_t *p, const char *pool)
{
    if (do_declared(p, pool))
        return true;
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->inst[i]->pool, pool) == 0)
            return true;
    return false;
}

void router_pools_declare(router_pools_t *p, const char *pool)
{
    pthread_mutex_lock(&p->mu);
    if (!do_declared(p, pool)) {
        char **d = ls_xcalloc(p->n_declared + 1, sizeof(*d));
        if (p->n_declared)
            memcpy(d, p->declared, p->n_declared * sizeof(*d));
        d[p->n_declared++] = ls_xstrdup(pool);
        free(p->declared);
        p->declared = d;
    }
    pthread_mutex_unlock(&p->mu);
}

/* Removes the listed instances for which keep[i] is false; calls on_remove and drops the
 * set's reference for each.  Called with p->mu held; unlocks and relocks around hooks. */
static void do_remove_unkept(router_pools_t *p, const bool *keep)
{
    router_instance_t **gone = ls_xcalloc(p->n ? p->n : 1, sizeof(*gone));
    size_t n_gone = 0, w = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (keep && keep[i]) {
            p->inst[w++] = p->inst[i];
        } else {
            p->inst[i]->removed = true;
            p->inst[i]->healthy = false;
            gone[n_gone++] = p->inst[i];
        }
    }
    p->n = w;
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < n_gone; i++) {
        LS_LOG_INFO("router", "instance removed pool=%s addr=%s", gone[i]->pool, gone[i]->addr);
        if (p->hooks.on_remove)
            p->hooks.on_remove(p->hooks.ud, gone[i]);
        pthread_mutex_lock(&p->mu);
        router_instance_t *dead = do_unref(gone[i]);
        pthread_mutex_unlock(&p->mu);
        finish_free(p, dead);
    }
    free(gone);
    pthread_mutex_lock(&p->mu);
}

int router_pools_update(router_pools_t *p, const discovery_instance_t *list, size_t n)
{
    pthread_mutex_lock(&p->mu);
    bool *keep = ls_xcalloc(p->n ? p->n : 1, sizeof(*keep));
    router_instance_t **added = ls_xcalloc(n ? n : 1, sizeof(*added));
    size_t n_added = 0;
    /* Mark kept instances by index (an address whose pool or version changed is replaced). */
    for (size_t i = 0; i < p->n; i++) {
        for (size_t j = 0; j < n; j++) {
            if (strcmp(p->inst[i]->addr, list[j].addr) == 0 &&
                strcmp(p->inst[i]->pool, list[j].pool) == 0 &&
                strcmp(p->inst[i]->version, list[j].version) == 0) {
                keep[i] = true;
                p->inst[i]->weight = list[j].weight;
                break;
            }
        }
    }
    do_remove_unkept(p, keep);
    free(keep);
    for (size_t j = 0; j < n; j++) {
        if (find_addr(p, list[j].addr))
            continue;
        router_instance_t *inst = ls_xcalloc(1, sizeof(*inst));
        inst->pool = ls_xstrdup(list[j].pool);
        inst->version = ls_xstrdup(list[j].version ? list[j].version : "");
        inst->addr = ls_xstrdup(list[j].addr);
        inst->weight = list[j].weight;
        inst->refs = 2; /* the set's, and ours until on_add has run */
        if (p->n == p->cap) {
            p->cap = p->cap ? p->cap * 2 : 8;
            router_instance_t **a = ls_xcalloc(p->cap, sizeof(*a));
            if (p->n)
                memcpy(a, p->inst, p->n * sizeof(*a));
            free(p->inst);
            p->inst = a;
        }
        p->inst[p->n++] = inst;
        added[n_added++] = inst;
    }
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < n_added; i++) {
        LS_LOG_INFO("router", "instance added pool=%s version=%s weight=%u addr=%s",
                    added[i]->pool, added[i]->version, added[i]->weight, added[i]->addr);
        if (p->hooks.on_add)
            p->hooks.on_add(p->hooks.ud, added[i]);
        router_instance_unref(p, added[i]);
    }
    free(added);
    return LS_OK;
}

void router_pools_clear(router_pools_t *p)
{
    pthread_mutex_lock(&p->mu);
    do_remove_unkept(p, NULL);
    pthread_mutex_unlock(&p->mu);
}

static uint64_t next_rand(router_pools_t *p)
{
    uint64_t x = p->rng; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p->rng = x;
    return x;
}

static bool excluded(const router_instance_t *inst, router_instance_t *const *ex, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ex[i] == inst)
            return true;
    return false;
}

static bool eligible(const router_instance_t *inst, const char *pool,
                     router_instance_t *const *ex, size_t n_ex)
{
    return inst->healthy && !inst->removed && strcmp(inst->pool, pool) == 0 &&
           !excluded(inst, ex, n_ex);
}

/* Chooses a version of pool by weight among versions with an eligible instance; returns
 * one of the instances' version strings (borrowed) or NULL when nothing is eligible. */
static const char *do_pick_version(router_pools_t *p, const char *pool,
                                   router_instance_t *const *ex, size_t n_ex)
{
    /* Distinct eligible versions; a pool has a handful, so quadratic is fine. */
    const char *versions[64];
    uint64_t weights[64];
    size_t nv = 0;
    uint64_t total = 0;
    for (size_t i = 0; i < p->n && nv < 64; i++) {
        router_instance_t *inst = p->inst[i];
        if (!eligible(inst, pool, ex, n_ex))
            continue;
        size_t v = 0;
        while (v < nv && strcmp(versions[v], inst->version) != 0)
            v++;
        if (v == nv) {
            versions[nv] = inst->version;
            weights[nv] = inst->weight;
            total += inst->weight;
            nv++;
        }
    }
    if (nv == 0)
        return NULL;
    if (nv == 1)
        return versions[0];
    if (total == 0) /* every eligible version at weight 0: share equally */
        return versions[next_rand(p) % nv];
    uint64_t r = next_rand(p) % total;
    for (size_t v = 0; v < nv; v++) {
        if (r < weights[v])
            return versions[v];
        r -= weights[v];
    }
    return versions[nv - 1];
}

int router_pools_pick(router_pools_t *p, const char *pool, const char *conversation_id,
                      router_instance_t *const *exclude, size_t n_exclude, router_pick_t *out)
{
    out->inst = NULL;
    out->affinity = false;
    pthread_mutex_lock(&p->mu);
    if (!do_known(p, pool)) {
        pthread_mutex_unlock(&p->mu);
        return LS_ERR_NOT_FOUND;
    }
    bool conv = conversation_id && *conversation_id;
    router_instance_t *chosen = NULL;
    if (conv) {
        aff_node_t *a = aff_find(p, conversation_id, hash_str(conversation_id));
        router_instance_t *prev = a ? find_addr(p, a->addr) : NULL;
        if (prev && eligible(prev, pool, exclude, n_exclude)) {
            chosen = prev;
            out->affinity = true;
        }
    }
    if (!chosen) {
        const char *version = do_pick_version(p, pool, exclude, n_exclude);
        if (version) {
            size_t start = (size_t)(p->rotate++ % (p->n ? p->n : 1));
            for (size_t k = 0; k < p->n; k++) {
                router_instance_t *inst = p->inst[(start + k) % p->n];
                if (!eligible(inst, pool, exclude, n_exclude) ||
                    strcmp(inst->version, version) != 0)
                    continue;
                if (!chosen || inst->outstanding < chosen->outstanding)
                    chosen = inst;
            }
        }
    }
    if (!chosen) {
        pthread_mutex_unlock(&p->mu);
        return LS_ERR_UNAVAILABLE;
    }
    if (conv)
        aff_set(p, conversation_id, chosen->addr);
    chosen->outstanding++;
    chosen->refs++;
    out->inst = chosen;
    pthread_mutex_unlock(&p->mu);
    return LS_OK;
}

void router_pools_release(router_pools_t *p, router_instance_t *inst)
{
    pthread_mutex_lock(&p->mu);
    LS_ASSERT(inst->outstanding > 0);
    inst->outstanding--;
    router_instance_t *dead = do_unref(inst);
    pthread_mutex_unlock(&p->mu);
    finish_free(p, dead);
}

bool router_pools_has(router_pools_t *p, const char *pool)
{
    pthread_mutex_lock(&p->mu);
    bool known = do_known(p, pool);
    pthread_mutex_unlock(&p->mu);
    return known;
}

size_t router_pools_count(router_pools_t *p, const char *pool)
{
    pthread_mutex_lock(&p->mu);
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++)
        n += strcmp(p->inst[i]->pool, pool) == 0;
    pthread_mutex_unlock(&p->mu);
    return n;
}

size_t router_pools_healthy_count(router_pools_t *p, const char *pool)
{
    pthread_mutex_lock(&p->mu);
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++)
        n += p->inst[i]->healthy && strcmp(p->inst[i]->pool, pool) == 0;
    pthread_mutex_unlock(&p->mu);
    return n;
}

bool router_pools_all_healthy(router_pools_t *p)
{
    pthread_mutex_lock(&p->mu);
    bool all = true;
    for (size_t i = 0; i < p->n && all; i++)
        all = p->inst[i]->healthy;
    pthread_mutex_unlock(&p->mu);
    return all;
}

/* Appends name to buf (len bytes, *used so far); false when it does not fit. */
static bool names_add(char *buf, size_t len, size_t *used, const char *name)
{
    int w = snprintf(buf + *used, len - *used, "%s%s", *used ? ", " : "", name);
    if (w < 0 || (size_t)w >= len - *used) {
        buf[*used] = '\0';
        return false;
    }
    *used += (size_t)w;
    return true;
}

void router_pools_names(router_pools_t *p, char *buf, size_t len)
{
    if (len == 0)
        return;
    buf[0] = '\0';
    size_t used = 0;
    pthread_mutex_lock(&p->mu);
    bool room = true;
    for (size_t i = 0; i < p->n_declared && room; i++)
        room = names_add(buf, len, &used, p->declared[i]);
    for (size_t i = 0; i < p->n && room; i++) {
        bool seen = do_declared(p, p->inst[i]->pool);
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(p->inst[j]->pool, p->inst[i]->pool) == 0;
        if (!seen)
            room = names_add(buf, len, &used, p->inst[i]->pool);
    }
    pthread_mutex_unlock(&p->mu);
}

void router_instance_set_healthy(router_pools_t *p, router_instance_t *inst, bool healthy)
{
    pthread_mutex_lock(&p->mu);
    bool changed = inst->healthy != (healthy && !inst->removed);
    inst->healthy = healthy && !inst->removed;
    pthread_mutex_unlock(&p->mu);
    if (changed)
        LS_LOG_INFO("router", "instance health pool=%s addr=%s healthy=%d", inst->pool,
                    inst->addr, (int)healthy);
}

void router_instance_ref(router_pools_t *p, router_instance_t *inst)
{
    pthread_mutex_lock(&p->mu);
    inst->refs++;
    pthread_mutex_unlock(&p->mu);
}

void router_instance_unref(router_pools_t *p, router_instance_t *inst)
{
    pthread_mutex_lock(&p->mu);
    router_instance_t *dead = do_unref(inst);
    pthread_mutex_unlock(&p->mu);
    finish_free(p, dead);
}

const char *router_instance_addr(const router_instance_t *inst)
{
    return inst->addr;
}

const char *router_instance_pool(const router_instance_t *inst)
{
    return inst->pool;
}

const char *router_instance_version(const router_instance_t *inst)
{
    return inst->version;
}

int64_t router_instance_outstanding(router_pools_t *p, const router_instance_t *inst)
{
    pthread_mutex_lock(&p->mu);
    int64_t n = inst->outstanding;
    pthread_mutex_unlock(&p->mu);
    return n;
}

bool router_instance_healthy(router_pools_t *p, const router_instance_t *inst)
{
    pthread_mutex_lock(&p->mu);
    bool h = inst->healthy;
    pthread_mutex_unlock(&p->mu);
    return h;
}

void router_instance_set_user(router_instance_t *inst, void *user)
{
    inst->user = user;
}

void *router_instance_user(const router_instance_t *inst)
{
    return inst->user;
}
