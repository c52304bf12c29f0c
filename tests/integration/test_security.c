/*
 * test_security.c - the suite made safe to expose, end to end on real processes:
 * mutual TLS between the router and every cache and inference instance, TLS and API
 * keys on the router, with certificates made by openssl at test time.
 *
 *   mtls.*   the whole suite over mutual TLS: requests stream, the cache answers (so the
 *            router reached it over mTLS); plaintext, a wrong CA, a client certificate
 *            from another CA and an expired server certificate fail cleanly while the
 *            servers carry on.
 *   keys.*   none, wrong and right keys; a tenant-bound key cannot read another
 *            tenant's cached answer; SIGHUP reloads the key file and a malformed one
 *            keeps the keys in use.
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "llmserve/v1/inference.pb-c.h"
#include "llmserve/v1/router.pb-c.h"
#include "rpc/client.h"
#include "support/certs.h"
#include "support/channel.h"
#include "support/router_stream.h"
#include "support/suite.h"
#include "support/tmpdir.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KEY_OPS "ops-key-0123456789abcdef0123"    /* any tenant */
#define KEY_B "tenant-b-key-0123456789abcdef"     /* bound to tenant-b */
#define KEY_C "tenant-c-key-0123456789abcdef"     /* bound to tenant-c */
#define KEY_NEW "rotated-key-0123456789abcdef012" /* added by a reload */

static test_certs_t C;
static test_tmpdir_t T;
static char g_keys[192];
static suite_t S;

