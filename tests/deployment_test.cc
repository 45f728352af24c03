// Deployment::Create: validated, immutable settings.

#include "keygate/deployment.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "catch.h"
#include "keygate/token.h"

namespace keygate {
namespace {

// Expects Create to fail with kInvalidArgument whose message starts with
// `field` followed by a colon.
void ExpectInvalid(DeploymentOptions o, std::string_view field) {
  auto d = Deployment::Create(std::move(o));
  INFO("expected " << field << ", got " << d.status());
  REQUIRE(d.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message(d.status().message());
  CHECK(message.rfind(absl::StrCat(std::string(field), ":"), 0) == 0);
}

TEST_CASE("Default deployment: prefix kg, preview/test and production/live, built-in scopes",
          "[deployment]") {
  auto d = Deployment::Create({});
  REQUIRE(d.ok());
  const Deployment& dep = **d;
  CHECK(dep.token_prefix() == "kg");
  REQUIRE(dep.environments().size() == 2);
  CHECK(dep.environments()[0].name == "preview");
  CHECK(dep.environments()[0].tag == "test");
  CHECK(dep.environments()[1].name == "production");
  CHECK(dep.environments()[1].tag == "live");
  CHECK(dep.scopes().Contains("admin"));
  CHECK(dep.scopes().names().size() == 3);
  CHECK(dep.scopes_ptr() != nullptr);
  CHECK_FALSE(dep.hasher().keyed());

  REQUIRE(dep.FindEnvironment("production") != nullptr);
  CHECK(dep.FindEnvironment("production")->tag == "live");
  REQUIRE(dep.FindEnvironmentByTag("test") != nullptr);
  CHECK(dep.FindEnvironmentByTag("test")->name == "preview");
  CHECK(dep.FindEnvironment("live") == nullptr);  // tags are not names
  CHECK(dep.FindEnvironmentByTag("production") == nullptr);
  CHECK(dep.FindEnvironment("") == nullptr);
}

TEST_CASE("Deployment with a pepper uses HMAC digests", "[deployment][digest]") {
  DeploymentOptions o;
  o.pepper = Secret(std::string(kMinPepperSize, 'p'));
  auto d = Deployment::Create(o);
  REQUIRE(d.ok());
  CHECK((*d)->hasher().keyed());
  auto plain = Deployment::Create({});
  REQUIRE(plain.ok());
  auto a = (*d)->hasher().Hash("kg_live_x");
  auto b = (*plain)->hasher().Hash("kg_live_x");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(*a != *b);

  o.pepper = Secret(std::string(kMinPepperSize - 1, 'p'));
  ExpectInvalid(o, "pepper");
}

TEST_CASE("Deployment validates the token prefix", "[deployment][validation]") {
  for (const char* bad : {"", "k", "KG", "k_g", "abcdefghijk", "kg-1"}) {
    INFO(bad);
    DeploymentOptions o;
    o.token_prefix = bad;
    ExpectInvalid(o, "token_prefix");
  }
  for (const char* good : {"ab", "acme", "abcdefghij", "x9"}) {
    DeploymentOptions o;
    o.token_prefix = good;
    CHECK(Deployment::Create(o).ok());
  }
}

TEST_CASE("Deployment validates environments", "[deployment][validation]") {
  DeploymentOptions o;
  o.environments.clear();
  ExpectInvalid(o, "environments");

  auto with = [](std::vector<EnvironmentSpec> envs) {
    DeploymentOptions d;
    d.environments = std::move(envs);
    return d;
  };
  ExpectInvalid(with({{"", "a", std::nullopt}}), "environments[0].name");
  ExpectInvalid(with({{"Prod", "a", std::nullopt}}), "environments[0].name");
  ExpectInvalid(with({{"pro d", "a", std::nullopt}}), "environments[0].name");
  ExpectInvalid(with({{std::string(33, 'e'), "a", std::nullopt}}), "environments[0].name");
  ExpectInvalid(with({{"ok", "a", std::nullopt}, {"prod", "", std::nullopt}}),
                "environments[1].tag");
  ExpectInvalid(with({{"prod", "LIVE", std::nullopt}}), "environments[0].tag");
  ExpectInvalid(with({{"prod", "li_ve", std::nullopt}}), "environments[0].tag");
  ExpectInvalid(with({{"prod", std::string(kMaxEnvTagLength + 1, 't'), std::nullopt}}),
                "environments[0].tag");
  ExpectInvalid(with({{"prod", "a", std::nullopt}, {"prod", "b", std::nullopt}}),
                "environments[1].name");
  ExpectInvalid(with({{"prod", "a", std::nullopt}, {"dev", "a", std::nullopt}}),
                "environments[1].tag");
  auto dup =
      Deployment::Create(with({{"prod", "live", std::nullopt}, {"dev", "live", std::nullopt}}));
  CHECK(dup.status().message() == "environments[1].tag: duplicate 'live'");

  ExpectInvalid(with({{"prod", "p", RateLimitPolicy{0, absl::Seconds(1), 1}}}),
                "environments[0].default_rate_limit.rate");
  ExpectInvalid(with({{"prod", "p", RateLimitPolicy{5, absl::Seconds(1), 0}}}),
                "environments[0].default_rate_limit.burst");
  ExpectInvalid(with({{"prod", "p", RateLimitPolicy{5, absl::Hours(48), 1}}}),
                "environments[0].default_rate_limit.period");

  auto ok = Deployment::Create(with({{"my_env-1", "e1", RateLimitPolicy{5, absl::Seconds(1), 2}},
                                     {std::string(32, 'x'), std::string(16, 't'), std::nullopt}}));
  REQUIRE(ok.ok());
  REQUIRE((*ok)->FindEnvironment("my_env-1") != nullptr);
  CHECK((*ok)->FindEnvironment("my_env-1")->default_rate_limit ==
        RateLimitPolicy{5, absl::Seconds(1), 2});
}

TEST_CASE("Deployment keeps the application's scope registry", "[deployment][scope]") {
  auto registry = ScopeRegistry::Builder().Add("read:projects").Build();
  REQUIRE(registry.ok());
  DeploymentOptions o;
  o.scopes = *registry;
  auto d = Deployment::Create(o);
  REQUIRE(d.ok());
  CHECK((*d)->scopes().Contains("read:projects"));
  CHECK((*d)->scopes_ptr() == *registry);
}

TEST_CASE("Deployment errors never echo a token pasted into a field",
          "[deployment][validation][secret]") {
  auto token = GenerateToken("kg", "live");
  REQUIRE(token.ok());
  const std::string t(token->Reveal(InsecureSecretAccess::Get()));
  DeploymentOptions o;
  o.token_prefix = t;
  auto a = Deployment::Create(o);
  CHECK(std::string(a.status().message()).find(t) == std::string::npos);
  o = {};
  o.environments = {{t, "live", std::nullopt}};
  auto b = Deployment::Create(o);
  CHECK_FALSE(b.ok());
  CHECK(std::string(b.status().message()).find(t) == std::string::npos);
  o = {};
  o.environments = {{"prod", t, std::nullopt}};
  auto c = Deployment::Create(o);
  CHECK_FALSE(c.ok());
  CHECK(std::string(c.status().message()).find(t) == std::string::npos);
  // Looking an environment up by a caller's name: known, unknown, pasted.
  auto d = Deployment::Create({});
  REQUIRE(d.ok());
  auto prod = (*d)->Environment("production");
  REQUIRE(prod.ok());
  CHECK((*prod)->tag == "live");
  CHECK((*d)->Environment("").status().message() == "environment: must not be empty");
  CHECK((*d)->Environment("moon").status().message() == "environment: unknown environment 'moon'");
  CHECK((*d)->Environment(t).status().message() == "environment: unknown environment");
}

// --- ReadPepperFile ------------------------------------------------------------

// A fresh directory under $TMPDIR (or /tmp), removed with its contents.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl =
        absl::StrCat(base != nullptr && *base != '\0' ? base : "/tmp", "/keygate-pepper-XXXXXX");
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string File(const std::string& name) const { return absl::StrCat(path_, "/", name); }

 private:
  std::string path_;
};

// Recognisable pepper bytes: no message may ever contain them.
constexpr char kPepperBytes[] = "PEPPERBYTES-0123456789-abcdefghijklmnop";

std::string WriteFile(const TempDir& dir, const std::string& name, const std::string& bytes,
                      mode_t mode) {
  const std::string path = dir.File(name);
  { std::ofstream(path, std::ios::binary) << bytes; }
  REQUIRE(::chmod(path.c_str(), mode) == 0);
  return path;
}

std::string PepperOf(const PepperFile& f) {
  return std::string(f.pepper.Reveal(InsecureSecretAccess::Get()));
}

TEST_CASE("ReadPepperFile reads a private regular file, one trailing newline removed",
          "[deployment][pepper]") {
  TempDir dir;
  for (const std::string& ending : {std::string(), std::string("\n"), std::string("\r\n")}) {
    INFO("ending " << ending.size());
    const std::string path =
        WriteFile(dir, "pepper", std::string(kPepperBytes) + ending, S_IRUSR | S_IWUSR);
    absl::StatusOr<PepperFile> f = ReadPepperFile(path);
    INFO(f.status());
    REQUIRE(f.ok());
    CHECK(PepperOf(*f) == kPepperBytes);
    CHECK(f->warnings.empty());
  }
  // A lone trailing '\r' is not a newline: it stays part of the pepper.
  absl::StatusOr<PepperFile> cr =
      ReadPepperFile(WriteFile(dir, "cr", std::string(kPepperBytes) + "\r", 0600));
  REQUIRE(cr.ok());
  CHECK(PepperOf(*cr) == std::string(kPepperBytes) + "\r");
  // Read-only by its owner is the tightest mode, and fine; so are exactly
  // kMinPepperSize bytes and exactly kMaxPepperFileSize.
  CHECK(ReadPepperFile(WriteFile(dir, "ro", kPepperBytes, S_IRUSR)).ok());
  absl::StatusOr<PepperFile> shortest =
      ReadPepperFile(WriteFile(dir, "min", std::string(kMinPepperSize, 'p'), 0600));
  REQUIRE(shortest.ok());
  CHECK(shortest->pepper.size() == kMinPepperSize);
  absl::StatusOr<PepperFile> longest =
      ReadPepperFile(WriteFile(dir, "max", std::string(kMaxPepperFileSize, 'p'), 0600));
  REQUIRE(longest.ok());
  CHECK(longest->pepper.size() == kMaxPepperFileSize);
  // The pepper works: a deployment takes it.
  absl::StatusOr<PepperFile> f = ReadPepperFile(dir.File("pepper"));
  REQUIRE(f.ok());
  DeploymentOptions o;
  o.pepper = std::move(f->pepper);
  CHECK(Deployment::Create(std::move(o)).ok());
  // A linked directory on the way is fine: only the file itself may not be a link.
  REQUIRE(::symlink(dir.File("").c_str(), dir.File("linked-dir").c_str()) == 0);
  CHECK(ReadPepperFile(dir.File("linked-dir/pepper")).ok());
}

TEST_CASE("ReadPepperFile refuses what is not a private regular pepper, naming the reason",
          "[deployment][pepper][secret]") {
  TempDir dir;
  std::vector<absl::Status> refusals;
  const auto expect = [&refusals](const std::string& path, absl::StatusCode code,
                                  const std::string& reason) {
    absl::StatusOr<PepperFile> f = ReadPepperFile(path);
    INFO(path << ": " << f.status());
    REQUIRE_FALSE(f.ok());
    CHECK(f.status().code() == code);
    CHECK(std::string(f.status().message()) == absl::StrCat("pepper file ", path, ": ", reason));
    refusals.push_back(f.status());
  };
  const std::string good = WriteFile(dir, "good", kPepperBytes, 0600);

  expect(dir.File("missing"), absl::StatusCode::kNotFound,
         "cannot open: No such file or directory");
  REQUIRE(::mkdir(dir.File("dir").c_str(), 0700) == 0);
  expect(dir.File("dir"), absl::StatusCode::kFailedPrecondition,
         "is a directory, not a regular file");
  if (::access("/dev/zero", R_OK) == 0) {
    expect("/dev/zero", absl::StatusCode::kFailedPrecondition,
           "is a character device, not a regular file");
  }
  REQUIRE(::symlink(good.c_str(), dir.File("link").c_str()) == 0);
  expect(dir.File("link"), absl::StatusCode::kFailedPrecondition,
         "is a symbolic link (pass its target; linked directories in the path are fine)");
  expect(WriteFile(dir, "short", std::string(kMinPepperSize - 1, 'p') + "\n", 0600),
         absl::StatusCode::kFailedPrecondition, "holds 31 bytes; a pepper needs at least 32");
  expect(WriteFile(dir, "empty", "", 0600), absl::StatusCode::kFailedPrecondition,
         "holds 0 bytes; a pepper needs at least 32");
  expect(WriteFile(dir, "big", std::string(kMaxPepperFileSize + 1, 'p'), 0600),
         absl::StatusCode::kFailedPrecondition,
         "is larger than 4096 bytes; a pepper file holds only the pepper");
  expect(WriteFile(dir, "0644", kPepperBytes, 0644), absl::StatusCode::kFailedPrecondition,
         "is readable by group or others (mode 0644); make it private to its owner (chmod 600)");
  expect(WriteFile(dir, "0640", kPepperBytes, 0640), absl::StatusCode::kFailedPrecondition,
         "is readable by group or others (mode 0640); make it private to its owner (chmod 600)");
  expect(WriteFile(dir, "0602", kPepperBytes, 0602), absl::StatusCode::kFailedPrecondition,
         "is writable by group or others (mode 0602); make it private to its owner (chmod 600)");
  expect(WriteFile(dir, "0666", kPepperBytes, 0666), absl::StatusCode::kFailedPrecondition,
         "is readable and writable by group or others (mode 0666); make it private to its "
         "owner (chmod 600)");

  // A FIFO with no writer: a blocking open would wait forever. The call runs
  // in a child that SIGALRM ends if it hangs, so a regression fails the test
  // instead of stalling it.
  const std::string fifo = dir.File("fifo");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::alarm(30);
    const absl::StatusCode code = ReadPepperFile(fifo).status().code();
    ::_exit(code == absl::StatusCode::kFailedPrecondition ? 0 : 1);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  INFO("child status " << status);
  REQUIRE(WIFEXITED(status));  // not killed by SIGALRM: it did not hang
  CHECK(WEXITSTATUS(status) == 0);
  expect(fifo, absl::StatusCode::kFailedPrecondition, "is a FIFO, not a regular file");

  for (const absl::Status& s : refusals) {
    CHECK(std::string(s.message()).find("PEPPERBYTES") == std::string::npos);
  }
}

TEST_CASE("ReadPepperFile reads a shared pepper file only when allowed, with a warning",
          "[deployment][pepper]") {
  TempDir dir;
  PepperFileOptions allow;
  allow.allow_group_or_world_access = true;
  const std::string path = WriteFile(dir, "pepper", std::string(kPepperBytes) + "\n", 0644);
  CHECK(ReadPepperFile(path).status().code() == absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<PepperFile> f = ReadPepperFile(path, allow);
  INFO(f.status());
  REQUIRE(f.ok());
  CHECK(PepperOf(*f) == kPepperBytes);
  REQUIRE(f->warnings.size() == 1);
  CHECK(f->warnings[0] ==
        absl::StrCat("pepper file ", path,
                     ": is readable by group or others (mode 0644); read anyway (group or world "
                     "access allowed)"));
  // Allowing shared access allows nothing else.
  REQUIRE(::mkdir(dir.File("dir").c_str(), 0755) == 0);
  CHECK(ReadPepperFile(dir.File("dir"), allow).status().code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(ReadPepperFile(WriteFile(dir, "short", "tiny", 0644), allow).status().code() ==
        absl::StatusCode::kFailedPrecondition);
  // A private file gives no warning even when shared access is allowed.
  absl::StatusOr<PepperFile> private_file =
      ReadPepperFile(WriteFile(dir, "private", kPepperBytes, 0600), allow);
  REQUIRE(private_file.ok());
  CHECK(private_file->warnings.empty());
}

}  // namespace
}  // namespace keygate
