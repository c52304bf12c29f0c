/*
 * test_chat.c - services/inference/chat.c: the chat template and its rules.
 */
#include "base/err.h"
#include "chat.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#define SYS LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_SYSTEM
#define USER LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER
#define ASSISTANT LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_ASSISTANT

typedef struct {
    Llmserve__V1__ChatMessage m[8];
    Llmserve__V1__ChatMessage *p[8];
    size_t n;
} conv_t;

static void add(conv_t *c, Llmserve__V1__ChatRole role, const char *content)
{
    Llmserve__V1__ChatMessage init = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    c->m[c->n] = init;
    c->m[c->n].role = role;
    c->m[c->n].content = (char *)content;
    c->p[c->n] = &c->m[c->n];
    c->n++;
}

/* Renders c and checks the text; returns nothing, asserts. */
static void expect_render(conv_t *c, const char *want)
{
    char *out = NULL;
    size_t len = 0;
    char err[128] = "";
    cr_assert_eq(inf_chat_render(c->p, c->n, &out, &len, err, sizeof(err)), LS_OK, "%s", err);
    cr_assert_eq(len, strlen(out));
    cr_assert_str_eq(out, want);
    free(out);
}

static void expect_invalid(conv_t *c, const char *why)
{
    char *out = NULL;
    size_t len = 0;
    char err[128] = "";
    cr_assert_eq(inf_chat_render(c->p, c->n, &out, &len, err, sizeof(err)), LS_ERR_INVALID);
    cr_assert_null(out);
    cr_assert(strstr(err, why), "err \"%s\" should mention \"%s\"", err, why);
}

Test(chat, single_user_turn)
{
    conv_t c = {0};
    add(&c, USER, "Hello?");
    expect_render(&c, "[INST] Hello? [/INST]");
}

Test(chat, system_goes_inside_the_first_turn)
{
    conv_t c = {0};
    add(&c, SYS, "Be brief.");
    add(&c, USER, "Hi");
    expect_render(&c, "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]");
}

Test(chat, history_alternates_turns)
{
    conv_t c = {0};
    add(&c, SYS, "S");
    add(&c, USER, "u1");
    add(&c, ASSISTANT, "a1");
    add(&c, USER, "u2");
    expect_render(&c, "[INST] <<SYS>>\nS\n<</SYS>>\n\nu1 [/INST] a1 [INST] u2 [/INST]");
}

Test(chat, trailing_assistant_turn_is_continued)
{
    conv_t c = {0};
    add(&c, USER, "Count");
    add(&c, ASSISTANT, "one, two,");
    expect_render(&c, "[INST] Count [/INST] one, two,");
}

Test(chat, system_alone_gets_an_empty_turn)
{
    conv_t c = {0};
    add(&c, SYS, "S");
    expect_render(&c, "[INST] <<SYS>>\nS\n<</SYS>>\n\n [/INST]");
}

Test(chat, empty_content_is_allowed)
{
    conv_t c = {0};
    add(&c, USER, "");
    expect_render(&c, "[INST]  [/INST]");
}

Test(chat, system_not_first_is_invalid)
{
    conv_t c = {0};
    add(&c, USER, "u");
    add(&c, SYS, "late");
    expect_invalid(&c, "system");
}

Test(chat, unspecified_role_is_invalid)
{
    conv_t c = {0};
    add(&c, USER, "u");
    add(&c, LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_UNSPECIFIED, "x");
    expect_invalid(&c, "message 1");
    conv_t d = {0};
    add(&d, (Llmserve__V1__ChatRole)42, "x");
    expect_invalid(&d, "role 42");
}

Test(chat, content_must_be_utf8)
{
    conv_t c = {0};
    add(&c, USER, "bad \xc3");
    expect_invalid(&c, "UTF-8");
}
