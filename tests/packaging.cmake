# Consumer tests: a tiny project builds against keygate through find_package
# (after an install into a temporary prefix), through add_subdirectory and
# through pkg-config (the README's command, against the installed prefix);
# consumer_components: find_package's component conventions when a
# component's dependency is missing (optional: not found; required: a clear
# error); consumer_custom_store: a KeyStore defined outside this tree
# (packaging/custom_store/) runs the installed conformance suite
# (find_package(keygate COMPONENTS conformance)).
if(KEYGATE_INSTALL)
  set(_keygate_consumer_flags "")
  if(KEYGATE_SANITIZE)
    set(_keygate_consumer_flags "-fsanitize=${KEYGATE_SANITIZE}")
  endif()
  set(_keygate_consumer_modes package subdirectory pkgconfig components custom_store)
  if(KEYGATE_SANITIZE)
    # add_subdirectory compiles the whole library again inside the consumer (two minutes,
    # more under a sanitizer): the uninstrumented run checks that way of packaging; the
    # sanitized run keeps the installed-package consumers, which run code.
    list(REMOVE_ITEM _keygate_consumer_modes subdirectory)
  endif()
  foreach(mode ${_keygate_consumer_modes})
    add_test(NAME consumer_${mode}
             COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/packaging/run_consumer.sh ${mode}
                     ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR}
                     ${CMAKE_CURRENT_BINARY_DIR}/consumer_${mode} ${CMAKE_CXX_COMPILER}
                     "${_keygate_consumer_flags}")
    # COST: ctest starts the longest tests first (a fresh build has no timing history), so the
    # consumer builds, which hold one lock in turn, do not end the run alone.
    set_tests_properties(consumer_${mode} PROPERTIES LABELS packaging TIMEOUT 600
                         RESOURCE_LOCK consumer_build COST 1000)
    if(TARGET keygate_postgres)
      set_tests_properties(consumer_${mode} PROPERTIES
                           ENVIRONMENT KEYGATE_CONSUMER_EXPECT_POSTGRES=1)
    endif()
  endforeach()
endif()
