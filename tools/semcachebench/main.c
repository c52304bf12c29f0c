/*
 * main.c - llmserve-semcachebench: how well the semantic cache tells paraphrases from
 * questions that only look alike, per category, on a data set of prompt pairs.
 *
 * Data (tests/data/semcache_tune.tsv to choose settings on, semcache_heldout.tsv to
 * report on): lines "kind<TAB>category<TAB>stored prompt<TAB>later prompt", kind P (a
 * paraphrase: a hit is right) or N (a hard negative: any hit is a false hit); '#'
 * starts a comment.  As the cache does it: every distinct stored prompt is embedded
 * into one scope of the semantic index (cache_semantic.c, the service's own code:
 * sparse n-gram vectors in a 2^20-bucket space unless --dim or --dense say otherwise);
 * each later prompt is embedded and looks for its nearest entry at or above the
 * threshold.  A paraphrase is a hit when it finds its own stored prompt (finding
 * another is counted as a false hit too); a hard negative that finds anything is a
 * false hit.  Rates come with Wilson 95 % intervals.
 *
 * --sweep prints the rates at every threshold from 0.50 to 0.99 (use it on the tuning
 * set); --dense runs the dense index instead (with --dim 512: the cache before its
 * index went sparse); --latency N times a lookup as the service makes it (embed, guard
 * signature, guarded search) with N entries in one scope, for the service's index and,
 * in the same run, for the dense index of --baseline-dim floats that it replaced.
 * Exit status: 0, 1 when the data cannot be read, 2 for bad flags.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "cache/cache_embed.h"
#include "cache/cache_lexicon.h"
#include "cache/cache_key.h"
#include "cache/cache_semantic.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SB_MAX_CATS 32

typedef struct {
    char kind; /* 'P' or 'N' */
    char *category, *stored, *later;
    int stored_id; /* index of the distinct stored prompt */
} sb_pair_t;

typedef struct {
    const char *data;
    double threshold;
    int64_t dim;
    bool dense;
    int64_t baseline_dim;
    bool sweep;
    bool guards;
    bool list;
    int64_t latency;
    bool json;
    const char *wordnet;
    int64_t senses;
    bool spelling;
    bool stem;
    bool have_lexicon; /* the WordNet lexicon loaded (set by main) */
} sb_config_t;

typedef struct {
    char name[32];
    char kind;
    int n, hits;
} sb_cat_t;

/* Reads the pairs; NULL with a message on stderr when the file is unreadable or a line
 * is malformed. */
static sb_pair_t *read_pairs(const char *path, size_t *count)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "llmserve-semcachebench: %s: cannot open\n", path);
        return NULL;
    }
    sb_pair_t *p = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t len;
    int lineno = 0;
    while ((len = getline(&line, &line_cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0 || line[0] == '#')
            continue;
        char *field[4];
        int nf = 0;
        char *save = NULL;
        for (char *tok = strtok_r(line, "\t", &save); tok && nf < 4;
             tok = strtok_r(NULL, "\t", &save))
            field[nf++] = tok;
        if (nf != 4 || (strcmp(field[0], "P") != 0 && strcmp(field[0], "N") != 0) ||
            strlen(field[1]) >= sizeof(((sb_cat_t *)0)->name)) {
            fprintf(stderr, "llmserve-semcachebench: %s:%d: want kind (P or N), category, "
                            "stored and later prompt separated by tabs\n",
                    path, lineno);
            goto fail;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            sb_pair_t *np = realloc(p, cap * sizeof(*p));
            if (!np)
                goto fail;
            p = np;
        }
        p[n].kind = field[0][0];
        p[n].category = strdup(field[1]);
        p[n].stored = strdup(field[2]);
        p[n].later = strdup(field[3]);
        p[n].stored_id = -1;
        n++;
    }
    free(line);
    fclose(f);
    if (n == 0) {
        fprintf(stderr, "llmserve-semcachebench: %s: no pairs\n", path);
        free(p);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        p[i].stored_id = (int)i;
        for (size_t j = 0; j < i; j++)
            if (strcmp(p[j].stored, p[i].stored) == 0) {
                p[i].stored_id = p[j].stored_id;
                break;
            }
    }
    *count = n;
    return p;
fail:
    free(line);
    fclose(f);
    free(p);
    return NULL;
}

