/*
 * tmpdir.h - a fresh directory under /tmp for a test's files, removed with everything in
 * it when the test is done.
 *
 * Not thread-safe: one thread makes and removes a given test_tmpdir_t.
 */
#ifndef TEST_TMPDIR_H
#define TEST_TMPDIR_H

#include <stddef.h>

typedef struct {
    char path[128]; /* "/tmp/<prefix>-XXXXXX" once made; "" before and after */
} test_tmpdir_t;

/* Makes a new directory /tmp/<prefix>-XXXXXX (mode 0700, mkdtemp) and writes its path
 * into d->path.  Returns 0, or -1 (errno set; d->path "") when the prefix is too long or
 * mkdtemp fails. */
int test_tmpdir_make(test_tmpdir_t *d, const char *prefix);

/* Writes "<d->path>/<name>" into out (cap bytes) and returns out.  Aborts with a message
 * when it does not fit: a test's own paths are short, so that is a bug in the test. */
char *test_tmpdir_file(const test_tmpdir_t *d, const char *name, char *out, size_t cap);

/* Removes d->path and everything under it (depth first, symbolic links removed, never
 * followed) and clears d->path.  Returns 0, or -1 when something could not be removed
 * (it goes on with the rest).  No-op returning 0 when d was never made or is already
 * removed. */
int test_tmpdir_remove(test_tmpdir_t *d);

#endif
