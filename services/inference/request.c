#define _GNU_SOURCE
#include "request.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "chat.h"
#include "base/utf8.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

int inf_request_check_id(const char *id, char *err, size_t err_len)
{
    size_t len = id ? strlen(id) : 0;
    if (len == 0) {
        snprintf(err, err_len, "request_id is empty");
        return LS_ERR_INVALID;
    }
    if (len > INF_REQUEST_ID_MAX) {
        snprintf(err, err_len, "request_id has %zu bytes (at most %d)", len, INF_REQUEST_ID_MAX);
        return LS_ERR_INVALID;
    }
    if (!ls_utf8_valid(id, len)) {
        snprintf(err, err_len, "request_id is not valid UTF-8");
        return LS_ERR_INVALID;
    }
    return LS_OK;
}

/* A seed for a request that brought none: the kernel's random pool, else the clock. */
static uint64_t draw_seed(void)
{
    uint64_t seed;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == (ssize_t)sizeof(seed))
        return seed;
    static _Atomic uint64_t counter;
    uint64_t x = (uint64_t)ls_wall_us() ^ ((uint64_t)ls_now_us() << 21) ^
                 (atomic_fetch_add(&counter, 1) * 0x9e3779b97f4a7c15ull);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

/* Checks the sampling fields that need no prompt.  sp may be NULL (all defaults). */
static int check_sampling(const Llmserve__V1__SamplingParams *sp, const inf_limits_t *lim,
                          char *err, size_t err_len)
{
    if (!sp)
        return LS_OK;
    if (sp->max_tokens < 0) {
        snprintf(err, err_len, "max_tokens is %d (must be >= 0; 0 = default %d)",
                 (int)sp->max_tokens, lim->default_max_tokens);
        return LS_ERR_INVALID;
    }
    if (lim->max_tokens_limit > 0 && sp->max_tokens > lim->max_tokens_limit) {
        snprintf(err, err_len, "max_tokens is %d (this instance allows at most %d)",
                 (int)sp->max_tokens, lim->max_tokens_limit);
        return LS_ERR_INVALID;
    }
    if (!(sp->temperature >= 0.0f && sp->temperature <= 2.0f)) {
        snprintf(err, err_len, "temperature is %g (must be in [0, 2])", (double)sp->temperature);
        return LS_ERR_INVALID;
    }
    if (!(sp->top_p >= 0.0f && sp->top_p <= 1.0f)) {
        snprintf(err, err_len, "top_p is %g (must be in [0, 1])", (double)sp->top_p);
        return LS_ERR_INVALID;
    }
    if (sp->top_k < 0) {
        snprintf(err, err_len, "top_k is %d (must be >= 0)", (int)sp->top_k);
        return LS_ERR_INVALID;
    }
    if (sp->n_stop > INF_STOP_MAX_STRINGS) {
        snprintf(err, err_len, "%zu stop strings (at most %d)", sp->n_stop, INF_STOP_MAX_STRINGS);
        return LS_ERR_INVALID;
    }
    for (size_t i = 0; i < sp->n_stop; i++) {
        const char *s = sp->stop[i] ? sp->stop[i] : "";
        if (!ls_utf8_valid(s, strlen(s))) {
            snprintf(err, err_len, "stop string %zu is not valid UTF-8", i);
            return LS_ERR_INVALID;
        }
    }
    return LS_OK;
}

static int init_stop(inf_request_t *r, const Llmserve__V1__SamplingParams *sp, char *err,
                     size_t err_len)
{
    const char *strs[INF_STOP_MAX_STRINGS];
    size_t lens[INF_STOP_MAX_STRINGS];
    size_t n = sp ? sp->n_stop : 0;
    for (size_t i = 0; i < n; i++) {
        strs[i] = sp->stop[i] ? sp->stop[i] : "";
        lens[i] = strlen(strs[i]);
    }
    return inf_stop_init(&r->stop, strs, lens, n, err, err_len);
}

