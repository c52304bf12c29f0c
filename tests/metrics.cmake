# ---- metrics collector: services/metrics -------------------------------------------------
foreach(t buckets validate keymap store expo summary)
  llmserve_test(test_metrics_${t} unit/metrics/test_${t}.c llmserve_metrics cjson)
endforeach()

# The real llmserve-metrics process, fed over gRPC, read over HTTP, linted by promtool.
llmserve_test(test_metrics integration/test_metrics.c llmserve_rpc llmserve_proto cjson)
add_dependencies(test_metrics llmserve-metrics)
set_property(TEST test_metrics APPEND PROPERTY ENVIRONMENT
  "LLMSERVE_METRICS_BIN=$<TARGET_FILE:llmserve-metrics>")
