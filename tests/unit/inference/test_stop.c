/*
 * test_stop.c - services/inference/stop.c: stop strings across piece boundaries.
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "stop.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    inf_stop_t stop;
    char out[4096]; /* everything released so far */
    size_t n_out;
    bool matched;
} run_t;

static void setup(run_t *r, const char *const *strs, size_t n)
{
    size_t lens[INF_STOP_MAX_STRINGS + 4] = {0};
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(strs[i]);
    char err[128];
    memset(r, 0, sizeof(*r));
    cr_assert_eq(inf_stop_init(&r->stop, strs, lens, n, err, sizeof(err)), LS_OK, "%s", err);
}

/* Feeds text in pieces of `step` bytes, collecting what is released. */
static void feed(run_t *r, const char *text, size_t step)
{
    size_t len = strlen(text);
    for (size_t at = 0; at < len; at += step) {
        size_t n = len - at < step ? len - at : step;
        char buf[1024];
        cr_assert_geq(sizeof(buf), inf_stop_out_need(&r->stop, n));
        bool m = false;
        size_t got = inf_stop_feed(&r->stop, text + at, n, buf, sizeof(buf), &m);
        memcpy(r->out + r->n_out, buf, got);
        r->n_out += got;
        r->matched |= m;
    }
}

static void flush(run_t *r)
{
    char buf[INF_STOP_MAX_BYTES];
    size_t got = inf_stop_flush(&r->stop, buf, sizeof(buf));
    memcpy(r->out + r->n_out, buf, got);
    r->n_out += got;
    r->out[r->n_out] = '\0';
}

Test(stop, no_stop_strings_pass_text_through)
{
    run_t r;
    setup(&r, NULL, 0);
    feed(&r, "hello world", 3);
    cr_assert_eq(r.n_out, 11, "nothing is held back without stop strings");
    flush(&r);
    cr_assert_str_eq(r.out, "hello world");
    cr_assert_not(r.matched);
}

Test(stop, match_inside_one_piece_cuts_the_stop_string_and_the_rest)
{
    const char *stops[] = {"END"};
    run_t r;
    setup(&r, stops, 1);
    feed(&r, "story ENDmore", 100);
    flush(&r);
    cr_assert(r.matched);
    cr_assert_str_eq(r.out, "story ");
}

Test(stop, match_across_pieces_never_releases_part_of_the_stop_string)
{
    const char *stops[] = {"\n\nUser:"};
    for (size_t step = 1; step <= 8; step++) {
        run_t r;
        setup(&r, stops, 1);
        feed(&r, "Answer.\n\nUser: next", step);
        cr_assert(r.matched, "step %zu", step);
        flush(&r);
        cr_assert_str_eq(r.out, "Answer.", "step %zu", step);
    }
}

Test(stop, held_prefix_is_released_when_the_text_diverges)
{
    const char *stops[] = {"STOP"};
    run_t r;
    setup(&r, stops, 1);
    feed(&r, "a ST", 4);
    cr_assert_eq(r.n_out, 2, "\"ST\" could start STOP and must be held, got %zu bytes", r.n_out);
    feed(&r, "ART", 3);
    cr_assert_not(r.matched);
    cr_assert_eq(r.n_out, 7, "STAR... is not STOP: released");
    flush(&r);
    cr_assert_str_eq(r.out, "a START");
}

Test(stop, overlapping_self_prefix_is_found)
{
    const char *stops[] = {"aab"};
    run_t r;
    setup(&r, stops, 1);
    feed(&r, "xaaab", 1);
    cr_assert(r.matched);
    flush(&r);
    cr_assert_str_eq(r.out, "xa");
}

Test(stop, earliest_of_several_stop_strings_wins)
{
    const char *stops[] = {"world", "lo w", "zzz"};
    run_t r;
    setup(&r, stops, 3);
    feed(&r, "hello world", 2);
    cr_assert(r.matched);
    flush(&r);
    cr_assert_str_eq(r.out, "hel");
}

Test(stop, flush_releases_held_text_at_the_end)
{
    const char *stops[] = {"<end>"};
    run_t r;
    setup(&r, stops, 1);
    feed(&r, "done <en", 8);
    cr_assert_str_eq((r.out[r.n_out] = '\0', r.out), "done ");
    flush(&r);
    cr_assert_not(r.matched);
    cr_assert_str_eq(r.out, "done <en");
}

Test(stop, text_after_a_match_is_ignored)
{
    const char *stops[] = {"x"};
    run_t r;
    setup(&r, stops, 1);
    feed(&r, "abxcd", 5);
    feed(&r, "more", 1);
    flush(&r);
    cr_assert_str_eq(r.out, "ab");
}

