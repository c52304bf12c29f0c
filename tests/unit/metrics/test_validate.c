/*
 * test_validate.c - names, labels and values as metrics.proto accepts them.
 */
#include "validate.h"

#include <criterion/criterion.h>
#include <string.h>

Test(validate, metric_names)
{
    cr_assert(validate_metric_name("llmserve_ttft_seconds"));
    cr_assert(validate_metric_name("_x"));
    cr_assert(validate_metric_name("a:b_c9"));
    cr_assert(validate_metric_name(":x"));
    cr_assert_not(validate_metric_name(""));
    cr_assert_not(validate_metric_name("9abc"));
    cr_assert_not(validate_metric_name("a-b"));
    cr_assert_not(validate_metric_name("a b"));
    cr_assert_not(validate_metric_name("caf\xc3\xa9"));
    char long_name[VALIDATE_MAX_NAME + 2];
    memset(long_name, 'a', sizeof(long_name));
    long_name[VALIDATE_MAX_NAME] = '\0';
    cr_assert(validate_metric_name(long_name));
    long_name[VALIDATE_MAX_NAME] = 'a';
    long_name[VALIDATE_MAX_NAME + 1] = '\0';
    cr_assert_not(validate_metric_name(long_name));
}

Test(validate, label_names)
{
    cr_assert(validate_label_name("pool"));
    cr_assert(validate_label_name("_p0"));
    cr_assert_not(validate_label_name("__name__"));
    cr_assert_not(validate_label_name("__x"));
    cr_assert_not(validate_label_name("a:b")); /* colons are for metric names only */
    cr_assert_not(validate_label_name("0a"));
    cr_assert_not(validate_label_name(""));
}

Test(validate, label_values)
{
    cr_assert(validate_label_value(""));
    cr_assert(validate_label_value("caf\xc3\xa9 \"quoted\" back\\slash\nnewline"));
    cr_assert_not(validate_label_value("\xc3"));         /* truncated */
    cr_assert_not(validate_label_value("\xed\xa0\x80")); /* a surrogate */
    char v[VALIDATE_MAX_VALUE + 2];
    memset(v, 'v', sizeof(v));
    v[VALIDATE_MAX_VALUE] = '\0';
    cr_assert(validate_label_value(v));
    v[VALIDATE_MAX_VALUE] = 'v';
    v[VALIDATE_MAX_VALUE + 1] = '\0';
    cr_assert_not(validate_label_value(v));
}

Test(validate, reserved_names_and_reasons)
{
    cr_assert(validate_reserved_name("llmserve_instance_up"));
    cr_assert(validate_reserved_name("llmserve_collector_series"));
    cr_assert_not(validate_reserved_name("llmserve_up"));
    cr_assert_str_eq(validate_reason_name(REJECT_SERIES_LIMIT), "series_limit");
    cr_assert_str_eq(validate_reason_name(REJECT_N_REASONS), "unknown");
    for (int r = 0; r < REJECT_N_REASONS; r++)
        cr_assert(validate_label_value(validate_reason_name((reject_reason_t)r)));
}
