/*
 * discovery_dns.c - the DNS source: the configured names resolved into instances, again
 * every refresh period on the source's own thread.
 *
 * Lock rules: round_mu makes rounds (start's, the thread's, discovery_dns_refresh's)
 * one at a time and guards the names' known addresses and the lists last delivered; it
 * is held across the resolver, which blocks, and nothing of the router ever waits for
 * it.  mu guards the callbacks and the started and stopped flags, and is held across
 * every delivery (taken inside round_mu), so stop can wait for the one running; the
 * thread sleeps on cv with mu, so stop wakes it at once.  stop joins the thread without
 * holding either.
 */
#define _GNU_SOURCE
#include "discovery_dns.h"

#include "base/err.h"
#include "base/log.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

typedef struct {
    char *host;   /* as given to the resolver: no brackets */
    char **addrs; /* last known, sorted, without duplicates */
    size_t n;
    bool failing;
    char why[256]; /* the last failure's reason, while failing */
} name_t;

/* One HOST:PORT of the configuration: a pool entry's (pool set) or a cache's. */
typedef struct {
    char *pool, *version; /* NULL for a cache */
    uint32_t weight;
    size_t name; /* index in names */
    char *port;
} target_t;

typedef struct {
    discovery_t base;
    name_t *names;
    size_t n_names;
    target_t *targets; /* the pool entries' first, then the caches' */
    size_t n_pool_targets, n_targets;
    int64_t refresh_ms;
    discovery_dns_resolve_fn resolve;
    void *resolve_ud;

    pthread_mutex_t round_mu;
    discovery_instance_t *last; /* delivered last, sorted by address */
    size_t n_last;
    char **last_caches;
    size_t n_last_caches;
    bool caches_delivered;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    discovery_update_fn fn;
    void *ud;
    discovery_caches_fn caches_fn; /* NULL: caches not watched */
    void *caches_ud;
    bool started, stopped;
    bool thread_running; /* set by start, cleared by stop: only they touch it */
    pthread_t thread;
} dns_source_t;

void discovery_dns_config_init(discovery_dns_config_t *cfg)
{
    cfg->pools = NULL;
    cfg->caches = NULL;
    cfg->refresh_ms = 5000; /* ms */
    cfg->resolve = NULL;    /* getaddrinfo */
    cfg->resolve_ud = NULL;
}

int discovery_dns_getaddrinfo(void *ud, const char *host, char ***addrs, size_t *n, char *err,
                              size_t err_len)
{
    (void)ud;
    *addrs = NULL;
    *n = 0;
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        ls_set_err(err, err_len, "%s", rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return -1;
    }
    size_t cap = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
        cap++;
    char **out = ls_xcalloc(cap ? cap : 1, sizeof(*out));
    size_t k = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char buf[NI_MAXHOST];
        if (getnameinfo(ai->ai_addr, ai->ai_addrlen, buf, sizeof(buf), NULL, 0, NI_NUMERICHOST) ==
            0)
            out[k++] = ls_xstrdup(buf);
    }
    freeaddrinfo(res);
    *addrs = out;
    *n = k;
    return 0;
}

