/*
 * echo_server.c - llmserve-test-echo: the transport's test service as a real process.
 *
 * Prints "LISTENING port=N" on standard output once serving, then runs until SIGTERM
 * or SIGINT and shuts down gracefully (--grace-ms), exiting 0 when every call and
 * worker has ended.  Delayed and repeated replies run on worker threads, as a real
 * service's slow work would, never on the completion-queue threads.
 *
 * Lock rules: echo_call_t.mu guards its counters; g_jobs_mu guards the job count.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "base/signals.h"
#include "echo.pb-c.h"
#include "rpc/codec.h"
#include "rpc/server.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ECHO_MAX_JOBS 512 /* concurrent worker threads; more is RESOURCE_EXHAUSTED */

typedef struct {
    const char *listen;
    int64_t threads;
    int64_t max_write_queue;
    int64_t grace_ms;
    const char *tls_cert;
    const char *tls_key;
    const char *tls_client_ca;
} echo_config_t;

static void echo_config_init(echo_config_t *cfg)
{
    cfg->listen = "127.0.0.1:0"; /* port 0: any free port, printed at start */
    cfg->threads = 0;            /* 0: one per core */
    cfg->max_write_queue = 4096; /* messages per call */
    cfg->grace_ms = 2000;        /* ms calls may take to finish at shutdown */
    cfg->tls_cert = NULL;
    cfg->tls_key = NULL;
    cfg->tls_client_ca = NULL;
}

/* Per-call state, shared by the call and its jobs. */
typedef struct {
    pthread_mutex_t mu;
    int refs;         /* the call's (until on_done) plus one per job */
    int pending_jobs; /* jobs not yet finished */
    bool half_closed;
    bool finished;
    char metadata[512];
    int64_t remaining_us;
} echo_call_t;

typedef struct {
    rpc_call_t *call;
    echo_call_t *ec;
    Llmserve__Test__EchoRequest *req; /* owned copy */
    bool unary;
} echo_job_t;

static pthread_mutex_t g_jobs_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_jobs_cv = PTHREAD_COND_INITIALIZER;
static int g_jobs;

static void ec_unref(echo_call_t *ec)
{
    pthread_mutex_lock(&ec->mu);
    bool last = --ec->refs == 0;
    pthread_mutex_unlock(&ec->mu);
    if (last) {
        pthread_mutex_destroy(&ec->mu);
        free(ec);
    }
}

static void describe_metadata(const rpc_md_t *md, char *out, size_t len)
{
    static const char *const keys[] = {"traceparent", "authorization", "x-echo"};
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < 3; i++) {
        const char *v = rpc_md_get(md, keys[i], NULL);
        if (v && used < len) {
            int n = snprintf(out + used, len - used, "%s=%s;", keys[i], v);
            used += n > 0 ? (size_t)n : 0;
        }
    }
}

static void *on_start(rpc_call_t *call, void *ctx)
{
    (void)ctx;
    echo_call_t *ec = ls_xcalloc(1, sizeof(*ec));
    pthread_mutex_init(&ec->mu, NULL);
    ec->refs = 1;
    describe_metadata(rpc_call_metadata(call), ec->metadata, sizeof(ec->metadata));
    int64_t left = rpc_call_remaining_us(call);
    ec->remaining_us = left == INT64_MAX ? -1 : left;
    rpc_call_add_trailer(call, "x-echo-trailer", "done");
    return ec;
}

/* Sends reply number index of req; returns the rpc_call_send/reply result. */
static int send_reply(rpc_call_t *call, echo_call_t *ec, const Llmserve__Test__EchoRequest *req,
                      int index, bool unary)
{
    Llmserve__Test__EchoReply reply = LLMSERVE__TEST__ECHO_REPLY__INIT;
    reply.text = req->text;
    reply.seq = req->seq;
    reply.index = index;
    reply.remaining_us = ec->remaining_us;
    reply.metadata = ec->metadata;
    uint8_t *filler = NULL;
    if (req->payload_bytes > 0) {
        filler = malloc((size_t)req->payload_bytes);
        if (!filler)
            return LS_ERR_NOMEM;
        memset(filler, 'x', (size_t)req->payload_bytes);
        reply.payload.data = filler;
        reply.payload.len = (size_t)req->payload_bytes;
    }
    int rc = unary ? rpc_call_reply(call, &reply.base) : rpc_call_send(call, &reply.base);
    free(filler);
    return rc;
}

