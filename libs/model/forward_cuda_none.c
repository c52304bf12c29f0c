/*
 * forward_cuda_none.c - built when llmserve is built without CUDA: there is no CUDA
 * backend, so FORWARD_AUTO always picks the CPU and FORWARD_CUDA fails at create.
 */
#include "model/forward_backend.h"

#include <stddef.h>

const forward__backend_t *forward__cuda(void)
{
    return NULL;
}

bool forward__cuda_present(void)
{
    return false;
}
