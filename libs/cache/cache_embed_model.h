/*
 * cache_embed_model.h - an embedder that asks a served model: each text goes to
 * llmserve.v1.Inference/Embed of one llmserve-inference instance (the mean of the
 * model's token embedding rows, unit length; see inference.proto), so a deployment with
 * a real model gets its semantic keys from it.
 *
 * At create it embeds a probe text to learn the model's name and dim, which fix the
 * embedder for its life: every later reply must name the same model and carry dim
 * floats, else the embed fails with LS_ERR_INVALID (logged), so an instance that now
 * serves another model (another dim, or another name) never puts a vector into an index
 * built for the first.  Calls name the learned model, so the instance answers NOT_FOUND
 * when it serves another one.  A model swapped for one of the same name and dim cannot
 * be told apart here.
 *
 * Thread-safe: embed may be called from any number of threads at once; each call blocks
 * for one unary call (at most timeout_ms), so call it from worker threads, never from a
 * gRPC completion-queue thread.
 */
#ifndef CACHE_EMBED_MODEL_H
#define CACHE_EMBED_MODEL_H

#include "cache/cache_embed.h"
#include "rpc/client.h"

#include <stddef.h>
#include <stdint.h>

#define CACHE_EMBED_MODEL_PROBE "dimension probe" /* the text embedded at create */

typedef struct {
    const char *target;                  /* "host:port" of an llmserve-inference */
    const char *model;                   /* model to ask for; "" or NULL = the one served */
    int64_t timeout_ms;                  /* deadline of each Embed call; <= 0 = 2000 */
    const rpc_channel_config_t *channel; /* TLS and the like; NULL = plaintext */
} cache_embed_model_config_t;

/* Creates the embedder: a channel to cfg->target (strings copied) and one Embed of
 * CACHE_EMBED_MODEL_PROBE, which waits for the connection up to timeout_ms.  Returns
 * the embedder (free with cache_embedder_destroy; its name is "model:<name>") or NULL
 * with a one-line reason in err when the channel cannot be made, the call fails (the
 * service unreachable, UNAVAILABLE, NOT_FOUND ...) or the reply is malformed (a dim of
 * 0 or above 65536 among the ways).
 *
 * Its embed returns LS_OK; LS_ERR_INVALID when the service refused the text
 * (INVALID_ARGUMENT: nothing to embed, too long) or the reply does not match the
 * model and dim learned at create, or is not a unit vector; LS_ERR_UNAVAILABLE,
 * LS_ERR_TIMEOUT or LS_ERR_NOT_FOUND when the service could not answer, or LS_ERR_NOMEM.
 * On any error out is all zeros and must not be indexed. */
cache_embedder_t *cache_embed_model_create(const cache_embed_model_config_t *cfg, char *err,
                                           size_t err_len);

#endif