/* A digest standing for stored prompt id (the index maps vectors to exact keys). */
static cache_digest_t id_digest(int id)
{
    cache_digest_t d;
    memset(&d, 0, sizeof(d));
    memcpy(d.b, &id, sizeof(id));
    d.b[31] = 0x5a;
    return d;
}

static int digest_id(const cache_digest_t *d)
{
    int id;
    memcpy(&id, d->b, sizeof(id));
    return id;
}

/* Wilson score interval for k of n at 95 %. */
static void wilson(int k, int n, double *lo, double *hi)
{
    if (n == 0) {
        *lo = 0.0;
        *hi = 1.0;
        return;
    }
    const double z = 1.959964;
    double p = (double)k / n, z2 = z * z / n;
    double centre = (p + z2 / 2) / (1 + z2);
    double half = z * sqrt(p * (1 - p) / n + z * z / (4.0 * n * n)) / (1 + z2);
    *lo = fmax(0.0, centre - half);
    *hi = fmin(1.0, centre + half);
}

typedef struct {
    /* dense index: [n][dim] by stored id (rows of ids that repeat stay unused) */
    float *stored_vec, *later_vec;
    /* sparse index (the service's): [n] by stored id, likewise */
    cache_sparse_t *stored_sv, *later_sv;
    bool *later_ok;                            /* later prompt had something to embed */
    cache_guard_sig_t *stored_sig, *later_sig; /* NULL: no guards */
} sb_vecs_t;

/* Each later prompt's answer at threshold thr, as the cache finds it: the most similar
 * stored prompt at or above thr that the guards let through (id -1: none), and the
 * guards' veto when one turned down a better entry. */
static void search_all(const sb_pair_t *p, size_t n, const sb_vecs_t *v, size_t dim, float thr,
                       float *best_sim, int *best_id, cache_guard_reason_t *veto)
{
    bool sparse = v->stored_sv != NULL;
    cache_semantic_t *idx = sparse ? cache_semantic_create_sparse(dim, n + 16, 4)
                                   : cache_semantic_create(dim, n + 16, 4);
    cache_digest_t scope;
    memset(&scope, 0, sizeof(scope));
    int64_t now = ls_now_us();
    for (size_t i = 0; i < n; i++)
        if (p[i].stored_id == (int)i) {
            cache_digest_t d = id_digest((int)i);
            const cache_guard_sig_t *sig = v->stored_sig ? &v->stored_sig[i] : NULL;
            if (sparse)
                cache_semantic_add_sparse(idx, &scope, 1, &v->stored_sv[i], sig, &d,
                                          now + 3600000000LL, now);
            else
                cache_semantic_add_guarded(idx, &scope, 1, v->stored_vec + i * dim, sig, &d,
                                           now + 3600000000LL, now);
        }
    for (size_t i = 0; i < n; i++) {
        best_sim[i] = -2.0f;
        best_id[i] = -1;
        veto[i] = CACHE_GUARD_OK;
        if (!v->later_ok[i])
            continue;
        cache_digest_t d;
        float sim;
        const cache_guard_sig_t *sig = v->later_sig ? &v->later_sig[i] : NULL;
        if (sparse ? cache_semantic_search_sparse(idx, &scope, &v->later_sv[i], sig, thr, now, &d,
                                                  &sim, &veto[i])
                   : cache_semantic_search_guarded(idx, &scope, v->later_vec + i * dim, sig, thr,
                                                   now, &d, &sim, &veto[i])) {
            best_sim[i] = sim;
            best_id[i] = digest_id(&d);
        }
    }
    cache_semantic_destroy(idx);
}

