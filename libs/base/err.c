#include "err.h"

#include <stdarg.h>
#include <stdio.h>

const char *ls_strerror(int err)
{
    switch (err) {
    case LS_OK:
        return "success";
    case LS_ERR_NOMEM:
        return "out of memory";
    case LS_ERR_INVALID:
        return "invalid argument";
    case LS_ERR_IO:
        return "input/output error";
    case LS_ERR_CLOSED:
        return "closed";
    case LS_ERR_FULL:
        return "resource exhausted";
    case LS_ERR_TIMEOUT:
        return "deadline exceeded";
    case LS_ERR_NOT_FOUND:
        return "not found";
    case LS_ERR_UNAVAILABLE:
        return "unavailable";
    case LS_ERR_CANCELLED:
        return "cancelled";
    case LS_ERR_FORMAT:
        return "malformed data";
    case LS_ERR_EXISTS:
        return "already exists";
    case LS_ERR_INTERNAL:
        return "internal error";
    case LS_ERR_DEVICE:
        return "compute device failed";
    }
    return "unknown error";
}

int ls_err_to_grpc(int err)
{
    /* Values are grpc_status_code's; spelled out so base needs no gRPC header. */
    switch (err) {
    case LS_OK:
        return 0;
    case LS_ERR_CANCELLED:
        return 1; /* CANCELLED */
    case LS_ERR_INVALID:
    case LS_ERR_FORMAT:
        return 3; /* INVALID_ARGUMENT */
    case LS_ERR_TIMEOUT:
        return 4; /* DEADLINE_EXCEEDED */
    case LS_ERR_NOT_FOUND:
        return 5; /* NOT_FOUND */
    case LS_ERR_EXISTS:
        return 6; /* ALREADY_EXISTS */
    case LS_ERR_NOMEM:
    case LS_ERR_FULL:
        return 8; /* RESOURCE_EXHAUSTED */
    case LS_ERR_CLOSED:
    case LS_ERR_UNAVAILABLE:
    case LS_ERR_IO:
    case LS_ERR_DEVICE: /* this instance is gone; another can serve the request */
        return 14;      /* UNAVAILABLE */
    default:
        return 13; /* INTERNAL */
    }
}

void ls_set_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (!err || err_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}
