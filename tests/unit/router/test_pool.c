/*
 * test_pool.c - services/router/pool.c: least outstanding, affinity, version split,
 * health, exclusion, reconciliation with discovery lists, capacity and waiters, classes
 * and aging of waiters, prefix affinity.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/err.h"
#include "pool.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int added, removed, freed;

static void on_add(void *ud, router_instance_t *inst)
{
    (void)ud;
    added++;
    router_instance_set_user(inst, strdup(router_instance_addr(inst)));
}

static void on_remove(void *ud, router_instance_t *inst)
{
    (void)ud;
    (void)inst;
    removed++;
}

static void on_free(void *ud, void *user)
{
    (void)ud;
    freed++;
    free(user);
}

static router_pools_t *make(const char *spec)
{
    added = removed = freed = 0;
    router_pools_hooks_t hooks = {on_add, on_remove, on_free, NULL, NULL};
    router_pools_t *p = router_pools_create(42, 1000, &hooks);
    discovery_instance_t *l;
    size_t n;
    char err[128];
    cr_assert_eq(discovery_static_parse(spec, &l, &n, err, sizeof(err)), LS_OK, "%s", err);
    router_pools_update(p, l, n);
    discovery_list_free(l, n);
    return p;
}

static router_instance_t *pick(router_pools_t *p, const char *pool, const char *conv)
{
    router_pick_t pk;
    int rc = router_pools_pick(p, pool, conv, NULL, 0, &pk);
    cr_assert_eq(rc, LS_OK, "pick %s: %s", pool, ls_strerror(rc));
    return pk.inst;
}

/* Marks every instance healthy by picking nothing: walk via picks is impossible before
 * health, so the test keeps the instances from the on_add hook instead. */
static router_instance_t *insts[16];
static size_t n_insts;

static void on_add_keep(void *ud, router_instance_t *inst)
{
    on_add(ud, inst);
    insts[n_insts++] = inst;
}

static router_pools_t *make_healthy(const char *spec)
{
    n_insts = 0;
    added = removed = freed = 0;
    router_pools_hooks_t hooks = {on_add_keep, on_remove, on_free, NULL, NULL};
    router_pools_t *p = router_pools_create(7, 1000, &hooks);
    discovery_instance_t *l;
    size_t n;
    char err[128];
    cr_assert_eq(discovery_static_parse(spec, &l, &n, err, sizeof(err)), LS_OK, "%s", err);
    router_pools_update(p, l, n);
    discovery_list_free(l, n);
    for (size_t i = 0; i < n_insts; i++)
        router_instance_set_healthy(p, insts[i], true);
    return p;
}

Test(pool, unknown_pool_and_no_healthy_instance)
{
    router_pools_t *p = make("small=h:1");
    router_pick_t pk;
    cr_assert_eq(router_pools_pick(p, "large", NULL, NULL, 0, &pk), LS_ERR_NOT_FOUND);
    cr_assert_eq(router_pools_pick(p, "small", NULL, NULL, 0, &pk), LS_ERR_UNAVAILABLE,
                 "instances start unhealthy");
    cr_assert(router_pools_has(p, "small"));
    cr_assert_not(router_pools_has(p, "large"));
    cr_assert_eq(router_pools_healthy_count(p, "small"), 0);
    router_pools_destroy(p);
    cr_assert_eq(added, 1);
    cr_assert_eq(removed, 1);
    cr_assert_eq(freed, 1);
}