/* Copies pre-tokenized ids after checking them. */
static int take_tokens(inf_request_t *r, const Llmserve__V1__InferenceSubmit *sub,
                       const inf_limits_t *lim, char *err, size_t err_len)
{
    size_t n = sub->n_prompt_tokens;
    if (n >= (size_t)lim->seq_len) {
        snprintf(err, err_len,
                 "prompt has %zu tokens; the model's context is %d tokens and must leave room "
                 "for at least one more",
                 n, lim->seq_len);
        return LS_ERR_FULL;
    }
    for (size_t i = 0; i < n; i++) {
        int32_t id = sub->prompt_tokens[i];
        if (id < 0 || id >= lim->vocab_size) {
            snprintf(err, err_len, "prompt_tokens[%zu] is %d (vocabulary is [0, %d))", i, (int)id,
                     lim->vocab_size);
            return LS_ERR_INVALID;
        }
    }
    r->prompt = malloc(n * sizeof(int));
    if (!r->prompt)
        return LS_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        r->prompt[i] = sub->prompt_tokens[i];
    r->n_prompt = (int)n;
    return LS_OK;
}

/* Tokenizes text (len bytes, already checked as UTF-8) with BOS in front. */
static int encode_text(inf_request_t *r, const tok_t *tok, const char *text, size_t len,
                       const inf_limits_t *lim, char *err, size_t err_len)
{
    /* Checked before tokenizing so a huge prompt costs no tokenizer time on the
     * completion-queue thread: no token covers more than max_prompt_bytes / seq_len
     * bytes, so longer text cannot fit. */
    if (lim->max_prompt_bytes > 0 && len > lim->max_prompt_bytes) {
        snprintf(err, err_len,
                 "prompt has %zu bytes, more than the model's context of %d "
                 "tokens can hold",
                 len, lim->seq_len);
        return LS_ERR_FULL;
    }
    int cap = lim->seq_len;
    int *ids = malloc((size_t)cap * sizeof(int));
    if (!ids)
        return LS_ERR_NOMEM;
    int n = tok_encode(tok, text, len, true, false, ids, cap);
    if (n == LS_ERR_NOMEM) {
        free(ids);
        return LS_ERR_NOMEM;
    }
    if (n < 0 || n >= lim->seq_len) {
        free(ids);
        if (n < 0)
            snprintf(err, err_len, "prompt needs more than %d tokens, the model's context",
                     lim->seq_len);
        else
            snprintf(err, err_len,
                     "prompt has %d tokens; the model's context is %d tokens and must leave "
                     "room for at least one more",
                     n, lim->seq_len);
        return LS_ERR_FULL;
    }
    int *shrunk = realloc(ids, (size_t)(n > 0 ? n : 1) * sizeof(int));
    r->prompt = shrunk ? shrunk : ids;
    r->n_prompt = n;
    return LS_OK;
}

static int build_prompt(inf_request_t *r, const Llmserve__V1__InferenceSubmit *sub,
                        const tok_t *tok, const inf_limits_t *lim, char *err, size_t err_len)
{
    if (sub->n_prompt_tokens > 0)
        return take_tokens(r, sub, lim, err, err_len);
    if (sub->n_messages > 0) {
        char *text = NULL;
        size_t len = 0;
        int rc = inf_chat_render(sub->messages, sub->n_messages, &text, &len, err, err_len);
        if (rc != LS_OK)
            return rc;
        rc = encode_text(r, tok, text, len, lim, err, err_len);
        free(text);
        return rc;
    }
    const char *prompt = sub->prompt ? sub->prompt : "";
    return encode_text(r, tok, prompt, strlen(prompt), lim, err, err_len);
}

const char *inf_prio_name(int prio)
{
    switch (prio) {
    case INF_PRIO_INTERACTIVE:
        return "interactive";
    case INF_PRIO_BATCH:
        return "batch";
    default:
        return "normal";
    }
}

/* Checks resume_tokens before anything is built. */
static int check_resume(const Llmserve__V1__InferenceSubmit *sub, const inf_limits_t *lim,
                        char *err, size_t err_len)
{
    if (sub->n_resume_tokens > (size_t)lim->seq_len) {
        snprintf(err, err_len, "resume_tokens has %zu ids (the model's context is %d tokens)",
                 sub->n_resume_tokens, lim->seq_len);
        return LS_ERR_INVALID;
    }
    for (size_t i = 0; i < sub->n_resume_tokens; i++) {
        int32_t id = sub->resume_tokens[i];
        if (id < 0 || id >= lim->vocab_size) {
            snprintf(err, err_len, "resume_tokens[%zu] is %d (vocabulary is [0, %d))", i, (int)id,
                     lim->vocab_size);
            return LS_ERR_INVALID;
        }
    }
    return LS_OK;
}

