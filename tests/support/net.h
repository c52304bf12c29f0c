/*
 * net.h - loopback ports for tests that start real servers.
 *
 * Everything here talks to 127.0.0.1 only.  Thread-safe (no state).
 */
#ifndef TEST_NET_H
#define TEST_NET_H

#include <stdbool.h>
#include <stddef.h>

/* Room for "127.0.0.1:65535" and its terminating NUL. */
#define TEST_ADDR_LEN 32

/* Returns a TCP port on 127.0.0.1 that was free a moment ago (bound with port 0, then
 * closed), or -1 when no socket could be bound.  Another process may take it before the
 * caller binds it: a caller that starts a server on it retries on another when the
 * server cannot listen. */
int test_free_port(void);

/* Whether a TCP connection to 127.0.0.1:port succeeds now (it is closed at once). */
bool test_can_connect(int port);

/* Waits up to timeout_ms for test_can_connect(port), trying every 10 ms; returns whether
 * a connection succeeded. */
bool test_wait_connect(int port, int timeout_ms);

/* Writes "127.0.0.1:port" into addr (TEST_ADDR_LEN bytes) and returns addr. */
char *test_addr(char addr[TEST_ADDR_LEN], int port);

#endif