Test(pool, declared_pool_without_instance_is_unavailable_not_unknown)
{
    router_pools_t *p = make("small=h:1");
    router_pools_declare(p, "large");
    router_pools_declare(p, "large"); /* twice is harmless */
    router_pick_t pk;
    cr_assert_eq(router_pools_pick(p, "large", NULL, NULL, 0, &pk), LS_ERR_UNAVAILABLE);
    cr_assert_null(pk.inst);
    cr_assert_eq(router_pools_pick(p, "medium", NULL, NULL, 0, &pk), LS_ERR_NOT_FOUND);
    cr_assert(router_pools_has(p, "large"));
    cr_assert_not(router_pools_has(p, "medium"));
    cr_assert_eq(router_pools_count(p, "large"), 0);
    cr_assert_eq(router_pools_count(p, "small"), 1);
    char names[64];
    router_pools_names(p, names, sizeof(names));
    cr_assert_str_eq(names, "large, small", "declared first, each once");
    router_pools_names(p, names, 8);
    cr_assert_str_eq(names, "large", "cut at a whole name");

    /* An instance comes, is picked, and goes: the pool stays, unavailable again. */
    discovery_instance_t l[2] = {{"small", "", 100, "h:1"}, {"large", "", 100, "h:2"}};
    router_pools_update(p, l, 2);
    cr_assert_eq(router_pools_count(p, "large"), 1);
    router_pools_names(p, names, sizeof(names));
    cr_assert_str_eq(names, "large, small");
    cr_assert_eq(router_pools_pick(p, "large", NULL, NULL, 0, &pk), LS_ERR_UNAVAILABLE,
                 "not healthy yet");
    router_pools_update(p, l, 1);
    cr_assert(router_pools_has(p, "large"));
    cr_assert_eq(router_pools_pick(p, "large", NULL, NULL, 0, &pk), LS_ERR_UNAVAILABLE);
    router_pools_update(p, NULL, 0);
    cr_assert(router_pools_has(p, "large"));
    cr_assert_not(router_pools_has(p, "small"), "an undeclared pool goes with its last instance");
    cr_assert_eq(router_pools_pick(p, "small", NULL, NULL, 0, &pk), LS_ERR_NOT_FOUND);
    router_pools_destroy(p);
    cr_assert_eq(added, 2);
    cr_assert_eq(freed, 2);
}

Test(pool, all_healthy_needs_every_instance_of_every_pool)
{
    router_pools_t *p = make_healthy("small=h:1,h:2;large=h:3");
    cr_assert(router_pools_all_healthy(p));
    router_instance_set_healthy(p, insts[1], false);
    cr_assert_not(router_pools_all_healthy(p));
    cr_assert_eq(router_pools_healthy_count(p, "small"), 1, "the pool still has one");
    router_instance_set_healthy(p, insts[1], true);
    cr_assert(router_pools_all_healthy(p));
    router_pools_destroy(p);
}

Test(pool, least_outstanding_spreads_load)
{
    router_pools_t *p = make_healthy("small=h:1,h:2,h:3");
    router_instance_t *got[6];
    for (int i = 0; i < 6; i++)
        got[i] = pick(p, "small", NULL);
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(router_instance_outstanding(p, insts[i]), 2, "instance %zu", i);
    /* Free two slots on one instance: the next two picks go there. */
    router_instance_t *light = got[0];
    int released = 0;
    for (int i = 0; i < 6 && released < 2; i++) {
        if (got[i] == light) {
            router_pools_release(p, got[i]);
            got[i] = NULL;
            released++;
        }
    }
    router_instance_t *a = pick(p, "small", NULL), *b = pick(p, "small", NULL);
    cr_assert_eq(a, light);
    cr_assert_eq(b, light);
    router_pools_release(p, a);
    router_pools_release(p, b);
    for (int i = 0; i < 6; i++)
        if (got[i])
            router_pools_release(p, got[i]);
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(router_instance_outstanding(p, insts[i]), 0);
    router_pools_destroy(p);
    cr_assert_eq(freed, 3);
}

