/*
 * tls.h - PEM files for TLS, read and checked before gRPC sees them (internal).
 *
 * gRPC takes certificates and keys as PEM text and reports a bad file only as a failed
 * handshake, long after start; here they are parsed with OpenSSL first, so a wrong
 * file, a key that does not belong to the certificate or an expired certificate is
 * named at start (or at a reload) in words.  Thread-safe.
 */
#ifndef RPC_TLS_H
#define RPC_TLS_H

#include <stddef.h>

typedef struct {
    char *cert; /* PEM certificate chain, NUL-terminated; NULL when not given */
    char *key;  /* PEM private key */
    char *ca;   /* PEM trusted certificates */
} rpc__pem_t;

/* Reads the files that are not NULL into p and checks them: cert holds at least one
 * certificate, key a private key that matches cert's first certificate (both or
 * neither must be given), ca at least one certificate.  Logs each leaf certificate's
 * subject and expiry under what ("server", "client"); an expired or not yet valid one
 * is logged as an error but still loaded (the peer will refuse it; the operator must
 * know why).  Returns LS_OK, or LS_ERR_INVALID with a one-line reason in err and p
 * left empty. */
int rpc__pem_load(rpc__pem_t *p, const char *what, const char *cert_file, const char *key_file,
                  const char *ca_file, char *err, size_t err_len);

/* Frees the texts (the key is wiped first) and empties p. */
void rpc__pem_free(rpc__pem_t *p);

#endif
