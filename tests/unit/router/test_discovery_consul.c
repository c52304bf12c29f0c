/*
 * test_discovery_consul.c - services/router/discovery_consul_list.c: Consul's lists of
 * passing instances into the router's (Meta to pool, version and weight; addresses; what
 * is left out, warned about once per instance id; order and duplicates).
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "discovery_consul.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One entry as Consul's health endpoint gives it; meta is "key=value key=value". */
typedef struct {
    const char *id, *node, *address;
    int port;
    const char *meta;
} entry_t;

static consul_instance_t *make(const entry_t *e, size_t n)
{
    consul_instance_t *l = calloc(n ? n : 1, sizeof(*l));
    for (size_t i = 0; i < n; i++) {
        l[i].id = strdup(e[i].id);
        l[i].node = strdup(e[i].node ? e[i].node : "node1");
        l[i].address = strdup(e[i].address);
        l[i].port = e[i].port;
        l[i].meta_keys = calloc(8, sizeof(char *));
        l[i].meta_values = calloc(8, sizeof(char *));
        char *copy = strdup(e[i].meta ? e[i].meta : ""), *save = NULL;
        for (char *kv = strtok_r(copy, " ", &save); kv; kv = strtok_r(NULL, " ", &save)) {
            char *eq = strchr(kv, '=');
            cr_assert_not_null(eq, "meta '%s'", kv);
            l[i].meta_keys[l[i].n_meta] = strndup(kv, (size_t)(eq - kv));
            l[i].meta_values[l[i].n_meta] = strdup(eq + 1);
            l[i].n_meta++;
        }
        free(copy);
    }
    return l;
}

static void unmake(consul_instance_t *l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(l[i].id);
        free(l[i].node);
        free(l[i].address);
        for (size_t k = 0; k < l[i].n_meta; k++) {
            free(l[i].meta_keys[k]);
            free(l[i].meta_values[k]);
        }
        free(l[i].meta_keys);
        free(l[i].meta_values);
    }
    free(l);
}

/* Converts e[0..n) with skips; returns the list, its length in *n_out, the warnings
 * logged in *warned. */
static discovery_instance_t *convert(discovery_consul_skips_t *skips, const entry_t *e, size_t n,
                                     size_t *n_out, size_t *warned)
{
    consul_instance_t *in = make(e, n);
    discovery_instance_t *out = NULL;
    discovery_consul_instances(in, n, skips, &out, n_out, warned);
    unmake(in, n);
    return out;
}

static const discovery_instance_t *find(const discovery_instance_t *l, size_t n, const char *addr)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(l[i].addr, addr) == 0)
            return &l[i];
    cr_assert_fail("no instance %s", addr);
    return NULL;
}

Test(discovery_consul, meta_gives_pool_version_and_weight)
{
    discovery_consul_skips_t *sk = discovery_consul_skips_create("inference");
    const entry_t e[] = {
        {"inf-a", NULL, "10.0.0.1", 7001, "pool=small"},
        {"inf-b", NULL, "10.0.0.2", 7001, "pool=large version=v1 weight=95"},
        {"inf-c", NULL, "10.0.0.3", 7001, "pool=large version=v2 weight=5 zone=x"},
        {"inf-d", NULL, "host-d.example", 7002, "pool=medium version=V1.2_x weight="},
    };
    size_t n, warned = 99;
    discovery_instance_t *l = convert(sk, e, 4, &n, &warned);
    cr_assert_eq(n, 4);
    cr_assert_eq(warned, 0);
    const discovery_instance_t *a = find(l, n, "10.0.0.1:7001");
    cr_assert_str_eq(a->pool, "small");
    cr_assert_str_eq(a->version, "", "no Meta version: unnamed");
    cr_assert_eq(a->weight, 100, "one version alone takes 100");
    const discovery_instance_t *b = find(l, n, "10.0.0.2:7001");
    cr_assert_str_eq(b->pool, "large");
    cr_assert_str_eq(b->version, "v1");
    cr_assert_eq(b->weight, 95);
    const discovery_instance_t *c = find(l, n, "10.0.0.3:7001");
    cr_assert_str_eq(c->version, "v2");
    cr_assert_eq(c->weight, 5);
    const discovery_instance_t *d = find(l, n, "host-d.example:7002");
    cr_assert_str_eq(d->version, "V1.2_x");
    cr_assert_eq(d->weight, 100, "an empty weight counts as none");
    discovery_list_free(l, n);
    discovery_consul_skips_destroy(sk);
}

