/*
 * cache_guard.c - guard signatures of prompts (cache_guard.h).
 *
 * A prompt is split into words: runs of ASCII letters and digits and of bytes 0x80 and
 * above (UTF-8 letters), with apostrophes inside a word dropped ("can't" -> "cant",
 * also the typographic one) and a decimal point or thousands comma between digits kept
 * as part of a number.  Each word is lowercased and classified by the small tables
 * below; everything is hashed, so a signature is fixed-size and holds no text.
 */
#include "cache/cache_guard.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GUARD_WORD_MAX 48
#define GUARD_TOKENS 256 /* words looked at per prompt */

typedef struct {
    char w[GUARD_WORD_MAX]; /* lowercased, apostrophes dropped */
    size_t len;
    bool upper;    /* first letter was an uppercase ASCII letter */
    bool initial;  /* first word of the text or of a sentence */
    bool all_caps; /* two or more letters, all uppercase */
} guard_tok_t;

static uint64_t fnv(char tag, const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    h = (h ^ (uint8_t)tag) * 1099511628211ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

/* text[i] is the s of a possessive or "is" ("dog's", "what's"): s ends the word. */
static bool possessive(const char *text, size_t len, size_t i)
{
    return (text[i] == 's' || text[i] == 'S') && (i + 1 >= len || !word_byte((unsigned char)text[i + 1]));
}

/* Splits text into at most max words ("'s" is dropped: possession or "is"); returns the
 * count. */
static size_t tokenize(const char *text, size_t len, guard_tok_t *t, size_t max)
{
    size_t n = 0, i = 0;
    bool sentence_start = true;
    while (i < len && n < max) {
        while (i < len && !word_byte((unsigned char)text[i])) {
            char c = text[i];
            if (c == '.' || c == '?' || c == '!' || c == ':' || c == ';' || c == '\n')
                sentence_start = true;
            i++;
        }
        if (i >= len)
            break;
        guard_tok_t *k = &t[n];
        memset(k, 0, sizeof(*k));
        k->initial = sentence_start;
        k->upper = text[i] >= 'A' && text[i] <= 'Z';
        int letters = 0, caps = 0;
        while (i < len) {
            unsigned char c = (unsigned char)text[i];
            if (word_byte(c)) {
                /* the typographic apostrophe (U+2019, E2 80 99) inside a word */
                if (c == 0xE2 && i + 2 < len && (unsigned char)text[i + 1] == 0x80 &&
                    (unsigned char)text[i + 2] == 0x99 && i + 3 < len &&
                    word_byte((unsigned char)text[i + 3])) {
                    if (k->len > 0 && possessive(text, len, i + 3)) {
                        i += 4;
                        break;
                    }
                    i += 3;
                    continue;
                }
                if (c >= 'A' && c <= 'Z') {
                    caps++;
                    c = (unsigned char)(c - 'A' + 'a');
                }
                if ((c >= 'a' && c <= 'z') || c >= 0x80)
                    letters++;
                if (k->len < GUARD_WORD_MAX - 1)
                    k->w[k->len++] = (char)c;
                i++;
                continue;
            }
            /* an apostrophe between letters, a point or comma between digits */
            if (i + 1 < len && word_byte((unsigned char)text[i + 1]) && k->len > 0) {
                if (c == '\'') {
                    if (possessive(text, len, i + 1)) { /* "dog's" is "dog" */
                        i += 2;
                        break;
                    }
                    i++;
                    continue;
                }
                if ((c == '.' || c == ',') && is_digit(k->w[k->len - 1]) &&
                    is_digit(text[i + 1])) {
                    if (c == '.' && k->len < GUARD_WORD_MAX - 1)
                        k->w[k->len++] = '.';
                    i++;
                    continue;
                }
            }
            break;
        }
        k->w[k->len] = '\0';
        k->all_caps = letters >= 2 && caps == letters;
        sentence_start = false;
        n++;
    }
    return n;
}

static bool eq(const guard_tok_t *t, const char *s)
{
    return strcmp(t->w, s) == 0;
}

/* Number words and ordinals: "two", "second" -> "2". */
static const char *const k_number_words[][2] = {
    {"zero", "0"},       {"one", "1"},         {"two", "2"},        {"three", "3"},
    {"four", "4"},       {"five", "5"},        {"six", "6"},        {"seven", "7"},
    {"eight", "8"},      {"nine", "9"},        {"ten", "10"},       {"eleven", "11"},
    {"twelve", "12"},    {"thirteen", "13"},   {"fourteen", "14"},  {"fifteen", "15"},
    {"sixteen", "16"},   {"seventeen", "17"},  {"eighteen", "18"},  {"nineteen", "19"},
    {"twenty", "20"},    {"thirty", "30"},     {"forty", "40"},     {"fifty", "50"},
    {"sixty", "60"},     {"seventy", "70"},    {"eighty", "80"},    {"ninety", "90"},
    {"hundred", "100"},  {"thousand", "1000"}, {"million", "1e6"},  {"billion", "1e9"},
    {"first", "1"},      {"second", "2"},      {"third", "3"},      {"fourth", "4"},
    {"fifth", "5"},      {"sixth", "6"},       {"seventh", "7"},    {"eighth", "8"},
    {"ninth", "9"},      {"tenth", "10"},      {"eleventh", "11"},  {"twelfth", "12"},
    {"twentieth", "20"}, {"half", "0.5"},      {"quarter", "0.25"}, {"dozen", "12"},
    {"twice", "2"},      {"double", "2"},      {"triple", "3"},     {"once", "1"},
};

/* Roman numerals as written in names ("World War II", "Henry VIII"): uppercase only. */
static const char *roman(const guard_tok_t *t)
{
    static const char *const r[][2] = {{"ii", "2"},  {"iii", "3"}, {"iv", "4"},  {"vi", "6"},
                                       {"vii", "7"}, {"viii", "8"}, {"ix", "9"}, {"xi", "11"},
                                       {"xii", "12"}};
    if (!t->all_caps)
        return NULL;
    for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++)
        if (strcmp(t->w, r[i][0]) == 0)
            return r[i][1];
    return NULL;
}

