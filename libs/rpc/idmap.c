#include "rpc/idmap.h"

#include "base/log.h"

#include <stdlib.h>
#include <string.h>

static size_t slot_of(uint64_t key, size_t cap)
{
    key ^= key >> 33; /* murmur3 finaliser: ids are sequential, spread them */
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & (cap - 1);
}

static void grow(rpc_idmap_t *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    uint64_t *keys = ls_xcalloc(cap, sizeof(*keys));
    void **vals = ls_xcalloc(cap, sizeof(*vals));
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t s = slot_of(m->keys[i], cap);
        while (keys[s])
            s = (s + 1) & (cap - 1);
        keys[s] = m->keys[i];
        vals[s] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
}

void rpc_idmap_put(rpc_idmap_t *m, uint64_t key, void *val)
{
    LS_ASSERT(key != 0 && val != NULL);
    if ((m->count + 1) * 4 > m->cap * 3)
        grow(m);
    size_t s = slot_of(key, m->cap);
    while (m->keys[s] && m->keys[s] != key)
        s = (s + 1) & (m->cap - 1);
    if (!m->keys[s])
        m->count++;
    m->keys[s] = key;
    m->vals[s] = val;
}

void *rpc_idmap_get(const rpc_idmap_t *m, uint64_t key)
{
    if (!m->cap || !key)
        return NULL;
    size_t s = slot_of(key, m->cap);
    while (m->keys[s]) {
        if (m->keys[s] == key)
            return m->vals[s];
        s = (s + 1) & (m->cap - 1);
    }
    return NULL;
}

void *rpc_idmap_del(rpc_idmap_t *m, uint64_t key)
{
    if (!m->cap || !key)
        return NULL;
    size_t s = slot_of(key, m->cap);
    while (m->keys[s] && m->keys[s] != key)
        s = (s + 1) & (m->cap - 1);
    if (!m->keys[s])
        return NULL;
    void *val = m->vals[s];
    m->keys[s] = 0;
    m->vals[s] = NULL;
    m->count--;
    /* Backward shift: move later entries of the run into the hole when their home slot
     * is at or before it, so lookups never stop early. */
    size_t hole = s, j = s;
    for (;;) {
        j = (j + 1) & (m->cap - 1);
        if (!m->keys[j])
            break;
        size_t home = slot_of(m->keys[j], m->cap);
        int move = (hole <= j) ? (home <= hole || home > j) : (home <= hole && home > j);
        if (move) {
            m->keys[hole] = m->keys[j];
            m->vals[hole] = m->vals[j];
            m->keys[j] = 0;
            m->vals[j] = NULL;
            hole = j;
        }
    }
    return val;
}

void **rpc_idmap_take_all(rpc_idmap_t *m, size_t *n)
{
    *n = 0;
    if (!m->count)
        return NULL;
    void **out = ls_xcalloc(m->count, sizeof(*out));
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i]) {
            out[(*n)++] = m->vals[i];
            m->keys[i] = 0;
            m->vals[i] = NULL;
        }
    }
    m->count = 0;
    return out;
}

void rpc_idmap_free(rpc_idmap_t *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}
