/*
 * main.c - llmserve-modelmaker: writes a llama2.c checkpoint with deterministic
 * pseudo-random weights and a tokenizer.bin of the same vocabulary size.
 *
 * A preset names a shape (default "tiny"); any size flag overrides its part of the
 * preset.  --quantize q8_0 writes the int8 format (ak42 version 2) instead of fp32.
 * --from FILE converts an fp32 checkpoint (its shape and weights) instead, e.g. to Q8_0.
 * Exit status: 0 when the files were written, 1 when writing failed, 2 for bad flags.
 */
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "model/checkpoint.h"
#include "model/checkpoint_write.h"
#include "model/tokenizer_make.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *out;           /* checkpoint path; required */
    const char *from;          /* fp32 checkpoint to convert instead; default none */
    const char *tokenizer_out; /* tokenizer.bin path; default none */
    const char *preset;        /* shape to start from; default "tiny" */
    const char *format;        /* "legacy" or "v1"; default legacy (fp32) or v2 (q8_0) */
    const char *quantize;      /* "none" or "q8_0"; default "none" */
    int64_t group_size;        /* q8_0 values per scale; 0: 64 halved until it fits */
    int64_t dim, hidden_dim, layers, heads, kv_heads, vocab, seq_len; /* 0: from the preset */
    int64_t seed;           /* weight stream seed; default 42 */
    bool shared_classifier; /* classifier is the token embedding; default true */
} modelmaker_config_t;

static void modelmaker_config_init(modelmaker_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->preset = "tiny";
    cfg->quantize = "none";
    cfg->seed = 42;
    cfg->shared_classifier = true;
}

typedef struct {
    const char *name;
    int dim, hidden_dim, layers, heads, kv_heads, vocab, seq_len;
} preset_t;

static const preset_t presets[] = {
    {"tiny", 64, 172, 2, 4, 2, 512, 256},
    {"stories15M", 288, 768, 6, 6, 6, 32000, 256},
    {"stories110M", 768, 2048, 12, 12, 12, 32000, 1024},
};

/* export.py's group-size back-off, also over hidden_dim, which runq.c groups along too. */
static int default_group(const ckpt_config_t *shape)
{
    int gs = CKPT_Q8_DEFAULT_GROUP;
    while (shape->dim % gs || shape->hidden_dim % gs)
        gs /= 2;
    return gs;
}

/* --from: the source's shape and values in the format asked for.  Exit status as main's. */
static int convert(const modelmaker_config_t *cfg, ckpt_format_t format, const char *format_name)
{
    if (cfg->dim || cfg->hidden_dim || cfg->layers || cfg->heads || cfg->kv_heads || cfg->vocab ||
        cfg->seq_len || strcmp(cfg->preset, "tiny") != 0 || cfg->seed != 42 ||
        !cfg->shared_classifier || (cfg->tokenizer_out && *cfg->tokenizer_out)) {
        fprintf(stderr, "llmserve-modelmaker: --from takes the shape and the weights from the "
                        "file (and the model keeps its own tokenizer); drop --preset, the size "
                        "flags, --seed, --no-shared-classifier and --tokenizer-out\n");
        return 2;
    }
    char err[512];
    ckpt_t *src = ckpt_open(cfg->from, err, sizeof(err));
    if (!src) {
        fprintf(stderr, "llmserve-modelmaker: %s\n", err);
        return 1;
    }
    int gs = 0;
    if (format == CKPT_FORMAT_Q8_0)
        gs = cfg->group_size ? (int)cfg->group_size : default_group(&src->cfg);
    int rc = ckpt_convert(cfg->out, src, format, gs, err, sizeof(err));
    if (rc != LS_OK) {
        fprintf(stderr, "llmserve-modelmaker: %s\n", err);
        ckpt_close(src);
        return rc == LS_ERR_INVALID ? 2 : 1;
    }
    const ckpt_config_t *c = &src->cfg;
    LS_LOG_INFO("modelmaker",
                "checkpoint converted from=%s path=%s format=%s group_size=%d dim=%d "
                "hidden_dim=%d n_layers=%d n_heads=%d n_kv_heads=%d vocab_size=%d seq_len=%d "
                "shared_classifier=%d",
                cfg->from, cfg->out, format_name, gs, c->dim, c->hidden_dim, c->n_layers,
                c->n_heads, c->n_kv_heads, c->vocab_size, c->seq_len, c->shared_classifier);
    ckpt_close(src);
    return 0;
}

