/*
 * test_replay.c - services/router/replay.c: a cached answer back into token events, per
 * token or in runs, with the right texts, ids and indexes.
 */
#include "base/err.h"
#include "base/utf8.h"
#include "replay.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char text[256];
    int32_t id;
    uint32_t index;
} seen_t;

static seen_t seen[64];
static int n_seen;

static void collect(void *ud, Llmserve__V1__GenerateEvent *ev)
{
    cr_assert_eq(ud, (void *)seen);
    cr_assert_eq(ev->kind_case, LLMSERVE__V1__GENERATE_EVENT__KIND_TOKEN);
    cr_assert(ev->token->cache_hit);
    cr_assert_lt(n_seen, 64);
    cr_assert_lt(strlen(ev->token->text), sizeof(seen[0].text));
    strcpy(seen[n_seen].text, ev->token->text);
    seen[n_seen].id = ev->token->id;
    seen[n_seen].index = ev->token->index;
    n_seen++;
}

/* A hit of text cut into pieces (NULL-terminated list; none = lengths not kept), with ids
 * when with_ids. */
static Llmserve__V1__CacheLookupResult make_hit(const char *const *pieces, bool with_ids,
                                                char *text, uint32_t *lens, int32_t *ids)
{
    Llmserve__V1__CacheLookupResult h = LLMSERVE__V1__CACHE_LOOKUP_RESULT__INIT;
    text[0] = '\0';
    size_t n = 0;
    for (; pieces[n]; n++) {
        strcat(text, pieces[n]);
        lens[n] = (uint32_t)strlen(pieces[n]);
        ids[n] = 1000 + (int32_t)n;
    }
    h.hit = true;
    h.text = text;
    h.n_token_text_bytes = n;
    h.token_text_bytes = lens;
    h.n_token_ids = with_ids ? n : 0;
    h.token_ids = ids;
    h.finish_reason = LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS;
    return h;
}

static uint32_t replay(const Llmserve__V1__CacheLookupResult *h, size_t max_events)
{
    n_seen = 0;
    uint32_t n = 12345;
    cr_assert_eq(router_replay_hit(h, max_events, collect, seen, &n), LS_OK);
    cr_assert_eq(n, (uint32_t)n_seen, "reported %u events, emitted %d", n, n_seen);
    for (int i = 0; i < n_seen; i++)
        cr_assert_eq(seen[i].index, (uint32_t)i);
    return n;
}

static const char *const STORY[] = {"Once", " upon", " a", " time", " there", NULL};

Test(replay, token_by_token_with_ids_when_few_enough)
{
    char text[256];
    uint32_t lens[16];
    int32_t ids[16];
    Llmserve__V1__CacheLookupResult h = make_hit(STORY, true, text, lens, ids);
    for (size_t max = 5; max <= 64; max += 59) {
        cr_assert_eq(replay(&h, max), 5);
        for (int i = 0; i < 5; i++) {
            cr_assert_str_eq(seen[i].text, STORY[i]);
            cr_assert_eq(seen[i].id, 1000 + i);
        }
    }
}

Test(replay, runs_of_consecutive_tokens_beyond_max_events)
{
    char text[256];
    uint32_t lens[16];
    int32_t ids[16];
    Llmserve__V1__CacheLookupResult h = make_hit(STORY, true, text, lens, ids);
    /* 5 tokens in at most 2 events: runs of 3, then the 2 left. */
    cr_assert_eq(replay(&h, 2), 2);
    cr_assert_str_eq(seen[0].text, "Once upon a");
    cr_assert_str_eq(seen[1].text, " time there");
    cr_assert_eq(seen[0].id, -1);
    cr_assert_eq(seen[1].id, -1);
    /* At most 4: runs of 2, 2 and 1; a run of one token keeps its id. */
    cr_assert_eq(replay(&h, 4), 3);
    cr_assert_str_eq(seen[0].text, "Once upon");
    cr_assert_str_eq(seen[1].text, " a time");
    cr_assert_str_eq(seen[2].text, " there");
    cr_assert_eq(seen[0].id, -1);
    cr_assert_eq(seen[2].id, 1004);
    /* One event: the whole text (the router's default). */
    cr_assert_eq(replay(&h, 1), 1);
    cr_assert_str_eq(seen[0].text, text);
    cr_assert_eq(seen[0].id, -1);
    cr_assert_eq(replay(&h, 0), 1, "0 counts as 1");
}

Test(replay, lengths_without_ids_replay_per_token_with_no_id)
{
    char text[256];
    uint32_t lens[16];
    int32_t ids[16];
    Llmserve__V1__CacheLookupResult h = make_hit(STORY, false, text, lens, ids);
    cr_assert_eq(replay(&h, 64), 5);
    for (int i = 0; i < 5; i++) {
        cr_assert_str_eq(seen[i].text, STORY[i]);
        cr_assert_eq(seen[i].id, -1);
    }
}

