# ---- metrics collector: services/metrics -------------------------------------------------
foreach(t buckets validate keymap store expo summary)
  llmserve_test(test_metrics_${t} unit/metrics/test_${t}.c llmserve_metrics cjson)
endforeach()
