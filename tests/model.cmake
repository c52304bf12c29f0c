# libs/model: checkpoints, tokenizer and sampler.  Included from tests/CMakeLists.txt.
llmserve_test(test_model_checkpoint unit/model/test_checkpoint.c llmserve_model)
add_dependencies(test_model_checkpoint llmserve-modelmaker)
set_property(TEST test_model_checkpoint APPEND PROPERTY ENVIRONMENT
  "LLMSERVE_MODELMAKER=$<TARGET_FILE:llmserve-modelmaker>")
# Q8_0 against fp32 through the plain reference pass: greedy agreement and logit error.
llmserve_test(test_model_q8_agreement unit/model/test_q8_agreement.c llmserve_model)
target_sources(test_model_q8_agreement PRIVATE unit/model/ref_forward.c)
target_include_directories(test_model_q8_agreement PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/unit/model)
llmserve_test(test_model_tokenizer unit/model/test_tokenizer.c llmserve_model)
# tests/data/tokenizer-llama2c.bin: llama2.c's tokenizer.bin, a compatibility fixture
target_compile_definitions(test_model_tokenizer PRIVATE
  LLMSERVE_TEST_DATA="${CMAKE_CURRENT_SOURCE_DIR}/data")
llmserve_test(test_model_sampler unit/model/test_sampler.c llmserve_model)
