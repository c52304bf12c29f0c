/*
 * scorer.c - prompt complexity cues.
 *
 * Cues are fixed word lists rather than a learned model: the router must score every
 * request in microseconds on its completion-queue thread, and operators tune the
 * outcome with weights and pool thresholds, which a list keeps explainable in the
 * route reason.
 */
#include "scorer.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

void router_scorer_config_init(router_scorer_config_t *cfg)
{
    cfg->w_length = 0.25;
    cfg->w_code = 0.25;
    cfg->w_math = 0.20;
    cfg->w_reasoning = 0.20;
    cfg->w_questions = 0.05;
    cfg->w_depth = 0.05;
    cfg->length_chars = 2000;  /* characters */
    cfg->depth_messages = 8;   /* messages beyond the first */
}

static const char *const code_cues[] = {
    "```", "#include", "def ", "function ", "class ", "import ", "return ", "=>", "->",
    "select ", "printf(", "malloc(", "std::", "fn ", "public static", "#!/", "</", "lambda",
};
static const char *const math_cues[] = {
    "equation", "integral", "derivative", "prove", "theorem", "matrix", "probability",
    "sqrt", "\\frac", "solve", "polynomial", "eigen", "calculate", "sum of", "factorial",
};
static const char *const reasoning_cues[] = {
    "why", "explain", "step by step", "compare", "analy", "reason", "trade-off", "tradeoff",
    "evaluate", "justify", "design", "pros and cons", "implications", "what if", "critique",
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool is_alpha(char c)
{
    c = lower(c);
    return c >= 'a' && c <= 'z';
}

/* True when text contains needle (lower case) case-insensitively; a needle that starts
 * with a letter must start a word. */
static bool contains(const char *text, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    if (n == 0 || n > len)
        return false;
    bool word_start = is_alpha(needle[0]);
    for (size_t i = 0; i + n <= len; i++) {
        if (lower(text[i]) != needle[0])
            continue;
        if (word_start && i > 0 && is_alpha(text[i - 1]))
            continue;
        size_t j = 1;
        while (j < n && lower(text[i + j]) == needle[j])
            j++;
        if (j == n)
            return true;
    }
    return false;
}

/* digit, optional spaces, an operator, optional spaces, digit: "3 + 4", "2^10", "x=5" is
 * not (no digit before). */
static bool has_arithmetic(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            continue;
        size_t j = i + 1;
        while (j < len && text[j] == ' ')
            j++;
        if (j >= len || !strchr("+-*/^=%", text[j]))
            continue;
        j++;
        while (j < len && text[j] == ' ')
            j++;
        if (j < len && text[j] >= '0' && text[j] <= '9')
            return true;
    }
    return false;
}

static bool has_braces_code(const char *text, size_t len)
{
    return memchr(text, '{', len) && memchr(text, '}', len) && memchr(text, ';', len);
}

typedef struct {
    const char *text;
    size_t len;
} span_t;

static size_t count_cues(const span_t *spans, size_t n, const char *const *cues, size_t n_cues)
{
    size_t hits = 0;
    for (size_t c = 0; c < n_cues; c++) {
        for (size_t i = 0; i < n; i++) {
            if (contains(spans[i].text, spans[i].len, cues[c])) {
                hits++;
                break;
            }
        }
    }
    return hits;
}

static double cap1(double v)
{
    return v > 1.0 ? 1.0 : (v < 0.0 ? 0.0 : v);
}

/* Scores at most this many spans (prompt plus messages); later messages still count
 * for length and depth.  Bounds the work per request whatever the client sends. */
#define SCORER_MAX_SPANS 64

void router_scorer_score(const router_scorer_config_t *cfg, const char *prompt,
                         const router_scorer_msg_t *msgs, size_t n_msgs, router_score_t *out)
{
    span_t spans[SCORER_MAX_SPANS] = {{NULL, 0}};
    size_t n = 0;
    double chars = 0;
    if (prompt && *prompt) {
        spans[n].text = prompt;
        spans[n].len = strlen(prompt);
        chars += (double)spans[n].len;
        n++;
    }
    /* The newest messages say most about the question being asked: keep the last ones
     * that fit. */
    size_t first_kept = n_msgs > SCORER_MAX_SPANS - n ? n_msgs - (SCORER_MAX_SPANS - n) : 0;
    for (size_t i = 0; i < n_msgs; i++) {
        const char *c = msgs[i].content ? msgs[i].content : "";
        size_t len = strlen(c);
        chars += (double)len;
        if (i >= first_kept) {
            spans[n].text = c;
            spans[n].len = len;
            n++;
        }
    }

    size_t code = count_cues(spans, n, code_cues, N_OF(code_cues));
    size_t math = count_cues(spans, n, math_cues, N_OF(math_cues));
    size_t questions = 0;
    for (size_t i = 0; i < n; i++) {
        if (has_braces_code(spans[i].text, spans[i].len)) {
            code++;
            break;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (has_arithmetic(spans[i].text, spans[i].len)) {
            math++;
            break;
        }
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < spans[i].len; j++)
            questions += spans[i].text[j] == '?';

    out->length = cfg->length_chars > 0 ? cap1(chars / cfg->length_chars) : 0;
    out->code = cap1((double)code / 3.0);
    out->math = cap1((double)math / 3.0);
    out->reasoning = cap1((double)count_cues(spans, n, reasoning_cues, N_OF(reasoning_cues)) / 3.0);
    out->questions = questions > 1 ? cap1((double)(questions - 1) / 3.0) : 0;
    out->depth = (n_msgs > 1 && cfg->depth_messages > 0)
                     ? cap1((double)(n_msgs - 1) / cfg->depth_messages)
                     : 0;
    out->score = cfg->w_length * out->length + cfg->w_code * out->code + cfg->w_math * out->math +
                 cfg->w_reasoning * out->reasoning + cfg->w_questions * out->questions +
                 cfg->w_depth * out->depth;
}

typedef struct {
    const char *name;
    double v; /* weighted contribution */
} part_t;

void router_scorer_explain(const router_scorer_config_t *cfg, const router_score_t *s, char *buf,
                           size_t len)
{
    part_t parts[] = {
        {"length", cfg->w_length * s->length},          {"code", cfg->w_code * s->code},
        {"math", cfg->w_math * s->math},                {"reasoning", cfg->w_reasoning * s->reasoning},
        {"questions", cfg->w_questions * s->questions}, {"depth", cfg->w_depth * s->depth},
    };
    size_t n = N_OF(parts);
    /* Largest first; six entries, so a plain insertion sort. */
    for (size_t i = 1; i < n; i++) {
        for (size_t j = i; j > 0 && parts[j].v > parts[j - 1].v; j--) {
            part_t t = parts[j];
            parts[j] = parts[j - 1];
            parts[j - 1] = t;
        }
    }
    if (len == 0)
        return;
    buf[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < 3 && parts[i].v > 0.0005; i++) {
        int w = snprintf(buf + used, len - used, "%s%s %.2f", i ? ", " : "", parts[i].name,
                         parts[i].v);
        if (w < 0 || (size_t)w >= len - used)
            break;
        used += (size_t)w;
    }
    if (used == 0)
        snprintf(buf, len, "none");
}
