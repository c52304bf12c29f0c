/*
 * The model embedder.  No lock: after create everything it holds is read-only, and the
 * channel is thread-safe (libs/rpc/client.h); the failure counter is atomic.
 *
 * Rejected: re-learning the dim when replies change.  The semantic index is created for
 * one dim and holds vectors of one model; following a swap would need a new index, which
 * is the operator's restart to make, not a silent change here.
 */
#define _GNU_SOURCE
#include "cache/cache_embed_model.h"

#include "base/err.h"
#include "base/log.h"
#include "llmserve/v1/inference.pb-c.h"
#include "rpc/status.h"

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EMBED_METHOD "/llmserve.v1.Inference/Embed"
#define DEFAULT_TIMEOUT_MS 2000
#define CACHE_EMBED_MODEL_MAX_DIM 65536 /* as the n-gram embedder's largest */
#define UNIT_TOLERANCE 1e-3 /* |norm - 1| allowed in a reply (floats of a unit vector) */

typedef struct {
    cache_embedder_t base;
    rpc_client_t *client;
    rpc_channel_t *ch;
    char *target;
    char *model; /* learned at create: every call names it */
    char *name;  /* "model:<model>" */
    int64_t timeout_us;
    _Atomic uint64_t failures; /* for logging the 1st, 2nd, 4th, 8th ... */
} model_embedder_t;

/* True for the 1st, 2nd, 4th, 8th ... failure: a service that is down for a while
 * is logged a few times, not once per lookup. */
static bool worth_logging(model_embedder_t *m)
{
    uint64_t n = atomic_fetch_add(&m->failures, 1) + 1;
    return (n & (n - 1)) == 0;
}

static int status_to_err(grpc_status_code code)
{
    switch (code) {
    case GRPC_STATUS_INVALID_ARGUMENT:
        return LS_ERR_INVALID;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return LS_ERR_TIMEOUT;
    case GRPC_STATUS_NOT_FOUND:
        return LS_ERR_NOT_FOUND;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return LS_ERR_FULL;
    default:
        return LS_ERR_UNAVAILABLE;
    }
}

/* One Embed of text for model; on LS_OK *resp is the reply (caller frees it).  Any
 * other return has a reason in err. */
static int call_embed(model_embedder_t *m, const char *model, const char *text, bool wait,
                      Llmserve__V1__EmbedResponse **resp, char *err, size_t err_len)
{
    Llmserve__V1__EmbedRequest req = LLMSERVE__V1__EMBED_REQUEST__INIT;
    char *texts[1] = {(char *)text};
    req.model = (char *)model;
    req.texts = texts;
    req.n_texts = 1;
    rpc_call_opts_t opts = {.timeout_us = m->timeout_us, .wait_for_ready = wait};
    ProtobufCMessage *out = NULL;
    rpc_status_t st;
    int rc = rpc_channel_unary(m->ch, EMBED_METHOD, &req.base,
                               &llmserve__v1__embed_response__descriptor, &opts, &out, &st);
    if (rc != LS_OK) {
        snprintf(err, err_len, "the call could not be made: %s", ls_strerror(rc));
        return rc;
    }
    if (st.code != GRPC_STATUS_OK) {
        snprintf(err, err_len, "%s: %s", rpc_status_name(st.code), st.details);
        return status_to_err(st.code);
    }
    *resp = (Llmserve__V1__EmbedResponse *)out;
    return LS_OK;
}

/* Checks a one-text reply against what the embedder expects (dim 0: learning it). */
static int check_reply(const Llmserve__V1__EmbedResponse *r, const char *model, size_t dim,
                       char *err, size_t err_len)
{
    if (r->n_embeddings != 1 || !r->embeddings[0]) {
        snprintf(err, err_len, "%zu embeddings for one text", r->n_embeddings);
        return LS_ERR_INVALID;
    }
    if (model && strcmp(r->model ? r->model : "", model) != 0) {
        snprintf(err, err_len, "reply from model \"%.64s\", not \"%.64s\"",
                 r->model ? r->model : "", model);
        return LS_ERR_INVALID;
    }
    size_t want = dim ? dim : r->dim;
    if (r->dim != want || r->embeddings[0]->n_values != want || want == 0 ||
        want > CACHE_EMBED_MODEL_MAX_DIM) {
        snprintf(err, err_len, "dim %u with %zu values, the embedder's dim is %zu", r->dim,
                 r->embeddings[0]->n_values, want);
        return LS_ERR_INVALID;
    }
    double ss = 0;
    for (size_t i = 0; i < want; i++)
        ss += (double)r->embeddings[0]->values[i] * r->embeddings[0]->values[i];
    if (!(fabs(sqrt(ss) - 1.0) <= UNIT_TOLERANCE)) {
        snprintf(err, err_len, "not a unit vector (norm %g)", sqrt(ss));
        return LS_ERR_INVALID;
    }
    return LS_OK;
}

