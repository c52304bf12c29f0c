/*
 * pool.c - pools, instances, least-outstanding picks, affinity and version split.
 *
 * Lock rules: p->mu guards everything in the set, instances included (their counters,
 * flags and reference counts), and the waiters' queues and links.  Hooks are called with
 * p->mu released.
 *
 * Waiters: room is granted under p->mu at the moment it appears (the pick is taken for
 * the first waiter there and then), so no room is lost between a release and a waiter
 * noticing it, and no waiter polls.  Grants collected under the lock are delivered
 * through on_grant after it is released.  A queue is kept in arrival order and the
 * first waiter found by a scan at each grant: a waiter's class changes as it ages, so
 * no order kept at insertion would stay right, and queues are bounded (--queue-max).
 */
#define _GNU_SOURCE
#include "pool.h"

#include "base/err.h"
#include "base/log.h"
#include "base/clock.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct router_instance {
    char *pool, *version, *addr;
    uint64_t addr_hash;  /* of addr, for rendezvous hashing of prefix keys */
    uint32_t weight;     /* of the instance's version */
    int64_t outstanding; /* picks not yet released */
    int64_t capacity;    /* requests it holds at once; 0 = unknown, no bound */
    int refs;            /* the set's (while listed) + picks + router_instance_ref */
    bool healthy, removed;
    bool full; /* refused a request for want of room: none until its next release */
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

/* A pool's waiters, oldest first. */
struct router_wait_queue {
    char *pool;
    router_waiter_t *head, *tail;
    size_t n;
};

typedef struct {
    router_waiter_t *w;
    router_instance_t *inst; /* picked for w, or NULL: route again */
} grant_t;

typedef struct {
    grant_t *a;
    size_t n, cap;
} grants_t;

