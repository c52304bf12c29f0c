/*
 * scorer.h - prompt complexity: a weighted sum of cues that decides which pool answers.
 *
 * Each cue is a feature in [0, 1]; the score is the weighted sum of the features, so with
 * the default weights (which add up to 1.0) the score is in [0, 1] too.  The features:
 *   length     characters of the prompt (or of all messages) over length_chars, capped at 1
 *   code       code markers (``` fences, braces with semicolons, "def ", "#include", ...);
 *              each distinct marker adds 1/3, capped at 1
 *   math       math markers (digit-operator-digit, "equation", "integral", "prove", ...);
 *              each distinct marker adds 1/3, capped at 1
 *   reasoning  reasoning cues ("why", "explain", "step by step", "compare", ...); each
 *              distinct cue adds 1/3, capped at 1
 *   questions  question marks beyond the first, over 3, capped at 1
 *   depth      chat messages beyond the first, over depth_messages, capped at 1
 * Matching is ASCII case-insensitive and never allocates.  Thread-safe (pure functions).
 */
#ifndef ROUTER_SCORER_H
#define ROUTER_SCORER_H

#include <stddef.h>

typedef struct {
    double w_length;       /* weight of the length feature; default 0.25 */
    double w_code;         /* default 0.25 */
    double w_math;         /* default 0.20 */
    double w_reasoning;    /* default 0.20 */
    double w_questions;    /* default 0.05 */
    double w_depth;        /* default 0.05 */
    double length_chars;   /* characters for a full length feature; default 2000 */
    double depth_messages; /* messages beyond the first for a full depth feature; default 8 */
} router_scorer_config_t;

/* One scored prompt: the features (each in [0, 1]) and the weighted total. */
typedef struct {
    double length, code, math, reasoning, questions, depth;
    double score;
} router_score_t;

/* Fills cfg with the defaults above. */
void router_scorer_config_init(router_scorer_config_t *cfg);

/* One chat message as the scorer sees it (content borrowed). */
typedef struct {
    const char *content;
} router_scorer_msg_t;

/* Scores prompt (may be NULL or empty) plus n_msgs messages (may be 0).  Never fails. */
void router_scorer_score(const router_scorer_config_t *cfg, const char *prompt,
                         const router_scorer_msg_t *msgs, size_t n_msgs, router_score_t *out);

/* Writes the largest weighted contributions, e.g. "code 0.25, reasoning 0.13", into buf
 * (len bytes, always NUL-terminated; "none" when every feature is 0). */
void router_scorer_explain(const router_scorer_config_t *cfg, const router_score_t *s, char *buf,
                           size_t len);

#endif
