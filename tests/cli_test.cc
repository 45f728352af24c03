// Drives the BUILT `keygate` binary as an operator would: the key lifecycle,
// --json on every command, filters and paging, errors, usage and exit codes,
// the pepper file, the database defaults, a cross-process revoke seen by a
// store subscription in this process, a grep of the database proving no
// token is stored in plaintext, escaping of stored text that other code wrote,
// --json staying valid UTF-8, database names that are not plain files, and
// the audit log: every change under its actor, read back filtered and paged; and, built with
// keygate::webhooks, the webhook delivery log (`webhooks deliveries`) of a dispatcher run here
// against a local HTTPS receiver, and the webhook flags' errors.
// Also unit-tests the JSON string writer and the text escaping it shares a
// UTF-8 decoder with.

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/format.h"

#include "catch.h"
#include "internal/json_string.h"
#include "keygate/sqlite/sqlite_key_store.h"
#include "keygate/token.h"
#include "sqlite_test_util.h"
#include "test_util.h"
#ifdef KEYGATE_TEST_CLI_WEBHOOKS
#include <chrono>
#include <thread>

#include "keygate/webhook_signature.h"
#include "keygate/webhooks/webhook_dispatcher.h"
#include "webhook_receiver.h"
#endif

#ifndef KEYGATE_CLI_BINARY
#error "KEYGATE_CLI_BINARY must name the built keygate binary"
#endif

namespace keygate {
namespace {

using testing::Child;
using testing::TempDir;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

struct Result {
  int code = -1;
  std::string out;
  std::string err;
};

// One CLI run against `db` (or no --db when empty).
class Cli {
 public:
  explicit Cli(const TempDir& dir) : dir_(dir), db_(dir.File("keygate.db")) {}

  const std::string& db() const { return db_; }

  Result Run(std::vector<std::string> args, const std::string& stdin_data = "",
             std::vector<std::string> env = {}, bool with_db = true, const std::string& cwd = "") {
    std::vector<std::string> argv{KEYGATE_CLI_BINARY};
    if (with_db) {
      argv.push_back("--db");
      argv.push_back(db_);
    }
    argv.insert(argv.end(), args.begin(), args.end());
    const std::string err_path = dir_.File("stderr.txt");
    auto given = [&env](std::string_view name) {
      return std::any_of(env.begin(), env.end(), [name](const std::string& e) {
        return std::string_view(e).substr(0, e.find('=')) == name;
      });
    };
    // The actor of a change defaults to $KEYGATE_ACTOR, $USER, $LOGNAME: the
    // caller's values are replaced (USER) or removed unless the test sets
    // them. So are $KEYGATE_PEPPER_FILE, which would change every digest, and the KEK files.
    if (!given("USER")) env.push_back("USER=cli-test");
    for (const char* name :
         {"KEYGATE_ACTOR", "LOGNAME", "KEYGATE_PEPPER_FILE", "KEYGATE_KEK_FILE",
          "KEYGATE_PREVIOUS_KEK_FILES", "KEYGATE_WEBHOOK_STATE", "KEYGATE_WEBHOOK_SECRET_FILE"}) {
      if (!given(name)) env.push_back(name);
    }
    Result r;
    {
      Child child(argv, env, err_path, /*pipe_stdin=*/true, cwd);
      child.WriteStdin(stdin_data);
      child.CloseStdin();
      r.out = child.ReadAll();
      const int status = child.Wait();
      r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    r.err = ReadFile(err_path);
    all_stderr_ += r.err;
    return r;
  }

  // Everything the CLI ever wrote to stderr in this test.
  const std::string& all_stderr() const { return all_stderr_; }

 private:
  const TempDir& dir_;
  std::string db_;
  std::string all_stderr_;
};

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

// The value of a top-level-ish "field":"value" in compact JSON (first match).
std::string JsonField(const std::string& json, const std::string& field) {
  const std::string key = absl::StrCat("\"", field, "\":\"");
  const std::size_t at = json.find(key);
  if (at == std::string::npos) return "";
  const std::size_t start = at + key.size();
  return json.substr(start, json.find('"', start) - start);
}

// Brackets balance outside strings and the text is one JSON value per line.
bool LooksLikeJson(const std::string& text) {
  const std::string t = Trim(text);
  if (t.empty() || (t.front() != '{' && t.front() != '[')) return false;
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') in_string = true;
    if (c == '{' || c == '[') ++depth;
    if (c == '}' || c == ']') --depth;
    if (depth < 0) return false;
  }
  return depth == 0 && !in_string;
}

// Strict UTF-8 (RFC 3629), written out independently of the code under test.
bool IsValidUtf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    std::size_t n = 0;
    std::uint32_t cp = 0;
    if (b < 0x80) {
      ++i;
      continue;
    } else if (b >= 0xC2 && b <= 0xDF) {
      n = 2;
      cp = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
      n = 3;
      cp = b & 0x0F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      n = 4;
      cp = b & 0x07;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    const std::uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

// Text a terminal could act on: C0 controls other than the newlines that end
// lines, DEL, and C1 controls (U+0080-U+009F) encoded in UTF-8.
bool HasTerminalControls(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto b = static_cast<unsigned char>(s[i]);
    if ((b < 0x20 && b != '\n') || b == 0x7F) return true;
    if (b == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
        static_cast<unsigned char>(s[i + 1]) <= 0x9F) {
      return true;
    }
  }
  return false;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

std::string CreateToken(Cli& cli, const std::vector<std::string>& extra, std::string* id) {
  std::vector<std::string> args{"--json", "create"};
  args.insert(args.end(), extra.begin(), extra.end());
  Result r = cli.Run(args);
  INFO(r.err);
  REQUIRE(r.code == 0);
  *id = JsonField(r.out, "id");
  return JsonField(r.out, "token");
}

TEST_CASE("keygate CLI: create, list, verify, revoke, restore, delete", "[cli]") {
  TempDir dir;
  Cli cli(dir);

  Result created = cli.Run({"create", "--name", "CI pipeline", "--owner", "alice", "--env",
                            "production", "--scope", "read:all,write:all"});
  INFO(created.err);
  REQUIRE(created.code == 0);
  const std::string token = Trim(created.out);
  TokenView view;
  REQUIRE(ParseToken(token, &view) == TokenError::kNone);  // stdout: the token alone
  CHECK(view.env_tag == "live");
  CHECK_THAT(created.err, Catch::Contains("shown only once"));
  CHECK_FALSE(absl::StrContains(created.err, token));
  CHECK(Exists(cli.db()));

  Result list = cli.Run({"list"});
  REQUIRE(list.code == 0);
  for (const char* col :
       {"NAME", "ENVIRONMENT", "SCOPES", "STATE", "CREATED", "LAST USED", "HINT"}) {
    CHECK_THAT(list.out, Catch::Contains(col));
  }
  CHECK_THAT(list.out, Catch::Contains("CI pipeline"));
  CHECK_THAT(list.out, Catch::Contains("production"));
  CHECK_THAT(list.out, Catch::Contains("read:all,write:all"));
  CHECK_THAT(list.out, Catch::Contains("active"));
  CHECK_THAT(list.out, Catch::Contains("never"));
  CHECK_THAT(list.out, Catch::Contains(TokenHint(token)));
  CHECK_FALSE(absl::StrContains(list.out, token));
  const std::size_t id_at = list.out.find("key_");
  REQUIRE(id_at != std::string::npos);
  const std::string id = list.out.substr(id_at, kKeyIdLength);

  Result ok = cli.Run({"verify", "-"}, token + "\n");
  CHECK(ok.code == 0);
  CHECK_THAT(ok.out, Catch::StartsWith("ok: " + id));
  Result scoped = cli.Run({"verify", "-", "--scope", "admin"}, token + "\n");
  CHECK(scoped.code == 1);
  CHECK_THAT(scoped.out, Catch::Contains("insufficient_scope"));
  CHECK_THAT(scoped.out, Catch::Contains("403"));

  Result revoked = cli.Run({"revoke", id});
  CHECK(revoked.code == 0);
  Result rejected = cli.Run({"verify", "-"}, token);
  CHECK(rejected.code == 1);
  CHECK_THAT(rejected.out, Catch::Contains("revoked"));
  CHECK_THAT(rejected.out, Catch::Contains("401"));
  Result list_revoked = cli.Run({"list", "--state", "revoked"});
  CHECK_THAT(list_revoked.out, Catch::Contains(id));

  CHECK(cli.Run({"restore", id}).code == 0);
  CHECK(cli.Run({"verify", "-"}, token).code == 0);

  Result refused = cli.Run({"delete", id});
  CHECK(refused.code == 2);
  CHECK_THAT(refused.err, Catch::Contains("--yes"));
  CHECK(cli.Run({"verify", "-"}, token).code == 0);  // still there
  CHECK(cli.Run({"delete", id, "--yes"}).code == 0);
  Result unknown = cli.Run({"verify", "-"}, token);
  CHECK(unknown.code == 1);
  CHECK_THAT(unknown.out, Catch::Contains("unknown"));
  Result gone = cli.Run({"show", id});
  CHECK(gone.code == 3);
  CHECK_THAT(gone.err, Catch::Contains("not found"));

  CHECK_FALSE(absl::StrContains(cli.all_stderr(), token));
}

TEST_CASE("keygate CLI: --json on every command", "[cli][json]") {
  TempDir dir;
  Cli cli(dir);
  std::string id;
  const std::string token =
      CreateToken(cli,
                  {"--name", "json key", "--owner", "bob", "--env", "preview", "--scope",
                   "read:all", "--meta", "team=payments", "--rate", "100/1m", "--expires", "30d"},
                  &id);
  TokenView parsed;
  REQUIRE(ParseToken(token, &parsed) == TokenError::kNone);
  REQUIRE(id.rfind("key_", 0) == 0);

  const std::vector<std::vector<std::string>> commands = {
      {"list"},       {"show", id},    {"modify", id, "--name", "renamed"},
      {"revoke", id}, {"restore", id}, {"scopes"},
      {"envs"},
  };
  for (const auto& cmd : commands) {
    std::vector<std::string> args{"--json"};
    args.insert(args.end(), cmd.begin(), cmd.end());
    Result r = cli.Run(args);
    INFO(cmd.front() << ": " << r.err);
    CHECK(r.code == 0);
    CHECK(LooksLikeJson(r.out));
  }
  // --json also works after the command.
  Result show = cli.Run({"show", id, "--json"});
  CHECK(LooksLikeJson(show.out));
  CHECK(JsonField(show.out, "name") == "renamed");
  CHECK(JsonField(show.out, "state") == "active");
  CHECK(JsonField(show.out, "team") == "payments");
  CHECK_THAT(show.out, Catch::Contains("\"rate\":100"));
  CHECK_THAT(show.out, Catch::Contains("\"period_ms\":60000"));

  Result v = cli.Run({"--json", "verify", "-"}, token);
  CHECK(v.code == 0);
  CHECK(LooksLikeJson(v.out));
  CHECK_THAT(v.out, Catch::Contains("\"ok\":true"));
  CHECK(JsonField(v.out, "outcome") == "ok");
  CHECK(JsonField(v.out, "key_id") == id);

  Result rolled = cli.Run({"--json", "roll", id, "--grace", "1h"});
  CHECK(rolled.code == 0);
  const std::string new_token = JsonField(rolled.out, "token");
  CHECK(ParseToken(new_token, &parsed) == TokenError::kNone);
  CHECK(new_token != token);
  CHECK(cli.Run({"verify", "-"}, new_token).code == 0);
  CHECK(cli.Run({"verify", "-"}, token).code == 0);  // within the grace period

  Result del = cli.Run({"--json", "delete", id, "--yes"});
  CHECK(del.code == 0);
  CHECK(JsonField(del.out, "deleted") == id);
  Result v2 = cli.Run({"--json", "verify", "-"}, new_token);
  CHECK(v2.code == 1);
  CHECK(JsonField(v2.out, "outcome") == "unknown");
  CHECK_THAT(v2.out, Catch::Contains("\"http_status\":401"));
}

TEST_CASE("keygate CLI: list filters by environment, owner, state, kind and name; pages",
          "[cli][list]") {
  TempDir dir;
  Cli cli(dir);
  std::string a, b, c, d;
  CreateToken(cli, {"--name", "Deploy Bot", "--owner", "alice", "--env", "production"}, &a);
  CreateToken(cli, {"--name", "nightly backup", "--owner", "alice", "--env", "preview"}, &b);
  CreateToken(cli, {"--name", "deploy canary", "--owner", "bob", "--env", "production"}, &c);
  CreateToken(cli,
              {"--name", "personal", "--owner", "bob", "--env", "production", "--kind", "personal"},
              &d);
  REQUIRE(cli.Run({"revoke", c}).code == 0);

  auto ids = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "--json");
    args.insert(args.begin() + 1, "list");
    Result r = cli.Run(args);
    INFO(r.err);
    REQUIRE(r.code == 0);
    std::vector<std::string> found;
    for (const std::string& id : {a, b, c, d}) {
      if (absl::StrContains(r.out, id)) found.push_back(id);
    }
    return found;
  };
  CHECK(ids({}).size() == 4);
  CHECK(ids({"--env", "preview"}) == std::vector<std::string>{b});
  CHECK(ids({"--owner", "bob"}).size() == 2);
  CHECK(ids({"--state", "revoked"}) == std::vector<std::string>{c});
  CHECK(ids({"--kind", "personal"}) == std::vector<std::string>{d});
  CHECK(ids({"--search", "DEPLOY"}).size() == 2);
  CHECK(ids({"-s", "deploy", "--owner", "alice"}) == std::vector<std::string>{a});
  CHECK(ids({"--search", "no such"}).empty());

