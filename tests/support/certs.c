#define _GNU_SOURCE
#include "support/certs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int test_certs_make(test_certs_t *c)
{
    memset(c, 0, sizeof(*c));
    if (test_tmpdir_make(&c->tmp, "llmserve-certs") != 0)
        return -1;
    c->dir = c->tmp.path;
#define P(field, name) test_tmpdir_file(&c->tmp, name, c->field, sizeof(c->field))
    P(ca, "ca.pem");
    P(server_cert, "server.pem");
    P(server_key, "server.key");
    P(client_cert, "client.pem");
    P(client_key, "client.key");
    P(rogue_ca, "rogue-ca.pem");
    P(rogue_cert, "rogue.pem");
    P(rogue_key, "rogue.key");
    P(expired_cert, "expired.pem");
    P(expired_key, "expired.key");
#undef P
    static const char script[] =
        "set -e; cd '%s'; "
        "key='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'; "
        "openssl req -x509 $key -days 2 -subj /CN=llmserve-test-ca -keyout ca.key -out ca.pem; "
        "openssl req -x509 $key -days 2 -subj /CN=rogue-ca -keyout rogue-ca.key "
        "-out rogue-ca.pem; "
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext; "
        "sign() { openssl req $key -subj /CN=$2 -keyout $1.key -out $1.csr; "
        "openssl x509 -req -in $1.csr -CA $3.pem -CAkey $3.key -CAcreateserial -days $4 "
        "$5 -out $1.pem; }; "
        "sign server localhost ca 2 '-extfile san.ext'; "
        "sign client llmserve-test-client ca 2 ''; "
        "sign rogue rogue-client rogue-ca 2 ''; "
        "sign expired localhost ca -1 '-extfile san.ext'";
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), script, c->dir);
    char full[2200];
    snprintf(full, sizeof(full), "(%s) >/dev/null 2>&1", cmd);
    if (system(full) != 0) {
        test_certs_remove(c);
        return -1;
    }
    return 0;
}

void test_certs_remove(test_certs_t *c)
{
    if (test_tmpdir_remove(&c->tmp) != 0)
        fprintf(stderr, "test_certs_remove: could not remove everything\n");
    c->dir = NULL;
}
