// The keygate CLI's commands that change nothing: verify, scopes and envs
// (commands.h).

#include <algorithm>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "cli/commands.h"
#include "cli/format.h"

#include "keygate/deployment.h"
#include "keygate/http.h"
#include "keygate/reference_verifier.h"
#include "keygate/secret.h"
#include "keygate/token.h"
#include "keygate/verdict.h"

namespace keygate::cli {

int RunVerify(const Globals& g, const VerifyArgs& a) {
  std::string token_storage;
  if (a.token == "-") {
    std::getline(std::cin, token_storage);
    while (!token_storage.empty() && (token_storage.back() == '\r' || token_storage.back() == ' ' ||
                                      token_storage.back() == '\t')) {
      token_storage.pop_back();
    }
  } else {
    token_storage = a.token;
    std::cerr << "(tip: 'keygate verify -' reads the token from stdin and keeps it out of "
                 "your shell history)\n";
  }
  const Secret token(token_storage);
  std::fill(token_storage.begin(), token_storage.end(), '\0');
  const std::string_view t = token.Reveal(InsecureSecretAccess::Get());

  absl::StatusOr<Session> s = OpenSession(g, false);
  if (!s.ok()) return Fail(s.status());
  const Deployment& d = *s->deployment;
  std::string env = a.env;
  if (env.empty()) {
    // The environment the token claims (its tag); a token without a known
    // tag is checked against the first environment and comes out malformed.
    TokenView v;
    const EnvironmentSpec* spec = nullptr;
    if (ParseToken(t, &v, d.token_prefix()) == TokenError::kNone) {
      spec = d.FindEnvironmentByTag(v.env_tag);
    }
    env = spec != nullptr ? spec->name : d.environments().front().name;
  } else if (d.FindEnvironment(env) == nullptr) {
    throw UsageError{absl::StrCat("--env: unknown environment '", Redact(env), "'")};
  }
  const RequireOptions options{.account = a.account};
  absl::StatusOr<Requirement> req =
      a.scopes.empty() ? Requirement::AnyValidKey(options)
                       : d.scopes().Require(absl::MakeConstSpan(a.scopes), options);
  if (!req.ok()) throw UsageError{Redact(std::string(req.status().message()))};
  absl::StatusOr<std::unique_ptr<ReferenceVerifier>> verifier = ReferenceVerifier::Create(
      {.deployment = s->deployment, .store = s->store, .environment = env});
  if (!verifier.ok()) return Fail(verifier.status());
  std::optional<KeyRecord> record;
  const Verdict verdict = (*verifier)->VerifyToken(t, *req, absl::Now(), &record);
  const HttpDecision http = DecideHttp(verdict, *req);
  const int status = verdict.ok() ? 200 : http.status;
  if (g.json) {
    JsonWriter w;
    w.BeginObject();
    w.Key("ok").Bool(verdict.ok());
    w.Key("outcome").String(OutcomeName(verdict.outcome));
    w.Key("environment").String(env);
    w.Key("http_status").Int(status);
    w.Key("key_id");
    if (verdict.key().empty()) {
      w.Null();
    } else {
      w.String(verdict.key());
    }
    if (record.has_value()) {
      w.Key("owner").String(record->owner);
      w.Key("name").String(record->name);
    }
    w.EndObject();
    std::cout << w.str() << "\n";
  } else if (verdict.ok()) {
    std::cout << "ok: " << EscapeText(verdict.key());
    if (record.has_value()) {
      std::cout << " (" << EscapeText(record->name) << ", owner " << EscapeText(record->owner)
                << ", " << EscapeText(env) << ")";
    }
    std::cout << "\n";
  } else {
    std::cout << "rejected: " << OutcomeName(verdict.outcome);
    if (!verdict.key().empty()) std::cout << " (key " << EscapeText(verdict.key()) << ")";
    std::cout << "; a server answers HTTP " << status << "\n";
  }
  if (verdict.outcome == Outcome::kUnavailable) return kExitFailed;
  return verdict.ok() ? kExitOk : kExitDenied;
}

int RunScopes(const Globals& g) {
  absl::StatusOr<std::shared_ptr<const Deployment>> d = LoadDeployment(g);
  if (!d.ok()) return Fail(d.status());
  const ScopeRegistry& reg = (*d)->scopes();
  JsonWriter w;
  std::vector<std::vector<std::string>> rows{{"SCOPE", "IMPLIES"}};
  w.BeginArray();
  for (const std::string& name : reg.names()) {
    std::vector<std::string> implied;
    for (const std::string& other : reg.Expand(reg.MaskOf(name))) {
      if (other != name) implied.push_back(other);
    }
    w.BeginObject().Key("name").String(name).Key("implies").StringArray(implied).EndObject();
    rows.push_back({name, implied.empty() ? "-" : absl::StrJoin(implied, ", ")});
  }
  w.EndArray();
  std::cout << (g.json ? w.str() + "\n" : Table(rows));
  return kExitOk;
}

int RunEnvs(const Globals& g) {
  absl::StatusOr<std::shared_ptr<const Deployment>> d = LoadDeployment(g);
  if (!d.ok()) return Fail(d.status());
  JsonWriter w;
  std::vector<std::vector<std::string>> rows{{"ENVIRONMENT", "TAG", "TOKENS LOOK LIKE"}};
  w.BeginArray();
  for (const EnvironmentSpec& e : (*d)->environments()) {
    const std::string example = absl::StrCat((*d)->token_prefix(), "_", e.tag, "_...");
    w.BeginObject().Key("name").String(e.name).Key("tag").String(e.tag);
    w.Key("token_prefix").String(absl::StrCat((*d)->token_prefix(), "_", e.tag, "_"));
    w.EndObject();
    rows.push_back({e.name, e.tag, example});
  }
  w.EndArray();
  std::cout << (g.json ? w.str() + "\n" : Table(rows));
  return kExitOk;
}

}  // namespace keygate::cli
