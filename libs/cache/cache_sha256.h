/*
 * cache_sha256.h - SHA-256 (FIPS 180-4), the strong hash behind cache keys.
 *
 * A key is only as safe as its hash: two different questions must never share an
 * answer, so keys use a cryptographic digest rather than a fast 64-bit hash whose
 * collisions an attacker (or bad luck at a billion entries) could produce.
 * Not thread-safe per context; independent contexts may be used from any thread.
 */
#ifndef CACHE_SHA256_H
#define CACHE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define CACHE_SHA256_BYTES 32

typedef struct {
    uint32_t h[8];
    uint64_t total; /* bytes hashed so far */
    uint8_t buf[64];
    size_t used; /* bytes waiting in buf */
} cache_sha256_t;

void cache_sha256_init(cache_sha256_t *c);

/* Adds len bytes of data (data may be NULL when len is 0). */
void cache_sha256_update(cache_sha256_t *c, const void *data, size_t len);

/* Writes the digest to out; the context must be initialised again before reuse. */
void cache_sha256_final(cache_sha256_t *c, uint8_t out[CACHE_SHA256_BYTES]);

#endif
