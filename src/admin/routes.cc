// The admin API's routes (routes.h).

#include "admin/routes.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

#include "admin/embedded.h"
#include "admin/http_parts.h"
#include "admin/json_body.h"
#include "admin/key_bodies.h"
#include "admin/text.h"
#include "internal/json_writer.h"
#include "internal/percent.h"
#include "internal/webhook_delivery_json.h"
#include "keygate/audit.h"
#include "keygate/key.h"
#include "keygate/key_manager.h"
#include "keygate/key_store.h"
#include "keygate/scope.h"
#include "keygate/secret.h"
#include "keygate/webhooks/webhook_dispatcher.h"

namespace keygate::admin_internal {
namespace {

using internal::JsonWriter;
using nlohmann::json;

constexpr std::uint64_t kMaxGraceSeconds = std::uint64_t{30} * 24 * 3600;

constexpr Route kRoutes[] = {
    {RouteId::kOpenApi, true, {"GET"}},
    {RouteId::kKeys, false, {"GET", "POST"}},
    {RouteId::kKey, false, {"GET", "PATCH", "DELETE"}},
    {RouteId::kKeyRevoke, false, {"POST"}},
    {RouteId::kKeyRestore, false, {"POST"}},
    {RouteId::kKeyRoll, false, {"POST"}},
    {RouteId::kKeyReveal, false, {"POST"}},
    {RouteId::kPersonalKeys, false, {"POST"}},
    {RouteId::kAudit, false, {"GET"}},
    {RouteId::kScopes, false, {"GET"}},
    {RouteId::kEnvironments, false, {"GET"}},
    {RouteId::kMe, false, {"GET"}},
    {RouteId::kKeyWebhookDeliveries, false, {"GET"}},
    {RouteId::kWebhookDeliveries, false, {"GET"}},
    {RouteId::kKeyWebhookSecret, false, {"POST"}},
};

const Route& RouteOf(RouteId id) { return kRoutes[static_cast<std::size_t>(id)]; }

constexpr std::uint64_t kDefaultDeliveriesLimit = 50;
constexpr std::uint64_t kMaxDeliveriesLimit = 1000;  // WebhookDispatcher::Deliveries' own

std::string RecordJson(const KeyRecord& r) {
  JsonWriter w;
  internal::WriteRecordJson(w, r);
  return w.str();
}

// {"key": ..., "token": ...}: the one response that carries a token (create, roll, reveal), and
// with a key's own webhook secret "webhook_secret" (create, POST /keys/{id}/webhook-secret).
AdminResponse SecretResponse(int status, const KeyRecord& record, const Secret* token,
                             const std::optional<WebhookSecret>& webhook_secret = std::nullopt) {
  JsonWriter w;
  w.BeginObject();
  w.Key("key");
  internal::WriteRecordJson(w, record);
  if (token != nullptr) {
    w.Key("token").String(token->Reveal(InsecureSecretAccess::Get()));  // shown once, here
  }
  if (webhook_secret.has_value()) {
    w.Key("webhook_secret").String(webhook_secret->text().Reveal(InsecureSecretAccess::Get()));
  }
  w.EndObject();
  AdminResponse r = JsonResponse(status, w.str());
  r.headers.emplace_back("Cache-Control", "no-store");
  r.headers.emplace_back("ETag", ETag(record.version));
  return r;
}

AdminResponse KeyResponse(int status, const KeyRecord& record) {
  AdminResponse r = JsonResponse(status, RecordJson(record));
  r.headers.emplace_back("ETag", ETag(record.version));
  return r;
}

// A route without a request body accepts none, or an empty JSON object.
absl::Status CheckNoBody(std::string_view body) {
  if (Trim(body).empty()) return absl::OkStatus();
  absl::StatusOr<json> object = ParseJsonObject(body);
  if (!object.ok()) return object.status();
  return JsonFields(*object).Unknown();
}

// A route with a JSON body: it must say it is JSON. nullopt when it does.
std::optional<AdminResponse> CheckJsonBody(const AdminRequest& request, bool merge_patch) {
  const std::optional<std::string> type = Header(request, "Content-Type");
  if (!type.has_value() || !IsJsonContentType(*type, merge_patch)) {
    return Problem(415, "unsupported_media_type",
                   merge_patch ? "Content-Type: must be application/json or "
                                 "application/merge-patch+json"
                               : "Content-Type: must be application/json");
  }
  if (Trim(request.body).empty()) {
    return Problem(400, "invalid_argument", "body: required (a JSON object)", "body");
  }
  return std::nullopt;
}

// An optional body {"<member>": seconds} (0 .. 30 days; absent or no body: zero), as roll and
// webhook-secret take. nullopt when it is fine; else the answer.
std::optional<AdminResponse> ReadSecondsBody(const AdminRequest& request, std::string_view member,
                                             absl::Duration* out) {
  *out = absl::ZeroDuration();
  if (Trim(request.body).empty()) return std::nullopt;
  if (std::optional<AdminResponse> bad = CheckJsonBody(request, false)) return bad;
  absl::StatusOr<json> object = ParseJsonObject(request.body);
  if (!object.ok()) return ProblemFor(object.status());
  JsonFields f(*object);
  std::optional<std::uint64_t> seconds;
  absl::Status s = f.Uint(member, kMaxGraceSeconds, &seconds);
  if (s.ok()) s = f.Unknown();
  if (!s.ok()) return ProblemFor(s);
  *out = absl::Seconds(static_cast<std::int64_t>(seconds.value_or(0)));
  return std::nullopt;
}

absl::StatusOr<std::uint64_t> ParseUintParam(const QueryParams& q, std::string_view name,
                                             std::uint64_t min, std::uint64_t max,
                                             std::uint64_t fallback) {
  const auto it = q.find(name);
  if (it == q.end()) return fallback;
  std::uint64_t v = 0;
  if (it->second.empty() || it->second.size() > 20 ||
      it->second.find_first_not_of("0123456789") != std::string::npos ||
      !absl::SimpleAtoi(it->second, &v) || v < min || v > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(AV(name), ": must be an integer between ", min, " and ", max));
  }
  return v;
}

absl::StatusOr<std::optional<absl::Time>> ParseTimeParam(const QueryParams& q,
                                                         std::string_view name) {
  const auto it = q.find(name);
  if (it == q.end()) return std::nullopt;
  absl::Time t;
  if (!ParseRfc3339(it->second, &t)) {
    return absl::InvalidArgumentError(
        absl::StrCat(AV(name), ": must be an RFC 3339 time such as 2027-01-01T00:00:00Z"));
  }
  return t;
}

std::optional<std::string> Param(const QueryParams& q, std::string_view name) {
  const auto it = q.find(name);
  if (it == q.end()) return std::nullopt;
  return it->second;
}

}  // namespace

