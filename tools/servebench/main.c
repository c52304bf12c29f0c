/*
 * servebench - a benchmark of two features of one inference instance, talking to
 * Inference.Generate directly (no router):
 *
 *   servebench prefix --cached HOST:PORT --uncached HOST:PORT
 *       TTFT of requests that share a long prompt prefix, on an instance with the prefix
 *       cache and one without (same model), in the same run; checks that both give the
 *       same greedy tokens for the same request (see prefix.h).
 *   servebench priority --target HOST:PORT
 *       TTFT of short interactive requests while batch work saturates the instance,
 *       with priority classes and without, in the same run (see priority.h).
 *
 * The mode is the first argument, or --mode.  Exit status: 0; 1 when a request failed,
 * a stream broke its contract or (prefix) the outputs differ; 2 for bad flags or
 * instances that cannot be compared.  tools/prefixbench.sh and tools/prioritybench.sh
 * start the instances and run it.
 */
#define _GNU_SOURCE
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "instance.h"
#include "prefix.h"
#include "priority.h"
#include "rpc/client.h"
#include "svc/client.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *mode;           /* "prefix" or "priority"; required */
    const char *cached;         /* prefix: instance with the prefix cache, host:port */
    const char *uncached;       /* prefix: instance without it, host:port */
    const char *target;         /* priority: the instance, host:port */
    int64_t prefix_tokens;      /* shared prompt ids; default 1000 */
    int64_t suffix_tokens;      /* each request's own ids; default 16 */
    int64_t max_tokens;         /* prefix: tokens per answer; default 16 */
    int64_t rounds;             /* default 5 (prefix), 2 (priority); 0: the mode's */
    int64_t requests;           /* prefix: one at a time per instance and round; default 20 */
    int64_t concurrency;        /* prefix: at once per instance and round; default 0 */
    int64_t batch_streams;      /* priority: batch loops; 0 = 2 x the instance's max_batch */
    int64_t batch_tokens;       /* priority: tokens per batch request; default 256 */
    int64_t interactive_tokens; /* priority: tokens per probe; default 8 */
    int64_t prompt_tokens;      /* priority: prompt ids of every request; default 16 */
    int64_t interval_ms;        /* priority: between probes; default 50 */
    int64_t duration_s;         /* priority: probing per phase and round; default 10 */
    int64_t seed;               /* prompt ids; default 1 */
    int64_t timeout_ms;         /* each request's deadline; default 120000 */
    int64_t info_timeout_ms;    /* Info calls (instances starting up); default 10000 */
    svc_client_opts_t sec;
} servebench_config_t;

static void servebench_config_init(servebench_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->mode = "";
    cfg->prefix_tokens = 1000;
    cfg->suffix_tokens = 16;
    cfg->max_tokens = 16;
    cfg->rounds = 0;
    cfg->requests = 20;
    cfg->concurrency = 0;
    cfg->batch_streams = 0;
    cfg->batch_tokens = 256;
    cfg->interactive_tokens = 8;
    cfg->prompt_tokens = 16;
    cfg->interval_ms = 50;
    cfg->duration_s = 10;
    cfg->seed = 1;
    cfg->timeout_ms = 120000;
    cfg->info_timeout_ms = 10000;
}

static int run_prefix(servebench_config_t *cfg, rpc_client_t *client,
                      const rpc_channel_config_t *chc, const rpc_md_t *md)
{
    if (!cfg->cached || !cfg->uncached) {
        fprintf(stderr, "servebench: prefix needs --cached HOST:PORT and --uncached HOST:PORT\n");
        return 2;
    }
    sb_instance_t cached, uncached;
    char err[512];
    if (sb_instance_open(&cached, client, cfg->cached, chc, md, cfg->info_timeout_ms, err,
                         sizeof(err)) != LS_OK) {
        fprintf(stderr, "servebench: %s\n", err);
        return 2;
    }
    if (sb_instance_open(&uncached, client, cfg->uncached, chc, md, cfg->info_timeout_ms, err,
                         sizeof(err)) != LS_OK) {
        fprintf(stderr, "servebench: %s\n", err);
        sb_instance_close(&cached);
        return 2;
    }
    sb_instance_print(&cached, "cached  ");
    sb_instance_print(&uncached, "uncached");
    sb_prefix_config_t pc = {.cached = &cached,
                             .uncached = &uncached,
                             .md = md,
                             .prefix_tokens = (int)cfg->prefix_tokens,
                             .suffix_tokens = (int)cfg->suffix_tokens,
                             .max_tokens = (int)cfg->max_tokens,
                             .rounds = cfg->rounds ? (int)cfg->rounds : 5,
                             .requests = (int)cfg->requests,
                             .concurrency = (int)cfg->concurrency,
                             .seed = (uint64_t)cfg->seed,
                             .timeout_ms = (uint32_t)cfg->timeout_ms};
    int status = sb_prefix_run(&pc);
    sb_instance_close(&cached);
    sb_instance_close(&uncached);
    return status;
}

static int run_priority(servebench_config_t *cfg, rpc_client_t *client,
                        const rpc_channel_config_t *chc, const rpc_md_t *md)
{
    if (!cfg->target) {
        fprintf(stderr, "servebench: priority needs --target HOST:PORT\n");
        return 2;
    }
    sb_instance_t target;
    char err[512];
    if (sb_instance_open(&target, client, cfg->target, chc, md, cfg->info_timeout_ms, err,
                         sizeof(err)) != LS_OK) {
        fprintf(stderr, "servebench: %s\n", err);
        return 2;
    }
    sb_instance_print(&target, "target");
    sb_priority_config_t pc = {.target = &target,
                               .md = md,
                               .batch_streams = cfg->batch_streams ? (int)cfg->batch_streams
                                                                   : 2 * (int)target.max_batch,
                               .batch_tokens = (int)cfg->batch_tokens,
                               .interactive_tokens = (int)cfg->interactive_tokens,
                               .prompt_tokens = (int)cfg->prompt_tokens,
                               .interval_ms = (int)cfg->interval_ms,
                               .duration_s = (int)cfg->duration_s,
                               .rounds = cfg->rounds ? (int)cfg->rounds : 2,
                               .seed = (uint64_t)cfg->seed,
                               .timeout_ms = (uint32_t)cfg->timeout_ms};
    int status = sb_priority_run(&pc);
    sb_instance_close(&target);
    return status;
}

