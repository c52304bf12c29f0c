/*
 * utf8.h - strict UTF-8 validation for text that arrives from the network.
 *
 * protobuf-c does not check that proto3 string fields hold UTF-8, and the services
 * echo text back (request ids) and tokenize it (prompts, chat messages, stop
 * strings), so every such field is checked here first.  Thread-safe.
 */
#ifndef LS_UTF8_H
#define LS_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when s[0..len) is well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF, no truncated sequence at the end). */
bool ls_utf8_valid(const char *s, size_t len);

#endif
