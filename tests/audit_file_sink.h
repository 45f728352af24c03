// An EventSink that appends "E <sequence>\n" to a file with one write(2) per
// event (a line is whole or absent after a SIGKILL): the sink of the crash
// test's audit relays, in the killed writer and in the checking test.

#ifndef KEYGATE_TESTS_AUDIT_FILE_SINK_H_
#define KEYGATE_TESTS_AUDIT_FILE_SINK_H_

#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#include "keygate/event_sink.h"

namespace keygate::testing {

class AuditFileSink final : public EventSink {
 public:
  explicit AuditFileSink(const std::string& path)
      : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) {}
  ~AuditFileSink() override {
    if (fd_ >= 0) ::close(fd_);
  }
  AuditFileSink(const AuditFileSink&) = delete;
  AuditFileSink& operator=(const AuditFileSink&) = delete;

  absl::Status Emit(const Event& event) override {
    if (fd_ < 0) return absl::UnavailableError("audit file sink: cannot open the file");
    const std::string line = absl::StrCat("E ", event.sequence, "\n");
    if (::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      return absl::UnavailableError("audit file sink: short write");
    }
    return absl::OkStatus();
  }

 private:
  int fd_;
};

}  // namespace keygate::testing

#endif  // KEYGATE_TESTS_AUDIT_FILE_SINK_H_
