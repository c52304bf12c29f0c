/*
 * main.c - llmserve-cache: its options and its wiring (engine, session handler) for the
 * service runtime (libs/svc), which parses, listens, serves Cache.Session until
 * SIGTERM or SIGINT and stops in order.
 */
#define _GNU_SOURCE
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "engine.h"
#include "llmserve/v1/cache.pb-c.h"
#include "rpc/server.h"
#include "session.h"
#include "svc/svc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
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
    bool semantic_guards;
    int64_t semantic_max_entries;
    int64_t semantic_max_scopes;
    int64_t embed_dim;
    const char *wordnet;
    bool stem;
    const char *embedder;
    const char *embed_target;
    const char *embed_model;
    int64_t embed_timeout_ms;
    int64_t generation_refresh_ms;
    int64_t breaker_failures;
    int64_t probe_interval_ms;
    int64_t max_in_flight;
    /* built by create */
    engine_t *engine;
    char **models_list;
    size_t n_models;
    session_config_t session;
} cache_config_t;

static void cache_config_init(cache_config_t *cfg)
{
    engine_config_t e;
    engine_config_init(&e);
    memset(cfg, 0, sizeof(*cfg));
    cfg->memcached = "--SERVER=127.0.0.1:11211";                   /* libmemcached config string */
    cfg->memcached_timeout_ms = 50;                                /* connect and each I/O wait */
    cfg->workers = e.pool.workers;                                 /* 4 memcached worker threads */
    cfg->max_queue = (int64_t)e.pool.max_queue;                    /* 65536 jobs waiting */
    cfg->l1_bytes = (int64_t)e.l1_bytes;                           /* 64 MiB */
    cfg->ttl_s = e.default_ttl_s;                                  /* 3600 s */
    cfg->max_ttl_s = e.max_ttl_s;                                  /* 86400 s */
    cfg->max_value_bytes = (int64_t)e.max_value_bytes;             /* 512 KiB */
    cfg->max_key_bytes = 262144;                                   /* 256 KiB of prompt */
    cfg->models = "";                                              /* empty: any model */
    cfg->semantic = e.semantic;                                    /* on */
    cfg->semantic_threshold = e.semantic_threshold;                /* cosine similarity */
    cfg->semantic_guards = e.semantic_guards;
    cfg->semantic_max_entries = (int64_t)e.semantic_max_per_scope; /* 2048 per scope */
    cfg->semantic_max_scopes = (int64_t)e.semantic_max_scopes;     /* 4096 scopes */
    cfg->embed_dim = (int64_t)e.embed_dim;                         /* 2^20 buckets */
    cfg->wordnet = e.wordnet;                                      /* auto */
    cfg->stem = e.stem;                                            /* on */
    cfg->embedder = "ngram";                                       /* or "model" */
    cfg->embed_target = "";                                        /* inference HOST:PORT */
    cfg->embed_model = "";                                         /* "": the one served */
    cfg->embed_timeout_ms = e.embed_model.timeout_ms;              /* 2000 ms per Embed */
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

static int cache_check(svc_t *svc, void *ud, char *err, size_t err_len)
{
    (void)svc;
    cache_config_t *cfg = ud;
    char why[256];
    if (cache_mc_check(cfg->memcached, why, sizeof(why)) != LS_OK) {
        ls_set_err(err, err_len, "--memcached: %s", why);
        return LS_ERR_INVALID;
    }
    if (cfg->embed_dim & (cfg->embed_dim - 1)) {
        ls_set_err(err, err_len, "--embed-dim: %lld is not a power of two",
                   (long long)cfg->embed_dim);
        return LS_ERR_INVALID;
    }
    if (strcmp(cfg->embedder, "ngram") != 0 && strcmp(cfg->embedder, "model") != 0) {
        ls_set_err(err, err_len, "--embedder: \"%s\" is neither ngram nor model", cfg->embedder);
        return LS_ERR_INVALID;
    }
    if (strcmp(cfg->embedder, "model") == 0 && cfg->semantic && !cfg->embed_target[0]) {
        ls_set_err(err, err_len, "--embedder model needs --embed-target HOST:PORT");
        return LS_ERR_INVALID;
    }
    return LS_OK;
}

static int cache_create(svc_t *svc, void *ud, char *err, size_t err_len)
{
    cache_config_t *cfg = ud;
    engine_config_t ec;
    engine_config_init(&ec);
    ec.l1_bytes = (size_t)cfg->l1_bytes;
    ec.default_ttl_s = (uint32_t)cfg->ttl_s;
    ec.max_ttl_s = (uint32_t)cfg->max_ttl_s;
    if (ec.default_ttl_s > ec.max_ttl_s)
        ec.default_ttl_s = ec.max_ttl_s;
    ec.max_value_bytes = (size_t)cfg->max_value_bytes;
    ec.semantic = cfg->semantic;
    ec.semantic_threshold = (float)cfg->semantic_threshold;
    ec.semantic_guards = cfg->semantic_guards;
    ec.semantic_max_per_scope = (size_t)cfg->semantic_max_entries;
    ec.semantic_max_scopes = (size_t)cfg->semantic_max_scopes;
    ec.embed_dim = (size_t)cfg->embed_dim;
    ec.wordnet = cfg->wordnet;
    ec.stem = cfg->stem;
    if (strcmp(cfg->embedder, "model") == 0) {
        ec.embedder = ENGINE_EMBED_MODEL;
        ec.embed_model.target = cfg->embed_target;
        ec.embed_model.model = cfg->embed_model;
        ec.embed_model.timeout_ms = cfg->embed_timeout_ms;
        ec.embed_model.channel = svc_upstream_channel(svc); /* --upstream-tls-* */
    }
    ec.gen_refresh_us = cfg->generation_refresh_ms * 1000;
    ec.breaker_threshold = (int)cfg->breaker_failures;
    ec.probe_interval_us = cfg->probe_interval_ms * 1000;
    ec.pool.workers = (int)cfg->workers;
    ec.pool.max_queue = (size_t)cfg->max_queue;
    ec.pool.mc.servers = cfg->memcached;
    ec.pool.mc.connect_timeout_ms = cfg->memcached_timeout_ms;
    ec.pool.mc.io_timeout_ms = cfg->memcached_timeout_ms;
    ec.reporter = svc_reporter(svc);
    cfg->engine = engine_create(&ec);
    if (!cfg->engine) {
        ls_set_err(err, err_len, "cannot create the cache engine");
        return LS_ERR_INTERNAL;
    }
    cfg->models_list = split_models(cfg->models, &cfg->n_models);
    cfg->session = (session_config_t){
        .engine = cfg->engine,
        .limits = {.max_key_bytes = (size_t)cfg->max_key_bytes,
                   .models = (const char *const *)cfg->models_list,
                   .n_models = cfg->n_models},
        .max_in_flight = (size_t)cfg->max_in_flight,
        .tracer = svc_tracer(svc),
    };
    int rc = rpc_server_add_method(svc_server(svc), SESSION_METHOD, RPC_STREAM,
                                   &llmserve__v1__cache_request__descriptor, &session_handler,
                                   &cfg->session);
    if (rc != LS_OK) {
        ls_set_err(err, err_len, "cannot register %s", SESSION_METHOD);
        engine_destroy(cfg->engine);
        return rc;
    }
    svc_add_meta(svc, "tiers",
                 cfg->l1_bytes > 0 ? (cfg->semantic ? "l1,memcached,semantic" : "l1,memcached")
                                   : (cfg->semantic ? "memcached,semantic" : "memcached"));
    return LS_OK;
}

static void cache_destroy(svc_t *svc, void *ud)
{
    (void)svc;
    cache_config_t *cfg = ud;
    /* Workers may still hold call references: they finish before the server goes. */
    engine_shutdown(cfg->engine);
    engine_destroy(cfg->engine);
    for (size_t i = 0; i < cfg->n_models; i++)
        free(cfg->models_list[i]);
    free(cfg->models_list);
}

int main(int argc, char **argv)
{
    static cache_config_t cfg;
    cache_config_init(&cfg);
    const ls_opt_t opts[] = {
        {"memcached", "LIBMEMCACHED", LS_OPT_STRING, &cfg.memcached,
         "memcached servers as a libmemcached config string, e.g. "
         "'--SERVER=10.0.0.1:11211 --SERVER=10.0.0.2:11211' (consistent hashing)",
         0, 0},
        {"memcached-timeout-ms", NULL, LS_OPT_INT, &cfg.memcached_timeout_ms,
         "memcached connect and I/O timeout, milliseconds", 1, 60000},
        {"workers", NULL, LS_OPT_INT, &cfg.workers, "threads that talk to memcached", 1, 256},
        {"max-queue", NULL, LS_OPT_INT, &cfg.max_queue,
         "requests waiting for a worker before RESOURCE_EXHAUSTED", 1, 1e7},
        {"l1-bytes", NULL, LS_OPT_INT, &cfg.l1_bytes, "in-process L1 size in bytes, 0 = off", 0,
         1e12},
        {"ttl", NULL, LS_OPT_INT, &cfg.ttl_s,
         "default answer lifetime in seconds (a store may name its own)", 1, 2592000},
        {"max-ttl", NULL, LS_OPT_INT, &cfg.max_ttl_s,
         "longest answer lifetime in seconds; longer requests are clamped", 1, 2592000},
        {"max-value-bytes", NULL, LS_OPT_INT, &cfg.max_value_bytes,
         "largest stored answer in bytes (encoded); larger ones are not stored", 64, 1e9},
        {"max-key-bytes", NULL, LS_OPT_INT, &cfg.max_key_bytes,
         "largest prompt (or sum of message contents) in bytes; larger is INVALID_ARGUMENT", 1,
         1e9},
        {"models", NULL, LS_OPT_STRING, &cfg.models,
         "comma-separated models the cache accepts (others: NOT_FOUND); empty = any", 0, 0},
        {"semantic", NULL, LS_OPT_BOOL, &cfg.semantic, "semantic cache (--no-semantic: exact only)",
         0, 0},
        {"semantic-threshold", NULL, LS_OPT_DOUBLE, &cfg.semantic_threshold,
         "least cosine similarity for a semantic hit, (0, 1]", 0.01, 1},
        {"semantic-guards", NULL, LS_OPT_BOOL, &cfg.semantic_guards,
         "turn down a semantic hit whose prompt differs in a number, unit, negation, name or "
         "direction (--no-semantic-guards: similarity alone)",
         0, 0},
        {"semantic-max-entries", NULL, LS_OPT_INT, &cfg.semantic_max_entries,
         "semantic entries per (tenant, model, params) scope", 1, 1e6},
        {"semantic-max-scopes", NULL, LS_OPT_INT, &cfg.semantic_max_scopes,
         "semantic scopes held (least recently used go)", 1, 1e7},
        {"embed-dim", NULL, LS_OPT_INT, &cfg.embed_dim,
         "n-gram hash space: buckets the prompt features are hashed into, a power of two "
         "(vectors are kept sparse, so a big space costs no memory; a small one makes "
         "features collide)",
         64, 16777216},
        {"wordnet", NULL, LS_OPT_STRING, &cfg.wordnet,
         "WordNet dictionary for the n-gram semantic keys' lemmas, spelling and synonyms: auto "
         "(/usr/share/wordnet when present), none, or a directory",
         0, 0},
        {"stem", NULL, LS_OPT_BOOL, &cfg.stem,
         "Snowball English stems in the n-gram semantic keys (--no-stem: words as written)", 0,
         0},
        {"embedder", NULL, LS_OPT_STRING, &cfg.embedder,
         "semantic embeddings: ngram (hashed word and character n-grams, no model) or model "
         "(Inference.Embed of --embed-target: the served model's token embedding table; the "
         "index takes its dim)",
         0, 0},
        {"embed-target", NULL, LS_OPT_STRING, &cfg.embed_target,
         "llmserve-inference HOST:PORT for --embedder model (TLS as --upstream-tls-*); it must "
         "answer at start",
         0, 0},
        {"embed-model", NULL, LS_OPT_STRING, &cfg.embed_model,
         "model --embedder model asks for; empty = whatever --embed-target serves at start "
         "(then pinned)",
         0, 0},
        {"embed-timeout-ms", NULL, LS_OPT_INT, &cfg.embed_timeout_ms,
         "deadline of each Embed call, ms (and how long start waits for the target)", 1, 600000},
        {"generation-refresh-ms", NULL, LS_OPT_INT, &cfg.generation_refresh_ms,
         "how long a model's key generation is trusted before re-reading memcached, ms", 1, 3.6e6},
        {"breaker-failures", NULL, LS_OPT_INT, &cfg.breaker_failures,
         "memcached failures in a row that mark a server down (degraded)", 1, 1000},
        {"probe-interval-ms", NULL, LS_OPT_INT, &cfg.probe_interval_ms,
         "how often a down memcached server is tried, ms", 10, 600000},
        {"max-in-flight", NULL, LS_OPT_INT, &cfg.max_in_flight,
         "requests at workers per stream before RESOURCE_EXHAUSTED", 1, 1e6},
    };
    /* The names before the service runtime: still read, with a warning. */
    static const ls_alias_t aliases[] = {
        {"--threads", "rpc-threads"},
        {"CACHE_LISTEN", "listen"},
        {"CACHE_THREADS", "rpc-threads"},
        {"CACHE_GRACE_MS", "grace-ms"},
        {"CACHE_MEMCACHED_TIMEOUT_MS", "memcached-timeout-ms"},
        {"CACHE_WORKERS", "workers"},
        {"CACHE_MAX_QUEUE", "max-queue"},
        {"CACHE_TTL", "ttl"},
        {"CACHE_MAX_TTL", "max-ttl"},
        {"CACHE_MAX_VALUE_BYTES", "max-value-bytes"},
        {"CACHE_MAX_KEY_BYTES", "max-key-bytes"},
        {"CACHE_MODELS", "models"},
        {"CACHE_SEMANTIC", "semantic"},
        {"CACHE_SEMANTIC_THRESHOLD", "semantic-threshold"},
        {"CACHE_SEMANTIC_MAX_ENTRIES", "semantic-max-entries"},
        {"CACHE_SEMANTIC_MAX_SCOPES", "semantic-max-scopes"},
        {"CACHE_EMBED_DIM", "embed-dim"},
        {"CACHE_GENERATION_REFRESH_MS", "generation-refresh-ms"},
        {"CACHE_BREAKER_FAILURES", "breaker-failures"},
        {"CACHE_PROBE_INTERVAL_MS", "probe-interval-ms"},
        {"CACHE_MAX_IN_FLIGHT", "max-in-flight"},
        {"CACHE_L1_BYTES", "l1-bytes"},
    };
    svc_spec_t spec = {
        .service = "cache",
        .upstreams = true, /* it calls the metrics collector (--metrics) */
        .program = "llmserve-cache",
        .summary = "Answer cache: in-process L1, memcached, semantic index (Cache.Session).",
        .default_listen = "0.0.0.0:50052",
        .default_rpc_threads = 0,
        .default_grace_ms = 2000,
        .flush_ms = 1000,
        .opts = opts,
        .n_opts = sizeof(opts) / sizeof(opts[0]),
        .aliases = aliases,
        .n_aliases = sizeof(aliases) / sizeof(aliases[0]),
        .hooks = {.check = cache_check, .create = cache_create, .destroy = cache_destroy},
        .ud = &cfg,
    };
    return svc_main(&spec, argc, argv);
}
