/*
 * main.c - llmserve-cache: reads settings, creates the engine and the server, serves
 * llmserve.v1.Cache/Session until SIGTERM or SIGINT, then shuts down in order.
 *
 * Prints "LISTENING port=N" on standard output once serving.
 */
#define _GNU_SOURCE
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "base/signals.h"
#include "engine.h"
#include "llmserve/v1/cache.pb-c.h"
#include "rpc/server.h"
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *listen;
    int64_t threads;
    int64_t grace_ms;
    const char *memcached;
    int64_t memcached_timeout_ms;
    int64_t workers;
    int64_t max_queue;
    int64_t l1_bytes;
    int64_t ttl_s;
    int64_t max_ttl_s;
    int64_t max_value_bytes;
    int64_t max_key_bytes;
    const char *models;
    bool semantic;
    double semantic_threshold;
    int64_t semantic_max_entries;
    int64_t semantic_max_scopes;
    int64_t embed_dim;
    int64_t generation_refresh_ms;
    int64_t breaker_failures;
    int64_t probe_interval_ms;
    int64_t max_in_flight;
} cache_config_t;

static void cache_config_init(cache_config_t *cfg)
{
    engine_config_t e;
    engine_config_init(&e);
    cfg->listen = "0.0.0.0:50052";                     /* gRPC address */
    cfg->threads = 0;                                  /* 0: one per core */
    cfg->grace_ms = 2000;                              /* ms streams may take at shutdown */
    cfg->memcached = "--SERVER=127.0.0.1:11211";       /* libmemcached config string */
    cfg->memcached_timeout_ms = 50;                    /* connect and each I/O wait */
    cfg->workers = e.pool.workers;                     /* 4 memcached worker threads */
    cfg->max_queue = (int64_t)e.pool.max_queue;        /* 65536 jobs waiting */
    cfg->l1_bytes = (int64_t)e.l1_bytes;               /* 64 MiB */
    cfg->ttl_s = e.default_ttl_s;                      /* 3600 s */
    cfg->max_ttl_s = e.max_ttl_s;                      /* 86400 s */
    cfg->max_value_bytes = (int64_t)e.max_value_bytes; /* 512 KiB */
    cfg->max_key_bytes = 262144;                       /* 256 KiB of prompt */
    cfg->models = "";                                  /* empty: any model */
    cfg->semantic = e.semantic;                        /* on */
    cfg->semantic_threshold = e.semantic_threshold;    /* cosine similarity */
    cfg->semantic_max_entries = (int64_t)e.semantic_max_per_scope; /* 2048 per scope */
    cfg->semantic_max_scopes = (int64_t)e.semantic_max_scopes;     /* 4096 scopes */
    cfg->embed_dim = (int64_t)e.embed_dim;                         /* 512 floats */
    cfg->generation_refresh_ms = e.gen_refresh_us / 1000;          /* 1000 ms */
    cfg->breaker_failures = e.breaker_threshold;                   /* 2 in a row */
    cfg->probe_interval_ms = e.probe_interval_us / 1000;           /* 500 ms */
    cfg->max_in_flight = 4096; /* requests at workers per stream */
}

/* Splits "a,b,c" into a NULL-terminated array of copies (empty items skipped). */
static char **split_models(const char *list, size_t *n)
{
    size_t cap = 1;
    for (const char *p = list; *p; p++)
        cap += *p == ',';
    char **out = ls_xcalloc(cap + 1, sizeof(char *));
    *n = 0;
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > 0) {
            out[*n] = ls_xmalloc(len + 1);
            memcpy(out[*n], p, len);
            out[*n][len] = '\0';
            (*n)++;
        }
        p += len + (end ? 1 : 0);
    }
    return out;
}