static void strings_free(char **s, size_t n)
{
    if (!s)
        return;
    for (size_t i = 0; i < n; i++)
        free(s[i]);
    free(s);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_inst(const void *a, const void *b)
{
    return strcmp(((const discovery_instance_t *)a)->addr, ((const discovery_instance_t *)b)->addr);
}

/* Sorts s[0..*n) and frees the duplicates. */
static void sort_unique(char **s, size_t *n)
{
    if (*n == 0)
        return;
    qsort(s, *n, sizeof(*s), cmp_str);
    size_t k = 1;
    for (size_t i = 1; i < *n; i++) {
        if (strcmp(s[i], s[k - 1]) == 0)
            free(s[i]);
        else
            s[k++] = s[i];
    }
    *n = k;
}

/* "IP:PORT", "[IP]:PORT" for IPv6; the caller frees it. */
static char *format_addr(const char *ip, const char *port)
{
    char *s = NULL;
    int rc = strchr(ip, ':') ? asprintf(&s, "[%s]:%s", ip, port) : asprintf(&s, "%s:%s", ip, port);
    if (rc < 0) {
        LS_LOG_ERROR("discovery", "out of memory");
        abort();
    }
    return s;
}

/* ---- configuration ---------------------------------------------------------------- */

static size_t intern_name(dns_source_t *s, const char *host, size_t len)
{
    for (size_t i = 0; i < s->n_names; i++)
        if (strlen(s->names[i].host) == len && strncmp(s->names[i].host, host, len) == 0)
            return i;
    name_t *names = ls_xcalloc(s->n_names + 1, sizeof(*names));
    if (s->n_names)
        memcpy(names, s->names, s->n_names * sizeof(*names));
    free(s->names);
    s->names = names;
    name_t *nm = &s->names[s->n_names];
    nm->host = ls_xstrdup(host);
    nm->host[len] = '\0';
    return s->n_names++;
}

/* Adds the target of addr (valid HOST:PORT or [V6]:PORT); pool NULL for a cache. */
static void add_target(dns_source_t *s, const char *addr, const char *pool, const char *version,
                       uint32_t weight)
{
    const char *colon = strrchr(addr, ':');
    const char *host = addr;
    size_t len = (size_t)(colon - addr);
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        host++;
        len -= 2;
    }
    target_t *t = ls_xcalloc(s->n_targets + 1, sizeof(*t));
    if (s->n_targets)
        memcpy(t, s->targets, s->n_targets * sizeof(*t));
    free(s->targets);
    s->targets = t;
    t = &s->targets[s->n_targets++];
    t->pool = pool ? ls_xstrdup(pool) : NULL;
    t->version = version ? ls_xstrdup(version) : NULL;
    t->weight = weight;
    t->name = intern_name(s, host, len);
    t->port = ls_xstrdup(colon + 1);
}

static int parse_caches(dns_source_t *s, const char *caches, char *err, size_t err_len)
{
    char *copy = ls_xstrdup(caches);
    char *save = NULL;
    int rc = LS_OK;
    for (char *a = strtok_r(copy, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        while (*a == ' ')
            a++;
        size_t len = strlen(a);
        while (len > 0 && a[len - 1] == ' ')
            a[--len] = '\0';
        if (!*a)
            continue;
        if (!discovery_addr_valid(a)) {
            ls_set_err(err, err_len, "cache '%s' is not HOST:PORT", a);
            rc = LS_ERR_INVALID;
            break;
        }
        add_target(s, a, NULL, NULL, 0);
    }
    free(copy);
    return rc;
}

/* ---- a round ------------------------------------------------------------------------ */

/* Resolves every name; with round_mu held. */
static void do_resolve_names(dns_source_t *s)
{
    for (size_t i = 0; i < s->n_names; i++) {
        name_t *nm = &s->names[i];
        char **addrs = NULL, why[256] = "";
        size_t n = 0;
        if (s->resolve(s->resolve_ud, nm->host, &addrs, &n, why, sizeof(why)) != 0) {
            if (!nm->failing || strcmp(nm->why, why) != 0)
                LS_LOG_WARN("router",
                            "dns name does not resolve, keeping its last addresses name=%s "
                            "known=%zu error=\"%s\"",
                            nm->host, nm->n, why);
            nm->failing = true;
            snprintf(nm->why, sizeof(nm->why), "%s", why);
            strings_free(addrs, n);
            continue;
        }
        sort_unique(addrs, &n);
        if (nm->failing)
            LS_LOG_INFO("router", "dns name resolves again name=%s addresses=%zu", nm->host, n);
        nm->failing = false;
        nm->why[0] = '\0';
        strings_free(nm->addrs, nm->n);
        nm->addrs = addrs;
        nm->n = n;
    }
}

/* The instances the names now give, sorted by address: the caller's (discovery_list_free).
 * dup gets a description of the first address two entries gave ("" when none), for a
 * warning when the list is delivered (not every round). */
static discovery_instance_t *do_instances(dns_source_t *s, size_t *n_out, char *dup, size_t dup_len)
{
    dup[0] = '\0';
    size_t cap = 0;
    for (size_t t = 0; t < s->n_pool_targets; t++)
        cap += s->names[s->targets[t].name].n;
    discovery_instance_t *list = ls_xcalloc(cap ? cap : 1, sizeof(*list));
    size_t n = 0;
    for (size_t t = 0; t < s->n_pool_targets; t++) {
        const target_t *tg = &s->targets[t];
        const name_t *nm = &s->names[tg->name];
        for (size_t a = 0; a < nm->n; a++) {
            char *addr = format_addr(nm->addrs[a], tg->port);
            bool seen = false;
            for (size_t j = 0; j < n && !seen; j++)
                seen = strcmp(list[j].addr, addr) == 0;
            if (seen) {
                if (!dup[0])
                    snprintf(dup, dup_len, "addr=%s name=%s pool=%s", addr, nm->host, tg->pool);
                free(addr);
                continue;
            }
            list[n].pool = ls_xstrdup(tg->pool);
            list[n].version = ls_xstrdup(tg->version);
            list[n].weight = tg->weight;
            list[n].addr = addr;
            n++;
        }
    }
    if (n)
        qsort(list, n, sizeof(*list), cmp_inst);
    *n_out = n;
    return list;
}

static char **do_caches(dns_source_t *s, size_t *n_out)
{
    size_t cap = 0;
    for (size_t t = s->n_pool_targets; t < s->n_targets; t++)
        cap += s->names[s->targets[t].name].n;
    char **out = ls_xcalloc(cap ? cap : 1, sizeof(*out));
    size_t n = 0;
    for (size_t t = s->n_pool_targets; t < s->n_targets; t++) {
        const name_t *nm = &s->names[s->targets[t].name];
        for (size_t a = 0; a < nm->n; a++)
            out[n++] = format_addr(nm->addrs[a], s->targets[t].port);
    }
    sort_unique(out, &n);
    *n_out = n;
    return out;
}

static bool same_instances(const discovery_instance_t *a, size_t na, const discovery_instance_t *b,
                           size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i].addr, b[i].addr) != 0 || strcmp(a[i].pool, b[i].pool) != 0 ||
            strcmp(a[i].version, b[i].version) != 0 || a[i].weight != b[i].weight)
            return false;
    return true;
}

