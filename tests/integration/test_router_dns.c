/*
 * test_router_dns.c - the router over DNS discovery (services/router/discovery_dns.c)
 * before two real inference processes on one port, one on 127.0.0.1 and one on ::1: the
 * addresses one name gives, as a headless Service's name gives its pods'.
 *
 * The router runs in this process; its source resolves "pods" through a resolver the
 * test answers for, so the set can change between refreshes (every 100 ms).  Checked:
 * with one address every request goes to it; once the name gives both, requests reach
 * both instances ("[::1]:PORT" for the IPv6 one); when an address goes, no new request
 * reaches it; when the name stops resolving, its last address keeps serving.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "discovery_dns.h"
#include "llmserve/v1/router.pb-c.h"
#include "router.h"
#include "rpc/server.h"
#include "support/channel.h"
#include "support/proc.h"
#include "support/router_stream.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static test_proc_t g_v4, g_v6;

static void stop_all(void)
{
    test_proc_stop(&g_v4, SIGTERM, 30000);
    test_proc_stop(&g_v6, SIGTERM, 30000);
}

TestSuite(router_dns, .fini = stop_all, .timeout = 120);

static int start_inference(test_proc_t *p, const char *listen)
{
    char model[512], tok[512];
    snprintf(model, sizeof(model), "%s/small.bin", test_env_path("LLMSERVE_ROUTER_MODELS"));
    snprintf(tok, sizeof(tok), "%s/tok.bin", test_env_path("LLMSERVE_ROUTER_MODELS"));
    char *argv[] = {(char *)test_env_path("LLMSERVE_INFERENCE_BIN"),
                    "--listen",
                    (char *)listen,
                    "--model",
                    model,
                    "--tokenizer",
                    tok,
                    "--pool",
                    "small",
                    "--model-name",
                    "tiny-small",
                    "--cpu-threads",
                    "1",
                    "--grace-ms",
                    "500",
                    NULL};
    return test_proc_start(p, argv, 60000);
}

/* What "pods" resolves to now (NULL: it fails). */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static const char *g_pods = "127.0.0.1";

static void set_pods(const char *addrs)
{
    pthread_mutex_lock(&g_mu);
    g_pods = addrs;
    pthread_mutex_unlock(&g_mu);
}

static int resolve(void *ud, const char *host, char ***addrs, size_t *n, char *err, size_t err_len)
{
    (void)ud;
    *addrs = NULL;
    *n = 0;
    pthread_mutex_lock(&g_mu);
    char *copy = g_pods && strcmp(host, "pods") == 0 ? strdup(g_pods) : NULL;
    pthread_mutex_unlock(&g_mu);
    if (!copy) {
        snprintf(err, err_len, "Name or service not known");
        return -1;
    }
    char **out = calloc(4, sizeof(*out));
    char *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t && *n < 4; t = strtok_r(NULL, ",", &save))
        out[(*n)++] = strdup(t);
    free(copy);
    *addrs = out;
    return 0;
}

/* How many requests each instance served, and how many did not end with Done. */
typedef struct {
    int v4, v6, failed;
} served_counts_t;

static int g_seq;

/* Asks n requests one after the other and counts who served them. */
static served_counts_t ask_some(router_stream_t *g, int n, const char *v4, const char *v6)
{
    served_counts_t c = {0, 0, 0};
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "r%d", g_seq++);
        router_stream_req_t q = {.id = id, .prompt = "Once upon a time"};
        q.max_tokens = 2;
        q.policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_BYPASS;
        router_stream_submit(g, &q);
        router_stream_rec_t rec = router_stream_finish(g, id);
        const Llmserve__V1__GenerateStarted *route = router_stream_route(g, id);
        if (!rec.done || !route) {
            c.failed++;
            continue;
        }
        const char *inst = route->instance;
        c.v4 += strcmp(inst, v4) == 0;
        c.v6 += strcmp(inst, v6) == 0;
    }
    return c;
}

