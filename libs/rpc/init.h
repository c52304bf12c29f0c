/*
 * init.h - gRPC's global start, with its own log lines routed through the project's
 * logger (internal).
 */
#ifndef RPC_INIT_H
#define RPC_INIT_H

/* OpenSSL's start, once per process, without the cleanup OpenSSL otherwise runs from
 * exit(): that cleanup deletes its per-thread keys while gRPC's threads (the event
 * engine's pool, a timer thread winding down) may still run, and what such a thread
 * holds (its error queue, its random generators) is then never freed, which leak
 * checkers report at exit.  Without it, a thread that ends frees its own state, and
 * what lives on at exit stays reachable.  Called before any other OpenSSL use: by
 * rpc__grpc_init and by the PEM checks (tls.c), which may run before gRPC starts. */
void rpc__openssl_init(void);

/* grpc_init, the first time also sending gRPC core's log lines (handshake failures,
 * connection errors) through ls_log under mod=grpc, so they carry the same timestamp
 * and format (text or JSON) as every other line.  Pair with grpc_shutdown. */
void rpc__grpc_init(void);

#endif