  Result page = cli.Run({"--json", "list", "--limit", "3"});
  REQUIRE(page.code == 0);
  const std::string cursor = JsonField(page.out, "next_cursor");
  REQUIRE_FALSE(cursor.empty());
  Result rest = cli.Run({"--json", "list", "--limit", "3", "--cursor", cursor});
  REQUIRE(rest.code == 0);
  CHECK(JsonField(rest.out, "next_cursor").empty());
  int total = 0;
  for (const std::string& id : {a, b, c, d}) {
    total += absl::StrContains(page.out, id) + absl::StrContains(rest.out, id);
  }
  CHECK(total == 4);
  Result all = cli.Run({"list", "--limit", "1", "--all"});
  for (const std::string& id : {a, b, c, d}) CHECK_THAT(all.out, Catch::Contains(id));
  Result human_page = cli.Run({"list", "--limit", "2"});
  CHECK_THAT(human_page.err, Catch::Contains("--cursor"));
}

TEST_CASE("keygate CLI: errors go to stderr with usage and distinct exit codes", "[cli][errors]") {
  TempDir dir;
  Cli cli(dir);

  Result no_command = cli.Run({});
  CHECK(no_command.code == 2);
  CHECK_THAT(no_command.err, Catch::Contains("Usage:"));
  CHECK(no_command.out.empty());

  Result bad_flag = cli.Run({"list", "--frobnicate"});
  CHECK(bad_flag.code == 2);
  CHECK_THAT(bad_flag.err, Catch::Contains("--frobnicate"));
  CHECK_THAT(bad_flag.err, Catch::Contains("Usage: keygate list"));

  Result unknown_cmd = cli.Run({"explode"});
  CHECK(unknown_cmd.code == 2);
  CHECK_THAT(unknown_cmd.err, Catch::Contains("Usage:"));

  Result missing = cli.Run({"create", "--name", "x", "--owner", "y"});
  CHECK(missing.code == 2);
  CHECK_THAT(missing.err, Catch::Contains("--env"));
  CHECK_THAT(missing.err, Catch::Contains("Usage: keygate create"));

  Result bad_limit = cli.Run({"list", "--limit", "5000"});
  CHECK(bad_limit.code == 2);

  // Reading commands never create a database.
  Result list_missing = cli.Run({"list"});
  CHECK(list_missing.code == 3);
  CHECK_THAT(list_missing.err, Catch::Contains("does not exist"));
  CHECK_FALSE(Exists(cli.db()));

  Result bad_scope =
      cli.Run({"create", "--name", "x", "--owner", "y", "--env", "production", "--scope", "root"});
  CHECK(bad_scope.code == 3);
  CHECK_THAT(bad_scope.err, Catch::Contains("scopes: unknown scope 'root'"));
  Result bad_env = cli.Run({"create", "--name", "x", "--owner", "y", "--env", "staging"});
  CHECK(bad_env.code == 3);
  CHECK_THAT(bad_env.err, Catch::Contains("environment"));
  Result bad_hook = cli.Run({"create", "--name", "x", "--owner", "y", "--env", "production",
                             "--webhook", "http://example.com/hook"});
  CHECK(bad_hook.code == 3);
  CHECK_THAT(bad_hook.err, Catch::Contains("https"));
  Result bad_expiry = cli.Run(
      {"create", "--name", "x", "--owner", "y", "--env", "production", "--expires", "soon"});
  CHECK(bad_expiry.code == 2);

  std::string id;
  const std::string token =
      CreateToken(cli, {"--name", "k", "--owner", "o", "--env", "preview"}, &id);
  // A token pasted where a key id belongs is refused and never echoed.
  Result pasted = cli.Run({"revoke", token});
  CHECK(pasted.code == 2);
  CHECK_THAT(pasted.err, Catch::Contains("looks like a token"));
  Result extra = cli.Run({"create", "--name", "x", "--owner", "y", "--env", "preview", token});
  CHECK(extra.code == 2);
  Result stale = cli.Run({"modify", id, "--name", "n", "--if-version", "7"});
  CHECK(stale.code == 3);
  CHECK_THAT(stale.err, Catch::Contains("version conflict"));
  Result nothing = cli.Run({"modify", id});
  CHECK(nothing.code == 2);
  Result garbage = cli.Run({"verify", "-"}, "not-a-token\n");
  CHECK(garbage.code == 1);
  CHECK_THAT(garbage.out, Catch::Contains("malformed"));
  // Change the last checksum character (to one it is not already: the token is random).
  std::string corrupted = token;
  corrupted.back() = corrupted.back() == 'x' ? 'y' : 'x';
  Result flipped = cli.Run({"verify", "-"}, corrupted);
  CHECK(flipped.code == 1);
  CHECK_THAT(flipped.out, Catch::Contains("malformed"));
  CHECK_FALSE(absl::StrContains(cli.all_stderr(), token));
  CHECK_FALSE(absl::StrContains(cli.all_stderr(), token.substr(8, 43)));

  for (const char* cmd : {"create", "list", "show", "modify", "revoke", "restore", "delete", "roll",
                          "verify", "scopes", "envs"}) {
    Result help = cli.Run({cmd, "--help"});
    INFO(cmd);
    CHECK(help.code == 0);
    CHECK_THAT(help.out, Catch::Contains(absl::StrCat("Usage: keygate ", cmd)));
  }
}

TEST_CASE("keygate CLI: database from $KEYGATE_DB or ./keygate.db", "[cli]") {
  TempDir dir;
  Cli cli(dir);
  const std::string env_db = dir.File("from-env.db");
  Result r = cli.Run({"create", "--name", "env", "--owner", "o", "--env", "preview"}, "",
                     {"KEYGATE_DB=" + env_db}, /*with_db=*/false);
  CHECK(r.code == 0);
  CHECK(Exists(env_db));
  Result cwd = cli.Run({"create", "--name", "cwd", "--owner", "o", "--env", "preview"}, "",
                       {"KEYGATE_DB"}, /*with_db=*/false, dir.path());
  CHECK(cwd.code == 0);
  CHECK(Exists(dir.File("keygate.db")));
  // --db wins over the environment.
  Result both = cli.Run({"list"}, "", {"KEYGATE_DB=" + env_db});
  CHECK_THAT(both.out, Catch::Contains("cwd"));
  CHECK_FALSE(absl::StrContains(both.out, " env "));
}

TEST_CASE("keygate CLI: $KEYGATE_PEPPER_FILE keys the digests", "[cli][pepper]") {
  TempDir dir;
  Cli cli(dir);
  const std::string pepper = dir.File("pepper");
  { std::ofstream(pepper) << std::string(40, 'p') << "\n"; }
  REQUIRE(::chmod(pepper.c_str(), 0600) == 0);
  const std::vector<std::string> with_pepper{"KEYGATE_PEPPER_FILE=" + pepper};
  Result r = cli.Run({"create", "--name", "peppered", "--owner", "o", "--env", "production"}, "",
                     with_pepper);
  REQUIRE(r.code == 0);
  const std::string token = Trim(r.out);
  CHECK(cli.Run({"verify", "-"}, token, with_pepper).code == 0);
  Result without = cli.Run({"verify", "-"}, token, {"KEYGATE_PEPPER_FILE"});
  CHECK(without.code == 1);
  CHECK_THAT(without.out, Catch::Contains("unknown"));

  { std::ofstream(pepper) << "short"; }
  Result short_pepper = cli.Run({"verify", "-"}, token, with_pepper);
  CHECK(short_pepper.code == 3);
  CHECK_THAT(short_pepper.err, Catch::Contains("pepper"));
  Result missing = cli.Run({"scopes"}, "", {"KEYGATE_PEPPER_FILE=" + dir.File("nope")});
  CHECK(missing.code == 3);
}

TEST_CASE("keygate CLI: recoverable keys: reveal, and reseal after a KEK rotation",
          "[cli][recoverable]") {
  TempDir dir;
  Cli cli(dir);
  const auto kek = [&dir](const std::string& name, char fill) {
    const std::string path = dir.File(name);
    { std::ofstream(path) << std::string(32, fill); }
    REQUIRE(::chmod(path.c_str(), 0600) == 0);
    return path;
  };
  const std::string old_kek = kek("kek-old", 'o');
  const std::string new_kek = kek("kek-new", 'n');
  std::string plain_id;
  CreateToken(cli, {"--name", "hash-only", "--owner", "alice", "--env", "production"}, &plain_id);
  std::string id;
  const std::string token = CreateToken(
      cli, {"--kek-file", old_kek, "--name", "kept", "--owner", "alice", "--env", "production"},
      &id);
  REQUIRE(!token.empty());
  CHECK_THAT(cli.all_stderr(), Catch::Contains("read it again"));

  Result r = cli.Run({"--kek-file", old_kek, "reveal", id});
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK(Trim(r.out) == token);
  r = cli.Run({"reveal", id}, "", {"KEYGATE_KEK_FILE=" + old_kek});
  CHECK(Trim(r.out) == token);
  r = cli.Run({"--json", "--kek-file", old_kek, "reveal", id});
  CHECK(JsonField(r.out, "token") == token);
  CHECK(r.out.find("\"recoverable\":true") != std::string::npos);
  r = cli.Run({"reveal", id});  // no KEK: a usage error
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--kek-file"));
  r = cli.Run({"--kek-file", old_kek, "reveal", plain_id});
  CHECK(r.code == 3);
  CHECK_THAT(r.err, Catch::Contains("not recoverable"));

  // The new KEK alone cannot open it; reseal with the old one as previous; then it can.
  r = cli.Run({"--kek-file", new_kek, "reveal", id});
  CHECK(r.code == 3);
  CHECK_THAT(r.err, Catch::Contains("not loaded"));
  r = cli.Run({"--kek-file", new_kek, "--previous-kek-file", old_kek, "reseal"});
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("Resealed 1 of 1"));
  r = cli.Run({"reseal"}, "",
              {"KEYGATE_KEK_FILE=" + new_kek, "KEYGATE_PREVIOUS_KEK_FILES=" + old_kek});
  CHECK_THAT(r.out, Catch::Contains("Resealed 0 of 1"));
  r = cli.Run({"--kek-file", new_kek, "reveal", id});
  CHECK(r.code == 0);
  CHECK(Trim(r.out) == token);
  std::string bytes;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) bytes += ReadFile(cli.db() + suffix);
  CHECK(bytes.find(token) == std::string::npos);
  CHECK(bytes.find("kge1.") != std::string::npos);  // the sealed copy is there, encrypted

  // A roll without the KEK leaves the key hash-only.
  r = cli.Run({"roll", id});
  REQUIRE(r.code == 0);
  r = cli.Run({"--kek-file", new_kek, "reveal", id});
  CHECK(r.code == 3);

  // Every reveal is in the audit log; no token reached stderr.
  r = cli.Run({"audit", "--key", id});
  CHECK(Lines(r.out).size() >= 6);
  std::size_t reveals = 0;
  for (const std::string& line : Lines(r.out)) reveals += line.find("revealed") != line.npos;
  CHECK(reveals == 4);
  CHECK(cli.all_stderr().find(token) == std::string::npos);
}

