#define _POSIX_C_SOURCE 200809L
/*
 * The lexicon is one open-addressing hash table of words.  A word is a lemma (from an
 * index.* file) or an inflected form (from a *.exc file) that points at its lemma.
 * Each lemma carries its SemCor frequency and, once loading ends, its canonical form:
 * the end of the chain lemma -> most frequent close synonym -> ..., which only ever
 * moves to a strictly better word (more frequent, then shorter, then alphabetically
 * first), so it cannot loop.
 *
 * Synonyms come from the index files alone: an index line lists a lemma's synsets in
 * sense order, so two lemmas that name the same synset among their first `senses`
 * entries are close synonyms.  The synset data files are never read.
 */
#include "cache/cache_lexicon.h"

#include "base/err.h"
#include "base/log.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORD_MAX 40
#define FILTER_WORDS (1u << 15) /* 2^21 bits, 256 KiB: about 8 % of them set */
#define FILTER_MASK (FILTER_WORDS - 1)

typedef struct {
    uint32_t off; /* into lex->chars */
    uint16_t len;
    bool lemma;    /* else an inflected form */
    uint32_t freq; /* SemCor tag count (lemmas) */
    int32_t base;  /* inflected forms: their lemma */
    int32_t canon; /* lemmas: their canonical form (itself when none) */
} entry_t;

struct cache_lexicon {
    cache_lexicon_config_t cfg;
    char *chars;
    size_t n_chars, cap_chars;
    entry_t *ents;
    size_t n_ents, cap_ents;
    uint32_t *slots; /* entry index + 1; 0 = empty */
    size_t n_slots;
    size_t n_lemmas;
    uint64_t *filter; /* FILTER_WORDS words: one bit per known form, set once loaded */
};

/* realloc that aborts like ls_xmalloc: the lexicon is built once, at start. */
static void *xrealloc(void *p, size_t size)
{
    void *q = realloc(p, size);
    if (!q) {
        LS_LOG_ERROR("cache", "out of memory loading the lexicon bytes=%zu", size);
        abort();
    }
    return q;
}

void cache_lexicon_config_init(cache_lexicon_config_t *cfg)
{
    cfg->senses = 1;
    cfg->spelling = true;
}