static int pick(int64_t flag, int preset_value)
{
    return flag ? (int)flag : preset_value;
}

int main(int argc, char **argv)
{
    modelmaker_config_t cfg;
    modelmaker_config_init(&cfg);
    const ls_opt_t opts[] = {
        {"out", "LLMSERVE_MODELMAKER_OUT", LS_OPT_STRING, &cfg.out,
         "checkpoint file to write (required)", 0, 0},
        {"from", "LLMSERVE_MODELMAKER_FROM", LS_OPT_STRING, &cfg.from,
         "convert this fp32 checkpoint (legacy or ak42 v1, e.g. llama2.c's stories110M.bin) "
         "instead of making random weights: its shape and values, written as --format or "
         "--quantize say",
         0, 0},
        {"tokenizer-out", "LLMSERVE_MODELMAKER_TOKENIZER_OUT", LS_OPT_STRING, &cfg.tokenizer_out,
         "tokenizer.bin to write with the same vocabulary size (optional)", 0, 0},
        {"preset", "LLMSERVE_MODELMAKER_PRESET", LS_OPT_STRING, &cfg.preset,
         "starting shape: tiny, stories15M or stories110M", 0, 0},
        {"format", "LLMSERVE_MODELMAKER_FORMAT", LS_OPT_STRING, &cfg.format,
         "fp32 file format: legacy (llama2.c run.c, the default) or v1 (ak42 version 1)", 0, 0},
        {"quantize", "LLMSERVE_MODELMAKER_QUANTIZE", LS_OPT_STRING, &cfg.quantize,
         "none (fp32) or q8_0 (int8 matrices, ak42 version 2 as llama2.c runq.c reads)", 0, 0},
        {"group-size", "LLMSERVE_MODELMAKER_GROUP_SIZE", LS_OPT_INT, &cfg.group_size,
         "q8_0 values per scale, divides dim and hidden-dim (0: 64, halved until it does, as "
         "export.py)",
         0, 1 << 20},
        {"dim", NULL, LS_OPT_INT, &cfg.dim, "model width (0: from the preset)", 0, 1 << 20},
        {"hidden-dim", NULL, LS_OPT_INT, &cfg.hidden_dim, "feed-forward width (0: from the preset)",
         0, 1 << 22},
        {"layers", NULL, LS_OPT_INT, &cfg.layers, "transformer layers (0: from the preset)", 0,
         1 << 12},
        {"heads", NULL, LS_OPT_INT, &cfg.heads, "query heads (0: from the preset)", 0, 1 << 12},
        {"kv-heads", NULL, LS_OPT_INT, &cfg.kv_heads,
         "key/value heads, divides heads (0: from the preset)", 0, 1 << 12},
        {"vocab", NULL, LS_OPT_INT, &cfg.vocab,
         "vocabulary size in tokens, at least 259 (0: from the preset)", 0, 1 << 24},
        {"seq-len", NULL, LS_OPT_INT, &cfg.seq_len,
         "longest sequence in tokens (0: from the preset)", 0, 1 << 24},
        {"seed", "LLMSERVE_MODELMAKER_SEED", LS_OPT_INT, &cfg.seed, "weight stream seed", 0,
         9007199254740992.0},
        {"shared-classifier", NULL, LS_OPT_BOOL, &cfg.shared_classifier,
         "classifier shares the token embedding (--no-shared-classifier: separate wcls)", 0, 0},
    };
    const ls_config_t lc = {
        .program = "llmserve-modelmaker",
        .summary = "writes a llama2.c checkpoint with pseudo-random weights and a tokenizer, "
                   "or converts an fp32 checkpoint (to int8 Q8_0, say)",
        .opts = opts,
        .n_opts = sizeof(opts) / sizeof(opts[0]),
    };
    char err[512];
    int rc = ls_config_load(&lc, argc, argv, err, sizeof(err));
    if (rc == LS_CONFIG_HELP)
        return 0;
    if (rc != LS_OK) {
        fprintf(stderr, "llmserve-modelmaker: %s\n", err);
        return 2;
    }
    if (!cfg.out || !*cfg.out) {
        fprintf(stderr, "llmserve-modelmaker: --out FILE is required\n");
        return 2;
    }
    const preset_t *p = NULL;
    for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++)
        if (strcmp(presets[i].name, cfg.preset) == 0)
            p = &presets[i];
    if (!p) {
        fprintf(stderr,
                "llmserve-modelmaker: unknown preset \"%s\" (tiny, stories15M, "
                "stories110M)\n",
                cfg.preset);
        return 2;
    }
    ckpt_format_t format;
    const char *format_name;
    if (strcmp(cfg.quantize, "q8_0") == 0) {
        if (cfg.format) {
            fprintf(stderr, "llmserve-modelmaker: --quantize q8_0 writes ak42 version 2; "
                            "--format names an fp32 format\n");
            return 2;
        }
        format = CKPT_FORMAT_Q8_0;
        format_name = "v2-q8_0";
    } else if (strcmp(cfg.quantize, "none") != 0) {
        fprintf(stderr, "llmserve-modelmaker: unknown quantization \"%s\" (none, q8_0)\n",
                cfg.quantize);
        return 2;
    } else if (!cfg.format || strcmp(cfg.format, "legacy") == 0) {
        format = CKPT_FORMAT_LEGACY;
        format_name = "legacy";
    } else if (strcmp(cfg.format, "v1") == 0) {
        format = CKPT_FORMAT_V1;
        format_name = "v1";
    } else {
        fprintf(stderr, "llmserve-modelmaker: unknown format \"%s\" (legacy, v1)\n", cfg.format);
        return 2;
    }
    if (cfg.group_size && format != CKPT_FORMAT_Q8_0) {
        fprintf(stderr, "llmserve-modelmaker: --group-size applies to --quantize q8_0 only\n");
        return 2;
    }
    if (cfg.from && *cfg.from)
        return convert(&cfg, format, format_name);
    ckpt_config_t shape = {
        .dim = pick(cfg.dim, p->dim),
        .hidden_dim = pick(cfg.hidden_dim, p->hidden_dim),
        .n_layers = pick(cfg.layers, p->layers),
        .n_heads = pick(cfg.heads, p->heads),
        .vocab_size = pick(cfg.vocab, p->vocab),
        .seq_len = pick(cfg.seq_len, p->seq_len),
        .shared_classifier = cfg.shared_classifier,
    };
    /* heads without kv-heads means plain multi-head attention, not the preset's ratio */
    shape.n_kv_heads = cfg.kv_heads ? (int)cfg.kv_heads : cfg.heads ? (int)cfg.heads : p->kv_heads;
    if (shape.vocab_size < TOK_MAKE_MIN_VOCAB) {
        fprintf(stderr,
                "llmserve-modelmaker: vocab %d is below %d (<unk>, <s>, </s> and 256 "
                "byte tokens)\n",
                shape.vocab_size, TOK_MAKE_MIN_VOCAB);
        return 2;
    }
    if (ckpt_config_check(&shape, err, sizeof(err)) != LS_OK) {
        fprintf(stderr, "llmserve-modelmaker: bad shape: %s\n", err);
        return 2;
    }
    if (format == CKPT_FORMAT_Q8_0) {
        if (cfg.group_size) {
            shape.group_size = (int)cfg.group_size;
        } else {
            shape.group_size = default_group(&shape);
        }
        if (ckpt_config_check(&shape, err, sizeof(err)) != LS_OK) {
            fprintf(stderr, "llmserve-modelmaker: bad shape: %s\n", err);
            return 2;
        }
    }
    ls_config_log(&lc, "modelmaker");
    rc = ckpt_write(cfg.out, &shape, (uint64_t)cfg.seed, format, err, sizeof(err));
    if (rc != LS_OK) {
        fprintf(stderr, "llmserve-modelmaker: %s\n", err);
        return 1;
    }
    LS_LOG_INFO("modelmaker",
                "checkpoint written path=%s format=%s group_size=%d dim=%d hidden_dim=%d "
                "n_layers=%d n_heads=%d n_kv_heads=%d vocab_size=%d seq_len=%d "
                "shared_classifier=%d",
                cfg.out, format_name, shape.group_size, shape.dim, shape.hidden_dim, shape.n_layers,
                shape.n_heads, shape.n_kv_heads, shape.vocab_size, shape.seq_len,
                shape.shared_classifier);
    if (cfg.tokenizer_out && *cfg.tokenizer_out) {
        rc = tok_make(cfg.tokenizer_out, shape.vocab_size, err, sizeof(err));
        if (rc != LS_OK) {
            fprintf(stderr, "llmserve-modelmaker: %s\n", err);
            return 1;
        }
        LS_LOG_INFO("modelmaker", "tokenizer written path=%s vocab_size=%d", cfg.tokenizer_out,
                    shape.vocab_size);
    }
    return 0;
}
