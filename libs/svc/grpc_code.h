/*
 * grpc_code.h - the name of a gRPC status code as metric_names.h's `code` label spells it.
 * Pure, thread-safe.
 */
#ifndef SVC_GRPC_CODE_H
#define SVC_GRPC_CODE_H

/* "OK", "CANCELLED", ... "UNAUTHENTICATED"; "UNKNOWN" for a value outside 0..16, so a
 * peer's stray code cannot grow the label's value set. */
static inline const char *svc_grpc_code_name(int code)
{
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    return code >= 0 && code < (int)(sizeof(names) / sizeof(names[0])) ? names[code] : "UNKNOWN";
}

#endif
