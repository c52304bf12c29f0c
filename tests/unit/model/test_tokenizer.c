/*
 * test_tokenizer.c - tok_load, tok_encode, tok_piece and tok_stream_* (libs/model/tokenizer.c)
 * and tok_make (libs/model/tokenizer_make.c).
 *
 * The encoder is checked against a straightforward transcription of llama2.c run.c's
 * encode() below (rescan every pair after each merge), on fixed and random text, with
 * a generated vocabulary and with llama2.c's real 32000-token tokenizer.bin
 * (tests/data/tokenizer-llama2c.bin, a compatibility fixture).
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "model/tokenizer.h"
#include "model/tokenizer_make.h"
#include "support/tmpdir.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef LLMSERVE_TEST_DATA
#error "LLMSERVE_TEST_DATA must name tests/data"
#endif
#define REAL_TOKENIZER LLMSERVE_TEST_DATA "/tokenizer-llama2c.bin"
#define REAL_VOCAB 32000
#define GEN_VOCAB 512

/* Asserts only on failure: ctest runs criterion with --full-stats, which reports every
 * passing assertion, and the loops here make hundreds of thousands of checks. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            cr_assert(cond, __VA_ARGS__);                                                          \
    } while (0)

static test_tmpdir_t dir;

static void make_dir(void)
{
    cr_assert_eq(test_tmpdir_make(&dir, "llmserve-tok"), 0);
}

static void remove_dir(void)
{
    test_tmpdir_remove(&dir);
}

TestSuite(tokenizer, .init = make_dir, .fini = remove_dir);

static const char *path_of(const char *name)
{
    static char p[2][256];
    static int next;
    return test_tmpdir_file(&dir, name, p[next++ % 2], sizeof(p[0]));
}

static const char *make_vocab(int vocab_size)
{
    const char *p = path_of("tok.bin");
    char err[256] = "";
    cr_assert_eq(tok_make(p, vocab_size, err, sizeof(err)), LS_OK, "tok_make: %s", err);
    return p;
}

static tok_t *load_ok(const char *path, int vocab_size)
{
    char err[256] = "";
    tok_t *t = tok_load(path, vocab_size, err, sizeof(err));
    cr_assert_not_null(t, "tok_load(%s): %s", path, err);
    cr_assert_eq(tok_vocab_size(t), vocab_size);
    return t;
}

/* ---- the reference: run.c's encode(), transcribed with lengths ------------------- */

typedef struct {
    int n;
    char **str; /* NUL-terminated copies (no piece holds a NUL byte) */
    int *len;
    float *score;
    int *sorted;
} ref_vocab_t;

static const ref_vocab_t *cmp_vocab;

static int ref_cmp(const void *a, const void *b)
{
    return strcmp(cmp_vocab->str[*(const int *)a], cmp_vocab->str[*(const int *)b]);
}

static int ref_key_cmp(const void *key, const void *b)
{
    return strcmp((const char *)key, cmp_vocab->str[*(const int *)b]);
}

static ref_vocab_t ref_load(const char *path, int n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    ref_vocab_t v = {n, calloc((size_t)n, sizeof(char *)), calloc((size_t)n, sizeof(int)),
                     calloc((size_t)n, sizeof(float)), calloc((size_t)n, sizeof(int))};
    int32_t max_len;
    cr_assert_eq(fread(&max_len, 4, 1, f), 1);
    for (int i = 0; i < n; i++) {
        CHECK(fread(&v.score[i], 4, 1, f) == 1, "token %d", i);
        CHECK(fread(&v.len[i], 4, 1, f) == 1, "token %d", i);
        v.str[i] = calloc((size_t)v.len[i] + 1, 1);
        CHECK(fread(v.str[i], 1, (size_t)v.len[i], f) == (size_t)v.len[i], "token %d", i);
        CHECK(strlen(v.str[i]) == (size_t)v.len[i], "piece %d holds a NUL", i);
        v.sorted[i] = i;
    }
    fclose(f);
    cmp_vocab = &v;
    qsort(v.sorted, (size_t)n, sizeof(int), ref_cmp);
    for (int i = 1; i < n; i++)
        CHECK(strcmp(v.str[v.sorted[i - 1]], v.str[v.sorted[i]]) != 0,
              "duplicate piece: the reference lookup would be ambiguous");
    cmp_vocab = NULL;
    return v;
}