Test(pool, affinity_holds_while_healthy)
{
    router_pools_t *p = make_healthy("small=h:1,h:2,h:3");
    router_instance_t *first = pick(p, "small", "conv-1");
    for (int i = 0; i < 10; i++) {
        router_pick_t pk;
        cr_assert_eq(router_pools_pick(p, "small", "conv-1", NULL, 0, &pk), LS_OK);
        cr_assert_eq(pk.inst, first, "affinity broken at %d", i);
        cr_assert(pk.affinity);
        router_pools_release(p, pk.inst);
    }
    /* Unhealthy: the conversation moves, and then stays on its new instance. */
    router_instance_set_healthy(p, first, false);
    router_instance_t *second = pick(p, "small", "conv-1");
    cr_assert_neq(second, first);
    router_instance_set_healthy(p, first, true);
    router_instance_t *third = pick(p, "small", "conv-1");
    cr_assert_eq(third, second);
    /* Another pool's pick for the same conversation does not use this instance. */
    router_pools_release(p, first);
    router_pools_release(p, second);
    router_pools_release(p, third);
    router_pools_destroy(p);
}

Test(pool, affinity_map_is_bounded)
{
    n_insts = 0;
    router_pools_hooks_t hooks = {on_add_keep, on_remove, on_free, NULL, NULL};
    router_pools_t *p = router_pools_create(1, 2, &hooks);
    discovery_instance_t l[2] = {{"small", "", 100, "h:1"}, {"small", "", 100, "h:2"}};
    router_pools_update(p, l, 2);
    router_instance_set_healthy(p, insts[0], true);
    router_instance_set_healthy(p, insts[1], true);
    router_instance_t *c1 = pick(p, "small", "c1");
    router_instance_t *c2 = pick(p, "small", "c2");
    router_instance_t *c3 = pick(p, "small", "c3"); /* evicts c1 */
    router_pick_t pk;
    cr_assert_eq(router_pools_pick(p, "small", "c3", NULL, 0, &pk), LS_OK);
    cr_assert(pk.affinity);
    router_pools_release(p, pk.inst);
    cr_assert_eq(router_pools_pick(p, "small", "c1", NULL, 0, &pk), LS_OK);
    cr_assert_not(pk.affinity, "c1 should have been evicted");
    router_pools_release(p, pk.inst);
    router_pools_release(p, c1);
    router_pools_release(p, c2);
    router_pools_release(p, c3);
    router_pools_destroy(p);
}

Test(pool, exclusion_and_exhaustion)
{
    router_pools_t *p = make_healthy("small=h:1,h:2");
    router_instance_t *a = pick(p, "small", NULL);
    router_pick_t pk;
    cr_assert_eq(router_pools_pick(p, "small", NULL, &a, 1, &pk), LS_OK);
    cr_assert_neq(pk.inst, a);
    router_instance_t *ex[2] = {a, pk.inst};
    router_pick_t none;
    cr_assert_eq(router_pools_pick(p, "small", NULL, ex, 2, &none), LS_ERR_UNAVAILABLE);
    router_pools_release(p, pk.inst);
    router_pools_release(p, a);
    router_pools_destroy(p);
}

Test(pool, version_split_follows_weights)
{
    router_pools_t *p = make_healthy("large@v1:95=h:1;large@v2:5=h:2");
    int v2 = 0;
    const int N = 20000;
    for (int i = 0; i < N; i++) {
        router_instance_t *inst = pick(p, "large", NULL);
        v2 += strcmp(router_instance_version(inst), "v2") == 0;
        router_pools_release(p, inst);
    }
    double share = (double)v2 / N;
    cr_assert(share > 0.04 && share < 0.06, "v2 share %.4f, want about 0.05", share);
    /* The only v2 instance down: every pick goes to v1. */
    router_instance_set_healthy(p, insts[1], false);
    for (int i = 0; i < 200; i++) {
        router_instance_t *inst = pick(p, "large", NULL);
        cr_assert_str_eq(router_instance_version(inst), "v1");
        router_pools_release(p, inst);
    }
    router_pools_destroy(p);
}

