#include "svc/client.h"

#include "base/err.h"
#include "rpc/server.h"

#include <stdio.h>
#include <string.h>

static bool set(const char *s)
{
    return s && *s;
}

int svc_client_check(const svc_client_opts_t *o, char *err, size_t err_len)
{
    if (set(o->tls_cert) != set(o->tls_key)) {
        ls_set_err(err, err_len, "--tls-cert and --tls-key go together");
        return LS_ERR_INVALID;
    }
    char why[400];
    if ((set(o->tls_ca) || set(o->tls_cert)) &&
        rpc_tls_check_files(set(o->tls_cert) ? o->tls_cert : NULL,
                            set(o->tls_key) ? o->tls_key : NULL, set(o->tls_ca) ? o->tls_ca : NULL,
                            why, sizeof(why)) != LS_OK) {
        ls_set_err(err, err_len, "--tls-ca/--tls-cert/--tls-key: %s", why);
        return LS_ERR_INVALID;
    }
    if (set(o->api_key)) {
        for (const char *p = o->api_key; *p; p++) {
            if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
                ls_set_err(err, err_len, "--api-key: not printable ASCII without spaces");
                return LS_ERR_INVALID;
            }
        }
    }
    return LS_OK;
}

void svc_client_channel(const svc_client_opts_t *o, rpc_channel_config_t *cfg)
{
    bool tls = o->tls || set(o->tls_ca) || set(o->tls_cert) || set(o->tls_server_name);
    if (!tls)
        return;
    cfg->tls = true;
    cfg->tls_root_file = set(o->tls_ca) ? o->tls_ca : NULL;
    cfg->tls_cert_file = set(o->tls_cert) ? o->tls_cert : NULL;
    cfg->tls_key_file = set(o->tls_key) ? o->tls_key : NULL;
    cfg->tls_server_name = set(o->tls_server_name) ? o->tls_server_name : NULL;
}

void svc_client_metadata(const svc_client_opts_t *o, rpc_md_t *md)
{
    if (!set(o->api_key))
        return;
    char v[4200];
    snprintf(v, sizeof(v), "Bearer %s", o->api_key);
    rpc_md_add(md, "authorization", v);
}