int main(int argc, char **argv)
{
    static servebench_config_t cfg;
    servebench_config_init(&cfg);
    const ls_opt_t opts[] = {
        {"mode", NULL, LS_OPT_STRING, &cfg.mode,
         "prefix or priority (or give it as the first argument)", 0, 0},
        {"cached", NULL, LS_OPT_STRING, &cfg.cached,
         "prefix: instance started with the prefix cache (the default), host:port", 0, 0},
        {"uncached", NULL, LS_OPT_STRING, &cfg.uncached,
         "prefix: instance of the same model started with --no-prefix-cache, host:port", 0, 0},
        {"target", NULL, LS_OPT_STRING, &cfg.target, "priority: the instance, host:port", 0, 0},
        {"prefix-tokens", NULL, LS_OPT_INT, &cfg.prefix_tokens,
         "prefix: token ids every request shares", 0, 1 << 20},
        {"suffix-tokens", NULL, LS_OPT_INT, &cfg.suffix_tokens,
         "prefix: token ids of each request's own after the prefix", 1, 1 << 20},
        {"max-tokens", NULL, LS_OPT_INT, &cfg.max_tokens,
         "prefix: tokens per answer (greedy, EOS ignored)", 1, 1 << 20},
        {"rounds", NULL, LS_OPT_INT, &cfg.rounds,
         "alternating rounds (0: 5 for prefix, 2 for priority)", 0, 1000},
        {"requests", NULL, LS_OPT_INT, &cfg.requests,
         "prefix: requests one at a time per instance and round", 0, 1000000},
        {"concurrency", NULL, LS_OPT_INT, &cfg.concurrency,
         "prefix: then this many at once per instance and round (0: none)", 0, 100000},
        {"batch-streams", NULL, LS_OPT_INT, &cfg.batch_streams,
         "priority: concurrent batch loops (0: twice the instance's max_batch)", 0, 100000},
        {"batch-tokens", NULL, LS_OPT_INT, &cfg.batch_tokens,
         "priority: tokens per batch request (EOS ignored)", 1, 1 << 20},
        {"interactive-tokens", NULL, LS_OPT_INT, &cfg.interactive_tokens,
         "priority: tokens per probe (EOS ignored)", 1, 1 << 20},
        {"prompt-tokens", NULL, LS_OPT_INT, &cfg.prompt_tokens,
         "priority: prompt token ids of every request (each prompt its own)", 1, 1 << 20},
        {"interval-ms", NULL, LS_OPT_INT, &cfg.interval_ms, "priority: ms between probes", 1,
         600000},
        {"duration-s", NULL, LS_OPT_INT, &cfg.duration_s,
         "priority: seconds of probing per phase and round", 1, 86400},
        {"seed", NULL, LS_OPT_INT, &cfg.seed, "seed of the prompts' token ids", 0, 1e15},
        {"timeout-ms", NULL, LS_OPT_INT, &cfg.timeout_ms,
         "each request's deadline at the instance, ms (the client waits 5 s more)", 1, 3600000},
        {"info-timeout-ms", NULL, LS_OPT_INT, &cfg.info_timeout_ms,
         "how long to wait for an instance to answer Info, ms", 1, 3600000},
        SVC_CLIENT_OPTIONS(&cfg.sec),
    };
    ls_config_t conf = {.program = "servebench",
                        .summary = "Benchmark of an inference instance's prefix cache "
                                   "(servebench prefix) and priority classes (servebench "
                                   "priority), over Inference.Generate.",
                        .opts = opts,
                        .n_opts = sizeof(opts) / sizeof(opts[0])};
    /* "servebench MODE --flags": the mode becomes argv[0] of what the loader reads */
    if (argc > 1 && argv[1][0] != '-') {
        cfg.mode = argv[1];
        argc--;
        argv++;
    }
    char err[512];
    int rc = ls_config_load(&conf, argc, argv, err, sizeof(err));
    if (rc == LS_CONFIG_HELP)
        return 0;
    if (rc == LS_OK)
        rc = svc_client_check(&cfg.sec, err, sizeof(err));
    if (rc != LS_OK) {
        fprintf(stderr, "servebench: %s\n", err);
        return 2;
    }
    bool prefix = strcmp(cfg.mode, "prefix") == 0;
    if (!prefix && strcmp(cfg.mode, "priority") != 0) {
        fprintf(stderr, "servebench: the mode is prefix or priority, not '%s' (see --help)\n",
                cfg.mode);
        return 2;
    }
    ls_log_set_level(LS_LOG_ERROR);
    rpc_client_t *client = rpc_client_create(2);
    rpc_channel_config_t chc;
    rpc_channel_config_init(&chc);
    svc_client_channel(&cfg.sec, &chc);
    rpc_md_t md = RPC_MD_INIT;
    svc_client_metadata(&cfg.sec, &md);
    int status =
        prefix ? run_prefix(&cfg, client, &chc, &md) : run_priority(&cfg, client, &chc, &md);
    rpc_md_clear(&md);
    rpc_client_destroy(client);
    return status;
}
