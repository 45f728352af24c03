# The SQLite store (keygate::sqlite): conformance, cross-process change feed,
# error conditions, schema, and the SIGKILL crash-safety test.
if(TARGET keygate_sqlite)
  find_package(SQLite3 REQUIRED)  # raw connections that play "another process"
  keygate_add_test(sqlite_conformance_test SOURCES sqlite_conformance_test.cc
    LIBS keygate::sqlite SQLite::SQLite3 LABELS sqlite store concurrent TIMEOUT 300)
  keygate_add_test(sqlite_key_store_test SOURCES sqlite_key_store_test.cc
    LIBS keygate::sqlite SQLite::SQLite3 LABELS sqlite store concurrent TIMEOUT 300)

  # Several processes (fork()ed, no threads) opening one new file at once.
  keygate_add_test(sqlite_open_test SOURCES sqlite_open_test.cc
    LIBS keygate::sqlite LABELS sqlite store TIMEOUT 120)

  # The second process of the crash and cross-process tests.
  add_executable(sqlite_test_helper sqlite_helper_main.cc)
  target_link_libraries(sqlite_test_helper PRIVATE keygate::sqlite keygate::keygate)
  keygate_set_warnings(sqlite_test_helper)

  keygate_add_test(sqlite_crash_test SOURCES sqlite_crash_test.cc
    LIBS keygate::sqlite SQLite::SQLite3 LABELS sqlite crash TIMEOUT 300)
  # Power cuts simulated by a VFS that keeps unsynced writes apart: about
  # 1,000 cuts at synchronous=FULL plus the OFF and NORMAL runs.
  keygate_add_test(sqlite_powerloss_test SOURCES sqlite_powerloss_test.cc powerloss_vfs.cc
    LIBS keygate::sqlite SQLite::SQLite3 LABELS sqlite powerloss TIMEOUT 300)
  keygate_add_test(sqlite_feed_test SOURCES sqlite_feed_test.cc
    LIBS keygate::sqlite LABELS sqlite feed concurrent TIMEOUT 120)
  foreach(t sqlite_crash_test sqlite_feed_test)
    add_dependencies(${t} sqlite_test_helper)
    target_compile_definitions(${t} PRIVATE
      KEYGATE_SQLITE_TEST_HELPER="$<TARGET_FILE:sqlite_test_helper>")
  endforeach()
endif()
