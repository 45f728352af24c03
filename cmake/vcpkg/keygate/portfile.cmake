# vcpkg port for keygate, used as an overlay port:
#   vcpkg install keygate --overlay-ports=<keygate>/cmake/vcpkg
# SOURCE_PATH points at this checkout; a registry port would use vcpkg_from_git.
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

vcpkg_check_features(OUT_FEATURE_OPTIONS FEATURE_OPTIONS FEATURES sqlite KEYGATE_WITH_SQLITE)

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    ${FEATURE_OPTIONS}
    -DKEYGATE_BUILD_TESTS=OFF
    -DKEYGATE_BUILD_BENCH=OFF
    -DKEYGATE_BUILD_EXAMPLES=OFF
    -DKEYGATE_BUILD_CLI=OFF
    # The HTTP framework adapters are not part of this port (they would be
    # built whenever their frameworks happen to be found, with no dependency
    # declared for them).
    -DKEYGATE_WITH_BEAST=OFF
    -DKEYGATE_WITH_HTTPLIB=OFF
    # Nor is the PostgreSQL store: built whenever a system libpq is found,
    # it would link it undeclared.
    -DKEYGATE_WITH_POSTGRES=OFF
    -DKEYGATE_INSTALL=ON)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH lib/cmake/keygate)
vcpkg_fixup_pkgconfig()
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/debug/include")
file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
