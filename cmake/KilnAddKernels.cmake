# kiln_add_kernels(): compile CUDA kernels ahead of time with the kiln CLI and embed the
# bundle in a target. Included by kiln's own CMakeLists.txt (source tree, add_subdirectory,
# FetchContent) and by the installed kilnConfig.cmake; docs/cmake.md describes it for users.
#
#   kiln_add_kernels(<target> SOURCES a.cu [b.cu ...]
#                    [NAME <c identifier>]          default: <target>, made a C identifier
#                    [DEVICES <list>]               default: ${KILN_AOT_DEVLIST}
#                    [PTX <compute_XY|newest|none>] default: ${KILN_AOT_PTX}, else the oldest listed
#                    [EMBED_SOURCE] [SPLIT_KERNELS]
#                    [COMPRESS <zstd|lz4|none>]     default: zstd (lz4: larger, faster to start)
#                    [INCLUDE_DIRECTORIES <dir>...] [DEFINES <NAME[=VALUE]>...])
#
# Builds <binary dir>/kiln/<NAME>.kiln with `kiln build` (a depfile lists every file read, so
# editing a header a kernel includes rebuilds that bundle), embeds it with the assembler's
# .incbin, and generates <kiln/bundles/<NAME>.hpp> declaring
#   namespace kiln::bundles { kiln::BundleView <NAME>() noexcept; }
include_guard(GLOBAL)

if(CMAKE_VERSION VERSION_LESS 3.25)
  message(FATAL_ERROR "kiln_add_kernels() needs CMake 3.25 or newer (this is ${CMAKE_VERSION})")
endif()
# The functions below keep these policy settings whatever the including project asks for
# (CMP0116: DEPFILE paths of add_custom_command are handled the same with Ninja and Makefiles).
cmake_policy(VERSION 3.25)

# The kiln CLI that runs at build time: the target kiln::kiln (built in this tree, or imported
# by find_package), or KILN_EXECUTABLE, a path, where set (for a cross build: a kiln that runs
# on the build machine).
if(NOT DEFINED KILN_EXECUTABLE_TARGET)
  set(KILN_EXECUTABLE_TARGET kiln::kiln)
endif()
set_property(GLOBAL PROPERTY KILN_EXECUTABLE_TARGET "${KILN_EXECUTABLE_TARGET}")
set(KILN_EXECUTABLE "" CACHE FILEPATH
    "kiln CLI that kiln_add_kernels() runs; empty: the kiln::kiln target")

# Devices compiled for ahead of time when kiln_add_kernels() has no DEVICES. The default is
# one cubin for every architecture family CUDA 13 can target, so every GPU it supports loads
# an AOT image and never waits for a JIT: sm_75 (Turing), sm_80 (A100, and compatibly 8.6/8.9),
# sm_86 (a closer match for consumer Ampere and Ada), sm_87 (Jetson Orin: Tegra runs only its own
# cubins), sm_90 (Hopper), sm_100 (B200, and 10.3), sm_110 (Thor), sm_120 (RTX 50, and 12.1). With kiln's dictionary compression the extra cubins
# cost little size; they cost build time, so shorten the list for development builds:
# -DKILN_AOT_DEVLIST=native (this machine's GPUs) or e.g. sm_90.
# (A global property too: kiln_add_kernels() runs in scopes that do not see this file's variables.)
set(KILN_AOT_DEVLIST_DEFAULT "sm_75,sm_80,sm_86,sm_87,sm_90,sm_100,sm_110,sm_120")
set_property(GLOBAL PROPERTY KILN_AOT_DEVLIST_DEFAULT "${KILN_AOT_DEVLIST_DEFAULT}")
if(NOT DEFINED KILN_AOT_DEVLIST)
  if(DEFINED ENV{KILN_AOT_DEVLIST} AND NOT "$ENV{KILN_AOT_DEVLIST}" STREQUAL "")
    set(_kiln_devlist_initial "$ENV{KILN_AOT_DEVLIST}")
  else()
    set(_kiln_devlist_initial "${KILN_AOT_DEVLIST_DEFAULT}")
  endif()
  set(KILN_AOT_DEVLIST "${_kiln_devlist_initial}" CACHE STRING
      "Devices kiln_add_kernels() compiles for ahead of time: names or architectures, comma-separated (h100,a100 / sm_90,sm_80 / native / all)")
  unset(_kiln_devlist_initial)
