/*
 * runs.c - the timed runs behind llmserve-modelbench.
 *
 * Tokens are fixed pseudo-random ids rather than text: the forward pass costs the
 * same whatever the ids, and no tokenizer is needed.  Clocks start after the
 * sequences are open and prefilled, so each figure covers only the steps it names.
 */
#include "runs.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"

#include <stdlib.h>

/* The prompt of sequence s: n ids below vocab. */
static int *make_prompt(int s, int n, int vocab)
{
    int *p = ls_xmalloc((unsigned long)(n > 0 ? n : 1) * sizeof(int));
    for (int i = 0; i < n; i++)
        p[i] = (int)((1103515245u * (unsigned)(s * 7919 + i) + 12345u) % (unsigned)vocab);
    return p;
}

int runs_decode(forward_t *f, int vocab, int prompt_tokens, int decode_tokens, double *tok_s)
{
    sampler_t s;
    sampler_init(&s, 0.0f, 1.0f, 0, 1);
    int seq = forward_seq_open(f, prompt_tokens + decode_tokens);
    if (seq < 0)
        return seq;
    int *prompt = make_prompt(0, prompt_tokens, vocab);
    forward_item_t it = {.seq = seq,
                         .tokens = prompt,
                         .n_tokens = prompt_tokens,
                         .pos = 0,
                         .sampler = &s,
                         .coin = 0.0f};
    int tok = 0;
    int rc = forward_step(f, &it, 1, &tok, NULL);
    int64_t t0 = ls_now_us();
    for (int i = 0; i < decode_tokens && rc == LS_OK; i++) {
        int in = tok;
        it.tokens = &in;
        it.n_tokens = 1;
        it.pos = prompt_tokens + i;
        rc = forward_step(f, &it, 1, &tok, NULL);
    }
    int64_t us = ls_now_us() - t0;
    forward_seq_close(f, seq);
    free(prompt);
    *tok_s = (double)decode_tokens * 1e6 / (double)(us > 0 ? us : 1);
    return rc;
}

int runs_prefill(forward_t *f, int vocab, int prompt_tokens, double *tok_s)
{
    sampler_t s;
    sampler_init(&s, 0.0f, 1.0f, 0, 1);
    int seq = forward_seq_open(f, prompt_tokens);
    if (seq < 0)
        return seq;
    int *prompt = make_prompt(1, prompt_tokens, vocab);
    forward_item_t it = {.seq = seq,
                         .tokens = prompt,
                         .n_tokens = prompt_tokens,
                         .pos = 0,
                         .sampler = &s,
                         .coin = 0.0f};
    int tok;
    int64_t t0 = ls_now_us();
    int rc = forward_step(f, &it, 1, &tok, NULL);
    int64_t us = ls_now_us() - t0;
    forward_seq_close(f, seq);
    free(prompt);
    *tok_s = (double)prompt_tokens * 1e6 / (double)(us > 0 ? us : 1);
    return rc;
}

int runs_batch(forward_t *f, int vocab, int batch, int prompt_tokens, int steps, double *tok_s,
               double *step_ms)
{
    int max_step = forward_config(f)->max_step_tokens;
    sampler_t s;
    sampler_init(&s, 0.0f, 1.0f, 0, 1);
    int *seqs = ls_xmalloc((unsigned long)batch * sizeof(int));
    int **prompts = ls_xcalloc((unsigned long)batch, sizeof(int *));
    int *last = ls_xmalloc((unsigned long)batch * sizeof(int));
    int *next = ls_xmalloc((unsigned long)batch * sizeof(int));
    forward_item_t *items = ls_xmalloc((unsigned long)batch * sizeof(forward_item_t));
    int opened = 0, rc = LS_OK;
    for (; opened < batch; opened++) {
        seqs[opened] = forward_seq_open(f, prompt_tokens + steps);
        if (seqs[opened] < 0) {
            rc = seqs[opened];
            goto out_close;
        }
        prompts[opened] = make_prompt(opened + 2, prompt_tokens, vocab);
    }
    /* Prefill, as many whole prompts per step as max_step_tokens allows. */
    for (int b = 0; b < batch && rc == LS_OK;) {
        int n = 0, used = 0;
        while (b + n < batch && used + prompt_tokens <= max_step) {
            items[n] = (forward_item_t){.seq = seqs[b + n],
                                        .tokens = prompts[b + n],
                                        .n_tokens = prompt_tokens,
                                        .pos = 0,
                                        .sampler = &s};
            used += prompt_tokens;
            n++;
        }
        if (n == 0) {
            rc = LS_ERR_INVALID; /* a prompt longer than a step */
            break;
        }
        rc = forward_step(f, items, n, last + b, NULL);
        b += n;
    }
    int64_t t0 = ls_now_us();
    for (int st = 0; st < steps && rc == LS_OK; st++) {
        for (int b = 0; b < batch; b++) {
            items[b] = (forward_item_t){.seq = seqs[b],
                                        .tokens = &last[b],
                                        .n_tokens = 1,
                                        .pos = prompt_tokens + st,
                                        .sampler = &s};
        }
        rc = forward_step(f, items, batch, next, NULL);
        int *tmp = last;
        last = next;
        next = tmp;
    }
    int64_t us = ls_now_us() - t0;
    *tok_s = (double)batch * steps * 1e6 / (double)(us > 0 ? us : 1);
    *step_ms = (double)us / 1e3 / (steps > 0 ? steps : 1);
out_close:
    for (int b = 0; b < opened; b++) {
        forward_seq_close(f, seqs[b]);
        free(prompts[b]);
    }
    free(items);
    free(next);
    free(last);
    free(prompts);
    free(seqs);
    return rc;
}