static uint64_t hash_word(const char *w, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)w[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static int32_t find(const cache_lexicon_t *lex, const char *w, size_t len)
{
    uint64_t h = hash_word(w, len);
    /* most lookups are a spelling search's non-words: the filter turns them away before
     * the table, whose probes miss the CPU cache */
    if (lex->filter && !(lex->filter[(h >> 32) & FILTER_MASK] & (1ull << (h >> 58))))
        return -1;
    size_t mask = lex->n_slots - 1;
    for (size_t s = h & mask;; s = (s + 1) & mask) {
        uint32_t v = lex->slots[s];
        if (!v)
            return -1;
        const entry_t *e = &lex->ents[v - 1];
        if (e->len == len && memcmp(lex->chars + e->off, w, len) == 0)
            return (int32_t)(v - 1);
    }
}

static void grow_slots(cache_lexicon_t *lex)
{
    size_t n = lex->n_slots ? lex->n_slots * 2 : 1u << 16;
    free(lex->slots);
    lex->slots = ls_xcalloc(n, sizeof(uint32_t));
    lex->n_slots = n;
    for (size_t i = 0; i < lex->n_ents; i++) {
        const entry_t *e = &lex->ents[i];
        size_t s = hash_word(lex->chars + e->off, e->len) & (n - 1);
        while (lex->slots[s])
            s = (s + 1) & (n - 1);
        lex->slots[s] = (uint32_t)(i + 1);
    }
}

/* The entry for w, added (as an inflected form without a lemma) when new. */
static int32_t intern(cache_lexicon_t *lex, const char *w, size_t len)
{
    int32_t id = find(lex, w, len);
    if (id >= 0)
        return id;
    if (lex->n_chars + len > lex->cap_chars) {
        lex->cap_chars = (lex->cap_chars + len) * 2;
        lex->chars = xrealloc(lex->chars, lex->cap_chars);
    }
    memcpy(lex->chars + lex->n_chars, w, len);
    if (lex->n_ents == lex->cap_ents) {
        lex->cap_ents = lex->cap_ents ? lex->cap_ents * 2 : 4096;
        lex->ents = xrealloc(lex->ents, lex->cap_ents * sizeof(entry_t));
    }
    id = (int32_t)lex->n_ents++;
    lex->ents[id] = (entry_t){(uint32_t)lex->n_chars, (uint16_t)len, false, 0, -1, id};
    lex->n_chars += len;
    if (lex->n_ents * 2 > lex->n_slots) {
        grow_slots(lex);
    } else {
        size_t s = hash_word(w, len) & (lex->n_slots - 1);
        while (lex->slots[s])
            s = (s + 1) & (lex->n_slots - 1);
        lex->slots[s] = (uint32_t)(id + 1);
    }
    return id;
}

/* Single words of letters only: WordNet's collocations (ice_cream) and abbreviations
 * never match one token of a prompt. */
static bool plain_word(const char *w, size_t len)
{
    if (len < 2 || len > WORD_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (w[i] < 'a' || w[i] > 'z')
            return false;
    return true;
}

/* True when a is a better representative than b. */
static bool better(const cache_lexicon_t *lex, int32_t a, int32_t b)
{
    const entry_t *x = &lex->ents[a], *y = &lex->ents[b];
    if (x->freq != y->freq)
        return x->freq > y->freq;
    if (x->len != y->len)
        return x->len < y->len;
    return memcmp(lex->chars + x->off, lex->chars + y->off, x->len) < 0;
}

typedef struct {
    uint64_t synset; /* pos << 32 | offset */
    int32_t word;
} sense_t;

typedef struct {
    sense_t *v;
    size_t n, cap;
} senses_t;

static int cmp_sense(const void *a, const void *b)
{
    const sense_t *x = a, *y = b;
    if (x->synset != y->synset)
        return x->synset < y->synset ? -1 : 1;
    return (x->word > y->word) - (x->word < y->word);
}

static FILE *open_in(const char *dir, const char *name, char *err, size_t err_len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        ls_set_err(err, err_len, "%s: %s", path, strerror(errno));
    return f;
}

/* index.<pos>: "lemma pos synset_cnt p_cnt [ptr...] sense_cnt tagsense_cnt offset..." */
static int load_index(cache_lexicon_t *lex, const char *dir, const char *name, unsigned pos,
                      senses_t *senses, char *err, size_t err_len)
{
    FILE *f = open_in(dir, name, err, err_len);
    if (!f)
        return LS_ERR_IO;
    char line[8192];
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == ' ') /* the licence header */
            continue;
        char *save = NULL;
        char *lemma = strtok_r(line, " \n", &save);
        char *tok = lemma ? strtok_r(NULL, " \n", &save) : NULL; /* pos */
        char *cnt = tok ? strtok_r(NULL, " \n", &save) : NULL;
        char *pcnt = cnt ? strtok_r(NULL, " \n", &save) : NULL;
        if (!pcnt || !plain_word(lemma, strlen(lemma)))
            continue;
        long n_synsets = strtol(cnt, NULL, 10), n_ptrs = strtol(pcnt, NULL, 10);
        for (long i = 0; i < n_ptrs + 2 && tok; i++) /* pointers, sense_cnt, tagsense_cnt */
            tok = strtok_r(NULL, " \n", &save);
        if (!tok)
            continue;
        int32_t id = intern(lex, lemma, strlen(lemma));
        if (!lex->ents[id].lemma) {
            lex->ents[id].lemma = true;
            lex->ents[id].base = -1;
            lex->n_lemmas++;
        }
        for (long i = 0; i < n_synsets && i < lex->cfg.senses; i++) {
            tok = strtok_r(NULL, " \n", &save);
            if (!tok)
                break;
            uint64_t key = (uint64_t)pos << 32 | (uint64_t)strtoul(tok, NULL, 10);
            if (senses->n == senses->cap) {
                senses->cap = senses->cap ? senses->cap * 2 : 65536;
                senses->v = xrealloc(senses->v, senses->cap * sizeof(sense_t));
            }
            senses->v[senses->n++] = (sense_t){key, id};
        }
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        ls_set_err(err, err_len, "%s/%s: read error", dir, name);
        return LS_ERR_IO;
    }
    return LS_OK;
}

