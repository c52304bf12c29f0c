/*
 * main.c - llmserve-router: its options and its wiring for the service runtime
 * (libs/svc): a discovery source (the static pool list, the same list's names resolved by
 * DNS, or Consul configured from Consul's own environment variables), the router object,
 * its methods; start waits (bounded) for the instances and caches to be connected.
 */
#define _GNU_SOURCE
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "consul/consul.h"
#include "discovery.h"
#include "discovery_consul.h"
#include "discovery_dns.h"
#include "router.h"
#include "rpc/server.h"
#include "svc/svc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    ls_strlist_t pools;
    int64_t ready_timeout_ms;
    router_config_t rc;
    const char *discovery;            /* "static", "consul", "dns" or "auto" */
    discovery_consul_config_t consul; /* service names and waits */
    discovery_dns_config_t dns;       /* refresh period (names: --pool, --cache) */
    bool use_consul, use_dns;         /* --discovery as resolved by the check */
    consul_config_t consul_env;       /* from Consul's variables, with use_consul */
    bool consul_env_read;
    consul_t *consul_client;
    char *pool_spec; /* the --pool values joined with ';' */
    router_t *router;
} main_config_t;

/* auto: Consul when it is configured and no pool is given.  The service runtime will
 * have its own say on whether Consul is on (a common --consul flag); until then
 * CONSUL_HTTP_ADDR is what tells. */
static int resolve_discovery(main_config_t *mc, char *err, size_t err_len)
{
    const char *d = mc->discovery ? mc->discovery : "auto";
    if (strcmp(d, "auto") == 0 || !d[0]) {
        const char *addr = getenv("CONSUL_HTTP_ADDR");
        mc->use_consul = mc->pools.n == 0 && addr && addr[0];
    } else if (strcmp(d, "consul") == 0 || strcmp(d, "static") == 0 || strcmp(d, "dns") == 0) {
        mc->use_consul = strcmp(d, "consul") == 0;
        mc->use_dns = strcmp(d, "dns") == 0;
    } else {
        ls_set_err(err, err_len, "--discovery: '%s' is not static, consul, dns or auto", d);
        return LS_ERR_INVALID;
    }
    return LS_OK;
}

/* Consul's settings: service names, and its environment (read here so that a bad
 * variable stops the start with the others). */
static int check_consul(main_config_t *mc, char *err, size_t err_len)
{
    if (mc->pools.n > 0) {
        ls_set_err(err, err_len,
                   "--pool and --discovery consul exclude each other: the instances come from "
                   "Consul");
        return LS_ERR_INVALID;
    }
    if (!mc->consul.inference_service || !mc->consul.inference_service[0]) {
        ls_set_err(err, err_len, "--consul-inference-service: a service name is needed");
        return LS_ERR_INVALID;
    }
    if (mc->consul.cache_service && strcmp(mc->consul.cache_service, "none") == 0)
        mc->consul.cache_service = "";
    char why[300];
    if (consul_config_from_env(&mc->consul_env, why, sizeof(why)) != LS_OK) {
        ls_set_err(err, err_len, "Consul's environment: %s", why);
        return LS_ERR_INVALID;
    }
    mc->consul_env_read = true;
    return LS_OK;
}

/* Which discovery, and with static discovery the pool list's syntax, before anything
 * starts (the policy is checked against the pools at create). */
static int router_check_hook(svc_t *svc, void *ud, char *err, size_t err_len)
{
    (void)svc;
    main_config_t *mc = ud;
    int rc = resolve_discovery(mc, err, err_len);
    if (rc != LS_OK)
        return rc;
    if (mc->use_consul)
        return check_consul(mc, err, err_len);
    if (mc->pools.n == 0) {
        ls_set_err(err, err_len,
                   "--pool: no inference instance given (or --discovery consul, with Consul's "
                   "CONSUL_HTTP_ADDR)");
        return LS_ERR_INVALID;
    }
    char *spec = ls_strlist_join(&mc->pools, ";");
    if (!spec) {
        ls_set_err(err, err_len, "out of memory");
        return LS_ERR_NOMEM;
    }
    discovery_instance_t *list = NULL;
    size_t n = 0;
    char why[512];
    rc = discovery_static_parse(spec, &list, &n, why, sizeof(why));
    if (rc == LS_OK && n == 0) {
        snprintf(why, sizeof(why), "no inference instance given");
        rc = LS_ERR_INVALID;
    }
    if (rc != LS_OK)
        ls_set_err(err, err_len, "--pool: %s", why);
    discovery_list_free(list, n);
    if (rc == LS_OK && mc->use_dns) {
        /* The cache names and the period too; nothing is resolved yet. */
        mc->dns.pools = spec;
        mc->dns.caches = mc->rc.cache;
        discovery_t *d = discovery_dns_create(&mc->dns, why, sizeof(why));
        if (!d) {
            ls_set_err(err, err_len, "--discovery dns: %s", why);
            rc = LS_ERR_INVALID;
        }
        discovery_destroy(d);
        mc->dns.pools = NULL;
    }
    free(spec);
    return rc;
}

