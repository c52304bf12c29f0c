/*
 * registrar_consul.h - the registrar (registrar.h) that keeps a service registered with
 * the local Consul agent (libs/consul).
 *
 * register_service returns at once; the registrar's thread ("svc-consul") then:
 *   - registers (PUT /v1/agent/service/register) with a gRPC health check that the
 *     agent runs against the service's own grpc.health.v1 (GRPCUseTLS when the service
 *     speaks TLS), retrying with capped exponential back-off (with jitter) while the
 *     agent is down, slow or refuses (a 403 for a missing token is retried too: the
 *     operator may fix the token file meanwhile);
 *   - then asks the agent every resync_ms whether it still has the registration (GET
 *     /v1/agent/service/<id>); an agent that lost it (restarted without its state) gets
 *     it again at once.
 * Each change of state (registered, failing, lost) is logged once, not every try.
 * deregister stops the thread (waiting for a call in flight at most half the time
 * given) and withdraws the registration; the agent's DeregisterCriticalServiceAfter
 * removes one left behind by a crash.
 */
#ifndef SVC_REGISTRAR_CONSUL_H
#define SVC_REGISTRAR_CONSUL_H

#include "consul/consul.h"
#include "svc/registrar.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int64_t check_interval_ms;         /* the agent's health check period; default 10000 */
    int64_t check_timeout_ms;          /* its timeout; default 5000 */
    int64_t deregister_after_ms;       /* critical this long: the agent removes it;
                                          default 60000 (Consul's minimum) */
    int64_t resync_ms;                 /* between two "still registered?" asks; 10000 */
    int64_t call_timeout_ms;           /* one HTTP call to the agent; default 3000 */
    int64_t backoff_min_ms;            /* first pause after a failure; default 200 */
    int64_t backoff_max_ms;            /* cap; default 30000 */
    const char *check_tls_server_name; /* TLSServerName of the check; NULL: the host */
    bool check_tls_skip_verify;        /* TLSSkipVerify of the check */
} svc_consul_registrar_config_t;

void svc_consul_registrar_config_init(svc_consul_registrar_config_t *cfg);

/* A registrar on c (borrowed: it must outlive the registrar).  cfg is copied.  Returns
 * NULL only when out of resources. */
svc_registrar_t *svc_consul_registrar_create(consul_t *c, const svc_consul_registrar_config_t *cfg);

/* What the registrar has done, for tests and logs. */
typedef struct {
    uint64_t registrations; /* successful PUT register calls */
    uint64_t failures;      /* failed calls of any kind */
    uint64_t lost;          /* times the agent had lost the registration */
    bool registered;        /* the agent has it, as far as we know now */
} svc_consul_registrar_stats_t;

void svc_consul_registrar_stats(svc_registrar_t *r, svc_consul_registrar_stats_t *out);

#endif
