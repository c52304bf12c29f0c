/*
 * upstream_id.h - the id of one try of a request on an inference instance, as it travels
 * in InferenceSubmit.request_id / InferenceCancel.request_id and comes back in every
 * InferenceEvent: a router__next_id value written in decimal.
 *
 * Formatted and parsed here only, so both ends agree.  Pure functions, thread-safe.
 */
#ifndef ROUTER_UPSTREAM_ID_H
#define ROUTER_UPSTREAM_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes a formatted id needs at most: 20 digits (UINT64_MAX) and the NUL. */
#define ROUTER_UPSTREAM_ID_LEN 21

/* Writes id (nonzero) in decimal into buf (len bytes, at least ROUTER_UPSTREAM_ID_LEN;
 * a shorter buffer is a bug and aborts).  Returns buf. */
char *router_upstream_id_format(uint64_t id, char *buf, size_t len);

/* Reads an id written by router_upstream_id_format: returns true with *id set when s is
 * 1 to 20 decimal digits with no sign, space, leading zero or trailing byte, nonzero and
 * at most UINT64_MAX; false otherwise (*id untouched).  s comes from the network. */
bool router_upstream_id_parse(const char *s, uint64_t *id);

#endif
