#pragma once
// LocalShards: starts N kvhubd child processes on 127.0.0.1 for
// `kvhub-replay --live --spawn N` (the product binary does not link the test
// launcher; this is the minimal subset it needs).
//
// Each child gets --grpc_address=127.0.0.1:0 --http_address=127.0.0.1:0, a
// --ready_file in a private temp directory, the given extra flags, stdout on
// /dev/null, stderr inherited, and PR_SET_PDEATHSIG=SIGKILL. Start waits for every
// ready file ("kvhubd ready grpc=HOST:PORT http=... node=..."), parses the gRPC
// address, and fails (killing what it started) when a child exits first or the
// timeout passes. The destructor sends SIGTERM, waits up to 10 s, then SIGKILL.
// Thread safety: none; use from one thread.

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kvhub::replay {

class LocalShards {
 public:
  static absl::StatusOr<std::unique_ptr<LocalShards>> Start(
      const std::string& binary, int count, const std::vector<std::string>& flags,
      absl::Duration timeout = absl::Seconds(30));
  ~LocalShards();
  LocalShards(const LocalShards&) = delete;
  LocalShards& operator=(const LocalShards&) = delete;

  const std::vector<std::string>& grpc_addresses() const { return addresses_; }

  // "kvhubd" in the directory of the running executable.
  static std::string DefaultBinary();

  // SIGTERM to every shard, SIGKILL after 10 s; removes their directory. OK when
  // every shard drained and exited 0; else INTERNAL naming the first that did not
  // (crashed, failed its drain, had to be killed). Idempotent (later calls: OK).
  absl::Status StopAll();

 private:
  LocalShards() = default;
  std::vector<pid_t> pids_;
  std::vector<std::string> addresses_;
  std::string dir_;
};

}  // namespace kvhub::replay