/* Units and their canonical names.  Single letters count only right after a number. */
static const char *const k_units[][2] = {
    {"mm", "mm"},          {"millimeter", "mm"},  {"millimetre", "mm"},  {"cm", "cm"},
    {"centimeter", "cm"},  {"centimetre", "cm"},  {"meter", "m"},        {"metre", "m"},
    {"km", "km"},          {"kms", "km"},         {"kilometer", "km"},   {"kilometre", "km"},
    {"inch", "in"},        {"inches", "in"},      {"ft", "ft"},          {"foot", "ft"},
    {"feet", "ft"},        {"yd", "yd"},          {"yard", "yd"},        {"mi", "mi"},
    {"mile", "mi"},        {"mg", "mg"},          {"milligram", "mg"},   {"gram", "g"},
    {"kg", "kg"},          {"kgs", "kg"},         {"kilogram", "kg"},    {"kilo", "kg"},
    {"lb", "lb"},          {"lbs", "lb"},         {"pound", "lb"},       {"oz", "oz"},
    {"ounce", "oz"},       {"ton", "t"},          {"tonne", "t"},        {"stone", "st"},
    {"ml", "ml"},          {"milliliter", "ml"},  {"millilitre", "ml"},  {"liter", "l"},
    {"litre", "l"},        {"gallon", "gal"},     {"gal", "gal"},        {"quart", "qt"},
    {"qt", "qt"},          {"pint", "pt"},        {"cup", "cup"},        {"tablespoon", "tbsp"},
    {"tbsp", "tbsp"},      {"teaspoon", "tsp"},   {"tsp", "tsp"},        {"celsius", "degc"},
    {"centigrade", "degc"}, {"fahrenheit", "degf"}, {"kelvin", "degk"},  {"sec", "s"},
    {"secs", "s"},         {"seconds", "s"},      {"millisecond", "ms"}, {"minute", "min"},
    {"min", "min"},        {"mins", "min"},       {"hour", "h"},         {"hr", "h"},
    {"hrs", "h"},          {"day", "day"},        {"week", "week"},      {"month", "month"},
    {"year", "year"},      {"yr", "year"},        {"yrs", "year"},       {"decade", "decade"},
    {"century", "century"}, {"centuries", "century"}, {"byte", "byte"},  {"bit", "bit"},
    {"kb", "kb"},          {"kilobyte", "kb"},    {"mb", "mb"},          {"megabyte", "mb"},
    {"gb", "gb"},          {"gigabyte", "gb"},    {"tb", "tb"},          {"terabyte", "tb"},
    {"mbps", "mbps"},      {"gbps", "gbps"},      {"dollar", "usd"},     {"usd", "usd"},
    {"euro", "eur"},       {"eur", "eur"},        {"gbp", "gbp"},        {"sterling", "gbp"},
    {"yen", "jpy"},        {"jpy", "jpy"},        {"rupee", "inr"},      {"inr", "inr"},
    {"yuan", "cny"},       {"franc", "chf"},      {"peso", "peso"},      {"cent", "cent"},
    {"calorie", "kcal"},   {"kcal", "kcal"},      {"cal", "kcal"},       {"joule", "j"},
    {"watt", "w"},         {"kw", "kw"},          {"kilowatt", "kw"},    {"kwh", "kwh"},
    {"acre", "acre"},      {"hectare", "ha"},     {"percent", "pct"},    {"mph", "mph"},
    {"kph", "kph"},        {"kmh", "kph"},        {"psi", "psi"},        {"volt", "v"},
    {"amp", "a"},          {"ampere", "a"},       {"mah", "mah"},        {"ghz", "ghz"},
    {"mhz", "mhz"},        {"hz", "hz"},          {"degree", "deg"},
};

