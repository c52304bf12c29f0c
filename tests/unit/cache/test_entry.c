/* test_entry.c - libs/cache/cache_entry.c: round trip and hostile bytes. */
#include "base/err.h"
#include "cache/cache_entry.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static uint8_t *encode_sample(size_t *len)
{
    int32_t ids[] = {1, 0, 2147483647, 42};
    uint8_t tok[16];
    cache_entry_set_tokens(tok, ids, 4);
    cache_entry_t e = {0};
    memset(e.key.b, 0xab, sizeof(e.key.b));
    e.expires_wall_s = 4102444800; /* 2100-01-01 */
    e.finish_reason = 3;
    e.prompt_tokens = 9;
    e.completion_tokens = 4;
    e.text = "Paris.";
    e.text_len = 6;
    e.model_version = "v2";
    e.model_version_len = 2;
    e.token_bytes = tok;
    e.n_tokens = 4;
    uint32_t lens[] = {1, 3, 0, 2}; /* "P" "ari" "" "s." */
    uint8_t pieces[16];
    cache_entry_set_pieces(pieces, lens, 4);
    e.piece_bytes = pieces;
    e.n_pieces = 4;
    uint8_t *buf;
    cr_assert_eq(cache_entry_encode(&e, &buf, len), LS_OK);
    cr_assert_eq(*len, cache_entry_encoded_size(&e));
    return buf;
}

Test(entry, round_trip)
{
    size_t len;
    uint8_t *buf = encode_sample(&len);
    cache_entry_t d;
    cr_assert_eq(cache_entry_decode(buf, len, &d), LS_OK);
    cr_assert_eq(d.key.b[0], 0xab);
    cr_assert_eq(d.expires_wall_s, 4102444800);
    cr_assert_eq(d.finish_reason, 3);
    cr_assert_eq(d.prompt_tokens, 9);
    cr_assert_eq(d.completion_tokens, 4);
    cr_assert_eq(d.text_len, 6);
    cr_assert_eq(memcmp(d.text, "Paris.", 6), 0);
    cr_assert_eq(d.model_version_len, 2);
    cr_assert_eq(d.n_tokens, 4);
    cr_assert_eq(cache_entry_token(&d, 0), 1);
    cr_assert_eq(cache_entry_token(&d, 2), 2147483647);
    cr_assert_eq(cache_entry_token(&d, 3), 42);
    cr_assert_eq(d.n_pieces, 4);
    cr_assert_eq(cache_entry_piece(&d, 0), 1);
    cr_assert_eq(cache_entry_piece(&d, 1), 3);
    cr_assert_eq(cache_entry_piece(&d, 2), 0);
    cr_assert_eq(cache_entry_piece(&d, 3), 2);
    free(buf);
}

Test(entry, a_first_format_entry_decodes_without_pieces)
{
    /* "LSC1" is the same layout ending after the token ids. */
    size_t len;
    uint8_t *buf = encode_sample(&len);
    size_t v1_len = len - 4 - 4 * 4;
    uint8_t *v1 = malloc(v1_len);
    memcpy(v1, buf, v1_len);
    memcpy(v1, "LSC1", 4);
    cache_entry_t d;
    cr_assert_eq(cache_entry_decode(v1, v1_len, &d), LS_OK);
    cr_assert_eq(d.n_tokens, 4);
    cr_assert_eq(cache_entry_token(&d, 3), 42);
    cr_assert_eq(d.n_pieces, 0);
    cr_assert_eq(memcmp(d.text, "Paris.", 6), 0);
    cr_assert_eq(cache_entry_decode(v1, v1_len - 1, &d), LS_ERR_FORMAT);
    memcpy(v1, "LSC2", 4); /* the new magic needs the piece count */
    cr_assert_eq(cache_entry_decode(v1, v1_len, &d), LS_ERR_FORMAT);
    free(v1);
    free(buf);
}

Test(entry, pieces_must_cut_the_text_into_whole_characters)
{
    const char *t = "h\xc3\xa9!"; /* h, e-acute (2 bytes), ! */
    uint32_t ok[] = {1, 2, 1};
    cr_assert(cache_pieces_valid(t, 4, ok, 3));
    uint32_t with_empty[] = {0, 1, 0, 2, 1};
    cr_assert(cache_pieces_valid(t, 4, with_empty, 5));
    uint32_t split[] = {2, 2}; /* cuts the e-acute in two */
    cr_assert_not(cache_pieces_valid(t, 4, split, 2));
    uint32_t short_sum[] = {1, 2};
    cr_assert_not(cache_pieces_valid(t, 4, short_sum, 2));
    uint32_t long_sum[] = {1, 2, 2};
    cr_assert_not(cache_pieces_valid(t, 4, long_sum, 3));
    uint32_t huge[] = {1, 0xffffffffu};
    cr_assert_not(cache_pieces_valid(t, 4, huge, 2));
    cr_assert(cache_pieces_valid("", 0, NULL, 0));
}

Test(entry, every_truncation_and_extension_is_refused)
{
    size_t len;
    uint8_t *buf = encode_sample(&len);
    cache_entry_t d;
    for (size_t n = 0; n < len; n++) {
        uint8_t *cut = malloc(n ? n : 1); /* exact size: ASan sees any over-read */
        memcpy(cut, buf, n);
        cr_assert_eq(cache_entry_decode(cut, n, &d), LS_ERR_FORMAT, "length %zu", n);
        free(cut);
    }
    uint8_t *longer = malloc(len + 3);
    memcpy(longer, buf, len);
    cr_assert_eq(cache_entry_decode(longer, len + 3, &d), LS_ERR_FORMAT);
    free(longer);
    buf[0] = 'X';
    cr_assert_eq(cache_entry_decode(buf, len, &d), LS_ERR_FORMAT);
    free(buf);
    cr_assert_eq(cache_entry_decode(NULL, 0, &d), LS_ERR_FORMAT);
}

Test(entry, lying_lengths_never_read_past_the_buffer)
{
    size_t len;
    uint8_t *buf = encode_sample(&len);
    cache_entry_t d;
    size_t text_len_at = 4 + 32 + 8 + 12;
    for (int b = 0; b < 4; b++) {
        uint8_t *copy = malloc(len);
        memcpy(copy, buf, len);
        copy[text_len_at + (size_t)b] = 0xff;
        cr_assert_eq(cache_entry_decode(copy, len, &d), LS_ERR_FORMAT);
        free(copy);
    }
    srand(7);
    for (int round = 0; round < 2000; round++) {
        uint8_t *copy = malloc(len);
        memcpy(copy, buf, len);
        copy[4 + 32 + (size_t)rand() % (len - 36)] = (uint8_t)rand();
        (void)cache_entry_decode(copy, len, &d); /* any answer, but no out-of-bounds read */
        free(copy);
    }
    free(buf);
}