Test(discovery_consul, missing_or_bad_pool_is_left_out_with_one_warning_per_id)
{
    discovery_consul_skips_t *sk = discovery_consul_skips_create("inference");
    const entry_t e[] = {
        {"ok", NULL, "10.0.0.1", 7001, "pool=small"},
        {"no-pool", NULL, "10.0.0.2", 7001, "version=v1"},
        {"empty-pool", NULL, "10.0.0.3", 7001, "pool="},
        {"upper", NULL, "10.0.0.4", 7001, "pool=Small"},
        {"long", NULL, "10.0.0.5", 7001, "pool=abcdefghijabcdefghijabcdefghijabc"},
        {"bad-version", NULL, "10.0.0.6", 7001, "pool=small version=v/1"},
        {"quote\"d id", NULL, "10.0.0.7", 7001, "pool=a\"b"}, /* logged with '?' for '"' */
    };
    size_t n, warned;
    discovery_instance_t *l = convert(sk, e, 7, &n, &warned);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(l[0].addr, "10.0.0.1:7001");
    cr_assert_eq(warned, 6);
    discovery_list_free(l, n);

    /* The same list again, as every watch answer brings it: no new warning. */
    l = convert(sk, e, 7, &n, &warned);
    cr_assert_eq(n, 1);
    cr_assert_eq(warned, 0, "warned again about the same instances");
    discovery_list_free(l, n);

    /* One is fixed, and later broken again: warned about anew then. */
    entry_t fixed[7];
    memcpy(fixed, e, sizeof(fixed));
    fixed[1].meta = "pool=small version=v1";
    l = convert(sk, fixed, 7, &n, &warned);
    cr_assert_eq(n, 2);
    cr_assert_eq(warned, 0);
    discovery_list_free(l, n);
    l = convert(sk, e, 7, &n, &warned);
    cr_assert_eq(warned, 1, "a registration broken again is news");
    discovery_list_free(l, n);

    /* Another reason for the same id is news too. */
    fixed[2].meta = "pool=x! weight=1";
    l = convert(sk, fixed, 7, &n, &warned);
    cr_assert_eq(warned, 1);
    discovery_list_free(l, n);
    discovery_consul_skips_destroy(sk);
}

Test(discovery_consul, bad_weight_is_left_out_not_guessed)
{
    discovery_consul_skips_t *sk = discovery_consul_skips_create("inference");
    const entry_t e[] = {
        {"w-max", NULL, "10.0.0.1", 1, "pool=p version=a weight=1000000"},
        {"w-zero", NULL, "10.0.0.2", 1, "pool=p version=b weight=0"},
        {"w-word", NULL, "10.0.0.3", 1, "pool=p version=c weight=abc"},
        {"w-neg", NULL, "10.0.0.4", 1, "pool=p version=c weight=-1"},
        {"w-big", NULL, "10.0.0.5", 1, "pool=p version=c weight=1000001"},
        {"w-pct", NULL, "10.0.0.6", 1, "pool=p version=c weight=5%"},
        {"w-long", NULL, "10.0.0.7", 1, "pool=p version=c weight=00000001"},
        {"w-sign", NULL, "10.0.0.8", 1, "pool=p version=c weight=+5"},
    };
    size_t n, warned;
    discovery_instance_t *l = convert(sk, e, 8, &n, &warned);
    cr_assert_eq(n, 2);
    cr_assert_eq(warned, 6);
    cr_assert_eq(find(l, n, "10.0.0.1:1")->weight, 1000000);
    cr_assert_eq(find(l, n, "10.0.0.2:1")->weight, 0);
    discovery_list_free(l, n);
    discovery_consul_skips_destroy(sk);
}

