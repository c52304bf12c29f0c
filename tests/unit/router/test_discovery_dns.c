/*
 * test_discovery_dns.c - services/router/discovery_dns.c: names resolved into instances
 * and caches, over a resolver the test answers for (what each name gives, or a failure),
 * rounds run by hand.
 *
 * Checked: every address of a name is an instance of its entry, "[v6]:port" for IPv6,
 * with its version's weight whatever the number of addresses; a list is delivered when
 * the set changes (added, removed address) and not when it does not (same set in another
 * order, duplicates); an address two entries give is the first one's; a failing name
 * keeps its last addresses, and one that never resolved gives none (the first list may
 * be empty); cache names give every address; numeric hosts pass through; the thread
 * resolves again every refresh_ms, and stop is prompt while it sleeps.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "discovery_dns.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The resolver's answers: host -> "addr,addr" (NULL: the name fails). */
typedef struct {
    pthread_mutex_t mu;
    const char *host[8];
    const char *answer[8];
    size_t n;
    int calls;
} answers_t;

static void answer(answers_t *a, const char *host, const char *addrs)
{
    pthread_mutex_lock(&a->mu);
    size_t i = 0;
    while (i < a->n && strcmp(a->host[i], host) != 0)
        i++;
    if (i == a->n)
        a->host[a->n++] = host;
    a->answer[i] = addrs;
    pthread_mutex_unlock(&a->mu);
}

static int scripted_resolve(void *ud, const char *host, char ***addrs, size_t *n, char *err,
                            size_t err_len)
{
    answers_t *a = ud;
    *addrs = NULL;
    *n = 0;
    pthread_mutex_lock(&a->mu);
    a->calls++;
    const char *ans = NULL;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->host[i], host) == 0)
            ans = a->answer[i];
    char *copy = ans ? strdup(ans) : NULL;
    pthread_mutex_unlock(&a->mu);
    if (!copy) {
        snprintf(err, err_len, "Name or service not known");
        return -1;
    }
    char **out = calloc(8, sizeof(*out));
    char *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t && *n < 8; t = strtok_r(NULL, ",", &save))
        out[(*n)++] = strdup(t);
    free(copy);
    *addrs = out;
    return 0;
}

/* What the source delivered: the last lists and how many came. */
typedef struct {
    pthread_mutex_t mu;
    int updates, cache_updates;
    char text[1024];  /* "pool/version/weight/addr " each */
    char caches[512]; /* "addr " each */
} seen_t;

static void on_update(void *ud, const discovery_instance_t *list, size_t n)
{
    seen_t *s = ud;
    pthread_mutex_lock(&s->mu);
    s->updates++;
    s->text[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(s->text);
        snprintf(s->text + len, sizeof(s->text) - len, "%s/%s/%u/%s ", list[i].pool,
                 list[i].version, list[i].weight, list[i].addr);
    }
    pthread_mutex_unlock(&s->mu);
}

static void on_caches(void *ud, const char *const *addrs, size_t n)
{
    seen_t *s = ud;
    pthread_mutex_lock(&s->mu);
    s->cache_updates++;
    s->caches[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(s->caches);
        snprintf(s->caches + len, sizeof(s->caches) - len, "%s ", addrs[i]);
    }
    pthread_mutex_unlock(&s->mu);
}

static answers_t g_ans = {.mu = PTHREAD_MUTEX_INITIALIZER};
static seen_t g_seen = {.mu = PTHREAD_MUTEX_INITIALIZER};

static discovery_t *make(const char *pools, const char *caches, int64_t refresh_ms)
{
    discovery_dns_config_t cfg;
    discovery_dns_config_init(&cfg);
    cfg.pools = pools;
    cfg.caches = caches;
    cfg.refresh_ms = refresh_ms;
    cfg.resolve = scripted_resolve;
    cfg.resolve_ud = &g_ans;
    char err[256] = "";
    discovery_t *d = discovery_dns_create(&cfg, err, sizeof(err));
    cr_assert_not_null(d, "%s", err);
    return d;
}

#define LONG_MS 600000 /* the thread never runs a round in these tests */

