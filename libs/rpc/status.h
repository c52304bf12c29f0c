/*
 * status.h - gRPC status codes by name, as metrics and logs spell them.  Thread-safe.
 */
#ifndef RPC_STATUS_H
#define RPC_STATUS_H

#include <grpc/status.h>

/* The code's canonical upper-case name ("OK", "CANCELLED", "INVALID_ARGUMENT", ...), a
 * static string; "UNKNOWN" for a value outside the 17 codes gRPC defines. */
const char *rpc_status_name(grpc_status_code code);

#endif