Test(stop, multibyte_stop_string)
{
    const char *stops[] = {"\xe2\x82\xac"
                           "5"}; /* "€5" */
    run_t r;
    setup(&r, stops, 1);
    feed(&r,
         "costs \xe2\x82\xac"
         "4, not \xe2\x82\xac"
         "5!",
         1);
    cr_assert(r.matched);
    flush(&r);
    cr_assert_str_eq(r.out, "costs \xe2\x82\xac"
                            "4, not ");
}

Test(stop, limits_on_count_and_length)
{
    char err[128];
    inf_stop_t s;
    const char *nine[9] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
    size_t ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    cr_assert_eq(inf_stop_init(&s, nine, ones, 9, err, sizeof(err)), LS_ERR_INVALID);
    cr_assert(strstr(err, "too many"), "%s", err);
    cr_assert_eq(inf_stop_init(&s, nine, ones, 8, err, sizeof(err)), LS_OK);

    const char *empty[] = {"ok", ""};
    size_t lens[] = {2, 0};
    cr_assert_eq(inf_stop_init(&s, empty, lens, 2, err, sizeof(err)), LS_ERR_INVALID);
    cr_assert_eq(s.n, 0, "a refused list leaves no stop strings behind");

    static char big[INF_STOP_MAX_BYTES + 1];
    memset(big, 'x', sizeof(big));
    const char *one[] = {big};
    size_t len = INF_STOP_MAX_BYTES + 1;
    cr_assert_eq(inf_stop_init(&s, one, &len, 1, err, sizeof(err)), LS_ERR_INVALID);
    len = INF_STOP_MAX_BYTES;
    cr_assert_eq(inf_stop_init(&s, one, &len, 1, err, sizeof(err)), LS_OK);
}

/* Earliest start of a stop string inside t[0..len), or len. */
static size_t first_match(const char *t, size_t len, const char *const *stops, size_t n)
{
    for (size_t p = 0; p < len; p++)
        for (size_t k = 0; k < n; k++) {
            size_t l = strlen(stops[k]);
            if (l <= len - p && memcmp(t + p, stops[k], l) == 0)
                return p;
        }
    return len;
}

/* Random texts over a small alphabet, random stop strings, random piece sizes.  The
 * reference works on the whole text so far after each piece: generation stops at the
 * first piece after which the text contains a stop string, and the answer is the text
 * before the earliest occurrence.  The streamed result must be exactly that. */
Test(stop, streaming_equals_matching_on_the_text_so_far)
{
    unsigned seed = 12345;
    int matched_rounds = 0;
    for (int round = 0; round < 3000; round++) {
        char text[96];
        size_t tlen = (size_t)(rand_r(&seed) % 80);
        for (size_t i = 0; i < tlen; i++)
            text[i] = "ab c"[rand_r(&seed) % 4];
        text[tlen] = '\0';
        char stops_buf[3][8];
        const char *stops[3];
        size_t n = (size_t)(rand_r(&seed) % 4);
        for (size_t k = 0; k < n; k++) {
            size_t l = 1 + (size_t)(rand_r(&seed) % 6);
            for (size_t i = 0; i < l; i++)
                stops_buf[k][i] = "ab c"[rand_r(&seed) % 4];
            stops_buf[k][l] = '\0';
            stops[k] = stops_buf[k];
        }

        run_t r;
        setup(&r, stops, n);
        size_t at = 0, cut = tlen;
        bool want_match = false;
        while (at < tlen) {
            size_t step = 1 + (size_t)(rand_r(&seed) % 7);
            if (step > tlen - at)
                step = tlen - at;
            char piece[16];
            memcpy(piece, text + at, step);
            piece[step] = '\0';
            feed(&r, piece, step);
            at += step;
            size_t m = first_match(text, at, stops, n);
            if (m < at) {
                cut = m;
                want_match = true;
                break;
            }
        }
        flush(&r);
        matched_rounds += want_match;
        cr_assert_eq(r.matched, want_match, "round %d text \"%s\"", round, text);
        cr_assert_eq(r.n_out, cut, "round %d text \"%s\" got \"%s\"", round, text, r.out);
        cr_assert_eq(strncmp(r.out, text, cut), 0, "round %d", round);
    }
    cr_assert_gt(matched_rounds, 300, "the random cases must exercise matches");
    cr_assert_lt(matched_rounds, 2700, "the random cases must exercise misses");
}