/* Per category: pairs and hits (P: found its own stored prompt; N: found anything). */
static size_t tally(const sb_pair_t *p, size_t n, const float *sim, const int *id, float thr,
                    sb_cat_t *cats, int *p_wrong)
{
    size_t nc = 0;
    *p_wrong = 0;
    for (size_t i = 0; i < n; i++) {
        size_t c = 0;
        while (c < nc && !(cats[c].kind == p[i].kind && strcmp(cats[c].name, p[i].category) == 0))
            c++;
        if (c == nc && nc < SB_MAX_CATS) {
            memset(&cats[nc], 0, sizeof(cats[nc]));
            snprintf(cats[nc].name, sizeof(cats[nc].name), "%s", p[i].category);
            cats[nc].kind = p[i].kind;
            nc++;
        }
        if (c == nc)
            continue;
        bool hit = id[i] >= 0 && sim[i] >= thr;
        cats[c].n++;
        if (p[i].kind == 'P') {
            bool own = hit && id[i] == p[i].stored_id;
            cats[c].hits += own;
            *p_wrong += hit && !own;
        } else {
            cats[c].hits += hit;
        }
    }
    return nc;
}

static void totals(const sb_cat_t *cats, size_t nc, char kind, int *n, int *hits)
{
    *n = *hits = 0;
    for (size_t c = 0; c < nc; c++)
        if (cats[c].kind == kind) {
            *n += cats[c].n;
            *hits += cats[c].hits;
        }
}

static void print_table(const sb_config_t *cfg, const cache_embedder_t *e, const sb_cat_t *cats,
                        size_t nc, int p_wrong)
{
    int pn, ph, nn, nh;
    totals(cats, nc, 'P', &pn, &ph);
    totals(cats, nc, 'N', &nn, &nh);
    double lo, hi;
    if (cfg->json) {
        printf("{\"data\":\"%s\",\"embedder\":\"%s\",\"dim\":%zu,\"index\":\"%s\","
               "\"threshold\":%.4f,\"guards\":%s,\"wordnet\":%s,\"stem\":%s,\"categories\":[",
               cfg->data, e->name, e->dim, cfg->dense ? "dense" : "sparse", cfg->threshold,
               cfg->guards ? "true" : "false", cfg->have_lexicon ? "true" : "false",
               cfg->stem ? "true" : "false");
        for (size_t c = 0; c < nc; c++) {
            wilson(cats[c].hits, cats[c].n, &lo, &hi);
            printf("%s{\"kind\":\"%c\",\"category\":\"%s\",\"pairs\":%d,\"hits\":%d,"
                   "\"rate\":%.4f,\"ci95\":[%.4f,%.4f]}",
                   c ? "," : "", cats[c].kind, cats[c].name, cats[c].n, cats[c].hits,
                   cats[c].n ? (double)cats[c].hits / cats[c].n : 0.0, lo, hi);
        }
        printf("],\"paraphrase_hits\":%d,\"paraphrases\":%d,\"paraphrase_wrong_hits\":%d,"
               "\"false_hits\":%d,\"negatives\":%d}\n",
               ph, pn, p_wrong, nh, nn);
        return;
    }
    printf("semantic cache: %s embedder (dim %zu, %s index, WordNet %s, stems %s), threshold "
           "%.2f, guards %s, data %s\n",
           e->name, e->dim, cfg->dense ? "dense" : "sparse", cfg->have_lexicon ? "on" : "off",
           cfg->stem ? "on" : "off", cfg->threshold, cfg->guards ? "on" : "off", cfg->data);
    printf("P: paraphrase hits (higher is better); N: false hits on hard negatives (0 is the "
           "target)\n");
    printf("%-4s %-10s %6s %6s %7s  %s\n", "kind", "category", "pairs", "hits", "rate", "95% CI");
    for (char kind = 'P'; kind; kind = kind == 'P' ? 'N' : 0) {
        for (size_t c = 0; c < nc; c++) {
            if (cats[c].kind != kind)
                continue;
            wilson(cats[c].hits, cats[c].n, &lo, &hi);
            printf("%-4c %-10s %6d %6d %7.3f  [%.3f, %.3f]\n", kind, cats[c].name, cats[c].n,
                   cats[c].hits, cats[c].n ? (double)cats[c].hits / cats[c].n : 0.0, lo, hi);
        }
        int n = kind == 'P' ? pn : nn, h = kind == 'P' ? ph : nh;
        wilson(h, n, &lo, &hi);
        printf("%-4c %-10s %6d %6d %7.3f  [%.3f, %.3f]\n", kind, "all", n, h,
               n ? (double)h / n : 0.0, lo, hi);
    }
    printf("paraphrases that found another pair's stored prompt: %d\n", p_wrong);
}

