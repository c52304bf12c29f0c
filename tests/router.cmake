# Router: unit tests of its parts, end-to-end tests over real processes, the Python client.
set(ROUTER_UNIT scorer pool prefix discovery policy validate upstream_id answer replay cache_policy
    caches discovery_consul discovery_dns)
foreach(t ${ROUTER_UNIT})
  llmserve_test(test_router_${t} unit/router/test_${t}.c llmserve_router_core)
endforeach()

# Models for the end-to-end tests, made once per build tree by the model maker: two tiny
# models with different seeds and a wider one whose tokens take milliseconds each, with
# room for answers long enough that they cannot finish while a test acts on them.
set(ROUTER_MODELS ${CMAKE_BINARY_DIR}/router-models)
add_test(NAME router_models COMMAND sh -c
  "mkdir -p '${ROUTER_MODELS}' && \
   '$<TARGET_FILE:llmserve-modelmaker>' --preset tiny --seed 1 --out '${ROUTER_MODELS}/small.bin' --tokenizer-out '${ROUTER_MODELS}/tok.bin' && \
   '$<TARGET_FILE:llmserve-modelmaker>' --preset tiny --seed 2 --out '${ROUTER_MODELS}/large.bin' && \
   '$<TARGET_FILE:llmserve-modelmaker>' --preset tiny --seed 3 --dim 384 --hidden-dim 1024 --layers 8 --heads 6 --kv-heads 6 --seq-len 2048 --out '${ROUTER_MODELS}/slow.bin'")
set_tests_properties(router_models PROPERTIES FIXTURES_SETUP router_models
                     ENVIRONMENT "${LLMSERVE_TEST_ENV}")

set(ROUTER_E2E_ENV
  "LLMSERVE_ROUTER_BIN=$<TARGET_FILE:llmserve-router>"
  "LLMSERVE_INFERENCE_BIN=$<TARGET_FILE:llmserve-inference>"
  "LLMSERVE_CACHE_BIN=$<TARGET_FILE:llmserve-cache>"
  "LLMSERVE_MODELMAKER_BIN=$<TARGET_FILE:llmserve-modelmaker>"
  "LLMSERVE_LLMCTL_BIN=$<TARGET_FILE:llmctl>"
  "LLMSERVE_MEMCACHED=/usr/bin/memcached"
  "LLMSERVE_ROUTER_MODELS=${ROUTER_MODELS}")

llmserve_test(test_router integration/test_router.c llmserve_rpc llmserve_proto)
add_dependencies(test_router llmserve-router llmserve-inference llmserve-cache llmserve-modelmaker
                 llmctl)
set_property(TEST test_router APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV})
set_tests_properties(test_router PROPERTIES FIXTURES_REQUIRED router_models)

# Mid-stream failover: an instance killed while it streams, the answer continued on another
# instance of the same model (needs --step-delay-us of the inference service).
llmserve_test(test_router_failover integration/test_router_failover.c llmserve_rpc llmserve_proto)
add_dependencies(test_router_failover llmserve-router llmserve-inference llmserve-cache
                 llmserve-modelmaker)
set_property(TEST test_router_failover APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV})
set_tests_properties(test_router_failover PROPERTIES FIXTURES_REQUIRED router_models)

# A saturated pool: the router's queue, RESOURCE_EXHAUSTED with a retry hint beyond it.
llmserve_test(test_router_admission integration/test_router_admission.c llmserve_rpc
              llmserve_proto)
add_dependencies(test_router_admission llmserve-router llmserve-inference llmserve-modelmaker)
set_property(TEST test_router_admission APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV})
set_tests_properties(test_router_admission PROPERTIES FIXTURES_REQUIRED router_models)

# Instances added and removed under load, the router in the test's own process.
llmserve_test(test_router_churn integration/test_router_churn.c llmserve_router_core)
add_dependencies(test_router_churn llmserve-inference llmserve-modelmaker)
set_property(TEST test_router_churn APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV})
set_tests_properties(test_router_churn PROPERTIES FIXTURES_REQUIRED router_models)

# Pools and caches from a discovery source whose lists change (as Consul's), the router in
# the test's own process, before a real inference instance and in-process caches.
llmserve_test(test_router_dynamic integration/test_router_dynamic.c llmserve_router_core)
add_dependencies(test_router_dynamic llmserve-inference llmserve-modelmaker)
set_property(TEST test_router_dynamic APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV})
set_tests_properties(test_router_dynamic PROPERTIES FIXTURES_REQUIRED router_models)

# DNS discovery: a name whose addresses change, the router in the test's own process.
llmserve_test(test_router_dns integration/test_router_dns.c llmserve_router_core)
add_dependencies(test_router_dns llmserve-inference llmserve-modelmaker)
set_property(TEST test_router_dns APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV})
set_tests_properties(test_router_dns PROPERTIES FIXTURES_REQUIRED router_models)

