/* test_sha256.c - libs/cache/cache_sha256.c against FIPS 180-4 test vectors. */
#include "cache/cache_key.h"
#include "cache/cache_sha256.h"

#include <criterion/criterion.h>
#include <string.h>

static void hex_of(const char *msg, size_t len, size_t chunk, char out[65])
{
    cache_sha256_t c;
    cache_digest_t d;
    cache_sha256_init(&c);
    for (size_t off = 0; off < len; off += chunk)
        cache_sha256_update(&c, msg + off, len - off < chunk ? len - off : chunk);
    cache_sha256_final(&c, d.b);
    cache_digest_hex(&d, out);
}

Test(sha256, known_vectors_in_any_chunking)
{
    static const struct {
        const char *msg, *hex;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklm"
         "nopqrlmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        for (size_t chunk = 1; chunk <= 130; chunk += 7) {
            char hex[65];
            hex_of(v[i].msg, strlen(v[i].msg), chunk, hex);
            cr_assert_str_eq(hex, v[i].hex, "vector %zu chunk %zu", i, chunk);
        }
    }
}

Test(sha256, million_a)
{
    static char buf[1000];
    memset(buf, 'a', sizeof(buf));
    cache_sha256_t c;
    cache_digest_t d;
    cache_sha256_init(&c);
    for (int i = 0; i < 1000; i++)
        cache_sha256_update(&c, buf, sizeof(buf));
    cache_sha256_final(&c, d.b);
    char hex[65];
    cache_digest_hex(&d, hex);
    cr_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