static bool same_strings(char *const *a, size_t na, char *const *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return true;
}

/* One round: resolve, deliver what changed (always, the first time: force).  Returns
 * the number of lists delivered. */
static int round_run(dns_source_t *s, bool force)
{
    int delivered = 0;
    pthread_mutex_lock(&s->round_mu);
    do_resolve_names(s);
    size_t n = 0, nc = 0;
    char dup[512];
    discovery_instance_t *list = do_instances(s, &n, dup, sizeof(dup));
    char **caches = do_caches(s, &nc);
    bool inst_changed = force || !same_instances(list, n, s->last, s->n_last);
    bool caches_changed =
        !s->caches_delivered || !same_strings(caches, nc, s->last_caches, s->n_last_caches);
    pthread_mutex_lock(&s->mu);
    if (!s->stopped && s->caches_fn && caches_changed) {
        LS_LOG_INFO("router", "dns cache instances names=%zu used=%zu",
                    s->n_targets - s->n_pool_targets, nc);
        s->caches_fn(s->caches_ud, (const char *const *)caches, nc);
        s->caches_delivered = true;
        delivered++;
    } else {
        caches_changed = false;
    }
    if (!s->stopped && inst_changed) {
        LS_LOG_INFO("router", "dns inference instances entries=%zu used=%zu", s->n_pool_targets, n);
        if (dup[0])
            LS_LOG_WARN("router",
                        "dns: an address two entries give is the instance of the first only %s",
                        dup);
        s->fn(s->ud, list, n);
        delivered++;
    } else {
        inst_changed = false;
    }
    pthread_mutex_unlock(&s->mu);
    if (inst_changed) {
        discovery_list_free(s->last, s->n_last);
        s->last = list;
        s->n_last = n;
    } else {
        discovery_list_free(list, n);
    }
    if (caches_changed) {
        strings_free(s->last_caches, s->n_last_caches);
        s->last_caches = caches;
        s->n_last_caches = nc;
    } else {
        strings_free(caches, nc);
    }
    pthread_mutex_unlock(&s->round_mu);
    return delivered;
}

