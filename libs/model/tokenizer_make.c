/*
 * tokenizer_make.c - learns a small BPE vocabulary from a built-in text and writes it
 * in llama2.c's tokenizer.bin format.
 *
 * Training is the textbook loop (count adjacent symbol pairs over the distinct words,
 * weighted by how often each occurs; merge the most frequent; repeat).  The text is a
 * few kilobytes, so recounting every round costs milliseconds and keeps the code
 * obviously right; nothing here runs on a serving path.
 */
#define _GNU_SOURCE
#include "model/tokenizer_make.h"

#include "base/err.h"
#include "base/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAKE_MAX_VOCAB (1 << 24) /* scores are exact integers in fp32 up to here */

static const char corpus[] =
    "Once upon a time, there was a little girl named Lily. She lived in a small house "
    "near the big green forest with her mother, her father and a happy brown dog called "
    "Max. Every morning Lily and Max went outside to play in the garden. They ran after "
    "the birds, looked at the flowers and sang songs to the trees.\n"
    "One day, Lily saw a shiny red ball under a bush. She wanted to play with it, but the "
    "ball was stuck. \"Max, can you help me?\" she asked. Max wagged his tail and pushed "
    "the bush with his nose. The ball rolled out and Lily laughed. \"Thank you, Max! You "
    "are the best friend in the whole world.\"\n"
    "Later that day, the sky turned dark and the wind began to blow. Lily's mother "
    "called, \"Come inside, it is going to rain!\" Lily picked up the ball and ran to the "
    "door with Max. They sat by the warm fire and listened to the rain on the roof. Her "
    "father made hot milk and told them a story about a brave little boat that sailed "
    "across the sea to find its way home.\n"
    "When the story was over, Lily was very sleepy. She hugged her mother and father and "
    "said good night. Max curled up at the end of her bed. Lily closed her eyes and "
    "dreamed of the sea, the boat and the bright stars that showed it the way.\n"
    "The next morning the sun was shining again. The grass was wet and the air smelled "
    "fresh and clean. Lily and Max went back to the garden. They found a small frog "
    "sitting on a stone. The frog jumped, Max barked, and Lily clapped her hands. It was "
    "a new day, and there were many more things to see, to learn and to share with the "
    "people she loved.\n"
    "Tim was a boy who liked to build things. He had a box of blocks, some old wheels "
    "and a long piece of string. He wanted to make a car that could go fast down the "
    "hill. His sister Sue watched him work. \"What are you making?\" she asked. \"A car "
    "for both of us,\" said Tim. They worked together all afternoon, and when the car was "
    "ready they rode it down the hill, laughing all the way to the bottom.\n"
    "Numbers help us count: 1, 2, 3, 4, 5, 6, 7, 8, 9 and 10. Big words help us think: "
    "because, although, together, important, wonderful, beautiful, remember, question, "
    "answer, different, little, happy, friend, family, morning, evening, yesterday.\n";

typedef struct {
    char *bytes;
    int len;
} piece_t;

typedef struct {
    int *syms; /* symbol ids */
    int n;
    int count; /* occurrences in the text */
} word_t;

typedef struct {
    piece_t *pieces; /* every symbol ever made: characters first, then merges */
    int n_pieces, cap_pieces;
    word_t *words;
    int n_words;
} trainer_t;

/* Returns the id of the symbol with these bytes, adding it when new. */
static int intern(trainer_t *t, const char *b, int len, bool *added)
{
    for (int i = 0; i < t->n_pieces; i++) {
        if (t->pieces[i].len == len && memcmp(t->pieces[i].bytes, b, (size_t)len) == 0) {
            if (added)
                *added = false;
            return i;
        }
    }
    if (t->n_pieces == t->cap_pieces) {
        t->cap_pieces = t->cap_pieces ? 2 * t->cap_pieces : 256;
        piece_t *np = realloc(t->pieces, (size_t)t->cap_pieces * sizeof(*np));
        LS_ASSERT(np != NULL);
        t->pieces = np;
    }
    char *copy = ls_xmalloc((unsigned long)len);
    memcpy(copy, b, (size_t)len);
    t->pieces[t->n_pieces].bytes = copy;
    t->pieces[t->n_pieces].len = len;
    if (added)
        *added = true;
    return t->n_pieces++;
}

