/*
 * test_guard.c - the semantic cache's guards (libs/cache/cache_guard.c): which
 * differences between a stored and a later prompt veto a hit, and which do not, and
 * the guarded search of the semantic index (cache_semantic_search_guarded).
 */
#include "base/err.h"
#include "cache/cache_embed.h"
#include "cache/cache_guard.h"
#include "cache/cache_semantic.h"

#include <criterion/criterion.h>
#include <string.h>

static cache_guard_reason_t check(const char *stored, const char *later)
{
    cache_guard_sig_t a, b;
    cache_guard_sig(stored, strlen(stored), &a);
    cache_guard_sig(later, strlen(later), &b);
    return cache_guard_check(&a, &b);
}

#define VETO(reason, a, b)                                                                         \
    cr_expect_eq(check(a, b), reason, "\"%s\" / \"%s\": %s, want %s", a, b,                        \
                 cache_guard_reason_name(check(a, b)), cache_guard_reason_name(reason))

Test(guard, numbers_differ)
{
    VETO(CACHE_GUARD_NUMBER, "Who won World War 1?", "Who won World War 2?");
    VETO(CACHE_GUARD_NUMBER, "Who won World War I?", "Who won World War II?");
    VETO(CACHE_GUARD_NUMBER, "How long is a 5 mile run?", "How long is a 50 mile run?");
    VETO(CACHE_GUARD_NUMBER, "What happened in 1969?", "What happened in 1968?");
    VETO(CACHE_GUARD_NUMBER, "the second largest city", "the third largest city");
    VETO(CACHE_GUARD_NUMBER, "is 3.5 bigger than 3", "is 3.25 bigger than 3");
}

Test(guard, numbers_written_differently_agree)
{
    VETO(CACHE_GUARD_OK, "What is the first law of motion?", "what's the 1st law of motion");
    VETO(CACHE_GUARD_OK, "Walk five miles a day", "walk 5 miles a day");
    VETO(CACHE_GUARD_OK, "a price of 3.50 dollars", "a price of 3.5 dollars");
    VETO(CACHE_GUARD_OK, "population over 1,000", "population over 1000");
    VETO(CACHE_GUARD_OK, "Which planet is 4th from the sun?", "the fourth planet from the Sun?");
}

Test(guard, units_differ)
{
    VETO(CACHE_GUARD_UNIT, "How many pounds is 5 kg?", "How many pounds is 5 g?");
    VETO(CACHE_GUARD_UNIT, "Is 40 degrees Celsius hot?", "Is 40 degrees Fahrenheit hot?");
    VETO(CACHE_GUARD_UNIT, "bake for 20 minutes", "bake for 20 hours");
    VETO(CACHE_GUARD_OK, "How far is 10 kilometers?", "how far is 10 km");
    VETO(CACHE_GUARD_OK, "convert 3 lbs", "convert 3 pounds");
    VETO(CACHE_GUARD_OK, "a 5km run", "a 5 km run");
}

Test(guard, negation_differs)
{
    VETO(CACHE_GUARD_NEGATION, "Can I freeze cooked rice?", "Can't I freeze cooked rice?");
    VETO(CACHE_GUARD_NEGATION, "pancakes with eggs", "pancakes without eggs");
    VETO(CACHE_GUARD_NEGATION, "Is it safe to drink tap water?", "Is it not safe to drink tap water?");
    VETO(CACHE_GUARD_NEGATION, "cheese made with pasteurized milk", "cheese made with unpasteurized milk");
    VETO(CACHE_GUARD_NEGATION, "Which elements are metals?", "Which elements are nonmetals?");
    VETO(CACHE_GUARD_NEGATION, "plants toxic to cats", "plants non-toxic to cats");
    VETO(CACHE_GUARD_OK, "Why don't cats like water?", "why do not cats like water");
    VETO(CACHE_GUARD_OK, "Is the unicorn real?", "is the unicorn real");
    VETO(CACHE_GUARD_OK, "Why doesn\xe2\x80\x99t it work?", "why doesnt it work");
}

