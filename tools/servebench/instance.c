#include "instance.h"

#include "base/err.h"
#include "llmserve/v1/inference.pb-c.h"

#include <stdio.h>
#include <string.h>

int sb_instance_open(sb_instance_t *in, rpc_client_t *client, const char *addr,
                     const rpc_channel_config_t *cfg, const rpc_md_t *md, int64_t timeout_ms,
                     char *err, size_t err_len)
{
    memset(in, 0, sizeof(*in));
    in->addr = addr;
    in->ch = rpc_channel_create(client, addr, cfg);
    if (!in->ch) {
        ls_set_err(err, err_len, "%s: cannot create the channel (see --tls-ca, --tls-cert)", addr);
        return LS_ERR_INVALID;
    }
    Llmserve__V1__InfoRequest req = LLMSERVE__V1__INFO_REQUEST__INIT;
    rpc_call_opts_t opts = {
        .timeout_us = timeout_ms * 1000, .metadata = md, .wait_for_ready = true};
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    int rc = rpc_channel_unary(in->ch, "/llmserve.v1.Inference/Info", &req.base,
                               &llmserve__v1__info_response__descriptor, &opts, &resp, &st);
    if (rc != LS_OK || st.code != GRPC_STATUS_OK) {
        ls_set_err(err, err_len, "%s: Inference.Info failed: %s", addr,
                   rc != LS_OK ? ls_strerror(rc) : st.details);
        if (resp)
            protobuf_c_message_free_unpacked(resp, NULL);
        rpc_channel_destroy(in->ch);
        in->ch = NULL;
        return rc != LS_OK ? rc : LS_ERR_UNAVAILABLE;
    }
    const Llmserve__V1__InfoResponse *info = (const Llmserve__V1__InfoResponse *)resp;
    snprintf(in->model, sizeof(in->model), "%s", info->model);
    snprintf(in->backend, sizeof(in->backend), "%s", info->backend);
    snprintf(in->device, sizeof(in->device), "%s", info->device);
    in->vocab_size = info->vocab_size;
    in->seq_len = info->seq_len;
    in->max_batch = info->max_batch;
    in->max_queue = info->max_queue;
    in->kv_budget_tokens = info->kv_budget_tokens;
    in->prefix_cache = info->prefix_cache;
    protobuf_c_message_free_unpacked(resp, NULL);
    return LS_OK;
}

void sb_instance_print(const sb_instance_t *in, const char *label)
{
    printf("%s %s: model %s, vocab %u, seq_len %u, %s (%s), max_batch %u, max_queue %u, "
           "kv_budget %llu tokens, prefix cache %s\n",
           label, in->addr, in->model, in->vocab_size, in->seq_len, in->backend, in->device,
           in->max_batch, in->max_queue, (unsigned long long)in->kv_budget_tokens,
           in->prefix_cache ? "on" : "off");
}

void sb_instance_close(sb_instance_t *in)
{
    rpc_channel_destroy(in->ch);
    in->ch = NULL;
}
