# CUDA backend: compared with the CPU backend on the same checkpoints.  Built only with
# CUDA; every test that needs a device skips cleanly on a machine without one.
if(LLMSERVE_HAVE_CUDA)
  llmserve_test(test_forward_cuda unit/model/test_forward_cuda.c llmserve_model)
  # int8 (Q8_0) checkpoints are checked against the reference pass (runq.c's arithmetic)
  target_sources(test_forward_cuda PRIVATE unit/model/ref_forward.c)
  target_include_directories(test_forward_cuda PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/unit/model)
endif()

# tools/gpu-check.sh without a GPU: a fast, plain failure for the GPU steps, and every
# CPU-side step (tests, modelbench, llmbench --direct) working from the build tree and
# from a tools/gpu-bundle.sh bundle.  Not under sanitizers: it times nothing new there.
if(NOT LLMSERVE_SANITIZE)
  add_test(NAME test_gpu_check_cpu_steps
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_gpu_check.sh ${CMAKE_BINARY_DIR})
  set_tests_properties(test_gpu_check_cpu_steps PROPERTIES ENVIRONMENT "${LLMSERVE_TEST_ENV}"
                       TIMEOUT 600)
endif()
