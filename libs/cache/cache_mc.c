#include "cache/cache_mc.h"

#include "base/err.h"
#include "base/log.h"

#include <libmemcached/memcached.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cache_mc {
    memcached_st *m;
    cache_mc_config_t cfg; /* servers is an owned copy */
};

void cache_mc_config_init(cache_mc_config_t *cfg)
{
    cfg->servers = "--SERVER=127.0.0.1:11211";
    cfg->connect_timeout_ms = 50;
    cfg->io_timeout_ms = 50;
}

int cache_mc_check(const char *servers, char *err, size_t err_len)
{
    char buf[256] = "";
    if (!servers || !*servers) {
        snprintf(err, err_len, "empty memcached configuration");
        return LS_ERR_INVALID;
    }
    memcached_return_t rc =
        libmemcached_check_configuration(servers, strlen(servers), buf, sizeof(buf));
    if (rc != MEMCACHED_SUCCESS) {
        if (err_len)
            snprintf(err, err_len, "bad memcached configuration: %s", buf);
        return LS_ERR_INVALID;
    }
    return LS_OK;
}

static memcached_st *make(const cache_mc_config_t *cfg)
{
    memcached_st *m = memcached(cfg->servers, strlen(cfg->servers));
    if (!m)
        return NULL;
    if (memcached_server_count(m) == 0) {
        memcached_free(m);
        return NULL;
    }
    /* Non-blocking I/O is what makes the connect timeout apply; ketama is consistent
     * hashing.  libmemcached's own retry pause is off: the circuit breaker above paces
     * retries, and a pause inside one worker's client would outlast the breaker's
     * verdict that the server is back. */
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_NO_BLOCK, 1);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_DISTRIBUTION,
                           MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT,
                           (uint64_t)cfg->connect_timeout_ms);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, (uint64_t)cfg->io_timeout_ms);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_SND_TIMEOUT, (uint64_t)cfg->io_timeout_ms * 1000);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_RCV_TIMEOUT, (uint64_t)cfg->io_timeout_ms * 1000);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 0);
    return m;
}

cache_mc_t *cache_mc_create(const cache_mc_config_t *cfg)
{
    if (cache_mc_check(cfg->servers, NULL, 0) != LS_OK)
        return NULL;
    memcached_st *m = make(cfg);
    if (!m)
        return NULL;
    cache_mc_t *mc = ls_xcalloc(1, sizeof(*mc));
    mc->m = m;
    mc->cfg = *cfg;
    mc->cfg.servers = ls_xstrdup(cfg->servers);
    return mc;
}

/* Replaces the client after a server failure.  libmemcached keeps a failed server
 * "disabled until timed retry" per client, at one-second granularity, so a client that
 * saw the failure would go on refusing after the server is back; a fresh one connects
 * again.  Keeps the old client if a new one cannot be made. */
static void renew(cache_mc_t *mc)
{
    memcached_st *fresh = make(&mc->cfg);
    if (!fresh)
        return;
    memcached_free(mc->m);
    mc->m = fresh;
}

void cache_mc_destroy(cache_mc_t *mc)
{
    if (!mc)
        return;
    memcached_free(mc->m);
    free((char *)mc->cfg.servers);
    free(mc);
}

size_t cache_mc_server_count(const cache_mc_t *mc)
{
    return memcached_server_count(mc->m);
}

size_t cache_mc_server_of(const cache_mc_t *mc, const char *key, size_t key_len)
{
    size_t n = memcached_server_count(mc->m);
    if (n <= 1)
        return 0;
    uint32_t i = memcached_generate_hash(mc->m, key, key_len);
    return i < n ? i : 0;
}

bool cache_mc_server_addr(const cache_mc_t *mc, size_t i, const char **host, int *port)
{
    if (i >= memcached_server_count(mc->m))
        return false;
    const memcached_instance_st *in = memcached_server_instance_by_position(mc->m, (uint32_t)i);
    const char *name = in ? memcached_server_name(in) : NULL;
    if (!name)
        return false;
    *host = name;
    *port = (int)memcached_server_port(in);
    return true;
}