/* Appends the resume tokens after the prompt and replays them: their text goes through
 * the UTF-8 and stop-string hold-back (and is dropped: the client has it), the sampler
 * draws the coins their picks drew, and a token that ended generation sets resume_end. */
static int take_resume(inf_request_t *r, const Llmserve__V1__InferenceSubmit *sub,
                       const tok_t *tok, const inf_limits_t *lim)
{
    int n = (int)sub->n_resume_tokens;
    size_t piece = lim->longest_piece ? lim->longest_piece : inf_longest_piece(tok);
    inf_text_scratch_t sc = {.utf8 = malloc(piece + 8), .utf8_cap = piece + 8};
    size_t out_cap = INF_TEXT_PUSH_NEED(piece) + INF_TEXT_FLUSH_NEED;
    char *out = malloc(out_cap);
    if (!sc.utf8 || !out) {
        free(sc.utf8);
        free(out);
        return LS_ERR_NOMEM;
    }
    int kept = 0;
    for (int i = 0; i < n && r->resume_end == 0; i++) {
        int token = sub->resume_tokens[i];
        int prev = i == 0 ? r->prompt[r->n_prompt - 1] : r->prompt[r->n_prompt + i - 1];
        (void)sampler_coin(&r->sampler);
        if (inf_request_is_eos(r, token)) {
            r->resume_end = LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS;
            break;
        }
        r->prompt[r->n_prompt + kept++] = token;
        bool stopped = false;
        (void)inf_request_push_text(r, tok, prev, token, &sc, out, out_cap, &stopped);
        if (stopped)
            r->resume_end = LLMSERVE__V1__FINISH_REASON__FINISH_REASON_STOP;
        else if (kept >= r->max_tokens)
            r->resume_end = LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH;
    }
    free(sc.utf8);
    free(out);
    r->n_resume = kept;
    r->n_generated = kept;
    if (kept > 0)
        r->last_token = r->prompt[r->n_prompt + kept - 1];
    return LS_OK;
}