Test(replay, without_lengths_or_with_wrong_ones_the_text_is_one_event)
{
    char text[256];
    uint32_t lens[16];
    int32_t ids[16];
    Llmserve__V1__CacheLookupResult h = make_hit(STORY, true, text, lens, ids);
    h.n_token_text_bytes = 0; /* not kept */
    h.n_token_ids = 0;
    cr_assert_eq(replay(&h, 64), 1);
    cr_assert_str_eq(seen[0].text, "Once upon a time there");
    cr_assert_eq(seen[0].id, -1);

    h = make_hit(STORY, true, text, lens, ids);
    lens[2] += 1; /* they add up to more than the text */
    cr_assert_eq(replay(&h, 64), 1);
    cr_assert_str_eq(seen[0].text, "Once upon a time there");
    cr_assert_eq(seen[0].id, -1);

    lens[2] -= 2; /* less */
    cr_assert_eq(replay(&h, 64), 1);
    cr_assert_str_eq(seen[0].text, "Once upon a time there");

    lens[2] = UINT32_MAX; /* far more: no overflow into a match */
    cr_assert_eq(replay(&h, 64), 1);
    cr_assert_str_eq(seen[0].text, "Once upon a time there");
}

Test(replay, a_one_token_answer_keeps_its_id_even_without_lengths)
{
    char text[64] = "Hello";
    int32_t id = 77;
    Llmserve__V1__CacheLookupResult h = LLMSERVE__V1__CACHE_LOOKUP_RESULT__INIT;
    h.hit = true;
    h.text = text;
    h.n_token_ids = 1;
    h.token_ids = &id;
    cr_assert_eq(replay(&h, 64), 1);
    cr_assert_str_eq(seen[0].text, "Hello");
    cr_assert_eq(seen[0].id, 77);
}

Test(replay, an_empty_answer_is_one_empty_event)
{
    Llmserve__V1__CacheLookupResult h = LLMSERVE__V1__CACHE_LOOKUP_RESULT__INIT;
    h.hit = true;
    h.text = "";
    cr_assert_eq(replay(&h, 64), 1);
    cr_assert_str_eq(seen[0].text, "");
    cr_assert_eq(seen[0].id, -1);
}

Test(replay, multibyte_pieces_stay_whole_utf8_in_every_split)
{
    /* Pieces as an instance streams them: whole characters, and an empty piece where a
     * byte-fallback token was held back until its character was complete. */
    static const char *const pieces[] = {"h", "é", "llo", " w", "", "ö", "rld", " ✓", "日本", NULL};
    char text[256];
    uint32_t lens[16];
    int32_t ids[16];
    Llmserve__V1__CacheLookupResult h = make_hit(pieces, true, text, lens, ids);
    for (size_t max = 1; max <= 10; max++) {
        uint32_t n = replay(&h, max);
        cr_assert_leq(n, max);
        char joined[256] = "";
        for (int i = 0; i < n_seen; i++) {
            cr_assert(ls_utf8_valid(seen[i].text, strlen(seen[i].text)),
                      "max %zu: event %d is not valid UTF-8", max, i);
            strcat(joined, seen[i].text);
        }
        cr_assert_str_eq(joined, "héllo wörld ✓日本", "max %zu", max);
    }
    cr_assert_eq(replay(&h, 9), 9);
    cr_assert_str_eq(seen[1].text, "é");
    cr_assert_eq(seen[1].id, 1001);
    cr_assert_str_eq(seen[4].text, "", "the held-back token is an empty event");
    cr_assert_str_eq(seen[8].text, "日本");
    cr_assert_eq(replay(&h, 3), 3); /* runs of 3 */
    cr_assert_str_eq(seen[0].text, "héllo");
    cr_assert_str_eq(seen[1].text, " wö");
    cr_assert_str_eq(seen[2].text, "rld ✓日本");
}

Test(replay, finish_reason_is_one_answers_are_stored_with)
{
    Llmserve__V1__CacheLookupResult h = LLMSERVE__V1__CACHE_LOOKUP_RESULT__INIT;
    h.finish_reason = LLMSERVE__V1__FINISH_REASON__FINISH_REASON_STOP;
    cr_assert_eq(router_replay_finish_reason(&h), LLMSERVE__V1__FINISH_REASON__FINISH_REASON_STOP);
    h.finish_reason = LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS;
    cr_assert_eq(router_replay_finish_reason(&h), LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS);
    h.finish_reason = LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH;
    cr_assert_eq(router_replay_finish_reason(&h),
                 LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH);
    const Llmserve__V1__FinishReason odd[] = {
        LLMSERVE__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED,
        LLMSERVE__V1__FINISH_REASON__FINISH_REASON_CANCELLED,
        LLMSERVE__V1__FINISH_REASON__FINISH_REASON_DEADLINE, (Llmserve__V1__FinishReason)99};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        h.finish_reason = odd[i];
        cr_assert_eq(router_replay_finish_reason(&h),
                     LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH, "reason %d", (int)odd[i]);
    }
}
