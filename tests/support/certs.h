/*
 * certs.h - TLS certificates made with openssl at test time, in a temporary directory.
 *
 * One test CA signs a server certificate (CN localhost, SAN DNS:localhost and
 * IP:127.0.0.1, so "localhost:PORT" and "127.0.0.1:PORT" both verify) and a client
 * certificate; a second, unrelated CA ("rogue") signs another client certificate; an
 * expired server certificate is signed by the test CA.  Keys are EC P-256 (fast to
 * make).  Call from a suite's init, before any gRPC thread runs.
 */
#ifndef TEST_CERTS_H
#define TEST_CERTS_H

typedef struct {
    char dir[64];
    char ca[128];                       /* the test CA's certificate */
    char server_cert[128], server_key[128];
    char client_cert[128], client_key[128];
    char rogue_ca[128];                 /* a CA nobody trusts */
    char rogue_cert[128], rogue_key[128];     /* client certificate from the rogue CA */
    char expired_cert[128], expired_key[128]; /* server certificate that expired a day ago */
} test_certs_t;

/* Makes every file under a new /tmp directory.  Returns 0, or -1 when openssl failed
 * (the directory is then removed). */
int test_certs_make(test_certs_t *c);

/* Removes the directory and everything in it. */
void test_certs_remove(test_certs_t *c);

#endif
