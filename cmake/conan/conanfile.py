# Conan 2 recipe for keygate. From the repository root:
#   conan create cmake/conan --build=missing
# Consumers: find_package(keygate REQUIRED COMPONENTS sqlite) and link
# keygate::keygate / keygate::sqlite (and keygate::conformance, a backend's
# tests), the same names as the CMake export.
import os

from conan import ConanFile
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import copy


class KeygateConan(ConanFile):
    name = "keygate"
    version = "0.1.0"
    license = "MIT"
    description = "Embeddable C++20 library that issues, stores and verifies API keys"
    topics = ("api-keys", "authentication", "security")
    settings = "os", "arch", "compiler", "build_type"
    options = {"shared": [True, False], "fPIC": [True, False], "with_sqlite": [True, False]}
    default_options = {"shared": False, "fPIC": True, "with_sqlite": True}
    def export_sources(self):
        root = os.path.join(self.recipe_folder, "..", "..")
        for pattern in ("CMakeLists.txt", "LICENSE", "include/*", "src/*", "cmake/*",
                        "tests/key_store_conformance/*"):
            copy(self, pattern, root, self.export_sources_folder)

    def requirements(self):
        self.requires("openssl/[>=3.0 <4]")
        self.requires("abseil/20220623.1", transitive_headers=True)
        self.requires("boost/[>=1.74]", options={"header_only": True})
        if self.options.with_sqlite:
            self.requires("sqlite3/[>=3.40]")

    def layout(self):
        cmake_layout(self)

    def generate(self):
        tc = CMakeToolchain(self)
        tc.cache_variables["KEYGATE_BUILD_TESTS"] = False
        tc.cache_variables["KEYGATE_BUILD_BENCH"] = False
        tc.cache_variables["KEYGATE_BUILD_EXAMPLES"] = False
        tc.cache_variables["KEYGATE_BUILD_CLI"] = False
        tc.cache_variables["KEYGATE_INSTALL"] = True
        tc.cache_variables["KEYGATE_WITH_SQLITE"] = bool(self.options.with_sqlite)
        # The HTTP framework adapters are not packaged here: left to the
        # build's defaults, they were built whenever Boost.Beast's headers
        # (always, with header-only Boost) or a system cpp-httplib were found,
        # and installed without a component to reach them by.
        tc.cache_variables["KEYGATE_WITH_BEAST"] = False
        tc.cache_variables["KEYGATE_WITH_HTTPLIB"] = False
        # Nor is the PostgreSQL store: built whenever a system libpq is found,
        # it would link it undeclared.
        tc.cache_variables["KEYGATE_WITH_POSTGRES"] = False
        tc.generate()
        CMakeDeps(self).generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure()
        cmake.build()

    def package(self):
        CMake(self).install()

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "keygate")
        core = self.cpp_info.components["core"]
        core.set_property("cmake_target_name", "keygate::keygate")
        core.set_property("pkg_config_name", "keygate")
        core.libs = ["keygate"]
        core.requires = ["openssl::crypto", "abseil::abseil", "boost::headers"]
        if self.options.with_sqlite:
            sqlite = self.cpp_info.components["sqlite"]
            sqlite.set_property("cmake_target_name", "keygate::sqlite")
            sqlite.libs = ["keygate_sqlite"]
            sqlite.requires = ["core", "sqlite3::sqlite3"]
        # The KeyStore conformance suite, for a backend's own tests.
        conformance = self.cpp_info.components["conformance"]
        conformance.set_property("cmake_target_name", "keygate::conformance")
        conformance.libs = ["keygate_conformance"]
        conformance.requires = ["core"]
