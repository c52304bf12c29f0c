/*
 * test_validate.c - services/router/validate.c: what a GenerateSubmit must satisfy.
 */
#include "base/err.h"
#include "validate.h"

#include "base/utf8.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

static Llmserve__V1__GenerateSubmit s;
static Llmserve__V1__SamplingParams sp;

static void setup(void)
{
    Llmserve__V1__GenerateSubmit init = LLMSERVE__V1__GENERATE_SUBMIT__INIT;
    Llmserve__V1__SamplingParams sinit = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    s = init;
    sp = sinit;
    s.request_id = "r1";
    s.prompt = "hello";
    s.sampling = &sp;
}

TestSuite(validate, .init = setup);

static void expect_bad(const char *want)
{
    char msg[256] = "";
    cr_assert_eq(router_validate_submit(&s, true, 1000, msg, sizeof(msg)), LS_ERR_INVALID,
                 "accepted; wanted an error with '%s'", want);
    cr_assert(strstr(msg, want), "message '%s' lacks '%s'", msg, want);
}

Test(validate, a_plain_request_passes)
{
    char msg[64];
    cr_assert_eq(router_validate_submit(&s, true, 1000, msg, sizeof(msg)), LS_OK, "%s", msg);
    s.request_id = "";
    cr_assert_eq(router_validate_submit(&s, false, 1000, msg, sizeof(msg)), LS_OK,
                 "Complete may leave the id empty");
}

Test(validate, ids_and_prompt_rule)
{
    s.request_id = "";
    expect_bad("request_id is empty");
    char longid[200];
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    s.request_id = longid;
    expect_bad("at most 128");
    s.request_id = "r";
    s.prompt = "";
    expect_bad("neither prompt nor messages");
    Llmserve__V1__ChatMessage m = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    Llmserve__V1__ChatMessage *msgs[2] = {&m, &m};
    m.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER;
    m.content = "hi";
    s.n_messages = 1;
    s.messages = msgs;
    s.prompt = "x";
    expect_bad("both prompt and messages");
    s.prompt = "";
    m.role = 0;
    expect_bad("role");
    m.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_SYSTEM;
    s.n_messages = 2;
    expect_bad("system message");
}

Test(validate, sampling_ranges)
{
    sp.temperature = 2.5f;
    expect_bad("temperature");
    sp.temperature = NAN;
    expect_bad("temperature");
    sp.temperature = 0;
    sp.top_p = 1.5f;
    expect_bad("top_p");
    sp.top_p = 0;
    sp.top_k = -1;
    expect_bad("top_k");
    sp.top_k = 0;
    sp.max_tokens = -1;
    expect_bad("max_tokens");
    sp.max_tokens = 0;
    char *stops[9] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
    sp.stop = stops;
    sp.n_stop = 9;
    expect_bad("at most 8");
    stops[0] = "";
    sp.n_stop = 1;
    expect_bad("stop[0]");
}

Test(validate, sizes_policy_and_utf8)
{
    char big[1100];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    s.prompt = big;
    expect_bad("prompt is 1099 bytes");
    s.prompt = "ok";
    s.tenant = big;
    expect_bad("tenant");
    s.tenant = "";
    s.conversation_id = big;
    expect_bad("conversation_id");
    s.conversation_id = "";
    s.cache_policy = 9;
    expect_bad("cache_policy");
    s.cache_policy = 0;
    s.prompt = "bad \xC3\x28 utf8";
    expect_bad("UTF-8");
    cr_assert(ls_utf8_valid("\xE2\x82\xAC \xF0\x9F\x98\x80", 8));
    cr_assert_not(ls_utf8_valid("\xED\xA0\x80", 3), "surrogate");
    cr_assert_not(ls_utf8_valid("\xC0\xAF", 2), "overlong");
    cr_assert_not(ls_utf8_valid("\xE2\x82", 2), "truncated");
}

Test(validate, priority_resolves_from_the_request_then_the_key_then_normal)
{
    char msg[256] = "";
    int cls = -1;
    cr_assert_eq(router_validate_priority(0, 0, &cls, msg, sizeof(msg)), LS_OK);
    cr_assert_eq(cls, LLMSERVE__V1__PRIORITY__PRIORITY_NORMAL);
    cr_assert_eq(router_validate_priority(0, 3, &cls, msg, sizeof(msg)), LS_OK);
    cr_assert_eq(cls, LLMSERVE__V1__PRIORITY__PRIORITY_BATCH, "the key's class by default");
    cr_assert_eq(router_validate_priority(1, 0, &cls, msg, sizeof(msg)), LS_OK,
                 "no key class: any class");
    cr_assert_eq(cls, LLMSERVE__V1__PRIORITY__PRIORITY_INTERACTIVE);
    cr_assert_eq(router_validate_priority(3, 1, &cls, msg, sizeof(msg)), LS_OK,
                 "lower than the key's class");
    cr_assert_eq(cls, LLMSERVE__V1__PRIORITY__PRIORITY_BATCH);
    cr_assert_eq(router_validate_priority(2, 2, &cls, msg, sizeof(msg)), LS_OK);
    cr_assert_eq(cls, LLMSERVE__V1__PRIORITY__PRIORITY_NORMAL);
}

Test(validate, priority_above_the_key_or_unknown_is_refused)
{
    char msg[256] = "";
    int cls = -1;
    cr_assert_eq(router_validate_priority(1, 3, &cls, msg, sizeof(msg)), LS_ERR_INVALID);
    cr_assert(strstr(msg, "interactive is above this API key's class batch"), "%s", msg);
    cr_assert_eq(cls, -1, "nothing resolved on a refusal");
    cr_assert_eq(router_validate_priority(2, 3, &cls, msg, sizeof(msg)), LS_ERR_INVALID);
    cr_assert_eq(router_validate_priority(7, 0, &cls, msg, sizeof(msg)), LS_ERR_INVALID);
    cr_assert(strstr(msg, "priority 7 is not a known class"), "%s", msg);
    cr_assert_eq(router_validate_priority(-1, 0, &cls, msg, sizeof(msg)), LS_ERR_INVALID);
}
