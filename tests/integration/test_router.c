/*
 * test_router.c - the whole suite end to end: memcached, llmserve-cache, inference
 * instances and llmserve-router as real processes on loopback, driven over
 * Router.Generate with the library's client.
 *
 * Models come from the router_models fixture (tests/router.cmake): two tiny models with
 * different seeds ("small", "large") and a wider "slow" one whose tokens take long
 * enough to act between them (cancel, kill, deadline mid-stream) even on a fast CPU.
 * Instances are frozen with SIGSTOP where a test needs a pool that does not answer.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "llmserve/v1/router.pb-c.h"
#include "rpc/client.h"
#include "rpc/codec.h"
#include "support/proc.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_INST 4
#define SIMPLE_PROMPT "Once upon a time there was a cat"
#define COMPLEX_PROMPT                                                                          \
    "Explain step by step why this C code is slow and prove the bound: ```for (int i = 0; i " \
    "< n; i++) { s += a[i] * 2; }``` What is 3 * 4? Why?"

/* ---- the processes ----------------------------------------------------------------- */

typedef struct {
    pid_t memcached;
    int memcached_port;
    test_proc_t cache;
    test_proc_t small[MAX_INST], large[MAX_INST];
    int n_small, n_large;
    test_proc_t router;
    rpc_client_t *client;
    rpc_channel_t *ch;
    bool stopped;
} suite_t;

static suite_t S;

typedef struct {
    int n_small, n_large;
    bool slow_large; /* large pool runs the slow model */
    bool cache;
    const char *router_extra[8];
} suite_opts_t;

static const char *model(const char *name)
{
    static char path[8][512];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, 512, "%s/%s", test_env_path("LLMSERVE_ROUTER_MODELS"), name);
    return p;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static bool can_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static void start_memcached(void)
{
    S.memcached_port = free_port();
    char port[16];
    snprintf(port, sizeof(port), "%d", S.memcached_port);
    const char *bin = test_env_path("LLMSERVE_MEMCACHED");
    /* -u root only matters (and is required) when run as root. */
    char *argv[] = {(char *)bin, "-l", "127.0.0.1", "-p", port, "-U", "0",
                    geteuid() == 0 ? "-u" : NULL, "root", NULL};
    pid_t pid = test_spawn(argv);
    cr_assert_geq(pid, 0, "cannot start %s", bin);
    S.memcached = pid;
    for (int i = 0; i < 500 && !can_connect(S.memcached_port); i++)
        usleep(10000);
    cr_assert(can_connect(S.memcached_port), "memcached did not start");
}

static void start_inference(test_proc_t *p, const char *pool, const char *file, const char *name)
{
    char *argv[] = {(char *)test_env_path("LLMSERVE_INFERENCE_BIN"),
                    "--listen", "127.0.0.1:0",
                    "--model", (char *)model(file),
                    "--tokenizer", (char *)model("tok.bin"),
                    "--pool", (char *)pool,
                    "--model-name", (char *)name,
                    "--threads", "1",
                    "--grace-ms", "500",
                    /* the slow model's long context: room for four whole sequences, which
                     * every test has enough of, rather than the default max batch's worth */
                    strcmp(file, "slow.bin") ? NULL : "--kv-budget-tokens", "8192",
                    NULL};
    cr_assert_eq(test_proc_start(p, argv, 60000), 0, "inference %s did not start", pool);
}

static void suite_start(const suite_opts_t *o)
{
    memset(&S, 0, sizeof(S));
    char pools[1024] = "";
    size_t used = 0;
    S.n_small = o->n_small;
    S.n_large = o->n_large;
    used += (size_t)snprintf(pools + used, sizeof(pools) - used, "small=");
    for (int i = 0; i < o->n_small; i++) {
        start_inference(&S.small[i], "small", "small.bin", "tiny-small");
        used += (size_t)snprintf(pools + used, sizeof(pools) - used, "%s127.0.0.1:%d",
                                 i ? "," : "", S.small[i].port);
    }
    if (o->n_large) {
        used += (size_t)snprintf(pools + used, sizeof(pools) - used, ";large=");
        for (int i = 0; i < o->n_large; i++) {
            start_inference(&S.large[i], "large", o->slow_large ? "slow.bin" : "large.bin",
                            o->slow_large ? "slow-large" : "tiny-large");
            used += (size_t)snprintf(pools + used, sizeof(pools) - used, "%s127.0.0.1:%d",
                                     i ? "," : "", S.large[i].port);
        }
    }
    char cache_addr[64] = "";
    if (o->cache) {
        start_memcached();
        char server[64];
        snprintf(server, sizeof(server), "--SERVER=127.0.0.1:%d", S.memcached_port);
        char *argv[] = {(char *)test_env_path("LLMSERVE_CACHE_BIN"), "--listen", "127.0.0.1:0",
                        "--memcached", server, NULL};
        cr_assert_eq(test_proc_start(&S.cache, argv, 60000), 0, "cache did not start");
        snprintf(cache_addr, sizeof(cache_addr), "127.0.0.1:%d", S.cache.port);
    }
    char *argv[40];
    int n = 0;
    argv[n++] = (char *)test_env_path("LLMSERVE_ROUTER_BIN");
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--pool";
    argv[n++] = pools;
    argv[n++] = "--cache";
    argv[n++] = cache_addr;
    argv[n++] = "--ttft-budget-ms";
    argv[n++] = "3000";
    argv[n++] = "--grace-ms";
    argv[n++] = "500";
    argv[n++] = "--seed";
    argv[n++] = "1";
    if (!o->n_large) {
        argv[n++] = "--tiers";
        argv[n++] = "";
    }
    for (int i = 0; i < 8 && o->router_extra[i]; i++)
        argv[n++] = (char *)o->router_extra[i];
    argv[n] = NULL;
    cr_assert_eq(test_proc_start(&S.router, argv, 60000), 0, "router did not start");
    S.client = rpc_client_create(1);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", S.router.port);
    S.ch = rpc_channel_create(S.client, target, NULL);
}

