/*
 * test_mc.c - libs/cache/cache_mc.c and cache_pool.c against a real memcached: the one
 * tools/test.sh runs (LLMSERVE_TEST_MEMCACHED) or, when that is not set, one started
 * here.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "cache/cache_mc.h"
#include "cache/cache_pool.h"
#include "test_cache_support.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static test_memcached_t g_own;
static char g_conf[96];

static void setup(void)
{
    const char *addr = getenv("LLMSERVE_TEST_MEMCACHED");
    if (addr && *addr) {
        snprintf(g_conf, sizeof(g_conf), "--SERVER=%s", addr);
        return;
    }
    cr_assert_eq(test_memcached_start(&g_own, 0), 0);
    test_memcached_config(&g_own, g_conf, sizeof(g_conf));
}

static void teardown(void)
{
    test_memcached_stop(&g_own, SIGTERM);
}

TestSuite(mc, .init = setup, .fini = teardown, .timeout = 30);

static cache_mc_t *client(void)
{
    cache_mc_config_t cfg;
    cache_mc_config_init(&cfg);
    cfg.servers = g_conf;
    cache_mc_t *mc = cache_mc_create(&cfg);
    cr_assert_not_null(mc);
    return mc;
}

static void unique_key(char *buf, size_t len, const char *what)
{
    snprintf(buf, len, "llmserve:test:%s:%d:%lld", what, (int)getpid(), (long long)ls_now_us());
}

Test(mc, set_get_add_delete)
{
    cache_mc_t *mc = client();
    char key[96];
    unique_key(key, sizeof(key), "basic");
    size_t kl = strlen(key);
    uint8_t *v;
    size_t n;
    cr_assert_eq(cache_mc_get(mc, key, kl, &v, &n), LS_ERR_NOT_FOUND);
    cr_assert_eq(cache_mc_set(mc, key, kl, "value", 5, 60), LS_OK);
    cr_assert_eq(cache_mc_get(mc, key, kl, &v, &n), LS_OK);
    cr_assert_eq(n, 5);
    cr_assert_eq(memcmp(v, "value", 5), 0);
    free(v);
    cr_assert_eq(cache_mc_add(mc, key, kl, "other", 5, 60), LS_ERR_EXISTS);
    cr_assert_eq(cache_mc_delete(mc, key, kl), LS_OK);
    cr_assert_eq(cache_mc_delete(mc, key, kl), LS_ERR_NOT_FOUND);
    cr_assert_eq(cache_mc_add(mc, key, kl, "other", 5, 60), LS_OK);
    cr_assert_eq(cache_mc_set(mc, key, kl, "", 0, 60), LS_OK);
    cr_assert_eq(cache_mc_get(mc, key, kl, &v, &n), LS_OK, "an empty value is a value");
    cr_assert_eq(n, 0);
    free(v);
    cache_mc_destroy(mc);
}

Test(mc, oversized_value_is_refused_by_the_server)
{
    cache_mc_t *mc = client();
    char key[96];
    unique_key(key, sizeof(key), "big");
    size_t len = 2u << 20; /* over memcached's default 1 MiB item size */
    char *big = calloc(1, len);
    int rc = cache_mc_set(mc, key, strlen(key), big, len, 60);
    cr_assert_eq(rc, LS_ERR_FULL, "got %s", ls_strerror(rc));
    free(big);
    cache_mc_destroy(mc);
}

Test(mc, configuration_is_checked)
{
    char err[256];
    cr_assert_eq(
        cache_mc_check("--SERVER=127.0.0.1:11211 --SERVER=127.0.0.1:11212", err, sizeof(err)),
        LS_OK);
    cr_assert_eq(cache_mc_check("--NOPE=1", err, sizeof(err)), LS_ERR_INVALID);
    cr_assert_eq(cache_mc_check("", err, sizeof(err)), LS_ERR_INVALID);
    cache_mc_config_t cfg;
    cache_mc_config_init(&cfg);
    cfg.servers = "--BOGUS";
    cr_assert_null(cache_mc_create(&cfg));
}

