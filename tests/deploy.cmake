# deploy/: the container files and the Grafana dashboard, checked without a Docker engine
# or a Grafana.  test_deploy_images reads deploy/docker/Dockerfile and Dockerfile.cuda and
# checks them against this build tree's binaries (their shared libraries mapped to Debian
# packages with dpkg -S); a few seconds.
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
