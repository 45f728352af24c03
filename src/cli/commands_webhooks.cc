// The keygate CLI's webhooks (commands.h): the dispatcher the global flags describe (its state
// file and signing secrets), which `serve` runs, and `webhooks deliveries`, its delivery log.

#include <sys/stat.h>

#include <cstddef>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/format.h"

#include "internal/webhook_delivery_json.h"
#include "keygate/deployment.h"
#include "keygate/envelope.h"
#include "keygate/key_manager.h"
#include "keygate/key_store.h"
#include "keygate/secret.h"
#include "keygate/webhook_signature.h"
#include "keygate/webhooks/webhook_dispatcher.h"

namespace keygate::cli {
namespace {

// Abseil's string_view is its own type in this build, not std::string_view.
absl::string_view AV(std::string_view s) { return {s.data(), s.size()}; }
std::string_view SV(absl::string_view s) { return {s.data(), s.size()}; }

std::string StateFlag(const Globals& g) {
  return g.webhook_state_source.empty() ? "--webhook-state" : g.webhook_state_source;
}

std::string SecretFlag(const Globals& g) {
  return g.webhook_secret_source.empty() ? "--webhook-secret-file" : g.webhook_secret_source;
}

// The signing secrets: the file read like the pepper (ReadPepperFile: a regular file, not a
// link, at most 4 KiB, private to its owner), then one whsec_ secret a line, blank lines
// skipped. Errors name the flag or variable and the line, never a secret's text.
absl::StatusOr<std::vector<WebhookSecret>> ReadWebhookSecrets(const Globals& g) {
  const std::string flag = SecretFlag(g);
  PepperFileOptions po;
  po.allow_group_or_world_access = g.allow_shared_webhook_secret;
  absl::StatusOr<PepperFile> file = ReadPepperFile(g.webhook_secret_file, po);
  // ReadPepperFile names its file "pepper file <path>"; this one holds webhook secrets.
  const auto in_terms = [&flag](absl::string_view m) {
    absl::ConsumePrefix(&m, "pepper file ");
    return absl::StrCat(
        flag, ": file ",
        absl::StrReplaceAll(m, {{"a pepper file holds only the pepper",
                                 "a webhook secret file holds only its secrets"},
                                {"a pepper needs", "a webhook secret file needs"}}));
  };
  if (!file.ok()) {
    std::string message = in_terms(file.status().message());
    if (message.find("by group or others") != std::string::npos) {
      absl::StrAppend(&message, ", or pass --allow-shared-webhook-secret");
    }
    return absl::Status(file.status().code(), message);
  }
  for (const std::string& w : file->warnings) Warn(in_terms(w));
  std::vector<WebhookSecret> secrets;
  std::size_t line_number = 0;
  for (absl::string_view line :
       absl::StrSplit(AV(file->pepper.Reveal(InsecureSecretAccess::Get())), '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);  // "\r\n" line ends too
    if (line.empty()) continue;
    absl::StatusOr<WebhookSecret> secret = WebhookSecret::Parse(SV(line));
    if (!secret.ok()) {
      absl::string_view reason = secret.status().message();
      absl::ConsumePrefix(&reason, "webhook_secret: ");
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": file ", g.webhook_secret_file, ": line ", line_number, ": ", reason,
                       " (the file holds one whsec_... secret a line, the current one first)"));
    }
    secrets.push_back(*std::move(secret));
  }
  if (secrets.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": file ", g.webhook_secret_file, ": holds no whsec_... secret"));
  }
  return secrets;
}

// The dispatcher's option errors ("state_path: ...") in the CLI's terms.
absl::Status InFlagTerms(const Globals& g, const absl::Status& s) {
  absl::string_view message = s.message();
  const std::pair<absl::string_view, std::string> fields[] = {
      {"state_path: ", StateFlag(g)},
      {"secrets: ", SecretFlag(g)},
      {"threads: ", "--webhook-threads"},
      {"sender.ca_file: ", "--webhook-ca-file"},
      {"expiring_lead: ", "--webhook-expiring-lead"},
  };
  for (const auto& [field, flag] : fields) {
    if (absl::ConsumePrefix(&message, field)) {
      return absl::Status(s.code(), absl::StrCat(flag, ": ", message));
    }
  }
  // The state file's own errors (not a database, unreadable) quote its path.
  if (message.find(g.webhook_state) != absl::string_view::npos) {
    return absl::Status(s.code(), absl::StrCat(StateFlag(g), ": ", message));
  }
  return s;
}

