#include "transport/registration_cache.h"

namespace kvhub::transport {

RegistrationCache::Entry* RegistrationCache::FindLocked(uintptr_t p, uint64_t n) {
  // Any entry starting at or before p may cover it (a small range registered
  // inside a larger one starts after the larger one's start); at most
  // max_entries_ to look at.
  for (auto it = by_start_.upper_bound(p); it != by_start_.begin();) {
    --it;
    if (it->second.mem->Contains(reinterpret_cast<const void*>(p), n)) return &it->second;
  }
  return nullptr;
}

absl::Status RegistrationCache::Register(void* p, uint64_t n) {
  if (p == nullptr || n == 0) return absl::InvalidArgumentError("register: null or empty buffer");
  if (max_entries_ == 0) return absl::OkStatus();
  const auto start = reinterpret_cast<uintptr_t>(p);
  {
    absl::MutexLock l(&mu_);
    if (FindLocked(start, n) != nullptr) return absl::OkStatus();
  }
  // ucp_mem_map outside the lock: it may take milliseconds for large ranges.
  absl::StatusOr<std::unique_ptr<UcxMemory>> mem = context_->Register(p, n);
  if (!mem.ok()) return mem.status();
  absl::MutexLock l(&mu_);
  if (FindLocked(start, n) != nullptr) return absl::OkStatus();  // raced with another Register
  auto existing = by_start_.find(start);
  if (existing != by_start_.end()) {  // same start, smaller range: replace
    lru_.erase(existing->second.lru_it);
    by_start_.erase(existing);
  }
  while (by_start_.size() >= max_entries_ && !lru_.empty()) {
    by_start_.erase(lru_.back());
    lru_.pop_back();
  }
  lru_.push_front(start);
  by_start_[start] = Entry{std::shared_ptr<UcxMemory>(std::move(*mem)), lru_.begin()};
  return absl::OkStatus();
}

absl::Status RegistrationCache::Unregister(void* p) {
  absl::MutexLock l(&mu_);
  auto it = by_start_.find(reinterpret_cast<uintptr_t>(p));
  if (it == by_start_.end()) return absl::NotFoundError("unregister: buffer is not registered");
  lru_.erase(it->second.lru_it);
  by_start_.erase(it);
  return absl::OkStatus();
}

std::shared_ptr<UcxMemory> RegistrationCache::Find(const void* p, uint64_t n) {
  absl::MutexLock l(&mu_);
  Entry* e = FindLocked(reinterpret_cast<uintptr_t>(p), n);
  if (e == nullptr) {
    ++misses_;
    return nullptr;
  }
  ++hits_;
  lru_.splice(lru_.begin(), lru_, e->lru_it);
  return e->mem;
}

size_t RegistrationCache::size() const {
  absl::MutexLock l(&mu_);
  return by_start_.size();
}
uint64_t RegistrationCache::hits() const {
  absl::MutexLock l(&mu_);
  return hits_;
}
uint64_t RegistrationCache::misses() const {
  absl::MutexLock l(&mu_);
  return misses_;
}

}  // namespace kvhub::transport
