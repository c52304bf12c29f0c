/*
 * test_caches.c - services/router/caches.c: the set of cache instances, over in-process
 * Cache.Session servers (support/inproc_cache): entries added, picked round robin among
 * those up, removed while a lookup holds one (it still gets its answer; the entry goes
 * once released), added again, and a list whose stream cannot be made.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "caches.h"
#include "llmserve/v1/cache.pb-c.h"
#include "support/inproc_cache.h"
#include "support/net.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static rpc_client_t *client;
static rpc_defer_t *reaper;
static router_caches_t *cs;
static inproc_cache_t *cache_a, *cache_b;

static void setup(void)
{
    client = rpc_client_create(1);
    reaper = rpc_defer_create();
    cr_assert_not_null(reaper);
    cs = router_caches_create(client, NULL, reaper);
}

static void teardown(void)
{
    router_caches_destroy(cs);
    rpc_defer_destroy(reaper);
    inproc_cache_stop(cache_a);
    inproc_cache_stop(cache_b);
    rpc_client_destroy(client);
}

TestSuite(caches, .init = setup, .fini = teardown, .timeout = 60);

static void update(const char *const *addrs, size_t n)
{
    char err[256] = "";
    cr_assert_eq(router_caches_update(cs, addrs, n, err, sizeof(err)), LS_OK, "%s", err);
}

static router_caches_stats_t stats(void)
{
    router_caches_stats_t st;
    router_caches_stats(cs, &st);
    return st;
}

static bool wait_up(size_t n)
{
    int64_t until = ls_now_us() + 20000000;
    while (stats().up != n) {
        if (ls_now_us() >= until)
            return false;
        ls_sleep_us(2000);
    }
    return true;
}

/* Removed entries all gone: none held, the reaper idle. */
static bool wait_reaped(void)
{
    int64_t until = ls_now_us() + 20000000;
    while (stats().removed_held > 0 || rpc_defer_pending(reaper) > 0) {
        if (ls_now_us() >= until)
            return false;
        ls_sleep_us(2000);
    }
    return true;
}

/* ---- one lookup, as the relay makes it ------------------------------------------- */

typedef struct {
    atomic_int answers, broken, refs;
} lookup_t;

static void l_message(void *ud, uint64_t id, const ProtobufCMessage *msg, bool terminal)
{
    (void)id, (void)terminal;
    const Llmserve__V1__CacheResponse *r = (const Llmserve__V1__CacheResponse *)msg;
    if (r->kind_case == LLMSERVE__V1__CACHE_RESPONSE__KIND_LOOKUP)
        atomic_fetch_add(&((lookup_t *)ud)->answers, 1);
}

static void l_broken(void *ud, uint64_t id, const char *why)
{
    (void)id, (void)why;
    atomic_fetch_add(&((lookup_t *)ud)->broken, 1);
}

static void l_ref(void *ud)
{
    atomic_fetch_add(&((lookup_t *)ud)->refs, 1);
}

static void l_unref(void *ud)
{
    atomic_fetch_sub(&((lookup_t *)ud)->refs, 1);
}

static const rpc_mux_handler_t lookup_handler = {l_message, l_broken, l_ref, l_unref};

static void send_lookup(router_cache_t *c, uint64_t id, lookup_t *l)
{
    Llmserve__V1__CacheKey key = LLMSERVE__V1__CACHE_KEY__INIT;
    key.model = "small";
    key.prompt = "hello";
    Llmserve__V1__CacheLookup lk = LLMSERVE__V1__CACHE_LOOKUP__INIT;
    lk.key = &key;
    Llmserve__V1__CacheRequest req = LLMSERVE__V1__CACHE_REQUEST__INIT;
    req.id = id;
    req.kind_case = LLMSERVE__V1__CACHE_REQUEST__KIND_LOOKUP;
    req.lookup = &lk;
    cr_assert_eq(rpc_mux_request(router_cache_mux(c), id, &req.base, &lookup_handler, l), LS_OK);
}

static bool wait_answers(lookup_t *l, int n)
{
    int64_t until = ls_now_us() + 10000000;
    while (atomic_load(&l->answers) < n) {
        if (ls_now_us() >= until)
            return false;
        ls_sleep_us(1000);
    }
    return true;
}

/* ---- the tests ------------------------------------------------------------------- */

Test(caches, empty_set_picks_nothing)
{
    cr_assert_null(router_caches_pick(cs));
    cr_assert_not(router_caches_any(cs));
    update(NULL, 0);
    router_caches_stats_t st = stats();
    cr_assert_eq(st.listed + st.up + st.removed_held, 0);
}

