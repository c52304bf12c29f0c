/*
 * main.c - llmserve-inference: reads config, loads the model, serves
 * llmserve.v1.Inference until SIGTERM or SIGINT, then drains and exits 0.
 *
 * Start order: the gRPC server starts first with health NOT_SERVING, so probes get
 * an answer while the model loads; once the checkpoint, tokenizer, forward pass and
 * scheduler are up, health turns SERVING and "LISTENING port=N" goes to stdout.
 */
#define _GNU_SOURCE
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "base/signals.h"
#include "model/checkpoint.h"
#include "model/forward.h"
#include "model/tokenizer.h"
#include "rpc/server.h"
#include "scheduler.h"
#include "service.h"

#include <stdio.h>
#include <string.h>

/* After the scheduler has drained, how long queued events may take to reach their
 * clients before the remaining calls are cancelled. */
#define INF_FLUSH_GRACE_MS 2000

typedef struct {
    const char *listen;
    const char *model;
    const char *tokenizer;
    const char *model_name;
    const char *model_version;
    const char *pool;
    const char *backend;
    int64_t threads;
    int64_t max_batch;
    int64_t max_step_tokens;
    int64_t max_queue;
    int64_t max_queue_delay_ms;
    int64_t kv_budget_tokens;
    int64_t default_max_tokens;
    int64_t max_tokens_limit;
    int64_t grace_ms;
    int64_t rpc_threads;
    int64_t max_write_queue;
} inf_config_t;

static void inf_config_init(inf_config_t *cfg)
{
    cfg->listen = "127.0.0.1:50061"; /* host:port; port 0 picks a free one */
    cfg->model = NULL;               /* checkpoint file; required */
    cfg->tokenizer = NULL;           /* tokenizer.bin; required */
    cfg->model_name = "";            /* "" = the checkpoint's file name without extension */
    cfg->model_version = "";
    cfg->pool = "";
    cfg->backend = "auto";         /* auto: CUDA when a device is present, else CPU */
    cfg->threads = 0;              /* CPU forward threads; 0 = online cores */
    cfg->max_batch = 32;           /* requests per step */
    cfg->max_step_tokens = 512;    /* tokens per step, prompt chunks included */
    cfg->max_queue = 256;          /* requests waiting for admission */
    cfg->max_queue_delay_ms = 2;   /* idle wait for a batch to fill, ms */
    cfg->kv_budget_tokens = 0;     /* 0 = max_batch * seq_len */
    cfg->default_max_tokens = 256; /* for max_tokens 0 */
    cfg->max_tokens_limit = 0;     /* 0 = only the context limits max_tokens */
    cfg->grace_ms = 5000;          /* ms requests may take to finish at shutdown */
    cfg->rpc_threads = 2;          /* completion-queue threads */
    cfg->max_write_queue = 4096;   /* events queued per stream before it is cancelled */
}

static int parse_backend(const char *name, forward_backend_t *out)
{
    if (strcmp(name, "auto") == 0)
        *out = FORWARD_AUTO;
    else if (strcmp(name, "cpu") == 0)
        *out = FORWARD_CPU;
    else if (strcmp(name, "cuda") == 0)
        *out = FORWARD_CUDA;
    else
        return LS_ERR_INVALID;
    return LS_OK;
}

