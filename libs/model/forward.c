/*
 * forward.c - the backend-independent part of the forward pass: configuration,
 * backend choice, the paged KV block allocator with its prefix cache, per-sequence
 * block tables and the validation of a step's items.
 *
 * Everything here belongs to the forward_t's owner thread except free_blocks_count,
 * which is atomic so that another thread (an admission check, a metrics exporter) can
 * read forward_kv_free_tokens without a lock.
 *
 * Prefix cache.  A KV block is in one of three states: free (on the free stack),
 * private (in exactly one sequence's table, not published) or published (an entry of
 * the cache, keyed by its parent entry -- the block before it in the chain, or the
 * root -- and its FORWARD_KV_BLOCK token ids).  A block id is its entry's index, so
 * the entries are sized at create like everything else.  A published block's ref
 * counts the open sequences whose table holds it; at ref 0 it sits on the LRU list
 * (unused, evictable).  Each sequence's published blocks are a prefix of its table
 * (table[0..n_pub)), each the parent of the next; so a sequence holding an entry holds
 * all of its ancestors, and an entry at ref 0 has every descendant at ref 0 too.
 *
 * Eviction takes the LRU's oldest entry together with its whole subtree of cached
 * descendants (all unused, by the rule above): a child left behind would be
 * unreachable, and worse, keyed by a parent block id that is about to be reused, so a
 * later entry on that block could lead a lookup to KV computed after other tokens.
 * Sequences hold whole chains and release their published blocks from the last to the
 * first, so an entry reaches the LRU no earlier than any of its children: the oldest
 * unused entry is a leaf and the subtree is the entry alone.  The walk keeps the rule
 * by construction rather than by that ordering argument.
 *
 * The 64-bit key hash only picks a bucket: lookups compare the parent id and all the
 * token ids, so a collision can never map the wrong KV.
 */
#define _GNU_SOURCE
#include "model/forward.h"

#include "base/err.h"
#include "base/log.h"
#include "model/forward_backend.h"

#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PREFIX_ROOT (-1) /* the parent of a chain's first block */

typedef struct {
    bool open;
    bool publish_done;  /* an equal block was already cached: publish no more of it */
    int reserve_tokens; /* positions it may hold */
    int len_tokens;     /* positions it holds */
    int n_blocks;       /* blocks in table */
    int n_pub;          /* table[0..n_pub) are published blocks, the rest private */
    int *table;         /* [max_blocks_per_seq] KV block ids in position order */
    int *tokens;        /* [seq_len] token id at each position held (prefix cache on) */
    uint64_t stamp;     /* last validation that saw it in a step (duplicate check) */
} forward_seq_t;

/* The cache entry of one published KV block, indexed by block id. */
typedef struct {
    bool cached;                  /* published (in the hash table) */
    int parent;                   /* parent entry's block id or PREFIX_ROOT */
    int ref;                      /* open sequences whose table holds the block */
    int hash_next;                /* next entry in the bucket, -1 at the end */
    int lru_prev, lru_next;       /* on the LRU list while ref == 0, -1 at the ends */
    int child;                    /* first cached child, -1 for none */
    int sib_prev, sib_next;       /* among the parent's children, -1 at the ends */
    uint64_t hash;                /* key_hash(parent, tokens) */
    int tokens[FORWARD_KV_BLOCK]; /* the block's token ids */
} prefix_entry_t;

