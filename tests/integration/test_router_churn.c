/*
 * test_router_churn.c - inference instances coming and going under load.
 *
 * The router runs in this process over a discovery source the test drives, in front of
 * two real inference processes (A and B, the tiny model of the router_models fixture),
 * served on loopback and called with Router.Generate by a few client streams that keep
 * requests in flight all along.  Meanwhile the instance list alternates {A}, {A, B},
 * {A}, ...: each time B is added the test waits until it is healthy and has started a
 * request, then removes it, so requests are in flight on B when it goes.
 *
 * Checked: every request ends with exactly one terminal event and none with an error;
 * the router keeps no connection of a removed instance; the process's resident memory
 * after all the cycles stays within a bound of what it was after a warm-up.  Under
 * AddressSanitizer resident memory says nothing (freed memory waits in its quarantine,
 * hundreds of MiB), so the bound applies to the heap in use as ASan counts it.
 *
 * LLMSERVE_CHURN_CYCLES sets the number of cycles (default 1000).
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "llmserve/v1/router.pb-c.h"
#include "router.h"
#include "router_int.h" /* what the router holds: r->pools, r->conns, r->reaper */
#include "rpc/client.h"
#include "rpc/server.h"
#include "support/channel.h"
#include "support/driven_discovery.h"
#include "support/proc.h"
#include "support/router_load.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define CHURN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHURN_ASAN 1
#endif
#endif
#ifdef CHURN_ASAN
size_t __sanitizer_get_current_allocated_bytes(void); /* sanitizer/allocator_interface.h */
#define MEM_WHAT "heap"
#else
#define MEM_WHAT "rss"
#endif

#define N_STREAMS 4
#define WINDOW 2 /* requests in flight per stream */
#define DEFAULT_CYCLES 1000
#define WARMUP_CYCLES 100
/* Memory in use may grow this much from the warm-up to the end: about ten times what was
 * measured with removed connections freed, a fraction of what was measured when they were
 * kept (README, Router). */
#define MEM_GROWTH_MAX (4L << 20)

/* ---- what the router and the process hold ----------------------------------------- */

