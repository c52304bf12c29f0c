# The collector's status page (services/metrics/status.html) in headless Chromium, against
# the stand-in for /api/summary (tests/python/summary_standin.py), with the same checker
# (tests/integration/status_page_check.py) that is pointed at the real collector.  Exit 77
# (skipped) where Chromium is not installed, after the checks that need no browser.
if(PYTHON3_SYSTEM)
  add_test(NAME test_python_status_page
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/python/test_status_page_standin.py)
  set_tests_properties(test_python_status_page PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV}" TIMEOUT 300 SKIP_RETURN_CODE 77
    # Chromium runs are heavy: not beside other tests on a small machine.
    RUN_SERIAL TRUE)
endif()