struct forward {
    const ckpt_t *ck;
    forward_config_t cfg;
    const forward__backend_t *be;
    void *impl;
    int n_blocks;                   /* KV blocks in the budget */
    int max_blocks_per_seq;         /* ceil(seq_len / FORWARD_KV_BLOCK) */
    int *free_blocks;               /* stack of free block ids, [n_blocks] */
    int n_free;                     /* entries on the stack */
    atomic_llong free_blocks_count; /* n_free + n_unused, readable from any thread */
    forward_seq_t *seqs;            /* [max_batch] */
    int *tables;                    /* [max_batch][max_blocks_per_seq] */
    int *seq_tokens;                /* [max_batch][seq_len], prefix cache on only */
    prefix_entry_t *entries;        /* [n_blocks], prefix cache on only */
    int *buckets;                   /* [n_buckets] first entry of each chain, -1 empty */
    uint64_t bucket_mask;           /* n_buckets - 1 (a power of two >= n_blocks) */
    int *evict_stack;               /* [n_blocks] scratch for evicting a subtree */
    int lru_head, lru_tail;         /* oldest and newest unused entry, -1 when empty */
    int n_cached;                   /* published blocks */
    int n_unused;                   /* of them, on the LRU list */
    int64_t prefix_lookups;         /* forward_prefix_stats_t.lookups */
    int64_t prefix_hit_tokens;      /* forward_prefix_stats_t.hit_tokens */
    int64_t prefix_evictions;       /* forward_prefix_stats_t.evictions */
    const int **step_tables;        /* [max_batch] scratch for forward_step */
    uint64_t step_stamp;
    int64_t steps_done;             /* successful steps, for fault_after_steps */
    atomic_bool device_lost;        /* a step returned LS_ERR_DEVICE */
};

void forward_config_init(forward_config_t *cfg)
{
    cfg->backend = FORWARD_AUTO;
    cfg->max_batch = 32;        /* sequences per step */
    cfg->max_step_tokens = 512; /* tokens per step, prefill tokens included */
    cfg->kv_budget_tokens = 0;  /* 0: max_batch * seq_len positions */
    cfg->threads = 0;           /* 0: online cores */
    cfg->cuda_device = 0;
    cfg->fault_after_steps = 0;
    cfg->prefix_cache = true; /* share full KV blocks of equal leading tokens */
}

void forward__rope_table(int seq_len, int head_dim, float *cos_tab, float *sin_tab)
{
    size_t half = (size_t)head_dim / 2;
    for (int pos = 0; pos < seq_len; pos++) {
        for (int i = 0; i < head_dim; i += 2) {
            float freq = 1.0f / powf(10000.0f, (float)i / (float)head_dim);
            float val = (float)pos * freq;
            cos_tab[(size_t)pos * half + (size_t)i / 2] = cosf(val);
            sin_tab[(size_t)pos * half + (size_t)i / 2] = sinf(val);
        }
    }
}

static int blocks_for(int64_t tokens)
{
    return (int)((tokens + FORWARD_KV_BLOCK - 1) / FORWARD_KV_BLOCK);
}

/* The prefix cache's tables, sized for n_blocks entries; the caller reports failure. */
static int prefix_create(forward_t *f)
{
    uint64_t n_buckets = 1;
    while (n_buckets < (uint64_t)f->n_blocks)
        n_buckets <<= 1;
    f->entries = calloc((size_t)f->n_blocks, sizeof(prefix_entry_t));
    f->buckets = malloc((size_t)n_buckets * sizeof(int));
    f->evict_stack = malloc((size_t)f->n_blocks * sizeof(int));
    f->seq_tokens = malloc((size_t)f->cfg.max_batch * (size_t)f->ck->cfg.seq_len * sizeof(int));
    if (!f->entries || !f->buckets || !f->evict_stack || !f->seq_tokens)
        return LS_ERR_NOMEM;
    f->bucket_mask = n_buckets - 1;
    for (uint64_t i = 0; i < n_buckets; i++)
        f->buckets[i] = -1;
    f->lru_head = f->lru_tail = -1;
    return LS_OK;
}

static void prefix_destroy(forward_t *f)
{
    free(f->seq_tokens);
    free(f->evict_stack);
    free(f->buckets);
    free(f->entries);
    f->seq_tokens = NULL;
    f->evict_stack = NULL;
    f->buckets = NULL;
    f->entries = NULL;
}

/* Hash of a block's key: its parent entry and its token ids (splitmix64's finalizer over
 * an FNV-style fold).  Only picks the bucket; prefix_find compares the whole key. */
