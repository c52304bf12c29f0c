/*
 * main.c - llmserve-router: reads the configuration, creates the router and its server,
 * prints "LISTENING port=N", serves until SIGTERM/SIGINT, and shuts down.
 */
#define _GNU_SOURCE
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "base/signals.h"
#include "discovery.h"
#include "router.h"
#include "rpc/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *listen;
    const char *pools;
    int64_t threads;
    int64_t grace_ms;
    int64_t ready_timeout_ms;
    const char *log_level;
} main_config_t;

/* --pool may be given many times; ls_config keeps only the last value of a flag, so the
 * occurrences are joined here (with ';', the spec's own separator) and taken out of argv
 * before ls_config_load sees it.  Returns the joined spec (caller frees) or NULL. */
static char *take_pool_flags(int *argc, char **argv)
{
    char *joined = NULL;
    size_t len = 0;
    int w = 1;
    for (int i = 1; i < *argc; i++) {
        const char *v = NULL;
        if (strcmp(argv[i], "--pool") == 0 && i + 1 < *argc)
            v = argv[++i];
        else if (strncmp(argv[i], "--pool=", 7) == 0)
            v = argv[i] + 7;
        if (!v) {
            argv[w++] = argv[i];
            continue;
        }
        size_t n = strlen(v);
        char *j = realloc(joined, len + n + 2);
        if (!j) {
            free(joined);
            return NULL;
        }
        joined = j;
        if (len)
            joined[len++] = ';';
        memcpy(joined + len, v, n + 1);
        len += n;
    }
    *argc = w;
    argv[w] = NULL;
    return joined;
}