/* Finishes a stream once the client half-closed and no job is left. */
static void maybe_finish(rpc_call_t *call, echo_call_t *ec)
{
    pthread_mutex_lock(&ec->mu);
    bool fin = ec->half_closed && ec->pending_jobs == 0 && !ec->finished;
    if (fin)
        ec->finished = true;
    pthread_mutex_unlock(&ec->mu);
    if (fin)
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void *job_main(void *arg)
{
    echo_job_t *job = arg;
    const Llmserve__Test__EchoRequest *req = job->req;
    ls_sleep_us((int64_t)req->sleep_ms * 1000);
    int repeat = req->repeat > 0 ? req->repeat : 1;
    for (int i = 0; i < repeat; i++) {
        if (i > 0)
            ls_sleep_us(req->interval_us);
        if (send_reply(job->call, job->ec, req, i, job->unary) != LS_OK)
            break; /* cancelled, over or overflowed: the client has its status */
    }
    pthread_mutex_lock(&job->ec->mu);
    job->ec->pending_jobs--;
    pthread_mutex_unlock(&job->ec->mu);
    if (!job->unary)
        maybe_finish(job->call, job->ec);
    ec_unref(job->ec);
    rpc_call_unref(job->call);
    llmserve__test__echo_request__free_unpacked(job->req, NULL);
    free(job);

    pthread_mutex_lock(&g_jobs_mu);
    if (--g_jobs == 0)
        pthread_cond_broadcast(&g_jobs_cv);
    pthread_mutex_unlock(&g_jobs_mu);
    return NULL;
}

static int start_job(rpc_call_t *call, echo_call_t *ec, const Llmserve__Test__EchoRequest *req,
                     bool unary)
{
    pthread_mutex_lock(&g_jobs_mu);
    if (g_jobs >= ECHO_MAX_JOBS) {
        pthread_mutex_unlock(&g_jobs_mu);
        return LS_ERR_FULL;
    }
    g_jobs++;
    pthread_mutex_unlock(&g_jobs_mu);

    /* Copy the request: the library frees its message when on_message returns. */
    echo_job_t *job = ls_xcalloc(1, sizeof(*job));
    job->req = (Llmserve__Test__EchoRequest *)rpc_codec_copy(&req->base);
    job->call = call;
    job->ec = ec;
    job->unary = unary;
    rpc_call_ref(call);
    pthread_mutex_lock(&ec->mu);
    ec->refs++;
    ec->pending_jobs++;
    pthread_mutex_unlock(&ec->mu);

    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int rc = pthread_create(&t, &attr, job_main, job);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        LS_LOG_ERROR("echo", "cannot start worker thread");
        job_main(job); /* undoes the counts; sending from here is still correct */
    }
    return LS_OK;
}

static void handle(rpc_call_t *call, echo_call_t *ec, const Llmserve__Test__EchoRequest *req,
                   bool unary)
{
    if (req->fail_code != 0) {
        rpc_call_finish(call, (grpc_status_code)req->fail_code, "failure requested");
        return;
    }
    if (req->sleep_ms > 0 || req->repeat > 1) {
        if (start_job(call, ec, req, unary) != LS_OK)
            rpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many delayed requests");
        return;
    }
    send_reply(call, ec, req, 0, unary);
}

static void unary_on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    handle(call, state, (const Llmserve__Test__EchoRequest *)msg, true);
}

static void stream_on_message(rpc_call_t *call, void *state, const ProtobufCMessage *msg)
{
    handle(call, state, (const Llmserve__Test__EchoRequest *)msg, false);
}

static void stream_on_half_close(rpc_call_t *call, void *state)
{
    echo_call_t *ec = state;
    pthread_mutex_lock(&ec->mu);
    ec->half_closed = true;
    pthread_mutex_unlock(&ec->mu);
    maybe_finish(call, ec);
}

