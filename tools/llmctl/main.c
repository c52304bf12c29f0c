/*
 * llmctl - send one prompt (or chat) to the router and watch the answer arrive.
 *
 *   llmctl "Tell me a story"                 tokens as they arrive, then a summary
 *   llmctl --json --pool large "Why ...?"    one JSON object for scripts
 *
 * The summary (stderr) names the route (pool, model, version, instance, reason), whether
 * the cache answered, TTFT and the totals.  Ctrl-C (or SIGTERM) cancels the request on
 * the router and still prints the summary; a second one leaves at once.  Exit status: 0
 * done, 1 the request ended with an error event, 2 bad usage, 3 the router could not be
 * reached, 130 cancelled by a signal.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "base/signals.h"
#include "llmserve/v1/router.pb-c.h"
#include "rpc/client.h"
#include "rpc/codec.h"
#include "svc/client.h"
#include "svc/tracer.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *router;
    const char *prompt;
    bool chat;
    const char *system;
    const char *pool;
    const char *conversation;
    const char *tenant;
    const char *cache_policy;
    const char *priority;
    const char *request_id;
    int64_t max_tokens;
    double temperature;
    int64_t seed;
    int64_t timeout_ms;
    bool json;
    bool quiet;
    bool ignore_eos;
    const char *traceparent; /* sent as the call's `traceparent` metadata */
    svc_client_opts_t sec;   /* TLS and API key */
} ctl_config_t;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ended, terminal;
    bool json, quiet;
    int64_t t0_us, first_token_us;
    char *text;
    size_t len, cap;
    uint32_t tokens;
    Llmserve__V1__GenerateStarted *route;
    Llmserve__V1__GenerateDone *done;
    int err_code;
    char err_msg[512];
    rpc_status_t status;
    /* Ctrl-C: the first cancels the request (its done event still prints), a second
     * leaves at once. */
    rpc_stream_t *stream;
    const char *request_id;
    bool cancelled;
} ctl_state_t;

static void append(ctl_state_t *st, const char *s)
{
    size_t n = strlen(s);
    if (st->len + n + 1 > st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 1024;
        while (cap < st->len + n + 1)
            cap *= 2;
        st->text = realloc(st->text, cap);
        if (!st->text) {
            fprintf(stderr, "llmctl: out of memory\n");
            exit(1);
        }
        st->cap = cap;
    }
    memcpy(st->text + st->len, s, n + 1);
    st->len += n;
}

/* Deep copy through the wire format (events are borrowed by the callback). */
static void on_message(rpc_stream_t *s, void *ud, const ProtobufCMessage *msg)
{
    ctl_state_t *st = ud;
    const Llmserve__V1__GenerateEvent *ev = (const Llmserve__V1__GenerateEvent *)msg;
    pthread_mutex_lock(&st->mu);
    switch (ev->kind_case) {
    case LLMSERVE__V1__GENERATE_EVENT__KIND_STARTED:
        if (st->route)
            protobuf_c_message_free_unpacked(&st->route->base, NULL);
        st->route = (Llmserve__V1__GenerateStarted *)rpc_codec_copy(&ev->started->base);
        break;
    case LLMSERVE__V1__GENERATE_EVENT__KIND_TOKEN:
        if (st->tokens++ == 0)
            st->first_token_us = ls_now_us();
        append(st, ev->token->text);
        if (!st->json && !st->quiet) {
            fputs(ev->token->text, stdout);
            fflush(stdout);
        }
        break;
    case LLMSERVE__V1__GENERATE_EVENT__KIND_DONE:
        st->done = (Llmserve__V1__GenerateDone *)rpc_codec_copy(&ev->done->base);
        st->terminal = true;
        rpc_stream_close_send(s);
        break;
    case LLMSERVE__V1__GENERATE_EVENT__KIND_ERROR:
        st->err_code = ev->error->code;
        snprintf(st->err_msg, sizeof(st->err_msg), "%s", ev->error->message);
        st->terminal = true;
        rpc_stream_close_send(s);
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&st->mu);
}