/* Vetoes by reason, split by what they turned down: a paraphrase's own stored prompt
 * (a lost hit) or anything else (a false hit avoided). */
static void print_vetoes(const sb_pair_t *p, size_t n, const cache_guard_reason_t *veto)
{
    int lost[CACHE_GUARD_REASONS] = {0}, saved[CACHE_GUARD_REASONS] = {0};
    for (size_t i = 0; i < n; i++) {
        if (veto[i] == CACHE_GUARD_OK)
            continue;
        if (p[i].kind == 'P')
            lost[veto[i]]++;
        else
            saved[veto[i]]++;
    }
    printf("guard vetoes (on hard negatives: false hits avoided; on paraphrases: hits lost):\n");
    for (int r = 1; r < CACHE_GUARD_REASONS; r++)
        printf("  %-9s negatives %3d  paraphrases %3d\n",
               cache_guard_reason_name((cache_guard_reason_t)r), saved[r], lost[r]);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* One index as the service keeps it, with what a lookup needs to search it. */
typedef struct {
    const char *name;
    const cache_embedder_t *e;
    cache_semantic_t *idx;
    bool sparse;
    float *vec; /* dense query */
    cache_sparse_t sv;
    double *total_us, *search_us; /* per measured lookup */
    int hits;
} sb_lat_t;

static void lat_init(sb_lat_t *l, const char *name, const cache_embedder_t *e, bool sparse,
                     size_t entries, int lookups)
{
    l->name = name;
    l->e = e;
    l->sparse = sparse;
    l->idx = sparse ? cache_semantic_create_sparse(e->dim, entries + 16, 4)
                    : cache_semantic_create(e->dim, entries + 16, 4);
    l->vec = sparse ? NULL : malloc(e->dim * sizeof(float));
    l->sv = (cache_sparse_t)CACHE_SPARSE_INIT;
    l->total_us = malloc((size_t)lookups * sizeof(double));
    l->search_us = malloc((size_t)lookups * sizeof(double));
    l->hits = 0;
    if ((!sparse && !l->vec) || !l->total_us || !l->search_us) {
        fprintf(stderr, "llmserve-semcachebench: out of memory\n");
        exit(1);
    }
}

static void lat_free(sb_lat_t *l)
{
    cache_semantic_destroy(l->idx);
    free(l->vec);
    cache_sparse_free(&l->sv);
    free(l->total_us);
    free(l->search_us);
}

static bool lat_embed(sb_lat_t *l, const char *text)
{
    size_t len = strlen(text);
    if (l->sparse)
        return l->e->embed_sparse(l->e, text, len, &l->sv) == LS_OK;
    return l->e->embed(l->e, text, len, l->vec) == LS_OK;
}

static void lat_add(sb_lat_t *l, const char *text, bool guards, int id, int64_t now)
{
    if (!lat_embed(l, text))
        return;
    cache_guard_sig_t sig;
    if (guards)
        cache_guard_sig(text, strlen(text), &sig);
    cache_digest_t scope, d = id_digest(id);
    memset(&scope, 0, sizeof(scope));
    if (l->sparse)
        cache_semantic_add_sparse(l->idx, &scope, 1, &l->sv, guards ? &sig : NULL, &d,
                                  now + 3600000000LL, now);
    else
        cache_semantic_add_guarded(l->idx, &scope, 1, l->vec, guards ? &sig : NULL, &d,
                                   now + 3600000000LL, now);
}

/* A lookup as engine_lookup makes it after an exact miss: embed, guard signature, guarded
 * search.  Recorded as lookup `slot` unless slot is negative (warm-up). */
static void lat_lookup(sb_lat_t *l, const char *q, bool guards, float thr, int64_t now, int slot)
{
    int64_t t0 = now_ns();
    bool ok = lat_embed(l, q);
    cache_guard_sig_t sig;
    if (guards)
        cache_guard_sig(q, strlen(q), &sig);
    int64_t t1 = now_ns();
    cache_digest_t scope, d;
    memset(&scope, 0, sizeof(scope));
    float sim;
    cache_guard_reason_t veto;
    bool hit = false;
    if (ok)
        hit = l->sparse
                  ? cache_semantic_search_sparse(l->idx, &scope, &l->sv, guards ? &sig : NULL, thr,
                                                 now, &d, &sim, &veto)
                  : cache_semantic_search_guarded(l->idx, &scope, l->vec, guards ? &sig : NULL, thr,
                                                  now, &d, &sim, &veto);
    int64_t t2 = now_ns();
    if (slot < 0)
        return;
    l->total_us[slot] = (double)(t2 - t0) / 1000.0;
    l->search_us[slot] = (double)(t2 - t1) / 1000.0;
    l->hits += hit;
}

static int cmp_double(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return a < b ? -1 : a > b;
}

static void lat_report(sb_lat_t *l, int lookups, size_t entries, double *p50, double *p99)
{
    qsort(l->total_us, (size_t)lookups, sizeof(double), cmp_double);
    qsort(l->search_us, (size_t)lookups, sizeof(double), cmp_double);
    *p50 = l->total_us[lookups / 2];
    *p99 = l->total_us[lookups * 99 / 100];
    printf("  %-34s p50 %8.1f us  p99 %8.1f us  max %8.1f us  (search alone: p50 %8.1f us, "
           "p99 %8.1f us)  %zu bytes/entry, %d hits\n",
           l->name, *p50, *p99, l->total_us[lookups - 1], l->search_us[lookups / 2],
           l->search_us[lookups * 99 / 100], cache_semantic_bytes(l->idx) / (entries ? entries : 1),
           l->hits);
}

/* Lookup latency with `entries` prompts in one scope: the index this run measures (the
 * service's unless --dense) and the dense baseline, in the same process, filled with the
 * same prompts, their lookups in alternating blocks so both see the same machine. */
static int run_latency(const sb_config_t *cfg, const cache_embedder_t *e,
                       const cache_embedder_t *base_e, const sb_pair_t *p, size_t n,
                       int64_t entries)
{
    enum { LOOKUPS = 5000, WARMUP = 500, BLOCK = 500, REWARM = 50 };
    char name[2][64];
    snprintf(name[0], sizeof(name[0]), "%s index (dim %zu):", cfg->dense ? "dense" : "sparse",
             e->dim);
    snprintf(name[1], sizeof(name[1]), "dense baseline (dim %zu):", base_e->dim);
    sb_lat_t l[2];
    lat_init(&l[0], name[0], e, !cfg->dense, (size_t)entries, LOOKUPS);
    lat_init(&l[1], name[1], base_e, false, (size_t)entries, LOOKUPS);
    char text[1024];
    int64_t now = ls_now_us();
    /* distinct prompts: the data's stored prompts with a numbered suffix */
    for (int64_t i = 0; i < entries; i++) {
        snprintf(text, sizeof(text), "%s (case %lld)", p[(size_t)i % n].stored, (long long)i);
        for (int k = 0; k < 2; k++)
            lat_add(&l[k], text, cfg->guards, (int)i, now);
    }
    float thr = (float)cfg->threshold;
    /* Blocks of lookups, the two indexes taking turns, each block after a few unmeasured
     * lookups: a dense search streams the whole scope through the caches, so lookups
     * interleaved one by one would measure the sparse index on caches the baseline has
     * just flushed, which a service running one index does not see. */
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < WARMUP; i++)
            lat_lookup(&l[k], p[(size_t)i % n].later, cfg->guards, thr, now, -1);
    for (int b = 0; b < LOOKUPS / BLOCK; b++)
        for (int k = 0; k < 2; k++) {
            for (int i = 0; i < REWARM; i++) /* other prompts than the block's */
                lat_lookup(&l[k], p[(size_t)(b * BLOCK + i + n / 2) % n].later, cfg->guards, thr,
                           now, -1);
            for (int i = b * BLOCK; i < (b + 1) * BLOCK; i++)
                lat_lookup(&l[k], p[(size_t)i % n].later, cfg->guards, thr, now, i);
        }
    printf("lookup (embed + guard signature + guarded search) with %lld entries in one scope, "
           "%d lookups, threshold %.2f, guards %s:\n",
           (long long)entries, LOOKUPS, thr, cfg->guards ? "on" : "off");
    double p50[2], p99[2];
    for (int k = 0; k < 2; k++)
        lat_report(&l[k], LOOKUPS, (size_t)entries, &p50[k], &p99[k]);
    printf("  dense baseline / %s index: p50 %.1fx, p99 %.1fx\n", cfg->dense ? "dense" : "sparse",
           p50[1] / p50[0], p99[1] / p99[0]);
    for (int k = 0; k < 2; k++)
        lat_free(&l[k]);
    return 0;
}

