# The OTLP/HTTP trace receiver stand-in (tests/otlp/receiver.py; Jaeger cannot be installed
# here) tested against itself: the OTLP JSON encoding's rules, partial success, gzip, the
# fail and delay controls, traces rebuilt across services.  Needs nothing built.
if(PYTHON3_SYSTEM)
  add_test(NAME test_otlp_receiver
           COMMAND ${PYTHON3_SYSTEM} ${CMAKE_CURRENT_SOURCE_DIR}/otlp/test_receiver.py)
  set_tests_properties(test_otlp_receiver PROPERTIES
    ENVIRONMENT "${LLMSERVE_TEST_ENV}" TIMEOUT 60)
endif()