static void on_status(rpc_stream_t *s, void *ud, const rpc_status_t *status,
                      const rpc_md_t *trailers)
{
    (void)s;
    (void)trailers;
    ctl_state_t *st = ud;
    pthread_mutex_lock(&st->mu);
    st->status = *status;
    st->ended = true;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

/* Waits for SIGINT/SIGTERM (blocked in every thread).  The first cancels the request on
 * the router, so it ends with a done event (CANCELLED) and the usual summary; a second
 * exits at once with 130.  main wakes it with SIGHUP to end it once the stream is over. */
static void *signal_main(void *arg)
{
    ctl_state_t *st = arg;
    for (;;) {
        int sig = ls_signals_wait();
        pthread_mutex_lock(&st->mu);
        bool ended = st->ended, again = st->cancelled;
        if (!ended && sig != SIGHUP)
            st->cancelled = true;
        pthread_mutex_unlock(&st->mu);
        if (ended)
            return NULL;
        if (sig == SIGHUP)
            continue;
        if (again) {
            fprintf(stderr, "\nllmctl: interrupted again, leaving\n");
            _exit(130);
        }
        fprintf(stderr, "\nllmctl: cancelling %s (Ctrl-C again to leave at once)\n",
                st->request_id);
        Llmserve__V1__GenerateCancel c = LLMSERVE__V1__GENERATE_CANCEL__INIT;
        c.request_id = (char *)st->request_id;
        Llmserve__V1__GenerateRequest req = LLMSERVE__V1__GENERATE_REQUEST__INIT;
        req.kind_case = LLMSERVE__V1__GENERATE_REQUEST__KIND_CANCEL;
        req.cancel = &c;
        if (rpc_stream_send(st->stream, &req.base) != LS_OK)
            rpc_stream_cancel(st->stream); /* the stream is going: end it from this side */
    }
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

static const char *finish_name(int r)
{
    static const char *const names[] = {"unspecified", "length", "stop",    "eos",
                                        "cancelled",   "error",  "deadline"};
    return r >= 0 && r <= 6 ? names[r] : "unknown";
}

/* The trace id (33 bytes) of the router's trace context in route; false when the router
 * does not trace. */
static bool trace_of(const Llmserve__V1__GenerateStarted *route, char *id, bool *sampled)
{
    svc_trace_ctx_t c;
    if (!route || !svc_traceparent_parse(route->traceparent, &c))
        return false;
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        id[2 * i] = digits[c.trace_id[i] >> 4];
        id[2 * i + 1] = digits[c.trace_id[i] & 15];
    }
    id[32] = '\0';
    *sampled = c.flags & SVC_TRACE_SAMPLED;
    return true;
}

static const char *const PRIORITY_NAMES[] = {"unspecified", "interactive", "normal", "batch"};

static const char *priority_name(Llmserve__V1__Priority p)
{
    return (unsigned)p < 4 ? PRIORITY_NAMES[p] : "unknown";
}

/* "" (unspecified: the key's class or normal), interactive, normal or batch. */
static int parse_priority(const char *s, Llmserve__V1__Priority *out)
{
    if (!*s) {
        *out = LLMSERVE__V1__PRIORITY__PRIORITY_UNSPECIFIED;
        return 0;
    }
    for (int i = 1; i < 4; i++) {
        if (strcmp(s, PRIORITY_NAMES[i]) == 0) {
            *out = (Llmserve__V1__Priority)i;
            return 0;
        }
    }
    return -1;
}

static void print_json(const ctl_state_t *st, const char *id)
{
    FILE *f = stdout;
    fprintf(f, "{\"request_id\":");
    json_str(f, id);
    fprintf(f, ",\"text\":");
    json_str(f, st->text ? st->text : "");
    fprintf(f, ",\"tokens\":%u", st->tokens);
    char trace_id[33];
    bool sampled = false;
    if (trace_of(st->route, trace_id, &sampled))
        fprintf(f, ",\"trace_id\":\"%s\",\"trace_sampled\":%s", trace_id,
                sampled ? "true" : "false");
    if (st->route) {
        const Llmserve__V1__GenerateStarted *r = st->route;
        fprintf(f, ",\"route\":{\"pool\":");
        json_str(f, r->pool);
        fprintf(f, ",\"model\":");
        json_str(f, r->model);
        fprintf(f, ",\"model_version\":");
        json_str(f, r->model_version);
        fprintf(f, ",\"instance\":");
        json_str(f, r->instance);
        fprintf(f, ",\"cache_hit\":%s,\"complexity\":%.4f,\"route_reason\":",
                r->cache_hit ? "true" : "false", (double)r->complexity);
        json_str(f, r->route_reason);
        fprintf(f, ",\"fallback\":%s,\"fallback_reason\":", r->fallback ? "true" : "false");
        json_str(f, r->fallback_reason);
        fprintf(f, ",\"attempt\":%u,\"priority\":\"%s\",\"failover\":%s,\"resumed_tokens\":%u",
                r->attempt, priority_name(r->priority), r->failover ? "true" : "false",
                r->resumed_tokens);
        fprintf(f, ",\"failover_reason\":");
        json_str(f, r->failover_reason);
        fprintf(f, "}");
    }
    if (st->done) {
        const Llmserve__V1__GenerateDone *d = st->done;
        fprintf(f, ",\"finish_reason\":\"%s\"", finish_name(d->finish_reason));
        if (d->usage)
            fprintf(f,
                    ",\"usage\":{\"prompt_tokens\":%u,\"completion_tokens\":%u,"
                    "\"cached_prompt_tokens\":%u}",
                    d->usage->prompt_tokens, d->usage->completion_tokens,
                    d->usage->cached_prompt_tokens);
        if (d->timings) {
            const Llmserve__V1__Timings *t = d->timings;
            fprintf(f,
                    ",\"timings_us\":{\"router_queue\":%llu,\"cache_lookup\":%llu,"
                    "\"inference_queue\":%llu,\"prefill\":%llu,\"decode\":%llu,\"ttft\":%llu,"
                    "\"total\":%llu}",
                    (unsigned long long)t->router_queue_us, (unsigned long long)t->cache_lookup_us,
                    (unsigned long long)t->inference_queue_us, (unsigned long long)t->prefill_us,
                    (unsigned long long)t->decode_us, (unsigned long long)t->ttft_us,
                    (unsigned long long)t->total_us);
        }
    }
    if (st->err_code) {
        fprintf(f, ",\"error\":{\"code\":%d,\"message\":", st->err_code);
        json_str(f, st->err_msg);
        fprintf(f, "}");
    }
    fprintf(f, "}\n");
}

static void print_summary(const ctl_state_t *st)
{
    FILE *f = stderr;
    if (!st->quiet) {
        fputc('\n', stdout);
        fflush(stdout); /* the answer ends before the summary on a shared terminal */
    }
    if (st->route) {
        const Llmserve__V1__GenerateStarted *r = st->route;
        fprintf(f, "route     pool=%s model=%s version=%s instance=%s attempt=%u priority=%s\n",
                r->pool, r->model[0] ? r->model : "-",
                r->model_version[0] ? r->model_version : "-", r->instance[0] ? r->instance : "-",
                r->attempt, priority_name(r->priority));
        fprintf(f, "reason    %s\n", r->route_reason);
        if (r->fallback)
            fprintf(f, "fallback  %s\n", r->fallback_reason);
        if (r->failover)
            fprintf(f, "failover  %s (continued after %u tokens)\n", r->failover_reason,
                    r->resumed_tokens);
        fprintf(f, "cache     %s\n", r->cache_hit ? "hit" : "miss");
        char trace_id[33];
        bool sampled = false;
        if (trace_of(r, trace_id, &sampled))
            fprintf(f, "trace     %s%s\n", trace_id, sampled ? "" : " (not sampled)");
    }
    if (st->done) {
        const Llmserve__V1__GenerateDone *d = st->done;
        const Llmserve__V1__Timings *t = d->timings;
        fprintf(f, "finish    %s, %u prompt tokens, %u completion tokens\n",
                finish_name(d->finish_reason), d->usage ? d->usage->prompt_tokens : 0,
                d->usage ? d->usage->completion_tokens : 0);
        if (t) {
            fprintf(f, "ttft      %.2f ms (router), %.2f ms (seen here)\n", t->ttft_us / 1000.0,
                    st->first_token_us ? (st->first_token_us - st->t0_us) / 1000.0 : 0.0);
            fprintf(f,
                    "timings   queue %.2f ms, cache %.2f ms, inference queue %.2f ms, prefill "
                    "%.2f ms, decode %.2f ms, total %.2f ms\n",
                    t->router_queue_us / 1000.0, t->cache_lookup_us / 1000.0,
                    t->inference_queue_us / 1000.0, t->prefill_us / 1000.0, t->decode_us / 1000.0,
                    t->total_us / 1000.0);
            if (d->usage && d->usage->completion_tokens > 1 && t->decode_us > 0)
                fprintf(f, "speed     %.1f tokens/s decode\n",
                        (d->usage->completion_tokens - 1) * 1e6 / (double)t->decode_us);
        }
    }
    if (st->err_code)
        fprintf(f, "error     code=%d %s\n", st->err_code, st->err_msg);
}

static int parse_policy(const char *s, Llmserve__V1__CachePolicy *out)
{
    static const char *const names[] = {"default", "bypass", "read-only", "write-only", "force"};
    for (int i = 0; i < 5; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (Llmserve__V1__CachePolicy)i;
            return 0;
        }
    }
    return -1;
}