endif()
# The PTX kept for JIT on GPUs the list does not cover. Empty: kiln build's default, the PTX of
# the oldest listed architecture, which every newer GPU can JIT (compute_75 with the default
# list: a safety net for GPUs newer than CUDA 13 and for KILN_FORCE_JIT=1 tests).
set(KILN_AOT_PTX "" CACHE STRING
    "PTX kiln_add_kernels() keeps for JIT: compute_XY, newest, none, or empty for the oldest listed architecture")

# A C identifier from a target name: "my-ops.v2" -> "my_ops_v2"; a leading digit or a C++
# keyword gets a prefix or suffix, and so does a name GNU mode predefines as a macro (linux, unix),
# which the generated header's declarations would not survive.
function(_kiln_identifier out text)
  string(MAKE_C_IDENTIFIER "${text}" id)
  set(keywords alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t
      char16_t char32_t class compl concept const consteval constexpr constinit const_cast continue
      co_await co_return co_yield decltype default delete do double dynamic_cast else enum explicit
      export extern false float for friend goto if inline int long mutable namespace new noexcept not
      not_eq nullptr operator or or_eq private protected public register reinterpret_cast requires
      return short signed sizeof static static_assert static_cast struct switch template this
      thread_local throw true try typedef typeid typename union unsigned using virtual void volatile
      wchar_t while xor xor_eq linux unix i386)
  if(id IN_LIST keywords)
    string(APPEND id "_")
  endif()
  set(${out} "${id}" PARENT_SCOPE)
endfunction()

# Writes `content` to `path` only when it differs, so that an unchanged file keeps its time
# stamp and rebuilds nothing.
function(_kiln_write_if_changed path content)
  if(EXISTS "${path}")
    file(READ "${path}" old)
    if(old STREQUAL content)
      return()
    endif()
  endif()
  file(WRITE "${path}" "${content}")
endfunction()

# CMake splits arguments at every ';', also inside a generator expression: "$<$<CONFIG:Debug>:A;B>"
# arrives as two items. This joins such pieces back (while a "$<" is open) and writes the ';'
# inside as $<SEMICOLON>, so that each item is one (possibly list-valued) expression.
function(_kiln_rejoin_genex out)
  set(items "")
  set(pending "")
  set(open OFF)
  foreach(item IN LISTS ARGN)
    if(open)
      string(APPEND pending "$<SEMICOLON>${item}")
    else()
      set(pending "${item}")
    endif()
    string(REGEX MATCHALL "\\$<" opens "${pending}")
    string(REGEX MATCHALL ">" closes "${pending}")
    list(LENGTH opens opens)
    list(LENGTH closes closes)
    if(opens GREATER closes)
      set(open ON)
    else()
      set(open OFF)
      list(APPEND items "${pending}")
    endif()
  endforeach()
  if(open)
    list(APPEND items "${pending}")
  endif()
  set(${out} "${items}" PARENT_SCOPE)
endfunction()