static void ref_free(ref_vocab_t *v)
{
    for (int i = 0; i < v->n; i++)
        free(v->str[i]);
    free(v->str);
    free(v->len);
    free(v->score);
    free(v->sorted);
}

static int ref_lookup(const ref_vocab_t *v, const char *s)
{
    cmp_vocab = v;
    const int *hit = bsearch(s, v->sorted, (size_t)v->n, sizeof(int), ref_key_cmp);
    cmp_vocab = NULL;
    return hit ? *hit : -1;
}

/* Returns the token count; text must hold no NUL byte (run.c stops at one). */
static int ref_encode(const ref_vocab_t *v, const char *text, size_t len, bool bos, bool eos,
                      int *tokens)
{
    char buf[512];
    size_t str_len = 0;
    int n = 0;
    if (bos)
        tokens[n++] = 1;
    if (len > 0)
        tokens[n++] = ref_lookup(v, " ");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if ((c & 0xC0) != 0x80)
            str_len = 0;
        buf[str_len++] = (char)c;
        buf[str_len] = '\0';
        if (i + 1 < len && ((unsigned char)text[i + 1] & 0xC0) == 0x80 && str_len < 4)
            continue;
        int id = ref_lookup(v, buf);
        if (id != -1) {
            tokens[n++] = id;
        } else {
            for (size_t k = 0; k < str_len; k++)
                tokens[n++] = (unsigned char)buf[k] + 3;
        }
        str_len = 0;
    }
    for (;;) {
        float best_score = -1e10f;
        int best_id = -1, best_idx = -1;
        for (int i = 0; i < n - 1; i++) {
            snprintf(buf, sizeof(buf), "%s%s", v->str[tokens[i]], v->str[tokens[i + 1]]);
            int id = ref_lookup(v, buf);
            if (id != -1 && v->score[id] > best_score) {
                best_score = v->score[id];
                best_id = id;
                best_idx = i;
            }
        }
        if (best_idx == -1)
            break;
        tokens[best_idx] = best_id;
        for (int i = best_idx + 1; i < n - 1; i++)
            tokens[i] = tokens[i + 1];
        n--;
    }
    if (eos)
        tokens[n++] = 2;
    return n;
}

/* ---- helpers ------------------------------------------------------------------------ */

static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t need;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            need = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            need = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            need = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + need > n)
            return false;
        for (size_t k = 1; k < need; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[need] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += need;
    }
    return true;
}

/* Concatenates the pieces of tokens (prev = the token before each). */
static size_t decode_raw(const tok_t *t, const int *tokens, int n, char *out, size_t cap)
{
    size_t w = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        const char *p = tok_piece(t, i ? tokens[i - 1] : -1, tokens[i], &len);
        CHECK(w + len <= cap, "token %d overflows the buffer", i);
        memcpy(out + w, p, len);
        w += len;
    }
    return w;
}

static uint64_t rng_state = 0x243F6A8885A308D3ull;

static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33) % n;
}

/* Random text: words, spaces, punctuation, multi-byte characters, and (when invalid)
 * stray, cut-short and impossible bytes. */
static size_t random_text(char *out, size_t max, bool invalid)
{
    static const char *const parts[] = {
        "the",    " the", "a",
        " ",      "  ",   "Lily",
        " was",   "ing",  "er",
        "e",      "t",    "h",
        ".",      ",",    "\n",
        "\"",     "!",    "?",
        "1",      "42",   "Max",
        " happy", "é",    "ñ",
        "ü",      "日本", "語",
        "😀",      "🦙", "€",
        "Ω",      "—",    "x",
        "q",      "Z",    "\t",
        "'s",     "ü",    "\xC3\xA9t\xC3\xA9",
    };
    static const char *const bad[] = {
        "\xFF",     "\x80",         "\xE2\x82", "\xF0\x9F\x98",
        "\xC0\xAF", "\xED\xA0\x80", "\xF5\x80", "\xBF\xBF\xBF\xBF\xBF"};
    size_t n = 0, target = 1 + rnd((uint32_t)max - 8);
    while (n < target) {
        const char *p = invalid && rnd(6) == 0 ? bad[rnd(sizeof(bad) / sizeof(bad[0]))]
                                               : parts[rnd(sizeof(parts) / sizeof(parts[0]))];
        size_t l = strlen(p);
        if (n + l > max)
            break;
        memcpy(out + n, p, l);
        n += l;
    }
    return n;
}

