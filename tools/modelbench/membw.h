/*
 * membw.h - how fast this machine reads memory, the bound on decode speed.
 */
#ifndef MODELBENCH_MEMBW_H
#define MODELBENCH_MEMBW_H

#include <stddef.h>

/* Reads a buffer of bytes (larger than the caches) with threads threads at once,
 * repeats times, and returns the best read bandwidth in bytes per second, or a
 * negative value when the buffer or a thread cannot be had. */
double membw_read_bytes_per_s(size_t bytes, int threads, int repeats);

#endif
