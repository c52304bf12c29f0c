/*
 * err.h - the one error enum of llmserve.
 *
 * Actions return an ls_err_t (0 is success, negatives are errors), predicates
 * return bool, constructors return a pointer or NULL.  ls_err_to_grpc maps an
 * error onto the gRPC status code a service answers with, so every layer can
 * fail with the same values and the edge turns them into a proper status.
 */
#ifndef LS_ERR_H
#define LS_ERR_H

#include <stddef.h>

typedef enum {
    LS_OK = 0,
    LS_ERR_NOMEM = -1,       /* an allocation failed */
    LS_ERR_INVALID = -2,     /* bad argument or bad input (INVALID_ARGUMENT) */
    LS_ERR_IO = -3,          /* a read, write or socket call failed */
    LS_ERR_CLOSED = -4,      /* the object is shut down or the call is over */
    LS_ERR_FULL = -5,        /* a bounded queue or budget is exhausted */
    LS_ERR_TIMEOUT = -6,     /* a deadline passed */
    LS_ERR_NOT_FOUND = -7,   /* no such key, method, file or service */
    LS_ERR_UNAVAILABLE = -8, /* a peer cannot be reached right now */
    LS_ERR_CANCELLED = -9,   /* the operation was cancelled */
    LS_ERR_FORMAT = -10,     /* a file or message is malformed */
    LS_ERR_EXISTS = -11,     /* already present or already done */
    LS_ERR_INTERNAL = -12,   /* an invariant failed below us */
    LS_ERR_DEVICE = -13,     /* the compute device failed for good (sticky CUDA error):
                                nothing more can run on it in this process */
} ls_err_t;

/* Returns a static, human-readable description of err; never NULL. */
const char *ls_strerror(int err);

/* Returns the grpc_status_code (as int, 0 = OK) that best describes err. */
int ls_err_to_grpc(int err);

/* Formats a one-line reason into err (err_len bytes, truncated to fit) for the
 * functions that take an err/err_len pair; err NULL or err_len 0 writes nothing. */
void ls_set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
