/*
 * forward_cuda_none.c - built when llmserve is built without CUDA: there is no CUDA
 * backend, so FORWARD_AUTO always picks the CPU and FORWARD_CUDA fails at create.
 */
#include "model/forward_backend.h"

#include <stdio.h>

const forward__backend_t *forward__cuda(void)
{
    return NULL;
}

bool forward__cuda_present(char *why, size_t why_len)
{
    if (why_len)
        snprintf(why, why_len, "llmserve was built without CUDA");
    return false;
}

double forward_cuda_read_bandwidth(int device, size_t bytes, int repeats, char *err,
                                   size_t err_len)
{
    (void)device, (void)bytes, (void)repeats;
    if (err_len)
        snprintf(err, err_len, "llmserve was built without CUDA");
    return -1.0;
}