Test(guard, names_differ)
{
    VETO(CACHE_GUARD_ENTITY, "What is the capital of France?", "What is the capital of Germany?");
    VETO(CACHE_GUARD_ENTITY, "How tall is Mount Everest?", "How tall is Mount Fuji?");
    VETO(CACHE_GUARD_OK, "What is the capital of France?", "what is the capital of france");
    VETO(CACHE_GUARD_OK, "Tell me about Paris.", "tell me about Paris please");
}

Test(guard, order_of_names_and_of_directed_terms)
{
    VETO(CACHE_GUARD_ORDER, "Convert 5 miles to km", "Convert 5 km to miles");
    VETO(CACHE_GUARD_ORDER, "Is Mars bigger than Venus?", "Is Venus bigger than Mars?");
    VETO(CACHE_GUARD_ORDER, "Translate from English to French", "Translate from French to English");
    VETO(CACHE_GUARD_ORDER, "Convert a list to a string", "convert a string to a list");
    VETO(CACHE_GUARD_ORDER, "Is every square a rectangle?", "Is every rectangle a square?");
    VETO(CACHE_GUARD_OK, "How do I boil an egg?", "what is the way to boil an egg");
    VETO(CACHE_GUARD_OK, "Convert 5 miles to km", "please convert 5 miles to km for me");
    /* names the other way round veto even without a direction word: a symmetric question
     * asked so is missed, the price of catching "Is Seattle north of Portland?" */
    VETO(CACHE_GUARD_ORDER, "Is Seattle north of Portland?", "Is Portland north of Seattle?");
    VETO(CACHE_GUARD_ORDER, "distance between Paris and Rome", "distance between Rome and Paris");
}

Test(guard, possessives_and_questions_about_subject_or_object)
{
    /* "'s" ends the word, so the owners keep their places in the order */
    VETO(CACHE_GUARD_ORDER, "Can I give my dog's medicine to my cat?",
         "Can I give my cat's medicine to my dog?");
    VETO(CACHE_GUARD_ORDER, "Can I give my dog\xe2\x80\x99s food to my cat?",
         "Can I give my cat\xe2\x80\x99s food to my dog?");
    VETO(CACHE_GUARD_OK, "Can I give my dog's medicine to my cat?",
         "can i give my dogs medicine to my cat");
    /* the winner against the loser */
    VETO(CACHE_GUARD_ORDER, "Who beat George Foreman in 1974?", "Who did George Foreman beat in 1974?");
    VETO(CACHE_GUARD_ORDER, "who did Queen Victoria succeed", "Who succeeded Queen Victoria?");
    VETO(CACHE_GUARD_OK, "Who invented the telephone?", "who came up with the telephone");
    VETO(CACHE_GUARD_OK, "Who did Foreman fight in 1974?", "who did Foreman box in 1974");
}

Test(guard, reason_names)
{
    cr_expect_str_eq(cache_guard_reason_name(CACHE_GUARD_OK), "ok");
    cr_expect_str_eq(cache_guard_reason_name(CACHE_GUARD_NUMBER), "number");
    cr_expect_str_eq(cache_guard_reason_name(CACHE_GUARD_UNIT), "unit");
    cr_expect_str_eq(cache_guard_reason_name(CACHE_GUARD_NEGATION), "negation");
    cr_expect_str_eq(cache_guard_reason_name(CACHE_GUARD_ENTITY), "entity");
    cr_expect_str_eq(cache_guard_reason_name(CACHE_GUARD_ORDER), "order");
}

/* A prompt as the cache holds it: its embedding and its guard signature. */
typedef struct {
    float vec[512];
    cache_guard_sig_t sig;
} prompt_t;

static void prompt_of(const cache_embedder_t *e, const char *text, prompt_t *p)
{
    cr_assert_eq(e->embed(e, text, strlen(text), p->vec), LS_OK);
    cache_guard_sig(text, strlen(text), &p->sig);
}

