// Output helpers for the keygate CLI (format.h).

#include "cli/format.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"

#include "internal/text_escape.h"
#include "internal/utf8.h"

namespace keygate::cli {

std::string HumanTime(absl::Time t) {
  if (t == absl::InfiniteFuture()) return "never";
  if (t == absl::InfinitePast()) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%SZ", t, absl::UTCTimeZone());
}

namespace {

// Code points in valid UTF-8 (what EscapeText returns): the column count for
// all but wide characters.
std::size_t DisplayWidth(std::string_view s) {
  std::size_t n = 0;
  for (const char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

}  // namespace

std::string DescribeRecord(const KeyRecord& r) {
  std::vector<std::pair<std::string, std::string>> f;
  f.emplace_back("id", r.id);
  f.emplace_back("name", r.name);
  if (!r.description.empty()) f.emplace_back("description", r.description);
  f.emplace_back("owner", r.owner);
  f.emplace_back("kind", std::string(KeyKindName(r.kind)));
  f.emplace_back("environment", r.environment);
  f.emplace_back("scopes", r.scopes.empty() ? "(none)" : absl::StrJoin(r.scopes, ", "));
  f.emplace_back("state", std::string(KeyStateName(r.state)));
  f.emplace_back("hint", r.hint);
  f.emplace_back("recoverable", r.sealed_token.empty() ? "no (hash only)" : "yes (keygate reveal)");
  if (!r.sealed_webhook_secret.empty()) {
    f.emplace_back("webhook secret", "its own, sealed (keygate webhooks roll-secret)");
  }
  f.emplace_back("created", HumanTime(r.created));
  f.emplace_back("updated", HumanTime(r.updated));
  f.emplace_back("expires", r.expires ? HumanTime(*r.expires) : "never");
  f.emplace_back("last used", r.last_used ? HumanTime(*r.last_used) : "never");
  if (r.rate_limit.has_value()) {
    f.emplace_back("rate limit", absl::StrCat(r.rate_limit->rate, " per ",
                                              absl::FormatDuration(r.rate_limit->period),
                                              ", burst ", r.rate_limit->burst));
  } else {
    f.emplace_back("rate limit", "environment default");
  }
  if (!r.webhook_url.empty()) f.emplace_back("webhook", r.webhook_url);
  if (!r.accounts.empty()) f.emplace_back("accounts", absl::StrJoin(r.accounts, ", "));
  for (const auto& [k, v] : r.metadata) f.emplace_back(absl::StrCat("metadata.", k), v);
  if (r.previous.has_value()) {
    f.emplace_back("previous token", absl::StrCat(r.previous->hint, " (valid until ",
                                                  HumanTime(r.previous->valid_until), ")"));
  }
  f.emplace_back("version", absl::StrCat(r.version));
  // Every field is escaped: anything in a record may come from outside, and
  // one stored newline could otherwise print a line of its own.
  for (auto& [k, v] : f) {
    k = EscapeText(k);
    v = EscapeText(v);
  }
  std::size_t width = 0;
  for (const auto& [k, v] : f) width = std::max(width, DisplayWidth(k));
  std::string out;
  for (const auto& [k, v] : f) {
    absl::StrAppend(&out, k, ":", std::string(width - DisplayWidth(k) + 1, ' '), v, "\n");
  }
  return out;
}

std::string Table(const std::vector<std::vector<std::string>>& raw_rows) {
  std::vector<std::vector<std::string>> rows;
  rows.reserve(raw_rows.size());
  for (const auto& raw : raw_rows) {
    std::vector<std::string>& row = rows.emplace_back();
    for (const std::string& cell : raw) row.push_back(EscapeText(cell));
  }
  std::vector<std::size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (std::size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], DisplayWidth(row[i]));
    }
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - DisplayWidth(row[i]) + 2, ' ');
    }
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string Redact(std::string_view text) {
  auto token_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  };
  std::string out;
  std::size_t i = 0;
  while (i < text.size()) {
    if (!token_char(text[i])) {
      out.push_back(text[i++]);
      continue;
    }
    std::size_t j = i;
    while (j < text.size() && token_char(text[j])) ++j;
    if (j - i >= 40) {
      out += "<redacted>";
    } else {
      out.append(text.substr(i, j - i));
    }
    i = j;
  }
  return out;
}

bool ParseDurationWithDays(std::string_view text, absl::Duration* out) {
  if (text.size() > 1 && text.back() == 'd') {
    std::int64_t days = 0;
    if (!absl::SimpleAtoi(absl::string_view(text.data(), text.size() - 1), &days) || days < 0 ||
        days > 100000) {
      return false;
    }
    *out = absl::Hours(24 * days);
    return true;
  }
  return absl::ParseDuration(absl::string_view(text.data(), text.size()), out);
}

}  // namespace keygate::cli
