# Install rules: headers, libraries, the CMake package (targets, config,
# version file) and pkg-config files. Also export()s the build tree so a
# consumer can find_package(keygate) from a build directory.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(KEYGATE_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/keygate")
set(KEYGATE_EXPORTED_COMPONENTS "")

# include/keygate/testing/ goes with the conformance component below.
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/keygate"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
  FILES_MATCHING PATTERN "*.h"
  PATTERN "testing" EXCLUDE)
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

# Components with a library of their own: the SQLite and PostgreSQL stores,
# the Redis rate limiter, webhook delivery, the framework adapters and the admin API.
foreach(component sqlite postgres redis webhooks beast httplib admin)
  if(TARGET keygate_${component})
    list(APPEND KEYGATE_EXPORTED_COMPONENTS ${component})
    install(TARGETS keygate_${component} EXPORT keygate-${component}Targets
      ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}"
      LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
      INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
    install(EXPORT keygate-${component}Targets NAMESPACE keygate::
      DESTINATION "${KEYGATE_CMAKE_DIR}")
    export(EXPORT keygate-${component}Targets NAMESPACE keygate::
      FILE "${PROJECT_BINARY_DIR}/keygate-${component}Targets.cmake")
  endif()
endforeach()

# The KeyStore conformance suite for backends' tests: component "conformance".
if(TARGET keygate_conformance)
  list(APPEND KEYGATE_EXPORTED_COMPONENTS conformance)
  install(TARGETS keygate_conformance EXPORT keygate-conformanceTargets
    ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}"
    INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
  install(EXPORT keygate-conformanceTargets NAMESPACE keygate::
    DESTINATION "${KEYGATE_CMAKE_DIR}")
  export(EXPORT keygate-conformanceTargets NAMESPACE keygate::
    FILE "${PROJECT_BINARY_DIR}/keygate-conformanceTargets.cmake")
  install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/keygate/testing"
    DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/keygate"
    FILES_MATCHING PATTERN "*.h")
endif()

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

# pkg-config: keygate.pc (core), keygate-sqlite.pc (the SQLite store),
# keygate-postgres.pc (the PostgreSQL store), keygate-redis.pc (the Redis
# rate limiter).
#
# The files are relocatable: prefix is derived from ${pcfiledir}, so they stay
# right after `cmake --install <build> --prefix <anywhere>`, for a DESTDIR or
# CPack staging tree and when the tree is moved. An absolute libdir/includedir
# (set by hand) cannot move, so it is written as is.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(KEYGATE_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(KEYGATE_PC_LIBDIR "${CMAKE_INSTALL_FULL_LIBDIR}")
  set(KEYGATE_PC_INCLUDEDIR "${CMAKE_INSTALL_FULL_INCLUDEDIR}")
