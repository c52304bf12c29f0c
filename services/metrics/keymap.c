#include "keymap.h"

#include "base/log.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct node {
    struct node *next;
    uint64_t hash;
    void *val;
    size_t len;
    unsigned char key[]; /* len bytes */
} node_t;

struct keymap {
    node_t **buckets;
    size_t n_buckets; /* a power of two */
    size_t len;
};

#define KEYMAP_MIN_BUCKETS 64

/* FNV-1a: short keys, no adversary that can see the hash (keys stay in the collector). */
static uint64_t hash_bytes(const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

keymap_t *keymap_create(void)
{
    keymap_t *m = ls_xcalloc(1, sizeof(*m));
    m->n_buckets = KEYMAP_MIN_BUCKETS;
    m->buckets = ls_xcalloc(m->n_buckets, sizeof(node_t *));
    return m;
}

void keymap_destroy(keymap_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_buckets; i++)
        for (node_t *n = m->buckets[i], *next; n; n = next) {
            next = n->next;
            free(n);
        }
    free(m->buckets);
    free(m);
}

static node_t **find(const keymap_t *m, const void *key, size_t len, uint64_t h)
{
    node_t **pp = &m->buckets[h & (m->n_buckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && (*pp)->len == len && memcmp((*pp)->key, key, len) == 0)
            return pp;
    return pp;
}

void *keymap_get(const keymap_t *m, const void *key, size_t len)
{
    node_t *n = *find(m, key, len, hash_bytes(key, len));
    return n ? n->val : NULL;
}

static void grow(keymap_t *m)
{
    size_t nb = m->n_buckets * 2;
    node_t **b = ls_xcalloc(nb, sizeof(node_t *));
    for (size_t i = 0; i < m->n_buckets; i++)
        for (node_t *n = m->buckets[i], *next; n; n = next) {
            next = n->next;
            n->next = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
        }
    free(m->buckets);
    m->buckets = b;
    m->n_buckets = nb;
}

void keymap_put(keymap_t *m, const void *key, size_t len, void *val)
{
    if (m->len >= m->n_buckets)
        grow(m);
    uint64_t h = hash_bytes(key, len);
    node_t *n = ls_xmalloc(sizeof(*n) + len);
    n->hash = h;
    n->val = val;
    n->len = len;
    memcpy(n->key, key, len);
    node_t **slot = &m->buckets[h & (m->n_buckets - 1)];
    n->next = *slot;
    *slot = n;
    m->len++;
}

void *keymap_remove(keymap_t *m, const void *key, size_t len)
{
    node_t **pp = find(m, key, len, hash_bytes(key, len));
    node_t *n = *pp;
    if (!n)
        return NULL;
    *pp = n->next;
    void *val = n->val;
    free(n);
    m->len--;
    return val;
}

size_t keymap_len(const keymap_t *m)
{
    return m->len;
}

bool keymap_next(const keymap_t *m, keymap_iter_t *it, void **val)
{
    node_t *n = it->node ? ((node_t *)it->node)->next : NULL;
    while (!n && it->bucket < m->n_buckets)
        n = m->buckets[it->bucket++];
    it->node = n;
    if (n)
        *val = n->val;
    return n != NULL;
}
