# Install rules: headers, libraries, the CMake package (targets, config,
# version file) and a pkg-config file. Also export()s the build tree so a
# consumer can find_package(keygate) from a build directory.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(KEYGATE_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/keygate")
set(KEYGATE_EXPORTED_COMPONENTS "")

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/keygate"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
  FILES_MATCHING PATTERN "*.h")
install(FILES "${PROJECT_BINARY_DIR}/include/keygate/version.h"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/keygate")

install(TARGETS keygate EXPORT keygateTargets
  ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}"
  INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(EXPORT keygateTargets NAMESPACE keygate:: DESTINATION "${KEYGATE_CMAKE_DIR}")
export(EXPORT keygateTargets NAMESPACE keygate::
  FILE "${PROJECT_BINARY_DIR}/keygateTargets.cmake")

if(TARGET keygate_sqlite)
  list(APPEND KEYGATE_EXPORTED_COMPONENTS sqlite)
  install(TARGETS keygate_sqlite EXPORT keygate-sqliteTargets
    ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}"
    LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
    INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
  install(EXPORT keygate-sqliteTargets NAMESPACE keygate:: DESTINATION "${KEYGATE_CMAKE_DIR}")
  export(EXPORT keygate-sqliteTargets NAMESPACE keygate::
    FILE "${PROJECT_BINARY_DIR}/keygate-sqliteTargets.cmake")
endif()
# Framework adapters: components "beast" and "httplib".
foreach(adapter beast httplib)
  if(TARGET keygate_${adapter})
    list(APPEND KEYGATE_EXPORTED_COMPONENTS ${adapter})
    install(TARGETS keygate_${adapter} EXPORT keygate-${adapter}Targets
      ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}"
      LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
      INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
    install(EXPORT keygate-${adapter}Targets NAMESPACE keygate::
      DESTINATION "${KEYGATE_CMAKE_DIR}")
    export(EXPORT keygate-${adapter}Targets NAMESPACE keygate::
      FILE "${PROJECT_BINARY_DIR}/keygate-${adapter}Targets.cmake")
  endif()
endforeach()

if(TARGET keygate_cli)
  install(TARGETS keygate_cli RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")
endif()

configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/keygateConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/keygateConfig.cmake"
  INSTALL_DESTINATION "${KEYGATE_CMAKE_DIR}")
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/keygateConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES
  "${PROJECT_BINARY_DIR}/keygateConfig.cmake"
  "${PROJECT_BINARY_DIR}/keygateConfigVersion.cmake"
  DESTINATION "${KEYGATE_CMAKE_DIR}")

configure_file("${PROJECT_SOURCE_DIR}/cmake/keygate.pc.in"
  "${PROJECT_BINARY_DIR}/keygate.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/keygate.pc"
  DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
