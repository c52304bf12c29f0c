/*
 * clock.h - monotonic and wall time in microseconds.  Thread-safe.
 */
#ifndef LS_CLOCK_H
#define LS_CLOCK_H

#include <stdint.h>

/* Microseconds on CLOCK_MONOTONIC: for durations and deadlines only. */
int64_t ls_now_us(void);

/* Microseconds since the Unix epoch on CLOCK_REALTIME: for logs and traces. */
int64_t ls_wall_us(void);

/* Sleeps for at least us microseconds (restarts after signals). */
void ls_sleep_us(int64_t us);

#endif
