# deploy/: the container files and the Grafana dashboard, checked without a Docker engine
# or a Grafana.  test_deploy_images reads deploy/docker/Dockerfile and Dockerfile.cuda and
# checks them against this build tree's binaries (their shared libraries mapped to Debian
# packages with dpkg -S); test_deploy_dashboard checks deploy/grafana/llmserve.json's
# metric names against libs/svc/metric_names.h and its PromQL with promtool (PROMTOOL,
# from prometheus.cmake).  Both take about a second.
if(PYTHON3_SYSTEM)
  set(LLMSERVE_DEPLOY_SAN_FLAG)
  if(LLMSERVE_SANITIZE)
    set(LLMSERVE_DEPLOY_SAN_FLAG --sanitize)
  endif()
  add_test(NAME test_deploy_images
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/deploy/check_images.py
                   --source ${CMAKE_SOURCE_DIR} --build ${CMAKE_BINARY_DIR} ${LLMSERVE_DEPLOY_SAN_FLAG})
  set_tests_properties(test_deploy_images PROPERTIES TIMEOUT 120)
endif()

if(PYTHON3_SYSTEM AND PROMTOOL)
  add_test(NAME test_deploy_dashboard
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/deploy/check_dashboard.py
                   --source ${CMAKE_SOURCE_DIR} --promtool ${PROMTOOL})
else()
  add_test(NAME test_deploy_dashboard COMMAND sh -c
           "echo 'python3 or promtool not found: bash tools/install-deps.sh installs both' >&2; exit 1")
endif()
set_tests_properties(test_deploy_dashboard PROPERTIES TIMEOUT 120)
