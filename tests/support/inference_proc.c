#include "support/inference_proc.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

int test_inference_make(test_inference_t *t, const char *const *shape)
{
    memset(t, 0, sizeof(*t));
    if (test_tmpdir_make(&t->dir, "llmserve-test-infer") != 0)
        return -1;
    test_tmpdir_file(&t->dir, "model.bin", t->model, sizeof(t->model));
    test_tmpdir_file(&t->dir, "tokenizer.bin", t->tokenizer, sizeof(t->tokenizer));
    char *argv[40];
    int n = 0;
    argv[n++] = (char *)test_env_path("LLMSERVE_MODELMAKER");
    argv[n++] = "--out";
    argv[n++] = t->model;
    argv[n++] = "--tokenizer-out";
    argv[n++] = t->tokenizer;
    for (; shape && *shape && n < 38; shape++)
        argv[n++] = (char *)*shape;
    argv[n] = NULL;
    if (test_run(argv, 120000) != 0) {
        test_tmpdir_remove(&t->dir);
        return -1;
    }
    return 0;
}

int test_inference_start(test_inference_t *t, int port, const char *const *extra)
{
    char listen[32];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    char *argv[48];
    int n = 0;
    argv[n++] = (char *)test_env_path("LLMSERVE_INFERENCE");
    const char *base[] = {"--listen",      listen,      "--model", t->model,        "--tokenizer",
                          t->tokenizer,    "--backend", "cpu",     "--cpu-threads", "1",
                          "--rpc-threads", "2",         NULL};
    for (const char *const *a = base; *a; a++)
        argv[n++] = (char *)*a;
    for (; extra && *extra && n < 46; extra++)
        argv[n++] = (char *)*extra;
    argv[n] = NULL;
    return test_proc_start(&t->proc, argv, 30000);
}

int test_inference_stop(test_inference_t *t)
{
    if (t->proc.pid <= 0)
        return 0;
    return test_proc_stop(&t->proc, SIGTERM, 30000);
}

int test_inference_destroy(test_inference_t *t)
{
    int status = test_inference_stop(t);
    test_tmpdir_remove(&t->dir);
    return status;
}