bool Route::Takes(std::string_view method) const {
  for (const std::string_view m : methods) {
    if (!m.empty() && m == method) return true;
  }
  return false;
}

std::string Route::AllowedMethods() const {
  std::string all;
  for (const std::string_view m : methods) {
    if (m.empty()) continue;
    absl::StrAppend(&all, all.empty() ? "" : ", ", AV(m), m == "GET" ? ", HEAD" : "");
  }
  return all;
}

const Route* Routes::Find(std::string_view path) const {
  if (!ConsumePrefix(&path, "/api/v1/")) return nullptr;
  if (path == "openapi.json") return &RouteOf(RouteId::kOpenApi);
  if (path == "keys") return &RouteOf(RouteId::kKeys);
  if (path == "personal-keys") return &RouteOf(RouteId::kPersonalKeys);
  if (path == "audit") return &RouteOf(RouteId::kAudit);
  if (path == "scopes") return &RouteOf(RouteId::kScopes);
  if (path == "environments") return &RouteOf(RouteId::kEnvironments);
  if (path == "me") return &RouteOf(RouteId::kMe);
  if (path == "webhook-deliveries") return &RouteOf(RouteId::kWebhookDeliveries);
  if (!ConsumePrefix(&path, "keys/")) return nullptr;
  const std::size_t slash = path.find('/');
  if (slash == 0) return nullptr;
  if (slash == std::string_view::npos) return &RouteOf(RouteId::kKey);
  const std::string_view action = path.substr(slash + 1);
  if (action == "revoke") return &RouteOf(RouteId::kKeyRevoke);
  if (action == "restore") return &RouteOf(RouteId::kKeyRestore);
  if (action == "roll") return &RouteOf(RouteId::kKeyRoll);
  if (action == "reveal") return &RouteOf(RouteId::kKeyReveal);
  if (action == "webhook-deliveries") return &RouteOf(RouteId::kKeyWebhookDeliveries);
  if (action == "webhook-secret") return &RouteOf(RouteId::kKeyWebhookSecret);
  return nullptr;
}