std::string Latency(absl::Duration d) {
  return absl::StrFormat("%.3f", absl::ToDoubleMilliseconds(d));
}

// One message: a line of its own, then a line an attempt; every field escaped.
std::string DescribeDelivery(const WebhookDelivery& d) {
  std::string state(WebhookDeliveryStateName(d.state));
  if (d.state == WebhookDelivery::State::kPending) {
    absl::StrAppend(&state, ", next attempt ", HumanTime(d.next_attempt));
  }
  std::string out = absl::StrCat(EscapeText(d.id), "  ", EscapeText(d.type), "  ",
                                 EscapeText(d.key_id), "  ", state, "  ", EscapeText(d.url), "\n");
  if (d.attempts.empty()) absl::StrAppend(&out, "  no attempt yet\n");
  for (std::size_t i = 0; i < d.attempts.size(); ++i) {
    const WebhookDelivery::Attempt& a = d.attempts[i];
    absl::StrAppend(&out, "  attempt ", i + 1, ": ", HumanTime(a.at), "  ",
                    a.status == 0 ? std::string("no response") : absl::StrCat("HTTP ", a.status),
                    "  ", Latency(a.latency), " ms  ",
                    a.address.empty() ? std::string("-") : EscapeText(a.address));
    if (!a.error.empty()) absl::StrAppend(&out, "  ", SafeMessage(a.error));
    absl::StrAppend(&out, "\n");
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<WebhookDispatcher>> OpenWebhookDispatcher(
    const Globals& g, std::shared_ptr<KeyStore> store, std::shared_ptr<const Envelope> envelope,
    const WebhookRunOptions* run) {
  const std::string state_flag = StateFlag(g);
  if (g.webhook_state.empty()) {
    throw UsageError{
        "--webhook-state: required: the webhook dispatcher's state file (or "
        "$KEYGATE_WEBHOOK_STATE)"};
  }
  struct stat state_st {};
  const bool exists = ::stat(g.webhook_state.c_str(), &state_st) == 0;
  if (!exists && run == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(state_flag, ": ", g.webhook_state,
                     " does not exist (keygate serve --webhook-state creates it)"));
  }
  // The dispatcher creates its tables in the file it is given: never in the key database.
  struct stat db_st {};
  if (exists && !IsPostgresUrl(g.db) && ::stat(g.db.c_str(), &db_st) == 0 &&
      db_st.st_dev == state_st.st_dev && db_st.st_ino == state_st.st_ino) {
    throw UsageError{absl::StrCat(state_flag, ": names the key database (", g.db_source,
                                  "); the dispatcher keeps its state in a file of its own")};
  }
  WebhookDispatcherOptions o;
  o.store = std::move(store);
  o.state_path = g.webhook_state;
  o.envelope = std::move(envelope);  // opens keys' own secrets
  if (run != nullptr) o.expiring_lead = run->expiring_lead;
  if (!g.webhook_secret_file.empty()) {
    absl::StatusOr<std::vector<WebhookSecret>> secrets = ReadWebhookSecrets(g);
    if (!secrets.ok()) return secrets.status();
    o.secrets = *std::move(secrets);
  } else if (run != nullptr && !g.webhook_secret_per_key) {
    throw UsageError{
        "--webhook-secret-file: required to sign webhooks: a file private to its owner (chmod "
        "600) holding a whsec_... secret (or $KEYGATE_WEBHOOK_SECRET_FILE), unless keys have "
        "their own (--webhook-secret-per-key)"};
  } else if (run == nullptr) {
    // Create wants a signing secret; a dispatcher that is never started signs nothing, so
    // reading the log needs none of the real ones.
    absl::StatusOr<WebhookSecret> unused = WebhookSecret::Generate();
    if (!unused.ok()) return unused.status();
    o.secrets.push_back(*std::move(unused));
  }
  if (run != nullptr) {
    if (run->threads.has_value()) o.threads = *run->threads;
    o.sender.ca_file = run->ca_file;
  }
  // Keys may name internal hosts only with --allow-internal-webhooks: then they are reached.
  o.sender.allow_internal_hosts = g.allow_internal_webhooks;
  absl::StatusOr<std::unique_ptr<WebhookDispatcher>> d = WebhookDispatcher::Create(std::move(o));
  if (!d.ok()) return InFlagTerms(g, d.status());
  return d;
}

int RunWebhookRollSecret(const Globals& g, const std::string& id, const std::string& overlap_text) {
  CheckKeyId(id, "KEY_ID");
  absl::Duration overlap;
  if (!ParseDurationWithDays(overlap_text, &overlap)) {
    throw UsageError{"--overlap: expected a duration such as 0s, 1h or 7d"};
  }
  if (!g.webhook_secret_per_key) {
    throw UsageError{
        "webhooks roll-secret: keys have their own webhook secrets only with "
        "--webhook-secret-per-key (and --kek-file); without, the deployment's secrets "
        "(--webhook-secret-file) sign every key's messages"};
  }
  absl::StatusOr<Session> s = OpenSession(g, /*create_if_missing=*/false);
  if (!s.ok()) return Fail(s.status());
  absl::StatusOr<RolledWebhookSecret> r = s->manager->RollWebhookSecret(id, overlap, g.actor);
  if (!r.ok()) return Fail(r.status());
  const std::string_view secret = r->secret.text().Reveal(InsecureSecretAccess::Get());
  if (g.json) {
    JsonWriter w;
    w.BeginObject();
    w.Key("webhook_secret").String(secret);
    w.Key("key");
    WriteRecordJson(w, r->record);
    w.EndObject();
    std::cout << w.str() << "\n";
  } else {
    std::cerr << "New webhook secret of " << EscapeText(r->record.id) << " ("
              << EscapeText(r->record.name) << "):\n";
    std::cout << secret << "\n";
    std::cerr << (r->previous_until != absl::InfinitePast()
                      ? absl::StrCat("The previous secret signs too until ",
                                     HumanTime(r->previous_until), ".")
                      : std::string("The previous secret stopped signing."))
              << "\n"
              << kWebhookSecretWarning << "\n";
  }
  return kExitOk;
}

int RunWebhookDeliveries(const Globals& g, const WebhookDeliveriesArgs& a) {
  if (!a.key.empty()) CheckKeyId(a.key, "KEY_ID");
  if (g.webhook_state.empty()) {
    throw UsageError{
        "--webhook-state: required: the webhook dispatcher's state file, whose delivery log "
        "this prints (or $KEYGATE_WEBHOOK_STATE)"};
  }
  absl::StatusOr<Session> s = OpenSession(g, /*create_if_missing=*/false);
  if (!s.ok()) return Fail(s.status());
  absl::StatusOr<std::unique_ptr<WebhookDispatcher>> d =
      OpenWebhookDispatcher(g, s->store, /*envelope=*/nullptr, /*run=*/nullptr);
  if (!d.ok()) return Fail(d.status());
  absl::StatusOr<std::vector<WebhookDelivery>> log = (*d)->Deliveries(a.key, a.limit);
  if (!log.ok()) return Fail(InFlagTerms(g, log.status()));

  if (g.json) {
    JsonWriter w;
    w.BeginObject();
    w.Key("deliveries").BeginArray();
    for (const WebhookDelivery& delivery : *log) internal::WriteDeliveryJson(w, delivery);
    w.EndArray();
    w.EndObject();
    std::cout << w.str() << "\n";
    return kExitOk;
  }
  if (log->empty()) {
    std::cerr << "No webhook messages" << (a.key.empty() ? "" : " for " + a.key) << " in "
              << EscapeText(g.webhook_state) << ".\n";
    return kExitOk;
  }
  for (const WebhookDelivery& delivery : *log) std::cout << DescribeDelivery(delivery);
  if (log->size() == a.limit) {
    std::cerr << "Showing the newest " << a.limit << " messages (raise --limit for more).\n";
  }
  return kExitOk;
}

}  // namespace keygate::cli