/* Moves words that are not flags (nor flag values) into one prompt; ls_config takes only
 * flags.  Returns the joined words (caller frees) or NULL when there are none. */
static char *take_words(int *argc, char **argv, const ls_opt_t *opts, size_t n_opts)
{
    char *words = NULL;
    size_t len = 0;
    int w = 1;
    bool rest_are_words = false;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        if (!rest_are_words && strcmp(a, "--") == 0) {
            rest_are_words = true;
            continue;
        }
        if (!rest_are_words && strncmp(a, "--", 2) == 0) {
            argv[w++] = argv[i];
            const char *name = a + 2;
            if (!strchr(name, '=')) {
                for (size_t k = 0; k < n_opts; k++) {
                    if (strcmp(opts[k].name, name) == 0 && opts[k].type != LS_OPT_BOOL &&
                        i + 1 < *argc) {
                        argv[w++] = argv[++i];
                        break;
                    }
                }
            }
            continue;
        }
        size_t n = strlen(a);
        words = realloc(words, len + n + 2);
        if (!words)
            return NULL;
        if (len)
            words[len++] = ' ';
        memcpy(words + len, a, n + 1);
        len += n;
    }
    *argc = w;
    argv[w] = NULL;
    return words;
}

int main(int argc, char **argv)
{
    ctl_config_t c = {0};
    c.router = "127.0.0.1:7000";
    c.cache_policy = "default";
    c.priority = "";
    c.timeout_ms = 0;
    c.seed = -1;
    const ls_opt_t opts[] = {
        {"router", "LLMCTL_ROUTER", LS_OPT_STRING, &c.router, "router address, host:port", 0, 0},
        {"prompt", NULL, LS_OPT_STRING, &c.prompt, "the prompt (or give it as the remaining words)",
         0, 0},
        {"chat", NULL, LS_OPT_BOOL, &c.chat,
         "send the prompt as a user chat message (the model's chat template applies)", 0, 0},
        {"system", NULL, LS_OPT_STRING, &c.system, "system message for --chat", 0, 0},
        {"pool", NULL, LS_OPT_STRING, &c.pool, "model hint: the pool to use, e.g. large", 0, 0},
        {"conversation", NULL, LS_OPT_STRING, &c.conversation,
         "conversation id (same id, same instance)", 0, 0},
        {"tenant", NULL, LS_OPT_STRING, &c.tenant, "tenant", 0, 0},
        {"cache-policy", NULL, LS_OPT_STRING, &c.cache_policy,
         "default, bypass, read-only, write-only or force", 0, 0},
        {"priority", NULL, LS_OPT_STRING, &c.priority,
         "interactive, normal or batch (empty: the API key's class, else normal)", 0, 0},
        {"request-id", NULL, LS_OPT_STRING, &c.request_id, "request id (default: llmctl-PID)", 0,
         0},
        {"max-tokens", NULL, LS_OPT_INT, &c.max_tokens, "most tokens to generate (0: default)", 0,
         1 << 20},
        {"temperature", NULL, LS_OPT_DOUBLE, &c.temperature, "0 = greedy", 0, 2},
        {"ignore-eos", NULL, LS_OPT_BOOL, &c.ignore_eos,
         "generate max-tokens even past end-of-sequence (for load tests)", 0, 0},
        {"seed", NULL, LS_OPT_INT, &c.seed, "sampling seed (-1: none)", -1, 9.2e18},
        {"timeout-ms", NULL, LS_OPT_INT, &c.timeout_ms, "request deadline in ms (0: none)", 0,
         4294967295.0},
        {"json", NULL, LS_OPT_BOOL, &c.json, "print one JSON object instead of text", 0, 0},
        {"quiet", NULL, LS_OPT_BOOL, &c.quiet, "print only the summary", 0, 0},
        {"traceparent", NULL, LS_OPT_STRING, &c.traceparent,
         "W3C trace context to continue (00-TRACEID-SPANID-FLAGS); the trace id is printed "
         "either way when the router traces",
         0, 0},
        SVC_CLIENT_OPTIONS(&c.sec),
    };
    ls_config_t conf = {.program = "llmctl",
                        .summary = "Send a prompt to the llmserve router and stream the answer.",
                        .opts = opts,
                        .n_opts = sizeof(opts) / sizeof(opts[0])};
    char *words = take_words(&argc, argv, opts, conf.n_opts);
    char err[256];
    int rc = ls_config_load(&conf, argc, argv, err, sizeof(err));
    if (rc == LS_CONFIG_HELP) {
        printf("\nusage: llmctl [flags] PROMPT WORDS...\n");
        free(words);
        return 0;
    }
    if (rc != LS_OK) {
        fprintf(stderr, "llmctl: %s\n", err);
        free(words);
        return 2;
    }
    if (svc_client_check(&c.sec, err, sizeof(err)) != LS_OK) {
        fprintf(stderr, "llmctl: %s\n", err);
        free(words);
        return 2;
    }
    svc_trace_ctx_t tc;
    if (c.traceparent && !svc_traceparent_parse(c.traceparent, &tc)) {
        fprintf(stderr,
                "llmctl: --traceparent '%s' is not a W3C traceparent "
                "(00-<32 lower-case hex>-<16 lower-case hex>-<2 hex>, ids not all zero)\n",
                c.traceparent);
        free(words);
        return 2;
    }
    const char *prompt = c.prompt ? c.prompt : words;
    Llmserve__V1__CachePolicy policy;
    Llmserve__V1__Priority priority;
    bool bad_priority = parse_priority(c.priority, &priority) != 0;
    if (!prompt || !*prompt || parse_policy(c.cache_policy, &policy) != 0 || bad_priority) {
        fprintf(stderr, "llmctl: %s (see --help)\n",
                !prompt || !*prompt ? "no prompt given"
                : bad_priority      ? "unknown --priority"
                                    : "unknown --cache-policy");
        free(words);
        return 2;
    }
    ls_log_set_level(LS_LOG_ERROR);

    Llmserve__V1__SamplingParams sp = LLMSERVE__V1__SAMPLING_PARAMS__INIT;
    sp.max_tokens = (int32_t)c.max_tokens;
    sp.temperature = (float)c.temperature;
    sp.ignore_eos = c.ignore_eos;
    if (c.seed >= 0) {
        sp.seed = (uint64_t)c.seed;
        sp.has_seed = true;
    }
    Llmserve__V1__ChatMessage sys = LLMSERVE__V1__CHAT_MESSAGE__INIT,
                              user = LLMSERVE__V1__CHAT_MESSAGE__INIT;
    Llmserve__V1__ChatMessage *msgs[2];
    char idbuf[64];
    snprintf(idbuf, sizeof(idbuf), "llmctl-%d", (int)getpid());
    Llmserve__V1__GenerateSubmit sub = LLMSERVE__V1__GENERATE_SUBMIT__INIT;
    sub.request_id = (char *)(c.request_id ? c.request_id : idbuf);
    if (c.chat) {
        size_t n = 0;
        if (c.system) {
            sys.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_SYSTEM;
            sys.content = (char *)c.system;
            msgs[n++] = &sys;
        }
        user.role = LLMSERVE__V1__CHAT_ROLE__CHAT_ROLE_USER;
        user.content = (char *)prompt;
        msgs[n++] = &user;
        sub.n_messages = n;
        sub.messages = msgs;
    } else {
        sub.prompt = (char *)prompt;
    }
    sub.sampling = &sp;
    sub.model_hint = (char *)(c.pool ? c.pool : "");
    sub.conversation_id = (char *)(c.conversation ? c.conversation : "");
    sub.tenant = (char *)(c.tenant ? c.tenant : "");
    sub.cache_policy = policy;
    sub.priority = priority;
    sub.timeout_ms = (uint32_t)c.timeout_ms;
    Llmserve__V1__GenerateRequest req = LLMSERVE__V1__GENERATE_REQUEST__INIT;
    req.kind_case = LLMSERVE__V1__GENERATE_REQUEST__KIND_SUBMIT;
    req.submit = &sub;

    ctl_state_t st = {0};
    pthread_mutex_init(&st.mu, NULL);
    pthread_cond_init(&st.cv, NULL);
    st.json = c.json;
    st.quiet = c.quiet;
    st.request_id = sub.request_id;
    if (ls_signals_block() != LS_OK) { /* before any thread, so all inherit the mask */
        fprintf(stderr, "llmctl: cannot set up signal handling\n");
        return 3;
    }
    rpc_client_t *client = rpc_client_create(1);
    rpc_channel_config_t chc;
    rpc_channel_config_init(&chc);
    svc_client_channel(&c.sec, &chc);
    rpc_channel_t *ch = rpc_channel_create(client, c.router, &chc);
    if (!ch) {
        fprintf(stderr, "llmctl: cannot use the TLS files (see --tls-ca, --tls-cert)\n");
        rpc_client_destroy(client);
        free(words);
        return 2;
    }
    rpc_md_t md = RPC_MD_INIT;
    svc_client_metadata(&c.sec, &md);
    if (c.traceparent)
        rpc_md_add(&md, "traceparent", c.traceparent);
    rpc_stream_handler_t h = {on_message, on_status};
    rpc_call_opts_t copts = {.wait_for_ready = false, .metadata = &md};
    st.t0_us = ls_now_us();
    rpc_stream_t *s =
        rpc_stream_open(ch, "/llmserve.v1.Router/Generate",
                        &llmserve__v1__generate_event__descriptor, &h, &st, &copts, 0);
    int exit_code = 0;
    if (!s || rpc_stream_send(s, &req.base) != LS_OK) {
        fprintf(stderr, "llmctl: cannot open a stream to %s\n", c.router);
        exit_code = 3;
    }
    if (s) {
        st.stream = s;
        pthread_t sig_thread;
        bool sig_running = pthread_create(&sig_thread, NULL, signal_main, &st) == 0;
        pthread_mutex_lock(&st.mu);
        while (!st.ended)
            pthread_cond_wait(&st.cv, &st.mu);
        pthread_mutex_unlock(&st.mu);
        if (sig_running) {
            pthread_kill(sig_thread, SIGHUP);
            pthread_join(sig_thread, NULL);
        }
        rpc_stream_release(s);
    }
    if (exit_code == 0 && !st.terminal) {
        fprintf(stderr, "llmctl: router %s: %s (code %d)\n", c.router, st.status.details,
                (int)st.status.code);
        exit_code = 3;
    } else if (exit_code == 0) {
        if (c.json)
            print_json(&st, sub.request_id);
        else
            print_summary(&st);
        exit_code = st.err_code ? 1 : st.cancelled ? 130 : 0;
    }
    if (st.route)
        protobuf_c_message_free_unpacked(&st.route->base, NULL);
    if (st.done)
        protobuf_c_message_free_unpacked(&st.done->base, NULL);
    free(st.text);
    rpc_channel_destroy(ch);
    rpc_client_destroy(client);
    rpc_md_clear(&md);
    pthread_cond_destroy(&st.cv);
    pthread_mutex_destroy(&st.mu);
    free(words);
    return exit_code;
}
