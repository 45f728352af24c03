// The management API (key_manager.h).
//
// Every mutation follows the same shape: read the record, build the new one,
// write it with the store's compare-and-set, and only then hand out a token
// and emit the event. Operations without a caller-supplied version (revoke,
// restore, delete, roll) retry a bounded number of times when another writer
// got in between, so they do not fail merely because of an unrelated edit.

#include "keygate/key_manager.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "internal/base62.h"
#include "internal/charclass.h"
#include "internal/key_label.h"
#include "internal/utf8.h"
#include "keygate/token.h"

namespace keygate {
namespace {

// A refusal that reports the key's state (not found, revoked) may be due
// to a write that got there first and is still notifying subscribers: it
// is returned only once they have that write too (KeyStore::
// AwaitSubscribers), so a verify that starts after the refusal agrees.
absl::Status Settled(KeyStore& store, absl::Status refusal) {
  if (refusal.code() == absl::StatusCode::kNotFound ||
      refusal.code() == absl::StatusCode::kFailedPrecondition) {
    if (absl::Status s = store.AwaitSubscribers(); !s.ok()) return s;
  }
  return refusal;
}

// A freshly generated secret and what is stored for it.
struct IssuedSecret {
  Secret token;
  Digest digest;
  std::string hint;
};

absl::StatusOr<IssuedSecret> IssueSecret(const Deployment& d, const EnvironmentSpec& env) {
  absl::StatusOr<Secret> token = GenerateToken(d.token_prefix(), env.tag);
  if (!token.ok()) return token.status();
  const std::string_view text = token->Reveal(InsecureSecretAccess::Get());
  absl::StatusOr<Digest> digest = d.hasher().Hash(text);
  if (!digest.ok()) return digest.status();
  std::string hint = TokenHint(text);
  return IssuedSecret{*std::move(token), *digest, std::move(hint)};
}

constexpr absl::Duration kMaxRollGrace = absl::Hours(24 * 30);
constexpr std::size_t kMaxActorLength = 128;
constexpr std::size_t kKeyIdTimeChars = 8;     // after "key_"
constexpr std::size_t kKeyIdRandomChars = 14;  // after the time
// Bound on read-modify-write retries for operations that take no expected
// version; only reached under a storm of concurrent writes to one key.
constexpr int kMaxWriteAttempts = 16;

absl::Status Invalid(std::string_view field, std::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": ", std::string(reason)));
}

// Whether `text` holds an API token anywhere inside it: what a secret
// scanner matches, `<prefix>_<env>_` and kSecretChars + kCheckChars base62
// characters, with a CRC-32 that checks out (so text that merely has the
// shape, a long snake_case identifier say, passes: odds of 2^-32). Any
// prefix and tag count, not only this deployment's: another deployment's
// token is just as secret. Each '_' is looked at once as the one ending a
// tag, with at most kMaxPrefixLength - 1 parses there: O(size).
bool HoldsToken(std::string_view text) noexcept {
  constexpr std::size_t kBody = kSecretChars + kCheckChars;
  const auto lower_alnum = [](char c) { return internal::HasClass(c, internal::kClassLowerAlnum); };
  for (std::size_t us = text.find('_'); us != std::string_view::npos; us = text.find('_', us + 1)) {
    if (text.size() - us - 1 < kBody) break;
    bool body = true;
    for (std::size_t k = us + 1; k <= us + kBody && body; ++k) {
      body = internal::kBase62Digit[static_cast<unsigned char>(text[k])] != internal::kNotBase62;
    }
    if (!body) continue;
    // The tag runs back from `us` to the previous '_'; the prefix before
    // that may follow other letters ("xkg_live_..." holds "kg_live_...").
    std::size_t tag = 0;
    while (tag < us && tag <= kMaxEnvTagLength && lower_alnum(text[us - 1 - tag])) ++tag;
    if (tag < kMinEnvTagLength || tag > kMaxEnvTagLength || tag >= us) continue;
    const std::size_t sep = us - 1 - tag;
    if (text[sep] != '_') continue;
    for (std::size_t prefix = 1; prefix <= kMaxPrefixLength && prefix <= sep; ++prefix) {
      if (!lower_alnum(text[sep - prefix])) break;
      if (prefix < kMinPrefixLength) continue;
      const std::string_view candidate = text.substr(sep - prefix, prefix + 1 + tag + 1 + kBody);
      if (ParseToken(candidate, nullptr) == TokenError::kNone) return true;
    }
  }
  return false;
}

