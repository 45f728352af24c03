// The linearizability checker (linearizability.h).
//
// Per key: the operations sorted by invocation and, separately, by response,
// each in a doubly linked list from which placed ("lifted") operations are
// unlinked and relinked on backtracking (Wing & Gong's search). An operation
// may be placed next iff it was invoked before the earliest response among
// those not yet placed. Verifications are placed greedily as soon as they
// match the state (they do not change it, so placing one earlier is never
// worse: every operation it then precedes was still pending when it was
// invoked); the search branches over the management calls that may go next,
// and remembers (placed set, state) configurations that failed (Lowe).

#include "linearizability.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"

namespace keygate::linearizability {
namespace {

// A key's state in the sequential model (see the header).
struct State {
  enum class Life : std::uint8_t { kAbsent, kLive, kDeleted };
  Life life = Life::kAbsent;
  bool revoked = false;
  bool has_expiry = false;
  int current = -1;   // local token index
  int previous = -1;  // local token index, -1: none
  int scopes = -1;    // index into the key's interned scope lists, -1: none
  std::int64_t previous_until_ns = 0;
  std::int64_t expires_ns = 0;

  // Appends a canonical encoding (equal states, equal bytes).
  void AppendTo(std::string* out) const {
    const std::int64_t fields[] = {static_cast<std::int64_t>(life),
                                   revoked,
                                   has_expiry,
                                   current,
                                   previous,
                                   scopes,
                                   previous >= 0 ? previous_until_ns : 0,
                                   has_expiry ? expires_ns : 0};
    out->append(reinterpret_cast<const char*>(fields), sizeof(fields));
  }
};

// Times as int64 nanoseconds, saturating (the verifier's own convention).
std::int64_t Nanos(absl::Time t) {
  if (t == absl::InfiniteFuture()) return INT64_MAX;
  if (t == absl::InfinitePast()) return INT64_MIN;
  return absl::ToUnixNanos(t);
}

std::string TimeText(absl::Time t) { return absl::FormatTime(t, absl::UTCTimeZone()); }

bool IsWrite(OpKind k) { return k != OpKind::kVerify; }

// Names as std::string (absl::StrCat may not take std::string_view).
std::string Name(Outcome o) { return std::string(OutcomeName(o)); }
std::string Name(OpKind k) { return std::string(OpKindName(k)); }

// An operation as the search sees it: interned token and scope list.
struct Entry {
  const Op* op = nullptr;
  int token = -1;            // create/roll: the token issued; verify: the one presented
  int scopes = -1;           // create/modify: the interned list (-1: none / unchanged)
  std::int64_t time_ns = 0;  // roll: previous_valid_until; verify: now; create/modify: expiry
};

class KeySearch {
 public:
  KeySearch(std::string key, std::vector<const Op*> ops, const CheckOptions& options)
      : key_(std::move(key)), options_(options) {
    std::sort(ops.begin(), ops.end(), [](const Op* a, const Op* b) { return a->call < b->call; });
    // Local token numbers in issue order, for messages and the state.
    std::map<std::string, int, std::less<>> tokens;
    for (const Op* op : ops) {
      Entry e;
      e.op = op;
      if (op->kind == OpKind::kCreate || op->kind == OpKind::kRoll) {
        e.token = tokens.emplace(op->token, static_cast<int>(tokens.size())).first->second;
      }
      if (op->scopes.has_value()) e.scopes = InternScopes(*op->scopes);
      if (op->kind == OpKind::kVerify) e.time_ns = Nanos(op->now);
      if (op->kind == OpKind::kRoll && op->previous_valid_until.has_value()) {
        e.time_ns = Nanos(*op->previous_valid_until);
      }
      if (op->expires.has_value() && op->expires->has_value()) e.time_ns = Nanos(**op->expires);
      entries_.push_back(e);
    }
    for (Entry& e : entries_) {
      if (e.op->kind != OpKind::kVerify) continue;
      auto it = tokens.find(e.op->token);
      e.token = it == tokens.end() ? -1 : it->second;
    }
    const int n = static_cast<int>(entries_.size());
    // The two lists; index n is the head sentinel of both.
    call_next_.resize(n + 1);
    call_prev_.resize(n + 1);
    ret_next_.resize(n + 1);
    ret_prev_.resize(n + 1);
    std::vector<int> by_ret(n);
    for (int i = 0; i < n; ++i) by_ret[i] = i;
    std::sort(by_ret.begin(), by_ret.end(),
              [&](int a, int b) { return entries_[a].op->ret < entries_[b].op->ret; });
    Link(
        call_next_, call_prev_, [](int i) { return i; }, n);
    Link(
        ret_next_, ret_prev_, [&](int i) { return by_ret[i]; }, n);
    placed_.assign((n + 63) / 64, 0);
  }

