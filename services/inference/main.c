/*
 * main.c - llmserve-inference: its options and its wiring for the service runtime
 * (libs/svc).  The runtime listens first with health NOT_SERVING, so probes get an
 * answer while start loads the checkpoint, tokenizer, forward pass and scheduler; then
 * health turns SERVING.  SIGTERM drains: new submits get UNAVAILABLE, requests in
 * flight finish for --grace-ms, the rest end with UNAVAILABLE.  A compute device that
 * fails for good (the scheduler's on_fatal) fails the service (svc_fail): health
 * NOT_SERVING, the same stop as SIGTERM, exit status 1, so that an orchestrator starts
 * a fresh process, the only way to get the device back.
 */
#define _GNU_SOURCE
#include "base/config.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "model/checkpoint.h"
#include "model/forward.h"
#include "model/tokenizer.h"
#include "rpc/server.h"
#include "scheduler.h"
#include "service.h"
#include "svc/svc.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* After the scheduler has drained, how long queued events may take to reach their
 * clients before the remaining calls are cancelled. */
#define INF_FLUSH_GRACE_MS 2000

typedef struct {
    const char *model;
    const char *tokenizer;
    const char *model_name;
    const char *model_version;
    const char *pool;
    int64_t weight; /* -1: not given */
    const char *backend;
    int64_t cpu_threads;
    int64_t max_batch;
    int64_t max_step_tokens;
    int64_t max_queue;
    int64_t max_queue_delay_ms;
    int64_t kv_budget_tokens;
    int64_t default_max_tokens;
    int64_t max_tokens_limit;
    int64_t fault_after_steps;
    int64_t step_delay_us;
    bool prefix_cache;
    int64_t priority_aging_ms;
    int64_t max_running[3]; /* by class: interactive, normal, batch; 0 = no cap */
    int64_t max_preemptions;
    /* built by the hooks */
    svc_t *runtime;
    forward_backend_t backend_kind;
    inf_service_t *svc;
    ckpt_t *ck;
    tok_t *tok;
    forward_t *fwd;
    inf_sched_t *sched;
} inf_config_t;

