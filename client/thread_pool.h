#pragma once
// A small fixed pool of worker threads, and RunParallel(), the fan-out
// primitive of kvhub::Client: the calling thread works through the tasks too,
// so a call never waits on a busy pool (and never deadlocks on it).
// Thread-safe.

#include <cstddef>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kvhub {

class ThreadPool {
 public:
  // Starts `threads` (>= 1) workers.
  explicit ThreadPool(int threads);
  // Runs every task already scheduled, then joins the workers.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Schedule(std::function<void()> task);
  int size() const { return static_cast<int>(workers_.size()); }

 private:
  void WorkerLoop();

  absl::Mutex mu_;
  std::vector<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);  // LIFO is fine: tasks are independent
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

// Runs fn(0) .. fn(n-1), each exactly once, on the calling thread and up to
// n-1 pool workers; returns when all have finished. `fn` must be safe to call
// concurrently for different indices. pool may be null (runs inline).
void RunParallel(ThreadPool* pool, size_t n, const std::function<void(size_t)>& fn);

}  // namespace kvhub
