#pragma once
// The process's limit on open file descriptors (RLIMIT_NOFILE). A kvhubd shard
// spends descriptors per client: one TCP connection per gRPC channel (two per
// client by default) and, over UCX, a socket or shared-memory segments per
// peer. Out of descriptors, it cannot accept another connection: the new client
// sees UNAVAILABLE while the connected ones go on. Many launchers leave the soft
// limit at 1024 (systemd services, login shells) under a much higher hard limit.
//
// Thread safety: every function may be called from any thread; RaiseOpenFileLimit
// changes the limit of the whole process.

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace kvhub {

struct OpenFileLimits {
  uint64_t soft = 0;  // RLIM_INFINITY shows as UINT64_MAX
  uint64_t hard = 0;
};

// The limits in force. Fails only if getrlimit does.
absl::StatusOr<OpenFileLimits> ReadOpenFileLimits();

// Raises the soft limit to the hard one, but to at most `cap` (an unlimited hard
// limit would otherwise be taken literally by code that sizes tables by it), and
// never lowers it. Returns the limits in force afterwards; if the kernel refuses
// (the hard limit above fs.nr_open), the error names the values and nothing changed.
absl::StatusOr<OpenFileLimits> RaiseOpenFileLimit(uint64_t cap = 1u << 20);

// The descriptors this process has open now (the entries of /proc/self/fd, in
// no particular order); empty when that directory cannot be read.
std::vector<int> OpenFileDescriptors();

// OpenFileDescriptors().size().
uint64_t CountOpenFiles();

}  // namespace kvhub
