#include "channel.h"

#include "base/err.h"
#include "grpc/health/v1/health.pb-c.h"
#include "net.h"

#include <stdio.h>

rpc_channel_t *test_channel_to(rpc_client_t *client, int port, const rpc_channel_config_t *cfg)
{
    char addr[TEST_ADDR_LEN];
    return rpc_channel_create(client, test_addr(addr, port), cfg);
}

bool test_channel_ready(rpc_channel_t *ch, int64_t timeout_ms)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "";
    rpc_call_opts_t o = {.timeout_us = timeout_ms * 1000, .wait_for_ready = true};
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    if (rpc_channel_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                          &grpc__health__v1__health_check_response__descriptor, &o, &resp,
                          &st) != LS_OK)
        return false;
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return st.code == GRPC_STATUS_OK;
}

rpc_channel_config_t test_tls_config(const char *ca, const char *cert, const char *key)
{
    rpc_channel_config_t cfg;
    rpc_channel_config_init(&cfg);
    cfg.tls = true;
    cfg.tls_root_file = ca;
    cfg.tls_cert_file = cert;
    cfg.tls_key_file = key;
    return cfg;
}

int test_unary_once(int port, const rpc_channel_config_t *cfg, const char *method,
                    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                    ProtobufCMessage **resp)
{
    rpc_client_t *client = rpc_client_create(1);
    char target[64];
    snprintf(target, sizeof(target), "localhost:%d", port);
    rpc_channel_config_t own;
    if (cfg)
        own = *cfg;
    else
        rpc_channel_config_init(&own);
    own.own_connections = true; /* a connection (and a handshake) of its own */
    rpc_channel_t *ch = rpc_channel_create(client, target, &own);
    rpc_status_t st = {.code = GRPC_STATUS_INTERNAL};
    ProtobufCMessage *got = NULL;
    if (ch) {
        rpc_call_opts_t o = {.timeout_us = 20000000};
        rpc_channel_unary(ch, method, req, resp_desc, &o, &got, &st);
        rpc_channel_destroy(ch);
    }
    rpc_client_destroy(client);
    if (resp)
        *resp = got;
    else if (got)
        protobuf_c_message_free_unpacked(got, NULL);
    return st.code;
}
