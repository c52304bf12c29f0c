/*
 * main.c - llmserve-modelbench: how fast the forward pass runs a checkpoint.
 *
 * Reports single-stream decode tokens/s, prefill tokens/s of one prompt chunk, and
 * aggregate decode tokens/s with several sequences per step, each the median of
 * --repeats runs, next to the memory-bandwidth bound: a decode step reads every
 * weight once, so one stream can go no faster than (read bandwidth) / (weight bytes
 * per step).  The bandwidth is measured here with as many threads as the forward
 * pass uses.  Exit status: 0 when every run completed, 1 when one failed, 2 for bad
 * flags.
 */
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "membw.h"
#include "model/checkpoint.h"
#include "model/forward.h"
#include "runs.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MB_MAX_BATCHES 16
#define MB_MAX_REPEATS 64

typedef struct {
    const char *model;      /* checkpoint path; required */
    const char *backend;    /* "auto", "cpu" or "cuda"; default "auto" */
    const char *batches;    /* comma-separated batch sizes; default "1,4,16,32" */
    int64_t threads;        /* CPU threads; default 0 = online cores */
    int64_t decode_prompt;  /* prompt before the decode run; default 16 tokens */
    int64_t decode_tokens;  /* timed decode steps of one stream; default 128 */
    int64_t prefill_tokens; /* prompt of the prefill run; default 128 tokens */
    int64_t batch_prompt;   /* prompt of each batched sequence; default 16 tokens */
    int64_t batch_steps;    /* timed steps of a batched run; default 32 */
    int64_t repeats;        /* runs per figure, median reported; default 5 */
    int64_t bw_mib;         /* bandwidth buffer; default 512 MiB, 0 = skip */
    bool json;              /* one JSON object on stdout instead of the table */
} modelbench_config_t;

static void modelbench_config_init(modelbench_config_t *cfg)
{
    cfg->model = NULL;
    cfg->backend = "auto";
    cfg->batches = "1,4,16,32";
    cfg->threads = 0;
    cfg->decode_prompt = 16;
    cfg->decode_tokens = 128;
    cfg->prefill_tokens = 128;
    cfg->batch_prompt = 16;
    cfg->batch_steps = 32;
    cfg->repeats = 5;
    cfg->bw_mib = 512;
    cfg->json = false;
}

typedef struct {
    const char *key;
    char label[64];
    double runs[MB_MAX_REPEATS];
    int n;
    double median;
    double step_ms; /* batched figures: median step time */
} figure_t;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median_of(const double *v, int n)
{
    double s[MB_MAX_REPEATS];
    memcpy(s, v, (size_t)n * sizeof(double));
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2.0;
}

static int parse_batches(const char *text, int *out, int *n_out, char *err, size_t err_len)
{
    int n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 4096 || n == MB_MAX_BATCHES) {
            snprintf(err, err_len, "--batches wants up to %d sizes in [1, 4096], like 1,4,16",
                     MB_MAX_BATCHES);
            return LS_ERR_INVALID;
        }
        out[n++] = (int)v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') {
            snprintf(err, err_len, "--batches: unexpected '%c'", *end);
            return LS_ERR_INVALID;
        }
    }
    if (n == 0) {
        snprintf(err, err_len, "--batches is empty");
        return LS_ERR_INVALID;
    }
    *n_out = n;
    return LS_OK;
}

static bool parse_backend(const char *name, forward_backend_t *out)
{
    if (strcmp(name, "auto") == 0)
        *out = FORWARD_AUTO;
    else if (strcmp(name, "cpu") == 0)
        *out = FORWARD_CPU;
    else if (strcmp(name, "cuda") == 0)
        *out = FORWARD_CUDA;
    else
        return false;
    return true;
}

/* Bytes of weights a decode step reads: every matrix once, the classifier once, the
 * norms; one embedding row (negligible) is left out, and so is the KV cache, which at
 * these context lengths is under a few percent of the weights.  Int8 (Q8_0) matrices
 * are one byte per value plus a 4-byte scale per group (the CPU's VNNI kernels also
 * read a 4-byte sum per group, left out: 1/16 of the values at group size 64). */
