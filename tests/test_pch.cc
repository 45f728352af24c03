// Holds tests/test_pch.h, precompiled once for every test binary (tests/CMakeLists.txt).