int inf_request_create(const Llmserve__V1__InferenceSubmit *sub, const tok_t *tok,
                       const inf_limits_t *lim, int64_t now_us, inf_request_t **out, char *err,
                       size_t err_len)
{
    int rc = inf_request_check_id(sub->request_id, err, err_len);
    if (rc != LS_OK)
        return rc;
    const char *prompt = sub->prompt ? sub->prompt : "";
    if (prompt[0] != '\0' && sub->n_messages > 0) {
        snprintf(err, err_len, "prompt and messages are both set (send one)");
        return LS_ERR_INVALID;
    }
    if (prompt[0] == '\0' && sub->n_messages == 0 && sub->n_prompt_tokens == 0) {
        snprintf(err, err_len, "prompt is empty (set prompt, messages or prompt_tokens)");
        return LS_ERR_INVALID;
    }
    /* Checked even when prompt_tokens replaces it: the text is kept for logs and must
     * not be echoed anywhere as broken UTF-8. */
    if (!ls_utf8_valid(prompt, strlen(prompt))) {
        snprintf(err, err_len, "prompt is not valid UTF-8");
        return LS_ERR_INVALID;
    }
    const Llmserve__V1__SamplingParams *sp = sub->sampling;
    rc = check_sampling(sp, lim, err, err_len);
    if (rc != LS_OK)
        return rc;
    rc = check_resume(sub, lim, err, err_len);
    if (rc != LS_OK)
        return rc;
    if ((int)sub->priority < LLMSERVE__V1__PRIORITY__PRIORITY_UNSPECIFIED ||
        (int)sub->priority > LLMSERVE__V1__PRIORITY__PRIORITY_BATCH) {
        snprintf(err, err_len, "priority is %d (must be 0 to 3: unspecified, interactive, "
                               "normal, batch)", (int)sub->priority);
        return LS_ERR_INVALID;
    }

    inf_request_t *r = calloc(1, sizeof(*r));
    if (!r)
        return LS_ERR_NOMEM;
    snprintf(r->id, sizeof(r->id), "%s", sub->request_id);
    atomic_init(&r->cancel, false);
    r->seq = -1;
    r->prio = sub->priority == LLMSERVE__V1__PRIORITY__PRIORITY_UNSPECIFIED
                  ? INF_PRIO_NORMAL
                  : (int)sub->priority - 1;
    r->arrival_us = now_us;
    r->enqueue_us = now_us;
    r->deadline_us = sub->timeout_ms > 0 ? now_us + (int64_t)sub->timeout_ms * 1000 : INT64_MAX;
    tok_stream_init(&r->text);
    rc = init_stop(r, sp, err, err_len);
    if (rc != LS_OK)
        goto out_free;
    rc = build_prompt(r, sub, tok, lim, err, err_len);
    if (rc != LS_OK)
        goto out_free;

    int room = lim->seq_len - r->n_prompt; /* >= 1: build_prompt checked */
    int max_tokens = sp && sp->max_tokens > 0 ? sp->max_tokens : lim->default_max_tokens;
    r->max_tokens = max_tokens < room ? max_tokens : room;
    r->ignore_eos = sp && sp->ignore_eos;
    /* Room for the answer after the prompt (resume tokens beyond max_tokens included,
     * so the replay can see where they end). */
    int answer_cap = r->max_tokens > (int)sub->n_resume_tokens ? r->max_tokens
                                                                : (int)sub->n_resume_tokens;
    int *grown = realloc(r->prompt, (size_t)(r->n_prompt + answer_cap) * sizeof(int));
    if (!grown) {
        rc = LS_ERR_NOMEM;
        goto out_free;
    }
    r->prompt = grown;

    float temperature = sp ? sp->temperature : 0.0f;
    float top_p = sp && sp->top_p > 0.0f ? sp->top_p : 1.0f;
    int top_k = sp ? sp->top_k : 0;
    if (top_k > lim->vocab_size)
        top_k = lim->vocab_size;
    uint64_t seed = sp && sp->has_seed ? sp->seed : draw_seed();
    r->chat = sub->n_messages > 0;
    r->has_seed = sp && sp->has_seed;
    r->seed = seed;
    sampler_init(&r->sampler, temperature, top_p, top_k, seed);
    if (sub->n_resume_tokens > 0) {
        rc = take_resume(r, sub, tok, lim);
        if (rc != LS_OK)
            goto out_free;
    }
    *out = r;
    return LS_OK;

out_free:
    if (rc == LS_ERR_NOMEM)
        snprintf(err, err_len, "out of memory");
    inf_request_destroy(r);
    return rc;
}

size_t inf_longest_piece(const tok_t *tok)
{
    size_t longest = 0;
    int n = tok_vocab_size(tok);
    for (int id = 0; id < n; id++) {
        size_t len = 0;
        tok_piece(tok, TOK_UNK, id, &len);
        if (len > longest)
            longest = len;
    }
    return longest;
}

void inf_request_destroy(inf_request_t *r)
{
    if (!r)
        return;
    free(r->prompt);
    free(r);
}

bool inf_request_is_eos(const inf_request_t *r, int token)
{
    return !r->ignore_eos && (token == TOK_EOS || token == TOK_BOS);
}

size_t inf_request_push_text(inf_request_t *r, const tok_t *tok, int prev, int token,
                             const inf_text_scratch_t *sc, char *out, size_t out_cap, bool *stopped)
{
    size_t plen = 0;
    const char *piece = tok_piece(tok, prev, token, &plen);
    LS_ASSERT(plen + 4 <= sc->utf8_cap);
    size_t n = tok_stream_push(&r->text, piece, plen, sc->utf8, sc->utf8_cap);
    return inf_stop_feed(&r->stop, sc->utf8, n, out, out_cap, stopped);
}

size_t inf_request_flush_text(inf_request_t *r, const inf_text_scratch_t *sc, char *out,
                              size_t out_cap, bool *stopped)
{
    size_t n = tok_stream_flush(&r->text, sc->utf8, sc->utf8_cap);
    size_t m = inf_stop_feed(&r->stop, sc->utf8, n, out, out_cap, stopped);
    if (!*stopped)
        m += inf_stop_flush(&r->stop, out + m, out_cap - m);
    return m;
}