static void assert_matches_reference(const tok_t *t, const ref_vocab_t *v, const char *text,
                                     size_t len, bool bos, bool eos)
{
    int want[600], got[600];
    CHECK(len < 500, "text of %zu bytes", len);
    int nw = ref_encode(v, text, len, bos, eos, want);
    int ng = tok_encode(t, text, len, bos, eos, got, 600);
    CHECK(ng == nw, "\"%.*s\": %d tokens, reference %d", (int)len, text, ng, nw);
    for (int i = 0; i < nw; i++)
        CHECK(got[i] == want[i], "\"%.*s\": token %d is %d, reference %d", (int)len, text, i,
              got[i], want[i]);
}

/* ---- encoding ----------------------------------------------------------------------- */

static const char *const samples[] = {
    "Hello world",
    "Once upon a time, there was a little girl named Lily.",
    "  leading spaces and trailing  ",
    "Ünïcödé: café, naïve, 日本語, emoji 😀🦙!",
    "line one\nline two\n\ttabbed",
    "a",
    " ",
    "1234567890",
    "\"Quotes\" and 'apostrophes' -- dashes — and ellipses...",
};

static void check_samples(const char *path, int vocab)
{
    tok_t *t = load_ok(path, vocab);
    ref_vocab_t v = ref_load(path, vocab);
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++)
        for (int flags = 0; flags < 4; flags++)
            assert_matches_reference(t, &v, samples[i], strlen(samples[i]), flags & 1, flags & 2);
    ref_free(&v);
    tok_destroy(t);
}

Test(tokenizer, samples_match_reference_generated_vocab)
{
    check_samples(make_vocab(GEN_VOCAB), GEN_VOCAB);
    check_samples(make_vocab(2000), 2000);
}

Test(tokenizer, samples_match_reference_real_vocab)
{
    check_samples(REAL_TOKENIZER, REAL_VOCAB);
}

Test(tokenizer, known_llama_encoding)
{
    /* Llama 2's SentencePiece gives [1, 15043, 3186] for "Hello world" */
    tok_t *t = load_ok(REAL_TOKENIZER, REAL_VOCAB);
    int out[8];
    cr_assert_eq(tok_encode(t, "Hello world", 11, true, false, out, 8), 3);
    cr_assert_eq(out[0], TOK_BOS);
    cr_assert_eq(out[1], 15043);
    cr_assert_eq(out[2], 3186);
    tok_destroy(t);
}

static void check_random(const char *path, int vocab, int rounds)
{
    tok_t *t = load_ok(path, vocab);
    ref_vocab_t v = ref_load(path, vocab);
    char text[200];
    for (int r = 0; r < rounds; r++) {
        size_t n = random_text(text, sizeof(text), r % 2 == 1);
        assert_matches_reference(t, &v, text, n, r % 3 != 0, r % 5 == 0);
    }
    ref_free(&v);
    tok_destroy(t);
}

Test(tokenizer, fast_merge_equals_reference_on_random_text_generated_vocab)
{
    check_random(make_vocab(GEN_VOCAB), GEN_VOCAB, 400);
    check_random(make_vocab(1200), 1200, 400);
}

/* Writes a vocabulary of the fixed head plus the given pieces and scores. */
static const char *write_vocab(const char *const *pieces, const float *scores, int n)
{
    const char *p = path_of("custom.bin");
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    int32_t max_len = 16;
    fwrite(&max_len, 4, 1, f);
    char name[8];
    for (int i = 0; i < 259 + n; i++) {
        const char *s = i == 0 ? "<unk>" : i == 1 ? "<s>" : i == 2 ? "</s>" : name;
        if (i >= 3 && i < 259)
            snprintf(name, sizeof(name), "<0x%02X>", i - 3);
        if (i >= 259)
            s = pieces[i - 259];
        float score = i >= 259 ? scores[i - 259] : 0.0f;
        int32_t len = (int32_t)strlen(s);
        fwrite(&score, 4, 1, f);
        fwrite(&len, 4, 1, f);
        fwrite(s, 1, (size_t)len, f);
    }
    cr_assert_eq(fclose(f), 0);
    return p;
}

