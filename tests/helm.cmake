# helm/llmserve: lint, templates of every value set in tests/helm/values/ validated against
# the Kubernetes and Prometheus operator schemas, assertions on the objects, values the
# schema refuses (tests/helm/test_chart.mjs).  It needs no compiled code, so it runs in the
# plain build only, not again under the sanitizers.  Its tools (node, helm, the npm
# packages under /opt/llmserve-tools, yamllint, promtool) come from tools/install-deps.sh;
# without them the test fails and says so.
if(NOT LLMSERVE_SANITIZE)
  find_program(NODE_EXECUTABLE node)
  if(NODE_EXECUTABLE)
    add_test(NAME test_helm_chart
             COMMAND ${NODE_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/helm/test_chart.mjs)
  else()
    message(WARNING "node not found: test_helm_chart will fail (bash tools/install-deps.sh)")
    add_test(NAME test_helm_chart COMMAND sh -c
             "echo 'node not found: bash tools/install-deps.sh installs nodejs' >&2; exit 1")
  endif()
  set_tests_properties(test_helm_chart PROPERTIES TIMEOUT 300)
endif()
