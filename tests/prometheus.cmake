# deploy/prometheus: the alert rules and the scrape config load cleanly, and the rules'
# unit tests (tests/prometheus/alerts_test.yml) pass.  promtool comes with Debian's
# prometheus package, which tools/install-deps.sh installs; without it these tests fail
# and say so, rather than skip.
find_program(PROMTOOL promtool)
if(NOT PROMTOOL)
  message(WARNING "promtool not found: the test_prometheus_* tests will fail "
                  "(bash tools/install-deps.sh installs Debian's prometheus)")
endif()

# llmserve_promtool_test(<name> <promtool arguments...>)
function(llmserve_promtool_test name)
  if(PROMTOOL)
    add_test(NAME ${name} COMMAND ${PROMTOOL} ${ARGN})
  else()
    add_test(NAME ${name} COMMAND sh -c
             "echo 'promtool not found: bash tools/install-deps.sh installs prometheus' >&2; exit 1")
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT 120)
endfunction()

llmserve_promtool_test(test_prometheus_check_rules
                       check rules ${CMAKE_SOURCE_DIR}/deploy/prometheus/alerts.yml)
llmserve_promtool_test(test_prometheus_check_config
                       check config ${CMAKE_SOURCE_DIR}/deploy/prometheus/prometheus.yml)
llmserve_promtool_test(test_prometheus_alerts
                       test rules ${CMAKE_CURRENT_SOURCE_DIR}/prometheus/alerts_test.yml)
