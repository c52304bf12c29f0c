/*
 * proc.h - start and stop real service processes from tests.
 *
 * A service started here prints "LISTENING port=N" on standard output once its port is
 * bound and "SERVING" once it is ready (the service runtime's lifecycle, libs/svc);
 * test_proc_start waits for both and returns the port.  A service that also serves HTTP
 * (the metrics collector) prints "HTTP port=N" between the two.
 */
#ifndef TEST_PROC_H
#define TEST_PROC_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;
    int port;
    int http_port; /* from an "HTTP port=N" line before SERVING; 0 when none */
    int out_fd;    /* read end of the child's standard output */
} test_proc_t;

/* Starts argv[0] (a path) with argv and waits up to timeout_ms for its LISTENING and
 * SERVING lines.
 * Returns 0 with p filled, or -1 (the child, if any, is killed). */
int test_proc_start(test_proc_t *p, char *const argv[], int timeout_ms);

/* Starts argv[0] (a path) with argv, standard streams inherited; returns its pid or -1.
 * posix_spawn, not fork: a test process may run gRPC threads, and a forked child runs
 * gRPC's fork handlers before its exec (seen to hang it). */
pid_t test_spawn(char *const argv[]);

/* Starts argv[0] (a path) with argv, standard streams inherited, and waits up to
 * timeout_ms for it to exit.  Returns its exit status (0..255), 128+N when killed by
 * signal N, or -1 when it could not be started or did not exit in time (it is then
 * killed with SIGKILL and reaped).  For tools a test runs to completion (the model
 * maker). */
int test_run(char *const argv[], int timeout_ms);

/* Stops p where it is (SIGSTOP), so that it holds its connections but answers nothing;
 * test_proc_thaw (SIGCONT) lets it go on.  Return 0, or -1 when p is not running. */
int test_proc_freeze(test_proc_t *p);
int test_proc_thaw(test_proc_t *p);

/* Sends sig and waits up to timeout_ms for the exit.  Returns the exit status
 * (0..255), 128+N when killed by signal N, or -1 when it did not exit in time (it is
 * then killed with SIGKILL and reaped). */
int test_proc_stop(test_proc_t *p, int sig, int timeout_ms);

/* Waits up to timeout_ms for p to exit by itself (nothing is sent to it).  Returns as
 * test_proc_stop: the exit status (0..255), 128+N when killed by signal N, or -1 when
 * it did not exit in time (it is then killed with SIGKILL and reaped). */
int test_proc_wait(test_proc_t *p, int timeout_ms);

/* The environment variable name must hold a path; returns it or aborts the test run
 * with a message saying which variable is missing. */
const char *test_env_path(const char *name);

#endif