Test(tokenizer, equal_scores_merge_leftmost_first)
{
    /* many pieces share a score, so the order among equal pairs decides the result */
    static const char *const pieces[] = {" ",   "a",   "b",   "aa",  "ab",  "ba",   "bb",
                                         "aaa", "aba", "bab", " a",  " b",  "abab", "aabb",
                                         "bba", " aa", "baa", "abb", " ab", "bbb"};
    static const float scores[] = {-5, -5, -5, -1, -1, -1, -1, -2, -2, -2,
                                   -1, -1, -2, -2, -2, -2, -1, -2, -3, -2};
    int n = (int)(sizeof(pieces) / sizeof(pieces[0]));
    const char *p = write_vocab(pieces, scores, n);
    tok_t *t = load_ok(p, 259 + n);
    int out[8];
    /* " " a a a a: " a" and "aa" (-1) tie, the leftmost (" a") wins; then the two "aa"
     * tie and the left one wins, then "aaa" (-2): [" a", "aaa"].  Merging the rightmost
     * first would give [" aa", "aa"]. */
    cr_assert_eq(tok_encode(t, "aaaa", 4, false, false, out, 8), 2);
    cr_assert_eq(out[0], 259 + 10);
    cr_assert_eq(out[1], 259 + 7);
    ref_vocab_t v = ref_load(p, 259 + n);
    char text[80];
    for (int r = 0; r < 3000; r++) {
        size_t len = 1 + rnd(60);
        for (size_t i = 0; i < len; i++)
            text[i] = "ab a"[rnd(4)];
        assert_matches_reference(t, &v, text, len, r % 2 == 0, false);
    }
    ref_free(&v);
    tok_destroy(t);
}

Test(tokenizer, fast_merge_equals_reference_on_random_text_real_vocab)
{
    check_random(REAL_TOKENIZER, REAL_VOCAB, 300);
}

Test(tokenizer, round_trip_ascii_and_utf8)
{
    const char *paths[] = {REAL_TOKENIZER, NULL};
    int vocabs[] = {REAL_VOCAB, GEN_VOCAB};
    char text[200], dec[1200];
    int tokens[600];
    for (int k = 0; k < 2; k++) {
        tok_t *t = load_ok(paths[k] ? paths[k] : make_vocab(GEN_VOCAB), vocabs[k]);
        for (int r = 0; r < 300; r++) {
            size_t n = random_text(text, sizeof(text), r % 2 == 1);
            int nt = tok_encode(t, text, n, true, false, tokens, 600);
            CHECK(nt > 1, "%d tokens", nt);
            size_t w = decode_raw(t, tokens, nt, dec, sizeof(dec));
            CHECK(w == n, "round trip changed the length of \"%.*s\"", (int)n, text);
            CHECK(memcmp(dec, text, n) == 0, "round trip changed \"%.*s\"", (int)n, text);
            /* without BOS nothing is stripped: the dummy prefix shows */
            nt = tok_encode(t, text, n, false, false, tokens, 600);
            w = decode_raw(t, tokens, nt, dec, sizeof(dec));
            CHECK(w == n + 1 && dec[0] == ' ' && memcmp(dec + 1, text, n) == 0,
                  "without BOS \"%.*s\" did not come back after a space", (int)n, text);
        }
        tok_destroy(t);
    }
}