  // True if linearizable; else `failure()` says why. `configurations()`
  // counts what was explored; `exhausted()` says the budget ran out.
  bool Run() {
    const bool ok = Search(State{});
    if (!ok) BuildFailure();
    return ok;
  }
  const std::string& failure() const { return failure_; }
  std::string DescribeAll() const {
    std::string out;
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      absl::StrAppend(&out, Describe(static_cast<int>(i)), "\n");
    }
    return out;
  }
  std::size_t configurations() const { return failed_.size(); }
  bool exhausted() const { return exhausted_; }

 private:
  template <typename Order>
  static void Link(std::vector<int>& next, std::vector<int>& prev, Order order, int n) {
    int last = n;
    for (int k = 0; k < n; ++k) {
      const int i = order(k);
      next[last] = i;
      prev[i] = last;
      last = i;
    }
    next[last] = n;
    prev[n] = last;
  }

  int InternScopes(std::vector<std::string> scopes) {
    std::sort(scopes.begin(), scopes.end());
    for (std::size_t i = 0; i < scope_sets_.size(); ++i) {
      if (scope_sets_[i] == scopes) return static_cast<int>(i);
    }
    scope_sets_.push_back(std::move(scopes));
    return static_cast<int>(scope_sets_.size()) - 1;
  }

  int head() const { return static_cast<int>(entries_.size()); }

  // The earliest response among the operations not yet placed.
  Tick MinReturn() const {
    const int first = ret_next_[head()];
    return first == head() ? ~Tick{0} : entries_[first].op->ret;
  }

  void Lift(int i) {
    call_next_[call_prev_[i]] = call_next_[i];
    call_prev_[call_next_[i]] = call_prev_[i];
    ret_next_[ret_prev_[i]] = ret_next_[i];
    ret_prev_[ret_next_[i]] = ret_prev_[i];
    placed_[i / 64] |= std::uint64_t{1} << (i % 64);
    ++placed_count_;
  }

  // Undoes Lift(i); only in the reverse order of the lifts.
  void Unlift(int i) {
    call_next_[call_prev_[i]] = i;
    call_prev_[call_next_[i]] = i;
    ret_next_[ret_prev_[i]] = i;
    ret_prev_[ret_next_[i]] = i;
    placed_[i / 64] &= ~(std::uint64_t{1} << (i % 64));
    --placed_count_;
  }

  bool Allows(int scopes, std::string_view required) const {
    if (required.empty()) return true;
    if (scopes < 0) return false;
    const std::vector<std::string>& granted = scope_sets_[scopes];
    if (options_.scope_allows) return options_.scope_allows(granted, required);
    return std::find(granted.begin(), granted.end(), required) != granted.end();
  }

  // The model's verdict for verification `e` in state `s`.
  Outcome Expected(const State& s, const Entry& e) const {
    if (s.life != State::Life::kLive || e.token < 0) return Outcome::kUnknown;
    bool previous = false;
    if (e.token == s.previous) {
      previous = true;
    } else if (e.token != s.current) {
      return Outcome::kUnknown;
    }
    if (previous && !(e.time_ns < s.previous_until_ns)) return Outcome::kExpired;
    if (s.revoked) return Outcome::kRevoked;
    if (s.has_expiry && s.expires_ns <= e.time_ns) return Outcome::kExpired;
    if (!Allows(s.scopes, e.op->scope)) return Outcome::kInsufficientScope;
    return Outcome::kOk;
  }

  // The state after management call `e`, or nullopt where the model does
  // not allow it to succeed.
  static std::optional<State> Apply(const State& s, const Entry& e) {
    State t = s;
    const bool live = s.life == State::Life::kLive;
    switch (e.op->kind) {
      case OpKind::kCreate:
        if (s.life != State::Life::kAbsent) return std::nullopt;
        t = State{};
        t.life = State::Life::kLive;
        t.current = e.token;
        t.scopes = e.scopes;
        t.has_expiry = e.op->expires.has_value() && e.op->expires->has_value();
        t.expires_ns = t.has_expiry ? e.time_ns : 0;
        return t;
      case OpKind::kRevoke:
      case OpKind::kRestore:
        if (!live) return std::nullopt;
        t.revoked = e.op->kind == OpKind::kRevoke;
        return t;
      case OpKind::kRoll:
        if (!live || s.revoked) return std::nullopt;
        if (e.op->previous_valid_until.has_value()) {
          t.previous = s.current;
          t.previous_until_ns = e.time_ns;
        } else {
          t.previous = -1;
          t.previous_until_ns = 0;
        }
        t.current = e.token;
        return t;
      case OpKind::kModify:
        if (!live) return std::nullopt;
        if (e.op->scopes.has_value()) t.scopes = e.scopes;
        if (e.op->expires.has_value()) {
          t.has_expiry = e.op->expires->has_value();
          t.expires_ns = t.has_expiry ? e.time_ns : 0;
        }
        return t;
      case OpKind::kDelete:
        if (!live) return std::nullopt;
        t = State{};
        t.life = State::Life::kDeleted;
        return t;
      case OpKind::kVerify:
        break;
    }
    return std::nullopt;
  }

