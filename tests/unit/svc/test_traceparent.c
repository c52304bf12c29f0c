/*
 * test_traceparent.c - W3C traceparent parsing and formatting (libs/svc/traceparent.c).
 */
#include "svc/tracer.h"

#include <criterion/criterion.h>
#include <string.h>

#define GOOD "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

Test(traceparent, parses_and_formats_back)
{
    svc_trace_ctx_t c;
    cr_assert(svc_traceparent_parse(GOOD, &c));
    cr_assert_eq(c.trace_id[0], 0x4b);
    cr_assert_eq(c.trace_id[15], 0x36);
    cr_assert_eq(c.span_id[0], 0x00);
    cr_assert_eq(c.span_id[7], 0xb7);
    cr_assert_eq(c.flags, SVC_TRACE_SAMPLED);
    char out[SVC_TRACEPARENT_LEN + 1];
    svc_traceparent_format(&c, out);
    cr_assert_str_eq(out, GOOD);
    cr_assert(svc_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &c));
    cr_assert_eq(c.flags, 0);
}

Test(traceparent, refuses_what_the_specification_says_to_ignore)
{
    static const char *const bad[] = {
        "",
        "00",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",   /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* 00 with more */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* upper case */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",  /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* zero parent id */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version ff */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", /* not hex */
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* later version, no '-' */
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    };
    svc_trace_ctx_t c;
    memset(&c, 0x5a, sizeof(c));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_not(svc_traceparent_parse(bad[i], &c), "accepted \"%s\"", bad[i]);
    cr_assert_not(svc_traceparent_parse(NULL, &c));
    cr_assert_eq(c.flags, 0x5a, "a refused value leaves the output alone");
}

Test(traceparent, a_later_version_may_carry_more_fields)
{
    svc_trace_ctx_t c;
    cr_assert(svc_traceparent_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &c));
    cr_assert(svc_traceparent_parse(
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-comes-next", &c));
    cr_assert_eq(c.flags, 0x09);
}
