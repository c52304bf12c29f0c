/*
 * discovery.c - what every discovery source shares: the ops calls, the checks of names
 * and addresses, the weight rule, and freeing a list.
 */
#define _GNU_SOURCE
#include "discovery.h"

#include "base/err.h"
#include "base/log.h"

#include <stdlib.h>
#include <string.h>

int discovery_start(discovery_t *d, discovery_update_fn fn, void *ud)
{
    return d->ops->start(d, fn, ud);
}

int discovery_watch_caches(discovery_t *d, discovery_caches_fn fn, void *ud)
{
    if (!d->ops->watch_caches)
        return LS_ERR_NOT_FOUND;
    return d->ops->watch_caches(d, fn, ud);
}

void discovery_stop(discovery_t *d)
{
    if (d)
        d->ops->stop(d);
}

void discovery_destroy(discovery_t *d)
{
    if (d) {
        d->ops->stop(d);
        d->ops->destroy(d);
    }
}

static bool valid_chars(const char *s, size_t len, bool version)
{
    if (len == 0 || len > DISCOVERY_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
                  (version && ((c >= 'A' && c <= 'Z') || c == '.'));
        if (!ok)
            return false;
    }
    return true;
}

bool discovery_pool_name_valid(const char *s, size_t len)
{
    return valid_chars(s, len, false);
}

bool discovery_version_valid(const char *s, size_t len)
{
    return valid_chars(s, len, true);
}

bool discovery_addr_valid(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || strlen(s) > 255)
        return false;
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end || port < 1 || port > 65535)
        return false;
    for (const char *p = s; p < colon; p++)
        if (*p == ' ' || *p == ',' || *p == '=' || *p == ';')
            return false;
    return true;
}

static bool same_version(const discovery_instance_t *a, const discovery_instance_t *b)
{
    return strcmp(a->pool, b->pool) == 0 && strcmp(a->version, b->version) == 0;
}

/* A version counts once, as its first entry in the list says (explicit or not, and
 * which weight); quadratic, for lists of a few hundred entries at most. */
void discovery_fill_weights(discovery_instance_t *list, size_t n, const bool *explicit_weight)
{
    if (n == 0)
        return;
    bool *first = ls_xcalloc(n, sizeof(*first));
    uint32_t *share = ls_xcalloc(n, sizeof(*share)); /* of the pool of entry i */
    for (size_t j = 0; j < n; j++) {
        first[j] = true;
        for (size_t k = 0; k < j && first[j]; k++)
            first[j] = !same_version(&list[k], &list[j]);
    }
    for (size_t i = 0; i < n; i++) {
        if (explicit_weight[i])
            continue;
        uint64_t used = 0;
        size_t implicit_versions = 0;
        for (size_t j = 0; j < n; j++) {
            if (!first[j] || strcmp(list[j].pool, list[i].pool) != 0)
                continue;
            if (explicit_weight[j])
                used += list[j].weight;
            else
                implicit_versions++;
        }
        uint64_t left = used >= 100 ? 0 : 100 - used;
        share[i] = (uint32_t)(left / (implicit_versions ? implicit_versions : 1));
    }
    for (size_t i = 0; i < n; i++)
        if (!explicit_weight[i])
            list[i].weight = share[i];
    free(share);
    free(first);
}

void discovery_list_free(discovery_instance_t *list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++) {
        free(list[i].pool);
        free(list[i].version);
        free(list[i].addr);
    }
    free(list);
}