static void stop_proc(test_proc_t *p, bool must_be_clean, const char *what)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGCONT); /* a test may have frozen it */
    int st = test_proc_stop(p, SIGTERM, 30000);
    if (must_be_clean)
        cr_expect_eq(st, 0, "%s exit status %d (leak or crash at shutdown?)", what, st);
    p->pid = 0;
}

static void suite_stop(void)
{
    if (S.stopped)
        return;
    S.stopped = true;
    rpc_channel_destroy(S.ch);
    rpc_client_destroy(S.client);
    stop_proc(&S.router, true, "router");
    for (int i = 0; i < S.n_small; i++)
        stop_proc(&S.small[i], false, "inference");
    for (int i = 0; i < S.n_large; i++)
        stop_proc(&S.large[i], false, "inference");
    stop_proc(&S.cache, false, "cache");
    if (S.memcached > 0) {
        kill(S.memcached, SIGTERM);
        waitpid(S.memcached, NULL, 0);
    }
}

/* Stops everything at the end of a test body, where (unlike in .fini) a failed check
 * fails the test: the router must exit 0 after SIGTERM, leak-free under sanitizers. */
static void end_suite(void)
{
    rpc_channel_destroy(S.ch);
    rpc_client_destroy(S.client);
    S.ch = NULL;
    S.client = NULL;
    kill(S.router.pid, SIGCONT);
    int st = test_proc_stop(&S.router, SIGTERM, 30000);
    S.router.pid = 0;
    cr_assert_eq(st, 0, "router exit status %d (leak or crash at shutdown?)", st);
    suite_stop();
}

/* ---- a Generate stream and what it received ---------------------------------------- */

#define MAX_RECS 128

typedef struct {
    char id[64];
    int started, tokens, terminal, after_terminal;
    int refused_duplicates; /* ALREADY_EXISTS answers to a second submit of a live id */
    bool done;
    int finish;
    int err_code;
    char err_msg[512];
    char text[16384];
    size_t text_len;
    int ids[256]; /* of the first 256 token events */
    bool indexes_ok;
    bool token_cache_hit;
    uint32_t completion_tokens;
    uint64_t ttft_us, total_us, cache_lookup_us;
    Llmserve__V1__GenerateStarted *last_started; /* copy */
    uint32_t first_attempt_seen;
} rec_t;

typedef struct {
    rpc_stream_t *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rec_t recs[MAX_RECS];
    int n;
    bool ended;
    rpc_status_t status;
    int unknown_events;
} gen_t;

static rec_t *do_rec(gen_t *g, const char *id)
{
    for (int i = 0; i < g->n; i++)
        if (strcmp(g->recs[i].id, id) == 0)
            return &g->recs[i];
    if (g->n == MAX_RECS)
        return NULL;
    rec_t *r = &g->recs[g->n++];
    memset(r, 0, sizeof(*r));
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->indexes_ok = true;
    return r;
}

