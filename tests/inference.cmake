# Inference service: unit tests of its parts (the scheduler over a real tiny model), and
# the real llmserve-inference binary on a model made at test time by llmserve-modelmaker.
foreach(t stop chat request scheduler trace)
  llmserve_test(test_inference_${t} unit/inference/test_${t}.c llmserve_inference)
endforeach()
# embed.c (test_inference_embed is the Embed call on the real binary, below).
llmserve_test(test_inference_embed_text unit/inference/test_embed.c llmserve_inference)

llmserve_test(test_inference integration/test_inference.c llmserve_rpc llmserve_proto)
add_dependencies(test_inference llmserve-inference llmserve-modelmaker)
set_property(TEST test_inference APPEND PROPERTY ENVIRONMENT
  "LLMSERVE_INFERENCE=$<TARGET_FILE:llmserve-inference>"
  "LLMSERVE_MODELMAKER=$<TARGET_FILE:llmserve-modelmaker>")

# Inference.Embed on the real binary: fp32 and Q8_0 models, checked against the files.
llmserve_test(test_inference_embed integration/test_inference_embed.c llmserve_rpc llmserve_proto
              llmserve_model)
add_dependencies(test_inference_embed llmserve-inference llmserve-modelmaker)
set_property(TEST test_inference_embed APPEND PROPERTY ENVIRONMENT
  "LLMSERVE_INFERENCE=$<TARGET_FILE:llmserve-inference>"
  "LLMSERVE_MODELMAKER=$<TARGET_FILE:llmserve-modelmaker>")
if(PYTHON3_SYSTEM)
  add_test(NAME test_python_inference_embed
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/python/test_inference_embed.py)
  set_tests_properties(test_python_inference_embed PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV};PYTHONPATH=${ROUTER_PYGEN}" TIMEOUT 300
    FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}")
  set_property(TEST test_python_inference_embed APPEND PROPERTY ENVIRONMENT
    "LLMSERVE_INFERENCE_BIN=$<TARGET_FILE:llmserve-inference>"
    "LLMSERVE_MODELMAKER_BIN=$<TARGET_FILE:llmserve-modelmaker>")
endif()
