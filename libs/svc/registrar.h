/*
 * registrar.h - the service-registration seam: tell a catalogue (Consul's agent, say)
 * that this instance serves, and take it back before leaving.
 *
 * The runtime registers once the service is SERVING and deregisters first thing at
 * shutdown, before the drain, so nobody is sent new work while it leaves.  With no
 * registrar configured (NULL) the svc_registrar_* calls do nothing.
 *
 * Threads: called from the runtime's main thread only.  A registrar must not hold up
 * serving: registration returns at once and happens (and is retried, and repeated for
 * an agent that lost it) on the registrar's own thread; deregistration waits at most
 * the given time.
 */
#ifndef SVC_REGISTRAR_H
#define SVC_REGISTRAR_H

#include "reporter.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name;    /* catalogue name, e.g. "llmserve-router" */
    const char *id;      /* unique per instance, e.g. "llmserve-router-host-7000" */
    const char *address; /* where peers reach it */
    int port;
    bool tls;                /* its listener speaks TLS (health checks must too) */
    const char *const *tags; /* n_tags strings */
    size_t n_tags;
    const svc_label_t *meta; /* n_meta key/value pairs, e.g. pool, model */
    size_t n_meta;
} svc_registration_t;

typedef struct svc_registrar svc_registrar_t;

typedef struct {
    /* Starts keeping reg (copied) registered.  Returns LS_OK or LS_ERR_INVALID for a
     * registration it cannot express; never waits for the catalogue. */
    int (*register_service)(svc_registrar_t *r, const svc_registration_t *reg);
    /* Withdraws the registration, waiting at most timeout_ms.  Returns LS_OK or the
     * error that kept it from finishing (the catalogue then expires it on its own). */
    int (*deregister)(svc_registrar_t *r, int64_t timeout_ms);
    void (*destroy)(svc_registrar_t *r);
} svc_registrar_ops_t;

/* Implementations embed this first. */
struct svc_registrar {
    const svc_registrar_ops_t *ops;
};

static inline int svc_registrar_register(svc_registrar_t *r, const svc_registration_t *reg)
{
    return r ? r->ops->register_service(r, reg) : 0;
}

static inline int svc_registrar_deregister(svc_registrar_t *r, int64_t timeout_ms)
{
    return r ? r->ops->deregister(r, timeout_ms) : 0;
}

/* NULL is a no-op. */
static inline void svc_registrar_destroy(svc_registrar_t *r)
{
    if (r)
        r->ops->destroy(r);
}

#endif
