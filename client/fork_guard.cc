#include "client/fork_guard.h"

#include <pthread.h>

#include <atomic>
#include <mutex>

namespace kvhub {
namespace {

std::atomic<bool> forked_after_client{false};

void MarkChild() { forked_after_client.store(true, std::memory_order_relaxed); }

}  // namespace

void WatchForkAfterClient() {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, &MarkChild); });
}

absl::Status CheckNotForkedAfterClient() {
  if (!forked_after_client.load(std::memory_order_relaxed)) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "kvhub: this process was forked from one that had created a kvhub client; gRPC, UCX and the "
      "client's threads do not survive fork() and a call here could hang forever. Create clients in "
      "processes started with exec (Python multiprocessing: the 'spawn' or 'forkserver' start method), "
      "or fork before the first client is created");
}

}  // namespace kvhub