/* <pos>.exc: "inflected base [base...]"; the first base that is a lemma wins. */
static int load_exceptions(cache_lexicon_t *lex, const char *dir, const char *name, char *err,
                           size_t err_len)
{
    FILE *f = open_in(dir, name, err, err_len);
    if (!f)
        return LS_ERR_IO;
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        char *save = NULL;
        char *form = strtok_r(line, " \n", &save);
        if (!form || !plain_word(form, strlen(form)))
            continue;
        int32_t have = find(lex, form, strlen(form));
        if (have >= 0 && (lex->ents[have].lemma || lex->ents[have].base >= 0))
            continue;
        for (char *b = strtok_r(NULL, " \n", &save); b; b = strtok_r(NULL, " \n", &save)) {
            int32_t base = find(lex, b, strlen(b));
            if (base >= 0 && lex->ents[base].lemma) {
                int32_t id = intern(lex, form, strlen(form));
                lex->ents[id].base = base;
                break;
            }
        }
    }
    fclose(f);
    return LS_OK;
}

/* cntlist.rev: "lemma%sense_key_rest sense_number tag_cnt" */
static int load_counts(cache_lexicon_t *lex, const char *dir, char *err, size_t err_len)
{
    FILE *f = open_in(dir, "cntlist.rev", err, err_len);
    if (!f)
        return LS_ERR_IO;
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        char *pct = strchr(line, '%');
        char *sp = strrchr(line, ' ');
        if (!pct || !sp)
            continue;
        int32_t id = find(lex, line, (size_t)(pct - line));
        if (id >= 0 && lex->ents[id].lemma)
            lex->ents[id].freq += (uint32_t)strtoul(sp + 1, NULL, 10);
    }
    fclose(f);
    return LS_OK;
}

/* rep[w] = the best word sharing one of w's first senses synsets (w itself when none);
 * canon = rep followed to its end. */
static void link_synonyms(cache_lexicon_t *lex, senses_t *senses)
{
    int32_t *rep = ls_xcalloc(lex->n_ents, sizeof(int32_t));
    for (size_t i = 0; i < lex->n_ents; i++)
        rep[i] = (int32_t)i;
    if (senses->n)
        qsort(senses->v, senses->n, sizeof(sense_t), cmp_sense);
    for (size_t a = 0; a < senses->n;) {
        size_t b = a;
        int32_t best = senses->v[a].word;
        while (b < senses->n && senses->v[b].synset == senses->v[a].synset) {
            if (better(lex, senses->v[b].word, best))
                best = senses->v[b].word;
            b++;
        }
        for (size_t k = a; k < b; k++)
            if (better(lex, best, rep[senses->v[k].word]))
                rep[senses->v[k].word] = best;
        a = b;
    }
    for (size_t i = 0; i < lex->n_ents; i++) {
        int32_t c = (int32_t)i;
        while (rep[c] != c)
            c = rep[c];
        lex->ents[i].canon = c;
    }
    free(rep);
}

