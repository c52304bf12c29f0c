#define _GNU_SOURCE
#include "suite.h"

#include "channel.h"
#include "net.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

/* An argument vector under construction; strings are borrowed. */
typedef struct {
    char *v[64];
    int n;
} args_t;

static void push(args_t *a, const char *arg)
{
    cr_assert_lt(a->n, 63, "too many arguments for %s", a->v[0]);
    a->v[a->n++] = (char *)arg;
    a->v[a->n] = NULL;
}

static void push_all(args_t *a, const char *const *extra)
{
    for (; extra && *extra; extra++)
        push(a, *extra);
}

static void start_inference(test_proc_t *p, const suite_opts_t *o, const char *pool,
                            const char *file, const char *name)
{
    const char *dir = test_env_path("LLMSERVE_ROUTER_MODELS");
    char model[512], tok[512];
    snprintf(model, sizeof(model), "%s/%s", dir, file);
    snprintf(tok, sizeof(tok), "%s/tok.bin", dir);
    args_t a = {.n = 0};
    push(&a, test_env_path("LLMSERVE_INFERENCE_BIN"));
    const char *const base[] = {
        "--listen",     "127.0.0.1:0", "--model",       model, "--tokenizer", tok,   "--pool", pool,
        "--model-name", name,          "--cpu-threads", "1",   "--grace-ms",  "500", NULL};
    push_all(&a, base);
    /* the slow model's long context: room for four whole sequences, which every test has
     * enough of, rather than the default max batch's worth */
    if (strcmp(file, "slow.bin") == 0) {
        push(&a, "--kv-budget-tokens");
        push(&a, "8192");
    }
    push_all(&a, o->inference_args);
    cr_assert_eq(test_proc_start(p, a.v, 60000), 0, "inference %s did not start", pool);
}

/* Appends "name=addr,addr" (after ";" unless first) to pools. */
static void add_pool(char *pools, size_t cap, const char *name, const test_proc_t *inst, int n)
{
    size_t used = strlen(pools);
    used += (size_t)snprintf(pools + used, cap - used, "%s%s=", used ? ";" : "", name);
    for (int i = 0; i < n && used < cap; i++)
        used += (size_t)snprintf(pools + used, cap - used, "%s127.0.0.1:%d", i ? "," : "",
                                 inst[i].port);
    cr_assert_lt(used, cap, "pool list too long");
}

void suite_start(suite_t *s, const suite_opts_t *o)
{
    cr_assert(o->n_small >= 1 && o->n_small <= SUITE_MAX_INST, "n_small %d", o->n_small);
    cr_assert(o->n_large >= 0 && o->n_large <= SUITE_MAX_INST, "n_large %d", o->n_large);
    memset(s, 0, sizeof(*s));
    s->n_small = o->n_small;
    s->n_large = o->n_large;
    char pools[1024] = "";
    for (int i = 0; i < o->n_small; i++)
        start_inference(&s->small[i], o, "small", "small.bin", "tiny-small");
    add_pool(pools, sizeof(pools), "small", s->small, o->n_small);
    for (int i = 0; i < o->n_large; i++)
        start_inference(&s->large[i], o, "large", o->slow_large ? "slow.bin" : "large.bin",
                        o->slow_large ? "slow-large" : "tiny-large");
    if (o->n_large)
        add_pool(pools, sizeof(pools), "large", s->large, o->n_large);

    char cache_addr[TEST_ADDR_LEN] = "";
    if (o->cache) {
        cr_assert_eq(test_memcached_start(&s->memcached, 0), 0, "memcached did not start");
        char server[64];
        args_t a = {.n = 0};
        push(&a, test_env_path("LLMSERVE_CACHE_BIN"));
        push(&a, "--listen");
        push(&a, "127.0.0.1:0");
        push(&a, "--memcached");
        push(&a, test_memcached_config(&s->memcached, server, sizeof(server)));
        push_all(&a, o->cache_args);
        cr_assert_eq(test_proc_start(&s->cache, a.v, 60000), 0, "cache did not start");
        test_addr(cache_addr, s->cache.port);
    }

    args_t a = {.n = 0};
    push(&a, test_env_path("LLMSERVE_ROUTER_BIN"));
    const char *const base[] = {
        "--listen", "127.0.0.1:0", "--pool", pools,    "--cache", cache_addr, "--ttft-budget-ms",
        "3000",     "--grace-ms",  "500",    "--seed", "1",       NULL};
    push_all(&a, base);
    if (!o->n_large) {
        push(&a, "--tiers");
        push(&a, "");
    }
    push_all(&a, o->router_args);
    cr_assert_eq(test_proc_start(&s->router, a.v, 60000), 0, "router did not start");

    s->client = rpc_client_create(1);
    s->ch = test_channel_to(s->client, s->router.port, o->channel);
    cr_assert_not_null(s->ch, "no channel to the router (TLS files?)");
    s->call =
        (rpc_call_opts_t){.wait_for_ready = true, .timeout_us = 120000000, .metadata = o->metadata};
}

const rpc_call_opts_t *suite_call_opts(const suite_t *s)
{
    return &s->call;
}

test_proc_t *suite_instance(suite_t *s, const char *addr)
{
    char a[TEST_ADDR_LEN];
    for (int i = 0; i < s->n_large; i++)
        if (strcmp(test_addr(a, s->large[i].port), addr) == 0)
            return &s->large[i];
    for (int i = 0; i < s->n_small; i++)
        if (strcmp(test_addr(a, s->small[i].port), addr) == 0)
            return &s->small[i];
    cr_assert_fail("no instance at %s", addr);
    return NULL;
}

void suite_freeze(test_proc_t *p)
{
    cr_assert_eq(test_proc_freeze(p), 0, "cannot freeze pid %d", (int)p->pid);
}

void suite_thaw(test_proc_t *p)
{
    test_proc_thaw(p);
}

void suite_kill(test_proc_t *p)
{
    test_proc_stop(p, SIGKILL, 30000);
}

static void destroy_client(suite_t *s)
{
    rpc_channel_destroy(s->ch);
    s->ch = NULL;
    rpc_client_destroy(s->client);
    s->client = NULL;
}

/* SIGCONT (a test may have frozen it), then SIGTERM; returns the exit status. */
static int stop_proc(test_proc_t *p)
{
    test_proc_thaw(p);
    return test_proc_stop(p, SIGTERM, 30000);
}

void suite_end(suite_t *s)
{
    destroy_client(s);
    if (s->router.pid > 0) {
        int st = stop_proc(&s->router);
        cr_assert_eq(st, 0, "router exit status %d (leak or crash at shutdown?)", st);
    }
    suite_stop(s);
}

void suite_stop(suite_t *s)
{
    if (s->stopped)
        return;
    s->stopped = true;
    destroy_client(s);
    if (s->router.pid > 0) {
        int st = stop_proc(&s->router);
        cr_expect_eq(st, 0, "router exit status %d (leak or crash at shutdown?)", st);
    }
    for (int i = 0; i < s->n_small; i++)
        if (s->small[i].pid > 0)
            stop_proc(&s->small[i]);
    for (int i = 0; i < s->n_large; i++)
        if (s->large[i].pid > 0)
            stop_proc(&s->large[i]);
    if (s->cache.pid > 0)
        stop_proc(&s->cache);
    test_memcached_stop(&s->memcached, SIGTERM);
}
