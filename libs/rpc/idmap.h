/*
 * idmap.h - a hash map from nonzero 64-bit ids to pointers (open addressing, linear
 * probing, backward-shift deletion).  Not thread-safe: the owner's lock guards it.
 */
#ifndef RPC_IDMAP_H
#define RPC_IDMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t *keys; /* 0 = empty slot */
    void **vals;
    size_t cap;     /* power of two, or 0 */
    size_t count;
} rpc_idmap_t;

#define RPC_IDMAP_INIT {NULL, NULL, 0, 0}

/* Maps key (nonzero) to val (non-NULL), replacing any earlier value. */
void rpc_idmap_put(rpc_idmap_t *m, uint64_t key, void *val);

/* Returns the value for key, or NULL. */
void *rpc_idmap_get(const rpc_idmap_t *m, uint64_t key);

/* Removes key; returns its value, or NULL when it was not there. */
void *rpc_idmap_del(rpc_idmap_t *m, uint64_t key);

/* Moves every value into a new array (caller frees it with free) and empties the map;
 * *n gets the count.  Returns NULL when the map is empty. */
void **rpc_idmap_take_all(rpc_idmap_t *m, size_t *n);

/* Frees the map's memory (not the values). */
void rpc_idmap_free(rpc_idmap_t *m);

#endif