static double weight_bytes_per_step(const ckpt_config_t *c)
{
    double d = c->dim, h = c->hidden_dim, kv = c->kv_dim, L = c->n_layers;
    double matrix = L * (2 * d * d + 2 * kv * d + 3 * d * h) + (double)c->vocab_size * d;
    double norms = L * 2 * d + d;
    double per_value = c->group_size > 0 ? 1.0 + 4.0 / c->group_size : 4.0;
    return per_value * matrix + 4.0 * norms;
}

int main(int argc, char **argv)
{
    modelbench_config_t cfg;
    modelbench_config_init(&cfg);
    const ls_opt_t opts[] = {
        {"model", "LLMSERVE_MODELBENCH_MODEL", LS_OPT_STRING, &cfg.model,
         "checkpoint to run (llama2.c legacy, ak42 v1 fp32 or v2 Q8_0; required)", 0, 0},
        {"backend", "LLMSERVE_MODELBENCH_BACKEND", LS_OPT_STRING, &cfg.backend,
         "forward backend: auto, cpu or cuda", 0, 0},
        {"threads", "LLMSERVE_MODELBENCH_THREADS", LS_OPT_INT, &cfg.threads,
         "CPU backend threads (0: online cores)", 0, 1024},
        {"batches", "LLMSERVE_MODELBENCH_BATCHES", LS_OPT_STRING, &cfg.batches,
         "comma-separated sequences per step for the aggregate figures", 0, 0},
        {"decode-prompt", NULL, LS_OPT_INT, &cfg.decode_prompt,
         "prompt before the single-stream decode run (tokens)", 1, 1 << 20},
        {"decode-tokens", NULL, LS_OPT_INT, &cfg.decode_tokens,
         "timed single-stream decode steps (tokens)", 1, 1 << 20},
        {"prefill-tokens", NULL, LS_OPT_INT, &cfg.prefill_tokens,
         "prompt of the prefill run, one chunk (tokens)", 1, 1 << 20},
        {"batch-prompt", NULL, LS_OPT_INT, &cfg.batch_prompt,
         "prompt of each sequence of a batched run (tokens)", 1, 1 << 20},
        {"batch-steps", NULL, LS_OPT_INT, &cfg.batch_steps, "timed decode steps of a batched run",
         1, 1 << 20},
        {"repeats", "LLMSERVE_MODELBENCH_REPEATS", LS_OPT_INT, &cfg.repeats,
         "runs per figure; the median is reported", 1, MB_MAX_REPEATS},
        {"bw-mib", NULL, LS_OPT_INT, &cfg.bw_mib,
         "buffer for the read-bandwidth measurement (MiB; 0 skips it)", 0, 1 << 16},
        {"json", "LLMSERVE_MODELBENCH_JSON", LS_OPT_BOOL, &cfg.json,
         "print one JSON object instead of the table", 0, 0},
    };
    ls_config_t lc = {.program = "llmserve-modelbench", .summary = "Measures decode, prefill and batched tokens/s of a checkpoint on the "
                      "forward pass, against the memory-bandwidth bound.", .opts = opts, .n_opts = sizeof(opts) / sizeof(opts[0])};
    char err[512];
    int rc = ls_config_load(&lc, argc, argv, err, sizeof(err));
    if (rc == LS_CONFIG_HELP)
        return 0;
    if (rc != LS_OK) {
        fprintf(stderr, "llmserve-modelbench: %s\n", err);
        return 2;
    }
    int batches[MB_MAX_BATCHES], n_batches = 0;
    forward_backend_t backend;
    if (!cfg.model) {
        fprintf(stderr, "llmserve-modelbench: --model is required\n");
        return 2;
    }
    if (!parse_backend(cfg.backend, &backend)) {
        fprintf(stderr, "llmserve-modelbench: --backend must be auto, cpu or cuda\n");
        return 2;
    }
    if (parse_batches(cfg.batches, batches, &n_batches, err, sizeof(err)) != LS_OK) {
        fprintf(stderr, "llmserve-modelbench: %s\n", err);
        return 2;
    }
    ls_config_log(&lc, "modelbench");

    ckpt_t *ck = ckpt_open(cfg.model, err, sizeof(err));
    if (!ck) {
        fprintf(stderr, "llmserve-modelbench: %s\n", err);
        return 1;
    }
    const ckpt_config_t *c = &ck->cfg;
    int max_batch = 1, status = 0;
    for (int i = 0; i < n_batches; i++)
        max_batch = batches[i] > max_batch ? batches[i] : max_batch;
    forward_config_t fc;
    forward_config_init(&fc);
    fc.backend = backend;
    fc.threads = (int)cfg.threads;
    fc.max_batch = max_batch;
    int64_t step_tokens = cfg.prefill_tokens;
    if (step_tokens < (int64_t)max_batch * cfg.batch_prompt)
        step_tokens = (int64_t)max_batch * cfg.batch_prompt;
    fc.max_step_tokens = (int)(step_tokens > 512 ? step_tokens : 512);
    if (cfg.decode_prompt + cfg.decode_tokens > c->seq_len ||
        cfg.batch_prompt + cfg.batch_steps > c->seq_len || cfg.prefill_tokens > c->seq_len) {
        fprintf(stderr, "llmserve-modelbench: a run is longer than seq_len=%d\n", c->seq_len);
        ckpt_close(ck);
        return 2;
    }
    forward_t *f = forward_create(ck, &fc, err, sizeof(err));
    if (!f) {
        fprintf(stderr, "llmserve-modelbench: %s\n", err);
        ckpt_close(ck);
        return 1;
    }
    int threads = forward_config(f)->threads;

    /* The bound comes from the memory the weights are read from: the GPU's on the CUDA
     * backend (a read kernel), the host's otherwise. */
    bool on_device = strcmp(forward_backend_name(f), "cuda") == 0;
    double bw = -1.0;
    if (cfg.bw_mib > 0 && on_device) {
        bw = forward_cuda_read_bandwidth(fc.cuda_device, (size_t)cfg.bw_mib << 20, 10, err,
                                         sizeof(err));
        if (bw < 0)
            fprintf(stderr, "llmserve-modelbench: no bandwidth bound: %s\n", err);
    } else if (cfg.bw_mib > 0) {
        bw = membw_read_bytes_per_s((size_t)cfg.bw_mib << 20, threads, 5);
    }
    double wbytes = weight_bytes_per_step(c);
    double bound = bw > 0 ? bw / wbytes : -1.0;

    int n_fig = 2 + n_batches;
    figure_t fig[2 + MB_MAX_BATCHES];
    memset(fig, 0, sizeof(fig));
    fig[0].key = "decode";
    snprintf(fig[0].label, sizeof(fig[0].label), "decode, 1 stream");
    fig[1].key = "prefill";
    snprintf(fig[1].label, sizeof(fig[1].label), "prefill, %d-token chunk",
             (int)cfg.prefill_tokens);
    for (int i = 0; i < n_batches; i++) {
        fig[2 + i].key = "batch";
        snprintf(fig[2 + i].label, sizeof(fig[2 + i].label), "decode, B=%d aggregate", batches[i]);
    }
    double step_ms[MB_MAX_BATCHES][MB_MAX_REPEATS];
    /* Round-robin over the figures, so slow drift of the machine's load spreads over
     * all of them rather than landing on one. */
    for (int r = 0; r < cfg.repeats && status == 0; r++) {
        double v = 0.0;
        rc = runs_decode(f, c->vocab_size, (int)cfg.decode_prompt, (int)cfg.decode_tokens, &v);
        fig[0].runs[fig[0].n++] = v;
        if (rc == LS_OK)
            rc = runs_prefill(f, c->vocab_size, (int)cfg.prefill_tokens, &v);
        fig[1].runs[fig[1].n++] = v;
        for (int i = 0; i < n_batches && rc == LS_OK; i++) {
            rc = runs_batch(f, c->vocab_size, batches[i], (int)cfg.batch_prompt,
                            (int)cfg.batch_steps, &v, &step_ms[i][r]);
            fig[2 + i].runs[fig[2 + i].n++] = v;
        }
        if (rc != LS_OK) {
            fprintf(stderr, "llmserve-modelbench: a run failed: %s\n", ls_strerror(rc));
            status = 1;
        }
    }
    for (int i = 0; i < n_fig && status == 0; i++) {
        fig[i].median = median_of(fig[i].runs, fig[i].n);
        if (i >= 2)
            fig[i].step_ms = median_of(step_ms[i - 2], fig[i].n);
    }

    if (status == 0 && cfg.json) {
        printf("{\"model\":\"%s\",\"dim\":%d,\"hidden_dim\":%d,\"n_layers\":%d,\"n_heads\":%d,"
               "\"n_kv_heads\":%d,\"vocab_size\":%d,\"seq_len\":%d,\"backend\":\"%s\","
               "\"device\":\"%s\",\"threads\":%d,\"repeats\":%d,\"weight_bytes_per_step\":%.0f,"
               "\"bandwidth_of\":\"%s\",\"read_bandwidth_gb_s\":%.2f,\"bound_tok_s\":%.1f,\"decode_tok_s\":%.1f,"
               "\"prefill_tokens\":%d,\"prefill_tok_s\":%.1f,\"batches\":[",
               ck->name ? ck->name : "", c->dim, c->hidden_dim, c->n_layers, c->n_heads,
               c->n_kv_heads, c->vocab_size, c->seq_len, forward_backend_name(f),
               forward_device_name(f), threads, (int)cfg.repeats, wbytes,
               on_device ? "device" : "host", bw / 1e9, bound,
               fig[0].median, (int)cfg.prefill_tokens, fig[1].median);
        for (int i = 0; i < n_batches; i++)
            printf("%s{\"batch\":%d,\"tok_s\":%.1f,\"step_ms\":%.3f}", i ? "," : "", batches[i],
                   fig[2 + i].median, fig[2 + i].step_ms);
        printf("]}\n");
    } else if (status == 0) {
        printf("model %s: dim %d, hidden %d, %d layers, %d/%d heads, vocab %d, seq_len %d\n",
               ck->name ? ck->name : "?", c->dim, c->hidden_dim, c->n_layers, c->n_heads,
               c->n_kv_heads, c->vocab_size, c->seq_len);
        printf("backend %s (%s), median of %d runs\n", forward_backend_name(f),
               forward_device_name(f), (int)cfg.repeats);
        printf("weights read per decode step: %.1f MiB\n", wbytes / (1 << 20));
        if (bw > 0 && on_device)
            printf("device read bandwidth (%d MiB, kernel): %.1f GB/s -> bound %.0f tok/s for one "
                   "stream\n",
                   (int)cfg.bw_mib, bw / 1e9, bound);
        else if (bw > 0)
            printf("read bandwidth (%d threads, %d MiB): %.1f GB/s -> bound %.0f tok/s for one "
                   "stream\n",
                   threads, (int)cfg.bw_mib, bw / 1e9, bound);
        printf("%-28s %10s %10s %10s %9s\n", "figure", "tok/s", "min", "max", "vs bound");
        for (int i = 0; i < n_fig; i++) {
            double lo = fig[i].runs[0], hi = fig[i].runs[0];
            for (int k = 1; k < fig[i].n; k++) {
                lo = fig[i].runs[k] < lo ? fig[i].runs[k] : lo;
                hi = fig[i].runs[k] > hi ? fig[i].runs[k] : hi;
            }
            char vs[32] = "-";
            if (bound > 0 && i != 1)
                snprintf(vs, sizeof(vs), "%.2f", fig[i].median / bound);
            printf("%-28s %10.1f %10.1f %10.1f %9s", fig[i].label, fig[i].median, lo, hi, vs);
            if (i >= 2)
                printf("   (step %.2f ms)", fig[i].step_ms);
            printf("\n");
        }
    }
    forward_destroy(f);
    ckpt_close(ck);
    return status;
}
