#define _GNU_SOURCE
#include "rpc/tls.h"

#include "rpc/init.h"
#include "rpc/server.h"

#include "base/err.h"
#include "base/file.h"
#include "base/log.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* No PEM file is anywhere near this large. */
#define PEM_FILE_MAX (64u << 20)

static X509 *first_cert(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    if (!b)
        return NULL;
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    return x;
}

static void describe(X509 *x, const char *what, const char *file)
{
    char subject[256] = "";
    X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof(subject));
    char until[64] = "";
    BIO *b = BIO_new(BIO_s_mem());
    if (b) {
        ASN1_TIME_print(b, X509_get0_notAfter(x));
        int n = BIO_read(b, until, (int)sizeof(until) - 1);
        until[n > 0 ? n : 0] = '\0';
        BIO_free(b);
    }
    bool expired = X509_cmp_current_time(X509_get0_notAfter(x)) < 0;
    bool early = X509_cmp_current_time(X509_get0_notBefore(x)) > 0;
    if (expired || early)
        LS_LOG_ERROR("tls",
                     "certificate not valid now role=%s file=%s subject=\"%s\" "
                     "not_after=\"%s\" reason=%s",
                     what, file, subject, until, expired ? "expired" : "not-yet-valid");
    else /* servers load once (and at reloads); clients at every channel: quieter */
        ls_log(strcmp(what, "server") == 0 ? LS_LOG_INFO : LS_LOG_DEBUG, "tls",
               "certificate loaded role=%s file=%s subject=\"%s\" not_after=\"%s\"", what, file,
               subject, until);
}

int rpc__pem_load(rpc__pem_t *p, const char *what, const char *cert_file, const char *key_file,
                  const char *ca_file, char *err, size_t err_len)
{
    rpc__openssl_init();
    memset(p, 0, sizeof(*p));
    int rc = LS_ERR_INVALID;
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    if (!cert_file != !key_file) {
        ls_set_err(err, err_len, "a %s certificate needs its key and a key its certificate", what);
        return LS_ERR_INVALID;
    }
    const char *files[3] = {cert_file, key_file, ca_file};
    char **texts[3] = {&p->cert, &p->key, &p->ca};
    for (int i = 0; i < 3; i++) {
        if (!files[i])
            continue;
        *texts[i] = ls_file_read(files[i], PEM_FILE_MAX, NULL);
        if (!*texts[i]) {
            ls_set_err(err, err_len, "cannot read %s", files[i]);
            goto out;
        }
    }
    if (p->cert) {
        x = first_cert(p->cert);
        if (!x) {
            ls_set_err(err, err_len, "%s holds no PEM certificate", cert_file);
            goto out;
        }
        BIO *b = BIO_new_mem_buf(p->key, -1);
        k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        if (!k) {
            ls_set_err(err, err_len, "%s holds no PEM private key (or it is encrypted)", key_file);
            goto out;
        }
        if (X509_check_private_key(x, k) != 1) {
            ls_set_err(err, err_len, "the key in %s does not belong to the certificate in %s",
                       key_file, cert_file);
            goto out;
        }
        describe(x, what, cert_file);
    }
    if (p->ca) {
        X509 *c = first_cert(p->ca);
        if (!c) {
            ls_set_err(err, err_len, "%s holds no PEM certificate", ca_file);
            goto out;
        }
        X509_free(c);
    }
    rc = LS_OK;
out:
    ERR_clear_error(); /* OpenSSL's queue is per thread: leave nothing behind */
    X509_free(x);
    EVP_PKEY_free(k);
    if (rc != LS_OK)
        rpc__pem_free(p);
    return rc;
}

void rpc__pem_free(rpc__pem_t *p)
{
    if (p->key)
        explicit_bzero(p->key, strlen(p->key));
    free(p->cert);
    free(p->key);
    free(p->ca);
    memset(p, 0, sizeof(*p));
}

int rpc_tls_check_files(const char *cert_file, const char *key_file, const char *ca_file, char *err,
                        size_t err_len)
{
    rpc__pem_t p;
    int rc = rpc__pem_load(&p, "check", cert_file, key_file, ca_file, err, err_len);
    rpc__pem_free(&p);
    return rc;
}