static void on_done(rpc_call_t *call, void *state)
{
    (void)call;
    ec_unref(state);
}

int main(int argc, char **argv)
{
    echo_config_t cfg;
    echo_config_init(&cfg);
    const ls_opt_t opts[] = {
        {"listen", "ECHO_LISTEN", LS_OPT_STRING, &cfg.listen, "address to serve on, host:port",
         0, 0},
        {"threads", "ECHO_THREADS", LS_OPT_INT, &cfg.threads,
         "completion-queue threads, 0 = one per core", 0, 256},
        {"max-write-queue", "ECHO_MAX_WRITE_QUEUE", LS_OPT_INT, &cfg.max_write_queue,
         "messages queued per call before it is cancelled", 1, 1e9},
        {"grace-ms", "ECHO_GRACE_MS", LS_OPT_INT, &cfg.grace_ms,
         "milliseconds calls may take to finish at shutdown", 0, 3.6e6},
        {"tls-cert", "ECHO_TLS_CERT", LS_OPT_STRING, &cfg.tls_cert,
         "PEM certificate chain; with --tls-key serves TLS", 0, 0},
        {"tls-key", "ECHO_TLS_KEY", LS_OPT_STRING, &cfg.tls_key, "PEM private key", 0, 0},
        {"tls-client-ca", "ECHO_TLS_CLIENT_CA", LS_OPT_STRING, &cfg.tls_client_ca,
         "PEM CA that client certificates must chain to (mutual TLS)", 0, 0},
    };
    ls_config_t conf = {.program = "llmserve-test-echo", .summary = "Echo service for transport tests.", .opts = opts, .n_opts = sizeof(opts) / sizeof(opts[0])};
    char err[256];
    int rc = ls_config_load(&conf, argc, argv, err, sizeof(err));
    if (rc == LS_CONFIG_HELP)
        return 0;
    if (rc != LS_OK) {
        fprintf(stderr, "llmserve-test-echo: %s\n", err);
        return 2;
    }
    ls_signals_block();
    ls_config_log(&conf, "echo");

    rpc_server_config_t scfg;
    rpc_server_config_init(&scfg);
    scfg.threads = (int)cfg.threads;
    scfg.max_write_queue = (size_t)cfg.max_write_queue;
    scfg.name = "echo";
    rpc_server_t *srv = rpc_server_create(&scfg);
    if (!srv)
        return 1;
    rpc_tls_server_t tls = {cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca};
    int port = 0;
    rpc_handler_t unary = {
        .on_start = on_start, .on_message = unary_on_message, .on_done = on_done};
    rpc_handler_t stream = {.on_start = on_start,
                            .on_message = stream_on_message,
                            .on_half_close = stream_on_half_close,
                            .on_done = on_done};
    const ProtobufCMessageDescriptor *req = &llmserve__test__echo_request__descriptor;
    if (rpc_server_listen(srv, cfg.listen, cfg.tls_cert ? &tls : NULL, &port) != LS_OK ||
        rpc_server_add_method(srv, "/llmserve.test.Echo/Unary", RPC_UNARY, req, &unary, NULL) ||
        rpc_server_add_method(srv, "/llmserve.test.Echo/Stream", RPC_STREAM, req, &stream,
                              NULL) ||
        rpc_server_start(srv) != LS_OK) {
        fprintf(stderr, "llmserve-test-echo: cannot serve on %s\n", cfg.listen);
        rpc_server_destroy(srv);
        return 1;
    }
    printf("LISTENING port=%d\nSERVING\n", port);
    fflush(stdout);

    int sig = ls_signals_wait();
    LS_LOG_INFO("echo", "stopping signal=%d", sig);
    rpc_server_shutdown(srv, cfg.grace_ms);
    pthread_mutex_lock(&g_jobs_mu);
    while (g_jobs > 0)
        pthread_cond_wait(&g_jobs_cv, &g_jobs_mu);
    pthread_mutex_unlock(&g_jobs_mu);
    rpc_server_destroy(srv);
    return 0;
}
