#include "cachesvc/http_task_queue.h"

#include <algorithm>
#include <utility>

namespace kvhub::cachesvc {

HttpTaskQueue::HttpTaskQueue(size_t max_threads) : max_threads_(std::max<size_t>(max_threads, 1)) {}

HttpTaskQueue::~HttpTaskQueue() { shutdown(); }

void HttpTaskQueue::enqueue(std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;  // httplib enqueues nothing after shutdown; a late task is dropped
  tasks_.push_back(std::move(fn));
  // Every idle thread will take one queued task; start a thread for the rest.
  if (tasks_.size() > idle_ && threads_.size() < max_threads_) threads_.emplace_back([this] { Work(); });
}

void HttpTaskQueue::Work() {
  while (true) {
    std::function<void()> fn;
    {
      absl::MutexLock lock(&mu_);
      ++idle_;
      mu_.Await(absl::Condition(this, &HttpTaskQueue::HasWorkOrStopping));
      --idle_;
      if (tasks_.empty()) return;  // stopping, nothing left
      fn = std::move(tasks_.front());
      tasks_.pop_front();
    }
    fn();
  }
}

void HttpTaskQueue::shutdown() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    threads.swap(threads_);
  }
  for (std::thread& t : threads) t.join();
}

}  // namespace kvhub::cachesvc
