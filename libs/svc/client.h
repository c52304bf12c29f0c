/*
 * client.h - the options every client tool (llmctl, llmbench) shares to reach a
 * service that uses TLS, mutual TLS or API keys, with the same names everywhere:
 *
 *   --tls                 TLS with the system's roots
 *   --tls-ca FILE         TLS, trusting the PEM CA certificates in FILE   (LLMSERVE_TLS_CA)
 *   --tls-cert/--tls-key  a client certificate for mutual TLS   (LLMSERVE_TLS_CERT/_KEY)
 *   --tls-server-name N   the name expected in the server's certificate
 *   --api-key KEY         sent as "authorization: Bearer KEY"   (LLMSERVE_API_KEY; the
 *                         variable keeps it out of the process list)
 *
 * A tool puts SVC_CLIENT_OPTIONS(&opts) in its ls_opt_t table, then calls
 * svc_client_check after ls_config_load and svc_client_channel / svc_client_metadata
 * for its channels and calls.  Not thread-safe (main-thread setup).
 */
#ifndef SVC_CLIENT_H
#define SVC_CLIENT_H

#include "base/config.h"
#include "rpc/client.h"
#include "rpc/metadata.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    bool tls;
    const char *tls_ca;
    const char *tls_cert;
    const char *tls_key;
    const char *tls_server_name;
    const char *api_key;
} svc_client_opts_t;

#define SVC_CLIENT_OPTIONS(o)                                                                      \
    {"tls", NULL, LS_OPT_BOOL, &(o)->tls, "TLS to the server, trusting the system's roots", 0, 0}, \
        {"tls-ca",                                                                                 \
         "LLMSERVE_TLS_CA",                                                                        \
         LS_OPT_STRING,                                                                            \
         &(o)->tls_ca,                                                                             \
         "TLS to the server, trusting the PEM CA certificates in this file",                       \
         0,                                                                                        \
         0},                                                                                       \
        {"tls-cert",                                                                               \
         "LLMSERVE_TLS_CERT",                                                                      \
         LS_OPT_STRING,                                                                            \
         &(o)->tls_cert,                                                                           \
         "PEM client certificate (mutual TLS)",                                                    \
         0,                                                                                        \
         0},                                                                                       \
        {"tls-key",                                                                                \
         "LLMSERVE_TLS_KEY",                                                                       \
         LS_OPT_STRING,                                                                            \
         &(o)->tls_key,                                                                            \
         "PEM private key of --tls-cert",                                                          \
         0,                                                                                        \
         0},                                                                                       \
        {"tls-server-name",                                                                        \
         "LLMSERVE_TLS_SERVER_NAME",                                                               \
         LS_OPT_STRING,                                                                            \
         &(o)->tls_server_name,                                                                    \
         "name expected in the server's certificate instead of the host dialled",                  \
         0,                                                                                        \
         0},                                                                                       \
    {                                                                                              \
        "api-key", "LLMSERVE_API_KEY", LS_OPT_SECRET, &(o)->api_key,                               \
            "API key, sent as \"authorization: Bearer KEY\" (prefer the variable: flags show in "  \
            "the process list)",                                                                   \
            0, 0                                                                                   \
    }

/* Checks the combination and the files.  Returns LS_OK or LS_ERR_INVALID with a reason
 * naming the flag in err. */
int svc_client_check(const svc_client_opts_t *o, char *err, size_t err_len);

/* Fills cfg's TLS fields from o (plaintext when no TLS option is set); the strings stay
 * o's. */
void svc_client_channel(const svc_client_opts_t *o, rpc_channel_config_t *cfg);

/* Adds "authorization: Bearer KEY" to md when an API key is set. */
void svc_client_metadata(const svc_client_opts_t *o, rpc_md_t *md);

#endif
