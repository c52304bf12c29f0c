/*
 * init.h - gRPC's global start, with its own log lines routed through the project's
 * logger (internal).
 */
#ifndef RPC_INIT_H
#define RPC_INIT_H

/* grpc_init, the first time also sending gRPC core's log lines (handshake failures,
 * connection errors) through ls_log under mod=grpc, so they carry the same timestamp
 * and format (text or JSON) as every other line.  Pair with grpc_shutdown. */
void rpc__grpc_init(void);

#endif
