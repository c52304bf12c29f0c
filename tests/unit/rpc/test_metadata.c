/*
 * test_metadata.c - rpc_md_t and its conversion to and from gRPC arrays
 * (libs/rpc/metadata.c).
 */
#include "base/err.h"
#include "rpc/metadata.h"

#include <criterion/criterion.h>
#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <stdio.h>
#include <string.h>

static void setup(void)
{
    grpc_init();
}

static void teardown(void)
{
    grpc_shutdown();
}

TestSuite(metadata, .init = setup, .fini = teardown);

static bool slice_eq(grpc_slice s, const void *data, size_t len)
{
    return GRPC_SLICE_LENGTH(s) == len &&
           (len == 0 || memcmp(GRPC_SLICE_START_PTR(s), data, len) == 0);
}

/* ---- add, get, clear ------------------------------------------------------------ */

Test(metadata, add_then_get)
{
    rpc_md_t md = RPC_MD_INIT;
    cr_assert_eq(rpc_md_add(&md, "x-one", "1"), LS_OK);
    cr_assert_eq(rpc_md_add(&md, "x-two", "second"), LS_OK);
    cr_assert_eq(md.count, 2);

    size_t len = 0;
    const char *v = rpc_md_get(&md, "x-one", &len);
    cr_assert_not_null(v);
    cr_assert_str_eq(v, "1");
    cr_assert_eq(len, 1);
    v = rpc_md_get(&md, "x-two", &len);
    cr_assert_not_null(v);
    cr_assert_str_eq(v, "second");
    cr_assert_eq(len, 6);
    cr_assert_str_eq(rpc_md_get(&md, "x-two", NULL), "second");
    rpc_md_clear(&md);
}

Test(metadata, add_copies_key_and_value)
{
    rpc_md_t md = RPC_MD_INIT;
    char key[] = "x-key";
    char value[] = "value";
    cr_assert_eq(rpc_md_add(&md, key, value), LS_OK);
    key[0] = 'y';
    value[0] = 'V';
    cr_assert_str_eq(rpc_md_get(&md, "x-key", NULL), "value");
    cr_assert_null(rpc_md_get(&md, "y-key", NULL));
    cr_assert_neq(rpc_md_get(&md, "x-key", NULL), value);
    rpc_md_clear(&md);
}

Test(metadata, get_of_missing_key_is_null)
{
    rpc_md_t md = RPC_MD_INIT;
    cr_assert_null(rpc_md_get(&md, "absent", NULL));
    cr_assert_eq(rpc_md_add(&md, "present", "v"), LS_OK);
    size_t len = 12345;
    cr_assert_null(rpc_md_get(&md, "absent", &len));
    cr_assert_null(rpc_md_get(&md, "presen", NULL), "prefix must not match");
    cr_assert_null(rpc_md_get(&md, "present-not", NULL), "longer key must not match");
    rpc_md_clear(&md);
}

Test(metadata, clear_empties_and_allows_reuse)
{
    rpc_md_t md = RPC_MD_INIT;
    cr_assert_eq(rpc_md_add(&md, "a", "1"), LS_OK);
    cr_assert_eq(rpc_md_add(&md, "b", "2"), LS_OK);
    rpc_md_clear(&md);
    cr_assert_eq(md.count, 0);
    cr_assert_eq(md.cap, 0);
    cr_assert_null(md.items);
    cr_assert_null(rpc_md_get(&md, "a", NULL));

    cr_assert_eq(rpc_md_add(&md, "c", "3"), LS_OK);
    cr_assert_eq(md.count, 1);
    cr_assert_str_eq(rpc_md_get(&md, "c", NULL), "3");
    rpc_md_clear(&md);
    rpc_md_clear(&md); /* clearing an empty list is harmless */
    cr_assert_eq(md.count, 0);
}

Test(metadata, many_entries_grow_and_stay_retrievable)
{
    rpc_md_t md = RPC_MD_INIT;
    char key[32], value[32];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(value, sizeof(value), "v%d", i * 7);
        cr_assert_eq(rpc_md_add(&md, key, value), LS_OK, "entry %d", i);
    }
    cr_assert_eq(md.count, 200);
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(value, sizeof(value), "v%d", i * 7);
        const char *v = rpc_md_get(&md, key, NULL);
        cr_assert_not_null(v, "%s missing", key);
        cr_assert_str_eq(v, value);
    }
    rpc_md_clear(&md);
}

Test(metadata, first_value_wins_for_duplicate_keys)
{
    rpc_md_t md = RPC_MD_INIT;
    cr_assert_eq(rpc_md_add(&md, "dup", "first"), LS_OK);
    cr_assert_eq(rpc_md_add(&md, "other", "x"), LS_OK);
    cr_assert_eq(rpc_md_add(&md, "dup", "second"), LS_OK);
    cr_assert_eq(md.count, 3, "duplicates are kept, not replaced");
    size_t len = 0;
    cr_assert_str_eq(rpc_md_get(&md, "dup", &len), "first");
    cr_assert_eq(len, 5);
    rpc_md_clear(&md);
}