static const char *const k_letter_units[][2] = {
    {"m", "m"}, {"g", "g"}, {"l", "l"}, {"c", "degc"}, {"f", "degf"}, {"k", "degk"},
    {"h", "h"}, {"s", "s"}, {"t", "t"}, {"w", "w"},    {"v", "v"},    {"a", "a"},
};

static const char *const k_negations[] = {
    "not",     "no",      "never",   "none",     "nobody",   "nothing",  "neither",
    "nor",     "without", "cannot",  "cant",     "dont",     "doesnt",   "didnt",
    "isnt",    "arent",   "wasnt",   "werent",   "wont",     "wouldnt",  "shouldnt",
    "couldnt", "hasnt",   "havent",  "hadnt",    "mustnt",   "neednt",   "aint",
    "shant",   "lacking", "except",  "excluding", "non",   NULL};

/* A yes/no question: who does what to whom is in its word order. */
static const char *const k_yesno[] = {"is", "are", "was", "were", "does", "do", "did", "can",
                                      "could", "will", "would", "should", "has", "have", NULL};

/* Prefixes that negate a word; "non" also stands alone ("non-toxic" is two words). */
static const char *const k_neg_prefix[] = {"non", "un", NULL};

static const char *const k_direction[] = {"to", "into", "from", "than", "per", "vs", "versus",
                                          "onto", "toward", "towards", NULL};

/* Words too common to mark who does what to whom (with the direction words, negations
 * and question words); every other word of three letters or more is a content word. */
static const char *const k_function[] = {
    "the",   "and",   "are",   "was",   "were",   "for",    "with",  "how",   "what",  "why",
    "when",  "where", "who",   "whom",  "which",  "does",   "did",   "can",   "could", "would",
    "should", "will", "shall", "may",   "might",  "must",   "have",  "has",   "had",   "this",
    "that",  "these", "those", "there", "here",   "its",    "your",  "you",   "our",   "their",
    "his",   "her",   "them",  "they",  "she",    "him",    "been",  "being", "into",  "onto",
    "from",  "than",  "per",   "about", "please", "tell",   "know",  "get",   "any",   "some",
    "way",   "ways",  "best",  "need",  "want",   "like",   "just",  "also",  "very",  "really",
    "much",  "many",  "more",  "most",  "make",   "made",   "does",  "doing", "done",  "use",
    "using", "used",  "thanks", "thank", "hey",   "hello",  "could", "kindly", "explain", NULL};