Test(discovery_consul, versions_share_weights_as_the_static_list_does)
{
    discovery_consul_skips_t *sk = discovery_consul_skips_create("inference");
    const entry_t e[] = {
        /* large: v1 explicit on two instances that disagree (the largest counts), v2 and
         * v3 without: they share what is left of 100 */
        {"l1", NULL, "10.0.1.1", 1, "pool=large version=v1 weight=60"},
        {"l2", NULL, "10.0.1.2", 1, "pool=large version=v1 weight=80"},
        {"l3", NULL, "10.0.1.3", 1, "pool=large version=v2"},
        {"l4", NULL, "10.0.1.4", 1, "pool=large version=v3"},
        {"l5", NULL, "10.0.1.5", 1, "pool=large version=v3"},
        /* medium: one instance of v1 says a weight, the other none: v1 is explicit */
        {"m1", NULL, "10.0.2.1", 1, "pool=medium version=v1 weight=30"},
        {"m2", NULL, "10.0.2.2", 1, "pool=medium version=v1"},
        {"m3", NULL, "10.0.2.3", 1, "pool=medium version=v2"},
        /* small: explicit weights over 100 leave nothing */
        {"s1", NULL, "10.0.3.1", 1, "pool=small version=a weight=150"},
        {"s2", NULL, "10.0.3.2", 1, "pool=small version=b"},
        /* tiny: two versions, no weights: half each */
        {"t1", NULL, "10.0.4.1", 1, "pool=tiny version=a"},
        {"t2", NULL, "10.0.4.2", 1, "pool=tiny version=b"},
    };
    size_t n, warned;
    discovery_instance_t *l = convert(sk, e, 12, &n, &warned);
    cr_assert_eq(n, 12);
    cr_assert_eq(warned, 0);
    cr_assert_eq(find(l, n, "10.0.1.1:1")->weight, 80);
    cr_assert_eq(find(l, n, "10.0.1.2:1")->weight, 80);
    cr_assert_eq(find(l, n, "10.0.1.3:1")->weight, 10, "(100 - 80) / 2 versions");
    cr_assert_eq(find(l, n, "10.0.1.4:1")->weight, 10);
    cr_assert_eq(find(l, n, "10.0.1.5:1")->weight, 10);
    cr_assert_eq(find(l, n, "10.0.2.1:1")->weight, 30);
    cr_assert_eq(find(l, n, "10.0.2.2:1")->weight, 30, "its version's weight");
    cr_assert_eq(find(l, n, "10.0.2.3:1")->weight, 70);
    cr_assert_eq(find(l, n, "10.0.3.1:1")->weight, 150);
    cr_assert_eq(find(l, n, "10.0.3.2:1")->weight, 0);
    cr_assert_eq(find(l, n, "10.0.4.1:1")->weight, 50);
    cr_assert_eq(find(l, n, "10.0.4.2:1")->weight, 50);
    discovery_list_free(l, n);
    discovery_consul_skips_destroy(sk);
}

Test(discovery_consul, addresses_ipv6_in_brackets_and_unusable_ones_left_out)
{
    discovery_consul_skips_t *sk = discovery_consul_skips_create("inference");
    const entry_t e[] = {
        {"v6", NULL, "::1", 7001, "pool=small"},
        {"v6-full", NULL, "2001:db8::10", 443, "pool=small"},
        {"v6-bracketed", NULL, "[2001:db8::11]", 7001, "pool=small"},
        {"v4", NULL, "127.0.0.1", 65535, "pool=small"},
        {"no-address", NULL, "", 7001, "pool=small"},
        {"port-0", NULL, "10.0.0.1", 0, "pool=small"},
        {"port-big", NULL, "10.0.0.1", 65536, "pool=small"},
        {"space", NULL, "bad host", 7001, "pool=small"},
        {"comma", NULL, "a,b", 7001, "pool=small"},
    };
    size_t n, warned;
    discovery_instance_t *l = convert(sk, e, 9, &n, &warned);
    cr_assert_eq(n, 4);
    cr_assert_eq(warned, 5);
    find(l, n, "[::1]:7001");
    find(l, n, "[2001:db8::10]:443");
    find(l, n, "[2001:db8::11]:7001");
    find(l, n, "127.0.0.1:65535");
    discovery_list_free(l, n);
    discovery_consul_skips_destroy(sk);
}

