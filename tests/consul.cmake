# The Consul agent stand-in (tests/consul/standin.py) tested against itself and against
# real services: its gRPC health checks call a real llmserve-inference instance (the
# router_models fixture's tiny model) and, with mutual TLS, llmserve-test-echo.
if(PYTHON3_SYSTEM)
  add_test(NAME test_consul_standin
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/consul/test_standin.py)
  set_tests_properties(test_consul_standin PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV}" TIMEOUT 180
    FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}"
    FIXTURES_REQUIRED router_models)
  set_property(TEST test_consul_standin APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV})
endif()
