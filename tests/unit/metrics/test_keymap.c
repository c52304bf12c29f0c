/*
 * test_keymap.c - the collector's byte-string hash map: keys with NULs, growth,
 * removal and iteration.
 */
#include "keymap.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

Test(keymap, put_get_remove_with_binary_keys)
{
    keymap_t *m = keymap_create();
    int a, b;
    keymap_put(m, "x\0y", 3, &a);
    keymap_put(m, "x\0z", 3, &b);
    cr_assert_eq(keymap_get(m, "x\0y", 3), &a);
    cr_assert_eq(keymap_get(m, "x\0z", 3), &b);
    cr_assert_null(keymap_get(m, "x", 1));
    cr_assert_eq(keymap_len(m), 2);
    cr_assert_eq(keymap_remove(m, "x\0y", 3), &a);
    cr_assert_null(keymap_remove(m, "x\0y", 3));
    cr_assert_null(keymap_get(m, "x\0y", 3));
    cr_assert_eq(keymap_len(m), 1);
    keymap_destroy(m);
    keymap_destroy(NULL);
}

Test(keymap, grows_and_iterates_every_entry_once)
{
    keymap_t *m = keymap_create();
    enum { N = 5000 };
    static uintptr_t vals[N];
    char key[32];
    for (size_t i = 0; i < N; i++) {
        vals[i] = i + 1;
        int n = snprintf(key, sizeof(key), "series-%zu", i);
        keymap_put(m, key, (size_t)n, &vals[i]);
    }
    cr_assert_eq(keymap_len(m), N);
    size_t wrong = 0;
    for (size_t i = 0; i < N; i++) {
        int n = snprintf(key, sizeof(key), "series-%zu", i);
        wrong += keymap_get(m, key, (size_t)n) != &vals[i];
    }
    cr_assert_eq(wrong, 0);
    static unsigned char seen[N];
    keymap_iter_t it = {0};
    void *v;
    size_t count = 0, twice = 0;
    while (keymap_next(m, &it, &v)) {
        size_t i = *(uintptr_t *)v - 1;
        cr_assert_lt(i, N);
        twice += seen[i];
        seen[i] = 1;
        count++;
    }
    cr_assert_eq(twice, 0);
    cr_assert_eq(count, N);
    keymap_destroy(m);
}
