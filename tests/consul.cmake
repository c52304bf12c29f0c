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

# The suite on Consul (tests/python/test_consul.py): every service registering with the
# stand-in agent, the router finding pools and caches and every service the collector
# there; scale out and in, a crash, the agent restarted, the index going backwards, an
# ACL token, 200 registrations churning under load.
if(PYTHON3_SYSTEM)
  add_test(NAME test_python_consul
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/python/test_consul.py)
  set_tests_properties(test_python_consul PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV};PYTHONPATH=${ROUTER_PYGEN}" TIMEOUT 600 RUN_SERIAL TRUE
    FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}"
    FIXTURES_REQUIRED router_models)
  set_property(TEST test_python_consul APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV}
               "LLMSERVE_METRICS_BIN=$<TARGET_FILE:llmserve-metrics>")
endif()
