/*
 * test_keys.c - the API key file (libs/svc/keys.c): format, checks, reloads.
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "base/log.h"
#include "svc/keys.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_path[64];
static char err[512];

static void setup(void)
{
    ls_log_set_level(LS_LOG_ERROR);
    snprintf(g_path, sizeof(g_path), "/tmp/llmserve-keys-XXXXXX");
    int fd = mkstemp(g_path);
    cr_assert_geq(fd, 0);
    close(fd);
    memset(err, 0, sizeof(err));
}

static void teardown(void)
{
    unlink(g_path);
}

TestSuite(keys, .init = setup, .fini = teardown);

static void write_file(const char *text)
{
    FILE *f = fopen(g_path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

#define KEY_A "alpha-key-0123456789abcdef"
#define KEY_B "bravo-key-0123456789abcdef"
#define KEY_C "charlie+key/0123456789abcd=="

static const char GOOD[] = "# keys for the tests\n"
                           "\n" KEY_A "\n"
                           "   " KEY_B "   tenant-b  \r\n"
                           "# a comment between\n" KEY_C "\tacme.corp_1\n";

Test(keys, loads_and_checks_keys_with_their_tenants)
{
    write_file(GOOD);
    svc_keys_t *k = svc_keys_load(g_path, err, sizeof(err));
    cr_assert_not_null(k, "%s", err);
    cr_assert_eq(svc_keys_count(k), 3);
    char tenant[SVC_TENANT_MAX + 1];
    cr_assert(svc_keys_check(k, "Bearer " KEY_A, tenant, sizeof(tenant)));
    cr_assert_str_eq(tenant, "");
    cr_assert(svc_keys_check(k, "Bearer " KEY_B, tenant, sizeof(tenant)));
    cr_assert_str_eq(tenant, "tenant-b");
    cr_assert(svc_keys_check(k, "bearer  " KEY_C " ", tenant, sizeof(tenant)),
              "scheme in any case, spaces around the token");
    cr_assert_str_eq(tenant, "acme.corp_1");
    svc_keys_destroy(k);
}

Test(keys, refuses_what_is_not_a_known_bearer_key)
{
    write_file(GOOD);
    svc_keys_t *k = svc_keys_load(g_path, err, sizeof(err));
    cr_assert_not_null(k, "%s", err);
    char tenant[SVC_TENANT_MAX + 1];
    static const char *const bad[] = {
        NULL,
        "",
        "Bearer",
        "Bearer ",
        "Bearer  ",
        KEY_A,
        "Basic " KEY_A,
        "Bearer " KEY_A "x",
        "Bearer " KEY_A " " KEY_B,
        "Bearer alpha-key-0123456789abcde",
        "Bearer wrong-key-0123456789abcdef",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        strcpy(tenant, "x");
        cr_assert_not(svc_keys_check(k, bad[i], tenant, sizeof(tenant)), "accepted %s",
                      bad[i] ? bad[i] : "(null)");
        cr_assert_str_eq(tenant, "");
    }
    svc_keys_destroy(k);
}

/* Each malformed file fails with a message that names the line and never holds a key. */
Test(keys, malformed_files_are_refused_without_showing_keys)
{
    static const struct {
        const char *text;
        const char *says;
    } cases[] = {
        {"", "no key"},
        {"# only a comment\n\n", "no key"},
        {KEY_A " tenant extra\n", "line 1"},
        {KEY_A "\n" KEY_A " t\n", "line 2"},
        {"\n\nsecret-with-a-\"quote\"-0123\n", "line 3"},
        {KEY_A " ten/ant\n", "line 1"},
        {"=starts-with-padding-0123456\n", "line 1"},
        {KEY_A " 0123456789012345678901234567890123456789012345678901234567890123456789\n",
         "line 1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_file(cases[i].text);
        memset(err, 0, sizeof(err));
        cr_assert_null(svc_keys_load(g_path, err, sizeof(err)), "case %zu loaded", i);
        cr_assert_not_null(strstr(err, cases[i].says), "case %zu: %s", i, err);
        cr_assert_null(strstr(err, "alpha-key"), "case %zu shows a key: %s", i, err);
        cr_assert_null(strstr(err, "secret-with"), "case %zu shows a key: %s", i, err);
    }
    unlink(g_path);
    cr_assert_null(svc_keys_load(g_path, err, sizeof(err)));
    cr_assert_not_null(strstr(err, "cannot read"), "%s", err);
}

Test(keys, reload_takes_new_keys_and_keeps_old_ones_on_a_bad_file)
{
    write_file(KEY_A "\n");
    svc_keys_t *k = svc_keys_load(g_path, err, sizeof(err));
    cr_assert_not_null(k, "%s", err);
    char tenant[SVC_TENANT_MAX + 1];
    write_file(KEY_B " tenant-b\n");
    cr_assert_eq(svc_keys_reload(k, err, sizeof(err)), LS_OK, "%s", err);
    cr_assert_not(svc_keys_check(k, "Bearer " KEY_A, tenant, sizeof(tenant)), "revoked");
    cr_assert(svc_keys_check(k, "Bearer " KEY_B, tenant, sizeof(tenant)));
    cr_assert_str_eq(tenant, "tenant-b");
    write_file(KEY_A " too many fields\n");
    cr_assert_eq(svc_keys_reload(k, err, sizeof(err)), LS_ERR_INVALID);
    cr_assert(svc_keys_check(k, "Bearer " KEY_B, tenant, sizeof(tenant)), "old keys kept");
    cr_assert_eq(svc_keys_count(k), 1);
    svc_keys_destroy(k);
    svc_keys_destroy(NULL);
}

Test(keys, a_line_may_name_the_keys_class)
{
    write_file(KEY_A " priority=batch\n" KEY_B " acme priority=interactive\n" KEY_C " acme\n");
    svc_keys_t *k = svc_keys_load(g_path, err, sizeof(err));
    cr_assert_not_null(k, "%s", err);
    char tenant[SVC_TENANT_MAX + 1];
    svc_priority_t cls;
    cr_assert(svc_keys_check_class(k, "Bearer " KEY_A, tenant, sizeof(tenant), &cls));
    cr_assert_str_eq(tenant, "");
    cr_assert_eq(cls, SVC_PRIORITY_BATCH);
    cr_assert(svc_keys_check_class(k, "Bearer " KEY_B, tenant, sizeof(tenant), &cls));
    cr_assert_str_eq(tenant, "acme");
    cr_assert_eq(cls, SVC_PRIORITY_INTERACTIVE);
    cr_assert(svc_keys_check_class(k, "Bearer " KEY_C, tenant, sizeof(tenant), &cls));
    cr_assert_str_eq(tenant, "acme");
    cr_assert_eq(cls, SVC_PRIORITY_NONE);
    svc_keys_destroy(k);
}

Test(keys, an_unknown_class_or_a_fourth_field_is_malformed)
{
    write_file(KEY_A " acme priority=urgent\n");
    cr_assert_null(svc_keys_load(g_path, err, sizeof(err)));
    cr_assert(strstr(err, "line 1") && strstr(err, "unknown class"), "%s", err);
    write_file(KEY_A " acme priority=batch extra\n");
    cr_assert_null(svc_keys_load(g_path, err, sizeof(err)));
    cr_assert(strstr(err, "more fields"), "%s", err);
    write_file(KEY_A " priority=batch acme\n");
    cr_assert_null(svc_keys_load(g_path, err, sizeof(err)), "the class comes last");
}

Test(keys, the_principal_carries_tenant_and_class_and_parses_back)
{
    char buf[128], tenant[SVC_TENANT_MAX + 1];
    svc_priority_t cls;
    svc_keys_principal_format("acme", SVC_PRIORITY_NONE, buf, sizeof(buf));
    cr_assert_str_eq(buf, "acme", "without a class the principal is the tenant");
    svc_keys_principal_parse(buf, tenant, sizeof(tenant), &cls);
    cr_assert_str_eq(tenant, "acme");
    cr_assert_eq(cls, SVC_PRIORITY_NONE);
    svc_keys_principal_format("", SVC_PRIORITY_BATCH, buf, sizeof(buf));
    svc_keys_principal_parse(buf, tenant, sizeof(tenant), &cls);
    cr_assert_str_eq(tenant, "");
    cr_assert_eq(cls, SVC_PRIORITY_BATCH);
    svc_keys_principal_format("acme", SVC_PRIORITY_INTERACTIVE, buf, sizeof(buf));
    cr_assert_str_eq(buf, "acme;priority=interactive");
    svc_keys_principal_parse(buf, tenant, sizeof(tenant), &cls);
    cr_assert_str_eq(tenant, "acme");
    cr_assert_eq(cls, SVC_PRIORITY_INTERACTIVE);
    svc_keys_principal_parse(NULL, tenant, sizeof(tenant), &cls);
    cr_assert_str_eq(tenant, "");
    cr_assert_eq(cls, SVC_PRIORITY_NONE);
    cr_assert_str_eq(svc_priority_name(SVC_PRIORITY_NORMAL), "normal");
    cr_assert_str_eq(svc_priority_name(9), "unspecified");
}