# The router from Python: modules for llmserve.v1 generated into the build tree (also used
# by the tracing tests, which call the cache and inference services directly).
set(ROUTER_PYGEN ${CMAKE_BINARY_DIR}/gen-python-llmserve)
add_custom_command(
  OUTPUT ${ROUTER_PYGEN}/llmserve/v1/router_pb2.py ${ROUTER_PYGEN}/llmserve/v1/common_pb2.py
         ${ROUTER_PYGEN}/llmserve/v1/cache_pb2.py ${ROUTER_PYGEN}/llmserve/v1/inference_pb2.py
  COMMAND ${CMAKE_COMMAND} -E make_directory ${ROUTER_PYGEN}
  COMMAND ${PROTOC} --proto_path=${CMAKE_SOURCE_DIR}/proto --python_out=${ROUTER_PYGEN}
          llmserve/v1/common.proto llmserve/v1/router.proto llmserve/v1/cache.proto
          llmserve/v1/inference.proto
  DEPENDS ${CMAKE_SOURCE_DIR}/proto/llmserve/v1/common.proto
          ${CMAKE_SOURCE_DIR}/proto/llmserve/v1/router.proto
          ${CMAKE_SOURCE_DIR}/proto/llmserve/v1/cache.proto
          ${CMAKE_SOURCE_DIR}/proto/llmserve/v1/inference.proto
  COMMENT "protoc python modules for llmserve.v1")
add_custom_target(llmserve_python_modules ALL
  DEPENDS ${ROUTER_PYGEN}/llmserve/v1/router_pb2.py)
if(PYTHON3_SYSTEM)
  add_test(NAME test_python_router_admission
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/python/test_router_admission.py)
  set_tests_properties(test_python_router_admission PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV};PYTHONPATH=${ROUTER_PYGEN}" TIMEOUT 240
    FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}"
    FIXTURES_REQUIRED router_models)
  set_property(TEST test_python_router_admission APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV})
  add_test(NAME test_python_router
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/python/test_router.py)
  set_tests_properties(test_python_router PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV};PYTHONPATH=${ROUTER_PYGEN}" TIMEOUT 300
    FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}"
    FIXTURES_REQUIRED router_models)
  set_property(TEST test_python_router APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV})
  add_test(NAME test_python_router_failover
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/python/test_router_failover.py)
  set_tests_properties(test_python_router_failover PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV};PYTHONPATH=${ROUTER_PYGEN}" TIMEOUT 240
    FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}"
    FIXTURES_REQUIRED router_models)
  set_property(TEST test_python_router_failover APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV})
endif()

# TLS, mutual TLS and API keys across the whole suite (certificates made at test time).
llmserve_test(test_security integration/test_security.c llmserve_rpc llmserve_proto)
add_dependencies(test_security llmserve-router llmserve-inference llmserve-cache)
set_property(TEST test_security APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV})
set_tests_properties(test_security PROPERTIES FIXTURES_REQUIRED router_models)
if(PYTHON3_SYSTEM)
  add_test(NAME test_python_security
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/python/test_security.py)
  set_tests_properties(test_python_security PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV};PYTHONPATH=${ROUTER_PYGEN}" TIMEOUT 300
    FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}"
    FIXTURES_REQUIRED router_models)
  set_property(TEST test_python_security APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV})
endif()

# What the router reports, the router in the test's own process with a recording
# reporter, before a real inference instance and a real cache.
llmserve_test(test_router_metrics integration/test_router_metrics.c llmserve_router_core)
add_dependencies(test_router_metrics llmserve-inference llmserve-cache llmserve-modelmaker)
set_property(TEST test_router_metrics APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV})
set_tests_properties(test_router_metrics PROPERTIES FIXTURES_REQUIRED router_models)

# Scheduling classes: the order of a full pool's queue, aging, an API key's class.
llmserve_test(test_router_priority integration/test_router_priority.c llmserve_rpc
              llmserve_proto)
add_dependencies(test_router_priority llmserve-router llmserve-inference llmserve-cache
                 llmserve-modelmaker)
set_property(TEST test_router_priority APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV})
set_tests_properties(test_router_priority PROPERTIES FIXTURES_REQUIRED router_models)

# Prefix affinity: one prefix to one instance while load allows, spills beyond the slack.
llmserve_test(test_router_prefix_affinity integration/test_router_prefix_affinity.c
              llmserve_rpc llmserve_proto)
add_dependencies(test_router_prefix_affinity llmserve-router llmserve-inference
                 llmserve-modelmaker)
set_property(TEST test_router_prefix_affinity APPEND PROPERTY ENVIRONMENT ${ROUTER_E2E_ENV})
set_tests_properties(test_router_prefix_affinity PROPERTIES FIXTURES_REQUIRED router_models)
