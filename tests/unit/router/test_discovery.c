/*
 * test_discovery.c - services/router/discovery_static.c: the static pool spec.
 */
#include "base/err.h"
#include "discovery.h"

#include <criterion/criterion.h>
#include <string.h>

static discovery_instance_t *parse_ok(const char *spec, size_t *n)
{
    discovery_instance_t *l = NULL;
    char err[256] = "";
    int rc = discovery_static_parse(spec, &l, n, err, sizeof(err));
    cr_assert_eq(rc, LS_OK, "%s: %s", spec, err);
    return l;
}

static void parse_bad(const char *spec, const char *want)
{
    discovery_instance_t *l = NULL;
    size_t n = 99;
    char err[256] = "";
    int rc = discovery_static_parse(spec, &l, &n, err, sizeof(err));
    cr_assert_eq(rc, LS_ERR_INVALID, "'%s' was accepted", spec);
    cr_assert_null(l);
    cr_assert_eq(n, 0);
    cr_assert(strstr(err, want), "'%s': error '%s' lacks '%s'", spec, err, want);
}

Test(discovery, pools_instances_and_versions)
{
    size_t n;
    discovery_instance_t *l = parse_ok(
        "small=127.0.0.1:7001, 127.0.0.1:7002; large@v1:95=127.0.0.1:7003\n"
        "large@v2:5=127.0.0.1:7004",
        &n);
    cr_assert_eq(n, 4);
    cr_assert_str_eq(l[0].pool, "small");
    cr_assert_str_eq(l[0].version, "");
    cr_assert_eq(l[0].weight, 100);
    cr_assert_str_eq(l[1].addr, "127.0.0.1:7002");
    cr_assert_str_eq(l[2].pool, "large");
    cr_assert_str_eq(l[2].version, "v1");
    cr_assert_eq(l[2].weight, 95);
    cr_assert_str_eq(l[3].version, "v2");
    cr_assert_eq(l[3].weight, 5);
    discovery_list_free(l, n);
}

Test(discovery, implicit_weights_share_the_rest_of_100)
{
    size_t n;
    discovery_instance_t *l =
        parse_ok("large@v1=h:1,h:2;large@v2:10=h:3;large@v3=h:4;medium=h:5", &n);
    cr_assert_eq(n, 5);
    cr_assert_eq(l[0].weight, 45); /* (100 - 10) / 2 versions */
    cr_assert_eq(l[1].weight, 45);
    cr_assert_eq(l[2].weight, 10);
    cr_assert_eq(l[3].weight, 45);
    cr_assert_eq(l[4].weight, 100);
    discovery_list_free(l, n);
}

Test(discovery, bad_specs_are_refused_with_reasons)
{
    parse_bad("", "no pool");
    parse_bad("small", "no '='");
    parse_bad("Small=h:1", "pool name");
    parse_bad("small=", "lists no instance");
    parse_bad("small=localhost", "HOST:PORT");
    parse_bad("small=h:0", "HOST:PORT");
    parse_bad("small=h:70000", "HOST:PORT");
    parse_bad("small@=h:1", "version");
    parse_bad("small@v1:x=h:1", "weight");
    parse_bad("small@v1:-1=h:1", "weight");
    parse_bad("small=h:1;large=h:1", "twice");
    parse_bad("large@v1=h:1;large=h:2", "mixes");
}

static int updates;
static size_t last_n;

static void on_update(void *ud, const discovery_instance_t *list, size_t n)
{
    cr_assert_eq(ud, &updates);
    cr_assert_str_eq(list[0].pool, "small");
    updates++;
    last_n = n;
}

Test(discovery, static_source_delivers_once_on_start)
{
    char err[128];
    discovery_t *d = discovery_static_create("small=127.0.0.1:1,127.0.0.1:2", err, sizeof(err));
    cr_assert_not_null(d, "%s", err);
    cr_assert_not(d->ops->dynamic);
    cr_assert_eq(discovery_watch_caches(d, NULL, NULL), LS_ERR_NOT_FOUND, "knows no caches");
    cr_assert_eq(discovery_start(d, on_update, &updates), LS_OK);
    cr_assert_eq(updates, 1);
    cr_assert_eq(last_n, 2);
    discovery_destroy(d);
    discovery_destroy(NULL);
    cr_assert_null(discovery_static_create("nope", err, sizeof(err)));
    cr_assert(strstr(err, "no '='"), "%s", err);
}
