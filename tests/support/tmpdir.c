#define _GNU_SOURCE
#include "tmpdir.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int test_tmpdir_make(test_tmpdir_t *d, const char *prefix)
{
    int n = snprintf(d->path, sizeof(d->path), "/tmp/%s-XXXXXX", prefix);
    if (n < 0 || (size_t)n >= sizeof(d->path) || !mkdtemp(d->path)) {
        d->path[0] = '\0';
        return -1;
    }
    return 0;
}

char *test_tmpdir_file(const test_tmpdir_t *d, const char *name, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s", d->path, name);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "test setup: path %s/%s does not fit in %zu bytes\n", d->path, name, cap);
        abort();
    }
    return out;
}

/* nftw passes no context: the count of what could not be removed, per thread. */
static _Thread_local int failures;

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        failures++;
    return 0; /* go on with the rest */
}

int test_tmpdir_remove(test_tmpdir_t *d)
{
    if (!d->path[0])
        return 0;
    failures = 0;
    if (nftw(d->path, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        failures++;
    d->path[0] = '\0';
    return failures ? -1 : 0;
}
