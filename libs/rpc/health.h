/*
 * health.h - grpc.health.v1.Health for every rpc_server_t (internal).
 *
 * Lock rule: the health mutex may be taken before a call's mutex (it sends to Watch
 * streams while holding it), never after.
 */
#ifndef RPC_HEALTH_H
#define RPC_HEALTH_H

#include "rpc/server.h"

typedef struct rpc__health rpc__health_t;

rpc__health_t *rpc__health_create(void);

/* Registers Check and Watch on srv; before start.  Returns LS_OK or an error. */
int rpc__health_register(rpc__health_t *h, rpc_server_t *srv);

/* Sets service's status and notifies watchers of it.  LS_ERR_CLOSED after shutdown. */
int rpc__health_set(rpc__health_t *h, const char *service, rpc_health_status_t status);

/* Sets every service's status (the whole server's "" included) and tells watchers.
 * LS_ERR_CLOSED after shutdown. */
int rpc__health_set_all(rpc__health_t *h, rpc_health_status_t status);

/* Marks everything NOT_SERVING, tells watchers, and ends their streams. */
void rpc__health_shutdown(rpc__health_t *h);

/* NULL is a no-op.  Only after every Watch call has seen on_done. */
void rpc__health_destroy(rpc__health_t *h);

#endif
