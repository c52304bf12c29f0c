/*
 * memcached.h - a real memcached process on a loopback port, for tests that need one of
 * their own (to kill, freeze or restart it; tools/test.sh's shared one is
 * LLMSERVE_TEST_MEMCACHED).
 *
 * The binary is $LLMSERVE_MEMCACHED when set, else /usr/bin/memcached.  It listens on
 * 127.0.0.1 over TCP only, with 64 MB and 2 threads.  Not thread-safe: one test thread
 * starts and stops a given test_memcached_t.
 */
#ifndef TEST_MEMCACHED_H
#define TEST_MEMCACHED_H

#include <stddef.h>
#include <sys/types.h>

typedef struct {
    pid_t pid; /* 0 when not running */
    int port;  /* kept after a stop, for a restart on the same port */
} test_memcached_t;

/* Starts memcached on 127.0.0.1:port (0 = a free port; else that port, for a restart)
 * and waits up to 5 s until it accepts connections.  A process that exits at once (its
 * port taken, or an old socket still bound) is tried again, up to 5 times.  Returns 0
 * with m filled, or -1 with nothing left running. */
int test_memcached_start(test_memcached_t *m, int port);

/* Sends sig (SIGTERM; SIGKILL for a crash) and reaps the process.  No-op when m is not
 * running. */
void test_memcached_stop(test_memcached_t *m, int sig);

/* Writes the libmemcached config string for m ("--SERVER=127.0.0.1:port") into buf
 * (cap bytes) and returns buf. */
char *test_memcached_config(const test_memcached_t *m, char *buf, size_t cap);

#endif
