# The CMake integration tests (tests/cmake/CMakeLists.txt registers them), run with cmake -P:
#   MODE=install          cmake --install kiln to a prefix, then configure, build and run
#                         consumer/ against it through CMAKE_PREFIX_PATH
#   MODE=add_subdirectory a wrapper project that add_subdirectory()s the kiln source tree and
#                         consumer/ (whose find_package(kiln) then finds the in-tree targets)
#   MODE=incremental      incremental/ against the build tree's package (kiln_DIR): after a
#                         build, touching one kernel source, then a header it includes, must
#                         rebuild that bundle only and relink its target only; a changed
#                         KILN_AOT_DEVLIST must rebuild only the bundle that follows it
# Inputs (-D): MODE, KILN_SOURCE_DIR, KILN_BINARY_DIR, TESTS_DIR, WORK_DIR, GENERATOR,
# MAKE_PROGRAM, CXX_COMPILER, C_COMPILER, NINJA (incremental). The environment variable
# KILN_TEST_CMAKE_ARGS (a ;-list) adds arguments to every configure (e.g. a compiler launcher).
cmake_minimum_required(VERSION 3.25)

foreach(required MODE KILN_SOURCE_DIR KILN_BINARY_DIR TESTS_DIR WORK_DIR GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${required})
    message(FATAL_ERROR "run.cmake: -D${required}=... is required")
  endif()
endforeach()

# Runs a command; on failure prints its output and stops. The output comes back in `out`.
function(run out)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "WORKING_DIRECTORY" "COMMAND")
  if(NOT arg_WORKING_DIRECTORY)
    set(arg_WORKING_DIRECTORY "${WORK_DIR}")
  endif()
  string(JOIN " " shown ${arg_COMMAND})
  message(STATUS "$ ${shown}")
  execute_process(COMMAND ${arg_COMMAND} WORKING_DIRECTORY "${arg_WORKING_DIRECTORY}"
                  OUTPUT_VARIABLE output ERROR_VARIABLE output RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "FAILED (${rc}): ${shown}\n${output}")
  endif()
  set(${out} "${output}" PARENT_SCOPE)
endfunction()

