/*
 * cache_guard.h - what must agree between two prompts before one's cached answer may
 * serve the other, however similar their embeddings are.
 *
 * A similarity score cannot see that "convert 5 miles to km" and "convert 5 km to
 * miles", or "World War 1" and "World War 2", want different answers: nearly every word
 * is shared.  A guard signature records the few things whose change changes the answer,
 * and cache_guard_check vetoes a semantic hit when they differ:
 *   - numbers: the multiset of numbers (digits, number words up to twenty, ordinals
 *     such as "1st" or "third", decimals), so 5 vs 50 or 1 vs 2 differ;
 *   - units: the set of unit words (metres and miles, kg and pounds, Celsius and
 *     Fahrenheit, hours and minutes, currencies ...), abbreviations and plurals folded;
 *   - negation: whether the prompt is negated (not, no, never, without, n't ...), and
 *     a word negated by its prefix in one prompt where the other has the word itself
 *     ("pasteurized" / "unpasteurized", "metals" / "nonmetals");
 *   - entities: capitalized words that do not start a sentence (names of places,
 *     people, companies, languages): each must appear, in any case, in the other
 *     prompt, so a change of case alone is not a veto;
 *   - order: the order in which the numbers, units and entities both prompts hold
 *     appear ("Is Seattle north of Portland?"), and, when a prompt holds a direction
 *     word (to, into, from, than, per, vs; "in" after a number or unit) or is a yes/no
 *     question (starts with is, does, can ...), the order of the other words that
 *     carry meaning ("convert a list to a string", "Is every square a rectangle?").
 *     The price: a question asked with its names or terms the other way round ("the
 *     distance between Rome and Paris") is missed, a miss being better than a wrong
 *     answer.  A question about the subject and one about the object ("Who beat
 *     Foreman?", "Who did Foreman beat?") differ too.
 * No model and no word list beyond the small tables in cache_guard.c (looked up through
 * one hash table, built on first use under pthread_once).  Thread-safe.
 */
#ifndef CACHE_GUARD_H
#define CACHE_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    CACHE_GUARD_OK = 0,
    CACHE_GUARD_NUMBER,
    CACHE_GUARD_UNIT,
    CACHE_GUARD_NEGATION,
    CACHE_GUARD_ENTITY,
    CACHE_GUARD_ORDER,
    CACHE_GUARD_REASONS /* count */
} cache_guard_reason_t;

#define CACHE_GUARD_MAX 8      /* numbers, units or entities kept per prompt */
#define CACHE_GUARD_ANCHORS 16 /* anchors or content words kept per prompt */

/* Fixed-size (about 300 bytes), so the semantic index can keep one per entry. */
typedef struct {
    uint64_t numbers[CACHE_GUARD_MAX]; /* sorted */
    uint64_t units[CACHE_GUARD_MAX];   /* sorted, no repeats */
    uint64_t entities[CACHE_GUARD_MAX];
    uint64_t anchors[CACHE_GUARD_ANCHORS]; /* numbers, units and entities in text order */
    uint64_t content[CACHE_GUARD_ANCHORS]; /* the other words that carry meaning, in order */
    uint64_t words[8];                 /* a 512-bit Bloom filter of every word, lowercased,
                                          for entity membership (false positives, which
                                          only let a hit through, are rare for prompts) */
    uint64_t prefixed[CACHE_GUARD_MAX][2]; /* words negated by a prefix: the word without
                                              it, and the word */
    uint64_t preps[CACHE_GUARD_MAX][2]; /* a direction word (or "in") and the first word
                                           after it that carries meaning */
    uint8_t n_numbers, n_units, n_entities, n_anchors, n_content, n_prefixed, n_preps;
    bool negated, directed, yesno;
    bool who, who_object; /* starts with who or whom; followed by do, does or did */
    bool overflow; /* more than CACHE_GUARD_MAX of a kind: the excess is not compared */
} cache_guard_sig_t;

/* The signature of text[0..len). */
void cache_guard_sig(const char *text, size_t len, cache_guard_sig_t *out);

/* CACHE_GUARD_OK when stored's answer may serve query as far as the guards can tell,
 * else the first reason found (in the enum's order). */
cache_guard_reason_t cache_guard_check(const cache_guard_sig_t *stored,
                                       const cache_guard_sig_t *query);

/* "number", "unit", "negation", "entity", "order" ("ok" for CACHE_GUARD_OK). */
const char *cache_guard_reason_name(cache_guard_reason_t r);

#endif