static void inf_config_init(inf_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->model = NULL;     /* checkpoint file; required */
    cfg->tokenizer = NULL; /* tokenizer.bin; required */
    cfg->model_name = "";  /* "" = the checkpoint's file name without extension */
    cfg->model_version = "";
    cfg->pool = "";
    cfg->weight = -1;
    cfg->backend = "auto";         /* auto: CUDA when a device is present, else CPU */
    cfg->cpu_threads = 0;          /* CPU forward threads; 0 = online cores */
    cfg->max_batch = 32;           /* requests per step */
    cfg->max_step_tokens = 512;    /* tokens per step, prompt chunks included */
    cfg->max_queue = 256;          /* requests waiting for admission */
    cfg->max_queue_delay_ms = 2;   /* idle wait for a batch to fill, ms */
    cfg->kv_budget_tokens = 0;     /* 0 = max_batch * seq_len */
    cfg->default_max_tokens = 256; /* for max_tokens 0 */
    cfg->max_tokens_limit = 0;     /* 0 = only the context limits max_tokens */
    cfg->fault_after_steps = 0;    /* testing: forward steps before the device fails; 0 = never */
    cfg->step_delay_us = 0;        /* testing: sleep after each forward step; 0 = none */
    cfg->prefix_cache = true;      /* share full KV blocks of equal prefixes */
    cfg->priority_aging_ms = 1000; /* a waiter counts one class better per period waited */
    cfg->max_preemptions = 2;      /* times one request may be preempted; 0 = never */
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

static int inf_check(svc_t *svc, void *ud, char *err, size_t err_len)
{
    (void)svc;
    inf_config_t *cfg = ud;
    if (!cfg->model || !*cfg->model || !cfg->tokenizer || !*cfg->tokenizer) {
        ls_set_err(err, err_len, "--model and --tokenizer are required (see --help)");
        return LS_ERR_INVALID;
    }
    if (parse_backend(cfg->backend, &cfg->backend_kind) != LS_OK) {
        ls_set_err(err, err_len, "--backend: '%s' is not auto, cpu or cuda", cfg->backend);
        return LS_ERR_INVALID;
    }
    if (cfg->max_step_tokens < cfg->max_batch) {
        ls_set_err(err, err_len, "--max-step-tokens (%lld) must be at least --max-batch (%lld)",
                   (long long)cfg->max_step_tokens, (long long)cfg->max_batch);
        return LS_ERR_INVALID;
    }
    return LS_OK;
}

static int inf_create(svc_t *svc, void *ud, char *err, size_t err_len)
{
    inf_config_t *cfg = ud;
    cfg->runtime = svc;
    inf_service_config_t icfg = {
        .model_name = cfg->model_name,
        .model_version = cfg->model_version,
        .pool = cfg->pool,
        .default_max_tokens = (int)cfg->default_max_tokens,
        .max_tokens_limit = (int)cfg->max_tokens_limit,
        .max_queue = (int)cfg->max_queue,
        .reporter = svc_reporter(svc),
        .tracer = svc_tracer(svc),
    };
    cfg->svc = inf_service_create(svc_server(svc), &icfg);
    if (!cfg->svc) {
        ls_set_err(err, err_len, "cannot register llmserve.v1.Inference");
        return LS_ERR_INTERNAL;
    }
    return LS_OK;
}

/* The scheduler lost the device for good and has ended every request: the process must
 * end (scheduler thread). */
static void inf_on_fatal(void *ud, const char *reason)
{
    inf_config_t *cfg = ud;
    svc_fail(cfg->runtime, reason);
}

/* Loads the model while the server answers probes with NOT_SERVING. */
static int inf_start(svc_t *svc, void *ud, char *err, size_t err_len)
{
    inf_config_t *cfg = ud;
    char why[512];
    cfg->ck = ckpt_open(cfg->model, why, sizeof(why));
    if (!cfg->ck) {
        ls_set_err(err, err_len, "cannot load the model: %s", why);
        return LS_ERR_INVALID;
    }
    cfg->tok = tok_load(cfg->tokenizer, cfg->ck->cfg.vocab_size, why, sizeof(why));
    if (!cfg->tok) {
        ls_set_err(err, err_len, "cannot load the tokenizer: %s", why);
        return LS_ERR_INVALID;
    }
    forward_config_t fcfg;
    forward_config_init(&fcfg);
    fcfg.backend = cfg->backend_kind;
    fcfg.max_batch = (int)cfg->max_batch;
    fcfg.max_step_tokens = (int)cfg->max_step_tokens;
    if (cfg->kv_budget_tokens > 0)
        fcfg.kv_budget_tokens = cfg->kv_budget_tokens;
    fcfg.threads = (int)cfg->cpu_threads;
    fcfg.fault_after_steps = (int)cfg->fault_after_steps;
    fcfg.prefix_cache = cfg->prefix_cache;
    cfg->fwd = forward_create(cfg->ck, &fcfg, why, sizeof(why));
    if (!cfg->fwd) {
        ls_set_err(err, err_len, "cannot create the forward pass: %s", why);
        return LS_ERR_INVALID;
    }
    if (fcfg.fault_after_steps > 0)
        LS_LOG_WARN("inference",
                    "fault injection on: the compute device fails for good after steps=%d",
                    fcfg.fault_after_steps);
    const char *model = cfg->model_name[0] ? cfg->model_name : cfg->ck->name;
    inf_sched_config_t sch = {.max_queue = (int)cfg->max_queue,
                              .max_queue_delay_us = cfg->max_queue_delay_ms * 1000,
                              .on_fatal = inf_on_fatal,
                              .on_fatal_ud = cfg,
                              .reporter = svc_reporter(svc),
                              .pool = cfg->pool,
                              .model = model,
                              .tracer = svc_tracer(svc),
                              .step_delay_us = cfg->step_delay_us,
                              .priority_aging_us = cfg->priority_aging_ms * 1000,
                              .class_max_running = {(int)cfg->max_running[0],
                                                    (int)cfg->max_running[1],
                                                    (int)cfg->max_running[2]},
                              .max_preemptions = (int)cfg->max_preemptions};
    if (cfg->step_delay_us > 0)
        LS_LOG_WARN("inference", "testing delay on: every forward step sleeps us=%lld",
                    (long long)cfg->step_delay_us);
    cfg->sched = inf_sched_create(cfg->fwd, cfg->tok, &sch, why, sizeof(why));
    if (!cfg->sched) {
        ls_set_err(err, err_len, "cannot start the scheduler: %s", why);
        return LS_ERR_INTERNAL;
    }
    inf_service_attach(cfg->svc, cfg->ck, cfg->tok, cfg->fwd, cfg->sched);
    const ckpt_config_t *mc = &cfg->ck->cfg;
    const forward_config_t *fc = forward_config(cfg->fwd);
    LS_LOG_INFO("inference",
                "model loaded name=%s dim=%d layers=%d heads=%d kv_heads=%d "
                "vocab=%d seq_len=%d backend=%s device=\"%s\" max_batch=%d kv_budget_tokens=%lld",
                cfg->ck->name, mc->dim, mc->n_layers, mc->n_heads, mc->n_kv_heads, mc->vocab_size,
                mc->seq_len, forward_backend_name(cfg->fwd), forward_device_name(cfg->fwd),
                fc->max_batch, (long long)fc->kv_budget_tokens);
    char max_batch[24];
    snprintf(max_batch, sizeof(max_batch), "%d", fc->max_batch);
    svc_add_meta(svc, "pool", cfg->pool);
    svc_add_meta(svc, "model", model);
    svc_add_meta(svc, "version", cfg->model_version);
    svc_add_meta(svc, "max_batch", max_batch);
    svc_add_meta(svc, "backend", forward_backend_name(cfg->fwd));
    if (cfg->weight >= 0) {
        char weight[24];
        snprintf(weight, sizeof(weight), "%lld", (long long)cfg->weight);
        svc_add_meta(svc, "weight", weight);
    }
    return LS_OK;
}

static void inf_drain(svc_t *svc, void *ud, int64_t deadline_us)
{
    (void)svc;
    inf_config_t *cfg = ud;
    int64_t left_ms = (deadline_us - ls_now_us()) / 1000;
    inf_service_drain(cfg->svc, left_ms > 0 ? left_ms : 0);
}

static void inf_destroy(svc_t *svc, void *ud)
{
    (void)svc;
    inf_config_t *cfg = ud;
    inf_sched_destroy(cfg->sched);
    forward_destroy(cfg->fwd);
    tok_destroy(cfg->tok);
    ckpt_close(cfg->ck);
    inf_service_destroy(cfg->svc);
}

int main(int argc, char **argv)
{
    static inf_config_t cfg;
    inf_config_init(&cfg);
    const ls_opt_t opts[] = {
        {"model", NULL, LS_OPT_STRING, &cfg.model, "checkpoint file (llama2.c format); required", 0,
         0},
        {"tokenizer", NULL, LS_OPT_STRING, &cfg.tokenizer,
         "tokenizer.bin matching the checkpoint; required", 0, 0},
        {"model-name", NULL, LS_OPT_STRING, &cfg.model_name,
         "model name reported by Info; empty = checkpoint file name", 0, 0},
        {"model-version", NULL, LS_OPT_STRING, &cfg.model_version, "model version reported by Info",
         0, 0},
        {"pool", NULL, LS_OPT_STRING, &cfg.pool,
         "pool this instance serves in (e.g. small), reported by Info", 0, 0},
        {"weight", NULL, LS_OPT_INT, &cfg.weight,
         "this version's share of its pool's traffic, told to the router through Consul "
         "(Meta weight; -1: not given, versions without one share what the others leave "
         "of 100)",
         -1, 1000000},
        {"backend", NULL, LS_OPT_STRING, &cfg.backend, "compute backend: auto, cpu or cuda", 0, 0},
        {"cpu-threads", NULL, LS_OPT_INT, &cfg.cpu_threads,
         "CPU threads for the forward pass on the CPU backend, 0 = one per core", 0, 1024},
        {"max-batch", NULL, LS_OPT_INT, &cfg.max_batch,
         "most requests decoded together in one step", 1, 4096},
        {"max-step-tokens", NULL, LS_OPT_INT, &cfg.max_step_tokens,
         "most tokens per step, prompt chunks included (>= max-batch)", 1, 1 << 20},
        {"max-queue", NULL, LS_OPT_INT, &cfg.max_queue,
         "most requests waiting for admission; more get RESOURCE_EXHAUSTED", 1, 1 << 20},
        {"max-queue-delay-ms", NULL, LS_OPT_INT, &cfg.max_queue_delay_ms,
         "ms an idle scheduler waits for a batch to fill", 0, 60000},
        {"kv-budget-tokens", NULL, LS_OPT_INT, &cfg.kv_budget_tokens,
         "KV cache positions shared by all requests, 0 = max-batch * seq_len", 0, 1e12},
        {"default-max-tokens", NULL, LS_OPT_INT, &cfg.default_max_tokens,
         "completion tokens when a request asks for 0", 1, 1 << 24},
        {"max-tokens-limit", NULL, LS_OPT_INT, &cfg.max_tokens_limit,
         "largest max_tokens accepted, 0 = no limit but the context", 0, 1 << 24},
        {"fault-after-steps", NULL, LS_OPT_INT, &cfg.fault_after_steps,
         "testing: after N forward steps the compute device fails for good (fatal-device "
         "path); 0 = never",
         0, INT32_MAX},
        {"prefix-cache", NULL, LS_OPT_BOOL, &cfg.prefix_cache,
         "keep full KV blocks and share them between requests with the same prefix "
         "(--no-prefix-cache: every prompt is computed)",
         0, 0},
        {"priority-aging-ms", NULL, LS_OPT_INT, &cfg.priority_aging_ms,
         "a waiting request counts as one class better (batch, normal, interactive) per "
         "period waited, so low classes progress; 0 = never",
         0, 3600000},
        {"max-running-interactive", NULL, LS_OPT_INT, &cfg.max_running[0],
         "most interactive requests in the batch at once; 0 = no cap", 0, 65536},
        {"max-running-normal", NULL, LS_OPT_INT, &cfg.max_running[1],
         "most normal requests in the batch at once; 0 = no cap", 0, 65536},
        {"max-running-batch", NULL, LS_OPT_INT, &cfg.max_running[2],
         "most batch requests in the batch at once; 0 = no cap", 0, 65536},
        {"max-preemptions", NULL, LS_OPT_INT, &cfg.max_preemptions,
         "times one running request may be preempted for a better class (its KV freed, "
         "resumed by recompute); 0 = never preempt",
         0, 1000},
        {"step-delay-us", NULL, LS_OPT_INT, &cfg.step_delay_us,
         "testing: sleep this long after every forward step, so a test can act while an "
         "answer is being generated (kill the instance mid-answer); 0 = never",
         0, 10000000},
    };
    /* The names before the service runtime: still read, with a warning. */
    static const ls_alias_t aliases[] = {
        {"--threads", "cpu-threads"},
        {"LLMSERVE_INFERENCE_THREADS", "cpu-threads"},
    };
    svc_spec_t spec = {
        .service = "inference",
        .upstreams = true, /* it calls the metrics collector (--metrics) */
        .program = "llmserve-inference",
        .summary = "Serves a llama-architecture model over gRPC with continuous batching.",
        .default_listen = "0.0.0.0:50061",
        .default_rpc_threads = 2,
        .default_grace_ms = 5000,
        .flush_ms = INF_FLUSH_GRACE_MS,
        .opts = opts,
        .n_opts = sizeof(opts) / sizeof(opts[0]),
        .aliases = aliases,
        .n_aliases = sizeof(aliases) / sizeof(aliases[0]),
        .hooks = {.check = inf_check,
                  .create = inf_create,
                  .start = inf_start,
                  .drain = inf_drain,
                  .destroy = inf_destroy},
        .ud = &cfg,
    };
    return svc_main(&spec, argc, argv);
}