static int model_embed(const cache_embedder_t *e, const char *text, size_t len, float *out)
{
    model_embedder_t *m = (model_embedder_t *)e;
    memset(out, 0, e->dim * sizeof(float));
    char *copy = malloc(len + 1); /* text is not NUL-terminated */
    if (!copy)
        return LS_ERR_NOMEM;
    memcpy(copy, text, len);
    copy[len] = '\0';
    char err[320];
    Llmserve__V1__EmbedResponse *r = NULL;
    int rc = call_embed(m, m->model, copy, false, &r, err, sizeof(err));
    free(copy);
    if (rc == LS_OK) {
        rc = check_reply(r, m->model, e->dim, err, sizeof(err));
        if (rc == LS_OK)
            memcpy(out, r->embeddings[0]->values, e->dim * sizeof(float));
        else if (worth_logging(m)) /* a model swap: every embed fails until a restart */
            LS_LOG_ERROR("cache", "embedder reply refused embedder=%s target=%s reason=\"%s\"",
                         m->name, m->target, err);
        llmserve__v1__embed_response__free_unpacked(r, NULL);
        return rc;
    }
    /* A refused text (INVALID_ARGUMENT) is the caller's input, not a fault. */
    if (rc != LS_ERR_INVALID && worth_logging(m))
        LS_LOG_WARN("cache", "embed failed embedder=%s target=%s reason=\"%s\"", m->name, m->target,
                    err);
    return rc;
}

static void model_destroy(cache_embedder_t *e)
{
    model_embedder_t *m = (model_embedder_t *)e;
    rpc_channel_destroy(m->ch);
    rpc_client_destroy(m->client);
    free(m->target);
    free(m->model);
    free(m->name);
    free(m);
}

cache_embedder_t *cache_embed_model_create(const cache_embed_model_config_t *cfg, char *err,
                                           size_t err_len)
{
    if (!cfg->target || !cfg->target[0]) {
        snprintf(err, err_len, "no inference target for the model embedder");
        return NULL;
    }
    model_embedder_t *m = ls_xcalloc(1, sizeof(*m));
    m->base.embed = model_embed;
    m->base.destroy = model_destroy;
    m->target = ls_xstrdup(cfg->target);
    int64_t ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
    m->timeout_us = ms * 1000;
    atomic_init(&m->failures, 0);
    m->client = rpc_client_create(1);
    m->ch = m->client ? rpc_channel_create(m->client, cfg->target, cfg->channel) : NULL;
    if (!m->ch) {
        snprintf(err, err_len, "cannot make a channel to %s (TLS files?)", cfg->target);
        goto out_free;
    }
    /* The probe waits for the connection (an instance starting beside this one gets
     * timeout_ms to come up); later calls fail fast, so that a down instance costs a
     * lookup no more than a miss. */
    char why[320];
    Llmserve__V1__EmbedResponse *r = NULL;
    const char *want = cfg->model ? cfg->model : "";
    if (call_embed(m, want, CACHE_EMBED_MODEL_PROBE, true, &r, why, sizeof(why)) != LS_OK) {
        snprintf(err, err_len, "Embed at %s failed: %s", cfg->target, why);
        goto out_free;
    }
    int rc = check_reply(r, want[0] ? want : NULL, 0, why, sizeof(why));
    if (rc == LS_OK && (!r->model || !r->model[0])) {
        snprintf(why, sizeof(why), "the reply names no model");
        rc = LS_ERR_INVALID;
    }
    if (rc != LS_OK) {
        snprintf(err, err_len, "Embed at %s: %s", cfg->target, why);
        llmserve__v1__embed_response__free_unpacked(r, NULL);
        goto out_free;
    }
    m->model = ls_xstrdup(r->model);
    m->base.dim = r->dim;
    llmserve__v1__embed_response__free_unpacked(r, NULL);
    size_t nl = strlen(m->model) + sizeof("model:");
    m->name = ls_xmalloc(nl);
    snprintf(m->name, nl, "model:%s", m->model);
    m->base.name = m->name;
    LS_LOG_INFO("cache", "model embedder ready target=%s model=%s dim=%zu timeout_ms=%lld",
                m->target, m->model, m->base.dim, (long long)ms);
    return &m->base;

out_free:
    model_destroy(&m->base);
    return NULL;
}