struct router_pools {
    pthread_mutex_t mu;
    struct router_wait_queue **queues; /* one per pool that ever had a waiter */
    size_t n_queues;
    router_pools_hooks_t hooks;
    router_instance_t **inst; /* listed instances */
    size_t n, cap;
    char **declared; /* pool names that exist with or without instances */
    size_t n_declared;
    uint64_t rng;
    uint64_t rotate;      /* tie-break among equally loaded instances */
    int64_t aging_us;     /* a waiter counts one class higher per period waited; 0: never */
    int64_t prefix_slack; /* outstanding beyond the least loaded a prefix's instance may have */

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

static void do_grant_all(router_pools_t *p, grants_t *g);
static void deliver(router_pools_t *p, grants_t *g);

router_pools_t *router_pools_create(uint64_t seed, size_t max_affinity,
                                    const router_pools_hooks_t *hooks)
{
    router_pools_t *p = ls_xcalloc(1, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    if (hooks)
        p->hooks = *hooks;
    p->rng = seed ? seed : 0x9e3779b97f4a7c15ULL;
    p->max_aff = max_affinity;
    p->aging_us = 1000000; /* 1 s */
    p->prefix_slack = 4;   /* requests */
    return p;
}

void router_pools_set_aging(router_pools_t *p, int64_t aging_us)
{
    pthread_mutex_lock(&p->mu);
    p->aging_us = aging_us > 0 ? aging_us : 0;
    pthread_mutex_unlock(&p->mu);
}

void router_pools_set_prefix_slack(router_pools_t *p, int64_t slack)
{
    pthread_mutex_lock(&p->mu);
    p->prefix_slack = slack > 0 ? slack : 0;
    pthread_mutex_unlock(&p->mu);
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
    for (size_t i = 0; i < p->n_queues; i++) {
        LS_ASSERT(p->queues[i]->n == 0);
        free(p->queues[i]->pool);
        free(p->queues[i]);
    }
    free(p->queues);
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
        inst->addr_hash = hash_str(inst->addr);
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
    grants_t g = {0};
    do_grant_all(p, &g); /* the waiters of a pool left with no eligible instance */
    pthread_mutex_unlock(&p->mu);
    deliver(p, &g);
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
    grants_t g = {0};
    pthread_mutex_lock(&p->mu);
    do_remove_unkept(p, NULL);
    do_grant_all(p, &g);
    pthread_mutex_unlock(&p->mu);
    deliver(p, &g);
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

static bool has_room(const router_instance_t *inst)
{
    return !inst->full && (inst->capacity == 0 || inst->outstanding < inst->capacity);
}

static bool usable(const router_instance_t *inst, const char *pool, router_instance_t *const *ex,
                   size_t n_ex)
{
    return eligible(inst, pool, ex, n_ex) && has_room(inst);
}

/* Chooses a version of pool by weight among versions with a usable instance; returns
 * one of the instances' version strings (borrowed) or NULL when nothing is usable. */
static const char *do_pick_version(router_pools_t *p, const char *pool,
                                   router_instance_t *const *ex, size_t n_ex)
{
    /* Distinct usable versions; a pool has a handful, so quadratic is fine. */
    const char *versions[64];
    uint64_t weights[64];
    size_t nv = 0;
    uint64_t total = 0;
    for (size_t i = 0; i < p->n && nv < 64; i++) {
        router_instance_t *inst = p->inst[i];
        if (!usable(inst, pool, ex, n_ex))
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
    if (total == 0) /* every usable version at weight 0: share equally */
        return versions[next_rand(p) % nv];
    uint64_t r = next_rand(p) % total;
    for (size_t v = 0; v < nv; v++) {
        if (r < weights[v])
            return versions[v];
        r -= weights[v];
    }
    return versions[nv - 1];
}

/* splitmix64's finalizer: every bit of x moves about half the bits of the result. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* The eligible instance of version that rendezvous hashing prefers for prefix key: the
 * highest mix of the key and the instance's address.  Room is not asked for, so the
 * preference does not move with load (the caller decides whether load allows it).
 * NULL when fewer than two are eligible: with one, the prefix decides nothing. */
static router_instance_t *do_prefix_preferred(router_pools_t *p, const char *pool,
                                              const char *version, uint64_t key,
                                              router_instance_t *const *ex, size_t n_ex)
{
    router_instance_t *best = NULL;
    uint64_t best_w = 0;
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++) {
        router_instance_t *inst = p->inst[i];
        if (!eligible(inst, pool, ex, n_ex) || strcmp(inst->version, version) != 0)
            continue;
        n++;
        uint64_t w = mix64(key ^ mix64(inst->addr_hash));
        if (!best || w > best_w) {
            best = inst;
            best_w = w;
        }
    }
    return n >= 2 ? best : NULL;
}

/* How a pick was decided, beyond the instance. */
typedef struct {
    bool affinity, prefix_affinity, prefix_spilled;
} choice_t;

/* The instance a pick takes (affinity, else version split, prefix affinity when prefix
 * is not 0 and load allows, and least outstanding), among the usable ones; NULL when
 * none is, with *busy set when some are eligible but lack room. */
static router_instance_t *do_choose(router_pools_t *p, const char *pool, const char *conv,
                                    uint64_t prefix, router_instance_t *const *ex, size_t n_ex,
                                    choice_t *how, bool *busy)
{
    router_instance_t *chosen = NULL;
    memset(how, 0, sizeof(*how));
    *busy = false;
    if (conv) {
        aff_node_t *a = aff_find(p, conv, hash_str(conv));
        router_instance_t *prev = a ? find_addr(p, a->addr) : NULL;
        if (prev && usable(prev, pool, ex, n_ex)) {
            chosen = prev;
            how->affinity = true;
        }
    }
    if (!chosen) {
        const char *version = do_pick_version(p, pool, ex, n_ex);
        if (version) {
            size_t start = (size_t)(p->rotate++ % (p->n ? p->n : 1));
            for (size_t k = 0; k < p->n; k++) {
                router_instance_t *inst = p->inst[(start + k) % p->n];
                if (!usable(inst, pool, ex, n_ex) || strcmp(inst->version, version) != 0)
                    continue;
                if (!chosen || inst->outstanding < chosen->outstanding)
                    chosen = inst;
            }
        }
        router_instance_t *pref =
            chosen && prefix ? do_prefix_preferred(p, pool, version, prefix, ex, n_ex) : NULL;
        if (pref && has_room(pref) && pref->outstanding <= chosen->outstanding + p->prefix_slack) {
            chosen = pref;
            how->prefix_affinity = true;
        } else if (pref) {
            how->prefix_spilled = true;
        }
    }
    if (!chosen)
        for (size_t i = 0; i < p->n && !*busy; i++)
            *busy = eligible(p->inst[i], pool, ex, n_ex);
    return chosen;
}

/* inst is picked: one outstanding more, one reference more. */
static void do_take(router_pools_t *p, router_instance_t *inst, const char *conv)
{
    if (conv)
        aff_set(p, conv, inst->addr);
    inst->outstanding++;
    inst->refs++;
}

/* ---- waiters ---------------------------------------------------------------------- */

static struct router_wait_queue *do_queue(router_pools_t *p, const char *pool, bool make)
{
    for (size_t i = 0; i < p->n_queues; i++)
        if (strcmp(p->queues[i]->pool, pool) == 0)
            return p->queues[i];
    if (!make)
        return NULL;
    struct router_wait_queue **a = ls_xcalloc(p->n_queues + 1, sizeof(*a));
    if (p->n_queues)
        memcpy(a, p->queues, p->n_queues * sizeof(*a));
    free(p->queues);
    p->queues = a;
    struct router_wait_queue *q = ls_xcalloc(1, sizeof(*q));
    q->pool = ls_xstrdup(pool);
    p->queues[p->n_queues++] = q;
    return q;
}

static void do_unlink(struct router_wait_queue *q, router_waiter_t *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->prev = w->next = NULL;
    w->queue = NULL;
    q->n--;
}

static void grants_push(grants_t *g, router_waiter_t *w, router_instance_t *inst)
{
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 8;
        grant_t *a = ls_xcalloc(g->cap, sizeof(*a));
        if (g->n)
            memcpy(a, g->a, g->n * sizeof(*a));
        free(g->a);
        g->a = a;
    }
    g->a[g->n].w = w;
    g->a[g->n].inst = inst;
    g->n++;
}

/* w's class as it counts at now: its own (1 interactive .. 3 batch; others as 2), one
 * higher per full aging period waited, never above interactive. */
static int do_class(const router_pools_t *p, const router_waiter_t *w, int64_t now)
{
    int c = w->priority >= 1 && w->priority <= 3 ? w->priority : 2;
    if (p->aging_us > 0 && now > w->since_us) {
        int64_t periods = (now - w->since_us) / p->aging_us;
        c = periods >= c - 1 ? 1 : c - (int)periods;
    }
    return c;
}

/* The waiter to serve first: the highest class at now, the earliest arrival among
 * equals (the queue is in arrival order). */
static router_waiter_t *do_first(const router_pools_t *p, const struct router_wait_queue *q,
                                 int64_t now)
{
    router_waiter_t *first = NULL;
    int first_c = 0;
    for (router_waiter_t *w = q->head; w; w = w->next) {
        int c = do_class(p, w, now);
        if (!first || c < first_c) {
            first = w;
            first_c = c;
        }
    }
    return first;
}

/* Grants the room pool has now to its first waiters; when the pool has no eligible
 * instance left, every waiter is handed back with no pick. */
static void do_grant(router_pools_t *p, const char *pool, grants_t *g)
{
    struct router_wait_queue *q = do_queue(p, pool, false);
    int64_t now = q && q->head ? ls_now_us() : 0;
    while (q && q->head) {
        bool busy;
        choice_t how;
        router_waiter_t *w = do_first(p, q, now);
        router_instance_t *inst = do_choose(p, pool, NULL, w->prefix_key, NULL, 0, &how, &busy);
        if (!inst && busy)
            break;
        do_unlink(q, w);
        if (inst)
            do_take(p, inst, NULL);
        grants_push(g, w, inst);
    }
}

static void do_grant_all(router_pools_t *p, grants_t *g)
{
    for (size_t i = 0; i < p->n_queues; i++)
        do_grant(p, p->queues[i]->pool, g);
}

/* Hands the grants over, with p->mu released. */
static void deliver(router_pools_t *p, grants_t *g)
{
    for (size_t i = 0; i < g->n; i++)
        p->hooks.on_grant(p->hooks.ud, g->a[i].w, g->a[i].inst);
    free(g->a);
}

int router_pools_pick_or_wait(router_pools_t *p, const char *pool, const char *conversation_id,
                              router_instance_t *const *exclude, size_t n_exclude,
                              router_waiter_t *w, size_t max_waiting, router_pick_t *out)
{
    memset(out, 0, sizeof(*out));
    uint64_t prefix = w ? w->prefix_key : 0;
    if (!p->hooks.on_grant)
        w = NULL; /* nobody to hand a grant to */
    grants_t g = {0};
    int rc = LS_OK;
    pthread_mutex_lock(&p->mu);
    if (!do_known(p, pool)) {
        rc = LS_ERR_NOT_FOUND;
        goto out;
    }
    const char *conv = conversation_id && *conversation_id ? conversation_id : NULL;
    /* Older waiters take any room first; while some are left a newcomer queues behind
     * them, if the pool has an eligible instance at all. */
    do_grant(p, pool, &g);
    struct router_wait_queue *q = do_queue(p, pool, false);
    bool busy = false;
    if (q && q->n) {
        for (size_t i = 0; i < p->n && !busy; i++)
            busy = eligible(p->inst[i], pool, exclude, n_exclude);
    } else {
        choice_t how;
        router_instance_t *chosen =
            do_choose(p, pool, conv, prefix, exclude, n_exclude, &how, &busy);
        out->affinity = how.affinity;
        out->prefix_affinity = how.prefix_affinity;
        out->prefix_spilled = how.prefix_spilled;
        if (chosen) {
            do_take(p, chosen, conv);
            out->inst = chosen;
            goto out;
        }
    }
    if (!busy) {
        rc = LS_ERR_UNAVAILABLE;
        goto out;
    }
    size_t waiting = q ? q->n : 0;
    if (!w || waiting >= max_waiting) {
        out->waiting = waiting;
        out->oldest_since_us = q && q->head ? q->head->since_us : 0;
        rc = LS_ERR_FULL;
        goto out;
    }
    q = do_queue(p, pool, true);
    w->queue = q;
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
    q->n++;
    out->queued = true;
out:
    pthread_mutex_unlock(&p->mu);
    deliver(p, &g);
    return rc;
}

int router_pools_pick(router_pools_t *p, const char *pool, const char *conversation_id,
                      router_instance_t *const *exclude, size_t n_exclude, router_pick_t *out)
{
    return router_pools_pick_or_wait(p, pool, conversation_id, exclude, n_exclude, NULL, 0, out);
}

bool router_pools_unwait(router_pools_t *p, router_waiter_t *w)
{
    pthread_mutex_lock(&p->mu);
    bool queued = w->queue != NULL;
    if (queued)
        do_unlink(w->queue, w);
    pthread_mutex_unlock(&p->mu);
    return queued;
}

size_t router_pools_waiting(router_pools_t *p, const char *pool)
{
    pthread_mutex_lock(&p->mu);
    struct router_wait_queue *q = do_queue(p, pool, false);
    size_t n = q ? q->n : 0;
    pthread_mutex_unlock(&p->mu);
    return n;
}

/* Ends a pick; full marks the instance without room until its next release (when
 * another pick of ours is outstanding there to bring that release).  Returns whether it
 * was marked. */
static bool release(router_pools_t *p, router_instance_t *inst, bool full)
{
    grants_t g = {0};
    pthread_mutex_lock(&p->mu);
    LS_ASSERT(inst->outstanding > 0);
    inst->outstanding--;
    inst->full = full && inst->outstanding > 0;
    bool marked = inst->full;
    do_grant(p, inst->pool, &g);
    router_instance_t *dead = do_unref(inst);
    pthread_mutex_unlock(&p->mu);
    deliver(p, &g);
    finish_free(p, dead);
    return marked;
}

void router_pools_release(router_pools_t *p, router_instance_t *inst)
{
    release(p, inst, false);
}

bool router_pools_release_full(router_pools_t *p, router_instance_t *inst)
{
    return release(p, inst, true);
}

void router_instance_set_capacity(router_pools_t *p, router_instance_t *inst, int64_t capacity)
{
    grants_t g = {0};
    pthread_mutex_lock(&p->mu);
    inst->capacity = capacity > 0 ? capacity : 0;
    do_grant(p, inst->pool, &g);
    pthread_mutex_unlock(&p->mu);
    deliver(p, &g);
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
    grants_t g = {0};
    pthread_mutex_lock(&p->mu);
    bool changed = inst->healthy != (healthy && !inst->removed);
    inst->healthy = healthy && !inst->removed;
    if (changed)
        inst->full = false; /* a new stream: what it refused on the old one is past */
    do_grant(p, inst->pool, &g);
    pthread_mutex_unlock(&p->mu);
    deliver(p, &g);
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