/* The discovery source --discovery chose into *out; LS_OK, or an error (LS_ERR_INVALID
 * for a bad pool list) with a reason in err. */
static int make_discovery(main_config_t *mc, discovery_t **out, char *err, size_t err_len)
{
    char why[512];
    if (!mc->use_consul) {
        mc->pool_spec = ls_strlist_join(&mc->pools, ";");
        if (!mc->pool_spec) {
            ls_set_err(err, err_len, "out of memory");
            return LS_ERR_NOMEM;
        }
        if (mc->use_dns) {
            /* The source resolves the cache names and hands the router their list. */
            mc->dns.pools = mc->pool_spec;
            mc->dns.caches = mc->rc.cache;
            mc->rc.cache = "";
            LS_LOG_INFO("router", "discovery from dns pools=\"%s\" caches=\"%s\" refresh_ms=%lld",
                        mc->pool_spec, mc->dns.caches ? mc->dns.caches : "",
                        (long long)mc->dns.refresh_ms);
            *out = discovery_dns_create(&mc->dns, why, sizeof(why));
        } else {
            *out = discovery_static_create(mc->pool_spec, why, sizeof(why));
        }
        if (!*out) {
            ls_set_err(err, err_len, "--pool: %s", why);
            return LS_ERR_INVALID;
        }
        return LS_OK;
    }
    mc->consul_client = consul_create(&mc->consul_env);
    if (!mc->consul_client) {
        ls_set_err(err, err_len, "cannot start the Consul client");
        return LS_ERR_INTERNAL;
    }
    bool watch_caches = !(mc->rc.cache && mc->rc.cache[0]) && mc->consul.cache_service[0];
    LS_LOG_INFO("router",
                "discovery from consul agent=%s inference_service=%s cache_service=%s wait_ms=%lld "
                "wait_first_ms=%lld",
                consul_where(mc->consul_client), mc->consul.inference_service,
                watch_caches ? mc->consul.cache_service : "(not watched)",
                (long long)mc->consul.wait_ms, (long long)mc->consul.wait_first_ms);
    *out = discovery_consul_create(mc->consul_client, &mc->consul);
    return LS_OK;
}

static void free_discovery_config(main_config_t *mc)
{
    consul_destroy(mc->consul_client); /* after the source that borrowed it */
    mc->consul_client = NULL;
    free(mc->pool_spec);
    mc->pool_spec = NULL;
}

static int router_create_hook(svc_t *svc, void *ud, char *err, size_t err_len)
{
    main_config_t *mc = ud;
    discovery_t *disc = NULL;
    int rc = make_discovery(mc, &disc, err, err_len);
    if (rc != LS_OK) {
        free_discovery_config(mc);
        return rc;
    }
    mc->rc.upstream = svc_upstream_channel(svc);
    mc->rc.reporter = svc_reporter(svc);
    mc->rc.tracer = svc_tracer(svc);
    char why[512];
    mc->router = router_create(&mc->rc, disc, why, sizeof(why));
    if (!mc->router) {
        ls_set_err(err, err_len, "%s", why);
        free_discovery_config(mc);
        return LS_ERR_INVALID;
    }
    if (router_register(mc->router, svc_server(svc)) != LS_OK) {
        ls_set_err(err, err_len, "cannot register llmserve.v1.Router");
        router_destroy(mc->router);
        free_discovery_config(mc);
        return LS_ERR_INTERNAL;
    }
    return LS_OK;
}

