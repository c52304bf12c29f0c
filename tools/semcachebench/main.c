/*
 * main.c - llmserve-semcachebench: how well the semantic cache tells paraphrases from
 * questions that only look alike, per category, on a data set of prompt pairs.
 *
 * Data (tests/data/semcache_tune.tsv to choose settings on, semcache_heldout.tsv to
 * report on): lines "kind<TAB>category<TAB>stored prompt<TAB>later prompt", kind P (a
 * paraphrase: a hit is right) or N (a hard negative: any hit is a false hit); '#'
 * starts a comment.  As the cache does it: every distinct stored prompt is embedded
 * into one scope of the semantic index (cache_semantic.c, the service's own code);
 * each later prompt is embedded and looks for its nearest entry at or above the
 * threshold.  A paraphrase is a hit when it finds its own stored prompt (finding
 * another is counted as a false hit too); a hard negative that finds anything is a
 * false hit.  Rates come with Wilson 95 % intervals.
 *
 * --sweep prints the rates at every threshold from 0.50 to 0.99 (use it on the tuning
 * set); --latency N times embed + search with N entries in one scope.
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
    float *stored_vec; /* [n][dim] by stored id (rows of ids that repeat stay unused) */
    float *later_vec;  /* [n][dim] */
    bool *later_ok;    /* later prompt had something to embed */
    cache_guard_sig_t *stored_sig, *later_sig; /* NULL: no guards */
} sb_vecs_t;

/* Each later prompt's answer at threshold thr, as the cache finds it: the most similar
 * stored prompt at or above thr that the guards let through (id -1: none), and the
 * guards' veto when one turned down a better entry. */
