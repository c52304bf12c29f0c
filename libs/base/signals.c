#define _POSIX_C_SOURCE 200809L
#include "signals.h"

#include "err.h"

#include <pthread.h>
#include <signal.h>

static void stop_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
}

int ls_signals_block(void)
{
    sigset_t set;
    stop_set(&set);
    signal(SIGPIPE, SIG_IGN);
    return pthread_sigmask(SIG_BLOCK, &set, NULL) == 0 ? LS_OK : LS_ERR_INTERNAL;
}

int ls_signals_wait(void)
{
    sigset_t set;
    stop_set(&set);
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    return sig;
}
