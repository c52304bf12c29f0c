/*
 * traceparent.c - W3C Trace Context "traceparent" values (level 1, section 3.2).
 */
#include "svc/tracer.h"

#include "base/clock.h"

#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* upper case is not allowed either */
}

/* n bytes from 2n lower-case hex digits; false on anything else. */
static bool hex_bytes(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hex_val(s[2 * i]), lo = hex_val(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

bool svc_traceparent_parse(const char *s, svc_trace_ctx_t *out)
{
    if (!s)
        return false;
    size_t len = strlen(s);
    if (len < SVC_TRACEPARENT_LEN)
        return false;
    uint8_t version;
    if (!hex_bytes(s, &version, 1) || version == 0xff)
        return false;
    /* Version 00 is exactly 55 bytes; a later version may append "-..." fields. */
    if (version == 0 ? len != SVC_TRACEPARENT_LEN
                     : len > SVC_TRACEPARENT_LEN && s[SVC_TRACEPARENT_LEN] != '-')
        return false;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return false;
    svc_trace_ctx_t c;
    if (!hex_bytes(s + 3, c.trace_id, 16) || !hex_bytes(s + 36, c.span_id, 8) ||
        !hex_bytes(s + 53, &c.flags, 1))
        return false;
    if (all_zero(c.trace_id, 16) || all_zero(c.span_id, 8))
        return false;
    *out = c;
    return true;
}

void svc_traceparent_format(const svc_trace_ctx_t *c, char *out)
{
    static const char digits[] = "0123456789abcdef";
    char *p = out;
    *p++ = '0';
    *p++ = '0';
    *p++ = '-';
    for (int i = 0; i < 16; i++) {
        *p++ = digits[c->trace_id[i] >> 4];
        *p++ = digits[c->trace_id[i] & 15];
    }
    *p++ = '-';
    for (int i = 0; i < 8; i++) {
        *p++ = digits[c->span_id[i] >> 4];
        *p++ = digits[c->span_id[i] & 15];
    }
    *p++ = '-';
    *p++ = digits[c->flags >> 4];
    *p++ = digits[c->flags & 15];
    *p = '\0';
}

/* A splitmix64 step: the fallback when getrandom fails (ids must differ, not be secret). */
static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void svc_trace_ctx_random(svc_trace_ctx_t *out)
{
    uint8_t b[24];
    if (getrandom(b, sizeof(b), GRND_NONBLOCK) != (ssize_t)sizeof(b)) {
        static atomic_uint_fast64_t seq;
        uint64_t z = (uint64_t)ls_wall_us() ^ (atomic_fetch_add(&seq, 1) << 40);
        for (size_t i = 0; i < sizeof(b); i += 8) {
            z = mix(z + 0x9e3779b97f4a7c15ull);
            memcpy(b + i, &z, 8);
        }
    }
    memcpy(out->trace_id, b, 16);
    memcpy(out->span_id, b + 16, 8);
    if (all_zero(out->trace_id, 16)) /* not valid; 2^-128 */
        out->trace_id[15] = 1;
    if (all_zero(out->span_id, 8))
        out->span_id[7] = 1;
    out->flags = 0;
}
