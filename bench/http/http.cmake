# HTTP benchmark (issue #5, bench/http/run.sh): the per-request lookup
# baselines (PostgreSQL by digest, Redis GET + INCR/EXPIRE) against keygate's
# in-process Verifier. Built when libpq and hiredis are found (Debian:
# libpq-dev, libhiredis-dev). The wrk part uses the example server.
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(KEYGATE_LIBPQ QUIET IMPORTED_TARGET libpq)
  pkg_check_modules(KEYGATE_HIREDIS QUIET IMPORTED_TARGET hiredis)
endif()
if(TARGET PkgConfig::KEYGATE_LIBPQ AND TARGET PkgConfig::KEYGATE_HIREDIS)
  add_executable(lookup_baselines ${CMAKE_CURRENT_LIST_DIR}/lookup_baselines.cc)
  target_link_libraries(lookup_baselines PRIVATE keygate::keygate OpenSSL::Crypto
    PkgConfig::KEYGATE_LIBPQ PkgConfig::KEYGATE_HIREDIS absl::time)
  keygate_set_warnings(lookup_baselines)
else()
  message(STATUS "keygate: lookup_baselines not built (needs libpq-dev and libhiredis-dev)")
endif()
