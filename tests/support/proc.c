#define _GNU_SOURCE
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *test_env_path(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "test setup: environment variable %s is not set (run through ctest)\n",
                name);
        abort();
    }
    return v;
}

pid_t test_spawn(char *const argv[])
{
    pid_t pid;
    return posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) == 0 ? pid : -1;
}

int test_proc_start(test_proc_t *p, char *const argv[], int timeout_ms)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    /* posix_spawn, not fork: see test_spawn. */
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1); /* dup2 clears close-on-exec */
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        fprintf(stderr, "test setup: cannot start %s: %s\n", argv[0], strerror(rc));
        close(fds[0]);
        return -1;
    }
    p->pid = pid;
    p->out_fd = fds[0];
    p->port = 0;
    p->http_port = 0;

    char line[256];
    size_t len = 0;
    long long end = now_ms() + timeout_ms;
    while (len < sizeof(line) - 1) {
        long long left = end - now_ms();
        struct pollfd pfd = {fds[0], POLLIN, 0};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
        ssize_t n = read(fds[0], line + len, 1);
        if (n <= 0)
            break;
        if (line[len] == '\n') {
            line[len] = '\0';
            int port = 0;
            if (sscanf(line, "LISTENING port=%d", &port) == 1)
                p->port = port;
            else if (sscanf(line, "HTTP port=%d", &port) == 1)
                p->http_port = port;
            else if (strcmp(line, "SERVING") == 0 && p->port > 0)
                return 0;
            len = 0; /* some other line: keep looking */
            continue;
        }
        len++;
    }
    fprintf(stderr, "test setup: %s did not report LISTENING and SERVING in %d ms\n", argv[0],
            timeout_ms);
    test_proc_stop(p, SIGKILL, 2000);
    return -1;
}

/* Waits up to timeout_ms for pid to exit; returns as test_proc_stop. */
static int wait_exit(pid_t pid, int timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (now_ms() >= end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        usleep(5000);
    }
}

int test_run(char *const argv[], int timeout_ms)
{
    pid_t pid = test_spawn(argv);
    if (pid < 0) {
        fprintf(stderr, "test setup: cannot start %s\n", argv[0]);
        return -1;
    }
    return wait_exit(pid, timeout_ms);
}

int test_proc_freeze(test_proc_t *p)
{
    return p->pid > 0 ? kill(p->pid, SIGSTOP) : -1; /* never kill(0): our process group */
}

int test_proc_thaw(test_proc_t *p)
{
    return p->pid > 0 ? kill(p->pid, SIGCONT) : -1;
}

int test_proc_wait(test_proc_t *p, int timeout_ms)
{
    if (p->pid <= 0)
        return -1;
    int result = wait_exit(p->pid, timeout_ms);
    close(p->out_fd);
    p->pid = 0;
    return result;
}

int test_proc_stop(test_proc_t *p, int sig, int timeout_ms)
{
    if (p->pid <= 0)
        return -1;
    kill(p->pid, sig);
    return test_proc_wait(p, timeout_ms);
}