/* Words that start with a capital without naming anything. */
static const char *const k_not_entities[] = {"i", "im", "ive", "id", "ill", "ok", "okay", NULL};

/* ---- one hash table for the word lists -------------------------------------------- */

/* The lists above, looked up per word of every prompt: one probe instead of a strcmp
 * per list entry (those scans were three quarters of a signature's time). */
enum { W_NEGATION = 1, W_DIRECTION = 2, W_YESNO = 4, W_NOT_ENTITY = 8, W_FUNCTION = 16 };

typedef struct {
    const char *word; /* NULL: an empty slot */
    unsigned classes; /* W_* */
    const char *number; /* k_number_words' value, or NULL */
    const char *unit;   /* k_units' canonical unit, or NULL */
} word_info_t;

#define WORD_SLOTS 1024 /* about 400 words: a third full */

static word_info_t g_words[WORD_SLOTS];
static pthread_once_t g_words_once = PTHREAD_ONCE_INIT;

static size_t word_slot(const char *w, size_t len)
{
    size_t s = (size_t)fnv('g', w, len) & (WORD_SLOTS - 1);
    while (g_words[s].word && !(strlen(g_words[s].word) == len && memcmp(g_words[s].word, w, len) == 0))
        s = (s + 1) & (WORD_SLOTS - 1);
    return s;
}

static word_info_t *word_add(const char *w)
{
    word_info_t *e = &g_words[word_slot(w, strlen(w))];
    e->word = w;
    return e;
}

static void add_class(const char *const *list, unsigned c)
{
    for (; *list; list++)
        word_add(*list)->classes |= c;
}

static void build_words(void)
{
    add_class(k_negations, W_NEGATION);
    add_class(k_direction, W_DIRECTION);
    add_class(k_yesno, W_YESNO);
    add_class(k_not_entities, W_NOT_ENTITY);
    add_class(k_function, W_FUNCTION);
    for (size_t i = 0; i < sizeof(k_number_words) / sizeof(k_number_words[0]); i++)
        word_add(k_number_words[i][0])->number = k_number_words[i][1];
    for (size_t i = 0; i < sizeof(k_units) / sizeof(k_units[0]); i++) {
        word_info_t *e = word_add(k_units[i][0]);
        if (!e->unit)
            e->unit = k_units[i][1];
    }
}

/* What the lists say about w[0..len), or NULL when it is in none. */
static const word_info_t *word_info(const char *w, size_t len)
{
    pthread_once(&g_words_once, build_words);
    const word_info_t *e = &g_words[word_slot(w, len)];
    return e->word ? e : NULL;
}

static bool has_class(const guard_tok_t *k, unsigned c)
{
    const word_info_t *e = word_info(k->w, k->len);
    return e && (e->classes & c);
}

/* Number words and ordinals: "two", "second" -> "2"; NULL when not one. */
static const char *number_word(const guard_tok_t *k)
{
    const word_info_t *e = word_info(k->w, k->len);
    return e ? e->number : NULL;
}

/* The canonical unit of w (plural "s"/"es" dropped where that names a unit), or NULL. */
static const char *unit_of(const char *w, bool after_number)
{
    size_t len = strlen(w);
    if (len == 1) {
        if (!after_number)
            return NULL;
        for (size_t i = 0; i < sizeof(k_letter_units) / sizeof(k_letter_units[0]); i++)
            if (strcmp(w, k_letter_units[i][0]) == 0)
                return k_letter_units[i][1];
        return NULL;
    }
    for (int pass = 0; pass < 3; pass++) {
        char base[GUARD_WORD_MAX];
        size_t cut = pass == 0 ? 0 : pass == 1 ? 1 : 2;
        if (len <= cut + 1)
            break;
        if (pass == 1 && w[len - 1] != 's')
            continue;
        if (pass == 2 && (w[len - 1] != 's' || w[len - 2] != 'e'))
            continue;
        memcpy(base, w, len - cut);
        base[len - cut] = '\0';
        const word_info_t *wi = word_info(base, len - cut);
        if (wi && wi->unit)
            return wi->unit;
    }
    return NULL;
}

