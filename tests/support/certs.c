#define _GNU_SOURCE
#include "support/certs.h"

#include "support/proc.h"

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
    /* The same recipe the quickstart and tlsbench use (tools/make-certs.sh). */
    char *argv[] = {"/bin/bash", (char *)test_env_path("LLMSERVE_MAKE_CERTS"),
                    c->tmp.path, "--days",
                    "2",         "--test",
                    NULL};
    if (test_run(argv, 60000) != 0) {
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