// A token kept in a key's fields would be shown in clear by every listing
// and sit in the database beside the digest that is all keygate otherwise
// keeps of it. The token is never quoted back.
absl::Status RefuseToken(std::string_view field, std::string_view value) {
  if (!HoldsToken(value)) return absl::OkStatus();
  return Invalid(field, "holds an API token; tokens must not be stored in key fields");
}

// Text that people read (in dashboards, in `keygate show`, in logs) must be
// valid UTF-8 without control characters: C0, DEL and C1 (U+0080-U+009F)
// can forge or hide lines on a terminal. Descriptions may span lines
// (`multiline` lets \n and \t through). No text may hold a token
// (RefuseToken).
absl::Status ValidateText(std::string_view field, std::string_view value, bool multiline = false) {
  if (absl::Status s = RefuseToken(field, value); !s.ok()) return s;
  for (std::size_t i = 0; i < value.size();) {
    const internal::Utf8Step step = internal::DecodeUtf8(value.substr(i));
    if (!step.valid) return Invalid(field, "must be valid UTF-8");
    i += step.length;
    const std::uint32_t cp = step.code_point;
    const bool control = cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
    if (control && !(multiline && (cp == '\n' || cp == '\t'))) {
      return Invalid(field, multiline ? "must not contain control characters other than "
                                        "newline and tab"
                                      : "must not contain control characters");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateBoundedText(std::string_view field, std::string_view value,
                                 std::size_t max_length) {
  if (value.empty()) return Invalid(field, "must not be empty");
  if (value.size() > max_length) {
    return Invalid(field, absl::StrCat("must be at most ", max_length, " bytes"));
  }
  return ValidateText(field, value);
}

absl::Status ValidateName(std::string_view name) {
  return ValidateBoundedText("name", name, kMaxNameLength);
}

absl::Status ValidateDescription(std::string_view description) {
  if (description.size() > kMaxDescriptionLength) {
    return Invalid("description",
                   absl::StrCat("must be at most ", kMaxDescriptionLength, " bytes"));
  }
  return ValidateText("description", description, /*multiline=*/true);
}

absl::Status ValidateOwner(std::string_view owner) {
  return ValidateBoundedText("owner", owner, kMaxOwnerLength);
}

absl::Status ValidateActor(std::string_view actor) {
  return ValidateBoundedText("actor", actor, kMaxActorLength);
}

absl::Status ValidateScopes(const ScopeRegistry& registry, const std::vector<std::string>& scopes) {
  if (scopes.size() > kMaxScopesPerKey) {
    return Invalid("scopes", absl::StrCat("at most ", kMaxScopesPerKey, " entries"));
  }
  // Unknown names: the registry's own error (quoting only well-formed ones).
  if (absl::StatusOr<ScopeMask> mask = registry.Compile(scopes); !mask.ok()) return mask.status();
  std::set<std::string_view> seen;
  for (const std::string& scope : scopes) {
    if (!seen.insert(scope).second) {
      return Invalid("scopes", absl::StrCat("duplicate scope '", scope, "'"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateExpires(const std::optional<absl::Time>& expires, absl::Time now) {
  if (!expires.has_value()) return absl::OkStatus();
  if (*expires == absl::InfiniteFuture() || *expires == absl::InfinitePast()) {
    return Invalid("expires", "must be a finite time (leave it unset for no expiry)");
  }
  // Compare what will be stored (microseconds), not what was passed.
  if (TruncateToMicros(*expires) <= now) return Invalid("expires", "must be in the future");
  return absl::OkStatus();
}

absl::Status ValidateRateLimit(const std::optional<RateLimitPolicy>& policy) {
  if (!policy.has_value()) return absl::OkStatus();
  return ValidateRateLimitPolicy(*policy, "rate_limit");
}

// Whether an IPv4 address (host byte order) is one a webhook must not reach
// by default: "this network", private (RFC 1918), shared (RFC 6598),
// loopback, link-local (cloud metadata services live at 169.254.169.254),
// IETF protocol assignments, benchmarking, multicast, reserved, broadcast.
bool IsInternalIpv4(std::uint32_t a) {
  auto in = [a](std::uint32_t net, int bits) { return (a >> (32 - bits)) == (net >> (32 - bits)); };
  return in(0x00000000, 8) || in(0x0a000000, 8) || in(0x64400000, 10) || in(0x7f000000, 8) ||
         in(0xa9fe0000, 16) || in(0xac100000, 12) || in(0xc0000000, 24) || in(0xc0a80000, 16) ||
         in(0xc6120000, 15) || in(0xe0000000, 4) || in(0xf0000000, 4);
}

// The same for IPv6: unspecified, loopback, IPv4-mapped/-compatible and
// NAT64 (judged by the IPv4 address they carry), unique local (fc00::/7),
// link-local and site-local (fe80::/10, fec0::/10), multicast.
bool IsInternalIpv6(const in6_addr& addr) {
  const std::uint8_t* b = addr.s6_addr;
  auto v4_at = [b](int i) {
    return (std::uint32_t{b[i]} << 24) | (std::uint32_t{b[i + 1]} << 16) |
           (std::uint32_t{b[i + 2]} << 8) | std::uint32_t{b[i + 3]};
  };
  bool zero10 = true;
  for (int i = 0; i < 10; ++i) zero10 = zero10 && b[i] == 0;
  if (zero10 && b[10] == 0 && b[11] == 0) return true;  // ::/96: ::, ::1, IPv4-compatible
  if (zero10 && b[10] == 0xff && b[11] == 0xff) return IsInternalIpv4(v4_at(12));
  static constexpr std::uint8_t kNat64[12] = {0x00, 0x64, 0xff, 0x9b};
  if (std::equal(b, b + 12, kNat64)) return IsInternalIpv4(v4_at(12));
  // ::ffff:0:a.b.c.d, the IPv4-translated form (RFC 2765).
  bool zero8 = true;
  for (int i = 0; i < 8; ++i) zero8 = zero8 && b[i] == 0;
  if (zero8 && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0) {
    return IsInternalIpv4(v4_at(12));
  }
  // 64:ff9b:1::/48, the local-use NAT64 prefix (RFC 8215): local by definition.
  static constexpr std::uint8_t kLocalNat64[6] = {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01};
  if (std::equal(b, b + 6, kLocalNat64)) return true;
  return (b[0] & 0xfe) == 0xfc || (b[0] == 0xfe && (b[1] & 0x80) == 0x80) || b[0] == 0xff;
}

absl::Status ValidateWebhookUrl(std::string_view url, bool allow_internal_hosts) {
  constexpr std::string_view kField = "webhook_url";
  constexpr std::string_view kInternalHost =
      "host is a loopback, private, link-local or reserved address (allowed only with "
      "KeyManager::Options::allow_internal_webhook_hosts)";
  if (url.empty()) return absl::OkStatus();
  // The URL is never quoted back: it may carry a secret in its query.
  if (absl::Status s = RefuseToken(kField, url); !s.ok()) return s;
  if (url.size() > kMaxWebhookUrlLength) {
    return Invalid(kField, absl::StrCat("must be at most ", kMaxWebhookUrlLength, " bytes"));
  }
  for (char c : url) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) {
      return Invalid(kField, "must not contain whitespace or control characters");
    }
  }
  constexpr std::string_view kScheme = "https://";
  bool https = url.size() >= kScheme.size();
  for (std::size_t i = 0; https && i < kScheme.size(); ++i) {
    char c = url[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    https = c == kScheme[i];
  }
  if (!https) return Invalid(kField, "must use https");
  std::string_view rest = url.substr(kScheme.size());
  std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  if (authority.find('@') != std::string_view::npos) {
    return Invalid(kField, "must not contain credentials");
  }
  std::string_view host = authority;
  std::string_view port;
  const bool bracketed = !authority.empty() && authority.front() == '[';
  if (bracketed) {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return Invalid(kField, "malformed IPv6 host");
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Invalid(kField, "malformed IPv6 host");
      port = after.substr(1);
      if (port.empty()) return Invalid(kField, "invalid port");
    }
  } else if (const std::size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (port.empty()) return Invalid(kField, "invalid port");
  }
  if (host.empty()) return Invalid(kField, "must name a host");
  if (bracketed) {
    // An IPv6 literal (RFC 3986 IP-literal; zone ids are not allowed in URLs
    // that leave this machine).
    in6_addr addr{};
    if (host.size() >= INET6_ADDRSTRLEN ||
        inet_pton(AF_INET6, std::string(host).c_str(), &addr) != 1) {
      return Invalid(kField, "malformed IPv6 host");
    }
    if (!allow_internal_hosts && IsInternalIpv6(addr)) return Invalid(kField, kInternalHost);
  } else {
    // A DNS name or dotted IPv4 address: letters, digits, '-', '_' in
    // dot-separated non-empty labels (internationalised names in their
    // ASCII "xn--" form).
    bool label_start = true;
    for (std::size_t i = 0; i < host.size(); ++i) {
      const char c = host[i];
      const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
      if (c == '.') {
        // An empty label: a leading dot, or two in a row ("127.0.0.1.." would
        // pass as a name below). Only one trailing dot, after a label, is a name.
        if (label_start) return Invalid(kField, "malformed host");
        label_start = true;
      } else if (alnum || ((c == '-' || c == '_') && !label_start)) {
        label_start = false;
      } else {
        return Invalid(kField, "malformed host (letters, digits, '-', '.' only)");
      }
    }
    if (host.front() == '.') return Invalid(kField, "malformed host");
    // A host whose last label is a number is an IPv4 address to HTTP
    // clients, which also read "127.1", "0x7f.0.0.1", "0177.0.0.1" and
    // "2130706433" as 127.0.0.1 (inet_aton's forms). Only the dotted-quad
    // form is accepted, so that what was checked is what gets connected to.
    std::string_view name = host;
    if (name.back() == '.') name.remove_suffix(1);
    const std::string_view last = name.substr(name.rfind('.') + 1);
    const bool numeric = !last.empty() && last[0] >= '0' && last[0] <= '9';
    if (numeric) {
      in_addr v4{};
      if (inet_pton(AF_INET, std::string(name).c_str(), &v4) != 1) {
        return Invalid(kField, "malformed IPv4 host (a dotted quad of decimal numbers only)");
      }
      if (!allow_internal_hosts && IsInternalIpv4(ntohl(v4.s_addr))) {
        return Invalid(kField, kInternalHost);
      }
    } else if (!allow_internal_hosts) {
      // "localhost" and its subdomains resolve to loopback (RFC 6761).
      constexpr std::string_view kLocal = "localhost";
      auto lower_equal = [](std::string_view a, std::string_view b) {
        if (a.size() != b.size()) return false;
        for (std::size_t i = 0; i < a.size(); ++i) {
          char c = a[i];
          if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
          if (c != b[i]) return false;
        }
        return true;
      };
      if (name.size() >= kLocal.size() &&
          lower_equal(name.substr(name.size() - kLocal.size()), kLocal) &&
          (name.size() == kLocal.size() || name[name.size() - kLocal.size() - 1] == '.')) {
        return Invalid(kField, kInternalHost);
      }
    }
  }
  if (!port.empty()) {
    if (port.size() > 5) return Invalid(kField, "invalid port");
    std::uint32_t value = 0;
    for (char c : port) {
      if (c < '0' || c > '9') return Invalid(kField, "invalid port");
      value = value * 10 + static_cast<std::uint32_t>(c - '0');
    }
    if (value < 1 || value > 65535) return Invalid(kField, "invalid port");
  }
  return absl::OkStatus();
}

absl::Status ValidateAccounts(const std::vector<std::string>& accounts) {
  if (accounts.size() > kMaxAccounts) {
    return Invalid("accounts", absl::StrCat("at most ", kMaxAccounts, " entries"));
  }
  std::set<std::string_view> seen;
  for (std::size_t i = 0; i < accounts.size(); ++i) {
    const std::string field = absl::StrCat("accounts[", i, "]");
    if (absl::Status s = ValidateBoundedText(field, accounts[i], kMaxAccountLength); !s.ok()) {
      return s;
    }
    if (!seen.insert(accounts[i]).second) return Invalid(field, "duplicate account");
  }
  return absl::OkStatus();
}

absl::Status ValidateMetadata(const std::map<std::string, std::string>& metadata) {
  if (metadata.size() > kMaxMetadataEntries) {
    return Invalid("metadata", absl::StrCat("at most ", kMaxMetadataEntries, " entries"));
  }
  std::size_t index = 0;
  for (const auto& [key, value] : metadata) {
    if (absl::Status s = ValidateBoundedText("metadata keys", key, kMaxMetadataKeyLength);
        !s.ok()) {
      return s;
    }
    // The entry by its key when the key is too short to hold a token (a
    // pasted secret must not reach a log), else by its position.
    const std::string field = key.size() < kMinTokenLength
                                  ? absl::StrCat("metadata['", key, "']")
                                  : absl::StrCat("metadata entry ", index, " (in key order)");
    if (value.size() > kMaxMetadataValueLength) {
      return Invalid(field, absl::StrCat("must be at most ", kMaxMetadataValueLength, " bytes"));
    }
    if (absl::Status s = ValidateText(field, value); !s.ok()) return s;
    ++index;
  }
  return absl::OkStatus();
}

// "key_" + 8 base62 characters of the creation time (Unix milliseconds,
// zero-padded: good for 6,900 years) + 14 random base62 characters (83
// bits). Time-ordered ids make store inserts appends to the id index (~15-20%
// faster bulk inserts in SQLite at 1 M keys) and list pages come back in
// creation order. Random bytes >= 248 are rejected so that byte % 62 is
// uniform (248 = 4 * 62): no modulo bias. The id is public, so RAND_bytes
// (not the private generator) is the right source.
absl::StatusOr<std::string> NewKeyId(absl::Time now) {
  const std::int64_t ms = std::max<std::int64_t>(0, absl::ToUnixMillis(now));
  std::string id =
      absl::StrCat("key_", Base62EncodeFixed(static_cast<std::uint64_t>(ms), kKeyIdTimeChars));
  id.reserve(kKeyIdLength);
  unsigned char buf[32];
  while (id.size() < kKeyIdLength) {
    if (RAND_bytes(buf, sizeof buf) != 1) {
      return absl::InternalError("key id: the CSPRNG failed");
    }
    for (unsigned char b : buf) {
      if (b >= 248) continue;
      id.push_back(internal::kBase62Alphabet[b % 62]);
      if (id.size() == kKeyIdLength) break;
    }
  }
  static_assert(kKeyIdTimeChars + kKeyIdRandomChars + 4 == kKeyIdLength);
  return id;
}

absl::Status VersionConflict(std::string_view id, std::uint64_t expected, std::uint64_t stored) {
  return absl::AbortedError(absl::StrCat(internal::KeyLabel(id), ": version conflict (expected ",
                                         expected, ", stored ", stored, ")"));
}

std::vector<std::string> CreatedFields(const KeyRecord& r) {
  std::vector<std::string> f = {"name"};
  if (!r.description.empty()) f.emplace_back("description");
  f.insert(f.end(), {"owner", "kind", "environment"});
  if (!r.scopes.empty()) f.emplace_back("scopes");
  if (r.expires.has_value()) f.emplace_back("expires");
  if (r.rate_limit.has_value()) f.emplace_back("rate_limit");
  if (!r.webhook_url.empty()) f.emplace_back("webhook_url");
  if (!r.accounts.empty()) f.emplace_back("accounts");
  if (!r.metadata.empty()) f.emplace_back("metadata");
  return f;
}

std::vector<std::string> ChangedFields(const KeyRecord& a, const KeyRecord& b) {
  std::vector<std::string> f;
  if (a.name != b.name) f.emplace_back("name");
  if (a.description != b.description) f.emplace_back("description");
  if (a.scopes != b.scopes) f.emplace_back("scopes");
  if (a.expires != b.expires) f.emplace_back("expires");
  if (a.rate_limit != b.rate_limit) f.emplace_back("rate_limit");
  if (a.webhook_url != b.webhook_url) f.emplace_back("webhook_url");
  if (a.accounts != b.accounts) f.emplace_back("accounts");
  if (a.metadata != b.metadata) f.emplace_back("metadata");
  return f;
}

}  // namespace

KeyManager::KeyManager(Options options) : options_(std::move(options)) {
  if (!options_.events) options_.events = std::make_shared<NullEventSink>();
  if (!options_.clock) {
    // Non-owning: the system clock is a process-wide singleton.
    options_.clock =
        std::shared_ptr<const Clock>(std::shared_ptr<const Clock>(), &SystemClock::Get());
  }
}

absl::Status KeyManager::CheckConfigured() const {
  if (!options_.deployment) return absl::FailedPreconditionError("deployment: not set");
  if (!options_.store) return absl::FailedPreconditionError("store: not set");
  return absl::OkStatus();
}

absl::Time KeyManager::Now() const { return TruncateToMicros(options_.clock->Now()); }

void KeyManager::Emit(EventType type, std::string_view actor, const KeyRecord& record,
                      std::vector<std::string> changed_fields, std::uint64_t version) const {
  Event e;
  e.type = type;
  e.at = Now();
  e.actor = std::string(actor);
  e.key_id = record.id;
  e.owner = record.owner;
  e.changed_fields = std::move(changed_fields);
  e.version = version;
  options_.events->Emit(e);
}

absl::Status KeyManager::ValidateCreate(const CreateKeyRequest& request,
                                        std::string_view actor) const {
  if (absl::Status s = ValidateActor(actor); !s.ok()) return s;
  return ValidateCreate(request);
}

absl::Status KeyManager::ValidateCreate(const CreateKeyRequest& request) const {
  if (absl::Status s = CheckConfigured(); !s.ok()) return s;
  const Deployment& d = *options_.deployment;
  absl::Status checks[] = {
      ValidateName(request.name),
      ValidateDescription(request.description),
      ValidateOwner(request.owner),
      request.kind == KeyKind::kPersonal || request.kind == KeyKind::kGeneral
          ? absl::OkStatus()
          : Invalid("kind", "must be personal or general"),
      d.Environment(request.environment).status(),
      ValidateScopes(d.scopes(), request.scopes),
      ValidateExpires(request.expires, options_.clock->Now()),
      ValidateRateLimit(request.rate_limit),
      ValidateWebhookUrl(request.webhook_url, options_.allow_internal_webhook_hosts),
      ValidateAccounts(request.accounts),
      ValidateMetadata(request.metadata),
  };
  for (absl::Status& s : checks) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<CreatedKey> KeyManager::Create(const CreateKeyRequest& request,
                                              std::string_view actor) {
  if (absl::Status s = ValidateCreate(request, actor); !s.ok()) return s;
  const Deployment& d = *options_.deployment;
  const EnvironmentSpec* env = d.FindEnvironment(request.environment);

  absl::StatusOr<std::string> id = NewKeyId(options_.clock->Now());
  if (!id.ok()) return id.status();
  absl::StatusOr<IssuedSecret> secret = IssueSecret(d, *env);
  if (!secret.ok()) return secret.status();

  const absl::Time now = Now();
  KeyRecord r;
  r.id = *std::move(id);
  r.name = request.name;
  r.description = request.description;
  r.owner = request.owner;
  r.kind = request.kind;
  r.environment = request.environment;
  r.scopes = request.scopes;
  r.state = KeyState::kActive;
  r.created = now;
  r.updated = now;
  if (request.expires.has_value()) r.expires = TruncateToMicros(*request.expires);
  r.rate_limit = request.rate_limit;
  r.webhook_url = request.webhook_url;
  r.accounts = request.accounts;
  r.metadata = request.metadata;
  r.digest = secret->digest;
  r.hint = secret->hint;

  // The token leaves this function only if the store accepted the record.
  if (absl::Status s = options_.store->Insert(r); !s.ok()) return s;
  r.version = 1;
  Emit(EventType::kCreated, actor, r, CreatedFields(r), r.version);
  return CreatedKey{std::move(r), std::move(secret->token)};
}

absl::StatusOr<std::optional<KeyRecord>> KeyManager::FindActivePersonal(
    std::string_view owner, std::string_view environment) {
  ListOptions opts;
  opts.filter.owner = std::string(owner);
  opts.filter.environment = std::string(environment);
  opts.filter.kind = KeyKind::kPersonal;
  opts.filter.state = KeyState::kActive;
  opts.limit = 1;
  absl::StatusOr<ListPage> page = options_.store->List(opts);
  if (!page.ok()) return page.status();
  if (page->keys.empty()) return std::optional<KeyRecord>();
  return std::optional<KeyRecord>(std::move(page->keys.front()));
}

absl::StatusOr<ProvisionedKey> KeyManager::ProvisionPersonalKey(
    std::string_view owner, std::string_view environment, const std::vector<std::string>& scopes,
    std::string_view actor) {
  if (absl::Status s = ValidateActor(actor); !s.ok()) return s;
  CreateKeyRequest request;
  request.name = "personal";
  request.owner = std::string(owner);
  request.kind = KeyKind::kPersonal;
  request.environment = std::string(environment);
  request.scopes = scopes;
  if (absl::Status s = ValidateCreate(request); !s.ok()) return s;

  for (int attempt = 0; attempt < kMaxWriteAttempts; ++attempt) {
    absl::StatusOr<std::optional<KeyRecord>> existing = FindActivePersonal(owner, environment);
    if (!existing.ok()) return existing.status();
    if (existing->has_value()) {
      const KeyRecord& key = **existing;
      if (!key.expires.has_value() || *key.expires > options_.clock->Now()) {
        return ProvisionedKey{**std::move(existing), std::nullopt, false};
      }
      // Expired: it can never work again, but as the active personal key it
      // would block its own replacement. Revoke it (an event records that),
      // then create the new one on the next pass.
      absl::StatusOr<KeyRecord> revoked = SetState(key.id, KeyState::kRevoked, actor);
      if (!revoked.ok() && revoked.status().code() != absl::StatusCode::kNotFound) {
        return revoked.status();
      }
      continue;
    }
    absl::StatusOr<CreatedKey> created = Create(request, actor);
    if (created.ok()) {
      return ProvisionedKey{std::move(created->record), std::move(created->token), true};
    }
    // Another caller provisioned it first: read theirs on the next pass.
    if (created.status().code() != absl::StatusCode::kAlreadyExists) return created.status();
  }
  return absl::AbortedError("owner: provisioning the personal key kept conflicting; retry");
}

absl::StatusOr<KeyRecord> KeyManager::Get(std::string_view id) {
  if (absl::Status s = CheckConfigured(); !s.ok()) return s;
  return options_.store->Get(id);
}

absl::StatusOr<ListPage> KeyManager::List(const ListOptions& options) {
  if (absl::Status s = CheckConfigured(); !s.ok()) return s;
  return options_.store->List(options);
}

absl::StatusOr<KeyRecord> KeyManager::Modify(std::string_view id, const KeyUpdate& update,
                                             std::uint64_t expected_version,
                                             std::string_view actor) {
  if (absl::Status s = ValidateActor(actor); !s.ok()) return s;
  if (absl::Status s = CheckConfigured(); !s.ok()) return s;
  const Deployment& d = *options_.deployment;
  // Only the fields being set are validated: a key must stay editable even
  // if, say, one of its scopes has since been removed from the registry.
  absl::Status checks[] = {
      update.name ? ValidateName(*update.name) : absl::OkStatus(),
      update.description ? ValidateDescription(*update.description) : absl::OkStatus(),
      update.scopes ? ValidateScopes(d.scopes(), *update.scopes) : absl::OkStatus(),
      update.expires ? ValidateExpires(*update.expires, options_.clock->Now()) : absl::OkStatus(),
      update.rate_limit ? ValidateRateLimit(*update.rate_limit) : absl::OkStatus(),
      update.webhook_url
          ? ValidateWebhookUrl(*update.webhook_url, options_.allow_internal_webhook_hosts)
          : absl::OkStatus(),
      update.accounts ? ValidateAccounts(*update.accounts) : absl::OkStatus(),
      update.metadata ? ValidateMetadata(*update.metadata) : absl::OkStatus(),
  };
  for (absl::Status& s : checks) {
    if (!s.ok()) return s;
  }

  absl::StatusOr<KeyRecord> current = options_.store->Get(id);
  if (!current.ok()) return Settled(*options_.store, current.status());
  if (current->version != expected_version) {
    return VersionConflict(id, expected_version, current->version);
  }
  KeyRecord next = *current;
  if (update.name) next.name = *update.name;
  if (update.description) next.description = *update.description;
  if (update.scopes) next.scopes = *update.scopes;
  if (update.expires) {
    next.expires = *update.expires;
    if (next.expires.has_value()) next.expires = TruncateToMicros(*next.expires);
  }
  if (update.rate_limit) next.rate_limit = *update.rate_limit;
  if (update.webhook_url) next.webhook_url = *update.webhook_url;
  if (update.accounts) next.accounts = *update.accounts;
  if (update.metadata) next.metadata = *update.metadata;

  std::vector<std::string> changed = ChangedFields(*current, next);
  if (changed.empty()) {
    // Nothing to write or report; a write that got here first may still be
    // on its way to the verifiers, and this call must not return before it.
    if (absl::Status s = options_.store->AwaitSubscribers(); !s.ok()) return s;
    return *current;
  }
  next.updated = Now();
  next.version = expected_version;
  absl::StatusOr<KeyRecord> stored = options_.store->Update(next);
  if (!stored.ok()) return stored.status();
  Emit(EventType::kModified, actor, *stored, std::move(changed), stored->version);
  return stored;
}

absl::StatusOr<KeyRecord> KeyManager::SetState(std::string_view id, KeyState target,
                                               std::string_view actor) {
  if (absl::Status s = ValidateActor(actor); !s.ok()) return s;
  if (absl::Status s = CheckConfigured(); !s.ok()) return s;
  for (int attempt = 0; attempt < kMaxWriteAttempts; ++attempt) {
    absl::StatusOr<KeyRecord> current = options_.store->Get(id);
    if (!current.ok()) return Settled(*options_.store, current.status());
    if (current->state == target) {
      // Idempotent: no write, no event; but the write that set the state
      // may still be notifying: return only once the verifiers have it.
      if (absl::Status s = options_.store->AwaitSubscribers(); !s.ok()) return s;
      return current;
    }
    KeyRecord next = *std::move(current);
    next.state = target;
    next.updated = Now();
    absl::StatusOr<KeyRecord> stored = options_.store->Update(next);
    if (stored.ok()) {
      Emit(target == KeyState::kRevoked ? EventType::kRevoked : EventType::kRestored, actor,
           *stored, {"state"}, stored->version);
      return stored;
    }
    if (stored.status().code() != absl::StatusCode::kAborted) return stored.status();
  }
  return absl::AbortedError(
      absl::StrCat(internal::KeyLabel(id), ": too many concurrent changes; retry"));
}

absl::StatusOr<KeyRecord> KeyManager::Revoke(std::string_view id, std::string_view actor) {
  return SetState(id, KeyState::kRevoked, actor);
}

absl::StatusOr<KeyRecord> KeyManager::Restore(std::string_view id, std::string_view actor) {
  return SetState(id, KeyState::kActive, actor);
}

absl::Status KeyManager::Delete(std::string_view id, std::string_view actor) {
  if (absl::Status s = ValidateActor(actor); !s.ok()) return s;
  if (absl::Status s = CheckConfigured(); !s.ok()) return s;
  for (int attempt = 0; attempt < kMaxWriteAttempts; ++attempt) {
    absl::StatusOr<KeyRecord> current = options_.store->Get(id);
    if (!current.ok()) return Settled(*options_.store, current.status());
    absl::Status s = options_.store->Delete(id, current->version);
    if (s.ok()) {
      Emit(EventType::kDeleted, actor, *current, {}, 0);
      return s;
    }
    if (s.code() != absl::StatusCode::kAborted) return Settled(*options_.store, s);
  }
  return absl::AbortedError(
      absl::StrCat(internal::KeyLabel(id), ": too many concurrent changes; retry"));
}

absl::StatusOr<CreatedKey> KeyManager::Roll(std::string_view id, absl::Duration grace,
                                            std::string_view actor) {
  if (absl::Status s = ValidateActor(actor); !s.ok()) return s;
  if (absl::Status s = CheckConfigured(); !s.ok()) return s;
  if (grace < absl::ZeroDuration()) return Invalid("grace", "must not be negative");
  if (grace > kMaxRollGrace) return Invalid("grace", "must be at most 30 days");
  const Deployment& d = *options_.deployment;

  for (int attempt = 0; attempt < kMaxWriteAttempts; ++attempt) {
    absl::StatusOr<KeyRecord> current = options_.store->Get(id);
    if (!current.ok()) return Settled(*options_.store, current.status());
    if (current->state != KeyState::kActive) {
      return Settled(*options_.store,
                     absl::FailedPreconditionError(absl::StrCat(
                         internal::KeyLabel(current->id), ": revoked; restore it before rolling")));
    }
    // The new token would be born dead, and it is shown only once.
    if (current->expires.has_value() && *current->expires <= options_.clock->Now()) {
      return absl::FailedPreconditionError(absl::StrCat(
          internal::KeyLabel(current->id), ": expired; set a later expiry before rolling"));
    }
    const EnvironmentSpec* env = d.FindEnvironment(current->environment);
    if (env == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "environment: '", current->environment, "' is no longer configured in this deployment"));
    }
    absl::StatusOr<IssuedSecret> secret = IssueSecret(d, *env);
    if (!secret.ok()) return secret.status();

    const absl::Time now = Now();
    KeyRecord next = *current;
    if (grace > absl::ZeroDuration()) {
      next.previous = RolledSecret{current->digest, current->hint, TruncateToMicros(now + grace)};
    } else {
      // Zero grace: forget the old digest at once, so the old token is
      // unknown (not merely expired) from now on.
      next.previous.reset();
    }
    next.digest = secret->digest;
    next.hint = secret->hint;
    next.updated = now;
    absl::StatusOr<KeyRecord> stored = options_.store->Update(next);
    if (stored.ok()) {
      Emit(EventType::kRolled, actor, *stored, {"token"}, stored->version);
      return CreatedKey{*std::move(stored), std::move(secret->token)};
    }
    if (stored.status().code() != absl::StatusCode::kAborted) return stored.status();
  }
  return absl::AbortedError(
      absl::StrCat(internal::KeyLabel(id), ": too many concurrent changes; retry"));
}

}  // namespace keygate
