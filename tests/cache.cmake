# ---- cache: libs/cache, services/cache, tools/cachebench -------------------------------
set(CACHE_PARAPHRASES ${CMAKE_CURRENT_SOURCE_DIR}/data/cache_paraphrases.tsv)

llmserve_test(test_cache_sha256 unit/cache/test_sha256.c llmserve_cache)
llmserve_test(test_cache_key unit/cache/test_key.c llmserve_cache)
llmserve_test(test_cache_entry unit/cache/test_entry.c llmserve_cache)
llmserve_test(test_cache_lru unit/cache/test_lru.c llmserve_cache)
llmserve_test(test_cache_embed unit/cache/test_embed.c llmserve_cache)
target_compile_definitions(test_cache_embed PRIVATE CACHE_PARAPHRASES="${CACHE_PARAPHRASES}")
llmserve_test(test_cache_sparse unit/cache/test_sparse.c llmserve_cache)
llmserve_test(test_cache_postings unit/cache/test_postings.c llmserve_cache)
llmserve_test(test_cache_semantic unit/cache/test_semantic.c llmserve_cache)
target_compile_definitions(test_cache_semantic PRIVATE
                           SEMCACHE_TUNE="${CMAKE_CURRENT_SOURCE_DIR}/data/semcache_tune.tsv")
llmserve_test(test_cache_guard unit/cache/test_guard.c llmserve_cache)
llmserve_test(test_cache_lexicon unit/cache/test_lexicon.c llmserve_cache)
llmserve_test(test_cache_gen unit/cache/test_gen.c llmserve_cache)
llmserve_test(test_cache_breaker unit/cache/test_breaker.c llmserve_cache)

# Integration: the real llmserve-cache and real memcached processes.
add_library(llmserve_test_cache_support STATIC integration/test_cache_support.c)
target_include_directories(llmserve_test_cache_support PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/integration)
target_link_libraries(llmserve_test_cache_support PUBLIC llmserve_test_support llmserve_rpc ${CRITERION_LIB})

foreach(t test_cache test_cache_degraded test_cache_similar)
  llmserve_test(${t} integration/${t}.c llmserve_test_cache_support)
  add_dependencies(${t} llmserve-cache)
  set_tests_properties(${t} PROPERTIES ENVIRONMENT
    "${LLMSERVE_TEST_ENV};LLMSERVE_CACHE_SERVER=$<TARGET_FILE:llmserve-cache>")
endforeach()

llmserve_test(test_cache_mc unit/cache/test_mc.c llmserve_cache llmserve_test_cache_support)
llmserve_test(test_cache_request unit/cache/test_request.c llmserve_cache_service)
# The engine's reports through the metrics seam, against a real memcached.
llmserve_test(test_cache_engine unit/cache/test_engine.c llmserve_cache_service)
# llmserve-semcachebench on the tuning set: its table, JSON, vetoes and errors.
add_test(NAME test_semcachebench
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_semcachebench.sh
                 ${CMAKE_BINARY_DIR} ${CMAKE_CURRENT_SOURCE_DIR}/data)
set_tests_properties(test_semcachebench PROPERTIES ENVIRONMENT "${LLMSERVE_TEST_ENV}" TIMEOUT 120
                     FAIL_REGULAR_EXPRESSION "${LLMSERVE_SANITIZER_REPORT}")

# The model embedder against a real llmserve-inference, alone and inside llmserve-cache.
llmserve_test(test_cache_embed_model integration/test_cache_embed_model.c
              llmserve_test_cache_support llmserve_cache_model)
add_dependencies(test_cache_embed_model llmserve-cache llmserve-inference llmserve-modelmaker)
set_tests_properties(test_cache_embed_model PROPERTIES ENVIRONMENT
  "${LLMSERVE_TEST_ENV};LLMSERVE_CACHE_SERVER=$<TARGET_FILE:llmserve-cache>;LLMSERVE_INFERENCE=$<TARGET_FILE:llmserve-inference>;LLMSERVE_MODELMAKER=$<TARGET_FILE:llmserve-modelmaker>")