TEST_CASE("keygate CLI: the database holds no token in plaintext", "[cli][security]") {
  TempDir dir;
  Cli cli(dir);
  std::vector<std::string> tokens;
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    std::string id;
    tokens.push_back(CreateToken(cli,
                                 {"--name", absl::StrCat("grep me ", i), "--owner", "alice",
                                  "--env", i % 2 ? "production" : "preview"},
                                 &id));
    ids.push_back(id);
  }
  Result rolled = cli.Run({"--json", "roll", ids[0], "--grace", "1h"});
  REQUIRE(rolled.code == 0);
  tokens.push_back(JsonField(rolled.out, "token"));
  REQUIRE(cli.Run({"revoke", ids[1]}).code == 0);

  std::string bytes;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) bytes += ReadFile(cli.db() + suffix);
  REQUIRE(bytes.size() > 4096);
  for (const std::string& t : tokens) {
    TokenView v;
    REQUIRE(ParseToken(t, &v) == TokenError::kNone);
    CHECK(bytes.find(t) == std::string::npos);
    CHECK(bytes.find(v.secret) == std::string::npos);
    CHECK(bytes.find(v.secret.substr(10, 20)) == std::string::npos);
  }
  // The grep does find what is meant to be there.
  CHECK(bytes.find("grep me 3") != std::string::npos);
  CHECK(bytes.find(TokenHint(tokens[2])) != std::string::npos);
}

TEST_CASE("keygate CLI: a revoke from the CLI reaches a subscribed store in another process",
          "[cli][feed]") {
  TempDir dir;
  Cli cli(dir);
  std::string id;
  CreateToken(cli, {"--name", "watched", "--owner", "o", "--env", "production"}, &id);

  SqliteOptions o;
  o.path = cli.db();
  o.poll_interval = absl::Milliseconds(50);
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(o);
  REQUIRE(store.ok());
  const std::uint64_t start = *(*store)->LastSequence();
  std::atomic<int> calls{0};
  auto sub = (*store)->Subscribe([&] { calls.fetch_add(1); });
  REQUIRE(sub.ok());

  // Nothing changed yet: the subscriber has not been told, and the store's
  // view of the key is active (ordering: no call before the CLI's write).
  CHECK(calls.load() == 0);
  CHECK((*store)->Get(id)->state == KeyState::kActive);
  REQUIRE(cli.Run({"revoke", id}).code == 0);
  // The 60 s deadline only guards against a hang: how soon the poller
  // notices is the cross-process latency figure, not a unit test's claim.
  REQUIRE(testing::WaitForCondition([&] { return calls.load() > 0; }, absl::Seconds(60)));
  absl::StatusOr<ChangeBatch> b = (*store)->ChangesSince(start, 10);
  REQUIRE(b.ok());
  REQUIRE(b->changes.size() == 1);
  CHECK(b->changes[0].key_id == id);
  REQUIRE(b->changes[0].record.has_value());
  CHECK(b->changes[0].record->state == KeyState::kRevoked);
}

