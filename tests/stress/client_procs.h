#pragma once
// The extra client processes of kvhub-stress (--client_procs): each is kvhub-stress in
// --client_mode against the same cluster, running until a given time. Some are SIGKILLed
// in the middle of their operations (--kill_client_every_ms) and replaced, so shards see
// clients die with leases held, reservations half written and UCX transfers in flight.
//
// A child reports through its exit status and its JSON report (--json, in a private
// temporary directory): WaitAll() turns a child that exited non-zero, or died of a
// signal this object did not send, into a failure naming what the child found.
//
// Ownership: the object owns its children and the directory. Its destructor kills
// (SIGKILL) and reaps children still running and removes the directory.
// Thread safety: all methods may be called concurrently.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kvhub::stress {

class ClientProcs {
 public:
  // `args`: the children's flags; --seconds, --seed and --json are added per child.
  static absl::StatusOr<std::unique_ptr<ClientProcs>> Create(std::string binary, std::vector<std::string> args);
  ~ClientProcs();
  ClientProcs(const ClientProcs&) = delete;
  ClientProcs& operator=(const ClientProcs&) = delete;

  // Starts one more child that runs until `end` (at least 0.5 s).
  absl::Status Start(absl::Time end, uint64_t seed);
  // SIGKILLs the running child number `pick % running` and starts a replacement that
  // runs until `end`; none when less than 0.5 s is left. FAILED_PRECONDITION when no
  // child is running.
  absl::Status KillOne(uint64_t pick, absl::Time end, uint64_t seed);

  struct Outcome {
    int started = 0, killed = 0, finished = 0;
    std::vector<std::string> failures;  // one line per child that failed, with its findings
  };
  // Waits for every child (they end by themselves at their end time) and reports.
  // One still running `grace` after its end time is hung: SIGKILLed and reported as
  // a failure (a harness stuck in waitpid reported nothing).
  Outcome WaitAll(absl::Duration grace = absl::Minutes(2));

 private:
  struct Child {
    pid_t pid = -1;
    std::string json;
    absl::Time end;       // when it stops by itself
    bool killed = false;  // by KillOne: its end is expected, not a failure
  };
  ClientProcs(std::string binary, std::vector<std::string> args, std::string dir)
      : binary_(std::move(binary)), args_(std::move(args)), dir_(std::move(dir)) {}
  absl::Status StartLocked(absl::Time end, uint64_t seed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string binary_;
  const std::vector<std::string> args_;
  const std::string dir_;
  absl::Mutex mu_;
  std::vector<Child> children_ ABSL_GUARDED_BY(mu_);
  int killed_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvhub::stress
