/*
 * forward.c - the backend-independent part of the forward pass: configuration,
 * backend choice, the paged KV block allocator, per-sequence block tables and the
 * validation of a step's items.
 *
 * Everything here belongs to the forward_t's owner thread except free_blocks_count,
 * which is atomic so that another thread (an admission check, a metrics exporter) can
 * read forward_kv_free_tokens without a lock.
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

typedef struct {
    bool open;
    int reserve_tokens; /* positions it may hold */
    int len_tokens;     /* positions it holds */
    int n_blocks;       /* blocks in table */
    int *table;         /* [max_blocks_per_seq] KV block ids in position order */
    uint64_t stamp;     /* last validation that saw it in a step (duplicate check) */
} forward_seq_t;

struct forward {
    const ckpt_t *ck;
    forward_config_t cfg;
    const forward__backend_t *be;
    void *impl;
    int n_blocks;                   /* KV blocks in the budget */
    int max_blocks_per_seq;         /* ceil(seq_len / FORWARD_KV_BLOCK) */
    int *free_blocks;               /* stack of free block ids, [n_blocks] */
    int n_free;                     /* entries on the stack */
    atomic_llong free_blocks_count; /* n_free, readable from any thread */
    forward_seq_t *seqs;            /* [max_batch] */
    int *tables;                    /* [max_batch][max_blocks_per_seq] */
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
    /* Lowest ids on top, so a lightly loaded server keeps touching the same memory. */
    for (int i = 0; i < f->n_blocks; i++)
        f->free_blocks[i] = f->n_blocks - 1 - i;
    f->n_free = f->n_blocks;
    atomic_init(&f->free_blocks_count, f->n_blocks);
    for (int s = 0; s < c.max_batch; s++)
        f->seqs[s].table = f->tables + (size_t)s * (size_t)f->max_blocks_per_seq;

    f->impl = be->create(ck, &f->cfg, f->n_blocks, err, err_len);
    if (!f->impl)
        goto out_free;
    LS_LOG_INFO("forward",
                "forward pass ready backend=%s device=\"%s\" model=%s max_batch=%d "
                "max_step_tokens=%d kv_budget_tokens=%lld kv_blocks=%d threads=%d",
                be->name, be->device_name(f->impl), ck->name ? ck->name : "-", c.max_batch,
                c.max_step_tokens, (long long)c.kv_budget_tokens, f->n_blocks, c.threads);
    return f;

out_free:
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

int forward_seq_open(forward_t *f, int reserve_tokens)
{
    if (reserve_tokens < 1 || reserve_tokens > f->ck->cfg.seq_len)
        return LS_ERR_INVALID;
    int need = blocks_for(reserve_tokens);
    if (need > f->n_free)
        return LS_ERR_FULL;
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
    for (int b = 0; b < need; b++)
        sq->table[b] = f->free_blocks[--f->n_free];
    sq->open = true;
    sq->reserve_tokens = reserve_tokens;
    sq->len_tokens = 0;
    sq->n_blocks = need;
    atomic_store(&f->free_blocks_count, f->n_free);
    return id;
}

int forward_seq_open_tokens(forward_t *f, const int *tokens, int n_tokens, int reserve_tokens,
                            int *cached_tokens)
{
    if (!tokens || n_tokens < 1 || n_tokens > reserve_tokens)
        return LS_ERR_INVALID;
    if (cached_tokens)
        *cached_tokens = 0;
    return forward_seq_open(f, reserve_tokens);
}

void forward_seq_close(forward_t *f, int seq)
{
    if (!f || seq < 0 || seq >= f->cfg.max_batch || !f->seqs[seq].open)
        return;
    forward_seq_t *sq = &f->seqs[seq];
    for (int b = sq->n_blocks - 1; b >= 0; b--)
        f->free_blocks[f->n_free++] = sq->table[b];
    LS_ASSERT(f->n_free <= f->n_blocks);
    sq->open = false;
    sq->n_blocks = 0;
    sq->reserve_tokens = 0;
    sq->len_tokens = 0;
    atomic_store(&f->free_blocks_count, f->n_free);
}

int64_t forward_kv_free_tokens(const forward_t *f)
{
    return (int64_t)atomic_load(&((forward_t *)f)->free_blocks_count) * FORWARD_KV_BLOCK;
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
    for (int i = 0; i < n; i++)
        f->seqs[items[i].seq].len_tokens = items[i].pos + items[i].n_tokens;
    return LS_OK;
}

bool forward_device_lost(const forward_t *f)
{
    return atomic_load(&((forward_t *)f)->device_lost);
}