static int router_start_hook(svc_t *svc, void *ud, char *err, size_t err_len)
{
    (void)svc, (void)err, (void)err_len;
    main_config_t *mc = ud;
    if (mc->ready_timeout_ms > 0 && !router_wait_ready(mc->router, mc->ready_timeout_ms))
        LS_LOG_WARN("router", "not every pool is connected yet; serving anyway");
    return LS_OK;
}

static void router_drain_hook(svc_t *svc, void *ud, int64_t deadline_us)
{
    (void)svc;
    main_config_t *mc = ud;
    router_drain(mc->router, deadline_us);
}

static void router_destroy_hook(svc_t *svc, void *ud)
{
    (void)svc;
    main_config_t *mc = ud;
    router_destroy(mc->router); /* stops and destroys the discovery source */
    free_discovery_config(mc);
}

int main(int argc, char **argv)
{
    static main_config_t mc;
    mc.ready_timeout_ms = 10000;
    mc.discovery = "auto";
    discovery_consul_config_init(&mc.consul);
    discovery_dns_config_init(&mc.dns);
    router_config_t *rcp = &mc.rc;
    router_config_init(rcp);
    router_scorer_config_t *sc = &rcp->scorer;
    const ls_opt_t opts[] = {
        {"discovery", NULL, LS_OPT_STRING, &mc.discovery,
         "where the inference instances come from: static (--pool), consul (Consul's "
         "CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, ... variables), dns (--pool and --cache, every "
         "HOST a name whose addresses are all instances, resolved again every "
         "--dns-refresh-ms), or auto: consul when no --pool is given and CONSUL_HTTP_ADDR is "
         "set, else static",
         0, 0},
        {"pool", NULL, LS_OPT_LIST, &mc.pools,
         "inference instances, NAME[@VERSION[:WEIGHT]]=HOST:PORT[,HOST:PORT...]; repeat the "
         "flag or separate entries with ';' (static and dns discovery)",
         0, 0},
        {"dns-refresh-ms", NULL, LS_OPT_INT, &mc.dns.refresh_ms,
         "ms between resolutions of the names with --discovery dns; a name that fails keeps "
         "its last addresses",
         DISCOVERY_DNS_REFRESH_MIN_MS, 86400000},
        {"consul-inference-service", NULL, LS_OPT_STRING, &mc.consul.inference_service,
         "Consul service of the inference instances; each one's Meta pool (required), version "
         "and weight place it",
         0, 0},
        {"consul-cache-service", NULL, LS_OPT_STRING, &mc.consul.cache_service,
         "Consul service of the cache instances, watched when --cache is empty (empty or none: "
         "no cache discovery)",
         0, 0},
        {"consul-wait-ms", NULL, LS_OPT_INT, &mc.consul.wait_ms,
         "blocking wait of each Consul query, ms", 1, 600000},
        {"consul-wait-first-ms", NULL, LS_OPT_INT, &mc.consul.wait_first_ms,
         "ms to wait at start for Consul's first lists; then serve with what came (perhaps no "
         "instance) and keep watching",
         0, 600000},
        {"default-pool", NULL, LS_OPT_STRING, &rcp->default_pool,
         "pool for prompts below every tier, and the fallback of the others", 0, 0},
        {"tiers", NULL, LS_OPT_STRING, &rcp->tiers,
         "complexity tiers POOL=THRESHOLD,...: a score >= THRESHOLD goes to POOL (highest wins)", 0,
         0},
        {"pool-fallback", NULL, LS_OPT_STRING, &rcp->pool_fallback,
         "fallbacks POOL=FALLBACK|none,... (default: every pool falls back to --default-pool)", 0,
         0},
        {"ttft-budget-ms", NULL, LS_OPT_INT, &rcp->ttft_budget_ms,
         "ms a pool with a fallback has for the first token before the fallback takes over "
         "(0 = no budget)",
         0, 3600000},
        {"pool-ttft-ms", NULL, LS_OPT_STRING, &rcp->pool_ttft_ms,
         "per-pool TTFT budgets POOL=MS,... overriding --ttft-budget-ms", 0, 0},
        {"cache", NULL, LS_OPT_STRING, &rcp->cache,
         "cache instances HOST:PORT,... (every address of each HOST with dns discovery; empty: "
         "those of --consul-cache-service with Consul discovery, else no cache)",
         0, 0},
        {"cache-timeout-ms", NULL, LS_OPT_INT, &rcp->cache_timeout_ms,
         "ms a cache lookup may take before it counts as a miss", 1, 60000},
        {"cache-ttl", NULL, LS_OPT_INT, &rcp->cache_ttl_s,
         "seconds stored answers live (0: the cache's default)", 0, 365 * 86400.0},
        {"cache-semantic", NULL, LS_OPT_BOOL, &rcp->cache_semantic,
         "allow semantic cache hits and index stored prompts", 0, 0},
        {"cache-replay-events", NULL, LS_OPT_INT, &rcp->cache_replay_events,
         "token events a cache hit is replayed as, at most: 1 sends the whole answer at once "
         "(fastest); more replays it token by token as first streamed, ids included, runs of "
         "tokens per event beyond that many (each event is one write to the client)",
         1, 256},
        {"request-timeout-ms", NULL, LS_OPT_INT, &rcp->request_timeout_ms,
         "deadline of a request that sets none, ms", 1, 86400000},
        {"default-max-tokens", NULL, LS_OPT_INT, &rcp->default_max_tokens,
         "max_tokens of a request that sets 0 (also in the cache key)", 1, 1 << 20},
        {"max-retries", NULL, LS_OPT_INT, &rcp->max_retries,
         "tries on other instances after a failure, before the first token", 0, 7},
        {"queue-max", NULL, LS_OPT_INT, &rcp->queue_max,
         "requests waiting in the router for room, per pool, when every instance of the pool "
         "is at capacity (Inference.Info's max batch plus max queue); beyond it "
         "RESOURCE_EXHAUSTED with a retry hint; 0: no queue",
         0, 1 << 20},
        {"queue-wait-ms", NULL, LS_OPT_INT, &rcp->queue_wait_ms,
         "longest wait in that queue, ms; then the pool's fallback, else DEADLINE_EXCEEDED (a "
         "pool with a fallback waits at most its TTFT budget)",
         1, 86400000},
        {"max-in-flight", NULL, LS_OPT_INT, &rcp->max_in_flight,
         "requests in flight per client stream", 1, 1 << 20},
        {"max-prompt-bytes", NULL, LS_OPT_INT, &rcp->max_prompt_bytes,
         "bytes of prompt plus messages per request", 1, 64 << 20},
        {"max-affinity", NULL, LS_OPT_INT, &rcp->max_affinity,
         "conversations remembered for instance affinity", 0, 1e9},
        {"priority-aging-ms", NULL, LS_OPT_INT, &rcp->priority_aging_ms,
         "a request waiting in the router's queue counts one class higher (batch, normal, "
         "interactive) per full period of this many ms waited, so lower classes still "
         "progress; 0: never",
         0, 86400000},
        {"prefix-affinity-bytes", NULL, LS_OPT_INT, &rcp->prefix_affinity_bytes,
         "send requests whose first this many bytes match (a prompt's, or messages' through "
         "the first user message) to the same instance, for its prefix KV cache; 0: off",
         0, 1 << 20},
        {"prefix-affinity-slack", NULL, LS_OPT_INT, &rcp->prefix_affinity_slack,
         "outstanding requests beyond the least loaded instance's that a prefix's instance "
         "may have and still get the prefix's requests",
         0, 1 << 20},
        {"seed", NULL, LS_OPT_INT, &rcp->seed, "seed of the version split (0: from the clock)", 0,
         0},
        {"w-length", NULL, LS_OPT_DOUBLE, &sc->w_length, "scorer weight of prompt length", 0, 100},
        {"w-code", NULL, LS_OPT_DOUBLE, &sc->w_code, "scorer weight of code cues", 0, 100},
        {"w-math", NULL, LS_OPT_DOUBLE, &sc->w_math, "scorer weight of math cues", 0, 100},
        {"w-reasoning", NULL, LS_OPT_DOUBLE, &sc->w_reasoning, "scorer weight of reasoning cues", 0,
         100},
        {"w-questions", NULL, LS_OPT_DOUBLE, &sc->w_questions, "scorer weight of several questions",
         0, 100},
        {"w-depth", NULL, LS_OPT_DOUBLE, &sc->w_depth, "scorer weight of conversation depth", 0,
         100},
        {"length-chars", NULL, LS_OPT_DOUBLE, &sc->length_chars,
         "characters that make the length feature 1", 1, 1e9},
        {"depth-messages", NULL, LS_OPT_DOUBLE, &sc->depth_messages,
         "messages beyond the first that make the depth feature 1", 1, 1e6},
        {"upstream-threads", NULL, LS_OPT_INT, &rcp->client_threads,
         "threads driving the streams to the cache and inference instances", 1, 64},
        {"ready-timeout-ms", NULL, LS_OPT_INT, &mc.ready_timeout_ms,
         "ms to wait at start for every instance (and cache) to be connected; then serve "
         "anyway, with a warning when a pool has none",
         0, 3600000},
    };
    /* The names before the service runtime: still read, with a warning. */
    static const ls_alias_t aliases[] = {
        {"--threads", "rpc-threads"},
        {"--client-threads", "upstream-threads"},
        {"ROUTER_LISTEN", "listen"},
        {"ROUTER_THREADS", "rpc-threads"},
        {"ROUTER_GRACE_MS", "grace-ms"},
        {"ROUTER_POOLS", "pool"},
        {"ROUTER_CLIENT_THREADS", "upstream-threads"},
        {"ROUTER_DEFAULT_POOL", "default-pool"},
        {"ROUTER_TIERS", "tiers"},
        {"ROUTER_POOL_FALLBACK", "pool-fallback"},
        {"ROUTER_TTFT_BUDGET_MS", "ttft-budget-ms"},
        {"ROUTER_POOL_TTFT_MS", "pool-ttft-ms"},
        {"ROUTER_CACHE", "cache"},
        {"ROUTER_CACHE_TIMEOUT_MS", "cache-timeout-ms"},
        {"ROUTER_CACHE_TTL", "cache-ttl"},
        {"ROUTER_CACHE_SEMANTIC", "cache-semantic"},
        {"ROUTER_CACHE_REPLAY_EVENTS", "cache-replay-events"},
        {"ROUTER_REQUEST_TIMEOUT_MS", "request-timeout-ms"},
        {"ROUTER_DEFAULT_MAX_TOKENS", "default-max-tokens"},
        {"ROUTER_MAX_RETRIES", "max-retries"},
        {"ROUTER_MAX_IN_FLIGHT", "max-in-flight"},
        {"ROUTER_MAX_PROMPT_BYTES", "max-prompt-bytes"},
        {"ROUTER_MAX_AFFINITY", "max-affinity"},
        {"ROUTER_SEED", "seed"},
        {"ROUTER_W_LENGTH", "w-length"},
        {"ROUTER_W_CODE", "w-code"},
        {"ROUTER_W_MATH", "w-math"},
        {"ROUTER_W_REASONING", "w-reasoning"},
        {"ROUTER_W_QUESTIONS", "w-questions"},
        {"ROUTER_W_DEPTH", "w-depth"},
        {"ROUTER_LENGTH_CHARS", "length-chars"},
        {"ROUTER_DEPTH_MESSAGES", "depth-messages"},
        {"ROUTER_READY_TIMEOUT_MS", "ready-timeout-ms"},
    };
    svc_spec_t spec = {
        .service = "router",
        .program = "llmserve-router",
        .summary = "The llmserve front door: scores prompts, consults the cache, routes to pools "
                   "of inference instances, relays tokens.",
        .default_listen = "0.0.0.0:50051",
        .default_rpc_threads = 0,
        .default_grace_ms = 5000,
        .flush_ms = 1000,
        .upstreams = true,
        .api_keys = true,
        .opts = opts,
        .n_opts = sizeof(opts) / sizeof(opts[0]),
        .aliases = aliases,
        .n_aliases = sizeof(aliases) / sizeof(aliases[0]),
        .hooks = {.check = router_check_hook,
                  .create = router_create_hook,
                  .start = router_start_hook,
                  .drain = router_drain_hook,
                  .destroy = router_destroy_hook},
        .ud = &mc,
    };
    int status = svc_main(&spec, argc, argv);
    ls_strlist_free(&mc.pools); /* filled by the option parser, whatever happened next */
    if (mc.consul_env_read)
        consul_config_free(&mc.consul_env); /* read by the check, whatever happened next */
    return status;
}