  void NoteProgress(const State& s) {
    if (placed_count_ < best_placed_ && best_set_) return;
    best_set_ = true;
    best_placed_ = placed_count_;
    best_state_ = s;
    best_blocker_ = ret_next_[head()];
    best_pending_.clear();
    const Tick min_ret = MinReturn();
    for (int i = call_next_[head()]; i != head() && entries_[i].op->call < min_ret;
         i = call_next_[i]) {
      best_pending_.push_back(i);
    }
  }

  bool Search(const State& s) {
    // Place every verification that may go next and matches the state.
    std::vector<int> greedy;
    for (int i = call_next_[head()]; i != head() && entries_[i].op->call < MinReturn();) {
      const int next = call_next_[i];
      const Entry& e = entries_[i];
      if (!IsWrite(e.op->kind) && Expected(s, e) == e.op->outcome) {
        Lift(i);
        greedy.push_back(i);
      }
      i = next;
    }
    bool ok = false;
    if (call_next_[head()] == head()) {
      ok = true;
    } else {
      NoteProgress(s);
      std::string config(reinterpret_cast<const char*>(placed_.data()),
                         placed_.size() * sizeof(std::uint64_t));
      s.AppendTo(&config);
      if (failed_.size() >= options_.max_configurations) {
        exhausted_ = true;
      } else if (failed_.insert(std::move(config)).second) {
        for (int i = call_next_[head()];
             i != head() && entries_[i].op->call < MinReturn() && !ok && !exhausted_;
             i = call_next_[i]) {
          const Entry& e = entries_[i];
          if (!IsWrite(e.op->kind)) continue;
          std::optional<State> t = Apply(s, e);
          if (!t.has_value()) continue;
          Lift(i);
          ok = Search(*t);
          if (!ok) Unlift(i);
        }
      }
    }
    if (!ok) {
      for (auto it = greedy.rbegin(); it != greedy.rend(); ++it) Unlift(*it);
    }
    return ok;
  }

  std::string TokenName(int token) const {
    if (token < 0) return "a token never issued to it";
    return absl::StrCat("token ", token + 1);
  }

  std::string Describe(int i) const {
    const Entry& e = entries_[i];
    const Op& op = *e.op;
    std::string s(OpKindName(op.kind));
    switch (op.kind) {
      case OpKind::kCreate:
        absl::StrAppend(&s, "(issuing ", TokenName(e.token), ")");
        break;
      case OpKind::kRoll:
        absl::StrAppend(&s, "(issuing ", TokenName(e.token), ", previous ",
                        op.previous_valid_until.has_value()
                            ? "valid until " + TimeText(*op.previous_valid_until)
                            : std::string("forgotten"),
                        ")");
        break;
      case OpKind::kModify:
        absl::StrAppend(&s, "(", op.scopes ? "scopes [" + absl::StrJoin(*op.scopes, ",") + "]" : "",
                        op.scopes && op.expires ? ", " : "",
                        op.expires ? (op.expires->has_value() ? "expires " + TimeText(**op.expires)
                                                              : std::string("no expiry"))
                                   : "",
                        ")");
        break;
      case OpKind::kVerify:
        absl::StrAppend(&s, "(", TokenName(e.token), op.scope.empty() ? "" : ", scope ", op.scope,
                        ", now ", TimeText(op.now), ") -> ", Name(op.outcome));
        break;
      default:
        break;
    }
    absl::StrAppend(&s, " [call ", op.call, ", ret ", op.ret);
    if (op.client >= 0) absl::StrAppend(&s, ", client ", op.client);
    return s + "]";
  }