static void search_all(const sb_pair_t *p, size_t n, const sb_vecs_t *v, size_t dim, float thr,
                       float *best_sim, int *best_id, cache_guard_reason_t *veto)
{
    cache_semantic_t *idx = cache_semantic_create(dim, n + 16, 4);
    cache_digest_t scope;
    memset(&scope, 0, sizeof(scope));
    int64_t now = ls_now_us();
    for (size_t i = 0; i < n; i++)
        if (p[i].stored_id == (int)i) {
            cache_digest_t d = id_digest((int)i);
            cache_semantic_add_guarded(idx, &scope, 1, v->stored_vec + i * dim,
                                       v->stored_sig ? &v->stored_sig[i] : NULL, &d,
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
        if (cache_semantic_search_guarded(idx, &scope, v->later_vec + i * dim,
                                          v->later_sig ? &v->later_sig[i] : NULL, thr, now, &d,
                                          &sim, &veto[i])) {
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
        printf("{\"data\":\"%s\",\"embedder\":\"%s\",\"dim\":%zu,\"threshold\":%.4f,"
               "\"guards\":%s,\"wordnet\":%s,\"stem\":%s,\"categories\":[",
               cfg->data, e->name, e->dim, cfg->threshold, cfg->guards ? "true" : "false",
               cfg->have_lexicon ? "true" : "false", cfg->stem ? "true" : "false");
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
    printf("semantic cache: %s embedder (dim %zu, WordNet %s, stems %s), threshold %.2f, guards "
           "%s, data %s\n",
           e->name, e->dim, cfg->have_lexicon ? "on" : "off", cfg->stem ? "on" : "off",
           cfg->threshold, cfg->guards ? "on" : "off", cfg->data);
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

/* embed + search latency with `entries` prompts in one scope. */
static int run_latency(const cache_embedder_t *e, const sb_pair_t *p, size_t n, int64_t entries)
{
    size_t dim = e->dim;
    cache_semantic_t *idx = cache_semantic_create(dim, (size_t)entries + 16, 4);
    cache_digest_t scope;
    memset(&scope, 0, sizeof(scope));
    float *v = malloc(dim * sizeof(float));
    char text[1024];
    int64_t now = ls_now_us();
    /* distinct prompts: the data's stored prompts with a numbered suffix */
    for (int64_t i = 0; i < entries; i++) {
        snprintf(text, sizeof(text), "%s (case %lld)", p[(size_t)i % n].stored, (long long)i);
        if (e->embed(e, text, strlen(text), v) != LS_OK)
            continue;
        cache_digest_t d = id_digest((int)i);
        cache_semantic_add(idx, &scope, 1, v, &d, now + 3600000000LL, now);
    }
    enum { LOOKUPS = 2000 };
    double *us = malloc(LOOKUPS * sizeof(double));
    for (int i = 0; i < LOOKUPS; i++) {
        const char *q = p[(size_t)i % n].later;
        int64_t t0 = now_ns();
        cache_digest_t d;
        float sim;
        if (e->embed(e, q, strlen(q), v) == LS_OK)
            (void)cache_semantic_search(idx, &scope, v, CACHE_SEMANTIC_DEFAULT_THRESHOLD, now, &d,
                                            &sim);
        us[i] = (double)(now_ns() - t0) / 1000.0;
    }
    /* sort for percentiles */
    for (int i = 1; i < LOOKUPS; i++) {
        double x = us[i];
        int j = i - 1;
        while (j >= 0 && us[j] > x) {
            us[j + 1] = us[j];
            j--;
        }
        us[j + 1] = x;
    }
    printf("lookup (embed + search) with %lld entries in one scope, %d lookups: p50 %.1f us, "
           "p99 %.1f us, max %.1f us\n",
           (long long)entries, LOOKUPS, us[LOOKUPS / 2], us[LOOKUPS * 99 / 100],
           us[LOOKUPS - 1]);
    free(us);
    free(v);
    cache_semantic_destroy(idx);
    return 0;
}

int main(int argc, char **argv)
{

    sb_config_t cfg = {.data = NULL,
                       .threshold = CACHE_SEMANTIC_DEFAULT_THRESHOLD,
                       .dim = 512,
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
        {"dim", NULL, LS_OPT_INT, &cfg.dim, "embedding size, a power of two (the service's: 512)",
         64, 65536},
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
         "also time embed + search with this many entries in one scope (0: no)", 0, 1000000},
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
    cache_lexicon_config_t lc_cfg;
    cache_lexicon_config_init(&lc_cfg);
    lc_cfg.senses = (int)cfg.senses;
    lc_cfg.spelling = cfg.spelling;
    cache_lexicon_t *lex = NULL;
    if (cache_lexicon_open(cfg.wordnet, &lc_cfg, &lex, err, sizeof(err)) != LS_OK) {
        fprintf(stderr, "llmserve-semcachebench: --wordnet: %s\n", err);
        return 1;
    }
    if (!lex && err[0])
        fprintf(stderr, "llmserve-semcachebench: without WordNet: %s\n", err);
    cfg.have_lexicon = lex != NULL;
    cache_embed_ngram_config_t ec;
    cache_embed_ngram_config_init(&ec);
    ec.dim = (size_t)cfg.dim;
    ec.lex = lex;
    ec.stem = cfg.stem;
    cache_embedder_t *e = cache_embed_ngram_create_cfg(&ec);
    if (!e) {
        fprintf(stderr, "llmserve-semcachebench: --dim must be a power of two from 64 to 65536\n");
        return 2;
    }
    size_t n;
    sb_pair_t *p = read_pairs(cfg.data, &n);
    if (!p) {
        cache_embedder_destroy(e);
        return 1;
    }
    size_t dim = e->dim;
    sb_vecs_t v = {calloc(n * dim, sizeof(float)), calloc(n * dim, sizeof(float)),
                   calloc(n, sizeof(bool)), NULL, NULL};
    if (cfg.guards) {
        v.stored_sig = calloc(n, sizeof(cache_guard_sig_t));
        v.later_sig = calloc(n, sizeof(cache_guard_sig_t));
    }
    float *sim = calloc(n, sizeof(float));
    int *id = calloc(n, sizeof(int));
    cache_guard_reason_t *veto = calloc(n, sizeof(*veto));
    if (!v.stored_vec || !v.later_vec || !v.later_ok || !sim || !id || !veto ||
        (cfg.guards && (!v.stored_sig || !v.later_sig))) {
        fprintf(stderr, "llmserve-semcachebench: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i].stored_id == (int)i)
            (void)e->embed(e, p[i].stored, strlen(p[i].stored), v.stored_vec + i * dim);
        v.later_ok[i] = e->embed(e, p[i].later, strlen(p[i].later), v.later_vec + i * dim) == LS_OK;
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
        run_latency(e, p, n, cfg.latency);
    for (size_t i = 0; i < n; i++) {
        free(p[i].category);
        free(p[i].stored);
        free(p[i].later);
    }
    free(p);
    free(v.stored_vec);
    free(v.later_vec);
    free(v.later_ok);
    free(v.stored_sig);
    free(v.later_sig);
    free(veto);
    free(sim);
    free(id);
    cache_embedder_destroy(e);
    return 0;
}