cache_lexicon_t *cache_lexicon_load(const char *dir, const cache_lexicon_config_t *cfg, char *err,
                                    size_t err_len)
{
    cache_lexicon_t *lex = ls_xcalloc(1, sizeof(*lex));
    if (cfg)
        lex->cfg = *cfg;
    else
        cache_lexicon_config_init(&lex->cfg);
    grow_slots(lex);
    static const char *const k_pos[] = {"noun", "verb", "adj", "adv"};
    senses_t senses = {NULL, 0, 0};
    int rc = LS_OK;
    char name[32];
    for (unsigned p = 0; p < 4 && rc == LS_OK; p++) {
        snprintf(name, sizeof(name), "index.%s", k_pos[p]);
        rc = load_index(lex, dir, name, p, &senses, err, err_len);
    }
    for (unsigned p = 0; p < 4 && rc == LS_OK; p++) {
        snprintf(name, sizeof(name), "%s.exc", k_pos[p]);
        rc = load_exceptions(lex, dir, name, err, err_len);
    }
    if (rc == LS_OK)
        rc = load_counts(lex, dir, err, err_len);
    if (rc == LS_OK && lex->n_lemmas == 0) {
        ls_set_err(err, err_len, "%s: no WordNet lemmas in index.*", dir);
        rc = LS_ERR_INVALID;
    }
    if (rc == LS_OK)
        link_synonyms(lex, &senses);
    if (rc == LS_OK) {
        uint64_t *filter = ls_xcalloc(FILTER_WORDS, sizeof(uint64_t));
        for (size_t i = 0; i < lex->n_ents; i++) {
            uint64_t h = hash_word(lex->chars + lex->ents[i].off, lex->ents[i].len);
            filter[(h >> 32) & FILTER_MASK] |= 1ull << (h >> 58);
        }
        lex->filter = filter;
    }
    free(senses.v);
    if (rc != LS_OK) {
        cache_lexicon_destroy(lex);
        return NULL;
    }
    return lex;
}

int cache_lexicon_open(const char *setting, const cache_lexicon_config_t *cfg,
                       cache_lexicon_t **out, char *err, size_t err_len)
{
    *out = NULL;
    if (err_len)
        err[0] = '\0';
    if (!setting || !*setting || strcmp(setting, "none") == 0)
        return LS_OK;
    bool guess = strcmp(setting, "auto") == 0;
    *out = cache_lexicon_load(guess ? CACHE_LEXICON_DEFAULT_DIR : setting, cfg, err, err_len);
    return *out || guess ? LS_OK : LS_ERR_INVALID;
}

void cache_lexicon_destroy(cache_lexicon_t *lex)
{
    if (!lex)
        return;
    free(lex->chars);
    free(lex->ents);
    free(lex->slots);
    free(lex->filter);
    free(lex);
}

size_t cache_lexicon_size(const cache_lexicon_t *lex)
{
    return lex->n_lemmas;
}

/* The lemma entry of w when WordNet knows the form itself (a lemma or an exception). */
static int32_t known(const cache_lexicon_t *lex, const char *w, size_t len)
{
    int32_t id = find(lex, w, len);
    if (id < 0)
        return -1;
    return lex->ents[id].lemma ? id : lex->ents[id].base;
}

/* WordNet's detachment rules (noun, verb and adjective suffixes), most specific first;
 * a doubled final consonant left by -er/-est/-ed/-ing is also tried single
 * (bigger -> bigg -> big). */
static const char *const k_rules[][2] = {
    {"ies", "y"},   {"ches", "ch"}, {"shes", "sh"}, {"ses", "s"}, {"xes", "x"}, {"zes", "z"},
    {"men", "man"}, {"es", "e"},    {"es", ""},     {"s", ""},    {"ed", "e"},  {"ed", ""},
    {"ing", "e"},   {"ing", ""},    {"est", "e"},   {"est", ""},  {"er", "e"},  {"er", ""},
};

static int32_t lemma_of(const cache_lexicon_t *lex, const char *w, size_t len)
{
    int32_t id = known(lex, w, len);
    if (id >= 0)
        return id;
    int32_t best = -1;
    char buf[WORD_MAX + 4];
    for (size_t r = 0; r < sizeof(k_rules) / sizeof(k_rules[0]); r++) {
        size_t sl = strlen(k_rules[r][0]), rl = strlen(k_rules[r][1]);
        if (len <= sl + 1 || memcmp(w + len - sl, k_rules[r][0], sl) != 0)
            continue;
        size_t stem = len - sl;
        memcpy(buf, w, stem);
        memcpy(buf + stem, k_rules[r][1], rl);
        int32_t c = known(lex, buf, stem + rl);
        if (c < 0 && rl == 0 && stem >= 3 && buf[stem - 1] == buf[stem - 2] &&
            strchr("aeiou", buf[stem - 1]) == NULL)
            c = known(lex, buf, stem - 1);
        if (c >= 0 && (best < 0 || better(lex, c, best)))
            best = c;
    }
    return best;
}