  std::string DescribeState(const State& s) const {
    switch (s.life) {
      case State::Life::kAbsent:
        return "not created yet";
      case State::Life::kDeleted:
        return "deleted";
      case State::Life::kLive:
        break;
    }
    std::string out =
        absl::StrCat(s.revoked ? "revoked" : "active", ", current ", TokenName(s.current));
    if (s.previous >= 0) {
      absl::StrAppend(&out, ", previous ", TokenName(s.previous), " until ",
                      TimeText(absl::FromUnixNanos(s.previous_until_ns)));
    }
    if (s.has_expiry)
      absl::StrAppend(&out, ", expires ", TimeText(absl::FromUnixNanos(s.expires_ns)));
    absl::StrAppend(&out, ", scopes [",
                    s.scopes < 0 ? std::string() : absl::StrJoin(scope_sets_[s.scopes], ","), "]");
    return out;
  }

  void BuildFailure() {
    const std::string who = key_.empty() ? std::string("never-issued tokens") : "key " + key_;
    if (exhausted_) {
      failure_ = absl::StrCat(who, ": inconclusive: the search gave up after ",
                              options_.max_configurations, " configurations");
      return;
    }
    failure_ = absl::StrCat(who, ": not linearizable. The longest consistent order places ",
                            best_placed_, " of ", entries_.size(), " operations, leaving the key ",
                            DescribeState(best_state_), "; then ");
    if (best_blocker_ >= 0 && best_blocker_ != head()) {
      const Entry& e = entries_[best_blocker_];
      absl::StrAppend(&failure_, Describe(best_blocker_), " cannot be placed: ");
      if (IsWrite(e.op->kind)) {
        absl::StrAppend(&failure_, "the model does not allow it to succeed there");
      } else {
        absl::StrAppend(&failure_, "the model answers ", Name(Expected(best_state_, e)), " there");
      }
      absl::StrAppend(&failure_, ", and no order of the operations pending with it helps.");
    }
    absl::StrAppend(&failure_, " Pending:");
    for (int i : best_pending_) absl::StrAppend(&failure_, "\n  ", Describe(i));
    absl::StrAppend(&failure_, "\nManagement calls on the key:");
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      if (IsWrite(entries_[i].op->kind)) {
        absl::StrAppend(&failure_, "\n  ", Describe(static_cast<int>(i)));
      }
    }
  }

  std::string key_;
  const CheckOptions& options_;
  std::vector<Entry> entries_;
  std::vector<std::vector<std::string>> scope_sets_;
  std::vector<int> call_next_, call_prev_, ret_next_, ret_prev_;
  std::vector<std::uint64_t> placed_;
  std::size_t placed_count_ = 0;
  std::unordered_set<std::string> failed_;
  bool exhausted_ = false;

  bool best_set_ = false;
  std::size_t best_placed_ = 0;
  State best_state_;
  int best_blocker_ = -1;
  std::vector<int> best_pending_;
  std::string failure_;
};

