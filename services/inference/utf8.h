/*
 * utf8.h - strict UTF-8 validation for text that arrives from the network.
 *
 * protobuf-c does not check that proto3 string fields hold UTF-8, and this service
 * echoes text back (request ids) and tokenizes it (prompts, chat messages, stop
 * strings), so every such field is checked here first.  Thread-safe.
 */
#ifndef INF_UTF8_H
#define INF_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when s[0..len) is well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF, no truncated sequence at the end). */
bool inf_utf8_valid(const char *s, size_t len);

#endif