static int map_rc(memcached_return_t rc)
{
    switch (rc) {
    case MEMCACHED_SUCCESS:
    case MEMCACHED_STORED:
    case MEMCACHED_DELETED:
    case MEMCACHED_END:
        return LS_OK;
    case MEMCACHED_NOTFOUND:
    case MEMCACHED_DATA_DOES_NOT_EXIST:
        return LS_ERR_NOT_FOUND;
    case MEMCACHED_NOTSTORED:
    case MEMCACHED_DATA_EXISTS:
        return LS_ERR_EXISTS;
    case MEMCACHED_E2BIG:
    case MEMCACHED_SERVER_MEMORY_ALLOCATION_FAILURE:
        return LS_ERR_FULL;
    case MEMCACHED_MEMORY_ALLOCATION_FAILURE:
        return LS_ERR_NOMEM;
    case MEMCACHED_TIMEOUT:
        return LS_ERR_TIMEOUT;
    case MEMCACHED_BAD_KEY_PROVIDED:
    case MEMCACHED_KEY_TOO_BIG:
    case MEMCACHED_INVALID_ARGUMENTS:
        return LS_ERR_INVALID;
    default:
        return LS_ERR_UNAVAILABLE;
    }
}

bool cache_mc_server_failed(int err)
{
    return err == LS_ERR_UNAVAILABLE || err == LS_ERR_TIMEOUT;
}

/* A connection that broke while idle (memcached restarted since its last use) fails
 * the first call on it, so one immediate retry on a fresh client tells a restarted
 * server from a dead one (a dead one on loopback refuses in microseconds).  Timeouts
 * are not retried: the time is already spent. */
#define RETRY(call)                                                                                \
    do {                                                                                           \
        rc = (call);                                                                               \
        if (map_rc(rc) == LS_ERR_UNAVAILABLE) {                                                    \
            renew(mc);                                                                             \
            rc = (call);                                                                           \
        }                                                                                          \
    } while (0)

int cache_mc_get(cache_mc_t *mc, const char *key, size_t key_len, uint8_t **val, size_t *len)
{
    memcached_return_t rc;
    uint32_t flags = 0;
    size_t n = 0;
    char *v = memcached_get(mc->m, key, key_len, &n, &flags, &rc);
    if (map_rc(rc) == LS_ERR_UNAVAILABLE) {
        free(v);
        renew(mc);
        v = memcached_get(mc->m, key, key_len, &n, &flags, &rc);
    }
    if (rc != MEMCACHED_SUCCESS) {
        free(v);
        return map_rc(rc);
    }
    if (!v) {
        /* An empty value comes back as NULL with success. */
        v = malloc(1);
        if (!v)
            return LS_ERR_NOMEM;
    }
    *val = (uint8_t *)v;
    *len = n;
    return LS_OK;
}

int cache_mc_set(cache_mc_t *mc, const char *key, size_t key_len, const void *val, size_t len,
                 uint32_t ttl_s)
{
    memcached_return_t rc;
    RETRY(memcached_set(mc->m, key, key_len, val, len, (time_t)ttl_s, 0));
    return map_rc(rc);
}

int cache_mc_add(cache_mc_t *mc, const char *key, size_t key_len, const void *val, size_t len,
                 uint32_t ttl_s)
{
    memcached_return_t rc;
    RETRY(memcached_add(mc->m, key, key_len, val, len, (time_t)ttl_s, 0));
    return map_rc(rc);
}

int cache_mc_delete(cache_mc_t *mc, const char *key, size_t key_len)
{
    memcached_return_t rc;
    RETRY(memcached_delete(mc->m, key, key_len, 0));
    return map_rc(rc);
}

const char *cache_mc_last_error(const cache_mc_t *mc)
{
    return memcached_last_error_message(mc->m);
}
