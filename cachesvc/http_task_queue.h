#pragma once
// HttpTaskQueue: the connection queue of kvhubd's HTTP listener (cpp-httplib).
// httplib serves a connection on one thread until the peer closes it or its
// keep-alive or read timeout passes, so a fixed pool of N threads stops
// answering while N connections sit idle: a Prometheus keep-alive, a port
// scanner, a stuck client. With 2 threads, 4 idle connections delayed /healthz
// by 10 s and 20 by more than 30 s (session 13), past the 1 s a Kubernetes
// probe waits; failed liveness probes restart the pod, losing its cache.
//
// This queue starts another thread whenever every thread is busy, up to
// `max_threads`, and keeps threads once started (they sleep when idle). A
// connection waits for a thread only while `max_threads` connections are open
// (docs/operations.md, "HTTP endpoints").
//
// Thread safety: enqueue may be called from any thread; shutdown once, after
// the last enqueue (httplib does both).

#include <cstddef>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include <httplib.h>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kvhub::cachesvc {

class HttpTaskQueue final : public httplib::TaskQueue {
 public:
  explicit HttpTaskQueue(size_t max_threads);
  ~HttpTaskQueue() override;  // shuts down if not yet done

  void enqueue(std::function<void()> fn) override;
  // Lets queued tasks run, then joins every thread.
  void shutdown() override;


 private:
  void Work();
  bool HasWorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || !tasks_.empty(); }

  const size_t max_threads_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  size_t idle_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvhub::cachesvc