static void add_sorted(uint64_t *set, uint8_t *n, uint64_t h, bool unique, bool *overflow)
{
    if (*n >= CACHE_GUARD_MAX) {
        *overflow = true;
        return;
    }
    size_t i = *n;
    while (i > 0 && set[i - 1] > h)
        i--;
    if (unique && i > 0 && set[i - 1] == h)
        return;
    memmove(set + i + 1, set + i, (*n - i) * sizeof(uint64_t));
    set[i] = h;
    (*n)++;
}

/* Three bits of 512 per word. */
static void bloom_add(cache_guard_sig_t *s, uint64_t h)
{
    for (int i = 0; i < 3; i++) {
        unsigned bit = (unsigned)(h >> (i * 9)) & 511u;
        s->words[bit >> 6] |= 1ull << (bit & 63);
    }
}

/* A number token: digits with an optional fraction ("3.50" -> "3.5"), or digits with
 * an ordinal or unit suffix ("2nd", "5km": the unit is returned in *unit). */
static bool parse_number(const char *w, char *num, size_t cap, const char **unit)
{
    *unit = NULL;
    size_t i = 0;
    while (w[i] == '0' && is_digit(w[i + 1]))
        i++; /* leading zeros */
    size_t start = i;
    while (is_digit(w[i]) || w[i] == '.')
        i++;
    if (i == start || !is_digit(w[start]))
        return false;
    size_t end = i;
    if (memchr(w + start, '.', end - start)) {
        while (end > start && w[end - 1] == '0')
            end--;
        if (end > start && w[end - 1] == '.')
            end--;
    }
    if (end - start >= cap)
        end = start + cap - 1;
    memcpy(num, w + start, end - start);
    num[end - start] = '\0';
    const char *suffix = w + i;
    if (*suffix && !(strcmp(suffix, "st") == 0 || strcmp(suffix, "nd") == 0 ||
                     strcmp(suffix, "rd") == 0 || strcmp(suffix, "th") == 0 ||
                     strcmp(suffix, "s") == 0)) {
        *unit = unit_of(suffix, true);
        if (!*unit)
            return false; /* "3d", "mp3", "b2b": a name, not a number */
    }
    return true;
}

