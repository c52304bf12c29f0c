# Every binary's command line and the runtime's option scheme, from Python (real
# processes; the inference service runs the router_models fixture's tiny model).
if(PYTHON3_SYSTEM)
  add_test(NAME test_python_cli
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/python/test_cli.py)
  set_tests_properties(test_python_cli PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV}" TIMEOUT 600
    FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}"
    FIXTURES_REQUIRED router_models)
  set_property(TEST test_python_cli APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV}
               "LLMSERVE_LLMBENCH_BIN=$<TARGET_FILE:llmbench>"
               "LLMSERVE_METRICS_BIN=$<TARGET_FILE:llmserve-metrics>")
endif()

# The metrics reporter (libs/svc/report_client.c) against a real collector in the test
# process (tests/support/metrics_sink.c).
llmserve_test(test_svc_report_client unit/svc/test_report_client.c llmserve_svc)

# End to end: a real service binary reporting through the runtime's --metrics.
llmserve_test(test_svc_metrics integration/test_svc_metrics.c llmserve_rpc llmserve_proto)
add_dependencies(test_svc_metrics llmserve-cache)
set_property(TEST test_svc_metrics APPEND PROPERTY ENVIRONMENT
  "LLMSERVE_CACHE_SERVER=$<TARGET_FILE:llmserve-cache>")

# The OTLP/HTTP JSON tracer (libs/svc/tracer_otlp.c) against a scripted HTTP receiver.
llmserve_test(test_tracer_otlp unit/svc/test_tracer_otlp.c llmserve_svc)