AdminResponse Routes::Serve(const Route& route, std::string_view method, std::string_view path,
                            const AdminRequest& request, const Caller* caller) const {
  if (route.id == RouteId::kOpenApi) {
    AdminResponse r = JsonResponse(200, std::string(OpenApiDocument()));
    r.headers[0].second = "application/vnd.oai.openapi+json;version=3.1";
    return r;
  }
  KeyManager& manager = *options_.manager;
  const std::string_view actor = caller->record.owner;
  const std::string_view query = Split(request.target).query;
  const auto attach_limits = [caller](AdminResponse r) {
    for (const auto& h : caller->rate_limit_headers) r.headers.push_back(h);
    return r;
  };

  // The key id of /keys/{id}[/action], percent-decoded.
  std::string id;
  if (ConsumePrefix(&path, "/api/v1/keys/")) {
    if (!internal::PercentDecode(path.substr(0, path.find('/')), false, &id) || id.empty()) {
      return Problem(404, "not_found", "key: not found");
    }
  }

  const bool has_body_route = (route.id == RouteId::kKeys && method == "POST") ||
                              route.id == RouteId::kPersonalKeys ||
                              (route.id == RouteId::kKey && method == "PATCH");
  if (has_body_route) {
    if (std::optional<AdminResponse> bad = CheckJsonBody(request, method == "PATCH")) {
      return attach_limits(*std::move(bad));
    }
  } else if (route.id != RouteId::kKeyRoll && route.id != RouteId::kKeyWebhookSecret) {
    if (absl::Status s = CheckNoBody(request.body); !s.ok()) {
      return attach_limits(ProblemFor(s));
    }
  }
  // Only the audit log, the key list and the delivery log read query parameters; the others
  // take none.
  const bool reads_query =
      route.id == RouteId::kAudit || (route.id == RouteId::kKeys && method == "GET") ||
      route.id == RouteId::kKeyWebhookDeliveries || route.id == RouteId::kWebhookDeliveries;
  if (!reads_query) {
    absl::StatusOr<QueryParams> none = ParseQuery(query, {});
    if (!none.ok()) return attach_limits(ProblemFor(none.status()));
  }

  switch (route.id) {
    case RouteId::kKeys: {
      if (method == "POST") {
        absl::StatusOr<CreateKeyRequest> req = ParseCreate(request.body, caller->record.owner);
        if (!req.ok()) return attach_limits(ProblemFor(InJsonTerms(req.status())));
        absl::StatusOr<CreatedKey> created = manager.Create(*req, actor);
        if (!created.ok()) return attach_limits(ProblemFor(InJsonTerms(created.status())));
        AdminResponse r =
            SecretResponse(201, created->record, &created->token, created->webhook_secret);
        r.headers.emplace_back(
            "Location", absl::StrCat(options_.base_path, "/api/v1/keys/", created->record.id));
        return attach_limits(std::move(r));
      }
      absl::StatusOr<QueryParams> q =
          ParseQuery(query, {"environment", "owner", "state", "kind", "name", "limit", "cursor"});
      if (!q.ok()) return attach_limits(ProblemFor(q.status()));
      ListOptions o;
      o.filter.environment = Param(*q, "environment");
      o.filter.owner = Param(*q, "owner");
      if (std::optional<std::string> s = Param(*q, "state")) {
        KeyState state{};
        if (!ParseKeyState(*s, &state)) {
          return attach_limits(
              ProblemFor(absl::InvalidArgumentError("state: must be \"active\" or \"revoked\"")));
        }
        o.filter.state = state;
      }
      if (std::optional<std::string> k = Param(*q, "kind")) {
        KeyKind kind{};
        if (!ParseKeyKind(*k, &kind)) {
          return attach_limits(
              ProblemFor(absl::InvalidArgumentError("kind: must be \"general\" or \"personal\"")));
        }
        o.filter.kind = kind;
      }
      o.filter.name_contains = Param(*q, "name").value_or("");
      absl::StatusOr<std::uint64_t> limit = ParseUintParam(*q, "limit", 1, kMaxListLimit, 50);
      if (!limit.ok()) return attach_limits(ProblemFor(limit.status()));
      o.limit = static_cast<std::size_t>(*limit);
      o.cursor = Param(*q, "cursor").value_or("");
      absl::StatusOr<ListPage> page = manager.List(o);
      if (!page.ok()) return attach_limits(ProblemFor(page.status()));
      JsonWriter w;
      w.BeginObject();
      w.Key("keys").BeginArray();
      for (const KeyRecord& k : page->keys) internal::WriteRecordJson(w, k);
      w.EndArray();
      w.Key("next_cursor");
      if (page->next_cursor.empty()) {
        w.Null();
      } else {
        w.String(page->next_cursor);
      }
      w.EndObject();
      return attach_limits(JsonResponse(200, w.str()));
    }

    case RouteId::kKey: {
      if (method == "GET") {
        absl::StatusOr<KeyRecord> record = manager.Get(id);
        if (!record.ok()) return attach_limits(ProblemFor(record.status()));
        return attach_limits(KeyResponse(200, *record));
      }
      const std::optional<std::string> if_match = Header(request, "If-Match");
      std::optional<IfMatch> condition;
      if (if_match.has_value()) {
        absl::StatusOr<IfMatch> parsed = ParseIfMatch(*if_match);
        if (!parsed.ok()) return attach_limits(ProblemFor(parsed.status()));
        condition = *std::move(parsed);
      } else if (method == "PATCH") {
        return attach_limits(Problem(
            428, "precondition_required",
            "If-Match: required; send the key's ETag (its version) from a GET of this key"));
      }
      if (method == "PATCH") {
        absl::StatusOr<KeyUpdate> update = ParseUpdate(request.body);
        if (!update.ok()) return attach_limits(ProblemFor(InJsonTerms(update.status())));
        // One tag: the store checks it atomically. "*" or a list: the current version, if
        // listed, is the one the store checks.
        std::uint64_t expected = 0;
        if (!condition->any && condition->versions.size() == 1) {
          expected = condition->versions[0];
        } else {
          absl::StatusOr<KeyRecord> current = manager.Get(id);
          if (!current.ok()) return attach_limits(ProblemFor(current.status()));
          expected = current->version;
          if (!condition->any && std::find(condition->versions.begin(), condition->versions.end(),
                                           expected) == condition->versions.end()) {
            expected = 0;
          }
        }
        absl::StatusOr<KeyRecord> modified =
            expected == 0 ? absl::AbortedError("If-Match: the key has changed; read it again")
                          : manager.Modify(id, *update, expected, actor);
        if (!modified.ok()) {
          AdminResponse r = ProblemFor(InJsonTerms(modified.status()));
          if (r.status == 412) {
            r = Problem(412, "version_conflict",
                        "If-Match: the key has changed since that version; read it again");
            if (absl::StatusOr<KeyRecord> now = manager.Get(id); now.ok()) {
              r.headers.emplace_back("ETag", ETag(now->version));
            }
          }
          return attach_limits(std::move(r));
        }
        return attach_limits(KeyResponse(200, *modified));
      }
      // DELETE: an If-Match is checked against the version read just before.
      if (condition.has_value() && !condition->any) {
        absl::StatusOr<KeyRecord> current = manager.Get(id);
        if (!current.ok()) return attach_limits(ProblemFor(current.status()));
        if (std::find(condition->versions.begin(), condition->versions.end(), current->version) ==
            condition->versions.end()) {
          AdminResponse r =
              Problem(412, "version_conflict", "If-Match: the key has changed since that version");
          r.headers.emplace_back("ETag", ETag(current->version));
          return attach_limits(std::move(r));
        }
      }
      if (absl::Status s = manager.Delete(id, actor); !s.ok()) {
        return attach_limits(ProblemFor(s));
      }
      AdminResponse r;
      r.status = 204;
      return attach_limits(std::move(r));
    }

    case RouteId::kKeyRevoke:
    case RouteId::kKeyRestore: {
      absl::StatusOr<KeyRecord> record =
          route.id == RouteId::kKeyRevoke ? manager.Revoke(id, actor) : manager.Restore(id, actor);
      if (!record.ok()) return attach_limits(ProblemFor(record.status()));
      return attach_limits(KeyResponse(200, *record));
    }

    case RouteId::kKeyRoll: {
      absl::Duration grace;
      if (std::optional<AdminResponse> bad = ReadSecondsBody(request, "grace_seconds", &grace)) {
        return attach_limits(*std::move(bad));
      }
      absl::StatusOr<CreatedKey> rolled = manager.Roll(id, grace, actor);
      if (!rolled.ok()) return attach_limits(ProblemFor(rolled.status()));
      return attach_limits(SecretResponse(200, rolled->record, &rolled->token));
    }

    case RouteId::kKeyWebhookSecret: {
      // A new signing secret (409 when keys have none of their own, or this one no URL).
      absl::Duration overlap;
      if (std::optional<AdminResponse> bad =
              ReadSecondsBody(request, "overlap_seconds", &overlap)) {
        return attach_limits(*std::move(bad));
      }
      absl::StatusOr<RolledWebhookSecret> rolled = manager.RollWebhookSecret(id, overlap, actor);
      if (!rolled.ok()) return attach_limits(ProblemFor(rolled.status()));
      return attach_limits(SecretResponse(200, rolled->record, nullptr, rolled->secret));
    }

    case RouteId::kKeyReveal: {
      // 409 when recoverable keys are off or this key is hash-only (the detail says which).
      absl::StatusOr<RevealedKey> revealed = manager.RevealToken(id, actor);
      if (!revealed.ok()) return attach_limits(ProblemFor(revealed.status()));
      return attach_limits(SecretResponse(200, revealed->record, &revealed->token));
    }

    case RouteId::kPersonalKeys: {
      absl::StatusOr<json> object = ParseJsonObject(request.body);
      if (!object.ok()) return attach_limits(ProblemFor(object.status()));
      JsonFields f(*object);
      std::string owner;
      std::string environment;
      std::vector<std::string> scopes;
      absl::Status s = f.String("owner", &owner);
      if (s.ok()) s = f.String("environment", &environment);
      if (s.ok()) s = f.StringArray("scopes", &scopes);
      if (s.ok()) s = f.Unknown();
      if (s.ok() && owner.empty()) s = absl::InvalidArgumentError("owner: required");
      if (s.ok() && environment.empty()) s = absl::InvalidArgumentError("environment: required");
      if (!s.ok()) return attach_limits(ProblemFor(s));
      absl::StatusOr<ProvisionedKey> p =
          manager.ProvisionPersonalKey(owner, environment, scopes, actor);
      if (!p.ok()) return attach_limits(ProblemFor(p.status()));
      if (p->created && p->token.has_value()) {
        return attach_limits(SecretResponse(201, p->record, &*p->token));
      }
      JsonWriter w;
      w.BeginObject();
      w.Key("key");
      internal::WriteRecordJson(w, p->record);
      w.EndObject();
      AdminResponse r = JsonResponse(200, w.str());
      r.headers.emplace_back("ETag", ETag(p->record.version));
      return attach_limits(std::move(r));
    }

    case RouteId::kAudit: {
      absl::StatusOr<QueryParams> q =
          ParseQuery(query, {"key_id", "actor", "since", "until", "after", "limit"});
      if (!q.ok()) return attach_limits(ProblemFor(q.status()));
      AuditQuery a;
      a.key_id = Param(*q, "key_id");
      a.actor = Param(*q, "actor");
      absl::StatusOr<std::optional<absl::Time>> since = ParseTimeParam(*q, "since");
      if (!since.ok()) return attach_limits(ProblemFor(since.status()));
      absl::StatusOr<std::optional<absl::Time>> until = ParseTimeParam(*q, "until");
      if (!until.ok()) return attach_limits(ProblemFor(until.status()));
      a.since = *since;
      a.until = *until;
      absl::StatusOr<std::uint64_t> after = ParseUintParam(*q, "after", 0, ~std::uint64_t{0}, 0);
      if (!after.ok()) return attach_limits(ProblemFor(after.status()));
      a.after = *after;
      absl::StatusOr<std::uint64_t> limit = ParseUintParam(*q, "limit", 1, kMaxAuditLimit, 100);
      if (!limit.ok()) return attach_limits(ProblemFor(limit.status()));
      a.limit = static_cast<std::size_t>(*limit);
      absl::StatusOr<AuditPage> page = manager.ReadAudit(a);
      if (!page.ok()) return attach_limits(ProblemFor(page.status()));
      JsonWriter w;
      w.BeginObject();
      w.Key("events").BeginArray();
      for (const Event& e : page->events) internal::WriteEventJson(w, e);
      w.EndArray();
      w.Key("next_after").Uint(page->next_after);
      w.Key("more").Bool(page->more);
      w.EndObject();
      return attach_limits(JsonResponse(200, w.str()));
    }

    case RouteId::kScopes: {
      const ScopeRegistry& registry = manager.deployment().scopes();
      JsonWriter w;
      w.BeginObject();
      w.Key("scopes").BeginArray();
      for (const std::string& name : registry.names()) {
        w.BeginObject();
        w.Key("name").String(name);
        std::vector<std::string> implies = registry.Expand(registry.MaskOf(name));
        implies.erase(std::remove(implies.begin(), implies.end(), name), implies.end());
        w.Key("implies").StringArray(implies);
        w.EndObject();
      }
      w.EndArray();
      w.EndObject();
      return attach_limits(JsonResponse(200, w.str()));
    }

    case RouteId::kEnvironments: {
      JsonWriter w;
      w.BeginObject();
      w.Key("environments").BeginArray();
      for (const EnvironmentSpec& e : manager.deployment().environments()) {
        w.BeginObject();
        w.Key("name").String(e.name);
        w.Key("tag").String(e.tag);
        w.Key("default_rate_limit");
        internal::WriteRateLimitJson(w, e.default_rate_limit);
        w.EndObject();
      }
      w.EndArray();
      w.EndObject();
      return attach_limits(JsonResponse(200, w.str()));
    }

    case RouteId::kMe: {
      JsonWriter w;
      w.BeginObject();
      w.Key("key_id").String(caller->record.id);
      w.Key("name").String(caller->record.name);
      w.Key("owner").String(caller->record.owner);
      w.Key("environment").String(caller->record.environment);
      w.Key("scopes").StringArray(caller->record.scopes);
      w.Key("recoverable_keys").Bool(manager.recoverable_keys());
      w.Key("webhook_secret_per_key").Bool(manager.webhook_secret_per_key());
      w.EndObject();
      return attach_limits(JsonResponse(200, w.str()));
    }

    case RouteId::kKeyWebhookDeliveries:
    case RouteId::kWebhookDeliveries: {
      if (!options_.webhook_deliveries) {
        return attach_limits(Problem(404, "webhooks_off",
                                     "webhook deliveries: this server runs no webhook dispatcher, "
                                     "so it keeps no delivery log"));
      }
      absl::StatusOr<QueryParams> q = ParseQuery(query, {"limit"});
      if (!q.ok()) return attach_limits(ProblemFor(q.status()));
      absl::StatusOr<std::uint64_t> limit =
          ParseUintParam(*q, "limit", 1, kMaxDeliveriesLimit, kDefaultDeliveriesLimit);
      if (!limit.ok()) return attach_limits(ProblemFor(limit.status()));
      // A key's log: the key must exist, or have left messages behind (its deletion's among
      // them), so that an unknown id is a 404 as on GET /keys/{id}.
      absl::Status key_status = absl::OkStatus();
      if (route.id == RouteId::kKeyWebhookDeliveries) {
        absl::StatusOr<KeyRecord> record = manager.Get(id);
        if (!record.ok() && record.status().code() != absl::StatusCode::kNotFound) {
          return attach_limits(ProblemFor(record.status()));
        }
        key_status = record.status();
      }
      absl::StatusOr<std::vector<WebhookDelivery>> log =
          options_.webhook_deliveries(id, static_cast<std::size_t>(*limit));
      if (!log.ok()) return attach_limits(ProblemFor(log.status()));
      if (!key_status.ok() && log->empty()) return attach_limits(ProblemFor(key_status));
      JsonWriter w;
      w.BeginObject();
      w.Key("deliveries").BeginArray();
      for (const WebhookDelivery& d : *log) internal::WriteDeliveryJson(w, d);
      w.EndArray();
      w.EndObject();
      return attach_limits(JsonResponse(200, w.str()));
    }

    case RouteId::kOpenApi:
      break;
  }
  return Problem(500, "internal", "");
}

}  // namespace keygate::admin_internal
