# The OTLP/HTTP trace receiver stand-in (tests/otlp/receiver.py; Jaeger cannot be installed
# here) tested against itself: the OTLP JSON encoding's rules, partial success, gzip, the
# fail and delay controls, traces rebuilt across services.  Needs nothing built.
if(PYTHON3_SYSTEM)
  add_test(NAME test_otlp_receiver
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/otlp/test_receiver.py)
  set_tests_properties(test_otlp_receiver PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV}" TIMEOUT 60)
endif()

# The inference service's spans, exported to the stand-in receiver and checked against
# what Inference.Generate answered (tests/python/test_inference_traces.py); also an
# instance with no OTEL_* environment (tracing off).  Modules generated from
# proto/llmserve/v1 (common, inference) for the direct calls.
set(INFERENCE_PYGEN ${CMAKE_BINARY_DIR}/gen-python-inference)
add_custom_command(
  OUTPUT ${INFERENCE_PYGEN}/llmserve/v1/inference_pb2.py ${INFERENCE_PYGEN}/llmserve/v1/common_pb2.py
  COMMAND ${CMAKE_COMMAND} -E make_directory ${INFERENCE_PYGEN}
  COMMAND ${PROTOC} --proto_path=${CMAKE_SOURCE_DIR}/proto --python_out=${INFERENCE_PYGEN}
          llmserve/v1/common.proto llmserve/v1/inference.proto
  DEPENDS ${CMAKE_SOURCE_DIR}/proto/llmserve/v1/common.proto
          ${CMAKE_SOURCE_DIR}/proto/llmserve/v1/inference.proto
  COMMENT "protoc python modules for llmserve.v1 inference")
add_custom_target(llmserve_inference_python_modules ALL
  DEPENDS ${INFERENCE_PYGEN}/llmserve/v1/inference_pb2.py)
if(PYTHON3_SYSTEM)
  add_test(NAME test_python_inference_traces
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/python/test_inference_traces.py)
  set_tests_properties(test_python_inference_traces PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV};PYTHONPATH=${INFERENCE_PYGEN}" TIMEOUT 120
    FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}"
    FIXTURES_REQUIRED router_models)
  set_property(TEST test_python_inference_traces APPEND PROPERTY ENVIRONMENT
    "LLMSERVE_INFERENCE_BIN=$<TARGET_FILE:llmserve-inference>"
    "LLMSERVE_ROUTER_MODELS=${ROUTER_MODELS}")
endif()