bool IdentifiesKey(Outcome o) {
  switch (o) {
    case Outcome::kOk:
    case Outcome::kRevoked:
    case Outcome::kExpired:
    case Outcome::kWrongEnvironment:
    case Outcome::kAccountDenied:
    case Outcome::kInsufficientScope:
    case Outcome::kRateLimited:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::string_view OpKindName(OpKind kind) noexcept {
  switch (kind) {
    case OpKind::kCreate:
      return "create";
    case OpKind::kRevoke:
      return "revoke";
    case OpKind::kRestore:
      return "restore";
    case OpKind::kRoll:
      return "roll";
    case OpKind::kModify:
      return "modify";
    case OpKind::kDelete:
      return "delete";
    case OpKind::kVerify:
      return "verify";
  }
  return "?";
}

Op Op::Create(std::string key, std::string token, std::vector<std::string> scopes,
              std::optional<absl::Time> expires) {
  Op op;
  op.kind = OpKind::kCreate;
  op.key = std::move(key);
  op.token = std::move(token);
  op.scopes = std::move(scopes);
  op.expires = expires;
  return op;
}

Op Op::Revoke(std::string key) {
  Op op;
  op.kind = OpKind::kRevoke;
  op.key = std::move(key);
  return op;
}

Op Op::Restore(std::string key) {
  Op op;
  op.kind = OpKind::kRestore;
  op.key = std::move(key);
  return op;
}

Op Op::Roll(std::string key, std::string new_token,
            std::optional<absl::Time> previous_valid_until) {
  Op op;
  op.kind = OpKind::kRoll;
  op.key = std::move(key);
  op.token = std::move(new_token);
  op.previous_valid_until = previous_valid_until;
  return op;
}

Op Op::Modify(std::string key, std::optional<std::vector<std::string>> scopes,
              std::optional<std::optional<absl::Time>> expires) {
  Op op;
  op.kind = OpKind::kModify;
  op.key = std::move(key);
  op.scopes = std::move(scopes);
  op.expires = expires;
  return op;
}

Op Op::Delete(std::string key) {
  Op op;
  op.kind = OpKind::kDelete;
  op.key = std::move(key);
  return op;
}

Op Op::Verify(std::string key, std::string token, std::string scope, absl::Time now) {
  Op op;
  op.kind = OpKind::kVerify;
  op.key = std::move(key);
  op.token = std::move(token);
  op.scope = std::move(scope);
  op.now = now;
  return op;
}

History::Log& History::NewLog() {
  std::lock_guard<std::mutex> lock(mu_);
  return logs_.emplace_back();
}

std::vector<Op> History::Ops() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Op> all;
  std::size_t n = 0;
  for (const Log& log : logs_) n += log.ops_.size();
  all.reserve(n);
  for (const Log& log : logs_) all.insert(all.end(), log.ops_.begin(), log.ops_.end());
  return all;
}

CheckResult Check(const std::vector<Op>& ops, const CheckOptions& options) {
  CheckResult result;
  result.operations = ops.size();
  auto malformed = [&](std::string why) {
    result.linearizable = false;
    result.failure = "malformed history: " + std::move(why);
    return result;
  };
  // Which key issued each token; every token at most once.
  std::unordered_map<std::string_view, std::string_view> issuer;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    if (op.ret <= op.call) {
      return malformed(
          absl::StrCat("operation ", i, " (", Name(op.kind), ") returns at or before its call"));
    }
    if (op.kind == OpKind::kCreate || op.kind == OpKind::kRoll) {
      if (op.key.empty()) return malformed(absl::StrCat("operation ", i, " names no key"));
      if (!issuer.emplace(op.token, op.key).second) {
        return malformed(
            absl::StrCat("a token is issued twice (", Name(op.kind), " of key ", op.key, ")"));
      }
    }
    if (IsWrite(op.kind) && op.key.empty()) {
      return malformed(absl::StrCat("operation ", i, " names no key"));
    }
  }
  // Per key: the management calls, and the verifies of each replica.
  struct KeyOps {
    std::vector<const Op*> writes;
    std::map<int, std::vector<const Op*>> verifies;
  };
  std::map<std::string_view, KeyOps> by_key;
  for (const Op& op : ops) {
    if (op.kind == OpKind::kVerify) {
      ++result.verifications;
      auto it = issuer.find(op.token);
      const std::string_view owner = it == issuer.end() ? std::string_view() : it->second;
      if (owner != op.key) {
        return malformed(absl::StrCat("a verify recorded under key '", op.key,
                                      "' presents a token issued to '", std::string(owner), "'"));
      }
      if (options.check_verdict_key) {
        const std::string_view expected = IdentifiesKey(op.outcome) ? owner : std::string_view();
        if (op.verdict_key != expected) {
          result.linearizable = false;
          result.failure =
              absl::StrCat("a verdict ", Name(op.outcome), " names key '", op.verdict_key,
                           "' for a token of key '", std::string(owner), "'");
          return result;
        }
      }
    }
    KeyOps& k = by_key[op.key];
    if (op.kind == OpKind::kVerify) {
      k.verifies[op.replica].push_back(&op);
    } else {
      k.writes.push_back(&op);
    }
  }
  result.keys = by_key.size();
  for (auto& [key, k] : by_key) {
    if (k.verifies.empty()) k.verifies[0];  // the writes alone must be possible too
    for (auto& [replica, verifies] : k.verifies) {
      std::vector<const Op*> ops_of_replica = k.writes;
      ops_of_replica.insert(ops_of_replica.end(), verifies.begin(), verifies.end());
      KeySearch search(std::string(key), std::move(ops_of_replica), options);
      const bool ok = search.Run();
      result.configurations += search.configurations();
      if (!ok) {
        result.linearizable = false;
        result.inconclusive = search.exhausted();
        result.key = std::string(key);
        result.replica = replica;
        result.failure = search.failure();
        if (k.verifies.size() > 1) absl::StrAppend(&result.failure, "\n(replica ", replica, ")");
        return result;
      }
    }
  }
  result.linearizable = true;
  return result;
}

std::string DescribeKey(const std::vector<Op>& ops, std::string_view key, int replica) {
  std::vector<const Op*> of_key;
  for (const Op& op : ops) {
    if (op.key == key && (op.kind != OpKind::kVerify || op.replica == replica)) {
      of_key.push_back(&op);
    }
  }
  const CheckOptions options;
  return KeySearch(std::string(key), std::move(of_key), options).DescribeAll();
}

}  // namespace keygate::linearizability