static int utf8_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0)
        return 2;
    if ((c & 0xF0) == 0xE0)
        return 3;
    return 4;
}

/* Splits the text at whitespace into distinct words, each with its leading space, as
 * symbols of one character each. */
static void split_words(trainer_t *t)
{
    const char *p = corpus, *end = corpus + sizeof(corpus) - 1;
    char buf[64];
    t->words = ls_xcalloc(sizeof(corpus), sizeof(word_t));
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\n'))
            p++;
        const char *w = p;
        while (p < end && *p != ' ' && *p != '\n')
            p++;
        if (p == w)
            break;
        int len = (int)(p - w) + 1;
        LS_ASSERT(len <= (int)sizeof(buf));
        buf[0] = ' ';
        memcpy(buf + 1, w, (size_t)len - 1);
        int found = -1;
        for (int i = 0; i < t->n_words && found < 0; i++) {
            word_t *x = &t->words[i];
            int xl = 0;
            for (int k = 0; k < x->n; k++)
                xl += t->pieces[x->syms[k]].len;
            if (xl != len)
                continue;
            int off = 0, k;
            for (k = 0; k < x->n; k++) {
                const piece_t *pc = &t->pieces[x->syms[k]];
                if (memcmp(buf + off, pc->bytes, (size_t)pc->len) != 0)
                    break;
                off += pc->len;
            }
            if (k == x->n)
                found = i;
        }
        if (found >= 0) {
            t->words[found].count++;
            continue;
        }
        word_t *nw = &t->words[t->n_words++];
        nw->syms = ls_xmalloc((unsigned long)len * sizeof(int));
        nw->count = 1;
        for (int off = 0; off < len;) {
            int cl = utf8_len((unsigned char)buf[off]);
            if (off + cl > len)
                cl = len - off;
            nw->syms[nw->n++] = intern(t, buf + off, cl, NULL);
            off += cl;
        }
    }
}

/* Finds the most frequent adjacent pair (ties: lowest left id, then right id).
 * Returns false when no word has two symbols left. */
static bool best_pair(const trainer_t *t, int *a_out, int *b_out)
{
    /* pairs are few (hundreds of distinct symbols, thousands of positions): count them
     * in a small open-addressing table rebuilt each round */
    size_t positions = 0;
    for (int i = 0; i < t->n_words; i++)
        positions += (size_t)t->words[i].n;
    size_t cap = 64;
    while (cap < 2 * positions)
        cap *= 2;
    uint64_t *keys = ls_xcalloc(cap, sizeof(uint64_t));
    long *counts = ls_xcalloc(cap, sizeof(long));
    bool any = false;
    uint64_t best_key = 0;
    long best_count = 0;
    for (int i = 0; i < t->n_words; i++) {
        const word_t *w = &t->words[i];
        for (int k = 0; k + 1 < w->n; k++) {
            /* +1 so that key 0 marks an empty slot */
            uint64_t key = (((uint64_t)w->syms[k] << 32) | (uint32_t)w->syms[k + 1]) + 1;
            size_t h = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
            while (keys[h] != 0 && keys[h] != key)
                h = (h + 1) & (cap - 1);
            keys[h] = key;
            counts[h] += w->count;
            if (!any || counts[h] > best_count || (counts[h] == best_count && key < best_key)) {
                best_count = counts[h];
                best_key = key;
                any = true;
            }
        }
    }
    free(keys);
    free(counts);
    if (!any)
        return false;
    *a_out = (int)((best_key - 1) >> 32);
    *b_out = (int)((best_key - 1) & 0xFFFFFFFFu);
    return true;
}

