/*
 * cache_lexicon.h - word normalization for the n-gram embedder, from WordNet's
 * dictionary files (Debian's wordnet-base puts them in /usr/share/wordnet).
 *
 * A word goes through three steps, each measured on tests/data/semcache_tune.tsv
 * before it was kept (the README's "Semantic figures" has the numbers):
 *   1. lemma: the word itself when WordNet has it, else its base form from the
 *      exception lists (sank -> sink) or the detachment rules (leaves -> leaf,
 *      calories -> calorie, biggest -> big);
 *   2. spelling: a word that has no lemma and is at least 5 letters long becomes the
 *      most frequent lemma one edit away (a letter dropped, added, changed or two
 *      letters swapped, never the first letter: populaton -> population, while iphone
 *      stays); forms WordNet lists first, their plurals only when there is none
 *      (calroies -> calories -> calorie);
 *   3. synonym: the lemma becomes the most frequent word that shares a synset with it
 *      among the first `senses` senses of both words, followed to a fixed point, so
 *      biggest and largest both become large.  Frequencies are SemCor tag counts
 *      (cntlist.rev).
 *
 * Loading reads the index.*, *.exc and cntlist.rev files once (about 77,000 one-word
 * lemmas, some tens of milliseconds, about 3.5 MB with a 256 KiB filter of the known
 * forms); afterwards the lexicon is read-only and any number of threads may use it at
 * once.
 */
#ifndef CACHE_LEXICON_H
#define CACHE_LEXICON_H

#include <stdbool.h>
#include <stddef.h>

typedef struct cache_lexicon cache_lexicon_t;

typedef struct {
    int senses;    /* senses of each word that may make a synonym (0: no synonyms);
                      default 1 */
    bool spelling; /* correct words WordNet does not know; default true */
} cache_lexicon_config_t;

/* Fills cfg with the defaults above. */
void cache_lexicon_config_init(cache_lexicon_config_t *cfg);

/* Loads the WordNet dictionary in directory dir (cfg NULL: defaults).  Returns the
 * lexicon, or NULL with the reason in err (a missing or unreadable file). */
cache_lexicon_t *cache_lexicon_load(const char *dir, const cache_lexicon_config_t *cfg, char *err,
                                    size_t err_len);

/* Where Debian's wordnet-base puts the dictionary. */
#define CACHE_LEXICON_DEFAULT_DIR "/usr/share/wordnet"

/* The lexicon a setting names, with options cfg (NULL: defaults): "none" or "" gives
 * *out NULL;
 * "auto" loads CACHE_LEXICON_DEFAULT_DIR, or gives *out NULL with the reason in err when
 * it cannot be loaded; any other value is a directory that must load.  Returns LS_OK,
 * or an error with the reason in err. */
int cache_lexicon_open(const char *setting, const cache_lexicon_config_t *cfg,
                       cache_lexicon_t **out, char *err, size_t err_len);

/* Frees the lexicon; NULL is a no-op. */
void cache_lexicon_destroy(cache_lexicon_t *lex);

/* Lemmas loaded. */
size_t cache_lexicon_size(const cache_lexicon_t *lex);

/* The normalized form of the lowercase word w[0..len): a pointer to the lexicon's own
 * copy (valid while the lexicon lives) with its length in *out_len, or NULL when the
 * lexicon has nothing to say (the word is kept as it is). */
const char *cache_lexicon_normalize(const cache_lexicon_t *lex, const char *w, size_t len,
                                    size_t *out_len);

#endif