/* The lemma of w[0..len) as the plural (-s, -es, -ies) of a form WordNet lists. */
static int32_t plural_of_known(const cache_lexicon_t *lex, char *w, size_t len)
{
    int32_t id = -1;
    if (len > 3 && w[len - 1] == 's') {
        id = known(lex, w, len - 1);
        if (id < 0 && w[len - 2] == 'e')
            id = known(lex, w, len - 2);
        if (id < 0 && len > 4 && w[len - 2] == 'e' && w[len - 3] == 'i') {
            w[len - 3] = 'y';
            id = known(lex, w, len - 2);
            w[len - 3] = 'i';
        }
    }
    return id;
}

/* The best lemma one edit from w (w itself has none). */
static int32_t respell(const cache_lexicon_t *lex, const char *w, size_t len)
{
    char buf[WORD_MAX + 2];
    int32_t best = -1;
#define TRY(n)                                                                                     \
    do {                                                                                           \
        int32_t c_ = known(lex, buf, (n));                                                         \
        if (c_ >= 0 && (best < 0 || better(lex, c_, best)))                                        \
            best = c_;                                                                             \
    } while (0)
#define TRY_PLURAL(n)                                                                              \
    do {                                                                                           \
        int32_t c_ = plural_of_known(lex, buf, (n));                                               \
        if (c_ >= 0 && (best < 0 || better(lex, c_, best)))                                        \
            best = c_;                                                                             \
    } while (0)
    /* The first letter is kept: people seldom mistype it, and product names that are a
     * word with a letter in front ("iphone") must not become the word.  Forms WordNet
     * lists first; then, only when there is none, plurals of them, for the swapped or
     * dropped letter of "calroies" or "potatos".  Running every suffix rule on every
     * variant ("scrathcing" -> "scratching" -> "scratch") found nothing more on the
     * tuning set and costs a rule pass per variant. */
    for (size_t i = 1; i < len; i++) { /* a letter dropped */
        memcpy(buf, w, i);
        memcpy(buf + i, w + i + 1, len - i - 1);
        TRY(len - 1);
    }
    for (size_t i = 1; i + 1 < len; i++) { /* two letters swapped */
        memcpy(buf, w, len);
        buf[i] = w[i + 1];
        buf[i + 1] = w[i];
        TRY(len);
    }
    for (size_t i = 1; i < len; i++) { /* a letter changed */
        memcpy(buf, w, len);
        for (char c = 'a'; c <= 'z'; c++)
            if (c != w[i]) {
                buf[i] = c;
                TRY(len);
            }
    }
    for (size_t i = 1; i <= len; i++) { /* a letter added */
        memcpy(buf, w, i);
        memcpy(buf + i + 1, w + i, len - i);
        for (char c = 'a'; c <= 'z'; c++) {
            buf[i] = c;
            TRY(len + 1);
        }
    }
    if (best >= 0)
        return best;
    for (size_t i = 1; i < len; i++) {
        memcpy(buf, w, i);
        memcpy(buf + i, w + i + 1, len - i - 1);
        TRY_PLURAL(len - 1);
    }
    for (size_t i = 1; i + 1 < len; i++) {
        memcpy(buf, w, len);
        buf[i] = w[i + 1];
        buf[i + 1] = w[i];
        TRY_PLURAL(len);
    }
#undef TRY
#undef TRY_PLURAL
    return best;
}

const char *cache_lexicon_normalize(const cache_lexicon_t *lex, const char *w, size_t len,
                                    size_t *out_len)
{
    if (!plain_word(w, len))
        return NULL;
    int32_t id = lemma_of(lex, w, len);
    if (id < 0 && lex->cfg.spelling && len >= 5)
        id = respell(lex, w, len);
    if (id < 0)
        return NULL;
    const entry_t *e = &lex->ents[lex->ents[id].canon];
    *out_len = e->len;
    return lex->chars + e->off;
}