static void apply_merge(trainer_t *t, int a, int b, int ab)
{
    for (int i = 0; i < t->n_words; i++) {
        word_t *w = &t->words[i];
        int o = 0;
        for (int k = 0; k < w->n; k++) {
            if (k + 1 < w->n && w->syms[k] == a && w->syms[k + 1] == b) {
                w->syms[o++] = ab;
                k++;
            } else {
                w->syms[o++] = w->syms[k];
            }
        }
        w->n = o;
    }
}

static void trainer_free(trainer_t *t)
{
    for (int i = 0; i < t->n_pieces; i++)
        free(t->pieces[i].bytes);
    free(t->pieces);
    for (int i = 0; i < t->n_words; i++)
        free(t->words[i].syms);
    free(t->words);
}

static bool is_space(const piece_t *p)
{
    return p->len == 1 && p->bytes[0] == ' ';
}

/* Order of the single characters: the space, then by frequency, then by id. */
static bool char_before(const trainer_t *t, const long *freq, int c, int p)
{
    bool cs = is_space(&t->pieces[c]), ps = is_space(&t->pieces[p]);
    if (cs != ps)
        return cs;
    if (freq[c] != freq[p])
        return freq[c] > freq[p];
    return c < p;
}

static int write_token(FILE *f, float score, const char *b, int len)
{
    int32_t l = len;
    if (fwrite(&score, sizeof(score), 1, f) != 1 || fwrite(&l, sizeof(l), 1, f) != 1)
        return LS_ERR_IO;
    if (len > 0 && fwrite(b, 1, (size_t)len, f) != (size_t)len)
        return LS_ERR_IO;
    return LS_OK;
}

/* Chooses the vocabulary (order[] are piece ids; merged pieces first in merge order,
 * then characters by frequency) and writes the file. */
static int write_vocab(FILE *f, const trainer_t *t, const int *merges, int n_merges,
                       const int *chars, int n_chars, int n_extra)
{
    char name[24];
    int32_t max_len = 6; /* "<0xXX>" */
    for (int i = 0; i < n_merges; i++)
        if (t->pieces[merges[i]].len > max_len)
            max_len = t->pieces[merges[i]].len;
    for (int i = 0; i < n_chars; i++)
        if (t->pieces[chars[i]].len > max_len)
            max_len = t->pieces[chars[i]].len;
    if (n_extra > 0) {
        int l = snprintf(name, sizeof(name), "<extra_%d>", n_extra - 1);
        if (l > max_len)
            max_len = l;
    }
    if (fwrite(&max_len, sizeof(max_len), 1, f) != 1)
        return LS_ERR_IO;
    static const char *const head[] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++)
        if (write_token(f, 0.0f, head[i], (int)strlen(head[i])) != LS_OK)
            return LS_ERR_IO;
    for (int b = 0; b < 256; b++) {
        snprintf(name, sizeof(name), "<0x%02X>", b);
        if (write_token(f, 0.0f, name, 6) != LS_OK)
            return LS_ERR_IO;
    }
    int rank = 0;
    for (int i = 0; i < n_merges; i++, rank++) {
        const piece_t *pc = &t->pieces[merges[i]];
        if (write_token(f, (float)-(rank + 1), pc->bytes, pc->len) != LS_OK)
            return LS_ERR_IO;
    }
    for (int i = 0; i < n_extra; i++, rank++) {
        int l = snprintf(name, sizeof(name), "<extra_%d>", i);
        if (write_token(f, (float)-(rank + 1), name, l) != LS_OK)
            return LS_ERR_IO;
    }
    for (int i = 0; i < n_chars; i++, rank++) {
        const piece_t *pc = &t->pieces[chars[i]];
        if (write_token(f, (float)-(rank + 1), pc->bytes, pc->len) != LS_OK)
            return LS_ERR_IO;
    }
    return LS_OK;
}

