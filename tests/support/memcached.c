#define _GNU_SOURCE
#include "memcached.h"

#include "base/clock.h"
#include "net.h"
#include "proc.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int test_memcached_start(test_memcached_t *m, int port)
{
    const char *bin = getenv("LLMSERVE_MEMCACHED");
    if (!bin || !*bin)
        bin = "/usr/bin/memcached";
    for (int attempt = 0; attempt < 5; attempt++) {
        int p = port ? port : test_free_port();
        if (p < 0)
            return -1;
        char ps[16];
        snprintf(ps, sizeof(ps), "%d", p);
        /* -U 0: no UDP.  -u root only matters (and is required) when run as root. */
        char *argv[] = {(char *)bin, "-l",   "127.0.0.1", "-p", ps,   "-U", "0",
                        "-u",        "root", "-m",        "64", "-t", "2",  NULL};
        pid_t pid = test_spawn(argv);
        if (pid < 0)
            return -1;
        int64_t end = ls_now_us() + 5000000;
        while (ls_now_us() < end) {
            if (test_can_connect(p)) {
                m->pid = pid;
                m->port = p;
                return 0;
            }
            if (waitpid(pid, NULL, WNOHANG) == pid) {
                pid = 0; /* exited: port taken? try another */
                break;
            }
            ls_sleep_us(10000);
        }
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        if (port)
            ls_sleep_us(200000); /* restart on a fixed port: the old socket may linger */
    }
    return -1;
}

void test_memcached_stop(test_memcached_t *m, int sig)
{
    if (m->pid <= 0)
        return;
    kill(m->pid, sig);
    waitpid(m->pid, NULL, 0);
    m->pid = 0;
}

char *test_memcached_config(const test_memcached_t *m, char *buf, size_t cap)
{
    snprintf(buf, cap, "--SERVER=127.0.0.1:%d", m->port);
    return buf;
}
