/*
 * test_idmap.c - libs/rpc/idmap.c against a plain array model.
 */
#include "rpc/idmap.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>

Test(idmap, random_operations_match_a_model)
{
    enum { KEYS = 3000 };
    static void *model[KEYS];
    rpc_idmap_t m = RPC_IDMAP_INIT;
    uint64_t x = 88172645463325252ULL;
    size_t live = 0;
    int bad_step = 0;
    for (int step = 0; step < 200000; step++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t k = 1 + x % KEYS;
        void *v = (void *)(uintptr_t)(step + 1);
        if ((x >> 40) % 3 == 0) {
            void *got = rpc_idmap_del(&m, k);
            /* Criterion asserts are slow (one message each): count, assert at the end. */
            if (got != model[k - 1] && !bad_step)
                bad_step = step + 1;
            if (model[k - 1])
                live--;
            model[k - 1] = NULL;
        } else {
            if (!model[k - 1])
                live++;
            rpc_idmap_put(&m, k, v);
            model[k - 1] = v;
        }
        uint64_t probe = 1 + (x >> 20) % KEYS;
        if ((m.count != live || rpc_idmap_get(&m, probe) != model[probe - 1]) && !bad_step)
            bad_step = step + 1;
    }
    cr_assert_eq(bad_step, 0, "map and model differ from step %d", bad_step - 1);
    size_t n;
    void **all = rpc_idmap_take_all(&m, &n);
    cr_assert_eq(n, live);
    free(all);
    cr_assert_eq(m.count, 0);
    cr_assert_null(rpc_idmap_get(&m, 1));
    cr_assert_null(rpc_idmap_take_all(&m, &n));
    rpc_idmap_free(&m);
}
