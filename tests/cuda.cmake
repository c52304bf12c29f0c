# CUDA backend: compared with the CPU backend on the same checkpoints.  Built only with
# CUDA; every test that needs a device skips cleanly on a machine without one.
if(LLMSERVE_HAVE_CUDA)
  llmserve_test(test_forward_cuda unit/model/test_forward_cuda.c llmserve_model)
endif()