Test(mc, keys_spread_over_servers_by_consistent_hashing)
{
    cache_mc_config_t cfg;
    cache_mc_config_init(&cfg);
    cfg.servers = "--SERVER=127.0.0.1:1 --SERVER=127.0.0.1:2 --SERVER=127.0.0.1:3";
    cache_mc_t *mc = cache_mc_create(&cfg);
    cr_assert_not_null(mc);
    cr_assert_eq(cache_mc_server_count(mc), 3);
    int per[3] = {0};
    size_t before[1000];
    for (int i = 0; i < 1000; i++) {
        char key[32];
        int kl = snprintf(key, sizeof(key), "k%d", i);
        before[i] = cache_mc_server_of(mc, key, (size_t)kl);
        cr_assert_lt(before[i], 3);
        per[before[i]]++;
    }
    for (int s = 0; s < 3; s++)
        cr_assert_gt(per[s], 150, "server %d got %d of 1000 keys", s, per[s]);
    cache_mc_destroy(mc);
    /* Adding a fourth server moves only about a quarter of the keys. */
    cfg.servers = "--SERVER=127.0.0.1:1 --SERVER=127.0.0.1:2 --SERVER=127.0.0.1:3 "
                  "--SERVER=127.0.0.1:4";
    mc = cache_mc_create(&cfg);
    int moved = 0;
    for (int i = 0; i < 1000; i++) {
        char key[32];
        int kl = snprintf(key, sizeof(key), "k%d", i);
        size_t now = cache_mc_server_of(mc, key, (size_t)kl);
        moved += now != before[i];
    }
    cr_assert_lt(moved, 450, "%d of 1000 keys moved", moved);
    cache_mc_destroy(mc);
}

Test(mc, dead_server_fails_fast)
{
    cache_mc_config_t cfg;
    cache_mc_config_init(&cfg);
    cfg.servers = "--SERVER=127.0.0.1:1";
    cache_mc_t *mc = cache_mc_create(&cfg);
    uint8_t *v;
    size_t n;
    int64_t t0 = ls_now_us();
    int rc = cache_mc_get(mc, "k", 1, &v, &n);
    cr_assert(cache_mc_server_failed(rc), "got %s", ls_strerror(rc));
    cr_assert_lt(ls_now_us() - t0, 500000);
    cr_assert_not(cache_mc_server_failed(LS_ERR_NOT_FOUND));
    cache_mc_destroy(mc);
}

/* ---- the pool ------------------------------------------------------------------ */

typedef struct {
    _Atomic int ran;
    _Atomic int idle;
} counts_t;

static void job(void *arg, cache_mc_t *mc)
{
    cr_assert_not_null(mc);
    atomic_fetch_add(&((counts_t *)arg)->ran, 1);
}

static void slow_job(void *arg, cache_mc_t *mc)
{
    (void)mc;
    ls_sleep_us(20000);
    atomic_fetch_add(&((counts_t *)arg)->ran, 1);
}

static void idle(void *arg, cache_mc_t *mc)
{
    (void)mc;
    atomic_fetch_add(&((counts_t *)arg)->idle, 1);
}

Test(mc, pool_runs_every_job_once_bounds_its_queue_and_idles)
{
    counts_t c = {0};
    cache_pool_config_t pc;
    cache_pool_config_init(&pc);
    pc.workers = 2;
    pc.max_queue = 4;
    pc.mc.servers = g_conf;
    pc.idle_interval_us = 10000;
    pc.on_idle = idle;
    pc.idle_arg = &c;
    cache_pool_t *p = cache_pool_create(&pc);
    cr_assert_not_null(p);
    int accepted = 0, refused = 0;
    for (int i = 0; i < 20; i++) {
        int rc = cache_pool_submit(p, slow_job, &c);
        if (rc == LS_OK)
            accepted++;
        else
            refused += rc == LS_ERR_FULL;
    }
    cr_assert_gt(refused, 0, "a queue of 4 took 20 slow jobs");
    ls_sleep_us(300000);
    cr_assert_gt(atomic_load(&c.idle), 0, "on_idle never ran");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(cache_pool_submit(p, job, &c), LS_OK);
    cache_pool_shutdown(p);
    cr_assert_eq(atomic_load(&c.ran), accepted + 3, "every accepted job runs exactly once");
    cr_assert_eq(cache_pool_submit(p, job, &c), LS_ERR_CLOSED);
    cache_pool_destroy(p);
    cache_pool_destroy(NULL);
}
