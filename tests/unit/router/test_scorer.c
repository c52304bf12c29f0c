/*
 * test_scorer.c - services/router/scorer.c: features, weights and explanations.
 */
#include "scorer.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static router_scorer_config_t cfg;

static void setup(void)
{
    router_scorer_config_init(&cfg);
}

TestSuite(scorer, .init = setup);

static router_score_t score(const char *prompt)
{
    router_score_t s;
    router_scorer_score(&cfg, prompt, NULL, 0, &s);
    return s;
}

Test(scorer, simple_prompt_scores_low)
{
    router_score_t s = score("Once upon a time there was a little cat.");
    cr_assert_eq(s.code, 0);
    cr_assert_eq(s.math, 0);
    cr_assert_eq(s.reasoning, 0);
    cr_assert_eq(s.questions, 0);
    cr_assert_lt(s.score, 0.02, "score %f", s.score);
}

Test(scorer, code_math_reasoning_score_high)
{
    router_score_t s = score("Explain step by step why this C function leaks memory and compare "
                             "it with a fixed version:\n```c\n#include <stdlib.h>\nint f(void) "
                             "{ char *p = malloc(10); return 3 + 4; }\n```\nWhat is the "
                             "complexity? Can you prove it? Why?");
    cr_assert_eq(s.code, 1.0, "code %f", s.code);
    cr_assert_gt(s.math, 0.6, "math %f", s.math);
    cr_assert_eq(s.reasoning, 1.0, "reasoning %f", s.reasoning);
    cr_assert_float_eq(s.questions, 2.0 / 3.0, 1e-9);
    cr_assert_gt(s.score, 0.55, "score %f", s.score);
}

Test(scorer, cues_are_case_insensitive_and_word_anchored)
{
    cr_assert_gt(score("WHY is the sky blue").reasoning, 0);
    /* "why" inside another word is not a cue. */
    cr_assert_eq(score("nowhy").reasoning, 0);
    cr_assert_gt(score("solve 12 * 7").math, 0.6); /* "solve" and arithmetic */
    cr_assert_eq(score("x=5 and y").math, 0);
}

Test(scorer, length_saturates)
{
    char buf[5000];
    memset(buf, 'a', sizeof(buf) - 1);
    buf[sizeof(buf) - 1] = '\0';
    router_score_t s = score(buf);
    cr_assert_eq(s.length, 1.0);
    cr_assert_float_eq(s.score, cfg.w_length, 1e-9);
    buf[1000] = '\0';
    cr_assert_float_eq(score(buf).length, 0.5, 1e-9);
}

Test(scorer, conversation_depth_and_messages)
{
    router_scorer_msg_t msgs[9];
    for (int i = 0; i < 9; i++)
        msgs[i].content = "ok";
    router_score_t s;
    router_scorer_score(&cfg, NULL, msgs, 9, &s);
    cr_assert_eq(s.depth, 1.0);
    router_scorer_score(&cfg, NULL, msgs, 1, &s);
    cr_assert_eq(s.depth, 0);
    router_scorer_score(&cfg, NULL, msgs, 5, &s);
    cr_assert_float_eq(s.depth, 4.0 / 8.0, 1e-9);
    msgs[3].content = "please explain the derivative";
    router_scorer_score(&cfg, NULL, msgs, 5, &s);
    cr_assert_gt(s.reasoning, 0);
    cr_assert_gt(s.math, 0);
}

Test(scorer, weights_apply)
{
    cfg.w_code = 2.0;
    cfg.w_length = 0;
    router_score_t s = score("```x```");
    cr_assert_float_eq(s.score, 2.0 / 3.0, 1e-9);
    cfg.w_code = 0;
    s = score("```x```");
    cr_assert_eq(s.score, 0);
}

Test(scorer, explain_names_largest_parts)
{
    router_score_t s = score("Explain why: ```int x;``` prove 2+2");
    char buf[128];
    router_scorer_explain(&cfg, &s, buf, sizeof(buf));
    cr_assert(strstr(buf, "code") && strstr(buf, "reasoning"), "%s", buf);
    router_score_t zero = {0};
    router_scorer_explain(&cfg, &zero, buf, sizeof(buf));
    cr_assert_str_eq(buf, "none");
    char tiny[4];
    router_scorer_explain(&cfg, &s, tiny, sizeof(tiny));
    cr_assert_lt(strlen(tiny), sizeof(tiny));
}

Test(scorer, empty_input_is_zero)
{
    router_score_t s;
    router_scorer_score(&cfg, NULL, NULL, 0, &s);
    cr_assert_eq(s.score, 0);
    router_scorer_score(&cfg, "", NULL, 0, &s);
    cr_assert_eq(s.score, 0);
}