function(kiln_add_kernels target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "EMBED_SOURCE;SPLIT_KERNELS" "NAME;PTX;COMPRESS"
                        "SOURCES;DEVICES;INCLUDE_DIRECTORIES;DEFINES")
  set(usage "kiln_add_kernels(<target> SOURCES a.cu... [NAME name] [DEVICES list] [PTX arch] [EMBED_SOURCE] [SPLIT_KERNELS] [COMPRESS zstd|lz4|none] [INCLUDE_DIRECTORIES dir...] [DEFINES def...])")
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "kiln_add_kernels(${target}): unknown arguments: ${arg_UNPARSED_ARGUMENTS}\n  ${usage}")
  endif()
  foreach(keyword IN LISTS arg_KEYWORDS_MISSING_VALUES)
    if(NOT keyword STREQUAL "INCLUDE_DIRECTORIES" AND NOT keyword STREQUAL "DEFINES")
      message(FATAL_ERROR "kiln_add_kernels(${target}): ${keyword} needs a value\n  ${usage}")
    endif()
  endforeach()
  if(NOT arg_SOURCES)
    message(FATAL_ERROR "kiln_add_kernels(${target}): no SOURCES\n  ${usage}")
  endif()
  if(DEFINED arg_COMPRESS AND NOT arg_COMPRESS MATCHES "^(zstd|lz4|none)$")
    message(FATAL_ERROR "kiln_add_kernels(${target}): COMPRESS is \"${arg_COMPRESS}\", not zstd, lz4 or none\n  ${usage}")
  endif()

  # The target: a real, compiled one, made in this directory (a custom command's output joins
  # only targets of the directory that created it).
  if(NOT TARGET ${target})
    message(FATAL_ERROR "kiln_add_kernels(${target}): no such target; call add_library/add_executable first")
  endif()
  get_target_property(aliased ${target} ALIASED_TARGET)
  if(aliased)
    set(target ${aliased})
  endif()
  get_target_property(imported ${target} IMPORTED)
  get_target_property(type ${target} TYPE)
  if(imported)
    message(FATAL_ERROR "kiln_add_kernels(${target}): an imported target cannot take sources")
  endif()
  if(NOT type MATCHES "^(EXECUTABLE|SHARED_LIBRARY|STATIC_LIBRARY|MODULE_LIBRARY|OBJECT_LIBRARY)$")
    message(FATAL_ERROR "kiln_add_kernels(${target}): needs an executable or a library that compiles sources (this is an ${type})")
  endif()
  get_target_property(target_source_dir ${target} SOURCE_DIR)
  if(NOT target_source_dir STREQUAL CMAKE_CURRENT_SOURCE_DIR)
    message(FATAL_ERROR "kiln_add_kernels(${target}): call it in the directory that created the target (${target_source_dir})")
  endif()

  # NAME: the bundle's file name, symbol and function name.
  if(DEFINED arg_NAME)
    string(MAKE_C_IDENTIFIER "${arg_NAME}" checked)
    if(NOT checked STREQUAL arg_NAME)
      message(FATAL_ERROR "kiln_add_kernels(${target}): NAME \"${arg_NAME}\" is not a C identifier (try \"${checked}\")")
    endif()
    _kiln_identifier(checked "${arg_NAME}")
    if(NOT checked STREQUAL arg_NAME)
      message(FATAL_ERROR "kiln_add_kernels(${target}): NAME \"${arg_NAME}\" is a C++ keyword or a macro that GNU mode predefines (linux, unix, i386); try \"${checked}\"")
    endif()
    set(name "${arg_NAME}")
  else()
    _kiln_identifier(name "${target}")
  endif()
  # The name makes the bundle's symbols (kiln_bundle_<name>_begin/_end), so two bundles of one
  # name anywhere in the project would meet in a program that links both, and the linker would
  # keep one of them without a word.
  get_property(names GLOBAL PROPERTY KILN_BUNDLE_NAMES)
  if(name IN_LIST names)
    get_property(owner GLOBAL PROPERTY "KILN_BUNDLE_OWNER_${name}")
    message(FATAL_ERROR "kiln_add_kernels(${target}): a bundle named \"${name}\" is already built for ${owner}; its symbols would clash with this one's in a program that links both; give this one another NAME")
  endif()
  set_property(GLOBAL APPEND PROPERTY KILN_BUNDLE_NAMES "${name}")
  set_property(GLOBAL PROPERTY "KILN_BUNDLE_OWNER_${name}" "${target} (${CMAKE_CURRENT_SOURCE_DIR})")

  # Devices and PTX: the arguments, else the cache variables (or a normal variable of the same
  # name set by the project), else the defaults. A CMake list or a comma-separated string.
  if(arg_DEVICES)
    set(devices "${arg_DEVICES}")
  elseif(NOT "${KILN_AOT_DEVLIST}" STREQUAL "")
    set(devices "${KILN_AOT_DEVLIST}")
  else()
    get_property(devices GLOBAL PROPERTY KILN_AOT_DEVLIST_DEFAULT)
  endif()
  string(REPLACE ";" "," devices "${devices}")
  string(REPLACE " " "" devices "${devices}")
  if(DEFINED arg_PTX)
    set(ptx "${arg_PTX}")
  else()
    set(ptx "${KILN_AOT_PTX}")
  endif()

  # The kiln CLI and what the command depends on to rerun when kiln itself changes.
  get_property(exe_target GLOBAL PROPERTY KILN_EXECUTABLE_TARGET)
  if(KILN_EXECUTABLE)
    set(kiln_command "${KILN_EXECUTABLE}")
    set(kiln_depends "${KILN_EXECUTABLE}")
  elseif(TARGET ${exe_target})
    set(kiln_command "$<TARGET_FILE:${exe_target}>")
    get_target_property(exe_real ${exe_target} ALIASED_TARGET)
    get_target_property(exe_imported ${exe_target} IMPORTED)
    if(exe_real)
      set(kiln_depends ${exe_real})            # target- and file-level dependency
    elseif(NOT exe_imported)
      set(kiln_depends ${exe_target})
    else()
      set(kiln_depends "$<TARGET_FILE:${exe_target}>")
    endif()
  else()
    message(FATAL_ERROR "kiln_add_kernels(${target}): the kiln CLI target ${exe_target} does not exist here; "
                        "call find_package(kiln CONFIG REQUIRED) (or add_subdirectory kiln) in this directory or above")
  endif()

  # Absolute paths throughout: sources and include directories relative to this source
  # directory, outputs in this binary directory (CMake 3.25 resolves DEPFILE entries and
  # .incbin resolves its path differently; absolute ones mean the same everywhere).
  set(sources "")
  foreach(source IN LISTS arg_SOURCES)
    if(source MATCHES "\\$<")
      message(FATAL_ERROR "kiln_add_kernels(${target}): SOURCES take no generator expressions (${source})")
    endif()
    cmake_path(ABSOLUTE_PATH source BASE_DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}" NORMALIZE)
    get_source_file_property(generated "${source}" GENERATED)
    if(NOT EXISTS "${source}" AND NOT generated)
      message(FATAL_ERROR "kiln_add_kernels(${target}): source ${source} does not exist (nor is it generated)\n  ${usage}")
    endif()
    list(APPEND sources "${source}")
  endforeach()
  set(flags "")
  _kiln_rejoin_genex(arg_INCLUDE_DIRECTORIES ${arg_INCLUDE_DIRECTORIES})
  _kiln_rejoin_genex(arg_DEFINES ${arg_DEFINES})
  foreach(dir IN LISTS arg_INCLUDE_DIRECTORIES)
    if(dir MATCHES "\\$<")
      # A generator expression may give a list (or nothing): -I before each item.
      list(APPEND flags "$<$<BOOL:${dir}>:-I$<SEMICOLON>$<JOIN:${dir},$<SEMICOLON>-I$<SEMICOLON>>>")
    else()
      cmake_path(ABSOLUTE_PATH dir BASE_DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}" NORMALIZE)
      list(APPEND flags -I "${dir}")
    endif()
  endforeach()
  foreach(define IN LISTS arg_DEFINES)
    if(define MATCHES "\\$<")
      list(APPEND flags "$<$<BOOL:${define}>:-D$<SEMICOLON>$<JOIN:${define},$<SEMICOLON>-D$<SEMICOLON>>>")
    else()
      list(APPEND flags -D "${define}")
    endif()
  endforeach()

  set(out_dir "${CMAKE_CURRENT_BINARY_DIR}/kiln")
  set(bundle "${out_dir}/${name}.kiln")
  set(depfile "${out_dir}/${name}.kiln.d")
  set(header "${out_dir}/include/kiln/bundles/${name}.hpp")
  set(embed "${out_dir}/${name}_embed.cpp")
  if(bundle MATCHES "[\"\\\\\n]")
    message(FATAL_ERROR "kiln_add_kernels(${target}): the build directory's path (${out_dir}) holds a quote, "
                        "backslash or newline, which the .incbin directive cannot name")
  endif()
  file(MAKE_DIRECTORY "${out_dir}/include/kiln/bundles")

  set(command "${kiln_command}" build ${sources} -o "${bundle}" --devices "${devices}")
  if(NOT ptx STREQUAL "")
    list(APPEND command --ptx "${ptx}")
  else()
    set(ptx "of the oldest listed")
  endif()
  if(arg_EMBED_SOURCE)
    list(APPEND command --embed-source)
  endif()
  if(arg_SPLIT_KERNELS)
    list(APPEND command --split-kernels)
  endif()
  if(DEFINED arg_COMPRESS)
    list(APPEND command --compress "${arg_COMPRESS}")
  endif()
  list(APPEND command ${flags} --depfile "${depfile}")

  # The options as a file the command depends on: a changed device list, PTX or define reruns
  # it with every generator (Ninja notices a changed command line by itself; Makefiles do not).
  # file(GENERATE) evaluates generator expressions (per configuration) and rewrites the file
  # only when its content changes.
  set(options_file "${out_dir}/${name}.kiln.options-$<CONFIG>")
  string(JOIN "\n" options_text ${command})
  file(GENERATE OUTPUT "${options_file}" CONTENT "${options_text}\n" TARGET ${target})

  add_custom_command(
    OUTPUT "${bundle}"
    COMMAND ${command}
    DEPENDS ${sources} ${kiln_depends} "${options_file}"
    DEPFILE "${depfile}"
    WORKING_DIRECTORY "${CMAKE_CURRENT_BINARY_DIR}"
    COMMENT "kiln: building bundle ${name} for ${devices} (PTX ${ptx})"
    COMMAND_EXPAND_LISTS
    VERBATIM)

  _kiln_write_if_changed("${header}" "\
// Generated by kiln_add_kernels(${target}) from ${CMAKE_CURRENT_LIST_FILE}: do not edit.
#pragma once

#include <kiln/bundle_view.hpp>

namespace kiln::bundles {

// The kiln bundle embedded in this binary by kiln_add_kernels(). Open it with
// kiln::Bundle::open(kiln::bundles::${name}()) or hand it to the runtime. Hidden: each
// shared library or executable reaches only the bundles linked into it.
[[nodiscard, gnu::visibility(\"hidden\")]] kiln::BundleView ${name}() noexcept;

}  // namespace kiln::bundles
")

  # The bytes go in through the assembler's .incbin (top-level asm in a C++ file, so only the
  # CXX language is needed): the compiler never sees them, so a bundle of hundreds of MB costs
  # no more to embed than to copy. OBJECT_DEPENDS recompiles this file, and only this one, when
  # the bundle changes. GCC and Clang emit the .note.GNU-stack note themselves.
  set(begin "kiln_bundle_${name}_begin")
  set(end "kiln_bundle_${name}_end")
  _kiln_write_if_changed("${embed}" "\
// Generated by kiln_add_kernels(${target}): do not edit. Embeds ${bundle}
// (devices ${devices}, PTX ${ptx}).
#include \"kiln/bundles/${name}.hpp\"

#include <cstdint>

__asm__(
    \".pushsection .rodata.kiln_${name},\\\"a\\\"\\n\"
    \".balign 64\\n\"
    \".globl ${begin}\\n\"
    \".hidden ${begin}\\n\"
    \".type ${begin}, STT_OBJECT\\n\"
    \"${begin}:\\n\"
    \".incbin \\\"${bundle}\\\"\\n\"
    \".size ${begin}, . - ${begin}\\n\"
    \".globl ${end}\\n\"
    \".hidden ${end}\\n\"
    \"${end}:\\n\"
    \".popsection\\n\");

extern \"C\" {
[[gnu::visibility(\"hidden\")]] extern const std::uint8_t ${begin}[];
[[gnu::visibility(\"hidden\")]] extern const std::uint8_t ${end}[];
}

kiln::BundleView kiln::bundles::${name}() noexcept {
  // Through integers: begin and end are distinct objects to the compiler.
  const auto first = reinterpret_cast<std::uintptr_t>(${begin});
  const auto last = reinterpret_cast<std::uintptr_t>(${end});
  return {${begin}, static_cast<std::size_t>(last - first)};
}
")

  target_sources(${target} PRIVATE "${embed}" "${header}" "${bundle}")
  set_source_files_properties("${embed}" PROPERTIES
    OBJECT_DEPENDS "${bundle}"
    SKIP_UNITY_BUILD_INCLUSION ON
    SKIP_PRECOMPILE_HEADERS ON)
  set_source_files_properties("${bundle}" PROPERTIES HEADER_FILE_ONLY ON)

  # The bundle belongs to the binary it is linked into: its header is PRIVATE for executables
  # and shared libraries (the function is hidden there) and PUBLIC for static and object
  # libraries, whose code lands in whatever links them.
  if(type STREQUAL "STATIC_LIBRARY" OR type STREQUAL "OBJECT_LIBRARY")
    set(scope PUBLIC)
  else()
    set(scope PRIVATE)
  endif()
  target_include_directories(${target} ${scope} "$<BUILD_INTERFACE:${out_dir}/include>")
  target_link_libraries(${target} ${scope} kiln::runtime)
  set_property(TARGET ${target} APPEND PROPERTY KILN_BUNDLES "${name}")
endfunction()

# kiln built from source (add_subdirectory, FetchContent, or kiln itself): a later
# find_package(kiln) in the same build finds the targets that already exist, through the
# redirect directory that FetchContent's OVERRIDE_FIND_PACKAGE uses too (CMake 3.24+). So a
# project's find_package(kiln CONFIG REQUIRED) works unchanged whichever way kiln comes in.
if(TARGET kiln_runtime AND PROJECT_NAME STREQUAL "kiln" AND DEFINED CMAKE_FIND_PACKAGE_REDIRECTS_DIR)
  include(CMakePackageConfigHelpers)
  file(WRITE "${CMAKE_FIND_PACKAGE_REDIRECTS_DIR}/kiln-config.cmake"
       "# Written by kiln's ${CMAKE_CURRENT_LIST_FILE}: kiln is part of this build.\n"
       "include(\"${CMAKE_CURRENT_LIST_FILE}\")\n"
       "include(\"\${CMAKE_CURRENT_LIST_DIR}/kiln-extra.cmake\" OPTIONAL)\n")
  if(PROJECT_VERSION_MAJOR EQUAL 0)
    set(_kiln_compatibility SameMinorVersion)
  else()
    set(_kiln_compatibility SameMajorVersion)
  endif()
  write_basic_package_version_file("${CMAKE_FIND_PACKAGE_REDIRECTS_DIR}/kiln-config-version.cmake"
                                   VERSION ${PROJECT_VERSION} COMPATIBILITY ${_kiln_compatibility})
  unset(_kiln_compatibility)
endif()
