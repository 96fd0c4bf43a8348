#include "transport/ucx_config.h"

#include "absl/algorithm/container.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace kvhub::transport {

absl::string_view UcxPathName(UcxPath path) {
  switch (path) {
    case UcxPath::kAuto: return "auto";
    case UcxPath::kRma: return "rma";
    case UcxPath::kAm: return "am";
  }
  return "unknown";
}

absl::string_view UcxProgressModeName(UcxProgressMode mode) {
  switch (mode) {
    case UcxProgressMode::kSleep: return "sleep";
    case UcxProgressMode::kPoll: return "poll";
  }
  return "unknown";
}

absl::Status UcxConfig::Validate() const {
  if (idle_wakeup < absl::Milliseconds(1) || idle_wakeup > absl::Seconds(10)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ucx idle_wakeup must be in [1ms, 10s], got ", absl::FormatDuration(idle_wakeup)));
  }
  if (op_timeout <= absl::ZeroDuration() || op_timeout > absl::Hours(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ucx op_timeout must be in (0, 1h], got ", absl::FormatDuration(op_timeout)));
  }
  for (char c : tls) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == ',' || c == '_' || c == '^' || c == ':';
    if (!ok) return absl::InvalidArgumentError(absl::StrCat("ucx tls has a bad character: '", tls, "'"));
  }
  for (const auto& [name, value] : options) {
    if (name.empty() || name.rfind("UCX_", 0) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("ucx option name must be non-empty and without the UCX_ prefix: '", name, "'"));
    }
    // UCX would take it over `tls`, while kvhub's own choices (tcp tuning, the
    // ping context, the logged transports) follow `tls`: they would disagree.
    if (absl::AsciiStrToUpper(name) == "TLS") {
      return absl::InvalidArgumentError("ucx option TLS: give the transports as tls (ucx_tls), not as an option");
    }
  }
  if (tcp_rx_segment_bytes != 0 && (tcp_rx_segment_bytes < (8 << 10) || tcp_rx_segment_bytes > (64 << 20))) {
    return absl::InvalidArgumentError(
        absl::StrCat("ucx tcp_rx_segment_bytes must be 0 or 8 KiB .. 64 MiB, got ", tcp_rx_segment_bytes));
  }
  if (registration_cache_entries > 1u << 20) {
    return absl::InvalidArgumentError("ucx registration_cache_entries must be <= 1048576");
  }
  return absl::OkStatus();
}

namespace {

// UCX's shared-memory transports, and among them those that deliver active
// messages through a receive queue (the aliases sm and shm name them all).
bool IsSharedMemoryTransport(absl::string_view t) {
  return t == "sm" || t == "shm" || t == "posix" || t == "sysv" || t == "cma" || t == "knem" || t == "xpmem";
}
bool IsSharedMemoryQueueTransport(absl::string_view t) {
  return t == "sm" || t == "shm" || t == "posix" || t == "sysv";
}

}  // namespace

bool TlsNamesSharedMemory(absl::string_view tls) {
  // "^a,b" lists what UCX must NOT use ("^posix" named posix, and counted as shared
  // memory asked for): treated as the default, as SharedMemoryQueueTls does.
  if (absl::StartsWith(tls, "^")) return false;
  return absl::c_any_of(absl::StrSplit(tls, ','), IsSharedMemoryTransport);
}

std::string SharedMemoryQueueTls(absl::string_view tls) {
  if (absl::StartsWith(tls, "^")) return "";
  std::vector<absl::string_view> names;
  for (absl::string_view t : absl::StrSplit(tls, ',')) {
    if (IsSharedMemoryQueueTransport(t)) names.push_back(t);
  }
  return absl::StrJoin(names, ",");
}

bool ReachesPeersOnlyOverTcp(const std::vector<std::string>& transports, bool peer_failure_detection) {
  bool tcp = false;
  for (const std::string& t : transports) {
    if (t == "tcp") {
      tcp = true;
    } else if (t != "self" && !(peer_failure_detection && IsSharedMemoryTransport(t))) {
      return false;  // self: this process only; shared memory is left out in peer-failure mode
    }
  }
  return tcp;
}

bool TlsMayUseTcp(absl::string_view tls) {
  if (tls.empty()) return true;  // UCX's default set includes tcp
  if (absl::StartsWith(tls, "^")) {  // "^a,b": every transport but those
    for (absl::string_view t : absl::StrSplit(tls.substr(1), ',')) {
      if (t == "tcp") return false;
    }
    return true;
  }
  for (absl::string_view t : absl::StrSplit(tls, ',')) {
    if (t == "tcp" || t == "all") return true;
  }
  return false;
}

}  // namespace kvhub::transport