Test(tokenizer, byte_fallback_for_unknown_characters)
{
    tok_t *t = load_ok(make_vocab(GEN_VOCAB), GEN_VOCAB);
    int out[16];
    /* "é" is not in the built-in text: two byte tokens after the dummy prefix */
    int n = tok_encode(t, "\xC3\xA9", 2, true, false, out, 16);
    cr_assert_eq(n, 4);
    cr_assert_eq(out[0], TOK_BOS);
    size_t len;
    const char *p = tok_piece(t, -1, out[1], &len);
    cr_assert_eq(len, 1);
    cr_assert_eq(p[0], ' ');
    cr_assert_eq(out[2], 3 + 0xC3);
    cr_assert_eq(out[3], 3 + 0xA9);
    /* a 4-byte emoji: four byte tokens */
    n = tok_encode(t, "\xF0\x9F\x98\x80", 4, false, false, out, 16);
    cr_assert_eq(n, 5);
    cr_assert_eq(out[1], 3 + 0xF0);
    cr_assert_eq(out[4], 3 + 0x80);
    tok_destroy(t);

    /* the real vocabulary has some characters whole and falls back for others */
    t = load_ok(REAL_TOKENIZER, REAL_VOCAB);
    n = tok_encode(t, "\xF0\x9F\xA6\x99", 4, false, false, out, 16); /* llama emoji */
    cr_assert_eq(n, 5);
    for (int i = 1; i < 5; i++)
        cr_assert(out[i] >= 3 && out[i] < 259, "token %d is %d, not a byte token", i, out[i]);
    tok_destroy(t);
}

Test(tokenizer, empty_text_bos_eos_and_capacity)
{
    tok_t *t = load_ok(make_vocab(GEN_VOCAB), GEN_VOCAB);
    int out[64];
    cr_assert_eq(tok_encode(t, "", 0, false, false, out, 64), 0);
    cr_assert_eq(tok_encode(t, "", 0, true, false, out, 64), 1);
    cr_assert_eq(out[0], TOK_BOS);
    cr_assert_eq(tok_encode(t, "", 0, true, true, out, 64), 2);
    cr_assert_eq(out[1], TOK_EOS);
    cr_assert_eq(tok_encode(t, NULL, 0, false, true, out, 64), 1);
    int n = tok_encode(t, "hello there", 11, true, true, out, 64);
    cr_assert_gt(n, 2);
    cr_assert_eq(out[n - 1], TOK_EOS);
    cr_assert_eq(tok_encode(t, "hello there", 11, true, true, out, n), n);
    cr_assert_eq(tok_encode(t, "hello there", 11, true, true, out, n - 1), LS_ERR_FULL);
    cr_assert_eq(tok_encode(t, "hello there", 11, true, true, out, 0), LS_ERR_FULL);
    /* bytes after a NUL are still text: the length decides */
    n = tok_encode(t, "a\0b", 3, false, false, out, 64);
    char dec[16];
    size_t w = decode_raw(t, out, n, dec, sizeof(dec));
    cr_assert_eq(w, 4);
    cr_assert_eq(memcmp(dec, " a\0b", 4), 0);
    tok_destroy(t);
}

Test(tokenizer, long_prompt_encodes_and_round_trips)
{
    tok_t *t = load_ok(REAL_TOKENIZER, REAL_VOCAB);
    size_t n = 200000;
    char *text = malloc(n);
    int *tokens = malloc((n + 2) * sizeof(int));
    char *dec = malloc(n + 16);
    for (size_t w = 0; w < n;) {
        char chunk[200];
        size_t l = random_text(chunk, sizeof(chunk), false);
        if (l > n - w)
            l = n - w;
        memcpy(text + w, chunk, l);
        w += l;
    }
    while (n > 0 && ((unsigned char)text[n - 1] & 0xC0) == 0x80) /* keep whole characters */
        n--;
    while (n > 0 && (unsigned char)text[n - 1] >= 0xC0)
        n--;
    int nt = tok_encode(t, text, n, true, false, tokens, (int)n + 2);
    cr_assert_gt(nt, 1);
    cr_assert_lt((size_t)nt, n * 2 / 3,
                 "BPE should compress English-like text: %d tokens for %zu bytes", nt, n);
    size_t w = decode_raw(t, tokens, nt, dec, n + 16);
    cr_assert_eq(w, n);
    cr_assert_eq(memcmp(dec, text, n), 0);
    free(text);
    free(tokens);
    free(dec);
    tok_destroy(t);
}

/* ---- pieces ------------------------------------------------------------------------- */

