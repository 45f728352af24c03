// tests/catch.h: one include for Catch2 v2 (Debian 12) and v3.
#ifndef KEYGATE_TESTS_CATCH_H_
#define KEYGATE_TESTS_CATCH_H_

#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif

#endif  // KEYGATE_TESTS_CATCH_H_
