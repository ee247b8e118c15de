# Runs one libFuzzer binary for SECONDS on a scratch copy of its seed corpus (libFuzzer adds the
# inputs it finds to the first corpus directory: the committed seeds stay as they are), plus its
# regressions. A crash fails the test and leaves the input in WORK_DIR/artifacts/.
foreach(variable FUZZER CORPUS REGRESSIONS WORK_DIR SECONDS)
  if(NOT DEFINED ${variable})
    message(FATAL_ERROR "run_fuzzer.cmake needs -D${variable}=...")
  endif()
endforeach()

file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR}/corpus ${WORK_DIR}/artifacts)
if(IS_DIRECTORY ${CORPUS})
  file(COPY ${CORPUS}/ DESTINATION ${WORK_DIR}/corpus)
endif()
set(corpora ${WORK_DIR}/corpus)
if(IS_DIRECTORY ${REGRESSIONS})
  list(APPEND corpora ${REGRESSIONS})
endif()

execute_process(COMMAND ${FUZZER} -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2560 -print_final_stats=1
                        -artifact_prefix=${WORK_DIR}/artifacts/ ${corpora}
                RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "${FUZZER} found a problem (exit ${result}); the input is in ${WORK_DIR}/artifacts/. "
                      "Fix it, then add the input to tests/fuzz/regressions/<target>/.")
endif()
