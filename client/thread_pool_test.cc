#include "client/thread_pool.h"

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace kvhub {
namespace {

TEST(ThreadPoolTest, RunParallelRunsEachIndexOnce) {
  ThreadPool pool(4);
  for (size_t n : {0u, 1u, 2u, 7u, 100u}) {
    std::vector<std::atomic<int>> hits(n);
    RunParallel(&pool, n, [&](size_t i) { hits[i].fetch_add(1); });
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
  }
}

TEST(ThreadPoolTest, RunParallelUsesSeveralThreads) {
  ThreadPool pool(3);
  absl::Mutex mu;
  std::set<std::thread::id> ids;
  std::atomic<int> arrived{0};
  // Each task waits (bounded) until 2 tasks run at once: proves parallelism
  // without relying on timing for correctness.
  RunParallel(&pool, 4, [&](size_t) {
    arrived.fetch_add(1);
    for (int spin = 0; spin < 2000 && arrived.load() < 2; ++spin) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    absl::MutexLock l(&mu);
    ids.insert(std::this_thread::get_id());
  });
  EXPECT_GE(ids.size(), 2u);
}

TEST(ThreadPoolTest, NullPoolRunsInline) {
  int sum = 0;
  RunParallel(nullptr, 5, [&](size_t i) { sum += static_cast<int>(i); });
  EXPECT_EQ(sum, 10);
}

TEST(ThreadPoolTest, ConcurrentCallersShareOnePool) {
  ThreadPool pool(2);
  std::vector<std::thread> callers;
  std::atomic<int> total{0};
  for (int c = 0; c < 8; ++c) {
    callers.emplace_back([&] {
      for (int r = 0; r < 50; ++r) RunParallel(&pool, 5, [&](size_t) { total.fetch_add(1); });
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(total.load(), 8 * 50 * 5);
}

}  // namespace
}  // namespace kvhub