int tok_make(const char *path, int vocab_size, char *err, size_t err_len)
{
    if (vocab_size < TOK_MAKE_MIN_VOCAB || vocab_size > MAKE_MAX_VOCAB) {
        ls_set_err(err, err_len, "%s: vocab_size %d out of range [%d, %d]", path, vocab_size,
                TOK_MAKE_MIN_VOCAB, MAKE_MAX_VOCAB);
        return LS_ERR_INVALID;
    }
    trainer_t t = {0};
    split_words(&t);
    int n_chars_all = t.n_pieces;

    /* characters by frequency, the space first (the encoder's dummy prefix) */
    long *freq = ls_xcalloc((size_t)n_chars_all, sizeof(long));
    for (int i = 0; i < t.n_words; i++)
        for (int k = 0; k < t.words[i].n; k++)
            freq[t.words[i].syms[k]] += t.words[i].count;
    int *chars = ls_xmalloc((unsigned long)n_chars_all * sizeof(int));
    for (int i = 0; i < n_chars_all; i++)
        chars[i] = i;
    for (int i = 1; i < n_chars_all; i++) { /* insertion sort: a few dozen entries */
        int c = chars[i], j = i;
        while (j > 0 && char_before(&t, freq, c, chars[j - 1])) {
            chars[j] = chars[j - 1];
            j--;
        }
        chars[j] = c;
    }
    free(freq);

    int slots = vocab_size - TOK_MAKE_MIN_VOCAB;
    int n_chars = slots < n_chars_all ? slots : n_chars_all;
    int budget = slots - n_chars;
    int *merges = ls_xmalloc((unsigned long)(budget > 0 ? budget : 1) * sizeof(int));
    int n_merges = 0;
    while (n_merges < budget) {
        int a, b;
        if (!best_pair(&t, &a, &b))
            break;
        char buf[128];
        int la = t.pieces[a].len, lb = t.pieces[b].len;
        LS_ASSERT(la + lb <= (int)sizeof(buf));
        memcpy(buf, t.pieces[a].bytes, (size_t)la);
        memcpy(buf + la, t.pieces[b].bytes, (size_t)lb);
        bool added;
        int ab = intern(&t, buf, la + lb, &added);
        apply_merge(&t, a, b, ab);
        if (added && ab >= n_chars_all)
            merges[n_merges++] = ab;
    }
    /* The built-in text yields about a thousand merges; a full-size vocabulary gets the
     * rest from concatenations of two learned pieces, so that a random-weight demo model
     * prints word-like fragments rather than placeholders.  Each is a valid BPE merge of
     * pieces already in the vocabulary, ranked after every learned one. */
    int n_learned = n_merges;
    for (long pair = 0; n_merges < budget && n_learned > 0 &&
                        pair < (long)n_learned * n_learned;
         pair++) {
        const piece_t *pa = &t.pieces[merges[pair % n_learned]];
        const piece_t *pb = &t.pieces[merges[(pair / n_learned + pair) % n_learned]];
        char buf[128];
        if (pa->len + pb->len > 24)
            continue;
        memcpy(buf, pa->bytes, (size_t)pa->len);
        memcpy(buf + pa->len, pb->bytes, (size_t)pb->len);
        bool added;
        int ab = intern(&t, buf, pa->len + pb->len, &added);
        if (added)
            merges[n_merges++] = ab;
    }
    int n_extra = budget - n_merges;

    int rc = LS_OK;
    size_t tmp_len = strlen(path) + 5;
    char *tmp = ls_xmalloc(tmp_len);
    snprintf(tmp, tmp_len, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        ls_set_err(err, err_len, "%s: cannot create: %s", tmp, strerror(errno));
        rc = LS_ERR_IO;
        goto out_free;
    }
    rc = write_vocab(f, &t, merges, n_merges, chars, n_chars, n_extra);
    if (fclose(f) != 0)
        rc = LS_ERR_IO;
    if (rc != LS_OK)
        ls_set_err(err, err_len, "%s: write failed: %s", path, strerror(errno));
    if (rc == LS_OK && rename(tmp, path) != 0) {
        ls_set_err(err, err_len, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        rc = LS_ERR_IO;
    }
    if (rc != LS_OK)
        unlink(tmp);
out_free:
    free(tmp);
    free(merges);
    free(chars);
    trainer_free(&t);
    return rc;
}
