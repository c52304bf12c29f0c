#include "channel.h"

#include "base/err.h"
#include "grpc/health/v1/health.pb-c.h"
#include "net.h"

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
