/*
 * test_prefix.c - services/router/prefix.c: which bytes of a request its prefix key
 * covers.
 */
#include "prefix.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static Llmserve__V1__GenerateSubmit prompt_submit(const char *prompt)
{
    Llmserve__V1__GenerateSubmit s = LLMSERVE__V1__GENERATE_SUBMIT__INIT;
    s.prompt = (char *)prompt;
    return s;
}

Test(prefix, a_prompt_is_keyed_by_its_first_bytes)
{
    char a[400], b[400];
    memset(a, 'x', 300);
    memcpy(b, a, 300);
    snprintf(a + 300, 100, "first question");
    snprintf(b + 300, 100, "another question entirely");
    Llmserve__V1__GenerateSubmit sa = prompt_submit(a), sb = prompt_submit(b);
    uint64_t ka = router_prefix_key(&sa, 256);
    cr_assert_neq(ka, 0);
    cr_assert_eq(ka, router_prefix_key(&sb, 256), "same first 256 bytes, same key");
    cr_assert_neq(router_prefix_key(&sa, 320), router_prefix_key(&sb, 320),
                  "the suffixes differ within 320 bytes");
    cr_assert_eq(router_prefix_key(&sa, 0), 0, "0 bytes: no key");
    Llmserve__V1__GenerateSubmit short1 = prompt_submit("hi"), short2 = prompt_submit("ho");
    cr_assert_neq(router_prefix_key(&short1, 256), router_prefix_key(&short2, 256),
                  "a short prompt is keyed whole");
}

Test(prefix, messages_are_keyed_through_the_first_user_message)
{
    Llmserve__V1__ChatMessage sys = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    Llmserve__V1__ChatMessage user = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    Llmserve__V1__ChatMessage reply = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    Llmserve__V1__ChatMessage user2 = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    sys.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_SYSTEM;
    sys.content = "You are terse.";
    user.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER;
    user.content = "What is a prefix cache?";
    reply.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_ASSISTANT;
    reply.content = "Reused KV.";
    user2.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER;
    user2.content = "And how big?";
    Llmserve__V1__ChatMessage *turn1[] = {&sys, &user};
    Llmserve__V1__ChatMessage *turn2[] = {&sys, &user, &reply, &user2};
    Llmserve__V1__GenerateSubmit s1 = LLMSERVE__V1__GENERATE_SUBMIT__INIT;
    Llmserve__V1__GenerateSubmit s2 = LLMSERVE__V1__GENERATE_SUBMIT__INIT;
    s1.n_messages = 2;
    s1.messages = turn1;
    s2.n_messages = 4;
    s2.messages = turn2;
    cr_assert_eq(router_prefix_key(&s1, 256), router_prefix_key(&s2, 256),
                 "later turns do not move the key");
    uint64_t before = router_prefix_key(&s1, 256);
    user.content = "What is a KV cache?";
    cr_assert_neq(router_prefix_key(&s1, 256), before, "the first user message is part of it");
    /* The same text under another role is another prefix (the template renders it
     * differently). */
    Llmserve__V1__ChatMessage as_sys = user;
    as_sys.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_SYSTEM;
    Llmserve__V1__ChatMessage *only_user[] = {&user};
    Llmserve__V1__ChatMessage *only_sys[] = {&as_sys};
    Llmserve__V1__GenerateSubmit s3 = LLMSERVE__V1__GENERATE_SUBMIT__INIT;
    Llmserve__V1__GenerateSubmit s4 = LLMSERVE__V1__GENERATE_SUBMIT__INIT;
    s3.n_messages = 1;
    s3.messages = only_user;
    s4.n_messages = 1;
    s4.messages = only_sys;
    cr_assert_neq(router_prefix_key(&s3, 256), router_prefix_key(&s4, 256));
}
