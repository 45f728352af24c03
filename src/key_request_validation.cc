// Field checks for the management API's requests (key_request_validation.h).

#include "key_request_validation.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "internal/base62.h"
#include "internal/charclass.h"
#include "internal/ip_address.h"
#include "internal/utf8.h"
#include "keygate/audit.h"
#include "keygate/token.h"

namespace keygate::internal {

absl::Status Invalid(std::string_view field, std::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": ", std::string(reason)));
}

namespace {

// Whether `text` holds an API token anywhere inside it: what a secret
// scanner matches, `<prefix>_<env>_` and kSecretChars + kCheckChars base62
// characters, with a CRC-32 that checks out (so text that merely has the
// shape, a long snake_case identifier say, passes: odds of 2^-32). Any
// prefix and tag count, not only this deployment's: another deployment's
// token is just as secret. Each '_' is looked at once as the one ending a
// tag, with at most kMaxPrefixLength - 1 parses there: O(size).
bool HoldsToken(std::string_view text) noexcept {
  constexpr std::size_t kBody = kSecretChars + kCheckChars;
  const auto lower_alnum = [](char c) { return HasClass(c, kClassLowerAlnum); };
  for (std::size_t us = text.find('_'); us != std::string_view::npos; us = text.find('_', us + 1)) {
    if (text.size() - us - 1 < kBody) break;
    bool body = true;
    for (std::size_t k = us + 1; k <= us + kBody && body; ++k) {
      body = kBase62Digit[static_cast<unsigned char>(text[k])] != kNotBase62;
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
    const Utf8Step step = DecodeUtf8(value.substr(i));
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
    Ipv6Bytes addr{};
    if (!ParseIpv6(host, &addr)) {
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
      Ipv4Bytes v4{};
      if (!ParseIpv4(name, &v4)) {
        return Invalid(kField, "malformed IPv4 host (a dotted quad of decimal numbers only)");
      }
      if (!allow_internal_hosts && IsInternalIpv4(v4)) {
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

}  // namespace

absl::Status CheckWebhookUrl(std::string_view url, bool allow_internal_hosts) {
  return ValidateWebhookUrl(url, allow_internal_hosts);
}

absl::Status ValidateCreateRequest(const Deployment& deployment, const CreateKeyRequest& request,
                                   const ValidationOptions& options) {
  absl::Status checks[] = {
      ValidateName(request.name),
      ValidateDescription(request.description),
      ValidateOwner(request.owner),
      request.kind == KeyKind::kPersonal || request.kind == KeyKind::kGeneral
          ? absl::OkStatus()
          : Invalid("kind", "must be personal or general"),
      deployment.Environment(request.environment).status(),
      ValidateScopes(deployment.scopes(), request.scopes),
      ValidateExpires(request.expires, options.now),
      ValidateRateLimit(request.rate_limit),
      ValidateWebhookUrl(request.webhook_url, options.allow_internal_webhook_hosts),
      ValidateAccounts(request.accounts),
      ValidateMetadata(request.metadata),
  };
  for (absl::Status& s : checks) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ValidateKeyUpdate(const Deployment& deployment, const KeyUpdate& update,
                               const ValidationOptions& options) {
  absl::Status checks[] = {
      update.name ? ValidateName(*update.name) : absl::OkStatus(),
      update.description ? ValidateDescription(*update.description) : absl::OkStatus(),
      update.scopes ? ValidateScopes(deployment.scopes(), *update.scopes) : absl::OkStatus(),
      update.expires ? ValidateExpires(*update.expires, options.now) : absl::OkStatus(),
      update.rate_limit ? ValidateRateLimit(*update.rate_limit) : absl::OkStatus(),
      update.webhook_url
          ? ValidateWebhookUrl(*update.webhook_url, options.allow_internal_webhook_hosts)
          : absl::OkStatus(),
      update.accounts ? ValidateAccounts(*update.accounts) : absl::OkStatus(),
      update.metadata ? ValidateMetadata(*update.metadata) : absl::OkStatus(),
  };
  for (absl::Status& s : checks) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace keygate::internal

namespace keygate {

absl::Status ValidateActor(std::string_view actor) {
  return internal::ValidateBoundedText("actor", actor, kMaxActorLength);
}

absl::Status ValidateCreateKeyRequest(const Deployment& deployment, const CreateKeyRequest& request,
                                      absl::Time now, bool allow_internal_webhook_hosts) {
  return internal::ValidateCreateRequest(deployment, request, {now, allow_internal_webhook_hosts});
}

}  // namespace keygate
