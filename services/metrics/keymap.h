/*
 * keymap.h - a hash map from byte-string keys to pointers, growing as it fills: the
 * collector's index of metric families, series and instances.
 *
 * Not thread-safe: the store's lock guards every map it owns.
 */
#ifndef METRICS_KEYMAP_H
#define METRICS_KEYMAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct keymap keymap_t;

/* Creates an empty map.  Aborts on out-of-memory (a control structure). */
keymap_t *keymap_create(void);

/* Frees the map and its copies of the keys, not the values.  NULL is a no-op. */
void keymap_destroy(keymap_t *m);

/* The value stored under key[0..len), or NULL. */
void *keymap_get(const keymap_t *m, const void *key, size_t len);

/* Stores val under a copy of key[0..len); the key must not be present yet. */
void keymap_put(keymap_t *m, const void *key, size_t len, void *val);

/* Removes key and returns its value, or NULL when it was not present. */
void *keymap_remove(keymap_t *m, const void *key, size_t len);

/* Entries stored. */
size_t keymap_len(const keymap_t *m);

/* Iteration in no particular order; the map must not change meanwhile.
 *   keymap_iter_t it = {0}; void *v; while (keymap_next(m, &it, &v)) ... */
typedef struct {
    size_t bucket;
    void *node;
} keymap_iter_t;
bool keymap_next(const keymap_t *m, keymap_iter_t *it, void **val);

#endif