void cache_guard_sig(const char *text, size_t len, cache_guard_sig_t *out)
{
    memset(out, 0, sizeof(*out));
    guard_tok_t *t = malloc(GUARD_TOKENS * sizeof(*t));
    if (!t) {
        out->overflow = true;
        return;
    }
    size_t n = tokenize(text, len, t, GUARD_TOKENS);
    bool prev_anchor = false; /* the word before was a number or a unit */
    bool prev_number = false;
    uint64_t pending_prep = 0; /* a direction word waiting for its object */
    for (size_t i = 0; i < n; i++) {
        const guard_tok_t *k = &t[i];
        uint64_t wh = fnv('w', k->w, k->len);
        bloom_add(out, wh);
        char num[32];
        const char *unit = NULL;
        const char *nw = number_word(k);
        if (!nw)
            nw = roman(k);
        bool is_num = false;
        if (nw) {
            snprintf(num, sizeof(num), "%s", nw);
            is_num = true;
        } else {
            is_num = parse_number(k->w, num, sizeof(num), &unit);
        }
        if (is_num) {
            uint64_t h = fnv('n', num, strlen(num));
            add_sorted(out->numbers, &out->n_numbers, h, false, &out->overflow);
            if (out->n_anchors < CACHE_GUARD_ANCHORS)
                out->anchors[out->n_anchors++] = h;
        }
        if (!unit && !is_num)
            unit = unit_of(k->w, prev_number);
        if (unit) {
            uint64_t h = fnv('u', unit, strlen(unit));
            add_sorted(out->units, &out->n_units, h, true, &out->overflow);
            if (out->n_anchors < CACHE_GUARD_ANCHORS)
                out->anchors[out->n_anchors++] = h;
        }
        if (has_class(k, W_NEGATION))
            out->negated = !out->negated; /* parity: "not without" cancels */
        /* a word negated by its prefix ("unpasteurized", "nonmetals"): the word without
         * it, to compare with the other prompt's words */
        for (size_t pi = 0; k_neg_prefix[pi]; pi++) {
            size_t pl = strlen(k_neg_prefix[pi]);
            if (k->len >= pl + 4 && memcmp(k->w, k_neg_prefix[pi], pl) == 0 &&
                out->n_prefixed < CACHE_GUARD_MAX) {
                out->prefixed[out->n_prefixed][0] = fnv('w', k->w + pl, k->len - pl);
                out->prefixed[out->n_prefixed][1] = wh;
                out->n_prefixed++;
                break;
            }
        }
        if (has_class(k, W_DIRECTION) || (eq(k, "in") && prev_anchor))
            out->directed = true;
        bool prep = has_class(k, W_DIRECTION) || eq(k, "in");
        if (i == 0 && has_class(k, W_YESNO)) /* "Is every square a rectangle?" */
            out->yesno = true;
        /* "Who beat Foreman?" asks for the winner, "Who did Foreman beat?" the loser */
        if (i == 0 && (eq(k, "who") || eq(k, "whom")))
            out->who = true;
        if (i == 1 && out->who && (eq(k, "do") || eq(k, "does") || eq(k, "did")))
            out->who_object = true;
        bool entity = (k->upper || k->all_caps) && !k->initial && !is_num && !unit &&
                      !has_class(k, W_NOT_ENTITY);
        if (entity) {
            if (out->n_entities < CACHE_GUARD_MAX)
                out->entities[out->n_entities++] = wh;
            else
                out->overflow = true;
            if (out->n_anchors < CACHE_GUARD_ANCHORS)
                out->anchors[out->n_anchors++] = wh;
        }
        /* content words are anchors too: cache_guard_check compares their order only
         * when a prompt holds a direction word */
        bool content = !is_num && !unit && !entity && k->len >= 3 &&
                       !has_class(k, W_FUNCTION) && !has_class(k, W_NEGATION) &&
                       !has_class(k, W_DIRECTION);
        if (content && out->n_content < CACHE_GUARD_ANCHORS)
            out->content[out->n_content++] = wh;
        /* the first word that carries meaning after a direction word is its object */
        if (pending_prep && (content || is_num || unit || entity)) {
            if (out->n_preps < CACHE_GUARD_MAX) {
                out->preps[out->n_preps][0] = pending_prep;
                out->preps[out->n_preps][1] = unit ? fnv('u', unit, strlen(unit)) : wh;
                out->n_preps++;
            }
            pending_prep = 0;
        }
        if (prep)
            pending_prep = wh;
        prev_number = is_num;
        prev_anchor = is_num || unit;
    }
    free(t);
}

static bool has_word(const cache_guard_sig_t *s, uint64_t h)
{
    for (int i = 0; i < 3; i++) {
        unsigned bit = (unsigned)(h >> (i * 9)) & 511u;
        if (!(s->words[bit >> 6] & (1ull << (bit & 63))))
            return false;
    }
    return true;
}

static bool same_set(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof(uint64_t)) == 0);
}

/* x holds "unW" or "nonW" where y holds W and not the prefixed word. */
static bool prefix_negated(const cache_guard_sig_t *x, const cache_guard_sig_t *y)
{
    for (size_t i = 0; i < x->n_prefixed; i++)
        if (has_word(y, x->prefixed[i][0]) && !has_word(y, x->prefixed[i][1]))
            return true;
    return false;
}

/* The hashes of x (nx of them) that y also has, in x's order. */
static size_t common(const uint64_t *x, size_t nx, const uint64_t *y, size_t ny, uint64_t *out)
{
    size_t n = 0;
    for (size_t i = 0; i < nx; i++)
        for (size_t j = 0; j < ny; j++)
            if (x[i] == y[j]) {
                out[n++] = x[i];
                break;
            }
    return n;
}