int main(int argc, char **argv)
{
    cache_config_t cfg;
    cache_config_init(&cfg);
    const ls_opt_t opts[] = {
        {"listen", "CACHE_LISTEN", LS_OPT_STRING, &cfg.listen, "address to serve on, host:port", 0,
         0},
        {"threads", "CACHE_THREADS", LS_OPT_INT, &cfg.threads,
         "gRPC completion-queue threads, 0 = one per core", 0, 256},
        {"grace-ms", "CACHE_GRACE_MS", LS_OPT_INT, &cfg.grace_ms,
         "milliseconds streams may take to finish at shutdown", 0, 3.6e6},
        {"memcached", "LIBMEMCACHED", LS_OPT_STRING, &cfg.memcached,
         "memcached servers as a libmemcached config string, e.g. "
         "'--SERVER=10.0.0.1:11211 --SERVER=10.0.0.2:11211' (consistent hashing)",
         0, 0},
        {"memcached-timeout-ms", "CACHE_MEMCACHED_TIMEOUT_MS", LS_OPT_INT,
         &cfg.memcached_timeout_ms, "memcached connect and I/O timeout, milliseconds", 1, 60000},
        {"workers", "CACHE_WORKERS", LS_OPT_INT, &cfg.workers, "threads that talk to memcached", 1,
         256},
        {"max-queue", "CACHE_MAX_QUEUE", LS_OPT_INT, &cfg.max_queue,
         "requests waiting for a worker before RESOURCE_EXHAUSTED", 1, 1e7},
        {"l1-bytes", "CACHE_L1_BYTES", LS_OPT_INT, &cfg.l1_bytes,
         "in-process L1 size in bytes, 0 = off", 0, 1e12},
        {"ttl", "CACHE_TTL", LS_OPT_INT, &cfg.ttl_s,
         "default answer lifetime in seconds (a store may name its own)", 1, 2592000},
        {"max-ttl", "CACHE_MAX_TTL", LS_OPT_INT, &cfg.max_ttl_s,
         "longest answer lifetime in seconds; longer requests are clamped", 1, 2592000},
        {"max-value-bytes", "CACHE_MAX_VALUE_BYTES", LS_OPT_INT, &cfg.max_value_bytes,
         "largest stored answer in bytes (encoded); larger ones are not stored", 64, 1e9},
        {"max-key-bytes", "CACHE_MAX_KEY_BYTES", LS_OPT_INT, &cfg.max_key_bytes,
         "largest prompt (or sum of message contents) in bytes; larger is INVALID_ARGUMENT", 1,
         1e9},
        {"models", "CACHE_MODELS", LS_OPT_STRING, &cfg.models,
         "comma-separated models the cache accepts (others: NOT_FOUND); empty = any", 0, 0},
        {"semantic", "CACHE_SEMANTIC", LS_OPT_BOOL, &cfg.semantic,
         "semantic cache (--no-semantic: exact only)", 0, 0},
        {"semantic-threshold", "CACHE_SEMANTIC_THRESHOLD", LS_OPT_DOUBLE, &cfg.semantic_threshold,
         "least cosine similarity for a semantic hit, (0, 1]", 0.01, 1},
        {"semantic-max-entries", "CACHE_SEMANTIC_MAX_ENTRIES", LS_OPT_INT,
         &cfg.semantic_max_entries, "semantic entries per (tenant, model, params) scope", 1, 1e6},
        {"semantic-max-scopes", "CACHE_SEMANTIC_MAX_SCOPES", LS_OPT_INT, &cfg.semantic_max_scopes,
         "semantic scopes held (least recently used go)", 1, 1e7},
        {"embed-dim", "CACHE_EMBED_DIM", LS_OPT_INT, &cfg.embed_dim,
         "n-gram embedding size, a power of two", 64, 65536},
        {"generation-refresh-ms", "CACHE_GENERATION_REFRESH_MS", LS_OPT_INT,
         &cfg.generation_refresh_ms,
         "how long a model's key generation is trusted before re-reading memcached, ms", 1, 3.6e6},
        {"breaker-failures", "CACHE_BREAKER_FAILURES", LS_OPT_INT, &cfg.breaker_failures,
         "memcached failures in a row that mark a server down (degraded)", 1, 1000},
        {"probe-interval-ms", "CACHE_PROBE_INTERVAL_MS", LS_OPT_INT, &cfg.probe_interval_ms,
         "how often a down memcached server is tried, ms", 10, 600000},
        {"max-in-flight", "CACHE_MAX_IN_FLIGHT", LS_OPT_INT, &cfg.max_in_flight,
         "requests at workers per stream before RESOURCE_EXHAUSTED", 1, 1e6},
    };
    ls_config_t conf = {.program = "llmserve-cache", .summary = "Answer cache: in-process L1, memcached, semantic index (Cache.Session).", .opts = opts, .n_opts = sizeof(opts) / sizeof(opts[0])};
    char err[256];
    int rc = ls_config_load(&conf, argc, argv, err, sizeof(err));
    if (rc == LS_CONFIG_HELP)
        return 0;
    if (rc != LS_OK) {
        fprintf(stderr, "llmserve-cache: %s\n", err);
        return 2;
    }
    if (cache_mc_check(cfg.memcached, err, sizeof(err)) != LS_OK) {
        fprintf(stderr, "llmserve-cache: --memcached: %s\n", err);
        return 2;
    }
    if (cfg.embed_dim & (cfg.embed_dim - 1)) {
        fprintf(stderr, "llmserve-cache: --embed-dim must be a power of two\n");
        return 2;
    }
    ls_signals_block();
    ls_config_log(&conf, "cache");

    engine_config_t ec;
    engine_config_init(&ec);
    ec.l1_bytes = (size_t)cfg.l1_bytes;
    ec.default_ttl_s = (uint32_t)cfg.ttl_s;
    ec.max_ttl_s = (uint32_t)cfg.max_ttl_s;
    if (ec.default_ttl_s > ec.max_ttl_s)
        ec.default_ttl_s = ec.max_ttl_s;
    ec.max_value_bytes = (size_t)cfg.max_value_bytes;
    ec.semantic = cfg.semantic;
    ec.semantic_threshold = (float)cfg.semantic_threshold;
    ec.semantic_max_per_scope = (size_t)cfg.semantic_max_entries;
    ec.semantic_max_scopes = (size_t)cfg.semantic_max_scopes;
    ec.embed_dim = (size_t)cfg.embed_dim;
    ec.gen_refresh_us = cfg.generation_refresh_ms * 1000;
    ec.breaker_threshold = (int)cfg.breaker_failures;
    ec.probe_interval_us = cfg.probe_interval_ms * 1000;
    ec.pool.workers = (int)cfg.workers;
    ec.pool.max_queue = (size_t)cfg.max_queue;
    ec.pool.mc.servers = cfg.memcached;
    ec.pool.mc.connect_timeout_ms = cfg.memcached_timeout_ms;
    ec.pool.mc.io_timeout_ms = cfg.memcached_timeout_ms;
    engine_t *eng = engine_create(&ec);
    if (!eng)
        return 1;

    size_t n_models = 0;
    char **models = split_models(cfg.models, &n_models);
    session_config_t sc = {
        .engine = eng,
        .limits = {.max_key_bytes = (size_t)cfg.max_key_bytes,
                   .models = (const char *const *)models,
                   .n_models = n_models},
        .max_in_flight = (size_t)cfg.max_in_flight,
    };

    rpc_server_config_t scfg;
    rpc_server_config_init(&scfg);
    scfg.threads = (int)cfg.threads;
    scfg.name = "cache";
    int status = 1;
    rpc_server_t *srv = rpc_server_create(&scfg);
    if (!srv)
        goto out_engine;
    int port = 0;
    if (rpc_server_listen(srv, cfg.listen, NULL, &port) != LS_OK ||
        rpc_server_add_method(srv, SESSION_METHOD, RPC_STREAM,
                              &llmserve__v1__cache_request__descriptor, &session_handler,
                              &sc) != LS_OK ||
        rpc_server_start(srv) != LS_OK) {
        fprintf(stderr, "llmserve-cache: cannot serve on %s\n", cfg.listen);
        goto out_server;
    }
    printf("LISTENING port=%d\n", port);
    fflush(stdout);

    int sig = ls_signals_wait();
    LS_LOG_INFO("cache", "stopping signal=%d", sig);
    rpc_server_shutdown(srv, cfg.grace_ms);
    status = 0;
out_server:
    /* Workers may still hold call references: let them finish before the server goes. */
    engine_shutdown(eng);
    rpc_server_destroy(srv);
out_engine:
    engine_destroy(eng);
    for (size_t i = 0; i < n_models; i++)
        free(models[i]);
    free(models);
    return status;
}