Test(router_dns, requests_spread_over_every_address_of_a_name)
{
    cr_assert_eq(start_inference(&g_v4, "127.0.0.1:0"), 0, "inference on 127.0.0.1 did not start");
    char listen6[64], v4[64], v6[64], pools[64];
    snprintf(listen6, sizeof(listen6), "[::1]:%d", g_v4.port);
    if (start_inference(&g_v6, listen6) != 0)
        cr_skip_test("no inference instance on %s (is ::1 usable here?)", listen6);
    snprintf(v4, sizeof(v4), "127.0.0.1:%d", g_v4.port);
    snprintf(v6, sizeof(v6), "[::1]:%d", g_v4.port);
    snprintf(pools, sizeof(pools), "small=pods:%d", g_v4.port);

    discovery_dns_config_t dc;
    discovery_dns_config_init(&dc);
    dc.pools = pools;
    dc.refresh_ms = 100;
    dc.resolve = resolve;
    char err[256] = "";
    discovery_t *disc = discovery_dns_create(&dc, err, sizeof(err));
    cr_assert_not_null(disc, "%s", err);
    router_config_t cfg;
    router_config_init(&cfg);
    cfg.tiers = ""; /* one pool */
    cfg.seed = 1;
    cfg.prefix_affinity_bytes = 0; /* one prompt asked again and again must spread */
    router_t *r = router_create(&cfg, disc, err, sizeof(err));
    cr_assert_not_null(r, "router_create: %s", err);
    cr_assert(router_wait_ready(r, 30000), "the instance of 127.0.0.1 is not connected");

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
    rpc_channel_t *ch = test_channel_to(client, port, NULL);
    cr_assert(test_channel_ready(ch, 30000), "the router does not answer");
    router_stream_t *g = router_stream_open(ch, NULL);

    served_counts_t c = ask_some(g, 6, v4, v6);
    cr_assert_eq(c.v4, 6, "one address: v4=%d v6=%d failed=%d", c.v4, c.v6, c.failed);

    /* The name gives both: requests reach both within a few refreshes. */
    set_pods("127.0.0.1,::1");
    int64_t t0 = ls_now_us();
    served_counts_t both = {0, 0, 0};
    while ((both.v4 == 0 || both.v6 == 0) && ls_now_us() - t0 < 10000000) {
        c = ask_some(g, 4, v4, v6);
        both.v4 += c.v4, both.v6 += c.v6, both.failed += c.failed;
    }
    fprintf(stderr, "dns: both addresses served after %.0f ms (v4=%d v6=%d)\n",
            (double)(ls_now_us() - t0) / 1000, both.v4, both.v6);
    cr_assert_gt(both.v6, 0, "the ::1 instance never served");
    cr_assert_gt(both.v4, 0);
    cr_assert_eq(both.failed, 0);
    c = ask_some(g, 40, v4, v6);
    cr_expect_gt(c.v4, 0, "spread: v4=%d v6=%d", c.v4, c.v6);
    cr_expect_gt(c.v6, 0, "spread: v4=%d v6=%d", c.v4, c.v6);

    /* 127.0.0.1 goes: after a refresh no request reaches it. */
    set_pods("::1");
    ls_sleep_us(400000);
    c = ask_some(g, 10, v4, v6);
    cr_assert_eq(c.v6, 10, "after removal: v4=%d v6=%d failed=%d", c.v4, c.v6, c.failed);

    /* The name fails: its last address keeps serving. */
    set_pods(NULL);
    ls_sleep_us(400000);
    c = ask_some(g, 5, v4, v6);
    cr_assert_eq(c.v6, 5, "while failing: v4=%d v6=%d failed=%d", c.v4, c.v6, c.failed);

    router_stream_close(g);
    rpc_channel_destroy(ch);
    rpc_client_destroy(client);
    rpc_server_shutdown(srv, 1000);
    rpc_server_destroy(srv);
    router_destroy(r);
}
