/*
 * file.h - reading a small file (certificates, key lists) whole.  Thread-safe.
 */
#ifndef LS_FILE_H
#define LS_FILE_H

#include <stddef.h>

/* Reads path into a new NUL-terminated buffer (the caller frees it) and its length into
 * *len (may be NULL).  Returns NULL with errno set when the file cannot be opened or
 * read, holds more than max_bytes (EFBIG), or memory runs out. */
char *ls_file_read(const char *path, size_t max_bytes, size_t *len);

#endif
