# ---- metrics collector: services/metrics -------------------------------------------------
foreach(t buckets validate keymap store expo summary)
  llmserve_test(test_metrics_${t} unit/metrics/test_${t}.c llmserve_metrics cjson)
endforeach()

# The real llmserve-metrics process, fed over gRPC, read over HTTP, linted by promtool.
llmserve_test(test_metrics integration/test_metrics.c llmserve_rpc llmserve_proto cjson)
add_dependencies(test_metrics llmserve-metrics)
set_property(TEST test_metrics APPEND PROPERTY ENVIRONMENT
  "LLMSERVE_METRICS_BIN=$<TARGET_FILE:llmserve-metrics>")

# The whole suite reporting, a real Prometheus scraping the collector with the alert
# rules, llmbench's view of the collector, a frozen instance raising TTFT until the alert
# fires and resolves, and the status page in headless Chromium against the real
# collector (tests/python/test_metrics_e2e.py).  Chromium and Prometheus are heavy on a
# small machine: serial.
find_program(PROMETHEUS_BIN prometheus)
find_program(PROMTOOL_BIN promtool)
if(PYTHON3_SYSTEM)
  add_test(NAME test_python_metrics_e2e
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/python/test_metrics_e2e.py)
  set_tests_properties(test_python_metrics_e2e PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV}" TIMEOUT 600 RUN_SERIAL TRUE SKIP_RETURN_CODE 77
    FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}"
    FIXTURES_REQUIRED router_models)
  set_property(TEST test_python_metrics_e2e APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV}
               "LLMSERVE_METRICS_BIN=$<TARGET_FILE:llmserve-metrics>"
               "LLMSERVE_LLMBENCH_BIN=$<TARGET_FILE:llmbench>"
               "LLMSERVE_PROMETHEUS=${PROMETHEUS_BIN}" "LLMSERVE_PROMTOOL=${PROMTOOL_BIN}")
endif()
