/*
 * test_answer.c - services/router/answer.c: the text, ids and piece lengths recorded for
 * the cache store, and the cap past which nothing is recorded.
 */
#include "answer.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

Test(answer, records_text_ids_and_piece_lengths)
{
    router_answer_t a;
    router_answer_init(&a, ROUTER_ANSWER_MAX_BYTES);
    cr_assert_null(a.text, "nothing recorded yet");
    const char *pieces[] = {"Once", " upon", "", " a", " tímé", " ✓"};
    for (int i = 0; i < 6; i++)
        router_answer_append(&a, pieces[i], 100 + i);
    cr_assert_not(a.too_big);
    cr_assert_str_eq(a.text, "Once upon a tímé ✓");
    cr_assert_eq(a.len, strlen("Once upon a tímé ✓"));
    cr_assert_eq(a.n_tokens, 6);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(a.ids[i], 100 + i);
        cr_assert_eq(a.pieces[i], strlen(pieces[i]), "piece %d", i);
    }
    router_answer_free(&a);
    cr_assert_null(a.text);
    router_answer_free(&a); /* twice is harmless */
}

Test(answer, grows_past_its_first_allocations)
{
    router_answer_t a;
    router_answer_init(&a, ROUTER_ANSWER_MAX_BYTES);
    char piece[16];
    size_t want = 0;
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(piece, sizeof(piece), "%d,", i);
        want += (size_t)n;
        router_answer_append(&a, piece, i);
    }
    cr_assert_not(a.too_big);
    cr_assert_eq(a.n_tokens, 5000);
    cr_assert_eq(a.len, want);
    cr_assert_eq(strlen(a.text), want);
    cr_assert_eq(strncmp(a.text, "0,1,2,", 6), 0);
    cr_assert_eq(a.ids[4999], 4999);
    cr_assert_eq(a.pieces[4999], 5);
    router_answer_free(&a);
}

Test(answer, stops_recording_past_the_cap)
{
    router_answer_t a;
    router_answer_init(&a, 10); /* 9 bytes of text and the NUL */
    router_answer_append(&a, "abcd", 1);
    router_answer_append(&a, "efgh", 2);
    router_answer_append(&a, "i", 3); /* 9 bytes: exactly at the cap */
    cr_assert_not(a.too_big);
    cr_assert_str_eq(a.text, "abcdefghi");
    cr_assert_eq(a.n_tokens, 3);
    router_answer_append(&a, "", 4); /* an empty piece still fits */
    cr_assert_not(a.too_big);
    cr_assert_eq(a.n_tokens, 4);
    router_answer_append(&a, "j", 5); /* 10 bytes: over */
    cr_assert(a.too_big);
    cr_assert_null(a.text, "the recording is dropped");
    cr_assert_eq(a.n_tokens, 0);
    cr_assert_eq(a.len, 0);
    router_answer_append(&a, "", 6); /* and stays dropped, even for what would fit */
    cr_assert(a.too_big);
    cr_assert_eq(a.n_tokens, 0);
    router_answer_free(&a);
    cr_assert(a.too_big, "free keeps the verdict");
}

Test(answer, one_piece_over_the_cap_is_too_big_at_once)
{
    router_answer_t a;
    router_answer_init(&a, 4);
    router_answer_append(&a, "abcd", 1);
    cr_assert(a.too_big);
    cr_assert_null(a.text);
    router_answer_free(&a);
}
