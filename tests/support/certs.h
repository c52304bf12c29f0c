/*
 * certs.h - TLS certificates made with openssl at test time, in a temporary directory.
 *
 * One test CA signs a server certificate (CN localhost, SAN DNS:localhost and
 * IP:127.0.0.1, so "localhost:PORT" and "127.0.0.1:PORT" both verify) and a client
 * certificate; a second, unrelated CA ("rogue") signs another client certificate; an
 * expired server certificate is signed by the test CA: tools/make-certs.sh --test (its
 * path in LLMSERVE_MAKE_CERTS, set by tests/CMakeLists.txt).  Keys are EC P-256 (fast to
 * make).  Call from a suite's init or test.
 */
#ifndef TEST_CERTS_H
#define TEST_CERTS_H

#include "support/tmpdir.h"

typedef struct {
    test_tmpdir_t tmp;
    const char *dir; /* tmp.path */
    char ca[160];    /* the test CA's certificate */
    char server_cert[160], server_key[160];
    char client_cert[160], client_key[160];
    char rogue_ca[160];                       /* a CA nobody trusts */
    char rogue_cert[160], rogue_key[160];     /* client certificate from the rogue CA */
    char expired_cert[160], expired_key[160]; /* server certificate that expired a day ago */
} test_certs_t;

/* Makes every file under a new /tmp directory.  Returns 0, or -1 when openssl failed
 * (the directory is then removed). */
int test_certs_make(test_certs_t *c);

/* Removes the directory and everything in it. */
void test_certs_remove(test_certs_t *c);

#endif
