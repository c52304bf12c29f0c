/*
 * test_upstream_id.c - services/router/upstream_id.c: what is formatted parses back, and
 * nothing else parses.
 */
#include "upstream_id.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

Test(upstream_id, formatted_ids_parse_back)
{
    const uint64_t ids[] = {1,
                            9,
                            10,
                            42,
                            1000000007ULL,
                            UINT32_MAX,
                            (uint64_t)UINT32_MAX + 1,
                            UINT64_MAX / 10,
                            UINT64_MAX - 1,
                            UINT64_MAX};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        char buf[ROUTER_UPSTREAM_ID_LEN];
        char *s = router_upstream_id_format(ids[i], buf, sizeof(buf));
        cr_assert_eq(s, buf);
        uint64_t back = 0;
        cr_assert(router_upstream_id_parse(s, &back), "'%s' does not parse", s);
        cr_assert_eq(back, ids[i], "'%s'", s);
    }
    char buf[ROUTER_UPSTREAM_ID_LEN];
    cr_assert_str_eq(router_upstream_id_format(UINT64_MAX, buf, sizeof(buf)),
                     "18446744073709551615");
    cr_assert_str_eq(router_upstream_id_format(7, buf, sizeof(buf)), "7");
}

Test(upstream_id, everything_else_is_refused)
{
    static const struct {
        const char *s, *why;
    } bad[] = {
        {"", "empty"},
        {"0", "zero is no id"},
        {"00", "leading zero"},
        {"007", "leading zero"},
        {"-1", "sign (strtoull read it as UINT64_MAX)"},
        {"+1", "sign"},
        {" 1", "space"},
        {"1 ", "trailing space"},
        {"\t1", "tab"},
        {"1x", "trailing byte"},
        {"12a3", "stray byte"},
        {"x", "no digit"},
        {"1.0", "decimal point"},
        {"0x10", "hexadecimal"},
        {"1e3", "exponent"},
        {"18446744073709551616", "UINT64_MAX + 1"},
        {"99999999999999999999", "20 digits, over UINT64_MAX"},
        {"184467440737095516150", "21 digits"},
        {"100000000000000000000000000000", "30 digits"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t id = 12345;
        cr_assert_not(router_upstream_id_parse(bad[i].s, &id), "'%s' parsed (%s)", bad[i].s,
                      bad[i].why);
        cr_assert_eq(id, 12345, "'%s' wrote the id (%s)", bad[i].s, bad[i].why);
    }
}

Test(upstream_id, a_short_buffer_is_a_bug, .signal = SIGABRT)
{
    char buf[ROUTER_UPSTREAM_ID_LEN - 1];
    router_upstream_id_format(1, buf, sizeof(buf));
}
