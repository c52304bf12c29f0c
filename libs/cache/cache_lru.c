#define _GNU_SOURCE
/*
 * Lock rules: lru->mu guards everything in cache_lru_t; every public function takes it
 * for its whole body, and the do_ helpers expect it held.
 */
#include "cache/cache_lru.h"

#include "base/err.h"
#include "base/log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct node {
    struct node *hnext;       /* bucket chain */
    struct node *prev, *next; /* recency list: head = most recent */
    cache_digest_t key;
    uint64_t model_tag;
    int64_t expires_us;
    size_t len;
    uint8_t val[];
} node_t;

struct cache_lru {
    pthread_mutex_t mu;
    node_t **buckets;
    size_t n_buckets; /* power of two */
    size_t entries;
    size_t bytes;
    size_t max_bytes;
    uint64_t evictions;
    node_t *head, *tail;
};

size_t cache_lru_charge(size_t len)
{
    return sizeof(node_t) + len + sizeof(node_t *);
}

static size_t bucket_of(const cache_lru_t *lru, const cache_digest_t *key)
{
    uint64_t h;
    memcpy(&h, key->b, sizeof(h)); /* a SHA-256 digest is already uniform */
    return (size_t)h & (lru->n_buckets - 1);
}

cache_lru_t *cache_lru_create(size_t max_bytes)
{
    cache_lru_t *lru = ls_xcalloc(1, sizeof(*lru));
    pthread_mutex_init(&lru->mu, NULL);
    lru->max_bytes = max_bytes;
    lru->n_buckets = 1024;
    lru->buckets = ls_xcalloc(lru->n_buckets, sizeof(node_t *));
    return lru;
}

void cache_lru_destroy(cache_lru_t *lru)
{
    if (!lru)
        return;
    for (node_t *n = lru->head, *next; n; n = next) {
        next = n->next;
        free(n);
    }
    free(lru->buckets);
    pthread_mutex_destroy(&lru->mu);
    free(lru);
}

static void do_unlink(cache_lru_t *lru, node_t *n)
{
    node_t **pp = &lru->buckets[bucket_of(lru, &n->key)];
    while (*pp != n)
        pp = &(*pp)->hnext;
    *pp = n->hnext;
    if (n->prev)
        n->prev->next = n->next;
    else
        lru->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        lru->tail = n->prev;
    lru->entries--;
    lru->bytes -= cache_lru_charge(n->len);
    free(n);
}

static node_t *do_find(cache_lru_t *lru, const cache_digest_t *key)
{
    for (node_t *n = lru->buckets[bucket_of(lru, key)]; n; n = n->hnext)
        if (cache_digest_equal(&n->key, key))
            return n;
    return NULL;
}

static void do_push_front(cache_lru_t *lru, node_t *n)
{
    n->prev = NULL;
    n->next = lru->head;
    if (lru->head)
        lru->head->prev = n;
    lru->head = n;
    if (!lru->tail)
        lru->tail = n;
}

/* Doubles the bucket array when chains get long; failure just keeps the old one. */
static void do_grow(cache_lru_t *lru)
{
    size_t nb = lru->n_buckets * 2;
    node_t **b = calloc(nb, sizeof(node_t *));
    if (!b)
        return;
    free(lru->buckets);
    lru->buckets = b;
    lru->n_buckets = nb;
    for (node_t *n = lru->head; n; n = n->next) {
        size_t i = bucket_of(lru, &n->key);
        n->hnext = b[i];
        b[i] = n;
    }
}

int cache_lru_get(cache_lru_t *lru, const cache_digest_t *key, int64_t now_us, uint8_t **val,
                  size_t *len)
{
    int rc = LS_ERR_NOT_FOUND;
    pthread_mutex_lock(&lru->mu);
    node_t *n = do_find(lru, key);
    if (n && n->expires_us <= now_us) {
        do_unlink(lru, n);
        n = NULL;
    }
    if (n) {
        uint8_t *copy = malloc(n->len ? n->len : 1);
        if (!copy) {
            rc = LS_ERR_NOMEM;
        } else {
            memcpy(copy, n->val, n->len);
            *val = copy;
            *len = n->len;
            if (lru->head != n) {
                n->prev->next = n->next;
                if (n->next)
                    n->next->prev = n->prev;
                else
                    lru->tail = n->prev;
                do_push_front(lru, n);
            }
            rc = LS_OK;
        }
    }
    pthread_mutex_unlock(&lru->mu);
    return rc;
}

int cache_lru_put(cache_lru_t *lru, const cache_digest_t *key, uint64_t model_tag,
                  int64_t expires_us, const void *val, size_t len, size_t *evicted)
{
    size_t pushed_out = 0;
    if (evicted)
        *evicted = 0;
    size_t charge = cache_lru_charge(len);
    if (charge > lru->max_bytes)
        return LS_ERR_FULL;
    node_t *fresh = malloc(sizeof(node_t) + len);
    if (!fresh)
        return LS_ERR_NOMEM;
    fresh->key = *key;
    fresh->model_tag = model_tag;
    fresh->expires_us = expires_us;
    fresh->len = len;
    if (len)
        memcpy(fresh->val, val, len);

    pthread_mutex_lock(&lru->mu);
    node_t *old = do_find(lru, key);
    if (old)
        do_unlink(lru, old);
    while (lru->bytes + charge > lru->max_bytes && lru->tail) {
        do_unlink(lru, lru->tail);
        lru->evictions++;
        pushed_out++;
    }
    if (lru->entries >= lru->n_buckets * 2)
        do_grow(lru);
    size_t i = bucket_of(lru, key);
    fresh->hnext = lru->buckets[i];
    lru->buckets[i] = fresh;
    do_push_front(lru, fresh);
    lru->entries++;
    lru->bytes += charge;
    pthread_mutex_unlock(&lru->mu);
    if (evicted)
        *evicted = pushed_out;
    return LS_OK;
}

bool cache_lru_remove(cache_lru_t *lru, const cache_digest_t *key)
{
    pthread_mutex_lock(&lru->mu);
    node_t *n = do_find(lru, key);
    if (n)
        do_unlink(lru, n);
    pthread_mutex_unlock(&lru->mu);
    return n != NULL;
}

size_t cache_lru_remove_tag(cache_lru_t *lru, uint64_t model_tag)
{
    size_t removed = 0;
    pthread_mutex_lock(&lru->mu);
    for (node_t *n = lru->head, *next; n; n = next) {
        next = n->next;
        if (n->model_tag == model_tag) {
            do_unlink(lru, n);
            removed++;
        }
    }
    pthread_mutex_unlock(&lru->mu);
    return removed;
}

void cache_lru_stats(cache_lru_t *lru, cache_lru_stats_t *out)
{
    pthread_mutex_lock(&lru->mu);
    out->entries = lru->entries;
    out->bytes = lru->bytes;
    out->max_bytes = lru->max_bytes;
    out->evictions = lru->evictions;
    pthread_mutex_unlock(&lru->mu);
}
