#define _GNU_SOURCE
#include "test_cache_support.h"

#include "base/clock.h"
#include "base/err.h"
#include "rpc/codec.h"
#include "support/channel.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tc_cache_start(test_proc_t *p, const char *memcached_config, const char *const *extra)
{
    char *argv[48];
    int n = 0;
    argv[n++] = (char *)test_env_path("LLMSERVE_CACHE_SERVER");
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--rpc-threads";
    argv[n++] = "2";
    argv[n++] = "--memcached";
    argv[n++] = (char *)memcached_config;
    for (; extra && *extra && n < 46; extra++)
        argv[n++] = (char *)*extra;
    argv[n] = NULL;
    cr_assert_eq(test_proc_start(p, argv, 20000), 0, "llmserve-cache did not start");
}

int tc_cache_stop(test_proc_t *p)
{
    if (p->pid <= 0)
        return 0;
    return test_proc_stop(p, SIGTERM, 20000);
}

/* ---- session ------------------------------------------------------------------ */

static void on_msg(rpc_stream_t *st, void *ud, const ProtobufCMessage *msg)
{
    (void)st;
    tc_session_t *s = ud;
    Llmserve__V1__CacheResponse *copy = (Llmserve__V1__CacheResponse *)rpc_codec_copy(msg);
    pthread_mutex_lock(&s->mu);
    if (s->n_got == s->cap_got) {
        s->cap_got = s->cap_got ? 2 * s->cap_got : 64;
        s->got = realloc(s->got, s->cap_got * sizeof(*s->got));
    }
    s->got[s->n_got++] = copy;
    s->received++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void on_status(rpc_stream_t *st, void *ud, const rpc_status_t *status,
                      const rpc_md_t *trailers)
{
    (void)st;
    (void)trailers;
    tc_session_t *s = ud;
    pthread_mutex_lock(&s->mu);
    s->status = *status;
    s->ended = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

int tc_session_open(tc_session_t *s, rpc_channel_t *ch)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->next_id = 1;
    rpc_stream_handler_t h = {on_msg, on_status};
    rpc_call_opts_t opts = {.wait_for_ready = true};
    s->stream = rpc_stream_open(ch, "/llmserve.v1.Cache/Session",
                                &llmserve__v1__cache_response__descriptor, &h, s, &opts, 0);
    return s->stream ? 0 : -1;
}

int tc_session_close(tc_session_t *s)
{
    rpc_stream_close_send(s->stream);
    int64_t end = ls_now_us() + 20000000;
    pthread_mutex_lock(&s->mu);
    while (!s->ended && ls_now_us() < end) {
        pthread_mutex_unlock(&s->mu);
        ls_sleep_us(2000);
        pthread_mutex_lock(&s->mu);
    }
    bool ended = s->ended;
    pthread_mutex_unlock(&s->mu);
    if (!ended) {
        rpc_stream_cancel(s->stream);
        while (!rpc_stream_ended(s->stream))
            ls_sleep_us(2000);
    }
    rpc_stream_release(s->stream);
    for (size_t i = 0; i < s->n_got; i++)
        llmserve__v1__cache_response__free_unpacked(s->got[i], NULL);
    free(s->got);
    return ended ? (int)s->status.code : -1;
}

uint64_t tc_send(tc_session_t *s, Llmserve__V1__CacheRequest *req)
{
    pthread_mutex_lock(&s->mu);
    req->id = s->next_id++;
    pthread_mutex_unlock(&s->mu);
    cr_assert_eq(rpc_stream_send(s->stream, &req->base), LS_OK, "send failed");
    return req->id;
}

Llmserve__V1__CacheResponse *tc_wait(tc_session_t *s, uint64_t id, int timeout_ms)
{
    int64_t end = ls_now_us() + (int64_t)timeout_ms * 1000;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        for (size_t i = 0; i < s->n_got; i++) {
            if (s->got[i]->id == id) {
                Llmserve__V1__CacheResponse *r = s->got[i];
                s->got[i] = s->got[--s->n_got];
                pthread_mutex_unlock(&s->mu);
                return r;
            }
        }
        if (s->ended || ls_now_us() >= end)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 2000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

Llmserve__V1__CacheResponse *tc_call(tc_session_t *s, Llmserve__V1__CacheRequest *req)
{
    return tc_wait(s, tc_send(s, req), 5000);
}

/* ---- builders ------------------------------------------------------------------ */

static void init_key(tc_req_t *r, const char *tenant, const char *model, const char *prompt)
{
    memset(r, 0, sizeof(*r));
    llmserve__v1__cache_request__init(&r->req);
    llmserve__v1__cache_key__init(&r->key);
    llmserve__v1__sampling_params__init(&r->sampling);
    r->key.tenant = (char *)tenant;
    r->key.model = (char *)model;
    r->key.prompt = (char *)prompt;
    r->key.sampling = &r->sampling;
}

Llmserve__V1__CacheRequest *tc_lookup(tc_req_t *r, const char *tenant, const char *model,
                                      const char *prompt, bool semantic)
{
    init_key(r, tenant, model, prompt);
    llmserve__v1__cache_lookup__init(&r->lookup);
    r->lookup.key = &r->key;
    r->lookup.semantic = semantic;
    r->req.kind_case = LLMSERVE__V1__CACHE_REQUEST__KIND_LOOKUP;
    r->req.lookup = &r->lookup;
    return &r->req;
}

Llmserve__V1__CacheRequest *tc_store(tc_req_t *r, const char *tenant, const char *model,
                                     const char *prompt, const char *text, bool semantic)
{
    init_key(r, tenant, model, prompt);
    llmserve__v1__cache_store__init(&r->store);
    llmserve__v1__usage__init(&r->usage);
    r->usage.prompt_tokens = 5;
    r->usage.completion_tokens = 3;
    r->store.key = &r->key;
    r->store.text = (char *)text;
    r->store.finish_reason = LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS;
    r->store.usage = &r->usage;
    r->store.semantic = semantic;
    r->store.model_version = "v1";
    r->req.kind_case = LLMSERVE__V1__CACHE_REQUEST__KIND_STORE;
    r->req.store = &r->store;
    return &r->req;
}

Llmserve__V1__CacheRequest *tc_invalidate_key(tc_req_t *r, const char *tenant, const char *model,
                                              const char *prompt)
{
    init_key(r, tenant, model, prompt);
    llmserve__v1__cache_invalidate__init(&r->inv);
    r->inv.key = &r->key;
    r->req.kind_case = LLMSERVE__V1__CACHE_REQUEST__KIND_INVALIDATE;
    r->req.invalidate = &r->inv;
    return &r->req;
}

Llmserve__V1__CacheRequest *tc_invalidate_model(tc_req_t *r, const char *model)
{
    init_key(r, "", model, "");
    llmserve__v1__cache_invalidate__init(&r->inv);
    r->inv.model = (char *)model;
    r->inv.all_of_model = true;
    r->req.kind_case = LLMSERVE__V1__CACHE_REQUEST__KIND_INVALIDATE;
    r->req.invalidate = &r->inv;
    return &r->req;
}

Llmserve__V1__CacheRequest *tc_stats(tc_req_t *r)
{
    memset(r, 0, sizeof(*r));
    llmserve__v1__cache_request__init(&r->req);
    llmserve__v1__cache_stats_request__init(&r->stats);
    r->req.kind_case = LLMSERVE__V1__CACHE_REQUEST__KIND_STATS;
    r->req.stats = &r->stats;
    return &r->req;
}

Llmserve__V1__CacheResponse *tc_do_lookup(tc_session_t *s, const char *tenant, const char *model,
                                          const char *prompt, bool semantic)
{
    tc_req_t r;
    Llmserve__V1__CacheResponse *resp = tc_call(s, tc_lookup(&r, tenant, model, prompt, semantic));
    cr_assert_not_null(resp, "no answer to a lookup");
    cr_assert_eq(resp->kind_case, LLMSERVE__V1__CACHE_RESPONSE__KIND_LOOKUP,
                 "lookup answered with kind %d (%s)", resp->kind_case,
                 resp->kind_case == LLMSERVE__V1__CACHE_RESPONSE__KIND_ERROR ? resp->error->message
                                                                             : "");
    return resp;
}

void tc_do_store(tc_session_t *s, const char *tenant, const char *model, const char *prompt,
                 const char *text, bool semantic)
{
    tc_req_t r;
    Llmserve__V1__CacheResponse *resp =
        tc_call(s, tc_store(&r, tenant, model, prompt, text, semantic));
    cr_assert_not_null(resp, "no answer to a store");
    cr_assert_eq(resp->kind_case, LLMSERVE__V1__CACHE_RESPONSE__KIND_STORE);
    cr_assert(resp->store->stored, "not stored: %s", resp->store->reason);
    llmserve__v1__cache_response__free_unpacked(resp, NULL);
}

Llmserve__V1__CacheResponse *tc_do_stats(tc_session_t *s)
{
    tc_req_t r;
    Llmserve__V1__CacheResponse *resp = tc_call(s, tc_stats(&r));
    cr_assert_not_null(resp);
    cr_assert_eq(resp->kind_case, LLMSERVE__V1__CACHE_RESPONSE__KIND_STATS);
    return resp;
}

/* ---- a connected service ---------------------------------------------------------- */

void tc_connect(tc_conn_t *c, const char *memcached_config, const char *const *extra)
{
    tc_cache_start(&c->svc, memcached_config, extra);
    c->client = rpc_client_create(1);
    c->ch = test_channel_to(c->client, c->svc.port, NULL);
    cr_assert_not_null(c->ch);
    cr_assert_eq(tc_session_open(&c->s, c->ch), 0);
}

void tc_disconnect(tc_conn_t *c)
{
    cr_expect_eq(tc_session_close(&c->s), GRPC_STATUS_OK, "session did not end with OK");
    rpc_channel_destroy(c->ch);
    rpc_client_destroy(c->client);
    int st = tc_cache_stop(&c->svc);
    cr_expect_eq(st, 0, "llmserve-cache exit status %d (leak or crash at shutdown?)", st);
}