function(expect_contains text part what)
  string(FIND "${text}" "${part}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "FAILED: ${what}: expected to find\n  ${part}\nin\n${text}")
  endif()
endfunction()

function(expect_lacks text part what)
  string(FIND "${text}" "${part}" at)
  if(NOT at EQUAL -1)
    message(FATAL_ERROR "FAILED: ${what}: did not expect\n  ${part}\nin\n${text}")
  endif()
endfunction()

# Configures `source` into `build` with the same generator and compilers as kiln's build.
function(configure source build)
  set(args -S "${source}" -B "${build}" -G "${GENERATOR}" "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}"
           -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
  if(C_COMPILER)
    list(APPEND args "-DCMAKE_C_COMPILER=${C_COMPILER}")
  endif()
  if(MAKE_PROGRAM)
    list(APPEND args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
  endif()
  list(APPEND args ${ARGN} $ENV{KILN_TEST_CMAKE_ARGS})
  run(output COMMAND "${CMAKE_COMMAND}" ${args})
  string(REGEX MATCH "-- kiln [^\n]*" found "${output}")
  if(found)
    message(STATUS "configure said: ${found}")
  endif()
  set(configure_output "${output}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

if(MODE STREQUAL "install")
  set(prefix "${WORK_DIR}/prefix")
  run(output COMMAND "${CMAKE_COMMAND}" --install "${KILN_BINARY_DIR}" --prefix "${prefix}")
  foreach(file bin/kiln include/kiln/bundle_view.hpp include/kiln/bundle.hpp lib/cmake/kiln/kilnConfig.cmake
               lib/cmake/kiln/kilnConfigVersion.cmake lib/cmake/kiln/kilnTargets.cmake
               lib/cmake/kiln/KilnAddKernels.cmake)
    if(NOT EXISTS "${prefix}/${file}")
      file(GLOB_RECURSE installed RELATIVE "${prefix}" "${prefix}/*")
      string(JOIN "\n  " installed ${installed})
      message(FATAL_ERROR "FAILED: ${file} is not installed; the prefix holds:\n  ${installed}")
    endif()
  endforeach()
  # The installed CLI runs from the prefix (its RPATH finds the installed libkiln.so).
  run(output COMMAND "${prefix}/bin/kiln" devices)

  configure("${TESTS_DIR}/consumer" "${WORK_DIR}/build" "-DCMAKE_PREFIX_PATH=${prefix}")
  expect_contains("${configure_output}" "from ${prefix}/lib/cmake/kiln" "find_package(kiln) found the installed package")
  run(output COMMAND "${CMAKE_COMMAND}" --build "${WORK_DIR}/build" --verbose)
  expect_contains("${output}" "${prefix}/bin/kiln build" "the bundle was built by the installed kiln::kiln")
  run(output COMMAND "${WORK_DIR}/build/app")
  message(STATUS "${output}")

elseif(MODE STREQUAL "add_subdirectory")
  file(WRITE "${WORK_DIR}/wrapper/CMakeLists.txt" "\
cmake_minimum_required(VERSION 3.25)
project(kiln_wrapper LANGUAGES CXX)
add_subdirectory(\"${KILN_SOURCE_DIR}\" kiln)
add_subdirectory(\"${TESTS_DIR}/consumer\" consumer)
")
  configure("${WORK_DIR}/wrapper" "${WORK_DIR}/build")
  expect_contains("${configure_output}" "kiln 0." "find_package(kiln) after add_subdirectory(kiln) reports a version")
  if(EXISTS "${WORK_DIR}/build/kiln/tests" OR EXISTS "${WORK_DIR}/build/kiln/examples")
    message(FATAL_ERROR "FAILED: kiln as a subproject configured its tests or examples")
  endif()
  run(output COMMAND "${CMAKE_COMMAND}" --build "${WORK_DIR}/build" --verbose)
  expect_contains("${output}" "${WORK_DIR}/build/kiln/tools/kiln/kiln build" "the bundle was built by the in-tree kiln")
  run(output COMMAND "${WORK_DIR}/build/consumer/app")
  message(STATUS "${output}")

elseif(MODE STREQUAL "incremental")
  if(NOT NINJA)
    message(FATAL_ERROR "run.cmake: MODE=incremental needs -DNINJA=<ninja>")
  endif()
  set(GENERATOR Ninja)
  set(MAKE_PROGRAM "${NINJA}")
  set(source "${WORK_DIR}/source")
  set(build "${WORK_DIR}/build")
  file(COPY "${TESTS_DIR}/incremental/" DESTINATION "${source}")
  configure("${source}" "${build}" "-Dkiln_DIR=${KILN_BINARY_DIR}" -DKILN_AOT_DEVLIST=sm_80)
  run(output COMMAND "${NINJA}" -C "${build}")
  run(output COMMAND "${build}/app")
  run(output COMMAND "${build}/other")
  run(output COMMAND "${NINJA}" -C "${build}")
  expect_contains("${output}" "no work to do" "a second build does nothing")

  # One step: change something, rebuild with `ninja -v -d explain`, keep the log, and check
  # which bundles were built, which embedding objects compiled and which targets linked.
  function(step label)
    cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "BUILT;RERUN_UNCHANGED;NOT_BUILT;LINKED;NOT_LINKED")
    run(output COMMAND "${NINJA}" -C "${build}" -v -d explain)
    file(WRITE "${WORK_DIR}/${label}.log" "${output}")
    message(STATUS "---- ${label}: ninja -v -d explain (${WORK_DIR}/${label}.log)\n${output}----")
    # Only the commands, not ninja's explanations, say what ran.
    string(REGEX REPLACE "ninja explain:[^\n]*\n" "" commands "${output}")
    foreach(name IN LISTS arg_BUILT)
      expect_contains("${commands}" " -o ${build}/kiln/${name}.kiln " "${label}: bundle ${name} rebuilt")
      expect_contains("${commands}" "-c ${build}/kiln/${name}_embed.cpp" "${label}: ${name}'s embedding object recompiled")
    endforeach()
    # kiln build ran, but its output was byte-identical: kiln leaves the file untouched, Ninja's
    # restat sees that, and nothing downstream is recompiled or relinked.
    foreach(name IN LISTS arg_RERUN_UNCHANGED)
      expect_contains("${commands}" " -o ${build}/kiln/${name}.kiln " "${label}: bundle ${name} checked")
      expect_lacks("${commands}" "-c ${build}/kiln/${name}_embed.cpp" "${label}: ${name}'s unchanged bundle not re-embedded")
    endforeach()
    foreach(name IN LISTS arg_NOT_BUILT)
      expect_lacks("${commands}" "/kiln/${name}.kiln " "${label}: bundle ${name} left alone")
      expect_lacks("${commands}" "-c ${build}/kiln/${name}_embed.cpp" "${label}: ${name}'s embedding object left alone")
    endforeach()
    foreach(target IN LISTS arg_LINKED)
      string(REGEX MATCH " -o ${target}[ \n]" linked "${commands}")
      if(NOT linked)
        message(FATAL_ERROR "FAILED: ${label}: ${target} was not relinked:\n${output}")
      endif()
    endforeach()
    foreach(target IN LISTS arg_NOT_LINKED)
      string(REGEX MATCH " -o ${target}[ \n]" linked "${commands}")
      if(linked)
        message(FATAL_ERROR "FAILED: ${label}: ${target} was relinked:\n${output}")
      endif()
    endforeach()
    expect_lacks("${commands}" "-c ${source}/app.cpp" "${label}: app.cpp left alone")
    expect_lacks("${commands}" "-c ${source}/other.cpp" "${label}: other.cpp left alone")
    run(output COMMAND "${NINJA}" -C "${build}")
    expect_contains("${output}" "no work to do" "${label}: the build after it does nothing")
  endfunction()

  # Wait a moment so that file times differ even on coarse-grained file systems.
  execute_process(COMMAND "${CMAKE_COMMAND}" -E sleep 1.1)
  file(TOUCH "${source}/beta.cu")
  step(touch-source RERUN_UNCHANGED beta NOT_BUILT alpha gamma NOT_LINKED app other)

  execute_process(COMMAND "${CMAKE_COMMAND}" -E sleep 1.1)
  file(TOUCH "${source}/include/beta_common.cuh")
  step(touch-header RERUN_UNCHANGED beta NOT_BUILT alpha gamma NOT_LINKED app other)

  # A comment changes no image: the bundle is checked, nothing relinks.
  execute_process(COMMAND "${CMAKE_COMMAND}" -E sleep 1.1)
  file(APPEND "${source}/alpha.cu" "// a comment added by the incremental test\n")
  step(comment-source RERUN_UNCHANGED alpha NOT_BUILT beta gamma NOT_LINKED app other)

  # A real edit of the kernel source (a new kernel), and the program still runs.
  execute_process(COMMAND "${CMAKE_COMMAND}" -E sleep 1.1)
  file(APPEND "${source}/alpha.cu" "extern \"C\" __global__ void alpha_added_by_test(float* out) { out[0] = 1.0f; }\n")
  step(edit-source BUILT alpha NOT_BUILT beta gamma LINKED app NOT_LINKED other)

  # An edit to a header changes beta's image: only beta is rebuilt and re-embedded.
  execute_process(COMMAND "${CMAKE_COMMAND}" -E sleep 1.1)
  file(APPEND "${source}/include/beta_common.cuh" "extern \"C\" __global__ void beta_added_by_test(float* out) { out[0] = 2.0f; }\n")
  step(edit-header BUILT beta NOT_BUILT alpha gamma LINKED app NOT_LINKED other)

  # gamma has no DEVICES: a new KILN_AOT_DEVLIST rebuilds it and nothing else.
  configure("${source}" "${build}" -DKILN_AOT_DEVLIST=sm_80,sm_90)
  step(change-devlist BUILT gamma NOT_BUILT alpha beta LINKED other NOT_LINKED app)

  run(output COMMAND "${build}/app")
  message(STATUS "${output}")
  run(output COMMAND "${build}/other")
  message(STATUS "${output}")

else()
  message(FATAL_ERROR "run.cmake: unknown MODE ${MODE}")
endif()
message(STATUS "PASSED: ${MODE}")
