#pragma once
// The kvhubd shards kvhub-stress spawns (--spawn): started on loopback, SIGKILLed and
// restarted on the same address (a new process: its blocks are gone), frozen with
// SIGSTOP/SIGCONT, and stopped with SIGTERM at the end. It also records, per shard,
// whether its pinned blocks are in place (false from a kill until the caller re-pins).
//
// Ownership: owns the kvhubd processes (testing::KvhubdProcess: they die with the
// thread that started them, see its header). Thread safety: all methods may be called
// concurrently; mu() orders pinned-block checks (shared) against kills (exclusive).

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "tests/testing/kvhubd_process.h"

namespace kvhub::stress {

class ShardProcs {
 public:
  // `flags`: every shard's kvhubd flags (--grpc_address and --node_id are added).
  ShardProcs(std::string binary, std::vector<std::string> flags)
      : binary_(std::move(binary)), flags_(std::move(flags)) {}

  // Starts n shards on ephemeral loopback ports; call once, before anything else.
  absl::Status StartAll(int n);
  std::vector<std::string> addresses() const;
  // Fixed after StartAll.
  size_t size() const { return n_.load(std::memory_order_acquire); }

  absl::Mutex& mu() ABSL_LOCK_RETURNED(mu_) { return mu_; }
  bool pinned_ok(size_t i) const ABSL_SHARED_LOCKS_REQUIRED(mu_) { return pinned_ok_[i]; }
  void set_pinned_ok(size_t i, bool ok) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { pinned_ok_[i] = ok; }

  // SIGKILLs shard i, then starts a new kvhubd on the same address (retrying for up to
  // 5 s while the port is still held). Clears pinned_ok(i).
  absl::Status KillAndRestart(size_t i) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends `signo` to shard i (SIGSTOP, SIGCONT).
  absl::Status Signal(size_t i, int signo);
  // SIGTERM to every shard: each one's exit code, or why it did not exit in time.
  std::vector<absl::StatusOr<int>> StopAll();

 private:
  absl::StatusOr<std::unique_ptr<testing::KvhubdProcess>> Start(int i, const std::string& address)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string binary_;
  const std::vector<std::string> flags_;
  std::atomic<size_t> n_{0};
  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<testing::KvhubdProcess>> procs_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> addresses_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> pinned_ok_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvhub::stress
