#define _GNU_SOURCE
/*
 * Lock rules: g->mu guards the table; every public function holds it for its body.
 * The table is a flat array searched linearly: deployments have a handful of models,
 * and max_models bounds the walk when a client sends many names.
 */
#include "cache/cache_gen.h"

#include "base/log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *model;
    uint64_t gen;
    int64_t refreshed_us; /* last read from memcached; INT64_MIN = never */
    bool dirty;           /* gen must be written to memcached */
} entry_t;

struct cache_gen {
    pthread_mutex_t mu;
    entry_t *e;
    size_t n, max;
};

cache_gen_t *cache_gen_create(size_t max_models)
{
    cache_gen_t *g = ls_xcalloc(1, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
    g->max = max_models ? max_models : 1;
    g->e = ls_xcalloc(g->max, sizeof(entry_t));
    return g;
}

void cache_gen_destroy(cache_gen_t *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++)
        free(g->e[i].model);
    free(g->e);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static entry_t *do_find(cache_gen_t *g, const char *model)
{
    for (size_t i = 0; i < g->n; i++)
        if (strcmp(g->e[i].model, model) == 0)
            return &g->e[i];
    return NULL;
}

static entry_t *do_find_or_add(cache_gen_t *g, const char *model)
{
    entry_t *e = do_find(g, model);
    if (e)
        return e;
    if (g->n == g->max) {
        size_t victim = g->n;
        for (size_t i = 0; i < g->n; i++)
            if (!g->e[i].dirty &&
                (victim == g->n || g->e[i].refreshed_us < g->e[victim].refreshed_us))
                victim = i;
        if (victim == g->n)
            victim = 0; /* all dirty: the oldest slot goes; its bump is lost locally only */
        free(g->e[victim].model);
        g->e[victim] = g->e[--g->n];
    }
    e = &g->e[g->n++];
    e->model = ls_xstrdup(model);
    e->gen = 0;
    e->refreshed_us = INT64_MIN;
    e->dirty = false;
    return e;
}

cache_gen_state_t cache_gen_get(cache_gen_t *g, const char *model, int64_t now_us,
                                int64_t max_age_us, uint64_t *gen)
{
    cache_gen_state_t st = CACHE_GEN_UNKNOWN;
    *gen = 0;
    pthread_mutex_lock(&g->mu);
    entry_t *e = do_find(g, model);
    if (e && (e->refreshed_us != INT64_MIN || e->dirty)) {
        *gen = e->gen;
        st = e->refreshed_us != INT64_MIN && now_us - e->refreshed_us < max_age_us
                 ? CACHE_GEN_FRESH
                 : CACHE_GEN_STALE;
    }
    pthread_mutex_unlock(&g->mu);
    return st;
}

uint64_t cache_gen_merge(cache_gen_t *g, const char *model, uint64_t remote, int64_t now_us,
                         bool *write_back)
{
    pthread_mutex_lock(&g->mu);
    entry_t *e = do_find_or_add(g, model);
    if (remote >= e->gen) {
        e->gen = remote;
        e->dirty = false;
    } else {
        e->dirty = true;
    }
    e->refreshed_us = now_us;
    *write_back = e->dirty;
    uint64_t gen = e->gen;
    pthread_mutex_unlock(&g->mu);
    return gen;
}

uint64_t cache_gen_bump(cache_gen_t *g, const char *model, uint64_t floor, int64_t now_us)
{
    pthread_mutex_lock(&g->mu);
    entry_t *e = do_find_or_add(g, model);
    uint64_t next = e->gen + 1 > floor ? e->gen + 1 : floor;
    e->gen = next;
    e->dirty = true;
    e->refreshed_us = now_us;
    pthread_mutex_unlock(&g->mu);
    return next;
}

void cache_gen_written(cache_gen_t *g, const char *model, uint64_t gen)
{
    pthread_mutex_lock(&g->mu);
    entry_t *e = do_find(g, model);
    if (e && e->gen == gen)
        e->dirty = false;
    pthread_mutex_unlock(&g->mu);
}

bool cache_gen_pending(cache_gen_t *g)
{
    bool any = false;
    pthread_mutex_lock(&g->mu);
    for (size_t i = 0; i < g->n && !any; i++)
        any = g->e[i].dirty;
    pthread_mutex_unlock(&g->mu);
    return any;
}

bool cache_gen_next_pending(cache_gen_t *g, char *buf, size_t len)
{
    bool found = false;
    pthread_mutex_lock(&g->mu);
    for (size_t i = 0; i < g->n; i++) {
        if (g->e[i].dirty && strlen(g->e[i].model) < len) {
            memcpy(buf, g->e[i].model, strlen(g->e[i].model) + 1);
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&g->mu);
    return found;
}
