# The OTLP/HTTP trace receiver stand-in (tests/otlp/receiver.py; Jaeger cannot be installed
# here) tested against itself: the OTLP JSON encoding's rules, partial success, gzip, the
# fail and delay controls, traces rebuilt across services.  Needs nothing built.
if(PYTHON3_SYSTEM)
  add_test(NAME test_otlp_receiver
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/otlp/test_receiver.py)
  set_tests_properties(test_otlp_receiver PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV}" TIMEOUT 60)
endif()

# One trace per request across the real suite (tests/python/test_traces.py): parent links
# across router, cache and inference, the attributes, the client's traceparent, the
# sampler ratio, a failing, slow or absent receiver, the flush at SIGTERM; drops counted
# on a real llmserve-metrics.
if(PYTHON3_SYSTEM)
  add_test(NAME test_python_traces
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/python/test_traces.py)
  set_tests_properties(test_python_traces PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV};PYTHONPATH=${ROUTER_PYGEN}" TIMEOUT 480
    FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}"
    FIXTURES_REQUIRED router_models)
  set_property(TEST test_python_traces APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV}
               "LLMSERVE_METRICS_BIN=$<TARGET_FILE:llmserve-metrics>")
endif()

# The cache service's spans (tests/python/test_cache_traces.py): real llmserve-cache
# processes and memcached exporting to the strict receiver, checked span by span.
if(PYTHON3_SYSTEM)
  add_test(NAME test_python_cache_traces
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/python/test_cache_traces.py)
  set_tests_properties(test_python_cache_traces PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV};PYTHONPATH=${ROUTER_PYGEN}" TIMEOUT 60
    FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}")
  set_property(TEST test_python_cache_traces APPEND PROPERTY ENVIRONMENT
               "LLMSERVE_CACHE_BIN=$<TARGET_FILE:llmserve-cache>"
               "LLMSERVE_MEMCACHED=/usr/bin/memcached")
endif()

# The inference service's spans, exported to the stand-in receiver and checked against
# what Inference.Generate answered (tests/python/test_inference_traces.py); also an
# instance with no OTEL_* environment (tracing off).
if(PYTHON3_SYSTEM)
  add_test(NAME test_python_inference_traces
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/python/test_inference_traces.py)
  set_tests_properties(test_python_inference_traces PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV};PYTHONPATH=${ROUTER_PYGEN}" TIMEOUT 120
    FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}"
    FIXTURES_REQUIRED router_models)
  set_property(TEST test_python_inference_traces APPEND PROPERTY ENVIRONMENT
    "LLMSERVE_INFERENCE_BIN=$<TARGET_FILE:llmserve-inference>"
    "LLMSERVE_ROUTER_MODELS=${ROUTER_MODELS}")
endif()
