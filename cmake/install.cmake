include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(BACKPROP_CMAKE_DIR "${CMAKE_INSTALL_DATADIR}/cmake/backprop"
    CACHE STRING "Where the CMake package files are installed")

install(TARGETS backprop EXPORT backprop-targets FILE_SET HEADERS)
install(EXPORT backprop-targets NAMESPACE backprop:: DESTINATION "${BACKPROP_CMAKE_DIR}")
export(EXPORT backprop-targets NAMESPACE backprop::
       FILE "${PROJECT_BINARY_DIR}/backprop-targets.cmake")

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

configure_file("${PROJECT_SOURCE_DIR}/cmake/backprop.pc.in"
               "${PROJECT_BINARY_DIR}/backprop.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/backprop.pc"
        DESTINATION "${CMAKE_INSTALL_DATADIR}/pkgconfig")
