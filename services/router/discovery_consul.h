/*
 * discovery_consul.h - the Consul discovery source: the inference instances (and, when
 * asked, the cache instances) that Consul says are passing their checks, kept current by
 * watches (libs/consul) with blocking queries.
 *
 * An inference instance's registration says where it belongs in its Meta:
 *   pool     required: [a-z0-9_-], 1 to 32 bytes;
 *   version  optional ("" when absent or empty): [A-Za-z0-9._-], 1 to 32 bytes;
 *   weight   optional (absent or empty: none), an integer in 0..1000000: its version's
 *            share of the pool.  When instances of one version disagree the largest
 *            weight counts; versions without any share what the explicit weights of
 *            their pool leave of 100 (discovery_fill_weights, as the static list).
 * Its address is Service.Address (Node.Address when that is empty) and Service.Port:
 * "host:port", "[v6]:port" for an IPv6 address.  An entry that does not say these
 * properly, or whose address an earlier entry (in id order) already has, is left out
 * with a warning, once per instance id while it stays left out for the same reason.  A
 * cache instance needs only its address.
 *
 * Consul unreachable or answering errors: the watch keeps the last good list and
 * retries; nothing changes here until it answers again.
 *
 * The conversion (discovery_consul_instances, discovery_consul_caches) lives in
 * discovery_consul_list.c and needs nothing of the client library but its types; the
 * watches' glue is discovery_consul.c.
 */
#ifndef ROUTER_DISCOVERY_CONSUL_H
#define ROUTER_DISCOVERY_CONSUL_H

#include "consul/consul.h"
#include "discovery.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *inference_service; /* default "llmserve-inference" */
    const char *cache_service;     /* default "llmserve-cache"; NULL or "": not watched */
    int64_t wait_ms;               /* blocking wait of each query, ms; default 30000 */
    int64_t wait_first_ms;         /* how long start waits for the first answers, ms (both
                                      watches together); default 2000 */
} discovery_consul_config_t;

/* Fills cfg with the defaults above. */
void discovery_consul_config_init(discovery_consul_config_t *cfg);

/* Creates the source over c, which is borrowed and must outlive it; cfg is copied.
 * Nothing is asked of Consul before start.  start starts the inference watch and waits
 * up to wait_first_ms for its first answer (and the cache watch's, when watch_caches
 * started one): when none came it delivers an empty list, logs a warning and returns
 * LS_OK; the watch delivers the lists from its thread when Consul answers.  start fails
 * (LS_ERR_INTERNAL) only when a watch thread cannot start.  watch_caches with no cache
 * service watches nothing and returns LS_OK.  Never returns NULL. */
discovery_t *discovery_consul_create(consul_t *c, const discovery_consul_config_t *cfg);

/* ---- the conversion (discovery_consul_list.c) ------------------------------------- */

/* The entries left out so far, so each is warned about once.  kind ("inference",
 * "cache") names them in the warnings.  Not thread-safe. */
typedef struct discovery_consul_skips discovery_consul_skips_t;

discovery_consul_skips_t *discovery_consul_skips_create(const char *kind);

/* NULL is a no-op. */
void discovery_consul_skips_destroy(discovery_consul_skips_t *s);

/* Converts the passing inference instances in[0..n) into the router's list, sorted by
 * address: *out (the caller's; free with discovery_list_free) and *n_out.  Entries left
 * out are warned about unless skips already holds them; skips then holds what this list
 * left out.  *warned (may be NULL) gets the number of warnings logged by this call. */
void discovery_consul_instances(const consul_instance_t *in, size_t n,
                                discovery_consul_skips_t *skips, discovery_instance_t **out,
                                size_t *n_out, size_t *warned);

/* Converts the passing cache instances in[0..n) into "host:port" addresses, sorted and
 * without duplicates: *out (the caller's; free with discovery_consul_caches_free) and
 * *n_out.  Left-out entries and *warned as above. */
void discovery_consul_caches(const consul_instance_t *in, size_t n, discovery_consul_skips_t *skips,
                             char ***out, size_t *n_out, size_t *warned);

/* Frees a list from discovery_consul_caches.  NULL is a no-op. */
void discovery_consul_caches_free(char **addrs, size_t n);

#endif