/* Whether the hashes both lists hold come in the same order in each. */
static bool same_order(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    uint64_t x[CACHE_GUARD_ANCHORS], y[CACHE_GUARD_ANCHORS];
    size_t nx = common(a, na, b, nb, x), ny = common(b, nb, a, na, y);
    return same_set(x, nx, y, ny);
}

/* The direction words (and "in") both prompts hold: -1 when one of them points at
 * other words in each prompt, else how many there are. */
static int prep_objects_agree(const cache_guard_sig_t *a, const cache_guard_sig_t *b)
{
    int shared = 0;
    for (size_t i = 0; i < a->n_preps; i++) {
        bool in_b = false, match = false;
        for (size_t j = 0; j < b->n_preps; j++)
            if (b->preps[j][0] == a->preps[i][0]) {
                in_b = true;
                match = match || b->preps[j][1] == a->preps[i][1];
            }
        if (in_b && !match)
            return -1;
        shared += in_b;
    }
    for (size_t j = 0; j < b->n_preps; j++) {
        bool in_a = false, match = false;
        for (size_t i = 0; i < a->n_preps; i++)
            if (a->preps[i][0] == b->preps[j][0]) {
                in_a = true;
                match = match || a->preps[i][1] == b->preps[j][1];
            }
        if (in_a && !match)
            return -1;
    }
    return shared;
}

cache_guard_reason_t cache_guard_check(const cache_guard_sig_t *stored,
                                       const cache_guard_sig_t *query)
{
    if (!same_set(stored->numbers, stored->n_numbers, query->numbers, query->n_numbers))
        return CACHE_GUARD_NUMBER;
    if (!same_set(stored->units, stored->n_units, query->units, query->n_units))
        return CACHE_GUARD_UNIT;
    if (stored->negated != query->negated)
        return CACHE_GUARD_NEGATION;
    if (prefix_negated(stored, query) || prefix_negated(query, stored))
        return CACHE_GUARD_NEGATION;
    for (size_t i = 0; i < stored->n_entities; i++)
        if (!has_word(query, stored->entities[i]))
            return CACHE_GUARD_ENTITY;
    for (size_t i = 0; i < query->n_entities; i++)
        if (!has_word(stored, query->entities[i]))
            return CACHE_GUARD_ENTITY;
    /* names, numbers and units in another order ("Is Seattle north of Portland?") */
    if (!same_order(stored->anchors, stored->n_anchors, query->anchors, query->n_anchors))
        return CACHE_GUARD_ORDER;
    /* a yes/no question: the order of the words that carry meaning ("Is every square a
     * rectangle?") */
    if ((stored->yesno || query->yesno) &&
        !same_order(stored->content, stored->n_content, query->content, query->n_content))
        return CACHE_GUARD_ORDER;
    /* with a direction word: what a direction word both prompts hold points at ("convert
     * a list to a string" / "convert a string to a list"; "from carpet, how do I remove a
     * stain" is the same question), else the order of the words that carry meaning */
    if (stored->directed || query->directed) {
        int shared = prep_objects_agree(stored, query);
        if (shared < 0)
            return CACHE_GUARD_ORDER;
        if (shared == 0 &&
            !same_order(stored->content, stored->n_content, query->content, query->n_content))
            return CACHE_GUARD_ORDER;
    }
    /* a question about the subject against one about the object */
    if (stored->who && query->who && stored->who_object != query->who_object)
        return CACHE_GUARD_ORDER;
    return CACHE_GUARD_OK;
}

const char *cache_guard_reason_name(cache_guard_reason_t r)
{
    switch (r) {
    case CACHE_GUARD_OK:
        return "ok";
    case CACHE_GUARD_NUMBER:
        return "number";
    case CACHE_GUARD_UNIT:
        return "unit";
    case CACHE_GUARD_NEGATION:
        return "negation";
    case CACHE_GUARD_ENTITY:
        return "entity";
    case CACHE_GUARD_ORDER:
        return "order";
    default:
        return "?";
    }
}