int main(int argc, char **argv)
{

    sb_config_t cfg = {.data = NULL,
                       .threshold = CACHE_SEMANTIC_DEFAULT_THRESHOLD,
                       .dim = (int64_t)CACHE_EMBED_NGRAM_SPACE,
                       .dense = false,
                       .baseline_dim = 512,
                       .sweep = false,
                       .guards = true,
                       .latency = 0,
                       .json = false,
                       .wordnet = "auto",
                       .senses = 1,
                       .spelling = true,
                       .stem = true};
    const ls_opt_t opts[] = {
        {"data", NULL, LS_OPT_STRING, &cfg.data,
         "pairs to evaluate (tests/data/semcache_heldout.tsv to report, semcache_tune.tsv to "
         "choose settings on; required)",
         0, 0},
        {"threshold", NULL, LS_OPT_DOUBLE, &cfg.threshold,
         "least cosine similarity for a hit (default: the cache service's)", -1, 1},
        {"dim", NULL, LS_OPT_INT, &cfg.dim,
         "n-gram hash space, a power of two (the service's --embed-dim: 1048576)", 64,
         (double)CACHE_EMBED_NGRAM_MAX_DIM},
        {"dense", NULL, LS_OPT_BOOL, &cfg.dense,
         "search dense vectors of --dim floats by a scan instead of the service's sparse index "
         "(--dense --dim 512: the cache before its index went sparse; --dim at most 65536)",
         0, 0},
        {"baseline-dim", NULL, LS_OPT_INT, &cfg.baseline_dim,
         "floats per vector of the dense baseline --latency also times", 64, 65536},
        {"sweep", NULL, LS_OPT_BOOL, &cfg.sweep,
         "print the rates at every threshold from 0.50 to 0.99 instead of one table", 0, 0},
        {"list", NULL, LS_OPT_BOOL, &cfg.list,
         "also list every false hit and every paraphrase missed, with the pair's similarity "
         "and guard verdict (for work on the tuning set)",
         0, 0},
        {"guards", NULL, LS_OPT_BOOL, &cfg.guards,
         "apply the cache's guards (numbers, units, negation, names, direction) as the service "
         "does by default (--no-guards: similarity alone)",
         0, 0},
        {"latency", NULL, LS_OPT_INT, &cfg.latency,
         "also time lookups (embed, guard signature, guarded search) with this many entries in "
         "one scope, and the dense baseline's in the same run (0: no)",
         0, 1000000},
        {"json", NULL, LS_OPT_BOOL, &cfg.json, "one JSON object instead of the table", 0, 0},
        {"wordnet", NULL, LS_OPT_STRING, &cfg.wordnet,
         "WordNet dictionary for lemmas, spelling and synonyms, as the cache service's "
         "--wordnet: auto (the default), none, or a directory",
         0, 0},
        {"senses", NULL, LS_OPT_INT, &cfg.senses,
         "senses per word that may make a synonym (0: no synonyms)", 0, 64},
        {"spelling", NULL, LS_OPT_BOOL, &cfg.spelling,
         "correct words WordNet does not know (--no-spelling: keep them)", 0, 0},
        {"stem", NULL, LS_OPT_BOOL, &cfg.stem,
         "Snowball English stems of content words, as the service (--no-stem: none)", 0, 0},
    };
    const ls_config_t lc = {
        .program = "llmserve-semcachebench",
        .summary = "paraphrase hits and false hits of the semantic cache, per category",
        .opts = opts,
        .n_opts = sizeof(opts) / sizeof(opts[0]),
    };
    char err[512];
    int rc = ls_config_load(&lc, argc, argv, err, sizeof(err));
    if (rc == LS_CONFIG_HELP)
        return 0;
    if (rc != LS_OK) {
        fprintf(stderr, "llmserve-semcachebench: %s\n", err);
        return 2;
    }
    if (!cfg.data || !*cfg.data) {
        fprintf(stderr, "llmserve-semcachebench: --data FILE is required\n");
        return 2;
    }
    if (cfg.dense && cfg.dim > 65536) {
        fprintf(stderr, "llmserve-semcachebench: --dense needs --dim of at most 65536\n");
        return 2;
    }
    /* the service's embedder, and for --latency the dense baseline's with the same word
     * normalization (each embedder owns its lexicon) */
    cache_embedder_t *e = NULL, *base_e = NULL;
    for (int k = 0; k < (cfg.latency > 0 ? 2 : 1); k++) {
        cache_lexicon_config_t lc_cfg;
        cache_lexicon_config_init(&lc_cfg);
        lc_cfg.senses = (int)cfg.senses;
        lc_cfg.spelling = cfg.spelling;
        cache_lexicon_t *lex = NULL;
        if (cache_lexicon_open(cfg.wordnet, &lc_cfg, &lex, err, sizeof(err)) != LS_OK) {
            fprintf(stderr, "llmserve-semcachebench: --wordnet: %s\n", err);
            cache_embedder_destroy(e);
            return 1;
        }
        if (k == 0 && !lex && err[0])
            fprintf(stderr, "llmserve-semcachebench: without WordNet: %s\n", err);
        cfg.have_lexicon = lex != NULL;
        cache_embed_ngram_config_t ec;
        cache_embed_ngram_config_init(&ec);
        ec.dim = (size_t)(k == 0 ? cfg.dim : cfg.baseline_dim);
        ec.lex = lex;
        ec.stem = cfg.stem;
        *(k == 0 ? &e : &base_e) = cache_embed_ngram_create_cfg(&ec);
    }
    if (!e || (cfg.latency > 0 && !base_e)) {
        fprintf(stderr, "llmserve-semcachebench: --dim and --baseline-dim must be powers of "
                        "two\n");
        cache_embedder_destroy(e);
        cache_embedder_destroy(base_e);
        return 2;
    }
    size_t n;
    sb_pair_t *p = read_pairs(cfg.data, &n);
    if (!p) {
        cache_embedder_destroy(e);
        cache_embedder_destroy(base_e);
        return 1;
    }
    size_t dim = e->dim;
    sb_vecs_t v = {0};
    if (cfg.dense) {
        v.stored_vec = calloc(n * dim, sizeof(float));
        v.later_vec = calloc(n * dim, sizeof(float));
    } else {
        v.stored_sv = calloc(n, sizeof(cache_sparse_t));
        v.later_sv = calloc(n, sizeof(cache_sparse_t));
    }
    v.later_ok = calloc(n, sizeof(bool));
    if (cfg.guards) {
        v.stored_sig = calloc(n, sizeof(cache_guard_sig_t));
        v.later_sig = calloc(n, sizeof(cache_guard_sig_t));
    }
    float *sim = calloc(n, sizeof(float));
    int *id = calloc(n, sizeof(int));
    cache_guard_reason_t *veto = calloc(n, sizeof(*veto));
    if ((cfg.dense ? !v.stored_vec || !v.later_vec : !v.stored_sv || !v.later_sv) || !v.later_ok ||
        !sim || !id || !veto || (cfg.guards && (!v.stored_sig || !v.later_sig))) {
        fprintf(stderr, "llmserve-semcachebench: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *st = p[i].stored, *lt = p[i].later;
        if (cfg.dense) {
            if (p[i].stored_id == (int)i)
                (void)e->embed(e, st, strlen(st), v.stored_vec + i * dim);
            v.later_ok[i] = e->embed(e, lt, strlen(lt), v.later_vec + i * dim) == LS_OK;
        } else {
            if (p[i].stored_id == (int)i)
                (void)e->embed_sparse(e, st, strlen(st), &v.stored_sv[i]);
            v.later_ok[i] = e->embed_sparse(e, lt, strlen(lt), &v.later_sv[i]) == LS_OK;
        }
        if (cfg.guards) {
            cache_guard_sig(p[i].stored, strlen(p[i].stored), &v.stored_sig[i]);
            cache_guard_sig(p[i].later, strlen(p[i].later), &v.later_sig[i]);
        }
    }
    sb_cat_t cats[SB_MAX_CATS];
    int p_wrong;
    if (cfg.sweep) {
        printf("threshold  paraphrase_hits  false_hits (of %s)\n", cfg.data);
        for (int t = 50; t <= 99; t++) {
            search_all(p, n, &v, dim, (float)t / 100.0f, sim, id, veto);
            size_t nc = tally(p, n, sim, id, (float)t / 100.0f, cats, &p_wrong);
            int pn, ph, nn, nh;
            totals(cats, nc, 'P', &pn, &ph);
            totals(cats, nc, 'N', &nn, &nh);
            printf("%9.2f  %6d/%-6d %.3f  %4d/%-4d (+%d paraphrases on another prompt)\n",
                   t / 100.0, ph, pn, pn ? (double)ph / pn : 0.0, nh, nn, p_wrong);
        }
    } else {
        search_all(p, n, &v, dim, (float)cfg.threshold, sim, id, veto);
        size_t nc = tally(p, n, sim, id, (float)cfg.threshold, cats, &p_wrong);
        print_table(&cfg, e, cats, nc, p_wrong);
        if (cfg.guards && !cfg.json)
            print_vetoes(p, n, veto);
        for (size_t i = 0; cfg.list && i < n; i++) {
            bool hit = id[i] >= 0 && sim[i] >= (float)cfg.threshold;
            bool own = hit && id[i] == p[i].stored_id;
            if (!(p[i].kind == 'N' ? hit : !own))
                continue;
            /* the pair's own similarity and what the guards say about the pair */
            size_t s = (size_t)p[i].stored_id;
            float pair = v.later_ok[i] ? cache_embed_cosine(v.later_vec + i * dim,
                                                            v.stored_vec + s * dim, dim)
                                       : 0.0f;
            cache_guard_reason_t g =
                v.stored_sig ? cache_guard_check(&v.stored_sig[s], &v.later_sig[i]) : CACHE_GUARD_OK;
            printf("%s %-9s %.3f %-8s  %s  |  %s\n", p[i].kind == 'N' ? "false hit" : "missed   ",
                   p[i].category, pair, cache_guard_reason_name(g), p[i].stored, p[i].later);
        }
    }
    if (cfg.latency > 0)
        run_latency(&cfg, e, base_e, p, n, cfg.latency);
    for (size_t i = 0; i < n; i++) {
        free(p[i].category);
        free(p[i].stored);
        free(p[i].later);
    }
    free(p);
    free(v.stored_vec);
    free(v.later_vec);
    for (size_t i = 0; v.stored_sv && i < n; i++) {
        cache_sparse_free(&v.stored_sv[i]);
        cache_sparse_free(&v.later_sv[i]);
    }
    free(v.stored_sv);
    free(v.later_sv);
    free(v.later_ok);
    free(v.stored_sig);
    free(v.later_sig);
    free(veto);
    free(sim);
    free(id);
    cache_embedder_destroy(e);
    cache_embedder_destroy(base_e);
    return 0;
}