Test(discovery_dns, every_address_is_an_instance_with_its_versions_weight)
{
    answer(&g_ans, "small.svc", "10.0.0.2,10.0.0.1");
    answer(&g_ans, "large-v1.svc", "10.0.1.1");
    answer(&g_ans, "large-v2.svc", "10.0.2.1,10.0.2.2,10.0.2.3,fd00::7");
    discovery_t *d = make("small=small.svc:7001;large@v1:90=large-v1.svc:7002;"
                          "large@v2:10=large-v2.svc:7002",
                          NULL, LONG_MS);
    cr_assert_eq(discovery_start(d, on_update, &g_seen), LS_OK);
    cr_assert_eq(g_seen.updates, 1);
    cr_assert_str_eq(g_seen.text, "small//100/10.0.0.1:7001 small//100/10.0.0.2:7001 "
                                  "large/v1/90/10.0.1.1:7002 large/v2/10/10.0.2.1:7002 "
                                  "large/v2/10/10.0.2.2:7002 large/v2/10/10.0.2.3:7002 "
                                  "large/v2/10/[fd00::7]:7002 ");
    discovery_destroy(d);
}

Test(discovery_dns, a_list_goes_only_when_the_set_changes)
{
    answer(&g_ans, "pods", "10.0.0.1");
    discovery_t *d = make("small=pods:7001", NULL, LONG_MS);
    cr_assert_eq(discovery_start(d, on_update, &g_seen), LS_OK);
    cr_assert_str_eq(g_seen.text, "small//100/10.0.0.1:7001 ");

    answer(&g_ans, "pods", "10.0.0.2,10.0.0.1"); /* added */
    cr_assert_eq(discovery_dns_refresh(d), 1);
    cr_assert_str_eq(g_seen.text, "small//100/10.0.0.1:7001 small//100/10.0.0.2:7001 ");

    answer(&g_ans, "pods", "10.0.0.1,10.0.0.2,10.0.0.1"); /* same set, reordered */
    cr_assert_eq(discovery_dns_refresh(d), 0);
    cr_assert_eq(g_seen.updates, 2);

    answer(&g_ans, "pods", "10.0.0.2"); /* removed */
    cr_assert_eq(discovery_dns_refresh(d), 1);
    cr_assert_str_eq(g_seen.text, "small//100/10.0.0.2:7001 ");

    answer(&g_ans, "pods", NULL); /* fails: the last addresses stay, nothing delivered */
    cr_assert_eq(discovery_dns_refresh(d), 0);
    cr_assert_eq(discovery_dns_refresh(d), 0);
    cr_assert_eq(g_seen.updates, 3);
    cr_assert_str_eq(g_seen.text, "small//100/10.0.0.2:7001 ");

    answer(&g_ans, "pods", "10.0.0.2"); /* back with the same set: nothing to say */
    cr_assert_eq(discovery_dns_refresh(d), 0);
    answer(&g_ans, "pods", ""); /* resolves to nothing: every instance goes */
    cr_assert_eq(discovery_dns_refresh(d), 1);
    cr_assert_str_eq(g_seen.text, "");
    discovery_destroy(d);
}

Test(discovery_dns, a_name_that_never_resolved_gives_none_and_the_first_list_may_be_empty)
{
    answer(&g_ans, "up", "10.0.0.1");
    discovery_t *d = make("small=down:7001;large=up:7002", NULL, LONG_MS);
    cr_assert_eq(discovery_start(d, on_update, &g_seen), LS_OK);
    cr_assert_eq(g_seen.updates, 1);
    cr_assert_str_eq(g_seen.text, "large//100/10.0.0.1:7002 ");
    answer(&g_ans, "down", "10.0.0.9");
    cr_assert_eq(discovery_dns_refresh(d), 1);
    cr_assert_str_eq(g_seen.text, "large//100/10.0.0.1:7002 small//100/10.0.0.9:7001 ");
    discovery_destroy(d);

    seen_t empty = {.mu = PTHREAD_MUTEX_INITIALIZER};
    d = make("small=nowhere:7001", NULL, LONG_MS);
    cr_assert_eq(discovery_start(d, on_update, &empty), LS_OK);
    cr_assert_eq(empty.updates, 1, "start delivers a list even when it is empty");
    cr_assert_str_eq(empty.text, "");
    discovery_destroy(d);
}