Test(tokenizer, pieces_follow_run_c_decode)
{
    tok_t *t = load_ok(REAL_TOKENIZER, REAL_VOCAB);
    size_t len;
    const char *p = tok_piece(t, TOK_BOS, 15043, &len); /* " Hello" */
    cr_assert_eq(len, 5);
    cr_assert_eq(memcmp(p, "Hello", 5), 0);
    p = tok_piece(t, 100, 15043, &len);
    cr_assert_eq(len, 6);
    cr_assert_eq(memcmp(p, " Hello", 6), 0);
    p = tok_piece(t, 5, 3 + 0x0A, &len); /* <0x0A> */
    cr_assert_eq(len, 1);
    cr_assert_eq(p[0], '\n');
    p = tok_piece(t, TOK_BOS, 3 + 0x20, &len); /* a byte token is not stripped */
    cr_assert_eq(len, 1);
    cr_assert_eq(p[0], ' ');
    p = tok_piece(t, 5, 3 + 0xFF, &len);
    cr_assert_eq(len, 1);
    cr_assert_eq((unsigned char)p[0], 0xFF);
    const int empty[] = {-1, REAL_VOCAB, REAL_VOCAB + 100, TOK_UNK, TOK_BOS, TOK_EOS};
    for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
        len = 99;
        p = tok_piece(t, 5, empty[i], &len);
        cr_assert_not_null(p);
        cr_assert_eq(len, 0, "token %d gives %zu bytes", empty[i], len);
    }
    /* every non-byte piece is valid UTF-8: what the stream's len + 4 bound rests on */
    for (int id = 3 + 256; id < REAL_VOCAB; id++) {
        p = tok_piece(t, 5, id, &len);
        CHECK(utf8_valid((const unsigned char *)p, len), "piece %d is not UTF-8", id);
    }
    tok_destroy(t);
}

/* ---- streaming ---------------------------------------------------------------------- */

Test(tokenizer, stream_holds_emoji_split_into_byte_tokens)
{
    tok_t *t = load_ok(make_vocab(GEN_VOCAB), GEN_VOCAB);
    const unsigned char emoji[4] = {0xF0, 0x9F, 0x98, 0x80};
    tok_stream_t s;
    tok_stream_init(&s);
    char out[16];
    for (int i = 0; i < 4; i++) {
        size_t len;
        const char *p = tok_piece(t, 5, 3 + emoji[i], &len);
        size_t w = tok_stream_push(&s, p, len, out, len + 4);
        if (i < 3) {
            cr_assert_eq(w, 0, "byte %d of the emoji was emitted alone", i);
        } else {
            cr_assert_eq(w, 4);
            cr_assert_eq(memcmp(out, emoji, 4), 0);
        }
    }
    cr_assert_eq(tok_stream_flush(&s, out, sizeof(out)), 0);
    tok_destroy(t);
}

static size_t push_all(tok_stream_t *s, const char *in, size_t n, char *out)
{
    return tok_stream_push(s, in, n, out, 3 * n + 4);
}

Test(tokenizer, stream_replaces_invalid_bytes)
{
    tok_stream_t s;
    tok_stream_init(&s);
    char out[64];
    /* a cut-short emoji followed by ASCII: one U+FFFD, then the letter */
    cr_assert_eq(push_all(&s, "\xF0\x9F\x98", 3, out), 0);
    size_t w = push_all(&s, "A", 1, out);
    cr_assert_eq(w, 4);
    cr_assert_eq(memcmp(out,
                        "\xEF\xBF\xBD"
                        "A",
                        4),
                 0);
    /* stray continuation, impossible lead, overlong, surrogate: never passed through */
    const char *bad[] = {"\x80", "\xFF", "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        tok_stream_init(&s);
        w = push_all(&s, bad[i], strlen(bad[i]), out);
        w += tok_stream_flush(&s, out + w, 4);
        cr_assert_gt(w, 0);
        cr_assert(utf8_valid((unsigned char *)out, w), "case %zu passed invalid UTF-8", i);
        cr_assert_eq(memcmp(out, "\xEF\xBF\xBD", 3), 0);
    }
    /* an incomplete character at the end comes out of flush as U+FFFD */
    tok_stream_init(&s);
    cr_assert_eq(push_all(&s, "ok\xE2\x82", 4, out), 2);
    cr_assert_eq(tok_stream_flush(&s, out, 4), 3);
    cr_assert_eq(memcmp(out, "\xEF\xBF\xBD", 3), 0);
    cr_assert_eq(tok_stream_flush(&s, out, 4), 0, "flush resets");
    /* valid text passes unchanged, whole */
    const char *good = "café 日本 😀";
    tok_stream_init(&s);
    w = push_all(&s, good, strlen(good), out);
    cr_assert_eq(w, strlen(good));
    cr_assert_eq(memcmp(out, good, w), 0);
}

