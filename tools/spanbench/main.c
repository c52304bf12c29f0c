/*
 * llmserve-spanbench - what one span costs in the OTLP/HTTP exporter (libs/svc/
 * tracer_otlp.c): on the thread that makes it (start, attributes, an event, end) and on
 * the exporter's thread (JSON, HTTP), in CPU time per span.
 *
 * The spans look like the router's SERVER span (about twenty attributes of every type,
 * an event) and go to a receiver in a child process of its own that reads each request
 * and answers 200 {} (so that its work is not counted here).  Threads make spans in
 * rounds, each round waiting until the queue has room: nothing is dropped.
 *
 *   llmserve-spanbench [--spans N] [--threads T] [--batch N]
 *   llmserve-spanbench --sink [--listen-port P]
 *
 * --sink runs that receiver alone (a process per connection), for benchmarks of the
 * services (tools/tracebench.sh): an OTLP/HTTP endpoint that reads every export and
 * answers 200 {} at little cost, as a Jaeger on a machine of its own would cost the
 * services nothing.  It prints "LISTENING port=N" and "SERVING" like the services, and
 * stops on SIGTERM.
 */
#define _GNU_SOURCE
#include "base/clock.h"
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "svc/tracer_otlp.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- the receiver: a child process answering every request 200 {} ------------------- */

static void serve_conn(int fd)
{
    static char buf[1 << 16];
    size_t have = 0;
    for (;;) {
        char *end = have ? memmem(buf, have, "\r\n\r\n", 4) : NULL;
        if (!end) {
            if (have == sizeof(buf))
                return;
            ssize_t n = read(fd, buf + have, sizeof(buf) - have);
            if (n <= 0)
                return;
            have += (size_t)n;
            continue;
        }
        size_t head = (size_t)(end - buf) + 4;
        const char *cl = memmem(buf, head, "Content-Length:", 15);
        if (!cl)
            cl = memmem(buf, head, "content-length:", 15);
        size_t body = cl ? strtoul(cl + 15, NULL, 10) : 0;
        size_t in_buf = have - head < body ? have - head : body;
        size_t left = body - in_buf;
        memmove(buf, buf + head + in_buf, have - head - in_buf);
        have -= head + in_buf;
        while (left) {
            ssize_t n = read(fd, buf + have, sizeof(buf) - have);
            if (n <= 0)
                return;
            size_t take = (size_t)n < left ? (size_t)n : left;
            memmove(buf + have, buf + have + take, (size_t)n - take);
            have += (size_t)n - take;
            left -= take;
        }
        static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 "Content-Length: 2\r\n\r\n{}";
        if (write(fd, ok, sizeof(ok) - 1) < 0)
            return;
    }
}

/* A listening socket on 127.0.0.1:port (0: any); *port gets the one bound. */
static int listen_on(int *port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)*port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int one = 1;
    if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(s, 64) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) != 0) {
        if (s >= 0)
            close(s);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return s;
}

/* Accepts for ever, a child process per connection (exporters keep theirs open). */
static void sink_loop(int s)
{
    signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0)
            _exit(0);
        if (fork() == 0) {
            close(s);
            serve_conn(c);
            _exit(0);
        }
        close(c);
    }
}

static pid_t start_receiver(int *port)
{
    *port = 0;
    int s = listen_on(port);
    if (s < 0)
        return -1;
    pid_t pid = fork();
    if (pid != 0) {
        close(s);
        return pid;
    }
    sink_loop(s);
    return 0;
}

/* ---- spans -------------------------------------------------------------------------- */

typedef struct {
    svc_tracer_t *t;
    long spans;
    size_t room; /* a round waits until the queue holds at most this many */
    double cpu_s;
} worker_t;

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void one_span(svc_tracer_t *t, long i)
{
    static const char *const reasons[] = {"length"};
    svc_span_t *s = svc_span_start(t, "llmserve.v1.Router/Generate", SVC_SPAN_SERVER, NULL);
    svc_span_set_str(s, "rpc.system", "grpc");
    svc_span_set_str(s, "rpc.service", "llmserve.v1.Router");
    svc_span_set_str(s, "rpc.method", "Generate");
    svc_span_set_str(s, "llmserve.request_id", "bench-request-0001");
    svc_span_set_str(s, "gen_ai.operation.name", "text_completion");
    svc_span_set_str(s, "gen_ai.request.model", "small");
    svc_span_set_int(s, "gen_ai.request.max_tokens", 16);
    svc_span_set_double(s, "gen_ai.request.temperature", 0.7);
    svc_span_set_str(s, "llmserve.pool", "small");
    svc_span_set_double(s, "llmserve.complexity", 0.125 + (double)(i % 7) / 100);
    svc_span_set_str(s, "llmserve.cache.policy", "lookup_store");
    svc_span_set_str(s, "llmserve.cache.hit_kind", "miss");
    svc_span_set_str(s, "gen_ai.response.model", "stories15M");
    svc_span_set_str(s, "llmserve.instance", "10.0.12.7:50061");
    svc_span_set_int(s, "llmserve.attempts", 1);
    svc_span_set_int(s, "llmserve.retries", 0);
    svc_span_set_int(s, "gen_ai.usage.input_tokens", 37);
    svc_span_set_int(s, "gen_ai.usage.output_tokens", 16);
    svc_span_set_strs(s, "gen_ai.response.finish_reasons", reasons, 1);
    svc_span_event(s, "first_token");
    svc_span_end(s, 0, NULL);
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    double cpu = 0;
    for (long done = 0; done < w->spans;) {
        svc_otlp_stats_t st;
        svc_otlp_tracer_stats(w->t, &st);
        if (st.queued > w->room) {
            ls_sleep_us(200);
            continue;
        }
        long n = w->spans - done < 256 ? w->spans - done : 256;
        double c0 = thread_cpu_s();
        for (long i = 0; i < n; i++)
            one_span(w->t, done + i);
        cpu += thread_cpu_s() - c0;
        done += n;
    }
    w->cpu_s = cpu;
    return NULL;
}