int main(int argc, char **argv)
{
    main_config_t mc = {"127.0.0.1:0", NULL, 0, 5000, 10000, NULL};
    router_config_t rc;
    router_config_init(&rc);
    router_scorer_config_t *sc = &rc.scorer;
    const ls_opt_t opts[] = {
        {"listen", "ROUTER_LISTEN", LS_OPT_STRING, &mc.listen,
         "address to serve on, host:port (port 0: any free port)", 0, 0},
        {"pool", "ROUTER_POOLS", LS_OPT_STRING, &mc.pools,
         "inference instances, NAME[@VERSION[:WEIGHT]]=HOST:PORT[,HOST:PORT...]; repeat the "
         "flag or separate entries with ';'",
         0, 0},
        {"default-pool", "ROUTER_DEFAULT_POOL", LS_OPT_STRING, &rc.default_pool,
         "pool for prompts below every tier, and the fallback of the others", 0, 0},
        {"tiers", "ROUTER_TIERS", LS_OPT_STRING, &rc.tiers,
         "complexity tiers POOL=THRESHOLD,...: a score >= THRESHOLD goes to POOL (highest wins)",
         0, 0},
        {"pool-fallback", "ROUTER_POOL_FALLBACK", LS_OPT_STRING, &rc.pool_fallback,
         "fallbacks POOL=FALLBACK|none,... (default: every pool falls back to --default-pool)",
         0, 0},
        {"ttft-budget-ms", "ROUTER_TTFT_BUDGET_MS", LS_OPT_INT, &rc.ttft_budget_ms,
         "ms a pool with a fallback has for the first token before the fallback takes over "
         "(0 = no budget)",
         0, 3600000},
        {"pool-ttft-ms", "ROUTER_POOL_TTFT_MS", LS_OPT_STRING, &rc.pool_ttft_ms,
         "per-pool TTFT budgets POOL=MS,... overriding --ttft-budget-ms", 0, 0},
        {"cache", "ROUTER_CACHE", LS_OPT_STRING, &rc.cache,
         "cache instances HOST:PORT,... (empty: no cache)", 0, 0},
        {"cache-timeout-ms", "ROUTER_CACHE_TIMEOUT_MS", LS_OPT_INT, &rc.cache_timeout_ms,
         "ms a cache lookup may take before it counts as a miss", 1, 60000},
        {"cache-ttl", "ROUTER_CACHE_TTL", LS_OPT_INT, &rc.cache_ttl_s,
         "seconds stored answers live (0: the cache's default)", 0, 365 * 86400.0},
        {"cache-semantic", "ROUTER_CACHE_SEMANTIC", LS_OPT_BOOL, &rc.cache_semantic,
         "allow semantic cache hits and index stored prompts", 0, 0},
        {"cache-replay-events", "ROUTER_CACHE_REPLAY_EVENTS", LS_OPT_INT,
         &rc.cache_replay_events,
         "token events a cache hit is replayed as, at most: 1 sends the whole answer at once "
         "(fastest); more replays it token by token as first streamed, ids included, runs of "
         "tokens per event beyond that many (each event is one write to the client)",
         1, 256},
        {"request-timeout-ms", "ROUTER_REQUEST_TIMEOUT_MS", LS_OPT_INT, &rc.request_timeout_ms,
         "deadline of a request that sets none, ms", 1, 86400000},
        {"default-max-tokens", "ROUTER_DEFAULT_MAX_TOKENS", LS_OPT_INT, &rc.default_max_tokens,
         "max_tokens of a request that sets 0 (also in the cache key)", 1, 1 << 20},
        {"max-retries", "ROUTER_MAX_RETRIES", LS_OPT_INT, &rc.max_retries,
         "tries on other instances after a failure, before the first token", 0, 7},
        {"max-in-flight", "ROUTER_MAX_IN_FLIGHT", LS_OPT_INT, &rc.max_in_flight,
         "requests in flight per client stream", 1, 1 << 20},
        {"max-prompt-bytes", "ROUTER_MAX_PROMPT_BYTES", LS_OPT_INT, &rc.max_prompt_bytes,
         "bytes of prompt plus messages per request", 1, 64 << 20},
        {"max-affinity", "ROUTER_MAX_AFFINITY", LS_OPT_INT, &rc.max_affinity,
         "conversations remembered for instance affinity", 0, 1e9},
        {"seed", "ROUTER_SEED", LS_OPT_INT, &rc.seed,
         "seed of the version split (0: from the clock)", 0, 0},
        {"w-length", "ROUTER_W_LENGTH", LS_OPT_DOUBLE, &sc->w_length,
         "scorer weight of prompt length", 0, 100},
        {"w-code", "ROUTER_W_CODE", LS_OPT_DOUBLE, &sc->w_code, "scorer weight of code cues", 0,
         100},
        {"w-math", "ROUTER_W_MATH", LS_OPT_DOUBLE, &sc->w_math, "scorer weight of math cues", 0,
         100},
        {"w-reasoning", "ROUTER_W_REASONING", LS_OPT_DOUBLE, &sc->w_reasoning,
         "scorer weight of reasoning cues", 0, 100},
        {"w-questions", "ROUTER_W_QUESTIONS", LS_OPT_DOUBLE, &sc->w_questions,
         "scorer weight of several questions", 0, 100},
        {"w-depth", "ROUTER_W_DEPTH", LS_OPT_DOUBLE, &sc->w_depth,
         "scorer weight of conversation depth", 0, 100},
        {"length-chars", "ROUTER_LENGTH_CHARS", LS_OPT_DOUBLE, &sc->length_chars,
         "characters that make the length feature 1", 1, 1e9},
        {"depth-messages", "ROUTER_DEPTH_MESSAGES", LS_OPT_DOUBLE, &sc->depth_messages,
         "messages beyond the first that make the depth feature 1", 1, 1e6},
        {"threads", "ROUTER_THREADS", LS_OPT_INT, &mc.threads,
         "server completion-queue threads (0: one per core)", 0, 256},
        {"client-threads", "ROUTER_CLIENT_THREADS", LS_OPT_INT, &rc.client_threads,
         "threads driving the upstream streams", 1, 64},
        {"grace-ms", "ROUTER_GRACE_MS", LS_OPT_INT, &mc.grace_ms,
         "ms requests in flight may take to finish at shutdown", 0, 3600000},
        {"ready-timeout-ms", "ROUTER_READY_TIMEOUT_MS", LS_OPT_INT, &mc.ready_timeout_ms,
         "ms to wait at start for every instance (and cache) to be connected; then serve "
         "anyway, with a warning when a pool has none",
         0, 3600000},
        {"log-level", "LLMSERVE_LOG_LEVEL", LS_OPT_STRING, &mc.log_level,
         "debug, info, warn or error", 0, 0},
    };
    ls_config_t conf = {.program = "llmserve-router", .summary = "The llmserve front door: scores prompts, consults the cache, routes to "
                        "pools of inference instances, relays tokens.", .opts = opts, .n_opts = sizeof(opts) / sizeof(opts[0])};
    char *pools_flag = take_pool_flags(&argc, argv);
    char err[512];
    int rc_load = ls_config_load(&conf, argc, argv, err, sizeof(err));
    if (rc_load == LS_CONFIG_HELP) {
        free(pools_flag);
        return 0;
    }
    if (rc_load != LS_OK) {
        fprintf(stderr, "llmserve-router: %s\n", err);
        free(pools_flag);
        return 2;
    }
    if (pools_flag)
        mc.pools = pools_flag;
    if (mc.log_level) {
        ls_log_level_t lvl;
        if (!ls_log_parse_level(mc.log_level, &lvl)) {
            fprintf(stderr, "llmserve-router: --log-level '%s' is not debug/info/warn/error\n",
                    mc.log_level);
            free(pools_flag);
            return 2;
        }
        ls_log_set_level(lvl);
    }
    discovery_t *disc = discovery_static_create(mc.pools, err, sizeof(err));
    if (!disc) {
        fprintf(stderr, "llmserve-router: --pool: %s\n", err);
        free(pools_flag);
        return 2;
    }
    ls_signals_block();
    ls_config_log(&conf, "router");

    router_t *router = router_create(&rc, disc, err, sizeof(err));
    if (!router) {
        fprintf(stderr, "llmserve-router: %s\n", err);
        free(pools_flag);
        return 2;
    }
    if (mc.ready_timeout_ms > 0 && !router_wait_ready(router, mc.ready_timeout_ms))
        LS_LOG_WARN("router", "not every pool is connected yet; serving anyway");

    rpc_server_config_t scfg;
    rpc_server_config_init(&scfg);
    scfg.threads = (int)mc.threads;
    scfg.name = "router";
    rpc_server_t *srv = rpc_server_create(&scfg);
    int port = 0;
    if (!srv || rpc_server_listen(srv, mc.listen, NULL, &port) != LS_OK ||
        router_register(router, srv) != LS_OK || rpc_server_start(srv) != LS_OK) {
        fprintf(stderr, "llmserve-router: cannot serve on %s\n", mc.listen);
        rpc_server_destroy(srv);
        router_destroy(router);
        free(pools_flag);
        return 1;
    }
    printf("LISTENING port=%d\n", port);
    fflush(stdout);

    int sig = ls_signals_wait();
    LS_LOG_INFO("router", "stopping signal=%d", sig);
    rpc_server_shutdown(srv, mc.grace_ms);
    rpc_server_destroy(srv);
    router_destroy(router);
    free(pools_flag);
    return 0;
}
