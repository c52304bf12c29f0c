/*
 * policy.h - which pool answers: score tiers, fallbacks and time-to-first-token budgets.
 *
 * Tiers map a complexity score to a pool: the pool of the highest tier whose threshold
 * is <= the score, or the default pool when the score is below every tier.  Two pools
 * need one tier ("large=0.35"); three need two ("medium=0.25,large=0.5").
 * Fallback: a pool that is unavailable, or gives no first token within its TTFT budget,
 * hands the request to its fallback pool (default: the default pool; "none" disables).
 * A pool falls back at most once per request.  Immutable after parsing: thread-safe.
 */
#ifndef ROUTER_POLICY_H
#define ROUTER_POLICY_H

#include <stddef.h>
#include <stdint.h>

#define ROUTER_POOL_NAME_MAX 32
#define ROUTER_POLICY_MAX 16

typedef struct {
    char pool[ROUTER_POOL_NAME_MAX + 1];
    double threshold;
} router_tier_t;

typedef struct {
    char pool[ROUTER_POOL_NAME_MAX + 1];
    char fallback[ROUTER_POOL_NAME_MAX + 1]; /* "" = none */
    int64_t ttft_ms;                         /* -1 = the default */
} router_pool_policy_t;

typedef struct {
    char default_pool[ROUTER_POOL_NAME_MAX + 1];
    router_tier_t tiers[ROUTER_POLICY_MAX]; /* ascending threshold */
    size_t n_tiers;
    router_pool_policy_t pools[ROUTER_POLICY_MAX]; /* explicit per-pool settings */
    size_t n_pools;
    int64_t default_ttft_ms; /* for pools with a fallback; 0 = no budget */
} router_policy_t;

/* Parses the settings:
 *   default_pool  "small"
 *   tiers         "POOL=THRESHOLD,..." e.g. "large=0.35" (may be empty: always default)
 *   fallbacks     "POOL=FALLBACK,..." e.g. "large=medium,medium=small" or "large=none"
 *   pool_ttft     "POOL=MS,..." e.g. "large=1500" (0 = no budget for that pool)
 * Returns LS_OK or LS_ERR_INVALID with a reason in err. */
int router_policy_parse(router_policy_t *p, const char *default_pool, const char *tiers,
                        const char *fallbacks, const char *pool_ttft, int64_t default_ttft_ms,
                        char *err, size_t err_len);

/* The pool for score; *threshold gets the tier's threshold (or of the lowest tier when
 * the default pool is chosen; 0 when there are no tiers).  Borrowed from p. */
const char *router_policy_pool_for(const router_policy_t *p, double score, double *threshold);

/* The fallback of pool, or NULL when it has none. */
const char *router_policy_fallback(const router_policy_t *p, const char *pool);

/* The TTFT budget of pool in ms; 0 = none (pools without a fallback have none). */
int64_t router_policy_ttft_ms(const router_policy_t *p, const char *pool);

/* Calls fn for each pool the policy names (default, tiers, fallbacks); stops and
 * returns the first non-LS_OK result. */
int router_policy_each_pool(const router_policy_t *p, int (*fn)(void *ud, const char *pool),
                            void *ud);

#endif
