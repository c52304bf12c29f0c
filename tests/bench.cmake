# The benchmark scripts in tools/.  Included from tests/CMakeLists.txt.
# tools/peerbench.sh --quick without llama.cpp or llama2.c (stand-in executables for their
# output), about 15 s.  Not under sanitizers: it times the forward pass.
if(NOT LLMSERVE_SANITIZE)
  add_test(NAME test_peerbench_quick
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_peerbench.sh ${CMAKE_BINARY_DIR})
  set_tests_properties(test_peerbench_quick PROPERTIES ENVIRONMENT "${LLMSERVE_TEST_ENV}"
                       TIMEOUT 300)
endif()

# tools/prefixbench.sh and tools/prioritybench.sh at their smallest (servebench against
# instances of the tiny model), about 15 s.  Not under sanitizers: the scripts time the
# instances.
if(NOT LLMSERVE_SANITIZE)
  add_test(NAME test_servebench
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_servebench.sh ${CMAKE_BINARY_DIR})
  set_tests_properties(test_servebench PROPERTIES ENVIRONMENT "${LLMSERVE_TEST_ENV}" TIMEOUT 300)
endif()
