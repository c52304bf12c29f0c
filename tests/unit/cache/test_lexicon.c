/*
 * test_lexicon.c - WordNet-based word normalization (libs/cache/cache_lexicon.c): the
 * file formats and the rules on a small dictionary written here, then the real
 * dictionary Debian's wordnet-base installs (tools/install-deps.sh), where synonyms
 * must meet and opposites must stay apart.
 */
#include "base/err.h"
#include "cache/cache_embed.h"
#include "cache/cache_lexicon.h"
#include "support/tmpdir.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define WORDNET "/usr/share/wordnet"

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* Four files per part of speech as WordNet lays them out: a licence header of lines
 * that start with spaces, then "lemma pos synset_cnt p_cnt [ptr...] sense_cnt
 * tagsense_cnt offset...". */
static void small_dictionary(const char *dir)
{
    write_file(dir, "index.noun",
               "  1 This software and database is being provided\n"
               "  2 under the WordNet licence\n"
               "car n 2 1 @ 2 2 00000100 00000200 \n"
               "auto n 1 1 @ 1 0 00000100 \n"
               "automobile n 1 1 @ 1 0 00000100 \n"
               "calorie n 1 0 1 0 00000300 \n"
               "population n 1 0 1 0 00000400 \n"
               "ice_cream n 1 0 1 0 00000500 \n"
               "railcar n 1 0 1 0 00000200 \n");
    write_file(dir, "index.verb",
               "  1 header\n"
               "sink v 1 0 1 1 00000700 \n"
               "buy v 1 1 @ 1 1 00000800 \n"
               "purchase v 1 1 @ 1 1 00000800 \n");
    write_file(dir, "index.adj",
               "  1 header\nbig a 1 0 1 1 00000900 \nlarge a 1 0 1 1 00000900 \n");
    write_file(dir, "index.adv", "  1 header\n");
    write_file(dir, "noun.exc", "");
    write_file(dir, "verb.exc", "sank sink\nbought buy\n");
    write_file(dir, "adj.exc", "biggest big\n");
    write_file(dir, "adv.exc", "");
    /* frequencies: car 30, automobile 2, buy 40, purchase 5, large 9, big 7 */
    write_file(dir, "cntlist.rev",
               "car%1:06:00:: 1 30\nautomobile%1:06:00:: 1 2\nbuy%2:40:00:: 1 40\n"
               "purchase%2:40:00:: 1 5\nlarge%3:00:00:: 1 9\nbig%3:00:01:: 1 7\n");
}

static const char *norm(const cache_lexicon_t *lex, const char *w, char *buf, size_t cap)
{
    size_t n = 0;
    const char *r = cache_lexicon_normalize(lex, w, strlen(w), &n);
    if (!r)
        return NULL;
    snprintf(buf, cap, "%.*s", (int)n, r);
    return buf;
}

/* want NULL: the lexicon must have nothing to say about w. */
static void expect_norm(const cache_lexicon_t *lex, const char *w, const char *want)
{
    char b[64];
    const char *got = norm(lex, w, b, sizeof(b));
    if (want)
        cr_expect(got && strcmp(got, want) == 0, "%s -> %s, want %s", w, got ? got : "(none)",
                  want);
    else
        cr_expect_null(got, "%s -> %s, want none", w, got);
}

#define EXPECT_NORM expect_norm

static test_tmpdir_t g_dir;

static const char *new_dir(void)
{
    test_tmpdir_remove(&g_dir);
    cr_assert_eq(test_tmpdir_make(&g_dir, "llmserve-lexicon"), 0);
    return g_dir.path;
}

static void cleanup(void)
{
    test_tmpdir_remove(&g_dir);
}

static cache_lexicon_t *small(int senses, bool spelling)
{
    const char *dir = new_dir();
    small_dictionary(dir);
    cache_lexicon_config_t cfg;
    cache_lexicon_config_init(&cfg);
    cfg.senses = senses;
    cfg.spelling = spelling;
    char err[256] = "";
    cache_lexicon_t *lex = cache_lexicon_load(dir, &cfg, err, sizeof(err));
    cr_assert_not_null(lex, "%s", err);
    return lex;
}

