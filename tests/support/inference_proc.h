/*
 * inference_proc.h - a real llmserve-inference process on loopback serving a model that
 * llmserve-modelmaker makes at test time, in a directory of its own.
 *
 * The binaries come from LLMSERVE_INFERENCE and LLMSERVE_MODELMAKER (test_env_path).
 * Not thread-safe: one thread starts and stops a given test_inference_t.
 */
#ifndef TEST_INFERENCE_PROC_H
#define TEST_INFERENCE_PROC_H

#include "support/proc.h"
#include "support/tmpdir.h"

typedef struct {
    test_tmpdir_t dir;
    char model[192];     /* the checkpoint's path */
    char tokenizer[192]; /* its tokenizer.bin */
    test_proc_t proc;
} test_inference_t;

/* Makes a model with the modelmaker flags in shape (NULL-terminated, e.g. {"--preset",
 * "tiny", NULL}) into a fresh directory.  Returns 0, or -1 (nothing left behind). */
int test_inference_make(test_inference_t *t, const char *const *shape);

/* Starts llmserve-inference on 127.0.0.1:port (0 = any free port; a port it had before,
 * to restart it where clients know it) over the model made by test_inference_make, on
 * the CPU with one forward thread, with the extra flags (NULL-terminated, may be NULL).
 * Waits until it serves (30 s at most).  Returns 0 with t->proc filled, or -1. */
int test_inference_start(test_inference_t *t, int port, const char *const *extra);

/* Stops the process with SIGTERM (if running) and returns its exit status as
 * test_proc_stop does; 0 when it was not running. */
int test_inference_stop(test_inference_t *t);

/* Stops the process if running and removes the directory.  Returns the exit status as
 * test_inference_stop. */
int test_inference_destroy(test_inference_t *t);

#endif