static void g_on_message(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    (void)s;
    gen_t *g = ud;
    const Llmserve__V1__GenerateEvent *ev = (const Llmserve__V1__GenerateEvent *)msg;
    pthread_mutex_lock(&g->mu);
    rec_t *r = do_rec(g, ev->request_id);
    if (!r) {
        g->unknown_events++;
    } else if (ev->kind_case == LLMSERVE__V1__GENERATE_EVENT__KIND_ERROR &&
               ev->error->code == GRPC_STATUS_ALREADY_EXISTS) {
        /* The refusal of a duplicate id is the one documented case of an error event
         * that does not end the request the id belongs to: count it apart, so tokens
         * of the first request arriving meanwhile are still counted. */
        r->refused_duplicates++;
    } else if (r->terminal) {
        r->after_terminal++;
    } else {
        switch (ev->kind_case) {
        case LLMSERVE__V1__GENERATE_EVENT__KIND_STARTED:
            r->started++;
            if (r->last_started)
                llmserve__v1__generate_started__free_unpacked(r->last_started, NULL);
            r->last_started = (Llmserve__V1__GenerateStarted *)rpc_codec_copy(&ev->started->base);
            if (!r->first_attempt_seen)
                r->first_attempt_seen = ev->started->attempt;
            break;
        case LLMSERVE__V1__GENERATE_EVENT__KIND_TOKEN: {
            if (ev->token->index != (uint32_t)r->tokens)
                r->indexes_ok = false;
            if (r->tokens < 256)
                r->ids[r->tokens] = ev->token->id;
            r->tokens++;
            r->token_cache_hit = ev->token->cache_hit;
            size_t n = strlen(ev->token->text);
            if (r->text_len + n < sizeof(r->text)) {
                memcpy(r->text + r->text_len, ev->token->text, n + 1);
                r->text_len += n;
            }
            break;
        }
        case LLMSERVE__V1__GENERATE_EVENT__KIND_DONE:
            r->terminal++;
            r->done = true;
            r->finish = ev->done->finish_reason;
            r->completion_tokens = ev->done->usage ? ev->done->usage->completion_tokens : 0;
            if (ev->done->timings) {
                r->ttft_us = ev->done->timings->ttft_us;
                r->total_us = ev->done->timings->total_us;
                r->cache_lookup_us = ev->done->timings->cache_lookup_us;
            }
            break;
        case LLMSERVE__V1__GENERATE_EVENT__KIND_ERROR:
            r->terminal++;
            r->err_code = ev->error->code;
            snprintf(r->err_msg, sizeof(r->err_msg), "%s", ev->error->message);
            break;
        default:
            break;
        }
    }
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void g_on_status(rpc_stream_t *s, void *ud, const rpc_status_t *st, const rpc_md_t *t)
{
    (void)s;
    (void)t;
    gen_t *g = ud;
    pthread_mutex_lock(&g->mu);
    g->status = *st;
    g->ended = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static gen_t *gen_open(void)
{
    gen_t *g = calloc(1, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    rpc_stream_handler_t h = {g_on_message, g_on_status};
    rpc_call_opts_t opts = {.wait_for_ready = true, .timeout_us = 120000000};
    g->s = rpc_stream_open(S.ch, "/llmserve.v1.Router/Generate",
                           &llmserve__v1__generate_event__descriptor, &h, g, &opts, 0);
    cr_assert_not_null(g->s);
    return g;
}

typedef struct {
    const char *id, *prompt, *hint, *conversation;
    int max_tokens;
    bool ignore_eos;
    uint32_t timeout_ms;
    Llmserve__V1__CachePolicy policy;
    float temperature;
    bool chat; /* send prompt as one user message */
    int role;  /* with chat: role of the message (0 = USER) */
} sub_t;

static void gen_submit(gen_t *g, const sub_t *o)
{
    Llmserve__V1__SamplingParams sp = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    sp.max_tokens = o->max_tokens;
    sp.ignore_eos = o->ignore_eos;
    sp.temperature = o->temperature;
    Llmserve__V1__ChatMessage m = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    Llmserve__V1__ChatMessage *msgs[1] = {&m};
    Llmserve__V1__GenerateSubmit s = LLMSERVE__V1__GENERATE_SUBMIT__INIT;
    s.request_id = (char *)o->id;
    if (o->chat) {
        m.role = o->role ? o->role : LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER;
        m.content = (char *)o->prompt;
        s.n_messages = 1;
        s.messages = msgs;
    } else {
        s.prompt = (char *)(o->prompt ? o->prompt : "");
    }
    s.sampling = &sp;
    s.model_hint = (char *)(o->hint ? o->hint : "");
    s.conversation_id = (char *)(o->conversation ? o->conversation : "");
    s.timeout_ms = o->timeout_ms;
    s.cache_policy = o->policy;
    Llmserve__V1__GenerateRequest req = LLMSERVE__V1__GENERATE_REQUEST__INIT;
    req.kind_case = LLMSERVE__V1__GENERATE_REQUEST__KIND_SUBMIT;
    req.submit = &s;
    cr_assert_eq(rpc_stream_send(g->s, &req.base), LS_OK);
}

static void gen_cancel(gen_t *g, const char *id)
{
    Llmserve__V1__GenerateCancel c = LLMSERVE__V1__GENERATE_CANCEL__INIT;
    c.request_id = (char *)id;
    Llmserve__V1__GenerateRequest req = LLMSERVE__V1__GENERATE_REQUEST__INIT;
    req.kind_case = LLMSERVE__V1__GENERATE_REQUEST__KIND_CANCEL;
    req.cancel = &c;
    cr_assert_eq(rpc_stream_send(g->s, &req.base), LS_OK);
}

/* Waits until request id has at least `tokens` tokens or its terminal event; returns
 * a snapshot. */
static rec_t gen_wait(gen_t *g, const char *id, int tokens, int timeout_ms)
{
    int64_t until = ls_now_us() + (int64_t)timeout_ms * 1000;
    pthread_mutex_lock(&g->mu);
    for (;;) {
        rec_t *r = do_rec(g, id);
        if (r->terminal || (tokens > 0 && r->tokens >= tokens) || g->ended ||
            ls_now_us() >= until)
            break;
        pthread_mutex_unlock(&g->mu);
        usleep(2000);
        pthread_mutex_lock(&g->mu);
    }
    rec_t snap = *do_rec(g, id);
    snap.last_started = NULL;
    pthread_mutex_unlock(&g->mu);
    return snap;
}

/* The last started event of id (borrowed until gen_close). */
static const Llmserve__V1__GenerateStarted *gen_route(gen_t *g, const char *id)
{
    pthread_mutex_lock(&g->mu);
    const Llmserve__V1__GenerateStarted *s = do_rec(g, id)->last_started;
    pthread_mutex_unlock(&g->mu);
    cr_assert_not_null(s, "no started event for %s", id);
    return s;
}

static rec_t gen_finish(gen_t *g, const char *id)
{
    rec_t r = gen_wait(g, id, 0, 60000);
    cr_assert_eq(r.terminal, 1, "request %s: %d terminal events", id, r.terminal);
    return r;
}

static void gen_close(gen_t *g)
{
    rpc_stream_close_send(g->s);
    pthread_mutex_lock(&g->mu);
    int64_t until = ls_now_us() + 60000000;
    while (!g->ended && ls_now_us() < until) {
        pthread_mutex_unlock(&g->mu);
        usleep(2000);
        pthread_mutex_lock(&g->mu);
    }
    bool ended = g->ended;
    rpc_status_t st = g->status;
    int unknown = g->unknown_events;
    for (int i = 0; i < g->n; i++) {
        cr_expect_eq(g->recs[i].after_terminal, 0, "request %s got %d events after its "
                     "terminal event", g->recs[i].id, g->recs[i].after_terminal);
        if (g->recs[i].last_started)
            llmserve__v1__generate_started__free_unpacked(g->recs[i].last_started, NULL);
    }
    pthread_mutex_unlock(&g->mu);
    cr_expect(ended, "stream did not end after half-close");
    cr_expect_eq(st.code, GRPC_STATUS_OK, "stream status %d %s", st.code, st.details);
    cr_expect_eq(unknown, 0);
    rpc_stream_release(g->s);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* One request on its own stream, to completion. */
static rec_t run_one(const sub_t *o, char *pool, char *instance, char *reason, bool *cache_hit)
{
    gen_t *g = gen_open();
    gen_submit(g, o);
    rec_t r = gen_finish(g, o->id);
    if (r.started) {
        const Llmserve__V1__GenerateStarted *s = gen_route(g, o->id);
        if (pool)
            snprintf(pool, 33, "%s", s->pool);
        if (instance)
            snprintf(instance, 64, "%s", s->instance);
        if (reason)
            snprintf(reason, 200, "%s", s->route_reason);
        if (cache_hit)
            *cache_hit = s->cache_hit;
    }
    gen_close(g);
    return r;
}

static void freeze(test_proc_t *p)
{
    cr_assert_eq(kill(p->pid, SIGSTOP), 0);
}

static void thaw(test_proc_t *p)
{
    kill(p->pid, SIGCONT);
}

static test_proc_t *instance_proc(const char *addr)
{
    for (int i = 0; i < S.n_large; i++) {
        char a[64];
        snprintf(a, sizeof(a), "127.0.0.1:%d", S.large[i].port);
        if (strcmp(a, addr) == 0)
            return &S.large[i];
    }
    for (int i = 0; i < S.n_small; i++) {
        char a[64];
        snprintf(a, sizeof(a), "127.0.0.1:%d", S.small[i].port);
        if (strcmp(a, addr) == 0)
            return &S.small[i];
    }
    cr_assert_fail("no instance at %s", addr);
    return NULL;
}

/* ---- tests ------------------------------------------------------------------------- */

static void start_basic(void)
{
    suite_opts_t o = {.n_small = 1, .n_large = 1, .cache = true};
    suite_start(&o);
}

/* As start_basic, with cache hits replayed token by token (up to 64 events). */
static void start_basic_replay(void)
{
    suite_opts_t o = {.n_small = 1, .n_large = 1, .cache = true,
                      .router_extra = {"--cache-replay-events", "64"}};
    suite_start(&o);
}

TestSuite(router, .fini = suite_stop, .timeout = 180);

Test(router, scoring_and_hint_pick_the_pool, .init = start_basic)
{
    char pool[33], reason[200];
    sub_t a = {.id = "simple", .prompt = SIMPLE_PROMPT, .max_tokens = 12};
    rec_t r = run_one(&a, pool, NULL, reason, NULL);
    cr_assert(r.done, "simple: error %d %s", r.err_code, r.err_msg);
    cr_assert_str_eq(pool, "small");
    cr_assert(strstr(reason, "complexity") && strstr(reason, "<"), "%s", reason);
    cr_assert(r.indexes_ok);
    cr_assert_eq((int)r.completion_tokens, r.tokens);

    sub_t b = {.id = "complex", .prompt = COMPLEX_PROMPT, .max_tokens = 12};
    r = run_one(&b, pool, NULL, reason, NULL);
    cr_assert(r.done, "complex: error %d %s", r.err_code, r.err_msg);
    cr_assert_str_eq(pool, "large", "reason: %s", reason);
    cr_assert(strstr(reason, ">="), "%s", reason);

    sub_t c = {.id = "hinted", .prompt = SIMPLE_PROMPT, .hint = "large", .max_tokens = 12};
    gen_t *g = gen_open();
    gen_submit(g, &c);
    r = gen_finish(g, "hinted");
    cr_assert(r.done);
    const Llmserve__V1__GenerateStarted *s = gen_route(g, "hinted");
    cr_assert_str_eq(s->pool, "large");
    cr_assert_str_eq(s->route_reason, "hint");
    cr_assert_eq(s->complexity, 0);
    cr_assert_str_eq(s->model, "tiny-large");
    cr_assert_eq(s->attempt, 1);
    cr_assert_not(s->fallback);
    gen_close(g);
    end_suite();
}

Test(router, repeat_prompt_is_a_cache_hit_with_identical_text, .init = start_basic_replay)
{
    sub_t a = {.id = "first", .prompt = "The little dog ran to the", .max_tokens = 24};
    bool hit = true;
    rec_t first = run_one(&a, NULL, NULL, NULL, &hit);
    cr_assert(first.done, "%d %s", first.err_code, first.err_msg);
    cr_assert_not(hit, "an empty cache cannot hit");
    cr_assert_gt(first.tokens, 0);
    /* The store is sent before the first answer's Done; give the cache a moment. */
    rec_t again;
    char pool[33];
    for (int i = 0; i < 40; i++) {
        sub_t b = {.id = "again", .prompt = "The little dog ran to the", .max_tokens = 24};
        again = run_one(&b, pool, NULL, NULL, &hit);
        if (hit)
            break;
        usleep(50000);
    }
    cr_assert(hit, "the repeated prompt never hit the cache");
    cr_assert(again.done);
    cr_assert(again.token_cache_hit);
    cr_assert_str_eq(again.text, first.text);
    cr_assert_str_eq(pool, "small");
    cr_assert_eq(again.completion_tokens, first.completion_tokens);
    cr_assert_gt(again.cache_lookup_us, 0);
    /* Replayed as the tokens it was first streamed as. */
    cr_assert_eq(again.tokens, first.tokens);
    cr_assert(again.indexes_ok);
    cr_assert_eq(memcmp(again.ids, first.ids, (size_t)first.tokens * sizeof(int)), 0,
                 "replayed token ids differ");

    /* A long answer replays as at most 64 events of consecutive tokens, same text (the
     * default, one event, is checked from Python). */
    sub_t l = {.id = "long", .prompt = "Once there was a", .max_tokens = 200,
               .ignore_eos = true};
    rec_t long1 = run_one(&l, NULL, NULL, NULL, &hit);
    cr_assert(long1.done, "%d %s", long1.err_code, long1.err_msg);
    cr_assert_eq(long1.tokens, 200);
    rec_t long2;
    for (int i = 0; i < 40; i++) {
        long2 = run_one(&l, NULL, NULL, NULL, &hit);
        if (hit)
            break;
        usleep(50000);
    }
    cr_assert(hit, "the long answer never hit the cache");
    cr_assert_str_eq(long2.text, long1.text);
    cr_assert(long2.tokens > 1 && long2.tokens <= 64, "%d events", long2.tokens);
    cr_assert(long2.indexes_ok);
    cr_assert_eq(long2.completion_tokens, 200);

    /* BYPASS neither looks up nor hits. */
    sub_t c = {.id = "bypass", .prompt = "The little dog ran to the", .max_tokens = 24,
               .policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_BYPASS};
    rec_t by = run_one(&c, NULL, NULL, NULL, &hit);
    cr_assert(by.done);
    cr_assert_not(hit);
    cr_assert_str_eq(by.text, first.text, "greedy decoding is deterministic");
    end_suite();
}

Test(router, bad_requests_get_invalid_argument, .init = start_basic)
{
    gen_t *g = gen_open();
    sub_t empty_id = {.id = "", .prompt = "x"};
    gen_submit(g, &empty_id);
    sub_t neither = {.id = "neither", .prompt = ""};
    gen_submit(g, &neither);
    sub_t hot = {.id = "hot", .prompt = "x", .temperature = 3.0f};
    gen_submit(g, &hot);
    sub_t hint = {.id = "hint", .prompt = "x", .hint = "huge"};
    gen_submit(g, &hint);
    sub_t role = {.id = "role", .prompt = "x", .chat = true, .role = 9};
    gen_submit(g, &role);
    sub_t negative = {.id = "neg", .prompt = "x", .max_tokens = -5};
    gen_submit(g, &negative);
    struct {
        const char *id, *needle;
    } want[] = {{"", "request_id"},       {"neither", "neither prompt"},
                {"hot", "temperature"},   {"hint", "not a pool"},
                {"role", "role"},         {"neg", "max_tokens"}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        rec_t r = gen_finish(g, want[i].id);
        cr_assert_eq(r.err_code, GRPC_STATUS_INVALID_ARGUMENT, "%s: code %d", want[i].id,
                     r.err_code);
        cr_assert(strstr(r.err_msg, want[i].needle), "%s: message '%s'", want[i].id, r.err_msg);
        cr_assert_eq(r.started, 0);
    }
    /* The stream is still good. */
    sub_t ok = {.id = "ok", .prompt = SIMPLE_PROMPT, .max_tokens = 4};
    gen_submit(g, &ok);
    cr_assert(gen_finish(g, "ok").done);
    gen_close(g);
    end_suite();
}

static void start_slow(void)
{
    suite_opts_t o = {.n_small = 1, .n_large = 2, .slow_large = true, .cache = false};
    suite_start(&o);
}

Test(router, cancel_mid_stream_ends_with_cancelled_at_once, .init = start_slow)
{
    gen_t *g = gen_open();
    sub_t a = {.id = "long", .prompt = SIMPLE_PROMPT, .hint = "large", .max_tokens = 400,
               .ignore_eos = true};
    gen_submit(g, &a);
    rec_t r = gen_wait(g, "long", 3, 60000);
    cr_assert_geq(r.tokens, 3, "no tokens: %d %s", r.err_code, r.err_msg);
    /* Freeze the instance so the request is surely still running when the cancel comes,
     * however fast this machine decodes; the router must end it without the upstream. */
    test_proc_t *up = instance_proc(gen_route(g, "long")->instance);
    freeze(up);
    r = gen_wait(g, "long", 0, 200);
    cr_assert_eq(r.terminal, 0, "finished before the cancel");
    int64_t t0 = ls_now_us();
    gen_cancel(g, "long");
    r = gen_finish(g, "long");
    int64_t took_ms = (ls_now_us() - t0) / 1000;
    thaw(up);
    cr_assert(r.done);
    cr_assert_eq(r.finish, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_CANCELLED);
    cr_assert_lt(r.tokens, 400);
    cr_assert_eq((int)r.completion_tokens, r.tokens);
    cr_assert_lt(took_ms, 2000, "cancel took %lld ms", (long long)took_ms);
    /* Cancelling an unknown or finished id is ignored. */
    gen_cancel(g, "long");
    gen_cancel(g, "never-sent");
    usleep(300000);
    sub_t b = {.id = "after", .prompt = SIMPLE_PROMPT, .max_tokens = 4};
    gen_submit(g, &b);
    cr_assert(gen_finish(g, "after").done);
    gen_close(g); /* checks: no event after any terminal */
    end_suite();
}

Test(router, deadline_before_and_after_the_first_token, .init = start_slow)
{
    gen_t *g = gen_open();
    /* Tokens flowing when the deadline passes: Done with DEADLINE. */
    sub_t a = {.id = "late", .prompt = SIMPLE_PROMPT, .hint = "large", .max_tokens = 400,
               .ignore_eos = true, .timeout_ms = 1500};
    gen_submit(g, &a);
    rec_t r = gen_wait(g, "late", 1, 60000);
    cr_assert_geq(r.tokens, 1, "no tokens: %d %s", r.err_code, r.err_msg);
    /* Frozen after its first token, the instance cannot finish before the deadline, however
     * fast this machine decodes. */
    test_proc_t *up = instance_proc(gen_route(g, "late")->instance);
    freeze(up);
    r = gen_finish(g, "late");
    thaw(up);
    cr_assert(r.done, "error %d %s", r.err_code, r.err_msg);
    cr_assert_eq(r.finish, LLMSERVE__V1__FINISH_REASON__FINISH_REASON_DEADLINE,
                 "finish %d after %d tokens", r.finish, r.tokens);
    cr_assert(r.tokens > 0 && r.tokens < 400, "%d tokens", r.tokens);
    /* Ended by the 1.5 s deadline: not before it, and not long after (a loaded machine
     * may delay the router's timer a little). */
    cr_assert(r.total_us >= 1450000 && r.total_us < 4500000, "total %llu us",
              (unsigned long long)r.total_us);

    /* Nothing produced in time: DEADLINE_EXCEEDED.  The small pool is frozen (it has no
     * fallback, so nothing else can answer). */
    freeze(&S.small[0]);
    int64_t t0 = ls_now_us();
    sub_t b = {.id = "early", .prompt = SIMPLE_PROMPT, .hint = "small", .max_tokens = 8,
               .timeout_ms = 400};
    gen_submit(g, &b);
    r = gen_finish(g, "early");
    int64_t took_ms = (ls_now_us() - t0) / 1000;
    thaw(&S.small[0]);
    cr_assert_eq(r.err_code, GRPC_STATUS_DEADLINE_EXCEEDED, "code %d %s", r.err_code, r.err_msg);
    cr_assert_eq(r.tokens, 0);
    cr_assert(took_ms >= 350 && took_ms < 2500, "took %lld ms", (long long)took_ms);
    gen_close(g);
    end_suite();
}

Test(router, killed_instance_ends_its_requests_and_new_ones_go_elsewhere, .init = start_slow)
{
    gen_t *g = gen_open();
    const char *ids[4] = {"k0", "k1", "k2", "k3"};
    for (int i = 0; i < 4; i++) {
        /* Seconds of decoding even on a fast CPU: none ends before both instances freeze. */
        sub_t a = {.id = ids[i], .prompt = SIMPLE_PROMPT, .hint = "large", .max_tokens = 1800,
                   .ignore_eos = true};
        gen_submit(g, &a);
    }
    for (int i = 0; i < 4; i++) {
        rec_t r = gen_wait(g, ids[i], 2, 60000);
        cr_assert_geq(r.tokens, 2, "%s: %d %s", ids[i], r.err_code, r.err_msg);
    }
    /* Both instances stop where they are, so the victim's requests are still in flight when
     * it dies, however fast this machine decodes. */
    for (int i = 0; i < S.n_large; i++)
        freeze(&S.large[i]);
    char victim[64];
    snprintf(victim, sizeof(victim), "%s", gen_route(g, "k0")->instance);
    int on_victim = 0;
    for (int i = 0; i < 4; i++)
        on_victim += strcmp(gen_route(g, ids[i])->instance, victim) == 0;
    cr_assert(on_victim >= 1 && on_victim < 4, "least outstanding should spread: %d of 4",
              on_victim);
    test_proc_t *p = instance_proc(victim);
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
    for (int i = 0; i < S.n_large; i++)
        if (S.large[i].pid)
            thaw(&S.large[i]);
    for (int i = 0; i < 4; i++) {
        bool was_on_victim = strcmp(gen_route(g, ids[i])->instance, victim) == 0;
        if (!was_on_victim) {
            gen_cancel(g, ids[i]); /* the survivor's requests are fine; end them quickly */
            rec_t r = gen_finish(g, ids[i]);
            cr_assert(r.done, "%s on the survivor: %d %s", ids[i], r.err_code, r.err_msg);
            continue;
        }
        rec_t r = gen_finish(g, ids[i]);
        cr_assert_eq(r.err_code, GRPC_STATUS_UNAVAILABLE, "%s: code %d finish %d after %d tokens",
                     ids[i], r.err_code, r.finish, r.tokens);
        cr_assert(strstr(r.err_msg, "broke"), "%s", r.err_msg);
    }
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "new%d", i);
        sub_t a = {.id = id, .prompt = SIMPLE_PROMPT, .hint = "large", .max_tokens = 3};
        gen_submit(g, &a);
        rec_t r = gen_finish(g, id);
        cr_assert(r.done, "%s: %d %s", id, r.err_code, r.err_msg);
        cr_assert_str_neq(gen_route(g, id)->instance, victim);
    }
    gen_close(g);
    end_suite();
}

static void start_fallback(void)
{
    static const char *extra[] = {"--pool-ttft-ms", "large=500", NULL};
    suite_opts_t o = {.n_small = 1, .n_large = 1, .cache = false};
    memcpy(o.router_extra, extra, sizeof(extra));
    suite_start(&o);
}

Test(router, large_pool_down_or_slow_falls_back_to_small, .init = start_fallback)
{
    /* Slow: the large instance is frozen, so no first token within its 500 ms budget. */
    freeze(&S.large[0]);
    gen_t *g = gen_open();
    sub_t a = {.id = "slow", .prompt = COMPLEX_PROMPT, .max_tokens = 6};
    gen_submit(g, &a);
    rec_t r = gen_finish(g, "slow");
    cr_assert(r.done, "%d %s", r.err_code, r.err_msg);
    cr_assert_eq(r.started, 2, "one started per try");
    cr_assert_eq(r.first_attempt_seen, 1);
    const Llmserve__V1__GenerateStarted *s = gen_route(g, "slow");
    cr_assert_str_eq(s->pool, "small");
    cr_assert(s->fallback);
    cr_assert(strstr(s->fallback_reason, "no first token from pool large"), "%s",
              s->fallback_reason);
    cr_assert_eq(s->attempt, 2);
    cr_assert_gt(s->complexity, 0.3);
    thaw(&S.large[0]);

    /* Down: the large instance is gone. */
    kill(S.large[0].pid, SIGKILL);
    waitpid(S.large[0].pid, NULL, 0);
    S.large[0].pid = 0;
    usleep(200000);
    sub_t b = {.id = "down", .prompt = COMPLEX_PROMPT, .max_tokens = 6};
    gen_submit(g, &b);
    r = gen_finish(g, "down");
    cr_assert(r.done, "%d %s", r.err_code, r.err_msg);
    s = gen_route(g, "down");
    cr_assert_str_eq(s->pool, "small");
    cr_assert(s->fallback);
    cr_assert(strstr(s->fallback_reason, "unavailable"), "%s", s->fallback_reason);
    gen_close(g);
    end_suite();
}

#define N_STREAMS 64

Test(router, sixty_four_concurrent_streams, .init = start_basic)
{
    gen_t *g[N_STREAMS];
    for (int i = 0; i < N_STREAMS; i++) {
        g[i] = gen_open();
        char id[16], prompt[256];
        snprintf(id, sizeof(id), "c%d", i);
        snprintf(prompt, sizeof(prompt), "%s number %d", i % 2 ? SIMPLE_PROMPT : COMPLEX_PROMPT,
                 i);
        sub_t a = {.id = id, .prompt = prompt, .max_tokens = 16,
                   .policy = LLMSERVE__V1__CACHE_POLICY__CACHE_POLICY_BYPASS};
        gen_submit(g[i], &a);
    }
    int small = 0, large = 0;
    for (int i = 0; i < N_STREAMS; i++) {
        char id[16];
        snprintf(id, sizeof(id), "c%d", i);
        rec_t r = gen_finish(g[i], id);
        cr_assert(r.done, "%s: %d %s", id, r.err_code, r.err_msg);
        cr_assert(r.indexes_ok);
        cr_assert_eq(r.started, 1);
        const char *pool = gen_route(g[i], id)->pool;
        small += strcmp(pool, "small") == 0;
        large += strcmp(pool, "large") == 0;
        gen_close(g[i]);
    }
    cr_assert_eq(small, N_STREAMS / 2);
    cr_assert_eq(large, N_STREAMS / 2);
    end_suite();
}

/* Reads what fd has (non-blocking) into buf at *len; returns false at end of file. */
static bool drain_fd(int fd, char *buf, size_t cap, size_t *len, int wait_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, wait_ms) <= 0)
        return true;
    ssize_t n = read(fd, buf + *len, cap - 1 - *len);
    if (n <= 0)
        return false;
    *len += (size_t)n;
    buf[*len] = '\0';
    return *len < cap - 1;
}

