#include "cachesvc/grpc_listener_watch.h"

#include <grpc/support/log.h>

#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"

namespace kvhub::cachesvc {
namespace {

// gRPC 1.51's src/core/lib/iomgr/tcp_server_posix.cc logs this just before it
// drops the listening port.
constexpr absl::string_view kAcceptFailure = "Failed accept4:";

struct Watch {
  absl::Mutex mu;
  std::optional<std::string> failure ABSL_GUARDED_BY(mu);
};

Watch& TheWatch() {
  static Watch* watch = new Watch();  // never destroyed: gRPC threads may log at exit
  return *watch;
}

void Sink(gpr_log_func_args* args) {
  const absl::string_view message = args->message != nullptr ? args->message : "";
  if (NoteGrpcLogMessage(message)) return;  // logged there
  switch (args->severity) {
    case GPR_LOG_SEVERITY_DEBUG:
      KVHUB_LOG(debug, "grpc: {} ({}:{})", std::string(message), args->file, args->line);
      break;
    case GPR_LOG_SEVERITY_INFO:
      KVHUB_LOG(info, "grpc: {} ({}:{})", std::string(message), args->file, args->line);
      break;
    default:
      KVHUB_LOG(error, "grpc: {} ({}:{})", std::string(message), args->file, args->line);
      break;
  }
}

}  // namespace

void InstallGrpcLogSink() {
  static std::once_flag once;
  std::call_once(once, [] { gpr_set_log_function(&Sink); });
}

std::optional<std::string> GrpcListenerFailure() {
  Watch& w = TheWatch();
  absl::MutexLock l(&w.mu);
  return w.failure;
}

bool NoteGrpcLogMessage(absl::string_view message) {
  if (!absl::StartsWith(message, kAcceptFailure)) return false;
  Watch& w = TheWatch();
  {
    absl::MutexLock l(&w.mu);
    if (!w.failure.has_value()) w.failure = std::string(message);
  }
  KVHUB_LOG(critical,
            "grpc: {}: gRPC has stopped accepting connections on its port and will not resume "
            "(grpc/grpc#20418); clients already connected are served, new ones wait forever. "
            "/healthz and /readyz now answer 503 so the shard is restarted; raise the descriptor "
            "limit (docs/operations.md, 'Open files')",
            std::string(message));
  return true;
}

}  // namespace kvhub::cachesvc
