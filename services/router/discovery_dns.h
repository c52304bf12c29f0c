/*
 * discovery_dns.h - the DNS discovery source: the static pool list's syntax
 * (discovery_static_parse), where every HOST is a name whose addresses are the
 * instances.  Meant for Kubernetes without Consul: a headless Service's name resolves to
 * the address of every ready pod, so each pod becomes an instance of its pool and
 * version, and the router spreads requests over all of them (a ClusterIP would be one
 * long-lived stream, to one pod).
 *
 * Each NAME:PORT of a pool entry gives one instance per address of NAME (A and AAAA;
 * a numeric address stands for itself): "IP:PORT", "[IP]:PORT" for IPv6.  Every such
 * instance carries its version's weight as configured, and since the router chooses a
 * version by weight and then an instance within it, a version's share of traffic does
 * not depend on how many pods it has.  The cache names (HOST:PORT,...) give every cache
 * address the same way.
 *
 * The names are resolved again every refresh_ms on the source's own thread; a list is
 * delivered only when it differs from the last one delivered (both sorted).  A name that
 * does not resolve keeps its last known addresses (none at start); a warning with the
 * resolver's reason is logged when a name starts failing, or fails for another reason,
 * and an info line when it resolves again.  An address that two entries give is the
 * instance of the first of them (a warning says so with each list delivered).
 */
#ifndef ROUTER_DISCOVERY_DNS_H
#define ROUTER_DISCOVERY_DNS_H

#include "discovery.h"

#include <stddef.h>
#include <stdint.h>

/* Resolves host (a name, or a numeric address without brackets) into its addresses:
 * *addrs (numeric, without brackets; an array of strings the caller owns, each and the
 * array freed with free()) and *n.  Returns 0, or nonzero with a one-line reason in err
 * (err_len bytes), leaving *addrs NULL.  Called from start's thread and the source's
 * own thread, never at once for one source. */
typedef int (*discovery_dns_resolve_fn)(void *ud, const char *host, char ***addrs, size_t *n,
                                        char *err, size_t err_len);

typedef struct {
    const char *pools;  /* NAME[@VERSION[:WEIGHT]]=HOST:PORT,... entries (';' or newline) */
    const char *caches; /* HOST:PORT,... of the cache instances; NULL or "": none */
    int64_t refresh_ms; /* period of resolution, ms; default 5000, at least
                           DISCOVERY_DNS_REFRESH_MIN_MS */
    discovery_dns_resolve_fn resolve; /* NULL (the default): discovery_dns_getaddrinfo */
    void *resolve_ud;
} discovery_dns_config_t;

#define DISCOVERY_DNS_REFRESH_MIN_MS 100

/* Fills cfg with the defaults above (no pool, no cache). */
void discovery_dns_config_init(discovery_dns_config_t *cfg);

/* The resolver of the default: getaddrinfo (AF_UNSPEC, stream sockets), the addresses
 * in the order it gives them, duplicates kept (the source sorts and removes them);
 * err gets gai_strerror's reason.  ud is unused.  Blocking; thread-safe. */
int discovery_dns_getaddrinfo(void *ud, const char *host, char ***addrs, size_t *n, char *err,
                              size_t err_len);

/* Creates the source for cfg (copied; cfg->resolve_ud is borrowed for the source's
 * life).  Returns NULL with a reason in err when the pool list or the cache list is
 * invalid, or refresh_ms is below the minimum.  Nothing is resolved before start: start
 * resolves every name once on the caller's thread, delivers the cache list (when
 * watch_caches was called and caches were given) and the instance list (perhaps empty,
 * when no name resolved), then starts the thread that resolves again; it fails
 * (LS_ERR_INTERNAL) only when that thread cannot start.  stop wakes the thread and joins
 * it (a resolution under way is waited for).  Dynamic: the first list may be empty. */
discovery_t *discovery_dns_create(const discovery_dns_config_t *cfg, char *err, size_t err_len);

/* Runs one resolution round now, on the caller's thread, delivering what changed; for
 * tests, which set a long refresh_ms so the source's thread does not run one meanwhile
 * (rounds are serialized either way).  Returns how many lists were delivered (0, 1 or
 * 2: instances, caches).  Does nothing before start or after stop. */
int discovery_dns_refresh(discovery_t *d);

#endif