int main(int argc, char **argv)
{
    inf_config_t cfg;
    inf_config_init(&cfg);
    const ls_opt_t opts[] = {
        {"listen", "LLMSERVE_INFERENCE_LISTEN", LS_OPT_STRING, &cfg.listen,
         "address to serve on, host:port (port 0: any free port)", 0, 0},
        {"model", "LLMSERVE_INFERENCE_MODEL", LS_OPT_STRING, &cfg.model,
         "checkpoint file (llama2.c format); required", 0, 0},
        {"tokenizer", "LLMSERVE_INFERENCE_TOKENIZER", LS_OPT_STRING, &cfg.tokenizer,
         "tokenizer.bin matching the checkpoint; required", 0, 0},
        {"model-name", "LLMSERVE_INFERENCE_MODEL_NAME", LS_OPT_STRING, &cfg.model_name,
         "model name reported by Info; empty = checkpoint file name", 0, 0},
        {"model-version", "LLMSERVE_INFERENCE_MODEL_VERSION", LS_OPT_STRING, &cfg.model_version,
         "model version reported by Info", 0, 0},
        {"pool", "LLMSERVE_INFERENCE_POOL", LS_OPT_STRING, &cfg.pool,
         "pool this instance serves in (e.g. small), reported by Info", 0, 0},
        {"backend", "LLMSERVE_INFERENCE_BACKEND", LS_OPT_STRING, &cfg.backend,
         "compute backend: auto, cpu or cuda", 0, 0},
        {"threads", "LLMSERVE_INFERENCE_THREADS", LS_OPT_INT, &cfg.threads,
         "CPU threads for the forward pass, 0 = one per core", 0, 1024},
        {"max-batch", "LLMSERVE_INFERENCE_MAX_BATCH", LS_OPT_INT, &cfg.max_batch,
         "most requests decoded together in one step", 1, 4096},
        {"max-step-tokens", "LLMSERVE_INFERENCE_MAX_STEP_TOKENS", LS_OPT_INT, &cfg.max_step_tokens,
         "most tokens per step, prompt chunks included (>= max-batch)", 1, 1 << 20},
        {"max-queue", "LLMSERVE_INFERENCE_MAX_QUEUE", LS_OPT_INT, &cfg.max_queue,
         "most requests waiting for admission; more get RESOURCE_EXHAUSTED", 1, 1 << 20},
        {"max-queue-delay-ms", "LLMSERVE_INFERENCE_MAX_QUEUE_DELAY_MS", LS_OPT_INT,
         &cfg.max_queue_delay_ms, "ms an idle scheduler waits for a batch to fill", 0, 60000},
        {"kv-budget-tokens", "LLMSERVE_INFERENCE_KV_BUDGET_TOKENS", LS_OPT_INT,
         &cfg.kv_budget_tokens,
         "KV cache positions shared by all requests, 0 = max-batch * "
         "seq_len",
         0, 1e12},
        {"default-max-tokens", "LLMSERVE_INFERENCE_DEFAULT_MAX_TOKENS", LS_OPT_INT,
         &cfg.default_max_tokens, "completion tokens when a request asks for 0", 1, 1 << 24},
        {"max-tokens-limit", "LLMSERVE_INFERENCE_MAX_TOKENS_LIMIT", LS_OPT_INT,
         &cfg.max_tokens_limit, "largest max_tokens accepted, 0 = no limit but the context", 0,
         1 << 24},
        {"grace-ms", "LLMSERVE_INFERENCE_GRACE_MS", LS_OPT_INT, &cfg.grace_ms,
         "ms requests in flight may take to finish at shutdown", 0, 3.6e6},
        {"rpc-threads", "LLMSERVE_INFERENCE_RPC_THREADS", LS_OPT_INT, &cfg.rpc_threads,
         "gRPC completion-queue threads, 0 = one per core", 0, 256},
        {"max-write-queue", "LLMSERVE_INFERENCE_MAX_WRITE_QUEUE", LS_OPT_INT, &cfg.max_write_queue,
         "events queued per stream before a slow reader is cut off", 16, 1e9},
    };
    ls_config_t conf = {.program = "llmserve-inference", .summary = "Serves a llama-architecture model over gRPC with continuous batching.", .opts = opts, .n_opts = sizeof(opts) / sizeof(opts[0])};
    char err[512];
    int rc = ls_config_load(&conf, argc, argv, err, sizeof(err));
    if (rc == LS_CONFIG_HELP)
        return 0;
    forward_backend_t backend = FORWARD_AUTO;
    if (rc == LS_OK && (!cfg.model || !*cfg.model || !cfg.tokenizer || !*cfg.tokenizer)) {
        snprintf(err, sizeof(err), "--model and --tokenizer are required (see --help)");
        rc = LS_ERR_INVALID;
    }
    if (rc == LS_OK && parse_backend(cfg.backend, &backend) != LS_OK) {
        snprintf(err, sizeof(err), "--backend must be auto, cpu or cuda, not \"%s\"", cfg.backend);
        rc = LS_ERR_INVALID;
    }
    if (rc == LS_OK && cfg.max_step_tokens < cfg.max_batch) {
        snprintf(err, sizeof(err), "--max-step-tokens (%lld) must be at least --max-batch (%lld)",
                 (long long)cfg.max_step_tokens, (long long)cfg.max_batch);
        rc = LS_ERR_INVALID;
    }
    if (rc != LS_OK) {
        fprintf(stderr, "llmserve-inference: %s\n", err);
        return 2;
    }
    ls_signals_block();
    ls_config_log(&conf, "inference");

    int status = 1;
    ckpt_t *ck = NULL;
    tok_t *tok = NULL;
    forward_t *fwd = NULL;
    inf_sched_t *sched = NULL;

    rpc_server_config_t scfg;
    rpc_server_config_init(&scfg);
    scfg.threads = (int)cfg.rpc_threads;
    scfg.max_write_queue = (size_t)cfg.max_write_queue;
    scfg.name = "inference";
    rpc_server_t *srv = rpc_server_create(&scfg);
    if (!srv)
        return 1;
    inf_service_config_t icfg = {
        .model_name = cfg.model_name,
        .model_version = cfg.model_version,
        .pool = cfg.pool,
        .default_max_tokens = (int)cfg.default_max_tokens,
        .max_tokens_limit = (int)cfg.max_tokens_limit,
        .max_queue = (int)cfg.max_queue,
    };
    int port = 0;
    inf_service_t *svc = inf_service_create(srv, &icfg);
    if (!svc || rpc_server_listen(srv, cfg.listen, NULL, &port) != LS_OK ||
        rpc_server_start(srv) != LS_OK) {
        LS_LOG_ERROR("inference", "cannot serve addr=%s", cfg.listen);
        goto out;
    }
    inf_service_set_serving(svc, false);

    ck = ckpt_open(cfg.model, err, sizeof(err));
    if (!ck) {
        LS_LOG_ERROR("inference", "cannot load model: %s", err);
        goto out;
    }
    tok = tok_load(cfg.tokenizer, ck->cfg.vocab_size, err, sizeof(err));
    if (!tok) {
        LS_LOG_ERROR("inference", "cannot load tokenizer: %s", err);
        goto out;
    }
    forward_config_t fcfg;
    forward_config_init(&fcfg);
    fcfg.backend = backend;
    fcfg.max_batch = (int)cfg.max_batch;
    fcfg.max_step_tokens = (int)cfg.max_step_tokens;
    if (cfg.kv_budget_tokens > 0)
        fcfg.kv_budget_tokens = cfg.kv_budget_tokens;
    fcfg.threads = (int)cfg.threads;
    fwd = forward_create(ck, &fcfg, err, sizeof(err));
    if (!fwd) {
        LS_LOG_ERROR("inference", "cannot create the forward pass: %s", err);
        goto out;
    }
    inf_sched_config_t sch = {.max_queue = (int)cfg.max_queue,
                              .max_queue_delay_us = cfg.max_queue_delay_ms * 1000};
    sched = inf_sched_create(fwd, tok, &sch, err, sizeof(err));
    if (!sched) {
        LS_LOG_ERROR("inference", "cannot start the scheduler: %s", err);
        goto out;
    }
    inf_service_attach(svc, ck, tok, fwd, sched);
    const ckpt_config_t *mc = &ck->cfg;
    const forward_config_t *fc = forward_config(fwd);
    LS_LOG_INFO("inference",
                "model loaded name=%s dim=%d layers=%d heads=%d kv_heads=%d "
                "vocab=%d seq_len=%d backend=%s device=\"%s\" max_batch=%d kv_budget_tokens=%lld",
                ck->name, mc->dim, mc->n_layers, mc->n_heads, mc->n_kv_heads, mc->vocab_size,
                mc->seq_len, forward_backend_name(fwd), forward_device_name(fwd), fc->max_batch,
                (long long)fc->kv_budget_tokens);
    printf("LISTENING port=%d\n", port);
    fflush(stdout);

    int sig = ls_signals_wait();
    LS_LOG_INFO("inference", "stopping signal=%d", sig);
    inf_service_drain(svc, cfg.grace_ms);
    status = 0;

out:
    rpc_server_shutdown(srv, INF_FLUSH_GRACE_MS);
    inf_sched_destroy(sched);
    forward_destroy(fwd);
    tok_destroy(tok);
    ckpt_close(ck);
    inf_service_destroy(svc);
    rpc_server_destroy(srv);
    return status;
}
