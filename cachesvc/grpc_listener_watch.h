#pragma once
// gRPC listener failure watch. gRPC 1.51 (Debian 12) stops its TCP listener for good
// when accept4() fails with anything but EAGAIN/EINTR/ECONNABORTED, most often EMFILE
// (the process is out of descriptors): connections then wait in the kernel's backlog
// and are never served, even after descriptors are free again (grpc/grpc#20418). Its
// only trace is one log line, "Failed accept4: <reason>".
//
// InstallGrpcLogSink() routes gRPC's own log lines through kvhub's logger (spdlog)
// and remembers that line: GrpcListenerFailure() then says why new clients are
// refused, so kvhubd can fail /healthz and /readyz and an orchestrator restarts the
// shard. Connections accepted before the failure keep working.
//
// Process-wide (gRPC's log is): every gRPC server in the process reads as failed.
// Thread safety: everything may be called from any thread. Install is idempotent.

#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace kvhub::cachesvc {

// Installs the sink (gpr_set_log_function) once per process.
void InstallGrpcLogSink();

// The first listener failure gRPC logged since the process started, e.g.
// "Failed accept4: Too many open files"; nullopt while none.
std::optional<std::string> GrpcListenerFailure();

// Feeds one gRPC log message to the watch as the sink does (tests; the sink).
// Returns true when it was a listener failure.
bool NoteGrpcLogMessage(absl::string_view message);

}  // namespace kvhub::cachesvc