Test(pool, update_adds_removes_and_frees_after_release)
{
    router_pools_t *p = make_healthy("small=h:1,h:2;large=h:3");
    router_instance_t *held = pick(p, "large", NULL);
    cr_assert_eq(added, 3);
    discovery_instance_t l[2] = {{"small", "", 100, "h:1"}, {"medium", "", 100, "h:4"}};
    router_pools_update(p, l, 2);
    cr_assert_eq(added, 4);
    cr_assert_eq(removed, 2);
    cr_assert_eq(freed, 1, "h:2 had no pick and goes at once; h:3 is still held");
    cr_assert_not(router_pools_has(p, "large"));
    cr_assert(router_pools_has(p, "medium"));
    cr_assert_not(router_instance_healthy(p, held), "a removed instance is never healthy");
    router_instance_set_healthy(p, held, true);
    cr_assert_not(router_instance_healthy(p, held));
    cr_assert_str_eq(router_instance_addr(held), "h:3");
    router_pools_release(p, held);
    cr_assert_eq(freed, 2);
    char names[64];
    router_pools_names(p, names, sizeof(names));
    cr_assert_str_eq(names, "small, medium");
    router_pools_destroy(p);
    cr_assert_eq(freed, 4);
}

/* ---- capacity and waiters ------------------------------------------------------------ */

static router_waiter_t *granted_w[16];
static router_instance_t *granted_inst[16];
static int n_granted;

static void on_grant(void *ud, router_waiter_t *w, router_instance_t *inst)
{
    (void)ud;
    granted_w[n_granted] = w;
    granted_inst[n_granted] = inst;
    n_granted++;
}

static router_pools_t *make_waiting(const char *spec, int64_t capacity)
{
    n_insts = 0;
    n_granted = 0;
    added = removed = freed = 0;
    router_pools_hooks_t hooks = {on_add_keep, on_remove, on_free, NULL, on_grant};
    router_pools_t *p = router_pools_create(7, 1000, &hooks);
    discovery_instance_t *l;
    size_t n;
    char err[128];
    cr_assert_eq(discovery_static_parse(spec, &l, &n, err, sizeof(err)), LS_OK, "%s", err);
    router_pools_update(p, l, n);
    discovery_list_free(l, n);
    for (size_t i = 0; i < n_insts; i++) {
        router_instance_set_capacity(p, insts[i], capacity);
        router_instance_set_healthy(p, insts[i], true);
    }
    return p;
}

static int pick_or_wait(router_pools_t *p, router_waiter_t *w, size_t max, router_pick_t *pk)
{
    return router_pools_pick_or_wait(p, "small", NULL, NULL, 0, w, max, pk);
}

Test(pool, full_instances_queue_waiters_and_releases_grant_them_in_order)
{
    router_pools_t *p = make_waiting("small=h:1,h:2", 1);
    router_pick_t pk;
    router_waiter_t w1 = {.since_us = 1}, w2 = {.since_us = 2}, w3 = {.since_us = 3};
    cr_assert_eq(pick_or_wait(p, &w1, 2, &pk), LS_OK);
    router_instance_t *a = pk.inst;
    cr_assert_eq(pick_or_wait(p, &w1, 2, &pk), LS_OK);
    router_instance_t *b = pk.inst;
    cr_assert(a && b && a != b, "least outstanding spreads over both");
    /* Both full: the next two queue, the third finds the queue full. */
    cr_assert_eq(pick_or_wait(p, &w1, 2, &pk), LS_OK);
    cr_assert(pk.queued && !pk.inst);
    cr_assert_eq(pick_or_wait(p, &w2, 2, &pk), LS_OK);
    cr_assert(pk.queued);
    cr_assert_eq(router_pools_waiting(p, "small"), 2);
    cr_assert_eq(pick_or_wait(p, &w3, 2, &pk), LS_ERR_FULL);
    cr_assert_eq(pk.waiting, 2);
    cr_assert_eq(pk.oldest_since_us, 1);
    cr_assert_eq(router_pools_pick(p, "small", NULL, NULL, 0, &pk), LS_ERR_FULL);
    /* A release grants the oldest waiter the room, picked for it. */
    router_pools_release(p, a);
    cr_assert_eq(n_granted, 1);
    cr_assert_eq(granted_w[0], &w1);
    cr_assert_eq(granted_inst[0], a);
    cr_assert_not(router_pools_unwait(p, &w1), "a granted waiter is no longer queued");
    /* w2 leaves the queue itself: nothing is granted to it. */
    cr_assert(router_pools_unwait(p, &w2));
    cr_assert_eq(router_pools_waiting(p, "small"), 0);
    router_pools_release(p, b);
    cr_assert_eq(n_granted, 1);
    router_pools_release(p, granted_inst[0]);
    router_pools_destroy(p);
}

