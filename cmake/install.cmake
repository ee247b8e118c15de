# Install rules and the kiln package (included by the root CMakeLists.txt when KILN_INSTALL):
#   <prefix>/lib/libkiln.so*, <prefix>/bin/kiln, <prefix>/include/kiln/*.hpp,
#   <prefix>/lib/cmake/kiln/{kilnConfig,kilnConfigVersion,kilnTargets*,KilnAddKernels}.cmake
# find_package(kiln CONFIG) then gives kiln::runtime, kiln::kiln (the CLI, an imported
# executable) and kiln_add_kernels(). The build tree is a package too (export() below):
# -Dkiln_DIR=<kiln build dir> uses a kiln that was built but not installed.
include(CMakePackageConfigHelpers)

set(KILN_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/kiln" CACHE STRING
    "Where the kiln CMake package files are installed, relative to the prefix")
mark_as_advanced(KILN_INSTALL_CMAKEDIR)

# kiln::runtime and kiln::kiln in the export set, as in the build tree.
set_target_properties(kiln_runtime PROPERTIES EXPORT_NAME runtime)
set_target_properties(kiln_cli PROPERTIES EXPORT_NAME kiln)
get_target_property(_kiln_cli_rpath kiln_cli INSTALL_RPATH)
if(NOT _kiln_cli_rpath)
  # The installed CLI finds the installed libkiln.so wherever the prefix is moved.
  set_target_properties(kiln_cli PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
endif()
unset(_kiln_cli_rpath)

install(TARGETS kiln_runtime kiln_cli EXPORT kilnTargets
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT kiln_Development
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT kiln_Runtime
                NAMELINK_COMPONENT kiln_Development
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT kiln_Development)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/kiln DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        COMPONENT kiln_Development FILES_MATCHING PATTERN "*.hpp")
install(EXPORT kilnTargets NAMESPACE kiln:: DESTINATION ${KILN_INSTALL_CMAKEDIR}
        FILE kilnTargets.cmake COMPONENT kiln_Development)

# 0.x: a minor version may break (semantic versioning); from 1.0 on, the major version.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(_kiln_compatibility SameMinorVersion)
else()
  set(_kiln_compatibility SameMajorVersion)
endif()
write_basic_package_version_file(${PROJECT_BINARY_DIR}/kilnConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY ${_kiln_compatibility})
unset(_kiln_compatibility)

# The installed package.
set(KILN_CONFIG_ADD_KERNELS "\${CMAKE_CURRENT_LIST_DIR}/KilnAddKernels.cmake")
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/kilnConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/cmake/install/kilnConfig.cmake
                              INSTALL_DESTINATION ${KILN_INSTALL_CMAKEDIR})
install(FILES ${PROJECT_BINARY_DIR}/cmake/install/kilnConfig.cmake
              ${PROJECT_BINARY_DIR}/kilnConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/KilnAddKernels.cmake
        DESTINATION ${KILN_INSTALL_CMAKEDIR} COMPONENT kiln_Development)

# The build-tree package: the same config beside an export() of the build-tree targets; it
# includes KilnAddKernels.cmake from the source tree, so an edit there needs no reconfigure.
set(KILN_CONFIG_ADD_KERNELS "${PROJECT_SOURCE_DIR}/cmake/KilnAddKernels.cmake")
export(EXPORT kilnTargets NAMESPACE kiln:: FILE ${PROJECT_BINARY_DIR}/kilnTargets.cmake)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/kilnConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/kilnConfig.cmake
                              INSTALL_DESTINATION ${PROJECT_BINARY_DIR}
                              INSTALL_PREFIX ${PROJECT_BINARY_DIR})
unset(KILN_CONFIG_ADD_KERNELS)
