/* test_request.c - services/cache/request.c: checks on requests from the network. */
#include "request.h"

#include "base/utf8.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

Test(request, utf8)
{
    cr_assert(ls_utf8_valid("plain", 5));
    cr_assert(ls_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
    cr_assert_not(ls_utf8_valid("\xff", 1));
    cr_assert_not(ls_utf8_valid("\xc3", 1), "truncated");
    cr_assert_not(ls_utf8_valid("\xc0\xaf", 2), "overlong");
    cr_assert_not(ls_utf8_valid("\xe0\x80\xaf", 3), "overlong");
    cr_assert_not(ls_utf8_valid("\xed\xa0\x80", 3), "surrogate");
    cr_assert_not(ls_utf8_valid("\xf4\x90\x80\x80", 4), "past U+10FFFF");
    cr_assert_not(ls_utf8_valid("\xe2\x82", 2), "truncated");
}

static grpc_status_code check_lookup(const char *model, const char *prompt, float temp,
                                     float min_sim, const request_limits_t *lim)
{
    Llmserve__V1__SamplingParams sp = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    sp.temperature = temp;
    Llmserve__V1__CacheKey key = LLMSERVE__V1__CACHE_KEY__INIT;
    key.model = (char *)model;
    key.prompt = (char *)prompt;
    key.sampling = &sp;
    Llmserve__V1__CacheLookup l = LLMSERVE__V1__CACHE_LOOKUP__INIT;
    l.key = &key;
    l.min_similarity = min_sim;
    Llmserve__V1__CacheRequest r = LLMSERVE__V1__CACHE_REQUEST__INIT;
    r.kind_case = LLMSERVE__V1__CACHE_REQUEST__KIND_LOOKUP;
    r.lookup = &l;
    char err[256];
    return request_check(lim, &r, err, sizeof(err));
}

Test(request, lookups)
{
    const char *models[] = {"small"};
    request_limits_t any = {.max_key_bytes = 16};
    request_limits_t only = {.max_key_bytes = 16, .models = models, .n_models = 1};
    cr_assert_eq(check_lookup("m", "q", 0, 0, &any), GRPC_STATUS_OK);
    cr_assert_eq(check_lookup("m", "q", 2.0f, 1.0f, &any), GRPC_STATUS_OK);
    cr_assert_eq(check_lookup("m", "", 0, 0, &any), GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(check_lookup("", "q", 0, 0, &any), GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(check_lookup("m", "0123456789abcdefX", 0, 0, &any), GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(check_lookup("m", "0123456789abcdef", 0, 0, &any), GRPC_STATUS_OK);
    cr_assert_eq(check_lookup("m", "q", NAN, 0, &any), GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(check_lookup("m", "q", -0.1f, 0, &any), GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(check_lookup("m", "q", 0, NAN, &any), GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(check_lookup("m", "q", 0, -0.5f, &any), GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(check_lookup("small", "q", 0, 0, &only), GRPC_STATUS_OK);
    cr_assert_eq(check_lookup("large", "q", 0, 0, &only), GRPC_STATUS_NOT_FOUND);
}
