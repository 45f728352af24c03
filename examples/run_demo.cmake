# Runs keygate_demo on a fresh database (the demo refuses an existing file),
# so that the test can be repeated (ctest --repeat) and run from any state.
#   cmake -DDEMO=<keygate_demo> -DDIR=<scratch dir> -P run_demo.cmake
file(REMOVE_RECURSE "${DIR}")
file(MAKE_DIRECTORY "${DIR}")
execute_process(COMMAND "${DEMO}" "${DIR}/keygate.db" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "keygate_demo exited with ${rc}")
endif()