Test(pool, an_instance_that_refused_has_no_room_until_its_next_release)
{
    router_pools_t *p = make_waiting("small=h:1", 0); /* capacity unknown: no bound */
    router_instance_t *a = pick(p, "small", NULL);
    router_instance_t *b = pick(p, "small", NULL);
    cr_assert(router_pools_release_full(p, b), "a is still out: marked full");
    router_pick_t pk;
    router_waiter_t w = {0};
    cr_assert_eq(pick_or_wait(p, &w, 4, &pk), LS_OK);
    cr_assert(pk.queued, "full until a release");
    router_pools_release(p, a);
    cr_assert_eq(n_granted, 1);
    cr_assert_eq(granted_inst[0], insts[0]);
    /* With nothing of ours out there, a refusal cannot be marked (no release would
     * clear it). */
    cr_assert_not(router_pools_release_full(p, granted_inst[0]));
    cr_assert_eq(router_pools_pick(p, "small", NULL, NULL, 0, &pk), LS_OK);
    router_pools_release(p, pk.inst);
    router_pools_destroy(p);
}

Test(pool, waiters_of_a_pool_left_without_instances_are_handed_back)
{
    router_pools_t *p = make_waiting("small=h:1", 1);
    router_instance_t *a = pick(p, "small", NULL);
    router_pick_t pk;
    router_waiter_t w = {0};
    cr_assert_eq(pick_or_wait(p, &w, 4, &pk), LS_OK);
    cr_assert(pk.queued);
    router_instance_set_healthy(p, insts[0], false);
    cr_assert_eq(n_granted, 1);
    cr_assert_eq(granted_w[0], &w);
    cr_assert_null(granted_inst[0], "no instance: routed again");
    router_pools_release(p, a);
    router_pools_destroy(p);
}

Test(pool, raising_capacity_grants_waiters)
{
    router_pools_t *p = make_waiting("small=h:1", 1);
    router_instance_t *a = pick(p, "small", NULL);
    router_pick_t pk;
    router_waiter_t w = {0};
    cr_assert_eq(pick_or_wait(p, &w, 4, &pk), LS_OK);
    cr_assert(pk.queued);
    router_instance_set_capacity(p, insts[0], 2);
    cr_assert_eq(n_granted, 1);
    cr_assert_eq(granted_inst[0], insts[0]);
    router_pools_release(p, a);
    router_pools_release(p, granted_inst[0]);
    router_pools_destroy(p);
}

/* ---- classes and aging ---------------------------------------------------------------- */

