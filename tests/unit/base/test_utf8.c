/*
 * test_utf8.c - libs/base/utf8.c: what counts as UTF-8 from the network.
 */
#include "base/utf8.h"

#include <criterion/criterion.h>
#include <string.h>

static bool valid(const char *s)
{
    return ls_utf8_valid(s, strlen(s));
}

Test(utf8, accepts_well_formed_text)
{
    cr_assert(valid(""));
    cr_assert(valid("plain ascii"));
    cr_assert(valid("caf\xc3\xa9"));      /* é */
    cr_assert(valid("\xe2\x82\xac"));     /* € */
    cr_assert(valid("\xf0\x9f\x98\x80")); /* U+1F600 */
    cr_assert(valid("\xef\xbf\xbd"));     /* U+FFFD */
    cr_assert(valid("\xf4\x8f\xbf\xbf")); /* U+10FFFF, the last code point */
    cr_assert(ls_utf8_valid("a\0b", 3), "NUL is a valid code point");
}

Test(utf8, rejects_malformed_text)
{
    cr_assert_not(valid("\x80"), "lone continuation byte");
    cr_assert_not(valid("\xc3"), "truncated two-byte sequence");
    cr_assert_not(valid("abc\xe2\x82"), "truncated three-byte sequence at the end");
    cr_assert_not(valid("\xc0\xaf"), "overlong '/'");
    cr_assert_not(valid("\xe0\x80\xaf"), "overlong three-byte form");
    cr_assert_not(valid("\xf0\x80\x80\xaf"), "overlong four-byte form");
    cr_assert_not(valid("\xed\xa0\x80"), "UTF-16 surrogate U+D800");
    cr_assert_not(valid("\xf4\x90\x80\x80"), "above U+10FFFF");
    cr_assert_not(valid("\xff"), "0xff never appears");
    cr_assert_not(valid("\xc3\x28"), "lead byte followed by ASCII");
}

Test(utf8, length_bounds_the_check)
{
    const char *s = "\xe2\x82\xac";
    cr_assert_not(ls_utf8_valid(s, 2), "a cut inside a character is not valid");
    cr_assert(ls_utf8_valid(s, 0));
}