/* An index of one scope holding s1 (digest of 1s) and s2 (digest of 2s). */
static cache_semantic_t *index_of(const cache_embedder_t *e, const char *s1, const char *s2)
{
    cache_semantic_t *idx = cache_semantic_create(512, 16, 4);
    cache_digest_t scope, d1, d2;
    memset(&scope, 0, sizeof(scope));
    memset(&d1, 1, sizeof(d1));
    memset(&d2, 2, sizeof(d2));
    prompt_t p1, p2;
    prompt_of(e, s1, &p1);
    prompt_of(e, s2, &p2);
    cr_assert_eq(cache_semantic_add_guarded(idx, &scope, 1, p1.vec, &p1.sig, &d1, 1000000, 0),
                 LS_OK);
    cr_assert_eq(cache_semantic_add_guarded(idx, &scope, 1, p2.vec, &p2.sig, &d2, 1000000, 0),
                 LS_OK);
    return idx;
}

/* Which entry answers q (1 or 2; 0 for none) at min_similarity, guarded or not. */
static int answer(cache_semantic_t *idx, const cache_embedder_t *e, const char *q, bool guarded,
                  float min_similarity, float *sim, cache_guard_reason_t *veto)
{
    cache_digest_t scope, got;
    memset(&scope, 0, sizeof(scope));
    prompt_t p;
    prompt_of(e, q, &p);
    *veto = CACHE_GUARD_OK;
    bool found = guarded ? cache_semantic_search_guarded(idx, &scope, p.vec, &p.sig,
                                                         min_similarity, 1, &got, sim, veto)
                         : cache_semantic_search(idx, &scope, p.vec, min_similarity, 1, &got, sim);
    return found ? got.b[0] : 0;
}

/* The index says why it turned entries down, lets through what the guards pass, and
 * searches without a signature as before. */
Test(guard, guarded_search_of_the_index)
{
    cache_embedder_t *e = cache_embed_ngram_create(512);
    cache_semantic_t *idx = index_of(e, "How many kilometers are in 5 miles?",
                                     "How many kilometers are in five miles exactly?");
    float sim;
    cache_guard_reason_t veto;
    const char *q = "How many kilometers are in 50 miles?";
    cr_expect_eq(answer(idx, e, q, false, 0.3f, &sim, &veto), 1, "unguarded: the nearest");
    cr_expect_eq(answer(idx, e, q, true, 0.3f, &sim, &veto), 0, "both differ in the number");
    cr_expect_eq(veto, CACHE_GUARD_NUMBER);
    cr_expect_eq(answer(idx, e, "how many km are in 5 miles", true, 0.3f, &sim, &veto), 1);
    cr_expect_eq(veto, CACHE_GUARD_OK);
    cache_semantic_destroy(idx);
    cache_embedder_destroy(e);
}

/* The nearest entry vetoed, a less similar one let through: the second answers, and
 * the veto is told. */
Test(guard, guarded_search_takes_the_next_entry)
{
    cache_embedder_t *e = cache_embed_ngram_create(512);
    cache_semantic_t *idx = index_of(e, "Convert 5 miles to km",
                                     "Please help me convert 5 km into miles for a trip");
    const char *q = "Convert 5 km to miles";
    float sim, sim_unguarded;
    cache_guard_reason_t veto;
    cr_assert_eq(answer(idx, e, q, false, 0.1f, &sim_unguarded, &veto), 1,
                 "the reversed conversion is the nearest");
    cr_expect_eq(answer(idx, e, q, true, 0.1f, &sim, &veto), 2, "the same direction answers");
    cr_expect_lt(sim, sim_unguarded);
    cr_expect_eq(veto, CACHE_GUARD_ORDER);
    /* at a threshold only the vetoed entry reaches, nothing answers */
    float above = sim + 0.01f;
    cr_expect_eq(answer(idx, e, q, true, above, &sim, &veto), 0);
    cr_expect_eq(veto, CACHE_GUARD_ORDER);
    cache_semantic_destroy(idx);
    cache_embedder_destroy(e);
}