Test(pool, waiters_are_granted_by_class_then_arrival)
{
    router_pools_t *p = make_waiting("small=h:1", 1);
    router_pools_set_aging(p, 3600 * 1000000LL); /* no waiter ages within the test */
    router_instance_t *a = pick(p, "small", NULL);
    int64_t now = ls_now_us();
    router_waiter_t b1 = {.since_us = now - 4, .priority = 3};
    router_waiter_t b2 = {.since_us = now - 3, .priority = 3};
    router_waiter_t n1 = {.since_us = now - 2, .priority = 0}; /* unspecified: normal */
    router_waiter_t i1 = {.since_us = now - 1, .priority = 1};
    router_waiter_t i2 = {.since_us = now, .priority = 1};
    router_waiter_t *order[] = {&b1, &b2, &n1, &i1, &i2};
    router_pick_t pk;
    for (size_t i = 0; i < 5; i++) {
        cr_assert_eq(pick_or_wait(p, order[i], 8, &pk), LS_OK);
        cr_assert(pk.queued);
    }
    cr_assert_eq(pk.oldest_since_us, 0, "queued, not refused: no hint");
    router_waiter_t *want[] = {&i1, &i2, &n1, &b1, &b2};
    router_instance_t *held = a;
    for (size_t i = 0; i < 5; i++) {
        router_pools_release(p, held);
        cr_assert_eq(n_granted, (int)i + 1);
        cr_assert_eq(granted_w[i], want[i], "grant %zu went to the wrong waiter", i);
        held = granted_inst[i];
    }
    router_pools_release(p, held);
    router_pools_destroy(p);
}

Test(pool, a_waiter_counts_one_class_higher_per_aging_period)
{
    router_pools_t *p = make_waiting("small=h:1", 1);
    int64_t aging = 3600 * 1000000LL;
    router_pools_set_aging(p, aging);
    router_instance_t *a = pick(p, "small", NULL);
    int64_t now = ls_now_us();
    /* Batch for two periods: interactive now, and first as the earliest arrival. */
    router_waiter_t old_batch = {.since_us = now - 2 * aging - 5, .priority = 3};
    /* Batch for one period: normal, behind interactive. */
    router_waiter_t aged_once = {.since_us = now - aging - 4, .priority = 3};
    router_waiter_t inter = {.since_us = now - 3, .priority = 1};
    router_waiter_t normal = {.since_us = now - 2, .priority = 2};
    router_waiter_t *order[] = {&old_batch, &aged_once, &inter, &normal};
    router_pick_t pk;
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(pick_or_wait(p, order[i], 8, &pk), LS_OK);
    router_waiter_t *want[] = {&old_batch, &inter, &aged_once, &normal};
    router_instance_t *held = a;
    for (size_t i = 0; i < 4; i++) {
        router_pools_release(p, held);
        cr_assert_eq(granted_w[i], want[i], "grant %zu went to the wrong waiter", i);
        held = granted_inst[i];
    }
    router_pools_release(p, held);
    router_pools_destroy(p);
}

Test(pool, without_aging_batch_waits_behind_every_interactive)
{
    router_pools_t *p = make_waiting("small=h:1", 1);
    router_pools_set_aging(p, 0);
    router_instance_t *a = pick(p, "small", NULL);
    router_waiter_t batch = {.since_us = 1, .priority = 3}; /* waited for ages */
    router_waiter_t inter = {.since_us = ls_now_us(), .priority = 1};
    router_pick_t pk;
    cr_assert_eq(pick_or_wait(p, &batch, 8, &pk), LS_OK);
    cr_assert_eq(pick_or_wait(p, &inter, 8, &pk), LS_OK);
    router_pools_release(p, a);
    cr_assert_eq(granted_w[0], &inter);
    router_pools_release(p, granted_inst[0]);
    cr_assert_eq(granted_w[1], &batch);
    router_pools_release(p, granted_inst[1]);
    router_pools_destroy(p);
}

/* ---- prefix affinity ------------------------------------------------------------------- */

static router_pick_t pick_prefix(router_pools_t *p, uint64_t key)
{
    router_waiter_t w = {.since_us = ls_now_us(), .prefix_key = key};
    router_pick_t pk;
    cr_assert_eq(router_pools_pick_or_wait(p, "small", NULL, NULL, 0, &w, 0, &pk), LS_OK);
    cr_assert_not_null(pk.inst);
    return pk;
}