Test(lexicon, lemmas_exceptions_and_rules, .fini = cleanup)
{
    cache_lexicon_t *lex = small(0, false);
    cr_expect_eq(cache_lexicon_size(lex), 11); /* ice_cream is not a single word */
    EXPECT_NORM(lex, "car", "car");
    EXPECT_NORM(lex, "cars", "car");         /* -s */
    EXPECT_NORM(lex, "calories", "calorie"); /* -ies -> -y fails, -s works */
    EXPECT_NORM(lex, "sank", "sink");        /* verb.exc */
    EXPECT_NORM(lex, "bought", "buy");
    EXPECT_NORM(lex, "biggest", "big");        /* adj.exc */
    EXPECT_NORM(lex, "bigger", "big");         /* -er and the doubled consonant */
    EXPECT_NORM(lex, "buying", "buy");         /* -ing */
    EXPECT_NORM(lex, "purchased", "purchase"); /* -ed -> -e */
    EXPECT_NORM(lex, "ice", NULL);
    EXPECT_NORM(lex, "zebra", NULL);
    EXPECT_NORM(lex, "car2", NULL);      /* not a plain word */
    EXPECT_NORM(lex, "populaton", NULL); /* spelling is off */
    cache_lexicon_destroy(lex);
}

Test(lexicon, synonyms_go_to_the_most_frequent_word_of_a_shared_first_sense, .fini = cleanup)
{
    cache_lexicon_t *lex = small(1, false);
    EXPECT_NORM(lex, "automobile", "car"); /* car is more frequent */
    EXPECT_NORM(lex, "auto", "car");
    EXPECT_NORM(lex, "purchase", "buy");
    EXPECT_NORM(lex, "purchased", "buy");
    EXPECT_NORM(lex, "biggest", "large");
    /* railcar's first sense is car's second: not a close synonym with one sense... */
    EXPECT_NORM(lex, "railcar", "railcar");
    cache_lexicon_destroy(lex);
    /* ... but with two */
    lex = small(2, false);
    EXPECT_NORM(lex, "railcar", "car");
    cache_lexicon_destroy(lex);
}

Test(lexicon, spelling_one_edit_away_keeps_the_first_letter, .fini = cleanup)
{
    cache_lexicon_t *lex = small(1, true);
    EXPECT_NORM(lex, "populaton", "population");  /* dropped */
    EXPECT_NORM(lex, "popluation", "population"); /* swapped */
    EXPECT_NORM(lex, "populatoin", "population");
    EXPECT_NORM(lex, "pupulation", "population");  /* changed */
    EXPECT_NORM(lex, "populattion", "population"); /* added */
    EXPECT_NORM(lex, "calroies", "calorie");       /* swapped, then -s */
    EXPECT_NORM(lex, "opulation", NULL);           /* the first letter is never an edit */
    EXPECT_NORM(lex, "xpopulation", NULL);
    EXPECT_NORM(lex, "carr", NULL);       /* under five letters: not corrected */
    EXPECT_NORM(lex, "popolatoon", NULL); /* two edits */
    cache_lexicon_destroy(lex);
}

Test(lexicon, missing_files_are_an_error, .fini = cleanup)
{
    char err[256] = "";
    cr_expect_null(cache_lexicon_load("/nonexistent-wordnet", NULL, err, sizeof(err)));
    cr_expect(strstr(err, "/nonexistent-wordnet/index.noun") != NULL, "%s", err);
    const char *dir = new_dir();
    small_dictionary(dir);
    char path[1024];
    snprintf(path, sizeof(path), "%s/cntlist.rev", dir);
    cr_assert_eq(remove(path), 0);
    err[0] = '\0';
    cr_expect_null(cache_lexicon_load(dir, NULL, err, sizeof(err)));
    cr_expect(strstr(err, "cntlist.rev") != NULL, "%s", err);
    /* files without one lemma */
    dir = new_dir();
    small_dictionary(dir);
    write_file(dir, "index.noun", "  1 header\n");
    write_file(dir, "index.verb", "");
    write_file(dir, "index.adj", "");
    err[0] = '\0';
    cr_expect_null(cache_lexicon_load(dir, NULL, err, sizeof(err)));
    cr_expect(strstr(err, "no WordNet lemmas") != NULL, "%s", err);
}

/* ---- the real dictionary ------------------------------------------------------------- */

static cache_lexicon_t *wordnet(void)
{
    char err[256] = "";
    cache_lexicon_t *lex = cache_lexicon_load(WORDNET, NULL, err, sizeof(err));
    cr_assert_not_null(lex, "%s (tools/install-deps.sh installs wordnet-base)", err);
    cr_expect_gt(cache_lexicon_size(lex), 60000, "%zu lemmas", cache_lexicon_size(lex));
    return lex;
}

static void same(const cache_lexicon_t *lex, const char *a, const char *b, bool want)
{
    char x[64], y[64];
    const char *na = norm(lex, a, x, sizeof(x)), *nb = norm(lex, b, y, sizeof(y));
    bool eq = na && nb && strcmp(na, nb) == 0;
    cr_expect_eq(eq, want, "%s -> %s, %s -> %s: want %s", a, na ? na : "(none)", b,
                 nb ? nb : "(none)", want ? "the same word" : "different words");
}