static uint64_t key_hash(int parent, const int *tokens)
{
    uint64_t h = 0xcbf29ce484222325ull ^ (uint32_t)parent;
    for (int i = 0; i < FORWARD_KV_BLOCK; i++)
        h = (h ^ (uint32_t)tokens[i]) * 0x100000001b3ull;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

/* The cached entry (a block id) with this exact key, or -1. */
static int prefix_find(const forward_t *f, int parent, const int *tokens, uint64_t h)
{
    for (int e = f->buckets[h & f->bucket_mask]; e >= 0; e = f->entries[e].hash_next) {
        const prefix_entry_t *en = &f->entries[e];
        if (en->hash == h && en->parent == parent &&
            memcmp(en->tokens, tokens, sizeof(en->tokens)) == 0)
            return e;
    }
    return -1;
}

static void lru_remove(forward_t *f, int b)
{
    prefix_entry_t *e = &f->entries[b];
    if (e->lru_prev >= 0)
        f->entries[e->lru_prev].lru_next = e->lru_next;
    else
        f->lru_head = e->lru_next;
    if (e->lru_next >= 0)
        f->entries[e->lru_next].lru_prev = e->lru_prev;
    else
        f->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = -1;
}

static void lru_push_newest(forward_t *f, int b)
{
    prefix_entry_t *e = &f->entries[b];
    e->lru_prev = f->lru_tail;
    e->lru_next = -1;
    if (f->lru_tail >= 0)
        f->entries[f->lru_tail].lru_next = b;
    else
        f->lru_head = b;
    f->lru_tail = b;
}

/* Makes block b (held by the one sequence publishing it) the cached entry for
 * (parent, tokens), with one reference. */
static void prefix_publish(forward_t *f, int b, int parent, const int *tokens, uint64_t h)
{
    prefix_entry_t *e = &f->entries[b];
    LS_ASSERT(!e->cached);
    e->cached = true;
    e->parent = parent;
    e->ref = 1;
    e->hash = h;
    memcpy(e->tokens, tokens, sizeof(e->tokens));
    e->lru_prev = e->lru_next = -1;
    e->child = -1;
    e->hash_next = f->buckets[h & f->bucket_mask];
    f->buckets[h & f->bucket_mask] = b;
    e->sib_prev = -1;
    e->sib_next = -1;
    if (parent != PREFIX_ROOT) {
        prefix_entry_t *p = &f->entries[parent];
        LS_ASSERT(p->cached && p->ref > 0);
        e->sib_next = p->child;
        if (p->child >= 0)
            f->entries[p->child].sib_prev = b;
        p->child = b;
    }
    f->n_cached++;
}

static void hash_remove(forward_t *f, int b)
{
    int *link = &f->buckets[f->entries[b].hash & f->bucket_mask];
    while (*link != b) {
        LS_ASSERT(*link >= 0);
        link = &f->entries[*link].hash_next;
    }
    *link = f->entries[b].hash_next;
    f->entries[b].hash_next = -1;
}

/* Evicts the least recently used unused entry and its whole subtree of cached
 * descendants (all unused: a sequence holding a descendant would hold the entry too),
 * so that no entry outlives its parent's block (see the top of the file).  Each block
 * leaves the hash table before it goes on the free stack. */
static void prefix_evict_oldest(forward_t *f)
{
    int top = f->lru_head;
    LS_ASSERT(top >= 0);
    prefix_entry_t *e = &f->entries[top];
    if (e->parent != PREFIX_ROOT) {
        if (e->sib_prev >= 0)
            f->entries[e->sib_prev].sib_next = e->sib_next;
        else
            f->entries[e->parent].child = e->sib_next;
        if (e->sib_next >= 0)
            f->entries[e->sib_next].sib_prev = e->sib_prev;
    }
    int n = 0;
    f->evict_stack[n++] = top;
    while (n > 0) {
        int b = f->evict_stack[--n];
        prefix_entry_t *en = &f->entries[b];
        LS_ASSERT(en->cached && en->ref == 0);
        for (int c = en->child; c >= 0; c = f->entries[c].sib_next) {
            LS_ASSERT(n < f->n_blocks);
            f->evict_stack[n++] = c;
        }
        hash_remove(f, b);
        lru_remove(f, b);
        en->cached = false;
        en->child = en->sib_prev = en->sib_next = -1;
        f->n_cached--;
        f->n_unused--;
        f->prefix_evictions++;
        f->free_blocks[f->n_free++] = b;
    }
}

/* A block for a sequence: from the free stack, else by evicting.  The caller has
 * checked that free + unused blocks suffice. */
static int block_take(forward_t *f)
{
    if (f->n_free == 0)
        prefix_evict_oldest(f);
    LS_ASSERT(f->n_free > 0);
    return f->free_blocks[--f->n_free];
}

/* Publishes every block of sq that is full and not yet published, in chain order; stops
 * for good at the first one whose equal is already cached (another sequence computed
 * the same block): that block and the ones after it stay private to sq.  Publishing the
 * later ones under the equal entry would hang them under a block sq does not hold,
 * breaking the rule that a sequence holds the whole chain above its entries. */
static void seq_publish_full(forward_t *f, forward_seq_t *sq)
{
    while (!sq->publish_done && (sq->n_pub + 1) * FORWARD_KV_BLOCK <= sq->len_tokens) {
        int b = sq->n_pub;
        int parent = b > 0 ? sq->table[b - 1] : PREFIX_ROOT;
        const int *tok = sq->tokens + (size_t)b * FORWARD_KV_BLOCK;
        uint64_t h = key_hash(parent, tok);
        if (prefix_find(f, parent, tok, h) >= 0) {
            sq->publish_done = true;
            break;
        }
        prefix_publish(f, sq->table[b], parent, tok, h);
        sq->n_pub++;
    }
}

/* free_blocks_count for other threads: what an open could get. */
static void free_count_store(forward_t *f)
{
    atomic_store(&f->free_blocks_count, (long long)f->n_free + f->n_unused);
}

/* Applies the defaults that depend on the model or the machine and checks ranges. */
static int config_resolve(const ckpt_t *ck, forward_config_t *cfg, char *err, size_t err_len)
{
    if (cfg->backend != FORWARD_AUTO && cfg->backend != FORWARD_CPU &&
        cfg->backend != FORWARD_CUDA) {
        snprintf(err, err_len, "unknown backend %d", (int)cfg->backend);
        return LS_ERR_INVALID;
    }
    if (cfg->max_batch < 1 || cfg->max_batch > 65536) {
        snprintf(err, err_len, "max_batch must be in [1, 65536] (got %d)", cfg->max_batch);
        return LS_ERR_INVALID;
    }
    if (cfg->max_step_tokens < cfg->max_batch || cfg->max_step_tokens > (1 << 20)) {
        snprintf(err, err_len,
                 "max_step_tokens must be in [max_batch=%d, 1048576] (got %d): a decode step "
                 "of every sequence needs max_batch tokens",
                 cfg->max_batch, cfg->max_step_tokens);
        return LS_ERR_INVALID;
    }
    if (cfg->threads < 0 || cfg->threads > 1024) {
        snprintf(err, err_len, "threads must be in [0, 1024] (got %d)", cfg->threads);
        return LS_ERR_INVALID;
    }
    if (cfg->threads == 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->threads = online > 0 ? (int)(online < 1024 ? online : 1024) : 1;
    }
    if (cfg->kv_budget_tokens < 0) {
        snprintf(err, err_len, "kv_budget_tokens must be >= 0 (got %lld)",
                 (long long)cfg->kv_budget_tokens);
        return LS_ERR_INVALID;
    }
    if (cfg->kv_budget_tokens == 0)
        cfg->kv_budget_tokens = (int64_t)cfg->max_batch * ck->cfg.seq_len;
    int64_t n_blocks = cfg->kv_budget_tokens / FORWARD_KV_BLOCK;
    if (n_blocks < blocks_for(ck->cfg.seq_len)) {
        snprintf(err, err_len,
                 "kv_budget_tokens=%lld is smaller than one sequence of seq_len=%d "
                 "(in blocks of %d positions)",
                 (long long)cfg->kv_budget_tokens, ck->cfg.seq_len, FORWARD_KV_BLOCK);
        return LS_ERR_INVALID;
    }
    if (n_blocks > INT_MAX / 2) {
        snprintf(err, err_len, "kv_budget_tokens=%lld is too large",
                 (long long)cfg->kv_budget_tokens);
        return LS_ERR_INVALID;
    }
    return LS_OK;
}

static const forward__backend_t *backend_pick(forward_backend_t want, char *err, size_t err_len)
{
    const forward__backend_t *cuda = forward__cuda();
    switch (want) {
    case FORWARD_CPU:
        return &forward__cpu;
    case FORWARD_CUDA:
        if (!cuda) {
            snprintf(err, err_len, "backend cuda requested but llmserve was built without CUDA");
            return NULL;
        }
        char why[160];
        if (!forward__cuda_present(why, sizeof(why))) {
            snprintf(err, err_len, "backend cuda requested but no usable CUDA device: %s", why);
            return NULL;
        }
        return cuda;
    case FORWARD_AUTO:
    default:
        return cuda && forward__cuda_present(NULL, 0) ? cuda : &forward__cpu;
    }
}

forward_t *forward_create(const ckpt_t *ck, const forward_config_t *cfg, char *err, size_t err_len)
{
    if (err_len > 0)
        err[0] = '\0';
    if (!ck || !cfg) {
        snprintf(err, err_len, "no checkpoint or no config");
        return NULL;
    }
    forward_config_t c = *cfg;
    if (config_resolve(ck, &c, err, err_len) != LS_OK)
        return NULL;
    const forward__backend_t *be = backend_pick(c.backend, err, err_len);
    if (!be)
        return NULL;

    forward_t *f = calloc(1, sizeof(*f));
    if (!f) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    f->ck = ck;
    f->cfg = c;
    f->be = be;
    f->n_blocks = (int)(c.kv_budget_tokens / FORWARD_KV_BLOCK);
    f->max_blocks_per_seq = blocks_for(ck->cfg.seq_len);
    f->free_blocks = malloc((size_t)f->n_blocks * sizeof(int));
    f->seqs = calloc((size_t)c.max_batch, sizeof(forward_seq_t));
    f->tables = malloc((size_t)c.max_batch * (size_t)f->max_blocks_per_seq * sizeof(int));
    f->step_tables = calloc((size_t)c.max_batch, sizeof(int *));
    if (!f->free_blocks || !f->seqs || !f->tables || !f->step_tables) {
        snprintf(err, err_len, "out of memory for %d KV block ids", f->n_blocks);
        goto out_free;
    }
    if (c.prefix_cache && prefix_create(f) != LS_OK) {
        snprintf(err, err_len, "out of memory for the prefix cache of %d KV blocks", f->n_blocks);
        goto out_free;
    }
    /* Lowest ids on top, so a lightly loaded server keeps touching the same memory. */
    for (int i = 0; i < f->n_blocks; i++)
        f->free_blocks[i] = f->n_blocks - 1 - i;
    f->n_free = f->n_blocks;
    atomic_init(&f->free_blocks_count, f->n_blocks);
    for (int s = 0; s < c.max_batch; s++) {
        f->seqs[s].table = f->tables + (size_t)s * (size_t)f->max_blocks_per_seq;
        if (f->seq_tokens)
            f->seqs[s].tokens = f->seq_tokens + (size_t)s * (size_t)ck->cfg.seq_len;
    }

    f->impl = be->create(ck, &f->cfg, f->n_blocks, err, err_len);
    if (!f->impl)
        goto out_free;
    LS_LOG_INFO("forward",
                "forward pass ready backend=%s device=\"%s\" model=%s max_batch=%d "
                "max_step_tokens=%d kv_budget_tokens=%lld kv_blocks=%d threads=%d "
                "prefix_cache=%s",
                be->name, be->device_name(f->impl), ck->name ? ck->name : "-", c.max_batch,
                c.max_step_tokens, (long long)c.kv_budget_tokens, f->n_blocks, c.threads,
                c.prefix_cache ? "on" : "off");
    return f;

out_free:
    prefix_destroy(f);
    free(f->step_tables);
    free(f->tables);
    free(f->seqs);
    free(f->free_blocks);
    free(f);
    return NULL;
}

void forward_destroy(forward_t *f)
{
    if (!f)
        return;
    f->be->destroy(f->impl);
    prefix_destroy(f);
    free(f->step_tables);
    free(f->tables);
    free(f->seqs);
    free(f->free_blocks);
    free(f);
}

const char *forward_backend_name(const forward_t *f)
{
    return f->be->name;
}

const char *forward_device_name(const forward_t *f)
{
    return f->be->device_name(f->impl);
}

const forward_config_t *forward_config(const forward_t *f)
{
    return &f->cfg;
}

int forward_seq_open_tokens(forward_t *f, const int *tokens, int n_tokens, int reserve_tokens,
                            int *cached_tokens)
{
    if (!f || reserve_tokens < 1 || reserve_tokens > f->ck->cfg.seq_len || n_tokens < 0 ||
        n_tokens > reserve_tokens || (n_tokens > 0 && !tokens))
        return LS_ERR_INVALID;
    int vocab = f->ck->cfg.vocab_size;
    for (int i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= vocab)
            return LS_ERR_INVALID;
    int id = -1;
    for (int s = 0; s < f->cfg.max_batch; s++) {
        if (!f->seqs[s].open) {
            id = s;
            break;
        }
    }
    if (id < 0)
        return LS_ERR_FULL;
    forward_seq_t *sq = &f->seqs[id];
    int need = blocks_for(reserve_tokens);
    /* The match is written into the closed slot's table, which nothing else reads, so a
     * refusal below still changes nothing. */
    int hit = 0, hit_unused = 0;
    if (f->entries && n_tokens > 0) {
        int max_hit = (n_tokens - 1) / FORWARD_KV_BLOCK; /* one token is always left to feed */
        int parent = PREFIX_ROOT;
        while (hit < max_hit) {
            const int *blk = tokens + (size_t)hit * FORWARD_KV_BLOCK;
            int e = prefix_find(f, parent, blk, key_hash(parent, blk));
            if (e < 0)
                break;
            if (f->entries[e].ref == 0)
                hit_unused++;
            sq->table[hit++] = e;
            parent = e;
        }
    }
    /* Matched blocks that were unused leave the LRU below, so they are not evictable. */
    if (need - hit > f->n_free + (f->n_unused - hit_unused))
        return LS_ERR_FULL;
    for (int b = 0; b < hit; b++) {
        prefix_entry_t *e = &f->entries[sq->table[b]];
        if (e->ref++ == 0) {
            lru_remove(f, sq->table[b]);
            f->n_unused--;
        }
    }
    for (int b = hit; b < need; b++)
        sq->table[b] = block_take(f);
    sq->open = true;
    sq->publish_done = false;
    sq->reserve_tokens = reserve_tokens;
    sq->len_tokens = hit * FORWARD_KV_BLOCK;
    sq->n_blocks = need;
    sq->n_pub = hit;
    if (f->entries && n_tokens > 0) {
        memcpy(sq->tokens, tokens, (size_t)hit * FORWARD_KV_BLOCK * sizeof(int));
        f->prefix_lookups++;
        f->prefix_hit_tokens += (int64_t)hit * FORWARD_KV_BLOCK;
    }
    free_count_store(f);
    if (cached_tokens)
        *cached_tokens = hit * FORWARD_KV_BLOCK;
    return id;
}

int forward_seq_open(forward_t *f, int reserve_tokens)
{
    return forward_seq_open_tokens(f, NULL, 0, reserve_tokens, NULL);
}

void forward_seq_close(forward_t *f, int seq)
{
    if (!f || seq < 0 || seq >= f->cfg.max_batch || !f->seqs[seq].open)
        return;
    forward_seq_t *sq = &f->seqs[seq];
    /* Last block first: a chain's deeper blocks become older on the LRU than their
     * parents, so eviction takes leaves first. */
    for (int b = sq->n_blocks - 1; b >= 0; b--) {
        int blk = sq->table[b];
        if (b < sq->n_pub) {
            prefix_entry_t *e = &f->entries[blk];
            LS_ASSERT(e->cached && e->ref > 0);
            if (--e->ref == 0) {
                lru_push_newest(f, blk);
                f->n_unused++;
            }
        } else {
            f->free_blocks[f->n_free++] = blk;
        }
    }
    LS_ASSERT(f->n_free + f->n_cached <= f->n_blocks);
    sq->open = false;
    sq->n_blocks = 0;
    sq->n_pub = 0;
    sq->reserve_tokens = 0;
    sq->len_tokens = 0;
    free_count_store(f);
}

int64_t forward_kv_free_tokens(const forward_t *f)
{
    return (int64_t)atomic_load(&((forward_t *)f)->free_blocks_count) * FORWARD_KV_BLOCK;
}

void forward_prefix_stats(const forward_t *f, forward_prefix_stats_t *out)
{
    out->lookups = f->prefix_lookups;
    out->hit_tokens = f->prefix_hit_tokens;
    out->cached_blocks = f->n_cached;
    out->unused_blocks = f->n_unused;
    out->evictions = f->prefix_evictions;
}

bool forward_prefix_cache_on(const forward_t *f)
{
    return f->cfg.prefix_cache;
}

/* Checks every rule of forward_step without changing anything but stamps. */
static int items_check(forward_t *f, const forward_item_t *items, int n)
{
    uint64_t stamp = ++f->step_stamp;
    int64_t total = 0;
    int vocab = f->ck->cfg.vocab_size;
    for (int i = 0; i < n; i++) {
        const forward_item_t *it = &items[i];
        if (it->seq < 0 || it->seq >= f->cfg.max_batch || !f->seqs[it->seq].open)
            return LS_ERR_INVALID;
        forward_seq_t *sq = &f->seqs[it->seq];
        if (sq->stamp == stamp)
            return LS_ERR_INVALID; /* the same sequence twice */
        sq->stamp = stamp;
        if (!it->tokens || it->n_tokens < 1 || !it->sampler)
            return LS_ERR_INVALID;
        total += it->n_tokens;
        if (total > f->cfg.max_step_tokens)
            return LS_ERR_INVALID;
        /* pos may rewind (overwrite held positions) but not skip unwritten ones. */
        if (it->pos < 0 || it->pos > sq->len_tokens ||
            (int64_t)it->pos + it->n_tokens > sq->reserve_tokens)
            return LS_ERR_INVALID;
        /* Published blocks (shared or not) are read-only: their KV is the cache's. */
        if (it->pos < sq->n_pub * FORWARD_KV_BLOCK)
            return LS_ERR_INVALID;
        if (!(it->coin >= 0.0f && it->coin <= 1.0f))
            return LS_ERR_INVALID;
        for (int t = 0; t < it->n_tokens; t++)
            if (it->tokens[t] < 0 || it->tokens[t] >= vocab)
                return LS_ERR_INVALID;
    }
    return LS_OK;
}

int forward_step(forward_t *f, const forward_item_t *items, int n, int *out_tokens, float *logits)
{
    if (!f || n < 0 || n > f->cfg.max_batch)
        return LS_ERR_INVALID;
    if (n == 0)
        return LS_OK;
    if (!items || !out_tokens)
        return LS_ERR_INVALID;
    int rc = items_check(f, items, n);
    if (rc != LS_OK)
        return rc;
    if (atomic_load(&f->device_lost))
        return LS_ERR_DEVICE;
    if (f->cfg.fault_after_steps > 0 && f->steps_done == f->cfg.fault_after_steps) {
        LS_LOG_WARN("forward", "injecting a device fault after=%d steps", f->cfg.fault_after_steps);
        if (!f->be->inject_fault) {
            atomic_store(&f->device_lost, true);
            return LS_ERR_DEVICE;
        }
        f->be->inject_fault(f->impl); /* the step below must find it */
    }
    for (int i = 0; i < n; i++)
        f->step_tables[i] = f->seqs[items[i].seq].table;
    rc = f->be->step(f->impl, items, n, f->step_tables, out_tokens, logits);
    if (rc == LS_ERR_DEVICE)
        atomic_store(&f->device_lost, true);
    if (rc != LS_OK)
        return rc;
    f->steps_done++;
    for (int i = 0; i < n; i++) {
        forward_seq_t *sq = &f->seqs[items[i].seq];
        sq->len_tokens = items[i].pos + items[i].n_tokens;
        if (sq->tokens) {
            memcpy(sq->tokens + items[i].pos, items[i].tokens,
                   (size_t)items[i].n_tokens * sizeof(int));
            seq_publish_full(f, sq);
        }
    }
    return LS_OK;
}

bool forward_device_lost(const forward_t *f)
{
    return atomic_load(&((forward_t *)f)->device_lost);
}
