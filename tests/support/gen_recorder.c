/*
 * Lock rules: g->mu guards recs, n_recs, unfiled, ended and status, and whatever the
 * kind keeps in ctx; g->cv is broadcast after every message and at the end.
 */
#define _GNU_SOURCE
#include "gen_recorder.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct gen_recorder {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    rpc_stream_t *stream;
    const gen_recorder_kind_t *kind;
    void *ctx;
    struct rec {
        char id[160];
        void *rec; /* the kind's record */
    } recs[GEN_RECORDER_MAX_RECS];
    int n_recs;
    int unfiled;
    bool ended;
    rpc_status_t status;
};

static void on_message(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    (void)s;
    gen_recorder_t *g = ud;
    pthread_mutex_lock(&g->mu);
    g->kind->on_message(g, msg);
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void on_status(rpc_stream_t *s, void *ud, const rpc_status_t *st, const rpc_md_t *t)
{
    (void)s;
    (void)t;
    gen_recorder_t *g = ud;
    pthread_mutex_lock(&g->mu);
    g->status = *st;
    g->ended = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "test: out of memory\n");
        abort();
    }
    return p;
}

gen_recorder_t *gen_recorder_open(rpc_channel_t *ch, const gen_recorder_kind_t *kind, void *ctx,
                                  const rpc_call_opts_t *opts)
{
    gen_recorder_t *g = xcalloc(1, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    g->kind = kind;
    g->ctx = ctx;
    rpc_stream_handler_t h = {on_message, on_status};
    g->stream = rpc_stream_open(ch, kind->method, kind->event_desc, &h, g, opts, 0);
    if (!g->stream) {
        pthread_cond_destroy(&g->cv);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return NULL;
    }
    return g;
}

void *gen_recorder_ctx(gen_recorder_t *g)
{
    return g->ctx;
}

void gen_recorder_lock(gen_recorder_t *g)
{
    pthread_mutex_lock(&g->mu);
}

void gen_recorder_unlock(gen_recorder_t *g)
{
    pthread_mutex_unlock(&g->mu);
}

void *gen_recorder_do_find(gen_recorder_t *g, const char *id)
{
    for (int i = 0; i < g->n_recs; i++)
        if (strcmp(g->recs[i].id, id) == 0)
            return g->recs[i].rec;
    return NULL;
}

void *gen_recorder_do_rec(gen_recorder_t *g, const char *id)
{
    void *r = gen_recorder_do_find(g, id);
    if (r)
        return r;
    if (g->n_recs == GEN_RECORDER_MAX_RECS) {
        g->unfiled++;
        return NULL;
    }
    r = xcalloc(1, g->kind->rec_size);
    g->kind->init_rec(r, id);
    struct rec *e = &g->recs[g->n_recs++];
    snprintf(e->id, sizeof(e->id), "%s", id);
    e->rec = r;
    return r;
}

int gen_recorder_do_count(gen_recorder_t *g)
{
    return g->n_recs;
}

void *gen_recorder_do_at(gen_recorder_t *g, int i)
{
    return g->recs[i].rec;
}

int gen_recorder_unfiled(gen_recorder_t *g)
{
    pthread_mutex_lock(&g->mu);
    int n = g->unfiled;
    pthread_mutex_unlock(&g->mu);
    return n;
}

int gen_recorder_send(gen_recorder_t *g, const ProtobufCMessage *msg)
{
    return rpc_stream_send(g->stream, msg);
}

int gen_recorder_close_send(gen_recorder_t *g)
{
    return rpc_stream_close_send(g->stream);
}

static struct timespec deadline(int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long ns = ts.tv_nsec + (long long)(timeout_ms % 1000) * 1000000;
    ts.tv_sec += timeout_ms / 1000 + ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    return ts;
}

/* Whether id's record r (NULL: none yet) meets a wait's condition.  g->mu held. */
static bool do_met(gen_recorder_t *g, const void *r, int n_tokens, int n_terminal)
{
    if (!r)
        return false;
    int tokens, terminal;
    g->kind->progress(r, &tokens, &terminal);
    if (n_tokens > 0)
        return tokens >= n_tokens || terminal > 0;
    return terminal >= n_terminal;
}

bool gen_recorder_wait(gen_recorder_t *g, const char *id, int n_tokens, int n_terminal,
                       int timeout_ms, void *out)
{
    struct timespec until = deadline(timeout_ms);
    pthread_mutex_lock(&g->mu);
    void *r = gen_recorder_do_find(g, id);
    while (!do_met(g, r, n_tokens, n_terminal) && !g->ended &&
           pthread_cond_timedwait(&g->cv, &g->mu, &until) == 0)
        r = gen_recorder_do_find(g, id);
    r = gen_recorder_do_find(g, id);
    bool ok = do_met(g, r, n_tokens, n_terminal);
    if (r) {
        memcpy(out, r, g->kind->rec_size);
    } else {
        memset(out, 0, g->kind->rec_size);
        g->kind->init_rec(out, id);
    }
    pthread_mutex_unlock(&g->mu);
    return ok;
}

bool gen_recorder_wait_end(gen_recorder_t *g, int timeout_ms)
{
    struct timespec until = deadline(timeout_ms);
    pthread_mutex_lock(&g->mu);
    while (!g->ended && pthread_cond_timedwait(&g->cv, &g->mu, &until) == 0)
        ;
    bool ended = g->ended;
    pthread_mutex_unlock(&g->mu);
    return ended;
}

rpc_status_t gen_recorder_status(gen_recorder_t *g)
{
    rpc_status_t st = {.code = GRPC_STATUS_UNKNOWN, .details = "not ended"};
    pthread_mutex_lock(&g->mu);
    if (g->ended)
        st = g->status;
    pthread_mutex_unlock(&g->mu);
    return st;
}

bool gen_recorder_destroy(gen_recorder_t *g)
{
    if (!g)
        return true;
    if (!rpc_stream_ended(g->stream))
        rpc_stream_cancel(g->stream);
    /* Callbacks hold g until on_status: freeing it earlier would let them write into
     * freed memory. */
    if (!gen_recorder_wait_end(g, 60000)) {
        fprintf(stderr, "test: a Generate stream did not end 60 s after its cancel; "
                        "its recorder is left allocated\n");
        return false;
    }
    rpc_stream_release(g->stream);
    for (int i = 0; i < g->n_recs; i++) {
        if (g->kind->free_rec)
            g->kind->free_rec(g->recs[i].rec);
        free(g->recs[i].rec);
    }
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
    return true;
}
