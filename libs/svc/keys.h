/*
 * keys.h - API keys: a file of keys, each optionally bound to a tenant, checked against
 * the "authorization: Bearer <key>" metadata of every call.
 *
 * The file has one key per line, optionally followed by whitespace and the tenant it is
 * bound to; blank lines and lines starting with '#' are ignored:
 *
 *     # ops team, any tenant
 *     k3y-for-the-ops-team-0123456789
 *     6bd1c0f0a7c84b1b9f0e-acme        acme
 *
 * A key is 1 to 4096 characters of the RFC 6750 bearer token alphabet (letters, digits,
 * - . _ ~ + / and trailing '='); a tenant 1 to 64 of letters, digits, '-', '_', '.'.
 * A file with no key, a line with more than two fields, a bad character or a key given
 * twice is malformed: loading fails, and a reload keeps the keys it had.  Keys shorter
 * than 16 characters, or a file others can read, are accepted with a warning.
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

/* How many keys are in use. */
size_t svc_keys_count(svc_keys_t *k);

/* The rpc_auth_fn for rpc_server_set_auth with ud = the key set: a call without a
 * known key ends UNAUTHENTICATED ("missing or invalid API key", nothing about which
 * keys exist); the principal of a let-in call is its key's tenant. */
grpc_status_code svc_keys_authorize(void *ud, const rpc_call_t *call, char *principal,
                                    size_t principal_len, char *why, size_t why_len);

/* NULL is a no-op. */
void svc_keys_destroy(svc_keys_t *k);

#endif