/* Resident memory (/proc/self/statm), or under ASan the heap in use. */
static long mem_in_use(void)
{
#ifdef CHURN_ASAN
    return (long)__sanitizer_get_current_allocated_bytes();
#endif
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = 0;
    cr_assert_not_null(f);
    cr_assert_eq(fscanf(f, "%ld %ld", &size, &resident), 2);
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

static size_t conns_held(router_t *r)
{
    pthread_mutex_lock(&r->conns_mu);
    size_t n = r->n_conns;
    pthread_mutex_unlock(&r->conns_mu);
    return n;
}

/* Waits until the router holds A's connection only and the reaper is idle: what a
 * removal leaves behind is gone.  Returns the connections held. */
static size_t settle(router_t *r)
{
    int64_t until = ls_now_us() + 5000000;
    while ((conns_held(r) > 1 || rpc_defer_pending(r->reaper) > 0) && ls_now_us() < until)
        ls_sleep_us(2000);
    return conns_held(r);
}

static bool wait_all_healthy(router_t *r, int64_t timeout_ms)
{
    int64_t until = ls_now_us() + timeout_ms * 1000;
    while (!router_pools_all_healthy(r->pools)) {
        if (ls_now_us() >= until)
            return false;
        ls_sleep_us(500);
    }
    return true;
}

/* ---- the test ---------------------------------------------------------------------- */

static void start_inference(test_proc_t *p)
{
    char model[512], tok[512];
    snprintf(model, sizeof(model), "%s/small.bin", test_env_path("LLMSERVE_ROUTER_MODELS"));
    snprintf(tok, sizeof(tok), "%s/tok.bin", test_env_path("LLMSERVE_ROUTER_MODELS"));
    char *argv[] = {(char *)test_env_path("LLMSERVE_INFERENCE_BIN"),
                    "--listen",
                    "127.0.0.1:0",
                    "--model",
                    model,
                    "--tokenizer",
                    tok,
                    "--pool",
                    "small",
                    "--model-name",
                    "tiny-small",
                    "--threads",
                    "1",
                    "--grace-ms",
                    "500",
                    NULL};
    cr_assert_eq(test_proc_start(p, argv, 60000), 0, "inference did not start");
}

static int cycles_wanted(void)
{
    const char *s = getenv("LLMSERVE_CHURN_CYCLES");
    int n = s && *s ? atoi(s) : DEFAULT_CYCLES;
    return n > 0 ? n : DEFAULT_CYCLES;
}

static test_proc_t proc_a, proc_b;

/* Also after a failed assert, so no instance outlives the test (and holds its output). */
static void stop_instances(void)
{
    test_proc_stop(&proc_a, SIGTERM, 30000);
    test_proc_stop(&proc_b, SIGTERM, 30000);
}

TestSuite(router_churn, .fini = stop_instances, .timeout = 540);

Test(router_churn, instances_come_and_go_under_load_without_loss_or_leak)
{
    start_inference(&proc_a);
    start_inference(&proc_b);
    char addr_a[64], addr_b[64];
    snprintf(addr_a, sizeof(addr_a), "127.0.0.1:%d", proc_a.port);
    snprintf(addr_b, sizeof(addr_b), "127.0.0.1:%d", proc_b.port);

    /* {A} or {A, B}: a complete list each time, as a Consul watch delivers it. */
    discovery_instance_t list[2] = {{"small", "", 100, addr_a}, {"small", "", 100, addr_b}};
    driven_discovery_t *dd = driven_discovery_create(list, 1, true, false);
    router_config_t cfg;
    router_config_init(&cfg);
    cfg.tiers = ""; /* one pool */
    cfg.seed = 1;
    char err[256] = "";
    router_t *r = router_create(&cfg, driven_discovery_base(dd), err, sizeof(err));
    cr_assert_not_null(r, "router_create: %s", err);
    cr_assert(router_wait_ready(r, 30000), "instance A not connected");

    rpc_server_config_t scfg;
    rpc_server_config_init(&scfg);
    scfg.threads = 2;
    scfg.name = "router";
    rpc_server_t *srv = rpc_server_create(&scfg);
    cr_assert_not_null(srv);
    int port = 0;
    cr_assert_eq(rpc_server_listen(srv, "127.0.0.1:0", NULL, &port), LS_OK);
    cr_assert_eq(router_register(r, srv), LS_OK);
    cr_assert_eq(rpc_server_start(srv), LS_OK);

    rpc_client_t *client = rpc_client_create(2);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    rpc_channel_t *ch = rpc_channel_create(client, target, NULL);
    cr_assert(test_channel_ready(ch, 30000), "the router does not answer");
    router_load_opts_t lo = {.streams = N_STREAMS,
                             .window = WINDOW,
                             .max_tokens = 4,
                             .prompt = "Once upon a time there was a cat",
                             .policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_BYPASS,
                             .watched_instance = addr_b};
    router_load_t *load = router_load_start(ch, &lo);

    int cycles = cycles_wanted();
    int warmup = cycles >= 2 * WARMUP_CYCLES ? WARMUP_CYCLES : cycles / 2;
    int unhealthy = 0, served_by_b = 0;
    long mem_warm = 0;
    int64_t t0 = ls_now_us(), t_warm = t0;
    for (int i = 0; i < cycles; i++) {
        if (i == warmup) {
            size_t n = settle(r);
            cr_expect_leq(n, 1, "the router holds %zu connections after the warm-up", n);
            mem_warm = mem_in_use();
            t_warm = ls_now_us();
        }
        driven_discovery_deliver(dd, list, 2);
        if (!wait_all_healthy(r, 5000))
            unhealthy++;
        /* Until B has started a request (it has none, so it is the least loaded), or a
         * moment: then requests are in flight on B as it goes. */
        uint64_t seen = router_load_starts_on(load);
        int64_t until = ls_now_us() + 50000;
        while (router_load_starts_on(load) == seen && ls_now_us() < until)
            ls_sleep_us(200);
        served_by_b += router_load_starts_on(load) != seen;
        driven_discovery_deliver(dd, list, 1);
    }
    size_t conns_end = settle(r);
    long mem_end = mem_in_use();
    int64_t t_end = ls_now_us();
    uint64_t starts_on_b = router_load_starts_on(load);
    uint64_t requests = router_load_finish(load);

    fprintf(stderr,
            "churn: cycles=%d warmup=%d requests=%llu starts_on_b=%llu cycles_served_by_b=%d "
            "cycles_b_not_healthy=%d " MEM_WHAT "_warm_kib=%ld " MEM_WHAT
            "_end_kib=%ld growth_kib=%ld "
            "churn_s=%.1f after_warmup_s=%.1f\n",
            cycles, warmup, (unsigned long long)requests, (unsigned long long)starts_on_b,
            served_by_b, unhealthy, mem_warm / 1024, mem_end / 1024, (mem_end - mem_warm) / 1024,
            (double)(t_end - t0) / 1e6, (double)(t_end - t_warm) / 1e6);
    cr_expect_eq(conns_end, 1, "the router holds %zu connections; A's only is right", conns_end);
    cr_expect_eq(unhealthy, 0, "B did not come up in %d cycles", unhealthy);
    cr_expect_geq(served_by_b, cycles / 2, "B served requests in %d of %d cycles only", served_by_b,
                  cycles);
    cr_expect_leq(mem_end - mem_warm, MEM_GROWTH_MAX,
                  "memory in use (" MEM_WHAT ") grew %ld KiB over %d cycles after the warm-up",
                  (mem_end - mem_warm) / 1024, cycles - warmup);

    rpc_channel_destroy(ch);
    rpc_client_destroy(client);
    rpc_server_shutdown(srv, 1000);
    rpc_server_destroy(srv);
    router_destroy(r);
}