Test(metadata, null_value_is_empty)
{
    rpc_md_t md = RPC_MD_INIT;
    cr_assert_eq(rpc_md_add(&md, "empty", NULL), LS_OK);
    cr_assert_eq(rpc_md_add(&md, "empty2", ""), LS_OK);
    size_t len = 99;
    const char *v = rpc_md_get(&md, "empty", &len);
    cr_assert_not_null(v);
    cr_assert_str_eq(v, "");
    cr_assert_eq(len, 0);
    len = 99;
    cr_assert_str_eq(rpc_md_get(&md, "empty2", &len), "");
    cr_assert_eq(len, 0);
    rpc_md_clear(&md);
}

Test(metadata, binary_value_keeps_length_and_nul_bytes)
{
    rpc_md_t md = RPC_MD_INIT;
    static const unsigned char bin[] = {'a', 0, 'b', 0, 0xff, 0x80, 0};
    cr_assert_eq(rpc_md_add_bytes(&md, "x-trace-bin", bin, sizeof(bin)), LS_OK);
    size_t len = 0;
    const char *v = rpc_md_get(&md, "x-trace-bin", &len);
    cr_assert_not_null(v);
    cr_assert_eq(len, sizeof(bin));
    cr_assert_arr_eq(v, bin, sizeof(bin));
    cr_assert_eq(v[len], '\0', "value must also be NUL-terminated");
    rpc_md_clear(&md);
}

Test(metadata, add_bytes_with_zero_length)
{
    rpc_md_t md = RPC_MD_INIT;
    cr_assert_eq(rpc_md_add_bytes(&md, "z-bin", NULL, 0), LS_OK);
    size_t len = 99;
    const char *v = rpc_md_get(&md, "z-bin", &len);
    cr_assert_not_null(v);
    cr_assert_eq(len, 0);
    cr_assert_eq(v[0], '\0');
    rpc_md_clear(&md);
}

/* ---- keys ----------------------------------------------------------------------- */

Test(metadata, valid_keys_are_accepted)
{
    const char *good[] = {"a",       "abc",  "x-request-id", "trace_id",   "v1.2",     "0123456789",
                          "key-bin", "grpc", "grpcfoo",      "x-grpc-foo", "-leading", "a.b-c_d.9"};
    rpc_md_t md = RPC_MD_INIT;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        cr_assert_eq(rpc_md_add(&md, good[i], "v"), LS_OK, "rejected \"%s\"", good[i]);
        cr_assert_not_null(rpc_md_get(&md, good[i], NULL), "\"%s\" not stored", good[i]);
    }
    cr_assert_eq(md.count, sizeof(good) / sizeof(good[0]));
    rpc_md_clear(&md);
}

Test(metadata, invalid_keys_are_rejected_and_nothing_is_added)
{
    const char *bad[] = {"",           "Abc",      "ABC",      "x-Request-Id", ":path",
                         ":authority", "grpc-foo", "grpc-",    "grpc-timeout", "a b",
                         "a/b",        "a:b",      "tab\tkey", "caf\xc3\xa9",  "key\n",
                         "a,b",        "a=b",      "a+b"};
    rpc_md_t md = RPC_MD_INIT;
    cr_assert_eq(rpc_md_add(&md, "keep", "v"), LS_OK);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(rpc_md_add(&md, bad[i], "v"), LS_ERR_INVALID, "accepted \"%s\"", bad[i]);
        cr_assert_eq(rpc_md_add_bytes(&md, bad[i], "v", 1), LS_ERR_INVALID, "accepted \"%s\"",
                     bad[i]);
        cr_assert_eq(md.count, 1, "\"%s\" changed the list", bad[i]);
    }
    cr_assert_eq(rpc_md_add(&md, NULL, "v"), LS_ERR_INVALID);
    cr_assert_eq(md.count, 1);
    cr_assert_str_eq(rpc_md_get(&md, "keep", NULL), "v");
    rpc_md_clear(&md);
}

/* ---- gRPC conversion ------------------------------------------------------------ */

Test(metadata, to_grpc_of_empty_is_null)
{
    rpc_md_t md = RPC_MD_INIT;
    size_t count = 99;
    cr_assert_null(rpc__md_to_grpc(&md, &count));
    cr_assert_eq(count, 0);
    count = 99;
    cr_assert_null(rpc__md_to_grpc(NULL, &count));
    cr_assert_eq(count, 0);
}

