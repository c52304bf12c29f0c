/*
 * test_err.c - ls_strerror and ls_err_to_grpc (libs/base/err.c).
 */
#include "base/err.h"

#include <criterion/criterion.h>
#include <limits.h>
#include <string.h>

static const int all_errs[] = {
    LS_OK,         LS_ERR_NOMEM,   LS_ERR_INVALID,   LS_ERR_IO,          LS_ERR_CLOSED,
    LS_ERR_FULL,   LS_ERR_TIMEOUT, LS_ERR_NOT_FOUND, LS_ERR_UNAVAILABLE, LS_ERR_CANCELLED,
    LS_ERR_FORMAT, LS_ERR_EXISTS,  LS_ERR_INTERNAL,  LS_ERR_DEVICE,
};
#define N_ERRS (sizeof(all_errs) / sizeof(all_errs[0]))

Test(err, enum_is_zero_then_consecutive_negatives)
{
    /* The table above must cover the whole enum: OK is 0 and errors run -1 .. -N. */
    for (size_t i = 0; i < N_ERRS; i++)
        cr_assert_eq(all_errs[i], -(int)i, "entry %zu is %d", i, all_errs[i]);
}

Test(err, strerror_is_non_empty_and_known_for_every_value)
{
    for (size_t i = 0; i < N_ERRS; i++) {
        const char *s = ls_strerror(all_errs[i]);
        cr_assert_not_null(s, "ls_strerror(%d) is NULL", all_errs[i]);
        cr_assert_gt(strlen(s), 0, "ls_strerror(%d) is empty", all_errs[i]);
        cr_assert_str_neq(s, "unknown error", "ls_strerror(%d) is the fallback", all_errs[i]);
    }
}

Test(err, strerror_is_distinct_for_every_value)
{
    for (size_t i = 0; i < N_ERRS; i++) {
        for (size_t j = i + 1; j < N_ERRS; j++) {
            cr_assert_str_neq(ls_strerror(all_errs[i]), ls_strerror(all_errs[j]),
                              "ls_strerror(%d) == ls_strerror(%d) == \"%s\"", all_errs[i],
                              all_errs[j], ls_strerror(all_errs[i]));
        }
    }
}

Test(err, strerror_of_ok_says_success)
{
    cr_assert_str_eq(ls_strerror(LS_OK), "success");
}

Test(err, strerror_of_unknown_values_is_unknown_error)
{
    const int unknown[] = {1, 2, LS_ERR_DEVICE - 1, -100, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        const char *s = ls_strerror(unknown[i]);
        cr_assert_not_null(s);
        cr_assert_str_eq(s, "unknown error", "ls_strerror(%d) = \"%s\"", unknown[i], s);
    }
}

Test(err, to_grpc_maps_each_error_to_its_status)
{
    static const struct {
        int err;
        int grpc;
    } want[] = {
        {LS_OK, 0},               /* OK */
        {LS_ERR_CANCELLED, 1},    /* CANCELLED */
        {LS_ERR_INVALID, 3},      /* INVALID_ARGUMENT */
        {LS_ERR_FORMAT, 3},       /* INVALID_ARGUMENT */
        {LS_ERR_TIMEOUT, 4},      /* DEADLINE_EXCEEDED */
        {LS_ERR_NOT_FOUND, 5},    /* NOT_FOUND */
        {LS_ERR_EXISTS, 6},       /* ALREADY_EXISTS */
        {LS_ERR_NOMEM, 8},        /* RESOURCE_EXHAUSTED */
        {LS_ERR_FULL, 8},         /* RESOURCE_EXHAUSTED */
        {LS_ERR_CLOSED, 14},      /* UNAVAILABLE */
        {LS_ERR_UNAVAILABLE, 14}, /* UNAVAILABLE */
        {LS_ERR_IO, 14},          /* UNAVAILABLE */
        {LS_ERR_INTERNAL, 13},    /* INTERNAL */
        {LS_ERR_DEVICE, 14},      /* UNAVAILABLE: another instance can serve it */
    };
    size_t n = sizeof(want) / sizeof(want[0]);
    cr_assert_eq(n, N_ERRS, "every error needs an expected status");
    for (size_t i = 0; i < n; i++) {
        int got = ls_err_to_grpc(want[i].err);
        cr_assert_eq(got, want[i].grpc, "ls_err_to_grpc(%d) = %d, want %d", want[i].err, got,
                     want[i].grpc);
    }
}

Test(err, to_grpc_of_unknown_values_is_internal)
{
    const int unknown[] = {1, LS_ERR_DEVICE - 1, -100, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
        cr_assert_eq(ls_err_to_grpc(unknown[i]), 13, "ls_err_to_grpc(%d)", unknown[i]);
}

Test(err, only_ok_maps_to_grpc_ok)
{
    for (size_t i = 1; i < N_ERRS; i++)
        cr_assert_neq(ls_err_to_grpc(all_errs[i]), 0, "error %d maps to OK", all_errs[i]);
}