static void write_keys(const char *text)
{
    char tmp[224];
    snprintf(tmp, sizeof(tmp), "%s.new", g_keys);
    FILE *f = fopen(tmp, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    cr_assert_eq(rename(tmp, g_keys), 0); /* whole, as an operator's tooling would */
}

static void setup(void)
{
    cr_assert_eq(test_certs_make(&C), 0, "openssl could not make certificates");
    cr_assert_eq(test_tmpdir_make(&T, "llmserve-keys"), 0);
    test_tmpdir_file(&T, "api-keys", g_keys, sizeof(g_keys));
    write_keys("# test keys\n" KEY_OPS "\n" KEY_B " tenant-b\n" KEY_C " tenant-c\n");
}

static void teardown(void)
{
    suite_stop(&S);
    test_certs_remove(&C);
    test_tmpdir_remove(&T);
}

/* The whole suite: mutual TLS inside, TLS and API keys at the router. */
static void start_secure(bool cache, const rpc_md_t *md)
{
    const char *server[] = {"--tls-cert",      C.server_cert, "--tls-key", C.server_key,
                            "--tls-client-ca", C.ca,          NULL};
    const char *router[] = {"--tls-cert",
                            C.server_cert,
                            "--tls-key",
                            C.server_key,
                            "--upstream-tls-ca",
                            C.ca,
                            "--upstream-tls-cert",
                            C.client_cert,
                            "--upstream-tls-key",
                            C.client_key,
                            "--api-keys",
                            g_keys,
                            NULL};
    rpc_channel_config_t ch;
    rpc_channel_config_init(&ch);
    ch.tls_root_file = C.ca;
    suite_start(&S, &(suite_opts_t){.n_small = 1,
                                    .cache = cache,
                                    .router_args = router,
                                    .cache_args = server,
                                    .inference_args = server,
                                    .channel = &ch,
                                    .metadata = md});
}

static rpc_md_t key_md(const char *key)
{
    rpc_md_t md = RPC_MD_INIT;
    if (key) {
        char v[128];
        snprintf(v, sizeof(v), "Bearer %s", key);
        rpc_md_add(&md, "authorization", v);
    }
    return md;
}

/* One request on a stream of its own with key (NULL: none); returns its record, or,
 * when the router refused the stream itself, a record with err_code set to the
 * stream's status.  A stream whose request ended is closed with its checks (status OK,
 * nothing after the terminal event). */
static router_stream_rec_t ask_req(const char *key, const router_stream_req_t *req)
{
    rpc_md_t md = key_md(key);
    rpc_call_opts_t o = *suite_call_opts(&S);
    o.metadata = &md;
    router_stream_t *g = router_stream_open(S.ch, &o);
    router_stream_rec_t r;
    if (router_stream_send_submit(g, req) == LS_OK)
        r = router_stream_wait(g, req->id, 0, 30000);
    else
        memset(&r, 0, sizeof(r));
    if (r.terminal) {
        router_stream_close(g);
    } else {
        router_stream_wait_end(g, 10000);
        rpc_status_t st = router_stream_status(g);
        r.err_code = st.code;
        snprintf(r.err_msg, sizeof(r.err_msg), "%s", st.details);
        router_stream_destroy(g);
    }
    rpc_md_clear(&md);
    return r;
}

/* A greedy request of prompt with key. */
static router_stream_rec_t ask(const char *key, const char *prompt, const char *id)
{
    return ask_req(key, &(router_stream_req_t){.id = id, .prompt = prompt, .max_tokens = 8});
}

/* ---- mutual TLS ----------------------------------------------------------------------- */

TestSuite(mtls, .init = setup, .fini = teardown, .timeout = 180);

Test(mtls, the_suite_serves_over_mutual_tls)
{
    rpc_md_t md = key_md(KEY_OPS);
    start_secure(true, &md);
    router_stream_t *g = router_stream_open(S.ch, suite_call_opts(&S));
    router_stream_submit(
        g, &(router_stream_req_t){.id = "a", .prompt = "Once upon a time", .max_tokens = 12});
    router_stream_rec_t r = router_stream_finish(g, "a");
    cr_assert(r.done, "%d %s", r.err_code, r.err_msg);
    cr_assert_eq(r.tokens, 12);
    cr_assert_not(r.token_cache_hit);
    /* The same prompt again comes from the cache: the router reached it over mTLS. */
    bool hit = false;
    for (int i = 0; i < 50 && !hit; i++) {
        char id[16];
        snprintf(id, sizeof(id), "b%d", i);
        router_stream_submit(
            g, &(router_stream_req_t){.id = id, .prompt = "Once upon a time", .max_tokens = 12});
        router_stream_rec_t again = router_stream_finish(g, id);
        cr_assert(again.done);
        hit = again.token_cache_hit;
        if (hit)
            cr_assert_str_eq(again.text, r.text);
        else
            usleep(100000); /* the store is on its way */
    }
    cr_assert(hit, "never a cache hit: the router does not reach the cache over mTLS");
    router_stream_close(g);
    rpc_md_clear(&md);
    suite_end(&S);
}

/* A unary Inference.Info against an instance's mutual-TLS port, on a new connection. */
static int info_call(int port, const rpc_channel_config_t *cfg)
{
    Llmserve__V1__InfoRequest req = LLMSERVE__V1__INFO_REQUEST__INIT;
    return test_unary_once(port, cfg, "/llmserve.v1.Inference/Info", &req.base,
                           &llmserve__v1__info_response__descriptor, NULL);
}

Test(mtls, bad_peers_fail_cleanly_and_the_servers_carry_on)
{
    rpc_md_t md = key_md(KEY_OPS);
    start_secure(false, &md);
    int router = S.router.port, inst = S.small[0].port;

    /* The router's TLS port. */
    rpc_channel_config_t plain, wrong_ca, good = test_tls_config(C.ca, NULL, NULL);
    rpc_channel_config_init(&plain);
    wrong_ca = test_tls_config(C.rogue_ca, NULL, NULL);
    /* Connections of their own: a failed handshake on a connection gRPC shares between
     * channels can outlive the client and show as a leak inside OpenSSL at exit. */
    plain.own_connections = wrong_ca.own_connections = good.own_connections = true;
    rpc_client_t *client = rpc_client_create(1);
    const rpc_channel_config_t *bad[] = {&plain, &wrong_ca};
    for (int i = 0; i < 2; i++) {
        rpc_channel_t *ch = test_channel_to(client, router, bad[i]);
        cr_assert_not(test_channel_ready(ch, 2000), "case %d reached the router", i);
        rpc_channel_destroy(ch);
    }
    rpc_channel_t *ok = test_channel_to(client, router, &good);
    cr_assert(test_channel_ready(ok, 10000), "the router stopped answering");
    rpc_channel_destroy(ok);
    rpc_client_destroy(client);

    /* An instance's mutual-TLS port. */
    rpc_channel_config_t no_cert = test_tls_config(C.ca, NULL, NULL);
    rpc_channel_config_t rogue = test_tls_config(C.ca, C.rogue_cert, C.rogue_key);
    rpc_channel_config_t with_cert = test_tls_config(C.ca, C.client_cert, C.client_key);
    cr_assert_eq(info_call(inst, &plain), GRPC_STATUS_UNAVAILABLE, "plaintext");
    cr_assert_eq(info_call(inst, &no_cert), GRPC_STATUS_UNAVAILABLE, "no client cert");
    cr_assert_eq(info_call(inst, &rogue), GRPC_STATUS_UNAVAILABLE, "a cert from another CA");
    cr_assert_eq(info_call(inst, &with_cert), GRPC_STATUS_OK, "the router's own cert");

    /* And the suite still serves. */
    router_stream_rec_t r = ask(KEY_OPS, "Tom and Lily went", "after");
    cr_assert(r.done, "%d %s", r.err_code, r.err_msg);
    rpc_md_clear(&md);
    suite_end(&S);
}

Test(mtls, an_expired_server_certificate_is_refused_and_the_server_carries_on)
{
    char *argv[] = {(char *)test_env_path("LLMSERVE_INFERENCE_BIN"),
                    "--listen",
                    "127.0.0.1:0",
                    "--model",
                    NULL,
                    "--tokenizer",
                    NULL,
                    "--cpu-threads",
                    "1",
                    "--tls-cert",
                    C.expired_cert,
                    "--tls-key",
                    C.expired_key,
                    NULL};
    char model[512], tok[512];
    snprintf(model, sizeof(model), "%s/small.bin", test_env_path("LLMSERVE_ROUTER_MODELS"));
    snprintf(tok, sizeof(tok), "%s/tok.bin", test_env_path("LLMSERVE_ROUTER_MODELS"));
    argv[4] = model;
    argv[6] = tok;
    test_proc_t p;
    cr_assert_eq(test_proc_start(&p, argv, 60000), 0, "an expired certificate still starts");
    rpc_channel_config_t cfg = test_tls_config(C.ca, NULL, NULL);
    cr_assert_eq(info_call(p.port, &cfg), GRPC_STATUS_UNAVAILABLE);
    cr_assert_eq(info_call(p.port, &cfg), GRPC_STATUS_UNAVAILABLE, "again: no crash");
    cr_assert_eq(kill(p.pid, 0), 0, "the server carries on");
    cr_assert_eq(test_proc_stop(&p, SIGTERM, 30000), 0);
}

/* ---- API keys -------------------------------------------------------------------------- */

TestSuite(keys, .init = setup, .fini = teardown, .timeout = 180);

Test(keys, none_wrong_and_right)
{
    start_secure(false, NULL);
    router_stream_rec_t r = ask(NULL, "Once upon a time", "none");
    cr_assert_eq(r.err_code, GRPC_STATUS_UNAUTHENTICATED, "no key: %d %s", r.err_code, r.err_msg);
    cr_assert_null(strstr(r.err_msg, KEY_OPS), "the message names a key");
    r = ask("not-a-key-0123456789abcdef", "Once upon a time", "wrong");
    cr_assert_eq(r.err_code, GRPC_STATUS_UNAUTHENTICATED, "wrong key");
    r = ask(KEY_OPS, "Once upon a time", "right");
    cr_assert(r.done, "right key: %d %s", r.err_code, r.err_msg);
    cr_assert_eq(r.tokens, 8);
    /* Health needs no key (probes carry none). */
    cr_assert(test_channel_ready(S.ch, 5000));

    /* Complete, the unary call, is guarded the same way. */
    Llmserve__V1__GenerateSubmit sub = LLMSERVE__V1__GENERATE_SUBMIT__INIT;
    sub.prompt = "Once upon a time";
    Llmserve__V1__CompleteRequest creq = LLMSERVE__V1__COMPLETE_REQUEST__INIT;
    creq.request = &sub;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_call_opts_t o = {.timeout_us = 20000000};
    rpc_channel_unary(S.ch, "/llmserve.v1.Router/Complete", &creq.base,
                      &llmserve__v1__complete_response__descriptor, &o, &resp, &st);
    cr_assert_eq(st.code, GRPC_STATUS_UNAUTHENTICATED);
    cr_assert_null(resp);
    rpc_md_t md = key_md(KEY_OPS);
    o.metadata = &md;
    rpc_channel_unary(S.ch, "/llmserve.v1.Router/Complete", &creq.base,
                      &llmserve__v1__complete_response__descriptor, &o, &resp, &st);
    cr_assert_eq(st.code, GRPC_STATUS_OK, "%s", st.details);
    protobuf_c_message_free_unpacked(resp, NULL);
    rpc_md_clear(&md);
    suite_end(&S);
}

/* A greedy request with key naming tenant in the request, which must end; policy
 * READ_ONLY looks up without storing, so a probe never fills the cache itself. */
static router_stream_rec_t ask_tenant(const char *key, const char *tenant,
                                      Llmserve__V1__CachePolicy policy, const char *id)
{
    router_stream_rec_t r =
        ask_req(key, &(router_stream_req_t){.id = id,
                                            .prompt = "The secret recipe of tenant b is",
                                            .tenant = tenant,
                                            .policy = policy,
                                            .max_tokens = 8});
    cr_assert_eq(r.terminal, 1, "%s: %d %s", id, r.err_code, r.err_msg);
    return r;
}

#define STORE LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_DEFAULT
#define PEEK LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_READ_ONLY

Test(keys, a_tenant_bound_key_never_reads_another_tenants_answers)
{
    start_secure(true, NULL);
    /* Tenant b's key asks without naming a tenant: the answer is stored as tenant b's. */
    router_stream_rec_t first = ask_tenant(KEY_B, "", STORE, "b1");
    cr_assert(first.done);
    cr_assert_not(first.token_cache_hit);
    /* An unbound key names tenant b in its request: once the store has landed it finds
     * the answer there (and only there: the probes do not store). */
    bool hit = false;
    for (int i = 0; i < 50 && !hit; i++) {
        char id[16];
        snprintf(id, sizeof(id), "ops-%d", i);
        hit = ask_tenant(KEY_OPS, "tenant-b", PEEK, id).token_cache_hit;
        if (!hit)
            usleep(100000);
    }
    cr_assert(hit, "the answer was not stored under the key's tenant");
    /* Tenant c's key, asking as tenant b or as nobody: its own tenant wins, so a miss. */
    router_stream_rec_t c = ask_tenant(KEY_C, "tenant-b", PEEK, "c1");
    cr_assert(c.done);
    cr_assert_not(c.token_cache_hit, "tenant c read tenant b's cached answer");
    c = ask_tenant(KEY_C, "", PEEK, "c2");
    cr_assert_not(c.token_cache_hit, "tenant c read an answer outside its tenant");
    /* Tenant b's own key reads it back. */
    cr_assert(ask_tenant(KEY_B, "tenant-c", PEEK, "b2").token_cache_hit);
    suite_end(&S);
}

/* Sends SIGHUP to the router and waits until key gives want (an OK or a refusal). */
static bool wait_key(const char *key, bool want_ok)
{
    for (int i = 0; i < 100; i++) {
        char id[16];
        snprintf(id, sizeof(id), "k%d", i);
        router_stream_rec_t r = ask(key, "Once upon a time", id);
        bool ok = r.done;
        if (ok == want_ok && (want_ok || r.err_code == GRPC_STATUS_UNAUTHENTICATED))
            return true;
        usleep(50000);
    }
    return false;
}

Test(keys, sighup_reloads_the_file_and_a_malformed_one_keeps_the_keys)
{
    start_secure(false, NULL);
    cr_assert(wait_key(KEY_OPS, true));
    cr_assert(wait_key(KEY_NEW, false));

    write_keys(KEY_NEW "\n" KEY_B " tenant-b\n"); /* KEY_OPS revoked, KEY_NEW added */
    cr_assert_eq(kill(S.router.pid, SIGHUP), 0);
    cr_assert(wait_key(KEY_NEW, true), "the new key was not taken");
    cr_assert(wait_key(KEY_OPS, false), "the revoked key still works");

    write_keys(KEY_OPS " tenant x y z\n"); /* malformed: three fields */
    cr_assert_eq(kill(S.router.pid, SIGHUP), 0);
    usleep(300000);
    cr_assert(wait_key(KEY_NEW, true), "a malformed file dropped the keys in use");
    cr_assert(wait_key(KEY_OPS, false), "a malformed file let its key in");
    cr_assert_eq(kill(S.router.pid, 0), 0, "the router carries on");
    suite_end(&S);
}
