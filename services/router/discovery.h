/*
 * discovery.h - where the inference instances are (and, for sources that know them, the
 * cache instances): the interface the router reads its pools and caches from.
 *
 * A discovery source delivers the whole current list of instances through an update
 * callback: once from start (before it returns), and again whenever the list changes.
 * The router reconciles each list with its pools (router_pools_update): new instances
 * are connected, missing ones drained.  The static source (discovery_static.c) reads the
 * list from configuration and never changes it; the Consul source (discovery_consul.c)
 * calls the update from its watch thread, and may also watch the cache instances.
 *
 * A source whose lists change is "dynamic": its first list may be empty (nothing
 * registered yet), so the router declares the pools its policy names instead of
 * requiring an instance of each at start (pool.h).
 */
#ifndef ROUTER_DISCOVERY_H
#define ROUTER_DISCOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest pool or version name, in bytes. */
#define DISCOVERY_NAME_MAX 32

/* One inference instance.  Strings are owned by whoever made the list. */
typedef struct {
    char *pool;      /* pool name, e.g. "small": [a-z0-9_-], 1 to 32 bytes */
    char *version;   /* model version within the pool, e.g. "v2"; "" = unnamed */
    uint32_t weight; /* the version's share of the pool's traffic (relative; 0 = none
                        unless every version of the pool is 0) */
    char *addr;      /* "host:port"; also the instance's id */
} discovery_instance_t;

/* Receives the complete list; list and its strings are borrowed until return.  Called
 * from start on the caller's thread, later from the source's own thread. */
typedef void (*discovery_update_fn)(void *ud, const discovery_instance_t *list, size_t n);

/* Receives the complete list of cache instances, "host:port" each; addrs and its
 * strings are borrowed until return.  Called from the source's own thread. */
typedef void (*discovery_caches_fn)(void *ud, const char *const *addrs, size_t n);

typedef struct discovery discovery_t;

typedef struct {
    const char *name; /* "static", "consul" */
    bool dynamic;     /* lists change while serving; the first may be empty */
    /* Delivers the first list through fn before returning; LS_OK or an ls_err_t. */
    int (*start)(discovery_t *d, discovery_update_fn fn, void *ud);
    /* Stops further updates (of both lists); returns once none is running.
     * Idempotent. */
    void (*stop)(discovery_t *d);
    void (*destroy)(discovery_t *d);
    /* Optional (NULL: the source knows no cache instances).  Called at most once,
     * before start: from then on the source delivers the cache list through fn, once it
     * knows it (start waits for it as for the first instance list, within the same
     * bound) and whenever it changes.  LS_OK or an ls_err_t. */
    int (*watch_caches)(discovery_t *d, discovery_caches_fn fn, void *ud);
} discovery_ops_t;

struct discovery {
    const discovery_ops_t *ops;
};

/* Starts d: see discovery_ops_t.start. */
int discovery_start(discovery_t *d, discovery_update_fn fn, void *ud);

/* Watches d's cache instances: see discovery_ops_t.watch_caches.  LS_ERR_NOT_FOUND
 * when d knows none. */
int discovery_watch_caches(discovery_t *d, discovery_caches_fn fn, void *ud);

/* Stops d (no update runs after it returns).  NULL is a no-op. */
void discovery_stop(discovery_t *d);

/* Stops and frees d.  NULL is a no-op. */
void discovery_destroy(discovery_t *d);

/* True when s[0..len) is a pool name: 1 to DISCOVERY_NAME_MAX of [a-z0-9_-]. */
bool discovery_pool_name_valid(const char *s, size_t len);

/* True when s[0..len) is a version name: 1 to DISCOVERY_NAME_MAX of [A-Za-z0-9._-]. */
bool discovery_version_valid(const char *s, size_t len);

/* True when addr is HOST:PORT (or [V6]:PORT): a host without spaces, ',', '=' or ';',
 * a port in 1..65535, 255 bytes at most. */
bool discovery_addr_valid(const char *addr);

/* The weight rule of every source: each version of a pool (pool and version equal)
 * counts once, as its first entry in list says; the versions whose weight is not
 * explicit (explicit_weight[i] false, parallel to list) share equally, rounding down,
 * what the explicit weights of their pool leave of 100 (0 when they leave nothing).
 * Sets the weight of every entry that is not explicit. */
void discovery_fill_weights(discovery_instance_t *list, size_t n, const bool *explicit_weight);

/* Parses a static pool spec into a list the caller owns (free with
 * discovery_list_free).  spec is one or more entries separated by ';' or newlines:
 *
 *     NAME[@VERSION[:WEIGHT]]=HOST:PORT[,HOST:PORT...]
 *
 * e.g. "small=127.0.0.1:7001,127.0.0.1:7002;large@v1:95=127.0.0.1:7003;large@v2:5=..."
 * Versions of one pool that leave out WEIGHT share what the explicit weights leave of
 * 100 (a pool with one version takes 100).  Returns LS_OK, or LS_ERR_INVALID with a
 * one-line reason in err (err_len bytes). */
int discovery_static_parse(const char *spec, discovery_instance_t **list, size_t *n, char *err,
                           size_t err_len);

/* Frees a list from discovery_static_parse (or any list whose strings are malloc'd).
 * NULL is a no-op. */
void discovery_list_free(discovery_instance_t *list, size_t n);

/* Creates the static source for spec (see discovery_static_parse).  Returns NULL with a
 * reason in err when the spec is invalid or names no instance. */
discovery_t *discovery_static_create(const char *spec, char *err, size_t err_len);

#endif