Test(tokenizer, stream_never_splits_a_character_random_bytes)
{
    tok_stream_t s;
    char text[200], out[1200];
    for (int r = 0; r < 2000; r++) {
        size_t n = random_text(text, sizeof(text), r % 2 == 1);
        tok_stream_init(&s);
        size_t total = 0;
        char all[1200];
        for (size_t i = 0; i < n;) {
            /* single bytes (byte tokens) and runs of a few bytes */
            size_t l = 1 + rnd(r % 3 == 0 ? 1 : 6);
            if (l > n - i)
                l = n - i;
            size_t cap = r % 2 == 1 ? 3 * l + 4 : l + 4;
            memset(out, 0x5A, sizeof(out));
            size_t w = tok_stream_push(&s, text + i, l, out, cap);
            CHECK(w <= cap, "%zu bytes for cap %zu", w, cap);
            CHECK((unsigned char)out[cap] == 0x5A, "wrote past cap");
            CHECK(utf8_valid((unsigned char *)out, w), "a chunk splits a character");
            memcpy(all + total, out, w);
            total += w;
            i += l;
        }
        total += tok_stream_flush(&s, all + total, 4);
        CHECK(utf8_valid((unsigned char *)all, total), "round %d", r);
        if (r % 2 == 0) {
            CHECK(total == n, "valid text changed length");
            CHECK(memcmp(all, text, n) == 0, "valid text changed");
        }
    }
}

Test(tokenizer, stream_single_byte_pieces_fit_len_plus_4)
{
    /* the worst case for one byte: a held lead cut short by an impossible byte */
    tok_stream_t s;
    tok_stream_init(&s);
    char out[8];
    memset(out, 0x5A, sizeof(out));
    cr_assert_eq(tok_stream_push(&s, "\xE2", 1, out, 5), 0);
    cr_assert_eq(tok_stream_push(&s, "\x82", 1, out, 5), 0);
    size_t w = tok_stream_push(&s, "\xFF", 1, out, 5);
    cr_assert_eq(w, 3);
    cr_assert_eq((unsigned char)out[5], 0x5A);
    /* a too-small buffer is never overrun */
    tok_stream_init(&s);
    memset(out, 0x5A, sizeof(out));
    w = tok_stream_push(&s,
                        "\xFF\xFF"
                        "abc",
                        5, out, 2);
    cr_assert_leq(w, 2);
    cr_assert_eq((unsigned char)out[2], 0x5A);
}