Test(discovery_dns, an_address_two_entries_give_is_the_first_ones)
{
    answer(&g_ans, "a", "10.0.0.1,10.0.0.2");
    answer(&g_ans, "b", "10.0.0.1");
    discovery_t *d = make("small=a:7001;large=b:7001", NULL, LONG_MS);
    cr_assert_eq(discovery_start(d, on_update, &g_seen), LS_OK);
    cr_assert_str_eq(g_seen.text, "small//100/10.0.0.1:7001 small//100/10.0.0.2:7001 ");
    discovery_destroy(d);
}

Test(discovery_dns, numeric_hosts_pass_through_and_ipv6_is_bracketed)
{
    discovery_dns_config_t cfg;
    discovery_dns_config_init(&cfg);
    cfg.pools = "small=127.0.0.1:7001,[::1]:7001";
    cfg.refresh_ms = LONG_MS;
    char err[256] = "";
    discovery_t *d = discovery_dns_create(&cfg, err, sizeof(err)); /* getaddrinfo */
    cr_assert_not_null(d, "%s", err);
    cr_assert_eq(discovery_start(d, on_update, &g_seen), LS_OK);
    cr_assert_str_eq(g_seen.text, "small//100/127.0.0.1:7001 small//100/[::1]:7001 ");
    discovery_destroy(d);
}

Test(discovery_dns, cache_names_give_every_address)
{
    answer(&g_ans, "inf", "10.0.0.1");
    answer(&g_ans, "cache", "10.0.9.2,10.0.9.1");
    discovery_t *d = make("small=inf:7001", "cache:7100", LONG_MS);
    cr_assert_eq(discovery_watch_caches(d, on_caches, &g_seen), LS_OK);
    cr_assert_eq(discovery_start(d, on_update, &g_seen), LS_OK);
    cr_assert_eq(g_seen.cache_updates, 1);
    cr_assert_str_eq(g_seen.caches, "10.0.9.1:7100 10.0.9.2:7100 ");
    answer(&g_ans, "cache", "10.0.9.1");
    cr_assert_eq(discovery_dns_refresh(d), 1, "only the cache list changed");
    cr_assert_eq(g_seen.cache_updates, 2);
    cr_assert_eq(g_seen.updates, 1);
    cr_assert_str_eq(g_seen.caches, "10.0.9.1:7100 ");
    discovery_destroy(d);
}

Test(discovery_dns, bad_configuration_is_refused)
{
    discovery_dns_config_t cfg;
    discovery_dns_config_init(&cfg);
    char err[256] = "";
    cfg.pools = "small=pods:7001";
    cfg.refresh_ms = 99;
    cr_assert_null(discovery_dns_create(&cfg, err, sizeof(err)));
    cr_assert(strstr(err, "below 100 ms"), "%s", err);
    cfg.refresh_ms = 5000;
    cfg.caches = "cache";
    cr_assert_null(discovery_dns_create(&cfg, err, sizeof(err)));
    cr_assert(strstr(err, "not HOST:PORT"), "%s", err);
    cfg.caches = NULL;
    cfg.pools = "small=pods";
    cr_assert_null(discovery_dns_create(&cfg, err, sizeof(err)));
}

Test(discovery_dns, the_thread_resolves_again_and_stops_promptly)
{
    answer(&g_ans, "pods", "10.0.0.1");
    discovery_t *d = make("small=pods:7001", NULL, 100);
    cr_assert_eq(discovery_start(d, on_update, &g_seen), LS_OK);
    answer(&g_ans, "pods", "10.0.0.1,10.0.0.2");
    int64_t until = ls_now_us() + 5000000;
    for (;;) {
        pthread_mutex_lock(&g_seen.mu);
        int u = g_seen.updates;
        pthread_mutex_unlock(&g_seen.mu);
        if (u >= 2 || ls_now_us() > until)
            break;
        ls_sleep_us(10000);
    }
    pthread_mutex_lock(&g_seen.mu);
    cr_assert_str_eq(g_seen.text, "small//100/10.0.0.1:7001 small//100/10.0.0.2:7001 ");
    pthread_mutex_unlock(&g_seen.mu);
    discovery_destroy(d);

    /* Asleep for ten minutes: stop wakes it. */
    d = make("small=pods:7001", NULL, LONG_MS);
    cr_assert_eq(discovery_start(d, on_update, &g_seen), LS_OK);
    int64_t t0 = ls_now_us();
    discovery_destroy(d);
    cr_assert_lt(ls_now_us() - t0, 1000000, "stop took %lld ms",
                 (long long)(ls_now_us() - t0) / 1000);
}