Test(pool, one_prefix_key_keeps_to_one_instance_while_load_allows)
{
    router_pools_t *p = make_healthy("small=h:1,h:2,h:3");
    router_pools_set_prefix_slack(p, 2);
    router_pick_t first = pick_prefix(p, 0x1234567);
    cr_assert(first.prefix_affinity);
    router_instance_t *held[8] = {first.inst};
    /* Two more on the same instance: within the slack of 2 over the idle others. */
    for (int i = 1; i < 3; i++) {
        router_pick_t pk = pick_prefix(p, 0x1234567);
        cr_assert_eq(pk.inst, first.inst, "pick %d left the prefix's instance", i);
        cr_assert(pk.prefix_affinity && !pk.prefix_spilled);
        held[i] = pk.inst;
    }
    /* A fourth would put 3 beyond the least loaded: it spills to an idle one. */
    router_pick_t spill = pick_prefix(p, 0x1234567);
    cr_assert_neq(spill.inst, first.inst);
    cr_assert(spill.prefix_spilled && !spill.prefix_affinity);
    cr_assert_eq(router_instance_outstanding(p, spill.inst), 1);
    held[3] = spill.inst;
    for (int i = 0; i < 4; i++)
        router_pools_release(p, held[i]);
    /* Unloaded again: back to the same instance. */
    router_pick_t again = pick_prefix(p, 0x1234567);
    cr_assert_eq(again.inst, first.inst);
    router_pools_release(p, again.inst);
    router_pools_destroy(p);
}

Test(pool, different_prefix_keys_spread_over_the_instances)
{
    router_pools_t *p = make_healthy("small=h:1,h:2,h:3");
    int per[3] = {0};
    for (uint64_t k = 1; k <= 300; k++) {
        router_pick_t pk = pick_prefix(p, k * 0x9e3779b97f4a7c15ULL);
        for (int i = 0; i < 3; i++)
            per[i] += pk.inst == insts[i];
        router_pools_release(p, pk.inst);
    }
    for (int i = 0; i < 3; i++)
        cr_assert(per[i] > 60, "instance %d got %d of 300 keys", i, per[i]);
    router_pools_destroy(p);
}

Test(pool, conversation_affinity_wins_over_the_prefix)
{
    router_pools_t *p = make_healthy("small=h:1,h:2,h:3");
    router_pick_t pref = pick_prefix(p, 77);
    router_pools_release(p, pref.inst);
    /* The conversation is served by another instance first (no prefix key). */
    router_pools_set_prefix_slack(p, 0);
    router_instance_t *hold[2];
    int n_hold = 0;
    router_pick_t pk;
    /* Load the preferred instance so the least loaded pick lands elsewhere. */
    hold[n_hold++] = pick_prefix(p, 77).inst;
    cr_assert_eq(router_pools_pick(p, "small", "conv-x", NULL, 0, &pk), LS_OK);
    cr_assert_neq(pk.inst, pref.inst);
    hold[n_hold++] = pk.inst;
    router_instance_t *conv_inst = pk.inst;
    for (int i = 0; i < n_hold; i++)
        router_pools_release(p, hold[i]);
    router_waiter_t w = {.since_us = ls_now_us(), .prefix_key = 77};
    cr_assert_eq(router_pools_pick_or_wait(p, "small", "conv-x", NULL, 0, &w, 0, &pk), LS_OK);
    cr_assert_eq(pk.inst, conv_inst);
    cr_assert(pk.affinity && !pk.prefix_affinity);
    router_pools_release(p, pk.inst);
    router_pools_destroy(p);
}

Test(pool, with_one_instance_the_prefix_decides_nothing)
{
    router_pools_t *p = make_healthy("small=h:1");
    router_pick_t pk = pick_prefix(p, 99);
    cr_assert_not(pk.prefix_affinity || pk.prefix_spilled);
    router_pools_release(p, pk.inst);
    router_pools_destroy(p);
}