Test(router, llmctl_ctrl_c_cancels_the_request_and_still_prints_the_summary,
     .init = start_slow)
{
    int out[2], err[2];
    cr_assert_eq(pipe(out), 0);
    cr_assert_eq(pipe(err), 0);
    char router[64];
    snprintf(router, sizeof(router), "127.0.0.1:%d", S.router.port);
    /* posix_spawn, not fork: this process runs gRPC threads, and a forked child would run
     * gRPC's fork handlers before its exec (seen to hang it). */
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    posix_spawn_file_actions_addclose(&fa, err[0]);
    char *argv[] = {"llmctl", "--router", router, "--pool", "large", "--max-tokens", "1800",
                    "--ignore-eos", "Tell me a long story", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, test_env_path("LLMSERVE_LLMCTL_BIN"), &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(rc, 0, "posix_spawn: %s", strerror(rc));
    close(out[1]);
    close(err[1]);
    static char so[65536], se[8192];
    size_t no = 0, ne = 0;
    int64_t until = ls_now_us() + 60000000;
    while (no < 20 && ls_now_us() < until && drain_fd(out[0], so, sizeof(so), &no, 50))
        ;
    if (no < 20) {
        kill(pid, SIGKILL);
        drain_fd(err[0], se, sizeof(se), &ne, 100);
        waitpid(pid, NULL, 0);
    }
    cr_assert_geq(no, 20, "llmctl printed %zu bytes: %s; stderr: %s", no, so, se);
    int64_t t0 = ls_now_us();
    cr_assert_eq(kill(pid, SIGINT), 0);
    int status = 0;
    bool out_open = true, err_open = true;
    while ((out_open || err_open) && ls_now_us() < t0 + 10000000) {
        if (out_open)
            out_open = drain_fd(out[0], so, sizeof(so), &no, 10);
        if (err_open)
            err_open = drain_fd(err[0], se, sizeof(se), &ne, 10);
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    int64_t took_ms = (ls_now_us() - t0) / 1000;
    close(out[0]);
    close(err[0]);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 130, "status %d, stderr: %s", status,
              se);
    cr_assert_lt(took_ms, 5000, "llmctl took %lld ms to stop", (long long)took_ms);
    cr_assert(strstr(se, "cancelling"), "%s", se);
    cr_assert(strstr(se, "finish    cancelled"), "the summary must still print: %s", se);
    cr_assert(strstr(se, "route     pool=large"), "%s", se);
    end_suite();
}

Test(router, duplicate_id_in_flight_is_refused_and_the_first_goes_on, .init = start_slow)
{
    gen_t *g = gen_open();
    sub_t a = {.id = "dup", .prompt = SIMPLE_PROMPT, .hint = "large", .max_tokens = 30,
               .ignore_eos = true};
    /* The large pool is frozen, so the first request is surely still in flight (waiting
     * for its first token, well inside the TTFT budget) when the second arrives, however
     * fast this machine decodes. */
    for (int i = 0; i < S.n_large; i++)
        freeze(&S.large[i]);
    gen_submit(g, &a);
    usleep(50000);
    gen_submit(g, &a);
    for (int i = 0; i < 100 && gen_wait(g, "dup", 0, 0).refused_duplicates == 0; i++)
        usleep(10000);
    for (int i = 0; i < S.n_large; i++)
        thaw(&S.large[i]);
    rec_t r = gen_finish(g, "dup");
    cr_assert_eq(r.refused_duplicates, 1, "the second submit must be refused");
    cr_assert(r.done, "the first request must go on: %d %s", r.err_code, r.err_msg);
    cr_assert_eq(r.tokens, 30, "tokens %d finish %d completion %u", r.tokens, r.finish,
                 r.completion_tokens);
    gen_close(g);
    end_suite();
}
