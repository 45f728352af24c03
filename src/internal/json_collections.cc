// Minimal JSON encoder/decoder (json.h).

#include "internal/json_collections.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace keygate::internal {
namespace {

void AppendUtf8(std::string* out, std::uint32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// A cursor over the input with the few productions we need.
class Parser {
 public:
  explicit Parser(std::string_view in) : in_(in) {}

  void SkipSpace() {
    while (pos_ < in_.size() &&
           (in_[pos_] == ' ' || in_[pos_] == '\t' || in_[pos_] == '\n' || in_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool Consume(char c) {
    SkipSpace();
    if (pos_ < in_.size() && in_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool AtEnd() {
    SkipSpace();
    return pos_ == in_.size();
  }

  bool Hex4(std::uint32_t* v) {
    if (in_.size() - pos_ < 4) return false;
    std::uint32_t r = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = in_[pos_++];
      r <<= 4;
      if (c >= '0' && c <= '9') {
        r |= static_cast<std::uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        r |= static_cast<std::uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        r |= static_cast<std::uint32_t>(c - 'A' + 10);
      } else {
        return false;
      }
    }
    *v = r;
    return true;
  }

  bool String(std::string* out) {
    out->clear();
    if (!Consume('"')) return false;
    while (pos_ < in_.size()) {
      const char c = in_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (pos_ >= in_.size()) return false;
      const char e = in_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out->push_back(e);
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          std::uint32_t cp = 0;
          if (!Hex4(&cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            std::uint32_t lo = 0;
            if (in_.substr(pos_, 2) != "\\u") return false;
            pos_ += 2;
            if (!Hex4(&lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return false;
          }
          AppendUtf8(out, cp);
          break;
        }
        default:
          return false;
      }
    }
    return false;
  }

 private:
  std::string_view in_;
  std::size_t pos_ = 0;
};

}  // namespace

std::string EncodeJsonStringArray(const std::vector<std::string>& values) {
  std::string out = "[";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i != 0) out.push_back(',');
    AppendJsonStringPreservingBytes(&out, values[i]);
  }
  out.push_back(']');
  return out;
}

std::string EncodeJsonStringMap(const std::map<std::string, std::string>& values) {
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : values) {
    if (!first) out.push_back(',');
    first = false;
    AppendJsonStringPreservingBytes(&out, k);
    out.push_back(':');
    AppendJsonStringPreservingBytes(&out, v);
  }
  out.push_back('}');
  return out;
}

bool DecodeJsonStringArray(std::string_view json, std::vector<std::string>* out) {
  out->clear();
  Parser p(json);
  if (!p.Consume('[')) return false;
  if (!p.Consume(']')) {
    do {
      std::string s;
      if (!p.String(&s)) return false;
      out->push_back(std::move(s));
    } while (p.Consume(','));
    if (!p.Consume(']')) return false;
  }
  return p.AtEnd();
}

bool DecodeJsonStringMap(std::string_view json, std::map<std::string, std::string>* out) {
  out->clear();
  Parser p(json);
  if (!p.Consume('{')) return false;
  if (!p.Consume('}')) {
    do {
      std::string k;
      std::string v;
      if (!p.String(&k) || !p.Consume(':') || !p.String(&v)) return false;
      (*out)[std::move(k)] = std::move(v);
    } while (p.Consume(','));
    if (!p.Consume('}')) return false;
  }
  return p.AtEnd();
}

}  // namespace keygate::internal
