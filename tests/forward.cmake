# Forward pass: the CPU backend against a plain one-sequence reference kept in the tests.
llmserve_test(test_forward_cpu unit/model/test_forward_cpu.c llmserve_model)
target_sources(test_forward_cpu PRIVATE unit/model/ref_forward.c unit/model/rand_ckpt.c)
target_include_directories(test_forward_cpu PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/unit/model)
# The same tests on the narrower kernels, which a machine with AVX-512 would never pick.
foreach(kernels avx2 generic)
  add_test(NAME test_forward_cpu_${kernels} COMMAND test_forward_cpu --jobs=2 --full-stats)
  set_tests_properties(test_forward_cpu_${kernels} PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV};LLMSERVE_CPU_KERNELS=${kernels}" TIMEOUT 600
    FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}")
endforeach()
# The int8 (Q8_0) matmul and quantizer to rounding error, on each kernel family.
llmserve_test(test_forward_q8_kernels unit/model/test_forward_q8_kernels.c llmserve_model)
foreach(kernels avx2 generic)
  add_test(NAME test_forward_q8_kernels_${kernels} COMMAND test_forward_q8_kernels --jobs=2)
  set_tests_properties(test_forward_q8_kernels_${kernels} PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV};LLMSERVE_CPU_KERNELS=${kernels}" TIMEOUT 600
    FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}")
endforeach()
# The prefix KV block cache: bit-equal to the cache off, on each kernel family.
llmserve_test(test_forward_prefix unit/model/test_forward_prefix.c llmserve_model)
target_sources(test_forward_prefix PRIVATE unit/model/rand_ckpt.c)
target_include_directories(test_forward_prefix PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/unit/model)
foreach(kernels avx2 generic)
  add_test(NAME test_forward_prefix_${kernels} COMMAND test_forward_prefix --jobs=2)
  set_tests_properties(test_forward_prefix_${kernels} PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV};LLMSERVE_CPU_KERNELS=${kernels}" TIMEOUT 600
    FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}")
endforeach()
