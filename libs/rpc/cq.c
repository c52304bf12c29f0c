#define _GNU_SOURCE
#include "cq.h"

#include "base/err.h"
#include "base/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct rpc__cqpool {
    int n;
    bool started;
    atomic_uint next;
    grpc_completion_queue **cqs;
    pthread_t *threads;
};

int rpc__cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

rpc__cqpool_t *rpc__cqpool_create(int n)
{
    LS_ASSERT(n >= 1);
    rpc__cqpool_t *p = ls_xcalloc(1, sizeof(*p));
    p->n = n;
    p->cqs = ls_xcalloc((unsigned long)n, sizeof(*p->cqs));
    p->threads = ls_xcalloc((unsigned long)n, sizeof(*p->threads));
    for (int i = 0; i < n; i++)
        p->cqs[i] = grpc_completion_queue_create_for_next(NULL);
    return p;
}

static void *poll_main(void *arg)
{
    grpc_completion_queue *cq = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE) {
            rpc__tag_t *tag = ev.tag;
            tag->fn(tag, ev.success != 0);
        }
    }
    return NULL;
}

int rpc__cqpool_start(rpc__cqpool_t *p, const char *name)
{
    for (int i = 0; i < p->n; i++) {
        if (pthread_create(&p->threads[i], NULL, poll_main, p->cqs[i]) != 0) {
            LS_LOG_ERROR("rpc", "cannot start poller thread index=%d", i);
            for (int j = 0; j < i; j++)
                grpc_completion_queue_shutdown(p->cqs[j]);
            for (int j = 0; j < i; j++)
                pthread_join(p->threads[j], NULL);
            return LS_ERR_INTERNAL;
        }
        char tname[32]; /* the kernel keeps 15 bytes of it */
        snprintf(tname, sizeof(tname), "%.8s-cq%d", name, i % 100);
        tname[15] = '\0';
        pthread_setname_np(p->threads[i], tname);
    }
    p->started = true;
    return LS_OK;
}

int rpc__cqpool_size(const rpc__cqpool_t *p)
{
    return p->n;
}

grpc_completion_queue *rpc__cqpool_at(rpc__cqpool_t *p, int i)
{
    return p->cqs[i];
}

grpc_completion_queue *rpc__cqpool_next(rpc__cqpool_t *p)
{
    return p->cqs[atomic_fetch_add(&p->next, 1) % (unsigned)p->n];
}

void rpc__cqpool_destroy(rpc__cqpool_t *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n; i++)
        grpc_completion_queue_shutdown(p->cqs[i]);
    for (int i = 0; i < p->n; i++) {
        if (p->started) {
            pthread_join(p->threads[i], NULL);
        } else {
            /* Never started: drain here so pending tags still get their failure. */
            poll_main(p->cqs[i]);
        }
        grpc_completion_queue_destroy(p->cqs[i]);
    }
    free(p->cqs);
    free(p->threads);
    free(p);
}