else()
  # Depth of <libdir>/pkgconfig: "lib/pkgconfig" -> "../..", Debian's
  # "lib/x86_64-linux-gnu/pkgconfig" (prefix /usr) -> "../../..".
  file(RELATIVE_PATH _keygate_pc_up "/keygate-root/${CMAKE_INSTALL_LIBDIR}/pkgconfig"
    "/keygate-root")
  string(REGEX REPLACE "/$" "" _keygate_pc_up "${_keygate_pc_up}")
  set(KEYGATE_PC_PREFIX "\${pcfiledir}/${_keygate_pc_up}")
  set(KEYGATE_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
  set(KEYGATE_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()

# The pkg-config name of each CMake dependency. absl::x is absl_x.pc; a link
# dependency missing here stops configuration rather than producing a .pc
# that does not link. Header-only dependencies that no public header needs
# map to nothing.
function(_keygate_pc_module out dep)
  if(dep MATCHES "^absl::(.+)$")
    set(module "absl_${CMAKE_MATCH_1}")
  elseif(dep STREQUAL "OpenSSL::Crypto")
    set(module "libcrypto >= 3.0")
  elseif(dep STREQUAL "SQLite::SQLite3")
    set(module "sqlite3")
  elseif(dep STREQUAL "PkgConfig::KEYGATE_HIREDIS")
    set(module "hiredis")
  elseif(dep STREQUAL "PkgConfig::KEYGATE_LIBPQ")
    set(module "libpq")
  elseif(dep STREQUAL "PkgConfig::KEYGATE_LIBCURL")
    set(module "libcurl")
  elseif(dep STREQUAL "keygate::keygate")
    set(module "keygate = ${PROJECT_VERSION}")
  elseif(dep STREQUAL "keygate::sqlite")
    set(module "keygate-sqlite = ${PROJECT_VERSION}")
  elseif(dep STREQUAL "Threads::Threads" OR dep STREQUAL "Boost::headers")
    set(module "")  # threads: see CMAKE_THREAD_LIBS_INIT; Boost: private, headers only
  else()
    message(FATAL_ERROR "keygate: no pkg-config name for dependency '${dep}': "
      "add it to _keygate_pc_module() in cmake/KeygateInstall.cmake")
  endif()
  set(${out} "${module}" PARENT_SCOPE)
endfunction()

# Writes and installs <pc_name>.pc for <target>, its dependencies taken from
# the target's link libraries so that the two cannot drift apart. A static
# archive records none of its dependencies, so for a static library the
# private ones go to Requires as well: the documented
# `pkg-config --cflags --libs keygate` must link without --static.
function(_keygate_install_pc target pc_name description)
  get_target_property(all_deps ${target} LINK_LIBRARIES)
  get_target_property(interface_deps ${target} INTERFACE_LINK_LIBRARIES)
  get_target_property(type ${target} TYPE)
  get_target_property(lib ${target} OUTPUT_NAME)
  if(NOT lib)
    set(lib ${target})
  endif()
  set(public "")
  set(private "")
  foreach(dep IN LISTS all_deps)
    if(dep MATCHES "\\$<")
      message(FATAL_ERROR "keygate: ${target} links '${dep}'; ${pc_name}.pc cannot express it")
    endif()
    _keygate_pc_module(module "${dep}")
    if(module STREQUAL "")
      continue()
    endif()
    if(dep IN_LIST interface_deps OR type STREQUAL "STATIC_LIBRARY")
      list(APPEND public "${module}")
    else()
      list(APPEND private "${module}")
    endif()
  endforeach()
  list(REMOVE_DUPLICATES public)
  list(REMOVE_DUPLICATES private)
  if(public)
    list(REMOVE_ITEM private ${public})
  endif()
  list(JOIN public ", " KEYGATE_PC_REQUIRES)
  list(JOIN private ", " KEYGATE_PC_REQUIRES_PRIVATE)
  set(KEYGATE_PC_NAME "${pc_name}")
  set(KEYGATE_PC_DESCRIPTION "${description}")
  set(KEYGATE_PC_LIBS "-L\${libdir} -l${lib}")
  set(KEYGATE_PC_LIBS_PRIVATE "")
  if(CMAKE_THREAD_LIBS_INIT AND type STREQUAL "STATIC_LIBRARY")
    string(APPEND KEYGATE_PC_LIBS " ${CMAKE_THREAD_LIBS_INIT}")
  elseif(CMAKE_THREAD_LIBS_INIT)
    set(KEYGATE_PC_LIBS_PRIVATE "${CMAKE_THREAD_LIBS_INIT}")
  endif()
  configure_file("${PROJECT_SOURCE_DIR}/cmake/keygate.pc.in"
    "${PROJECT_BINARY_DIR}/${pc_name}.pc" @ONLY)
  install(FILES "${PROJECT_BINARY_DIR}/${pc_name}.pc"
    DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
endfunction()

_keygate_install_pc(keygate keygate "${PROJECT_DESCRIPTION}")
if(TARGET keygate_sqlite)
  _keygate_install_pc(keygate_sqlite keygate-sqlite "keygate's SQLite key store")
endif()
if(TARGET keygate_postgres)
  _keygate_install_pc(keygate_postgres keygate-postgres "keygate's PostgreSQL key store")
endif()
if(TARGET keygate_redis)
  _keygate_install_pc(keygate_redis keygate-redis "keygate's rate limiter shared through Redis")
endif()
if(TARGET keygate_webhooks)
  _keygate_install_pc(keygate_webhooks keygate-webhooks "keygate's webhook delivery")
endif()
if(TARGET keygate_admin)
  _keygate_install_pc(keygate_admin keygate-admin "keygate's admin API (key management over HTTP)")
endif()
