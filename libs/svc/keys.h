/*
 * keys.h - API keys: a file of keys, each optionally bound to a tenant and a scheduling
 * class, checked against the "authorization: Bearer <key>" metadata of every call.
 *
 * The file has one key per line, optionally followed by whitespace and the tenant it is
 * bound to, then optionally `priority=CLASS` (CLASS interactive, normal or batch); blank
 * lines and lines starting with '#' are ignored:
 *
 *     # ops team, any tenant, any class
 *     k3y-for-the-ops-team-0123456789
 *     6bd1c0f0a7c84b1b9f0e-acme        acme
 *     2f8e77c1d0b94c6aa1b3-acme-eval   acme    priority=batch
 *     0c5d1e9a7f3b4e21b8d6-nightly     priority=batch
 *
 * A key's class is the class of its requests that name none, and their ceiling: a
 * request may ask for its key's class or a lower one, never a higher one (the router
 * enforces it; services/router/validate.h).  A key with no class sets neither.
 *
 * A key is 1 to 4096 characters of the RFC 6750 bearer token alphabet (letters, digits,
 * - . _ ~ + / and trailing '='); a tenant 1 to 64 of letters, digits, '-', '_', '.'.
 * A file with no key, a line with more than three fields, a bad character, an unknown
 * class or a key given twice is malformed: loading fails, and a reload keeps the keys it
 * had.  Keys shorter than 16 characters, or a file others can read, are accepted with a
 * warning.
 *
 * Keys are kept only as SHA-256 digests and compared in constant time (every key is
 * compared, every time), so neither timing nor memory tells which keys exist; no key
 * ever reaches a log or an error message.  Thread-safe: checks run on gRPC threads
 * while a reload (SIGHUP) swaps the set.
 */
#ifndef SVC_KEYS_H
#define SVC_KEYS_H

#include "rpc/server.h"

#include <stdbool.h>
#include <stddef.h>

#define SVC_TENANT_MAX 64

/* A scheduling class, numbered as llmserve.v1.Priority (lower number = served first). */
typedef enum {
    SVC_PRIORITY_NONE = 0, /* not given */
    SVC_PRIORITY_INTERACTIVE = 1,
    SVC_PRIORITY_NORMAL = 2,
    SVC_PRIORITY_BATCH = 3,
} svc_priority_t;

/* "interactive", "normal", "batch"; "unspecified" for NONE and any other value. */
const char *svc_priority_name(int priority);

/* The class named name (as svc_priority_name writes it); SVC_PRIORITY_NONE when name is
 * none of them. */
svc_priority_t svc_priority_parse(const char *name, size_t len);

typedef struct svc_keys svc_keys_t;

/* Loads path.  Returns the key set, or NULL with a one-line reason in err (which names
 * the line, never a key). */
svc_keys_t *svc_keys_load(const char *path, char *err, size_t err_len);

/* Reads the file again; on any problem keeps the current keys and returns
 * LS_ERR_INVALID with the reason in err.  Returns LS_OK when the new keys are in use. */
int svc_keys_reload(svc_keys_t *k, char *err, size_t err_len);

/* Checks an authorization value ("Bearer <key>", scheme in any case).  Returns true for
 * a known key, with the tenant it is bound to ("" for none) in tenant (tenant_len >=
 * SVC_TENANT_MAX + 1). */
bool svc_keys_check(svc_keys_t *k, const char *authorization, char *tenant, size_t tenant_len);

/* As svc_keys_check, and the key's class into *priority (SVC_PRIORITY_NONE for none;
 * priority may be NULL). */
bool svc_keys_check_class(svc_keys_t *k, const char *authorization, char *tenant, size_t tenant_len,
                          svc_priority_t *priority);

/* How many keys are in use. */
size_t svc_keys_count(svc_keys_t *k);

/* The rpc_auth_fn for rpc_server_set_auth with ud = the key set: a call without a
 * known key ends UNAUTHENTICATED ("missing or invalid API key", nothing about which
 * keys exist); the principal of a let-in call is its key's tenant and class, as
 * svc_keys_principal_format writes them. */
grpc_status_code svc_keys_authorize(void *ud, const rpc_call_t *call, char *principal,
                                    size_t principal_len, char *why, size_t why_len);

/* A principal from a tenant ("" for none) and a class: the tenant alone without a class
 * (so a principal of a key without class is its tenant, as before classes), else
 * "TENANT;priority=CLASS" ("acme;priority=batch", ";priority=batch").  Truncates to
 * len bytes, NUL included. */
void svc_keys_principal_format(const char *tenant, svc_priority_t priority, char *buf, size_t len);

/* Splits a principal svc_keys_principal_format wrote (NULL or "" = no tenant, no class)
 * into tenant (tenant_len >= SVC_TENANT_MAX + 1; "" for none) and *priority
 * (SVC_PRIORITY_NONE for none). */
void svc_keys_principal_parse(const char *principal, char *tenant, size_t tenant_len,
                              svc_priority_t *priority);

/* NULL is a no-op. */
void svc_keys_destroy(svc_keys_t *k);

#endif