Test(metadata, to_grpc_views_every_entry_in_order)
{
    rpc_md_t md = RPC_MD_INIT;
    static const unsigned char bin[] = {0, 1, 0, 2};
    cr_assert_eq(rpc_md_add(&md, "x-a", "alpha"), LS_OK);
    cr_assert_eq(rpc_md_add_bytes(&md, "x-b-bin", bin, sizeof(bin)), LS_OK);
    cr_assert_eq(rpc_md_add(&md, "x-a", "again"), LS_OK);

    size_t count = 0;
    grpc_metadata *arr = rpc__md_to_grpc(&md, &count);
    cr_assert_not_null(arr);
    cr_assert_eq(count, 3);
    cr_assert(slice_eq(arr[0].key, "x-a", 3));
    cr_assert(slice_eq(arr[0].value, "alpha", 5));
    cr_assert(slice_eq(arr[1].key, "x-b-bin", 7));
    cr_assert(slice_eq(arr[1].value, bin, sizeof(bin)), "binary value length %zu",
              (size_t)GRPC_SLICE_LENGTH(arr[1].value));
    cr_assert(slice_eq(arr[2].key, "x-a", 3));
    cr_assert(slice_eq(arr[2].value, "again", 5));
    /* Views, not copies: the slices point at md's own bytes. */
    for (size_t i = 0; i < count; i++) {
        cr_assert_eq((const void *)GRPC_SLICE_START_PTR(arr[i].key), (void *)md.items[i].key);
        cr_assert_eq((const void *)GRPC_SLICE_START_PTR(arr[i].value), (void *)md.items[i].value);
    }
    gpr_free(arr);
    rpc_md_clear(&md);
}

Test(metadata, round_trip_through_grpc)
{
    rpc_md_t md = RPC_MD_INIT;
    static const unsigned char bin[] = {'z', 0, 0, 0xfe, 'q'};
    cr_assert_eq(rpc_md_add(&md, "traceparent", "00-abc-def-01"), LS_OK);
    cr_assert_eq(rpc_md_add_bytes(&md, "x-blob-bin", bin, sizeof(bin)), LS_OK);
    cr_assert_eq(rpc_md_add(&md, "x-empty", ""), LS_OK);
    cr_assert_eq(rpc_md_add(&md, "traceparent", "second"), LS_OK);

    size_t count = 0;
    grpc_metadata *arr = rpc__md_to_grpc(&md, &count);
    cr_assert_not_null(arr);
    grpc_metadata_array ga = {.count = count, .capacity = count, .metadata = arr};

    rpc_md_t back = RPC_MD_INIT;
    rpc__md_from_grpc(&back, &ga);
    gpr_free(arr);

    cr_assert_eq(back.count, md.count);
    for (size_t i = 0; i < md.count; i++) {
        cr_assert_str_eq(back.items[i].key, md.items[i].key, "entry %zu", i);
        cr_assert_eq(back.items[i].value_len, md.items[i].value_len, "entry %zu", i);
        cr_assert_arr_eq(back.items[i].value, md.items[i].value, md.items[i].value_len + 1,
                         "entry %zu", i);
        cr_assert_neq(back.items[i].value, md.items[i].value, "entry %zu is not a copy", i);
    }
    size_t len = 0;
    const char *v = rpc_md_get(&back, "x-blob-bin", &len);
    cr_assert_eq(len, sizeof(bin));
    cr_assert_arr_eq(v, bin, sizeof(bin));
    cr_assert_str_eq(rpc_md_get(&back, "traceparent", NULL), "00-abc-def-01");
    rpc_md_clear(&md);
    rpc_md_clear(&back);
}

Test(metadata, from_grpc_copies_and_appends)
{
    grpc_metadata_array ga;
    grpc_metadata_array_init(&ga);
    grpc_metadata m[2];
    static const char bin[] = {'b', 0, 'c'};
    m[0].key = grpc_slice_from_copied_string("x-from");
    m[0].value = grpc_slice_from_copied_string("grpc-side");
    m[1].key = grpc_slice_from_copied_string("x-bin");
    m[1].value = grpc_slice_from_copied_buffer(bin, sizeof(bin));
    ga.metadata = m;
    ga.count = ga.capacity = 2;

    rpc_md_t md = RPC_MD_INIT;
    cr_assert_eq(rpc_md_add(&md, "x-existing", "kept"), LS_OK);
    rpc__md_from_grpc(&md, &ga);

    /* md owns copies: the slices can go away. */
    for (int i = 0; i < 2; i++) {
        grpc_slice_unref(m[i].key);
        grpc_slice_unref(m[i].value);
    }

    cr_assert_eq(md.count, 3);
    cr_assert_str_eq(rpc_md_get(&md, "x-existing", NULL), "kept");
    size_t len = 0;
    cr_assert_str_eq(rpc_md_get(&md, "x-from", &len), "grpc-side");
    cr_assert_eq(len, 9);
    const char *v = rpc_md_get(&md, "x-bin", &len);
    cr_assert_not_null(v);
    cr_assert_eq(len, sizeof(bin));
    cr_assert_arr_eq(v, bin, sizeof(bin));
    cr_assert_eq(v[len], '\0');
    rpc_md_clear(&md);
}

Test(metadata, from_grpc_of_empty_array_adds_nothing)
{
    grpc_metadata_array ga;
    grpc_metadata_array_init(&ga);
    rpc_md_t md = RPC_MD_INIT;
    rpc__md_from_grpc(&md, &ga);
    cr_assert_eq(md.count, 0);
    grpc_metadata_array_destroy(&ga);
    rpc_md_clear(&md);
}