/* ---- loading ------------------------------------------------------------------------ */

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n + 8);
    cr_assert_eq(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static void spit(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    if (n)
        cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

static void load_fails(const char *path, int vocab, const char *what)
{
    char err[256] = "";
    tok_t *t = tok_load(path, vocab, err, sizeof(err));
    cr_assert_null(t, "%s loaded but should fail with \"%s\"", path, what);
    cr_assert(strstr(err, path) != NULL, "error \"%s\" does not name %s", err, path);
    cr_assert(strstr(err, what) != NULL, "error \"%s\" lacks \"%s\"", err, what);
}

Test(tokenizer, load_errors)
{
    load_fails(path_of("missing.bin"), GEN_VOCAB, "No such file");
    load_fails(dir.path, GEN_VOCAB, "not a regular file");
    load_fails(REAL_TOKENIZER, REAL_VOCAB - 1, "more than vocab_size");
    load_fails(REAL_TOKENIZER, REAL_VOCAB + 1, "truncated");
    load_fails(REAL_TOKENIZER, 100, "below 259");

    const char *good = make_vocab(GEN_VOCAB);
    size_t n;
    unsigned char *b = slurp(good, &n);
    const char *bad = path_of("bad.bin");
    spit(bad, b, 0);
    load_fails(bad, GEN_VOCAB, "too short");
    spit(bad, b, n - 1);
    load_fails(bad, GEN_VOCAB, "truncated");
    spit(bad, b, 4 + 3);
    load_fails(bad, GEN_VOCAB, "truncated");
    b[n] = 'x';
    spit(bad, b, n + 1);
    load_fails(bad, GEN_VOCAB, "more than vocab_size");

    unsigned char *c = malloc(n);
    int32_t v;
    memcpy(c, b, n);
    v = 0;
    memcpy(c, &v, 4); /* max_token_length 0 */
    spit(bad, c, n);
    load_fails(bad, GEN_VOCAB, "max_token_length 0");
    memcpy(c, b, n);
    v = -7;
    memcpy(c + 8, &v, 4); /* <unk>'s length */
    spit(bad, c, n);
    load_fails(bad, GEN_VOCAB, "token 0 has length -7");
    memcpy(c, b, n);
    v = 1 << 30;
    memcpy(c + 8, &v, 4);
    spit(bad, c, n);
    load_fails(bad, GEN_VOCAB, "token 0 has length");
    memcpy(c, b, n);
    float nan_score = __builtin_nanf("");
    memcpy(c + 4, &nan_score, 4);
    spit(bad, c, n);
    load_fails(bad, GEN_VOCAB, "non-finite score");
    memcpy(c, b, n);
    /* token 3 is "<0x00>" at offset 4 + (8+5) + (8+3) + (8+4) + 8 */
    size_t off = 4 + 13 + 11 + 12 + 8;
    cr_assert_eq(memcmp(c + off, "<0x00>", 6), 0);
    c[off + 4] = '1';
    spit(bad, c, n);
    load_fails(bad, GEN_VOCAB, "token 3 is not the byte token <0x00>");
    free(c);
    free(b);
}

/* ---- the generated vocabulary ------------------------------------------------------- */

Test(tokenizer, make_writes_exact_vocab_with_head_and_space)
{
    const int sizes[] = {259, 260, 300, GEN_VOCAB, 5000};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        const char *p = make_vocab(sizes[k]);
        tok_t *t = load_ok(p, sizes[k]);
        ref_vocab_t v = ref_load(p, sizes[k]);
        cr_assert_str_eq(v.str[0], "<unk>");
        cr_assert_str_eq(v.str[1], "<s>");
        cr_assert_str_eq(v.str[2], "</s>");
        char want[8];
        for (int b = 0; b < 256; b++) {
            snprintf(want, sizeof(want), "<0x%02X>", b);
            CHECK(strcmp(v.str[3 + b], want) == 0, "token %d is %s", 3 + b, v.str[3 + b]);
        }
        if (sizes[k] == 259) {
            /* no " " piece: the dummy prefix and every character fall back to bytes */
            int out[8];
            cr_assert_eq(tok_encode(t, "hi", 2, false, false, out, 8), 3);
            cr_assert_eq(out[0], 3 + ' ');
            cr_assert_eq(out[1], 3 + 'h');
            cr_assert_eq(out[2], 3 + 'i');
        }
        if (sizes[k] > 259) {
            cr_assert_neq(ref_lookup(&v, " "), -1, "no space piece for the dummy prefix");
            /* no SentencePiece "\xE2\x96\x81" meta-space: spaces are plain bytes */
            for (int i = 259; i < v.n; i++)
                CHECK(strstr(v.str[i], "\xE2\x96\x81") == NULL, "piece %d", i);
        }
        for (int i = 260; i < v.n; i++)
            CHECK(v.score[i] <= v.score[i - 1], "scores must fall with merge rank");
        ref_free(&v);
        tok_destroy(t);
    }
    char err[128] = "";
    cr_assert_eq(tok_make(path_of("x.bin"), 258, err, sizeof(err)), LS_ERR_INVALID);
    cr_assert(strstr(err, "258") != NULL);
}

Test(tokenizer, make_learns_useful_merges)
{
    tok_t *t = load_ok(make_vocab(GEN_VOCAB), GEN_VOCAB);
    int out[64];
    const char *s = "Once upon a time, there was a little girl named Lily.";
    int n = tok_encode(t, s, strlen(s), false, false, out, 64);
    cr_assert_gt(n, 0);
    cr_assert_lt(n, 25, "%d tokens for %zu bytes: merges are not working", n, strlen(s));
    tok_destroy(t);
}