Test(lexicon, wordnet_synonyms_meet_and_opposites_stay_apart)
{
    cache_lexicon_t *lex = wordnet();
    same(lex, "biggest", "largest", true);
    same(lex, "purchase", "buy", true);
    same(lex, "children", "kids", true);
    same(lex, "spectacles", "glasses", true);
    same(lex, "happened", "occurred", true);
    same(lex, "calculate", "compute", true);
    static const char *const opposites[][2] = {
        {"father", "mother"}, {"man", "woman"}, {"buy", "sell"},      {"hot", "cold"},
        {"north", "south"},   {"win", "lose"},  {"husband", "wife"},  {"increase", "decrease"},
        {"first", "last"},    {"day", "night"}, {"import", "export"}, {"cheap", "expensive"},
        {"king", "queen"},    {"cat", "dog"},   {"before", "after"},  {"open", "close"},
    };
    for (size_t i = 0; i < sizeof(opposites) / sizeof(opposites[0]); i++)
        same(lex, opposites[i][0], opposites[i][1], false);
    cache_lexicon_destroy(lex);
}

Test(lexicon, wordnet_spelling)
{
    cache_lexicon_t *lex = wordnet();
    same(lex, "populaton", "population", true);
    same(lex, "avacado", "avocado", true);
    same(lex, "photosythesis", "photosynthesis", true);
    same(lex, "scrambeld", "scrambled", true);
    EXPECT_NORM(lex, "iphone", NULL); /* not "phone" */
    cache_lexicon_destroy(lex);
}

typedef struct {
    const cache_lexicon_t *lex;
    int bad;
} race_t;

static void *normalize_many(void *arg)
{
    race_t *r = arg;
    static const char *const words[][2] = {
        {"biggest", "large"}, {"populaton", "population"}, {"sank", "sink"}, {"children", "child"}};
    for (int i = 0; i < 20000; i++) {
        char b[64];
        const char *got = norm(r->lex, words[i % 4][0], b, sizeof(b));
        if (!got || strcmp(got, words[i % 4][1]) != 0)
            r->bad++;
    }
    return NULL;
}

Test(lexicon, threads_share_one_lexicon)
{
    cache_lexicon_t *lex = wordnet();
    enum { N = 4 };
    pthread_t th[N];
    race_t r[N];
    for (int i = 0; i < N; i++) {
        r[i] = (race_t){lex, 0};
        pthread_create(&th[i], NULL, normalize_many, &r[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        cr_expect_eq(r[i].bad, 0, "thread %d: %d wrong", i, r[i].bad);
    }
    cache_lexicon_destroy(lex);
}

/* The embedder with the lexicon and the stemmer: paraphrases that differ only in
 * inflection, spelling or a close synonym embed the same; other words do not. */
Test(lexicon, embedder_with_lexicon_and_stems)
{
    cache_embed_ngram_config_t cfg;
    cache_embed_ngram_config_init(&cfg);
    cfg.lex = wordnet();
    cfg.stem = true;
    cache_embedder_t *e = cache_embed_ngram_create_cfg(&cfg);
    cr_assert_not_null(e);
    cache_embedder_t *plain = cache_embed_ngram_create(cfg.dim);
    static const char *const pairs[][2] = {
        {"What is the biggest ocean on Earth?", "What is the largest ocean on Earth?"},
        {"What is the population of Japan?", "what is the populaton of japan"},
        {"How many calories are in an avocado?", "How many calroies are in an avacado?"},
        {"Which plants grow in shady gardens?", "Which plant grows in a shady garden?"},
    };
    float a[512], b[512];
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        cr_assert_eq(e->embed(e, pairs[i][0], strlen(pairs[i][0]), a), LS_OK);
        cr_assert_eq(e->embed(e, pairs[i][1], strlen(pairs[i][1]), b), LS_OK);
        float with = cache_embed_cosine(a, b, 512);
        cr_expect_gt(with, 0.99f, "\"%s\" / \"%s\": %.3f", pairs[i][0], pairs[i][1], with);
        cr_assert_eq(plain->embed(plain, pairs[i][0], strlen(pairs[i][0]), a), LS_OK);
        cr_assert_eq(plain->embed(plain, pairs[i][1], strlen(pairs[i][1]), b), LS_OK);
        cr_expect_lt(cache_embed_cosine(a, b, 512), with, "pair %zu: no gain", i);
    }
    const char *x = "How do I sell my car?", *y = "How do I buy a truck?";
    cr_assert_eq(e->embed(e, x, strlen(x), a), LS_OK);
    cr_assert_eq(e->embed(e, y, strlen(y), b), LS_OK);
    cr_expect_lt(cache_embed_cosine(a, b, 512), 0.5f);
    cache_embedder_destroy(plain);
    cache_embedder_destroy(e);
}
