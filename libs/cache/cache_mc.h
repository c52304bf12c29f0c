/*
 * cache_mc.h - a memcached client for one thread, over libmemcached.
 *
 * Servers are given in libmemcached's configuration-string form
 * ("--SERVER=10.0.0.1:11211 --SERVER=10.0.0.2:11211"; any other libmemcached option
 * may follow).  Keys are spread over the servers by consistent hashing (ketama), so
 * adding or removing one server moves only its share of the keys.  Every call is
 * bounded by the connect and I/O timeouts: a dead or stalled server costs at most
 * about one timeout, never a hang.
 *
 * Blocking: calls do network I/O and must never run on a gRPC completion-queue thread.
 * Not thread-safe: each worker thread owns its own cache_mc_t.
 */
#ifndef CACHE_MC_H
#define CACHE_MC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cache_mc cache_mc_t;

typedef struct {
    const char *servers;        /* libmemcached configuration string */
    int64_t connect_timeout_ms; /* default 50 */
    int64_t io_timeout_ms;      /* each poll, send and receive; default 50 */
} cache_mc_config_t;

void cache_mc_config_init(cache_mc_config_t *cfg);

/* Checks a configuration string without connecting.  Returns LS_OK, or LS_ERR_INVALID
 * with libmemcached's reason in err (err_len bytes). */
int cache_mc_check(const char *servers, char *err, size_t err_len);

/* Creates a client (connections open lazily, on first use).  Returns NULL when the
 * configuration string is invalid or names no server. */
cache_mc_t *cache_mc_create(const cache_mc_config_t *cfg);

/* Closes connections and frees.  NULL is a no-op. */
void cache_mc_destroy(cache_mc_t *mc);

/* Number of servers in the configuration. */
size_t cache_mc_server_count(const cache_mc_t *mc);

/* Index (0 .. count-1) of the server key maps to. */
size_t cache_mc_server_of(const cache_mc_t *mc, const char *key, size_t key_len);

/* The host (or socket path) and port of server i (0 .. count-1), for traces and logs.
 * Returns false, leaving the outputs untouched, for an index out of range; *host is
 * borrowed until mc is destroyed. */
bool cache_mc_server_addr(const cache_mc_t *mc, size_t i, const char **host, int *port);

/* Fetches key.  On LS_OK *val is a new buffer the caller owns (free()).  Returns LS_OK,
 * LS_ERR_NOT_FOUND, LS_ERR_TIMEOUT, LS_ERR_UNAVAILABLE (the server cannot be reached
 * or failed), or LS_ERR_NOMEM. */
int cache_mc_get(cache_mc_t *mc, const char *key, size_t key_len, uint8_t **val, size_t *len);

/* Stores val under key for ttl_s seconds (0 = no expiry; at most 30 days).  Returns
 * LS_OK, LS_ERR_FULL when the server refuses the size, LS_ERR_TIMEOUT or
 * LS_ERR_UNAVAILABLE. */
int cache_mc_set(cache_mc_t *mc, const char *key, size_t key_len, const void *val, size_t len,
                 uint32_t ttl_s);

/* As cache_mc_set, only when key is absent: LS_ERR_EXISTS otherwise. */
int cache_mc_add(cache_mc_t *mc, const char *key, size_t key_len, const void *val, size_t len,
                 uint32_t ttl_s);

/* Deletes key.  Returns LS_OK, LS_ERR_NOT_FOUND, LS_ERR_TIMEOUT or LS_ERR_UNAVAILABLE. */
int cache_mc_delete(cache_mc_t *mc, const char *key, size_t key_len);

/* True for results that say the server is unwell (for the circuit breaker), as opposed
 * to answers about the key. */
bool cache_mc_server_failed(int err);

/* libmemcached's text for the last failure (borrowed until the next call). */
const char *cache_mc_last_error(const cache_mc_t *mc);

#endif
