#include "upstream_id.h"

#include "base/log.h"

#include <inttypes.h>
#include <stdio.h>

char *router_upstream_id_format(uint64_t id, char *buf, size_t len)
{
    LS_ASSERT(id != 0 && len >= ROUTER_UPSTREAM_ID_LEN);
    snprintf(buf, len, "%" PRIu64, id);
    return buf;
}

bool router_upstream_id_parse(const char *s, uint64_t *id)
{
    /* No strtoull: it takes spaces, signs (negating the value) and saturates on overflow. */
    if (s[0] < '1' || s[0] > '9')
        return false; /* empty, a sign, a space, or a leading zero ("0" included) */
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *id = v;
    return true;
}