static void *refresh_thread(void *arg)
{
    dns_source_t *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stopped) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += s->refresh_ms / 1000;
        until.tv_nsec += (long)(s->refresh_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        int rc = 0;
        while (!s->stopped && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&s->cv, &s->mu, &until);
        if (s->stopped)
            break;
        pthread_mutex_unlock(&s->mu);
        round_run(s, false);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- the source --------------------------------------------------------------------- */

static int source_watch_caches(discovery_t *d, discovery_caches_fn fn, void *ud)
{
    dns_source_t *s = (dns_source_t *)d;
    if (s->n_targets == s->n_pool_targets)
        return LS_OK; /* no cache name: nothing to watch */
    pthread_mutex_lock(&s->mu);
    s->caches_fn = fn;
    s->caches_ud = ud;
    pthread_mutex_unlock(&s->mu);
    return LS_OK;
}

static int source_start(discovery_t *d, discovery_update_fn fn, void *ud)
{
    dns_source_t *s = (dns_source_t *)d;
    pthread_mutex_lock(&s->mu);
    s->fn = fn;
    s->ud = ud;
    s->started = true;
    pthread_mutex_unlock(&s->mu);
    LS_LOG_INFO("router", "dns resolving names=%zu refresh_ms=%" PRId64, s->n_names, s->refresh_ms);
    round_run(s, true);
    if (pthread_create(&s->thread, NULL, refresh_thread, s) != 0) {
        LS_LOG_ERROR("router", "cannot start the dns discovery thread");
        return LS_ERR_INTERNAL;
    }
    s->thread_running = true;
    return LS_OK;
}

static void source_stop(discovery_t *d)
{
    dns_source_t *s = (dns_source_t *)d;
    pthread_mutex_lock(&s->mu);
    s->stopped = true; /* a delivery running now has ended; later ones do nothing */
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->thread_running) {
        pthread_join(s->thread, NULL);
        s->thread_running = false;
    }
}

static void source_destroy(discovery_t *d)
{
    dns_source_t *s = (dns_source_t *)d;
    for (size_t i = 0; i < s->n_names; i++) {
        free(s->names[i].host);
        strings_free(s->names[i].addrs, s->names[i].n);
    }
    free(s->names);
    for (size_t i = 0; i < s->n_targets; i++) {
        free(s->targets[i].pool);
        free(s->targets[i].version);
        free(s->targets[i].port);
    }
    free(s->targets);
    discovery_list_free(s->last, s->n_last);
    strings_free(s->last_caches, s->n_last_caches);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->round_mu);
    free(s);
}

static const discovery_ops_t source_ops = {.name = "dns",
                                           .dynamic = true,
                                           .start = source_start,
                                           .stop = source_stop,
                                           .destroy = source_destroy,
                                           .watch_caches = source_watch_caches};

discovery_t *discovery_dns_create(const discovery_dns_config_t *cfg, char *err, size_t err_len)
{
    if (cfg->refresh_ms < DISCOVERY_DNS_REFRESH_MIN_MS) {
        ls_set_err(err, err_len, "refresh period %" PRId64 " ms is below %d ms", cfg->refresh_ms,
                   DISCOVERY_DNS_REFRESH_MIN_MS);
        return NULL;
    }
    discovery_instance_t *list;
    size_t n;
    if (discovery_static_parse(cfg->pools, &list, &n, err, err_len) != LS_OK)
        return NULL;
    dns_source_t *s = ls_xcalloc(1, sizeof(*s));
    s->base.ops = &source_ops;
    s->refresh_ms = cfg->refresh_ms;
    s->resolve = cfg->resolve ? cfg->resolve : discovery_dns_getaddrinfo;
    s->resolve_ud = cfg->resolve_ud;
    for (size_t i = 0; i < n; i++)
        add_target(s, list[i].addr, list[i].pool, list[i].version, list[i].weight);
    s->n_pool_targets = s->n_targets;
    discovery_list_free(list, n);
    pthread_mutex_init(&s->round_mu, NULL);
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (cfg->caches && cfg->caches[0] && parse_caches(s, cfg->caches, err, err_len) != LS_OK) {
        source_destroy(&s->base);
        return NULL;
    }
    return &s->base;
}

int discovery_dns_refresh(discovery_t *d)
{
    dns_source_t *s = (dns_source_t *)d;
    pthread_mutex_lock(&s->mu);
    bool live = s->started && !s->stopped;
    pthread_mutex_unlock(&s->mu);
    return live ? round_run(s, false) : 0;
}
