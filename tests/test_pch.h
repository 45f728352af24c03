// tests/test_pch.h: the precompiled header of every Catch2 test binary (tests/CMakeLists.txt).
// Third-party headers only (Catch2, the standard library, Abseil), which every test parses and
// none changes: a test must still include what it uses, and keygate's own headers stay out so
// that editing one rebuilds only the tests that include it. Parsing Catch2 alone is about 2 s of
// each test file's compile time.
#ifndef KEYGATE_TESTS_TEST_PCH_H_
#define KEYGATE_TESTS_TEST_PCH_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "catch.h"

#endif  // KEYGATE_TESTS_TEST_PCH_H_
