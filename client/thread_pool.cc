#include "client/thread_pool.h"

#include <algorithm>
#include <atomic>

namespace kvhub {

ThreadPool::ThreadPool(int threads) {
  workers_.reserve(std::max(threads, 1));
  for (int i = 0; i < std::max(threads, 1); ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::Schedule(std::function<void()> task) {
  absl::MutexLock l(&mu_);
  queue_.push_back(std::move(task));
}

void ThreadPool::WorkerLoop() {
  for (;;) {
    std::function<void()> task;
    {
      absl::MutexLock l(&mu_);
      mu_.Await(absl::Condition(
          +[](ThreadPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
            return p->stopping_ || !p->queue_.empty();
          },
          this));
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.back());
      queue_.pop_back();
    }
    task();
  }
}

namespace {
struct ParallelState {
  explicit ParallelState(size_t n, const std::function<void(size_t)>* f) : total(n), fn(f) {}
  const size_t total;
  const std::function<void(size_t)>* fn;  // valid until done == total
  std::atomic<size_t> next{0};
  absl::Mutex mu;
  size_t done ABSL_GUARDED_BY(mu) = 0;

  // Claims and runs tasks until none is left.
  void Drain() {
    size_t ran = 0;
    for (size_t i = next.fetch_add(1); i < total; i = next.fetch_add(1)) {
      (*fn)(i);
      ++ran;
    }
    if (ran > 0) {
      absl::MutexLock l(&mu);
      done += ran;
    }
  }
};
}  // namespace

void RunParallel(ThreadPool* pool, size_t n, const std::function<void(size_t)>& fn) {
  if (n == 0) return;
  if (n == 1 || pool == nullptr) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  auto state = std::make_shared<ParallelState>(n, &fn);
  const size_t helpers = std::min<size_t>(n - 1, static_cast<size_t>(pool->size()));
  // Helpers that start after all tasks were claimed touch only *state (kept
  // alive by their copy of the shared_ptr), never fn.
  for (size_t i = 0; i < helpers; ++i) pool->Schedule([state] { state->Drain(); });
  state->Drain();
  absl::MutexLock l(&state->mu);
  state->mu.Await(absl::Condition(
      +[](ParallelState* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) { return s->done == s->total; },
      state.get()));
}

}  // namespace kvhub