Test(caches, round_robin_among_the_entries_up)
{
    cache_a = inproc_cache_start();
    cache_b = inproc_cache_start();
    /* A port held bound but not listening: connections are refused, and no other test
     * running beside this one can take it (as it could a port found free a moment ago). */
    int held = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    cr_assert_eq(bind(held, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(getsockname(held, (struct sockaddr *)&sa, &sl), 0);
    char down[TEST_ADDR_LEN];
    test_addr(down, ntohs(sa.sin_port));
    const char *addrs[] = {inproc_cache_addr(cache_a), down, inproc_cache_addr(cache_b),
                           inproc_cache_addr(cache_a), ""}; /* a duplicate, an empty one */
    update(addrs, 5);
    cr_assert(router_caches_any(cs));
    cr_assert(wait_up(2), "the two servers did not come up");
    router_caches_stats_t st = stats();
    cr_assert_eq(st.listed, 3);
    int on_a = 0, on_b = 0;
    for (int i = 0; i < 30; i++) {
        router_cache_t *c = router_caches_pick(cs);
        cr_assert_not_null(c);
        const char *addr = router_cache_addr(c);
        cr_assert_str_neq(addr, down, "an entry that is down was picked");
        on_a += strcmp(addr, inproc_cache_addr(cache_a)) == 0;
        on_b += strcmp(addr, inproc_cache_addr(cache_b)) == 0;
        router_caches_release(cs, c);
    }
    cr_assert_eq(on_a + on_b, 30);
    cr_assert(on_a >= 5 && on_b >= 5, "picks a=%d b=%d: not round robin", on_a, on_b);

    /* The list shrinks to B: A is never picked again, at once. */
    const char *only_b[] = {inproc_cache_addr(cache_b)};
    update(only_b, 1);
    for (int i = 0; i < 10; i++) {
        router_cache_t *c = router_caches_pick(cs);
        cr_assert_not_null(c);
        cr_assert_str_eq(router_cache_addr(c), inproc_cache_addr(cache_b));
        router_caches_release(cs, c);
    }
    cr_assert(wait_reaped());
    st = stats();
    cr_assert_eq(st.listed, 1);
    cr_assert_eq(st.removed_held, 0);
    close(held);
}

Test(caches, removed_while_a_lookup_holds_it_then_freed_on_release)
{
    cache_a = inproc_cache_start();
    const char *addrs[] = {inproc_cache_addr(cache_a)};
    update(addrs, 1);
    cr_assert(wait_up(1));
    inproc_cache_hold(cache_a, true);
    router_cache_t *c = router_caches_pick(cs);
    cr_assert_not_null(c);
    lookup_t l = {0};
    send_lookup(c, 1, &l);
    cr_assert(inproc_cache_wait_lookups(cache_a, 1, 10000));

    update(NULL, 0);
    cr_assert_null(router_caches_pick(cs), "a removed entry was picked");
    router_caches_stats_t st = stats();
    cr_assert_eq(st.listed, 0);
    cr_assert_eq(st.removed_held, 1, "the lookup's entry is gone while held");
    cr_assert_not(router_caches_any(cs));

    /* The lookup in flight still gets its answer on the half-closed stream. */
    inproc_cache_hold(cache_a, false);
    if (!wait_answers(&l, 1)) {
        inproc_cache_counts_t sc = inproc_cache_counts(cache_a);
        cr_assert_fail("the lookup on the removed entry got no answer: broken %d; the cache got "
                       "%llu lookups, answered %llu, sessions %llu, open %llu, finished %llu",
                       atomic_load(&l.broken), (unsigned long long)sc.lookups,
                       (unsigned long long)sc.answered, (unsigned long long)sc.sessions,
                       (unsigned long long)sc.open, (unsigned long long)sc.finished);
    }
    cr_assert_eq(atomic_load(&l.broken), 0);
    cr_assert_eq(stats().removed_held, 1, "freed before its holder released it");
    router_caches_release(cs, c);
    cr_assert(wait_reaped(), "the removed entry was not freed after its release");
    cr_assert_eq(atomic_load(&l.refs), 0, "the stream still holds the lookup");
    inproc_cache_counts_t sc = inproc_cache_counts(cache_a);
    cr_assert_eq(sc.finished, 1, "the server did not see the stream's half-close");
    /* The client has its status; the server's end of the call follows. */
    for (int64_t until = ls_now_us() + 5000000; sc.open > 0 && ls_now_us() < until;) {
        ls_sleep_us(1000);
        sc = inproc_cache_counts(cache_a);
    }
    cr_assert_eq(sc.open, 0, "the removed cache's stream is still open at the cache");
}

Test(caches, added_again_while_the_removed_entry_is_held)
{
    cache_a = inproc_cache_start();
    const char *addrs[] = {inproc_cache_addr(cache_a)};
    update(addrs, 1);
    cr_assert(wait_up(1));
    router_cache_t *old = router_caches_pick(cs);
    cr_assert_not_null(old);
    update(NULL, 0);
    update(addrs, 1);
    cr_assert(wait_up(1), "the address listed again did not come up");
    router_caches_stats_t st = stats();
    cr_assert_eq(st.listed, 1);
    cr_assert_eq(st.removed_held, 1);
    router_cache_t *c = router_caches_pick(cs);
    cr_assert_not_null(c);
    cr_assert_neq(c, old, "the removed entry came back");
    cr_assert_neq(router_cache_mux(c), router_cache_mux(old));
    lookup_t l = {0};
    send_lookup(c, 7, &l);
    cr_assert(wait_answers(&l, 1));
    router_caches_release(cs, old);
    router_caches_release(cs, c);
    cr_assert(wait_reaped());
    st = stats();
    cr_assert_eq(st.listed, 1);
    cr_assert_eq(st.up, 1);
}

Test(caches, a_stream_that_cannot_be_made_is_reported_and_the_rest_applied)
{
    router_caches_destroy(cs);
    rpc_channel_config_t ch;
    rpc_channel_config_init(&ch);
    ch.tls_root_file = "/nonexistent/ca.pem"; /* every channel fails to be made */
    cs = router_caches_create(client, &ch, reaper);
    const char *addrs[] = {"127.0.0.1:1", "127.0.0.1:2"};
    char err[256] = "";
    cr_assert_eq(router_caches_update(cs, addrs, 2, err, sizeof(err)), LS_ERR_UNAVAILABLE);
    cr_assert(strstr(err, "127.0.0.1:1"), "%s", err);
    cr_assert_eq(stats().listed, 0);
}