TEST_CASE("JSON strings: invalid UTF-8 becomes U+FFFD, valid UTF-8 passes through",
          "[json][utf8]") {
  using internal::AppendJsonString;
  using internal::JsonString;
  // Valid 1- to 4-byte sequences, up to U+10FFFF, are kept byte for byte.
  const std::string valid =
      "a \xc3\xa9 \xc2\xa0 \xe2\x9c\x93 \xef\xbf\xbd \xf0\x9f\x94\x91 \xf4\x8f\xbf\xbf";
  CHECK(JsonString(valid) == "\"" + valid + "\"");
  CHECK(JsonString("caf\xe9") == "\"caf\\ufffd\"");
  CHECK(JsonString("\xe9t\xe9") == "\"\\ufffdt\\ufffd\"");
  // Each maximal invalid subpart is one replacement: a truncated sequence is
  // one, a byte that cannot continue it starts over.
  CHECK(JsonString("\xe2\x9c") == "\"\\ufffd\"");
  CHECK(JsonString("\xe2\x9cx") == "\"\\ufffdx\"");
  CHECK(JsonString("\xf0\x9f\x94") == "\"\\ufffd\"");
  CHECK(JsonString("\xf0\x9f\x94\xc3\xa9") == "\"\\ufffd\xc3\xa9\"");
  CHECK(JsonString("\x80\xbf") == "\"\\ufffd\\ufffd\"");
  // Overlong forms (of '/', U+002F), surrogates and code points above
  // U+10FFFF are invalid; so are bytes that never occur in UTF-8.
  CHECK(JsonString("\xc0\xaf") == "\"\\ufffd\\ufffd\"");
  CHECK(JsonString("\xc1\xbf") == "\"\\ufffd\\ufffd\"");
  CHECK(JsonString("\xe0\x80\xaf") == "\"\\ufffd\\ufffd\\ufffd\"");
  CHECK(JsonString("\xf0\x80\x80\xaf") == "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
  CHECK(JsonString("\xed\xa0\x80") == "\"\\ufffd\\ufffd\\ufffd\"");  // U+D800
  CHECK(JsonString("\xed\xbf\xbf") == "\"\\ufffd\\ufffd\\ufffd\"");  // U+DFFF
  CHECK(JsonString("\xed\x9f\xbf") == "\"\xed\x9f\xbf\"");           // U+D7FF is fine
  CHECK(JsonString("\xf4\x90\x80\x80") == "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
  CHECK(JsonString("\xf5\xff\xfe") == "\"\\ufffd\\ufffd\\ufffd\"");
  // Controls: C0 and DEL as before, and C1 (U+0080-U+009F) too.
  CHECK(JsonString("a\"b\\c\nd\te\rf") == "\"a\\\"b\\\\c\\nd\\te\\rf\"");
  CHECK(JsonString(std::string("\x00\x1b\x7f", 3)) == "\"\\u0000\\u001b\\u007f\"");
  CHECK(JsonString("\xc2\x80\xc2\x9b\xc2\x9f") == "\"\\u0080\\u009b\\u009f\"");
  // Appends, and whatever the input, the output is valid UTF-8 without raw
  // controls.
  std::string out = "[";
  AppendJsonString(&out, "x");
  CHECK(out == "[\"x\"");
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  for (int b = 0; b < 256; ++b) {
    all_bytes.push_back(static_cast<char>(b));
    all_bytes.push_back(static_cast<char>(0x80 | (b & 0x3F)));
  }
  const std::string json = JsonString(all_bytes);
  CHECK(IsValidUtf8(json));
  CHECK_FALSE(HasTerminalControls(json));
  CHECK_FALSE(absl::StrContains(json, "\n"));

  // The byte-preserving variant (storage that must round-trip) keeps them.
  std::string stored;
  internal::AppendJsonStringPreservingBytes(&stored, "caf\xe9\n");
  CHECK(stored == "\"caf\xe9\\n\"");
}

TEST_CASE("Text escaping: controls, C1, bidi and invalid UTF-8 print as visible escapes",
          "[cli][escape]") {
  using cli::EscapeText;
  CHECK(EscapeText("plain text, caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x94\x91") ==
        "plain text, caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x94\x91");
  CHECK(EscapeText("a\nb\tc\rd\\e") == "a\\nb\\tc\\rd\\\\e");
  CHECK(EscapeText(std::string("\x00\x1b[31m\x7f", 7)) == "\\x00\\x1b[31m\\x7f");
  // (Literals are split where the next character would extend a \x escape.)
  CHECK(EscapeText(std::string("\xc2\x9b") + "31m") == "\\u009b31m");  // CSI as UTF-8
  CHECK(EscapeText(std::string("\xe2\x80\xae") + "abc\xe2\x81\xa9\xe2\x80\xa8") ==
        "\\u202eabc\\u2069\\u2028");
  // Invalid UTF-8 is shown byte by byte, so a stray lead byte cannot join the
  // next bytes into a control character or anything else.
  CHECK(EscapeText("caf\xe9") == "caf\\xe9");
  CHECK(EscapeText("\xc2\x1b[2J") == "\\xc2\\x1b[2J");
  CHECK(EscapeText("\xe2\x80") == "\\xe2\\x80");
  CHECK(EscapeText("\xed\xa0\x80") == "\\xed\\xa0\\x80");
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  const std::string escaped = EscapeText(all_bytes);
  CHECK(IsValidUtf8(escaped));
  CHECK_FALSE(HasTerminalControls(escaped));
  CHECK_FALSE(absl::StrContains(escaped, "\n"));
}

// Sets text fields of the key `id` in the CLI's database through the store
// API, as other code sharing the database could, bypassing KeyManager.
void StoreHostileText(const std::string& db, const std::string& id) {
  SqliteOptions o;
  o.path = db;
  absl::StatusOr<std::shared_ptr<SqliteKeyStore>> store = SqliteKeyStore::Create(o);
  REQUIRE(store.ok());
  absl::StatusOr<KeyRecord> r = (*store)->Get(id);
  REQUIRE(r.ok());
  r->name = "caf\xe9 \x1b[31mRED\x1b[0m";
  r->description = "ok\nstate:       revoked\n\x1b[2K\rhidden";
  r->owner = std::string("mallory\xc2\x9b") + "2J";  // CSI (as UTF-8) 2J: clear screen
  r->accounts = {"acct\x1b]0;title\x07"};
  r->metadata = {{"te\nam", "a\tb\x7f"}, {"bidi", "x\xe2\x80\xaey"}};
  absl::StatusOr<KeyRecord> updated = (*store)->Update(*r, keygate::testing::ModifiedNote());
  INFO(updated.status().ToString());
  REQUIRE(updated.ok());
}

TEST_CASE("keygate CLI: stored text cannot forge lines or drive the terminal", "[cli][escape]") {
  TempDir dir;
  Cli cli(dir);
  std::string id;
  const std::string token =
      CreateToken(cli, {"--name", "n", "--owner", "o", "--env", "production"}, &id);
  StoreHostileText(cli.db(), id);

  Result show = cli.Run({"show", id});
  INFO(show.err);
  REQUIRE(show.code == 0);
  CHECK_FALSE(HasTerminalControls(show.out));
  CHECK(IsValidUtf8(show.out));
  // One line per field, each "field: value"; the only state line is the real one.
  int state_lines = 0;
  for (const std::string& line : Lines(show.out)) {
    INFO(line);
    CHECK(line.find(':') != std::string::npos);
    CHECK(line.rfind(" ", 0) != 0);
    if (line.rfind("state:", 0) == 0) {
      ++state_lines;
      CHECK_THAT(line, Catch::EndsWith(" active"));
    }
  }
  CHECK(state_lines == 1);
  const std::vector<std::string> lines = Lines(show.out);
  CHECK(std::count(lines.begin(), lines.end(), "name:            caf\\xe9 \\x1b[31mRED\\x1b[0m") ==
        1);
  CHECK_THAT(show.out, Catch::Contains("ok\\nstate:       revoked\\n\\x1b[2K\\rhidden\n"));
  CHECK_THAT(show.out, Catch::Contains("mallory\\u009b2J"));
  CHECK_THAT(show.out, Catch::Contains("acct\\x1b]0;title\\x07"));
  CHECK_THAT(show.out, Catch::Contains("metadata.te\\nam: a\\tb\\x7f"));
  CHECK_THAT(show.out, Catch::Contains("x\\u202ey"));

  Result list = cli.Run({"list"});
  REQUIRE(list.code == 0);
  CHECK_FALSE(HasTerminalControls(list.out));
  CHECK(IsValidUtf8(list.out));
  CHECK(Lines(list.out).size() == 2);
  CHECK_THAT(list.out, Catch::Contains("caf\\xe9 \\x1b[31mRED\\x1b[0m"));

  Result verified = cli.Run({"verify", "-"}, token);
  CHECK(verified.code == 0);
  CHECK_FALSE(HasTerminalControls(verified.out));
  CHECK_THAT(verified.out, Catch::Contains("owner mallory\\u009b2J"));
  Result revoked = cli.Run({"revoke", id});
  CHECK(revoked.code == 0);
  CHECK_FALSE(HasTerminalControls(revoked.out));
  CHECK_THAT(revoked.out, Catch::Contains("\\x1b[31mRED"));

  // --json: valid UTF-8 JSON, the invalid byte replaced, controls escaped.
  for (const std::vector<std::string>& cmd :
       {std::vector<std::string>{"--json", "show", id}, std::vector<std::string>{"--json", "list"},
        std::vector<std::string>{"--json", "restore", id}}) {
    Result r = cli.Run(cmd);
    INFO(cmd[1]);
    CHECK(r.code == 0);
    CHECK(IsValidUtf8(r.out));
    CHECK_FALSE(HasTerminalControls(r.out));
    CHECK(LooksLikeJson(r.out));
    CHECK(Lines(r.out).size() == 1);
    CHECK_THAT(r.out, Catch::Contains("\"name\":\"caf\\ufffd \\u001b[31mRED\\u001b[0m\""));
    CHECK_THAT(r.out, Catch::Contains("\"owner\":\"mallory\\u009b2J\""));
    CHECK_THAT(r.out, Catch::Contains("\"te\\nam\":\"a\\tb\\u007f\""));
  }
  Result v = cli.Run({"--json", "verify", "-"}, token);
  CHECK(v.code == 0);
  CHECK(IsValidUtf8(v.out));
  CHECK_THAT(v.out, Catch::Contains("\"name\":\"caf\\ufffd"));
}

TEST_CASE("keygate CLI: --db names that SQLite would not open as that file are refused",
          "[cli][db]") {
  TempDir dir;
  TempDir cwd;  // where a relative name would land
  Cli cli(dir);
  const std::vector<std::string> create{"create", "--name=x", "--owner=o", "--env=production"};
  auto with_db = [&](const std::string& db, const std::vector<std::string>& args) {
    std::vector<std::string> full{"--db", db};
    full.insert(full.end(), args.begin(), args.end());
    return cli.Run(full, "", {"KEYGATE_DB"}, /*with_db=*/false, cwd.path());
  };
  for (const std::string db :
       {":memory:", "file::memory:", "file:x.db?mode=memory", "file:keygate.db", ""}) {
    INFO("--db '" << db << "'");
    Result r = with_db(db, create);
    CHECK(r.code == 2);
    CHECK(r.out.empty());  // no token for a key stored nowhere
    CHECK_THAT(r.err, Catch::Contains("--db"));
    CHECK_THAT(r.err, Catch::Contains("Usage: keygate create"));
    CHECK(with_db(db, {"list"}).code == 2);
  }
  Result memory = with_db(":memory:", create);
  CHECK_THAT(memory.err, Catch::Contains("':memory:' is not a database file"));
  Result uri = with_db("file:x.db?mode=memory", create);
  CHECK_THAT(uri.err, Catch::Contains("SQLite URI"));

  Result from_env = cli.Run(create, "", {"KEYGATE_DB=:memory:"}, /*with_db=*/false, cwd.path());
  CHECK(from_env.code == 2);
  CHECK(from_env.out.empty());
  CHECK_THAT(from_env.err, Catch::Contains("$KEYGATE_DB: ':memory:'"));
  CHECK(std::filesystem::is_empty(cwd.path()));

  // Names that merely contain such text are plain paths, and work.
  Result plain = with_db("./file:x.db", create);
  INFO(plain.err);
  CHECK(plain.code == 0);
  CHECK(Exists(cwd.File("file:x.db")));
  CHECK(with_db(dir.File(":memory:"), create).code == 0);
  CHECK(Exists(dir.File(":memory:")));
}

TEST_CASE("keygate CLI: a PostgreSQL --db URL opens PostgreSQL and is never printed",
          "[cli][db][postgres]") {
  TempDir dir;
  TempDir cwd;  // where the URL would land if it were taken for a file name
  Cli cli(dir);
  const std::string password = "cli-Pa55-never-printed";
  // No server listens there: the store fails to connect, at once.
  const std::string url = absl::StrCat("postgresql://keygate:", password,
                                       "@/keys?host=", dir.File("no-server"), "&port=5432");
  const std::vector<std::string> create{"create", "--name=x", "--owner=o", "--env=production"};
  auto run = [&](std::vector<std::string> args, std::vector<std::string> env = {"KEYGATE_DB"}) {
    return cli.Run(std::move(args), "", std::move(env), /*with_db=*/false, cwd.path());
  };
  std::vector<Result> runs;
  for (const std::string& db :
       {url, "postgres://keygate:" + password + "@/keys?host=/nonexistent"}) {
    INFO("--db " << db);
    std::vector<std::string> args{"--db", db};
    args.insert(args.end(), create.begin(), create.end());
    runs.push_back(run(args));
    runs.push_back(run({"--db", db, "list"}));
    runs.push_back(
        run({"--db", db, "--db-schema", "tenant_a", "revoke", "key_0123456789abcdefghijkl"}));
  }
  runs.push_back(run({"list"}, {"KEYGATE_DB=" + url}));
  for (const Result& r : runs) {
    INFO(r.err);
#ifdef KEYGATE_TEST_CLI_POSTGRES
    CHECK(r.code == 3);
    CHECK_THAT(r.err, Catch::Contains("keygate: postgres host="));
    CHECK_THAT(r.err, Catch::Contains("dbname=keys user=keygate"));
#else
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains("built without PostgreSQL support"));
#endif
    CHECK(r.out.empty());
    CHECK(r.err.find(password) == std::string::npos);
  }
  // Not a file name either: nothing was created.
  CHECK(std::filesystem::is_empty(cwd.path()));

#ifdef KEYGATE_TEST_CLI_POSTGRES
  // A URL libpq cannot parse: named by where it came from, not quoted.
  const std::string bad = "postgresql://keygate:" + password + "@[bad/keys";
  Result flag = run({"--db", bad, "list"});
  CHECK(flag.code == 3);
  CHECK_THAT(flag.err, Catch::Contains("keygate: --db: not a PostgreSQL connection string"));
  CHECK(flag.err.find(password) == std::string::npos);
  Result env = run({"list"}, {"KEYGATE_DB=" + bad});
  CHECK(env.code == 3);
  CHECK_THAT(env.err, Catch::Contains("keygate: $KEYGATE_DB: not a PostgreSQL connection string"));
  CHECK(env.err.find(password) == std::string::npos);
  Result schema = run({"--db", url, "--db-schema", "Not-A-Name", "list"});
  CHECK(schema.code == 3);
  CHECK_THAT(schema.err, Catch::Contains("keygate: --db-schema: must match"));
#endif

  // --db-schema belongs to PostgreSQL: with a SQLite file it is a usage error.
  Result sqlite = run({"--db", dir.File("keygate.db"), "--db-schema", "keygate", "list"});
  CHECK(sqlite.code == 2);
  CHECK_THAT(sqlite.err, Catch::Contains("--db-schema: only for a PostgreSQL database"));
}

TEST_CASE("keygate CLI: internal webhook hosts need --allow-internal-webhooks", "[cli][errors]") {
  TempDir dir;
  Cli cli(dir);
  Result refused = cli.Run({"create", "--name", "x", "--owner", "y", "--env", "production",
                            "--webhook", "https://169.254.169.254/hook"});
  CHECK(refused.code == 3);
  CHECK_THAT(refused.err, Catch::Contains("link-local"));
  CHECK_FALSE(Exists(cli.db()));
  Result allowed = cli.Run({"--allow-internal-webhooks", "create", "--name", "x", "--owner", "y",
                            "--env", "production", "--webhook", "https://10.1.2.3:8443/hook"});
  INFO(allowed.err);
  CHECK(allowed.code == 0);
  Result listed = cli.Run({"--json", "list"});
  CHECK_THAT(listed.out, Catch::Contains("https://10.1.2.3:8443/hook"));
}

TEST_CASE("keygate CLI: a refused create leaves no database file behind", "[cli][errors]") {
  TempDir dir;
  TempDir fresh;
  Cli cli(dir);
  auto create = [&](std::vector<std::string> extra) {
    std::vector<std::string> args{"create", "--name", "x", "--owner", "o"};
    args.insert(args.end(), extra.begin(), extra.end());
    return cli.Run(args, "", {"KEYGATE_DB"}, /*with_db=*/false, fresh.path());
  };
  struct Refusal {
    std::vector<std::string> args;
    int code;
    std::string message;
  };
  const std::vector<Refusal> refusals = {
      {{"--env", "prod"}, 3, "environment"},
      {{"--env", "production", "--scope", "root"}, 3, "scopes: unknown scope 'root'"},
      {{"--env", "production", "--webhook", "http://example.com/hook"}, 3, "https"},
      {{"--env", "production", "--expires", "2001-01-01T00:00:00Z"}, 3, "expires"},
      {{"--env", "production", "--description", std::string(5000, 'd')}, 3, "description"},
      {{"--env", "production", "--rate", "0/1s"}, 3, "rate"},
      {{"--env", "production", "--actor", ""}, 3, "actor"},
      {{"--env", "production", "--expires", "soon"}, 2, "--expires"},
      {{"--env", "production", "--meta", "=v"}, 2, "--meta"},
  };
  for (const Refusal& refusal : refusals) {
    Result r = create(refusal.args);
    INFO(absl::StrJoin(refusal.args, " ") << ": " << r.err);
    CHECK(r.code == refusal.code);
    CHECK(r.out.empty());
    CHECK_THAT(r.err, Catch::Contains(refusal.message));
    CHECK(std::filesystem::is_empty(fresh.path()));
    // Judge each refusal on its own.
    for (const auto& entry : std::filesystem::directory_iterator(fresh.path())) {
      std::filesystem::remove_all(entry.path());
    }
  }
  // The same command, valid, does create ./keygate.db there.
  Result ok = create({"--env", "production"});
  INFO(ok.err);
  CHECK(ok.code == 0);
  CHECK(Exists(fresh.File("keygate.db")));
}

TEST_CASE("keygate CLI: a token given as a key's name or other field is refused",
          "[cli][errors][security]") {
  TempDir dir;
  Cli cli(dir);
  std::string id;
  const std::string token =
      CreateToken(cli, {"--name", "first", "--owner", "o", "--env", "production"}, &id);
  REQUIRE(token.size() > 40);
  const std::vector<std::vector<std::string>> attempts = {
      {"create", "--name", token, "--owner", "o", "--env", "production"},
      {"create", "--name", "n", "--owner", "o", "--env", "production", "--meta", "k=" + token},
      {"create", "--name", "n", "--owner", "o", "--env", "production", "--description",
       "token: " + token},
      {"modify", id, "--name", token},
      {"modify", id, "--account", "acct-" + token},
  };
  for (const std::vector<std::string>& args : attempts) {
    Result r = cli.Run(args);
    INFO(args[0] << " " << args[1] << ": " << r.err);
    CHECK(r.code == 3);
    CHECK(r.out.empty());
    CHECK_THAT(r.err,
               Catch::Contains("holds an API token; tokens must not be stored in key fields"));
  }
  // Nothing holding it was stored: only the first key is listed, as it was.
  Result listed = cli.Run({"--json", "list"});
  REQUIRE(listed.code == 0);
  CHECK(listed.out.find("\"first\"") != std::string::npos);
  Result shown = cli.Run({"--json", "show", id});
  REQUIRE(shown.code == 0);
  CHECK(absl::StrContains(shown.out, "\"version\":1"));
  for (const std::string& text : {listed.out, shown.out, cli.all_stderr()}) {
    CHECK_FALSE(absl::StrContains(text, token.substr(8, 43)));
  }
  const std::string db = ReadFile(cli.db()) + ReadFile(cli.db() + "-wal");
  CHECK_FALSE(absl::StrContains(db, token.substr(8, 43)));
}

TEST_CASE("keygate CLI: a pepper file that is not a private regular file is refused",
          "[cli][pepper][errors]") {
  TempDir dir;
  Cli cli(dir);
  const std::string secret = "PEPPERBYTES-0123456789-abcdefghijklmnop";
  const auto file = [&](const std::string& name, const std::string& bytes, mode_t mode) {
    const std::string path = dir.File(name);
    { std::ofstream(path, std::ios::binary) << bytes; }
    REQUIRE(::chmod(path.c_str(), mode) == 0);
    return path;
  };
  REQUIRE(::mkdir(dir.File("dir").c_str(), 0700) == 0);
  REQUIRE(::mkfifo(dir.File("fifo").c_str(), 0600) == 0);
  struct Case {
    std::string path;
    std::string reason;
  };
  // Before: a directory aborted the CLI (an uncaught std::ios_failure), a
  // FIFO hung it, /dev/zero was read until memory ran out, and a 0644 file
  // was taken without a word.
  const std::vector<Case> cases = {
      {dir.File("dir"), "is a directory, not a regular file"},
      {dir.File("fifo"), "is a FIFO, not a regular file"},
      {"/dev/zero", "is a character device, not a regular file"},
      {file("shared", secret, 0644), "is readable by group or others (mode 0644)"},
      {file("short", "0123456789", 0600), "holds 10 bytes; a pepper needs at least 32"},
  };
  for (const Case& c : cases) {
    Result r = cli.Run({"scopes"}, "", {"KEYGATE_PEPPER_FILE=" + c.path});
    INFO(c.path << ": " << r.err);
    CHECK(r.code == 3);
    CHECK(r.out.empty());
    CHECK_THAT(r.err, Catch::Contains(absl::StrCat("keygate: $KEYGATE_PEPPER_FILE: pepper file ",
                                                   c.path, ": ", c.reason)));
  }
  // A refused pepper creates no database either.
  Result create = cli.Run({"create", "--name", "n", "--owner", "o", "--env", "production"}, "",
                          {"KEYGATE_PEPPER_FILE=" + dir.File("shared")});
  CHECK(create.code == 3);
  CHECK_FALSE(Exists(cli.db()));
  // --allow-shared-pepper reads the 0644 file, and says so.
  Result allowed = cli.Run(
      {"--allow-shared-pepper", "create", "--name", "n", "--owner", "o", "--env", "production"}, "",
      {"KEYGATE_PEPPER_FILE=" + dir.File("shared")});
  INFO(allowed.err);
  CHECK(allowed.code == 0);
  CHECK_THAT(allowed.err, Catch::Contains("keygate: warning: pepper file " + dir.File("shared") +
                                          ": is readable by group or others (mode 0644)"));
  // The flag accepts access by others, nothing else.
  CHECK(cli.Run({"--allow-shared-pepper", "scopes"}, "", {"KEYGATE_PEPPER_FILE=" + dir.File("dir")})
            .code == 3);
  CHECK_FALSE(absl::StrContains(cli.all_stderr(), "PEPPERBYTES"));
}

TEST_CASE("keygate CLI: a database another user owns or may write needs --allow-foreign-db",
          "[cli][errors][security]") {
  TempDir dir;
  // A shared directory, sticky like /tmp, where ./keygate.db is the default.
  const std::string shared = dir.File("shared");
  REQUIRE(::mkdir(shared.c_str(), 0700) == 0);
  REQUIRE(::chmod(shared.c_str(), 01777) == 0);
  Cli cli(dir);
  const std::vector<std::string> create = {"create", "--name", "n",         "--owner",
                                           "o",      "--env",  "production"};
  const auto in_shared = [&](std::vector<std::string> args) {
    return cli.Run(std::move(args), "", {"KEYGATE_DB"}, /*with_db=*/false, shared);
  };
  Result made = in_shared(create);
  INFO(made.err);
  REQUIRE(made.code == 0);
  const std::string db = shared + "/keygate.db";
  REQUIRE(::chmod(db.c_str(), 0666) == 0);
  std::string reason = "is writable by group or others (mode 0666)";
  for (const bool owned_by_other : {false, true}) {
    if (owned_by_other) {
      if (::geteuid() != 0) {
        WARN(
            "skipped the other-owner case: only root can chown a file to another user "
            "(CI runs as root)");
        break;
      }
      REQUIRE(::chown(db.c_str(), 65534, 65534) == 0);
      reason =
          "is owned by uid 65534, not the current user (uid 0), and writable by group or "
          "others (mode 0666)";
    }
    INFO(reason);
    for (const std::vector<std::string>& args : {create, std::vector<std::string>{"list"}}) {
      Result refused = in_shared(args);
      CHECK(refused.code == 3);
      CHECK(refused.out.empty());
      CHECK_THAT(refused.err, Catch::Contains("./keygate.db: database file " + reason));
      CHECK_THAT(refused.err, Catch::Contains("pass --allow-foreign-db to open it anyway"));
    }
    std::vector<std::string> allowed_args = {"--allow-foreign-db"};
    allowed_args.insert(allowed_args.end(), create.begin(), create.end());
    Result allowed = in_shared(allowed_args);
    INFO(allowed.err);
    CHECK(allowed.code == 0);
    CHECK_THAT(allowed.err,
               Catch::Contains("keygate: warning: sqlite ./keygate.db: database file " + reason +
                               "; opened anyway"));
  }
}

// One entry of `keygate --json audit`, read back field by field.
struct AuditEntry {
  std::uint64_t sequence = 0;
  std::string type, at, actor, key_id, owner;
  std::vector<std::string> changed_fields;
  std::uint64_t version = 0;
};

std::uint64_t JsonUint(const std::string& json, const std::string& field) {
  const std::string key = absl::StrCat("\"", field, "\":");
  const std::size_t at = json.find(key);
  if (at == std::string::npos) return 0;
  return std::strtoull(json.c_str() + at + key.size(), nullptr, 10);
}

// The objects of the "events" array of `audit --json` (no value in them holds
// a brace: ids, actors and field names here are plain words).
std::vector<AuditEntry> ParseAudit(const std::string& json) {
  std::vector<AuditEntry> entries;
  std::size_t at = json.find("\"events\":[");
  REQUIRE(at != std::string::npos);
  at += 10;
  while (at < json.size() && json[at] == '{') {
    const std::size_t end = json.find('}', at);
    REQUIRE(end != std::string::npos);
    const std::string object = json.substr(at, end + 1 - at);
    AuditEntry e;
    e.sequence = JsonUint(object, "sequence");
    e.type = JsonField(object, "type");
    e.at = JsonField(object, "at");
    e.actor = JsonField(object, "actor");
    e.key_id = JsonField(object, "key_id");
    e.owner = JsonField(object, "owner");
    e.version = JsonUint(object, "version");
    const std::size_t fields = object.find("\"changed_fields\":[");
    REQUIRE(fields != std::string::npos);
    const std::size_t fields_start = fields + 18;
    const std::string list =
        object.substr(fields_start, object.find(']', fields_start) - fields_start);
    for (absl::string_view f : absl::StrSplit(list, ',', absl::SkipEmpty())) {
      e.changed_fields.emplace_back(absl::StripPrefix(absl::StripSuffix(f, "\""), "\""));
    }
    entries.push_back(std::move(e));
    at = end + 1;
    if (at < json.size() && json[at] == ',') ++at;
  }
  REQUIRE(at < json.size());
  CHECK(json[at] == ']');
  return entries;
}

std::vector<AuditEntry> Audit(Cli& cli, std::vector<std::string> args) {
  args.insert(args.begin(), {"--json", "audit"});
  Result r = cli.Run(args);
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(LooksLikeJson(r.out));
  return ParseAudit(r.out);
}

std::vector<std::string> Types(const std::vector<AuditEntry>& entries) {
  std::vector<std::string> types;
  for (const AuditEntry& e : entries) types.push_back(e.type);
  return types;
}

TEST_CASE("keygate CLI: every change is in the audit log under --actor or the user",
          "[cli][audit]") {
  TempDir dir;
  Cli cli(dir);
  Result created = cli.Run({"--actor", "alice", "--json", "create", "--name", "ci", "--owner",
                            "team", "--env", "production", "--scope", "read:all"});
  INFO(created.err);
  REQUIRE(created.code == 0);
  const std::string id = JsonField(created.out, "id");
  const std::string token = JsonField(created.out, "token");
  REQUIRE(cli.Run({"modify", id, "--name", "ci2", "--actor", "bob"}).code == 0);
  REQUIRE(cli.Run({"revoke", id}, "", {"USER=carol"}).code == 0);
  REQUIRE(cli.Run({"restore", id}, "", {"USER=carol", "KEYGATE_ACTOR=dave"}).code == 0);
  Result rolled = cli.Run({"--json", "roll", id});  // $USER of the harness: cli-test
  REQUIRE(rolled.code == 0);
  const std::string new_token = JsonField(rolled.out, "token");
  REQUIRE(cli.Run({"--actor", "erin", "delete", id, "--yes"}).code == 0);

  const std::vector<AuditEntry> log = Audit(cli, {});
  REQUIRE(Types(log) == std::vector<std::string>{"created", "modified", "revoked", "restored",
                                                 "rolled", "deleted"});
  const std::vector<std::string> actors{"alice", "bob", "carol", "dave", "cli-test", "erin"};
  for (std::size_t i = 0; i < log.size(); ++i) {
    INFO(i);
    CHECK(log[i].actor == actors[i]);
    CHECK(log[i].key_id == id);
    CHECK(log[i].owner == "team");
    CHECK(log[i].version == (i + 1 < log.size() ? i + 1 : 0));  // 0: deleted
    if (i > 0) CHECK(log[i].sequence > log[i - 1].sequence);
    absl::Time at;
    std::string err;
    CHECK(absl::ParseTime(absl::RFC3339_full, log[i].at, &at, &err));
  }
  CHECK(std::find(log[0].changed_fields.begin(), log[0].changed_fields.end(), "scopes") !=
        log[0].changed_fields.end());
  CHECK(log[1].changed_fields == std::vector<std::string>{"name"});
  CHECK(log[2].changed_fields == std::vector<std::string>{"state"});
  CHECK(log[3].changed_fields == std::vector<std::string>{"state"});
  CHECK(log[4].changed_fields == std::vector<std::string>{"token"});
  CHECK(log[5].changed_fields.empty());

  Result text = cli.Run({"audit"});
  REQUIRE(text.code == 0);
  const std::vector<std::string> lines = Lines(text.out);
  REQUIRE(lines.size() == 7);  // the header and one line per entry
  for (const char* col : {"SEQ", "TIME", "EVENT", "KEY", "ACTOR", "OWNER", "FIELDS", "VERSION"}) {
    CHECK_THAT(lines[0], Catch::Contains(col));
  }
  for (std::size_t i = 0; i < actors.size(); ++i) {
    CHECK_THAT(lines[i + 1], Catch::Contains(actors[i]));
    CHECK_THAT(lines[i + 1], Catch::Contains(log[i].type));
    CHECK_THAT(lines[i + 1], Catch::Contains(id));
  }
  for (const std::string& t : {token, new_token}) {
    CHECK_FALSE(absl::StrContains(text.out, t));
    CHECK_FALSE(absl::StrContains(cli.all_stderr(), t));
  }
}

TEST_CASE("keygate CLI: audit filters by key, actor and time, and pages", "[cli][audit]") {
  TempDir dir;
  Cli cli(dir);
  std::string a, b;
  CreateToken(cli, {"--name", "a", "--owner", "o", "--env", "production", "--actor", "alice"}, &a);
  CreateToken(cli, {"--name", "b", "--owner", "o", "--env", "production", "--actor", "bob"}, &b);
  // Ordered by this process's clock: both creates ended before `mark`, and
  // both changes below start after it.
  const std::string mark = absl::FormatTime(absl::RFC3339_full, absl::Now(), absl::UTCTimeZone());
  REQUIRE(cli.Run({"--actor", "bob", "modify", a, "--name", "a2"}).code == 0);
  REQUIRE(cli.Run({"--actor", "alice", "revoke", b}).code == 0);

  CHECK(Audit(cli, {}).size() == 4);
  CHECK(Types(Audit(cli, {"--key", a})) == std::vector<std::string>{"created", "modified"});
  const std::vector<AuditEntry> by_bob = Audit(cli, {"--actor", "bob"});
  REQUIRE(by_bob.size() == 2);
  CHECK(by_bob[0].key_id == b);
  CHECK(by_bob[0].type == "created");
  CHECK(by_bob[1].key_id == a);
  CHECK(by_bob[1].type == "modified");
  CHECK(Types(Audit(cli, {"--key", a, "--actor", "bob"})) == std::vector<std::string>{"modified"});
  CHECK(Audit(cli, {"--actor", "nobody"}).empty());
  CHECK(Types(Audit(cli, {"--since", mark})) == std::vector<std::string>{"modified", "revoked"});
  CHECK(Types(Audit(cli, {"--until", mark})) == std::vector<std::string>{"created", "created"});
  CHECK(Audit(cli, {"--since", "1h"}).size() == 4);
  CHECK(Audit(cli, {"--since", "2000-01-01T00:00:00Z", "--until", mark}).size() == 2);
  CHECK(Audit(cli, {"--since", "2999-01-01T00:00:00Z"}).empty());

  Result page = cli.Run({"--json", "audit", "--limit", "3"});
  REQUIRE(page.code == 0);
  const std::vector<AuditEntry> first = ParseAudit(page.out);
  REQUIRE(first.size() == 3);
  CHECK_THAT(page.out, Catch::Contains("\"more\":true"));
  const std::uint64_t next = JsonUint(page.out, "next_after");
  CHECK(next == first.back().sequence);
  const std::vector<AuditEntry> rest = Audit(cli, {"--after", std::to_string(next)});
  REQUIRE(rest.size() == 1);
  CHECK(rest[0].type == "revoked");
  Result last = cli.Run({"--json", "audit", "--after", std::to_string(next)});
  CHECK_THAT(last.out, Catch::Contains("\"more\":false"));
  Result human = cli.Run({"audit", "--limit", "1"});
  CHECK(human.code == 0);
  CHECK(Lines(human.out).size() == 2);
  CHECK_THAT(human.err, Catch::Contains("--after"));
}

TEST_CASE("keygate CLI: audit refuses bad arguments, naming the flag", "[cli][audit][errors]") {
  TempDir dir;
  Cli cli(dir);
  std::string id;
  const std::string token =
      CreateToken(cli, {"--name", "a", "--owner", "o", "--env", "production"}, &id);
  struct Case {
    std::vector<std::string> args;
    std::string flag;
  };
  const std::vector<Case> cases = {
      {{"--since", "yesterday"}, "--since"},  {{"--since", "-1h"}, "--since"},
      {{"--until", "2030-13-01"}, "--until"}, {{"--since", "1h", "--until", "2h"}, "--until"},
      {{"--limit", "0"}, "--limit"},          {{"--limit", "many"}, "--limit"},
      {{"--key", "not-a-key"}, "--key"},      {{"--key", token}, "--key"},
      {{"--actor", ""}, "--actor"},           {{"--actor", token}, "--actor"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args{"audit"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    Result r = cli.Run(args);
    INFO(absl::StrJoin(args, " "));
    INFO(r.err);
    CHECK(r.code == 2);
    CHECK(r.out.empty());
    CHECK_THAT(r.err, Catch::Contains(c.flag));
    CHECK_THAT(r.err, Catch::Contains("Usage: keygate audit"));
  }
  CHECK_FALSE(absl::StrContains(cli.all_stderr(), token));
  Result missing = cli.Run({"--db", dir.File("missing.db"), "audit"}, "", {}, /*with_db=*/false);
  CHECK(missing.code == 3);
  CHECK_THAT(missing.err, Catch::Contains("does not exist"));
  CHECK_FALSE(Exists(dir.File("missing.db")));
}

#ifdef KEYGATE_TEST_CLI_WEBHOOKS
// A dispatcher on the CLI's database file, delivering to `receiver` (127.0.0.1, its test CA).
std::unique_ptr<WebhookDispatcher> Dispatcher(const std::string& db, const std::string& state,
                                              const testing::Receiver& receiver) {
  SqliteOptions so;
  so.path = db;
  WebhookDispatcherOptions o;
  o.store = testing::MustOk(SqliteKeyStore::Create(so));
  o.state_path = state;
  o.secrets = {testing::MustOk(WebhookSecret::Generate())};
  o.sender.allow_internal_hosts = true;
  o.sender.ca_file = receiver.ca_file();
  o.sender.resolver = [](const std::string&) -> absl::StatusOr<std::vector<std::string>> {
    return std::vector<std::string>{"127.0.0.1"};
  };
  o.threads = 2;
  o.retry_schedule = {absl::Hours(1)};  // a failed attempt stays pending, its retry in an hour
  o.poll_interval = absl::Milliseconds(20);
  return testing::MustOk(WebhookDispatcher::Create(std::move(o)));
}

// A key with a webhook URL, made by the CLI; returns its id.
std::string CreateWithWebhook(Cli& cli, const std::string& name, const std::string& url) {
  Result r = cli.Run({"--json", "--allow-internal-webhooks", "create", "--name", name, "--owner",
                      "alice", "--env", "production", "--webhook", url});
  INFO(r.err);
  REQUIRE(r.code == 0);
  return JsonField(r.out, "id");
}

std::string WriteFile(const TempDir& dir, const std::string& name, const std::string& bytes,
                      mode_t mode) {
  std::string path = dir.File(name);
  { std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes; }
  REQUIRE(::chmod(path.c_str(), mode) == 0);
  return path;
}

TEST_CASE("keygate CLI: per-key webhook secrets are printed once, sealed and rolled",
          "[cli][webhooks]") {
  TempDir dir;
  Cli cli(dir);
  const std::string kek = dir.File("kek");
  { std::ofstream(kek) << std::string(32, 'k'); }
  REQUIRE(::chmod(kek.c_str(), 0600) == 0);
  const std::vector<std::string> create = {
      "create",     "--name",    "hooked",
      "--owner",    "alice",     "--env",
      "production", "--webhook", "https://hooks.example.com/k"};
  const auto with = [](std::vector<std::string> head, const std::vector<std::string>& tail) {
    head.insert(head.end(), tail.begin(), tail.end());
    return head;
  };

  // Without the KEK: refused, naming both flags, and nothing created.
  Result r = cli.Run(with({"--webhook-secret-per-key"}, create));
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--webhook-secret-per-key: needs --kek-file"));

  // Text: the token, then the key's webhook secret, each on a line of its own.
  r = cli.Run(with({"--kek-file", kek, "--webhook-secret-per-key"}, create));
  INFO(r.err);
  REQUIRE(r.code == 0);
  const std::vector<std::string> lines = absl::StrSplit(Trim(r.out), '\n');
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].rfind("kg_", 0) == 0);
  const std::string first = lines[1];
  CHECK(first.rfind("whsec_", 0) == 0);
  CHECK_THAT(r.err, Catch::Contains("webhook secret is shown only once"));
  // JSON, and the environment variable.
  r = cli.Run(with({"--json"}, create), "",
              {"KEYGATE_KEK_FILE=" + kek, "KEYGATE_WEBHOOK_SECRET_PER_KEY=1"});
  REQUIRE(r.code == 0);
  CHECK(JsonField(r.out, "webhook_secret").rfind("whsec_", 0) == 0);
  CHECK(r.out.find("\"own_webhook_secret\":true") != std::string::npos);
  const std::string id = JsonField(r.out, "id");
  REQUIRE(!id.empty());
  // Without the flag, keys get none.
  r = cli.Run(with({"--json", "--kek-file", kek}, create));
  REQUIRE(r.code == 0);
  CHECK(JsonField(r.out, "webhook_secret").empty());
  CHECK(r.out.find("\"own_webhook_secret\":false") != std::string::npos);

  r = cli.Run({"show", id});
  CHECK_THAT(r.out, Catch::Contains("its own, sealed"));
  CHECK(r.out.find("whsec_") == std::string::npos);

  // Rolled: a new one, once; refused without the flag or for an unknown key.
  r = cli.Run({"--kek-file", kek, "--webhook-secret-per-key", "webhooks", "roll-secret", id,
               "--overlap", "1h"});
  INFO(r.err);
  REQUIRE(r.code == 0);
  const std::string second = Trim(r.out);
  CHECK(second.rfind("whsec_", 0) == 0);
  CHECK(second != first);
  CHECK_THAT(r.err, Catch::Contains("The previous secret signs too until"));
  r = cli.Run({"--kek-file", kek, "webhooks", "roll-secret", id});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--webhook-secret-per-key"));
  r = cli.Run({"--kek-file", kek, "--webhook-secret-per-key", "webhooks", "roll-secret", id,
               "--overlap", "soon"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--overlap: expected a duration"));
  r = cli.Run({"--kek-file", kek, "--webhook-secret-per-key", "webhooks", "roll-secret",
               "key_000000000000000000000000"});
  CHECK(r.code == 3);
  r = cli.Run({"audit", "--key", id});
  CHECK_THAT(r.out, Catch::Contains("webhook_secret"));

  // Never in the database in clear.
  std::string bytes;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) bytes += ReadFile(cli.db() + suffix);
  CHECK(bytes.find(first.substr(6)) == std::string::npos);
  CHECK(bytes.find(second.substr(6)) == std::string::npos);

  // A hash-only key given a URL later, then a secret of its own: reseal rewraps it too.
  std::string later;
  CreateToken(cli, {"--name", "later", "--owner", "alice", "--env", "production"}, &later);
  REQUIRE(cli.Run({"modify", later, "--webhook", "https://hooks.example.com/later"}).code == 0);
  r = cli.Run({"--kek-file", kek, "--webhook-secret-per-key", "webhooks", "roll-secret", later,
               "--overlap", "1h"});
  REQUIRE(r.code == 0);
  CHECK_THAT(r.err, Catch::Contains("The previous secret signs too until"));
  const std::string new_kek = dir.File("kek-new");
  { std::ofstream(new_kek) << std::string(32, 'n'); }
  REQUIRE(::chmod(new_kek.c_str(), 0600) == 0);
  r = cli.Run({"--json", "--kek-file", new_kek, "--previous-kek-file", kek, "reseal"});
  INFO(r.err);
  REQUIRE(r.code == 0);
  // hooked, the JSON one, the one without a secret (its sealed token) and later.
  CHECK(r.out.find("\"resealed\":4") != std::string::npos);
}

TEST_CASE("keygate CLI: webhooks deliveries prints the delivery log, newest first",
          "[cli][webhooks]") {
  TempDir dir;
  Cli cli(dir);
  testing::Receiver receiver;
  std::string first;
  CreateToken(cli, {"--name", "first", "--owner", "alice", "--env", "production"}, &first);
  const std::string state = dir.File("webhooks.db");
  std::unique_ptr<WebhookDispatcher> dispatcher = Dispatcher(cli.db(), state, receiver);

  // A new state file: an empty log.
  Result empty = cli.Run({"--webhook-state", state, "webhooks", "deliveries"});
  INFO(empty.err);
  CHECK(empty.code == 0);
  CHECK(empty.out.empty());
  CHECK_THAT(empty.err, Catch::Contains("No webhook messages in " + state));
  empty = cli.Run({"--json", "--webhook-state", state, "webhooks", "deliveries"});
  CHECK(empty.code == 0);
  CHECK(Trim(empty.out) == R"({"deliveries":[]})");

  // One message delivered (204), one pending after a 500, retried in an hour.
  REQUIRE(dispatcher->Start().ok());
  const std::string ok = CreateWithWebhook(cli, "ok", receiver.Url("localhost", "/ok"));
  const std::string failing = CreateWithWebhook(cli, "failing", receiver.Url("localhost", "/fail"));
  bool settled = false;
  for (int i = 0; i < 2000 && !settled; ++i) {
    const std::vector<WebhookDelivery> log = testing::MustOk(dispatcher->Deliveries("", 10));
    settled = log.size() == 2 && log[1].state == WebhookDelivery::State::kDelivered &&
              !log[0].attempts.empty();
    if (!settled) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(settled);
  dispatcher->Stop();
  dispatcher.reset();
  const std::vector<testing::Seen> seen = receiver.seen();
  REQUIRE(!seen.empty());
  std::string ok_message_id;
  for (const testing::Seen& s : seen) {
    if (s.path == "/ok") ok_message_id = s.id;
  }
  REQUIRE(!ok_message_id.empty());

  Result text = cli.Run({"--webhook-state", state, "webhooks", "deliveries"});
  INFO(text.err);
  REQUIRE(text.code == 0);
  const std::vector<std::string> lines = Lines(text.out);
  REQUIRE(lines.size() == 4);
  // Newest first: the failing key's message, then the delivered one; an attempt a line.
  CHECK_THAT(lines[0], Catch::StartsWith("msg_"));
  CHECK_THAT(lines[0], Catch::Contains("  key.created  " + failing + "  pending, next attempt "));
  CHECK_THAT(lines[0], Catch::EndsWith(receiver.Url("localhost", "/fail")));
  CHECK_THAT(lines[1], Catch::StartsWith("  attempt 1: "));
  CHECK_THAT(lines[1], Catch::Contains("  HTTP 500  "));
  CHECK_THAT(lines[1], Catch::Contains(" ms  127.0.0.1"));
  CHECK(lines[2] == absl::StrCat(ok_message_id, "  key.created  ", ok, "  delivered  ",
                                 receiver.Url("localhost", "/ok")));
  CHECK_THAT(lines[3], Catch::StartsWith("  attempt 1: "));
  CHECK_THAT(lines[3], Catch::Contains("  HTTP 204  "));
  CHECK_THAT(lines[3], Catch::EndsWith(" ms  127.0.0.1"));
  CHECK_FALSE(absl::StrContains(text.out, first));  // made before the dispatcher's first start

  // One key's; at most --limit; --json as the admin API writes it.
  Result one = cli.Run({"--webhook-state", state, "webhooks", "deliveries", ok});
  CHECK(one.code == 0);
  CHECK(Lines(one.out).size() == 2);
  CHECK(Lines(one.out)[0] == lines[2]);
  Result limited = cli.Run({"--webhook-state", state, "webhooks", "deliveries", "--limit", "1"});
  CHECK(limited.code == 0);
  CHECK(Lines(limited.out).size() == 2);
  CHECK(Lines(limited.out)[0] == lines[0]);
  CHECK_THAT(limited.err, Catch::Contains("raise --limit"));
  Result json = cli.Run({"--json", "--webhook-state", state, "webhooks", "deliveries", ok});
  INFO(json.out);
  CHECK(json.code == 0);
  CHECK(LooksLikeJson(json.out));
  CHECK_THAT(json.out, Catch::StartsWith(absl::StrCat(R"({"deliveries":[{"id":")", ok_message_id,
                                                      R"(","key_id":")", ok,
                                                      R"(","type":"key.created","url":")")));
  CHECK_THAT(json.out, Catch::Contains(R"("state":"delivered","sequence":)"));
  CHECK_THAT(json.out, Catch::Contains(R"("next_attempt":null,"attempts":[{"at":")"));
  CHECK_THAT(json.out, Catch::Contains(R"(","status":204,"latency_ms":)"));
  CHECK_THAT(json.out, Catch::Contains(R"(,"address":"127.0.0.1","error":null}]}]})"));
  Result pending = cli.Run({"--json", "--webhook-state", state, "webhooks", "deliveries", failing});
  CHECK_THAT(pending.out, Catch::Contains(R"("state":"pending")"));
  CHECK_THAT(pending.out, Catch::Contains(R"("status":500)"));
  CHECK_FALSE(absl::StrContains(pending.out, R"("next_attempt":null)"));

  // The state file from $KEYGATE_WEBHOOK_STATE; the secret file, when given, is checked too.
  Result from_env = cli.Run({"webhooks", "deliveries", ok}, "", {"KEYGATE_WEBHOOK_STATE=" + state});
  CHECK(from_env.code == 0);
  CHECK(from_env.out == one.out);
  const std::string secret_text = "whsec_" + std::string(43, 'A') + "=";
  const std::string secret_file = WriteFile(dir, "whsec", secret_text + "\n", 0600);
  Result with_secret = cli.Run(
      {"--webhook-secret-file", secret_file, "--webhook-state", state, "webhooks", "deliveries"});
  CHECK(with_secret.code == 0);
  CHECK(with_secret.out == text.out);
  CHECK_FALSE(absl::StrContains(cli.all_stderr() + text.out + json.out, secret_text));
}

TEST_CASE("keygate CLI: webhook flags: a missing or bad state or secret file names the flag",
          "[cli][webhooks][errors]") {
  TempDir dir;
  Cli cli(dir);
  testing::Receiver receiver;
  std::string id;
  CreateToken(cli, {"--name", "k", "--owner", "alice", "--env", "production"}, &id);
  const std::string state = dir.File("webhooks.db");
  Dispatcher(cli.db(), state, receiver);  // creates the state file

  // No state file named; one that does not exist (not created by reading); the key database.
  Result r = cli.Run({"webhooks", "deliveries"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("keygate: error: --webhook-state: required"));
  CHECK_THAT(r.err, Catch::Contains("Usage: keygate webhooks"));
  const std::string missing = dir.File("missing.db");
  r = cli.Run({"--webhook-state", missing, "webhooks", "deliveries"});
  CHECK(r.code == 3);
  CHECK_THAT(r.err, Catch::Contains("keygate: --webhook-state: " + missing + " does not exist"));
  CHECK_FALSE(Exists(missing));
  r = cli.Run({"webhooks", "deliveries"}, "", {"KEYGATE_WEBHOOK_STATE=" + missing});
  CHECK(r.code == 3);
  CHECK_THAT(r.err, Catch::Contains("keygate: $KEYGATE_WEBHOOK_STATE: " + missing));
  r = cli.Run({"--webhook-state", cli.db(), "webhooks", "deliveries"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--webhook-state: names the key database (--db)"));
  // Not a key id, a bad limit, no subcommand.
  CHECK(cli.Run({"--webhook-state", state, "webhooks", "deliveries", "nope"}).code == 2);
  CHECK(cli.Run({"--webhook-state", state, "webhooks", "deliveries", "--limit", "0"}).code == 2);
  CHECK(cli.Run({"--webhook-state", state, "webhooks", "deliveries", "--limit", "1001"}).code == 2);
  CHECK(cli.Run({"--webhook-state", state, "webhooks"}).code == 2);

  // Secret files: read like the pepper, then one whsec_ secret a line; never quoted.
  const std::string good = "whsec_" + std::string(43, 'A') + "=";
  REQUIRE(::mkdir(dir.File("dir").c_str(), 0700) == 0);
  struct Case {
    std::string path;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {dir.File("absent"), "cannot open: No such file or directory"},
      {dir.File("dir"), "is a directory, not a regular file"},
      {WriteFile(dir, "shared", good + "\n", 0644),
       "is readable by group or others (mode 0644); make it private to its owner (chmod 600), or "
       "pass --allow-shared-webhook-secret"},
      {WriteFile(dir, "pepper", "PEPPERBYTES-0123456789-abcdefghijklmnop\n", 0600),
       "line 1: must start with whsec_"},
      {WriteFile(dir, "notbase64", "whsec_SECRETBYTES!!!!!!!!!!!!!!!!!!!!!!!!!!\n", 0600),
       "line 1: is not base64"},
      {WriteFile(dir, "second", good + "\n\nwhsec_SECRETBYTESAAAAA\n", 0600),
       "line 3: must hold 24 to 64 bytes"},
      {WriteFile(dir, "blank", std::string(40, ' ') + "\n", 0600), "holds no whsec_... secret"},
  };
  for (const Case& c : cases) {
    r = cli.Run(
        {"--webhook-secret-file", c.path, "--webhook-state", state, "webhooks", "deliveries"});
    INFO(c.path << ": " << r.err);
    CHECK(r.code == 3);
    CHECK(r.out.empty());
    CHECK_THAT(r.err, Catch::Contains(absl::StrCat("keygate: --webhook-secret-file: file ", c.path,
                                                   ": ", c.reason)));
  }
  r = cli.Run({"webhooks", "deliveries"}, "",
              {"KEYGATE_WEBHOOK_STATE=" + state, "KEYGATE_WEBHOOK_SECRET_FILE=" + cases[0].path});
  CHECK(r.code == 3);
  CHECK_THAT(r.err,
             Catch::Contains("keygate: $KEYGATE_WEBHOOK_SECRET_FILE: file " + cases[0].path));
  // --allow-shared-webhook-secret reads the 0644 file, and says so.
  r = cli.Run({"--allow-shared-webhook-secret", "--webhook-secret-file", dir.File("shared"),
               "--webhook-state", state, "webhooks", "deliveries"});
  CHECK(r.code == 0);
  CHECK_THAT(r.err, Catch::Contains("keygate: warning: --webhook-secret-file: file " +
                                    dir.File("shared") + ": is readable by group or others"));
  CHECK_FALSE(absl::StrContains(cli.all_stderr(), "SECRETBYTES"));
  CHECK_FALSE(absl::StrContains(cli.all_stderr(), "PEPPERBYTES"));
  CHECK_FALSE(absl::StrContains(cli.all_stderr(), good));
}
#endif  // KEYGATE_TEST_CLI_WEBHOOKS

}  // namespace
}  // namespace keygate
