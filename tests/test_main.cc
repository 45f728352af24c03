// The Catch2 main for every test binary (v2 needs it in one TU; v3 links
// Catch2::Catch2WithMain instead and this file is empty).
#if !__has_include(<catch2/catch_all.hpp>)
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#endif
