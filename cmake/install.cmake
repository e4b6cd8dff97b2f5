include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(BACKPROP_CMAKE_DIR "${CMAKE_INSTALL_DATADIR}/cmake/backprop"
    CACHE STRING "Where the CMake package files are installed")

install(TARGETS backprop EXPORT backprop-targets FILE_SET HEADERS)
install(EXPORT backprop-targets NAMESPACE backprop:: DESTINATION "${BACKPROP_CMAKE_DIR}")
export(EXPORT backprop-targets NAMESPACE backprop::
       FILE "${PROJECT_BINARY_DIR}/backprop-targets.cmake")

# The component "mpi" (backprop::mpi) has its own export file, which the config loads
# only when asked for with find_package(backprop COMPONENTS mpi).
if(TARGET backprop_mpi)
  install(TARGETS backprop_mpi EXPORT backprop-mpi-targets FILE_SET HEADERS)
  install(EXPORT backprop-mpi-targets NAMESPACE backprop:: DESTINATION "${BACKPROP_CMAKE_DIR}")
  export(EXPORT backprop-mpi-targets NAMESPACE backprop::
         FILE "${PROJECT_BINARY_DIR}/backprop-mpi-targets.cmake")
endif()

configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/backprop-config.cmake.in"
  "${PROJECT_BINARY_DIR}/backprop-config.cmake"
  INSTALL_DESTINATION "${BACKPROP_CMAKE_DIR}")
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/backprop-config-version.cmake"
  COMPATIBILITY SameMajorVersion ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/backprop-config.cmake"
              "${PROJECT_BINARY_DIR}/backprop-config-version.cmake"
        DESTINATION "${BACKPROP_CMAKE_DIR}")

# The .pc file finds its prefix from its own location, so the installed tree
# can be moved (and `cmake --install --prefix` works).
set(BACKPROP_PC_DIR "${CMAKE_INSTALL_DATADIR}/pkgconfig")
if(IS_ABSOLUTE "${BACKPROP_PC_DIR}")
  set(BACKPROP_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH _bp_pc_up "/${BACKPROP_PC_DIR}" "/")
  string(REGEX REPLACE "/$" "" _bp_pc_up "${_bp_pc_up}")
  set(BACKPROP_PC_PREFIX "\${pcfiledir}/${_bp_pc_up}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(BACKPROP_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(BACKPROP_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file("${PROJECT_SOURCE_DIR}/cmake/backprop.pc.in"
               "${PROJECT_BINARY_DIR}/backprop.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/backprop.pc"
        DESTINATION "${BACKPROP_PC_DIR}")