static double process_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    int64_t spans = 200000, threads = 2, batch = 512, listen_port = 0;
    bool sink = false;
    const ls_opt_t opts[] = {
        {"sink", NULL, LS_OPT_BOOL, &sink, "only run the receiver (see the top of main.c)", 0, 0},
        {"listen-port", NULL, LS_OPT_INT, &listen_port, "--sink's port on 127.0.0.1 (0: any)", 0,
         65535},
        {"spans", NULL, LS_OPT_INT, &spans, "spans to make, in all", 1, 1e9},
        {"threads", NULL, LS_OPT_INT, &threads, "threads making them", 1, 64},
        {"batch", NULL, LS_OPT_INT, &batch, "spans per export request (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)",
         1, 65536},
    };
    ls_config_t conf = {.program = "llmserve-spanbench",
                        .summary = "CPU time per span of the OTLP/HTTP exporter.",
                        .opts = opts,
                        .n_opts = sizeof(opts) / sizeof(opts[0])};
    char err[256];
    int rc = ls_config_load(&conf, argc, argv, err, sizeof(err));
    if (rc == LS_CONFIG_HELP)
        return 0;
    if (rc != LS_OK) {
        fprintf(stderr, "llmserve-spanbench: %s\n", err);
        return 2;
    }
    int port;
    if (sink) {
        port = (int)listen_port;
        int s = listen_on(&port);
        if (s < 0) {
            fprintf(stderr, "llmserve-spanbench: cannot listen on port %d\n", port);
            return 1;
        }
        printf("LISTENING port=%d\nSERVING\n", port);
        fflush(stdout);
        sink_loop(s);
        return 0;
    }
    pid_t rx = start_receiver(&port);
    if (rx < 0) {
        fprintf(stderr, "llmserve-spanbench: cannot start the receiver\n");
        return 1;
    }
    svc_otlp_config_t cfg;
    svc_otlp_config_init(&cfg, "llmserve-spanbench");
    cfg.enabled = true;
    snprintf(cfg.endpoint, sizeof(cfg.endpoint), "http://127.0.0.1:%d/v1/traces", port);
    cfg.schedule_delay_ms = 200;
    cfg.max_export_batch_size = (size_t)batch;
    cfg.max_queue_size = (size_t)batch * 16;
    svc_tracer_t *t = svc_otlp_tracer_create(&cfg);
    if (!t) {
        kill(rx, SIGTERM);
        return 1;
    }
    svc_otlp_tracer_set_instance(t, "127.0.0.1:1");
    worker_t *w = calloc((size_t)threads, sizeof(*w));
    pthread_t *th = calloc((size_t)threads, sizeof(*th));
    double p0 = process_cpu_s();
    int64_t t0 = ls_now_us();
    for (int64_t i = 0; i < threads; i++) {
        w[i].t = t;
        w[i].spans = spans / threads + (i < spans % threads);
        w[i].room = cfg.max_queue_size - (size_t)threads * 256;
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    double made_cpu = 0;
    for (int64_t i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        made_cpu += w[i].cpu_s;
    }
    svc_otlp_stats_t st;
    for (;;) {
        svc_otlp_tracer_stats(t, &st);
        if (st.exported + st.dropped + st.failed >= (uint64_t)spans)
            break;
        ls_sleep_us(1000);
    }
    double wall = (ls_now_us() - t0) / 1e6;
    double total_cpu = process_cpu_s() - p0;
    printf("spans %lld (%lld threads), exported %llu, dropped %llu, failed %llu, %llu requests, "
           "%.2f s\n",
           (long long)spans, (long long)threads, (unsigned long long)st.exported,
           (unsigned long long)st.dropped, (unsigned long long)st.failed,
           (unsigned long long)st.requests, wall);
    printf("  making a span (start, 19 attributes, an event, end)   %.2f us CPU\n",
           made_cpu / (double)spans * 1e6);
    printf("  exporting it (JSON, HTTP; the exporter's thread)      %.2f us CPU\n",
           (total_cpu - made_cpu) / (double)spans * 1e6);
    printf("  in all                                                %.2f us CPU per span\n",
           total_cpu / (double)spans * 1e6);
    svc_tracer_destroy(t);
    kill(rx, SIGTERM);
    waitpid(rx, NULL, 0);
    free(w);
    free(th);
    return st.exported == (uint64_t)spans ? 0 : 1;
}