Test(discovery_consul, sorted_by_address_and_a_shared_address_kept_once)
{
    discovery_consul_skips_t *sk = discovery_consul_skips_create("inference");
    /* Out of id order on purpose; "b" and "a" share an address (a re-registration under
     * a new id, say): the first in id order keeps it.  "same" is one id on two nodes
     * with two addresses: two instances. */
    const entry_t e[] = {
        {"z", NULL, "10.0.0.9", 7001, "pool=small"},
        {"b", NULL, "10.0.0.5", 7001, "pool=large"},
        {"same", "node2", "10.0.0.7", 7001, "pool=small"},
        {"a", NULL, "10.0.0.5", 7001, "pool=small"},
        {"same", "node1", "10.0.0.6", 7001, "pool=small"},
    };
    size_t n, warned;
    discovery_instance_t *l = convert(sk, e, 5, &n, &warned);
    cr_assert_eq(n, 4);
    cr_assert_eq(warned, 1, "the second holder of an address");
    cr_assert_str_eq(l[0].addr, "10.0.0.5:7001");
    cr_assert_str_eq(l[0].pool, "small", "id a comes before id b");
    cr_assert_str_eq(l[1].addr, "10.0.0.6:7001");
    cr_assert_str_eq(l[2].addr, "10.0.0.7:7001");
    cr_assert_str_eq(l[3].addr, "10.0.0.9:7001");
    discovery_list_free(l, n);

    /* Any order in, the same list out. */
    const entry_t r[] = {e[4], e[3], e[2], e[1], e[0]};
    l = convert(sk, r, 5, &n, &warned);
    cr_assert_eq(n, 4);
    cr_assert_eq(warned, 0);
    cr_assert_str_eq(l[0].pool, "small");
    cr_assert_str_eq(l[3].addr, "10.0.0.9:7001");
    discovery_list_free(l, n);

    l = convert(sk, NULL, 0, &n, &warned);
    cr_assert_eq(n, 0);
    cr_assert_eq(warned, 0);
    discovery_list_free(l, n);
    discovery_consul_skips_destroy(sk);
}

Test(discovery_consul, cache_addresses_sorted_unique_and_checked)
{
    discovery_consul_skips_t *sk = discovery_consul_skips_create("cache");
    const entry_t e[] = {
        {"c3", NULL, "10.0.0.3", 50052, NULL}, {"c1", NULL, "10.0.0.1", 50052, "pool=ignored"},
        {"c2", NULL, "::1", 50052, NULL},      {"c4", NULL, "10.0.0.1", 50052, NULL},
        {"c5", NULL, "", 50052, NULL},
    };
    consul_instance_t *in = make(e, 5);
    char **addrs = NULL;
    size_t n = 0, warned = 0;
    discovery_consul_caches(in, 5, sk, &addrs, &n, &warned);
    cr_assert_eq(n, 3);
    cr_assert_eq(warned, 2);
    cr_assert_str_eq(addrs[0], "10.0.0.1:50052");
    cr_assert_str_eq(addrs[1], "10.0.0.3:50052");
    cr_assert_str_eq(addrs[2], "[::1]:50052");
    discovery_consul_caches_free(addrs, n);
    discovery_consul_caches(in, 5, sk, &addrs, &n, &warned);
    cr_assert_eq(warned, 0);
    discovery_consul_caches_free(addrs, n);
    unmake(in, 5);
    discovery_consul_skips_destroy(sk);
}

Test(discovery_consul, config_defaults)
{
    discovery_consul_config_t cfg;
    discovery_consul_config_init(&cfg);
    cr_assert_str_eq(cfg.inference_service, "llmserve-inference");
    cr_assert_str_eq(cfg.cache_service, "llmserve-cache");
    cr_assert_eq(cfg.wait_ms, 30000);
    cr_assert_eq(cfg.wait_first_ms, 2000);
}
