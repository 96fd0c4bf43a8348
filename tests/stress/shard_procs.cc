#include "tests/stress/shard_procs.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kvhub::stress {

absl::Status ShardProcs::StartAll(int n) {
  absl::MutexLock l(&mu_);
  for (int i = 0; i < n; ++i) {
    auto p = Start(i, "127.0.0.1:0");
    if (!p.ok()) return p.status();
    addresses_.push_back((*p)->grpc_address());
    procs_.push_back(*std::move(p));
    pinned_ok_.push_back(false);
  }
  n_.store(procs_.size(), std::memory_order_release);
  return absl::OkStatus();
}

std::vector<std::string> ShardProcs::addresses() const {
  absl::MutexLock l(&mu_);
  return addresses_;
}

absl::Status ShardProcs::KillAndRestart(size_t i) {
  pinned_ok_[i] = false;
  if (auto rc = procs_[i]->Kill(); !rc.ok()) return rc.status();
  absl::Status last;
  // The port was just released; a new listener binds it at once (SO_REUSEADDR), but
  // retry briefly in case the kernel still holds it.
  for (int attempt = 0; attempt < 50; ++attempt) {
    auto p = Start(static_cast<int>(i), addresses_[i]);
    if (p.ok()) {
      procs_[i] = *std::move(p);
      return absl::OkStatus();
    }
    last = p.status();
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::Status(last.code(), absl::StrCat("restart of ", addresses_[i], ": ", last.message()));
}

absl::Status ShardProcs::Signal(size_t i, int signo) {
  absl::MutexLock l(&mu_);
  return procs_[i]->Signal(signo);
}

std::vector<absl::StatusOr<int>> ShardProcs::StopAll() {
  absl::MutexLock l(&mu_);
  std::vector<absl::StatusOr<int>> out;
  for (auto& p : procs_) out.push_back(p->Stop());
  return out;
}

absl::StatusOr<std::unique_ptr<testing::KvhubdProcess>> ShardProcs::Start(int i, const std::string& address) {
  testing::KvhubdProcessOptions po;
  po.binary = binary_;
  po.flags = flags_;
  po.flags.push_back(absl::StrCat("--grpc_address=", address));
  po.node_id = absl::StrCat("stress-", i);
  return testing::KvhubdProcess::Start(po);
}

}  // namespace kvhub::stress
